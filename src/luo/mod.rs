//! The live update orchestrator: objects in named sessions, handed to the
//! next kernel with first-class versioning (`kho-luo-v1`).
//!
//! A [`Handler`] serves one *family* of objects (say `memfd`). It lists the
//! [`Version`]s it can write and those it can read, best first. At freeze,
//! [`Handler::prepare`] stores the object's data for one or more versions
//! on a [`Prepared`] (for a memfd: both `memfd-v2` and `memfd-v1`, each its
//! own payload). The next kernel picks, for each object, the best version
//! both sides have ([`Luo::retrieve`]); pages only an unchosen version
//! used are never claimed, so [`Luo::finish`] frees them.
//!
//! Feature bits refine a version: a payload carries the bits a reader
//! *must* understand (`required`) and bits it *may* ignore (`optional`); a
//! reader's [`Version::features`] are the bits it understands. A payload is
//! readable when `required & !features == 0`.
//!
//! Life cycle (first kernel): [`Luo::create_session`], [`Luo::preserve`]
//! (and [`Luo::unpreserve`] or [`Luo::cancel`] to undo), [`Luo::preflight`]
//! against the next image's list ([`ReadList`], from its ELF note),
//! [`Luo::freeze`] (all or nothing), [`Luo::write`] into the handoff blob,
//! kexec. Next kernel: [`Luo::incoming`], [`Luo::retrieve`] (idempotent, in
//! any order), [`Luo::take`], [`Luo::finish`] (once; it consumes the
//! claims).
//!
//! The outcome never depends on the order of retrieval: the first
//! [`Luo::retrieve`] restores every incoming object, in blob order, so
//! which of two objects that name the same page is refused is fixed by
//! the blob, not by the caller. Objects restored but never retrieved are
//! discarded at finish ([`Handler::discard`]) and reported lost.
//!
//! Nothing on the next kernel's path panics: an object no handler can read
//! is a typed error naming the versions on both sides
//! ([`LuoError::NoReadableVersion`]), its memory is freed at finish, and
//! every other object still restores.

pub mod memfd;
mod node;
#[cfg(test)]
mod tests;

pub use node::{LUO_VERSION, NODE};

use crate::claims::Claims;
use crate::fdt::WriteError;
use crate::handoff::{Handoff, HandoffWriter};
use crate::platform::{FrameAlloc, MapFrames, PhysMem};
use crate::ranges::Range;
use crate::tracker::Tracker;
use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::any::Any;
use core::fmt;

/// What a platform must give the orchestrator and its handlers.
pub trait Platform: PhysMem + FrameAlloc + MapFrames {}
impl<P: PhysMem + FrameAlloc + MapFrames> Platform for P {}

/// One version of a family's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    /// Its name (`memfd-v2`).
    pub name: &'static str,
    /// Feature bits: for a reader, the bits it understands; for a writer,
    /// the bits it may set.
    pub features: u64,
}

impl Version {
    /// A version with no feature bits.
    pub const fn new(name: &'static str) -> Self {
        Self { name, features: 0 }
    }
}

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

/// What [`Handler::prepare`] stores: payloads, best version first, and
/// whatever it must keep to undo them ([`Handler::unprepare`]).
#[derive(Debug, Default)]
pub struct Prepared {
    /// The payloads.
    pub payloads: Vec<Payload>,
    /// The handler's own state for undoing (record arrays, say).
    pub keep: Vec<Box<dyn Any>>,
}

/// The payload a handler's retrieve reads, as the previous kernel wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadIn<'a> {
    /// Its version (one of the handler's [`Handler::reads`]).
    pub version: &'static str,
    /// Feature bits a reader must understand (all of them are in the
    /// handler's entry for this version).
    pub required: u64,
    /// Feature bits a reader may use or ignore.
    pub optional: u64,
    /// Its bytes.
    pub data: &'a [u8],
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

