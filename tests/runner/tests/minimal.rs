//! The minimal kernel (qemu/minimal), which uses kho and kho-x86_64 only as
//! libraries: it preserves a file, kexecs itself, and takes the file back
//! in the same pages with the same bytes. Needs `KHO_KERNEL_MINIMAL`, set
//! by `./x.py test`, and QEMU.

use kho_runner::{Config, EXIT_SUCCESS, Exit, boot};
use std::time::Duration;

/// The value after `key ` in `line`, up to the next space, comma or `;`.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let at = line
        .find(key)
        .unwrap_or_else(|| panic!("no {key:?} in {line:?}"))
        + key.len();
    line[at..].split([' ', ',', ';']).next().unwrap_or_default()
}

#[test]
fn the_minimal_kernel_hands_a_file_to_itself() {
    let k: std::path::PathBuf = std::env::var("KHO_KERNEL_MINIMAL")
        .expect("KHO_KERNEL_MINIMAL is not set: run with `./x.py test`")
        .into();
    let mut cfg = Config::new(k.clone(), "");
    cfg.initrd = Some(k);
    cfg.timeout = Duration::from_secs(180);
    let b = boot(&cfg).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b.exit, Exit::Code(EXIT_SUCCESS), "{}", b.tail());
    let line = |pat: &str| {
        let l: Vec<&String> = b.lines.iter().filter(|l| l.contains(pat)).collect();
        assert_eq!(l.len(), 1, "{pat}: {}", b.tail());
        l[0].clone()
    };
    let before = line("minimal: preserved ");
    let after = line("minimal: restored ");
    // The same bytes (the next kernel also compared each byte with the
    // pattern) in the same first folio: zero copy, across a real kexec.
    assert_eq!(field(&before, "sum "), field(&after, "sum "));
    assert_eq!(
        field(&before, "first folio at "),
        field(&after, "first folio at ")
    );
    assert_eq!(field(&after, "restored "), "3145728");
    assert!(after.contains(" as memfd-v2,"), "{after}");
}
