#!/usr/bin/env python3
"""x.py: build, boot, test and measure kho. Python 3 standard library only.

  ./x.py setup          install what is missing (Rust target and components,
                        qemu-system-x86, dtc)
  ./x.py build          build the kernel (x86_64-unknown-none), and the same
                        kernel linked at 16 MiB (target/alt)
  ./x.py run [--hops N] [--debug]
                        the live update demo: kexec N times (default 2);
                        log in target/kho/run.log, blobs target/kho/handoff-*.dtb
  ./x.py kexec IMAGE [--append CMDLINE] [--expect TEXT] [--files [--force]]
                        boot our (optimized) kernel, which kexecs into any
                        PVH ELF kernel; stops once IMAGE printed (TEXT)
  ./x.py inspect FILE   decode a handoff blob (dtc, annotated)
  ./x.py test           every test: host (cargo test) and QEMU scenarios
  ./x.py bench          benchmarks; figures in target/bench/results.json
  ./x.py qemu [--gdb]   boot the kernel with extra QEMU arguments
  ./x.py fuzz [T...] [--seconds N]   run the fuzz targets (nightly, cargo-fuzz)
  ./x.py clippy         clippy -D warnings, host and kernel target
  ./x.py fmt [--check]  rustfmt over the workspace

Options for run/test/qemu: --accel kvm (uses /dev/kvm; tests default to TCG).
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
TARGET = "x86_64-unknown-none"
KERNEL = os.path.join(ROOT, "target", TARGET, "debug", "kho-kernel")
ALT_DIR = os.path.join(ROOT, "target", "alt")
KERNEL_ALT = os.path.join(ALT_DIR, TARGET, "debug", "kho-kernel")
RELEASE_KERNEL = os.path.join(ROOT, "target", TARGET, "release", "kho-kernel")
# The smallest kernel (qemu/minimal): kho and kho-x86_64 used as libraries.
MINIMAL_KERNEL = os.path.join(ROOT, "target", TARGET, "debug", "kho-minimal")
# Builds that read and write other sets of versions (qemu/src/files.rs):
# `old` reads and writes memfd-v1 only, `v3` writes only memfd-v3.
# The optimized `old` build, for `./x.py run` (every image it boots is
# optimized: a debug kernel takes tens of seconds a hop under TCG).
RELEASE_OLD = os.path.join(ROOT, "target", "versions-release", "old", "kho-kernel")
VERSION_BUILDS = {"old": os.path.join(ROOT, "target", "versions", "old", "kho-kernel"),
                  "v3": os.path.join(ROOT, "target", "versions", "v3", "kho-kernel")}
LOGDIR = os.path.join(ROOT, "target", "kho")
HOST_EXCLUDES = ["--exclude", "kho-x86_64", "--exclude", "kho-qemu", "--exclude", "kho-qemu-rt",
                 "--exclude", "kho-minimal"]

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


def rust_setup():
    """Adds the targets and components rust-toolchain.toml lists, and the
    toolchain itself, when missing (rustup's auto-install may be off)."""
    import tomllib
    with open(os.path.join(ROOT, "rust-toolchain.toml"), "rb") as f:
        tc = tomllib.load(f)["toolchain"]
    channel = tc["channel"]
    if shutil.which("rustup") is None:
        return  # a toolchain without rustup: cargo reports what is missing
    env = dict(os.environ, RUSTUP_AUTO_INSTALL="0")
    have = subprocess.run(["rustup", "toolchain", "list"], capture_output=True, text=True,
                          env=env).stdout
    if not any(line.split()[0].startswith(channel) for line in have.splitlines() if line.strip()):
        say(f"installing Rust toolchain {channel}")
        run(["rustup", "toolchain", "install", channel, "--profile", tc.get("profile", "minimal")])
    def installed(kind):
        out = subprocess.run(["rustup", kind, "list", "--installed", "--toolchain", channel],
                             capture_output=True, text=True, env=env)
        return out.stdout.split()
    targets = installed("target")
    for t in tc.get("targets", []):
        if t not in targets:
            say(f"adding Rust target {t} to {channel}")
            run(["rustup", "target", "add", "--toolchain", channel, t])
    comps = installed("component")
    for c in tc.get("components", []):
        if not any(x == c or x.startswith(c + "-") for x in comps):
            say(f"adding Rust component {c} to {channel}")
            run(["rustup", "component", "add", "--toolchain", channel, c])


def setup(_args=None):
    """Installs what is missing: the Rust target and components, then the
    Debian packages (or says how)."""
    require_cargo()
    rust_setup()
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
    # The version builds share the target directory (only kho-qemu is
    # rebuilt) and are copied out; the default build comes last.
    for feature, path in VERSION_BUILDS.items():
        run(["cargo", "build", "-p", "kho-qemu", "--target", TARGET, "--features", feature])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copyfile(KERNEL, path)
    run(["cargo", "build", "-p", "kho-qemu", "-p", "kho-minimal", "--target", TARGET])
    # The same kernel linked at 16 MiB: the "different build" to kexec into.
    run(["cargo", "build", "-p", "kho-qemu", "--target", TARGET, "--features", "alt-link",
         "--target-dir", ALT_DIR])
    for k in (KERNEL, KERNEL_ALT, MINIMAL_KERNEL):
        if not os.path.isfile(k):
            raise Failure(f"the build did not produce {k}")


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


def runner_lines(args, log):
    """Runs the runner with its serial log in `log`; returns its status and
    every serial line from the log (the terminal copy leaves out the
    machine-readable kho-timing, kho-jump and kho-blob lines)."""
    status, _ = runner(args + ["--log", log], capture=True)
    try:
        with open(log, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    return status, lines


def option(args, name, default=None):
    """Removes `name VALUE` from args and returns VALUE (or default)."""
    if name in args:
        i = args.index(name)
        if i + 1 >= len(args):
            raise Failure(f"{name} needs a value")
        v = args[i + 1]
        del args[i:i + 2]
        return v
    return default


def cmd_run(args):
    """The main job: a live update. Our kernel kexecs into the `old` build
    and back (a rollback) --hops times, each next kernel verifying the
    handed-over data; what the old build cannot read, it carries."""
    setup()
    build()
    accel = accel_args(args)
    hops = int(option(args, "--hops", "2"))
    kernel, old_image = KERNEL, VERSION_BUILDS["old"]
    if "--debug" in args:
        args.remove("--debug")
    else:
        # The demo shows timings: optimized kernels, both builds (tests use
        # debug). The `old` build first: the builds share a target
        # directory, and the default one must be what stays there.
        run(["cargo", "build", "--release", "-p", "kho-qemu", "--target", TARGET,
             "--features", "old"])
        os.makedirs(os.path.dirname(RELEASE_OLD), exist_ok=True)
        shutil.copyfile(RELEASE_KERNEL, RELEASE_OLD)
        run(["cargo", "build", "--release", "-p", "kho-qemu", "--target", TARGET])
        kernel, old_image = RELEASE_KERNEL, RELEASE_OLD
    os.makedirs(LOGDIR, exist_ok=True)
    for old in os.listdir(LOGDIR):
        if old.startswith("handoff-") and old.endswith(".dtb"):
            os.remove(os.path.join(LOGDIR, old))
    # The chain is an update and a rollback: this build, then the `old`
    # build (reads memfd-v1 only: it carries the sealed file, written as
    # memfd-v2 only, without reading it), then back to this build, which
    # reads everything again. Both images travel in one bundle.
    bundle = os.path.join(LOGDIR, "run-images.bin")
    if runner(["bundle", bundle, kernel, old_image]) != 0:
        raise Failure("cannot write the image bundle")
    # kho.route=1 sends the first hop into image 1; kho.rollback=1 sends
    # every later one back to the image the kernel before it ran.
    ran = ["this build"]
    for h in range(hops):
        ran.append("the old build" if h == 0 else ran[h - 1])
    say("hops: " + "; ".join(f"{h} -> {ran[h + 1]}" for h in range(hops)))
    status = runner(["run", "--kernel", kernel, "--initrd", bundle,
                     "--append", f"kho.hops={hops} kho.route=1 kho.rollback=1",
                     "--kernels", str(hops + 1),
                     "--expect", f"kho demo: live update OK after {hops} kexecs",
                     "--blobs", LOGDIR, "--timeout", str(60 + 60 * hops),
                     "--log", os.path.join(LOGDIR, "run.log")] + accel + args)
    say(f"serial log: {os.path.relpath(os.path.join(LOGDIR, 'run.log'), ROOT)}; "
        f"decode a handoff blob with ./x.py inspect target/kho/handoff-0.dtb")
    if status != 0:
        raise Failure("the live update failed (see above)")
    say(f"live update succeeded: {hops} kexecs, every handoff verified")


def cmd_kexec(args):
    """Boots our optimized kernel with IMAGE as its next kernel: it hands
    over and kexecs into it with the command line given (--append), shows
    the next kernel's console, and stops once it printed a line (or the
    --expect line). By default our kernel creates no kho objects (the
    image may read none); --files creates the demo's four files, which
    preflight checks against the image's reads note; --force goes ahead
    even if the image cannot read them (they are lost)."""
    setup()
    require_cargo()
    accel = accel_args(args)
    append = option(args, "--append", "")
    timeout = option(args, "--timeout", "120")
    expect = option(args, "--expect")
    memory = option(args, "--memory")
    files = "--files" in args
    force = "--force" in args
    args = [a for a in args if a not in ("--files", "--force")]
    if len(args) != 1:
        raise Failure("usage: ./x.py kexec IMAGE [--append CMDLINE] [--expect TEXT] "
                      "[--files [--force]] [--memory MIB] [--timeout S]")
    image = os.path.abspath(args[0])
    if not os.path.isfile(image):
        raise Failure(f"{image}: no such file")
    run(["cargo", "build", "--release", "-p", "kho-qemu", "--target", TARGET])
    ours = "kho.hops=1" + ("" if files else " kho.files=0") + (" kho.force=1" if force else "")
    cmd = ["kexec", "--kernel", RELEASE_KERNEL, "--initrd", image,
           "--append", f"{ours} -- {append}" if append else ours,
           "--timeout", timeout, "--log", os.path.join(LOGDIR, "kexec.log")] + accel
    if expect:
        cmd += ["--expect", expect]
    if memory:
        cmd += ["--memory", memory]
    status = runner(cmd)
    if status != 0:
        raise Failure("the kexec did not complete (see above; full log in target/kho/kexec.log)")


def cmd_inspect(args):
    """Decodes a handoff blob with dtc, then annotates what kho makes of it
    (kho-runner inspect: the crate's own readers, no second decoder)."""
    if len(args) != 1:
        raise Failure("usage: ./x.py inspect FILE (e.g. target/kho/handoff-0.dtb)")
    setup()
    r = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", "-o", "-", args[0]],
                       capture_output=True, text=True)
    print(r.stdout, end="")
    if r.returncode != 0 or r.stderr:
        print(r.stderr, end="")
    print("/* kho annotations */", flush=True)
    if runner(["inspect", args[0]]) != 0:
        raise Failure(f"cannot inspect {args[0]}")


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
    # The 256 MiB memfd scenario runs the optimized kernel (the debug one
    # takes minutes to fill and check it under TCG).
    run(["cargo", "build", "--release", "-p", "kho-qemu", "--target", TARGET])
    env = {"KHO_KERNEL": KERNEL, "KHO_KERNEL_ALT": KERNEL_ALT,
           "KHO_KERNEL_RELEASE": RELEASE_KERNEL,
           "KHO_KERNEL_OLD": VERSION_BUILDS["old"], "KHO_KERNEL_V3": VERSION_BUILDS["v3"],
           "KHO_KERNEL_MINIMAL": MINIMAL_KERNEL}
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

    # 1b. The arch library's unit and doc tests on the host: the PVH boot
    #     pages against their golden, and the compile_fail tests that hold
    #     its memory token unique.
    status, lines = run_capture(["cargo", "test", "-p", "kho-x86_64"], env=env)
    p, f = count_cargo(lines)
    total_p, total_f = total_p + p, total_f + f
    if status != 0:
        problems.append("kho-x86_64 doc tests")
        if f == 0:
            total_f += 1

    # 1c. The two libraries' documentation builds with no warning: no
    #     link to an item that is gone or private (counted as one test).
    status, _ = run_capture(["cargo", "doc", "--no-deps", "-p", "kho", "-p", "kho-x86_64"],
                            env=dict(env, RUSTDOCFLAGS="-D warnings"))
    if status == 0:
        total_p += 1
    else:
        problems.append("rustdoc warnings (cargo doc -p kho -p kho-x86_64)")
        total_f += 1

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
    only = args[0] if args else ""
    if only in ("", "kexec"):
        # The kernel benches boot the optimized kernel (kho-bench drives
        # QEMU through kho-runner and turns its kho-timing lines into
        # figures itself).
        run(["cargo", "build", "--release", "-p", "kho-qemu", "--target", TARGET])
    # A kernel's heap is resident: the host's allocator is told to keep
    # what it frees (no unmapping, no trimming), so that the figures count
    # kho's work, not the host's page faults on memory it gave back
    # (kho-bench clears these before it starts QEMU).
    env = {"KHO_BENCH_MACHINE": json.dumps(machine), "KHO_KERNEL_RELEASE": RELEASE_KERNEL,
           "MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(16 << 30),
           "MALLOC_TOP_PAD_": str(256 << 20)}
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
                "handoff_read", "vmalloc_read", "memfd_read", "luo_read", "images_parse",
                "whole_restore", "timing_parse", "tracker_inplace_read"]


