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
//! In memory, the tracker maps each 2 MiB region to a 64-bit slot, through a
//! small hash table of 1 GiB chunks that each hold 512 slots. A region holds
//! one small block inline in its slot, or a 128-byte leaf (a bitmap of
//! preserved pages and a bitmap of block heads, which keeps block boundaries
//! exact), or is covered by a block of 2 MiB or more. Its memory grows with
//! what is preserved, never with RAM; running out of it is a typed error
//! with no partial state.
//!
//! At handover, [`handover`] writes the preserved set as a chain of pages of
//! address-ordered records (coalesced extents and, for fragmented regions,
//! bitmaps), which the next kernel walks in place.

pub mod handover;
mod table;

use crate::ranges::Range;
use alloc::vec::Vec;
use core::fmt;
use table::{RegionTable, Slot};

/// Largest block order: 2^18 pages = 1 GiB.
pub const MAX_ORDER: u32 = 18;
/// Physical addresses are below `1 << PHYS_BITS`.
pub const PHYS_BITS: u32 = 52;
/// log2 of the region size (2 MiB) the tracker is organised by.
pub const REGION_SHIFT: u32 = 21;
/// Pages in a region.
pub const REGION_PAGES: u64 = 1 << (REGION_SHIFT - PAGE_SHIFT);
/// Small blocks a region holds in its slot before it moves to a leaf. One
/// keeps isolated pages cheap in memory; a second block in the region moves
/// it to a leaf, which the fast paths serve (measured faster than three
/// inline entries on mixed workloads).
const INLINE_MAX: usize = 1;
/// Smallest order whose blocks cover whole regions.
const LARGE_ORDER: u32 = REGION_SHIFT - PAGE_SHIFT;
const PAGE_SHIFT: u32 = crate::PAGE_SHIFT;

/// Why a tracker operation was refused. The tracker is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackerError {
    /// The order is above [`MAX_ORDER`].
    OrderTooLarge {
        /// The order asked for.
        order: u32,
    },
    /// The address is not aligned to the block's size.
    Misaligned {
        /// Start of the block.
        phys: u64,
        /// Order of the block.
        order: u32,
    },
    /// The block reaches past the 52-bit physical address space.
    OutOfRange {
        /// Start of the block.
        phys: u64,
    },
    /// The exact block is already preserved.
    AlreadyPreserved {
        /// Start of the block.
        phys: u64,
        /// Order of the block.
        order: u32,
    },
    /// The block overlaps a preserved block of another size or place (a page
    /// inside a preserved folio, or a folio over a preserved page).
    Overlap {
        /// Start of the block.
        phys: u64,
        /// Order of the block.
        order: u32,
    },
    /// The block lies (partly) in a scratch area, which never holds
    /// preserved memory.
    InScratch {
        /// Start of the block.
        phys: u64,
        /// Order of the block.
        order: u32,
    },
    /// Unpreserve of a block that is not preserved as exactly that block.
    NotPreserved {
        /// Start of the block.
        phys: u64,
        /// Order of the block.
        order: u32,
    },
    /// A byte range that is empty, inverted or not page aligned.
    BadRange {
        /// Start of the range.
        start: u64,
        /// End of the range.
        end: u64,
    },
    /// No memory for the tracker's own structures.
    OutOfMemory,
}

impl fmt::Display for TrackerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use TrackerError::*;
        match *self {
            OrderTooLarge { order } => write!(f, "order {order} is above the maximum {MAX_ORDER}"),
            Misaligned { phys, order } => {
                write!(f, "block {phys:#x} is not aligned to order {order}")
            }
            OutOfRange { phys } => write!(
                f,
                "block {phys:#x} reaches past the {PHYS_BITS}-bit physical space"
            ),
            AlreadyPreserved { phys, order } => {
                write!(f, "block {phys:#x} order {order} is already preserved")
            }
            Overlap { phys, order } => write!(
                f,
                "block {phys:#x} order {order} overlaps a preserved block"
            ),
            InScratch { phys, order } => {
                write!(f, "block {phys:#x} order {order} is in a scratch area")
            }
            NotPreserved { phys, order } => {
                write!(f, "block {phys:#x} order {order} is not preserved")
            }
            BadRange { start, end } => write!(
                f,
                "bad range [{start:#x}, {end:#x}): empty or not page aligned"
            ),
            OutOfMemory => f.write_str("out of memory for the tracker"),
        }
    }
}

