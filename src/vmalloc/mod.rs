//! Preserved vmalloc (`kho-vmalloc-v2`): a virtually contiguous buffer made
//! of scattered frames, handed to the next kernel in place.
//!
//! The first kernel allocates blocks of `2^order` frames wherever the
//! allocator finds them and maps them at one virtual range
//! ([`crate::platform::MapFrames`]). [`Vmalloc::preserve`] preserves every
//! block in the tracker and writes the list of blocks on a page chain
//! (`kho::chain`'s framing); a 16-byte [`VmallocRoot`] names the chain.
//! The next kernel's [`Vmalloc::restore`] checks the chain and every
//! block, claims them ([`crate::claims`]) and maps the very same frames
//! again: no copy.
//!
//! Layout (all little-endian), documented in `docs/abi.md`:
//! - root: `first` u64 (first chain page, 0 if there are no blocks),
//!   `blocks` u32, `order` u16 (0 to `MAX_ORDER`), `flags` u16 (bit 0
//!   `SUMMED`), `sum` u64 (with `SUMMED`, the `kho-sum64` of the
//!   buffer's bytes; else 0);
//! - chain pages of magic `KHOV`, version 2 (each with its checksum): one
//!   word per block, its physical address; every page full (508 blocks)
//!   but the last.
//!
//! A buffer whose contents are fixed once preserved (a record array) is
//! preserved with `Vmalloc::preserve_summed`: its reader then checks the
//! contents too. Its chain pages and blocks are *metadata* of the reader
//! ([`Claims::claim_meta`]); a buffer of live data has its blocks claimed
//! as data.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use crate::PAGE_SIZE;
pub use crate::abi::vmalloc::VmallocRoot;
pub(crate) use crate::abi::vmalloc::{FORMAT, MAX_BLOCKS, MAX_ORDER, SUMMED};

use crate::chain::{self, ChainError, PAYLOAD_WORDS, Pages};
use crate::claims::{ClaimError, Claims};
use crate::platform::{FrameAlloc, MapError, MapFrames, Mapping, PhysMem};
use crate::ranges::Range;
use crate::tracker::{Tracker, TrackerError};
use alloc::vec::Vec;

mod error;
use core::fmt;
pub use error::VmallocError;

/// A virtually contiguous buffer of scattered blocks.
#[derive(Debug)]
pub struct Vmalloc {
    blocks: Vec<u64>,
    order: u32,
    mapping: Mapping,
    /// Chain pages, while preserved.
    chain: Vec<u64>,
    preserved: bool,
}

/// Bytes in a block of `order`.
const fn block_bytes(order: u32) -> u64 {
    PAGE_SIZE << order
}

/// The 4 KiB frames of blocks of `order`, in order: what a mapping, a
/// zeroing pass and a frame-by-frame reader all walk.
fn block_frames(blocks: &[u64], order: u32) -> impl Iterator<Item = u64> + '_ {
    let per = 1u64 << order;
    blocks
        .iter()
        .flat_map(move |&b| (0..per).map(move |i| b.saturating_add(i.saturating_mul(PAGE_SIZE))))
}

/// The frames of `blocks`, collected for [`MapFrames::map`].
fn frames_of(blocks: &[u64], order: u32) -> Result<Vec<u64>, VmallocError> {
    let mut frames = Vec::new();
    frames
        .try_reserve_exact(blocks.len().saturating_mul(1usize << order))
        .map_err(|_| VmallocError::OutOfMemory)?;
    frames.extend(block_frames(blocks, order));
    Ok(frames)
}

fn map_blocks<P: MapFrames>(
    p: &mut P,
    blocks: &[u64],
    order: u32,
) -> Result<Mapping, VmallocError> {
    if blocks.is_empty() {
        return Ok(Mapping { virt: 0, len: 0 });
    }
    p.map(&frames_of(blocks, order)?).map_err(VmallocError::Map)
}

