//! Samples, summaries and the results table (markdown, so it pastes into `docs/benchmarks.md`).

use std::fmt::Write as _;
use std::time::Duration;

/// Unit of a measured value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Ms,
    MiB,
    Count,
    Seconds,
    MiBps,
}

impl Unit {
    fn fmt(self, v: f64) -> String {
        match self {
            Unit::Ms if v < 10.0 => format!("{v:.2} ms"),
            Unit::Ms => format!("{v:.1} ms"),
            Unit::MiB => format!("{v:.2} MiB"),
            Unit::Count => format!("{v:.0}"),
            Unit::Seconds => format!("{v:.1} s"),
            Unit::MiBps => format!("{v:.1} MiB/s"),
        }
    }
}

/// A summary of one measurement: a median with its p90 and sample count, or a single value.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub median: f64,
    pub p90: Option<f64>,
    pub n: usize,
    pub unit: Unit,
}

impl Stat {
    pub fn value(v: f64, unit: Unit) -> Self {
        Self {
            median: v,
            p90: None,
            n: 1,
            unit,
        }
    }

    pub fn durations(samples: &[Duration]) -> Self {
        let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        Self::of(&ms, Unit::Ms)
    }

    pub fn of(samples: &[f64], unit: Unit) -> Self {
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        Self {
            median: percentile(&v, 0.5),
            p90: Some(percentile(&v, 0.9)),
            n: v.len(),
            unit,
        }
    }

    fn cell(&self) -> String {
        match self.p90 {
            Some(p) => format!(
                "{} (p90 {}, n={})",
                self.unit.fmt(self.median),
                self.unit.fmt(p),
                self.n
            ),
            None => self.unit.fmt(self.median),
        }
    }
}

/// Nearest-rank percentile of sorted samples (`NaN` when empty).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// What a metric must reach.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
}

impl Target {
    fn met(self, v: f64) -> bool {
        match self {
            Target::AtMost(t) => v <= t,
            Target::AtLeast(t) => v >= t,
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub metric: String,
    pub bothy: Stat,
    pub baseline: Option<Stat>,
    pub target: Option<Target>,
}

impl Row {
    pub fn new(metric: impl Into<String>, bothy: Stat) -> Self {
        Self {
            metric: metric.into(),
            bothy,
            baseline: None,
            target: None,
        }
    }

    pub fn baseline(mut self, b: Stat) -> Self {
        self.baseline = Some(b);
        self
    }

    pub fn target(mut self, t: Target) -> Self {
        self.target = Some(t);
        self
    }
}

/// Renders rows as a markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| metric | bothy: median (p90) | baseline: median (p90) | ratio | target | met |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for r in rows {
        let base = r.baseline.map(|b| b.cell()).unwrap_or_else(|| "–".into());
        let ratio = match r.baseline {
            Some(b) if b.median > 0.0 => format!("{:.1}×", r.bothy.median / b.median),
            _ => "–".into(),
        };
        let (target, met) = match r.target {
            Some(t) => {
                let (op, v) = match t {
                    Target::AtMost(v) => ("≤", v),
                    Target::AtLeast(v) => ("≥", v),
                };
                (
                    format!("{op} {}", r.bothy.unit.fmt(v)),
                    if t.met(r.bothy.median) {
                        "yes"
                    } else {
                        "**no**"
                    }
                    .to_string(),
                )
            }
            None => ("–".into(), "–".into()),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {base} | {ratio} | {target} | {met} |",
            r.metric,
            r.bothy.cell()
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 5.0);
        assert_eq!(percentile(&v, 0.9), 9.0);
        assert_eq!(percentile(&[3.0], 0.9), 3.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn table_marks_missed_targets() {
        let rows = [
            Row::new("fast", Stat::value(1.0, Unit::Ms)).target(Target::AtMost(2.0)),
            Row::new("slow", Stat::of(&[3.0, 4.0, 5.0], Unit::Ms))
                .baseline(Stat::value(1.0, Unit::Ms))
                .target(Target::AtMost(2.0)),
        ];
        let t = table(&rows);
        assert!(
            t.contains("| fast | 1.00 ms | – | – | ≤ 2.00 ms | yes |"),
            "{t}"
        );
        assert!(t.contains("4.0×"), "{t}");
        assert!(t.contains("**no**"), "{t}");
    }
}
