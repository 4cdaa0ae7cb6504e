//! Live updates under QEMU: real kexecs between kernels, each judged by
//! what the next kernel verified (checksums of preserved data), not by "it
//! booted". Needs `KHO_KERNEL` and `KHO_KERNEL_ALT` (the same kernel linked
//! at 16 MiB), set by `./x.py test`, and QEMU.

use kho_runner::{Config, EXIT_SUCCESS, Exit, blobs, boot, judge_demo, judge_live_update};
use std::path::PathBuf;
use std::time::Duration;

fn kernel(var: &str) -> PathBuf {
    std::env::var(var)
        .unwrap_or_else(|_| {
            panic!("{var} is not set: these tests boot kernels; run them with `./x.py test`")
        })
        .into()
}

/// Boots our kernel with `initrd` as the next image.
fn run(initrd: PathBuf, cmdline: &str) -> kho_runner::Boot {
    run_on(
        kernel("KHO_KERNEL"),
        initrd,
        &format!("kho.big=4 {cmdline}"),
    )
}

/// Boots `first` with `initrd` as the next image.
fn run_on(first: PathBuf, initrd: PathBuf, cmdline: &str) -> kho_runner::Boot {
    let mut cfg = Config::new(first, &format!("kho.mode=demo {cmdline}"));
    cfg.initrd = Some(initrd);
    cfg.timeout = Duration::from_secs(240);
    boot(&cfg).unwrap_or_else(|e| panic!("{e}"))
}

fn lines_with<'a>(b: &'a kho_runner::Boot, pat: &str) -> Vec<&'a str> {
    b.lines
        .iter()
        .filter(|l| l.contains(pat))
        .map(|l| l.as_str())
        .collect()
}

/// The hex checksum-verified block count a hop reports.
fn verified(b: &kho_runner::Boot, hop: usize) -> String {
    let l = lines_with(b, &format!("kho hop {hop}: verified "));
    assert!(!l.is_empty(), "hop {hop} verified nothing:\n{}", b.tail());
    l[0].to_owned()
}

#[test]
fn same_image_over_the_running_kernel() {
    let k = kernel("KHO_KERNEL");
    let b = run(k, "kho.hops=1");
    judge_live_update(&b, 2, "kho demo: live update OK after 1 kexecs")
        .unwrap_or_else(|e| panic!("{e}"));
    // The next kernel's segments were copied over the running one.
    let jump = lines_with(&b, "kho hop 0: kexec: ");
    let a = lines_with(&b, "kho hop 0: kernel at [");
    let span = |l: &str, key: &str| {
        l.split(key)
            .nth(1)
            .unwrap()
            .split(')')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(span(jump[0], "next kernel at ["), span(a[0], "kernel at ["));
    assert_eq!(
        verified(&b, 1),
        "kho hop 1: verified 6 blocks (2156 KiB) by checksum, generation 0"
    );
    assert_eq!(lines_with(&b, "preserved data intact").len(), 1);
    // The blob the runner saves is the FDT the first kernel handed over.
    let blob = &blobs(&b.lines)[&0];
    assert_eq!(&blob[..4], &[0xd0, 0x0d, 0xfe, 0xed]);
    let f = kho::fdt::Fdt::new(blob).unwrap();
    assert!(f.root().child("demo").is_some() && f.root().child("tracker").is_some());
}

/// The memfds cross a real kexec in place: a 256 MiB one filled with a
/// pattern, a sparse one, a sealed one and one of 2 MiB folios, each
/// restored from its `memfd-v2` records with the same checksum and the
/// same first folio, then checked again after every other page was
/// poisoned, and carried on to a third kernel.
#[test]
fn memfds_cross_a_kexec_in_place_including_256_mib() {
    let k = kernel("KHO_KERNEL_RELEASE");
    let b = run_on(k.clone(), k, "kho.hops=2");
    judge_live_update(&b, 3, "kho demo: live update OK after 2 kexecs")
        .unwrap_or_else(|e| panic!("{e}"));
    for hop in 1..=2 {
        let rows = lines_with(&b, &format!("kho hop {hop}: "));
        let row = |name: &str| {
            rows.iter()
                .find(|l| l.starts_with(&format!("kho hop {hop}: {name:<8} ")))
                .unwrap_or_else(|| panic!("no row for {name}:\n{}", b.tail()))
                .to_string()
        };
        let big = row("big");
        assert!(
            big.contains("memfd-v2   262144 KiB      128        1      64 B"),
            "{big}"
        );
        assert!(row("sealed").contains("memfd-v2"));
        assert!(row("sparse").contains("65536 KiB        4"));
        assert!(row("huge").contains("8192 KiB        3        1"));
        // Same checksum and same first folio at every hop.
        for name in ["big", "sparse", "sealed", "huge"] {
            let tail = |h: usize| {
                lines_with(&b, &format!("kho hop {h}: {name:<8} "))[0]
                    .split("checksum ")
                    .nth(1)
                    .unwrap()
                    .to_owned()
            };
            assert_eq!(tail(1), tail(hop), "{name}");
        }
    }
    assert_eq!(lines_with(&b, "4 files restored in").len(), 2);
}

#[test]
fn a_chain_of_five_kexecs_carries_and_changes_the_data() {
    let b = run(kernel("KHO_KERNEL"), "kho.hops=5");
    let v = judge_live_update(&b, 6, "kho demo: live update OK after 5 kexecs")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.len(), 6);
    // Each hop sees the data as the previous hop left it: generation i - 1.
    for hop in 1..=5 {
        assert!(
            verified(&b, hop).ends_with(&format!("generation {}", hop - 1)),
            "{}",
            verified(&b, hop)
        );
    }
    assert_eq!(blobs(&b.lines).len(), 5);
}

