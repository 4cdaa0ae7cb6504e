//! The orchestrator's errors, each naming what was refused.

use crate::fdt::WriteError;
use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

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
    /// The handler refused, with its own error (typed: see
    /// [`HandlerError::downcast_ref`]).
    Handler {
        /// The family.
        family: String,
        /// The handler's error.
        error: HandlerError,
    },
    /// A handler's prepare stored no version of an object.
    NothingStored(String),
    /// The handoff blob has no room for the `luo` node (or a node could
    /// not be written).
    Write(WriteError),
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
    /// A handler's claim on preserved memory was refused.
    Claim(crate::claims::ClaimError),
    /// The tracker refused (a handler's preserve).
    Tracker(crate::tracker::TrackerError),
    /// A preserved vmalloc buffer could not be written or read.
    Vmalloc(crate::vmalloc::VmallocError),
    /// No memory for the orchestrator's lists.
    OutOfMemory,
    /// An object this kernel cannot read could not be carried: its
    /// footprint names a page that is not preserved, lies in scratch, or
    /// belongs to another owner. The object is dropped; nothing else is
    /// touched.
    Footprint {
        /// Its session.
        session: String,
        /// Its token.
        token: u64,
        /// Its family.
        family: String,
        /// Why the footprint was refused.
        error: crate::claims::ClaimError,
    },
    /// An object this kernel cannot read could not be carried: its
    /// footprint is malformed (unsorted, overlapping itself, empty runs,
    /// unaligned or overflowing). The object is dropped; nothing else is
    /// touched.
    BadFootprint {
        /// Its session.
        session: String,
        /// Its token.
        token: u64,
        /// Its family.
        family: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An object depends on shared state this kernel did not read (or
    /// that is not in the blob): it is not read either, and is carried
    /// with it when it can be.
    SharedUnread {
        /// Its session.
        session: String,
        /// Its token.
        token: u64,
        /// The shared object's session.
        shared_session: String,
        /// The shared object's token.
        shared_token: u64,
    },
    /// The object is carried by this kernel (it reads none of its
    /// versions): it goes on to the next handoff untouched.
    Carried {
        /// Its family.
        family: String,
        /// The versions it was written in.
        written: Vec<String>,
    },
    /// Finish: the object was restored but nobody retrieved it; it was
    /// discarded and its memory freed.
    NeverRetrieved,
    /// Finish: the object was retrieved but never taken; nobody can take
    /// it after finish, so it was discarded and its memory freed.
    NotTaken,
    /// The object was taken already (by [`crate::Restored::take`]): it is
    /// its owner's, and the orchestrator no longer holds it.
    Taken {
        /// Its session.
        session: String,
        /// Its token.
        token: u64,
    },
    /// The blob's `luo` node could not be read (the error says why), so
    /// no object of it is here: every one of them is lost.
    NodeUnread(Box<LuoError>),
    /// Freeze: the next image's reads note does not list the
    /// orchestrator's node version (`kho-luo-v2`), so that kernel cannot
    /// read the node and every object would be lost.
    NextReadsNoNode {
        /// The objects that would be lost.
        objects: usize,
    },
    /// Preserve: the object's footprint has more runs than a node lists
    /// inline, and its footprint array (a preserved vmalloc buffer,
    /// mapped through the platform's `MapFrames`) could not be written.
    FootprintArray {
        /// The runs in its footprint.
        runs: usize,
        /// Why the array could not be written.
        error: crate::vmalloc::VmallocError,
    },
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
            Handler { family, error } => write!(f, "luo: {family}: {error}"),
            NothingStored(x) => write!(f, "luo: the {x} handler stored no version of an object"),
            Write(e) => write!(f, "luo: writing the luo node: {e}"),
            BadNode(x) => write!(f, "luo: malformed node ({x})"),
            DuplicateVersion { family, version } => {
                write!(f, "luo: {family} lists version {version} twice")
            }
            Claim(e) => write!(f, "luo: {e}"),
            Tracker(e) => write!(f, "luo: {e}"),
            Vmalloc(e) => write!(f, "luo: {e}"),
            OutOfMemory => f.write_str("luo: out of memory"),
            Footprint {
                session,
                token,
                family,
                error,
            } => write!(
                f,
                "luo: {session}/{token:#x} ({family}) cannot be carried: its footprint is refused: {error}"
            ),
            BadFootprint {
                session,
                token,
                family,
                why,
            } => write!(
                f,
                "luo: {session}/{token:#x} ({family}) cannot be carried: its footprint is malformed ({why})"
            ),
            SharedUnread {
                session,
                token,
                shared_session,
                shared_token,
            } => write!(
                f,
                "luo: {session}/{token:#x} is not read: the shared state it depends on, {shared_session}/{shared_token:#x}, is not read here"
            ),
            Carried { family, written } => write!(
                f,
                "luo: {family} written as [{}] is carried, not read, by this kernel",
                list(written)
            ),
            NeverRetrieved => f.write_str(
                "luo: restored but never retrieved: discarded at finish, its memory freed",
            ),
            NotTaken => f.write_str(
                "luo: retrieved but never taken before finish: discarded, its memory freed",
            ),
            Taken { session, token } => write!(
                f,
                "luo: {session}/{token:#x} was taken already: it is its owner's now"
            ),
            NodeUnread(e) => write!(
                f,
                "luo: the handoff's luo node could not be read, so none of its objects is here: {e}"
            ),
            NextReadsNoNode { objects } => write!(
                f,
                "luo: the next image's reads note does not list {}: it cannot read the luo node, so all {objects} object(s) would be lost",
                crate::abi::luo::LUO_VERSION
            ),
            FootprintArray { runs, error } => write!(
                f,
                "luo: the object's footprint has {runs} runs, more than {} listed inline, and its footprint array could not be written (the platform's MapFrames maps it): {error}",
                crate::abi::luo::MAX_FOOTPRINT_EXTENTS
            ),
        }
    }
}