impl Vmalloc {
    /// A zeroed buffer of at least `bytes` bytes, in blocks of `2^order`
    /// frames, mapped contiguously.
    pub fn new<P: PhysMem + FrameAlloc + MapFrames>(
        p: &mut P,
        bytes: usize,
        order: u32,
    ) -> Result<Self, VmallocError> {
        let mut v = Self::new_unmapped(p, bytes, order)?;
        for f in block_frames(&v.blocks, order) {
            if let Some(f) = p.frame_mut(f) {
                f.fill(0);
            }
        }
        match map_blocks(p, &v.blocks, order) {
            Ok(m) => {
                v.mapping = m;
                Ok(v)
            }
            Err(e) => {
                v.free(p);
                Err(e)
            }
        }
    }

    /// Blocks of `2^order` frames for at least `bytes` bytes, allocated
    /// and left unmapped and unwritten: for a writer that fills every
    /// frame itself through [`PhysMem`] (a record array written frame by
    /// frame needs no contiguous mapping, which costs a kernel page-table
    /// work and the host fake a copy). [`Vmalloc::len`] is 0; [`bytes`]
    /// and [`bytes_mut`] are empty.
    ///
    /// [`bytes`]: Vmalloc::bytes
    /// [`bytes_mut`]: Vmalloc::bytes_mut
    pub(crate) fn new_unmapped<P: FrameAlloc>(
        p: &mut P,
        bytes: usize,
        order: u32,
    ) -> Result<Self, VmallocError> {
        if order > MAX_ORDER {
            return Err(VmallocError::TooLarge);
        }
        let count = (bytes as u64).div_ceil(block_bytes(order));
        if count > u64::from(MAX_BLOCKS) {
            return Err(VmallocError::TooLarge);
        }
        let mut blocks = Vec::new();
        blocks
            .try_reserve_exact(count as usize)
            .map_err(|_| VmallocError::OutOfMemory)?;
        for _ in 0..count {
            let Some(b) = p.alloc_frames(order) else {
                for &b in &blocks {
                    p.free_frames(b, order);
                }
                return Err(VmallocError::OutOfFrames);
            };
            blocks.push(b);
        }
        Ok(Self {
            blocks,
            order,
            mapping: Mapping { virt: 0, len: 0 },
            chain: Vec::new(),
            preserved: false,
        })
    }

    /// Like [`Vmalloc::preserve_summed`], for contents the caller wrote
    /// and summed itself (`sum`, the `kho-sum64` of every frame in
    /// order): nothing is read back.
    pub(crate) fn preserve_with_sum<P: PhysMem + FrameAlloc>(
        &mut self,
        p: &mut P,
        tracker: &mut Tracker,
        sum: u64,
    ) -> Result<VmallocRoot, VmallocError> {
        let mut root = self.preserve_blocks(p, tracker)?;
        if !self.blocks.is_empty() {
            root.flags = SUMMED.into();
            root.sum = sum.into();
        }
        Ok(root)
    }

    /// Its length in bytes (whole blocks; 0 if it is not mapped).
    pub fn len(&self) -> usize {
        self.mapping.len
    }

    /// Whether it has no blocks.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Its virtual address.
    pub fn virt(&self) -> u64 {
        self.mapping.virt
    }

    /// The physical address of each block, in buffer order.
    pub fn blocks(&self) -> &[u64] {
        &self.blocks
    }

    /// log2 of the frames per block.
    pub fn order(&self) -> u32 {
        self.order
    }

    /// The chain pages written by [`Vmalloc::preserve`] (none otherwise).
    pub fn chain_pages(&self) -> &[u64] {
        &self.chain
    }

