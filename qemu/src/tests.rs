//! In-kernel tests: what only a booted kernel can check.

use alloc::vec::Vec;
use kho::PAGE_SIZE;
use kho::ranges::Range;
use kho::reserve::{Kept, ReserveLog};
use kho::tracker::handover::{self, Reader};
use kho::tracker::{Tracker, TrackerError};
use kho_x86_64::glue::KernelMem;
use kho_x86_64::{frames, kernel_test, paging};

fn fill(phys: u64, len: u64, seed: u64) {
    let p = paging::phys_to_virt(phys) as *mut u64;
    for i in 0..len / 8 {
        // SAFETY: the caller owns [phys, phys + len), mapped by the direct map.
        unsafe {
            p.add(i as usize)
                .write_volatile(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        };
    }
}

fn check(phys: u64, len: u64, seed: u64) -> bool {
    let p = paging::phys_to_virt(phys) as *const u64;
    (0..len / 8).all(|i| {
        // SAFETY: as in `fill`.
        unsafe { p.add(i as usize).read_volatile() == seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15) }
    })
}

kernel_test!(
    fn frames_alloc_write_free() {
        let before = frames::free_bytes().1;
        let a = frames::alloc(16, PAGE_SIZE).expect("16 frames");
        let b = frames::alloc(16, PAGE_SIZE).expect("16 more frames");
        assert!(
            a + 16 * PAGE_SIZE <= b || b + 16 * PAGE_SIZE <= a,
            "overlapping allocations"
        );
        fill(a, 16 * PAGE_SIZE, 1);
        fill(b, 16 * PAGE_SIZE, 2);
        assert!(check(a, 16 * PAGE_SIZE, 1) && check(b, 16 * PAGE_SIZE, 2));
        frames::free(a, 16).unwrap();
        assert_eq!(
            frames::free(a, 16),
            Err(kho::ranges::RangeError::Overlap),
            "double free accepted"
        );
        frames::free(b, 16).unwrap();
        assert_eq!(frames::free_bytes().1, before);
    }
);

kernel_test!(
    fn direct_map_reaches_top_of_ram() {
        // The last free range ends at the top of some RAM region; write and
        // read its last frame through the direct map.
        let mut last = None;
        frames::for_each_free(|r| last = Some(r));
        let r = last.expect("free memory");
        let top = r.end - PAGE_SIZE;
        frames::reserve(kho::ranges::Range::new(top, r.end)).unwrap();
        fill(top, PAGE_SIZE, 7);
        assert!(check(top, PAGE_SIZE, 7));
        frames::free(top, 1).unwrap();
    }
);

kernel_test!(
    fn heap_holds_a_large_vector() {
        let v: Vec<u64> = (0..200_000u64).collect();
        assert_eq!(v.iter().sum::<u64>(), 200_000 * 199_999 / 2);
        let (used, _) = kho_x86_64::heap::usage();
        assert!(used >= 200_000 * 8);
    }
);

kernel_test!(
    fn image_is_not_in_free_memory() {
        let img = kho_x86_64::boot::image_layout();
        let mut clash = false;
        frames::for_each_free(|r| clash |= r.start < img.end && img.start < r.end);
        assert!(!clash, "the kernel image is in the free list");
    }
);

kernel_test!(
    fn general_allocations_never_come_from_scratch() {
        let scratch = kho_x86_64::start::scratch().expect("scratch chosen at boot");
        assert!(frames::general_open());
        let mut got = alloc::vec::Vec::new();
        for _ in 0..256 {
            let p = frames::alloc(1, PAGE_SIZE).expect("a frame");
            assert!(
                !scratch.overlaps(Range::new(p, p + PAGE_SIZE)),
                "{p:#x} is in scratch"
            );
            got.push(p);
        }
        let s = frames::alloc_scratch(1).expect("a scratch frame");
        assert!(scratch.overlaps(Range::new(s, s + PAGE_SIZE)));
        frames::free(s, 1).unwrap();
        for p in got {
            frames::free(p, 1).unwrap();
        }
    }
);

kernel_test!(
    fn scratch_holds_the_image_and_the_heap() {
        let boot = boot();
        let s = &boot.scratch;
        let img = Range::new(boot.image.start, boot.image.end);
        let heap = Range::new(boot.heap.phys, boot.heap.phys + boot.heap.size);
        assert!(s.areas().iter().any(|a| a.covers(img)));
        assert!(s.areas().iter().any(|a| a.covers(heap)));
    }
);

kernel_test!(
    fn tracker_refuses_scratch_frames() {
        let scratch = kho_x86_64::start::scratch().unwrap();
        let mut t = Tracker::new(scratch.areas()).unwrap();
        let s = frames::alloc_scratch(1).unwrap();
        assert_eq!(
            t.preserve(s, 0),
            Err(TrackerError::InScratch { phys: s, order: 0 })
        );
        frames::free(s, 1).unwrap();
    }
);

