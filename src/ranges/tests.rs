//! Tests of `src/ranges.rs`.

use super::set::{Ranges, Slots};
use super::*;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::vec::Vec;

/// Model: the set of 4 KiB-granule indices covered.
fn model_ranges(m: &BTreeSet<u64>) -> Vec<Range> {
    let mut out: Vec<Range> = Vec::new();
    for &p in m {
        match out.last_mut() {
            Some(r) if r.end == p => r.end = p + 1,
            _ => out.push(Range::new(p, p + 1)),
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u64, u64),
    Carve(u64, u64),
    Alloc(u64, u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..200, 1u64..20).prop_map(|(s, l)| Op::Insert(s, s + l)),
        (0u64..200, 1u64..30).prop_map(|(s, l)| Op::Carve(s, s + l)),
        (1u64..10, 0u32..4).prop_map(|(l, a)| Op::Alloc(l, a)),
    ]
}

/// Runs `ops` on `set` and on the model; `cap` is the set's capacity
/// (`None`: unbounded).
fn run_model<S: Slots + Clone>(
    mut set: Ranges<S>,
    cap: Option<usize>,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let mut model = BTreeSet::new();
    for op in ops {
        let before = set.clone();
        match op {
            Op::Insert(s, e) => {
                let overlap = (s..e).any(|p| model.contains(&p));
                match set.insert(Range::new(s, e)) {
                    Ok(()) => {
                        prop_assert!(!overlap);
                        model.extend(s..e);
                    }
                    Err(RangeError::Overlap) => prop_assert!(overlap),
                    Err(RangeError::Full) => {
                        prop_assert!(cap.is_some());
                        prop_assert_eq!(set.as_slice(), before.as_slice())
                    }
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                }
            }
            Op::Carve(s, e) => match set.carve(Range::new(s, e)) {
                Ok(()) => {
                    for p in s..e {
                        model.remove(&p);
                    }
                }
                Err(RangeError::Full) => {
                    prop_assert!(cap.is_some());
                    prop_assert_eq!(set.as_slice(), before.as_slice())
                }
                Err(e) => prop_assert!(false, "unexpected {e}"),
            },
            Op::Alloc(l, a) => {
                let align = 1u64 << a;
                // Model answer: lowest aligned start with l free granules.
                let want = model
                    .iter()
                    .copied()
                    .find(|&p| p % align == 0 && (p..p + l).all(|q| model.contains(&q)));
                match set.alloc(l, align) {
                    Some(got) => {
                        prop_assert_eq!(Some(got), want);
                        for p in got..got + l {
                            model.remove(&p);
                        }
                    }
                    None => prop_assert!(want.is_none() || Some(set.len()) == cap),
                }
            }
        }
        prop_assert_eq!(set.as_slice(), &model_ranges(&model)[..]);
        // The searches, on a probe made from the op.
        let (s, e) = match op {
            Op::Insert(s, e) | Op::Carve(s, e) => (s, e),
            Op::Alloc(l, a) => (u64::from(a) * 7, u64::from(a) * 7 + l),
        };
        let probe = Range::new(s, e);
        prop_assert_eq!(set.intersects(probe), (s..e).any(|p| model.contains(&p)));
        prop_assert_eq!(
            set.contains(probe),
            s < e && (s..e).all(|p| model.contains(&p))
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn matches_model(ops in proptest::collection::vec(op(), 1..200)) {
        run_model(RangeSet::<8>::new(), Some(8), ops)?;
    }

    #[test]
    fn carving_a_sorted_list_at_once_is_carving_each(
        frees in proptest::collection::vec((0u64..400, 1u64..30), 0..40),
        cuts in proptest::collection::vec((0u64..400, 0u64..30), 0..40),
        sort in any::<bool>(),
    ) {
        let mut set = RangeVec::new();
        for (s, l) in frees {
            let _ = set.insert(Range::new(s, s + l));
        }
        let mut cuts: Vec<Range> = cuts.into_iter().map(|(s, l)| Range::new(s, s + l)).collect();
        if sort {
            cuts.sort_by_key(|c| c.start);
        }
        let mut each = set.clone();
        for c in cuts.iter().filter(|c| !c.is_empty()) {
            each.carve(*c).unwrap();
        }
        set.carve_sorted(&cuts).unwrap();
        prop_assert_eq!(set.as_slice(), each.as_slice());
    }

    #[test]
    fn vec_slots_match_model_without_a_limit(ops in proptest::collection::vec(op(), 1..200)) {
        run_model(RangeVec::new(), None, ops)?;
    }
}

proptest! {
    /// `overlaps` and `covers` agree with the sets of bytes.
    #[test]
    fn overlap_and_cover_match_byte_sets(a in 0u64..12, b in 0u64..12, c in 0u64..12, d in 0u64..12) {
        let (x, y) = (Range::new(a, b), Range::new(c, d));
        let bytes = |r: Range| (r.start..r.end).collect::<BTreeSet<u64>>();
        prop_assert_eq!(x.overlaps(&y), !bytes(x).is_disjoint(&bytes(y)));
        prop_assert_eq!(x.overlaps(&y), y.overlaps(&x));
        if !y.is_empty() {
            prop_assert_eq!(x.covers(y), bytes(y).is_subset(&bytes(x)));
        }
    }
}

#[test]
fn pages_around_rounds_out_and_saturates() {
    assert_eq!(
        Range::new(0x1001, 0x2001).pages_around(),
        Range::new(0x1000, 0x3000)
    );
    assert_eq!(
        Range::new(0x1000, 0x2000).pages_around(),
        Range::new(0x1000, 0x2000)
    );
    assert_eq!(Range::new(5, 5).pages_around(), Range::new(0, 0x1000));
    assert_eq!(
        Range::new(u64::MAX - 10, u64::MAX).pages_around(),
        Range::new(u64::MAX - 0xfff, u64::MAX)
    );
    assert_eq!(
        Range::new(u64::MAX - 0x1fff, u64::MAX - 0xfff)
            .pages_around()
            .end,
        u64::MAX - 0xfff
    );
}

#[test]
fn carve_full_leaves_set_unchanged() {
    let mut set = RangeSet::<2>::new();
    set.insert(Range::new(0, 10)).unwrap();
    set.insert(Range::new(20, 30)).unwrap();
    assert_eq!(set.carve(Range::new(4, 6)), Err(RangeError::Full));
    assert_eq!(set.as_slice(), &[Range::new(0, 10), Range::new(20, 30)]);
    // Carving a whole range frees a slot.
    set.carve(Range::new(0, 10)).unwrap();
    set.carve(Range::new(24, 26)).unwrap();
    assert_eq!(set.as_slice(), &[Range::new(20, 24), Range::new(26, 30)]);
}

#[test]
fn alloc_respects_window_and_alignment() {
    let mut set = RangeSet::<4>::new();
    set.insert(Range::new(0x1000, 0x10_0000)).unwrap();
    let a = set.alloc_in(0x2000, 0x1_0000, Range::new(0x8_0000, 0x10_0000));
    assert_eq!(a, Some(0x8_0000));
    assert!(!set.intersects(Range::new(0x8_0000, 0x8_2000)));
    assert_eq!(set.total(), 0xff000 - 0x2000);
}
