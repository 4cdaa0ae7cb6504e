//! Tracker tests: property tests against a plain model, the handover round
//! trip, and corrupted handovers.

use super::chain::{self as tracker_chain, PAGE_BYTES, PageSink, PageSource, Reader, TrackerRoot};
use super::*;
use crate::chain::ChainError;
use crate::platform::host::HostMem;
use crate::platform::{FrameAlloc, PhysMem};
use crate::reserve::{Kept, ReserveLog};
use proptest::prelude::*;
use std::boxed::Box;
use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

const PAGE: u64 = 4096;

/// The model: preserved blocks by start address.
#[derive(Default, Clone, Debug)]
struct Model {
    blocks: BTreeMap<u64, u32>,
    scratch: Vec<Range>,
}

fn size(order: u32) -> u64 {
    PAGE << order
}

impl Model {
    fn check(&self, phys: u64, order: u32) -> Result<(), TrackerError> {
        if order > MAX_ORDER {
            return Err(TrackerError::OrderTooLarge { order });
        }
        if !phys.is_multiple_of(size(order)) {
            return Err(TrackerError::Misaligned { phys, order });
        }
        if phys + size(order) > 1 << PHYS_BITS {
            return Err(TrackerError::OutOfRange { phys });
        }
        Ok(())
    }

    fn preserve(&mut self, phys: u64, order: u32) -> Result<(), TrackerError> {
        self.check(phys, order)?;
        let r = Range::new(phys, phys + size(order));
        if self.scratch.iter().any(|s| s.overlaps(&r)) {
            return Err(TrackerError::InScratch { phys, order });
        }
        if self.blocks.get(&phys) == Some(&order) {
            return Err(TrackerError::AlreadyPreserved { phys, order });
        }
        if self
            .blocks
            .iter()
            .any(|(&p, &o)| Range::new(p, p + size(o)).overlaps(&r))
        {
            return Err(TrackerError::Overlap { phys, order });
        }
        self.blocks.insert(phys, order);
        Ok(())
    }

    fn unpreserve(&mut self, phys: u64, order: u32) -> Result<(), TrackerError> {
        self.check(phys, order)?;
        if self.blocks.get(&phys) != Some(&order) {
            return Err(TrackerError::NotPreserved { phys, order });
        }
        self.blocks.remove(&phys);
        Ok(())
    }

    fn preserve_range(&mut self, start: u64, end: u64) -> Result<(), TrackerError> {
        if end <= start || !start.is_multiple_of(PAGE) || !end.is_multiple_of(PAGE) {
            return Err(TrackerError::BadRange { start, end });
        }
        let saved = self.blocks.clone();
        let mut p = start;
        while p < end {
            let o = block_order(p, end);
            if let Err(e) = self.preserve(p, o) {
                self.blocks = saved;
                return Err(e);
            }
            p += size(o);
        }
        Ok(())
    }

    fn is_preserved(&self, a: u64) -> bool {
        self.blocks.iter().any(|(&p, &o)| p <= a && a < p + size(o))
    }

    fn ranges(&self) -> Vec<Range> {
        let mut out: Vec<Range> = Vec::new();
        for (&p, &o) in &self.blocks {
            match out.last_mut() {
                Some(l) if l.end == p => l.end = p + size(o),
                _ => out.push(Range::new(p, p + size(o))),
            }
        }
        out
    }
}

#[derive(Clone, Debug)]
enum Op {
    Preserve(u64, u32),
    Unpreserve(u64, u32),
    PreserveRange(u64, u64),
    UnpreserveRange(u64, u64),
    Query(u64),
    /// Whether any page of `[start, end)` (bytes) is preserved.
    Holds(u64, u64),
}

/// Addresses in two 64 MiB windows (32 regions each, in two chunks) so
/// blocks collide often; orders mostly small, some large, some invalid.
fn op() -> impl Strategy<Value = Op> {
    let order = prop_oneof![6 => 0u32..4, 3 => 4u32..9, 2 => 9u32..12, 1 => 17u32..20];
    let addr = (0u64..2, 0u64..(64 << 20) / PAGE).prop_map(|(w, p)| w * (3 << 30) + p * PAGE);
    prop_oneof![
        6 => (addr.clone(), order.clone()).prop_map(|(a, o)| Op::Preserve(a & !(size(o.min(18)) - 1), o)),
        1 => (addr.clone(), order.clone()).prop_map(|(a, o)| Op::Preserve(a | PAGE, o)),
        3 => (addr.clone(), order).prop_map(|(a, o)| Op::Unpreserve(a & !(size(o.min(18)) - 1), o)),
        2 => (addr.clone(), 1u64..2000).prop_map(|(a, n)| Op::PreserveRange(a, a + n * PAGE)),
        1 => (addr.clone(), 1u64..2000).prop_map(|(a, n)| Op::UnpreserveRange(a, a + n * PAGE)),
        2 => (0u64..(64 << 20)).prop_map(Op::Query),
        // Byte ranges (not page-aligned), some across the gap between the
        // windows (more than 8 GiB: the chunk path).
        2 => (addr.clone(), 1u64..(4 << 20)).prop_map(|(a, n)| Op::Holds(a + 5, a + 5 + n)),
        1 => (0u64..(64 << 20), 1u64..(16 << 30)).prop_map(|(a, n)| Op::Holds(a, a + n)),
    ]
}

fn run_ops(ops: &[Op], scratch: &[Range], dense_at: usize) -> Result<(), TestCaseError> {
    let mut t = Tracker::with_dense_threshold(scratch, dense_at).unwrap();
    let mut m = Model {
        scratch: scratch.to_vec(),
        ..Model::default()
    };
    // Ranges preserved with preserve_range, to unpreserve them likewise.
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for op in ops {
        match *op {
            Op::Preserve(a, o) => prop_assert_eq!(
                t.preserve(a, o),
                m.preserve(a, o),
                "preserve {:#x} {}",
                a,
                o
            ),
            Op::Unpreserve(a, o) => prop_assert_eq!(
                t.unpreserve(a, o),
                m.unpreserve(a, o),
                "unpreserve {:#x} {}",
                a,
                o
            ),
            Op::PreserveRange(s, e) => {
                let r = t.preserve_range(s, e);
                prop_assert_eq!(r, m.preserve_range(s, e), "range {:#x}..{:#x}", s, e);
                if r.is_ok() {
                    ranges.push((s, e));
                }
            }
            Op::UnpreserveRange(s, e) => {
                // Either a range we preserved, or an arbitrary one.
                let (s, e) = ranges.pop().unwrap_or((s, e));
                let want_ok = {
                    let mut p = s;
                    let mut ok = true;
                    while p < e {
                        let o = block_order(p, e);
                        ok &= m.blocks.get(&p) == Some(&o);
                        p += size(o);
                    }
                    ok
                };
                let r = t.unpreserve_range(s, e);
                prop_assert_eq!(
                    r.is_ok(),
                    want_ok,
                    "unpreserve range {:#x}..{:#x}: {:?}",
                    s,
                    e,
                    r
                );
                if want_ok {
                    let mut p = s;
                    while p < e {
                        let o = block_order(p, e);
                        m.blocks.remove(&p);
                        p += size(o);
                    }
                }
            }
            Op::Query(a) => prop_assert_eq!(t.is_preserved(a), m.is_preserved(a), "query {:#x}", a),
            Op::Holds(s, e) => {
                let r = Range::new(s, e);
                let want = m
                    .blocks
                    .iter()
                    .any(|(&p, &o)| r.overlaps(&Range::new(p, p + size(o))));
                prop_assert_eq!(t.holds_any(r), want, "holds {}", r);
            }
        }
        prop_assert_eq!(t.blocks(), m.blocks.len() as u64);
        prop_assert_eq!(
            t.pages(),
            m.blocks.values().map(|&o| 1u64 << o).sum::<u64>()
        );
        prop_assert_eq!(t.sum(), t.sum_again(), "the kept sum");
        prop_assert_eq!(t.pages(), t.count_pages(), "the kept count");
    }
    prop_assert_eq!(t.ranges().unwrap(), m.ranges());
    // The handover carries exactly the same ranges.
    let mut mem = mem_at(1 << 40);
    let root = tracker_chain::write(&t, &mut mem).unwrap();
    let ram = [Range::new(0, 1 << 41)];
    let (pages, got, sum) = restore(&Reader::new(&mem, root, &ram, scratch)).unwrap();
    prop_assert_eq!(&got, &m.ranges());
    prop_assert_eq!(sum.pages, t.pages());
    prop_assert_eq!(pages.len() as u32, root.pages.get());
    prop_assert_eq!(unbuffered_differs(&t, &mem, root), None);
    // Handed over as it lies: the same ranges, and its pages (and nothing
    // else) as metadata.
    let mut mem = mem_at(1 << 40);
    mem.lend_frames();
    let pages = t.pages();
    let root = t.hand_over_in_place(&mut mem).unwrap();
    prop_assert_eq!(root.preserved_pages.get(), pages);
    t.hand_back(&mut mem);
    let mut log = ReserveLog::new();
    let s = super::inplace::restore(&mem, &root, &ram, scratch, &mut log).unwrap();
    prop_assert_eq!(log.of(Kept::Preserved).collect::<Vec<_>>(), m.ranges());
    prop_assert_eq!(s.pages, pages);
    let meta: Vec<u64> = log.of(Kept::Metadata).map(|r| r.start).collect();
    prop_assert_eq!(meta.len() as u64, mem.allocated);
    Ok(())
}

