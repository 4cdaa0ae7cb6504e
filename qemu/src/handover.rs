//! The hand-over path every mode of the kernel shares (the demo and the
//! benches): write the blob, place it, check it, and kexec into the image
//! module; and the failure exit they all use.

use alloc::vec::Vec;
use kho::handoff::HandoffWriter;
use kho::platform::PhysMem;
use kho::ranges::Range;
use kho::scratch::Scratch;
use kho::{Frozen, PAGE_SIZE};
use kho_qemu_rt::exit::{ExitCode, exit_qemu};
use kho_timing::{Field, Record};
use kho_x86_64::glue::KernelMem;
use kho_x86_64::handover::{self, HandOverError, Options, Staged};
use kho_x86_64::kexec::{self, KernelFrames, StageFrames};
use kho_x86_64::{BootInfo, frames, kprintln, tsc};
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
/// The timing record a bench's second kernel starts from: the previous
/// kernel's stamps (`stamps`) split into its hand-over work, its jump
/// preparation, and the way from the jump to this kernel's entry.
pub fn hop_record<'a>(
    what: &'a str,
    stamps: &kho::abi::handoff::Stamps,
    entry_tsc: u64,
) -> Record<'a> {
    let (start, written, jump) = (stamps.start.get(), stamps.written.get(), stamps.jump.get());
    Record::new(1)
        .bench(what)
        .with(Field::HandoffTicks, written.saturating_sub(start))
        .with(Field::PrepTicks, jump.saturating_sub(written))
        .with(Field::JumpTicks, entry_tsc.saturating_sub(jump))
}

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

/// The scratch areas this kernel hands on: its own, or with
/// `kho.corrupt=scratch` a list of one 2 MiB area at the first one's
/// start, too small for the next kernel to boot in.
pub(crate) fn scratch(boot: &BootInfo) -> Scratch {
    if boot.params.cmdline_value("kho.corrupt") != Some("scratch") {
        return boot.scratch;
    }
    let ram: Vec<Range> = boot.params.ram().collect();
    let first = boot.scratch.areas().first().map_or(0, |a| a.start);
    let rec = kho::abi::scratch::ScratchRecord {
        start: first.into(),
        size: (2u64 << 20).into(),
    };
    Scratch::from_records(rec.as_bytes(), &ram).unwrap_or_else(|e| fail(format_args!("{e}")))
}

