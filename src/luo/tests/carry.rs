//! Carrying keeps its promises: each way an object was lost, stranded or
//! given a second role on a path the demo never takes, as a test that
//! failed before its fix. Every kernel here is the front door; a damaged
//! footprint is damaged where a stray write or a bad writer would leave
//! it: in the blob or in the array's memory.

use super::*;
use crate::abi::luo::FootprintArray;
use crate::claims::ClaimError;

/// Fills every page of `ranges` with a pattern: what a kernel that got
/// them back from finish may do with them.
fn poison(mem: &mut HostMem, ranges: &[Range]) {
    for r in ranges {
        for p in (r.start..r.end).step_by(4096) {
            if let Some(f) = mem.frame_mut(p) {
                f.fill(0xa5);
            }
        }
    }
}

/// A kernel over `b` whose handlers `reg` registers: takes nothing,
/// finishes.
fn finish_only(mem: &mut HostMem, b: &[u8], reg: impl FnOnce(&mut Incoming<HostMem>)) -> Finished {
    let mut inc = boot(mem, b).unwrap();
    reg(&mut inc);
    inc.restore(mem).finish(mem).unwrap()
}

/// Checks what finish did: nothing it freed is in a carried footprint
/// (then poisons what it freed); returns the carried objects.
fn checked(mem: &mut HostMem, done: Finished) -> Vec<Carried> {
    for c in &done.carried {
        for r in &done.ranges {
            assert!(
                c.footprint().iter().all(|f| !f.overlaps(r)),
                "{}/{} carried, and {r} of it freed",
                c.session,
                c.token
            );
        }
    }
    poison(mem, &done.ranges);
    done.carried
}

/// The next handoff from a kernel that only carries `carried` (in the
/// order given): its blob.
fn hand_on(mem: &mut HostMem, scratch: &Scratch, carried: Vec<Carried>, hop: u32) -> Vec<u8> {
    let mut out = Outgoing::<HostMem>::new(*scratch).unwrap();
    let refused = out.carry(carried, mem);
    assert!(refused.is_empty(), "{:?}", refused[0].error);
    freeze(out, mem, hop).1
}

/// Reads memfd object `token` of `s` from `b` with a `memfd-v3` reader:
/// its contents and first folio.
fn read_file(mem: &mut HostMem, b: &[u8], s: &str, token: u64) -> (Vec<u8>, u64) {
    let mut inc = boot(mem, b).unwrap();
    let files = inc
        .register(MemfdHandler::new(&[V3_TEST], &[V3_TEST]))
        .unwrap();
    let mut inc = inc.restore(mem);
    let (g, v) = inc.take(&files.key(s, token), mem).unwrap();
    assert_eq!(v, "memfd-v3");
    (contents(&g, mem), g.extents()[0].phys)
}

/// A file of `n` 4 KiB folios with a page allocated (and left) between
/// each two: more runs than a footprint lists inline past 4096.
fn scattered(mem: &mut HostMem, n: u64) -> Memfd {
    let mut f = Memfd::new(true);
    for i in 0..n {
        f.write(mem, i * 4096, &[(i % 251) as u8 + 1]).unwrap();
        let _ = mem.alloc_frames(0);
    }
    f
}

const CARRIER: &[u8] = b"memfd-v1\0kho-luo-v2\0";

/// A first kernel's outgoing side that writes (and reads) `memfd-v3`
/// only, with an empty session `s`, and its family.
fn writer_of_v3(scratch: Scratch) -> (Outgoing<HostMem>, Family<Memfd>) {
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    let files = out
        .register(MemfdHandler::new(&[V3_TEST], &[V3_TEST]))
        .unwrap();
    out.create_session("s").unwrap();
    (out, files)
}

