//! The last step of a live update in one call: from the front door's
//! frozen objects to the next kernel, with nothing for the kernel to
//! rebuild (blob placement, keep list, modules, staging, jump).

use crate::glue::KernelMem;
use crate::kexec::{self, KernelFrames, KexecError, NextImage, NextModule, StageFrames};
use crate::pvh::BootParams;
use crate::tsc;
use alloc::vec;
use core::convert::Infallible;
use core::fmt;
use kho::abi::handoff::{HANDOFF_MODULE, Stamps};
use kho::fdt::WriteError;
use kho::handoff::HandoffWriter;
use kho::platform::PhysMem;
use kho::ranges::Range;
use kho::{Frozen, PAGE_SIZE};

/// Why [`hand_over`] did not kexec. The kernel is still running and
/// nothing preserved changed; `out` is still frozen (thaw it to go on:
/// [`Frozen::thaw`]), and the frames taken for the blob were given back.
#[derive(Debug)]
pub enum HandOverError {
    /// The handoff blob could not be written (the error says why).
    Write(kho::Error),
    /// No frames below 4 GiB for the blob (the next kernel reads it before
    /// its direct map exists).
    NoBlobFrames {
        /// Pages the blob needs.
        pages: u64,
    },
    /// The blob could not be written to its frames.
    BlobPlace,
    /// The next image was refused, or staging it failed.
    Kexec(KexecError),
}

impl fmt::Display for HandOverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandOverError::Write(e) => write!(f, "hand-over: writing the handoff: {e}"),
            HandOverError::NoBlobFrames { pages } => write!(
                f,
                "hand-over: no {pages} contiguous free pages below 4 GiB for the handoff blob"
            ),
            HandOverError::BlobPlace => f.write_str("hand-over: cannot write the blob's frames"),
            HandOverError::Kexec(e) => write!(f, "hand-over: {e}"),
        }
    }
}

impl core::error::Error for HandOverError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            HandOverError::Write(e) => Some(e),
            HandOverError::Kexec(e) => Some(e),
            _ => None,
        }
    }
}

/// What the kexec is about to do, given to [`Options::before_jump`] once
/// everything is in place: the last moment the kernel runs.
#[derive(Clone, Copy, Debug)]
pub struct Staged<'a> {
    /// Where the handoff blob lies (its bytes, stamped and sealed).
    pub blob: Range,
    /// The blob's stamps as placed (the jump stamp is the last reading).
    pub stamps: Stamps,
    /// Bytes the next kernel will find preserved or in the tracker's
    /// handed-over pages ([`kho::Blob::kept_bytes`]).
    pub kept: u64,
    /// What [`kexec::prepare`] staged: bytes built, bytes copied from the
    /// image module, list pages, where the segments go, the entry.
    pub prepared: &'a kexec::Prepared,
    /// The TSC when staging began.
    pub stage_tsc: u64,
    /// Ticks [`kexec::prepare`] took.
    pub prepare_ticks: u64,
}

/// Writes a kernel's own subsystem nodes into the blob ([`Options::extra`]).
pub type ExtraNodes<'a> = dyn FnMut(&mut HandoffWriter<'_>) -> Result<(), WriteError> + 'a;

/// Runs before the image is staged ([`Options::before_stage`]).
pub type BeforeStage<'a> = dyn FnMut(&mut KernelMem) + 'a;

/// Runs right before the jump ([`Options::before_jump`]).
pub type BeforeJump<'a> = dyn FnMut(&mut KernelMem, &Staged<'_>) + 'a;

/// The kernel's own part of a hand-over, all optional
/// ([`Options::default`] is a plain hand-over).
#[derive(Default)]
pub struct Options<'a> {
    /// The kernel's own subsystem nodes, written into the blob after the
    /// objects ([`HandoffWriter::subsystem`]).
    pub extra: Option<&'a mut ExtraNodes<'a>>,
    /// Runs after the blob is placed and before the image is staged, with
    /// the memory token (a kernel's last bookkeeping, or a test that takes
    /// memory away).
    pub before_stage: Option<&'a mut BeforeStage<'a>>,
    /// Runs once everything is in place, right before the jump, with the
    /// memory token (to log the blob, say). What it writes goes to the
    /// next kernel as it is: a test's way to hand over damage on purpose.
    pub before_jump: Option<&'a mut BeforeJump<'a>>,
    /// Stage every page of the image (slower; for tests of staging) rather
    /// than copying whole pages from the module where it lies.
    pub stage_all: bool,
    /// Where the blob's frames and the stager's pages come from (default:
    /// this crate's frame allocator, [`kexec::KernelFrames`]); every page
    /// goes back to it if the kexec is refused.
    pub frames: Option<&'a mut dyn StageFrames>,
    /// The TSC reading the blob's `start` stamp takes (default: now).
    pub start_tsc: Option<u64>,
}

