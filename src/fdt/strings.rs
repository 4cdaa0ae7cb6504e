//! What validation learns of the strings block before the walk: whether
//! its strings are distinct, and names read at an offset.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use super::SKIP_HINT;
use super::read::*;
use super::tree::*;
use super::validate::name_hash;

/// What validation knows of the strings block before the walk.
pub(super) struct StringsInfo {
    /// Every full string (one that starts the block or follows a NUL) is
    /// different from every other: then two name offsets at string starts
    /// name the same property exactly when they are equal.
    pub(super) distinct: bool,
    /// The offset of the full string `kho,skip`, or `NO_HINT`.
    pub(super) hint: u32,
    /// Besides `distinct`, no two full strings end in the same byte and no
    /// longer one ends in `kho,skip`: then two names at any two offsets are
    /// equal only if the offsets are (equal names at different offsets
    /// would be suffixes of two strings sharing a last byte), so no offset
    /// needs checking for being at a string's start.
    pub(super) ends_distinct: bool,
}

/// Largest strings block whose full strings are checked for repeats; a
/// larger one is read with content hashes throughout.
pub(super) const DISTINCT_MAX_BYTES: usize = 16 * 1024;

pub(super) fn strings_info(sbytes: &[u8]) -> StringsInfo {
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
pub(super) fn all_distinct<const N: usize>(sbytes: &[u8]) -> bool {
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

pub(super) fn name_at_bytes(s: &[u8], off: usize) -> &[u8] {
    let tail = s.get(off..).unwrap_or(&[]);
    tail.get(..nul_at(tail)).unwrap_or(&[])
}
