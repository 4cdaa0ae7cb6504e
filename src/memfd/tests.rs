//! memfd: the file against a plain model, both formats round-tripped
//! through a handover on the host, and every bad record refused with
//! nothing adopted.
#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::type_complexity
)]

use super::*;
use crate::claims::Claims;
use crate::platform::host::HostMem;
use crate::ranges::Range;
use crate::testkit::HandOver;
use crate::vmalloc::VmallocRoot;
use alloc::boxed::Box;
use alloc::vec;
use proptest::prelude::*;
use zerocopy::{FromBytes, IntoBytes};

const RAM: Range = Range::new(0x10_0000, 0x2000_0000);
const SCRATCH: Range = Range::new(0x10_0000, 0x110_0000);
const POOL: Range = Range::new(0x200_0000, 0x2000_0000);
const K: u64 = 4096;

fn setup() -> (HostMem, Tracker) {
    let mut mem = HostMem::new(&[RAM], POOL);
    mem.avoid(SCRATCH);
    (mem, Tracker::new(&[SCRATCH]).unwrap())
}

fn byte(seed: u64, at: u64) -> u8 {
    (at.wrapping_mul(0x9e37_79b9).wrapping_add(seed) >> 7) as u8 | 1
}

fn data(seed: u64, off: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| byte(seed, off + i)).collect()
}

fn contents(f: &Memfd, mem: &HostMem) -> Vec<u8> {
    let mut buf = vec![0xaa; f.size() as usize];
    assert_eq!(f.read(mem, 0, &mut buf), buf.len());
    buf
}

#[test]
fn folios_follow_the_write_size_and_alignment() {
    let (mut mem, _) = setup();
    let mut f = Memfd::new(true);
    f.write(&mut mem, 0, &data(1, 0, 2 << 20)).unwrap();
    f.write(&mut mem, 2 << 20, &data(1, 0, 100 << 10)).unwrap();
    let orders: Vec<u32> = f.folios().map(|x| x.order).collect();
    // 2 MiB, then 64 KiB, then 36 KiB in 4 KiB folios.
    assert_eq!(orders, [vec![9, 4], vec![0; 9]].concat());
    // A write at an odd offset takes small folios; a hole reads as zeros
    // and allocates nothing.
    let before = mem.allocated;
    let mut buf = [1u8; 100];
    f.truncate(&mut mem, 8 << 20).unwrap();
    assert_eq!(f.read(&mem, 5 << 20, &mut buf), 100);
    assert_eq!(buf, [0; 100]);
    assert_eq!(mem.allocated, before);
    f.write(&mut mem, (6 << 20) + 4096, &[7; 10]).unwrap();
    assert_eq!(f.folios().last().unwrap().order, 0);
    assert_eq!(mem.allocated, before + 1);
}

#[test]
fn a_full_allocator_falls_back_to_small_folios_then_fails_cleanly() {
    // A pool of 64 KiB + 4 KiB: no 2 MiB folio exists.
    let mut mem = HostMem::new(&[RAM], Range::new(0x300_0000, 0x301_1000));
    let mut f = Memfd::new(true);
    f.write(&mut mem, 0, &[5; 68 << 10]).unwrap();
    let orders: Vec<u32> = f.folios().map(|x| x.order).collect();
    assert_eq!(orders, [4, 0]);
    let before = (mem.allocated, f.extents().to_vec(), f.size());
    assert_eq!(
        f.write(&mut mem, 1 << 20, &[1; 8192]),
        Err(MemfdError::OutOfFrames)
    );
    assert_eq!((mem.allocated, f.extents().to_vec(), f.size()), before);
}

