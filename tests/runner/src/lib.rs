//! Boot a kernel under QEMU, capture its serial output, and judge the run.
//!
//! A run fails when QEMU exits with anything but the kernel's success code
//! (33), including 0 (a triple fault under `-no-reboot`), when it outlives
//! its timeout (the hang is attributed to the test that was running), or
//! when the kernel's closing line is missing or disagrees with its per-test
//! lines. Failures carry the last lines of serial output.

pub mod inspect;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Exit status QEMU reports when the kernel writes `Success` to isa-debug-exit.
pub const EXIT_SUCCESS: i32 = 33;
/// Exit status QEMU reports when the kernel writes `Failure` to isa-debug-exit.
pub const EXIT_FAILURE: i32 = 35;
/// Serial lines shown with a failure.
pub const TAIL_LINES: usize = 25;

/// How the guest executes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation: slower, deterministic, always there. Tests use it.
    Tcg,
    /// Hardware virtualization through /dev/kvm.
    Kvm,
}

/// One QEMU boot to make.
#[derive(Clone, Debug)]
pub struct Config {
    /// The kernel ELF (PVH).
    pub kernel: PathBuf,
    /// Kernel command line.
    pub cmdline: String,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// The guest's time limit, counted as the CPU time QEMU uses (under
    /// TCG, the guest's progress): a busy machine stretches the wall
    /// clock, not this. A guest that burns no CPU (halted) is still
    /// stopped after [`WALL_FACTOR`] times this in wall-clock time.
    pub timeout: Duration,
    /// Accelerator.
    pub accel: Accel,
    /// A module (`-initrd`) handed to the kernel.
    pub initrd: Option<PathBuf>,
    /// Where to write the serial log.
    pub log: Option<PathBuf>,
    /// Copy serial lines to our stdout as they arrive.
    pub echo: bool,
    /// Extra QEMU arguments.
    pub extra: Vec<String>,
    /// End the boot early, as [`Exit::Stopped`], once our kernel has
    /// jumped (its `kho-jump` line) and the next kernel printed a line
    /// containing this text (empty: any line at all). For kexecs into
    /// images that never exit QEMU, such as a Linux kernel.
    pub stop_after_jump: Option<String>,
}

impl Config {
    /// A TCG boot of `kernel` with `cmdline`, 512 MiB and a 60 s timeout.
    pub fn new(kernel: impl Into<PathBuf>, cmdline: &str) -> Self {
        Self {
            kernel: kernel.into(),
            cmdline: cmdline.to_owned(),
            memory_mib: 512,
            timeout: Duration::from_secs(60),
            accel: Accel::Tcg,
            initrd: None,
            log: None,
            echo: false,
            extra: Vec::new(),
            stop_after_jump: None,
        }
    }

    /// The QEMU command for this boot (serial on stdout).
    pub fn command(&self) -> Command {
        let mut c = Command::new(qemu_binary());
        c.arg("-kernel").arg(&self.kernel);
        c.args(["-append", &self.cmdline]);
        c.args(["-m", &format!("{}M", self.memory_mib)]);
        c.args(["-serial", "stdio", "-display", "none", "-monitor", "none"]);
        c.args([
            "-no-reboot",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
        ]);
        match self.accel {
            Accel::Tcg => c.args(["-accel", "tcg", "-cpu", "max"]),
            // Without arch-capabilities: nested KVM hosts refuse to set that
            // MSR (QEMU then stops with "failed to set MSR 0x10a").
            Accel::Kvm => c.args(["-accel", "kvm", "-cpu", "host,-arch-capabilities"]),
        };
        if let Some(i) = &self.initrd {
            c.arg("-initrd").arg(i);
        }
        c.args(&self.extra);
        c
    }
}

/// How many times [`Config::timeout`] a boot may take in wall-clock time
/// (for a guest that burns no CPU), however busy the machine.
pub const WALL_FACTOR: u32 = 10;

