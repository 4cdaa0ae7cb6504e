//! Profiling aid: `Fdt::new` and the writer on a blob whose root has 100
//! children of 9 children each, 10 properties per node, timed over many runs.
use std::hint::black_box;
use std::time::Instant;

fn build(buf: &mut [u8]) -> usize {
    let mut w = kho::fdt::FdtWriter::new(buf).unwrap();
    w.begin_node("").unwrap();
    for g in 0..100 {
        w.begin_node(&format!("group-{g}")).unwrap();
        for k in 0..10 {
            w.property(&format!("prop-{k}"), &[k as u8; 20]).unwrap();
        }
        for d in 0..9 {
            w.begin_node(&format!("dev-{d}")).unwrap();
            for k in 0..10 {
                w.property(&format!("prop-{k}"), &[d as u8; 12]).unwrap();
            }
            w.end_node().unwrap();
        }
        w.end_node().unwrap();
    }
    w.end_node().unwrap();
    w.finish().unwrap()
}

fn main() {
    let mut buf = vec![0u8; 1 << 20];
    let n = build(&mut buf);
    let blob = buf[..n].to_vec();
    let runs = 20_000;
    let t = Instant::now();
    for _ in 0..runs {
        black_box(kho::fdt::Fdt::new(black_box(&blob)).unwrap());
    }
    println!(
        "Fdt::new: {:.1} us",
        t.elapsed().as_secs_f64() * 1e6 / runs as f64
    );
    let t = Instant::now();
    for _ in 0..2000 {
        black_box(build(black_box(&mut buf)));
    }
    println!(
        "build (with format!): {:.1} us",
        t.elapsed().as_secs_f64() * 1e6 / 2000.0
    );
}