#[test]
fn seals_refuse_what_linux_refuses() {
    let (mut mem, _) = setup();
    let mut f = Memfd::new(false);
    assert_eq!(
        f.add_seals(seal::WRITE),
        Err(MemfdError::Sealed {
            op: "add seals",
            seal: seal::SEAL
        })
    );
    let mut f = Memfd::new(true);
    f.write(&mut mem, 0, &[1; 10000]).unwrap();
    assert_eq!(
        f.add_seals(crate::memfd::Seals::from_bits_retain(0x20)),
        Err(MemfdError::UnknownSeal { bits: 0x20 })
    );
    f.add_seals(seal::SHRINK | seal::GROW).unwrap();
    let grow = Err(MemfdError::Sealed {
        op: "grow",
        seal: seal::GROW,
    });
    assert_eq!(f.truncate(&mut mem, 20000), grow);
    assert_eq!(f.write(&mut mem, 9999, &[1; 2]), grow.map(|()| 0));
    assert_eq!(
        f.truncate(&mut mem, 100),
        Err(MemfdError::Sealed {
            op: "shrink",
            seal: seal::SHRINK
        })
    );
    // Writes inside the size are still fine.
    assert_eq!(f.write(&mut mem, 9998, &[2; 2]), Ok(2));
    for s in [seal::WRITE, seal::FUTURE_WRITE] {
        let mut g = Memfd::new(true);
        g.write(&mut mem, 0, &[1; 10]).unwrap();
        g.add_seals(s | seal::SEAL).unwrap();
        assert_eq!(
            g.write(&mut mem, 0, &[1]),
            Err(MemfdError::Sealed {
                op: "write",
                seal: s
            })
        );
        assert_eq!(
            g.punch(&mut mem, 0, 4096),
            Err(MemfdError::Sealed {
                op: "punch",
                seal: s
            })
        );
        assert_eq!(
            g.add_seals(seal::GROW),
            Err(MemfdError::Sealed {
                op: "add seals",
                seal: seal::SEAL
            })
        );
        // Truncate is a size change, not a write.
        g.truncate(&mut mem, 5).unwrap();
    }
}

#[test]
fn truncate_and_punch_free_whole_folios_and_zero_partial_ones() {
    let (mut mem, _) = setup();
    let base = mem.allocated;
    let mut f = Memfd::new(true);
    f.write(&mut mem, 0, &data(3, 0, 4 << 20)).unwrap();
    assert_eq!(mem.allocated - base, 1024);
    // Punch the middle 2 MiB + 8 KiB: the second 2 MiB folio is partly
    // inside, so it stays and is zeroed where punched.
    f.punch(&mut mem, (1 << 20) - 4096, (2 << 20) + 8192)
        .unwrap();
    assert_eq!(mem.allocated - base, 1024);
    let c = contents(&f, &mem);
    let lo = (1 << 20) - 4096;
    let hi = lo + (2 << 20) + 8192;
    for (i, &b) in c.iter().enumerate() {
        let i = i as u64;
        assert_eq!(b, if (lo..hi).contains(&i) { 0 } else { byte(3, i) }, "{i}");
    }
    // Now punch a whole 2 MiB folio: it is freed, the file stays the same
    // size.
    f.punch(&mut mem, 2 << 20, 2 << 20).unwrap();
    assert_eq!(mem.allocated - base, 512);
    assert_eq!(f.size(), 4 << 20);
    // Truncate into a folio: its tail is zeroed and reads as zero after
    // growing again.
    f.truncate(&mut mem, 5000).unwrap();
    assert_eq!(mem.allocated - base, 512, "the 2 MiB folio holds byte 5000");
    f.truncate(&mut mem, 3 << 20).unwrap();
    let c = contents(&f, &mem);
    assert!(
        c[..5000]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == byte(3, i as u64))
    );
    assert!(c[5000..].iter().all(|&b| b == 0));
    f.truncate(&mut mem, 0).unwrap();
    assert_eq!(mem.allocated, base);
    assert!(f.extents().is_empty());
}

#[derive(Clone, Debug)]
enum Op {
    Write(u64, usize, u64),
    Truncate(u64),
    Punch(u64, u64),
    Seal(u32),
}

fn op() -> impl Strategy<Value = Op> {
    let off = 0u64..(5 << 20);
    prop_oneof![
        4 => (off.clone(), 1usize..(2 << 20) + 9000, any::<u64>()).prop_map(|(o, l, s)| Op::Write(o, l, s)),
        1 => (0u64..(6 << 20)).prop_map(Op::Truncate),
        2 => (off, 1u64..(3 << 20)).prop_map(|(o, l)| Op::Punch(o, l)),
        1 => prop_oneof![Just(seal::SHRINK.bits()), Just(seal::GROW.bits()), Just(seal::WRITE.bits()), Just(seal::SEAL.bits()), Just(0x40)].prop_map(Op::Seal),
    ]
}

