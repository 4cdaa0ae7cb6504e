//! Live updates under QEMU: real kexecs between kernels, each judged by
//! what the next kernel verified (checksums of preserved data), not by "it
//! booted". Needs `KHO_KERNEL` and `KHO_KERNEL_ALT` (the same kernel linked
//! at 16 MiB), set by `./x.py test`, and QEMU.

use kho_runner::{
    Config, EXIT_SUCCESS, EXTRA_AT, EXTRA_LEN, Exit, blobs, boot, judge_demo, judge_live_update,
};
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
        let r = rows(&b, hop);
        let row = |name: &str| {
            r.iter()
                .find(|x| x.2 == name)
                .unwrap_or_else(|| panic!("no row for {name}: {r:?}"))
                .clone()
        };
        assert_eq!(r.len(), 4);
        let big = row("big");
        assert_eq!((big.0.as_str(), big.1), ("vm-1", 1));
        assert!(
            big.3.starts_with("memfd-v2 262144 KiB 128 72 B"),
            "{}",
            big.3
        );
        assert!(row("sealed").3.starts_with("memfd-v2 "));
        assert!(row("sparse").3.starts_with("memfd-v2 65536 KiB 4 "));
        assert!(row("huge").3.starts_with("memfd-v2 8192 KiB 3 72 B"));
        // Same checksum and same first folio at every hop.
        for name in ["big", "sparse", "sealed", "huge"] {
            let tail = |h: usize| {
                let x = rows(&b, h).into_iter().find(|x| x.2 == name).unwrap();
                x.3.split("checksum ").nth(1).unwrap().to_owned()
            };
            assert_eq!(tail(1), tail(hop), "{name}");
        }
    }
    assert_eq!(lines_with(&b, "4 objects retrieved in").len(), 2);
    assert_eq!(lines_with(&b, "0 lost; finish freed").len(), 2);
}

/// A handoff more scattered than any fixed list: 5000 single pages, none
/// next to another, plus the usual blocks and files, cross two kexecs.
/// Every hop reserves them all (more than the 4096 ranges an earlier,
/// fixed-size reservation list held: that kernel refused such a handoff
/// and booted cold, losing it) and verifies every page by checksum.
#[test]
fn five_thousand_scattered_pages_cross_two_kexecs() {
    let b = run(kernel("KHO_KERNEL"), "kho.hops=2 kho.scatter=5000");
    judge_live_update(&b, 3, "kho demo: live update OK after 2 kexecs")
        .unwrap_or_else(|e| panic!("{e}"));
    for hop in 1..=2 {
        let v = verified(&b, hop);
        assert!(
            v.starts_with(&format!("kho hop {hop}: verified 5006 blocks (")),
            "{v}"
        );
        let l = lines_with(&b, &format!("kho hop {hop}: blackout: "));
        let ranges: usize = l[0]
            .split(" us (")
            .nth(1)
            .and_then(|t| t.split(" ranges").next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no range count in {l:?}"));
        assert!(ranges > 4096, "hop {hop} reserved only {ranges} ranges");
    }
    assert_eq!(lines_with(&b, "preserved data intact").len(), 2);
    assert!(lines_with(&b, "booting cold").is_empty());
}

#[test]
fn a_chain_of_five_kexecs_carries_and_changes_the_data() {
    // With cold-boot scratch set by the option (120 MiB past the image;
    // the default under 512 MiB of RAM is 80): every hop keeps the cold
    // boot's area, whatever its own command line says.
    let b = run(kernel("KHO_KERNEL"), "kho.hops=5 kho.scratch=120");
    let v = judge_live_update(&b, 6, "kho demo: live update OK after 5 kexecs")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.len(), 6);
    let scratch: Vec<&str> = lines_with(&b, ", scratch [")
        .iter()
        .map(|l| l.split(", scratch ").nth(1).unwrap_or(""))
        .collect();
    assert_eq!(scratch.len(), 6, "{}", b.tail());
    assert!(scratch.iter().all(|s| *s == scratch[0]), "{scratch:?}");
    let first = lines_with(&b, "kho hop 0: kernel at [")[0];
    let image_end = u64::from_str_radix(
        first
            .split(", 0x")
            .nth(1)
            .and_then(|x| x.split(')').next())
            .unwrap(),
        16,
    )
    .unwrap();
    let end = (image_end + (120 << 20)).next_multiple_of(2 << 20);
    assert!(
        scratch[0].ends_with(&format!("end: {end:x} }}]")),
        "{} for {end:#x}",
        scratch[0]
    );
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
        // Scratch that parses but cannot hold the next kernel's heap and
        // page tables: refused before anything is allocated in it.
        (
            "scratch",
            "handoff refused, booting cold: handoff scratch areas: scratch too small: ",
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
        assert_eq!(img.plan(&ram, |_| false), Ok(()));
    }
}

