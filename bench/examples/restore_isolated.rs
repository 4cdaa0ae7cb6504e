//! Restore walk of 100k isolated 4 KiB pages over 1 TiB (the tracker
//! bench's isolated shape), for profiling the reader.

mod common;

fn main() {
    let (total, ns) = common::restore_ns(&common::isolated(), 3000);
    println!("{total} bytes, {:.3} ns per block", ns / 100_000.0);
}
