//! Preflight is a promise: a chain of kernels through the front door,
//! each reading a set of versions drawn from the input, checked against
//! what preflight predicted, with an ownership oracle at every hop.
//!
//! A first kernel preserves memfds in two sessions (the second may opt
//! out of carrying) and a page of its own data. Then up to four kernels,
//! each with its own reads (any subset of `memfd-v3`, `-v2`, `-v1`, in any
//! order, or no memfd handler at all), boot from the handoff before: each
//! takes what it reads, in an order drawn from the input, finishes, and
//! hands on what it carried (`Outgoing::carry`, the documented call). A
//! last kernel reads every version. At each hop:
//! - every object preflight said `Read(v)` is taken, from `v`, bit-exact
//!   (contents and first folio), with its carry count;
//! - every object said `Carried` is in `Finished::carried` and carried on
//!   without refusal; every object said `Lost` is in `Finished::lost`;
//! - every preserved page ends in exactly one role: a taken file's folio,
//!   a carried footprint, the kernel's own data page, or freed at finish
//!   (freed pages are zeroed by the host fake, so a page with two roles
//!   shows in the next check of contents).
//!
//! Any breach panics, naming the hop and the object.

use crate::abi::handoff::Stamps;
use crate::luo::{Finished, Outcome, ReadList, State, Version};
use crate::memfd::Memfd;
use crate::memfd::{FAMILY, MemfdHandler, V1, V2, V3_TEST};
use crate::platform::host::HostMem;
use crate::platform::{FrameAlloc, PhysMem};
use crate::ranges::Range;
use crate::reserve::ReserveLog;
use crate::scratch::{Scratch, ScratchRecord};
use crate::update::{Freeze, Frozen, Incoming, Key, Outgoing};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use zerocopy::IntoBytes;

const RAM: Range = Range::new(0x10_0000, 0x4000_0000);
const SCRATCH: Range = Range::new(0x20_0000, 0x420_0000);
const VERSIONS: [Version; 3] = [V3_TEST, V2, V1];

/// One object of the first kernel.
#[derive(Clone, Copy, Debug)]
pub struct ObjectSpec {
    /// Session 0 or 1 (1 opts out of carrying when the chain says so).
    pub session: u8,
    /// Folios in the file (4 KiB each), at least 1.
    pub folios: u16,
    /// A page allocated and left between each two folios, so each folio
    /// is a run of its own (past 4096 runs the footprint goes in an
    /// array).
    pub scattered: bool,
}

/// One kernel after the first.
#[derive(Clone, Copy, Debug)]
pub struct HopSpec {
    /// Versions it reads: bit 0 `memfd-v3`, bit 1 `-v2`, bit 2 `-v1`.
    pub reads: u8,
    /// The order of its reads list (0 to 5: a permutation).
    pub order: u8,
    /// It registers a memfd handler (else it reads no memfd at all).
    pub handler: bool,
}

/// A whole chain, drawn from bytes by [`ChainSpec::from_bytes`].
#[derive(Clone, Debug)]
pub struct ChainSpec {
    /// Versions the first kernel writes (bits as [`HopSpec::reads`]; at
    /// least one).
    pub writes: u8,
    /// Session 1 opts out of carrying.
    pub drop_session: bool,
    /// The objects (1 to 6).
    pub objects: Vec<ObjectSpec>,
    /// The kernels after the first (1 to 4), before a last one that reads
    /// every version.
    pub hops: Vec<HopSpec>,
    /// The order in which each kernel takes its objects.
    pub order: Vec<u8>,
}

impl ChainSpec {
    /// A chain from any bytes (missing bytes read as 0).
    pub fn from_bytes(b: &[u8]) -> Self {
        let at = |i: usize| b.get(i).copied().unwrap_or(0);
        let n_obj = 1 + usize::from(at(2)) % 6;
        let n_hop = 1 + usize::from(at(3)) % 4;
        let objects = (0..n_obj)
            .map(|i| {
                let x = at(4 + 2 * i);
                let y = at(5 + 2 * i);
                ObjectSpec {
                    session: x & 1,
                    // Rarely a file of more runs than a footprint lists
                    // inline (its extents go in a footprint array): it
                    // costs a hundred small chains, so a fuzzer's
                    // favourite bytes (0xff) do not pick it.
                    folios: if x == 0xa7 && y == 0x5b {
                        4100
                    } else {
                        1 + u16::from(y % 48)
                    },
                    scattered: x & 2 != 0,
                }
            })
            .collect();
        let hops = (0..n_hop)
            .map(|i| {
                let x = at(16 + i);
                HopSpec {
                    reads: x & 7,
                    order: (x >> 3) % 6,
                    handler: x & 0x80 == 0,
                }
            })
            .collect();
        Self {
            writes: (at(0) & 7).max(1),
            drop_session: at(1) & 1 != 0,
            objects,
            hops,
            order: b.get(20..).unwrap_or(&[]).to_vec(),
        }
    }
}

