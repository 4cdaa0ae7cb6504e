//! FDT: build, full parse and lookup on 1,000 nodes and 10,000 properties,
//! against vm-fdt, the fdt crate, dtoolkit and (when linked) libfdt.

use crate::Figure;
use crate::timing::ns_per_call;
use dtoolkit::Node as _;
use std::hint::black_box;

/// One node of the workload: path, name, properties.
struct WNode {
    path: String,
    name: String,
    props: Vec<(String, Vec<u8>)>,
    children: Vec<usize>,
}

/// The workload: root + 9 groups x (1 + 10 devices x (1 + 10 leaves)) =
/// 1,000 nodes, 10 properties each.
struct Workload {
    nodes: Vec<WNode>,
}

fn value(seed: u64, k: usize) -> Vec<u8> {
    match k % 5 {
        0 => (seed as u32).to_be_bytes().to_vec(),
        1 => seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .to_be_bytes()
            .to_vec(),
        2 => format!("value-{seed:08}\0").into_bytes(),
        3 => format!("vendor,dev-{}\0generic\0", seed % 97).into_bytes(),
        _ => (0..24).map(|i| (seed as u8).wrapping_add(i)).collect(),
    }
}

impl Workload {
    fn new() -> Self {
        let mut nodes = Vec::new();
        let add = |nodes: &mut Vec<WNode>, path: String, name: String| {
            let id = nodes.len();
            let props = (0..10)
                .map(|k| (format!("prop-{k}"), value(id as u64 * 10 + k as u64, k)))
                .collect();
            nodes.push(WNode {
                path,
                name,
                props,
                children: Vec::new(),
            });
            id
        };
        let root = add(&mut nodes, "/".into(), String::new());
        for g in 0..9 {
            let gp = format!("/group-{g}");
            let gi = add(&mut nodes, gp.clone(), format!("group-{g}"));
            nodes[root].children.push(gi);
            for d in 0..10 {
                let dp = format!("{gp}/dev-{d}");
                let di = add(&mut nodes, dp.clone(), format!("dev-{d}"));
                nodes[gi].children.push(di);
                for l in 0..10 {
                    let li = add(&mut nodes, format!("{dp}/leaf-{l}"), format!("leaf-{l}"));
                    nodes[di].children.push(li);
                }
            }
        }
        assert_eq!(nodes.len(), 1000);
        Self { nodes }
    }

    fn build_ours(&self, buf: &mut [u8]) -> usize {
        self.write_ours(kho::fdt::FdtWriter::new(buf).unwrap())
    }

    fn build_ours_hinted(&self, buf: &mut [u8]) -> usize {
        self.write_ours(kho::fdt::FdtWriter::with_skip_hints(buf).unwrap())
    }

    fn write_ours(&self, mut w: kho::fdt::FdtWriter<'_>) -> usize {
        fn rec(w: &mut kho::fdt::FdtWriter<'_>, wl: &Workload, i: usize) {
            let n = &wl.nodes[i];
            w.begin_node(&n.name).unwrap();
            for (k, v) in &n.props {
                w.property(k, v).unwrap();
            }
            for &c in &n.children {
                rec(w, wl, c);
            }
            w.end_node().unwrap();
        }
        rec(&mut w, self, 0);
        w.finish().unwrap()
    }

    fn build_vmfdt(&self) -> Vec<u8> {
        fn rec(w: &mut vm_fdt::FdtWriter, wl: &Workload, i: usize) {
            let n = &wl.nodes[i];
            let h = w.begin_node(&n.name).unwrap();
            for (k, v) in &n.props {
                w.property(k, v).unwrap();
            }
            for &c in &n.children {
                rec(w, wl, c);
            }
            w.end_node(h).unwrap();
        }
        let mut w = vm_fdt::FdtWriter::new().unwrap();
        rec(&mut w, self, 0);
        w.finish().unwrap()
    }

