//! The Rust side of boot: from `pvh_start` to the kernel's main function.

use crate::boot::{self, ImageLayout};
use crate::exit::{ExitCode, exit_qemu};
use crate::heap::{self, HeapInfo};
use crate::pvh::{self, BootParams};
use crate::{frames, gdt, kprintln, paging, trap};
use core::fmt::Display;
use kho::ranges::Range;
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
}

static BOOT: Once<BootInfo> = Once::new();

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

    for r in params.ram() {
        frames::add_free(r).unwrap_or_else(|e| die("memory map", e));
    }
    // Never hand out: real-mode memory, the kernel image, the loader's module.
    let mut keep = [
        Some(Range::new(0, 1 << 20)),
        Some(Range::new(image.start, image.end)),
        params.module,
    ];
    for r in keep.iter_mut().filter_map(Option::take) {
        frames::reserve(r).unwrap_or_else(|e| die("reserving boot memory", e));
    }
    // SAFETY: called once, on the boot tables, with only free RAM in the
    // frame allocator.
    unsafe { paging::init(&params, &image) }.unwrap_or_else(|e| die("page tables", e));
    // SAFETY: called once, the direct map is live.
    let heap = unsafe { heap::init(heap_size(&params)) }
        .unwrap_or_else(|| die("heap", "no contiguous run of frames large enough"));
    let boot = BOOT.call_once(|| BootInfo {
        params,
        image,
        heap,
    });
    kho_kernel_main(boot)
}
