//! Tests of `src/chain.rs`.

#![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
use super::*;

#[test]
fn the_fast_page_sum_is_the_defined_one() {
    let mut page = [0u8; PAGE_BYTES];
    for (i, b) in page.iter_mut().enumerate() {
        *b = (i * 31 + 7) as u8;
    }
    // Every used-word count, short, long, past the payload (clamped):
    // the fast path is the definition, the header and used words.
    for words in [0u32, 1, 3, 4, 5, 11, 12, 100, 507, 508, 509, 0xffff_ffff] {
        page[20..24].copy_from_slice(&words.to_le_bytes());
        let len = HEADER_BYTES + 8 * (words as usize).min(PAYLOAD_WORDS);
        assert_eq!(summed_len(&page), len);
        assert_eq!(
            page_sum(&page),
            crate::csum::sum64_skipping(&page[..len], SUM_OFFSET),
            "{words} words"
        );
    }
    // A change past the used words leaves the sum alone (the reader's
    // zero check catches it); inside, it changes the sum.
    page[20..24].copy_from_slice(&10u32.to_le_bytes());
    let before = page_sum(&page);
    page[HEADER_BYTES + 8 * 10] ^= 1;
    assert_eq!(page_sum(&page), before);
    page[HEADER_BYTES + 8 * 9] ^= 1;
    assert_ne!(page_sum(&page), before);
    reseal(&mut page);
    let stored = u64::from_le_bytes(
        page[SUM_OFFSET..SUM_OFFSET + 8]
            .try_into()
            .unwrap_or([0; 8]),
    );
    assert_eq!(stored, page_sum(&page));
}
