//! Fuzz both memfd readers from valid files: the fuzzer flips bytes of the
//! descriptor, of the record array and of its chain page. Every outcome
//! must be an error with nothing claimed, or a file whose extents are in
//! order, inside its size, and whose folios are distinct, aligned,
//! preserved, outside scratch and exactly the pages claimed.
#![no_main]

use arbitrary::Arbitrary;
use kho::claims::Claims;
use kho::memfd::{Memfd, v1, v2};
use kho::platform::PhysMem;
use kho::platform::host::HostMem;
use kho::ranges::Range;
use kho::testkit::HandOver;
use kho::tracker::Tracker;
use libfuzzer_sys::fuzz_target;
use std::sync::Mutex;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Which format: v1, v2 with an array, v2 inline.
    format: u8,
    /// (byte offset into descriptor + array pages, value to xor there).
    flips: Vec<(u16, u8)>,
    /// Bytes cut from the descriptor's end.
    cut: u8,
    /// Reseal the array's chain pages and its sum after the page flips, so
    /// the change reaches the checks behind the checksums.
    reseal: bool,
}

const RAM: Range = Range::new(0x10_0000, 0x1000_0000);
const SCRATCH: Range = Range::new(0x10_0000, 0x110_0000);

struct Written {
    desc: Vec<u8>,
    /// Chain pages, then blocks.
    pages: Vec<u64>,
    chain: usize,
}

struct State {
    mem: HostMem,
    preserved: Vec<Range>,
    files: [Written; 3],
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn file(mem: &mut HostMem, t: &mut Tracker, pieces: &[(u64, usize)], seals: u32) -> Memfd {
    let mut f = Memfd::new(true);
    for &(off, len) in pieces {
        f.write(mem, off, &vec![0x5a; len]).unwrap();
    }
    f.add_seals(kho::memfd::Seals::from_bits_retain(seals))
        .unwrap();
    f.preserve(t).unwrap();
    f
}

fn written(w: v1::Written) -> Written {
    let mut pages = vec![];
    let mut chain = 0;
    if let Some(a) = &w.array {
        pages.extend_from_slice(a.chain_pages());
        chain = a.chain_pages().len();
        pages.extend_from_slice(a.blocks());
    }
    Written {
        desc: w.desc,
        pages,
        chain,
    }
}

fn state() -> State {
    let mut mem = HostMem::new(&[RAM], Range::new(0x200_0000, 0x1000_0000));
    let mut t = Tracker::new(&[SCRATCH]).unwrap();
    // 64 KiB at 0 (one order-4 folio), then scattered pages: many records.
    let scattered: Vec<(u64, usize)> = std::iter::once((0, 65536))
        .chain((1..12).map(|i| (i * 20 * 4096 + 7, 100)))
        .collect();
    let a = file(&mut mem, &mut t, &scattered, 0);
    let b = file(&mut mem, &mut t, &scattered, 0);
    let c = file(&mut mem, &mut t, &[(0, 65536), (1 << 20, 4096)], 0x8 | 0x4);
    let files = [
        written(v1::write(&a, &mut mem, &mut t).unwrap()),
        written(v2::write(&b, &mut mem, &mut t).unwrap()),
        written(v2::write(&c, &mut mem, &mut t).unwrap()),
    ];
    let preserved = mem.hand_over(&t).unwrap().preserved().collect();
    State {
        mem,
        preserved,
        files,
    }
}

fuzz_target!(|input: Input| {
    let mut g = STATE.lock().unwrap();
    let s = g.get_or_insert_with(state);
    let which = usize::from(input.format % 3);
    let w = &s.files[which];
    let mut desc = w.desc.clone();
    let total = desc.len() + w.pages.len() * 4096;
    let saved: Vec<[u8; 4096]> = w.pages.iter().map(|&p| *s.mem.frame(p).unwrap()).collect();
    let mut flips = vec![];
    for &(at, x) in &input.flips {
        let at = usize::from(at) % total;
        if at < desc.len() {
            desc[at] ^= x;
        } else {
            flips.push((at - desc.len(), x));
        }
    }
    desc.truncate(desc.len().saturating_sub(usize::from(input.cut % 8)));
    let pages = w.pages.clone();
    for &(at, x) in &flips {
        s.mem.frame_mut(pages[at / 4096]).unwrap()[at % 4096] ^= x;
    }
    if input.reseal && w.chain > 0 {
        let mut sum = kho::csum::Sum64::new();
        for (i, &p) in pages.iter().enumerate() {
            if i < w.chain {
                kho::chain::reseal(s.mem.frame_mut(p).unwrap());
            } else {
                sum.bytes(s.mem.frame(p).unwrap());
            }
        }
        let hdr = if which == 0 { 48 } else { 56 };
        if desc.len() >= hdr {
            desc[hdr - 8..hdr].copy_from_slice(&sum.finish().to_le_bytes());
        }
    }
    let mut claims = Claims::new(s.preserved.iter().copied(), &[SCRATCH]).unwrap();
    let r = if which == 0 {
        v1::read(&desc, &mut s.mem, &[RAM], &[SCRATCH], &mut claims)
    } else {
        v2::read(&desc, &mut s.mem, &[RAM], &[SCRATCH], &mut claims)
    };
    match r {
        Err(_) => assert_eq!(claims.data_pages(), 0, "a failed restore left data claimed"),
        Ok(f) => {
            let mut end = 0;
            let mut folios: Vec<(u64, u64)> = vec![];
            for e in f.extents() {
                assert!(e.index >= end && e.count > 0 && e.order <= 9);
                assert!(e.index << 12 < f.size().max(1) || e.count == 0);
                end = e.end();
                for x in e.folios() {
                    let size = 4096u64 << x.order;
                    assert_eq!(x.phys % size, 0);
                    assert_eq!(x.index % (1 << x.order), 0);
                    let r = Range::new(x.phys, x.phys + size);
                    assert!(!SCRATCH.overlaps(&r));
                    assert!(claims.preserved().any(|p| p.covers(r)));
                    folios.push((x.phys, size));
                }
            }
            folios.sort_unstable();
            for w in folios.windows(2) {
                assert!(w[0].0 + w[0].1 <= w[1].0, "folios overlap");
            }
            let pages: u64 = folios.iter().map(|x| x.1 / 4096).sum();
            assert_eq!(claims.data_pages(), pages);
            // No folio is a page of its own array (metadata keeps its role).
            for &p in &w.pages {
                assert!(!folios.iter().any(|&(a, n)| (a..a + n).contains(&p)));
            }
        }
    }
    for (&p, b) in w.pages.iter().zip(&saved) {
        s.mem.frame_mut(p).unwrap().copy_from_slice(b);
    }
});
