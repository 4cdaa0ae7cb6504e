//! [`Fdt`]: a zero-copy FDT reader that validates the whole blob up front.
//!
//! [`Fdt::new`] checks the header, the block layout and every token of the
//! structure block (names terminated and legal, name offsets in range,
//! nesting within [`MAX_DEPTH`], properties before subnodes, one root, the
//! END token last). Afterwards iteration and lookup cannot meet malformed
//! data; they are still written without panicking paths, and stop early if
//! they ever did.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use super::{
    FDT_MAGIC, FDT_VERSION, HEADER_SIZE, MAX_DEPTH, TOKEN_BEGIN_NODE, TOKEN_END, TOKEN_END_NODE,
    TOKEN_NOP, TOKEN_PROP, is_node_name_char, is_prop_name_char,
};
use core::fmt;
use zerocopy::byteorder::big_endian::U32;
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

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
    /// The blob's version is not one this reader understands (it needs a v17
    /// layout: `version >= 17` and `last_comp_version <= 17`).
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
    /// The memory-reservation block has no `0, 0` terminator before the
    /// next block.
    UnterminatedReservations,
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
                "FDT version {version} (compatible back to {last_comp_version}) is not readable as v17"
            ),
            Misaligned(b) => write!(f, "FDT {b:?} block misaligned"),
            OutOfBounds(b) => write!(f, "FDT {b:?} block outside the blob"),
            Overlap(a, b) => write!(f, "FDT {a:?} and {b:?} blocks overlap"),
            UnterminatedReservations => f.write_str("FDT memory reservations not terminated"),
            UnterminatedName { offset } => write!(
                f,
                "FDT node name at structure offset {offset} not terminated"
            ),
            BadName { offset } => write!(f, "FDT invalid name at structure offset {offset}"),
            UnterminatedStrings => f.write_str("FDT strings block does not end with NUL"),
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
        }
    }
}

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

#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Header {
    magic: U32,
    totalsize: U32,
    off_dt_struct: U32,
    off_dt_strings: U32,
    off_mem_rsvmap: U32,
    version: U32,
    last_comp_version: U32,
    boot_cpuid_phys: U32,
    size_dt_strings: U32,
    size_dt_struct: U32,
}

/// A validated FDT blob borrowed from memory.
#[derive(Clone, Copy, Debug)]
pub struct Fdt<'a> {
    blob: &'a [u8],
    st: &'a [u8],
    strings: &'a str,
    rsv: &'a [u8],
    root_body: usize,
    boot_cpuid: u32,
}

/// One memory-reservation entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// Physical address.
    pub address: u64,
    /// Size in bytes.
    pub size: u64,
}

#[inline(always)]
fn be32(b: &[u8], off: usize) -> Option<u32> {
    let w = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([
        *w.first()?,
        *w.get(1)?,
        *w.get(2)?,
        *w.get(3)?,
    ]))
}

#[inline(always)]
fn be64(b: &[u8], off: usize) -> Option<u64> {
    Some((u64::from(be32(b, off)?) << 32) | u64::from(be32(b, off.checked_add(4)?)?))
}

/// Offset of the word after the NUL-terminated, 4-padded name at `off`, and
/// the name's length.
#[inline(always)]
fn skip_name(st: &[u8], off: usize) -> Option<(usize, usize)> {
    let mut w = off;
    loop {
        let x = u32::from_ne_bytes(st.get(w..w.checked_add(4)?)?.try_into().ok()?);
        // Word-at-a-time NUL search: names are padded with NULs to 4 bytes.
        if x.wrapping_sub(0x0101_0101) & !x & 0x8080_8080 != 0 {
            let word = st.get(w..w.checked_add(4)?)?;
            let i = word.iter().position(|&b| b == 0)?;
            return Some((w.checked_add(4)?, w.checked_sub(off)?.checked_add(i)?));
        }
        w = w.checked_add(4)?;
    }
}

#[inline(always)]
fn align4(n: usize) -> Option<usize> {
    Some(n.checked_add(3)? & !3)
}

