//! A certificate chain and its key as one BoringSSL credential
//! (`SSL_CREDENTIAL`). BoringSSL keeps a single certificate per context or
//! connection through the OpenSSL-style setters (a second replaces the
//! first), so a chain with several certificates of different key types
//! (RSA and ECDSA, as Envoy allows) gives each to the connection as a
//! credential: BoringSSL then serves the first one the client's signature
//! algorithms and groups accept, as Envoy's selection does.
//!
//! Like `session.rs`, this module holds `unsafe` because boring has no
//! constructor for X.509 credentials: [`Credential`] owns one reference
//! (freed on drop); the certificate buffers are ours until BoringSSL has
//! taken its own references to them.
#![allow(unsafe_code)]

use foreign_types_shared::ForeignTypeRef;
use pingora_core::tls::error::ErrorStack;
use pingora_core::tls::pkey::{PKeyRef, Private};
use pingora_core::tls::ssl::SslRef;
use pingora_core::tls::ssl_sys as ffi;
use pingora_core::tls::x509::X509Ref;

/// A complete credential: chain (leaf first) and private key.
pub(super) struct Credential(*mut ffi::SSL_CREDENTIAL);

// SAFETY: a credential is immutable once built (nothing here changes it
// after `new`), and BoringSSL counts its references atomically.
unsafe impl Send for Credential {}
// SAFETY: as above; `&Credential` only hands the pointer to
// `SSL_add1_credential`, which takes a reference of its own.
unsafe impl Sync for Credential {}

impl Drop for Credential {
    fn drop(&mut self) {
        // SAFETY: our one reference, released once.
        unsafe { ffi::SSL_CREDENTIAL_free(self.0) }
    }
}

/// A DER buffer BoringSSL made (freed on drop; the credential keeps its own reference).
struct Buffer(*mut ffi::CRYPTO_BUFFER);

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: our one reference, released once.
        unsafe { ffi::CRYPTO_BUFFER_free(self.0) }
    }
}

impl Credential {
    pub(super) fn new(
        leaf: &X509Ref,
        intermediates: &[impl AsRef<X509Ref>],
        key: &PKeyRef<Private>,
    ) -> Result<Credential, ErrorStack> {
        let mut buffers = Vec::with_capacity(1 + intermediates.len());
        for cert in std::iter::once(leaf).chain(intermediates.iter().map(AsRef::as_ref)) {
            let der = cert.to_der()?;
            // SAFETY: `der` is readable for its length; the buffer copies it.
            let buf = unsafe { ffi::CRYPTO_BUFFER_new(der.as_ptr(), der.len(), std::ptr::null_mut()) };
            if buf.is_null() {
                return Err(ErrorStack::get());
            }
            buffers.push(Buffer(buf));
        }
        let pointers: Vec<*mut ffi::CRYPTO_BUFFER> = buffers.iter().map(|b| b.0).collect();
        // SAFETY: a new credential is ours (checked for null, owned by
        // `cred` from then on, so freed on every path); the buffers and the
        // key are valid for the calls, which take references of their own.
        unsafe {
            let raw = ffi::SSL_CREDENTIAL_new_x509();
            if raw.is_null() {
                return Err(ErrorStack::get());
            }
            let cred = Credential(raw);
            if ffi::SSL_CREDENTIAL_set1_cert_chain(cred.0, pointers.as_ptr(), pointers.len()) != 1
                || ffi::SSL_CREDENTIAL_set1_private_key(cred.0, key.as_ptr()) != 1
            {
                return Err(ErrorStack::get());
            }
            Ok(cred)
        }
    }

    /// Offers the credential on one connection (during its handshake).
    pub(super) fn add_to(&self, ssl: &mut SslRef) -> Result<(), ErrorStack> {
        // SAFETY: both are valid for the call; BoringSSL takes its own reference.
        if unsafe { ffi::SSL_add1_credential(ssl.as_ptr(), self.0) } == 1 {
            Ok(())
        } else {
            Err(ErrorStack::get())
        }
    }
}
