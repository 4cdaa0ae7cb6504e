//! FDT conformance: our writer and reader against each other, against the
//! `fdt` crate (an independent reader) and against dtc in both directions.

use kho::fdt::{Fdt, FdtError, FdtWriter, MAX_DEPTH, PropError, WalkItem, WriteError};
use proptest::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A device tree as plain data: the model every reader is compared with.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tree {
    name: String,
    props: Vec<(String, Vec<u8>)>,
    children: Vec<Tree>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Blob {
    reservations: Vec<(u64, u64)>,
    root: Tree,
}

fn write_tree(w: &mut FdtWriter<'_>, t: &Tree) -> Result<(), WriteError> {
    w.begin_node(&t.name)?;
    for (n, v) in &t.props {
        w.property(n, v)?;
    }
    for c in &t.children {
        write_tree(w, c)?;
    }
    w.end_node()
}

fn write_blob(b: &Blob) -> Vec<u8> {
    write_blob_with(b, false)
}

fn write_blob_with(b: &Blob, hints: bool) -> Vec<u8> {
    let mut buf = vec![0u8; 1 << 20];
    let mut w = if hints {
        FdtWriter::with_skip_hints(&mut buf)
    } else {
        FdtWriter::new(&mut buf)
    }
    .unwrap();
    for &(a, s) in &b.reservations {
        w.reserve_memory(a, s).unwrap();
    }
    write_tree(&mut w, &b.root).unwrap();
    let n = w.finish().unwrap();
    buf.truncate(n);
    buf
}

fn read_node(n: kho::fdt::Node<'_>) -> Tree {
    Tree {
        name: n.name().to_owned(),
        props: n
            .properties()
            .map(|p| (p.name.to_owned(), p.value.to_vec()))
            .collect(),
        children: n.children().map(read_node).collect(),
    }
}

/// Rebuilds the tree from the flat `walk`, which must agree with the
/// node API.
fn read_walk(f: &Fdt<'_>) -> Tree {
    let mut stack: Vec<Tree> = Vec::new();
    let mut done = None;
    for item in f.walk() {
        match item {
            WalkItem::Node { name, depth } => {
                assert_eq!(depth, stack.len());
                stack.push(Tree {
                    name: name.to_owned(),
                    props: vec![],
                    children: vec![],
                });
            }
            WalkItem::Property(p) => stack
                .last_mut()
                .unwrap()
                .props
                .push((p.name.to_owned(), p.value.to_vec())),
            WalkItem::EndNode => {
                let t = stack.pop().unwrap();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(t),
                    None => done = Some(t),
                }
            }
        }
    }
    done.expect("walk ended without closing the root")
}

fn read_ours(blob: &[u8]) -> Blob {
    let f = Fdt::new(blob).unwrap_or_else(|e| panic!("our reader refused the blob: {e}"));
    assert_eq!(
        read_walk(&f),
        read_node(f.root()),
        "walk and node API disagree"
    );
    Blob {
        reservations: f.reservations().map(|r| (r.address, r.size)).collect(),
        root: read_node(f.root()),
    }
}

fn read_fdt_node(n: fdt::node::FdtNode<'_, '_>, root: bool) -> Tree {
    Tree {
        name: if root {
            String::new()
        } else {
            n.name.to_owned()
        },
        props: n
            .properties()
            .map(|p| (p.name.to_owned(), p.value.to_vec()))
            .collect(),
        children: n.children().map(|c| read_fdt_node(c, false)).collect(),
    }
}

fn read_fdt_crate(blob: &[u8]) -> Blob {
    let f = fdt::Fdt::new(blob).expect("the fdt crate refused the blob");
    Blob {
        reservations: f
            .memory_reservations()
            .map(|r| (r.address() as u64, r.size() as u64))
            .collect(),
        root: read_fdt_node(f.find_node("/").expect("root"), true),
    }
}

// ---------------------------------------------------------------- dtc

fn dtc(args: &[&str], input: &[u8]) -> (Vec<u8>, String) {
    let mut child = Command::new("dtc")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dtc not found: install device-tree-compiler (./x.py setup)");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "dtc {args:?} failed: {err}");
    (out.stdout, err)
}

fn dtb_to_dts(blob: &[u8]) -> (String, String) {
    let (out, err) = dtc(&["-I", "dtb", "-O", "dts", "-o", "-", "-"], blob);
    (String::from_utf8(out).unwrap(), err)
}

fn dts_to_dtb(src: &[u8]) -> Vec<u8> {
    let (out, err) = dtc(&["-I", "dts", "-O", "dtb", "-o", "-", "-"], src);
    assert!(err.is_empty(), "dtc warned compiling:\n{err}");
    out
}

// ------------------------------------------------------- tree generation

/// A small deterministic generator (splitmix64), so dtc tests are
/// reproducible without proptest's shrinking (each dtc call is a process).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_value(r: &mut Rng) -> Vec<u8> {
    match r.below(5) {
        0 => vec![],
        1 => (r.next() as u32).to_be_bytes().to_vec(),
        2 => r.next().to_be_bytes().to_vec(),
        3 => format!("text-{}\0", r.below(1000)).into_bytes(),
        _ => (0..r.below(40)).map(|_| r.next() as u8).collect(),
    }
}

fn random_tree(r: &mut Rng, name: String, depth: u32) -> Tree {
    let nprops = r.below(6) as usize;
    let mut props: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..nprops {
        // A few shared names exercise deduplication.
        let pname = if r.below(3) == 0 {
            format!("kho,shared-{}", r.below(3))
        } else {
            format!("p{i}-{}", r.below(100))
        };
        if props.iter().any(|(n, _)| *n == pname) {
            continue;
        }
        props.push((pname, random_value(r)));
    }
    let nkids = if depth >= 5 { 0 } else { r.below(4) as usize };
    let children = (0..nkids)
        .map(|i| random_tree(r, format!("node-{i}"), depth + 1))
        .collect();
    Tree {
        name,
        props,
        children,
    }
}

