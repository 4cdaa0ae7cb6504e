//! Restore walk of 1 GiB preserved as 2 MiB folios (one chain page, one
//! record), for profiling the reader's fixed costs.
use kho::ranges::Range;
use kho::tracker::handover::{self, Reader};

mod common;
use common::pages;

fn main() {
    let mut t = kho::tracker::Tracker::new(&[]).unwrap();
    for i in 0..512u64 {
        t.preserve((1 << 32) + (i << 21), 9).unwrap();
    }
    let mut p = pages();
    let root = handover::write(&t, &mut p).unwrap();
    let ram = [Range::new(0, 1 << 52)];
    let r = Reader::new(&p, root, &ram, &[]);
    let rounds = 1_000_000;
    let start = std::time::Instant::now();
    let mut total = 0u64;
    for _ in 0..rounds {
        let mut c = kho::reserve::ReserveCount::default();
        r.restore(&mut c).unwrap();
        total += c.bytes;
    }
    let ns = start.elapsed().as_nanos() as f64 / rounds as f64;
    println!("{total} bytes, {ns:.1} ns per restore");
}
