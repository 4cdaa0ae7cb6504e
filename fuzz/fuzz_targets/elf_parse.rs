//! Fuzz the next-image parser: any bytes give an error or an image whose
//! segments lie inside the file, do not overlap, and hold the PVH entry in
//! an executable segment; planning against a machine never panics and
//! refuses any segment outside RAM or on preserved memory.
#![no_main]

use kho::elf::Image;
use kho::ranges::Range;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(img) = Image::parse(data) else { return };
    let segs = img.segments();
    assert!(!segs.is_empty());
    for (i, s) in segs.iter().enumerate() {
        assert!(s.file_size <= s.mem_size);
        assert_eq!(img.file_bytes(s).len() as u64, s.file_size);
        for t in &segs[i + 1..] {
            assert!(!s.pages().overlaps(&t.pages()));
        }
    }
    assert!(
        segs.iter()
            .any(|s| s.exec && s.dest <= img.pvh_entry && img.pvh_entry < s.dest + s.file_size)
    );
    let ram = [Range::new(0x10_0000, 0x4000_0000)];
    let preserved = [Range::new(0x800_0000, 0x900_0000)];
    if img.plan(&ram, |r| preserved[0].overlaps(&r)).is_ok() {
        for s in segs {
            assert!(ram[0].covers(s.pages()));
            assert!(!preserved[0].overlaps(&s.pages()));
        }
    }
});
