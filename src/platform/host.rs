//! [`HostMem`]: physical memory faked with heap pages, for tests, fuzz
//! targets and benchmarks on the host.
//!
//! Frames of the pool are found like a kernel's direct map finds them: by
//! index and offset, in one load (a table per 2 MiB holds its 512 frames
//! inline), not by a tree search; frames elsewhere in RAM (placed by hand
//! by a test) fall back to a sorted map. A table is made, zeroed, on the
//! first write to any of its frames; unwritten RAM reads as zeros, and a
//! freed frame reads as zeros again.

use super::{Frame, FrameAlloc, Lent, MapError, MapFrames, Mapping, PhysMem};
use crate::PAGE_SIZE;
use crate::ranges::{Range, RangeSet};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// Free ranges a [`HostMem`] pool keeps apart.
pub const POOL_RANGES: usize = 1024;

static ZERO: Frame = [0; PAGE_SIZE as usize];

/// Frames a table of the index covers (2 MiB).
const TABLE_FRAMES: usize = 512;
/// Bytes a table of the index covers.
const TABLE_BYTES: u64 = TABLE_FRAMES as u64 * PAGE_SIZE;
/// The most pool the index covers (64 GiB: 32768 tables); frames of a
/// larger pool beyond it go to the sorted map.
const MAX_WINDOW: u64 = 64 << 30;

/// The direct index over the pool: it covers `[lo, lo + len)` exactly, and
/// `tables[t]` holds the 512 frames from `base + t * 2 MiB` inline (`base`
/// is `lo` rounded down to 2 MiB), `written[t]` which of them were written
/// since they were last zeroed.
#[derive(Clone, Default)]
struct Index {
    lo: u64,
    len: u64,
    base: u64,
    tables: Vec<Option<Box<[Frame]>>>,
    written: Vec<[u64; TABLE_FRAMES / 64]>,
}

impl Index {
    /// An index over `window` (page-aligned).
    fn over(window: Range) -> Self {
        // The tables are made as frames are written: a large window costs
        // nothing until it is used.
        Self {
            lo: window.start,
            len: window.len(),
            base: window.start & !(TABLE_BYTES - 1),
            tables: Vec::new(),
            written: Vec::new(),
        }
    }

    /// The table and frame of `phys`, if the index covers it.
    #[inline(always)]
    fn at(&self, phys: u64) -> Option<(usize, usize)> {
        if phys.wrapping_sub(self.lo) >= self.len || !phys.is_multiple_of(PAGE_SIZE) {
            return None;
        }
        let off = phys - self.base;
        Some((
            (off / TABLE_BYTES) as usize,
            ((off / PAGE_SIZE) as usize) % TABLE_FRAMES,
        ))
    }

    /// Frame `i` of table `t` (zeros if its table was never made).
    #[inline(always)]
    fn frame(&self, t: usize, i: usize) -> &Frame {
        match self.tables.get(t) {
            Some(Some(table)) => table.get(i).unwrap_or(&ZERO),
            _ => &ZERO,
        }
    }

    /// Frame `i` of table `t` for writing (the table made if need be).
    #[inline]
    fn frame_mut(&mut self, t: usize, i: usize) -> Option<&mut Frame> {
        if t >= self.tables.len() {
            self.tables.resize_with(t + 1, || None);
            self.written.resize(t + 1, [0; TABLE_FRAMES / 64]);
        }
        let w = self.written.get_mut(t)?.get_mut(i / 64)?;
        *w |= 1 << (i % 64);
        let table = self.tables.get_mut(t)?;
        // Zeroed by the allocator (`vec!` of zeros asks for zeroed memory,
        // which the host gives lazily), not written here.
        let table =
            table.get_or_insert_with(|| alloc::vec![[0; PAGE_SIZE as usize]; TABLE_FRAMES].into());
        table.get_mut(i)
    }

    /// Zeroes frame `i` of table `t` if it was written.
    fn clear(&mut self, t: usize, i: usize) {
        let Some(w) = self.written.get_mut(t).and_then(|w| w.get_mut(i / 64)) else {
            return;
        };
        if *w & (1 << (i % 64)) == 0 {
            return;
        }
        *w &= !(1 << (i % 64));
        if let Some(f) = self
            .tables
            .get_mut(t)
            .and_then(|x| x.as_mut())
            .and_then(|x| x.get_mut(i))
        {
            f.fill(0);
        }
    }