/// The rows a hop printed for its objects: `(session, token, file, rest)`.
fn rows(b: &kho_runner::Boot, hop: usize) -> Vec<(String, u64, String, String)> {
    let prefix = format!("kho hop {hop}: vm-");
    b.lines
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix[..prefix.len() - 3]))
        .filter(|l| l.starts_with("vm-"))
        .map(|l| {
            let mut it = l.split_whitespace();
            let s = it.next().unwrap().to_owned();
            let t = it.next().unwrap().parse().unwrap();
            let f = it.next().unwrap().to_owned();
            (s, t, f, it.collect::<Vec<_>>().join(" "))
        })
        .collect()
}

/// A kernel that reads memfd-v2 and -v1 into one that reads only v1: the
/// sealed file exists only as v2, so the old kernel carries it (preflight
/// says so and lets the kexec go) and restores the three others from
/// memfd-v1. With every session opted out of carrying (`kho.drop=1`),
/// preflight refuses the kexec and the first kernel keeps running with
/// everything intact; forced (`kho.force=1`), the sealed file gets a typed
/// error naming both sides and is lost.
#[test]
fn new_to_old_carries_what_old_cannot_read_and_refuses_only_an_opted_out_loss() {
    let old = kernel("KHO_KERNEL_OLD");
    let b = run(old.clone(), "kho.hops=1");
    judge_live_update(&b, 2, "kho demo: live update OK after 1 kexecs")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lines_with(&b, "preflight: vm-1/2 memfd (sealed) -> CARRIED").len(),
        1,
        "{}",
        b.tail()
    );
    let r = rows(&b, 1);
    assert_eq!(r.len(), 4, "{r:?}");
    for (s, t, f, rest) in &r {
        if f == "sealed" {
            assert!(
                rest.starts_with("CARRIED: reads none of [memfd-v2]; first handed over at hop 0, carried 0 time(s) before;"),
                "{s}/{t}: {rest}"
            );
        } else {
            assert!(rest.starts_with("memfd-v1 "), "{f}: {rest}");
        }
    }
    assert_eq!(lines_with(&b, "3 objects retrieved").len(), 1);
    assert_eq!(
        lines_with(&b, "1 carried, 0 lost;").len(),
        1,
        "{}",
        b.tail()
    );

    let b = run(old.clone(), "kho.hops=1 kho.drop=1");
    judge_demo(
        &b,
        "kho demo: kexec refused by preflight, still running, data intact",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lines_with(&b, "preflight: vm-1/2 memfd (sealed) -> NONE").len(),
        1,
        "{}",
        b.tail()
    );
    assert_eq!(
        lines_with(&b, "preflight: vm-2/1 memfd (sparse) -> memfd-v1").len(),
        1
    );
    assert_eq!(
        lines_with(&b, "preflight refused the kexec: luo: the next kernel would lose 1 object(s): vm-1/0x2 (memfd as [memfd-v2])").len(),
        1,
        "{}",
        b.tail()
    );

    let b = run(old, "kho.hops=1 kho.drop=1 kho.force=1");
    judge_live_update(&b, 2, "kho demo: live update OK after 1 kexecs")
        .unwrap_or_else(|e| panic!("{e}"));
    let r = rows(&b, 1);
    assert_eq!(r.len(), 4, "{r:?}");
    for (s, t, f, rest) in &r {
        if f == "sealed" {
            assert_eq!(
                rest,
                "not restored: luo: memfd written as [memfd-v2], this kernel reads [memfd-v1]: no common version",
                "{s}/{t}"
            );
        } else {
            assert!(rest.starts_with("memfd-v1 "), "{f}: {rest}");
            assert!(rest.contains("first folio still at"), "{f}: {rest}");
        }
    }
    assert_eq!(lines_with(&b, "3 objects retrieved").len(), 1);
    assert_eq!(
        lines_with(&b, "0 carried, 1 lost; finish freed").len(),
        1,
        "{}",
        b.tail()
    );
}

