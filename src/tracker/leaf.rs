//! The tracker's leaves: a 2 MiB region's page and tail bitmaps, and the
//! store that holds them in pages that never move.

use super::pages::Pages;
use super::table::MAX_LEAVES;
use super::{PAGE_SHIFT, REGION_PAGES, Small};
use alloc::boxed::Box;
use alloc::vec::Vec;

/// A 2 MiB region's leaf: which pages are preserved, and which of them
/// continue a block begun on an earlier page (its "tails"), so that block
/// boundaries stay exact. Word `i` of both maps shares a cache line
/// (`words[i] = [pages, tails]`), so a preserve touches one line.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::KnownLayout,
    zerocopy::Immutable,
)]
#[repr(C)]
pub(super) struct Leaf {
    words: [[u64; 2]; 8],
}

/// Mask of bits `[lo, hi)` within word `w` of a 512-bit map.
pub(super) fn word_mask(w: u32, lo: u32, hi: u32) -> u64 {
    let (base, top) = (w * 64, w * 64 + 64);
    let (a, b) = (lo.max(base), hi.min(top));
    if a >= b {
        return 0;
    }
    let n = b - a;
    let m = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
    m << (a - base)
}

/// Index of the page map and of the tail map in a leaf's word pair.
const PAGES: usize = 0;
const TAILS: usize = 1;

impl Leaf {
    /// The leaf of a region covered by a large block in a dense chunk: all
    /// pages preserved, as one block, so that every small preserve in it is
    /// refused (no page of it is clear: [`all_clear`](Self::all_clear)).
    pub(super) const FULL: Leaf = Leaf {
        words: {
            let mut w = [[u64::MAX; 2]; 8];
            w[0][TAILS] = u64::MAX - 1;
            w
        },
    };

    /// Preserves the block of order `order` (at most [`WORD_ORDER`](super::WORD_ORDER), so
    /// within one word) at `phys` if none of its pages is preserved;
    /// returns the block's bits in its word (0 if it did not). A handful
    /// of instructions.
    #[inline(always)]
    pub(super) fn try_add_word(&mut self, phys: u64, order: u32) -> u64 {
        /// Bits of a block of order 0 to 6 at bit 0 (and a spare, so that
        /// indexing by `order & 7` needs no check).
        const MASKS: [u64; 8] = [1, 3, 0xf, 0xff, 0xffff, 0xffff_ffff, !0, !0];
        let m = MASKS[(order & 7) as usize] << ((phys >> PAGE_SHIFT) & 63);
        let pair = &mut self.words[((phys >> (PAGE_SHIFT + 6)) & 7) as usize];
        if pair[PAGES] & m != 0 {
            return 0;
        }
        pair[PAGES] |= m;
        pair[TAILS] |= m & (m - 1);
        m
    }

    /// The page map, word by word.
    #[inline(always)]
    pub(super) fn pages(&self) -> [u64; 8] {
        self.words.map(|w| w[PAGES])
    }

    /// Bit `i` of map `which` (`PAGES` or `TAILS`).
    pub(super) fn bit(&self, which: usize, i: u32) -> bool {
        self.words[(i / 64) as usize][which] >> (i % 64) & 1 != 0
    }

    pub(super) fn page(&self, i: u32) -> bool {
        self.bit(PAGES, i)
    }

    /// Whether every bit of `[lo, hi)` in map `which` is `set`.
    pub(super) fn all(&self, which: usize, lo: u32, hi: u32, set: bool) -> bool {
        lo >= hi
            || (lo / 64..=(hi - 1) / 64).all(|w| {
                let m = word_mask(w, lo, hi);
                let v = self.words[w as usize][which] & m;
                if set { v == m } else { v == 0 }
            })
    }

    /// Whether `[off, off + 2^order)` is exactly one preserved block: all
    /// its pages preserved, its first page not a tail, every other one a
    /// tail, and the page after it not a tail.
    pub(super) fn is_block(&self, b: Small) -> bool {
        let (lo, hi) = (b.off, b.end());
        self.all(PAGES, lo, hi, true)
            && !self.bit(TAILS, lo)
            && self.all(TAILS, lo + 1, hi, true)
            && (hi == REGION_PAGES as u32 || !self.bit(TAILS, hi))
    }

    /// Whether none of the pages `[lo, hi)` of the region is preserved.
    pub(super) fn all_clear_in(&self, lo: u32, hi: u32) -> bool {
        self.all(PAGES, lo, hi, false)
    }

