//! Tests of the ELF image parser against images built here byte by byte.
#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use super::*;
use alloc::vec::Vec;

/// A program header for [`build`]: (type, flags, offset, paddr, filesz, memsz).
type Ph = (u32, u32, u64, u64, u64, u64);

/// An ELF64 x86_64 executable with the given program headers (at offset
/// 64) and `len` bytes in all; the PVH note, if any, at `note_at`.
fn build(phs: &[Ph], len: usize, note: Option<(usize, u32)>) -> Vec<u8> {
    let mut b = alloc::vec![0u8; len];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4..7].copy_from_slice(&[2, 1, 1]);
    b[16..18].copy_from_slice(&2u16.to_le_bytes());
    b[18..20].copy_from_slice(&62u16.to_le_bytes());
    b[20..24].copy_from_slice(&1u32.to_le_bytes());
    b[32..40].copy_from_slice(&64u64.to_le_bytes());
    b[54..56].copy_from_slice(&56u16.to_le_bytes());
    b[56..58].copy_from_slice(&(phs.len() as u16).to_le_bytes());
    for (i, &(t, f, off, pa, fs, ms)) in phs.iter().enumerate() {
        let p = 64 + i * 56;
        b[p..p + 4].copy_from_slice(&t.to_le_bytes());
        b[p + 4..p + 8].copy_from_slice(&f.to_le_bytes());
        b[p + 8..p + 16].copy_from_slice(&off.to_le_bytes());
        b[p + 16..p + 24].copy_from_slice(&pa.to_le_bytes());
        b[p + 24..p + 32].copy_from_slice(&pa.to_le_bytes());
        b[p + 32..p + 40].copy_from_slice(&fs.to_le_bytes());
        b[p + 40..p + 48].copy_from_slice(&ms.to_le_bytes());
    }
    if let Some((at, entry)) = note {
        let n: [u32; 3] = [4, 4, 18];
        for (k, w) in n.iter().enumerate() {
            b[at + 4 * k..at + 4 * k + 4].copy_from_slice(&w.to_le_bytes());
        }
        b[at + 12..at + 16].copy_from_slice(b"Xen\0");
        b[at + 16..at + 20].copy_from_slice(&entry.to_le_bytes());
    }
    b
}

/// A good image: text at 2 MiB (with the entry), data+bss at 2 MiB + 8 KiB,
/// a note.
fn good() -> Vec<u8> {
    build(
        &[
            (1, 5, 0x1000, 0x20_0000, 0x1000, 0x1000),
            (1, 6, 0x2000, 0x20_2000, 0x800, 0x3000),
            (4, 4, 0x400, 0, 20, 20),
        ],
        0x3000,
        Some((0x400, 0x20_0010)),
    )
}

#[test]
fn a_good_image_parses_and_plans() {
    let b = good();
    let img = Image::parse(&b).unwrap();
    assert_eq!(img.pvh_entry, 0x20_0010);
    assert_eq!(img.segments().len(), 2);
    assert_eq!(img.segments()[1].pages(), Range::new(0x20_2000, 0x20_5000));
    assert_eq!(img.file_bytes(&img.segments()[1]).len(), 0x800);
    assert_eq!(img.span(), Range::new(0x20_0000, 0x20_5000));
    let ram = [Range::new(0x10_0000, 0x1000_0000)];
    assert_eq!(img.plan(&ram, |_| false), Ok(()));
    assert_eq!(
        img.plan(&ram, |r| r.overlaps(&Range::new(0x20_4000, 0x20_5000))),
        Err(ElfError::OverlapsPreserved {
            range: Range::new(0x20_2000, 0x20_5000)
        })
    );
    assert_eq!(
        img.plan(&[Range::new(0x20_1000, 1 << 30)], |_| false),
        Err(ElfError::NotInRam {
            range: Range::new(0x20_0000, 0x20_1000)
        })
    );
}

#[test]
fn broken_images_are_typed_errors() {
    use ElfError::*;
    let g = good();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = g.clone();
        f(&mut b);
        Image::parse(&b).map(|_| ())
    };
    assert_eq!(Image::parse(&g[..40]).map(|_| ()), Err(Truncated));
    assert_eq!(with(&|b| b[0] = 0), Err(NotElf));
    assert_eq!(with(&|b| b[4] = 1), Err(WrongClass));
    assert_eq!(with(&|b| b[18] = 3), Err(WrongMachine(3)));
    assert_eq!(with(&|b| b[16] = 3), Err(NotExecutable(3)));
    assert_eq!(with(&|b| b[54] = 55), Err(BadProgramHeaders));
    assert_eq!(with(&|b| b[39] = 0xff), Err(BadProgramHeaders));
    // Segment 1's file bytes past the end of the file.
    assert_eq!(
        with(&|b| b[128..136].copy_from_slice(&0x2900u64.to_le_bytes())),
        Err(SegmentOutsideFile { index: 1 })
    );
    // filesz > memsz.
    assert_eq!(
        with(&|b| b[104..112].copy_from_slice(&0x10u64.to_le_bytes())),
        Err(FileSizeOverMemSize { index: 0 })
    );
    // A destination at the top of the address space wraps.
    assert_eq!(
        with(&|b| {
            b[136..144].copy_from_slice(&(u64::MAX - 0xfff).to_le_bytes());
            b[144..152].copy_from_slice(&(u64::MAX - 0xfff).to_le_bytes());
        }),
        Err(BadAddress { index: 1 })
    );
    // Misaligned against the file offset.
    assert_eq!(
        with(&|b| b[144..152].copy_from_slice(&0x20_2100u64.to_le_bytes())),
        Err(BadAddress { index: 1 })
    );
    // The data segment moved onto the text page.
    assert_eq!(
        with(&|b| b[144..152].copy_from_slice(&0x20_0000u64.to_le_bytes())),
        Err(SegmentsOverlap { a: 0, b: 1 })
    );
    // No note, or an entry in the data segment.
    assert_eq!(with(&|b| b[0x408] = 17), Err(NoPvhEntry));
    assert_eq!(
        with(&|b| b[0x410..0x414].copy_from_slice(&0x20_2010u32.to_le_bytes())),
        Err(EntryOutsideCode { entry: 0x20_2010 })
    );
    // A note whose sizes run past the segment.
    assert_eq!(with(&|b| b[0x404] = 0xff), Err(NoPvhEntry));
    // No loadable segment.
    let only_note = build(&[(4, 4, 0x400, 0, 20, 20)], 0x1000, Some((0x400, 0)));
    assert_eq!(Image::parse(&only_note).map(|_| ()), Err(NoSegments));
    // Too many.
    let many: Vec<Ph> = (0..17)
        .map(|i| (1, 5, 0x1000, 0x100_0000 + i * 0x1000, 0x10, 0x10))
        .collect();
    assert_eq!(
        Image::parse(&build(&many, 0x2000, None)).map(|_| ()),
        Err(TooManySegments)
    );
}

