//! The demo's own subsystem: blocks of several orders filled with data,
//! preserved, and checked by checksum at every hop (`kho-demo-v1`).

pub(crate) use crate::demo_abi::{BlockRecord, DEMO_V1, NAME};
use crate::handover::fail;
use alloc::vec::Vec;
use kho::PAGE_SIZE;
use kho::handoff::Handoff;
use kho::ranges::Range;
use kho_x86_64::{BootInfo, frames, kprintln};

/// Orders of the blocks the demo preserves (4 KiB to 2 MiB).
pub(crate) const ORDERS: [u32; 6] = [0, 0, 3, 9, 4, 0];

/// The block's range.
fn block(phys: u64, order: u32) -> Range {
    Range::new(phys, phys + (PAGE_SIZE << order))
}

pub(crate) fn fill(phys: u64, order: u32, generation: u32) {
    let seed = phys ^ (u64::from(generation) << 48);
    let mut mem = crate::mem::kmem();
    let Some(bytes) = mem.run_mut(block(phys, order)) else {
        fail(format_args!("block {phys:#x} is not ours to write"))
    };
    for (i, w) in bytes.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes());
    }
}

pub(crate) fn checksum(phys: u64, order: u32) -> u64 {
    let mem = crate::mem::kmem();
    let Some(bytes) = mem.run(block(phys, order)) else {
        fail(format_args!("block {phys:#x} is not ours to read"))
    };
    bytes
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]))
        .fold(0xcbf2_9ce4_8422_2325u64, |h, w| {
            (h ^ w).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// The records of the demo subsystem in the restored handoff, each checked.
pub(crate) fn verify(boot: &BootInfo, hop: u32) -> Vec<BlockRecord> {
    let Some(info) = boot.handoff else {
        fail(format_args!("no handoff"))
    };
    let blob = info
        .blob_bytes()
        .unwrap_or_else(|| fail(format_args!("the blob is not a module")));
    let ram: Vec<Range> = boot.params.ram().collect();
    let h = Handoff::parse(blob, &ram).unwrap_or_else(|e| fail(format_args!("{e}")));
    let Some(sub) = h.subsystem(NAME) else {
        fail(format_args!("the handoff has no {NAME} subsystem"))
    };
    if sub.pick(&[DEMO_V1]).is_none() {
        fail(format_args!(
            "{NAME}: no version this kernel reads ({DEMO_V1}) among {:?}",
            sub.compatible().collect::<Vec<_>>()
        ));
    }
    let recs: &[BlockRecord] = sub
        .node
        .property("kho,blocks")
        .and_then(|p| p.as_slice_of().ok())
        .unwrap_or_else(|| fail(format_args!("{NAME}: no kho,blocks")));
    let preserved: Vec<Range> = kho_x86_64::start::with_reserved(|r| r.preserved_ranges().to_vec());
    let mut total = 0;
    for r in recs {
        let (phys, order) = (r.phys.get(), r.order.get());
        let range = Range::new(phys, phys + (PAGE_SIZE << order));
        // The reserved ranges are sorted: the one that could cover it.
        let at = preserved.partition_point(|p| p.end <= phys);
        if order > 9 || !preserved.get(at).is_some_and(|p| p.covers(range)) {
            fail(format_args!(
                "block {phys:#x} order {order} is not reserved"
            ));
        }
        let sum = checksum(phys, order);
        if sum != r.sum.get() {
            fail(format_args!(
                "block {phys:#x}: checksum {sum:#018x}, handed over {:#018x}",
                r.sum.get()
            ));
        }
        total += range.len();
    }
    kprintln!(
        "kho hop {hop}: verified {} blocks ({} KiB) by checksum, generation {}",
        recs.len(),
        total / 1024,
        recs.first().map_or(0, |r| r.generation.get())
    );
    recs.to_vec()
}

/// Takes every free frame of the general pool, fills it with poison, and
/// gives it back: memory the previous kernel did not preserve is reused.
pub(crate) fn poison_free_memory() -> u64 {
    let mut taken: Vec<(u64, u64)> = Vec::new();
    let mut bytes_poisoned = 0;
    let mut mem = crate::mem::kmem();
    for order in (0..=9u32).rev() {
        while let Some(p) = frames::alloc(1 << order, PAGE_SIZE) {
            let len = PAGE_SIZE << order;
            // Just allocated, so ours.
            match mem.run_mut(block(p, order)) {
                Some(b) => b.fill(0xa5),
                None => fail(format_args!("frames {p:#x} are not ours to write")),
            }
            bytes_poisoned += len;
            if taken.try_reserve(1).is_err() {
                let _ = frames::free(p, 1 << order);
                break;
            }
            taken.push((p, 1 << order));
        }
    }
    for (p, n) in taken {
        let _ = frames::free(p, n);
    }
    bytes_poisoned
}

/// `count` single pages, none next to another: each taken with the page
/// after it, which is given back once all are taken.
pub(crate) fn scattered_pages(count: u64) -> Vec<u64> {
    let mut pages = Vec::new();
    let mut gaps = Vec::new();
    let room = usize::try_from(count).unwrap_or(usize::MAX);
    if pages.try_reserve_exact(room).is_err() || gaps.try_reserve_exact(room).is_err() {
        fail(format_args!("no memory for {count} scattered pages"));
    }
    for _ in 0..count {
        let (Some(a), Some(b)) = (frames::alloc(1, PAGE_SIZE), frames::alloc(1, PAGE_SIZE)) else {
            fail(format_args!("no frames for {count} scattered pages"))
        };
        pages.push(a);
        gaps.push(b);
    }
    for g in gaps {
        frames::free(g, 1).unwrap_or_else(|e| fail(format_args!("{e}")));
    }
    pages
}
