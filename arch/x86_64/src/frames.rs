//! The physical frame allocator: two pools of free ranges, first fit.
//!
//! [`Frames`] holds the state; `FRAMES` is this kernel's, and the free
//! functions lock it for one operation each.
//!
//! - The scratch pool holds the free part of the scratch areas. Until
//!   [`open_general`] runs (after the preserved memory of a handoff has been
//!   reserved), every allocation comes from it: that is what keeps early
//!   boot off preserved memory.
//! - The general pool holds RAM outside scratch, minus what was reserved.
//!   Once it is open, [`alloc()`] serves only from it, so nothing that may be
//!   preserved ever comes from scratch; [`alloc_scratch`] serves memory that
//!   will never be preserved (and that the tracker would refuse).
//!
//! The scratch pool is a fixed array: it works before the heap exists. The
//! general pool opens after the heap, and keeps its ranges on the heap, so
//! however scattered the preserved memory of a handoff is, the free memory
//! between it can be tracked (a fixed list would refuse the handoff and
//! lose it).

use kho::PAGE_SIZE;
use kho::ranges::{Range, RangeError, RangeSet, RangeVec};
use spin::Mutex;

/// Most disjoint free ranges the scratch pool tracks.
pub const MAX_SCRATCH_RANGES: usize = 64;

/// The allocator's state: both pools and the scratch areas.
pub struct Frames {
    /// The free part of the scratch areas.
    scratch: RangeSet<MAX_SCRATCH_RANGES>,
    /// The scratch areas as given (`scratch` is what is free in them).
    areas: RangeSet<MAX_SCRATCH_RANGES>,
    /// RAM outside scratch, free (on the heap: taking or freeing frames
    /// may grow it; the heap never takes frames from here, so its lock is
    /// only ever taken inside this one, never the other way).
    general: RangeVec,
    /// Whether `general` is open (restore is done).
    general_open: bool,
    /// Memory that is never free: what boot reserved (the image, the
    /// modules, real-mode memory) and the heap. A free that names it is
    /// refused, so no safe call can put the heap or a module back in a
    /// pool to be handed out a second time.
    fixed: RangeSet<MAX_FIXED>,
}

/// Most ranges [`Frames`] keeps as never free.
const MAX_FIXED: usize = 16;

/// This kernel's frame allocator. The functions below lock it for one
/// operation each; it is not public, so no code outside them can take it
/// apart.
static FRAMES: Mutex<Frames> = Mutex::new(Frames::new());

fn inward(r: Range) -> Option<Range> {
    let start = r.start.next_multiple_of(PAGE_SIZE);
    let end = r.end & !(PAGE_SIZE - 1);
    (start < end).then_some(Range::new(start, end))
}

impl Default for Frames {
    fn default() -> Self {
        Self::new()
    }
}

impl Frames {
    /// An allocator with no memory.
    pub const fn new() -> Self {
        Self {
            scratch: RangeSet::new(),
            areas: RangeSet::new(),
            general: RangeVec::new(),
            general_open: false,
            fixed: RangeSet::new(),
        }
    }

    /// Adds the scratch area `r` (page aligned inward) to the scratch pool.
    pub fn add_scratch(&mut self, r: Range) -> Result<(), RangeError> {
        match inward(r) {
            Some(r) => {
                self.areas.insert(r)?;
                self.scratch.insert(r)
            }
            None => Ok(()),
        }
    }

    /// Removes `r` from both pools, so that it is never handed out, nor
    /// taken back by [`Frames::free`].
    pub fn reserve(&mut self, r: Range) -> Result<(), RangeError> {
        let r = r.pages_around();
        self.scratch.carve(r)?;
        self.general.carve(r)?;
        self.fix(r)
    }

    /// Marks `r` (already out of the pools: the heap) as never free.
    pub fn fix(&mut self, r: Range) -> Result<(), RangeError> {
        // The union with what is fixed already (modules may overlap the
        // image's pages, say).
        let r = r.pages_around();
        self.fixed.carve(r)?;
        self.fixed.insert(r)
    }

    /// Opens the general pool with `ram` minus `scratch` minus every range
    /// in `keep` and in `reserved` (each kind in one pass, however many
    /// ranges a restore reserved). Call once, after the heap is up and
    /// every preserved range is known.
    pub fn open_general(
        &mut self,
        ram: impl Iterator<Item = Range>,
        scratch: &[Range],
        keep: &[Range],
        reserved: &Reserved,
    ) -> Result<(), RangeError> {
        for r in ram.filter_map(inward) {
            self.general.insert(r)?;
        }
        for &r in scratch.iter().chain(keep) {
            self.general.carve(r.pages_around())?;
        }
        let kinds = [reserved.preserved_ranges(), reserved.metadata_ranges()];
        for list in kinds {
            self.general.carve_sorted(list)?;
        }
        // A restore refuses anything in scratch; should a range touch it
        // all the same, the scratch pool gives it up too.
        for r in kinds.into_iter().flatten() {
            if scratch.iter().any(|a| a.overlaps(r)) {
                self.scratch.carve(r.pages_around())?;
            }
        }
        self.general_open = true;
        Ok(())
    }

