//! The session settings rust-openssl has no setter for: a context's
//! session lifetime (`SSL_CTX_set_timeout`) and its ticket key
//! (`SSL_CTX_set_tlsext_ticket_keys`, a macro over `SSL_CTX_ctrl`), and a
//! connection's session id context (`SSL_set_session_id_context`).
//!
//! Like `listen/defer.rs`, this module holds `unsafe` because no safe
//! wrapper exists: each block passes a context the builder owns for the
//! call's duration, and OpenSSL keeps no pointer to our data (it copies
//! the key).
#![allow(unsafe_code)]

use foreign_types_shared::ForeignTypeRef;
use pingora_core::tls::error::ErrorStack;
use pingora_core::tls::ssl::{SslContextBuilder, SslRef};
use pingora_core::tls::ssl_sys as ffi;
use std::os::raw::{c_int, c_long, c_uint, c_void};

extern "C" {
    // Functions of libssl (linked through openssl-sys), which openssl-sys
    // does not declare: `long SSL_CTX_set_timeout(SSL_CTX *ctx, long t)`,
    // `int SSL_set_session_id_context(SSL *ssl, const unsigned char
    // *sid_ctx, unsigned int sid_ctx_len)`.
    fn SSL_CTX_set_timeout(ctx: *mut ffi::SSL_CTX, t: c_long) -> c_long;
    fn SSL_set_session_id_context(ssl: *mut ffi::SSL, sid_ctx: *const u8, len: c_uint) -> c_int;
}

/// A connection's session id context: a session resumes only where it
/// is the one the session was made under. At most 32 bytes.
pub(super) fn set_session_id_context(ssl: &mut SslRef, sid: &[u8; 32]) -> Result<(), ErrorStack> {
    // SAFETY: the connection is valid while borrowed; `sid_ctx` points at
    // `len` readable bytes (32, OpenSSL's maximum), which it copies.
    let rc = unsafe { SSL_set_session_id_context(ssl.as_ptr(), sid.as_ptr(), sid.len() as c_uint) };
    if rc == 1 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
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