/// One block in a region: page offset and order (below [`LARGE_ORDER`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Small {
    off: u32,
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

/// A 2 MiB region's leaf: which pages are preserved, which start a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct Leaf {
    pages: [u64; 8],
    heads: [u64; 8],
}

/// Mask of bits `[lo, hi)` within word `w` of a 512-bit map.
fn word_mask(w: u32, lo: u32, hi: u32) -> u64 {
    let (base, top) = (w * 64, w * 64 + 64);
    let (a, b) = (lo.max(base), hi.min(top));
    if a >= b {
        return 0;
    }
    let n = b - a;
    let m = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
    m << (a - base)
}

impl Leaf {
    /// For a block inside one word (order 6 or less): its word and mask.
    #[inline(always)]
    fn word_of(b: Small) -> Option<(usize, u64)> {
        /// Bits of a block of order 0 to 6, at bit 0.
        const MASKS: [u64; 7] = [0x1, 0x3, 0xf, 0xff, 0xffff, 0xffff_ffff, u64::MAX];
        let m = *MASKS.get(b.order as usize)?;
        Some(((b.off / 64) as usize, m << (b.off % 64)))
    }

    fn any(&self, lo: u32, hi: u32) -> bool {
        (lo / 64..=(hi - 1) / 64).any(|w| self.pages[w as usize] & word_mask(w, lo, hi) != 0)
    }

    fn all(&self, lo: u32, hi: u32) -> bool {
        (lo / 64..=(hi - 1) / 64).all(|w| {
            let m = word_mask(w, lo, hi);
            self.pages[w as usize] & m == m
        })
    }

    fn page(&self, i: u32) -> bool {
        self.pages[(i / 64) as usize] >> (i % 64) & 1 != 0
    }

    fn head(&self, i: u32) -> bool {
        self.heads[(i / 64) as usize] >> (i % 64) & 1 != 0
    }

    /// Whether `[off, off + 2^order)` is exactly one preserved block.
    fn is_block(&self, b: Small) -> bool {
        let (lo, hi) = (b.off, b.end());
        if !self.head(lo) || !self.all(lo, hi) {
            return false;
        }
        // No other head inside, and the next page does not continue it.
        let inner = (lo / 64..=(hi - 1) / 64)
            .any(|w| self.heads[w as usize] & word_mask(w, lo + 1, hi) != 0);
        !inner && (hi == REGION_PAGES as u32 || !self.page(hi) || self.head(hi))
    }

    /// Preserves `b` if none of its pages is preserved; returns whether it
    /// did. The common case (a block inside one word) is a few instructions.
    #[inline(always)]
    fn try_add(&mut self, b: Small) -> bool {
        if let Some((w, m)) = Self::word_of(b) {
            if self.pages[w] & m != 0 {
                return false;
            }
            self.pages[w] |= m;
            self.heads[w] |= 1 << (b.off % 64);
            return true;
        }
        if self.any(b.off, b.end()) {
            return false;
        }
        self.set(b, true);
        true
    }

    fn set(&mut self, b: Small, on: bool) {
        let (lo, hi) = (b.off, b.end());
        for w in lo / 64..=(hi - 1) / 64 {
            let m = word_mask(w, lo, hi);
            if on {
                self.pages[w as usize] |= m;
            } else {
                self.pages[w as usize] &= !m;
            }
        }
        let (w, bit) = ((lo / 64) as usize, 1u64 << (lo % 64));
        if on {
            self.heads[w] |= bit;
        } else {
            self.heads[w] &= !bit;
        }
    }

    fn is_empty(&self) -> bool {
        self.pages.iter().all(|&w| w == 0)
    }

