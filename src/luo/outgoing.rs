//! The first kernel's side of the orchestrator: sessions, preserve and
//! share, unpreserve and cancel.

use super::*;
use crate::abi::luo as abi;
use crate::tracker::Tracker;

/// Writes `o`'s footprint to a preserved array if it is too long to list
/// inline (at preserve: outside the blackout).
pub(super) fn stage_array<P: Platform>(
    o: &mut Object,
    p: &mut P,
    t: &mut Tracker,
) -> Result<(), LuoError> {
    if o.footprint.len() <= abi::MAX_FOOTPRINT_EXTENTS || o.fp_array.is_some() {
        return Ok(());
    }
    if o.footprint.len() as u64 > abi::MAX_FOOTPRINT_ARRAY {
        // Too many runs even for an array: not carriable.
        return Ok(());
    }
    let bytes = o.footprint.len() * 16;
    let mut v =
        crate::vmalloc::Vmalloc::new(p, bytes, 0).map_err(|error| LuoError::FootprintArray {
            runs: o.footprint.len(),
            error,
        })?;
    {
        let buf = v.bytes_mut(p);
        for (r, out) in o.footprint.iter().zip(buf.chunks_exact_mut(16)) {
            let e = abi::Extent {
                start: r.start.into(),
                pages: (r.len() / crate::PAGE_SIZE).into(),
            };
            out.copy_from_slice(zerocopy::IntoBytes::as_bytes(&e));
        }
    }
    match v.preserve_summed(p, t) {
        Ok(root) => {
            o.fp_array = Some((v, root));
            Ok(())
        }
        Err(error) => {
            v.free(p);
            Err(LuoError::FootprintArray {
                runs: o.footprint.len(),
                error,
            })
        }
    }
}

/// Unpreserves and frees `o`'s footprint array, if it has one.
pub(super) fn drop_array<P: Platform>(o: &mut Object, p: &mut P, t: &mut Tracker) {
    if let Some((mut v, _)) = o.fp_array.take() {
        let _ = v.unpreserve(p, t);
        v.free(p);
    }
}

impl<P: Platform> Luo<P> {
    /// Creates an empty session.
    /// A session that only holds objects carried from the previous kernel
    /// ([`Luo::carry`]) is taken over: this kernel's objects join them.
    pub(crate) fn create_session(&mut self, name: &str) -> Result<(), LuoError> {
        if self.frozen {
            return Err(LuoError::State("sessions are frozen"));
        }
        if let Some(s) = self.sessions.iter_mut().find(|s| s.name == name) {
            if s.explicit {
                return Err(LuoError::DuplicateSession(name.to_string()));
            }
            s.explicit = true;
            return Ok(());
        }
        self.sessions
            .try_reserve(1)
            .map_err(|_| LuoError::OutOfMemory)?;
        self.sessions.push(Session {
            name: name.to_string(),
            objects: Vec::new(),
            drop_unread: false,
            explicit: true,
        });
        Ok(())
    }

    /// Opts `session` out of carry-through (or back in): when a later
    /// kernel cannot read one of its objects, the object is dropped and
    /// its memory freed, instead of kept for a kernel that can. For data
    /// that must not outlive a kernel able to check it (keys, leases);
    /// everything else is better carried.
    pub(crate) fn set_drop_unread(&mut self, session: &str, drop: bool) -> Result<(), LuoError> {
        if self.frozen {
            return Err(LuoError::State("sessions are frozen"));
        }
        self.session(session)?.drop_unread = drop;
        Ok(())
    }

