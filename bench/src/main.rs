//! `kho-bench`: every benchmark of `./x.py bench`, with its peers in the
//! same run, written as a table and to `target/bench/results.json`.

mod fdt_bench;
mod kernel_bench;
mod memfd_bench;
mod shuffle;
mod timing;
mod tracker_bench;

use timing::Stat;

use std::fmt::Write as _;

/// One reported figure, compared with a peer measured in the same run.
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// Our value: median and spread.
    pub value: Stat,
    /// Unit of both values.
    pub unit: &'static str,
    /// The peer's name. A peer that does less work than we do is named a
    /// bound ("... (lower bound)"), not a peer.
    pub baseline: String,
    /// The peer's value: median and spread.
    pub baseline_value: Stat,
    /// `"lower"` or `"higher"`.
    pub better_is: &'static str,
    /// The target this figure must meet, if it has one.
    pub target: Option<Target>,
}

/// A target a figure must meet.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The ratio to the peer (medians) is at most this.
    Ratio(f64),
    /// Our median is at most this, in the figure's unit.
    Value(f64),
}

impl Figure {
    /// A figure with no target.
    pub fn new(
        name: String,
        value: impl Into<Stat>,
        unit: &'static str,
        baseline: impl Into<String>,
        baseline_value: impl Into<Stat>,
    ) -> Self {
        Figure {
            name,
            value: value.into(),
            unit,
            baseline: baseline.into(),
            baseline_value: baseline_value.into(),
            better_is: "lower",
            target: None,
        }
    }

    /// The same figure with a target.
    pub fn with_target(mut self, t: Target) -> Self {
        self.target = Some(t);
        self
    }

    fn ratio(&self) -> f64 {
        if self.baseline_value.median == 0.0 {
            f64::NAN
        } else {
            self.value.median / self.baseline_value.median
        }
    }

    /// Whether the target is met (`None`: no target).
    fn met(&self) -> Option<bool> {
        self.target.map(|t| match t {
            Target::Ratio(r) => self.ratio() <= r,
            Target::Value(v) => self.value.median <= v,
        })
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".to_owned()
    }
}

/// The table every figure is printed in.
fn table(figures: &[Figure]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<60} {:>12} {:>7} {:<34} {:>12} {:>7} {:>7}  target",
        "figure", "ours", "spread", "peer", "peer value", "spread", "ratio"
    );
    for f in figures {
        let target = match (f.target, f.met()) {
            (Some(Target::Ratio(r)), Some(m)) => {
                format!("ratio <= {r}: {}", if m { "met" } else { "NOT MET" })
            }
            (Some(Target::Value(v)), Some(m)) => {
                format!("<= {v} {}: {}", f.unit, if m { "met" } else { "NOT MET" })
            }
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<60} {:>8.3} {:<3} {:>6.1}% {:<34} {:>12.3} {:>6.1}% {:>7.3}  {target}",
            f.name,
            f.value.median,
            f.unit,
            100.0 * f.value.spread(),
            f.baseline,
            f.baseline_value.median,
            100.0 * f.baseline_value.spread(),
            f.ratio(),
        );
    }
    out
}

/// `results.json`: the machine, the kexec accelerator, every figure.
fn json(
    figures: &[Figure],
    machine: &str,
    kexec_accel: &Option<(kho_runner::Accel, String)>,
) -> String {
    let mut out = String::from("{\n  \"machine\": ");
    out.push_str(machine);
    if let Some((accel, why)) = &kexec_accel {
        let accel = match accel {
            kho_runner::Accel::Tcg => "tcg",
            kho_runner::Accel::Kvm => "kvm",
        };
        let _ = write!(
            out,
            ",\n  \"kexec_accel\": {},\n  \"kexec_accel_why\": {}",
            json_str(accel),
            json_str(why)
        );
    }
    out.push_str(",\n  \"figures\": [\n");
    for (i, f) in figures.iter().enumerate() {
        let target = match f.target {
            Some(Target::Ratio(r)) => format!("{{\"ratio_at_most\": {}}}", json_num(r)),
            Some(Target::Value(v)) => format!("{{\"value_at_most\": {}}}", json_num(v)),
            None => "null".to_owned(),
        };
        let met = match f.met() {
            Some(m) => m.to_string(),
            None => "null".to_owned(),
        };
        let _ = writeln!(
            out,
            "    {{\"name\": {}, \"value\": {}, \"value_lo\": {}, \"value_hi\": {}, \"unit\": {}, \"baseline\": {}, \"baseline_value\": {}, \"baseline_lo\": {}, \"baseline_hi\": {}, \"ratio\": {}, \"better_is\": {}, \"target\": {target}, \"target_met\": {met}}}{}",
            json_str(&f.name),
            json_num(f.value.median),
            json_num(f.value.lo),
            json_num(f.value.hi),
            json_str(f.unit),
            json_str(&f.baseline),
            json_num(f.baseline_value.median),
            json_num(f.baseline_value.lo),
            json_num(f.baseline_value.hi),
            json_num(f.ratio()),
            json_str(f.better_is),
            if i + 1 < figures.len() { "," } else { "" }
        );
    }
    out.push_str("  ]\n}\n");
    out
}

fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    let mut figures = Vec::new();
    if filter.is_empty() || filter == "tracker" {
        figures.extend(tracker_bench::run());
    }
    if filter.is_empty() || filter == "fdt" {
        figures.extend(fdt_bench::run());
    }
    if filter.is_empty() || filter == "memfd" {
        figures.extend(memfd_bench::run());
    }
    let machine = std::env::var("KHO_BENCH_MACHINE").unwrap_or_else(|_| "null".to_owned());
    let mut kexec_accel = None;
    if filter.is_empty() || filter == "kexec" {
        // The machine note says whether /dev/kvm is there (`x.py` writes it).
        let kvm = machine.replace(' ', "").contains("\"kvm\":true");
        match kernel_bench::run_all(&kernel_bench::Paths::of_workspace(), kvm) {
            Ok((f, accel, why)) => {
                figures.extend(f);
                kexec_accel = Some((accel, why));
            }
            Err(e) => {
                eprintln!("kho-bench: the kernel benches failed: {e}");
                std::process::exit(1);
            }
        }
    }

    print!("{}", table(&figures));
    let out = json(&figures, &machine, &kexec_accel);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).expect("create target/bench");
    let path = dir.join("results.json");
    std::fs::write(&path, out).expect("write results.json");
    println!("\nwrote {}", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every figure the table prints is in `results.json`, and nothing else
    /// is: one list feeds both.
    #[test]
    fn every_printed_figure_is_in_the_json() {
        let figures = vec![
            Figure::new("a \"quoted\" figure".into(), 1.5, "ns", "peer", 3.0)
                .with_target(Target::Ratio(1.0)),
            Figure::new("a figure without peer".into(), 2.0, "ms", "", f64::NAN),
        ];
        let printed = table(&figures);
        let written = json(&figures, "null", &None);
        for f in &figures {
            assert!(printed.contains(&f.name), "{} not printed", f.name);
            assert!(
                written.contains(&json_str(&f.name)),
                "{} not written",
                f.name
            );
        }
        assert_eq!(written.matches("\"name\": ").count(), figures.len());
        assert_eq!(
            printed
                .lines()
                .filter(|l| l.contains(" ns ") || l.contains(" ms "))
                .count(),
            2
        );
        assert!(written.contains("\"target_met\": true"));
    }
}
