//! memfd: an in-kernel anonymous file made of folios, and its two handed-over
//! formats (`v1` and `v2`, their codecs public with the feature `tools`).
//!
//! A [`Memfd`] holds folios of order 0, 4 or 9 (4 KiB, 64 KiB, 2 MiB),
//! chosen per write by alignment and size as a page cache would, and falls
//! back to smaller ones when the allocator has no large block. In memory
//! the folios are kept as sorted *extents*: runs of folios contiguous both
//! in the file and in physical memory, with one order. A file that sits in
//! one physical run is one extent, whatever its size; lookups are a binary
//! search; restoring a file pushes its extents in order.
//!
//! Holes read as zeros and allocate nothing, and stay holes when the file
//! is preserved (Linux fills them). Seals follow Linux: [`seal::SEAL`],
//! [`seal::SHRINK`], [`seal::GROW`], [`seal::WRITE`],
//! [`seal::FUTURE_WRITE`]. This file has no mappings, so `FUTURE_WRITE`
//! refuses exactly what `WRITE` refuses.
//!
//! Handing a file over: [`Memfd::preserve`] preserves every folio at its
//! order in the tracker; then `v1::write` and/or `v2::write` write the
//! file's records (each format its own payload; the folios are shared).
//! The next kernel's `v1::read` or `v2::read` checks every record,
//! claims the folios ([`crate::claims`]) and returns a file made of the
//! very same folios. While a file is preserved, anything that would change
//! its folios (filling a hole, truncate, punch) is refused: the records
//! must stay true until the kexec.

mod adopt;
mod error;
mod handler;
mod shrink;
#[cfg(test)]
mod tests;
#[cfg(feature = "tools")]
pub mod v1;
#[cfg(not(feature = "tools"))]
pub(crate) mod v1;
#[cfg(feature = "tools")]
pub mod v2;
#[cfg(not(feature = "tools"))]
pub(crate) mod v2;

use crate::PAGE_SIZE;
pub use crate::abi::memfd::{FolioFlags, MAX_FOLIO_ORDER, Seals, flag, seal};
use crate::claims::ClaimError;
use crate::platform::{FrameAlloc, PhysMem};
use crate::tracker::{Tracker, TrackerError};
use crate::vmalloc::VmallocError;
use alloc::vec::Vec;
use core::fmt;
pub use error::MemfdError;
#[cfg(any(test, feature = "tools"))]
pub use handler::V3_TEST;
pub use handler::{FAMILY, MemfdHandler, V1, V2};

/// Folio orders a write may allocate, largest first.
pub const ORDERS: [u32; 3] = [9, 4, 0];
/// Largest file size (2^40 pages).
pub const MAX_SIZE: u64 = 1 << 52;

/// A run of folios contiguous in the file and in physical memory, of one
/// order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// File page index of the first folio.
    pub index: u64,
    /// Physical address of the first folio.
    pub phys: u64,
    /// The folios' order.
    pub order: u32,
    /// How many folios (a longer run is several extents; 24 bytes an
    /// extent keeps restore's writes small).
    pub count: u32,
}

impl Extent {
    /// Pages it covers.
    pub const fn pages(&self) -> u64 {
        (self.count as u64) << self.order
    }

    /// File page index just past it.
    pub const fn end(&self) -> u64 {
        self.index + self.pages()
    }

    /// Whether `next` continues it (same order, contiguous in the file and
    /// in physical memory).
    pub(crate) const fn joins(&self, next: &Extent) -> bool {
        self.order == next.order
            && self.end() == next.index
            && self.phys + self.pages() * PAGE_SIZE == next.phys
    }

    /// Its folios, one by one.
    pub fn folios(&self) -> impl Iterator<Item = Extent> + '_ {
        (0..u64::from(self.count)).map(move |i| Extent {
            index: self.index + (i << self.order),
            phys: self.phys + (i << self.order) * PAGE_SIZE,
            order: self.order,
            count: 1,
        })
    }
}

/// Appends `e` to a sorted list, joining it to the last extent if it
/// continues it. Inlined: passed by pointer, the extent is stored field by
/// field and reloaded as a vector, a store-forwarding stall per folio.
#[inline(always)]
fn push_extent(list: &mut Vec<Extent>, e: Extent) {
    match list.last_mut() {
        Some(last) if last.joins(&e) && last.count.checked_add(e.count).is_some() => {
            last.count += e.count
        }
        _ => list.push(e),
    }
}