    pub(super) fn session(&mut self, name: &str) -> Result<&mut Session, LuoError> {
        self.sessions
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| LuoError::NoSession(name.to_string()))
    }

    /// Preserves `object` of `family` under `token` in `session`. On error
    /// the object comes back unchanged.
    pub(crate) fn preserve<T: Any>(
        &mut self,
        session: &str,
        token: u64,
        family: &str,
        mut object: T,
        p: &mut P,
        t: &mut Tracker,
    ) -> Result<(), Refused<T>> {
        let refuse = |error, object| Err(Refused { error, object });
        let h = match self.admit(session, token, family, &object) {
            Ok(h) => h,
            Err(e) => return refuse(e, object),
        };
        if let Err(e) = self.handlers[h].preserve(&mut object, p, t) {
            return refuse(e, object);
        }
        // The footprint, while the object's pages cannot change (and
        // outside the blackout: freeze only adds its payloads' pages).
        let mut footprint = Vec::new();
        self.handlers[h].footprint(&object, &mut footprint);
        let mut o = Object::new(token, family.to_string(), Held::Taken);
        o.footprint = merged(footprint);
        if let Err(e) = stage_array(&mut o, p, t) {
            let _ = self.handlers[h].unpreserve(&mut object, p, t);
            return refuse(e, object);
        }
        o.held = Held::Live(Box::new(object), None);
        if let Ok(s) = self.session(session) {
            s.objects.push(o);
        }
        Ok(())
    }

    /// Gives shared state (one huge-page pool behind many files, say) as
    /// object `token` of `session`: it is not preserved now, but with its
    /// first dependent ([`Luo::preserve_with`]), restored in the next
    /// kernel before any dependent, and discarded after the last. On
    /// error the object comes back unchanged.
    pub(crate) fn share<T: Any>(
        &mut self,
        session: &str,
        token: u64,
        family: &str,
        object: T,
    ) -> Result<(), Refused<T>> {
        if let Err(error) = self.admit(session, token, family, &object) {
            return Err(Refused { error, object });
        }
        let mut o = Object::new(token, family.to_string(), Held::Pending(Box::new(object)));
        o.lazy = true;
        if let Ok(s) = self.session(session) {
            s.objects.push(o);
        }
        Ok(())
    }

    /// Whether an object may join `session` as `token` of `family`: not
    /// frozen, a handler for the family that owns the object, the session
    /// there, the token free in it, and room for one more. Returns the
    /// handler's index.
    pub(super) fn admit(
        &mut self,
        session: &str,
        token: u64,
        family: &str,
        object: &dyn Any,
    ) -> Result<usize, LuoError> {
        if self.frozen {
            return Err(LuoError::State("sessions are frozen"));
        }
        let h = self
            .handler(family)
            .ok_or_else(|| LuoError::NoHandler(family.to_string()))?;
        if !self.handlers[h].owns(object) {
            return Err(LuoError::WrongFamily(family.to_string()));
        }
        let s = self.session(session)?;
        if s.objects.iter().any(|o| o.token == token) {
            return Err(LuoError::DuplicateToken {
                session: session.to_string(),
                token,
            });
        }
        s.objects
            .try_reserve(1)
            .map_err(|_| LuoError::OutOfMemory)?;
        Ok(h)
    }

    /// [`Luo::preserve`] for an object that depends on shared state,
    /// object `needs` (session, token) of this orchestrator: preserved
    /// first if it is not yet (given with [`Luo::share`]). In the next
    /// kernel the shared object is restored first and lent to the
    /// dependent's [`Handler::retrieve_dependent`]; if it cannot be read,
    /// the dependent is not read either
    /// ([`LuoError::SharedUnread`], naming both) and is carried with it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn preserve_with<T: Any>(
        &mut self,
        session: &str,
        token: u64,
        family: &str,
        object: T,
        needs: (&str, u64),
        p: &mut P,
        t: &mut Tracker,
    ) -> Result<(), Refused<T>> {
        let refuse = |error, object| Err(Refused { error, object });
        let (si, oi) = match self.find(needs.0, needs.1) {
            Ok(x) => x,
            Err(e) => return refuse(e, object),
        };
        if self.sessions[si].objects[oi].needs.is_some() {
            return refuse(
                LuoError::State("shared state may not depend on another"),
                object,
            );
        }
        let was_pending = matches!(self.sessions[si].objects[oi].held, Held::Pending(_));
        if was_pending && let Err(e) = self.preserve_pending(si, oi, p, t) {
            return refuse(e, object);
        }
        match self.preserve(session, token, family, object, p, t) {
            Ok(()) => {
                if let Ok((a, b)) = self.find(session, token) {
                    self.sessions[a].objects[b].needs = Some((needs.0.to_string(), needs.1));
                }
                Ok(())
            }
            Err(r) => {
                if was_pending {
                    self.unpreserve_to_pending(si, oi, p, t);
                }
                Err(r)
            }
        }
    }

    /// Preserves the pending shared object at `(si, oi)`.
    pub(super) fn preserve_pending(
        &mut self,
        si: usize,
        oi: usize,
        p: &mut P,
        t: &mut Tracker,
    ) -> Result<(), LuoError> {
        let o = &mut self.sessions[si].objects[oi];
        let Held::Pending(mut obj) = core::mem::replace(&mut o.held, Held::Taken) else {
            return Ok(());
        };
        let Some(h) = self.handlers.iter_mut().find(|h| h.family() == o.family) else {
            o.held = Held::Pending(obj);
            return Err(LuoError::NoHandler(o.family.clone()));
        };
        if let Err(e) = h.preserve(obj.as_mut(), p, t) {
            o.held = Held::Pending(obj);
            return Err(e);
        }
        let mut footprint = Vec::new();
        h.footprint(obj.as_ref(), &mut footprint);
        o.footprint = merged(footprint);
        if let Err(e) = stage_array(o, p, t) {
            let _ = h.unpreserve(obj.as_mut(), p, t);
            o.footprint.clear();
            o.held = Held::Pending(obj);
            return Err(e);
        }
        o.held = Held::Live(obj, None);
        Ok(())
    }

    /// Unpreserves the live shared object at `(si, oi)`, back to pending.
    pub(super) fn unpreserve_to_pending(
        &mut self,
        si: usize,
        oi: usize,
        p: &mut P,
        t: &mut Tracker,
    ) {
        let o = &mut self.sessions[si].objects[oi];
        if let Held::Live(obj, None) = &mut o.held
            && let Some(h) = self.handlers.iter_mut().find(|h| h.family() == o.family)
            && h.unpreserve(obj.as_mut(), p, t).is_ok()
            && let Held::Live(obj, _) = core::mem::replace(&mut o.held, Held::Taken)
        {
            o.held = Held::Pending(obj);
            o.footprint.clear();
            drop_array(o, p, t);
        }
    }

    /// Takes an object back before the kexec: unpreserved, as it was. If
    /// it is not a `T` or cannot be unpreserved, it stays preserved. Shared
    /// state given with [`Luo::share`] goes back to waiting for a
    /// dependent when its last one is taken back.
    pub(crate) fn unpreserve<T: Any>(
        &mut self,
        session: &str,
        token: u64,
        family: &str,
        p: &mut P,
        t: &mut Tracker,
    ) -> Result<T, LuoError> {
        if self.frozen {
            return Err(LuoError::State("sessions are frozen"));
        }
        let (si, oi) = self.find_of(session, token, family)?;
        let o = &mut self.sessions[si].objects[oi];
        let Held::Live(obj, _) = &mut o.held else {
            return Err(LuoError::State("only a live object can be unpreserved"));
        };
        if !obj.is::<T>() {
            return Err(LuoError::WrongFamily(o.family.clone()));
        }
        let h = self
            .handlers
            .iter_mut()
            .find(|h| h.family() == o.family)
            .ok_or(LuoError::NoHandler(o.family.clone()))?;
        h.unpreserve(obj.as_mut(), p, t)?;
        let mut o = self.sessions[si].objects.remove(oi);
        drop_array(&mut o, p, t);
        if let Some((ns, nt)) = &o.needs
            && let Ok((a, b)) = self.find(ns, *nt)
            && self.sessions[a].objects[b].lazy
            && !self.has_dependents(ns, *nt)
        {
            self.unpreserve_to_pending(a, b, p, t);
        }
        match o.held {
            Held::Live(obj, _) => obj
                .downcast::<T>()
                .map(|b| *b)
                .map_err(|_| LuoError::WrongFamily(o.family)),
            _ => Err(LuoError::State("only a live object can be unpreserved")),
        }
    }

    /// Whether any object depends on object `token` of `session`.
    pub(super) fn has_dependents(&self, session: &str, token: u64) -> bool {
        self.sessions.iter().any(|s| {
            s.objects.iter().any(|o| {
                o.needs
                    .as_ref()
                    .is_some_and(|(a, b)| a == session && *b == token)
            })
        })
    }

    /// Cancels everything: unfreezes, unpreserves every object and gives
    /// them all back.
    /// Objects carried from the previous kernel stay (preserved, in their
    /// sessions): they are not this kernel's to give back.
    pub(crate) fn cancel(&mut self, p: &mut P, t: &mut Tracker) -> Vec<Cancelled> {
        self.unfreeze(p, t);
        let mut out = Vec::new();
        let mut kept = Vec::new();
        for mut s in core::mem::take(&mut self.sessions) {
            let mut stay = Vec::new();
            for mut o in s.objects {
                if !matches!(o.held, Held::Carried(_)) {
                    drop_array(&mut o, p, t);
                }
                match o.held {
                    Held::Live(mut obj, _) => {
                        if let Some(h) = self.handler(&o.family) {
                            let _ = self.handlers[h].unpreserve(obj.as_mut(), p, t);
                        }
                        out.push(Cancelled {
                            session: s.name.clone(),
                            token: o.token,
                            family: o.family,
                            object: obj,
                        });
                    }
                    Held::Carried(_) => stay.push(o),
                    Held::Pending(obj) => out.push(Cancelled {
                        session: s.name.clone(),
                        token: o.token,
                        family: o.family,
                        object: obj,
                    }),
                    _ => {}
                }
            }
            if !stay.is_empty() {
                s.objects = stay;
                s.explicit = false;
                kept.push(s);
            }
        }
        self.sessions = kept;
        out
    }
}
