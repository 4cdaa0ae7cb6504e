//! kexec on x86_64: load the next kernel (any ELF64 PVH image) and enter it
//! as a cold boot would, through a trampoline.
//!
//! [`prepare`] checks the image (`kho::elf`), stages its segments in scratch,
//! builds the next kernel's boot structures (a fresh `hvm_start_info`, the
//! same memory map, its command line, its modules) and identity page tables,
//! all in scratch pages clear of every destination. [`jump`] then disables
//! interrupts and runs the trampoline from its own page: it switches to the
//! identity tables, copies each segment to its destination (which may be
//! where this kernel runs), zeroes the rest of each segment, drops to 32-bit
//! protected mode with paging off and jumps to the PVH entry with `%ebx`
//! pointing at the start info. Nothing passes from this kernel to the next
//! but the image, its boot structures and the modules it is given.
//!
//! This module depends on the frame allocator and the page tables of this
//! crate, never on the test harness or a demo.

use crate::pvh::BootParams;
use crate::{frames, paging};
use core::fmt;
use kho::PAGE_SIZE;
use kho::elf::{ElfError, Image, MAX_SEGMENTS};
use kho::pvh::{BootModule, BootRegion, PvhError};
use kho::ranges::Range;

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
    /// Scratch has no room (below 4 GiB, clear of the destinations) for the
    /// staged image, the boot structures or the page tables.
    NoScratch {
        /// Bytes asked for.
        bytes: u64,
    },
    /// The command line is longer than a kernel reads at boot
    /// ([`crate::pvh::MAX_CMDLINE`]).
    CmdlineTooLong,
    /// The trampoline page could not be mapped.
    Map,
    /// The boot structures cannot carry what was asked (too many modules,
    /// a module command line too long, a memory map too long).
    Boot(PvhError),
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
            KexecError::CmdlineTooLong => write!(
                f,
                "kexec: command line longer than the {} bytes a kernel reads at boot",
                crate::pvh::MAX_CMDLINE
            ),
            KexecError::Map => f.write_str("kexec: cannot map the trampoline page"),
            KexecError::Boot(e) => write!(f, "kexec: boot structures: {e}"),
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
    /// Bytes staged (the image's file bytes).
    pub staged: u64,
    /// The next kernel's PVH entry.
    pub entry: u64,
    /// Where its segments go.
    pub span: Range,
}

core::arch::global_asm!(
    r#"
    .pushsection .text.kho_trampoline, "ax"
    .balign 16
    .global kho_trampoline_start
kho_trampoline_start:
    /* %rdi: the parameter block (identity address, below 4 GiB):
       +0 cr3, +8 segment count, +16 start info, +24 entry,
       +32 segments: (src, dst, file size, mem size) x count. */
    cli
    cld
    movq %rdi, %r15
    leaq 4096 + kho_trampoline_start(%rip), %rsp
    andq $-4096, %rsp               /* stack: the top of this page */
    movq 0(%r15), %rax
    movq %rax, %cr3                 /* identity tables from here on */
    movq 8(%r15), %r13
    leaq 32(%r15), %r14
1:
    testq %r13, %r13
    jz 2f
    movq 0(%r14), %rsi
    movq 8(%r14), %rdi
    movq 16(%r14), %rcx
    movq %rcx, %rdx
    shrq $3, %rcx
    rep movsq                       /* the segment's file bytes, 8 at a time */
    movq %rdx, %rcx
    andq $7, %rcx
    rep movsb
    movq 24(%r14), %rcx
    subq 16(%r14), %rcx
    movq %rcx, %rdx
    shrq $3, %rcx
    xorl %eax, %eax
    rep stosq                       /* and zeros up to its memory size */
    movq %rdx, %rcx
    andq $7, %rcx
    rep stosb
    addq $32, %r14
    decq %r13
    jmp 1b
2:
    /* The GDT's base is only known here: patch the pointer, load it. */
    leaq 5f(%rip), %rax
    movq %rax, 6f + 2(%rip)
    lgdt 6f(%rip)
    movl 16(%r15), %ebx             /* start info: %ebx, as PVH wants */
    movl 24(%r15), %esi             /* the entry */
    leaq 3f(%rip), %rax
    pushq $0x08
    pushq %rax
    lretq                           /* to 32-bit compatibility mode */
    .code32
3:
    movl $0x10, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %eax, %fs
    movl %eax, %gs
    movl %cr0, %eax
    andl $0x7fffffff, %eax          /* paging off: long mode ends */
    movl %eax, %cr0
    movl $0xc0000080, %ecx
    rdmsr
    andl $0xfffffeff, %eax          /* EFER.LME off */
    wrmsr
    xorl %eax, %eax
    movl %eax, %cr4
    jmp *%esi
    .code64
    .balign 16
5:
    .quad 0
    .quad 0x00cf9a000000ffff        /* 0x08: 32-bit code, flat */
    .quad 0x00cf92000000ffff        /* 0x10: data, flat */
    .balign 16
6:
    .word 23
    .quad 0
    .global kho_trampoline_end
kho_trampoline_end:
    .popsection
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    static kho_trampoline_start: u8;
    static kho_trampoline_end: u8;
}

/// Writes `bytes` at physical `phys` through the direct map.
///
/// # Safety
/// `phys..phys + bytes.len()` must be RAM this kernel owns and nothing else
/// uses.
unsafe fn poke(phys: u64, bytes: &[u8]) {
    let dst = paging::phys_to_virt(phys) as *mut u8;
    // SAFETY: guaranteed by the caller; the direct map covers RAM.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
}

