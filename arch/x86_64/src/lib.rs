//! x86_64 support for kernels that embed `kho`: boot, memory, traps, kexec.
//!
//! A library: it claims no global allocator, no panic handler and no entry
//! point. A kernel binary links it, uses `arch/x86_64/linker.ld` (or its
//! own script with the same sections), declares a
//! [`heap::KernelHeap`] as its `#[global_allocator]`, and invokes
//! [`entry!`] with its main function, its heap, a boot-failure hook and a
//! trap hook. Boot then goes: [`boot`] (PVH entry, long mode) ->
//! [`start::start`] (serial, GDT, IDT, boot parameters, frame allocator,
//! page tables, heap, the handoff) -> the kernel's main, which ends a live
//! update with one call, [`handover::hand_over`]. `qemu/minimal` is the
//! smallest such kernel.
#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod addr;
pub mod boot;
pub mod bootpages;
pub mod cpu;
pub mod frames;
pub mod gdt;
pub mod glue;
pub mod handover;
pub mod heap;
pub mod kexec;
pub mod paging;
pub mod pvh;
pub mod serial;
pub mod start;
pub mod trap;
pub mod tsc;

pub use start::BootInfo;
