//! The orchestrator's node (`kho-luo-v2`): sessions, objects, their
//! payloads (one version each), and for each object its footprint and
//! origin, which let a kernel that cannot read it carry it on.
//!
//! ```text
//! luo {
//!     compatible = "kho-luo-v2";
//!     session-N {                        // N = 0, 1, ... in order
//!         kho,name = "NAME";             // unique among sessions
//!         kho,flags = [LE u32];          // SESSION_DROP_UNREAD or 0
//!         object-T {                     // T = the token in hex, unique in the session
//!             kho,token = [LE u64];
//!             kho,family = "FAMILY";
//!             kho,origin = [LE u32 hop, LE u32 carried];
//!             kho,footprint = [Extent...];   // absent with no array: cannot be carried
//!             kho,footprint-array = [FootprintArray]; // optional: the data extents
//!             payload-K {                // K = 0, 1, ...: best version first
//!                 kho,version = "FAMILY-vN";
//!                 kho,features = [LE u64 required, LE u64 optional];
//!                 kho,data = [bytes];
//!             };
//!         };
//!     };
//! };
//! ```
//!
//! `kho-luo-v1` is the same without `kho,flags`, `kho,origin` and
//! `kho,footprint`; readers still read it (nothing in it can be carried).

use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The previous version of the node, still read.
pub const LUO_V1: &str = "kho-luo-v1";

/// Session flag: objects of this session that a kernel cannot read are
/// dropped (their memory freed), never carried.
pub const SESSION_DROP_UNREAD: u32 = 1;

/// Most extents an object's footprint lists inline (64 KiB). An object
/// whose pages form more separate runs (a file of scattered 4 KiB folios)
/// has its data extents in a preserved array instead
/// ([`FootprintArray`]).
pub const MAX_FOOTPRINT_EXTENTS: usize = 4096;

/// Most extents a footprint array holds (16 Mi: 256 MiB of records).
pub const MAX_FOOTPRINT_ARRAY: u64 = 1 << 24;

/// `kho,footprint-array` (32 bytes, LE): an object's data extents in a
/// summed `kho-vmalloc-v2` buffer of [`Extent`] records, written when the
/// object is preserved (outside the blackout). The object's
/// `kho,footprint` then lists only the pages its payloads name. The
/// array's own pages are no object's: a kernel reads them (as metadata)
/// only to carry the object, and frees them at finish. Its shape is
/// checked: order-0 blocks, exactly as many as the extents need, summed,
/// zero after the last extent.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct FootprintArray {
    /// The buffer.
    pub root: crate::abi::vmalloc::VmallocRoot,
    /// Extents in it, at most [`MAX_FOOTPRINT_ARRAY`].
    pub extents: U64,
}

/// One run of pages an object owns (16 bytes, LE): data it adopts in the
/// next kernel and metadata its payloads name (record arrays, chains).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Extent {
    /// Physical address of the first page, page aligned.
    pub start: U64,
    /// Pages, at least 1.
    pub pages: U64,
}

/// Where an object comes from (8 bytes, LE).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Origin {
    /// The `kho,hop` of the handoff that first carried the object (the
    /// kexec after the kernel that wrote it).
    pub hop: U32,
    /// How many kernels carried it since without reading it.
    pub carried: U32,
}

/// The node's version.
pub const LUO_VERSION: &str = "kho-luo-v2";

/// The node's name.
pub const NODE: &str = "luo";
