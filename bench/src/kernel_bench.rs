//! The kernel benches under QEMU (`./x.py bench kexec`): the optimized
//! kernel booted in its `kho.bench=` modes through `kho_runner`, its
//! `kho-timing` lines turned into figures here, each against a peer
//! measured in the same run (a cold boot, a memcpy of the image, copying
//! the data out and back).

use crate::{Figure, Target};
use kho_runner::{Accel, Boot, Config, boot, judge_demo};
use kho_timing::{Field, Record};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The values of one hop's timing records ([`kho_timing::Record`]).
type Fields = BTreeMap<Field, u64>;

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

/// The values of the timing records of hop `hop`: those of the demo's
/// `bench=BENCH` mode, or of a plain boot (`bench` empty). A line that
/// starts as a record and does not parse is an error, by its text.
pub fn timing_fields(lines: &[String], hop: u32, bench: &str) -> Result<Fields, String> {
    let want = (!bench.is_empty()).then_some(bench);
    let mut out = Fields::new();
    for l in lines {
        if !l.starts_with(kho_timing::PREFIX) {
            continue;
        }
        let r = Record::parse(l).map_err(|e| format!("{e}: {l}"))?;
        if r.hop == hop && r.bench == want {
            out.extend(r.fields());
        }
    }
    Ok(out)
}

/// A field as a number; a field a kernel did not print is a failure of
/// the bench, said by name.
fn num(f: &Fields, key: Field) -> Result<f64, String> {
    f.get(&key)
        .map(|&v| v as f64)
        .ok_or_else(|| format!("no kho-timing field {} (fields: {f:?})", key.name()))
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
    let f = timing_fields(&b.lines, 0, "").ok()?;
    Some(num(&f, Field::ColdOpenTicks).ok()? / num(&f, Field::Hz).ok()?)
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
        timing_fields(&b.lines, 0, bench)?,
        timing_fields(&b.lines, 1, bench)?,
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
        let hz = num(&b, Field::Hz)?;
        let ms = |f: &Fields, k: Field| num(f, k).map(|t| t * 1e3 / hz);
        let freeze = ms(&a, Field::FreezeTicks)?;
        let serialize = ms(&b, Field::HandoffTicks)? - freeze;
        // The next kernel's page tables and heap (before its restore) are
        // a cold boot's work too: part of the kexec, not of the handoff.
        let kexec =
            ms(&b, Field::PrepTicks)? + ms(&b, Field::JumpTicks)? + ms(&b, Field::BootTicks)?;
        let (reserve, retrieve) = (ms(&b, Field::ReserveTicks)?, ms(&b, Field::RetrieveTicks)?);
        let work = freeze + serialize + reserve + retrieve;
        // The copy's first pass also pays for touching a fresh GiB; the
        // warmer of the two passes, twice, flatters us least.
        let copy = 2.0 * ms(&a, Field::CopyOutTicks)?.min(ms(&a, Field::CopyBackTicks)?);
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
            a.get(&Field::Folios).map_or("?".into(), u64::to_string),
            a.get(&Field::Extents).map_or("?".into(), u64::to_string),
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
                timing_fields(&b.lines, 0, "")?,
                timing_fields(&b.lines, 1, "")?,
            );
            let hz = num(&n, Field::Hz)?;
            let jump = b
                .lines
                .iter()
                .find_map(|l| l.strip_prefix("kho-jump 0 "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .ok_or("no kho-jump 0 line")?;
            let us = |t: f64| t * 1e6 / hz;
            // Staging start (just before kexec::prepare) to the jump stamp,
            // then the jump stamp to the next kernel's entry.
            kexec.push(us(
                jump - num(&a, Field::StageTsc)? + num(&n, Field::JumpTicks)?
            ));
            prep.push(us(num(&a, Field::PrepareTicks)?));
            entry.push(us(num(&n, Field::JumpTicks)?));
            copy.push(us(
                num(&n, Field::CopyEndTsc)? - num(&n, Field::CopyStartTsc)?
            ));
            floor.push(num(&a, Field::FloorTicks)? * 1e6 / num(&a, Field::Hz)?);
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
        let hz = num(&b, Field::Hz)?;
        let us = |f: &Fields, k: Field| num(f, k).map(|t| t * 1e6 / hz);
        let cold = us(&a, Field::ColdOpenTicks)?;
        let cold_name = "cold boot entry to RAM open (same kernel, same run)";
        for (name, key) in [
            ("next kernel entry to all reserved", Field::ReserveTicks),
            ("next kernel entry to RAM open", Field::OpenTicks),
            (
                "restore again, warm (parse, validate, reserve)",
                Field::WarmRestoreTicks,
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
                Field::ReserveTicks => f.with_target(Target::Value(1000.0)),
                _ => f,
            });
        }
        for (name, v) in [
            ("preserve 1 GiB", us(&a, Field::PreserveTicks)?),
            ("handoff (tracker and blob)", us(&b, Field::HandoffTicks)?),
            ("jump preparation", us(&b, Field::PrepTicks)?),
            ("trampoline to next entry", us(&b, Field::JumpTicks)?),
        ] {
            figures.push(phase(format!("kexec {label}: {name}"), v, "us"));
        }
        println!(
            "  {label}: entry to all reserved {:.1} us ({} ranges; target <= 1000 us; the same restore warm {:.1} us), entry to RAM open {:.1} us, cold boot entry to RAM open {cold:.1} us; preserve {:.0} us, handoff {:.0} us, prep {:.0} us, trampoline {:.0} us",
            us(&b, Field::ReserveTicks)?,
            b.get(&Field::Ranges).map_or("?".into(), u64::to_string),
            us(&b, Field::WarmRestoreTicks)?,
            us(&b, Field::OpenTicks)?,
            us(&a, Field::PreserveTicks)?,
            us(&b, Field::HandoffTicks)?,
            us(&b, Field::PrepTicks)?,
            us(&b, Field::JumpTicks)?
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
            Record::new(0)
                .with(Field::ColdOpenTicks, 5)
                .with(Field::Hz, 10)
                .to_string(),
            Record::new(0)
                .bench("4k")
                .with(Field::PreserveTicks, 7)
                .with(Field::Hz, 10)
                .to_string(),
            Record::new(1)
                .bench("4k")
                .with(Field::ReserveTicks, 3)
                .with(Field::Hz, 10)
                .to_string(),
            "kho hop 0: not a timing line=1".into(),
        ]
        .into();
        let plain = timing_fields(&lines, 0, "").unwrap();
        assert_eq!(plain.get(&Field::ColdOpenTicks), Some(&5));
        assert!(
            !plain.contains_key(&Field::PreserveTicks),
            "a bench line is not a plain boot's"
        );
        let b0 = timing_fields(&lines, 0, "4k").unwrap();
        assert_eq!(num(&b0, Field::PreserveTicks), Ok(7.0));
        assert!(
            num(&b0, Field::ReserveTicks).is_err(),
            "hop 1's field is not hop 0's"
        );
        assert_eq!(
            num(
                &timing_fields(&lines, 1, "4k").unwrap(),
                Field::ReserveTicks
            ),
            Ok(3.0)
        );
        // A record the kernel garbled fails the bench, naming the line.
        let bad = vec!["kho-timing hop=0 hz=ten".to_string()];
        assert!(timing_fields(&bad, 0, "").unwrap_err().contains("hz=ten"));
    }
}
