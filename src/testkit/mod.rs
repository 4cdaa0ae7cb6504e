//! A whole handoff on the host fake, end to end, with the ownership rule as
//! an oracle: what the flip-every-byte test, the whole-restore property
//! test and the `whole_restore` fuzz target share (feature `host`).
//!
//! [`build`] plays the first kernel: memfds (in both formats, some with
//! record arrays), a preserved vmalloc buffer as an orchestrator object,
//! and a subsystem's `kho,data`, all in one sealed blob. [`restore`] plays
//! the next kernel: parse, restore, claims, the subsystem's data, every
//! object retrieved in a given order, finish; and it checks the rule of
//! `docs/abi.md` after the retrieves and at finish, panicking on any
//! breach (a test failure or a fuzz finding, never an input error):
//! - no page has two roles: the data of each object and of the subsystem,
//!   metadata read by the readers, the blob and the tracker chain are
//!   pairwise disjoint, and all data lies in preserved memory;
//! - finish gives back exactly the preserved pages nobody adopted as data.
//!
//! The [`Outcome`] compares equal between two retrieval orders (the rule
//! also says the result does not depend on it).
#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod chain;
mod restore;
pub use restore::{Digest, HandOver, Outcome, restore};

use crate::abi::handoff::Stamps;
use crate::claims::Claims;
use crate::handoff::{self, Handoff};
use crate::luo::{Handler, LuoError, Payload, Prepared, RestoreCtx, Version};
use crate::memfd::Memfd;
use crate::memfd::MemfdHandler;
use crate::platform::host::HostMem;
use crate::platform::{FrameAlloc, PhysMem};
use crate::ranges::Range;
use crate::reserve::{Kept, ReserveLog};
use crate::scratch::{Scratch, ScratchRecord};
use crate::tracker::Tracker;
use crate::update::{Freeze, Incoming, Outgoing};
use crate::vmalloc::{Vmalloc, VmallocRoot};
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use zerocopy::{FromBytes, IntoBytes};

/// The fake machine's RAM.
pub const RAM: Range = Range::new(0x10_0000, 0x4000_0000);
/// Its scratch area.
pub const SCRATCH: Range = Range::new(0x20_0000, 0x420_0000);
/// Where the first kernel allocates.
pub const POOL: Range = Range::new(0x1000_0000, 0x2000_0000);
/// Where the blob lies.
pub const BLOB_AT: u64 = 0x3000_0000;
/// Where the subsystem's data lies.
pub const DATA_AT: u64 = 0x3800_0000;

/// One file of a [`Shape`].
#[derive(Clone, Copy, Debug)]
pub struct FileShape {
    /// Its session (0 or 1).
    pub session: u8,
    /// Its size in 4 KiB pages (1 to 64).
    pub pages: u8,
    /// The fill byte.
    pub seed: u8,
    /// Seals (a sealed file has no `memfd-v1` payload).
    pub seals: crate::memfd::Seals,
    /// Folios none adjacent (so `memfd-v2` needs an array).
    pub scatter: bool,
}

/// What the first kernel hands over.
#[derive(Clone, Debug)]
pub struct Shape {
    /// The files.
    pub files: Vec<FileShape>,
    /// Pages of a preserved vmalloc buffer (0: none).
    pub vmalloc_pages: u8,
    /// Pages of the subsystem `data`'s `kho,data` (0: no subsystem).
    pub data_pages: u8,
}

impl Shape {
    /// A shape of everything: a plain, a scattered and a sealed file in two
    /// sessions, a vmalloc buffer, subsystem data.
    pub fn all() -> Self {
        Self {
            files: vec![
                FileShape {
                    session: 0,
                    pages: 3,
                    seed: 1,
                    seals: crate::memfd::Seals::empty(),
                    scatter: false,
                },
                FileShape {
                    session: 0,
                    pages: 6,
                    seed: 2,
                    seals: crate::memfd::Seals::empty(),
                    scatter: true,
                },
                FileShape {
                    session: 1,
                    pages: 2,
                    seed: 3,
                    seals: crate::memfd::seal::WRITE,
                    scatter: false,
                },
            ],
            vmalloc_pages: 2,
            data_pages: 2,
        }
    }