fn random_blob(seed: u64) -> Blob {
    let mut r = Rng(seed);
    let reservations = (0..r.below(3))
        .map(|_| (r.next() & !0xfff, (r.below(64) + 1) << 12))
        .collect();
    Blob {
        reservations,
        root: random_tree(&mut r, String::new(), 0),
    }
}

fn tree_strategy() -> impl Strategy<Value = Blob> {
    any::<u64>().prop_map(random_blob)
}

// --------------------------------------------------------------- tests

proptest! {
    #[test]
    fn writer_reader_round_trip(b in tree_strategy()) {
        let blob = write_blob(&b);
        prop_assert_eq!(read_ours(&blob), b);
    }

    #[test]
    fn fdt_crate_agrees_with_our_reader(b in tree_strategy()) {
        let blob = write_blob(&b);
        prop_assert_eq!(read_fdt_crate(&blob), read_ours(&blob));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        walk_if_valid(&bytes);
    }

    #[test]
    fn corrupted_blobs_never_panic(seed in any::<u64>(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut blob = write_blob(&random_blob(seed));
        for (at, x) in flips {
            let i = at % blob.len();
            blob[i] ^= x | 1;
        }
        walk_if_valid(&blob);
        // Truncation anywhere is an error or a shorter valid blob, never a panic.
        let cut = seed as usize % blob.len();
        walk_if_valid(&blob[..cut]);
    }
}

/// Reads everything a valid blob offers; must terminate without panicking.
fn walk_if_valid(bytes: &[u8]) {
    if let Ok(f) = Fdt::new(bytes) {
        let t = read_node(f.root());
        let _ = f.reservations().count();
        let _ = f.find_property("/node-0/node-1", "p0-1");
        let _ = t;
    }
}

#[test]
fn dtc_decompiles_our_blobs_without_warnings_and_agrees() {
    for seed in 0..40 {
        let b = random_blob(seed);
        let blob = write_blob(&b);
        let (dts, warnings) = dtb_to_dts(&blob);
        assert!(
            warnings.is_empty(),
            "seed {seed}: dtc warned:\n{warnings}\n{dts}"
        );
        let back = dts_to_dtb(dts.as_bytes());
        assert_eq!(
            read_ours(&back),
            b,
            "seed {seed}: dtc's recompiled blob reads differently"
        );
    }
}

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fdt/corpus");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    assert!(v.len() >= 7, "corpus missing");
    v
}

/// Rebuilds `blob` with a NOP token after every token of the structure block.
fn with_nops(blob: &[u8]) -> Vec<u8> {
    let be = |o: usize| u32::from_be_bytes(blob[o..o + 4].try_into().unwrap());
    let (st_off, st_size) = (be(8) as usize, be(36) as usize);
    let st = &blob[st_off..st_off + st_size];
    let mut out_st = Vec::new();
    let mut o = 0;
    while o < st.len() {
        let tok = u32::from_be_bytes(st[o..o + 4].try_into().unwrap());
        let len = match tok {
            1 => 4 + (st[o + 4..].iter().position(|&b| b == 0).unwrap() + 1).next_multiple_of(4),
            3 => {
                12 + (u32::from_be_bytes(st[o + 4..o + 8].try_into().unwrap()) as usize)
                    .next_multiple_of(4)
            }
            _ => 4,
        };
        out_st.extend_from_slice(&st[o..o + len]);
        if tok != 9 {
            out_st.extend_from_slice(&4u32.to_be_bytes());
        }
        o += len;
    }
    let (s_off, s_size) = (be(12) as usize, be(32) as usize);
    let mut out = blob[..st_off].to_vec();
    out.extend_from_slice(&out_st);
    let new_s_off = out.len();
    out.extend_from_slice(&blob[s_off..s_off + s_size]);
    let total = out.len() as u32;
    out[4..8].copy_from_slice(&total.to_be_bytes());
    out[12..16].copy_from_slice(&(new_s_off as u32).to_be_bytes());
    out[36..40].copy_from_slice(&(out_st.len() as u32).to_be_bytes());
    out
}

#[test]
fn reads_dtc_compiled_corpus() {
    for path in corpus() {
        let src = std::fs::read(&path).unwrap();
        let blob = dts_to_dtb(&src);
        let ours = read_ours(&blob);
        assert_eq!(
            ours,
            read_fdt_crate(&blob),
            "{}: fdt crate disagrees",
            path.display()
        );
        // NOPs anywhere change nothing.
        let nopped = with_nops(&blob);
        assert_ne!(nopped, blob);
        assert_eq!(
            read_ours(&nopped),
            ours,
            "{}: NOPs changed the tree",
            path.display()
        );
        // Our writer re-emits the same tree: dtc decompiles both identically.
        let rewritten = write_blob(&ours);
        let (a, wa) = dtb_to_dts(&blob);
        let (b, wb) = dtb_to_dts(&rewritten);
        assert!(
            wa.is_empty() && wb.is_empty(),
            "{}: dtc warned: {wa}{wb}",
            path.display()
        );
        assert_eq!(
            a,
            b,
            "{}: rewritten blob decompiles differently",
            path.display()
        );
    }
}

#[test]
fn corpus_specifics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fdt/corpus");
    let blob = dts_to_dtb(&std::fs::read(dir.join("reservations.dts")).unwrap());
    let f = Fdt::new(&blob).unwrap();
    let r: Vec<_> = f.reservations().map(|r| (r.address, r.size)).collect();
    assert_eq!(
        r,
        [(0x1000_0000, 0x4000), (0xffff_ffff_0000_0000, 0x20_0000)]
    );
    let compat: Vec<_> = f
        .root()
        .property("compatible")
        .unwrap()
        .as_str_list()
        .unwrap()
        .collect();
    assert_eq!(compat, ["kho,test-v1", "kho,test"]);

    let blob = dts_to_dtb(&std::fs::read(dir.join("unit-addresses.dts")).unwrap());
    let f = Fdt::new(&blob).unwrap();
    assert_eq!(f.find_node("/soc/serial@2f8").unwrap().name(), "serial@2f8");
    // Without a unit address the first match is found.
    assert_eq!(f.find_node("/soc/serial").unwrap().name(), "serial@3f8");
    assert_eq!(
        f.find_property("/memory@100000000", "device_type")
            .unwrap()
            .as_str(),
        Ok("memory")
    );
    assert!(f.find_node("/soc/serial@999").is_none());

    let blob = dts_to_dtb(&std::fs::read(dir.join("deep-nesting.dts")).unwrap());
    let f = Fdt::new(&blob).unwrap();
    let path: String = (0..60).map(|i| format!("/level-{i}")).collect();
    assert_eq!(f.find_property(&path, "depth").unwrap().as_u32(), Ok(59));

    let blob = dts_to_dtb(&std::fs::read(dir.join("handoff-like.dts")).unwrap());
    let f = Fdt::new(&blob).unwrap();
    assert_eq!(
        f.find_property("/", "preserved-memory-map")
            .unwrap()
            .as_u64(),
        Ok(0x1234_5000)
    );
    assert_eq!(
        f.find_property("/memfd", "blob-size").unwrap().as_u32(),
        Err(PropError::WrongSize {
            expected: 4,
            actual: 8
        })
    );
}

