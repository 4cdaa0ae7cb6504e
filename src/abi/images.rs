//! A bundle of kernel images in one boot module (`kho-images-v1`), so that
//! a chain of kexecs can go from one build to another and back: each
//! kernel passes the bundle on unchanged and picks its successor from it.
//!
//! ```text
//! page 0:  ImagesHeader, then `count` ImageEntry records
//! then:    each image's ELF bytes, starting on a 4 KiB boundary
//! ```
//!
//! Images start on page boundaries so that a kexec can copy their pages
//! in place, straight from the module.

use alloc::vec::Vec;
use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The bundle's magic, its first 8 bytes.
pub const IMAGES_MAGIC: [u8; 8] = *b"KHOIMGS1";
/// The bundle's version string (its magic says the same in 8 bytes).
pub const IMAGES_VERSION: &str = "kho-images-v1";
/// The command line of the boot module that carries a bundle.
pub const IMAGES_MODULE: &str = "kho,images";
/// Most images in a bundle (their records fit in the first page).
pub const MAX_IMAGES: usize = 255;
/// Alignment of every image in the bundle.
pub const IMAGE_ALIGN: usize = 4096;

/// The bundle's header (16 bytes, LE).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ImagesHeader {
    /// [`IMAGES_MAGIC`].
    pub magic: [u8; 8],
    /// Images in the bundle.
    pub count: U32,
    /// Reserved, 0.
    pub flags: U32,
}

/// Where one image lies in the bundle (16 bytes, LE).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ImageEntry {
    /// Offset from the bundle's start, a multiple of [`IMAGE_ALIGN`].
    pub offset: U64,
    /// Bytes.
    pub len: U64,
}

/// Why bytes are not a bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImagesError {
    /// No [`IMAGES_MAGIC`]: not a bundle (perhaps a single image).
    NotABundle,
    /// The header or a record is malformed: flags set, no image, too many,
    /// an image unaligned, empty, past the end, or overlapping another.
    Malformed,
    /// [`Bundle::build`]: image `N` (from 0) is empty; a bundle never
    /// holds an empty image (its reader refuses one).
    EmptyImage(usize),
}

impl core::fmt::Display for ImagesError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ImagesError::NotABundle => f.write_str("not a kho image bundle"),
            ImagesError::Malformed => f.write_str("malformed kho image bundle"),
            ImagesError::EmptyImage(i) => {
                write!(f, "kho image bundle: image {i} is empty")
            }
        }
    }
}

impl core::error::Error for ImagesError {}

/// A checked bundle: the offsets and lengths of its images.
#[derive(Clone, Copy, Debug)]
pub struct Bundle<'a> {
    entries: &'a [ImageEntry],
}