def cmd_fuzz(args):
    """Runs each fuzz target (or the named ones) for --seconds (default 60)
    or --runs N executions. Needs the nightly toolchain and cargo-fuzz; only
    fuzzing uses nightly. The crate has no unsafe code, so targets run
    without ASAN (several times faster)."""
    seconds = option(args, "--seconds", "60")
    runs = option(args, "--runs")
    limit = f"-runs={runs}" if runs else f"-max_total_time={seconds}"
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
        status = run(["cargo", "+nightly", "fuzz", "run", "-s", "none", t] + extra +
                     ["--", limit, "-rss_limit_mb=8192"], check=False)
        if status != 0:
            raise Failure(f"fuzz target {t} found a failure: copy the artifact from "
                          f"fuzz/artifacts/{t}/ into tests/fuzz-regressions/{t}/ and fix it")


def cmd_clippy(_args):
    require_cargo()
    run(["cargo", "clippy", "--workspace"] + HOST_EXCLUDES + ["--all-targets", "--", "-D", "warnings"])
    run(["cargo", "clippy", "-p", "kho", "-p", "kho-x86_64", "-p", "kho-qemu", "-p", "kho-qemu-rt",
         "-p", "kho-minimal", "-p", "kho-timing",
         "--target", TARGET, "--", "-D", "warnings"])