/// Case 1: A kernel that calls finish without a retrieve, with no handler for
/// the family or none at all, carries every object preflight said it
/// would; a later kernel reads it bit-exact.
#[test]
fn a_kernel_that_retrieves_nothing_still_carries() {
    for handlers in [false, true] {
        let (mut mem, scratch) = setup();
        let (mut out, files) = writer_of_v3(scratch);
        let f = file(&mut mem, 200_000, 9, 0);
        let want = contents(&f, &mem);
        let first = f.extents()[0].phys;
        out.preserve(files, "s", 7, f, &mut mem).unwrap();
        let reads = ReadList::parse(CARRIER).unwrap();
        assert_eq!(out.preflight(&reads)[0].outcome, Outcome::Carried);
        let mut frozen = out.freeze(&mut mem, Freeze::NoLoss(&reads)).unwrap();
        let b = write(&mut frozen, &mut mem, 0);
        let done = finish_only(&mut mem, &b, |inc| {
            if handlers {
                inc.register(MemfdHandler::new(&[V1], &[V1])).unwrap();
            }
        });
        assert!(done.lost.is_empty(), "{:?}", done.lost);
        assert_eq!(done.carried.len(), 1);
        let carried = checked(&mut mem, done);
        let b2 = hand_on(&mut mem, &scratch, carried, 1);
        assert_eq!(read_file(&mut mem, &b2, "s", 7), (want, first));
    }
}

/// The footprint array of `/luo/session-0/object-{token}` in blob `b`:
/// its property, its blocks (from its first chain page) and its extents
/// (from its blocks).
fn array_of(mem: &HostMem, b: &[u8], token: u64) -> (FootprintArray, Vec<u64>, Vec<Range>) {
    let h = Handoff::parse(b, &[RAM]).unwrap();
    let p = h
        .fdt()
        .find_property(
            &alloc::format!("/luo/session-0/object-{token:x}"),
            "kho,footprint-array",
        )
        .unwrap();
    let fa = FootprintArray::read_from_bytes(p.value).unwrap();
    let chain = mem.frame(fa.root.first.get()).unwrap();
    let blocks: Vec<u64> = (0..fa.root.blocks.get() as usize)
        .map(|i| u64::from_le_bytes(chain[32 + i * 8..40 + i * 8].try_into().unwrap()))
        .collect();
    let extents = (0..fa.extents.get() as usize)
        .map(|i| {
            let at = i * 16;
            let page = mem.frame(blocks[at / 4096]).unwrap();
            let o = at % 4096;
            let start = u64::from_le_bytes(page[o..o + 8].try_into().unwrap());
            let pages = u64::from_le_bytes(page[o + 8..o + 16].try_into().unwrap());
            Range::new(start, start + pages * 4096)
        })
        .collect();
    (fa, blocks, extents)
}

/// The inline footprint (`kho,footprint`) of object `token` of blob `b`.
fn inline_footprint(b: &[u8], token: u64) -> Vec<Range> {
    let h = Handoff::parse(b, &[RAM]).unwrap();
    let p = h
        .fdt()
        .find_property(
            &alloc::format!("/luo/session-0/object-{token:x}"),
            "kho,footprint",
        )
        .unwrap();
    p.value
        .chunks_exact(16)
        .map(|c| {
            let e = crate::abi::luo::Extent::read_from_bytes(c).unwrap();
            Range::new(e.start.get(), e.start.get() + e.pages.get() * 4096)
        })
        .collect()
}

/// Writes `extents` into the footprint array of object 1 of blob `b` and
/// sums it again in the blob, resealed, as a writer that made them would.
fn rewrite_array(mem: &mut HostMem, b: &[u8], extents: &[Range]) -> Vec<u8> {
    let (mut fa, blocks, old) = array_of(mem, b, 1);
    assert_eq!(old.len(), extents.len());
    let mut bytes = vec![0u8; blocks.len() * 4096];
    for (r, out) in extents.iter().zip(bytes.chunks_exact_mut(16)) {
        out[..8].copy_from_slice(&r.start.to_le_bytes());
        out[8..].copy_from_slice(&(r.len() / 4096).to_le_bytes());
    }
    for (&blk, page) in blocks.iter().zip(bytes.chunks_exact(4096)) {
        mem.frame_mut(blk).unwrap().copy_from_slice(page);
    }
    fa.root.sum = crate::csum::sum64(&bytes).into();
    with_property(
        b,
        "/luo/session-0/object-1",
        "kho,footprint-array",
        fa.as_bytes(),
    )
}

