//! The kernel booted from a handoff: [`Incoming`], from the blob to
//! finish.

use super::Key;
use crate::abi::handoff::Stamps;
use crate::claims::{ClaimError, Claims};
use crate::handoff::RestoreSummary;
use crate::luo::{Family, Finished, Handler, Info, Luo, LuoError, Platform, RestoreCtx};
use crate::ranges::Range;
use crate::scratch::Scratch;
use alloc::vec::Vec;
use core::any::Any;

/// The kernel booted from a handoff: what it restored, the objects waiting
/// for their owners, and the claims on preserved memory.
pub struct Incoming<P: Platform> {
    pub(super) luo: Luo<P>,
    pub(super) claims: Claims,
    pub(super) ram: Vec<Range>,
    pub(super) scratch: Scratch,
    pub(super) hop: u32,
    pub(super) stamps: Stamps,
    pub(super) restored: Option<RestoreSummary>,
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

    /// The scratch areas the previous kernel handed on (hand them on
    /// again: [`Outgoing::new`](crate::Outgoing::new)).
    pub fn scratch(&self) -> &Scratch {
        &self.scratch
    }

    /// The `hop` for this kernel's own handoff.
    pub fn next_hop(&self) -> u32 {
        self.hop.saturating_add(1)
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