    fn build_dtoolkit(&self) -> Vec<u8> {
        use dtoolkit::model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty};
        fn rec(wl: &Workload, i: usize) -> DeviceTreeNode {
            let n = &wl.nodes[i];
            let mut node = DeviceTreeNode::new_unchecked(n.name.as_str());
            for (k, v) in &n.props {
                node.add_property(DeviceTreeProperty::new_unchecked(k.as_str(), v.as_slice()));
            }
            for &c in &n.children {
                node.add_child(rec(wl, c));
            }
            node
        }
        let mut t = DeviceTree::new();
        t.root = rec(self, 0);
        t.to_dtb()
    }
}

fn walk_ours(n: kho::fdt::Node<'_>) -> usize {
    let mut s = 0;
    for p in n.properties() {
        s += p.value.len() + p.name.len();
    }
    for c in n.children() {
        s += walk_ours(c) + 1;
    }
    s
}

fn parse_ours(blob: &[u8]) -> usize {
    use kho::fdt::WalkItem;
    let f = kho::fdt::Fdt::new(blob).unwrap();
    let mut s = 0;
    for item in f.walk() {
        match item {
            WalkItem::Node { depth, .. } => s += usize::from(depth > 0),
            WalkItem::Property(p) => s += p.value.len() + p.name.len(),
            WalkItem::EndNode => {}
        }
    }
    s
}

/// The same sum through the recursive node API (checks `walk`).
fn parse_ours_recursive(blob: &[u8]) -> usize {
    walk_ours(kho::fdt::Fdt::new(blob).unwrap().root())
}

fn parse_fdt_crate(blob: &[u8]) -> usize {
    let f = fdt::Fdt::new(blob).unwrap();
    let mut s = 0;
    for n in f.all_nodes() {
        s += 1;
        for p in n.properties() {
            s += p.value.len() + p.name.len();
        }
    }
    s - 1
}

fn walk_dtoolkit(n: dtoolkit::fdt::FdtNode<'_>) -> usize {
    use dtoolkit::Property as _;
    let mut s = 0;
    for p in n.properties() {
        s += p.value().len() + p.name().len();
    }
    for c in n.children() {
        s += walk_dtoolkit(c) + 1;
    }
    s
}

fn parse_dtoolkit(blob: &[u8]) -> usize {
    let f = dtoolkit::fdt::Fdt::new(blob).unwrap();
    walk_dtoolkit(f.root())
}

#[cfg(has_libfdt)]
mod libfdt {
    //! The C library, through its stable functions.
    #![allow(missing_docs)]
    use std::ffi::{c_char, c_int, c_void};
    unsafe extern "C" {
        pub fn fdt_create(buf: *mut c_void, bufsize: c_int) -> c_int;
        pub fn fdt_finish_reservemap(fdt: *mut c_void) -> c_int;
        pub fn fdt_begin_node(fdt: *mut c_void, name: *const c_char) -> c_int;
        pub fn fdt_property(
            fdt: *mut c_void,
            name: *const c_char,
            val: *const c_void,
            len: c_int,
        ) -> c_int;
        pub fn fdt_end_node(fdt: *mut c_void) -> c_int;
        pub fn fdt_finish(fdt: *mut c_void) -> c_int;
        pub fn fdt_check_header(fdt: *const c_void) -> c_int;
        pub fn fdt_path_offset(fdt: *const c_void, path: *const c_char) -> c_int;
        pub fn fdt_getprop(
            fdt: *const c_void,
            node: c_int,
            name: *const c_char,
            lenp: *mut c_int,
        ) -> *const c_void;
        pub fn fdt_next_node(fdt: *const c_void, offset: c_int, depth: *mut c_int) -> c_int;
        pub fn fdt_first_property_offset(fdt: *const c_void, node: c_int) -> c_int;
        pub fn fdt_next_property_offset(fdt: *const c_void, offset: c_int) -> c_int;
        pub fn fdt_getprop_by_offset(
            fdt: *const c_void,
            offset: c_int,
            namep: *mut *const c_char,
            lenp: *mut c_int,
        ) -> *const c_void;
    }
}

