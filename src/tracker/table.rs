//! The tracker's region table: open addressing with linear probing, keyed by
//! 2 MiB region index, one 16-byte entry (key and packed slot) per region.

use alloc::vec::Vec;

/// What the tracker knows of one region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    /// Up to three small blocks, each `offset | order << 9`, packed.
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
    pub(super) fn inline(entries: &[u16]) -> Slot {
        let mut e = [None; 3];
        for (d, s) in e.iter_mut().zip(entries) {
            *d = Some(*s);
        }
        Slot::inline_from(e)
    }

    pub(super) fn inline_from(e: [Option<u16>; 3]) -> Slot {
        let mut packed = 0u64;
        for (i, x) in e.iter().enumerate() {
            if let Some(v) = x {
                packed |= u64::from(v | VALID) << (16 * i);
            }
        }
        Slot::Inline(packed)
    }

    pub(super) fn unpack(packed: u64) -> [Option<u16>; 3] {
        let mut e = [None; 3];
        for (i, d) in e.iter_mut().enumerate() {
            let v = (packed >> (16 * i)) as u16;
            if v & VALID != 0 {
                *d = Some(v & !VALID);
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

/// Region index -> slot. Key 0 marks an empty entry (keys are stored + 1).
pub(super) struct RegionTable {
    entries: Vec<(u64, u64)>,
    len: usize,
    shift: u32,
}

fn hash(key: u64, shift: u32) -> usize {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> shift) as usize
}

impl RegionTable {
    pub(super) fn new() -> Self {
        Self {
            entries: Vec::new(),
            len: 0,
            shift: 64,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn memory_bytes(&self) -> usize {
        self.entries.capacity() * 16
    }

    #[inline(always)]
    fn find(&self, region: u64) -> Result<usize, usize> {
        let mask = self.entries.len().wrapping_sub(1);
        if self.entries.is_empty() {
            return Err(0);
        }
        let key = region + 1;
        let mut i = hash(key, self.shift) & mask;
        loop {
            let (k, _) = self.entries[i];
            if k == key {
                return Ok(i);
            }
            if k == 0 {
                return Err(i);
            }
            i = (i + 1) & mask;
        }
    }

    #[inline(always)]
    pub(super) fn get(&self, region: u64) -> Option<Slot> {
        self.find(region)
            .ok()
            .map(|i| Slot::decode(self.entries[i].1))
    }

    /// Makes room for `n` more entries, growing (and rehashing) if the load
    /// would pass one half. On failure nothing changes.
    pub(super) fn reserve(&mut self, n: usize) -> Result<(), ()> {
        let need = self.len.checked_add(n).ok_or(())?;
        if need * 2 <= self.entries.len() {
            return Ok(());
        }
        let cap = (need * 2).next_power_of_two().max(16);
        let mut new: Vec<(u64, u64)> = Vec::new();
        new.try_reserve_exact(cap).map_err(|_| ())?;
        new.resize(cap, (0, 0));
        let shift = 64 - cap.trailing_zeros();
        let mask = cap - 1;
        for &(k, v) in self.entries.iter().filter(|e| e.0 != 0) {
            let mut i = hash(k, shift) & mask;
            while new[i].0 != 0 {
                i = (i + 1) & mask;
            }
            new[i] = (k, v);
        }
        self.entries = new;
        self.shift = shift;
        Ok(())
    }

    /// Inserts a new region; room must have been reserved.
    pub(super) fn insert(&mut self, region: u64, slot: Slot) {
        match self.find(region) {
            Ok(i) => self.entries[i].1 = slot.encode(),
            Err(i) => {
                debug_assert!(self.len * 2 < self.entries.len());
                self.entries[i] = (region + 1, slot.encode());
                self.len += 1;
            }
        }
    }

    /// Replaces the slot of a region that is present.
    pub(super) fn set(&mut self, region: u64, slot: Slot) {
        if let Ok(i) = self.find(region) {
            self.entries[i].1 = slot.encode();
        }
    }

    /// Removes a region (backward-shift deletion: no tombstones).
    pub(super) fn remove(&mut self, region: u64) {
        let Ok(mut hole) = self.find(region) else {
            return;
        };
        let mask = self.entries.len() - 1;
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let (k, v) = self.entries[j];
            if k == 0 {
                break;
            }
            let home = hash(k, self.shift) & mask;
            // Move entry j into the hole if its home is not in (hole, j].
            let between = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !between {
                self.entries[hole] = (k, v);
                hole = j;
            }
        }
        self.entries[hole] = (0, 0);
        self.len -= 1;
    }

    /// Every (region, slot), in table order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, Slot)> + '_ {
        self.entries
            .iter()
            .filter(|e| e.0 != 0)
            .map(|&(k, v)| (k - 1, Slot::decode(v)))
    }
}
