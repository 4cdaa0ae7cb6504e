//! Claims: which preserved pages the next kernel has adopted, so that no
//! preserved page is ever handed to two owners, and everything nobody
//! adopted goes back to the allocator.
//!
//! After the handoff is restored (`kho::handoff::restore`), the next kernel knows which ranges are
//! preserved, but not who owns them. Every preserved page has exactly one
//! role for the whole restore: free (nobody adopted it yet), *data* of one
//! object ([`Claims::claim`]), or *metadata* that one reader read
//! ([`Claims::claim_meta`]: a record array, a vmalloc chain page). A claim
//! of either kind is refused if a page is not preserved, lies in scratch,
//! or already has a role: the records of a buggy (or hostile) previous
//! kernel can then never make two owners share a page, or adopt memory
//! that the allocator also owns. A failed restore releases the data it
//! claimed ([`Claims::release`]); metadata is never released before finish,
//! so no later read can adopt a page another reader took as metadata.
//! `Claims::finish` consumes the claims and returns what goes back to
//! the allocator: every page that is free or metadata.
//!
//! Two bits per preserved page (64 KiB per preserved GiB): one bitmap of
//! claimed pages, one of metadata pages, indexed through the sorted list of
//! preserved ranges with scratch cut out; a one-entry cache makes a run of
//! claims in the same range cost a compare and a few bit operations.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use crate::PAGE_SIZE;
use crate::ranges::Range;
#[cfg(any(test, feature = "arch"))]
use crate::ranges::RangeVec;
use alloc::vec::Vec;
use core::fmt;

/// Why a claim was refused. Nothing was claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimError {
    /// The pages are not all inside one preserved range.
    NotPreserved {
        /// The pages asked for.
        range: Range,
    },
    /// The pages overlap a scratch area.
    InScratch {
        /// The pages asked for.
        range: Range,
    },
    /// A page is already claimed by another object (or another record).
    Twice {
        /// The pages asked for.
        range: Range,
    },
    /// The address is not page aligned, or the range wraps.
    BadRange {
        /// The start asked for.
        phys: u64,
    },
    /// No memory for the bitmap.
    OutOfMemory,
}

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimError::NotPreserved { range } => write!(f, "{range} is not preserved memory"),
            ClaimError::InScratch { range } => write!(f, "{range} lies in a scratch area"),
            ClaimError::Twice { range } => write!(f, "{range} is already adopted by another owner"),
            ClaimError::BadRange { phys } => write!(f, "{phys:#x} is not a page-aligned range"),
            ClaimError::OutOfMemory => f.write_str("no memory for the claim bitmap"),
        }
    }
}

impl core::error::Error for ClaimError {}

/// One preserved range and where its pages start in the bitmap.
#[derive(Clone, Copy, Debug)]
struct Span {
    range: Range,
    bit: u64,
}

/// The claim bitmaps over the preserved ranges.
#[derive(Debug)]
pub struct Claims {
    spans: Vec<Span>,
    scratch: Vec<Range>,
    bits: Vec<u64>,
    meta: Vec<u64>,
    last: usize,
    /// A copy of `spans[last]` (an empty span if there is none), for the
    /// one-page claim's path: no bounds check, no load through the list.
    cur: Span,
    claimed: u64,
    meta_pages: u64,
}

