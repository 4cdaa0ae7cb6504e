//! `kho`: hand memory and state from one kernel to the next across a kexec.
//!
//! The crate is `no_std`, architecture-neutral and free of `unsafe` outside
//! the few places that touch physical memory through [`Platform`]-style
//! hooks. Everything here is plain data and algorithms over byte slices, so
//! the whole crate is built and tested on the host with `cargo test`.
//!
//! Modules:
//! - [`ranges`]: a fixed-capacity set of disjoint physical ranges, used as
//!   the boot-time frame allocator of the demo kernel.
//! - [`fdt`]: the FDT v17 writer and zero-copy reader of the handoff blob.
//! - [`scratch`]: scratch areas, chosen at cold boot and handed over.
//! - [`reserve`]: what the next kernel keeps, reported as one transaction.
//! - [`tracker`]: the preserved-page tracker, its handed-over form and the
//!   next kernel's validating reader.
//!
//! The crate uses `alloc` for the first kernel's in-memory tracker (with
//! `try_reserve`, so running out of memory is an error, never an abort);
//! everything the next kernel reads is walked in place without allocating.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod chain;
pub mod claims;
pub mod elf;
pub mod fdt;
pub mod handoff;
pub mod luo;
pub mod memfd;
pub mod platform;
pub mod ranges;
pub mod reserve;
pub mod scratch;
pub mod tracker;
pub mod vmalloc;

/// Size of the smallest page the crate deals with (4 KiB).
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