/// The model: the bytes, and the seals.
fn apply(model: &mut Vec<u8>, seals: &mut u32, op: &Op) -> bool {
    let w = *seals & (seal::WRITE.bits() | seal::FUTURE_WRITE.bits()) != 0;
    match *op {
        Op::Write(o, l, s) => {
            let end = (o + l as u64) as usize;
            if w || (end > model.len() && *seals & seal::GROW.bits() != 0) {
                return false;
            }
            if end > model.len() {
                model.resize(end, 0);
            }
            model[o as usize..end].copy_from_slice(&data(s, o, l));
        }
        Op::Truncate(n) => {
            let n = n as usize;
            if (n < model.len() && *seals & seal::SHRINK.bits() != 0)
                || (n > model.len() && *seals & seal::GROW.bits() != 0)
            {
                return false;
            }
            model.resize(n, 0);
        }
        Op::Punch(o, l) => {
            if w {
                return false;
            }
            let end = ((o + l) as usize).min(model.len());
            if (o as usize) < end {
                model[o as usize..end].fill(0);
            }
        }
        Op::Seal(s) => {
            if s & !seal::ALL.bits() != 0 || *seals & seal::SEAL.bits() != 0 {
                return false;
            }
            *seals |= s;
        }
    }
    true
}

fn check_shape(f: &Memfd, mem: &HostMem, base: u64) {
    let mut end = 0;
    for e in f.extents() {
        assert!(e.index >= end && e.count > 0, "{:?}", f.extents());
        assert!(ORDERS.contains(&e.order));
        assert_eq!(e.index % (1 << e.order), 0);
        end = e.end();
    }
    // No folio lies wholly past the end; nothing leaked.
    if let Some(e) = f.extents().last() {
        assert!(
            (e.end() - (1 << e.order)) * K < f.size().max(1),
            "{e:?} past {}",
            f.size()
        );
    }
    assert_eq!(f.allocated_bytes() / K, mem.allocated - base);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    /// Random writes, truncates, punches and seals against a `Vec<u8>`,
    /// then a handover in both formats: the same bytes in the same folios.
    #[test]
    fn memfd_matches_a_model_and_survives_a_handover(ops in proptest::collection::vec(op(), 1..14)) {
        let (mut mem, mut t) = setup();
        let base = mem.allocated;
        let mut f = Memfd::new(true);
        let (mut model, mut seals) = (Vec::new(), 0u32);
        for o in &ops {
            let ok = apply(&mut model, &mut seals, o);
            let r = match *o {
                Op::Write(off, l, s) => f.write(&mut mem, off, &data(s, off, l)).map(|_| ()),
                Op::Truncate(n) => f.truncate(&mut mem, n),
                Op::Punch(off, l) => f.punch(&mut mem, off, l),
                Op::Seal(s) => f.add_seals(crate::memfd::Seals::from_bits_retain(s)),
            };
            prop_assert_eq!(r.is_ok(), ok, "{:?}: {:?}", o, r);
            prop_assert_eq!(f.size(), model.len() as u64);
            check_shape(&f, &mem, base);
        }
        prop_assert!(contents(&f, &mem) == model);
        f.seek(12345);
        let folios: Vec<Extent> = f.folios().collect();
        f.preserve(&mut t).unwrap();
        let v2 = v2::write(&f, &mut mem, &mut t).unwrap();
        let v1 = v1::write(&f, &mut mem, &mut t);
        prop_assert_eq!(v1.is_ok(), seals & !seal::SEAL.bits() == 0);
        for (which, desc) in [(2, Some(&v2.desc)), (1, v1.as_ref().ok().map(|w| &w.desc))] {
            let Some(desc) = desc else { continue };
            let mut claims = mem.hand_over(&t).unwrap();
            let g = if which == 2 {
                v2::read(desc, &mut mem, &[RAM], &[SCRATCH], &mut claims).unwrap()
            } else {
                v1::read(desc, &mut mem, &[RAM], &[SCRATCH], &mut claims).unwrap()
            };
            // The same folios at the same addresses: nothing was copied.
            prop_assert_eq!(g.folios().collect::<Vec<_>>(), folios.clone());
            prop_assert_eq!(g.extents(), f.extents());
            prop_assert!(contents(&g, &mem) == model);
            prop_assert_eq!((g.size(), g.pos()), (f.size(), f.pos()));
            prop_assert_eq!(g.seals().bits(), if which == 2 { seals } else { 0 });
            // Exactly the folios are adopted; the array pages go to finish.
            prop_assert_eq!(claims.data_pages(), f.allocated_bytes() / K);
        }
    }
}