impl Claims {
    /// Claims over `preserved` (any order; adjacent ranges are joined, so a
    /// folio may straddle two reported ranges), refusing anything in
    /// `scratch`: scratch is cut out of the preserved ranges first, so a
    /// claim in scratch is refused even if the list given overlaps it.
    #[cfg(any(test, feature = "arch"))]
    pub fn new(
        preserved: impl IntoIterator<Item = Range>,
        scratch: &[Range],
    ) -> Result<Self, ClaimError> {
        let full = |_| ClaimError::OutOfMemory;
        let mut ranges: Vec<Range> = Vec::new();
        for r in preserved {
            ranges.try_reserve(1).map_err(|_| ClaimError::OutOfMemory)?;
            ranges.push(r.pages_around());
        }
        ranges.sort_unstable_by_key(|r| r.start);
        // Overlapping and adjacent ranges are joined (a folio may straddle
        // two reported ranges); then scratch is cut out, however many
        // pieces that leaves.
        let mut set = RangeVec::new();
        let mut cur: Option<Range> = None;
        for r in ranges.into_iter().filter(|r| !r.is_empty()) {
            match cur.as_mut() {
                Some(c) if c.end >= r.start => c.end = c.end.max(r.end),
                _ => {
                    if let Some(c) = cur.replace(r) {
                        set.insert(c).map_err(full)?;
                    }
                }
            }
        }
        if let Some(c) = cur {
            set.insert(c).map_err(full)?;
        }
        for sc in scratch.iter().filter(|s| !s.is_empty()) {
            set.carve(sc.pages_around()).map_err(full)?;
        }
        let mut spans: Vec<Span> = Vec::new();
        spans
            .try_reserve_exact(set.as_slice().len())
            .map_err(|_| ClaimError::OutOfMemory)?;
        let mut bit = 0u64;
        for range in set.iter() {
            spans.push(Span { range, bit });
            bit = bit.saturating_add(range.len() / PAGE_SIZE);
        }
        let words = usize::try_from(bit.div_ceil(64)).map_err(|_| ClaimError::OutOfMemory)?;
        let mut bits = Vec::new();
        bits.try_reserve_exact(words)
            .map_err(|_| ClaimError::OutOfMemory)?;
        bits.resize(words, 0);
        let mut meta = Vec::new();
        meta.try_reserve_exact(words)
            .map_err(|_| ClaimError::OutOfMemory)?;
        meta.resize(words, 0);
        let mut sc = Vec::new();
        sc.try_reserve_exact(scratch.len())
            .map_err(|_| ClaimError::OutOfMemory)?;
        sc.extend_from_slice(scratch);
        let cur = spans.first().copied().unwrap_or(Span {
            range: Range::new(0, 0),
            bit: 0,
        });
        Ok(Self {
            spans,
            scratch: sc,
            bits,
            meta,
            last: 0,
            cur,
            claimed: 0,
            meta_pages: 0,
        })
    }

