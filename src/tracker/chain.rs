//! The tracker's handed-over form (`kho-tracker-v3`): a chain of 4 KiB
//! pages of address-ordered records that the next kernel walks in place.
//!
//! Layout (all little-endian; see `docs/abi.md`):
//! - [`TrackerRoot`] (32 bytes, stored by the caller, e.g. in the FDT):
//!   first page, page count, record count, preserved page count.
//! - Each chain page: `magic u32 = "KHOT"`, `version u16 = 3`,
//!   `flags u16 = 0`, `next u64` (0 on the last page), `seq u32` (0, 1, ...),
//!   `words u32` (payload words used), `sum u64` (the page's `kho-sum64`),
//!   then up to 508 payload `u64` words (0 past `words`).
//! - Records, never split across pages, strictly increasing in address and
//!   never overlapping:
//!   - extent: bit 63 = 0, bits 62..23 = first page frame number (40 bits),
//!     bits 22..0 = page count - 1;
//!   - bitmap: bit 63 = 1, bits 62..23 = frame number of a 512-page aligned
//!     region, bits 22..0 = 0, followed by 8 words: bit `i` set = page
//!     `region + i` preserved (at least one bit set).
//!
//! Chain pages are linked in strictly increasing physical order, are never
//! in a scratch area and never inside a preserved range: the reader reports
//! them as metadata, which the next kernel may free after restore. The
//! reader reads each chain page once, reporting as it goes into a
//! [`Reserve`] transaction that it rolls back on any error.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use super::TrackerChainError;
use super::leaf::{Edges, map_runs, map_span};
use super::table::Slot;
use super::{PAGE_SHIFT, REGION_PAGES, REGION_SHIFT, Tracker, TrackerError};
use crate::chain::{self, ChainError, Format};
pub(crate) use crate::chain::{PageSink, PageSource};
use crate::ranges::Range;
use crate::reserve::{Kept, Reserve};
use alloc::vec::Vec;

pub(crate) use crate::abi::tracker::{
    BITMAP_TAG, MAX_EXTENT_PAGES, PAGE_MAGIC, PAGE_VERSION, PFN_MASK, TRACKER_VERSION, TrackerRoot,
};
pub(crate) use crate::chain::{PAGE_BYTES, PAYLOAD_WORDS};
mod read;
pub use read::{Reader, Summary};

/// The tracker's page chain: its magic and version.
const FORMAT: Format = Format {
    magic: PAGE_MAGIC,
    version: PAGE_VERSION,
};

/// Where the record layout goes: a buffer (the usual case), a page counter
/// or, without memory for the buffer, the chain itself. The layout decides
/// where pages break (records never split), so all three agree.
trait Words {
    /// Makes room for `n` more words.
    fn reserve(&mut self, n: usize) -> Result<(), TrackerChainError>;
    /// Ends the current chain page; the next word starts a new one.
    fn page_break(&mut self) -> Result<(), TrackerChainError>;
    /// Appends a word to the current page (after `reserve`).
    fn push(&mut self, w: u64) -> Result<(), TrackerChainError>;
}

/// The records laid out once, in a buffer: their words in order, and
/// where each chain page after the first starts.
#[derive(Default)]
struct Layout {
    words: Vec<u64>,
    /// Index in `words` of each later page's first record.
    breaks: Vec<usize>,
}

const OOM: TrackerChainError = TrackerChainError::Tracker(TrackerError::OutOfMemory);

impl Words for Layout {
    #[inline(always)]
    fn reserve(&mut self, n: usize) -> Result<(), TrackerChainError> {
        self.words.try_reserve(n).map_err(|_| OOM)
    }
    #[inline(always)]
    fn page_break(&mut self) -> Result<(), TrackerChainError> {
        self.breaks.try_reserve(1).map_err(|_| OOM)?;
        self.breaks.push(self.words.len());
        Ok(())
    }
    #[inline(always)]
    fn push(&mut self, w: u64) -> Result<(), TrackerChainError> {
        self.words.push(w);
        Ok(())
    }
}

impl Layout {
    /// Chain pages the records take (at least one).
    fn pages(&self) -> usize {
        self.breaks.len().saturating_add(1)
    }

