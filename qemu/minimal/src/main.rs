//! The smallest kho kernel: it preserves one file, kexecs itself, and the
//! next boot takes the file back, in place, with the same checksum.
//!
//! It uses `kho` and `kho-x86_64` only as libraries, through the front door
//! that docs/embedding.md describes ([`kho::Outgoing`], [`kho::Incoming`]),
//! plus `kho-qemu-rt` for the QEMU exit device and the panic handler.
//! Boot it with itself as the PVH module (`-initrd`): the first boot hands
//! over and kexecs, the second prints `minimal: restored` and exits QEMU
//! with success.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;
use kho::luo::{Platform, Version};
use kho::memfd::Memfd;
use kho::memfd::MemfdHandler;
use kho::{Freeze, Outgoing};
use kho_qemu_rt::exit::{ExitCode, exit_qemu};
use kho_x86_64::glue::KernelMem;
use kho_x86_64::handover::hand_over;
use kho_x86_64::kexec;
use kho_x86_64::{BootInfo, kprintln};

#[global_allocator]
static HEAP: kho_x86_64::heap::KernelHeap = kho_x86_64::heap::KernelHeap::new();

kho_x86_64::entry!(
    main = main,
    heap = HEAP,
    fail = boot_failed,
    trap = kho_qemu_rt::on_trap
);

/// What this kernel reads: the memfd handler's versions and the
/// orchestrator's node. The previous kernel checks it before the kexec.
const NOTE_LISTS: &[&[Version]] = &[
    &[kho::memfd::V2, kho::memfd::V1],
    &[Version::new(kho::luo::LUO_VERSION)],
];
kho_x86_64::reads_note!(READS_NOTE, NOTE_LISTS);

/// The file's size, and its session and token.
const FILE_BYTES: usize = 3 << 20;
const SESSION: &str = "minimal";
const TOKEN: u64 = 1;

fn boot_failed(e: kho_x86_64::start::BootError) -> ! {
    kprintln!("minimal: {e}");
    exit_qemu(ExitCode::Failure)
}

/// Stops the kernel with `what` and a failure exit.
fn fail(what: impl core::fmt::Display) -> ! {
    kprintln!("minimal: FAILED: {what}");
    exit_qemu(ExitCode::Failure)
}

/// Byte `i` of the file: a pattern that no stale page repeats.
fn byte(i: usize) -> u8 {
    (i.wrapping_mul(131) ^ (i >> 12)) as u8
}

/// A sum of the file's bytes in order, and its first folio's address.
fn digest(f: &Memfd, p: &impl Platform) -> (u64, u64) {
    let mut buf = alloc::vec![0u8; f.size() as usize];
    f.read(p, 0, &mut buf);
    let sum = kho::csum::sum64(&buf);
    (sum, f.extents().first().map_or(0, |e| e.phys))
}

fn main(boot: &'static BootInfo, mem: KernelMem) -> ! {
    match boot.handoff {
        None => first(boot, mem),
        Some(_) => next(boot, mem),
    }
}

/// The first boot: a file in a session, frozen against the next image's
/// reads note, the handoff written, and a kexec into the image module.
fn first(boot: &'static BootInfo, mut p: KernelMem) -> ! {
    let mut out = Outgoing::new(boot.scratch).unwrap_or_else(|e| fail(e));
    let files = out
        .register(MemfdHandler::default())
        .unwrap_or_else(|e| fail(e));
    out.create_session(SESSION).unwrap_or_else(|e| fail(e));
    let mut f = Memfd::new(true);
    let bytes: Vec<u8> = (0..FILE_BYTES).map(byte).collect();
    f.write(&mut p, 0, &bytes).unwrap_or_else(|e| fail(e));
    let (sum, first_folio) = digest(&f, &p);
    out.preserve(files, SESSION, TOKEN, f, &mut p)
        .unwrap_or_else(|r| fail(r.error));

    let Some(next) = kexec::next_image(&boot.params, 0) else {
        fail("no image module to kexec into (boot with -initrd)")
    };
    let image = kho_x86_64::start::module_bytes(next.image)
        .unwrap_or_else(|| fail("the image is not a module"));
    let reads = kho::elf::Image::parse(image)
        .and_then(|i| i.read_list())
        .unwrap_or_else(|e| fail(e));
    let mut out = out
        .freeze(&mut p, Freeze::NoLoss(&reads))
        .unwrap_or_else(|e| fail(e));
    kprintln!(
        "minimal: preserved {FILE_BYTES} bytes, sum {sum:#018x}, first folio at {first_folio:#x}"
    );
    kprintln!("minimal: kexec into the image module");
    // Returns only if the kexec did not happen.
    let cmdline = boot.params.cmdline.as_str();
    match hand_over(&mut out, &mut p, &boot.params, &next, cmdline, 0) {
        Err(e) => fail(e),
        Ok(never) => match never {},
    }
}

/// The second boot: the handoff restored at boot; take the file back and
/// check it, then give back what nobody adopted.
fn next(boot: &'static BootInfo, mut p: KernelMem) -> ! {
    let Some(inc) = boot.incoming(&p) else {
        fail("no handoff")
    };
    let mut inc = inc.unwrap_or_else(|e| fail(e));
    let files = inc
        .register(MemfdHandler::default())
        .unwrap_or_else(|e| fail(e));
    let key = files.key(SESSION, TOKEN);
    let mut inc = inc.restore(&mut p);
    let (f, version) = inc.take(&key, &mut p).unwrap_or_else(|e| fail(e));
    let (sum, first_folio) = digest(&f, &p);
    let mut want = alloc::vec![0u8; FILE_BYTES];
    f.read(&p, 0, &mut want);
    if f.size() != FILE_BYTES as u64 || want.iter().enumerate().any(|(i, &b)| b != byte(i)) {
        fail("the file's bytes differ");
    }
    let done = inc.finish(&mut p).unwrap_or_else(|e| fail(e));
    if !done.lost.is_empty() || done.unread.is_some() {
        fail("an object was lost");
    }
    kprintln!(
        "minimal: restored {} bytes as {version}, sum {sum:#018x}, first folio at {first_folio:#x}; finish freed {} KiB",
        f.size(),
        done.freed / 1024
    );
    exit_qemu(ExitCode::Success)
}
