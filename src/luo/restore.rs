//! The next kernel's side: the `luo` node read, every object restored in
//! blob order, and the footprint arrays read as summed metadata.

use super::*;
use crate::abi::luo as abi;
use crate::claims::Claims;
use crate::handoff::Handoff;
use zerocopy::FromBytes;

/// The full footprint of an object whose data extents are in an array,
/// in canonical form (sorted, disjoint, touching runs joined): the
/// array's blocks claimed as metadata (they stay so until finish frees
/// them, so no footprint can name them as data), its shape checked
/// (order 0, exactly the blocks `n` extents need, summed, zero after the
/// last extent), its extents checked, and `inline` (the payloads' pages)
/// merged in, disjoint from them.
pub(super) fn read_array<P: Platform>(
    p: &mut P,
    ctx: &mut RestoreCtx<'_>,
    root: &crate::vmalloc::VmallocRoot,
    n: u64,
    inline: &[Range],
) -> Result<Vec<Range>, &'static str> {
    let want = n.saturating_mul(16).div_ceil(crate::PAGE_SIZE);
    if root.order.get() != 0 || u64::from(root.blocks.get()) != want {
        return Err("its array's shape does not fit its extent count");
    }
    if root.flags.get() != crate::vmalloc::SUMMED {
        return Err("its array is not summed");
    }
    let b = crate::vmalloc::Blocks::restore(p, root, ctx.ram, ctx.scratch, ctx.claims)
        .map_err(|_| "its array's chain or blocks are refused")?;
    let mut recs: Vec<abi::Extent> = Vec::new();
    recs.try_reserve_exact(usize::try_from(n).map_err(|_| "its array is too long")?)
        .map_err(|_| "no memory to read its array")?;
    let mut sum = crate::csum::Sum64::new();
    let mut tail_clean = true;
    for f in b.frames() {
        let frame = p
            .frame(f)
            .ok_or("its array names a page that cannot be read")?;
        let words = <[zerocopy::byteorder::little_endian::U64]>::ref_from_bytes(frame.as_slice())
            .map_err(|_| "its array names a page that cannot be read")?;
        sum.frame(words);
        for e in <[abi::Extent]>::ref_from_bytes(frame.as_slice())
            .map_err(|_| "its array names a page that cannot be read")?
        {
            if (recs.len() as u64) < n {
                recs.push(*e);
            } else if e.start.get() != 0 || e.pages.get() != 0 {
                tail_clean = false;
            }
        }
    }
    // The sum first: a flipped byte is a checksum failure, whatever it hit.
    if b.sum != Some(sum.finish()) {
        return Err("its array's checksum does not match");
    }
    if !tail_clean || (recs.len() as u64) != n {
        return Err("its array holds other than its extent count");
    }
    let mut all =
        node::extents(&recs).map_err(|_| "its array's extents are not sorted and disjoint")?;
    all.try_reserve(inline.len())
        .map_err(|_| "no memory to read its array")?;
    all.extend_from_slice(inline);
    all.sort_unstable_by_key(|r| r.start);
    if all.windows(2).any(|w| w[0].end > w[1].start) {
        return Err("its inline extents overlap its array's");
    }
    // Canonical: a payload page between two data runs joins them, so
    // the footprint written on (inline or in a new array) is one that
    // every reader accepts, through any number of kernels.
    Ok(merged(all))
}

