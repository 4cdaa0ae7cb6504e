//! Every fuzz target's kept inputs (`tests/fuzz-regressions/TARGET/`),
//! replayed on the host on stable by `./x.py test`: each target's file is
//! compiled here as a module (its `fuzz_target!` made a function by the
//! shim) and run on every input kept for it, so a bug a fuzzer once found
//! stays found without nightly or cargo-fuzz.
// The targets' files are written for cargo-fuzz (`#![no_main]`, their own
// lint set); here they are only run.
#![allow(unused_attributes, clippy::all, clippy::pedantic, missing_docs)]

#[path = "../../../fuzz/fuzz_targets/elf_parse.rs"]
mod elf_parse;
#[path = "../../../fuzz/fuzz_targets/fdt_read.rs"]
mod fdt_read;
#[path = "../../../fuzz/fuzz_targets/fdt_roundtrip.rs"]
mod fdt_roundtrip;
#[path = "../../../fuzz/fuzz_targets/handoff_read.rs"]
mod handoff_read;
#[path = "../../../fuzz/fuzz_targets/images_parse.rs"]
mod images_parse;
#[path = "../../../fuzz/fuzz_targets/luo_read.rs"]
mod luo_read;
#[path = "../../../fuzz/fuzz_targets/memfd_read.rs"]
mod memfd_read;
#[path = "../../../fuzz/fuzz_targets/timing_parse.rs"]
mod timing_parse;
#[path = "../../../fuzz/fuzz_targets/tracker_inplace_read.rs"]
mod tracker_inplace_read;
#[path = "../../../fuzz/fuzz_targets/tracker_ops.rs"]
mod tracker_ops;
#[path = "../../../fuzz/fuzz_targets/tracker_read.rs"]
mod tracker_read;
#[path = "../../../fuzz/fuzz_targets/vmalloc_read.rs"]
mod vmalloc_read;
#[path = "../../../fuzz/fuzz_targets/whole_restore.rs"]
mod whole_restore;

/// Each target and its entry point.
const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("elf_parse", elf_parse::run),
    ("fdt_read", fdt_read::run),
    ("fdt_roundtrip", fdt_roundtrip::run),
    ("handoff_read", handoff_read::run),
    ("images_parse", images_parse::run),
    ("luo_read", luo_read::run),
    ("memfd_read", memfd_read::run),
    ("timing_parse", timing_parse::run),
    ("tracker_inplace_read", tracker_inplace_read::run),
    ("tracker_ops", tracker_ops::run),
    ("tracker_read", tracker_read::run),
    ("vmalloc_read", vmalloc_read::run),
    ("whole_restore", whole_restore::run),
];

#[test]
fn every_kept_fuzz_input_is_replayed() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz-regressions");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        let run = TARGETS
            .iter()
            .find(|(t, _)| *t == name)
            .unwrap_or_else(|| panic!("tests/fuzz-regressions/{name}: no such fuzz target"))
            .1;
        for input in std::fs::read_dir(&dir).unwrap() {
            let path = input.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            run(&bytes);
            replayed += 1;
        }
    }
    assert!(replayed >= 10, "only {replayed} inputs replayed");
}

/// Every target runs on an empty input and on a few bytes (they must
/// compile here and never panic on nothing).
#[test]
fn every_target_runs_here() {
    for (_, run) in TARGETS {
        run(&[]);
        run(&[0u8; 64]);
    }
}