/// CPU time used so far by process `pid`, all its threads (Linux: their
/// `schedstat`); `None` where no thread's can be read (a host without
/// scheduler statistics: the caller then counts the wall clock).
fn cpu_time(pid: u32) -> Option<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut ns = None;
    for t in tasks.flatten() {
        let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        if let Some(n) = s
            .split_whitespace()
            .next()
            .and_then(|x| x.parse::<u64>().ok())
        {
            ns = Some(ns.unwrap_or(0) + n);
        }
    }
    ns.map(Duration::from_nanos)
}

/// The QEMU binary: `$KHO_QEMU` or `qemu-system-x86_64`.
pub fn qemu_binary() -> String {
    std::env::var("KHO_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".to_owned())
}

/// How a boot ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// QEMU exited with this status.
    Code(i32),
    /// QEMU was killed by a signal.
    Signal,
    /// QEMU used up its time limit ([`Config::timeout`], in CPU time; or
    /// [`WALL_FACTOR`] times it in wall-clock time) and was killed.
    Timeout(Duration),
    /// The runner stopped QEMU at the line [`Config::stop_after_jump`]
    /// waited for.
    Stopped,
}

/// What a boot printed and how it ended.
#[derive(Clone, Debug)]
pub struct Boot {
    /// Serial output, one entry per line, without line endings.
    pub lines: Vec<String>,
    /// How QEMU ended.
    pub exit: Exit,
    /// Wall-clock time of the boot.
    pub elapsed: Duration,
    /// CPU time QEMU used (what [`Config::timeout`] limits; the wall
    /// clock where the host cannot say).
    pub cpu: Duration,
}

impl Boot {
    /// Why a boot that timed out was stopped, in both clocks: the guest's
    /// (QEMU's CPU time, which the limit counts) and the wall clock
    /// (which a busy machine stretches).
    pub fn timed_out(&self) -> String {
        match self.exit {
            Exit::Timeout(t) if self.cpu >= t => format!(
                "timed out: the guest used its {t:.0?} of CPU time ({:.0?} of wall-clock time)",
                self.elapsed
            ),
            Exit::Timeout(t) => format!(
                "timed out: {:.0?} of wall-clock time ({WALL_FACTOR} x its limit of {t:.0?}) with only {:.1?} of CPU time used: the guest stalled (halted?), or the machine is starved",
                self.elapsed, self.cpu
            ),
            _ => String::new(),
        }
    }

    /// The last [`TAIL_LINES`] serial lines, indented, for failure messages.
    pub fn tail(&self) -> String {
        let start = self.lines.len().saturating_sub(TAIL_LINES);
        let mut s = String::new();
        for l in &self.lines[start..] {
            let _ = writeln!(s, "    | {l}");
        }
        s
    }
}

/// Errors starting QEMU.
#[derive(Debug)]
pub enum RunnerError {
    /// QEMU (or the kernel) could not be started.
    Spawn(String),
    /// The log file could not be written.
    Log(std::io::Error),
}

impl std::fmt::Display for RunnerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunnerError::Spawn(m) => f.write_str(m),
            RunnerError::Log(e) => write!(f, "writing the serial log: {e}"),
        }
    }
}

impl std::error::Error for RunnerError {}

