//! The live update orchestrator: objects in named sessions, handed to the
//! next kernel with first-class versioning (`kho-luo-v2`). Kernels reach it
//! through the front door ([`crate::Outgoing`], [`crate::Incoming`]); this
//! module holds what a handler author needs and the orchestrator itself,
//! which is internal.
//!
//! A [`Handler`] serves one *family* of objects (say `memfd`). It lists the
//! [`Version`]s it can write and those it can read, best first. At freeze,
//! [`Handler::prepare`] stores the object's data for one or more versions
//! on a [`Prepared`] (for a memfd: both `memfd-v2` and `memfd-v1`, each its
//! own payload). The next kernel picks, for each object, the best version
//! both sides have ([`crate::Incoming::take`]); pages only an unchosen
//! version used are never claimed, so [`crate::Incoming::finish`] frees
//! them.
//!
//! Feature bits refine a version: a payload carries the bits a reader
//! *must* understand (`required`) and bits it *may* ignore (`optional`); a
//! reader's [`Version::features`] are the bits it understands. A payload is
//! readable when `required & !features == 0`.
//!
//! Life cycle (first kernel): `create_session`, `preserve` (and
//! `unpreserve` or `cancel` to undo), `preflight` against the next image's
//! list ([`ReadList`], from its ELF note), `freeze` (all or nothing, into a
//! [`crate::Frozen`]), `write` into the handoff blob, kexec. Next kernel:
//! [`crate::Incoming`] reads the node, then `retrieve` (idempotent, in any
//! order), `take`, `finish` (once; it consumes the incoming side).
//!
//! The outcome never depends on the order of retrieval: the first
//! retrieve (or finish, if none) restores every incoming object, in blob
//! order, so which of two objects that name the same page is refused is
//! fixed by the blob, not by the caller, and what is carried does not
//! depend on what was retrieved. Objects restored but never retrieved, or
//! retrieved but never taken, are discarded at finish
//! ([`Handler::discard`]) and reported lost.
//!
//! Nothing on the next kernel's path panics: an object no handler can read
//! is a typed error naming the versions on both sides
//! ([`LuoError::NoReadableVersion`]), its memory is freed at finish, and
//! every other object still restores.

mod error;
mod handler;
pub mod memfd;
mod node;
#[cfg(test)]
mod tests;
mod view;

pub use crate::abi::luo::LUO_V1;
pub use error::{HandlerError, Loss, LuoError, Refused};
pub use handler::{Handler, Payload, PayloadIn, Platform, Prepared, RestoreCtx, Shared, Version};

pub use crate::abi::reads::{NOTE_NAME, NOTE_READS, ReadList, ReadsNote, reads_len};
use handler::{Erased, Frozen};
pub use node::{LUO_VERSION, NODE};
pub use view::{NodeView, ObjectView};

use crate::abi::luo as abi;
use crate::claims::Claims;
use crate::handoff::{Handoff, HandoffWriter};
use crate::ranges::Range;
use crate::tracker::Tracker;
use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::any::Any;
use zerocopy::FromBytes;

/// Where an object stands.
#[derive(Debug)]
enum Held {
    /// In the first kernel: the object, and its payloads once frozen.
    Live(Box<dyn Any>, Option<Frozen>),
    /// In the next kernel, not retrieved yet: its payloads from the blob.
    Incoming(Vec<InPayload>),
    /// Restored, from the payload of this version (of this many bytes);
    /// `true` once the owner retrieved it.
    Restored(Box<dyn Any>, &'static str, usize, bool),
    /// Retrieve failed (kept so that a second retrieve says the same).
    Failed(LuoError),
    /// Carried: this kernel cannot read it, keeps every page of its
    /// footprint and hands its payloads on unchanged.
    Carried(Vec<InPayload>),
    /// Shared state given with [`Luo::share`], not preserved until its
    /// first dependent is.
    Pending(Box<dyn Any>),
    /// Taken by its owner.
    Taken,
}

/// A payload read from the blob.
#[derive(Clone, Debug, PartialEq, Eq)]
struct InPayload {
    version: String,
    required: u64,
    optional: u64,
    data: Vec<u8>,
}

#[derive(Debug)]
struct Object {
    token: u64,
    family: String,
    held: Held,
    /// Every page the object owns as data, as sorted disjoint ranges: from
    /// its handler at preserve, or from the blob (empty if the blob gave
    /// none: such an object cannot be carried).
    footprint: Vec<Range>,
    /// Where it comes from (for an object preserved here, set at write).
    origin: Origin,
    /// The blob gave a footprint that is malformed: the object can be
    /// read, never carried.
    bad_footprint: bool,
    /// The shared object (session, token) it depends on.
    needs: Option<(String, u64)>,
    /// Given with [`Luo::share`]: preserved with its first dependent,
    /// unpreserved with its last.
    lazy: bool,
    /// A footprint too long to list inline, written to a preserved array
    /// when the object was preserved (or carried).
    fp_array: Option<(crate::vmalloc::Vmalloc, crate::vmalloc::VmallocRoot)>,
    /// From the blob: the footprint array's root and extent count.
    fp_in: Option<(crate::vmalloc::VmallocRoot, u64)>,
    /// Restored here: from this version, a payload of this many bytes
    /// (kept after the object is taken).
    chosen: Option<(&'static str, usize)>,
}

impl Object {
    /// Object `token` of `family`, held as `held`: no footprint yet, no
    /// origin, needing nothing.
    fn new(token: u64, family: String, held: Held) -> Self {
        Self {
            token,
            family,
            held,
            footprint: Vec::new(),
            origin: Origin::default(),
            bad_footprint: false,
            needs: None,
            lazy: false,
            fp_array: None,
            fp_in: None,
            chosen: None,
        }
    }
}

/// Writes `o`'s footprint to a preserved array if it is too long to list
/// inline (at preserve: outside the blackout).
fn stage_array<P: Platform>(o: &mut Object, p: &mut P, t: &mut Tracker) -> Result<(), LuoError> {
    if o.footprint.len() <= abi::MAX_FOOTPRINT_EXTENTS || o.fp_array.is_some() {
        return Ok(());
    }
    if o.footprint.len() as u64 > abi::MAX_FOOTPRINT_ARRAY {
        // Too many runs even for an array: not carriable.
        return Ok(());
    }
    let bytes = o.footprint.len() * 16;
    let mut v =
        crate::vmalloc::Vmalloc::new(p, bytes, 0).map_err(|error| LuoError::FootprintArray {
            runs: o.footprint.len(),
            error,
        })?;
    {
        let buf = v.bytes_mut(p);
        for (r, out) in o.footprint.iter().zip(buf.chunks_exact_mut(16)) {
            let e = abi::Extent {
                start: r.start.into(),
                pages: (r.len() / crate::PAGE_SIZE).into(),
            };
            out.copy_from_slice(zerocopy::IntoBytes::as_bytes(&e));
        }
    }
    match v.preserve_summed(p, t) {
        Ok(root) => {
            o.fp_array = Some((v, root));
            Ok(())
        }
        Err(error) => {
            v.free(p);
            Err(LuoError::FootprintArray {
                runs: o.footprint.len(),
                error,
            })
        }
    }
}

/// Unpreserves and frees `o`'s footprint array, if it has one.
fn drop_array<P: Platform>(o: &mut Object, p: &mut P, t: &mut Tracker) {
    if let Some((mut v, _)) = o.fp_array.take() {
        let _ = v.unpreserve(p, t);
        v.free(p);
    }
}

#[derive(Debug)]
struct Session {
    name: String,
    objects: Vec<Object>,
    /// Objects no kernel can read are dropped, not carried.
    drop_unread: bool,
    /// Made by [`Luo::create_session`] (not only to hold carried objects).
    explicit: bool,
}

/// Where an object comes from: the hop of the handoff that first held it,
/// and how many kernels have carried it since without reading it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// The `hop` of the first handoff that held it.
    pub hop: u32,
    /// Kernels that carried it without reading it.
    pub carried: u32,
}

/// What is known of one incoming object ([`Incoming::info`](crate::Incoming::info),
/// [`crate::Incoming::info`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// The hop of the first handoff that held it, and how many kernels
    /// carried it since without reading it.
    pub origin: Origin,
    /// The version it was restored from, once restored here.
    pub version: Option<&'static str>,
    /// The bytes of that version's payload in the blob, once restored.
    pub payload_bytes: Option<usize>,
    /// Runs of pages in its footprint as the blob gives it (inline and in
    /// its footprint array; 0: it cannot be carried), or as this kernel
    /// carries it.
    pub footprint_runs: u64,
    /// Bytes of its footprint, once it is whole here (carried); before,
    /// the inline runs' bytes only.
    pub footprint_bytes: u64,
    /// What became of it here so far.
    pub state: State,
}

