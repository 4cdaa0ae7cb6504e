//! The PVH boot protocol: reading `hvm_start_info` and what it points to.
//!
//! Everything the loader hands over (memory map, command line, module list)
//! sits in memory the map itself calls RAM, so it is copied into the kernel
//! image here, before the frame allocator may hand that memory out. The
//! module's bytes are not copied; its range is reserved instead.

use crate::bootpages::{MemmapEntry, ModlistEntry, StartInfo};
use core::fmt;
use core::mem::size_of;
use heapless::{String, Vec};
use kho::ranges::Range;

/// `hvm_start_info.magic`.
pub const START_INFO_MAGIC: u32 = crate::bootpages::START_INFO_MAGIC;
/// Most memory-map entries kept; a longer map is an error, not a truncation.
pub const MAX_MEMMAP: usize = 128;
/// Longest command line kept, in bytes.
pub const MAX_CMDLINE: usize = 1024;
/// Most modules kept; more is an error (the same limit the writer has).
pub const MAX_MODULES: usize = crate::bootpages::MAX_MODULES;
/// Longest module command line kept, in bytes (with room for the NUL the
/// writer puts after at most [`crate::bootpages::MAX_MODULE_CMDLINE`]).
pub const MAX_MODULE_CMDLINE: usize = crate::bootpages::MAX_MODULE_CMDLINE + 1;

/// One module the loader handed over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// Where its bytes are.
    pub range: Range,
    /// Its command line (empty if none): kexec tags its modules with it.
    pub cmdline: String<MAX_MODULE_CMDLINE>,
}

/// What a memory-map entry says of its range (the E820 type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemKind {
    /// Usable RAM (type 1).
    Ram,
    /// Reserved by firmware (type 2).
    Reserved,
    /// ACPI tables, reclaimable after reading (type 3).
    AcpiReclaimable,
    /// ACPI non-volatile storage (type 4).
    AcpiNvs,
    /// Bad memory (type 5).
    Unusable,
    /// Any other type, kept as given.
    Other(u32),
}

impl MemKind {
    fn from_e820(t: u32) -> Self {
        match t {
            1 => MemKind::Ram,
            2 => MemKind::Reserved,
            3 => MemKind::AcpiReclaimable,
            4 => MemKind::AcpiNvs,
            5 => MemKind::Unusable,
            t => MemKind::Other(t),
        }
    }
}

impl MemKind {
    /// The E820 type, as a loader writes it.
    pub fn e820(&self) -> u32 {
        match self {
            MemKind::Ram => 1,
            MemKind::Reserved => 2,
            MemKind::AcpiReclaimable => 3,
            MemKind::AcpiNvs => 4,
            MemKind::Unusable => 5,
            MemKind::Other(t) => *t,
        }
    }
}

impl fmt::Display for MemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemKind::Ram => f.write_str("RAM"),
            MemKind::Reserved => f.write_str("reserved"),
            MemKind::AcpiReclaimable => f.write_str("ACPI"),
            MemKind::AcpiNvs => f.write_str("ACPI NVS"),
            MemKind::Unusable => f.write_str("unusable"),
            MemKind::Other(t) => write!(f, "type {t}"),
        }
    }
}

/// One entry of the memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRegion {
    /// The physical range.
    pub range: Range,
    /// What it is.
    pub kind: MemKind,
}

/// What the boot loader told us, copied out of its memory.
#[derive(Clone, Debug)]
pub struct BootParams {
    /// Physical address of `hvm_start_info`.
    pub start_info: u64,
    /// The memory map, in the loader's order.
    pub memory_map: Vec<MemRegion, MAX_MEMMAP>,
    /// The kernel command line (empty if none).
    pub cmdline: String<MAX_CMDLINE>,
    /// The modules (`-initrd` under QEMU; the image and the handoff after a
    /// kexec), left in place.
    pub modules: Vec<Module, MAX_MODULES>,
    /// Physical address of the ACPI RSDP, 0 if none.
    pub rsdp: u64,
    /// The TSC when a kho kexec trampoline began copying the image and when
    /// it was done (stamped into the boot pages it came with); `None` at a
    /// cold boot.
    pub trampoline_tsc: Option<(u64, u64)>,
}