    /// Whether none of the pages of `b` is preserved.
    pub(super) fn all_clear(&self, b: Small) -> bool {
        self.all_clear_in(b.off, b.end())
    }

    /// Sets (`on`) or clears the pages and tails of `b`.
    pub(super) fn set(&mut self, b: Small, on: bool) {
        let (lo, hi) = (b.off, b.end());
        if b.order <= super::WORD_ORDER {
            // Within one word.
            let m = word_mask(lo / 64, lo, hi);
            let pair = &mut self.words[(lo / 64) as usize];
            if on {
                pair[PAGES] |= m;
                pair[TAILS] |= m & (m - 1);
            } else {
                pair[PAGES] &= !m;
                pair[TAILS] &= !(m & (m - 1));
            }
            return;
        }
        for w in lo / 64..=(hi - 1) / 64 {
            let m = word_mask(w, lo, hi);
            let t = word_mask(w, lo + 1, hi);
            let pair = &mut self.words[w as usize];
            if on {
                pair[PAGES] |= m;
                pair[TAILS] |= t;
            } else {
                pair[PAGES] &= !m;
                pair[TAILS] &= !t;
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.words.iter().all(|w| w[PAGES] == 0)
    }

    /// Number of blocks: preserved pages that are not tails.
    #[cfg(any(test, feature = "tools"))]
    pub(super) fn block_count(&self) -> u64 {
        self.words
            .iter()
            .map(|w| u64::from((w[PAGES] & !w[TAILS]).count_ones()))
            .sum()
    }

    /// Number of preserved pages.
    #[cfg(test)]
    pub(super) fn page_count(&self) -> u64 {
        self.words
            .iter()
            .map(|w| u64::from(w[PAGES].count_ones()))
            .sum()
    }

    /// Runs of preserved pages, `(first page, count)`, in order.
    pub(super) fn runs(&self) -> impl Iterator<Item = (u32, u32)> {
        map_runs(self.pages())
    }
}

/// Runs of set bits of a 512-bit map (word `i` holds bits `64i..`), as
/// `(first bit, count)` in order, found a word at a time; a run may cross
/// words. Shared by leaves and the chain reader's bitmap records.
pub(super) fn map_runs(map: [u64; 8]) -> impl Iterator<Item = (u32, u32)> {
    let mut w = 0usize;
    // What is left of word `w`: bits of runs already reported cleared.
    let mut bits = map[0];
    core::iter::from_fn(move || {
        while bits == 0 {
            w += 1;
            bits = *map.get(w)?;
        }
        let start = w as u32 * 64 + bits.trailing_zeros();
        loop {
            let s = bits.trailing_zeros();
            let top = s + (!(bits >> s)).trailing_zeros();
            if top < 64 {
                bits &= u64::MAX << top;
                return Some((start, w as u32 * 64 + top - start));
            }
            // The run reaches the word's last bit: go on into the next word
            // if its first bit is set.
            w += 1;
            bits = map.get(w).copied().unwrap_or(0);
            if bits & 1 == 0 {
                return Some((start, w as u32 * 64 - start));
            }
        }
    })
}

/// Where the runs of a 512-bit map begin and end, word by word as the map:
/// bit `i` of `starts` is set where a run's first bit is, of `ends` where
/// its last bit is. The handover writer's per-region step: counting runs
/// and listing them from these masks costs a few instructions a word and a
/// few a run, where walking the map run by run costs a branch per word.
pub(super) struct Edges {
    starts: [u64; 8],
    ends: [u64; 8],
}

impl Edges {
    /// The edges of `map`'s runs (a run may cross words).
    #[inline(always)]
    pub(super) fn of(map: &[u64; 8]) -> Edges {
        let mut starts = [0u64; 8];
        let mut ends = [0u64; 8];
        for i in 0..8 {
            let w = map[i];
            // The bit before this word's first, and after its last.
            let before = if i == 0 { 0 } else { map[i - 1] >> 63 };
            let after = if i == 7 { 0 } else { map[i + 1] << 63 };
            starts[i] = w & !(w << 1 | before);
            ends[i] = w & !(w >> 1 | after);
        }
        Edges { starts, ends }
    }

    /// Number of runs: a population count of the starts, summed across
    /// the words before the bytes are added up (no `popcnt` instruction on
    /// the baseline targets, so this is the cheap way to count 512 bits).
    #[inline(always)]
    pub(super) fn count(&self) -> u32 {
        const M1: u64 = 0x5555_5555_5555_5555;
        const M2: u64 = 0x3333_3333_3333_3333;
        const M4: u64 = 0x0f0f_0f0f_0f0f_0f0f;
        const M8: u64 = 0x00ff_00ff_00ff_00ff;
        // Per byte, the bits set in that byte of each word: at most 64
        // after eight words.
        let mut bytes = 0u64;
        for &w in &self.starts {
            let x = w - ((w >> 1) & M1);
            let x = (x & M2) + ((x >> 2) & M2);
            bytes += (x + (x >> 4)) & M4;
        }
        // Into four 16-bit lanes (each at most 128), then their sum.
        let lanes = (bytes & M8) + ((bytes >> 8) & M8);
        (lanes.wrapping_mul(0x0001_0001_0001_0001) >> 48) as u32
    }

    /// Calls `f(first bit, bits)` for each run, in order, at most `n` of
    /// them (the chain writer knows the [`count`](Self::count) and passes
    /// it, which lets the loop's end be predicted; the reader passes
    /// `u32::MAX` rather than count first). No other branch depends on
    /// where the runs lie: each step takes the lowest start and the lowest
    /// end left, finding their words through a mask of the words that
    /// still hold one. A loop over words and bits instead mispredicted
    /// about once a word.
    #[inline(always)]
    pub(super) fn each<E>(
        &self,
        n: u32,
        mut f: impl FnMut(u32, u32) -> Result<(), E>,
    ) -> Result<(), E> {
        let (mut starts, mut ends) = (self.starts, self.ends);
        let (mut smask, mut emask) = (0u32, 0u32);
        for i in 0..8 {
            smask |= u32::from(starts[i] != 0) << i;
            emask |= u32::from(ends[i] != 0) << i;
        }
        for _ in 0..n {
            if smask == 0 {
                break;
            }
            let first = Self::take(&mut starts, &mut smask);
            let last = Self::take(&mut ends, &mut emask);
            f(first, last.wrapping_add(1).wrapping_sub(first))?;
        }
        Ok(())
    }

    /// Takes the lowest set bit of `map` (whose words with a bit set are
    /// the bits of `mask`) and returns its position (past 511 if none is
    /// left).
    #[inline(always)]
    fn take(map: &mut [u64; 8], mask: &mut u32) -> u32 {
        let w = mask.trailing_zeros() as usize & 7;
        let bits = map[w];
        let rest = bits & bits.wrapping_sub(1);
        map[w] = rest;
        // Clear the word's mask bit once it is used up.
        *mask &= !(u32::from(rest == 0) << w);
        (w as u32) * 64 + bits.trailing_zeros()
    }
}

/// The bits from the first set bit of a 512-bit map to its last, as
/// `[first, end)`; `None` if no bit is set.
pub(super) fn map_span(map: &[u64; 8]) -> Option<(u32, u32)> {
    let first = map.iter().position(|&m| m != 0)?;
    let last = map.iter().rposition(|&m| m != 0)?;
    Some((
        first as u32 * 64 + map[first].trailing_zeros(),
        last as u32 * 64 + 64 - map[last].leading_zeros(),
    ))
}

/// Leaves per store page (4 KiB: one frame).
const PAGE_LEAVES: usize = 32;

/// Every leaf of a tracker, addressed by a `u32` index, in pages of 32 that
/// never move: growing the store copies nothing, and a dense chunk's 512
/// leaves are 16 whole pages with consecutive indices.
#[derive(Default)]
pub(super) struct LeafStore {
    pages: Pages<[Leaf; PAGE_LEAVES]>,
    /// Leaves given back, for reuse. Its capacity is kept at least the
    /// number of leaves, so giving one back never allocates.
    free: Vec<u32>,
    /// The next leaf of the page that single leaves are taken from; at a
    /// page boundary, that page is used up and the next leaf takes a new
    /// one (pages taken for dense chunks lie in between).
    next: u32,
    /// Leaves handed out and not given back.
    live: usize,
}

/// The weight of word `w` (0 to 15, in memory order) of leaf `i` in the
/// store's checksum: odd, so any single changed word changes the sum, and
/// different for every word, so words that trade places do too.
#[inline(always)]
pub(super) fn weight(i: u32, w: usize) -> u64 {
    (u64::from(i) << 4 | w as u64) << 1 | 1
}

/// Page `p`'s share of the store's checksum: word `g` of the page is word
/// `g % 16` of leaf `32p + g / 16`, whose weight is `1024p + 1 + 2g`.
#[cfg(test)]
pub(super) fn page_sum(p: usize, page: &[Leaf; PAGE_LEAVES]) -> u64 {
    let words = page
        .iter()
        .flat_map(|l| l.words.as_flattened().iter().copied());
    super::pages::weighted(words, (p as u64) << 10 | 1, 1)
}

impl core::ops::Index<u32> for LeafStore {
    type Output = Leaf;
    #[inline(always)]
    fn index(&self, i: u32) -> &Leaf {
        &self.pages.get((i as usize) / PAGE_LEAVES)[(i as usize) % PAGE_LEAVES]
    }
}

impl LeafStore {
    /// Leaf `i`, for writing: private, so that every write goes through
    /// [`update`](Self::update) or [`try_add_word`](Self::try_add_word),
    /// which keep the checksum.
    #[inline(always)]
    fn leaf_mut(&mut self, i: u32) -> &mut Leaf {
        &mut self.pages.get_mut((i as usize) / PAGE_LEAVES)[(i as usize) % PAGE_LEAVES]
    }

    /// The store's checksum (see [`weight`]), kept up to date by every
    /// write.
    pub(super) fn sum(&self) -> u64 {
        self.pages.sum()
    }

    /// The sum computed from every leaf, for tests of the kept one.
    #[cfg(test)]
    pub(super) fn sum_again(&self) -> u64 {
        self.pages.sum_again(page_sum)
    }

    /// Changes leaf `i` with `f`, the checksum brought up to date by the
    /// change of each of its 16 words.
    pub(super) fn update<R>(&mut self, i: u32, f: impl FnOnce(&mut Leaf) -> R) -> R {
        let leaf = self.leaf_mut(i);
        let old = leaf.words;
        let r = f(leaf);
        let new = leaf.words;
        self.add_changes(i, 0, &old, &new);
        r
    }

    /// [`Leaf::set`] on leaf `i`, the checksum brought up to date by the
    /// word pairs the block covers only (one pair below order 7).
    pub(super) fn set(&mut self, i: u32, b: Small, on: bool) {
        let (k0, k1) = ((b.off / 64) as usize, ((b.end() - 1) / 64) as usize);
        let leaf = self.leaf_mut(i);
        let old = leaf.words;
        leaf.set(b, on);
        let new = leaf.words;
        let (old, new) = (old.get(k0..=k1), new.get(k0..=k1));
        self.add_changes(i, k0, old.unwrap_or(&[]), new.unwrap_or(&[]));
    }

    /// Adds to the checksum what changed from `old` to `new` in the word
    /// pairs of leaf `i` from pair `k0`: each word's weight ([`weight`])
    /// times its change.
    fn add_changes(&mut self, i: u32, k0: usize, old: &[[u64; 2]], new: &[[u64; 2]]) {
        let changes = new
            .as_flattened()
            .iter()
            .zip(old.as_flattened())
            .map(|(n, o)| n.wrapping_sub(*o));
        self.pages
            .add_to_sum(super::pages::weighted(changes, weight(i, 2 * k0), 1));
    }

    /// Sets leaf `i` to `leaf`.
    pub(super) fn put(&mut self, i: u32, leaf: Leaf) {
        self.update(i, |l| *l = leaf);
    }

    /// [`Leaf::try_add_word`] on leaf `i`, the checksum kept: the pair's
    /// page word gains the block's bits `m` and its tail word `m`'s bits
    /// but the lowest, at weights `w` and `w + 2`.
    #[inline(always)]
    pub(super) fn try_add_word(&mut self, i: u32, phys: u64, order: u32) -> bool {
        let m = self.leaf_mut(i).try_add_word(phys, order);
        if m == 0 {
            return false;
        }
        let tails = m & m.wrapping_sub(1);
        let w = weight(i, 2 * ((phys >> (PAGE_SHIFT + 6)) & 7) as usize);
        self.pages.add_to_sum(
            w.wrapping_mul(m.wrapping_add(tails))
                .wrapping_add(tails.wrapping_mul(2)),
        );
        true
    }

    /// Leaves handed out and not given back.
    pub(super) fn live(&self) -> usize {
        self.live
    }

    /// Leaves given back and not reused yet.
    #[cfg(test)]
    pub(super) fn given_back(&self) -> usize {
        self.free.len()
    }

    /// Bytes used.
    #[cfg(any(test, feature = "tools"))]
    pub(super) fn memory_bytes(&self) -> usize {
        self.pages.len() * core::mem::size_of::<[Leaf; PAGE_LEAVES]>() + self.free.capacity() * 4
    }

    /// Adds `n` empty pages at the end and returns the index of their first
    /// leaf; on failure (out of memory) nothing changes.
    fn add_pages(&mut self, n: usize) -> Result<u32, ()> {
        let first = self.pages.len();
        let leaves = (first + n)
            .checked_mul(PAGE_LEAVES)
            .filter(|&l| l <= MAX_LEAVES as usize)
            .ok_or(())?;
        self.pages.reserve(n)?;
        self.free
            .try_reserve(leaves.saturating_sub(self.free.len()))
            .map_err(|_| ())?;
        let mut fresh = Vec::new();
        fresh.try_reserve_exact(n).map_err(|_| ())?;
        for _ in 0..n {
            let mut v = Vec::new();
            v.try_reserve_exact(PAGE_LEAVES).map_err(|_| ())?;
            v.resize(PAGE_LEAVES, Leaf::default());
            let page: Box<[Leaf; PAGE_LEAVES]> = v.into_boxed_slice().try_into().map_err(|_| ())?;
            fresh.push(page);
        }
        for page in fresh {
            self.pages.push(page);
        }
        Ok((first * PAGE_LEAVES) as u32)
    }

    /// An empty leaf, reused or new.
    pub(super) fn alloc(&mut self) -> Result<u32, ()> {
        let i = if let Some(i) = self.free.pop() {
            self.put(i, Leaf::default());
            i
        } else {
            if (self.next as usize).is_multiple_of(PAGE_LEAVES) {
                self.next = self.add_pages(1)?;
            }
            self.next += 1;
            self.next - 1
        };
        self.live += 1;
        Ok(i)
    }

    /// `n` consecutive empty leaves (a multiple of 64), for a dense chunk;
    /// the first index.
    pub(super) fn alloc_many(&mut self, n: usize) -> Result<u32, ()> {
        let first = self.add_pages(n.div_ceil(PAGE_LEAVES))?;
        self.live += n;
        Ok(first)
    }

    /// The store's pages, to settle and list.
    pub(super) fn pages(&self) -> &Pages<[Leaf; PAGE_LEAVES]> {
        &self.pages
    }

    /// The same, to settle.
    pub(super) fn pages_mut(&mut self) -> &mut Pages<[Leaf; PAGE_LEAVES]> {
        &mut self.pages
    }

    /// The store's pages, for the last time.
    #[cfg(any(test, feature = "host"))]
    pub(super) fn into_pages(self) -> Pages<[Leaf; PAGE_LEAVES]> {
        self.pages
    }

    /// Gives leaf `i` back. Never allocates.
    pub(super) fn give_back(&mut self, i: u32) {
        // Cannot fail: `add_pages` made room for every leaf.
        self.free.push(i);
        self.live -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// Words with long runs of ones and zeros, so runs cross words often.
    fn word() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            Just(u64::MAX),
            any::<u64>(),
            (0u32..64, 0u32..64)
                .prop_map(|(a, b)| (u64::MAX << a.min(b)) & (u64::MAX >> (63 - a.max(b)))),
        ]
    }

    proptest! {
        /// `runs`, the edges' count and runs, and `map_span` agree with a
        /// page-by-page scan.
        #[test]
        fn runs_match_a_bit_scan(maps in proptest::array::uniform8(word())) {
            let mut l = Leaf::default();
            for (w, m) in l.words.iter_mut().zip(maps) {
                w[PAGES] = m;
            }
            let mut want = Vec::new();
            let mut i = 0u32;
            while i < 512 {
                if l.page(i) {
                    let s = i;
                    while i < 512 && l.page(i) {
                        i += 1;
                    }
                    want.push((s, i - s));
                } else {
                    i += 1;
                }
            }
            prop_assert_eq!(l.runs().collect::<Vec<_>>(), want.clone());
            let edges = Edges::of(&maps);
            prop_assert_eq!(edges.count() as usize, want.len());
            let mut got = Vec::new();
            edges.each(edges.count(), |s, n| { got.push((s, n)); Ok::<(), ()>(()) }).unwrap();
            prop_assert_eq!(got, want.clone());
            let mut all = Vec::new();
            edges.each(u32::MAX, |s, n| { all.push((s, n)); Ok::<(), ()>(()) }).unwrap();
            prop_assert_eq!(all, want.clone());
            let span = want.first().zip(want.last()).map(|(f, l)| (f.0, l.0 + l.1));
            prop_assert_eq!(map_span(&maps), span);
        }
    }
}
