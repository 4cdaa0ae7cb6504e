//! Where a kexec takes the pages it builds: [`StageFrames`], this crate's
//! allocator as one ([`KernelFrames`]), and the pages one kexec took.

use super::{KexecError, LOW};
use crate::frames;
use alloc::vec::Vec;
use kho::PAGE_SIZE;
use kho::ranges::Range;

/// Where a kexec takes the pages it builds (the trampoline, its tables,
/// the boot structures, staged pages and the entry list), and gives them
/// back if it is refused. [`KernelFrames`] is this crate's frame
/// allocator; a kernel with an allocator of its own implements this.
pub trait StageFrames {
    /// `count` contiguous free pages ending below 4 GiB, none inside
    /// `avoid` (the trampoline ends in 32-bit code, and PVH passes the
    /// start info in a 32-bit register). Memory the next kernel may reuse
    /// once it runs: neither preserved nor kept.
    fn low(&mut self, count: u64, avoid: &[Range]) -> Option<u64>;
    /// `pages` free pages in runs of any size, none inside `avoid`,
    /// appended to `out`; returns how many it could not find (what it took
    /// stays in `out`, to be given back).
    fn scattered(&mut self, pages: u64, avoid: &[Range], out: &mut Vec<Range>) -> u64;
    /// Gives back `count` pages at `phys`, taken by any method here.
    fn give_back(&mut self, phys: u64, count: u64);
    /// `count` contiguous free pages ending below 4 GiB for the handoff
    /// blob ([`crate::handover::hand_over`]), which the kexec keeps and
    /// the next kernel reserves. By default [`StageFrames::low`].
    fn blob(&mut self, count: u64) -> Option<u64> {
        self.low(count, &[])
    }
}

/// This crate's frame allocator ([`frames`]) as the stager's: low pages
/// from scratch, scattered ones from anywhere free, the blob's from the
/// general pool below 4 GiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelFrames;

impl StageFrames for KernelFrames {
    fn low(&mut self, count: u64, avoid: &[Range]) -> Option<u64> {
        let p = frames::alloc_scratch_avoiding(count, avoid)?;
        if p.checked_add(count.checked_mul(PAGE_SIZE)?)? <= LOW {
            Some(p)
        } else {
            let _ = frames::free(p, count);
            None
        }
    }

    fn scattered(&mut self, pages: u64, avoid: &[Range], out: &mut Vec<Range>) -> u64 {
        frames::take_scattered(pages, avoid, out)
    }

    fn give_back(&mut self, phys: u64, count: u64) {
        let _ = frames::free(phys, count);
    }

    /// From the general pool, not scratch.
    fn blob(&mut self, count: u64) -> Option<u64> {
        frames::alloc_below(count, LOW)
    }
}

/// Pages taken for one kexec, given back if it is refused.
pub(super) struct Taken<'f> {
    pub(super) runs: Vec<Range>,
    pub(super) frames: &'f mut dyn StageFrames,
}

impl Taken<'_> {
    pub(super) fn free(&mut self) {
        for r in &self.runs {
            self.frames.give_back(r.start, r.len() / PAGE_SIZE);
        }
        self.runs.clear();
    }

    /// Takes `pages` free pages anywhere outside `avoid`, scattered, and
    /// returns their addresses.
    pub(super) fn scattered(
        &mut self,
        pages: u64,
        avoid: &[Range],
    ) -> Result<Vec<u64>, KexecError> {
        let first = self.runs.len();
        let short = self.frames.scattered(pages, avoid, &mut self.runs);
        if short > 0 {
            return Err(KexecError::NoMemory {
                bytes: pages * PAGE_SIZE,
                free: (pages - short) * PAGE_SIZE,
            });
        }
        Ok(self.runs[first..]
            .iter()
            .flat_map(|r| (r.start..r.end).step_by(PAGE_SIZE as usize))
            .collect())
    }

    /// Takes `count` contiguous pages below 4 GiB outside `avoid`.
    pub(super) fn low(&mut self, count: u64, avoid: &[Range]) -> Result<u64, KexecError> {
        let bytes = count * PAGE_SIZE;
        let p = self
            .frames
            .low(count, avoid)
            .ok_or(KexecError::NoScratch { bytes })?;
        self.runs.push(Range::new(p, p + bytes));
        Ok(p)
    }
}
