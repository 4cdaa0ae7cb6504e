//! x86_64 support for kernels that embed `kho`: boot, memory, traps, tests.
//!
//! A kernel binary links this crate, uses `arch/x86_64/linker.ld`, and
//! defines `#[unsafe(no_mangle)] fn kho_kernel_main(&'static BootInfo) -> !`.
//! Boot goes: [`boot`] (PVH entry, long mode) -> [`start`] (serial, GDT,
//! IDT, boot parameters, frame allocator, page tables, heap) -> the kernel.
#![no_std]

extern crate alloc;

pub mod boot;
pub mod exit;
pub mod frames;
pub mod gdt;
pub mod glue;
pub mod heap;
pub mod kexec;
pub mod ktest;
pub mod paging;
pub mod pvh;
pub mod serial;
pub mod start;
pub mod trap;
pub mod tsc;

pub use start::BootInfo;
