//! The benches' deterministic shuffle, shared with the profiling examples
//! (which include this file), so both measure the same file.

/// `0..n` in a fixed random order (xorshift, Fisher-Yates): folios written
/// in this order land out of order in memory, with no stride a prefetcher
/// could follow.
pub fn shuffled(n: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..v.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}