/// What became of an incoming object ([`Info::state`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Not restored yet: the first retrieve (or finish) restores it.
    Waiting,
    /// Restored, waiting to be taken (finish discards it otherwise).
    Restored,
    /// Taken by its owner.
    Taken,
    /// Carried: this kernel reads none of its versions and keeps it for
    /// a later one.
    Carried,
    /// Not restored, and why (it is lost at finish).
    Failed(LuoError),
}

/// What the next kernel will do with an object ([`Plan::outcome`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It reads the object, from this version.
    Read(String),
    /// It cannot read the object and keeps it for a later kernel: every
    /// page stays preserved, the payloads go on unchanged.
    Carried,
    /// It loses the object: it has no kho orchestrator that can read the
    /// node, or it cannot read the object and may not (session opted out)
    /// or cannot (no footprint) carry it.
    Lost,
}

/// An object a kernel carried without reading it, between
/// [`Incoming::finish`](crate::Incoming::finish) (which hands it out in [`Finished::carried`]) and
/// [`Outgoing::carry`](crate::Outgoing::carry) (which makes it part of the next handoff). Its pages are
/// claimed: finish never frees them.
#[derive(Debug, PartialEq, Eq)]
pub struct Carried {
    /// Its session.
    pub session: String,
    /// Its token.
    pub token: u64,
    /// Its family.
    pub family: String,
    /// Where it comes from (not counting this kernel).
    pub origin: Origin,
    drop_unread: bool,
    payloads: Vec<InPayload>,
    footprint: Vec<Range>,
    needs: Option<(String, u64)>,
}

impl Carried {
    /// The ranges it owns (sorted, disjoint).
    pub fn footprint(&self) -> &[Range] {
        &self.footprint
    }

    /// Its payloads' versions, best first.
    pub fn versions(&self) -> impl Iterator<Item = &str> + '_ {
        self.payloads.iter().map(|p| p.version.as_str())
    }

    /// The shared object (session, token) it depends on, if any.
    pub fn needs(&self) -> Option<(&str, u64)> {
        self.needs.as_ref().map(|(s, t)| (s.as_str(), *t))
    }

    /// Gives the object up on purpose: every range of its footprint goes
    /// to `p`'s allocator ([`FrameAlloc::add_free`](crate::platform::FrameAlloc::add_free)),
    /// as finish gives what nobody adopted. Returns the bytes freed.
    ///
    /// This is the only way to free a carried object's pages: they are
    /// claimed by this kernel, and nothing else knows which they are.
    /// Discard a dependent with (or before) its shared state: a carried
    /// dependent needs it to be handed on.
    pub fn discard(self, p: &mut impl crate::platform::FrameAlloc) -> u64 {
        let mut freed = 0u64;
        for &r in &self.footprint {
            p.add_free(r);
            freed = freed.saturating_add(r.len());
        }
        freed
    }
}

/// The footprint written for `o`: its own, with its payloads' pages once
/// frozen; `None` when it has none, or more extents than the node takes
/// (then nothing is copied: a file of scattered folios pays nothing).
fn footprint_of(o: &Object) -> Option<Vec<Range>> {
    if o.fp_array.is_some() {
        // The data extents are in the array; inline, the payloads' pages.
        return match &o.held {
            Held::Live(_, Some(f)) if !f.footprint.is_empty() => Some(merged(f.footprint.clone())),
            _ => None,
        };
    }
    if o.footprint.is_empty() || o.footprint.len() > abi::MAX_FOOTPRINT_EXTENTS {
        return None;
    }
    let all = match &o.held {
        Held::Live(_, Some(f)) if !f.footprint.is_empty() => {
            let mut all = o.footprint.clone();
            all.extend_from_slice(&f.footprint);
            merged(all)
        }
        _ => o.footprint.clone(),
    };
    (all.len() <= abi::MAX_FOOTPRINT_EXTENTS).then_some(all)
}

/// Whether `o`'s footprint is written (inline, or in an array).
fn carriable(o: &Object) -> bool {
    o.fp_array.is_some() || footprint_of(o).is_some()
}

/// Sorts `v` and joins ranges that touch or overlap.
fn merged(mut v: Vec<Range>) -> Vec<Range> {
    v.retain(|r| !r.is_empty());
    v.sort_unstable_by_key(|r| r.start);
    let mut out: Vec<Range> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// One row of [`Outgoing::preflight`](crate::Outgoing::preflight): what the next kernel will do with an
/// object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Its session.
    pub session: String,
    /// Its token.
    pub token: u64,
    /// Its family.
    pub family: String,
    /// Read (and from which version), carried, or lost.
    pub outcome: Outcome,
}

impl Plan {
    /// The version the next kernel will read, if it reads the object.
    pub fn version(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Read(v) => Some(v),
            _ => None,
        }
    }
}

/// A registered family whose objects are `T`s: what [`Outgoing::register`](crate::Outgoing::register)
/// returns, to name the family in typed calls.
pub struct Family<T> {
    name: &'static str,
    _objects: core::marker::PhantomData<fn() -> T>,
}

impl<T> Family<T> {
    /// The family's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl<T> Clone for Family<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Family<T> {}

impl<T> PartialEq for Family<T> {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl<T> Eq for Family<T> {}

impl<T> core::fmt::Debug for Family<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Family({})", self.name)
    }
}

/// A payload of an object not restored yet, as the blob has it
/// ([`NodeView::objects`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IncomingPayload<'a> {
    /// Its version.
    pub version: &'a str,
    /// Feature bits a reader must understand.
    pub required: u64,
    /// Feature bits a reader may ignore.
    pub optional: u64,
    /// Its bytes.
    pub data: &'a [u8],
}

/// An object given back by [`Outgoing::cancel`](crate::Outgoing::cancel): take it as its own type with
/// [`Cancelled::into_object`].
#[derive(Debug)]
pub struct Cancelled {
    /// Its session.
    pub session: String,
    /// Its token.
    pub token: u64,
    /// Its family.
    pub family: String,
    object: Box<dyn Any>,
}

impl Cancelled {
    /// The object, if it is a `T` (else `self` back, unchanged).
    pub fn into_object<T: Any>(self) -> Result<T, Self> {
        match self.object.downcast::<T>() {
            Ok(o) => Ok(*o),
            Err(object) => Err(Self { object, ..self }),
        }
    }
}

/// The orchestrator of one kernel.
pub(crate) struct Luo<P: Platform> {
    handlers: Vec<Box<dyn Erased<P>>>,
    sessions: Vec<Session>,
    frozen: bool,
    /// Why [`Luo::incoming`] could not read the blob's node, if it could
    /// not: every object in it is lost, and finish says so.
    unread: Option<LuoError>,
    /// Every incoming object has been restored (the first retrieve did).
    restored: bool,
    finished: bool,
}

