//! Timing: every figure is the median of several samples, each long enough
//! to be stable, reported with its spread: the range of the samples
//! without the lowest and the highest one (on this noisy 2-core machine
//! one sample in nine may catch a page fault or a neighbour).

use std::fmt;
use std::ops::{Add, Div, Mul};
use std::time::{Duration, Instant};

/// A measured value: the median of its samples and their range. A value
/// that was counted, not timed, has no spread.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    /// The median sample.
    pub median: f64,
    /// The low end of the spread (the second lowest sample, when there
    /// are five or more).
    pub lo: f64,
    /// The high end (the second highest sample, when five or more).
    pub hi: f64,
}

impl Stat {
    /// A value with no spread.
    pub const fn exact(v: f64) -> Self {
        Self {
            median: v,
            lo: v,
            hi: v,
        }
    }

    /// The median and spread of `samples` (not empty).
    pub fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let cut = usize::from(n >= 5);
        Self {
            median: samples[n / 2],
            lo: samples[cut],
            hi: samples[n - 1 - cut],
        }
    }

    /// The spread as a share of the median (0 for an exact value).
    pub fn spread(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.hi - self.lo) / self.median
        }
    }
}

impl From<f64> for Stat {
    fn from(v: f64) -> Self {
        Self::exact(v)
    }
}

impl Div<f64> for Stat {
    type Output = Stat;
    fn div(self, d: f64) -> Stat {
        Stat {
            median: self.median / d,
            lo: self.lo / d,
            hi: self.hi / d,
        }
    }
}

impl Mul<f64> for Stat {
    type Output = Stat;
    fn mul(self, m: f64) -> Stat {
        Stat {
            median: self.median * m,
            lo: self.lo * m,
            hi: self.hi * m,
        }
    }
}

/// The sum of two independent measurements: medians add, and so do the
/// ends of the ranges (the widest the sum can spread).
impl Add for Stat {
    type Output = Stat;
    fn add(self, o: Stat) -> Stat {
        Stat {
            median: self.median + o.median,
            lo: self.lo + o.lo,
            hi: self.hi + o.hi,
        }
    }
}

/// Formats the median (with the formatter's precision).
impl fmt::Display for Stat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.median, f)
    }
}

/// Samples per measurement.
const SAMPLES: usize = 9;

/// A batch size for `f` that takes about 20 ms.
fn calibrate(f: &mut impl FnMut()) -> u64 {
    let mut batch = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        if t.elapsed() > Duration::from_millis(20) || batch > 1 << 30 {
            return batch;
        }
        batch *= 2;
    }
}

/// Nanoseconds per call in one batch.
fn sample(f: &mut impl FnMut(), batch: u64) -> f64 {
    let t = Instant::now();
    for _ in 0..batch {
        f();
    }
    t.elapsed().as_nanos() as f64 / batch as f64
}

/// Nanoseconds per call of `f`: 9 samples of ~20 ms each.
pub fn ns_per_call(mut f: impl FnMut()) -> Stat {
    let batch = calibrate(&mut f);
    Stat::of((0..SAMPLES).map(|_| sample(&mut f, batch)).collect())
}

/// Nanoseconds per call of `a` and of `b`, their samples interleaved (a,
/// b, a, b, ...) so that a slow spell of the machine hits both alike.
pub fn ns_per_call_pair(mut a: impl FnMut(), mut b: impl FnMut()) -> (Stat, Stat) {
    let (ba, bb) = (calibrate(&mut a), calibrate(&mut b));
    let mut sa = Vec::with_capacity(SAMPLES);
    let mut sb = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        sa.push(sample(&mut a, ba));
        sb.push(sample(&mut b, bb));
    }
    (Stat::of(sa), Stat::of(sb))
}
