//! Fuzz the FDT reader: arbitrary bytes must give an error or a tree that
//! can be walked completely, never a panic, hang or out-of-bounds read.
#![no_main]

use kho::fdt::{Fdt, Node};
use libfuzzer_sys::fuzz_target;

fn walk(n: Node<'_>, budget: &mut u32) {
    for p in n.properties() {
        let _ = (p.as_u32(), p.as_u64(), p.as_str());
        if let Ok(l) = p.as_str_list() {
            let _ = l.count();
        }
        let _ = n.property(p.name);
    }
    for c in n.children() {
        *budget = budget.saturating_sub(1);
        if *budget == 0 {
            return;
        }
        let _ = n.child(c.name());
        walk(c, budget);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = Fdt::new(data) {
        let _ = f.reservations().count();
        walk(f.root(), &mut 100_000);
        let _ = f.find_node("/a/b@1/c");
    }
});
