//! `memfd-v1`: one 16-byte record per folio, in a linear array in preserved
//! vmalloc, after Linux's `memfd-v1`.
//!
//! Descriptor (40 bytes, little-endian; travels in the handoff blob):
//! `pos` u64, `size` u64, `folios` u64, `array` [`VmallocRoot`] (16 bytes).
//! Record (16 bytes): word 0 = frame number (bits 0 to 51) | flags (bit 52
//! dirty, bit 53 up to date, bits 56 to 59 the folio's order, others 0);
//! word 1 = the folio's file page index. Records are in file order and
//! never overlap. Bytes of the array past the last record are 0.
//!
//! Where it departs from Linux's record: the order is in the flags (Linux
//! takes it from the tracker, which here records pages, not blocks); holes
//! are not filled; v1 carries no seals, so a sealed file is refused by the
//! writer ([`MemfdError::Unrepresentable`]) rather than silently unsealed.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use super::adopt::{Adopt, array_of, decode, descriptor, encode, walk_array, write_array};
use super::{Laid, Memfd, MemfdError, Seals};
pub use crate::abi::memfd::v1::{Header, Record, VERSION};
use crate::claims::Claims;
use crate::platform::{FrameAlloc, MapFrames, PhysMem};
use crate::ranges::Range;
use crate::tracker::Tracker;
use crate::vmalloc::{Blocks, Vmalloc, VmallocRoot};
use alloc::vec::Vec;
use zerocopy::{FromBytes, IntoBytes};

/// What a writer produced: the descriptor for the handoff blob, and the
/// record array (preserved; `None` for a file without folios).
#[derive(Debug)]
pub struct Written {
    /// The descriptor's bytes.
    pub desc: Vec<u8>,
    /// The record array.
    pub array: Option<Vmalloc>,
}

/// Writes the records of `file` (which [`Memfd::preserve`] preserved) into
/// a new preserved vmalloc array.
pub fn write<P: PhysMem + FrameAlloc + MapFrames>(
    file: &Memfd,
    p: &mut P,
    tracker: &mut Tracker,
) -> Result<Written, MemfdError> {
    if !file.is_preserved() {
        return Err(MemfdError::Preserved { preserved: false });
    }
    if !file.seals().difference(Seals::SEAL).is_empty() {
        return Err(MemfdError::Unrepresentable);
    }
    // An array laid out at preserve is named as it is: only the
    // descriptor is written now.
    let (n, array, root) = match &file.laid_v1 {
        Some(l) => (l.records, None, l.root),
        None => match file.folio_count() {
            0 => (0, None, VmallocRoot::default()),
            n => {
                let (v, root) = write_array(p, tracker, n, records(file))?;
                (n, Some(v), root)
            }
        },
    };
    let h = Header {
        pos: file.pos().into(),
        size: file.size().into(),
        folios: n.into(),
        array: root,
    };
    let desc = descriptor(h.as_bytes(), core::iter::empty())?;
    Ok(Written { desc, array })
}

/// The records of `file`: one per folio, in file order.
fn records(file: &Memfd) -> impl Iterator<Item = Record> + '_ {
    file.folios().map(|f| Record {
        frame: encode(f.phys, f.order).into(),
        index: f.index.into(),
    })
}

/// Lays out the record array of `file` (which [`Memfd::preserve`]
/// preserved) now, preserved in `tracker`, for [`write`] to name at
/// freeze. A file without folios needs none; a sealed one has no
/// `memfd-v1` at all. All or nothing.
pub(crate) fn lay_out<P: PhysMem + FrameAlloc + MapFrames>(
    file: &mut Memfd,
    p: &mut P,
    tracker: &mut Tracker,
) -> Result<(), MemfdError> {
    if !file.is_preserved() {
        return Err(MemfdError::Preserved { preserved: false });
    }
    let n = file.folio_count();
    if file.laid_v1.is_some() || n == 0 || !file.seals().difference(Seals::SEAL).is_empty() {
        return Ok(());
    }
    file.laid_v1 = Some(Laid::write(p, tracker, n, records(file))?);
    Ok(())
}

/// In the next kernel: checks the descriptor, the array and every record,
/// claims every folio and returns the file. The array's pages are released
/// (finish frees them). On error nothing stays claimed.
pub fn read<P: PhysMem + MapFrames>(
    desc: &[u8],
    p: &mut P,
    ram: &[Range],
    scratch: &[Range],
    claims: &mut Claims,
) -> Result<Memfd, MemfdError> {
    let h = Header::read_from_bytes(desc).map_err(|_| MemfdError::BadHeader("length"))?;
    let n = h.folios.get();
    if n == 0 {
        if h.array != VmallocRoot::default() {
            return Err(MemfdError::BadArray);
        }
        return Adopt::new(claims, h.size.get(), h.pos.get(), 0).map(|a| a.finish(p));
    }
    let array = array_of(p, &h.array, n, ram, scratch, claims)?;
    adopt_all(&h, &array, p, claims)
}

fn adopt_all<P: PhysMem>(
    h: &Header,
    array: &Blocks,
    p: &mut P,
    claims: &mut Claims,
) -> Result<Memfd, MemfdError> {
    let n = h.folios.get();
    let capacity = array.frame_count().saturating_mul(256);
    if n > capacity {
        return Err(MemfdError::CountMismatch);
    }
    let mut a = Adopt::new(claims, h.size.get(), h.pos.get(), 0)?;
    let r = a.reserve(n as usize).and_then(|()| {
        walk_array(p, array.frames(), n, array.sum, |i, frame, index| {
            a.run(i, &decode(frame, i)?, index, 1)
        })
    });
    match r {
        Ok(()) => Ok(a.finish(p)),
        Err(e) => {
            a.fail();
            Err(e)
        }
    }
}
