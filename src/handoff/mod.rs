//! The handoff blob (`kho-handoff-v2`): the root FDT that tells the next
//! kernel everything that was handed over, and the one call that restores
//! it.
//!
//! ```text
//! / {
//!     compatible = "kho-handoff-v2";
//!     kho,csum = [8 bytes];           // kho-sum64 of the blob, this value read as 0
//!     kho,hop = <N>;                  // kexecs before this one (0: cold boot)
//!     kho,tsc = [24 bytes];           // TSC: handoff start, blob written, jump
//!     tracker { compatible = "kho-tracker-v3"; kho,root = [TrackerRoot]; };
//!     scratch { compatible = "kho-scratch-v1"; kho,areas = [ScratchRecord...]; };
//!     NAME { compatible = "NAME-vK", ...; kho,data = [phys, size]; ... };  // one per subsystem
//! };
//! ```
//!
//! The writer ([`HandoffWriter`]) runs in the first kernel; [`Handoff::parse`]
//! and [`restore`] in the next. [`restore`] validates the blob and everything
//! it points to and reports, through one [`Reserve`] transaction, the blob
//! itself, every tracker chain page and every preserved range: all of it,
//! or (after a rollback) nothing.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use crate::abi::handoff::{DataRecord, HANDOFF_VERSION, MAX_BLOB, RESERVED_NAMES, Stamps};
use crate::fdt::{Fdt, FdtError, Node, StrList};
use crate::platform::PhysMem;
use crate::ranges::Range;
use crate::reserve::{Kept, Reserve, ReserveError};
use crate::scratch::{SCRATCH_VERSION, Scratch, ScratchError};
use crate::tracker::Root;
use crate::tracker::TrackerChainError;
use crate::tracker::chain::{Reader, Summary, TRACKER_VERSION, TrackerRoot};
use crate::tracker::inplace::{TRACKER_VERSION_V4, TrackerRootV4};
use core::fmt;

/// Errors reading or restoring a handoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoffError {
    /// The blob is not a valid FDT.
    Fdt(FdtError),
    /// The blob's root `compatible` names no version this kernel reads (or
    /// is missing).
    UnknownVersion,
    /// A required node or property is missing.
    Missing(&'static str),
    /// A property has the wrong size or type.
    BadProperty(&'static str),
    /// A subsystem's `kho,data` lies outside preserved memory.
    DataNotPreserved {
        /// The data's range.
        range: Range,
    },
    /// The blob is larger than [`MAX_BLOB`], outside RAM, or in scratch.
    BadBlobPlace {
        /// The blob's range.
        range: Range,
    },
    /// The blob's bytes could not be read.
    Unreadable,
    /// The blob's `kho,csum` does not match its bytes: it changed after
    /// it was written.
    BadSum {
        /// The sum the blob states.
        stated: u64,
        /// The sum of its bytes.
        actual: u64,
    },
    /// The blob lies inside preserved memory: it would be both metadata
    /// (freed after restore) and preserved data.
    BlobInPreserved {
        /// The blob's pages.
        range: Range,
    },
    /// Two subsystems' `kho,data` overlap: one page, two owners.
    DataOverlap {
        /// One subsystem's data.
        first: Range,
        /// The other's.
        second: Range,
    },
    /// The scratch list is invalid.
    Scratch(ScratchError),
    /// The tracker's chain is invalid.
    Tracker(TrackerChainError),
    /// The reservation store refused a range.
    Reserve(ReserveError),
}

impl fmt::Display for HandoffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use HandoffError::*;
        match self {
            Fdt(e) => write!(f, "handoff blob: {e}"),
            UnknownVersion => write!(f, "handoff blob is not {HANDOFF_VERSION}"),
            Missing(what) => write!(f, "handoff blob has no {what}"),
            BadProperty(what) => write!(f, "handoff blob property {what} is malformed"),
            DataNotPreserved { range } => {
                write!(f, "handoff subsystem data {range} is not preserved memory")
            }
            BadBlobPlace { range } => write!(
                f,
                "handoff blob at {range} is too large, outside RAM or in scratch"
            ),
            Unreadable => f.write_str("handoff blob cannot be read"),
            BadSum { stated, actual } => write!(
                f,
                "handoff blob fails its checksum (states {stated:#018x}, its bytes sum to {actual:#018x}): changed after it was written"
            ),
            BlobInPreserved { range } => {
                write!(f, "handoff blob at {range} lies inside preserved memory")
            }
            DataOverlap { first, second } => {
                write!(f, "handoff subsystems' data {first} and {second} overlap")
            }
            Scratch(e) => write!(f, "handoff scratch areas: {e}"),
            Tracker(e) => write!(f, "handoff tracker: {e}"),
            Reserve(e) => write!(f, "handoff reservation: {e}"),
        }
    }
}

