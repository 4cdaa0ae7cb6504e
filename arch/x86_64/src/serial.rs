//! COM1 serial console (16550 UART at port 0x3f8) and the print macros.

use core::fmt::{self, Write};
use spin::Mutex;
use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;

/// A 16550 UART driven by port I/O.
pub struct Serial {
    base: u16,
}

impl Serial {
    /// A handle on the UART at `base`; call [`init`](Self::init) once.
    pub const fn new(base: u16) -> Self {
        Self { base }
    }

    fn port(&self, off: u16) -> Port<u8> {
        Port::new(self.base + off)
    }

    /// Programs 115200 baud, 8N1, FIFOs on, interrupts off.
    pub fn init(&mut self) {
        // SAFETY: COM1's registers are ours; these writes follow the 16550
        // programming sequence and touch no memory.
        unsafe {
            self.port(1).write(0x00); // no interrupts
            self.port(3).write(0x80); // DLAB on
            self.port(0).write(0x01); // divisor 1 = 115200 baud
            self.port(1).write(0x00);
            self.port(3).write(0x03); // 8N1, DLAB off
            self.port(2).write(0xc7); // FIFO on, cleared, 14-byte threshold
            self.port(4).write(0x03); // DTR | RTS
        }
    }

    fn put(&mut self, b: u8) {
        // SAFETY: reading the line-status register and writing the data
        // register of our UART has no memory effect.
        unsafe {
            let mut spins = 0u32;
            while self.port(5).read() & 0x20 == 0 && spins < 100_000 {
                spins += 1;
                core::hint::spin_loop();
            }
            self.port(0).write(b);
        }
    }
}

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
        Ok(())
    }
}

/// The console, shared by the print macros (private: no code outside
/// them can hold it).
static CONSOLE: Mutex<Serial> = Mutex::new(Serial::new(COM1));

/// Takes the console back from a holder that will never run again (a
/// test harness resuming after a trap that interrupted a print).
///
/// # Safety
/// 1. The holder of the console lock, if any, never runs again (its
///    frames were abandoned by a long jump on this, the only, CPU).
/// 2. Interrupts are off, so nothing else takes the lock meanwhile.
pub unsafe fn take_console_back() {
    if CONSOLE.is_locked() {
        // SAFETY: promises 1 and 2: the lock's holder is gone; the
        // console's state is a port number, always consistent.
        unsafe { CONSOLE.force_unlock() };
    }
}

/// Initializes COM1. Printing before this still works on QEMU, whose UART
/// needs no setup, but real hardware wants it.
pub fn init() {
    CONSOLE.lock().init();
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    // Interrupts are never enabled in this kernel, so the lock cannot be
    // re-entered from an interrupt handler. Fatal paths use `emergency`.
    let _ = CONSOLE.lock().write_fmt(args);
}

/// Writes to the UART without taking the console lock: for panic and
/// exception reports, which may interrupt a holder of the lock. Output may
/// interleave with the interrupted writer's, which is the lesser evil.
pub fn emergency(args: fmt::Arguments<'_>) {
    let _ = Serial::new(COM1).write_fmt(args);
}

/// Prints to the serial console.
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => ($crate::serial::_print(format_args!($($arg)*)));
}

/// Prints a line to the serial console.
#[macro_export]
macro_rules! kprintln {
    () => ($crate::kprint!("\n"));
    ($($arg:tt)*) => ($crate::serial::_print(format_args!("{}\n", format_args!($($arg)*))));
}