#[test]
fn typed_values_are_zero_copy_references() {
    use zerocopy::byteorder::little_endian::{U32, U64};
    use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};
    #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, PartialEq)]
    #[repr(C)]
    struct Rec {
        phys: U64,
        pages: U32,
        flags: U32,
    }
    let recs = [
        Rec {
            phys: 0x1000.into(),
            pages: 3.into(),
            flags: 1.into(),
        },
        Rec {
            phys: 0x9000.into(),
            pages: 1.into(),
            flags: 0.into(),
        },
    ];
    let mut buf = [0u8; 512];
    let mut w = FdtWriter::new(&mut buf).unwrap();
    w.begin_node("").unwrap();
    w.property_struct("one", &recs[0]).unwrap();
    w.property_struct("many", &recs[..]).unwrap();
    w.property_string_list("compatible", &["kho-v2", "kho-v1"])
        .unwrap();
    w.property_u64("big", 0x0102_0304_0506_0708).unwrap();
    w.property_empty("flag").unwrap();
    w.end_node().unwrap();
    let n = w.finish().unwrap();
    let f = Fdt::new(&buf[..n]).unwrap();
    let root = f.root();
    let one: &Rec = root.property("one").unwrap().as_struct().unwrap();
    assert_eq!(one, &recs[0]);
    // The reference points into the blob itself.
    let p = one as *const Rec as usize;
    assert!(p >= buf.as_ptr() as usize && p < buf.as_ptr() as usize + n);
    let many: &[Rec] = root.property("many").unwrap().as_slice_of().unwrap();
    assert_eq!(many, &recs[..]);
    assert_eq!(
        root.property("big").unwrap().value,
        [1, 2, 3, 4, 5, 6, 7, 8]
    );
    assert_eq!(root.property("flag").unwrap().value, b"");
    assert_eq!(
        root.property("one")
            .unwrap()
            .as_struct::<U64>()
            .unwrap_err(),
        PropError::WrongSize {
            expected: 8,
            actual: 16
        }
    );
    assert_eq!(
        root.property("flag").unwrap().as_str(),
        Err(PropError::NotAString)
    );
}

#[test]
fn property_names_are_deduplicated() {
    let mut buf = [0u8; 4096];
    let mut w = FdtWriter::new(&mut buf).unwrap();
    w.begin_node("").unwrap();
    for i in 0..10 {
        w.begin_node(&format!("n{i}")).unwrap();
        w.property_u32("compatible-ish", i).unwrap();
        w.property_u32("reg-ish", i).unwrap();
        w.end_node().unwrap();
    }
    w.end_node().unwrap();
    let n = w.finish().unwrap();
    let size_strings = u32::from_be_bytes(buf[32..36].try_into().unwrap());
    assert_eq!(size_strings as usize, "compatible-ish\0reg-ish\0".len());
    assert_eq!(Fdt::new(&buf[..n]).unwrap().root().children().count(), 10);
}

#[test]
fn many_unique_names_still_deduplicate() {
    // More names than the writer's hash table: the linear fallback must keep
    // deduplicating.
    let names: Vec<String> = (0..1500).map(|i| format!("u{i}")).collect();
    let mut buf = vec![0u8; 1 << 20];
    let mut w = FdtWriter::new(&mut buf).unwrap();
    w.begin_node("").unwrap();
    for round in 0..2 {
        w.begin_node(&format!("r{round}")).unwrap();
        for n in &names {
            w.property_u32(n, round).unwrap();
        }
        w.end_node().unwrap();
    }
    w.end_node().unwrap();
    let total = w.finish().unwrap();
    let size_strings = u32::from_be_bytes(buf[32..36].try_into().unwrap()) as usize;
    assert_eq!(
        size_strings,
        names.iter().map(|n| n.len() + 1).sum::<usize>()
    );
    let f = Fdt::new(&buf[..total]).unwrap();
    assert_eq!(f.find_property("/r1", "u1499").unwrap().as_u32(), Ok(1));
}

#[test]
fn writer_misuse_is_a_typed_error() {
    let mut buf = [0u8; 1024];
    let mut w = FdtWriter::new(&mut buf).unwrap();
    assert_eq!(w.reserve_memory(0, 0), Err(WriteError::EmptyReservation));
    assert_eq!(w.property_u32("x", 1), Err(WriteError::NoOpenNode));
    assert_eq!(w.end_node(), Err(WriteError::NoOpenNode));
    assert_eq!(w.begin_node("notroot"), Err(WriteError::RootName));
    w.begin_node("").unwrap();
    assert_eq!(
        w.reserve_memory(0, 1),
        Err(WriteError::ReservationAfterNodes)
    );
    assert_eq!(w.begin_node(""), Err(WriteError::BadNodeName));
    assert_eq!(w.begin_node("a/b"), Err(WriteError::BadNodeName));
    assert_eq!(w.begin_node("a@1@2"), Err(WriteError::BadNodeName));
    assert_eq!(
        w.property_u32("bad name", 1),
        Err(WriteError::BadPropertyName)
    );
    assert_eq!(w.property_u32("", 1), Err(WriteError::BadPropertyName));
    assert_eq!(w.property_u32("kho,skip", 1), Err(WriteError::ReservedName));
    w.begin_node("child").unwrap();
    w.end_node().unwrap();
    assert_eq!(
        w.property_u32("late", 1),
        Err(WriteError::PropertyAfterSubnode)
    );
    w.end_node().unwrap();
    assert_eq!(w.begin_node(""), Err(WriteError::SecondRoot));
    assert!(w.finish().is_ok());

    let mut buf = [0u8; 1024];
    let w = FdtWriter::new(&mut buf).unwrap();
    assert_eq!(w.finish(), Err(WriteError::Unfinished));

    let mut buf = vec![0u8; 1 << 16];
    let mut w = FdtWriter::new(&mut buf).unwrap();
    w.begin_node("").unwrap();
    for _ in 1..MAX_DEPTH {
        w.begin_node("d").unwrap();
    }
    assert_eq!(w.begin_node("d"), Err(WriteError::TooDeep));
}

