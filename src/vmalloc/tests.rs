//! Preserved vmalloc: round trips through a handover on the host, and every
//! corrupted chain refused with nothing left claimed.
#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used
)]

use super::*;
use crate::platform::host::HostMem;
use crate::testkit::HandOver;
use alloc::vec;
use zerocopy::IntoBytes;

const RAM: Range = Range::new(0x10_0000, 0x1000_0000);
const SCRATCH: Range = Range::new(0x10_0000, 0x110_0000);
const POOL: Range = Range::new(0x200_0000, 0x1000_0000);

fn setup() -> (HostMem, Tracker) {
    let mut mem = HostMem::new(&[RAM], POOL);
    mem.avoid(SCRATCH);
    (mem, Tracker::new(&[SCRATCH]).unwrap())
}

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(131) ^ (i >> 12)) as u8
}

/// A preserved buffer of `bytes` in blocks of `order`, filled with a
/// pattern, and the claims of a next kernel.
fn preserved(bytes: usize, order: u32) -> (HostMem, Tracker, Vmalloc, VmallocRoot) {
    let (mut mem, mut t) = setup();
    let mut v = Vmalloc::new(&mut mem, bytes, order).unwrap();
    for (i, b) in v.bytes_mut(&mut mem).iter_mut().enumerate() {
        *b = pattern(i);
    }
    let root = v.preserve(&mut mem, &mut t).unwrap();
    (mem, t, v, root)
}

#[test]
fn a_buffer_round_trips_in_place_without_a_copy() {
    for (bytes, order) in [
        (3 * 4096 + 1, 0),
        (1200 * 4096, 0),
        (5 << 20, 9),
        (100_000, 4),
    ] {
        let (mut mem, t, v, root) = preserved(bytes, order);
        assert_eq!(root.blocks.get() as usize, v.blocks().len());
        let chain: Vec<u64> = v.chain_pages().to_vec();
        assert_eq!(chain.len(), v.blocks().len().div_ceil(PAYLOAD_WORDS));
        let mut claims = mem.hand_over(&t).unwrap();
        let ram = [RAM];
        let w = Vmalloc::restore(&mut mem, &root, &ram, &[SCRATCH], &mut claims).unwrap();
        // The same frames, in the same order, hold the same bytes.
        assert_eq!(w.blocks(), v.blocks());
        assert_ne!(w.virt(), v.virt());
        assert_eq!(w.len(), v.len());
        assert!(
            w.bytes(&mem)
                .iter()
                .enumerate()
                .all(|(i, &b)| b == pattern(i))
        );
        // Blocks are adopted as data; the chain pages are metadata until
        // finish, which gives them back.
        let pages = (w.blocks().len() as u64) << order;
        assert_eq!(claims.claimed_pages(), pages + chain.len() as u64);
        for pg in &chain {
            assert!(
                claims
                    .metadata()
                    .any(|r| r.covers(Range::new(*pg, pg + 4096)))
            );
        }
        // Released data goes back too; metadata keeps its role.
        w.release(&mut mem, &mut claims);
        assert_eq!(claims.claimed_pages(), chain.len() as u64);
        let free: u64 = claims.to_free().map(|r| r.len()).sum();
        assert_eq!(free, claims.preserved().map(|r| r.len()).sum::<u64>());
    }
}

#[test]
fn unpreserve_and_free_give_everything_back() {
    let (mut mem, mut t) = setup();
    let before = mem.allocated;
    let mut v = Vmalloc::new(&mut mem, 700 * 4096, 0).unwrap();
    v.preserve(&mut mem, &mut t).unwrap();
    assert_eq!(v.preserve(&mut mem, &mut t), Err(VmallocError::State));
    assert_eq!(t.pages(), 700 + 2);
    v.unpreserve(&mut mem, &mut t).unwrap();
    assert_eq!(t.pages(), 0);
    v.free(&mut mem);
    assert_eq!(mem.allocated, before);
}

#[test]
fn an_empty_buffer_has_no_chain() {
    let (mut mem, mut t, mut v, root) = {
        let (mut mem, mut t) = setup();
        let mut v = Vmalloc::new(&mut mem, 0, 0).unwrap();
        let root = v.preserve(&mut mem, &mut t).unwrap();
        (mem, t, v, root)
    };
    assert!(v.is_empty());
    assert_eq!(root.first.get(), 0);
    let mut claims = mem.hand_over(&t).unwrap();
    let w = Vmalloc::restore(&mut mem, &root, &[RAM], &[SCRATCH], &mut claims).unwrap();
    assert!(w.is_empty());
    v.unpreserve(&mut mem, &mut t).unwrap();
}

