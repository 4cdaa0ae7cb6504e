//! The `kho` platform traits for this kernel: pages from the frame
//! allocator, read and written through the direct map.

use crate::{frames, paging};
use kho::tracker::handover::{PAGE_BYTES, PageSink, PageSource};

/// Allocates handover pages from the general pool (never scratch) and
/// writes them through the direct map.
pub struct FramePages;

impl PageSink for FramePages {
    fn alloc_page(&mut self) -> Option<u64> {
        frames::alloc(1, PAGE_BYTES as u64)
    }

    fn write_page(&mut self, phys: u64, data: &[u8; PAGE_BYTES]) {
        let dst = paging::phys_to_virt(phys) as *mut [u8; PAGE_BYTES];
        // SAFETY: `phys` came from `alloc_page`, so this kernel owns the
        // page; it is RAM, hence mapped by the direct map, and 4 KiB aligned.
        unsafe { dst.write(*data) };
    }
}

/// Reads physical pages through the direct map.
pub struct DirectMap;

impl PageSource for DirectMap {
    fn page(&self, phys: u64) -> Option<&[u8; PAGE_BYTES]> {
        if !phys.is_multiple_of(PAGE_BYTES as u64) {
            return None;
        }
        let src = paging::phys_to_virt(phys) as *const [u8; PAGE_BYTES];
        // SAFETY: the reader asks only for pages it checked to lie in RAM,
        // which the direct map covers; they were written by the previous
        // kernel and nothing in this kernel writes them while it reads.
        Some(unsafe { &*src })
    }
}
