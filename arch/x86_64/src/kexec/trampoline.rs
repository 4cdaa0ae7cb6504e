//! The kexec trampoline, run from a page of its own: it switches to the
//! identity tables, walks the entry list (copy, zero, go on, done), drops
//! to 32-bit protected mode with paging off and enters the next kernel by
//! PVH.

core::arch::global_asm!(
    r#"
    .pushsection .text.kho_trampoline, "ax"
    .balign 16
    .global kho_trampoline_start
kho_trampoline_start:
    /* %rdi: the parameter block (identity address, below 4 GiB):
       +0 cr3, +8 the first entry of the list, +16 start info, +24 entry.
       An entry is a page address with a kind in its low bits: 1 copy to
       here from now on, 2 the list goes on here, 4 done, 8 copy this
       page, 16 zero (entry >> 12) pages. */
    cli
    cld
    movq %rdi, %r15
    leaq 4096 + kho_trampoline_start(%rip), %rsp
    andq $-4096, %rsp               /* stack: the top of this page */
    movq 0(%r15), %rax
    movq %rax, %cr3                 /* identity tables from here on */
    movq 16(%r15), %r12             /* the start info */
    rdtsc
    shlq $32, %rdx
    orq %rdx, %rax
    movq %rax, {stamps} + 8(%r12)   /* first stamp: the copies start */
    movq 8(%r15), %rbx              /* the list */
    xorl %edi, %edi                 /* the destination cursor */
1:
    movq (%rbx), %rax
    addq $8, %rbx
    movq %rax, %rdx
    andq $-4096, %rdx               /* the address (or count << 12) */
    testb $1, %al
    jnz 10f
    testb $2, %al
    jnz 11f
    testb $4, %al
    jnz 2f
    testb $8, %al
    jnz 12f
    testb $16, %al
    jnz 13f
    ud2                             /* no such entry: a bug, stop here */
10:
    movq %rdx, %rdi
    jmp 1b
11:
    movq %rdx, %rbx
    jmp 1b
12:
    movq %rdx, %rsi
    movl $512, %ecx
    rep movsq                       /* one page; the cursor moves on */
    jmp 1b
13:
    movq %rdx, %rcx
    shrq $3, %rcx                   /* (count << 12) / 8 quadwords */
    xorl %eax, %eax
    rep stosq                       /* count pages of zeros */
    jmp 1b
2:
    rdtsc
    shlq $32, %rdx
    orq %rdx, %rax
    movq %rax, {stamps} + 16(%r12)  /* last stamp: the copies are done */
    movabsq ${magic}, %rax
    movq %rax, {stamps}(%r12)
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
    stamps = const crate::bootpages::layout::TRAMPOLINE_STAMPS,
    magic = const crate::bootpages::layout::TRAMPOLINE_MAGIC,
    options(att_syntax)
);

unsafe extern "C" {
    pub(super) static kho_trampoline_start: u8;
    pub(super) static kho_trampoline_end: u8;
}