/// C strings of the workload for libfdt, made outside the timed loops.
#[cfg(has_libfdt)]
struct CNames {
    names: Vec<std::ffi::CString>,
    props: Vec<Vec<(std::ffi::CString, Vec<u8>)>>,
}

#[cfg(has_libfdt)]
fn build_libfdt(wl: &Workload, c: &CNames, buf: &mut [u64]) -> usize {
    use std::ffi::c_void;
    fn rec(wl: &Workload, c: &CNames, fdt: *mut c_void, i: usize) {
        // SAFETY: `fdt` is a libfdt sequential-write buffer of the size
        // given to fdt_create; names are NUL-terminated C strings.
        unsafe {
            assert_eq!(libfdt::fdt_begin_node(fdt, c.names[i].as_ptr()), 0);
            for (k, v) in &c.props[i] {
                assert_eq!(
                    libfdt::fdt_property(fdt, k.as_ptr(), v.as_ptr().cast(), v.len() as i32),
                    0
                );
            }
        }
        for &ch in &wl.nodes[i].children {
            rec(wl, c, fdt, ch);
        }
        // SAFETY: as above.
        unsafe { assert_eq!(libfdt::fdt_end_node(fdt), 0) };
    }
    let fdt = buf.as_mut_ptr().cast::<c_void>();
    // SAFETY: `buf` is writable for its whole length, 8-aligned.
    unsafe {
        assert_eq!(libfdt::fdt_create(fdt, (buf.len() * 8) as i32), 0);
        assert_eq!(libfdt::fdt_finish_reservemap(fdt), 0);
    }
    rec(wl, c, fdt, 0);
    // SAFETY: as above.
    unsafe { assert_eq!(libfdt::fdt_finish(fdt), 0) };
    let b: &[u8] = bytemuck_bytes(buf);
    u32::from_be_bytes(b[4..8].try_into().unwrap()) as usize
}

#[cfg(has_libfdt)]
fn bytemuck_bytes(buf: &[u64]) -> &[u8] {
    // SAFETY: any u64 buffer is valid as bytes, same lifetime.
    unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), buf.len() * 8) }
}

#[cfg(has_libfdt)]
fn parse_libfdt(blob: &[u64]) -> usize {
    use std::ffi::{c_char, c_int};
    let fdt = blob.as_ptr().cast();
    let mut s = 0usize;
    // SAFETY: `blob` holds a valid FDT (checked by fdt_check_header first).
    unsafe {
        assert_eq!(libfdt::fdt_check_header(fdt), 0);
        let mut depth: c_int = 0;
        let mut node = 0;
        while node >= 0 {
            let mut p = libfdt::fdt_first_property_offset(fdt, node);
            while p >= 0 {
                let mut name: *const c_char = std::ptr::null();
                let mut len: c_int = 0;
                libfdt::fdt_getprop_by_offset(fdt, p, &mut name, &mut len);
                s += len as usize + std::ffi::CStr::from_ptr(name).to_bytes().len();
                p = libfdt::fdt_next_property_offset(fdt, p);
            }
            node = libfdt::fdt_next_node(fdt, node, &mut depth);
            if node >= 0 && depth > 0 {
                s += 1;
            }
        }
    }
    s
}

