//! The Rust side of boot: from `pvh_start` to the kernel's main function.

use crate::boot::{self, ImageLayout};
use crate::frames::Reserved;
use crate::heap::{self, HeapInfo, KernelHeap};
use crate::pvh::{self, BootParams};
use crate::{frames, gdt, kprintln, paging, trap};
use core::fmt;
use kho::ranges::Range;
use kho::scratch::Scratch;
use spin::Once;

mod plan;
use plan::restore_handoff;
pub use plan::{Plan, plan};

/// What a kernel started by kexec found and reserved.
#[derive(Clone, Copy, Debug)]
pub struct HandoffInfo {
    /// Where the handoff blob lies (reserved).
    pub blob: Range,
    /// The blob's hop count (kexecs before the one that started us).
    pub hop: u32,
    /// The previous kernel's TSC readings.
    pub stamps: kho::abi::handoff::Stamps,
    /// TSC when the restore began (page tables and heap up, in scratch):
    /// what came before is the same work as a cold boot's.
    pub restore_tsc: u64,
    /// TSC when everything handed over was reserved.
    pub reserved_tsc: u64,
    /// Bytes reserved as preserved memory.
    pub preserved: u64,
    /// Bytes reserved as handoff metadata (blob, tracker chain).
    pub metadata: u64,
    /// Ranges reserved.
    pub ranges: usize,
    /// Tracker chain pages read.
    pub chain_pages: u32,
}

/// What the kernel knows after boot, handed to its main function.
#[derive(Debug)]
pub struct BootInfo {
    /// The loader's parameters, copied.
    pub params: BootParams,
    /// Where the kernel image sits.
    pub image: ImageLayout,
    /// Where the heap sits.
    pub heap: HeapInfo,
    /// This boot's scratch areas.
    pub scratch: Scratch,
    /// TSC at the first instruction of Rust code.
    pub entry_tsc: u64,
    /// TSC when the general pool opened (restore done, or cold boot ready).
    pub open_tsc: u64,
    /// The handoff this kernel restored, if it was started by kexec.
    pub handoff: Option<HandoffInfo>,
    /// Why a handoff module was present but refused (the kernel then booted
    /// cold).
    pub refused: Option<kho::handoff::HandoffError>,
}

impl HandoffInfo {
    /// The blob's bytes, in place: a boot module, reserved at boot, which
    /// nothing writes ([`module_bytes`]). `None` only before
    /// boot finished.
    pub fn blob_bytes(&self) -> Option<&'static [u8]> {
        module_bytes(self.blob)
    }
}

impl BootInfo {
    /// The front door's incoming side for the handoff boot restored, if
    /// there was one: its claims over exactly the ranges boot reserved as
    /// preserved ([`kho::Incoming::from_restored`]; the blob is not walked
    /// a second time). Register handlers on it, take objects, finish.
    pub fn incoming(
        &self,
        mem: &crate::glue::KernelMem,
    ) -> Option<Result<kho::Incoming<crate::glue::KernelMem>, kho::Error>> {
        let h = self.handoff?;
        let preserved: alloc::vec::Vec<Range> = with_reserved(|r| r.preserved_ranges().to_vec());
        Some(kho::Incoming::from_restored(mem, h.blob, ram(), preserved))
    }
}

static BOOT: Once<BootInfo> = Once::new();
static SCRATCH: Once<Scratch> = Once::new();
static RAM: Once<heapless::Vec<Range, { pvh::MAX_MEMMAP }>> = Once::new();
static RESERVED: spin::Mutex<Reserved> = spin::Mutex::new(Reserved::new());
/// The ranges read in place (modules, the extra segment), for the token.
static RUST: Once<heapless::Vec<Range, { 2 + paging::MAX_BOOT_TABLE_RUNS }>> = Once::new();
static SHARED: Once<heapless::Vec<Range, { 2 + pvh::MAX_MODULES }>> = Once::new();

/// The ranges reserved from the handoff at boot (empty on a cold boot).
pub fn with_reserved<T>(f: impl FnOnce(&Reserved) -> T) -> T {
    f(&RESERVED.lock())
}

/// Masks every line of both legacy 8259 interrupt controllers: this kernel
/// never takes interrupts, so no line should stay pending for it (nor for
/// a kernel it kexecs into, which starts with them masked too).
fn mask_legacy_pic() {
    use x86_64::instructions::port::Port;
    // SAFETY: the 8259 data ports; writing 0xff masks every line, which
    // only stops interrupts this kernel never takes.
    unsafe {
        Port::<u8>::new(0x21).write(0xff);
        Port::<u8>::new(0xa1).write(0xff);
    }
}

