//! Upstream connections refuse TLS 1.2 renegotiation unless the cluster
//! says `allow_renegotiation`, as Envoy's: Pingora's connector lets every
//! upstream renegotiate (`ssl_renegotiate_freely` on each connection), so
//! the mode is set again on each connection once its handshake is done
//! (the hook Pingora calls then), before a byte of a request is written or
//! read: `ssl_renegotiate_never`, BoringSSL's own default, or `freely`
//! when allowed (what Envoy sets).
//!
//! `unsafe` because boring has no setter for the mode, and Pingora builds
//! the connection: the one call takes a connection Pingora owns for its
//! duration.
#![allow(unsafe_code)]

use boring::ssl::SslRef;
use foreign_types_shared::ForeignTypeRef;
use pingora_core::tls::ssl_sys as ffi;

/// Whether the upstream of a connection whose handshake is done may renegotiate.
pub(super) fn set(ssl: &SslRef, allow: bool) {
    use ffi::ssl_renegotiate_mode_t as Mode;
    let mode = if allow { Mode::ssl_renegotiate_freely } else { Mode::ssl_renegotiate_never };
    // SAFETY: the pointer is a live connection for the call (borrowed);
    // setting the mode touches nothing else BoringSSL holds.
    unsafe {
        ffi::SSL_set_renegotiate_mode(ssl.as_ptr(), mode);
    }
}
