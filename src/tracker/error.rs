//! The tracker's errors, each naming the block or range refused: the
//! tracker's own, and those of its handed-over chain.

use super::{MAX_ORDER, PHYS_BITS};
use crate::chain::ChainError;
use crate::ranges::Range;
use crate::reserve::ReserveError;
use core::fmt;

/// Why a tracker operation was refused. The tracker is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackerError {
    /// The order is above [`MAX_ORDER`].
    OrderTooLarge {
        /// The order asked for.
        order: u32,
    },
    /// The address is not aligned to the block's size.
    Misaligned {
        /// Start of the block.
        phys: u64,
        /// Order of the block.
        order: u32,
    },
    /// The block reaches past the 52-bit physical address space.
    OutOfRange {
        /// Start of the block.
        phys: u64,
    },
    /// The exact block is already preserved.
    AlreadyPreserved {
        /// Start of the block.
        phys: u64,
        /// Order of the block.
        order: u32,
    },
    /// The block overlaps a preserved block of another size or place (a page
    /// inside a preserved folio, or a folio over a preserved page).
    Overlap {
        /// Start of the block.
        phys: u64,
        /// Order of the block.
        order: u32,
    },
    /// The block lies (partly) in a scratch area, which never holds
    /// preserved memory.
    InScratch {
        /// Start of the block.
        phys: u64,
        /// Order of the block.
        order: u32,
    },
    /// Unpreserve of a block that is not preserved as exactly that block.
    NotPreserved {
        /// Start of the block.
        phys: u64,
        /// Order of the block.
        order: u32,
    },
    /// A byte range that is empty, inverted or not page aligned.
    BadRange {
        /// Start of the range.
        start: u64,
        /// End of the range.
        end: u64,
    },
    /// No memory for the tracker's own structures.
    OutOfMemory,
}

impl fmt::Display for TrackerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use TrackerError::*;
        match *self {
            OrderTooLarge { order } => write!(f, "order {order} is above the maximum {MAX_ORDER}"),
            Misaligned { phys, order } => {
                write!(f, "block {phys:#x} is not aligned to order {order}")
            }
            OutOfRange { phys } => write!(
                f,
                "block {phys:#x} reaches past the {PHYS_BITS}-bit physical space"
            ),
            AlreadyPreserved { phys, order } => {
                write!(f, "block {phys:#x} order {order} is already preserved")
            }
            Overlap { phys, order } => write!(
                f,
                "block {phys:#x} order {order} overlaps a preserved block"
            ),
            InScratch { phys, order } => {
                write!(f, "block {phys:#x} order {order} is in a scratch area")
            }
            NotPreserved { phys, order } => {
                write!(f, "block {phys:#x} order {order} is not preserved")
            }
            BadRange { start, end } => write!(
                f,
                "bad range [{start:#x}, {end:#x}): empty or not page aligned"
            ),
            OutOfMemory => f.write_str("out of memory for the tracker"),
        }
    }
}

impl core::error::Error for TrackerError {}

/// Errors writing or reading the handed-over tracker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackerChainError {
    /// The tracker could not be read (out of memory sorting it).
    Tracker(TrackerError),
    /// The page chain is invalid, or no page could be had for it.
    Chain(ChainError),
    /// The root is implausible (no page, too many pages, flags set).
    BadRoot,
    /// A record runs past its page's words, or is malformed.
    BadRecord {
        /// The page's physical address.
        phys: u64,
        /// Index of the word in the page's payload.
        word: u32,
    },
    /// A record starts before the previous one ends.
    Unordered {
        /// The page's physical address.
        phys: u64,
        /// Index of the word in the page's payload.
        word: u32,
    },
    /// A preserved range is not inside RAM.
    RangeNotInRam {
        /// The range.
        range: Range,
    },
    /// A preserved range overlaps a scratch area.
    RangeInScratch {
        /// The range.
        range: Range,
    },
    /// The records or pages add up to other totals than the root says.
    CountMismatch,
    /// A chain page lies inside a preserved range: freeing the chain after
    /// restore would free preserved memory.
    ChainPageInPreserved {
        /// The page's physical address.
        phys: u64,
    },
    /// The caller's reservation store refused a range.
    Reserve(ReserveError),
    /// The pages of a tracker handed over as it lies do not add up to the
    /// root's checksum: changed since they were handed over.
    BadSum,
}

impl From<TrackerError> for TrackerChainError {
    fn from(e: TrackerError) -> Self {
        TrackerChainError::Tracker(e)
    }
}

impl From<ChainError> for TrackerChainError {
    fn from(e: ChainError) -> Self {
        match e {
            ChainError::OutOfMemory => TrackerChainError::Tracker(TrackerError::OutOfMemory),
            ChainError::Refused { phys } => TrackerChainError::ChainPageInPreserved { phys },
            ChainError::BadLength => TrackerChainError::BadRoot,
            e => TrackerChainError::Chain(e),
        }
    }
}

impl fmt::Display for TrackerChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use TrackerChainError::*;
        match self {
            Tracker(e) => write!(f, "tracker: {e}"),
            Chain(e) => write!(f, "tracker chain: {e}"),
            BadRoot => f.write_str("tracker root is implausible"),
            BadRecord { phys, word } => {
                write!(f, "tracker chain page {phys:#x}: bad record at word {word}")
            }
            Unordered { phys, word } => write!(
                f,
                "tracker chain page {phys:#x}: record at word {word} is out of order"
            ),
            RangeNotInRam { range } => write!(f, "preserved range {range} is not RAM"),
            RangeInScratch { range } => {
                write!(f, "preserved range {range} is in a scratch area")
            }
            CountMismatch => f.write_str("tracker records do not add up to the root's totals"),
            ChainPageInPreserved { phys } => write!(
                f,
                "tracker chain page {phys:#x} lies inside a preserved range"
            ),
            Reserve(e) => write!(f, "reserving the handed-over tracker: {e}"),
            BadSum => f.write_str(
                "the tracker's pages fail their checksum (changed since they were handed over)",
            ),
        }
    }
}

/// The error a variant wraps, when it wraps one.
impl core::error::Error for TrackerChainError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            TrackerChainError::Tracker(e) => Some(e),
            TrackerChainError::Chain(e) => Some(e),
            TrackerChainError::Reserve(e) => Some(e),
            _ => None,
        }
    }
}
