//! Label and field selectors as the real server parses and applies them to
//! lists and watches.

use serde_json::Value;

use super::resources::{ApiError, ResourceDef, is_subdomain};

#[derive(Debug, Clone)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
    Gt(i64),
    Lt(i64),
}

#[derive(Debug, Clone)]
struct Requirement {
    key: String,
    op: Op,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    Comma,
    Open,
    Close,
}

fn lex(s: &str) -> Vec<Tok> {
    let chars: Vec<char> = s.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        i += 1;
        match c {
            c if c.is_whitespace() => {}
            '(' => toks.push(Tok::Open),
            ')' => toks.push(Tok::Close),
            ',' => toks.push(Tok::Comma),
            '>' => toks.push(Tok::Gt),
            '<' => toks.push(Tok::Lt),
            '!' if next == Some('=') => {
                i += 1;
                toks.push(Tok::NotEq);
            }
            '!' => toks.push(Tok::Bang),
            '=' if next == Some('=') => {
                i += 1;
                toks.push(Tok::DoubleEq);
            }
            '=' => toks.push(Tok::Eq),
            _ => {
                let mut ident = c.to_string();
                while let Some(&c) = chars.get(i) {
                    if c.is_whitespace() || "(),!=<>".contains(c) {
                        break;
                    }
                    ident.push(c);
                    i += 1;
                }
                toks.push(Tok::Ident(ident));
            }
        }
    }
    toks
}

fn valid_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| p.len() <= 253 && is_subdomain(p));
    if prefix_ok && valid_name_part(name) {
        Ok(())
    } else {
        Err(format!(
            "invalid label key \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || valid_name_part(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value: \"{value}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

/// The identifier at `toks[i]`, if that is one.
fn ident(toks: &[Tok], i: usize) -> Option<String> {
    match toks.get(i) {
        Some(Tok::Ident(s)) => Some(s.clone()),
        _ => None,
    }
}

/// The requirement starting at `toks[*i]`; moves `*i` past it.
fn requirement(toks: &[Tok], i: &mut usize) -> Result<Requirement, String> {
    if toks[*i] == Tok::Bang {
        let key = ident(toks, *i + 1).ok_or("found '!', expected: identifier")?;
        *i += 2;
        return Ok(Requirement {
            key,
            op: Op::NotExists,
        });
    }
    let key =
        ident(toks, *i).ok_or_else(|| format!("found {:?}, expected: identifier", toks[*i]))?;
    *i += 1;
    let op = operation(toks, i)?;
    Ok(Requirement { key, op })
}

/// The operator (and its value or values) of a requirement after its key,
/// at `toks[*i]`; moves `*i` past it.
fn operation(toks: &[Tok], i: &mut usize) -> Result<Op, String> {
    match toks.get(*i) {
        None | Some(Tok::Comma) => Ok(Op::Exists),
        Some(t @ (Tok::Eq | Tok::DoubleEq | Tok::NotEq)) => {
            let not = *t == Tok::NotEq;
            *i += 1;
            let value = if matches!(toks.get(*i), None | Some(Tok::Comma)) {
                String::new()
            } else {
                let v = ident(toks, *i).ok_or("expected a value")?;
                *i += 1;
                v
            };
            check_value(&value)?;
            Ok(if not { Op::NotEq(value) } else { Op::Eq(value) })
        }
        Some(t @ (Tok::Gt | Tok::Lt)) => {
            let gt = *t == Tok::Gt;
            let n = ident(toks, *i + 1)
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or("for 'Gt', 'Lt' operators, the value must be an integer")?;
            *i += 2;
            Ok(if gt { Op::Gt(n) } else { Op::Lt(n) })
        }
        Some(Tok::Ident(word)) if word == "in" || word == "notin" => {
            let values = value_set(toks, i)?;
            Ok(if word == "in" {
                Op::In(values)
            } else {
                Op::NotIn(values)
            })
        }
        Some(other) => Err(format!("found {other:?}, expected: operator")),
    }
}

/// The `(a,b,...)` after `in` or `notin` at `toks[*i]`; moves `*i` past
/// it. An empty set is refused.
fn value_set(toks: &[Tok], i: &mut usize) -> Result<Vec<String>, String> {
    if toks.get(*i + 1) != Some(&Tok::Open) {
        return Err(format!("found {:?}, expected: '('", toks.get(*i + 1)));
    }
    *i += 2;
    let mut values = Vec::new();
    loop {
        match toks.get(*i) {
            Some(Tok::Ident(v)) => {
                check_value(v)?;
                values.push(v.clone());
                *i += 1;
            }
            Some(Tok::Comma) => *i += 1,
            Some(Tok::Close) => {
                *i += 1;
                break;
            }
            other => {
                return Err(format!("found {other:?}, expected: ',' or ')'"));
            }
        }
    }
    if values.is_empty() {
        return Err("for 'in', 'notin' operators, values set can't be empty".into());
    }
    Ok(values)
}

/// A parsed `labelSelector`.
#[derive(Debug, Clone, Default)]
pub(super) struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parses the string syntax (`a=b,c!=d,e in (f,g),!h,i`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let toks = lex(s);
        let mut reqs = Vec::new();
        let mut i = 0;
        while i < toks.len() {
            let req = requirement(&toks, &mut i)?;
            check_key(&req.key)?;
            reqs.push(req);
            match toks.get(i) {
                None => {}
                Some(Tok::Comma) if i + 1 < toks.len() => i += 1,
                Some(other) => {
                    return Err(format!("found {other:?}, expected: ',' or end of selector"));
                }
            }
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| {
            let v = label(&r.key);
            match &r.op {
                Op::Eq(want) => v == Some(want.as_str()),
                Op::NotEq(want) => v != Some(want.as_str()),
                Op::In(set) => v.is_some_and(|v| set.iter().any(|s| s == v)),
                Op::NotIn(set) => v.is_none_or(|v| !set.iter().any(|s| s == v)),
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
                Op::Gt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                Op::Lt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            }
        })
    }
}

/// A parsed `fieldSelector`: terms `field=value`, `field==value`, `field!=value`.
#[derive(Debug, Clone, Default)]
pub(super) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses and checks the fields against what the resource supports
    /// (`metadata.name`, `metadata.namespace` and its `extra_fields`).
    pub fn parse(s: &str, res: &ResourceDef) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                ));
            };
            let field = field.trim();
            if field != "metadata.name"
                && field != "metadata.namespace"
                && !res.extra_fields.contains(&field)
            {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    /// Whether an object satisfies every term.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, want)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let actual = match obj.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == *want) == *eq
        })
    }
}

/// Both selectors of a list or watch request.
#[derive(Debug, Clone, Default)]
pub(super) struct Selectors {
    label: LabelSelector,
    field: FieldSelector,
}

impl Selectors {
    /// Parses both selectors; errors are 400 BadRequest like the real server.
    pub fn parse(
        label: Option<&str>,
        field: Option<&str>,
        res: &ResourceDef,
    ) -> Result<Self, ApiError> {
        let label = LabelSelector::parse(label.unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let field =
            FieldSelector::parse(field.unwrap_or(""), res).map_err(ApiError::bad_request)?;
        Ok(Selectors { label, field })
    }

    /// Adds a `metadata.name=` term (watch on a single named object).
    pub fn with_name(mut self, name: &str) -> Self {
        self.field
            .0
            .push(("metadata.name".into(), true, name.to_string()));
        self
    }

    /// Whether an object matches both selectors.
    pub fn matches(&self, obj: &Value) -> bool {
        self.label.matches(obj) && self.field.matches(obj)
    }
}
