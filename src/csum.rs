//! `kho-sum64`: the checksum over every byte of handed-over metadata (the
//! blob, chain pages, record arrays), cheap enough to fold into the loops
//! that read it.
//!
//! Input is a stream of bytes taken as 16-byte blocks of two little-endian
//! 64-bit words; a last partial block is padded with zeros, and the input's
//! length goes into the final mix, so padding never collides with real
//! zeros. Block `j` goes to lane `j mod 4`:
//!
//! ```text
//! lane = rotl((lane ^ w0) * K1 + w1, 29)       // K1 odd: a bijection in lane, w0 and w1
//! sum  = fmix64(l0 ^ rotl(l1,16) ^ rotl(l2,32) ^ rotl(l3,48) ^ len * K0)
//! ```
//!
//! Why this function: on the next kernel's hot path (4 MiB of records for a
//! 1 GiB file of 4 KiB folios) the reader already loads every record word;
//! one multiply per 16-byte record, on four independent chains, hashes a
//! frame of records in a tight pass just before they are checked (about a
//! nanosecond a record on the bench machine), where a byte-wise CRC
//! without hardware help costs several times that, and the kernel target
//! has no vector unit to lean on. It is not cryptographic: it catches stray writes
//! and bit flips, not an adversary. One property is exact, not
//! probabilistic: every step is a bijection in each of its inputs, so
//! **any change confined to one 8-byte word always changes the sum** (so
//! does any change of length); other changes collide with probability
//! about 2^-64.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

const K0: u64 = 0x9e37_79b9_7f4a_7c15;
const K1: u64 = 0xc2b2_ae3d_27d4_eb4f;
const SEEDS: [u64; 4] = [
    0x6b68_6f2d_7375_6d36,
    0x3436_2d6c_616e_6531,
    0x3234_2d6c_616e_6532,
    0x3133_2d6c_616e_6533,
];

/// One step of a lane: a bijection in the lane, in `w0` and in `w1`.
#[inline(always)]
const fn step(lane: u64, w0: u64, w1: u64) -> u64 {
    (lane ^ w0)
        .wrapping_mul(K1)
        .wrapping_add(w1)
        .rotate_left(29)
}

/// The running state of a `kho-sum64` over a stream of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sum64 {
    lanes: [u64; 4],
    /// Bytes taken so far.
    len: u64,
    /// Bytes of an unfinished block.
    buf: [u8; 16],
}

impl Default for Sum64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sum64 {
    /// An empty sum.
    pub const fn new() -> Self {
        Self {
            lanes: SEEDS,
            len: 0,
            buf: [0; 16],
        }
    }

    /// Takes one whole block into the lane whose turn it is.
    #[inline(always)]
    fn mix(&mut self, w0: u64, w1: u64) {
        let i = ((self.len / 16) % 4) as usize;
        if let Some(l) = self.lanes.get_mut(i) {
            *l = step(*l, w0, w1);
        }
        self.len = self.len.wrapping_add(16);
    }

    /// Takes a frame (or any whole number of 64-byte groups) given as
    /// little-endian words: the fast path for a reader that walks a page.
    /// Only whole groups of four blocks may have been taken before.
    #[inline]
    pub fn frame(&mut self, words: &[zerocopy::byteorder::little_endian::U64]) {
        debug_assert!(self.len.is_multiple_of(64) && words.len().is_multiple_of(8));
        let [mut l0, mut l1, mut l2, mut l3] = self.lanes;
        for q in words.chunks_exact(8) {
            if let [a0, a1, b0, b1, c0, c1, d0, d1] = q {
                l0 = step(l0, a0.get(), a1.get());
                l1 = step(l1, b0.get(), b1.get());
                l2 = step(l2, c0.get(), c1.get());
                l3 = step(l3, d0.get(), d1.get());
            }
        }
        self.lanes = [l0, l1, l2, l3];
        self.len = self
            .len
            .wrapping_add((words.len() as u64 / 8).wrapping_mul(64));
    }

    /// Takes `bytes`, after whatever was taken before.
    pub fn bytes(&mut self, mut bytes: &[u8]) {
        let have = (self.len % 16) as usize;
        if have != 0 {
            let take = (16usize.saturating_sub(have)).min(bytes.len());
            let (head, rest) = bytes.split_at(take);
            if let Some(d) = self.buf.get_mut(have..have.saturating_add(take)) {
                d.copy_from_slice(head);
            }
            bytes = rest;
            if have.saturating_add(take) < 16 {
                self.len = self.len.wrapping_add(take as u64);
                return;
            }
            self.len = self.len.wrapping_sub(have as u64);
            let (w0, w1) = words(&self.buf);
            self.mix(w0, w1);
        }
        let mut blocks = bytes.chunks_exact(16);
        for c in &mut blocks {
            let mut b = [0u8; 16];
            b.copy_from_slice(c);
            let (w0, w1) = words(&b);
            self.mix(w0, w1);
        }
        let tail = blocks.remainder();
        if let Some(d) = self.buf.get_mut(..tail.len()) {
            d.copy_from_slice(tail);
        }
        self.len = self.len.wrapping_add(tail.len() as u64);
    }

