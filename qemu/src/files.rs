//! The demo's files: memfds in two sessions, handed over by the
//! orchestrator (`kho::luo`) with versioning, restored in place at each hop
//! and checked by checksum and physical address.
//!
//! What this build writes and reads is chosen by a cargo feature
//! (`versions`): the default writes and reads `memfd-v2` and `memfd-v1`;
//! `old` writes and reads `memfd-v1` only; `v3` writes only `memfd-v3` (a
//! stand-in for a future version) and reads all three. The same list is in
//! the image's `kho` ELF note (`kho-reads-v1`), which a first kernel reads
//! before freezing (preflight).

use crate::pool::{Pool, PoolHandler, PoolMem};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use kho::fdt::WriteError;
use kho::handoff::{Handoff, HandoffWriter};
use kho::luo::{Carried, Family, LuoError, Outcome, ReadList, Version};
#[cfg(not(feature = "old"))]
use kho::memfd::V2;
#[cfg(feature = "v3")]
use kho::memfd::V3_TEST;
use kho::memfd::{Memfd, Seals, seal};
use kho::memfd::{MemfdHandler, V1};
use kho::{Freeze, Frozen, Incoming, NotFrozen, Outgoing};
use kho_x86_64::glue::KernelMem;
use kho_x86_64::{BootInfo, kprintln, tsc};
use zerocopy::byteorder::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The versions this build writes, best first.
#[cfg(not(any(feature = "old", feature = "v3")))]
const WRITES: &[Version] = &[V2, V1];
#[cfg(feature = "old")]
const WRITES: &[Version] = &[V1];
#[cfg(feature = "v3")]
const WRITES: &[Version] = &[V3_TEST];

/// The versions this build reads, best first.
#[cfg(not(any(feature = "old", feature = "v3")))]
const READS: &[Version] = &[V2, V1];
#[cfg(feature = "old")]
const READS: &[Version] = &[V1];
#[cfg(feature = "v3")]
const READS: &[Version] = &[V3_TEST, V2, V1];

/// Every version the reads note lists: the memfd handler's read list (the
/// constant it registers below), the pool's, the orchestrator's node, the
/// demo's own subsystem. The note is built from them at compile time.
const NOTE_LISTS: &[&[Version]] = &[
    READS,
    &[crate::pool::POOL_V1],
    &[Version::new(kho::luo::LUO_VERSION)],
    &[Version::new(crate::blocks::DEMO_V1)],
];

// The note itself, in the image's `PT_NOTE` segment.
kho_x86_64::reads_note!(READS_NOTE, NOTE_LISTS);

/// What the next kernel checks of each file (40 bytes, LE).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FileCheck {
    /// FNV-1a 64 over the file's bytes as LE u64 words.
    pub sum: U64,
    /// Physical address of the first folio.
    pub first_phys: U64,
    /// Folios in the file.
    pub folios: U64,
    /// File size.
    pub size: U64,
    /// Its token.
    pub token: U64,
}

/// One demo file: session, token, name, size, writes, seals.
type Spec = (
    &'static str,
    u64,
    &'static str,
    u64,
    &'static [(u64, u64)],
    Seals,
);
const MIB: u64 = 1 << 20;
const SPECS: [Spec; 4] = [
    (
        "vm-1",
        1,
        "big",
        256 * MIB,
        &[(0, 256 * MIB)],
        Seals::empty(),
    ),
    (
        "vm-1",
        2,
        "sealed",
        MIB + 8192,
        &[(0, MIB + 8192)],
        seal::WRITE
            .union(seal::SHRINK)
            .union(seal::GROW)
            .union(seal::SEAL),
    ),
    (
        "vm-2",
        1,
        "sparse",
        64 * MIB,
        &[
            (7 * 4096 + 3, 5000),
            (20 * MIB + 100, 300),
            (63 * MIB, 4096),
        ],
        Seals::empty(),
    ),
    (
        "vm-2",
        2,
        "huge",
        8 * MIB,
        &[(2 * MIB, 6 * MIB)],
        Seals::empty(),
    ),
];

fn fail(what: core::fmt::Arguments<'_>) -> ! {
    kprintln!("kho demo: FAILED: {what}");
    kho_qemu_rt::exit::exit_qemu(kho_qemu_rt::exit::ExitCode::Failure)
}

