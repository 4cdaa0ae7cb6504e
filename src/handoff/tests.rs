//! Handoff blob tests: a round trip through fake physical memory, every
#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
//! refusal, and the golden blob.

use super::*;
use crate::fdt::{FdtWriter, WriteError};
use crate::platform::host::HostMem;
use crate::reserve::ReserveLog;
use crate::scratch::ScratchRecord;
use crate::tracker::Tracker;
use crate::tracker::chain as tracker_chain;
use alloc::vec::Vec;
use zerocopy::IntoBytes;

const RAM: [Range; 1] = [Range::new(0x10_0000, 0x4000_0000)];
const SCRATCH: [Range; 1] = [Range::new(0x20_0000, 0x420_0000)];
const DATA: Range = Range::new(0x800_0000, 0x800_3000);

/// A first kernel's handoff: a tracker with a demo subsystem's data and
/// another block, the chain in a pool at 256 MiB, the blob at 512 MiB.
fn handoff() -> (HostMem, Vec<u8>, Range, Tracker) {
    let mut mem = HostMem::new(&RAM, Range::new(0x1000_0000, 0x1100_0000));
    let scratch = Scratch::from_records(
        [ScratchRecord {
            start: SCRATCH[0].start.into(),
            size: SCRATCH[0].len().into(),
        }]
        .as_bytes(),
        &RAM,
    )
    .unwrap();
    let mut t = Tracker::new(scratch.areas()).unwrap();
    t.preserve_range(DATA.start, DATA.end).unwrap();
    t.preserve(0x900_0000, 9).unwrap();
    let root = tracker_chain::write(&t, &mut mem).unwrap();
    let mut buf = alloc::vec![0u8; 4096];
    let stamps = Stamps {
        start: 100.into(),
        written: 200.into(),
        jump: 0.into(),
    };
    let mut w = HandoffWriter::new(&mut buf, 3, stamps, &root.into(), &scratch).unwrap();
    w.subsystem("demo", &["demo-v2", "demo-v1"], Some(DATA), |w| {
        w.property_u32("blocks", 3)
    })
    .unwrap();
    w.subsystem("empty", &["empty-v1"], None, |_| Ok(()))
        .unwrap();
    let n = w.finish().unwrap().len;
    buf.truncate(n);
    let at = 0x2000_0000;
    assert!(mem.write_bytes(at, &buf));
    (mem, buf, Range::new(at, at + n as u64), t)
}

#[test]
fn a_handoff_round_trips_and_reserves_everything_once() {
    let (mem, blob, place, t) = handoff();
    let h = Handoff::parse(&blob, &RAM).unwrap();
    assert_eq!(
        (h.hop, h.stamps.start.get(), h.stamps.written.get()),
        (3, 100, 200)
    );
    assert_eq!(h.scratch.areas(), SCRATCH);
    let demo = h.subsystem("demo").unwrap();
    assert_eq!(demo.data, Some(DATA));
    assert_eq!(
        demo.pick(&["demo-v3", "demo-v1", "demo-v2"]),
        Some("demo-v1")
    );
    assert_eq!(demo.pick(&["demo-v3"]), None);
    assert_eq!(demo.node.property("blocks").unwrap().as_u32(), Ok(3));
    let names: Vec<&str> = h.subsystems().map(|s| s.name).collect();
    assert_eq!(names, ["demo", "empty"]);

    let mut log = ReserveLog::new();
    let r = restore(&mem, &h, place, &RAM, &mut log).unwrap();
    let preserved: Vec<Range> = log.of(Kept::Preserved).collect();
    assert_eq!(preserved, t.ranges().unwrap());
    let meta: Vec<Range> = log.of(Kept::Metadata).collect();
    assert_eq!(meta[0], Range::new(place.start, place.start + 4096));
    assert_eq!(meta.len() as u32, 1 + r.tracker.chain_pages);
    // Nothing is reported twice, and metadata never overlaps preserved data.
    for (i, a) in log.ranges.iter().enumerate() {
        for b in &log.ranges[i + 1..] {
            assert!(!a.0.overlaps(&b.0), "{a:?} and {b:?}");
        }
    }
}

