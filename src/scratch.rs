//! Scratch areas: memory that never holds preserved pages.
//!
//! The next kernel is loaded into scratch and allocates only from scratch
//! until it has reserved every preserved range, so nothing it does early can
//! land on preserved memory. Scratch areas are chosen once, at cold boot,
//! and handed over unchanged on every kexec (a chain of kexecs keeps the
//! same areas: the image of every later kernel goes where the first went).
//!
//! Cold-boot policy (`cold_boot`; choosing scratch is the architecture
//! layer's, feature `arch`): one area, 2 MiB aligned, in the RAM
//! region that holds the kernel image, from the start of that region (or
//! `floor`, if higher) to past the image plus `reserve_after` bytes, which
//! must cover the next kernel's image growth, its boot structures and its
//! early heap; and at least `MIN_SCRATCH` bytes if the region allows.
//!
//! How much to ask for (`cold_boot_reserve`): an eighth of RAM
//! (`RAM_FRACTION`), never less than the early allocations need (the
//! floor), never past the image's RAM region; or what the kernel's command
//! line asks for (`kho.scratch=MIB` on x86_64), still with the floor. In
//! the spirit of Linux's `kho_scratch`: scratch must grow with the machine,
//! because the next kernel's image is staged and its early allocations are
//! made there.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub(crate) use crate::abi::scratch::{MAX_SCRATCH, SCRATCH_VERSION, ScratchRecord};
use crate::ranges::Range;
#[cfg(any(test, feature = "arch"))]
use crate::ranges::RangeSet;
use core::fmt;
use zerocopy::FromBytes;

/// Smallest scratch area the cold-boot policy chooses, when RAM allows.
#[cfg(any(test, feature = "arch"))]
pub const MIN_SCRATCH: u64 = 64 << 20;
const ALIGN: u64 = 2 << 20;

/// Why scratch areas could not be chosen or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScratchError {
    /// No RAM region holds the kernel image.
    ImageNotInRam,
    /// Too little room for scratch: the region holding the image at cold
    /// boot, or (a kernel's own check) handed-over areas that cannot hold
    /// its early allocations.
    TooSmall {
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// The handed-over list is empty, too long, or not a whole number of
    /// records.
    BadLength {
        /// Its length in bytes.
        bytes: usize,
    },
    /// A handed-over area is misaligned, empty, outside RAM or overlaps
    /// another.
    BadArea {
        /// Index of the area.
        index: usize,
    },
}

impl fmt::Display for ScratchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScratchError::ImageNotInRam => f.write_str("the kernel image is not in a RAM region"),
            ScratchError::TooSmall { needed, available } => {
                write!(
                    f,
                    "scratch too small: {needed:#x} bytes needed in one run, {available:#x} there"
                )
            }
            ScratchError::BadLength { bytes } => {
                write!(
                    f,
                    "scratch list of {bytes} bytes: want 1 to {MAX_SCRATCH} records of 16 bytes"
                )
            }
            ScratchError::BadArea { index } => write!(
                f,
                "scratch area {index} is misaligned, empty, outside RAM or overlapping"
            ),
        }
    }
}

impl core::error::Error for ScratchError {}

/// The scratch areas of this boot, sorted, at most `MAX_SCRATCH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scratch {
    areas: [Range; MAX_SCRATCH],
    len: usize,
}

impl Scratch {
    /// The areas.
    pub fn areas(&self) -> &[Range] {
        self.areas.get(..self.len).unwrap_or(&[])
    }

    /// Whether any byte of `r` is in scratch.
    pub fn overlaps(&self, r: Range) -> bool {
        self.areas().iter().any(|a| a.overlaps(&r))
    }

