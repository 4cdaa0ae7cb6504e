//! The kho kernel for QEMU: `kho.mode=demo` (default) or `kho.mode=test`.
#![no_std]
#![no_main]

extern crate alloc;

mod bench_memfd;
mod demo;
mod files;
mod tests;

use kho_x86_64::exit::{ExitCode, exit_qemu};
use kho_x86_64::{BootInfo, kprintln, ktest};

/// The kernel's main function, called by `kho_x86_64::start` after boot.
#[unsafe(no_mangle)]
pub fn kho_kernel_main(boot: &'static BootInfo) -> ! {
    kprintln!("kho: kernel up, command line: \"{}\"", boot.params.cmdline);
    match boot.params.cmdline_value("kho.mode").unwrap_or("demo") {
        "demo" => demo::run(boot),
        "test" => ktest::run(boot.params.cmdline_value("kho.harness")),
        other => {
            kprintln!("kho: unknown kho.mode={other} (expected demo or test)");
            exit_qemu(ExitCode::Failure)
        }
    }
}
