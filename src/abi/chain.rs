//! Page chains: the framing every chained format shares.
//!
//! Pages linked in increasing address order, each a [`PageHeader`] then
//! payload words; a format is its [`Format`] (magic and version).

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Size of a chain page.
pub const PAGE_BYTES: usize = 4096;

/// Bytes of the page header.
pub const HEADER_BYTES: usize = 32;

/// Offset of the header's `sum` field.
pub const SUM_OFFSET: usize = 24;

/// Payload words in a chain page.
pub const PAYLOAD_WORDS: usize = (PAGE_BYTES - HEADER_BYTES) / 8;

/// Most pages a reader accepts in one chain (2 GiB of records).
pub const MAX_CHAIN_PAGES: u32 = 1 << 19;

/// What a chain carries: the magic and version every page holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    /// `magic` of every page.
    pub magic: u32,
    /// `version` of every page.
    pub version: u16,
}

/// The header at the start of every chain page.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct PageHeader {
    /// The format's magic.
    pub magic: U32,
    /// The format's version.
    pub version: U16,
    /// Reserved, 0.
    pub flags: U16,
    /// The next page (higher), or 0 on the last.
    pub next: U64,
    /// The page's position in the chain.
    pub seq: U32,
    /// Payload words used.
    pub words: U32,
    /// `kho-sum64` of the page with this field read as 0.
    pub sum: U64,
}