/// Why the boot parameters could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvhError {
    /// `hvm_start_info.magic` is wrong: not booted through PVH.
    BadMagic(u32),
    /// Version 0 of the structure has no memory map.
    NoMemoryMap,
    /// More memory-map entries than [`MAX_MEMMAP`].
    MemoryMapTooLong(u32),
    /// A structure lies above the 4 GiB the boot page tables map.
    Unreachable(u64),
    /// The command line is longer than [`MAX_CMDLINE`] or not UTF-8.
    BadCmdline,
    /// More modules than [`MAX_MODULES`], or a module's command line is too
    /// long or not UTF-8.
    BadModules,
}

impl fmt::Display for PvhError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PvhError::BadMagic(m) => {
                write!(f, "hvm_start_info magic {m:#x}, want {START_INFO_MAGIC:#x}")
            }
            PvhError::NoMemoryMap => f.write_str("hvm_start_info version 0 has no memory map"),
            PvhError::MemoryMapTooLong(n) => {
                write!(f, "{n} memory map entries, at most {MAX_MEMMAP} supported")
            }
            PvhError::Unreachable(a) => write!(f, "boot structure at {a:#x} is above 4 GiB"),
            PvhError::BadCmdline => write!(
                f,
                "command line longer than {MAX_CMDLINE} bytes or not UTF-8"
            ),
            PvhError::BadModules => write!(
                f,
                "more than {MAX_MODULES} modules, or a module command line over {MAX_MODULE_CMDLINE} bytes"
            ),
        }
    }
}

impl core::error::Error for PvhError {}

const IDENTITY_LIMIT: u64 = 1 << 32;

fn check(addr: u64, len: u64) -> Result<(), PvhError> {
    match addr.checked_add(len) {
        Some(end) if end <= IDENTITY_LIMIT => Ok(()),
        _ => Err(PvhError::Unreachable(addr)),
    }
}

/// Reads a little-endian `T` at physical address `addr`.
///
/// # Safety
/// `addr..addr + size_of::<T>()` must be identity mapped and readable.
/// (`T: FromBytes`: any bytes there are a valid `T`.)
unsafe fn read<T: Copy + zerocopy::FromBytes>(addr: u64) -> T {
    // SAFETY: the caller guarantees the bytes are mapped; unaligned reads are
    // used because the loader promises no alignment for the fields we read.
    unsafe { core::ptr::read_unaligned(addr as *const T) }
}

/// Copies the boot parameters out of the loader's memory.
///
/// # Safety
/// Must run while the boot page tables identity map the first 4 GiB, and
/// `start_info` must be the value the PVH loader put in `%ebx`.
pub unsafe fn read_boot_params(start_info: u64) -> Result<BootParams, PvhError> {
    check(start_info, size_of::<StartInfo>() as u64)?;
    // SAFETY: every address read below was checked to lie under 4 GiB,
    // which the boot page tables identity map; the types are plain bytes.
    let si: StartInfo = unsafe { read(start_info) };
    let magic = si.magic.get();
    if magic != START_INFO_MAGIC {
        return Err(PvhError::BadMagic(magic));
    }
    let (version, nr_modules, modlist, cmdline_pa, rsdp, memmap_pa, memmap_n) = (
        si.version.get(),
        si.nr_modules.get(),
        si.modlist_paddr.get(),
        si.cmdline_paddr.get(),
        si.rsdp_paddr.get(),
        si.memmap_paddr.get(),
        si.memmap_entries.get(),
    );
    if version < 1 || memmap_pa == 0 {
        return Err(PvhError::NoMemoryMap);
    }
    if memmap_n as usize > MAX_MEMMAP {
        return Err(PvhError::MemoryMapTooLong(memmap_n));
    }
    let esize = size_of::<MemmapEntry>() as u64;
    check(memmap_pa, u64::from(memmap_n) * esize)?;
    let mut memory_map = Vec::new();
    for i in 0..u64::from(memmap_n) {
        // SAFETY: checked above.
        let e: MemmapEntry = unsafe { read(memmap_pa + i * esize) };
        let (addr, size) = (e.addr.get(), e.size.get());
        let region = MemRegion {
            range: Range::new(addr, addr.saturating_add(size)),
            kind: MemKind::from_e820(e.ty.get()),
        };
        // Cannot fail: memmap_n <= MAX_MEMMAP.
        let _ = memory_map.push(region);
    }

    let cmdline = read_string::<MAX_CMDLINE>(cmdline_pa).map_err(|_| PvhError::BadCmdline)?;

    let mut modules = Vec::new();
    if nr_modules as usize > MAX_MODULES {
        return Err(PvhError::BadModules);
    }
    if nr_modules > 0 && modlist != 0 {
        let msize = size_of::<ModlistEntry>() as u64;
        check(modlist, msize * u64::from(nr_modules))?;
        for i in 0..u64::from(nr_modules) {
            // SAFETY: checked above.
            let e: ModlistEntry = unsafe { read(modlist + msize * i) };
            let (paddr, size) = (e.paddr.get(), e.size.get());
            if size == 0 {
                continue;
            }
            let cmdline = read_string::<MAX_MODULE_CMDLINE>(e.cmdline_paddr.get())
                .map_err(|_| PvhError::BadModules)?;
            let m = Module {
                range: Range::new(paddr, paddr.saturating_add(size)),
                cmdline,
            };
            modules.push(m).map_err(|_| PvhError::BadModules)?;
        }
    }

    // The trampoline's stamps, if a kho kexec brought us here.
    let stamps = start_info + crate::bootpages::layout::TRAMPOLINE_STAMPS as u64;
    let trampoline_tsc = if check(stamps, 24).is_ok() {
        // SAFETY: checked to lie under 4 GiB, like everything above.
        let [magic, first, last]: [u64; 3] = unsafe { read(stamps) };
        (magic == crate::bootpages::layout::TRAMPOLINE_MAGIC).then_some((first, last))
    } else {
        None
    };
    Ok(BootParams {
        start_info,
        memory_map,
        cmdline,
        modules,
        rsdp,
        trampoline_tsc,
    })
}