/// What a chain did, for a caller that counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainReport {
    /// Objects read (by some kernel of the chain).
    pub read: u32,
    /// Carries (an object kept by a kernel that could not read it).
    pub carried: u32,
    /// Objects lost, as preflight said.
    pub lost: u32,
}

/// An object followed along the chain.
struct Tracked {
    key: Key<Memfd>,
    sum: u64,
    first: u64,
    size: u64,
    carries: u32,
}

/// The versions of `mask`, in the permutation `order`.
fn versions(mask: u8, order: u8) -> Vec<Version> {
    const PERMS: [[usize; 3]; 6] = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    PERMS[usize::from(order) % 6]
        .iter()
        .filter(|&&i| mask & (1 << i) != 0)
        .map(|&i| VERSIONS[i])
        .collect()
}

/// A reads list naming `reads` (in order) and the orchestrator's node.
fn reads_list(reads: &[Version]) -> Vec<u8> {
    let mut b = Vec::new();
    for v in reads {
        b.extend_from_slice(v.name.as_bytes());
        b.push(0);
    }
    b.extend_from_slice(crate::abi::luo::LUO_VERSION.as_bytes());
    b.push(0);
    b
}

/// The `kho-sum64` of a file's bytes.
fn sum_of(f: &Memfd, mem: &HostMem) -> u64 {
    let mut bytes = vec![0u8; f.size() as usize];
    f.read(mem, 0, &mut bytes);
    crate::csum::sum64(&bytes)
}

/// Writes the handoff of `out`, places it in frames as a loader would,
/// and boots the next kernel's front door from it.
fn kexec(out: &mut Frozen<HostMem>, mem: &mut HostMem, hop: u32) -> Incoming<HostMem> {
    // 16 KiB holds most chains; a larger blob is written again at the
    // exact size the writer asks for.
    let mut buf = vec![0u8; 16 << 10];
    let n = match out.write(mem, &mut buf, hop, Stamps::default()) {
        Ok(w) => w.len,
        Err(e) => {
            let need = e
                .needed()
                .unwrap_or_else(|| panic!("hop {hop}: write: {e}"));
            buf.resize(need, 0);
            let w = out
                .write(mem, &mut buf, hop, Stamps::default())
                .unwrap_or_else(|e| panic!("hop {hop}: write at the size asked: {e}"));
            assert_eq!(w.len, need, "hop {hop}: the size asked is exact");
            w.len
        }
    };
    let blob = buf.get(..n).unwrap_or(&[]);
    let order = n.div_ceil(4096).next_power_of_two().trailing_zeros();
    let at = mem.alloc_frames(order).expect("memory for the blob");
    assert!(mem.write_bytes(at, blob));
    let mut log = ReserveLog::new();
    Incoming::new(&*mem, blob, Range::new(at, at + n as u64), &[RAM], &mut log)
        .unwrap_or_else(|e| panic!("hop {hop}: restore: {e}"))
}

/// Preserves a page of the kernel's own data (outside any object).
fn own_page(out: &mut Outgoing<HostMem>, mem: &mut HostMem, tag: u8) -> u64 {
    let p = mem.alloc_frames(0).expect("a page");
    mem.frame_mut(p).expect("the page").fill(tag);
    out.preserve_frames(p, 0).expect("preserve own page");
    p
}