/// The error a variant wraps, when it wraps one.
impl core::error::Error for HandoffError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            HandoffError::Fdt(e) => Some(e),
            HandoffError::Scratch(e) => Some(e),
            HandoffError::Tracker(e) => Some(e),
            HandoffError::Reserve(e) => Some(e),
            _ => None,
        }
    }
}

mod write;
pub use write::HandoffWriter;
#[cfg(feature = "arch")]
pub use write::set_stamps;
#[cfg(any(test, feature = "arch"))]
pub use write::{Written, seal};

impl From<FdtError> for HandoffError {
    fn from(e: FdtError) -> Self {
        HandoffError::Fdt(e)
    }
}

/// The offset of the `kho,csum` value in `blob`, with the sum it states.
pub(super) fn csum_at(fdt: &Fdt<'_>) -> Result<(usize, u64), HandoffError> {
    let p = fdt
        .root()
        .property("kho,csum")
        .ok_or(HandoffError::Missing("kho,csum"))?;
    let v: [u8; 8] = p
        .value
        .try_into()
        .map_err(|_| HandoffError::BadProperty("kho,csum"))?;
    let at = (p.value.as_ptr() as usize).wrapping_sub(fdt.as_bytes().as_ptr() as usize);
    Ok((at, u64::from_le_bytes(v)))
}

/// A parsed handoff blob (not yet restored).
#[derive(Clone, Copy, Debug)]
pub struct Handoff<'a> {
    fdt: Fdt<'a>,
    /// Kexecs before the one that handed this over (0 if written by a
    /// cold-booted kernel).
    pub hop: u32,
    /// The first kernel's TSC readings.
    pub stamps: Stamps,
    /// The tracker's root.
    pub tracker: Root,
    /// The scratch areas, checked against this kernel's RAM.
    pub scratch: Scratch,
}

/// One subsystem's node.
#[derive(Clone, Copy, Debug)]
pub struct Subsystem<'a> {
    /// Its node name.
    pub name: &'a str,
    /// Its data range, if it has one.
    pub data: Option<Range>,
    /// The node, for its other properties.
    pub node: Node<'a>,
}