/// An anonymous in-memory file.
#[derive(Debug, Default)]
pub struct Memfd {
    extents: Vec<Extent>,
    size: u64,
    pos: u64,
    seals: Seals,
    preserved: bool,
    /// Its `memfd-v1` and `memfd-v2` record arrays, laid out when the
    /// handler preserved it (a preserved file's folios cannot change), so
    /// that freezing it writes descriptors only ([`v2::lay_out`]).
    laid_v1: Option<Laid>,
    laid_v2: Option<Laid>,
}

/// A record array laid out and preserved when its file was preserved: its
/// folios cannot change while it is preserved, so neither can its
/// records, and freezing the file writes a descriptor only.
#[derive(Debug)]
pub(crate) struct Laid {
    /// The array, preserved, its sum in `root`.
    array: crate::vmalloc::Vmalloc,
    /// Its root, as a descriptor names it.
    root: crate::vmalloc::VmallocRoot,
    /// Records in it.
    records: u64,
}

impl Laid {
    /// Writes `n` `records` into a new array, summed and preserved in
    /// `tracker` (all or nothing).
    fn write<P, R>(
        p: &mut P,
        tracker: &mut Tracker,
        n: u64,
        records: impl Iterator<Item = R>,
    ) -> Result<Self, MemfdError>
    where
        P: PhysMem + FrameAlloc + crate::platform::MapFrames,
        R: zerocopy::IntoBytes + zerocopy::Immutable,
    {
        let (array, root) = adopt::write_array(p, tracker, n, records)?;
        Ok(Self {
            array,
            root,
            records: n,
        })
    }
}

/// Unpreserves and frees every array laid out for `file` (before the file
/// itself is unpreserved).
pub(crate) fn release_laid<P: FrameAlloc + crate::platform::MapFrames>(
    file: &mut Memfd,
    p: &mut P,
    tracker: &mut Tracker,
) {
    for mut l in [file.laid_v1.take(), file.laid_v2.take()]
        .into_iter()
        .flatten()
    {
        let _ = l.array.unpreserve(p, tracker);
        l.array.free(p);
    }
}

/// The pages of the array laid out for `file` in `version` (a
/// `memfd-v2`-layout name or `memfd-v1`), if there is one.
pub(crate) fn laid_pages<'f>(
    file: &'f Memfd,
    version: &str,
) -> impl Iterator<Item = crate::ranges::Range> + 'f {
    let l = if version == v1::VERSION {
        &file.laid_v1
    } else {
        &file.laid_v2
    };
    l.iter().flat_map(|l| l.array.pages())
}

impl Memfd {
    /// An empty file. Without `allow_sealing` it starts sealed with
    /// [`seal::SEAL`], as Linux's `memfd_create` without
    /// `MFD_ALLOW_SEALING`.
    pub fn new(allow_sealing: bool) -> Self {
        Self {
            seals: if allow_sealing {
                Seals::empty()
            } else {
                Seals::SEAL
            },
            ..Self::default()
        }
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Its file position (kept across a handover, as Linux does).
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Sets the file position.
    pub fn seek(&mut self, pos: u64) {
        self.pos = pos;
    }

    /// Its seals.
    pub fn seals(&self) -> Seals {
        self.seals
    }

    /// Whether [`Memfd::preserve`] preserved it.
    pub(crate) fn is_preserved(&self) -> bool {
        self.preserved
    }

    /// Its extents, in file order.
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// Its folios, in file order.
    pub fn folios(&self) -> impl Iterator<Item = Extent> + '_ {
        self.extents.iter().flat_map(Extent::folios)
    }

    /// How many folios it has.
    pub fn folio_count(&self) -> u64 {
        self.extents.iter().map(|e| u64::from(e.count)).sum()
    }

    /// Bytes of memory its folios hold.
    pub fn allocated_bytes(&self) -> u64 {
        self.extents.iter().map(|e| e.pages() * PAGE_SIZE).sum()
    }