impl<'a> Fdt<'a> {
    /// Validates `blob` completely and returns a reader over it. Bytes past
    /// the header's `totalsize` are ignored.
    pub fn new(blob: &'a [u8]) -> Result<Self, FdtError> {
        let (h, _) = Header::ref_from_prefix(blob).map_err(|_| FdtError::Truncated {
            needed: HEADER_SIZE,
            available: blob.len(),
        })?;
        if h.magic.get() != FDT_MAGIC {
            return Err(FdtError::BadMagic(h.magic.get()));
        }
        let (version, last) = (h.version.get(), h.last_comp_version.get());
        if version < FDT_VERSION || last > FDT_VERSION {
            return Err(FdtError::UnsupportedVersion {
                version,
                last_comp_version: last,
            });
        }
        let total = h.totalsize.get() as usize;
        let blob = blob.get(..total).ok_or(FdtError::Truncated {
            needed: total,
            available: blob.len(),
        })?;
        if total < HEADER_SIZE {
            return Err(FdtError::Truncated {
                needed: HEADER_SIZE,
                available: total,
            });
        }
        let region =
            |off: u32, size: u32, align: usize, b: Block| -> Result<(usize, usize), FdtError> {
                let (off, size) = (off as usize, size as usize);
                if !off.is_multiple_of(align) {
                    return Err(FdtError::Misaligned(b));
                }
                let end = off.checked_add(size).ok_or(FdtError::OutOfBounds(b))?;
                if off < HEADER_SIZE || end > total {
                    return Err(FdtError::OutOfBounds(b));
                }
                Ok((off, end))
            };
        let (st_off, st_end) = region(
            h.off_dt_struct.get(),
            h.size_dt_struct.get(),
            4,
            Block::Structure,
        )?;
        let (s_off, s_end) = region(
            h.off_dt_strings.get(),
            h.size_dt_strings.get(),
            1,
            Block::Strings,
        )?;
        if st_off < s_end && s_off < st_end {
            return Err(FdtError::Overlap(Block::Structure, Block::Strings));
        }
        // The reservation block runs to its terminator, which must come
        // before whichever block follows it (and before totalsize).
        let (rsv_off, _) = region(h.off_mem_rsvmap.get(), 0, 8, Block::Reservations)?;
        let limit = [st_off, s_off]
            .into_iter()
            .filter(|&o| o >= rsv_off)
            .min()
            .unwrap_or(total);
        let mut e = rsv_off;
        loop {
            let next = e
                .checked_add(16)
                .ok_or(FdtError::UnterminatedReservations)?;
            if next > limit {
                return Err(FdtError::UnterminatedReservations);
            }
            let (a, s) = (be64(blob, e), be64(blob, e.saturating_add(8)));
            e = next;
            if a == Some(0) && s == Some(0) {
                break;
            }
        }
        let rsv_region = (rsv_off, e);
        for (o, end, b) in [
            (st_off, st_end, Block::Structure),
            (s_off, s_end, Block::Strings),
        ] {
            if o < rsv_region.1 && rsv_region.0 < end && o != end {
                return Err(FdtError::Overlap(Block::Reservations, b));
            }
        }
        let st = blob
            .get(st_off..st_end)
            .ok_or(FdtError::OutOfBounds(Block::Structure))?;
        let sbytes = blob
            .get(s_off..s_end)
            .ok_or(FdtError::OutOfBounds(Block::Strings))?;
        if sbytes.last().is_some_and(|&b| b != 0) {
            return Err(FdtError::UnterminatedStrings);
        }
        let strings = core::str::from_utf8(sbytes).map_err(|_| FdtError::UnterminatedStrings)?;
        let rsv = blob
            .get(rsv_off..e.saturating_sub(16))
            .ok_or(FdtError::UnterminatedReservations)?;
        let root_body = validate(st, strings)?;
        Ok(Self {
            blob,
            st,
            strings,
            rsv,
            root_body,
            boot_cpuid: h.boot_cpuid_phys.get(),
        })
    }

