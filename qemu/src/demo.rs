//! The demo that `./x.py run` boots: a live update by a real kexec.
//!
//! Hop 0 (a cold boot) fills blocks of several orders with data, preserves
//! them, writes the handoff and kexecs into the image it was given as a
//! module. Each later hop restores the handoff at boot, checks every block
//! by checksum, overwrites all memory the previous kernel did not preserve
//! with poison and checks again, prints the blackout breakdown, then
//! changes the data and hands it on, until `kho.hops` kexecs are done.
//!
//! It also carries four memfds (`files`, none with `kho.files=0`): one of `kho.big=MiB` (default
//! 256) filled with a pattern, a sparse one, a sealed one and one of 2 MiB
//! folios, restored in place at each hop and checked by checksum and
//! physical address.
//!
//! Command line: `kho.hops=N` (default 2), `kho.corrupt=blob|chain|scratch`
//! (hand over a damaged blob or tracker chain, or a scratch list too small
//! to boot in: the next kernel must refuse it and boot cold),
//! `kho.scatter=N` (also preserve N single pages, none next to another: a
//! handoff of at least N separate ranges), and everything after ` -- ` is
//! the next kernel's own command line when it is not one of ours
//! (`./x.py kexec`).

use alloc::vec::Vec;
use kho::PAGE_SIZE;
use kho::handoff::{HANDOFF_MODULE, Handoff, HandoffWriter, IMAGE_MODULE, Stamps};
use kho::platform::PhysMem;
use kho::ranges::Range;
use kho::reserve::ReserveLog;
use kho::tracker::Tracker;
use kho::tracker::handover::{self, Reader};
use kho_qemu_rt::exit::{ExitCode, exit_qemu};
use kho_x86_64::kexec::{self, NextModule};
use kho_x86_64::{BootInfo, frames, kprintln, paging, tsc};
use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The demo's subsystem node and its format.
const NAME: &str = "demo";
pub(crate) const DEMO_V1: &str = "kho-demo-v1";
/// Orders of the blocks the demo preserves (4 KiB to 2 MiB).
const ORDERS: [u32; 6] = [0, 0, 3, 9, 4, 0];

/// One preserved block, as `kho-demo-v1` records it (24 bytes, LE).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct BlockRecord {
    phys: U64,
    order: U32,
    /// Generation of the data: bumped by every hop.
    generation: U32,
    /// Checksum of the block's bytes.
    sum: U64,
}

pub(crate) fn fail(what: core::fmt::Arguments<'_>) -> ! {
    kprintln!("kho demo: FAILED: {what}");
    exit_qemu(ExitCode::Failure)
}

/// The block's bytes through the direct map.
fn bytes(phys: u64, order: u32) -> &'static mut [u64] {
    let words = (PAGE_SIZE << order) as usize / 8;
    // SAFETY: the block is RAM this kernel owns (allocated here, or
    // preserved and reserved at boot), mapped by the direct map, aligned.
    unsafe { core::slice::from_raw_parts_mut(paging::phys_to_virt(phys) as *mut u64, words) }
}

