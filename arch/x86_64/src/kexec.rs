//! kexec on x86_64: load the next kernel (any ELF64 PVH image, of any
//! size) and enter it as a cold boot would, through a trampoline.
//!
//! [`prepare`] checks the image (`kho::elf`) and describes every page of
//! its segments to the trampoline in an *entry list*, as Linux's kimage
//! does: "from here on, copy to D", "copy the page at S", "zero N pages",
//! "the list goes on at L", "done". A page made only of the image's file
//! bytes is copied straight from the image module (kept for the next
//! kernel anyway); a page that is partly file bytes is staged, built in a
//! free page of this kernel; a page of zeros costs nothing. Staged pages
//! and list pages are free pages taken anywhere, scattered runs included,
//! never inside a destination: so no copy can overwrite a page that a later
//! copy reads, whatever the order, and destinations may overlap this
//! kernel, its heap and its stack. The boot structures (a fresh
//! `hvm_start_info`, the same memory map, the command line, the modules),
//! identity page tables and the trampoline take a few scratch pages below
//! 4 GiB, clear of every destination.
//!
//! [`jump`] then disables interrupts and runs the trampoline from its own
//! page: it switches to the identity tables, walks the list, drops to
//! 32-bit protected mode with paging off and jumps to the PVH entry with
//! `%ebx` pointing at the start info. Nothing passes from this kernel to
//! the next but the image, its boot structures and the modules it is
//! given.
//!
//! Fixed limits on this path, each a typed error when exceeded: the
//! trampoline, its tables and the boot structures lie below 4 GiB (the
//! trampoline ends in 32-bit code and PVH passes the start info in a
//! 32-bit register); RAM is at most 512 GiB (one page of identity
//! tables); at most [`crate::bootpages::MAX_MODULES`] modules with command lines
//! of at most [`crate::bootpages::MAX_MODULE_CMDLINE`] bytes and a command line of
//! [`crate::pvh::MAX_CMDLINE`] bytes. The image's segments and the staged
//! pages have no such limit: the trampoline reaches all of RAM.
//!
//! This module depends on the frame allocator and the page tables of this
//! crate, never on the test harness or a demo.

use crate::bootpages::{BootModule, BootPagesError, BootRegion};
use crate::paging;
use crate::pvh::BootParams;
use crate::start::module_bytes;
use alloc::vec::Vec;
use core::fmt;
use kho::PAGE_SIZE;
use kho::elf::{ElfError, Image, MAX_SEGMENTS};
use kho::ranges::Range;

mod stage;
mod trampoline;
use stage::Taken;
pub use stage::{KernelFrames, StageFrames};
use trampoline::{kho_trampoline_end, kho_trampoline_start};

/// Everything the trampoline touches lies below this (it runs 32-bit code).
const LOW: u64 = 1 << 32;
/// Offset of the parameter block in the trampoline page.
const PARAMS_AT: u64 = 0x800;
/// Bytes of the boot-structure area (start info, memory map, strings).
const BOOT_PAGES: u64 = 2;

/// Why a kexec could not be prepared. The running kernel keeps running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KexecError {
    /// The image is not a loadable PVH kernel, or does not fit here.
    Image(ElfError),
    /// A destination overlaps memory that must survive the jump (the
    /// handoff, a module, boot structures).
    Clobbers {
        /// The destination.
        range: Range,
    },
    /// Scratch has no room (below 4 GiB, clear of the destinations) for
    /// the trampoline, the boot structures or the page tables.
    NoScratch {
        /// Bytes asked for.
        bytes: u64,
    },
    /// Free memory (outside every destination) is short of what staging
    /// the image and its entry list needs.
    NoMemory {
        /// Bytes needed.
        bytes: u64,
        /// Bytes of them that were free.
        free: u64,
    },
    /// The command line is longer than a kernel reads at boot
    /// ([`crate::pvh::MAX_CMDLINE`]).
    CmdlineTooLong,
    /// The trampoline page could not be mapped.
    Map,
    /// The boot structures cannot carry what was asked (too many modules,
    /// a module command line too long, a memory map too long).
    Boot(BootPagesError),
    /// The image does not lie inside one of this boot's modules (the only
    /// memory whose bytes stay unchanged until the jump).
    NotAModule {
        /// The range asked for.
        range: Range,
    },
}

