//! The `luo` node of the handoff blob (`kho-luo-v2`, and `kho-luo-v1`
//! still read): its writer and reader, side by side. The layout is
//! [`crate::abi::luo`]'s; docs/abi.md says what refuses a node.

use super::carry::footprint_of;
use super::{Held, InPayload, LuoError, Object, Origin, Session};
pub use crate::abi::luo::LUO_VERSION;
use crate::abi::luo::NODE;
use crate::abi::luo::{
    Extent, LUO_V1, MAX_FOOTPRINT_EXTENTS, Origin as OriginRec, SESSION_DROP_UNREAD,
};
use crate::fdt::{FdtWriter, Node, WriteError};
use crate::handoff::{Handoff, HandoffWriter};
use crate::ranges::Range;
use alloc::format;
use alloc::string::ToString;
use alloc::vec::Vec;
use zerocopy::byteorder::little_endian::U32;
use zerocopy::byteorder::little_endian::U64;

/// Most sessions, objects per session and payloads per object a reader
/// takes.
const MAX: usize = 1024;

pub(super) fn write(w: &mut HandoffWriter<'_>, sessions: &[Session]) -> Result<(), LuoError> {
    let frozen = |o: &Object| {
        matches!(
            &o.held,
            Held::Live(_, Some(_)) | Held::Carried(_) | Held::Pending(_)
        )
    };
    if !sessions.iter().all(|s| s.objects.iter().all(frozen)) {
        return Err(LuoError::State("an object is not frozen"));
    }
    let hop = w.hop();
    w.subsystem(NODE, &[LUO_VERSION], None, |w| {
        for (i, s) in sessions.iter().enumerate() {
            w.begin_node(&format!("session-{i}"))?;
            w.property_string("kho,name", &s.name)?;
            let flags = if s.drop_unread {
                SESSION_DROP_UNREAD
            } else {
                0
            };
            w.property_struct("kho,flags", &U32::new(flags))?;
            for o in &s.objects {
                write_object(w, o, hop)?;
            }
            w.end_node()?;
        }
        Ok(())
    })?;
    Ok(())
}

/// One payload's fields, whichever kind of object it comes from.
struct Out<'a> {
    version: &'a str,
    required: u64,
    optional: u64,
    data: &'a [u8],
}

fn write_object(w: &mut FdtWriter<'_>, o: &Object, hop: u32) -> Result<(), WriteError> {
    let (origin, payloads): (Origin, alloc::vec::Vec<Out<'_>>) = match &o.held {
        Held::Live(_, Some(prep)) => (
            Origin { hop, carried: 0 },
            prep.payloads
                .iter()
                .map(|p| Out {
                    version: p.version,
                    required: p.required,
                    optional: p.optional,
                    data: &p.data,
                })
                .collect(),
        ),
        Held::Carried(p) => (
            o.origin,
            p.iter()
                .map(|p| Out {
                    version: &p.version,
                    required: p.required,
                    optional: p.optional,
                    data: &p.data,
                })
                .collect(),
        ),
        _ => return Ok(()),
    };
    w.begin_node(&format!("object-{:x}", o.token))?;
    w.property_struct("kho,token", &U64::new(o.token))?;
    w.property_string("kho,family", &o.family)?;
    if let Some((session, token)) = &o.needs {
        w.property_string("kho,needs-session", session)?;
        w.property_struct("kho,needs-token", &U64::new(*token))?;
    }
    w.property_struct(
        "kho,origin",
        &OriginRec {
            hop: origin.hop.into(),
            carried: origin.carried.into(),
        },
    )?;
    if let Some(root) = o.fp_array.as_ref().map(|(_, r)| *r) {
        w.property_struct(
            "kho,footprint-array",
            &crate::abi::luo::FootprintArray {
                root,
                extents: (o.footprint.len() as u64).into(),
            },
        )?;
    }
    if let Some(footprint) = footprint_of(o) {
        let recs: alloc::vec::Vec<Extent> = footprint
            .iter()
            .map(|r| Extent {
                start: r.start.into(),
                pages: (r.len() / crate::PAGE_SIZE).into(),
            })
            .collect();
        w.property_struct("kho,footprint", recs.as_slice())?;
    }
    for (k, pl) in payloads.iter().enumerate() {
        w.begin_node(&format!("payload-{k}"))?;
        w.property_string("kho,version", pl.version)?;
        w.property_struct(
            "kho,features",
            &[U64::new(pl.required), U64::new(pl.optional)],
        )?;
        w.property("kho,data", pl.data)?;
        w.end_node()?;
    }
    w.end_node()
}