/// Writes `t` again without the writer's buffer (its out-of-memory path)
/// and compares with the chain `root` in `mem`: the first chain page that
/// differs, if any.
fn unbuffered_differs(t: &Tracker, mem: &FakeMem, root: TrackerRoot) -> Option<u64> {
    let mut again = mem_at(1 << 40);
    let root2 = tracker_chain::write_unbuffered(t, &mut again).unwrap();
    if root2 != root {
        return Some(0);
    }
    let mut phys = root.first_page.get();
    while phys != 0 {
        let page = mem.frame(phys).unwrap();
        if again.frame(phys) != Some(page) {
            return Some(phys);
        }
        phys = u64::from_le_bytes(page[8..16].try_into().unwrap());
    }
    None
}

#[test]
fn the_unbuffered_writer_writes_the_same_chain() {
    let (t, mem, root) = sample();
    assert_eq!(unbuffered_differs(&t, &mem, root), None);
    // Many pages, bitmaps and extents meeting page ends, extents coalesced
    // across regions: every region of 2 GiB gets a pattern of its own.
    let mut t = Tracker::new(&[]).unwrap();
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    for r in 0..1024u64 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let runs = s % 16;
        for k in 0..runs {
            let off = (k * 32 + (s >> 8) % 16) % 512;
            let _ = t.preserve((r << 21) + off * PAGE, 0);
        }
        if s.is_multiple_of(5) {
            // A region ending full, the next starting full: one extent.
            t.preserve_range((r << 21) + 500 * PAGE, (r << 21) + 516 * PAGE)
                .unwrap_or(());
        }
    }
    let mut mem = mem_at(1 << 40);
    let root = tracker_chain::write(&t, &mut mem).unwrap();
    assert!(root.pages.get() > 3, "{root:?}");
    assert_eq!(unbuffered_differs(&t, &mem, root), None);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn tracker_matches_model(ops in proptest::collection::vec(op(), 1..120)) {
        run_ops(&ops, &[], DENSE_AT)?;
    }

    #[test]
    fn tracker_matches_model_with_scratch(ops in proptest::collection::vec(op(), 1..120)) {
        run_ops(&ops, &[Range::new(8 << 20, 12 << 20), Range::new(40 << 20, (40 << 20) + 3 * PAGE)], DENSE_AT)?;
    }

    /// The same, with chunks made dense after a few leaves, so operations
    /// run on both representations and across the change.
    #[test]
    fn tracker_matches_model_dense(ops in proptest::collection::vec(op(), 1..120), dense_at in 1usize..4) {
        run_ops(&ops, &[], dense_at)?;
    }

    #[test]
    fn tracker_matches_model_dense_with_scratch(ops in proptest::collection::vec(op(), 1..120), dense_at in 1usize..4) {
        run_ops(&ops, &[Range::new(8 << 20, 12 << 20), Range::new(40 << 20, (40 << 20) + 3 * PAGE)], dense_at)?;
    }
}

#[test]
fn strict_errors() {
    let mut t = Tracker::new(&[Range::new(0x100_0000, 0x200_0000)]).unwrap();
    let mb2 = 2 << 20;
    assert_eq!(
        t.preserve(0x1000, 19),
        Err(TrackerError::OrderTooLarge { order: 19 })
    );
    assert_eq!(
        t.preserve(0x1000, 1),
        Err(TrackerError::Misaligned {
            phys: 0x1000,
            order: 1
        })
    );
    assert_eq!(
        t.preserve(1 << 52, 0),
        Err(TrackerError::OutOfRange { phys: 1 << 52 })
    );
    // At the very top of the address space, with scratch to check.
    for (phys, order) in [(!0xfff, 0), (!0x1f_ffff, 9), (!0x3fff_ffff, 18)] {
        assert_eq!(
            t.preserve(phys, order),
            Err(TrackerError::OutOfRange { phys })
        );
        assert!(!t.is_preserved(phys) && !t.is_block(phys, order));
        assert_eq!(
            t.unpreserve(phys, order),
            Err(TrackerError::OutOfRange { phys })
        );
    }
    assert_eq!(
        t.preserve(0x100_0000, 0),
        Err(TrackerError::InScratch {
            phys: 0x100_0000,
            order: 0
        })
    );
    // A 32 MiB block that reaches into scratch; a 16 MiB one ends at it.
    assert_eq!(
        t.preserve(0, 13),
        Err(TrackerError::InScratch { phys: 0, order: 13 })
    );
    t.preserve(0, 12).unwrap();
    t.unpreserve(0, 12).unwrap();
    t.preserve(0x20_0000, 9).unwrap();
    assert_eq!(
        t.preserve(0x20_0000, 9),
        Err(TrackerError::AlreadyPreserved {
            phys: 0x20_0000,
            order: 9
        })
    );
    // A page inside the preserved folio, and a folio over it.
    assert_eq!(
        t.preserve(0x20_1000, 0),
        Err(TrackerError::Overlap {
            phys: 0x20_1000,
            order: 0
        })
    );
    assert_eq!(
        t.preserve(0, 10),
        Err(TrackerError::Overlap { phys: 0, order: 10 })
    );
    // Small blocks, then a folio over them.
    t.preserve(0x40_3000, 0).unwrap();
    assert_eq!(
        t.preserve(0x40_0000, 2),
        Err(TrackerError::Overlap {
            phys: 0x40_0000,
            order: 2
        })
    );
    assert_eq!(
        t.preserve(0x40_0000, 9),
        Err(TrackerError::Overlap {
            phys: 0x40_0000,
            order: 9
        })
    );
    // Unpreserve must name exactly a preserved block.
    assert_eq!(
        t.unpreserve(0x20_1000, 0),
        Err(TrackerError::NotPreserved {
            phys: 0x20_1000,
            order: 0
        })
    );
    assert_eq!(
        t.unpreserve(0x20_0000, 8),
        Err(TrackerError::NotPreserved {
            phys: 0x20_0000,
            order: 8
        })
    );
    assert_eq!(
        t.unpreserve(0x40_2000, 1),
        Err(TrackerError::NotPreserved {
            phys: 0x40_2000,
            order: 1
        })
    );
    t.unpreserve(0x20_0000, 9).unwrap();
    assert!(!t.is_preserved(0x20_0000));
    assert!(t.is_preserved(0x40_3fff) && !t.is_preserved(0x40_4000));
    assert_eq!(
        t.preserve_range(0x1000, 0x1800),
        Err(TrackerError::BadRange {
            start: 0x1000,
            end: 0x1800
        })
    );
    // A range that runs into a preserved page preserves nothing.
    assert_eq!(
        t.preserve_range(0x40_0000, 0x40_8000),
        Err(TrackerError::Overlap {
            phys: 0x40_0000,
            order: 3
        })
    );
    assert_eq!(t.ranges().unwrap(), [Range::new(0x40_3000, 0x40_4000)]);
    // A gigabyte folio, and a page inside it.
    t.preserve(1 << 30, 18).unwrap();
    assert_eq!(
        t.preserve((1 << 30) + 5 * mb2, 0),
        Err(TrackerError::Overlap {
            phys: (1 << 30) + 5 * mb2,
            order: 0
        })
    );
    assert_eq!(t.pages(), 1 + (1 << 18));
}

