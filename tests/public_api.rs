//! The `kho` crate's public surface, listed from its sources and compared
//! with `tests/public_api.txt`: the surface changes only on purpose.
//!
//! The listing is every `pub` item of every non-test source file (not
//! `pub(crate)` or `pub(super)`): modules, types, traits, functions and
//! methods (with the type or trait they belong to), constants, statics,
//! type aliases, re-exports and struct fields, each by the path a user
//! writes. An item of a private module is listed where a `pub use` makes
//! it nameable (`kho::update::outgoing::Outgoing::freeze` is listed as
//! `kho::Outgoing::freeze`), and not at all if none does (it is the
//! crate's own, however it is spelled); the `use` lines of private
//! modules are left out with them. Modules built only for tests or the
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

/// Whether an attribute line keeps the item after it out of a build with
/// the `features` given: `#[cfg(test)]` always does;
/// `#[cfg(feature = "x")]` and `#[cfg(any(test, feature = "x"))]` do
/// unless `x` is on (the host fake's `host` never is: no kernel builds
/// it), `#[cfg(not(feature = "x"))]` does if it is.
fn cfg_excludes(line: &str, features: &[&str]) -> bool {
    if line.starts_with("#[cfg(test)]")
        || line.starts_with("#[cfg(doctest)]")
        || line.starts_with("#[cfg(all(doctest")
    {
        return true;
    }
    // Each form: its text around the feature's name, and whether it keeps
    // the item out when that feature is on.
    const FORMS: [(&str, &str, bool); 3] = [
        ("#[cfg(any(test, feature = \"", "\"))]", false),
        ("#[cfg(not(feature = \"", "\"))]", true),
        ("#[cfg(feature = \"", "\")]", false),
    ];
    FORMS.iter().any(|(pre, post, out_if_on)| {
        line.strip_prefix(pre)
            .and_then(|r| r.strip_suffix(post))
            .is_some_and(|f| features.contains(&f) == *out_if_on)
    })
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
fn list_file(module: &str, text: &str, features: &[&str], out: &mut Vec<String>) {
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
        // Built only for tests, the host fake, or another set of
        // features than this listing's.
        if cfg_excludes(line, features) {
            skip_next = true;
            continue;
        }
        // Other attributes (`#[derive]`, `#[doc]`) between a `cfg` and
        // its item leave the `cfg` in force.
        if line.starts_with("#[") && line.ends_with(']') {
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

/// The private modules a file declares (`mod x;`, `pub(crate) mod x;`),
/// and those this build of it leaves out, as full paths; those left out
/// also go to `gone` (their `impl` blocks add no method to any type).
fn private_modules(
    module: &str,
    text: &str,
    features: &[&str],
    out: &mut Vec<String>,
    gone: &mut Vec<String>,
) {
    let (mut built_out, mut public) = (Vec::new(), Vec::new());
    let mut excluded = false;
    for line in text.lines().map(str::trim) {
        if cfg_excludes(line, features) {
            excluded = true;
            continue;
        }
        let decl = line
            .strip_prefix("pub(crate) ")
            .or_else(|| line.strip_prefix("pub(super) "))
            .or_else(|| line.strip_prefix("pub "))
            .unwrap_or(line);
        if let Some(name) = decl.strip_prefix("mod ").and_then(|r| name_after(r, "")) {
            let path = format!("{module}::{name}");
            if excluded {
                built_out.push(path);
            } else if line.starts_with("pub mod") {
                public.push(path);
            } else {
                out.push(path);
            }
        }
        excluded = false;
    }
    // A module this build leaves out is as good as private, unless another
    // declaration of it (`#[cfg(feature = "x")] pub mod`) is built.
    for m in built_out {
        if !public.contains(&m) && !out.contains(&m) {
            out.push(m.clone());
            gone.push(m);
        }
    }
}

/// What one `use` tree (`a::{b::C, D as E}`) written in `module` brings in:
/// (full source path, name it gets in `module`).
fn use_pairs(module: &str, tree: &str, out: &mut Vec<(String, String)>) {
    fn walk(prefix: &str, tree: &str, module: &str, out: &mut Vec<(String, String)>) {
        let tree = tree.trim();
        if tree.is_empty() {
            return;
        }
        if let Some(open) = tree.find('{') {
            let head = tree[..open].trim_end_matches("::");
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let base = join(prefix, head);
            // Split on the commas of this level only.
            let (mut depth, mut start) = (0usize, 0usize);
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        walk(&base, &inner[start..i], module, out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            walk(&base, &inner[start..], module, out);
            return;
        }
        let (path, name) = match tree.split_once(" as ") {
            Some((p, n)) => (p.trim(), n.trim()),
            None => (tree, tree.rsplit("::").next().unwrap_or(tree)),
        };
        out.push((join(prefix, path), format!("{module}::{name}")));
    }
    fn join(prefix: &str, tail: &str) -> String {
        match (prefix.is_empty(), tail.is_empty()) {
            (_, true) => prefix.to_owned(),
            (true, false) => tail.to_owned(),
            (false, false) => format!("{prefix}::{tail}"),
        }
    }
    let mut raw = Vec::new();
    walk("", tree, module, &mut raw);
    let parent = module.rsplit_once("::").map_or("kho", |(p, _)| p);
    for (src, name) in raw {
        let full = if let Some(r) = src.strip_prefix("crate::") {
            format!("kho::{r}")
        } else if let Some(r) = src.strip_prefix("super::") {
            format!("{parent}::{r}")
        } else if let Some(r) = src.strip_prefix("self::") {
            format!("{module}::{r}")
        } else {
            format!("{module}::{src}")
        };
        out.push((full, name));
    }
}

/// Whether `path` goes through one of the `private` modules.
fn hidden(path: &str, private: &[String]) -> bool {
    private.iter().any(|m| {
        path == m
            || path
                .strip_prefix(m.as_str())
                .is_some_and(|r| r.starts_with("::"))
    })
}

/// `path` as a user names it: the longest prefix a `pub use` re-exports
/// replaced by its public name, again until nothing changes; `None` if it
/// still goes through a private module.
fn resolve(path: &str, aliases: &[(String, String)], private: &[String]) -> Option<String> {
    let mut p = path.to_owned();
    for _ in 0..8 {
        if !hidden(&p, private) {
            return Some(p);
        }
        let best = aliases
            .iter()
            .filter(|(src, _)| {
                p == *src
                    || p.strip_prefix(src.as_str())
                        .is_some_and(|r| r.starts_with("::"))
            })
            .max_by_key(|(src, _)| src.len())?;
        p = format!("{}{}", best.1, &p[best.0.len()..]);
    }
    None
}

/// Each source file of the crate under `root`: its module path and text.
fn read_sources(root: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(root.join("src")).unwrap();
            (module_of(rel), std::fs::read_to_string(f).unwrap())
        })
        .collect()
}

/// The surface of the crate whose `files` these are, built with
/// `features`, sorted.
fn surface(files: &[(String, String)], features: &[&str]) -> Vec<String> {
    let mut raw = Vec::new();
    let (mut private, mut gone) = (Vec::new(), Vec::new());
    for (module, text) in files {
        list_file(module, text, features, &mut raw);
        private_modules(module, text, features, &mut private, &mut gone);
    }
    // Every re-export, a private module's too: `kho::Outgoing` is
    // `update::outgoing::Outgoing` through `update`'s `pub use`.
    let mut aliases = Vec::new();
    for l in &raw {
        if let Some((module, tree)) = l.split_once(" use ") {
            use_pairs(module, tree, &mut aliases);
        }
    }
    let mut items: Vec<String> = raw
        .iter()
        .filter_map(|l| match l.split_once(" use ") {
            Some((module, _)) => (!hidden(module, &private)).then(|| l.clone()),
            None => {
                let (path, kind) = l.split_once(' ')?;
                // A field: the struct's path, then `.field`.
                let (owner, field) = match path.split_once('.') {
                    Some((o, f)) => (o, Some(f)),
                    None => (path, None),
                };
                let owner = resolve(owner, &aliases, &private)?;
                Some(match field {
                    Some(f) => format!("{owner}.{f} {kind}"),
                    None => format!("{owner} {kind}"),
                })
            }
        })
        .collect();
    // A method is public wherever its `impl` block is written: one in a
    // private module (`tracker::query`'s `impl Tracker`) belongs to the
    // public type of that name.
    let types: Vec<String> = items
        .iter()
        .filter_map(|i| {
            let (path, kind) = i.split_once(' ')?;
            matches!(kind, "struct" | "enum" | "trait" | "type").then(|| path.to_owned())
        })
        .collect();
    for l in &raw {
        let Some((path, kind)) = l.split_once(' ') else {
            continue;
        };
        if !matches!(kind, "fn" | "unsafe fn" | "const" | "type")
            || resolve(path, &aliases, &private).is_some()
            || hidden(path, &gone)
        {
            continue;
        }
        let Some((owner, name)) = path.rsplit_once("::") else {
            continue;
        };
        let ty = owner.rsplit("::").next().unwrap_or(owner);
        let mut found = types.iter().filter(|t| t.rsplit("::").next() == Some(ty));
        if let (Some(t), None) = (found.next(), found.next()) {
            items.push(format!("{t}::{name} {kind}"));
        }
    }
    items.sort();
    items.dedup();
    items
}

/// The crate's optional layers: a feature, and what it is for.
const TIERS: [(&str, &str); 2] = [
    (
        "arch",
        "the hand-over step, which an architecture layer does: its boot and kexec",
    ),
    (
        "tools",
        "codecs and tuning for inspectors, benchmarks and fuzz targets",
    ),
];

/// The listing of the crate under `root`: the default surface (what an
/// embedding kernel meets), then what each optional layer adds, marked
/// with its feature.
fn listing(root: &Path) -> String {
    let files = read_sources(root);
    let base = surface(&files, &[]);
    let count = |items: &[String], kind: &str| {
        items
            .iter()
            .filter(|l| l.split(' ').nth(1) == Some(kind))
            .count()
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# kho's public surface: {} items, {} functions, {} fields by default",
        base.len(),
        count(&base, "fn"),
        count(&base, "field")
    );
    let mut tiers = Vec::new();
    for (feature, what) in TIERS {
        let added: Vec<String> = surface(&files, &[feature])
            .into_iter()
            .filter(|i| !base.contains(i))
            .collect();
        let _ = writeln!(
            s,
            "# feature `{feature}` ({what}) adds {} items, {} functions",
            added.len(),
            count(&added, "fn")
        );
        tiers.extend(added.into_iter().map(|i| format!("{i} [{feature}]")));
    }
    let _ = writeln!(
        s,
        "# (tests/public_api.rs; KHO_BLESS=1 cargo test --test public_api rewrites it)"
    );
    for i in base.iter().chain(&tiers) {
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
#[cfg(feature = \"tools\")]
pub fn g() {}
#[cfg(feature = \"tools\")]
#[derive(Debug)]
pub struct H;
#[cfg(feature = \"tools\")]
pub mod t;
#[cfg(not(feature = \"tools\"))]
mod t;
#[cfg(test)]
mod tests {
    pub fn in_tests() {}
}
";
    let mut out = Vec::new();
    list_file("kho::m", text, &[], &mut out);
    out.sort();
    let (mut private, mut gone) = (Vec::new(), Vec::new());
    private_modules("kho::m", text, &[], &mut private, &mut gone);
    assert_eq!(private, ["kho::m::b", "kho::m::t", "kho::m::tests"]);
    // `t` is built (privately), `tests` is not.
    assert_eq!(gone, ["kho::m::tests"]);
    let mut aliases = Vec::new();
    use_pairs("kho", "m::{b::C, d::{E as F, G}}", &mut aliases);
    assert_eq!(
        aliases,
        [
            ("kho::m::b::C".to_owned(), "kho::C".to_owned()),
            ("kho::m::d::E".to_owned(), "kho::F".to_owned()),
            ("kho::m::d::G".to_owned(), "kho::G".to_owned()),
        ]
    );
    assert_eq!(
        resolve("kho::m::b::C::new", &aliases, &private).as_deref(),
        Some("kho::C::new")
    );
    assert_eq!(resolve("kho::m::b::H", &aliases, &private), None);
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
    // With the feature on, `g` and the module `t` are public.
    let (mut with, mut private, mut gone) = (Vec::new(), Vec::new(), Vec::new());
    list_file("kho::m", text, &["tools"], &mut with);
    private_modules("kho::m", text, &["tools"], &mut private, &mut gone);
    assert_eq!(private, ["kho::m::b", "kho::m::tests"]);
    let added: Vec<&String> = with.iter().filter(|i| !out.contains(i)).collect();
    assert_eq!(added, ["kho::m::g fn", "kho::m::H struct", "kho::m::t mod"]);
}
