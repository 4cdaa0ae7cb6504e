//! The demo's files: memfds made at cold boot, carried across every kexec
//! in place, and checked by checksum and physical address at each hop.
//!
//! The subsystem node `memfd` lists the versions written, best first
//! (`memfd-v2`, `memfd-v1`), and holds per file `kho,memfd-vK-N` (that
//! version's descriptor) and one 32-byte [`FileCheck`] in `kho,checks`.

use alloc::format;
use alloc::vec::Vec;
use kho::PAGE_SIZE;
use kho::claims::Claims;
use kho::fdt::WriteError;
use kho::handoff::{Handoff, HandoffWriter};
use kho::memfd::{Memfd, seal, v1, v2};
use kho::ranges::Range;
use kho::tracker::Tracker;
use kho_x86_64::glue::KernelMem;
use kho_x86_64::{BootInfo, frames, kprintln, tsc};
use zerocopy::byteorder::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The subsystem's node.
pub const NAME: &str = "memfd";
/// The versions this kernel reads, best first.
pub const READS: [&str; 2] = [v2::VERSION, v1::VERSION];

/// What the next kernel checks of each file (32 bytes, LE).
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
}

/// How each demo file is made: name, size, writes (offset, length), seals.
type Spec = (&'static str, u64, &'static [(u64, u64)], u32);
const MIB: u64 = 1 << 20;
const SPECS: [Spec; 4] = [
    ("big", 256 * MIB, &[(0, 256 * MIB)], 0),
    (
        "sparse",
        64 * MIB,
        &[
            (7 * 4096 + 3, 5000),
            (20 * MIB + 100, 300),
            (63 * MIB, 4096),
        ],
        0,
    ),
    (
        "sealed",
        MIB + 8192,
        &[(0, MIB + 8192)],
        seal::WRITE | seal::SHRINK | seal::GROW | seal::SEAL,
    ),
    ("huge", 8 * MIB, &[(2 * MIB, 6 * MIB)], 0),
];

fn fail(what: core::fmt::Arguments<'_>) -> ! {
    kprintln!("kho demo: FAILED: {what}");
    kho_x86_64::exit::exit_qemu(kho_x86_64::exit::ExitCode::Failure)
}

fn word(file: usize, at: u64) -> u64 {
    (at ^ (file as u64) << 56).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
}

/// Makes the demo files at cold boot; the first is `big_mib` MiB.
pub fn make(big_mib: u64) -> Vec<Memfd> {
    let mut mem = KernelMem;
    let mut buf = alloc::vec![0u8; 2 * MIB as usize];
    SPECS
        .iter()
        .enumerate()
        .map(|(i, &(name, size, writes, seals))| {
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
                    // Writes start 8-byte aligned or not: build the words
                    // from the aligned address below and skip the lead.
                    let base = at & !7;
                    let lead = (at - base) as usize;
                    let words = (n + lead).div_ceil(8);
                    let mut k = 0;
                    for w in 0..words {
                        let bytes = word(i, base + 8 * w as u64).to_le_bytes();
                        for (j, b) in bytes.iter().enumerate() {
                            let pos = 8 * w + j;
                            if pos >= lead && k < n {
                                buf[k] = *b;
                                k += 1;
                            }
                        }
                    }
                    f.write(&mut mem, at, &buf[..n])
                        .unwrap_or_else(|e| fail(format_args!("file {name}: {e}")));
                    at += n as u64;
                }
            }
            f.truncate(&mut mem, size)
                .and_then(|()| f.add_seals(seals))
                .unwrap_or_else(|e| fail(format_args!("file {name}: {e}")));
            f
        })
        .collect()
}

/// The file's checksum, read through the file (holes read as zeros).
fn checksum(f: &Memfd) -> u64 {
    let mem = KernelMem;
    let mut buf = alloc::vec![0u8; 256 << 10];
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut at = 0;
    while at < f.size() {
        let n = f.read(&mem, at, &mut buf);
        for c in buf[..n].chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x0100_0000_01b3);
        }
        at += n as u64;
    }
    h
}

fn check_of(f: &Memfd) -> FileCheck {
    FileCheck {
        sum: checksum(f).into(),
        first_phys: f.extents().first().map_or(0, |e| e.phys).into(),
        folios: f.folio_count().into(),
        size: f.size().into(),
    }
}

/// What the next kernel will check of each file (computed before the
/// handoff starts: reading 256 MiB is the demo's check, not handoff work).
pub fn checks(files: &[Memfd]) -> Vec<FileCheck> {
    files.iter().map(check_of).collect()
}

/// Preserves the files and writes each in every version it can be.
/// Returns each file's descriptors (v2, and v1 when it can carry the file).
pub fn hand_over(files: &mut [Memfd], t: &mut Tracker) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut mem = KernelMem;
    let mut descs = Vec::new();
    for (i, f) in files.iter_mut().enumerate() {
        f.preserve(t)
            .unwrap_or_else(|e| fail(format_args!("file {i}: {e}")));
        let w2 = v2::write(f, &mut mem, t).unwrap_or_else(|e| fail(format_args!("file {i}: {e}")));
        // memfd-v1 cannot carry seals: a sealed file goes over in v2 only.
        let w1 = v1::write(f, &mut mem, t).ok();
        descs.push((w2.desc, w1.map(|w| w.desc)));
    }
    descs
}