#[test]
fn into_a_different_build_linked_elsewhere() {
    let b = run(kernel("KHO_KERNEL_ALT"), "kho.hops=2");
    judge_live_update(&b, 3, "kho demo: live update OK after 2 kexecs")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lines_with(&b, "kho hop 1: kernel at [0x1000000, ").len(),
        1,
        "{}",
        b.tail()
    );
    assert_eq!(lines_with(&b, "kho hop 2: kernel at [0x1000000, ").len(), 1);
    assert!(verified(&b, 2).ends_with("generation 1"));
}

#[test]
fn a_corrupted_handoff_means_a_cold_boot_that_says_why() {
    for (what, why) in [
        (
            "blob",
            "handoff refused, booting cold: handoff blob: FDT property at structure offset",
        ),
        (
            "chain",
            "handoff refused, booting cold: handoff tracker: tracker chain: page",
        ),
    ] {
        let b = run(
            kernel("KHO_KERNEL"),
            &format!("kho.hops=1 kho.corrupt={what}"),
        );
        judge_demo(&b, "kho demo: handoff refused, cold boot OK").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lines_with(&b, why).len(), 1, "{what}:\n{}", b.tail());
        assert!(lines_with(&b, "verified").is_empty());
        let v = judge_live_update(&b, 2, "cold boot OK").unwrap_err();
        assert!(v.contains("kernel 1 did not verify"), "{v}");
    }
}

#[test]
fn a_bad_image_is_refused_and_the_kernel_keeps_running() {
    let dir = std::env::temp_dir().join(format!("kho-bad-elf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Not an ELF; then an ELF whose segment lands below 1 MiB, outside RAM
    // as the memory map has it, with no PVH note.
    let junk = dir.join("junk");
    std::fs::write(&junk, vec![0x5a; 4096]).unwrap();
    let b = run(junk, "kho.hops=1");
    judge_demo(
        &b,
        "kho demo: kexec refused, still running, preserved data intact",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lines_with(&b, "kexec refused: kexec: image is not an ELF file").len(),
        1
    );
    let mut elf = std::fs::read(kernel("KHO_KERNEL")).unwrap();
    elf[18] = 3; // e_machine: i386
    let i386 = dir.join("i386");
    std::fs::write(&i386, elf).unwrap();
    let b = run(i386, "kho.hops=1");
    assert_eq!(b.exit, Exit::Code(EXIT_SUCCESS), "{}", b.tail());
    assert_eq!(
        lines_with(
            &b,
            "kexec refused: kexec: image is for machine 3, not x86_64"
        )
        .len(),
        1
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn our_images_parse_with_their_pvh_entry() {
    for (var, base) in [("KHO_KERNEL", 0x20_0000u64), ("KHO_KERNEL_ALT", 0x100_0000)] {
        let bytes = std::fs::read(kernel(var)).unwrap();
        let img = kho::elf::Image::parse(&bytes).unwrap_or_else(|e| panic!("{var}: {e}"));
        // The PVH note names `pvh_start`, which is also the ELF entry and
        // the first byte of text.
        let e_entry = u64::from_le_bytes(bytes[24..32].try_into().unwrap());
        assert_eq!(img.pvh_entry, e_entry, "{var}");
        assert_eq!(img.span().start, base, "{var}");
        assert!(img.segments().iter().any(|s| s.exec && s.dest == base));
        // And it fits below 512 MiB of RAM, clear of the first MiB.
        let ram = [kho::ranges::Range::new(1 << 20, 512 << 20)];
        assert_eq!(img.plan(&ram, &[]), Ok(()));
    }
}
