//! The runtime of a kho kernel under QEMU: exit codes, panics and tests.
//!
//! `kho-x86_64` is a library that claims nothing global; this crate is
//! what a kernel binary that runs under QEMU adds on top: the
//! isa-debug-exit device ([`exit`]), the `#[panic_handler]` (cargo feature
//! `panic-handler`, on by default: turn it off to keep your own) and the
//! in-kernel test harness ([`ktest`]), whose trap hook the kernel passes to
//! `kho_x86_64::entry!` so that a CPU exception fails the running test.
//! Both kernels in the repo (`qemu/` and `qemu/minimal`) link it.
#![no_std]
// Unsafe code only where the hardware demands it, each module named: the
// exit device's port write, and the harness's register save and restore
// around a test (a trap resumes the runner, not the test).
#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod exit;
#[allow(unsafe_code)]
pub mod ktest;

pub use ktest::on_trap;