def cmd_fmt(args):
    require_cargo()
    run(["cargo", "fmt", "--all"] + (["--", "--check"] if "--check" in args else []))


COMMANDS = {
    "setup": setup,
    "build": build,
    "run": cmd_run,
    "kexec": cmd_kexec,
    "inspect": cmd_inspect,
    "test": cmd_test,
    "bench": cmd_bench,
    "qemu": cmd_qemu,
    "fuzz": cmd_fuzz,
    "clippy": cmd_clippy,
    "fmt": cmd_fmt,
}


class exclusive:
    """Holds target/x.py.lock for the commands that build kernels and share
    target/kho (build, run, kexec, test, bench): a second x.py in the same
    checkout waits for the first instead of copying a kernel the first is
    rebuilding or overwriting its logs."""

    SHARED = ("build", "run", "kexec", "test", "bench", "qemu")

    def __init__(self, cmd):
        self.cmd, self.f = cmd, None

    def __enter__(self):
        if self.cmd not in self.SHARED:
            return self
        os.makedirs(os.path.join(ROOT, "target"), exist_ok=True)
        self.f = open(os.path.join(ROOT, "target", "x.py.lock"), "w")
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("another x.py is building or testing in this checkout: waiting for it")
            fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.f:
            self.f.close()
        return False


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help") or argv[1] not in COMMANDS:
        print(__doc__)
        return 0 if len(argv) >= 2 and argv[1] in ("-h", "--help", "help") else 2
    try:
        with exclusive(argv[1]):
            COMMANDS[argv[1]](list(argv[2:]))
    except Failure as e:
        say(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