/// Restores after `corrupt` changed memory or the root; the error, with
/// nothing left claimed.
fn restore_after(
    bytes: usize,
    order: u32,
    corrupt: impl FnOnce(&mut HostMem, &mut VmallocRoot, &Vmalloc),
) -> VmallocError {
    let (mut mem, t, v, mut root) = preserved(bytes, order);
    let mut claims = mem.hand_over(&t).unwrap();
    corrupt(&mut mem, &mut root, &v);
    let e = Vmalloc::restore(&mut mem, &root, &[RAM], &[SCRATCH], &mut claims).unwrap_err();
    let meta: u64 = claims.metadata().map(|r| r.len() / 4096).sum();
    assert_eq!(claims.claimed_pages(), meta, "no data stays claimed: {e}");
    e
}

/// Sets word `word` of a chain page (payload word `i` is word `4 + i`)
/// and reseals the page, so the checks behind the checksum are reached.
fn set_word(mem: &mut HostMem, page: u64, word: usize, value: u64) {
    let f = mem.frame_mut(page).unwrap();
    f[word * 8..word * 8 + 8].copy_from_slice(&value.to_le_bytes());
    crate::chain::reseal(f);
}

#[test]
fn a_changed_page_or_buffer_fails_its_checksum() {
    let big = 1100 * 4096;
    // A chain page changed after it was written, not resealed.
    let e = restore_after(big, 0, |m, _, v| {
        m.frame_mut(v.chain_pages()[1]).unwrap()[77] ^= 1
    });
    assert!(
        matches!(e, VmallocError::Chain(ChainError::BadSum { .. })),
        "{e}"
    );
    // A summed buffer restores when intact, and not when a byte changed.
    for flip in [None, Some(5000usize), Some(big - 1)] {
        let (mut mem, mut t) = setup();
        let mut v = Vmalloc::new(&mut mem, big, 0).unwrap();
        for (i, b) in v.bytes_mut(&mut mem).iter_mut().enumerate() {
            *b = pattern(i);
        }
        let root = v.preserve_summed(&mut mem, &mut t).unwrap();
        assert_eq!(root.flags.get(), crate::vmalloc::SUMMED);
        if let Some(at) = flip {
            mem.frame_mut(v.blocks()[at / 4096]).unwrap()[at % 4096] ^= 0x40;
        }
        let mut claims = mem.hand_over(&t).unwrap();
        let r = Vmalloc::restore(&mut mem, &root, &[RAM], &[SCRATCH], &mut claims);
        match flip {
            None => assert!(r.is_ok()),
            Some(_) => {
                assert_eq!(r.unwrap_err(), VmallocError::BadSum);
                let meta: u64 = claims.metadata().map(|r| r.len() / 4096).sum();
                assert_eq!(claims.claimed_pages(), meta);
            }
        }
    }
    // A sum without the flag, or the flag without blocks, is malformed.
    let e = restore_after(big, 0, |_, r, _| r.sum = 1.into());
    assert_eq!(e, VmallocError::BadRoot);
}