    /// Every page it holds, as ranges: each block, then each chain page
    /// (what an object's footprint names for it).
    pub(crate) fn pages(&self) -> impl Iterator<Item = Range> + '_ {
        let block = crate::PAGE_SIZE.checked_shl(self.order).unwrap_or(0);
        let blocks = self
            .blocks
            .iter()
            .map(move |&b| Range::new(b, b.saturating_add(block)));
        let chain = self
            .chain
            .iter()
            .map(|&c| Range::new(c, c.saturating_add(crate::PAGE_SIZE)));
        blocks.chain(chain)
    }

    /// Its bytes.
    pub fn bytes<'p, P: MapFrames>(&self, p: &'p P) -> &'p [u8] {
        p.bytes(&self.mapping)
    }

    /// Its bytes, for writing.
    pub fn bytes_mut<'p, P: MapFrames>(&self, p: &'p mut P) -> &'p mut [u8] {
        p.bytes_mut(&self.mapping)
    }

    /// Preserves every block and writes the chain that lists them (itself
    /// preserved). All or nothing: on error the tracker is as before. The
    /// contents may change until the kexec; the next kernel claims them as
    /// data.
    pub fn preserve<P: PhysMem + FrameAlloc + MapFrames>(
        &mut self,
        p: &mut P,
        tracker: &mut Tracker,
    ) -> Result<VmallocRoot, VmallocError> {
        self.preserve_as(p, tracker, false)
    }

    /// Like [`Vmalloc::preserve`], for contents that are fixed from now on
    /// (a record array): the root carries their checksum, which the next
    /// kernel checks.
    pub(crate) fn preserve_summed<P: PhysMem + FrameAlloc + MapFrames>(
        &mut self,
        p: &mut P,
        tracker: &mut Tracker,
    ) -> Result<VmallocRoot, VmallocError> {
        self.preserve_as(p, tracker, true)
    }

    fn preserve_as<P: PhysMem + FrameAlloc + MapFrames>(
        &mut self,
        p: &mut P,
        tracker: &mut Tracker,
        summed: bool,
    ) -> Result<VmallocRoot, VmallocError> {
        if self.preserved {
            return Err(VmallocError::State);
        }
        p.flush(&self.mapping);
        let mut root = self.preserve_blocks(p, tracker)?;
        if summed && !self.blocks.is_empty() {
            root.flags = SUMMED.into();
            root.sum = crate::csum::sum64(self.bytes(p)).into();
        }
        Ok(root)
    }

    /// Preserves the blocks and writes the chain that names them: all of
    /// it, or (on error) none.
    fn preserve_blocks<P: PhysMem + FrameAlloc>(
        &mut self,
        p: &mut P,
        tracker: &mut Tracker,
    ) -> Result<VmallocRoot, VmallocError> {
        if self.preserved {
            return Err(VmallocError::State);
        }
        for (i, &b) in self.blocks.iter().enumerate() {
            if let Err(e) = tracker.preserve(b, self.order) {
                for &u in self.blocks.get(..i).unwrap_or(&[]) {
                    let _ = tracker.unpreserve(u, self.order);
                }
                return Err(VmallocError::Tracker(e));
            }
        }
        match self.write_chain(p, tracker) {
            Ok(root) => {
                self.preserved = true;
                Ok(root)
            }
            Err(e) => {
                for &b in &self.blocks {
                    let _ = tracker.unpreserve(b, self.order);
                }
                Err(e)
            }
        }
    }

    fn write_chain<P: PhysMem + FrameAlloc>(
        &mut self,
        p: &mut P,
        tracker: &mut Tracker,
    ) -> Result<VmallocRoot, VmallocError> {
        let root = |first: u64| VmallocRoot {
            first: first.into(),
            blocks: (self.blocks.len() as u32).into(),
            order: (self.order as u16).into(),
            flags: 0.into(),
            sum: 0.into(),
        };
        if self.blocks.is_empty() {
            return Ok(root(0));
        }
        let count = self.blocks.len().div_ceil(PAYLOAD_WORDS);
        let pages = chain::alloc_pages(p, count, tracker.scratch(), |a| !tracker.is_preserved(a))?;
        let free = |p: &mut P, pages: &[u64]| {
            for &pg in pages {
                p.free_frames(pg, 0);
            }
        };
        let kept = pages.clone();
        let mut w = chain::Writer::new(FORMAT, p, pages);
        let written = self
            .blocks
            .iter()
            .try_for_each(|&b| w.record(&[b]))
            .and_then(|()| w.finish());
        let (first, _) = match written {
            Ok(x) => x,
            Err(e) => {
                free(p, &kept);
                return Err(e.into());
            }
        };
        for (i, &pg) in kept.iter().enumerate() {
            if let Err(e) = tracker.preserve(pg, 0) {
                for &u in kept.get(..i).unwrap_or(&[]) {
                    let _ = tracker.unpreserve(u, 0);
                }
                free(p, &kept);
                return Err(VmallocError::Tracker(e));
            }
        }
        self.chain = kept;
        Ok(root(first))
    }

    /// Undoes [`Vmalloc::preserve`]: the blocks stay allocated, the chain
    /// pages are freed.
    pub fn unpreserve<P: FrameAlloc>(
        &mut self,
        p: &mut P,
        tracker: &mut Tracker,
    ) -> Result<(), VmallocError> {
        if !self.preserved {
            return Err(VmallocError::State);
        }
        for &b in &self.blocks {
            tracker
                .unpreserve(b, self.order)
                .map_err(VmallocError::Tracker)?;
        }
        for &pg in &self.chain {
            tracker.unpreserve(pg, 0).map_err(VmallocError::Tracker)?;
            p.free_frames(pg, 0);
        }
        self.chain.clear();
        self.preserved = false;
        Ok(())
    }

    /// Unmaps the buffer and gives every block back (unpreserve first if it
    /// was preserved). In the next kernel, adopted blocks stay claimed:
    /// finish will not free them a second time.
    pub fn free<P: FrameAlloc + MapFrames>(self, p: &mut P) {
        if self.mapping.len > 0 {
            p.unmap(self.mapping);
        }
        for &b in &self.blocks {
            p.free_frames(b, self.order);
        }
    }

    /// In the next kernel: checks the chain that `root` names and every
    /// block, claims the blocks as data, and maps them contiguously. The
    /// chain pages are claimed as metadata (finish frees them). With
    /// `SUMMED`, the contents are checked against the root's sum. On
    /// error no block stays claimed.
    pub fn restore<P: PhysMem + MapFrames>(
        p: &mut P,
        root: &VmallocRoot,
        ram: &[Range],
        scratch: &[Range],
        claims: &mut Claims,
    ) -> Result<Self, VmallocError> {
        let b = Blocks::read(p, root, ram, scratch, claims, false)?;
        let v = match map_blocks(p, &b.blocks, b.order) {
            Ok(mapping) => Self {
                blocks: b.blocks,
                order: b.order,
                mapping,
                chain: Vec::new(),
                preserved: false,
            },
            Err(e) => {
                for &x in &b.blocks {
                    claims.release(x, 1 << b.order);
                }
                return Err(e);
            }
        };
        if let Some(sum) = b.sum
            && crate::csum::sum64(v.bytes(p)) != sum
        {
            v.release(p, claims);
            return Err(VmallocError::BadSum);
        }
        Ok(v)
    }

    /// In the next kernel, for a buffer only needed while restoring (a
    /// record array): unmaps it and releases its blocks, so finish frees
    /// them.
    pub fn release<P: MapFrames>(self, p: &mut P, claims: &mut Claims) {
        if self.mapping.len > 0 {
            p.unmap(self.mapping);
        }
        for &b in &self.blocks {
            claims.release(b, 1 << self.order);
        }
    }
}

