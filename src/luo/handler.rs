//! The handler contract: what a family of objects implements to be preserved,
//! frozen into payloads and retrieved, and what it is given.

use super::LuoError;
pub use crate::abi::reads::Version;
use crate::claims::Claims;
use crate::platform::{FrameAlloc, MapFrames, PhysMem};
use crate::ranges::Range;
use crate::tracker::Tracker;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::any::Any;

/// What a platform must give the orchestrator and its handlers.
pub trait Platform: PhysMem + FrameAlloc + MapFrames {}
impl<P: PhysMem + FrameAlloc + MapFrames> Platform for P {}

/// One version's data for an object, as [`Handler::prepare`] stores it.
#[derive(Debug)]
pub struct Payload {
    /// The version's name.
    pub version: &'static str,
    /// Feature bits every reader must understand.
    pub required: u64,
    /// Feature bits a reader may ignore.
    pub optional: u64,
    /// The bytes that go into the handoff blob (a descriptor; bulk data
    /// stays in preserved memory that the descriptor names).
    pub data: Vec<u8>,
}

impl Payload {
    /// A payload of `version` with no feature bits.
    pub fn new(version: &'static str, data: Vec<u8>) -> Self {
        Self {
            version,
            required: 0,
            optional: 0,
            data,
        }
    }
}

/// What [`Handler::prepare`] stores: payloads, best version first, and
/// whatever the handler must keep to undo them ([`Handler::unprepare`]),
/// of its own type `U` ([`Handler::Undo`]).
#[derive(Debug)]
pub struct Prepared<U> {
    /// The payloads.
    pub payloads: Vec<Payload>,
    /// The handler's own state for undoing (record arrays, say).
    pub keep: Vec<U>,
    /// Preserved pages the payloads name besides the object's own
    /// ([`Handler::footprint`]): record arrays, chain pages. They join
    /// the object's footprint, so a kernel that cannot read the payloads
    /// still keeps them.
    pub footprint: Vec<Range>,
}

impl<U> Default for Prepared<U> {
    fn default() -> Self {
        Self {
            payloads: Vec::new(),
            keep: Vec::new(),
            footprint: Vec::new(),
        }
    }
}

/// The payload a handler's retrieve reads, as the previous kernel wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadIn<'a> {
    /// Its version: in a handler, one of its [`Handler::reads`]; in a
    /// view of a blob not restored (`NodeView`), the version as written.
    pub version: &'a str,
    /// Feature bits a reader must understand (all of them are in the
    /// handler's entry for this version).
    pub required: u64,
    /// Feature bits a reader may use or ignore.
    pub optional: u64,
    /// Its bytes.
    pub data: &'a [u8],
}

impl PayloadIn<'_> {
    /// The `index`th little-endian `u64` of the bytes, if they hold it.
    pub fn u64_at(&self, index: usize) -> Option<u64> {
        let at = index.checked_mul(8)?;
        let word = self.data.get(at..at.checked_add(8)?)?;
        Some(u64::from_le_bytes(word.try_into().ok()?))
    }

    /// The bytes as exactly `N` little-endian `u64`s: `None` if they are
    /// any other length (a payload checked whole in one call).
    pub fn words<const N: usize>(&self) -> Option<[u64; N]> {
        le_words(self.data)
    }
}

/// `words` as little-endian bytes: a payload of whole words, the writer's
/// side of [`PayloadIn::words`].
pub fn le_bytes(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// `bytes` as exactly `N` little-endian `u64`s, or `None` if they are any
/// other length (for a page a payload names, say).
pub fn le_words<const N: usize>(bytes: &[u8]) -> Option<[u64; N]> {
    if bytes.len() != N.checked_mul(8)? {
        return None;
    }
    let mut out = [0u64; N];
    for (w, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        *w = u64::from_le_bytes(b.try_into().ok()?);
    }
    Some(out)
}

/// What a handler's retrieve gets in the next kernel.
pub struct RestoreCtx<'a> {
    /// This kernel's RAM.
    pub ram: &'a [Range],
    /// The scratch areas.
    pub scratch: &'a [Range],
    /// The claims over preserved memory.
    pub claims: &'a mut Claims,
}