fn word(file: usize, at: u64) -> u64 {
    (at ^ (file as u64) << 56).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
}

/// A demo file in the orchestrator's hands: session, token, the file.
pub type Held = Vec<(&'static str, u64, Memfd)>;

/// The name of the file at `session`/`token`.
fn name_of(session: &str, token: u64) -> &'static str {
    if session == crate::pool::SESSION {
        return "pool";
    }
    SPECS
        .iter()
        .find(|s| s.0 == session && s.1 == token)
        .map_or("?", |s| s.2)
}

/// The session name as the demo's table has it (`'static`, for `Held`).
fn session_of(session: &str) -> &'static str {
    SPECS
        .iter()
        .find(|s| s.0 == session)
        .map_or("vm-?", |s| s.0)
}

/// Makes the demo files at cold boot; the first is `big_mib` MiB. A build
/// that writes no version with seals (`old`) makes no sealed file.
pub fn make(big_mib: u64) -> Held {
    let mut mem = crate::mem::kmem();
    // The pool the 2 MiB-folio file draws from (shared state).
    let mut pool =
        Pool::new(POOL_BLOCKS).unwrap_or_else(|| fail(format_args!("no blocks for the pool")));
    let mut buf = alloc::vec![0u8; 2 * MIB as usize];
    let seals_ok = WRITES.iter().any(|v| v.name != V1.name);
    let mut out = Vec::new();
    for (i, &(session, token, name, size, writes, seals)) in SPECS.iter().enumerate() {
        if !seals.is_empty() && !seals_ok {
            continue;
        }
        let big = [(0, big_mib * MIB)];
        let (size, writes) = if i == 0 {
            (big_mib * MIB, &big[..])
        } else {
            (size, writes)
        };
        let mut f = Memfd::new(true);
        for &(off, len) in writes {
            let mut at = off;
            while at < off + len {
                let n = (off + len - at).min(buf.len() as u64) as usize;
                // Build the words from the aligned address below `at`.
                let base = at & !7;
                let lead = (at - base) as usize;
                let mut k = 0;
                for w in 0..(n + lead).div_ceil(8) {
                    for (j, b) in word(i, base + 8 * w as u64)
                        .to_le_bytes()
                        .iter()
                        .enumerate()
                    {
                        if 8 * w + j >= lead && k < n {
                            buf[k] = *b;
                            k += 1;
                        }
                    }
                }
                let written = if name == POOL_USER {
                    let mut pm = PoolMem {
                        pool: &mut pool,
                        mem: &mut mem,
                    };
                    f.write(&mut pm, at, &buf[..n])
                } else {
                    f.write(&mut *mem, at, &buf[..n])
                };
                written.unwrap_or_else(|e| fail(format_args!("file {name}: {e}")));
                at += n as u64;
            }
        }
        f.truncate(&mut *mem, size)
            .and_then(|()| f.add_seals(seals))
            .unwrap_or_else(|e| fail(format_args!("file {name}: {e}")));
        out.push((session, token, f));
    }
    *POOL.lock() = Some(pool);
    out
}

/// The file that draws its 2 MiB folios from the pool.
const POOL_USER: &str = "huge";
/// Blocks the pool starts with.
const POOL_BLOCKS: usize = 5;
/// The pool, between its restore (or its making) and its preservation.
static POOL: spin::Mutex<Option<Pool>> = spin::Mutex::new(None);

/// The file's checksum, read through the file (holes read as zeros).
fn checksum(f: &Memfd, mem: &KernelMem) -> u64 {
    let mut buf = alloc::vec![0u8; 256 << 10];
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut at = 0;
    while at < f.size() {
        let n = f.read(mem, at, &mut buf);
        for c in buf[..n].chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x0100_0000_01b3);
        }
        at += n as u64;
    }
    h
}

fn check_of(f: &Memfd, token: u64, mem: &KernelMem) -> FileCheck {
    FileCheck {
        sum: checksum(f, mem).into(),
        first_phys: f.extents().first().map_or(0, |e| e.phys).into(),
        folios: f.folio_count().into(),
        size: f.size().into(),
        token: token.into(),
    }
}