#[test]
fn small_buffers_fail_cleanly_and_exactly() {
    let b = random_blob(7);
    let full = write_blob(&b);
    // Every buffer smaller than the blob fails with NoSpace (never panics);
    // a buffer of exactly the blob's size succeeds with the same bytes.
    for len in 0..full.len() {
        let mut buf = vec![0u8; len];
        let r = FdtWriter::new(&mut buf).and_then(|mut w| {
            for &(a, s) in &b.reservations {
                w.reserve_memory(a, s)?;
            }
            write_tree(&mut w, &b.root)?;
            w.finish()
        });
        assert!(
            matches!(r, Err(WriteError::NoSpace { .. })),
            "len {len}: {r:?}"
        );
    }
    let mut buf = vec![0u8; full.len()];
    let mut w = FdtWriter::new(&mut buf).unwrap();
    for &(a, s) in &b.reservations {
        w.reserve_memory(a, s).unwrap();
    }
    write_tree(&mut w, &b.root).unwrap();
    assert_eq!(w.finish(), Ok(full.len()));
    assert_eq!(buf, full);
}

// ------------------------------------------------------------ bad input

fn sample() -> Vec<u8> {
    write_blob(&random_blob(3))
}

fn set32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

fn get32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().unwrap())
}

#[test]
fn header_errors() {
    let good = sample();
    assert!(matches!(
        Fdt::new(&good[..39]),
        Err(FdtError::Truncated { needed: 40, .. })
    ));
    assert!(matches!(
        Fdt::new(&good[..good.len() - 1]),
        Err(FdtError::Truncated { .. })
    ));
    let mut b = good.clone();
    set32(&mut b, 0, 0xfeedd00d);
    assert_eq!(Fdt::new(&b).unwrap_err(), FdtError::BadMagic(0xfeedd00d));
    let mut b = good.clone();
    set32(&mut b, 20, 15);
    assert!(matches!(
        Fdt::new(&b),
        Err(FdtError::UnsupportedVersion { version: 15, .. })
    ));
    // Labelled version 16, the same blob reads the same: the structure
    // block's size is found by walking it, whatever the 10th word says.
    let mut b = good.clone();
    set32(&mut b, 20, 16);
    set32(&mut b, 36, 0xdead_beef);
    assert_eq!(read_ours(&b), read_ours(&good));
    let mut b = good.clone();
    set32(&mut b, 24, 18);
    assert!(matches!(
        Fdt::new(&b),
        Err(FdtError::UnsupportedVersion {
            last_comp_version: 18,
            ..
        })
    ));
    let mut b = good.clone();
    set32(&mut b, 8, get32(&good, 8) + 2);
    assert!(matches!(Fdt::new(&b), Err(FdtError::Misaligned(_))));
    let mut b = good.clone();
    set32(&mut b, 16, 44);
    assert!(matches!(Fdt::new(&b), Err(FdtError::Misaligned(_))));
    let mut b = good.clone();
    set32(&mut b, 36, get32(&good, 36) + 0x1000);
    assert!(matches!(Fdt::new(&b), Err(FdtError::OutOfBounds(_))));
    let mut b = good.clone();
    set32(&mut b, 12, get32(&good, 8)); // strings on top of the structure
    assert!(matches!(Fdt::new(&b), Err(FdtError::Overlap(..))));
    let mut b = good.clone();
    set32(&mut b, 12, 0xffff_fff0);
    assert!(matches!(Fdt::new(&b), Err(FdtError::OutOfBounds(_))));
}

/// A hand-assembled blob: `st` is the structure block, `strings` the strings.
fn assemble(st: &[u32], strings: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 40 + 16];
    let st_off = b.len();
    for w in st {
        b.extend_from_slice(&w.to_be_bytes());
    }
    let s_off = b.len();
    b.extend_from_slice(strings);
    let total = b.len();
    for (i, v) in [
        0xd00dfeed,
        total as u32,
        st_off as u32,
        s_off as u32,
        40,
        17,
        16,
        0,
        strings.len() as u32,
        (s_off - st_off) as u32,
    ]
    .into_iter()
    .enumerate()
    {
        set32(&mut b, i * 4, v);
    }
    b
}

