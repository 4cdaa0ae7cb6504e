//! The reader of a tracker handed over in place (`kho-tracker-v4`): every
//! page checked and summed before anything decoded from it is kept.

use super::*;

/// Reads a tracker handed over in place: every page checked (RAM,
/// aligned, outside scratch, listed once, summed), every slot and leaf
/// decoded strictly; reports the pages as metadata and the preserved
/// ranges (address order, coalesced) to `out`, or nothing on any error.
pub fn restore<M: PageSource>(
    mem: &M,
    root: &TrackerRootV4,
    ram: &[Range],
    scratch: &[Range],
    out: &mut impl Reserve,
) -> Result<Summary, TrackerChainError> {
    crate::reserve::all_or_nothing(out, |out| read(mem, root, ram, scratch, out))
}

/// The pages a directory lists, by kind, and every page it took.
struct Listed<'a> {
    leaves: Vec<&'a [U64; 512]>,
    chunks: Vec<&'a [U32; PAGE_WORDS]>,
    meta: Vec<u64>,
}

fn page<'a, M: PageSource>(
    mem: &'a M,
    phys: u64,
    ram: &[Range],
    scratch: &[Range],
) -> Result<&'a [u8; 4096], TrackerChainError> {
    let end = phys.checked_add(4096).ok_or(TrackerChainError::BadRoot)?;
    let r = Range::new(phys, end);
    if !phys.is_multiple_of(4096) || !ram.iter().any(|x| x.covers(r)) {
        return Err(ChainError::BadPage { phys }.into());
    }
    if scratch.iter().any(|s| s.overlaps(&r)) {
        return Err(ChainError::PageInScratch { phys }.into());
    }
    mem.page(phys)
        .ok_or_else(|| ChainError::BadPage { phys }.into())
}

/// A page as little-endian words.
fn words64(p: &[u8; 4096]) -> &[U64; 512] {
    zerocopy::transmute_ref!(p)
}

/// A page as little-endian 32-bit words.
fn words32(p: &[u8; 4096]) -> &[U32; PAGE_WORDS] {
    zerocopy::transmute_ref!(p)
}

/// Word `j` of a page of 64-bit words (0 past its end).
#[inline(always)]
fn word64(p: &[U64; 512], j: usize) -> u64 {
    p.get(j).map_or(0, |w| w.get())
}

/// Word `j` of a page of 32-bit words (0 past its end).
#[inline(always)]
fn word32(p: &[U32; PAGE_WORDS], j: usize) -> u32 {
    p.get(j).map_or(0, |w| w.get())
}

fn list<'a, M: PageSource>(
    mem: &'a M,
    root: &TrackerRootV4,
    ram: &[Range],
    scratch: &[Range],
    sum: &mut u64,
) -> Result<Listed<'a>, TrackerChainError> {
    let mut l = Listed {
        leaves: Vec::new(),
        chunks: Vec::new(),
        meta: Vec::new(),
    };
    let (dirs, nl, nc) = (
        root.dir_pages.get(),
        root.leaf_pages.get(),
        root.chunk_pages.get(),
    );
    if root.flags.get() != 0 || dirs > MAX_PAGES || nl > MAX_PAGES || nc > MAX_PAGES {
        return Err(TrackerChainError::BadRoot);
    }
    let entries = u64::from(nl).saturating_add(u64::from(nc));
    if (root.dir.get() == 0) != (dirs == 0)
        || u64::from(dirs) != entries.div_ceil(DIR_ENTRIES as u64)
    {
        return Err(TrackerChainError::BadRoot);
    }
    let oom = |_| TrackerChainError::Tracker(crate::tracker::TrackerError::OutOfMemory);
    l.leaves.try_reserve_exact(nl as usize).map_err(oom)?;
    l.chunks.try_reserve_exact(nc as usize).map_err(oom)?;
    l.meta
        .try_reserve_exact((u64::from(dirs).saturating_add(entries)) as usize)
        .map_err(oom)?;
    let mut at = root.dir.get();
    let mut left = entries;
    for d in 0..dirs {
        let p = words64(page(mem, at, ram, scratch)?);
        l.meta.push(at);
        *sum = sum.wrapping_add(weighted(
            p.iter().map(|w| w.get()),
            u64::from(d) << 10 | 1,
            DIR_K,
        ));
        for (j, v) in p.iter().take(DIR_ENTRIES).enumerate() {
            let v = v.get();
            if left == 0 {
                if v != 0 {
                    return Err(TrackerChainError::BadRecord {
                        phys: at,
                        word: j as u32,
                    });
                }
                continue;
            }
            left = left.saturating_sub(1);
            let phys = v & !KIND_MASK;
            match v & KIND_MASK {
                KIND_LEAF if l.leaves.len() < nl as usize => {
                    l.leaves.push(words64(page(mem, phys, ram, scratch)?));
                }
                KIND_CHUNK if l.chunks.len() < nc as usize => {
                    l.chunks.push(words32(page(mem, phys, ram, scratch)?));
                }
                _ => {
                    return Err(TrackerChainError::BadRecord {
                        phys: at,
                        word: j as u32,
                    });
                }
            }
            l.meta.push(phys);
        }
        let next = p.get(DIR_ENTRIES).map_or(0, |w| w.get());
        if (next == 0) != (d.saturating_add(1) == dirs) {
            return Err(TrackerChainError::CountMismatch);
        }
        at = next;
    }
    Ok(l)
}

