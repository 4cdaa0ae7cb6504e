//! Leaving QEMU with a status through the isa-debug-exit device.

use x86_64::instructions::port::Port;

/// What the kernel reports to whoever booted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// Everything asked of the kernel succeeded. QEMU exits with 33.
    Success = 0x10,
    /// Something failed. QEMU exits with 35.
    Failure = 0x11,
}

/// Port of the isa-debug-exit device (`-device isa-debug-exit,iobase=0xf4`).
const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Exits QEMU with `code`; halts forever if the device is absent (real
/// hardware), so a caller can rely on it never returning.
pub fn exit_qemu(code: ExitCode) -> ! {
    // SAFETY: writing to the debug-exit port stops the VM; on a machine
    // without the device the write is ignored and we halt below.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(code as u32) };
    kho_x86_64::cpu::halt_forever()
}
