//! A chain of 4 KiB pages carrying records of 64-bit words across a kexec:
//! the framing every handed-over format too large for the handoff blob
//! shares (the tracker's `kho-tracker-v3`, preserved vmalloc's
//! `kho-vmalloc-v2`).
//!
//! Each page (all little-endian): `magic u32`, `version u16`, `flags u16 = 0`,
//! `next u64` (a higher page, or 0 on the last), `seq u32` (0, 1, ...), `words
//! u32` (payload words used), `sum u64` (`kho-sum64` of the whole page with
//! this field read as 0), then `PAYLOAD_WORDS` payload words; payload words
//! past `words` are 0. A record never splits across pages. Pages are linked in
//! strictly increasing address order, so a cycle cannot be written and a reader
//! can walk the chain beside anything else sorted by address.
//!
//! A format names its magic and version (`Format`); the writer
//! ([`Writer`]) fills pages the caller allocated (`alloc_pages`, after
//! counting them; records never split across pages); the reader
//! ([`Pages`]) checks every page before it hands out its payload.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub(crate) use crate::abi::chain::{
    Format, HEADER_BYTES, MAX_CHAIN_PAGES, PAGE_BYTES, PAYLOAD_WORDS, PageHeader, SUM_OFFSET,
};
use crate::platform::{FrameAlloc, PhysMem};
use crate::ranges::Range;
use alloc::vec::Vec;
use zerocopy::byteorder::little_endian::U64;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// A chain page as it is written: the header, then the payload words.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct ChainPage {
    header: PageHeader,
    payload: [U64; PAYLOAD_WORDS],
}

/// Errors writing or reading a chain. Formats map them to their own errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainError {
    /// The page source gave no page.
    OutOfPages,
    /// No memory for the list of pages.
    OutOfMemory,
    /// A page is misaligned, outside RAM or unreadable.
    BadPage {
        /// Its physical address.
        phys: u64,
    },
    /// A page is in a scratch area.
    PageInScratch {
        /// Its physical address.
        phys: u64,
    },
    /// The writer's caller refused a page its source gave.
    Refused {
        /// Its physical address.
        phys: u64,
    },
    /// The page count is 0 or above `MAX_CHAIN_PAGES`.
    BadLength,
    /// A page's magic, version or flags are wrong.
    BadHeader {
        /// Its physical address.
        phys: u64,
    },
    /// A page's sequence number is not the next one.
    BadSequence {
        /// Its physical address.
        phys: u64,
        /// The number expected.
        expected: u32,
    },
    /// The chain ends before, or goes on after, the page count.
    BadChainLength,
    /// A page's word count is above the payload size.
    BadWords {
        /// Its physical address.
        phys: u64,
    },
    /// A page's checksum does not match its bytes (a stray write or a bit
    /// flip since the previous kernel wrote it).
    BadSum {
        /// Its physical address.
        phys: u64,
    },
    /// A page uses fewer words than it holds, and a word past them is not 0.
    DirtyTail {
        /// Its physical address.
        phys: u64,
    },
    /// A page links to one that is not higher (or the source gave a page
    /// twice).
    NotAscending {
        /// The page.
        phys: u64,
        /// What it links to.
        next: u64,
    },
}

impl core::fmt::Display for ChainError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use ChainError::*;
        match self {
            OutOfPages => f.write_str("no page for the chain"),
            OutOfMemory => f.write_str("no memory for the list of chain pages"),
            BadPage { phys } => {
                write!(f, "page {phys:#x} is misaligned, outside RAM or unreadable")
            }
            PageInScratch { phys } => write!(f, "page {phys:#x} is in a scratch area"),
            Refused { phys } => write!(f, "page {phys:#x} was refused by the chain's owner"),
            BadLength => write!(f, "a chain has 1 to {MAX_CHAIN_PAGES} pages"),
            BadHeader { phys } => write!(f, "page {phys:#x} has a bad header"),
            BadSequence { phys, expected } => {
                write!(
                    f,
                    "page {phys:#x} is out of sequence (expected number {expected})"
                )
            }
            BadChainLength => f.write_str("the chain's length differs from its root"),
            BadWords { phys } => write!(f, "page {phys:#x} claims more words than it holds"),
            BadSum { phys } => write!(
                f,
                "page {phys:#x} fails its checksum (changed since it was written)"
            ),
            DirtyTail { phys } => write!(f, "page {phys:#x} has data past its last word"),
            NotAscending { phys, next } => {
                write!(f, "page {phys:#x} links to {next:#x}, not to a higher page")
            }
        }
    }
}

