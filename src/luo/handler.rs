//! The handler contract: what a family of objects implements to be preserved,
//! frozen into payloads and retrieved, and what it is given.

use super::LuoError;
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
    ///    given to the allocator at [`Luo::finish`](super::Luo::finish), under the live object.
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
