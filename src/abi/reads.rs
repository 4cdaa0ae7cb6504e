//! The reads note: the versions a kernel image can read, in its ELF
//! note, and how a kernel builds its own at compile time.

/// One version of a family's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    /// Its name (`memfd-v2`).
    pub name: &'static str,
    /// Feature bits: for a reader, the bits it understands; for a writer,
    /// the bits it may set.
    pub features: u64,
}

impl Version {
    /// A version with no feature bits.
    pub const fn new(name: &'static str) -> Self {
        Self { name, features: 0 }
    }
}

/// (`kho-reads-v1`): NUL-terminated entries `NAME` or `NAME+FEATURES`
/// (hexadecimal feature bits it understands); empty entries (padding) are
/// skipped.
#[derive(Clone, Copy, Debug)]
pub struct ReadList<'a> {
    bytes: &'a [u8],
}

/// The ELF note's owner name.
pub const NOTE_NAME: &[u8; 4] = b"kho\0";
/// The reads note's version string (its layout is named by the note's
/// owner and type, [`NOTE_NAME`] and [`NOTE_READS`]).
pub const READS_VERSION: &str = "kho-reads-v1";
/// The ELF note's type.
pub const NOTE_READS: u32 = 0x4b52_0001;

impl<'a> ReadList<'a> {
    /// The list of a kernel that reads nothing (an image with no note).
    pub const NONE: ReadList<'static> = ReadList { bytes: b"" };

    /// A list from a note's descriptor bytes; `None` if an entry is not
    /// UTF-8 or its features are not hexadecimal.
    ///
    /// Also `None` if a version is listed twice (which entry's features
    /// would count?), or if the last entry has no terminating NUL (a
    /// truncated `memfd-v12` must not read as `memfd-v1`).
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        if bytes.last().is_some_and(|&b| b != 0) {
            return None;
        }
        let l = Self { bytes };
        for e in bytes.split(|&b| b == 0) {
            let s = core::str::from_utf8(e).ok()?;
            if let Some((_, feat)) = s.split_once('+') {
                u64::from_str_radix(feat, 16).ok()?;
            }
        }
        for (i, (name, _)) in l.versions().enumerate() {
            if l.versions()
                .skip(i.saturating_add(1))
                .any(|(n, _)| n == name)
            {
                return None;
            }
        }
        Some(l)
    }

    /// The versions, in the image's order.
    pub fn versions(&self) -> impl Iterator<Item = (&'a str, u64)> + 'a {
        self.bytes.split(|&b| b == 0).filter_map(|e| {
            let s = core::str::from_utf8(e).ok().filter(|s| !s.is_empty())?;
            Some(match s.split_once('+') {
                Some((n, f)) => (n, u64::from_str_radix(f, 16).unwrap_or(0)),
                None => (s, 0),
            })
        })
    }

    /// Whether a payload of `version` with `required` bits is readable.
    pub(crate) fn reads(&self, version: &str, required: u64) -> bool {
        self.versions()
            .any(|(n, f)| n == version && required & !f == 0)
    }
}

/// Builds a `kho` reads note at compile time: `desc` is the list of
/// NUL-terminated entries, its length a multiple of 4 (pad with NULs).
#[repr(C, align(4))]
pub struct ReadsNote<const N: usize> {
    namesz: u32,
    descsz: u32,
    ty: u32,
    name: [u8; 4],
    desc: [u8; N],
}

/// Bytes of the reads list naming every version of `lists` (each name
/// with its NUL, padded to a multiple of 4): the `N` of
/// [`ReadsNote::of`].
pub const fn reads_len(lists: &[&[Version]]) -> usize {
    let mut n = 0usize;
    let mut i = 0usize;
    while i < lists.len() {
        let list = lists[i];
        let mut j = 0usize;
        while j < list.len() {
            n += list[j].name.len() + features_len(list[j].features) + 1;
            j += 1;
        }
        i += 1;
    }
    n.next_multiple_of(4)
}

/// Bytes of an entry's feature suffix: `+` and the bits in lowercase hex,
/// none for no bits.
const fn features_len(f: u64) -> usize {
    if f == 0 {
        return 0;
    }
    1 + (64 - f.leading_zeros() as usize).div_ceil(4)
}

impl<const N: usize> ReadsNote<N> {
    /// The note listing, in order, every version of `lists`: the read
    /// lists of the handlers the kernel registers (each the same constant
    /// it registers, so the note cannot disagree with them), then the
    /// kernel's other formats. `N` must be [`reads_len`]`(lists)`; a
    /// mismatch, an empty name or a name with a NUL fails the build.
    pub const fn of(lists: &[&[Version]]) -> Self {
        assert!(reads_len(lists) == N, "N must be reads_len(lists)");
        let mut desc = [0u8; N];
        let mut at = 0usize;
        let mut i = 0usize;
        while i < lists.len() {
            let list = lists[i];
            let mut j = 0usize;
            while j < list.len() {
                let b = list[j].name.as_bytes();
                assert!(!b.is_empty(), "an empty version name");
                let mut k = 0usize;
                while k < b.len() {
                    assert!(b[k] != 0, "a version name with a NUL");
                    desc[at] = b[k];
                    at += 1;
                    k += 1;
                }
                // The reader's feature bits, as `+hex`.
                let f = list[j].features;
                let digits = features_len(f);
                if digits > 0 {
                    desc[at] = b'+';
                    let mut d = 1usize;
                    while d < digits {
                        let nibble = (f >> (4 * (digits - 1 - d))) & 0xf;
                        desc[at + d] = b"0123456789abcdef"[nibble as usize];
                        d += 1;
                    }
                    at += digits;
                }
                // The NUL is already there.
                at += 1;
                j += 1;
            }
            i += 1;
        }
        Self::new(&desc)
    }

    /// The note's list of entries (what [`ReadList::parse`] reads).
    #[cfg(test)]
    pub(crate) const fn desc(&self) -> &[u8; N] {
        &self.desc
    }
}

impl<const N: usize> ReadsNote<N> {
    /// The list the note holds, as a next kernel's loader reads it.
    pub fn list(&self) -> Option<ReadList<'_>> {
        ReadList::parse(&self.desc)
    }

    /// The note for `desc`.
    pub(crate) const fn new(desc: &[u8; N]) -> Self {
        assert!(
            N.is_multiple_of(4),
            "pad the reads list to a multiple of 4 bytes"
        );
        Self {
            namesz: 4,
            descsz: N as u32,
            ty: NOTE_READS,
            name: *NOTE_NAME,
            desc: *desc,
        }
    }
}