#[test]
fn structure_errors() {
    let name = |s: &str| -> u32 { u32::from_be_bytes(s.as_bytes().try_into().unwrap()) };
    // Minimal valid tree: root with one property.
    let ok = assemble(&[1, 0, 3, 4, 0, 7, 2, 9], b"abc\0");
    assert_eq!(
        Fdt::new(&ok)
            .unwrap()
            .root()
            .property("abc")
            .unwrap()
            .as_u32(),
        Ok(7)
    );
    let e = |st: &[u32], s: &[u8]| Fdt::new(&assemble(st, s)).unwrap_err();
    assert_eq!(e(&[1, 0, 2], b""), FdtError::MissingEnd);
    assert!(matches!(e(&[1, 0, 9], b""), FdtError::EarlyEnd { .. }));
    assert_eq!(e(&[1, 0, 2, 9, 4], b""), FdtError::DataAfterEnd);
    assert!(matches!(
        e(&[1, 0, 2, 2, 9], b""),
        FdtError::UnexpectedToken { token: 2, .. }
    ));
    assert!(matches!(
        e(&[1, 0, 7, 2, 9], b""),
        FdtError::UnexpectedToken { token: 7, .. }
    ));
    assert!(matches!(
        e(&[3, 0, 0, 1, 0, 2, 9], b"a\0"),
        FdtError::UnexpectedToken { token: 3, .. }
    ));
    assert!(matches!(
        e(&[1, 0, 2, 1, 0, 2, 9], b""),
        FdtError::UnexpectedToken { token: 1, .. }
    ));
    assert_eq!(e(&[9], b""), FdtError::NoRoot);
    // Property after a subnode.
    assert!(matches!(
        e(&[1, 0, 1, name("a\0\0\0"), 2, 3, 0, 0, 2, 9], b"p\0"),
        FdtError::UnexpectedToken { token: 3, .. }
    ));
    // Name offset out of range, and in the middle of nowhere.
    assert!(matches!(
        e(&[1, 0, 3, 0, 9, 2, 9], b"p\0"),
        FdtError::BadNameOffset { nameoff: 9, .. }
    ));
    assert_eq!(
        e(&[1, 0, 3, 0, 0, 2, 9], b"p"),
        FdtError::UnterminatedStrings
    );
    assert!(matches!(
        e(&[1, 0, 3, 0, 1, 2, 9], b"a\0"),
        FdtError::BadNameOffset { nameoff: 1, .. }
    ));
    // Property value longer than the block.
    assert!(matches!(
        e(&[1, 0, 3, 100, 0, 2, 9], b"p\0"),
        FdtError::ValueOutOfBounds { .. }
    ));
    assert!(matches!(
        e(&[1, 0, 3, 0xffff_fffe, 0, 2, 9], b"p\0"),
        FdtError::ValueOutOfBounds { .. }
    ));
    // Unterminated node name (no NUL before the block ends).
    assert!(matches!(
        e(&[1, 0, 1, name("abcd")], b""),
        FdtError::UnterminatedName { .. }
    ));
    // Illegal characters.
    assert!(matches!(
        e(&[1, 0, 1, name("a/b\0"), 2, 2, 9], b""),
        FdtError::BadName { .. }
    ));
    assert!(matches!(
        e(&[1, 0, 3, 0, 0, 2, 9], b"a b\0"),
        FdtError::BadStrings { offset: 1 }
    ));
    assert!(matches!(
        e(&[1, name("x\0\0\0"), 2, 9], b""),
        FdtError::BadName { .. }
    ));
    // Too deep.
    let mut st = vec![1, 0];
    for _ in 0..MAX_DEPTH {
        st.extend([1, name("d\0\0\0")]);
    }
    assert!(matches!(e(&st, b""), FdtError::TooDeep { .. }));
    // Unterminated reservation block: the terminator would overlap the
    // structure block.
    let mut b = ok.clone();
    set32(&mut b, 52, 1);
    assert_eq!(
        Fdt::new(&b).unwrap_err(),
        FdtError::UnterminatedReservations
    );
}

#[test]
fn golden_blob_pins_the_writer() {
    // A fixed tree; its bytes are pinned under tests/golden. If this fails
    // the writer's output changed: check it with dtc, then update the file
    // only if the change is intended.
    let b = Blob {
        reservations: vec![(0x1000_0000, 0x2000)],
        root: Tree {
            name: String::new(),
            props: vec![
                ("compatible".into(), b"kho-v1\0".to_vec()),
                ("kho,answer".into(), 42u32.to_be_bytes().to_vec()),
            ],
            children: vec![Tree {
                name: "memfd".into(),
                props: vec![
                    ("compatible".into(), b"memfd-v2\0memfd-v1\0".to_vec()),
                    (
                        "preserved-data".into(),
                        0x7f00_0000u64.to_be_bytes().to_vec(),
                    ),
                ],
                children: vec![],
            }],
        },
    };
    let blob = write_blob(&b);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/fdt-sample.dtb");
    if std::env::var_os("KHO_BLESS").is_some() {
        std::fs::write(&path, &blob).unwrap();
    }
    let golden = std::fs::read(&path).expect("tests/golden/fdt-sample.dtb (KHO_BLESS=1 writes it)");
    assert_eq!(blob, golden);
    assert_eq!(read_ours(&golden), b);
}

// ------------------------------------------------------------ skip hints

fn write_blob_hinted(b: &Blob) -> Vec<u8> {
    write_blob_with(b, true)
}

fn strip_hints(mut t: Tree) -> Tree {
    t.props.retain(|(n, _)| n != kho::fdt::SKIP_HINT);
    t.children = t.children.into_iter().map(strip_hints).collect();
    t
}

fn all_paths(t: &Tree, prefix: &str, out: &mut Vec<String>) {
    for c in &t.children {
        let p = format!("{prefix}/{}", c.name);
        out.push(p.clone());
        all_paths(c, &p, out);
    }
}

proptest! {
    #[test]
    fn hinted_blobs_read_the_same_and_look_up_the_same(b in tree_strategy()) {
        let plain = write_blob(&b);
        let hinted = write_blob_hinted(&b);
        let got = read_ours(&hinted);
        // Every non-root node carries exactly one hint, as its first property.
        fn check(t: &Tree, root: bool) -> bool {
            let n = t.props.iter().filter(|(n, _)| n == kho::fdt::SKIP_HINT).count();
            (if root { n == 0 } else { n == 1 && t.props[0].0 == kho::fdt::SKIP_HINT })
                && t.children.iter().all(|c| check(c, false))
        }
        prop_assert!(check(&got.root, true));
        prop_assert_eq!(Blob { reservations: got.reservations, root: strip_hints(got.root) }, b.clone());
        prop_assert_eq!(read_fdt_crate(&hinted), read_ours(&hinted));
        let (fp, fh) = (Fdt::new(&plain).unwrap(), Fdt::new(&hinted).unwrap());
        let mut paths = vec!["/".to_owned()];
        all_paths(&b.root, "", &mut paths);
        for p in paths {
            let a = fp.find_node(&p).map(|n| strip_hints(read_node(n)));
            let h = fh.find_node(&p).map(|n| strip_hints(read_node(n)));
            prop_assert!(a.is_some(), "{} not found", p);
            prop_assert_eq!(a, h);
        }
        prop_assert!(fh.find_node("/no-such-node").is_none());
    }
}

