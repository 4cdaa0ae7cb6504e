//! `kho-bench`: every benchmark of `./x.py bench`, with its peers in the
//! same run, written as a table and to `target/bench/results.json`.

mod fdt_bench;
mod memfd_bench;
mod timing;
mod tracker_bench;

use std::fmt::Write as _;

/// One reported figure, compared with a peer measured in the same run.
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// Our value.
    pub value: f64,
    /// Unit of both values.
    pub unit: &'static str,
    /// The peer's name.
    pub baseline: String,
    /// The peer's value.
    pub baseline_value: f64,
    /// `"lower"` or `"higher"`.
    pub better_is: &'static str,
}

impl Figure {
    fn ratio(&self) -> f64 {
        if self.baseline_value == 0.0 {
            f64::NAN
        } else {
            self.value / self.baseline_value
        }
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

    println!(
        "\n{:<52} {:>14} {:>22} {:>14} {:>8}",
        "figure", "ours", "peer", "peer value", "ratio"
    );
    for f in &figures {
        println!(
            "{:<52} {:>10.3} {:<3} {:>22} {:>14.3} {:>8.3}",
            f.name,
            f.value,
            f.unit,
            f.baseline,
            f.baseline_value,
            f.ratio()
        );
    }

    let machine = std::env::var("KHO_BENCH_MACHINE").unwrap_or_else(|_| "null".to_owned());
    let mut out = String::from("{\n  \"machine\": ");
    out.push_str(&machine);
    out.push_str(",\n  \"figures\": [\n");
    for (i, f) in figures.iter().enumerate() {
        let _ = writeln!(
            out,
            "    {{\"name\": {}, \"value\": {}, \"unit\": {}, \"baseline\": {}, \"baseline_value\": {}, \"ratio\": {}, \"better_is\": {}}}{}",
            json_str(&f.name),
            json_num(f.value),
            json_str(f.unit),
            json_str(&f.baseline),
            json_num(f.baseline_value),
            json_num(f.ratio()),
            json_str(f.better_is),
            if i + 1 < figures.len() { "," } else { "" }
        );
    }
    out.push_str("  ]\n}\n");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).expect("create target/bench");
    let path = dir.join("results.json");
    std::fs::write(&path, out).expect("write results.json");
    println!("\nwrote {}", path.display());
}