/// An object's footprint as the blob gives it: sorted, disjoint, page
/// aligned, no empty extent, no overflow; at most
/// [`MAX_FOOTPRINT_EXTENTS`]. Absent: empty (not carriable).
fn footprint(on: &Node<'_>) -> Result<alloc::vec::Vec<Range>, LuoError> {
    let bad = LuoError::BadNode("object kho,footprint");
    let Some(p) = on.property("kho,footprint") else {
        return Ok(alloc::vec::Vec::new());
    };
    let recs: &[Extent] = p.as_slice_of().map_err(|_| bad.clone())?;
    if recs.is_empty() || recs.len() > MAX_FOOTPRINT_EXTENTS {
        return Err(bad);
    }
    extents(recs)
}

/// Checked extents: sorted, disjoint and not touching, page aligned, no
/// empty one, no overflow.
pub(super) fn extents(recs: &[Extent]) -> Result<alloc::vec::Vec<Range>, LuoError> {
    let bad = LuoError::BadNode("object kho,footprint");
    let mut out = alloc::vec::Vec::new();
    out.try_reserve_exact(recs.len())
        .map_err(|_| LuoError::OutOfMemory)?;
    let mut end = 0u64;
    for r in recs {
        let (start, pages) = (r.start.get(), r.pages.get());
        let stop = pages
            .checked_mul(crate::PAGE_SIZE)
            .and_then(|len| start.checked_add(len))
            .filter(|_| pages > 0 && start % crate::PAGE_SIZE == 0)
            .ok_or(bad.clone())?;
        // Sorted and disjoint; touching runs would have been one.
        if !out.is_empty() && start <= end {
            return Err(bad);
        }
        end = stop;
        out.push(Range::new(start, stop));
    }
    Ok(out)
}

fn str_prop<'a>(n: &Node<'a>, name: &str, what: &'static str) -> Result<&'a str, LuoError> {
    n.property(name)
        .and_then(|p| p.as_str().ok())
        .filter(|s| !s.is_empty())
        .ok_or(LuoError::BadNode(what))
}