/// An old kernel (memfd-v1 only; it makes no sealed file, which v1 cannot
/// carry) into a new one: every file restores from memfd-v1.
#[test]
fn old_to_new_restores_everything_from_the_old_version() {
    let mut cfg = Config::new(
        kernel("KHO_KERNEL_OLD"),
        "kho.mode=demo kho.big=4 kho.hops=1",
    );
    cfg.initrd = Some(kernel("KHO_KERNEL"));
    cfg.timeout = Duration::from_secs(240);
    let b = boot(&cfg).unwrap_or_else(|e| panic!("{e}"));
    judge_live_update(&b, 2, "kho demo: live update OK after 1 kexecs")
        .unwrap_or_else(|e| panic!("{e}"));
    let r = rows(&b, 1);
    let files: Vec<&str> = r.iter().map(|x| x.2.as_str()).collect();
    assert_eq!(files, ["big", "sparse", "huge"]);
    assert!(r.iter().all(|x| x.3.starts_with("memfd-v1 ")), "{r:?}");
}

/// A writer of memfd-v3 only into a reader of memfd-v1 only, every
/// session opted out of carrying: preflight refuses; forced, every memfd
/// gets its typed error, the demo's other preserved data still restores
/// and checks out, and finish frees the files' memory.
#[test]
fn a_newer_version_only_into_an_old_reader_is_refused_then_forced() {
    let first = kernel("KHO_KERNEL_V3");
    let old = kernel("KHO_KERNEL_OLD");
    let boot_v3 = |extra: &str| {
        let mut cfg = Config::new(
            first.clone(),
            &format!("kho.mode=demo kho.big=4 kho.hops=1 kho.drop=1 {extra}"),
        );
        cfg.initrd = Some(old.clone());
        cfg.timeout = Duration::from_secs(240);
        boot(&cfg).unwrap_or_else(|e| panic!("{e}"))
    };
    let b = boot_v3("");
    judge_demo(
        &b,
        "kho demo: kexec refused by preflight, still running, data intact",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lines_with(&b, "-> NONE: the next kernel cannot read it").len(),
        4
    );
    assert_eq!(lines_with(&b, "would lose 4 object(s)").len(), 1);

    let b = boot_v3("kho.force=1");
    judge_live_update(&b, 2, "kho demo: live update OK after 1 kexecs")
        .unwrap_or_else(|e| panic!("{e}"));
    let r = rows(&b, 1);
    assert_eq!(r.len(), 4, "{}", b.tail());
    for (_, _, f, rest) in &r {
        assert_eq!(
            rest,
            "not restored: luo: memfd written as [memfd-v3], this kernel reads [memfd-v1]: no common version",
            "{f}"
        );
    }
    assert_eq!(
        verified(&b, 1),
        "kho hop 1: verified 6 blocks (2156 KiB) by checksum, generation 0"
    );
    assert_eq!(lines_with(&b, "0 objects retrieved").len(), 1);
    assert_eq!(lines_with(&b, "0 carried, 4 lost").len(), 1);
}

/// Our optimized kernel with a 64 MiB segment added
/// (`kho_runner::large_image`), written to a file named after `tag` (tests
/// run in parallel). Returns its path and the `kho-sum64` of the segment.
fn large_image(tag: &str) -> (PathBuf, u64) {
    let elf = std::fs::read(kernel("KHO_KERNEL_RELEASE")).unwrap();
    let (image, sum) = kho_runner::large_image(elf).unwrap();
    let path = std::env::temp_dir().join(format!("kho-large-image-{tag}-{}", std::process::id()));
    std::fs::write(&path, &image).unwrap();
    (path, sum)
}

