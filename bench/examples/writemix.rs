//! Handover write of the mix workload (blocks of order 0 to 4 scattered
//! over 8 GiB), for profiling the writer.
use kho::tracker::chain;

mod common;
use common::pages;

fn main() {
    let t = common::mix();
    let mut p = pages();
    let rounds = 2000;
    let start = std::time::Instant::now();
    let mut total = 0;
    for _ in 0..rounds {
        let root = chain::write(&t, &mut p).unwrap();
        total += root.pages.get();
        chain::free(&mut p, &root);
    }
    let ns = start.elapsed().as_nanos() as f64 / rounds as f64 / 30_000.0;
    println!("{total} pages, {ns:.2} ns per block");
}
