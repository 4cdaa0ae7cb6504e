//! The orchestrator on the host, driven through the front door a kernel
//! uses (`Outgoing`, `Frozen`, `Incoming`, `Restored`): sessions and their
//! errors, versions picked per object, unknown versions, preflight, failed
//! freezes, cancel, feature bits, and finish giving back everything nobody
//! adopted. Only the blobs these tests damage are built below the door.

use super::*;
use crate::Error;
use crate::abi::handoff::Stamps;
use crate::abi::luo::{LUO_V1, NODE};
use crate::claims::Claims;
use crate::fdt::WriteError;
use crate::handoff::{Handoff, HandoffWriter};
use crate::memfd::{Memfd, seal};
use crate::memfd::{MemfdHandler, V1, V2, V3_TEST};
use crate::platform::host::HostMem;
use crate::platform::{FrameAlloc, PhysMem};
use crate::reserve::ReserveLog;
use crate::scratch::{Scratch, ScratchRecord};
use crate::tracker::Tracker;
use crate::tracker::chain;
use crate::update::{Freeze, Frozen, Incoming, Outgoing};
use alloc::vec;
use zerocopy::{FromBytes, IntoBytes};

const RAM: Range = Range::new(0x10_0000, 0x4000_0000);
const SCRATCH: Range = Range::new(0x20_0000, 0x420_0000);

fn setup() -> (HostMem, Scratch) {
    let mut mem = HostMem::new(&[RAM], Range::new(0x1000_0000, 0x4000_0000));
    let scratch = Scratch::from_records(
        [ScratchRecord {
            start: SCRATCH.start.into(),
            size: SCRATCH.len().into(),
        }]
        .as_bytes(),
        &[RAM],
    )
    .unwrap();
    mem.avoid(SCRATCH);
    (mem, scratch)
}

fn file(mem: &mut HostMem, len: usize, seed: u8, seals: u32) -> Memfd {
    let mut f = Memfd::new(true);
    f.write(mem, 0, &vec![seed; len]).unwrap();
    f.add_seals(crate::memfd::Seals::from_bits_retain(seals))
        .unwrap();
    f
}

/// The blob of `frozen`, written at `hop`, as bytes.
fn write(frozen: &mut Frozen<HostMem>, mem: &mut HostMem, hop: u32) -> Vec<u8> {
    let mut buf = vec![0u8; 256 << 10];
    let n = frozen
        .write(mem, &mut buf, hop, Stamps::default())
        .unwrap()
        .len;
    buf.truncate(n);
    buf
}

/// Freezes `out` (whatever the next kernel reads) and writes its blob at
/// `hop`.
fn freeze(out: Outgoing<HostMem>, mem: &mut HostMem, hop: u32) -> (Frozen<HostMem>, Vec<u8>) {
    let mut frozen = out.freeze(mem, Freeze::AllowLoss).unwrap();
    let b = write(&mut frozen, mem, hop);
    (frozen, b)
}

/// The next kernel: places `blob` in frames of `mem` and makes the
/// incoming side from it, as a kernel does at boot.
fn boot(mem: &mut HostMem, blob: &[u8]) -> Result<Incoming<HostMem>, Error> {
    let order = blob
        .len()
        .div_ceil(4096)
        .next_power_of_two()
        .trailing_zeros();
    let at = mem.alloc_frames(order).unwrap();
    assert!(mem.write_bytes(at, blob));
    let place = Range::new(at, at + blob.len() as u64);
    Incoming::new(&*mem, blob, place, &[RAM], &mut ReserveLog::new())
}

/// An empty tracker chain in `mem`, for blobs built by hand.
fn empty_chain(mem: &mut HostMem, scratch: &Scratch) -> chain::TrackerRoot {
    chain::write(&Tracker::new(scratch.areas()).unwrap(), mem).unwrap()
}

/// A first kernel with two sessions: `vm-1` holds a plain and a sealed
/// file, `vm-2` a plain one; not frozen yet.
fn first_kernel(writes: &[Version]) -> (HostMem, Scratch, Outgoing<HostMem>) {
    let (mut mem, scratch) = setup();
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    let files = out.register(MemfdHandler::new(writes, &[V2, V1])).unwrap();
    out.create_session("vm-1").unwrap();
    out.create_session("vm-2").unwrap();
    for (s, tok, len, seed, seals) in [
        ("vm-1", 1, 300_000, 1, 0),
        ("vm-1", 2, 70_000, 2, seal::WRITE.bits()),
        ("vm-2", 1, 3 << 20, 3, 0),
    ] {
        let f = file(&mut mem, len, seed, seals);
        out.preserve(files, s, tok, f, &mut mem).unwrap();
    }
    (mem, scratch, out)
}

fn contents(f: &Memfd, mem: &HostMem) -> Vec<u8> {
    let mut b = vec![0; f.size() as usize];
    f.read(mem, 0, &mut b);
    b
}

#[test]
fn sessions_refuse_duplicates_and_unknowns() {
    let (mut mem, scratch) = setup();
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    let files = out.register(MemfdHandler::default()).unwrap();
    assert_eq!(
        out.register(MemfdHandler::default()).map(|_| ()),
        Err(LuoError::DuplicateFamily("memfd".into()))
    );
    out.create_session("s").unwrap();
    assert_eq!(
        out.create_session("s"),
        Err(LuoError::DuplicateSession("s".into()))
    );
    let f = file(&mut mem, 100, 1, 0);
    let key = out.preserve(files, "s", 7, f, &mut mem).unwrap();
    let again = file(&mut mem, 100, 1, 0);
    let r = out.preserve(files, "s", 7, again, &mut mem).unwrap_err();
    assert_eq!(
        r.error,
        LuoError::DuplicateToken {
            session: "s".into(),
            token: 7
        }
    );
    // The refused object comes back whole, and is not preserved.
    assert!(!r.object.is_preserved());
    let r = out
        .preserve(files, "nope", 1, r.object, &mut mem)
        .unwrap_err();
    assert_eq!(r.error, LuoError::NoSession("nope".into()));
    r.object.free(&mut mem);
    assert!(matches!(
        out.unpreserve(&files.key("s", 9), &mut mem),
        Err(LuoError::NoToken { token: 9, .. })
    ));
    // Unpreserve gives the object back unpreserved: its folio and its
    // memfd-v1 record array (a block and its chain page, laid out at
    // preserve) are no longer preserved, and nothing else was. Cancel
    // the rest.
    assert_eq!(out.tracker().pages(), 3);
    let f = out.unpreserve(&key, &mut mem).unwrap();
    assert!(!f.is_preserved());
    assert_eq!(out.tracker().pages(), 0);
    let f2 = file(&mut mem, 10_000, 2, 0);
    out.preserve(files, "s", 8, f2, &mut mem).unwrap();
    let frozen = out.freeze(&mut mem, Freeze::AllowLoss).unwrap();
    assert!(frozen.tracker().pages() > 3, "payload arrays preserved");
    let mut out = frozen.thaw(&mut mem);
    let back = out.cancel(&mut mem);
    assert_eq!(back.len(), 1);
    assert_eq!(
        out.tracker().pages(),
        0,
        "cancel releases everything preserved"
    );
}

/// A `memfd-v2` record array is laid out when the file is preserved (its
/// folios cannot change after), as Linux's memfd does: freeze writes the
/// descriptor only, a refused or thawed freeze leaves the array, and
/// unpreserve or cancel gives it back.
#[test]
fn memfd_records_are_laid_out_at_preserve_and_freeze_adds_nothing() {
    let (mut mem, scratch) = setup();
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    let files = out.register(MemfdHandler::new(&[V2], &[V2])).unwrap();
    out.create_session("s").unwrap();
    // 600 folios, none adjacent to the next: 600 records, in an array.
    let mut f = Memfd::new(true);
    for i in 0..600u64 {
        f.write(&mut mem, i * 4096, &[i as u8 | 1]).unwrap();
        let _ = mem.alloc_frames(0);
    }
    let want = contents(&f, &mem);
    out.preserve(files, "s", 1, f, &mut mem).unwrap();
    let preserved = out.tracker().pages();
    assert!(
        preserved > 600,
        "the array's pages are preserved with the file"
    );
    let frozen = out.freeze(&mut mem, Freeze::AllowLoss).unwrap();
    assert_eq!(
        frozen.tracker().pages(),
        preserved,
        "freeze laid out nothing"
    );
    let out = frozen.thaw(&mut mem);
    assert_eq!(out.tracker().pages(), preserved, "thaw keeps the array");
    // The next kernel reads the file from the array laid out at preserve.
    let (_frozen, b) = freeze(out, &mut mem, 0);
    let mut inc = boot(&mut mem, &b).unwrap();
    let files = inc.register(MemfdHandler::default()).unwrap();
    let mut inc = inc.restore(&mut mem);
    let (g, v) = inc.take(&files.key("s", 1), &mut mem).unwrap();
    assert_eq!((v, contents(&g, &mem)), ("memfd-v2", want));
    // Unpreserved: the array goes back with the file's hold.
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    let files = out.register(MemfdHandler::new(&[V2], &[V2])).unwrap();
    out.create_session("s").unwrap();
    let (mut mem, _) = setup();
    let mut f = Memfd::new(true);
    for i in 0..600u64 {
        f.write(&mut mem, i * 4096, &[1]).unwrap();
        let _ = mem.alloc_frames(0);
    }
    let before = mem.free_bytes();
    let key = out.preserve(files, "s", 1, f, &mut mem).unwrap();
    assert!(mem.free_bytes() < before, "the array took frames");
    let f = out.unpreserve(&key, &mut mem).unwrap();
    assert_eq!(out.tracker().pages(), 0);
    assert_eq!(mem.free_bytes(), before, "the array's frames came back");
    // Cancel, after a freeze and a thaw, does the same.
    out.preserve(files, "s", 1, f, &mut mem).unwrap();
    let mut out = out
        .freeze(&mut mem, Freeze::AllowLoss)
        .unwrap()
        .thaw(&mut mem);
    for c in out.cancel(&mut mem) {
        c.into_object::<Memfd>().unwrap().free(&mut mem);
    }
    assert_eq!(out.tracker().pages(), 0);
    // Its folios came back too (freed above).
    assert_eq!(mem.free_bytes(), before + 600 * 4096, "and so does cancel");
}

