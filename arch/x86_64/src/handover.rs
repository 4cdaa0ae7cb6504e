//! The last step of a live update in one call: from the front door's
//! frozen objects to the next kernel, with nothing for the kernel to
//! rebuild (blob placement, keep list, modules, staging, jump).

use crate::glue::KernelMem;
use crate::kexec::{self, KexecError, NextImage, NextModule};
use crate::pvh::BootParams;
use crate::{frames, tsc};
use alloc::vec;
use alloc::vec::Vec;
use core::convert::Infallible;
use core::fmt;
use kho::handoff::{HANDOFF_MODULE, Stamps};
use kho::platform::PhysMem;
use kho::ranges::Range;
use kho::{Outgoing, PAGE_SIZE};

/// Why [`hand_over`] did not kexec. The kernel is still running and
/// nothing preserved changed; `out` is still frozen (unfreeze it to go on,
/// or cancel it), and the frames taken for the blob were given back.
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
    /// Reading back what the handoff keeps (a check of what was written)
    /// failed.
    Kept(kho::Error),
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
            HandOverError::Kept(e) => write!(f, "hand-over: reading back what is kept: {e}"),
            HandOverError::Kexec(e) => write!(f, "hand-over: {e}"),
        }
    }
}

impl core::error::Error for HandOverError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            HandOverError::Write(e) | HandOverError::Kept(e) => Some(e),
            HandOverError::Kexec(e) => Some(e),
            _ => None,
        }
    }
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
    out: &mut Outgoing<KernelMem>,
    mem: &mut KernelMem,
    params: &BootParams,
    next: &NextImage,
    cmdline: &str,
    hop: u32,
) -> Result<Infallible, HandOverError> {
    let start = tsc::now();
    // Most blobs fit; a larger one is written again at the size it asks.
    let mut buf = vec![0u8; 64 << 10];
    let len = match out.write(mem, &mut buf, hop, Stamps::default()) {
        Ok(w) => w.len,
        Err(e) => {
            let need = e.needed().ok_or(HandOverError::Write(e))?;
            buf.resize(need, 0);
            out.write(mem, &mut buf, hop, Stamps::default())
                .map_err(HandOverError::Write)?
                .len
        }
    };
    buf.truncate(len);
    let pages = (len as u64).div_ceil(PAGE_SIZE);
    let at = frames::alloc_below(pages, 1 << 32).ok_or(HandOverError::NoBlobFrames { pages })?;
    let give_back = |e| {
        let _ = frames::free(at, pages);
        e
    };
    let blob = Range::new(at, at + len as u64);
    let ram: Vec<Range> = params.ram().collect();
    let mut keep = out
        .kept(mem, &ram)
        .map_err(|e| give_back(HandOverError::Kept(e)))?;
    keep.push(Range::new(at, at + pages * PAGE_SIZE));
    keep.push(next.module);
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
        return Err(give_back(HandOverError::BlobPlace));
    }
    let prepared = kexec::prepare(params, next.image, &keep, &modules, cmdline, true)
        .map_err(|e| give_back(HandOverError::Kexec(e)))?;
    stamps.jump = tsc::now().into();
    let _ = kho::handoff::set_stamps(&mut buf, &stamps);
    // The same frames took these bytes a moment ago.
    let _ = mem.write_bytes(at, &buf);
    // SAFETY: the handoff is complete and in its frames; everything the
    // next kernel needs is in `keep` (preserved memory, the tracker's
    // chain, the blob, the image's module) or staged by `prepare`.
    unsafe { kexec::jump(prepared) }
}