/// A handler of one family of objects, all of one Rust type
/// ([`Handler::Object`]).
///
/// The orchestrator calls it at each step of an object's life:
/// [`preserve`](Self::preserve) when the object joins a session,
/// [`prepare`](Self::prepare) at freeze (and [`unprepare`](Self::unprepare)
/// if the kexec is refused), [`retrieve`](Self::retrieve) in the next
/// kernel, [`discard`](Self::discard) at finish for an object restored but
/// never retrieved.
///
/// Errors: every method returns [`LuoError`]. kho's own errors convert
/// with `?` (claims, tracker, vmalloc, FDT writes); a handler's own
/// error type goes in with [`LuoError::handler`], which keeps it typed
/// (read it back with [`HandlerError::downcast_ref`](super::HandlerError::downcast_ref)).
pub trait Handler<P: Platform>: 'static {
    /// The objects of this family.
    type Object: 'static;
    /// What [`prepare`](Self::prepare) keeps per payload to undo it (`()`
    /// when there is nothing to undo).
    type Undo: 'static;
    /// The family (`memfd`).
    fn family(&self) -> &'static str;
    /// Versions it can write, best first.
    fn writes(&self) -> &[Version];
    /// Versions it can read, best first.
    fn reads(&self) -> &[Version];
    /// Whether [`Handler::prepare`] will store `version` for `obj` (a
    /// version may not carry every object: `memfd-v1` has no seals).
    /// Preflight asks this per object.
    fn can_write(&self, obj: &Self::Object, version: &Version) -> bool {
        let _ = (obj, version);
        true
    }
    /// Preserves what the object needs kept (its pages, in the tracker).
    /// On error nothing stays preserved.
    fn preserve(
        &mut self,
        obj: &mut Self::Object,
        p: &mut P,
        t: &mut Tracker,
    ) -> Result<(), LuoError>;
    /// The object's footprint: every physical range of preserved pages
    /// it owns (the pages its retrieve claims as data), in any order.
    /// Asked once, after [`Handler::preserve`], while the object cannot
    /// change its pages; it goes into the handoff in a form every kho
    /// reader understands, so that a kernel that cannot read the object
    /// still keeps all of it. Pages of payload metadata go in
    /// [`Prepared::footprint`] instead. Nothing by default: an object
    /// that owns no pages.
    fn footprint(&self, obj: &Self::Object, out: &mut Vec<Range>) {
        let _ = (obj, out);
    }
    /// Undoes [`Handler::preserve`].
    fn unpreserve(
        &mut self,
        obj: &mut Self::Object,
        p: &mut P,
        t: &mut Tracker,
    ) -> Result<(), LuoError>;
    /// At freeze: stores the object's data for one or more versions, best
    /// first, each a [`Payload`] (its bytes go into the blob; bulk data
    /// stays in preserved pages that the bytes name). Storing nothing is
    /// an error. On error, undo what this call did.
    fn prepare(
        &mut self,
        obj: &mut Self::Object,
        p: &mut P,
        t: &mut Tracker,
        out: &mut Prepared<Self::Undo>,
    ) -> Result<(), LuoError>;
    /// Undoes [`Handler::prepare`] (a failed freeze, a refused kexec).
    /// Nothing to do by default.
    fn unprepare(
        &mut self,
        obj: &mut Self::Object,
        prepared: Prepared<Self::Undo>,
        p: &mut P,
        t: &mut Tracker,
    ) {
        let _ = (obj, prepared, p, t);
    }
    /// In the next kernel: the object from `payload`, the best one for
    /// this handler's [`Handler::reads`] list (its version, its feature
    /// bits, required and optional, and its bytes from the blob; the
    /// orchestrator already checked that every required bit is one this
    /// handler reads).
    ///
    /// The contract, which the orchestrator cannot check for you:
    /// 1. Claim every preserved page the object adopts as its own
    ///    ([`Claims::claim`] through `ctx.claims`): a page not claimed is
    ///    given to the allocator at
    ///    [`Restored::finish`](crate::Restored::finish), under the live
    ///    object.
    /// 2. Claim pages it only reads and then lets go, such as record
    ///    arrays and vmalloc chains, as metadata ([`Claims::claim_meta`]):
    ///    they stay out of reach of every other object until finish.
    /// 3. Check every byte of the payload and every page it names before
    ///    trusting it; a bad payload is an error, never a guess. An
    ///    optional feature bit it does not know is ignored; a required one
    ///    never reaches it.
    /// 4. On error, release every data page it claimed
    ///    ([`Claims::release`]) and return the error: the object is then
    ///    reported lost, and its pages freed at finish.
    fn retrieve(
        &mut self,
        payload: &PayloadIn<'_>,
        p: &mut P,
        ctx: &mut RestoreCtx<'_>,
    ) -> Result<Self::Object, LuoError>;
    /// [`Handler::retrieve`] for an object that depends on shared state
    /// ([`Outgoing::preserve_with`](crate::Outgoing::preserve_with)): the shared
    /// object is restored first and lent here (`shared.get::<T>()`), so
    /// the dependent can take its part of it (a file its folios from a
    /// pool). By default the shared state is not needed.
    fn retrieve_dependent(
        &mut self,
        payload: &PayloadIn<'_>,
        shared: &mut Shared<'_>,
        p: &mut P,
        ctx: &mut RestoreCtx<'_>,
    ) -> Result<Self::Object, LuoError> {
        let _ = shared;
        self.retrieve(payload, p, ctx)
    }
    /// In the next kernel, at finish: gives up a restored object that
    /// nobody retrieved, releasing every page it claimed as data
    /// ([`Claims::release`]), so that finish frees them. Dependents are
    /// discarded before the shared state they depend on.
    fn discard(&mut self, obj: Self::Object, p: &mut P, claims: &mut Claims);
}

