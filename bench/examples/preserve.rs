//! Preserve (tracker and memfd-v2 records) of a 1 GiB memfd of shuffled
//! 4 KiB folios, in a loop, for profiling.
use kho::memfd::v2;
use kho::tracker::Tracker;

mod common;
use common::SCRATCH as scratch;

fn main() {
    let mut mem = common::file_mem();
    let mut f = common::strided_file(&mut mem, 1 << 30);
    let n = f.folio_count();
    let rounds: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let (mut best_p, mut best_w) = (f64::MAX, f64::MAX);
    for _ in 0..rounds {
        let mut t = Tracker::new(&[scratch]).unwrap();
        let a = std::time::Instant::now();
        f.preserve(&mut t).unwrap();
        let b = std::time::Instant::now();
        let w = v2::write(&f, &mut mem, &mut t).unwrap();
        let c = std::time::Instant::now();
        best_p = best_p.min((b - a).as_nanos() as f64);
        best_w = best_w.min((c - b).as_nanos() as f64);
        if let Some(mut arr) = w.array {
            arr.unpreserve(&mut mem, &mut t).unwrap();
            arr.free(&mut mem);
        }
        f.unpreserve(&mut t).unwrap();
    }
    println!(
        "best: preserve {:.2} ns/folio, write {:.2} ns/folio",
        best_p / n as f64,
        best_w / n as f64
    );
}
