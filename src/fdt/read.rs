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

use super::error::{Block, FdtError};
use super::tree::{Node, Property};
use super::validate::*;
use super::{FDT_LAST_COMP_VERSION, FDT_MAGIC, FDT_VERSION, HEADER_SIZE, is_prop_name_char};
use zerocopy::byteorder::big_endian::U32;
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct Header {
    pub(super) magic: U32,
    pub(super) totalsize: U32,
    pub(super) off_dt_struct: U32,
    pub(super) off_dt_strings: U32,
    pub(super) off_mem_rsvmap: U32,
    pub(super) version: U32,
    pub(super) last_comp_version: U32,
    pub(super) boot_cpuid_phys: U32,
    pub(super) size_dt_strings: U32,
    pub(super) size_dt_struct: U32,
}

/// A validated FDT blob borrowed from memory.
#[derive(Clone, Copy, Debug)]
pub struct Fdt<'a> {
    pub(super) blob: &'a [u8],
    pub(super) st: St<'a>,
    pub(super) strings: &'a str,
    pub(super) rsv: &'a [u8],
    pub(super) root_body: usize,
    pub(super) boot_cpuid: u32,
    /// Name offset of the validated skip hints (`NO_HINT` if none).
    pub(super) hint: u32,
}

pub(super) const NO_HINT: u32 = u32::MAX;

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
pub(super) struct St<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) words: &'a [U32],
}

impl<'a> St<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Result<Self, FdtError> {
        let words =
            <[U32]>::ref_from_bytes(bytes).map_err(|_| FdtError::Misaligned(Block::Structure))?;
        Ok(Self { bytes, words })
    }

    #[inline(always)]
    pub(super) fn word(&self, off: usize) -> Option<u32> {
        Some(self.words.get(off >> 2)?.get())
    }

    #[inline(always)]
    pub(super) fn get(&self, r: core::ops::Range<usize>) -> Option<&'a [u8]> {
        self.bytes.get(r)
    }

    #[inline(always)]
    pub(super) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Offset of the word after the NUL-terminated, NUL-padded name at the
    /// 4-aligned `off`, and the name's length.
    #[inline(always)]
    pub(super) fn skip_name(&self, off: usize) -> Option<(usize, usize)> {
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
pub(super) fn be64(b: &[u8], off: usize) -> Option<u64> {
    let w: [u8; 8] = b.get(off..off.wrapping_add(8))?.try_into().ok()?;
    Some(u64::from_be_bytes(w))
}

#[inline(always)]
pub(super) fn align4(n: usize) -> Option<usize> {
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
