//! The orchestrator on the host: sessions and their errors, versions
//! picked per object, unknown versions, preflight, failed freezes, cancel,
//! feature bits, and finish giving back everything nobody adopted.

use super::*;
use crate::claims::Claims;
use crate::fdt::WriteError;
use crate::handoff::{Handoff, HandoffWriter, Stamps};
use crate::memfd::{Memfd, seal};
use crate::memfd::{MemfdHandler, V1, V2, V3_TEST};
use crate::platform::PhysMem;
use crate::platform::host::HostMem;
use crate::scratch::{Scratch, ScratchRecord};
use crate::testkit::HandOver;
use crate::tracker::Tracker;
use crate::tracker::chain;
use alloc::vec;
use zerocopy::{FromBytes, IntoBytes};

const RAM: Range = Range::new(0x10_0000, 0x4000_0000);
const SCRATCH: Range = Range::new(0x20_0000, 0x420_0000);

fn setup() -> (HostMem, Tracker, Scratch) {
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
    let t = Tracker::new(scratch.areas()).unwrap();
    (mem, t, scratch)
}

fn file(mem: &mut HostMem, len: usize, seed: u8, seals: u32) -> Memfd {
    let mut f = Memfd::new(true);
    f.write(mem, 0, &vec![seed; len]).unwrap();
    f.add_seals(crate::memfd::Seals::from_bits_retain(seals))
        .unwrap();
    f
}

/// The blob with the frozen `luo` written, as bytes.
fn blob(luo: &Luo<HostMem>, mem: &mut HostMem, t: &Tracker, scratch: &Scratch) -> Vec<u8> {
    let root = chain::write(t, mem).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let mut w = HandoffWriter::new(&mut buf, 0, Stamps::default(), &root, scratch).unwrap();
    luo.write(&mut w).unwrap();
    let n = w.finish().unwrap().len;
    buf.truncate(n);
    buf
}

/// A first kernel with two sessions: `vm-1` holds a plain and a sealed
/// file, `vm-2` a plain one. Frozen.
fn first_kernel(writes: &[Version]) -> (HostMem, Tracker, Scratch, Luo<HostMem>, Vec<u8>) {
    let (mut mem, mut t, scratch) = setup();
    let mut luo = Luo::<HostMem>::new();
    luo.register(MemfdHandler::new(writes, &[V2, V1])).unwrap();
    luo.create_session("vm-1").unwrap();
    luo.create_session("vm-2").unwrap();
    for (s, tok, len, seed, seals) in [
        ("vm-1", 1, 300_000, 1, 0),
        ("vm-1", 2, 70_000, 2, seal::WRITE.bits()),
        ("vm-2", 1, 3 << 20, 3, 0),
    ] {
        let f = file(&mut mem, len, seed, seals);
        luo.preserve(s, tok, FAMILY_MEMFD, f, &mut mem, &mut t)
            .unwrap();
    }
    luo.freeze(&mut mem, &mut t, None, false).unwrap();
    let b = blob(&luo, &mut mem, &t, &scratch);
    (mem, t, scratch, luo, b)
}

const FAMILY_MEMFD: &str = crate::memfd::FAMILY;

fn contents(f: &Memfd, mem: &HostMem) -> Vec<u8> {
    let mut b = vec![0; f.size() as usize];
    f.read(mem, 0, &mut b);
    b
}

#[test]
fn sessions_refuse_duplicates_and_unknowns() {
    let (mut mem, mut t, _) = setup();
    let mut luo = Luo::<HostMem>::new();
    luo.register(MemfdHandler::default()).unwrap();
    assert_eq!(
        luo.register(MemfdHandler::default()),
        Err(LuoError::DuplicateFamily("memfd".into()))
    );
    luo.create_session("s").unwrap();
    assert_eq!(
        luo.create_session("s"),
        Err(LuoError::DuplicateSession("s".into()))
    );
    let f = file(&mut mem, 100, 1, 0);
    luo.preserve("s", 7, "memfd", f, &mut mem, &mut t).unwrap();
    let again = file(&mut mem, 100, 1, 0);
    let r = luo
        .preserve("s", 7, "memfd", again, &mut mem, &mut t)
        .unwrap_err();
    assert_eq!(
        r.error,
        LuoError::DuplicateToken {
            session: "s".into(),
            token: 7
        }
    );
    // The refused object comes back whole, and is not preserved.
    assert!(!r.object.is_preserved());
    let r = luo
        .preserve("nope", 1, "memfd", r.object, &mut mem, &mut t)
        .unwrap_err();
    assert_eq!(r.error, LuoError::NoSession("nope".into()));
    let r = luo
        .preserve("s", 1, "blockdev", r.object, &mut mem, &mut t)
        .unwrap_err();
    assert_eq!(r.error, LuoError::NoHandler("blockdev".into()));
    let r = luo
        .preserve("s", 1, "memfd", 5u32, &mut mem, &mut t)
        .unwrap_err();
    assert_eq!(r.error, LuoError::WrongFamily("memfd".into()));
    assert!(matches!(
        luo.unpreserve::<Memfd>("s", 9, FAMILY_MEMFD, &mut mem, &mut t),
        Err(LuoError::NoToken { token: 9, .. })
    ));
    // Unpreserve gives the object back unpreserved; cancel the rest.
    let pages = t.pages();
    let f = luo
        .unpreserve::<Memfd>("s", 7, FAMILY_MEMFD, &mut mem, &mut t)
        .unwrap();
    assert!(!f.is_preserved());
    assert_eq!(t.pages(), pages - 1);
    let f2 = file(&mut mem, 10_000, 2, 0);
    luo.preserve("s", 8, "memfd", f2, &mut mem, &mut t).unwrap();
    luo.freeze(&mut mem, &mut t, None, false).unwrap();
    assert!(t.pages() > 3, "payload arrays preserved");
    let back = luo.cancel(&mut mem, &mut t);
    assert_eq!(back.len(), 1);
    assert_eq!(t.pages(), 0, "cancel releases everything preserved");
}

