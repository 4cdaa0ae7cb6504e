//! The tracker handed over as it lies (`kho-tracker-v4`): its own pages,
//! settled into frames the platform lends, listed by a directory, with a
//! checksum every write keeps up to date, so that freeze writes only a
//! root.
//!
//! Layout (little-endian; see `docs/abi.md`):
//! - [`TrackerRootV4`] (40 bytes, in the blob): the first directory page,
//!   page counts, preserved pages and the checksum of every page.
//! - Directory pages: 511 entries (`phys | kind`: 1 a leaf page, 2 a chunk
//!   page; 0 after the last), then the next directory page (0 on the last).
//!   Leaf pages are listed in leaf order, chunk pages in chunk order.
//! - A leaf page: 32 leaves of 16 words (`[pages, tails]` for each of 8
//!   words of a 2 MiB region's 512 pages). Leaf `i` is leaf `i % 32` of the
//!   `i / 32`th leaf page.
//! - A chunk page (1 GiB): 512 `u32` slots, one per 2 MiB region (0 empty;
//!   top two bits 1 inline: `offset | order << 9`; 2 leaf: its index; 3
//!   large: `head | order << 9`, the block starting at region `head` of the
//!   chunk), then the chunk's index (64 bits, as two words), its dense
//!   base (`u32::MAX` if sparse), and zeros.
//! - The checksum: each word of each page times its weight (odd, one per
//!   word: see `docs/abi.md`), summed.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use super::chain::Summary;
use super::pages::{Page, weighted};
use super::table::{DENSE_WORD, KEY_WORD, PAGE_WORDS};
use super::{REGION_SHIFT, Tracker, TrackerChainError, leaf, table};
use crate::chain::{ChainError, PageSource};
use crate::platform::FrameAlloc;
use crate::ranges::Range;
use crate::reserve::{Kept, Reserve};
use alloc::vec::Vec;
use zerocopy::byteorder::little_endian::{U32, U64};

pub(crate) use crate::abi::tracker::{TRACKER_VERSION_V4, TrackerRootV4};
mod read;
pub use read::restore;

/// Entries of a directory page; its last word links the next.
const DIR_ENTRIES: usize = 511;
/// Kind of a directory entry: a leaf page.
const KIND_LEAF: u64 = 1;
/// Kind of a directory entry: a chunk page.
const KIND_CHUNK: u64 = 2;
/// The low bits of an entry that hold its kind.
const KIND_MASK: u64 = 0xfff;
/// Leaves in a leaf page.
const PAGE_LEAVES: u64 = 32;
/// Most pages of each kind a reader accepts (16 GiB of metadata).
const MAX_PAGES: u32 = 1 << 22;
/// Regions per chunk.
const CHUNK: u64 = 512;
/// A slot holding a 2 MiB block that starts in its own region, but for
/// the region's offset (the low 9 bits).
const LARGE_2M: u32 = 3 << 30 | 9 << 9;

/// The odd constant of a directory page's weights.
const DIR_K: u64 = 0xd6e8_feb8_6659_fd93;

/// The weight of word `j` of directory page `d` in the checksum.
fn dir_weight(d: u32, j: usize) -> u64 {
    ((u64::from(d) << 9 | j as u64) << 1 | 1).wrapping_mul(DIR_K)
}

/// The directory: lent pages that list every settled page of the tracker.
#[derive(Default)]
pub(super) struct Directory {
    pages: Vec<Page<[u64; 512]>>,
    /// Entries written.
    entries: usize,
    /// Leaf and chunk pages listed so far.
    leaves: usize,
    chunks: usize,
    /// The checksum of the directory's pages.
    sum: u64,
}

impl Directory {
    /// Writes word `j` of page `d`, the sum kept.
    fn write(&mut self, d: usize, j: usize, v: u64) {
        let Some(word) = self.pages.get_mut(d).and_then(|p| p.get_mut().get_mut(j)) else {
            return;
        };
        let old = core::mem::replace(word, v);
        self.sum = self
            .sum
            .wrapping_add(v.wrapping_sub(old).wrapping_mul(dir_weight(d as u32, j)));
    }

    /// Appends an entry; `false` if no page could be lent for it.
    fn push(&mut self, p: &mut impl FrameAlloc, entry: u64) -> bool {
        let (d, j) = (self.entries / DIR_ENTRIES, self.entries % DIR_ENTRIES);
        if d == self.pages.len() {
            let Some(frame) = p.lend() else {
                return false;
            };
            let (phys, bytes) = frame.into_parts();
            let Ok(words) = <[u64; 512] as zerocopy::FromBytes>::mut_from_bytes(bytes) else {
                return false;
            };
            if self.pages.try_reserve(1).is_err() {
                return false;
            }
            self.pages.push(Page::Lent { phys, data: words });
            if let Some(prev) = d.checked_sub(1) {
                self.write(prev, DIR_ENTRIES, phys);
            }
        }
        self.write(d, j, entry);
        self.entries = self.entries.saturating_add(1);
        true
    }

