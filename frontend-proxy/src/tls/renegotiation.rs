//! Upstream connections refuse TLS 1.2 renegotiation, as Envoy's do
//! (BoringSSL's default, `ssl_renegotiate_never`): OpenSSL's client
//! accepts a server's HelloRequest unless `SSL_OP_NO_RENEGOTIATION` is set,
//! and Pingora's connector leaves it unset. It is set on each connection
//! once its handshake is done (the hook Pingora calls then), before a
//! byte of a request is written or read.
//!
//! `unsafe` because rust-openssl sets options on contexts only, and
//! Pingora builds the context: the one call takes a connection Pingora
//! owns for its duration.
#![allow(unsafe_code)]

use foreign_types_shared::ForeignTypeRef;
use openssl::ssl::{SslOptions, SslRef};
use pingora_core::tls::ssl_sys as ffi;

extern "C" {
    // libssl (linked through openssl-sys), a function since OpenSSL 1.1.0,
    // with 64-bit options since 3.0: `uint64_t SSL_set_options(SSL *s, uint64_t op)`.
    fn SSL_set_options(ssl: *mut ffi::SSL, op: u64) -> u64;
}

/// Turns renegotiation off on a connection whose handshake is done.
pub(super) fn refuse(ssl: &SslRef) {
    // SAFETY: the pointer is a live connection for the call (borrowed);
    // setting an option bit touches nothing else OpenSSL holds.
    unsafe {
        SSL_set_options(ssl.as_ptr(), SslOptions::NO_RENEGOTIATION.bits());
    }
}
