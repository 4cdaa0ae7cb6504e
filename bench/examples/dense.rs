//! Dense preserve loop (order 0, as the benchmark's), for profiling the
//! tracker's fastest path. Prints ns per preserve.
fn main() {
    let mut total = 0;
    let base = std::hint::black_box(4u64 << 30);
    let t = std::time::Instant::now();
    for _ in 0..200 {
        let mut t = kho::tracker::Tracker::new(&[]).unwrap();
        for i in 0..(1u64 << 18) {
            t.preserve(base + (i << 12), 0).unwrap();
        }
        total += t.pages();
    }
    let ns = t.elapsed().as_nanos() as f64 / (200.0 * (1u64 << 18) as f64);
    println!("{total} pages, {ns:.3} ns per preserve");
}
