//! Every version string the docs name is one the code has: each `NAME-vN`
//! in docs/, the README and every `//!` comment of the workspace is a
//! constant of `kho::abi`, or one of the few that docs/abi.md marks as not
//! kho's ABI, so the docs cannot drift from the bytes again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every version string `kho::abi` defines.
fn abi() -> BTreeSet<&'static str> {
    use kho::abi::*;
    [
        handoff::HANDOFF_VERSION,
        handoff::HANDOFF_MODULE,
        images::IMAGES_VERSION,
        luo::LUO_VERSION,
        luo::LUO_V1,
        memfd::v1::VERSION,
        memfd::v2::VERSION,
        reads::READS_VERSION,
        scratch::SCRATCH_VERSION,
        tracker::TRACKER_VERSION,
        tracker::TRACKER_VERSION_V4,
        vmalloc::VMALLOC_VERSION,
    ]
    .into_iter()
    .collect()
}

/// Named in the docs, and marked there as not kho's ABI (docs/abi.md,
/// "Versions that are not kho's ABI"): the tests', the demo's, examples.
const NOT_ABI: &[&str] = &[
    "memfd-v3",
    "demo-pool-v1",
    "kho-demo-v1",
    "ticket-v1",
    "ticket-v2",
    "demo-v1",
    "demo-v2",
];

/// Retired or made-up strings, allowed only on a line that says why.
const HISTORY: &[(&str, &str)] = &[("kho-handoff-v1", "never sees"), ("memfd-v12", "truncated")];

/// The version-like tokens of `line`: `name-vN`, where name is lowercase
/// letters, digits, `-` and `,`; not part of a path or a file name.
fn tokens(line: &str) -> Vec<String> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 < b.len() {
        if b[i] == b'-' && b[i + 1] == b'v' && b[i + 2].is_ascii_digit() && i > 0 {
            let mut end = i + 2;
            while end < b.len() && b[end].is_ascii_digit() {
                end += 1;
            }
            let mut start = i;
            while start > 0 {
                let c = b[start - 1];
                if c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b',' {
                    start -= 1;
                } else {
                    break;
                }
            }
            let before = start.checked_sub(1).map(|k| b[k]);
            let after = b.get(end).copied();
            let ext =
                after == Some(b'.') && b.get(end + 1).is_some_and(|c| c.is_ascii_alphabetic());
            let word = after.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_');
            let name = &line[start..end];
            if before != Some(b'/')
                && !ext
                && !word
                && name.as_bytes()[0].is_ascii_lowercase()
                && name.contains(|c: char| c.is_ascii_lowercase())
            {
                out.push(name.trim_start_matches(['-', ',']).to_string());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() {
            if name != "target" && !name.starts_with('.') && name != "corpus" {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_version_string_in_the_docs_is_a_constant_of_kho_abi() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let abi = abi();
    let mut lines: Vec<(String, usize, String)> = Vec::new();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.push(root.join("README.md"));
    for p in &docs {
        let text = std::fs::read_to_string(p).unwrap();
        for (n, l) in text.lines().enumerate() {
            lines.push((p.display().to_string(), n + 1, l.to_string()));
        }
    }
    let mut rs = Vec::new();
    for d in ["src", "arch", "qemu", "tests", "bench", "examples", "fuzz"] {
        rust_files(&root.join(d), &mut rs);
    }
    assert!(rs.len() > 50, "found {} Rust files", rs.len());
    for p in &rs {
        let text = std::fs::read_to_string(p).unwrap();
        for (n, l) in text.lines().enumerate() {
            if l.trim_start().starts_with("//!") {
                lines.push((p.display().to_string(), n + 1, l.to_string()));
            }
        }
    }
    let mut seen = BTreeSet::new();
    let mut bad = Vec::new();
    for (file, n, l) in &lines {
        for t in tokens(l) {
            seen.insert(t.clone());
            let history = HISTORY.iter().any(|(v, why)| *v == t && l.contains(why));
            if !abi.contains(t.as_str()) && !NOT_ABI.contains(&t.as_str()) && !history {
                bad.push(format!("{file}:{n}: {t}"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "version strings that kho::abi does not define:\n{}",
        bad.join("\n")
    );
    // The scan sees what it should: the current versions, named.
    for v in ["kho-luo-v2", "kho-tracker-v3", "memfd-v2", "kho,handoff-v2"] {
        assert!(seen.contains(v), "{v} not found: the scan is broken");
    }
    // And the marked ones are really marked in docs/abi.md.
    let abi_md = std::fs::read_to_string(root.join("docs/abi.md")).unwrap();
    let marked = abi_md
        .split("Versions that are not kho's ABI")
        .nth(1)
        .and_then(|s| s.split("\n\n").next())
        .expect("docs/abi.md says which versions are not kho's ABI");
    for v in NOT_ABI {
        assert!(marked.contains(v), "{v} is not marked in docs/abi.md");
    }
}

#[test]
fn the_scanner_finds_versions_and_skips_paths() {
    assert_eq!(
        tokens("a `kho-luo-v2` node, `kho,handoff-v2`."),
        ["kho-luo-v2", "kho,handoff-v2"]
    );
    assert!(tokens("tests/golden/luo-v2.dtb and pvh-boot-v1.bin").is_empty());
    assert_eq!(tokens("reads memfd-v1 only"), ["memfd-v1"]);
}