/// A preserved file of `shape` and its next kernel's claims.
fn handed(extents: &[(u64, u64, u32)], size: u64, seals: u32) -> (HostMem, Tracker, Memfd) {
    let (mut mem, mut t) = setup();
    let mut f = Memfd::new(true);
    for &(off, len, _) in extents {
        f.write(&mut mem, off, &data(9, off, len as usize)).unwrap();
    }
    f.truncate(&mut mem, size).unwrap();
    f.add_seals(crate::memfd::Seals::from_bits_retain(seals))
        .unwrap();
    f.preserve(&mut t).unwrap();
    (mem, t, f)
}

#[test]
fn a_sparse_file_stays_sparse_and_v2_is_small() {
    // 1 GiB with 1% written in scattered 4 KiB pages.
    let (mut mem, mut t) = setup();
    let mut f = Memfd::new(true);
    f.truncate(&mut mem, 1 << 30).unwrap();
    for i in 0..2621u64 {
        f.write(&mut mem, i * 100 * K + 17, &[i as u8; 100])
            .unwrap();
    }
    assert_eq!(f.folio_count(), 2621);
    f.preserve(&mut t).unwrap();
    let before = mem.allocated;
    let w2 = v2::write(&f, &mut mem, &mut t).unwrap();
    // Only the record array was allocated: nothing for the holes.
    let arr = w2.array.as_ref().unwrap();
    assert_eq!(
        mem.allocated - before,
        (arr.blocks().len() + arr.chain_pages().len()) as u64
    );
    assert_eq!(arr.blocks().len(), (2621 * 16usize).div_ceil(4096));
    // One physical run: 72 bytes, no array, nothing allocated.
    let (mut mem, mut t, f) = handed(&[(0, 64 << 20, 0)], 64 << 20, seal::WRITE.bits());
    let before = mem.allocated;
    let w = v2::write(&f, &mut mem, &mut t).unwrap();
    assert_eq!(f.extents().len(), 1, "{:?}", f.extents());
    assert_eq!(
        (w.desc.len(), w.array.is_none(), mem.allocated),
        (72, true, before)
    );
    let mut claims = mem.hand_over(&t).unwrap();
    let g = v2::read(&w.desc, &mut mem, &[RAM], &[SCRATCH], &mut claims).unwrap();
    assert_eq!(g.extents(), f.extents());
    assert_eq!(g.seals().bits(), seal::WRITE.bits());
    // v1 refuses the sealed file rather than dropping its seals.
    assert_eq!(
        v1::write(&f, &mut mem, &mut t).unwrap_err(),
        MemfdError::Unrepresentable
    );
}

#[test]
fn a_preserved_file_keeps_its_folios() {
    let (mut mem, _t, mut f) = handed(&[(0, 10000, 0)], 10000, 0);
    f.write(&mut mem, 0, &[1; 100]).unwrap();
    assert_eq!(
        f.write(&mut mem, 20000, &[1]),
        Err(MemfdError::Preserved { preserved: true })
    );
    assert_eq!(
        f.truncate(&mut mem, 10),
        Err(MemfdError::Preserved { preserved: true })
    );
    assert_eq!(
        f.punch(&mut mem, 0, 8192),
        Err(MemfdError::Preserved { preserved: true })
    );
    assert_eq!(
        v1::write(&Memfd::new(true), &mut mem, &mut Tracker::new(&[]).unwrap()).unwrap_err(),
        MemfdError::Preserved { preserved: false }
    );
}

/// The bytes of record `i` in a v1 or v2 array or inline descriptor.
enum Where {
    V1,
    V2Array,
    V2Inline,
}