/// Case 2: A footprint array's own blocks are metadata until finish: an array
/// that lists its own block, or another object's footprint that names
/// it, is refused (that object dropped), and the block is freed, never
/// carried as data.
#[test]
fn a_footprint_arrays_blocks_are_never_data() {
    for own in [true, false] {
        let (mut mem, scratch) = setup();
        let (mut out, files) = writer_of_v3(scratch);
        let small = file(&mut mem, 8192, 3, 0);
        let f = scattered(&mut mem, 4200);
        out.preserve(files, "s", 1, f, &mut mem).unwrap();
        out.preserve(files, "s", 2, small, &mut mem).unwrap();
        let (_frozen, b) = freeze(out, &mut mem, 0);
        let (_, blocks, mut ext) = array_of(&mem, &b, 1);
        let block = Range::new(blocks[0], blocks[0] + 4096);
        let b = if own {
            // The array's last data extent replaced by its own block.
            ext.pop();
            ext.push(block);
            ext.sort_unstable_by_key(|r| r.start);
            rewrite_array(&mut mem, &b, &ext)
        } else {
            // Object 2's inline footprint names the block too.
            let mut fp = inline_footprint(&b, 2);
            fp.push(block);
            let fp: Vec<crate::abi::luo::Extent> = merged(fp)
                .iter()
                .map(|r| crate::abi::luo::Extent {
                    start: r.start.into(),
                    pages: (r.len() / 4096).into(),
                })
                .collect();
            with_property(
                &b,
                "/luo/session-0/object-2",
                "kho,footprint",
                fp.as_bytes(),
            )
        };
        let done = finish_only(&mut mem, &b, |_| {});
        let dropped = if own { 1 } else { 2 };
        assert_eq!(done.lost.len(), 1, "{:?}", done.lost);
        let (s, tok, e) = &done.lost[0];
        assert_eq!((s.as_str(), *tok), ("s", dropped));
        assert!(
            matches!(
                e,
                LuoError::Footprint {
                    error: ClaimError::Twice { .. },
                    ..
                }
            ),
            "{e}"
        );
        assert!(done.ranges.iter().any(|r| r.covers(block)), "{block} kept");
        let carried = checked(&mut mem, done);
        assert_eq!(carried.len(), 1);
        assert_eq!(carried[0].token, 3 - dropped);
    }
}

/// Case 3: A footprint array must be summed, and its sum must hold: a stray
/// write after preserve is a checksum failure, an unsummed root a
/// refusal; either drops that object alone and frees its pages.
#[test]
fn an_unsummed_or_changed_footprint_array_is_refused() {
    for (unsummed, why) in [
        (true, "its array is not summed"),
        (false, "its array's checksum does not match"),
    ] {
        let (mut mem, scratch) = setup();
        let (mut out, files) = writer_of_v3(scratch);
        let f = scattered(&mut mem, 4200);
        out.preserve(files, "s", 1, f, &mut mem).unwrap();
        let (_frozen, b) = freeze(out, &mut mem, 0);
        let (mut fa, blocks, _) = array_of(&mem, &b, 1);
        let b = if unsummed {
            fa.root.flags = 0.into();
            fa.root.sum = 0.into();
            with_property(
                &b,
                "/luo/session-0/object-1",
                "kho,footprint-array",
                fa.as_bytes(),
            )
        } else {
            // A stray write: the first extent now starts a page later.
            mem.frame_mut(blocks[0]).unwrap()[1] ^= 0x10;
            b
        };
        let done = finish_only(&mut mem, &b, |_| {});
        assert!(done.carried.is_empty());
        assert_eq!(
            done.lost,
            [(
                "s".into(),
                1,
                LuoError::BadFootprint {
                    session: "s".into(),
                    token: 1,
                    family: "memfd".into(),
                    why,
                }
            )]
        );
    }
}

/// Case 4: A `kho-luo-v1` node carries nothing, even with a footprint array in
/// it: v1 has none.
#[test]
fn a_v1_node_carries_nothing() {
    let (mut mem, scratch) = setup();
    let (mut out, files) = writer_of_v3(scratch);
    let f = scattered(&mut mem, 4200);
    out.preserve(files, "s", 1, f, &mut mem).unwrap();
    let (_frozen, mut b) = freeze(out, &mut mem, 0);
    let at = b.windows(10).position(|w| w == b"kho-luo-v2").unwrap();
    b[at..at + 10].copy_from_slice(b"kho-luo-v1");
    crate::handoff::seal(&mut b).unwrap();
    assert!(b.windows(19).any(|w| w == b"kho,footprint-array"));
    let done = finish_only(&mut mem, &b, |_| {});
    assert!(done.carried.is_empty());
    assert!(
        matches!(&done.lost[..], [(_, 1, LuoError::NoHandler(_))]),
        "{:?}",
        done.lost
    );
}

