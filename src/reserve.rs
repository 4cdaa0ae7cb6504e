//! Reservations made by the next kernel while it reads a handoff, as one
//! transaction: all of them stand, or none.
//!
//! Readers of handed-over data (the tracker's chain, the handoff blob) report
//! what the next kernel must keep through a [`Reserve`] while they read. A
//! reader that fails part-way calls [`Reserve::rollback`] before it returns
//! its error, so the caller never acts on a half-reported map: it opens its
//! allocator only after the whole restore returned `Ok`.

use crate::ranges::Range;
use alloc::vec::Vec;
use core::fmt;

/// Why a range is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kept {
    /// Memory the previous kernel preserved: it belongs to a subsystem.
    Preserved,
    /// Metadata of the handoff itself (tracker chain pages, the blob): it is
    /// needed while restoring and may be freed once every object is
    /// restored.
    Metadata,
}

/// A reservation could not be recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReserveError {
    /// The reservation store is full (or out of memory).
    Full,
    /// The range overlaps a range reserved earlier in this transaction.
    Overlap {
        /// The range refused.
        range: Range,
    },
}

impl fmt::Display for ReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReserveError::Full => f.write_str("no room to record another reserved range"),
            ReserveError::Overlap { range } => write!(f, "{range} was reserved twice"),
        }
    }
}

impl core::error::Error for ReserveError {}

/// Where a reader reports what the next kernel must not hand out.
///
/// The implementer records ranges tentatively; they take effect only when the
/// whole restore has succeeded. A reader calls [`rollback`](Self::rollback)
/// when it fails after having reported something.
pub trait Reserve {
    /// Records `range` (non-empty, page aligned) as kept, for `why`.
    fn reserve(&mut self, range: Range, why: Kept) -> Result<(), ReserveError>;
    /// Forgets every range recorded through this object so far.
    fn rollback(&mut self);
}

/// Runs `read`, which reports into `out`, as one transaction: on error,
/// `out` is rolled back, so it holds all of what was read or nothing (the
/// rule every reader of handed-over memory keeps).
pub(crate) fn all_or_nothing<R: Reserve, T, E>(
    out: &mut R,
    read: impl FnOnce(&mut R) -> Result<T, E>,
) -> Result<T, E> {
    let r = read(out);
    if r.is_err() {
        out.rollback();
    }
    r
}

/// A [`Reserve`] that keeps every range in a list, in report order.
///
/// What a kernel uses when its allocator can take the whole list at once
/// after restore (and what the tests use).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReserveLog {
    /// The ranges recorded, in order.
    pub ranges: Vec<(Range, Kept)>,
}

impl ReserveLog {
    /// An empty log.
    pub const fn new() -> Self {
        Self { ranges: Vec::new() }
    }

    /// The ranges kept for `why`, in report order.
    pub fn of(&self, why: Kept) -> impl Iterator<Item = Range> + '_ {
        self.ranges
            .iter()
            .filter(move |(_, w)| *w == why)
            .map(|(r, _)| *r)
    }

    /// Bytes kept for `why`.
    pub fn bytes(&self, why: Kept) -> u64 {
        self.of(why).map(|r| r.len()).sum()
    }
}

impl Reserve for ReserveLog {
    fn reserve(&mut self, range: Range, why: Kept) -> Result<(), ReserveError> {
        self.ranges.try_reserve(1).map_err(|_| ReserveError::Full)?;
        self.ranges.push((range, why));
        Ok(())
    }

    fn rollback(&mut self) {
        self.ranges.clear();
    }
}

/// A [`Reserve`] that only counts: ranges, bytes, and nothing stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReserveCount {
    /// Ranges recorded.
    pub ranges: u64,
    /// Bytes recorded.
    pub bytes: u64,
}

impl Reserve for ReserveCount {
    #[inline]
    fn reserve(&mut self, range: Range, _why: Kept) -> Result<(), ReserveError> {
        self.ranges = self.ranges.wrapping_add(1);
        self.bytes = self.bytes.wrapping_add(range.len());
        Ok(())
    }

    fn rollback(&mut self) {
        *self = Self::default();
    }
}
