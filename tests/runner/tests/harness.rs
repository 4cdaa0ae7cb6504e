//! The harness tested against the real kernel: deliberate failures must fail
//! the run, within the timeout, naming the test. Needs `KHO_KERNEL` (set by
//! `./x.py test`, which builds the kernel first) and QEMU.

use kho_runner::{Config, EXIT_FAILURE, EXIT_SUCCESS, Exit, boot, judge_demo, judge_tests};
use std::time::Duration;

fn kernel() -> String {
    std::env::var("KHO_KERNEL")
        .expect("KHO_KERNEL is not set: these tests boot the kernel; run them with `./x.py test`")
}

fn boot_with(cmdline: &str, timeout: u64) -> kho_runner::Boot {
    let mut cfg = Config::new(kernel(), cmdline);
    cfg.timeout = Duration::from_secs(timeout);
    boot(&cfg).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn kernel_suite_passes() {
    let b = boot_with("kho.mode=test", 60);
    let p = judge_tests(&b).unwrap_or_else(|e| panic!("{e}"));
    assert!(p.passed >= 4, "only {} kernel tests ran", p.passed);
    assert_eq!(b.exit, Exit::Code(EXIT_SUCCESS));
    // The harness's deliberately failing tests are not run without the flag.
    assert!(
        p.report
            .results
            .iter()
            .all(|r| !r.name.contains("harness_"))
    );
}

#[test]
fn failing_test_fails_the_run_and_is_named() {
    let b = boot_with("kho.mode=test kho.harness=fail", 60);
    assert_eq!(b.exit, Exit::Code(EXIT_FAILURE));
    let e = judge_tests(&b).unwrap_err();
    assert!(
        e.contains("kernel test kho_kernel::tests::harness_fails_on_purpose FAILED"),
        "{e}"
    );
    assert!(
        e.contains("deliberate failure") && e.contains("left: 42"),
        "{e}"
    );
    // The run went on after the failure: every other test still reported.
    let rep = kho_runner::parse_tests(&b.lines);
    assert!(rep.results.iter().filter(|r| r.ok).count() >= 4, "{rep:?}");
}

#[test]
fn page_fault_reports_rip_and_cr2_under_the_test() {
    let b = boot_with("kho.mode=test kho.harness=fault", 60);
    let e = judge_tests(&b).unwrap_err();
    assert!(
        e.contains("kernel test kho_kernel::tests::harness_page_faults_on_purpose FAILED"),
        "{e}"
    );
    assert!(
        e.contains("(page fault)") && e.contains("CR2 0x00007000deadb000"),
        "{e}"
    );
    assert!(e.contains("at RIP 0x0000000000"), "{e}");
}

#[test]
fn stack_overflow_hits_the_guard_page() {
    let b = boot_with("kho.mode=test kho.harness=overflow", 60);
    let e = judge_tests(&b).unwrap_err();
    assert!(
        e.contains("harness_overflows_stack_on_purpose FAILED: CPU exception 8 (double fault)"),
        "{e}"
    );
}

#[test]
fn hanging_test_times_out_and_is_named() {
    // Long enough for the tests that run before the hanging one (the memfd
    // and vmalloc tests take ~20 s in a debug build under TCG).
    let b = boot_with("kho.mode=test kho.harness=hang", 60);
    // The limit counts the guest's time (QEMU's CPU time), not the wall
    // clock a busy machine stretches.
    assert_eq!(b.exit, Exit::Timeout(Duration::from_secs(60)));
    assert!(
        b.cpu >= Duration::from_secs(60) && b.cpu < Duration::from_secs(75),
        "stopped after {:?} of CPU time",
        b.cpu
    );
    assert!(
        b.timed_out().contains("used its 60s of CPU time"),
        "{}",
        b.timed_out()
    );
    let e = judge_tests(&b).unwrap_err();
    assert!(
        e.contains("while running kernel test kho_kernel::tests::harness_hangs_on_purpose"),
        "{e}"
    );
}

#[test]
fn demo_boots_and_prints_the_memory_map() {
    // No kexec asked for: the demo ends on the first kernel.
    let b = boot_with("kho.mode=demo kho.hops=0", 60);
    judge_demo(&b, "kho demo: live update OK after 0 kexecs").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        b.lines.iter().any(|l| l.starts_with("memory map (")),
        "{:?}",
        b.lines
    );
    assert!(
        b.lines
            .iter()
            .any(|l| l.contains(") ") && l.ends_with("RAM"))
    );
}

#[test]
fn the_heap_is_the_size_the_command_line_asks() {
    // `kho.heap=MIB` overrides the default (an eighth of RAM, 4 to 64 MiB:
    // about 64 MiB of this 512 MiB guest).
    let size = |cmdline: &str| {
        let b = boot_with(cmdline, 60);
        judge_demo(&b, "kho demo: live update OK after 0 kexecs").unwrap_or_else(|e| panic!("{e}"));
        let line = b
            .lines
            .iter()
            .find_map(|l| l.split_once("heap at [").map(|(_, r)| r.to_owned()))
            .unwrap_or_else(|| panic!("no heap line: {:?}", b.lines));
        let (a, rest) = line.split_once(", ").expect("heap range");
        let e = rest.split(')').next().expect("heap end");
        let n = |h: &str| u64::from_str_radix(h.trim_start_matches("0x"), 16).expect("hex");
        n(e) - n(a)
    };
    let default = size("kho.mode=demo kho.hops=0");
    assert!((60 << 20..=64 << 20).contains(&default), "{default}");
    assert_eq!(size("kho.mode=demo kho.hops=0 kho.heap=6"), 6 << 20);
}

#[test]
fn unknown_mode_is_a_failure() {
    let b = boot_with("kho.mode=bogus", 60);
    assert_eq!(b.exit, Exit::Code(EXIT_FAILURE));
    assert!(b.lines.iter().any(|l| l.contains("unknown kho.mode=bogus")));
}
