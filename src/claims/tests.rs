//! Tests of `src/claims.rs`.

#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used
)]
use super::*;
use alloc::vec;
use proptest::prelude::*;

const P: u64 = PAGE_SIZE;

#[test]
fn claims_are_exclusive_and_must_be_preserved() {
    let pres = [
        Range::new(0x10 * P, 0x20 * P),
        Range::new(0x20 * P, 0x30 * P),
    ];
    let scratch = [Range::new(0x100 * P, 0x200 * P)];
    let mut c = Claims::new(pres, &scratch).unwrap();
    // Adjacent reported ranges are one: a folio may straddle them.
    assert_eq!(c.preserved().count(), 1);
    c.claim(0x1e * P, 4).unwrap();
    assert_eq!(
        c.claim(0x21 * P, 1),
        Err(ClaimError::Twice {
            range: Range::new(0x21 * P, 0x22 * P)
        })
    );
    assert!(matches!(
        c.claim(0x2f * P, 2),
        Err(ClaimError::NotPreserved { .. })
    ));
    assert!(matches!(
        c.claim(0x180 * P, 1),
        Err(ClaimError::InScratch { .. })
    ));
    assert!(matches!(
        c.claim(0x10 * P + 1, 1),
        Err(ClaimError::BadRange { .. })
    ));
    assert!(matches!(
        c.claim(u64::MAX - P + 1, 2),
        Err(ClaimError::BadRange { .. })
    ));
    assert_eq!(c.claimed_pages(), 4);
    let free: Vec<Range> = c.unclaimed().collect();
    assert_eq!(
        free,
        vec![
            Range::new(0x10 * P, 0x1e * P),
            Range::new(0x22 * P, 0x30 * P)
        ]
    );
    c.release(0x1e * P, 4);
    assert_eq!(c.claimed_pages(), 0);
    assert_eq!(
        c.unclaimed().collect::<Vec<_>>(),
        vec![Range::new(0x10 * P, 0x30 * P)]
    );
}

#[test]
fn scratch_is_refused_even_when_the_preserved_list_overlaps_it() {
    // Before, scratch was consulted only after a claim failed, so a
    // preserved list overlapping scratch let a claim in scratch pass.
    let pres = [Range::new(0x10 * P, 0x40 * P)];
    let scratch = [Range::new(0x20 * P, 0x30 * P)];
    let mut c = Claims::new(pres, &scratch).unwrap();
    for (at, n) in [(0x20, 1), (0x2f, 1), (0x1f, 2), (0x10, 0x30)] {
        assert!(
            matches!(c.claim(at * P, n), Err(ClaimError::InScratch { .. })),
            "{at:#x}+{n}"
        );
    }
    c.claim(0x10 * P, 0x10).unwrap();
    c.claim(0x30 * P, 0x10).unwrap();
    assert_eq!(c.claimed_pages(), 0x20);
    assert_eq!(c.to_free().count(), 0);
    // Two scratch areas inside one preserved range leave three pieces,
    // all claimable.
    let scratch = [
        Range::new(0x20 * P, 0x28 * P),
        Range::new(0x30 * P, 0x38 * P),
    ];
    let c = Claims::new([Range::new(0x10 * P, 0x40 * P)], &scratch).unwrap();
    assert_eq!(
        c.preserved().collect::<Vec<_>>(),
        vec![
            Range::new(0x10 * P, 0x20 * P),
            Range::new(0x28 * P, 0x30 * P),
            Range::new(0x38 * P, 0x40 * P)
        ]
    );
}

#[test]
fn metadata_keeps_its_role_until_finish() {
    let pres = [Range::new(0x10 * P, 0x20 * P)];
    let mut c = Claims::new(pres, &[]).unwrap();
    c.claim_meta(0x10 * P, 2).unwrap();
    c.claim(0x12 * P, 2).unwrap();
    // No one can take metadata, and releasing it changes nothing.
    assert!(matches!(
        c.claim(0x11 * P, 1),
        Err(ClaimError::Twice { .. })
    ));
    c.release(0x10 * P, 4);
    assert!(c.is_meta(0x10 * P) && c.is_claimed(0x11 * P));
    assert!(!c.is_claimed(0x12 * P));
    assert_eq!((c.claimed_pages(), c.data_pages()), (2, 0));
    assert!(matches!(
        c.claim(0x11 * P, 1),
        Err(ClaimError::Twice { .. })
    ));
    // Finish gives back the free pages and the metadata, once.
    assert_eq!(c.finish(), vec![Range::new(0x10 * P, 0x20 * P)]);
}

proptest! {
    /// Against a model (a set of claimed pages): a claim succeeds exactly
    /// when every page is preserved and free, and changes nothing when
    /// it fails; `unclaimed` is the complement.
    #[test]
    fn claims_match_a_page_set_model(
        ops in proptest::collection::vec((0u64..300, 1u64..80, any::<bool>()), 1..200),
    ) {
        let pres = [Range::new(10 * P, 70 * P), Range::new(100 * P, 230 * P), Range::new(230 * P, 240 * P)];
        let mut c = Claims::new(pres, &[]).unwrap();
        let preserved = |p: u64| (10..70).contains(&p) || (100..240).contains(&p);
        let mut model = std::collections::BTreeSet::new();
        for (page, n, claim) in ops {
            if claim {
                let all_pres = (page..page + n).all(preserved)
                    && ((page < 70 && page + n <= 70) || page >= 100);
                let free = (page..page + n).all(|p| !model.contains(&p));
                let r = c.claim(page * P, n);
                prop_assert_eq!(r.is_ok(), all_pres && free, "claim {} {}", page, n);
                if r.is_ok() {
                    model.extend(page..page + n);
                }
            } else if (page..page + n).all(preserved) && ((page < 70 && page + n <= 70) || page >= 100) {
                c.release(page * P, n);
                for p in page..page + n {
                    model.remove(&p);
                }
            }
            prop_assert_eq!(c.claimed_pages(), model.len() as u64);
        }
        let free: u64 = c.unclaimed().map(|r| r.len() / P).sum();
        prop_assert_eq!(free + model.len() as u64, 60 + 140);
        for r in c.unclaimed() {
            for p in r.start / P..r.end / P {
                prop_assert!(!model.contains(&p) && preserved(p));
            }
        }
    }
}
