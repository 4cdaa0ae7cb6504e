//! Handover write of 100k isolated pages, for profiling the writer.
use kho::tracker::chain;

mod common;
use common::pages;

fn main() {
    let t = common::isolated();
    let start = std::time::Instant::now();
    let mut total = 0;
    for _ in 0..100 {
        let mut p = pages();
        total += chain::write(&t, &mut p).unwrap().pages.get();
    }
    let ns = start.elapsed().as_nanos() as f64 / 100.0 / 100_000.0;
    println!("{total} pages, {ns:.2} ns per block");
}
