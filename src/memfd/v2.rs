//! `memfd-v2`: everything `memfd-v1` has, plus seals, plus extent records,
//! so that metadata grows with fragmentation, not with size.
//!
//! Descriptor (48 bytes, little-endian, the field order of Linux's
//! `memfd-v2`): `pos` u64, `size` u64, `seals` u32, `flags` u32 = 0,
//! `records` u64, `array` [`VmallocRoot`] (16 bytes). When `array` is all
//! zero and `records` is at most [`INLINE_RECORDS`], the records follow the
//! descriptor in the same bytes (a file in one physical run hands over 64
//! bytes and allocates nothing); otherwise they are in the array, whose
//! bytes past the last record are 0.
//!
//! Record (16 bytes): word 0 as in `memfd-v1` (frame number, flags, order);
//! word 1 = file page index (bits 0 to 39) | folios in the run minus one
//! (bits 40 to 63). The run's folios are contiguous in the file and in
//! physical memory and share the order. Records are in file order and never
//! overlap.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use super::adopt::{
    Adopt, array_of, decode, descriptor, encode, records_in, walk_array, write_array,
};
use super::{Memfd, MemfdError};
use crate::claims::Claims;
use crate::platform::{FrameAlloc, MapFrames, PhysMem};
use crate::ranges::Range;
use crate::tracker::Tracker;
use crate::vmalloc::VmallocRoot;
use zerocopy::{FromBytes, IntoBytes};

pub use super::v1::Written;
pub use crate::abi::memfd::v2::{
    Header, INDEX_BITS, INLINE_RECORDS, MAX_RUN, RECORD_BYTES, Record, VERSION,
};

/// The records of `file`: its extents, split at [`MAX_RUN`] folios.
fn records(file: &Memfd) -> impl Iterator<Item = Record> + '_ {
    file.extents().iter().flat_map(|e| {
        let mut left = u64::from(e.count);
        let mut i = 0u64;
        core::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            let n = left.min(MAX_RUN);
            let off = i.checked_shl(e.order).unwrap_or(0);
            let rec = Record {
                frame: encode(
                    e.phys.saturating_add(off.saturating_mul(crate::PAGE_SIZE)),
                    e.order,
                )
                .into(),
                run: (e.index.saturating_add(off) | (n.saturating_sub(1) << INDEX_BITS)).into(),
            };
            left = left.saturating_sub(n);
            i = i.saturating_add(n);
            Some(rec)
        })
    })
}

/// Writes the records of `file` (which [`Memfd::preserve`] preserved):
/// inline when there are few, else in a new preserved vmalloc array.
pub fn write<P: PhysMem + FrameAlloc + MapFrames>(
    file: &Memfd,
    p: &mut P,
    tracker: &mut Tracker,
) -> Result<Written, MemfdError> {
    if !file.is_preserved() {
        return Err(MemfdError::Preserved { preserved: false });
    }
    let n = records(file).count() as u64;
    let inline = n <= INLINE_RECORDS;
    let (array, root) = if inline {
        (None, VmallocRoot::default())
    } else {
        let (v, root) = write_array(p, tracker, n, records(file))?;
        (Some(v), root)
    };
    let h = Header {
        pos: file.pos().into(),
        size: file.size().into(),
        seals: file.seals().bits().into(),
        flags: 0.into(),
        records: n.into(),
        array: root,
    };
    let tail = records(file)
        .filter(|_| inline)
        .map(|r| zerocopy::transmute!(r));
    let desc = descriptor(h.as_bytes(), tail)?;
    Ok(Written { desc, array })
}

/// In the next kernel: checks the descriptor, the records (inline or in
/// the array) and every run, claims every folio and returns the file. The
/// array's pages are released (finish frees them). On error nothing stays
/// claimed.
pub fn read<P: PhysMem + MapFrames>(
    desc: &[u8],
    p: &mut P,
    ram: &[Range],
    scratch: &[Range],
    claims: &mut Claims,
) -> Result<Memfd, MemfdError> {
    let (h, inline) =
        Header::read_from_prefix(desc).map_err(|_| MemfdError::BadHeader("length"))?;
    if h.flags.get() != 0 {
        return Err(MemfdError::BadHeader("flags"));
    }
    let n = h.records.get();
    if h.array == VmallocRoot::default() {
        if n > INLINE_RECORDS || inline.len() as u64 != n.saturating_mul(RECORD_BYTES as u64) {
            return Err(MemfdError::CountMismatch);
        }
        let recs: &[Record] = records_in(inline, n)?;
        return adopt_all(&h, p, claims, |each| {
            recs.iter()
                .enumerate()
                .try_for_each(|(i, r)| each(i as u64, r.frame.get(), r.run.get()))
        });
    }
    if !inline.is_empty() || n <= INLINE_RECORDS {
        return Err(MemfdError::CountMismatch);
    }
    let array = array_of(p, &h.array, n, ram, scratch, claims)?;
    let capacity = array.frame_count().saturating_mul(256);
    if n > capacity {
        Err(MemfdError::CountMismatch)
    } else {
        Adopt::new(claims, h.size.get(), h.pos.get(), h.seals.get()).and_then(|mut a| {
            let r = a.reserve(n as usize).and_then(|()| {
                walk_array(&*p, array.frames(), n, array.sum, |i, frame, run| {
                    adopt_record(&mut a, i, frame, run)
                })
            });
            match r {
                Ok(()) => Ok(a.finish(p)),
                Err(e) => {
                    a.fail();
                    Err(e)
                }
            }
        })
    }
}

/// Decodes and adopts record `i`.
#[inline]
fn adopt_record(a: &mut Adopt<'_>, i: u64, frame: u64, run: u64) -> Result<(), MemfdError> {
    let f = decode(frame, i)?;
    a.run(
        i,
        &f,
        crate::abi::memfd::v2::run_index(run),
        crate::abi::memfd::v2::run_count(run),
    )
}

/// Checks and adopts every record that `records` hands to its callback.
fn adopt_all<P: PhysMem>(
    h: &Header,
    p: &mut P,
    claims: &mut Claims,
    records: impl FnOnce(
        &mut dyn FnMut(u64, u64, u64) -> Result<(), MemfdError>,
    ) -> Result<(), MemfdError>,
) -> Result<Memfd, MemfdError> {
    let mut a = Adopt::new(claims, h.size.get(), h.pos.get(), h.seals.get())?;
    let r = a
        .reserve(h.records.get() as usize)
        .and_then(|()| records(&mut |i, frame, run| adopt_record(&mut a, i, frame, run)));
    match r {
        Ok(()) => Ok(a.finish(p)),
        Err(e) => {
            a.fail();
            Err(e)
        }
    }
}