/// Writes `f` in a format, applies `corrupt` to the record words
/// (`(word0, word1)` of record `i`) or to the header, reads it back and
/// returns the error. Checks that nothing stays claimed and that every
/// folio of the file would be freed at finish.
fn corrupt_read(
    f: &Memfd,
    mem: &mut HostMem,
    t: &mut Tracker,
    place: Where,
    corrupt: &dyn Fn(&mut [u8], &mut Vec<(u64, u64)>),
) -> MemfdError {
    let w = match place {
        Where::V1 => v1::write(f, mem, t).unwrap(),
        _ => v2::write(f, mem, t).unwrap(),
    };
    let mut desc = w.desc.clone();
    let hdr = match place {
        Where::V1 => core::mem::size_of::<v1::Header>(),
        _ => core::mem::size_of::<v2::Header>(),
    };
    let mut words: Vec<(u64, u64)> = match (&place, &w.array) {
        (Where::V2Inline, _) => desc[hdr..]
            .chunks(16)
            .map(|c| {
                (
                    u64::from_le_bytes(c[..8].try_into().unwrap()),
                    u64::from_le_bytes(c[8..].try_into().unwrap()),
                )
            })
            .collect(),
        (_, Some(a)) => {
            let mut v = vec![];
            for b in a.blocks() {
                for c in mem.frame(*b).unwrap().chunks(16) {
                    v.push((
                        u64::from_le_bytes(c[..8].try_into().unwrap()),
                        u64::from_le_bytes(c[8..].try_into().unwrap()),
                    ));
                }
            }
            v
        }
        _ => vec![],
    };
    let n0 = words.len();
    let words0 = words.clone();
    corrupt(&mut desc, &mut words);
    match (&place, &w.array) {
        (Where::V2Inline, _) => {
            desc.truncate(hdr);
            for (a, b) in &words {
                desc.extend_from_slice(&a.to_le_bytes());
                desc.extend_from_slice(&b.to_le_bytes());
            }
        }
        (_, Some(a)) => {
            assert_eq!(words.len(), n0, "array records are edited in place");
            let mut sum = crate::csum::Sum64::new();
            for (i, blk) in a.blocks().iter().enumerate() {
                let fr = mem.frame_mut(*blk).unwrap();
                for (j, c) in fr.chunks_mut(16).enumerate() {
                    let (x, y) = words[i * 256 + j];
                    c[..8].copy_from_slice(&x.to_le_bytes());
                    c[8..].copy_from_slice(&y.to_le_bytes());
                    sum.bytes(&x.to_le_bytes());
                    sum.bytes(&y.to_le_bytes());
                }
            }
            // Resealed (the array root ends the header), so the checks
            // behind the checksum are what is tested.
            if words != words0 {
                desc[hdr - 8..hdr].copy_from_slice(&sum.finish().to_le_bytes());
            }
        }
        _ => {}
    }
    let mut claims: Claims = mem.hand_over(t).unwrap();
    let r = match place {
        Where::V1 => v1::read(&desc, mem, &[RAM], &[SCRATCH], &mut claims),
        _ => v2::read(&desc, mem, &[RAM], &[SCRATCH], &mut claims),
    };
    let e = r.unwrap_err();
    // Nothing adopted: every folio goes back to the allocator at finish.
    assert_eq!(claims.data_pages(), 0, "{e}");
    for fo in f.folios() {
        assert!(
            claims
                .to_free()
                .any(|r| r.covers(Range::new(fo.phys, fo.phys + (K << fo.order))))
        );
    }
    e
}