/// Hands over `out` (with the kernel's own subsystem nodes that `extra`
/// writes) through `kho_x86_64::handover`, with this kernel's test knobs
/// as its hooks, and kexecs into the next image. If the kexec is refused,
/// checks `intact` and ends the demo.
pub(crate) fn hand_over(
    boot: &'static BootInfo,
    hop: u32,
    start: u64,
    mut out: Frozen<KernelMem>,
    mut extra: impl FnMut(&mut HandoffWriter<'_>) -> Result<(), kho::fdt::WriteError>,
    intact: impl Fn() -> bool,
) -> ! {
    let p = &boot.params;
    let Some(next) = kexec::next_image(p, hop) else {
        fail(format_args!(
            "no image to kexec into: boot with the next kernel as a module (-initrd)"
        ))
    };
    let corrupt = p.cmdline_value("kho.corrupt");
    let floor = p.cmdline_value("kho.kexec_floor") == Some("1");
    // A bench that times the jump does without the blob's dump, which runs
    // after the jump stamp.
    let timed = floor || p.cmdline_value("kho.bench").is_some();
    let mut before_stage = |mem: &mut KernelMem| {
        if floor && let Some(bytes) = image_bytes(boot, hop) {
            copy_floor(mem, bytes);
        }
        squeeze_free_memory(p);
    };
    let mut before_jump = |mem: &mut KernelMem, s: &Staged<'_>| {
        kprintln!(
            "kho hop {hop}: preserved {} KiB (with the tracker's own pages), handoff blob {} bytes at {:#x}",
            s.kept / 1024,
            s.blob.len(),
            s.blob.start
        );
        kprintln!(
            "{}",
            Record::new(hop)
                .with(Field::StageTsc, s.stage_tsc)
                .with(Field::PrepareTicks, s.prepare_ticks)
        );
        kprintln!(
            "kho hop {hop}: kexec: {} KiB staged, {} KiB from the image in place, {} list pages, next kernel at [{:#x}, {:#x}), PVH entry {:#x}, command line \"{}\"",
            s.prepared.staged / 1024,
            s.prepared.from_module / 1024,
            s.prepared.list_pages,
            s.prepared.span.start,
            s.prepared.span.end,
            s.prepared.entry,
            next_cmdline(p.cmdline.as_str())
        );
        // The blob as placed, read back only to be logged or damaged.
        if timed && corrupt.is_none() {
            kprintln!("kho-jump {hop} {}", s.stamps.jump.get());
            return;
        }
        let mut blob = alloc::vec![0u8; s.blob.len() as usize];
        if !mem.read_bytes(s.blob.start, &mut blob) {
            fail(format_args!("cannot read the blob back"));
        }
        // The damage a test asked for, written over the blob as placed:
        // a resealed footprint (well formed, overlapping) is in the blob
        // the log shows; a flipped byte after the seal is not.
        let mut damaged = corrupt == Some("footprint") && corrupt_footprint(&mut blob, hop);
        if !timed {
            dump_blob(hop, &blob);
        }
        kprintln!("kho-jump {hop} {}", s.stamps.jump.get());
        damaged |= match corrupt {
            Some("blob") => {
                blob[0x48] ^= 0xff;
                true
            }
            Some("chain") => {
                let ram: Vec<Range> = p.ram().collect();
                // Lending is off in this scenario (`demo`), so the tracker
                // went as a chain of pages the token reaches.
                let first = match kho::handoff::Handoff::parse(&blob, &ram).map(|h| h.tracker) {
                    Ok(kho::tracker::Root::Chain(c)) => c.first_page.get(),
                    Ok(kho::tracker::Root::InPlace(_)) => {
                        fail(format_args!("kho.corrupt=chain: the tracker went in place"))
                    }
                    Err(e) => fail(format_args!("our own blob: {e}")),
                };
                if let Some(f) = mem.frame_mut(first) {
                    f[0] ^= 0xff;
                }
                false
            }
            _ => false,
        };
        if damaged && !mem.write_bytes(s.blob.start, &blob) {
            fail(format_args!("cannot write the blob"));
        }
    };
    let mut counted = Counted::default();
    let opts = Options {
        extra: Some(&mut extra),
        before_stage: Some(&mut before_stage),
        before_jump: Some(&mut before_jump),
        stage_all: p.cmdline_value("kho.stage") == Some("all"),
        start_tsc: Some(start),
        frames: Some(&mut counted),
    };
    let cmdline = next_cmdline(p.cmdline.as_str());
    let mut mem = crate::mem::kmem();
    let Err(e) = handover::hand_over_with(&mut out, &mut mem, p, &next, cmdline, hop, opts);
    drop(mem);
    match e {
        HandOverError::Kexec(e) => kprintln!("kho hop {hop}: kexec refused: {e}"),
        e => kprintln!("kho hop {hop}: kexec refused: {e}"),
    }
    // A refused kexec gives back every page it took, through the same
    // allocator it took them from.
    if counted.taken != counted.given {
        fail(format_args!(
            "the stager took {} pages and gave back {}",
            counted.taken, counted.given
        ));
    }
    kprintln!(
        "kho hop {hop}: the stager took {} pages and gave them all back",
        counted.taken
    );
    // Still running, nothing lost: every block still checks out.
    if !intact() {
        fail(format_args!("preserved data changed"));
    }
    kprintln!("kho demo: kexec refused, still running, preserved data intact");
    exit_qemu(ExitCode::Success)
}

