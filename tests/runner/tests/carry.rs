//! Carry-through under QEMU: chains of kexecs between builds that read
//! different versions, picked from a bundle of images (`kho.route`,
//! `kho.rollback`). Objects a middle kernel cannot read arrive at a later
//! kernel that can, with the same checksum in the same pages; nothing is
//! lost on a rollback. Needs `KHO_KERNEL`, `KHO_KERNEL_OLD` and
//! `KHO_KERNEL_V3`, set by `./x.py test`, and QEMU.

use kho_runner::{Boot, Config, blobs, boot, bundle, judge_live_update};
use std::path::PathBuf;
use std::time::Duration;

fn kernel(var: &str) -> PathBuf {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set: run these tests with `./x.py test`"))
        .into()
}

/// Boots `images[0]` with the bundle of `images` as its module, for
/// `hops` kexecs, with `cmdline` added; `tag` names the bundle's file.
fn chain(tag: &str, images: &[PathBuf], hops: usize, cmdline: &str) -> Boot {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/kho");
    std::fs::create_dir_all(&dir).unwrap();
    let b = bundle(images, &dir.join(format!("bundle-{tag}.bin"))).unwrap();
    let mut cfg = Config::new(
        images[0].clone(),
        &format!("kho.mode=demo kho.big=4 kho.hops={hops} {cmdline}"),
    );
    cfg.initrd = Some(b);
    cfg.timeout = Duration::from_secs(120 + 90 * hops as u64);
    let b = boot(&cfg).unwrap_or_else(|e| panic!("{e}"));
    judge_live_update(
        &b,
        hops + 1,
        &format!("kho demo: live update OK after {hops} kexecs"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    b
}

fn lines_with<'a>(b: &'a Boot, pat: &str) -> Vec<&'a str> {
    b.lines
        .iter()
        .filter(|l| l.contains(pat))
        .map(String::as_str)
        .collect()
}

/// The file rows a hop printed: `(session token, file, the rest)`.
fn rows(b: &Boot, hop: usize) -> Vec<(String, String, String)> {
    let prefix = format!("kho hop {hop}: vm-");
    b.lines
        .iter()
        .filter(|l| l.starts_with(&prefix))
        // Rows only (`vm-1  2 sealed ...`), not `vm-1/2 (sealed) ...`.
        .filter(|l| {
            !l[prefix.len()..].contains('/')
                || l.split_whitespace()
                    .nth(4)
                    .is_some_and(|t| t.parse::<u64>().is_ok())
        })
        .map(|l| {
            let l = &l[prefix.len() - 3..];
            let mut it = l.split_whitespace();
            let st = format!("{} {}", it.next().unwrap(), it.next().unwrap());
            let f = it.next().unwrap().to_owned();
            (st, f, it.collect::<Vec<_>>().join(" "))
        })
        .collect()
}

/// `(checksum, first folio)` of each file a hop restored, by file name.
fn restored(b: &Boot, hop: usize) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = rows(b, hop)
        .into_iter()
        .filter(|(_, _, rest)| rest.contains("checksum"))
        .map(|(_, f, rest)| {
            let sum = rest.split("checksum ").nth(1).unwrap().to_owned();
            (f, sum)
        })
        .collect();
    v.sort();
    v
}

/// v3 writer, then an `old` kernel (reads memfd-v1 only), then a v3
/// reader: the old kernel restores the demo's blocks as usual and carries
/// all four files, which the third kernel restores with the checksums and
/// first folios the first kernel wrote (each row checks both against the
/// writer's record). The old kernel poisons all memory it did not keep
/// before it hands on.
#[test]
fn v3_then_old_then_v3_carries_every_file_the_middle_kernel_cannot_read() {
    let v3 = kernel("KHO_KERNEL_V3");
    let old = kernel("KHO_KERNEL_OLD");
    let b = chain("v3-old-v3", &[v3, old], 2, "kho.route=1,0");
    let middle = rows(&b, 1);
    assert_eq!(middle.len(), 4, "{}", b.tail());
    for (st, f, rest) in &middle {
        assert!(
            rest.starts_with("CARRIED: reads none of [memfd-v3]; first handed over at hop 0, carried 0 time(s) before;"),
            "{st} {f}: {rest}"
        );
    }
    // Checked before and after the poisoning.
    assert_eq!(lines_with(&b, "kho hop 1: verified 6 blocks").len(), 2);
    assert_eq!(lines_with(&b, "0 objects retrieved").len(), 1);
    assert_eq!(lines_with(&b, "4 carried, 0 lost").len(), 1);
    assert_eq!(lines_with(&b, "handed on unread").len(), 4);
    assert!(!lines_with(&b, "kho hop 1: reused").is_empty(), "poisoned");
    // Hop 2 reads them, same sums (and the rows check first folios).
    let last = rows(&b, 2);
    assert_eq!(last.len(), 4, "{}", b.tail());
    assert!(
        last.iter().all(|(_, _, r)| r.starts_with("memfd-v3 ")),
        "{last:?}"
    );
    let first_sums = lines_with(&b, "kho hop 0: preflight:").len();
    assert_eq!(first_sums, 5, "four files and the pool");
    assert_eq!(lines_with(&b, "4 objects retrieved").len(), 1);
}