#[test]
fn dense_region_becomes_a_leaf_and_back() {
    let mut t = Tracker::new(&[]).unwrap();
    for i in 0..512 {
        t.preserve(i * PAGE, 0).unwrap();
    }
    assert_eq!(t.ranges().unwrap(), [Range::new(0, 2 << 20)]);
    for i in 0..512 {
        t.unpreserve(i * PAGE, 0).unwrap();
    }
    assert!(t.ranges().unwrap().is_empty());
    assert_eq!(t.blocks(), 0);
    assert_eq!((t.leaves.live(), t.leaves.given_back()), (0, 1));
    // The leaf is reused.
    for i in 0..4 {
        t.preserve((8 << 20) + i * PAGE, 0).unwrap();
    }
    assert_eq!((t.leaves.live(), t.leaves.given_back()), (1, 0));
}

#[test]
fn a_chunk_made_dense_keeps_every_block_and_its_rules() {
    let mb2 = 2u64 << 20;
    let mut t = Tracker::with_dense_threshold(&[], 3).unwrap();
    // Region 0: inline; regions 1 to 3: leaves (the third makes the chunk
    // dense); region 4: a 2 MiB block; region 8: a 16 MiB block.
    t.preserve(5 * PAGE, 0).unwrap();
    t.preserve(4 * mb2, 9).unwrap();
    t.preserve(8 * mb2, 12).unwrap();
    for r in 1..4 {
        t.preserve(r * mb2, 1).unwrap();
        t.preserve(r * mb2 + 8 * PAGE, 3).unwrap();
    }
    assert!(t.table.is_dense(0));
    assert_eq!(t.blocks(), 1 + 1 + 1 + 6);
    assert_eq!(t.pages(), 1 + 512 + 4096 + 3 * 10);
    // The sparse leaves were given back.
    assert_eq!((t.leaves.live(), t.leaves.given_back()), (512, 3));
    // The same refusals as before.
    let e = |phys, order| Err(TrackerError::Overlap { phys, order });
    assert_eq!(t.preserve(4 * mb2 + PAGE, 0), e(4 * mb2 + PAGE, 0));
    assert_eq!(t.preserve(9 * mb2, 0), e(9 * mb2, 0));
    assert_eq!(t.preserve(8 * mb2, 9), e(8 * mb2, 9));
    assert_eq!(
        t.preserve(4 * mb2, 9),
        Err(TrackerError::AlreadyPreserved {
            phys: 4 * mb2,
            order: 9
        })
    );
    assert_eq!(
        t.preserve(5 * PAGE, 0),
        Err(TrackerError::AlreadyPreserved {
            phys: 5 * PAGE,
            order: 0
        })
    );
    assert_eq!(t.preserve(mb2 + PAGE, 0), e(mb2 + PAGE, 0));
    // Empty regions of a dense chunk take small and large blocks.
    t.preserve(20 * mb2 + 3 * PAGE, 0).unwrap();
    t.preserve(32 * mb2, 13).unwrap();
    // A large block leaves, and its regions take small blocks again.
    t.unpreserve(8 * mb2, 12).unwrap();
    t.preserve(9 * mb2 + PAGE, 0).unwrap();
    // A dense leaf emptied stays, and a large block may then cover it.
    t.unpreserve(20 * mb2 + 3 * PAGE, 0).unwrap();
    t.preserve(20 * mb2, 9).unwrap();
    assert_eq!(
        t.ranges().unwrap(),
        [
            Range::new(5 * PAGE, 6 * PAGE),
            Range::new(mb2, mb2 + 2 * PAGE),
            Range::new(mb2 + 8 * PAGE, mb2 + 16 * PAGE),
            Range::new(2 * mb2, 2 * mb2 + 2 * PAGE),
            Range::new(2 * mb2 + 8 * PAGE, 2 * mb2 + 16 * PAGE),
            Range::new(3 * mb2, 3 * mb2 + 2 * PAGE),
            Range::new(3 * mb2 + 8 * PAGE, 3 * mb2 + 16 * PAGE),
            Range::new(4 * mb2, 5 * mb2),
            Range::new(9 * mb2 + PAGE, 9 * mb2 + 2 * PAGE),
            Range::new(20 * mb2, 21 * mb2),
            Range::new(32 * mb2, 48 * mb2),
        ]
    );
    for r in [0, 4, 9, 20, 32, 47, 511] {
        assert!(t.table.is_dense(r));
    }
}

/// Physical memory made of boxed pages, with a bump page allocator.
/// The tests' physical memory: RAM and a frame pool from `base` on, 64 GiB.
pub(crate) type FakeMem = HostMem;

pub(crate) fn mem_at(base: u64) -> HostMem {
    HostMem::with_pool(Range::new(base, base + (1 << 36)))
}

/// Restores through a [`ReserveLog`]: the chain pages, the preserved ranges
/// and the summary. On an error, checks that nothing stayed reserved.
pub(crate) fn restore(
    reader: &Reader<'_, FakeMem>,
) -> Result<(Vec<u64>, Vec<Range>, tracker_chain::Summary), TrackerChainError> {
    let mut log = ReserveLog::new();
    match reader.restore(&mut log) {
        Ok(sum) => Ok((
            log.of(Kept::Metadata).map(|r| r.start).collect(),
            log.of(Kept::Preserved).collect(),
            sum,
        )),
        Err(e) => {
            assert!(log.ranges.is_empty(), "a failed restore left reservations");
            Err(e)
        }
    }
}

