//! `kho`: hand memory and state from one kernel to the next across a kexec.
//!
//! The crate is `no_std`, architecture-neutral and free of `unsafe`: it
//! reaches physical memory only through the platform traits an embedding
//! kernel implements ([`platform`]). Everything here is plain data and
//! algorithms over byte slices, built and tested on the host.
//!
//! # Layers
//!
//! What a kernel's own code uses is this build (no feature): the front
//! door and what handlers and objects are made of. An architecture layer
//! (boot, the kexec loader: `kho-x86_64` on x86_64) adds the hand-over
//! step with feature `arch`: writing the blob from a [`Frozen`] side,
//! restoring it at boot into an [`Incoming`] one, choosing scratch at a
//! cold boot, the FDT container (`fdt`), the blob (`handoff`), the restore
//! transaction (`reserve`) and the loader's checks. A kernel that links
//! an architecture layer gets `arch` through it and never names it;
//! `tests/public_api.txt` lists each layer (feature `tools` adds the
//! formats' codecs for inspectors, benchmarks and fuzz targets).
//!
//! Modules (with `arch`, `abi` holds every handed-over layout, one module
//! per format):
//! - The front door: [`Outgoing`] and the [`Frozen`] side it becomes,
//!   [`Incoming`] and the [`Restored`] side it becomes, typed by their
//!   objects; [`Error`] and [`ErrorKind`] (one error type, and what a
//!   caller can do about it).
//! - [`luo`]: the orchestrator's handler API: families, versions, payloads.
//! - [`memfd`], [`vmalloc`]: the objects kho hands over for you, a file of
//!   folios and a virtually contiguous buffer (on the page-chain framing
//!   of `chain`, public with `arch`).
//! - [`tracker`], [`claims`]: where a handler preserves pages, and where
//!   its reader adopts them in the next kernel.
//! - [`platform`]: what the kernel provides (frame access, a frame
//!   allocator, scattered frames mapped contiguously) and the restore rule.
//! - [`ranges`], [`scratch`], [`csum`], [`elf`]: physical ranges; scratch
//!   areas, memory that never holds preserved pages; the checksum of
//!   handed-over metadata; the next kernel image's reads list.
//!
//! # Example: one file across a kexec
//!
//! The first kernel preserves a memfd in a session and freezes; its
//! architecture layer hands the frozen side over and kexecs. The next
//! kernel gets the incoming side from its architecture layer at boot and
//! takes the file back. `P` is the kernel's platform type
//! (`docs/embedding.md` says what it implements; `qemu/minimal` is a whole
//! kernel on `kho-x86_64`, `examples/embed.rs` one with its own hand-over).
//!
//! ```
//! use kho::luo::{Platform, ReadList};
//! use kho::memfd::{Memfd, MemfdHandler};
//! use kho::scratch::Scratch;
//! use kho::{Freeze, Frozen, Incoming, Outgoing};
//!
//! /// First kernel: `scratch` is what its boot chose (or what the last
//! /// handoff handed on), `next_reads` the next image's reads list
//! /// (`kho::elf::Image::read_list`). The architecture layer hands the
//! /// frozen side over (`kho_x86_64::handover::hand_over`).
//! fn before_kexec<P: Platform>(
//!     p: &mut P,
//!     scratch: Scratch,
//!     next_reads: &ReadList<'_>,
//! ) -> Result<Frozen<P>, kho::Error> {
//!     let mut out = Outgoing::new(scratch)?;
//!     let files = out.register(MemfdHandler::default())?;
//!     out.create_session("vm-1")?;
//!     let mut f = Memfd::new(true);
//!     f.write(p, 0, b"state that must survive")?;
//!     out.preserve(files, "vm-1", 1, f, p)?;
//!     // Refuses if the next kernel could not read the file.
//!     Ok(out.freeze(p, Freeze::NoLoss(next_reads))?)
//! }
//!
//! /// Next kernel: `inc` is the handoff its architecture layer restored at
//! /// boot (`kho_x86_64::BootInfo::incoming`), every preserved page already
//! /// kept from the allocator.
//! fn after_kexec<P: Platform>(p: &mut P, mut inc: Incoming<P>) -> Result<Memfd, kho::Error> {
//!     let files = inc.register(MemfdHandler::default())?;
//!     // Every object restored now, with the handlers registered.
//!     let mut inc = inc.restore(p);
//!     let (file, _version) = inc.take(&files.key("vm-1", 1), p)?;
//!     // What nobody adopted goes back to `p`; `inc` is gone after this.
//!     let done = inc.finish(p)?;
//!     assert!(done.lost.is_empty() && done.unread.is_none());
//!     Ok(file)
//! }
//! ```
//!
//! The crate uses `alloc` (always with `try_reserve` where a handed-over
//! size decides the amount, so running out is an error, never an abort);
//! the readers of handed-over data walk it in place.
#![no_std]
#![forbid(unsafe_code)]
// Without `arch` the crate is built as the kernel's API alone: the
// hand-over step (writing the blob, restoring it at boot) is compiled, but
// only an architecture layer calls it. Dead code is found in the builds
// that have one (clippy, tests and every kernel build with `arch`).
#![cfg_attr(not(feature = "arch"), allow(dead_code))]

extern crate alloc;
#[cfg(test)]
extern crate std;

#[cfg(feature = "arch")]
pub mod abi;
#[cfg(not(feature = "arch"))]
pub(crate) mod abi;
#[cfg(feature = "arch")]
pub mod chain;
#[cfg(not(feature = "arch"))]
pub(crate) mod chain;
pub mod claims;
pub mod csum;
pub mod elf;
mod error;
#[cfg(feature = "arch")]
pub mod fdt;
#[cfg(not(feature = "arch"))]
pub(crate) mod fdt;
#[cfg(feature = "arch")]
pub mod handoff;
#[cfg(not(feature = "arch"))]
pub(crate) mod handoff;
pub mod luo;
pub mod memfd;
pub mod platform;
pub mod ranges;
#[cfg(feature = "arch")]
pub mod reserve;
#[cfg(not(feature = "arch"))]
pub(crate) mod reserve;
pub mod scratch;
#[cfg(any(test, feature = "host"))]
pub mod testkit;
pub mod tracker;
mod update;
pub mod vmalloc;

pub use error::{Error, ErrorKind};
#[cfg(any(test, feature = "arch"))]
pub use update::Blob;
pub use update::{Freeze, Frozen, Incoming, Key, NotFrozen, Outgoing, Restored};

/// Size of the smallest page the crate deals with (4 KiB).
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// The snippets of `docs/embedding.md`, compiled and run as doc tests so
/// that the guide cannot drift from the API (with `arch`: its last section
/// is the hand-over step's).
#[cfg(all(doctest, feature = "arch"))]
#[doc = include_str!("../docs/embedding.md")]
pub struct EmbeddingGuide;
