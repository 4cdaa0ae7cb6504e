//! Fuzz the FDT writer and reader together: any tree the writer accepts
//! reads back identically; a tree it refuses gets a typed error.
#![no_main]

use arbitrary::Arbitrary;
use kho::fdt::{Fdt, FdtWriter, Node};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug, Clone, PartialEq)]
struct Tree {
    name: String,
    props: Vec<(String, Vec<u8>)>,
    children: Vec<Tree>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    buf_len: u16,
    hints: bool,
    reservations: Vec<(u64, u64)>,
    root: Tree,
}

fn write(w: &mut FdtWriter<'_>, t: &Tree, root: bool) -> Result<(), kho::fdt::WriteError> {
    w.begin_node(if root { "" } else { &t.name })?;
    for (n, v) in &t.props {
        w.property(n, v)?;
    }
    for c in &t.children {
        write(w, c, false)?;
    }
    w.end_node()
}

fn read(n: Node<'_>) -> Tree {
    Tree {
        name: n.name().to_owned(),
        props: n
            .properties()
            .map(|p| (p.name.to_owned(), p.value.to_vec()))
            .collect(),
        children: n.children().map(read).collect(),
    }
}

fn strip(t: &mut Tree) {
    t.props.retain(|(n, _)| n != kho::fdt::SKIP_HINT);
    t.children.iter_mut().for_each(strip);
}

/// Whether a lookup of `want` may return the child called `name` (the
/// reader's rule: exact, or `want` plus a unit address).
fn matches(name: &str, want: &str) -> bool {
    name == want
        || (!want.contains('@') && name.strip_prefix(want).is_some_and(|r| r.starts_with('@')))
}

/// Checks every node reachable by an unambiguous path: lookup returns the
/// first match, so only components that match exactly one sibling are
/// followed (`a` may match `a@1` and `a@2`; exact names are unique).
fn check_paths(f: &Fdt<'_>, t: &Tree, path: String) {
    for c in &t.children {
        if t.children
            .iter()
            .filter(|x| matches(&x.name, &c.name))
            .count()
            != 1
        {
            continue;
        }
        let p = format!("{path}/{}", c.name);
        let n = f
            .find_node(&p)
            .expect("a written node is not found by path");
        assert_eq!(n.name(), c.name);
        check_paths(f, c, p);
    }
}

fn unique(t: &Tree) -> bool {
    let props: std::collections::HashSet<_> = t.props.iter().map(|(n, _)| n).collect();
    let kids: std::collections::HashSet<_> = t.children.iter().map(|c| &c.name).collect();
    props.len() == t.props.len() && kids.len() == t.children.len() && t.children.iter().all(unique)
}

fuzz_target!(|input: Input| {
    let mut buf = vec![0u8; usize::from(input.buf_len)];
    let made = if input.hints {
        FdtWriter::with_skip_hints(&mut buf)
    } else {
        FdtWriter::new(&mut buf)
    };
    let Ok(mut w) = made else { return };
    for &(a, s) in &input.reservations {
        if w.reserve_memory(a, s).is_err() {
            return;
        }
    }
    if write(&mut w, &input.root, true).is_err() {
        return;
    }
    let Ok(n) = w.finish() else { return };
    // The writer accepted it: then no node has two properties or two
    // children of the same name (it refuses those), and every
    // reservation's end fits in 64 bits.
    assert!(unique(&input.root), "the writer accepted a repeated name");
    assert!(
        input
            .reservations
            .iter()
            .all(|&(a, s)| a.checked_add(s).is_some())
    );
    let f = Fdt::new(&buf[..n]).expect("the writer produced a blob the reader refuses");
    let mut want = input.root.clone();
    want.name = String::new();
    let mut got = read(f.root());
    if input.hints {
        strip(&mut got);
    }
    assert_eq!(got, want);
    // Every node is found again by path, with or without hints.
    check_paths(&f, &want, String::new());
    let rsv: Vec<_> = f.reservations().map(|r| (r.address, r.size)).collect();
    assert_eq!(rsv, input.reservations);
});