/// The hand-over's pages, through this kernel's own allocator, counted:
/// what a kernel with an allocator of its own does
/// ([`kexec::StageFrames`]), and a check that a refused kexec gives back
/// all it took.
#[derive(Default)]
struct Counted {
    taken: u64,
    given: u64,
}

impl StageFrames for Counted {
    fn low(&mut self, count: u64, avoid: &[Range]) -> Option<u64> {
        let p = KernelFrames.low(count, avoid)?;
        self.taken += count;
        Some(p)
    }

    fn scattered(&mut self, pages: u64, avoid: &[Range], out: &mut Vec<Range>) -> u64 {
        let before = out.len();
        let short = KernelFrames.scattered(pages, avoid, out);
        self.taken += out[before..]
            .iter()
            .map(|r| r.len() / PAGE_SIZE)
            .sum::<u64>();
        short
    }

    fn give_back(&mut self, phys: u64, count: u64) {
        self.given += count;
        KernelFrames.give_back(phys, count);
    }

    fn blob(&mut self, count: u64) -> Option<u64> {
        let p = KernelFrames.blob(count)?;
        self.taken += count;
        Some(p)
    }
}

/// The physical floor of a kexec into the image `bytes`: copying its
/// segments' file bytes once, with `memcpy`, into fresh memory of this
/// kernel (the warmer of two passes), printed as a `kho-timing` line for
/// `./x.py bench kexec`.
fn copy_floor(mem: &mut KernelMem, bytes: &[u8]) {
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
    if let Some(dst) = mem.run_mut(Range::new(at, at + pages * PAGE_SIZE)) {
        for _ in 0..2 {
            let t = tsc::now();
            let mut off = 0usize;
            for s in img.segments() {
                let src = img.file_bytes(s);
                // A fresh run of `pages` frames, which the segments' file
                // bytes fill at most.
                if let Some(d) = dst.get_mut(off..off + src.len()) {
                    d.copy_from_slice(src);
                }
                off += src.len();
            }
            best = best.min(tsc::now() - t);
        }
    }
    let _ = frames::free(at, pages);
    kprintln!(
        "{}",
        Record::new(0)
            .with(Field::FloorBytes, total)
            .with(Field::FloorTicks, best)
            .with(Field::Hz, tsc::hz())
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
fn corrupt_footprint(buf: &mut [u8], hop: u32) -> bool {
    let at = |fdt: &kho::fdt::Fdt<'_>, path: &str| {
        fdt.find_property(path, "kho,footprint").map(|p| {
            let off = (p.value.as_ptr() as usize).wrapping_sub(fdt.as_bytes().as_ptr() as usize);
            (off, p.value.to_vec())
        })
    };
    let (target, victim) = {
        let Ok(fdt) = kho::fdt::Fdt::new(buf) else {
            return false;
        };
        // The session named vm-1, wherever it comes in the node.
        let Some(session) = fdt.find_node("/luo").and_then(|luo| {
            luo.children().find(|s| {
                s.property("kho,name")
                    .and_then(|p| p.as_str().ok())
                    .is_some_and(|n| n == "vm-1")
            })
        }) else {
            return false;
        };
        let base = alloc::format!("/luo/{}", session.name());
        (
            at(&fdt, &alloc::format!("{base}/object-1")),
            at(&fdt, &alloc::format!("{base}/object-2")),
        )
    };
    let (Some((_, first)), Some((off, runs))) = (target, victim) else {
        return false;
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
        return true;
    }
    false
}

/// The next kernel's image bytes, if there is one.
pub(crate) fn image_bytes(boot: &BootInfo, hop: u32) -> Option<&'static [u8]> {
    kexec::next_image(&boot.params, hop).and_then(|n| kho_x86_64::start::module_bytes(n.image))
}

/// The next kernel's command line: what follows ` -- ` in ours, or ours.
fn next_cmdline(ours: &str) -> &str {
    match ours.split_once(" -- ") {
        Some((_, next)) => next,
        None => ours,
    }
}
