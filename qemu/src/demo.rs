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
use kho::handoff::Handoff;
use kho::ranges::Range;
use kho::{Freeze, Outgoing};
use kho_qemu_rt::exit::{ExitCode, exit_qemu};
use kho_timing::{Field, Record};
use kho_x86_64::glue::KernelMem;
use kho_x86_64::{BootInfo, frames, kprintln, tsc};

use crate::blocks::DEMO_V1;
use crate::blocks::{
    BlockRecord, NAME, ORDERS, checksum, fill, poison_free_memory, scattered_pages, verify,
};
use crate::handover::{fail, hand_over, image_bytes, us};

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
        let blob = info
            .blob_bytes()
            .unwrap_or_else(|| fail(format_args!("the blob is not a module")));
        let ram: Vec<Range> = boot.params.ram().collect();
        let mut warm = u64::MAX;
        for _ in 0..5 {
            let t0 = tsc::now();
            let mut count = kho::reserve::ReserveCount::default();
            let h = Handoff::parse(blob, &ram).unwrap_or_else(|e| fail(format_args!("{e}")));
            kho::handoff::restore(&*crate::mem::kmem(), &h, info.blob, &ram, &mut count)
                .unwrap_or_else(|e| fail(format_args!("{e}")));
            warm = warm.min(tsc::now() - t0);
        }
        kprintln!(
            "{}",
            crate::handover::hop_record(what, &info.stamps, boot.entry_tsc)
                .with(Field::WarmRestoreTicks, warm)
                .with(
                    Field::ReserveTicks,
                    info.reserved_tsc.saturating_sub(boot.entry_tsc)
                )
                .with(
                    Field::OpenTicks,
                    boot.open_tsc.saturating_sub(boot.entry_tsc)
                )
                .with(Field::Ranges, info.ranges as u64)
                .with(Field::Hz, tsc::hz())
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
        "{}",
        Record::new(0)
            .bench(what)
            .with(
                Field::ColdOpenTicks,
                boot.open_tsc.saturating_sub(boot.entry_tsc)
            )
            .with(Field::Hz, tsc::hz())
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
    let mut out: Outgoing<KernelMem> =
        Outgoing::new(boot.scratch).unwrap_or_else(|e| fail(format_args!("{e}")));
    for &b in &blocks {
        out.preserve_frames(b, order)
            .unwrap_or_else(|e| fail(format_args!("preserve {b:#x}: {e}")));
    }
    let preserved = tsc::now();
    kprintln!(
        "{}",
        Record::new(0)
            .bench(what)
            .with(Field::PreserveTicks, preserved - start)
            .with(Field::Blocks, count)
    );
    let frozen = out
        .freeze(&mut *crate::mem::kmem(), Freeze::AllowLoss)
        .unwrap_or_else(|e| fail(format_args!("{e}")));
    hand_over(
        boot,
        0,
        start,
        frozen,
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
        let bytes = kho_x86_64::start::extra_segment_bytes()
            .unwrap_or_else(|| fail(format_args!("the extra segment is not readable")));
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
            "{}",
            Record::new(hop)
                .with(Field::HandoffTicks, a_work)
                .with(Field::PrepTicks, a_jump)
                .with(Field::JumpTicks, to_entry)
                .with(Field::ReserveTicks, to_reserved)
                .with(
                    Field::OpenTicks,
                    boot.open_tsc.saturating_sub(boot.entry_tsc)
                )
                .with(Field::CopyStartTsc, copy_start)
                .with(Field::CopyEndTsc, copy_end)
                .with(Field::EntryTsc, boot.entry_tsc)
                .with(Field::Hz, tsc::hz())
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
            "{}",
            Record::new(0)
                .with(
                    Field::ColdOpenTicks,
                    boot.open_tsc.saturating_sub(boot.entry_tsc)
                )
                .with(Field::Hz, tsc::hz())
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
    let blob = info
        .blob_bytes()
        .unwrap_or_else(|| fail(format_args!("the blob is not a module")));
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
    // A test that damages the tracker's pages needs them reachable through
    // the token: written at freeze as a chain, not lent.
    if boot.params.cmdline_value("kho.corrupt") == Some("chain") {
        crate::mem::kmem().set_lending(false);
    }
    let start = tsc::now();
    let mut out: Outgoing<KernelMem> =
        Outgoing::new(crate::handover::scratch(boot)).unwrap_or_else(|e| fail(format_args!("{e}")));
    let fams = crate::files::Families::register_out(&mut out);
    let mut recs = Vec::new();
    for &(phys, order, generation) in blocks {
        out.preserve_frames(phys, order)
            .unwrap_or_else(|e| fail(format_args!("preserve {phys:#x}: {e}")));
        recs.push(BlockRecord {
            phys: phys.into(),
            order: order.into(),
            generation: generation.into(),
            sum: checksum(phys, order).into(),
        });
    }
    crate::files::preserve(&mut out, &fams, files, hop);
    // Preflight: what the next image reads, from its ELF note.
    let force = boot.params.cmdline_value("kho.force") == Some("1");
    let frozen = if let Some(Ok(img)) = image_bytes(boot, hop).map(kho::elf::Image::parse) {
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
        match crate::files::freeze(out, hop, &next, force) {
            Ok(frozen) => {
                if force {
                    kprintln!(
                        "kho hop {hop}: preflight: forced (kho.force=1): objects the next kernel cannot read will be lost"
                    );
                }
                frozen
            }
            Err(refused) => {
                kprintln!(
                    "kho hop {hop}: preflight refused the kexec: {}",
                    refused.error
                );
                let mut out = refused.outgoing;
                let back = crate::files::cancel(&mut out);
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
        }
    } else {
        out.freeze(&mut *crate::mem::kmem(), Freeze::AllowLoss)
            .unwrap_or_else(|e| fail(format_args!("freeze: {e}")))
    };
    let intact = || {
        recs.iter()
            .all(|r| checksum(r.phys.get(), r.order.get()) == r.sum.get())
    };
    hand_over(
        boot,
        hop,
        start,
        frozen,
        |w| {
            w.subsystem(NAME, &[DEMO_V1], None, |w| {
                w.property_struct("kho,blocks", &recs[..])
            })?;
            crate::files::add_nodes(w, &checks)
        },
        intact,
    )
}
