//! Preserved vmalloc (`kho-vmalloc-v2`): the root that names a buffer and
//! the chain of its block addresses.

use super::chain::{Format, PAYLOAD_WORDS};
use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The format's version string.
pub const VMALLOC_VERSION: &str = "kho-vmalloc-v2";

/// The chain's magic and version.
pub const FORMAT: Format = Format {
    magic: u32::from_le_bytes(*b"KHOV"),
    version: 2,
};

/// Largest block order (2 MiB blocks).
pub const MAX_ORDER: u32 = 9;

/// Most blocks one buffer may have (a chain of at most 4096 pages).
pub const MAX_BLOCKS: u32 = 4096 * PAYLOAD_WORDS as u32;

/// Root flag: the buffer's contents were fixed at preserve and `sum` is
/// their `kho-sum64`.
pub const SUMMED: u16 = 1;

/// What names a preserved buffer (24 bytes, little-endian).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct VmallocRoot {
    /// First chain page, 0 if the buffer has no blocks.
    pub first: U64,
    /// Blocks in the buffer.
    pub blocks: U32,
    /// log2 of the frames per block.
    pub order: U16,
    /// `SUMMED` or 0.
    pub flags: U16,
    /// With `SUMMED`, the `kho-sum64` of the buffer's bytes; else 0.
    pub sum: U64,
}
