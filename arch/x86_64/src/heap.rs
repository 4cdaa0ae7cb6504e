//! The kernel heap: a `linked_list_allocator` over frames from the direct map.

use crate::{frames, paging};
use kho::PAGE_SIZE;
use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Alignment of the heap's frames (so a large heap can sit in 2 MiB pages).
pub const ALIGN: u64 = 2 << 20;

/// Where the heap lives.
#[derive(Clone, Copy, Debug)]
pub struct HeapInfo {
    /// Physical start of the heap's frames.
    pub phys: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Takes `size` bytes (rounded up to pages) of contiguous frames and makes
/// them the heap. Returns `None` if no run of frames is that large.
///
/// # Safety
/// Call once, after the direct map is live.
pub unsafe fn init(size: u64) -> Option<HeapInfo> {
    let pages = size.div_ceil(PAGE_SIZE);
    let phys = frames::alloc(pages, ALIGN)?;
    let size = pages * PAGE_SIZE;
    // SAFETY: the frames were just taken from the allocator and are mapped
    // writable by the direct map; the heap owns them from now on.
    unsafe {
        HEAP.lock()
            .init(paging::phys_to_virt(phys) as *mut u8, size as usize)
    };
    Some(HeapInfo { phys, size })
}

/// Bytes in use and bytes free in the heap.
pub fn usage() -> (usize, usize) {
    let h = HEAP.lock();
    (h.used(), h.free())
}