/// The first kernel of the shared-state cases: a pool (in session
/// `pool`, opted out of carrying if `drop`) and a dependent that draws
/// page 2 of it (in session `deps`). Frozen; what preflight said for a
/// kernel that reads only the orchestrator's node, the blob and the
/// pool's pages.
fn pool_and_dependent(drop: bool) -> (HostMem, Scratch, Vec<Plan>, Vec<u8>, Vec<u64>) {
    let (mut mem, scratch) = setup();
    let log = std::rc::Rc::new(core::cell::RefCell::new(Vec::new()));
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    let pools = out.register(PoolHandler { log }).unwrap();
    let deps = out.register(Dep).unwrap();
    out.create_session("deps").unwrap();
    out.create_session("pool").unwrap();
    out.set_drop_unread("pool", drop).unwrap();
    let pages: Vec<u64> = (0..4).map(|_| mem.alloc_frames(0).unwrap()).collect();
    let own = mem.alloc_frames(0).unwrap();
    let pool = out
        .share(
            pools,
            "pool",
            1,
            Pool {
                pages: pages.clone(),
            },
        )
        .unwrap();
    out.preserve_with(deps, "deps", 5, (2u64, own), &pool, &mut mem)
        .unwrap();
    out.preserve_frames(own, 0).unwrap();
    let plan = out.preflight(&ReadList::parse(b"kho-luo-v2\0").unwrap());
    let (_frozen, b) = freeze(out, &mut mem, 0);
    (mem, scratch, plan, b, pages)
}

/// Case 5: A carried dependent is handed on with its shared state in the call
/// the docs show (`Outgoing::carry(done.carried, ..)`), in the order
/// finish lists them or any other, and read by a later kernel.
#[test]
fn a_carried_dependent_is_handed_on_in_any_order() {
    for reversed in [false, true] {
        let (mut mem, scratch, _, b, pages) = pool_and_dependent(false);
        let done = finish_only(&mut mem, &b, |_| {});
        assert!(done.lost.is_empty(), "{:?}", done.lost);
        let mut carried = checked(&mut mem, done);
        // Finish lists shared state before what depends on it.
        let order: Vec<&str> = carried.iter().map(|c| c.family.as_str()).collect();
        assert_eq!(order, ["pool", "dep"]);
        if reversed {
            carried.reverse();
        }
        let b2 = hand_on(&mut mem, &scratch, carried, 1);
        let log = std::rc::Rc::new(core::cell::RefCell::new(Vec::new()));
        let mut inc = boot(&mut mem, &b2).unwrap();
        inc.register(PoolHandler { log }).unwrap();
        let deps = inc.register(Dep).unwrap();
        let key = deps.key("deps", 5);
        assert_eq!(inc.info(&key).unwrap().origin.carried, 1);
        let mut inc = inc.restore(&mut mem);
        let (d, _) = inc.take(&key, &mut mem).unwrap();
        assert_eq!(d, (2, pages[2]));
    }
}

/// Case 6: Preflight and restore agree on a dependent whose shared state is in
/// a session that opts out of carrying: both say lost, and its pages
/// are freed, not stranded in a carried object nobody can hand on.
#[test]
fn a_dependent_of_dropped_shared_state_is_lost_as_preflight_says() {
    let (mut mem, _, plan, b, _) = pool_and_dependent(true);
    assert!(plan.iter().all(|p| p.outcome == Outcome::Lost), "{plan:?}");
    let done = finish_only(&mut mem, &b, |_| {});
    assert!(done.carried.is_empty(), "{:?}", done.carried);
    let lost: Vec<(&str, u64)> = done.lost.iter().map(|(s, t, _)| (s.as_str(), *t)).collect();
    assert_eq!(lost.len(), 2, "{:?}", done.lost);
    assert!(lost.contains(&("deps", 5)) && lost.contains(&("pool", 1)));
    let dep = done.lost.iter().find(|l| l.0 == "deps").unwrap();
    assert!(matches!(dep.2, LuoError::SharedUnread { .. }), "{}", dep.2);
}