    /// Writes the laid-out records a page at a time.
    fn write<S: PageSink>(&self, chain: &mut chain::Writer<'_, S>) -> Result<(), ChainError> {
        let mut from = 0;
        for &to in self
            .breaks
            .iter()
            .chain(core::iter::once(&self.words.len()))
        {
            // Each page's words end at a record boundary and fit a page,
            // so the writer takes them as one record.
            chain.record(self.words.get(from..to).unwrap_or(&[]))?;
            from = to;
        }
        Ok(())
    }
}

/// Counts the chain pages a layout takes.
struct PageCount(usize);

impl Words for PageCount {
    fn reserve(&mut self, _: usize) -> Result<(), TrackerChainError> {
        Ok(())
    }
    fn page_break(&mut self) -> Result<(), TrackerChainError> {
        self.0 = self.0.saturating_add(1);
        Ok(())
    }
    fn push(&mut self, _: u64) -> Result<(), TrackerChainError> {
        Ok(())
    }
}

/// Writes a layout straight into the chain, a word at a time.
impl<S: PageSink> Words for chain::Writer<'_, S> {
    fn reserve(&mut self, _: usize) -> Result<(), TrackerChainError> {
        Ok(())
    }
    fn page_break(&mut self) -> Result<(), TrackerChainError> {
        Ok(self.next_page()?)
    }
    fn push(&mut self, w: u64) -> Result<(), TrackerChainError> {
        Ok(self.record(&[w])?)
    }
}

/// What a layout states in the root.
#[derive(Clone, Copy, Default)]
struct Totals {
    records: u64,
    preserved: u64,
}

/// Lays out every record of the tracker, in address order, into `out`:
/// runs of preserved pages as extents (adjacent runs coalesced, across
/// regions too), a region of more than 9 runs as a bitmap (9 words, which
/// is then smaller). One pass, its state in locals: this is the chain writer's
/// hot path, a few instructions a run.
fn lay_out<W: Words>(tracker: &Tracker, out: &mut W) -> Result<Totals, TrackerChainError> {
    let mut t = Totals::default();
    // Words used in the current chain page.
    let mut fill = 0usize;
    // The extent being built: first frame and pages (0 pages: none). It
    // stays in registers while runs extend it (a file of 2 MiB folios is
    // one extent of hundreds of regions) and is written when it ends.
    let (mut start, mut len) = (0u64, 0u64);
    // None of the arithmetic below can wrap: frame numbers are below 2^40,
    // an extent below 2^23 pages, a page holds 508 words, and the counts
    // are bounded by the tracker's memory.
    // Starts a record of `$words` words: room for them, on this page or
    // the next (records never split), and counted.
    macro_rules! open {
        ($words:expr) => {{
            out.reserve($words)?;
            if fill.wrapping_add($words) > PAYLOAD_WORDS {
                out.page_break()?;
                fill = 0;
            }
            fill = fill.wrapping_add($words);
            t.records = t.records.wrapping_add(1);
        }};
    }
    macro_rules! emit {
        ($start:expr, $len:expr) => {{
            open!(1);
            out.push(($start & PFN_MASK) << 23 | $len.wrapping_sub(1))?;
        }};
    }
    macro_rules! run {
        ($pfn:expr, $n:expr) => {{
            let (pfn, n): (u64, u64) = ($pfn, $n);
            t.preserved = t.preserved.wrapping_add(n);
            if len != 0 && pfn == start.wrapping_add(len) && len.wrapping_add(n) <= MAX_EXTENT_PAGES
            {
                len = len.wrapping_add(n);
            } else {
                if len != 0 {
                    emit!(start, len);
                }
                (start, len) = (pfn, n);
            }
        }};
    }
    for (first, slots) in tracker.sorted_chunks()? {
        for (r, &v) in (first..).zip(slots) {
            if v == 0 {
                continue;
            }
            let base = r << (REGION_SHIFT - PAGE_SHIFT);
            match Slot::decode(v) {
                Slot::Large { .. } => run!(base, REGION_PAGES),
                Slot::Inline(s) => run!(base.wrapping_add(u64::from(s.off)), 1 << s.order),
                Slot::Leaf(i) => {
                    let map = tracker.leaf_pages(i);
                    let edges = Edges::of(&map);
                    let runs = edges.count();
                    if runs > 9 {
                        if len != 0 {
                            emit!(start, len);
                            len = 0;
                        }
                        open!(9);
                        out.push(BITMAP_TAG | (base & PFN_MASK) << 23)?;
                        let mut pages = 0u64;
                        for m in map {
                            out.push(m)?;
                            pages = pages.wrapping_add(u64::from(m.count_ones()));
                        }
                        t.preserved = t.preserved.wrapping_add(pages);
                    } else {
                        edges.each::<TrackerChainError>(runs, |s, n| {
                            run!(base.wrapping_add(u64::from(s)), u64::from(n));
                            Ok(())
                        })?;
                    }
                }
            }
        }
    }
    if len != 0 {
        emit!(start, len);
    }
    debug_assert!(fill <= PAYLOAD_WORDS);
    Ok(t)
}