impl core::error::Error for ChainError {}

/// Where a chain writer gets pages and how it fills them.
pub trait PageSink {
    /// A free 4 KiB page outside every scratch area and every preserved
    /// range, or `None`.
    fn alloc_page(&mut self) -> Option<u64>;
    /// Stores `data` in the page at `phys` (which `alloc_page` gave);
    /// `false` if it cannot.
    fn write_page(&mut self, phys: u64, data: &[u8; PAGE_BYTES]) -> bool;
    /// Takes back a page `alloc_page` gave, which a failed write no longer
    /// needs (every page of a write that fails comes back this way).
    fn free_page(&mut self, phys: u64);
}

/// Any platform is a page sink: pages from its allocator, written in place.
impl<P: PhysMem + FrameAlloc> PageSink for P {
    fn alloc_page(&mut self) -> Option<u64> {
        self.alloc_frames(0)
    }
    fn write_page(&mut self, phys: u64, data: &[u8; PAGE_BYTES]) -> bool {
        match self.frame_mut(phys) {
            Some(f) => {
                f.copy_from_slice(data);
                true
            }
            None => false,
        }
    }
    fn free_page(&mut self, phys: u64) {
        self.free_frames(phys, 0);
    }
}

/// Any platform's memory is a page source.
impl<P: PhysMem> PageSource for P {
    fn page(&self, phys: u64) -> Option<&[u8; PAGE_BYTES]> {
        self.frame(phys)
    }
}

/// Read access to physical pages for a chain reader.
pub trait PageSource {
    /// The 4 KiB page at `phys`, or `None` if it cannot be read. The reader
    /// only asks for pages it has checked to be RAM, aligned and outside
    /// scratch.
    fn page(&self, phys: u64) -> Option<&[u8; PAGE_BYTES]>;
}

/// Gives back to `sink` the `pages` pages of a chain this kernel wrote from
/// `first` (each header's `next` links the next): for a chain that will
/// not be handed over after all. Stops at a page it cannot read.
pub(crate) fn free_pages<S: PageSink + PageSource>(sink: &mut S, first: u64, pages: u32) {
    let mut at = first;
    for _ in 0..pages {
        let next = sink
            .page(at)
            .and_then(|p| PageHeader::ref_from_prefix(p.as_slice()).ok())
            .map(|(h, _)| h.next.get());
        sink.free_page(at);
        match next {
            Some(n) if n != 0 => at = n,
            _ => return,
        }
    }
}

/// The addresses of a chain's pages, `pages` of them from `first`,
/// following each page's link (ending early at a page `src` cannot read
/// or a link of 0). Nothing is checked: the writer's own chain, just
/// written.
pub(crate) fn page_addrs<S: PageSource>(
    src: &S,
    first: u64,
    pages: u32,
) -> impl Iterator<Item = u64> + '_ {
    let mut at = Some(first).filter(|&a| a != 0);
    (0..pages).map_while(move |_| {
        let here = at?;
        at = src
            .page(here)
            .and_then(|p| PageHeader::ref_from_prefix(p.as_slice()).ok())
            .map(|(h, _)| h.next.get())
            .filter(|&n| n != 0);
        Some(here)
    })
}

