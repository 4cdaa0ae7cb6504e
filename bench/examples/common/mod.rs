//! What the profiling examples share: fake physical memory for chain pages
//! (a pool from 2^50 up) and for files, the tracker workloads, files of
//! 4 KiB folios that never join, and a timed restore walk.
// Each example uses some of these.
#![allow(dead_code)]

use kho::memfd::Memfd;
use kho::platform::host::HostMem;
use kho::ranges::Range;
use kho::tracker::Tracker;
use kho::tracker::chain::{self, Reader};

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

/// RAM of the file examples.
pub const RAM: Range = Range::new(0x10_0000, 0x10_0000_0000);
/// Their scratch area.
pub const SCRATCH: Range = Range::new(0x10_0000, 0x410_0000);

/// Fake physical memory for files: a pool from 256 MiB, scratch kept out.
pub fn file_mem() -> HostMem {
    let mut mem = HostMem::new(&[RAM], Range::new(0x1000_0000, 0x10_0000_0000));
    mem.avoid(SCRATCH);
    mem
}

/// A file of `bytes` bytes of 4 KiB folios written in an odd stride, so
/// that no two folios join (each its own record).
pub fn strided_file(mem: &mut HostMem, bytes: u64) -> Memfd {
    let mut f = Memfd::new(true);
    let n = bytes / 4096;
    for i in 0..n {
        f.write(mem, ((i * 7919) % n) * 4096, &[1]).unwrap();
    }
    f
}

#[path = "../../src/shuffle.rs"]
mod shuffle;

/// A file of `bytes` bytes of 4 KiB folios written in a random order (the
/// bench's shuffle): no stride a prefetcher could follow.
pub fn shuffled_file(mem: &mut HostMem, bytes: u64) -> Memfd {
    let mut f = Memfd::new(true);
    f.truncate(mem, bytes).unwrap();
    for p in shuffle::shuffled(bytes / 4096) {
        f.write(mem, p * 4096, &[1]).unwrap();
    }
    f
}

/// Restores the handover of `t` `rounds` times into a count: the bytes
/// reserved in all, and nanoseconds per restore.
pub fn restore_ns(t: &Tracker, rounds: u32) -> (u64, f64) {
    let mut p = pages();
    let root = chain::write(t, &mut p).unwrap();
    let ram = [Range::new(0, 1 << 52)];
    let r = Reader::new(&p, root, &ram, &[]);
    let start = std::time::Instant::now();
    let mut total = 0u64;
    for _ in 0..rounds {
        let mut c = kho::reserve::ReserveCount::default();
        r.restore(&mut c).unwrap();
        total += c.bytes;
    }
    (total, start.elapsed().as_nanos() as f64 / f64::from(rounds))
}
