//! The handoff blob's writer ([`HandoffWriter`]), and the calls that
//! change a written blob and seal it again.

use super::{HandoffError, csum_at};
use crate::abi::handoff::{DataRecord, HANDOFF_VERSION, RESERVED_NAMES, Stamps};
use crate::fdt::{Fdt, FdtWriter, WriteError};
use crate::ranges::Range;
use crate::scratch::{SCRATCH_VERSION, Scratch, ScratchRecord};
use crate::tracker::Root;
use crate::tracker::chain::TRACKER_VERSION;
use crate::tracker::inplace::TRACKER_VERSION_V4;
#[cfg(any(test, feature = "arch"))]
use zerocopy::IntoBytes;

/// Writes a handoff blob into a caller buffer.
pub struct HandoffWriter<'a> {
    w: FdtWriter<'a>,
    hop: u32,
}

/// What `HandoffWriter::finish` wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Bytes of the blob (its first `len` bytes of the buffer).
    pub len: usize,
}

impl<'a> HandoffWriter<'a> {
    /// Starts a blob: the root with its version, hop count, stamps, the
    /// tracker's root and the scratch areas.
    pub(crate) fn new(
        buf: &'a mut [u8],
        hop: u32,
        stamps: Stamps,
        tracker: &Root,
        scratch: &Scratch,
    ) -> Result<Self, WriteError> {
        let mut w = FdtWriter::new(buf)?;
        w.begin_node("")?;
        w.property_string("compatible", HANDOFF_VERSION)?;
        w.property("kho,csum", &[0u8; 8])?;
        w.property_u32("kho,hop", hop)?;
        w.property_struct("kho,tsc", &stamps)?;
        w.begin_node("tracker")?;
        match tracker {
            Root::Chain(r) => {
                w.property_string("compatible", TRACKER_VERSION)?;
                w.property_struct("kho,root", r)?;
            }
            Root::InPlace(r) => {
                w.property_string("compatible", TRACKER_VERSION_V4)?;
                w.property_struct("kho,root", r)?;
            }
        }
        w.end_node()?;
        w.begin_node("scratch")?;
        w.property_string("compatible", SCRATCH_VERSION)?;
        let mut recs = [ScratchRecord {
            start: 0.into(),
            size: 0.into(),
        }; crate::scratch::MAX_SCRATCH];
        let mut n = 0usize;
        for (d, r) in recs.iter_mut().zip(scratch.records()) {
            *d = r;
            n = n.saturating_add(1);
        }
        w.property_struct("kho,areas", recs.get(..n).unwrap_or(&[]))?;
        w.end_node()?;
        Ok(Self { w, hop })
    }

    /// The blob's hop count (kexecs before this handoff).
    pub(crate) fn hop(&self) -> u32 {
        self.hop
    }

    /// Adds a subsystem node `name` with its `compatible` versions (best
    /// first), its data range (preserved memory the next kernel checks), and
    /// whatever else `extra` writes into the node.
    pub fn subsystem(
        &mut self,
        name: &str,
        compatible: &[&str],
        data: Option<Range>,
        extra: impl FnOnce(&mut FdtWriter<'a>) -> Result<(), WriteError>,
    ) -> Result<(), WriteError> {
        if RESERVED_NAMES.contains(&name) {
            return Err(WriteError::DuplicateNode);
        }
        self.w.begin_node(name)?;
        self.w.property_string_list("compatible", compatible)?;
        if let Some(d) = data {
            let rec = DataRecord {
                phys: d.start.into(),
                size: d.len().into(),
            };
            self.w.property_struct("kho,data", &rec)?;
        }
        extra(&mut self.w)?;
        self.w.end_node()
    }

    /// Closes the root, fills in the header and seals the blob (its
    /// checksum). Anything that changes the blob later must reseal it
    /// ([`set_stamps`] does).
    pub(crate) fn finish(mut self) -> Result<Written, WriteError> {
        self.w.end_node()?;
        let (len, buf) = self.w.finish_into()?;
        seal(buf.get_mut(..len).ok_or(WriteError::Unfinished)?)
            .map_err(|_| WriteError::Unfinished)?;
        Ok(Written { len })
    }
}

/// Recomputes the checksum of a written blob (after a change to it).
pub fn seal(blob: &mut [u8]) -> Result<(), HandoffError> {
    let (at, len) = {
        let fdt = Fdt::new(blob)?;
        (csum_at(&fdt)?.0, fdt.as_bytes().len())
    };
    seal_at(blob, at, len)
}

/// Writes the sum of `blob[..len]` at `at`, where `kho,csum`'s value is.
fn seal_at(blob: &mut [u8], at: usize, len: usize) -> Result<(), HandoffError> {
    let bytes = blob.get(..len).ok_or(HandoffError::Unreadable)?;
    let sum = crate::csum::sum64_skipping(bytes, at);
    blob.get_mut(at..at.saturating_add(8))
        .ok_or(HandoffError::Unreadable)?
        .copy_from_slice(&sum.to_le_bytes());
    Ok(())
}

/// Replaces the stamps (`kho,tsc`) of a written blob and reseals it: the
/// first kernel stamps the time it wrote the blob and the time of the
/// jump after the blob is written. One parse finds both places.
#[cfg(any(test, feature = "arch"))]
pub fn set_stamps(blob: &mut [u8], stamps: &Stamps) -> Result<(), HandoffError> {
    let (tsc_at, sum_at, len) = {
        let fdt = Fdt::new(blob)?;
        let p = fdt
            .root()
            .property("kho,tsc")
            .ok_or(HandoffError::Missing("kho,tsc"))?;
        if p.value.len() != core::mem::size_of::<Stamps>() {
            return Err(HandoffError::BadProperty("kho,tsc"));
        }
        let base = fdt.as_bytes().as_ptr() as usize;
        (
            (p.value.as_ptr() as usize).wrapping_sub(base),
            csum_at(&fdt)?.0,
            fdt.as_bytes().len(),
        )
    };
    blob.get_mut(tsc_at..tsc_at.saturating_add(core::mem::size_of::<Stamps>()))
        .ok_or(HandoffError::Unreadable)?
        .copy_from_slice(stamps.as_bytes());
    seal_at(blob, sum_at, len)
}