    /// Every written frame, in address order.
    fn written(&self) -> impl Iterator<Item = u64> + '_ {
        self.written.iter().enumerate().flat_map(move |(t, w)| {
            (0..TABLE_FRAMES)
                .filter(move |&i| w[i / 64] >> (i % 64) & 1 != 0)
                .map(move |i| self.base + t as u64 * TABLE_BYTES + i as u64 * PAGE_SIZE)
        })
    }
}

/// Fake physical memory: RAM ranges, frames materialized on first write
/// (unwritten RAM reads as zeros), a first-fit frame pool, and a direct
/// index over the pool.
#[derive(Clone)]
pub struct HostMem {
    index: Index,
    /// Frames outside the index.
    sparse: BTreeMap<u64, Box<Frame>>,
    ram: Vec<Range>,
    pool: Box<RangeSet<POOL_RANGES>>,
    /// Frames handed out by `alloc_frames` and not freed.
    pub allocated: u64,
    /// Calls to `free_frames` so far.
    pub free_calls: u64,
    /// Every range `add_free` was given, in order.
    pub added: Vec<Range>,
    /// Live mappings: their frames, a contiguous copy (see `MapFrames`),
    /// and whether the copy may have been written.
    maps: BTreeMap<u64, (Vec<u64>, Vec<u8>, bool)>,
    next_virt: u64,
    /// Whether this fake lends frames ([`HostMem::lend_frames`]).
    lending: bool,
    /// Frames lent and not taken back, by address.
    lent: alloc::collections::BTreeSet<u64>,
    /// Pages for lending: a lent frame's bytes live in one of these (made
    /// once, kept for good) until it is taken back and copied to its
    /// address.
    spare: Spare,
}

/// A frame aligned as a kernel's is, so that a holder may view it as
/// words.
#[repr(C, align(4096))]
struct AlignedFrame(Frame);

