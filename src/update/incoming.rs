//! The kernel booted from a handoff: [`Incoming`], from the blob to
//! finish.

use super::Key;
use crate::Error;
use crate::claims::{ClaimError, Claims};
use crate::handoff::{self, Handoff, RestoreSummary, Stamps};
use crate::luo::{Family, Finished, Handler, Info, Luo, LuoError, Platform, RestoreCtx};
use crate::platform::PhysMem;
use crate::ranges::Range;
use crate::reserve::{Kept, Reserve, ReserveError};
use crate::scratch::Scratch;
use alloc::vec::Vec;
use core::any::Any;
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

/// The kernel booted from a handoff: what it restored, the objects waiting
/// for their owners, and the claims on preserved memory.
pub struct Incoming<P: Platform> {
    luo: Luo<P>,
    claims: Claims,
    ram: Vec<Range>,
    scratch: Scratch,
    hop: u32,
    stamps: Stamps,
    restored: Option<RestoreSummary>,
}

impl<P: Platform> core::fmt::Debug for Incoming<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Incoming")
            .field("hop", &self.hop)
            .field("objects", &self.luo.objects().count())
            .field("unread", &self.luo.unread())
            .finish_non_exhaustive()
    }
}

impl<P: Platform> core::fmt::Debug for Restored<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("Restored").field(&self.inc).finish()
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
    /// [`Restored::finish`] frees their memory.
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
    /// [`handoff::MAX_BLOB`]), its orchestrator node, and sets up the
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
    /// onto the heap (at most [`handoff::MAX_BLOB`]).
    pub fn from_phys<M: PhysMem, R: Reserve>(
        mem: &M,
        blob: Range,
        ram: &[Range],
        reserve: &mut R,
    ) -> Result<Self, Error> {
        let bytes = read_blob(mem, blob)?;
        Self::new(mem, &bytes, blob, ram, reserve)
    }

    /// Registers a handler (before the first retrieve).
    pub fn register<H: Handler<P>>(&mut self, h: H) -> Result<Family<H::Object>, LuoError> {
        self.luo.register(h)
    }

    /// What is known of the object `key`: where it comes from (first hop,
    /// carry count), its footprint, and once restored (by the first
    /// retrieve or take) the version it came in and what became of it.
    pub fn info<T>(&self, key: &Key<T>) -> Result<Info, LuoError> {
        self.luo.info(&key.session, key.token, key.family.name())
    }

    /// Every incoming object: session, token, family, in blob order.
    pub fn objects(&self) -> impl Iterator<Item = (&str, u64, &str)> + '_ {
        self.luo.objects()
    }

    /// Why the blob's `luo` node could not be read, if it could not (every
    /// object in it is then lost).
    pub fn unread(&self) -> Option<&LuoError> {
        self.luo.unread()
    }

    /// Claims `pages` preserved pages at `phys` as the kernel's own data
    /// (memory it restores outside the orchestrator, preserved with
    /// [`Outgoing::preserve_frames`](crate::Outgoing::preserve_frames)): claim it before
    /// [`Restored::finish`], or finish frees it. All or nothing; a page
    /// not preserved, in scratch or already claimed is an error.
    pub fn claim(&mut self, phys: u64, pages: u64) -> Result<(), ClaimError> {
        self.claims.claim(phys, pages)
    }

    /// Claims `pages` preserved pages at `phys` as metadata the kernel
    /// only reads: finish frees them, and no object can adopt them.
    pub fn claim_meta(&mut self, phys: u64, pages: u64) -> Result<(), ClaimError> {
        self.claims.claim_meta(phys, pages)
    }

    /// Every preserved range the restore reported, in address order.
    pub fn preserved(&self) -> impl Iterator<Item = Range> + '_ {
        self.claims.preserved()
    }

    /// The scratch areas the previous kernel handed on (hand them on
    /// again: [`Outgoing::new`](crate::Outgoing::new)).
    pub fn scratch(&self) -> &Scratch {
        &self.scratch
    }

    /// Kexecs before the one that booted this kernel.
    pub fn hop(&self) -> u32 {
        self.hop
    }

    /// The `hop` for this kernel's own handoff.
    pub fn next_hop(&self) -> u32 {
        self.hop.saturating_add(1)
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

    /// Restores every object now, in blob order (shared state first), with
    /// the handlers registered so far; an object none of them reads is
    /// carried (or lost, as preflight said). Register every handler and
    /// claim the kernel's own data ([`Incoming::claim`]) first: what is
    /// claimed, no object can adopt. Consumes the incoming side: a handler
    /// registered later could not change what was restored.
    pub fn restore(mut self, p: &mut P) -> Restored<P> {
        let mut ctx = RestoreCtx {
            ram: &self.ram,
            scratch: self.scratch.areas(),
            claims: &mut self.claims,
        };
        self.luo.restore_all(p, &mut ctx);
        Restored { inc: self }
    }
}

