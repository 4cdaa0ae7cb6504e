//! `kho`: hand memory and state from one kernel to the next across a kexec.
//!
//! The crate is `no_std`, architecture-neutral and free of `unsafe`: it
//! reaches physical memory only through the platform traits an embedding
//! kernel implements ([`platform`]). Everything here is plain data and
//! algorithms over byte slices, built and tested on the host.
//!
//! Modules, from the bottom up:
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
//! - [`error`]: [`Error`], which wraps every module's error.
//!
//! # Example: one file across a kexec
//!
//! The first kernel preserves a memfd in a session and writes the handoff;
//! the next one retrieves it. `P` is the kernel's platform type.
//!
//! ```
//! use kho::handoff::{Handoff, HandoffWriter, Stamps};
//! use kho::luo::{Luo, Platform, ReadList, RestoreCtx, memfd::MemfdHandler};
//! use kho::memfd::Memfd;
//! use kho::ranges::Range;
//! use kho::scratch::Scratch;
//! use kho::tracker::{Tracker, handover};
//!
//! /// First kernel: returns the blob's length in `buf`; the kernel then
//! /// places it and kexecs (see `docs/embedding.md`).
//! fn before_kexec<P: Platform>(
//!     p: &mut P,
//!     scratch: &Scratch,
//!     next_reads: &ReadList<'_>,
//!     buf: &mut [u8],
//! ) -> Result<usize, kho::Error> {
//!     let mut t = Tracker::new(scratch.areas())?;
//!     let mut luo = Luo::<P>::new();
//!     luo.register(MemfdHandler::default())?;
//!     luo.create_session("vm-1")?;
//!     let mut f = Memfd::new(true);
//!     f.write(p, 0, b"state that must survive")?;
//!     luo.preserve("vm-1", 1, "memfd", f, p, &mut t)?;
//!     // Refuses if the next kernel could not read the file.
//!     luo.freeze(p, &mut t, Some(next_reads), false)?;
//!     let root = handover::write(&t, p)?;
//!     let mut w = HandoffWriter::new(buf, 0, Stamps::default(), &root, scratch)?;
//!     luo.write(&mut w)?;
//!     Ok(w.finish()?.len)
//! }
//!
//! /// Next kernel, once `kho::handoff::restore` reported `preserved`.
//! fn after_kexec<P: Platform>(
//!     p: &mut P,
//!     h: &Handoff<'_>,
//!     ram: &[Range],
//!     preserved: &[Range],
//! ) -> Result<Option<Memfd>, kho::Error> {
//!     let mut claims = kho::claims::Claims::new(preserved.iter().copied(), h.scratch.areas())?;
//!     let mut luo = Luo::<P>::new();
//!     luo.register(MemfdHandler::default())?;
//!     luo.incoming(h)?;
//!     let mut ctx = RestoreCtx { ram, scratch: h.scratch.areas(), claims: &mut claims };
//!     luo.retrieve::<Memfd>("vm-1", 1, p, &mut ctx)?;
//!     let file = luo.take::<Memfd>("vm-1", 1)?;
//!     // Everything preserved that nobody adopted, and every page only
//!     // read as metadata, goes back to `p`; the claims end here.
//!     let done = luo.finish(p, claims)?;
//!     assert!(done.lost.is_empty() && done.unread.is_none());
//!     Ok(file.downcast::<Memfd>().ok().map(|f| *f))
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

pub mod chain;
pub mod claims;
pub mod csum;
pub mod elf;
pub mod error;
pub mod fdt;
pub mod handoff;
pub mod luo;
pub mod memfd;
pub mod platform;
pub mod pvh;
pub mod ranges;
pub mod reserve;
pub mod scratch;
#[cfg(any(test, feature = "host"))]
pub mod testkit;
pub mod tracker;
pub mod update;
pub mod vmalloc;

pub use error::Error;
pub use update::{Freeze, Incoming, Key, Outgoing};

/// Size of the smallest page the crate deals with (4 KiB).
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