    /// A shape drawn from bytes (for fuzzing and property tests).
    pub fn from_bytes(b: &[u8]) -> Self {
        let at = |i: usize| b.get(i).copied().unwrap_or(0);
        let n = usize::from(at(0) % 5);
        let files = (0..n)
            .map(|i| {
                let x = at(1 + i);
                FileShape {
                    session: x & 1,
                    pages: 1 + (x >> 1) % 8,
                    seed: x,
                    seals: if x & 0x40 != 0 {
                        crate::memfd::seal::GROW
                    } else {
                        crate::memfd::Seals::empty()
                    },
                    scatter: x & 0x80 != 0,
                }
            })
            .collect();
        Self {
            files,
            vmalloc_pages: at(6) % 4,
            data_pages: at(7) % 3,
        }
    }
}

/// A first kernel's handoff, ready for the next kernel to read.
#[derive(Clone)]
pub struct Built {
    /// Memory as the next kernel finds it.
    pub mem: HostMem,
    /// The blob (also at [`BLOB_AT`] in `mem`).
    pub blob: Vec<u8>,
    /// Every page that holds handed-over metadata besides the blob: tracker
    /// chain pages, vmalloc chain pages, record-array blocks.
    pub metadata_pages: Vec<u64>,
    /// What the first kernel wrote: each object's session, token and the
    /// checksum of its contents.
    pub written: Vec<(String, u64, u64)>,
}

/// A vmalloc buffer as an orchestrator object.
#[derive(Debug)]
struct VBuf {
    v: Vmalloc,
    root: Option<VmallocRoot>,
}

/// The handler of [`VBuf`]s: family `vbuf`, one version holding the root.
struct VBufHandler;

const VBUF_V1: Version = Version::new("vbuf-v1");

impl Handler<HostMem> for VBufHandler {
    type Object = VBuf;
    type Undo = ();
    fn family(&self) -> &'static str {
        "vbuf"
    }
    fn writes(&self) -> &[Version] {
        &[VBUF_V1]
    }
    fn reads(&self) -> &[Version] {
        &[VBUF_V1]
    }
    fn preserve(&mut self, b: &mut VBuf, p: &mut HostMem, t: &mut Tracker) -> Result<(), LuoError> {
        b.root = Some(b.v.preserve(p, t)?);
        Ok(())
    }
    fn unpreserve(
        &mut self,
        b: &mut VBuf,
        p: &mut HostMem,
        t: &mut Tracker,
    ) -> Result<(), LuoError> {
        Ok(b.v.unpreserve(p, t)?)
    }
    fn prepare(
        &mut self,
        b: &mut VBuf,
        _: &mut HostMem,
        _: &mut Tracker,
        out: &mut Prepared<()>,
    ) -> Result<(), LuoError> {
        let root = b.root.ok_or(LuoError::State("not preserved"))?;
        out.payloads.push(Payload {
            version: VBUF_V1.name,
            required: 0,
            optional: 0,
            data: root.as_bytes().to_vec(),
        });
        Ok(())
    }
    fn retrieve(
        &mut self,
        payload: &crate::luo::PayloadIn<'_>,
        p: &mut HostMem,
        ctx: &mut RestoreCtx<'_>,
    ) -> Result<VBuf, LuoError> {
        let root = VmallocRoot::read_from_bytes(payload.data)
            .map_err(|_| LuoError::BadNode("vbuf root"))?;
        let v = Vmalloc::restore(p, &root, ctx.ram, ctx.scratch, ctx.claims)?;
        Ok(VBuf { v, root: None })
    }
    fn discard(&mut self, b: VBuf, p: &mut HostMem, claims: &mut Claims) {
        b.v.release(p, claims);
    }
}