/// Copies the NUL-terminated string at `pa` (0: empty).
fn read_string<const N: usize>(pa: u64) -> Result<String<N>, PvhError> {
    let mut out = String::new();
    if pa == 0 {
        return Ok(out);
    }
    let mut bytes: Vec<u8, N> = Vec::new();
    for i in 0.. {
        check(pa + i, 1)?;
        // SAFETY: checked to lie in the identity-mapped first 4 GiB; the
        // caller of `read_boot_params` guarantees that mapping.
        let b: u8 = unsafe { read(pa + i) };
        if b == 0 {
            break;
        }
        bytes.push(b).map_err(|_| PvhError::BadCmdline)?;
    }
    let s = core::str::from_utf8(&bytes).map_err(|_| PvhError::BadCmdline)?;
    out.push_str(s).map_err(|_| PvhError::BadCmdline)?;
    Ok(out)
}

impl BootParams {
    /// The value of `key=value` on the command line, if present. Words
    /// after a lone `--` are not this kernel's: they are the next
    /// kernel's command line (see the demo's kexec).
    pub fn cmdline_value(&self, key: &str) -> Option<&str> {
        self.cmdline
            .split_ascii_whitespace()
            .take_while(|w| *w != "--")
            .find_map(|w| {
                let (k, v) = w.split_once('=')?;
                (k == key).then_some(v)
            })
    }

    /// RAM ranges of the memory map, in the loader's order.
    pub fn ram(&self) -> impl Iterator<Item = Range> + '_ {
        self.memory_map
            .iter()
            .filter(|r| r.kind == MemKind::Ram)
            .map(|r| r.range)
    }

    /// The module whose command line is `tag`.
    pub fn module_tagged(&self, tag: &str) -> Option<Range> {
        self.modules
            .iter()
            .find(|m| m.cmdline == tag)
            .map(|m| m.range)
    }

    /// The next kernel's image: the module tagged as our own image (after a
    /// kexec), or else the first untagged module (`-initrd` at cold boot).
    pub fn image_module(&self) -> Option<Range> {
        self.module_tagged(kho::abi::handoff::IMAGE_MODULE)
            .or_else(|| {
                self.modules
                    .iter()
                    .find(|m| m.cmdline.is_empty())
                    .map(|m| m.range)
            })
    }

    /// One past the highest RAM byte.
    pub fn ram_end(&self) -> u64 {
        self.ram().map(|r| r.end).max().unwrap_or(0)
    }
}
