//! What boot keeps, where it may allocate before the handoff is restored,
//! and the handoff to restore: [`plan`], for this crate's `start` and for
//! a kernel with an allocator of its own.

use super::*;

/// Pages of page tables boot may take from scratch before the heap: a
/// direct map of up to about 250 GiB of RAM in 2 MiB pages and the image in
/// 4 KiB pages.
const PAGE_TABLE_BUDGET: u64 = 256;

/// Checks where the handoff blob at `blob` lies, parses it through the
/// boot identity map (under 4 GiB), and returns the scratch areas it names:
/// where this kernel may allocate before it has restored anything. They
/// must hold, clear of `keep`, what boot takes there, as the frame
/// allocator would place it (`Scratch::holds_early`): page tables (a
/// budget of [`PAGE_TABLE_BUDGET`] pages, first fit), then a 2 MiB aligned
/// run of `heap_bytes`. A kernel that could not boot in them boots cold
/// instead.
///
/// # Safety
/// As for [`plan`].
unsafe fn handed_scratch(
    blob: Range,
    ram: &[Range],
    keep: &[Range],
    heap_bytes: u64,
    align: u64,
) -> Result<Scratch, kho::handoff::HandoffError> {
    use kho::abi::handoff::MAX_BLOB;
    use kho::handoff::{Handoff, HandoffError};
    let len = blob.len();
    if len == 0 || len > MAX_BLOB as u64 || blob.end > 1 << 32 {
        return Err(HandoffError::BadBlobPlace { range: blob });
    }
    if !ram.iter().any(|r| r.covers(blob)) {
        return Err(HandoffError::BadBlobPlace { range: blob });
    }
    // SAFETY: the blob lies in RAM below 4 GiB (checked), which the boot
    // page tables identity map (promise 1); nothing has been allocated
    // yet, so nothing writes it (promise 2).
    let bytes = unsafe { core::slice::from_raw_parts(blob.start as *const u8, len as usize) };
    let scratch = Handoff::parse(bytes, ram)?.scratch;
    scratch
        .holds_early(keep, PAGE_TABLE_BUDGET, heap_bytes, align)
        .map_err(HandoffError::Scratch)?;
    Ok(scratch)
}

/// Parses the handoff blob at `blob` again through the direct map and
/// restores it into `out`: everything handed over validated and reserved,
/// or an error and nothing reserved. Runs once the page tables and the heap
/// are up, both in scratch, which holds nothing handed over.
pub(super) fn restore_handoff(
    mem: &crate::glue::KernelMem,
    blob: Range,
    ram: &[Range],
    out: &mut Reserved,
) -> Result<HandoffInfo, kho::handoff::HandoffError> {
    use kho::handoff::Handoff;
    let restore_tsc = crate::tsc::now();
    // SAFETY: `handed_scratch` checked the blob lies in RAM, which the
    // direct map covers; it is a boot module, reserved from both pools, so
    // nothing allocated writes it.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            paging::phys_to_virt(blob.start).as_ptr::<u8>(),
            blob.len() as usize,
        )
    };
    let h = Handoff::parse(bytes, ram)?;
    let r = kho::handoff::restore(mem, &h, blob, ram, out)?;
    Ok(HandoffInfo {
        blob,
        hop: h.hop,
        stamps: h.stamps,
        restore_tsc,
        reserved_tsc: crate::tsc::now(),
        preserved: out.preserved,
        metadata: out.metadata,
        ranges: out.range_count(),
        chain_pages: r.tracker.chain_pages,
    })
}

/// What boot decides from the loader's parameters alone, before anything
/// is allocated ([`plan`]).
#[derive(Clone, Debug)]
pub struct Plan {
    /// The RAM ranges of the memory map.
    pub ram: heapless::Vec<Range, { pvh::MAX_MEMMAP }>,
    /// Memory never to hand out: real-mode memory, the image, its extra
    /// segment, every boot module (the handoff blob among them).
    pub keep: heapless::Vec<Range, { 3 + pvh::MAX_MODULES }>,
    /// Where the kernel may allocate before the handoff is restored: the
    /// previous kernel's scratch areas, or new ones around the image at a
    /// cold boot.
    pub scratch: Scratch,
    /// The handoff blob to restore, if a previous kernel left one this
    /// kernel can boot from.
    pub blob: Option<Range>,
    /// Why a handoff blob was present but refused (the boot is then cold).
    pub refused: Option<kho::handoff::HandoffError>,
}

