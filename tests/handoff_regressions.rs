//! Replays the kept inputs of the handoff and ELF fuzz targets: each must
//! give a typed error or a value that satisfies the targets' oracles.

use kho::handoff::Handoff;
use kho::ranges::Range;
use std::path::Path;

fn inputs(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-regressions")
        .join(target);
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| std::fs::read(e.unwrap().path()).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn kept_handoff_inputs_read_or_fail_cleanly() {
    let ram = [Range::new(0x10_0000, 0x4000_0000)];
    let all = inputs("handoff_read");
    assert!(
        !all.is_empty(),
        "tests/fuzz-regressions/handoff_read is empty"
    );
    let mut parsed = 0;
    for bytes in all {
        if let Ok(h) = Handoff::parse(&bytes, &ram) {
            parsed += 1;
            for s in h.subsystems() {
                assert!(s.compatible().all(|c| !c.is_empty()));
            }
        }
    }
    // The golden blob is among them, and it parses.
    assert!(parsed >= 1);
}

#[test]
fn kept_elf_inputs_parse_or_fail_cleanly() {
    let all = inputs("elf_parse");
    assert!(!all.is_empty(), "tests/fuzz-regressions/elf_parse is empty");
    let mut parsed = 0;
    for bytes in all {
        if let Ok(img) = kho::elf::Image::parse(&bytes) {
            assert!(!img.segments().is_empty());
            parsed += 1;
        }
    }
    // The seed image is a valid PVH kernel.
    assert!(parsed >= 1);
}