#[test]
fn the_next_kernel_picks_the_best_common_version_per_object() {
    let (mut mem, _, out) = first_kernel(&[V2, V1]);
    // Preflight knows the sealed file has no v1 payload.
    // It is carried, not lost, by a kernel whose orchestrator carries.
    let old = ReadList::parse(b"memfd-v1\0kho-luo-v2\0\0\0").unwrap();
    let plan: Vec<Outcome> = out.preflight(&old).into_iter().map(|p| p.outcome).collect();
    let v1 = || Outcome::Read("memfd-v1".into());
    assert_eq!(plan, [v1(), Outcome::Carried, v1()]);
    // A kernel with no orchestrator that reads this node loses them all.
    let none = ReadList::parse(b"memfd-v1\0kho-luo-v1\0").unwrap();
    assert!(
        out.preflight(&none)
            .iter()
            .all(|p| p.outcome == Outcome::Lost)
    );
    let (_frozen, b) = freeze(out, &mut mem, 0);
    // A reader of v1 only.
    let mut inc = boot(&mut mem, &b).unwrap();
    let files = inc.register(MemfdHandler::new(&[V1], &[V1])).unwrap();
    let objs: Vec<(String, u64)> = inc.objects().map(|(s, t, _)| (s.into(), t)).collect();
    assert_eq!(
        objs,
        [("vm-1".into(), 1), ("vm-1".into(), 2), ("vm-2".into(), 1)]
    );
    let preserved: u64 = inc.preserved().map(|r| r.len()).sum();
    let free_before = mem.free_bytes();
    let mut inc = inc.restore(&mut mem);
    // In any order; the sealed file has no v1: this kernel carries it
    // (a typed answer naming its versions), and the others restore.
    let (f, v) = inc.retrieve(&files.key("vm-2", 1), &mut mem).unwrap();
    assert_eq!(v, "memfd-v1");
    assert_eq!(f.size(), 3 << 20);
    let e = inc.take(&files.key("vm-1", 2), &mut mem).unwrap_err();
    assert_eq!(
        e,
        LuoError::Carried {
            family: "memfd".into(),
            written: vec!["memfd-v2".into()],
        }
    );
    assert_eq!(
        e.to_string(),
        "luo: memfd written as [memfd-v2] is carried, not read, by this kernel"
    );
    // Idempotent: the same error, the same object.
    assert_eq!(
        inc.retrieve(&files.key("vm-1", 2), &mut mem).unwrap_err(),
        e
    );
    let p1 = inc.retrieve(&files.key("vm-1", 1), &mut mem).unwrap().0 as *const Memfd;
    let p2 = inc.retrieve(&files.key("vm-1", 1), &mut mem).unwrap().0 as *const Memfd;
    assert!(core::ptr::addr_eq(p1, p2));
    let (f1, v) = inc.take(&files.key("vm-1", 1), &mut mem).unwrap();
    assert_eq!(v, "memfd-v1");
    assert_eq!(contents(&f1, &mem), vec![1u8; 300_000]);
    // Taken is taken: a second take is refused, naming why.
    assert_eq!(
        inc.take(&files.key("vm-1", 1), &mut mem).map(|_| ()),
        Err(LuoError::Taken {
            session: "vm-1".into(),
            token: 1
        })
    );
    let (f3, _) = inc.take(&files.key("vm-2", 1), &mut mem).unwrap();
    // Finish frees every v2 payload's array of the files it read and the
    // v1 arrays (released after reading); the sealed file and its v2
    // array are carried, not freed: nothing preserved is lost.
    let adopted = [&f1, &f3].iter().map(|f| f.allocated_bytes()).sum::<u64>();
    let done = inc.finish(&mut mem).unwrap();
    assert!(done.lost.is_empty(), "{:?}", done.lost);
    assert_eq!(done.carried.len(), 1);
    let c = &done.carried[0];
    assert_eq!((c.session.as_str(), c.token), ("vm-1", 2));
    assert_eq!(c.versions().collect::<Vec<_>>(), ["memfd-v2"]);
    let carried: u64 = c.footprint().iter().map(|r| r.len()).sum();
    assert!(carried >= 70_000, "the file's pages at least");
    assert_eq!(done.freed + adopted + carried, preserved);
    assert_eq!(mem.free_bytes(), free_before + done.freed);
    for r in &done.ranges {
        assert!(c.footprint().iter().all(|f| !f.overlaps(r)), "{r} freed");
    }
}

#[test]
fn old_to_new_and_new_to_new() {
    // A writer of v1 only (an old kernel; it cannot write the sealed
    // file, so it is not preserved there) into a reader of v2 and v1.
    let (mut mem, scratch) = setup();
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    let files = out.register(MemfdHandler::new(&[V1], &[V1])).unwrap();
    out.create_session("s").unwrap();
    let f = file(&mut mem, 5000, 4, 0);
    out.preserve(files, "s", 1, f, &mut mem).unwrap();
    let sealed = file(&mut mem, 5000, 4, seal::GROW.bits());
    let sealed = out.preserve(files, "s", 2, sealed, &mut mem).unwrap();
    // The freeze fails on the sealed file (no version can carry it) and
    // unfreezes the first: its v1 array is released.
    let before = out.tracker().pages();
    let refused = out.freeze(&mut mem, Freeze::AllowLoss).unwrap_err();
    assert!(matches!(&refused.error, LuoError::NothingStored(f) if f == "memfd"));
    let mut out = *refused.outgoing;
    assert_eq!(out.tracker().pages(), before);
    out.unpreserve(&sealed, &mut mem).unwrap().free(&mut mem);
    let (_frozen, b) = freeze(out, &mut mem, 0);
    let mut inc = boot(&mut mem, &b).unwrap();
    let files = inc.register(MemfdHandler::default()).unwrap();
    let mut inc = inc.restore(&mut mem);
    let (_, v) = inc.take(&files.key("s", 1), &mut mem).unwrap();
    assert_eq!(v, "memfd-v1");
}

/// Where the platform lends frames, the tracker goes as it lies
/// (`kho-tracker-v4`): its pages settle as objects are preserved, freeze
/// writes only a root, a thaw and a second write go on from there, and
/// the next kernel restores every file from it, the tracker's pages kept
/// as metadata and freed at finish.
#[test]
fn a_lending_platform_hands_the_tracker_over_as_it_lies() {
    let (mut mem, scratch) = setup();
    mem.lend_frames();
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    let files = out.register(MemfdHandler::new(&[V2], &[V2])).unwrap();
    out.create_session("s").unwrap();
    for (tok, len) in [(1, 300_000), (2, 3 << 20)] {
        let f = file(&mut mem, len, tok as u8, 0);
        out.preserve(files, "s", tok, f, &mut mem).unwrap();
    }
    let lent = mem.allocated;
    let (frozen, _) = freeze(out, &mut mem, 0);
    // A thaw and another object: the tracker goes on where it stood.
    let mut out = frozen.thaw(&mut mem);
    let f = file(&mut mem, 9000, 3, 0);
    out.preserve(files, "s", 3, f, &mut mem).unwrap();
    let (mut frozen, _) = freeze(out, &mut mem, 0);
    let b = write(&mut frozen, &mut mem, 0);
    let h = crate::handoff::Handoff::parse(&b, &[RAM]).unwrap();
    assert!(
        matches!(h.tracker, crate::tracker::Root::InPlace(r) if r.leaf_pages.get() + r.chunk_pages.get() > 0),
        "{:?}",
        h.tracker
    );
    assert!(mem.allocated > lent);
    frozen.hand_back(&mut mem);
    let mut inc = boot(&mut mem, &b).unwrap();
    let files = inc.register(MemfdHandler::default()).unwrap();
    let mut inc = inc.restore(&mut mem);
    for (tok, len) in [(1, 300_000), (2, 3 << 20), (3, 9000)] {
        let (f, v) = inc.take(&files.key("s", tok), &mut mem).unwrap();
        assert_eq!(v, "memfd-v2");
        assert_eq!(contents(&f, &mem), vec![tok as u8; len]);
    }
}