/// Takes `count` pages from `sink`, checks each (aligned, not 0, outside
/// `scratch`, accepted by `accept`, all distinct) and returns them sorted.
pub(crate) fn alloc_pages<S: PageSink>(
    sink: &mut S,
    count: usize,
    scratch: &[Range],
    accept: impl Fn(u64) -> bool,
) -> Result<Vec<u64>, ChainError> {
    let mut pages = Vec::new();
    pages
        .try_reserve_exact(count)
        .map_err(|_| ChainError::OutOfMemory)?;
    // On any error every page taken goes back, the bad one too.
    let give_back = |sink: &mut S, pages: &[u64]| {
        for &p in pages {
            sink.free_page(p);
        }
    };
    for _ in 0..count {
        let Some(p) = sink.alloc_page() else {
            give_back(sink, &pages);
            return Err(ChainError::OutOfPages);
        };
        let r = Range::new(p, p.saturating_add(PAGE_BYTES as u64));
        let bad = if !p.is_multiple_of(PAGE_BYTES as u64) || p == 0 {
            Some(ChainError::BadPage { phys: p })
        } else if scratch.iter().any(|s| s.overlaps(&r)) {
            Some(ChainError::PageInScratch { phys: p })
        } else if !accept(p) {
            Some(ChainError::Refused { phys: p })
        } else {
            None
        };
        if let Some(e) = bad {
            sink.free_page(p);
            give_back(sink, &pages);
            return Err(e);
        }
        pages.push(p);
    }
    pages.sort_unstable();
    let twice = pages.windows(2).find_map(|w| match *w {
        [a, b] if a == b => Some(a),
        _ => None,
    });
    if let Some(a) = twice {
        // The sink gave one page twice: give back each page once.
        pages.dedup();
        give_back(sink, &pages);
        return Err(ChainError::NotAscending { phys: a, next: a });
    }
    Ok(pages)
}

/// Writes records into the pages given (sorted, as `alloc_pages` returns
/// them); page `seq` links to page `seq + 1`.
pub struct Writer<'a, S: PageSink> {
    format: Format,
    sink: &'a mut S,
    pages: Vec<u64>,
    buf: ChainPage,
    words: usize,
    seq: usize,
}

impl<'a, S: PageSink> Writer<'a, S> {
    /// A writer of `format` into `pages` through `sink`.
    pub(crate) fn new(format: Format, sink: &'a mut S, pages: Vec<u64>) -> Self {
        Self {
            format,
            sink,
            pages,
            buf: ChainPage::new_zeroed(),
            words: 0,
            seq: 0,
        }
    }

    /// Writes the current page, linked to the next (0 for the last).
    fn flush(&mut self) -> Result<(), ChainError> {
        let phys = *self.pages.get(self.seq).ok_or(ChainError::OutOfPages)?;
        let next = self
            .pages
            .get(self.seq.saturating_add(1))
            .copied()
            .unwrap_or(0);
        self.buf.header = PageHeader {
            magic: self.format.magic.into(),
            version: self.format.version.into(),
            flags: 0.into(),
            next: next.into(),
            seq: (self.seq as u32).into(),
            words: (self.words as u32).into(),
            sum: 0.into(),
        };
        let bytes: &[u8; PAGE_BYTES] = zerocopy::transmute_ref!(&self.buf);
        let sum = page_sum(bytes);
        self.buf.header.sum = sum.into();
        let bytes: &[u8; PAGE_BYTES] = zerocopy::transmute_ref!(&self.buf);
        if !self.sink.write_page(phys, bytes) {
            return Err(ChainError::BadPage { phys });
        }
        Ok(())
    }

    /// Appends a record of `words` (at most [`PAYLOAD_WORDS`]).
    #[inline]
    pub(crate) fn record(&mut self, words: &[u64]) -> Result<(), ChainError> {
        let mut end = self.words.saturating_add(words.len());
        if end > PAYLOAD_WORDS {
            self.next_page()?;
            end = words.len();
        }
        if let Some(dst) = self.buf.payload.get_mut(self.words..end) {
            for (d, &w) in dst.iter_mut().zip(words) {
                *d = w.into();
            }
        }
        self.words = end;
        Ok(())
    }

    /// Ends the current page: the next record starts a new one.
    pub(crate) fn next_page(&mut self) -> Result<(), ChainError> {
        self.flush()?;
        self.buf.payload = [U64::ZERO; PAYLOAD_WORDS];
        self.words = 0;
        self.seq = self.seq.saturating_add(1);
        Ok(())
    }

