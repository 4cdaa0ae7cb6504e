//! The tree of a validated [`Fdt`](super::Fdt): nodes, properties, lookup
//! by name and path, and the depth-first walk.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use super::error::PropError;
use super::read::*;
use super::{TOKEN_BEGIN_NODE, TOKEN_END_NODE, TOKEN_NOP, TOKEN_PROP};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

/// A node of a validated [`Fdt`].
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    pub(super) st: St<'a>,
    pub(super) strings: &'a str,
    pub(super) name: &'a str,
    /// Offset of the first token after the node's name.
    pub(super) body: usize,
    /// Name offset of the blob's validated skip hints, or `NO_HINT`.
    pub(super) hint: u32,
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
pub(super) enum Tok<'a> {
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
pub(super) fn token<'a>(st: St<'a>, off: usize) -> Option<(Tok<'a>, usize)> {
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
pub(super) fn skip_subtree(st: St<'_>, mut off: usize) -> Option<usize> {
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
pub(super) fn name_at(strings: &str, off: usize) -> &str {
    let tail = strings.get(off..).unwrap_or("");
    let end = nul_at(tail.as_bytes());
    // The strings block was checked to be ASCII, so any cut is a char
    // boundary.
    tail.get(..end).unwrap_or("")
}

/// The index of the first NUL in `b` (or its length), eight bytes a step.
#[inline(always)]
pub(super) fn nul_at(b: &[u8]) -> usize {
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
pub(super) fn node_end(st: St<'_>, hint: u32, body: usize, name_len: usize) -> Option<usize> {
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
    pub(super) fn sized<const N: usize>(&self) -> Result<[u8; N], PropError> {
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
