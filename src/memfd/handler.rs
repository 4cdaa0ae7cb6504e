//! The orchestrator's handler for [`Memfd`] objects (family `memfd`).
//!
//! It writes every version it is configured to write that can carry the
//! file (a sealed file has no `memfd-v1`), each its own payload: the folios
//! are shared, each version has its own descriptor and record array. It
//! reads the versions it is configured to read, best first.

use super::{Memfd, MemfdError, v1, v2};
use crate::claims::Claims;
use crate::luo::{Handler, LuoError, Payload, PayloadIn, Platform, Prepared, RestoreCtx, Version};
use crate::ranges::Range;
use crate::tracker::Tracker;
use crate::vmalloc::Vmalloc;
use alloc::vec::Vec;

/// The family name.
pub const FAMILY: &str = "memfd";
/// `memfd-v2`.
pub const V2: Version = Version::new(v2::VERSION);
/// `memfd-v1`.
pub const V1: Version = Version::new(v1::VERSION);
/// `memfd-v3`: a stand-in for a future version, for tests of a version the
/// next kernel does not know. It is the `memfd-v2` layout under another
/// name, and no reader in this crate reads it unless told to.
#[cfg(any(test, feature = "tools"))]
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

/// A memfd error as the orchestrator reports it: the handler's own error
/// (its kind is the memfd error's: [`crate::ErrorKind`]).
fn luo(e: MemfdError) -> LuoError {
    LuoError::handler(FAMILY, e)
}

impl<P: Platform> Handler<P> for MemfdHandler {
    type Object = Memfd;
    /// Each payload's record array (vmalloc), unpreserved and freed if the
    /// kexec is refused.
    type Undo = Option<Vmalloc>;

    fn family(&self) -> &'static str {
        FAMILY
    }

    fn writes(&self) -> &[Version] {
        &self.writes
    }

    fn reads(&self) -> &[Version] {
        &self.reads
    }

    fn can_write(&self, f: &Memfd, version: &Version) -> bool {
        // memfd-v1 has no seals (`SEAL` alone restores as no seals).
        version.name != v1::VERSION || f.seals().difference(crate::memfd::Seals::SEAL).is_empty()
    }

    /// Preserves the folios and lays out the record array of every version
    /// written now, as Linux's memfd does at preserve: the folios of a
    /// preserved file cannot change, so freeze then writes descriptors
    /// only. All or nothing.
    fn preserve(&mut self, f: &mut Memfd, p: &mut P, t: &mut Tracker) -> Result<(), LuoError> {
        f.preserve(t).map_err(luo)?;
        let v1 = self.writes.iter().any(|v| v.name == v1::VERSION);
        let v2 = self.writes.iter().any(|v| v.name != v1::VERSION);
        let laid = (if v1 { v1::lay_out(f, p, t) } else { Ok(()) })
            .and_then(|()| if v2 { v2::lay_out(f, p, t) } else { Ok(()) });
        if let Err(e) = laid {
            super::release_laid(f, p, t);
            let _ = f.unpreserve(t);
            return Err(luo(e));
        }
        Ok(())
    }

    fn footprint(&self, f: &Memfd, out: &mut Vec<Range>) {
        out.extend(
            f.extents()
                .iter()
                .map(|e| Range::new(e.phys, e.phys.saturating_add(e.pages() * crate::PAGE_SIZE))),
        );
    }

    fn unpreserve(&mut self, f: &mut Memfd, p: &mut P, t: &mut Tracker) -> Result<(), LuoError> {
        super::release_laid(f, p, t);
        f.unpreserve(t).map_err(luo)
    }

    fn prepare(
        &mut self,
        f: &mut Memfd,
        p: &mut P,
        t: &mut Tracker,
        out: &mut Prepared<Option<Vmalloc>>,
    ) -> Result<(), LuoError> {
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
                    unprepare_in(core::mem::take(out), p, t);
                    return Err(luo(e));
                }
            };
            out.payloads.push(Payload {
                version: v.name,
                required: 0,
                optional: 0,
                data: w.desc,
            });
            if let Some(a) = &w.array {
                out.footprint.extend(a.pages());
            } else {
                // The array laid out at preserve (kept by the file, not by
                // this freeze: a refused freeze leaves it in place).
                out.footprint.extend(super::laid_pages(f, v.name));
            }
            out.keep.push(w.array);
        }
        Ok(())
    }

    fn unprepare(
        &mut self,
        _: &mut Memfd,
        prepared: Prepared<Option<Vmalloc>>,
        p: &mut P,
        t: &mut Tracker,
    ) {
        unprepare_in(prepared, p, t);
    }

    fn retrieve(
        &mut self,
        payload: &PayloadIn<'_>,
        p: &mut P,
        ctx: &mut RestoreCtx<'_>,
    ) -> Result<Memfd, LuoError> {
        let data = payload.data;
        Ok(if payload.version == v1::VERSION {
            v1::read(data, p, ctx.ram, ctx.scratch, ctx.claims).map_err(luo)?
        } else {
            v2::read(data, p, ctx.ram, ctx.scratch, ctx.claims).map_err(luo)?
        })
    }

    fn discard(&mut self, f: Memfd, _: &mut P, claims: &mut Claims) {
        for e in f.extents() {
            claims.release(e.phys, e.pages());
        }
    }
}

/// Unpreserves and frees the record arrays of a refused freeze.
fn unprepare_in<P: Platform>(prepared: Prepared<Option<Vmalloc>>, p: &mut P, t: &mut Tracker) {
    for mut a in prepared.keep.into_iter().flatten() {
        let _ = a.unpreserve(p, t);
        a.free(p);
    }
}
