//! Handover write of 100k isolated pages, for profiling the writer.
use kho::tracker::handover::{self, PAGE_BYTES, PageSink};

struct Pages(Vec<Box<[u8; PAGE_BYTES]>>);
impl PageSink for Pages {
    fn alloc_page(&mut self) -> Option<u64> {
        self.0.push(Box::new([0; PAGE_BYTES]));
        Some((1 << 50) + (self.0.len() as u64 - 1) * 4096)
    }
    fn write_page(&mut self, phys: u64, data: &[u8; PAGE_BYTES]) {
        *self.0[((phys - (1 << 50)) / 4096) as usize] = *data;
    }
}

fn main() {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut t = kho::tracker::Tracker::new(&[]).unwrap();
    let mut n = 0;
    while n < 100_000 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        if t.preserve((s % (1 << 28)) << 12, 0).is_ok() {
            n += 1;
        }
    }
    let start = std::time::Instant::now();
    let mut total = 0;
    for _ in 0..100 {
        let mut p = Pages(Vec::new());
        total += handover::write(&t, &mut p).unwrap().pages.get();
    }
    let ns = start.elapsed().as_nanos() as f64 / 100.0 / 100_000.0;
    println!("{total} pages, {ns:.2} ns per block");
}
