//! The `luo` node of the handoff blob (`kho-luo-v1`): sessions, objects and
//! their payloads, one version each.
//!
//! ```text
//! luo {
//!     compatible = "kho-luo-v1";
//!     session-N {                        // N = 0, 1, ... in order
//!         kho,name = "NAME";             // unique among sessions
//!         object-T {                     // T = the token in hex, unique in the session
//!             kho,token = [LE u64];
//!             kho,family = "FAMILY";
//!             payload-K {                // K = 0, 1, ...: best version first
//!                 kho,version = "FAMILY-vN";
//!                 kho,features = [LE u64 required, LE u64 optional];
//!                 kho,data = [bytes];
//!             };
//!         };
//!     };
//! };
//! ```

use super::{Held, InPayload, LuoError, Object, Session};
pub use crate::abi::luo::{LUO_VERSION, NODE};
use crate::fdt::{FdtWriter, Node, WriteError};
use crate::handoff::{Handoff, HandoffWriter};
use alloc::format;
use alloc::string::ToString;
use alloc::vec::Vec;
use zerocopy::byteorder::little_endian::U64;

/// Most sessions, objects per session and payloads per object a reader
/// takes.
const MAX: usize = 1024;

pub(super) fn write(w: &mut HandoffWriter<'_>, sessions: &[Session]) -> Result<(), LuoError> {
    let frozen = |o: &Object| matches!(&o.held, Held::Live(_, Some(_)));
    if !sessions.iter().all(|s| s.objects.iter().all(frozen)) {
        return Err(LuoError::State("an object is not frozen"));
    }
    w.subsystem(NODE, &[LUO_VERSION], None, |w| {
        for (i, s) in sessions.iter().enumerate() {
            w.begin_node(&format!("session-{i}"))?;
            w.property_string("kho,name", &s.name)?;
            for o in &s.objects {
                if let Held::Live(_, Some(prep)) = &o.held {
                    write_object(w, o, prep)?;
                }
            }
            w.end_node()?;
        }
        Ok(())
    })?;
    Ok(())
}

fn write_object(w: &mut FdtWriter<'_>, o: &Object, prep: &super::Frozen) -> Result<(), WriteError> {
    w.begin_node(&format!("object-{:x}", o.token))?;
    w.property_struct("kho,token", &U64::new(o.token))?;
    w.property_string("kho,family", &o.family)?;
    for (k, pl) in prep.payloads.iter().enumerate() {
        w.begin_node(&format!("payload-{k}"))?;
        w.property_string("kho,version", pl.version)?;
        w.property_struct(
            "kho,features",
            &[U64::new(pl.required), U64::new(pl.optional)],
        )?;
        w.property("kho,data", &pl.data)?;
        w.end_node()?;
    }
    w.end_node()
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
    if sub.pick(&[LUO_VERSION]).is_none() {
        return Err(LuoError::NoReadableVersion {
            family: NODE.to_string(),
            written: sub.compatible().map(|c| c.to_string()).collect(),
            reads: alloc::vec![LUO_VERSION.to_string()],
        });
    }
    let mut sessions: Vec<Session> = Vec::new();
    for sn in sub.node.children() {
        if sessions.len() >= MAX {
            return Err(LuoError::BadNode("too many sessions"));
        }
        let name = str_prop(&sn, "kho,name", "session kho,name")?;
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
            objects.push(Object {
                token,
                family: family.to_string(),
                held: Held::Incoming(payloads),
            });
        }
        sessions.push(Session {
            name: name.to_string(),
            objects,
        });
    }
    Ok(sessions)
}
