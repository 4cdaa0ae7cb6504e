//! Fuzz the image-bundle parser (`kho-images-v1`): any bytes give an
//! error or a bundle whose images are non-empty, page aligned, inside the
//! bytes, after the header page, in order and disjoint; never a panic.
#![no_main]

use kho::abi::images::{Bundle, IMAGE_ALIGN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(b) = Bundle::parse(data) else { return };
    let mut end = IMAGE_ALIGN as u64;
    for i in 0..b.len() {
        let (off, len) = b.image(i).unwrap();
        assert!(len > 0 && off % IMAGE_ALIGN as u64 == 0);
        assert!(off >= end && off + len <= data.len() as u64);
        end = off + len;
    }
    assert_eq!(b.image(b.len()), None);
});
