//! The Rust side of boot: from `pvh_start` to the kernel's main function.

use crate::boot::{self, ImageLayout};
use crate::exit::{ExitCode, exit_qemu};
use crate::heap::{self, HeapInfo};
use crate::pvh::{self, BootParams};
use crate::{frames, gdt, kprintln, paging, trap};
use core::fmt::Display;
use kho::ranges::Range;
use kho::scratch::Scratch;
use spin::Once;

/// What the kernel knows after boot, handed to `kho_kernel_main`.
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
}

static BOOT: Once<BootInfo> = Once::new();
static SCRATCH: Once<Scratch> = Once::new();
static RAM: Once<heapless::Vec<Range, { pvh::MAX_MEMMAP }>> = Once::new();

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

/// Bytes the scratch area must hold past the kernel image: the heap, page
/// tables and boot structures of this kernel, and room for a larger next
/// kernel image.
fn scratch_reserve(params: &BootParams) -> u64 {
    heap_size(params) + (16 << 20)
}

unsafe extern "Rust" {
    /// The kernel's main function, defined by the kernel binary with
    /// `#[unsafe(no_mangle)]`.
    safe fn kho_kernel_main(boot: &'static BootInfo) -> !;
}

fn die(what: &str, err: impl Display) -> ! {
    kprintln!("boot: {what}: {err}");
    exit_qemu(ExitCode::Failure)
}

/// Heap size: an eighth of RAM, between 4 and 64 MiB.
fn heap_size(params: &BootParams) -> u64 {
    let ram: u64 = params.ram().map(|r| r.len()).sum();
    (ram / 8).clamp(4 << 20, 64 << 20)
}

/// Called by `pvh_start` in long mode on the boot stack.
#[unsafe(no_mangle)]
extern "C" fn kho_x86_64_start(start_info: u64) -> ! {
    crate::serial::init();
    gdt::init();
    trap::init();
    // SAFETY: we are on the boot page tables, which identity map 4 GiB, and
    // `start_info` is what the loader passed in %ebx.
    let params =
        unsafe { pvh::read_boot_params(start_info) }.unwrap_or_else(|e| die("PVH start info", e));
    let image = boot::image_layout();

    // Scratch: chosen at cold boot around the kernel image (a kernel booted
    // by kexec takes them from the handoff instead). Until restore, every
    // allocation comes from scratch.
    let ram = RAM.call_once(|| params.ram().collect());
    let image_range = Range::new(image.start, image.end);
    let scratch = kho::scratch::cold_boot(ram, image_range, 1 << 20, scratch_reserve(&params))
        .unwrap_or_else(|e| die("choosing scratch areas", e));
    let scratch = *SCRATCH.call_once(|| scratch);
    for &a in scratch.areas() {
        frames::add_scratch(a).unwrap_or_else(|e| die("scratch", e));
    }
    // Never hand out: real-mode memory, the kernel image, the loader's module.
    let low = Range::new(0, 1 << 20);
    let keep: heapless::Vec<Range, 3> = [Some(low), Some(image_range), params.module]
        .into_iter()
        .flatten()
        .collect();
    for &r in &keep {
        frames::reserve(r).unwrap_or_else(|e| die("reserving boot memory", e));
    }
    // SAFETY: called once, on the boot tables, with only free RAM in the
    // frame allocator.
    unsafe { paging::init(&params, &image) }.unwrap_or_else(|e| die("page tables", e));
    // SAFETY: called once, the direct map is live.
    let heap = unsafe { heap::init(heap_size(&params)) }.unwrap_or_else(|| {
        die(
            "heap",
            "no contiguous run of frames large enough in scratch",
        )
    });
    // Restore point: a kernel started by kexec reserves every preserved
    // range here, before anything is allocated outside scratch. On a cold
    // boot nothing is preserved; open the rest of RAM.
    frames::open_general(params.ram(), scratch.areas(), &keep)
        .unwrap_or_else(|e| die("opening RAM", e));
    let boot = BOOT.call_once(|| BootInfo {
        params,
        image,
        heap,
        scratch,
    });
    kho_kernel_main(boot)
}
