//! `kho-runner`: the command x.py calls to boot kernels under QEMU.
//!
//! ```text
//! kho-runner test [--kernel K] [--harness FLAG] [--log FILE] [--timeout S] [--accel tcg|kvm]
//! kho-runner run  [--kernel K] [--log FILE] [--timeout S] [--accel tcg|kvm] [--initrd F]
//!                  [--append ARGS] [--kernels N] [--expect LINE] [--blobs DIR] [--memory MIB]
//! kho-runner kexec [--kernel K] --initrd IMAGE [--append ARGS] [--timeout S] [--expect TEXT]
//! kho-runner qemu [--kernel K] [--gdb] [--accel tcg|kvm] [--] [QEMU ARGS...]
//! kho-runner large-image [--kernel K] --initrd OUT
//! ```
//! `test` prints each kernel test and a closing `N passed, N failed` line;
//! `run` judges a live update of `--kernels` kernels (each after the first
//! must verify its handoff) and saves each handoff blob as
//! `DIR/handoff-HOP.dtb`; `kexec` succeeds as soon as our kernel has
//! jumped into the image and the image printed a line (with `--expect`, a
//! line containing TEXT), and stops QEMU there; it fails with the reason
//! (the kexec refused, or nothing printed after the jump) otherwise. Every
//! other command exits 0 only when the kernel reported success.
//! `large-image` writes K with a 64 MiB segment added to OUT
//! ([`kho_runner::large_image`]) and prints the `kho.extra=` option the
//! image must be booted with.

use kho_runner::{
    Accel, Config, Exit, blobs, boot, default_kernel, judge_live_update, judge_tests,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The line the demo prints when a live update succeeds.
const DEMO_OK: &str = "kho demo: live update OK";

struct Args {
    cmd: String,
    kernel: PathBuf,
    harness: Option<String>,
    log: Option<PathBuf>,
    timeout: Option<u64>,
    accel: Accel,
    initrd: Option<PathBuf>,
    gdb: bool,
    cmdline: Option<String>,
    kernels: usize,
    expect: Option<String>,
    blobs: Option<PathBuf>,
    memory: Option<u32>,
    extra: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut it = std::env::args().skip(1);
    let cmd = it
        .next()
        .ok_or("usage: kho-runner test|run|qemu [options] | inspect FILE | bundle OUT IMAGE...")?;
    let mut a = Args {
        cmd,
        kernel: default_kernel(&root),
        harness: None,
        log: None,
        timeout: None,
        accel: Accel::Tcg,
        initrd: None,
        gdb: false,
        cmdline: None,
        kernels: 1,
        expect: None,
        blobs: None,
        memory: None,
        extra: Vec::new(),
    };
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--kernel" => a.kernel = val("--kernel")?.into(),
            "--harness" => a.harness = Some(val("--harness")?),
            "--log" => a.log = Some(val("--log")?.into()),
            "--initrd" => a.initrd = Some(val("--initrd")?.into()),
            "--append" => a.cmdline = Some(val("--append")?),
            "--expect" => a.expect = Some(val("--expect")?),
            "--blobs" => a.blobs = Some(val("--blobs")?.into()),
            "--memory" => {
                a.memory = Some(
                    val("--memory")?
                        .parse()
                        .map_err(|e| format!("--memory: {e}"))?,
                )
            }
            "--kernels" => {
                a.kernels = val("--kernels")?
                    .parse()
                    .map_err(|e| format!("--kernels: {e}"))?
            }
            "--timeout" => {
                a.timeout = Some(
                    val("--timeout")?
                        .parse()
                        .map_err(|e| format!("--timeout: {e}"))?,
                )
            }
            "--accel" => {
                a.accel = match val("--accel")?.as_str() {
                    "tcg" => Accel::Tcg,
                    "kvm" => Accel::Kvm,
                    other => return Err(format!("--accel {other}: expected tcg or kvm")),
                }
            }
            "--gdb" => a.gdb = true,
            "--" => a.extra.extend(it.by_ref()),
            other => a.extra.push(other.to_owned()),
        }
    }
    Ok(a)
}

/// The verdict of `kho-runner kexec`: the jump happened and the next
/// kernel printed what was expected; or why not.
fn judge_kexec(b: &kho_runner::Boot, expect: Option<&str>) -> ExitCode {
    let jump = b.lines.iter().position(|l| l.starts_with("kho-jump "));
    let Some(at) = jump else {
        let why = b
            .lines
            .iter()
            .find(|l| l.contains("refused"))
            .cloned()
            .unwrap_or_else(|| "our kernel never reached the jump".to_owned());
        return fail(&format!(
            "no kexec: {why}\nlast serial lines:\n{}",
            b.tail()
        ));
    };
    let after = b.lines.len() - at - 1;
    match (&b.exit, expect) {
        (Exit::Stopped, Some(t)) => {
            println!("kho-runner: kexec done: the next kernel printed \"{t}\"");
            ExitCode::SUCCESS
        }
        (Exit::Stopped, None) => {
            println!("kho-runner: kexec done: the next kernel was entered and printed");
            ExitCode::SUCCESS
        }
        (e, Some(t)) => fail(&format!(
            "the kexec happened, but the next kernel never printed \"{t}\" ({after} lines after the jump; {e:?})\nlast serial lines:\n{}",
            b.tail()
        )),
        (e, None) => fail(&format!(
            "the kexec happened, but the next kernel printed nothing on the serial console ({e:?}): does its command line name the console (console=ttyS0 for Linux)?"
        )),
    }
}

