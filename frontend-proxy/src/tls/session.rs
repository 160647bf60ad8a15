//! Session settings boring has no safe setter for: a context's session
//! lifetime (`SSL_CTX_set_timeout`) and a connection's session id context
//! (`SSL_set_session_id_context`); and Envoy's session ticket keys, which
//! BoringSSL takes through the ticket key callback, as Envoy gives them.
//!
//! Like `listen/defer.rs`, this module holds `unsafe` because no safe
//! wrapper exists: each block passes a context or connection that is ours
//! for the call's duration, and BoringSSL keeps no pointer to our data (it
//! copies what it is given).
#![allow(unsafe_code)]

use boring::hash::MessageDigest;
use boring::ssl::TicketKeyCallbackResult;
use boring::symm::Cipher;
use foreign_types_shared::ForeignTypeRef;
use pingora_core::tls::error::ErrorStack;
use pingora_core::tls::ssl::{SslContextBuilder, SslRef};
use pingora_core::tls::ssl_sys as ffi;

/// A connection's session id context: a session resumes only where it
/// is the one the session was made under. At most 32 bytes.
pub(super) fn set_session_id_context(ssl: &mut SslRef, sid: &[u8; 32]) -> Result<(), ErrorStack> {
    // SAFETY: the connection is valid while borrowed; `sid_ctx` points at
    // `len` readable bytes (32, the maximum), which BoringSSL copies.
    let rc = unsafe { ffi::SSL_set_session_id_context(ssl.as_ptr(), sid.as_ptr(), sid.len()) };
    if rc == 1 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}

/// How long a session (cached or in a ticket) may be resumed, in seconds:
/// TLS 1.2's lifetime and TLS 1.3's (`psk_dhe_timeout`; BoringSSL keeps
/// them apart, and Envoy on it sets the first only, which would leave TLS
/// 1.3 sessions two days — longer than the file says).
pub(super) fn set_timeout(builder: &mut SslContextBuilder, secs: u32) {
    // SAFETY: the context is valid while the builder is borrowed; the
    // calls only store the number.
    unsafe {
        ffi::SSL_CTX_set_timeout(builder.as_ptr(), secs);
        ffi::SSL_CTX_set_session_psk_dhe_timeout(builder.as_ptr(), secs);
    }
}

/// One of Envoy's session ticket keys: a 16-byte name, a 32-byte HMAC
/// secret, a 32-byte AES-256 key.
struct TicketKey {
    name: [u8; 16],
    hmac: [u8; 32],
    aes: [u8; 32],
}

impl TicketKey {
    fn new(key: &[u8; super::TICKET_KEY_LEN]) -> TicketKey {
        let mut k = TicketKey { name: [0; 16], hmac: [0; 32], aes: [0; 32] };
        k.name.copy_from_slice(&key[..16]);
        k.hmac.copy_from_slice(&key[16..48]);
        k.aes.copy_from_slice(&key[48..]);
        k
    }
}

/// Seals tickets with the first key and opens them with any, as Envoy's
/// ticket callback does: AES-256-CBC and HMAC-SHA256 under the key named
/// in the ticket. A ticket under another than the first key resumes and
/// is replaced by one under the first (rotation); one under no key we
/// hold gets a full handshake.
pub(super) fn set_ticket_keys(builder: &mut SslContextBuilder, keys: &[[u8; super::TICKET_KEY_LEN]]) {
    let keys: Vec<TicketKey> = keys.iter().map(TicketKey::new).collect();
    let callback = move |_: &SslRef,
                         name: &mut [u8; 16],
                         iv: &mut [u8; ffi::EVP_MAX_IV_LENGTH as usize],
                         cipher: &mut boring::symm::CipherCtxRef,
                         hmac: &mut boring::hmac::HmacCtxRef,
                         encrypt: bool| {
        let (key, renew) = if encrypt {
            let Some(first) = keys.first() else { return TicketKeyCallbackResult::Noop };
            if boring::rand::rand_bytes(iv).is_err() {
                return TicketKeyCallbackResult::Error;
            }
            *name = first.name;
            (first, false)
        } else {
            // Not a name of ours: a full handshake, as for any ticket we cannot open.
            let Some(i) = keys.iter().position(|k| k.name == *name) else { return TicketKeyCallbackResult::Noop };
            (&keys[i], i != 0)
        };
        let cipher_ok = if encrypt {
            cipher.init_encrypt(&Cipher::aes_256_cbc(), &key.aes, iv)
        } else {
            cipher.init_decrypt(&Cipher::aes_256_cbc(), &key.aes, iv)
        };
        if cipher_ok.and_then(|()| hmac.init(&key.hmac, &MessageDigest::sha256())).is_err() {
            return TicketKeyCallbackResult::Error;
        }
        if renew {
            TicketKeyCallbackResult::DecryptSuccessRenew
        } else {
            TicketKeyCallbackResult::Success
        }
    };
    // SAFETY: boring's contract for the callback: in encrypt mode the name
    // and a fresh random IV are written and both contexts initialised for
    // sealing; in decrypt mode both contexts are initialised with the key
    // the name selects and the IV given, or the ticket is declined
    // (`Noop`) without touching them; every path above keeps to that.
    unsafe { builder.set_ticket_key_callback(callback) };
}
