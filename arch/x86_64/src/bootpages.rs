//! The PVH boot structures (`hvm_start_info` version 1, its module list and
//! memory map), defined once: the kexec that writes them for the next
//! kernel and the entry code that reads them use these types, not offsets.
//!
//! Layouts (little-endian, as the PVH protocol defines them for x86):
//! - [`StartInfo`] (56 bytes): magic, version, flags, module count, module
//!   list, command line, RSDP, memory map and its entry count;
//! - [`ModlistEntry`] (32 bytes): a module's address, size and command line;
//! - [`MemmapEntry`] (24 bytes): an E820-style range and its type.
//!
//! [`write_boot_pages`] lays them out in the pages a kexec hands over, with
//! a typed error for anything that does not fit, never a silent cut.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use core::fmt;
use kho::ranges::Range;
use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `StartInfo::magic`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// Most modules a boot page holds (and a reader accepts).
pub const MAX_MODULES: usize = 8;
/// Longest module command line, in bytes, without its NUL.
pub const MAX_MODULE_CMDLINE: usize = 63;

/// `hvm_start_info`, version 1.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct StartInfo {
    /// [`START_INFO_MAGIC`].
    pub magic: U32,
    /// 1 (a memory map is present).
    pub version: U32,
    /// Flags (0).
    pub flags: U32,
    /// Entries in the module list.
    pub nr_modules: U32,
    /// Physical address of the module list.
    pub modlist_paddr: U64,
    /// Physical address of the NUL-terminated command line (0: none).
    pub cmdline_paddr: U64,
    /// Physical address of the ACPI RSDP (0: none).
    pub rsdp_paddr: U64,
    /// Physical address of the memory map.
    pub memmap_paddr: U64,
    /// Entries in the memory map.
    pub memmap_entries: U32,
    /// Reserved (0).
    pub reserved: U32,
}

/// One module of the module list.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ModlistEntry {
    /// Physical address of its bytes.
    pub paddr: U64,
    /// Its size in bytes.
    pub size: U64,
    /// Physical address of its NUL-terminated command line (0: none).
    pub cmdline_paddr: U64,
    /// Reserved (0).
    pub reserved: U64,
}

/// One entry of the memory map.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct MemmapEntry {
    /// First byte.
    pub addr: U64,
    /// Size in bytes.
    pub size: U64,
    /// E820 type (1 RAM, 2 reserved, 3 ACPI reclaimable, 4 ACPI NVS, 5 bad).
    pub ty: U32,
    /// Reserved (0).
    pub reserved: U32,
}

/// Where [`write_boot_pages`] puts each structure, as offsets into its
/// pages: start info, module list, memory map, module command lines (64
/// bytes each), then the command line from the second page on.
pub mod layout {
    /// The start info.
    pub const START_INFO: usize = 0;
    /// The module list ([`super::MAX_MODULES`] entries of 32 bytes).
    pub const MODLIST: usize = 64;
    /// The memory map.
    pub const MEMMAP: usize = 512;
    /// Module command lines, 64 bytes each.
    pub const MODULE_CMDLINES: usize = 3584;
    /// The command line.
    pub const CMDLINE: usize = 4096;
    /// Most memory-map entries that fit.
    pub const MAX_MEMMAP: usize = (MODULE_CMDLINES - MEMMAP) / 24;
    /// 24 bytes the kexec trampoline fills, between the module list and
    /// the memory map: [`TRAMPOLINE_MAGIC`], then its first and its last
    /// TSC reading (little-endian `u64`s), so the next kernel can tell the
    /// copy from the rest of the jump. Left zero by [`super::write_boot_pages`];
    /// any other reader ignores it.
    pub const TRAMPOLINE_STAMPS: usize = 448;
    /// The first word of the trampoline's stamps (`kho-tsc1`).
    pub const TRAMPOLINE_MAGIC: u64 = u64::from_le_bytes(*b"kho-tsc1");
}

/// One module a kexec hands over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootModule<'a> {
    /// Where its bytes are (left in place).
    pub range: Range,
    /// Its command line (a tag such as `kho,handoff-v2`).
    pub cmdline: &'a str,
}