impl fmt::Display for KexecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KexecError::Image(e) => write!(f, "kexec: {e}"),
            KexecError::Clobbers { range } => write!(
                f,
                "kexec: the image's segment {range} would overwrite memory the next kernel needs"
            ),
            KexecError::NoScratch { bytes } => write!(
                f,
                "kexec: no room in scratch below 4 GiB for {bytes} bytes clear of the image"
            ),
            KexecError::NoMemory { bytes, free } => write!(
                f,
                "kexec: staging the image needs {bytes} bytes of free memory outside its destinations, {free} are free"
            ),
            KexecError::CmdlineTooLong => write!(
                f,
                "kexec: command line longer than the {} bytes a kernel reads at boot",
                crate::pvh::MAX_CMDLINE
            ),
            KexecError::Map => f.write_str("kexec: cannot map the trampoline page"),
            KexecError::Boot(e) => write!(f, "kexec: boot structures: {e}"),
            KexecError::NotAModule { range } => write!(
                f,
                "kexec: the image {range} does not lie inside a boot module"
            ),
        }
    }
}

/// The error a variant wraps, when it wraps one.
impl core::error::Error for KexecError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            KexecError::Image(e) => Some(e),
            KexecError::Boot(e) => Some(e),
            _ => None,
        }
    }
}

/// A module handed to the next kernel.
#[derive(Clone, Copy, Debug)]
pub struct NextModule<'a> {
    /// Where its bytes are (left in place).
    pub range: Range,
    /// Its command line (a tag such as `kho,handoff-v2`).
    pub cmdline: &'a str,
}

/// A prepared kexec: everything staged, nothing yet overwritten.
#[derive(Debug)]
pub struct Prepared {
    tramp: u64,
    /// Bytes staged: pages built here (file bytes that do not fill a page
    /// of the module as it lies, with their zeros).
    pub staged: u64,
    /// Bytes the trampoline copies straight from the image module.
    pub from_module: u64,
    /// Pages of the trampoline's entry list.
    pub list_pages: u64,
    /// The next kernel's PVH entry.
    pub entry: u64,
    /// Where its segments go.
    pub span: Range,
}

/// Writes `bytes` at physical `phys` through the direct map.
///
/// # Safety
/// `phys..phys + bytes.len()` must be RAM this kernel owns and nothing else
/// uses.
unsafe fn poke(phys: u64, bytes: &[u8]) {
    let dst = paging::phys_to_virt(phys).as_mut_ptr::<u8>();
    // SAFETY: guaranteed by the caller; the direct map covers RAM.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
}

/// Zeroes `len` bytes at physical `phys`.
///
/// # Safety
/// As [`poke`].
unsafe fn zero(phys: u64, len: u64) {
    let dst = paging::phys_to_virt(phys).as_mut_ptr::<u8>();
    // SAFETY: guaranteed by the caller.
    unsafe { core::ptr::write_bytes(dst, 0, len as usize) };
}

/// Entry kinds of the trampoline's list (the low bits of a page address).
mod entry {
    /// Copies go to this address from now on.
    pub const DEST: u64 = 1;
    /// The list goes on in the page at this address.
    pub const NEXT: u64 = 2;
    /// The end of the list.
    pub const DONE: u64 = 4;
    /// Copy the page at this address to the cursor, which moves on a page.
    pub const SOURCE: u64 = 8;
    /// Zero `entry >> 12` pages at the cursor, which moves past them.
    pub const ZERO: u64 = 16;
    /// Entries in a list page (the last slot goes on or ends).
    pub const PER_PAGE: usize = 511;
}

/// What goes into one destination page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fill {
    /// A page of the image module, copied as it is.
    Module(u64),
    /// Built in a staged page: file bytes and zeros.
    Staged,
    /// Zeros only.
    Zero,
}

/// What page `page` (a destination page of segment `s`) is made of, given
/// where the image module starts (`None`: it is not kept, stage all).
fn fill_of(s: &kho::elf::Segment, page: u64, module: Option<u64>) -> Fill {
    let file = Range::new(s.dest, s.dest + s.file_size);
    let this = Range::new(page, page + PAGE_SIZE);
    if !file.overlaps(&this) {
        return Fill::Zero;
    }
    let at = s.offset + (page.max(s.dest) - s.dest);
    match module {
        Some(m) if file.covers(this) && (m + at).is_multiple_of(PAGE_SIZE) => Fill::Module(m + at),
        _ => Fill::Staged,
    }
}

