//! Holds the embedding example to its line budget (issue 27): a handler
//! that checks everything (two versions, a v1-only index page that it
//! preserves, frees on a refused kexec and claims as metadata, every
//! payload and page checked whole) in at most 80 lines, both kernels' life
//! cycle in at most 60, no `Any`.
//!
//! Lines are counted as rustfmt leaves them, between `// region: NAME` and
//! the next `// end` (markers excluded), doc comments and blank lines
//! included.

/// The example's source.
const SOURCE: &str = include_str!("../examples/embed.rs");

/// Lines between `// region: NAME` and the next `// end`.
fn region(name: &str) -> Vec<&'static str> {
    let start = format!("// region: {name}");
    let mut lines = SOURCE.lines().skip_while(|l| l.trim() != start);
    assert!(lines.next().is_some(), "no region {name}");
    lines.take_while(|l| l.trim() != "// end").collect()
}

#[test]
fn a_handler_that_checks_everything_fits_in_80_lines() {
    let lines = region("handler");
    let n = lines.len();
    assert!((40..=80).contains(&n), "handler: {n} lines");
    // A handler of that kind: what it must do is in the region.
    let text = lines.join("\n");
    for must in [
        "fn unprepare",         // frees the index page on a refused kexec
        "claim_meta(index",     // the index page is metadata of the reader
        "pl.words()",           // every payload checked whole
        "le_words(&f[..24])",   // the index page checked whole
        "CounterError::BadSum", // the bulk data checked
        "claims.release(bulk",  // and let go when it fails
    ] {
        assert!(text.contains(must), "the handler lacks {must}");
    }
}

#[test]
fn both_life_cycles_fit_in_60_lines() {
    let n = region("life cycle").len();
    assert!((30..=60).contains(&n), "life cycle: {n} lines");
}

#[test]
fn the_example_never_names_any_or_downcasts() {
    for bad in ["dyn Any", "core::any", "std::any", "downcast::<", "Box<dyn"] {
        assert!(!SOURCE.contains(bad), "the example uses {bad}");
    }
}

/// The template kernel (issue 28): a whole kernel on `kho` and
/// `kho-x86_64` that preserves, hands over, kexecs and restores, in fewer
/// than 150 lines, with no `unsafe` of its own.
#[test]
fn the_template_kernel_stays_small_and_safe() {
    const MINIMAL: &str = include_str!("../qemu/minimal/src/main.rs");
    let n = MINIMAL.lines().count();
    assert!(n < 150, "qemu/minimal: {n} lines");
    assert!(MINIMAL.contains("#![deny(unsafe_code)]"));
    assert!(!MINIMAL.contains("unsafe {") && !MINIMAL.contains("unsafe fn"));
    for must in ["hand_over", "Outgoing", "restore", "take"] {
        assert!(MINIMAL.contains(must), "qemu/minimal does not {must}");
    }
}
