//! The kernel benches under QEMU (`./x.py bench kexec`): the optimized
//! kernel booted in its `kho.bench=` modes through `kho_runner`, its
//! `kho-timing` lines turned into figures here, each against a peer
//! measured in the same run (a cold boot, a memcpy of the image, copying
//! the data out and back).

use crate::{Figure, Target};
use kho_runner::{Accel, Boot, Config, boot, judge_demo};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The key=value fields of one hop's `kho-timing` lines.
type Fields = BTreeMap<String, String>;

/// Where things are: the optimized kernel and the log directory.
pub struct Paths {
    /// The release kernel (`x.py` builds it first).
    pub kernel: PathBuf,
    /// Where serial logs go.
    pub logs: PathBuf,
}

impl Paths {
    /// The workspace's own paths.
    pub fn of_workspace() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        Paths {
            kernel: std::env::var_os("KHO_KERNEL_RELEASE")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target/x86_64-unknown-none/release/kho-kernel")),
            logs: root.join("target/kho"),
        }
    }
}

/// The fields of the `kho-timing hop=HOP` lines: those of the demo's
/// `bench=BENCH` mode, or of a plain boot (`bench` empty).
pub fn timing_fields(lines: &[String], hop: u32, bench: &str) -> Fields {
    let mut prefix = format!("kho-timing hop={hop} ");
    if !bench.is_empty() {
        prefix.push_str(&format!("bench={bench} "));
    }
    let mut out = Fields::new();
    for l in lines {
        if l.starts_with(&prefix) && (!bench.is_empty() || !l.contains(" bench=")) {
            for kv in l.split_whitespace().skip(1) {
                if let Some((k, v)) = kv.split_once('=') {
                    out.insert(k.to_owned(), v.to_owned());
                }
            }
        }
    }
    out
}

/// A field as a number; a field a kernel did not print is a failure of
/// the bench, said by name.
fn num(f: &Fields, key: &str) -> Result<f64, String> {
    f.get(key)
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| format!("no kho-timing field {key} (fields: {f:?})"))
}

/// One boot of the release kernel: its command line, module, memory (MiB),
/// time limit (s), log file and the line its demo verdict needs.
struct Spec<'a> {
    cmdline: String,
    initrd: Option<&'a Path>,
    memory_mib: u32,
    timeout: u64,
    log: String,
    expect: &'a str,
}

/// Boots `s` under `accel`, judged by its demo verdict.
fn run(p: &Paths, s: Spec<'_>, accel: Accel) -> Result<Boot, String> {
    let mut cfg = Config::new(&p.kernel, &s.cmdline);
    cfg.initrd = s.initrd.map(Path::to_path_buf);
    cfg.memory_mib = s.memory_mib;
    cfg.timeout = Duration::from_secs(s.timeout);
    cfg.accel = accel;
    cfg.log = Some(p.logs.join(&s.log));
    let b = boot(&cfg).map_err(|e| e.to_string())?;
    judge_demo(&b, s.expect)?;
    Ok(b)
}

/// Seconds from entry to RAM open of one cold boot under `accel`.
fn cold_boot_seconds(p: &Paths, accel: Accel, tag: &str) -> Option<f64> {
    let spec = Spec {
        cmdline: "kho.hops=0".into(),
        initrd: None,
        memory_mib: 512,
        timeout: 120,
        log: format!("cold-{tag}.log"),
        expect: "live update OK after 0 kexecs",
    };
    let b = run(p, spec, accel).ok()?;
    let f = timing_fields(&b.lines, 0, "");
    Some(num(&f, "cold_open_ticks").ok()? / num(&f, "hz").ok()?)
}

/// KVM where /dev/kvm works and runs the guest faster than TCG; TCG
/// otherwise (nested KVM can be slower than emulation), and why.
pub fn choose_accel(p: &Paths, kvm_present: bool) -> (Accel, String) {
    if !kvm_present {
        return (Accel::Tcg, "/dev/kvm is missing or not accessible".into());
    }
    let kvm = cold_boot_seconds(p, Accel::Kvm, "kvm");
    let tcg = cold_boot_seconds(p, Accel::Tcg, "tcg");
    match (kvm, tcg) {
        (None, _) => (Accel::Tcg, "a KVM boot failed on this machine".into()),
        (Some(k), Some(t)) if k > t => (
            Accel::Tcg,
            format!(
                "/dev/kvm works but runs the guest slower than TCG here (cold boot {:.1} ms under KVM, {:.1} ms under TCG)",
                k * 1e3,
                t * 1e3
            ),
        ),
        _ => (Accel::Kvm, "/dev/kvm works".into()),
    }
}