fn parse_err(blob: &[u8]) -> HandoffError {
    Handoff::parse(blob, &RAM).unwrap_err()
}

/// The blob rewritten through a tree edit: `f` gets each (path, name,
/// value) and returns the value to keep (None drops the property).
type Edit<'f> = &'f dyn Fn(&str, &str, &[u8]) -> Option<Vec<u8>>;

fn edit(blob: &[u8], f: impl Fn(&str, &str, &[u8]) -> Option<Vec<u8>>) -> Vec<u8> {
    let fdt = Fdt::new(blob).unwrap();
    let mut buf = alloc::vec![0u8; 8192];
    let mut w = FdtWriter::new(&mut buf).unwrap();
    fn rec(w: &mut FdtWriter<'_>, n: Node<'_>, path: &str, f: Edit<'_>) {
        w.begin_node(n.name()).unwrap();
        for p in n.properties() {
            if let Some(v) = f(path, p.name, p.value) {
                w.property(p.name, &v).unwrap();
            }
        }
        for c in n.children() {
            let cp = alloc::format!("{path}/{}", c.name());
            rec(w, c, &cp, f);
        }
        w.end_node().unwrap();
    }
    rec(&mut w, fdt.root(), "", &f);
    let n = w.finish().unwrap();
    buf.truncate(n);
    // Resealed, so the checks behind the checksum are what is tested.
    let _ = super::seal(&mut buf);
    buf
}

#[test]
fn a_bad_blob_is_refused_with_a_typed_error() {
    let (_, blob, _, _) = handoff();
    assert!(matches!(parse_err(&blob[..100]), HandoffError::Fdt(_)));
    let set = |path: &'static str, name: &'static str, v: &'static [u8]| {
        edit(&blob, move |p, n, old| {
            Some(if p == path && n == name {
                v.to_vec()
            } else {
                old.to_vec()
            })
        })
    };
    let drop = |path: &'static str, name: &'static str| {
        edit(&blob, move |p, n, old| {
            (p != path || n != name).then(|| old.to_vec())
        })
    };
    assert_eq!(
        parse_err(&set("", "compatible", b"kho-handoff-v9\0")),
        HandoffError::UnknownVersion
    );
    assert_eq!(
        parse_err(&drop("", "compatible")),
        HandoffError::UnknownVersion
    );
    assert_eq!(
        parse_err(&drop("", "kho,hop")),
        HandoffError::Missing("kho,hop")
    );
    assert_eq!(
        parse_err(&drop("", "kho,csum")),
        HandoffError::Missing("kho,csum")
    );
    assert_eq!(
        parse_err(&set("", "kho,csum", b"1234")),
        HandoffError::BadProperty("kho,csum")
    );
    // Any byte changed after the blob was sealed: the FDT's structure may
    // still hold, but the sum does not.
    let (_, blob2, _, _) = handoff();
    for at in [8usize, 60, 100, blob2.len() / 2, blob2.len() - 1] {
        let mut b = blob2.clone();
        b[at] ^= 0x01;
        assert!(
            matches!(
                parse_err(&b),
                HandoffError::BadSum { .. } | HandoffError::Fdt(_)
            ),
            "byte {at}"
        );
    }
    assert_eq!(
        parse_err(&set("", "kho,tsc", b"abc")),
        HandoffError::BadProperty("kho,tsc")
    );
    assert_eq!(
        parse_err(&set("/tracker", "compatible", b"kho-tracker-v1\0")),
        HandoffError::BadProperty("tracker")
    );
    assert_eq!(
        parse_err(&drop("/tracker", "kho,root")),
        HandoffError::Missing("tracker/kho,root")
    );
    assert!(matches!(
        parse_err(&set("/scratch", "kho,areas", &[0; 16])),
        HandoffError::Scratch(_)
    ));
    assert_eq!(
        parse_err(&drop("/demo", "compatible")),
        HandoffError::BadProperty("compatible")
    );
    assert_eq!(
        parse_err(&set("/demo", "kho,data", &[1; 15])),
        HandoffError::BadProperty("kho,data")
    );
    const WRAP: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(
        parse_err(&set("/demo", "kho,data", &WRAP)),
        HandoffError::BadProperty("kho,data")
    );
}