/// The next kernel's image, and the module it lies in.
pub struct NextImage {
    /// The image's ELF bytes.
    pub image: Range,
    /// The module to hand on: the image itself, or the bundle it is in.
    pub module: Range,
    /// That module's command line.
    pub tag: &'static str,
}

/// Where the kernel after hop `hop` comes from. With a bundle of images
/// (`kho-images-v1`, the module tagged `kho,images`, or an untagged one
/// that is a bundle), `kho.route=I,J,...` names the image each hop kexecs
/// into (the last entry repeats; default 0), and `kho.rollback=1` makes
/// every kernel after the first go back to the image the previous kernel
/// ran (image 0 for the cold-booted one). Without a bundle, the image
/// module.
pub fn next_image(p: &BootParams, hop: u32) -> Option<NextImage> {
    use kho::abi::images::{Bundle, IMAGES_MODULE};
    let bundle = p.module_tagged(IMAGES_MODULE).or_else(|| {
        p.image_module()
            .filter(|m| module_bytes(*m).is_some_and(|b| Bundle::parse(b).is_ok()))
    });
    let Some(module) = bundle else {
        let image = p.image_module()?;
        return Some(NextImage {
            image,
            module: image,
            tag: kho::abi::handoff::IMAGE_MODULE,
        });
    };
    let b = Bundle::parse(module_bytes(module)?).ok()?;
    let route: Vec<usize> = p
        .cmdline_value("kho.route")
        .map(|r| r.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default();
    let at = |h: u32| route.get(h as usize).or(route.last()).copied().unwrap_or(0);
    let index = if hop > 0 && p.cmdline_value("kho.rollback") == Some("1") {
        // The previous kernel ran what hop `hop - 2` kexecd into (image 0
        // for the cold-booted one).
        hop.checked_sub(2).map_or(0, at)
    } else {
        at(hop)
    };
    let (off, len) = b.image(index)?;
    Some(NextImage {
        image: Range::new(module.start + off, module.start + off + len),
        module,
        tag: IMAGES_MODULE,
    })
}

/// Prepares a kexec into `image`: the physical range of its ELF bytes,
/// inside one of this boot's modules (the memory that stays unchanged
/// until the jump; anything else is [`KexecError::NotAModule`]), read
/// through the direct map.
///
/// `keep` says whether a range holds anything that must survive the jump
/// besides what is staged here: preserved memory, the handoff's metadata,
/// the modules ([`kho::Blob::keeps`] answers for the first two without a
/// walk of everything preserved; a list of ranges answers with
/// `&|r| list.iter().any(|k| k.overlaps(&r))`). The image's destinations
/// must be RAM and clear of all of it. `modules` are handed to
/// the next kernel with their command lines, `cmdline` is its command line.
/// With `in_place`, if `image` is one of the modules, whole pages of it
/// are copied from where it lies, not staged (without it, every page with
/// file bytes is staged: slower, for tests of staging). On an error
/// nothing is changed: every page taken is given back.
pub fn prepare(
    params: &BootParams,
    image: Range,
    keep: &dyn Fn(Range) -> bool,
    modules: &[NextModule<'_>],
    cmdline: &str,
    in_place: bool,
) -> Result<Prepared, KexecError> {
    prepare_with(
        &mut KernelFrames,
        params,
        image,
        keep,
        modules,
        cmdline,
        in_place,
    )
}

/// [`prepare`], taking the pages it builds from `frames` (and giving every
/// one back to it if the kexec is refused).
pub fn prepare_with(
    frames: &mut dyn StageFrames,
    params: &BootParams,
    image: Range,
    keep: &dyn Fn(Range) -> bool,
    modules: &[NextModule<'_>],
    cmdline: &str,
    in_place: bool,
) -> Result<Prepared, KexecError> {
    // Only a module's bytes are known to stay unchanged until the jump.
    let bytes = module_bytes(image).ok_or(KexecError::NotAModule { range: image })?;
    let img = Image::parse(bytes).map_err(KexecError::Image)?;
    let ram: heapless::Vec<Range, { crate::pvh::MAX_MEMMAP }> = params.ram().collect();
    img.plan(&ram, keep).map_err(KexecError::Image)?;
    for m in modules {
        for s in img.segments() {
            if s.pages().overlaps(&m.range) {
                return Err(KexecError::Clobbers { range: s.pages() });
            }
        }
    }
    // The next kernel reads at most this much (and it fits in the boot
    // structures' second page with its NUL).
    if cmdline.len() > crate::pvh::MAX_CMDLINE {
        return Err(KexecError::CmdlineTooLong);
    }
    let mut dests: heapless::Vec<Range, MAX_SEGMENTS> = heapless::Vec::new();
    for s in img.segments() {
        let _ = dests.push(s.pages());
    }
    // Pages copied from the module must stay as they are until the
    // trampoline has read them: a module is checked clear of every
    // destination above, and the caller keeps it.
    let module = (in_place && modules.iter().any(|m| m.range.covers(image))).then_some(image.start);
    let mut taken = Taken {
        runs: Vec::new(),
        frames,
    };
    let r = build(params, &img, &dests, modules, cmdline, module, &mut taken);
    if r.is_err() {
        taken.free();
    }
    r
}

fn build(
    params: &BootParams,
    img: &Image<'_>,
    dests: &[Range],
    modules: &[NextModule<'_>],
    cmdline: &str,
    module: Option<u64>,
    taken: &mut Taken<'_>,
) -> Result<Prepared, KexecError> {
    // The list first; each staged page's entry is filled in once its
    // page is taken, from `staged`: (list slot, segment, destination page).
    let mut list: Vec<u64> = Vec::new();
    let mut staged: Vec<(usize, &kho::elf::Segment, u64)> = Vec::new();
    let mut from_module = 0u64;
    for s in img.segments() {
        let pages = s.pages();
        list.push(pages.start | entry::DEST);
        let mut zeros = 0u64;
        for page in (pages.start..pages.end).step_by(PAGE_SIZE as usize) {
            let f = fill_of(s, page, module);
            if f != Fill::Zero && zeros > 0 {
                list.push((zeros << 12) | entry::ZERO);
                zeros = 0;
            }
            match f {
                Fill::Zero => zeros += 1,
                Fill::Module(at) => {
                    list.push(at | entry::SOURCE);
                    from_module += 1;
                }
                Fill::Staged => {
                    staged.push((list.len(), s, page));
                    list.push(entry::SOURCE);
                }
            }
        }
        if zeros > 0 {
            list.push((zeros << 12) | entry::ZERO);
        }
    }
    list.push(entry::DONE);
    let list_pages = (list.len() as u64).div_ceil(entry::PER_PAGE as u64);

    // Identity tables over [0, top of RAM rounded to 1 GiB), 2 MiB pages.
    let gib = params.ram_end().max(LOW).div_ceil(1 << 30);
    if gib > 512 {
        return Err(KexecError::NoScratch {
            bytes: gib * PAGE_SIZE,
        });
    }
    let tables = taken.low(2 + gib, dests)?;
    let boot = taken.low(BOOT_PAGES, dests)?;
    let tramp = taken.low(1, dests)?;
    // Staged pages and list pages: any free pages outside every
    // destination, one call so a shortfall names the whole need.
    let all = taken.scattered(staged.len() as u64 + list_pages, dests)?;
    let (stage, lists) = all.split_at(staged.len());

    let (pml4, pdpt) = (tables, tables + PAGE_SIZE);
    // Every page written below was just taken for this kexec: RAM that
    // nothing else uses; that is what each `poke` and `zero` relies on.
    // SAFETY: the tables' pages are ours (see above).
    unsafe {
        zero(tables, (2 + gib) * PAGE_SIZE);
        poke(pml4, &(pdpt | 3).to_le_bytes());
        for g in 0..gib {
            let pd = tables + (2 + g) * PAGE_SIZE;
            poke(pdpt + g * 8, &(pd | 3).to_le_bytes());
            let mut entries = [0u8; 4096];
            for (i, e) in entries.chunks_exact_mut(8).enumerate() {
                let addr = (g << 30) + ((i as u64) << 21);
                e.copy_from_slice(&(addr | 0x83).to_le_bytes());
            }
            poke(pd, &entries);
        }
    }

    // Build each staged page (its file bytes, zeros around them) and put
    // its address in its list slot.
    let mut page_buf = alloc::vec![0u8; PAGE_SIZE as usize];
    for (&(slot, s, page), &at) in staged.iter().zip(stage) {
        page_buf.fill(0);
        // The file bytes that fall in this page.
        let file = img.file_bytes(s);
        let lo = page.max(s.dest);
        let hi = (page + PAGE_SIZE).min(s.dest + s.file_size);
        let from = (lo - s.dest) as usize;
        let to = (hi - s.dest) as usize;
        let into = (lo - page) as usize;
        page_buf[into..into + (to - from)].copy_from_slice(&file[from..to]);
        // SAFETY: a staging page taken above.
        unsafe { poke(at, &page_buf) };
        list[slot] = at | entry::SOURCE;
    }

    // The list, in its pages: each full page goes on in the next.
    for (k, chunk) in list.chunks(entry::PER_PAGE).enumerate() {
        let mut words = [0u64; 512];
        words[..chunk.len()].copy_from_slice(chunk);
        if let Some(&next) = lists.get(k + 1) {
            words[entry::PER_PAGE] = next | entry::NEXT;
        }
        let mut page = [0u8; 4096];
        for (d, w) in page.chunks_exact_mut(8).zip(words) {
            d.copy_from_slice(&w.to_le_bytes());
        }
        // SAFETY: a list page taken above.
        unsafe { poke(lists[k], &page) };
    }

    // Boot structures, laid out by `crate::bootpages` (the one definition the next
    // kernel's entry reads): anything that does not fit is a typed error.
    let info = boot;
    let regions: Vec<BootRegion> = params
        .memory_map
        .iter()
        .map(|r| BootRegion {
            range: r.range,
            ty: r.kind.e820(),
        })
        .collect();
    let mods: Vec<BootModule<'_>> = modules
        .iter()
        .map(|m| BootModule {
            range: m.range,
            cmdline: m.cmdline,
        })
        .collect();
    let mut pages = alloc::vec![0u8; (BOOT_PAGES * PAGE_SIZE) as usize];
    crate::bootpages::write_boot_pages(&mut pages, boot, &regions, &mods, cmdline, params.rsdp)
        .map_err(KexecError::Boot)?;
    // SAFETY: as above, the boot pages are ours.
    unsafe { poke(boot, &pages) };

    // The trampoline page: code at 0, parameters at PARAMS_AT.
    let start = &raw const kho_trampoline_start as u64;
    let end = &raw const kho_trampoline_end as u64;
    let len = (end - start) as usize;
    // SAFETY: the trampoline's bytes are in this kernel's text, mapped and
    // readable; `len` is its size from the linker.
    let code = unsafe { core::slice::from_raw_parts(start as *const u8, len) };
    let mut p = [0u8; 32];
    p[..8].copy_from_slice(&pml4.to_le_bytes());
    p[8..16].copy_from_slice(&lists[0].to_le_bytes());
    p[16..24].copy_from_slice(&info.to_le_bytes());
    p[24..32].copy_from_slice(&img.pvh_entry.to_le_bytes());
    // SAFETY: the trampoline page is ours (taken above).
    unsafe {
        zero(tramp, PAGE_SIZE);
        poke(tramp, code);
        poke(tramp + PARAMS_AT, &p);
    }
    // SAFETY: the page is ours and holds only the trampoline and its data;
    // it is mapped writable and executable at its identity address, which
    // nothing else in this kernel uses.
    unsafe { paging::map_identity(tramp, 1) }.map_err(|_| KexecError::Map)?;
    Ok(Prepared {
        tramp,
        staged: staged.len() as u64 * PAGE_SIZE,
        from_module: from_module * PAGE_SIZE,
        list_pages,
        entry: img.pvh_entry,
        span: img.span(),
    })
}

/// Runs the prepared kexec: interrupts off, into the trampoline. Does not
/// return.
///
/// # Safety
/// Everything the running kernel holds is lost: the caller must have
/// finished its handoff (and everything the next kernel needs must lie in
/// memory that `prepare` was told to keep). Single CPU only.
pub unsafe fn jump(p: Prepared) -> ! {
    x86_64::instructions::interrupts::disable();
    let entry = p.tramp;
    let params = p.tramp + PARAMS_AT;
    // SAFETY: the trampoline page is mapped executable at `entry` (by
    // `prepare`), and its code never returns; the caller gives up the
    // kernel's state.
    unsafe {
        core::arch::asm!(
            "jmp {entry}",
            entry = in(reg) entry,
            in("rdi") params,
            options(noreturn)
        )
    }
}
