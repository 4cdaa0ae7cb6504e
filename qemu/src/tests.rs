//! In-kernel tests: what only a booted kernel can check.

use alloc::vec::Vec;
use kho::PAGE_SIZE;
use kho::platform::PhysMem;
use kho::ranges::Range;
use kho::reserve::{Kept, ReserveLog};
use kho::tracker::chain::{self, Reader};
use kho::tracker::{Tracker, TrackerError};
use kho_qemu_rt::kernel_test;
use kho_x86_64::frames;
use kho_x86_64::glue::KernelMem;

kernel_test!(
    fn the_reads_note_lists_what_the_registered_handlers_read() {
        assert!(crate::files::note_matches_handlers());
    }
);

fn fill(phys: u64, len: u64, seed: u64) {
    let mut mem = crate::mem::kmem();
    let bytes = mem
        .run_mut(Range::new(phys, phys + len))
        .expect("our frames");
    for (i, w) in bytes.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes());
    }
}

fn check_in(mem: &KernelMem, phys: u64, len: u64, seed: u64) -> bool {
    let bytes = mem.run(Range::new(phys, phys + len)).expect("our frames");
    bytes
        .chunks_exact(8)
        .enumerate()
        .all(|(i, w)| w == (seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes())
}

fn check(phys: u64, len: u64, seed: u64) -> bool {
    check_in(&crate::mem::kmem(), phys, len, seed)
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
        // Reserved memory never goes back to a pool (this page stays out
        // for the rest of the run).
        assert!(frames::free(top, 1).is_err());
    }
);

// The restore's reservation lists: any number of ranges (more than the
// 4096 a fixed list held), metadata never inside preserved memory nor the
// other way round, and a rollback that forgets everything.
kernel_test!(
    fn reservations_have_no_fixed_limit_and_keep_the_kinds_apart() {
        use kho::reserve::{Reserve, ReserveError};
        use kho_x86_64::frames::Reserved;
        let mut r = Reserved::new();
        let page = |i: u64| Range::new(i * 2 * PAGE_SIZE, (i * 2 + 1) * PAGE_SIZE);
        for i in 0..10_000 {
            r.reserve(page(i), Kept::Preserved).unwrap();
        }
        r.reserve(page(10_000), Kept::Metadata).unwrap();
        assert_eq!(r.preserved_ranges().len(), 10_000);
        assert_eq!(r.preserved_ranges()[9_999], page(9_999));
        assert_eq!(r.metadata_ranges(), &[page(10_000)]);
        assert_eq!(r.range_count(), 10_001);
        assert_eq!(r.preserved, 10_000 * PAGE_SIZE);
        // A chain page inside preserved memory, preserved memory over
        // metadata, the same range twice: each refused.
        for (range, why) in [
            (page(17), Kept::Metadata),
            (page(10_000), Kept::Preserved),
            (page(3), Kept::Preserved),
        ] {
            assert_eq!(
                r.reserve(range, why),
                Err(ReserveError::Overlap { range }),
                "{range} {why:?}"
            );
        }
        r.rollback();
        assert_eq!(r.range_count(), 0);
        assert_eq!((r.preserved, r.metadata), (0, 0));
    }
);

kernel_test!(
    fn heap_holds_a_large_vector() {
        let v: Vec<u64> = (0..200_000u64).collect();
        assert_eq!(v.iter().sum::<u64>(), 200_000 * 199_999 / 2);
        let (used, _) = crate::mem::HEAP.usage();
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
        let root = chain::write(&t, &mut *crate::mem::kmem()).expect("handover written");
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
        let mem = crate::mem::kmem();
        let reader = Reader::new(&*mem, root, &ram, scratch);
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
                check_in(&mem, p, PAGE_SIZE << order, seed),
                "contents of {p:#x} changed"
            );
        }

        // A flipped bit in the chain: restore refuses and reserves nothing.
        let mut mem = mem;
        let first = root.first_page.get();
        mem.frame_mut(first).expect("our chain page")[30] ^= 0x40;
        let reader = Reader::new(&*mem, root, &ram, scratch);
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