#[test]
fn every_bad_record_is_refused_and_nothing_is_adopted() {
    let shape = [(0, 3 << 20, 0), (5 << 20, 8192, 0), (7 << 20, 70 << 10, 0)];
    let size = 8 << 20;
    type Edit = Box<dyn Fn(&mut [u8], &mut Vec<(u64, u64)>)>;
    let cases: Vec<(&str, Edit, fn(&MemfdError) -> bool)> = vec![
        (
            "frame outside preserved memory",
            Box::new(|_, w| w[1].0 = (w[1].0 & !((1 << 52) - 1)) | (0x1f00_0000 >> 12)),
            |e| {
                matches!(
                    e,
                    MemfdError::Claim {
                        why: ClaimError::NotPreserved { .. },
                        ..
                    }
                )
            },
        ),
        (
            "frame in scratch",
            Box::new(|_, w| w[1].0 = (w[1].0 & !((1 << 52) - 1)) | (0x40_0000 >> 12)),
            |e| {
                matches!(
                    e,
                    MemfdError::Claim {
                        why: ClaimError::InScratch { .. },
                        ..
                    }
                )
            },
        ),
        (
            "two records, one frame",
            Box::new(|_, w| {
                let f0 = w[0].0;
                w[2].0 = f0;
            }),
            |e| {
                matches!(
                    e,
                    MemfdError::Claim {
                        why: ClaimError::Twice { .. },
                        ..
                    } | MemfdError::Misaligned { .. }
                )
            },
        ),
        (
            "order larger than the block",
            Box::new(|_, w| w[1].0 = (w[1].0 & !flag::ORDER_MASK) | (9 << flag::ORDER_SHIFT)),
            |e| {
                matches!(
                    e,
                    MemfdError::Misaligned { .. }
                        | MemfdError::Claim { .. }
                        | MemfdError::Overlap { .. }
                        | MemfdError::PastEnd { .. }
                )
            },
        ),
        (
            "order above 9",
            Box::new(|_, w| w[0].0 = (w[0].0 & !flag::ORDER_MASK) | (10 << flag::ORDER_SHIFT)),
            |e| matches!(e, MemfdError::BadOrder { order: 10, .. }),
        ),
        ("unknown flag", Box::new(|_, w| w[1].0 |= 1 << 62), |e| {
            matches!(e, MemfdError::UnknownFlag { record: 1, .. })
        }),
        (
            "overlapping file indexes",
            Box::new(|_, w| {
                let i0 = w[0].1;
                w[1].1 = i0;
            }),
            |e| matches!(e, MemfdError::Overlap { record: 1 }),
        ),
        (
            "record past the size",
            Box::new(|_, w| {
                let n = w.iter().rposition(|x| x.0 != 0).unwrap();
                w[n].1 += 4096;
            }),
            |e| {
                matches!(
                    e,
                    MemfdError::PastEnd { .. } | MemfdError::Misaligned { .. }
                )
            },
        ),
    ];
    for which in 0..3 {
        for (name, edit, want) in &cases {
            let place = [Where::V1, Where::V2Array, Where::V2Inline]
                .into_iter()
                .nth(which)
                .unwrap();
            // Fragment the file so that v2 needs several records: free every
            // other 64 KiB folio... (shape gives 2 MiB, 1 MiB of 64 KiB,
            // then small ones).
            let (mut mem, mut t, f) = handed(&shape, size, 0);
            let inline = matches!(place, Where::V2Inline);
            if inline {
                // Few enough records to sit inline: a smaller file.
                let (m2, t2, f2) = handed(
                    &[(0, 2 << 20, 0), (4 << 20, 4096, 0), (6 << 20, 4096, 0)],
                    size,
                    0,
                );
                mem = m2;
                t = t2;
                let e = corrupt_read(&f2, &mut mem, &mut t, place, &**edit);
                assert!(want(&e), "inline, {name}: {e}");
                continue;
            }
            let e = corrupt_read(&f, &mut mem, &mut t, place, &**edit);
            assert!(want(&e), "{name}: {e}");
        }
    }
}

