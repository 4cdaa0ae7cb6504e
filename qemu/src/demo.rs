//! The demo that `./x.py run` boots: show what the kernel found and succeed.

use kho_x86_64::exit::{ExitCode, exit_qemu};
use kho_x86_64::{BootInfo, frames, heap, kprintln, paging};

/// Prints the memory map, the allocator state and a success line, then exits.
pub fn run(boot: &'static BootInfo) -> ! {
    let p = &boot.params;
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
    let ram: u64 = p.ram().map(|r| r.len()).sum();
    let img = &boot.image;
    for a in boot.scratch.areas() {
        kprintln!(
            "scratch area [{:#x}, {:#x}) {} MiB",
            a.start,
            a.end,
            a.len() >> 20
        );
    }
    let (free_scratch, free_general) = frames::free_bytes();
    kprintln!(
        "kernel image [{:#x}, {:#x}), RAM {} MiB, free {} MiB (+{} MiB scratch), heap {} MiB at {:#x}, direct map at {:#x}",
        img.start,
        img.end,
        ram >> 20,
        free_general >> 20,
        free_scratch >> 20,
        boot.heap.size >> 20,
        boot.heap.phys,
        paging::DIRECT_MAP_BASE
    );
    if let Some(m) = p.module {
        kprintln!("module [{:#x}, {:#x})", m.start, m.end);
    }
    let (used, free) = heap::usage();
    kprintln!("heap: {used} bytes used, {free} free");
    kprintln!("kho demo: boot OK");
    exit_qemu(ExitCode::Success)
}
