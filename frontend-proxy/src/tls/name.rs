//! A certificate's subject as RFC 2253 text (`CN=client,O=Example`), the
//! form Envoy writes in `x-forwarded-client-cert`. boring has no
//! wrapper for `X509_NAME_print_ex`, and BoringSSL's escaping (`,+"\<>;`,
//! control and non-ASCII bytes) is what keeps a name from breaking the
//! header's own syntax, so it is called rather than imitated.
//!
//! Like `session.rs`, this module holds `unsafe` because no safe wrapper
//! exists: the memory BIO is ours for the block's duration and freed
//! before it ends; the name is borrowed from a certificate that outlives
//! the call.
#![allow(unsafe_code)]

use foreign_types_shared::ForeignTypeRef;
use pingora_core::tls::error::ErrorStack;
use pingora_core::tls::ssl_sys as ffi;
use pingora_core::tls::x509::X509NameRef;
use std::os::raw::{c_char, c_ulong};

/// `XN_FLAG_RFC2253` from `x509.h`: `ASN1_STRFLGS_RFC2253` | comma
/// separators | reversed order | short field names | unknown fields dumped.
const XN_FLAG_RFC2253: c_ulong = ffi::XN_FLAG_RFC2253 as c_ulong;

/// The name in RFC 2253 form; `None` if OpenSSL cannot print it.
pub(super) fn rfc2253(name: &X509NameRef) -> Option<String> {
    // SAFETY: `bio` is checked for null, used only here and freed on every
    // path; `name` is a valid X509_NAME borrowed for the call; the data
    // pointer BIO_ctrl returns stays valid until the BIO is freed, and is
    // copied before that.
    unsafe {
        let bio = ffi::BIO_new(ffi::BIO_s_mem());
        if bio.is_null() {
            return None;
        }
        let printed = ffi::X509_NAME_print_ex(bio, name.as_ptr(), 0, XN_FLAG_RFC2253);
        if printed < 0 {
            // Leave no error on the thread's queue for the next handshake to trip on.
            let _ = ErrorStack::get();
        }
        let mut data: *mut c_char = std::ptr::null_mut();
        let len = ffi::BIO_get_mem_data(bio, &mut data);
        let out = (printed >= 0 && len >= 0 && (len == 0 || !data.is_null())).then(|| {
            let bytes = if len == 0 { &[][..] } else { std::slice::from_raw_parts(data.cast::<u8>(), len as usize) };
            String::from_utf8_lossy(bytes).into_owned()
        });
        ffi::BIO_free_all(bio);
        out
    }
}
