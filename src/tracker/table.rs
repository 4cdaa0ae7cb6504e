//! The tracker's region table: 2 MiB region index -> a 32-bit slot, in two
//! levels (a small hash table of 1 GiB chunks, each 512 slots).

use super::Small;
use super::pages::Pages;
use alloc::boxed::Box;
use alloc::vec::Vec;

/// Words (`u32`) of a chunk's page: its 512 slots, then its key (region
/// index / 512, low and high halves) and its dense base (`SPARSE` if
/// sparse), then zeros.
pub(super) const PAGE_WORDS: usize = 1024;
/// Index of the key's low half in a chunk's page.
pub(super) const KEY_WORD: usize = 512;
/// Index of the dense base in a chunk's page.
pub(super) const DENSE_WORD: usize = 514;

/// The weight of 64-bit word `g` (two slots, the lower first) of chunk
/// `c`'s page in the table's checksum: odd and different for every word
/// (as a leaf word's, times an odd constant so the two kinds of page weigh
/// their words differently). Summed a 64-bit word at a time, a page takes
/// half the multiplies it would as slots.
#[inline(always)]
pub(super) fn weight(c: u32, g: usize) -> u64 {
    ((u64::from(c) << 9 | g as u64) << 1 | 1).wrapping_mul(WEIGHT_K)
}

/// The odd constant of a chunk page's weights.
pub(super) const WEIGHT_K: u64 = 0x9e37_79b9_7f4a_7c15;

/// What the tracker knows of one region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    /// One small block, the region's only one.
    Inline(Small),
    /// Index of the region's leaf (below 2^30).
    Leaf(u32),
    /// Covered by the large block that starts at region `head` of the same
    /// chunk (a large block is at most 1 GiB and aligned, so it never
    /// crosses a chunk).
    Large {
        /// First region of the block, as an offset in the chunk.
        head: u32,
        /// The block's order.
        order: u32,
    },
}

/// A slot in 32 bits: 0 is empty; else a tag in the top two bits.
const TAG_SHIFT: u32 = 30;
const TAG_INLINE: u32 = 1 << TAG_SHIFT;
const TAG_LEAF: u32 = 2 << TAG_SHIFT;
const TAG_LARGE: u32 = 3 << TAG_SHIFT;
const TAG_MASK: u32 = 3 << TAG_SHIFT;
/// Leaf indices are below this.
pub(super) const MAX_LEAVES: u32 = 1 << TAG_SHIFT;

impl Slot {
    fn encode(self) -> u32 {
        match self {
            Slot::Inline(s) => TAG_INLINE | u32::from(s.pack()),
            Slot::Leaf(i) => TAG_LEAF | i,
            Slot::Large { head, order } => TAG_LARGE | order << 9 | head,
        }
    }

    pub(super) fn decode(v: u32) -> Slot {
        match v & TAG_MASK {
            TAG_INLINE => Slot::Inline(Small::unpack(v as u16)),
            TAG_LEAF => Slot::Leaf(v & !TAG_MASK),
            _ => Slot::Large {
                head: v & 0x1ff,
                order: (v >> 9) & 0x1f,
            },
        }
    }
}

/// Chunk `c`'s page's share of the table's checksum (see `weight`).
#[cfg(test)]
pub(super) fn page_sum(c: usize, page: &[u32; PAGE_WORDS]) -> u64 {
    let words = page
        .chunks_exact(2)
        .map(|w| u64::from(w[0]) | u64::from(w[1]) << 32);
    super::pages::weighted(words, (c as u64) << 10 | 1, WEIGHT_K)
}

/// Regions per chunk: a chunk covers 1 GiB.
pub(super) const CHUNK: u64 = 512;

/// An index entry: a chunk's key (plus one; 0 marks a free entry), its
/// number, and where its leaves start if it is dense (`SPARSE` if not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    key1: u64,
    chunk: u32,
    dense: u32,
}

const SPARSE: u32 = u32::MAX;
const FREE: Entry = Entry {
    key1: 0,
    chunk: 0,
    dense: SPARSE,
};

/// Where a region stands, as one lookup finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lookup {
    /// Its chunk does not exist yet.
    NoChunk,
    /// Its chunk is dense: the region's leaf is `leaf`, found without
    /// reading the slot at handle `h` (which is `Leaf(leaf)` or `Large`).
    Dense {
        /// The slot's handle.
        h: usize,
        /// The region's leaf.
        leaf: u32,
    },
    /// Its chunk is sparse: the slot at handle `h`, or `None` if empty.
    Sparse {
        /// The slot's handle.
        h: usize,
        /// The slot, if the region has one.
        slot: Option<Slot>,
    },
}

