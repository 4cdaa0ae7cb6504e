//! The layout rules that are not the compiler's: in `kho` and the kernel
//! crates, no top-level module imports a module that imports it back
//! (directly or around a longer loop, from any depth of either), no
//! source file (tests aside) is 600 lines or more, and the arch library
//! claims nothing global.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The source text of a module: its file, or every file under its
/// directory, without tests (`tests.rs`, `tests/`, an inline test module).
fn module_text(p: &Path) -> String {
    let mut text = String::new();
    if p.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for e in entries {
            let name = e.file_name().unwrap().to_string_lossy().into_owned();
            if name != "tests" && name != "tests.rs" {
                text.push_str(&module_text(&e));
            }
        }
    } else if p.extension().is_some_and(|x| x == "rs") {
        let t = std::fs::read_to_string(p).unwrap();
        let end = t.find("#[cfg(test)]\nmod tests {").unwrap_or(t.len());
        text.push_str(&t[..end]);
        text.push('\n');
    }
    text
}

/// The top-level modules of a crate's `src/` directory (a file, or a
/// directory with everything under it) and, for each, the top-level
/// modules of the same crate it names (`crate::NAME` or `use crate::{NAME`)
/// anywhere in its text: a loop through a submodule is a loop too.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
        if stem == "lib" || stem == "main" {
            continue;
        }
        let text = module_text(&p);
        if !text.is_empty() {
            files
                .entry(stem)
                .or_insert_with(String::new)
                .push_str(&text);
        }
    }
    let names: BTreeSet<String> = files.keys().cloned().collect();
    let mut g = BTreeMap::new();
    for (m, text) in &files {
        let mut uses = BTreeSet::new();
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + 7..];
                let rest = rest.strip_prefix('{').unwrap_or(rest);
                for word in rest
                    .split([',', '}', ' ', '('])
                    .map(|w| w.split("::").next().unwrap_or(""))
                {
                    let w = word.trim();
                    if names.contains(w) && w != m {
                        uses.insert(w.to_owned());
                    }
                }
            }
        }
        g.insert(m.clone(), uses);
    }
    g
}

/// A loop of module imports, if there is one.
fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            return Some(path[at..].to_vec());
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for n in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(n, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|m| visit(m, g, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_of_a_kernel_crate_imports_one_that_imports_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in [
        "src",
        "arch/x86_64/src",
        "qemu/src",
        "qemu/rt/src",
        "qemu/minimal/src",
    ] {
        let g = graph(&root.join(dir));
        assert!(
            g.len() > 1 || dir.contains("minimal"),
            "{dir}: no modules found"
        );
        if let Some(c) = cycle(&g) {
            panic!("{dir}: import loop {}", c.join(" -> "));
        }
    }
}

/// Every `.rs` file under `dir`, tests (`tests.rs`, `tests/`) left out.
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() && name != "tests" {
            sources(&p, out);
        } else if name.ends_with(".rs") && name != "tests.rs" {
            out.push(p);
        }
    }
}

#[test]
fn no_source_file_reaches_600_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "arch/x86_64/src", "qemu/src"] {
        sources(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "found only {} files", files.len());
    let long: Vec<String> = files
        .iter()
        .map(|p| (p, std::fs::read_to_string(p).unwrap().lines().count()))
        .filter(|&(_, n)| n >= 600)
        .map(|(p, n)| format!("{}: {n} lines", p.strip_prefix(root).unwrap().display()))
        .collect();
    assert!(long.is_empty(), "split along a seam: {long:?}");
}

#[test]
fn the_arch_library_claims_nothing_global() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("arch/x86_64/src");
    for e in std::fs::read_dir(&root).unwrap() {
        let p = e.unwrap().path();
        let text = module_text(&p);
        for claim in [
            "#[global_allocator]",
            "#[panic_handler]",
            "fn kho_kernel_main",
        ] {
            let code = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .any(|l| l.contains(claim));
            assert!(!code, "{}: {claim}", p.display());
        }
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut g = BTreeMap::new();
    g.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    g.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    g.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(cycle(&g).map(|c| c.len()), Some(3));
    g.insert("c".to_owned(), BTreeSet::new());
    assert_eq!(cycle(&g), None);
}
