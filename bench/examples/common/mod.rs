//! What the profiling examples share: the host's fake physical memory with
//! a frame pool from 2^50 up, the tracker workloads, and freeing a chain.
// Each example uses some of these.
#![allow(dead_code)]

use kho::platform::host::HostMem;
use kho::platform::{FrameAlloc, PhysMem};
use kho::ranges::Range;
use kho::tracker::Tracker;
use kho::tracker::handover::TrackerRoot;

/// Fake physical memory for the chain pages.
pub fn pages() -> HostMem {
    HostMem::with_pool(Range::new(1 << 50, (1 << 50) + (1 << 40)))
}

/// A xorshift stream from the examples' fixed seed.
fn stream() -> impl FnMut() -> u64 {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

/// 100k isolated 4 KiB pages over 1 TiB.
pub fn isolated() -> Tracker {
    let mut next = stream();
    let mut t = Tracker::new(&[]).unwrap();
    let mut n = 0;
    while n < 100_000 {
        if t.preserve((next() % (1 << 28)) << 12, 0).is_ok() {
            n += 1;
        }
    }
    t
}

/// The mix: 30,000 blocks of order 0 to 4 in 64 KiB slots over 8 GiB.
pub fn mix() -> Tracker {
    let mut next = stream();
    let mut t = Tracker::new(&[]).unwrap();
    let mut used = std::collections::HashSet::new();
    while used.len() < 30_000 {
        let order = (next() % 5) as u32;
        let slot = next() % ((8u64 << 30) >> 16);
        if used.insert(slot) {
            t.preserve((32u64 << 30) + (slot << 16), order).unwrap();
        }
    }
    t
}

/// Frees the chain pages a handover write took (each header's `next`
/// field, at byte 8, links them).
pub fn free_chain(mem: &mut HostMem, root: &TrackerRoot) {
    let mut at = root.first_page.get();
    for _ in 0..root.pages.get() {
        let next = mem
            .frame(at)
            .map_or(0, |f| u64::from_le_bytes(f[8..16].try_into().unwrap()));
        mem.free_frames(at, 0);
        at = next;
    }
}