/// Boots `cfg` and waits for QEMU to exit or the timeout to pass.
pub fn boot(cfg: &Config) -> Result<Boot, RunnerError> {
    if !cfg.kernel.is_file() {
        return Err(RunnerError::Spawn(format!(
            "kernel image {} not found: build it with `./x.py build`",
            cfg.kernel.display()
        )));
    }
    let mut child = cfg
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            RunnerError::Spawn(format!(
                "cannot run {}: {e}; install it with `./x.py setup` (Debian package qemu-system-x86)",
                qemu_binary()
            ))
        })?;
    let start = Instant::now();
    let pid = child.id();
    // The guest's time: QEMU's CPU time, or the wall clock if the host
    // cannot say.
    let used = || cpu_time(pid).unwrap_or_else(|| start.elapsed());
    let mut cpu = Duration::ZERO;
    let (tx, rx) = mpsc::channel::<String>();
    let out = child.stdout.take().expect("stdout is piped");
    let err = child.stderr.take().expect("stderr is piped");
    let tx2 = tx.clone();
    let readers = [
        std::thread::spawn(move || forward(out, &tx, "")),
        std::thread::spawn(move || forward(err, &tx2, "qemu: ")),
    ];
    let mut log = match &cfg.log {
        Some(p) => {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir).map_err(RunnerError::Log)?;
            }
            Some(std::fs::File::create(p).map_err(RunnerError::Log)?)
        }
        None => None,
    };
    let mut lines = Vec::new();
    let mut record = |line: String, lines: &mut Vec<String>| -> Result<(), RunnerError> {
        // Hex dumps of handoff blobs go to the log and the blob files, not
        // the terminal (the runner says where each blob was saved); so do
        // the machine-readable timing lines the benches parse.
        let machine = ["kho-blob ", "kho-timing ", "kho-jump "];
        if cfg.echo && !machine.iter().any(|m| line.starts_with(m)) {
            println!("{line}");
        }
        if let Some(f) = log.as_mut() {
            writeln!(f, "{line}").map_err(RunnerError::Log)?;
        }
        lines.push(line);
        Ok(())
    };
    let mut jumped = false;
    let exit = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                let waited = match &cfg.stop_after_jump {
                    Some(text) if jumped => {
                        !line.starts_with("qemu: ") && line.contains(text.as_str())
                    }
                    _ => false,
                };
                jumped |= line.starts_with("kho-jump ");
                record(line, &mut lines)?;
                if waited {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Exit::Stopped;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if let Ok(Some(status)) = child.try_wait() {
            break match status.code() {
                Some(c) => Exit::Code(c),
                None => Exit::Signal,
            };
        }
        cpu = used().max(cpu);
        if cpu >= cfg.timeout || start.elapsed() >= cfg.timeout.saturating_mul(WALL_FACTOR) {
            let _ = child.kill();
            let _ = child.wait();
            break Exit::Timeout(cfg.timeout);
        }
    };
    for r in readers {
        let _ = r.join();
    }
    while let Ok(line) = rx.try_recv() {
        record(line, &mut lines)?;
    }
    Ok(Boot {
        lines,
        exit,
        elapsed: start.elapsed(),
        cpu,
    })
}

fn forward(r: impl std::io::Read, tx: &mpsc::Sender<String>, prefix: &str) {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let s = String::from_utf8_lossy(&buf);
                let line = s.trim_end_matches(['\n', '\r']);
                if tx.send(format!("{prefix}{line}")).is_err() {
                    return;
                }
            }
        }
    }
}

/// Outcome of one kernel test, as printed by the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestResult {
    /// The test's full name.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// For a failure, the indented reason lines that followed.
    pub reason: String,
}

/// What the kernel's test output says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestReport {
    /// Every test with a result, in order.
    pub results: Vec<TestResult>,
    /// A test that started and has no result (the run stopped inside it).
    pub unfinished: Option<String>,
    /// The closing `N passed, N failed` line, if printed.
    pub closing: Option<(u32, u32)>,
}

/// Parses `N passed, N failed` (a plain closing line).
pub fn parse_closing(line: &str) -> Option<(u32, u32)> {
    let (p, f) = line.trim().split_once(", ")?;
    let p = p.strip_suffix(" passed")?.parse().ok()?;
    let f = f.strip_suffix(" failed")?.parse().ok()?;
    Some((p, f))
}

