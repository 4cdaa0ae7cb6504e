//! The `kho` crate's public surface, listed from its sources and compared
//! with `tests/public_api.txt`: the surface changes only on purpose.
//!
//! The listing is every `pub` item of every non-test source file (not
//! `pub(crate)` or `pub(super)`): modules, types, traits, functions and
//! methods (with the type or trait they belong to), constants, statics,
//! type aliases, re-exports and struct fields. Items of a private module
//! are listed too (a `pub use` may reach them), so the listing is an upper
//! bound of what a user can name. Modules built only for tests or the
//! `host` feature (`testkit`, `platform::host`) are left out: an embedding
//! kernel never builds them.
//!
//! After a deliberate change: `KHO_BLESS=1 cargo test --test public_api`
//! rewrites the listing, and the diff shows the change for review.

use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The module path of a source file under `src/`.
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    if parts.is_empty() {
        "kho".into()
    } else {
        format!("kho::{}", parts.join("::"))
    }
}

/// Source files, sorted; test files and test-only modules excluded.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            if name != "tests" && name != "testkit" {
                sources(&p, out);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" && name != "host.rs" {
            out.push(p);
        }
    }
}

/// The name after a keyword in `line` (`fn name(`, `struct Name<`, ...).
fn name_after<'a>(line: &'a str, kw: &str) -> Option<&'a str> {
    let at = line.find(kw)? + kw.len();
    let rest = &line[at..];
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// The type an `impl` line is for: generics skipped, the part after
/// `for` if any, its last path segment.
fn impl_target(line: &str) -> &str {
    let mut rest = line.trim_start_matches("impl");
    if rest.starts_with('<') {
        let mut depth = 0usize;
        for (i, c) in rest.char_indices() {
            match c {
                '<' => depth += 1,
                '>' => {
                    depth -= 1;
                    if depth == 0 {
                        rest = &rest[i + 1..];
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    let rest = rest.split(" for ").last().unwrap_or(rest).trim();
    let path = rest.split(['<', ' ', '{']).next().unwrap_or("?");
    path.rsplit("::").next().unwrap_or(path)
}

/// Every public item of one file, as `path kind name` lines.
fn list_file(module: &str, text: &str, out: &mut Vec<String>) {
    // The type or trait whose block we are in, with the depth it opened at.
    let mut owner: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut skip_next = false;
    let mut lines = text.lines().peekable();
    while let Some(raw) = lines.next() {
        let line = raw.trim();
        if line.starts_with("//") {
            continue;
        }
        // An inline test module closes the file's public part.
        if line == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod ") && n.contains('{'))
        {
            break;
        }
        if line.starts_with("#[cfg(test)]") {
            skip_next = true;
            continue;
        }
        let here = owner.last().map(|(o, _)| o.clone());
        let opens = raw.matches('{').count();
        let closes = raw.matches('}').count();
        if line.starts_with("impl") || line.starts_with("pub trait") || line.starts_with("trait") {
            // `impl<T: X> Name<T>`, `impl Trait for Name`: the type's name.
            let target = impl_target(line);
            let name = if line.contains("trait ") {
                name_after(line, "trait ").unwrap_or("?").to_owned()
            } else {
                target.rsplit("::").next().unwrap_or(target).to_owned()
            };
            if opens > closes {
                owner.push((name, depth));
            }
        }
        let public = line.starts_with("pub ") && !skip_next;
        skip_next = false;
        if public {
            let item = &line[4..];
            let kinds = [
                ("mod ", "mod"),
                ("struct ", "struct"),
                ("enum ", "enum"),
                ("trait ", "trait"),
                ("type ", "type"),
                ("static ", "static"),
                ("const fn ", "fn"),
                ("unsafe fn ", "unsafe fn"),
                ("fn ", "fn"),
                ("const ", "const"),
            ];
            let found = kinds
                .iter()
                .find(|(kw, _)| item.starts_with(kw))
                .and_then(|(kw, kind)| name_after(item, kw).map(|n| (*kind, n)));
            if let Some((kind, name)) = found {
                match (&here, kind) {
                    (Some(o), "fn" | "unsafe fn" | "const" | "type") => {
                        out.push(format!("{module}::{o}::{name} {kind}"))
                    }
                    _ => out.push(format!("{module}::{name} {kind}")),
                }
            } else if let Some(u) = item.strip_prefix("use ") {
                let mut u = u.to_owned();
                // A `pub use` over several lines.
                while !u.ends_with(';') {
                    match lines.next() {
                        Some(n) => u.push_str(n.trim()),
                        None => break,
                    }
                }
                out.push(format!("{module} use {}", u.trim_end_matches(';')));
            } else if let Some((field, _)) = item.split_once(':') {
                let field = field.trim();
                if field.chars().all(|c| c.is_alphanumeric() || c == '_') {
                    let o = here.as_deref().unwrap_or("?");
                    out.push(format!("{module}::{o}.{field} field"));
                }
            }
        }
        // Struct bodies: a field belongs to the struct being defined.
        if (line.starts_with("pub struct ") || line.starts_with("struct ")) && opens > closes {
            let name = name_after(line, "struct ").unwrap_or("?").to_owned();
            owner.push((name, depth));
        }
        depth = (depth + opens).saturating_sub(closes);
        while owner.last().is_some_and(|(_, d)| *d >= depth) {
            owner.pop();
        }
    }
}

/// The listing of the crate under `root`.
fn listing(root: &Path) -> String {
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    let mut items = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(root.join("src")).unwrap();
        let text = std::fs::read_to_string(f).unwrap();
        list_file(&module_of(rel), &text, &mut items);
    }
    items.sort();
    items.dedup();
    let fns = items.iter().filter(|l| l.ends_with(" fn")).count();
    let fields = items.iter().filter(|l| l.ends_with(" field")).count();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# kho's public surface: {} items, {fns} functions, {fields} fields",
        items.len()
    );
    let _ = writeln!(
        s,
        "# (tests/public_api.rs; KHO_BLESS=1 cargo test --test public_api rewrites it)"
    );
    for i in items {
        let _ = writeln!(s, "{i}");
    }
    s
}

#[test]
fn the_public_surface_changes_only_on_purpose() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let now = listing(root);
    let path = root.join("tests/public_api.txt");
    if std::env::var_os("KHO_BLESS").is_some() {
        std::fs::write(&path, &now).unwrap();
        return;
    }
    let kept = std::fs::read_to_string(&path).unwrap_or_default();
    if kept != now {
        let old: Vec<&str> = kept.lines().collect();
        let new: Vec<&str> = now.lines().collect();
        let gone: Vec<&&str> = old.iter().filter(|l| !new.contains(l)).collect();
        let added: Vec<&&str> = new.iter().filter(|l| !old.contains(l)).collect();
        panic!(
            "the public surface changed (bless with KHO_BLESS=1 if on purpose):\n- {}\n+ {}",
            gone.iter().map(|s| **s).collect::<Vec<_>>().join("\n- "),
            added.iter().map(|s| **s).collect::<Vec<_>>().join("\n+ ")
        );
    }
}

/// The scanner itself, on a file with every kind of item.
#[test]
fn the_scanner_sees_each_kind_of_item() {
    let text = "\
pub mod a;
mod b;
pub use b::C;
pub struct S {
    pub x: u64,
    y: u64,
}
impl S {
    pub fn new() -> Self { todo!() }
    pub(crate) fn hidden() {}
    fn private() {}
}
impl<T> core::fmt::Display for W<T> {
    fn fmt(&self) {}
}
pub enum E { A }
pub trait T {
    fn m(&self);
}
pub const K: u8 = 1;
#[cfg(test)]
pub fn only_tests() {}
pub fn f() {}
#[cfg(test)]
mod tests {
    pub fn in_tests() {}
}
";
    let mut out = Vec::new();
    list_file("kho::m", text, &mut out);
    out.sort();
    assert_eq!(
        out,
        [
            "kho::m use b::C",
            "kho::m::E enum",
            "kho::m::K const",
            "kho::m::S struct",
            "kho::m::S.x field",
            "kho::m::S::new fn",
            "kho::m::T trait",
            "kho::m::a mod",
            "kho::m::f fn",
        ]
    );
}