/// Case 7 and 8: A key of one family never reaches an object of another
/// of the same Rust type (take, unpreserve); an object retrieved but not
/// taken is discarded at finish, reported, and its pages freed.
#[test]
fn keys_keep_to_their_family_and_finish_leaves_nothing_behind() {
    let (mut mem, scratch) = setup();
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    let a = out.register(numbers("a")).unwrap();
    let b = out.register(numbers("b")).unwrap();
    let fd = out.register(MemfdHandler::default()).unwrap();
    out.create_session("s").unwrap();
    let ka = out.preserve(a, "s", 1, 10, &mut mem).unwrap();
    assert_eq!(
        out.unpreserve(&b.key("s", 1), &mut mem),
        Err(LuoError::WrongFamily("b".into()))
    );
    let kb = out.preserve(b, "s", 2, 20, &mut mem).unwrap();
    let f = file(&mut mem, 100_000, 4, 0);
    let pages: Vec<Range> = f
        .extents()
        .iter()
        .map(|e| Range::new(e.phys, e.phys + e.pages() * 4096))
        .collect();
    out.preserve(fd, "s", 3, f, &mut mem).unwrap();
    let (_frozen, blob) = freeze(out, &mut mem, 0);
    let mut inc = boot(&mut mem, &blob).unwrap();
    let a = inc.register(numbers("a")).unwrap();
    let b = inc.register(numbers("b")).unwrap();
    let fd = inc.register(MemfdHandler::default()).unwrap();
    let mut inc = inc.restore(&mut mem);
    assert_eq!(
        inc.take(&b.key("s", 1), &mut mem),
        Err(LuoError::WrongFamily("b".into()))
    );
    assert_eq!(inc.take(&a.key("s", 1), &mut mem), Ok((10, "num-v1")));
    assert_eq!(
        inc.take(&ka, &mut mem),
        Err(LuoError::Taken {
            session: "s".into(),
            token: 1
        })
    );
    assert_eq!(inc.take(&kb, &mut mem), Ok((20, "num-v1")));
    // Retrieved, never taken.
    assert_eq!(
        inc.retrieve(&fd.key("s", 3), &mut mem).unwrap().1,
        "memfd-v2"
    );
    let done = inc.finish(&mut mem).unwrap();
    assert_eq!(done.lost, [("s".into(), 3, LuoError::NotTaken)]);
    for r in &pages {
        assert!(done.ranges.iter().any(|f| f.covers(*r)), "{r} not freed");
    }
}

/// Case 10: One canonical footprint: a record array page that lands
/// between two folios of a scattered file (a page freed just before the
/// preserve that lays the array out) touches both; every carrier joins
/// them, so the object survives any number of carries and arrives
/// bit-exact.
#[test]
fn a_footprint_stays_readable_through_any_number_of_carries() {
    let (mut mem, scratch) = setup();
    let (mut out, files) = writer_of_v3(scratch);
    let f = scattered(&mut mem, 4200);
    let want = contents(&f, &mem);
    let first = f.extents()[0].phys;
    // The page between the first two folios, given back before preserve,
    // which lays out the record array (first fit: there).
    let gap = first + 4096;
    mem.free_frames(gap, 0);
    out.preserve(files, "s", 1, f, &mut mem).unwrap();
    let reads = ReadList::parse(CARRIER).unwrap();
    let mut frozen = out.freeze(&mut mem, Freeze::NoLoss(&reads)).unwrap();
    let mut b = write(&mut frozen, &mut mem, 0);
    let fp = inline_footprint(&b, 1);
    assert!(
        fp.iter().any(|r| r.start == gap),
        "the record array did not land in the gap: {fp:x?}"
    );
    for hop in 1..=3 {
        let done = finish_only(&mut mem, &b, |inc| {
            inc.register(MemfdHandler::new(&[V1], &[V1])).unwrap();
        });
        assert!(done.lost.is_empty(), "hop {hop}: {:?}", done.lost);
        let carried = checked(&mut mem, done);
        // Canonical: the gap page joins the runs on both sides.
        let fp = carried[0].footprint();
        assert!(fp.windows(2).all(|w| w[0].end < w[1].start));
        assert!(fp.iter().any(|r| r.start == first && r.end > gap + 4096));
        b = hand_on(&mut mem, &scratch, carried, hop);
    }
    assert_eq!(read_file(&mut mem, &b, "s", 1), (want, first));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]
    /// Preflight is a promise: over random first kernels and chains of up
    /// to four carrying kernels with random reads, what preflight says
    /// of each object is what the next kernel does, an object carried
    /// arrives bit-exact where it is read, and every preserved page has
    /// one role at every hop (`testkit::chain`).
    #[test]
    fn preflight_is_a_promise(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
        crate::testkit::chain::run(&crate::testkit::chain::ChainSpec::from_bytes(&bytes));
    }
}