    /// The blob, `totalsize` bytes long.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.blob
    }

    /// `boot_cpuid_phys` from the header.
    pub fn boot_cpuid_phys(&self) -> u32 {
        self.boot_cpuid
    }

    /// The memory-reservation entries (without the terminator).
    pub fn reservations(&self) -> impl Iterator<Item = Reservation> + 'a {
        self.rsv.chunks_exact(16).filter_map(|c| {
            Some(Reservation {
                address: be64(c, 0)?,
                size: be64(c, 8)?,
            })
        })
    }

    /// The root node.
    pub fn root(&self) -> Node<'a> {
        Node {
            st: self.st,
            strings: self.strings,
            name: "",
            body: self.root_body,
        }
    }

    /// The node at an absolute `path` such as `/kho/memfd`. A component
    /// without `@` also matches a node whose name is that component followed
    /// by a unit address.
    pub fn find_node(&self, path: &str) -> Option<Node<'a>> {
        let rest = path.strip_prefix('/')?;
        let mut node = self.root();
        for comp in rest.split('/').filter(|c| !c.is_empty()) {
            node = node.child(comp)?;
        }
        Some(node)
    }

    /// The property `name` of the node at `path`.
    pub fn find_property(&self, path: &str, name: &str) -> Option<Property<'a>> {
        self.find_node(path)?.property(name)
    }
}

/// Walks the whole structure block once; returns the offset of the root's
/// body (the token after its name).
fn validate(st: &[u8], strings: &str) -> Result<usize, FdtError> {
    let mut off = 0usize;
    let mut depth = 0usize;
    let mut has_child: u64 = 0;
    let mut root_body = None;
    let mut root_done = false;
    loop {
        let offset = off;
        let token = be32(st, off).ok_or(FdtError::MissingEnd)?;
        match token {
            TOKEN_BEGIN_NODE => {
                let name_at = off.checked_add(4).ok_or(FdtError::MissingEnd)?;
                let (next, len) =
                    skip_name(st, name_at).ok_or(FdtError::UnterminatedName { offset })?;
                let name = st
                    .get(name_at..name_at.saturating_add(len))
                    .ok_or(FdtError::UnterminatedName { offset })?;
                if depth == 0 {
                    if root_done {
                        return Err(FdtError::UnexpectedToken { offset, token });
                    }
                    // Old blobs name the root "/"; accept that too.
                    if !(name.is_empty() || name == b"/") {
                        return Err(FdtError::BadName { offset });
                    }
                    root_body = Some(next);
                } else {
                    let ats = name.iter().filter(|&&c| c == b'@').count();
                    if name.is_empty() || ats > 1 || !name.iter().all(|&c| is_node_name_char(c)) {
                        return Err(FdtError::BadName { offset });
                    }
                    has_child |= 1u64 << (depth.saturating_sub(1) % 64);
                }
                if depth >= MAX_DEPTH {
                    return Err(FdtError::TooDeep { offset });
                }
                has_child &= !(1u64 << (depth % 64));
                depth = depth.saturating_add(1);
                off = next;
            }
            TOKEN_END_NODE => {
                if depth == 0 {
                    return Err(FdtError::UnexpectedToken { offset, token });
                }
                depth = depth.saturating_sub(1);
                root_done |= depth == 0;
                off = off.saturating_add(4);
            }
            TOKEN_PROP => {
                let bad = FdtError::ValueOutOfBounds { offset };
                if depth == 0 || has_child & (1u64 << (depth.saturating_sub(1) % 64)) != 0 {
                    return Err(FdtError::UnexpectedToken { offset, token });
                }
                let len = be32(st, off.saturating_add(4)).ok_or(bad)? as usize;
                let nameoff = be32(st, off.saturating_add(8)).ok_or(bad)?;
                let value_at = off.checked_add(12).ok_or(bad)?;
                let next = value_at.checked_add(align4(len).ok_or(bad)?).ok_or(bad)?;
                if value_at.checked_add(len).is_none_or(|e| e > st.len()) {
                    return Err(bad);
                }
                let bad_off = FdtError::BadNameOffset { offset, nameoff };
                let no = nameoff as usize;
                if no >= strings.len() || !strings.is_char_boundary(no) {
                    return Err(bad_off);
                }
                let name = strings
                    .get(no..)
                    .and_then(|s| s.split('\0').next())
                    .ok_or(bad_off)?;
                if name.is_empty() || !name.bytes().all(is_prop_name_char) {
                    return Err(FdtError::BadName { offset });
                }
                off = next;
            }
            TOKEN_NOP => off = off.saturating_add(4),
            TOKEN_END => {
                if depth != 0 {
                    return Err(FdtError::EarlyEnd { offset });
                }
                if off.saturating_add(4) != st.len() {
                    return Err(FdtError::DataAfterEnd);
                }
                return root_body.ok_or(FdtError::NoRoot);
            }
            _ => return Err(FdtError::UnexpectedToken { offset, token }),
        }
        if off > st.len() {
            return Err(FdtError::MissingEnd);
        }
    }
}

