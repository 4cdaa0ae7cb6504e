//! Fuzz the handed-over tracker reader, starting from a valid chain: the
//! fuzzer flips bytes of its pages and root. Every outcome must be an error
//! with nothing left reserved, or a map whose ranges are sorted, inside RAM
//! and outside scratch, with no chain page inside a preserved range; never
//! a panic, a hang or a read of an unchecked page.
#![no_main]

use arbitrary::Arbitrary;
use kho::abi::chain::PAGE_BYTES;
use kho::abi::tracker::TrackerRoot;
use kho::platform::host::HostMem;
use kho::platform::{Frame, PhysMem};
use kho::ranges::Range;
use kho::reserve::{Kept, ReserveLog};
use kho::tracker::Tracker;
use kho::tracker::chain::{self as tracker_chain, Reader};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[derive(Arbitrary, Debug)]
struct Input {
    /// (byte offset into the chain, value to xor there).
    flips: Vec<(u16, u8)>,
    /// Changes to the root: (field, value).
    root: Option<(u8, u64)>,
    /// Reseal the pages after the flips, so the change reaches the checks
    /// behind their checksums.
    reseal: bool,
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
        assert!(phys % PAGE_BYTES as u64 == 0 && RAM[0].start <= phys && phys < RAM[0].end);
        assert!(!SCRATCH[0].overlaps(&Range::new(phys, phys + PAGE_BYTES as u64)));
        self.0.frame(phys)
    }
    fn frame_mut(&mut self, phys: u64) -> Option<&mut Frame> {
        self.0.frame_mut(phys)
    }
}

/// A valid chain of a few pages: extents, a bitmap, a large block.
fn valid() -> &'static (Mem, TrackerRoot) {
    static V: OnceLock<(Mem, TrackerRoot)> = OnceLock::new();
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
        let mut m = HostMem::new(&RAM, Range::new(BASE, BASE + (64 << 20)));
        let root = tracker_chain::write(&t, &mut m).unwrap();
        (Mem(m), root)
    })
}

fuzz_target!(|input: Input| {
    let (mem, root) = valid();
    let mut mem = mem.clone();
    let mut root = *root;
    let pages: Vec<u64> = mem.0.written_frames().collect();
    let total = pages.len() * PAGE_BYTES;
    for &(at, x) in &input.flips {
        let at = usize::from(at) % total;
        mem.0.frame_mut(pages[at / PAGE_BYTES]).unwrap()[at % PAGE_BYTES] ^= x;
    }
    if input.reseal {
        for &p in &pages {
            kho::chain::reseal(mem.0.frame_mut(p).unwrap());
        }
    }
    if let Some((field, v)) = input.root {
        match field % 5 {
            0 => root.first_page = v.into(),
            1 => root.pages = (v as u32).into(),
            2 => root.flags = (v as u32).into(),
            3 => root.records = v.into(),
            _ => root.preserved_pages = v.into(),
        }
    }
    let reader = Reader::new(&mem, root, &RAM, &SCRATCH);
    let mut log = ReserveLog::new();
    match reader.restore(&mut log) {
        Err(_) => assert!(log.ranges.is_empty(), "a failed restore left reservations"),
        Ok(sum) => {
            // What the next kernel keeps: preserved ranges sorted, in RAM,
            // outside scratch; chain pages likewise, and never inside a
            // preserved range (they are freed after restore).
            let preserved: Vec<Range> = log.of(Kept::Preserved).collect();
            let chain: Vec<Range> = log.of(Kept::Metadata).collect();
            let mut last_end = 0;
            for r in &preserved {
                assert!(r.start >= last_end && r.start < r.end);
                assert!(RAM[0].start <= r.start && r.end <= RAM[0].end);
                assert!(!SCRATCH[0].overlaps(r));
                last_end = r.end;
            }
            assert_eq!(chain.len() as u32, sum.chain_pages);
            for c in &chain {
                assert!(!SCRATCH[0].overlaps(c));
                assert!(
                    !preserved.iter().any(|p| p.overlaps(c)),
                    "chain page {c:x?} is also preserved"
                );
            }
            let pages: u64 = preserved.iter().map(|r| r.len() / 4096).sum();
            assert_eq!(pages, sum.pages);
            // The same bytes validate the same way (the validation pass
            // does not coalesce, so it counts no ranges).
            let v = reader.validate().expect("restored, but does not validate");
            assert_eq!(
                (v.pages, v.records, v.chain_pages),
                (sum.pages, sum.records, sum.chain_pages)
            );
        }
    }
});
