//! [`FdtWriter`]: builds an FDT v17 blob in a caller-given buffer.

use super::validate::{Names, Siblings, name_hash};
use super::{
    FDT_LAST_COMP_VERSION, FDT_MAGIC, FDT_VERSION, HEADER_SIZE, MAX_DEPTH, TOKEN_BEGIN_NODE,
    TOKEN_END, TOKEN_END_NODE, TOKEN_PROP, is_node_name_char, is_prop_name_char,
};
use core::fmt;
use zerocopy::{Immutable, IntoBytes};

/// Why a blob could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The buffer is too small; at least `needed` bytes would be required
    /// for what was written so far plus the failed item.
    NoSpace {
        /// A lower bound on the buffer size needed.
        needed: usize,
    },
    /// A memory reservation was added after the first node.
    ReservationAfterNodes,
    /// A memory reservation of size 0: it would read as the list's end.
    EmptyReservation,
    /// A memory reservation whose end does not fit in 64 bits.
    ReservationWraps,
    /// A property with the same name as an earlier one of the same node.
    DuplicateProperty,
    /// A node with the same name (unit address included) as a sibling.
    DuplicateNode,
    /// A property or `end_node` with no node open.
    NoOpenNode,
    /// A property after a subnode of the same node (FDT wants properties
    /// first).
    PropertyAfterSubnode,
    /// A second root node, or a node after the root was closed.
    SecondRoot,
    /// The root node must have the empty name.
    RootName,
    /// A node name is empty or has a character dtc does not accept.
    BadNodeName,
    /// A property name is empty or has a character dtc does not accept.
    BadPropertyName,
    /// The property name is reserved for the writer ([`SKIP_HINT`]).
    ///
    /// [`SKIP_HINT`]: super::SKIP_HINT
    ReservedName,
    /// Nodes nested deeper than [`MAX_DEPTH`](super::MAX_DEPTH).
    TooDeep,
    /// `finish` before the root node was opened and closed.
    Unfinished,
    /// A property value, or the whole blob, larger than `u32::MAX` bytes.
    ValueTooLarge,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::NoSpace { needed } => {
                write!(f, "FDT buffer too small: need at least {needed} bytes")
            }
            WriteError::ReservationAfterNodes => {
                f.write_str("memory reservations must come before the first node")
            }
            WriteError::EmptyReservation => f.write_str("memory reservation of size 0"),
            WriteError::ReservationWraps => {
                f.write_str("memory reservation ends past the 64-bit address space")
            }
            WriteError::DuplicateProperty => {
                f.write_str("the node already has a property of that name")
            }
            WriteError::DuplicateNode => f.write_str("the node already has a child of that name"),
            WriteError::NoOpenNode => f.write_str("no node is open"),
            WriteError::PropertyAfterSubnode => {
                f.write_str("a node's properties must come before its subnodes")
            }
            WriteError::SecondRoot => f.write_str("only one root node is allowed"),
            WriteError::RootName => f.write_str("the root node must have the empty name"),
            WriteError::BadNodeName => f.write_str(
                "node name is empty, starts with @ or has a character outside a-zA-Z0-9,._+-@",
            ),
            WriteError::BadPropertyName => {
                f.write_str("property name is empty or has a character outside a-zA-Z0-9,._+-*#?")
            }
            WriteError::ReservedName => write!(
                f,
                "property name {} is reserved for skip hints",
                super::SKIP_HINT
            ),
            WriteError::TooDeep => write!(f, "nodes nested deeper than {MAX_DEPTH}"),
            WriteError::Unfinished => f.write_str("the root node was not opened and closed"),
            WriteError::ValueTooLarge => f.write_str("property value longer than 4 GiB"),
        }
    }
}

impl core::error::Error for WriteError {}

/// Slots of the name-deduplication hash table.
const DEDUP_SLOTS: usize = 1024;
/// Past this many names, new names are found by a linear scan instead.
const DEDUP_MAX: usize = DEDUP_SLOTS * 3 / 4;

