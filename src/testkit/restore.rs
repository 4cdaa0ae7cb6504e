//! The next kernel's side of the test kit: a whole restore in a drawn
//! order, checked against the ownership rule.

use super::*;

/// What one restore gave: equal between two runs that read the same input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The refusal that made the whole handoff a cold boot, if any.
    pub refused: Option<String>,
    /// Why the orchestrator's node could not be read, if it could not.
    pub unread: Option<String>,
    /// The subsystem data's checksum, or why it was refused.
    pub data: Option<Result<u64, String>>,
    /// Every object, in blob order: its digest, or its error.
    pub objects: Vec<(String, u64, Result<Digest, String>)>,
    /// What finish gave back to the allocator.
    pub freed: Vec<Range>,
}

/// A restored object, as far as anyone could tell it apart from another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Digest {
    /// A memfd: size, position, seals, extents (index, phys, order, count)
    /// and the checksum of its contents.
    File(u64, u64, u32, Vec<(u64, u64, u32, u32)>, u64),
    /// A vmalloc buffer: blocks, order, checksum of its contents.
    Buf(Vec<u64>, u32, u64),
}

impl Outcome {
    /// Whether the restore succeeded and restored every object.
    pub fn complete(&self) -> bool {
        self.refused.is_none()
            && self.unread.is_none()
            && !matches!(self.data, Some(Err(_)))
            && self.objects.iter().all(|(_, _, r)| r.is_ok())
    }
}

/// Plays the next kernel on `mem` with the blob `blob` (at [`BLOB_AT`]):
/// retrieves the objects in the order `order` gives (indexes into the
/// blob-order list, taken modulo its length; the rest follow in blob
/// order), checks the ownership rule, finishes.
pub fn restore(mem: &mut HostMem, blob: &[u8], order: &[u8]) -> Outcome {
    let mut out = Outcome {
        refused: None,
        unread: None,
        data: None,
        objects: Vec::new(),
        freed: Vec::new(),
    };
    let ram = [RAM];
    let place = Range::new(BLOB_AT, BLOB_AT + blob.len() as u64);
    let mut log = ReserveLog::new();
    let mut inc = match Incoming::<HostMem>::new(&*mem, blob, place, &ram, &mut log) {
        Ok(inc) => inc,
        Err(e) => {
            assert!(log.ranges.is_empty(), "a failed restore left reservations");
            out.refused = Some(e.to_string());
            return out;
        }
    };
    // The blob is sound (the door parsed it): the subsystem's range.
    let data = Handoff::parse(blob, &ram)
        .ok()
        .and_then(|h| h.subsystem("data").and_then(|s| s.data));
    let preserved: Vec<Range> = log.of(Kept::Preserved).collect();
    let kept_meta: Vec<Range> = log.of(Kept::Metadata).collect();
    // Owners of data: (range, who).
    let mut owned: Vec<(Range, String)> = Vec::new();
    if let Some(d) = data {
        let pages = d.pages_around();
        out.data = Some(match inc.claim(pages.start, pages.len() / 4096) {
            Ok(()) => {
                let mut s = crate::csum::Sum64::new();
                let mut a = d.start;
                while a < d.end {
                    let n = (4096 - (a & 0xfff)).min(d.end - a);
                    match mem.frame(a & !0xfff) {
                        Some(f) => s.bytes(&f[(a & 0xfff) as usize..][..n as usize]),
                        None => s.zeros(n as usize),
                    }
                    a += n;
                }
                owned.push((pages, "subsystem data".into()));
                Ok(s.finish())
            }
            Err(e) => Err(e.to_string()),
        });
    }
    let files = inc.register(MemfdHandler::default()).unwrap();
    let bufs = inc.register(VBufHandler).unwrap();
    if let Some(e) = inc.unread() {
        out.unread = Some(e.to_string());
    }
    let joined: Vec<Range> = inc.preserved().collect();
    let objs: Vec<(String, u64, bool)> = inc
        .objects()
        .map(|(s, t, f)| (s.into(), t, f == "vbuf"))
        .collect();
    let mut inc = inc.restore(mem);
    let mut seq: Vec<usize> = Vec::new();
    for &i in order {
        if !objs.is_empty() {
            let i = usize::from(i) % objs.len();
            if !seq.contains(&i) {
                seq.push(i);
            }
        }
    }
    for i in 0..objs.len() {
        if !seq.contains(&i) {
            seq.push(i);
        }
    }
    let mut results: Vec<Option<Result<Digest, String>>> = vec![None; objs.len()];
    let mut taken: Vec<Result<Memfd, VBuf>> = Vec::new();
    {
        for i in seq {
            let (s, t, buf) = &objs[i];
            let got = if *buf {
                inc.take(&bufs.key(s, *t), mem).map(|(b, _)| Err(b))
            } else {
                inc.take(&files.key(s, *t), mem).map(|(f, _)| Ok(f))
            };
            let r = match got {
                Ok(obj) => {
                    let who = alloc::format!("{s}/{t}");
                    let d = match &obj {
                        Ok(f) => {
                            // Its contents; a huge sparse file (a resealed
                            // descriptor can say so) by its folios' frames.
                            let sum = if f.size() <= 1 << 26 {
                                let mut bytes = vec![0u8; f.size() as usize];
                                f.read(&*mem, 0, &mut bytes);
                                crate::csum::sum64(&bytes)
                            } else {
                                let mut s = crate::csum::Sum64::new();
                                for e in f.extents() {
                                    for i in 0..e.pages() {
                                        match mem.frame(e.phys + i * 4096) {
                                            Some(fr) => s.bytes(fr),
                                            None => s.zeros(4096),
                                        }
                                    }
                                }
                                s.finish()
                            };
                            for e in f.extents() {
                                owned.push((
                                    Range::new(e.phys, e.phys + e.pages() * 4096),
                                    who.clone(),
                                ));
                            }
                            Digest::File(
                                f.size(),
                                f.pos(),
                                f.seals().bits(),
                                f.extents()
                                    .iter()
                                    .map(|e| (e.index, e.phys, e.order, e.count))
                                    .collect(),
                                sum,
                            )
                        }
                        Err(b) => {
                            let size = 4096u64 << b.v.order();
                            for &x in b.v.blocks() {
                                owned.push((Range::new(x, x + size), who.clone()));
                            }
                            Digest::Buf(
                                b.v.blocks().to_vec(),
                                b.v.order(),
                                crate::csum::sum64(b.v.bytes(&*mem)),
                            )
                        }
                    };
                    taken.push(obj);
                    Ok(d)
                }
                Err(e) => Err(e.to_string()),
            };
            results[i] = Some(r);
        }
    }
    // The rule: data owners, the handoff's own metadata and (after
    // finish, below) what is carried pairwise disjoint; data inside
    // preserved memory. The metadata the readers claimed is what finish
    // frees besides the pages nobody adopted, so the check of what finish
    // gave back (below) holds it apart from every owner's data too.
    let mut roles: Vec<(Range, String)> = owned.clone();
    roles.extend(
        kept_meta
            .iter()
            .map(|r| (*r, "blob or tracker chain".to_string())),
    );
    for (r, who) in &owned {
        assert!(
            preserved.iter().any(|p| p.covers(*r)) || joined.iter().any(|p| p.covers(*r)),
            "{who} owns {r}, which is not preserved"
        );
    }
    for m in &kept_meta {
        assert!(
            !preserved.iter().any(|p| p.overlaps(m)),
            "metadata {m} inside preserved memory"
        );
    }
    let done = inc.finish(mem).unwrap();
    // What finish kept for a later kernel (objects this one could not
    // read): inside preserved memory, and no page of it also someone's
    // data, metadata or the handoff's own.
    let mut kept: Vec<(Range, String)> = Vec::new();
    for c in &done.carried {
        for r in c.footprint() {
            assert!(
                joined.iter().any(|p| p.covers(*r)),
                "carried {}/{} keeps {r}, which is not preserved",
                c.session,
                c.token
            );
            kept.push((*r, alloc::format!("carried {}/{}", c.session, c.token)));
        }
    }
    roles.extend(kept.iter().cloned());
    roles.sort_by_key(|(r, _)| r.start);
    for w in roles.windows(2) {
        assert!(
            !w[0].0.overlaps(&w[1].0),
            "one page, two roles: {} {} and {} {}",
            w[0].1,
            w[0].0,
            w[1].1,
            w[1].0
        );
    }
    // Finish gave back exactly the preserved pages nobody owns as data
    // and nothing carried keeps.
    let mut expect: Vec<Range> = Vec::new();
    for p in &joined {
        let mut at = p.start;
        let mut cuts: Vec<Range> = owned
            .iter()
            .chain(&kept)
            .map(|(r, _)| *r)
            .filter(|r| r.overlaps(p))
            .collect();
        cuts.sort_by_key(|r| r.start);
        for c in cuts {
            if c.start > at {
                expect.push(Range::new(at, c.start));
            }
            at = at.max(c.end);
        }
        if at < p.end {
            expect.push(Range::new(at, p.end));
        }
    }
    let freed = merge(done.ranges.clone());
    assert_eq!(
        freed.iter().map(|r| r.len()).sum::<u64>(),
        done.freed,
        "finish's count and ranges differ"
    );
    assert_eq!(
        merge(expect),
        freed,
        "finish freed other pages than nobody's"
    );
    out.freed = freed;
    out.objects = objs
        .into_iter()
        .zip(results)
        .map(|((s, t, _), r)| (s, t, r.unwrap_or_else(|| Err("not retrieved".into()))))
        .collect();
    drop(taken);
    out
}

