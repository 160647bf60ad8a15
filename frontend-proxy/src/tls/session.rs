//! The two session settings rust-openssl has no setter for: a context's
//! session lifetime (`SSL_CTX_set_timeout`) and its ticket key
//! (`SSL_CTX_set_tlsext_ticket_keys`, a macro over `SSL_CTX_ctrl`).
//!
//! Like `listen/defer.rs`, this module holds `unsafe` because no safe
//! wrapper exists: each block passes a context the builder owns for the
//! call's duration, and OpenSSL keeps no pointer to our data (it copies
//! the key).
#![allow(unsafe_code)]

use pingora_core::tls::error::ErrorStack;
use pingora_core::tls::ssl::SslContextBuilder;
use pingora_core::tls::ssl_sys as ffi;
use std::os::raw::{c_int, c_long, c_void};

extern "C" {
    // A function of libssl (linked through openssl-sys), which openssl-sys
    // does not declare: `long SSL_CTX_set_timeout(SSL_CTX *ctx, long t)`.
    fn SSL_CTX_set_timeout(ctx: *mut ffi::SSL_CTX, t: c_long) -> c_long;
}

/// `SSL_CTRL_SET_TLSEXT_TICKET_KEYS` in OpenSSL's `ssl.h`.
const SSL_CTRL_SET_TLSEXT_TICKET_KEYS: c_int = 59;

/// How long a session (cached or in a ticket) may be resumed, in seconds.
pub(super) fn set_timeout(builder: &mut SslContextBuilder, secs: u32) {
    // SAFETY: the context is valid while the builder is borrowed; the call
    // only stores the number (it returns the previous one).
    unsafe {
        SSL_CTX_set_timeout(builder.as_ptr(), c_long::from(secs));
    }
}

/// The key that seals and opens session tickets: a 16-byte name, a 32-byte
/// HMAC secret, a 32-byte AES key.
pub(super) fn set_ticket_key(
    builder: &mut SslContextBuilder,
    key: &[u8; super::TICKET_KEY_LEN],
) -> Result<(), ErrorStack> {
    // SAFETY: the context is valid while the builder is borrowed; `parg`
    // points at `larg` readable bytes, which OpenSSL copies before it
    // returns (it never writes through the pointer for this command).
    let rc = unsafe {
        ffi::SSL_CTX_ctrl(
            builder.as_ptr(),
            SSL_CTRL_SET_TLSEXT_TICKET_KEYS,
            super::TICKET_KEY_LEN as c_long,
            key.as_ptr().cast_mut().cast::<c_void>(),
        )
    };
    if rc == 1 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}
