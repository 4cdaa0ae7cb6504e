//! Fuzz the preserved-vmalloc chain reader from a valid two-page chain: the
//! fuzzer flips bytes of the chain pages and changes the root. Every
//! outcome must be an error with nothing claimed, or a buffer whose blocks
//! are aligned, distinct, preserved, outside scratch and exactly claimed.
#![no_main]

use arbitrary::Arbitrary;
use kho::claims::Claims;
use kho::platform::PhysMem;
use kho::platform::host::HostMem;
use kho::ranges::Range;
use kho::testkit::HandOver;
use kho::tracker::Tracker;
use kho::vmalloc::{Vmalloc, VmallocRoot};
use libfuzzer_sys::fuzz_target;
use std::sync::Mutex;

#[derive(Arbitrary, Debug)]
struct Input {
    /// (byte offset into the chain pages, value to xor there).
    flips: Vec<(u16, u8)>,
    /// Changes to the root: (field, value).
    root: Option<(u8, u64)>,
    /// Reseal the chain pages after the flips, so the change reaches the
    /// checks behind their checksums.
    reseal: bool,
}

const RAM: Range = Range::new(0x10_0000, 0x1000_0000);
const SCRATCH: Range = Range::new(0x10_0000, 0x110_0000);

struct State {
    mem: HostMem,
    preserved: Vec<Range>,
    root: VmallocRoot,
    chain: Vec<u64>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn state() -> State {
    let mut mem = HostMem::new(&[RAM], Range::new(0x200_0000, 0x1000_0000));
    let mut t = Tracker::new(&[SCRATCH]).unwrap();
    // 600 blocks of 4 KiB: two chain pages.
    let mut v = Vmalloc::new(&mut mem, 600 * 4096, 0).unwrap();
    let root = v.preserve(&mut mem, &mut t).unwrap();
    // Some preserved memory that is no block, for records to point at.
    t.preserve_range(0x800_0000, 0x810_0000).unwrap();
    let preserved = mem.hand_over(&t).unwrap().preserved().collect();
    let chain = v.chain_pages().to_vec();
    State {
        mem,
        preserved,
        root,
        chain,
    }
}

fuzz_target!(|input: Input| {
    let mut g = STATE.lock().unwrap();
    let s = g.get_or_insert_with(state);
    let total = s.chain.len() * 4096;
    let flips: Vec<(usize, u8)> = input
        .flips
        .iter()
        .map(|&(at, x)| (usize::from(at) % total, x))
        .collect();
    let saved: Vec<[u8; 4096]> = s.chain.iter().map(|&p| *s.mem.frame(p).unwrap()).collect();
    for &(at, x) in &flips {
        s.mem.frame_mut(s.chain[at / 4096]).unwrap()[at % 4096] ^= x;
    }
    if input.reseal {
        for &p in &s.chain {
            kho::chain::reseal(s.mem.frame_mut(p).unwrap());
        }
    }
    let mut root = s.root;
    if let Some((field, v)) = input.root {
        match field % 4 {
            0 => root.first = v.into(),
            1 => root.blocks = (v as u32).into(),
            2 => root.order = (v as u16).into(),
            _ => root.flags = (v as u16).into(),
        }
    }
    let mut claims = Claims::new(s.preserved.iter().copied(), &[SCRATCH]).unwrap();
    match Vmalloc::restore(&mut s.mem, &root, &[RAM], &[SCRATCH], &mut claims) {
        Err(_) => assert_eq!(claims.data_pages(), 0, "a failed restore left data claimed"),
        Ok(v) => {
            let size = 4096u64 << v.order();
            let mut blocks = v.blocks().to_vec();
            blocks.sort_unstable();
            for w in blocks.windows(2) {
                assert!(w[0] + size <= w[1], "blocks overlap");
            }
            for &b in &blocks {
                assert_eq!(b % size, 0);
                let r = Range::new(b, b + size);
                assert!(!SCRATCH.overlaps(&r));
                assert!(claims.preserved().any(|p| p.covers(r)));
            }
            assert_eq!(claims.data_pages(), blocks.len() as u64 * (size / 4096));
            assert_eq!(v.len() as u64, blocks.len() as u64 * size);
            // No block is a chain page (metadata keeps its role).
            for &p in &s.chain {
                assert!(!blocks.iter().any(|&b| (b..b + size).contains(&p)));
            }
            v.release(&mut s.mem, &mut claims);
            assert_eq!(claims.data_pages(), 0);
        }
    }
    for (&p, b) in s.chain.iter().zip(&saved) {
        s.mem.frame_mut(p).unwrap().copy_from_slice(b);
    }
});
