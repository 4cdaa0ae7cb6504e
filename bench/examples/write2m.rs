//! Handover write of 1 GiB preserved as 2 MiB folios, for profiling the
//! writer's per-write costs.
use kho::tracker::chain;

mod common;
use common::pages;

fn main() {
    let mut t = kho::tracker::Tracker::new(&[]).unwrap();
    for i in 0..512u64 {
        t.preserve((1 << 32) + (i << 21), 9).unwrap();
    }
    let start = std::time::Instant::now();
    let mut total = 0;
    let rounds = 200_000;
    let mut p = pages();
    for _ in 0..rounds {
        let root = chain::write(&t, &mut p).unwrap();
        total += root.pages.get();
        chain::free(&mut p, &root);
    }
    let ns = start.elapsed().as_nanos() as f64 / rounds as f64;
    println!("{total} pages, {ns:.0} ns per write");
}
