//! The hand-over path every mode of the kernel shares (the demo and the
//! benches): write the blob, place it, check it, and kexec into the image
//! module; and the failure exit they all use.

use alloc::vec::Vec;
use kho::PAGE_SIZE;
use kho::handoff::{HANDOFF_MODULE, HandoffWriter, Stamps};
use kho::platform::PhysMem;
use kho::ranges::Range;
use kho::reserve::ReserveLog;
use kho::tracker::Tracker;
use kho::tracker::handover::{self, Reader};
use kho_qemu_rt::exit::{ExitCode, exit_qemu};
use kho_x86_64::kexec::{self, NextModule};
use kho_x86_64::{BootInfo, frames, kprintln, paging, tsc};
use zerocopy::IntoBytes;

pub(crate) fn fail(what: core::fmt::Arguments<'_>) -> ! {
    kprintln!("kho demo: FAILED: {what}");
    exit_qemu(ExitCode::Failure)
}

pub(crate) fn us(ticks: u64) -> u64 {
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

/// Writes the handoff of `t` (with the subsystems `add` writes, which
/// need at most `room` bytes beyond 16 KiB) and kexecs into the image
/// module. If the kexec is refused, checks `intact` and ends the demo.
/// The largest handoff blob this kernel writes.
const MAX_BLOB: usize = 16 << 20;

pub(crate) fn hand_over(
    boot: &'static BootInfo,
    hop: u32,
    start: u64,
    t: &Tracker,
    room: usize,
    mut add: impl FnMut(&mut HandoffWriter<'_>) -> Result<(), kho::fdt::WriteError>,
    intact: impl Fn() -> bool,
) -> ! {
    let p = &boot.params;
    // The memory token is taken for each step that needs it, never across
    // `add` (which reads the files through it).
    let root =
        handover::write(t, &mut *crate::mem::kmem()).unwrap_or_else(|e| fail(format_args!("{e}")));
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
    // The blob's size is known once it is written (a footprint of
    // thousands of extents takes tens of KiB): a buffer too small is
    // grown to what the writer says it needs, and the blob written again.
    let len = loop {
        let written = {
            let mut w = HandoffWriter::new(&mut buf, hop, stamps, &root, &scratch)
                .unwrap_or_else(|e| fail(format_args!("{e}")));
            add(&mut w).and_then(|()| w.finish().map(|b| b.len))
        };
        match written {
            Ok(len) => break len,
            Err(kho::fdt::WriteError::NoSpace { needed }) if buf.len() < MAX_BLOB => {
                let size = needed.max(buf.len() * 2).min(MAX_BLOB);
                buf = alloc::vec![0u8; size];
            }
            Err(e) => fail(format_args!("{e}")),
        }
    };
    buf.truncate(len);
    if p.cmdline_value("kho.corrupt") == Some("footprint") {
        corrupt_footprint(&mut buf, hop);
    }
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
            crate::mem::kmem().write_bytes(blob_at, &bad)
        } else {
            crate::mem::kmem().write_bytes(blob_at, buf)
        };
        if !ok {
            fail(format_args!("cannot write the blob"));
        }
    };
    // Check our own output the way the next kernel will, and learn every
    // page it must keep.
    let mut log = ReserveLog::new();
    let mut mem = crate::mem::kmem();
    Reader::new(&*mem, root, &ram, boot.scratch.areas())
        .restore(&mut log)
        .unwrap_or_else(|e| fail(format_args!("our own tracker chain: {e}")));
    if p.cmdline_value("kho.corrupt") == Some("chain")
        && let Some(f) = mem.frame_mut(root.first_page.get())
    {
        f[0] ^= 0xff;
    }
    drop(mem);
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

    let Some(next) = kexec::next_image(p, hop) else {
        fail(format_args!(
            "no image to kexec into: boot with the next kernel as a module (-initrd)"
        ))
    };
    let image = next.image;
    let mut keep: Vec<Range> = log.ranges.iter().map(|(r, _)| *r).collect();
    keep.push(Range::new(blob_at, blob_at + pages * PAGE_SIZE));
    keep.push(next.module);
    let modules = [
        NextModule {
            range: next.module,
            cmdline: next.tag,
        },
        NextModule {
            range: blob,
            cmdline: HANDOFF_MODULE,
        },
    ];
    let cmdline = next_cmdline(p.cmdline.as_str());
    if p.cmdline_value("kho.kexec_floor") == Some("1")
        && let Some(bytes) = image_bytes(boot, hop)
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
                    paging::phys_to_virt(at + off).as_mut_ptr::<u8>(),
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

/// `kho.corrupt=footprint`: makes one run of session vm-1's object 2 name
/// object 1's first run instead (its last run, where that keeps the
/// runs sorted, so that the footprint is well formed and only overlaps:
/// a reader must refuse object 2 alone), and reseals the blob.
fn corrupt_footprint(buf: &mut [u8], hop: u32) {
    let at = |fdt: &kho::fdt::Fdt<'_>, path: &str| {
        fdt.find_property(path, "kho,footprint").map(|p| {
            let off = (p.value.as_ptr() as usize).wrapping_sub(fdt.as_bytes().as_ptr() as usize);
            (off, p.value.to_vec())
        })
    };
    let (target, victim) = {
        let Ok(fdt) = kho::fdt::Fdt::new(buf) else {
            return;
        };
        // The session named vm-1, wherever it comes in the node.
        let Some(session) = fdt.find_node("/luo").and_then(|luo| {
            luo.children().find(|s| {
                s.property("kho,name")
                    .and_then(|p| p.as_str().ok())
                    .is_some_and(|n| n == "vm-1")
            })
        }) else {
            return;
        };
        let base = alloc::format!("/luo/{}", session.name());
        (
            at(&fdt, &alloc::format!("{base}/object-1")),
            at(&fdt, &alloc::format!("{base}/object-2")),
        )
    };
    let (Some((_, first)), Some((off, runs))) = (target, victim) else {
        return;
    };
    let word = |b: &[u8], i: usize| {
        b.get(i * 8..i * 8 + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map_or(0, u64::from_le_bytes)
    };
    let n = runs.len() / 16;
    let start = word(&first, 0);
    // After the run before the last, or else the first run.
    let slot = if n >= 2 && word(&runs, 2 * (n - 2)) + word(&runs, 2 * (n - 2) + 1) * 4096 < start {
        n - 1
    } else {
        0
    };
    if let (Some(dst), Some(src)) = (
        buf.get_mut(off + slot * 16..off + slot * 16 + 16),
        first.get(..16),
    ) {
        dst.copy_from_slice(src);
        let _ = kho::handoff::seal(buf);
        kprintln!("kho hop {hop}: corrupted object 2's footprint (kho.corrupt=footprint)");
    }
}

/// The next kernel's image bytes, if there is one.
pub(crate) fn image_bytes(boot: &BootInfo, hop: u32) -> Option<&'static [u8]> {
    kexec::next_image(&boot.params, hop).and_then(|n| kexec::module_bytes(n.image))
}

/// The next kernel's command line: what follows ` -- ` in ours, or ours.
fn next_cmdline(ours: &str) -> &str {
    match ours.split_once(" -- ") {
        Some((_, next)) => next,
        None => ours,
    }
}
