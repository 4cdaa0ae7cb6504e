#!/usr/bin/env python3
"""x.py: build, boot, test and measure kho. Python 3 standard library only.

  ./x.py setup          install what is missing (qemu-system-x86, dtc)
  ./x.py build          build the kernel (x86_64-unknown-none)
  ./x.py run            boot the demo under QEMU; log in target/kho/run.log
  ./x.py test           every test: host (cargo test) and QEMU scenarios
  ./x.py bench          benchmarks; figures in target/bench/results.json
  ./x.py qemu [--gdb]   boot the kernel with extra QEMU arguments
  ./x.py fuzz [T...] [--seconds N]   run the fuzz targets (nightly, cargo-fuzz)
  ./x.py clippy         clippy -D warnings, host and kernel target
  ./x.py fmt [--check]  rustfmt over the workspace

Options for run/test/qemu: --accel kvm (uses /dev/kvm; tests default to TCG).
"""

import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
TARGET = "x86_64-unknown-none"
KERNEL = os.path.join(ROOT, "target", TARGET, "debug", "kho-kernel")
LOGDIR = os.path.join(ROOT, "target", "kho")
HOST_EXCLUDES = ["--exclude", "kho-x86_64", "--exclude", "kho-qemu"]

# Debian packages the project needs, keyed by a command or file that shows
# them. libfdt is only the C peer in `./x.py bench`.
PACKAGES = {
    "qemu-system-x86_64": "qemu-system-x86",
    "dtc": "device-tree-compiler",
    "/usr/include/libfdt.h": "libfdt-dev",
}


def present(what):
    return os.path.exists(what) if what.startswith("/") else shutil.which(what) is not None


class Failure(Exception):
    """A step failed; the message says what is missing and how to get it."""


def say(msg):
    print(f"x.py: {msg}", flush=True)


def run(cmd, env=None, check=True):
    say("$ " + " ".join(cmd))
    full_env = dict(os.environ, **(env or {}))
    r = subprocess.run(cmd, cwd=ROOT, env=full_env)
    if check and r.returncode != 0:
        raise Failure(f"`{' '.join(cmd)}` failed with status {r.returncode}")
    return r.returncode


def run_capture(cmd, env=None):
    """Runs cmd, streaming its output, and returns (status, output lines)."""
    say("$ " + " ".join(cmd))
    full_env = dict(os.environ, **(env or {}))
    p = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, errors="replace")
    lines = []
    for line in p.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line.rstrip("\n"))
    return p.wait(), lines


def require_cargo():
    if shutil.which("cargo") is None:
        raise Failure("cargo not found: install Rust with rustup (https://rustup.rs); "
                      "rust-toolchain.toml pins the version")


def setup(_args=None):
    """Installs the Debian packages that are missing, or says how."""
    require_cargo()
    missing = [pkg for what, pkg in PACKAGES.items() if not present(what)]
    if not missing:
        return
    cmd = ["apt-get", "install", "-y", "--no-install-recommends"] + missing
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise Failure(f"missing {', '.join(missing)}; install with: sudo {' '.join(cmd)}")
    say(f"installing {', '.join(missing)}")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env)
    run(cmd, env=env)
    still = [pkg for what, pkg in PACKAGES.items() if not present(what)]
    if still:
        raise Failure(f"{', '.join(still)} still missing after apt-get install")


def build(_args=None):
    require_cargo()
    run(["cargo", "build", "-p", "kho-qemu", "--target", TARGET])
    if not os.path.isfile(KERNEL):
        raise Failure(f"the build did not produce {KERNEL}")


def accel_args(args):
    if "--accel" in args:
        i = args.index("--accel")
        if i + 1 >= len(args):
            raise Failure("--accel needs a value: tcg or kvm")
        accel = args[i + 1]
        del args[i:i + 2]
        if accel == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
            raise Failure("--accel kvm: /dev/kvm is missing or not accessible; "
                          "use TCG (the default) or add yourself to the kvm group")
        return ["--accel", accel]
    return []


def runner(args, env=None, capture=False):
    cmd = ["cargo", "run", "-q", "-p", "kho-runner", "--"] + args
    if capture:
        return run_capture(cmd, env=env)
    return run(cmd, env=env, check=False)


def cmd_run(args):
    setup()
    build()
    accel = accel_args(args)
    status = runner(["run", "--kernel", KERNEL, "--log", os.path.join(LOGDIR, "run.log")]
                    + accel + args)
    say(f"serial log: {os.path.relpath(os.path.join(LOGDIR, 'run.log'), ROOT)}")
    if status != 0:
        raise Failure("the demo failed (see above)")
    say("demo succeeded")


def cmd_qemu(args):
    setup()
    build()
    accel = accel_args(args)
    gdb = ["--gdb"] if "--gdb" in args else []
    rest = [a for a in args if a != "--gdb"]
    status = runner(["qemu", "--kernel", KERNEL] + accel + gdb + ["--"] + rest)
    if status != 0:
        raise Failure("QEMU did not report success")