/// What boot found, once the kernel runs.
pub fn boot_info() -> Option<&'static BootInfo> {
    BOOT.get()
}

/// The RAM ranges of the memory map, once boot has read it (empty before).
pub fn ram() -> &'static [Range] {
    RAM.get().map(|v| v.as_slice()).unwrap_or(&[])
}

/// This boot's scratch areas, once chosen.
pub fn scratch() -> Option<&'static Scratch> {
    SCRATCH.get()
}

/// Memory the image occupies beyond what its linker symbols say, named
/// on the command line as `kho.extra=ADDR:BYTES` (hex or decimal): kept
/// like the image itself (for an image with a segment of its own that
/// this kernel does not link, such as the large test image that
/// `./x.py test` builds). Checked against RAM; `None` if absent or bad.
pub fn extra_segment(params: &BootParams) -> Option<Range> {
    let v = params.cmdline_value("kho.extra")?;
    let (a, b) = v.split_once(':')?;
    let num = |t: &str| match t.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => t.parse::<u64>().ok(),
    };
    let (start, len) = (num(a)?, num(b)?);
    let r = Range::new(start, start.checked_add(len)?);
    (len > 0 && params.ram().any(|m| m.covers(r))).then_some(r)
}

/// The bytes of this boot's extra segment ([`extra_segment`]), through
/// the direct map: kept from every pool at boot, like the image, so
/// nothing allocates or writes it. `None` before boot finished, or without
/// one.
pub fn extra_segment_bytes() -> Option<&'static [u8]> {
    let r = extra_segment(&boot_info()?.params)?;
    let len = usize::try_from(r.len()).ok()?;
    // SAFETY: `r` is RAM (checked by `extra_segment`), so the direct map
    // covers it; boot kept it from every pool, so nothing allocates or
    // writes it for the kernel's life, and the slice may be 'static.
    Some(unsafe { core::slice::from_raw_parts(paging::phys_to_virt(r.start).as_ptr::<u8>(), len) })
}

/// The bytes of `r`, if it lies inside one of this boot's modules (RAM the
/// loader handed over, reserved from every pool at boot, which nothing
/// writes), through the direct map; `None` for any other range (or before
/// boot finished), whose bytes something may be writing.
pub fn module_bytes(r: Range) -> Option<&'static [u8]> {
    let boot = boot_info()?;
    if r.is_empty() || !boot.params.modules.iter().any(|m| m.range.covers(r)) {
        return None;
    }
    // SAFETY: `r` lies inside a boot module: RAM the loader handed us
    // (so the direct map covers it), reserved from every pool at boot, so
    // nothing allocates or writes it for the kernel's life.
    Some(unsafe {
        core::slice::from_raw_parts(
            paging::phys_to_virt(r.start).as_ptr::<u8>(),
            r.len() as usize,
        )
    })
}

/// Why boot could not finish (the kernel's `fail` hook gets it).
#[derive(Clone, Copy, Debug)]
pub enum BootError {
    /// The loader's PVH start info is unreadable.
    StartInfo(crate::pvh::PvhError),
    /// No scratch area fits this machine.
    Scratch(kho::scratch::ScratchError),
    /// A range could not be given to the frame allocator.
    Frames(&'static str, kho::ranges::RangeError),
    /// The page tables could not be built.
    Paging(paging::PagingError),
    /// No contiguous run of frames in scratch holds the heap.
    Heap,
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::StartInfo(e) => write!(f, "boot: PVH start info: {e}"),
            BootError::Scratch(e) => write!(f, "boot: choosing scratch areas: {e}"),
            BootError::Frames(what, e) => write!(f, "boot: {what}: {e}"),
            BootError::Paging(e) => write!(f, "boot: page tables: {e}"),
            BootError::Heap => {
                f.write_str("boot: heap: no contiguous run of frames large enough in scratch")
            }
        }
    }
}

impl core::error::Error for BootError {}

/// Heap size: an eighth of RAM, between 4 and 64 MiB.
fn heap_size(params: &BootParams) -> u64 {
    // `kho.heap=MIB`: the kernel's own choice (1 MiB to 1 TiB); else an
    // eighth of RAM, 4 to 64 MiB.
    if let Some(mib) = params
        .cmdline_value("kho.heap")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|m| (1..=1 << 20).contains(m))
    {
        return mib << 20;
    }
    let ram: u64 = params.ram().map(|r| r.len()).sum();
    (ram / 8).clamp(4 << 20, 64 << 20)
}