/// What [`Incoming::finish`](crate::Incoming::finish) did.
#[derive(Debug, PartialEq, Eq)]
pub struct Finished {
    /// Bytes given back to the allocator: preserved pages nobody adopted
    /// and every page claimed as metadata.
    pub freed: u64,
    /// The same, as ranges in address order.
    pub ranges: Vec<Range>,
    /// Objects that were not restored, each with why (`session`, `token`,
    /// the error).
    pub lost: Vec<(String, u64, LuoError)>,
    /// If the blob's `luo` node could not be read at all: why. Every object
    /// it held is lost, and none of them is in `lost` (their names could
    /// not be trusted).
    pub unread: Option<LuoError>,
    /// Objects this kernel could not read and keeps for a later one:
    /// their pages stay claimed (never freed, never given to the
    /// allocator). Hand them to the next handoff with [`Outgoing::carry`](crate::Outgoing::carry), or
    /// they are lost at the next kexec.
    pub carried: Vec<Carried>,
}

impl<P: Platform> Default for Luo<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Platform> Luo<P> {
    /// An orchestrator with no handler and no session.
    pub(crate) fn new() -> Self {
        Self {
            handlers: Vec::new(),
            sessions: Vec::new(),
            frozen: false,
            unread: None,
            restored: false,
            finished: false,
        }
    }

    /// Registers a handler, for the family it names; its lists may not
    /// name a version twice. Returns the family, typed by its objects.
    pub(crate) fn register<H: Handler<P>>(&mut self, h: H) -> Result<Family<H::Object>, LuoError> {
        let family = Handler::family(&h);
        if self.restored || self.finished {
            return Err(LuoError::State("handlers are registered before retrieve"));
        }
        if self.handler(family).is_some() {
            return Err(LuoError::DuplicateFamily(family.to_string()));
        }
        for list in [Handler::writes(&h), Handler::reads(&h)] {
            for (i, v) in list.iter().enumerate() {
                if list
                    .iter()
                    .skip(i.saturating_add(1))
                    .any(|w| w.name == v.name)
                {
                    return Err(LuoError::DuplicateVersion {
                        family: family.to_string(),
                        version: v.name.to_string(),
                    });
                }
            }
        }
        self.handlers
            .try_reserve(1)
            .map_err(|_| LuoError::OutOfMemory)?;
        self.handlers.push(Box::new(h));
        Ok(Family {
            name: family,
            _objects: core::marker::PhantomData,
        })
    }

    fn handler(&self, family: &str) -> Option<usize> {
        self.handlers.iter().position(|h| h.family() == family)
    }

