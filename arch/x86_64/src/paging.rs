//! The kernel's own page tables: a direct map of all RAM and the image.
//!
//! Layout of the address space after [`init`]:
//! - `[DIRECT_MAP_BASE, DIRECT_MAP_BASE + top of RAM)`: every 2 MiB block that
//!   holds RAM per the memory map, read-write, not executable.
//! - The kernel image, identity mapped with 4 KiB pages: text read-only and
//!   executable, rodata read-only, data and bss writable and not executable,
//!   and the page under the boot stack left unmapped as a guard.
//!
//! Nothing else is mapped; in particular low memory is reached only through
//! the direct map, so a stray null or small pointer faults.
//!
//! Page-table pages are never frames a safe caller can reach: those made
//! during boot, before the heap, are recorded ([`boot_tables`]) so that
//! boot can fix them in the frame allocator and make the RAM token refuse
//! them; once [`tables_on_heap`] has run, every new one is a page of the
//! heap, which the token refuses too. So no write through
//! [`crate::glue::KernelMem`] can change a mapping.

use crate::addr::{PhysAddr as Phys, VirtAddr as Virt};
use crate::boot::ImageLayout;
use crate::frames;
use crate::pvh::BootParams;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};
use kho::PAGE_SIZE;
use kho::ranges::Range;
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};
use x86_64::structures::paging::{PageTable, PageTableFlags as F, PhysFrame};
use x86_64::{PhysAddr, VirtAddr};

/// Virtual address where physical address 0 is mapped.
pub const DIRECT_MAP_BASE: u64 = 0xffff_8000_0000_0000;
const HUGE: u64 = 2 << 20;

static DIRECT_MAP_LIVE: AtomicBool = AtomicBool::new(false);

/// Most runs of page-table pages taken before the heap (they come from the
/// scratch pool one after another, so usually one or two runs).
pub const MAX_BOOT_TABLE_RUNS: usize = 8;

/// The page-table pages taken before the heap, as runs.
static BOOT_TABLES: spin::Mutex<heapless::Vec<Range, MAX_BOOT_TABLE_RUNS>> =
    spin::Mutex::new(heapless::Vec::new());

/// Whether new page-table pages come from the heap.
static TABLES_ON_HEAP: AtomicBool = AtomicBool::new(false);

/// The page-table pages made before [`tables_on_heap`], as runs of
/// frames: boot fixes them in the frame allocator and hands them to the
/// RAM token as memory it refuses.
pub fn boot_tables() -> heapless::Vec<Range, MAX_BOOT_TABLE_RUNS> {
    BOOT_TABLES.lock().clone()
}

/// From now on, page-table pages are pages of the heap (the global
/// allocator must be live: boot calls this right after the heap opens).
pub fn tables_on_heap() {
    TABLES_ON_HEAP.store(true, Ordering::Relaxed);
}

/// The direct-map address of physical address `phys`.
pub fn phys_to_virt(phys: impl Into<Phys>) -> Virt {
    Virt::new(DIRECT_MAP_BASE.wrapping_add(phys.into().as_u64()))
}

/// Errors while building page tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingError {
    /// No frame was left for a page-table page.
    OutOfFrames,
    /// The address is already mapped by a larger page.
    Conflict(u64),
}

impl fmt::Display for PagingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PagingError::OutOfFrames => f.write_str("out of frames for page tables"),
            PagingError::Conflict(v) => write!(f, "{v:#x} is already mapped by a huge page"),
        }
    }
}

impl core::error::Error for PagingError {}

/// Pointer to the page-table page at `phys`: identity mapped during boot,
/// through the direct map once it is live.
fn table_ptr(phys: u64) -> *mut PageTable {
    if DIRECT_MAP_LIVE.load(Ordering::Relaxed) {
        phys_to_virt(phys).as_mut_ptr::<PageTable>()
    } else {
        phys as *mut PageTable
    }
}

fn new_table() -> Result<u64, PagingError> {
    if TABLES_ON_HEAP.load(Ordering::Relaxed) {
        let layout = core::alloc::Layout::from_size_align(PAGE_SIZE as usize, PAGE_SIZE as usize)
            .map_err(|_| PagingError::OutOfFrames)?;
        // SAFETY: the layout has a non-zero size. The page is never freed:
        // it is a page table for as long as the kernel runs.
        let virt = unsafe { alloc::alloc::alloc_zeroed(layout) };
        if virt.is_null() {
            return Err(PagingError::OutOfFrames);
        }
        // The heap lies in the direct map, so its pages' physical
        // addresses are their offsets in it.
        return Ok((virt as u64).wrapping_sub(DIRECT_MAP_BASE));
    }
    // Below 4 GiB while only the boot identity map exists.
    let phys = if DIRECT_MAP_LIVE.load(Ordering::Relaxed) {
        frames::alloc(1, PAGE_SIZE)
    } else {
        frames::alloc_below(1, 1 << 32)
    }
    .ok_or(PagingError::OutOfFrames)?;
    {
        let mut runs = BOOT_TABLES.lock();
        match runs.last_mut() {
            Some(r) if r.end == phys => r.end += PAGE_SIZE,
            _ => runs
                .push(Range::new(phys, phys + PAGE_SIZE))
                .map_err(|_| PagingError::OutOfFrames)?,
        }
    }
    // SAFETY: the frame was just taken from the allocator, so nothing else
    // uses it, and `table_ptr` gives a mapped, page-aligned address for it.
    unsafe { (*table_ptr(phys)).zero() };
    Ok(phys)
}