impl<'a> Bundle<'a> {
    /// Reads and checks a bundle: every image page aligned, non-empty,
    /// inside `bytes`, after the header page, and not overlapping another.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ImagesError> {
        let (h, rest) =
            ImagesHeader::ref_from_prefix(bytes).map_err(|_| ImagesError::NotABundle)?;
        if h.magic != IMAGES_MAGIC {
            return Err(ImagesError::NotABundle);
        }
        let count = usize::try_from(h.count.get()).map_err(|_| ImagesError::Malformed)?;
        if h.flags.get() != 0 || count == 0 || count > MAX_IMAGES {
            return Err(ImagesError::Malformed);
        }
        let (entries, _) = <[ImageEntry]>::ref_from_prefix_with_elems(rest, count)
            .map_err(|_| ImagesError::Malformed)?;
        let mut end = IMAGE_ALIGN as u64;
        for e in entries {
            let (off, len) = (e.offset.get(), e.len.get());
            let stop = off.checked_add(len).ok_or(ImagesError::Malformed)?;
            if len == 0 || off % IMAGE_ALIGN as u64 != 0 || off < end || stop > bytes.len() as u64 {
                return Err(ImagesError::Malformed);
            }
            end = stop;
        }
        Ok(Self { entries })
    }

    /// Images in the bundle.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it has no image (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Image `i` as (offset, length) in the bundle.
    pub fn image(&self, i: usize) -> Option<(u64, u64)> {
        self.entries.get(i).map(|e| (e.offset.get(), e.len.get()))
    }

    /// Writes a bundle of `images` (at least one, at most
    /// [`MAX_IMAGES`], none empty): exactly what [`Bundle::parse`]
    /// accepts.
    pub fn build(images: &[&[u8]]) -> Result<Vec<u8>, ImagesError> {
        if images.is_empty() || images.len() > MAX_IMAGES {
            return Err(ImagesError::Malformed);
        }
        if let Some(i) = images.iter().position(|i| i.is_empty()) {
            return Err(ImagesError::EmptyImage(i));
        }
        let mut out = alloc::vec![0u8; IMAGE_ALIGN];
        let header = ImagesHeader {
            magic: IMAGES_MAGIC,
            count: (images.len() as u32).into(),
            flags: 0.into(),
        };
        let mut at = 16;
        out[..16].copy_from_slice(header.as_bytes());
        for img in images {
            let offset = out.len() as u64;
            let e = ImageEntry {
                offset: offset.into(),
                len: (img.len() as u64).into(),
            };
            out[at..at + 16].copy_from_slice(e.as_bytes());
            at += 16;
            out.extend_from_slice(img);
            out.resize(out.len().next_multiple_of(IMAGE_ALIGN), 0);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What build writes, parse reads: an empty image is refused at
    /// build (naming it), never written for the reader to refuse; every
    /// bundle build accepts parses to the same images.
    #[test]
    fn build_writes_only_what_parse_reads() {
        assert_eq!(Bundle::build(&[b"a", b""]), Err(ImagesError::EmptyImage(1)));
        assert_eq!(Bundle::build(&[]), Err(ImagesError::Malformed));
        for lens in [&[1usize][..], &[4096, 1], &[5000, 4097, 3]] {
            let imgs: std::vec::Vec<std::vec::Vec<u8>> =
                lens.iter().map(|&n| std::vec![7u8; n]).collect();
            let refs: std::vec::Vec<&[u8]> = imgs.iter().map(|v| v.as_slice()).collect();
            let bytes = Bundle::build(&refs).unwrap();
            let b = Bundle::parse(&bytes).unwrap();
            assert_eq!(b.len(), lens.len());
            for (i, &n) in lens.iter().enumerate() {
                let (off, len) = b.image(i).unwrap();
                assert_eq!(len, n as u64);
                assert_eq!(&bytes[off as usize..][..n], refs[i]);
            }
        }
    }

    /// Two small images in a bundle, pinned byte for byte: a layout
    /// change needs a new version string.
    #[test]
    fn golden_bundle_pins_the_layout() {
        let a: std::vec::Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let b = b"second image";
        let bytes = Bundle::build(&[&a, b]).unwrap();
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/images-v1.bin");
        if std::env::var_os("KHO_BLESS").is_some() {
            std::fs::write(&path, &bytes).unwrap();
        }
        let golden =
            std::fs::read(&path).expect("tests/golden/images-v1.bin (KHO_BLESS=1 writes it)");
        assert_eq!(
            bytes, golden,
            "the kho-images-v1 layout changed: that needs a new version string"
        );
        let parsed = Bundle::parse(&golden).unwrap();
        assert_eq!(parsed.image(0), Some((4096, 5000)));
        assert_eq!(parsed.image(1), Some((12288, 12)));
    }

    #[test]
    fn a_bundle_round_trips_and_bad_ones_are_refused() {
        let a = [1u8; 5000];
        let b = [2u8; 10];
        let bytes = Bundle::build(&[&a, &b]).unwrap();
        let bundle = Bundle::parse(&bytes).unwrap();
        assert_eq!(bundle.len(), 2);
        let (off, len) = bundle.image(1).unwrap();
        assert_eq!(off % 4096, 0);
        assert_eq!(&bytes[off as usize..(off + len) as usize], &b);
        assert_eq!(bundle.image(2), None);
        assert_eq!(Bundle::parse(&a).unwrap_err(), ImagesError::NotABundle);
        // Every byte of the header page flipped: refused or still sound.
        for at in 0..48 {
            let mut bad = bytes.clone();
            bad[at] ^= 0x41;
            if let Ok(x) = Bundle::parse(&bad) {
                for i in 0..x.len() {
                    let (o, l) = x.image(i).unwrap();
                    assert!(o % 4096 == 0 && o + l <= bad.len() as u64 && l > 0);
                }
            }
        }
        let mut short = bytes.clone();
        short.truncate(bytes.len() - 4096);
        assert_eq!(Bundle::parse(&short).unwrap_err(), ImagesError::Malformed);
    }
}