#[test]
fn preflight_reports_and_refuses_what_would_be_lost() {
    let (mut mem, scratch) = setup();
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    let files = out
        .register(MemfdHandler::new(&[V3_TEST], &[V3_TEST]))
        .unwrap();
    out.create_session("s").unwrap();
    let f = file(&mut mem, 5000, 4, 0);
    out.preserve(files, "s", 1, f, &mut mem).unwrap();
    // Carried by a kernel that reads this orchestrator's node...
    let carrier = ReadList::parse(b"memfd-v1\0kho-luo-v2\0").unwrap();
    assert_eq!(out.preflight(&carrier)[0].outcome, Outcome::Carried);
    // ... unless its session opts out.
    out.set_drop_unread("s", true).unwrap();
    assert_eq!(out.preflight(&carrier)[0].outcome, Outcome::Lost);
    out.set_drop_unread("s", false).unwrap();
    let out = out
        .freeze(&mut mem, Freeze::NoLoss(&carrier))
        .unwrap()
        .thaw(&mut mem);
    // Lost by a kernel with no orchestrator node it reads.
    let old = ReadList::parse(b"memfd-v1\0kho-demo-v1\0\0\0").unwrap();
    let plan = out.preflight(&old);
    assert_eq!(plan[0].outcome, Outcome::Lost);
    // The one reason, named: the next image cannot read the node at all.
    let e = out.freeze(&mut mem, Freeze::NoLoss(&old)).unwrap_err();
    assert_eq!(e.error, LuoError::NextReadsNoNode { objects: 1 });
    assert!(
        e.error.to_string().contains("does not list kho-luo-v2"),
        "{e}"
    );
    // A node it reads, a version it does not, and the session opted out.
    let mut out = *e.outgoing;
    out.set_drop_unread("s", true).unwrap();
    let e = out.freeze(&mut mem, Freeze::NoLoss(&carrier)).unwrap_err();
    assert!(
        matches!(&e.error, LuoError::WouldLose(l) if l.len() == 1 && l[0].written == ["memfd-v3"])
    );
    let mut out = *e.outgoing;
    out.set_drop_unread("s", false).unwrap();
    // Forced: the kexec may go ahead; the object is written anyway, and the
    // next kernel gives it a typed error.
    let out = out
        .freeze(&mut mem, Freeze::AllowLoss)
        .unwrap()
        .thaw(&mut mem);
    let new = ReadList::parse(b"memfd-v3\0memfd-v2\0kho-luo-v2\0").unwrap();
    assert_eq!(out.preflight(&new)[0].version(), Some("memfd-v3"));
    assert!(ReadList::parse(b"memfd-v2+zz\0").is_none());
    let feat = ReadList::parse(b"x-v1+3\0").unwrap();
    assert!(feat.reads("x-v1", 0b10) && !feat.reads("x-v1", 0b100));
}

/// A handler of `u64` objects whose payload requires feature bits, and
/// fails to prepare the object 13.
struct Numbers {
    family: &'static str,
    writes: Vec<Version>,
    reads: Vec<Version>,
    required: u64,
    prepared: u32,
}

/// What [`Numbers`] refuses to prepare.
#[derive(Debug, PartialEq, Eq)]
struct Unlucky(u64);

impl core::fmt::Display for Unlucky {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} is unlucky", self.0)
    }
}

impl core::error::Error for Unlucky {}

impl Handler<HostMem> for Numbers {
    type Object = u64;
    type Undo = ();
    fn family(&self) -> &'static str {
        self.family
    }
    fn writes(&self) -> &[Version] {
        &self.writes
    }
    fn reads(&self) -> &[Version] {
        &self.reads
    }
    fn discard(&mut self, _: u64, _: &mut HostMem, _: &mut Claims) {}
    fn preserve(&mut self, _: &mut u64, _: &mut HostMem, _: &mut Tracker) -> Result<(), LuoError> {
        Ok(())
    }
    fn unpreserve(
        &mut self,
        _: &mut u64,
        _: &mut HostMem,
        _: &mut Tracker,
    ) -> Result<(), LuoError> {
        Ok(())
    }
    fn prepare(
        &mut self,
        n: &mut u64,
        _: &mut HostMem,
        _: &mut Tracker,
        out: &mut Prepared<()>,
    ) -> Result<(), LuoError> {
        if *n == 13 {
            return Err(LuoError::handler("num", Unlucky(*n)));
        }
        self.prepared += 1;
        for v in &self.writes {
            out.payloads.push(Payload {
                version: v.name,
                required: self.required,
                optional: 0x100,
                data: n.to_le_bytes().to_vec(),
            });
        }
        Ok(())
    }
    fn unprepare(&mut self, _: &mut u64, _: Prepared<()>, _: &mut HostMem, _: &mut Tracker) {
        self.prepared -= 1;
    }
    fn retrieve(
        &mut self,
        payload: &PayloadIn<'_>,
        _: &mut HostMem,
        _: &mut RestoreCtx<'_>,
    ) -> Result<u64, LuoError> {
        // The optional bits arrive as written (0x100 above).
        assert_eq!(payload.optional, 0x100);
        Ok(u64::from_le_bytes(
            payload
                .data
                .try_into()
                .map_err(|_| LuoError::BadNode("num"))?,
        ))
    }
}

/// A [`Numbers`] of `family` that writes and reads `num-v1` only.
fn numbers(family: &'static str) -> Numbers {
    Numbers {
        family,
        writes: vec![Version::new("num-v1")],
        reads: vec![Version::new("num-v1")],
        required: 0,
        prepared: 0,
    }
}