    /// Whether the general pool is open (restore is done).
    pub fn general_open(&self) -> bool {
        self.general_open
    }

    /// `count` contiguous frames aligned to `align` bytes inside `window`:
    /// from scratch before restore, from outside scratch after.
    pub fn alloc_in(&mut self, count: u64, align: u64, window: Range) -> Option<u64> {
        let size = count.checked_mul(PAGE_SIZE)?;
        let align = align.max(PAGE_SIZE);
        if self.general_open {
            self.general.alloc_in(size, align, window)
        } else {
            self.scratch.alloc_in(size, align, window)
        }
    }

    /// Frames from scratch, for memory that is never preserved.
    pub fn alloc_scratch(&mut self, count: u64) -> Option<u64> {
        self.scratch.alloc(count.checked_mul(PAGE_SIZE)?, PAGE_SIZE)
    }

    /// Returns `count` frames at `phys` to the pool they came from.
    /// Freeing a frame that is already free is refused with
    /// [`RangeError::Overlap`].
    pub fn free(&mut self, phys: u64, count: u64) -> Result<(), RangeError> {
        let end = count
            .checked_mul(PAGE_SIZE)
            .and_then(|l| phys.checked_add(l))
            .ok_or(RangeError::Empty)?;
        let r = Range::new(phys, end);
        if self.fixed.intersects(r) {
            return Err(RangeError::Overlap);
        }
        if self.areas.intersects(r) {
            self.scratch.insert(r)
        } else {
            self.general.insert(r)
        }
    }

    /// Bytes free in the scratch pool and in the general pool.
    pub fn free_bytes(&self) -> (u64, u64) {
        (self.scratch.total(), self.general.total())
    }

    /// The free ranges of the general pool, in address order.
    pub fn general_free(&self) -> impl Iterator<Item = Range> + '_ {
        self.general.iter()
    }

    /// `count` contiguous frames from scratch, none of them in any range
    /// of `avoid` (kexec staging must not lie where the next kernel's
    /// segments will be copied).
    pub fn alloc_scratch_avoiding(&mut self, count: u64, avoid: &[Range]) -> Option<u64> {
        let size = count.checked_mul(PAGE_SIZE)?;
        let mut view = self.scratch.clone();
        for &r in avoid {
            view.carve(r.pages_around()).ok()?;
        }
        let p = view.alloc(size, PAGE_SIZE)?;
        self.scratch.carve(Range::new(p, p + size)).ok()?;
        Some(p)
    }

    /// Takes `pages` free pages, in runs of any size (scattered is fine),
    /// from the general pool (once open) and then from scratch, none of
    /// them inside `avoid`; appends the runs to `out`. Runs come back with
    /// [`Frames::free`]. Returns how many pages it could not find: on a
    /// shortfall the runs it took stay in `out`, for the caller to give
    /// back.
    pub fn take_scattered(
        &mut self,
        pages: u64,
        avoid: &[Range],
        out: &mut alloc::vec::Vec<Range>,
    ) -> u64 {
        let mut left = pages;
        if self.general_open {
            left = take_from(&mut self.general, left, avoid, out);
        }
        if left > 0 {
            left = take_from(&mut self.scratch, left, avoid, out);
        }
        left
    }
}

/// Adds the scratch area `r` to `FRAMES` ([`Frames::add_scratch`]).
pub fn add_scratch(r: Range) -> Result<(), RangeError> {
    FRAMES.lock().add_scratch(r)
}

/// [`Frames::reserve`] on `FRAMES`.
pub fn reserve(r: Range) -> Result<(), RangeError> {
    FRAMES.lock().reserve(r)
}

/// [`Frames::fix`] on `FRAMES`.
pub fn fix(r: Range) -> Result<(), RangeError> {
    FRAMES.lock().fix(r)
}

/// [`Frames::open_general`] on `FRAMES`.
pub fn open_general(
    ram: impl Iterator<Item = Range>,
    scratch: &[Range],
    keep: &[Range],
    reserved: &Reserved,
) -> Result<(), RangeError> {
    FRAMES.lock().open_general(ram, scratch, keep, reserved)
}

/// Whether the general pool is open (restore is done).
pub fn general_open() -> bool {
    FRAMES.lock().general_open()
}

/// Allocates `count` contiguous frames aligned to `align` bytes: from
/// scratch before restore, from outside scratch after. Not zeroed.
pub fn alloc(count: u64, align: u64) -> Option<u64> {
    FRAMES
        .lock()
        .alloc_in(count, align, Range::new(0, u64::MAX))
}

/// Like [`alloc()`], but only below physical address `limit`.
pub fn alloc_below(count: u64, limit: u64) -> Option<u64> {
    FRAMES
        .lock()
        .alloc_in(count, PAGE_SIZE, Range::new(0, limit))
}

/// Allocates frames from scratch, for memory that is never preserved.
pub fn alloc_scratch(count: u64) -> Option<u64> {
    FRAMES.lock().alloc_scratch(count)
}

/// Returns `count` frames at `phys` to the pool they came from
/// ([`Frames::free`]).
pub fn free(phys: u64, count: u64) -> Result<(), RangeError> {
    FRAMES.lock().free(phys, count)
}