#[test]
fn the_next_kernel_picks_the_best_common_version_per_object() {
    let (mut mem, t, scratch, a, b) = first_kernel(&[V2, V1]);
    // Preflight knows the sealed file has no v1 payload.
    // It is carried, not lost, by a kernel whose orchestrator carries.
    let old = ReadList::parse(b"memfd-v1\0kho-luo-v2\0\0\0").unwrap();
    let plan: Vec<Outcome> = a.preflight(&old).into_iter().map(|p| p.outcome).collect();
    let v1 = || Outcome::Read("memfd-v1".into());
    assert_eq!(plan, [v1(), Outcome::Carried, v1()]);
    // A kernel with no orchestrator that reads this node loses them all.
    let none = ReadList::parse(b"memfd-v1\0kho-luo-v1\0").unwrap();
    assert!(
        a.preflight(&none)
            .iter()
            .all(|p| p.outcome == Outcome::Lost)
    );
    let h = Handoff::parse(&b, &[RAM]).unwrap();
    // A reader of v1 only.
    let mut luo = Luo::<HostMem>::new();
    luo.register(MemfdHandler::new(&[V1], &[V1])).unwrap();
    luo.incoming(&h).unwrap();
    let objs: Vec<(String, u64)> = luo.objects().map(|(s, t, _)| (s.into(), t)).collect();
    assert_eq!(
        objs,
        [("vm-1".into(), 1), ("vm-1".into(), 2), ("vm-2".into(), 1)]
    );
    let mut claims = mem.hand_over(&t).unwrap();
    let free_before = mem.free_bytes();
    let mut ctx = RestoreCtx {
        ram: &[RAM],
        scratch: scratch.areas(),
        claims: &mut claims,
    };
    // In any order; the sealed file has no v1: this kernel carries it
    // (a typed answer naming its versions), and the others restore.
    let (f, v) = luo
        .retrieve::<Memfd>("vm-2", 1, FAMILY_MEMFD, &mut mem, &mut ctx)
        .unwrap();
    assert_eq!(v, "memfd-v1");
    let size = f.size();
    assert_eq!(size, 3 << 20);
    let e = luo
        .retrieve::<Memfd>("vm-1", 2, FAMILY_MEMFD, &mut mem, &mut ctx)
        .unwrap_err();
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
        luo.retrieve::<Memfd>("vm-1", 2, FAMILY_MEMFD, &mut mem, &mut ctx)
            .unwrap_err(),
        e
    );
    let p1 = luo
        .retrieve::<Memfd>("vm-1", 1, FAMILY_MEMFD, &mut mem, &mut ctx)
        .unwrap()
        .0 as *const Memfd;
    let p2 = luo
        .retrieve::<Memfd>("vm-1", 1, FAMILY_MEMFD, &mut mem, &mut ctx)
        .unwrap()
        .0 as *const Memfd;
    assert!(core::ptr::addr_eq(p1, p2));
    // The wrong type is an error, and the object stays where it was.
    let wrong = Err(LuoError::WrongFamily("memfd".into()));
    assert_eq!(
        luo.retrieve::<u64>("vm-1", 1, FAMILY_MEMFD, &mut mem, &mut ctx)
            .map(|_| ()),
        wrong
    );
    assert_eq!(luo.take::<u64>("vm-1", 1, FAMILY_MEMFD).map(|_| ()), wrong);
    let f1 = luo.take::<Memfd>("vm-1", 1, FAMILY_MEMFD).unwrap();
    assert_eq!(contents(&f1, &mem), vec![1u8; 300_000]);
    let f3 = luo.take::<Memfd>("vm-2", 1, FAMILY_MEMFD).unwrap();
    // Finish frees every v2 payload's array of the files it read and the
    // v1 arrays (released after reading); the sealed file and its v2
    // array are carried, not freed: nothing preserved is lost.
    let adopted = [&f1, &f3].iter().map(|f| f.allocated_bytes()).sum::<u64>();
    let preserved: u64 = claims.preserved().map(|r| r.len()).sum();
    let done = luo
        .finish(&mut mem, claims, &[RAM], scratch.areas())
        .unwrap();
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
    let (mut mem, mut t, scratch) = setup();
    let mut luo = Luo::<HostMem>::new();
    luo.register(MemfdHandler::new(&[V1], &[V1])).unwrap();
    luo.create_session("s").unwrap();
    let f = file(&mut mem, 5000, 4, 0);
    luo.preserve("s", 1, "memfd", f, &mut mem, &mut t).unwrap();
    let sealed = file(&mut mem, 5000, 4, seal::GROW.bits());
    luo.preserve("s", 2, "memfd", sealed, &mut mem, &mut t)
        .unwrap();
    // The freeze fails on the sealed file (no version can carry it) and
    // unfreezes the first: its v1 array is released.
    let before = t.pages();
    assert!(matches!(
        luo.freeze(&mut mem, &mut t, None, false),
        Err(LuoError::NothingStored(f)) if f == "memfd"
    ));
    assert_eq!(t.pages(), before);
    let s = luo
        .unpreserve::<Memfd>("s", 2, FAMILY_MEMFD, &mut mem, &mut t)
        .unwrap();
    s.free(&mut mem);
    luo.freeze(&mut mem, &mut t, None, false).unwrap();
    let b = blob(&luo, &mut mem, &t, &scratch);
    let h = Handoff::parse(&b, &[RAM]).unwrap();
    let mut next = Luo::<HostMem>::new();
    next.register(MemfdHandler::default()).unwrap();
    next.incoming(&h).unwrap();
    let mut claims = mem.hand_over(&t).unwrap();
    let mut ctx = RestoreCtx {
        ram: &[RAM],
        scratch: scratch.areas(),
        claims: &mut claims,
    };
    let (_, v) = next
        .retrieve::<Memfd>("s", 1, FAMILY_MEMFD, &mut mem, &mut ctx)
        .unwrap();
    assert_eq!(v, "memfd-v1");
}

