//! Kubernetes quantities (`resource.Quantity`) as exact byte counts: the one
//! parser behind PV capacities, adoption of upstream PVs and `status`.
//!
//! The grammar is the API server's (`k8s.io/apimachinery`
//! `pkg/api/resource/quantity.go`):
//!
//! ```text
//! quantity        = signedNumber suffix
//! signedNumber    = [ "+" | "-" ] number
//! number          = digits | digits "." [ digits ] | "." digits
//! suffix          = binarySI | decimalSI | decimalExponent
//! binarySI        = "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
//! decimalSI       = "n" | "u" | "m" | "" | "k" | "M" | "G" | "T" | "P" | "E"
//! decimalExponent = ( "e" | "E" ) signedNumber       (a whole exponent)
//! ```
//!
//! A lone `E` is exa (10^18); `E` followed by a number is an exponent.

/// The exact number of bytes `text` denotes (`107374182400`, `100Gi`,
/// `1.5Gi`, `2E`, `1e9`), or `None` when it is not a valid quantity, not a
/// whole non-negative number of bytes, or more than `u64` holds.
pub fn bytes(text: &str) -> Option<u64> {
    let (negative, unsigned) = match text.as_bytes().first()? {
        b'+' => (false, &text[1..]),
        b'-' => (true, &text[1..]),
        _ => (false, text),
    };
    let number_end = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let (binary_shift, decimal_exponent) = suffix_scale(suffix)?;
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Some(0);
    }
    if negative || digits.len() > 38 {
        return None;
    }
    let mantissa: u128 = digits.parse().ok()?;
    // value = mantissa × 2^binary_shift × 10^(decimal_exponent − fraction digits)
    let exponent = decimal_exponent.checked_sub(i32::try_from(fraction.len()).ok()?)?;
    let scaled = mantissa.checked_mul(1u128.checked_shl(binary_shift)?)?;
    let value = if exponent >= 0 {
        scaled.checked_mul(10u128.checked_pow(exponent.unsigned_abs())?)?
    } else {
        let divisor = 10u128.checked_pow(exponent.unsigned_abs())?;
        if scaled % divisor != 0 {
            return None;
        }
        scaled / divisor
    };
    u64::try_from(value).ok()
}

/// `bytes` in the largest binary unit from `Mi` up that holds it exactly
/// (`100Gi`), else in bytes.
pub fn human(bytes: u64) -> String {
    const UNITS: [(&str, u32); 5] = [("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20)];
    UNITS
        .iter()
        .find(|(_, shift)| bytes >= 1 << shift && bytes.is_multiple_of(1 << shift))
        .map_or_else(
            || bytes.to_string(),
            |(unit, shift)| format!("{}{unit}", bytes >> shift),
        )
}

/// `(power of two, power of ten)` a suffix multiplies by.
fn suffix_scale(suffix: &str) -> Option<(u32, i32)> {
    let scale = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        exponent => {
            let rest = exponent
                .strip_prefix('e')
                .or_else(|| exponent.strip_prefix('E'))?;
            let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (0, rest.parse::<i32>().ok()?)
        }
    };
    Some(scale)
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn quantities_are_read_as_exact_bytes() {
        assert_eq!(bytes("107374182400"), Some(107_374_182_400));
        assert_eq!(bytes("100Gi"), Some(100 << 30));
        assert_eq!(bytes("1.5Ki"), Some(1536));
        assert_eq!(bytes("10G"), Some(10_000_000_000));
        assert_eq!(bytes("1.5"), None, "not whole bytes");
        assert_eq!(bytes("5m"), None, "millibytes");
        assert_eq!(bytes("Gi"), None);
        assert_eq!(bytes(""), None);
        assert_eq!(bytes("99999999999Pi"), None, "overflow");
    }

    #[test]
    fn whole_byte_counts_in_every_suffix_family() {
        assert_eq!(bytes("107374182400"), Some(107_374_182_400));
        assert_eq!(bytes("100Gi"), Some(107_374_182_400));
        assert_eq!(bytes("1.5Gi"), Some(1_610_612_736));
        assert_eq!(bytes("1.5Ki"), Some(1536));
        assert_eq!(bytes("2T"), Some(2_000_000_000_000));
        assert_eq!(bytes("10G"), Some(10_000_000_000));
        assert_eq!(bytes("1E"), Some(1_000_000_000_000_000_000));
        assert_eq!(bytes("8Ei"), Some(8 << 60));
        assert_eq!(bytes("1e9"), Some(1_000_000_000));
        assert_eq!(bytes("1E3"), Some(1000));
        assert_eq!(bytes("12e-1"), None);
        assert_eq!(bytes("120e-1"), Some(12));
        assert_eq!(bytes("+4096"), Some(4096));
        assert_eq!(bytes("5000m"), Some(5));
        assert_eq!(bytes(".5Ki"), Some(512));
        assert_eq!(bytes("4096."), Some(4096));
        assert_eq!(bytes("0"), Some(0));
        assert_eq!(bytes("-0"), Some(0));
    }

    #[test]
    fn anything_else_is_not_a_byte_count() {
        for text in [
            "",
            "Gi",
            ".",
            "1.5",
            "1m",
            "-1",
            "-1Gi",
            "1 Gi",
            "1GB",
            "1gi",
            "1Ki5",
            "1e",
            "1e+",
            "1e1.5",
            "1.2.3",
            "0x10",
            "16Ei",
            "18446744073709551616",
            "1e40",
        ] {
            assert_eq!(bytes(text), None, "{text:?}");
        }
        assert_eq!(bytes("18446744073709551615"), Some(u64::MAX));
    }
}