fn scratch() -> Scratch {
    let rec = ScratchRecord {
        start: SCRATCH.start.into(),
        size: SCRATCH.len().into(),
    };
    Scratch::from_records(rec.as_bytes(), &[RAM]).unwrap()
}

const SESSIONS: [&str; 2] = ["vm-a", "vm-b"];

/// Plays the first kernel: preserves `shape`, freezes, writes and seals
/// the blob. Deterministic: the same shape gives the same bytes.
pub fn build(shape: &Shape) -> Built {
    let mut mem = HostMem::new(&[RAM], POOL);
    let sc = scratch();
    let mut out = Outgoing::<HostMem>::new(sc).unwrap();
    let files = out.register(MemfdHandler::default()).unwrap();
    let bufs = out.register(VBufHandler).unwrap();
    for s in SESSIONS {
        out.create_session(s).unwrap();
    }
    let mut spacers = Vec::new();
    let mut written = Vec::new();
    for (i, fs) in shape.files.iter().enumerate() {
        let mut f = Memfd::new(true);
        let mut sum = crate::csum::Sum64::new();
        for pg in 0..u64::from(fs.pages) {
            let bytes: Vec<u8> = (0..4096u32)
                .map(|j| fs.seed ^ (j as u8) ^ (pg as u8))
                .collect();
            sum.bytes(&bytes);
            f.write(&mut mem, pg * 4096, &bytes).unwrap();
            if fs.scatter {
                spacers.push(mem.alloc_frames(0).unwrap());
            }
        }
        f.add_seals(fs.seals).unwrap();
        let s = SESSIONS[usize::from(fs.session & 1)];
        written.push((s.to_string(), i as u64 + 1, sum.finish()));
        out.preserve(files, s, i as u64 + 1, f, &mut mem).unwrap();
    }
    if shape.vmalloc_pages > 0 {
        let v = Vmalloc::new(&mut mem, usize::from(shape.vmalloc_pages) * 4096, 0).unwrap();
        for (i, b) in v.bytes_mut(&mut mem).iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        written.push(("vm-b".to_string(), 100, crate::csum::sum64(v.bytes(&mem))));
        out.preserve(bufs, "vm-b", 100, VBuf { v, root: None }, &mut mem)
            .unwrap();
    }
    let data = Range::new(DATA_AT, DATA_AT + u64::from(shape.data_pages) * 4096);
    if !data.is_empty() {
        let bytes: Vec<u8> = (0..data.len()).map(|i| (i * 13 + 5) as u8).collect();
        assert!(mem.write_bytes(data.start, &bytes));
        out.preserve_range(data).unwrap();
    }
    let mut frozen = out.freeze(&mut mem, Freeze::AllowLoss).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let n = frozen
        .write_with(&mut mem, &mut buf, 0, Stamps::default(), |w| {
            if data.is_empty() {
                return Ok(());
            }
            w.subsystem("data", &["data-v1"], Some(data), |_| Ok(()))
        })
        .unwrap()
        .len;
    buf.truncate(n);
    assert!(mem.write_bytes(BLOB_AT, &buf));
    // Every metadata page: what the next kernel reads as such, found by
    // a next kernel on a copy of this memory that takes every object:
    // the tracker chain it reserves as metadata, and what its finish
    // gives back (the readers' metadata, and the arrays of payloads not
    // chosen: nothing else is preserved and left unadopted).
    let mut probe = mem.clone();
    let mut log = ReserveLog::new();
    let place = Range::new(BLOB_AT, BLOB_AT + buf.len() as u64);
    let mut inc = Incoming::new(&probe, &buf, place, &[RAM], &mut log).unwrap();
    let mut metadata_pages: Vec<u64> = log
        .of(Kept::Metadata)
        .filter(|r| !r.overlaps(&place))
        .flat_map(|r| (r.start..r.end).step_by(4096))
        .collect();
    if !data.is_empty() {
        inc.claim(data.start, data.len() / 4096).unwrap();
    }
    let files = inc.register(MemfdHandler::default()).unwrap();
    let bufs = inc.register(VBufHandler).unwrap();
    let objs: Vec<(String, u64, bool)> = inc
        .objects()
        .map(|(s, t, f)| (s.into(), t, f == "vbuf"))
        .collect();
    let mut inc = inc.restore(&mut probe);
    for (s, t, buf) in &objs {
        if *buf {
            inc.take(&bufs.key(s, *t), &mut probe).unwrap();
        } else {
            inc.take(&files.key(s, *t), &mut probe).unwrap();
        }
    }
    let done = inc.finish(&mut probe).unwrap();
    metadata_pages.extend(
        done.ranges
            .iter()
            .flat_map(|r| (r.start..r.end).step_by(4096)),
    );
    metadata_pages.sort_unstable();
    metadata_pages.dedup();
    let _ = spacers;
    Built {
        mem,
        blob: buf,
        metadata_pages,
        written,
    }
}