/// Runs the FDT benchmarks and returns their figures.
pub fn run() -> Vec<Figure> {
    let wl = Workload::new();
    let mut buf = vec![0u8; 1 << 20];
    let n = wl.build_ours(&mut buf);
    let blob = buf[..n].to_vec();
    println!(
        "fdt: workload blob {} bytes, 1000 nodes, 10000 properties",
        blob.len()
    );

    // Everyone builds the same tree: the blobs must read the same.
    let reference = parse_ours(&blob);
    assert_eq!(
        parse_ours_recursive(&blob),
        reference,
        "walk and the node API disagree"
    );
    assert_eq!(
        parse_ours(&wl.build_vmfdt()),
        reference,
        "vm-fdt built a different tree"
    );
    assert_eq!(
        parse_fdt_crate(&blob),
        reference,
        "fdt crate reads differently"
    );
    assert_eq!(
        parse_dtoolkit(&blob),
        reference,
        "dtoolkit reads differently"
    );

    // 10,000 random (path, property) lookups.
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let queries: Vec<(String, String)> = (0..10_000)
        .map(|_| {
            let node = &wl.nodes[(next() % 1000) as usize];
            (node.path.clone(), format!("prop-{}", next() % 10))
        })
        .collect();

    let mut figs = Vec::new();
    let us = |ns: crate::timing::Stat| ns / 1000.0;

    // Build.
    let ours_build = ns_per_call(|| {
        black_box(wl.build_ours(black_box(&mut buf)));
    });
    let vm_build = ns_per_call(|| {
        black_box(wl.build_vmfdt());
    });
    let dt_build = ns_per_call(|| {
        black_box(wl.build_dtoolkit());
    });
    for (peer, v) in [("vm-fdt", vm_build), ("dtoolkit", dt_build)] {
        figs.push(Figure {
            name: "fdt build 1000 nodes/10000 props".into(),
            value: us(ours_build),
            unit: "us",
            baseline: peer.into(),
            baseline_value: us(v),
            better_is: "lower",
            target: None,
        });
    }

    // Full parse: validate and visit every node and property.
    let fdt = kho::fdt::Fdt::new(&blob).unwrap();
    let ours_parse = ns_per_call(|| {
        black_box(parse_ours(black_box(&blob)));
    });
    let fdt_parse = ns_per_call(|| {
        black_box(parse_fdt_crate(black_box(&blob)));
    });
    let dt_parse = ns_per_call(|| {
        black_box(parse_dtoolkit(black_box(&blob)));
    });
    for (peer, v) in [("fdt", fdt_parse), ("dtoolkit", dt_parse)] {
        figs.push(Figure {
            name: "fdt full parse".into(),
            value: us(ours_parse),
            unit: "us",
            baseline: peer.into(),
            baseline_value: us(v),
            better_is: "lower",
            target: None,
        });
    }

    // Lookup of a path and a property, averaged over the 10,000 queries.
    let hits = queries
        .iter()
        .filter(|(p, k)| fdt.find_property(p, k).is_some())
        .count();
    assert_eq!(hits, queries.len(), "our lookups missed");
    let per = queries.len() as f64;
    let ours_lookup = ns_per_call(|| {
        for (p, k) in &queries {
            black_box(fdt.find_property(black_box(p), k));
        }
    }) / per;
    let pf = fdt::Fdt::new(&blob).unwrap();
    let fdt_lookup = ns_per_call(|| {
        for (p, k) in &queries {
            black_box(
                pf.find_node(black_box(p))
                    .and_then(|n| n.property(k))
                    .map(|p| p.value.len()),
            );
        }
    }) / per;
    let dt = dtoolkit::fdt::Fdt::new(&blob).unwrap();
    let dt_lookup = ns_per_call(|| {
        for (p, k) in &queries {
            black_box(
                dt.find_node(black_box(p))
                    .and_then(|n| n.property(k).map(|_| ())),
            );
        }
    }) / per;
    // The same lookups on the same tree written with skip hints (our
    // writer's option); the peers keep the plain blob, their best case.
    let mut hbuf = vec![0u8; 1 << 20];
    let hn = wl.build_ours_hinted(&mut hbuf);
    let hfdt = kho::fdt::Fdt::new(&hbuf[..hn]).unwrap();
    let hinted_lookup = ns_per_call(|| {
        for (p, k) in &queries {
            black_box(hfdt.find_property(black_box(p), k));
        }
    }) / per;
    for (p, k) in &queries {
        assert_eq!(
            hfdt.find_property(p, k).map(|x| x.value),
            fdt.find_property(p, k).map(|x| x.value)
        );
    }
    for (peer, v) in [("dtoolkit", dt_lookup), ("fdt", fdt_lookup)] {
        figs.push(Figure {
            name: "fdt lookup path+property (skip hints)".into(),
            value: us(hinted_lookup),
            unit: "us",
            baseline: peer.into(),
            baseline_value: us(v),
            better_is: "lower",
            target: None,
        });
        figs.push(Figure {
            name: "fdt lookup path+property (plain blob)".into(),
            value: us(ours_lookup),
            unit: "us",
            baseline: peer.into(),
            baseline_value: us(v),
            better_is: "lower",
            target: None,
        });
    }

    #[cfg(has_libfdt)]
    {
        use std::ffi::CString;
        let c = CNames {
            names: wl
                .nodes
                .iter()
                .map(|n| CString::new(n.name.as_str()).unwrap())
                .collect(),
            props: wl
                .nodes
                .iter()
                .map(|n| {
                    n.props
                        .iter()
                        .map(|(k, v)| (CString::new(k.as_str()).unwrap(), v.clone()))
                        .collect()
                })
                .collect(),
        };
        let mut cbuf = vec![0u64; (1 << 20) / 8];
        let cn = build_libfdt(&wl, &c, &mut cbuf);
        let mut cblob = vec![0u64; cn.div_ceil(8)];
        bytemuck_bytes_mut(&mut cblob)[..cn].copy_from_slice(&bytemuck_bytes(&cbuf)[..cn]);
        assert_eq!(
            parse_ours(&bytemuck_bytes(&cblob)[..cn]),
            reference,
            "libfdt built a different tree"
        );
        assert_eq!(parse_libfdt(&cblob), reference, "libfdt reads differently");
        let lf_build = ns_per_call(|| {
            black_box(build_libfdt(&wl, &c, black_box(&mut cbuf)));
        });
        let lf_parse = ns_per_call(|| {
            black_box(parse_libfdt(black_box(&cblob)));
        });
        let cq: Vec<(CString, CString)> = queries
            .iter()
            .map(|(p, k)| {
                (
                    CString::new(p.as_str()).unwrap(),
                    CString::new(k.as_str()).unwrap(),
                )
            })
            .collect();
        let lf_lookup = ns_per_call(|| {
            for (p, k) in &cq {
                // SAFETY: `cblob` is a valid FDT; the strings are C strings.
                unsafe {
                    let node = libfdt::fdt_path_offset(cblob.as_ptr().cast(), p.as_ptr());
                    let mut len = 0;
                    black_box(libfdt::fdt_getprop(
                        cblob.as_ptr().cast(),
                        node,
                        k.as_ptr(),
                        &mut len,
                    ));
                }
            }
        }) / per;
        figs.push(Figure {
            name: "fdt build 1000 nodes/10000 props".into(),
            value: us(ours_build),
            unit: "us",
            baseline: "libfdt".into(),
            baseline_value: us(lf_build),
            better_is: "lower",
            target: None,
        });
        figs.push(Figure {
            name: "fdt full parse".into(),
            value: us(ours_parse),
            unit: "us",
            baseline: "libfdt".into(),
            baseline_value: us(lf_parse),
            better_is: "lower",
            target: None,
        });
        figs.push(Figure {
            name: "fdt lookup path+property (skip hints)".into(),
            value: us(hinted_lookup),
            unit: "us",
            baseline: "libfdt".into(),
            baseline_value: us(lf_lookup),
            better_is: "lower",
            target: None,
        });
        figs.push(Figure {
            name: "fdt lookup path+property (plain blob)".into(),
            value: us(ours_lookup),
            unit: "us",
            baseline: "libfdt".into(),
            baseline_value: us(lf_lookup),
            better_is: "lower",
            target: None,
        });
    }
    println!(
        "fdt targets: build {:.1} us (<= 250), full parse {:.1} us (<= 150), lookup {:.2} us with skip hints, {:.2} us plain (<= 7)",
        us(ours_build),
        us(ours_parse),
        us(hinted_lookup),
        us(ours_lookup)
    );
    figs
}

#[cfg(has_libfdt)]
fn bytemuck_bytes_mut(buf: &mut [u64]) -> &mut [u8] {
    // SAFETY: any byte pattern is a valid u64; same lifetime, exclusive.
    unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), buf.len() * 8) }
}
