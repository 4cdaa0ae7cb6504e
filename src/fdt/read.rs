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

pub use super::error::{Block, FdtError, PropError};
use super::{
    AT_CHAR, FDT_LAST_COMP_VERSION, FDT_MAGIC, FDT_VERSION, HEADER_SIZE, MAX_DEPTH, NAME_CHARS,
    NODE_CHAR, SKIP_HINT, TOKEN_BEGIN_NODE, TOKEN_END, TOKEN_END_NODE, TOKEN_NOP, TOKEN_PROP,
    is_prop_name_char,
};
use zerocopy::byteorder::big_endian::U32;
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

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
    st: St<'a>,
    strings: &'a str,
    rsv: &'a [u8],
    root_body: usize,
    boot_cpuid: u32,
    /// Name offset of the validated skip hints (`NO_HINT` if none).
    hint: u32,
}

const NO_HINT: u32 = u32::MAX;

/// One memory-reservation entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// Physical address.
    pub address: u64,
    /// Size in bytes.
    pub size: u64,
}

/// The structure block, as bytes and as big-endian words (it is 4-byte
/// aligned within the blob and a whole number of words long). Token reads go
/// through the words: one bounds check, one load.
#[derive(Clone, Copy, Debug)]
struct St<'a> {
    bytes: &'a [u8],
    words: &'a [U32],
}

impl<'a> St<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self, FdtError> {
        let words =
            <[U32]>::ref_from_bytes(bytes).map_err(|_| FdtError::Misaligned(Block::Structure))?;
        Ok(Self { bytes, words })
    }

    #[inline(always)]
    fn word(&self, off: usize) -> Option<u32> {
        Some(self.words.get(off >> 2)?.get())
    }

    #[inline(always)]
    fn get(&self, r: core::ops::Range<usize>) -> Option<&'a [u8]> {
        self.bytes.get(r)
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Offset of the word after the NUL-terminated, NUL-padded name at the
    /// 4-aligned `off`, and the name's length.
    #[inline(always)]
    fn skip_name(&self, off: usize) -> Option<(usize, usize)> {
        let mut i = off >> 2;
        loop {
            // The word's bytes in memory order, read as little-endian, so
            // that the lowest flagged byte is the first NUL in memory (the
            // zero-byte trick can only flag false bytes above a real one).
            let x = u32::from_le_bytes(self.words.get(i)?.get().to_be_bytes());
            let z = x.wrapping_sub(0x0101_0101) & !x & 0x8080_8080;
            if z != 0 {
                let end = i
                    .checked_mul(4)?
                    .checked_add((z.trailing_zeros() / 8) as usize)?;
                return Some((i.checked_add(1)?.checked_mul(4)?, end.checked_sub(off)?));
            }
            i = i.checked_add(1)?;
        }
    }
}