/// Builds an FDT v17 blob in a borrowed buffer, without allocating.
///
/// Call [`reserve_memory`](Self::reserve_memory) first (if at all), then
/// build exactly one tree starting with the root node (`begin_node("")`),
/// each node's properties before its subnodes, and finally
/// [`finish`](Self::finish). Every method fails with a [`WriteError`] rather
/// than panicking; after an error the writer should be dropped.
///
/// Property names are deduplicated in the strings block. Integer helpers
/// write big-endian cells as the devicetree convention wants;
/// [`property_struct`](Self::property_struct) writes a zerocopy struct's
/// bytes as they are (`kho` payloads use little-endian zerocopy types).
pub struct FdtWriter<'a> {
    buf: &'a mut [u8],
    /// Start of the structure block, once the first node began.
    struct_start: Option<usize>,
    /// End of the structure block so far.
    pos: usize,
    /// Where the strings block currently sits, and its length.
    str_at: usize,
    str_len: usize,
    depth: usize,
    /// Bit `d` set: the open node at depth `d` already has a subnode.
    has_child: u64,
    root_done: bool,
    names: usize,
    dedup: [u32; DEDUP_SLOTS],
    /// Whether nodes get a skip hint.
    hints: bool,
    /// Per open node: where its BEGIN_NODE token starts, where its skip
    /// hint's value is (0 if none), and where its body starts.
    open: [(u32, u32, u32); MAX_DEPTH],
    /// Per open node: the names of its children so far (the fallback of
    /// `siblings`).
    children: [Names; MAX_DEPTH],
    /// Every node's children's names, exactly, until it fills.
    siblings: Siblings,
    /// Bit `d`: the open node at depth `d` has its children in `siblings`.
    indexed: u64,
    /// The innermost node's property names: a 64-bit filter of their
    /// offsets in the strings block.
    props: u64,
}

impl<'a> FdtWriter<'a> {
    /// A writer over `buf`; fails if `buf` cannot hold even an empty tree.
    pub fn new(buf: &'a mut [u8]) -> Result<Self, WriteError> {
        // Header, the reservation terminator, root begin/end and END.
        const MIN: usize = HEADER_SIZE + 16 + 8 + 4 + 4;
        if buf.len() < MIN {
            return Err(WriteError::NoSpace { needed: MIN });
        }
        let len = buf.len();
        Ok(Self {
            buf,
            struct_start: None,
            pos: HEADER_SIZE,
            str_at: len,
            str_len: 0,
            depth: 0,
            has_child: 0,
            root_done: false,
            names: 0,
            dedup: [0; DEDUP_SLOTS],
            hints: false,
            open: [(0, 0, 0); MAX_DEPTH],
            children: [Names::default(); MAX_DEPTH],
            siblings: Siblings::new(),
            indexed: 0,
            props: 0,
        })
    }

    /// A writer that gives every node but the root a [`SKIP_HINT`]
    /// property, so readers can skip the node's subtree in one step.
    ///
    /// [`SKIP_HINT`]: super::SKIP_HINT
    #[cfg(any(test, feature = "tools"))]
    pub fn with_skip_hints(buf: &'a mut [u8]) -> Result<Self, WriteError> {
        let mut w = Self::new(buf)?;
        w.hints = true;
        Ok(w)
    }

    /// Adds a memory-reservation entry. Only before the first node, and
    /// never of size 0 (an entry of size 0 at address 0 ends the list).
    pub fn reserve_memory(&mut self, address: u64, size: u64) -> Result<(), WriteError> {
        if self.struct_start.is_some() {
            return Err(WriteError::ReservationAfterNodes);
        }
        if size == 0 {
            return Err(WriteError::EmptyReservation);
        }
        if address.checked_add(size.saturating_sub(1)).is_none() {
            return Err(WriteError::ReservationWraps);
        }
        self.reserve_struct(16)?;
        self.put(&address.to_be_bytes());
        self.put(&size.to_be_bytes());
        Ok(())
    }

