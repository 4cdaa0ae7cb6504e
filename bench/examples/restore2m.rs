//! Restore walk of 1 GiB preserved as 2 MiB folios (one chain page, one
//! record), for profiling the reader's fixed costs.

mod common;

fn main() {
    let mut t = kho::tracker::Tracker::new(&[]).unwrap();
    for i in 0..512u64 {
        t.preserve((1 << 32) + (i << 21), 9).unwrap();
    }
    let (total, ns) = common::restore_ns(&t, 1_000_000);
    println!("{total} bytes, {ns:.1} ns per restore");
}
