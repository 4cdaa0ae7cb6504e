//! The front door: [`Outgoing`] in the kernel that kexecs, [`Incoming`] in
//! the kernel that boots from its handoff, both typed by their objects.
//!
//! An embedding kernel holds one of these at a time. [`Outgoing`] owns the
//! preserved-page tracker, the orchestrator and the scratch areas: register
//! handlers, preserve objects in sessions, freeze against the next image's
//! reads list; the architecture layer writes the handoff blob from the
//! [`Frozen`] side and kexecs. [`Incoming`] is made by the architecture
//! layer at boot, by one call that parses the blob, restores it (every
//! preserved range reported to the kernel's `Reserve`), reads the
//! orchestrator's node and sets up the claims; handlers are registered and
//! the kernel's own data claimed;
//! [`Incoming::restore`] then restores every
//! object at once into a [`Restored`], whose objects are taken by typed
//! [`Key`]s, and whose `finish` (which consumes it) gives back what nobody
//! adopted. Each phase is its own type: a call that does not belong to it
//! does not compile.
//!
//! Everything here is built on the lower layer (the orchestrator,
//! [`crate::tracker::Tracker`], `crate::handoff`, [`crate::claims`]); the
//! front door does not hand out those parts (a kernel's own preserved data
//! goes through [`Outgoing::preserve_frames`] and [`Incoming::claim`]).

#[cfg(any(test, feature = "arch"))]
mod blob;
#[cfg(any(test, feature = "arch"))]
mod boot;
mod incoming;
mod outgoing;

#[cfg(any(test, feature = "arch"))]
pub use blob::Blob;
pub use incoming::{Incoming, Restored};
pub use outgoing::{Frozen, NotFrozen, Outgoing};

use crate::luo::{Family, ReadList};
use alloc::string::String;

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
    /// Refuse the freeze
    /// ([`LuoError::WouldLose`](crate::luo::LuoError::WouldLose), naming each
    /// object) if the next kernel, which reads this list, would lose any
    /// object. The default: get the list from the next image with
    /// [`crate::elf::Image::read_list`].
    NoLoss(&'a ReadList<'a>),
    /// Freeze whatever the next kernel reads: an object it cannot read is
    /// written anyway and reported lost there (and its memory freed).
    AllowLoss,
}
