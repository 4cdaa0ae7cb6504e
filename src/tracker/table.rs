//! The tracker's region table: 2 MiB region index -> a 64-bit slot, in two
//! levels (a small hash table of 1 GiB chunks, each 512 slots).

use super::Small;
use alloc::vec::Vec;

/// What the tracker knows of one region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    /// Up to three small blocks, each packed in 16 bits (`Small::pack`),
    /// with a valid bit. The tracker uses `INLINE_MAX` of them.
    Inline(u64),
    /// Index of the region's leaf.
    Leaf(u32),
    /// Covered by the large block that starts at region `head`.
    Large {
        /// First region of the block.
        head: u64,
        /// The block's order.
        order: u32,
    },
}

const TAG_INLINE: u64 = 1 << 62;
const TAG_LEAF: u64 = 2 << 62;
const TAG_LARGE: u64 = 3 << 62;
const VALID: u16 = 0x8000;

impl Slot {
    pub(super) fn inline(entries: &[Small]) -> Slot {
        let mut e = [None; 3];
        for (d, s) in e.iter_mut().zip(entries) {
            *d = Some(*s);
        }
        Slot::inline_from(e)
    }

    pub(super) fn inline_from(e: [Option<Small>; 3]) -> Slot {
        let mut packed = 0u64;
        for (i, x) in e.iter().enumerate() {
            if let Some(s) = x {
                packed |= u64::from(s.pack() | VALID) << (16 * i);
            }
        }
        Slot::Inline(packed)
    }

    pub(super) fn unpack(packed: u64) -> [Option<Small>; 3] {
        let mut e = [None; 3];
        for (i, d) in e.iter_mut().enumerate() {
            let v = (packed >> (16 * i)) as u16;
            if v & VALID != 0 {
                *d = Some(Small::unpack(v & !VALID));
            }
        }
        e
    }

    fn encode(self) -> u64 {
        match self {
            Slot::Inline(p) => TAG_INLINE | p,
            Slot::Leaf(i) => TAG_LEAF | u64::from(i),
            Slot::Large { head, order } => TAG_LARGE | u64::from(order) << 40 | head,
        }
    }

    fn decode(v: u64) -> Slot {
        match v & (3 << 62) {
            TAG_INLINE => Slot::Inline(v & 0xffff_ffff_ffff),
            TAG_LEAF => Slot::Leaf(v as u32),
            _ => Slot::Large {
                head: v & ((1 << 40) - 1),
                order: ((v >> 40) & 0x1f) as u32,
            },
        }
    }
}

/// Regions per chunk: a chunk covers 1 GiB.
const CHUNK: u64 = 512;

/// Region index -> slot, in two levels: a small hash table keyed by 1 GiB
/// chunk points to a 512-entry array with one slot (a `u64`, 0 = empty) per
/// 2 MiB region. Neighbouring regions are neighbouring slots, nothing is
/// ever rehashed but the chunk index, and chunks come out in address order
/// by sorting only their keys. A handle is `chunk number * 512 + offset`.
pub(super) struct RegionTable {
    /// The chunks' slots, and how many slots of each are in use.
    chunks: Vec<Vec<u64>>,
    used: Vec<u16>,
    /// Open-addressing index: (chunk key + 1, chunk number); key 0 = empty.
    index: Vec<(u64, u32)>,
    shift: u32,
    /// The chunk used last: (key + 1, number).
    last: core::cell::Cell<(u64, u32)>,
    len: usize,
}

fn hash(key: u64, shift: u32) -> usize {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> shift) as usize
}