/// A restored buffer's blocks, claimed but not mapped: what a reader that
/// only walks the buffer once needs (a record array, read frame by frame
/// through [`PhysMem`], with no mapping to make and tear down).
#[derive(Debug)]
pub struct Blocks {
    /// The blocks, in buffer order.
    pub blocks: Vec<u64>,
    /// log2 of the frames per block.
    pub order: u32,
    /// With `SUMMED`, the contents' `kho-sum64`, which the reader of the
    /// contents must check.
    pub sum: Option<u64>,
}

impl Blocks {
    /// Checks the chain `root` names and every block, and claims the chain
    /// pages and the blocks as metadata (a record array: finish frees
    /// them, and no object can adopt them meanwhile). The caller checks
    /// the contents against [`Blocks::sum`] as it reads them. On error
    /// what was claimed stays metadata.
    pub(crate) fn restore<P: PhysMem>(
        p: &P,
        root: &VmallocRoot,
        ram: &[Range],
        scratch: &[Range],
        claims: &mut Claims,
    ) -> Result<Self, VmallocError> {
        Self::read(p, root, ram, scratch, claims, true)
    }

    /// Reads the chain; blocks are claimed as metadata if `meta`, else as
    /// data (released again on error).
    fn read<P: PhysMem>(
        p: &P,
        root: &VmallocRoot,
        ram: &[Range],
        scratch: &[Range],
        claims: &mut Claims,
        meta: bool,
    ) -> Result<Self, VmallocError> {
        let mut blocks = Vec::new();
        let r = read_chain(p, root, ram, scratch, claims, &mut blocks, meta);
        let order = u32::from(root.order.get());
        match r {
            Ok(()) => Ok(Self {
                blocks,
                order,
                sum: (root.flags.get() == SUMMED).then(|| root.sum.get()),
            }),
            Err(e) => {
                if !meta {
                    for &b in &blocks {
                        claims.release(b, 1 << order);
                    }
                }
                Err(e)
            }
        }
    }