CARGO_RESULT = re.compile(r"test result: (\w+)\. (\d+) passed; (\d+) failed")
CLOSING = re.compile(r"^(\d+) passed, (\d+) failed$")


def count_cargo(lines):
    passed = failed = 0
    for line in lines:
        m = CARGO_RESULT.search(line)
        if m:
            passed += int(m.group(2))
            failed += int(m.group(3))
    return passed, failed


def cmd_test(args):
    setup()
    build()
    accel = accel_args(args)
    env = {"KHO_KERNEL": KERNEL}
    total_p = total_f = 0
    problems = []

    # 1. Host tests: the kho crate, the runner, and the runner's QEMU
    #    scenarios (the harness's own failure tests) against the kernel.
    status, lines = run_capture(["cargo", "test", "--workspace", "--no-fail-fast"] + HOST_EXCLUDES, env=env)
    p, f = count_cargo(lines)
    total_p, total_f = total_p + p, total_f + f
    if status != 0:
        problems.append("host tests (cargo test)")
        if f == 0:
            total_f += 1  # a build failure runs no test but is a failure

    # 2. The in-kernel test suite, each kernel test counted.
    status, lines = runner(["test", "--kernel", KERNEL, "--log",
                            os.path.join(LOGDIR, "test.log")] + accel, env=env, capture=True)
    closing = [CLOSING.match(l.strip()) for l in lines]
    closing = [m for m in closing if m]
    if closing:
        total_p += int(closing[-1].group(1))
        total_f += int(closing[-1].group(2))
    if status != 0:
        problems.append("kernel tests under QEMU")
        if not closing or int(closing[-1].group(2)) == 0:
            total_f += 1

    if problems:
        say("FAILED: " + "; ".join(problems))
    print(f"{total_p} passed, {total_f} failed", flush=True)
    if problems or total_f:
        raise Failure("some tests failed")


def cmd_bench(args):
    setup()
    machine = machine_note()
    env = {"KHO_BENCH_MACHINE": json.dumps(machine)}
    run(["cargo", "run", "--release", "-p", "kho-bench", "--"] + args, env=env)


def machine_note():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(),
            "kvm": os.access("/dev/kvm", os.R_OK | os.W_OK)}


FUZZ_TARGETS = ["fdt_read", "fdt_roundtrip", "tracker_read", "tracker_ops", "elf_parse",
                "handoff_read"]


def cmd_fuzz(args):
    """Runs each fuzz target (or the named ones) for --seconds (default 60).
    Needs the nightly toolchain and cargo-fuzz; only fuzzing uses nightly."""
    seconds = "60"
    if "--seconds" in args:
        i = args.index("--seconds")
        seconds = args[i + 1]
        del args[i:i + 2]
    targets = args or FUZZ_TARGETS
    if subprocess.run(["cargo", "+nightly", "fuzz", "--version"], cwd=ROOT,
                      capture_output=True).returncode != 0:
        raise Failure("cargo-fuzz on nightly is needed: rustup toolchain install nightly && "
                      "cargo install cargo-fuzz")
    for t in targets:
        # libFuzzer writes new inputs into the first corpus folder: the
        # working corpus, never the kept regressions, which only seed it.
        work = os.path.join(ROOT, "fuzz", "corpus", t)
        os.makedirs(work, exist_ok=True)
        kept = os.path.join(ROOT, "tests", "fuzz-regressions", t)
        extra = [work] + ([kept] if os.path.isdir(kept) else [])
        status = run(["cargo", "+nightly", "fuzz", "run", t] + extra +
                     ["--", f"-max_total_time={seconds}"], check=False)
        if status != 0:
            raise Failure(f"fuzz target {t} found a failure: copy the artifact from "
                          f"fuzz/artifacts/{t}/ into tests/fuzz-regressions/{t}/ and fix it")


def cmd_clippy(_args):
    require_cargo()
    run(["cargo", "clippy", "--workspace"] + HOST_EXCLUDES + ["--all-targets", "--", "-D", "warnings"])
    run(["cargo", "clippy", "-p", "kho", "-p", "kho-x86_64", "-p", "kho-qemu",
         "--target", TARGET, "--", "-D", "warnings"])


def cmd_fmt(args):
    require_cargo()
    run(["cargo", "fmt", "--all"] + (["--", "--check"] if "--check" in args else []))


COMMANDS = {
    "setup": setup,
    "build": build,
    "run": cmd_run,
    "test": cmd_test,
    "bench": cmd_bench,
    "qemu": cmd_qemu,
    "fuzz": cmd_fuzz,
    "clippy": cmd_clippy,
    "fmt": cmd_fmt,
}


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help") or argv[1] not in COMMANDS:
        print(__doc__)
        return 0 if len(argv) >= 2 and argv[1] in ("-h", "--help", "help") else 2
    try:
        COMMANDS[argv[1]](list(argv[2:]))
    except Failure as e:
        say(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