impl<'a> Subsystem<'a> {
    /// The versions it was written in, best first.
    pub fn compatible(&self) -> StrList<'a> {
        match self.node.property("compatible").map(|p| p.as_str_list()) {
            Some(Ok(l)) => l,
            // Validated by `Handoff::parse`; an empty list otherwise.
            _ => "".split('\0'),
        }
    }

    /// The first of `versions` (in the reader's order of preference) that
    /// the subsystem was written in.
    pub fn pick(&self, versions: &[&'a str]) -> Option<&'a str> {
        versions
            .iter()
            .copied()
            .find(|v| self.compatible().any(|c| c == *v))
    }
}

fn data_of(n: &Node<'_>) -> Result<Option<Range>, HandoffError> {
    let Some(p) = n.property("kho,data") else {
        return Ok(None);
    };
    let rec: &DataRecord = p
        .as_struct()
        .map_err(|_| HandoffError::BadProperty("kho,data"))?;
    let (start, size) = (rec.phys.get(), rec.size.get());
    let end = start
        .checked_add(size)
        .filter(|_| size > 0)
        .ok_or(HandoffError::BadProperty("kho,data"))?;
    Ok(Some(Range::new(start, end)))
}

impl<'a> Handoff<'a> {
    /// Parses and checks a blob: FDT, version, every required property, the
    /// scratch areas against `ram`, and every subsystem's `compatible` and
    /// `kho,data`. The tracker's chain is read by [`restore`].
    pub fn parse(blob: &'a [u8], ram: &[Range]) -> Result<Self, HandoffError> {
        let fdt = Fdt::new(blob)?;
        let root = fdt.root();
        // The structure is sound; now the bytes must be those written,
        // before any value is believed. An old blob (another version) has
        // no sum: say that rather than "no kho,csum".
        let (at, stated) = csum_at(&fdt).map_err(|e| {
            let ours = root
                .property("compatible")
                .and_then(|p| p.as_str_list().ok())
                .is_some_and(|mut l| l.any(|c| c == HANDOFF_VERSION));
            if ours {
                e
            } else {
                HandoffError::UnknownVersion
            }
        })?;
        let actual = crate::csum::sum64_skipping(fdt.as_bytes(), at);
        if actual != stated {
            return Err(HandoffError::BadSum { stated, actual });
        }
        let compat = root
            .property("compatible")
            .ok_or(HandoffError::UnknownVersion)?
            .as_str_list()
            .map_err(|_| HandoffError::UnknownVersion)?;
        if !compat.clone().any(|c| c == HANDOFF_VERSION) {
            return Err(HandoffError::UnknownVersion);
        }
        let hop = root
            .property("kho,hop")
            .ok_or(HandoffError::Missing("kho,hop"))?
            .as_u32()
            .map_err(|_| HandoffError::BadProperty("kho,hop"))?;
        let stamps: Stamps = *root
            .property("kho,tsc")
            .ok_or(HandoffError::Missing("kho,tsc"))?
            .as_struct()
            .map_err(|_| HandoffError::BadProperty("kho,tsc"))?;
        let versioned = |name: &'static str, version: &str| -> Result<Node<'a>, HandoffError> {
            let n = root.child(name).ok_or(HandoffError::Missing(name))?;
            let ok = n
                .property("compatible")
                .and_then(|p| p.as_str_list().ok())
                .is_some_and(|mut l| l.any(|c| c == version));
            if !ok {
                return Err(HandoffError::BadProperty(name));
            }
            Ok(n)
        };
        let node = root
            .child("tracker")
            .ok_or(HandoffError::Missing("tracker"))?;
        let is = |version: &str| {
            node.property("compatible")
                .and_then(|p| p.as_str_list().ok())
                .is_some_and(|mut l| l.any(|c| c == version))
        };
        let prop = node
            .property("kho,root")
            .ok_or(HandoffError::Missing("tracker/kho,root"))?;
        let bad = |_| HandoffError::BadProperty("tracker/kho,root");
        let tracker = if is(TRACKER_VERSION_V4) {
            Root::InPlace(*prop.as_struct::<TrackerRootV4>().map_err(bad)?)
        } else if is(TRACKER_VERSION) {
            Root::Chain(*prop.as_struct::<TrackerRoot>().map_err(bad)?)
        } else {
            return Err(HandoffError::BadProperty("tracker"));
        };
        let areas = versioned("scratch", SCRATCH_VERSION)?
            .property("kho,areas")
            .ok_or(HandoffError::Missing("scratch/kho,areas"))?;
        let scratch = Scratch::from_records(areas.value, ram).map_err(HandoffError::Scratch)?;
        // Every subsystem: a compatible list, and a well-formed data range.
        for n in root.children() {
            if RESERVED_NAMES.contains(&n.name()) {
                continue;
            }
            n.property("compatible")
                .and_then(|p| p.as_str_list().ok())
                .filter(|l| l.clone().all(|c| !c.is_empty()))
                .ok_or(HandoffError::BadProperty("compatible"))?;
            data_of(&n)?;
        }
        Ok(Self {
            fdt,
            hop,
            stamps,
            tracker,
            scratch,
        })
    }

    /// The blob's FDT.
    pub fn fdt(&self) -> &Fdt<'a> {
        &self.fdt
    }

    /// Every subsystem, in blob order.
    pub fn subsystems(&self) -> impl Iterator<Item = Subsystem<'a>> + 'a {
        self.fdt
            .root()
            .children()
            .filter(|n| !RESERVED_NAMES.contains(&n.name()))
            .map(|node| Subsystem {
                name: node.name(),
                data: data_of(&node).ok().flatten(),
                node,
            })
    }

    /// The subsystem called `name`.
    pub fn subsystem(&self, name: &str) -> Option<Subsystem<'a>> {
        self.subsystems().find(|s| s.name == name)
    }
}