/// Every memfd payload in the blob's `luo` node whose descriptor names a
/// record array: the offset in the blob of its root's `sum`, and the root.
fn memfd_array_roots(fdt: &crate::fdt::Fdt<'_>) -> Vec<(usize, VmallocRoot)> {
    let base = fdt.as_bytes().as_ptr() as usize;
    let mut out = Vec::new();
    let sessions = fdt
        .root()
        .child("luo")
        .into_iter()
        .flat_map(|n| n.children());
    for o in sessions.flat_map(|s| s.children()) {
        for p in o.children() {
            let (Some(v), Some(d)) = (p.property("kho,version"), p.property("kho,data")) else {
                continue;
            };
            let found = match v.as_str() {
                Ok("memfd-v1") => {
                    crate::memfd::v1::Header::read_from_bytes(d.value)
                        .ok()
                        .map(|h| {
                            (
                                core::mem::offset_of!(crate::memfd::v1::Header, array),
                                h.array,
                            )
                        })
                }
                Ok("memfd-v2") => crate::memfd::v2::Header::read_from_prefix(d.value)
                    .ok()
                    .map(|(h, _)| {
                        (
                            core::mem::offset_of!(crate::memfd::v2::Header, array),
                            h.array,
                        )
                    }),
                _ => None,
            };
            if let Some((root_at, root)) = found.filter(|(_, r)| r.first.get() != 0) {
                let sum_at = d.value.as_ptr() as usize - base
                    + root_at
                    + core::mem::offset_of!(VmallocRoot, sum);
                out.push((sum_at, root));
            }
        }
    }
    out
}

/// The pages of a vmalloc chain from `first` and the blocks each lists,
/// as written (no checks: for building and resealing test inputs); stops
/// at an unreadable page or after 64 pages.
fn vmalloc_chain(mem: &HostMem, first: u64) -> Vec<(u64, Vec<u64>)> {
    let mut out = Vec::new();
    let mut at = first;
    while at != 0 && out.len() < 64 {
        let Some(pg) = mem.frame(at) else { break };
        let n = (u32::from_le_bytes(pg[20..24].try_into().unwrap()) as usize)
            .min(crate::chain::PAYLOAD_WORDS);
        let blocks = (0..n)
            .map(|w| u64::from_le_bytes(pg[32 + 8 * w..40 + 8 * w].try_into().unwrap()))
            .collect();
        out.push((at, blocks));
        at = u64::from_le_bytes(pg[8..16].try_into().unwrap());
    }
    out
}