fn sample() -> (Tracker, FakeMem, TrackerRoot) {
    let mut t = Tracker::new(&[Range::new(0, 1 << 20)]).unwrap();
    // Extents, a checkerboard region (bitmap), a large block, many isolated
    // pages so that the chain spans several pages.
    t.preserve_range(0x10_0000, 0x30_0000).unwrap();
    for i in (0..512).step_by(2) {
        t.preserve((64 << 20) + i * PAGE, 0).unwrap();
    }
    t.preserve(1 << 30, 18).unwrap();
    for i in 0..1500u64 {
        t.preserve((8 << 30) + i * (3 << 20), 0).unwrap();
    }
    let mut mem = mem_at(1 << 40);
    let root = tracker_chain::write(&t, &mut mem).unwrap();
    (t, mem, root)
}

const RAM: [Range; 1] = [Range::new(0x1000, 1 << 41)];
const SCRATCH: [Range; 1] = [Range::new(0, 1 << 20)];

#[test]
fn handover_round_trip_and_sizes() {
    let (t, mem, root) = sample();
    assert_eq!(root.pages.get(), 3, "{root:?}");
    let (_, got, sum) = restore(&Reader::new(&mem, root, &RAM, &SCRATCH)).unwrap();
    assert_eq!(got, t.ranges().unwrap());
    assert_eq!(sum.records, root.records.get());
    // 1 extent for the range, 1 bitmap (9 words), 1 extent for the GiB,
    // 1500 extents for the isolated pages.
    assert_eq!(root.records.get(), 1 + 1 + 1 + 1500);
}

#[test]
fn a_run_past_the_physical_space_is_refused_even_if_ram_says_more() {
    let top = 1u64 << PHYS_BITS;
    let mut t = Tracker::new(&[]).unwrap();
    t.preserve(1 << 20, 0).unwrap();
    t.preserve(top - 2 * PAGE, 0).unwrap();
    let mut mem = mem_at(1 << 40);
    let root = tracker_chain::write(&t, &mut mem).unwrap();
    let all = [Range::new(0, u64::MAX)];
    assert!(Reader::new(&mem, root, &all, &[]).validate().is_ok());
    // Stretch the second extent to 2^23 pages: it now ends past 2^52.
    let page = mem.frame_mut(root.first_page.get()).unwrap();
    let w = u64::from_le_bytes(page[40..48].try_into().unwrap());
    page[40..48].copy_from_slice(&(w | 0x7f_ffff).to_le_bytes());
    crate::chain::reseal(page);
    let pfn = (top >> 12) - 2;
    assert_eq!(
        Reader::new(&mem, root, &all, &[]).validate(),
        Err(TrackerChainError::RangeNotInRam {
            range: Range::new(pfn << 12, (pfn + (1 << 23)) << 12)
        })
    );
}

/// Resealed after `f`: the checks behind the checksum are what is tested.
fn corrupt(f: impl Fn(&mut FakeMem, &mut TrackerRoot)) -> TrackerChainError {
    let (_, mut mem, mut root) = sample();
    f(&mut mem, &mut root);
    reseal_all(&mut mem);
    let mut log = ReserveLog::new();
    let e = Reader::new(&mem, root, &RAM, &SCRATCH)
        .restore(&mut log)
        .unwrap_err();
    assert!(
        log.ranges.is_empty(),
        "restore left reservations from a corrupted chain"
    );
    e
}

/// Recomputes the checksum of every written page.
fn reseal_all(mem: &mut FakeMem) {
    let keys: Vec<u64> = mem.written_frames().collect();
    for k in keys {
        crate::chain::reseal(mem.frame_mut(k).unwrap());
    }
}

fn first<'m>(mem: &'m mut FakeMem, root: &TrackerRoot) -> &'m mut [u8; PAGE_BYTES] {
    mem.frame_mut(root.first_page.get()).unwrap()
}

#[test]
fn a_changed_chain_page_fails_its_checksum_before_anything_is_read() {
    // Any byte of a page's header or used records, changed after the
    // writer sealed it: BadSum; any byte of its unused tail: DirtyTail (the
    // sum covers the used part, the tail must be zero). Nothing reserved.
    let (_, mem0, root) = sample();
    let pages: Vec<u64> = mem0.written_frames().collect();
    for &pg in &pages {
        let used = crate::chain::summed_len(mem0.frame(pg).unwrap());
        for at in [
            0usize,
            9,
            24,
            31,
            32,
            100,
            used - 1,
            used.min(PAGE_BYTES - 1),
            PAGE_BYTES - 1,
        ] {
            for x in [0x01u8, 0xff] {
                let (_, mut mem, root) = sample();
                mem.frame_mut(pg).unwrap()[at] ^= x;
                let mut log = ReserveLog::new();
                let e = Reader::new(&mem, root, &RAM, &SCRATCH).restore(&mut log);
                let want = if at < used {
                    ChainError::BadSum { phys: pg }
                } else {
                    ChainError::DirtyTail { phys: pg }
                };
                assert_eq!(
                    e.unwrap_err(),
                    TrackerChainError::Chain(want),
                    "page {pg:#x} byte {at} ^ {x:#x}"
                );
                assert!(log.ranges.is_empty());
            }
        }
    }
    let _ = root;
    // Resealed, data past the last word is still refused.
    let e = corrupt(|m, _| {
        let last = m.written_frames().max().unwrap();
        let page = m.frame_mut(last).unwrap();
        let n = u32::from_le_bytes(page[20..24].try_into().unwrap()) as usize;
        assert!(n < crate::chain::PAYLOAD_WORDS);
        page[32 + 8 * n] = 1;
    });
    assert!(
        matches!(e, TrackerChainError::Chain(ChainError::DirtyTail { .. })),
        "{e:?}"
    );
}