#[test]
fn a_failed_restore_leaves_nothing_reserved() {
    let (mut mem, blob, place, _) = handoff();
    // Data outside preserved memory.
    let mut rec = [0u8; 16];
    rec[..8].copy_from_slice(&0x700_0000u64.to_le_bytes());
    rec[8..].copy_from_slice(&0x1000u64.to_le_bytes());
    let moved = edit(&blob, |p, n, old| {
        Some(if p == "/demo" && n == "kho,data" {
            rec.to_vec()
        } else {
            old.to_vec()
        })
    });
    let h = Handoff::parse(&moved, &RAM).unwrap();
    let mut log = ReserveLog::new();
    assert_eq!(
        restore(&mem, &h, place, &RAM, &mut log),
        Err(HandoffError::DataNotPreserved {
            range: Range::new(0x700_0000, 0x700_1000)
        })
    );
    assert!(log.ranges.is_empty());
    // Data half preserved: [DATA.start - 4 KiB, DATA.end).
    let mut rec = [0u8; 16];
    rec[..8].copy_from_slice(&(DATA.start - 4096).to_le_bytes());
    rec[8..].copy_from_slice(&(DATA.len() + 4096).to_le_bytes());
    let half = edit(&blob, |p, n, old| {
        Some(if p == "/demo" && n == "kho,data" {
            rec.to_vec()
        } else {
            old.to_vec()
        })
    });
    let h = Handoff::parse(&half, &RAM).unwrap();
    assert!(matches!(
        restore(&mem, &h, place, &RAM, &mut log),
        Err(HandoffError::DataNotPreserved { .. })
    ));
    assert!(log.ranges.is_empty());
    // The blob in scratch, or outside RAM.
    let h = Handoff::parse(&blob, &RAM).unwrap();
    for bad in [
        Range::new(0x30_0000, 0x30_0100),
        Range::new(0x5000_0000, 0x5000_0100),
    ] {
        assert_eq!(
            restore(&mem, &h, bad, &RAM, &mut log),
            Err(HandoffError::BadBlobPlace { range: bad })
        );
        assert!(log.ranges.is_empty());
    }
    // A corrupt tracker chain: the blob was already reserved, then rolled
    // back.
    let crate::tracker::Root::Chain(chain) = h.tracker else {
        panic!("a chain was written")
    };
    let first = chain.first_page.get();
    mem.frame_mut(first).unwrap()[0] ^= 1;
    assert!(matches!(
        restore(&mem, &h, place, &RAM, &mut log),
        Err(HandoffError::Tracker(TrackerChainError::Chain(
            crate::chain::ChainError::BadSum { .. }
        )))
    ));
    assert!(log.ranges.is_empty());
}

#[test]
fn the_blob_inside_preserved_memory_is_refused() {
    // The blob's pages would be both metadata (freed after restore) and
    // preserved data: refused, nothing reserved. Before, both were
    // reported.
    let (mut mem, blob, _, _) = handoff();
    let inside = Range::new(0x900_1000, 0x900_1000 + blob.len() as u64);
    assert!(mem.write_bytes(inside.start, &blob));
    let h = Handoff::parse(&blob, &RAM).unwrap();
    let mut log = ReserveLog::new();
    assert_eq!(
        restore(&mem, &h, inside, &RAM, &mut log),
        Err(HandoffError::BlobInPreserved {
            range: Range::new(0x900_1000, 0x900_2000)
        })
    );
    assert!(log.ranges.is_empty());
}

