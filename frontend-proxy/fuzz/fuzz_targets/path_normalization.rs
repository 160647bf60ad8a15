//! libFuzzer: the connection manager's path normalization (the first
//! byte picks the settings, the rest is the request target): never a
//! panic, a path stays a path, and normalizing twice is normalizing once
//! (but for a dot segment with parameters a first pass leaves, as Envoy).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&options, target)) = data.split_first() else { return };
    if let Err(e) = frontend_proxy::fuzzing::check_path_normalization(options, target) {
        panic!("{e}");
    }
});
