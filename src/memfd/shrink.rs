//! Making a file smaller: [`Memfd::truncate`] and [`Memfd::punch`], and
//! the folios they free.

use super::{Extent, MAX_SIZE, Memfd, MemfdError, Seals, seal};
use crate::PAGE_SIZE;
use crate::platform::{FrameAlloc, PhysMem};
use alloc::vec::Vec;

impl Memfd {
    /// Frees every folio that lies wholly inside pages `[a, b)`, splitting
    /// extents as needed.
    fn remove_inside<P: FrameAlloc>(
        &mut self,
        p: &mut P,
        a: u64,
        b: u64,
    ) -> Result<(), MemfdError> {
        if a >= b {
            return Ok(());
        }
        let lo = self.extents.partition_point(|e| e.end() <= a);
        let hi = self.extents.partition_point(|e| e.index < b);
        if lo >= hi {
            return Ok(());
        }
        let mut kept = Vec::new();
        kept.try_reserve(2 * (hi - lo))
            .map_err(|_| MemfdError::OutOfMemory)?;
        let mut freed = Vec::new();
        freed
            .try_reserve(hi - lo)
            .map_err(|_| MemfdError::OutOfMemory)?;
        for e in &self.extents[lo..hi] {
            let n = 1u64 << e.order;
            let count = u64::from(e.count);
            let j0 = a.saturating_sub(e.index).div_ceil(n).min(count);
            let j1 = (b.saturating_sub(e.index) / n).min(count);
            if j0 >= j1 {
                kept.push(*e);
                continue;
            }
            if j0 > 0 {
                kept.push(Extent {
                    count: j0 as u32,
                    ..*e
                });
            }
            freed.push(Extent {
                index: e.index + j0 * n,
                phys: e.phys + j0 * n * PAGE_SIZE,
                order: e.order,
                count: (j1 - j0) as u32,
            });
            if j1 < count {
                kept.push(Extent {
                    index: e.index + j1 * n,
                    phys: e.phys + j1 * n * PAGE_SIZE,
                    order: e.order,
                    count: (count - j1) as u32,
                });
            }
        }
        if freed.is_empty() {
            return Ok(());
        }
        if self.preserved {
            return Err(MemfdError::Preserved { preserved: true });
        }
        self.extents.splice(lo..hi, kept);
        for f in &freed {
            for one in f.folios() {
                p.free_frames(one.phys, one.order);
            }
        }
        Ok(())
    }

    /// Zeroes the bytes `[start, end)` that folios hold.
    fn zero<P: PhysMem>(&self, p: &mut P, start: u64, end: u64) {
        let mut at = start;
        while at < end {
            let (phys, run) = self.locate(at);
            let len = run.min(end - at);
            if let Some(ph) = phys {
                let mut done = 0;
                while done < len {
                    let a = ph + done;
                    let off = (a % PAGE_SIZE) as usize;
                    let n = ((PAGE_SIZE as usize - off) as u64).min(len - done);
                    if let Some(f) = p.frame_mut(a - off as u64) {
                        f[off..off + n as usize].fill(0);
                    }
                    done += n;
                }
            }
            at += len;
        }
    }

    /// Sets the size. Shrinking frees every folio wholly past the new size
    /// and zeroes the rest of a folio the new end falls in; growing adds a
    /// hole.
    pub fn truncate<P: PhysMem + FrameAlloc>(
        &mut self,
        p: &mut P,
        size: u64,
    ) -> Result<(), MemfdError> {
        if size > MAX_SIZE {
            return Err(MemfdError::TooLarge);
        }
        if size < self.size && self.seals.contains(Seals::SHRINK) {
            return Err(MemfdError::Sealed {
                op: "shrink",
                seal: seal::SHRINK,
            });
        }
        if size > self.size && self.seals.contains(Seals::GROW) {
            return Err(MemfdError::Sealed {
                op: "grow",
                seal: seal::GROW,
            });
        }
        if size < self.size {
            if self.preserved {
                return Err(MemfdError::Preserved { preserved: true });
            }
            self.remove_inside(p, size.div_ceil(PAGE_SIZE), u64::MAX / PAGE_SIZE)?;
            let tail = match self.find(size / PAGE_SIZE) {
                Ok(j) => self.extents[j].end() * PAGE_SIZE,
                Err(_) => size,
            };
            self.zero(p, size, tail);
        }
        self.size = size;
        Ok(())
    }

    /// Punches a hole: frees every folio wholly inside `[offset, offset +
    /// len)` and zeroes the rest of the range. The size is unchanged.
    pub fn punch<P: PhysMem + FrameAlloc>(
        &mut self,
        p: &mut P,
        offset: u64,
        len: u64,
    ) -> Result<(), MemfdError> {
        self.check_write("punch")?;
        let end = offset
            .checked_add(len)
            .ok_or(MemfdError::TooLarge)?
            .min(self.size);
        if offset >= end {
            return Ok(());
        }
        self.remove_inside(p, offset.div_ceil(PAGE_SIZE), end / PAGE_SIZE)?;
        self.zero(p, offset, end);
        Ok(())
    }
}
