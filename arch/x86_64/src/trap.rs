//! CPU exceptions: naked entry stubs, the IDT, and the fatal-trap report.
//!
//! Every exception is fatal in this kernel (interrupts are never enabled).
//! The report names the vector, error code, RIP and CR2 and goes to the
//! kernel's trap hook ([`init`]; `kho_qemu_rt::on_trap` fails the running
//! kernel test or exits QEMU with failure). A double fault runs on its own stack, so a stack
//! overflow into the guard page is reported too, never a silent reboot.

use core::fmt;
use spin::Once;
use x86_64::VirtAddr;
use x86_64::registers::control::Cr2;
use x86_64::structures::idt::InterruptDescriptorTable;

/// Registers saved by the entry stubs, lowest address first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TrapFrame {
    /// General registers, in push order reversed.
    pub rax: u64,
    #[allow(missing_docs)]
    pub rbx: u64,
    #[allow(missing_docs)]
    pub rcx: u64,
    #[allow(missing_docs)]
    pub rdx: u64,
    #[allow(missing_docs)]
    pub rsi: u64,
    #[allow(missing_docs)]
    pub rdi: u64,
    #[allow(missing_docs)]
    pub rbp: u64,
    #[allow(missing_docs)]
    pub r8: u64,
    #[allow(missing_docs)]
    pub r9: u64,
    #[allow(missing_docs)]
    pub r10: u64,
    #[allow(missing_docs)]
    pub r11: u64,
    #[allow(missing_docs)]
    pub r12: u64,
    #[allow(missing_docs)]
    pub r13: u64,
    #[allow(missing_docs)]
    pub r14: u64,
    #[allow(missing_docs)]
    pub r15: u64,
    /// Exception vector (pushed by the stub).
    pub vector: u64,
    /// Error code (0 for vectors without one).
    pub error_code: u64,
    /// Faulting instruction.
    pub rip: u64,
    /// Code segment at the fault.
    pub cs: u64,
    /// Flags at the fault.
    pub rflags: u64,
    /// Stack pointer at the fault.
    pub rsp: u64,
    /// Stack segment at the fault.
    pub ss: u64,
}

/// Name of an exception vector.
pub fn vector_name(v: u64) -> &'static str {
    const NAMES: [&str; 32] = [
        "divide error",
        "debug",
        "NMI",
        "breakpoint",
        "overflow",
        "bound range exceeded",
        "invalid opcode",
        "device not available",
        "double fault",
        "coprocessor segment overrun",
        "invalid TSS",
        "segment not present",
        "stack-segment fault",
        "general protection fault",
        "page fault",
        "reserved",
        "x87 floating point",
        "alignment check",
        "machine check",
        "SIMD floating point",
        "virtualization",
        "control protection",
        "reserved",
        "reserved",
        "reserved",
        "reserved",
        "reserved",
        "reserved",
        "hypervisor injection",
        "VMM communication",
        "security",
        "reserved",
    ];
    NAMES.get(v as usize).copied().unwrap_or("unknown")
}

/// A fatal CPU exception, as reported.
#[derive(Clone, Copy, Debug)]
pub struct Trap {
    /// The saved registers.
    pub frame: TrapFrame,
    /// CR2 at the time of the trap (the faulting address for a page fault).
    pub cr2: u64,
}

impl fmt::Display for Trap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.frame;
        write!(
            f,
            "CPU exception {} ({}) error code {:#x} at RIP {:#018x} CR2 {:#018x} RSP {:#018x}",
            t.vector,
            vector_name(t.vector),
            t.error_code,
            t.rip,
            self.cr2,
            t.rsp
        )?;
        if t.vector == 8 {
            f.write_str(" (a fault while handling a fault: often a stack overflow)")?;
        }
        Ok(())
    }
}

/// What a CPU exception ends in: the kernel's hook ([`init`]).
static HOOK: Once<fn(&Trap) -> !> = Once::new();

extern "C" fn trap_handler(frame: &TrapFrame) -> ! {
    let trap = Trap {
        frame: *frame,
        cr2: Cr2::read_raw(),
    };
    match HOOK.get() {
        Some(hook) => hook(&trap),
        None => {
            crate::serial::emergency(format_args!("\nkernel {trap}\n"));
            crate::cpu::halt_forever()
        }
    }
}