/// The error a variant wraps, when it wraps one.
impl core::error::Error for LuoError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            LuoError::Claim(e) => Some(e),
            LuoError::Tracker(e) => Some(e),
            LuoError::Vmalloc(e) => Some(e),
            LuoError::Write(e) => Some(e),
            LuoError::Footprint { error, .. } => Some(error),
            LuoError::FootprintArray { error, .. } => Some(error),
            LuoError::NodeUnread(e) => Some(&**e),
            LuoError::Handler { error, .. } => Some(error.as_error()),
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
    fn from(e: WriteError) -> Self {
        LuoError::Write(e)
    }
}

impl LuoError {
    /// A handler's own error, kept typed: `LuoError::handler("counter",
    /// CounterError::BadSum)`.
    pub fn handler<E>(family: &str, error: E) -> Self
    where
        E: core::error::Error + Send + Sync + 'static,
    {
        LuoError::Handler {
            family: family.into(),
            error: HandlerError(Arc::new(error)),
        }
    }
}

/// A handler's own error, shared so that [`LuoError`] stays `Clone`.
#[derive(Clone, Debug)]
pub struct HandlerError(Arc<dyn core::error::Error + Send + Sync>);

impl HandlerError {
    /// The handler's error as its own type, if it is an `E`.
    pub fn downcast_ref<E: core::error::Error + 'static>(&self) -> Option<&E> {
        self.as_error().downcast_ref::<E>()
    }

    /// The handler's error.
    pub fn as_error(&self) -> &(dyn core::error::Error + 'static) {
        &*self.0
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Two handler errors are equal when they say the same.
impl PartialEq for HandlerError {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl Eq for HandlerError {}

/// An object preserve refused, given back with the reason.
///
/// `?` into a `kho::Error` works (`From<Refused<T>>`), and drops the
/// object: nothing preserved is touched, but memory the object owns (a
/// memfd's folios) stays allocated and unused. Where that matters, take it
/// back (`r.object`) and free or retry it.
#[derive(Debug)]
pub struct Refused<T> {
    /// Why.
    pub error: LuoError,
    /// The object, unchanged.
    pub object: T,
}

impl<T: fmt::Debug> fmt::Display for Refused<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused: {}", self.error)
    }
}

impl<T: fmt::Debug> core::error::Error for Refused<T> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        Some(&self.error)
    }
}