/// Declares what the kernel reads: its `kho` reads note
/// ([`kho::luo::ReadsNote`]) built at compile time from `lists` (a
/// `&[&[kho::luo::Version]]`: the read lists its handlers are registered
/// with, then its other formats), placed in `.note.kho`, which
/// `arch/x86_64/linker.ld` keeps in the image's `PT_NOTE` segment. A
/// previous kernel reads it before the kexec (preflight).
///
/// ```ignore
/// const LISTS: &[&[kho::luo::Version]] = &[
///     &[kho::memfd::V2, kho::memfd::V1],
///     &[kho::luo::Version::new(kho::luo::LUO_VERSION)],
/// ];
/// kho_x86_64::reads_note!(READS_NOTE, LISTS); // a static of that name
/// ```
#[macro_export]
macro_rules! reads_note {
    ($vis:vis $name:ident, $lists:expr) => {
        /// This kernel's `kho` reads note.
        #[used]
        // SAFETY: `.note.kho` holds nothing else; the linker script places
        // it in the note segment, where a loader only reads it.
        #[unsafe(link_section = ".note.kho")]
        $vis static $name: kho::luo::ReadsNote<{ kho::luo::reads_len($lists) }> =
            kho::luo::ReadsNote::of($lists);
    };
}

/// Defines the kernel's entry: the PVH note and `pvh_start` (which the
/// kernel's linker script names as `ENTRY`), and the Rust function it
/// calls, which boots ([`crate::start::start`]) and then runs the kernel.
///
/// ```ignore
/// #[global_allocator]
/// static HEAP: kho_x86_64::heap::KernelHeap = kho_x86_64::heap::KernelHeap::new();
///
/// kho_x86_64::entry!(main = kernel_main, heap = HEAP, fail = boot_failed, trap = on_trap);
///
/// // `mem` is the one token to RAM (not `Copy`): pass `&mut mem` down.
/// fn kernel_main(boot: &'static kho_x86_64::BootInfo, mem: kho_x86_64::glue::KernelMem) -> ! { /* ... */ }
/// fn boot_failed(e: kho_x86_64::start::BootError) -> ! { /* report, stop */ }
/// fn on_trap(t: &kho_x86_64::trap::Trap) -> ! { /* report, stop */ }
/// ```
///
/// `heap` is a static [`crate::heap::KernelHeap`] (the kernel's global
/// allocator, filled at boot in scratch); `fail` gets a boot that could not
/// finish; `trap` is where every CPU exception ends.
#[macro_export]
macro_rules! entry {
    (main = $main:path, heap = $heap:path, fail = $fail:path, trap = $trap:path $(,)?) => {
        core::arch::global_asm!(
            $crate::__pvh_boot_asm!(),
            stack_size = const $crate::boot::BOOT_STACK_SIZE,
            options(att_syntax)
        );

        /// Called by `pvh_start` in long mode on the boot stack.
        #[unsafe(no_mangle)]
        extern "C" fn kho_x86_64_start(start_info: u64) -> ! {
            // SAFETY: `pvh_start` calls this once, on the boot page tables
            // (which identity map 4 GiB), with the loader's start info.
            match unsafe { $crate::start::start(start_info, &$heap, $trap) } {
                Ok((boot, mem)) => $main(boot, mem),
                Err(e) => $fail(e),
            }
        }
    };
}

