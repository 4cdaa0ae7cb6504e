//! `memfd-v2`: everything `memfd-v1` has, plus seals, plus extent records,
//! so that metadata grows with fragmentation, not with size.
//!
//! Descriptor (56 bytes, little-endian, the field order of Linux's
//! `memfd-v2`): `pos` u64, `size` u64, `seals` u32, `flags` u32 = 0,
//! `records` u64, `array` [`VmallocRoot`] (24 bytes: Linux's 16, then the
//! array's sum). When `array` is all zero and `records` is at most
//! [`INLINE_RECORDS`], the records follow the descriptor in the same bytes
//! (a file in one physical run hands over 72 bytes and allocates nothing);
//! otherwise they are in the array, whose bytes past the last record are
//! 0.
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
use super::{Laid, Memfd, MemfdError};
use crate::claims::Claims;
use crate::platform::{FrameAlloc, MapFrames, PhysMem};
use crate::ranges::Range;
use crate::tracker::Tracker;
use crate::vmalloc::VmallocRoot;
use zerocopy::{FromBytes, IntoBytes};

pub(crate) use super::v1::Written;
pub use crate::abi::memfd::v2::{
    Header, INDEX_BITS, INLINE_RECORDS, MAX_RUN, RECORD_BYTES, Record, VERSION,
};

/// Lays out the record array of `file` (which [`Memfd::preserve`]
/// preserved) now, preserved in `tracker`, for [`write`] to name at
/// freeze: what Linux's memfd does at preserve. A file whose records fit
/// inline needs none. All or nothing.
pub(crate) fn lay_out<P: PhysMem + FrameAlloc + MapFrames>(
    file: &mut Memfd,
    p: &mut P,
    tracker: &mut Tracker,
) -> Result<(), MemfdError> {
    if !file.is_preserved() {
        return Err(MemfdError::Preserved { preserved: false });
    }
    let n = record_count(file);
    if file.laid_v2.is_some() || n <= INLINE_RECORDS {
        return Ok(());
    }
    file.laid_v2 = Some(Laid::write(p, tracker, n, records(file))?);
    Ok(())
}

/// The records of `file`: its extents, split at [`MAX_RUN`] folios.
fn records(file: &Memfd) -> Records<'_> {
    Records {
        extents: file.extents(),
        done: 0,
    }
}

/// How many records `file` takes: one per [`MAX_RUN`] folios of each
/// extent.
fn record_count(file: &Memfd) -> u64 {
    file.extents()
        .iter()
        .map(|e| u64::from(e.count).div_ceil(MAX_RUN))
        .fold(0u64, u64::saturating_add)
}

/// The iterator of [`records`]: a plain struct, not an adapter chain (the
/// chain cost a few nanoseconds a record, which is most of writing a
/// record for a file of 4 KiB folios).
struct Records<'a> {
    /// Extents not yet (wholly) written.
    extents: &'a [super::Extent],
    /// Folios of the first of them already written.
    done: u64,
}

impl Iterator for Records<'_> {
    type Item = Record;

    #[inline]
    fn next(&mut self) -> Option<Record> {
        let (e, rest) = self.extents.split_first()?;
        let left = u64::from(e.count).saturating_sub(self.done);
        let n = left.min(MAX_RUN);
        let off = self.done.checked_shl(e.order).unwrap_or(0);
        let rec = Record {
            frame: encode(
                e.phys.saturating_add(off.saturating_mul(crate::PAGE_SIZE)),
                e.order,
            )
            .into(),
            run: (e.index.saturating_add(off) | (n.saturating_sub(1) << INDEX_BITS)).into(),
        };
        if n >= left {
            self.extents = rest;
            self.done = 0;
        } else {
            self.done = self.done.saturating_add(n);
        }
        Some(rec)
    }
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
    // An array laid out at preserve is named as it is: only the
    // descriptor is written now.
    let (n, inline, array, root) = match &file.laid_v2 {
        Some(l) => (l.records, false, None, l.root),
        None => {
            let n = record_count(file);
            if n <= INLINE_RECORDS {
                (n, true, None, VmallocRoot::default())
            } else {
                let (v, root) = write_array(p, tracker, n, records(file))?;
                (n, false, Some(v), root)
            }
        }
    };
    let h = Header {
        pos: file.pos().into(),
        size: file.size().into(),
        seals: file.seals().bits().into(),
        flags: 0.into(),
        records: n.into(),
        array: root,
    };
    // Inline records only: a file whose records went to the array walks
    // none of them again.
    let tail = inline
        .then(|| records(file))
        .into_iter()
        .flatten()
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
#[inline(always)]
fn adopt_record(a: &mut Adopt<'_>, i: u64, frame: u64, run: u64) -> Result<(), MemfdError> {
    let f = decode(frame, i)?;
    let (index, count) = (
        crate::abi::memfd::v2::run_index(run),
        crate::abi::memfd::v2::run_count(run),
    );
    if f.order == 0 && count == 1 {
        return a.page(i, f.phys, index, f.uptodate);
    }
    a.run(i, &f, index, count)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::memfd::v2::{run_count, run_index};
    use crate::memfd::{Extent, Seals};
    use alloc::vec;
    use alloc::vec::Vec;

    /// An extent longer than [`MAX_RUN`] folios goes as several records,
    /// each naming where its folios start in the file and in memory.
    #[test]
    fn a_long_extent_splits_at_max_run() {
        let long = 2 * MAX_RUN + 5;
        let f = Memfd {
            extents: vec![
                Extent {
                    index: 0,
                    phys: 1 << 40,
                    order: 0,
                    count: long as u32,
                },
                Extent {
                    index: long + 4,
                    phys: 1 << 42,
                    order: 2,
                    count: 3,
                },
            ],
            size: (long + 16) << 12,
            pos: 0,
            seals: Seals::empty(),
            preserved: false,
            laid_v1: None,
            laid_v2: None,
        };
        let recs: Vec<Record> = records(&f).collect();
        assert_eq!(record_count(&f), 4);
        let got: Vec<(u64, u64, u64)> = recs
            .iter()
            .map(|r| {
                let w = crate::abi::memfd::FolioWord(r.frame.get());
                (w.phys(), run_index(r.run.get()), run_count(r.run.get()))
            })
            .collect();
        assert_eq!(
            got,
            [
                (1 << 40, 0, MAX_RUN),
                ((1 << 40) + (MAX_RUN << 12), MAX_RUN, MAX_RUN),
                ((1 << 40) + ((2 * MAX_RUN) << 12), 2 * MAX_RUN, 5),
                (1 << 42, long + 4, 3),
            ]
        );
    }
}