#[test]
fn a_corrupted_chain_is_refused_and_nothing_is_adopted() {
    let big = 1100 * 4096;
    // A cycle: the second page links back to the first.
    let e = restore_after(big, 0, |m, _, v| {
        set_word(m, v.chain_pages()[1], 1, v.chain_pages()[0])
    });
    assert!(
        matches!(e, VmallocError::Chain(ChainError::NotAscending { .. })),
        "{e}"
    );
    // A count that disagrees with the chain.
    let e = restore_after(big, 0, |_, r, _| r.blocks = (1100 - 1).into());
    assert!(matches!(e, VmallocError::CountMismatch { .. }), "{e}");
    let e = restore_after(big, 0, |_, r, _| r.blocks = (1100 + 600).into());
    assert!(
        matches!(e, VmallocError::Chain(ChainError::BadChainLength)),
        "{e}"
    );
    // A block outside preserved memory, in scratch, twice, misaligned.
    let e = restore_after(big, 0, |m, _, v| {
        set_word(m, v.chain_pages()[2], 4, 0x50_0000)
    });
    assert_eq!(
        e,
        VmallocError::Claim(ClaimError::InScratch {
            range: Range::new(0x50_0000, 0x50_1000)
        })
    );
    let e = restore_after(big, 0, |m, _, v| {
        set_word(m, v.chain_pages()[2], 4, 0xf00_0000)
    });
    assert!(
        matches!(e, VmallocError::Claim(ClaimError::NotPreserved { .. })),
        "{e}"
    );
    let e = restore_after(big, 0, |m, _, v| {
        set_word(m, v.chain_pages()[1], 4 + 7, v.blocks()[5])
    });
    assert!(
        matches!(e, VmallocError::Claim(ClaimError::Twice { .. })),
        "{e}"
    );
    let e = restore_after(8 << 20, 9, |m, _, v| {
        set_word(m, v.chain_pages()[0], 5, v.blocks()[1] + 4096)
    });
    assert!(matches!(e, VmallocError::Misaligned { .. }), "{e}");
    // An order the blocks do not have: a 2 MiB block read as 4 MiB.
    let e = restore_after(8 << 20, 9, |_, r, _| r.order = 10.into());
    assert_eq!(e, VmallocError::BadRoot);
    let e = restore_after(8 << 20, 4, |_, r, _| r.order = 9.into());
    assert!(
        matches!(e, VmallocError::Misaligned { .. } | VmallocError::Claim(_)),
        "{e}"
    );
    // A chain page that is itself a data block.
    let e = restore_after(big, 0, |m, _, v| {
        set_word(m, v.chain_pages()[0], 4, v.chain_pages()[0])
    });
    assert!(
        matches!(e, VmallocError::Claim(ClaimError::Twice { .. })),
        "{e}"
    );
    // Flags, a chain for no blocks, a chain page in scratch.
    assert_eq!(
        restore_after(big, 0, |_, r, _| r.flags = 2.into()),
        VmallocError::BadRoot
    );
    assert_eq!(
        restore_after(big, 0, |_, r, _| r.blocks = 0.into()),
        VmallocError::BadRoot
    );
    let e = restore_after(big, 0, |_, r, _| r.first = 0x50_0000.into());
    assert!(
        matches!(e, VmallocError::Chain(ChainError::PageInScratch { .. })),
        "{e}"
    );
    // Wrong magic.
    let e = restore_after(big, 0, |m, _, v| set_word(m, v.chain_pages()[0], 0, 0));
    assert!(
        matches!(e, VmallocError::Chain(ChainError::BadHeader { .. })),
        "{e}"
    );
}

#[test]
fn a_failed_preserve_leaves_the_tracker_as_it_was() {
    let (mut mem, mut t) = setup();
    let mut v = Vmalloc::new(&mut mem, 10 * 4096, 0).unwrap();
    // Someone else already preserved one of its blocks.
    t.preserve(v.blocks()[7], 0).unwrap();
    let e = v.preserve(&mut mem, &mut t).unwrap_err();
    assert!(matches!(e, VmallocError::Tracker(_)));
    assert_eq!(t.pages(), 1);
    let _ = vec![0u8; 0];
}

/// `kho-vmalloc-v2` pinned byte for byte: the root, then the two chain
/// pages of a 600-block buffer of order 1, and a `memfd-v1` record array's
/// first page. The host fake allocates deterministically.
#[test]
fn golden_vmalloc_chain_and_record_array_pin_the_layout() {
    let (mut mem, mut t) = setup();
    let mut v = Vmalloc::new(&mut mem, 600 * 8192, 1).unwrap();
    let root = v.preserve(&mut mem, &mut t).unwrap();
    let mut f = crate::memfd::Memfd::new(true);
    f.write(&mut mem, 0, &[7u8; 70_000]).unwrap();
    f.preserve(&mut t).unwrap();
    let w = crate::memfd::v1::write(&f, &mut mem, &mut t).unwrap();
    let mut bytes = root.as_bytes().to_vec();
    for pg in v.chain_pages() {
        bytes.extend_from_slice(mem.frame(*pg).unwrap());
    }
    bytes.extend_from_slice(&w.desc);
    let arr = w.array.as_ref().unwrap();
    bytes.extend_from_slice(mem.frame(arr.blocks()[0]).unwrap());
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/vmalloc-v2.bin");
    if std::env::var_os("KHO_BLESS").is_some() {
        std::fs::write(&path, &bytes).unwrap();
    }
    let golden = std::fs::read(&path).expect("tests/golden/vmalloc-v2.bin (KHO_BLESS=1 writes it)");
    assert!(
        bytes == golden,
        "the kho-vmalloc-v2 or memfd-v1 layout changed: that needs a new version string"
    );
}