    /// Opens a node: the root (`""`) first, then children of the open node.
    pub fn begin_node(&mut self, name: &str) -> Result<(), WriteError> {
        if self.struct_start.is_none() {
            // Terminate the reservation block; the structure block follows.
            self.reserve_struct(16)?;
            self.put(&[0; 16]);
            self.struct_start = Some(self.pos);
        }
        if self.depth == 0 {
            if self.root_done {
                return Err(WriteError::SecondRoot);
            }
            if !name.is_empty() {
                return Err(WriteError::RootName);
            }
        } else {
            let n = name.as_bytes();
            let at = n.iter().filter(|&&c| c == b'@').count();
            if n.is_empty() || n[0] == b'@' || at > 1 || !n.iter().all(|&c| is_node_name_char(c)) {
                return Err(WriteError::BadNodeName);
            }
        }
        if self.depth >= MAX_DEPTH {
            return Err(WriteError::TooDeep);
        }
        if u32::try_from(self.pos).is_err() {
            return Err(WriteError::ValueTooLarge);
        }
        if self.depth > 0 {
            let parent = self.depth - 1;
            // As the reader does: the filter alone for a narrow node; at
            // its first hit, the node's children so far go into the exact
            // set, which answers for it from then on.
            let h = name_hash(name.as_bytes());
            let in_filter = self.children[parent].insert(h);
            let bit = 1u64 << parent;
            let begin = self.open[parent].0 as usize;
            if in_filter && self.indexed & bit == 0 {
                self.indexed |= bit;
                let body = self.open[parent].2 as usize;
                let written = self.written();
                super::validate::index_children_of(
                    &self.buf[written],
                    &mut self.siblings,
                    begin,
                    body,
                );
            }
            let maybe = if self.indexed & bit != 0 {
                self.siblings.insert(begin, h).unwrap_or(in_filter)
            } else {
                false
            };
            if maybe {
                let body = self.open[parent].2 as usize;
                if super::validate::has_child(&self.buf[self.written()], body, name.as_bytes()) {
                    return Err(WriteError::DuplicateNode);
                }
            }
        }
        let hint = self.hints && self.depth > 0;
        let hint_name = if hint {
            let n = super::SKIP_HINT.as_bytes();
            Some(self.intern(n, name_hash(n))?)
        } else {
            None
        };
        let padded = (name.len() + 1).next_multiple_of(4);
        self.reserve_struct(4 + padded + if hint { 16 } else { 0 })?;
        let begin = self.pos as u32;
        self.put(&TOKEN_BEGIN_NODE.to_be_bytes());
        self.put(name.as_bytes());
        self.put_zeros(padded - name.len());
        let mut hint_at = 0;
        if let Some(nameoff) = hint_name {
            self.put(&TOKEN_PROP.to_be_bytes());
            self.put(&4u32.to_be_bytes());
            self.put(&nameoff.to_be_bytes());
            hint_at = self.pos as u32;
            self.put(&[0; 4]); // patched by end_node
        }
        if self.depth > 0 {
            self.has_child |= 1 << (self.depth - 1);
        }
        self.has_child &= !(1u64 << self.depth);
        let body = self.rel(begin as usize + 4 + padded);
        self.open[self.depth] = (begin, hint_at, body);
        self.indexed &= !(1u64 << self.depth);
        self.children[self.depth] = Names::default();
        self.props = 0;
        self.depth += 1;
        Ok(())
    }

    /// Closes the innermost open node.
    pub fn end_node(&mut self) -> Result<(), WriteError> {
        if self.depth == 0 {
            return Err(WriteError::NoOpenNode);
        }
        self.reserve_struct(4)?;
        self.put(&TOKEN_END_NODE.to_be_bytes());
        self.depth -= 1;
        let (begin, hint_at, _) = self.open[self.depth];
        if hint_at != 0 {
            let size = self.pos as u32 - begin;
            let at = hint_at as usize;
            self.buf[at..at + 4].copy_from_slice(&size.to_be_bytes());
        }
        if self.depth == 0 {
            self.root_done = true;
        }
        Ok(())
    }

    /// Adds a property with raw bytes as its value.
    pub fn property(&mut self, name: &str, value: &[u8]) -> Result<(), WriteError> {
        self.property_parts(name, &[value])
    }

    /// Adds a property with no value (a flag).
    pub fn property_empty(&mut self, name: &str) -> Result<(), WriteError> {
        self.property_parts(name, &[])
    }

