//! A handoff's `luo` node read but not restored (feature `arch`): what a
//! tool shows of a blob (every object, its origin, footprint and payloads
//! as written) without a platform, memory or handlers.

use super::{Held, LuoError, Origin, PayloadIn, Session, node};
use crate::handoff::Handoff;
use crate::ranges::Range;
use alloc::vec::Vec;

/// The objects of a handoff's `luo` node, as the blob has them. Nothing
/// is restored or claimed: reading it changes nothing, and a kernel reads
/// the same node through [`crate::Incoming`].
#[derive(Debug)]
pub struct NodeView {
    sessions: Vec<Session>,
}

/// One object of a [`NodeView`].
#[derive(Clone, Debug)]
pub struct ObjectView<'a> {
    /// Its session.
    pub session: &'a str,
    /// Its token in the session.
    pub token: u64,
    /// Its family.
    pub family: &'a str,
    /// The hop of the first handoff that held it, and how many kernels
    /// carried it since without reading it.
    pub origin: Origin,
    /// Its footprint's inline runs (empty with no footprint at all: it
    /// cannot be carried).
    pub footprint: &'a [Range],
    /// How many extents its preserved footprint array holds, if it has
    /// one (the array itself is in memory the tool does not read).
    pub footprint_array: Option<u64>,
    /// The shared object (session, token) it depends on, if any.
    pub needs: Option<(&'a str, u64)>,
    /// Its payloads, best first.
    pub payloads: Vec<PayloadIn<'a>>,
}

impl NodeView {
    /// Reads the `luo` node of `h` (none: no objects). A node the
    /// orchestrator refuses is the same error a next kernel reports (every
    /// object in it lost).
    pub fn read(h: &Handoff<'_>) -> Result<Self, LuoError> {
        Ok(Self {
            sessions: node::read(h)?,
        })
    }

    /// Every object, in blob order.
    pub fn objects(&self) -> impl Iterator<Item = ObjectView<'_>> + '_ {
        self.sessions.iter().flat_map(|s| {
            s.objects.iter().map(move |o| ObjectView {
                session: &s.name,
                token: o.token,
                family: &o.family,
                origin: o.origin,
                footprint: &o.footprint,
                footprint_array: o.fp_in.map(|(_, n)| n),
                needs: o.needs.as_ref().map(|(s, t)| (s.as_str(), *t)),
                payloads: match &o.held {
                    Held::Incoming(p) => p
                        .iter()
                        .map(|p| PayloadIn {
                            version: &p.version,
                            required: p.required,
                            optional: p.optional,
                            data: &p.data,
                        })
                        .collect(),
                    _ => Vec::new(),
                },
            })
        })
    }
}
