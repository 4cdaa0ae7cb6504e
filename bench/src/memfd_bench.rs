//! memfd: preserve and restore cost per folio, metadata handed over and
//! memory allocated at preserve time, for 1 GiB files of four shapes,
//! against a model of Linux's scheme and against copying the data.

use crate::Figure;
use kho::memfd::{Memfd, v2};
use kho::platform::host::HostMem;
use kho::ranges::Range;
use kho::tracker::Tracker;
use std::hint::black_box;
use std::time::Instant;

const K: u64 = 4096;
const GIB: u64 = 1 << 30;
const RAM: Range = Range::new(0x10_0000, 0x10_0000_0000);
const SCRATCH: Range = Range::new(0x10_0000, 0x410_0000);
const POOL: Range = Range::new(0x1000_0000, 0x10_0000_0000);

/// A small deterministic shuffle (xorshift), so folios land out of order.
fn shuffled(n: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..v.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}

/// A 1 GiB file of one shape.
fn make(shape: &str, mem: &mut HostMem) -> Memfd {
    let mut f = Memfd::new(true);
    f.truncate(mem, GIB).unwrap();
    match shape {
        // One byte per page, pages in shuffled order: 4 KiB folios, no two
        // contiguous in both file and memory.
        "4 KiB folios" => {
            for p in shuffled(GIB / K) {
                f.write(mem, p * K, &[1]).unwrap();
            }
        }
        "2 MiB folios" => {
            let chunk = vec![2u8; 2 << 20];
            for p in shuffled(512) {
                f.write(mem, p << 21, &chunk).unwrap();
            }
        }
        "one physical run" => {
            let chunk = vec![3u8; 2 << 20];
            for p in 0..512u64 {
                f.write(mem, p << 21, &chunk).unwrap();
            }
        }
        // 1% of the pages written, scattered.
        _ => {
            for p in shuffled(GIB / K).into_iter().take((GIB / K / 100) as usize) {
                f.write(mem, p * K, &[4]).unwrap();
            }
        }
    }
    f
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Linux's scheme, modelled: holes filled with zeroed 4 KiB folios, one
/// 16-byte record per folio in a linear array; restore walks the records.
/// (Its per-folio page-cache insertion is modelled as a push, which flatters
/// the model.)
struct LinuxModel {
    preserve_ns: f64,
    restore_ns: f64,
    folios: u64,
    metadata: u64,
    allocated: u64,
}

fn linux_model(f: &Memfd) -> LinuxModel {
    let pages = f.size().div_ceil(K);
    let have: u64 = f.folio_count();
    let holes = pages - f.allocated_bytes() / K;
    let folios = have + holes;
    let mut pre = vec![];
    let mut rest = vec![];
    for _ in 0..3 {
        let t = Instant::now();
        // Fill the holes: allocate and zero a page each.
        let mut filled: Vec<Box<[u8; 4096]>> = Vec::with_capacity(holes as usize);
        for _ in 0..holes {
            filled.push(Box::new([0u8; 4096]));
        }
        let mut tr = Tracker::new(&[SCRATCH]).unwrap();
        let mut recs: Vec<[u64; 2]> = Vec::with_capacity(folios as usize);
        for x in f.folios() {
            tr.preserve(x.phys, x.order).unwrap();
            recs.push([x.phys >> 12 | 3 << 52, x.index]);
        }
        for (i, _) in filled.iter().enumerate() {
            let phys = 0x20_0000_0000 + i as u64 * K;
            tr.preserve(phys, 0).unwrap();
            recs.push([phys >> 12 | 3 << 52, i as u64]);
        }
        pre.push(t.elapsed().as_nanos() as f64);
        let t = Instant::now();
        let mut cache: Vec<(u64, u64)> = Vec::with_capacity(recs.len());
        for r in &recs {
            let phys = (r[0] & ((1 << 52) - 1)) << 12;
            assert!(r[0] >> 52 & !3 == 0);
            cache.push((r[1], phys));
        }
        black_box(&cache);
        rest.push(t.elapsed().as_nanos() as f64);
        black_box(filled);
    }
    LinuxModel {
        preserve_ns: median(pre),
        restore_ns: median(rest),
        folios,
        metadata: folios * 16 + 40,
        allocated: holes * K + (folios * 16).div_ceil(K) * K,
    }
}

/// Copying the file into one contiguous preserved buffer and back.
fn copy_ns(size: u64) -> (f64, f64) {
    let src = vec![7u8; size as usize];
    let mut buf = vec![0u8; size as usize];
    let mut back = vec![0u8; size as usize];
    let mut out = vec![];
    let mut inn = vec![];
    for _ in 0..3 {
        let t = Instant::now();
        buf.copy_from_slice(black_box(&src));
        out.push(t.elapsed().as_nanos() as f64);
        let t = Instant::now();
        back.copy_from_slice(black_box(&buf));
        inn.push(t.elapsed().as_nanos() as f64);
    }
    black_box((&buf, &back));
    (median(out), median(inn))
}

pub fn run() -> Vec<Figure> {
    let mut figs = vec![];
    let (copy_out, copy_in) = copy_ns(GIB);
    for shape in [
        "4 KiB folios",
        "2 MiB folios",
        "one physical run",
        "sparse 1%",
    ] {
        let mut mem = HostMem::new(&[RAM], POOL);
        mem.avoid(SCRATCH);
        let mut f = make(shape, &mut mem);
        let folios = f.folio_count() as f64;
        // Preserve: folios into the tracker, then the v2 records.
        let mut pre = vec![];
        let mut written = None;
        let mut allocated = 0;
        for _ in 0..5 {
            let mut t = Tracker::new(&[SCRATCH]).unwrap();
            let before = mem.allocated;
            let start = Instant::now();
            f.preserve(&mut t).unwrap();
            let w = v2::write(&f, &mut mem, &mut t).unwrap();
            pre.push(start.elapsed().as_nanos() as f64);
            allocated = (mem.allocated - before) * K;
            if let Some(mut a) = w.array {
                a.unpreserve(&mut mem, &mut t).unwrap();
                a.free(&mut mem);
            }
            f.unpreserve(&mut t).unwrap();
            written = Some(w.desc);
        }
        let _ = written;
        let mut t = Tracker::new(&[SCRATCH]).unwrap();
        f.preserve(&mut t).unwrap();
        let w = v2::write(&f, &mut mem, &mut t).unwrap();
        let metadata = w.desc.len() as u64
            + w.array
                .as_ref()
                .map_or(0, |a| (a.blocks().len() + a.chain_pages().len()) as u64 * K);
        let claims = mem.hand_over(&t).unwrap();
        let preserved: Vec<kho::ranges::Range> = claims.preserved().collect();
        let mut rest = vec![];
        for _ in 0..7 {
            // Fresh claims each run (claims are not cloneable: finish
            // consumes them), made outside the timed part.
            let mut c = kho::claims::Claims::new(preserved.iter().copied(), &[SCRATCH]).unwrap();
            let start = Instant::now();
            let g = v2::read(&w.desc, &mut mem, &[RAM], &[SCRATCH], &mut c).unwrap();
            rest.push(start.elapsed().as_nanos() as f64);
            assert_eq!(g.extents(), f.extents());
            black_box(g);
        }
        let (pre, rest) = (median(pre), median(rest));
        let lm = linux_model(&f);
        let per = |ns: f64, n: f64| ns / n;
        let name = |what: &str| format!("memfd 1 GiB, {shape}: {what}");
        figs.push(Figure {
            name: name("preserve ns/folio"),
            value: per(pre, folios),
            unit: "ns",
            baseline: "linux model, same file".into(),
            baseline_value: per(lm.preserve_ns, folios),
            better_is: "lower",
        });
        figs.push(Figure {
            name: name("restore ns/folio"),
            value: per(rest, folios),
            unit: "ns",
            baseline: "linux model, same file".into(),
            baseline_value: per(lm.restore_ns, folios),
            better_is: "lower",
        });
        figs.push(Figure {
            name: name("preserve + restore, whole file"),
            value: (pre + rest) / 1e6,
            unit: "ms",
            baseline: "copy out and back".into(),
            baseline_value: (copy_out + copy_in) / 1e6,
            better_is: "lower",
        });
        figs.push(Figure {
            name: name("metadata handed over"),
            value: metadata as f64,
            unit: "B",
            baseline: format!("linux model ({} folios)", lm.folios),
            baseline_value: lm.metadata as f64,
            better_is: "lower",
        });
        figs.push(Figure {
            name: name("allocated at preserve"),
            value: allocated as f64,
            unit: "B",
            baseline: "linux model".into(),
            baseline_value: lm.allocated as f64,
            better_is: "lower",
        });
        figs.push(Figure {
            name: name("allocated at preserve vs copy"),
            value: allocated as f64,
            unit: "B",
            baseline: "copy buffer".into(),
            baseline_value: f.size() as f64,
            better_is: "lower",
        });
        eprintln!(
            "memfd {shape}: {} folios, {} extents, preserve {:.1} ms, restore {:.2} ms, metadata {metadata} B",
            folios,
            f.extents().len(),
            pre / 1e6,
            rest / 1e6
        );
    }
    figs
}
