//! The front door: [`Outgoing`] in the kernel that kexecs, [`Incoming`] in
//! the kernel that boots from its handoff, both typed by their objects.
//!
//! An embedding kernel holds one of these at a time. [`Outgoing`] owns the
//! preserved-page tracker, the orchestrator and the scratch areas: register
//! handlers, preserve objects in sessions, freeze against the next image's
//! reads list, write the handoff blob. [`Incoming`] is made by one call
//! that parses the blob, restores it (every preserved range reported to the
//! kernel's [`Reserve`]), reads the orchestrator's node and sets up the
//! claims; then objects are retrieved and taken by typed [`Key`]s, and
//! [`Incoming::finish`] (which consumes it) gives back what nobody adopted.
//!
//! Everything here is built on the lower layer (the orchestrator,
//! [`crate::tracker::Tracker`], [`crate::handoff`], [`crate::claims`]); the
//! front door does not hand out those parts (a kernel's own preserved data
//! goes through [`Outgoing::preserve_frames`] and [`Incoming::claim`]).

use crate::Error;
use crate::claims::{ClaimError, Claims};
use crate::fdt::WriteError;
use crate::handoff::{self, Handoff, HandoffWriter, Restored, Stamps, Written};
use crate::luo::{
    Cancelled, Carried, Family, Finished, Handler, Info, Luo, LuoError, Plan, Platform, ReadList,
    Refused, RestoreCtx, Version,
};
use crate::platform::PhysMem;
use crate::ranges::Range;
use crate::reserve::{Kept, Reserve, ReserveError};
use crate::scratch::Scratch;
use crate::tracker::{Tracker, TrackerError, handover};
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::any::Any;

/// One object of type `T`: its family, session and token. Made by
/// [`Outgoing::preserve`] in the first kernel and by [`Family::key`] in
/// the next one (the same three values name the same object).
#[derive(Debug, PartialEq, Eq)]
pub struct Key<T> {
    family: Family<T>,
    session: String,
    token: u64,
}

impl<T> Clone for Key<T> {
    fn clone(&self) -> Self {
        Self {
            family: self.family,
            session: self.session.clone(),
            token: self.token,
        }
    }
}

impl<T> Key<T> {
    /// Its session.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// Its token in the session.
    pub fn token(&self) -> u64 {
        self.token
    }
}

impl<T> Family<T> {
    /// The key of this family's object `token` in `session`.
    pub fn key(&self, session: &str, token: u64) -> Key<T> {
        Key {
            family: *self,
            session: session.into(),
            token,
        }
    }
}

/// How [`Outgoing::freeze`] treats objects the next kernel cannot read.
#[derive(Clone, Copy, Debug)]
pub enum Freeze<'a> {
    /// Refuse the freeze ([`LuoError::WouldLose`], naming each object) if
    /// the next kernel, which reads this list, would lose any object. The
    /// default: get the list from the next image with
    /// [`crate::elf::Image::read_list`].
    NoLoss(&'a ReadList<'a>),
    /// Freeze whatever the next kernel reads: an object it cannot read is
    /// written anyway and reported lost there (and its memory freed).
    AllowLoss,
}

/// The kernel that is about to kexec: its tracker, its orchestrator and
/// its scratch areas.
pub struct Outgoing<P: Platform> {
    scratch: Scratch,
    tracker: Tracker,
    luo: Luo<P>,
}

impl<P: Platform> Outgoing<P> {
    /// An empty outgoing side over `scratch` (from
    /// [`crate::scratch::cold_boot`] at a cold boot, or
    /// [`Incoming::scratch`] after a kexec: scratch never moves).
    pub fn new(scratch: Scratch) -> Result<Self, Error> {
        Ok(Self {
            tracker: Tracker::new(scratch.areas())?,
            scratch,
            luo: Luo::new(),
        })
    }

    /// Registers a handler; its objects are then preserved through the
    /// [`Family`] returned.
    pub fn register<H: Handler<P>>(&mut self, h: H) -> Result<Family<H::Object>, LuoError> {
        self.luo.register(h)
    }

