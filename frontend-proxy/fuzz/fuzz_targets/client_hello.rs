//! libFuzzer: `tls_inspector`'s reading of a connection's first bytes (a
//! ClientHello, split across records or not): never a panic, a server name
//! only as a TLS stack would take it, and nothing read past the hello.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = frontend_proxy::fuzzing::check_client_hello(data) {
        panic!("{e}");
    }
});