#[test]
fn dtc_keeps_hints_valid() {
    for seed in 100..120 {
        let b = random_blob(seed);
        let hinted = write_blob_hinted(&b);
        let (dts, warnings) = dtb_to_dts(&hinted);
        assert!(warnings.is_empty(), "seed {seed}: {warnings}");
        assert_eq!(
            dts.contains("kho,skip = <"),
            !b.root.children.is_empty(),
            "{dts}"
        );
        // dtc keeps the structure block's layout, so the hints still hold.
        let back = dts_to_dtb(dts.as_bytes());
        let got = read_ours(&back);
        assert_eq!(strip_hints(got.root), b.root);
    }
}

#[test]
fn wrong_hints_are_typed_errors() {
    let b = Blob {
        reservations: vec![],
        root: Tree {
            name: String::new(),
            props: vec![],
            children: vec![
                Tree {
                    name: "a".into(),
                    props: vec![("x".into(), vec![1, 2, 3, 4])],
                    children: vec![],
                },
                Tree {
                    name: "b".into(),
                    props: vec![],
                    children: vec![],
                },
            ],
        },
    };
    let good = write_blob_hinted(&b);
    Fdt::new(&good).unwrap();
    let st = get32(&good, 8) as usize;
    // Structure: root BEGIN (8 bytes), then node "a": BEGIN "a" (8), the hint
    // PROP (12 + 4: value at +20), ...
    let a_hint = st + 8 + 8 + 12;
    let size = get32(&good, a_hint);
    for bad in [size - 4, size + 4, 0, 4, 0xffff_fff0] {
        let mut b2 = good.clone();
        set32(&mut b2, a_hint, bad);
        assert!(
            matches!(Fdt::new(&b2), Err(FdtError::BadSkipHint { .. })),
            "size {bad:#x}"
        );
    }
    // A hint with a wrong length.
    let mut b2 = good.clone();
    set32(&mut b2, a_hint - 8, 3);
    assert!(Fdt::new(&b2).is_err());
    // A hint that is not the first property: hand-assembled.
    let name = |s: &str| -> u32 { u32::from_be_bytes(s.as_bytes().try_into().unwrap()) };
    let strings = b"x\0kho,skip\0";
    let ok = assemble(&[1, 0, 1, name("a\0\0\0"), 3, 4, 2, 28, 2, 2, 9], strings);
    assert!(Fdt::new(&ok).is_ok());
    let late = assemble(
        &[1, 0, 1, name("a\0\0\0"), 3, 0, 0, 3, 4, 2, 40, 2, 2, 9],
        strings,
    );
    assert!(matches!(Fdt::new(&late), Err(FdtError::BadSkipHint { .. })));
    let on_root = assemble(&[1, 0, 3, 4, 2, 28, 2, 9], strings);
    assert!(matches!(
        Fdt::new(&on_root),
        Err(FdtError::BadSkipHint { .. })
    ));
}

#[test]
fn fuzz_regressions_never_panic() {
    // Inputs the fuzzer found or that once mattered: each must give an error
    // or a walkable tree. `./x.py fuzz` adds this folder to its corpus.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions/fdt_read");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        walk_if_valid(&bytes);
        n += 1;
    }
    assert!(n >= 3, "regression inputs missing");
}

// ------------------------------------------------- strict reading (#8)

/// dtc's decompiled `/memreserve/` lines of a blob.
fn dtc_memreserves(blob: &[u8]) -> Vec<String> {
    let (dts, _) = dtb_to_dts(blob);
    dts.lines()
        .filter(|l| l.starts_with("/memreserve/"))
        .map(|l| l.to_owned())
        .collect()
}

/// The sample blob with its reservation block replaced by `entries` (each
/// an address and a size), the other blocks moved up behind it.
fn with_reservations(entries: &[(u64, u64)]) -> Vec<u8> {
    let good = sample();
    let (st, st_len) = (get32(&good, 8) as usize, get32(&good, 36) as usize);
    let (strs, s_len) = (get32(&good, 12) as usize, get32(&good, 32) as usize);
    let mut b = good[..40].to_vec();
    for &(a, s) in entries {
        b.extend_from_slice(&a.to_be_bytes());
        b.extend_from_slice(&s.to_be_bytes());
    }
    let new_st = b.len();
    b.extend_from_slice(&good[st..st + st_len]);
    let new_s = b.len();
    b.extend_from_slice(&good[strs..strs + s_len]);
    let total = b.len() as u32;
    set32(&mut b, 4, total);
    set32(&mut b, 8, new_st as u32);
    set32(&mut b, 12, new_s as u32);
    b
}

#[test]
fn reservations_end_at_the_first_entry_of_size_zero_as_in_dtc() {
    // (0x5000, 0) ends the list, as in dtc, libfdt and Linux: the entry
    // after it is not a reservation.
    let b = with_reservations(&[(0x1000, 0x1000), (0x5000, 0), (0x9000, 0x1000), (0, 0)]);
    let f = Fdt::new(&b).unwrap();
    let got: Vec<(u64, u64)> = f.reservations().map(|r| (r.address, r.size)).collect();
    assert_eq!(got, [(0x1000, 0x1000)]);
    assert_eq!(
        dtc_memreserves(&b),
        ["/memreserve/\t0x0000000000001000 0x0000000000001000;"]
    );
    // (The fdt crate 0.1.5 stops only at (0, 0) and reports all three: it
    // is the odd one out, so it is not compared here.)
}

