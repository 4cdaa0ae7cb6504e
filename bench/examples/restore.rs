//! Restore of the mix workload's handover, for profiling the reader.
use kho::ranges::Range;
use kho::tracker::handover::{self, Reader};

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
    let root = handover::write(&t, &mut p).unwrap();
    let ram = [Range::new(0, 1 << 52)];
    let r = Reader::new(&p, root, &ram, &[]);
    let mut total = 0u64;
    for _ in 0..2000 {
        let mut c = kho::reserve::ReserveCount::default();
        r.restore(&mut c).unwrap();
        total += c.bytes;
    }
    println!("{total}");
}
