//! Preserved vmalloc's errors.

use super::*;

/// Why a buffer could not be made, preserved or restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmallocError {
    /// The allocator has no block left.
    OutOfFrames,
    /// No memory for the block list.
    OutOfMemory,
    /// The order is above `MAX_ORDER` or the size above `MAX_BLOCKS`
    /// blocks.
    TooLarge,
    /// The root's flags are not 0, its order is above `MAX_ORDER`, its
    /// block count is above `MAX_BLOCKS`, or it names a chain for no
    /// blocks.
    BadRoot,
    /// A chain page holds a number of blocks other than the root implies.
    CountMismatch {
        /// The page.
        phys: u64,
    },
    /// A block is not aligned to its size.
    Misaligned {
        /// The block's address.
        phys: u64,
    },
    /// The chain is broken.
    Chain(ChainError),
    /// A block or chain page is not preserved, lies in scratch, or is
    /// adopted twice.
    Claim(ClaimError),
    /// The frames could not be mapped.
    Map(MapError),
    /// The tracker refused a block.
    Tracker(TrackerError),
    /// The buffer is already preserved (or, for unpreserve, is not).
    State,
    /// The buffer's contents do not match the root's checksum.
    BadSum,
}

impl fmt::Display for VmallocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use VmallocError::*;
        match self {
            OutOfFrames => f.write_str("vmalloc: no free block"),
            OutOfMemory => f.write_str("vmalloc: no memory for the block list"),
            TooLarge => write!(
                f,
                "vmalloc: order above {MAX_ORDER} or more than {MAX_BLOCKS} blocks"
            ),
            BadRoot => f.write_str("vmalloc: malformed root"),
            CountMismatch { phys } => write!(
                f,
                "vmalloc: chain page {phys:#x} holds a block count the root does not imply"
            ),
            Misaligned { phys } => write!(f, "vmalloc: block {phys:#x} is not aligned to its size"),
            Chain(e) => write!(f, "vmalloc chain: {e}"),
            Claim(e) => write!(f, "vmalloc: {e}"),
            Map(e) => write!(f, "vmalloc: {e}"),
            Tracker(e) => write!(f, "vmalloc: {e}"),
            State => f.write_str("vmalloc: preserved twice, or unpreserved when not preserved"),
            BadSum => f.write_str(
                "vmalloc: the buffer's contents fail their checksum (changed since preserve)",
            ),
        }
    }
}

/// The error a variant wraps, when it wraps one.
impl core::error::Error for VmallocError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            VmallocError::Chain(e) => Some(e),
            VmallocError::Claim(e) => Some(e),
            VmallocError::Map(e) => Some(e),
            VmallocError::Tracker(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ChainError> for VmallocError {
    fn from(e: ChainError) -> Self {
        VmallocError::Chain(e)
    }
}

impl From<ClaimError> for VmallocError {
    fn from(e: ClaimError) -> Self {
        VmallocError::Claim(e)
    }
}