    /// The first page's address, if any.
    fn first(&self) -> u64 {
        self.pages.first().and_then(Page::phys).unwrap_or(0)
    }
}

impl Tracker {
    /// Hands the tracker over as it lies (what freeze does), for tools on
    /// the host fake (see
    /// [`HostMem::lend_frames`](crate::platform::host::HostMem::lend_frames)).
    #[cfg(any(test, feature = "host"))]
    pub fn in_place(&mut self, p: &mut crate::platform::host::HostMem) -> Option<TrackerRootV4> {
        self.hand_over_in_place(p)
    }

    /// Settles the pages made since the last call into frames `p` lends
    /// and lists them in the directory: what an owner calls after each
    /// change, so that handing over finds nothing left to do. `false` if
    /// `p` lent too few frames (nothing is lost; a later call goes on).
    pub(crate) fn keep_in_place(&mut self, p: &mut impl FrameAlloc) -> bool {
        if !self.settle(p) {
            return false;
        }
        while let Some(phys) = self.leaves.pages().page_phys(self.dir.leaves) {
            if !self.dir.push(p, phys | KIND_LEAF) {
                return false;
            }
            self.dir.leaves = self.dir.leaves.saturating_add(1);
        }
        while let Some(phys) = self.table.pages().page_phys(self.dir.chunks) {
            if !self.dir.push(p, phys | KIND_CHUNK) {
                return false;
            }
            self.dir.chunks = self.dir.chunks.saturating_add(1);
        }
        true
    }

    /// Settles every page of the tracker into frames `p` lends, lists the
    /// new ones in the directory, and returns the root that hands the
    /// tracker over as it lies: constant work once every page is settled
    /// (pages settle as they are made when the owner settles after each
    /// change). `None` if `p` lends too few frames (the caller writes the
    /// chain instead; nothing is lost, and a later call goes on).
    pub(crate) fn hand_over_in_place(&mut self, p: &mut impl FrameAlloc) -> Option<TrackerRootV4> {
        if !self.keep_in_place(p) {
            return None;
        }
        let sum = self.sum().wrapping_add(self.dir.sum);
        Some(TrackerRootV4 {
            dir: self.dir.first().into(),
            dir_pages: (self.dir.pages.len() as u32).into(),
            flags: 0.into(),
            leaf_pages: (self.dir.leaves as u32).into(),
            chunk_pages: (self.dir.chunks as u32).into(),
            preserved_pages: self.page_count.into(),
            sum: sum.into(),
        })
    }
}

impl Tracker {
    /// Drops the tracker, its lent frames given back to `p` and freed (a
    /// tool or test that does not hand it over).
    #[cfg(any(test, feature = "host"))]
    pub fn release(self, p: &mut impl FrameAlloc) {
        self.leaves.into_pages().release(p);
        self.table.into_pages().release(p);
        for page in self.dir.pages {
            page.release(p);
        }
    }

    /// Ends the tracker at a handover: every settled page goes back to `p`
    /// as it is (still allocated: the next kernel reads it). A kernel's
    /// frames already lie where the next kernel reads them; a fake that
    /// keeps lent bytes apart (the host's) copies them home here.
    #[cfg(any(test, feature = "host"))]
    pub fn hand_back(self, p: &mut impl FrameAlloc) {
        self.leaves.into_pages().hand_back(p);
        self.table.into_pages().hand_back(p);
        for page in self.dir.pages {
            page.hand_back(p);
        }
    }
}

impl Tracker {
    /// The tracker's own settled pages (leaf, chunk, directory): with the
    /// preserved pages, what the next kernel reads of it.
    pub(crate) fn own_pages(&self) -> impl Iterator<Item = u64> + '_ {
        self.leaves
            .pages()
            .page_addrs()
            .chain(self.table.pages().page_addrs())
            .chain(self.dir.pages.iter().filter_map(Page::phys))
    }

    /// What a kexec must keep for a tracker handed over in place: every
    /// preserved range and every page of the tracker, in address order
    /// (with room for two more ranges, which a loader adds).
    #[cfg(any(test, feature = "arch"))]
    pub(crate) fn kept(&self) -> Result<Vec<Range>, TrackerChainError> {
        let oom = TrackerChainError::Tracker(super::TrackerError::OutOfMemory);
        let ranges = self.ranges().map_err(|_| oom)?;
        let pages = self.own_pages();
        let mut kept = Vec::new();
        kept.try_reserve_exact(
            ranges
                .len()
                .saturating_add(self.dir.entries)
                .saturating_add(self.dir.pages.len())
                .saturating_add(2),
        )
        .map_err(|_| oom)?;
        kept.extend(ranges);
        kept.extend(pages.map(|p| Range::new(p, p.saturating_add(4096))));
        kept.sort_unstable();
        Ok(kept)
    }
}