/// Chains the property test might not draw: every object carried by
/// every kernel before the last (no handler, or a version it lacks), in
/// both sessions, and a file whose footprint needs an array.
#[test]
fn chosen_chains_keep_their_promises() {
    use crate::testkit::chain::{ChainSpec, HopSpec, ObjectSpec, run};
    let obj = |session, folios, scattered| ObjectSpec {
        session,
        folios,
        scattered,
    };
    let hop = |reads, order, handler| HopSpec {
        reads,
        order,
        handler,
    };
    let chains = [
        // Written v3 only, read by v1-only and handler-less kernels.
        (
            1,
            false,
            vec![obj(0, 3, true), obj(1, 20, false)],
            vec![
                hop(4, 0, true),
                hop(0, 0, false),
                hop(4, 3, true),
                hop(6, 5, true),
            ],
        ),
        // Session 1 opts out: its object is lost at the first hop.
        (
            1,
            true,
            vec![obj(0, 2, false), obj(1, 2, false)],
            vec![hop(2, 0, true)],
        ),
        // Written v3, v2, v1; readers that prefer v1 over v3.
        (
            7,
            false,
            vec![obj(0, 5, true), obj(1, 9, true)],
            vec![hop(5, 5, true), hop(3, 2, true)],
        ),
        // A footprint array (4100 runs) carried twice.
        (
            1,
            false,
            vec![obj(0, 4100, true)],
            vec![hop(4, 0, true), hop(0, 0, false)],
        ),
    ];
    for (writes, drop_session, objects, hops) in chains {
        let r = run(&ChainSpec {
            writes,
            drop_session,
            objects,
            hops,
            order: vec![1, 0, 2],
        });
        assert!(r.read + r.lost > 0, "{r:?}");
    }
}

/// A blob written into a buffer too small says the exact size it needs,
/// however large (here a footprint of 3000 extents inline, about 48 KiB),
/// and nothing is kept: the same write at that size succeeds.
#[test]
fn write_says_the_size_the_blob_needs() {
    let (mut mem, scratch) = setup();
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    let fd = out
        .register(MemfdHandler::new(&[V3_TEST], &[V3_TEST]))
        .unwrap();
    out.create_session("s").unwrap();
    let f = scattered(&mut mem, 3000);
    out.preserve(fd, "s", 1, f, &mut mem).unwrap();
    let mut out = out.freeze(&mut mem, Freeze::AllowLoss).unwrap();
    let allocated = mem.allocated;
    let mut small = vec![0u8; 16 << 10];
    let e = out
        .write(&mut mem, &mut small, 0, Stamps::default())
        .unwrap_err();
    let need = e.needed().unwrap();
    assert!(need > 40 << 10, "{need}");
    assert_eq!(
        mem.allocated, allocated,
        "the chain kept after a failed write"
    );
    let mut buf = vec![0u8; need];
    let w = out.write(&mut mem, &mut buf, 0, Stamps::default()).unwrap();
    assert_eq!(w.len, need);
    let mut short = vec![0u8; need - 1];
    assert_eq!(
        out.write(&mut mem, &mut short, 0, Stamps::default())
            .unwrap_err()
            .needed(),
        Some(need)
    );
}

/// The host fake with a `map` that always fails: a platform without
/// virtual space for a footprint array.
struct NoMap(HostMem);