/// Writes the node.
pub fn add_node(
    w: &mut HandoffWriter<'_>,
    checks: &[FileCheck],
    descs: &[(Vec<u8>, Option<Vec<u8>>)],
) -> Result<(), WriteError> {
    w.subsystem(NAME, &READS, None, |w| {
        w.property_struct("kho,checks", checks)?;
        for (i, (d2, d1)) in descs.iter().enumerate() {
            w.property(&format!("kho,memfd-v2-{i}"), d2)?;
            if let Some(d1) = d1 {
                w.property(&format!("kho,memfd-v1-{i}"), d1)?;
            }
        }
        Ok(())
    })
}

/// In the next kernel: restores every file from the `memfd` node in the
/// best version both sides have, checks it, prints a row per file. Claims
/// `blocks` (the demo's other preserved data) first; then frees every
/// preserved page nobody adopted.
pub fn restore(boot: &BootInfo, h: &Handoff<'_>, hop: u32, blocks: &[(u64, u32)]) -> Vec<Memfd> {
    let mut mem = KernelMem;
    let ram: Vec<Range> = boot.params.ram().collect();
    let scratch = boot.scratch.areas();
    let preserved: Vec<Range> = kho_x86_64::start::with_reserved(|r| r.preserved_ranges().to_vec());
    let mut claims = Claims::new(preserved, scratch).unwrap_or_else(|e| fail(format_args!("{e}")));
    for &(phys, order) in blocks {
        claims
            .claim(phys, 1 << order)
            .unwrap_or_else(|e| fail(format_args!("demo block: {e}")));
    }
    let Some(sub) = h.subsystem(NAME) else {
        fail(format_args!("the handoff has no {NAME} subsystem"))
    };
    let Some(version) = sub.pick(&READS) else {
        fail(format_args!(
            "{NAME}: written as {:?}, this kernel reads {READS:?}",
            sub.compatible().collect::<Vec<_>>()
        ))
    };
    let checks: &[FileCheck] = sub
        .node
        .property("kho,checks")
        .and_then(|p| p.as_slice_of().ok())
        .unwrap_or_else(|| fail(format_args!("{NAME}: no kho,checks")));
    kprintln!(
        "kho hop {hop}: {:<8} {:<9} {:>10} {:>8} {:>8} {:>9}  {}",
        "file",
        "version",
        "size",
        "folios",
        "extents",
        "metadata",
        "verified"
    );
    let start = tsc::now();
    let mut files = Vec::new();
    let mut restore_ticks = 0;
    for (i, c) in checks.iter().enumerate() {
        let name = SPECS.get(i).map_or("?", |s| s.0);
        // The best version this file was written in (a sealed file has no v1).
        let (ver, desc) = READS
            .iter()
            .skip_while(|v| **v != version)
            .find_map(|v| {
                sub.node
                    .property(&format!("kho,{v}-{i}"))
                    .map(|p| (*v, p.value))
            })
            .unwrap_or_else(|| fail(format_args!("file {name}: no descriptor")));
        let t0 = tsc::now();
        let r = if ver == v2::VERSION {
            v2::read(desc, &mut mem, &ram, scratch, &mut claims)
        } else {
            v1::read(desc, &mut mem, &ram, scratch, &mut claims)
        };
        restore_ticks += tsc::now() - t0;
        let f = r.unwrap_or_else(|e| fail(format_args!("file {name} ({ver}): {e}")));
        let got = check_of(&f);
        let same_place = got.first_phys == c.first_phys;
        if got.sum != c.sum || !same_place || got.folios != c.folios || got.size != c.size {
            fail(format_args!(
                "file {name}: {got:?} differs from what was handed over ({c:?})"
            ));
        }
        kprintln!(
            "kho hop {hop}: {:<8} {:<9} {:>7} KiB {:>8} {:>8} {:>7} B  checksum {:#018x}, first folio still at {:#x}",
            name,
            ver,
            f.size() / 1024,
            f.folio_count(),
            f.extents().len(),
            desc.len(),
            got.sum.get(),
            got.first_phys.get()
        );
        files.push(f);
    }
    // Finish: what no object adopted (record arrays, vmalloc chains) goes
    // back to the allocator.
    let mut freed = 0;
    for r in claims.unclaimed() {
        frames::free(r.start, r.len() / PAGE_SIZE)
            .unwrap_or_else(|e| fail(format_args!("finish: free {r}: {e:?}")));
        freed += r.len();
    }
    kprintln!(
        "kho hop {hop}: {} files restored in {} us ({} us in the readers), {} KiB of handed-over metadata freed at finish",
        files.len(),
        kho_x86_64::tsc::micros(tsc::now() - start),
        kho_x86_64::tsc::micros(restore_ticks),
        freed / 1024
    );
    files
}

/// Checks the files again (after the rest of memory was poisoned).
pub fn recheck(files: &[Memfd], checks_before: &[u64]) -> bool {
    files
        .iter()
        .zip(checks_before)
        .all(|(f, s)| checksum(f) == *s)
}

/// The current checksums.
pub fn sums(files: &[Memfd]) -> Vec<u64> {
    files.iter().map(checksum).collect()
}