    /// The extent holding file page `page`, by position.
    fn find(&self, page: u64) -> Result<usize, usize> {
        let i = self.extents.partition_point(|e| e.index <= page);
        match i.checked_sub(1) {
            Some(j) if page < self.extents[j].end() => Ok(j),
            _ => Err(i),
        }
    }

    /// The physical address of file byte `at` and the bytes contiguous
    /// from there (to the end of its extent), or the bytes of hole from
    /// there (to the next extent, or `u64::MAX`).
    fn locate(&self, at: u64) -> (Option<u64>, u64) {
        let page = at / PAGE_SIZE;
        match self.find(page) {
            Ok(j) => {
                let e = &self.extents[j];
                let off = at - e.index * PAGE_SIZE;
                (Some(e.phys + off), e.pages() * PAGE_SIZE - off)
            }
            Err(i) => (
                None,
                self.extents
                    .get(i)
                    .map_or(u64::MAX, |e| e.index * PAGE_SIZE - at),
            ),
        }
    }

    /// Reads up to `buf.len()` bytes at `offset`; holes read as zeros.
    /// Returns the bytes read (0 at or past the end).
    pub fn read<P: PhysMem>(&self, p: &P, offset: u64, buf: &mut [u8]) -> usize {
        let n = self.size.saturating_sub(offset).min(buf.len() as u64) as usize;
        let mut done = 0usize;
        while done < n {
            let at = offset + done as u64;
            let (phys, run) = self.locate(at);
            let len = run.min((n - done) as u64) as usize;
            let dst = &mut buf[done..done + len];
            match phys {
                Some(ph) if p.read_bytes(ph, dst) => {}
                _ => dst.fill(0),
            }
            done += len;
        }
        n
    }

    fn check_write(&self, what: &'static str) -> Result<(), MemfdError> {
        for s in [seal::WRITE, seal::FUTURE_WRITE] {
            if self.seals.intersects(s) {
                return Err(MemfdError::Sealed { op: what, seal: s });
            }
        }
        Ok(())
    }

    /// Writes `data` at `offset`, allocating folios for the holes it
    /// touches and growing the file if it ends past the size.
    pub fn write<P: PhysMem + FrameAlloc>(
        &mut self,
        p: &mut P,
        offset: u64,
        data: &[u8],
    ) -> Result<usize, MemfdError> {
        self.check_write("write")?;
        if data.is_empty() {
            return Ok(0);
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= MAX_SIZE)
            .ok_or(MemfdError::TooLarge)?;
        if end > self.size && self.seals.contains(Seals::GROW) {
            return Err(MemfdError::Sealed {
                op: "grow",
                seal: seal::GROW,
            });
        }
        self.fill_holes(p, offset, end)?;
        let mut done = 0usize;
        while done < data.len() {
            let at = offset + done as u64;
            let (phys, run) = self.locate(at);
            let len = run.min((data.len() - done) as u64) as usize;
            if let Some(ph) = phys {
                p.write_bytes(ph, &data[done..done + len]);
            }
            done += len;
        }
        self.size = self.size.max(end);
        Ok(data.len())
    }

    /// Allocates folios for every hole in the pages that bytes
    /// `[start, end)` touch; pages the write does not cover whole are
    /// zeroed. All or nothing.
    fn fill_holes<P: PhysMem + FrameAlloc>(
        &mut self,
        p: &mut P,
        start: u64,
        end: u64,
    ) -> Result<(), MemfdError> {
        let first = start / PAGE_SIZE;
        let last = end.div_ceil(PAGE_SIZE);
        let mut new: Vec<Extent> = Vec::new();
        let mut page = first;
        let undo = |p: &mut P, new: &[Extent]| {
            for e in new {
                p.free_frames(e.phys, e.order);
            }
        };
        while page < last {
            let limit = match self.find(page) {
                Ok(j) => {
                    page = self.extents[j].end();
                    continue;
                }
                Err(i) => self.extents.get(i).map_or(last, |e| e.index.min(last)),
            };
            if self.preserved {
                undo(p, &new);
                return Err(MemfdError::Preserved { preserved: true });
            }
            let got = ORDERS.iter().find_map(|&k| {
                let n = 1u64 << k;
                (page.is_multiple_of(n) && page + n <= limit)
                    .then(|| p.alloc_frames(k).map(|ph| (ph, k)))
                    .flatten()
            });
            let Some((phys, order)) = got else {
                undo(p, &new);
                return Err(MemfdError::OutOfFrames);
            };
            if new.try_reserve(1).is_err() {
                p.free_frames(phys, order);
                undo(p, &new);
                return Err(MemfdError::OutOfMemory);
            }
            for i in 0..1u64 << order {
                let pg = page + i;
                let whole = pg * PAGE_SIZE >= start && (pg + 1) * PAGE_SIZE <= end;
                if !whole && let Some(f) = p.frame_mut(phys + i * PAGE_SIZE) {
                    f.fill(0);
                }
            }
            push_extent(
                &mut new,
                Extent {
                    index: page,
                    phys,
                    order,
                    count: 1,
                },
            );
            page += 1 << order;
        }
        if new.is_empty() {
            return Ok(());
        }
        if self.splice(first, last, &new).is_err() {
            undo(p, &new);
            return Err(MemfdError::OutOfMemory);
        }
        Ok(())
    }