    /// The handed-over form: one [`ScratchRecord`] per area.
    pub(crate) fn records(&self) -> impl Iterator<Item = ScratchRecord> + '_ {
        self.areas().iter().map(|a| ScratchRecord {
            start: a.start.into(),
            size: a.len().into(),
        })
    }

    /// Reads and checks a handed-over list: 1 to `MAX_SCRATCH` records,
    /// each 2 MiB aligned, not empty, inside one RAM range of `ram`, in
    /// increasing order without overlap.
    pub fn from_records(bytes: &[u8], ram: &[Range]) -> Result<Self, ScratchError> {
        let recs = <[ScratchRecord]>::ref_from_bytes(bytes)
            .map_err(|_| ScratchError::BadLength { bytes: bytes.len() })?;
        if recs.is_empty() || recs.len() > MAX_SCRATCH {
            return Err(ScratchError::BadLength { bytes: bytes.len() });
        }
        let mut s = Scratch {
            areas: [Range::new(0, 0); MAX_SCRATCH],
            len: 0,
        };
        let mut floor = 0u64;
        for (index, (rec, slot)) in recs.iter().zip(s.areas.iter_mut()).enumerate() {
            let (start, size) = (rec.start.get(), rec.size.get());
            let end = start
                .checked_add(size)
                .ok_or(ScratchError::BadArea { index })?;
            let r = Range::new(start, end);
            let ok = start.is_multiple_of(ALIGN)
                && size.is_multiple_of(ALIGN)
                && size > 0
                && start >= floor
                && ram.iter().any(|x| x.covers(r));
            if !ok {
                return Err(ScratchError::BadArea { index });
            }
            *slot = r;
            floor = end;
        }
        s.len = recs.len();
        Ok(s)
    }
}

impl Scratch {
    /// Whether a kernel that boots in these areas can make its early
    /// allocations there, clear of `keep` (its image, its modules, low
    /// memory), as a first-fit allocator would make them, lowest address
    /// first: `pages` single 4 KiB pages (page tables), then one run of
    /// `run` bytes aligned to `align` (a heap). A next kernel checks this
    /// before it allocates anything in handed-over scratch: if it cannot
    /// boot there, it refuses the handoff and boots cold, rather than die.
    ///
    /// [`ScratchError::TooSmall`] if not: `needed` is the run, `available`
    /// the largest aligned run left once the pages are taken.
    #[cfg(any(test, feature = "arch"))]
    pub fn holds_early(
        &self,
        keep: &[Range],
        pages: u64,
        run: u64,
        align: u64,
    ) -> Result<(), ScratchError> {
        // Room for the areas and a split per kept range; a list that
        // cannot hold a split counts as no room (a refusal, never an
        // overrun).
        let mut free: RangeSet<{ MAX_SCRATCH * 4 }> = RangeSet::new();
        let page = crate::PAGE_SIZE;
        let fits = self.areas().iter().all(|a| free.insert(*a).is_ok())
            && keep
                .iter()
                .filter(|k| !k.is_empty())
                .all(|k| free.carve(k.pages_around()).is_ok())
            && (0..pages).all(|_| free.alloc(page, page).is_some());
        let run = run.checked_next_multiple_of(page).unwrap_or(u64::MAX);
        if fits && free.clone().alloc(run, align).is_some() {
            return Ok(());
        }
        let available = match fits && align.is_power_of_two() {
            true => free
                .iter()
                .filter_map(|r| {
                    Some(
                        r.end
                            .saturating_sub(r.start.checked_next_multiple_of(align)?),
                    )
                })
                .max()
                .unwrap_or(0),
            false => 0,
        };
        Err(ScratchError::TooSmall {
            needed: run,
            available,
        })
    }
}

/// The default share of RAM that cold-boot scratch takes: one part in this.
#[cfg(any(test, feature = "arch"))]
pub const RAM_FRACTION: u64 = 8;

/// How many bytes past the image cold-boot scratch should reach (the
/// `reserve_after` of [`cold_boot`]): `requested` bytes if given, else an
/// eighth of all RAM in `ram`; never less than `early` (what the next
/// kernel's early allocations need), and cut to what the image's RAM
/// region holds past the image (then [`cold_boot`] still checks `early`
/// fits).
#[cfg(any(test, feature = "arch"))]
pub fn cold_boot_reserve(ram: &[Range], image: Range, early: u64, requested: Option<u64>) -> u64 {
    let total: u64 = ram.iter().map(|r| r.len()).fold(0, u64::saturating_add);
    let want = requested.unwrap_or(total / RAM_FRACTION).max(early);
    let room = ram
        .iter()
        .find(|r| r.covers(image))
        .map_or(0, |r| (r.end & !(ALIGN - 1)).saturating_sub(image.end));
    want.min(room).max(early)
}