/// A handler of one family of objects.
pub trait Handler<P: Platform> {
    /// The family (`memfd`).
    fn family(&self) -> &'static str;
    /// Versions it can write, best first.
    fn writes(&self) -> &[Version];
    /// Versions it can read, best first.
    fn reads(&self) -> &[Version];
    /// Whether `obj` is an object of this family.
    fn owns(&self, obj: &dyn Any) -> bool;
    /// Whether [`Handler::prepare`] will store `version` for `obj` (a
    /// version may not carry every object: `memfd-v1` has no seals).
    /// Preflight asks this per object.
    fn can_write(&self, obj: &dyn Any, version: &Version) -> bool {
        let _ = (obj, version);
        true
    }
    /// Preserves what the object needs kept (its pages, in the tracker).
    fn preserve(&mut self, obj: &mut dyn Any, p: &mut P, t: &mut Tracker) -> Result<(), LuoError>;
    /// Undoes [`Handler::preserve`].
    fn unpreserve(&mut self, obj: &mut dyn Any, p: &mut P, t: &mut Tracker)
    -> Result<(), LuoError>;
    /// At freeze: stores the object's data for one or more versions.
    fn prepare(
        &mut self,
        obj: &mut dyn Any,
        p: &mut P,
        t: &mut Tracker,
        out: &mut Prepared,
    ) -> Result<(), LuoError>;
    /// Undoes [`Handler::prepare`] (a failed freeze, a refused kexec).
    fn unprepare(&mut self, obj: &mut dyn Any, prepared: Prepared, p: &mut P, t: &mut Tracker);
    /// In the next kernel: the object from `payload`, the best one for
    /// this handler's [`Handler::reads`] list (its version, its feature
    /// bits, required and optional, and its bytes from the blob; the
    /// orchestrator already checked that every required bit is one this
    /// handler reads).
    ///
    /// The contract, which the orchestrator cannot check for you:
    /// 1. Claim every preserved page the object adopts as its own
    ///    ([`Claims::claim`] through `ctx.claims`): a page not claimed is
    ///    given to the allocator at [`Luo::finish`], under the live object.
    /// 2. Claim pages it only reads and then lets go, such as record
    ///    arrays and vmalloc chains, as metadata ([`Claims::claim_meta`]):
    ///    they stay out of reach of every other object until finish.
    /// 3. Check every byte of the payload and every page it names before
    ///    trusting it; a bad payload is an error, never a guess.
    /// 4. On error, release every data page it claimed
    ///    ([`Claims::release`]) and return the error: the object is then
    ///    reported lost, and its pages freed at finish. Errors of kho's
    ///    own modules convert with `?` ([`LuoError`] has `From` for claim,
    ///    tracker, vmalloc and memfd errors); a handler's own error goes in
    ///    [`LuoError::Handler`].
    fn retrieve(
        &mut self,
        payload: &PayloadIn<'_>,
        p: &mut P,
        ctx: &mut RestoreCtx<'_>,
    ) -> Result<Box<dyn Any>, LuoError>;
    /// In the next kernel, at finish: gives up a restored object that
    /// nobody retrieved, releasing every page it claimed as data, so that
    /// finish frees them.
    fn discard(&mut self, obj: Box<dyn Any>, p: &mut P, claims: &mut Claims);
}

