//! In-kernel tests: what only a booted kernel can check.

use alloc::vec::Vec;
use kho::PAGE_SIZE;
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
        let before = frames::free_bytes();
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
        assert_eq!(frames::free_bytes(), before);
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
