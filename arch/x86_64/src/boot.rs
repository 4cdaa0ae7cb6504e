//! PVH entry: the 32-bit entry point QEMU jumps to, and the climb to long mode.
//!
//! QEMU (and our own kexec trampoline) enters `pvh_start` in 32-bit protected
//! mode with paging off and `%ebx` holding the physical address of the
//! `hvm_start_info` structure. This code builds temporary page tables that
//! identity-map the first 4 GiB with 2 MiB pages, enables PAE and long mode,
//! loads a minimal GDT and calls `kho_x86_64_start` on the boot stack,
//! which `entry!` (in `start`) defines in the kernel binary: the library itself
//! has no entry point, and a kernel that boots another way never links
//! this code. Rust then replaces these tables with its own.

/// Size of the boot stack, which stays the kernel's stack after boot.
pub const BOOT_STACK_SIZE: usize = 512 * 1024;

/// The PVH boot code and its note, stack and tables, for `global_asm!` in
/// the kernel binary ([`crate::entry!`] uses it; a kernel has no reason to
/// name it). Its one operand is `stack_size`.
#[doc(hidden)]
#[macro_export]
macro_rules! __pvh_boot_asm {
    () => {
        r#"
    /* PVH ELF note: owner "Xen", type 18 (XEN_ELFNOTE_PHYS32_ENTRY). */
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .long pvh_start
    .balign 4
    .popsection

    /* Boot page tables and stack, in .bss: a loader zeroes them. The guard
       page under the stack is left unmapped by the final page tables. */
    .pushsection .bss.boot_stack, "aw", @nobits
    .balign 4096
    .global __boot_stack_guard
__boot_stack_guard:
    .skip 4096
    .global __boot_stack_bottom
__boot_stack_bottom:
    .skip {stack_size}
    .global __boot_stack_top
__boot_stack_top:
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4096 * 4
    .popsection

    .pushsection .rodata
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff   /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff   /* 0x10: data */
boot_gdt_end:
    .balign 4
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
    .popsection

    .pushsection .text.boot, "ax"
    .code32
    .global pvh_start
pvh_start:
    cli
    cld
    movl %ebx, %edi                 /* hvm_start_info, kept for Rust */
    movl $__boot_stack_top, %esp

    /* PML4[0] -> PDPT, PDPT[0..4] -> the four PDs. */
    movl $boot_pdpt, %eax
    orl $3, %eax
    movl %eax, boot_pml4
    movl $0, boot_pml4 + 4
    xorl %ecx, %ecx
1:
    movl %ecx, %eax
    shll $12, %eax
    addl $boot_pd, %eax
    orl $3, %eax
    movl %eax, boot_pdpt(,%ecx,8)
    movl $0, boot_pdpt + 4(,%ecx,8)
    incl %ecx
    cmpl $4, %ecx
    jne 1b

    /* 2048 PD entries of 2 MiB: identity map of [0, 4 GiB). */
    xorl %ecx, %ecx
2:
    movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax                 /* present | writable | huge */
    movl %eax, boot_pd(,%ecx,8)
    movl $0, boot_pd + 4(,%ecx,8)
    incl %ecx
    cmpl $2048, %ecx
    jne 2b

    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $(1 << 5), %eax             /* PAE */
    movl %eax, %cr4
    movl $0xc0000080, %ecx          /* EFER */
    rdmsr
    orl $(1 << 8), %eax             /* LME */
    wrmsr
    /* CR0 set whole, not ORed: a loader (or reset) may leave CD and NW
       set, and with caches off a KVM guest runs hundreds of times slower.
       PG | WP | NE | ET | MP | PE. */
    movl $0x80010033, %eax
    movl %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $3f

    .code64
3:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movq $__boot_stack_top, %rsp
    movl %edi, %edi                 /* zero-extend the start_info address */
    xorl %ebp, %ebp
    call kho_x86_64_start
4:
    hlt
    jmp 4b
    .popsection
    "#
    };
}

unsafe extern "C" {
    static __boot_stack_guard: u8;
    static __boot_stack_bottom: u8;
    static __boot_stack_top: u8;
    static __kernel_start: u8;
    static __kernel_end: u8;
    static __rodata_start: u8;
    static __data_start: u8;
}

/// Physical address ranges of the kernel image, from the linker script.
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    /// Start of the image (start of `.text`).
    pub start: u64,
    /// Start of read-only data.
    pub rodata: u64,
    /// Start of writable data (`.data`, then `.bss`).
    pub data: u64,
    /// The unmapped guard page under the boot stack.
    pub stack_guard: u64,
    /// Lowest address of the boot stack.
    pub stack_bottom: u64,
    /// One past the boot stack.
    pub stack_top: u64,
    /// One past the image, page aligned.
    pub end: u64,
}

/// The kernel image layout. The kernel is identity mapped, so these symbol
/// addresses are physical addresses as well.
pub fn image_layout() -> ImageLayout {
    // The symbols are defined by the linker script and the boot assembly; only
    // their addresses are taken, never their contents.
    ImageLayout {
        start: (&raw const __kernel_start) as u64,
        rodata: (&raw const __rodata_start) as u64,
        data: (&raw const __data_start) as u64,
        stack_guard: (&raw const __boot_stack_guard) as u64,
        stack_bottom: (&raw const __boot_stack_bottom) as u64,
        stack_top: (&raw const __boot_stack_top) as u64,
        end: (&raw const __kernel_end) as u64,
    }
}