#[test]
fn a_reservation_that_wraps_is_refused_by_reader_and_writer() {
    for (a, s) in [
        (u64::MAX - 0xfff, 0x2000),
        (u64::MAX - 0xffe, 0x1000),
        (u64::MAX, u64::MAX),
    ] {
        let b = with_reservations(&[(0x1000, 0x1000), (a, s), (0, 0)]);
        assert_eq!(
            Fdt::new(&b).unwrap_err(),
            FdtError::BadReservation { index: 1 }
        );
        let mut buf = [0u8; 256];
        let mut w = FdtWriter::new(&mut buf).unwrap();
        assert_eq!(w.reserve_memory(a, s), Err(WriteError::ReservationWraps));
    }
    // The highest ranges that do fit are fine, including one that ends
    // exactly at 2^64 (dtc and libfdt read it too), from reader and writer.
    for (a, s) in [
        (u64::MAX - 0xfff, 0xfff),
        (u64::MAX - 0xfff, 0x1000),
        (0xffff_ffff_0000_0000, 0x1_0000_0000),
        (u64::MAX, 1),
    ] {
        let b = with_reservations(&[(a, s), (0, 0)]);
        let got: Vec<(u64, u64)> = Fdt::new(&b)
            .unwrap()
            .reservations()
            .map(|r| (r.address, r.size))
            .collect();
        assert_eq!(got, [(a, s)]);
        let mut buf = [0u8; 256];
        let mut w = FdtWriter::new(&mut buf).unwrap();
        assert_eq!(w.reserve_memory(a, s), Ok(()));
    }
    let b = with_reservations(&[(0xffff_ffff_0000_0000, 0x1_0000_0000), (0, 0)]);
    assert_eq!(
        dtc_memreserves(&b),
        ["/memreserve/\t0xffffffff00000000 0x0000000100000000;"]
    );
}

fn name_word(s: &str) -> u32 {
    u32::from_be_bytes(s.as_bytes().try_into().unwrap())
}

#[test]
fn duplicate_properties_are_refused_by_reader_and_writer() {
    // Two `abc` in the root: the same name offset, then two offsets of the
    // same string.
    for strings in [&b"abc\0"[..], &b"abc\0abc\0"[..]] {
        let second = if strings.len() > 4 { 4 } else { 0 };
        let st = [1, 0, 3, 4, 0, 7, 3, 4, second, 8, 2, 9];
        assert_eq!(
            Fdt::new(&assemble(&st, strings)).unwrap_err(),
            FdtError::DuplicateProperty { offset: 24 }
        );
    }
    // A name offset into the middle of a longer string (dtc shares
    // suffixes): "abc" at 1 in "xabc" and at 5, in either order, and two
    // tails of different strings.
    for (first, second, strings) in [
        (1, 5, &b"xabc\0abc\0"[..]),
        (5, 1, &b"xabc\0abc\0"[..]),
        (1, 6, &b"xabc\0yabc\0"[..]),
    ] {
        let st = [1, 0, 3, 4, first, 7, 3, 4, second, 8, 2, 9];
        assert_eq!(
            Fdt::new(&assemble(&st, strings)).unwrap_err(),
            FdtError::DuplicateProperty { offset: 24 }
        );
    }
    // Tails and full strings that differ are fine.
    let st = [1, 0, 3, 4, 1, 7, 3, 4, 6, 8, 3, 4, 5, 9, 2, 9];
    assert!(Fdt::new(&assemble(&st, b"xabc\0yabd\0")).is_ok());
    // The same name in two nodes is fine.
    let st = [
        1,
        0,
        3,
        4,
        0,
        7,
        1,
        name_word("a\0\0\0"),
        3,
        4,
        0,
        8,
        2,
        2,
        9,
    ];
    assert!(Fdt::new(&assemble(&st, b"abc\0")).is_ok());
    let mut buf = vec![0u8; 1 << 16];
    let mut w = FdtWriter::new(&mut buf).unwrap();
    w.begin_node("").unwrap();
    w.property_u32("abc", 1).unwrap();
    assert_eq!(w.property_u32("abc", 2), Err(WriteError::DuplicateProperty));
    assert_eq!(w.property_empty("abc"), Err(WriteError::DuplicateProperty));
}

#[test]
fn duplicate_sibling_nodes_are_refused_by_reader_and_writer() {
    let node = |n: &str| name_word(n);
    // Root with children a, b, a.
    let st = [
        1,
        0,
        1,
        node("a\0\0\0"),
        2,
        1,
        node("b\0\0\0"),
        2,
        1,
        node("a\0\0\0"),
        2,
        2,
        9,
    ];
    assert_eq!(
        Fdt::new(&assemble(&st, b"")).unwrap_err(),
        FdtError::DuplicateNode { offset: 32 }
    );
    // Unit addresses make names distinct; the same name under different
    // parents is fine.
    let st = [
        1,
        0,
        1,
        node("a@1\0"),
        1,
        node("x\0\0\0"),
        2,
        2,
        1,
        node("a@2\0"),
        1,
        node("x\0\0\0"),
        2,
        2,
        2,
        9,
    ];
    assert!(Fdt::new(&assemble(&st, b"")).is_ok());
    let mut buf = vec![0u8; 1 << 16];
    let mut w = FdtWriter::new(&mut buf).unwrap();
    w.begin_node("").unwrap();
    for n in ["a@1", "a@2", "b"] {
        w.begin_node(n).unwrap();
        w.begin_node("x").unwrap();
        w.end_node().unwrap();
        w.end_node().unwrap();
    }
    assert_eq!(w.begin_node("a@1"), Err(WriteError::DuplicateNode));
    assert_eq!(w.begin_node("b"), Err(WriteError::DuplicateNode));
    w.begin_node("a").unwrap();
}

