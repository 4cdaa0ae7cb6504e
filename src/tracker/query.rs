//! Questions a tracker answers about what it holds: single blocks,
//! single pages, and every preserved range in address order.

use super::*;

impl Tracker {
    /// Whether `[phys, 2^order pages)` is preserved as exactly one block.
    pub fn is_block(&self, phys: u64, order: u32) -> bool {
        if self.check(phys, order).is_err() {
            return false;
        }
        let region = phys >> REGION_SHIFT;
        match self.table.get(region) {
            Some(Slot::Large { head, order: o }) => {
                order >= LARGE_ORDER && head == chunk_offset(region) && o == order
            }
            Some(Slot::Leaf(i)) if order < LARGE_ORDER => {
                self.leaves[i].is_block(Small::at(phys, order))
            }
            Some(Slot::Inline(e)) if order < LARGE_ORDER => e == Small::at(phys, order),
            _ => false,
        }
    }

    /// Whether the page holding `addr` is preserved.
    pub fn is_preserved(&self, addr: u64) -> bool {
        if addr >= 1u64 << PHYS_BITS {
            return false;
        }
        let off = Small::at(addr, 0).off;
        match self.table.get(addr >> REGION_SHIFT) {
            None => false,
            Some(Slot::Large { .. }) => true,
            Some(Slot::Leaf(i)) => self.leaves[i].page(off),
            Some(Slot::Inline(e)) => e.off <= off && off < e.end(),
        }
    }

    /// Whether any preserved page lies in the byte range `r`: a look at
    /// each 2 MiB region `r` spans (or, for a range of more than 8 GiB, at
    /// each chunk that exists), never a walk of everything preserved. What
    /// a kexec asks of each range it would write. Without memory for the
    /// chunk list it answers `true`: kept, so nothing is overwritten.
    pub(crate) fn holds_any(&self, r: Range) -> bool {
        let Some(last) = r.end.checked_sub(1).filter(|_| !r.is_empty()) else {
            return false;
        };
        let (first, last) = (r.start >> PAGE_SHIFT, last >> PAGE_SHIFT);
        let (r0, r1) = (first >> 9, last >> 9);
        // The slot of `region` holds a page of `r`.
        let hit = |region: u64, slot: Slot| {
            let lo = if region == r0 {
                (first & 511) as u32
            } else {
                0
            };
            let hi = if region == r1 {
                (last & 511) as u32 + 1
            } else {
                512
            };
            match slot {
                Slot::Large { .. } => true,
                Slot::Inline(e) => e.off < hi && lo < e.end(),
                Slot::Leaf(i) => !self.leaves[i].all_clear_in(lo, hi),
            }
        };
        if r1 - r0 < 4096 {
            return (r0..=r1).any(|region| self.table.get(region).is_some_and(|s| hit(region, s)));
        }
        let Ok(chunks) = self.sorted_chunks() else {
            return true;
        };
        chunks.iter().any(|&(base, slots)| {
            (base..)
                .zip(slots)
                .filter(|&(region, &v)| v != 0 && (r0..=r1).contains(&region))
                .any(|(region, &v)| hit(region, Slot::decode(v)))
        })
    }

    /// Calls `f(region, slot)` for each region in address order (plain
    /// loops, the chain writer and `ranges` alike).
    pub(super) fn each_region<E: From<TrackerError>>(
        &self,
        f: impl FnMut(u64, Slot) -> Result<(), E>,
    ) -> Result<(), E> {
        self.table
            .for_each_sorted(f)
            .map_err(|e| e.unwrap_or_else(|| TrackerError::OutOfMemory.into()))
    }

    /// The chunks with a region in use, in address order: each chunk's
    /// first region and its 512 encoded slots.
    pub(super) fn sorted_chunks(&self) -> Result<Vec<(u64, &[u32])>, TrackerError> {
        self.table
            .sorted_chunks()
            .map_err(|()| TrackerError::OutOfMemory)
    }

    /// The page map of leaf `i` (from a slot `Leaf(i)`), word by word.
    #[inline(always)]
    pub(super) fn leaf_pages(&self, i: u32) -> [u64; 8] {
        self.leaves[i].pages()
    }

    /// Calls `f(first pfn, pages)` for each run of preserved pages of the
    /// region `r` whose slot is `slot`, in address order. Shared by
    /// [`ranges`](Self::ranges) and the chain writer.
    #[inline]
    pub(super) fn region_runs<E>(
        &self,
        r: u64,
        slot: Slot,
        mut f: impl FnMut(u64, u64) -> Result<(), E>,
    ) -> Result<(), E> {
        let base = r << (REGION_SHIFT - PAGE_SHIFT);
        match slot {
            Slot::Large { .. } => f(base, REGION_PAGES),
            Slot::Inline(s) => f(base + u64::from(s.off), 1 << s.order),
            Slot::Leaf(i) => self.leaves[i]
                .runs()
                .try_for_each(|(s, n)| f(base + u64::from(s), u64::from(n))),
        }
    }

    /// The preserved memory as byte ranges in address order, adjacent
    /// blocks coalesced.
    #[cfg(any(test, feature = "arch"))]
    pub fn ranges(&self) -> Result<Vec<Range>, TrackerError> {
        let mut out: Vec<Range> = Vec::new();
        self.each_region(|r, slot| {
            self.region_runs(r, slot, |pfn, n| {
                let r = Range::new(pfn << PAGE_SHIFT, (pfn + n) << PAGE_SHIFT);
                match out.last_mut() {
                    Some(last) if last.end == r.start => last.end = r.end,
                    _ => {
                        out.try_reserve(1).map_err(|_| TrackerError::OutOfMemory)?;
                        out.push(r);
                    }
                }
                Ok(())
            })
        })?;
        Ok(out)
    }
}