/// Region index -> slot, in two levels: a small open-addressing index keyed
/// by 1 GiB chunk gives the chunk's number, and chunk `c` owns the 512 slots
/// `c * 512 ..` of one array, a `u32` (0 = empty) per 2 MiB region.
/// Neighbouring regions are neighbouring slots, nothing is ever rehashed
/// but the index, and chunks come out in address order by sorting only their
/// keys. A handle is `chunk number * 512 + offset`.
///
/// A chunk can be made dense ([`RegionTable::make_dense`]): then each of its
/// regions has a leaf at `base + offset`, and the index entry alone locates
/// a region's leaf. That saves a dependent load per preserve where many
/// regions of a GiB hold leaves; sparse chunks keep small blocks inline.
pub(super) struct RegionTable {
    /// Chunk `c`'s page: its slots and what the next kernel needs to
    /// read them.
    pages: Pages<[u32; PAGE_WORDS]>,
    /// Per chunk: slots in use, and slots holding a leaf.
    used: Vec<u16>,
    leaves: Vec<u16>,
    index: Vec<Entry>,
    shift: u32,
}

fn hash(key1: u64, shift: u32) -> usize {
    (key1.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> shift) as usize
}

impl RegionTable {
    /// The slot word at handle `h`.
    #[inline(always)]
    fn slot_word(&self, h: usize) -> u32 {
        self.pages.get(h / CHUNK as usize)[h % CHUNK as usize]
    }

    /// Writes word `j` of chunk `c`'s page, the checksum kept (the 64-bit
    /// word `j / 2` changes by the difference, shifted into its half);
    /// returns the word it replaced.
    #[inline(always)]
    fn write(&mut self, c: u32, j: usize, v: u32) -> u32 {
        let old = core::mem::replace(&mut self.pages.get_mut(c as usize)[j], v);
        let change = u64::from(v).wrapping_sub(u64::from(old)) << (32 * (j & 1));
        self.pages.add_to_sum(change.wrapping_mul(weight(c, j / 2)));
        old
    }

    /// The table's checksum.
    pub(super) fn sum(&self) -> u64 {
        self.pages.sum()
    }

    /// The same, from every page, for tests of the kept one.
    #[cfg(test)]
    pub(super) fn sum_again(&self) -> u64 {
        self.pages.sum_again(page_sum)
    }

    /// The table's pages, to settle and list.
    pub(super) fn pages(&self) -> &Pages<[u32; PAGE_WORDS]> {
        &self.pages
    }

    /// The same, to settle.
    pub(super) fn pages_mut(&mut self) -> &mut Pages<[u32; PAGE_WORDS]> {
        &mut self.pages
    }

    /// The table's pages, for the last time.
    #[cfg(any(test, feature = "host"))]
    pub(super) fn into_pages(self) -> Pages<[u32; PAGE_WORDS]> {
        self.pages
    }

    /// An empty table. Its index starts with room for 4 chunks, so that
    /// a lookup never meets an empty index.
    pub(super) fn new() -> Result<Self, ()> {
        const FIRST: usize = 8;
        let mut index = Vec::new();
        index.try_reserve_exact(FIRST).map_err(|_| ())?;
        index.resize(FIRST, FREE);
        Ok(Self {
            pages: Pages::default(),
            used: Vec::new(),
            leaves: Vec::new(),
            index,
            shift: 64 - FIRST.trailing_zeros(),
        })
    }

    /// Regions with a slot.
    pub(super) fn len(&self) -> usize {
        self.used.iter().map(|&u| usize::from(u)).sum()
    }

    #[cfg(any(test, feature = "tools"))]
    pub(super) fn memory_bytes(&self) -> usize {
        self.pages.len() * PAGE_WORDS * 4
            + (self.used.capacity() + self.leaves.capacity()) * 2
            + self.index.capacity() * core::mem::size_of::<Entry>()
    }

