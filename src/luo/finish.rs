//! What is known of an incoming object, taking it, and finish.

use super::*;
use crate::claims::Claims;

impl<P: Platform> Luo<P> {
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
            Held::Taken => {
                return Err(LuoError::Taken {
                    session: session.into(),
                    token,
                });
            }
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

    /// In the next kernel, once, when every object that will be retrieved is:
    /// discards objects restored but never retrieved, then consumes the claims
    /// and gives the platform
    /// ([`FrameAlloc::add_free`](crate::platform::FrameAlloc::add_free)) every
    /// preserved page nobody adopted as data (payloads of unchosen versions,
    /// objects never retrieved or that failed) and every page claimed as
    /// metadata (record arrays, vmalloc chains). Preserved memory restored
    /// outside the orchestrator must be claimed before, or it is freed too.
    /// Taking the claims by value means nothing can claim after finish; a
    /// second finish is [`LuoError::State`].
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