impl RegionTable {
    pub(super) fn new() -> Self {
        Self {
            chunks: Vec::new(),
            used: Vec::new(),
            index: Vec::new(),
            shift: 64,
            last: core::cell::Cell::new((0, 0)),
            len: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn memory_bytes(&self) -> usize {
        self.chunks.len() * (CHUNK as usize * 8 + 2) + self.index.capacity() * 16
    }

    /// The number of the chunk with `key`, if it exists.
    #[inline(always)]
    fn chunk(&self, key: u64) -> Option<u32> {
        let (k, c) = self.last.get();
        if k == key + 1 {
            return Some(c);
        }
        if self.index.is_empty() {
            return None;
        }
        let mask = self.index.len() - 1;
        let mut i = hash(key + 1, self.shift) & mask;
        loop {
            let (k, c) = self.index[i];
            if k == key + 1 {
                self.last.set((k, c));
                return Some(c);
            }
            if k == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Makes sure the chunk holding `region` exists. On failure (out of
    /// memory) nothing changes.
    pub(super) fn ensure(&mut self, region: u64) -> Result<(), ()> {
        let key = region / CHUNK;
        if self.chunk(key).is_some() {
            return Ok(());
        }
        // Allocate everything first; then nothing below can fail.
        let mut slots: Vec<u64> = Vec::new();
        slots.try_reserve_exact(CHUNK as usize).map_err(|_| ())?;
        slots.resize(CHUNK as usize, 0);
        self.chunks.try_reserve(1).map_err(|_| ())?;
        self.used.try_reserve(1).map_err(|_| ())?;
        let n = self.chunks.len() + 1;
        if n * 2 > self.index.len() {
            let cap = (n * 2).next_power_of_two().max(8);
            let mut new: Vec<(u64, u32)> = Vec::new();
            new.try_reserve_exact(cap).map_err(|_| ())?;
            new.resize(cap, (0, 0));
            let shift = 64 - cap.trailing_zeros();
            for &(k, c) in self.index.iter().filter(|e| e.0 != 0) {
                let mut i = hash(k, shift) & (cap - 1);
                while new[i].0 != 0 {
                    i = (i + 1) & (cap - 1);
                }
                new[i] = (k, c);
            }
            self.index = new;
            self.shift = shift;
        }
        let c = self.chunks.len() as u32;
        self.chunks.push(slots);
        self.used.push(0);
        let mask = self.index.len() - 1;
        let mut i = hash(key + 1, self.shift) & mask;
        while self.index[i].0 != 0 {
            i = (i + 1) & mask;
        }
        self.index[i] = (key + 1, c);
        self.last.set((key + 1, c));
        Ok(())
    }

    /// The handle of `region` (`Ok` if it has a slot, `Err` if not). The
    /// chunk must exist (see `ensure`); if it does not, `Err(usize::MAX)`.
    #[inline(always)]
    pub(super) fn find(&self, region: u64) -> Result<usize, usize> {
        let Some(c) = self.chunk(region / CHUNK) else {
            return Err(usize::MAX);
        };
        let h = c as usize * CHUNK as usize + (region % CHUNK) as usize;
        if self.raw(h) != 0 { Ok(h) } else { Err(h) }
    }

    #[inline(always)]
    fn raw(&self, h: usize) -> u64 {
        self.chunks[h / CHUNK as usize][h % CHUNK as usize]
    }

    #[inline(always)]
    fn put(&mut self, h: usize, v: u64) {
        let (c, o) = (h / CHUNK as usize, h % CHUNK as usize);
        let old = core::mem::replace(&mut self.chunks[c][o], v);
        match (old != 0, v != 0) {
            (false, true) => {
                self.used[c] += 1;
                self.len += 1;
            }
            (true, false) => {
                self.used[c] -= 1;
                self.len -= 1;
            }
            _ => {}
        }
    }

    #[inline(always)]
    pub(super) fn get(&self, region: u64) -> Option<Slot> {
        self.find(region).ok().map(|h| Slot::decode(self.raw(h)))
    }

    /// The slot at handle `h` (from `find`).
    #[inline(always)]
    pub(super) fn slot_at(&self, h: usize) -> Slot {
        Slot::decode(self.raw(h))
    }

    /// Sets the slot at handle `h` (from `find`; after `ensure` for a new
    /// region).
    #[inline(always)]
    pub(super) fn set_at(&mut self, h: usize, slot: Slot) {
        self.put(h, slot.encode());
    }

    /// Sets the slot of `region`, whose chunk exists (see `ensure`).
    pub(super) fn insert(&mut self, region: u64, slot: Slot) {
        let h = match self.find(region) {
            Ok(h) | Err(h) => h,
        };
        if h != usize::MAX {
            self.put(h, slot.encode());
        }
    }

    /// Replaces the slot of a region that is present.
    pub(super) fn set(&mut self, region: u64, slot: Slot) {
        if let Ok(h) = self.find(region) {
            self.put(h, slot.encode());
        }
    }

    /// Empties the slot of `region`. The chunk stays, for reuse.
    pub(super) fn remove(&mut self, region: u64) {
        if let Ok(h) = self.find(region) {
            self.put(h, 0);
        }
    }

    /// Every (region, slot) in address order. Allocates only the list of
    /// chunks; fails (out of memory) with nothing changed.
    pub(super) fn sorted(&self) -> Result<impl Iterator<Item = (u64, Slot)> + '_, ()> {
        let mut keys: Vec<(u64, u32)> = Vec::new();
        keys.try_reserve_exact(self.chunks.len()).map_err(|_| ())?;
        keys.extend(
            self.index
                .iter()
                .filter(|e| e.0 != 0 && self.used[e.1 as usize] != 0)
                .map(|&(k, c)| (k - 1, c)),
        );
        keys.sort_unstable();
        Ok(keys.into_iter().flat_map(move |(k, c)| {
            self.chunks[c as usize]
                .iter()
                .enumerate()
                .filter(|(_, v)| **v != 0)
                .map(move |(o, &v)| (k * CHUNK + o as u64, Slot::decode(v)))
        }))
    }

    /// Every (region, slot), in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, Slot)> + '_ {
        self.index
            .iter()
            .filter(|e| e.0 != 0)
            .flat_map(move |&(k, c)| {
                self.chunks[c as usize]
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| **v != 0)
                    .map(move |(o, &v)| ((k - 1) * CHUNK + o as u64, Slot::decode(v)))
            })
    }
}