#[test]
fn a_bad_descriptor_is_refused() {
    let (mut mem, mut t, f) = handed(&[(0, 40000, 0)], 40000, 0);
    let w1 = v1::write(&f, &mut mem, &mut t).unwrap();
    let (mut mem2, mut t2, f2) = handed(&[(0, 40000, 0)], 40000, seal::GROW.bits());
    let w2 = v2::write(&f2, &mut mem2, &mut t2).unwrap();
    let read1 = |mem: &mut HostMem, t: &Tracker, d: &[u8]| {
        let mut c = mem.hand_over(t).unwrap();
        let e = v1::read(d, mem, &[RAM], &[SCRATCH], &mut c).unwrap_err();
        assert_eq!(c.data_pages(), 0);
        e
    };
    let read2 = |mem: &mut HostMem, t: &Tracker, d: &[u8]| {
        let mut c = mem.hand_over(t).unwrap();
        let e = v2::read(d, mem, &[RAM], &[SCRATCH], &mut c).unwrap_err();
        assert_eq!(c.data_pages(), 0);
        e
    };
    // Lengths.
    assert_eq!(
        read1(&mut mem, &t, &w1.desc[..39]),
        MemfdError::BadHeader("length")
    );
    assert_eq!(
        read2(&mut mem2, &t2, &w2.desc[..47]),
        MemfdError::BadHeader("length")
    );
    // A count that disagrees with the header.
    let mut h = v1::Header::read_from_bytes(&w1.desc).unwrap();
    h.folios = (f.folio_count() + 1).into();
    assert_eq!(read1(&mut mem, &t, h.as_bytes()), MemfdError::CountMismatch);
    h.folios = (f.folio_count() - 1).into();
    assert_eq!(read1(&mut mem, &t, h.as_bytes()), MemfdError::CountMismatch);
    h.folios = 0.into();
    assert_eq!(read1(&mut mem, &t, h.as_bytes()), MemfdError::BadArray);
    // An array of another shape than the records need: a spare block, an
    // order-1 block, no checksum.
    let mut h = v1::Header::read_from_bytes(&w1.desc).unwrap();
    h.array.blocks = (h.array.blocks.get() + 1).into();
    assert_eq!(read1(&mut mem, &t, h.as_bytes()), MemfdError::BadArray);
    let mut h = v1::Header::read_from_bytes(&w1.desc).unwrap();
    h.array.order = 1.into();
    assert_eq!(read1(&mut mem, &t, h.as_bytes()), MemfdError::BadArray);
    let mut h = v1::Header::read_from_bytes(&w1.desc).unwrap();
    h.array.flags = 0.into();
    h.array.sum = 0.into();
    assert_eq!(read1(&mut mem, &t, h.as_bytes()), MemfdError::BadArray);
    // Size below the records, and above the largest file.
    let mut h = v1::Header::read_from_bytes(&w1.desc).unwrap();
    h.size = 4096.into();
    assert!(matches!(
        read1(&mut mem, &t, h.as_bytes()),
        MemfdError::PastEnd { .. }
    ));
    h.size = (MAX_SIZE + 1).into();
    assert_eq!(
        read1(&mut mem, &t, h.as_bytes()),
        MemfdError::BadHeader("size")
    );
    // v2: an unknown seal, reserved flags, inline count.
    let (h2, rest) = v2::Header::read_from_prefix(&w2.desc).unwrap();
    let with = |h: v2::Header| [h.as_bytes(), rest].concat();
    let mut h = h2;
    h.seals = (seal::GROW.bits() | 0x100).into();
    assert_eq!(
        read2(&mut mem2, &t2, &with(h)),
        MemfdError::UnknownSeal { bits: 0x100 }
    );
    let mut h = h2;
    h.flags = 1.into();
    assert_eq!(
        read2(&mut mem2, &t2, &with(h)),
        MemfdError::BadHeader("flags")
    );
    let mut h = h2;
    h.records = (h2.records.get() + 1).into();
    assert_eq!(read2(&mut mem2, &t2, &with(h)), MemfdError::CountMismatch);
    // A vmalloc root in the header with inline records too.
    let mut h = h2;
    h.array = VmallocRoot {
        first: 0x300_0000.into(),
        blocks: 1.into(),
        order: 0.into(),
        flags: 0.into(),
        sum: 0.into(),
    };
    assert_eq!(read2(&mut mem2, &t2, &with(h)), MemfdError::CountMismatch);
    let _ = &mut t;
}

#[test]
fn restoring_leaks_nothing_when_one_file_fails() {
    // Two files; the second one's record is corrupted. The first is adopted,
    // the second's folios are all unclaimed, and freeing what is unclaimed
    // plus the first file brings the allocator back to where it was.
    let (mut mem, mut t) = setup();
    let free0 = mem.free_bytes();
    let mut a = Memfd::new(true);
    a.write(&mut mem, 0, &data(1, 0, 300_000)).unwrap();
    let mut b = Memfd::new(true);
    b.write(&mut mem, 0, &data(2, 0, 3 << 20)).unwrap();
    a.preserve(&mut t).unwrap();
    b.preserve(&mut t).unwrap();
    let wa = v2::write(&a, &mut mem, &mut t).unwrap();
    let wb = v2::write(&b, &mut mem, &mut t).unwrap();
    let mut db = wb.desc.clone();
    let h = core::mem::size_of::<v2::Header>();
    db[h + 16 + 8..h + 16 + 16].copy_from_slice(&0u64.to_le_bytes()); // overlaps record 0
    let mut claims = mem.hand_over(&t).unwrap();
    let ga = v2::read(&wa.desc, &mut mem, &[RAM], &[SCRATCH], &mut claims).unwrap();
    assert!(matches!(
        v2::read(&db, &mut mem, &[RAM], &[SCRATCH], &mut claims),
        Err(MemfdError::Overlap { record: 1 })
    ));
    assert_eq!(claims.data_pages(), a.allocated_bytes() / K);
    // Finish: free everything preserved and not adopted (a's array, all of
    // b), then the program frees a.
    let unclaimed: Vec<Range> = claims.finish();
    for r in unclaimed {
        let mut p = r.start;
        while p < r.end {
            mem.free_frames(p, 0);
            p += K;
        }
    }
    ga.free(&mut mem);
    assert_eq!(mem.free_bytes(), free0, "nothing leaked");
    let _ = wb;
}

