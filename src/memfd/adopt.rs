//! The next kernel's side of both memfd formats: checks each record and
//! adopts its folios, or gives back everything it adopted.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use super::{Extent, MAX_FOLIO_ORDER, MAX_SIZE, Memfd, MemfdError, Seals, flag, push_extent};
use crate::PAGE_SIZE;
use crate::claims::Claims;
use crate::csum::Sum64;
use crate::platform::{FrameAlloc, MapFrames, PhysMem};
use crate::tracker::Tracker;
use crate::vmalloc::{Blocks, Vmalloc, VmallocRoot};
use alloc::vec::Vec;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// One record's decoded first word: frame, order, flags.
pub(crate) struct Folio {
    pub phys: u64,
    pub order: u32,
    pub uptodate: bool,
}

/// Decodes the first word of a record (shared by `memfd-v1` and
/// `memfd-v2`): frame number in bits 0 to 51, flags above, the order in
/// bits 56 to 59.
pub(crate) fn decode(word: u64, record: u64) -> Result<Folio, MemfdError> {
    // No record written is all zero (every folio is dirty): a zero record
    // is one the header counted but nobody wrote.
    if word == 0 {
        return Err(MemfdError::CountMismatch);
    }
    // Part by part, as needed: computing every part up front cost the
    // one-run restore 40% (measured).
    let w = crate::abi::memfd::FolioWord(word);
    let unknown = w.unknown();
    if unknown != 0 {
        return Err(MemfdError::UnknownFlag {
            record,
            bits: unknown,
        });
    }
    let order = w.order();
    if order > MAX_FOLIO_ORDER {
        return Err(MemfdError::BadOrder { record, order });
    }
    Ok(Folio {
        phys: w.phys(),
        order,
        uptodate: w.uptodate(),
    })
}

/// The first `n` records in `bytes` (a record array); the bytes after them
/// must be 0.
pub(crate) fn records_in<R: FromBytes + zerocopy::Immutable>(
    bytes: &[u8],
    n: u64,
) -> Result<&[R], MemfdError> {
    let used = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_mul(core::mem::size_of::<R>()))
        .filter(|&u| u <= bytes.len())
        .ok_or(MemfdError::CountMismatch)?;
    let (recs, rest) = bytes.split_at(used);
    if rest.iter().any(|&b| b != 0) {
        return Err(MemfdError::CountMismatch);
    }
    <[R]>::ref_from_bytes(recs).map_err(|_| MemfdError::CountMismatch)
}

/// The record array of a descriptor: order-0 blocks, exactly as many as
/// `n` records of 16 bytes need, and a checksum of its contents.
pub(crate) fn array_of<P: PhysMem>(
    p: &P,
    root: &VmallocRoot,
    n: u64,
    ram: &[crate::ranges::Range],
    scratch: &[crate::ranges::Range],
    claims: &mut Claims,
) -> Result<Blocks, MemfdError> {
    let want = n.saturating_mul(16).div_ceil(PAGE_SIZE);
    if root.order.get() != 0 || u64::from(root.blocks.get()) != want {
        return Err(MemfdError::BadArray);
    }
    if root.flags.get() != crate::vmalloc::SUMMED {
        return Err(MemfdError::BadArray);
    }
    Ok(Blocks::restore(p, root, ram, scratch, claims)?)
}