fn fill(phys: u64, order: u32, generation: u32) {
    let seed = phys ^ (u64::from(generation) << 48);
    for (i, w) in bytes(phys, order).iter_mut().enumerate() {
        *w = seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

fn checksum(phys: u64, order: u32) -> u64 {
    bytes(phys, order)
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &w| {
            (h ^ w).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

fn us(ticks: u64) -> u64 {
    tsc::micros(ticks)
}

/// Writes `bytes` to the log as `kho-blob HOP HEX` lines, which the runner
/// saves as `target/kho/handoff-HOP.dtb`. Not a blob over 64 KiB (one with
/// `kho.scatter` records): its hex would take most of a second of serial
/// output between the handoff and the jump.
fn dump_blob(hop: u32, blob: &[u8]) {
    if blob.len() > 64 * 1024 {
        kprintln!(
            "kho hop {hop}: handoff blob of {} bytes not dumped (over 64 KiB)",
            blob.len()
        );
        return;
    }
    for chunk in blob.chunks(64) {
        let mut line = heapless::String::<160>::new();
        for b in chunk {
            let _ = core::fmt::write(&mut line, format_args!("{b:02x}"));
        }
        kprintln!("kho-blob {hop} {line}");
    }
}

/// The records of the demo subsystem in the restored handoff, each checked.
fn verify(boot: &BootInfo, hop: u32) -> Vec<BlockRecord> {
    let Some(info) = boot.handoff else {
        fail(format_args!("no handoff"))
    };
    let len = info.blob.len() as usize;
    // SAFETY: the blob was reserved at boot and nothing writes it.
    let blob = unsafe {
        core::slice::from_raw_parts(paging::phys_to_virt(info.blob.start) as *const u8, len)
    };
    let ram: Vec<Range> = boot.params.ram().collect();
    let h = Handoff::parse(blob, &ram).unwrap_or_else(|e| fail(format_args!("{e}")));
    let Some(sub) = h.subsystem(NAME) else {
        fail(format_args!("the handoff has no {NAME} subsystem"))
    };
    if sub.pick(&[DEMO_V1]).is_none() {
        fail(format_args!(
            "{NAME}: no version this kernel reads ({DEMO_V1}) among {:?}",
            sub.compatible().collect::<Vec<_>>()
        ));
    }
    let recs: &[BlockRecord] = sub
        .node
        .property("kho,blocks")
        .and_then(|p| p.as_slice_of().ok())
        .unwrap_or_else(|| fail(format_args!("{NAME}: no kho,blocks")));
    let preserved: Vec<Range> = kho_x86_64::start::with_reserved(|r| r.preserved_ranges().to_vec());
    let mut total = 0;
    for r in recs {
        let (phys, order) = (r.phys.get(), r.order.get());
        let range = Range::new(phys, phys + (PAGE_SIZE << order));
        // The reserved ranges are sorted: the one that could cover it.
        let at = preserved.partition_point(|p| p.end <= phys);
        if order > 9 || !preserved.get(at).is_some_and(|p| p.covers(range)) {
            fail(format_args!(
                "block {phys:#x} order {order} is not reserved"
            ));
        }
        let sum = checksum(phys, order);
        if sum != r.sum.get() {
            fail(format_args!(
                "block {phys:#x}: checksum {sum:#018x}, handed over {:#018x}",
                r.sum.get()
            ));
        }
        total += range.len();
    }
    kprintln!(
        "kho hop {hop}: verified {} blocks ({} KiB) by checksum, generation {}",
        recs.len(),
        total / 1024,
        recs.first().map_or(0, |r| r.generation.get())
    );
    recs.to_vec()
}

/// Takes every free frame of the general pool, fills it with poison, and
/// gives it back: memory the previous kernel did not preserve is reused.
fn poison_free_memory() -> u64 {
    let mut taken: Vec<(u64, u64)> = Vec::new();
    let mut bytes_poisoned = 0;
    for order in (0..=9u32).rev() {
        while let Some(p) = frames::alloc(1 << order, PAGE_SIZE) {
            let len = PAGE_SIZE << order;
            // SAFETY: just allocated, so ours; RAM under the direct map.
            unsafe {
                core::ptr::write_bytes(paging::phys_to_virt(p) as *mut u8, 0xa5, len as usize)
            };
            bytes_poisoned += len;
            if taken.try_reserve(1).is_err() {
                let _ = frames::free(p, 1 << order);
                break;
            }
            taken.push((p, 1 << order));
        }
    }
    for (p, n) in taken {
        let _ = frames::free(p, n);
    }
    bytes_poisoned
}

/// `count` single pages, none next to another: each taken with the page
/// after it, which is given back once all are taken.
fn scattered_pages(count: u64) -> Vec<u64> {
    let mut pages = Vec::new();
    let mut gaps = Vec::new();
    let room = usize::try_from(count).unwrap_or(usize::MAX);
    if pages.try_reserve_exact(room).is_err() || gaps.try_reserve_exact(room).is_err() {
        fail(format_args!("no memory for {count} scattered pages"));
    }
    for _ in 0..count {
        let (Some(a), Some(b)) = (frames::alloc(1, PAGE_SIZE), frames::alloc(1, PAGE_SIZE)) else {
            fail(format_args!("no frames for {count} scattered pages"))
        };
        pages.push(a);
        gaps.push(b);
    }
    for g in gaps {
        frames::free(g, 1).unwrap_or_else(|e| fail(format_args!("{e}")));
    }
    pages
}

/// `kho.bench=4k|2m|4k-scattered`: 1 GiB preserved as 4 KiB pages or
/// 2 MiB folios (`4k-scattered`: 4 KiB pages none next to another, so
/// 262144 separate ranges), handed over once; the next kernel prints its
/// timing and stops. What `./x.py bench` measures.
fn bench(boot: &'static BootInfo, what: &str) -> ! {
    let (order, scattered) = match what {
        "4k" => (0, false),
        "2m" => (9, false),
        "4k-scattered" => (0, true),
        other => fail(format_args!(
            "kho.bench={other}: expected 4k, 2m or 4k-scattered"
        )),
    };
    if let Some(info) = boot.handoff {
        let want = 1u64 << 30;
        if info.preserved < want {
            fail(format_args!(
                "{} bytes preserved, {want} expected",
                info.preserved
            ));
        }
        // The same restore again, warm: what it costs once its code has run
        // (under TCG the first run also pays for translating that code).
        let len = info.blob.len() as usize;
        // SAFETY: the blob was reserved at boot and nothing writes it.
        let blob = unsafe {
            core::slice::from_raw_parts(paging::phys_to_virt(info.blob.start) as *const u8, len)
        };
        let ram: Vec<Range> = boot.params.ram().collect();
        let mut warm = u64::MAX;
        for _ in 0..5 {
            let t0 = tsc::now();
            let mut count = kho::reserve::ReserveCount::default();
            let h = Handoff::parse(blob, &ram).unwrap_or_else(|e| fail(format_args!("{e}")));
            kho::handoff::restore(&crate::kmem(), &h, info.blob, &ram, &mut count)
                .unwrap_or_else(|e| fail(format_args!("{e}")));
            warm = warm.min(tsc::now() - t0);
        }
        let s = info.stamps;
        kprintln!(
            "kho-timing hop=1 bench={what} warm_restore_ticks={warm} handoff_ticks={} prep_ticks={} jump_ticks={} reserve_ticks={} open_ticks={} ranges={} hz={}",
            s.written.get().saturating_sub(s.start.get()),
            s.jump.get().saturating_sub(s.written.get()),
            boot.entry_tsc.saturating_sub(s.jump.get()),
            info.reserved_tsc.saturating_sub(boot.entry_tsc),
            boot.open_tsc.saturating_sub(boot.entry_tsc),
            info.ranges,
            tsc::hz()
        );
        kprintln!(
            "kho hop 1: verified {} MiB preserved in {} ranges (bench)",
            info.preserved >> 20,
            info.ranges
        );
        kprintln!("kho bench: done");
        exit_qemu(ExitCode::Success);
    }
    kprintln!(
        "kho-timing hop=0 bench={what} cold_open_ticks={} hz={}",
        boot.open_tsc.saturating_sub(boot.entry_tsc),
        tsc::hz()
    );
    let count = (1u64 << 30) >> (12 + order);
    let blocks = if scattered {
        scattered_pages(count)
    } else {
        let mut blocks = Vec::new();
        blocks
            .try_reserve_exact(count as usize)
            .unwrap_or_else(|_| fail(format_args!("no memory for the block list")));
        for _ in 0..count {
            let p = frames::alloc(1 << order, PAGE_SIZE << order).unwrap_or_else(|| {
                fail(format_args!("1 GiB of order-{order} blocks does not fit"))
            });
            blocks.push(p);
        }
        blocks
    };
    let start = tsc::now();
    let mut t = Tracker::new(boot.scratch.areas()).unwrap_or_else(|e| fail(format_args!("{e}")));
    for &b in &blocks {
        t.preserve(b, order)
            .unwrap_or_else(|e| fail(format_args!("preserve {b:#x}: {e}")));
    }
    let preserved = tsc::now();
    kprintln!(
        "kho-timing hop=0 bench={what} preserve_ticks={} blocks={count}",
        preserved - start
    );
    hand_over(
        boot,
        0,
        start,
        &t,
        0,
        |w| {
            w.subsystem("bench", &["kho-bench-v1"], None, |w| {
                w.property_u64("blocks", count)
            })
        },
        || true,
    )
}

/// Runs the demo.
pub fn run(boot: &'static BootInfo) -> ! {
    let p = &boot.params;
    if let Some(what) = p.cmdline_value("kho.bench") {
        if what.starts_with("memfd-") {
            crate::bench_memfd::run(boot, what);
        }
        bench(boot, what);
    }
    let hops: u32 = p
        .cmdline_value("kho.hops")
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let hop = boot.handoff.map_or(0, |h| h.hop + 1);
    let ram_total: u64 = p.ram().map(|r| r.len()).sum();
    if hop == 0 {
        kprintln!("memory map ({} entries):", p.memory_map.len());
        for r in &p.memory_map {
            kprintln!(
                "  [{:#014x}, {:#014x}) {:>10} KiB  {}",
                r.range.start,
                r.range.end,
                r.range.len() / 1024,
                r.kind
            );
        }
    }
    kprintln!(
        "kho hop {hop}: kernel at [{:#x}, {:#x}), heap at [{:#x}, {:#x}), RAM {} MiB, scratch {:x?}",
        boot.image.start,
        boot.image.end,
        boot.heap.phys,
        boot.heap.phys + boot.heap.size,
        ram_total >> 20,
        boot.scratch.areas()
    );
    if let Some(extra) = kho_x86_64::start::extra_segment(p) {
        // SAFETY: the range is RAM (checked) that boot kept for the image
        // and nothing writes it.
        let bytes = unsafe {
            core::slice::from_raw_parts(
                paging::phys_to_virt(extra.start) as *const u8,
                extra.len() as usize,
            )
        };
        kprintln!(
            "kho hop {hop}: extra segment [{:#x}, {:#x}) kho-sum64 {:#018x}",
            extra.start,
            extra.end,
            kho::csum::sum64(bytes)
        );
    }
    if let Some(e) = boot.refused {
        // The previous kernel's handoff was refused: this is a cold boot.
        kprintln!("kho hop {hop}: cold boot after a refused handoff: {e}");
        kprintln!("kho demo: handoff refused, cold boot OK");
        exit_qemu(ExitCode::Success);
    }

    // The blocks: carried over and checked, or made at cold boot.
    let mut blocks: Vec<(u64, u32, u32)> = Vec::new();
    let files;
    if let Some(info) = boot.handoff {
        let recs = verify(boot, hop);
        let kept: Vec<(u64, u32)> = recs.iter().map(|r| (r.phys.get(), r.order.get())).collect();
        let (restored, _lost) = crate::files::restore(boot, &handoff(boot), hop, &kept);
        files = restored;
        let sums = crate::files::sums(&files);
        let s = info.stamps;
        let (a_work, a_jump) = (
            s.written.get().saturating_sub(s.start.get()),
            s.jump.get().saturating_sub(s.written.get()),
        );
        let to_entry = boot.entry_tsc.saturating_sub(s.jump.get());
        let to_reserved = info.reserved_tsc.saturating_sub(boot.entry_tsc);
        kprintln!(
            "kho hop {hop}: blackout: handoff {} us, jump prep {} us, trampoline to entry {} us, entry to all reserved {} us ({} ranges, {} KiB preserved, {} KiB metadata, {} chain pages), TSC {} MHz",
            us(a_work),
            us(a_jump),
            us(to_entry),
            us(to_reserved),
            info.ranges,
            info.preserved / 1024,
            info.metadata / 1024,
            info.chain_pages,
            tsc::hz() / 1_000_000
        );
        // The trampoline's own stamps split the jump: the mode switch out
        // of this kernel, the copies, the way into the next kernel.
        let (copy_start, copy_end) = p.trampoline_tsc.unwrap_or((0, 0));
        kprintln!(
            "kho-timing hop={hop} handoff_ticks={a_work} prep_ticks={a_jump} jump_ticks={to_entry} reserve_ticks={to_reserved} open_ticks={} copy_start_tsc={copy_start} copy_end_tsc={copy_end} entry_tsc={} hz={}",
            boot.open_tsc.saturating_sub(boot.entry_tsc),
            boot.entry_tsc,
            tsc::hz()
        );
        let reused = poison_free_memory();
        let again = verify(boot, hop);
        if again.len() != recs.len() {
            fail(format_args!("blocks changed while poisoning"));
        }
        if !crate::files::recheck(&files, &sums) {
            fail(format_args!(
                "a restored file changed while memory was poisoned"
            ));
        }
        kprintln!(
            "kho hop {hop}: reused {} MiB the previous kernel did not preserve (poisoned), preserved data intact",
            reused >> 20
        );
        for r in recs {
            blocks.push((r.phys.get(), r.order.get(), r.generation.get() + 1));
        }
    } else {
        kprintln!(
            "kho-timing hop=0 cold_open_ticks={} hz={}",
            boot.open_tsc.saturating_sub(boot.entry_tsc),
            tsc::hz()
        );
        for order in ORDERS {
            let p = frames::alloc(1 << order, PAGE_SIZE << order)
                .unwrap_or_else(|| fail(format_args!("no block of order {order}")));
            blocks.push((p, order, 0));
        }
        // `kho.scatter=N`: N more single pages, none next to another, so
        // the handoff preserves at least N separate ranges.
        let scatter: u64 = p
            .cmdline_value("kho.scatter")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        blocks.extend(scattered_pages(scatter).into_iter().map(|a| (a, 0, 0)));
        let big = p
            .cmdline_value("kho.big")
            .and_then(|v| v.parse().ok())
            .unwrap_or(256);
        // Nothing to hand over with `kho.hops=0`: no files either; none
        // with `kho.files=0` (`./x.py kexec` into an image that reads no
        // kho objects).
        files = if hops > 0 && p.cmdline_value("kho.files") != Some("0") {
            crate::files::make(big)
        } else {
            Vec::new()
        };
    }
    for &(phys, order, generation) in &blocks {
        fill(phys, order, generation);
    }
    if hop >= hops {
        kprintln!("kho demo: live update OK after {hop} kexecs");
        exit_qemu(ExitCode::Success);
    }
    hand_over_blocks(boot, hop, &blocks, files)
}

/// The handoff this kernel was started with, parsed.
fn handoff(boot: &BootInfo) -> Handoff<'static> {
    let Some(info) = boot.handoff else {
        fail(format_args!("no handoff"))
    };
    // SAFETY: the blob was reserved at boot and nothing writes it.
    let blob = unsafe {
        core::slice::from_raw_parts(
            paging::phys_to_virt(info.blob.start) as *const u8,
            info.blob.len() as usize,
        )
    };
    let ram: Vec<Range> = boot.params.ram().collect();
    Handoff::parse(blob, &ram).unwrap_or_else(|e| fail(format_args!("{e}")))
}

/// Preserves `blocks`, writes the handoff, and kexecs into the image
/// module. Returns only if the kexec is refused (then the blocks are still
/// checked and the demo ends).
fn hand_over_blocks(
    boot: &'static BootInfo,
    hop: u32,
    blocks: &[(u64, u32, u32)],
    files: crate::files::Held,
) -> ! {
    let checks = crate::files::checks(&files);
    let start = tsc::now();
    let mut t = Tracker::new(boot.scratch.areas()).unwrap_or_else(|e| fail(format_args!("{e}")));
    let mut recs = Vec::new();
    for &(phys, order, generation) in blocks {
        t.preserve(phys, order)
            .unwrap_or_else(|e| fail(format_args!("preserve {phys:#x}: {e}")));
        recs.push(BlockRecord {
            phys: phys.into(),
            order: order.into(),
            generation: generation.into(),
            sum: checksum(phys, order).into(),
        });
    }
    let mut luo = crate::files::preserve(files, &mut t);
    // Preflight: what the next image reads, from its ELF note.
    let force = boot.params.cmdline_value("kho.force") == Some("1");
    if let Some(Ok(img)) = image_bytes(boot).map(kho::elf::Image::parse) {
        let empty = kho::luo::ReadList::parse(b"").unwrap_or_else(|| fail(format_args!("")));
        let next = match img.reads() {
            Some(Ok(l)) => l,
            Some(Err(())) => {
                kprintln!("kho hop {hop}: preflight: the next image's reads note is malformed");
                empty
            }
            None => {
                kprintln!("kho hop {hop}: preflight: the next image declares no reads note");
                empty
            }
        };
        if let Err(e) = crate::files::freeze(&mut luo, &mut t, hop, &next, force) {
            kprintln!("kho hop {hop}: preflight refused the kexec: {e}");
            let back = crate::files::cancel(&mut luo, &mut t);
            let ok = recs
                .iter()
                .all(|r| checksum(r.phys.get(), r.order.get()) == r.sum.get())
                && crate::files::recheck(
                    &back,
                    &checks.iter().map(|c| c.1.sum.get()).collect::<Vec<_>>(),
                );
            if !ok {
                fail(format_args!("preserved data changed"));
            }
            kprintln!("kho demo: kexec refused by preflight, still running, data intact");
            exit_qemu(ExitCode::Success);
        }
        if force {
            kprintln!(
                "kho hop {hop}: preflight: forced (kho.force=1): objects the next kernel cannot read will be lost"
            );
        }
    } else if let Err(e) = luo.freeze(&mut crate::kmem(), &mut t, None, false) {
        fail(format_args!("freeze: {e}"));
    }
    let intact = || {
        recs.iter()
            .all(|r| checksum(r.phys.get(), r.order.get()) == r.sum.get())
    };
    hand_over(
        boot,
        hop,
        start,
        &t,
        core::mem::size_of_val(&recs[..]),
        |w| {
            w.subsystem(NAME, &[DEMO_V1], None, |w| {
                w.property_struct("kho,blocks", &recs[..])
            })?;
            crate::files::add_nodes(w, &luo, &checks)
        },
        intact,
    )
}

/// Writes the handoff of `t` (with the subsystems `add` writes, which
/// need at most `room` bytes beyond 16 KiB) and kexecs into the image
/// module. If the kexec is refused, checks `intact` and ends the demo.
pub(crate) fn hand_over(
    boot: &'static BootInfo,
    hop: u32,
    start: u64,
    t: &Tracker,
    room: usize,
    add: impl FnOnce(&mut HandoffWriter<'_>) -> Result<(), kho::fdt::WriteError>,
    intact: impl Fn() -> bool,
) -> ! {
    let p = &boot.params;
    let mut mem = crate::kmem();
    let root = handover::write(t, &mut mem).unwrap_or_else(|e| fail(format_args!("{e}")));
    let mut buf = alloc::vec![0u8; 16 * 1024 + room];
    let mut stamps = Stamps {
        start: start.into(),
        written: 0.into(),
        jump: 0.into(),
    };
    // `kho.corrupt=scratch`: hand over a scratch list of one 2 MiB area
    // at the first one's start, too small for the next kernel to boot in.
    let ram: Vec<Range> = p.ram().collect();
    let scratch = match p.cmdline_value("kho.corrupt") {
        Some("scratch") => {
            let first = boot.scratch.areas().first().map_or(0, |a| a.start);
            let rec = kho::scratch::ScratchRecord {
                start: first.into(),
                size: (2u64 << 20).into(),
            };
            kho::scratch::Scratch::from_records(rec.as_bytes(), &ram)
                .unwrap_or_else(|e| fail(format_args!("{e}")))
        }
        _ => boot.scratch,
    };
    let mut w = HandoffWriter::new(&mut buf, hop, stamps, &root, &scratch)
        .unwrap_or_else(|e| fail(format_args!("{e}")));
    add(&mut w).unwrap_or_else(|e| fail(format_args!("{e}")));
    let len = w.finish().unwrap_or_else(|e| fail(format_args!("{e}"))).len;
    buf.truncate(len);
    // The blob goes into frames of its own below 4 GiB (the next kernel
    // reads it before its direct map exists).
    let pages = (len as u64).div_ceil(PAGE_SIZE);
    let blob_at = frames::alloc_below(pages, 1 << 32)
        .unwrap_or_else(|| fail(format_args!("no frames for the blob")));
    let blob = Range::new(blob_at, blob_at + len as u64);
    // Stamps the blob (which reseals it) and writes it to its frames;
    // `kho.corrupt=blob` damages what is written, after the seal.
    let corrupt_blob = p.cmdline_value("kho.corrupt") == Some("blob");
    let publish = |buf: &mut Vec<u8>, stamps: &Stamps| {
        kho::handoff::set_stamps(buf, stamps)
            .unwrap_or_else(|e| fail(format_args!("stamping our own blob: {e}")));
        let ok = if corrupt_blob {
            let mut bad = buf.clone();
            bad[0x48] ^= 0xff;
            crate::kmem().write_bytes(blob_at, &bad)
        } else {
            crate::kmem().write_bytes(blob_at, buf)
        };
        if !ok {
            fail(format_args!("cannot write the blob"));
        }
    };
    // Check our own output the way the next kernel will, and learn every
    // page it must keep.
    let mut log = ReserveLog::new();
    Reader::new(&mem, root, &ram, boot.scratch.areas())
        .restore(&mut log)
        .unwrap_or_else(|e| fail(format_args!("our own tracker chain: {e}")));
    if p.cmdline_value("kho.corrupt") == Some("chain")
        && let Some(f) = mem.frame_mut(root.first_page.get())
    {
        f[0] ^= 0xff;
    }
    stamps.written = tsc::now().into();
    publish(&mut buf, &stamps);
    dump_blob(hop, &buf);
    kprintln!(
        "kho hop {hop}: preserved {} blocks ({} KiB) in {} chain pages, handoff blob {} bytes at {:#x}",
        t.blocks(),
        t.pages() * 4,
        root.pages.get(),
        len,
        blob_at
    );

    let Some(image) = p.image_module() else {
        fail(format_args!(
            "no image to kexec into: boot with the next kernel as a module (-initrd)"
        ))
    };
    let mut keep: Vec<Range> = log.ranges.iter().map(|(r, _)| *r).collect();
    keep.push(Range::new(blob_at, blob_at + pages * PAGE_SIZE));
    keep.push(image);
    let modules = [
        NextModule {
            range: image,
            cmdline: IMAGE_MODULE,
        },
        NextModule {
            range: blob,
            cmdline: HANDOFF_MODULE,
        },
    ];
    let cmdline = next_cmdline(p.cmdline.as_str());
    if p.cmdline_value("kho.kexec_floor") == Some("1")
        && let Some(bytes) = image_bytes(boot)
    {
        copy_floor(bytes);
    }
    squeeze_free_memory(p);
    let in_place = p.cmdline_value("kho.stage") != Some("all");
    let stage_tsc = tsc::now();
    let prepared = kexec::prepare(p, image, &keep, &modules, cmdline, in_place);
    let prepare_ticks = tsc::now() - stage_tsc;
    match prepared {
        Ok(prep) => {
            kprintln!("kho-timing hop={hop} stage_tsc={stage_tsc} prepare_ticks={prepare_ticks}");
            kprintln!(
                "kho hop {hop}: kexec: {} KiB staged, {} KiB from the image in place, {} list pages, next kernel at [{:#x}, {:#x}), PVH entry {:#x}, command line \"{cmdline}\"",
                prep.staged / 1024,
                prep.from_module / 1024,
                prep.list_pages,
                prep.span.start,
                prep.span.end,
                prep.entry
            );
            stamps.jump = tsc::now().into();
            publish(&mut buf, &stamps);
            // The blob was dumped before this stamp: the runner patches
            // its saved copy from this line (and reseals it).
            kprintln!("kho-jump {hop} {}", stamps.jump.get());
            // SAFETY: the handoff is complete; everything the next kernel
            // needs is in `keep` or staged by `prepare`.
            unsafe { kexec::jump(prep) }
        }
        Err(e) => {
            kprintln!("kho hop {hop}: kexec refused: {e}");
            // Still running, nothing lost: every block still checks out.
            if !intact() {
                fail(format_args!("preserved data changed"));
            }
            kprintln!("kho demo: kexec refused, still running, preserved data intact");
            exit_qemu(ExitCode::Success)
        }
    }
}

/// The physical floor of a kexec into the image `bytes`: copying its
/// segments' file bytes once, with `memcpy`, into fresh memory of this
/// kernel (the warmer of two passes), printed as a `kho-timing` line for
/// `./x.py bench kexec`.
fn copy_floor(bytes: &[u8]) {
    let Ok(img) = kho::elf::Image::parse(bytes) else {
        return;
    };
    let total: u64 = img.segments().iter().map(|s| s.file_size).sum();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let Some(at) = frames::alloc(pages, PAGE_SIZE) else {
        kprintln!("kho demo: no {pages} contiguous pages for the copy floor");
        return;
    };
    let mut best = u64::MAX;
    for _ in 0..2 {
        let t = tsc::now();
        let mut off = 0u64;
        for s in img.segments() {
            let src = img.file_bytes(s);
            // SAFETY: `at` is a fresh run of `pages` frames, which the
            // segments' file bytes fill at most; the direct map covers it.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    src.as_ptr(),
                    paging::phys_to_virt(at + off) as *mut u8,
                    src.len(),
                )
            };
            off += src.len() as u64;
        }
        best = best.min(tsc::now() - t);
    }
    let _ = frames::free(at, pages);
    kprintln!(
        "kho-timing hop=0 floor_bytes={total} floor_ticks={best} hz={}",
        tsc::hz()
    );
}

/// Test knobs that leave the kexec less free memory: `kho.fragment=KIB`
/// takes every free page and gives back every other run of KIB KiB (the
/// free memory left is in runs no longer than that); `kho.hog=MIB` takes
/// free memory until only MIB MiB is left. What they take is never given
/// back: a kexec or an exit follows.
fn squeeze_free_memory(p: &kho_x86_64::pvh::BootParams) {
    let num = |k: &str| p.cmdline_value(k).and_then(|v| v.parse::<u64>().ok());
    let (scratch, general) = frames::free_bytes();
    let free = scratch + general;
    let mut runs = Vec::new();
    if let Some(kib) = num("kho.fragment") {
        let _ = frames::take_scattered(free / PAGE_SIZE, &[], &mut runs);
        let chunk = (kib * 1024).max(PAGE_SIZE);
        let mut given = 0u64;
        for r in &runs {
            let mut at = r.start;
            let mut k = 0u64;
            while at < r.end {
                let end = (at + chunk).min(r.end);
                if k % 2 == 1 {
                    let _ = frames::free(at, (end - at) / PAGE_SIZE);
                    given += end - at;
                }
                at = end;
                k += 1;
            }
        }
        kprintln!(
            "kho demo: fragmented free memory: {} MiB left free in runs of at most {kib} KiB",
            given >> 20
        );
    } else if let Some(mib) = num("kho.hog") {
        let take = free.saturating_sub(mib << 20) / PAGE_SIZE;
        let _ = frames::take_scattered(take, &[], &mut runs);
        kprintln!("kho demo: took free memory, {mib} MiB left free");
    }
    core::mem::forget(runs);
}

/// The image module's bytes (the next kernel), if there is one.
fn image_bytes(boot: &BootInfo) -> Option<&'static [u8]> {
    let image = boot.params.image_module()?;
    // SAFETY: the module is RAM the loader handed us, reserved at boot, and
    // nothing writes it.
    Some(unsafe {
        core::slice::from_raw_parts(
            paging::phys_to_virt(image.start) as *const u8,
            image.len() as usize,
        )
    })
}

/// The next kernel's command line: what follows ` -- ` in ours, or ours.
fn next_cmdline(ours: &str) -> &str {
    match ours.split_once(" -- ") {
        Some((_, next)) => next,
        None => ours,
    }
}
