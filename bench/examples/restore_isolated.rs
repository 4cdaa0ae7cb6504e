//! Restore walk of 100k isolated 4 KiB pages over 1 TiB (the tracker
//! bench's isolated shape), for profiling the reader.
use kho::ranges::Range;
use kho::tracker::handover::{self, Reader};

mod common;
use common::pages;

fn main() {
    let t = common::isolated();
    let mut p = pages();
    let root = handover::write(&t, &mut p).unwrap();
    let ram = [Range::new(0, 1 << 52)];
    let r = Reader::new(&p, root, &ram, &[]);
    let rounds = 3000;
    let start = std::time::Instant::now();
    let mut total = 0u64;
    for _ in 0..rounds {
        let mut c = kho::reserve::ReserveCount::default();
        r.restore(&mut c).unwrap();
        total += c.bytes;
    }
    let ns = start.elapsed().as_nanos() as f64 / rounds as f64 / 100_000.0;
    println!("{total} bytes, {ns:.3} ns per block");
}
