//! Fuzz the kernel timing record parser (`kho-timing`): any text gives a
//! typed error or a record that prints back to a line that parses to the
//! same record; never a panic.
#![no_main]

use kho_timing::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = core::str::from_utf8(data) else {
        return;
    };
    let Ok(r) = Record::parse(line) else { return };
    let printed = r.to_string();
    assert_eq!(Record::parse(&printed), Ok(r), "{printed}");
});
