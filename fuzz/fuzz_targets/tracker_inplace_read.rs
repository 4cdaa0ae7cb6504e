//! Fuzz the reader of a tracker handed over in place (`kho-tracker-v4`),
//! starting from a valid one: the fuzzer changes bytes of its pages (and,
//! to reach the checks behind the checksum, may fix the root's sum up) and
//! fields of its root. Every outcome must be an error with nothing left
//! reserved, or a map whose ranges are sorted, inside RAM and outside
//! scratch, with no tracker page inside a preserved range; never a panic,
//! a hang or a read of an unchecked page.
#![no_main]

use arbitrary::Arbitrary;
use kho::abi::tracker::TrackerRootV4;
use kho::platform::host::HostMem;
use kho::platform::{Frame, PhysMem};
use kho::ranges::Range;
use kho::reserve::{Kept, ReserveLog};
use kho::tracker::Tracker;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[derive(Arbitrary, Debug)]
struct Input {
    /// (byte offset into the tracker's pages, value to xor there).
    flips: Vec<(u16, u8)>,
    /// Changes to the root: (field, value).
    root: Option<(u8, u64)>,
    /// Added to the root's sum (0: left as is).
    resum: u64,
}

const BASE: u64 = 0x1000_0000;
const RAM: [Range; 1] = [Range::new(0x10_0000, 0x8_0000_0000)];
const SCRATCH: [Range; 1] = [Range::new(0x100_0000, 0x200_0000)];

/// The host's fake memory, behind a check that the reader only asks for
/// pages it has checked itself.
#[derive(Clone)]
struct Mem(HostMem);

impl PhysMem for Mem {
    fn frame(&self, phys: u64) -> Option<&Frame> {
        assert!(phys % 4096 == 0 && RAM[0].start <= phys && phys < RAM[0].end);
        assert!(!SCRATCH[0].overlaps(&Range::new(phys, phys + 4096)));
        self.0.frame(phys)
    }
    fn frame_mut(&mut self, phys: u64) -> Option<&mut Frame> {
        self.0.frame_mut(phys)
    }
}

/// A valid tracker in place: inline blocks, sparse and dense leaves, a
/// large block.
fn valid() -> &'static (Mem, TrackerRootV4) {
    static V: OnceLock<(Mem, TrackerRootV4)> = OnceLock::new();
    V.get_or_init(|| {
        let mut t = Tracker::new(&SCRATCH).unwrap();
        t.preserve_range(0x20_0000, 0x30_0000).unwrap();
        for i in (0..512u64).step_by(2) {
            t.preserve(0x400_0000 + i * 4096, 0).unwrap();
        }
        t.preserve(1 << 30, 18).unwrap();
        for i in 0..1200u64 {
            t.preserve(0x1_0000_0000 + i * (3 << 20), 0).unwrap();
        }
        for i in 0..40u64 {
            t.preserve(0x2_0000_0000 + (i << 21) + 0x1000, 0).unwrap();
            t.preserve(0x2_0000_0000 + (i << 21) + 0x8000, 3).unwrap();
        }
        let mut m = HostMem::new(&RAM, Range::new(BASE, BASE + (64 << 20)));
        m.lend_frames();
        let root = t.in_place(&mut m).unwrap();
        t.hand_back(&mut m);
        (Mem(m), root)
    })
}

fuzz_target!(|input: Input| {
    let (mem, root) = valid();
    let mut mem = mem.clone();
    let mut root = *root;
    let pages: Vec<u64> = mem.0.written_frames().collect();
    let total = pages.len() * 4096;
    for &(at, x) in &input.flips {
        let at = usize::from(at) % total;
        mem.0.frame_mut(pages[at / 4096]).unwrap()[at % 4096] ^= x;
    }
    root.sum = root.sum.get().wrapping_add(input.resum).into();
    if let Some((field, v)) = input.root {
        match field % 6 {
            0 => root.dir = v.into(),
            1 => root.dir_pages = (v as u32).into(),
            2 => root.flags = (v as u32).into(),
            3 => root.leaf_pages = (v as u32).into(),
            4 => root.chunk_pages = (v as u32).into(),
            _ => root.preserved_pages = v.into(),
        }
    }
    let mut log = ReserveLog::new();
    match kho::tracker::inplace::restore(&mem, &root, &RAM, &SCRATCH, &mut log) {
        Err(_) => assert!(log.ranges.is_empty(), "a failed restore left reservations"),
        Ok(sum) => {
            let preserved: Vec<Range> = log.of(Kept::Preserved).collect();
            let meta: Vec<Range> = log.of(Kept::Metadata).collect();
            let mut last_end = 0;
            for r in &preserved {
                assert!(r.start >= last_end && r.start < r.end);
                assert!(RAM[0].start <= r.start && r.end <= RAM[0].end);
                assert!(!SCRATCH[0].overlaps(r));
                last_end = r.end;
            }
            assert_eq!(meta.len() as u32, sum.chain_pages);
            for c in &meta {
                assert!(!SCRATCH[0].overlaps(c));
                assert!(
                    !preserved.iter().any(|p| p.overlaps(c)),
                    "page {c:x?} is also preserved"
                );
            }
            let pages: u64 = preserved.iter().map(|r| r.len() / 4096).sum();
            assert_eq!(pages, sum.pages);
            // Unchanged pages read as they were written.
            if input.flips.iter().all(|&(_, x)| x == 0) && input.resum == 0 && input.root.is_none()
            {
                assert_eq!(sum.pages, valid().1.preserved_pages.get());
            }
        }
    }
});