/// Errors of the orchestrator, each naming what was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LuoError {
    /// Two handlers for one family.
    DuplicateFamily(String),
    /// No handler for the family.
    NoHandler(String),
    /// A session of that name exists.
    DuplicateSession(String),
    /// No session of that name.
    NoSession(String),
    /// The token is already used in the session.
    DuplicateToken {
        /// The session.
        session: String,
        /// The token.
        token: u64,
    },
    /// No object with that token in the session.
    NoToken {
        /// The session.
        session: String,
        /// The token.
        token: u64,
    },
    /// The object is not of the family named.
    WrongFamily(String),
    /// The operation does not fit the life cycle (preserve after freeze,
    /// retrieve before incoming, ...).
    State(&'static str),
    /// No version that both kernels have: nothing of the object can be
    /// read. Names the versions on both sides.
    NoReadableVersion {
        /// The family.
        family: String,
        /// Versions the object was written in.
        written: Vec<String>,
        /// Versions the reading kernel reads.
        reads: Vec<String>,
    },
    /// Preflight: these objects would be lost by the next kernel.
    WouldLose(Vec<Loss>),
    /// The handler refused (with its own error, as text).
    Handler {
        /// The family.
        family: String,
        /// What went wrong.
        what: String,
    },
    /// The blob's `luo` node is malformed.
    BadNode(&'static str),
    /// A version is listed twice: in a handler's lists, in a reads note,
    /// or in an object's payloads (which of two would a reader take?).
    DuplicateVersion {
        /// The family (or `reads` for a reads note).
        family: String,
        /// The version.
        version: String,
    },
    /// The memfd handler refused, or a memfd payload is bad.
    Memfd(crate::memfd::MemfdError),
    /// A handler's claim on preserved memory was refused.
    Claim(crate::claims::ClaimError),
    /// The tracker refused (a handler's preserve).
    Tracker(crate::tracker::TrackerError),
    /// A preserved vmalloc buffer could not be written or read.
    Vmalloc(crate::vmalloc::VmallocError),
    /// No memory for the orchestrator's lists.
    OutOfMemory,
}

/// An object a next kernel would not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loss {
    /// Its session.
    pub session: String,
    /// Its token.
    pub token: u64,
    /// Its family.
    pub family: String,
    /// The versions it would be written in.
    pub written: Vec<String>,
}

fn list(v: &[String]) -> String {
    v.join(", ")
}

impl fmt::Display for LuoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use LuoError::*;
        match self {
            DuplicateFamily(x) => write!(f, "luo: a handler for {x} is already registered"),
            NoHandler(x) => write!(f, "luo: no handler for family {x}"),
            DuplicateSession(x) => write!(f, "luo: session {x} already exists"),
            NoSession(x) => write!(f, "luo: no session {x}"),
            DuplicateToken { session, token } => {
                write!(
                    f,
                    "luo: token {token:#x} is already used in session {session}"
                )
            }
            NoToken { session, token } => {
                write!(f, "luo: no token {token:#x} in session {session}")
            }
            WrongFamily(x) => write!(f, "luo: the object is not a {x}"),
            State(x) => write!(f, "luo: {x}"),
            NoReadableVersion {
                family,
                written,
                reads,
            } => write!(
                f,
                "luo: {family} written as [{}], this kernel reads [{}]: no common version",
                list(written),
                list(reads)
            ),
            WouldLose(l) => {
                write!(f, "luo: the next kernel would lose {} object(s):", l.len())?;
                for x in l {
                    write!(
                        f,
                        " {}/{:#x} ({} as [{}])",
                        x.session,
                        x.token,
                        x.family,
                        list(&x.written)
                    )?;
                }
                Ok(())
            }
            Handler { family, what } => write!(f, "luo: {family}: {what}"),
            BadNode(x) => write!(f, "luo: malformed node ({x})"),
            DuplicateVersion { family, version } => {
                write!(f, "luo: {family} lists version {version} twice")
            }
            Memfd(e) => write!(f, "luo: {e}"),
            Claim(e) => write!(f, "luo: {e}"),
            Tracker(e) => write!(f, "luo: {e}"),
            Vmalloc(e) => write!(f, "luo: {e}"),
            OutOfMemory => f.write_str("luo: out of memory"),
        }
    }
}

/// The error a variant wraps, when it wraps one.
impl core::error::Error for LuoError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            LuoError::Memfd(e) => Some(e),
            LuoError::Claim(e) => Some(e),
            LuoError::Tracker(e) => Some(e),
            LuoError::Vmalloc(e) => Some(e),
            _ => None,
        }
    }
}

impl From<crate::claims::ClaimError> for LuoError {
    fn from(e: crate::claims::ClaimError) -> Self {
        LuoError::Claim(e)
    }
}

impl From<crate::tracker::TrackerError> for LuoError {
    fn from(e: crate::tracker::TrackerError) -> Self {
        LuoError::Tracker(e)
    }
}

impl From<crate::vmalloc::VmallocError> for LuoError {
    fn from(e: crate::vmalloc::VmallocError) -> Self {
        LuoError::Vmalloc(e)
    }
}

impl From<WriteError> for LuoError {
    fn from(_: WriteError) -> Self {
        LuoError::BadNode("the handoff blob has no room for the luo node")
    }
}

