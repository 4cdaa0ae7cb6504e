//! Builds the isolated workload's tracker (100k scattered 4 KiB pages over
//! 1 TiB) again and again, for profiling preserve.
mod common;

fn main() {
    let rounds = 300u32;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(common::isolated());
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(rounds) / 100_000.0;
    println!("{ns:.2} ns per block (with the workload's own generation)");
}
