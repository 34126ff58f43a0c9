//! The one Markdown table the benchmark prints: a row per measure with its
//! value, the target, the value measured on a real server where
//! issue 19 gives one, a reference where one applies, and whether the
//! target is met (never asserted: speed is reported, not tested).

/// Whether a row meets its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the target.
    Met,
    /// Outside the target.
    Missed,
    /// No target, or nothing to judge (e.g. not measurable here).
    Info,
}

impl Verdict {
    /// `Met` when `ok`, else `Missed`.
    pub fn of(ok: bool) -> Verdict {
        if ok { Verdict::Met } else { Verdict::Missed }
    }

    fn text(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "**missed**",
            Verdict::Info => "–",
        }
    }
}

/// One measure.
#[derive(Debug, Clone)]
pub struct Row {
    /// What is measured.
    pub measure: String,
    /// The value.
    pub value: String,
    /// The target (`–` when none).
    pub target: String,
    /// The value measured on a real kube-apiserver and
    /// kube-controller-manager v1.36 (issue 19), `–` when none.
    pub real: String,
    /// What the value is compared with, if anything.
    pub reference: String,
    /// Whether the target is met.
    pub verdict: Verdict,
}

/// The rows, in the order the sections ran.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Table {
    /// Adds a row.
    pub fn row(
        &mut self,
        measure: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        reference: impl Into<String>,
        verdict: Verdict,
    ) {
        let row = Row {
            measure: measure.into(),
            value: value.into(),
            target: target.into(),
            real: "–".into(),
            reference: reference.into(),
            verdict,
        };
        eprintln!("bench: {} = {}", row.measure, row.value);
        self.rows.push(row);
    }

    /// Sets the real server's value of the last row added.
    pub fn real(&mut self, value: impl Into<String>) {
        if let Some(row) = self.rows.last_mut() {
            row.real = value.into();
        }
    }

    /// Adds a line printed under the table.
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// Prints the table and its notes to stdout.
    pub fn print(&self) {
        println!(
            "| measure | value | target | real server (v1.36, issue 19) | reference | target met |"
        );
        println!("|---|---|---|---|---|---|");
        for row in &self.rows {
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                row.measure,
                row.value,
                row.target,
                row.real,
                row.reference,
                row.verdict.text()
            );
        }
        if !self.notes.is_empty() {
            println!();
            for note in &self.notes {
                println!("- {note}");
            }
        }
    }
}