/// Walks the first `n` 16-byte records of a record array frame by frame
/// (records never straddle a frame), calling `each` with the record's
/// position and its two words; the bytes after them must be 0, and the
/// whole array's `kho-sum64` must be `sum`.
pub(crate) fn walk_array<P: PhysMem>(
    p: &P,
    frames: impl Iterator<Item = u64>,
    n: u64,
    sum: Option<u64>,
    mut each: impl FnMut(u64, u64, u64) -> Result<(), MemfdError>,
) -> Result<(), MemfdError> {
    let mut i = 0u64;
    let mut capacity = 0u64;
    let mut s = Sum64::new();
    let mut frames = frames;
    let mut failed = None;
    'walk: for f in frames.by_ref() {
        let page = p
            .frame(f)
            .ok_or(MemfdError::Vmalloc(crate::vmalloc::VmallocError::Chain(
                crate::chain::ChainError::BadPage { phys: f },
            )))?;
        let words = <[zerocopy::byteorder::little_endian::U64]>::ref_from_bytes(page.as_slice())
            .map_err(|_| MemfdError::CountMismatch)?;
        capacity = capacity.saturating_add(256);
        // The frame's sum first, in a loop of its own (four independent
        // chains, the lanes in registers), then its records, from L1.
        sum_frame(&mut s, words);
        for rec in words.chunks_exact(2) {
            if let [a, b] = rec {
                if i < n {
                    if let Err(e) = each(i, a.get(), b.get()) {
                        failed = Some(e);
                        break 'walk;
                    }
                } else if a.get() != 0 || b.get() != 0 {
                    failed = Some(MemfdError::CountMismatch);
                    break 'walk;
                }
            }
            i = i.saturating_add(1);
        }
    }
    if let Some(e) = failed {
        return Err(verdict(p, frames, s, sum, e));
    }
    if n > capacity {
        return Err(MemfdError::CountMismatch);
    }
    if sum != Some(s.finish()) {
        return Err(MemfdError::Vmalloc(crate::vmalloc::VmallocError::BadSum));
    }
    Ok(())
}

/// What a record the walk refused says: if the array's sum does not hold
/// (the rest of its frames summed here), the array was changed, and that
/// is the error (a flipped byte in a record is a checksum failure, not
/// whatever the changed record happened to break); else `e`.
#[cold]
fn verdict<P: PhysMem>(
    p: &P,
    rest: impl Iterator<Item = u64>,
    mut s: Sum64,
    sum: Option<u64>,
    e: MemfdError,
) -> MemfdError {
    for f in rest {
        match p.frame(f).map(|page| {
            <[zerocopy::byteorder::little_endian::U64]>::ref_from_bytes(page.as_slice())
        }) {
            Some(Ok(words)) => s.frame(words),
            _ => return e,
        }
    }
    if sum != Some(s.finish()) {
        return MemfdError::Vmalloc(crate::vmalloc::VmallocError::BadSum);
    }
    e
}

/// Takes one frame into `s`, out of line: inlined, the sum's lanes took
/// the registers of the record loop around it.
#[inline(never)]
fn sum_frame(s: &mut Sum64, words: &[zerocopy::byteorder::little_endian::U64]) {
    s.frame(words);
}

/// Encodes a record's first word (every folio written is dirty and up to
/// date).
pub(crate) fn encode(phys: u64, order: u32) -> u64 {
    (phys >> 12) | flag::DIRTY | flag::UPTODATE | (u64::from(order) << flag::ORDER_SHIFT)
}

/// A file being restored: the records checked so far, their folios
/// claimed.
pub(crate) struct Adopt<'c> {
    claims: &'c mut Claims,
    file: Memfd,
    /// Pages the file's size covers.
    limit: u64,
    /// File page index past the last record.
    prev_end: u64,
    stale: Vec<Extent>,
}

impl<'c> Adopt<'c> {
    /// Starts a file of `size` bytes at `pos`, sealed with `seals`.
    pub(crate) fn new(
        claims: &'c mut Claims,
        size: u64,
        pos: u64,
        seals: u32,
    ) -> Result<Self, MemfdError> {
        if size > MAX_SIZE {
            return Err(MemfdError::BadHeader("size"));
        }
        // The wire's bits: any this crate does not name are refused.
        let Some(seals) = Seals::from_bits(seals) else {
            return Err(MemfdError::UnknownSeal {
                bits: seals & !Seals::all().bits(),
            });
        };
        Ok(Self {
            claims,
            file: Memfd {
                extents: Vec::new(),
                size,
                pos,
                seals,
                preserved: false,
                laid_v1: None,
                laid_v2: None,
            },
            limit: size.div_ceil(PAGE_SIZE),
            prev_end: 0,
            stale: Vec::new(),
        })
    }

