//! Handover write of 100k isolated pages, for profiling the writer.
use kho::tracker::handover;

mod common;
use common::pages;

fn main() {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut t = kho::tracker::Tracker::new(&[]).unwrap();
    let mut n = 0;
    while n < 100_000 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        if t.preserve((s % (1 << 28)) << 12, 0).is_ok() {
            n += 1;
        }
    }
    let start = std::time::Instant::now();
    let mut total = 0;
    for _ in 0..100 {
        let mut p = pages();
        total += handover::write(&t, &mut p).unwrap().pages.get();
    }
    let ns = start.elapsed().as_nanos() as f64 / 100.0 / 100_000.0;
    println!("{total} pages, {ns:.2} ns per block");
}