    /// Adds a one-cell property (big-endian `u32`).
    pub fn property_u32(&mut self, name: &str, value: u32) -> Result<(), WriteError> {
        self.property(name, &value.to_be_bytes())
    }

    /// Adds a two-cell property (big-endian `u64`).
    pub fn property_u64(&mut self, name: &str, value: u64) -> Result<(), WriteError> {
        self.property(name, &value.to_be_bytes())
    }

    /// Adds a string property (NUL-terminated).
    pub fn property_string(&mut self, name: &str, value: &str) -> Result<(), WriteError> {
        self.property_parts(name, &[value.as_bytes(), &[0]])
    }

    /// Adds a string-list property: each string NUL-terminated, concatenated.
    pub fn property_string_list(&mut self, name: &str, values: &[&str]) -> Result<(), WriteError> {
        let len: usize = values.iter().map(|s| s.len() + 1).sum();
        self.begin_property(name, len)?;
        for s in values {
            self.put(s.as_bytes());
            self.put(&[0]);
        }
        self.put_zeros(len.next_multiple_of(4) - len);
        Ok(())
    }

    /// Adds a property holding the bytes of a zerocopy value, as they are in
    /// memory (use zerocopy's little-endian types for `kho` payloads).
    pub fn property_struct<T: IntoBytes + Immutable + ?Sized>(
        &mut self,
        name: &str,
        value: &T,
    ) -> Result<(), WriteError> {
        self.property(name, value.as_bytes())
    }