/// Bytes free in the scratch pool and in the general pool.
pub fn free_bytes() -> (u64, u64) {
    FRAMES.lock().free_bytes()
}

/// Calls `f` on every free range of the general pool, in address order
/// (with the allocator locked: `f` must not allocate frames).
pub fn for_each_free(mut f: impl FnMut(Range)) {
    for r in FRAMES.lock().general_free() {
        f(r);
    }
}

/// [`Frames::alloc_scratch_avoiding`] on `FRAMES`.
pub fn alloc_scratch_avoiding(count: u64, avoid: &[Range]) -> Option<u64> {
    FRAMES.lock().alloc_scratch_avoiding(count, avoid)
}

/// [`Frames::take_scattered`] on `FRAMES`.
pub fn take_scattered(pages: u64, avoid: &[Range], out: &mut alloc::vec::Vec<Range>) -> u64 {
    FRAMES.lock().take_scattered(pages, avoid, out)
}

/// [`Frames::take_scattered`] over one pool.
fn take_from<S: kho::ranges::Slots>(
    pool: &mut kho::ranges::Ranges<S>,
    mut left: u64,
    avoid: &[Range],
    out: &mut alloc::vec::Vec<Range>,
) -> u64 {
    let mut taken: alloc::vec::Vec<Range> = alloc::vec::Vec::new();
    for free in pool.iter() {
        if left == 0 {
            break;
        }
        // The free run minus every avoided range, piece by piece.
        let mut at = free.start;
        while at < free.end && left > 0 {
            let cut = avoid
                .iter()
                .map(|a| a.pages_around())
                .filter(|a| a.end > at && a.start < free.end)
                .min_by_key(|a| a.start);
            let piece_end = match cut {
                Some(a) if a.start <= at => {
                    at = a.end;
                    continue;
                }
                Some(a) => a.start,
                None => free.end,
            };
            let n = ((piece_end - at) / PAGE_SIZE).min(left);
            if n > 0 {
                taken.push(Range::new(at, at + n * PAGE_SIZE));
                left -= n;
            }
            at = piece_end;
        }
    }
    for r in taken {
        // Carving a run that is free cannot fail for want of room in a
        // set that only shrinks at the run's ends; if it does, the run is
        // not used.
        if pool.carve(r).is_ok() {
            out.push(r);
        } else {
            left += r.len() / PAGE_SIZE;
        }
    }
    left
}

/// What the next kernel reserves while it restores a handoff: a
/// [`kho::reserve::Reserve`] over lists on the heap (restore runs once the
/// heap is up in scratch), so any number of preserved ranges fits, handed
/// to [`open_general`] afterwards.
pub struct Reserved {
    /// The preserved ranges (what objects claim from), coalesced.
    preserved_set: RangeVec,
    /// Handoff metadata (the blob, tracker chain pages): a few ranges.
    metadata_set: RangeVec,
    /// Bytes reported as preserved.
    pub preserved: u64,
    /// Bytes reported as handoff metadata.
    pub metadata: u64,
}

impl Reserved {
    /// An empty list.
    pub const fn new() -> Self {
        Self {
            preserved_set: RangeVec::new(),
            metadata_set: RangeVec::new(),
            preserved: 0,
            metadata: 0,
        }
    }

    /// The preserved ranges only (no handoff metadata), coalesced, in
    /// address order: what restored objects claim their pages from
    /// (`kho::claims`).
    pub fn preserved_ranges(&self) -> &[Range] {
        self.preserved_set.as_slice()
    }

    /// The handoff metadata ranges, coalesced, in address order.
    pub fn metadata_ranges(&self) -> &[Range] {
        self.metadata_set.as_slice()
    }

    /// How many ranges are reserved, both kinds.
    pub fn range_count(&self) -> usize {
        self.preserved_set.len() + self.metadata_set.len()
    }
}

impl Default for Reserved {
    fn default() -> Self {
        Self::new()
    }
}

impl kho::reserve::Reserve for Reserved {
    fn reserve(
        &mut self,
        range: Range,
        why: kho::reserve::Kept,
    ) -> Result<(), kho::reserve::ReserveError> {
        // A failed reservation fails the restore, which rolls back all.
        let refused = |e| match e {
            RangeError::Full => kho::reserve::ReserveError::Full,
            _ => kho::reserve::ReserveError::Overlap { range },
        };
        // No byte is both: each kind's set refuses an overlap within it,
        // and each range is checked against the other set (a search).
        let (own, other) = match why {
            kho::reserve::Kept::Preserved => (&mut self.preserved_set, &self.metadata_set),
            kho::reserve::Kept::Metadata => (&mut self.metadata_set, &self.preserved_set),
        };
        if other.intersects(range) {
            return Err(kho::reserve::ReserveError::Overlap { range });
        }
        own.insert(range).map_err(refused)?;
        match why {
            kho::reserve::Kept::Preserved => self.preserved += range.len(),
            kho::reserve::Kept::Metadata => self.metadata += range.len(),
        }
        Ok(())
    }

    fn rollback(&mut self) {
        *self = Self::new();
    }
}
