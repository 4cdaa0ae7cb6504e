//! The tracker's errors, each naming the block or range refused.

use super::{MAX_ORDER, PHYS_BITS};
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
