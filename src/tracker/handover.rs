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

use super::leaf::{Edges, map_runs, map_span};
use super::table::Slot;
use super::{PAGE_SHIFT, REGION_PAGES, REGION_SHIFT, Tracker, TrackerError};
use crate::chain::{self, ChainError, Format};
pub(crate) use crate::chain::{PageSink, PageSource};
use crate::ranges::Range;
use crate::reserve::{Kept, Reserve, ReserveError};
use alloc::vec::Vec;
use core::fmt;

pub(crate) use crate::abi::tracker::{
    BITMAP_TAG, MAX_EXTENT_PAGES, PAGE_MAGIC, PAGE_VERSION, PFN_MASK, TRACKER_VERSION, TrackerRoot,
};
pub(crate) use crate::chain::{PAGE_BYTES, PAYLOAD_WORDS};
/// The tracker's page chain: its magic and version.
const FORMAT: Format = Format {
    magic: PAGE_MAGIC,
    version: PAGE_VERSION,
};

/// Errors writing or reading the handed-over tracker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoverError {
    /// The tracker could not be read (out of memory sorting it).
    Tracker(TrackerError),
    /// The page chain is invalid, or no page could be had for it.
    Chain(ChainError),
    /// The root is implausible (no page, too many pages, flags set).
    BadRoot,
    /// A record runs past its page's words, or is malformed.
    BadRecord {
        /// The page's physical address.
        phys: u64,
        /// Index of the word in the page's payload.
        word: u32,
    },
    /// A record starts before the previous one ends.
    Unordered {
        /// The page's physical address.
        phys: u64,
        /// Index of the word in the page's payload.
        word: u32,
    },
    /// A preserved range is not inside RAM.
    RangeNotInRam {
        /// The range.
        range: Range,
    },
    /// A preserved range overlaps a scratch area.
    RangeInScratch {
        /// The range.
        range: Range,
    },
    /// The records or pages add up to other totals than the root says.
    CountMismatch,
    /// A chain page lies inside a preserved range: freeing the chain after
    /// restore would free preserved memory.
    ChainPageInPreserved {
        /// The page's physical address.
        phys: u64,
    },
    /// The caller's reservation store refused a range.
    Reserve(ReserveError),
}

impl From<TrackerError> for HandoverError {
    fn from(e: TrackerError) -> Self {
        HandoverError::Tracker(e)
    }
}

impl From<ChainError> for HandoverError {
    fn from(e: ChainError) -> Self {
        match e {
            ChainError::OutOfMemory => HandoverError::Tracker(TrackerError::OutOfMemory),
            ChainError::Refused { phys } => HandoverError::ChainPageInPreserved { phys },
            ChainError::BadLength => HandoverError::BadRoot,
            e => HandoverError::Chain(e),
        }
    }
}

impl fmt::Display for HandoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use HandoverError::*;
        match self {
            Tracker(e) => write!(f, "tracker: {e}"),
            Chain(e) => write!(f, "tracker chain: {e}"),
            BadRoot => f.write_str("tracker root is implausible"),
            BadRecord { phys, word } => {
                write!(f, "tracker chain page {phys:#x}: bad record at word {word}")
            }
            Unordered { phys, word } => write!(
                f,
                "tracker chain page {phys:#x}: record at word {word} is out of order"
            ),
            RangeNotInRam { range } => write!(f, "preserved range {range} is not RAM"),
            RangeInScratch { range } => {
                write!(f, "preserved range {range} is in a scratch area")
            }
            CountMismatch => f.write_str("tracker records do not add up to the root's totals"),
            ChainPageInPreserved { phys } => write!(
                f,
                "tracker chain page {phys:#x} lies inside a preserved range"
            ),
            Reserve(e) => write!(f, "reserving the handed-over tracker: {e}"),
        }
    }
}

/// The error a variant wraps, when it wraps one.
impl core::error::Error for HandoverError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            HandoverError::Tracker(e) => Some(e),
            HandoverError::Chain(e) => Some(e),
            HandoverError::Reserve(e) => Some(e),
            _ => None,
        }
    }
}

/// Where the record layout goes: a buffer (the usual case), a page counter
/// or, without memory for the buffer, the chain itself. The layout decides
/// where pages break (records never split), so all three agree.
trait Words {
    /// Makes room for `n` more words.
    fn reserve(&mut self, n: usize) -> Result<(), HandoverError>;
    /// Ends the current chain page; the next word starts a new one.
    fn page_break(&mut self) -> Result<(), HandoverError>;
    /// Appends a word to the current page (after `reserve`).
    fn push(&mut self, w: u64) -> Result<(), HandoverError>;
}

