//! This kernel's memory: its heap and its kho platform.

use kho_qemu_rt::exit::{ExitCode, exit_qemu};
use kho_x86_64::glue::KernelMem;
use kho_x86_64::heap::KernelHeap;
use kho_x86_64::kprintln;
use spin::{Mutex, MutexGuard, Once};

/// The kernel heap, filled at boot in scratch.
#[global_allocator]
pub static HEAP: KernelHeap = KernelHeap::new();

/// The one token to RAM, which boot handed to main: whoever holds the
/// guard is the only writer of frames.
static MEM: Once<Mutex<KernelMem>> = Once::new();

/// Keeps the token boot handed to main (once).
pub fn install(mem: KernelMem) {
    MEM.call_once(|| Mutex::new(mem));
}

/// The kho platform over this kernel's RAM, for as long as the guard
/// lives. Taken twice at once is a bug of this kernel (two writers of RAM):
/// it stops with a message instead of waiting forever.
pub fn kmem() -> MutexGuard<'static, KernelMem> {
    let Some(m) = MEM.get() else {
        kprintln!("kho: memory used before boot finished");
        exit_qemu(ExitCode::Failure)
    };
    match m.try_lock() {
        Some(g) => g,
        None => {
            kprintln!("kho: the memory token was taken twice (nested kmem())");
            exit_qemu(ExitCode::Failure)
        }
    }
}

/// Whether the command line says `NAME=1`.
pub fn cmdline_flag(name: &str) -> bool {
    kho_x86_64::start::boot_info().is_some_and(|b| b.params.cmdline_value(name) == Some("1"))
}
