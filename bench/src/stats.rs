//! Figures and ratios: each figure is a set of samples (one per round), shown
//! as its median and spread; each ratio divides two figures' medians and,
//! when the issue set one, says whether the goal is met. The whole report
//! is also written as JSON.

use std::time::Duration;

use serde::Serialize;

/// Which way a goal points.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// The ratio should be at most this.
    AtMost(f64),
    /// The ratio should be at least this.
    AtLeast(f64),
}

impl Goal {
    fn met(self, ratio: f64) -> bool {
        match self {
            Self::AtMost(g) => ratio <= g,
            Self::AtLeast(g) => ratio >= g,
        }
    }

    fn text(self) -> String {
        match self {
            Self::AtMost(g) => format!("≤ {g}"),
            Self::AtLeast(g) => format!("≥ {g}"),
        }
    }
}

/// One measured quantity over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What it is, e.g. `page20.gateway.p50`.
    pub name: String,
    /// Its unit, e.g. `ms`.
    pub unit: String,
    /// One sample per round.
    pub samples: Vec<f64>,
    /// The median of the samples.
    pub median: f64,
    /// The smallest and largest sample.
    pub min: f64,
    /// See `min`.
    pub max: f64,
}

/// A ratio of two figures' medians.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// What it compares.
    pub name: String,
    /// The numerator figure.
    pub numerator: String,
    /// The denominator figure.
    pub denominator: String,
    /// The ratio of their medians.
    pub value: f64,
    /// The ratio of the worst and best pairing of samples (the spread).
    pub low: f64,
    /// See `low`.
    pub high: f64,
    /// The goal, if any.
    pub goal: Option<Goal>,
    /// Whether the goal is met (none without a goal).
    pub met: Option<bool>,
}

/// A check that variants delivered the same rows.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was compared.
    pub name: String,
    /// Rows each variant delivered, and their digest.
    pub variants: Vec<(String, u64, String)>,
    /// Whether all agree.
    pub same: bool,
}

/// Everything one run measured.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The machine and the run's settings.
    pub machine: serde_json::Map<String, serde_json::Value>,
    /// The figures, in the order measured.
    pub figures: Vec<Figure>,
    /// The ratios.
    pub ratios: Vec<Ratio>,
    /// The same-rows checks.
    pub checks: Vec<Check>,
    /// Notes printed along the way.
    pub notes: Vec<String>,
    /// Parts that failed or did not finish in time.
    pub failures: Vec<String>,
}

/// The median of `v` (empty: 0).
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// The `p` quantile (0..=1) of `v`, nearest rank.
pub fn quantile(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Report {
    /// Adds (or extends with more rounds) the figure `name`.
    pub fn add(&mut self, name: &str, unit: &str, sample: f64) {
        if let Some(f) = self.figures.iter_mut().find(|f| f.name == name) {
            f.samples.push(sample);
        } else {
            self.figures.push(Figure {
                name: name.to_owned(),
                unit: unit.to_owned(),
                samples: vec![sample],
                median: 0.0,
                min: 0.0,
                max: 0.0,
            });
        }
    }

    /// The figure `name`, if measured.
    pub fn figure(&self, name: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.name == name)
    }

    /// Records the ratio `num / den` of two figures' medians, with a goal.
    pub fn ratio(&mut self, name: &str, num: &str, den: &str, goal: Option<Goal>) {
        let (Some(n), Some(d)) = (self.figure(num), self.figure(den)) else {
            self.notes
                .push(format!("ratio {name}: {num} or {den} was not measured"));
            return;
        };
        let (nm, dm) = (median(&n.samples), median(&d.samples));
        let value = if dm == 0.0 { f64::NAN } else { nm / dm };
        let (nmin, nmax) = bounds(&n.samples);
        let (dmin, dmax) = bounds(&d.samples);
        let low = if dmax == 0.0 { f64::NAN } else { nmin / dmax };
        let high = if dmin == 0.0 { f64::NAN } else { nmax / dmin };
        self.ratios.push(Ratio {
            name: name.to_owned(),
            numerator: num.to_owned(),
            denominator: den.to_owned(),
            value,
            low,
            high,
            goal,
            met: goal.map(|g| g.met(value)),
        });
    }

    /// Records whether variants delivered the same rows.
    pub fn check(&mut self, name: &str, variants: Vec<(String, u64, u64)>) -> bool {
        let same = variants.windows(2).all(|w| w[0].1 == w[1].1 && w[0].2 == w[1].2);
        self.checks.push(Check {
            name: name.to_owned(),
            variants: variants
                .into_iter()
                .map(|(v, rows, digest)| (v, rows, format!("{digest:016x}")))
                .collect(),
            same,
        });
        same
    }

    /// Fills in medians and bounds.
    pub fn finish(&mut self) {
        for f in &mut self.figures {
            f.median = median(&f.samples);
            (f.min, f.max) = bounds(&f.samples);
        }
    }

    /// The report as text: figures, then ratios against their goals.
    pub fn text(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "\n{:<46} {:>12} {:>25}  {}\n",
            "figure", "median", "spread (min..max)", "unit"
        ));
        for f in &self.figures {
            out.push_str(&format!(
                "{:<46} {:>12} {:>25}  {} ({} rounds)\n",
                f.name,
                num(f.median),
                format!("{}..{}", num(f.min), num(f.max)),
                f.unit,
                f.samples.len()
            ));
        }
        out.push_str(&format!(
            "\n{:<46} {:>8} {:>17} {:>8}  {}\n",
            "ratio", "value", "spread", "goal", "met"
        ));
        for r in &self.ratios {
            out.push_str(&format!(
                "{:<46} {:>8.3} {:>17} {:>8}  {}\n",
                r.name,
                r.value,
                format!("{:.2}..{:.2}", r.low, r.high),
                r.goal.map(Goal::text).unwrap_or_default(),
                match r.met {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "",
                }
            ));
        }
        out.push_str("\nsame rows across variants:\n");
        for c in &self.checks {
            let v: Vec<String> = c
                .variants
                .iter()
                .map(|(name, rows, digest)| format!("{name} {rows} rows {digest}"))
                .collect();
            out.push_str(&format!(
                "  {:<8} {}: {}\n",
                if c.same { "same" } else { "DIFFER" },
                c.name,
                v.join(", ")
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        for n in &self.failures {
            out.push_str(&format!("FAILED: {n}\n"));
        }
        out
    }
}

fn bounds(v: &[f64]) -> (f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.is_empty() { (0.0, 0.0) } else { (min, max) }
}

/// A number with sensible precision.
fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 0.1 {
        format!("{x:.3}")
    } else {
        format!("{x:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let mut r = Report::default();
        for (a, b) in [(2.0, 1.0), (4.0, 2.0), (3.0, 1.5)] {
            r.add("a", "ms", a);
            r.add("b", "ms", b);
        }
        r.ratio("a/b", "a", "b", Some(Goal::AtMost(1.5)));
        assert_eq!(r.ratios[0].value, 2.0);
        assert_eq!(r.ratios[0].met, Some(false));
        assert!(r.check("rows", vec![("x".into(), 3, 7), ("y".into(), 3, 7)]));
        assert!(!r.check("rows", vec![("x".into(), 3, 7), ("y".into(), 3, 8)]));
    }
}
