//! Profiling aid: the FDT benchmark's workload (1,000 nodes in 9 groups of
//! 10 devices of 10 leaves, 10 properties each), timing `Fdt::new` alone,
//! a full walk, and a build.
use std::hint::black_box;
use std::time::Instant;

fn build(buf: &mut [u8], names: &[String]) -> usize {
    let mut w = kho::fdt::FdtWriter::new(buf).unwrap();
    let mut id = 0u64;
    let mut props = |w: &mut kho::fdt::FdtWriter<'_>| {
        for (k, n) in names.iter().enumerate() {
            let v = (id * 10 + k as u64).to_be_bytes();
            w.property(n, &v[..4 + 4 * (k % 2)]).unwrap();
        }
        id += 1;
    };
    w.begin_node("").unwrap();
    props(&mut w);
    for g in 0..9 {
        w.begin_node(&format!("group-{g}")).unwrap();
        props(&mut w);
        for d in 0..10 {
            w.begin_node(&format!("dev-{d}")).unwrap();
            props(&mut w);
            for l in 0..10 {
                w.begin_node(&format!("leaf-{l}")).unwrap();
                props(&mut w);
                w.end_node().unwrap();
            }
            w.end_node().unwrap();
        }
        w.end_node().unwrap();
    }
    w.end_node().unwrap();
    w.finish().unwrap()
}

fn best(runs: usize, mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..runs {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / runs as f64
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    let names: Vec<String> = (0..10).map(|k| format!("prop-{k}")).collect();
    let mut buf = vec![0u8; 1 << 20];
    let n = build(&mut buf, &names);
    let blob = buf[..n].to_vec();
    let new = best(2000, || {
        black_box(kho::fdt::Fdt::new(black_box(&blob)).unwrap());
    });
    let f = kho::fdt::Fdt::new(&blob).unwrap();
    let walk = best(2000, || {
        black_box(f.walk().count());
    });
    let b = best(500, || {
        black_box(build(black_box(&mut buf), &names));
    });
    println!("Fdt::new {new:.1} us, walk {walk:.1} us, build {b:.1} us");
}