/// The incoming side once every object is restored ([`Incoming::restore`]):
/// take each object (typed by its [`Key`]), then [`Restored::finish`].
pub struct Restored<P: Platform> {
    inc: Incoming<P>,
}

impl<P: Platform> Restored<P> {
    /// The object `key`, as restored from the best version both kernels
    /// have, and that version; the same object or the same error each
    /// time.
    pub fn retrieve<T: Any>(
        &mut self,
        key: &Key<T>,
        p: &mut P,
    ) -> Result<(&mut T, &'static str), LuoError> {
        let mut ctx = RestoreCtx {
            ram: &self.inc.ram,
            scratch: self.inc.scratch.areas(),
            claims: &mut self.inc.claims,
        };
        self.inc
            .luo
            .retrieve(&key.session, key.token, key.family.name(), p, &mut ctx)
    }

    /// Retrieves and takes the object `key`, with the version it came in:
    /// it is the caller's from now on, with every page it adopted claimed.
    pub fn take<T: Any>(&mut self, key: &Key<T>, p: &mut P) -> Result<(T, &'static str), LuoError> {
        let (_, version) = self.retrieve(key, p)?;
        let object = self
            .inc
            .luo
            .take(&key.session, key.token, key.family.name())?;
        Ok((object, version))
    }

    /// What is known of the object `key` ([`Incoming::info`]): by now the
    /// version it came in and what became of it.
    pub fn info<T>(&self, key: &Key<T>) -> Result<Info, LuoError> {
        self.inc.info(key)
    }

    /// Every incoming object: session, token, family, in blob order.
    pub fn objects(&self) -> impl Iterator<Item = (&str, u64, &str)> + '_ {
        self.inc.objects()
    }

    /// Why the blob's `luo` node could not be read, if it could not.
    pub fn unread(&self) -> Option<&LuoError> {
        self.inc.unread()
    }

    /// [`Incoming::claim`], after the restore: a page an object adopted
    /// cannot be claimed again.
    pub fn claim(&mut self, phys: u64, pages: u64) -> Result<(), ClaimError> {
        self.inc.claim(phys, pages)
    }

    /// [`Incoming::claim_meta`], after the restore.
    pub fn claim_meta(&mut self, phys: u64, pages: u64) -> Result<(), ClaimError> {
        self.inc.claim_meta(phys, pages)
    }

    /// The scratch areas the previous kernel handed on.
    pub fn scratch(&self) -> &Scratch {
        self.inc.scratch()
    }

    /// The `hop` for this kernel's own handoff.
    pub fn next_hop(&self) -> u32 {
        self.inc.next_hop()
    }

    /// Ends the handoff: objects restored but never taken or retrieved are
    /// discarded, and every preserved page nobody adopted as data, with
    /// every page claimed as metadata, goes to `p`
    /// ([`crate::platform::FrameAlloc::add_free`]). Consumes the incoming
    /// side, so nothing can claim or finish after it.
    ///
    /// The handoff's own metadata (the blob, the tracker's chain) is not
    /// freed: it is the kernel's to free once it no longer needs the blob.
    /// On error (no memory for the report) nothing is freed: the memory
    /// stays reserved, never handed out twice.
    ///
    /// Finish is once: a second call does not compile.
    ///
    /// ```compile_fail,E0382
    /// fn twice<P: kho::luo::Platform>(r: kho::Restored<P>, p: &mut P) {
    ///     let _ = r.finish(p);
    ///     let _ = r.finish(p);
    /// }
    /// ```
    pub fn finish(self, p: &mut P) -> Result<Finished, LuoError> {
        let mut inc = self.inc;
        inc.luo.finish(p, inc.claims, &inc.ram, inc.scratch.areas())
    }
}

/// The blob's bytes at `blob`, copied through `mem` (at most
/// [`handoff::MAX_BLOB`]).
fn read_blob<M: PhysMem>(mem: &M, blob: Range) -> Result<Vec<u8>, Error> {
    let bad = || Error::Handoff(handoff::HandoffError::BadBlobPlace { range: blob });
    let len = usize::try_from(blob.len()).map_err(|_| bad())?;
    if len > handoff::MAX_BLOB {
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
