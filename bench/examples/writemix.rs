//! Handover write of the mix workload (blocks of order 0 to 4 scattered
//! over 8 GiB), for profiling the writer.
use kho::tracker::handover;

mod common;
use common::pages;

fn main() {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut t = kho::tracker::Tracker::new(&[]).unwrap();
    let mut used = std::collections::HashSet::new();
    while used.len() < 30_000 {
        let order = (next() % 5) as u32;
        let slot = next() % ((8u64 << 30) >> 16);
        if used.insert(slot) {
            t.preserve((32u64 << 30) + (slot << 16), order).unwrap();
        }
    }
    let mut p = pages();
    let rounds = 2000;
    let start = std::time::Instant::now();
    let mut total = 0;
    for _ in 0..rounds {
        let root = handover::write(&t, &mut p).unwrap();
        total += root.pages.get();
        let mut at = root.first_page.get();
        for _ in 0..root.pages.get() {
            let next = kho::platform::PhysMem::frame(&p, at)
                .map_or(0, |f| u64::from_le_bytes(f[8..16].try_into().unwrap()));
            kho::platform::FrameAlloc::free_frames(&mut p, at, 0);
            at = next;
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / rounds as f64 / 30_000.0;
    println!("{total} pages, {ns:.2} ns per block");
}