fn read<M: PageSource>(
    mem: &M,
    root: &TrackerRootV4,
    ram: &[Range],
    scratch: &[Range],
    out: &mut impl Reserve,
) -> Result<Summary, TrackerChainError> {
    let mut dir_sum = 0u64;
    let mut l = list(mem, root, ram, scratch, &mut dir_sum)?;
    // Every word of every page is summed (the weights as `leaf::weight`
    // and `table::weight` give them), and nothing decoded is kept unless
    // the sum holds.
    let mut sum = dir_sum.wrapping_add(sum_leaves(&l));
    let mut chunks = Vec::new();
    chunks
        .try_reserve_exact(l.chunks.len())
        .map_err(|_| TrackerChainError::Tracker(crate::tracker::TrackerError::OutOfMemory))?;
    // Only each chunk's index first (one cache line a page); the pages are
    // summed as they are decoded, in address order, each while it is in
    // cache, and anything decoded is rolled back if the sum then fails.
    for (c, p) in l.chunks.iter().enumerate() {
        let key = u64::from(word32(p, KEY_WORD)) | u64::from(word32(p, KEY_WORD + 1)) << 32;
        chunks.push((key, c, *p));
    }
    chunks.sort_unstable_by_key(|c| c.0);
    // The pages themselves: metadata, never inside what they describe.
    l.meta.sort_unstable();
    let decoded = decode(&l, &chunks, ram, scratch, &mut sum, out);
    if sum != root.sum.get() || decoded.is_err() {
        // A refused record is a checksum failure if the pages do not add
        // up (the record was changed), else the record's own error.
        let all = l
            .chunks
            .iter()
            .enumerate()
            .fold(sum_leaves(&l), |s, (c, p)| s.wrapping_add(chunk_sum(c, p)));
        if all.wrapping_add(dir_sum) != root.sum.get() {
            return Err(TrackerChainError::BadSum);
        }
    }
    let s = decoded?;
    if s.pages != root.preserved_pages.get() {
        return Err(TrackerChainError::CountMismatch);
    }
    Ok(s)
}

/// The leaf pages' share of the checksum.
fn sum_leaves(l: &Listed<'_>) -> u64 {
    l.leaves.iter().enumerate().fold(0u64, |s, (i, p)| {
        let first = (i as u64) << 10 | 1;
        s.wrapping_add(weighted(p.iter().map(|w| w.get()), first, 1))
    })
}

/// Chunk page `c`'s share of the checksum.
fn chunk_sum(c: usize, p: &[U32; PAGE_WORDS]) -> u64 {
    let words: &[U64; 512] = zerocopy::transmute_ref!(p);
    weighted(
        words.iter().map(|w| w.get()),
        (c as u64) << 10 | 1,
        table::WEIGHT_K,
    )
}

/// Which slots hold anything: bit `i % 64` of word `i / 64` for slot
/// `i`, so that the walk goes from one occupied slot to the next by bit
/// arithmetic instead of a branch a slot (most slots of a sparse chunk are
/// empty, and which are is not predictable).
fn occupied(slots: &[U32]) -> [u64; 8] {
    let mut m = [0u64; 8];
    for (w, run) in m.iter_mut().zip(slots.chunks_exact(64)) {
        *w = run
            .iter()
            .enumerate()
            .fold(0, |a, (i, s)| a | u64::from(s.get() != 0) << (i & 63));
    }
    m
}