/// Reads `test NAME ... ok|FAILED` lines, failure reasons and the closing line.
pub fn parse_tests(lines: &[String]) -> TestReport {
    let mut rep = TestReport::default();
    let mut in_reason = false;
    for line in lines {
        if let Some(rest) = line.strip_prefix("test ") {
            in_reason = false;
            let Some((name, tail)) = rest.split_once(" ... ") else {
                continue;
            };
            let tail = tail.trim_end();
            if tail.ends_with("ok") {
                rep.results.push(TestResult {
                    name: name.to_owned(),
                    ok: true,
                    reason: String::new(),
                });
                rep.unfinished = None;
            } else if tail.ends_with("FAILED") {
                rep.results.push(TestResult {
                    name: name.to_owned(),
                    ok: false,
                    reason: String::new(),
                });
                rep.unfinished = None;
                in_reason = true;
            } else {
                rep.unfinished = Some(name.to_owned());
            }
        } else if line.starts_with("    ") && in_reason {
            if let Some(last) = rep.results.last_mut() {
                if !last.reason.is_empty() {
                    last.reason.push('\n');
                }
                last.reason.push_str(line.trim());
            }
        } else if let Some(c) = parse_closing(line) {
            in_reason = false;
            rep.closing = Some(c);
        } else if !line.trim().is_empty() {
            // Output of a test that has started keeps it "unfinished";
            // a bare `test NAME ... ` line is followed by its result.
            in_reason = false;
        }
    }
    if let Some(name) = &rep.unfinished
        && rep.results.iter().any(|r| &r.name == name)
    {
        rep.unfinished = None;
    }
    rep
}

/// A successful test run: how many kernel tests passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passed {
    /// Tests that passed.
    pub passed: u32,
    /// The per-test results.
    pub report: TestReport,
}

/// Judges a `kho.mode=test` boot. `Err` explains the failure, naming the
/// tests that failed or the test that was running, with the serial tail.
pub fn judge_tests(boot: &Boot) -> Result<Passed, String> {
    let rep = parse_tests(&boot.lines);
    let failed: Vec<&TestResult> = rep.results.iter().filter(|r| !r.ok).collect();
    let mut why = String::new();
    for f in &failed {
        let _ = writeln!(
            why,
            "kernel test {} FAILED: {}",
            f.name,
            f.reason.replace('\n', "; ")
        );
    }
    let problem = match &boot.exit {
        Exit::Timeout(_) => Some(match &rep.unfinished {
            Some(name) => format!("{} while running kernel test {name}", boot.timed_out()),
            None => format!("{} (no test was running)", boot.timed_out()),
        }),
        Exit::Signal => Some("QEMU was killed by a signal".to_owned()),
        Exit::Stopped => Some("stopped by the runner".to_owned()),
        Exit::Code(0) => Some(
            "QEMU exited with status 0: the guest reset or triple-faulted (-no-reboot)".to_owned(),
        ),
        Exit::Code(EXIT_SUCCESS) | Exit::Code(EXIT_FAILURE) => None,
        Exit::Code(c) => Some(format!("QEMU exited with status {c} (QEMU error?)")),
    };
    let mut problems = Vec::new();
    if let Some(p) = problem {
        problems.push(p);
    }
    if let Some(name) = &rep.unfinished
        && !matches!(boot.exit, Exit::Timeout(_))
    {
        problems.push(format!("the run stopped inside kernel test {name}"));
    }
    let passed = rep.results.iter().filter(|r| r.ok).count() as u32;
    match rep.closing {
        None => problems.push("no closing `N passed, N failed` line".to_owned()),
        Some((p, f)) if (p, f) != (passed, failed.len() as u32) => problems.push(format!(
            "closing line says {p} passed, {f} failed but {passed} passed, {} failed were reported",
            failed.len()
        )),
        Some(_) => {}
    }
    if rep.results.is_empty() {
        problems.push("no kernel test ran".to_owned());
    }
    if boot.exit == Exit::Code(EXIT_FAILURE) && failed.is_empty() && problems.is_empty() {
        problems.push("the kernel exited with failure".to_owned());
    }
    if boot.exit == Exit::Code(EXIT_SUCCESS) && !failed.is_empty() {
        problems.push("the kernel exited with success despite failed tests".to_owned());
    }
    if failed.is_empty() && problems.is_empty() {
        return Ok(Passed {
            passed,
            report: rep,
        });
    }
    for p in problems {
        let _ = writeln!(why, "{p}");
    }
    let _ = write!(why, "last serial lines:\n{}", boot.tail());
    Err(why)
}