/// Chooses the scratch area at cold boot (see the module documentation):
/// `ram` is the RAM of the memory map, `image` the kernel image, `floor` the
/// lowest address usable (e.g. above real-mode memory).
#[cfg(any(test, feature = "arch"))]
pub fn cold_boot(
    ram: &[Range],
    image: Range,
    floor: u64,
    reserve_after: u64,
) -> Result<Scratch, ScratchError> {
    let region = ram
        .iter()
        .find(|r| r.covers(image))
        .ok_or(ScratchError::ImageNotInRam)?;
    let start = region
        .start
        .max(floor)
        .checked_next_multiple_of(ALIGN)
        .ok_or(ScratchError::ImageNotInRam)?;
    let limit = region.end & !(ALIGN - 1);
    let want_end = image
        .end
        .checked_add(reserve_after)
        .and_then(|e| e.checked_next_multiple_of(ALIGN))
        .ok_or(ScratchError::TooSmall {
            needed: u64::MAX,
            available: limit.saturating_sub(start),
        })?;
    if start > image.start || want_end > limit {
        return Err(ScratchError::TooSmall {
            needed: want_end.saturating_sub(start),
            available: limit.saturating_sub(start),
        });
    }
    let end = want_end.max(start.saturating_add(MIN_SCRATCH).min(limit));
    let mut s = Scratch {
        areas: [Range::new(0, 0); MAX_SCRATCH],
        len: 1,
    };
    if let Some(a) = s.areas.first_mut() {
        *a = Range::new(start, end);
    }
    Ok(s)
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects
)]
mod tests {
    #[test]
    fn cold_boot_scratch_grows_with_ram_and_keeps_its_floor() {
        use super::*;
        let image = Range::new(2 << 20, 3 << 20);
        let mib = |n: u64| n << 20;
        let ram = |n: u64| [Range::new(1 << 20, mib(n))];
        // An eighth of RAM, the floor below that, the region above it.
        assert_eq!(
            cold_boot_reserve(&ram(512), image, mib(48), None),
            (mib(512) - mib(1)) / 8
        );
        assert_eq!(
            cold_boot_reserve(&ram(2048), image, mib(48), None),
            (mib(2048) - mib(1)) / 8
        );
        assert_eq!(cold_boot_reserve(&ram(128), image, mib(48), None), mib(48));
        assert_eq!(
            cold_boot_reserve(&ram(64), image, mib(48), Some(mib(1000))),
            mib(64) - mib(3)
        );
        // Asked for: taken, but never under the floor.
        assert_eq!(
            cold_boot_reserve(&ram(2048), image, mib(48), Some(mib(600))),
            mib(600)
        );
        assert_eq!(
            cold_boot_reserve(&ram(2048), image, mib(48), Some(mib(8))),
            mib(48)
        );
        // And cold_boot takes it: the area ends past the image by that much.
        let r = ram(2048);
        let s = cold_boot(
            &r,
            image,
            1 << 20,
            cold_boot_reserve(&r, image, mib(48), None),
        )
        .unwrap();
        assert!(s.areas()[0].end >= image.end + (mib(2048) - mib(1)) / 8);
    }

    use super::*;
    use zerocopy::IntoBytes;

    const RAM: [Range; 2] = [Range::new(0, 0x9f000), Range::new(0x10_0000, 0x2000_0000)];

    #[test]
    fn cold_boot_covers_the_image_and_room_after_it() {
        let s = cold_boot(&RAM, Range::new(0x20_0000, 0x2c_0000), 0x10_0000, 16 << 20).unwrap();
        // Starts at the first 2 MiB boundary of the region, at least 64 MiB.
        assert_eq!(s.areas(), [Range::new(0x20_0000, 0x20_0000 + (64 << 20))]);
        let s = cold_boot(&RAM, Range::new(0x20_0000, 0x2c_0000), 0x10_0000, 100 << 20).unwrap();
        assert_eq!(
            s.areas()[0].end,
            (0x2c_0000u64 + (100 << 20)).next_multiple_of(2 << 20)
        );
        assert!(matches!(
            cold_boot(&RAM, Range::new(0x20_0000, 0x2c_0000), 0x10_0000, 1 << 30),
            Err(ScratchError::TooSmall { .. })
        ));
        assert_eq!(
            cold_boot(&RAM, Range::new(0x3000_0000, 0x3010_0000), 0, 0),
            Err(ScratchError::ImageNotInRam)
        );
        // A region too small for 64 MiB gets what it has.
        let small = [Range::new(0, 0x200_0000)];
        let s = cold_boot(&small, Range::new(0x20_0000, 0x30_0000), 0, 0).unwrap();
        assert_eq!(s.areas(), [Range::new(0, 0x200_0000)]);
    }

