//! Restore of the mix workload's handover, for profiling the reader.
use kho::ranges::Range;
use kho::tracker::chain::{self, Reader};

mod common;
use common::pages;

fn main() {
    let t = common::mix();
    let mut p = pages();
    let root = chain::write(&t, &mut p).unwrap();
    let ram = [Range::new(0, 1 << 52)];
    let r = Reader::new(&p, root, &ram, &[]);
    let mut total = 0u64;
    for _ in 0..2000 {
        let mut c = kho::reserve::ReserveCount::default();
        r.restore(&mut c).unwrap();
        total += c.bytes;
    }
    println!("{total}");
}