#[inline(always)]
fn be64(b: &[u8], off: usize) -> Option<u64> {
    let w: [u8; 8] = b.get(off..off.wrapping_add(8))?.try_into().ok()?;
    Some(u64::from_be_bytes(w))
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
        if version < FDT_LAST_COMP_VERSION || last > FDT_VERSION {
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
        // Version 16 has no `size_dt_struct`: its header is one word
        // shorter, and the structure block's size is found by walking it.
        let v16 = version < FDT_VERSION;
        let header_len = if v16 { HEADER_SIZE - 4 } else { HEADER_SIZE };
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
                if off < header_len || end > total {
                    return Err(FdtError::OutOfBounds(b));
                }
                Ok((off, end))
            };
        let st_size = if v16 {
            // Up to whichever block follows, or the end; the walk below
            // finds the END token and trims the block to it.
            let o = h.off_dt_struct.get();
            let next = [h.off_mem_rsvmap.get(), h.off_dt_strings.get()]
                .into_iter()
                .filter(|&x| x > o)
                .min()
                .unwrap_or(h.totalsize.get());
            next.saturating_sub(o) & !3
        } else {
            h.size_dt_struct.get()
        };
        let (st_off, st_end) = region(h.off_dt_struct.get(), st_size, 4, Block::Structure)?;
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
        // The list ends at the first entry of size 0, whatever its address,
        // as in dtc, libfdt and Linux.
        let mut e = rsv_off;
        let mut index = 0usize;
        loop {
            let next = e
                .checked_add(16)
                .ok_or(FdtError::UnterminatedReservations)?;
            if next > limit {
                return Err(FdtError::UnterminatedReservations);
            }
            let (a, s) = (be64(blob, e), be64(blob, e.saturating_add(8)));
            e = next;
            match (a, s) {
                (Some(_), Some(0)) => break,
                // It may end exactly at 2^64 (dtc and libfdt read that),
                // not past it.
                (Some(a), Some(s)) if a.checked_add(s.saturating_sub(1)).is_some() => {}
                _ => return Err(FdtError::BadReservation { index }),
            }
            index = index.saturating_add(1);
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
        let st = St::new(
            blob.get(st_off..st_end)
                .ok_or(FdtError::OutOfBounds(Block::Structure))?,
        )?;
        let sbytes = blob
            .get(s_off..s_end)
            .ok_or(FdtError::OutOfBounds(Block::Strings))?;
        if sbytes.last().is_some_and(|&b| b != 0) {
            return Err(FdtError::UnterminatedStrings);
        }
        // Every byte is a NUL or a legal name character: then any offset
        // that does not point at a NUL starts a legal, terminated name (FDT
        // lets offsets share the tail of a longer name), and the block is
        // ASCII, so UTF-8.
        if let Some(bad) = sbytes.iter().position(|&c| c != 0 && !is_prop_name_char(c)) {
            return Err(FdtError::BadStrings { offset: bad });
        }
        let strings =
            core::str::from_utf8(sbytes).map_err(|_| FdtError::BadStrings { offset: 0 })?;
        let rsv = blob
            .get(rsv_off..e.saturating_sub(16))
            .ok_or(FdtError::UnterminatedReservations)?;
        let (root_body, hint, end) = validate(st, strings, v16)?;
        // A v16 block ends at its END token.
        let st = St::new(st.get(0..end).ok_or(FdtError::MissingEnd)?)?;
        Ok(Self {
            blob,
            st,
            strings,
            rsv,
            root_body,
            boot_cpuid: h.boot_cpuid_phys.get(),
            hint,
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
    pub fn reservations(&self) -> impl Iterator<Item = Reservation> + use<'a> {
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
            hint: self.hint,
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

/// A 256-bit Bloom filter of names: two bits per name, in one of four
/// words. A miss proves a name is new; a hit is confirmed by a scan.
#[derive(Clone, Copy, Default)]
pub(super) struct Names([u64; 4]);

impl Names {
    /// Adds a name by its [`name_hash`]; returns whether it may have been
    /// there before.
    #[inline(always)]
    pub(super) fn insert(&mut self, h: u32) -> bool {
        // Both bits in one word (a blocked filter): one load, one store.
        let m = (1u64 << (h & 63)) | (1u64 << ((h >> 6) & 63));
        match self.0.get_mut(((h >> 12) & 3) as usize) {
            Some(x) => {
                let seen = *x & m == m;
                *x |= m;
                seen
            }
            None => true,
        }
    }
}

/// Slots of a [`Siblings`] set.
const SIBLING_SLOTS: usize = 2048;

/// The names of every node's children seen so far, as (parent, name hash)
/// keys in an open-addressing table: exact, so a wide node costs no scans.
/// Entries of closed nodes stay (their parent's key never comes again).
/// Once it is three quarters full, callers fall back to [`Names`].
pub(super) struct Siblings {
    slots: [u64; SIBLING_SLOTS],
    used: usize,
}

impl Siblings {
    /// An empty set.
    pub(super) fn new() -> Self {
        Self {
            slots: [0; SIBLING_SLOTS],
            used: 0,
        }
    }

    /// Adds the child hashed `h` of the node at `parent` (its BEGIN_NODE
    /// offset). `Some(true)` if a child of that parent with that hash was
    /// there (confirm by comparing names), `Some(false)` if not, `None` if
    /// the set is full.
    #[inline(always)]
    pub(super) fn insert(&mut self, parent: usize, h: u32) -> Option<bool> {
        if self.used >= SIBLING_SLOTS / 4 * 3 {
            return None;
        }
        let key = ((parent as u64).wrapping_add(1) << 32) | u64::from(h);
        let mut i = (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 53) as usize;
        loop {
            let slot = self.slots.get_mut(i % SIBLING_SLOTS)?;
            if *slot == key {
                return Some(true);
            }
            if *slot == 0 {
                *slot = key;
                self.used = self.used.saturating_add(1);
                return Some(false);
            }
            i = i.wrapping_add(1);
        }
    }
}

/// The hash of a name, shared by the writer's name table and both sides'
/// duplicate filters: overlapping word reads, no byte loop (a byte-serial
/// hash was a third of the cost of validating a node).
#[inline(always)]
pub(super) fn name_hash(name: &[u8]) -> u32 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let len = name.len();
    let r32 = |i: usize| {
        name.get(i..i.saturating_add(4))
            .and_then(|s| s.try_into().ok())
            .map_or(0, u32::from_le_bytes) as u64
    };
    let r64 = |i: usize| {
        name.get(i..i.saturating_add(8))
            .and_then(|s| s.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    let mix = |h: u64, w: u64| {
        let h = (h ^ w).wrapping_mul(K);
        h ^ (h >> 29)
    };
    let mut h = (len as u64).wrapping_mul(K);
    // Overlapping word reads cover every byte without a byte loop: the
    // words and the length determine the name.
    if len >= 8 {
        let mut i = 0usize;
        while i.saturating_add(8) < len {
            h = mix(h, r64(i));
            i = i.saturating_add(8);
        }
        h = mix(h, r64(len.saturating_sub(8)));
    } else if len >= 4 {
        h = mix(h, r32(0) | (r32(len.saturating_sub(4)) << 32));
    } else {
        h = mix(h, name.iter().fold(0u64, |w, &c| (w << 8) | u64::from(c)));
    }
    // A final avalanche (splitmix64's): every input bit reaches the low
    // bits, which the filters and the writer's name table use.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (h ^ (h >> 31)) as u32
}

/// What validation knows of the strings block before the walk.
struct StringsInfo {
    /// Every full string (one that starts the block or follows a NUL) is
    /// different from every other: then two name offsets at string starts
    /// name the same property exactly when they are equal.
    distinct: bool,
    /// The offset of the full string `kho,skip`, or `NO_HINT`.
    hint: u32,
    /// Besides `distinct`, no two full strings end in the same byte and no
    /// longer one ends in `kho,skip`: then two names at any two offsets are
    /// equal only if the offsets are (equal names at different offsets
    /// would be suffixes of two strings sharing a last byte), so no offset
    /// needs checking for being at a string's start.
    ends_distinct: bool,
}

/// Largest strings block whose full strings are checked for repeats; a
/// larger one is read with content hashes throughout.
const DISTINCT_MAX_BYTES: usize = 16 * 1024;

fn strings_info(sbytes: &[u8]) -> StringsInfo {
    let mut info = StringsInfo {
        distinct: false,
        hint: NO_HINT,
        ends_distinct: true,
    };
    let mut last_bytes = [0u64; 4];
    let mut count = 0usize;
    let mut off = 0usize;
    for name in sbytes.split(|&b| b == 0) {
        if off >= sbytes.len() {
            break;
        }
        if name == SKIP_HINT.as_bytes() {
            info.hint = off as u32;
        } else if name.ends_with(SKIP_HINT.as_bytes()) {
            info.ends_distinct = false;
        }
        if let Some(&c) = name.last()
            && let Some(w) = last_bytes.get_mut(usize::from(c >> 6))
        {
            let bit = 1u64 << (c & 63);
            info.ends_distinct &= *w & bit == 0;
            *w |= bit;
        }
        count = count.saturating_add(1);
        off = off.saturating_add(name.len()).saturating_add(1);
    }
    // A table a quarter empty or more, as small as the strings allow: a
    // small blob should not pay for clearing a large one.
    info.distinct = if sbytes.len() > DISTINCT_MAX_BYTES {
        false
    } else if count <= 48 {
        all_distinct::<64>(sbytes)
    } else if count <= 1536 {
        all_distinct::<2048>(sbytes)
    } else {
        false
    };
    info.ends_distinct &= info.distinct;
    info
}

/// Whether the full strings of `sbytes` differ from one another, through an
/// open-addressing table of their offsets with `N` slots (more than the
/// strings).
fn all_distinct<const N: usize>(sbytes: &[u8]) -> bool {
    let mut table = [u32::MAX; N];
    let mut off = 0usize;
    for name in sbytes.split(|&b| b == 0) {
        if off >= sbytes.len() {
            break;
        }
        if !name.is_empty() {
            let mut i = name_hash(name) as usize;
            loop {
                let Some(slot) = i.checked_rem(N).and_then(|j| table.get_mut(j)) else {
                    return false;
                };
                if *slot == u32::MAX {
                    *slot = off as u32;
                    break;
                }
                if name_at_bytes(sbytes, *slot as usize) == name {
                    return false;
                }
                i = i.wrapping_add(1);
            }
        }
        off = off.saturating_add(name.len()).saturating_add(1);
    }
    true
}

fn name_at_bytes(s: &[u8], off: usize) -> &[u8] {
    let tail = s.get(off..).unwrap_or(&[]);
    tail.get(..nul_at(tail)).unwrap_or(&[])
}

/// What validation needs of a property name, by name offset: its hash and
/// whether it is the skip hint. Blobs use few distinct names, each at one
/// offset, so a direct-mapped cache spares reading the name each time.
struct NameCache([(u32, u32, bool); 64]);

impl NameCache {
    /// An empty cache.
    fn new() -> Self {
        Self([(0, 0, false); 64])
    }

    #[inline(always)]
    fn get(&mut self, strings: &str, nameoff: u32) -> (u32, bool) {
        let slot = (nameoff.wrapping_mul(0x9e37_79b1) >> 26) as usize;
        let key = nameoff.wrapping_add(1);
        let look = || {
            let name = name_at(strings, nameoff as usize);
            (name_hash(name.as_bytes()), name == SKIP_HINT)
        };
        match self.0.get_mut(slot) {
            Some(e) if e.0 == key => (e.1, e.2),
            Some(e) => {
                let (h, hint) = look();
                *e = (key, h, hint);
                (h, hint)
            }
            None => look(),
        }
    }
}

/// The name offsets of the properties of the node whose body starts at
/// `body`, before offset `end` (a validated prefix of the block).
fn earlier_properties(st: St<'_>, body: usize, end: usize) -> impl Iterator<Item = usize> + '_ {
    let mut off = body;
    core::iter::from_fn(move || {
        off = skip_nops(st, off);
        if off >= end {
            return None;
        }
        match token(st, off)? {
            (Tok::Prop { nameoff, next, .. }, _) => {
                off = next;
                Some(nameoff)
            }
            _ => None,
        }
    })
}

/// The names of the children of the node whose body starts at `body`,
/// before offset `end` (a validated prefix of the block).
fn earlier_children(st: St<'_>, body: usize, end: usize) -> impl Iterator<Item = &[u8]> + '_ {
    let mut off = body;
    core::iter::from_fn(move || {
        loop {
            off = skip_nops(st, off);
            if off >= end {
                return None;
            }
            match token(st, off)? {
                (Tok::Prop { next, .. }, _) => off = next,
                (Tok::Begin { name, body }, _) => {
                    off = skip_subtree(st, body)?;
                    return Some(name);
                }
                _ => return None,
            }
        }
    })
}

/// The offset of the first token at or after `off` that is not a NOP.
fn skip_nops(st: St<'_>, mut off: usize) -> usize {
    while st.word(off) == Some(TOKEN_NOP) {
        off = off.saturating_add(4);
    }
    off
}

/// Whether a property before `end` in the node at `body` is called `name`.
fn property_named(st: St<'_>, strings: &[u8], body: usize, end: usize, name: &[u8]) -> bool {
    earlier_properties(st, body, end).any(|nameoff| {
        let s = strings.get(nameoff..).unwrap_or(&[]);
        s.starts_with(name) && s.get(name.len()) == Some(&0)
    })
}

/// Whether a child before `end` in the node at `body` is called `name`.
fn child_named(st: St<'_>, body: usize, end: usize, name: &[u8]) -> bool {
    earlier_children(st, body, end).any(|n| n == name)
}

/// Puts the children of the node at `parent` (body at `body`) before
/// offset `end` into `set`, as far as it has room.
#[cold]
fn index_children(st: St<'_>, set: &mut Siblings, parent: usize, body: usize, end: usize) {
    for name in earlier_children(st, body, end) {
        if set.insert(parent, name_hash(name)).is_none() {
            return;
        }
    }
}

/// For the writer, over the structure block `st` written so far: whether
/// the node at `body` has a child named `name`.
pub(super) fn has_child(st: &[u8], body: usize, name: &[u8]) -> bool {
    St::new(st).is_ok_and(|st| child_named(st, body, st.len(), name))
}

/// For the writer: whether the node at `body` has a property with name
/// offset `nameoff` (its names are deduplicated exactly, so an offset is a
/// name).
pub(super) fn has_nameoff(st: &[u8], body: usize, nameoff: u32) -> bool {
    St::new(st)
        .is_ok_and(|st| earlier_properties(st, body, st.len()).any(|n| n == nameoff as usize))
}

/// For the writer: puts the children of the node whose BEGIN_NODE is at
/// `parent` (its body at `body`) into `set`.
pub(super) fn index_children_of(st: &[u8], set: &mut Siblings, parent: usize, body: usize) {
    if let Ok(st) = St::new(st) {
        index_children(st, set, parent, body, st.len());
    }
}

/// Walks the whole structure block once; returns the offset of the root's
/// body, the name offset of the skip hints (`NO_HINT` if there are none) and
/// the offset just past the END token. With `v16`, the block may go on past
/// END (its size was not in the header).
fn validate(st: St<'_>, strings: &str, v16: bool) -> Result<(usize, u32, usize), FdtError> {
    // Only validated blobs reach the fast paths below, which rely on this
    // walk for termination (every offset it accepts moves forward) and on
    // every skip hint having been checked here.
    let mut off = 0usize;
    let mut depth = 0usize;
    let mut has_child: u64 = 0;
    let mut root_body = None;
    let mut root_done = false;
    // Per open node: its BEGIN_NODE offset, its body's offset, the end its
    // hint promises, and the names of its children so far.
    let mut begin = [0usize; MAX_DEPTH];
    let mut bodies = [0usize; MAX_DEPTH];
    let mut promised = [usize::MAX; MAX_DEPTH];
    let mut children = [Names::default(); MAX_DEPTH];
    // Made at the first filter hit: most blobs never need it, and zeroing
    // it would cost more than validating a small blob.
    let mut siblings: Option<Siblings> = None;
    // Bit `d`: the open node at depth `d` has its children in `siblings`.
    let mut indexed = 0u64;
    // The innermost node's property names (properties come before
    // subnodes, so only one node collects them at a time): a 64-bit
    // filter, kept in registers.
    let mut props = 0u64;
    // Only blobs whose strings repeat use it.
    let mut names: Option<NameCache> = None;
    let info = strings_info(strings.as_bytes());
    // The innermost node has a property whose name offset points into the
    // middle of a string: its later properties are each checked by a scan.
    let mut node_slow = false;
    let mut fresh = false; // no property seen yet in the innermost node
    let mut hint = NO_HINT;
    let sbytes = strings.as_bytes();
    loop {
        let offset = off;
        let token = st.word(off).ok_or(FdtError::MissingEnd)?;
        match token {
            TOKEN_BEGIN_NODE => {
                let name_at = off.checked_add(4).ok_or(FdtError::MissingEnd)?;
                let (next, len) = st
                    .skip_name(name_at)
                    .ok_or(FdtError::UnterminatedName { offset })?;
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
                    // One pass: every byte a node-name character, at most
                    // one `@`, not first.
                    let (mut all, mut ats) = (NODE_CHAR, 0u32);
                    for &c in name {
                        let class = NAME_CHARS.get(usize::from(c)).copied().unwrap_or(0);
                        all &= class;
                        ats = ats.saturating_add(u32::from(class & AT_CHAR != 0));
                    }
                    if name.is_empty() || name.first() == Some(&b'@') || ats > 1 || all == 0 {
                        return Err(FdtError::BadName { offset });
                    }
                    let parent = depth.saturating_sub(1);
                    has_child |= 1u64 << (parent % 64);
                    let h = name_hash(name);
                    let pbegin = begin.get(parent).copied().unwrap_or(0);
                    let body = bodies.get(parent).copied().unwrap_or(0);
                    // A narrow node's children are told apart by the filter
                    // alone. At its first hit the node's children so far go
                    // into the exact set, which then answers for it (until
                    // it fills; then every filter hit is a scan).
                    let in_filter = children.get_mut(parent).is_some_and(|c| c.insert(h));
                    let bit = 1u64 << (parent % 64);
                    if in_filter && indexed & bit == 0 {
                        indexed |= bit;
                        let set = siblings.get_or_insert_with(Siblings::new);
                        index_children(st, set, pbegin, body, offset);
                    }
                    let maybe = if indexed & bit != 0 {
                        siblings
                            .as_mut()
                            .and_then(|set| set.insert(pbegin, h))
                            .unwrap_or(in_filter)
                    } else {
                        false
                    };
                    if maybe && child_named(st, body, offset, name) {
                        return Err(FdtError::DuplicateNode { offset });
                    }
                }
                if depth >= MAX_DEPTH {
                    return Err(FdtError::TooDeep { offset });
                }
                has_child &= !(1u64 << (depth % 64));
                indexed &= !(1u64 << (depth % 64));
                if let (Some(b), Some(bd), Some(p), Some(c)) = (
                    begin.get_mut(depth),
                    bodies.get_mut(depth),
                    promised.get_mut(depth),
                    children.get_mut(depth),
                ) {
                    (*b, *bd, *p, *c) = (offset, next, usize::MAX, Names::default());
                }
                props = 0;
                node_slow = false;
                fresh = true;
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
                let p = promised.get(depth).copied().unwrap_or(usize::MAX);
                if p != usize::MAX && p != off {
                    let offset = begin.get(depth).copied().unwrap_or(0);
                    return Err(FdtError::BadSkipHint { offset });
                }
                fresh = false;
            }
            TOKEN_PROP => {
                if depth == 0 || has_child & (1u64 << (depth.saturating_sub(1) % 64)) != 0 {
                    return Err(FdtError::UnexpectedToken { offset, token });
                }
                // A node's properties come in a run: take the whole run in
                // this inner loop, which keeps the node's state at hand and
                // dispatches on a single predictable branch.
                let node = depth.saturating_sub(1);
                let body = bodies.get(node).copied().unwrap_or(0);
                let mut offset = offset;
                loop {
                    let bad = FdtError::ValueOutOfBounds { offset };
                    let len = st.word(off.saturating_add(4)).ok_or(bad)? as usize;
                    let nameoff = st.word(off.saturating_add(8)).ok_or(bad)?;
                    let value_at = off.checked_add(12).ok_or(bad)?;
                    let next = value_at.checked_add(align4(len).ok_or(bad)?).ok_or(bad)?;
                    if value_at.checked_add(len).is_none_or(|e| e > st.len()) {
                        return Err(bad);
                    }
                    // The strings block was checked as a whole: a name
                    // offset is good if it is inside the block and not on a
                    // NUL.
                    match sbytes.get(nameoff as usize) {
                        Some(&c) if c != 0 => {}
                        _ => return Err(FdtError::BadNameOffset { offset, nameoff }),
                    }
                    let at_start = info.ends_distinct
                        || nameoff == 0
                        || sbytes.get((nameoff as usize).wrapping_sub(1)) == Some(&0);
                    // The filter's key: the name offset itself when it names
                    // the property exactly (distinct full strings, offset at
                    // a start), else a hash of the name.
                    let (key, is_hint, scan) = if info.distinct {
                        if at_start && !node_slow {
                            (
                                nameoff.wrapping_mul(0x9e37_79b1) >> 12,
                                nameoff == info.hint,
                                false,
                            )
                        } else {
                            node_slow = true;
                            (0, name_at(strings, nameoff as usize) == SKIP_HINT, true)
                        }
                    } else {
                        let cache = names.get_or_insert_with(NameCache::new);
                        let (h, is_hint) = cache.get(strings, nameoff);
                        (h, is_hint, false)
                    };
                    let m = (1u64 << (key & 63)) | (1u64 << ((key >> 6) & 63));
                    let seen = props & m == m;
                    props |= m;
                    if seen || scan {
                        let name = name_at(strings, nameoff as usize).as_bytes();
                        if property_named(st, sbytes, body, offset, name) {
                            return Err(FdtError::DuplicateProperty { offset });
                        }
                    }
                    if is_hint {
                        // The node's BEGIN_NODE offset plus the promised
                        // size.
                        let b = begin.get(node).copied().unwrap_or(0);
                        let size = st.word(value_at).unwrap_or(0) as usize;
                        if !fresh || depth < 2 || len != 4 || size == 0 {
                            return Err(FdtError::BadSkipHint { offset: b });
                        }
                        if let Some(p) = promised.get_mut(node) {
                            *p = b
                                .checked_add(size)
                                .ok_or(FdtError::BadSkipHint { offset: b })?;
                        }
                        if hint == NO_HINT {
                            hint = nameoff;
                        }
                    }
                    fresh = false;
                    off = next;
                    if st.word(off) != Some(TOKEN_PROP) {
                        break;
                    }
                    offset = off;
                }
            }
            TOKEN_NOP => off = off.saturating_add(4),
            TOKEN_END => {
                if depth != 0 {
                    return Err(FdtError::EarlyEnd { offset });
                }
                let end = off.saturating_add(4);
                if !v16 && end != st.len() {
                    return Err(FdtError::DataAfterEnd);
                }
                return Ok((root_body.ok_or(FdtError::NoRoot)?, hint, end));
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
    st: St<'a>,
    strings: &'a str,
    name: &'a str,
    /// Offset of the first token after the node's name.
    body: usize,
    /// Name offset of the blob's validated skip hints, or `NO_HINT`.
    hint: u32,
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
fn token<'a>(st: St<'a>, off: usize) -> Option<(Tok<'a>, usize)> {
    // Skips NOPs; returns the token and the offset after it.
    let mut off = off;
    loop {
        match st.word(off)? {
            TOKEN_NOP => off = off.checked_add(4)?,
            TOKEN_PROP => {
                let len = st.word(off.checked_add(4)?)? as usize;
                let nameoff = st.word(off.checked_add(8)?)? as usize;
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
                let (body, len) = st.skip_name(n)?;
                let name = st.get(n..n.checked_add(len)?)?;
                return Some((Tok::Begin { name, body }, body));
            }
            TOKEN_END_NODE => return Some((Tok::End, off.checked_add(4)?)),
            _ => return Some((Tok::Other, off)),
        }
    }
}

/// Offset just past the END_NODE closing the node whose body starts at `off`.
fn skip_subtree(st: St<'_>, mut off: usize) -> Option<usize> {
    let mut depth = 1u32;
    loop {
        match st.word(off)? {
            TOKEN_PROP => {
                let len = st.word(off.checked_add(4)?)? as usize;
                off = off.checked_add(12)?.checked_add(align4(len)?)?;
            }
            TOKEN_BEGIN_NODE => {
                off = st.skip_name(off.checked_add(4)?)?.0;
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

#[inline(always)]
fn name_at(strings: &str, off: usize) -> &str {
    let tail = strings.get(off..).unwrap_or("");
    let end = nul_at(tail.as_bytes());
    // The strings block was checked to be ASCII, so any cut is a char
    // boundary.
    tail.get(..end).unwrap_or("")
}

/// The index of the first NUL in `b` (or its length), eight bytes a step.
#[inline(always)]
fn nul_at(b: &[u8]) -> usize {
    let mut i = 0usize;
    while let Some(w) = b.get(i..i.saturating_add(8)) {
        let x = u64::from_le_bytes(w.try_into().unwrap_or([0xff; 8]));
        // The zero-byte trick: only a real NUL can set the lowest flag.
        let z = x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080;
        if z != 0 {
            return i.saturating_add((z.trailing_zeros() / 8) as usize);
        }
        i = i.saturating_add(8);
    }
    let rest = b.get(i..).unwrap_or(&[]);
    i.saturating_add(rest.iter().position(|&c| c == 0).unwrap_or(rest.len()))
}

impl<'a> Node<'a> {
    /// The node's name with its unit address (`""` for the root).
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The node's properties, in blob order.
    pub fn properties(&self) -> impl Iterator<Item = Property<'a>> + use<'a> {
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
    pub fn children(&self) -> impl Iterator<Item = Node<'a>> + use<'a> {
        let (st, strings, hint) = (self.st, self.strings, self.hint);
        let mut off = Some(self.body);
        core::iter::from_fn(move || {
            loop {
                let (t, next) = token(st, off?)?;
                match t {
                    Tok::Prop { .. } => off = Some(next),
                    Tok::Begin { name, body } => {
                        off = node_end(st, hint, body, name.len());
                        return Some(Node {
                            st,
                            strings,
                            name: core::str::from_utf8(name).unwrap_or(""),
                            body,
                            hint,
                        });
                    }
                    Tok::End | Tok::Other => return None,
                }
            }
        })
    }

    /// The child called `name` (a name without `@` also matches a child with
    /// a unit address). Siblings that do not match are skipped in one step
    /// when the blob has skip hints, else by scanning their tokens.
    pub fn child(&self, name: &str) -> Option<Node<'a>> {
        let st = self.st;
        let want = name.as_bytes();
        let exact = want.contains(&b'@');
        let mut off = self.body;
        loop {
            match st.word(off)? {
                TOKEN_PROP => {
                    let len = st.word(off.wrapping_add(4))? as usize;
                    off = off.checked_add(12)?.checked_add(align4(len)?)?;
                }
                TOKEN_NOP => off = off.checked_add(4)?,
                TOKEN_BEGIN_NODE => {
                    let at = off.checked_add(4)?;
                    let (body, len) = st.skip_name(at)?;
                    let n = st.get(at..at.checked_add(len)?)?;
                    let hit = n == want
                        || (!exact
                            && n.len() > want.len()
                            && n.starts_with(want)
                            && n.get(want.len()) == Some(&b'@'));
                    if hit {
                        return Some(Node {
                            st,
                            strings: self.strings,
                            name: core::str::from_utf8(n).ok()?,
                            body,
                            hint: self.hint,
                        });
                    }
                    off = node_end(st, self.hint, body, len)?;
                }
                _ => return None,
            }
        }
    }
}

/// Offset just past the END_NODE of the node whose name is `name_len` bytes
/// and whose body starts at `body`: one step if the node's first property is
/// a skip hint (every one was checked by `validate`), else a scan.
#[inline(always)]
fn node_end(st: St<'_>, hint: u32, body: usize, name_len: usize) -> Option<usize> {
    if hint != NO_HINT
        && st.word(body) == Some(TOKEN_PROP)
        && st.word(body.wrapping_add(8)) == Some(hint)
    {
        let begin = body
            .checked_sub(4)?
            .checked_sub(align4(name_len.checked_add(1)?)?)?;
        return begin.checked_add(st.word(body.checked_add(12)?)? as usize);
    }
    skip_subtree(st, body)
}

/// One step of [`Fdt::walk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkItem<'a> {
    /// A node begins; `depth` is 0 for the root.
    Node {
        /// The node's name.
        name: &'a str,
        /// Nesting depth, 0 for the root.
        depth: usize,
    },
    /// A property of the innermost open node.
    Property(Property<'a>),
    /// The innermost open node ends.
    EndNode,
}

impl<'a> Fdt<'a> {
    /// Every node and property in blob order, depth first, in one pass.
    pub fn walk(&self) -> impl Iterator<Item = WalkItem<'a>> + use<'a> {
        let (st, strings) = (self.st, self.strings);
        let mut off = 0usize;
        let mut depth = 0usize;
        core::iter::from_fn(move || match token(st, off)? {
            (Tok::Begin { name, body }, _) => {
                off = body;
                depth = depth.checked_add(1)?;
                let d = depth.checked_sub(1)?;
                // The root reads as "" even in old blobs that name it "/".
                let name = if d == 0 {
                    ""
                } else {
                    core::str::from_utf8(name).ok()?
                };
                Some(WalkItem::Node { name, depth: d })
            }
            (
                Tok::Prop {
                    nameoff,
                    value,
                    next,
                },
                _,
            ) => {
                off = next;
                Some(WalkItem::Property(Property {
                    name: name_at(strings, nameoff),
                    value,
                }))
            }
            (Tok::End, next) => {
                off = next;
                depth = depth.checked_sub(1)?;
                Some(WalkItem::EndNode)
            }
            (Tok::Other, _) => None,
        })
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
