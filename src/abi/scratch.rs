//! Scratch areas as handed over (`kho-scratch-v1`).

use zerocopy::byteorder::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Version string of the handed-over scratch list.
pub const SCRATCH_VERSION: &str = "kho-scratch-v1";

/// Most scratch areas handed over.
pub const MAX_SCRATCH: usize = 8;

/// One handed-over scratch area (16 bytes, little-endian).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ScratchRecord {
    /// First byte, 2 MiB aligned.
    pub start: U64,
    /// Size in bytes, a multiple of 2 MiB, not 0.
    pub size: U64,
}