/// Wraps the caller's reservation: forwards every range, and measures how
/// much of each subsystem's data the preserved ranges cover.
struct Covering<'r, R: Reserve, const N: usize> {
    out: &'r mut R,
    data: [(Range, u64); N],
    count: usize,
    /// The blob's pages, which no preserved range may overlap.
    blob: Range,
    blob_hit: bool,
}

impl<R: Reserve, const N: usize> Reserve for Covering<'_, R, N> {
    fn reserve(&mut self, range: Range, why: Kept) -> Result<(), ReserveError> {
        if why == Kept::Preserved {
            if range.overlaps(&self.blob) {
                self.blob_hit = true;
                return Err(ReserveError::Overlap { range });
            }
            for (d, covered) in self.data.iter_mut().take(self.count) {
                let lo = d.start.max(range.start);
                let hi = d.end.min(range.end);
                *covered = covered.saturating_add(hi.saturating_sub(lo));
            }
        }
        self.out.reserve(range, why)
    }

    fn rollback(&mut self) {
        self.out.rollback();
    }
}

/// Most subsystems whose data [`restore`] checks.
pub const MAX_SUBSYSTEMS: usize = 64;

/// What [`restore`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreSummary {
    /// The tracker walk's summary.
    pub tracker: Summary,
}

/// Restores a parsed handoff whose blob occupies `blob` in physical memory:
/// reports the blob's pages (metadata), then reads the tracker's chain
/// through `mem` (chain pages as metadata, preserved ranges as preserved),
/// and checks that every subsystem's data lies in preserved memory. On any
/// error, `out` is rolled back: the next kernel then boots as a cold boot.
pub fn restore<M: PhysMem>(
    mem: &M,
    handoff: &Handoff<'_>,
    blob: Range,
    ram: &[Range],
    out: &mut impl Reserve,
) -> Result<RestoreSummary, HandoffError> {
    crate::reserve::all_or_nothing(out, |out| restore_inner(mem, handoff, blob, ram, out))
}

fn restore_inner<M: PhysMem, R: Reserve>(
    mem: &M,
    handoff: &Handoff<'_>,
    blob: Range,
    ram: &[Range],
    out: &mut R,
) -> Result<RestoreSummary, HandoffError> {
    let pages = blob.pages_around();
    if blob.len() > MAX_BLOB as u64
        || blob.is_empty()
        || !ram.iter().any(|r| r.covers(pages))
        || handoff.scratch.overlaps(pages)
    {
        return Err(HandoffError::BadBlobPlace { range: blob });
    }
    out.reserve(pages, Kept::Metadata)
        .map_err(HandoffError::Reserve)?;
    let mut cov = Covering::<R, MAX_SUBSYSTEMS> {
        out,
        data: [(Range::new(0, 0), 0); MAX_SUBSYSTEMS],
        count: 0,
        blob: pages,
        blob_hit: false,
    };
    for s in handoff.subsystems() {
        if let Some(d) = s.data {
            let slot = cov
                .data
                .get_mut(cov.count)
                .ok_or(HandoffError::BadProperty("too many subsystems"))?;
            *slot = (d, 0);
            cov.count = cov.count.saturating_add(1);
        }
    }
    // One owner per byte: no two subsystems' data overlap.
    let used = cov.data.get_mut(..cov.count).unwrap_or(&mut []);
    used.sort_unstable_by_key(|(d, _)| d.start);
    for w in used.windows(2) {
        if let [(a, _), (b, _)] = w
            && a.overlaps(b)
        {
            return Err(HandoffError::DataOverlap {
                first: *a,
                second: *b,
            });
        }
    }
    let read = match handoff.tracker {
        Root::Chain(root) => Reader::new(mem, root, ram, handoff.scratch.areas()).restore(&mut cov),
        Root::InPlace(root) => {
            crate::tracker::inplace::restore(mem, &root, ram, handoff.scratch.areas(), &mut cov)
        }
    };
    let tracker = read.map_err(|e| {
        if cov.blob_hit {
            HandoffError::BlobInPreserved { range: pages }
        } else {
            HandoffError::Tracker(e)
        }
    })?;
    for (d, covered) in cov.data.iter().take(cov.count) {
        if *covered != d.len() {
            return Err(HandoffError::DataNotPreserved { range: *d });
        }
    }
    Ok(RestoreSummary { tracker })
}

#[cfg(test)]
mod tests;