    fn areas(list: &[(u64, u64)]) -> Scratch {
        let recs: std::vec::Vec<u8> = list
            .iter()
            .flat_map(|&(start, size)| {
                ScratchRecord {
                    start: start.into(),
                    size: size.into(),
                }
                .as_bytes()
                .to_vec()
            })
            .collect();
        Scratch::from_records(&recs, &RAM).unwrap()
    }

    #[test]
    fn early_allocations_are_replayed_first_fit() {
        const MIB: u64 = 1 << 20;
        // Scratch [2, 84) MiB, an image linked at 16 MiB splitting it: the
        // page tables come from [2, 16), the 64 MiB heap from the piece
        // after the image, 2 MiB aligned from 18 MiB: 66 MiB there.
        let s = areas(&[(2 * MIB, 82 * MIB)]);
        let image = [Range::new(16 * MIB, 16 * MIB + 0x1e8000)];
        assert_eq!(s.holds_early(&image, 256, 64 * MIB, 2 * MIB), Ok(()));
        assert_eq!(
            s.holds_early(&image, 256, 67 * MIB, 2 * MIB),
            Err(ScratchError::TooSmall {
                needed: 67 * MIB,
                available: 66 * MIB
            })
        );
        // The page tables come first, lowest address first: with the image
        // at the bottom, they take the start of the piece the heap needs.
        let low = [Range::new(2 * MIB, 2 * MIB + 0x1e8000)];
        assert_eq!(s.holds_early(&low, 0, 80 * MIB, 2 * MIB), Ok(()));
        assert_eq!(
            s.holds_early(&low, 256, 80 * MIB, 2 * MIB),
            Err(ScratchError::TooSmall {
                needed: 80 * MIB,
                available: 78 * MIB
            })
        );
        // One 2 MiB area holds no heap; kept ranges that cover it all leave
        // nothing, not even page tables.
        let small = areas(&[(2 * MIB, 2 * MIB)]);
        assert_eq!(
            small.holds_early(&[], 0, 4 * MIB, 2 * MIB),
            Err(ScratchError::TooSmall {
                needed: 4 * MIB,
                available: 2 * MIB
            })
        );
        assert_eq!(
            small.holds_early(&[Range::new(0, 8 * MIB)], 1, 4096, 4096),
            Err(ScratchError::TooSmall {
                needed: 4096,
                available: 0
            })
        );
    }

    proptest::proptest! {
        /// Any handed-over areas, kept ranges and sizes: an answer, never a
        /// panic; and a run that fits in one area clear of everything fits.
        #[test]
        fn holds_early_ignores_empty_kept_ranges(at in 0u64..(1 << 40)) {
            // Before, an empty range was carved as a page (or refused),
            // and a valid handoff could be refused: a cold boot that loses
            // everything.
            let rec = ScratchRecord { start: (2u64 << 21).into(), size: (64u64 << 21).into() };
            let ram = [Range::new(0, u64::MAX)];
            let s = Scratch::from_records(rec.as_bytes(), &ram).unwrap();
            let keep = [Range::new(at, at), Range::new(5 << 21, 5 << 21)];
            proptest::prop_assert_eq!(s.holds_early(&keep, 256, 32 << 20, 2 << 20), Ok(()));
            proptest::prop_assert_eq!(s.holds_early(&[], 256, 32 << 20, 2 << 20), Ok(()));
        }

        #[test]
        fn holds_early_answers_anything(
            list in proptest::collection::vec((0u64..300, 1u64..100), 1..8),
            keep in proptest::collection::vec((proptest::prelude::any::<u64>(), proptest::prelude::any::<u64>()), 0..6),
            pages in 0u64..600,
            run in proptest::prelude::any::<u64>(),
            align_shift in 0u32..64,
        ) {
            let mut recs = std::vec::Vec::new();
            let mut at = 1u64;
            for (gap, size) in list {
                let start = (at + gap) << 21;
                recs.push(ScratchRecord { start: start.into(), size: (size << 21).into() });
                at += gap + size;
            }
            let bytes: std::vec::Vec<u8> = recs.iter().flat_map(|r| r.as_bytes().to_vec()).collect();
            let ram = [Range::new(0, u64::MAX)];
            let s = Scratch::from_records(&bytes, &ram).unwrap();
            let keep: std::vec::Vec<Range> = keep.into_iter().map(|(a, b)| Range::new(a.min(b), a.max(b))).collect();
            let _ = s.holds_early(&keep, pages, run, 1u64 << align_shift);
            let first = s.areas()[0];
            proptest::prop_assert_eq!(s.holds_early(&[], 0, first.len(), 2 << 20), Ok(()));
        }
    }