// Preserves frames of several orders filled with a pattern, writes the
// handover into real frames, then reads it back through the direct map as
// the next kernel would, reserving into a fresh allocator.
kernel_test!(
    fn handover_round_trip_through_physical_memory() {
        let boot = boot();
        let scratch = boot.scratch.areas();
        let mut t = Tracker::new(scratch).unwrap();
        let mut blocks = alloc::vec::Vec::new();
        for (i, order) in [0u32, 0, 3, 9, 0, 5, 1, 9].into_iter().enumerate() {
            let p = frames::alloc(1 << order, PAGE_SIZE << order).expect("frames");
            fill(p, PAGE_SIZE << order, i as u64);
            t.preserve(p, order).unwrap();
            blocks.push((p, order, i as u64));
        }
        let root = handover::write(&t, &mut KernelMem).expect("handover written");
        let ram: alloc::vec::Vec<Range> = boot.params.ram().collect();

        // The next kernel's allocator: RAM outside scratch, minus what the
        // handover reserves.
        let mut next: kho::ranges::RangeSet<256> = kho::ranges::RangeSet::new();
        for r in &ram {
            next.insert(*r).unwrap();
        }
        for a in scratch {
            next.carve(*a).unwrap();
        }
        let reader = Reader::new(&KernelMem, root, &ram, scratch);
        let mut log = ReserveLog::new();
        let sum = reader.restore(&mut log).unwrap();
        let chain: alloc::vec::Vec<u64> = log.of(Kept::Metadata).map(|r| r.start).collect();
        let got: alloc::vec::Vec<Range> = log.of(Kept::Preserved).collect();
        for &p in &chain {
            next.carve(Range::new(p, p + PAGE_SIZE)).unwrap();
        }
        for &r in &got {
            next.carve(r).unwrap();
        }
        assert_eq!(got, t.ranges().unwrap());
        assert_eq!(sum.pages, t.pages());
        assert_eq!(chain.len() as u32, root.pages.get());
        for &(p, order, seed) in &blocks {
            let r = Range::new(p, p + (PAGE_SIZE << order));
            assert!(
                !next.intersects(r),
                "preserved block {p:#x} is free in the next allocator"
            );
            assert!(
                check(p, PAGE_SIZE << order, seed),
                "contents of {p:#x} changed"
            );
        }

        // A flipped bit in the chain: restore refuses and reserves nothing.
        let first = root.first_page.get();
        let byte = (paging::phys_to_virt(first) + 30) as *mut u8;
        // SAFETY: the chain page is ours (allocated through KernelMem above).
        unsafe { byte.write_volatile(byte.read_volatile() ^ 0x40) };
        let mut log = ReserveLog::new();
        assert!(reader.restore(&mut log).is_err());
        assert!(log.ranges.is_empty());

        for p in chain {
            frames::free(p, 1).unwrap();
        }
        for (p, order, _) in blocks {
            t.unpreserve(p, order).unwrap();
            frames::free(p, 1 << order).unwrap();
        }
        assert_eq!(t.blocks(), 0);
    }
);

fn boot() -> &'static kho_x86_64::BootInfo {
    kho_x86_64::start::boot_info().expect("booted")
}

// The harness's own tests: each fails on purpose, and only runs when the
// command line says `kho.harness=<flag>`. The host tests boot them and check
// that the run fails and names the test.

kernel_test!(
    #[only_with = "fail"]
    fn harness_fails_on_purpose() {
        let answer = 6 * 7;
        assert_eq!(answer, 43, "deliberate failure");
    }
);

kernel_test!(
    #[only_with = "fault"]
    fn harness_page_faults_on_purpose() {
        // Nothing is mapped at this address.
        let p = 0x0000_7000_dead_b000 as *const u64;
        // SAFETY: not safe at all: this read faults on purpose.
        let v = unsafe { p.read_volatile() };
        assert_eq!(v, 0);
    }
);

kernel_test!(
    #[only_with = "hang"]
    fn harness_hangs_on_purpose() {
        loop {
            core::hint::spin_loop();
        }
    }
);

#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    let buf = [n; 64];
    recurse(core::hint::black_box(buf)[3] + 1) + 1
}

kernel_test!(
    #[only_with = "overflow"]
    fn harness_overflows_stack_on_purpose() {
        let _ = recurse(0);
    }
);

kernel_test!(
    fn scattered_frames_map_contiguously_without_a_copy() {
        use kho::platform::{MapFrames, PhysMem};
        let mut mem = KernelMem;
        // Three frames, taken apart from each other, mapped in reverse.
        let a = frames::alloc(1, PAGE_SIZE).unwrap();
        let gap = frames::alloc(1, PAGE_SIZE).unwrap();
        let b = frames::alloc(1, PAGE_SIZE).unwrap();
        let c = frames::alloc(4, PAGE_SIZE).unwrap();
        for (i, f) in [a, b, c].into_iter().enumerate() {
            mem.frame_mut(f).unwrap().fill(0x10 + i as u8);
        }
        let m = mem.map(&[c, b, a]).unwrap();
        assert!(m.virt >= kho_x86_64::paging::VMAP_BASE);
        let bytes = mem.bytes(&m);
        assert_eq!(
            (bytes[0], bytes[4095], bytes[4096], bytes[8192]),
            (0x12, 0x12, 0x11, 0x10)
        );
        // A write through the mapping lands in the frame itself.
        mem.bytes_mut(&m)[4096 + 7] = 0xee;
        assert_eq!(mem.frame(b).unwrap()[7], 0xee);
        mem.unmap(m);
        assert!(mem.map(&[1 << 60]).is_err());
        for (f, n) in [(a, 1), (gap, 1), (b, 1), (c, 4)] {
            frames::free(f, n).unwrap();
        }
    }
);
