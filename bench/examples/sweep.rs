//! The live update's CPU work per phase for files of scattered 4 KiB
//! folios of several sizes, for profiling (`sweep MIB [shuffled]`).
use kho::memfd::{Memfd, v2};
use kho::platform::FrameAlloc;
use kho::tracker::Tracker;
use kho::tracker::chain::{self, Reader};
use std::time::Instant;

mod common;
use common::{RAM as ram, SCRATCH as scratch};

fn main() {
    const K: u64 = 4096;
    let mib: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(128);
    let mut mem = common::file_mem();
    let mut f = if std::env::args().nth(2).as_deref() == Some("shuffled") {
        common::strided_file(&mut mem, mib << 20)
    } else {
        // In file order, a spare frame between each two.
        let mut f = Memfd::new(true);
        for p in 0..(mib << 20) / K {
            f.write(&mut mem, p * K, &[1]).unwrap();
            std::hint::black_box(mem.alloc_frames(0));
        }
        f
    };
    let folios = f.folio_count() as f64;
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    for _ in 0..rounds {
        let t0 = Instant::now();
        let mut t = Tracker::new(&[scratch]).unwrap();
        f.preserve(&mut t).unwrap();
        let t1 = Instant::now();
        let w = v2::write(&f, &mut mem, &mut t).unwrap();
        let t2 = Instant::now();
        let root = chain::write(&t, &mut mem).unwrap();
        let t3 = Instant::now();
        let mut log = kho::reserve::ReserveLog::new();
        Reader::new(&mem, root, &[ram], &[scratch])
            .restore(&mut log)
            .unwrap();
        let mut claims =
            kho::claims::Claims::new(log.of(kho::reserve::Kept::Preserved), &[scratch]).unwrap();
        let t4 = Instant::now();
        let g = v2::read(&w.desc, &mut mem, &[ram], &[scratch], &mut claims).unwrap();
        let t5 = Instant::now();
        std::hint::black_box(g);
        let per = |a: Instant, b: Instant| (b - a).as_nanos() as f64 / folios;
        println!(
            "{mib} MiB: preserve {:.1} write {:.1} chain {:.1} restore+claims {:.1} read {:.1} total {:.1} ns/folio ({} chain pages)",
            per(t0, t1),
            per(t1, t2),
            per(t2, t3),
            per(t3, t4),
            per(t4, t5),
            per(t0, t5),
            root.pages.get()
        );
        chain::free(&mut mem, &root);
        if let Some(mut a) = w.array {
            a.unpreserve(&mut mem, &mut t).unwrap();
            a.free(&mut mem);
        }
        f.unpreserve(&mut t).unwrap();
    }
}