pub(super) fn read(h: &Handoff<'_>) -> Result<Vec<Session>, LuoError> {
    let Some(sub) = h.subsystem(NODE) else {
        return Ok(Vec::new());
    };
    let Some(version) = sub.pick(&[LUO_VERSION, LUO_V1]) else {
        return Err(LuoError::NoReadableVersion {
            family: NODE.to_string(),
            written: sub.compatible().map(|c| c.to_string()).collect(),
            reads: alloc::vec![LUO_VERSION.to_string(), LUO_V1.to_string()],
        });
    };
    let v2 = version == LUO_VERSION;
    let mut sessions: Vec<Session> = Vec::new();
    for sn in sub.node.children() {
        if sessions.len() >= MAX {
            return Err(LuoError::BadNode("too many sessions"));
        }
        let name = str_prop(&sn, "kho,name", "session kho,name")?;
        let flags = if v2 {
            sn.property("kho,flags")
                .and_then(|p| p.as_struct::<U32>().ok())
                .ok_or(LuoError::BadNode("session kho,flags"))?
                .get()
        } else {
            0
        };
        if flags & !SESSION_DROP_UNREAD != 0 {
            return Err(LuoError::BadNode("session kho,flags"));
        }
        if sessions.iter().any(|s| s.name == name) {
            return Err(LuoError::DuplicateSession(name.to_string()));
        }
        let mut objects: Vec<Object> = Vec::new();
        for on in sn.children() {
            if objects.len() >= MAX {
                return Err(LuoError::BadNode("too many objects"));
            }
            let token = on
                .property("kho,token")
                .and_then(|p| p.as_struct::<U64>().ok())
                .ok_or(LuoError::BadNode("object kho,token"))?
                .get();
            if on.name() != format!("object-{token:x}") {
                return Err(LuoError::BadNode("object name and token differ"));
            }
            if objects.iter().any(|o| o.token == token) {
                return Err(LuoError::DuplicateToken {
                    session: name.to_string(),
                    token,
                });
            }
            let family = str_prop(&on, "kho,family", "object kho,family")?;
            let (origin, footprint) = if v2 {
                let o = on
                    .property("kho,origin")
                    .and_then(|p| p.as_struct::<OriginRec>().ok())
                    .ok_or(LuoError::BadNode("object kho,origin"))?;
                let origin = Origin {
                    hop: o.hop.get(),
                    carried: o.carried.get(),
                };
                (origin, footprint(&on))
            } else {
                (Origin::default(), Ok(alloc::vec::Vec::new()))
            };
            // v1 has no footprint array: one there is not read (nothing
            // in a v1 node can be carried).
            let fp_in = match on.property("kho,footprint-array").filter(|_| v2) {
                None => Ok(None),
                Some(p) => p
                    .as_struct::<crate::abi::luo::FootprintArray>()
                    .ok()
                    .filter(|a| {
                        (1..=crate::abi::luo::MAX_FOOTPRINT_ARRAY).contains(&a.extents.get())
                    })
                    .map(|a| Some((a.root, a.extents.get())))
                    .ok_or(()),
            };
            // A malformed footprint drops this object's carrying, not the
            // node (the object may still be read).
            let bad_footprint = matches!(footprint, Err(LuoError::BadNode(_))) || fp_in.is_err();
            let fp_in = fp_in.unwrap_or(None);
            let footprint = match footprint {
                Ok(f) => f,
                Err(LuoError::BadNode(_)) => alloc::vec::Vec::new(),
                Err(e) => return Err(e),
            };
            let mut payloads = Vec::new();
            for pn in on.children() {
                if payloads.len() >= MAX {
                    return Err(LuoError::BadNode("too many payloads"));
                }
                let version = str_prop(&pn, "kho,version", "payload kho,version")?;
                let feat: &[U64] = pn
                    .property("kho,features")
                    .and_then(|p| p.as_slice_of().ok())
                    .filter(|f: &&[U64]| f.len() == 2)
                    .ok_or(LuoError::BadNode("payload kho,features"))?;
                let data = pn
                    .property("kho,data")
                    .ok_or(LuoError::BadNode("payload kho,data"))?
                    .value;
                if payloads.iter().any(|p: &InPayload| p.version == version) {
                    return Err(LuoError::DuplicateVersion {
                        family: family.to_string(),
                        version: version.to_string(),
                    });
                }
                payloads.push(InPayload {
                    version: version.to_string(),
                    required: feat.first().map_or(0, |f| f.get()),
                    optional: feat.get(1).map_or(0, |f| f.get()),
                    data: data.to_vec(),
                });
            }
            if payloads.is_empty() {
                return Err(LuoError::BadNode("an object has no payload"));
            }
            let needs = match (
                on.property("kho,needs-session"),
                on.property("kho,needs-token"),
            ) {
                (None, None) => None,
                (Some(s), Some(t)) => {
                    let s = s
                        .as_str()
                        .ok()
                        .filter(|s| !s.is_empty())
                        .ok_or(LuoError::BadNode("object kho,needs-session"))?;
                    let t = t
                        .as_struct::<U64>()
                        .map_err(|_| LuoError::BadNode("object kho,needs-token"))?
                        .get();
                    Some((s.to_string(), t))
                }
                _ => return Err(LuoError::BadNode("object kho,needs")),
            };
            let mut o = Object::new(token, family.to_string(), Held::Incoming(payloads));
            o.footprint = footprint;
            o.origin = origin;
            o.bad_footprint = bad_footprint;
            o.needs = needs;
            o.fp_in = fp_in;
            objects.push(o);
        }
        sessions.push(Session {
            name: name.to_string(),
            objects,
            drop_unread: flags & SESSION_DROP_UNREAD != 0,
            explicit: true,
        });
    }
    // What an object needs exists, is another object, and needs nothing
    // itself (shared state is one level deep).
    // Every object as (session, token, needs something), sorted once: a
    // lookup per need, not a scan of the node.
    let mut all: Vec<(&str, u64, bool)> = Vec::new();
    all.try_reserve(sessions.iter().map(|s| s.objects.len()).sum())
        .map_err(|_| LuoError::OutOfMemory)?;
    for s in &sessions {
        all.extend(
            s.objects
                .iter()
                .map(|o| (s.name.as_str(), o.token, o.needs.is_some())),
        );
    }
    all.sort_unstable();
    for o in sessions.iter().flat_map(|s| &s.objects) {
        if let Some((ns, nt)) = &o.needs {
            // Sessions and tokens are unique: at most one match, and one
            // that needs nothing is never the object itself.
            let i = all.partition_point(|&(a, b, _)| (a, b) < (ns.as_str(), *nt));
            let ok = all
                .get(i)
                .is_some_and(|&(a, b, needs)| a == ns && b == *nt && !needs);
            if !ok {
                return Err(LuoError::BadNode("object kho,needs"));
            }
        }
    }
    Ok(sessions)
}
