//! Restore walk of a tracker handed over in place (`kho-tracker-v4`), the
//! tracker bench's isolated or mix shape (`restore_inplace mix`), for
//! profiling its reader.

mod common;

use kho::ranges::Range;

fn main() {
    let mix = std::env::args().nth(1).as_deref() == Some("mix");
    let (mut t, blocks) = if mix {
        (common::mix(), 30_000.0)
    } else {
        (common::isolated(), 100_000.0)
    };
    let mut p = common::pages();
    p.lend_frames();
    let root = t.in_place(&mut p).unwrap();
    t.hand_back(&mut p);
    let ram = [Range::new(0, 1 << 52)];
    let rounds = 2000;
    let start = std::time::Instant::now();
    let mut total = 0u64;
    for _ in 0..rounds {
        let mut c = kho::reserve::ReserveCount::default();
        kho::tracker::inplace::restore(&p, &root, &ram, &[], &mut c).unwrap();
        total += c.bytes;
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(rounds);
    println!("{total} bytes, {:.3} ns per block", ns / blocks);
}
