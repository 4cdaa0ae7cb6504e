//! Profiling aid: restores a 1 GiB memfd of scattered 4 KiB folios (v2) in
//! a loop, for `perf record`.

use kho::memfd::{Memfd, v2};
use kho::testkit::HandOver;
use kho::tracker::Tracker;

mod common;
use common::{RAM as ram, SCRATCH as scratch};

fn main() {
    let mut mem = common::file_mem();
    let shape = std::env::args().nth(1).unwrap_or_default();
    let mut f = if shape == "2m" || shape == "run" {
        let mut f = Memfd::new(true);
        let chunk = vec![2u8; 2 << 20];
        for i in 0..512u64 {
            let at = if shape == "2m" { (i * 97) % 512 } else { i };
            f.write(&mut mem, at << 21, &chunk).unwrap();
        }
        f
    } else if shape == "random" {
        common::shuffled_file(
            &mut mem,
            std::env::var("MIB")
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(1024)
                << 20,
        )
    } else {
        common::strided_file(&mut mem, 1 << 30)
    };
    let mut t = Tracker::new(&[scratch]).unwrap();
    f.preserve(&mut t).unwrap();
    let w = v2::write(&f, &mut mem, &mut t).unwrap();
    let claims = mem.hand_over(&t).unwrap();
    let preserved: Vec<kho::ranges::Range> = claims.preserved().collect();
    let rounds: u32 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mut best = f64::MAX;
    let mut all = vec![];
    for _ in 0..rounds {
        let mut c = kho::claims::Claims::new(preserved.iter().copied(), &[scratch]).unwrap();
        let t = std::time::Instant::now();
        let g = v2::read(&w.desc, &mut mem, &[ram], &[scratch], &mut c).unwrap();
        let ns = t.elapsed().as_nanos() as f64;
        best = best.min(ns);
        all.push(ns);
        std::hint::black_box(g);
    }
    all.sort_by(f64::total_cmp);
    let n = f.folio_count() as f64;
    println!(
        "best {:.2} ns/folio, median {:.2}",
        best / n,
        all[all.len() / 2] / n
    );
}