/// Runs the chain, checking every promise (panics on a breach).
pub fn run(spec: &ChainSpec) -> ChainReport {
    let mut mem = HostMem::new(&[RAM], Range::new(0x1000_0000, 0x4000_0000));
    let records = [ScratchRecord {
        start: SCRATCH.start.into(),
        size: SCRATCH.len().into(),
    }];
    let scratch = Scratch::from_records(records.as_bytes(), &[RAM]).expect("scratch");
    mem.avoid(SCRATCH);
    let mut out = Outgoing::<HostMem>::new(scratch).expect("outgoing");
    let writes = versions(spec.writes, 0);
    let fam = out
        .register(MemfdHandler::new(&writes, &writes))
        .expect("register");
    for s in ["s0", "s1"] {
        out.create_session(s).expect("session");
    }
    out.set_drop_unread("s1", spec.drop_session).expect("flag");
    let mut live: Vec<Tracked> = Vec::new();
    for (i, o) in spec.objects.iter().enumerate() {
        let mut f = Memfd::new(true);
        for k in 0..u64::from(o.folios) {
            let byte = [(i as u8).wrapping_mul(31).wrapping_add(k as u8) | 1];
            f.write(&mut mem, k * 4096 + (k % 7) * 64, &byte)
                .expect("write");
            if o.scattered {
                let _ = mem.alloc_frames(0);
            }
        }
        let session = if o.session == 0 { "s0" } else { "s1" };
        let t = Tracked {
            key: fam.key(session, i as u64 + 1),
            sum: sum_of(&f, &mem),
            first: f.extents().first().map_or(0, |e| e.phys),
            size: f.size(),
            carries: 0,
        };
        out.preserve(fam, session, i as u64 + 1, f, &mut mem)
            .unwrap_or_else(|r| panic!("preserve: {}", r.error));
        live.push(t);
    }
    let mut report = ChainReport::default();
    let last = HopSpec {
        reads: 7,
        order: 0,
        handler: true,
    };
    let hops = spec.hops.iter().copied().chain([last]);
    let n_hops = spec.hops.len() + 1;
    for (hop, h) in hops.enumerate() {
        let hop = hop as u32;
        let reads = if h.handler {
            versions(h.reads, h.order)
        } else {
            Vec::new()
        };
        let list_bytes = reads_list(&reads);
        let list = ReadList::parse(&list_bytes).expect("reads list");
        let plan = out.preflight(&list);
        assert_eq!(
            plan.len(),
            live.len(),
            "hop {hop}: preflight lists every object"
        );
        let page = own_page(&mut out, &mut mem, hop as u8 ^ 0x5c);
        let mut frozen = out
            .freeze(&mut mem, Freeze::AllowLoss)
            .unwrap_or_else(|e| panic!("hop {hop}: freeze: {e}"));
        let mut inc = kexec(&mut frozen, &mut mem, hop);
        let fam = if h.handler {
            Some(
                inc.register(MemfdHandler::new(&reads, &reads))
                    .expect("register"),
            )
        } else {
            None
        };
        // The kernel's own page first, as a kernel restores its own data.
        assert!(
            mem.frame(page)
                .is_some_and(|f| f.iter().all(|&b| b == hop as u8 ^ 0x5c)),
            "hop {hop}: own page changed"
        );
        inc.claim(page, 1).expect("own page claimed");
        let preserved: Vec<Range> = inc.preserved().collect();
        let mut inc = inc.restore(&mut mem);
        // Take in the drawn order.
        let mut seq: Vec<usize> = Vec::new();
        for &i in &spec.order {
            if !live.is_empty() {
                let i = usize::from(i) % live.len();
                if !seq.contains(&i) {
                    seq.push(i);
                }
            }
        }
        for i in 0..live.len() {
            if !seq.contains(&i) {
                seq.push(i);
            }
        }
        let mut owned: Vec<(Range, String)> =
            vec![(Range::new(page, page + 4096), "own page".into())];
        let mut read = vec![false; live.len()];
        for i in seq {
            let t = &live[i];
            let who = format!("hop {hop}: {}/{}", t.key.session(), t.key.token());
            let want = &plan
                .iter()
                .find(|p| p.session == t.key.session() && p.token == t.key.token())
                .unwrap_or_else(|| panic!("{who}: not in preflight"))
                .outcome;
            let got = match fam {
                Some(_) => inc.retrieve(&t.key, &mut mem).map(|(_, v)| v),
                None => Err(crate::luo::LuoError::NoHandler(FAMILY.into())),
            };
            match (want, got) {
                (Outcome::Read(v), Ok(g)) => {
                    assert_eq!(v, g, "{who}: read from another version than preflight said");
                    let (f, _) = inc.take(&t.key, &mut mem).expect("take");
                    let info = inc.info(&t.key).expect("info");
                    assert_eq!(
                        (info.version, info.state, info.origin.carried),
                        (Some(g), State::Taken, t.carries),
                        "{who}: info"
                    );
                    assert_eq!(
                        (
                            sum_of(&f, &mem),
                            f.extents().first().map_or(0, |e| e.phys),
                            f.size()
                        ),
                        (t.sum, t.first, t.size),
                        "{who}: not bit-exact"
                    );
                    for e in f.extents() {
                        owned.push((Range::new(e.phys, e.phys + e.pages() * 4096), who.clone()));
                    }
                    read[i] = true;
                    report.read += 1;
                }
                (Outcome::Read(v), Err(e)) => panic!("{who}: preflight said read from {v}: {e}"),
                (o, Ok(g)) => panic!("{who}: preflight said {o:?}, read from {g}"),
                (Outcome::Carried, Err(_)) if fam.is_some() => {
                    let info = inc.info(&t.key).expect("info");
                    assert_eq!(
                        (info.state, info.origin.carried, info.version),
                        (State::Carried, t.carries, None),
                        "{who}: info"
                    );
                    assert!(
                        info.footprint_runs > 0,
                        "{who}: carried without a footprint"
                    );
                }
                (_, Err(_)) => {}
            }
        }
        let done: Finished = inc
            .finish(&mut mem)
            .unwrap_or_else(|e| panic!("hop {hop}: finish: {e}"));
        // Carried and lost exactly as preflight said.
        let mut next: Vec<Tracked> = Vec::new();
        for (i, t) in live.into_iter().enumerate() {
            let who = format!("hop {hop}: {}/{}", t.key.session(), t.key.token());
            let want = &plan
                .iter()
                .find(|p| p.session == t.key.session() && p.token == t.key.token())
                .expect("planned")
                .outcome;
            let c = done
                .carried
                .iter()
                .find(|c| c.session == t.key.session() && c.token == t.key.token());
            let l = done
                .lost
                .iter()
                .find(|l| l.0 == t.key.session() && l.1 == t.key.token());
            match want {
                Outcome::Read(_) => assert!(read[i] && c.is_none() && l.is_none(), "{who}"),
                Outcome::Carried => {
                    let c = c.unwrap_or_else(|| panic!("{who}: promised carried: {l:?}"));
                    assert_eq!(c.origin.carried, t.carries, "{who}: carry count");
                    for r in c.footprint() {
                        owned.push((*r, format!("{who} (carried)")));
                    }
                    report.carried += 1;
                    next.push(Tracked {
                        carries: t.carries + 1,
                        ..t
                    });
                }
                Outcome::Lost => {
                    assert!(l.is_some() && c.is_none(), "{who}: promised lost");
                    report.lost += 1;
                }
            }
        }
        assert_eq!(
            done.carried.len(),
            next.len(),
            "hop {hop}: carried more than promised"
        );
        assert!(done.unread.is_none(), "hop {hop}: node unread");
        for r in &done.ranges {
            owned.push((*r, "freed".into()));
        }
        // Exactly one role per preserved page.
        owned.sort_unstable_by_key(|(r, _)| r.start);
        for w in owned.windows(2) {
            assert!(
                w[0].0.end <= w[1].0.start,
                "hop {hop}: {} ({}) and {} ({}) overlap",
                w[0].0,
                w[0].1,
                w[1].0,
                w[1].1
            );
        }
        // Both sorted: one walk finds each role's preserved range.
        let mut preserved = preserved;
        preserved.sort_unstable_by_key(|r| r.start);
        let mut j = 0;
        let mut roles = 0u64;
        for (r, who) in &owned {
            while preserved.get(j).is_some_and(|p| p.end <= r.start) {
                j += 1;
            }
            assert!(
                preserved.get(j).is_some_and(|p| p.covers(*r)),
                "hop {hop}: {who} has {r}, not preserved"
            );
            roles += r.len();
        }
        let total: u64 = preserved.iter().map(|r| r.len()).sum();
        assert_eq!(roles, total, "hop {hop}: a preserved page has no role");
        if hop as usize + 1 == n_hops {
            assert!(
                next.is_empty(),
                "a last kernel that reads everything carried"
            );
            break;
        }
        // Scratch never moves: the next kernel's is the first's.
        out = Outgoing::new(scratch).expect("outgoing");
        let refused = out.carry(done.carried, &mut mem);
        assert!(
            refused.is_empty(),
            "hop {hop}: promised carried, refused: {}",
            refused[0].error
        );
        live = next;
    }
    report
}
