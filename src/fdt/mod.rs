//! Flattened device tree (FDT v17): a writer and a zero-copy reader.
//!
//! The handoff blob is a real FDT, so `dtc` and every other device-tree tool
//! can read it. [`FdtWriter`] builds a blob in a caller-given buffer without
//! allocating; [`Fdt`] validates a borrowed blob once, completely, and then
//! answers lookups with references into it.
//!
//! Conventions of the format (see the devicetree specification, chapter 5):
//! a 40-byte header of big-endian `u32`s, the memory-reservation block
//! (8-aligned big-endian `u64` pairs ending in `0, 0`), the structure block
//! (4-aligned big-endian tokens) and the strings block (NUL-terminated
//! property names). `kho`'s own payload conventions (little-endian structs,
//! versioned `compatible` strings) are in `docs/abi.md`.

mod error;
mod read;
mod strings;
mod tree;
mod validate;
mod write;

pub use error::FdtError;
#[cfg(feature = "arch")]
pub use error::{Block, PropError};
pub use read::Fdt;
#[cfg(feature = "arch")]
pub use read::Reservation;
pub use tree::{Node, StrList};
#[cfg(feature = "arch")]
pub use tree::{Property, WalkItem};
pub use write::{FdtWriter, WriteError};

/// `magic` of every FDT header.
pub const FDT_MAGIC: u32 = 0xd00d_feed;
/// The version this crate writes.
pub const FDT_VERSION: u32 = 17;
/// The oldest version a v17 blob is compatible with.
pub const FDT_LAST_COMP_VERSION: u32 = 16;
/// Size of the header in bytes.
pub const HEADER_SIZE: usize = 40;
/// Deepest nesting of nodes accepted by the reader and writer (the root is
/// at depth 1). Deeper trees are refused with a typed error.
pub const MAX_DEPTH: usize = 64;

/// Name of the optional skip-hint property: the first property of a node,
/// one big-endian cell holding the size in bytes of the node's whole subtree
/// (from its BEGIN_NODE token to just past its END_NODE token). Written by
/// `FdtWriter::with_skip_hints` (feature `tools`), checked by [`Fdt::new`] against the real
/// subtree, and used by lookups to jump over siblings in one step.
pub const SKIP_HINT: &str = "kho,skip";

pub(crate) const TOKEN_BEGIN_NODE: u32 = 1;
pub(crate) const TOKEN_END_NODE: u32 = 2;
pub(crate) const TOKEN_PROP: u32 = 3;
pub(crate) const TOKEN_NOP: u32 = 4;
pub(crate) const TOKEN_END: u32 = 9;

/// Whether `c` may appear in a node name (dtc's set, `@` for unit addresses).
pub(crate) fn is_node_name_char(c: u8) -> bool {
    NAME_CHARS[c as usize] & NODE_CHAR != 0
}

/// `NAME_CHARS[c]` bits: legal in node names, legal in property names, `@`.
pub(crate) const NODE_CHAR: u8 = 1;
/// See [`NODE_CHAR`].
pub(crate) const PROP_CHAR: u8 = 2;
/// See [`NODE_CHAR`].
pub(crate) const AT_CHAR: u8 = 4;

/// Character classes for names, one lookup a byte.
pub(crate) static NAME_CHARS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0usize;
    while c < 256 {
        let b = c as u8;
        let alnum = b.is_ascii_alphanumeric();
        let mut v = 0;
        if alnum || matches!(b, b',' | b'.' | b'_' | b'+' | b'-' | b'@') {
            v |= NODE_CHAR;
        }
        if alnum || matches!(b, b',' | b'.' | b'_' | b'+' | b'-' | b'*' | b'#' | b'?') {
            v |= PROP_CHAR;
        }
        if b == b'@' {
            v |= AT_CHAR;
        }
        t[c] = v;
        c += 1;
    }
    t
};

/// Whether `c` may appear in a property name (dtc's set).
pub(crate) fn is_prop_name_char(c: u8) -> bool {
    NAME_CHARS[c as usize] & PROP_CHAR != 0
}
