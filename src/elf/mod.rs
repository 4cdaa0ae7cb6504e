//! The next kernel's image: an ELF64 x86_64 executable with a PVH entry,
//! parsed and checked from a byte slice before anything is copied.
//!
//! [`Image::parse`] reads the headers (no allocation, no panics) and checks
//! what a loader relies on: ELF64, little-endian, x86_64, `ET_EXEC`; every
//! `PT_LOAD` inside the file, file size within memory size, destinations
//! page-aligned in the address space and not overlapping each other; the
//! PVH entry (a Xen note of type 18 in a `PT_NOTE` segment) inside a
//! loaded, executable segment. `Image::plan` (feature `arch`) then checks the destinations
//! against the machine: inside RAM and clear of every preserved range.
//! The image may be any PVH kernel, of any size, linked anywhere.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use crate::PAGE_SIZE;
use crate::ranges::Range;
use core::fmt;
use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

/// Most `PT_LOAD` segments an image may have.
pub const MAX_SEGMENTS: usize = 16;
/// `p_type` of a loadable segment.
const PT_LOAD: u32 = 1;
/// `p_type` of a note segment.
const PT_NOTE: u32 = 4;
/// `p_flags` bit: executable.
const PF_X: u32 = 1;
/// The Xen note type of the 32-bit PVH entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// Why an image cannot be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Shorter than its headers say.
    Truncated,
    /// Not an ELF file (bad magic).
    NotElf,
    /// Not ELF64, little-endian, version 1.
    WrongClass,
    /// Not for x86_64 (`e_machine` is given).
    WrongMachine(u16),
    /// Not an executable (`e_type` is given; relocatable and shared objects
    /// would need relocation, which nothing here does).
    NotExecutable(u16),
    /// The program header table is malformed (entry size, count, place).
    BadProgramHeaders,
    /// No loadable segment.
    NoSegments,
    /// More than [`MAX_SEGMENTS`] loadable segments.
    TooManySegments,
    /// A segment's file bytes lie outside the file.
    SegmentOutsideFile {
        /// Index of the program header.
        index: usize,
    },
    /// A segment's file size is larger than its memory size.
    FileSizeOverMemSize {
        /// Index of the program header.
        index: usize,
    },
    /// A segment's destination wraps the address space or is not aligned
    /// like its file offset.
    BadAddress {
        /// Index of the program header.
        index: usize,
    },
    /// Two segments' destinations overlap.
    SegmentsOverlap {
        /// Index of the first program header.
        a: usize,
        /// Index of the second.
        b: usize,
    },
    /// No PVH entry note (Xen note type 18 in a `PT_NOTE` segment).
    NoPvhEntry,
    /// The image's `kho` reads note is malformed (see
    /// [`crate::abi::reads::ReadList::parse`]).
    BadReadsNote,
    /// A note that must be unique appears twice (in one note segment or in
    /// two): loaders could pick different ones.
    DuplicateNote {
        /// Which note (`PVH entry`, `kho reads`).
        what: &'static str,
    },
    /// The PVH entry point is not inside an executable loaded segment.
    EntryOutsideCode {
        /// The entry point.
        entry: u64,
    },
    /// A destination is not inside one RAM range of the memory map.
    NotInRam {
        /// The destination (page-rounded).
        range: Range,
    },
    /// A destination overlaps preserved memory.
    OverlapsPreserved {
        /// The destination (page-rounded).
        range: Range,
    },
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ElfError::*;
        match self {
            Truncated => f.write_str("image truncated: shorter than its headers say"),
            NotElf => f.write_str("image is not an ELF file"),
            WrongClass => f.write_str("image is not a little-endian ELF64 file"),
            WrongMachine(m) => write!(f, "image is for machine {m}, not x86_64 (62)"),
            NotExecutable(t) => write!(f, "image has ELF type {t}, not an executable (2)"),
            BadProgramHeaders => f.write_str("image program header table is malformed"),
            NoSegments => f.write_str("image has no loadable segment"),
            TooManySegments => write!(f, "image has more than {MAX_SEGMENTS} loadable segments"),
            SegmentOutsideFile { index } => {
                write!(f, "image segment {index} lies outside the file")
            }
            FileSizeOverMemSize { index } => write!(
                f,
                "image segment {index} has more file bytes than memory bytes"
            ),
            BadAddress { index } => write!(f, "image segment {index} has a bad address"),
            SegmentsOverlap { a, b } => write!(f, "image segments {a} and {b} overlap"),
            NoPvhEntry => f.write_str("image has no PVH entry note (Xen note type 18)"),
            BadReadsNote => f.write_str("image's kho reads note is malformed"),
            DuplicateNote { what } => write!(f, "image has two {what} notes"),
            EntryOutsideCode { entry } => write!(
                f,
                "image PVH entry {entry:#x} is not in an executable segment"
            ),
            NotInRam { range } => write!(f, "image segment {range} is not inside RAM"),
            OverlapsPreserved { range } => {
                write!(f, "image segment {range} would overwrite preserved memory")
            }
        }
    }
}