/// What the next kernel will check (computed before the handoff starts:
/// reading 256 MiB is the demo's check, not handoff work).
pub fn checks(files: &Held) -> Vec<(&'static str, FileCheck)> {
    let mem = crate::mem::kmem();
    let mut c: Vec<(&'static str, FileCheck)> = files
        .iter()
        .map(|(s, t, f)| (*s, check_of(f, *t, &mem)))
        .collect();
    // The files this kernel carries keep the checks their writer made.
    c.extend(CARRIED.lock().checks.iter().copied());
    c
}

/// What this kernel carries without reading it: the objects (from finish)
/// and the checks their writer handed over, for the kernel that will read
/// them.
struct Carry {
    objects: Vec<Carried>,
    checks: Vec<(&'static str, FileCheck)>,
}

static CARRIED: spin::Mutex<Carry> = spin::Mutex::new(Carry {
    objects: Vec::new(),
    checks: Vec::new(),
});

/// Whether the reads note lists exactly what the registered handlers read,
/// plus this kernel's other formats: what a previous kernel's preflight
/// will believe of this image.
pub fn note_matches_handlers() -> bool {
    let Some(note) = READS_NOTE.list() else {
        return false;
    };
    let Some(scratch) = kho_x86_64::start::scratch() else {
        return false;
    };
    let Ok(mut out) = Outgoing::new(*scratch) else {
        return false;
    };
    let _ = Families::register_out(&mut out);
    let mut want: Vec<(&str, u64)> = out.reads().map(|v| (v.name, v.features)).collect();
    want.push((kho::luo::LUO_VERSION, 0));
    want.push((crate::blocks::DEMO_V1, 0));
    note.versions().eq(want.iter().copied())
}

/// The families of this build's handlers: the memfds (what this build
/// writes and reads) and the pool.
pub struct Families {
    memfd: Family<Memfd>,
    pool: Family<Pool>,
}

impl Families {
    /// Registers the handlers on the outgoing side.
    pub fn register_out(out: &mut Outgoing<KernelMem>) -> Self {
        let memfd = out
            .register(MemfdHandler::new(WRITES, READS))
            .unwrap_or_else(|e| fail(format_args!("{e}")));
        let pool = out
            .register(PoolHandler)
            .unwrap_or_else(|e| fail(format_args!("{e}")));
        Self { memfd, pool }
    }

    /// Registers the same handlers on the incoming side.
    fn register_in(inc: &mut Incoming<KernelMem>) -> Self {
        let memfd = inc
            .register(MemfdHandler::new(WRITES, READS))
            .unwrap_or_else(|e| fail(format_args!("{e}")));
        let pool = inc
            .register(PoolHandler)
            .unwrap_or_else(|e| fail(format_args!("{e}")));
        Self { memfd, pool }
    }
}

/// Preserves every file in its session, and hands on every object this
/// kernel carries. `kho.drop=1` opts every session out of carry-through.
pub fn preserve(out: &mut Outgoing<KernelMem>, fams: &Families, files: Held, hop: u32) {
    let mut mem = crate::mem::kmem();
    let mut sessions: Vec<&str> = Vec::new();
    // The pool first: preserved with its first dependent.
    let pool = POOL.lock().take().map(|pool| {
        out.create_session(crate::pool::SESSION)
            .map_err(kho::Error::from)
            .and_then(|()| {
                out.share(fams.pool, crate::pool::SESSION, crate::pool::TOKEN, pool)
                    .map_err(|r| r.error.into())
            })
            .unwrap_or_else(|e| fail(format_args!("pool: {e}")))
    });
    if pool.is_some() {
        sessions.push(crate::pool::SESSION);
    }
    for (session, token, f) in files {
        if !sessions.contains(&session) {
            out.create_session(session)
                .unwrap_or_else(|e| fail(format_args!("{e}")));
            sessions.push(session);
        }
        let r = match &pool {
            Some(needs) if name_of(session, token) == POOL_USER => {
                out.preserve_with(fams.memfd, session, token, f, needs, &mut *mem)
            }
            _ => out.preserve(fams.memfd, session, token, f, &mut *mem),
        };
        r.unwrap_or_else(|e| fail(format_args!("{}", e.error)));
    }
    let carried = core::mem::take(&mut CARRIED.lock().objects);
    let names: Vec<(String, u64)> = carried
        .iter()
        .map(|c| (c.session.clone(), c.token))
        .collect();
    let refused = out.carry(carried, &mut *mem);
    for (s, tok) in names {
        match refused
            .iter()
            .find(|r| r.object.session == s && r.object.token == tok)
        {
            None => kprintln!(
                "kho hop {hop}: {s}/{tok} ({}) handed on unread, its pages preserved again",
                name_of(&s, tok)
            ),
            Some(r) => kprintln!("kho hop {hop}: {s}/{tok} cannot be carried on: {}", r.error),
        }
    }
    if crate::mem::cmdline_flag("kho.drop") {
        let sessions: Vec<String> = out.objects().map(|(s, _, _)| s.into()).collect();
        for s in sessions {
            let _ = out.set_drop_unread(&s, true);
        }
    }
}

/// Preflight and freeze: prints what the next kernel will read of each
/// object. `Err` (the kexec must not happen) when the next image would lose
/// an object and `force` is off: the outgoing side comes back, with why.
pub fn freeze(
    out: Outgoing<KernelMem>,
    hop: u32,
    next: &ReadList<'_>,
    force: bool,
) -> Result<Frozen<KernelMem>, NotFrozen<KernelMem>> {
    for p in out.preflight(next) {
        let what = match &p.outcome {
            Outcome::Read(v) => v.as_str(),
            Outcome::Carried => "CARRIED: the next kernel keeps it unread",
            Outcome::Lost => "NONE: the next kernel cannot read it",
        };
        kprintln!(
            "kho hop {hop}: preflight: {}/{} {} ({}) -> {what}",
            p.session,
            p.token,
            p.family,
            name_of(&p.session, p.token),
        );
    }
    let policy = if force {
        Freeze::AllowLoss
    } else {
        Freeze::NoLoss(next)
    };
    out.freeze(&mut *crate::mem::kmem(), policy)
}

/// Writes the demo's checks of its files.
pub fn add_nodes(
    w: &mut HandoffWriter<'_>,
    checks: &[(&'static str, FileCheck)],
) -> Result<(), WriteError> {
    w.subsystem("files", &["kho-demo-files-v1"], None, |w| {
        for (s, c) in checks {
            w.property_struct(&format!("kho,check-{s}-{}", c.token.get()), c)?;
        }
        Ok(())
    })
}

/// In the next kernel: takes every object of the `luo` node in the best
/// version both sides have, through the front door, checks each, prints a
/// row per object, then finishes. Claims `blocks` (the demo's other
/// preserved data) first. Returns the files restored (to carry on) and how
/// many were lost.
pub fn restore(boot: &BootInfo, h: &Handoff<'_>, hop: u32, blocks: &[(u64, u32)]) -> (Held, usize) {
    let mut mem = crate::mem::kmem();
    let mut inc = match boot.incoming(&mem) {
        Some(Ok(inc)) => inc,
        Some(Err(e)) => fail(format_args!("{e}")),
        None => fail(format_args!("no handoff")),
    };
    for &(phys, order) in blocks {
        inc.claim(phys, 1 << order)
            .unwrap_or_else(|e| fail(format_args!("demo block: {e}")));
    }
    if let Some(e) = inc.unread() {
        fail(format_args!("{e}"));
    }
    let fams = Families::register_in(&mut inc);
    // Every object restored now, the demo's own blocks claimed before.
    let mut inc = inc.restore(&mut *mem);
    let checks = h.subsystem("files");
    // The check the writer handed over for one file.
    let check_of_file = |session: &str, token: u64| -> Option<&FileCheck> {
        checks.as_ref().and_then(|c| {
            c.node
                .property(&format!("kho,check-{session}-{token}"))
                .and_then(|p| p.as_struct().ok())
        })
    };
    kprintln!(
        "kho hop {hop}: {:<8} {:>5} {:<8} {:<9} {:>10} {:>7} {:>8}  verified",
        "session",
        "token",
        "file",
        "version",
        "size",
        "folios",
        "metadata"
    );
    let objects: Vec<(String, u64, String)> = inc
        .objects()
        .map(|(s, t, f)| (s.into(), t, f.into()))
        .collect();
    let start = tsc::now();
    let mut restored = Vec::new();
    let mut lost = 0;
    for (session, token, family) in objects {
        if family == crate::pool::FAMILY {
            match inc.take(&fams.pool.key(&session, token), &mut *mem) {
                Ok((pool, v)) => {
                    kprintln!(
                        "kho hop {hop}: shared pool {session}/{token}: {v}, {} free 2 MiB block(s) restored before its dependents",
                        pool.free.len()
                    );
                    *POOL.lock() = Some(pool);
                }
                Err(e) => kprintln!("kho hop {hop}: shared pool {session}/{token}: {e}"),
            }
            continue;
        }
        let name = name_of(&session, token);
        let key = fams.memfd.key(&session, token);
        match inc.retrieve(&key, &mut *mem) {
            Err(LuoError::Carried { written, .. }) => {
                let info = inc
                    .info(&key)
                    .unwrap_or_else(|e| fail(format_args!("{session}/{token}: {e}")));
                kprintln!(
                    "kho hop {hop}: {session:<8} {token:>5} {name:<8} CARRIED: reads none of [{}]; first handed over at hop {}, carried {} time(s) before; {} KiB kept in {} extent(s)",
                    written.join(", "),
                    info.origin.hop,
                    info.origin.carried,
                    info.footprint_bytes / 1024,
                    info.footprint_runs
                );
                // Its writer's check goes on with it.
                if let Some(c) = check_of_file(&session, token) {
                    CARRIED.lock().checks.push((session_of(&session), *c));
                }
                continue;
            }
            Err(e) => {
                kprintln!("kho hop {hop}: {session:<8} {token:>5} {name:<8} not restored: {e}");
                lost += 1;
                continue;
            }
            Ok(_) => {}
        }
        let meta = inc
            .info(&key)
            .ok()
            .and_then(|i| i.payload_bytes)
            .unwrap_or(0);
        let (f, version) = inc
            .take(&key, &mut *mem)
            .unwrap_or_else(|e| fail(format_args!("{session}/{token}: {e}")));
        let Some(want) = check_of_file(&session, token) else {
            fail(format_args!("{session}/{token}: no check handed over"))
        };
        let got = check_of(&f, token, &mem);
        if got.sum != want.sum
            || got.first_phys != want.first_phys
            || got.folios != want.folios
            || got.size != want.size
        {
            fail(format_args!(
                "{session}/{token} ({name}): {got:?} differs from {want:?}"
            ));
        }
        kprintln!(
            "kho hop {hop}: {session:<8} {token:>5} {name:<8} {version:<9} {:>6} KiB {:>7} {:>6} B  checksum {:#018x}, first folio still at {:#x}",
            f.size() / 1024,
            f.folio_count(),
            meta,
            got.sum.get(),
            got.first_phys.get()
        );
        restored.push((session_of(&session), token, f));
    }
    let done = inc
        .finish(&mut *mem)
        .unwrap_or_else(|e| fail(format_args!("finish: {e}")));
    kprintln!(
        "kho hop {hop}: {} objects retrieved in {} us (with checksums), {} carried, {} lost; finish freed {} KiB nobody adopted",
        restored.len(),
        kho_x86_64::tsc::micros(tsc::now() - start),
        done.carried.len(),
        done.lost.len(),
        done.freed / 1024
    );
    CARRIED.lock().objects = done.carried;
    (restored, lost)
}

/// Checks the files again (after the rest of memory was poisoned).
pub fn recheck(files: &Held, sums: &[u64]) -> bool {
    let mem = crate::mem::kmem();
    files
        .iter()
        .zip(sums)
        .all(|((_, _, f), s)| checksum(f, &mem) == *s)
}

/// The current checksums.
pub fn sums(files: &Held) -> Vec<u64> {
    let mem = crate::mem::kmem();
    files.iter().map(|(_, _, f)| checksum(f, &mem)).collect()
}

/// Gives the files back (a refused kexec ends the demo cleanly).
pub fn cancel(out: &mut Outgoing<KernelMem>) -> Held {
    out.cancel(&mut *crate::mem::kmem())
        .into_iter()
        .filter_map(|c| {
            let (s, tok) = (session_of(&c.session), c.token);
            c.into_object::<Memfd>().ok().map(|f| (s, tok, f))
        })
        .collect()
}
