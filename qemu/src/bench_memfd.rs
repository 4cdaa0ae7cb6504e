//! `kho.bench=memfd-4k|memfd-2m`: the blackout of a live update of one
//! memfd (1 GiB, or `kho.bench_mib`; 4 KiB folios with a gap after every
//! 128, or 2 MiB folios), from the start of freeze in the first kernel to
//! the object retrieved in the next, phase by phase, against copying the same
//! data into one contiguous region and back, measured in the same run.
//! What `./x.py bench` measures.

use crate::handover::{fail, hand_over};
use alloc::vec::Vec;
use kho::PAGE_SIZE;
use kho::handoff::Handoff;
use kho::memfd::Memfd;
use kho::memfd::{MemfdHandler, V2};
use kho::ranges::Range;
use kho::{Freeze, Outgoing};
use kho_qemu_rt::exit::{ExitCode, exit_qemu};
use kho_timing::{Field, Record};
use kho_x86_64::glue::KernelMem;
use kho_x86_64::{BootInfo, frames, kprintln, tsc};

/// The file's size: `kho.bench_mib=N` MiB, 1 GiB by default (to show the
/// handoff work does not grow with the size, only with the records).
fn size(boot: &BootInfo) -> u64 {
    boot.params
        .cmdline_value("kho.bench_mib")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&m| m >= 2 && m % 2 == 0)
        .map_or(1 << 30, |m| m << 20)
}

/// The handler: `memfd-v2` only (v1 is for old kernels; it would add a
/// second record array to the work measured).
fn handler() -> MemfdHandler {
    MemfdHandler::new(&[V2], &[V2])
}

/// Runs the bench's first or second kernel.
pub fn run(boot: &'static BootInfo, what: &str) -> ! {
    let small = match what {
        "memfd-4k" => true,
        "memfd-2m" => false,
        other => fail(format_args!(
            "kho.bench={other}: expected memfd-4k or memfd-2m"
        )),
    };
    if boot.handoff.is_some() {
        next(boot, what);
    }
    let mut mem = crate::mem::kmem();
    let gib = size(boot);
    // The file: 4 KiB folios with a frame left out after every 128 (2048
    // physical runs, so 2048 records; a gap after every folio would make
    // 262144 preserved ranges, more than the x86_64 kernel's restore
    // keeps), or 2 MiB folios. `kho.bench_gap=N` leaves the frame out
    // after every N instead (a test's small file of many runs).
    let gap = boot
        .params
        .cmdline_value("kho.bench_gap")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&g| g >= 1)
        .unwrap_or(128);
    let mut f = Memfd::new(true);
    let mut gaps: Vec<u64> = Vec::new();
    let page = [0x5au8; PAGE_SIZE as usize];
    let chunk = alloc::vec![0xa5u8; 2 << 20];
    if small {
        for i in 0..gib / PAGE_SIZE {
            f.write(&mut *mem, i * PAGE_SIZE, &page)
                .unwrap_or_else(|e| fail(format_args!("{e}")));
            if i % gap == gap - 1 {
                gaps.push(
                    frames::alloc(1, PAGE_SIZE).unwrap_or_else(|| fail(format_args!("no frame"))),
                );
            }
        }
    } else {
        for i in 0..gib >> 21 {
            f.write(&mut *mem, i << 21, &chunk)
                .unwrap_or_else(|e| fail(format_args!("{e}")));
        }
    }
    for g in gaps {
        frames::free(g, 1).unwrap_or_else(|e| fail(format_args!("{e:?}")));
    }
    let (folios, extents, first) = (
        f.folio_count(),
        f.extents().len(),
        f.extents().first().map_or(0, |e| e.phys),
    );
    // The copy baseline: the file's bytes into one contiguous region and
    // back, through the same direct map.
    let buf = frames::alloc(gib / PAGE_SIZE, 2 << 20)
        .unwrap_or_else(|| fail(format_args!("no contiguous GiB for the copy baseline")));
    let t0 = tsc::now();
    let mut at = 0;
    for e in f.extents() {
        let n = e.pages() * PAGE_SIZE;
        if !mem.copy(e.phys, buf + at, n) {
            fail(format_args!("the copy baseline: frames not ours"));
        }
        at += n;
    }
    let t1 = tsc::now();
    let mut at = 0;
    for e in f.extents() {
        let n = e.pages() * PAGE_SIZE;
        if !mem.copy(buf + at, e.phys, n) {
            fail(format_args!("the copy baseline: frames not ours"));
        }
        at += n;
    }
    let t2 = tsc::now();
    frames::free(buf, gib / PAGE_SIZE).unwrap_or_else(|e| fail(format_args!("{e:?}")));

    let mut out: Outgoing<KernelMem> =
        Outgoing::new(boot.scratch).unwrap_or_else(|e| fail(format_args!("{e}")));
    let files = out
        .register(handler())
        .unwrap_or_else(|e| fail(format_args!("{e}")));
    out.create_session("bench")
        .unwrap_or_else(|e| fail(format_args!("{e}")));
    out.preserve(files, "bench", 1, f, &mut *mem)
        .unwrap_or_else(|e| fail(format_args!("{}", e.error)));
    let start = tsc::now();
    let frozen = out
        .freeze(&mut *mem, Freeze::AllowLoss)
        .unwrap_or_else(|e| fail(format_args!("{e}")));
    let frozen_tsc = tsc::now();
    // `hand_over` takes the memory token itself.
    drop(mem);
    kprintln!(
        "{}",
        Record::new(0)
            .bench(what)
            .with(Field::FreezeTicks, frozen_tsc - start)
            .with(Field::CopyOutTicks, t1 - t0)
            .with(Field::CopyBackTicks, t2 - t1)
            .with(Field::Folios, folios)
            .with(Field::Extents, extents as u64)
    );
    hand_over(
        boot,
        0,
        start,
        frozen,
        |w| {
            w.subsystem("bench", &["kho-bench-v2"], None, |w| {
                w.property_u64("folios", folios)?;
                w.property_u64("first", first)
            })
        },
        || true,
    )
}