    #[inline(always)]
    fn property_parts(&mut self, name: &str, parts: &[&[u8]]) -> Result<(), WriteError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.begin_property(name, len)?;
        for p in parts {
            self.put(p);
        }
        self.put_zeros(len.next_multiple_of(4) - len);
        Ok(())
    }

    /// Checks state, interns the name and writes the property header; the
    /// caller writes `len` value bytes and the padding, already reserved.
    #[inline(always)]
    fn begin_property(&mut self, name: &str, len: usize) -> Result<(), WriteError> {
        if self.depth == 0 {
            return Err(WriteError::NoOpenNode);
        }
        if self.has_child & (1 << (self.depth - 1)) != 0 {
            return Err(WriteError::PropertyAfterSubnode);
        }
        let len32 = u32::try_from(len).map_err(|_| WriteError::ValueTooLarge)?;
        if name.is_empty() || !name.bytes().all(is_prop_name_char) {
            return Err(WriteError::BadPropertyName);
        }
        if name == super::SKIP_HINT {
            return Err(WriteError::ReservedName);
        }
        let nameoff = self.intern(name.as_bytes(), name_hash(name.as_bytes()))?;
        // Names are deduplicated exactly, so the offset is the name: the
        // node's filter keys on it, and a hit compares offsets.
        let k = nameoff.wrapping_mul(0x9e37_79b1);
        let m = (1u64 << (k >> 26)) | (1u64 << ((k >> 20) & 63));
        if self.props & m == m {
            let body = self.open[self.depth - 1].2 as usize;
            if super::validate::has_nameoff(&self.buf[self.written()], body, nameoff) {
                return Err(WriteError::DuplicateProperty);
            }
        }
        self.props |= m;
        self.reserve_struct(12 + len.next_multiple_of(4))?;
        self.put(&TOKEN_PROP.to_be_bytes());
        self.put(&len32.to_be_bytes());
        self.put(&nameoff.to_be_bytes());
        Ok(())
    }

    /// Offset `at` of the buffer as an offset in the structure block.
    fn rel(&self, at: usize) -> u32 {
        (at - self.struct_start.unwrap_or(at)) as u32
    }

    /// Where the structure block written so far lies in the buffer.
    fn written(&self) -> core::ops::Range<usize> {
        self.struct_start.unwrap_or(self.pos)..self.pos
    }

    /// Offset of `name` (whose [`name_hash`] is `h`) in the strings block,
    /// adding it if new.
    fn intern(&mut self, name: &[u8], h: u32) -> Result<u32, WriteError> {
        let mut slot = h as usize % DEDUP_SLOTS;
        loop {
            let entry = self.dedup[slot];
            if entry == 0 {
                break;
            }
            let off = entry as usize - 1;
            if self.string_at(off) == name {
                return Ok(off as u32);
            }
            slot = (slot + 1) % DEDUP_SLOTS;
        }
        // Not in the table: when the table is full, scan the block.
        if self.names >= DEDUP_MAX {
            let block = &self.buf[self.str_at..self.str_at + self.str_len];
            let mut off = 0;
            for s in block.split(|&b| b == 0) {
                if s == name && off < self.str_len {
                    return Ok(off as u32);
                }
                off += s.len() + 1;
            }
        }
        let off = self.str_len;
        let need = name.len() + 1;
        if self.str_at + self.str_len + need > self.buf.len() {
            self.rebalance(0, need)?;
        }
        let at = self.str_at + self.str_len;
        self.buf[at..at + name.len()].copy_from_slice(name);
        self.buf[at + name.len()] = 0;
        self.str_len += need;
        if self.names < DEDUP_MAX {
            self.dedup[slot] = off as u32 + 1;
            self.names += 1;
        }
        Ok(off as u32)
    }

    fn string_at(&self, off: usize) -> &[u8] {
        let s = &self.buf[self.str_at + off..self.str_at + self.str_len];
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        &s[..end]
    }

    /// Makes room for `more_struct` structure bytes (plus the END token,
    /// always kept in reserve) and `more_str` string bytes, by moving the
    /// strings block to the middle of the free space. Moves are amortized:
    /// each leaves half the free space on either side.
    #[cold]
    #[inline(never)]
    fn rebalance(&mut self, more_struct: usize, more_str: usize) -> Result<(), WriteError> {
        let used = self.pos + more_struct + 4 + self.str_len + more_str;
        let free = self
            .buf
            .len()
            .checked_sub(used)
            .ok_or(WriteError::NoSpace { needed: used })?;
        let new_at = self.pos + more_struct + 4 + free / 2;
        self.buf
            .copy_within(self.str_at..self.str_at + self.str_len, new_at);
        self.str_at = new_at;
        Ok(())
    }

    #[inline(always)]
    fn reserve_struct(&mut self, n: usize) -> Result<(), WriteError> {
        if self.pos + n > self.str_at {
            self.rebalance(n, 0)?;
        }
        Ok(())
    }

    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }

    #[inline(always)]
    fn put_zeros(&mut self, n: usize) {
        self.buf[self.pos..self.pos + n].fill(0);
        self.pos += n;
    }

    /// Writes the END token, moves the strings block into place and fills
    /// in the header. Returns the blob's size: the first that many bytes of
    /// the buffer.
    pub fn finish(self) -> Result<usize, WriteError> {
        self.finish_into().map(|(n, _)| n)
    }

    /// Like [`FdtWriter::finish`], and gives the buffer back (to patch a
    /// value in place, such as a checksum over the finished blob).
    pub(crate) fn finish_into(mut self) -> Result<(usize, &'a mut [u8]), WriteError> {
        let Some(struct_start) = self.struct_start else {
            return Err(WriteError::Unfinished);
        };
        if !self.root_done || self.depth != 0 {
            return Err(WriteError::Unfinished);
        }
        if self.pos + 4 > self.str_at {
            self.rebalance(0, 0)?;
        }
        self.put(&TOKEN_END.to_be_bytes());
        let strings_off = self.pos;
        self.buf
            .copy_within(self.str_at..self.str_at + self.str_len, strings_off);
        let total = strings_off + self.str_len;
        if u32::try_from(total).is_err() {
            return Err(WriteError::ValueTooLarge);
        }
        let words = [
            FDT_MAGIC,
            total as u32,
            struct_start as u32,
            strings_off as u32,
            HEADER_SIZE as u32,
            FDT_VERSION,
            FDT_LAST_COMP_VERSION,
            0,
            self.str_len as u32,
            (strings_off - struct_start) as u32,
        ];
        for (i, w) in words.iter().enumerate() {
            self.buf[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        Ok((total, self.buf))
    }
}