    proptest::proptest! {
        #[test]
        fn random_records_never_panic_and_what_passes_is_sound(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Ok(s) = Scratch::from_records(&bytes, &RAM) {
                let mut end = 0;
                for a in s.areas() {
                    proptest::prop_assert!(a.start >= end && a.start < a.end);
                    proptest::prop_assert!(a.start % (2 << 20) == 0 && a.end % (2 << 20) == 0);
                    proptest::prop_assert!(RAM.iter().any(|r| r.covers(*a)));
                    end = a.end;
                }
            }
        }
    }

    #[test]
    fn golden_records_pin_the_layout() {
        let s = cold_boot(&RAM, Range::new(0x20_0000, 0x2c_0000), 0x10_0000, 0).unwrap();
        let bytes: std::vec::Vec<u8> = s.records().flat_map(|r| r.as_bytes().to_vec()).collect();
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/scratch-v1.bin");
        if std::env::var_os("KHO_BLESS").is_some() {
            std::fs::write(&path, &bytes).unwrap();
        }
        assert_eq!(
            bytes,
            std::fs::read(&path).expect("tests/golden/scratch-v1.bin")
        );
        assert_eq!(Scratch::from_records(&bytes, &RAM), Ok(s));
    }

    #[test]
    fn records_round_trip_and_are_checked() {
        let s = cold_boot(&RAM, Range::new(0x20_0000, 0x2c_0000), 0x10_0000, 0).unwrap();
        let recs: std::vec::Vec<ScratchRecord> = s.records().collect();
        let bytes = recs.as_bytes();
        assert_eq!(Scratch::from_records(bytes, &RAM), Ok(s));
        assert_eq!(
            Scratch::from_records(&bytes[..15], &RAM),
            Err(ScratchError::BadLength { bytes: 15 })
        );
        assert_eq!(
            Scratch::from_records(&[], &RAM),
            Err(ScratchError::BadLength { bytes: 0 })
        );
        let bad = |start: u64, size: u64| {
            Scratch::from_records(
                ScratchRecord {
                    start: start.into(),
                    size: size.into(),
                }
                .as_bytes(),
                &RAM,
            )
        };
        assert_eq!(
            bad(0x20_1000, 2 << 20),
            Err(ScratchError::BadArea { index: 0 })
        );
        assert_eq!(bad(0x20_0000, 0), Err(ScratchError::BadArea { index: 0 }));
        assert_eq!(
            bad(0x1fe0_0000, 4 << 20),
            Err(ScratchError::BadArea { index: 0 })
        );
        assert_eq!(
            bad(u64::MAX - (2 << 20) + 1, 2 << 20),
            Err(ScratchError::BadArea { index: 0 })
        );
        let two = [
            ScratchRecord {
                start: (8u64 << 20).into(),
                size: (4u64 << 20).into(),
            },
            ScratchRecord {
                start: (10u64 << 20).into(),
                size: (2u64 << 20).into(),
            },
        ];
        assert_eq!(
            Scratch::from_records(two.as_bytes(), &RAM),
            Err(ScratchError::BadArea { index: 1 })
        );
    }
}