#[test]
fn two_subsystems_naming_the_same_bytes_are_refused() {
    // One page, two owners: refused whichever node comes first.
    let (mem, blob, place, _) = handoff();
    let rec = |a: u64, n: u64| {
        let mut r = alloc::vec![0u8; 16];
        r[..8].copy_from_slice(&a.to_le_bytes());
        r[8..].copy_from_slice(&n.to_le_bytes());
        r
    };
    // The blob again, with `data` as the `empty` node's kho,data.
    let with_empty = |data: Vec<u8>| {
        let f = Fdt::new(&blob).unwrap();
        let mut buf = alloc::vec![0u8; 8192];
        let mut w = FdtWriter::new(&mut buf).unwrap();
        w.begin_node("").unwrap();
        for p in f.root().properties() {
            w.property(p.name, p.value).unwrap();
        }
        for c in f.root().children() {
            w.begin_node(c.name()).unwrap();
            for p in c.properties() {
                w.property(p.name, p.value).unwrap();
            }
            if c.name() == "empty" {
                w.property("kho,data", &data).unwrap();
            }
            w.end_node().unwrap();
        }
        w.end_node().unwrap();
        let n = w.finish().unwrap();
        buf.truncate(n);
        super::seal(&mut buf).unwrap();
        buf
    };
    for (a, n) in [
        (DATA.start, 0x1000),
        (DATA.start + 0x2fff, 1),
        (DATA.start - 0x1000, 0x1001),
    ] {
        let b = with_empty(rec(a, n));
        let h = Handoff::parse(&b, &RAM).unwrap();
        let mut log = ReserveLog::new();
        assert!(
            matches!(
                restore(&mem, &h, place, &RAM, &mut log),
                Err(HandoffError::DataOverlap { .. })
            ),
            "{a:#x}+{n:#x}"
        );
        assert!(log.ranges.is_empty());
    }
    // Next to it, not over it: fine (the other data must be preserved).
    let b = with_empty(rec(0x900_0000, 0x1000));
    let h = Handoff::parse(&b, &RAM).unwrap();
    let mut log = ReserveLog::new();
    assert!(restore(&mem, &h, place, &RAM, &mut log).is_ok());
}

#[test]
fn subsystems_cannot_take_reserved_names() {
    let (_, blob, _, _) = handoff();
    let h = Handoff::parse(&blob, &RAM).unwrap();
    let mut buf = alloc::vec![0u8; 4096];
    let mut w = HandoffWriter::new(&mut buf, 0, Stamps::default(), &h.tracker, &h.scratch).unwrap();
    for name in RESERVED_NAMES {
        assert_eq!(
            w.subsystem(name, &["x-v1"], None, |_| Ok(())),
            Err(WriteError::DuplicateNode)
        );
    }
}

#[test]
fn golden_handoff_pins_the_layout_and_dtc_reads_it() {
    let (_, blob, _, _) = handoff();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/handoff-v2.dtb");
    if std::env::var_os("KHO_BLESS").is_some() {
        std::fs::write(&path, &blob).unwrap();
    }
    let golden = std::fs::read(&path).expect("tests/golden/handoff-v2.dtb (KHO_BLESS=1 writes it)");
    assert_eq!(
        blob, golden,
        "the kho-handoff-v2 layout changed: that needs a new version string"
    );
    let h = Handoff::parse(&golden, &RAM).unwrap();
    assert_eq!(h.subsystem("demo").unwrap().data, Some(DATA));
    // dtc reads it without a warning, when it is installed.
    if let Ok(out) = std::process::Command::new("dtc")
        .args(["-I", "dtb", "-O", "dts", "-o", "-"])
        .arg(&path)
        .output()
    {
        let dts = std::string::String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}",
            std::string::String::from_utf8_lossy(&out.stderr)
        );
        assert!(dts.contains("compatible = \"kho-handoff-v2\";"), "{dts}");
        assert!(dts.contains("compatible = \"demo-v2\\0demo-v1\";"), "{dts}");
    }
}