/// Judges a demo boot: success needs exit 33 and `success_line` printed.
pub fn judge_demo(boot: &Boot, success_line: &str) -> Result<(), String> {
    let seen = boot.lines.iter().any(|l| l.contains(success_line));
    let problem = match (&boot.exit, seen) {
        (Exit::Code(EXIT_SUCCESS), true) => return Ok(()),
        (Exit::Code(EXIT_SUCCESS), false) => {
            format!("exited with success but never printed \"{success_line}\"")
        }
        (Exit::Code(EXIT_FAILURE), _) => "the kernel reported a failure".to_owned(),
        (Exit::Code(0), _) => {
            "QEMU exited with status 0: the guest reset or triple-faulted".to_owned()
        }
        (Exit::Code(c), _) => format!("QEMU exited with status {c}"),
        (Exit::Signal, _) => "QEMU was killed by a signal".to_owned(),
        (Exit::Stopped, _) => "stopped by the runner".to_owned(),
        (Exit::Timeout(_), _) => boot.timed_out(),
    };
    Err(format!("{problem}\nlast serial lines:\n{}", boot.tail()))
}

/// The line every kernel prints first; it separates the kernels of a run.
pub const KERNEL_UP: &str = "kho: kernel up";

/// The serial lines of each kernel of a run that spans several (a kexec
/// chain), split at each [`KERNEL_UP`] line.
pub fn split_kernels(lines: &[String]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    for l in lines {
        if l.starts_with(KERNEL_UP) || out.is_empty() {
            out.push(Vec::new());
        }
        if let Some(last) = out.last_mut() {
            last.push(l.clone());
        }
    }
    out
}

/// The handoff blobs a run printed (`kho-blob HOP HEX` lines), by hop,
/// each with the jump stamp its kernel printed after the dump (`kho-jump
/// HOP TSC`) put in and the blob resealed, as the next kernel got it. A
/// blob that does not parse is left as printed.
pub fn blobs(lines: &[String]) -> std::collections::BTreeMap<u32, Vec<u8>> {
    let mut out = dumped_blobs(lines);
    for l in lines {
        let Some((hop, tsc)) = l
            .strip_prefix("kho-jump ")
            .and_then(|r| r.split_once(' '))
            .and_then(|(h, t)| Some((h.parse::<u32>().ok()?, t.trim().parse::<u64>().ok()?)))
        else {
            continue;
        };
        let Some(blob) = out.get_mut(&hop) else {
            continue;
        };
        let stamps = kho::fdt::Fdt::new(blob).ok().and_then(|f| {
            let p = f.root().property("kho,tsc")?;
            p.as_struct::<kho::abi::handoff::Stamps>().ok().copied()
        });
        if let Some(mut s) = stamps {
            s.jump = tsc.into();
            let _ = kho::handoff::set_stamps(blob, &s);
        }
    }
    out
}

/// The blobs as printed, before any stamp is put in.
fn dumped_blobs(lines: &[String]) -> std::collections::BTreeMap<u32, Vec<u8>> {
    let mut out = std::collections::BTreeMap::<u32, Vec<u8>>::new();
    for l in lines {
        let Some(rest) = l.strip_prefix("kho-blob ") else {
            continue;
        };
        let Some((hop, hex)) = rest.split_once(' ') else {
            continue;
        };
        let Ok(hop) = hop.parse() else { continue };
        let bytes = (0..hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok());
        out.entry(hop).or_default().extend(bytes);
    }
    out
}

