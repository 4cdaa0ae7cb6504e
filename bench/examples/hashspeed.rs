//! Speed of kho-sum64 over frames, L1-hot and streamed.
fn main() {
    let frames = 1024usize;
    let raw: Vec<u64> = (0..frames * 512).map(|i| i as u64 * 0x9e37).collect();
    let bytes: &[u8] = zerocopy::IntoBytes::as_bytes(&raw[..]);
    let words =
        <[zerocopy::byteorder::little_endian::U64] as zerocopy::FromBytes>::ref_from_bytes(bytes)
            .unwrap();
    let mut best_hot = f64::MAX;
    let mut best_cold = f64::MAX;
    for _ in 0..50 {
        let t = std::time::Instant::now();
        let mut s = kho::csum::Sum64::new();
        for _ in 0..frames {
            s.frame(&words[..512]);
        }
        std::hint::black_box(s.finish());
        best_hot = best_hot.min(t.elapsed().as_nanos() as f64 / (frames * 256) as f64);
        let t = std::time::Instant::now();
        let mut s = kho::csum::Sum64::new();
        for f in 0..frames {
            s.frame(&words[f * 512..(f + 1) * 512]);
        }
        std::hint::black_box(s.finish());
        best_cold = best_cold.min(t.elapsed().as_nanos() as f64 / (frames * 256) as f64);
    }
    println!("hot {best_hot:.3} ns/16B, stream {best_cold:.3} ns/16B");
}
