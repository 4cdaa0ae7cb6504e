//! This kernel's memory: its heap and its kho platform.

use kho_qemu_rt::exit::{ExitCode, exit_qemu};
use kho_x86_64::glue::KernelMem;
use kho_x86_64::heap::KernelHeap;
use kho_x86_64::kprintln;

/// The kernel heap, filled at boot in scratch.
#[global_allocator]
pub static HEAP: KernelHeap = KernelHeap::new();

/// The kho platform over this kernel's RAM (made at boot).
pub fn kmem() -> KernelMem {
    match kho_x86_64::start::boot_info() {
        Some(b) => b.mem,
        None => {
            kprintln!("kho: memory used before boot finished");
            exit_qemu(ExitCode::Failure)
        }
    }
}

/// Whether the command line says `NAME=1`.
pub fn cmdline_flag(name: &str) -> bool {
    kho_x86_64::start::boot_info().is_some_and(|b| b.params.cmdline_value(name) == Some("1"))
}
