//! The hand-over step's half of [`Incoming`] (feature `arch`): made from
//! the handoff blob at boot, by the architecture layer.

use super::Incoming;
use crate::Error;
use crate::abi::handoff::Stamps;
use crate::claims::Claims;
use crate::handoff::{self, Handoff, RestoreSummary};
use crate::luo::{Luo, LuoError, Platform};
use crate::platform::PhysMem;
use crate::ranges::Range;
use crate::reserve::{Kept, Reserve, ReserveError};
use alloc::vec::Vec;

/// A [`Reserve`] that also keeps the preserved ranges, for the claims.
struct Tee<'r, R: Reserve> {
    out: &'r mut R,
    preserved: Vec<Range>,
}

impl<R: Reserve> Reserve for Tee<'_, R> {
    fn reserve(&mut self, range: Range, why: Kept) -> Result<(), ReserveError> {
        if why == Kept::Preserved {
            self.preserved
                .try_reserve(1)
                .map_err(|_| ReserveError::Full)?;
        }
        self.out.reserve(range, why)?;
        if why == Kept::Preserved {
            self.preserved.push(range);
        }
        Ok(())
    }

    fn rollback(&mut self) {
        self.preserved.clear();
        self.out.rollback();
    }
}

impl<P: Platform> Incoming<P> {
    /// Parses the blob `bytes` (found at `blob` in physical memory, read
    /// through `mem`: any [`PhysMem`], not necessarily the platform),
    /// restores it into `reserve` (every preserved range and every page of
    /// handoff metadata, or nothing on error), reads the orchestrator's
    /// node and sets up the claims.
    ///
    /// On error nothing was reserved: boot as a cold boot. A `luo` node
    /// that cannot be read is not an error here (the memory is already
    /// reserved): its objects are lost, [`Incoming::unread`] says why, and
    /// [`Restored::finish`](crate::Restored::finish) frees their memory.
    ///
    /// Call it before the kernel allocates outside scratch (the restore
    /// rule in [`crate::platform`]); its own lists go on the heap.
    pub fn new<M: PhysMem, R: Reserve>(
        mem: &M,
        bytes: &[u8],
        blob: Range,
        ram: &[Range],
        reserve: &mut R,
    ) -> Result<Self, Error> {
        let h = Handoff::parse(bytes, ram)?;
        let mut tee = Tee {
            out: reserve,
            preserved: Vec::new(),
        };
        let restored = handoff::restore(mem, &h, blob, ram, &mut tee)?;
        match Self::read(&h, tee.preserved.iter().copied(), ram, Some(restored)) {
            Ok(inc) => Ok(inc),
            Err(e) => {
                tee.rollback();
                Err(e)
            }
        }
    }

    /// For a kernel whose boot restored the handoff already (as
    /// `kho_x86_64::start::start` does, before it opens its allocator):
    /// reads the blob at `blob` through `mem` (one copy, at most
    /// [`crate::abi::handoff::MAX_BLOB`]), its orchestrator node, and sets up the
    /// claims over `preserved`, the ranges that restore reported as
    /// [`Kept::Preserved`].
    pub fn from_restored<M: PhysMem>(
        mem: &M,
        blob: Range,
        ram: &[Range],
        preserved: impl IntoIterator<Item = Range>,
    ) -> Result<Self, Error> {
        let bytes = read_blob(mem, blob)?;
        let h = Handoff::parse(&bytes, ram)?;
        Self::read(&h, preserved, ram, None)
    }

    /// The orchestrator node, the claims and the lists, from a restored
    /// handoff.
    fn read(
        h: &Handoff<'_>,
        preserved: impl IntoIterator<Item = Range>,
        ram: &[Range],
        restored: Option<RestoreSummary>,
    ) -> Result<Self, Error> {
        let mut luo = Luo::new();
        // The node's errors are kept by `luo` and reported at finish.
        let _ = luo.incoming(h);
        let claims = Claims::new(preserved, h.scratch.areas())?;
        let mut ram_list = Vec::new();
        ram_list
            .try_reserve_exact(ram.len())
            .map_err(|_| LuoError::OutOfMemory)?;
        ram_list.extend_from_slice(ram);
        Ok(Self {
            luo,
            claims,
            ram: ram_list,
            scratch: h.scratch,
            hop: h.hop,
            stamps: h.stamps,
            restored,
        })
    }

    /// [`Incoming::new`] for a blob read through the platform (when no
    /// direct map gives its bytes as one slice): the bytes are copied once
    /// onto the heap (at most [`crate::abi::handoff::MAX_BLOB`]).
    pub fn from_phys<M: PhysMem, R: Reserve>(
        mem: &M,
        blob: Range,
        ram: &[Range],
        reserve: &mut R,
    ) -> Result<Self, Error> {
        let bytes = read_blob(mem, blob)?;
        Self::new(mem, &bytes, blob, ram, reserve)
    }

    /// Every preserved range the restore reported, in address order.
    pub fn preserved(&self) -> impl Iterator<Item = Range> + '_ {
        self.claims.preserved()
    }

    /// Kexecs before the one that booted this kernel.
    pub fn hop(&self) -> u32 {
        self.hop
    }

    /// The previous kernel's TSC readings.
    pub fn stamps(&self) -> Stamps {
        self.stamps
    }

    /// What the restore found (the tracker walk's summary), if this side
    /// did the restore.
    pub fn restored(&self) -> Option<RestoreSummary> {
        self.restored
    }
}

/// The blob's bytes at `blob`, copied through `mem` (at most
/// [`crate::abi::handoff::MAX_BLOB`]).
fn read_blob<M: PhysMem>(mem: &M, blob: Range) -> Result<Vec<u8>, Error> {
    let bad = || Error::Handoff(handoff::HandoffError::BadBlobPlace { range: blob });
    let len = usize::try_from(blob.len()).map_err(|_| bad())?;
    if len > crate::abi::handoff::MAX_BLOB {
        return Err(bad());
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(len)
        .map_err(|_| LuoError::OutOfMemory)?;
    bytes.resize(len, 0);
    if !mem.read_bytes(blob.start, &mut bytes) {
        return Err(bad());
    }
    Ok(bytes)
}
