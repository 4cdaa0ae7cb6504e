//! The platform boundary: what an embedding kernel provides to `kho`.
//!
//! `kho` never touches physical memory by itself. A kernel gives it access to
//! frames ([`PhysMem`]), separately a source of frames ([`FrameAlloc`],
//! which may also lend frames a structure holds for itself and hands over
//! in place), and a way to map scattered frames contiguously
//! ([`MapFrames`]). Access and
//! management are kept apart, as rust-vmm's `vm-memory` does: a reader of
//! handed-over data needs only [`PhysMem`], and gets nothing that could
//! allocate or free.
//!
//! The protocol every embedding kernel follows (the *restore rule*):
//!
//! 1. Until the handoff is restored, allocate only from scratch areas
//!    (`kho::scratch`): memory that never holds preserved pages.
//! 2. Restore the handoff (the architecture layer does, with
//!    `kho::handoff::restore` or `Incoming::new`) into a `Reserve`: every
//!    preserved range and every page of the handoff's own metadata is
//!    reported, or nothing is.
//! 3. Only then hand out memory outside scratch, minus every range reported.
//!
//! `host::HostMem` (feature `host`) implements the traits over ordinary heap memory; the
//! tests, fuzz targets and benchmarks all use it (feature `host`).

#[cfg(any(test, feature = "host"))]
pub mod host;

use crate::PAGE_SIZE;

/// A 4 KiB frame's bytes.
pub type Frame = [u8; PAGE_SIZE as usize];

/// Read and write access to physical frames, by physical address.
///
/// What an implementation promises (the crate relies on it for
/// correctness, never for memory safety, and contains no `unsafe`):
/// 1. `frame(p)` and `frame_mut(p)` give the bytes of the frame at physical
///    address `p` itself, not a copy: what is written through `frame_mut`
///    is what the next kernel finds at `p`.
/// 2. They return `None` for an address that is not 4 KiB aligned or not
///    RAM; a reader then reports a typed error.
/// 3. While a returned reference lives, nothing else in the kernel writes
///    the frame (a device still doing DMA into handed-over memory breaks
///    this; see the handoff protocol in `docs/architecture.md`).
///
/// What kho may give it: `frame` gets addresses read from the previous
/// kernel's data, so any value (0, unaligned, past RAM, inside a hole or a
/// scratch area); answer `None` or the frame, never panic. `frame_mut` is
/// only called on frames kho allocated through [`FrameAlloc`] and on
/// frames a restored object adopted (a memfd zeroes the folios that were
/// not up to date).
pub trait PhysMem {
    /// The frame at `phys`, for reading.
    fn frame(&self, phys: u64) -> Option<&Frame>;
    /// The frame at `phys`, for writing.
    fn frame_mut(&mut self, phys: u64) -> Option<&mut Frame>;

    /// Copies `buf.len()` bytes from physical address `phys` into `buf`,
    /// across frames. `false` if any of them cannot be read.
    fn read_bytes(&self, phys: u64, buf: &mut [u8]) -> bool {
        spans(phys, buf.len()).all(|(frame, at, bytes)| {
            match (self.frame(frame), buf.get_mut(bytes.clone())) {
                (Some(f), Some(dst)) => f.get(at..at + dst.len()).is_some_and(|src| {
                    dst.copy_from_slice(src);
                    true
                }),
                _ => false,
            }
        })
    }

    /// Copies `data` to physical address `phys`, across frames. `false` if
    /// any of them cannot be written (what came before stays written).
    fn write_bytes(&mut self, phys: u64, data: &[u8]) -> bool {
        spans(phys, data.len()).all(|(frame, at, bytes)| {
            match (self.frame_mut(frame), data.get(bytes)) {
                (Some(f), Some(src)) => f.get_mut(at..at + src.len()).is_some_and(|dst| {
                    dst.copy_from_slice(src);
                    true
                }),
                _ => false,
            }
        })
    }
}

/// The pieces of `len` bytes at physical `phys`, one per frame: the
/// frame's address, the offset in the frame, and the bytes' range in the
/// caller's buffer.
fn spans(phys: u64, len: usize) -> impl Iterator<Item = (u64, usize, core::ops::Range<usize>)> {
    let mut done = 0usize;
    core::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let at = phys.wrapping_add(done as u64);
        let frame = at & !(PAGE_SIZE - 1);
        let off = (at - frame) as usize;
        let n = (PAGE_SIZE as usize - off).min(len - done);
        let piece = (frame, off, done..done + n);
        done += n;
        Some(piece)
    })
}

