//! The time-stamp counter: read it, and measure its rate against the PIT.
//!
//! The TSC keeps counting across a kexec within one VM, so readings taken
//! by one kernel and the next can be subtracted: that is how the blackout of
//! a live update is broken down.

use spin::Once;
use x86_64::instructions::port::Port;

static HZ: Once<u64> = Once::new();

/// The time-stamp counter.
pub fn now() -> u64 {
    // SAFETY: RDTSC has no side effects and is available on every x86_64.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// TSC ticks per second, measured once against 10 ms of PIT channel 2.
pub fn hz() -> u64 {
    *HZ.call_once(|| {
        const PIT_HZ: u64 = 1_193_182;
        const TICKS: u16 = (PIT_HZ / 100) as u16;
        let mut gate = Port::<u8>::new(0x61);
        let mut cmd = Port::<u8>::new(0x43);
        let mut ch2 = Port::<u8>::new(0x42);
        // SAFETY: the PC speaker gate, the PIT command port and channel 2
        // are standard ISA ports that nothing else in this kernel uses;
        // channel 2 drives only the (disabled) speaker.
        let (t0, t1) = unsafe {
            let g = gate.read();
            gate.write((g & !0x02) | 0x01);
            cmd.write(0xb0); // channel 2, low then high byte, mode 0
            ch2.write(TICKS as u8);
            ch2.write((TICKS >> 8) as u8);
            let t0 = now();
            let mut spins = 0u64;
            while gate.read() & 0x20 == 0 && spins < 100_000_000 {
                spins += 1;
            }
            (t0, now())
        };
        (t1 - t0).saturating_mul(100).max(1)
    })
}

/// `ticks` TSC ticks in microseconds.
pub fn micros(ticks: u64) -> u64 {
    ((ticks as u128) * 1_000_000 / hz() as u128) as u64
}
