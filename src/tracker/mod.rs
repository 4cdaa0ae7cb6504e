//! The preserved-page tracker: which physical blocks the next kernel must not
//! touch.
//!
//! A block is `2^order` pages (order 0 to [`MAX_ORDER`], 4 KiB to 1 GiB),
//! aligned to its size, anywhere below 2^52. [`Tracker`] records blocks in
//! the first kernel, strictly: a misaligned block, an order too large, an
//! overlap in either direction, a double preserve, a block in a scratch area
//! and an unpreserve of a block that is not preserved as such are all typed
//! errors, and a failed call changes nothing.
//!
//! In memory, the tracker maps each 2 MiB region to a 32-bit slot, through a
//! small hash table of 1 GiB chunks that each hold 512 slots. A region holds
//! one small block inline in its slot, or a 128-byte leaf (a bitmap of
//! preserved pages and a bitmap of block tails, which keeps block boundaries
//! exact), or is covered by a block of 2 MiB or more. A chunk where 32
//! regions hold leaves becomes dense: it gets a leaf for each of its 512
//! regions, found from the hash table alone, which saves a dependent load
//! per preserve where preserves are frequent. Memory grows with what is
//! preserved, never with RAM (a dense chunk keeps its leaves until the
//! tracker is dropped); running out of it is a typed error with no partial
//! state.
//!
//! At handover, where the platform lends frames, the tracker's own pages
//! are handed over as they lie (`inplace`, `kho-tracker-v4`: only a root
//! is written); elsewhere `chain` writes the preserved set as a chain of
//! pages of address-ordered records (coalesced extents and, for
//! fragmented regions, bitmaps). The next kernel reads either in place.

#[cfg(feature = "tools")]
pub mod chain;
#[cfg(not(feature = "tools"))]
pub(crate) mod chain;
mod error;
pub use error::{TrackerChainError, TrackerError};
#[cfg(feature = "tools")]
pub mod inplace;
#[cfg(not(feature = "tools"))]
pub(crate) mod inplace;
mod leaf;
mod pages;
mod query;
mod range;
#[cfg(test)]
use range::block_order;
#[cfg(feature = "tools")]
pub use range::range_blocks;
mod table;

use crate::ranges::Range;
use alloc::vec::Vec;
use core::fmt;
use leaf::{Leaf, LeafStore};
use table::{CHUNK, Lookup, RegionTable, Slot};

/// How a tracker was handed over, as the blob's `tracker` node names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Root {
    /// Written at freeze as a chain of records (`kho-tracker-v3`): where
    /// the platform lends no frames.
    Chain(crate::abi::tracker::TrackerRoot),
    /// Its own pages, handed over as they lie (`kho-tracker-v4`).
    InPlace(crate::abi::tracker::TrackerRootV4),
}

impl From<crate::abi::tracker::TrackerRoot> for Root {
    fn from(r: crate::abi::tracker::TrackerRoot) -> Self {
        Root::Chain(r)
    }
}

/// Largest block order: 2^18 pages = 1 GiB.
pub const MAX_ORDER: u32 = 18;
/// Physical addresses are below `1 << PHYS_BITS`.
pub const PHYS_BITS: u32 = 52;
/// log2 of the region size (2 MiB) the tracker is organised by.
pub const REGION_SHIFT: u32 = 21;
/// Pages in a region.
pub const REGION_PAGES: u64 = 1 << (REGION_SHIFT - PAGE_SHIFT);
/// Smallest order whose blocks cover whole regions.
const LARGE_ORDER: u32 = REGION_SHIFT - PAGE_SHIFT;
const PAGE_SHIFT: u32 = crate::PAGE_SHIFT;

/// One block in a region: page offset and order (below [`LARGE_ORDER`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Small {
    /// Page offset in the region.
    off: u32,
    /// The block's order.
    order: u32,
}

impl Small {
    /// The block at `phys` (below [`LARGE_ORDER`]), within its region.
    #[inline(always)]
    fn at(phys: u64, order: u32) -> Small {
        Small {
            off: ((phys >> PAGE_SHIFT) & (REGION_PAGES - 1)) as u32,
            order,
        }
    }

    fn end(self) -> u32 {
        self.off + (1 << self.order)
    }

