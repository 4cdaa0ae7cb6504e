//! Byte ranges as blocks: a page-aligned range split into maximal aligned
//! blocks, and preserved or unpreserved all at once.

use super::{MAX_ORDER, PAGE_SHIFT, Tracker, TrackerError};

impl Tracker {
    /// Preserves the page-aligned byte range `[start, end)` as maximal
    /// aligned blocks (see `range_blocks`, public with the feature `tools`). All or nothing: on error,
    /// blocks preserved by this call are undone.
    pub fn preserve_range(&mut self, start: u64, end: u64) -> Result<(), TrackerError> {
        for (p, order) in range_blocks(start, end)? {
            if let Err(e) = self.preserve(p, order) {
                // Undo what this call did; unpreserve never allocates and
                // these blocks were just preserved, so it cannot fail.
                for (q, o) in range_blocks(start, end)?.take_while(|&(q, _)| q < p) {
                    let _ = self.unpreserve(q, o);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Unpreserves a range preserved by [`preserve_range`](Self::preserve_range)
    /// with the same bounds. All or nothing: every block is checked first.
    pub fn unpreserve_range(&mut self, start: u64, end: u64) -> Result<(), TrackerError> {
        if let Some((phys, order)) = range_blocks(start, end)?.find(|&(p, o)| !self.is_block(p, o))
        {
            return Err(TrackerError::NotPreserved { phys, order });
        }
        for (p, o) in range_blocks(start, end)? {
            self.unpreserve(p, o)?;
        }
        Ok(())
    }
}

/// The maximal aligned blocks `(phys, order)` that make up the page-aligned
/// byte range `[start, end)`, in address order: each of order
/// `min(alignment of its start, size left, MAX_ORDER)`.
pub fn range_blocks(
    start: u64,
    end: u64,
) -> Result<impl Iterator<Item = (u64, u32)>, TrackerError> {
    let page = 1u64 << PAGE_SHIFT;
    if end <= start || !start.is_multiple_of(page) || !end.is_multiple_of(page) {
        return Err(TrackerError::BadRange { start, end });
    }
    let mut p = start;
    Ok(core::iter::from_fn(move || {
        (p < end).then(|| {
            let o = block_order(p, end);
            let block = (p, o);
            p += 1 << (o + PAGE_SHIFT);
            block
        })
    }))
}

/// Order of the largest aligned block at page-aligned `p` that fits before
/// `end`.
pub(crate) fn block_order(p: u64, end: u64) -> u32 {
    let align = (p >> PAGE_SHIFT).trailing_zeros();
    let fit = 63 - ((end - p) >> PAGE_SHIFT).leading_zeros();
    align.min(fit).min(MAX_ORDER)
}