#[unsafe(naked)]
unsafe extern "C" fn trap_common() {
    core::arch::naked_asm!(
        "push r15", "push r14", "push r13", "push r12", "push r11", "push r10", "push r9",
        "push r8", "push rbp", "push rdi", "push rsi", "push rdx", "push rcx", "push rbx",
        "push rax",
        "mov rdi, rsp",
        "cld",
        // 22 quadwords are on the stack since the CPU aligned it: aligned.
        "call {handler}",
        "ud2",
        handler = sym trap_handler,
    );
}

macro_rules! stubs {
    ($($name:ident = $vec:literal $kind:ident),* $(,)?) => {
        $(stubs!(@one $name $vec $kind);)*
        const STUBS: &[(u8, unsafe extern "C" fn())] = &[$(($vec, $name)),*];
    };
    (@one $name:ident $vec:literal noerr) => {
        #[unsafe(naked)]
        unsafe extern "C" fn $name() {
            core::arch::naked_asm!("push 0", concat!("push ", $vec), "jmp {c}", c = sym trap_common);
        }
    };
    (@one $name:ident $vec:literal err) => {
        #[unsafe(naked)]
        unsafe extern "C" fn $name() {
            core::arch::naked_asm!(concat!("push ", $vec), "jmp {c}", c = sym trap_common);
        }
    };
}

stubs! {
    v0 = 0 noerr, v1 = 1 noerr, v2 = 2 noerr, v3 = 3 noerr, v4 = 4 noerr, v5 = 5 noerr,
    v6 = 6 noerr, v7 = 7 noerr, v8 = 8 err, v10 = 10 err, v11 = 11 err, v12 = 12 err,
    v13 = 13 err, v14 = 14 err, v16 = 16 noerr, v17 = 17 err, v18 = 18 noerr, v19 = 19 noerr,
    v20 = 20 noerr, v21 = 21 err, v28 = 28 noerr, v29 = 29 err, v30 = 30 err,
}

static IDT: Once<InterruptDescriptorTable> = Once::new();

/// Builds and loads the IDT. Call once, after [`crate::gdt::init`]. Every
/// CPU exception then ends in `hook` (which must not return: the faulting
/// code cannot be resumed); without one, it is printed and the CPU halts.
pub fn init(hook: Option<fn(&Trap) -> !>) {
    if let Some(h) = hook {
        HOOK.call_once(|| h);
    }
    let idt = IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        for &(vec, stub) in STUBS {
            let addr = VirtAddr::new(stub as usize as u64);
            // SAFETY: each stub is a valid exception entry point that never
            // returns to the faulting code; the double fault uses the IST
            // stack that `gdt::init` set up.
            unsafe {
                match vec {
                    0 => _ = idt.divide_error.set_handler_addr(addr),
                    1 => _ = idt.debug.set_handler_addr(addr),
                    2 => _ = idt.non_maskable_interrupt.set_handler_addr(addr),
                    3 => _ = idt.breakpoint.set_handler_addr(addr),
                    4 => _ = idt.overflow.set_handler_addr(addr),
                    5 => _ = idt.bound_range_exceeded.set_handler_addr(addr),
                    6 => _ = idt.invalid_opcode.set_handler_addr(addr),
                    7 => _ = idt.device_not_available.set_handler_addr(addr),
                    8 => {
                        _ = idt
                            .double_fault
                            .set_handler_addr(addr)
                            .set_stack_index(crate::gdt::DOUBLE_FAULT_IST)
                    }
                    10 => _ = idt.invalid_tss.set_handler_addr(addr),
                    11 => _ = idt.segment_not_present.set_handler_addr(addr),
                    12 => _ = idt.stack_segment_fault.set_handler_addr(addr),
                    13 => _ = idt.general_protection_fault.set_handler_addr(addr),
                    14 => _ = idt.page_fault.set_handler_addr(addr),
                    16 => _ = idt.x87_floating_point.set_handler_addr(addr),
                    17 => _ = idt.alignment_check.set_handler_addr(addr),
                    18 => _ = idt.machine_check.set_handler_addr(addr),
                    19 => _ = idt.simd_floating_point.set_handler_addr(addr),
                    20 => _ = idt.virtualization.set_handler_addr(addr),
                    21 => _ = idt.cp_protection_exception.set_handler_addr(addr),
                    28 => _ = idt.hv_injection_exception.set_handler_addr(addr),
                    29 => _ = idt.vmm_communication_exception.set_handler_addr(addr),
                    30 => _ = idt.security_exception.set_handler_addr(addr),
                    _ => {}
                }
            }
        }
        idt
    });
    idt.load();
}
