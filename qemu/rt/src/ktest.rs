//! The in-kernel test harness, on stable Rust.
//!
//! Tests are registered where they are written with [`kernel_test!`], which
//! puts a [`KernelTest`] record in the `.kho_ktests` link section; the linker
//! script brackets that section with start and stop symbols. [`run`] calls
//! each test through a guarded call: a panic or CPU exception inside the test
//! jumps back to the runner (see [`fatal`]), is reported under the test's
//! name, and the run goes on with the next test. Whatever the failed test had
//! allocated is leaked; nothing it left half-done is resumed.
//!
//! Output, read by the host runner:
//! ```text
//! test NAME ... ok
//! test NAME ... FAILED
//!     reason
//! N passed, N failed
//! ```

use crate::exit::{ExitCode, exit_qemu};
use core::fmt;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};
use kho_x86_64::serial;
use kho_x86_64::trap::Trap;
use kho_x86_64::{kprint, kprintln};

/// One registered kernel test.
#[derive(Debug)]
#[repr(C)]
pub struct KernelTest {
    /// Full name: module path and function name.
    pub name: &'static str,
    /// The test body; it fails by panicking or faulting.
    pub run: fn(),
    /// If set, the test runs only when `kho.harness=<flag>` is given: used
    /// for the harness's own deliberately failing tests.
    pub only_with: Option<&'static str>,
}

/// Registers a kernel test.
///
/// ```ignore
/// kernel_test!(fn adds() { assert_eq!(1 + 1, 2); });
/// kernel_test!(#[only_with = "fail"] fn fails() { panic!("on purpose"); });
/// ```
#[macro_export]
macro_rules! kernel_test {
    ($(#[only_with = $flag:literal])? fn $name:ident() $body:block) => {
        fn $name() $body
        const _: () = {
            #[used]
            #[unsafe(link_section = ".kho_ktests")]
            static TEST: $crate::ktest::KernelTest = $crate::ktest::KernelTest {
                name: concat!(module_path!(), "::", stringify!($name)),
                run: $name,
                only_with: $crate::kernel_test!(@flag $($flag)?),
            };
        };
    };
    (@flag) => { None };
    (@flag $flag:literal) => { Some($flag) };
}

unsafe extern "C" {
    static __kho_ktests_start: u8;
    static __kho_ktests_end: u8;
}

/// Every registered test, in link order.
pub fn all() -> &'static [KernelTest] {
    let start = (&raw const __kho_ktests_start).cast::<KernelTest>();
    let end = (&raw const __kho_ktests_end).cast::<KernelTest>();
    let n = (end as usize - start as usize) / core::mem::size_of::<KernelTest>();
    // SAFETY: the linker script places only `KernelTest` statics (each of the
    // type's size and alignment, so without padding) between the two symbols,
    // and they are immutable for the kernel's lifetime.
    unsafe { core::slice::from_raw_parts(start, n) }
}

/// Callee-saved state to resume the runner after a failed test.
#[repr(C)]
struct JmpBuf {
    rbx: u64,
    rbp: u64,
    r12: u64,
    r13: u64,
    r14: u64,
    r15: u64,
    rsp: u64,
    rip: u64,
}

struct RecoveryPoint(core::cell::UnsafeCell<JmpBuf>);
// SAFETY: the kernel runs on one CPU with interrupts off; the buffer is
// written by `try_call` and read by `fatal` on that CPU only.
unsafe impl Sync for RecoveryPoint {}

static RECOVERY: RecoveryPoint = RecoveryPoint(core::cell::UnsafeCell::new(JmpBuf {
    rbx: 0,
    rbp: 0,
    r12: 0,
    r13: 0,
    r14: 0,
    r15: 0,
    rsp: 0,
    rip: 0,
}));
/// Set while a test runs and `RECOVERY` is valid.
static ARMED: AtomicBool = AtomicBool::new(false);
/// Set while `fatal` reports, to catch a fault in the reporting itself.
static IN_FATAL: AtomicBool = AtomicBool::new(false);

/// Saves the callee-saved registers in `buf` and calls `f(arg)`. Returns 0
/// when `f` returns, or 1 when [`long_jump`] resumes here.
#[unsafe(naked)]
unsafe extern "C" fn try_call(
    buf: *mut JmpBuf,
    f: extern "C" fn(*const u8),
    arg: *const u8,
) -> u64 {
    core::arch::naked_asm!(
        "mov [rdi + 0], rbx",
        "mov [rdi + 8], rbp",
        "mov [rdi + 16], r12",
        "mov [rdi + 24], r13",
        "mov [rdi + 32], r14",
        "mov [rdi + 40], r15",
        "lea rax, [rsp + 8]",
        "mov [rdi + 48], rax", // the stack pointer after our `ret`
        "mov rax, [rsp]",
        "mov [rdi + 56], rax", // our return address
        "sub rsp, 8",          // realign for the call
        "mov rax, rsi",
        "mov rdi, rdx",
        "call rax",
        "add rsp, 8",
        "xor eax, eax",
        "ret",
    );
}

