//! The kernel that kexecs: [`Outgoing`] while objects are preserved,
//! [`Frozen`] once they are final.

use super::{Freeze, Key};
use crate::Error;
use crate::luo::{
    Cancelled, Carried, Family, Handler, Luo, LuoError, Plan, Platform, ReadList, Refused, Version,
};
use crate::ranges::Range;
use crate::scratch::Scratch;
use crate::tracker::Root;
use crate::tracker::{Tracker, TrackerError, chain};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::any::Any;

/// The kernel that is about to kexec: its tracker, its orchestrator and
/// its scratch areas.
pub struct Outgoing<P: Platform> {
    pub(super) scratch: Scratch,
    pub(super) tracker: Tracker,
    pub(super) luo: Luo<P>,
}

impl<P: Platform> Outgoing<P> {
    /// An empty outgoing side over `scratch` (chosen at a cold boot by the
    /// architecture layer, or [`Incoming::scratch`](crate::Incoming::scratch)
    /// after a kexec: scratch never moves).
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
        // The tracker's new pages go where they will be handed over now,
        // so that freeze finds nothing to write for it.
        self.tracker.keep_in_place(p);
        Ok(family.key(session, token))
    }

    /// Hands on the objects the previous kernel could not read
    /// ([`Finished::carried`](crate::luo::Finished::carried), from
    /// [`Restored::finish`](crate::Restored::finish)): each keeps its pages,
    /// preserved again here, and its payloads, unchanged, in the handoff this
    /// side writes. Returns those it could not carry, each with why (they are
    /// lost at the kexec unless carried again, or given up with
    /// [`Carried::discard`]).
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

    /// Opts `session` out of carry-through ([`Outgoing::set_drop_unread`]).
    pub fn set_drop_unread(&mut self, session: &str, drop: bool) -> Result<(), LuoError> {
        self.luo.set_drop_unread(session, drop)
    }

    /// Gives shared state (a pool behind many objects, say) as `token` of
    /// `session`: preserved with its first dependent
    /// ([`Outgoing::preserve_with`]), restored first in the next kernel,
    /// finished after its last dependent ([`Outgoing::share`]).
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
    /// state `needs` ([`Outgoing::preserve_with`]): in the next kernel it is
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
        self.tracker.keep_in_place(p);
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
    /// with [`Incoming::claim`](crate::Incoming::claim)). Strict, as the tracker is: misaligned,
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

    /// The tracker, for the crate's own tests to count what is preserved.
    #[cfg(test)]
    pub(crate) fn tracker(&self) -> &Tracker {
        &self.tracker
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
/// data is final, so all that remains is for the architecture layer to
/// hand it over (write the handoff, learn what the kexec must keep, and
/// jump: `kho_x86_64::handover::hand_over`, or `Frozen::write` with
/// feature `arch`); or to thaw (a kexec that did not happen). Nothing can
/// be preserved, unpreserved or carried while frozen: those calls are not
/// here.
///
/// ```compile_fail,E0599
/// fn late<P: kho::luo::Platform>(f: &mut kho::Frozen<P>, p: &mut P) {
///     let _ = f.preserve_frames(0x10_0000, 0);
/// }
/// ```
pub struct Frozen<P: Platform> {
    pub(super) out: Outgoing<P>,
    /// The tracker's root in the last blob written.
    pub(super) root: Option<Root>,
}

impl<P: Platform> core::fmt::Debug for Outgoing<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Outgoing")
            .field("objects", &self.luo.objects().count())
            .field("tracker", &self.tracker)
            .finish_non_exhaustive()
    }
}

impl<P: Platform> core::fmt::Debug for Frozen<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Frozen")
            .field("outgoing", &self.out)
            .field("written", &self.root.is_some())
            .finish()
    }
}

impl<P: Platform> Frozen<P> {
    /// The tracker, for the crate's own tests to count what is preserved.
    #[cfg(test)]
    pub(crate) fn tracker(&self) -> &Tracker {
        &self.out.tracker
    }

    /// Ends this kernel's side at a handover on the host fake: the
    /// tracker's frames, lent while it lived, go back to `p` as they are
    /// (still allocated), where the next kernel reads them. A kernel has
    /// nothing of the kind to do: its lent frames are the frames.
    #[cfg(any(test, feature = "host"))]
    pub fn hand_back(self, p: &mut P) {
        self.out.tracker.hand_back(p);
    }

    /// Back to an outgoing side (a kexec that did not happen): the last
    /// blob's tracker chain goes back to `p`, every object is thawed and
    /// live again, still preserved.
    pub fn thaw(mut self, p: &mut P) -> Outgoing<P> {
        if let Some(Root::Chain(root)) = self.root.take() {
            chain::free(p, &root);
        }
        self.out.luo.unfreeze(p, &mut self.out.tracker);
        self.out
    }
}