impl PhysMem for NoMap {
    fn frame(&self, phys: u64) -> Option<&crate::platform::Frame> {
        self.0.frame(phys)
    }
    fn frame_mut(&mut self, phys: u64) -> Option<&mut crate::platform::Frame> {
        self.0.frame_mut(phys)
    }
}

impl FrameAlloc for NoMap {
    fn alloc_frames(&mut self, order: u32) -> Option<u64> {
        self.0.alloc_frames(order)
    }
    fn free_frames(&mut self, phys: u64, order: u32) {
        self.0.free_frames(phys, order)
    }
    fn add_free(&mut self, range: Range) {
        self.0.add_free(range)
    }
}

impl crate::platform::MapFrames for NoMap {
    fn map(&mut self, _: &[u64]) -> Result<crate::platform::Mapping, crate::platform::MapError> {
        Err(crate::platform::MapError::NoSpace)
    }
    fn bytes(&self, m: &crate::platform::Mapping) -> &[u8] {
        self.0.bytes(m)
    }
    fn bytes_mut(&mut self, m: &crate::platform::Mapping) -> &mut [u8] {
        self.0.bytes_mut(m)
    }
    fn unmap(&mut self, m: crate::platform::Mapping) {
        self.0.unmap(m)
    }
}

/// Errors that name their cause: a preserve that fails because the
/// platform cannot map a footprint array says so (and gives the file back,
/// unpreserved); a take after a node that could not be read points at the
/// node, not at a missing session.
#[test]
fn errors_name_their_cause() {
    let (mem, scratch) = setup();
    let mut mem = NoMap(mem);
    let mut out = Outgoing::<NoMap>::new(scratch).unwrap();
    let files = out.register(MemfdHandler::default()).unwrap();
    out.create_session("s").unwrap();
    let f = scattered(&mut mem.0, 4200);
    let r = out.preserve(files, "s", 1, f, &mut mem).unwrap_err();
    assert!(
        matches!(r.error, LuoError::FootprintArray { runs: 4200, .. }),
        "{}",
        r.error
    );
    assert!(r.error.to_string().contains("MapFrames"), "{}", r.error);
    assert!(!r.object.is_preserved());
    assert_eq!(out.tracker().pages(), 0);

    // A node this kernel cannot read (an unknown version), then a take.
    let (mut mem, _, out) = first_kernel(&[V2, V1]);
    let (_frozen, mut b) = freeze(out, &mut mem, 0);
    let at = b.windows(10).position(|w| w == b"kho-luo-v2").unwrap();
    b[at..at + 10].copy_from_slice(b"kho-luo-v9");
    crate::handoff::seal(&mut b).unwrap();
    let mut inc = boot(&mut mem, &b).unwrap();
    let files = inc.register(MemfdHandler::default()).unwrap();
    assert!(inc.unread().is_some());
    let mut inc = inc.restore(&mut mem);
    let e = inc
        .take(&files.key("vm-1", 1), &mut mem)
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(&e, LuoError::NodeUnread(inner) if matches!(**inner, LuoError::NoReadableVersion { .. })),
        "{e}"
    );
}

/// A carried object given up on purpose: `Carried::discard` hands every
/// page of its footprint to the allocator as new free memory, once, and
/// the object is no longer handed on.
#[test]
fn a_carried_object_can_be_given_up() {
    let (mut mem, scratch) = setup();
    let (mut out, files) = writer_of_v3(scratch);
    let f = file(&mut mem, 200_000, 9, 0);
    out.preserve(files, "s", 7, f, &mut mem).unwrap();
    let (_frozen, b) = freeze(out, &mut mem, 0);
    let done = finish_only(&mut mem, &b, |_| {});
    let mut carried = checked(&mut mem, done);
    let c = carried.pop().unwrap();
    let fp: Vec<Range> = c.footprint().to_vec();
    let bytes: u64 = fp.iter().map(|r| r.len()).sum();
    assert!(bytes >= 200_000);
    let added = mem.added.len();
    assert_eq!(c.discard(&mut mem), bytes);
    assert_eq!(mem.added[added..], fp[..]);
    // Nothing is left to hand on.
    let b2 = hand_on(&mut mem, &scratch, carried, 1);
    let inc = boot(&mut mem, &b2).unwrap();
    assert_eq!(inc.objects().count(), 0);
}