fn merge(mut v: Vec<Range>) -> Vec<Range> {
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range> = Vec::new();
    for r in v {
        match out.last_mut() {
            Some(l) if l.end >= r.start => l.end = l.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// What a kexec does to the preserved set, on the host
/// ([`HandOver::hand_over`]). Here, not in [`HostMem`], so that the
/// platform never depends on the tracker it serves.
pub trait HandOver {
    /// Writes the tracker's handover into this memory as the first kernel
    /// would, reads it back as the next kernel does (then frees its chain
    /// pages, as the next kernel may), and returns the next kernel's claims
    /// over the preserved ranges it reported.
    fn hand_over(
        &mut self,
        tracker: &crate::tracker::Tracker,
    ) -> Result<crate::claims::Claims, crate::tracker::TrackerChainError>;
}

impl HandOver for HostMem {
    fn hand_over(
        &mut self,
        tracker: &crate::tracker::Tracker,
    ) -> Result<crate::claims::Claims, crate::tracker::TrackerChainError> {
        use crate::platform::FrameAlloc;
        use crate::tracker::chain::{self as tracker_chain, Reader};
        let root = tracker_chain::write(tracker, self)?;
        let mut log = crate::reserve::ReserveLog::new();
        let ram: Vec<Range> = self.ram().to_vec();
        Reader::new(self, root, &ram, tracker.scratch()).restore(&mut log)?;
        let meta: Vec<Range> = log.of(crate::reserve::Kept::Metadata).collect();
        for r in meta {
            self.free_frames(r.start, 0);
        }
        crate::claims::Claims::new(log.of(crate::reserve::Kept::Preserved), tracker.scratch())
            .map_err(|_| crate::chain::ChainError::OutOfMemory.into())
    }
}
