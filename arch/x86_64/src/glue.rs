//! The `kho` platform for this kernel: frames from the frame allocator,
//! read and written through the direct map.

use crate::{frames, paging};
use kho::PAGE_SIZE;
use kho::platform::{Frame, FrameAlloc, PhysMem};
use kho::ranges::Range;

/// Physical memory as this kernel reaches it: every RAM frame through the
/// direct map, and frames from [`frames::alloc`] (scratch before restore,
/// outside scratch after).
pub struct KernelMem;

/// Whether `phys` is a 4 KiB frame inside RAM, which the direct map covers.
fn ram_frame(phys: u64) -> bool {
    phys.is_multiple_of(PAGE_SIZE)
        && phys.checked_add(PAGE_SIZE).is_some_and(|end| {
            crate::start::ram()
                .iter()
                .any(|r| r.covers(Range::new(phys, end)))
        })
}

impl PhysMem for KernelMem {
    fn frame(&self, phys: u64) -> Option<&Frame> {
        if !ram_frame(phys) {
            return None;
        }
        let p = paging::phys_to_virt(phys) as *const Frame;
        // SAFETY: `phys` is an aligned RAM frame, so the direct map covers
        // it and the pointer is valid and aligned for 4096 bytes. The kho
        // readers only ask for frames of the handoff, which nothing in this
        // kernel writes while they are borrowed (the platform promise 3).
        Some(unsafe { &*p })
    }

    fn frame_mut(&mut self, phys: u64) -> Option<&mut Frame> {
        if !ram_frame(phys) {
            return None;
        }
        let p = paging::phys_to_virt(phys) as *mut Frame;
        // SAFETY: as above; `&mut self` makes this the only borrow through
        // `KernelMem`, and kho writes only frames it allocated or owns.
        Some(unsafe { &mut *p })
    }
}

impl FrameAlloc for KernelMem {
    fn alloc_frames(&mut self, order: u32) -> Option<u64> {
        let count = 1u64.checked_shl(order)?;
        frames::alloc(count, count.checked_mul(PAGE_SIZE)?)
    }

    fn free_frames(&mut self, phys: u64, order: u32) {
        // A double free is refused by the allocator and changes nothing.
        let _ = frames::free(phys, 1 << order);
    }

    fn add_free(&mut self, range: kho::ranges::Range) {
        // The pools are range lists: new free memory of any shape joins
        // them as it is.
        let _ = frames::free(range.start, range.len() / PAGE_SIZE);
    }
}

impl kho::platform::MapFrames for KernelMem {
    fn map(&mut self, frames: &[u64]) -> Result<kho::platform::Mapping, kho::platform::MapError> {
        if let Some(&bad) = frames.iter().find(|&&f| !ram_frame(f)) {
            return Err(kho::platform::MapError::BadFrame { phys: bad });
        }
        // SAFETY: every frame is RAM (checked); the caller owns them while
        // the mapping lives (the MapFrames contract).
        let virt =
            unsafe { paging::map_frames(frames) }.map_err(|_| kho::platform::MapError::NoSpace)?;
        Ok(kho::platform::Mapping {
            virt,
            len: frames.len() * PAGE_SIZE as usize,
        })
    }

    fn bytes(&self, m: &kho::platform::Mapping) -> &[u8] {
        // SAFETY: `m` came from `map` and has not been unmapped (unmap takes
        // it by value): `len` bytes at `virt` are mapped, and the borrow of
        // `self` keeps `bytes_mut` from handing out the same bytes.
        unsafe { core::slice::from_raw_parts(m.virt as *const u8, m.len) }
    }

    fn bytes_mut(&mut self, m: &kho::platform::Mapping) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` makes this the only borrow.
        unsafe { core::slice::from_raw_parts_mut(m.virt as *mut u8, m.len) }
    }

    fn unmap(&mut self, m: kho::platform::Mapping) {
        // SAFETY: the mapping is consumed; no slice of it outlives the
        // borrow it was given under.
        unsafe { paging::unmap_frames(m.virt, (m.len as u64) / PAGE_SIZE) };
    }
}
