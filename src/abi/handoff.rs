//! The root handoff blob (`kho-handoff-v2`): its version, the boot modules
//! that carry it, and the records of its root and subsystem nodes.

use zerocopy::byteorder::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Version string of the handoff blob (its root `compatible`).
pub const HANDOFF_VERSION: &str = "kho-handoff-v2";

/// The command line of the PVH module that carries the handoff blob.
pub const HANDOFF_MODULE: &str = "kho,handoff-v2";

/// The command line of the PVH module that carries the running kernel's own
/// image, so that the next kernel can kexec again.
pub const IMAGE_MODULE: &str = "kho,image";

/// Root children with a meaning of their own; no subsystem may take them.
pub const RESERVED_NAMES: [&str; 2] = ["tracker", "scratch"];

/// Largest blob a reader accepts.
pub const MAX_BLOB: usize = 1 << 20;

/// A subsystem's payload: where its data lies (`kho,data`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct DataRecord {
    /// Physical address of the data.
    pub phys: U64,
    /// Its size in bytes.
    pub size: U64,
}

/// TSC readings of the first kernel (`kho,tsc`), for the blackout breakdown.
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
pub struct Stamps {
    /// When the handoff work began.
    pub start: U64,
    /// When the blob was written.
    pub written: U64,
    /// Just before the jump to the trampoline (patched in after `finish`).
    pub jump: U64,
}
