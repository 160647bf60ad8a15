//! libFuzzer: the engine's request-head parser against the reference
//! reader (the checks of `tests/support/differential.rs`).
#![no_main]

#[path = "../../tests/support/differential.rs"]
mod differential;
#[path = "../../tests/support/strict.rs"]
mod strict;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = differential::check_request(data) {
        panic!("{e}");
    }
});
