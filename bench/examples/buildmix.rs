//! Builds the mix workload's tracker (blocks of order 0 to 4 scattered
//! over 8 GiB) again and again, for profiling preserve.
mod common;

fn main() {
    let rounds = 400;
    let start = std::time::Instant::now();
    let mut total = 0;
    for _ in 0..rounds {
        let t = common::mix();
        total += t.pages();
    }
    let ns = start.elapsed().as_nanos() as f64 / rounds as f64 / 30_000.0;
    println!("{total} pages, {ns:.2} ns per block (with the workload's own hashing)");
}