/// A node of a validated [`Fdt`].
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    st: &'a [u8],
    strings: &'a str,
    name: &'a str,
    /// Offset of the first token after the node's name.
    body: usize,
}

/// A property of a node: its name and value, borrowed from the blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Property<'a> {
    /// The property's name.
    pub name: &'a str,
    /// The raw value.
    pub value: &'a [u8],
}

/// One token of the structure block, decoded.
enum Tok<'a> {
    Begin {
        name: &'a [u8],
        body: usize,
    },
    End,
    Prop {
        nameoff: usize,
        value: &'a [u8],
        next: usize,
    },
    Other,
}

#[inline(always)]
fn token(st: &[u8], off: usize) -> Option<(Tok<'_>, usize)> {
    // Skips NOPs; returns the token and the offset after it.
    let mut off = off;
    loop {
        match be32(st, off)? {
            TOKEN_NOP => off = off.checked_add(4)?,
            TOKEN_PROP => {
                let len = be32(st, off.checked_add(4)?)? as usize;
                let nameoff = be32(st, off.checked_add(8)?)? as usize;
                let v = off.checked_add(12)?;
                let value = st.get(v..v.checked_add(len)?)?;
                let next = v.checked_add(align4(len)?)?;
                return Some((
                    Tok::Prop {
                        nameoff,
                        value,
                        next,
                    },
                    next,
                ));
            }
            TOKEN_BEGIN_NODE => {
                let n = off.checked_add(4)?;
                let (body, len) = skip_name(st, n)?;
                let name = st.get(n..n.checked_add(len)?)?;
                return Some((Tok::Begin { name, body }, body));
            }
            TOKEN_END_NODE => return Some((Tok::End, off.checked_add(4)?)),
            _ => return Some((Tok::Other, off)),
        }
    }
}

/// Offset just past the END_NODE closing the node whose body starts at `off`.
fn skip_subtree(st: &[u8], mut off: usize) -> Option<usize> {
    let mut depth = 1u32;
    loop {
        match be32(st, off)? {
            TOKEN_PROP => {
                let len = be32(st, off.checked_add(4)?)? as usize;
                off = off.checked_add(12)?.checked_add(align4(len)?)?;
            }
            TOKEN_BEGIN_NODE => {
                off = skip_name(st, off.checked_add(4)?)?.0;
                depth = depth.checked_add(1)?;
            }
            TOKEN_END_NODE => {
                off = off.checked_add(4)?;
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(off);
                }
            }
            TOKEN_NOP => off = off.checked_add(4)?,
            _ => return None,
        }
    }
}

fn name_at(strings: &str, off: usize) -> &str {
    strings
        .get(off..)
        .and_then(|s| s.split('\0').next())
        .unwrap_or("")
}

impl<'a> Node<'a> {
    /// The node's name with its unit address (`""` for the root).
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The node's properties, in blob order.
    pub fn properties(&self) -> impl Iterator<Item = Property<'a>> + 'a {
        let (st, strings) = (self.st, self.strings);
        let mut off = self.body;
        core::iter::from_fn(move || match token(st, off)? {
            (
                Tok::Prop {
                    nameoff,
                    value,
                    next,
                },
                _,
            ) => {
                off = next;
                Some(Property {
                    name: name_at(strings, nameoff),
                    value,
                })
            }
            _ => None,
        })
    }