    /// The preserved ranges, joined and sorted.
    #[cfg(any(test, feature = "arch"))]
    pub fn preserved(&self) -> impl Iterator<Item = Range> + '_ {
        self.spans.iter().map(|s| s.range)
    }

    /// Pages claimed now (data and metadata).
    #[cfg(any(test, feature = "tools"))]
    pub fn claimed_pages(&self) -> u64 {
        self.claimed
    }

    /// Pages claimed as data now.
    #[cfg(any(test, feature = "tools"))]
    pub fn data_pages(&self) -> u64 {
        self.claimed.saturating_sub(self.meta_pages)
    }

    /// The bitmap's first bit for `pages` pages at `phys`, or why not.
    #[inline]
    fn locate(&mut self, phys: u64, pages: u64) -> Result<(u64, Range), ClaimError> {
        let len = pages
            .checked_mul(PAGE_SIZE)
            .filter(|_| phys.is_multiple_of(PAGE_SIZE) && pages > 0)
            .ok_or(ClaimError::BadRange { phys })?;
        let end = phys.checked_add(len).ok_or(ClaimError::BadRange { phys })?;
        let want = Range::new(phys, end);
        let hit = |s: &Span| s.range.covers(want);
        let span = if hit(&self.cur) {
            self.cur
        } else {
            // Readers mostly go up through memory: the next span, before a
            // search (a file of folios each in its own preserved range).
            let next = self.last.saturating_add(1);
            let i = if self.spans.get(next).is_some_and(hit) {
                next
            } else {
                self.spans
                    .partition_point(|s| s.range.end <= phys)
                    .min(self.spans.len())
            };
            match self.spans.get(i) {
                Some(&s) if hit(&s) => {
                    self.last = i;
                    self.cur = s;
                    s
                }
                _ => {
                    if self.scratch.iter().any(|s| s.overlaps(&want)) {
                        return Err(ClaimError::InScratch { range: want });
                    }
                    return Err(ClaimError::NotPreserved { range: want });
                }
            }
        };
        let bit = span
            .bit
            .saturating_add((phys.saturating_sub(span.range.start)) / PAGE_SIZE);
        Ok((bit, want))
    }

    /// Claims `pages` pages from `phys` as metadata of the reader that
    /// reads them: all of them, or (on error) none. Metadata stays claimed
    /// until `Claims::finish`, which gives it back with the free pages;
    /// [`Claims::release`] never releases it.
    pub fn claim_meta(&mut self, phys: u64, pages: u64) -> Result<(), ClaimError> {
        self.claim(phys, pages)?;
        if let Ok((bit, _)) = self.locate(phys, pages) {
            fill(&mut self.meta, bit, pages);
            self.meta_pages = self.meta_pages.saturating_add(pages);
        }
        Ok(())
    }

    /// Claims `pages` pages from `phys` as an object's data: all of them,
    /// or (on error) none. The one-page case in the range the last claim
    /// found is inlined into the caller's loop (a reader of 4 KiB folios
    /// claims once a folio: left to the compiler, some binaries called it,
    /// which doubled a restore's cost per folio); the rest is a call.
    #[inline(always)]
    pub fn claim(&mut self, phys: u64, pages: u64) -> Result<(), ClaimError> {
        // Fastest path: one page in the range the last claim found.
        let s = self.cur;
        if pages == 1
            && s.range.start <= phys
            && phys < s.range.end
            && phys.is_multiple_of(PAGE_SIZE)
        {
            // Inside the span: cannot wrap.
            let bit = s
                .bit
                .wrapping_add(phys.wrapping_sub(s.range.start) / PAGE_SIZE);
            let mask = 1u64 << (bit % 64);
            if let Some(w) = self.bits.get_mut((bit / 64) as usize) {
                if *w & mask != 0 {
                    return Err(ClaimError::Twice {
                        range: Range::new(phys, phys.saturating_add(PAGE_SIZE)),
                    });
                }
                *w |= mask;
                self.claimed = self.claimed.saturating_add(1);
                return Ok(());
            }
        }
        self.claim_any(phys, pages)
    }

    /// [`claim`](Self::claim) past its fastest path.
    fn claim_any(&mut self, phys: u64, pages: u64) -> Result<(), ClaimError> {
        let (bit, range) = self.locate(phys, pages)?;
        // Fast path: the pages sit in one bitmap word.
        let lo = bit % 64;
        if lo.saturating_add(pages) <= 64 {
            let mask = if pages == 64 {
                u64::MAX
            } else {
                (1u64 << pages).wrapping_sub(1) << lo
            };
            let Some(w) = self.bits.get_mut((bit / 64) as usize) else {
                return Err(ClaimError::NotPreserved { range });
            };
            if *w & mask != 0 {
                return Err(ClaimError::Twice { range });
            }
            *w |= mask;
            self.claimed = self.claimed.saturating_add(pages);
            return Ok(());
        }
        // Whole words (a 2 MiB folio is eight): one pass tests them, one
        // fills them, no branch per word.
        if lo == 0 && pages.is_multiple_of(64) {
            let first = (bit / 64) as usize;
            let words = first
                .checked_add((pages / 64) as usize)
                .and_then(|end| self.bits.get_mut(first..end));
            if let Some(ws) = words {
                if ws.iter().fold(0, |a, &w| a | w) != 0 {
                    return Err(ClaimError::Twice { range });
                }
                for w in ws.iter_mut() {
                    *w = u64::MAX;
                }
                self.claimed = self.claimed.saturating_add(pages);
                return Ok(());
            }
        }
        if any_set(&self.bits, bit, pages) {
            return Err(ClaimError::Twice { range });
        }
        fill(&mut self.bits, bit, pages);
        self.claimed = self.claimed.saturating_add(pages);
        Ok(())
    }

    /// Releases data pages that [`Claims::claim`] claimed (a failed
    /// restore undoing its work, or an owner giving memory up). Pages that
    /// are not preserved are ignored, and metadata pages keep their role:
    /// releasing them could hand a page that one reader read to another.
    pub fn release(&mut self, phys: u64, pages: u64) {
        if let Ok((bit, _)) = self.locate(phys, pages) {
            // Clear the claimed bits that are not metadata, word by word.
            let (fw, lw, fm, lm) = span(bit, pages);
            let mut cleared = 0u64;
            for i in fw..=lw {
                let mut m = u64::MAX;
                if i == fw {
                    m &= fm;
                }
                if i == lw {
                    m &= lm;
                }
                m &= !self.meta.get(i).copied().unwrap_or(0);
                if let Some(w) = self.bits.get_mut(i) {
                    cleared = cleared.saturating_add(u64::from((*w & m).count_ones()));
                    *w &= !m;
                }
            }
            self.claimed = self.claimed.saturating_sub(cleared);
        }
    }

    /// Whether the page at `phys` is claimed (as data or metadata).
    #[cfg(test)]
    pub(crate) fn is_claimed(&mut self, phys: u64) -> bool {
        match self.locate(phys & !(PAGE_SIZE - 1), 1) {
            Ok((bit, _)) => any_set(&self.bits, bit, 1),
            Err(_) => false,
        }
    }

    /// Whether the page at `phys` is claimed as metadata.
    #[cfg(test)]
    pub(crate) fn is_meta(&mut self, phys: u64) -> bool {
        match self.locate(phys & !(PAGE_SIZE - 1), 1) {
            Ok((bit, _)) => any_set(&self.meta, bit, 1),
            Err(_) => false,
        }
    }

    /// Every run of preserved pages nobody claimed, in address order.
    #[cfg(test)]
    pub(crate) fn unclaimed(&self) -> impl Iterator<Item = Range> + '_ {
        self.runs(|c, _| !c)
    }

    /// Every run of pages claimed as metadata, in address order.
    #[cfg(test)]
    pub(crate) fn metadata(&self) -> impl Iterator<Item = Range> + '_ {
        self.runs(|_, m| m)
    }

    /// What the next kernel gives back to its allocator at finish, in
    /// address order: every preserved page that is free or metadata.
    pub(crate) fn to_free(&self) -> impl Iterator<Item = Range> + '_ {
        self.runs(|c, m| !c || m)
    }

    /// Ends the claims: consumes them (no claim can follow) and returns
    /// what [`Claims::to_free`] lists, for the allocator.
    pub(crate) fn finish(self) -> Vec<Range> {
        let mut out = Vec::new();
        for r in self.to_free() {
            if out.try_reserve(1).is_err() {
                break;
            }
            out.push(r);
        }
        out
    }

    /// Runs of pages for which `keep(claimed, meta)` holds.
    fn runs<F: Fn(bool, bool) -> bool + Copy + 'static>(
        &self,
        keep: F,
    ) -> impl Iterator<Item = Range> + '_ {
        self.spans.iter().flat_map(move |s| {
            let pages = s.range.len() / PAGE_SIZE;
            let mut i = 0u64;
            let want = move |i: u64| {
                let b = s.bit.saturating_add(i);
                keep(get(&self.bits, b), get(&self.meta, b))
            };
            core::iter::from_fn(move || {
                while i < pages && !want(i) {
                    i = i.saturating_add(1);
                }
                if i >= pages {
                    return None;
                }
                let start = i;
                while i < pages && want(i) {
                    i = i.saturating_add(1);
                }
                let at = |p: u64| s.range.start.saturating_add(p.saturating_mul(PAGE_SIZE));
                Some(Range::new(at(start), at(i)))
            })
        })
    }
}