    /// Every version the registered handlers read, for a reads note
    /// built at run time (a compiled kernel declares its own with
    /// [`crate::luo::ReadsNote`]).
    pub fn reads(&self) -> impl Iterator<Item = Version> + '_ {
        self.luo.reads()
    }

    /// Every object held here, preserved or carried: session, token,
    /// family, session by session.
    pub fn objects(&self) -> impl Iterator<Item = (&str, u64, &str)> + '_ {
        self.luo.objects()
    }

    /// Creates an empty session.
    pub fn create_session(&mut self, name: &str) -> Result<(), LuoError> {
        self.luo.create_session(name)
    }

    /// Preserves `object` as `token` in `session`; returns its key. On
    /// error the object comes back in the [`Refused`], unchanged.
    pub fn preserve<T: Any>(
        &mut self,
        family: Family<T>,
        session: &str,
        token: u64,
        object: T,
        p: &mut P,
    ) -> Result<Key<T>, Refused<T>> {
        self.luo
            .preserve(session, token, family.name(), object, p, &mut self.tracker)?;
        Ok(family.key(session, token))
    }

    /// Hands on the objects the previous kernel could not read
    /// ([`Finished::carried`], from [`Incoming::finish`]): each keeps its
    /// pages, preserved again here, and its payloads, unchanged, in the
    /// handoff this side writes. Returns those it could not carry, each
    /// with why (they are lost at the kexec unless carried again, or
    /// given up with [`Carried::discard`]).
    ///
    /// Any order: shared state is carried before the objects that depend
    /// on it. A dependent whose shared state this kernel *read* (not
    /// carried) goes on only if that state is given again, under the same
    /// session and token ([`Outgoing::share`]), before this call.
    pub fn carry(&mut self, carried: Vec<Carried>, p: &mut P) -> Vec<Box<Refused<Carried>>> {
        let mut refused = Vec::new();
        let (shared, dependents): (Vec<Carried>, Vec<Carried>) =
            carried.into_iter().partition(|c| c.needs().is_none());
        for c in shared.into_iter().chain(dependents) {
            if let Err(r) = self.luo.carry(c, p, &mut self.tracker) {
                refused.push(r);
            }
        }
        refused
    }

    /// Opts `session` out of carry-through ([`Outgoing::set_drop_unread`](crate::Outgoing::set_drop_unread)).
    pub fn set_drop_unread(&mut self, session: &str, drop: bool) -> Result<(), LuoError> {
        self.luo.set_drop_unread(session, drop)
    }

    /// Gives shared state (a pool behind many objects, say) as `token` of
    /// `session`: preserved with its first dependent
    /// ([`Outgoing::preserve_with`]), restored first in the next kernel,
    /// finished after its last dependent ([`Outgoing::share`](crate::Outgoing::share)).
    pub fn share<T: Any>(
        &mut self,
        family: Family<T>,
        session: &str,
        token: u64,
        object: T,
    ) -> Result<Key<T>, Refused<T>> {
        self.luo.share(session, token, family.name(), object)?;
        Ok(family.key(session, token))
    }

    /// [`Outgoing::preserve`] for an object that depends on the shared
    /// state `needs` ([`Outgoing::preserve_with`](crate::Outgoing::preserve_with)): in the next kernel it is
    /// read only if that is, and its handler's
    /// [`Handler::retrieve_dependent`] gets it.
    pub fn preserve_with<T: Any, S>(
        &mut self,
        family: Family<T>,
        session: &str,
        token: u64,
        object: T,
        needs: &Key<S>,
        p: &mut P,
    ) -> Result<Key<T>, Refused<T>> {
        self.luo.preserve_with(
            session,
            token,
            family.name(),
            object,
            (&needs.session, needs.token),
            p,
            &mut self.tracker,
        )?;
        Ok(family.key(session, token))
    }

    /// Takes an object back before the kexec, unpreserved.
    pub fn unpreserve<T: Any>(&mut self, key: &Key<T>, p: &mut P) -> Result<T, LuoError> {
        self.luo.unpreserve(
            &key.session,
            key.token,
            key.family.name(),
            p,
            &mut self.tracker,
        )
    }

    /// What the next kernel (reading `next`) will do with each object.
    pub fn preflight(&self, next: &ReadList<'_>) -> Vec<Plan> {
        self.luo.preflight(next)
    }

    /// Freezes every object (all or nothing), by `policy`: the side that
    /// is frozen can only write the handoff, say what it keeps, or thaw.
    /// On refusal nothing changed, and the outgoing side comes back with
    /// why ([`NotFrozen`]).
    pub fn freeze(mut self, p: &mut P, policy: Freeze<'_>) -> Result<Frozen<P>, NotFrozen<P>> {
        let next = match policy {
            Freeze::NoLoss(next) => Some(next),
            Freeze::AllowLoss => None,
        };
        match self.luo.freeze(p, &mut self.tracker, next, false) {
            Ok(()) => Ok(Frozen {
                out: self,
                root: None,
            }),
            Err(error) => Err(NotFrozen {
                outgoing: Box::new(self),
                error,
            }),
        }
    }

    /// Gives up the kexec: every object comes back, unpreserved
    /// ([`Cancelled::into_object`]). Objects carried from the previous
    /// kernel stay, preserved: they are not this kernel's to give back.
    pub fn cancel(&mut self, p: &mut P) -> Vec<Cancelled> {
        self.luo.cancel(p, &mut self.tracker)
    }

    /// Preserves `2^order` frames at `phys` outside any object (a
    /// kernel's own subsystem data, which it restores itself and claims
    /// with [`Incoming::claim`]). Strict, as the tracker is: misaligned,
    /// overlapping, twice or in scratch is an error that changes nothing.
    pub fn preserve_frames(&mut self, phys: u64, order: u32) -> Result<(), TrackerError> {
        self.tracker.preserve(phys, order)
    }

    /// Undoes [`Outgoing::preserve_frames`].
    pub fn unpreserve_frames(&mut self, phys: u64, order: u32) -> Result<(), TrackerError> {
        self.tracker.unpreserve(phys, order)
    }

    /// Preserves the pages of `range` (page aligned) outside any object,
    /// as the fewest blocks.
    pub fn preserve_range(&mut self, range: Range) -> Result<(), TrackerError> {
        self.tracker.preserve_range(range.start, range.end)
    }

    /// Undoes [`Outgoing::preserve_range`].
    pub fn unpreserve_range(&mut self, range: Range) -> Result<(), TrackerError> {
        self.tracker.unpreserve_range(range.start, range.end)
    }

    /// The scratch areas.
    pub fn scratch(&self) -> &Scratch {
        &self.scratch
    }
}