/// An object preserve refused, given back with the reason.
#[derive(Debug)]
pub struct Refused {
    /// Why.
    pub error: LuoError,
    /// The object, unchanged.
    pub object: Box<dyn Any>,
}

impl From<Refused> for LuoError {
    fn from(r: Refused) -> Self {
        r.error
    }
}

/// The versions a kernel image reads, from its `kho` ELF note
/// (`kho-reads-v1`): NUL-terminated entries `NAME` or `NAME+FEATURES`
/// (hexadecimal feature bits it understands); empty entries (padding) are
/// skipped.
#[derive(Clone, Copy, Debug)]
pub struct ReadList<'a> {
    bytes: &'a [u8],
}

/// The ELF note's owner name.
pub const NOTE_NAME: &[u8; 4] = b"kho\0";
/// The ELF note's type.
pub const NOTE_READS: u32 = 0x4b52_0001;

impl<'a> ReadList<'a> {
    /// A list from a note's descriptor bytes; `None` if an entry is not
    /// UTF-8 or its features are not hexadecimal.
    ///
    /// Also `None` if a version is listed twice (which entry's features
    /// would count?), or if the last entry has no terminating NUL (a
    /// truncated `memfd-v12` must not read as `memfd-v1`).
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        if bytes.last().is_some_and(|&b| b != 0) {
            return None;
        }
        let l = Self { bytes };
        for e in bytes.split(|&b| b == 0) {
            let s = core::str::from_utf8(e).ok()?;
            if let Some((_, feat)) = s.split_once('+') {
                u64::from_str_radix(feat, 16).ok()?;
            }
        }
        for (i, (name, _)) in l.versions().enumerate() {
            if l.versions()
                .skip(i.saturating_add(1))
                .any(|(n, _)| n == name)
            {
                return None;
            }
        }
        Some(l)
    }

    /// The versions, in the image's order.
    pub fn versions(&self) -> impl Iterator<Item = (&'a str, u64)> + 'a {
        self.bytes.split(|&b| b == 0).filter_map(|e| {
            let s = core::str::from_utf8(e).ok().filter(|s| !s.is_empty())?;
            Some(match s.split_once('+') {
                Some((n, f)) => (n, u64::from_str_radix(f, 16).unwrap_or(0)),
                None => (s, 0),
            })
        })
    }

    /// Whether a payload of `version` with `required` bits is readable.
    pub fn reads(&self, version: &str, required: u64) -> bool {
        self.versions()
            .any(|(n, f)| n == version && required & !f == 0)
    }
}

/// Builds a `kho` reads note at compile time: `desc` is the list of
/// NUL-terminated entries, its length a multiple of 4 (pad with NULs).
#[repr(C, align(4))]
pub struct ReadsNote<const N: usize> {
    namesz: u32,
    descsz: u32,
    ty: u32,
    name: [u8; 4],
    desc: [u8; N],
}

/// Bytes of the reads list naming every version of `lists` (each name
/// with its NUL, padded to a multiple of 4): the `N` of
/// [`ReadsNote::of`].
pub const fn reads_len(lists: &[&[Version]]) -> usize {
    let mut n = 0usize;
    let mut i = 0usize;
    while i < lists.len() {
        let list = lists[i];
        let mut j = 0usize;
        while j < list.len() {
            n += list[j].name.len() + features_len(list[j].features) + 1;
            j += 1;
        }
        i += 1;
    }
    n.next_multiple_of(4)
}

/// Bytes of an entry's feature suffix: `+` and the bits in lowercase hex,
/// none for no bits.
const fn features_len(f: u64) -> usize {
    if f == 0 {
        return 0;
    }
    1 + (64 - f.leading_zeros() as usize).div_ceil(4)
}