/// Clears bits `[lo, hi)` of a 512-bit map, a word at a time.
fn clear_bits(map: &mut [u64; 8], lo: usize, hi: usize) {
    for (w, word) in (0u32..).zip(map.iter_mut()) {
        *word &= !leaf::word_mask(w, lo as u32, hi as u32);
    }
}

/// Decodes every chunk (`chunks` sorted by index) into `out`, adding each
/// chunk page's share of the checksum to `sum` as it goes.
fn decode<R: Reserve>(
    l: &Listed<'_>,
    chunks: &[(u64, usize, &[U32; PAGE_WORDS])],
    ram: &[Range],
    scratch: &[Range],
    sum: &mut u64,
    out: &mut R,
) -> Result<Summary, TrackerChainError> {
    if chunks.windows(2).any(|w| matches!(w, [a, b] if a.0 == b.0))
        || l.meta.windows(2).any(|w| matches!(w, [a, b] if a == b))
    {
        return Err(TrackerChainError::CountMismatch);
    }
    let mut ranges = Emit::new(ram, scratch, &l.meta, out);
    let mut seen =
        alloc::vec![0u64; l.leaves.len().saturating_mul(PAGE_LEAVES as usize).div_ceil(64)];
    for &(key, c, p) in chunks {
        *sum = sum.wrapping_add(chunk_sum(c, p));
        if key >= 1 << (crate::tracker::PHYS_BITS - REGION_SHIFT - 9)
            || p.get(DENSE_WORD + 1..)
                .is_some_and(|t| t.iter().any(|w| w.get() != 0))
        {
            return Err(TrackerChainError::BadRecord {
                phys: 0,
                word: KEY_WORD as u32,
            });
        }
        let base = key.saturating_mul(CHUNK);
        let slots = p.get(..CHUNK as usize).unwrap_or(&[]);
        let mut occ = occupied(slots);
        for k in 0..occ.len() {
            while let Some(&bits) = occ.get(k)
                && bits != 0
            {
                let off = k.saturating_mul(64) | bits.trailing_zeros() as usize;
                if let Some(w) = occ.get_mut(k) {
                    *w = bits & bits.wrapping_sub(1);
                }
                let v = slots.get(off).map_or(0, |w| w.get());
                let region = base.saturating_add(off as u64);
                // A run of 2 MiB blocks, each its own region's (the slot's
                // `head` its own offset): one range, read at a compare a slot.
                if v == LARGE_2M | off as u32 {
                    let run = slots
                        .get(off..)
                        .unwrap_or(&[])
                        .iter()
                        .zip(off as u32..)
                        .take_while(|(w, o)| w.get() == LARGE_2M | o)
                        .count();
                    ranges.pages(region, 0, (run as u32).saturating_mul(512))?;
                    // The run's other slots are read: clear their bits.
                    clear_bits(&mut occ, off.saturating_add(1), off.saturating_add(run));
                    continue;
                }
                let bad = TrackerChainError::BadRecord {
                    phys: 0,
                    word: off as u32,
                };
                match v >> 30 {
                    1 => {
                        let (first, order) = (v & 0x1ff, (v >> 9) & 0x1f);
                        if v >> 16 & 0x3fff != 0
                            || order > 8
                            || first & (1u32 << order).wrapping_sub(1) != 0
                            || first.saturating_add(1 << order) > 512
                        {
                            return Err(bad);
                        }
                        ranges.pages(region, first, 1 << order)?;
                    }
                    2 => {
                        let i = (v & 0x3fff_ffff) as usize;
                        let slot = seen.get_mut(i / 64).ok_or(bad)?;
                        if *slot >> (i % 64) & 1 != 0 {
                            return Err(bad);
                        }
                        *slot |= 1 << (i % 64);
                        let lp = l.leaves.get(i >> 5).ok_or(bad)?;
                        let at = (i & 31).saturating_mul(16);
                        let mut map = [0u64; 8];
                        for (k, m) in map.iter_mut().enumerate() {
                            let (pages, tails) =
                                (word64(lp, at | k << 1), word64(lp, at | k << 1 | 1));
                            if tails & !pages != 0 || (k == 0 && tails & 1 != 0) {
                                return Err(bad);
                            }
                            *m = pages;
                        }
                        let edges = leaf::Edges::of(&map);
                        edges.each(u32::MAX, |first, n| ranges.pages(region, first, n))?;
                    }
                    3 => {
                        let (head, order) = (v & 0x1ff, (v >> 9) & 0x1f);
                        let n = 1u32.checked_shl(order.wrapping_sub(9)).unwrap_or(0);
                        if !(9..=crate::tracker::MAX_ORDER).contains(&order)
                            || v >> 14 & 0xffff != 0
                            || head & n.wrapping_sub(1) != 0
                            || head.saturating_add(n) > 512
                            || (off as u32) < head
                            || off as u32 >= head.saturating_add(n)
                            || (off as u32 > head && word32(p, head as usize) != v)
                        {
                            return Err(bad);
                        }
                        if off as u32 == head {
                            ranges.pages(region, 0, n.saturating_mul(512))?;
                        }
                    }
                    _ => return Err(bad),
                }
            }
        }
    }
    ranges.finish()
}