/// One memory-map range a kexec hands over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootRegion {
    /// The range.
    pub range: Range,
    /// Its E820 type.
    pub ty: u32,
}

/// Why the boot pages could not be written. Nothing is cut silently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootPagesError {
    /// More modules than [`MAX_MODULES`].
    TooManyModules {
        /// How many were given.
        given: usize,
    },
    /// A module's command line is longer than [`MAX_MODULE_CMDLINE`], or
    /// holds a NUL.
    ModuleCmdline {
        /// Which module.
        index: usize,
    },
    /// More memory-map entries than [`layout::MAX_MEMMAP`].
    MemoryMapTooLong {
        /// How many were given.
        given: usize,
    },
    /// The command line (with its NUL) does not fit the pages, or holds a
    /// NUL.
    Cmdline {
        /// Its length.
        len: usize,
    },
    /// The buffer is smaller than two pages, or its address overflows.
    Buffer,
}

impl fmt::Display for BootPagesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootPagesError::TooManyModules { given } => {
                write!(f, "{given} modules, at most {MAX_MODULES} fit")
            }
            BootPagesError::ModuleCmdline { index } => write!(
                f,
                "module {index}: command line over {MAX_MODULE_CMDLINE} bytes or with a NUL"
            ),
            BootPagesError::MemoryMapTooLong { given } => write!(
                f,
                "{given} memory-map entries, at most {} fit",
                layout::MAX_MEMMAP
            ),
            BootPagesError::Cmdline { len } => {
                write!(
                    f,
                    "a command line of {len} bytes does not fit the boot pages"
                )
            }
            BootPagesError::Buffer => f.write_str("boot pages too small or at a bad address"),
        }
    }
}

impl core::error::Error for BootPagesError {}

fn put<T: IntoBytes + Immutable>(buf: &mut [u8], at: usize, v: &T) -> Result<(), BootPagesError> {
    let b = v.as_bytes();
    buf.get_mut(at..at.saturating_add(b.len()))
        .ok_or(BootPagesError::Buffer)?
        .copy_from_slice(b);
    Ok(())
}