/// Hands over and kexecs: the frozen objects of `out` written into a
/// handoff blob (`hop` counts the kexecs before this one:
/// [`kho::Incoming::next_hop`], or 0 after a cold boot; its stamps are
/// this call's TSC readings), the blob placed in frames below 4 GiB, every
/// page the next kernel must find kept (preserved memory, the tracker's
/// chain, the blob, the image's module), the image's module and the blob
/// handed on as boot modules, the image staged, and the jump into the next
/// kernel with `cmdline`, which boots cold and finds the handoff.
///
/// Returns only if the kexec did not happen, and says why; nothing the
/// next kernel would need was touched. The next image comes from
/// [`kexec::next_image`] (the image module, or one of a bundle).
pub fn hand_over(
    out: &mut Frozen<KernelMem>,
    mem: &mut KernelMem,
    params: &BootParams,
    next: &NextImage,
    cmdline: &str,
    hop: u32,
) -> Result<Infallible, HandOverError> {
    hand_over_with(out, mem, params, next, cmdline, hop, Options::default())
}

/// [`hand_over`] with the kernel's own [`Options`].
pub fn hand_over_with(
    out: &mut Frozen<KernelMem>,
    mem: &mut KernelMem,
    params: &BootParams,
    next: &NextImage,
    cmdline: &str,
    hop: u32,
    mut opts: Options<'_>,
) -> Result<Infallible, HandOverError> {
    let start = opts.start_tsc.unwrap_or_else(tsc::now);
    let mut no_extra = |_: &mut HandoffWriter<'_>| Ok(());
    let extra: &mut ExtraNodes<'_> = match opts.extra.take() {
        Some(e) => e,
        None => &mut no_extra,
    };
    // Most blobs fit; a larger one is written again at the size it asks.
    let mut buf = vec![0u8; 64 << 10];
    let handoff = match out.write_with(mem, &mut buf, hop, Stamps::default(), &mut *extra) {
        Ok(w) => w,
        Err(e) => {
            let need = e.needed().ok_or(HandOverError::Write(e))?;
            buf.resize(need, 0);
            out.write_with(mem, &mut buf, hop, Stamps::default(), &mut *extra)
                .map_err(HandOverError::Write)?
        }
    };
    let len = handoff.len;
    buf.truncate(len);
    let pages = (len as u64).div_ceil(PAGE_SIZE);
    // The blob's frames: below 4 GiB (the next kernel reads it before its
    // direct map exists), kept by the kexec.
    let mut own = KernelFrames;
    let stage: &mut dyn StageFrames = match opts.frames.take() {
        Some(f) => f,
        None => &mut own,
    };
    let at = stage
        .blob(pages)
        .ok_or(HandOverError::NoBlobFrames { pages })?;
    // Every error from here gives the blob's frames back.
    let give_back = |stage: &mut dyn StageFrames, e: HandOverError| {
        stage.give_back(at, pages);
        e
    };
    let blob = Range::new(at, at + len as u64);
    // What the kexec keeps: asked of the tracker range by range (no walk
    // of everything preserved), and the blob's frames and the image.
    let kept = handoff.kept_bytes();
    let blob_frames = Range::new(at, at + pages * PAGE_SIZE);
    let modules = [
        NextModule {
            range: next.module,
            cmdline: next.tag,
        },
        NextModule {
            range: blob,
            cmdline: HANDOFF_MODULE,
        },
    ];
    // The blob in its frames (and any failure to put it there) before
    // anything is staged; the jump stamp is patched in after `prepare`.
    let written = tsc::now();
    let mut stamps = Stamps {
        start: start.into(),
        written: written.into(),
        jump: written.into(),
    };
    // Our own blob, just written: stamping it cannot fail.
    let _ = kho::handoff::set_stamps(&mut buf, &stamps);
    if !mem.write_bytes(at, &buf) {
        return Err(give_back(stage, HandOverError::BlobPlace));
    }
    if let Some(f) = opts.before_stage.as_mut() {
        f(mem);
    }
    let stage_tsc = tsc::now();
    let keep =
        |r: Range| r.overlaps(&blob_frames) || r.overlaps(&next.module) || handoff.keeps(&*mem, r);
    let prepared = kexec::prepare_with(
        &mut *stage,
        params,
        next.image,
        &keep,
        &modules,
        cmdline,
        !opts.stage_all,
    )
    .map_err(|e| give_back(&mut *stage, HandOverError::Kexec(e)))?;
    let prepare_ticks = tsc::now().saturating_sub(stage_tsc);
    stamps.jump = tsc::now().into();
    let _ = kho::handoff::set_stamps(&mut buf, &stamps);
    // The same frames took these bytes a moment ago.
    let _ = mem.write_bytes(at, &buf);
    if let Some(f) = opts.before_jump.as_mut() {
        let staged = Staged {
            blob,
            stamps,
            kept,
            prepared: &prepared,
            stage_tsc,
            prepare_ticks,
        };
        f(mem, &staged);
    }
    // SAFETY: the handoff is complete and in its frames; everything the
    // next kernel needs is in `keep` (preserved memory, the tracker's
    // chain, the blob, the image's module) or staged by `prepare`.
    unsafe { kexec::jump(prepared) }
}