    /// Room for `n` more extents.
    pub(crate) fn reserve(&mut self, n: usize) -> Result<(), MemfdError> {
        self.file
            .extents
            .try_reserve(n)
            .map_err(|_| MemfdError::OutOfMemory)
    }

    /// Checks and adopts record `record`: `count` folios of one order from
    /// `f.phys`, at file page `index`. Always inlined into the record
    /// loop: as a call (which some binaries made it) the loop's state
    /// went through memory, at twice the cost per folio.
    #[inline(always)]
    pub(crate) fn run(
        &mut self,
        record: u64,
        f: &Folio,
        index: u64,
        count: u64,
    ) -> Result<(), MemfdError> {
        let size = 1u64 << f.order;
        if !index.is_multiple_of(size) || !f.phys.is_multiple_of(size.saturating_mul(PAGE_SIZE)) {
            return Err(MemfdError::Misaligned { record });
        }
        if index < self.prev_end {
            return Err(MemfdError::Overlap { record });
        }
        // Every folio must start inside the size; the last may run past it
        // (truncate keeps a folio the new end falls in).
        let pages = count.checked_shl(f.order).filter(|p| p >> f.order == count);
        let last = count
            .checked_sub(1)
            .and_then(|c| c.checked_shl(f.order))
            .and_then(|o| index.checked_add(o));
        let (Some(pages), Some(last)) = (pages, last) else {
            return Err(MemfdError::PastEnd { record });
        };
        if last >= self.limit {
            return Err(MemfdError::PastEnd { record });
        }
        let count32 = u32::try_from(count).map_err(|_| MemfdError::PastEnd { record })?;
        let e = Extent {
            index,
            phys: f.phys,
            order: f.order,
            count: count32,
        };
        self.adopt(record, e, pages, f.uptodate)
    }

    /// What [`run`](Self::run) and [`page`](Self::page) do once a record
    /// passed their checks: claims the `pages` pages of `e`, adds `e` to
    /// the file, and notes it for zeroing if it was not up to date.
    #[inline(always)]
    fn adopt(
        &mut self,
        record: u64,
        e: Extent,
        pages: u64,
        uptodate: bool,
    ) -> Result<(), MemfdError> {
        self.claims
            .claim(e.phys, pages)
            .map_err(|why| MemfdError::Claim { record, why })?;
        // `reserve` made room for every record: this never allocates.
        if self.file.extents.len() == self.file.extents.capacity() {
            self.claims.release(e.phys, pages);
            return Err(MemfdError::OutOfMemory);
        }
        push_extent(&mut self.file.extents, e);
        self.prev_end = e.index.saturating_add(pages);
        if !uptodate {
            self.stale
                .try_reserve(1)
                .map_err(|_| MemfdError::OutOfMemory)?;
            self.stale.push(e);
        }
        Ok(())
    }

    /// The restored file. Folios whose contents were not up to date are
    /// zeroed now.
    pub(crate) fn finish<P: PhysMem>(self, p: &mut P) -> Memfd {
        for e in &self.stale {
            let pages = u64::from(e.count).checked_shl(e.order).unwrap_or(0);
            for i in 0..pages {
                if let Some(fr) = p.frame_mut(e.phys.saturating_add(i.saturating_mul(PAGE_SIZE))) {
                    fr.fill(0);
                }
            }
        }
        self.file
    }

