//! Random preserves (isolated pages, and the mix), for profiling.
fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let blocks: Vec<(u64, u32)> = if which == "mix" {
        let mut used = std::collections::HashSet::new();
        let mut v = Vec::new();
        while v.len() < 30_000 {
            let order = (next() % 5) as u32;
            let slot = next() % ((8u64 << 30) >> 16);
            if used.insert(slot) {
                v.push(((32u64 << 30) + (slot << 16), order));
            }
        }
        v
    } else {
        let mut seen = std::collections::HashSet::new();
        let mut v = Vec::new();
        while v.len() < 100_000 {
            let pfn = next() % (1 << 28);
            if seen.insert(pfn) {
                v.push((pfn << 12, 0));
            }
        }
        v
    };
    let mut total = 0;
    for _ in 0..200 {
        let mut t = kho::tracker::Tracker::new(&[]).unwrap();
        for &(p, o) in &blocks {
            t.preserve(p, o).unwrap();
        }
        total += t.memory_bytes();
    }
    println!("{total}");
}