#[test]
fn preflight_reports_and_refuses_what_would_be_lost() {
    let (mut mem, mut t, _) = setup();
    let mut luo = Luo::<HostMem>::new();
    luo.register(MemfdHandler::new(&[V3_TEST], &[V3_TEST]))
        .unwrap();
    luo.create_session("s").unwrap();
    let f = file(&mut mem, 5000, 4, 0);
    luo.preserve("s", 1, "memfd", f, &mut mem, &mut t).unwrap();
    // Carried by a kernel that reads this orchestrator's node...
    let carrier = ReadList::parse(b"memfd-v1\0kho-luo-v2\0").unwrap();
    assert_eq!(luo.preflight(&carrier)[0].outcome, Outcome::Carried);
    // ... unless its session opts out.
    luo.set_drop_unread("s", true).unwrap();
    assert_eq!(luo.preflight(&carrier)[0].outcome, Outcome::Lost);
    luo.set_drop_unread("s", false).unwrap();
    luo.freeze(&mut mem, &mut t, Some(&carrier), false).unwrap();
    luo.unfreeze(&mut mem, &mut t);
    // Lost by a kernel with no orchestrator node it reads.
    let old = ReadList::parse(b"memfd-v1\0kho-demo-v1\0\0\0").unwrap();
    let plan = luo.preflight(&old);
    assert_eq!(plan[0].outcome, Outcome::Lost);
    // The one reason, named: the next image cannot read the node at all.
    let e = luo.freeze(&mut mem, &mut t, Some(&old), false).unwrap_err();
    assert_eq!(e, LuoError::NextReadsNoNode { objects: 1 });
    assert!(e.to_string().contains("does not list kho-luo-v2"), "{e}");
    // A node it reads, a version it does not, and the session opted out.
    luo.set_drop_unread("s", true).unwrap();
    let e = luo
        .freeze(&mut mem, &mut t, Some(&carrier), false)
        .unwrap_err();
    assert!(matches!(&e, LuoError::WouldLose(l) if l.len() == 1 && l[0].written == ["memfd-v3"]));
    luo.set_drop_unread("s", false).unwrap();
    assert!(!luo.frozen);
    // Forced: the kexec may go ahead; the object is written anyway, and the
    // next kernel gives it a typed error.
    luo.freeze(&mut mem, &mut t, Some(&old), true).unwrap();
    let new = ReadList::parse(b"memfd-v3\0memfd-v2\0kho-luo-v2\0").unwrap();
    luo.unfreeze(&mut mem, &mut t);
    assert_eq!(luo.preflight(&new)[0].version(), Some("memfd-v3"));
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

#[test]
fn a_failed_freeze_unfreezes_and_feature_bits_decide_readability() {
    let (mut mem, mut t, scratch) = setup();
    let mut luo = Luo::<HostMem>::new();
    let v = Version {
        name: "num-v1",
        features: 0b11,
    };
    luo.register(Numbers {
        family: "num",
        writes: vec![v],
        reads: vec![v],
        required: 0b10,
        prepared: 0,
    })
    .unwrap();
    luo.create_session("s").unwrap();
    for n in [1u64, 2, 13] {
        luo.preserve("s", n, "num", n, &mut mem, &mut t).unwrap();
    }
    // The handler's own error arrives typed.
    match luo.freeze(&mut mem, &mut t, None, false) {
        Err(LuoError::Handler { family, error }) => {
            assert_eq!(family, "num");
            assert_eq!(error.downcast_ref::<Unlucky>(), Some(&Unlucky(13)));
        }
        other => panic!("{other:?}"),
    }
    assert!(!luo.frozen);
    assert!(matches!(
        luo.write(
            &mut HandoffWriter::new(
                &mut [0u8; 4096],
                0,
                Stamps::default(),
                &chain::write(&t, &mut mem).unwrap(),
                &scratch
            )
            .unwrap()
        ),
        Err(LuoError::State(_))
    ));
    // The wrong type is refused and the object stays preserved.
    assert_eq!(
        luo.unpreserve::<u32>("s", 13, "num", &mut mem, &mut t),
        Err(LuoError::WrongFamily("num".into()))
    );
    assert_eq!(
        luo.unpreserve::<u64>("s", 13, "num", &mut mem, &mut t),
        Ok(13)
    );
    luo.freeze(&mut mem, &mut t, None, false).unwrap();
    let b = blob(&luo, &mut mem, &t, &scratch);
    let h = Handoff::parse(&b, &[RAM]).unwrap();
    let mut claims = mem.hand_over(&t).unwrap();
    // A reader that understands bit 1: reads (optional bit 8 ignored).
    for (features, ok) in [(0b10, true), (0b01, false)] {
        let mut next = Luo::<HostMem>::new();
        let r = Version {
            name: "num-v1",
            features,
        };
        next.register(Numbers {
            family: "num",
            writes: vec![],
            reads: vec![r],
            required: 0,
            prepared: 0,
        })
        .unwrap();
        next.incoming(&h).unwrap();
        let mut ctx = RestoreCtx {
            ram: &[RAM],
            scratch: scratch.areas(),
            claims: &mut claims,
        };
        let got = next.retrieve::<u64>("s", 2, "num", &mut mem, &mut ctx);
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
    body: impl FnOnce(&mut crate::fdt::FdtWriter<'_>) -> Result<(), WriteError>,
) -> Vec<u8> {
    let (mut mem, t, scratch) = setup();
    let root = chain::write(&t, &mut mem).unwrap();
    let mut buf = vec![0u8; 8192];
    let mut w = HandoffWriter::new(&mut buf, 0, Stamps::default(), &root, &scratch).unwrap();
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

#[test]
fn a_malformed_luo_node_is_refused() {
    let incoming = |b: &[u8]| {
        let h = Handoff::parse(b, &[RAM]).unwrap();
        Luo::<HostMem>::new().incoming(&h)
    };
    assert_eq!(
        incoming(&luo_blob(|w| object(w, "object-5", 5, true))),
        Ok(())
    );
    assert_eq!(
        incoming(&luo_blob(|w| object(w, "object-5", 6, true))),
        Err(LuoError::BadNode("object name and token differ"))
    );
    assert_eq!(
        incoming(&luo_blob(|w| object(w, "object-5", 5, false))),
        Err(LuoError::BadNode("payload kho,features"))
    );
    // Two objects, one token (names differ only in the unit address's
    // spelling, which the FDT reader allows).
    assert_eq!(
        incoming(&luo_blob(|w| {
            object(w, "object-5", 5, true)?;
            object(w, "object-05", 5, true)
        })),
        Err(LuoError::BadNode("object name and token differ"))
    );
    // A node of an unknown luo version is a typed error naming both.
    let (mut mem, t, scratch) = setup();
    let root = chain::write(&t, &mut mem).unwrap();
    let mut buf = vec![0u8; 8192];
    let mut w = HandoffWriter::new(&mut buf, 0, Stamps::default(), &root, &scratch).unwrap();
    w.subsystem(NODE, &["kho-luo-v9"], None, |_| Ok(()))
        .unwrap();
    let n = w.finish().unwrap().len;
    let h = Handoff::parse(&buf[..n], &[RAM]).unwrap();
    assert!(matches!(
        Luo::<HostMem>::new().incoming(&h),
        Err(LuoError::NoReadableVersion { written, .. }) if written == ["kho-luo-v9"]
    ));
}

/// The `kho-luo-v2` node with `memfd-v2` and `memfd-v1` payloads (inline
/// and array descriptors), footprints and origins, pinned byte for byte: a
/// layout change needs a new version string. The host fake allocates
/// deterministically, so the blob is the same on every run.
#[test]
fn golden_luo_blob_pins_the_node_and_the_memfd_descriptors() {
    let (mut mem, mut t, scratch, a, b) = first_kernel(&[V2, V1]);
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
    let h = Handoff::parse(&golden, &[RAM]).unwrap();
    let mut next = Luo::<HostMem>::new();
    next.register(MemfdHandler::default()).unwrap();
    next.incoming(&h).unwrap();
    let mut claims = mem.hand_over(&t).unwrap();
    let mut ctx = RestoreCtx {
        ram: &[RAM],
        scratch: scratch.areas(),
        claims: &mut claims,
    };
    for (s, tok) in [("vm-1", 1), ("vm-1", 2), ("vm-2", 1)] {
        let (_, v) = next
            .retrieve::<Memfd>(s, tok, FAMILY_MEMFD, &mut mem, &mut ctx)
            .unwrap();
        assert_eq!(v, "memfd-v2");
    }
    assert_eq!(
        next.retrieve::<Memfd>("vm-2", 9, FAMILY_MEMFD, &mut mem, &mut ctx)
            .unwrap_err(),
        LuoError::NoToken {
            session: "vm-2".into(),
            token: 9
        }
    );
    assert_eq!(
        next.retrieve::<Memfd>("vm-9", 1, FAMILY_MEMFD, &mut mem, &mut ctx)
            .unwrap_err(),
        LuoError::NoSession("vm-9".into())
    );
    drop((a, &mut t));
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
            let (mut mem, mut t, scratch) = setup();
            let mut luo = Luo::<HostMem>::new();
            luo.register(MemfdHandler::default()).unwrap();
            let mut model: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
            for o in &ops {
                match *o {
                    Op::Create(s) => {
                        let name = format!("s{s}");
                        let r = luo.create_session(&name);
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
                        let r = luo.preserve(&name, u64::from(tok), "memfd", f, &mut mem, &mut t);
                        match model.get_mut(&name) {
                            None => prop_assert_eq!(r.map_err(|e| e.error), Err(LuoError::NoSession(name))),
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
                        let r = luo.unpreserve::<Memfd>(&name, u64::from(tok), FAMILY_MEMFD, &mut mem, &mut t);
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
            luo.freeze(&mut mem, &mut t, None, false).unwrap();
            let b = blob(&luo, &mut mem, &t, &scratch);
            let h = Handoff::parse(&b, &[RAM]).unwrap();
            let mut next = Luo::<HostMem>::new();
            next.incoming(&h).unwrap();
            let got: BTreeSet<(String, u64)> = next.objects().map(|(s, t, _)| (s.to_string(), t)).collect();
            let want: BTreeSet<(String, u64)> = model
                .iter()
                .flat_map(|(s, set)| set.iter().map(move |t| (s.clone(), *t)))
                .collect();
            prop_assert_eq!(got, want);
            for c in luo.cancel(&mut mem, &mut t) {
                c.into_object::<Memfd>().unwrap().free(&mut mem);
            }
            prop_assert_eq!(t.pages(), 0);
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

/// Two plain files written as `memfd-v1` only (so each has a record
/// array), in one session; then `edit` changes the blob's payload bytes of
/// token 2 and the memory, given token 1's first array block. Resealed.
fn two_v1_files(
    edit: impl Fn(&mut HostMem, u64, &mut [u8]),
) -> (HostMem, Tracker, Scratch, Vec<u8>) {
    let (mut mem, mut t, scratch) = setup();
    let mut luo = Luo::<HostMem>::new();
    luo.register(MemfdHandler::new(&[V1], &[V1])).unwrap();
    luo.create_session("s").unwrap();
    for (tok, len, seed) in [(1, 40_000, 1), (2, 50_000, 2)] {
        let f = file(&mut mem, len, seed, 0);
        luo.preserve("s", tok, FAMILY_MEMFD, f, &mut mem, &mut t)
            .unwrap();
    }
    luo.freeze(&mut mem, &mut t, None, false).unwrap();
    let b = blob(&luo, &mut mem, &t, &scratch);
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
    let buf = rewrite(
        &b,
        &|path, name, old| {
            if path == "/luo/session-0/object-2/payload-0" && name == "kho,data" {
                d2.clone()
            } else {
                old.to_vec()
            }
        },
        &|_, _, _| {},
    );
    (mem, t, scratch, buf)
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
    // the other order file 1 failed instead. Now the first retrieve
    // restores in blob order and metadata keeps its role until finish:
    // the same object is refused in both orders, with the same freed
    // total.
    let mut outcomes = Vec::new();
    for order in [[1u64, 2], [2, 1]] {
        let (mut mem, t, scratch, b) = two_v1_files(adopt_anothers_array);
        let h = Handoff::parse(&b, &[RAM]).unwrap();
        let mut luo = Luo::<HostMem>::new();
        luo.register(MemfdHandler::new(&[V1], &[V1])).unwrap();
        luo.incoming(&h).unwrap();
        let mut claims = mem.hand_over(&t).unwrap();
        let mut ctx = RestoreCtx {
            ram: &[RAM],
            scratch: scratch.areas(),
            claims: &mut claims,
        };
        let mut got = Vec::new();
        for tok in order {
            got.push((
                tok,
                luo.retrieve::<Memfd>("s", tok, FAMILY_MEMFD, &mut mem, &mut ctx)
                    .map(|(_, v)| v),
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
        let f1 = luo.take::<Memfd>("s", 1, FAMILY_MEMFD).unwrap();
        let done = luo
            .finish(&mut mem, claims, &[RAM], scratch.areas())
            .unwrap();
        assert_eq!(done.lost.len(), 1);
        outcomes.push((got, done.freed, f1.folio_count()));
    }
    assert_eq!(outcomes[0], outcomes[1], "the outcome depends on the order");
}

#[test]
fn finish_is_final() {
    let (mut mem, t, scratch, _, b) = first_kernel(&[V2, V1]);
    let h = Handoff::parse(&b, &[RAM]).unwrap();
    let mut luo = Luo::<HostMem>::new();
    luo.register(MemfdHandler::default()).unwrap();
    luo.incoming(&h).unwrap();
    let mut claims = mem.hand_over(&t).unwrap();
    let preserved: Vec<Range> = claims.preserved().collect();
    let spare = Claims::new(preserved.iter().copied(), scratch.areas()).unwrap();
    let mut ctx = RestoreCtx {
        ram: &[RAM],
        scratch: scratch.areas(),
        claims: &mut claims,
    };
    luo.retrieve::<Memfd>("vm-1", 1, FAMILY_MEMFD, &mut mem, &mut ctx)
        .unwrap();
    let free = mem.free_bytes();
    let (calls, added) = (mem.free_calls, mem.added.len());
    let done = luo
        .finish(&mut mem, claims, &[RAM], scratch.areas())
        .unwrap();
    assert_eq!(mem.free_bytes(), free + done.freed);
    // Handed-over memory goes to the allocator as new free memory, range
    // by range, never through `free_frames` (which may only see what it
    // handed out: a buddy allocator would corrupt itself).
    assert_eq!(mem.free_calls, calls);
    assert_eq!(mem.added[added..], done.ranges[..]);
    assert!(!done.ranges.is_empty());
    // Never retrieved, or retrieved and never taken: discarded, reported,
    // their pages freed (nobody can take them after finish).
    assert_eq!(done.lost.len(), 3);
    for (s, tok, e) in &done.lost {
        let want = if (s.as_str(), *tok) == ("vm-1", 1) {
            LuoError::NotTaken
        } else {
            LuoError::NeverRetrieved
        };
        assert_eq!(*e, want, "{s}/{tok}");
    }
    // A second finish is refused and frees nothing; a claim after finish
    // cannot be written (the claims were consumed), and a retrieve is
    // refused.
    assert_eq!(
        luo.finish(&mut mem, spare, &[RAM], scratch.areas()),
        Err(LuoError::State("finish was called before"))
    );
    assert_eq!(mem.free_bytes(), free + done.freed);
    let mut other = Claims::new(preserved.iter().copied(), scratch.areas()).unwrap();
    let mut ctx = RestoreCtx {
        ram: &[RAM],
        scratch: scratch.areas(),
        claims: &mut other,
    };
    assert_eq!(
        luo.retrieve::<Memfd>("vm-1", 2, FAMILY_MEMFD, &mut mem, &mut ctx)
            .map(|_| ()),
        Err(LuoError::State("finished"))
    );
}

#[test]
fn a_repeated_version_is_refused_everywhere() {
    // In a handler's lists.
    let mut luo = Luo::<HostMem>::new();
    assert_eq!(
        luo.register(MemfdHandler::new(&[V2, V2], &[V2])),
        Err(LuoError::DuplicateVersion {
            family: "memfd".into(),
            version: "memfd-v2".into()
        })
    );
    assert!(matches!(
        luo.register(MemfdHandler::new(&[V2], &[V1, V2, V1])),
        Err(LuoError::DuplicateVersion { .. })
    ));
    // In a reads note, and an entry without its NUL (a truncated
    // `memfd-v12` must not read as `memfd-v1`).
    assert!(ReadList::parse(b"memfd-v1\0memfd-v2\0memfd-v1+3\0\0\0\0").is_none());
    assert!(ReadList::parse(b"memfd-v2\0memfd-v1").is_none());
    assert!(ReadList::parse(b"memfd-v2\0memfd-v12\0\0\0").is_some());
    // In an object's payloads: two memfd-v2 payloads (the reader took the
    // first, silently).
    let (mut mem, mut t, scratch) = setup();
    let mut a = Luo::<HostMem>::new();
    a.register(Numbers {
        family: "num",
        writes: vec![Version::new("num-v1")],
        reads: vec![Version::new("num-v1")],
        required: 0,
        prepared: 0,
    })
    .unwrap();
    a.create_session("s").unwrap();
    a.preserve("s", 1, "num", 5u64, &mut mem, &mut t).unwrap();
    a.freeze(&mut mem, &mut t, None, false).unwrap();
    let b = blob(&a, &mut mem, &t, &scratch);
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
    let h = Handoff::parse(&buf, &[RAM]).unwrap();
    let mut l = Luo::<HostMem>::new();
    assert_eq!(
        l.incoming(&h),
        Err(LuoError::DuplicateVersion {
            family: "num".into(),
            version: "num-v1".into()
        })
    );
    // Finish reports the node as unread.
    let claims = mem.hand_over(&t).unwrap();
    let done = l.finish(&mut mem, claims, &[RAM], scratch.areas()).unwrap();
    assert!(done.unread.is_some());
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

/// The blob with the frozen `luo` written at `hop`.
fn blob_at_hop(
    luo: &Luo<HostMem>,
    mem: &mut HostMem,
    t: &Tracker,
    scratch: &Scratch,
    hop: u32,
) -> Vec<u8> {
    let root = chain::write(t, mem).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let mut w = HandoffWriter::new(&mut buf, hop, Stamps::default(), &root, scratch).unwrap();
    luo.write(&mut w).unwrap();
    let n = w.finish().unwrap().len;
    buf.truncate(n);
    buf
}

/// A kernel reading `reads` over `b`: restores what it reads, takes
/// nothing, finishes; returns what it carried.
fn carrier(
    mem: &mut HostMem,
    t: &Tracker,
    scratch: &Scratch,
    b: &[u8],
    reads: &[Version],
) -> Finished {
    let h = Handoff::parse(b, &[RAM]).unwrap();
    let mut luo = Luo::<HostMem>::new();
    luo.register(MemfdHandler::new(reads, reads)).unwrap();
    luo.incoming(&h).unwrap();
    let mut claims = mem.hand_over(t).unwrap();
    let mut ctx = RestoreCtx {
        ram: &[RAM],
        scratch: scratch.areas(),
        claims: &mut claims,
    };
    let objs: Vec<(String, u64)> = luo.objects().map(|(s, t, _)| (s.into(), t)).collect();
    for (s, tok) in &objs {
        if let Ok((f, _)) = luo.retrieve::<Memfd>(s, *tok, FAMILY_MEMFD, mem, &mut ctx) {
            let _ = f.size();
        }
        let _ = luo.take::<Memfd>(s, *tok, FAMILY_MEMFD);
    }
    luo.finish(mem, claims, &[RAM], scratch.areas()).unwrap()
}

/// A `memfd-v3` file through a kernel that reads `memfd-v1` only, twice,
/// then into a `memfd-v3` reader: the same bytes in the same first folio,
/// the origin hop kept and the carry count 2; and nothing the carriers
/// freed overlaps it.
#[test]
fn an_unreadable_object_is_carried_through_two_kernels_bit_exact() {
    let (mut mem, mut t, scratch) = setup();
    let mut luo = Luo::<HostMem>::new();
    luo.register(MemfdHandler::new(&[V3_TEST], &[V3_TEST]))
        .unwrap();
    luo.create_session("s").unwrap();
    let f = file(&mut mem, 200_000, 9, 0);
    let want = contents(&f, &mem);
    let first = f.extents()[0].phys;
    luo.preserve("s", 7, FAMILY_MEMFD, f, &mut mem, &mut t)
        .unwrap();
    let carrier_reads = ReadList::parse(b"memfd-v1\0kho-luo-v2\0").unwrap();
    assert_eq!(luo.preflight(&carrier_reads)[0].outcome, Outcome::Carried);
    luo.freeze(&mut mem, &mut t, Some(&carrier_reads), false)
        .unwrap();
    let mut b = blob_at_hop(&luo, &mut mem, &t, &scratch, 3);
    for hop in [4, 5] {
        let done = carrier(&mut mem, &t, &scratch, &b, &[V1]);
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
        let mut next = Luo::<HostMem>::new();
        next.register(MemfdHandler::new(&[V1], &[V1])).unwrap();
        t = Tracker::new(scratch.areas()).unwrap();
        for c in done.carried {
            next.carry(c, &mut mem, &mut t).unwrap();
        }
        next.freeze(&mut mem, &mut t, Some(&carrier_reads), false)
            .unwrap();
        b = blob_at_hop(&next, &mut mem, &t, &scratch, hop);
    }
    // The origin and the count, as the blob says.
    let h = Handoff::parse(&b, &[RAM]).unwrap();
    let mut last = Luo::<HostMem>::new();
    last.register(MemfdHandler::new(&[V3_TEST], &[V3_TEST]))
        .unwrap();
    last.incoming(&h).unwrap();
    let origin = last.origin("s", 7).unwrap();
    assert_eq!(origin, Origin { hop: 3, carried: 2 });
    let mut claims = mem.hand_over(&t).unwrap();
    let mut ctx = RestoreCtx {
        ram: &[RAM],
        scratch: scratch.areas(),
        claims: &mut claims,
    };
    let (g, v) = last
        .retrieve::<Memfd>("s", 7, FAMILY_MEMFD, &mut mem, &mut ctx)
        .unwrap();
    assert_eq!(v, "memfd-v3");
    assert_eq!(g.extents()[0].phys, first);
    let got = contents(g, &mem);
    assert_eq!(got, want);
}

/// A carried object whose footprint names another object's page, or a
/// page nobody preserved, is dropped with a typed error naming it; the
/// object that is read keeps its pages, and a good carried one is kept.
#[test]
fn a_bad_footprint_drops_that_object_only() {
    for bad in ["overlap", "unpreserved"] {
        let (mut mem, mut t, scratch) = setup();
        let mut luo = Luo::<HostMem>::new();
        luo.register(MemfdHandler::new(&[V3_TEST, V1], &[V3_TEST]))
            .unwrap();
        luo.create_session("s").unwrap();
        let readable = file(&mut mem, 10_000, 1, 0);
        let read_page = readable.extents()[0].phys;
        luo.preserve("s", 1, FAMILY_MEMFD, readable, &mut mem, &mut t)
            .unwrap();
        // Sealed: no v1 payload, so a v1 reader carries it.
        for tok in [2, 3] {
            let f = file(&mut mem, 10_000, 2, seal::WRITE.bits());
            luo.preserve("s", tok, FAMILY_MEMFD, f, &mut mem, &mut t)
                .unwrap();
        }
        // Object 2's footprint made to name object 1's first page, or a
        // page outside every preserved range.
        let target = if bad == "overlap" {
            read_page
        } else {
            0x3f00_0000
        };
        let (si, oi) = luo.find("s", 2).unwrap();
        luo.sessions[si].objects[oi].footprint = vec![Range::new(target, target + 4096)];
        luo.freeze(&mut mem, &mut t, None, false).unwrap();
        let b = blob(&luo, &mut mem, &t, &scratch);
        let h = Handoff::parse(&b, &[RAM]).unwrap();
        let mut next = Luo::<HostMem>::new();
        next.register(MemfdHandler::new(&[V1], &[V1])).unwrap();
        next.incoming(&h).unwrap();
        let mut claims = mem.hand_over(&t).unwrap();
        let mut ctx = RestoreCtx {
            ram: &[RAM],
            scratch: scratch.areas(),
            claims: &mut claims,
        };
        let (f1, _) = next
            .retrieve::<Memfd>("s", 1, FAMILY_MEMFD, &mut mem, &mut ctx)
            .unwrap();
        assert_eq!(f1.extents()[0].phys, read_page);
        match next.retrieve::<Memfd>("s", 2, FAMILY_MEMFD, &mut mem, &mut ctx) {
            Err(LuoError::Footprint { session, token, .. }) => {
                assert_eq!((session.as_str(), token), ("s", 2), "{bad}")
            }
            other => panic!("{bad}: {other:?}"),
        }
        assert!(matches!(
            next.retrieve::<Memfd>("s", 3, FAMILY_MEMFD, &mut mem, &mut ctx),
            Err(LuoError::Carried { .. })
        ));
        let _ = next.take::<Memfd>("s", 1, FAMILY_MEMFD).unwrap();
        let done = next
            .finish(&mut mem, claims, &[RAM], scratch.areas())
            .unwrap();
        assert_eq!(done.lost.len(), 1);
        assert_eq!(done.carried.len(), 1);
        assert_eq!(done.carried[0].token, 3);
    }
}

/// A session that opts out: its unreadable object is dropped and its
/// memory freed; preflight says so.
#[test]
fn a_session_that_opts_out_is_dropped_not_carried() {
    let (mut mem, mut t, scratch) = setup();
    let mut luo = Luo::<HostMem>::new();
    luo.register(MemfdHandler::new(&[V3_TEST], &[V3_TEST]))
        .unwrap();
    luo.create_session("keys").unwrap();
    luo.set_drop_unread("keys", true).unwrap();
    let f = file(&mut mem, 10_000, 1, 0);
    luo.preserve("keys", 1, FAMILY_MEMFD, f, &mut mem, &mut t)
        .unwrap();
    let carrier_reads = ReadList::parse(b"memfd-v1\0kho-luo-v2\0").unwrap();
    assert_eq!(luo.preflight(&carrier_reads)[0].outcome, Outcome::Lost);
    luo.freeze(&mut mem, &mut t, None, false).unwrap();
    let b = blob(&luo, &mut mem, &t, &scratch);
    let done = carrier(&mut mem, &t, &scratch, &b, &[V1]);
    assert!(done.carried.is_empty());
    assert_eq!(done.lost.len(), 1);
    assert!(matches!(done.lost[0].2, LuoError::NoReadableVersion { .. }));
    assert!(done.freed >= 12 << 10);
}

/// Malformed v2 object properties are refused as a whole node.
#[test]
fn a_malformed_footprint_or_origin_is_refused() {
    let v2_object = |origin: bool, extents: &[(u64, u64)]| {
        let recs: Vec<crate::abi::luo::Extent> = extents
            .iter()
            .map(|&(s, p)| crate::abi::luo::Extent {
                start: s.into(),
                pages: p.into(),
            })
            .collect();
        let (mut mem, t, scratch) = setup();
        let root = chain::write(&t, &mut mem).unwrap();
        let mut buf = vec![0u8; 8192];
        let mut w = HandoffWriter::new(&mut buf, 0, Stamps::default(), &root, &scratch).unwrap();
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
        let h = Handoff::parse(&buf, &[RAM]).unwrap();
        let mut luo = Luo::<HostMem>::new();
        luo.incoming(&h)?;
        // No handler reads it: carried, or refused for its footprint.
        let mut claims = Claims::new([Range::new(0x1000_0000, 0x1001_0000)], &[]).unwrap();
        let mut ctx = RestoreCtx {
            ram: &[RAM],
            scratch: &[],
            claims: &mut claims,
        };
        match luo.retrieve::<Memfd>("s", 1, FAMILY_MEMFD, &mut mem, &mut ctx) {
            Err(LuoError::Carried { .. }) => Ok(()),
            Err(e) => Err(e),
            Ok(_) => panic!("read without a handler"),
        }
    };
    assert_eq!(
        v2_object(true, &[(0x1000_0000, 2), (0x1000_3000, 1)]),
        Ok(())
    );
    assert!(matches!(v2_object(true, &[]), Err(LuoError::NoHandler(_))));
    let bad_fp = Err(LuoError::BadFootprint {
        session: "s".into(),
        token: 1,
        family: "memfd".into(),
        why: "its footprint property is malformed",
    });
    for extents in [
        &[(0x1000_3000, 1), (0x1000_0000, 2)][..], // unsorted
        &[(0x1000_0000, 2), (0x1000_1000, 1)],     // overlapping
        &[(0x1000_0000, 2), (0x1000_2000, 1)],     // touching: should be one
        &[(0x1000_0000, 0)],                       // empty
        &[(0x1000_0800, 1)],                       // unaligned
        &[(u64::MAX - 4095, 2)],                   // overflowing
    ] {
        assert_eq!(v2_object(true, extents), bad_fp, "{extents:x?}");
    }
    assert_eq!(
        v2_object(false, &[(0x1000_0000, 1)]),
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
    let (mut mem, mut t, scratch) = setup();
    let log = std::rc::Rc::new(core::cell::RefCell::new(Vec::new()));
    let mut luo = Luo::<HostMem>::new();
    luo.register(PoolHandler { log: log.clone() }).unwrap();
    luo.register(Dep).unwrap();
    luo.create_session("deps").unwrap();
    luo.create_session("shared").unwrap();
    let pages: Vec<u64> = (0..3)
        .map(|_| crate::platform::FrameAlloc::alloc_frames(&mut mem, 0).unwrap())
        .collect();
    let own = crate::platform::FrameAlloc::alloc_frames(&mut mem, 0).unwrap();
    luo.share(
        "shared",
        1,
        "pool",
        Pool {
            pages: pages.clone(),
        },
    )
    .unwrap();
    assert_eq!(t.pages(), 0, "not preserved before a dependent");
    luo.preserve_with(
        "deps",
        5,
        "dep",
        (2u64, own),
        ("shared", 1),
        &mut mem,
        &mut t,
    )
    .unwrap();
    assert_eq!(t.pages(), 3);
    assert_eq!(
        luo.unpreserve::<(u64, u64)>("deps", 5, "dep", &mut mem, &mut t),
        Ok((2, own))
    );
    assert_eq!(t.pages(), 0, "back to pending with its last dependent");
    luo.preserve_with(
        "deps",
        5,
        "dep",
        (2u64, own),
        ("shared", 1),
        &mut mem,
        &mut t,
    )
    .unwrap();
    t.preserve(own, 0).unwrap();
    luo.freeze(&mut mem, &mut t, None, false).unwrap();
    let b = blob(&luo, &mut mem, &t, &scratch);
    let h = Handoff::parse(&b, &[RAM]).unwrap();

    // A kernel that reads both: the pool first (the dependent comes first
    // in the blob), lent to the dependent; discarded after it. (On a copy
    // of memory: the second kernel below starts from the same handoff.)
    let saved = mem.clone();
    let mut next = Luo::<HostMem>::new();
    next.register(PoolHandler { log: log.clone() }).unwrap();
    next.register(Dep).unwrap();
    next.incoming(&h).unwrap();
    let mut claims = mem.hand_over(&t).unwrap();
    let mut ctx = RestoreCtx {
        ram: &[RAM],
        scratch: scratch.areas(),
        claims: &mut claims,
    };
    let (d, _) = next
        .retrieve::<(u64, u64)>("deps", 5, "dep", &mut mem, &mut ctx)
        .unwrap();
    assert_eq!(*d, (2, pages[2]));
    next.take::<(u64, u64)>("deps", 5, "dep").unwrap();
    let done = next
        .finish(&mut mem, claims, &[RAM], scratch.areas())
        .unwrap();
    assert_eq!(done.lost.len(), 1, "the pool was never retrieved");
    assert_eq!(*log.borrow(), ["pool"]);

    // A kernel without the pool's handler: the dependent is not read
    // (naming both) and both are carried.
    let mut mem = saved;
    let mut next = Luo::<HostMem>::new();
    next.register(Dep).unwrap();
    next.incoming(&h).unwrap();
    let mut claims = mem.hand_over(&t).unwrap();
    let mut ctx = RestoreCtx {
        ram: &[RAM],
        scratch: scratch.areas(),
        claims: &mut claims,
    };
    let e = next
        .retrieve::<(u64, u64)>("deps", 5, "dep", &mut mem, &mut ctx)
        .unwrap_err();
    assert!(matches!(e, LuoError::Carried { .. }), "{e}");
    let done = next
        .finish(&mut mem, claims, &[RAM], scratch.areas())
        .unwrap();
    assert!(done.lost.is_empty(), "{:?}", done.lost);
    assert_eq!(done.carried.len(), 2);
    // Preflight: the dependent follows its pool.
    let carrier = ReadList::parse(b"dep-v1\0kho-luo-v2\0").unwrap();
    let plan = luo.preflight(&carrier);
    assert!(
        plan.iter().all(|p| p.outcome == Outcome::Carried),
        "{plan:?}"
    );
}

/// A node whose object needs a missing or chained object is refused.
#[test]
fn a_need_for_a_missing_object_is_refused() {
    let (mut mem, mut t, scratch) = setup();
    let mut luo = Luo::<HostMem>::new();
    luo.register(PoolHandler {
        log: Default::default(),
    })
    .unwrap();
    luo.register(Dep).unwrap();
    luo.create_session("s").unwrap();
    let page = crate::platform::FrameAlloc::alloc_frames(&mut mem, 0).unwrap();
    luo.share("s", 1, "pool", Pool { pages: vec![page] })
        .unwrap();
    luo.preserve_with("s", 2, "dep", (0u64, page), ("s", 1), &mut mem, &mut t)
        .unwrap();
    // A dependent of a dependent is refused at preserve.
    let r = luo.preserve_with("s", 3, "dep", (0u64, page), ("s", 2), &mut mem, &mut t);
    assert!(matches!(
        r,
        Err(Refused {
            error: LuoError::State(_),
            ..
        })
    ));
    luo.freeze(&mut mem, &mut t, None, false).unwrap();
    let mut b = blob(&luo, &mut mem, &t, &scratch);
    // The need renamed to a token nobody has: refused, node and all.
    let at = b
        .windows(16)
        .position(|w| w == b"kho,needs-token\0")
        .unwrap();
    let _ = at;
    let fdt = crate::fdt::Fdt::new(&b).unwrap();
    let p = fdt
        .find_property("/luo/session-0/object-2", "kho,needs-token")
        .unwrap();
    let off = p.value.as_ptr() as usize - b.as_ptr() as usize;
    b[off] = 9;
    crate::handoff::seal(&mut b).unwrap();
    let h = Handoff::parse(&b, &[RAM]).unwrap();
    assert_eq!(
        Luo::<HostMem>::new().incoming(&h),
        Err(LuoError::BadNode("object kho,needs"))
    );
}

/// A file of 5000 scattered folios (more runs than a footprint lists
/// inline): its footprint goes in a preserved array, and it is carried
/// through a kernel that cannot read it and read, bit-exact and in place,
/// by one that can.
#[test]
fn a_scattered_file_is_carried_through_its_footprint_array() {
    let (mut mem, mut t, scratch) = setup();
    let mut f = Memfd::new(true);
    for i in 0..5000u64 {
        f.write(&mut mem, i * 4096, &[(i % 251) as u8 + 1]).unwrap();
        let _ = crate::platform::FrameAlloc::alloc_frames(&mut mem, 0);
    }
    let want = contents(&f, &mem);
    let first = f.extents()[0].phys;
    let mut luo = Luo::<HostMem>::new();
    luo.register(MemfdHandler::new(&[V3_TEST], &[V3_TEST]))
        .unwrap();
    luo.create_session("s").unwrap();
    luo.preserve("s", 1, FAMILY_MEMFD, f, &mut mem, &mut t)
        .unwrap();
    let carrier_reads = ReadList::parse(b"memfd-v1\0kho-luo-v2\0").unwrap();
    assert_eq!(luo.preflight(&carrier_reads)[0].outcome, Outcome::Carried);
    luo.freeze(&mut mem, &mut t, None, false).unwrap();
    let b = blob_at_hop(&luo, &mut mem, &t, &scratch, 0);
    assert!(
        b.len() < 64 << 10,
        "the footprint is not inline: {} bytes",
        b.len()
    );
    let done = carrier(&mut mem, &t, &scratch, &b, &[V1]);
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
    let mut next = Luo::<HostMem>::new();
    next.register(MemfdHandler::new(&[V1], &[V1])).unwrap();
    let mut t2 = Tracker::new(scratch.areas()).unwrap();
    for c in done.carried {
        next.carry(c, &mut mem, &mut t2).unwrap();
    }
    next.freeze(&mut mem, &mut t2, None, false).unwrap();
    let b = blob_at_hop(&next, &mut mem, &t2, &scratch, 1);
    let h = Handoff::parse(&b, &[RAM]).unwrap();
    let mut last = Luo::<HostMem>::new();
    last.register(MemfdHandler::new(&[V3_TEST], &[V3_TEST]))
        .unwrap();
    last.incoming(&h).unwrap();
    let mut claims = mem.hand_over(&t2).unwrap();
    let mut ctx = RestoreCtx {
        ram: &[RAM],
        scratch: scratch.areas(),
        claims: &mut claims,
    };
    let (g, _) = last
        .retrieve::<Memfd>("s", 1, FAMILY_MEMFD, &mut mem, &mut ctx)
        .unwrap();
    assert_eq!(g.extents()[0].phys, first);
    assert_eq!(contents(g, &mem), want);
}

/// The `kho-luo-v2` properties the first golden has no use for, pinned
/// too: a dependent's `kho,needs-*`, a session's flags set, and a
/// footprint too long to list inline (`kho,footprint-array`, beside the
/// payloads' pages inline). Deterministic on the host fake.
#[test]
fn golden_luo_blob_pins_shared_state_and_the_footprint_array() {
    let (mut mem, mut t, scratch) = setup();
    let mut luo = Luo::<HostMem>::new();
    luo.register(MemfdHandler::default()).unwrap();
    luo.register(PoolHandler {
        log: Default::default(),
    })
    .unwrap();
    luo.register(Dep).unwrap();
    luo.create_session("files").unwrap();
    luo.create_session("keys").unwrap();
    luo.set_drop_unread("keys", true).unwrap();
    let mut f = Memfd::new(true);
    for i in 0..5000u64 {
        f.write(&mut mem, i * 4096, &[1]).unwrap();
        let _ = crate::platform::FrameAlloc::alloc_frames(&mut mem, 0);
    }
    luo.preserve("files", 1, FAMILY_MEMFD, f, &mut mem, &mut t)
        .unwrap();
    let page = crate::platform::FrameAlloc::alloc_frames(&mut mem, 0).unwrap();
    let own = crate::platform::FrameAlloc::alloc_frames(&mut mem, 0).unwrap();
    luo.share("keys", 1, "pool", Pool { pages: vec![page] })
        .unwrap();
    luo.preserve_with("keys", 2, "dep", (0u64, own), ("keys", 1), &mut mem, &mut t)
        .unwrap();
    t.preserve(own, 0).unwrap();
    luo.freeze(&mut mem, &mut t, None, false).unwrap();
    let b = blob(&luo, &mut mem, &t, &scratch);
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
    let h = Handoff::parse(&golden, &[RAM]).unwrap();
    let mut next = Luo::<HostMem>::new();
    next.incoming(&h).unwrap();
    assert_eq!(next.footprint_array("files", 1), Some(5000));
}

mod carry;
mod front;