#[test]
fn duplicates_among_many_names_are_found_and_unique_ones_pass() {
    // 400 properties and 400 children fill the name filters: every hit is
    // checked by a scan, so unique names pass and a late repeat fails.
    let tree = |dup: bool| {
        let mut props: Vec<(String, Vec<u8>)> =
            (0..400).map(|i| (format!("p{i}"), vec![i as u8])).collect();
        let mut children: Vec<Tree> = (0..400)
            .map(|i| Tree {
                name: format!("n{i}"),
                props: vec![],
                children: vec![],
            })
            .collect();
        if dup {
            props.push(("p17".into(), vec![]));
            children.push(Tree {
                name: "n301".into(),
                props: vec![],
                children: vec![],
            });
        }
        Blob {
            reservations: vec![],
            root: Tree {
                name: String::new(),
                props,
                children,
            },
        }
    };
    let ok = write_blob(&tree(false));
    assert_eq!(read_ours(&ok), tree(false));
    assert!(with_nops(&ok).len() > ok.len());
    assert_eq!(read_ours(&with_nops(&ok)), tree(false));
    let mut buf = vec![0u8; 1 << 20];
    let mut w = FdtWriter::new(&mut buf).unwrap();
    let bad = tree(true);
    w.begin_node("").unwrap();
    let mut errs = vec![];
    for (n, v) in &bad.root.props {
        if let Err(e) = w.property(n, v) {
            errs.push(e);
        }
    }
    for c in &bad.root.children {
        match w.begin_node(&c.name) {
            Ok(()) => w.end_node().unwrap(),
            Err(e) => errs.push(e),
        }
    }
    assert_eq!(
        errs,
        [WriteError::DuplicateProperty, WriteError::DuplicateNode]
    );
    // The reader, on a blob with the repeats patched in: rename p18 to p17
    // (same length), then n302 to n301.
    let mut b = ok.clone();
    let at = b.windows(4).position(|w| w == b"p18\0").unwrap();
    b[at..at + 4].copy_from_slice(b"p17\0");
    assert!(matches!(
        Fdt::new(&b),
        Err(FdtError::DuplicateProperty { .. })
    ));
    let mut b = ok;
    let at = b.windows(5).position(|w| w == b"n302\0").unwrap();
    b[at..at + 5].copy_from_slice(b"n301\0");
    assert!(matches!(Fdt::new(&b), Err(FdtError::DuplicateNode { .. })));
}

#[test]
fn repeated_names_are_found_whatever_the_size_of_the_strings_block() {
    // The reader sizes its table of strings by their count: check each
    // side of each size, with the repeat made by patching one string into
    // another of the same length.
    for n in (40..70).chain(1530..1540) {
        let blob = Blob {
            reservations: vec![],
            root: Tree {
                name: String::new(),
                props: (0..n).map(|i| (format!("q{i:04}"), vec![])).collect(),
                children: vec![],
            },
        };
        let ok = write_blob(&blob);
        assert_eq!(read_ours(&ok), blob, "{n} names");
        let mut b = ok;
        let at = b.windows(6).position(|w| w == b"q0001\0").unwrap();
        b[at..at + 6].copy_from_slice(b"q0000\0");
        assert!(
            matches!(Fdt::new(&b), Err(FdtError::DuplicateProperty { .. })),
            "{n} names"
        );
    }
}

#[test]
fn node_names_use_only_the_node_name_characters() {
    // `#`, `*` and `?` are property-name characters only: dtc refuses
    // node names with them, so neither side produces or accepts one.
    for bad in ["a#b", "a*", "a?", "@1"] {
        let mut buf = vec![0u8; 4096];
        let mut w = FdtWriter::new(&mut buf).unwrap();
        w.begin_node("").unwrap();
        assert_eq!(w.begin_node(bad), Err(WriteError::BadNodeName), "{bad}");
    }
    let st = [1, 0, 1, name_word("a#b\0"), 2, 2, 9];
    assert_eq!(
        Fdt::new(&assemble(&st, b"")).unwrap_err(),
        FdtError::BadName { offset: 8 }
    );
    // Property names keep them.
    let mut buf = vec![0u8; 4096];
    let mut w = FdtWriter::new(&mut buf).unwrap();
    w.begin_node("").unwrap();
    w.property_u32("#address-cells", 2).unwrap();
    w.end_node().unwrap();
    let n = w.finish().unwrap();
    assert!(
        Fdt::new(&buf[..n])
            .unwrap()
            .root()
            .property("#address-cells")
            .is_some()
    );
}

#[test]
fn version_16_blobs_from_dtc_read_like_version_17() {
    for path in corpus() {
        let src = std::fs::read(&path).unwrap();
        let v17 = dts_to_dtb(&src);
        let (v16, err) = dtc(
            &["-I", "dts", "-O", "dtb", "-V", "16", "-o", "-", "-"],
            &src,
        );
        assert!(err.is_empty(), "{err}");
        assert_eq!(
            get32(&v16, 20),
            16,
            "{}: dtc wrote version {}",
            path.display(),
            get32(&v16, 20)
        );
        assert_eq!(read_ours(&v16), read_ours(&v17), "{}", path.display());
    }
    // A v16 structure block without END before the next block is refused.
    let mut b = sample();
    set32(&mut b, 20, 16);
    let st_end = (get32(&b, 8) + get32(&b, 36)) as usize;
    set32(&mut b, st_end - 4, 4); // END becomes a NOP
    assert!(Fdt::new(&b).is_err());
}

#[test]
fn blocks_may_come_in_any_order_with_gaps() {
    // The reader's layout rule: blocks inside the blob, aligned, not
    // overlapping; their order and the gaps between them are free (the
    // writer always writes header, reservations, structure, strings).
    let good = sample();
    let (st, st_len) = (get32(&good, 8) as usize, get32(&good, 36) as usize);
    let (strs, s_len) = (get32(&good, 12) as usize, get32(&good, 32) as usize);
    let rsv_len = st - 40;
    // Strings first at 48 (a gap of 8 after the header), then a gap, the
    // structure block, then the reservations.
    let mut b = good[..40].to_vec();
    b.resize(48, 0xee);
    let new_s = b.len();
    b.extend_from_slice(&good[strs..strs + s_len]);
    b.resize(b.len().next_multiple_of(4) + 12, 0xee);
    let new_st = b.len();
    b.extend_from_slice(&good[st..st + st_len]);
    b.resize(b.len().next_multiple_of(8) + 8, 0xee);
    let new_rsv = b.len();
    b.extend_from_slice(&good[40..40 + rsv_len]);
    let total = b.len() as u32;
    set32(&mut b, 4, total);
    set32(&mut b, 8, new_st as u32);
    set32(&mut b, 12, new_s as u32);
    set32(&mut b, 16, new_rsv as u32);
    assert_eq!(read_ours(&b), read_ours(&good));
    assert_eq!(read_fdt_crate(&b), read_ours(&good));
}
