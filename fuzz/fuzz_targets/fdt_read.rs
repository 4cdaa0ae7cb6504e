//! Fuzz the FDT reader: arbitrary bytes must give an error or a tree that
//! can be walked completely, never a panic, hang or out-of-bounds read. And
//! what it accepts must be unambiguous: in every node, property names and
//! child names are unique (so every lookup finds the one value a walk
//! sees), and every reservation's end fits in 64 bits.
#![no_main]

use kho::fdt::{Fdt, Node};
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;

fn walk(n: Node<'_>, budget: &mut u32) {
    let mut names = HashSet::new();
    for p in n.properties() {
        let _ = (p.as_u32(), p.as_u64(), p.as_str());
        if let Ok(l) = p.as_str_list() {
            let _ = l.count();
        }
        assert!(
            names.insert(p.name),
            "property {} twice in one node",
            p.name
        );
        assert_eq!(
            n.property(p.name),
            Some(p),
            "lookup disagrees with the walk"
        );
    }
    let mut kids = HashSet::new();
    for c in n.children() {
        *budget = budget.saturating_sub(1);
        if *budget == 0 {
            return;
        }
        assert!(
            kids.insert(c.name()),
            "child {} twice in one node",
            c.name()
        );
        // An exact name (with its unit address) finds this very child.
        if c.name().contains('@') {
            let found = n.child(c.name()).expect("a child is not found by its name");
            assert_eq!(found.name(), c.name());
            assert!(found.properties().eq(c.properties()));
        }
        walk(c, budget);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = Fdt::new(data) {
        for r in f.reservations() {
            assert!(r.size != 0 && r.address.checked_add(r.size).is_some());
        }
        walk(f.root(), &mut 100_000);
        let _ = f.find_node("/a/b@1/c");
    }
});