    /// Packed in 16 bits for an inline slot: `offset | order << 9`.
    fn pack(self) -> u16 {
        self.off as u16 | (self.order as u16) << 9
    }

    fn unpack(v: u16) -> Small {
        Small {
            off: u32::from(v & 0x1ff),
            order: u32::from(v >> 9),
        }
    }
}

/// Records preserved blocks in the first kernel.
///
/// The scratch areas given at construction are never preserved. See the
/// module documentation for the representation.
pub struct Tracker {
    table: RegionTable,
    leaves: LeafStore,
    scratch: Vec<Range>,
    /// The region whose leaf was used last, and that leaf, for sequential
    /// preserves; only a region that touches no scratch area is kept here.
    /// `NO_REGION` when empty.
    cache: (u64, u32),
    /// Leaves a sparse chunk may hold before it is made dense.
    dense_at: usize,
    /// Preserved 4 KiB pages, kept at each change (the handed-over root
    /// states it, and freeze must not count).
    pub(crate) page_count: u64,
    /// The directory of the settled pages, for handing over in place.
    dir: inplace::Directory,
}

/// No region: every real region index is below `2^(52 - 21)`.
const NO_REGION: u64 = u64::MAX;

/// Leaves in a sparse chunk that make it dense. A dense chunk costs 64 KiB
/// of leaves (512 of them) where 32 leaves cost 4 KiB, so it is made only
/// where leaves are common, which is where preserves are frequent. Measured
/// (`./x.py bench`): 32 is faster than 64 on the mix and costs no more on
/// scattered pages; 16 costs 17% more memory on 100k pages over 1 TiB.
const DENSE_AT: usize = 32;

/// Largest order whose blocks lie within one word of a leaf.
const WORD_ORDER: u32 = 6;

/// Offset of region `r` in its chunk.
fn chunk_offset(r: u64) -> u32 {
    (r % CHUNK) as u32
}

/// Whether `phys` is aligned to a block of `order`, which is at most
/// [`MAX_ORDER`] (callers check first).
#[inline(always)]
fn aligned(phys: u64, order: u32) -> bool {
    phys & ((1u64 << (order + PAGE_SHIFT)) - 1) == 0
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("pages", &self.page_count)
            .field("regions", &self.table.len())
            .field("leaves", &self.leaves.live())
            .finish()
    }
}

impl Tracker {
    /// An empty tracker that refuses blocks in `scratch`.
    pub fn new(scratch: &[Range]) -> Result<Self, TrackerError> {
        let mut s = Vec::new();
        s.try_reserve_exact(scratch.len())
            .map_err(|_| TrackerError::OutOfMemory)?;
        s.extend(scratch.iter().copied().filter(|r| !r.is_empty()));
        s.sort_unstable();
        Ok(Self {
            table: RegionTable::new().map_err(|_| TrackerError::OutOfMemory)?,
            leaves: LeafStore::default(),
            scratch: s,
            cache: (NO_REGION, 0),
            dense_at: DENSE_AT,
            page_count: 0,
            dir: inplace::Directory::default(),
        })
    }

    /// An empty tracker that makes a 1 GiB chunk dense once `leaves` of
    /// its regions hold leaves (32 by default; above 512, never). Lower
    /// spends memory (64 KiB per dense chunk) for speed where preserves are
    /// clustered; tests and fuzzing use small values to reach both forms.
    #[cfg(any(test, feature = "tools"))]
    pub fn with_dense_threshold(scratch: &[Range], leaves: usize) -> Result<Self, TrackerError> {
        let mut t = Self::new(scratch)?;
        t.dense_at = leaves.max(1);
        Ok(t)
    }

    /// The scratch areas this tracker refuses.
    pub(crate) fn scratch(&self) -> &[Range] {
        &self.scratch
    }

    /// Number of preserved blocks. Counted on demand (cost grows with the
    /// preserved set), so that preserving stays a few instructions.
    #[cfg(any(test, feature = "tools"))]
    pub fn blocks(&self) -> u64 {
        self.table
            .iter()
            .map(|(r, slot)| match slot {
                Slot::Large { head, .. } => u64::from(head == chunk_offset(r)),
                Slot::Inline(_) => 1,
                Slot::Leaf(i) => self.leaves[i].block_count(),
            })
            .sum()
    }