/// The release kernel in `kho.bench=BENCH` mode, kexecing into itself:
/// the first and the second kernel's fields.
fn bench_boot(
    p: &Paths,
    bench: &str,
    accel: Accel,
    memory_mib: u32,
    timeout: u64,
) -> Result<(Fields, Fields), String> {
    let spec = Spec {
        cmdline: format!("kho.bench={bench}"),
        initrd: Some(&p.kernel),
        memory_mib,
        timeout,
        log: format!("bench-{bench}.log"),
        expect: "kho bench: done",
    };
    let b = run(p, spec, accel).map_err(|e| format!("bench {bench}: {e}"))?;
    Ok((
        timing_fields(&b.lines, 0, bench),
        timing_fields(&b.lines, 1, bench),
    ))
}

/// A figure with no peer (a phase of a blackout).
fn phase(name: String, value: f64, unit: &'static str) -> Figure {
    Figure::new(name, value, unit, "", f64::NAN)
}

/// The blackout of a live update of one 1 GiB memfd, phase by phase,
/// against copying the same data out and back in the same run.
fn live_update(p: &Paths, accel: Accel) -> Result<Vec<Figure>, String> {
    let mut figures = Vec::new();
    println!("\nlive update bench ({accel:?}), one 1 GiB memfd; ticks from the TSC");
    for (bench, label) in [("memfd-4k", "4 KiB folios"), ("memfd-2m", "2 MiB folios")] {
        let (a, b) = bench_boot(p, bench, accel, 3072, 600)?;
        let hz = num(&b, "hz")?;
        let ms = |f: &Fields, k: &str| num(f, k).map(|t| t * 1e3 / hz);
        let freeze = ms(&a, "freeze_ticks")?;
        let serialize = ms(&b, "handoff_ticks")? - freeze;
        // The next kernel's page tables and heap (before its restore) are
        // a cold boot's work too: part of the kexec, not of the handoff.
        let kexec = ms(&b, "prep_ticks")? + ms(&b, "jump_ticks")? + ms(&b, "boot_ticks")?;
        let (reserve, retrieve) = (ms(&b, "reserve_ticks")?, ms(&b, "retrieve_ticks")?);
        let work = freeze + serialize + reserve + retrieve;
        // The copy's first pass also pays for touching a fresh GiB; the
        // warmer of the two passes, twice, flatters us least.
        let copy = 2.0 * ms(&a, "copy_out_ticks")?.min(ms(&a, "copy_back_ticks")?);
        let name = format!("live update 1 GiB memfd, {label}");
        figures.push(
            Figure::new(
                format!("{name}: handoff work (freeze, serialize, reserve, retrieve)"),
                work,
                "ms",
                "copy into one contiguous region and back (warm memcpy, twice)",
                copy,
            )
            .with_target(Target::Ratio(0.05)),
        );
        figures.push(Figure::new(
            format!("{name}: blackout, freeze start to object retrieved"),
            work + kexec,
            "ms",
            "copy baseline plus the same kexec",
            copy + kexec,
        ));
        for (what, v) in [
            ("freeze", freeze),
            ("serialize", serialize),
            ("kexec", kexec),
            ("reserve", reserve),
            ("retrieve", retrieve),
        ] {
            figures.push(phase(format!("{name}: {what}"), v, "ms"));
        }
        println!(
            "  {label} ({} folios, {} physical runs): freeze {freeze:.2} ms, serialize {serialize:.2} ms, kexec {kexec:.2} ms, reserve {reserve:.2} ms, retrieve {retrieve:.2} ms; handoff work {work:.2} ms = {:.2}% of copying the data out and back ({copy:.0} ms; target <= 5%)",
            a.get("folios").map_or("?", String::as_str),
            a.get("extents").map_or("?", String::as_str),
            100.0 * work / copy
        );
    }
    Ok(figures)
}