#[test]
fn a_record_naming_its_own_array_is_refused() {
    // Before, the array's pages were released before the records were
    // adopted, so a record naming one was accepted and the file started
    // with the array's bytes. Now they are metadata: `Twice`, for a block
    // and for a chain page, in both formats.
    for v in [1, 2] {
        for target in ["block", "chain"] {
            let (mut mem, mut t, f) =
                handed(&[(0, 64 << 10, 0), (1 << 20, 64 << 10, 0)], 2 << 20, 0);
            let w = if v == 1 {
                v1::write(&f, &mut mem, &mut t).unwrap()
            } else {
                // Enough runs for an array: one record per 4 KiB folio.
                let (m2, t2, f2) = handed(
                    &(0..8).map(|i| (i * 0x20000, 4096, 0)).collect::<Vec<_>>(),
                    1 << 20,
                    0,
                );
                (mem, t) = (m2, t2);
                v2::write(&f2, &mut mem, &mut t).unwrap()
            };
            let arr = w.array.as_ref().unwrap();
            let phys = match target {
                "block" => arr.blocks()[0],
                _ => arr.chain_pages()[0],
            };
            let hdr = if v == 1 {
                core::mem::size_of::<v1::Header>()
            } else {
                core::mem::size_of::<v2::Header>()
            };
            // The first record names the page (as an order-0 folio).
            let blk = arr.blocks()[0];
            let fr = mem.frame_mut(blk).unwrap();
            let word = (phys >> 12) | flag::DIRTY | flag::UPTODATE;
            fr[..8].copy_from_slice(&word.to_le_bytes());
            let sum = crate::csum::sum64(mem.frame(blk).unwrap());
            let mut desc = w.desc.clone();
            desc[hdr - 8..hdr].copy_from_slice(&sum.to_le_bytes());
            let mut claims = mem.hand_over(&t).unwrap();
            let r = if v == 1 {
                v1::read(&desc, &mut mem, &[RAM], &[SCRATCH], &mut claims)
            } else {
                v2::read(&desc, &mut mem, &[RAM], &[SCRATCH], &mut claims)
            };
            assert!(
                matches!(
                    r,
                    Err(MemfdError::Claim {
                        why: crate::claims::ClaimError::Twice { .. },
                        ..
                    })
                ),
                "v{v} {target}: {r:?}"
            );
            assert_eq!(claims.data_pages(), 0);
        }
    }
}

/// A flipped byte anywhere in a record array is reported as what it is, a
/// checksum failure, whatever the changed record would have broken first
/// (a folio outside preserved memory, a count that disagrees), in both
/// formats; and nothing stays claimed.
#[test]
fn a_flip_in_a_record_array_is_a_checksum_failure() {
    for v in [1, 2] {
        // Eight separate 4 KiB folios: a record each, in an array.
        let (mut mem, mut t, f) = handed(
            &(0..8).map(|i| (i * 0x20000, 4096, 0)).collect::<Vec<_>>(),
            1 << 20,
            0,
        );
        let w = if v == 1 {
            v1::write(&f, &mut mem, &mut t).unwrap()
        } else {
            v2::write(&f, &mut mem, &mut t).unwrap()
        };
        let blk = w.array.as_ref().unwrap().blocks()[0];
        let preserved: Vec<Range> = mem.hand_over(&t).unwrap().preserved().collect();
        let read = |mem: &mut HostMem| {
            let mut claims = Claims::new(preserved.iter().copied(), &[SCRATCH]).unwrap();
            let r = if v == 1 {
                v1::read(&w.desc, mem, &[RAM], &[SCRATCH], &mut claims).map(|_| ())
            } else {
                v2::read(&w.desc, mem, &[RAM], &[SCRATCH], &mut claims).map(|_| ())
            };
            (r, claims.data_pages())
        };
        assert_eq!(read(&mut mem), (Ok(()), 8), "v{v} unchanged");
        for at in 0..4096 {
            for x in [0x01u8, 0x80] {
                mem.frame_mut(blk).unwrap()[at] ^= x;
                let (r, data) = read(&mut mem);
                mem.frame_mut(blk).unwrap()[at] ^= x;
                assert_eq!(
                    r,
                    Err(MemfdError::Vmalloc(crate::vmalloc::VmallocError::BadSum)),
                    "v{v}: byte {at} ^ {x:#x}"
                );
                assert_eq!(data, 0, "v{v}: byte {at}: claims left");
            }
        }
    }
}