/// Recomputes every checksum the blob's readers check, after a deliberate
/// change: each memfd record array's sum in its descriptor, each chain
/// page named by `pages`, then the blob's own. For fuzzing past the
/// checksums into the checks behind them.
pub fn reseal(mem: &mut HostMem, blob: &mut [u8], pages: &[u64]) {
    for &pg in pages {
        if let Some(f) = mem.frame_mut(pg)
            && f[..4] != [0; 4]
            && (f[..4] == *b"KHOT" || f[..4] == *b"KHOV")
        {
            crate::chain::reseal(f);
        }
    }
    let Ok(fdt) = crate::fdt::Fdt::new(blob) else {
        return;
    };
    // Each summed record array's sum, recomputed from its blocks.
    let mut patches: Vec<(usize, u64)> = Vec::new();
    for (sum_at, root) in memfd_array_roots(&fdt) {
        if root.flags.get() != crate::vmalloc::SUMMED {
            continue;
        }
        let mut s = crate::csum::Sum64::new();
        for (_, blocks) in vmalloc_chain(mem, root.first.get()) {
            for b in blocks {
                match mem.frame(b) {
                    Some(f) => s.bytes(f),
                    None => s.zeros(4096),
                }
            }
        }
        patches.push((sum_at, s.finish()));
    }
    for (off, sum) in patches {
        if let Some(d) = blob.get_mut(off..off + 8) {
            d.copy_from_slice(&sum.to_le_bytes());
        }
    }
    let _ = handoff::seal(blob);
}

/// Applies `(target, offset, xor)` changes: target 0 is the blob, target
/// `k > 0` the metadata page `k - 1` (modulo their count).
pub fn mutate(built: &mut Built, changes: &[(u8, u16, u8)]) {
    for &(t, off, x) in changes {
        let x = if x == 0 { 1 } else { x };
        if t == 0 || built.metadata_pages.is_empty() {
            if !built.blob.is_empty() {
                let i = usize::from(off) % built.blob.len();
                built.blob[i] ^= x;
            }
        } else {
            let pg = built.metadata_pages[usize::from(t - 1) % built.metadata_pages.len()];
            if let Some(f) = built.mem.frame_mut(pg) {
                f[usize::from(off) % 4096] ^= x;
            }
        }
    }
    place_blob(built);
}

/// Writes the blob to [`BLOB_AT`] again (after a change to it).
pub fn place_blob(built: &mut Built) {
    let blob = built.blob.clone();
    assert!(built.mem.write_bytes(BLOB_AT, &blob));
}

/// How a changed handoff was read, against the unchanged one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The whole handoff refused (a cold boot that says why).
    pub refused: u64,
    /// The orchestrator's node refused (every object lost, and said so).
    pub unread: u64,
    /// Some objects (or the subsystem data) refused with a typed error,
    /// every other one read exactly as before.
    pub partly: u64,
    /// Everything read exactly as before (the change hit nothing read).
    pub same: u64,
    /// Something read differently without an error: what must never be.
    pub silently_wrong: u64,
}

impl Verdict {
    /// Files `got` against `clean`.
    pub fn add(&mut self, clean: &Outcome, got: &Outcome) {
        if got.refused.is_some() {
            self.refused += 1;
            return;
        }
        let wrong_data = matches!((&got.data, &clean.data), (Some(Ok(a)), Some(Ok(b))) if a != b)
            || matches!((&got.data, &clean.data), (Some(Ok(_)), None));
        let wrong_obj = got.objects.iter().any(|(s, t, r)| match r {
            Ok(d) => !clean
                .objects
                .iter()
                .any(|(cs, ct, cr)| cs == s && ct == t && cr.as_ref() == Ok(d)),
            Err(_) => false,
        });
        if wrong_data || wrong_obj {
            self.silently_wrong += 1;
        } else if got.unread.is_some() {
            self.unread += 1;
        } else if got == clean {
            self.same += 1;
        } else {
            self.partly += 1;
        }
    }

    /// Trials in all.
    pub fn total(&self) -> u64 {
        self.refused + self.unread + self.partly + self.same + self.silently_wrong
    }
}

#[cfg(test)]
mod tests;