    /// Replaces the extents around pages `[first, last)` with themselves
    /// merged with `new` (sorted, inside holes of that span), joining what
    /// continues.
    fn splice(&mut self, first: u64, last: u64, new: &[Extent]) -> Result<(), ()> {
        let a = self
            .extents
            .partition_point(|e| e.end() <= first)
            .saturating_sub(1);
        let b = (self.extents.partition_point(|e| e.index < last) + 1).min(self.extents.len());
        let old = self.extents.get(a..b).unwrap_or(&[]);
        let mut merged = Vec::new();
        merged.try_reserve(old.len() + new.len()).map_err(|_| ())?;
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < new.len() {
            let take_old = match (old.get(i), new.get(j)) {
                (Some(o), Some(n)) => o.index < n.index,
                (Some(_), None) => true,
                _ => false,
            };
            if take_old {
                push_extent(&mut merged, old[i]);
                i += 1;
            } else {
                push_extent(&mut merged, new[j]);
                j += 1;
            }
        }
        self.extents.try_reserve(merged.len()).map_err(|_| ())?;
        self.extents.splice(a..b, merged);
        Ok(())
    }

    /// Adds seals (Linux's `F_ADD_SEALS`).
    /// Bits no [`Seals`] names (from `Seals::from_bits_retain`) are
    /// refused.
    pub fn add_seals(&mut self, seals: Seals) -> Result<(), MemfdError> {
        let unknown = seals.bits() & !Seals::all().bits();
        if unknown != 0 {
            return Err(MemfdError::UnknownSeal { bits: unknown });
        }
        if self.seals.contains(Seals::SEAL) {
            return Err(MemfdError::Sealed {
                op: "add seals",
                seal: Seals::SEAL,
            });
        }
        self.seals |= seals;
        Ok(())
    }

    /// Preserves every folio at its order. All or nothing.
    pub fn preserve(&mut self, tracker: &mut Tracker) -> Result<(), MemfdError> {
        if self.preserved {
            return Err(MemfdError::Preserved { preserved: true });
        }
        for (done, f) in self.folios().enumerate() {
            if let Err(e) = tracker.preserve(f.phys, f.order) {
                for g in self.folios().take(done) {
                    let _ = tracker.unpreserve(g.phys, g.order);
                }
                return Err(MemfdError::Tracker(e));
            }
        }
        self.preserved = true;
        Ok(())
    }

    /// Undoes [`Memfd::preserve`].
    pub fn unpreserve(&mut self, tracker: &mut Tracker) -> Result<(), MemfdError> {
        if !self.preserved {
            return Err(MemfdError::Preserved { preserved: false });
        }
        for f in self.folios() {
            tracker
                .unpreserve(f.phys, f.order)
                .map_err(MemfdError::Tracker)?;
        }
        self.preserved = false;
        Ok(())
    }

    /// Gives every folio back (unpreserve first if it was preserved). In
    /// the next kernel, adopted folios stay claimed, so finish does not
    /// free them again.
    pub fn free<P: FrameAlloc>(self, p: &mut P) {
        for f in self.folios() {
            p.free_frames(f.phys, f.order);
        }
    }
}