/// The first step of boot, for [`start`] and for a kernel that brings its
/// own frame allocator, page tables and heap: what to keep, where to
/// allocate early, and the handoff to restore. `image` is where the
/// kernel image lies; `early_bytes` (aligned to `early_align`) is what the
/// kernel will allocate in scratch before its restore, besides up to 256
/// pages of page tables (`start` passes its heap).
///
/// Such a kernel then gives its allocator `scratch` minus `keep` only,
/// sets up its page tables and heap there, restores the handoff with
/// [`kho::Incoming::from_phys`] (at `blob`, into its own
/// [`kho::reserve::Reserve`]), and only then gives its allocator the rest
/// of `ram` minus `keep`, `scratch` and what the restore reserved: the
/// order [`start`] follows with this crate's allocator (docs/embedding.md).
///
/// # Safety
/// 1. The first 4 GiB are identity mapped (the boot page tables): the
///    blob and the image module are read there.
/// 2. Nothing has been allocated or written outside the image yet, so the
///    boot modules hold what the loader put there.
pub unsafe fn plan(
    params: &BootParams,
    image: Range,
    early_bytes: u64,
    early_align: u64,
) -> Result<Plan, BootError> {
    let ram: heapless::Vec<Range, { pvh::MAX_MEMMAP }> = params.ram().collect();
    // Never hand out: real-mode memory, the kernel image, the modules.
    let mut keep: heapless::Vec<Range, { 3 + pvh::MAX_MODULES }> = heapless::Vec::new();
    let _ = keep.push(Range::new(0, 1 << 20));
    let _ = keep.push(image);
    if let Some(extra) = extra_segment(params) {
        let _ = keep.push(extra);
    }
    for m in &params.modules {
        let _ = keep.push(m.range);
    }
    // A kernel started by kexec learns its scratch areas from the handoff
    // blob; until it has restored the handoff it allocates only there
    // (page tables, heap), where the previous kernel preserved nothing.
    // A blob that does not parse, or names scratch this kernel cannot boot
    // in, is refused: the kernel boots cold, saying why.
    let mut refused = None;
    let tagged = params.module_tagged(kho::abi::handoff::HANDOFF_MODULE);
    // SAFETY: promises 1 and 2, passed on.
    let handed =
        tagged.map(|b| unsafe { handed_scratch(b, &ram, &keep, early_bytes, early_align) });
    let (scratch, blob) = match handed {
        Some(Ok(scratch)) => (scratch, tagged),
        other => {
            if let Some(Err(e)) = other {
                refused = Some(e);
            }
            // Scratch at cold boot: around the kernel image.
            // SAFETY: promises 1 and 2, passed on.
            let reserve = unsafe { scratch_reserve(params, &ram, image, early_bytes) };
            let scratch = kho::scratch::cold_boot(&ram, image, 1 << 20, reserve)
                .map_err(BootError::Scratch)?;
            (scratch, None)
        }
    };
    Ok(Plan {
        ram,
        keep,
        scratch,
        blob,
        refused,
    })
}

/// How far past the image cold-boot scratch reaches: an eighth of RAM, or
/// `kho.scratch=MIB` from the command line; never less than the heap plus
/// 16 MiB (page tables, boot structures, a larger next image).
///
/// # Safety
/// As for [`plan`] (the image module is read in place).
unsafe fn scratch_reserve(
    params: &BootParams,
    ram: &[Range],
    image: Range,
    early_bytes: u64,
) -> u64 {
    let mut early = early_bytes + (16 << 20);
    // A next image given at boot whose segments reach further than that:
    // scratch covers them too, with the same room past them (the next
    // kernel is loaded there and allocates there early).
    if let Some(next) = next_image_end(params) {
        early = early.max(next.saturating_sub(image.end) + early_bytes + (16 << 20));
    }
    let asked = params
        .cmdline_value("kho.scratch")
        .and_then(|v| v.parse::<u64>().ok())
        .map(|mib| mib.saturating_mul(1 << 20));
    kho::scratch::cold_boot_reserve(ram, image, early, asked)
}

/// Where the segments of the image module (the next kernel) end, if it
/// is a loadable image below 4 GiB.
fn next_image_end(params: &BootParams) -> Option<u64> {
    let m = params.image_module()?;
    if m.end > 1 << 32 {
        return None;
    }
    // SAFETY: boot runs on tables that identity map the first 4 GiB; the
    // module is RAM the loader filled, and nothing writes it yet.
    let bytes = unsafe { core::slice::from_raw_parts(m.start as *const u8, m.len() as usize) };
    kho::elf::Image::parse(bytes).ok().map(|i| i.span().end)
}