/// The child table under entry `index` of `parent`, created if missing.
///
/// # Safety
/// `parent` must be the physical address of a live page-table page that no
/// one else is modifying.
unsafe fn child(parent: u64, index: usize, virt: u64) -> Result<u64, PagingError> {
    // SAFETY: guaranteed by the caller; see `table_ptr`.
    let entry = unsafe { &mut (&mut *table_ptr(parent))[index] };
    if entry.is_unused() {
        let t = new_table()?;
        entry.set_addr(PhysAddr::new(t), F::PRESENT | F::WRITABLE);
        return Ok(t);
    }
    if entry.flags().contains(F::HUGE_PAGE) {
        return Err(PagingError::Conflict(virt));
    }
    Ok(entry.addr().as_u64())
}

fn idx(virt: u64, level: u32) -> usize {
    ((virt >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

/// Maps one page of `size` (4 KiB or 2 MiB) at `virt` to `phys`.
///
/// # Safety
/// `pml4` must be a page-table root nobody else modifies, and the mapping
/// must not alias memory in a way that breaks Rust's rules for live data.
unsafe fn map(pml4: u64, virt: u64, phys: u64, size: u64, flags: F) -> Result<(), PagingError> {
    // SAFETY: each table returned by `child` is a live table of this tree.
    unsafe {
        let pdpt = child(pml4, idx(virt, 4), virt)?;
        let pd = child(pdpt, idx(virt, 3), virt)?;
        let (table, index, leaf) = if size == HUGE {
            (pd, idx(virt, 2), flags | F::HUGE_PAGE)
        } else {
            (child(pd, idx(virt, 2), virt)?, idx(virt, 1), flags)
        };
        let entry = &mut (&mut *table_ptr(table))[index];
        if !entry.is_unused() && entry.addr().as_u64() != phys {
            return Err(PagingError::Conflict(virt));
        }
        entry.set_addr(PhysAddr::new(phys), leaf | F::PRESENT);
    }
    Ok(())
}

/// Whether the CPU supports the no-execute bit.
fn cpu_has_nx() -> bool {
    let r = core::arch::x86_64::__cpuid(0x8000_0000);
    r.eax >= 0x8000_0001 && core::arch::x86_64::__cpuid(0x8000_0001).edx & (1 << 20) != 0
}

/// Builds the kernel's page tables and switches to them.
///
/// # Safety
/// Must be called once, during boot, while the boot page tables identity map
/// the first 4 GiB, after the frame allocator holds only free RAM.
pub unsafe fn init(params: &BootParams, image: &ImageLayout) -> Result<(), PagingError> {
    let nx = cpu_has_nx();
    if nx {
        // SAFETY: enabling NXE only gives meaning to bit 63 of entries, which
        // the boot tables leave clear.
        unsafe { Efer::update(|f| f.insert(EferFlags::NO_EXECUTE_ENABLE)) };
    }
    let no_exec = if nx { F::NO_EXECUTE } else { F::empty() };
    let pml4 = new_table()?;

    for r in params.ram() {
        let mut p = r.start & !(HUGE - 1);
        while p < r.end {
            // SAFETY: `pml4` is a fresh tree not yet in use; the direct map
            // aliases the image's frames, which is documented above.
            unsafe {
                map(
                    pml4,
                    phys_to_virt(p).as_u64(),
                    p,
                    HUGE,
                    F::WRITABLE | F::GLOBAL | no_exec,
                )?
            };
            p += HUGE;
        }
    }
    let spans = [
        (image.start, image.rodata, F::GLOBAL),
        (image.rodata, image.data, F::GLOBAL | no_exec),
        (
            image.data,
            image.stack_guard,
            F::WRITABLE | F::GLOBAL | no_exec,
        ),
        (
            image.stack_bottom,
            image.end,
            F::WRITABLE | F::GLOBAL | no_exec,
        ),
    ];
    for (start, end, flags) in spans {
        let mut p = start;
        while p < end {
            // SAFETY: as above; the image is identity mapped page by page.
            unsafe { map(pml4, p, p, PAGE_SIZE, flags)? };
            p += PAGE_SIZE;
        }
    }

    let frame =
        PhysFrame::from_start_address(PhysAddr::new(pml4)).map_err(|_| PagingError::OutOfFrames)?;
    // SAFETY: the new tables map the running code, stack and all data the
    // kernel uses from here on (statics in the image, the rest through the
    // direct map, which `table_ptr` switches to right after).
    unsafe { Cr3::write(frame, Cr3Flags::empty()) };
    DIRECT_MAP_LIVE.store(true, Ordering::Relaxed);
    Ok(())
}

/// Identity maps `count` 4 KiB pages at `phys` as writable and executable,
/// for code that must run while paging changes under it (the kexec
/// trampoline).
///
/// # Safety
/// The pages must not be in use by anything that relies on them being
/// unmapped, and the caller must respect W^X for what it writes there.
pub unsafe fn map_identity(phys: u64, count: u64) -> Result<(), PagingError> {
    let (root, _) = Cr3::read();
    for i in 0..count {
        let p = phys + i * PAGE_SIZE;
        // SAFETY: the live root is only modified here, with interrupts off
        // and a single CPU; the caller vouches for the pages.
        unsafe { map(root.start_address().as_u64(), p, p, PAGE_SIZE, F::WRITABLE)? };
        x86_64::instructions::tlb::flush(VirtAddr::new(p));
    }
    Ok(())
}

/// Where [`map_frames`] puts virtually contiguous mappings of scattered
/// frames (preserved vmalloc).
pub const VMAP_BASE: u64 = 0xffff_c000_0000_0000;
/// Size of that area.
pub const VMAP_SIZE: u64 = 1 << 40;

static VMAP_NEXT: spin::Mutex<u64> = spin::Mutex::new(VMAP_BASE);

/// Maps `frames` (4 KiB each, in order) at a fresh virtually contiguous
/// range of the vmap area, writable, not executable; returns its address.
/// Virtual space is never reused (the area is 1 TiB).
///
/// # Safety
/// The frames must be RAM that the caller owns for as long as the mapping
/// is used; the mapping aliases them (as the direct map does).
pub unsafe fn map_frames(frames: &[u64]) -> Result<Virt, PagingError> {
    let len = frames.len() as u64 * PAGE_SIZE;
    let virt = {
        let mut next = VMAP_NEXT.lock();
        let v = *next;
        // One unmapped guard page after each mapping.
        if v + len + PAGE_SIZE > VMAP_BASE + VMAP_SIZE {
            return Err(PagingError::OutOfFrames);
        }
        *next = v + len + PAGE_SIZE;
        v
    };
    let (root, _) = Cr3::read();
    let nx = if cpu_has_nx() {
        F::NO_EXECUTE
    } else {
        F::empty()
    };
    for (i, &f) in frames.iter().enumerate() {
        let v = virt + i as u64 * PAGE_SIZE;
        // SAFETY: the live root is only modified here and in
        // `map_identity`/`unmap_frames`, single CPU, interrupts off; the
        // caller vouches for the frames; `v` is fresh vmap space.
        unsafe {
            map(
                root.start_address().as_u64(),
                v,
                f,
                PAGE_SIZE,
                F::WRITABLE | nx,
            )?
        };
    }
    Ok(Virt::new(virt))
}

/// The page-table pages the live tree walks through to translate `virt`,
/// root first (four for a 4 KiB page, fewer where a huge page or an
/// unused entry ends the walk): what a test checks the token refuses.
pub fn tables_of(virt: u64) -> heapless::Vec<u64, 4> {
    let (root, _) = Cr3::read();
    let mut out = heapless::Vec::new();
    let mut t = root.start_address().as_u64();
    for level in [4, 3, 2, 1] {
        let _ = out.push(t);
        if level == 1 {
            break;
        }
        // SAFETY: `t` is a table of the live tree, reached through the
        // direct map; only read here, single CPU, interrupts off.
        let e = unsafe { &(&*table_ptr(t))[idx(virt, level)] };
        if e.is_unused() || e.flags().contains(F::HUGE_PAGE) {
            break;
        }
        t = e.addr().as_u64();
    }
    out
}

/// Removes `count` pages mapped by [`map_frames`] at `virt`.
///
/// # Safety
/// Nothing may use the mapping afterwards.
pub unsafe fn unmap_frames(virt: Virt, count: u64) {
    let virt = virt.as_u64();
    for i in 0..count {
        let v = virt + i * PAGE_SIZE;
        // The walk down to the table that maps `v` with a 4 KiB page;
        // shorter where nothing (or a huge page) maps it: nothing to undo.
        let &[_, _, _, t] = tables_of(v).as_slice() else {
            return;
        };
        // SAFETY: `t` is a live table of the current tree, modified only
        // here and in `map`, single CPU, interrupts off; the caller gives
        // up the mapping.
        unsafe { (&mut *table_ptr(t))[idx(v, 1)].set_unused() };
        x86_64::instructions::tlb::flush(VirtAddr::new(v));
    }
}
