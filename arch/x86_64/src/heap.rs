//! The kernel heap: a `linked_list_allocator` over frames from the direct map.

use crate::{frames, paging};
use core::alloc::{GlobalAlloc, Layout};
use kho::PAGE_SIZE;
use linked_list_allocator::LockedHeap;

/// The kernel heap. The kernel declares it its global allocator and gives
/// it to [`crate::entry!`], which fills it at boot (in scratch):
///
/// ```ignore
/// #[global_allocator]
/// static HEAP: kho_x86_64::heap::KernelHeap = kho_x86_64::heap::KernelHeap::new();
/// ```
pub struct KernelHeap(LockedHeap);

impl KernelHeap {
    /// An empty heap: every allocation fails until boot fills it.
    pub const fn new() -> Self {
        Self(LockedHeap::empty())
    }

    /// Bytes in use and bytes free.
    pub fn usage(&self) -> (usize, usize) {
        let h = self.0.lock();
        (h.used(), h.free())
    }
}

impl Default for KernelHeap {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every call goes to `LockedHeap`, whose `GlobalAlloc` is sound.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's promises are passed on unchanged.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { self.0.dealloc(ptr, layout) }
    }
}

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
/// them `heap`. Returns `None` if no run of frames is that large.
///
/// # Safety
/// Call once per heap, after the direct map is live.
pub unsafe fn init(heap: &KernelHeap, size: u64) -> Option<HeapInfo> {
    let pages = size.div_ceil(PAGE_SIZE);
    let phys = frames::alloc(pages, ALIGN)?;
    let size = pages * PAGE_SIZE;
    // SAFETY: the frames were just taken from the allocator and are mapped
    // writable by the direct map; the heap owns them from now on.
    unsafe {
        heap.0
            .lock()
            .init(paging::phys_to_virt(phys).as_mut_ptr::<u8>(), size as usize)
    };
    Some(HeapInfo { phys, size })
}