/// The host's pages for lent frames: `'static` (leaked once, then reused,
/// so their number is the most ever lent at once), and not copied with a
/// [`HostMem`] (a clone starts with none, and lends none of the
/// original's).
#[derive(Default)]
struct Spare(Vec<&'static mut Frame>);

impl Clone for Spare {
    fn clone(&self) -> Self {
        Spare(Vec::new())
    }
}

impl HostMem {
    /// RAM `ram`; frames are allocated from `pool` (inside RAM).
    pub fn new(ram: &[Range], pool: Range) -> Self {
        let mut p = Box::new(RangeSet::new());
        let _ = p.insert(pool);
        // The index covers the pool (its first 64 GiB) when the pool lies
        // in one RAM range, so that every slot it has is RAM.
        let window = Range::new(
            pool.start,
            pool.end.min(pool.start.saturating_add(MAX_WINDOW)),
        );
        let index = if ram.iter().any(|r| r.covers(window.pages_around())) && !window.is_empty() {
            Index::over(window.pages_around())
        } else {
            Index::default()
        };
        Self {
            index,
            sparse: BTreeMap::new(),
            ram: ram.to_vec(),
            pool: p,
            allocated: 0,
            free_calls: 0,
            added: Vec::new(),
            maps: BTreeMap::new(),
            next_virt: 1 << 47,
            lending: false,
            lent: alloc::collections::BTreeSet::new(),
            spare: Spare::default(),
        }
    }

    /// One RAM range that is also the pool.
    pub fn with_pool(pool: Range) -> Self {
        Self::new(&[pool], pool)
    }

    /// Makes this fake lend frames ([`FrameAlloc::lend`]); it lends none
    /// until then. A holder keeps what it writes in a lent frame apart
    /// until the frame is taken back, so a test that lends hands the
    /// holder's frames back before the next kernel reads them (what a
    /// kernel never has to do: its lent frames are the frames).
    pub fn lend_frames(&mut self) {
        self.lending = true;
    }

    /// The RAM ranges.
    pub fn ram(&self) -> &[Range] {
        &self.ram
    }

    /// Never allocate in `r` (e.g. preserved memory a test made by hand).
    pub fn avoid(&mut self, r: Range) {
        let _ = self.pool.carve(r.pages_around());
    }

    /// Bytes still free in the pool.
    pub fn free_bytes(&self) -> u64 {
        self.pool.total()
    }

    /// Frames that were written (and not freed since), in address order.
    pub fn written_frames(&self) -> impl Iterator<Item = u64> + '_ {
        let (lo, hi) = (self.index.lo, self.index.lo + self.index.len);
        self.sparse
            .range(..lo)
            .map(|(&a, _)| a)
            .chain(self.index.written())
            .chain(self.sparse.range(hi.max(lo)..).map(|(&a, _)| a))
    }

    /// Moves the frame at `from` to `to` (a corruption in tests: the
    /// previous kernel's pointer now names other memory): `to` gets its
    /// bytes, `from` reads as zeros.
    pub fn move_frame(&mut self, from: u64, to: u64) {
        let Some(bytes) = self.frame(from).map(|f| Box::new(*f)) else {
            return;
        };
        self.clear(from);
        if let Some(f) = self.frame_mut(to) {
            f.copy_from_slice(&bytes[..]);
        }
    }

    /// Makes the frame at `phys` read as zeros again.
    fn clear(&mut self, phys: u64) {
        match self.index.at(phys) {
            Some((t, i)) => self.index.clear(t, i),
            None => {
                self.sparse.remove(&phys);
            }
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
    #[inline(always)]
    fn frame(&self, phys: u64) -> Option<&Frame> {
        if let Some((t, i)) = self.index.at(phys) {
            // Every frame of the index is RAM.
            return Some(self.index.frame(t, i));
        }
        match self.sparse.get(&phys) {
            Some(f) => Some(f),
            None => self.in_ram(phys).then_some(&ZERO),
        }
    }

    #[inline]
    fn frame_mut(&mut self, phys: u64) -> Option<&mut Frame> {
        if let Some((t, i)) = self.index.at(phys) {
            return self.index.frame_mut(t, i);
        }
        if !self.sparse.contains_key(&phys) && !self.in_ram(phys) {
            return None;
        }
        Some(
            self.sparse
                .entry(phys)
                .or_insert_with(|| Box::new([0; PAGE_SIZE as usize])),
        )
    }
}

/// The host cannot alias scattered heap pages at one address: a mapping is
/// a contiguous copy of its frames, written back to them at `unmap`. While a
/// mapping lives, use its bytes, not the frames.
impl MapFrames for HostMem {
    fn map(&mut self, frames: &[u64]) -> Result<Mapping, MapError> {
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(frames.len() * PAGE_SIZE as usize)
            .map_err(|_| MapError::NoSpace)?;
        for &f in frames {
            let frame = self.frame(f).ok_or(MapError::BadFrame { phys: f })?;
            bytes.extend_from_slice(frame);
        }
        let virt = self.next_virt;
        self.next_virt += (frames.len() as u64 + 1) * PAGE_SIZE;
        let len = bytes.len();
        self.maps.insert(virt, (frames.to_vec(), bytes, false));
        Ok(Mapping { virt, len })
    }

    fn bytes(&self, m: &Mapping) -> &[u8] {
        self.maps.get(&m.virt).map_or(&[], |(_, b, _)| b.as_slice())
    }

    fn bytes_mut(&mut self, m: &Mapping) -> &mut [u8] {
        match self.maps.get_mut(&m.virt) {
            Some((_, b, dirty)) => {
                *dirty = true;
                b.as_mut_slice()
            }
            None => &mut [],
        }
    }

    fn unmap(&mut self, m: Mapping) {
        self.flush(&m);
        self.maps.remove(&m.virt);
    }

    fn flush(&mut self, m: &Mapping) {
        // Only a copy that may have been written goes back: writing back a
        // read-only mapping would cost the host a copy a kernel never makes.
        let Some((frames, bytes, dirty)) = self.maps.get_mut(&m.virt) else {
            return;
        };
        if !core::mem::replace(dirty, false) {
            return;
        }
        let (frames, bytes) = (core::mem::take(frames), core::mem::take(bytes));
        for (f, chunk) in frames.iter().zip(bytes.chunks(PAGE_SIZE as usize)) {
            if let Some(dst) = self.frame_mut(*f) {
                dst.copy_from_slice(chunk);
            }
        }
        if let Some(e) = self.maps.get_mut(&m.virt) {
            (e.0, e.1) = (frames, bytes);
        }
    }
}

/// A lent frame's bytes are a separate page; its address is a pool frame
/// allocated for it, which reads as it was until the frame is taken back.
impl FrameAlloc for HostMem {
    fn alloc_frames(&mut self, order: u32) -> Option<u64> {
        let size = PAGE_SIZE.checked_shl(order)?;
        let p = self.pool.alloc(size, size)?;
        self.allocated += 1 << order;
        Some(p)
    }

    fn free_frames(&mut self, phys: u64, order: u32) {
        self.free_calls += 1;
        let size = PAGE_SIZE << order;
        if self.pool.insert(Range::new(phys, phys + size)).is_ok() {
            // A restored folio that a test placed by hand was never
            // counted: count what can be counted.
            self.allocated = self.allocated.saturating_sub(1 << order);
            for i in 0..1u64 << order {
                self.clear(phys + i * PAGE_SIZE);
            }
        }
    }

    fn add_free(&mut self, range: Range) {
        // New free memory, never counted as allocated here.
        self.added.push(range);
        let _ = self.pool.insert(range);
        let mut at = range.start;
        while at < range.end {
            self.clear(at);
            at += PAGE_SIZE;
        }
    }

    fn lend(&mut self) -> Option<Lent> {
        if !self.lending {
            return None;
        }
        let phys = self.alloc_frames(0)?;
        let frame = match self.spare.0.pop() {
            Some(f) => {
                f.fill(0);
                f
            }
            None => &mut Box::leak(Box::new(AlignedFrame([0; PAGE_SIZE as usize]))).0,
        };
        self.lent.insert(phys);
        Some(Lent::new(phys, frame))
    }

    fn take_back(&mut self, frame: Lent) {
        let (phys, bytes) = frame.into_parts();
        if self.lent.remove(&phys)
            && let Some(dst) = self.frame_mut(phys)
        {
            dst.copy_from_slice(bytes);
        }
        self.spare.0.push(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{MapError, MapFrames};

    #[test]
    fn a_lent_frame_reaches_its_address_when_taken_back() {
        let mut m = HostMem::with_pool(Range::new(0x10_000, 0x14_000));
        assert!(m.lend().is_none(), "lends only when asked to");
        m.lend_frames();
        let mut a = m.lend().unwrap();
        let b = m.lend().unwrap();
        assert_ne!(a.phys(), b.phys());
        assert_eq!(m.allocated, 2);
        a.frame_mut()[..4].copy_from_slice(b"kho!");
        // Not at its address while lent; there, with its bytes, after.
        let at = a.phys();
        assert_eq!(&m.frame(at).unwrap()[..4], &[0; 4]);
        m.take_back(a);
        assert_eq!(&m.frame(at).unwrap()[..4], b"kho!");
        // Still allocated: freed like any frame, it reads as zeros again.
        assert_eq!(m.allocated, 2);
        m.free_frames(at, 0);
        assert_eq!(&m.frame(at).unwrap()[..4], &[0; 4]);
        // A page taken back is lent again, zeroed; one this fake did not
        // lend changes nothing.
        let c = m.lend().unwrap();
        assert!(c.frame().iter().all(|&x| x == 0));
        let foreign = Lent::new(b.phys(), Box::leak(Box::new([7; PAGE_SIZE as usize])));
        let mut other = HostMem::with_pool(Range::new(0x10_000, 0x14_000));
        other.take_back(foreign);
        assert_eq!(other.frame(b.phys()).unwrap()[0], 0);
        // Lending stops, with `None`, when the pool is empty.
        while m.lend().is_some() {}
        assert_eq!(m.free_bytes(), 0);
    }

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

    #[test]
    fn scattered_frames_map_in_order_and_writes_reach_them() {
        let mut m = HostMem::with_pool(Range::new(0x10_000, 0x20_000));
        for (i, f) in [0x13_000u64, 0x11_000, 0x1f_000].iter().enumerate() {
            m.frame_mut(*f).unwrap().fill(i as u8 + 1);
        }
        let map = m.map(&[0x13_000, 0x11_000, 0x1f_000]).unwrap();
        assert_eq!(map.len, 3 * 4096);
        let b = m.bytes(&map);
        assert_eq!((b[0], b[4096], b[8191], b[8192]), (1, 2, 2, 3));
        m.bytes_mut(&map)[4096] = 9;
        m.unmap(map);
        assert_eq!(m.frame(0x11_000).unwrap()[0], 9);
        assert_eq!(
            m.map(&[0x50_000]),
            Err(MapError::BadFrame { phys: 0x50_000 })
        );
    }
}