    /// Takes `n` zero bytes.
    pub(crate) fn zeros(&mut self, n: usize) {
        for _ in 0..n / 16 {
            self.bytes(&[0u8; 16]);
        }
        self.bytes([0u8; 16].get(..n % 16).unwrap_or(&[]));
    }

    /// The sum of everything taken.
    pub fn finish(&self) -> u64 {
        let mut t = *self;
        let have = (self.len % 16) as usize;
        if have != 0 {
            let mut last = [0u8; 16];
            if let (Some(d), Some(s)) = (last.get_mut(..have), self.buf.get(..have)) {
                d.copy_from_slice(s);
            }
            let (w0, w1) = words(&last);
            t.len = t.len.wrapping_sub(have as u64);
            t.mix(w0, w1);
        }
        let [l0, l1, l2, l3] = t.lanes;
        fmix(
            l0 ^ l1.rotate_left(16)
                ^ l2.rotate_left(32)
                ^ l3.rotate_left(48)
                ^ self.len.wrapping_mul(K0),
        )
    }
}

/// The two little-endian words of a block.
#[inline(always)]
fn words(b: &[u8; 16]) -> (u64, u64) {
    let [
        a0,
        a1,
        a2,
        a3,
        a4,
        a5,
        a6,
        a7,
        b0,
        b1,
        b2,
        b3,
        b4,
        b5,
        b6,
        b7,
    ] = *b;
    (
        u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
        u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
    )
}

/// The final avalanche (MurmurHash3's 64-bit finalizer, a bijection).
const fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// `kho-sum64` of `bytes`.
pub fn sum64(bytes: &[u8]) -> u64 {
    let mut s = Sum64::new();
    s.bytes(bytes);
    s.finish()
}

/// `kho-sum64` of `bytes` with the 8 bytes at `at` taken as zero (where the
/// sum itself is stored).
pub(crate) fn sum64_skipping(bytes: &[u8], at: usize) -> u64 {
    let mut s = Sum64::new();
    let (head, rest) = bytes.split_at(at.min(bytes.len()));
    s.bytes(head);
    let (hole, tail) = rest.split_at(rest.len().min(8));
    s.zeros(hole.len());
    s.bytes(tail);
    s.finish()
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::unwrap_used
    )]
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;
    use zerocopy::FromBytes;

    #[test]
    fn pinned_values() {
        // The function is part of the ABI: these values never change.
        let known = [
            sum64(b""),
            sum64(b"kho"),
            sum64(&[0u8; 16]),
            sum64(&[0u8; 4096]),
        ];
        assert_eq!(known, PINNED);
    }

    const PINNED: [u64; 4] = [
        0x5c2b_9a49_0729_514c,
        0x3c14_d7a1_3cf7_c90f,
        0xa804_4550_301a_4e70,
        0x3fab_c7d4_5cd5_87aa,
    ];

    #[test]
    fn words_blocks_and_bytes_agree() {
        let data: Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut a = Sum64::new();
        let w = <[zerocopy::byteorder::little_endian::U64]>::ref_from_bytes(&data[..192]).unwrap();
        a.frame(w);
        let mut b = Sum64::new();
        b.bytes(&data[..192]);
        assert_eq!(a.finish(), b.finish());
        // Any split of the stream gives the same sum.
        for cut in [0, 1, 7, 15, 16, 17, 63, 64, 65, 199, 200] {
            let mut c = Sum64::new();
            c.bytes(&data[..cut]);
            c.bytes(&data[cut..]);
            assert_eq!(c.finish(), sum64(&data), "cut {cut}");
        }
        b.bytes(&data[192..]);
        assert_eq!(b.finish(), sum64(&data));
        let mut d = data.clone();
        d[40..48].fill(0);
        assert_eq!(sum64_skipping(&data, 40), sum64(&d));
    }

    #[test]
    fn padding_and_length_matter() {
        assert_ne!(sum64(b"a"), sum64(b"a\0"));
        assert_ne!(sum64(&[0u8; 8]), sum64(&[0u8; 16]));
        assert_ne!(sum64(&[]), sum64(&[0u8; 8]));
    }

    proptest! {
        /// Any change inside one 8-byte word changes the sum.
        #[test]
        fn one_word_changes_are_always_seen(
            data in proptest::collection::vec(any::<u8>(), 1..300),
            at in any::<prop::sample::Index>(),
            x in 1u64..,
        ) {
            let i = at.index(data.len()) & !7;
            let mut d = data.clone();
            let n = (d.len() - i).min(8);
            let mut w = [0u8; 8];
            w[..n].copy_from_slice(&d[i..i + n]);
            let mut v = u64::from_le_bytes(w) ^ x;
            if n < 8 {
                v &= (1u64 << (8 * n)) - 1;
            }
            d[i..i + n].copy_from_slice(&v.to_le_bytes()[..n]);
            prop_assume!(d != data);
            prop_assert_ne!(sum64(&d), sum64(&data));
        }
    }

    #[test]
    fn every_single_byte_flip_of_a_page_is_seen() {
        let page: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
        let base = sum64(&page);
        for i in 0..page.len() {
            for x in [0x01u8, 0xff] {
                let mut p = page.clone();
                p[i] ^= x;
                assert_ne!(sum64(&p), base, "byte {i} ^ {x:#x}");
            }
        }
    }
}