mod model {
    //! Against a model: a `Vec<u8>` of the same bytes.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
        /// Any size and order: the buffer holds what was written, and a
        /// handover gives back the same blocks with the same bytes; after
        /// unpreserve and free the allocator is where it was.
        #[test]
        fn buffers_round_trip_like_a_vec(
            bytes in 0usize..3_000_000,
            order in 0u32..=9,
            writes in proptest::collection::vec((0usize..3_000_000, any::<u8>()), 0..64),
        ) {
            let (mut mem, mut t) = setup();
            let before = mem.allocated;
            let mut v = Vmalloc::new(&mut mem, bytes, order).unwrap();
            prop_assert!(v.len() >= bytes && v.len().is_multiple_of(4096 << order));
            prop_assert!(v.len() < bytes + (4096 << order) || bytes == 0);
            let mut model = alloc::vec![0u8; v.len()];
            for (at, b) in writes {
                if !v.is_empty() {
                    let at = at % v.len();
                    v.bytes_mut(&mut mem)[at] = b;
                    model[at] = b;
                }
            }
            prop_assert!(v.bytes(&mem) == model.as_slice());
            let root = v.preserve(&mut mem, &mut t).unwrap();
            let mut claims = mem.hand_over(&t).unwrap();
            let w = Vmalloc::restore(&mut mem, &root, &[RAM], &[SCRATCH], &mut claims).unwrap();
            prop_assert_eq!(w.blocks(), v.blocks());
            prop_assert!(w.bytes(&mem) == model.as_slice());
            w.release(&mut mem, &mut claims);
            v.unpreserve(&mut mem, &mut t).unwrap();
            v.free(&mut mem);
            prop_assert_eq!(mem.allocated, before);
            prop_assert_eq!(t.pages(), 0);
        }
    }
}

#[test]
fn a_block_naming_another_buffers_chain_page_is_refused_in_either_order() {
    // Before, a buffer's chain pages were released once it was read, so a
    // second buffer could adopt one as a block and read the first's chain
    // as its data. Now chain pages are metadata until finish: read first,
    // they refuse the second buffer; read second, the first buffer cannot
    // take its own chain back. Never one page in two roles.
    for x_first in [true, false] {
        let (mut mem, mut t) = setup();
        let mut x = Vmalloc::new(&mut mem, 3 * 4096, 0).unwrap();
        let rx = x.preserve(&mut mem, &mut t).unwrap();
        let mut y = Vmalloc::new(&mut mem, 3 * 4096, 0).unwrap();
        let ry = y.preserve(&mut mem, &mut t).unwrap();
        let xc = x.chain_pages()[0];
        set_word(&mut mem, y.chain_pages()[0], 4 + 1, xc);
        let mut claims = mem.hand_over(&t).unwrap();
        let mut read = |root: &VmallocRoot, mem: &mut HostMem| {
            Vmalloc::restore(mem, root, &[RAM], &[SCRATCH], &mut claims)
                .map(|v| v.blocks().to_vec())
        };
        let (a, b) = if x_first {
            let a = read(&rx, &mut mem);
            (a, read(&ry, &mut mem))
        } else {
            let b = read(&ry, &mut mem);
            (read(&rx, &mut mem), b)
        };
        let twice = |r: &Result<Vec<u64>, VmallocError>| {
            matches!(r, Err(VmallocError::Claim(ClaimError::Twice { .. })))
        };
        if x_first {
            assert!(a.is_ok() && twice(&b), "{a:?} {b:?}");
        } else {
            assert!(
                b.as_ref().is_ok_and(|bl| bl.contains(&xc)) && twice(&a),
                "{a:?} {b:?}"
            );
        }
        assert!(claims.is_claimed(xc));
    }
}