    /// Runs of preserved pages, `(first page, count)`, in order; words with
    /// no page set are skipped whole.
    fn runs(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let n = REGION_PAGES as u32;
        let mut i = 0u32;
        core::iter::from_fn(move || {
            while i < n {
                let bits = self.pages[(i / 64) as usize] >> (i % 64);
                if bits == 0 {
                    i = (i | 63) + 1;
                    continue;
                }
                i += bits.trailing_zeros();
                let start = i;
                while i < n && self.page(i) {
                    i += 1;
                }
                return Some((start, i - start));
            }
            None
        })
    }

    /// Number of runs: where a page is set and the one before is not.
    fn run_count(&self) -> u32 {
        let mut carry = 0u64;
        self.pages
            .iter()
            .map(|&w| {
                let starts = w & !(w << 1 | carry);
                carry = w >> 63;
                starts.count_ones()
            })
            .sum()
    }
}

/// Records preserved blocks in the first kernel.
///
/// The scratch areas given at construction are never preserved. See the
/// module documentation for the representation.
pub struct Tracker {
    table: RegionTable,
    leaves: Vec<Leaf>,
    free_leaves: Vec<u32>,
    scratch: Vec<Range>,
    /// Last region whose leaf was used, for sequential preserves.
    cache: Option<(u64, u32)>,
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("blocks", &self.blocks())
            .field("pages", &self.pages())
            .field("regions", &self.table.len())
            .field("leaves", &(self.leaves.len() - self.free_leaves.len()))
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
            table: RegionTable::new(),
            leaves: Vec::new(),
            free_leaves: Vec::new(),
            scratch: s,
            cache: None,
        })
    }

    /// The scratch areas this tracker refuses.
    pub fn scratch(&self) -> &[Range] {
        &self.scratch
    }

    /// Number of preserved blocks. Counted on demand (cost grows with the
    /// preserved set), so that preserving stays a few instructions.
    pub fn blocks(&self) -> u64 {
        self.table
            .iter()
            .map(|(r, slot)| match slot {
                Slot::Large { head, .. } => u64::from(head == r),
                Slot::Inline(p) => Slot::unpack(p).iter().flatten().count() as u64,
                Slot::Leaf(i) => self.leaves[i as usize]
                    .heads
                    .iter()
                    .map(|w| u64::from(w.count_ones()))
                    .sum(),
            })
            .sum()
    }

    /// Number of preserved 4 KiB pages, counted on demand.
    pub fn pages(&self) -> u64 {
        self.table
            .iter()
            .map(|(_, slot)| match slot {
                Slot::Large { .. } => REGION_PAGES,
                Slot::Inline(p) => Slot::unpack(p)
                    .iter()
                    .flatten()
                    .map(|e| 1u64 << e.order)
                    .sum(),
                Slot::Leaf(i) => self.leaves[i as usize]
                    .pages
                    .iter()
                    .map(|w| u64::from(w.count_ones()))
                    .sum(),
            })
            .sum()
    }

    /// Bytes of memory the tracker itself uses.
    pub fn memory_bytes(&self) -> usize {
        self.table.memory_bytes()
            + self.leaves.capacity() * core::mem::size_of::<Leaf>()
            + self.free_leaves.capacity() * 4
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

    fn in_scratch(&self, phys: u64, order: u32) -> bool {
        let r = Range::new(phys, phys + (1u64 << (order + PAGE_SHIFT)));
        self.scratch.iter().any(|s| s.overlaps(&r))
    }

    /// Preserves the block of `2^order` pages at `phys`.
    #[inline]
    pub fn preserve(&mut self, phys: u64, order: u32) -> Result<(), TrackerError> {
        // Fast path: a small block in the region used last, which has a leaf.
        if let Some((region, leaf)) = self.cache
            && order < LARGE_ORDER
            && phys >> REGION_SHIFT == region
            && phys & ((1u64 << (order + PAGE_SHIFT)) - 1) == 0
            && !self.scratch_hit(phys, order)
        {
            let b = Small::at(phys, order);
            let l = &mut self.leaves[leaf as usize];
            if !l.try_add(b) {
                return Err(if l.is_block(b) {
                    TrackerError::AlreadyPreserved { phys, order }
                } else {
                    TrackerError::Overlap { phys, order }
                });
            }
            return Ok(());
        }
        // Next fastest, with nothing to allocate: a small block in a region
        // that has a leaf, or any block up to 2 MiB in an empty region of a
        // chunk that exists.
        if order <= LARGE_ORDER
            && phys < (1u64 << PHYS_BITS) - (1u64 << REGION_SHIFT)
            && phys & ((1u64 << (order + PAGE_SHIFT)) - 1) == 0
            && !self.scratch_hit(phys, order)
        {
            let region = phys >> REGION_SHIFT;
            match self.table.find(region) {
                Ok(h) if order < LARGE_ORDER => {
                    if let Slot::Leaf(li) = self.table.slot_at(h) {
                        let b = Small::at(phys, order);
                        if self.leaves[li as usize].try_add(b) {
                            self.cache = Some((region, li));
                            return Ok(());
                        }
                    }
                }
                Err(h) if h != usize::MAX => {
                    // An empty region of a known chunk: nothing to allocate.
                    let slot = if order == LARGE_ORDER {
                        Slot::Large {
                            head: region,
                            order,
                        }
                    } else {
                        Slot::inline(&[Small::at(phys, order)])
                    };
                    self.table.set_at(h, slot);
                    return Ok(());
                }
                _ => {}
            }
        }
        self.preserve_slow(phys, order)
    }

    /// Everything but a small block in the cached region.
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
        }
    }

    #[inline(always)]
    fn scratch_hit(&self, phys: u64, order: u32) -> bool {
        !self.scratch.is_empty() && self.in_scratch(phys, order)
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
            if let Some(slot) = self.table.get(r) {
                return Err(match slot {
                    Slot::Large { head, order: o } if head == r0 && o == order => {
                        TrackerError::AlreadyPreserved { phys, order }
                    }
                    _ => TrackerError::Overlap { phys, order },
                });
            }
        }
        for r in r0..r0 + n {
            self.table.insert(r, Slot::Large { head: r0, order });
        }
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
                self.table.set_at(i, Slot::inline(&[b]));
                return Ok(());
            }
            Ok(i) => i,
        };
        match self.table.slot_at(i) {
            Slot::Large { .. } => Err(TrackerError::Overlap { phys, order }),
            Slot::Leaf(li) => {
                let l = &mut self.leaves[li as usize];
                if !l.try_add(b) {
                    return Err(if l.is_block(b) {
                        TrackerError::AlreadyPreserved { phys, order }
                    } else {
                        TrackerError::Overlap { phys, order }
                    });
                }
                self.cache = Some((region, li));
                Ok(())
            }
            Slot::Inline(packed) => {
                let entries = Slot::unpack(packed);
                for &e in entries.iter().flatten() {
                    if e == b {
                        return Err(TrackerError::AlreadyPreserved { phys, order });
                    }
                    if e.off < b.end() && b.off < e.end() {
                        return Err(TrackerError::Overlap { phys, order });
                    }
                }
                if let Some(free) = entries.iter().take(INLINE_MAX).position(Option::is_none) {
                    let mut e = entries;
                    e[free] = Some(b);
                    self.table.set_at(i, Slot::inline_from(e));
                    return Ok(());
                }
                // Full: move the region to a leaf.
                let li = self.new_leaf()?;
                let l = &mut self.leaves[li as usize];
                for &e in entries.iter().flatten() {
                    l.set(e, true);
                }
                l.set(b, true);
                self.table.set_at(i, Slot::Leaf(li));
                self.cache = Some((region, li));
                Ok(())
            }
        }
    }

    fn new_leaf(&mut self) -> Result<u32, TrackerError> {
        if let Some(i) = self.free_leaves.pop() {
            self.leaves[i as usize] = Leaf::default();
            return Ok(i);
        }
        self.leaves
            .try_reserve(1)
            .map_err(|_| TrackerError::OutOfMemory)?;
        // Reserve room to give the leaf back later without allocating.
        self.free_leaves
            .try_reserve(self.leaves.len() + 1 - self.free_leaves.len())
            .map_err(|_| TrackerError::OutOfMemory)?;
        self.leaves.push(Leaf::default());
        Ok((self.leaves.len() - 1) as u32)
    }

    /// Unpreserves the block of `2^order` pages at `phys`, which must have
    /// been preserved as exactly that block. Never allocates.
    pub fn unpreserve(&mut self, phys: u64, order: u32) -> Result<(), TrackerError> {
        self.check(phys, order)?;
        let not = TrackerError::NotPreserved { phys, order };
        let region = phys >> REGION_SHIFT;
        if order >= LARGE_ORDER {
            let n = 1u64 << (order - LARGE_ORDER);
            match self.table.get(region) {
                Some(Slot::Large { head, order: o }) if head == region && o == order => {}
                _ => return Err(not),
            }
            for r in region..region + n {
                self.table.remove(r);
            }
        } else {
            let b = Small::at(phys, order);
            match self.table.get(region) {
                Some(Slot::Inline(packed)) => {
                    let mut entries = Slot::unpack(packed);
                    let at = entries.iter().position(|e| *e == Some(b)).ok_or(not)?;
                    entries[at] = None;
                    if entries.iter().all(Option::is_none) {
                        self.table.remove(region);
                    } else {
                        self.table.set(region, Slot::inline_from(entries));
                    }
                }
                Some(Slot::Leaf(i)) => {
                    let l = &mut self.leaves[i as usize];
                    if !l.is_block(b) {
                        return Err(not);
                    }
                    l.set(b, false);
                    if l.is_empty() {
                        self.table.remove(region);
                        // Cannot fail: room was reserved in `new_leaf`.
                        self.free_leaves.push(i);
                        if self.cache.is_some_and(|(_, c)| c == i) {
                            self.cache = None;
                        }
                    }
                }
                _ => return Err(not),
            }
        }
        Ok(())
    }

    /// Preserves the page-aligned byte range `[start, end)` as maximal
    /// aligned blocks (see [`range_blocks`]). All or nothing: on error,
    /// blocks preserved by this call are undone.
    pub fn preserve_range(&mut self, start: u64, end: u64) -> Result<(), TrackerError> {
        for (p, order) in range_blocks(start, end)? {
            if let Err(e) = self.preserve(p, order) {
                // Undo what this call did; unpreserve never allocates and
                // these blocks were just preserved, so it cannot fail.
                for (q, o) in range_blocks(start, end)?.take_while(|&(q, _)| q < p) {
                    let _ = self.unpreserve(q, o);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Unpreserves a range preserved by [`preserve_range`](Self::preserve_range)
    /// with the same bounds. All or nothing: every block is checked first.
    pub fn unpreserve_range(&mut self, start: u64, end: u64) -> Result<(), TrackerError> {
        if let Some((phys, order)) = range_blocks(start, end)?.find(|&(p, o)| !self.is_block(p, o))
        {
            return Err(TrackerError::NotPreserved { phys, order });
        }
        for (p, o) in range_blocks(start, end)? {
            self.unpreserve(p, o)?;
        }
        Ok(())
    }

    /// Whether `[phys, 2^order pages)` is preserved as exactly one block.
    pub fn is_block(&self, phys: u64, order: u32) -> bool {
        if self.check(phys, order).is_err() {
            return false;
        }
        let region = phys >> REGION_SHIFT;
        match self.table.get(region) {
            Some(Slot::Large { head, order: o }) => {
                order >= LARGE_ORDER && head == region && o == order
            }
            Some(Slot::Leaf(i)) if order < LARGE_ORDER => {
                self.leaves[i as usize].is_block(Small::at(phys, order))
            }
            Some(Slot::Inline(packed)) if order < LARGE_ORDER => {
                Slot::unpack(packed).contains(&Some(Small::at(phys, order)))
            }
            _ => false,
        }
    }

    /// Whether the page holding `addr` is preserved.
    pub fn is_preserved(&self, addr: u64) -> bool {
        if addr >= 1u64 << PHYS_BITS {
            return false;
        }
        let off = Small::at(addr, 0).off;
        match self.table.get(addr >> REGION_SHIFT) {
            None => false,
            Some(Slot::Large { .. }) => true,
            Some(Slot::Leaf(i)) => self.leaves[i as usize].page(off),
            Some(Slot::Inline(packed)) => Slot::unpack(packed)
                .iter()
                .flatten()
                .any(|e| e.off <= off && off < e.end()),
        }
    }

    /// The preserved regions in address order (their table keys).
    fn sorted_regions(&self) -> Result<impl Iterator<Item = (u64, Slot)> + '_, TrackerError> {
        self.table.sorted().map_err(|_| TrackerError::OutOfMemory)
    }

    /// Calls `f(first pfn, pages)` for each run of preserved pages of the
    /// region `r` whose slot is `slot`, in address order. Shared by
    /// [`ranges`](Self::ranges) and the handover writer.
    fn region_runs<E>(
        &self,
        r: u64,
        slot: Slot,
        mut f: impl FnMut(u64, u64) -> Result<(), E>,
    ) -> Result<(), E> {
        let base = r << (REGION_SHIFT - PAGE_SHIFT);
        match slot {
            Slot::Large { .. } => f(base, REGION_PAGES),
            Slot::Inline(packed) => {
                let mut e = Slot::unpack(packed);
                e.sort_unstable_by_key(|x| x.map_or(u32::MAX, |x| x.off));
                e.into_iter()
                    .flatten()
                    .try_for_each(|s| f(base + u64::from(s.off), 1 << s.order))
            }
            Slot::Leaf(i) => self.leaves[i as usize]
                .runs()
                .try_for_each(|(s, n)| f(base + u64::from(s), u64::from(n))),
        }
    }

    /// The preserved memory as byte ranges in address order, adjacent
    /// blocks coalesced.
    pub fn ranges(&self) -> Result<Vec<Range>, TrackerError> {
        let mut out: Vec<Range> = Vec::new();
        for (r, slot) in self.sorted_regions()? {
            self.region_runs(r, slot, |pfn, n| {
                let r = Range::new(pfn << PAGE_SHIFT, (pfn + n) << PAGE_SHIFT);
                match out.last_mut() {
                    Some(last) if last.end == r.start => last.end = r.end,
                    _ => {
                        out.try_reserve(1).map_err(|_| TrackerError::OutOfMemory)?;
                        out.push(r);
                    }
                }
                Ok(())
            })?;
        }
        Ok(out)
    }
}

/// The maximal aligned blocks `(phys, order)` that make up the page-aligned
/// byte range `[start, end)`, in address order: each of order
/// `min(alignment of its start, size left, MAX_ORDER)`.
pub fn range_blocks(
    start: u64,
    end: u64,
) -> Result<impl Iterator<Item = (u64, u32)>, TrackerError> {
    let page = 1u64 << PAGE_SHIFT;
    if end <= start || !start.is_multiple_of(page) || !end.is_multiple_of(page) {
        return Err(TrackerError::BadRange { start, end });
    }
    let mut p = start;
    Ok(core::iter::from_fn(move || {
        (p < end).then(|| {
            let o = block_order(p, end);
            let block = (p, o);
            p += 1 << (o + PAGE_SHIFT);
            block
        })
    }))
}

/// Order of the largest aligned block at page-aligned `p` that fits before
/// `end`.
pub fn block_order(p: u64, end: u64) -> u32 {
    let align = (p >> PAGE_SHIFT).trailing_zeros();
    let fit = 63 - ((end - p) >> PAGE_SHIFT).leading_zeros();
    align.min(fit).min(MAX_ORDER)
}

#[cfg(test)]
mod tests;