    /// [`run`](Self::run) for a record of one 4 KiB folio (order 0, one
    /// folio), what a fragmented file is made of: the same checks, less
    /// to check (a frame number is page aligned, one page is aligned
    /// anywhere in the file, and its last page is its first).
    #[inline(always)]
    pub(crate) fn page(
        &mut self,
        record: u64,
        phys: u64,
        index: u64,
        uptodate: bool,
    ) -> Result<(), MemfdError> {
        if index < self.prev_end {
            return Err(MemfdError::Overlap { record });
        }
        if index >= self.limit {
            return Err(MemfdError::PastEnd { record });
        }
        let e = Extent {
            index,
            phys,
            order: 0,
            count: 1,
        };
        self.adopt(record, e, 1, uptodate)
    }

    /// Gives back every folio adopted so far.
    pub(crate) fn fail(self) {
        for e in &self.file.extents {
            self.claims
                .release(e.phys, u64::from(e.count).checked_shl(e.order).unwrap_or(0));
        }
    }
}

/// Writes `n` records into a new record array (order-0 blocks of preserved
/// vmalloc), preserved with its chain and its checksum; all or nothing.
/// The array is written frame by frame through the direct map and summed
/// as each frame is filled: no contiguous mapping, no second pass. Shared
/// by both formats, whose arrays differ only in what a record's words
/// mean. (Their readers stay apart: one loop shared by both measured
/// about 5% slower per folio.)
pub(crate) fn write_array<P, R>(
    p: &mut P,
    tracker: &mut Tracker,
    n: u64,
    records: impl Iterator<Item = R>,
) -> Result<(Vmalloc, VmallocRoot), MemfdError>
where
    P: PhysMem + FrameAlloc + MapFrames,
    R: IntoBytes + Immutable,
{
    let size = core::mem::size_of::<R>();
    let bytes = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_mul(size))
        .ok_or(MemfdError::OutOfMemory)?;
    let mut v = Vmalloc::new_unmapped(p, bytes, 0)?;
    let preserved =
        fill_array(p, &v, size, records).and_then(|sum| Ok(v.preserve_with_sum(p, tracker, sum)?));
    match preserved {
        Ok(root) => Ok((v, root)),
        Err(e) => {
            v.free(p);
            Err(e)
        }
    }
}

/// Writes `records` (each `size` bytes, never straddling a frame) into the
/// frames of `v` in order, zeros after the last, and returns the
/// `kho-sum64` of all the frames.
fn fill_array<P: PhysMem, R: IntoBytes + Immutable>(
    p: &mut P,
    v: &Vmalloc,
    size: usize,
    mut records: impl Iterator<Item = R>,
) -> Result<u64, MemfdError> {
    let mut s = Sum64::new();
    // Order-0 blocks: each block is a frame.
    for &f in v.blocks() {
        let frame =
            p.frame_mut(f)
                .ok_or(MemfdError::Vmalloc(crate::vmalloc::VmallocError::Map(
                    crate::platform::MapError::BadFrame { phys: f },
                )))?;
        let mut used = 0usize;
        for slot in frame.chunks_exact_mut(size) {
            match records.next() {
                Some(r) => {
                    slot.copy_from_slice(r.as_bytes());
                    used = used.saturating_add(size);
                }
                None => break,
            }
        }
        if let Some(tail) = frame.get_mut(used..) {
            tail.fill(0);
        }
        let words = <[zerocopy::byteorder::little_endian::U64]>::ref_from_bytes(frame.as_slice())
            .map_err(|_| MemfdError::CountMismatch)?;
        s.frame(words);
    }
    Ok(s.finish())
}

/// A descriptor: the header's bytes, then `tail` (inline records).
pub(crate) fn descriptor(
    header: &[u8],
    tail: impl Iterator<Item = [u8; 16]>,
) -> Result<Vec<u8>, MemfdError> {
    let mut desc = Vec::new();
    desc.try_reserve_exact(header.len())
        .map_err(|_| MemfdError::OutOfMemory)?;
    desc.extend_from_slice(header);
    for r in tail {
        desc.try_reserve(r.len())
            .map_err(|_| MemfdError::OutOfMemory)?;
        desc.extend_from_slice(&r);
    }
    Ok(desc)
}