impl<const N: usize> ReadsNote<N> {
    /// The note listing, in order, every version of `lists`: the read
    /// lists of the handlers the kernel registers (each the same constant
    /// it registers, so the note cannot disagree with them), then the
    /// kernel's other formats. `N` must be [`reads_len`]`(lists)`; a
    /// mismatch, an empty name or a name with a NUL fails the build.
    pub const fn of(lists: &[&[Version]]) -> Self {
        assert!(reads_len(lists) == N, "N must be reads_len(lists)");
        let mut desc = [0u8; N];
        let mut at = 0usize;
        let mut i = 0usize;
        while i < lists.len() {
            let list = lists[i];
            let mut j = 0usize;
            while j < list.len() {
                let b = list[j].name.as_bytes();
                assert!(!b.is_empty(), "an empty version name");
                let mut k = 0usize;
                while k < b.len() {
                    assert!(b[k] != 0, "a version name with a NUL");
                    desc[at] = b[k];
                    at += 1;
                    k += 1;
                }
                // The reader's feature bits, as `+hex`.
                let f = list[j].features;
                let digits = features_len(f);
                if digits > 0 {
                    desc[at] = b'+';
                    let mut d = 1usize;
                    while d < digits {
                        let nibble = (f >> (4 * (digits - 1 - d))) & 0xf;
                        desc[at + d] = b"0123456789abcdef"[nibble as usize];
                        d += 1;
                    }
                    at += digits;
                }
                // The NUL is already there.
                at += 1;
                j += 1;
            }
            i += 1;
        }
        Self::new(&desc)
    }

    /// The note's list of entries (what [`ReadList::parse`] reads).
    pub const fn desc(&self) -> &[u8; N] {
        &self.desc
    }
}

impl<const N: usize> ReadsNote<N> {
    /// The note for `desc`.
    pub const fn new(desc: &[u8; N]) -> Self {
        assert!(
            N.is_multiple_of(4),
            "pad the reads list to a multiple of 4 bytes"
        );
        Self {
            namesz: 4,
            descsz: N as u32,
            ty: NOTE_READS,
            name: *NOTE_NAME,
            desc: *desc,
        }
    }
}

/// Where an object stands.
#[derive(Debug)]
enum Held {
    /// In the first kernel: the object, and its payloads once frozen.
    Live(Box<dyn Any>, Option<Prepared>),
    /// In the next kernel, not retrieved yet: its payloads from the blob.
    Incoming(Vec<InPayload>),
    /// Restored, from the payload of this version (of this many bytes);
    /// `true` once the owner retrieved it.
    Restored(Box<dyn Any>, &'static str, usize, bool),
    /// Retrieve failed (kept so that a second retrieve says the same).
    Failed(LuoError),
    /// Taken by its owner.
    Taken,
}

/// A payload read from the blob.
#[derive(Clone, Debug)]
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
}

#[derive(Debug)]
struct Session {
    name: String,
    objects: Vec<Object>,
}

/// One row of [`Luo::preflight`]: what the next kernel will do with an
/// object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Its session.
    pub session: String,
    /// Its token.
    pub token: u64,
    /// Its family.
    pub family: String,
    /// The version the next kernel will read, or `None`: lost.
    pub version: Option<&'static str>,
}

/// The orchestrator of one kernel.
pub struct Luo<P: Platform> {
    handlers: Vec<Box<dyn Handler<P>>>,
    sessions: Vec<Session>,
    frozen: bool,
    /// Why [`Luo::incoming`] could not read the blob's node, if it could
    /// not: every object in it is lost, and finish says so.
    unread: Option<LuoError>,
    /// Every incoming object has been restored (the first retrieve did).
    restored: bool,
    finished: bool,
}

/// What [`Luo::finish`] did.
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
}

impl<P: Platform> Default for Luo<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Platform> Luo<P> {
    /// An orchestrator with no handler and no session.
    pub fn new() -> Self {
        Self {
            handlers: Vec::new(),
            sessions: Vec::new(),
            frozen: false,
            unread: None,
            restored: false,
            finished: false,
        }
    }

    /// Registers a handler. Its lists may not name a version twice.
    pub fn register(&mut self, h: Box<dyn Handler<P>>) -> Result<(), LuoError> {
        if self.handler(h.family()).is_some() {
            return Err(LuoError::DuplicateFamily(h.family().to_string()));
        }
        for list in [h.writes(), h.reads()] {
            for (i, v) in list.iter().enumerate() {
                if list
                    .iter()
                    .skip(i.saturating_add(1))
                    .any(|w| w.name == v.name)
                {
                    return Err(LuoError::DuplicateVersion {
                        family: h.family().to_string(),
                        version: v.name.to_string(),
                    });
                }
            }
        }
        self.handlers.push(h);
        Ok(())
    }