    /// The index position of the chunk with `key`, if it exists.
    #[inline(always)]
    fn position(&self, key: u64) -> Option<usize> {
        // The index is never empty, and `hash` is below its length.
        let mask = self.index.len().wrapping_sub(1);
        let mut i = hash(key + 1, self.shift);
        loop {
            let k = self.index[i].key1;
            if k == key + 1 {
                return Some(i);
            }
            if k == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Finds `region`: one probe of the index, then (for a sparse chunk)
    /// one load of the slot.
    #[inline(always)]
    pub(super) fn lookup(&self, region: u64) -> Lookup {
        let Some(i) = self.position(region / CHUNK) else {
            return Lookup::NoChunk;
        };
        let e = self.index[i];
        let off = (region % CHUNK) as usize;
        let h = e.chunk as usize * CHUNK as usize + off;
        if e.dense != SPARSE {
            return Lookup::Dense {
                h,
                leaf: e.dense + off as u32,
            };
        }
        let v = self.slot_word(h);
        Lookup::Sparse {
            h,
            slot: (v != 0).then(|| Slot::decode(v)),
        }
    }

    /// Makes sure the chunk holding `region` exists. On failure (out of
    /// memory) nothing changes.
    pub(super) fn ensure(&mut self, region: u64) -> Result<(), ()> {
        let key = region / CHUNK;
        if self.position(key).is_some() {
            return Ok(());
        }
        // Allocate everything first; then nothing below can fail.
        self.pages.reserve(1)?;
        let mut page = Vec::new();
        page.try_reserve_exact(PAGE_WORDS).map_err(|_| ())?;
        page.resize(PAGE_WORDS, 0u32);
        let page: Box<[u32; PAGE_WORDS]> = page.into_boxed_slice().try_into().map_err(|_| ())?;
        self.used.try_reserve(1).map_err(|_| ())?;
        self.leaves.try_reserve(1).map_err(|_| ())?;
        let n = self.used.len() + 1;
        if n * 2 > self.index.len() {
            let cap = (n * 2).next_power_of_two().max(8);
            let mut new: Vec<Entry> = Vec::new();
            new.try_reserve_exact(cap).map_err(|_| ())?;
            new.resize(cap, FREE);
            let shift = 64 - cap.trailing_zeros();
            for e in self.index.iter().filter(|e| e.key1 != 0) {
                let mut i = hash(e.key1, shift) & (cap - 1);
                while new[i].key1 != 0 {
                    i = (i + 1) & (cap - 1);
                }
                new[i] = *e;
            }
            self.index = new;
            self.shift = shift;
        }
        let c = self.used.len() as u32;
        self.pages.push(page);
        self.write(c, KEY_WORD, key as u32);
        self.write(c, KEY_WORD + 1, (key >> 32) as u32);
        self.write(c, DENSE_WORD, SPARSE);
        self.used.push(0);
        self.leaves.push(0);
        let mask = self.index.len() - 1;
        let mut i = hash(key + 1, self.shift) & mask;
        while self.index[i].key1 != 0 {
            i = (i + 1) & mask;
        }
        self.index[i] = Entry {
            key1: key + 1,
            chunk: c,
            dense: SPARSE,
        };
        Ok(())
    }

    /// The handle of `region` (`Ok` if it has a slot, `Err` if not). The
    /// chunk must exist (see `ensure`); if it does not, `Err(usize::MAX)`.
    #[inline(always)]
    pub(super) fn find(&self, region: u64) -> Result<usize, usize> {
        match self.lookup(region) {
            Lookup::NoChunk => Err(usize::MAX),
            Lookup::Dense { h, .. } => Ok(h),
            Lookup::Sparse { h, slot } => slot.map_or(Err(h), |_| Ok(h)),
        }
    }

    #[inline(always)]
    fn put(&mut self, h: usize, v: u32) {
        let c = h / CHUNK as usize;
        let old = self.write(c as u32, h % CHUNK as usize, v);
        match (old != 0, v != 0) {
            (false, true) => self.used[c] += 1,
            (true, false) => self.used[c] -= 1,
            _ => {}
        }
        match (old & TAG_MASK == TAG_LEAF, v & TAG_MASK == TAG_LEAF) {
            (false, true) => self.leaves[c] += 1,
            (true, false) => self.leaves[c] -= 1,
            _ => {}
        }
    }

    #[inline(always)]
    pub(super) fn get(&self, region: u64) -> Option<Slot> {
        self.find(region).ok().map(|h| self.slot_at(h))
    }

    /// The slot at handle `h` (from `find`).
    #[inline(always)]
    pub(super) fn slot_at(&self, h: usize) -> Slot {
        Slot::decode(self.slot_word(h))
    }

    /// Sets the slot at handle `h` (from `find`; after `ensure` for a new
    /// region).
    #[inline(always)]
    pub(super) fn set_at(&mut self, h: usize, slot: Slot) {
        self.put(h, slot.encode());
    }

    /// Empties the slot at handle `h`.
    pub(super) fn clear_at(&mut self, h: usize) {
        self.put(h, 0);
    }

    /// Slots holding a leaf in the chunk of handle `h`.
    pub(super) fn leaves_in_chunk(&self, h: usize) -> usize {
        usize::from(self.leaves[h / CHUNK as usize])
    }

    /// Whether the chunk of `region` is dense.
    #[cfg(test)]
    pub(super) fn is_dense(&self, region: u64) -> bool {
        matches!(self.lookup(region), Lookup::Dense { .. })
    }

    /// Makes the sparse chunk of `region` dense, its leaves starting at
    /// `base`: first calls `fill(leaf, slot)` for each slot in use (to fill
    /// its region's new leaf), then makes every slot but a `Large` one
    /// `Leaf(base + offset)`. Does nothing if the chunk does not exist.
    pub(super) fn make_dense(&mut self, region: u64, base: u32, mut fill: impl FnMut(u32, Slot)) {
        let Some(i) = self.position(region / CHUNK) else {
            return;
        };
        let e = &mut self.index[i];
        e.dense = base;
        let c = e.chunk;
        self.write(c, DENSE_WORD, base);
        let mut leaves = 0;
        for (off, leaf) in (0..CHUNK as usize).zip(base..) {
            let v = self.pages.get(c as usize)[off];
            if v != 0 {
                fill(leaf, Slot::decode(v));
            }
            if v & TAG_MASK != TAG_LARGE {
                self.write(c, off, Slot::Leaf(leaf).encode());
                leaves += 1;
            }
        }
        self.used[c as usize] = CHUNK as u16;
        self.leaves[c as usize] = leaves;
    }

    /// The chunks with a slot in use, in address order: each chunk's first
    /// region and its 512 slots (decode each non-zero one with
    /// [`Slot::decode`]). Allocates only the list; out of memory is `Err`.
    /// The handover writer loops over these itself, so its state stays in
    /// registers (through a callback it lived in memory).
    pub(super) fn sorted_chunks(&self) -> Result<Vec<(u64, &[u32])>, ()> {
        let mut keys: Vec<(u64, u32)> = Vec::new();
        keys.try_reserve_exact(self.used.len()).map_err(|_| ())?;
        for e in &self.index {
            if e.key1 != 0 && self.used.get(e.chunk as usize).is_some_and(|&u| u != 0) {
                keys.push((e.key1 - 1, e.chunk));
            }
        }
        keys.sort_unstable();
        let mut out = Vec::new();
        out.try_reserve_exact(keys.len()).map_err(|_| ())?;
        for (key, c) in keys {
            if (c as usize) < self.pages.len() {
                out.push((key * CHUNK, &self.pages.get(c as usize)[..CHUNK as usize]));
            }
        }
        Ok(out)
    }

    /// Calls `f(region, slot)` for every slot in use, in address order.
    /// Out of memory is `Err(None)`, an error of `f` is `Err(Some(e))`.
    pub(super) fn for_each_sorted<E>(
        &self,
        mut f: impl FnMut(u64, Slot) -> Result<(), E>,
    ) -> Result<(), Option<E>> {
        for (base, slots) in self.sorted_chunks().map_err(|()| None)? {
            for (o, &v) in slots.iter().enumerate() {
                if v != 0 {
                    f(base + o as u64, Slot::decode(v)).map_err(Some)?;
                }
            }
        }
        Ok(())
    }

    /// Every (region, slot), in no particular order.
    #[cfg(any(test, feature = "tools"))]
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, Slot)> + '_ {
        self.index
            .iter()
            .filter(|e| e.key1 != 0)
            .flat_map(move |e| self.chunk_slots(e.key1 - 1, e.chunk))
    }

    /// The (region, slot) pairs of chunk `c`, whose key is `key`.
    #[cfg(any(test, feature = "tools"))]
    fn chunk_slots(&self, key: u64, c: u32) -> impl Iterator<Item = (u64, Slot)> + '_ {
        self.pages.get(c as usize)[..CHUNK as usize]
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0)
            .map(move |(o, &v)| (key * CHUNK + o as u64, Slot::decode(v)))
    }
}