/// A source of physical frames for what `kho` writes (handoff metadata,
/// preserved buffers).
///
/// What an implementation promises:
/// 1. `alloc_frames(order)` returns the address of `2^order` contiguous
///    frames aligned to their size, that nothing else uses, outside every
///    scratch area, and reachable through the same kernel's [`PhysMem`].
///    It never returns address 0 (kho reads 0 as "none" in several
///    records).
/// 2. It never returns frames the kernel already handed to someone else
///    (preserved memory included) until they are freed or added.
/// 3. `lend` (if the platform lends; the default does not) returns a
///    zeroed 4 KiB frame that no other allocation holds, outside every
///    scratch area, as a [`Lent`], or `None` when none is left.
/// 4. While it is lent, nothing but the [`Lent`] reaches its bytes: a
///    kernel's [`PhysMem`] and [`MapFrames`] refuse the frame (the
///    `&'static mut` is the only path to it). A fake that keeps the lent
///    bytes apart (the host's) may instead show a stale copy at its
///    address, which `take_back` overwrites.
/// 5. After `take_back`, the frame is an allocated frame like one from
///    `alloc_frames(0)`, holding the bytes the holder left in it,
///    readable through [`PhysMem`] at its address (what a kexec hands
///    over); `free_frames(phys, 0)` gives it back to the pool.
///
/// What kho promises in return:
/// 1. `free_frames(phys, order)` is only ever called, once, with a
///    naturally aligned block of `2^order` frames that kho owns: what one
///    `alloc_frames(order)` call returned, or one folio of that order that
///    a restored object adopted from the handoff and now drops (a memfd
///    truncated after the kexec). This allocator never handed out the
///    latter: a buddy allocator adds it as a free block of that order.
/// 2. `add_free(range)` is only ever called with memory this allocator
///    never handed out: the part of the previous kernel's handoff that no
///    object adopted, which [`crate::Restored::finish`] gives to the
///    running kernel. Each range is page-aligned, outside scratch, given
///    once, and may join what several separate allocations of the previous
///    kernel were: it is new free memory, not the end of an allocation.
pub trait FrameAlloc {
    /// `2^order` contiguous, naturally aligned frames, or `None`.
    fn alloc_frames(&mut self, order: u32) -> Option<u64>;
    /// Gives back frames that `alloc_frames(order)` returned, or a folio
    /// of that order that a restored object adopted after the kexec and
    /// now drops (this allocator never handed it out: add it as a free
    /// block of that order; promise 1 above).
    fn free_frames(&mut self, phys: u64, order: u32);
    /// Takes handed-over memory nobody adopted as new free memory (see
    /// the promises above): a buddy allocator splits it into the blocks it
    /// needs; it must not treat it as the end of an allocation.
    fn add_free(&mut self, range: crate::ranges::Range);
    /// Lends a zeroed frame that a structure holds for itself and may hand
    /// over in place (promises 3 to 5 above), or `None`: the default, for
    /// a platform that does not lend (what would be kept in lent frames is
    /// then written at freeze instead).
    fn lend(&mut self) -> Option<Lent> {
        None
    }
    /// Takes back a frame this platform lent (promise 5). A frame another
    /// platform lent is not this one's: the call changes nothing.
    fn take_back(&mut self, frame: Lent) {
        let _ = frame;
    }
}

/// A frame lent to one holder by [`FrameAlloc::lend`]: its physical address and
/// the only reference to its bytes.
///
/// A structure that is handed over *as it is* (its working form is its
/// handed-over form, so that freeze writes nothing for it) keeps its pages
/// in lent frames: it reads and writes them through plain references, at
/// the cost of a load, with no call to the platform, and the next kernel
/// finds them at [`phys`](Self::phys). The reference is `&'static mut`, so
/// no other path in safe Rust reaches the frame while it is lent: the
/// platform's own access ([`PhysMem`]) refuses it until it is taken back.
#[derive(Debug)]
pub struct Lent {
    phys: u64,
    frame: &'static mut Frame,
}

impl Lent {
    /// The frame at `phys`, reached through `frame`: what a platform's
    /// [`FrameAlloc::lend`] returns (in a kernel, `frame` is the direct map's
    /// view of `phys`; the host fake's frame is a separate page that it
    /// copies to `phys` when it is taken back).
    pub fn new(phys: u64, frame: &'static mut Frame) -> Self {
        Self { phys, frame }
    }

    /// Its physical address: where the next kernel finds its bytes.
    pub fn phys(&self) -> u64 {
        self.phys
    }

    /// Its bytes.
    pub fn frame(&self) -> &Frame {
        self.frame
    }

    /// Its bytes, for writing.
    pub fn frame_mut(&mut self) -> &mut Frame {
        self.frame
    }

    /// Its address and its bytes: what a platform's
    /// [`FrameAlloc::take_back`] takes apart.
    pub fn into_parts(self) -> (u64, &'static mut Frame) {
        (self.phys, self.frame)
    }
}

/// A virtually contiguous mapping made by [`MapFrames::map`].
#[derive(Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Its virtual address.
    pub virt: u64,
    /// Its length in bytes (4 KiB per frame).
    pub len: usize,
}

/// Why frames could not be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// A frame is not 4 KiB aligned, or not RAM.
    BadFrame {
        /// Its physical address.
        phys: u64,
    },
    /// No virtual space or no memory for page tables left.
    NoSpace,
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MapError::BadFrame { phys } => write!(f, "frame {phys:#x} cannot be mapped"),
            MapError::NoSpace => f.write_str("no virtual space or page-table memory to map frames"),
        }
    }
}

impl core::error::Error for MapError {}

/// Maps scattered frames at one virtually contiguous range: what preserved
/// vmalloc needs (a linear array made of scattered pages, used in place in
/// both kernels).
///
/// What an implementation promises:
/// 1. `map(frames)` maps exactly those frames, in that order, 4 KiB each,
///    writable, at a range nothing else uses until `unmap`.
/// 2. `bytes` and `bytes_mut` give that range's bytes: in a kernel, the
///    frames themselves (no copy), so a write lands in the frames.
pub trait MapFrames {
    /// Maps `frames` (4 KiB frames, in order) contiguously.
    fn map(&mut self, frames: &[u64]) -> Result<Mapping, MapError>;
    /// The mapping's bytes, for reading.
    fn bytes(&self, m: &Mapping) -> &[u8];
    /// The mapping's bytes, for writing.
    fn bytes_mut(&mut self, m: &Mapping) -> &mut [u8];
    /// Removes a mapping (the frames stay as they are).
    fn unmap(&mut self, m: Mapping);
    /// Makes what was written through `m` visible in its frames. Nothing
    /// to do where the mapping is the frames themselves (a kernel); a fake
    /// that copies (the host's) writes its copy back.
    fn flush(&mut self, m: &Mapping) {
        let _ = m;
    }
}
