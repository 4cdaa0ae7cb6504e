//! Pages for the profiling examples: a chain sink and source in memory,
//! allocated upward from 2^50.
use kho::tracker::handover::{PAGE_BYTES, PageSink, PageSource};

const BASE: u64 = 1 << 50;

/// Chain pages in a vector.
#[derive(Default)]
pub struct Pages(Vec<Box<[u8; PAGE_BYTES]>>);

impl PageSink for Pages {
    fn alloc_page(&mut self) -> Option<u64> {
        self.0.push(Box::new([0; PAGE_BYTES]));
        Some(BASE + (self.0.len() as u64 - 1) * 4096)
    }
    fn write_page(&mut self, phys: u64, data: &[u8; PAGE_BYTES]) {
        *self.0[((phys - BASE) / 4096) as usize] = *data;
    }
}

impl PageSource for Pages {
    fn page(&self, phys: u64) -> Option<&[u8; PAGE_BYTES]> {
        self.0
            .get((phys.checked_sub(BASE)? / 4096) as usize)
            .map(|b| &**b)
    }
}
