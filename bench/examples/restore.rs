//! Restore of the mix workload's handover, for profiling the reader.
use kho::ranges::Range;
use kho::tracker::handover::{self, PAGE_BYTES, PageSink, PageSource, Reader};

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
impl PageSource for Pages {
    fn page(&self, phys: u64) -> Option<&[u8; PAGE_BYTES]> {
        self.0
            .get((phys.checked_sub(1 << 50)? / 4096) as usize)
            .map(|b| &**b)
    }
}

fn main() {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut t = kho::tracker::Tracker::new(&[]).unwrap();
    let mut used = std::collections::HashSet::new();
    while used.len() < 30_000 {
        let order = (next() % 5) as u32;
        let slot = next() % ((8u64 << 30) >> 16);
        if used.insert(slot) {
            t.preserve((32u64 << 30) + (slot << 16), order).unwrap();
        }
    }
    let mut p = Pages(Vec::new());
    let root = handover::write(&t, &mut p).unwrap();
    let ram = [Range::new(0, 1 << 52)];
    let r = Reader::new(&p, root, &ram, &[]);
    let mut total = 0u64;
    for _ in 0..2000 {
        r.restore(|_| {}, |x| total += x.start).unwrap();
    }
    println!("{total}");
}