/// Reports preserved ranges in address order, coalesced, and the
/// metadata pages between them.
struct Emit<'a, R: Reserve> {
    ram: &'a [Range],
    scratch: &'a [Range],
    meta: &'a [u64],
    /// Metadata pages reported so far.
    next_meta: usize,
    out: &'a mut R,
    /// The run being built.
    run: Option<Range>,
    summary: Summary,
}

impl<'a, R: Reserve> Emit<'a, R> {
    fn new(ram: &'a [Range], scratch: &'a [Range], meta: &'a [u64], out: &'a mut R) -> Self {
        Self {
            ram,
            scratch,
            meta,
            next_meta: 0,
            out,
            run: None,
            summary: Summary {
                ranges: 0,
                pages: 0,
                records: 0,
                chain_pages: meta.len() as u32,
            },
        }
    }

    /// Pages `[first, first + n)` of `region`.
    fn pages(&mut self, region: u64, first: u32, n: u32) -> Result<(), TrackerChainError> {
        let start = (region << REGION_SHIFT).saturating_add(u64::from(first) << 12);
        let r = Range::new(start, start.saturating_add(u64::from(n) << 12));
        self.summary.records = self.summary.records.saturating_add(1);
        match &mut self.run {
            Some(run) if run.end == r.start => run.end = r.end,
            Some(run) if run.end > r.start => {
                return Err(TrackerChainError::Unordered { phys: 0, word: 0 });
            }
            _ => {
                if let Some(done) = self.run.replace(r) {
                    self.flush(done)?;
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self, range: Range) -> Result<(), TrackerChainError> {
        if !self.ram.iter().any(|x| x.covers(range)) {
            return Err(TrackerChainError::RangeNotInRam { range });
        }
        if self.scratch.iter().any(|s| s.overlaps(&range)) {
            return Err(TrackerChainError::RangeInScratch { range });
        }
        // The metadata pages below this range first, then the range, which
        // must hold none of them.
        while let Some(&m) = self.meta.get(self.next_meta) {
            if m >= range.end {
                break;
            }
            if m >= range.start {
                return Err(TrackerChainError::ChainPageInPreserved { phys: m });
            }
            self.out
                .reserve(Range::new(m, m.saturating_add(4096)), Kept::Metadata)
                .map_err(TrackerChainError::Reserve)?;
            self.next_meta = self.next_meta.saturating_add(1);
        }
        self.out
            .reserve(range, Kept::Preserved)
            .map_err(TrackerChainError::Reserve)?;
        self.summary.ranges = self.summary.ranges.saturating_add(1);
        self.summary.pages = self.summary.pages.saturating_add(range.len() >> 12);
        Ok(())
    }

    fn finish(mut self) -> Result<Summary, TrackerChainError> {
        if let Some(done) = self.run.take() {
            self.flush(done)?;
        }
        while let Some(&m) = self.meta.get(self.next_meta) {
            self.out
                .reserve(Range::new(m, m.saturating_add(4096)), Kept::Metadata)
                .map_err(TrackerChainError::Reserve)?;
            self.next_meta = self.next_meta.saturating_add(1);
        }
        Ok(self.summary)
    }
}