    /// Writes the last page. Returns the first page and the page count; a
    /// count other than the pages given means the caller counted wrong.
    pub(crate) fn finish(mut self) -> Result<(u64, u32), ChainError> {
        self.flush()?;
        if self.seq.saturating_add(1) != self.pages.len() {
            return Err(ChainError::BadChainLength);
        }
        Ok((
            self.pages.first().copied().unwrap_or(0),
            self.pages.len() as u32,
        ))
    }
}

/// Bytes a chain page's checksum covers: the header and the payload words
/// it says are used (`words`, at most [`PAYLOAD_WORDS`]). The words past
/// them must be zero, which the reader checks on its own
/// ([`ChainError::DirtyTail`]): a mostly empty page costs little to check.
pub(crate) fn summed_len(page: &[u8]) -> usize {
    let words = page
        .get(20..24)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, |b| u32::from_le_bytes(b) as usize)
        .min(PAYLOAD_WORDS);
    HEADER_BYTES
        .saturating_add(words.saturating_mul(8))
        .min(page.len())
}

/// The `kho-sum64` of a chain page's first [`summed_len`] bytes with its
/// `sum` field read as 0 (the same value as
/// `csum::sum64_skipping(&page[..summed_len(page)], SUM_OFFSET)`, on the
/// fast path: whole 64-byte groups read as words, in a pass of their own).
pub(crate) fn page_sum(page: &[u8; PAGE_BYTES]) -> u64 {
    let len = summed_len(page);
    let Ok(words) = <[U64]>::ref_from_bytes(page.as_slice()) else {
        return crate::csum::sum64_skipping(page.get(..len).unwrap_or(&[]), SUM_OFFSET);
    };
    let mut s = crate::csum::Sum64::new();
    if len < 64 {
        // Shorter than one group: as bytes, the field zeroed.
        let mut head = [0u8; 64];
        if let (Some(d), Some(src)) = (head.get_mut(..len), page.get(..len)) {
            d.copy_from_slice(src);
        }
        if let Some(f) = head.get_mut(SUM_OFFSET..SUM_OFFSET.saturating_add(8)) {
            f.fill(0);
        }
        s.bytes(head.get(..len).unwrap_or(&[]));
        return s.finish();
    }
    let (head, rest) = words.split_at(8.min(words.len()));
    let mut first = [U64::ZERO; 8];
    for (d, w) in first.iter_mut().zip(head) {
        *d = *w;
    }
    if let Some(w) = first.get_mut(SUM_OFFSET / 8) {
        *w = U64::ZERO;
    }
    s.frame(&first);
    // The other whole groups, then what is left as bytes.
    let whole = (len / 64).saturating_mul(8);
    s.frame(rest.get(..whole.saturating_sub(8)).unwrap_or(&[]));
    s.bytes(page.get(whole.saturating_mul(8)..len).unwrap_or(&[]));
    s.finish()
}

/// Recomputes the checksum of a chain page in place (for tools, tests and
/// fuzz targets that change a page on purpose to reach the checks behind
/// the checksum). A page shorter than a header is left alone.
#[cfg(any(test, feature = "host"))]
pub fn reseal(page: &mut [u8]) {
    if page.len() < HEADER_BYTES {
        return;
    }
    let sum = match <&[u8; PAGE_BYTES]>::try_from(&*page) {
        Ok(p) => page_sum(p),
        Err(_) => {
            crate::csum::sum64_skipping(page.get(..summed_len(page)).unwrap_or(&[]), SUM_OFFSET)
        }
    };
    if let Some(d) = page.get_mut(SUM_OFFSET..SUM_OFFSET.saturating_add(8)) {
        d.copy_from_slice(&sum.to_le_bytes());
    }
}

/// One checked page: its address and the payload words it uses.
#[derive(Clone, Copy, Debug)]
pub struct Page<'a> {
    /// Its physical address.
    pub phys: u64,
    /// The words used (`words` of the header).
    pub words: &'a [U64],
}

/// Reads a chain page by page, checking each before handing out its
/// payload: aligned, inside one RAM range, outside scratch, readable, its
/// checksum, the format's magic and version, flags 0, the next sequence
/// number, a word count within the page and zeros past it, a link to a
/// higher page, and exactly `total` pages with 0 only in the last link.
pub struct Pages<'a, M: PageSource> {
    mem: &'a M,
    format: Format,
    ram: &'a [Range],
    scratch: &'a [Range],
    total: u32,
    phys: u64,
    seq: u32,
}

