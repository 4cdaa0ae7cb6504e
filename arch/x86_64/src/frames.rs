//! The physical frame allocator: free RAM as a [`RangeSet`], first fit.

use kho::PAGE_SIZE;
use kho::ranges::{Range, RangeError, RangeSet};
use spin::Mutex;

/// Most disjoint free ranges tracked.
pub const MAX_FREE_RANGES: usize = 512;

static FREE: Mutex<RangeSet<MAX_FREE_RANGES>> = Mutex::new(RangeSet::new());

/// Adds `r` (page aligned inward) to the free memory.
pub fn add_free(r: Range) -> Result<(), RangeError> {
    let start = r.start.next_multiple_of(PAGE_SIZE);
    let end = r.end & !(PAGE_SIZE - 1);
    if end <= start {
        return Ok(());
    }
    FREE.lock().insert(Range::new(start, end))
}

/// Removes `r` (page aligned outward) from the free memory, so that it is
/// never handed out.
pub fn reserve(r: Range) -> Result<(), RangeError> {
    let start = r.start & !(PAGE_SIZE - 1);
    let end = r.end.next_multiple_of(PAGE_SIZE);
    FREE.lock().carve(Range::new(start, end))
}

/// Allocates `count` contiguous frames aligned to `align` bytes; returns the
/// physical address of the first. The frames are not zeroed.
pub fn alloc(count: u64, align: u64) -> Option<u64> {
    FREE.lock()
        .alloc(count.checked_mul(PAGE_SIZE)?, align.max(PAGE_SIZE))
}

/// Like [`alloc`], but only below physical address `limit`.
pub fn alloc_below(count: u64, limit: u64) -> Option<u64> {
    FREE.lock().alloc_in(
        count.checked_mul(PAGE_SIZE)?,
        PAGE_SIZE,
        Range::new(0, limit),
    )
}

/// Returns `count` frames starting at `phys` to the allocator. Freeing a
/// frame that is already free is refused with [`RangeError::Overlap`].
pub fn free(phys: u64, count: u64) -> Result<(), RangeError> {
    let end = count
        .checked_mul(PAGE_SIZE)
        .and_then(|l| phys.checked_add(l))
        .ok_or(RangeError::Empty)?;
    FREE.lock().insert(Range::new(phys, end))
}

/// Bytes currently free.
pub fn free_bytes() -> u64 {
    FREE.lock().total()
}

/// Calls `f` on every free range, in address order.
pub fn for_each_free(mut f: impl FnMut(Range)) {
    for r in FREE.lock().iter() {
        f(r);
    }
}