    /// The versions every registered handler reads, for this kernel's
    /// reads note (`NAME+FEATURES` entries).
    pub(crate) fn reads(&self) -> impl Iterator<Item = Version> + '_ {
        self.handlers.iter().flat_map(|h| h.reads().iter().copied())
    }

    /// Creates an empty session.
    /// A session that only holds objects carried from the previous kernel
    /// ([`Luo::carry`]) is taken over: this kernel's objects join them.
    pub(crate) fn create_session(&mut self, name: &str) -> Result<(), LuoError> {
        if self.frozen {
            return Err(LuoError::State("sessions are frozen"));
        }
        if let Some(s) = self.sessions.iter_mut().find(|s| s.name == name) {
            if s.explicit {
                return Err(LuoError::DuplicateSession(name.to_string()));
            }
            s.explicit = true;
            return Ok(());
        }
        self.sessions
            .try_reserve(1)
            .map_err(|_| LuoError::OutOfMemory)?;
        self.sessions.push(Session {
            name: name.to_string(),
            objects: Vec::new(),
            drop_unread: false,
            explicit: true,
        });
        Ok(())
    }

    /// Opts `session` out of carry-through (or back in): when a later
    /// kernel cannot read one of its objects, the object is dropped and
    /// its memory freed, instead of kept for a kernel that can. For data
    /// that must not outlive a kernel able to check it (keys, leases);
    /// everything else is better carried.
    pub(crate) fn set_drop_unread(&mut self, session: &str, drop: bool) -> Result<(), LuoError> {
        if self.frozen {
            return Err(LuoError::State("sessions are frozen"));
        }
        self.session(session)?.drop_unread = drop;
        Ok(())
    }

    fn session(&mut self, name: &str) -> Result<&mut Session, LuoError> {
        self.sessions
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| LuoError::NoSession(name.to_string()))
    }

    /// Preserves `object` of `family` under `token` in `session`. On error
    /// the object comes back unchanged.
    pub(crate) fn preserve<T: Any>(
        &mut self,
        session: &str,
        token: u64,
        family: &str,
        mut object: T,
        p: &mut P,
        t: &mut Tracker,
    ) -> Result<(), Refused<T>> {
        let refuse = |error, object| Err(Refused { error, object });
        let h = match self.admit(session, token, family, &object) {
            Ok(h) => h,
            Err(e) => return refuse(e, object),
        };
        if let Err(e) = self.handlers[h].preserve(&mut object, p, t) {
            return refuse(e, object);
        }
        // The footprint, while the object's pages cannot change (and
        // outside the blackout: freeze only adds its payloads' pages).
        let mut footprint = Vec::new();
        self.handlers[h].footprint(&object, &mut footprint);
        let mut o = Object::new(token, family.to_string(), Held::Taken);
        o.footprint = merged(footprint);
        if let Err(e) = stage_array(&mut o, p, t) {
            let _ = self.handlers[h].unpreserve(&mut object, p, t);
            return refuse(e, object);
        }
        o.held = Held::Live(Box::new(object), None);
        if let Ok(s) = self.session(session) {
            s.objects.push(o);
        }
        Ok(())
    }

    /// Gives shared state (one huge-page pool behind many files, say) as
    /// object `token` of `session`: it is not preserved now, but with its
    /// first dependent ([`Luo::preserve_with`]), restored in the next
    /// kernel before any dependent, and discarded after the last. On
    /// error the object comes back unchanged.
    pub(crate) fn share<T: Any>(
        &mut self,
        session: &str,
        token: u64,
        family: &str,
        object: T,
    ) -> Result<(), Refused<T>> {
        if let Err(error) = self.admit(session, token, family, &object) {
            return Err(Refused { error, object });
        }
        let mut o = Object::new(token, family.to_string(), Held::Pending(Box::new(object)));
        o.lazy = true;
        if let Ok(s) = self.session(session) {
            s.objects.push(o);
        }
        Ok(())
    }

    /// Whether an object may join `session` as `token` of `family`: not
    /// frozen, a handler for the family that owns the object, the session
    /// there, the token free in it, and room for one more. Returns the
    /// handler's index.
    fn admit(
        &mut self,
        session: &str,
        token: u64,
        family: &str,
        object: &dyn Any,
    ) -> Result<usize, LuoError> {
        if self.frozen {
            return Err(LuoError::State("sessions are frozen"));
        }
        let h = self
            .handler(family)
            .ok_or_else(|| LuoError::NoHandler(family.to_string()))?;
        if !self.handlers[h].owns(object) {
            return Err(LuoError::WrongFamily(family.to_string()));
        }
        let s = self.session(session)?;
        if s.objects.iter().any(|o| o.token == token) {
            return Err(LuoError::DuplicateToken {
                session: session.to_string(),
                token,
            });
        }
        s.objects
            .try_reserve(1)
            .map_err(|_| LuoError::OutOfMemory)?;
        Ok(h)
    }

    /// [`Luo::preserve`] for an object that depends on shared state,
    /// object `needs` (session, token) of this orchestrator: preserved
    /// first if it is not yet (given with [`Luo::share`]). In the next
    /// kernel the shared object is restored first and lent to the
    /// dependent's [`Handler::retrieve_dependent`]; if it cannot be read,
    /// the dependent is not read either
    /// ([`LuoError::SharedUnread`], naming both) and is carried with it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn preserve_with<T: Any>(
        &mut self,
        session: &str,
        token: u64,
        family: &str,
        object: T,
        needs: (&str, u64),
        p: &mut P,
        t: &mut Tracker,
    ) -> Result<(), Refused<T>> {
        let refuse = |error, object| Err(Refused { error, object });
        let (si, oi) = match self.find(needs.0, needs.1) {
            Ok(x) => x,
            Err(e) => return refuse(e, object),
        };
        if self.sessions[si].objects[oi].needs.is_some() {
            return refuse(
                LuoError::State("shared state may not depend on another"),
                object,
            );
        }
        let was_pending = matches!(self.sessions[si].objects[oi].held, Held::Pending(_));
        if was_pending && let Err(e) = self.preserve_pending(si, oi, p, t) {
            return refuse(e, object);
        }
        match self.preserve(session, token, family, object, p, t) {
            Ok(()) => {
                if let Ok((a, b)) = self.find(session, token) {
                    self.sessions[a].objects[b].needs = Some((needs.0.to_string(), needs.1));
                }
                Ok(())
            }
            Err(r) => {
                if was_pending {
                    self.unpreserve_to_pending(si, oi, p, t);
                }
                Err(r)
            }
        }
    }

    /// Preserves the pending shared object at `(si, oi)`.
    fn preserve_pending(
        &mut self,
        si: usize,
        oi: usize,
        p: &mut P,
        t: &mut Tracker,
    ) -> Result<(), LuoError> {
        let o = &mut self.sessions[si].objects[oi];
        let Held::Pending(mut obj) = core::mem::replace(&mut o.held, Held::Taken) else {
            return Ok(());
        };
        let Some(h) = self.handlers.iter_mut().find(|h| h.family() == o.family) else {
            o.held = Held::Pending(obj);
            return Err(LuoError::NoHandler(o.family.clone()));
        };
        if let Err(e) = h.preserve(obj.as_mut(), p, t) {
            o.held = Held::Pending(obj);
            return Err(e);
        }
        let mut footprint = Vec::new();
        h.footprint(obj.as_ref(), &mut footprint);
        o.footprint = merged(footprint);
        if let Err(e) = stage_array(o, p, t) {
            let _ = h.unpreserve(obj.as_mut(), p, t);
            o.footprint.clear();
            o.held = Held::Pending(obj);
            return Err(e);
        }
        o.held = Held::Live(obj, None);
        Ok(())
    }

    /// Unpreserves the live shared object at `(si, oi)`, back to pending.
    fn unpreserve_to_pending(&mut self, si: usize, oi: usize, p: &mut P, t: &mut Tracker) {
        let o = &mut self.sessions[si].objects[oi];
        if let Held::Live(obj, None) = &mut o.held
            && let Some(h) = self.handlers.iter_mut().find(|h| h.family() == o.family)
            && h.unpreserve(obj.as_mut(), p, t).is_ok()
            && let Held::Live(obj, _) = core::mem::replace(&mut o.held, Held::Taken)
        {
            o.held = Held::Pending(obj);
            o.footprint.clear();
            drop_array(o, p, t);
        }
    }

    /// Takes an object back before the kexec: unpreserved, as it was. If
    /// it is not a `T` or cannot be unpreserved, it stays preserved. Shared
    /// state given with [`Luo::share`] goes back to waiting for a
    /// dependent when its last one is taken back.
    pub(crate) fn unpreserve<T: Any>(
        &mut self,
        session: &str,
        token: u64,
        family: &str,
        p: &mut P,
        t: &mut Tracker,
    ) -> Result<T, LuoError> {
        if self.frozen {
            return Err(LuoError::State("sessions are frozen"));
        }
        let (si, oi) = self.find_of(session, token, family)?;
        let o = &mut self.sessions[si].objects[oi];
        let Held::Live(obj, _) = &mut o.held else {
            return Err(LuoError::State("only a live object can be unpreserved"));
        };
        if !obj.is::<T>() {
            return Err(LuoError::WrongFamily(o.family.clone()));
        }
        let h = self
            .handlers
            .iter_mut()
            .find(|h| h.family() == o.family)
            .ok_or(LuoError::NoHandler(o.family.clone()))?;
        h.unpreserve(obj.as_mut(), p, t)?;
        let mut o = self.sessions[si].objects.remove(oi);
        drop_array(&mut o, p, t);
        if let Some((ns, nt)) = &o.needs
            && let Ok((a, b)) = self.find(ns, *nt)
            && self.sessions[a].objects[b].lazy
            && !self.has_dependents(ns, *nt)
        {
            self.unpreserve_to_pending(a, b, p, t);
        }
        match o.held {
            Held::Live(obj, _) => obj
                .downcast::<T>()
                .map(|b| *b)
                .map_err(|_| LuoError::WrongFamily(o.family)),
            _ => Err(LuoError::State("only a live object can be unpreserved")),
        }
    }

    /// Whether any object depends on object `token` of `session`.
    fn has_dependents(&self, session: &str, token: u64) -> bool {
        self.sessions.iter().any(|s| {
            s.objects.iter().any(|o| {
                o.needs
                    .as_ref()
                    .is_some_and(|(a, b)| a == session && *b == token)
            })
        })
    }

    /// Cancels everything: unfreezes, unpreserves every object and gives
    /// them all back.
    /// Objects carried from the previous kernel stay (preserved, in their
    /// sessions): they are not this kernel's to give back.
    pub(crate) fn cancel(&mut self, p: &mut P, t: &mut Tracker) -> Vec<Cancelled> {
        self.unfreeze(p, t);
        let mut out = Vec::new();
        let mut kept = Vec::new();
        for mut s in core::mem::take(&mut self.sessions) {
            let mut stay = Vec::new();
            for mut o in s.objects {
                if !matches!(o.held, Held::Carried(_)) {
                    drop_array(&mut o, p, t);
                }
                match o.held {
                    Held::Live(mut obj, _) => {
                        if let Some(h) = self.handler(&o.family) {
                            let _ = self.handlers[h].unpreserve(obj.as_mut(), p, t);
                        }
                        out.push(Cancelled {
                            session: s.name.clone(),
                            token: o.token,
                            family: o.family,
                            object: obj,
                        });
                    }
                    Held::Carried(_) => stay.push(o),
                    Held::Pending(obj) => out.push(Cancelled {
                        session: s.name.clone(),
                        token: o.token,
                        family: o.family,
                        object: obj,
                    }),
                    _ => {}
                }
            }
            if !stay.is_empty() {
                s.objects = stay;
                s.explicit = false;
                kept.push(s);
            }
        }
        self.sessions = kept;
        out
    }

    /// Makes an object the previous kernel carried (from
    /// [`Finished::carried`]) part of this kernel's handoff: every range
    /// of its footprint preserved in `t`, its payloads handed on
    /// unchanged, its carry count one more. It joins its session (made if
    /// needed; [`Luo::create_session`] may take it over). On error nothing
    /// changed and the object comes back.
    pub(crate) fn carry(
        &mut self,
        c: Carried,
        p: &mut P,
        t: &mut Tracker,
    ) -> Result<(), Box<Refused<Carried>>> {
        let refuse = |error, object| Err(Box::new(Refused { error, object }));
        if self.frozen {
            return refuse(LuoError::State("sessions are frozen"), c);
        }
        if let Some(s) = self.sessions.iter().find(|s| s.name == c.session)
            && s.objects.iter().any(|o| o.token == c.token)
        {
            let e = LuoError::DuplicateToken {
                session: c.session.clone(),
                token: c.token,
            };
            return refuse(e, c);
        }
        if self.sessions.try_reserve(1).is_err() {
            return refuse(LuoError::OutOfMemory, c);
        }
        // Its shared state must go with it: preserved now if it waits for
        // a dependent; absent, the object cannot be handed on.
        if let Some((ns, nt)) = &c.needs {
            match self.find(ns, *nt) {
                Ok((a, b)) if matches!(self.sessions[a].objects[b].held, Held::Pending(_)) => {
                    if let Err(e) = self.preserve_pending(a, b, p, t) {
                        return refuse(e, c);
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    let e = LuoError::SharedUnread {
                        session: c.session.clone(),
                        token: c.token,
                        shared_session: ns.clone(),
                        shared_token: *nt,
                    };
                    return refuse(e, c);
                }
            }
        }
        for (i, r) in c.footprint.iter().enumerate() {
            if let Err(e) = t.preserve_range(r.start, r.end) {
                for r in c.footprint.iter().take(i) {
                    let _ = t.unpreserve_range(r.start, r.end);
                }
                return refuse(e.into(), c);
            }
        }
        let si = match self.sessions.iter().position(|s| s.name == c.session) {
            Some(i) => i,
            None => {
                self.sessions.push(Session {
                    name: c.session.clone(),
                    objects: Vec::new(),
                    drop_unread: c.drop_unread,
                    explicit: false,
                });
                self.sessions.len() - 1
            }
        };
        let mut o = Object::new(c.token, c.family, Held::Carried(c.payloads));
        o.footprint = c.footprint;
        o.origin = Origin {
            hop: c.origin.hop,
            carried: c.origin.carried.saturating_add(1),
        };
        o.needs = c.needs;
        if let Err(e) = stage_array(&mut o, p, t) {
            for r in &o.footprint {
                let _ = t.unpreserve_range(r.start, r.end);
            }
            let Held::Carried(payloads) = o.held else {
                return Ok(());
            };
            let c = Carried {
                session: self.sessions[si].name.clone(),
                token: o.token,
                family: o.family,
                origin: c.origin,
                drop_unread: c.drop_unread,
                payloads,
                footprint: o.footprint,
                needs: o.needs,
            };
            return refuse(e, c);
        }
        self.sessions[si].objects.push(o);
        Ok(())
    }

    /// What the next kernel (reading `next`) will do with each object:
    /// read it (the best of its versions that `next` reads), carry it, or
    /// lose it. A dependent is read only if its shared state is.
    pub(crate) fn preflight(&self, next: &ReadList<'_>) -> Vec<Plan> {
        let mut plan = Vec::new();
        for s in &self.sessions {
            for o in &s.objects {
                if matches!(o.held, Held::Pending(_)) {
                    continue;
                }
                plan.push(Plan {
                    session: s.name.clone(),
                    token: o.token,
                    family: o.family.clone(),
                    outcome: self.outcome(s, o, next),
                });
            }
        }
        plan
    }

    /// [`Outcome`] of `o` for a next kernel that reads `next`.
    fn outcome(&self, s: &Session, o: &Object, next: &ReadList<'_>) -> Outcome {
        if !next.reads(LUO_VERSION, 0) {
            return Outcome::Lost;
        }
        // Shared state it depends on, read or not, decides first.
        if let Some((ns, nt)) = &o.needs {
            let shared = self
                .sessions
                .iter()
                .find(|x| &x.name == ns)
                .and_then(|x| x.objects.iter().find(|y| y.token == *nt).map(|y| (x, y)));
            match shared.map(|(x, y)| self.outcome(x, y, next)) {
                Some(Outcome::Read(_)) => {}
                Some(Outcome::Carried) => {
                    let carriable = !s.drop_unread && carriable(o);
                    return if carriable {
                        Outcome::Carried
                    } else {
                        Outcome::Lost
                    };
                }
                _ => return Outcome::Lost,
            }
        }
        // The reader's order decides, as its handler picks: the first
        // version of its list that the object has, features understood.
        let written = self.written(o);
        if let Some(v) = next.versions().find_map(|(name, features)| {
            written
                .iter()
                .find(|(v, req)| v == name && req & !features == 0)
                .map(|(v, _)| v.clone())
        }) {
            return Outcome::Read(v);
        }
        let carriable = carriable(o);
        if s.drop_unread || !carriable {
            Outcome::Lost
        } else {
            Outcome::Carried
        }
    }

    /// The versions an object will be written in, best first, with the
    /// feature bits a reader needs.
    fn written(&self, o: &Object) -> Vec<(String, u64)> {
        if let Held::Carried(payloads) = &o.held {
            return payloads
                .iter()
                .map(|p| (p.version.clone(), p.required))
                .collect();
        }
        let (Some(h), Held::Live(obj, _)) = (self.handler(&o.family), &o.held) else {
            return Vec::new();
        };
        let h = &self.handlers[h];
        h.writes()
            .iter()
            .filter(|v| h.can_write(obj.as_ref(), v))
            .map(|v| (v.name.to_string(), 0))
            .collect()
    }

    /// Freezes every object: each handler stores its payloads. If `next`
    /// is given and `drop_lost` is false, refuses first when any object
    /// would be lost ([`LuoError::WouldLose`]). All or nothing: a failed
    /// freeze unfreezes what was frozen.
    pub(crate) fn freeze(
        &mut self,
        p: &mut P,
        t: &mut Tracker,
        next: Option<&ReadList<'_>>,
        drop_lost: bool,
    ) -> Result<(), LuoError> {
        if self.frozen {
            return Err(LuoError::State("already frozen"));
        }
        // Every dependent's shared state goes into the same handoff.
        for s in &self.sessions {
            for o in &s.objects {
                if let Some((ns, nt)) = &o.needs {
                    let there = self.find(ns, *nt).is_ok_and(|(a, b)| {
                        matches!(
                            self.sessions[a].objects[b].held,
                            Held::Live(..) | Held::Carried(_)
                        )
                    });
                    if !there {
                        return Err(LuoError::SharedUnread {
                            session: s.name.clone(),
                            token: o.token,
                            shared_session: ns.clone(),
                            shared_token: *nt,
                        });
                    }
                }
            }
        }
        if let Some(next) = next {
            let objects = self
                .sessions
                .iter()
                .flat_map(|s| &s.objects)
                .filter(|o| !matches!(o.held, Held::Pending(_)))
                .count();
            if !drop_lost && objects > 0 && !next.reads(LUO_VERSION, 0) {
                // Every object would be lost for one reason: say that one.
                return Err(LuoError::NextReadsNoNode { objects });
            }
            let mut lost = Vec::new();
            for s in &self.sessions {
                for o in &s.objects {
                    if self.outcome(s, o, next) == Outcome::Lost {
                        lost.push(Loss {
                            session: s.name.clone(),
                            token: o.token,
                            family: o.family.clone(),
                            written: self.written(o).into_iter().map(|(v, _)| v).collect(),
                        });
                    }
                }
            }
            if !lost.is_empty() && !drop_lost {
                return Err(LuoError::WouldLose(lost));
            }
        }
        let mut failed = None;
        'all: for s in &mut self.sessions {
            for o in &mut s.objects {
                if matches!(o.held, Held::Carried(_)) {
                    continue;
                }
                let Some(h) = self.handlers.iter().position(|h| h.family() == o.family) else {
                    failed = Some(LuoError::NoHandler(o.family.clone()));
                    break 'all;
                };
                if let Held::Live(obj, prep) = &mut o.held {
                    match self.handlers[h].prepare(obj.as_mut(), p, t) {
                        Ok(out) => *prep = Some(out),
                        Err(e) => {
                            failed = Some(e);
                            break 'all;
                        }
                    }
                }
            }
        }
        self.frozen = true;
        if let Some(e) = failed {
            self.unfreeze(p, t);
            return Err(e);
        }
        Ok(())
    }

    /// Undoes [`Luo::freeze`] (a refused kexec): every payload released.
    pub(crate) fn unfreeze(&mut self, p: &mut P, t: &mut Tracker) {
        for s in &mut self.sessions {
            for o in &mut s.objects {
                if let Held::Live(obj, prep) = &mut o.held
                    && let Some(prepared) = prep.take()
                    && let Some(h) = self.handlers.iter_mut().find(|h| h.family() == o.family)
                {
                    h.unprepare(obj.as_mut(), prepared, p, t);
                }
            }
        }
        self.frozen = false;
    }

    /// Writes the frozen sessions into the handoff blob (node `luo`).
    pub(crate) fn write(&self, w: &mut HandoffWriter<'_>) -> Result<(), LuoError> {
        if !self.frozen {
            return Err(LuoError::State("freeze before writing"));
        }
        node::write(w, &self.sessions)
    }

    /// In the next kernel: takes the sessions and objects of the handoff's
    /// `luo` node (none if it has none). Each object waits for
    /// [`Luo::retrieve`].
    pub(crate) fn incoming(&mut self, h: &Handoff<'_>) -> Result<(), LuoError> {
        if !self.sessions.is_empty() || self.unread.is_some() {
            return Err(LuoError::State("incoming sessions on top of others"));
        }
        match node::read(h) {
            Ok(s) => {
                self.sessions = s;
                Ok(())
            }
            Err(e) => {
                self.unread = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Where object `token` of `session` comes from (for an incoming or
    /// carried object, as its blob said).
    #[cfg(test)]
    pub(crate) fn origin(&self, session: &str, token: u64) -> Option<Origin> {
        let (si, oi) = self.find(session, token).ok()?;
        Some(self.sessions[si].objects[oi].origin)
    }

    /// How many data extents an incoming object's footprint array holds,
    /// if its footprint has one.
    #[cfg(test)]
    pub(crate) fn footprint_array(&self, session: &str, token: u64) -> Option<u64> {
        let (si, oi) = self.find(session, token).ok()?;
        self.sessions[si].objects[oi].fp_in.map(|(_, n)| n)
    }

    /// Why [`Luo::incoming`] could not read the blob's node, if it could
    /// not.
    pub(crate) fn unread(&self) -> Option<&LuoError> {
        self.unread.as_ref()
    }

    /// The sessions and their tokens, in blob order.
    pub(crate) fn objects(&self) -> impl Iterator<Item = (&str, u64, &str)> + '_ {
        self.sessions.iter().flat_map(|s| {
            s.objects
                .iter()
                .map(move |o| (s.name.as_str(), o.token, o.family.as_str()))
        })
    }

    /// In the next kernel: returns the object, restored from the best
    /// version both sides have. The first call restores every incoming
    /// object in blob order (so the outcome does not depend on the order of
    /// calls); later calls return the same object, or the same error.
    /// A `T` is the family's object type; any other type is
    /// [`LuoError::WrongFamily`] (and the object stays restored).
    pub(crate) fn retrieve<T: Any>(
        &mut self,
        session: &str,
        token: u64,
        family: &str,
        p: &mut P,
        ctx: &mut RestoreCtx<'_>,
    ) -> Result<(&mut T, &'static str), LuoError> {
        if self.finished {
            return Err(LuoError::State("finished"));
        }
        let (si, oi) = self.find_of(session, token, family)?;
        self.restore_all(p, ctx);
        let o = &mut self.sessions[si].objects[oi];
        match &mut o.held {
            Held::Restored(obj, v, _, seen) => match obj.downcast_mut::<T>() {
                Some(obj) => {
                    *seen = true;
                    Ok((obj, *v))
                }
                None => Err(LuoError::WrongFamily(o.family.clone())),
            },
            Held::Failed(e) => Err(e.clone()),
            Held::Taken => Err(LuoError::State("the object was taken")),
            Held::Live(..) => Err(LuoError::State("not an incoming object")),
            Held::Incoming(_) => Err(LuoError::State("not retrieved")),
            Held::Carried(p) => Err(LuoError::Carried {
                family: o.family.clone(),
                written: p.iter().map(InPayload::name).collect(),
            }),
            Held::Pending(_) => Err(LuoError::State("not an incoming object")),
        }
    }

    /// Restores every object still incoming: first every object others
    /// depend on (shared state), then the rest, each in blob order, a
    /// dependent with its shared object lent to it; then carries, in blob
    /// order, every object no handler here can read (and every dependent
    /// of shared state that is carried or failed: it is not read without
    /// it). Readers claim first, so a carried object's footprint can never
    /// take a page from an object this kernel reads.
    fn restore_all(&mut self, p: &mut P, ctx: &mut RestoreCtx<'_>) {
        if core::mem::replace(&mut self.restored, true) {
            return;
        }
        let mut order: Vec<(usize, usize)> = Vec::new();
        {
            // What some object needs, sorted once: a lookup per object,
            // not a scan of every object per object.
            let mut needed: Vec<(&str, u64)> = Vec::new();
            for o in self.sessions.iter().flat_map(|s| &s.objects) {
                if let Some((ns, nt)) = &o.needs
                    && needed.try_reserve(1).is_ok()
                {
                    needed.push((ns.as_str(), *nt));
                }
            }
            needed.sort_unstable();
            for pass in [true, false] {
                for (si, s) in self.sessions.iter().enumerate() {
                    for (oi, o) in s.objects.iter().enumerate() {
                        let shared = needed.binary_search(&(s.name.as_str(), o.token)).is_ok();
                        if shared == pass && order.try_reserve(1).is_ok() {
                            order.push((si, oi));
                        }
                    }
                }
            }
        }
        let mut unread: Vec<(usize, usize, LuoError)> = Vec::new();
        for (si, oi) in order {
            if !matches!(self.sessions[si].objects[oi].held, Held::Incoming(_)) {
                continue;
            }
            // The shared object it needs, taken out while it is lent.
            let needs = self.sessions[si].objects[oi].needs.clone();
            let mut lent: Option<(usize, usize, Box<dyn Any>)> = None;
            if let Some((ns, nt)) = &needs {
                let at = self.find(ns, *nt).ok();
                let state = at.map(|(a, b)| &self.sessions[a].objects[b].held);
                let why = || LuoError::SharedUnread {
                    session: self.sessions[si].name.clone(),
                    token: self.sessions[si].objects[oi].token,
                    shared_session: ns.clone(),
                    shared_token: *nt,
                };
                match (at, state) {
                    (Some((a, b)), Some(Held::Restored(..))) => {
                        if let Held::Restored(obj, v, n, seen) =
                            core::mem::replace(&mut self.sessions[a].objects[b].held, Held::Taken)
                        {
                            // Put back below, with its version and size.
                            self.sessions[a].objects[b].held =
                                Held::Restored(Box::new(()), v, n, seen);
                            lent = Some((a, b, obj));
                        }
                    }
                    (_, Some(Held::Failed(_))) | (None, _) => {
                        self.sessions[si].objects[oi].held = Held::Failed(why());
                        continue;
                    }
                    _ => {
                        // Not read here (carried, or never retrieved):
                        // carried with it.
                        let e = why();
                        if unread.try_reserve(1).is_ok() {
                            unread.push((si, oi, e));
                        }
                        continue;
                    }
                }
            }
            let s = &mut self.sessions[si];
            let o = &mut s.objects[oi];
            let Held::Incoming(payloads) = &o.held else {
                continue;
            };
            let h = self.handlers.iter_mut().find(|h| h.family() == o.family);
            let picked = match h {
                None => Err(LuoError::NoHandler(o.family.clone())),
                Some(h) => pick(h.reads(), payloads, &o.family).map(|pl| (h, pl)),
            };
            let result = match picked {
                Err(e) => {
                    if unread.try_reserve(1).is_ok() {
                        unread.push((si, oi, e));
                    } else {
                        o.held = Held::Failed(LuoError::OutOfMemory);
                    }
                    Err(None)
                }
                Ok((h, (v, pl))) => {
                    let payload = PayloadIn {
                        version: v,
                        required: pl.required,
                        optional: pl.optional,
                        data: &pl.data,
                    };
                    let r = match &mut lent {
                        Some((_, _, obj)) => {
                            let mut sh = Shared::new(obj.as_mut());
                            h.retrieve(&payload, Some(&mut sh), p, ctx)
                        }
                        None => h.retrieve(&payload, None, p, ctx),
                    };
                    r.map(|obj| (obj, v, pl.data.len())).map_err(Some)
                }
            };
            match result {
                Ok((obj, v, n)) => {
                    o.chosen = Some((v, n));
                    o.held = Held::Restored(obj, v, n, false);
                }
                Err(Some(e)) => o.held = Held::Failed(e),
                Err(None) => {}
            }
            if let Some((a, b, obj)) = lent
                && let Held::Restored(slot, ..) = &mut self.sessions[a].objects[b].held
            {
                *slot = obj;
            }
        }
        // Shared state comes first in `unread` (as in `order`), so a
        // dependent held back by it sees how it ended: carried with it if
        // it was carried, lost with it otherwise (as preflight says).
        for (si, oi, why) in unread {
            if let LuoError::SharedUnread {
                shared_session,
                shared_token,
                ..
            } = &why
            {
                let shared_carried =
                    self.find(shared_session, *shared_token)
                        .is_ok_and(|(a, b)| {
                            matches!(self.sessions[a].objects[b].held, Held::Carried(_))
                        });
                if !shared_carried {
                    if let Some(o) = self
                        .sessions
                        .get_mut(si)
                        .and_then(|s| s.objects.get_mut(oi))
                    {
                        o.held = Held::Failed(why);
                    }
                    continue;
                }
            }
            let Some(s) = self.sessions.get_mut(si) else {
                continue;
            };
            let drop = s.drop_unread;
            let session = s.name.clone();
            let Some(o) = s.objects.get_mut(oi) else {
                continue;
            };
            o.held = match core::mem::replace(&mut o.held, Held::Taken) {
                Held::Incoming(_) if !drop && o.bad_footprint => {
                    Held::Failed(LuoError::BadFootprint {
                        session,
                        token: o.token,
                        family: o.family.clone(),
                        why: "its footprint property is malformed",
                    })
                }
                Held::Incoming(payloads)
                    if !drop && (!o.footprint.is_empty() || o.fp_in.is_some()) =>
                {
                    let full = match o.fp_in {
                        None => Ok(core::mem::take(&mut o.footprint)),
                        Some((root, n)) => read_array(p, ctx, &root, n, &o.footprint),
                    };
                    let full = match full {
                        Ok(full) => full,
                        Err(why) => {
                            o.held = Held::Failed(LuoError::BadFootprint {
                                session,
                                token: o.token,
                                family: o.family.clone(),
                                why,
                            });
                            continue;
                        }
                    };
                    o.footprint = full;
                    match claim_all(ctx.claims, &o.footprint) {
                        Ok(()) => Held::Carried(payloads),
                        Err(error) => Held::Failed(LuoError::Footprint {
                            session,
                            token: o.token,
                            family: o.family.clone(),
                            error,
                        }),
                    }
                }
                _ => Held::Failed(why),
            };
        }
    }

    /// Object `token` of `session`, if it is of `family` (else
    /// [`LuoError::WrongFamily`]): a key of one family never reaches an
    /// object of another, even one of the same Rust type.
    fn find_of(&self, session: &str, token: u64, family: &str) -> Result<(usize, usize), LuoError> {
        let (si, oi) = self.find(session, token)?;
        if self.sessions[si].objects[oi].family != family {
            return Err(LuoError::WrongFamily(family.to_string()));
        }
        Ok((si, oi))
    }

    fn find(&self, session: &str, token: u64) -> Result<(usize, usize), LuoError> {
        if let Some(e) = &self.unread {
            // Nothing was read from the node: say why, not "no session".
            return Err(LuoError::NodeUnread(Box::new(e.clone())));
        }
        let si = self
            .sessions
            .iter()
            .position(|s| s.name == session)
            .ok_or_else(|| LuoError::NoSession(session.to_string()))?;
        let oi = self.sessions[si]
            .objects
            .iter()
            .position(|o| o.token == token)
            .ok_or_else(|| LuoError::NoToken {
                session: session.to_string(),
                token,
            })?;
        Ok((si, oi))
    }

    /// What is known of incoming object `token` of `session`, of
    /// `family`: its origin, its footprint, and (once restored) the
    /// version it came in and what became of it here.
    pub(crate) fn info(&self, session: &str, token: u64, family: &str) -> Result<Info, LuoError> {
        let (si, oi) = self.find_of(session, token, family)?;
        let o = &self.sessions[si].objects[oi];
        let state = match &o.held {
            Held::Incoming(_) => State::Waiting,
            Held::Restored(..) => State::Restored,
            Held::Taken if o.chosen.is_some() => State::Taken,
            Held::Carried(_) => State::Carried,
            Held::Failed(e) => State::Failed(e.clone()),
            Held::Live(..) | Held::Pending(_) | Held::Taken => {
                return Err(LuoError::State("not an incoming object"));
            }
        };
        Ok(Info {
            origin: o.origin,
            version: o.chosen.map(|(v, _)| v),
            payload_bytes: o.chosen.map(|(_, n)| n),
            // A carried object's footprint is whole (array read); else
            // the blob's inline runs and its array's count.
            footprint_runs: match o.held {
                Held::Carried(_) => o.footprint.len() as u64,
                _ => (o.footprint.len() as u64).saturating_add(o.fp_in.map_or(0, |(_, n)| n)),
            },
            footprint_bytes: o.footprint.iter().map(|r| r.len()).sum(),
            state,
        })
    }

    /// Takes a retrieved object, a `T` of `family`, from the orchestrator.
    pub(crate) fn take<T: Any>(
        &mut self,
        session: &str,
        token: u64,
        family: &str,
    ) -> Result<T, LuoError> {
        let (si, oi) = self.find_of(session, token, family)?;
        let o = &mut self.sessions[si].objects[oi];
        match &o.held {
            Held::Restored(obj, _, _, true) if !obj.is::<T>() => {
                return Err(LuoError::WrongFamily(o.family.clone()));
            }
            Held::Restored(_, _, _, true) => {}
            _ => return Err(LuoError::State("only a retrieved object can be taken")),
        }
        match core::mem::replace(&mut o.held, Held::Taken) {
            Held::Restored(obj, ..) => obj
                .downcast::<T>()
                .map(|b| *b)
                .map_err(|_| LuoError::WrongFamily(o.family.clone())),
            _ => Err(LuoError::State("only a retrieved object can be taken")),
        }
    }

    /// In the next kernel, once, when every object that will be retrieved
    /// is: discards objects restored but never retrieved, then consumes the
    /// claims and gives the platform ([`FrameAlloc::add_free`](crate::platform::FrameAlloc::add_free)) every
    /// preserved page nobody adopted as data
    /// (payloads of unchosen versions, objects never retrieved or that
    /// failed) and every page claimed as metadata (record arrays, vmalloc
    /// chains). Preserved memory restored outside the orchestrator must be
    /// claimed before, or it is freed too. Taking the claims by value means
    /// nothing can claim after finish; a second finish is
    /// [`LuoError::State`].
    ///
    /// Every incoming object is restored first if no retrieve did it yet
    /// (`ram` and `scratch` as for [`Luo::retrieve`]): what this kernel
    /// carries never depends on what it retrieved.
    pub(crate) fn finish(
        &mut self,
        p: &mut P,
        mut claims: Claims,
        ram: &[Range],
        scratch: &[Range],
    ) -> Result<Finished, LuoError> {
        if self.finished {
            return Err(LuoError::State("finish was called before"));
        }
        self.restore_all(
            p,
            &mut RestoreCtx {
                ram,
                scratch,
                claims: &mut claims,
            },
        );
        // Room for every object's line in the report first: past this
        // point nothing fails, so finish either runs whole or changes
        // nothing (and may be called again).
        let objects: usize = self.sessions.iter().map(|s| s.objects.len()).sum();
        let mut lost = Vec::new();
        lost.try_reserve(objects)
            .map_err(|_| LuoError::OutOfMemory)?;
        let mut carried = Vec::new();
        carried
            .try_reserve(objects)
            .map_err(|_| LuoError::OutOfMemory)?;
        self.finished = true;
        // Dependents first: shared state is finished after the last.
        // Carried objects are listed the other way round (shared state
        // first), the order in which a later kernel carries them on.
        let mut carried_dependents = Vec::new();
        carried_dependents
            .try_reserve(objects)
            .map_err(|_| LuoError::OutOfMemory)?;
        for dependents in [true, false] {
            for s in &mut self.sessions {
                for o in &mut s.objects {
                    if o.needs.is_some() != dependents {
                        continue;
                    }
                    let e = match core::mem::replace(&mut o.held, Held::Taken) {
                        Held::Carried(payloads) => {
                            // Its pages stay claimed: never freed here.
                            let to = if dependents {
                                &mut carried_dependents
                            } else {
                                &mut carried
                            };
                            to.push(Carried {
                                session: s.name.clone(),
                                token: o.token,
                                family: o.family.clone(),
                                origin: o.origin,
                                drop_unread: s.drop_unread,
                                payloads,
                                footprint: core::mem::take(&mut o.footprint),
                                needs: o.needs.take(),
                            });
                            continue;
                        }
                        Held::Failed(e) => e,
                        // Restore left none incoming; kept for safety.
                        Held::Incoming(_) => LuoError::NeverRetrieved,
                        Held::Restored(obj, _, _, seen) => {
                            // Nobody can take it after finish: given up,
                            // its pages freed below.
                            if let Some(h) =
                                self.handlers.iter_mut().find(|h| h.family() == o.family)
                            {
                                h.discard(obj, p, &mut claims);
                            }
                            if seen {
                                LuoError::NotTaken
                            } else {
                                LuoError::NeverRetrieved
                            }
                        }
                        other => {
                            o.held = other;
                            continue;
                        }
                    };
                    // Reserved above: this never allocates.
                    lost.push((s.name.clone(), o.token, e));
                }
            }
        }
        carried.append(&mut carried_dependents);
        let mut freed = 0;
        let ranges = claims.finish();
        // Memory nobody adopted is new free memory for this kernel's
        // allocator, never the end of one of its allocations.
        for &r in &ranges {
            p.add_free(r);
            freed += r.len();
        }
        Ok(Finished {
            freed,
            ranges,
            lost,
            unread: self.unread.clone(),
            carried,
        })
    }
}

/// The full footprint of an object whose data extents are in an array,
/// in canonical form (sorted, disjoint, touching runs joined): the
/// array's blocks claimed as metadata (they stay so until finish frees
/// them, so no footprint can name them as data), its shape checked
/// (order 0, exactly the blocks `n` extents need, summed, zero after the
/// last extent), its extents checked, and `inline` (the payloads' pages)
/// merged in, disjoint from them.
fn read_array<P: Platform>(
    p: &mut P,
    ctx: &mut RestoreCtx<'_>,
    root: &crate::vmalloc::VmallocRoot,
    n: u64,
    inline: &[Range],
) -> Result<Vec<Range>, &'static str> {
    let want = n.saturating_mul(16).div_ceil(crate::PAGE_SIZE);
    if root.order.get() != 0 || u64::from(root.blocks.get()) != want {
        return Err("its array's shape does not fit its extent count");
    }
    if root.flags.get() != crate::vmalloc::SUMMED {
        return Err("its array is not summed");
    }
    let b = crate::vmalloc::Blocks::restore(p, root, ctx.ram, ctx.scratch, ctx.claims)
        .map_err(|_| "its array's chain or blocks are refused")?;
    let mut recs: Vec<abi::Extent> = Vec::new();
    recs.try_reserve_exact(usize::try_from(n).map_err(|_| "its array is too long")?)
        .map_err(|_| "no memory to read its array")?;
    let mut sum = crate::csum::Sum64::new();
    let mut tail_clean = true;
    for f in b.frames() {
        let frame = p
            .frame(f)
            .ok_or("its array names a page that cannot be read")?;
        let words = <[zerocopy::byteorder::little_endian::U64]>::ref_from_bytes(frame.as_slice())
            .map_err(|_| "its array names a page that cannot be read")?;
        sum.frame(words);
        for e in <[abi::Extent]>::ref_from_bytes(frame.as_slice())
            .map_err(|_| "its array names a page that cannot be read")?
        {
            if (recs.len() as u64) < n {
                recs.push(*e);
            } else if e.start.get() != 0 || e.pages.get() != 0 {
                tail_clean = false;
            }
        }
    }
    // The sum first: a flipped byte is a checksum failure, whatever it hit.
    if b.sum != Some(sum.finish()) {
        return Err("its array's checksum does not match");
    }
    if !tail_clean || (recs.len() as u64) != n {
        return Err("its array holds other than its extent count");
    }
    let mut all =
        node::extents(&recs).map_err(|_| "its array's extents are not sorted and disjoint")?;
    all.try_reserve(inline.len())
        .map_err(|_| "no memory to read its array")?;
    all.extend_from_slice(inline);
    all.sort_unstable_by_key(|r| r.start);
    if all.windows(2).any(|w| w[0].end > w[1].start) {
        return Err("its inline extents overlap its array's");
    }
    // Canonical: a payload page between two data runs joins them, so
    // the footprint written on (inline or in a new array) is one that
    // every reader accepts, through any number of kernels.
    Ok(merged(all))
}

/// Claims every range of `footprint` as data, or none.
fn claim_all(claims: &mut Claims, footprint: &[Range]) -> Result<(), crate::claims::ClaimError> {
    for (i, r) in footprint.iter().enumerate() {
        if let Err(e) = claims.claim(r.start, r.len() / crate::PAGE_SIZE) {
            for r in footprint.iter().take(i) {
                claims.release(r.start, r.len() / crate::PAGE_SIZE);
            }
            return Err(e);
        }
    }
    Ok(())
}

impl InPayload {
    /// `VERSION`, or `VERSION+REQUIRED` when it needs feature bits.
    fn name(&self) -> String {
        if self.required == 0 {
            self.version.clone()
        } else {
            alloc::format!("{}+{:x}", self.version, self.required)
        }
    }
}

/// The best of `reads` (in the reader's order) that a payload has, with
/// every required feature understood.
fn pick<'a>(
    reads: &[Version],
    payloads: &'a [InPayload],
    family: &str,
) -> Result<(&'static str, &'a InPayload), LuoError> {
    for v in reads {
        if let Some(pl) = payloads
            .iter()
            .find(|pl| pl.version == v.name && pl.required & !v.features == 0)
        {
            return Ok((v.name, pl));
        }
    }
    Err(LuoError::NoReadableVersion {
        family: family.to_string(),
        written: payloads.iter().map(InPayload::name).collect(),
        reads: reads.iter().map(|v| v.name.to_string()).collect(),
    })
}
