//! The orchestrator's handler for [`Memfd`] objects (family `memfd`).
//!
//! It writes every version it is configured to write that can carry the
//! file (a sealed file has no `memfd-v1`), each its own payload: the folios
//! are shared, each version has its own descriptor and record array. It
//! reads the versions it is configured to read, best first.

use super::{Handler, LuoError, Payload, PayloadIn, Platform, Prepared, RestoreCtx, Version};
use crate::claims::Claims;
use crate::memfd::{Memfd, MemfdError, v1, v2};
use crate::tracker::Tracker;
use crate::vmalloc::Vmalloc;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::any::Any;

/// The family name.
pub const FAMILY: &str = "memfd";
/// `memfd-v2`.
pub const V2: Version = Version::new(v2::VERSION);
/// `memfd-v1`.
pub const V1: Version = Version::new(v1::VERSION);
/// `memfd-v3`: a stand-in for a future version, for tests of a version the
/// next kernel does not know. It is the `memfd-v2` layout under another
/// name, and no reader in this crate reads it unless told to.
pub const V3_TEST: Version = Version::new("memfd-v3");

/// The `memfd` handler.
#[derive(Clone, Debug)]
pub struct MemfdHandler {
    writes: Vec<Version>,
    reads: Vec<Version>,
}

impl MemfdHandler {
    /// A handler writing `writes` and reading `reads` (best first).
    pub fn new(writes: &[Version], reads: &[Version]) -> Self {
        Self {
            writes: writes.to_vec(),
            reads: reads.to_vec(),
        }
    }
}

impl Default for MemfdHandler {
    /// Writes and reads `memfd-v2` and `memfd-v1`.
    fn default() -> Self {
        Self::new(&[V2, V1], &[V2, V1])
    }
}

fn file(obj: &mut dyn Any) -> Result<&mut Memfd, LuoError> {
    obj.downcast_mut::<Memfd>()
        .ok_or(LuoError::WrongFamily(FAMILY.into()))
}

impl From<MemfdError> for LuoError {
    fn from(e: MemfdError) -> Self {
        LuoError::Memfd(e)
    }
}

impl<P: Platform> Handler<P> for MemfdHandler {
    fn family(&self) -> &'static str {
        FAMILY
    }

    fn writes(&self) -> &[Version] {
        &self.writes
    }

    fn reads(&self) -> &[Version] {
        &self.reads
    }

    fn owns(&self, obj: &dyn Any) -> bool {
        obj.is::<Memfd>()
    }

    fn can_write(&self, obj: &dyn Any, version: &Version) -> bool {
        // memfd-v1 has no seals (`SEAL` alone restores as no seals).
        version.name != v1::VERSION
            || obj
                .downcast_ref::<Memfd>()
                .is_some_and(|f| f.seals().difference(crate::memfd::Seals::SEAL).is_empty())
    }

    fn preserve(&mut self, obj: &mut dyn Any, _: &mut P, t: &mut Tracker) -> Result<(), LuoError> {
        Ok(file(obj)?.preserve(t)?)
    }

    fn unpreserve(
        &mut self,
        obj: &mut dyn Any,
        _: &mut P,
        t: &mut Tracker,
    ) -> Result<(), LuoError> {
        Ok(file(obj)?.unpreserve(t)?)
    }

    fn prepare(
        &mut self,
        obj: &mut dyn Any,
        p: &mut P,
        t: &mut Tracker,
        out: &mut Prepared,
    ) -> Result<(), LuoError> {
        let f = file(obj)?;
        for v in &self.writes {
            let w = match v.name {
                n if n == v1::VERSION => match v1::write(f, p, t) {
                    // v1 has no seals: a sealed file goes in the others only.
                    Err(MemfdError::Unrepresentable) => continue,
                    r => r,
                },
                _ => v2::write(f, p, t),
            };
            let w = match w {
                Ok(w) => w,
                Err(e) => {
                    self.unprepare_in(core::mem::take(out), p, t);
                    return Err(e.into());
                }
            };
            out.payloads.push(Payload {
                version: v.name,
                required: 0,
                optional: 0,
                data: w.desc,
            });
            out.keep.push(Box::new(w.array));
        }
        Ok(())
    }

    fn unprepare(&mut self, _: &mut dyn Any, prepared: Prepared, p: &mut P, t: &mut Tracker) {
        self.unprepare_in(prepared, p, t);
    }

    fn retrieve(
        &mut self,
        payload: &PayloadIn<'_>,
        p: &mut P,
        ctx: &mut RestoreCtx<'_>,
    ) -> Result<Box<dyn Any>, LuoError> {
        let data = payload.data;
        let f = if payload.version == v1::VERSION {
            v1::read(data, p, ctx.ram, ctx.scratch, ctx.claims)?
        } else {
            v2::read(data, p, ctx.ram, ctx.scratch, ctx.claims)?
        };
        Ok(Box::new(f))
    }

    fn discard(&mut self, obj: Box<dyn Any>, _: &mut P, claims: &mut Claims) {
        if let Ok(f) = obj.downcast::<Memfd>() {
            for e in f.extents() {
                claims.release(e.phys, e.pages());
            }
        }
    }
}

impl MemfdHandler {
    fn unprepare_in<P: Platform>(&mut self, prepared: Prepared, p: &mut P, t: &mut Tracker) {
        for k in prepared.keep {
            if let Ok(a) = k.downcast::<Option<Vmalloc>>()
                && let Some(mut a) = *a
            {
                let _ = a.unpreserve(p, t);
                a.free(p);
            }
        }
    }
}
