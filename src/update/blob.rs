//! The hand-over step's half of [`Frozen`] (feature `arch`): the handoff
//! blob written, and what the kexec must keep for it.

use super::Frozen;
use crate::Error;
use crate::abi::handoff::Stamps;
use crate::fdt::WriteError;
use crate::handoff::{self, HandoffWriter};
use crate::luo::{LuoError, Platform};
use crate::platform::PhysMem;
use crate::ranges::Range;
use crate::scratch::Scratch;
use crate::tracker::{Root, chain};
use alloc::vec::Vec;

impl<P: Platform> Frozen<P> {
    /// Writes the handoff blob into `buf`: the tracker's chain (into
    /// pages from `p`), the scratch areas and the frozen objects. `hop`
    /// counts the kexecs before this one ([`Incoming::next_hop`](crate::Incoming::next_hop) after a
    /// restore, 0 after a cold boot); `stamps` are TSC readings or zeros.
    ///
    /// `buf` needs 16 KiB plus every payload's bytes; too small is
    /// [`WriteError::NoSpace`] with the exact size the blob needs (up to
    /// [`crate::abi::handoff::MAX_BLOB`]: [`Error::needed`]), and then nothing is
    /// kept: the chain's pages go back to `p`, and a buffer of that size
    /// may be tried. Returns the [`Blob`] written: its length, and what
    /// the kexec must keep for it ([`Blob::kept`]).
    pub fn write(
        &mut self,
        p: &mut P,
        buf: &mut [u8],
        hop: u32,
        stamps: Stamps,
    ) -> Result<Blob<'_, P>, Error> {
        self.write_with(p, buf, hop, stamps, |_| Ok(()))
    }

    /// [`Frozen::write`], with the kernel's own subsystem nodes added by
    /// `extra` ([`HandoffWriter::subsystem`]).
    pub fn write_with(
        &mut self,
        p: &mut P,
        buf: &mut [u8],
        hop: u32,
        stamps: Stamps,
        mut extra: impl FnMut(&mut HandoffWriter<'_>) -> Result<(), WriteError>,
    ) -> Result<Blob<'_, P>, Error> {
        // The tracker as it lies where the platform lends its pages (only
        // a root to write); else its chain, written now.
        let root = match self.out.tracker.hand_over_in_place(p) {
            Some(r) => Root::InPlace(r),
            None => Root::Chain(chain::write(&self.out.tracker, p)?),
        };
        let mut attempt = |buf: &mut [u8]| -> Result<handoff::Written, Error> {
            let mut w = HandoffWriter::new(buf, hop, stamps, &root, &self.out.scratch)?;
            self.out.luo.write(&mut w)?;
            extra(&mut w)?;
            Ok(w.finish()?)
        };
        let r = match attempt(buf) {
            Err(e) => match e.needed() {
                // Too small: measured on the heap, so the caller learns
                // the whole size at once, not one item's worth.
                Some(at_least) => {
                    let mut size = at_least.max(buf.len().saturating_mul(2));
                    loop {
                        if size > crate::abi::handoff::MAX_BLOB {
                            break Err(e);
                        }
                        let mut v = Vec::new();
                        if v.try_reserve_exact(size).is_err() {
                            break Err(e);
                        }
                        v.resize(size, 0);
                        match attempt(&mut v) {
                            Ok(w) => {
                                break Err(Error::FdtWrite(WriteError::NoSpace { needed: w.len }));
                            }
                            Err(again) => match again.needed() {
                                Some(n) => size = n.max(size.saturating_mul(2)),
                                None => break Err(again),
                            },
                        }
                    }
                }
                None => Err(e),
            },
            ok => ok,
        };
        match r {
            // A blob written again replaces the last one: its chain goes.
            Ok(w) => {
                if let Some(Root::Chain(old)) = self.root.replace(root) {
                    chain::free(p, &old);
                }
                Ok(Blob {
                    len: w.len,
                    root,
                    frozen: self,
                })
            }
            Err(e) => {
                if let Root::Chain(root) = root {
                    chain::free(p, &root);
                }
                Err(e)
            }
        }
    }

    /// The scratch areas.
    pub fn scratch(&self) -> &Scratch {
        &self.out.scratch
    }
}

/// The handoff blob [`Frozen::write`] just wrote: its length, and what the
/// kexec must keep for it. It borrows the frozen side, so the blob cannot
/// be written again (replacing the tracker chain this names) while it is
/// held.
pub struct Blob<'f, P: Platform> {
    /// Bytes of the blob (the first `len` bytes of the buffer).
    pub len: usize,
    /// The tracker's root this blob names.
    root: Root,
    frozen: &'f Frozen<P>,
}

impl<P: Platform> core::fmt::Debug for Blob<'_, P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Blob")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<P: Platform> Blob<'_, P> {
    /// Whether the byte range `r` holds anything the kexec must leave in
    /// place besides the blob: a preserved page, or a page of the
    /// tracker's handed-over form. Asked of the tracker, region by region
    /// of `r`, and of the tracker's own pages: the cost never grows with
    /// what is preserved. What a kexec loader asks of each range it would
    /// write (`kho_x86_64::kexec::prepare`'s `keep`); [`kept`](Self::kept)
    /// lists the same memory, at the cost of a walk of all of it.
    pub fn keeps(&self, mem: &impl PhysMem, r: Range) -> bool {
        let tracker = &self.frozen.out.tracker;
        let page = |p: u64| Range::new(p, p.saturating_add(4096)).overlaps(&r);
        tracker.holds_any(r)
            || match self.root {
                Root::InPlace(_) => tracker.own_pages().any(page),
                Root::Chain(root) => {
                    crate::chain::page_addrs(mem, root.first_page.get(), root.pages.get()).any(page)
                }
            }
    }

    /// Bytes the next kernel finds preserved or in the tracker's
    /// handed-over pages (what [`kept`](Self::kept) lists), from counts
    /// the tracker keeps.
    pub fn kept_bytes(&self) -> u64 {
        let tracker = &self.frozen.out.tracker;
        let own = match self.root {
            Root::InPlace(_) => tracker.own_pages().count() as u64,
            Root::Chain(root) => u64::from(root.pages.get()),
        };
        tracker.pages().saturating_add(own).saturating_mul(4096)
    }

    /// Everything the kexec must leave in place besides the blob, as a
    /// list in address order: every preserved range and every page of the
    /// tracker's handed-over form. A chain is read back the way the next
    /// kernel will read it (so this is also a check of what was written);
    /// a tracker in place is walked. For a loader that wants a list: it
    /// costs a walk of everything preserved, where [`keeps`](Self::keeps)
    /// answers for one range without it.
    pub fn kept(&self, mem: &impl PhysMem, ram: &[Range]) -> Result<Vec<Range>, Error> {
        let root = match self.root {
            Root::Chain(root) => root,
            // Its pages lie in frames the platform keeps from itself
            // while lent: the tracker says what they are.
            Root::InPlace(_) => return Ok(self.frozen.out.tracker.kept()?),
        };
        let mut log = crate::reserve::ReserveLog::new();
        chain::Reader::new(mem, root, ram, self.frozen.out.scratch.areas()).restore(&mut log)?;
        // One allocation of the exact size, with room for the two ranges
        // a loader adds (the blob, the image): no copy of a list that can
        // hold hundreds of thousands of ranges.
        let mut kept = Vec::new();
        kept.try_reserve_exact(log.ranges.len().saturating_add(2))
            .map_err(|_| LuoError::OutOfMemory)?;
        kept.extend(log.ranges.iter().map(|(r, _)| *r));
        Ok(kept)
    }
}