fn get(bits: &[u64], bit: u64) -> bool {
    let w = bits.get((bit / 64) as usize).copied().unwrap_or(0);
    w >> (bit % 64) & 1 == 1
}

/// The bitmap words covering `n > 0` bits from `bit`: the first and last
/// word and the masks of the bits in each (whole words between).
fn span(bit: u64, n: u64) -> (usize, usize, u64, u64) {
    let last = bit.saturating_add(n).saturating_sub(1);
    let first_mask = u64::MAX << (bit % 64);
    let last_mask = u64::MAX >> (63u64.saturating_sub(last % 64));
    (
        (bit / 64) as usize,
        (last / 64) as usize,
        first_mask,
        last_mask,
    )
}

fn any_set(bits: &[u64], bit: u64, n: u64) -> bool {
    let (fw, lw, fm, lm) = span(bit, n);
    let word = |i: usize| bits.get(i).copied().unwrap_or(0);
    if fw == lw {
        return word(fw) & fm & lm != 0;
    }
    word(fw) & fm != 0
        || word(lw) & lm != 0
        || bits
            .get(fw.saturating_add(1)..lw)
            .is_some_and(|mid| mid.iter().any(|&x| x != 0))
}

/// Sets `n > 0` bits from `bit`.
fn fill(bits: &mut [u64], bit: u64, n: u64) {
    let (fw, lw, fm, lm) = span(bit, n);
    let mut apply = |i: usize, m: u64| {
        if let Some(x) = bits.get_mut(i) {
            *x |= m;
        }
    };
    if fw == lw {
        apply(fw, fm & lm);
        return;
    }
    apply(fw, fm);
    apply(lw, lm);
    if let Some(mid) = bits.get_mut(fw.saturating_add(1)..lw) {
        mid.fill(u64::MAX);
    }
}

#[cfg(test)]
mod tests;
