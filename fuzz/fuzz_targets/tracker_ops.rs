//! Fuzz the tracker's operations against a plain model: any sequence of
//! preserves, unpreserves, ranges and queries, with any address and order,
//! must give the model's answer (the same error, or success), never a
//! panic; and the handed-over chain must read back as the same ranges.
#![no_main]

use arbitrary::Arbitrary;
use kho::platform::host::HostMem;
use kho::ranges::Range;
use kho::reserve::{Kept, ReserveLog};
use kho::tracker::chain::{self, Reader};
use kho::tracker::{MAX_ORDER, PHYS_BITS, Tracker, TrackerError, range_blocks};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

/// An address: mostly in a small window (so blocks collide), in a second
/// chunk, or anything at all.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    Near(u16),
    Far(u16),
    Raw(u64),
}

impl Addr {
    fn get(self) -> u64 {
        match self {
            Addr::Near(p) => u64::from(p) << 12,
            Addr::Far(p) => (7 << 30) + (u64::from(p) << 12),
            Addr::Raw(a) => a,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Preserve(Addr, u8),
    Unpreserve(Addr, u8),
    PreserveRange(Addr, u16),
    Query(Addr),
}

const SCRATCH: Range = Range::new(0x80_0000, 0xa0_0000);

#[derive(Default)]
struct Model(BTreeMap<u64, u32>);

impl Model {
    fn size(order: u32) -> u64 {
        4096 << order
    }

    fn check(phys: u64, order: u32) -> Result<(), TrackerError> {
        if order > MAX_ORDER {
            return Err(TrackerError::OrderTooLarge { order });
        }
        if phys % Self::size(order) != 0 {
            return Err(TrackerError::Misaligned { phys, order });
        }
        if phys >= 1 << PHYS_BITS || (1 << PHYS_BITS) - phys < Self::size(order) {
            return Err(TrackerError::OutOfRange { phys });
        }
        Ok(())
    }

    fn preserve(&mut self, phys: u64, order: u32) -> Result<(), TrackerError> {
        Self::check(phys, order)?;
        let r = Range::new(phys, phys + Self::size(order));
        if SCRATCH.overlaps(&r) {
            return Err(TrackerError::InScratch { phys, order });
        }
        if self.0.get(&phys) == Some(&order) {
            return Err(TrackerError::AlreadyPreserved { phys, order });
        }
        // The last block starting before the end is the only one that can
        // reach into `r` from below; any starting inside overlaps.
        if let Some((&p, &o)) = self.0.range(..r.end).next_back()
            && p + Self::size(o) > phys
        {
            return Err(TrackerError::Overlap { phys, order });
        }
        self.0.insert(phys, order);
        Ok(())
    }

    fn unpreserve(&mut self, phys: u64, order: u32) -> Result<(), TrackerError> {
        Self::check(phys, order)?;
        if self.0.get(&phys) != Some(&order) {
            return Err(TrackerError::NotPreserved { phys, order });
        }
        self.0.remove(&phys);
        Ok(())
    }

    fn is_preserved(&self, a: u64) -> bool {
        self.0
            .range(..=a)
            .next_back()
            .is_some_and(|(&p, &o)| a < p + Self::size(o))
    }

    fn ranges(&self) -> Vec<Range> {
        let mut out: Vec<Range> = Vec::new();
        for (&p, &o) in &self.0 {
            let end = p + Self::size(o);
            match out.last_mut() {
                Some(l) if l.end == p => l.end = end,
                _ => out.push(Range::new(p, end)),
            }
        }
        out
    }
}

fuzz_target!(|input: (u8, Vec<Op>)| {
    let (dense, ops) = input;
    // Chunks turn dense after a few leaves, or at the default.
    let mut t = if dense % 4 == 0 {
        Tracker::new(&[SCRATCH]).unwrap()
    } else {
        Tracker::with_dense_threshold(&[SCRATCH], usize::from(dense % 8)).unwrap()
    };
    let mut m = Model::default();
    for op in ops.iter().take(300) {
        match *op {
            Op::Preserve(a, o) => {
                let (a, o) = (a.get(), u32::from(o % 24));
                assert_eq!(t.preserve(a, o), m.preserve(a, o), "preserve {a:#x} {o}");
            }
            Op::Unpreserve(a, o) => {
                let (a, o) = (a.get(), u32::from(o % 24));
                assert_eq!(
                    t.unpreserve(a, o),
                    m.unpreserve(a, o),
                    "unpreserve {a:#x} {o}"
                );
            }
            Op::PreserveRange(a, n) => {
                let start = a.get() & !0xfff;
                let Some(end) = start.checked_add(u64::from(n) << 12) else {
                    continue;
                };
                let before = m.0.clone();
                let want = match range_blocks(start, end) {
                    Err(e) => Err(e),
                    Ok(blocks) => blocks
                        .into_iter()
                        .try_for_each(|(p, o)| m.preserve(p, o))
                        .inspect_err(|_| m.0 = before),
                };
                assert_eq!(
                    t.preserve_range(start, end),
                    want,
                    "range {start:#x}..{end:#x}"
                );
            }
            Op::Query(a) => {
                let a = a.get();
                assert_eq!(t.is_preserved(a), m.is_preserved(a), "query {a:#x}");
            }
        }
    }
    assert_eq!(t.blocks(), m.0.len() as u64);
    let want = m.ranges();
    assert_eq!(t.ranges().unwrap(), want);
    // Chain pages come from a pool clear of what the model preserved.
    let ram = [Range::new(0, 1 << 52)];
    let mut mem = HostMem::new(&ram, Range::new(1 << 51, 1 << 52));
    for r in &want {
        mem.avoid(*r);
    }
    let root = chain::write(&t, &mut mem).unwrap();
    let mut log = ReserveLog::new();
    Reader::new(&mem, root, &ram, &[SCRATCH])
        .restore(&mut log)
        .unwrap();
    let got: Vec<Range> = log.of(Kept::Preserved).collect();
    assert_eq!(got, want);
    for c in log.of(Kept::Metadata) {
        assert!(
            !want.iter().any(|p| p.overlaps(&c)),
            "chain page {c:x?} is preserved"
        );
    }
});