/// Staging start to the next kernel's entry for our image and a 66 MiB
/// one, against one memcpy of the same bytes in the same kernel (median
/// of three boots each).
fn kexec_images(p: &Paths, accel: Accel) -> Result<Vec<Figure>, String> {
    let mut figures = Vec::new();
    let big = p.logs.join("../bench/large-image");
    if let Some(d) = big.parent() {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    let kernel = std::fs::read(&p.kernel).map_err(|e| format!("{}: {e}", p.kernel.display()))?;
    let (image, _) = kho_runner::large_image(kernel)?;
    std::fs::write(&big, image).map_err(|e| format!("{}: {e}", big.display()))?;
    let extra = format!(
        "kho.extra={:#x}:{:#x}",
        kho_runner::EXTRA_AT,
        kho_runner::EXTRA_LEN
    );
    println!(
        "\nkexec image bench ({accel:?}): staging start to next entry, against one memcpy of the image"
    );
    for (label, image, next) in [
        ("our 400 KiB image", p.kernel.clone(), String::new()),
        ("a 66 MiB image", big.clone(), extra),
    ] {
        let (mut kexec, mut floor, mut prep, mut entry, mut copy) =
            (vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..3 {
            let spec = Spec {
                cmdline: format!(
                    "kho.hops=1 kho.files=0 kho.kexec_floor=1 -- kho.mode=demo kho.hops=0 {next}"
                ),
                initrd: Some(&image),
                memory_mib: 512,
                timeout: 300,
                log: "bench-kexec-image.log".into(),
                expect: "live update OK after 1 kexecs",
            };
            let b = run(p, spec, accel).map_err(|e| format!("kexec image bench ({label}): {e}"))?;
            let (a, n) = (
                timing_fields(&b.lines, 0, ""),
                timing_fields(&b.lines, 1, ""),
            );
            let hz = num(&n, "hz")?;
            let jump = b
                .lines
                .iter()
                .find_map(|l| l.strip_prefix("kho-jump 0 "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .ok_or("no kho-jump 0 line")?;
            let us = |t: f64| t * 1e6 / hz;
            // Staging start (just before kexec::prepare) to the jump stamp,
            // then the jump stamp to the next kernel's entry.
            kexec.push(us(jump - num(&a, "stage_tsc")? + num(&n, "jump_ticks")?));
            prep.push(us(num(&a, "prepare_ticks")?));
            entry.push(us(num(&n, "jump_ticks")?));
            copy.push(us(num(&n, "copy_end_tsc")? - num(&n, "copy_start_tsc")?));
            floor.push(num(&a, "floor_ticks")? * 1e6 / num(&a, "hz")?);
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[1]
        };
        let (k, fl, c) = (med(&mut kexec), med(&mut floor), med(&mut copy));
        let floor_name = "memcpy of the image's bytes once (same kernel)";
        figures.push(
            Figure::new(
                format!("kexec {label}: staging start to next entry"),
                crate::timing::Stat::of(kexec.clone()),
                "us",
                floor_name,
                fl,
            )
            .with_target(Target::Ratio(1.5)),
        );
        figures.push(Figure::new(
            format!("kexec {label}: the trampoline's copies (its own TSC stamps)"),
            crate::timing::Stat::of(copy.clone()),
            "us",
            floor_name,
            fl,
        ));
        println!(
            "  {label}: {k:.0} us (runs {:.0}..{:.0}; prepare {:.0} us, jump stamp to next entry {:.0} us, of which the trampoline's copies {c:.0} us), memcpy floor {fl:.0} us: {:.2}x (target <= 1.5x; under TCG, writing over pages QEMU has code translated from or never touched costs per page, which the warm floor does not pay)",
            kexec[0],
            kexec[2],
            med(&mut prep),
            med(&mut entry),
            k / fl
        );
    }
    Ok(figures)
}

/// Every kernel figure: the kexec scenario with 1 GiB preserved (4 KiB
/// pages, contiguous and none adjacent, and 2 MiB folios) against the same
/// kernel's cold boot, the image kexec against a memcpy, and the live
/// update against copying the data. Returns the figures and the
/// accelerator used, with why.
pub fn run_all(p: &Paths, kvm_present: bool) -> Result<(Vec<Figure>, Accel, String), String> {
    // QEMU is a peer process, not kho: it runs with the host allocator's
    // defaults, not the settings `x.py bench` gives the host benches.
    for var in [
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_",
        "MALLOC_TOP_PAD_",
    ] {
        // SAFETY: the bench is single-threaded here (the host benches
        // spawn no threads), so nothing reads the environment meanwhile.
        unsafe { std::env::remove_var(var) };
    }
    let (accel, why) = choose_accel(p, kvm_present);
    println!("kexec bench: measuring under {accel:?}: {why}");
    let mut figures = Vec::new();
    println!("\nkexec bench ({accel:?}), 1 GiB preserved; ticks from the TSC");
    // The scattered case preserves every other page of 2 GiB: 262144
    // separate ranges, the most a GiB of pages can be split into.
    for (bench, label, memory) in [
        ("4k", "4 KiB pages", 2560),
        ("2m", "2 MiB folios", 2560),
        ("4k-scattered", "4 KiB pages none adjacent", 3072),
    ] {
        let (a, b) = bench_boot(p, bench, accel, memory, 300)?;
        let hz = num(&b, "hz")?;
        let us = |f: &Fields, k: &str| num(f, k).map(|t| t * 1e6 / hz);
        let cold = us(&a, "cold_open_ticks")?;
        let cold_name = "cold boot entry to RAM open (same kernel, same run)";
        for (name, key) in [
            ("next kernel entry to all reserved", "reserve_ticks"),
            ("next kernel entry to RAM open", "open_ticks"),
            (
                "restore again, warm (parse, validate, reserve)",
                "warm_restore_ticks",
            ),
        ] {
            let f = Figure::new(
                format!("kexec {label}: {name}"),
                us(&b, key)?,
                "us",
                cold_name,
                cold,
            );
            figures.push(match key {
                "reserve_ticks" => f.with_target(Target::Value(1000.0)),
                _ => f,
            });
        }
        for (name, v) in [
            ("preserve 1 GiB", us(&a, "preserve_ticks")?),
            ("handoff (tracker and blob)", us(&b, "handoff_ticks")?),
            ("jump preparation", us(&b, "prep_ticks")?),
            ("trampoline to next entry", us(&b, "jump_ticks")?),
        ] {
            figures.push(phase(format!("kexec {label}: {name}"), v, "us"));
        }
        println!(
            "  {label}: entry to all reserved {:.1} us ({} ranges; target <= 1000 us; the same restore warm {:.1} us), entry to RAM open {:.1} us, cold boot entry to RAM open {cold:.1} us; preserve {:.0} us, handoff {:.0} us, prep {:.0} us, trampoline {:.0} us",
            us(&b, "reserve_ticks")?,
            b.get("ranges").map_or("?", String::as_str),
            us(&b, "warm_restore_ticks")?,
            us(&b, "open_ticks")?,
            us(&a, "preserve_ticks")?,
            us(&b, "handoff_ticks")?,
            us(&b, "prep_ticks")?,
            us(&b, "jump_ticks")?
        );
    }
    figures.extend(kexec_images(p, accel)?);
    figures.extend(live_update(p, accel)?);
    Ok((figures, accel, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_fields_keep_to_their_hop_and_mode() {
        let lines: Vec<String> = [
            "kho-timing hop=0 cold_open_ticks=5 hz=10",
            "kho-timing hop=0 bench=4k preserve_ticks=7 hz=10",
            "kho-timing hop=1 bench=4k reserve_ticks=3 hz=10",
            "kho hop 0: not a timing line=1",
        ]
        .map(String::from)
        .into();
        let plain = timing_fields(&lines, 0, "");
        assert_eq!(plain.get("cold_open_ticks").map(String::as_str), Some("5"));
        assert!(
            !plain.contains_key("preserve_ticks"),
            "a bench line is not a plain boot's"
        );
        let b0 = timing_fields(&lines, 0, "4k");
        assert_eq!(num(&b0, "preserve_ticks"), Ok(7.0));
        assert!(
            num(&b0, "reserve_ticks").is_err(),
            "hop 1's field is not hop 0's"
        );
        assert_eq!(
            num(&timing_fields(&lines, 1, "4k"), "reserve_ticks"),
            Ok(3.0)
        );
    }
}