impl core::error::Error for ElfError {}

#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Ehdr {
    ident: [u8; 16],
    e_type: U16,
    machine: U16,
    version: U32,
    entry: U64,
    phoff: U64,
    shoff: U64,
    flags: U32,
    ehsize: U16,
    phentsize: U16,
    phnum: U16,
    shentsize: U16,
    shnum: U16,
    shstrndx: U16,
}

#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Phdr {
    p_type: U32,
    flags: U32,
    offset: U64,
    vaddr: U64,
    paddr: U64,
    filesz: U64,
    memsz: U64,
    align: U64,
}

/// One loadable segment: copy `file` bytes of the image to `dest`, then
/// zero up to `dest + mem_size`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Physical destination (`p_paddr`).
    pub dest: u64,
    /// Offset of the segment's bytes in the image.
    pub offset: u64,
    /// Bytes to copy from the image.
    pub file_size: u64,
    /// Bytes the segment takes in memory (the rest is zeroed).
    pub mem_size: u64,
    /// Whether the segment is executable.
    pub exec: bool,
}

impl Segment {
    /// The pages the segment touches in memory.
    pub fn pages(&self) -> Range {
        Range::new(self.dest, self.dest.saturating_add(self.mem_size)).pages_around()
    }
}

/// A parsed, checked image.
#[derive(Clone, Copy, Debug)]
pub struct Image<'a> {
    bytes: &'a [u8],
    segments: [Segment; MAX_SEGMENTS],
    count: usize,
    /// The 32-bit PVH entry point (physical).
    pub pvh_entry: u64,
    /// The descriptor of its `kho` reads note, if it has one.
    reads: Option<&'a [u8]>,
}

fn range_of(len: u64, at: u64, total: usize) -> Option<core::ops::Range<usize>> {
    let start = usize::try_from(at).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= total).then_some(start..end)
}