// memfds of several shapes in real frames: preserved, written in both
// formats, then read back from the same memory as the next kernel would.
// The restored files must be made of the very same folios, with the same
// bytes, and a failed read must leave nothing claimed.
kernel_test!(
    fn memfds_restore_from_physical_memory_in_place() {
        use kho::claims::Claims;
        use kho::memfd::{Memfd, Seals, seal, v1, v2};
        let boot = boot();
        let scratch = boot.scratch.areas();
        let ram: Vec<Range> = boot.params.ram().collect();
        let mut mem = crate::mem::kmem();
        let mut t = Tracker::new(scratch).unwrap();
        let free0 = frames::free_bytes().1;
        let pat = |seed: u64, at: u64| (at.wrapping_mul(0x9e37_79b9) ^ seed) as u8;
        // (writes as (offset, len), final size, seals)
        type Shape = (&'static [(u64, u64)], u64, Seals);
        let shapes: [Shape; 4] = [
            (&[(0, 4 << 20)], 4 << 20, Seals::empty()), // 2 MiB folios
            (
                &[(4096 * 3 + 5, 300_000), (5 << 20, 70_000)],
                6 << 20,
                Seals::empty(),
            ), // mixed
            (
                &[(0, 100), (5 << 20, 100), (9 << 20, 4096)],
                12 << 20,
                Seals::empty(),
            ), // sparse
            (&[(0, 256 << 10)], 256 << 10, seal::WRITE | seal::SHRINK), // sealed
        ];
        let mut files = Vec::new();
        for (i, (writes, size, seals)) in shapes.iter().enumerate() {
            let mut f = Memfd::new(true);
            for &(off, len) in *writes {
                let data: Vec<u8> = (off..off + len).map(|a| pat(i as u64, a)).collect();
                f.write(&mut *mem, off, &data).unwrap();
            }
            f.truncate(&mut *mem, *size).unwrap();
            f.add_seals(*seals).unwrap();
            f.preserve(&mut t).unwrap();
            files.push(f);
        }
        let mut written = Vec::new();
        for f in &files {
            let w2 = v2::write(f, &mut *mem, &mut t).unwrap();
            let w1 = v1::write(f, &mut *mem, &mut t).ok();
            assert_eq!(w1.is_some(), f.seals().is_empty());
            written.push((w2, w1));
        }
        // The next kernel's view: the handover read back, claims over it.
        let root = chain::write(&t, &mut *mem).unwrap();
        let mut log = ReserveLog::new();
        Reader::new(&*mem, root, &ram, scratch)
            .restore(&mut log)
            .unwrap();
        for (which, use_v1) in [(0, false), (1, true)] {
            let _ = which;
            let mut claims = Claims::new(log.of(Kept::Preserved), scratch).unwrap();
            for (i, (f, (w2, w1))) in files.iter().zip(&written).enumerate() {
                let g = match (use_v1, w1) {
                    (false, _) => {
                        v2::read(&w2.desc, &mut *mem, &ram, scratch, &mut claims).unwrap()
                    }
                    (true, Some(w1)) => {
                        v1::read(&w1.desc, &mut *mem, &ram, scratch, &mut claims).unwrap()
                    }
                    (true, None) => continue,
                };
                assert_eq!(g.extents(), f.extents(), "file {i}: other folios");
                assert_eq!(g.size(), f.size());
                let mut buf = alloc::vec![0u8; 64 << 10];
                let mut at = 0;
                while at < g.size() {
                    let n = g.read(&*mem, at, &mut buf);
                    let (writes, _, _) = shapes[i];
                    for (k, &b) in buf[..n].iter().enumerate() {
                        let a = at + k as u64;
                        let inside = writes.iter().any(|&(o, l)| (o..o + l).contains(&a));
                        let want = if inside { pat(i as u64, a) } else { 0 };
                        assert_eq!(b, want, "file {i} byte {a:#x}");
                    }
                    at += n as u64;
                }
            }
            let want: u64 = files
                .iter()
                .filter(|f| !use_v1 || f.seals().is_empty())
                .map(|f| f.allocated_bytes() / PAGE_SIZE)
                .sum();
            // Exactly the folios are data; the record arrays are metadata
            // until finish.
            assert_eq!(claims.data_pages(), want);
            // A corrupted descriptor: refused, nothing more claimed.
            let mut bad = written[1].0.desc.clone();
            bad[24] = 0x77; // records count
            let before = claims.claimed_pages();
            let mut fresh = Claims::new(log.of(Kept::Preserved), scratch).unwrap();
            assert!(v2::read(&bad, &mut *mem, &ram, scratch, &mut fresh).is_err());
            assert_eq!(fresh.data_pages(), 0);
            let _ = before;
        }
        // Give everything back.
        for r in log.of(Kept::Metadata) {
            frames::free(r.start, 1).unwrap();
        }
        for (w2, w1) in written {
            for mut a in [w2.array, w1.and_then(|w| w.array)].into_iter().flatten() {
                a.unpreserve(&mut *mem, &mut t).unwrap();
                a.free(&mut *mem);
            }
        }
        for mut f in files {
            f.unpreserve(&mut t).unwrap();
            f.free(&mut *mem);
        }
        assert_eq!(t.blocks(), 0);
        // Every folio, array and chain page is back. The vmap area keeps the
        // page tables it grew (its virtual space is never reused), at most a
        // PDPT, a PD and one page table per 2 MiB mapped here (all arrays
        // together are under 2 MiB); anything more fails.
        let kept = free0 - frames::free_bytes().1;
        assert!(kept <= 3 * PAGE_SIZE, "{kept} bytes leaked");
    }
);

// Preserved vmalloc in real frames: a buffer of scattered 8 KiB blocks,
// preserved, then restored as the next kernel would: the same blocks mapped
// again at another virtual address, the same bytes, nothing copied.
kernel_test!(
    fn vmalloc_restores_the_same_frames_at_a_new_address() {
        use kho::claims::Claims;
        use kho::vmalloc::Vmalloc;
        let boot = boot();
        let scratch = boot.scratch.areas();
        let ram: Vec<Range> = boot.params.ram().collect();
        let mut mem = crate::mem::kmem();
        let mut t = Tracker::new(scratch).unwrap();
        let mut v = Vmalloc::new(&mut *mem, 700 * 8192, 1).unwrap();
        for (i, b) in v.bytes_mut(&mut *mem).iter_mut().enumerate() {
            *b = (i.wrapping_mul(31) >> 3) as u8;
        }
        let root = v.preserve(&mut *mem, &mut t).unwrap();
        let th = chain::write(&t, &mut *mem).unwrap();
        let mut log = ReserveLog::new();
        Reader::new(&*mem, th, &ram, scratch)
            .restore(&mut log)
            .unwrap();
        let mut claims = Claims::new(log.of(Kept::Preserved), scratch).unwrap();
        let w = Vmalloc::restore(&mut *mem, &root, &ram, scratch, &mut claims).unwrap();
        assert_eq!(w.blocks(), v.blocks());
        assert_ne!(w.virt(), v.virt());
        assert!(
            w.bytes(&*mem)
                .iter()
                .enumerate()
                .all(|(i, &b)| b == (i.wrapping_mul(31) >> 3) as u8)
        );
        // Written through one mapping, seen through the other: one set of
        // frames.
        w.bytes_mut(&mut *mem)[12345] ^= 0xff;
        assert_eq!(v.bytes(&*mem)[12345], ((12345usize * 31) >> 3) as u8 ^ 0xff);
        // The blocks are data; the two chain pages metadata.
        assert_eq!(claims.data_pages(), 700 * 2);
        assert_eq!(claims.claimed_pages(), 700 * 2 + 2);
        w.release(&mut *mem, &mut claims);
        for r in log.of(Kept::Metadata) {
            frames::free(r.start, 1).unwrap();
        }
        v.unpreserve(&mut *mem, &mut t).unwrap();
        v.free(&mut *mem);
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
        // The one exception to this crate's `deny(unsafe_code)`: the
        // harness's own test of a page fault needs a read that faults.
        #[allow(unsafe_code)]
        // SAFETY: not safe at all: this read faults on purpose, and the
        // trap handler ends the test before it returns.
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
        let mut mem = crate::mem::kmem();
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

kernel_test!(
    fn the_token_refuses_memory_rust_holds() {
        let boot = kho_x86_64::start::boot_info().expect("booted");
        let heap = boot.heap.phys;
        let image = boot.image.start & !(PAGE_SIZE - 1);
        {
            let mut mem = crate::mem::kmem();
            // The heap and the image hold Rust's own objects: neither read
            // nor written through the token, nor mapped.
            assert!(mem.frame(heap).is_none() && mem.frame_mut(heap).is_none());
            assert!(mem.frame(image).is_none() && mem.frame_mut(image).is_none());
            assert!(mem.run_mut(Range::new(heap, heap + PAGE_SIZE)).is_none());
            assert!(!mem.copy(heap, heap + PAGE_SIZE, 8));
            // A boot module is read in place: readable, never writable.
            if let Some(m) = boot.params.modules.first() {
                let p = m.range.start & !(PAGE_SIZE - 1);
                assert!(mem.frame(p).is_some() && mem.frame_mut(p).is_none());
            }
            // A frame of one's own: both.
            let f = frames::alloc(1, PAGE_SIZE).expect("a frame");
            assert!(mem.frame_mut(f).is_some() && mem.frame(f).is_some());
            frames::free(f, 1).expect("free");
            // Page tables, made at boot or later (a mapping of scattered
            // frames needs new ones, from the heap): the live root and
            // every table under a fresh mapping are out of the token's
            // reach, so no safe write can change a mapping.
            let root = kho_x86_64::paging::tables_of(0)[0];
            assert!(mem.frame(root).is_none() && mem.frame_mut(root).is_none());
            let pages = [
                frames::alloc(1, PAGE_SIZE).expect("a frame"),
                frames::alloc(1, PAGE_SIZE).expect("a frame"),
            ];
            let m = kho::platform::MapFrames::map(&mut *mem, &pages).expect("mapped");
            let virt = kho::platform::MapFrames::bytes(&*mem, &m).as_ptr() as u64;
            let tables = kho_x86_64::paging::tables_of(virt);
            assert_eq!(tables.len(), 4, "a 4 KiB mapping walks four tables");
            for t in tables {
                assert!(
                    mem.frame(t).is_none() && mem.frame_mut(t).is_none(),
                    "table {t:#x}"
                );
            }
            kho::platform::MapFrames::unmap(&mut *mem, m);
            for p in pages {
                frames::free(p, 1).expect("free");
            }
            for t in kho_x86_64::paging::boot_tables() {
                assert!(frames::free(t.start, 1).is_err(), "a boot table freed");
            }
        }
        // The heap, the image and real-mode memory never go back to a pool.
        assert!(frames::free(heap, 1).is_err());
        assert!(frames::free(image, 1).is_err());
        assert!(frames::free(0x1000, 1).is_err());
    }
);

// A lent frame is its holder's alone: outside scratch, zeroed, out of
// the token's reach (read, write, map, copy) while lent, and an
// ordinary frame with the holder's bytes once taken back. A page that
// only claims an address this token lent is not taken back.
kernel_test!(
    fn a_lent_frame_is_its_holders_alone() {
        use kho::platform::{FrameAlloc, Lent, MapFrames};
        let boot = kho_x86_64::start::boot_info().expect("booted");
        let mut mem = crate::mem::kmem();
        let mut a = mem.lend().expect("a lent frame");
        let b = mem.lend().expect("another");
        let (pa, pb) = (a.phys(), b.phys());
        assert_ne!(pa, pb);
        for p in [pa, pb] {
            let page = Range::new(p, p + PAGE_SIZE);
            assert!(!boot.scratch.overlaps(page), "lent from scratch: {p:#x}");
            assert!(mem.frame(p).is_none() && mem.frame_mut(p).is_none());
            assert!(mem.run(page).is_none() && !mem.copy(p, p, 8));
            assert!(mem.map(&[p]).is_err());
        }
        assert!(a.frame().iter().all(|&x| x == 0));
        a.frame_mut()[..8].copy_from_slice(b"lent kho");
        // A forged page at a lent address changes nothing.
        let forged = alloc::boxed::Box::leak(alloc::boxed::Box::new([7; PAGE_SIZE as usize]));
        mem.take_back(Lent::new(pb, forged));
        assert!(mem.frame(pb).is_none(), "a forged page took back {pb:#x}");
        // Taken back: the token reaches it, and it holds what was written.
        mem.take_back(a);
        assert_eq!(&mem.frame(pa).expect("taken back")[..8], b"lent kho");
        mem.take_back(b);
        assert!(mem.frame_mut(pb).is_some());
        for p in [pa, pb] {
            frames::free(p, 1).expect("an ordinary frame again");
        }
    }
);