    /// The property called `name`.
    pub fn property(&self, name: &str) -> Option<Property<'a>> {
        let (st, strings) = (self.st, self.strings.as_bytes());
        let want = name.as_bytes();
        let mut off = self.body;
        loop {
            match token(st, off)? {
                (
                    Tok::Prop {
                        nameoff,
                        value,
                        next,
                    },
                    _,
                ) => {
                    let s = strings.get(nameoff..)?;
                    if s.starts_with(want) && s.get(want.len()) == Some(&0) {
                        return Some(Property {
                            name: name_at(self.strings, nameoff),
                            value,
                        });
                    }
                    off = next;
                }
                _ => return None,
            }
        }
    }

    /// The node's children, in blob order.
    pub fn children(&self) -> impl Iterator<Item = Node<'a>> + 'a {
        let (st, strings) = (self.st, self.strings);
        let mut off = Some(self.body);
        core::iter::from_fn(move || {
            loop {
                let (t, next) = token(st, off?)?;
                match t {
                    Tok::Prop { .. } => off = Some(next),
                    Tok::Begin { name, body } => {
                        off = skip_subtree(st, body);
                        return Some(Node {
                            st,
                            strings,
                            name: core::str::from_utf8(name).unwrap_or(""),
                            body,
                        });
                    }
                    Tok::End | Tok::Other => return None,
                }
            }
        })
    }

    /// The child called `name` (a name without `@` also matches a child with
    /// a unit address).
    pub fn child(&self, name: &str) -> Option<Node<'a>> {
        let st = self.st;
        let want = name.as_bytes();
        let exact = want.contains(&b'@');
        let mut off = self.body;
        loop {
            let (t, next) = token(st, off)?;
            match t {
                Tok::Prop { .. } => off = next,
                Tok::Begin { name: n, body } => {
                    let hit = n == want
                        || (!exact && n.starts_with(want) && n.get(want.len()) == Some(&b'@'));
                    if hit {
                        return Some(Node {
                            st,
                            strings: self.strings,
                            name: core::str::from_utf8(n).unwrap_or(""),
                            body,
                        });
                    }
                    off = skip_subtree(st, body)?;
                }
                Tok::End | Tok::Other => return None,
            }
        }
    }
}

/// The strings of a string-list property.
pub type StrList<'a> = core::str::Split<'a, char>;

impl<'a> Property<'a> {
    fn sized<const N: usize>(&self) -> Result<[u8; N], PropError> {
        self.value.try_into().map_err(|_| PropError::WrongSize {
            expected: N,
            actual: self.value.len(),
        })
    }

    /// The value as one big-endian cell.
    pub fn as_u32(&self) -> Result<u32, PropError> {
        self.sized::<4>().map(u32::from_be_bytes)
    }

    /// The value as two big-endian cells.
    pub fn as_u64(&self) -> Result<u64, PropError> {
        self.sized::<8>().map(u64::from_be_bytes)
    }

    /// The value as one NUL-terminated UTF-8 string.
    pub fn as_str(&self) -> Result<&'a str, PropError> {
        let (last, body) = self.value.split_last().ok_or(PropError::NotAString)?;
        if *last != 0 || body.contains(&0) {
            return Err(PropError::NotAString);
        }
        core::str::from_utf8(body).map_err(|_| PropError::BadUtf8)
    }

    /// The value as a list of NUL-terminated UTF-8 strings.
    pub fn as_str_list(&self) -> Result<StrList<'a>, PropError> {
        let (last, body) = self.value.split_last().ok_or(PropError::NotAString)?;
        if *last != 0 {
            return Err(PropError::NotAString);
        }
        let s = core::str::from_utf8(body).map_err(|_| PropError::BadUtf8)?;
        Ok(s.split('\0'))
    }

    /// The value as a reference to a zerocopy struct, without copying. The
    /// type must be `Unaligned` (build it from zerocopy's byte-order types)
    /// because FDT values are only 4-byte aligned.
    pub fn as_struct<T: FromBytes + KnownLayout + Immutable + Unaligned>(
        &self,
    ) -> Result<&'a T, PropError> {
        T::ref_from_bytes(self.value).map_err(|_| PropError::WrongSize {
            expected: core::mem::size_of::<T>(),
            actual: self.value.len(),
        })
    }

    /// The value as a slice of zerocopy structs, without copying.
    pub fn as_slice_of<T: FromBytes + Immutable + Unaligned>(&self) -> Result<&'a [T], PropError> {
        <[T]>::ref_from_bytes(self.value).map_err(|_| PropError::WrongSize {
            expected: core::mem::size_of::<T>(),
            actual: self.value.len(),
        })
    }
}
