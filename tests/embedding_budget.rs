//! Holds the embedding example to the line budget of issue 18: a handler
//! in at most 60 lines, both kernels' life cycle in at most 80, no `Any`.

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
fn the_handler_fits_in_60_lines() {
    let n = region("handler").len();
    assert!((30..=60).contains(&n), "handler: {n} lines");
}

#[test]
fn both_life_cycles_fit_in_80_lines() {
    let n = region("life cycle").len();
    assert!((30..=80).contains(&n), "life cycle: {n} lines");
}

#[test]
fn the_example_never_names_any_or_downcasts() {
    for bad in ["dyn Any", "core::any", "std::any", "downcast::<", "Box<dyn"] {
        assert!(!SOURCE.contains(bad), "the example uses {bad}");
    }
}