/// Shared state restored before its dependents, lent to
/// [`Handler::retrieve_dependent`].
pub struct Shared<'a> {
    obj: &'a mut dyn Any,
}

impl<'a> Shared<'a> {
    pub(super) fn new(obj: &'a mut dyn Any) -> Self {
        Self { obj }
    }

    /// The shared object, if it is a `T`.
    pub fn get<T: Any>(&mut self) -> Option<&mut T> {
        self.obj.downcast_mut::<T>()
    }
}

/// What the orchestrator keeps of a prepared object: the payloads and the
/// handler's undo state, its type erased.
pub(super) struct Frozen {
    pub payloads: Vec<Payload>,
    pub keep: Box<dyn Any>,
    /// The payloads' metadata pages ([`Prepared::footprint`]).
    pub footprint: Vec<Range>,
}

impl core::fmt::Debug for Frozen {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Frozen")
            .field("payloads", &self.payloads)
            .finish_non_exhaustive()
    }
}

/// A [`Handler`] with its object type erased, so that one orchestrator
/// holds handlers of many types. Only the orchestrator sees it; a wrong
/// type is [`LuoError::WrongFamily`], never a panic.
pub(super) trait Erased<P: Platform> {
    fn family(&self) -> &'static str;
    fn writes(&self) -> &[Version];
    fn reads(&self) -> &[Version];
    fn owns(&self, obj: &dyn Any) -> bool;
    fn can_write(&self, obj: &dyn Any, version: &Version) -> bool;
    fn footprint(&self, obj: &dyn Any, out: &mut Vec<Range>);
    fn preserve(&mut self, obj: &mut dyn Any, p: &mut P, t: &mut Tracker) -> Result<(), LuoError>;
    fn unpreserve(&mut self, obj: &mut dyn Any, p: &mut P, t: &mut Tracker)
    -> Result<(), LuoError>;
    fn prepare(
        &mut self,
        obj: &mut dyn Any,
        p: &mut P,
        t: &mut Tracker,
    ) -> Result<Frozen, LuoError>;
    fn unprepare(&mut self, obj: &mut dyn Any, frozen: Frozen, p: &mut P, t: &mut Tracker);
    fn retrieve(
        &mut self,
        payload: &PayloadIn<'_>,
        shared: Option<&mut Shared<'_>>,
        p: &mut P,
        ctx: &mut RestoreCtx<'_>,
    ) -> Result<Box<dyn Any>, LuoError>;
    fn discard(&mut self, obj: Box<dyn Any>, p: &mut P, claims: &mut Claims);
}

