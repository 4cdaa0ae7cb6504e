//! Preflight against the next kernel's reads list, freeze and thaw, and
//! the `luo` node written into the handoff.

use super::*;
use crate::handoff::HandoffWriter;
use crate::tracker::Tracker;

impl<P: Platform> Luo<P> {
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
    pub(super) fn outcome(&self, s: &Session, o: &Object, next: &ReadList<'_>) -> Outcome {
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
    pub(super) fn written(&self, o: &Object) -> Vec<(String, u64)> {
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
}
