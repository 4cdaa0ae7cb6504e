//! Carrying keeps its promises: each way an object was lost, stranded or
//! given a second role on a path the demo never takes, as a test that
//! failed before its fix.

use super::*;
use crate::claims::ClaimError;
use crate::platform::FrameAlloc;
use crate::reserve::ReserveLog;
use crate::testkit::HandOver;
use crate::update::{Freeze, Incoming, Outgoing};

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

/// A kernel over `b` whose handlers `reg` registers: retrieves nothing,
/// finishes.
fn finish_only(
    mem: &mut HostMem,
    t: &Tracker,
    scratch: &Scratch,
    b: &[u8],
    reg: impl FnOnce(&mut Luo<HostMem>),
) -> Finished {
    let h = Handoff::parse(b, &[RAM]).unwrap();
    let mut luo = Luo::<HostMem>::new();
    reg(&mut luo);
    luo.incoming(&h).unwrap();
    let claims = mem.hand_over(t).unwrap();
    luo.finish(mem, claims, &[RAM], scratch.areas()).unwrap()
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

/// The next handoff from a kernel that only carries `carried` (through
/// the front door, in the order given): its tracker and blob.
fn hand_on(
    mem: &mut HostMem,
    scratch: &Scratch,
    carried: Vec<Carried>,
    hop: u32,
) -> (Tracker, Vec<u8>) {
    let mut out = Outgoing::<HostMem>::new(*scratch).unwrap();
    let refused = out.carry(carried, mem);
    assert!(refused.is_empty(), "{:?}", refused[0].error);
    let mut out = out.freeze(mem, Freeze::AllowLoss).unwrap();
    let mut buf = vec![0u8; 256 << 10];
    let n = out
        .write(mem, &mut buf, hop, Stamps::default())
        .unwrap()
        .len;
    buf.truncate(n);
    let t = core::mem::replace(out.tracker_mut(), Tracker::new(scratch.areas()).unwrap());
    (t, buf)
}

/// Reads memfd object `token` of `s` from `b` with a `memfd-v3` reader:
/// its contents and first folio.
fn read_file(
    mem: &mut HostMem,
    t: &Tracker,
    scratch: &Scratch,
    b: &[u8],
    s: &str,
    token: u64,
) -> (Vec<u8>, u64) {
    let h = Handoff::parse(b, &[RAM]).unwrap();
    let mut last = Luo::<HostMem>::new();
    last.register(MemfdHandler::new(&[V3_TEST], &[V3_TEST]))
        .unwrap();
    last.incoming(&h).unwrap();
    let mut claims = mem.hand_over(t).unwrap();
    let mut ctx = RestoreCtx {
        ram: &[RAM],
        scratch: scratch.areas(),
        claims: &mut claims,
    };
    let (g, v) = last
        .retrieve::<Memfd>(s, token, FAMILY_MEMFD, mem, &mut ctx)
        .unwrap();
    assert_eq!(v, "memfd-v3");
    (contents(g, mem), g.extents()[0].phys)
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

/// A first kernel's orchestrator that writes (and reads) `memfd-v3`
/// only, with an empty session `s`.
fn writer_of_v3() -> Luo<HostMem> {
    let mut luo = Luo::<HostMem>::new();
    luo.register(MemfdHandler::new(&[V3_TEST], &[V3_TEST]))
        .unwrap();
    luo.create_session("s").unwrap();
    luo
}

/// Case 1: A kernel that calls finish without a retrieve, with no handler for
/// the family or none at all, carries every object preflight said it
/// would; a later kernel reads it bit-exact.
#[test]
fn a_kernel_that_retrieves_nothing_still_carries() {
    for handlers in [false, true] {
        let (mut mem, mut t, scratch) = setup();
        let mut luo = writer_of_v3();
        let f = file(&mut mem, 200_000, 9, 0);
        let want = contents(&f, &mem);
        let first = f.extents()[0].phys;
        luo.preserve("s", 7, FAMILY_MEMFD, f, &mut mem, &mut t)
            .unwrap();
        let reads = ReadList::parse(CARRIER).unwrap();
        assert_eq!(luo.preflight(&reads)[0].outcome, Outcome::Carried);
        luo.freeze(&mut mem, &mut t, Some(&reads), false).unwrap();
        let b = blob_at_hop(&luo, &mut mem, &t, &scratch, 0);
        let done = finish_only(&mut mem, &t, &scratch, &b, |l| {
            if handlers {
                l.register(MemfdHandler::new(&[V1], &[V1])).unwrap();
            }
        });
        assert!(done.lost.is_empty(), "{:?}", done.lost);
        assert_eq!(done.carried.len(), 1);
        let carried = checked(&mut mem, done);
        let (t2, b2) = hand_on(&mut mem, &scratch, carried, 1);
        assert_eq!(
            read_file(&mut mem, &t2, &scratch, &b2, "s", 7),
            (want, first)
        );
    }
}

/// The footprint array's blocks and root of the object at (0, 0).
fn array_of(luo: &Luo<HostMem>) -> (Vec<u64>, crate::vmalloc::VmallocRoot) {
    let (v, root) = luo.sessions[0].objects[0].fp_array.as_ref().unwrap();
    (v.blocks().to_vec(), *root)
}

/// Writes `extents` into the footprint array of the object at (0, 0) and
/// sums it again, as a writer that made them would.
fn rewrite_array(luo: &mut Luo<HostMem>, mem: &mut HostMem, extents: Vec<Range>) {
    let o = &mut luo.sessions[0].objects[0];
    let (v, root) = o.fp_array.as_mut().unwrap();
    let mut bytes = vec![0u8; v.blocks().len() * 4096];
    for (r, out) in extents.iter().zip(bytes.chunks_exact_mut(16)) {
        out[..8].copy_from_slice(&r.start.to_le_bytes());
        out[8..].copy_from_slice(&(r.len() / 4096).to_le_bytes());
    }
    for (&b, page) in v.blocks().iter().zip(bytes.chunks_exact(4096)) {
        mem.frame_mut(b).unwrap().copy_from_slice(page);
    }
    root.sum = crate::csum::sum64(&bytes).into();
    o.footprint = extents;
}

/// Case 2: A footprint array's own blocks are metadata until finish: an array
/// that lists its own block, or another object's footprint that names
/// it, is refused (that object dropped), and the block is freed, never
/// carried as data.
#[test]
fn a_footprint_arrays_blocks_are_never_data() {
    for own in [true, false] {
        let (mut mem, mut t, scratch) = setup();
        let mut luo = writer_of_v3();
        let small = file(&mut mem, 8192, 3, 0);
        let f = scattered(&mut mem, 4200);
        luo.preserve("s", 1, FAMILY_MEMFD, f, &mut mem, &mut t)
            .unwrap();
        luo.preserve("s", 2, FAMILY_MEMFD, small, &mut mem, &mut t)
            .unwrap();
        let (blocks, _) = array_of(&luo);
        let block = Range::new(blocks[0], blocks[0] + 4096);
        if own {
            // The array's last data extent replaced by its own block.
            let mut ext = luo.sessions[0].objects[0].footprint.clone();
            ext.pop();
            ext.push(block);
            ext.sort_unstable_by_key(|r| r.start);
            rewrite_array(&mut luo, &mut mem, ext);
        } else {
            let o = &mut luo.sessions[0].objects[1];
            o.footprint.push(block);
            o.footprint = merged(core::mem::take(&mut o.footprint));
        }
        luo.freeze(&mut mem, &mut t, None, false).unwrap();
        let b = blob_at_hop(&luo, &mut mem, &t, &scratch, 0);
        let done = finish_only(&mut mem, &t, &scratch, &b, |_| {});
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
        let (mut mem, mut t, scratch) = setup();
        let mut luo = writer_of_v3();
        let f = scattered(&mut mem, 4200);
        luo.preserve("s", 1, FAMILY_MEMFD, f, &mut mem, &mut t)
            .unwrap();
        let (blocks, _) = array_of(&luo);
        if unsummed {
            let root = &mut luo.sessions[0].objects[0].fp_array.as_mut().unwrap().1;
            root.flags = 0.into();
            root.sum = 0.into();
        } else {
            // A stray write: the first extent now starts a page later.
            mem.frame_mut(blocks[0]).unwrap()[1] ^= 0x10;
        }
        luo.freeze(&mut mem, &mut t, None, false).unwrap();
        let b = blob_at_hop(&luo, &mut mem, &t, &scratch, 0);
        let done = finish_only(&mut mem, &t, &scratch, &b, |_| {});
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
    let (mut mem, mut t, scratch) = setup();
    let mut luo = writer_of_v3();
    let f = scattered(&mut mem, 4200);
    luo.preserve("s", 1, FAMILY_MEMFD, f, &mut mem, &mut t)
        .unwrap();
    luo.freeze(&mut mem, &mut t, None, false).unwrap();
    let mut b = blob_at_hop(&luo, &mut mem, &t, &scratch, 0);
    let at = b.windows(10).position(|w| w == b"kho-luo-v2").unwrap();
    b[at..at + 10].copy_from_slice(b"kho-luo-v1");
    crate::handoff::seal(&mut b).unwrap();
    assert!(b.windows(19).any(|w| w == b"kho,footprint-array"));
    let done = finish_only(&mut mem, &t, &scratch, &b, |_| {});
    assert!(done.carried.is_empty());
    assert!(
        matches!(&done.lost[..], [(_, 1, LuoError::NoHandler(_))]),
        "{:?}",
        done.lost
    );
}

/// The first kernel of the shared-state cases: a pool (in session
/// `pool`, opted out of carrying if `drop`) and a dependent that draws
/// page 2 of it (in session `deps`). Frozen; the blob.
fn pool_and_dependent(drop: bool) -> (HostMem, Tracker, Scratch, Luo<HostMem>, Vec<u8>, Vec<u64>) {
    let (mut mem, mut t, scratch) = setup();
    let log = std::rc::Rc::new(core::cell::RefCell::new(Vec::new()));
    let mut luo = Luo::<HostMem>::new();
    luo.register(PoolHandler { log }).unwrap();
    luo.register(Dep).unwrap();
    luo.create_session("deps").unwrap();
    luo.create_session("pool").unwrap();
    luo.set_drop_unread("pool", drop).unwrap();
    let pages: Vec<u64> = (0..4).map(|_| mem.alloc_frames(0).unwrap()).collect();
    let own = mem.alloc_frames(0).unwrap();
    luo.share(
        "pool",
        1,
        "pool",
        Pool {
            pages: pages.clone(),
        },
    )
    .unwrap();
    luo.preserve_with("deps", 5, "dep", (2u64, own), ("pool", 1), &mut mem, &mut t)
        .unwrap();
    t.preserve(own, 0).unwrap();
    luo.freeze(&mut mem, &mut t, None, false).unwrap();
    let b = blob(&luo, &mut mem, &t, &scratch);
    (mem, t, scratch, luo, b, pages)
}

/// Case 5: A carried dependent is handed on with its shared state in the call
/// the docs show (`Outgoing::carry(done.carried, ..)`), in the order
/// finish lists them or any other, and read by a later kernel.
#[test]
fn a_carried_dependent_is_handed_on_in_any_order() {
    for reversed in [false, true] {
        let (mut mem, t, scratch, _, b, pages) = pool_and_dependent(false);
        let done = finish_only(&mut mem, &t, &scratch, &b, |_| {});
        assert!(done.lost.is_empty(), "{:?}", done.lost);
        let mut carried = checked(&mut mem, done);
        // Finish lists shared state before what depends on it.
        let order: Vec<&str> = carried.iter().map(|c| c.family.as_str()).collect();
        assert_eq!(order, ["pool", "dep"]);
        if reversed {
            carried.reverse();
        }
        let (t2, b2) = hand_on(&mut mem, &scratch, carried, 1);
        let h = Handoff::parse(&b2, &[RAM]).unwrap();
        let log = std::rc::Rc::new(core::cell::RefCell::new(Vec::new()));
        let mut last = Luo::<HostMem>::new();
        last.register(PoolHandler { log }).unwrap();
        last.register(Dep).unwrap();
        last.incoming(&h).unwrap();
        assert_eq!(last.origin("deps", 5).unwrap().carried, 1);
        let mut claims = mem.hand_over(&t2).unwrap();
        let mut ctx = RestoreCtx {
            ram: &[RAM],
            scratch: scratch.areas(),
            claims: &mut claims,
        };
        let (d, _) = last
            .retrieve::<(u64, u64)>("deps", 5, "dep", &mut mem, &mut ctx)
            .unwrap();
        assert_eq!(*d, (2, pages[2]));
    }
}

/// Case 6: Preflight and restore agree on a dependent whose shared state is in
/// a session that opts out of carrying: both say lost, and its pages
/// are freed, not stranded in a carried object nobody can hand on.
#[test]
fn a_dependent_of_dropped_shared_state_is_lost_as_preflight_says() {
    let (mut mem, t, scratch, luo, b, _) = pool_and_dependent(true);
    let reads = ReadList::parse(b"kho-luo-v2\0").unwrap();
    let plan = luo.preflight(&reads);
    assert!(plan.iter().all(|p| p.outcome == Outcome::Lost), "{plan:?}");
    let done = finish_only(&mut mem, &t, &scratch, &b, |_| {});
    assert!(done.carried.is_empty(), "{:?}", done.carried);
    let lost: Vec<(&str, u64)> = done.lost.iter().map(|(s, t, _)| (s.as_str(), *t)).collect();
    assert_eq!(lost.len(), 2, "{:?}", done.lost);
    assert!(lost.contains(&("deps", 5)) && lost.contains(&("pool", 1)));
    let dep = done.lost.iter().find(|l| l.0 == "deps").unwrap();
    assert!(matches!(dep.2, LuoError::SharedUnread { .. }), "{}", dep.2);
}

/// Numbers under a family name of its choosing: two families whose
/// objects are the same Rust type.
fn numbers(family: &'static str) -> Numbers {
    let v = Version::new("num-v1");
    Numbers {
        family,
        writes: vec![v],
        reads: vec![v],
        required: 0,
        prepared: 0,
    }
}

/// Places `blob` in frames of `mem` (as a kexec loader would) and boots
/// the front door's next kernel from it.
fn incoming(mem: &mut HostMem, blob: &[u8]) -> Incoming<HostMem> {
    let order = blob
        .len()
        .div_ceil(4096)
        .next_power_of_two()
        .trailing_zeros();
    let at = mem.alloc_frames(order).unwrap();
    assert!(mem.write_bytes(at, blob));
    let place = Range::new(at, at + blob.len() as u64);
    let mut log = ReserveLog::new();
    Incoming::new(&*mem, blob, place, &[RAM], &mut log).unwrap()
}

/// Case 7 and 8: Through the front door: a key of one family never reaches an
/// object of another of the same Rust type (take, unpreserve); an object
/// retrieved but not taken is discarded at finish, reported, and its
/// pages freed.
#[test]
fn keys_keep_to_their_family_and_finish_leaves_nothing_behind() {
    let (mut mem, _, scratch) = setup();
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
    let kf = out.preserve(fd, "s", 3, f, &mut mem).unwrap();
    let mut out = out.freeze(&mut mem, Freeze::AllowLoss).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let n = out
        .write(&mut mem, &mut buf, 0, Stamps::default())
        .unwrap()
        .len;
    let mut inc = incoming(&mut mem, &buf[..n]);
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
        Err(LuoError::State("the object was taken"))
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
    let _ = kf;
}

/// Case 10: One canonical footprint: a record array page that lands between
/// two folios of a scattered file (freed after preserve, taken at
/// freeze) touches both; every carrier joins them, so the object
/// survives any number of carries and arrives bit-exact.
#[test]
fn a_footprint_stays_readable_through_any_number_of_carries() {
    let (mut mem, mut t, scratch) = setup();
    let mut luo = writer_of_v3();
    let f = scattered(&mut mem, 4200);
    let want = contents(&f, &mem);
    let first = f.extents()[0].phys;
    luo.preserve("s", 1, FAMILY_MEMFD, f, &mut mem, &mut t)
        .unwrap();
    // The page between the first two folios, given back after preserve.
    let gap = first + 4096;
    mem.free_frames(gap, 0);
    let reads = ReadList::parse(CARRIER).unwrap();
    luo.freeze(&mut mem, &mut t, Some(&reads), false).unwrap();
    match &luo.sessions[0].objects[0].held {
        Held::Live(_, Some(prep)) => assert!(
            prep.footprint.iter().any(|r| r.start == gap),
            "the record array did not land in the gap: {:x?}",
            prep.footprint
        ),
        _ => unreachable!(),
    }
    let mut b = blob_at_hop(&luo, &mut mem, &t, &scratch, 0);
    for hop in 1..=3 {
        let done = finish_only(&mut mem, &t, &scratch, &b, |l| {
            l.register(MemfdHandler::new(&[V1], &[V1])).unwrap();
        });
        assert!(done.lost.is_empty(), "hop {hop}: {:?}", done.lost);
        let carried = checked(&mut mem, done);
        // Canonical: the gap page joins the runs on both sides.
        let fp = carried[0].footprint();
        assert!(fp.windows(2).all(|w| w[0].end < w[1].start));
        assert!(fp.iter().any(|r| r.start == first && r.end > gap + 4096));
        (t, b) = hand_on(&mut mem, &scratch, carried, hop);
    }
    assert_eq!(read_file(&mut mem, &t, &scratch, &b, "s", 1), (want, first));
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
    let (mut mem, _, scratch) = setup();
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
    let (mem, mut t, scratch) = setup();
    let mut mem = NoMap(mem);
    let mut luo = Luo::<NoMap>::new();
    luo.register(MemfdHandler::default()).unwrap();
    luo.create_session("s").unwrap();
    let f = scattered(&mut mem.0, 4200);
    let r = luo
        .preserve("s", 1, FAMILY_MEMFD, f, &mut mem, &mut t)
        .unwrap_err();
    assert!(
        matches!(r.error, LuoError::FootprintArray { runs: 4200, .. }),
        "{}",
        r.error
    );
    assert!(r.error.to_string().contains("MapFrames"), "{}", r.error);
    assert!(!r.object.is_preserved());
    assert_eq!(t.pages(), 0);

    // A node this kernel cannot read (an unknown version), then a take.
    let (mut mem, t, scratch2, _, mut b) = first_kernel(&[V2, V1]);
    let at = b.windows(10).position(|w| w == b"kho-luo-v2").unwrap();
    b[at..at + 10].copy_from_slice(b"kho-luo-v9");
    crate::handoff::seal(&mut b).unwrap();
    let h = Handoff::parse(&b, &[RAM]).unwrap();
    let mut next = Luo::<HostMem>::new();
    next.register(MemfdHandler::default()).unwrap();
    assert!(next.incoming(&h).is_err());
    let mut claims = mem.hand_over(&t).unwrap();
    let mut ctx = RestoreCtx {
        ram: &[RAM],
        scratch: scratch2.areas(),
        claims: &mut claims,
    };
    let e = next
        .retrieve::<Memfd>("vm-1", 1, FAMILY_MEMFD, &mut mem, &mut ctx)
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(&e, LuoError::NodeUnread(inner) if matches!(**inner, LuoError::NoReadableVersion { .. })),
        "{e}"
    );
    let _ = scratch;
}

/// A carried object given up on purpose: `Carried::discard` hands every
/// page of its footprint to the allocator as new free memory, once, and
/// the object is no longer handed on.
#[test]
fn a_carried_object_can_be_given_up() {
    let (mut mem, mut t, scratch) = setup();
    let mut luo = writer_of_v3();
    let f = file(&mut mem, 200_000, 9, 0);
    luo.preserve("s", 7, FAMILY_MEMFD, f, &mut mem, &mut t)
        .unwrap();
    luo.freeze(&mut mem, &mut t, None, false).unwrap();
    let b = blob_at_hop(&luo, &mut mem, &t, &scratch, 0);
    let done = finish_only(&mut mem, &t, &scratch, &b, |_| {});
    let mut carried = checked(&mut mem, done);
    let c = carried.pop().unwrap();
    let fp: Vec<Range> = c.footprint().to_vec();
    let bytes: u64 = fp.iter().map(|r| r.len()).sum();
    assert!(bytes >= 200_000);
    let added = mem.added.len();
    assert_eq!(c.discard(&mut mem), bytes);
    assert_eq!(mem.added[added..], fp[..]);
    // Nothing is left to hand on.
    let (_, b2) = hand_on(&mut mem, &scratch, carried, 1);
    let h = Handoff::parse(&b2, &[RAM]).unwrap();
    let mut next = Luo::<HostMem>::new();
    next.incoming(&h).unwrap();
    assert_eq!(next.objects().count(), 0);
}