/// `obj` as the family's object type, or [`LuoError::WrongFamily`].
fn typed<'o, T: 'static>(obj: &'o mut dyn Any, family: &str) -> Result<&'o mut T, LuoError> {
    obj.downcast_mut::<T>()
        .ok_or_else(|| LuoError::WrongFamily(family.into()))
}

impl<P: Platform, H: Handler<P>> Erased<P> for H {
    fn family(&self) -> &'static str {
        Handler::family(self)
    }
    fn writes(&self) -> &[Version] {
        Handler::writes(self)
    }
    fn reads(&self) -> &[Version] {
        Handler::reads(self)
    }
    fn owns(&self, obj: &dyn Any) -> bool {
        obj.is::<H::Object>()
    }
    fn can_write(&self, obj: &dyn Any, version: &Version) -> bool {
        obj.downcast_ref::<H::Object>()
            .is_some_and(|o| Handler::can_write(self, o, version))
    }
    fn footprint(&self, obj: &dyn Any, out: &mut Vec<Range>) {
        if let Some(o) = obj.downcast_ref::<H::Object>() {
            Handler::footprint(self, o, out);
        }
    }
    fn preserve(&mut self, obj: &mut dyn Any, p: &mut P, t: &mut Tracker) -> Result<(), LuoError> {
        let o = typed::<H::Object>(obj, Handler::family(self))?;
        Handler::preserve(self, o, p, t)
    }
    fn unpreserve(
        &mut self,
        obj: &mut dyn Any,
        p: &mut P,
        t: &mut Tracker,
    ) -> Result<(), LuoError> {
        let o = typed::<H::Object>(obj, Handler::family(self))?;
        Handler::unpreserve(self, o, p, t)
    }
    fn prepare(
        &mut self,
        obj: &mut dyn Any,
        p: &mut P,
        t: &mut Tracker,
    ) -> Result<Frozen, LuoError> {
        let o = typed::<H::Object>(obj, Handler::family(self))?;
        let mut out = Prepared::<H::Undo>::default();
        Handler::prepare(self, o, p, t, &mut out)?;
        if out.payloads.is_empty() {
            Handler::unprepare(self, o, out, p, t);
            return Err(LuoError::NothingStored(Handler::family(self).into()));
        }
        let payloads = core::mem::take(&mut out.payloads);
        Ok(Frozen {
            payloads,
            footprint: core::mem::take(&mut out.footprint),
            keep: Box::new(out.keep),
        })
    }
    fn unprepare(&mut self, obj: &mut dyn Any, frozen: Frozen, p: &mut P, t: &mut Tracker) {
        if let (Some(o), Ok(keep)) = (
            obj.downcast_mut::<H::Object>(),
            frozen.keep.downcast::<Vec<H::Undo>>(),
        ) {
            let prepared = Prepared {
                payloads: frozen.payloads,
                keep: *keep,
                footprint: frozen.footprint,
            };
            Handler::unprepare(self, o, prepared, p, t);
        }
    }
    fn retrieve(
        &mut self,
        payload: &PayloadIn<'_>,
        shared: Option<&mut Shared<'_>>,
        p: &mut P,
        ctx: &mut RestoreCtx<'_>,
    ) -> Result<Box<dyn Any>, LuoError> {
        Ok(Box::new(match shared {
            Some(s) => Handler::retrieve_dependent(self, payload, s, p, ctx)?,
            None => Handler::retrieve(self, payload, p, ctx)?,
        }))
    }
    fn discard(&mut self, obj: Box<dyn Any>, p: &mut P, claims: &mut Claims) {
        if let Ok(o) = obj.downcast::<H::Object>() {
            Handler::discard(self, *o, p, claims);
        }
    }
}