/// The command line for a kexec into the large image, which keeps its
/// extra segment.
fn into_large(first: &str) -> String {
    format!("kho.hops=1 {first} -- kho.mode=demo kho.hops=1 kho.extra={EXTRA_AT:#x}:{EXTRA_LEN:#x}")
}

/// The segment line the large image printed, and the host's sum.
fn extra_line(b: &kho_runner::Boot, sum: u64) {
    let want = format!(
        "kho hop 1: extra segment [{EXTRA_AT:#x}, {:#x}) kho-sum64 {sum:#018x}",
        EXTRA_AT + EXTRA_LEN as u64
    );
    assert_eq!(lines_with(b, &want).len(), 1, "{want}\n{}", b.tail());
}

/// A 66 MiB image that is not our layout, under 512 MiB of RAM while the
/// demo's 256 MiB file (and three others) stay preserved: its segments
/// land over the running kernel's heap, its whole pages are copied from
/// the module in place, and it arrives bit-exact (its own sum of its
/// extra segment) with every file verified.
#[test]
fn a_large_image_kexecs_under_512_mib_with_256_mib_preserved() {
    let (image, sum) = large_image("large");
    let k = kernel("KHO_KERNEL_RELEASE");
    let b = run_on(k, image.clone(), &into_large(""));
    let _ = std::fs::remove_file(&image);
    judge_live_update(&b, 2, "kho demo: live update OK after 1 kexecs")
        .unwrap_or_else(|e| panic!("{e}"));
    extra_line(&b, sum);
    let kexec = lines_with(&b, "kho hop 0: kexec: ");
    assert!(
        kexec[0].contains("KiB from the image in place")
            && kexec[0].contains("next kernel at [0x200000, 0x5000000)"),
        "{}",
        kexec[0]
    );
    // The destinations cover the running kernel and its heap.
    let at = lines_with(&b, "kho hop 0: kernel at [0x200000, ");
    let heap = at[0].split("heap at [").nth(1).unwrap();
    let hex = |t: &str| u64::from_str_radix(t.trim_start_matches("0x"), 16).unwrap();
    let (lo, hi) = heap.split_once(", ").unwrap();
    let (lo, hi) = (hex(lo), hex(hi.split(')').next().unwrap()));
    assert!(
        lo < EXTRA_AT + EXTRA_LEN as u64 && hi > 0x200000,
        "{}",
        at[0]
    );
    let big = rows(&b, 1).into_iter().find(|x| x.2 == "big").unwrap();
    assert!(big.3.starts_with("memfd-v2 262144 KiB"), "{}", big.3);
    assert_eq!(lines_with(&b, "0 lost; finish freed").len(), 1);
}

/// Every page of the large image staged (none copied in place), in free
/// memory cut into runs of 512 KiB: the trampoline's list reaches them
/// all, and the image arrives bit-exact.
#[test]
fn staging_in_fragmented_memory() {
    let (image, sum) = large_image("fragmented");
    let k = kernel("KHO_KERNEL_RELEASE");
    let b = run_on(
        k,
        image.clone(),
        &into_large("kho.big=64 kho.stage=all kho.fragment=512"),
    );
    let _ = std::fs::remove_file(&image);
    judge_live_update(&b, 2, "kho demo: live update OK after 1 kexecs")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lines_with(&b, "in runs of at most 512 KiB").len(),
        1,
        "{}",
        b.tail()
    );
    let kexec = lines_with(&b, "kho hop 0: kexec: ");
    assert!(
        kexec[0].contains(" 0 KiB from the image in place"),
        "{}",
        kexec[0]
    );
    let staged: u64 = kexec[0]
        .split("kexec: ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(staged >= 65536, "{}", kexec[0]);
    extra_line(&b, sum);
}

