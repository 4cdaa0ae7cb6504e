//! The reader of a handed-over tracker chain: the next kernel's walk,
//! every pointer and record checked before anything is reserved.

use super::*;
#[cfg(any(test, feature = "tools"))]
use crate::reserve::ReserveError;
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
#[cfg(any(test, feature = "tools"))]
struct NoReserve;

#[cfg(any(test, feature = "tools"))]
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
    #[cfg(any(test, feature = "tools"))]
    pub fn validate(&self) -> Result<Summary, TrackerChainError> {
        self.walk_impl::<false, _>(&mut NoReserve)
    }

    /// Reads the chain once, checking everything, and reports each chain
    /// page (as [`Kept::Metadata`]) and each preserved range (as
    /// [`Kept::Preserved`], address order, coalesced) to `out` as it goes.
    /// On any error it calls `out.rollback()` before returning it, so the
    /// caller acts on the whole map or on nothing.
    pub fn restore(&self, out: &mut impl Reserve) -> Result<Summary, TrackerChainError> {
        crate::reserve::all_or_nothing(out, |out| self.walk_impl::<true, _>(out))
    }

    /// The walk; with `REPORT` false it only checks (no coalescing, no
    /// reports), which is what [`validate`](Self::validate) needs.
    fn walk_impl<const REPORT: bool, R: Reserve>(
        &self,
        out: &mut R,
    ) -> Result<Summary, TrackerChainError> {
        let root = self.root;
        if root.flags.get() != 0 {
            return Err(TrackerChainError::BadRoot);
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
        ) -> Result<(), TrackerChainError> {
            match pending {
                Some(p) if p.end == r.start => p.end = r.end,
                _ => {
                    if let Some(p) = pending.replace(r) {
                        // No more ranges than records: cannot wrap.
                        sum.ranges = sum.ranges.wrapping_add(1);
                        out.reserve(p, Kept::Preserved)
                            .map_err(TrackerChainError::Reserve)?;
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
                    .map_err(TrackerChainError::Reserve)?;
            }
            sum.chain_pages = sum.chain_pages.saturating_add(1);
            let nwords = words.len();
            let word = |i: usize| words.get(i).map(|w| w.get());
            let mut i = 0usize;
            while i < nwords {
                let at = i as u32;
                let w = word(i).ok_or(TrackerChainError::BadRecord { phys, word: at })?;
                let pfn = (w >> 23) & PFN_MASK;
                if pfn < floor {
                    return Err(TrackerChainError::Unordered { phys, word: at });
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
                        return Err(TrackerChainError::BadRecord { phys, word: at });
                    }
                    let mut map = [0u64; 8];
                    for (k, m) in map.iter_mut().enumerate() {
                        *m = word(i.saturating_add(1).saturating_add(k))
                            .ok_or(TrackerChainError::BadRecord { phys, word: at })?;
                    }
                    // The span from the first set bit to the last: if it
                    // passes, every run does.
                    let Some((lo, hi)) = map_span(&map) else {
                        return Err(TrackerChainError::BadRecord { phys, word: at });
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
                .map_err(TrackerChainError::Reserve)?;
        }
        if sum.records != root.records.get() || sum.pages != root.preserved_pages.get() {
            return Err(TrackerChainError::CountMismatch);
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
    ) -> Result<(), TrackerChainError> {
        let (start, end) = (first << PAGE_SHIFT, end << PAGE_SHIFT);
        while ahead.phys != 0 && ahead.phys.saturating_add(PAGE_BYTES as u64) <= start {
            Self::advance(pages, ahead)?;
        }
        if ahead.phys != 0 && ahead.phys < end {
            return Err(TrackerChainError::ChainPageInPreserved { phys: ahead.phys });
        }
        Ok(())
    }

    /// Moves `ahead` to the next chain page (0 past the last). Its page is
    /// checked as the main walk checks it; the main walk then checks every
    /// header field again when it gets there.
    #[cold]
    fn advance(pages: &chain::Pages<'a, M>, ahead: &mut Ahead) -> Result<(), TrackerChainError> {
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
    fn check_frames(&self, first: u64, end: u64) -> Result<u64, TrackerChainError> {
        let range = frames(first, end);
        let not_ram = TrackerChainError::RangeNotInRam { range };
        // Frames of the physical address space: the limit never passes it.
        let space = 1 << (crate::tracker::PHYS_BITS - PAGE_SHIFT);
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
                return Err(TrackerChainError::RangeInScratch { range });
            }
            if ss >= end {
                limit = limit.min(ss);
            }
        }
        Ok(limit)
    }
}