    fn handler(&self, family: &str) -> Option<usize> {
        self.handlers.iter().position(|h| h.family() == family)
    }

    /// The versions every registered handler reads, for this kernel's
    /// reads note (`NAME+FEATURES` entries).
    pub fn reads(&self) -> impl Iterator<Item = Version> + '_ {
        self.handlers.iter().flat_map(|h| h.reads().iter().copied())
    }

    /// Creates an empty session.
    pub fn create_session(&mut self, name: &str) -> Result<(), LuoError> {
        if self.frozen {
            return Err(LuoError::State("sessions are frozen"));
        }
        if self.sessions.iter().any(|s| s.name == name) {
            return Err(LuoError::DuplicateSession(name.to_string()));
        }
        self.sessions.push(Session {
            name: name.to_string(),
            objects: Vec::new(),
        });
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
    pub fn preserve(
        &mut self,
        session: &str,
        token: u64,
        family: &str,
        mut object: Box<dyn Any>,
        p: &mut P,
        t: &mut Tracker,
    ) -> Result<(), Refused> {
        let refuse = |error, object| Err(Refused { error, object });
        if self.frozen {
            return refuse(LuoError::State("sessions are frozen"), object);
        }
        let Some(h) = self.handler(family) else {
            return refuse(LuoError::NoHandler(family.to_string()), object);
        };
        if !self.handlers[h].owns(object.as_ref()) {
            return refuse(LuoError::WrongFamily(family.to_string()), object);
        }
        let s = match self.session(session) {
            Ok(s) => s,
            Err(e) => return refuse(e, object),
        };
        if s.objects.iter().any(|o| o.token == token) {
            let e = LuoError::DuplicateToken {
                session: session.to_string(),
                token,
            };
            return refuse(e, object);
        }
        if let Err(e) = self.handlers[h].preserve(object.as_mut(), p, t) {
            return refuse(e, object);
        }
        if let Ok(s) = self.session(session) {
            s.objects.push(Object {
                token,
                family: family.to_string(),
                held: Held::Live(object, None),
            });
        }
        Ok(())
    }

    /// Takes an object back before the kexec: unpreserved, as it was.
    pub fn unpreserve(
        &mut self,
        session: &str,
        token: u64,
        p: &mut P,
        t: &mut Tracker,
    ) -> Result<Box<dyn Any>, LuoError> {
        if self.frozen {
            return Err(LuoError::State("sessions are frozen"));
        }
        let (si, oi) = self.find(session, token)?;
        let o = self.sessions[si].objects.remove(oi);
        let Held::Live(mut obj, _) = o.held else {
            return Err(LuoError::State("only a live object can be unpreserved"));
        };
        let h = self
            .handler(&o.family)
            .ok_or(LuoError::NoHandler(o.family.clone()))?;
        self.handlers[h].unpreserve(obj.as_mut(), p, t)?;
        Ok(obj)
    }

    /// Cancels everything: unfreezes, unpreserves every object and gives
    /// them all back, `(session, token, object)`.
    pub fn cancel(&mut self, p: &mut P, t: &mut Tracker) -> Vec<(String, u64, Box<dyn Any>)> {
        self.unfreeze(p, t);
        let mut out = Vec::new();
        for s in core::mem::take(&mut self.sessions) {
            for o in s.objects {
                if let Held::Live(mut obj, _) = o.held {
                    if let Some(h) = self.handler(&o.family) {
                        let _ = self.handlers[h].unpreserve(obj.as_mut(), p, t);
                    }
                    out.push((s.name.clone(), o.token, obj));
                }
            }
        }
        out
    }

    /// What the next kernel (reading `next`) will do with each object: the
    /// best of its family's writable versions that `next` reads, or none.
    pub fn preflight(&self, next: &ReadList<'_>) -> Vec<Plan> {
        let mut plan = Vec::new();
        for s in &self.sessions {
            for o in &s.objects {
                let version = self
                    .written(o)
                    .into_iter()
                    .find(|v| next.reads(v.name, v.features));
                plan.push(Plan {
                    session: s.name.clone(),
                    token: o.token,
                    family: o.family.clone(),
                    version: version.map(|v| v.name),
                });
            }
        }
        plan
    }

    /// The versions an object will be written in, best first.
    fn written(&self, o: &Object) -> Vec<Version> {
        let (Some(h), Held::Live(obj, _)) = (self.handler(&o.family), &o.held) else {
            return Vec::new();
        };
        let h = &self.handlers[h];
        h.writes()
            .iter()
            .filter(|v| h.can_write(obj.as_ref(), v))
            .copied()
            .collect()
    }

    /// Freezes every object: each handler stores its payloads. If `next`
    /// is given and `drop_lost` is false, refuses first when any object
    /// would be lost ([`LuoError::WouldLose`]). All or nothing: a failed
    /// freeze unfreezes what was frozen.
    pub fn freeze(
        &mut self,
        p: &mut P,
        t: &mut Tracker,
        next: Option<&ReadList<'_>>,
        drop_lost: bool,
    ) -> Result<(), LuoError> {
        if self.frozen {
            return Err(LuoError::State("already frozen"));
        }
        if let Some(next) = next {
            let mut lost = Vec::new();
            for s in &self.sessions {
                for o in &s.objects {
                    let written = self.written(o);
                    if !written.iter().any(|v| next.reads(v.name, v.features)) {
                        lost.push(Loss {
                            session: s.name.clone(),
                            token: o.token,
                            family: o.family.clone(),
                            written: written.iter().map(|v| v.name.to_string()).collect(),
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
                let Some(h) = self.handlers.iter().position(|h| h.family() == o.family) else {
                    failed = Some(LuoError::NoHandler(o.family.clone()));
                    break 'all;
                };
                if let Held::Live(obj, prep) = &mut o.held {
                    let mut out = Prepared::default();
                    match self.handlers[h].prepare(obj.as_mut(), p, t, &mut out) {
                        Ok(()) if out.payloads.is_empty() => {
                            self.handlers[h].unprepare(obj.as_mut(), out, p, t);
                            failed = Some(LuoError::Handler {
                                family: o.family.clone(),
                                what: "stored no version".to_string(),
                            });
                            break 'all;
                        }
                        Ok(()) => *prep = Some(out),
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
    pub fn unfreeze(&mut self, p: &mut P, t: &mut Tracker) {
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
    pub fn write(&self, w: &mut HandoffWriter<'_>) -> Result<(), LuoError> {
        if !self.frozen {
            return Err(LuoError::State("freeze before writing"));
        }
        node::write(w, &self.sessions)
    }

    /// In the next kernel: takes the sessions and objects of the handoff's
    /// `luo` node (none if it has none). Each object waits for
    /// [`Luo::retrieve`].
    pub fn incoming(&mut self, h: &Handoff<'_>) -> Result<(), LuoError> {
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

    /// The sessions and their tokens, in blob order.
    pub fn objects(&self) -> impl Iterator<Item = (&str, u64, &str)> + '_ {
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
    pub fn retrieve(
        &mut self,
        session: &str,
        token: u64,
        p: &mut P,
        ctx: &mut RestoreCtx<'_>,
    ) -> Result<(&mut dyn Any, &'static str), LuoError> {
        if self.finished {
            return Err(LuoError::State("finished"));
        }
        let (si, oi) = self.find(session, token)?;
        self.restore_all(p, ctx);
        let o = &mut self.sessions[si].objects[oi];
        if let Held::Restored(_, _, _, seen) = &mut o.held {
            *seen = true;
        }
        match &mut o.held {
            Held::Restored(obj, v, _, _) => Ok((obj.as_mut(), *v)),
            Held::Failed(e) => Err(e.clone()),
            Held::Taken => Err(LuoError::State("the object was taken")),
            Held::Live(..) => Err(LuoError::State("not an incoming object")),
            Held::Incoming(_) => Err(LuoError::State("not retrieved")),
        }
    }

    /// Restores every object still incoming, in blob order.
    fn restore_all(&mut self, p: &mut P, ctx: &mut RestoreCtx<'_>) {
        if core::mem::replace(&mut self.restored, true) {
            return;
        }
        for s in &mut self.sessions {
            for o in &mut s.objects {
                let Held::Incoming(payloads) = &o.held else {
                    continue;
                };
                let result = match self.handlers.iter_mut().find(|h| h.family() == o.family) {
                    None => Err(LuoError::NoHandler(o.family.clone())),
                    Some(h) => pick(h.reads(), payloads, &o.family).and_then(|(v, pl)| {
                        let payload = PayloadIn {
                            version: v,
                            required: pl.required,
                            optional: pl.optional,
                            data: &pl.data,
                        };
                        h.retrieve(&payload, p, ctx)
                            .map(|obj| (obj, v, pl.data.len()))
                    }),
                };
                o.held = match result {
                    Ok((obj, v, n)) => Held::Restored(obj, v, n, false),
                    Err(e) => Held::Failed(e),
                };
            }
        }
    }

    fn find(&self, session: &str, token: u64) -> Result<(usize, usize), LuoError> {
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

    /// The version a retrieved object was restored from, and the bytes of
    /// its payload in the blob.
    pub fn chosen(&self, session: &str, token: u64) -> Option<(&'static str, usize)> {
        let (si, oi) = self.find(session, token).ok()?;
        match &self.sessions[si].objects[oi].held {
            Held::Restored(_, v, n, true) => Some((v, *n)),
            _ => None,
        }
    }

    /// Takes a retrieved object from the orchestrator.
    pub fn take(&mut self, session: &str, token: u64) -> Result<Box<dyn Any>, LuoError> {
        let (si, oi) = self.find(session, token)?;
        let o = &mut self.sessions[si].objects[oi];
        match core::mem::replace(&mut o.held, Held::Taken) {
            Held::Restored(obj, _, _, true) => Ok(obj),
            other => {
                o.held = other;
                Err(LuoError::State("only a retrieved object can be taken"))
            }
        }
    }

    /// In the next kernel, once, when every object that will be retrieved
    /// is: discards objects restored but never retrieved, then consumes the
    /// claims and gives the platform ([`FrameAlloc::add_free`]) every
    /// preserved page nobody adopted as data
    /// (payloads of unchosen versions, objects never retrieved or that
    /// failed) and every page claimed as metadata (record arrays, vmalloc
    /// chains). Preserved memory restored outside the orchestrator must be
    /// claimed before, or it is freed too. Taking the claims by value means
    /// nothing can claim after finish; a second finish is
    /// [`LuoError::State`].
    pub fn finish(&mut self, p: &mut P, mut claims: Claims) -> Result<Finished, LuoError> {
        if self.finished {
            return Err(LuoError::State("finish was called before"));
        }
        // Room for every object's line in the report first: past this
        // point nothing fails, so finish either runs whole or changes
        // nothing (and may be called again).
        let objects: usize = self.sessions.iter().map(|s| s.objects.len()).sum();
        let mut lost = Vec::new();
        lost.try_reserve(objects)
            .map_err(|_| LuoError::OutOfMemory)?;
        self.finished = true;
        for s in &mut self.sessions {
            for o in &mut s.objects {
                let e = match core::mem::replace(&mut o.held, Held::Taken) {
                    Held::Failed(e) => e,
                    Held::Incoming(_) => LuoError::State("never retrieved"),
                    Held::Restored(obj, _, _, false) => {
                        if let Some(h) = self.handlers.iter_mut().find(|h| h.family() == o.family) {
                            h.discard(obj, p, &mut claims);
                        }
                        LuoError::State("never retrieved")
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
        })
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
        written: payloads
            .iter()
            .map(|p| {
                if p.required == 0 {
                    p.version.clone()
                } else {
                    alloc::format!("{}+{:x}", p.version, p.required)
                }
            })
            .collect(),
        reads: reads.iter().map(|v| v.name.to_string()).collect(),
    })
}
