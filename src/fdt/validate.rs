//! The validator behind [`Fdt::new`](super::Fdt::new): one pass over the
//! structure block that checks every token, name and nesting rule, so that
//! the tree walk afterwards cannot meet malformed data.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use super::error::FdtError;
use super::read::*;
pub(super) use super::strings::*;
use super::tree::*;
use super::{
    AT_CHAR, MAX_DEPTH, NAME_CHARS, NODE_CHAR, SKIP_HINT, TOKEN_BEGIN_NODE, TOKEN_END,
    TOKEN_END_NODE, TOKEN_NOP, TOKEN_PROP,
};

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
pub(super) const SIBLING_SLOTS: usize = 2048;

/// The names of every node's children seen so far, as (parent, name hash)
/// keys in an open-addressing table: exact, so a wide node costs no scans.
/// Entries of closed nodes stay (their parent's key never comes again).
/// Once it is three quarters full, callers fall back to [`Names`].
pub(super) struct Siblings {
    pub(super) slots: [u64; SIBLING_SLOTS],
    pub(super) used: usize,
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

/// What validation needs of a property name, by name offset: its hash and
/// whether it is the skip hint. Blobs use few distinct names, each at one
/// offset, so a direct-mapped cache spares reading the name each time.
pub(super) struct NameCache([(u32, u32, bool); 64]);

impl NameCache {
    /// An empty cache.
    pub(super) fn new() -> Self {
        Self([(0, 0, false); 64])
    }

    #[inline(always)]
    pub(super) fn get(&mut self, strings: &str, nameoff: u32) -> (u32, bool) {
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
pub(super) fn earlier_properties(
    st: St<'_>,
    body: usize,
    end: usize,
) -> impl Iterator<Item = usize> + '_ {
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
pub(super) fn earlier_children(
    st: St<'_>,
    body: usize,
    end: usize,
) -> impl Iterator<Item = &[u8]> + '_ {
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
pub(super) fn skip_nops(st: St<'_>, mut off: usize) -> usize {
    while st.word(off) == Some(TOKEN_NOP) {
        off = off.saturating_add(4);
    }
    off
}

/// Whether a property before `end` in the node at `body` is called `name`.
pub(super) fn property_named(
    st: St<'_>,
    strings: &[u8],
    body: usize,
    end: usize,
    name: &[u8],
) -> bool {
    earlier_properties(st, body, end).any(|nameoff| {
        let s = strings.get(nameoff..).unwrap_or(&[]);
        s.starts_with(name) && s.get(name.len()) == Some(&0)
    })
}

/// Whether a child before `end` in the node at `body` is called `name`.
pub(super) fn child_named(st: St<'_>, body: usize, end: usize, name: &[u8]) -> bool {
    earlier_children(st, body, end).any(|n| n == name)
}

/// Puts the children of the node at `parent` (body at `body`) before
/// offset `end` into `set`, as far as it has room.
#[cold]
pub(super) fn index_children(
    st: St<'_>,
    set: &mut Siblings,
    parent: usize,
    body: usize,
    end: usize,
) {
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
pub(super) fn validate(
    st: St<'_>,
    strings: &str,
    v16: bool,
) -> Result<(usize, u32, usize), FdtError> {
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