#[test]
fn a_failed_freeze_unfreezes_and_feature_bits_decide_readability() {
    let (mut mem, scratch) = setup();
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    let v = Version {
        name: "num-v1",
        features: 0b11,
    };
    let nums = out
        .register(Numbers {
            family: "num",
            writes: vec![v],
            reads: vec![v],
            required: 0b10,
            prepared: 0,
        })
        .unwrap();
    out.create_session("s").unwrap();
    for n in [1u64, 2, 13] {
        out.preserve(nums, "s", n, n, &mut mem).unwrap();
    }
    // The handler's own error arrives typed, and the outgoing side comes
    // back whole: every object live again, as before the freeze.
    let refused = out.freeze(&mut mem, Freeze::AllowLoss).unwrap_err();
    match &refused.error {
        LuoError::Handler { family, error } => {
            assert_eq!(*family, "num");
            assert_eq!(error.downcast_ref::<Unlucky>(), Some(&Unlucky(13)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(refused.error.kind(), crate::ErrorKind::Handler);
    let mut out = *refused.outgoing;
    assert_eq!(out.unpreserve(&nums.key("s", 13), &mut mem), Ok(13));
    let (_frozen, b) = freeze(out, &mut mem, 0);
    // A reader that understands bit 1: reads (optional bit 8 ignored).
    let saved = mem.clone();
    for (features, ok) in [(0b10, true), (0b01, false)] {
        let mut mem = saved.clone();
        let mut inc = boot(&mut mem, &b).unwrap();
        let r = Version {
            name: "num-v1",
            features,
        };
        let nums = inc
            .register(Numbers {
                family: "num",
                writes: vec![],
                reads: vec![r],
                required: 0,
                prepared: 0,
            })
            .unwrap();
        let mut inc = inc.restore(&mut mem);
        let got = inc.take(&nums.key("s", 2), &mut mem);
        assert_eq!(got.is_ok(), ok, "{features:b}");
        if let Err(e) = got {
            assert_eq!(
                e.to_string(),
                "luo: num written as [num-v1+2], this kernel reads [num-v1]: no common version"
            );
        }
    }
}

/// A blob whose `luo` node `body` writes (inside `session@0`).
fn luo_blob(
    mem: &mut HostMem,
    body: impl FnOnce(&mut crate::fdt::FdtWriter<'_>) -> Result<(), WriteError>,
) -> Vec<u8> {
    let (_, scratch) = setup();
    let root = empty_chain(mem, &scratch);
    let mut buf = vec![0u8; 8192];
    let mut w = HandoffWriter::new(&mut buf, 0, Stamps::default(), &root.into(), &scratch).unwrap();
    // `kho-luo-v1`: the session and object properties these tests break
    // are the ones both versions share.
    w.subsystem(NODE, &[LUO_V1], None, |w| {
        w.begin_node("session-0")?;
        w.property_string("kho,name", "s")?;
        body(w)?;
        w.end_node()
    })
    .unwrap();
    let n = w.finish().unwrap().len;
    buf.truncate(n);
    buf
}

fn object(
    w: &mut crate::fdt::FdtWriter<'_>,
    name: &str,
    token: u64,
    features: bool,
) -> Result<(), WriteError> {
    w.begin_node(name)?;
    w.property_struct(
        "kho,token",
        &zerocopy::byteorder::little_endian::U64::new(token),
    )?;
    w.property_string("kho,family", "memfd")?;
    w.begin_node("payload@0")?;
    w.property_string("kho,version", "memfd-v2")?;
    if features {
        w.property("kho,features", &[0u8; 16])?;
    }
    w.property("kho,data", &[1, 2, 3])?;
    w.end_node()?;
    w.end_node()
}

/// Why the next kernel could not read the `luo` node of `blob` (booted
/// into `mem`), if it could not: the blob itself is sound, so the boot
/// succeeds either way, and finish says the same.
fn unread(mem: &mut HostMem, blob: &[u8]) -> Result<(), LuoError> {
    let inc = boot(mem, blob).unwrap();
    let why = inc.unread().cloned();
    let done = inc.restore(mem).finish(mem).unwrap();
    assert_eq!(done.unread, why);
    why.map_or(Ok(()), Err)
}

#[test]
fn a_malformed_luo_node_is_refused() {
    let (mut mem, _) = setup();
    let mut check = |body: &dyn Fn(&mut crate::fdt::FdtWriter<'_>) -> Result<(), WriteError>| {
        let b = luo_blob(&mut mem, body);
        unread(&mut mem, &b)
    };
    assert_eq!(check(&|w| object(w, "object-5", 5, true)), Ok(()));
    assert_eq!(
        check(&|w| object(w, "object-5", 6, true)),
        Err(LuoError::BadNode("object name and token differ"))
    );
    assert_eq!(
        check(&|w| object(w, "object-5", 5, false)),
        Err(LuoError::BadNode("payload kho,features"))
    );
    // Two objects, one token (names differ only in the unit address's
    // spelling, which the FDT reader allows).
    assert_eq!(
        check(&|w| {
            object(w, "object-5", 5, true)?;
            object(w, "object-05", 5, true)
        }),
        Err(LuoError::BadNode("object name and token differ"))
    );
    // A node of an unknown luo version is a typed error naming both.
    let (_, scratch) = setup();
    let root = empty_chain(&mut mem, &scratch);
    let mut buf = vec![0u8; 8192];
    let mut w = HandoffWriter::new(&mut buf, 0, Stamps::default(), &root.into(), &scratch).unwrap();
    w.subsystem(NODE, &["kho-luo-v9"], None, |_| Ok(()))
        .unwrap();
    let n = w.finish().unwrap().len;
    assert!(matches!(
        unread(&mut mem, &buf[..n]),
        Err(LuoError::NoReadableVersion { written, .. }) if written == ["kho-luo-v9"]
    ));
}

/// The `kho-luo-v2` node with `memfd-v2` and `memfd-v1` payloads (inline
/// and array descriptors), footprints and origins, pinned byte for byte: a
/// layout change needs a new version string. The host fake allocates
/// deterministically, so the blob is the same on every run.
#[test]
fn golden_luo_blob_pins_the_node_and_the_memfd_descriptors() {
    let (mut mem, _, out) = first_kernel(&[V2, V1]);
    let (_frozen, b) = freeze(out, &mut mem, 0);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/luo-v2.dtb");
    if std::env::var_os("KHO_BLESS").is_some() {
        std::fs::write(&path, &b).unwrap();
    }
    let golden = std::fs::read(&path).expect("tests/golden/luo-v2.dtb (KHO_BLESS=1 writes it)");
    assert_eq!(
        b, golden,
        "the kho-luo-v2 or memfd layout changed: that needs a new version string"
    );
    // dtc reads it without a warning, when it is installed.
    if let Ok(out) = std::process::Command::new("dtc")
        .args(["-I", "dtb", "-O", "dts", "-o", "-"])
        .arg(&path)
        .output()
    {
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}",
            std::string::String::from_utf8_lossy(&out.stderr)
        );
    }
    // It still restores, and unknown tokens are typed errors.
    let mut inc = boot(&mut mem, &golden).unwrap();
    let files = inc.register(MemfdHandler::default()).unwrap();
    let mut inc = inc.restore(&mut mem);
    for (s, tok) in [("vm-1", 1), ("vm-1", 2), ("vm-2", 1)] {
        let (_, v) = inc.take(&files.key(s, tok), &mut mem).unwrap();
        assert_eq!(v, "memfd-v2");
    }
    assert_eq!(
        inc.take(&files.key("vm-2", 9), &mut mem).map(|_| ()),
        Err(LuoError::NoToken {
            session: "vm-2".into(),
            token: 9
        })
    );
    assert_eq!(
        inc.take(&files.key("vm-9", 1), &mut mem).map(|_| ()),
        Err(LuoError::NoSession("vm-9".into()))
    );
}

mod model {
    //! Sessions and tokens against a model: a map from session to tokens.
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::format;

    #[derive(Clone, Debug)]
    enum Op {
        Create(u8),
        Preserve(u8, u8),
        Unpreserve(u8, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..4).prop_map(Op::Create),
            (0u8..4, 0u8..6).prop_map(|(s, t)| Op::Preserve(s, t)),
            (0u8..4, 0u8..6).prop_map(|(s, t)| Op::Unpreserve(s, t)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// Every operation succeeds exactly when the model says so, with
        /// the model's error; then a freeze and a handover carry exactly
        /// the model's objects, and cancel leaves nothing preserved.
        #[test]
        fn sessions_and_tokens_match_a_model(ops in proptest::collection::vec(op(), 1..40)) {
            let (mut mem, scratch) = setup();
            let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
            let files = out.register(MemfdHandler::default()).unwrap();
            let mut model: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
            for o in &ops {
                match *o {
                    Op::Create(s) => {
                        let name = format!("s{s}");
                        let r = out.create_session(&name);
                        match model.entry(name.clone()) {
                            std::collections::btree_map::Entry::Occupied(_) => {
                                prop_assert_eq!(r, Err(LuoError::DuplicateSession(name)));
                            }
                            std::collections::btree_map::Entry::Vacant(e) => {
                                prop_assert_eq!(r, Ok(()));
                                e.insert(BTreeSet::new());
                            }
                        }
                    }
                    Op::Preserve(s, tok) => {
                        let name = format!("s{s}");
                        let f = file(&mut mem, 100 + usize::from(tok), tok, 0);
                        let r = out.preserve(files, &name, u64::from(tok), f, &mut mem);
                        match model.get_mut(&name) {
                            None => {
                                let e = r.unwrap_err();
                                prop_assert_eq!(e.error, LuoError::NoSession(name));
                                e.object.free(&mut mem);
                            }
                            Some(set) if set.contains(&u64::from(tok)) => {
                                let e = r.unwrap_err();
                                prop_assert_eq!(e.error, LuoError::DuplicateToken { session: name, token: u64::from(tok) });
                                e.object.free(&mut mem);
                            }
                            Some(set) => {
                                prop_assert!(r.is_ok());
                                set.insert(u64::from(tok));
                            }
                        }
                    }
                    Op::Unpreserve(s, tok) => {
                        let name = format!("s{s}");
                        let r = out.unpreserve(&files.key(&name, u64::from(tok)), &mut mem);
                        let had = model.get_mut(&name).map(|set| set.remove(&u64::from(tok)));
                        match had {
                            None => prop_assert_eq!(r.map(|_| ()), Err(LuoError::NoSession(name))),
                            Some(true) => {
                                r.unwrap().free(&mut mem);
                            }
                            Some(false) => {
                                let no_token = matches!(r, Err(LuoError::NoToken { .. }));
                                prop_assert!(no_token);
                            }
                        }
                    }
                }
            }
            let mut frozen = out.freeze(&mut mem, Freeze::AllowLoss).unwrap();
            let b = write(&mut frozen, &mut mem, 0);
            let mut next_mem = mem.clone();
            let mut out = frozen.thaw(&mut mem);
            let inc = boot(&mut next_mem, &b).unwrap();
            let got: BTreeSet<(String, u64)> = inc.objects().map(|(s, t, _)| (s.to_string(), t)).collect();
            let want: BTreeSet<(String, u64)> = model
                .iter()
                .flat_map(|(s, set)| set.iter().map(move |t| (s.clone(), *t)))
                .collect();
            prop_assert_eq!(got, want);
            for c in out.cancel(&mut mem) {
                c.into_object::<Memfd>().unwrap().free(&mut mem);
            }
            prop_assert_eq!(out.tracker().pages(), 0);
        }
    }
}

/// A property's new value, from its node's path, its name and old value.
type NewValue<'f> = &'f dyn Fn(&str, &str, &[u8]) -> Vec<u8>;
/// Nodes to add after a child (its path, the child, the writer).
type After<'f> = &'f dyn Fn(&str, crate::fdt::Node<'_>, &mut crate::fdt::FdtWriter<'_>);

/// The blob rewritten node by node, then resealed: `value` gives each
/// property's new value (path, name, old value), and `after` may add nodes
/// after each child (its path).
fn rewrite(blob: &[u8], value: NewValue<'_>, after: After<'_>) -> Vec<u8> {
    fn rec(
        w: &mut crate::fdt::FdtWriter<'_>,
        n: crate::fdt::Node<'_>,
        path: &str,
        value: NewValue<'_>,
        after: After<'_>,
    ) {
        w.begin_node(n.name()).unwrap();
        for p in n.properties() {
            w.property(p.name, &value(path, p.name, p.value)).unwrap();
        }
        for c in n.children() {
            let cp = alloc::format!("{path}/{}", c.name());
            rec(w, c, &cp, value, after);
            after(&cp, c, w);
        }
        w.end_node().unwrap();
    }
    let f = crate::fdt::Fdt::new(blob).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let mut w = crate::fdt::FdtWriter::new(&mut buf).unwrap();
    rec(&mut w, f.root(), "", value, after);
    let n = w.finish().unwrap();
    buf.truncate(n);
    crate::handoff::seal(&mut buf).unwrap();
    buf
}

/// The blob with property `name` of the node at `path` set to `new`,
/// resealed.
fn with_property(blob: &[u8], path: &str, name: &str, new: &[u8]) -> Vec<u8> {
    rewrite(
        blob,
        &|p, n, old| {
            if p == path && n == name {
                new.to_vec()
            } else {
                old.to_vec()
            }
        },
        &|_, _, _| {},
    )
}

/// Two plain files written as `memfd-v1` only (so each has a record
/// array), in one session; then `edit` changes the blob's payload bytes of
/// token 2 and the memory, given token 1's first array block. Resealed.
fn two_v1_files(edit: impl Fn(&mut HostMem, u64, &mut [u8])) -> (HostMem, Vec<u8>) {
    let (mut mem, scratch) = setup();
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    let files = out.register(MemfdHandler::new(&[V1], &[V1])).unwrap();
    out.create_session("s").unwrap();
    for (tok, len, seed) in [(1, 40_000, 1), (2, 50_000, 2)] {
        let f = file(&mut mem, len, seed, 0);
        out.preserve(files, "s", tok, f, &mut mem).unwrap();
    }
    let (_frozen, b) = freeze(out, &mut mem, 0);
    let h = Handoff::parse(&b, &[RAM]).unwrap();
    let desc = |tok: u64| -> Vec<u8> {
        let n = h
            .fdt()
            .find_node(&alloc::format!("/luo/session-0/object-{tok:x}/payload-0"))
            .unwrap();
        n.property("kho,data").unwrap().value.to_vec()
    };
    let array_block = |d: &[u8]| -> u64 {
        let hd = crate::memfd::v1::Header::read_from_bytes(d).unwrap();
        let page = mem.frame(hd.array.first.get()).unwrap();
        u64::from_le_bytes(page[32..40].try_into().unwrap())
    };
    let a_block = array_block(&desc(1));
    let mut d2 = desc(2);
    edit(&mut mem, a_block, &mut d2);
    // The blob again with token 2's payload replaced, resealed.
    let buf = with_property(&b, "/luo/session-0/object-2/payload-0", "kho,data", &d2);
    (mem, buf)
}

/// Token 2's first record now names token 1's record-array block, the
/// array resealed: file 2 would read file 1's records as its data.
fn adopt_anothers_array(mem: &mut HostMem, a_block: u64, d2: &mut [u8]) {
    let mut hd = crate::memfd::v1::Header::read_from_bytes(d2).unwrap();
    let chain = mem.frame(hd.array.first.get()).unwrap();
    let b_block = u64::from_le_bytes(chain[32..40].try_into().unwrap());
    let word = (a_block >> 12) | crate::memfd::flag::DIRTY | crate::memfd::flag::UPTODATE;
    let page = mem.frame_mut(b_block).unwrap();
    page[..8].copy_from_slice(&word.to_le_bytes());
    hd.array.sum = crate::csum::sum64(mem.frame(b_block).unwrap()).into();
    d2.copy_from_slice(hd.as_bytes());
}

#[test]
fn one_object_never_adopts_anothers_metadata_whatever_the_order() {
    // Before, file 1's array pages were released once it was read: file 2
    // then adopted one as a folio (its data was file 1's records), and in
    // the other order file 1 failed instead. Now the restore goes in blob
    // order and metadata keeps its role until finish: the same object is
    // refused in both orders, with the same freed total.
    let mut outcomes = Vec::new();
    for order in [[1u64, 2], [2, 1]] {
        let (mut mem, b) = two_v1_files(adopt_anothers_array);
        let mut inc = boot(&mut mem, &b).unwrap();
        let files = inc.register(MemfdHandler::new(&[V1], &[V1])).unwrap();
        let mut inc = inc.restore(&mut mem);
        let mut got = Vec::new();
        for tok in order {
            got.push((
                tok,
                inc.retrieve(&files.key("s", tok), &mut mem).map(|(_, v)| v),
            ));
        }
        got.sort_by_key(|(t, _)| *t);
        assert_eq!(got[0].1, Ok("memfd-v1"));
        let e = got[1].1.as_ref().unwrap_err();
        assert!(
            matches!(
                match e {
                    LuoError::Handler { error, .. } => error.downcast_ref(),
                    _ => None,
                },
                Some(crate::memfd::MemfdError::Claim {
                    why: crate::claims::ClaimError::Twice { .. },
                    ..
                })
            ),
            "{e:?}"
        );
        assert_eq!(e.kind(), crate::ErrorKind::Corrupt);
        let (f1, _) = inc.take(&files.key("s", 1), &mut mem).unwrap();
        let done = inc.finish(&mut mem).unwrap();
        assert_eq!(done.lost.len(), 1);
        outcomes.push((got, done.freed, f1.folio_count()));
    }
    assert_eq!(outcomes[0], outcomes[1], "the outcome depends on the order");
}

#[test]
fn finish_gives_back_what_nobody_took() {
    let (mut mem, _, out) = first_kernel(&[V2, V1]);
    let (_frozen, b) = freeze(out, &mut mem, 0);
    let mut inc = boot(&mut mem, &b).unwrap();
    let files = inc.register(MemfdHandler::default()).unwrap();
    let mut inc = inc.restore(&mut mem);
    inc.retrieve(&files.key("vm-1", 1), &mut mem).unwrap();
    let free = mem.free_bytes();
    let (calls, added) = (mem.free_calls, mem.added.len());
    let done = inc.finish(&mut mem).unwrap();
    assert_eq!(mem.free_bytes(), free + done.freed);
    // Handed-over memory goes to the allocator as new free memory, range
    // by range, never through `free_frames` (which may only see what it
    // handed out: a buddy allocator would corrupt itself).
    assert_eq!(mem.free_calls, calls);
    assert_eq!(mem.added[added..], done.ranges[..]);
    assert!(!done.ranges.is_empty());
    // Retrieved and never taken, or never retrieved: discarded, reported,
    // their pages freed (nobody can take them after finish, which consumed
    // the restored side: a second finish does not compile).
    assert_eq!(done.lost.len(), 3);
    for (s, tok, e) in &done.lost {
        let want = if (s.as_str(), *tok) == ("vm-1", 1) {
            LuoError::NotTaken
        } else {
            LuoError::NeverRetrieved
        };
        assert_eq!(*e, want, "{s}/{tok}");
    }
}

#[test]
fn a_repeated_version_is_refused_everywhere() {
    // In a handler's lists.
    let (mut mem, scratch) = setup();
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    assert_eq!(
        out.register(MemfdHandler::new(&[V2, V2], &[V2]))
            .map(|_| ()),
        Err(LuoError::DuplicateVersion {
            family: "memfd".into(),
            version: "memfd-v2".into()
        })
    );
    assert!(matches!(
        out.register(MemfdHandler::new(&[V2], &[V1, V2, V1])),
        Err(LuoError::DuplicateVersion { .. })
    ));
    // In a reads note, and an entry without its NUL (a truncated
    // `memfd-v12` must not read as `memfd-v1`).
    assert!(ReadList::parse(b"memfd-v1\0memfd-v2\0memfd-v1+3\0\0\0\0").is_none());
    assert!(ReadList::parse(b"memfd-v2\0memfd-v1").is_none());
    assert!(ReadList::parse(b"memfd-v2\0memfd-v12\0\0\0").is_some());
    // In an object's payloads: two num-v1 payloads (the reader took the
    // first, silently).
    let nums = out.register(numbers("num")).unwrap();
    out.create_session("s").unwrap();
    out.preserve(nums, "s", 1, 5u64, &mut mem).unwrap();
    let (_frozen, b) = freeze(out, &mut mem, 0);
    // Duplicate the payload node by rewriting the blob.
    let buf = rewrite(&b, &|_, _, old| old.to_vec(), &|path, c, w| {
        if path.ends_with("/payload-0") {
            w.begin_node("payload-1").unwrap();
            for p in c.properties() {
                w.property(p.name, p.value).unwrap();
            }
            w.end_node().unwrap();
        }
    });
    // Finish reports the node as unread.
    assert_eq!(
        unread(&mut mem, &buf),
        Err(LuoError::DuplicateVersion {
            family: "num".into(),
            version: "num-v1".into()
        })
    );
}

#[test]
fn the_reads_note_is_built_from_the_read_lists() {
    const A: &[Version] = &[
        Version::new("memfd-v2"),
        Version {
            name: "memfd-v1",
            features: 0x1f,
        },
    ];
    const B: &[Version] = &[Version::new(crate::luo::LUO_VERSION)];
    const LISTS: &[&[Version]] = &[A, B];
    static NOTE: crate::luo::ReadsNote<{ crate::luo::reads_len(LISTS) }> =
        crate::luo::ReadsNote::of(LISTS);
    assert_eq!(NOTE.desc(), b"memfd-v2\0memfd-v1+1f\0kho-luo-v2\0");
    let l = ReadList::parse(NOTE.desc()).unwrap();
    let got: Vec<(&str, u64)> = l.versions().collect();
    assert_eq!(
        got,
        [("memfd-v2", 0), ("memfd-v1", 0x1f), ("kho-luo-v2", 0)]
    );
    // What a handler registered with `A` reads, the note says it reads.
    for v in A {
        assert!(l.reads(v.name, v.features));
    }
    assert!(!l.reads("memfd-v2", 1));
}

/// A kernel reading `reads` over `b`: restores what it reads, takes
/// every file it can, finishes; returns what it carried.
fn carrier(mem: &mut HostMem, b: &[u8], reads: &[Version]) -> Finished {
    let mut inc = boot(mem, b).unwrap();
    let files = inc.register(MemfdHandler::new(reads, reads)).unwrap();
    let objs: Vec<(String, u64)> = inc.objects().map(|(s, t, _)| (s.into(), t)).collect();
    let mut inc = inc.restore(mem);
    for (s, tok) in &objs {
        let _ = inc.take(&files.key(s, *tok), mem);
    }
    inc.finish(mem).unwrap()
}

/// The next hop's handoff from a kernel that only carries `carried`,
/// frozen for a next kernel that reads `next`.
fn carry_on(
    mem: &mut HostMem,
    scratch: Scratch,
    carried: Vec<Carried>,
    next: &ReadList<'_>,
    hop: u32,
) -> Vec<u8> {
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    out.register(MemfdHandler::new(&[V1], &[V1])).unwrap();
    let refused = out.carry(carried, mem);
    assert!(refused.is_empty(), "{:?}", refused[0].error);
    let mut frozen = out.freeze(mem, Freeze::NoLoss(next)).unwrap();
    write(&mut frozen, mem, hop)
}

/// A `memfd-v3` file through a kernel that reads `memfd-v1` only, twice,
/// then into a `memfd-v3` reader: the same bytes in the same first folio,
/// the origin hop kept and the carry count 2; and nothing the carriers
/// freed overlaps it.
#[test]
fn an_unreadable_object_is_carried_through_two_kernels_bit_exact() {
    let (mut mem, scratch) = setup();
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    let files = out
        .register(MemfdHandler::new(&[V3_TEST], &[V3_TEST]))
        .unwrap();
    out.create_session("s").unwrap();
    let f = file(&mut mem, 200_000, 9, 0);
    let want = contents(&f, &mem);
    let first = f.extents()[0].phys;
    out.preserve(files, "s", 7, f, &mut mem).unwrap();
    let carrier_reads = ReadList::parse(b"memfd-v1\0kho-luo-v2\0").unwrap();
    assert_eq!(out.preflight(&carrier_reads)[0].outcome, Outcome::Carried);
    let mut frozen = out
        .freeze(&mut mem, Freeze::NoLoss(&carrier_reads))
        .unwrap();
    let mut b = write(&mut frozen, &mut mem, 3);
    for hop in [4, 5] {
        let done = carrier(&mut mem, &b, &[V1]);
        assert!(done.lost.is_empty(), "{:?}", done.lost);
        assert_eq!(done.carried.len(), 1);
        for r in &done.ranges {
            assert!(done.carried[0].footprint().iter().all(|f| !f.overlaps(r)));
        }
        // Poison everything the carrier gave back.
        for r in &done.ranges {
            for p in (r.start..r.end).step_by(4096) {
                if let Some(fr) = mem.frame_mut(p) {
                    fr.fill(0xa5);
                }
            }
        }
        b = carry_on(&mut mem, scratch, done.carried, &carrier_reads, hop);
    }
    // The origin and the count, as the blob says.
    let mut inc = boot(&mut mem, &b).unwrap();
    let files = inc
        .register(MemfdHandler::new(&[V3_TEST], &[V3_TEST]))
        .unwrap();
    let key = files.key("s", 7);
    assert_eq!(
        inc.info(&key).unwrap().origin,
        Origin { hop: 3, carried: 2 }
    );
    let mut inc = inc.restore(&mut mem);
    let (g, v) = inc.take(&key, &mut mem).unwrap();
    assert_eq!(v, "memfd-v3");
    assert_eq!(g.extents()[0].phys, first);
    assert_eq!(contents(&g, &mem), want);
}

/// A carried object whose footprint names another object's page, or a
/// page nobody preserved, is dropped with a typed error naming it; the
/// object that is read keeps its pages, and a good carried one is kept.
#[test]
fn a_bad_footprint_drops_that_object_only() {
    for bad in ["overlap", "unpreserved"] {
        let (mut mem, scratch) = setup();
        let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
        let files = out
            .register(MemfdHandler::new(&[V3_TEST, V1], &[V3_TEST]))
            .unwrap();
        out.create_session("s").unwrap();
        let readable = file(&mut mem, 10_000, 1, 0);
        let read_page = readable.extents()[0].phys;
        out.preserve(files, "s", 1, readable, &mut mem).unwrap();
        // Sealed: no v1 payload, so a v1 reader carries it.
        for tok in [2, 3] {
            let f = file(&mut mem, 10_000, 2, seal::WRITE.bits());
            out.preserve(files, "s", tok, f, &mut mem).unwrap();
        }
        let (_frozen, b) = freeze(out, &mut mem, 0);
        // Object 2's footprint made to name object 1's first page, or a
        // page outside every preserved range.
        let target = if bad == "overlap" {
            read_page
        } else {
            0x3f00_0000
        };
        let fp = crate::abi::luo::Extent {
            start: target.into(),
            pages: 1u64.into(),
        };
        let b = with_property(
            &b,
            "/luo/session-0/object-2",
            "kho,footprint",
            fp.as_bytes(),
        );
        let mut inc = boot(&mut mem, &b).unwrap();
        let files = inc.register(MemfdHandler::new(&[V1], &[V1])).unwrap();
        let mut inc = inc.restore(&mut mem);
        let (f1, _) = inc.take(&files.key("s", 1), &mut mem).unwrap();
        assert_eq!(f1.extents()[0].phys, read_page);
        match inc.take(&files.key("s", 2), &mut mem) {
            Err(LuoError::Footprint { session, token, .. }) => {
                assert_eq!((session.as_str(), token), ("s", 2), "{bad}")
            }
            other => panic!("{bad}: {:?}", other.map(|_| ())),
        }
        assert!(matches!(
            inc.take(&files.key("s", 3), &mut mem),
            Err(LuoError::Carried { .. })
        ));
        let done = inc.finish(&mut mem).unwrap();
        assert_eq!(done.lost.len(), 1);
        assert_eq!(done.carried.len(), 1);
        assert_eq!(done.carried[0].token, 3);
    }
}

/// A session that opts out: its unreadable object is dropped and its
/// memory freed; preflight says so.
#[test]
fn a_session_that_opts_out_is_dropped_not_carried() {
    let (mut mem, scratch) = setup();
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    let files = out
        .register(MemfdHandler::new(&[V3_TEST], &[V3_TEST]))
        .unwrap();
    out.create_session("keys").unwrap();
    out.set_drop_unread("keys", true).unwrap();
    let f = file(&mut mem, 10_000, 1, 0);
    out.preserve(files, "keys", 1, f, &mut mem).unwrap();
    let carrier_reads = ReadList::parse(b"memfd-v1\0kho-luo-v2\0").unwrap();
    assert_eq!(out.preflight(&carrier_reads)[0].outcome, Outcome::Lost);
    let (_frozen, b) = freeze(out, &mut mem, 0);
    let done = carrier(&mut mem, &b, &[V1]);
    assert!(done.carried.is_empty());
    assert_eq!(done.lost.len(), 1);
    assert!(matches!(done.lost[0].2, LuoError::NoReadableVersion { .. }));
    assert!(done.freed >= 12 << 10);
}

/// Malformed v2 object properties are refused as a whole node.
#[test]
fn a_malformed_footprint_or_origin_is_refused() {
    // Preserved outside the fake's pool, so that no handoff page lands
    // there.
    const KEPT: Range = Range::new(0x800_0000, 0x801_0000);
    let v2_object = |origin: bool, extents: &[(u64, u64)]| {
        let recs: Vec<crate::abi::luo::Extent> = extents
            .iter()
            .map(|&(s, p)| crate::abi::luo::Extent {
                start: s.into(),
                pages: p.into(),
            })
            .collect();
        let (mut mem, scratch) = setup();
        let mut t = Tracker::new(scratch.areas()).unwrap();
        t.preserve_range(KEPT.start, KEPT.end).unwrap();
        let root = chain::write(&t, &mut mem).unwrap();
        let mut buf = vec![0u8; 8192];
        let mut w =
            HandoffWriter::new(&mut buf, 0, Stamps::default(), &root.into(), &scratch).unwrap();
        w.subsystem(NODE, &[LUO_VERSION], None, |w| {
            w.begin_node("session-0")?;
            w.property_string("kho,name", "s")?;
            w.property("kho,flags", &[0u8; 4])?;
            w.begin_node("object-1")?;
            w.property("kho,token", &1u64.to_le_bytes())?;
            w.property_string("kho,family", "memfd")?;
            if origin {
                w.property("kho,origin", &[0u8; 8])?;
            }
            if !recs.is_empty() {
                w.property_struct("kho,footprint", recs.as_slice())?;
            }
            w.begin_node("payload-0")?;
            w.property_string("kho,version", "memfd-v2")?;
            w.property("kho,features", &[0u8; 16])?;
            w.property("kho,data", &[1, 2, 3])?;
            w.end_node()?;
            w.end_node()?;
            w.end_node()
        })
        .unwrap();
        let n = w.finish().unwrap().len;
        buf.truncate(n);
        unread(&mut mem.clone(), &buf)?;
        // No handler reads it: carried, or refused for its footprint.
        let done = boot(&mut mem, &buf)
            .unwrap()
            .restore(&mut mem)
            .finish(&mut mem);
        let mut done = done.unwrap();
        match (done.carried.len(), done.lost.pop()) {
            (1, None) => Ok(()),
            (0, Some((_, _, e))) => Err(e),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(v2_object(true, &[(0x800_0000, 2), (0x800_3000, 1)]), Ok(()));
    // No footprint and no handler: it cannot be carried, so it is lost.
    assert!(matches!(v2_object(true, &[]), Err(LuoError::NoHandler(_))));
    let bad_fp = Err(LuoError::BadFootprint {
        session: "s".into(),
        token: 1,
        family: "memfd".into(),
        why: "its footprint property is malformed",
    });
    for extents in [
        &[(0x800_3000, 1), (0x800_0000, 2)][..], // unsorted
        &[(0x800_0000, 2), (0x800_1000, 1)],     // overlapping
        &[(0x800_0000, 2), (0x800_2000, 1)],     // touching: should be one
        &[(0x800_0000, 0)],                      // empty
        &[(0x800_0800, 1)],                      // unaligned
        &[(u64::MAX - 4095, 2)],                 // overflowing
    ] {
        assert_eq!(v2_object(true, extents), bad_fp, "{extents:x?}");
    }
    assert_eq!(
        v2_object(false, &[(0x800_0000, 1)]),
        Err(LuoError::BadNode("object kho,origin"))
    );
}

const POOL_V1: Version = Version::new("pool-v1");
const DEP_V1: Version = Version::new("dep-v1");

/// Shared state: a pool of pages that dependents draw from.
#[derive(Debug)]
struct Pool {
    pages: Vec<u64>,
}

/// The pool's handler (`pool-v1`: its page addresses), which records the
/// order of discards in `log`.
struct PoolHandler {
    log: std::rc::Rc<core::cell::RefCell<Vec<&'static str>>>,
}

impl Handler<HostMem> for PoolHandler {
    type Object = Pool;
    type Undo = ();
    fn family(&self) -> &'static str {
        "pool"
    }
    fn writes(&self) -> &[Version] {
        &[POOL_V1]
    }
    fn reads(&self) -> &[Version] {
        &[POOL_V1]
    }
    fn preserve(&mut self, o: &mut Pool, _: &mut HostMem, t: &mut Tracker) -> Result<(), LuoError> {
        for &p in &o.pages {
            t.preserve(p, 0)?;
        }
        Ok(())
    }
    fn unpreserve(
        &mut self,
        o: &mut Pool,
        _: &mut HostMem,
        t: &mut Tracker,
    ) -> Result<(), LuoError> {
        for &p in &o.pages {
            t.unpreserve(p, 0)?;
        }
        Ok(())
    }
    fn footprint(&self, o: &Pool, out: &mut Vec<Range>) {
        out.extend(o.pages.iter().map(|&p| Range::new(p, p + 4096)));
    }
    fn prepare(
        &mut self,
        o: &mut Pool,
        _: &mut HostMem,
        _: &mut Tracker,
        out: &mut Prepared<()>,
    ) -> Result<(), LuoError> {
        let data = o.pages.iter().flat_map(|p| p.to_le_bytes()).collect();
        out.payloads.push(Payload::new("pool-v1", data));
        Ok(())
    }
    fn retrieve(
        &mut self,
        pl: &PayloadIn<'_>,
        _: &mut HostMem,
        ctx: &mut RestoreCtx<'_>,
    ) -> Result<Pool, LuoError> {
        let pages: Vec<u64> = (0..pl.data.len() / 8)
            .filter_map(|i| pl.u64_at(i))
            .collect();
        for &p in &pages {
            ctx.claims.claim(p, 1)?;
        }
        Ok(Pool { pages })
    }
    fn discard(&mut self, o: Pool, _: &mut HostMem, claims: &mut Claims) {
        self.log.borrow_mut().push("pool");
        for p in o.pages {
            claims.release(p, 1);
        }
    }
}

/// A dependent: the index of its page in the pool; restored, the page.
struct Dep;

impl Handler<HostMem> for Dep {
    type Object = (u64, u64);
    type Undo = ();
    fn family(&self) -> &'static str {
        "dep"
    }
    fn writes(&self) -> &[Version] {
        &[DEP_V1]
    }
    fn reads(&self) -> &[Version] {
        &[DEP_V1]
    }
    fn preserve(
        &mut self,
        _: &mut (u64, u64),
        _: &mut HostMem,
        _: &mut Tracker,
    ) -> Result<(), LuoError> {
        Ok(())
    }
    fn unpreserve(
        &mut self,
        _: &mut (u64, u64),
        _: &mut HostMem,
        _: &mut Tracker,
    ) -> Result<(), LuoError> {
        Ok(())
    }
    fn footprint(&self, o: &(u64, u64), out: &mut Vec<Range>) {
        // What it owns: nothing of the pool's, one page of its own.
        out.push(Range::new(o.1, o.1 + 4096));
    }
    fn prepare(
        &mut self,
        o: &mut (u64, u64),
        _: &mut HostMem,
        _: &mut Tracker,
        out: &mut Prepared<()>,
    ) -> Result<(), LuoError> {
        out.payloads
            .push(Payload::new("dep-v1", o.0.to_le_bytes().to_vec()));
        Ok(())
    }
    fn retrieve(
        &mut self,
        _: &PayloadIn<'_>,
        _: &mut HostMem,
        _: &mut RestoreCtx<'_>,
    ) -> Result<(u64, u64), LuoError> {
        Err(LuoError::State("a dep is only read with its pool"))
    }
    fn retrieve_dependent(
        &mut self,
        pl: &PayloadIn<'_>,
        shared: &mut Shared<'_>,
        _: &mut HostMem,
        _: &mut RestoreCtx<'_>,
    ) -> Result<(u64, u64), LuoError> {
        let i = pl.u64_at(0).ok_or(LuoError::BadNode("dep"))?;
        let pool = shared
            .get::<Pool>()
            .ok_or(LuoError::BadNode("dep's pool"))?;
        let page = *pool
            .pages
            .get(i as usize)
            .ok_or(LuoError::BadNode("dep index"))?;
        Ok((i, page))
    }
    fn discard(&mut self, _: (u64, u64), _: &mut HostMem, _: &mut Claims) {}
}

/// Shared state is preserved with its first dependent and back to
/// pending without one; restored before its dependents whatever the blob
/// order, lent to them, and finished after them; a next kernel that cannot
/// read it reads none of its dependents (an error naming both) and carries
/// them all.
#[test]
fn shared_state_comes_first_and_its_dependents_follow_it() {
    let (mut mem, scratch) = setup();
    let log = std::rc::Rc::new(core::cell::RefCell::new(Vec::new()));
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    let pools = out.register(PoolHandler { log: log.clone() }).unwrap();
    let deps = out.register(Dep).unwrap();
    out.create_session("deps").unwrap();
    out.create_session("shared").unwrap();
    let pages: Vec<u64> = (0..3).map(|_| mem.alloc_frames(0).unwrap()).collect();
    let own = mem.alloc_frames(0).unwrap();
    let pool = out
        .share(
            pools,
            "shared",
            1,
            Pool {
                pages: pages.clone(),
            },
        )
        .unwrap();
    assert_eq!(out.tracker().pages(), 0, "not preserved before a dependent");
    let dep = out
        .preserve_with(deps, "deps", 5, (2u64, own), &pool, &mut mem)
        .unwrap();
    assert_eq!(out.tracker().pages(), 3);
    assert_eq!(out.unpreserve(&dep, &mut mem), Ok((2, own)));
    assert_eq!(
        out.tracker().pages(),
        0,
        "back to pending with its last dependent"
    );
    out.preserve_with(deps, "deps", 5, (2u64, own), &pool, &mut mem)
        .unwrap();
    out.preserve_frames(own, 0).unwrap();
    // Preflight: the dependent follows its pool.
    let carrier = ReadList::parse(b"dep-v1\0kho-luo-v2\0").unwrap();
    let plan = out.preflight(&carrier);
    assert!(
        plan.iter().all(|p| p.outcome == Outcome::Carried),
        "{plan:?}"
    );
    let (_frozen, b) = freeze(out, &mut mem, 0);

    // A kernel that reads both: the pool first (the dependent comes first
    // in the blob), lent to the dependent; discarded after it. (On a copy
    // of memory: the second kernel below starts from the same handoff.)
    let saved = mem.clone();
    let mut inc = boot(&mut mem, &b).unwrap();
    inc.register(PoolHandler { log: log.clone() }).unwrap();
    let deps = inc.register(Dep).unwrap();
    let mut inc = inc.restore(&mut mem);
    let (d, _) = inc.take(&deps.key("deps", 5), &mut mem).unwrap();
    assert_eq!(d, (2, pages[2]));
    let done = inc.finish(&mut mem).unwrap();
    assert_eq!(done.lost.len(), 1, "the pool was never taken");
    assert_eq!(*log.borrow(), ["pool"]);

    // A kernel without the pool's handler: the dependent is not read
    // (naming both) and both are carried.
    let mut mem = saved;
    let mut inc = boot(&mut mem, &b).unwrap();
    let deps = inc.register(Dep).unwrap();
    let mut inc = inc.restore(&mut mem);
    let e = inc.take(&deps.key("deps", 5), &mut mem).unwrap_err();
    assert!(matches!(e, LuoError::Carried { .. }), "{e}");
    let done = inc.finish(&mut mem).unwrap();
    assert!(done.lost.is_empty(), "{:?}", done.lost);
    assert_eq!(done.carried.len(), 2);
}

/// A node whose object needs a missing or chained object is refused.
#[test]
fn a_need_for_a_missing_object_is_refused() {
    let (mut mem, scratch) = setup();
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    let pools = out
        .register(PoolHandler {
            log: Default::default(),
        })
        .unwrap();
    let deps = out.register(Dep).unwrap();
    out.create_session("s").unwrap();
    let page = mem.alloc_frames(0).unwrap();
    let pool = out
        .share(pools, "s", 1, Pool { pages: vec![page] })
        .unwrap();
    let dep = out
        .preserve_with(deps, "s", 2, (0u64, page), &pool, &mut mem)
        .unwrap();
    // A dependent of a dependent is refused at preserve, as misuse.
    let r = out
        .preserve_with(deps, "s", 3, (0u64, page), &dep, &mut mem)
        .unwrap_err();
    assert_eq!(r.error.kind(), crate::ErrorKind::Misuse, "{}", r.error);
    let (_frozen, b) = freeze(out, &mut mem, 0);
    // The need renamed to a token nobody has: refused, node and all.
    let b = with_property(
        &b,
        "/luo/session-0/object-2",
        "kho,needs-token",
        &9u64.to_le_bytes(),
    );
    assert_eq!(
        unread(&mut mem, &b),
        Err(LuoError::BadNode("object kho,needs"))
    );
}

/// A file of 5000 scattered folios (more runs than a footprint lists
/// inline): its footprint goes in a preserved array, and it is carried
/// through a kernel that cannot read it and read, bit-exact and in place,
/// by one that can.
#[test]
fn a_scattered_file_is_carried_through_its_footprint_array() {
    let (mut mem, scratch) = setup();
    let mut f = Memfd::new(true);
    for i in 0..5000u64 {
        f.write(&mut mem, i * 4096, &[(i % 251) as u8 + 1]).unwrap();
        let _ = mem.alloc_frames(0);
    }
    let want = contents(&f, &mem);
    let first = f.extents()[0].phys;
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    let files = out
        .register(MemfdHandler::new(&[V3_TEST], &[V3_TEST]))
        .unwrap();
    out.create_session("s").unwrap();
    out.preserve(files, "s", 1, f, &mut mem).unwrap();
    let carrier_reads = ReadList::parse(b"memfd-v1\0kho-luo-v2\0").unwrap();
    assert_eq!(out.preflight(&carrier_reads)[0].outcome, Outcome::Carried);
    let (_frozen, b) = freeze(out, &mut mem, 0);
    assert!(
        b.len() < 64 << 10,
        "the footprint is not inline: {} bytes",
        b.len()
    );
    let done = carrier(&mut mem, &b, &[V1]);
    assert!(done.lost.is_empty(), "{:?}", done.lost);
    assert_eq!(done.carried.len(), 1);
    assert!(done.carried[0].footprint().len() >= 5000);
    for r in &done.ranges {
        for p in (r.start..r.end).step_by(4096) {
            if let Some(fr) = mem.frame_mut(p) {
                fr.fill(0x5a);
            }
        }
    }
    let any = ReadList::parse(b"memfd-v3\0kho-luo-v2\0").unwrap();
    let b = carry_on(&mut mem, scratch, done.carried, &any, 1);
    let mut inc = boot(&mut mem, &b).unwrap();
    let files = inc
        .register(MemfdHandler::new(&[V3_TEST], &[V3_TEST]))
        .unwrap();
    let mut inc = inc.restore(&mut mem);
    let (g, _) = inc.take(&files.key("s", 1), &mut mem).unwrap();
    assert_eq!(g.extents()[0].phys, first);
    assert_eq!(contents(&g, &mem), want);
}

/// The `kho-luo-v2` properties the first golden has no use for, pinned
/// too: a dependent's `kho,needs-*`, a session's flags set, and a
/// footprint too long to list inline (`kho,footprint-array`, beside the
/// payloads' pages inline). Deterministic on the host fake.
#[test]
fn golden_luo_blob_pins_shared_state_and_the_footprint_array() {
    let (mut mem, scratch) = setup();
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    let files = out.register(MemfdHandler::default()).unwrap();
    let pools = out
        .register(PoolHandler {
            log: Default::default(),
        })
        .unwrap();
    let deps = out.register(Dep).unwrap();
    out.create_session("files").unwrap();
    out.create_session("keys").unwrap();
    out.set_drop_unread("keys", true).unwrap();
    let mut f = Memfd::new(true);
    for i in 0..5000u64 {
        f.write(&mut mem, i * 4096, &[1]).unwrap();
        let _ = mem.alloc_frames(0);
    }
    out.preserve(files, "files", 1, f, &mut mem).unwrap();
    let page = mem.alloc_frames(0).unwrap();
    let own = mem.alloc_frames(0).unwrap();
    let pool = out
        .share(pools, "keys", 1, Pool { pages: vec![page] })
        .unwrap();
    out.preserve_with(deps, "keys", 2, (0u64, own), &pool, &mut mem)
        .unwrap();
    out.preserve_frames(own, 0).unwrap();
    let (_frozen, b) = freeze(out, &mut mem, 0);
    for prop in [
        &b"kho,footprint-array"[..],
        b"kho,needs-session",
        b"kho,needs-token",
    ] {
        assert!(b.windows(prop.len()).any(|w| w == prop), "no {prop:?}");
    }
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/luo-v2-shared.dtb");
    if std::env::var_os("KHO_BLESS").is_some() {
        std::fs::write(&path, &b).unwrap();
    }
    let golden =
        std::fs::read(&path).expect("tests/golden/luo-v2-shared.dtb (KHO_BLESS=1 writes it)");
    assert_eq!(
        b, golden,
        "the kho-luo-v2 layout changed: that needs a new version string"
    );
    let mut inc = boot(&mut mem, &golden).unwrap();
    let files = inc.register(MemfdHandler::default()).unwrap();
    let info = inc.info(&files.key("files", 1)).unwrap();
    assert_eq!(info.footprint_runs, FOOTPRINT_RUNS);
}

/// Runs of the golden's scattered file: its 5000 folios, in the array,
/// and one inline: its payloads' two record arrays (laid out at
/// preserve) and the footprint array's own pages (made at freeze), which
/// the host fake places side by side.
const FOOTPRINT_RUNS: u64 = 5001;

mod carry;
mod front;
