//! Carrying: objects this kernel cannot read handed on with their
//! footprints, and the footprint a preserved object writes.

use super::*;
use crate::abi::luo as abi;
use crate::tracker::Tracker;

/// The footprint written for `o`: its own, with its payloads' pages once
/// frozen; `None` when it has none, or more extents than the node takes
/// (then nothing is copied: a file of scattered folios pays nothing).
pub(super) fn footprint_of(o: &Object) -> Option<Vec<Range>> {
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
pub(super) fn carriable(o: &Object) -> bool {
    o.fp_array.is_some() || footprint_of(o).is_some()
}

/// Sorts `v` and joins ranges that touch or overlap.
pub(super) fn merged(mut v: Vec<Range>) -> Vec<Range> {
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

impl<P: Platform> Luo<P> {
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
}
