//! Fuzz the handoff blob reader: any bytes as a blob give an error or a
//! handoff whose scratch areas lie in RAM and whose subsystems all have a
//! compatible list and a well-formed data range. A restore over fake
//! memory (where the tracker root points nowhere valid) must fail with
//! nothing left reserved, or report ranges that never overlap.
#![no_main]

use kho::handoff::{Handoff, restore};
use kho::platform::host::HostMem;
use kho::ranges::Range;
use kho::reserve::ReserveLog;
use libfuzzer_sys::fuzz_target;

const RAM: [Range; 1] = [Range::new(0x10_0000, 0x4000_0000)];

fuzz_target!(|data: &[u8]| {
    // As given, and resealed (so that input reaches the checks behind the
    // blob's checksum).
    let mut sealed = data.to_vec();
    let _ = kho::handoff::seal(&mut sealed);
    check(data);
    check(&sealed);
});

fn check(data: &[u8]) {
    let Ok(h) = Handoff::parse(data, &RAM) else {
        return;
    };
    for a in h.scratch.areas() {
        assert!(RAM[0].covers(*a));
    }
    for s in h.subsystems() {
        assert!(s.compatible().all(|c| !c.is_empty()));
        if let Some(d) = s.data {
            assert!(d.start < d.end);
        }
    }
    let mem = HostMem::new(&RAM, Range::new(0, 0));
    let mut log = ReserveLog::new();
    let blob = Range::new(0x3000_0000, 0x3000_0000 + data.len() as u64);
    match restore(&mem, &h, blob, &RAM, &mut log) {
        Err(_) => assert!(log.ranges.is_empty()),
        Ok(_) => {
            for (i, a) in log.ranges.iter().enumerate() {
                for b in &log.ranges[i + 1..] {
                    assert!(!a.0.overlaps(&b.0));
                }
            }
        }
    }
}
