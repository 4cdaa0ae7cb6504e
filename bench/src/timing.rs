//! Timing: the median of several samples, each long enough to be stable.

use std::time::{Duration, Instant};

/// Nanoseconds per call of `f`: median over 9 samples of ~40 ms each.
pub fn ns_per_call(mut f: impl FnMut()) -> f64 {
    // Calibrate the batch size.
    let mut batch = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        if t.elapsed() > Duration::from_millis(20) || batch > 1 << 30 {
            break;
        }
        batch *= 2;
    }
    let mut samples: Vec<f64> = (0..9)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..batch {
                f();
            }
            t.elapsed().as_nanos() as f64 / batch as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
