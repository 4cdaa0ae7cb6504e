//! Out of memory in the tracker: a typed error and no partial state. This
//! test binary has a global allocator that fails on demand.

use kho::ranges::Range;
use kho::tracker::{Tracker, TrackerError};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Failing;

thread_local! {
    /// Per thread, so that tests running side by side do not fail each
    /// other's allocations. Const-initialised: reading it never allocates.
    static FAIL: Cell<bool> = const { Cell::new(false) };
    /// With `FAIL` off: allocations larger than this fail too (0: none).
    static FAIL_ABOVE: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator, or returns null (allowed).
unsafe impl GlobalAlloc for Failing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let above = FAIL_ABOVE.with(Cell::get);
        if FAIL.with(Cell::get) || (above != 0 && layout.size() > above) {
            return std::ptr::null_mut();
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Failing = Failing;

fn with_failing<T>(f: impl FnOnce() -> T) -> T {
    FAIL.with(|x| x.set(true));
    let r = f();
    FAIL.with(|x| x.set(false));
    r
}

#[test]
fn out_of_memory_is_typed_and_changes_nothing() {
    let mut t = Tracker::new(&[]).unwrap();
    t.preserve(0x20_0000, 0).unwrap();
    let before = t.ranges().unwrap();

    // A new 1 GiB chunk needs memory: refused, nothing recorded.
    let r = with_failing(|| t.preserve(5 << 30, 0));
    assert_eq!(r, Err(TrackerError::OutOfMemory));
    // A second block in a region needs a leaf: refused likewise.
    let r = with_failing(|| t.preserve(0x20_3000, 0));
    assert_eq!(r, Err(TrackerError::OutOfMemory));
    // A range that needs memory partway: undone entirely.
    let r = with_failing(|| t.preserve_range(0x40_0000, 0x60_0000 + 0x3000));
    assert!(matches!(r, Err(TrackerError::OutOfMemory)), "{r:?}");
    assert_eq!(t.ranges().unwrap(), before);
    assert!(!t.is_preserved(5 << 30) && !t.is_preserved(0x20_3000) && !t.is_preserved(0x40_0000));

    // With memory back, the same calls succeed.
    t.preserve(5 << 30, 0).unwrap();
    t.preserve(0x20_3000, 0).unwrap();
    t.preserve_range(0x40_0000, 0x60_3000).unwrap();
    assert_eq!(
        t.ranges().unwrap(),
        [
            Range::new(0x20_0000, 0x20_1000),
            Range::new(0x20_3000, 0x20_4000),
            Range::new(0x40_0000, 0x60_3000),
            Range::new(5 << 30, (5 << 30) + 0x1000),
        ]
    );
}

#[test]
fn a_chunk_that_cannot_become_dense_stays_sparse_and_correct() {
    let mb2 = 2u64 << 20;
    // Dense at 64 leaves, as many as the first page of leaves holds.
    let mut t = Tracker::with_dense_threshold(&[], 64).unwrap();
    // 63 regions of one chunk with two pages each: 63 leaves, all in the
    // first page of leaves.
    for r in 0..63 {
        t.preserve(r * mb2, 0).unwrap();
        t.preserve(r * mb2 + 0x1000, 0).unwrap();
    }
    t.preserve(63 * mb2, 0).unwrap();
    let before = t.memory_bytes();
    // The 64th leaf needs no allocation, but it makes the chunk dense,
    // which needs 64 KiB: that fails quietly and the preserve stands.
    with_failing(|| t.preserve(63 * mb2 + 0x1000, 0)).unwrap();
    assert_eq!(t.memory_bytes(), before);
    // With memory back, the next leaf makes the chunk dense.
    t.preserve(64 * mb2, 0).unwrap();
    t.preserve(64 * mb2 + 0x1000, 0).unwrap();
    assert!(t.memory_bytes() >= before + 64 * 1024);
    let want: Vec<Range> = (0..65)
        .map(|r| Range::new(r * mb2, r * mb2 + 0x2000))
        .collect();
    assert_eq!(t.ranges().unwrap(), want);
    assert_eq!(t.blocks(), 130);
    for r in 0..65 {
        assert!(t.is_block(r * mb2 + 0x1000, 0));
        assert_eq!(
            t.preserve(r * mb2, 0),
            Err(TrackerError::AlreadyPreserved {
                phys: r * mb2,
                order: 0
            })
        );
    }
}

/// The handover writer lays its records out once in a heap buffer; when
/// that buffer cannot grow, it lays them out twice instead (count, then
/// write) and produces the same chain.
#[test]
fn the_writer_without_memory_for_its_buffer_writes_the_same_chain() {
    use kho::platform::PhysMem;
    use kho::platform::host::HostMem;
    use kho::tracker::chain;
    // Enough isolated pages for several chain pages (a buffer of 24 KiB).
    let mut t = Tracker::new(&[]).unwrap();
    for i in 0..3000u64 {
        t.preserve((1 << 32) + i * ((2 << 20) + 0x2000), 0).unwrap();
    }
    let pool = Range::new(1 << 40, (1 << 40) + (1 << 30));
    let chain = |mem: &HostMem, root: &kho::abi::tracker::TrackerRoot| -> Vec<Vec<u8>> {
        let mut at = root.first_page.get();
        let mut out = vec![];
        for _ in 0..root.pages.get() {
            let f = mem.frame(at).unwrap();
            out.push(f.to_vec());
            at = u64::from_le_bytes(f[8..16].try_into().unwrap());
        }
        out
    };
    let mut a = HostMem::with_pool(pool);
    let ra = chain::write(&t, &mut a).unwrap();
    let mut b = HostMem::with_pool(pool);
    // The fake's 2 MiB table of frames where the chain goes, made before
    // allocations start failing: the writer's memory is what is tested.
    b.frame_mut(pool.start).unwrap();
    // Vectors past 8 KiB fail: the buffer's growth, not the small lists.
    FAIL_ABOVE.with(|x| x.set(8 << 10));
    let rb = chain::write(&t, &mut b);
    FAIL_ABOVE.with(|x| x.set(0));
    let rb = rb.unwrap();
    assert!(ra.pages.get() >= 3);
    assert_eq!(ra.records, rb.records);
    assert_eq!(ra.preserved_pages, rb.preserved_pages);
    assert_eq!(ra.pages, rb.pages);
    assert_eq!(chain(&a, &ra), chain(&b, &rb));
}
