//! libFuzzer: the engine's chunked scanner against the reference decoder,
//! the body split into reads. The first three bytes place the splits.
#![no_main]

#[path = "../../tests/support/differential.rs"]
mod differential;
#[path = "../../tests/support/strict.rs"]
mod strict;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let cuts = [usize::from(data[0]) * 7, usize::from(data[1]) * 13, usize::from(data[2]) * 31];
    if let Err(e) = differential::check_chunked(&data[3..], &cuts) {
        panic!("{e}");
    }
});
