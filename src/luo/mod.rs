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
//! both sides have ([`crate::Restored::take`]); pages only an unchosen
//! version used are never claimed, so [`crate::Restored::finish`] frees
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

mod carry;
mod error;
mod finish;
mod freeze;
mod handler;
mod node;
mod outgoing;
mod restore;
#[cfg(test)]
mod tests;
#[cfg(any(test, feature = "arch"))]
mod view;

pub use error::{HandlerError, Loss, LuoError, Refused};
pub use handler::{
    Handler, Payload, PayloadIn, Platform, Prepared, RestoreCtx, Shared, Version, le_bytes,
    le_words,
};

pub use crate::abi::reads::{ReadList, ReadsNote, reads_len};
use handler::{Erased, Frozen};
pub use node::LUO_VERSION;
#[cfg(feature = "arch")]
pub use view::{NodeView, ObjectView};

use carry::{carriable, merged};
use outgoing::stage_array;

use crate::ranges::Range;
use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::any::Any;

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
/// [`Restored::finish`](crate::Restored::finish) (which hands it out in
/// [`Finished::carried`]) and [`Outgoing::carry`](crate::Outgoing::carry)
/// (which makes it part of the next handoff). Its pages are claimed: finish
/// never frees them.
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

/// One row of [`Outgoing::preflight`](crate::Outgoing::preflight): what the
/// next kernel will do with an object.
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

/// A registered family whose objects are `T`s: what
/// [`Outgoing::register`](crate::Outgoing::register) returns, to name the
/// family in typed calls.
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

/// An object given back by [`Outgoing::cancel`](crate::Outgoing::cancel): take
/// it as its own type with [`Cancelled::into_object`].
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

/// What [`Restored::finish`](crate::Restored::finish) did.
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
    /// Objects this kernel could not read and keeps for a later one: their
    /// pages stay claimed (never freed, never given to the allocator). Hand
    /// them to the next handoff with
    /// [`Outgoing::carry`](crate::Outgoing::carry), or they are lost at the
    /// next kexec.
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

    /// The sessions and their tokens, in blob order.
    pub(crate) fn objects(&self) -> impl Iterator<Item = (&str, u64, &str)> + '_ {
        self.sessions.iter().flat_map(|s| {
            s.objects
                .iter()
                .map(move |o| (s.name.as_str(), o.token, o.family.as_str()))
        })
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
