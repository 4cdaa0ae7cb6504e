//! Fuzz the whole restore: a first kernel's handoff (a shape drawn from the
//! input: memfds in both formats, a vmalloc buffer, a subsystem's data),
//! then bytes of the blob and of every metadata page changed, optionally
//! resealed so the change reaches the checks behind the checksums, then
//! the next kernel's whole restore in blob order and in a fuzzed order.
//! `kho::testkit::restore` checks the ownership rule after the retrieves
//! and at finish (panicking on a breach); here the two orders must give
//! the same outcome, and an unresealed change must never be read
//! silently.
//!
//! An input with a `chain` runs a chain of kernels instead: a first
//! kernel's memfds through up to four carrying kernels with drawn reads,
//! each hop checked against preflight with the ownership oracle of
//! `kho::testkit::chain` (panicking on a broken promise).
#![no_main]

use arbitrary::Arbitrary;
use kho::testkit::{self, Built, Outcome, Shape, Verdict};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Arbitrary, Debug)]
struct Input {
    shape: [u8; 8],
    changes: Vec<(u8, u16, u8)>,
    reseal: bool,
    order: Vec<u8>,
    chain: Option<Vec<u8>>,
}

/// Built handoffs and their clean outcomes, per shape: building one costs
/// more than restoring it.
fn built(shape: &[u8; 8]) -> (Built, Outcome) {
    static CACHE: Mutex<Option<HashMap<[u8; 8], (Built, Outcome)>>> = Mutex::new(None);
    let mut c = CACHE.lock().unwrap();
    let map = c.get_or_insert_with(HashMap::new);
    if map.len() > 256 {
        map.clear();
    }
    map.entry(*shape)
        .or_insert_with(|| {
            let b = testkit::build(&Shape::from_bytes(shape));
            let mut m = b.mem.clone();
            let o = testkit::restore(&mut m, &b.blob, &[]);
            assert!(o.complete(), "a valid handoff did not restore: {o:?}");
            (b, o)
        })
        .clone()
}

fuzz_target!(|input: Input| {
    if let Some(chain) = &input.chain {
        testkit::chain::run(&testkit::chain::ChainSpec::from_bytes(chain));
        return;
    }
    let (mut b, base) = built(&input.shape);
    let changes: Vec<_> = input.changes.iter().take(8).copied().collect();
    testkit::mutate(&mut b, &changes);
    if input.reseal {
        let pages = b.metadata_pages.clone();
        testkit::reseal(&mut b.mem, &mut b.blob, &pages);
        testkit::place_blob(&mut b);
    }
    let mut m2 = b.mem.clone();
    let second = testkit::restore(&mut m2, &b.blob, &input.order);
    let first = testkit::restore(&mut b.mem, &b.blob, &[]);
    assert_eq!(
        first, second,
        "the outcome depends on the order of retrieval"
    );
    if !input.reseal && !changes.is_empty() {
        let mut v = Verdict::default();
        v.add(&base, &first);
        assert_eq!(v.silently_wrong, 0, "read silently wrong: {first:?}");
    }
});
