//! [`HostMem`]: physical memory faked with heap pages, for tests, fuzz
//! targets and benchmarks on the host.

use super::{Frame, FrameAlloc, PhysMem};
use crate::PAGE_SIZE;
use crate::ranges::{Range, RangeSet};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// Free ranges a [`HostMem`] pool keeps apart.
pub const POOL_RANGES: usize = 1024;

static ZERO: Frame = [0; PAGE_SIZE as usize];

/// Sparse fake physical memory: RAM ranges, frames materialized on first
/// write (unwritten RAM reads as zeros), and a first-fit frame pool.
#[derive(Clone)]
pub struct HostMem {
    frames: BTreeMap<u64, Box<Frame>>,
    ram: Vec<Range>,
    pool: Box<RangeSet<POOL_RANGES>>,
    /// Frames handed out by `alloc_frames` and not freed.
    pub allocated: u64,
}

impl HostMem {
    /// RAM `ram`; frames are allocated from `pool` (inside RAM).
    pub fn new(ram: &[Range], pool: Range) -> Self {
        let mut p = Box::new(RangeSet::new());
        let _ = p.insert(pool);
        Self {
            frames: BTreeMap::new(),
            ram: ram.to_vec(),
            pool: p,
            allocated: 0,
        }
    }

    /// One RAM range that is also the pool.
    pub fn with_pool(pool: Range) -> Self {
        Self::new(&[pool], pool)
    }

    /// The RAM ranges.
    pub fn ram(&self) -> &[Range] {
        &self.ram
    }

    /// Never allocate in `r` (e.g. preserved memory a test made by hand).
    pub fn avoid(&mut self, r: Range) {
        let r = Range::new(
            r.start & !(PAGE_SIZE - 1),
            r.end.next_multiple_of(PAGE_SIZE),
        );
        let _ = self.pool.carve(r);
    }

    /// Bytes still free in the pool.
    pub fn free_bytes(&self) -> u64 {
        self.pool.total()
    }

    /// Frames that were written at least once.
    pub fn written_frames(&self) -> impl Iterator<Item = u64> + '_ {
        self.frames.keys().copied()
    }

    /// Moves the frame at `from` to `to` (a corruption in tests: the
    /// previous kernel's pointer now names other memory).
    pub fn move_frame(&mut self, from: u64, to: u64) {
        if let Some(f) = self.frames.remove(&from) {
            self.frames.insert(to, f);
        }
    }

    fn in_ram(&self, phys: u64) -> bool {
        phys.is_multiple_of(PAGE_SIZE)
            && phys
                .checked_add(PAGE_SIZE)
                .is_some_and(|end| self.ram.iter().any(|r| r.covers(Range::new(phys, end))))
    }
}

impl PhysMem for HostMem {
    fn frame(&self, phys: u64) -> Option<&Frame> {
        match self.frames.get(&phys) {
            Some(f) => Some(f),
            None => self.in_ram(phys).then_some(&ZERO),
        }
    }

    fn frame_mut(&mut self, phys: u64) -> Option<&mut Frame> {
        if !self.frames.contains_key(&phys) && !self.in_ram(phys) {
            return None;
        }
        Some(self.frames.entry(phys).or_insert_with(|| Box::new(ZERO)))
    }
}

impl FrameAlloc for HostMem {
    fn alloc_frames(&mut self, order: u32) -> Option<u64> {
        let size = PAGE_SIZE.checked_shl(order)?;
        let p = self.pool.alloc(size, size)?;
        self.allocated += 1 << order;
        Some(p)
    }

    fn free_frames(&mut self, phys: u64, order: u32) {
        let size = PAGE_SIZE << order;
        if self.pool.insert(Range::new(phys, phys + size)).is_ok() {
            self.allocated -= 1 << order;
            for i in 0..1u64 << order {
                self.frames.remove(&(phys + i * PAGE_SIZE));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_cross_frames_and_stop_at_the_edge_of_ram() {
        let mut m = HostMem::with_pool(Range::new(0x10_000, 0x14_000));
        let data: Vec<u8> = (0..9000u32).map(|i| (i * 7) as u8).collect();
        assert!(m.write_bytes(0x10_ff0, &data));
        let mut back = alloc::vec![0u8; 9000];
        assert!(m.read_bytes(0x10_ff0, &mut back));
        assert_eq!(back, data);
        // Unwritten RAM reads as zeros; a span past RAM fails.
        let mut z = [1u8; 16];
        assert!(m.read_bytes(0x13_800, &mut z) && z == [0; 16]);
        assert!(!m.read_bytes(0x13_ff8, &mut z));
        assert!(!m.write_bytes(0x13_ff8, &[1; 16]));
        // Frames come from the pool, aligned to their size, and go back.
        let a = m.alloc_frames(1).unwrap();
        assert_eq!(a % 0x2000, 0);
        assert_eq!(m.allocated, 2);
        m.free_frames(a, 1);
        assert_eq!(m.allocated, 0);
    }
}
