//! Dense preserve loop, for profiling the tracker's fast path.
fn main() {
    let mut total = 0;
    for _ in 0..50 {
        let mut t = kho::tracker::Tracker::new(&[]).unwrap();
        for i in 0..(1u64 << 18) {
            let order = std::hint::black_box(0u32);
            t.preserve((4 << 30) + (i << (12 + order)), order).unwrap();
        }
        total += t.pages();
    }
    println!("{total}");
}