    /// Number of preserved 4 KiB pages (kept as blocks come and go).
    #[cfg(any(test, feature = "arch"))]
    pub fn pages(&self) -> u64 {
        self.page_count
    }

    /// The same, counted from every slot, for tests of the kept count.
    #[cfg(test)]
    pub(crate) fn count_pages(&self) -> u64 {
        self.table
            .iter()
            .map(|(_, slot)| match slot {
                Slot::Large { .. } => REGION_PAGES,
                Slot::Inline(e) => 1 << e.order,
                Slot::Leaf(i) => self.leaves[i].page_count(),
            })
            .sum()
    }

    /// Moves the tracker's pages that are still on the heap into frames
    /// lent by `lend`; whether every page is settled.
    pub(crate) fn settle(&mut self, lend: &mut impl crate::platform::FrameAlloc) -> bool {
        self.leaves.pages_mut().settle(lend) && self.table.pages_mut().settle(lend)
    }

    /// The checksum of the tracker's pages, kept up to date by every
    /// write.
    pub(crate) fn sum(&self) -> u64 {
        self.leaves.sum().wrapping_add(self.table.sum())
    }

    /// The same, computed from every page, for tests of the kept one.
    #[cfg(test)]
    pub(crate) fn sum_again(&self) -> u64 {
        self.leaves.sum_again().wrapping_add(self.table.sum_again())
    }

    /// Bytes of memory the tracker itself uses.
    #[cfg(any(test, feature = "tools"))]
    pub fn memory_bytes(&self) -> usize {
        self.table.memory_bytes() + self.leaves.memory_bytes()
    }

    fn check(&self, phys: u64, order: u32) -> Result<(), TrackerError> {
        if order > MAX_ORDER {
            return Err(TrackerError::OrderTooLarge { order });
        }
        let size = 1u64 << (order + PAGE_SHIFT);
        if phys & (size - 1) != 0 {
            return Err(TrackerError::Misaligned { phys, order });
        }
        if phys >= (1u64 << PHYS_BITS) || (1u64 << PHYS_BITS) - phys < size {
            return Err(TrackerError::OutOfRange { phys });
        }
        Ok(())
    }

    /// Whether the block touches a scratch area. Any `phys` (the fast
    /// path asks before the block is known to be in range); `order` at
    /// most [`MAX_ORDER`].
    fn in_scratch(&self, phys: u64, order: u32) -> bool {
        let r = Range::new(phys, phys.saturating_add(1u64 << (order + PAGE_SHIFT)));
        self.scratch.iter().any(|s| s.overlaps(&r))
    }

    /// Whether region `r` touches a scratch area.
    fn region_in_scratch(&self, r: u64) -> bool {
        self.in_scratch(r << REGION_SHIFT, LARGE_ORDER)
    }

    /// Preserves the block of `2^order` pages at `phys`.
    ///
    /// Always inlined: the fast paths are a few dozen instructions, and
    /// everything else is one out-of-line call.
    #[inline(always)]
    pub fn preserve(&mut self, phys: u64, order: u32) -> Result<(), TrackerError> {
        /// Alignment masks of orders 0 to 6 (and a spare).
        const ALIGN: [u64; 8] = {
            let mut a = [0; 8];
            let mut o = 0;
            while o < 8 {
                a[o] = (1 << (o as u32 + PAGE_SHIFT)) - 1;
                o += 1;
            }
            a
        };
        let region = phys >> REGION_SHIFT;
        let scratch_free = || self.scratch.is_empty() || !self.region_in_scratch(region);
        if order <= WORD_ORDER && phys & ALIGN[(order & 7) as usize] == 0 {
            let (cached, leaf) = self.cache;
            if region == cached {
                // Fastest: the region used last (which has a leaf and
                // touches no scratch).
                if self.leaves.try_add_word(leaf, phys, order) {
                    self.page_count += 1 << order;
                    return Ok(());
                }
            } else if scratch_free() {
                // Next fastest, with nothing to allocate: a region with a
                // leaf, or an empty region of a chunk that exists. A chunk
                // exists only for valid addresses (`ensure` runs after
                // `check`), so finding one also proves the block in range.
                let leaf = match self.table.lookup(region) {
                    Lookup::Dense { leaf, .. } => leaf,
                    Lookup::Sparse {
                        slot: Some(Slot::Leaf(leaf)),
                        ..
                    } => leaf,
                    Lookup::Sparse { h, slot: None } => {
                        self.table.set_at(h, Slot::Inline(Small::at(phys, order)));
                        self.page_count += 1 << order;
                        return Ok(());
                    }
                    _ => return self.preserve_slow(phys, order),
                };
                if self.leaves.try_add_word(leaf, phys, order) {
                    self.cache = (region, leaf);
                    self.page_count += 1 << order;
                    return Ok(());
                }
            }
        } else if order == LARGE_ORDER && aligned(phys, order) && scratch_free() {
            // A 2 MiB block in an empty region of a sparse chunk.
            if let Lookup::Sparse { h, slot: None } = self.table.lookup(region) {
                self.table.set_at(
                    h,
                    Slot::Large {
                        head: chunk_offset(region),
                        order,
                    },
                );
                self.page_count += REGION_PAGES;
                return Ok(());
            }
        }
        self.preserve_slow(phys, order)
    }

