//! The front door's error kinds: each situation a kernel acts on, reached
//! the way a kernel reaches it, says so through `kind()` with the module's
//! error kept as its source.

use super::*;
use crate::error::{Error, ErrorKind};
use crate::platform::FrameAlloc;
use core::error::Error as _;

/// A frozen first kernel with one `memfd-v2`-only file (in a session
/// that opts out of carrying, with `drop`), and its blob.
fn v2_only(mem: &mut HostMem, scratch: Scratch, drop: bool) -> Vec<u8> {
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    let files = out.register(MemfdHandler::new(&[V2], &[V2])).unwrap();
    out.create_session("s").unwrap();
    out.set_drop_unread("s", drop).unwrap();
    let f = file(mem, 5000, 3, 0);
    out.preserve(files, "s", 1, f, mem).unwrap();
    let mut frozen = out.freeze(mem, Freeze::AllowLoss).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let n = frozen
        .write(mem, &mut buf, 0, Stamps::default())
        .unwrap()
        .len;
    buf.truncate(n);
    buf
}

#[test]
fn every_kind_is_reached_through_the_front_door() {
    // Refused by preflight: the next kernel reads nothing.
    let (mut mem, scratch) = setup();
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    let files = out.register(MemfdHandler::default()).unwrap();
    out.create_session("s").unwrap();
    let f = file(&mut mem, 5000, 1, 0);
    let key = out.preserve(files, "s", 1, f, &mut mem).unwrap();
    let nothing = ReadList::parse(b"").unwrap();
    let refused = out
        .freeze(&mut mem, Freeze::NoLoss(&nothing))
        .err()
        .unwrap();
    assert_eq!(refused.error.kind(), ErrorKind::WouldLose);
    let e: Error = refused.into();
    assert_eq!(e.kind(), ErrorKind::WouldLose);
    assert!(
        e.source().is_some(),
        "the orchestrator's error is the source"
    );

    // Misuse: a key whose object is not there.
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    let files2 = out.register(MemfdHandler::default()).unwrap();
    let e = out.unpreserve(&files2.key("s", 9), &mut mem).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Misuse);
    let _ = key;

    // A buffer too small: NoSpace, with the size needed.
    let (mut mem, scratch) = setup();
    let blob = v2_only(&mut mem, scratch, true);
    let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
    out.register(MemfdHandler::default()).unwrap();
    let mut frozen = out.freeze(&mut mem, Freeze::AllowLoss).unwrap();
    let e = frozen
        .write(&mut mem, &mut [0u8; 64], 0, Stamps::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace);
    assert!(e.needed().is_some());

    // No common version: a v1-only reader of a v2-only file its writer
    // would not have carried.
    let mut inc = boot(&mut mem, &blob).unwrap();
    let v1 = inc.register(MemfdHandler::new(&[V1], &[V1])).unwrap();
    let mut inc = inc.restore(&mut mem);
    let e = inc.take(&v1.key("s", 1), &mut mem).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoCommonVersion, "{e}");
    assert_eq!(Error::from(e).kind(), ErrorKind::NoCommonVersion);

    // Carried: the same reader keeps a file its writer lets it carry.
    let (mut mem, scratch) = setup();
    let blob = v2_only(&mut mem, scratch, false);
    let mut inc = boot(&mut mem, &blob).unwrap();
    let v1 = inc.register(MemfdHandler::new(&[V1], &[V1])).unwrap();
    let mut inc = inc.restore(&mut mem);
    let e = inc.take(&v1.key("s", 1), &mut mem).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Carried, "{e}");

    // Corrupt: one byte of the blob changed after its seal.
    let (mut mem, scratch) = setup();
    let mut blob = v2_only(&mut mem, scratch, false);
    blob[0x48] ^= 0xff;
    let e = boot(&mut mem, &blob).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");

    // Out of memory: a memfd that cannot get a frame.
    let (mut mem, _) = setup();
    while mem.alloc_frames(0).is_some() {}
    let mut f = Memfd::new(true);
    let e: Error = f.write(&mut mem, 0, &[1; 10]).unwrap_err().into();
    assert_eq!(e.kind(), ErrorKind::OutOfMemory, "{e}");
}

