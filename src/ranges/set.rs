//! The free list of a boot-time frame allocator: [`Ranges`], with fixed
//! or growable slots.

use super::{Range, RangeError};
use alloc::vec::Vec;
use core::fmt;

/// Where a [`Ranges`] keeps its ranges: a fixed array ([`Fixed`], for
/// code that runs before any allocator) or a `Vec` (no limit but memory).
pub trait Slots {
    /// The ranges held, in address order.
    fn slice(&self) -> &[Range];
    /// The same, writable.
    fn slice_mut(&mut self) -> &mut [Range];
    /// Makes room for `extra` more ranges, or fails with
    /// [`RangeError::Full`] (holding what it holds).
    fn room(&mut self, extra: usize) -> Result<(), RangeError>;
    /// Inserts `r` at index `i`, after [`room`](Self::room) made room.
    fn insert_at(&mut self, i: usize, r: Range) -> Result<(), RangeError>;
    /// Removes the range at index `i` (if there is one).
    fn remove_at(&mut self, i: usize);
}

/// Room for `N` ranges in an array: never allocates.
#[derive(Clone)]
pub struct Fixed<const N: usize> {
    ranges: [Range; N],
    len: usize,
}

impl<const N: usize> Slots for Fixed<N> {
    fn slice(&self) -> &[Range] {
        self.ranges.get(..self.len).unwrap_or(&[])
    }

    fn slice_mut(&mut self) -> &mut [Range] {
        self.ranges.get_mut(..self.len).unwrap_or(&mut [])
    }

    fn room(&mut self, extra: usize) -> Result<(), RangeError> {
        match self.len.checked_add(extra) {
            Some(n) if n <= N => Ok(()),
            _ => Err(RangeError::Full),
        }
    }

    fn insert_at(&mut self, i: usize, r: Range) -> Result<(), RangeError> {
        self.room(1)?;
        if i > self.len {
            return Err(RangeError::Full);
        }
        self.ranges.copy_within(i..self.len, i + 1);
        self.ranges[i] = r;
        self.len += 1;
        Ok(())
    }

    fn remove_at(&mut self, i: usize) {
        if i < self.len {
            self.ranges.copy_within(i + 1..self.len, i);
            self.len -= 1;
        }
    }
}

impl Slots for Vec<Range> {
    fn slice(&self) -> &[Range] {
        self
    }

    fn slice_mut(&mut self) -> &mut [Range] {
        self
    }

    fn room(&mut self, extra: usize) -> Result<(), RangeError> {
        self.try_reserve(extra).map_err(|_| RangeError::Full)
    }

    fn insert_at(&mut self, i: usize, r: Range) -> Result<(), RangeError> {
        self.room(1)?;
        if i > self.len() {
            return Err(RangeError::Full);
        }
        self.insert(i, r);
        Ok(())
    }

    fn remove_at(&mut self, i: usize) {
        if i < self.len() {
            self.remove(i);
        }
    }
}

/// Disjoint, non-adjacent ranges kept sorted by address, in slots `S`.
#[derive(Clone)]
pub struct Ranges<S> {
    slots: S,
}

/// Up to `N` ranges, in an array: what runs before any allocator uses.
pub type RangeSet<const N: usize> = Ranges<Fixed<N>>;

/// Any number of ranges, in a `Vec`: a set whose size the input decides
/// (one range per preserved run of a handoff, say).
pub type RangeVec = Ranges<Vec<Range>>;

impl<const N: usize> Default for RangeSet<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl Default for RangeVec {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Slots> fmt::Debug for Ranges<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<const N: usize> RangeSet<N> {
    /// An empty set.
    pub const fn new() -> Self {
        Self {
            slots: Fixed {
                ranges: [Range::new(0, 0); N],
                len: 0,
            },
        }
    }
}

impl RangeVec {
    /// An empty set.
    pub const fn new() -> Self {
        Self { slots: Vec::new() }
    }

    /// Removes every byte of every range of `cuts` at once: one pass over
    /// both lists when `cuts` is sorted by start (a restore's reserved
    /// ranges, say), else one [`carve`](Self::carve) each. The set is
    /// unchanged on error.
    #[cfg(any(test, feature = "arch"))]
    pub fn carve_sorted(&mut self, cuts: &[Range]) -> Result<(), RangeError> {
        if !cuts.windows(2).all(|w| w[0].start <= w[1].start) {
            let before = self.slots.clone();
            for c in cuts.iter().filter(|c| !c.is_empty()) {
                if let Err(e) = self.carve(*c) {
                    self.slots = before;
                    return Err(e);
                }
            }
            return Ok(());
        }
        let mut out = Vec::new();
        out.try_reserve(self.len().saturating_add(cuts.len()))
            .map_err(|_| RangeError::Full)?;
        let mut rest = cuts;
        for &g in self.as_slice() {
            let mut pos = g.start;
            // Cuts wholly before this range are done with.
            while let [c, tail @ ..] = rest
                && c.end <= pos
            {
                rest = tail;
            }
            for c in rest.iter().take_while(|c| c.start < g.end) {
                // An empty cut removes nothing (and must not split).
                if c.is_empty() {
                    continue;
                }
                if c.start > pos {
                    out.push(Range::new(pos, c.start));
                }
                pos = pos.max(c.end);
            }
            if pos < g.end {
                out.push(Range::new(pos, g.end));
            }
        }
        self.slots = out;
        Ok(())
    }
}

impl<S: Slots> Ranges<S> {
    /// The ranges in address order.
    pub fn iter(&self) -> impl Iterator<Item = Range> + '_ {
        self.as_slice().iter().copied()
    }