/// What one kernel of a live update showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HopVerdict {
    /// Its position in the run (0: the cold-booted kernel).
    pub kernel: usize,
    /// It restored the handoff and checked the preserved data.
    pub verified: bool,
    /// It refused a handoff and booted cold, saying why.
    pub refused: Option<String>,
    /// It jumped to a next kernel.
    pub jumped: bool,
}

/// Judges a run of `kernels` kernels linked by kexec: the demo verdict of
/// [`judge_demo`] for the whole run, then one verdict per kernel. Every
/// kernel but the first must have restored and verified its handoff, and
/// every kernel but the last must have jumped.
pub fn judge_live_update(
    boot: &Boot,
    kernels: usize,
    success_line: &str,
) -> Result<Vec<HopVerdict>, String> {
    judge_demo(boot, success_line)?;
    let parts = split_kernels(&boot.lines);
    let verdicts: Vec<HopVerdict> = parts
        .iter()
        .enumerate()
        .map(|(i, ls)| HopVerdict {
            kernel: i,
            verified: ls
                .iter()
                .any(|l| l.contains(&format!("kho hop {i}: verified"))),
            refused: ls
                .iter()
                .find_map(|l| l.strip_prefix("kho: handoff refused, booting cold: "))
                .map(str::to_owned),
            jumped: ls
                .iter()
                .any(|l| l.contains(": kexec: ") && l.contains(" staged")),
        })
        .collect();
    let mut problems = Vec::new();
    if verdicts.len() != kernels {
        problems.push(format!(
            "{} kernels booted, {kernels} expected",
            verdicts.len()
        ));
    }
    for v in &verdicts {
        if v.kernel > 0 && !v.verified {
            problems.push(format!("kernel {} did not verify its handoff", v.kernel));
        }
        if v.kernel + 1 < kernels && !v.jumped {
            problems.push(format!("kernel {} did not kexec", v.kernel));
        }
    }
    if problems.is_empty() {
        Ok(verdicts)
    } else {
        Err(format!(
            "{}\nlast serial lines:\n{}",
            problems.join("\n"),
            boot.tail()
        ))
    }
}

/// Where the large test image's extra segment goes, and its size: clear of
/// our kernel at 2 MiB, inside the scratch a first kernel sizes at cold
/// boot to cover its image module's segments.
pub const EXTRA_AT: u64 = 16 << 20;
/// Bytes of that segment.
pub const EXTRA_LEN: usize = 64 << 20;

/// Our kernel `elf` with one more loadable segment of [`EXTRA_LEN`] bytes
/// of a pattern at [`EXTRA_AT`]: a PVH image of over 64 MiB in a layout
/// our linker never made (the program headers move to the end of the
/// file). Returns the image and the `kho-sum64` of the segment, which the
/// image prints when booted with `kho.extra`.
pub fn large_image(mut elf: Vec<u8>) -> Result<(Vec<u8>, u64), String> {
    let field = |e: &[u8], at: usize, n: usize| -> Result<u64, String> {
        let b = e.get(at..at + n).ok_or("not an ELF64 image")?;
        let mut w = [0u8; 8];
        w[..n].copy_from_slice(b);
        Ok(u64::from_le_bytes(w))
    };
    let phoff = field(&elf, 0x20, 8)? as usize;
    let (phentsize, phnum) = (
        field(&elf, 0x36, 2)? as usize,
        field(&elf, 0x38, 2)? as usize,
    );
    if phentsize != 56 {
        return Err(format!(
            "program header entries of {phentsize} bytes, not 56"
        ));
    }
    let old = elf
        .get(phoff..phoff + phnum * phentsize)
        .ok_or("program headers outside the file")?
        .to_vec();
    elf.resize(elf.len().next_multiple_of(4096), 0);
    let data_at = elf.len();
    let mut data = Vec::with_capacity(EXTRA_LEN);
    for i in 0..(EXTRA_LEN / 8) as u64 {
        let w = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i >> 9);
        data.extend_from_slice(&w.to_le_bytes());
    }
    let sum = kho::csum::sum64(&data);
    elf.extend_from_slice(&data);
    let new_phoff = elf.len();
    elf.extend_from_slice(&old);
    for word in [
        1u64 | 6 << 32, // PT_LOAD, RW
        data_at as u64,
        EXTRA_AT, // vaddr
        EXTRA_AT, // paddr
        EXTRA_LEN as u64,
        EXTRA_LEN as u64,
        4096,
    ] {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf[0x20..0x28].copy_from_slice(&(new_phoff as u64).to_le_bytes());
    elf[0x38..0x3a].copy_from_slice(&((phnum + 1) as u16).to_le_bytes());
    Ok((elf, sum))
}