#[test]
fn a_large_image_linked_high_is_fine() {
    // 48 MiB of bss at 1 GiB: nothing assumes our own kernel's shape.
    let b = build(
        &[
            (1, 5, 0x1000, 0x4000_0000, 0x1000, 0x1000),
            (1, 6, 0x2000, 0x4000_1000, 0x1000, 48 << 20),
            (4, 4, 0x400, 0, 20, 20),
        ],
        0x3000,
        Some((0x400, 0x4000_0000)),
    );
    let img = Image::parse(&b).unwrap();
    assert_eq!(img.mem_bytes(), 0x1000 + (48 << 20));
    assert_eq!(
        img.plan(&[Range::new(0, 2 << 30)], |_| false),
        Ok(()),
        "{:?}",
        img.segments()
    );
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600), flips in proptest::collection::vec((0usize..0x3000, proptest::prelude::any::<u8>()), 0..8)) {
        let _ = Image::parse(&bytes);
        let mut g = good();
        for (at, x) in flips {
            g[at] ^= x;
        }
        if let Ok(img) = Image::parse(&g) {
            // Whatever parsed is consistent: segments disjoint, inside the file.
            for s in img.segments() {
                proptest::prop_assert!(s.file_size <= s.mem_size);
                proptest::prop_assert_eq!(img.file_bytes(s).len() as u64, s.file_size);
            }
        }
    }
}

/// Writes a note (owner `name`, type `ty`, descriptor `desc`) at `at`;
/// returns its length.
fn put_note(b: &mut [u8], at: usize, name: &[u8], ty: u32, desc: &[u8]) -> usize {
    let nl = name.len().next_multiple_of(4);
    let dl = desc.len().next_multiple_of(4);
    for (k, w) in [name.len() as u32, desc.len() as u32, ty]
        .iter()
        .enumerate()
    {
        b[at + 4 * k..at + 4 * k + 4].copy_from_slice(&w.to_le_bytes());
    }
    b[at + 12..at + 12 + name.len()].copy_from_slice(name);
    b[at + 12 + nl..at + 12 + nl + desc.len()].copy_from_slice(desc);
    12 + nl + dl
}

#[test]
fn notes_that_must_be_unique_are_refused_when_repeated() {
    // Two PVH entry notes in one segment: which would a loader take?
    let mut b = good();
    let n = 20;
    put_note(&mut b, 0x400 + n, b"Xen\0", 18, &0x20_0020u32.to_le_bytes());
    b[64 + 2 * 56 + 32..64 + 2 * 56 + 40].copy_from_slice(&40u64.to_le_bytes());
    assert_eq!(
        Image::parse(&b).unwrap_err(),
        ElfError::DuplicateNote { what: "PVH entry" }
    );
    // Two in two note segments.
    let two_segments = |len: u64| {
        build(
            &[
                (1, 5, 0x1000, 0x20_0000, 0x1000, 0x1000),
                (4, 4, 0x400, 0, len, len),
                (4, 4, 0x500, 0, len, len),
            ],
            0x2000,
            Some((0x400, 0x20_0010)),
        )
    };
    let mut b = two_segments(20);
    put_note(&mut b, 0x500, b"Xen\0", 18, &0x20_0010u32.to_le_bytes());
    assert_eq!(
        Image::parse(&b).unwrap_err(),
        ElfError::DuplicateNote { what: "PVH entry" }
    );
    // Two kho reads notes (in two segments): preflight could judge by
    // either list.
    let mut b = two_segments(0x40);
    let reads = crate::abi::reads::NOTE_READS;
    put_note(&mut b, 0x400 + 20, b"kho\0", reads, b"memfd-v1\0\0\0\0");
    let img = Image::parse(&b[..]).unwrap();
    assert!(img.reads().is_some());
    put_note(&mut b, 0x500, b"kho\0", reads, b"memfd-v2\0\0\0\0");
    assert_eq!(
        Image::parse(&b).unwrap_err(),
        ElfError::DuplicateNote { what: "kho reads" }
    );
}