/// An image that needs more free memory than there is: refused with the
/// typed error that says how much, and the kernel keeps running with its
/// data intact.
#[test]
fn an_image_larger_than_free_memory_is_refused_and_nothing_is_lost() {
    let (image, _) = large_image("refused");
    let k = kernel("KHO_KERNEL_RELEASE");
    let b = run_on(
        k,
        image.clone(),
        &into_large("kho.big=64 kho.stage=all kho.hog=16"),
    );
    let _ = std::fs::remove_file(&image);
    judge_demo(
        &b,
        "kho demo: kexec refused, still running, preserved data intact",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let refused = lines_with(&b, "kexec refused: kexec: staging the image needs ");
    assert_eq!(refused.len(), 1, "{}", b.tail());
    assert!(refused[0].contains("of free memory outside its destinations"));
    // Every page the hand-over took (the blob's, the trampoline's, what
    // staging got before it ran short) went back to the allocator it came
    // from (the demo stages through its own `StageFrames`, which counts).
    let back = lines_with(&b, "the stager took ");
    let taken: u64 = back
        .first()
        .and_then(|l| l.split("the stager took ").nth(1))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no stager line: {}", b.tail()));
    assert!(taken > 3, "{}", back[0]);
    assert!(
        back[0].ends_with("pages and gave them all back"),
        "{}",
        back[0]
    );
}

/// What `./x.py kexec` does: no kho objects by default (`kho.files=0`), and
/// the runner stops QEMU as soon as the next kernel prints the line it
/// waits for, however long that kernel would run.
#[test]
fn the_runner_stops_once_the_next_kernel_prints_the_expected_line() {
    let mut cfg = kho_runner::Config::new(
        kernel("KHO_KERNEL_RELEASE"),
        "kho.mode=demo kho.hops=1 kho.files=0 -- kho.mode=demo kho.hops=0",
    );
    cfg.initrd = Some(kernel("KHO_KERNEL_ALT"));
    cfg.timeout = Duration::from_secs(120);
    cfg.stop_after_jump = Some("kho hop 1: kernel at [0x1000000, ".to_owned());
    let b = boot(&cfg).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b.exit, Exit::Stopped, "{}", b.tail());
    assert!(lines_with(&b, "preflight").is_empty(), "{}", b.tail());
    assert!(lines_with(&b, "vm-").is_empty());
    assert_eq!(lines_with(&b, "kho-jump 0 ").len(), 1);
    // Stopped there: the next kernel never got to its end.
    assert!(lines_with(&b, "live update OK").is_empty(), "{}", b.tail());
}

/// A handoff blob larger than the first buffer the kernel tries: a file
/// of 2048 physical runs has a footprint of 2048 extents listed inline
/// (32 KiB), which once failed the write ("root node not opened and
/// closed"); the blob is now written again at the size it needs, and the
/// next kernel restores the file from it.
#[test]
fn a_blob_larger_than_the_first_buffer_is_handed_over() {
    let k = kernel("KHO_KERNEL");
    let mut cfg = Config::new(
        k.clone(),
        "kho.mode=demo kho.bench=memfd-4k kho.bench_mib=16 kho.bench_gap=2",
    );
    cfg.initrd = Some(k);
    cfg.timeout = Duration::from_secs(240);
    let b = boot(&cfg).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b.exit, Exit::Code(EXIT_SUCCESS), "{}", b.tail());
    // The blob the first kernel wrote: over 32 KiB.
    let blob = lines_with(&b, "kho hop 0: preserved ");
    let bytes: usize = blob[0]
        .split("handoff blob ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no blob size in {blob:?}"));
    assert!(bytes > 32 << 10, "blob of {bytes} bytes");
    // The next kernel has the file the first one wrote: as many folios
    // and extents (a gap after every second folio: over 2048 runs).
    let written = lines_with(&b, "kho-timing hop=0 bench=memfd-4k");
    let extents: usize = written[0]
        .split("extents=")
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no extent count in {written:?}"));
    assert!(extents >= 2048, "{extents} extents");
    assert!(written[0].contains("folios=4096 "), "{written:?}");
    let want = format!("kho hop 1: verified the 16 MiB memfd (4096 folios, {extents} extents)");
    assert_eq!(lines_with(&b, &want).len(), 1, "{}", b.tail());
}