/// Zeroes `len` bytes at physical `phys`.
///
/// # Safety
/// As [`poke`].
unsafe fn zero(phys: u64, len: u64) {
    let dst = paging::phys_to_virt(phys) as *mut u8;
    // SAFETY: guaranteed by the caller.
    unsafe { core::ptr::write_bytes(dst, 0, len as usize) };
}

fn scratch_pages(count: u64, avoid: &[Range]) -> Result<u64, KexecError> {
    let bytes = count * PAGE_SIZE;
    match frames::alloc_scratch_avoiding(count, avoid) {
        Some(p) if p + bytes <= LOW => Ok(p),
        Some(p) => {
            let _ = frames::free(p, count);
            Err(KexecError::NoScratch { bytes })
        }
        None => Err(KexecError::NoScratch { bytes }),
    }
}

/// Prepares a kexec into `image` (its bytes, read in place).
///
/// `keep` is everything that must survive the jump besides what is staged
/// here: preserved memory, the handoff's metadata, the modules. The image's
/// destinations must be RAM and clear of all of it. `modules` are handed to
/// the next kernel with their command lines, `cmdline` is its command line.
/// On an error nothing is changed but some scratch pages, which are freed.
pub fn prepare(
    params: &BootParams,
    image: &[u8],
    keep: &[Range],
    modules: &[NextModule<'_>],
    cmdline: &str,
) -> Result<Prepared, KexecError> {
    let img = Image::parse(image).map_err(KexecError::Image)?;
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
    // Stage every segment's file bytes, page-aligned, in one run.
    let staged: u64 = img
        .segments()
        .iter()
        .map(|s| s.file_size.next_multiple_of(PAGE_SIZE))
        .sum();
    let stage_pages = (staged / PAGE_SIZE).max(1);
    let stage = scratch_pages(stage_pages, &dests)?;
    let mut allocated: heapless::Vec<(u64, u64), 8> = heapless::Vec::new();
    let _ = allocated.push((stage, stage_pages));
    let r = build(
        params,
        &img,
        &dests,
        modules,
        cmdline,
        stage,
        &mut allocated,
    );
    if r.is_err() {
        for &(p, n) in &allocated {
            let _ = frames::free(p, n);
        }
    }
    r
}

fn build(
    params: &BootParams,
    img: &Image<'_>,
    dests: &[Range],
    modules: &[NextModule<'_>],
    cmdline: &str,
    stage: u64,
    allocated: &mut heapless::Vec<(u64, u64), 8>,
) -> Result<Prepared, KexecError> {
    let mut take = |count: u64| -> Result<u64, KexecError> {
        let p = scratch_pages(count, dests)?;
        let _ = allocated.push((p, count));
        Ok(p)
    };
    // Identity tables over [0, top of RAM rounded to 1 GiB), 2 MiB pages.
    let gib = params.ram_end().max(LOW).div_ceil(1 << 30);
    if gib > 512 {
        return Err(KexecError::NoScratch {
            bytes: gib * PAGE_SIZE,
        });
    }
    let tables = take(2 + gib)?;
    let boot = take(BOOT_PAGES)?;
    let tramp = take(1)?;
    let (pml4, pdpt) = (tables, tables + PAGE_SIZE);
    // The pages taken here were just allocated from scratch for this kexec:
    // RAM, and nothing else uses them; that is what every `poke` and `zero`
    // below relies on.
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

    // Stage the segments and describe them to the trampoline.
    let mut segs = [[0u64; 4]; MAX_SEGMENTS];
    let mut at = stage;
    for (d, s) in segs.iter_mut().zip(img.segments()) {
        // SAFETY: the staging run was taken above for exactly these bytes.
        unsafe { poke(at, img.file_bytes(s)) };
        *d = [at, s.dest, s.file_size, s.mem_size];
        at += s.file_size.next_multiple_of(PAGE_SIZE);
    }

    // Boot structures, laid out by `kho::pvh` (the one definition the next
    // kernel's entry reads): anything that does not fit is a typed error.
    let info = boot;
    let regions: alloc::vec::Vec<BootRegion> = params
        .memory_map
        .iter()
        .map(|r| BootRegion {
            range: r.range,
            ty: r.kind.e820(),
        })
        .collect();
    let mods: alloc::vec::Vec<BootModule<'_>> = modules
        .iter()
        .map(|m| BootModule {
            range: m.range,
            cmdline: m.cmdline,
        })
        .collect();
    let mut pages = alloc::vec![0u8; (BOOT_PAGES * PAGE_SIZE) as usize];
    kho::pvh::write_boot_pages(&mut pages, boot, &regions, &mods, cmdline, params.rsdp)
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
    let mut p = [0u8; 32 + 32 * MAX_SEGMENTS];
    p[..8].copy_from_slice(&pml4.to_le_bytes());
    p[8..16].copy_from_slice(&(img.segments().len() as u64).to_le_bytes());
    p[16..24].copy_from_slice(&info.to_le_bytes());
    p[24..32].copy_from_slice(&img.pvh_entry.to_le_bytes());
    for (i, s) in segs.iter().take(img.segments().len()).enumerate() {
        for (k, w) in s.iter().enumerate() {
            let o = 32 + 32 * i + 8 * k;
            p[o..o + 8].copy_from_slice(&w.to_le_bytes());
        }
    }
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
        staged: at - stage,
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