/// Writes the tracker's preserved set as a chain of pages from `sink` and
/// returns the root to hand over. Pages from `sink` must be outside scratch
/// and outside every preserved block (both checked) and stay untouched until
/// the next kernel has read them. The records are laid out once into a
/// buffer on the heap (as many words as the chain's payload), which says
/// how many pages to take, so the chain can be linked in increasing address
/// order; without memory for the buffer they are laid out twice instead
/// (once to count the pages, once straight into the chain).
pub fn write<S: PageSink>(
    tracker: &Tracker,
    sink: &mut S,
) -> Result<TrackerRoot, TrackerChainError> {
    let mut lay = Layout::default();
    match lay_out(tracker, &mut lay) {
        Ok(t) => write_chain(tracker, sink, Some((lay, t))),
        Err(e) if e == OOM => write_chain(tracker, sink, None),
        Err(e) => Err(e),
    }
}

/// [`write`] without the buffer: the records laid out twice, once to count
/// the pages and once straight into the chain (what `write` does when the
/// heap cannot hold the buffer). The chain is the same, byte for byte.
#[cfg(test)]
pub(super) fn write_unbuffered<S: PageSink>(
    tracker: &Tracker,
    sink: &mut S,
) -> Result<TrackerRoot, TrackerChainError> {
    write_chain(tracker, sink, None)
}

/// Takes the chain's pages and writes the records into them: from the
/// layout if there is one, else laid out again straight into the chain.
fn write_chain<S: PageSink>(
    tracker: &Tracker,
    sink: &mut S,
    buffered: Option<(Layout, Totals)>,
) -> Result<TrackerRoot, TrackerChainError> {
    let count = match &buffered {
        Some((lay, _)) => lay.pages(),
        None => {
            let mut count = PageCount(1);
            lay_out(tracker, &mut count)?;
            count.0
        }
    };
    let pages = chain::alloc_pages(sink, count, tracker.scratch(), |p| !tracker.is_preserved(p))?;
    let mut kept = Vec::new();
    if kept.try_reserve_exact(pages.len()).is_err() {
        for &p in &pages {
            sink.free_page(p);
        }
        return Err(OOM);
    }
    kept.extend_from_slice(&pages);
    let mut w = chain::Writer::new(FORMAT, sink, pages);
    let laid = match &buffered {
        Some((lay, t)) => lay
            .write(&mut w)
            .map(|()| *t)
            .map_err(TrackerChainError::from),
        None => lay_out(tracker, &mut w),
    };
    let written = laid.and_then(|t| {
        let (first, pages) = w.finish()?;
        Ok((first, pages, t))
    });
    let (first, pages, t) = match written {
        Ok(x) => x,
        Err(e) => {
            // A failed write gives every page it took back.
            for &p in &kept {
                sink.free_page(p);
            }
            return Err(e);
        }
    };
    Ok(TrackerRoot {
        first_page: first.into(),
        pages: pages.into(),
        flags: 0.into(),
        records: t.records.into(),
        preserved_pages: t.preserved.into(),
    })
}

/// Gives back the chain pages this kernel wrote and will not
/// hand over after all (a refused kexec, a benchmark's next round).
pub fn free<S: PageSink + PageSource>(sink: &mut S, root: &TrackerRoot) {
    chain::free_pages(sink, root.first_page.get(), root.pages.get());
}