    /// Every case the fast paths leave, including every refusal.
    #[cold]
    #[inline(never)]
    fn preserve_slow(&mut self, phys: u64, order: u32) -> Result<(), TrackerError> {
        self.check(phys, order)?;
        if self.scratch_hit(phys, order) {
            return Err(TrackerError::InScratch { phys, order });
        }
        if order >= LARGE_ORDER {
            self.preserve_large(phys, order)
        } else {
            self.preserve_small(phys, order)
        }?;
        self.page_count += 1 << order;
        Ok(())
    }

    #[inline(always)]
    fn scratch_hit(&self, phys: u64, order: u32) -> bool {
        !self.scratch.is_empty() && self.in_scratch(phys, order)
    }

    /// Caches `region`'s leaf for the fastest path, unless the region
    /// touches scratch (the fastest path does not check scratch).
    fn remember(&mut self, region: u64, leaf: u32) {
        if !self.region_in_scratch(region) {
            self.cache = (region, leaf);
        }
    }

    fn preserve_large(&mut self, phys: u64, order: u32) -> Result<(), TrackerError> {
        let r0 = phys >> REGION_SHIFT;
        let n = 1u64 << (order - LARGE_ORDER);
        // The block's regions all lie in r0's chunk (a block is at most
        // 1 GiB and aligned): make it exist, the only allocation.
        self.table
            .ensure(r0)
            .map_err(|_| TrackerError::OutOfMemory)?;
        for r in r0..r0 + n {
            match self.table.get(r) {
                None => {}
                // Only a dense chunk keeps an empty leaf.
                Some(Slot::Leaf(i)) if self.leaves[i].is_empty() => {}
                Some(Slot::Large { head, order: o }) if head == chunk_offset(r0) && o == order => {
                    return Err(TrackerError::AlreadyPreserved { phys, order });
                }
                Some(_) => return Err(TrackerError::Overlap { phys, order }),
            }
        }
        let slot = Slot::Large {
            head: chunk_offset(r0),
            order,
        };
        for r in r0..r0 + n {
            match self.table.lookup(r) {
                Lookup::Dense { h, leaf } => {
                    // A full leaf sends the fast paths to the slow one.
                    self.leaves.put(leaf, Leaf::FULL);
                    self.table.set_at(h, slot);
                }
                Lookup::Sparse { h, .. } => self.table.set_at(h, slot),
                Lookup::NoChunk => {}
            }
        }
        // The cached region may be one of them.
        self.cache = (NO_REGION, 0);
        Ok(())
    }

