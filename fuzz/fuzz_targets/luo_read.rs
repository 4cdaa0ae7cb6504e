//! Fuzz the orchestrator's reader of the `luo` node (`kho-luo-v2`): bytes
//! flipped in a valid handoff blob with two sessions and objects of several
//! payloads, footprints and origins. Every outcome must be an error, or
//! sessions with unique names, objects with unique tokens and at least one
//! payload each; never a panic. Then a kernel that reads `memfd-v1` only
//! restores it, carrying the sealed file by its footprint: nothing it
//! frees may overlap a carried footprint.
#![no_main]

use arbitrary::Arbitrary;
use kho::handoff::{Handoff, HandoffWriter, Stamps};
use kho::luo::memfd::{MemfdHandler, V1, V2};
use kho::luo::{Luo, RestoreCtx};
use kho::memfd::{Memfd, Seals, seal};
use kho::platform::host::HostMem;
use kho::ranges::Range;
use kho::scratch::{Scratch, ScratchRecord};
use kho::tracker::{Tracker, handover};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use zerocopy::IntoBytes;

#[derive(Arbitrary, Debug)]
struct Input {
    flips: Vec<(u16, u8)>,
}

const RAM: Range = Range::new(0x10_0000, 0x4000_0000);
const SCRATCH: Range = Range::new(0x20_0000, 0x420_0000);

fn blob() -> &'static (Vec<u8>, HostMem, Tracker, Scratch) {
    static B: OnceLock<(Vec<u8>, HostMem, Tracker, Scratch)> = OnceLock::new();
    B.get_or_init(|| {
        let mut mem = HostMem::new(&[RAM], Range::new(0x1000_0000, 0x4000_0000));
        let rec = [ScratchRecord {
            start: SCRATCH.start.into(),
            size: SCRATCH.len().into(),
        }];
        let scratch = Scratch::from_records(rec.as_bytes(), &[RAM]).unwrap();
        let mut t = Tracker::new(scratch.areas()).unwrap();
        let mut luo = Luo::<HostMem>::new();
        luo.register(MemfdHandler::new(&[V2, V1], &[V2, V1]))
            .unwrap();
        for (s, tok, seals) in [
            ("a", 1u64, Seals::empty()),
            ("a", 0x20, seal::GROW),
            ("b", 7, Seals::empty()),
        ] {
            if luo.objects().all(|(x, _, _)| x != s) {
                luo.create_session(s).unwrap();
            }
            let mut f = Memfd::new(true);
            f.write(&mut mem, 0, &[1; 9000]).unwrap();
            f.add_seals(seals).unwrap();
            luo.preserve(s, tok, "memfd", f, &mut mem, &mut t).unwrap();
        }
        luo.freeze(&mut mem, &mut t, None, false).unwrap();
        let root = handover::write(&t, &mut mem).unwrap();
        let mut buf = vec![0u8; 16384];
        let mut w = HandoffWriter::new(&mut buf, 0, Stamps::default(), &root, &scratch).unwrap();
        luo.write(&mut w).unwrap();
        let n = w.finish().unwrap().len;
        buf.truncate(n);
        (buf, mem, t, scratch)
    })
}

fuzz_target!(|input: Input| {
    let (b0, mem0, t, scratch) = blob();
    let mut b = b0.clone();
    for &(at, x) in &input.flips {
        let at = usize::from(at) % b.len();
        b[at] ^= x;
    }
    // Resealed: this target is about the node's structure (whole_restore
    // fuzzes the checksum).
    let _ = kho::handoff::seal(&mut b);
    let Ok(h) = Handoff::parse(&b, &[RAM]) else {
        return;
    };
    let mut luo = Luo::<HostMem>::new();
    luo.register(MemfdHandler::new(&[V1], &[V1])).unwrap();
    if luo.incoming(&h).is_err() {
        return;
    }
    let objs: Vec<(String, u64)> = luo.objects().map(|(s, t, _)| (s.to_owned(), t)).collect();
    for (i, a) in objs.iter().enumerate() {
        assert!(!objs[i + 1..].contains(a), "{a:?} twice");
    }
    let mut mem = mem0.clone();
    let Ok(mut claims) = mem.hand_over(t) else {
        return;
    };
    let mut ctx = RestoreCtx {
        ram: &[RAM],
        scratch: scratch.areas(),
        claims: &mut claims,
    };
    for (s, tok) in &objs {
        let _ = luo
            .retrieve::<Memfd>(s, *tok, kho::luo::memfd::FAMILY, &mut mem, &mut ctx)
            .map(|_| ());
        let _ = luo.take::<Memfd>(s, *tok, kho::luo::memfd::FAMILY);
    }
    let Ok(done) = luo.finish(&mut mem, claims, &[RAM], scratch.areas()) else {
        return;
    };
    for c in &done.carried {
        for f in c.footprint() {
            assert!(
                done.ranges.iter().all(|r| !r.overlaps(f)),
                "{f} carried and freed"
            );
        }
    }
});