/// The second kernel: retrieve, check, print the phases.
fn next(boot: &'static BootInfo, what: &str) -> ! {
    let Some(info) = boot.handoff else {
        fail(format_args!("no handoff"))
    };
    let t0 = tsc::now();
    let mut mem = crate::mem::kmem();
    let mut inc = match boot.incoming(&mem) {
        Some(Ok(inc)) => inc,
        Some(Err(e)) => fail(format_args!("{e}")),
        None => fail(format_args!("no handoff")),
    };
    let files = inc
        .register(handler())
        .unwrap_or_else(|e| fail(format_args!("{e}")));
    let mut inc = inc.restore(&mut *mem);
    let (f, _) = inc
        .take(&files.key("bench", 1), &mut *mem)
        .unwrap_or_else(|e| fail(format_args!("{e}")));
    let t1 = tsc::now();
    let blob = info
        .blob_bytes()
        .unwrap_or_else(|| fail(format_args!("the blob is not a module")));
    let ram: Vec<Range> = boot.params.ram().collect();
    let h = Handoff::parse(blob, &ram).unwrap_or_else(|e| fail(format_args!("{e}")));
    let node = h.subsystem("bench").map(|s| s.node);
    let want = |k: &str| {
        node.and_then(|n| n.property(k))
            .and_then(|p| p.as_u64().ok())
    };
    let first = f.extents().first().map_or(0, |e| e.phys);
    if want("folios") != Some(f.folio_count())
        || want("first") != Some(first)
        || f.size() != size(boot)
    {
        fail(format_args!("the file came back different"));
    }
    kprintln!(
        "{}",
        crate::handover::hop_record(what, &info.stamps, boot.entry_tsc)
            .with(
                Field::BootTicks,
                info.restore_tsc.saturating_sub(boot.entry_tsc)
            )
            .with(
                Field::ReserveTicks,
                info.reserved_tsc.saturating_sub(info.restore_tsc)
            )
            .with(Field::RetrieveTicks, t1 - t0)
            .with(Field::Hz, tsc::hz())
    );
    kprintln!(
        "kho hop 1: verified the {} MiB memfd ({} folios, {} extents), first folio still at {first:#x} (bench)",
        f.size() >> 20,
        f.folio_count(),
        f.extents().len()
    );
    kprintln!("kho bench: done");
    exit_qemu(ExitCode::Success)
}
