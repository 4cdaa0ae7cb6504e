//! `fuzz_target!` as libfuzzer-sys 0.4 spells it, expanding to `pub fn
//! run(bytes: &[u8])` that decodes the input exactly as libFuzzer's entry
//! does (the size-hint check, then `arbitrary_take_rest`), so a fuzz
//! target's file can be compiled as a module and its kept inputs replayed
//! by a stable test.

pub use arbitrary;

/// Defines `run(bytes)`: the target's body on one input.
#[macro_export]
macro_rules! fuzz_target {
    (|$bytes:ident: &[u8]| $body:block) => {
        /// The target's body on one input.
        pub fn run($bytes: &[u8]) {
            $body
        }
    };
    (|$data:ident: $dty:ty| $body:block) => {
        /// The target's body on one input, decoded as libFuzzer decodes it.
        pub fn run(bytes: &[u8]) {
            use $crate::arbitrary::{Arbitrary, Unstructured};
            if bytes.len() < <$dty as Arbitrary>::size_hint(0).0 {
                return;
            }
            let u = Unstructured::new(bytes);
            if let Ok($data) = <$dty as Arbitrary>::arbitrary_take_rest(u) {
                $body
            }
        }
    };
}