fn main() -> ExitCode {
    // `inspect FILE` reads a saved blob; it boots nothing.
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `bundle OUT IMAGE...` writes a kho-images-v1 bundle; it boots nothing.
    if let [cmd, out, images @ ..] = args.as_slice()
        && cmd == "bundle"
        && !images.is_empty()
    {
        let paths: Vec<PathBuf> = images.iter().map(PathBuf::from).collect();
        return match kho_runner::bundle(&paths, std::path::Path::new(out)) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kho-runner: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let [cmd, file] = args.as_slice()
        && cmd == "inspect"
    {
        return match std::fs::read(file) {
            Ok(blob) => {
                print!("{}", kho_runner::inspect::inspect(&blob));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kho-runner: {file}: {e}");
                ExitCode::from(2)
            }
        };
    }
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kho-runner: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cmdline = match a.cmd.as_str() {
        "test" => "kho.mode=test".to_owned(),
        _ => "kho.mode=demo".to_owned(),
    };
    if let Some(h) = &a.harness {
        cmdline.push_str(&format!(" kho.harness={h}"));
    }
    if let Some(c) = &a.cmdline {
        cmdline.push(' ');
        cmdline.push_str(c);
    }
    let mut cfg = Config::new(&a.kernel, &cmdline);
    cfg.accel = a.accel;
    cfg.initrd = a.initrd.clone();
    cfg.log = a.log.clone();
    cfg.echo = true;
    cfg.extra = a.extra.clone();
    if let Some(m) = a.memory {
        cfg.memory_mib = m;
    }
    if let Some(t) = a.timeout {
        cfg.timeout = Duration::from_secs(t);
    }
    match a.cmd.as_str() {
        "test" => match boot(&cfg) {
            Err(e) => fail(&e.to_string()),
            Ok(b) => match judge_tests(&b) {
                Ok(p) => {
                    println!("kernel tests: {} passed in {:.2?}", p.passed, b.elapsed);
                    ExitCode::SUCCESS
                }
                Err(why) => fail(&why),
            },
        },
        "run" => match boot(&cfg) {
            Err(e) => fail(&e.to_string()),
            Ok(b) => {
                if let Some(dir) = &a.blobs {
                    for (hop, blob) in blobs(&b.lines) {
                        let path = dir.join(format!("handoff-{hop}.dtb"));
                        if let Err(e) = std::fs::write(&path, blob) {
                            return fail(&format!("cannot write {}: {e}", path.display()));
                        }
                        println!(
                            "kho-runner: handoff blob of hop {hop} saved as {}",
                            path.display()
                        );
                    }
                }
                let expect = a.expect.as_deref().unwrap_or(DEMO_OK);
                match judge_live_update(&b, a.kernels, expect) {
                    Ok(v) => {
                        for h in v {
                            println!(
                                "kho-runner: kernel {}: {}{}{}",
                                h.kernel,
                                if h.verified {
                                    "restored and verified"
                                } else {
                                    "cold boot"
                                },
                                h.refused
                                    .map(|r| format!(", refused a handoff: {r}"))
                                    .unwrap_or_default(),
                                if h.jumped { ", kexec'd" } else { "" }
                            );
                        }
                        ExitCode::SUCCESS
                    }
                    Err(why) => fail(&why),
                }
            }
        },
        "kexec" => {
            cfg.stop_after_jump = Some(a.expect.clone().unwrap_or_default());
            match boot(&cfg) {
                Err(e) => fail(&e.to_string()),
                Ok(b) => judge_kexec(&b, a.expect.as_deref()),
            }
        }
        "large-image" => {
            let Some(out) = &a.initrd else {
                return fail("large-image needs --initrd OUT");
            };
            let made = std::fs::read(&a.kernel)
                .map_err(|e| format!("{}: {e}", a.kernel.display()))
                .and_then(kho_runner::large_image)
                .and_then(|(image, _)| {
                    std::fs::write(out, image).map_err(|e| format!("{}: {e}", out.display()))
                });
            match made {
                Ok(()) => {
                    println!(
                        "kho.extra={:#x}:{:#x}",
                        kho_runner::EXTRA_AT,
                        kho_runner::EXTRA_LEN
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        "qemu" => {
            let mut c = cfg.command();
            if a.gdb {
                c.args(["-s", "-S"]);
                eprintln!(
                    "kho-runner: QEMU waits for gdb; attach with:\n  gdb {} -ex 'target remote :1234'",
                    a.kernel.display()
                );
            }
            match c.status() {
                Ok(s) if s.code() == Some(kho_runner::EXIT_SUCCESS) => ExitCode::SUCCESS,
                Ok(s) => fail(&format!("QEMU exited with {s}")),
                Err(e) => fail(&format!(
                    "cannot run {}: {e}; try `./x.py setup`",
                    kho_runner::qemu_binary()
                )),
            }
        }
        other => fail(&format!(
            "unknown command {other}: expected test, run, kexec, qemu or large-image"
        )),
    }
}

fn fail(why: &str) -> ExitCode {
    eprintln!("kho-runner: FAILED: {why}");
    ExitCode::FAILURE
}