impl<'a, M: PageSource> Pages<'a, M> {
    /// A reader of `total` pages from `first`.
    pub(crate) fn new(
        mem: &'a M,
        format: Format,
        first: u64,
        total: u32,
        ram: &'a [Range],
        scratch: &'a [Range],
    ) -> Result<Self, ChainError> {
        if total == 0 || total > MAX_CHAIN_PAGES {
            return Err(ChainError::BadLength);
        }
        Ok(Self {
            mem,
            format,
            ram,
            scratch,
            total,
            phys: first,
            seq: 0,
        })
    }

    /// The page at `phys`, once it is checked to be aligned, inside RAM and
    /// outside scratch.
    pub(crate) fn checked_page(&self, phys: u64) -> Result<&'a [u8; PAGE_BYTES], ChainError> {
        let pr = Range::new(phys, phys.saturating_add(PAGE_BYTES as u64));
        if !phys.is_multiple_of(PAGE_BYTES as u64)
            || phys == 0
            || !self.ram.iter().any(|r| r.covers(pr))
        {
            return Err(ChainError::BadPage { phys });
        }
        if self.scratch.iter().any(|s| s.overlaps(&pr)) {
            return Err(ChainError::PageInScratch { phys });
        }
        self.mem.page(phys).ok_or(ChainError::BadPage { phys })
    }

    /// The link of the checked page at `phys` (for a second walker that
    /// runs ahead of the first); it must be higher than `phys`.
    pub(crate) fn link(&self, phys: u64) -> Result<u64, ChainError> {
        let page = self.checked_page(phys)?;
        let (h, _) = PageHeader::ref_from_prefix(page.as_slice())
            .map_err(|_| ChainError::BadHeader { phys })?;
        let next = h.next.get();
        if next <= phys {
            return Err(ChainError::NotAscending { phys, next });
        }
        Ok(next)
    }

    /// The pages in the chain.
    pub(crate) fn total(&self) -> u32 {
        self.total
    }

    /// The next page, checked; `None` after the last.
    #[inline]
    pub(crate) fn next_page(&mut self) -> Option<Result<Page<'a>, ChainError>> {
        if self.seq >= self.total {
            return None;
        }
        Some(self.read())
    }

    fn read(&mut self) -> Result<Page<'a>, ChainError> {
        let phys = self.phys;
        let page = self.checked_page(phys)?;
        let bad = ChainError::BadHeader { phys };
        let (h, payload) = PageHeader::ref_from_prefix(page.as_slice()).map_err(|_| bad)?;
        if page_sum(page) != h.sum.get() {
            return Err(ChainError::BadSum { phys });
        }
        if h.magic.get() != self.format.magic
            || h.version.get() != self.format.version
            || h.flags.get() != 0
        {
            return Err(bad);
        }
        if h.seq.get() != self.seq {
            return Err(ChainError::BadSequence {
                phys,
                expected: self.seq,
            });
        }
        let n = h.words.get() as usize;
        if n > PAYLOAD_WORDS {
            return Err(ChainError::BadWords { phys });
        }
        let next = h.next.get();
        let last = self.seq.saturating_add(1) == self.total;
        if last != (next == 0) {
            return Err(ChainError::BadChainLength);
        }
        if !last && next <= phys {
            return Err(ChainError::NotAscending { phys, next });
        }
        let all = <[U64]>::ref_from_bytes(payload).map_err(|_| bad)?;
        let (words, tail) = all.split_at(n.min(all.len()));
        // Zero past the used words: one OR over the bytes, which the
        // compiler vectorizes (a test per word did not).
        if tail.as_bytes().iter().fold(0u8, |a, &b| a | b) != 0 {
            return Err(ChainError::DirtyTail { phys });
        }
        self.phys = next;
        self.seq = self.seq.saturating_add(1);
        Ok(Page { phys, words })
    }
}

#[cfg(test)]
mod tests;
