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

extern crate alloc;

use alloc::vec::Vec;
use kho::handoff::{HANDOFF_MODULE, IMAGE_MODULE, Stamps};
use kho::luo::memfd::MemfdHandler;
use kho::luo::{Platform, ReadsNote, Version, reads_len};
use kho::memfd::Memfd;
use kho::platform::PhysMem;
use kho::ranges::Range;
use kho::{Freeze, Incoming, Outgoing, PAGE_SIZE};
use kho_qemu_rt::exit::{ExitCode, exit_qemu};
use kho_x86_64::kexec::{self, NextModule};
use kho_x86_64::{BootInfo, frames, kprintln, paging};

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
    &[kho::luo::memfd::V2, kho::luo::memfd::V1],
    &[Version::new(kho::luo::LUO_VERSION)],
];
#[used]
#[unsafe(link_section = ".note.kho")]
static READS_NOTE: ReadsNote<{ reads_len(NOTE_LISTS) }> = ReadsNote::of(NOTE_LISTS);

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

fn main(boot: &'static BootInfo) -> ! {
    match boot.handoff {
        None => first(boot),
        Some(info) => next(boot, info.blob),
    }
}

/// The first boot: a file in a session, frozen against the next image's
/// reads note, the handoff written, and a kexec into the image module.
fn first(boot: &'static BootInfo) -> ! {
    let mut p = boot.mem;
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

    let Some(image) = boot.params.image_module() else {
        fail("no image module to kexec into (boot with -initrd)")
    };
    // SAFETY: the module is RAM the loader handed us, kept out of every
    // pool at boot; nothing writes it.
    let image_bytes = unsafe {
        core::slice::from_raw_parts(
            paging::phys_to_virt(image.start).as_ptr::<u8>(),
            image.len() as usize,
        )
    };
    let reads = kho::elf::Image::parse(image_bytes)
        .and_then(|i| i.read_list())
        .unwrap_or_else(|e| fail(e));
    out.freeze(&mut p, Freeze::NoLoss(&reads))
        .unwrap_or_else(|e| fail(e));

    let mut buf = alloc::vec![0u8; 64 << 10];
    let len = out
        .write(&mut p, &mut buf, 0, Stamps::default())
        .unwrap_or_else(|e| fail(e))
        .len;
    let pages = (len as u64).div_ceil(PAGE_SIZE);
    let at = frames::alloc_below(pages, 1 << 32).unwrap_or_else(|| fail("no frames for the blob"));
    if !p.write_bytes(at, &buf[..len]) {
        fail("cannot write the blob");
    }
    let blob = Range::new(at, at + len as u64);
    let ram: Vec<Range> = boot.params.ram().collect();
    let mut keep = out.kept(&p, &ram).unwrap_or_else(|e| fail(e));
    keep.push(Range::new(at, at + pages * PAGE_SIZE));
    keep.push(image);
    kprintln!(
        "minimal: preserved {FILE_BYTES} bytes, sum {sum:#018x}, first folio at {first_folio:#x}"
    );

    let modules = [
        NextModule {
            range: image,
            cmdline: IMAGE_MODULE,
        },
        NextModule {
            range: blob,
            cmdline: HANDOFF_MODULE,
        },
    ];
    let cmdline = boot.params.cmdline.as_str();
    let prepared = kexec::prepare(&boot.params, image, &keep, &modules, cmdline, true)
        .unwrap_or_else(|e| fail(e));
    kprintln!("minimal: kexec into the image module");
    // SAFETY: the handoff is written; everything the next kernel needs
    // (preserved memory, the chain, the blob, the image) is in `keep`.
    unsafe { kexec::jump(prepared) }
}

/// The second boot: the handoff restored at boot; take the file back and
/// check it, then give back what nobody adopted.
fn next(boot: &'static BootInfo, blob: Range) -> ! {
    let mut p = boot.mem;
    let ram: Vec<Range> = boot.params.ram().collect();
    let preserved: Vec<Range> = kho_x86_64::start::with_reserved(|r| r.preserved_ranges().to_vec());
    let mut inc = Incoming::from_restored(&p, blob, &ram, preserved).unwrap_or_else(|e| fail(e));
    let files = inc
        .register(MemfdHandler::default())
        .unwrap_or_else(|e| fail(e));
    let key = files.key(SESSION, TOKEN);
    let (_, version) = inc.retrieve(&key, &mut p).unwrap_or_else(|e| fail(e));
    let f = inc.take(&key, &mut p).unwrap_or_else(|e| fail(e));
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
