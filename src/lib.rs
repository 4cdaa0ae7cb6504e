//! `kho`: hand memory and state from one kernel to the next across a kexec.
//!
//! The crate is `no_std`, architecture-neutral and free of `unsafe`: it
//! reaches physical memory only through the platform traits an embedding
//! kernel implements ([`platform`]). Everything here is plain data and
//! algorithms over byte slices, built and tested on the host.
//!
//! Modules, from the bottom up ([`abi`] holds every handed-over layout,
//! one module per format):
//! - [`platform`]: what the kernel provides (frame access, a frame
//!   allocator, scattered frames mapped contiguously) and the restore rule.
//! - [`ranges`], [`scratch`]: physical ranges; scratch areas, memory that
//!   never holds preserved pages.
//! - [`tracker`]: the preserved-page tracker and its handed-over chain.
//! - [`fdt`], [`handoff`]: the FDT container and the root handoff blob.
//! - [`chain`], [`vmalloc`], [`memfd`]: page-chain framing, preserved
//!   vmalloc, and the memfd with its `memfd-v1` and `memfd-v2` formats.
//! - [`reserve`], [`claims`]: what the next kernel keeps, and which
//!   preserved pages each restored object adopted.
//! - [`luo`]: the orchestrator: sessions, handlers and versions.
//! - [`elf`]: the next kernel image, read safely (and its reads note).
//! - [`Error`] and [`ErrorKind`]: one error type that wraps every module's error,
//!   and what a caller can do about it.
//! - The front door: [`Outgoing`], [`Frozen`] (and the [`Blob`] it
//!   writes), [`Incoming`] and [`Restored`], typed by their objects.
//!
//! # Example: one file across a kexec
//!
//! The first kernel preserves a memfd in a session and writes the handoff;
//! the next one takes it back. `P` is the kernel's platform type
//! (`docs/embedding.md` says what it implements; `examples/embed.rs` is a
//! whole one).
//!
//! ```
//! use kho::handoff::Stamps;
//! use kho::luo::{Platform, ReadList};
//! use kho::memfd::MemfdHandler;
//! use kho::memfd::Memfd;
//! use kho::ranges::Range;
//! use kho::reserve::ReserveLog;
//! use kho::scratch::Scratch;
//! use kho::{Freeze, Incoming, Outgoing};
//!
//! /// First kernel: writes the blob into `buf` and returns its length and
//! /// what the kexec must keep (every preserved range and the tracker's
//! /// chain); the kernel then places the blob and kexecs.
//! fn before_kexec<P: Platform>(
//!     p: &mut P,
//!     scratch: Scratch,
//!     next_reads: &ReadList<'_>,
//!     buf: &mut [u8],
//!     ram: &[Range],
//! ) -> Result<(usize, Vec<Range>), kho::Error> {
//!     let mut out = Outgoing::new(scratch)?;
//!     let files = out.register(MemfdHandler::default())?;
//!     out.create_session("vm-1")?;
//!     let mut f = Memfd::new(true);
//!     f.write(p, 0, b"state that must survive")?;
//!     out.preserve(files, "vm-1", 1, f, p)?;
//!     // Refuses if the next kernel could not read the file.
//!     let mut frozen = out.freeze(p, Freeze::NoLoss(next_reads))?;
//!     let blob = frozen.write(p, buf, 0, Stamps::default())?;
//!     Ok((blob.len, blob.kept(p, ram)?))
//! }
//!
//! /// Next kernel: `blob` is the handoff module's bytes, found at `at`.
//! fn after_kexec<P: Platform>(
//!     p: &mut P,
//!     blob: &[u8],
//!     at: Range,
//!     ram: &[Range],
//! ) -> Result<Memfd, kho::Error> {
//!     // Every preserved range lands in `reserved`: keep the allocator
//!     // off them (and off the handoff's metadata) from here on.
//!     let mut reserved = ReserveLog::new();
//!     let mut inc = Incoming::new(p, blob, at, ram, &mut reserved)?;
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

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod abi;
pub mod chain;
pub mod claims;
pub mod csum;
pub mod elf;
mod error;
pub mod fdt;
pub mod handoff;
pub mod luo;
pub mod memfd;
pub mod platform;
pub mod ranges;
pub mod reserve;
pub mod scratch;
#[cfg(any(test, feature = "host"))]
pub mod testkit;
pub mod tracker;
mod update;
pub mod vmalloc;

pub use error::{Error, ErrorKind};
pub use update::{Blob, Freeze, Frozen, Incoming, Key, NotFrozen, Outgoing, Restored};

/// Size of the smallest page the crate deals with (4 KiB).
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// The snippets of `docs/embedding.md`, compiled and run as doc tests so
/// that the guide cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../docs/embedding.md")]
pub struct EmbeddingGuide;
