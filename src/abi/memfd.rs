//! The memfd formats (`memfd-v1`, `memfd-v2`): a descriptor in the blob
//! and a record array in preserved vmalloc; the seals and per-folio flags
//! both share.

/// Largest folio order a reader accepts.
pub const MAX_FOLIO_ORDER: u32 = 9;

bitflags::bitflags! {
    /// A memfd's seals, with Linux's `F_SEAL_*` values (the same bits on
    /// the wire, in both memfd formats).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Seals: u32 {
        /// No more seals may be added.
        const SEAL = 0x1;
        /// The file may not shrink.
        const SHRINK = 0x2;
        /// The file may not grow.
        const GROW = 0x4;
        /// The contents may not change (writes and hole punches refused).
        const WRITE = 0x8;
        /// Like `WRITE` for every future writer (this file has no
        /// mappings, so it refuses the same operations).
        const FUTURE_WRITE = 0x10;
    }
}

/// The seals by name, as [`Seals`] values (`seal::GROW | seal::SHRINK`).
pub mod seal {
    use super::Seals;
    /// No more seals may be added.
    pub const SEAL: Seals = Seals::SEAL;
    /// The file may not shrink.
    pub const SHRINK: Seals = Seals::SHRINK;
    /// The file may not grow.
    pub const GROW: Seals = Seals::GROW;
    /// The contents may not change.
    pub const WRITE: Seals = Seals::WRITE;
    /// Like `WRITE` for every future writer.
    pub const FUTURE_WRITE: Seals = Seals::FUTURE_WRITE;
    /// Every seal this crate knows.
    pub const ALL: Seals = Seals::all();
}

bitflags::bitflags! {
    /// Per-folio record flags, in bits 52 to 55 of a record's first word
    /// (the frame number below, the folio's order above: [`flag`]).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct FolioFlags: u64 {
        /// The folio was written (always set by our writers).
        const DIRTY = 1 << 52;
        /// The folio's contents are valid; a folio without it is zeroed
        /// on restore.
        const UPTODATE = 1 << 53;
    }
}

/// The bits of a record's first word above the frame number, as plain
/// words for the record loops ([`FolioFlags`] names the same bits).
pub mod flag {
    use super::FolioFlags;
    /// [`FolioFlags::DIRTY`].
    pub const DIRTY: u64 = FolioFlags::DIRTY.bits();
    /// [`FolioFlags::UPTODATE`].
    pub const UPTODATE: u64 = FolioFlags::UPTODATE.bits();
    /// Where the folio's order is kept (4 bits).
    pub const ORDER_SHIFT: u32 = 56;
    /// The order's bits.
    pub const ORDER_MASK: u64 = 0xf << ORDER_SHIFT;
    /// Every bit a reader understands above the frame number.
    pub const KNOWN: u64 = DIRTY | UPTODATE | ORDER_MASK;
}

/// The first word of a record (both formats): frame number in bits 0 to
/// 51, [`FolioFlags`] in 52 to 55, the order in 56 to 59. Each part is
/// taken out on demand (the restore loop reads them one by one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FolioWord(pub u64);

impl FolioWord {
    /// The frame number's bits.
    const FRAME: u64 = (1u64 << 52).wrapping_sub(1);

    /// The folio's physical address.
    #[inline(always)]
    pub const fn phys(self) -> u64 {
        (self.0 & Self::FRAME) << 12
    }

    /// Its order (not checked against [`MAX_FOLIO_ORDER`] here).
    #[inline(always)]
    pub const fn order(self) -> u32 {
        ((self.0 & flag::ORDER_MASK) >> flag::ORDER_SHIFT) as u32
    }

    /// The flags this crate knows.
    #[cfg(feature = "tools")]
    #[inline(always)]
    pub const fn flags(self) -> FolioFlags {
        FolioFlags::from_bits_truncate(self.0)
    }

    /// Whether the folio's contents are valid.
    #[inline(always)]
    pub(crate) const fn uptodate(self) -> bool {
        self.0 & flag::UPTODATE != 0
    }

    /// Bits set above the frame number that no reader knows (a reader
    /// refuses the record).
    #[inline(always)]
    pub(crate) const fn unknown(self) -> u64 {
        self.0 & !(flag::KNOWN | Self::FRAME)
    }
}

/// `memfd-v1`: one 16-byte record per folio.
pub mod v1 {
    use crate::abi::vmalloc::VmallocRoot;
    use zerocopy::byteorder::little_endian::U64;
    use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

    /// The format's version string.
    pub const VERSION: &str = "memfd-v1";

    /// Bytes per record.
    #[cfg(feature = "tools")]
    pub const RECORD_BYTES: usize = 16;

    /// The descriptor.
    #[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct Header {
        /// File position.
        pub pos: U64,
        /// File size in bytes.
        pub size: U64,
        /// Records (folios) in the array.
        pub folios: U64,
        /// The record array.
        pub array: VmallocRoot,
    }

    /// One folio.
    #[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct Record {
        /// Frame number and flags.
        pub frame: U64,
        /// File page index.
        pub index: U64,
    }
}

/// `memfd-v2`: one 16-byte record per run of folios, up to
/// [`v2::INLINE_RECORDS`] of them inline after the descriptor.
pub mod v2 {
    use crate::abi::vmalloc::VmallocRoot;
    use zerocopy::byteorder::little_endian::{U32, U64};
    use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

    /// The format's version string.
    pub const VERSION: &str = "memfd-v2";

    /// Bytes per record.
    pub const RECORD_BYTES: usize = 16;

    /// Most records kept inline after the descriptor.
    pub const INLINE_RECORDS: u64 = 4;

    /// Most folios one record covers.
    pub const MAX_RUN: u64 = 1 << 24;

    /// Bits of the file page index in word 1.
    pub const INDEX_BITS: u32 = 40;

    /// The descriptor.
    #[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct Header {
        /// File position.
        pub pos: U64,
        /// File size in bytes.
        pub size: U64,
        /// Seals ([`super::seal`]).
        pub seals: U32,
        /// Reserved, 0.
        pub flags: U32,
        /// Records.
        pub records: U64,
        /// The record array, or all zero for inline records.
        pub array: VmallocRoot,
    }

    /// One run of folios.
    #[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct Record {
        /// Frame number and flags of the first folio.
        pub frame: U64,
        /// File page index and folio count minus one.
        pub run: U64,
    }

    /// The file page index in a record's second word.
    #[inline]
    pub const fn run_index(run: u64) -> u64 {
        run & ((1u64 << INDEX_BITS).wrapping_sub(1))
    }

    /// The folio count in a record's second word.
    #[inline]
    pub const fn run_count(run: u64) -> u64 {
        (run >> INDEX_BITS).saturating_add(1)
    }
}
