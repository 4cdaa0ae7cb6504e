//! Physical address ranges, and sets of disjoint, sorted ones.
//!
//! [`Range`] is a half-open physical range. `Ranges` (feature `arch`) is
//! the free list of a boot-time frame allocator: ranges are added as free
//! memory (`insert`), carved out when reserved (`carve`), and handed out
//! first-fit from the lowest address (`alloc`). Its slots are a
//! fixed array (`RangeSet`, which never allocates: for code that runs
//! before any allocator) or a `Vec` (`RangeVec`, whose size the input
//! decides). An operation that needs a slot the set cannot get fails with
//! `RangeError::Full` and leaves the set unchanged.

use core::fmt;

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Range {
    /// First byte of the range.
    pub start: u64,
    /// One past the last byte of the range.
    pub end: u64,
}

impl Range {
    /// Creates `[start, end)`.
    pub const fn new(start: u64, end: u64) -> Self {
        Self { start, end }
    }

    /// Length of the range in bytes (0 if `end <= start`).
    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range holds no byte.
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether `other` lies within this range (an empty `other` too: its
    /// position must be inside).
    pub const fn covers(&self, other: Range) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// The whole 4 KiB pages that hold the range: start rounded down, end
    /// up (to `u64::MAX` if that would wrap).
    pub const fn pages_around(&self) -> Range {
        let mask = crate::PAGE_SIZE - 1;
        let end = match self.end.checked_add(mask) {
            Some(e) => e & !mask,
            None => u64::MAX,
        };
        Range::new(self.start & !mask, end)
    }

    /// Whether the two ranges share at least one byte (an empty range
    /// shares none, wherever it lies).
    pub const fn overlaps(&self, other: &Range) -> bool {
        !self.is_empty() && !other.is_empty() && self.start < other.end && other.start < self.end
    }
}

/// `[0x1000, 0x2000)`: how errors and logs print a range.
impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start, self.end)
    }
}

/// Errors of the operations of a set of ranges (`Ranges`, feature `arch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// The range is empty or its end is before its start.
    Empty,
    /// The inserted range overlaps a range already in the set (a double free).
    Overlap,
    /// The set has no room for the ranges the operation would need.
    Full,
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RangeError::Empty => "empty or inverted range",
            RangeError::Overlap => "range overlaps one already in the set",
            RangeError::Full => "range set is full",
        })
    }
}

impl core::error::Error for RangeError {}

mod set;
#[cfg(feature = "arch")]
pub use set::{Fixed, RangeSet, RangeVec, Ranges, Slots};
#[cfg(all(test, not(feature = "arch")))]
pub(crate) use set::{RangeSet, RangeVec};

#[cfg(test)]
mod tests;
