//! Fuzz the handed-over tracker reader, starting from a valid chain: the
//! fuzzer flips bytes of its pages and root. Every outcome must be an error
//! with nothing reported, or a walk whose ranges are sorted, inside RAM and
//! outside scratch; never a panic, a hang or a read of an unchecked page.
#![no_main]

use arbitrary::Arbitrary;
use kho::ranges::Range;
use kho::tracker::Tracker;
use kho::tracker::handover::{self, PAGE_BYTES, PageSink, PageSource, Reader, TrackerRoot};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[derive(Arbitrary, Debug)]
struct Input {
    /// (byte offset into the chain, value to xor there).
    flips: Vec<(u16, u8)>,
    /// Changes to the root: (field, value).
    root: Option<(u8, u64)>,
}

const BASE: u64 = 0x1000_0000;
const RAM: [Range; 1] = [Range::new(0x10_0000, 0x8_0000_0000)];
const SCRATCH: [Range; 1] = [Range::new(0x100_0000, 0x200_0000)];

#[derive(Clone)]
struct Mem(Vec<[u8; PAGE_BYTES]>);

impl PageSink for Mem {
    fn alloc_page(&mut self) -> Option<u64> {
        self.0.push([0; PAGE_BYTES]);
        Some(BASE + (self.0.len() as u64 - 1) * PAGE_BYTES as u64)
    }
    fn write_page(&mut self, phys: u64, data: &[u8; PAGE_BYTES]) {
        self.0[((phys - BASE) / PAGE_BYTES as u64) as usize] = *data;
    }
}

impl PageSource for Mem {
    fn page(&self, phys: u64) -> Option<&[u8; PAGE_BYTES]> {
        // The reader must only ask for pages it checked.
        assert!(phys % PAGE_BYTES as u64 == 0 && RAM[0].start <= phys && phys < RAM[0].end);
        assert!(!SCRATCH[0].overlaps(&Range::new(phys, phys + PAGE_BYTES as u64)));
        self.0.get(usize::try_from(phys.checked_sub(BASE)? / PAGE_BYTES as u64).ok()?)
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
        let mut m = Mem(Vec::new());
        let root = handover::write(&t, &mut m).unwrap();
        (m, root)
    })
}

fuzz_target!(|input: Input| {
    let (mem, root) = valid();
    let mut mem = mem.clone();
    let mut root = *root;
    let total = mem.0.len() * PAGE_BYTES;
    for &(at, x) in &input.flips {
        let at = usize::from(at) % total;
        mem.0[at / PAGE_BYTES][at % PAGE_BYTES] ^= x;
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
    let mut last_end = 0;
    let mut reported = 0u64;
    let r = reader.restore(
        |_| reported += 1,
        |r| {
            assert!(r.start >= last_end && r.start < r.end);
            assert!(RAM[0].start <= r.start && r.end <= RAM[0].end);
            assert!(!SCRATCH[0].overlaps(&r));
            last_end = r.end;
        },
    );
    if r.is_err() {
        assert_eq!(reported, 0, "a failed restore reported chain pages");
    }
});