/// Writes the boot structures into `buf`, which will lie at physical
/// address `base`: the start info at `base` (what `%ebx` gets), the rest
/// at the [`layout`] offsets. `buf` is zeroed first; it must be at least
/// two pages (the command line may use the rest).
pub fn write_boot_pages(
    buf: &mut [u8],
    base: u64,
    regions: &[BootRegion],
    modules: &[BootModule<'_>],
    cmdline: &str,
    rsdp: u64,
) -> Result<(), BootPagesError> {
    if buf.len() < 2 * 4096 || base.checked_add(buf.len() as u64).is_none() {
        return Err(BootPagesError::Buffer);
    }
    if modules.len() > MAX_MODULES {
        return Err(BootPagesError::TooManyModules {
            given: modules.len(),
        });
    }
    if regions.len() > layout::MAX_MEMMAP {
        return Err(BootPagesError::MemoryMapTooLong {
            given: regions.len(),
        });
    }
    let room = buf.len().saturating_sub(layout::CMDLINE);
    if cmdline.len() >= room || cmdline.as_bytes().contains(&0) {
        return Err(BootPagesError::Cmdline { len: cmdline.len() });
    }
    for (index, m) in modules.iter().enumerate() {
        if m.cmdline.len() > MAX_MODULE_CMDLINE || m.cmdline.as_bytes().contains(&0) {
            return Err(BootPagesError::ModuleCmdline { index });
        }
    }
    buf.fill(0);
    // Offsets are within the first page; `base + offset` cannot overflow
    // (checked above).
    let at = |off: usize| base.saturating_add(off as u64);
    for (i, r) in regions.iter().enumerate() {
        let e = MemmapEntry {
            addr: r.range.start.into(),
            size: r.range.len().into(),
            ty: r.ty.into(),
            reserved: 0.into(),
        };
        put(buf, layout::MEMMAP.saturating_add(i.saturating_mul(24)), &e)?;
    }
    for (i, m) in modules.iter().enumerate() {
        let cmd_off = layout::MODULE_CMDLINES.saturating_add(i.saturating_mul(64));
        let e = ModlistEntry {
            paddr: m.range.start.into(),
            size: m.range.len().into(),
            cmdline_paddr: at(cmd_off).into(),
            reserved: 0.into(),
        };
        put(
            buf,
            layout::MODLIST.saturating_add(i.saturating_mul(32)),
            &e,
        )?;
        buf.get_mut(cmd_off..cmd_off.saturating_add(m.cmdline.len()))
            .ok_or(BootPagesError::Buffer)?
            .copy_from_slice(m.cmdline.as_bytes());
    }
    buf.get_mut(layout::CMDLINE..layout::CMDLINE.saturating_add(cmdline.len()))
        .ok_or(BootPagesError::Buffer)?
        .copy_from_slice(cmdline.as_bytes());
    let si = StartInfo {
        magic: START_INFO_MAGIC.into(),
        version: 1.into(),
        flags: 0.into(),
        nr_modules: (modules.len() as u32).into(),
        modlist_paddr: at(layout::MODLIST).into(),
        cmdline_paddr: at(layout::CMDLINE).into(),
        rsdp_paddr: rsdp.into(),
        memmap_paddr: at(layout::MEMMAP).into(),
        memmap_entries: (regions.len() as u32).into(),
        reserved: 0.into(),
    };
    put(buf, layout::START_INFO, &si)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::unwrap_used
    )]
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    /// What the entry code reads: memory map, modules with their command
    /// lines, the command line, the RSDP.
    type ReadBack = (Vec<BootRegion>, Vec<(Range, Vec<u8>)>, Vec<u8>, u64);

    /// Reads the pages back the way the entry code does: through the
    /// structs, following the physical addresses into the buffer.
    fn read_back(buf: &[u8], base: u64) -> ReadBack {
        let off = |pa: u64| (pa - base) as usize;
        let cstr = |pa: u64| {
            let s = &buf[off(pa)..];
            s[..s.iter().position(|&b| b == 0).unwrap()].to_vec()
        };
        let si = StartInfo::read_from_bytes(&buf[..56]).unwrap();
        assert_eq!((si.magic.get(), si.version.get()), (START_INFO_MAGIC, 1));
        let map = (0..si.memmap_entries.get() as usize)
            .map(|i| {
                let at = off(si.memmap_paddr.get()) + 24 * i;
                let e = MemmapEntry::read_from_bytes(&buf[at..at + 24]).unwrap();
                BootRegion {
                    range: Range::new(e.addr.get(), e.addr.get() + e.size.get()),
                    ty: e.ty.get(),
                }
            })
            .collect();
        let mods = (0..si.nr_modules.get() as usize)
            .map(|i| {
                let at = off(si.modlist_paddr.get()) + 32 * i;
                let e = ModlistEntry::read_from_bytes(&buf[at..at + 32]).unwrap();
                (
                    Range::new(e.paddr.get(), e.paddr.get() + e.size.get()),
                    cstr(e.cmdline_paddr.get()),
                )
            })
            .collect();
        (map, mods, cstr(si.cmdline_paddr.get()), si.rsdp_paddr.get())
    }

    #[test]
    fn boot_pages_round_trip_through_the_one_definition() {
        assert_eq!(core::mem::size_of::<StartInfo>(), 56);
        assert_eq!(core::mem::size_of::<ModlistEntry>(), 32);
        assert_eq!(core::mem::size_of::<MemmapEntry>(), 24);
        let regions: Vec<BootRegion> = (0..layout::MAX_MEMMAP as u64)
            .map(|i| BootRegion {
                range: Range::new(i << 21, (i << 21) + 4096 * (i + 1)),
                ty: 1 + (i % 5) as u32,
            })
            .collect();
        let long = "m".repeat(MAX_MODULE_CMDLINE);
        let names: Vec<alloc::string::String> = (0..MAX_MODULES)
            .map(|i| alloc::format!("kho,mod-{i}"))
            .collect();
        let mut modules: Vec<BootModule<'_>> = names
            .iter()
            .enumerate()
            .map(|(i, n)| BootModule {
                range: Range::new(
                    0x100_0000 * (i as u64 + 1),
                    0x100_0000 * (i as u64 + 1) + 12345,
                ),
                cmdline: n,
            })
            .collect();
        modules[7].cmdline = &long;
        let base = 0x5000_0000;
        let mut buf = vec![0xaau8; 3 * 4096];
        write_boot_pages(
            &mut buf,
            base,
            &regions,
            &modules,
            "kho.mode=demo kho.hops=2",
            0xe0000,
        )
        .unwrap();
        let (map, mods, cmd, rsdp) = read_back(&buf, base);
        assert_eq!(map, regions);
        assert_eq!(mods.len(), MAX_MODULES);
        for (m, (r, c)) in modules.iter().zip(&mods) {
            assert_eq!((m.range, m.cmdline.as_bytes()), (*r, c.as_slice()));
        }
        assert_eq!(cmd, b"kho.mode=demo kho.hops=2");
        assert_eq!(rsdp, 0xe0000);
    }

    /// The boot pages of a kexec with two modules, three memory ranges and
    /// a command line, pinned byte for byte by `tests/golden/pvh-boot-v1.bin`
    /// (`hvm_start_info` version 1 and the layout offsets).
    #[test]
    fn golden_boot_pages_pin_the_layout() {
        let regions = [
            BootRegion {
                range: Range::new(0, 0x9_fc00),
                ty: 1,
            },
            BootRegion {
                range: Range::new(0xf_0000, 0x10_0000),
                ty: 2,
            },
            BootRegion {
                range: Range::new(0x10_0000, 0x2000_0000),
                ty: 1,
            },
        ];
        let modules = [
            BootModule {
                range: Range::new(0x1000_0000, 0x1006_4000),
                cmdline: "kho,image",
            },
            BootModule {
                range: Range::new(0x1562_b000, 0x1562_b976),
                cmdline: "kho,handoff-v2",
            },
        ];
        let mut buf = vec![0u8; 2 * 4096];
        write_boot_pages(
            &mut buf,
            0x50_0000,
            &regions,
            &modules,
            "kho.mode=demo kho.hops=2",
            0xf_5a40,
        )
        .unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/golden/pvh-boot-v1.bin");
        if std::env::var_os("KHO_BLESS").is_some() {
            std::fs::write(&path, &buf).unwrap();
        }
        let golden = std::fs::read(&path).unwrap();
        assert!(buf == golden, "the PVH boot page layout changed");
    }

    #[test]
    fn what_does_not_fit_is_a_typed_error_never_a_cut() {
        let base = 0x1000;
        let mut buf = vec![0u8; 2 * 4096];
        let m = |c: &'static str| BootModule {
            range: Range::new(0, 1),
            cmdline: c,
        };
        let nine = [m("a"); 9];
        assert_eq!(
            write_boot_pages(&mut buf, base, &[], &nine, "", 0),
            Err(BootPagesError::TooManyModules { given: 9 })
        );
        let s64: &'static str = "0123456789012345678901234567890123456789012345678901234567890123";
        assert_eq!(
            write_boot_pages(&mut buf, base, &[], &[m("ok"), m(s64)], "", 0),
            Err(BootPagesError::ModuleCmdline { index: 1 })
        );
        let map = vec![
            BootRegion {
                range: Range::new(0, 4096),
                ty: 1
            };
            layout::MAX_MEMMAP + 1
        ];
        assert_eq!(
            write_boot_pages(&mut buf, base, &map, &[], "", 0),
            Err(BootPagesError::MemoryMapTooLong {
                given: layout::MAX_MEMMAP + 1
            })
        );
        let long = "x".repeat(4096);
        assert_eq!(
            write_boot_pages(&mut buf, base, &[], &[], &long, 0),
            Err(BootPagesError::Cmdline { len: 4096 })
        );
        assert_eq!(
            write_boot_pages(&mut buf[..4096], base, &[], &[], "", 0),
            Err(BootPagesError::Buffer)
        );
    }
}
