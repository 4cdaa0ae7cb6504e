//! The demo's own subsystem format (`kho-demo-v1`), defined once: the
//! kernel writes and reads it, and the host inspect tool (kho-runner)
//! includes this same file to decode it.

use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The demo's subsystem node.
pub const NAME: &str = "demo";
/// Its format.
pub const DEMO_V1: &str = "kho-demo-v1";
/// One preserved block, as `kho-demo-v1` records it (24 bytes, LE).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BlockRecord {
    /// The block's physical address.
    pub phys: U64,
    /// Its order.
    pub order: U32,
    /// Generation of the data: bumped by every hop.
    pub generation: U32,
    /// Checksum of the block's bytes.
    pub sum: U64,
}
