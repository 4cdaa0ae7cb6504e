//! Fuzz the orchestrator's reader of the `luo` node (`kho-luo-v2`): bytes
//! flipped in a valid handoff blob with two sessions and objects of several
//! payloads, footprints and origins. Every outcome must be an error, or
//! sessions with unique names, objects with unique tokens and at least one
//! payload each; never a panic. Then a kernel that reads `memfd-v1` only
//! restores it, carrying the sealed file by its footprint: nothing it
//! frees may overlap a carried footprint.
#![no_main]

use arbitrary::Arbitrary;
use kho::abi::handoff::Stamps;
use kho::abi::scratch::ScratchRecord;
use kho::handoff::Handoff;
use kho::memfd::{Memfd, Seals, seal};
use kho::memfd::{MemfdHandler, V1, V2};
use kho::platform::host::HostMem;
use kho::platform::{FrameAlloc, PhysMem};
use kho::ranges::Range;
use kho::reserve::ReserveLog;
use kho::scratch::Scratch;
use kho::{Freeze, Incoming, Outgoing};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use zerocopy::IntoBytes;

#[derive(Arbitrary, Debug)]
struct Input {
    flips: Vec<(u16, u8)>,
}

const RAM: Range = Range::new(0x10_0000, 0x4000_0000);
const SCRATCH: Range = Range::new(0x20_0000, 0x420_0000);

/// The blob (through the front door), the memory it describes, and where
/// it lies.
fn blob() -> &'static (Vec<u8>, HostMem, Range) {
    static B: OnceLock<(Vec<u8>, HostMem, Range)> = OnceLock::new();
    B.get_or_init(|| {
        let mut mem = HostMem::new(&[RAM], Range::new(0x1000_0000, 0x4000_0000));
        let rec = [ScratchRecord {
            start: SCRATCH.start.into(),
            size: SCRATCH.len().into(),
        }];
        let scratch = Scratch::from_records(rec.as_bytes(), &[RAM]).unwrap();
        let mut out = Outgoing::<HostMem>::new(scratch).unwrap();
        let files = out
            .register(MemfdHandler::new(&[V2, V1], &[V2, V1]))
            .unwrap();
        for (s, tok, seals) in [
            ("a", 1u64, Seals::empty()),
            ("a", 0x20, seal::GROW),
            ("b", 7, Seals::empty()),
        ] {
            if out.objects().all(|(x, _, _)| x != s) {
                out.create_session(s).unwrap();
            }
            let mut f = Memfd::new(true);
            f.write(&mut mem, 0, &[1; 9000]).unwrap();
            f.add_seals(seals).unwrap();
            out.preserve(files, s, tok, f, &mut mem).unwrap();
        }
        let mut frozen = out.freeze(&mut mem, Freeze::AllowLoss).unwrap();
        let mut buf = vec![0u8; 16384];
        let n = frozen
            .write(&mut mem, &mut buf, 0, Stamps::default())
            .unwrap()
            .len;
        buf.truncate(n);
        let at = mem.alloc_frames(2).unwrap();
        assert!(mem.write_bytes(at, &buf));
        (buf, mem, Range::new(at, at + n as u64))
    })
}

fuzz_target!(|input: Input| {
    let (b0, mem0, at) = blob();
    let mut b = b0.clone();
    for &(at, x) in &input.flips {
        let at = usize::from(at) % b.len();
        b[at] ^= x;
    }
    // Resealed: this target is about the node's structure (whole_restore
    // fuzzes the checksum).
    let _ = kho::handoff::seal(&mut b);
    if Handoff::parse(&b, &[RAM]).is_err() {
        return;
    }
    let mut mem = mem0.clone();
    let mut reserved = ReserveLog::new();
    let Ok(mut inc) = Incoming::<HostMem>::new(&mem, &b, *at, &[RAM], &mut reserved) else {
        return;
    };
    let files = inc.register(MemfdHandler::new(&[V1], &[V1])).unwrap();
    if inc.unread().is_some() {
        return;
    }
    let objs: Vec<(String, u64)> = inc.objects().map(|(s, t, _)| (s.to_owned(), t)).collect();
    for (i, a) in objs.iter().enumerate() {
        assert!(!objs[i + 1..].contains(a), "{a:?} twice");
    }
    let mut inc = inc.restore(&mut mem);
    for (s, tok) in &objs {
        let _ = inc.take(&files.key(s, *tok), &mut mem);
    }
    let Ok(done) = inc.finish(&mut mem) else {
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
