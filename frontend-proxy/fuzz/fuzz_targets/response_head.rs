//! libFuzzer: the engine's reading of an upstream response head (interim
//! responses, framing, status) against the reference reader. The first
//! byte says what the request asked (bit 0: HEAD, bit 1: an upgrade).
#![no_main]

#[path = "../../tests/support/differential.rs"]
mod differential;
#[path = "../../tests/support/strict.rs"]
mod strict;

use frontend_proxy::fuzzing::Asked;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else { return };
    let asked = Asked { head: flags & 1 != 0, upgrade: flags & 2 != 0 };
    if let Err(e) = differential::check_response_head(bytes, asked) {
        panic!("{e}");
    }
});