    fn preserve_small(&mut self, phys: u64, order: u32) -> Result<(), TrackerError> {
        let region = phys >> REGION_SHIFT;
        let b = Small::at(phys, order);
        // The region's chunk first, the only allocation a new region needs;
        // then one probe serves throughout.
        self.table
            .ensure(region)
            .map_err(|_| TrackerError::OutOfMemory)?;
        let i = match self.table.find(region) {
            Err(i) => {
                self.table.set_at(i, Slot::Inline(b));
                return Ok(());
            }
            Ok(i) => i,
        };
        match self.table.slot_at(i) {
            Slot::Large { .. } => Err(TrackerError::Overlap { phys, order }),
            Slot::Leaf(li) => {
                if !self.leaves[li].all_clear(b) {
                    return Err(if self.leaves[li].is_block(b) {
                        TrackerError::AlreadyPreserved { phys, order }
                    } else {
                        TrackerError::Overlap { phys, order }
                    });
                }
                self.leaves.set(li, b, true);
                self.remember(region, li);
                Ok(())
            }
            Slot::Inline(e) => {
                if e == b {
                    return Err(TrackerError::AlreadyPreserved { phys, order });
                }
                if e.off < b.end() && b.off < e.end() {
                    return Err(TrackerError::Overlap { phys, order });
                }
                // A second block: move the region to a leaf.
                let li = self.new_leaf()?;
                self.leaves.set(li, e, true);
                self.leaves.set(li, b, true);
                self.table.set_at(i, Slot::Leaf(li));
                self.remember(region, li);
                if self.table.leaves_in_chunk(i) >= self.dense_at {
                    // Best effort: out of memory leaves the chunk sparse,
                    // which is just as correct.
                    let _ = self.make_dense(region);
                }
                Ok(())
            }
        }
    }

    fn new_leaf(&mut self) -> Result<u32, TrackerError> {
        self.leaves.alloc().map_err(|_| TrackerError::OutOfMemory)
    }

    /// Makes the chunk of `region` dense: 512 new leaves, one per region,
    /// take over its inline blocks and sparse leaves (which are given back).
    /// On failure (out of memory) nothing changes.
    fn make_dense(&mut self, region: u64) -> Result<(), TrackerError> {
        let base = self
            .leaves
            .alloc_many(CHUNK as usize)
            .map_err(|_| TrackerError::OutOfMemory)?;
        let leaves = &mut self.leaves;
        self.table.make_dense(region, base, |dst, slot| match slot {
            Slot::Large { .. } => leaves.put(dst, Leaf::FULL),
            Slot::Inline(e) => leaves.set(dst, e, true),
            Slot::Leaf(i) => {
                leaves.put(dst, leaves[i]);
                leaves.give_back(i);
            }
        });
        // The cached leaf may have moved.
        self.cache = (NO_REGION, 0);
        Ok(())
    }

    /// Unpreserves the block of `2^order` pages at `phys`, which must have
    /// been preserved as exactly that block. Never allocates.
    pub fn unpreserve(&mut self, phys: u64, order: u32) -> Result<(), TrackerError> {
        self.unpreserve_block(phys, order)?;
        self.page_count -= 1 << order;
        Ok(())
    }

    fn unpreserve_block(&mut self, phys: u64, order: u32) -> Result<(), TrackerError> {
        self.check(phys, order)?;
        let not = TrackerError::NotPreserved { phys, order };
        let region = phys >> REGION_SHIFT;
        if order >= LARGE_ORDER {
            let n = 1u64 << (order - LARGE_ORDER);
            match self.table.get(region) {
                Some(Slot::Large { head, order: o })
                    if head == chunk_offset(region) && o == order => {}
                _ => return Err(not),
            }
            for r in region..region + n {
                match self.table.lookup(r) {
                    Lookup::Dense { h, leaf } => {
                        self.leaves.put(leaf, Leaf::default());
                        self.table.set_at(h, Slot::Leaf(leaf));
                    }
                    Lookup::Sparse { h, .. } => self.table.clear_at(h),
                    Lookup::NoChunk => {}
                }
            }
            return Ok(());
        }
        let b = Small::at(phys, order);
        let (h, slot, dense) = match self.table.lookup(region) {
            Lookup::Dense { h, .. } => (h, self.table.slot_at(h), true),
            Lookup::Sparse { h, slot: Some(s) } => (h, s, false),
            _ => return Err(not),
        };
        match slot {
            Slot::Inline(e) if e == b => self.table.clear_at(h),
            Slot::Inline(_) => return Err(not),
            Slot::Leaf(i) => {
                if !self.leaves[i].is_block(b) {
                    return Err(not);
                }
                self.leaves.set(i, b, false);
                // A dense chunk keeps its leaves; a sparse one gives an
                // empty leaf back.
                if self.leaves[i].is_empty() && !dense {
                    self.table.clear_at(h);
                    self.leaves.give_back(i);
                    if self.cache.1 == i {
                        self.cache = (NO_REGION, 0);
                    }
                }
            }
            Slot::Large { .. } => return Err(not),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