/// The records laid out once, in a buffer: their words in order, and
/// where each chain page after the first starts.
#[derive(Default)]
struct Layout {
    words: Vec<u64>,
    /// Index in `words` of each later page's first record.
    breaks: Vec<usize>,
}

const OOM: HandoverError = HandoverError::Tracker(TrackerError::OutOfMemory);

impl Words for Layout {
    #[inline(always)]
    fn reserve(&mut self, n: usize) -> Result<(), HandoverError> {
        self.words.try_reserve(n).map_err(|_| OOM)
    }
    #[inline(always)]
    fn page_break(&mut self) -> Result<(), HandoverError> {
        self.breaks.try_reserve(1).map_err(|_| OOM)?;
        self.breaks.push(self.words.len());
        Ok(())
    }
    #[inline(always)]
    fn push(&mut self, w: u64) -> Result<(), HandoverError> {
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
    fn reserve(&mut self, _: usize) -> Result<(), HandoverError> {
        Ok(())
    }
    fn page_break(&mut self) -> Result<(), HandoverError> {
        self.0 = self.0.saturating_add(1);
        Ok(())
    }
    fn push(&mut self, _: u64) -> Result<(), HandoverError> {
        Ok(())
    }
}

/// Writes a layout straight into the chain, a word at a time.
impl<S: PageSink> Words for chain::Writer<'_, S> {
    fn reserve(&mut self, _: usize) -> Result<(), HandoverError> {
        Ok(())
    }
    fn page_break(&mut self) -> Result<(), HandoverError> {
        Ok(self.next_page()?)
    }
    fn push(&mut self, w: u64) -> Result<(), HandoverError> {
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
/// is then smaller). One pass, its state in locals: this is the handover's
/// hot path, a few instructions a run.
fn lay_out<W: Words>(tracker: &Tracker, out: &mut W) -> Result<Totals, HandoverError> {
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
                        edges.each::<HandoverError>(runs, |s, n| {
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
pub fn write<S: PageSink>(tracker: &Tracker, sink: &mut S) -> Result<TrackerRoot, HandoverError> {
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
) -> Result<TrackerRoot, HandoverError> {
    write_chain(tracker, sink, None)
}

/// Takes the chain's pages and writes the records into them: from the
/// layout if there is one, else laid out again straight into the chain.
fn write_chain<S: PageSink>(
    tracker: &Tracker,
    sink: &mut S,
    buffered: Option<(Layout, Totals)>,
) -> Result<TrackerRoot, HandoverError> {
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
        Some((lay, t)) => lay.write(&mut w).map(|()| *t).map_err(HandoverError::from),
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

/// Gives back the chain pages of a handover this kernel wrote and will not
/// hand over after all (a refused kexec, a benchmark's next round).
pub fn free<S: PageSink + PageSource>(sink: &mut S, root: &TrackerRoot) {
    chain::free_pages(sink, root.first_page.get(), root.pages.get());
}

/// What a walk of a handed-over tracker found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Coalesced preserved ranges.
    pub ranges: u64,
    /// Preserved 4 KiB pages.
    pub pages: u64,
    /// Records read.
    pub records: u64,
    /// Chain pages read.
    pub chain_pages: u32,
}

/// Reads a handed-over tracker in place, checking every pointer and record.
pub struct Reader<'a, M: PageSource> {
    mem: &'a M,
    root: TrackerRoot,
    ram: &'a [Range],
    scratch: &'a [Range],
}

/// The look-ahead over the chain pages (see `Reader::check_clear`).
struct Ahead {
    /// The chain page it stands on; 0 once past the last.
    phys: u64,
    /// That page's position in the chain.
    seq: u32,
}

/// The [`Reserve`] of the validation pass: it records nothing.
struct NoReserve;

impl Reserve for NoReserve {
    #[inline(always)]
    fn reserve(&mut self, _: Range, _: Kept) -> Result<(), ReserveError> {
        Ok(())
    }
    fn rollback(&mut self) {}
}

/// The bytes of frames `[first, end)`.
fn frames(first: u64, end: u64) -> Range {
    Range::new(first << PAGE_SHIFT, end << PAGE_SHIFT)
}

impl<'a, M: PageSource> Reader<'a, M> {
    /// A reader of the chain at `root`. `ram` is the RAM of the memory map
    /// and `scratch` the scratch areas, as this kernel knows them.
    pub fn new(mem: &'a M, root: TrackerRoot, ram: &'a [Range], scratch: &'a [Range]) -> Self {
        Self {
            mem,
            root,
            ram,
            scratch,
        }
    }

    /// Walks the whole chain without side effects, checking everything.
    pub fn validate(&self) -> Result<Summary, HandoverError> {
        self.walk_impl::<false, _>(&mut NoReserve)
    }

    /// Reads the chain once, checking everything, and reports each chain
    /// page (as [`Kept::Metadata`]) and each preserved range (as
    /// [`Kept::Preserved`], address order, coalesced) to `out` as it goes.
    /// On any error it calls `out.rollback()` before returning it, so the
    /// caller acts on the whole map or on nothing.
    pub fn restore(&self, out: &mut impl Reserve) -> Result<Summary, HandoverError> {
        let r = self.walk_impl::<true, _>(out);
        if r.is_err() {
            out.rollback();
        }
        r
    }

    /// The walk; with `REPORT` false it only checks (no coalescing, no
    /// reports), which is what [`validate`](Self::validate) needs.
    fn walk_impl<const REPORT: bool, R: Reserve>(
        &self,
        out: &mut R,
    ) -> Result<Summary, HandoverError> {
        let root = self.root;
        if root.flags.get() != 0 {
            return Err(HandoverError::BadRoot);
        }
        let mut pages = chain::Pages::new(
            self.mem,
            FORMAT,
            root.first_page.get(),
            root.pages.get(),
            self.ram,
            self.scratch,
        )?;
        let mut sum = Summary::default();
        // End (pfn) of the last record; records must start at or after it.
        let mut floor = 0u64;
        let mut pending: Option<Range> = None;
        // Coalesces adjacent ranges before handing them on.
        #[inline(always)]
        fn emit<R: Reserve>(
            pending: &mut Option<Range>,
            r: Range,
            sum: &mut Summary,
            out: &mut R,
        ) -> Result<(), HandoverError> {
            match pending {
                Some(p) if p.end == r.start => p.end = r.end,
                _ => {
                    if let Some(p) = pending.replace(r) {
                        // No more ranges than records: cannot wrap.
                        sum.ranges = sum.ranges.wrapping_add(1);
                        out.reserve(p, Kept::Preserved)
                            .map_err(HandoverError::Reserve)?;
                    }
                }
            }
            Ok(())
        }
        // The frames from the last checked run up to `limit` are in one RAM
        // range and clear of every scratch area. Records are sorted, so a
        // run that ends at or below `limit` is fine without a search (it
        // starts at or above the floor, after that run); the first record
        // sets it.
        let mut limit = 0u64;
        // Chain pages are sorted too: `ahead` walks them beside the records
        // and stops at the first chain page that ends above the current
        // run's start, so that every run is checked against the chain pages
        // in one comparison.
        let mut ahead = Ahead {
            phys: root.first_page.get(),
            seq: 0,
        };
        while let Some(page) = pages.next_page() {
            let chain::Page { phys, words } = page?;
            if REPORT {
                let r = Range::new(phys, phys.saturating_add(PAGE_BYTES as u64));
                out.reserve(r, Kept::Metadata)
                    .map_err(HandoverError::Reserve)?;
            }
            sum.chain_pages = sum.chain_pages.saturating_add(1);
            let nwords = words.len();
            let word = |i: usize| words.get(i).map(|w| w.get());
            let mut i = 0usize;
            while i < nwords {
                let at = i as u32;
                let w = word(i).ok_or(HandoverError::BadRecord { phys, word: at })?;
                let pfn = (w >> 23) & PFN_MASK;
                if pfn < floor {
                    return Err(HandoverError::Unordered { phys, word: at });
                }
                if w & BITMAP_TAG == 0 {
                    // Plain wrapping arithmetic on the hot path, none of it
                    // can wrap: `pfn` is below 2^40 and a run below 2^23
                    // pages, so `end` is below 2^41; the pages counted
                    // are at most 2^23 per word of at most 2^19 pages of
                    // 508 words (below 2^51); `i` is below 508.
                    let n = (w & ((1 << 23) - 1)).wrapping_add(1);
                    let end = pfn.wrapping_add(n);
                    if end > limit {
                        limit = self.check_frames(pfn, end)?;
                    }
                    self.check_clear(&pages, &mut ahead, pfn, end)?;
                    sum.pages = sum.pages.wrapping_add(n);
                    floor = end;
                    if REPORT {
                        emit(&mut pending, frames(pfn, end), &mut sum, out)?;
                    }
                    i = i.wrapping_add(1);
                } else {
                    if w & ((1 << 23) - 1) != 0
                        || !pfn.is_multiple_of(REGION_PAGES)
                        || i.saturating_add(9) > nwords
                    {
                        return Err(HandoverError::BadRecord { phys, word: at });
                    }
                    let mut map = [0u64; 8];
                    for (k, m) in map.iter_mut().enumerate() {
                        *m = word(i.saturating_add(1).saturating_add(k))
                            .ok_or(HandoverError::BadRecord { phys, word: at })?;
                    }
                    // The span from the first set bit to the last: if it
                    // passes, every run does.
                    let Some((lo, hi)) = map_span(&map) else {
                        return Err(HandoverError::BadRecord { phys, word: at });
                    };
                    let (lo, hi) = (
                        pfn.saturating_add(u64::from(lo)),
                        pfn.saturating_add(u64::from(hi)),
                    );
                    let in_ram = if hi > limit {
                        match self.check_frames(lo, hi) {
                            Ok(l) => {
                                limit = l;
                                true
                            }
                            Err(_) => false,
                        }
                    } else {
                        true
                    };
                    // A chain page inside the span may still sit in a hole
                    // of the bitmap: then each run is checked.
                    let clear = self.check_clear(&pages, &mut ahead, lo, hi).is_ok();
                    sum.pages = sum
                        .pages
                        .saturating_add(map.iter().map(|m| u64::from(m.count_ones())).sum());
                    if REPORT || !in_ram || !clear {
                        // Each run: checked on its own unless the span was.
                        for (s, n) in map_runs(map) {
                            let first = pfn.saturating_add(u64::from(s));
                            let end = first.saturating_add(u64::from(n));
                            if !in_ram {
                                self.check_frames(first, end)?;
                            }
                            if !clear {
                                self.check_clear(&pages, &mut ahead, first, end)?;
                            }
                            if REPORT {
                                emit(&mut pending, frames(first, end), &mut sum, out)?;
                            }
                        }
                    }
                    floor = pfn.saturating_add(REGION_PAGES);
                    i = i.saturating_add(9);
                }
                // At most 2^19 pages of 508 records: cannot wrap.
                sum.records = sum.records.wrapping_add(1);
            }
        }
        if let Some(p) = pending.take() {
            sum.ranges = sum.ranges.saturating_add(1);
            out.reserve(p, Kept::Preserved)
                .map_err(HandoverError::Reserve)?;
        }
        if sum.records != root.records.get() || sum.pages != root.preserved_pages.get() {
            return Err(HandoverError::CountMismatch);
        }
        Ok(sum)
    }

    /// Checks that no chain page lies in the frames `[first, end)`. `ahead`
    /// only moves forward: runs come in increasing order, and so do chain
    /// pages. A chain page below `first` is left behind for good.
    #[inline(always)]
    fn check_clear(
        &self,
        pages: &chain::Pages<'a, M>,
        ahead: &mut Ahead,
        first: u64,
        end: u64,
    ) -> Result<(), HandoverError> {
        let (start, end) = (first << PAGE_SHIFT, end << PAGE_SHIFT);
        while ahead.phys != 0 && ahead.phys.saturating_add(PAGE_BYTES as u64) <= start {
            Self::advance(pages, ahead)?;
        }
        if ahead.phys != 0 && ahead.phys < end {
            return Err(HandoverError::ChainPageInPreserved { phys: ahead.phys });
        }
        Ok(())
    }

    /// Moves `ahead` to the next chain page (0 past the last). Its page is
    /// checked as the main walk checks it; the main walk then checks every
    /// header field again when it gets there.
    #[cold]
    fn advance(pages: &chain::Pages<'a, M>, ahead: &mut Ahead) -> Result<(), HandoverError> {
        ahead.seq = ahead.seq.saturating_add(1);
        if ahead.seq >= pages.total() {
            ahead.phys = 0;
            return Ok(());
        }
        ahead.phys = pages.link(ahead.phys)?;
        Ok(())
    }

    /// Checks the frames `[first, end)` (not empty): inside one RAM range
    /// and clear of every scratch area. Returns how far above them frames
    /// stay so (the end of that RAM range, or the next scratch area), or
    /// the error.
    #[cold]
    fn check_frames(&self, first: u64, end: u64) -> Result<u64, HandoverError> {
        let range = frames(first, end);
        let not_ram = HandoverError::RangeNotInRam { range };
        // Frames of the physical address space: the limit never passes it.
        let space = 1 << (super::PHYS_BITS - PAGE_SHIFT);
        if end > space {
            return Err(not_ram);
        }
        // A RAM range's whole frames: start rounded up, end down.
        let whole = |r: &Range| (r.start.div_ceil(PAGE_BYTES as u64), r.end >> PAGE_SHIFT);
        let (_, ram_end) = self
            .ram
            .iter()
            .map(whole)
            .find(|&(s, e)| s <= first && end <= e)
            .ok_or(not_ram)?;
        let mut limit = ram_end.min(space);
        for s in self.scratch {
            // Frames the scratch area touches: start rounded down, end up.
            let (ss, se) = (s.start >> PAGE_SHIFT, s.end.div_ceil(PAGE_BYTES as u64));
            if s.is_empty() {
                continue;
            }
            if ss < end && first < se {
                return Err(HandoverError::RangeInScratch { range });
            }
            if ss >= end {
                limit = limit.min(ss);
            }
        }
        Ok(limit)
    }
}