/// Claims every range of `footprint` as data, or none.
pub(super) fn claim_all(
    claims: &mut Claims,
    footprint: &[Range],
) -> Result<(), crate::claims::ClaimError> {
    for (i, r) in footprint.iter().enumerate() {
        if let Err(e) = claims.claim(r.start, r.len() / crate::PAGE_SIZE) {
            for r in footprint.iter().take(i) {
                claims.release(r.start, r.len() / crate::PAGE_SIZE);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// The best of `reads` (in the reader's order) that a payload has, with
/// every required feature understood.
pub(super) fn pick<'a>(
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
        written: payloads.iter().map(InPayload::name).collect(),
        reads: reads.iter().map(|v| v.name.to_string()).collect(),
    })
}

impl<P: Platform> Luo<P> {
    /// In the next kernel: takes the sessions and objects of the handoff's
    /// `luo` node (none if it has none). Each object waits for
    /// [`Luo::retrieve`].
    pub(crate) fn incoming(&mut self, h: &Handoff<'_>) -> Result<(), LuoError> {
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

    /// Why [`Luo::incoming`] could not read the blob's node, if it could
    /// not.
    pub(crate) fn unread(&self) -> Option<&LuoError> {
        self.unread.as_ref()
    }

    /// In the next kernel: returns the object, restored from the best
    /// version both sides have. The first call restores every incoming
    /// object in blob order (so the outcome does not depend on the order of
    /// calls); later calls return the same object, or the same error.
    /// A `T` is the family's object type; any other type is
    /// [`LuoError::WrongFamily`] (and the object stays restored).
    pub(crate) fn retrieve<T: Any>(
        &mut self,
        session: &str,
        token: u64,
        family: &str,
        p: &mut P,
        ctx: &mut RestoreCtx<'_>,
    ) -> Result<(&mut T, &'static str), LuoError> {
        if self.finished {
            return Err(LuoError::State("finished"));
        }
        let (si, oi) = self.find_of(session, token, family)?;
        self.restore_all(p, ctx);
        let o = &mut self.sessions[si].objects[oi];
        match &mut o.held {
            Held::Restored(obj, v, _, seen) => match obj.downcast_mut::<T>() {
                Some(obj) => {
                    *seen = true;
                    Ok((obj, *v))
                }
                None => Err(LuoError::WrongFamily(o.family.clone())),
            },
            Held::Failed(e) => Err(e.clone()),
            Held::Taken => Err(LuoError::Taken {
                session: session.into(),
                token,
            }),
            Held::Live(..) => Err(LuoError::State("not an incoming object")),
            Held::Incoming(_) => Err(LuoError::State("not retrieved")),
            Held::Carried(p) => Err(LuoError::Carried {
                family: o.family.clone(),
                written: p.iter().map(InPayload::name).collect(),
            }),
            Held::Pending(_) => Err(LuoError::State("not an incoming object")),
        }
    }

    /// Restores every object still incoming: first every object others
    /// depend on (shared state), then the rest, each in blob order, a
    /// dependent with its shared object lent to it; then carries, in blob
    /// order, every object no handler here can read (and every dependent
    /// of shared state that is carried or failed: it is not read without
    /// it). Readers claim first, so a carried object's footprint can never
    /// take a page from an object this kernel reads.
    pub(crate) fn restore_all(&mut self, p: &mut P, ctx: &mut RestoreCtx<'_>) {
        if core::mem::replace(&mut self.restored, true) {
            return;
        }
        let mut order: Vec<(usize, usize)> = Vec::new();
        {
            // What some object needs, sorted once: a lookup per object,
            // not a scan of every object per object.
            let mut needed: Vec<(&str, u64)> = Vec::new();
            for o in self.sessions.iter().flat_map(|s| &s.objects) {
                if let Some((ns, nt)) = &o.needs
                    && needed.try_reserve(1).is_ok()
                {
                    needed.push((ns.as_str(), *nt));
                }
            }
            needed.sort_unstable();
            for pass in [true, false] {
                for (si, s) in self.sessions.iter().enumerate() {
                    for (oi, o) in s.objects.iter().enumerate() {
                        let shared = needed.binary_search(&(s.name.as_str(), o.token)).is_ok();
                        if shared == pass && order.try_reserve(1).is_ok() {
                            order.push((si, oi));
                        }
                    }
                }
            }
        }
        let mut unread: Vec<(usize, usize, LuoError)> = Vec::new();
        for (si, oi) in order {
            if !matches!(self.sessions[si].objects[oi].held, Held::Incoming(_)) {
                continue;
            }
            // The shared object it needs, taken out while it is lent.
            let needs = self.sessions[si].objects[oi].needs.clone();
            let mut lent: Option<(usize, usize, Box<dyn Any>)> = None;
            if let Some((ns, nt)) = &needs {
                let at = self.find(ns, *nt).ok();
                let state = at.map(|(a, b)| &self.sessions[a].objects[b].held);
                let why = || LuoError::SharedUnread {
                    session: self.sessions[si].name.clone(),
                    token: self.sessions[si].objects[oi].token,
                    shared_session: ns.clone(),
                    shared_token: *nt,
                };
                match (at, state) {
                    (Some((a, b)), Some(Held::Restored(..))) => {
                        if let Held::Restored(obj, v, n, seen) =
                            core::mem::replace(&mut self.sessions[a].objects[b].held, Held::Taken)
                        {
                            // Put back below, with its version and size.
                            self.sessions[a].objects[b].held =
                                Held::Restored(Box::new(()), v, n, seen);
                            lent = Some((a, b, obj));
                        }
                    }
                    (_, Some(Held::Failed(_))) | (None, _) => {
                        self.sessions[si].objects[oi].held = Held::Failed(why());
                        continue;
                    }
                    _ => {
                        // Not read here (carried, or never retrieved):
                        // carried with it.
                        let e = why();
                        if unread.try_reserve(1).is_ok() {
                            unread.push((si, oi, e));
                        }
                        continue;
                    }
                }
            }
            let s = &mut self.sessions[si];
            let o = &mut s.objects[oi];
            let Held::Incoming(payloads) = &o.held else {
                continue;
            };
            let h = self.handlers.iter_mut().find(|h| h.family() == o.family);
            let picked = match h {
                None => Err(LuoError::NoHandler(o.family.clone())),
                Some(h) => pick(h.reads(), payloads, &o.family).map(|pl| (h, pl)),
            };
            let result = match picked {
                Err(e) => {
                    if unread.try_reserve(1).is_ok() {
                        unread.push((si, oi, e));
                    } else {
                        o.held = Held::Failed(LuoError::OutOfMemory);
                    }
                    Err(None)
                }
                Ok((h, (v, pl))) => {
                    let payload = PayloadIn {
                        version: v,
                        required: pl.required,
                        optional: pl.optional,
                        data: &pl.data,
                    };
                    let r = match &mut lent {
                        Some((_, _, obj)) => {
                            let mut sh = Shared::new(obj.as_mut());
                            h.retrieve(&payload, Some(&mut sh), p, ctx)
                        }
                        None => h.retrieve(&payload, None, p, ctx),
                    };
                    r.map(|obj| (obj, v, pl.data.len())).map_err(Some)
                }
            };
            match result {
                Ok((obj, v, n)) => {
                    o.chosen = Some((v, n));
                    o.held = Held::Restored(obj, v, n, false);
                }
                Err(Some(e)) => o.held = Held::Failed(e),
                Err(None) => {}
            }
            if let Some((a, b, obj)) = lent
                && let Held::Restored(slot, ..) = &mut self.sessions[a].objects[b].held
            {
                *slot = obj;
            }
        }
        // Shared state comes first in `unread` (as in `order`), so a
        // dependent held back by it sees how it ended: carried with it if
        // it was carried, lost with it otherwise (as preflight says).
        for (si, oi, why) in unread {
            if let LuoError::SharedUnread {
                shared_session,
                shared_token,
                ..
            } = &why
            {
                let shared_carried =
                    self.find(shared_session, *shared_token)
                        .is_ok_and(|(a, b)| {
                            matches!(self.sessions[a].objects[b].held, Held::Carried(_))
                        });
                if !shared_carried {
                    if let Some(o) = self
                        .sessions
                        .get_mut(si)
                        .and_then(|s| s.objects.get_mut(oi))
                    {
                        o.held = Held::Failed(why);
                    }
                    continue;
                }
            }
            let Some(s) = self.sessions.get_mut(si) else {
                continue;
            };
            let drop = s.drop_unread;
            let session = s.name.clone();
            let Some(o) = s.objects.get_mut(oi) else {
                continue;
            };
            o.held = match core::mem::replace(&mut o.held, Held::Taken) {
                Held::Incoming(_) if !drop && o.bad_footprint => {
                    Held::Failed(LuoError::BadFootprint {
                        session,
                        token: o.token,
                        family: o.family.clone(),
                        why: "its footprint property is malformed",
                    })
                }
                Held::Incoming(payloads)
                    if !drop && (!o.footprint.is_empty() || o.fp_in.is_some()) =>
                {
                    let full = match o.fp_in {
                        None => Ok(core::mem::take(&mut o.footprint)),
                        Some((root, n)) => read_array(p, ctx, &root, n, &o.footprint),
                    };
                    let full = match full {
                        Ok(full) => full,
                        Err(why) => {
                            o.held = Held::Failed(LuoError::BadFootprint {
                                session,
                                token: o.token,
                                family: o.family.clone(),
                                why,
                            });
                            continue;
                        }
                    };
                    o.footprint = full;
                    match claim_all(ctx.claims, &o.footprint) {
                        Ok(()) => Held::Carried(payloads),
                        Err(error) => Held::Failed(LuoError::Footprint {
                            session,
                            token: o.token,
                            family: o.family.clone(),
                            error,
                        }),
                    }
                }
                _ => Held::Failed(why),
            };
        }
    }
}
