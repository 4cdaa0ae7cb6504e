//! The kho kernel for QEMU: `kho.mode=demo` (default) or `kho.mode=test`.
#![no_std]
#![no_main]
// Memory is reached through the token (`kho_x86_64::glue::KernelMem`);
// the one exception is named where it is (a test that faults on purpose).
#![deny(unsafe_code)]

extern crate alloc;

mod bench_memfd;
mod blocks;
mod demo;
mod demo_abi;
mod files;
mod handover;
mod mem;
mod pool;
mod tests;

use kho_qemu_rt::exit::{ExitCode, exit_qemu};
use kho_qemu_rt::ktest;
use kho_x86_64::{BootInfo, kprintln};

kho_x86_64::entry!(
    main = kernel_main,
    heap = mem::HEAP,
    fail = boot_failed,
    trap = kho_qemu_rt::on_trap
);

/// A boot that could not finish: say why and stop QEMU.
fn boot_failed(e: kho_x86_64::start::BootError) -> ! {
    kprintln!("{e}");
    exit_qemu(ExitCode::Failure)
}

/// The kernel's main function, called once boot has finished, with the
/// one token to RAM.
fn kernel_main(boot: &'static BootInfo, mem: kho_x86_64::glue::KernelMem) -> ! {
    mem::install(mem);
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