    /// The ranges as a sorted slice.
    pub fn as_slice(&self) -> &[Range] {
        self.slots.slice()
    }

    /// Number of ranges held.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether the set holds no range.
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// Total bytes covered.
    pub fn total(&self) -> u64 {
        self.iter().map(|r| r.len()).sum()
    }

    /// The range holding byte `at`'s neighbourhood: the first that ends
    /// after `at` (the only one that can hold `at` or start soonest after).
    fn first_ending_after(&self, at: u64) -> Option<&Range> {
        let s = self.as_slice();
        s.get(s.partition_point(|x| x.end <= at))
    }

    /// Whether every byte of `r` is in the set.
    #[cfg(test)]
    pub(crate) fn contains(&self, r: Range) -> bool {
        !r.is_empty()
            && self
                .first_ending_after(r.start)
                .is_some_and(|x| x.covers(r))
    }

    /// Whether any byte of `r` is in the set.
    pub fn intersects(&self, r: Range) -> bool {
        self.first_ending_after(r.start)
            .is_some_and(|x| x.overlaps(&r))
    }

    /// Adds `r`, merging it with adjacent ranges.
    ///
    /// Fails with [`RangeError::Overlap`] if any byte of `r` is already in the
    /// set, and with [`RangeError::Full`] if a new slot is needed and none is
    /// left; the set is unchanged on error. Adding at the end (ranges in
    /// address order) moves nothing.
    pub fn insert(&mut self, r: Range) -> Result<(), RangeError> {
        if r.is_empty() {
            return Err(RangeError::Empty);
        }
        let s = self.as_slice();
        // Ranges that arrive in address order (a restore's) go at the end
        // without a search.
        match s.last() {
            Some(last) if last.end < r.start => return self.slots.insert_at(s.len(), r),
            Some(last) if last.end == r.start => {
                let n = s.len() - 1;
                self.slots.slice_mut()[n].end = r.end;
                return Ok(());
            }
            _ => {}
        }
        // First range that ends at or after r.start.
        let i = s.partition_point(|x| x.end < r.start);
        let mut merge_left = false;
        let mut merge_right = false;
        if let Some(x) = s.get(i) {
            if x.overlaps(&r) {
                return Err(RangeError::Overlap);
            }
            if x.end == r.start {
                merge_left = true;
                if let Some(y) = s.get(i + 1) {
                    if y.overlaps(&r) {
                        return Err(RangeError::Overlap);
                    }
                    merge_right = y.start == r.end;
                }
            } else {
                merge_right = x.start == r.end;
            }
        }
        let s = self.slots.slice_mut();
        match (merge_left, merge_right) {
            (true, true) => {
                let end = s[i + 1].end;
                s[i].end = end;
                self.slots.remove_at(i + 1);
            }
            (true, false) => s[i].end = r.end,
            (false, true) => s[i].start = r.start,
            (false, false) => self.slots.insert_at(i, r)?,
        }
        Ok(())
    }

    /// Removes every byte of `r` from the set; bytes of `r` not in the set are
    /// ignored. Fails with [`RangeError::Full`] (set unchanged) if splitting a
    /// range needs a slot that is not there.
    pub fn carve(&mut self, r: Range) -> Result<(), RangeError> {
        if r.is_empty() {
            return Err(RangeError::Empty);
        }
        let s = self.as_slice();
        let first = s.partition_point(|x| x.end <= r.start);
        let last = s.partition_point(|x| x.start < r.end); // exclusive
        if first >= last {
            return Ok(());
        }
        let head = s[first];
        let tail = s[last - 1];
        let keep_head = head.start < r.start;
        let keep_tail = tail.end > r.end;
        let removed = last - first;
        let kept = usize::from(keep_head) + usize::from(keep_tail);
        if kept > removed {
            self.slots.room(kept - removed)?;
        }
        // The common cases rewrite in place: a range loses its head or
        // tail, or one range splits in two (one insert).
        if removed == 1 && kept == 1 {
            let x = &mut self.slots.slice_mut()[first];
            *x = if keep_head {
                Range::new(head.start, r.start)
            } else {
                Range::new(r.end, tail.end)
            };
            return Ok(());
        }
        if removed == 1 && kept == 2 {
            self.slots.slice_mut()[first] = Range::new(head.start, r.start);
            return self.slots.insert_at(first + 1, Range::new(r.end, tail.end));
        }
        // Drop the touched ranges, then put back what survives.
        for _ in 0..removed {
            self.slots.remove_at(first);
        }
        let mut at = first;
        if keep_head {
            self.slots.insert_at(at, Range::new(head.start, r.start))?;
            at += 1;
        }
        if keep_tail {
            self.slots.insert_at(at, Range::new(r.end, tail.end))?;
        }
        Ok(())
    }

    /// Takes `size` bytes aligned to `align` (a power of two) from the lowest
    /// range that can hold them, and returns their start.
    pub fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        self.alloc_in(size, align, Range::new(0, u64::MAX))
    }

    /// Like [`alloc`](Self::alloc) but only from inside `window`.
    pub fn alloc_in(&mut self, size: u64, align: u64, window: Range) -> Option<u64> {
        if size == 0 || !align.is_power_of_two() {
            return None;
        }
        let found = self.iter().find_map(|x| {
            let lo = x.start.max(window.start);
            let hi = x.end.min(window.end);
            let start = lo.checked_add(align - 1)? & !(align - 1);
            let end = start.checked_add(size)?;
            (end <= hi).then_some(start)
        })?;
        // A carve that splits a range may need one more slot.
        self.carve(Range::new(found, found + size)).ok()?;
        Some(found)
    }
}