/// A rollback: new to old (`kho.route=1`) and back to the image the
/// previous kernel ran (`kho.rollback=1`), through the demo's four files:
/// the old kernel reads three from memfd-v1 and carries the sealed one
/// (memfd-v2 only); the new kernel at the end has all four, every checksum
/// and first folio as written.
#[test]
fn a_rollback_new_old_new_loses_nothing() {
    let new = kernel("KHO_KERNEL");
    let old = kernel("KHO_KERNEL_OLD");
    let b = chain("rollback", &[new, old], 2, "kho.route=1 kho.rollback=1");
    let middle = rows(&b, 1);
    assert_eq!(middle.len(), 4, "{}", b.tail());
    for (_, f, rest) in &middle {
        let carried = rest.starts_with("CARRIED: reads none of [memfd-v2];");
        assert_eq!(f == "sealed", carried, "{f}: {rest}");
    }
    let last = restored(&b, 2);
    assert_eq!(last.len(), 4, "{}", b.tail());
    // The same bytes at hop 2 as at hop 1 for the three the old kernel
    // read and handed on; the sealed one is checked against its writer.
    let mid = restored(&b, 1);
    for (f, sum) in &mid {
        assert!(last.contains(&(f.clone(), sum.clone())), "{f} changed");
    }
    assert_eq!(lines_with(&b, "0 lost;").len(), 2);
}

/// A file carried again and again: v3, then three old kernels, then v3.
/// The blob each old kernel writes counts one more carry, as
/// `kho-runner inspect` shows.
#[test]
fn an_object_carried_across_three_hops_counts_each_carry() {
    let v3 = kernel("KHO_KERNEL_V3");
    let old = kernel("KHO_KERNEL_OLD");
    let b = chain("thrice", &[v3, old], 4, "kho.route=1,1,1,0");
    for hop in 1..=3 {
        let before = hop - 1;
        assert_eq!(
            lines_with(
                &b,
                &format!("kho hop {hop}: vm-2         1 sparse   CARRIED: reads none of [memfd-v3]; first handed over at hop 0, carried {before} time(s) before;")
            )
            .len(),
            1,
            "hop {hop}:\n{}",
            b.tail()
        );
    }
    let saved = blobs(&b.lines);
    let out = kho_runner::inspect::inspect(&saved[&3]);
    assert!(
        out.contains("luo vm-2/1 memfd: first handed over at hop 0, carried 3 time(s) since;"),
        "{out}"
    );
    assert_eq!(rows(&b, 4).len(), 4);
    assert_eq!(
        lines_with(&b, "kho hop 4: ")
            .iter()
            .filter(|l| l.contains("memfd-v3 "))
            .count(),
        4
    );
}

/// A footprint corrupted in the blob (object 2 of the first session made
/// to overlap object 1): the carrying kernel drops that object alone, with
/// a typed error naming it, and carries the other three to the last
/// kernel, which restores them.
#[test]
fn a_corrupted_footprint_drops_only_that_object() {
    let v3 = kernel("KHO_KERNEL_V3");
    let old = kernel("KHO_KERNEL_OLD");
    let b = chain(
        "footprint",
        &[v3, old],
        2,
        "kho.route=1,0 kho.corrupt=footprint",
    );
    assert_eq!(lines_with(&b, "corrupted object 2's footprint").len(), 1);
    let bad = lines_with(&b, "kho hop 1: vm-1         2 ");
    assert_eq!(bad.len(), 1, "{}", b.tail());
    assert!(
        bad[0].contains(
            "not restored: luo: vm-1/0x2 (memfd) cannot be carried: its footprint is refused:"
        ),
        "{}",
        bad[0]
    );
    assert_eq!(lines_with(&b, "3 carried, 1 lost").len(), 1, "{}", b.tail());
    assert_eq!(lines_with(&b, "3 objects retrieved").len(), 1);
}