/// Why [`Outgoing::freeze`] refused: the error, and the outgoing side
/// back, unchanged (every object still preserved and live).
pub struct NotFrozen<P: Platform> {
    /// The outgoing side, as it was before the freeze.
    pub outgoing: Box<Outgoing<P>>,
    /// Why the freeze was refused.
    pub error: LuoError,
}

impl<P: Platform> core::fmt::Debug for NotFrozen<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NotFrozen")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<P: Platform> core::fmt::Display for NotFrozen<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "freeze refused: {}", self.error)
    }
}

impl<P: Platform> core::error::Error for NotFrozen<P> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<P: Platform> From<NotFrozen<P>> for Error {
    fn from(n: NotFrozen<P>) -> Self {
        Error::Luo(n.error)
    }
}

/// The outgoing side once frozen ([`Outgoing::freeze`]): every object's
/// data is final, so all that remains is to write the handoff, learn what
/// the kexec must keep, and jump; or to thaw (a kexec that did not
/// happen). Nothing can be preserved, unpreserved or carried while
/// frozen: those calls are not here.
pub struct Frozen<P: Platform> {
    out: Outgoing<P>,
    /// The tracker chain of the last blob written.
    root: Option<handover::TrackerRoot>,
}

impl<P: Platform> Frozen<P> {
    /// Writes the handoff blob into `buf`: the tracker's chain (into
    /// pages from `p`), the scratch areas and the frozen objects. `hop`
    /// counts the kexecs before this one ([`Incoming::next_hop`] after a
    /// restore, 0 after a cold boot); `stamps` are TSC readings or zeros.
    ///
    /// `buf` needs 16 KiB plus every payload's bytes; too small is
    /// [`WriteError::NoSpace`] with the exact size the blob needs (up to
    /// [`handoff::MAX_BLOB`]: [`Error::needed`]), and then nothing is
    /// kept: the chain's pages go back to `p`, and a buffer of that size
    /// may be tried.
    pub fn write(
        &mut self,
        p: &mut P,
        buf: &mut [u8],
        hop: u32,
        stamps: Stamps,
    ) -> Result<Written, Error> {
        self.write_with(p, buf, hop, stamps, |_| Ok(()))
    }