#[test]
fn words_are_read_back_only_at_their_exact_length() {
    let bytes = le_bytes(&[1, u64::MAX]);
    assert_eq!(bytes.len(), 16);
    assert_eq!(le_words::<2>(&bytes), Some([1, u64::MAX]));
    assert_eq!(le_words::<1>(&bytes), None, "longer than asked");
    assert_eq!(le_words::<3>(&bytes), None, "shorter than asked");
    assert_eq!(le_words::<2>(&bytes[..15]), None, "a word cut short");
    let pl = PayloadIn {
        version: "v",
        required: 0,
        optional: 0,
        data: &bytes,
    };
    assert_eq!(pl.words::<2>(), Some([1, u64::MAX]));
    assert_eq!(pl.words::<1>(), None);
}

/// What the kexec keeps, with the tracker's chain written at freeze and
/// with it handed over in place (a platform that lends frames).
#[test]
fn the_blob_says_what_the_kexec_keeps() {
    for lend in [false, true] {
        let (mut mem, scratch) = setup();
        if lend {
            mem.lend_frames();
        }
        let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
        let files = out.register(MemfdHandler::default()).unwrap();
        out.create_session("s").unwrap();
        let f = file(&mut mem, 300_000, 7, 0);
        out.preserve(files, "s", 1, f, &mut mem).unwrap();
        out.preserve_range(Range::new(0x800_0000, 0x800_3000))
            .unwrap();
        let mut frozen = out.freeze(&mut mem, Freeze::AllowLoss).unwrap();
        let mut buf = vec![0u8; 64 << 10];
        let blob = frozen
            .write(&mut mem, &mut buf, 0, Stamps::default())
            .unwrap();
        let n = blob.len;
        let h = crate::handoff::Handoff::parse(&buf[..n], &[RAM]).unwrap();
        assert_eq!(matches!(h.tracker, crate::tracker::Root::InPlace(_)), lend);
        let kept = blob.kept(&mem, &[RAM]).unwrap();
        assert!(
            kept.capacity() >= kept.len() + 2,
            "room for the blob and the image"
        );
        keeps_agrees(&blob, &mem, &kept);
        assert!(
            kept.iter()
                .any(|k| k.covers(Range::new(0x800_0000, 0x800_3000)))
        );
        if lend {
            // The next kernel reads the tracker where it lay.
            frozen.hand_back(&mut mem);
        }
        // The next kernel reserves exactly these: every preserved range
        // and every page of the tracker's handed-over form.
        let inc = boot(&mut mem, &buf[..n]).unwrap();
        let preserved: Vec<Range> = inc.preserved().collect();
        for r in &preserved {
            assert!(kept.iter().any(|k| k.covers(*r)), "{r} not kept");
        }
        let kept_bytes: u64 = kept.iter().map(|r| r.len()).sum();
        let preserved_bytes: u64 = preserved.iter().map(|r| r.len()).sum();
        assert!(
            kept_bytes > preserved_bytes,
            "the tracker's pages are kept too"
        );
    }
}

/// `keeps` answers for a range as the list `kept` does, and `kept_bytes`
/// is the list's total: asked at every edge of every kept range (the page
/// either side, a byte either side, both), and of all of memory at once.
fn keeps_agrees(blob: &crate::Blob<'_, HostMem>, mem: &HostMem, kept: &[Range]) {
    assert_eq!(blob.kept_bytes(), kept.iter().map(|r| r.len()).sum::<u64>());
    for e in kept.iter().flat_map(|k| [k.start, k.end]) {
        let below = e.saturating_sub(4096);
        for r in [
            Range::new(below, e),
            Range::new(e, e + 4096),
            Range::new(e.saturating_sub(1), e + 1),
            Range::new(below, e + 4096),
        ] {
            let want = kept.iter().any(|k| k.overlaps(&r));
            assert_eq!(blob.keeps(mem, r), want, "{r}");
        }
    }
    assert!(blob.keeps(mem, Range::new(0, 1 << 45)));
    assert!(!blob.keeps(mem, Range::new(1 << 45, 1 << 46)));
}