    /// The buffer's 4 KiB frames, in order.
    pub(crate) fn frames(&self) -> impl Iterator<Item = u64> + '_ {
        block_frames(&self.blocks, self.order)
    }

    /// How many 4 KiB frames the buffer has.
    pub(crate) fn frame_count(&self) -> u64 {
        (self.blocks.len() as u64).saturating_mul(1 << self.order)
    }
}

/// Reads the chain, claiming its pages as metadata and its blocks (into
/// `blocks`) as metadata or data.
fn read_chain<P: PhysMem>(
    p: &P,
    root: &VmallocRoot,
    ram: &[Range],
    scratch: &[Range],
    claims: &mut Claims,
    blocks: &mut Vec<u64>,
    meta: bool,
) -> Result<(), VmallocError> {
    let order = u32::from(root.order.get());
    let count = root.blocks.get();
    let first = root.first.get();
    let flags = root.flags.get();
    let summed = match flags {
        0 => false,
        SUMMED => true,
        _ => return Err(VmallocError::BadRoot),
    };
    if (!summed && root.sum.get() != 0)
        || (summed && count == 0)
        || order > MAX_ORDER
        || count > MAX_BLOCKS
        || (count == 0) != (first == 0)
    {
        return Err(VmallocError::BadRoot);
    }
    if count == 0 {
        return Ok(());
    }
    blocks
        .try_reserve_exact(count as usize)
        .map_err(|_| VmallocError::OutOfMemory)?;
    let pages_n = (count as usize).div_ceil(PAYLOAD_WORDS) as u32;
    let mut pages = Pages::new(p, FORMAT, first, pages_n, ram, scratch)?;
    let size = block_bytes(order);
    while let Some(page) = pages.next_page() {
        let page = page?;
        claims.claim_meta(page.phys, 1)?;
        let left = (count as usize).saturating_sub(blocks.len());
        if page.words.len() != left.min(PAYLOAD_WORDS) {
            return Err(VmallocError::CountMismatch { phys: page.phys });
        }
        for w in page.words {
            let b = w.get();
            if !b.is_multiple_of(size) {
                return Err(VmallocError::Misaligned { phys: b });
            }
            if meta {
                claims.claim_meta(b, 1 << order)?;
            } else {
                claims.claim(b, 1 << order)?;
            }
            blocks.push(b);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
