//! Why a blob is not a valid FDT ([`FdtError`]), and why a property's value
//! is not what was asked ([`PropError`]).

use super::{FDT_MAGIC, MAX_DEPTH};
use core::fmt;

/// Why a blob is not a valid FDT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtError {
    /// Shorter than the header, or than the header's `totalsize`.
    Truncated {
        /// Bytes the blob claims or needs.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// `magic` is not `0xd00dfeed`.
    BadMagic(u32),
    /// The blob's version is not one this reader understands: it reads
    /// version 16 and 17 layouts (`version >= 16`, `last_comp_version <=
    /// 17`).
    UnsupportedVersion {
        /// `version` field.
        version: u32,
        /// `last_comp_version` field.
        last_comp_version: u32,
    },
    /// A block offset is not aligned as the format requires.
    Misaligned(Block),
    /// A block extends past `totalsize` or starts inside the header.
    OutOfBounds(Block),
    /// Two blocks overlap.
    Overlap(Block, Block),
    /// The memory-reservation block has no terminator (an entry of size 0)
    /// before the next block.
    UnterminatedReservations,
    /// A memory reservation's end does not fit in 64 bits (`address + size`
    /// wraps): a caller computing the range would reserve nothing.
    BadReservation {
        /// Index of the entry in the block.
        index: usize,
    },
    /// Two properties of one node have the same name: one reader would take
    /// the first, another the second.
    DuplicateProperty {
        /// Offset of the second one's token in the structure block.
        offset: usize,
    },
    /// Two children of one node have the same name (unit address included).
    DuplicateNode {
        /// Offset of the second one's BEGIN_NODE token in the structure block.
        offset: usize,
    },
    /// A node name runs past the structure block without a NUL.
    UnterminatedName {
        /// Offset of the token in the structure block.
        offset: usize,
    },
    /// A node or property name is not valid (illegal character, bad UTF-8,
    /// empty child name).
    BadName {
        /// Offset of the token in the structure block.
        offset: usize,
    },
    /// The strings block does not end with a NUL.
    UnterminatedStrings,
    /// The strings block holds a byte that is neither NUL nor legal in a
    /// property name.
    BadStrings {
        /// Offset of the byte in the strings block.
        offset: usize,
    },
    /// A property's name offset is outside the strings block or not at the
    /// start of a name.
    BadNameOffset {
        /// Offset of the token in the structure block.
        offset: usize,
        /// The name offset found.
        nameoff: u32,
    },
    /// A property value runs past the structure block.
    ValueOutOfBounds {
        /// Offset of the token in the structure block.
        offset: usize,
    },
    /// Nodes nested deeper than [`MAX_DEPTH`].
    TooDeep {
        /// Offset of the token in the structure block.
        offset: usize,
    },
    /// A token that is not valid here (unknown value, a property outside a
    /// node or after a subnode, a second root, an END_NODE with no node).
    UnexpectedToken {
        /// Offset of the token in the structure block.
        offset: usize,
        /// The token.
        token: u32,
    },
    /// The END token came before the root node was closed.
    EarlyEnd {
        /// Offset of the token in the structure block.
        offset: usize,
    },
    /// The structure block ended without an END token.
    MissingEnd,
    /// Bytes of the structure block follow the END token.
    DataAfterEnd,
    /// There is no root node.
    NoRoot,
    /// A `kho,skip` hint is not the node's first property, is not one cell,
    /// sits on the root, or disagrees with the node's real size.
    BadSkipHint {
        /// Offset of the node's BEGIN_NODE token in the structure block.
        offset: usize,
    },
}

/// The blocks of an FDT, for error reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    /// The memory-reservation block.
    Reservations,
    /// The structure block.
    Structure,
    /// The strings block.
    Strings,
}

impl fmt::Display for FdtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use FdtError::*;
        match self {
            Truncated { needed, available } => write!(
                f,
                "FDT truncated: {needed} bytes needed, {available} available"
            ),
            BadMagic(m) => write!(f, "not an FDT: magic {m:#010x}, want {FDT_MAGIC:#010x}"),
            UnsupportedVersion {
                version,
                last_comp_version,
            } => write!(
                f,
                "FDT version {version} (compatible back to {last_comp_version}) is not readable: versions 16 and 17 are"
            ),
            Misaligned(b) => write!(f, "FDT {b:?} block misaligned"),
            OutOfBounds(b) => write!(f, "FDT {b:?} block outside the blob"),
            Overlap(a, b) => write!(f, "FDT {a:?} and {b:?} blocks overlap"),
            UnterminatedReservations => f.write_str("FDT memory reservations not terminated"),
            BadReservation { index } => write!(
                f,
                "FDT memory reservation {index} ends past the 64-bit address space"
            ),
            DuplicateProperty { offset } => write!(
                f,
                "FDT property at structure offset {offset} repeats a name of its node"
            ),
            DuplicateNode { offset } => write!(
                f,
                "FDT node at structure offset {offset} repeats the name of a sibling"
            ),
            UnterminatedName { offset } => write!(
                f,
                "FDT node name at structure offset {offset} not terminated"
            ),
            BadName { offset } => write!(f, "FDT invalid name at structure offset {offset}"),
            UnterminatedStrings => f.write_str("FDT strings block does not end with NUL"),
            BadStrings { offset } => write!(
                f,
                "FDT strings block has an illegal name byte at offset {offset}"
            ),
            BadNameOffset { offset, nameoff } => {
                write!(
                    f,
                    "FDT property at structure offset {offset} has bad name offset {nameoff}"
                )
            }
            ValueOutOfBounds { offset } => write!(
                f,
                "FDT property value at structure offset {offset} runs past the block"
            ),
            TooDeep { offset } => write!(
                f,
                "FDT nodes nested deeper than {MAX_DEPTH} at structure offset {offset}"
            ),
            UnexpectedToken { offset, token } => write!(
                f,
                "FDT unexpected token {token:#x} at structure offset {offset}"
            ),
            EarlyEnd { offset } => write!(
                f,
                "FDT END token at structure offset {offset} before the root node closed"
            ),
            MissingEnd => f.write_str("FDT structure block has no END token"),
            DataAfterEnd => f.write_str("FDT structure block has data after the END token"),
            NoRoot => f.write_str("FDT has no root node"),
            BadSkipHint { offset } => write!(
                f,
                "FDT skip hint of the node at structure offset {offset} is wrong"
            ),
        }
    }
}

impl core::error::Error for FdtError {}

/// Why a property value could not be read as the asked type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropError {
    /// The value's size does not fit the type.
    WrongSize {
        /// Bytes the type needs (for slices, a multiple of it).
        expected: usize,
        /// Bytes the value has.
        actual: usize,
    },
    /// The value is not NUL-terminated text without inner NULs.
    NotAString,
    /// The value is not valid UTF-8.
    BadUtf8,
}

impl fmt::Display for PropError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropError::WrongSize { expected, actual } => {
                write!(f, "property value is {actual} bytes, expected {expected}")
            }
            PropError::NotAString => f.write_str("property value is not a NUL-terminated string"),
            PropError::BadUtf8 => f.write_str("property value is not UTF-8"),
        }
    }
}

impl core::error::Error for PropError {}