    /// [`Frozen::write`], with the kernel's own subsystem nodes added by
    /// `extra` ([`HandoffWriter::subsystem`]).
    pub fn write_with(
        &mut self,
        p: &mut P,
        buf: &mut [u8],
        hop: u32,
        stamps: Stamps,
        mut extra: impl FnMut(&mut HandoffWriter<'_>) -> Result<(), WriteError>,
    ) -> Result<Written, Error> {
        let root = handover::write(&self.out.tracker, p)?;
        let mut attempt = |buf: &mut [u8]| -> Result<Written, Error> {
            let mut w = HandoffWriter::new(buf, hop, stamps, &root, &self.out.scratch)?;
            self.out.luo.write(&mut w)?;
            extra(&mut w)?;
            Ok(w.finish()?)
        };
        let r = match attempt(buf) {
            Err(e) => match e.needed() {
                // Too small: measured on the heap, so the caller learns
                // the whole size at once, not one item's worth.
                Some(at_least) => {
                    let mut size = at_least.max(buf.len().saturating_mul(2));
                    loop {
                        if size > handoff::MAX_BLOB {
                            break Err(e);
                        }
                        let mut v = Vec::new();
                        if v.try_reserve_exact(size).is_err() {
                            break Err(e);
                        }
                        v.resize(size, 0);
                        match attempt(&mut v) {
                            Ok(w) => {
                                break Err(Error::FdtWrite(WriteError::NoSpace { needed: w.len }));
                            }
                            Err(again) => match again.needed() {
                                Some(n) => size = n.max(size.saturating_mul(2)),
                                None => break Err(again),
                            },
                        }
                    }
                }
                None => Err(e),
            },
            ok => ok,
        };
        match r {
            // A blob written again replaces the last one: its chain goes.
            Ok(_) => {
                if let Some(old) = self.root.replace(root) {
                    handover::free(p, &old);
                }
            }
            Err(_) => handover::free(p, &root),
        }
        r
    }

    /// Everything the kexec must leave in place besides the blob, read
    /// back from the last blob's tracker chain the way the next kernel
    /// will read it (so this is also a check of what was written): every
    /// preserved range and every chain page. What a kexec loader is given
    /// as memory to keep (`kho_x86_64::kexec::prepare`'s `keep`).
    pub fn kept(&self, mem: &impl PhysMem, ram: &[Range]) -> Result<Vec<Range>, Error> {
        let root = self.root.ok_or(LuoError::State(
            "write the handoff before asking what it keeps",
        ))?;
        let mut log = crate::reserve::ReserveLog::new();
        handover::Reader::new(mem, root, ram, self.out.scratch.areas()).restore(&mut log)?;
        Ok(log.ranges.into_iter().map(|(r, _)| r).collect())
    }

    /// The scratch areas.
    pub fn scratch(&self) -> &Scratch {
        &self.out.scratch
    }

    /// The tracker, for the crate's own tests.
    #[cfg(test)]
    pub(crate) fn tracker_mut(&mut self) -> &mut Tracker {
        &mut self.out.tracker
    }

    /// Back to an outgoing side (a kexec that did not happen): the last
    /// blob's tracker chain goes back to `p`, every object is thawed and
    /// live again, still preserved.
    pub fn thaw(mut self, p: &mut P) -> Outgoing<P> {
        if let Some(root) = self.root.take() {
            handover::free(p, &root);
        }
        self.out.luo.unfreeze(p, &mut self.out.tracker);
        self.out
    }
}

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
    restored: Option<Restored>,
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
    /// [`Incoming::finish`] frees their memory.
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
        restored: Option<Restored>,
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

    /// The object `key`, restored from the best version both kernels have,
    /// and that version. The first call restores every object (in blob
    /// order, so the order of calls never changes the outcome); later
    /// calls give the same object or the same error.
    pub fn retrieve<T: Any>(
        &mut self,
        key: &Key<T>,
        p: &mut P,
    ) -> Result<(&mut T, &'static str), LuoError> {
        let mut ctx = RestoreCtx {
            ram: &self.ram,
            scratch: self.scratch.areas(),
            claims: &mut self.claims,
        };
        self.luo
            .retrieve(&key.session, key.token, key.family.name(), p, &mut ctx)
    }

    /// Retrieves and takes the object `key`, with the version it came in:
    /// it is the caller's from now on, with every page it adopted claimed.
    pub fn take<T: Any>(&mut self, key: &Key<T>, p: &mut P) -> Result<(T, &'static str), LuoError> {
        let (_, version) = self.retrieve(key, p)?;
        let object = self.luo.take(&key.session, key.token, key.family.name())?;
        Ok((object, version))
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
    /// [`Outgoing::preserve_frames`]): claim it before
    /// [`Incoming::finish`], or finish frees it. All or nothing; a page
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
    /// again: [`Outgoing::new`]).
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
    pub fn restored(&self) -> Option<Restored> {
        self.restored
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
    pub fn finish(mut self, p: &mut P) -> Result<Finished, LuoError> {
        self.luo
            .finish(p, self.claims, &self.ram, self.scratch.areas())
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