#[test]
fn corrupted_handovers_are_typed_errors() {
    use TrackerChainError::*;
    assert_eq!(corrupt(|_, r| r.pages = 0.into()), BadRoot);
    assert_eq!(corrupt(|_, r| r.flags = 1.into()), BadRoot);
    assert_eq!(
        corrupt(|_, r| r.first_page = (r.first_page.get() + 8).into()),
        Chain(ChainError::BadPage {
            phys: (1 << 40) + 8
        })
    );
    assert_eq!(
        corrupt(|_, r| r.first_page = (1u64 << 42).into()),
        Chain(ChainError::BadPage { phys: 1 << 42 })
    );
    assert_eq!(
        corrupt(|_, r| r.first_page = 0x8000.into()),
        Chain(ChainError::PageInScratch { phys: 0x8000 })
    );
    assert!(matches!(
        corrupt(|m, r| first(m, r)[0] ^= 1),
        Chain(ChainError::BadHeader { .. })
    ));
    assert!(matches!(
        corrupt(|m, r| first(m, r)[16] = 7),
        Chain(ChainError::BadSequence { expected: 0, .. })
    ));
    assert!(matches!(
        corrupt(|m, r| first(m, r)[20..24].copy_from_slice(&600u32.to_le_bytes())),
        Chain(ChainError::BadWords { .. })
    ));
    // A cycle: the second page points back to the first. Chain pages go up
    // in address, so a link back down is refused where it stands.
    assert!(matches!(
        corrupt(|m, r| {
            let second = u64::from_le_bytes(first(m, r)[8..16].try_into().unwrap());
            let fp = r.first_page.get();
            m.frame_mut(second).unwrap()[8..16].copy_from_slice(&fp.to_le_bytes());
        }),
        Chain(ChainError::NotAscending { .. })
    ));
    assert_eq!(
        corrupt(|_, r| r.pages = (r.pages.get() + 1).into()),
        Chain(ChainError::BadChainLength)
    );
    assert_eq!(
        corrupt(|_, r| r.pages = (r.pages.get() - 1).into()),
        Chain(ChainError::BadChainLength)
    );
    assert_eq!(
        corrupt(|_, r| r.records = (r.records.get() + 1).into()),
        CountMismatch
    );
    assert_eq!(corrupt(|_, r| r.preserved_pages = 7.into()), CountMismatch);
    // The first record (an extent at 1 MiB): point it into scratch, outside
    // RAM, and after the next record.
    let set_word = |m: &mut FakeMem, r: &TrackerRoot, i: usize, w: u64| {
        first(m, r)[32 + 8 * i..40 + 8 * i].copy_from_slice(&w.to_le_bytes());
    };
    let e = corrupt(|m, r| set_word(m, r, 0, (0xf0u64 << 23) | 0x1f));
    assert!(matches!(e, RangeInScratch { .. }), "{e:?}");
    let e = corrupt(|m, r| set_word(m, r, 0, ((1u64 << 39) << 23) | 3));
    assert!(matches!(e, RangeNotInRam { .. }), "{e:?}");
    let e = corrupt(|m, r| set_word(m, r, 0, (0x4_0000u64 << 23) | 3));
    assert!(matches!(e, Unordered { .. }), "{e:?}");
    // The bitmap record (word 1): misaligned region, and an empty bitmap.
    let e = corrupt(|m, r| {
        let w = u64::from_le_bytes(first(m, r)[40..48].try_into().unwrap());
        set_word(m, r, 1, w | (1 << 23));
    });
    assert!(matches!(e, BadRecord { word: 1, .. }), "{e:?}");
    let e = corrupt(|m, r| {
        for i in 2..10 {
            set_word(m, r, i, 0);
        }
    });
    assert!(matches!(e, BadRecord { word: 1, .. }), "{e:?}");
    // A page that the platform cannot read (RAM to this kernel, but not
    // to its memory access).
    let far = (1u64 << 40) + (1 << 37);
    let e = corrupt(|m, r| first(m, r)[8..16].copy_from_slice(&far.to_le_bytes()));
    assert_eq!(e, Chain(ChainError::BadPage { phys: far }));
}

/// The runs of a chain as its records state them (an extent, or each run
/// of a bitmap), in order: the plain decoding the reader's checks are
/// measured against.
fn written_runs(mem: &FakeMem, root: &TrackerRoot) -> Vec<Range> {
    let mut runs = Vec::new();
    let mut phys = root.first_page.get();
    while phys != 0 {
        let page = mem.frame(phys).unwrap();
        let word = |i: usize| u64::from_le_bytes(page[32 + 8 * i..40 + 8 * i].try_into().unwrap());
        let n = u32::from_le_bytes(page[20..24].try_into().unwrap()) as usize;
        let mut i = 0;
        while i < n {
            let w = word(i);
            let pfn = (w >> 23) & ((1 << 40) - 1);
            if w >> 63 == 0 {
                runs.push(Range::new(pfn * PAGE, (pfn + (w & 0x7f_ffff) + 1) * PAGE));
                i += 1;
            } else {
                let mut p = 0;
                while p < 512 {
                    let set = |p: u64| word(i + 1 + (p / 64) as usize) >> (p % 64) & 1 == 1;
                    if set(p) {
                        let s = p;
                        while p < 512 && set(p) {
                            p += 1;
                        }
                        runs.push(Range::new((pfn + s) * PAGE, (pfn + p) * PAGE));
                    } else {
                        p += 1;
                    }
                }
                i += 9;
            }
        }
        phys = u64::from_le_bytes(page[8..16].try_into().unwrap());
    }
    runs
}

/// A byte bound: anywhere near the 64 MiB test window (`Err`), or at an
/// edge of a written run, moved by a little (`Ok((run, end?, shift))`),
/// which is where a check that takes shortcuts would go wrong.
type Bound = Result<(usize, bool, i64), u64>;

fn bound() -> impl Strategy<Value = Bound> {
    let shift = prop_oneof![
        Just(0i64),
        Just(1),
        Just(-1),
        Just(PAGE as i64),
        Just(-(PAGE as i64)),
        Just(PAGE as i64 + 1),
        Just(-(PAGE as i64) - 1),
    ];
    prop_oneof![
        (any::<usize>(), any::<bool>(), shift).prop_map(Ok),
        (0u64..(70 << 20) / PAGE).prop_map(|p| Err(p * PAGE)),
        (0u64..(70 << 20)).prop_map(Err),
    ]
}

