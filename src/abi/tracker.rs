//! The preserved-page tracker as handed over (`kho-tracker-v3`): its root
//! in the blob and the records on its page chain.

use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Version string of this layout, for `compatible` properties.
pub const TRACKER_VERSION: &str = "kho-tracker-v3";

/// `magic` of every chain page: "KHOT" read as a little-endian `u32`.
pub const PAGE_MAGIC: u32 = u32::from_le_bytes(*b"KHOT");

/// `version` of every chain page.
pub const PAGE_VERSION: u16 = 3;

/// Most pages one extent record covers.
pub const MAX_EXTENT_PAGES: u64 = 1 << 23;

/// Tag of a bitmap record's first word.
pub const BITMAP_TAG: u64 = 1 << 63;

/// The frame number's bits in a record word.
pub const PFN_MASK: u64 = (1 << 40) - 1;

/// The root of a handed-over tracker: where the chain starts and what it
/// must add up to.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct TrackerRoot {
    /// Physical address of the first chain page.
    pub first_page: U64,
    /// Number of chain pages.
    pub pages: U32,
    /// Reserved, 0.
    pub flags: U32,
    /// Number of records in the chain.
    pub records: U64,
    /// Number of preserved 4 KiB pages the records describe.
    pub preserved_pages: U64,
}

/// Version string of the tracker handed over as it lies.
pub const TRACKER_VERSION_V4: &str = "kho-tracker-v4";

/// The root of a tracker handed over as it lies: its directory, what the
/// directory lists, and what every page must add up to.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct TrackerRootV4 {
    /// Physical address of the first directory page (0 if none).
    pub dir: U64,
    /// Number of directory pages.
    pub dir_pages: U32,
    /// Reserved, 0.
    pub flags: U32,
    /// Number of leaf pages listed.
    pub leaf_pages: U32,
    /// Number of chunk pages listed.
    pub chunk_pages: U32,
    /// Number of preserved 4 KiB pages.
    pub preserved_pages: U64,
    /// The weighted sum of every word of every page.
    pub sum: U64,
}