/// Resumes the `try_call` that filled `buf`, making it return 1.
#[unsafe(naked)]
unsafe extern "C" fn long_jump(buf: *const JmpBuf) -> ! {
    core::arch::naked_asm!(
        "mov rbx, [rdi + 0]",
        "mov rbp, [rdi + 8]",
        "mov r12, [rdi + 16]",
        "mov r13, [rdi + 24]",
        "mov r14, [rdi + 32]",
        "mov r15, [rdi + 40]",
        "mov rsp, [rdi + 48]",
        "mov eax, 1",
        "jmp qword ptr [rdi + 56]",
    );
}

extern "C" fn call_fn(arg: *const u8) {
    // SAFETY: `run_guarded` passes a pointer to a live `fn()`.
    let f = unsafe { *(arg as *const fn()) };
    f();
}

/// Runs `f`; returns false if it panicked or faulted (already reported).
pub fn run_guarded(f: fn()) -> bool {
    ARMED.store(true, Ordering::SeqCst);
    // SAFETY: RECOVERY is only used while ARMED, on this CPU; `call_fn` gets
    // a pointer to `f`, which outlives the call. A long jump back skips the
    // test's frames without running their destructors, which leaks memory
    // but resumes no abandoned state.
    let r = unsafe { try_call(RECOVERY.0.get(), call_fn, (&raw const f).cast()) };
    ARMED.store(false, Ordering::SeqCst);
    r == 0
}

/// What brought the kernel to [`fatal`].
pub enum Fatal<'a> {
    /// A Rust panic.
    Panic(&'a PanicInfo<'a>),
    /// A CPU exception.
    Trap(Trap),
}

impl fmt::Display for Fatal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fatal::Panic(info) => {
                f.write_str("panicked")?;
                if let Some(loc) = info.location() {
                    write!(f, " at {}:{}:{}", loc.file(), loc.line(), loc.column())?;
                }
                write!(f, ": {}", info.message())
            }
            Fatal::Trap(t) => t.fmt(f),
        }
    }
}

/// Writes to the console without its lock, indenting continuation lines so
/// the host runner keeps a multi-line failure reason with its test.
struct Indented;

impl fmt::Write for Indented {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for (i, part) in s.split('\n').enumerate() {
            if i > 0 {
                serial::emergency(format_args!("\n    "));
            }
            serial::emergency(format_args!("{part}"));
        }
        Ok(())
    }
}

/// The end of every panic and CPU exception: inside a guarded test, reports
/// the test as failed and resumes the runner; otherwise reports and exits
/// QEMU with failure.
pub fn fatal(what: Fatal<'_>) -> ! {
    if IN_FATAL.swap(true, Ordering::SeqCst) {
        serial::emergency(format_args!(
            "\nkernel: fault while reporting a fault: {what}\n"
        ));
        exit_qemu(ExitCode::Failure);
    }
    if ARMED.swap(false, Ordering::SeqCst) {
        serial::emergency(format_args!("FAILED\n    "));
        let _ = fmt::write(&mut Indented, format_args!("{what}"));
        serial::emergency(format_args!("\n"));
        // The interrupted code may hold the console lock.
        // SAFETY: single CPU, interrupts off: the holder was abandoned
        // and will never run again.
        unsafe { serial::take_console_back() };
        IN_FATAL.store(false, Ordering::SeqCst);
        // SAFETY: ARMED was set, so RECOVERY holds the state of a
        // `try_call` that is still on the stack below us.
        unsafe { long_jump(RECOVERY.0.get()) }
    }
    serial::emergency(format_args!("\nkernel {what}\n"));
    exit_qemu(ExitCode::Failure)
}

#[cfg(all(target_os = "none", feature = "panic-handler"))]
#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    fatal(Fatal::Panic(info))
}

/// The trap hook to give `kho_x86_64::entry!`: a CPU exception fails the
/// running test, or reports and exits QEMU.
pub fn on_trap(t: &Trap) -> ! {
    fatal(Fatal::Trap(*t))
}

/// Runs every test selected by `harness_flag` and exits QEMU: success if all
/// passed, failure otherwise.
pub fn run(harness_flag: Option<&str>) -> ! {
    let selected = || {
        all()
            .iter()
            .filter(move |t| t.only_with.is_none() || t.only_with == harness_flag)
    };
    let total = selected().count();
    kprintln!("running {total} kernel tests");
    let (mut passed, mut failed) = (0u32, 0u32);
    for t in selected() {
        kprint!("test {} ... ", t.name);
        if run_guarded(t.run) {
            kprintln!("ok");
            passed += 1;
        } else {
            failed += 1;
        }
    }
    kprintln!("{passed} passed, {failed} failed");
    exit_qemu(if failed == 0 && total > 0 {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}