/// Boots: serial console, GDT, IDT (CPU exceptions end in `trap`), boot
/// parameters, scratch, frame allocator, page tables, `heap`, and the
/// handoff if this kernel was started by kexec (restored, or refused and a
/// cold boot). Returns what boot found and the one token to RAM
/// ([`crate::glue::KernelMem`], made here once). [`crate::entry!`] calls
/// it; a kernel with its own entry may too.
///
/// # Safety
/// 1. Call once, from the PVH entry, in long mode on the boot page tables
///    (which identity map the first 4 GiB) and the boot stack.
/// 2. `start_info` is the physical address the loader passed in `%ebx`.
/// 3. Nothing has allocated yet: every frame but the image and the boot
///    modules is free.
pub unsafe fn start(
    start_info: u64,
    heap: &'static KernelHeap,
    trap: fn(&trap::Trap) -> !,
) -> Result<(&'static BootInfo, crate::glue::KernelMem), BootError> {
    let entry_tsc = crate::tsc::now();
    mask_legacy_pic();
    crate::serial::init();
    gdt::init();
    trap::init(Some(trap));
    // SAFETY: we are on the boot page tables, which identity map 4 GiB, and
    // `start_info` is what the loader passed in %ebx (promises 1 and 2).
    let params = unsafe { pvh::read_boot_params(start_info) }.map_err(BootError::StartInfo)?;
    let image = boot::image_layout();
    let image_range = Range::new(image.start, image.end);

    // SAFETY: on the boot tables, nothing allocated yet (promises 1 and 3).
    let Plan {
        ram,
        keep,
        scratch,
        blob,
        mut refused,
    } = unsafe { plan(&params, image_range, heap_size(&params), heap::ALIGN) }?;
    let ram = RAM.call_once(|| ram);
    if let Some(e) = &refused {
        kprintln!("kho: handoff refused, booting cold: {e}");
    }
    // Until the general pool opens, every allocation comes from scratch.
    let scratch = *SCRATCH.call_once(|| scratch);
    for &a in scratch.areas() {
        frames::add_scratch(a).map_err(|e| BootError::Frames("scratch", e))?;
    }
    for &r in &keep {
        frames::reserve(r).map_err(|e| BootError::Frames("reserving boot memory", e))?;
    }
    // SAFETY: called once, on the boot tables, with only free RAM in the
    // frame allocator.
    unsafe { paging::init(&params, &image) }.map_err(BootError::Paging)?;
    // SAFETY: called once, the direct map is live.
    let heap = unsafe { heap::init(heap, heap_size(&params)) }.ok_or(BootError::Heap)?;
    let heap_range = Range::new(heap.phys, heap.phys + heap.size);
    frames::fix(heap_range).map_err(|e| BootError::Frames("fixing the heap", e))?;
    // Page tables from now on are heap pages; those made before are fixed
    // and refused by the token, as the heap is.
    paging::tables_on_heap();
    let tables = paging::boot_tables();
    for &t in &tables {
        frames::fix(t).map_err(|e| BootError::Frames("fixing the page tables", e))?;
    }
    let rust = RUST.call_once(|| {
        let mut v: heapless::Vec<Range, { 2 + paging::MAX_BOOT_TABLE_RUNS }> = heapless::Vec::new();
        let _ = v.push(image_range);
        let _ = v.push(heap_range);
        for &t in &tables {
            let _ = v.push(t);
        }
        v
    });
    // What the token never hands out: the image and the heap (Rust holds
    // references into both) and the page tables are neither read nor
    // written through it; the modules and the extra segment (read in
    // place as `&'static [u8]`) are not written.
    let shared = SHARED.call_once(|| keep.iter().skip(1).copied().collect());
    // SAFETY: the direct map is live and maps all of RAM, read and write,
    // for good (`paging::init`); RAM is ordinary memory; `rust` (the image,
    // the heap, the boot page tables) is all the memory that Rust code
    // holds references into or that the CPU reads as page tables outside
    // the heap, and `shared` every range read in place by `module_bytes`
    // and `extra_segment_bytes`.
    let mem = unsafe { crate::glue::KernelMem::new(ram, rust, shared) };
    // Now the handoff: every preserved range validated and reserved, into
    // lists on the heap (so their number has no fixed limit), or nothing
    // reserved and a cold boot.
    let mut reserved = RESERVED.lock();
    let mut handoff = None;
    if let Some(b) = blob {
        match restore_handoff(&mem, b, ram, &mut reserved) {
            Ok(info) => handoff = Some(info),
            Err(e) => {
                kprintln!("kho: handoff refused, booting cold: {e}");
                refused = Some(e);
            }
        }
    }
    // The rest of RAM opens only now, minus what the handoff reserved.
    frames::open_general(params.ram(), scratch.areas(), &keep, &reserved)
        .map_err(|e| BootError::Frames("opening RAM", e))?;
    drop(reserved);
    let open_tsc = crate::tsc::now();
    let boot = BOOT.call_once(|| BootInfo {
        params,
        image,
        heap,
        scratch,
        entry_tsc,
        open_tsc,
        handoff,
        refused,
    });
    // The one token to RAM, for the kernel's main, by value.
    Ok((boot, mem))
}
