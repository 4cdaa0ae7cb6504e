//! The live update's CPU work per phase for files of scattered 4 KiB
//! folios of several sizes, for profiling (`sweep MIB [shuffled]`).
use kho::memfd::{Memfd, v2};
use kho::platform::host::HostMem;
use kho::platform::{FrameAlloc, PhysMem};
use kho::ranges::Range;
use kho::tracker::Tracker;
use kho::tracker::handover::{self, Reader};
use std::time::Instant;

fn main() {
    const K: u64 = 4096;
    let ram = Range::new(0x10_0000, 0x10_0000_0000);
    let scratch = Range::new(0x10_0000, 0x410_0000);
    let mib: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(128);
    let mut mem = HostMem::new(&[ram], Range::new(0x1000_0000, 0x10_0000_0000));
    mem.avoid(scratch);
    let mut f = Memfd::new(true);
    let n = (mib << 20) / K;
    if std::env::args().nth(2).as_deref() == Some("shuffled") {
        // Folios in an odd stride: none joins another.
        for i in 0..n {
            f.write(&mut mem, ((i * 7919) % n) * K, &[1]).unwrap();
        }
    } else {
        for p in 0..n {
            f.write(&mut mem, p * K, &[1]).unwrap();
            std::hint::black_box(mem.alloc_frames(0));
        }
    }
    let folios = f.folio_count() as f64;
    for _ in 0..4 {
        let t0 = Instant::now();
        let mut t = Tracker::new(&[scratch]).unwrap();
        f.preserve(&mut t).unwrap();
        let t1 = Instant::now();
        let w = v2::write(&f, &mut mem, &mut t).unwrap();
        let t2 = Instant::now();
        let root = handover::write(&t, &mut mem).unwrap();
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
        let mut at = root.first_page.get();
        for _ in 0..root.pages.get() {
            let next = mem
                .frame(at)
                .map_or(0, |fr| u64::from_le_bytes(fr[8..16].try_into().unwrap()));
            mem.free_frames(at, 0);
            at = next;
        }
        if let Some(mut a) = w.array {
            a.unpreserve(&mut mem, &mut t).unwrap();
            a.free(&mut mem);
        }
        f.unpreserve(&mut t).unwrap();
    }
}