impl<'a> Image<'a> {
    /// The versions the image reads, from its `kho` ELF note
    /// (`kho::luo::ReadList`): `None` if it has no note, `Some(Err(()))`
    /// if the note is malformed.
    pub fn reads(&self) -> Option<Result<crate::abi::reads::ReadList<'a>, ()>> {
        self.reads
            .map(|d| crate::abi::reads::ReadList::parse(d).ok_or(()))
    }

    /// The versions the image reads: its reads note, or the empty list if
    /// it has none (a kernel without kho reads nothing).
    pub fn read_list(&self) -> Result<crate::abi::reads::ReadList<'a>, ElfError> {
        match self.reads() {
            None => Ok(crate::abi::reads::ReadList::NONE),
            Some(Ok(l)) => Ok(l),
            Some(Err(())) => Err(ElfError::BadReadsNote),
        }
    }

    /// Parses and checks `bytes` as a PVH kernel image.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ElfError> {
        let (eh, _) = Ehdr::ref_from_prefix(bytes).map_err(|_| ElfError::Truncated)?;
        if eh.ident.get(..4) != Some(b"\x7fELF".as_slice()) {
            return Err(ElfError::NotElf);
        }
        // Class 2 (64-bit), data 1 (little-endian), version 1.
        if eh.ident.get(4..7) != Some([2u8, 1, 1].as_slice()) || eh.version.get() != 1 {
            return Err(ElfError::WrongClass);
        }
        if eh.machine.get() != 62 {
            return Err(ElfError::WrongMachine(eh.machine.get()));
        }
        if eh.e_type.get() != 2 {
            return Err(ElfError::NotExecutable(eh.e_type.get()));
        }
        let n = usize::from(eh.phnum.get());
        if usize::from(eh.phentsize.get()) != size_of::<Phdr>() || n == 0 {
            return Err(ElfError::BadProgramHeaders);
        }
        let table = range_of(
            (n as u64).saturating_mul(size_of::<Phdr>() as u64),
            eh.phoff.get(),
            bytes.len(),
        )
        .and_then(|r| bytes.get(r))
        .ok_or(ElfError::BadProgramHeaders)?;
        let phdrs = <[Phdr]>::ref_from_bytes(table).map_err(|_| ElfError::BadProgramHeaders)?;

        let mut img = Image {
            bytes,
            segments: [Segment::default(); MAX_SEGMENTS],
            count: 0,
            pvh_entry: 0,
            reads: None,
        };
        let mut index_of = [0usize; MAX_SEGMENTS];
        let mut entry = None;
        for (index, ph) in phdrs.iter().enumerate() {
            match ph.p_type.get() {
                PT_LOAD => {
                    let (filesz, memsz) = (ph.filesz.get(), ph.memsz.get());
                    if filesz > memsz {
                        return Err(ElfError::FileSizeOverMemSize { index });
                    }
                    if range_of(filesz, ph.offset.get(), bytes.len()).is_none() {
                        return Err(ElfError::SegmentOutsideFile { index });
                    }
                    let dest = ph.paddr.get();
                    if memsz == 0 {
                        continue;
                    }
                    let bad = ElfError::BadAddress { index };
                    let end = dest.checked_add(memsz).ok_or(bad)?;
                    if end.checked_next_multiple_of(PAGE_SIZE).is_none()
                        || dest % PAGE_SIZE != ph.offset.get() % PAGE_SIZE
                    {
                        return Err(bad);
                    }
                    let seg = Segment {
                        dest,
                        offset: ph.offset.get(),
                        file_size: filesz,
                        mem_size: memsz,
                        exec: ph.flags.get() & PF_X != 0,
                    };
                    let slot = img
                        .segments
                        .get_mut(img.count)
                        .ok_or(ElfError::TooManySegments)?;
                    *slot = seg;
                    if let Some(i) = index_of.get_mut(img.count) {
                        *i = index;
                    }
                    img.count = img.count.saturating_add(1);
                }
                PT_NOTE => {
                    let r = range_of(ph.filesz.get(), ph.offset.get(), bytes.len())
                        .ok_or(ElfError::SegmentOutsideFile { index })?;
                    let notes = bytes.get(r).unwrap_or(&[]);
                    for (name, ty, desc) in each_note(notes) {
                        if name == b"Xen\0" && ty == XEN_ELFNOTE_PHYS32_ENTRY {
                            if entry.is_some() {
                                return Err(ElfError::DuplicateNote { what: "PVH entry" });
                            }
                            entry = Some(pvh_entry(desc).ok_or(ElfError::NoPvhEntry)?);
                        } else if name == crate::abi::reads::NOTE_NAME
                            && ty == crate::abi::reads::NOTE_READS
                        {
                            if img.reads.is_some() {
                                return Err(ElfError::DuplicateNote { what: "kho reads" });
                            }
                            img.reads = Some(desc);
                        }
                    }
                }
                _ => {}
            }
        }
        if img.count == 0 {
            return Err(ElfError::NoSegments);
        }
        // Segments must not share a page: the trampoline copies them whole.
        let segs = img.segments.get(..img.count).unwrap_or(&[]);
        for (i, a) in segs.iter().enumerate() {
            for (j, b) in segs.iter().enumerate().skip(i.saturating_add(1)) {
                if a.pages().overlaps(&b.pages()) {
                    let (a, b) = (
                        index_of.get(i).copied().unwrap_or(i),
                        index_of.get(j).copied().unwrap_or(j),
                    );
                    return Err(ElfError::SegmentsOverlap { a, b });
                }
            }
        }
        let entry = entry.ok_or(ElfError::NoPvhEntry)?;
        let in_code = segs
            .iter()
            .any(|s| s.exec && s.dest <= entry && entry < s.dest.saturating_add(s.file_size));
        if !in_code {
            return Err(ElfError::EntryOutsideCode { entry });
        }
        img.pvh_entry = entry;
        Ok(img)
    }

    /// The loadable segments, in program-header order.
    #[cfg(any(test, feature = "arch"))]
    pub fn segments(&self) -> &[Segment] {
        self.segments.get(..self.count).unwrap_or(&[])
    }

    /// The file bytes of `seg` (checked by [`parse`](Self::parse)).
    #[cfg(any(test, feature = "arch"))]
    pub fn file_bytes(&self, seg: &Segment) -> &'a [u8] {
        range_of(seg.file_size, seg.offset, self.bytes.len())
            .and_then(|r| self.bytes.get(r))
            .unwrap_or(&[])
    }

    /// The lowest and highest address the image occupies, page-rounded.
    #[cfg(any(test, feature = "arch"))]
    pub fn span(&self) -> Range {
        let segs = self.segments();
        let lo = segs.iter().map(|s| s.pages().start).min().unwrap_or(0);
        let hi = segs.iter().map(|s| s.pages().end).max().unwrap_or(0);
        Range::new(lo, hi)
    }

    /// Bytes of memory the image occupies (sum of its segments' pages).
    #[cfg(test)]
    pub(crate) fn mem_bytes(&self) -> u64 {
        self.segments().iter().map(|s| s.pages().len()).sum()
    }

    /// Checks the destinations against this machine: each inside one RAM
    /// range and clear of what must be kept (`kept(range)`: whether the
    /// range holds preserved memory, asked once a segment).
    #[cfg(any(test, feature = "arch"))]
    pub fn plan(&self, ram: &[Range], kept: impl Fn(Range) -> bool) -> Result<(), ElfError> {
        for s in self.segments() {
            let range = s.pages();
            if !ram.iter().any(|r| r.covers(range)) {
                return Err(ElfError::NotInRam { range });
            }
            if kept(range) {
                return Err(ElfError::OverlapsPreserved { range });
            }
        }
        Ok(())
    }
}