/// The default kernel image path for a workspace root.
pub fn default_kernel(root: &Path) -> PathBuf {
    root.join("target/x86_64-unknown-none/debug/kho-kernel")
}

/// Writes a bundle of the kernel images at `paths` (`kho-images-v1`, the
/// module a chain of kexecs between builds picks its next kernel from) to
/// `out`, and returns `out`.
pub fn bundle(paths: &[PathBuf], out: &Path) -> Result<PathBuf, String> {
    let images: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display())))
        .collect::<Result<_, _>>()?;
    let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    let b = kho::abi::images::Bundle::build(&refs).map_err(|e| e.to_string())?;
    std::fs::write(out, b).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(out.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(lines: &[&str], exit: Exit) -> Boot {
        Boot {
            lines: lines.iter().map(|s| s.to_string()).collect(),
            exit,
            elapsed: Duration::ZERO,
            cpu: Duration::ZERO,
        }
    }

    #[test]
    fn cpu_time_counts_a_process_or_says_it_cannot() {
        // No such process: nothing to count.
        assert_eq!(cpu_time(u32::MAX), None);
        // This process, after some work: more than nothing, where the host
        // keeps scheduler statistics (else `None`, and the wall clock
        // counts instead).
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        if let Some(t) = cpu_time(std::process::id()) {
            assert!(t > Duration::ZERO, "{t:?}");
        }
    }

    #[test]
    fn a_saved_blob_carries_the_jump_stamp_and_its_seal() {
        let golden: &[u8] = include_bytes!("../../golden/handoff-v2.dtb");
        let mut lines: Vec<String> = golden
            .chunks(64)
            .map(|c| {
                let hex: String = c.iter().map(|b| format!("{b:02x}")).collect();
                format!("kho-blob 3 {hex}")
            })
            .collect();
        lines.push("kho-jump 3 987654321".into());
        let got = &blobs(&lines)[&3];
        let ram = [kho::ranges::Range::new(0x10_0000, 0x4000_0000)];
        let h = kho::handoff::Handoff::parse(got, &ram).unwrap();
        assert_eq!(h.stamps.jump.get(), 987_654_321);
        let before = kho::handoff::Handoff::parse(golden, &ram).unwrap();
        assert_eq!(h.stamps.written, before.stamps.written);
        assert_eq!(got.len(), golden.len());
    }

    #[test]
    fn kernels_and_blobs_are_split_out_of_a_chain() {
        let b = boot(
            &[
                "kho: kernel up, command line: \"x\"",
                "kho-blob 0 d00dfeed",
                "kho-blob 0 0102",
                "kho hop 0: kexec: 8 KiB staged, next kernel at [0x200000, 0x300000)",
                "kho: kernel up, command line: \"x\"",
                "kho hop 1: verified 6 blocks",
                "kho demo: live update OK after 1 kexecs",
            ],
            Exit::Code(EXIT_SUCCESS),
        );
        assert_eq!(split_kernels(&b.lines).len(), 2);
        assert_eq!(blobs(&b.lines)[&0], [0xd0, 0x0d, 0xfe, 0xed, 1, 2]);
        let v = judge_live_update(&b, 2, "live update OK").unwrap();
        assert!(v[0].jumped && v[1].verified && v[1].refused.is_none());
        // One kernel short, or a kernel that did not verify: failures.
        assert!(judge_live_update(&b, 3, "live update OK").is_err());
        let mut bad = b.clone();
        bad.lines[5] = "kho hop 1: something else".into();
        let e = judge_live_update(&bad, 2, "live update OK").unwrap_err();
        assert!(e.contains("kernel 1 did not verify"), "{e}");
    }

    #[test]
    fn clean_run_passes() {
        let b = boot(
            &[
                "running 2",
                "test a ... ok",
                "test b ... ok",
                "2 passed, 0 failed",
            ],
            Exit::Code(33),
        );
        assert_eq!(judge_tests(&b).unwrap().passed, 2);
    }

    #[test]
    fn failure_names_test_and_reason() {
        let b = boot(
            &[
                "test a ... ok",
                "test b ... FAILED",
                "    panicked at x.rs:1:1: boom",
                "1 passed, 1 failed",
            ],
            Exit::Code(35),
        );
        let e = judge_tests(&b).unwrap_err();
        assert!(
            e.contains("kernel test b FAILED: panicked at x.rs:1:1: boom"),
            "{e}"
        );
    }

    #[test]
    fn triple_fault_is_a_failure() {
        let b = boot(&["test a ... ok", "test b ... "], Exit::Code(0));
        let e = judge_tests(&b).unwrap_err();
        assert!(
            e.contains("status 0") && e.contains("inside kernel test b"),
            "{e}"
        );
    }

    #[test]
    fn timeout_names_running_test() {
        let mut b = boot(
            &["test a ... ok", "test slow ... "],
            Exit::Timeout(Duration::from_secs(5)),
        );
        // The guest used its time: what the message says, in both clocks.
        b.cpu = Duration::from_secs(5);
        b.elapsed = Duration::from_secs(12);
        let e = judge_tests(&b).unwrap_err();
        assert!(
            e.contains("timed out: the guest used its 5s of CPU time (12s of wall-clock time) while running kernel test slow"),
            "{e}"
        );
        // It burnt no CPU: stopped by the wall clock, and said so.
        b.cpu = Duration::from_millis(100);
        b.elapsed = Duration::from_secs(50);
        let e = judge_tests(&b).unwrap_err();
        assert!(
            e.contains("50s of wall-clock time (10 x its limit of 5s)"),
            "{e}"
        );
    }

    #[test]
    fn missing_or_wrong_closing_line_fails() {
        let b = boot(&["test a ... ok"], Exit::Code(33));
        assert!(judge_tests(&b).unwrap_err().contains("no closing"));
        let b = boot(&["test a ... ok", "3 passed, 0 failed"], Exit::Code(33));
        assert!(
            judge_tests(&b)
                .unwrap_err()
                .contains("closing line says 3 passed")
        );
    }

    #[test]
    fn success_exit_with_failed_test_fails() {
        let b = boot(&["test a ... FAILED", "0 passed, 1 failed"], Exit::Code(33));
        assert!(judge_tests(&b).is_err());
    }

    #[test]
    fn demo_needs_exit_code_and_line() {
        assert!(judge_demo(&boot(&["x", "boot OK"], Exit::Code(33)), "boot OK").is_ok());
        assert!(judge_demo(&boot(&["x"], Exit::Code(33)), "boot OK").is_err());
        assert!(judge_demo(&boot(&["boot OK"], Exit::Code(0)), "boot OK").is_err());
    }

    #[test]
    fn closing_line_parser() {
        assert_eq!(parse_closing("12 passed, 0 failed"), Some((12, 0)));
        assert_eq!(parse_closing("passed, failed"), None);
    }
}