fn resolve(b: Bound, runs: &[Range]) -> u64 {
    match b {
        Err(x) => x,
        Ok(_) if runs.is_empty() => 0,
        Ok((k, end, d)) => {
            let r = runs[k % runs.len()];
            (if end { r.end } else { r.start }).saturating_add_signed(d)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// The reader accepts a chain exactly when every run it states lies
    /// inside one RAM range and clear of every scratch area, and otherwise
    /// names the first run that does not: the same as checking each run on
    /// its own, whatever shortcut it takes.
    #[test]
    fn range_checks_match_a_per_run_model(
        ops in proptest::collection::vec(op(), 1..80),
        ram in proptest::collection::vec((bound(), bound()), 1..4),
        all_ram in any::<bool>(),
        scratch in proptest::collection::vec((bound(), bound()), 0..3),
    ) {
        let mut t = Tracker::new(&[]).unwrap();
        for op in &ops {
            match *op {
                // The low window only, where RAM is drawn.
                Op::Preserve(a, o) => { let _ = t.preserve(a % (1 << 30), o); }
                Op::PreserveRange(s, e) => { let _ = t.preserve_range(s % (1 << 30), e % (1 << 30)); }
                _ => {}
            }
        }
        let mut mem = mem_at(1 << 40);
        let root = tracker_chain::write(&t, &mut mem).unwrap();
        let runs = written_runs(&mem, &root);
        let range = |&(a, b): &(Bound, Bound)| {
            let (a, b) = (resolve(a, &runs), resolve(b, &runs));
            Range::new(a.min(b), a.max(b))
        };
        let mut ram: Vec<Range> = ram.iter().map(range).collect();
        ram.push(Range::new(1 << 40, 1 << 41));
        if all_ram {
            // Only scratch can then refuse a run.
            ram.push(Range::new(0, 1 << 30));
        }
        let scratch: Vec<Range> = scratch.iter().map(range).collect();
        let want = runs
            .into_iter()
            .find_map(|r| {
                if r.end > 1 << PHYS_BITS || !ram.iter().any(|x| x.covers(r)) {
                    Some(TrackerChainError::RangeNotInRam { range: r })
                } else if scratch.iter().any(|s| s.overlaps(&r)) {
                    Some(TrackerChainError::RangeInScratch { range: r })
                } else {
                    None
                }
            });
        let got = Reader::new(&mem, root, &ram, &scratch).validate();
        match want {
            Some(e) => prop_assert_eq!(got, Err(e)),
            None => prop_assert!(got.is_ok(), "{:?}", got),
        }
    }

    #[test]
    fn random_corruption_never_panics_or_reserves_garbage(flips in proptest::collection::vec((0usize..4, 0usize..PAGE_BYTES, any::<u8>()), 1..6)) {
        let (t, mut mem, root) = sample();
        let keys: Vec<u64> = mem.written_frames().collect();
        for (p, at, x) in flips {
            let k = keys[p % keys.len()];
            mem.frame_mut(k).unwrap()[at] ^= x | 1;
        }
        if let Ok((_, got, _)) = restore(&Reader::new(&mem, root, &RAM, &SCRATCH)) {
            // A flip that still validates (a bit in padding) must not have
            // changed what is reserved beyond what the totals allow.
            let pages: u64 = got.iter().map(|r| r.len() / PAGE).sum();
            prop_assert_eq!(pages, t.pages());
            for r in &got {
                prop_assert!(!r.overlaps(&SCRATCH[0]));
            }
        }
    }

    #[test]
    fn random_bytes_as_a_chain_never_panic(bytes in proptest::collection::vec(any::<u8>(), PAGE_BYTES..=PAGE_BYTES), pages in 1u32..4, records in 0u64..100) {
        let mut mem = mem_at(1 << 40);
        mem.frame_mut(1 << 40).unwrap().copy_from_slice(&bytes);
        let root = TrackerRoot { first_page: (1u64 << 40).into(), pages: pages.into(), flags: 0.into(), records: records.into(), preserved_pages: 0.into() };
        let _ = Reader::new(&mem, root, &RAM, &SCRATCH).validate();
    }
}

#[test]
fn out_of_memory_changes_nothing() {
    // The sink running out of pages is an error, not a panic.
    struct Empty;
    impl PageSink for Empty {
        fn alloc_page(&mut self) -> Option<u64> {
            None
        }
        fn write_page(&mut self, _: u64, _: &[u8; PAGE_BYTES]) -> bool {
            true
        }
        fn free_page(&mut self, _: u64) {}
    }
    let (t, _, _) = sample();
    assert_eq!(
        tracker_chain::write(&t, &mut Empty).unwrap_err(),
        TrackerChainError::Chain(ChainError::OutOfPages)
    );
    // A sink that hands out a scratch page is refused.
    struct Scratchy;
    impl PageSink for Scratchy {
        fn alloc_page(&mut self) -> Option<u64> {
            Some(0x2000)
        }
        fn write_page(&mut self, _: u64, _: &[u8; PAGE_BYTES]) -> bool {
            true
        }
        fn free_page(&mut self, _: u64) {}
    }
    assert_eq!(
        tracker_chain::write(&t, &mut Scratchy).unwrap_err(),
        TrackerChainError::Chain(ChainError::PageInScratch { phys: 0x2000 })
    );
    let _ = vec![0u8; 1];
}

/// The handed-over bytes of a fixed tracker: root, then every chain page in
/// chain order. Pinned by tests/golden/tracker-v3.bin.
fn golden_bytes() -> Vec<u8> {
    let mut t = Tracker::new(&[Range::new(0, 2 << 20)]).unwrap();
    t.preserve_range(0x40_0000, 0x50_3000).unwrap();
    for i in (0..512).step_by(3) {
        t.preserve((8 << 20) + i * PAGE, 0).unwrap();
    }
    t.preserve(1 << 30, 18).unwrap();
    t.preserve(0x7_0000_0000, 0).unwrap();
    let mut mem = mem_at(0x10_0000_0000);
    let root = tracker_chain::write(&t, &mut mem).unwrap();
    let mut out = zerocopy::IntoBytes::as_bytes(&root).to_vec();
    let mut p = root.first_page.get();
    while p != 0 {
        let page = mem.page(p).unwrap();
        out.extend_from_slice(page);
        p = u64::from_le_bytes(page[8..16].try_into().unwrap());
    }
    out
}

#[test]
fn golden_handover_pins_the_layout() {
    let bytes = golden_bytes();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tracker-v3.bin");
    if std::env::var_os("KHO_BLESS").is_some() {
        std::fs::write(&path, &bytes).unwrap();
    }
    let golden = std::fs::read(&path).expect("tests/golden/tracker-v3.bin (KHO_BLESS=1 writes it)");
    assert_eq!(
        bytes, golden,
        "the kho-tracker-v3 layout changed: that needs a new version string"
    );
    // And the golden bytes read back: root, then pages at 0x10_0000_0000 on.
    let root: TrackerRoot = zerocopy::FromBytes::read_from_bytes(&golden[..32]).unwrap();
    let mut mem = mem_at(0x10_0000_0000);
    assert!(mem.write_bytes(0x10_0000_0000, &golden[32..]));
    let (_, got, _) = restore(&Reader::new(&mem, root, &RAM, &[])).unwrap();
    assert_eq!(
        got[..2],
        [
            Range::new(0x40_0000, 0x50_3000),
            Range::new(8 << 20, (8 << 20) + PAGE)
        ]
    );
    assert_eq!(got.last(), Some(&Range::new(0x7_0000_0000, 0x7_0000_1000)));
}

/// A one-extent chain at `1 << 40` describing the page at 1 MiB + 64 KiB,
/// with its record word, for hand-made corruptions.
fn one_extent() -> (FakeMem, TrackerRoot) {
    let mut t = Tracker::new(&[]).unwrap();
    t.preserve(0x11_0000, 0).unwrap();
    let mut mem = mem_at(1 << 40);
    let root = tracker_chain::write(&t, &mut mem).unwrap();
    (mem, root)
}

#[test]
fn a_chain_page_inside_a_preserved_range_is_refused_by_the_reader() {
    let (mut mem, root) = one_extent();
    let all = [Range::new(0x1000, 1 << 41)];
    assert!(Reader::new(&mem, root, &all, &[]).validate().is_ok());
    // Point the extent at the chain page itself: same totals, and the next
    // kernel would free preserved memory when it frees the chain.
    let chain = root.first_page.get();
    first(&mut mem, &root)[32..40].copy_from_slice(&((chain >> 12) << 23).to_le_bytes());
    crate::chain::reseal(first(&mut mem, &root));
    let want = TrackerChainError::ChainPageInPreserved { phys: chain };
    assert_eq!(Reader::new(&mem, root, &all, &[]).validate(), Err(want));
    assert_eq!(
        restore(&Reader::new(&mem, root, &all, &[])).unwrap_err(),
        want
    );
}

#[test]
fn a_chain_page_in_a_hole_of_a_bitmap_is_fine_but_not_in_a_run() {
    // A checkerboard bitmap region at 1 << 40 (even pages preserved), and
    // chain pages handed out at odd pages of that region, then at even ones.
    let region = 1u64 << 40;
    let mut t = Tracker::new(&[]).unwrap();
    for i in (0..512).step_by(2) {
        t.preserve(region + i * PAGE, 0).unwrap();
    }
    struct At(u64);
    impl PageSink for At {
        fn alloc_page(&mut self) -> Option<u64> {
            Some(self.0)
        }
        fn write_page(&mut self, _: u64, _: &[u8; PAGE_BYTES]) -> bool {
            true
        }
        fn free_page(&mut self, _: u64) {}
    }
    // The writer: an odd page is free, an even one preserved.
    assert!(tracker_chain::write(&t, &mut At(region + 5 * PAGE)).is_ok());
    assert_eq!(
        tracker_chain::write(&t, &mut At(region + 6 * PAGE)),
        Err(TrackerChainError::ChainPageInPreserved {
            phys: region + 6 * PAGE
        })
    );
    // The reader: write the chain at an odd page, then move it to an even
    // one behind the writer's back.
    let mut mem = mem_at(region + 5 * PAGE);
    let root = tracker_chain::write(&t, &mut mem).unwrap();
    let all = [Range::new(0x1000, 1 << 41)];
    let (pages, got, _) = restore(&Reader::new(&mem, root, &all, &[])).unwrap();
    assert_eq!(pages, [region + 5 * PAGE]);
    assert_eq!(got.len(), 256);
    mem.move_frame(region + 5 * PAGE, region + 6 * PAGE);
    let mut moved = root;
    moved.first_page = (region + 6 * PAGE).into();
    assert_eq!(
        restore(&Reader::new(&mem, moved, &all, &[])).unwrap_err(),
        TrackerChainError::ChainPageInPreserved {
            phys: region + 6 * PAGE
        }
    );
}

#[test]
fn the_writer_refuses_a_page_given_twice() {
    let (t, _, _) = sample();
    struct Same;
    impl PageSink for Same {
        fn alloc_page(&mut self) -> Option<u64> {
            Some(1 << 40)
        }
        fn write_page(&mut self, _: u64, _: &[u8; PAGE_BYTES]) -> bool {
            true
        }
        fn free_page(&mut self, _: u64) {}
    }
    assert_eq!(
        tracker_chain::write(&t, &mut Same),
        Err(TrackerChainError::Chain(ChainError::NotAscending {
            phys: 1 << 40,
            next: 1 << 40
        }))
    );
}

#[test]
fn the_chain_is_linked_in_increasing_address_order_whatever_the_sink_gives() {
    // A sink that hands out pages going down.
    struct Down(u64, BTreeMap<u64, Box<[u8; PAGE_BYTES]>>);
    impl PageSink for Down {
        fn alloc_page(&mut self) -> Option<u64> {
            self.0 -= PAGE;
            Some(self.0)
        }
        fn write_page(&mut self, phys: u64, data: &[u8; PAGE_BYTES]) -> bool {
            self.1.insert(phys, Box::new(*data));
            true
        }
        fn free_page(&mut self, _: u64) {}
    }
    let (t, _, _) = sample();
    let mut down = Down(1 << 40, BTreeMap::new());
    let root = tracker_chain::write(&t, &mut down).unwrap();
    let mut mem = HostMem::new(&[Range::new(1 << 39, 1 << 40)], Range::new(0, 0));
    for (p, f) in down.1 {
        assert!(mem.write_bytes(p, &f[..]));
    }
    let (pages, got, _) = restore(&Reader::new(&mem, root, &RAM, &SCRATCH)).unwrap();
    assert_eq!(pages.len(), 3);
    assert!(pages.windows(2).all(|w| w[0] < w[1]), "{pages:x?}");
    assert_eq!(pages[0], root.first_page.get());
    assert_eq!(got, t.ranges().unwrap());
}

/// A [`Reserve`] that remembers the most ranges it ever held.
#[derive(Default)]
struct HighWater {
    log: ReserveLog,
    most: usize,
}

impl crate::reserve::Reserve for HighWater {
    fn reserve(&mut self, r: Range, why: Kept) -> Result<(), crate::reserve::ReserveError> {
        self.log.reserve(r, why)?;
        self.most = self.most.max(self.log.ranges.len());
        Ok(())
    }
    fn rollback(&mut self) {
        self.log.rollback();
    }
}

#[test]
fn a_failure_after_reporting_rolls_everything_back() {
    // The last page's totals are wrong: the single pass has reported the
    // first pages' ranges by the time it finds out; all of it is undone.
    let (_, mem, mut root) = sample();
    root.preserved_pages = (root.preserved_pages.get() + 1).into();
    let mut hw = HighWater::default();
    let e = Reader::new(&mem, root, &RAM, &SCRATCH).restore(&mut hw);
    assert_eq!(e, Err(TrackerChainError::CountMismatch));
    assert!(
        hw.most > 1000,
        "it reported {} ranges before failing",
        hw.most
    );
    assert!(hw.log.ranges.is_empty());
    // A store that fills up is an error too, and is rolled back.
    struct Tiny(ReserveLog);
    impl crate::reserve::Reserve for Tiny {
        fn reserve(&mut self, r: Range, why: Kept) -> Result<(), crate::reserve::ReserveError> {
            if self.0.ranges.len() == 10 {
                return Err(crate::reserve::ReserveError::Full);
            }
            self.0.reserve(r, why)
        }
        fn rollback(&mut self) {
            self.0.rollback();
        }
    }
    let (_, mem, root) = sample();
    let mut tiny = Tiny(ReserveLog::new());
    assert_eq!(
        Reader::new(&mem, root, &RAM, &SCRATCH).restore(&mut tiny),
        Err(TrackerChainError::Reserve(
            crate::reserve::ReserveError::Full
        ))
    );
    assert!(tiny.0.ranges.is_empty());
}

#[test]
fn a_failed_write_gives_back_every_page_it_took() {
    // Pages come from real memory; the third write fails.
    struct Failing {
        mem: HostMem,
        writes: u32,
        taken: Vec<u64>,
        given: Vec<u64>,
    }
    impl PageSink for Failing {
        fn alloc_page(&mut self) -> Option<u64> {
            let p = self.mem.alloc_frames(0)?;
            self.taken.push(p);
            Some(p)
        }
        fn write_page(&mut self, phys: u64, data: &[u8; PAGE_BYTES]) -> bool {
            self.writes += 1;
            self.writes < 3 && self.mem.write_page(phys, data)
        }
        fn free_page(&mut self, phys: u64) {
            self.given.push(phys);
            self.mem.free_frames(phys, 0);
        }
    }
    // Enough isolated pages for several chain pages.
    let mut t = Tracker::new(&SCRATCH).unwrap();
    for i in 0..3000u64 {
        t.preserve((1 << 32) + i * ((2 << 20) + 2 * PAGE), 0)
            .unwrap();
    }
    let mut sink = Failing {
        mem: HostMem::with_pool(Range::new(1 << 40, (1 << 40) + (1 << 30))),
        writes: 0,
        taken: vec![],
        given: vec![],
    };
    let before = sink.mem.free_bytes();
    assert!(tracker_chain::write(&t, &mut sink).is_err());
    assert!(sink.taken.len() >= 3, "{} pages", sink.taken.len());
    let (mut taken, mut given) = (sink.taken.clone(), sink.given.clone());
    taken.sort_unstable();
    given.sort_unstable();
    assert_eq!(given, taken);
    assert_eq!(sink.mem.free_bytes(), before);
    // A sink that gives a scratch page gets it back, with those before.
    struct Scratchy2 {
        n: u64,
        given: Vec<u64>,
    }
    impl PageSink for Scratchy2 {
        fn alloc_page(&mut self) -> Option<u64> {
            self.n += 1;
            Some(if self.n == 2 {
                0x2000
            } else {
                (1 << 40) + self.n * PAGE
            })
        }
        fn write_page(&mut self, _: u64, _: &[u8; PAGE_BYTES]) -> bool {
            true
        }
        fn free_page(&mut self, phys: u64) {
            self.given.push(phys);
        }
    }
    let mut s2 = Scratchy2 {
        n: 0,
        given: vec![],
    };
    assert!(tracker_chain::write(&t, &mut s2).is_err());
    assert_eq!(s2.given.len(), 2);
    assert!(s2.given.contains(&0x2000));
}

#[test]
fn a_written_chain_that_is_not_handed_over_can_be_given_back() {
    let mut t = Tracker::new(&SCRATCH).unwrap();
    for i in 0..3000u64 {
        t.preserve((1 << 32) + i * ((2 << 20) + 2 * PAGE), 0)
            .unwrap();
    }
    let mut mem = HostMem::with_pool(Range::new(1 << 40, (1 << 40) + (1 << 30)));
    let before = (mem.free_bytes(), mem.allocated);
    let root = tracker_chain::write(&t, &mut mem).unwrap();
    assert!(root.pages.get() >= 3);
    assert_eq!(mem.allocated, before.1 + u64::from(root.pages.get()));
    tracker_chain::free(&mut mem, &root);
    assert_eq!((mem.free_bytes(), mem.allocated), before);
    assert_eq!(mem.written_frames().count(), 0);
}

/// A tracker handed over as it lies: flipping any byte of any of its pages
/// is an error (and nothing stays reserved), never another set of ranges.
#[test]
fn in_place_flipping_any_byte_is_never_read_silently() {
    let mut t = Tracker::with_dense_threshold(&[], 2).unwrap();
    // Inline blocks, leaves in a sparse chunk, a dense chunk, large blocks.
    t.preserve(0x1000_0000, 0).unwrap();
    t.preserve(0x1020_0000, 2).unwrap();
    t.preserve(0x1020_8000, 0).unwrap();
    for i in 0..8u64 {
        t.preserve((5 << 30) + (i << 21) + 0x3000, 0).unwrap();
        t.preserve((5 << 30) + (i << 21) + 0x6000, 1).unwrap();
    }
    t.preserve(7 << 30, 18).unwrap();
    t.preserve((9 << 30) + (4 << 21), 11).unwrap();
    let want = t.ranges().unwrap();
    let mut mem = mem_at(1 << 40);
    mem.lend_frames();
    let root = t.hand_over_in_place(&mut mem).unwrap();
    t.hand_back(&mut mem);
    let ram = [Range::new(0, 1 << 41)];
    let mut log = ReserveLog::new();
    super::inplace::restore(&mem, &root, &ram, &[], &mut log).unwrap();
    assert_eq!(log.of(Kept::Preserved).collect::<Vec<_>>(), want);
    let pages: Vec<u64> = log.of(Kept::Metadata).map(|r| r.start).collect();
    assert!(pages.len() >= 4, "{pages:x?}");
    for &p in &pages {
        for at in 0..4096 {
            let f = mem.frame_mut(p).unwrap();
            f[at] ^= 0x10;
            let mut log = ReserveLog::new();
            let r = super::inplace::restore(&mem, &root, &ram, &[], &mut log);
            assert!(
                r.is_err(),
                "byte {at} of page {p:#x} flipped, read as {r:?}"
            );
            assert!(log.ranges.is_empty());
            mem.frame_mut(p).unwrap()[at] ^= 0x10;
        }
    }
    // And every byte of the root.
    let bytes = zerocopy::IntoBytes::as_bytes(&root).to_vec();
    for at in 0..bytes.len() {
        let mut b = bytes.clone();
        b[at] ^= 0x10;
        let bad = <super::inplace::TrackerRootV4 as zerocopy::FromBytes>::read_from_bytes(&b[..])
            .unwrap();
        let mut log = ReserveLog::new();
        let r = super::inplace::restore(&mem, &bad, &ram, &[], &mut log);
        assert!(r.is_err(), "root byte {at} flipped, read as {r:?}");
    }
}

/// The same tracker handed over in place: the root, then every page it
/// reports (directory, leaves, chunks) in address order, from
/// 0x10_0000_0000 on (the host fake lends the pool's first frames).
fn golden_in_place_bytes() -> (Vec<u8>, Vec<u64>) {
    let mut t = Tracker::new(&[Range::new(0, 2 << 20)]).unwrap();
    t.preserve_range(0x40_0000, 0x50_3000).unwrap();
    for i in (0..512).step_by(3) {
        t.preserve((8 << 20) + i * PAGE, 0).unwrap();
    }
    t.preserve(1 << 30, 18).unwrap();
    t.preserve(0x7_0000_0000, 0).unwrap();
    t.preserve(0x7_0000_2000, 1).unwrap();
    let mut mem = mem_at(0x10_0000_0000);
    mem.lend_frames();
    let root = t.hand_over_in_place(&mut mem).unwrap();
    t.hand_back(&mut mem);
    let mut log = ReserveLog::new();
    super::inplace::restore(&mem, &root, &RAM, &[], &mut log).unwrap();
    let pages: Vec<u64> = log.of(Kept::Metadata).map(|r| r.start).collect();
    let mut out = zerocopy::IntoBytes::as_bytes(&root).to_vec();
    for &p in &pages {
        out.extend_from_slice(mem.page(p).unwrap());
    }
    (out, pages)
}

#[test]
fn golden_in_place_pins_the_layout() {
    let (bytes, pages) = golden_in_place_bytes();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tracker-v4.bin");
    if std::env::var_os("KHO_BLESS").is_some() {
        std::fs::write(&path, &bytes).unwrap();
    }
    let golden = std::fs::read(&path).expect("tests/golden/tracker-v4.bin (KHO_BLESS=1 writes it)");
    assert_eq!(
        bytes, golden,
        "the kho-tracker-v4 layout changed: that needs a new version string"
    );
    // The golden bytes read back, each page where it was.
    let root: super::inplace::TrackerRootV4 =
        zerocopy::FromBytes::read_from_bytes(&golden[..40]).unwrap();
    let mut mem = mem_at(0x10_0000_0000);
    for (i, &p) in pages.iter().enumerate() {
        assert!(mem.write_bytes(p, &golden[40 + i * 4096..40 + (i + 1) * 4096]));
    }
    let mut log = ReserveLog::new();
    super::inplace::restore(&mem, &root, &RAM, &[], &mut log).unwrap();
    let got: Vec<Range> = log.of(Kept::Preserved).collect();
    assert_eq!(
        got[..2],
        [
            Range::new(0x40_0000, 0x50_3000),
            Range::new(8 << 20, (8 << 20) + PAGE)
        ]
    );
    assert_eq!(got.last(), Some(&Range::new(0x7_0000_2000, 0x7_0000_4000)));
}

proptest! {
    /// A page's share of the checksum, summed the fast way (`S0`, `S1`),
    /// is every word times its weight as docs/abi.md states it.
    #[test]
    fn page_sums_are_every_word_times_its_weight(
        words in proptest::collection::vec(any::<u64>(), 512),
        p in 0usize..5000,
    ) {
        let mut leaves = [super::leaf::Leaf::default(); 32];
        zerocopy::IntoBytes::as_mut_bytes(&mut leaves)
            .copy_from_slice(zerocopy::IntoBytes::as_bytes(&words[..]));
        let mut want = 0u64;
        for (g, &v) in words.iter().enumerate() {
            let w = super::leaf::weight((p * 32 + g / 16) as u32, g % 16);
            want = want.wrapping_add(v.wrapping_mul(w));
        }
        prop_assert_eq!(super::leaf::page_sum(p, &leaves), want);
        let mut slots = [0u32; 1024];
        zerocopy::IntoBytes::as_mut_bytes(&mut slots)
            .copy_from_slice(zerocopy::IntoBytes::as_bytes(&words[..]));
        let mut want = 0u64;
        for (g, &v) in words.iter().enumerate() {
            want = want.wrapping_add(v.wrapping_mul(super::table::weight(p as u32, g)));
        }
        prop_assert_eq!(super::table::page_sum(p, &slots), want);
    }
}