/// Every well-formed note of a note segment's bytes, in order: owner name
/// (with its NUL), type, descriptor. The walk stops at the first note that
/// does not fit.
fn each_note(mut notes: &[u8]) -> impl Iterator<Item = (&[u8], u32, &[u8])> {
    // Each note: namesz, descsz, type (u32 each), name padded to 4, desc
    // padded to 4.
    core::iter::from_fn(move || {
        let (hdr, rest) = <[U32; 3]>::ref_from_prefix(notes).ok()?;
        let [namesz, descsz, t] = hdr.map(|x| x.get());
        let (namesz, descsz) = (namesz as usize, descsz as usize);
        let name_len = namesz.checked_next_multiple_of(4)?;
        let desc_len = descsz.checked_next_multiple_of(4)?;
        let owner = rest.get(..namesz)?;
        let desc = rest.get(name_len..name_len.checked_add(descsz)?)?;
        notes = rest.get(name_len.checked_add(desc_len)?..).unwrap_or(&[]);
        Some((owner, t, desc))
    })
}

/// The PVH entry of a note's descriptor (4 or 8 bytes).
fn pvh_entry(desc: &[u8]) -> Option<u64> {
    match desc.len() {
        4 => Some(u64::from(u32::from_le_bytes(desc.try_into().ok()?))),
        8 => Some(u64::from_le_bytes(desc.try_into().ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
