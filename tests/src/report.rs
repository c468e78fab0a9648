//! What a benchmark reports: its figures, each with what it was compared
//! against, the ratio, the target and what limits it.
//!
//! Every benchmark prints its figures when it finishes. When `BENCH_REPORT`
//! names a file (as `cargo xtask bench` does), it also writes them there as
//! JSON, and `cargo xtask bench` turns the files of one run into the tables
//! at the top of BENCHMARKS.md. Figures are text on purpose: each benchmark
//! knows how to say its own numbers (µs, tasks/s, MiB) and the report only
//! lays them out.

use serde_json::{Value, json};

/// One row of a benchmark's table.
#[derive(Debug, Clone, Default)]
pub struct Figure {
    /// What is measured, e.g. "plugin call, fresh sandbox".
    pub figure: String,
    /// Our result, e.g. "9.2 µs (p50)".
    pub ours: String,
    /// What it is compared with in the same run, e.g. "bare wasmtime 8.0 µs";
    /// empty when nothing is.
    pub against: String,
    /// Ours over the comparison, e.g. "1.15×"; empty without one.
    pub ratio: String,
    /// The target and whether it is met, e.g. "≤ 1.1×: missed by 0.05".
    pub target: String,
    /// What limits the figure (where the time or the memory goes).
    pub limit: String,
}

impl Figure {
    /// A figure with what it measures and our result.
    pub fn new(figure: impl Into<String>, ours: impl Into<String>) -> Self {
        Self {
            figure: figure.into(),
            ours: ours.into(),
            ..Self::default()
        }
    }

    /// What it is compared with, and the ratio.
    pub fn against(mut self, against: impl Into<String>, ratio: f64) -> Self {
        self.against = against.into();
        self.ratio = format!("{ratio:.2}×");
        self
    }

    /// The target and the verdict.
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = target.into();
        self
    }

    /// What limits it.
    pub fn limit(mut self, limit: impl Into<String>) -> Self {
        self.limit = limit.into();
        self
    }

    fn to_json(&self) -> Value {
        json!({
            "figure": self.figure,
            "ours": self.ours,
            "against": self.against,
            "ratio": self.ratio,
            "target": self.target,
            "limit": self.limit,
        })
    }
}

/// A benchmark's figures, printed and (with `BENCH_REPORT`) saved.
#[derive(Debug)]
pub struct Report {
    bench: &'static str,
    title: &'static str,
    figures: Vec<Figure>,
}

impl Report {
    /// An empty report of the bench target `bench` (its `--bench` name),
    /// titled for BENCHMARKS.md.
    pub fn new(bench: &'static str, title: &'static str) -> Self {
        Self {
            bench,
            title,
            figures: Vec::new(),
        }
    }

    /// Adds one row.
    pub fn add(&mut self, figure: Figure) {
        self.figures.push(figure);
    }

    /// Prints the rows, and writes them to the file `BENCH_REPORT` names.
    pub fn finish(self) {
        println!("\n== {} ({})", self.title, self.bench);
        for row in &self.figures {
            println!("  {}: {}", row.figure, row.ours);
            for (label, text) in [
                ("against", &row.against),
                ("ratio", &row.ratio),
                ("target", &row.target),
                ("limit", &row.limit),
            ] {
                if !text.is_empty() {
                    println!("    {label}: {text}");
                }
            }
        }
        let Some(path) = std::env::var_os("BENCH_REPORT") else {
            return;
        };
        let document = json!({
            "bench": self.bench,
            "title": self.title,
            "figures": self.figures.iter().map(Figure::to_json).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&document).expect("a JSON value serializes");
        if let Err(err) = std::fs::write(&path, text) {
            panic!(
                "cannot write the report to {}: {err}",
                path.to_string_lossy()
            );
        }
    }
}

/// `value` with thousands separated by commas, e.g. `5,710`.
pub fn thousands(value: f64) -> String {
    let whole = value.round() as i64;
    let digits = whole.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if whole < 0 { format!("-{out}") } else { out }
}

/// "met" or "missed by …" for a figure that must stay at or under `limit`.
pub fn at_most(value: f64, limit: f64, unit: &str) -> String {
    if value <= limit {
        format!("≤ {limit}{unit}: met")
    } else {
        format!(
            "≤ {limit}{unit}: missed by {}{unit}",
            shortfall(value - limit)
        )
    }
}

/// "met" or "missed by …" for a figure that must reach at least `floor`.
pub fn at_least(value: f64, floor: f64, unit: &str) -> String {
    if value >= floor {
        format!("≥ {floor}{unit}: met")
    } else {
        format!(
            "≥ {floor}{unit}: missed by {}{unit}",
            shortfall(floor - value)
        )
    }
}

/// A miss with two decimals, or with the first digit that is not zero when
/// two decimals would show none (a miss is never shown as 0.00).
fn shortfall(by: f64) -> String {
    if by >= 0.01 {
        format!("{by:.2}")
    } else {
        let decimals = (-by.log10()).ceil().clamp(2.0, 9.0) as usize;
        format!("{by:.decimals$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_miss_is_never_shown_as_nothing() {
        assert_eq!(at_most(1.106, 1.1, "×"), "≤ 1.1×: missed by 0.006×");
        assert_eq!(at_most(10.41, 10.0, " µs"), "≤ 10 µs: missed by 0.41 µs");
        assert_eq!(at_least(0.94994, 0.95, "×"), "≥ 0.95×: missed by 0.00006×");
        assert_eq!(at_most(1.1, 1.1, "×"), "≤ 1.1×: met");
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(5710.4), "5,710");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(thousands(-1200.0), "-1,200");
    }

    #[test]
    fn verdicts_name_the_miss() {
        assert_eq!(at_most(1.15, 1.1, "×"), "≤ 1.1×: missed by 0.05×");
        assert_eq!(at_most(9.2, 10.0, " µs"), "≤ 10 µs: met");
        assert_eq!(at_least(0.79, 0.95, "×"), "≥ 0.95×: missed by 0.16×");
    }
}
