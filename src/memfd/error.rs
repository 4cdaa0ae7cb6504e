//! The memfd's errors: each names the offset, record or page refused.

use super::*;

/// Why a memfd operation, write or restore was refused. For an operation on
/// a file, the file is unchanged; for a restore, nothing was adopted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemfdError {
    /// A seal forbids the operation.
    Sealed {
        /// What was refused.
        op: &'static str,
        /// The seal that refuses it.
        seal: Seals,
    },
    /// Seal bits this crate does not know.
    UnknownSeal {
        /// The unknown bits.
        bits: u32,
    },
    /// The operation would go past [`MAX_SIZE`].
    TooLarge,
    /// No free frames for a folio.
    OutOfFrames,
    /// No memory for the folio list.
    OutOfMemory,
    /// The operation would change the folios of a preserved file, or a
    /// format was asked to write a file that is not preserved.
    Preserved {
        /// Whether the file is preserved.
        preserved: bool,
    },
    /// The format cannot carry this file (`memfd-v1` has no seals).
    Unrepresentable,
    /// The header is malformed (its length, a reserved field, a size).
    BadHeader(&'static str),
    /// The header's counts disagree with the records.
    CountMismatch,
    /// The record array is not of the one shape the format allows: order-0
    /// blocks, exactly `ceil(16 x records / 4096)` of them, contents summed
    /// (and an all-zero root when there are no records).
    BadArray,
    /// A record has flag bits this reader does not know.
    UnknownFlag {
        /// The record's position.
        record: u64,
        /// The unknown bits.
        bits: u64,
    },
    /// A record's order is above [`MAX_FOLIO_ORDER`].
    BadOrder {
        /// The record's position.
        record: u64,
        /// Its order.
        order: u32,
    },
    /// A record's frame or file index is not aligned to its order.
    Misaligned {
        /// The record's position.
        record: u64,
    },
    /// A record starts before the previous one ends (records are in file
    /// order and never overlap).
    Overlap {
        /// The record's position.
        record: u64,
    },
    /// A record lies past the file's size.
    PastEnd {
        /// The record's position.
        record: u64,
    },
    /// A record's folios are not preserved, in scratch, or already adopted.
    Claim {
        /// The record's position.
        record: u64,
        /// Why.
        why: ClaimError,
    },
    /// The record array could not be restored.
    Vmalloc(VmallocError),
    /// The tracker refused a folio.
    Tracker(TrackerError),
}

impl fmt::Display for MemfdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use MemfdError::*;
        match self {
            Sealed { op, seal } => {
                write!(f, "memfd: {op} refused by seal {:#x}", seal.bits())
            }
            UnknownSeal { bits } => write!(f, "memfd: unknown seal bits {bits:#x}"),
            TooLarge => write!(f, "memfd: past the largest file size ({MAX_SIZE:#x})"),
            OutOfFrames => f.write_str("memfd: no free frames for a folio"),
            OutOfMemory => f.write_str("memfd: no memory for the folio list"),
            Preserved { preserved: true } => {
                f.write_str("memfd: the file is preserved; its folios cannot change")
            }
            Preserved { preserved: false } => f.write_str("memfd: the file is not preserved"),
            Unrepresentable => f.write_str("memfd: memfd-v1 cannot carry a sealed file"),
            BadArray => f.write_str(
                "memfd: the record array is not order-0 blocks, one per 256 records, with a checksum",
            ),
            BadHeader(what) => write!(f, "memfd: malformed header ({what})"),
            CountMismatch => f.write_str("memfd: the header's count disagrees with the records"),
            UnknownFlag { record, bits } => {
                write!(f, "memfd: record {record} has unknown flags {bits:#x}")
            }
            BadOrder { record, order } => {
                write!(
                    f,
                    "memfd: record {record} has order {order} (at most {MAX_FOLIO_ORDER})"
                )
            }
            Misaligned { record } => {
                write!(f, "memfd: record {record} is not aligned to its order")
            }
            Overlap { record } => {
                write!(
                    f,
                    "memfd: record {record} overlaps or precedes the previous one"
                )
            }
            PastEnd { record } => write!(f, "memfd: record {record} lies past the file's size"),
            Claim { record, why } => write!(f, "memfd: record {record}: {why}"),
            Vmalloc(e) => write!(f, "memfd record array: {e}"),
            Tracker(e) => write!(f, "memfd: {e}"),
        }
    }
}

/// The error a variant wraps, when it wraps one.
impl core::error::Error for MemfdError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            MemfdError::Vmalloc(e) => Some(e),
            MemfdError::Tracker(e) => Some(e),
            MemfdError::Claim { why: e, .. } => Some(e),
            _ => None,
        }
    }
}

impl From<VmallocError> for MemfdError {
    fn from(e: VmallocError) -> Self {
        MemfdError::Vmalloc(e)
    }
}
