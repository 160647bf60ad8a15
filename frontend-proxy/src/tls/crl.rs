//! Certificate revocation lists (`validation_context.crl`, in the
//! bootstrap or in a validation-context secret): read from PEM, and added
//! to a verification store with Envoy's flags. OpenSSL does the checking
//! itself (signature, validity, the serial); nothing is judged here.
//! The stores are built here too: as Envoy (`enable_intermediate_ca`,
//! on by default), a `trusted_ca` may be an intermediate CA, which then
//! anchors a chain on its own (`X509_V_FLAG_PARTIAL_CHAIN`).
//!
//! Like `session.rs`, this module holds `unsafe` because boring has no
//! wrapper for revocation lists: [`Crl`] owns one BoringSSL parsed, and
//! `X509_STORE_add_crl` takes a store the builder owns for the call's
//! duration and raises the list's reference count (it keeps its own
//! reference, not ours); `X509_STORE_set_purpose` only stores a number.
#![allow(unsafe_code)]

use boring::ssl::SslRef;
use boring::x509::store::{X509Store, X509StoreBuilder, X509StoreBuilderRef, X509StoreRef};
use boring::x509::verify::X509VerifyFlags;
use boring::x509::{X509StoreContext, X509};
use foreign_types_shared::ForeignTypeRef;
use pingora_core::tls::error::ErrorStack;
use pingora_core::tls::ssl_sys as ffi;
use std::os::raw::{c_int, c_long};

/// One revocation list, parsed by BoringSSL (freed on drop).
struct Crl(*mut ffi::X509_CRL);

impl Drop for Crl {
    fn drop(&mut self) {
        // SAFETY: the pointer came from a parse that succeeded and is
        // freed once, here; the store holds its own reference.
        unsafe { ffi::X509_CRL_free(self.0) }
    }
}

impl Crl {
    fn from_der(der: &[u8]) -> Result<Crl, ErrorStack> {
        let mut p = der.as_ptr();
        // Clamped (never on 64 bits): BoringSSL then reads less, never more.
        let len = c_long::try_from(der.len()).unwrap_or(c_long::MAX);
        // SAFETY: `p` points at `len` readable bytes; d2i allocates a new
        // list (first argument null) and only advances `p`.
        let crl = unsafe { ffi::d2i_X509_CRL(std::ptr::null_mut(), &mut p, len) };
        if crl.is_null() {
            Err(ErrorStack::get())
        } else {
            Ok(Crl(crl))
        }
    }

    /// The one list of a `X509 CRL` PEM block.
    fn from_pem(pem: &[u8]) -> Result<Crl, ErrorStack> {
        let len = isize::try_from(pem.len()).unwrap_or(isize::MAX);
        // SAFETY: the memory BIO reads `pem` (borrowed for the block) and
        // is freed on every path before the block ends; the list read is
        // a new allocation we own.
        unsafe {
            let bio = ffi::BIO_new_mem_buf(pem.as_ptr().cast(), len);
            if bio.is_null() {
                return Err(ErrorStack::get());
            }
            let crl = ffi::PEM_read_bio_X509_CRL(bio, std::ptr::null_mut(), None, std::ptr::null_mut());
            ffi::BIO_free_all(bio);
            if crl.is_null() {
                Err(ErrorStack::get())
            } else {
                Ok(Crl(crl))
            }
        }
    }

    fn to_der(&self) -> Result<Vec<u8>, ErrorStack> {
        // SAFETY: a null output pointer asks for the length only.
        let len = unsafe { ffi::i2d_X509_CRL(self.0, std::ptr::null_mut()) };
        let Ok(size) = usize::try_from(len) else { return Err(ErrorStack::get()) };
        let mut der = vec![0u8; size];
        let mut p = der.as_mut_ptr();
        // SAFETY: `der` has room for the `len` bytes the first call counted.
        let written = unsafe { ffi::i2d_X509_CRL(self.0, &mut p) };
        if written != len {
            return Err(ErrorStack::get());
        }
        Ok(der)
    }
}

/// A validation context's revocation lists, as DER (parsed once already,
/// so a listener's acceptor cannot fail on them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationLists {
    pub der: Vec<Vec<u8>>,
    /// `only_verify_leaf_cert_crl`: only the client's own certificate is
    /// checked. Otherwise, as Envoy, every certificate of the chain is,
    /// and one whose issuer has no list here fails verification
    /// ("unable to get certificate CRL").
    pub leaf_only: bool,
}

const BEGIN: &str = "-----BEGIN X509 CRL-----";
const END: &str = "-----END X509 CRL-----";

/// Every `X509 CRL` block of a PEM text, as DER. Other blocks (a
/// certificate bundled with its CA's list) are skipped, as Envoy skips
/// them; a block that does not parse, or no list at all, is an error (a
/// CRL check without lists would refuse every client).
pub fn parse_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "not PEM text".to_string())?;
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let block = &rest[start..];
        let Some(end) = block.find(END) else {
            return Err(format!("CRL {} has no {END} line", out.len() + 1));
        };
        let crl = Crl::from_pem(&block.as_bytes()[..end + END.len()]);
        // A block that did not parse leaves its errors on the thread's queue.
        let crl = crl.map_err(|_| {
            drop(ErrorStack::get());
            format!("CRL {} does not parse (base64 DER of an X.509 CRL expected)", out.len() + 1)
        })?;
        out.push(crl.to_der().map_err(|e| e.to_string())?);
        rest = &block[end + END.len()..];
    }
    if out.is_empty() {
        return Err(format!("no certificate revocation list found (expected a {BEGIN} block)"));
    }
    Ok(out)
}

/// The lists bundled in a `trusted_ca` file, as DER: none is fine there
/// (Envoy's `parseCaCertList` collects them, and checks revocation when it
/// found any); one that does not parse is an error.
pub fn bundled(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if !pem.windows(BEGIN.len()).any(|w| w == BEGIN.as_bytes()) {
        return Ok(Vec::new());
    }
    parse_pem(pem)
}

impl RevocationLists {
    /// `crl`'s lists (or `only_verify_leaf_cert_crl` alone, as empty
    /// lists) with those bundled in `trusted_ca`: Envoy checks revocation
    /// with both, by `only_verify_leaf_cert_crl`'s rule; `None` when there
    /// is no list at all (nothing is checked then, in Envoy too).
    pub fn with_bundled(lists: Option<RevocationLists>, bundled: Vec<Vec<u8>>) -> Option<RevocationLists> {
        let leaf_only = lists.as_ref().is_some_and(|l| l.leaf_only);
        let mut der = bundled;
        der.extend(lists.into_iter().flat_map(|l| l.der));
        (!der.is_empty()).then_some(RevocationLists { der, leaf_only })
    }
}

/// Reads and parses the lists of a secret's `crl`.
pub fn load(source: &super::PemSource, leaf_only: bool) -> Result<RevocationLists, super::TlsError> {
    let (pem, origin) = super::read(source)?;
    let der = parse_pem(&pem).map_err(|why| super::TlsError::Setup(format!("crl {origin}: {why}")))?;
    Ok(RevocationLists { der, leaf_only })
}

/// Lets a `trusted_ca` that is an intermediate CA anchor a chain, as
/// Envoy's default validator does (`X509_V_FLAG_PARTIAL_CHAIN`).
pub(super) fn trust_intermediates(store: &mut X509StoreBuilderRef) -> Result<(), ErrorStack> {
    store.set_flags(X509VerifyFlags::PARTIAL_CHAIN);
    Ok(())
}

/// Adds the lists to `store` and turns checking on: the leaf only, or the
/// whole chain (`X509_V_FLAG_CRL_CHECK` and `X509_V_FLAG_CRL_CHECK_ALL`).
pub(super) fn install(store: &mut X509StoreBuilderRef, lists: &RevocationLists) -> Result<(), ErrorStack> {
    if lists.der.is_empty() {
        // `only_verify_leaf_cert_crl` without any list: nothing to check.
        return Ok(());
    }
    for der in &lists.der {
        let crl = Crl::from_der(der)?;
        // SAFETY: both pointers are valid for the call (the store is
        // borrowed mutably, `crl` lives to the end of the iteration);
        // BoringSSL takes a reference of its own to the list.
        let rc = unsafe { ffi::X509_STORE_add_crl(store.as_ptr(), crl.0) };
        if rc != 1 {
            return Err(ErrorStack::get());
        }
    }
    let mut flags = X509VerifyFlags::CRL_CHECK;
    if !lists.leaf_only {
        flags |= X509VerifyFlags::CRL_CHECK_ALL;
    }
    store.set_flags(flags);
    Ok(())
}

/// A store of `cas` and `lists`: a listener's client CAs from a secret
/// (`server: false`), or a cluster's trusted CAs, for checking an
/// upstream's chain once its handshake is done (`server: true`: the
/// certificate must be fit for a TLS server, as OpenSSL's `ssl_server`
/// purpose says, which Envoy's verification uses). Pingora's connector
/// verifies with a store of its own, without lists or partial chains.
pub(super) fn store(cas: &[X509], lists: Option<&RevocationLists>, server: bool) -> Result<X509Store, ErrorStack> {
    let mut builder = X509StoreBuilder::new()?;
    for ca in cas {
        builder.add_cert(ca.clone())?;
    }
    trust_intermediates(&mut builder)?;
    if server {
        // SAFETY: the store is the builder's, borrowed for the call, which
        // only records the purpose.
        if unsafe { ffi::X509_STORE_set_purpose(builder.as_ptr(), ffi::X509_PURPOSE_SSL_SERVER as c_int) } != 1 {
            return Err(ErrorStack::get());
        }
    }
    if let Some(lists) = lists {
        install(&mut builder, lists)?;
    }
    Ok(builder.build())
}

/// Why the peer's chain fails against `store` (untrusted, a revoked
/// certificate, a list missing), or `None` when it verifies. On the
/// client side the peer's chain holds its certificate too.
pub(super) fn chain_failure(store: &X509StoreRef, ssl: &SslRef) -> Option<String> {
    let (Some(leaf), Some(chain)) = (ssl.peer_certificate(), ssl.peer_cert_chain()) else {
        return Some("the upstream sent no certificate".into());
    };
    let verdict = X509StoreContext::new().and_then(|mut ctx| {
        ctx.init(store, &leaf, chain, |c| {
            Ok(if c.verify_cert()? {
                None
            } else {
                Some(c.verify_result().err().map_or("unverified", |e| e.error_string()).to_string())
            })
        })
    });
    // A chain that fails leaves its errors on the thread's queue (the
    // result says why already): cleared, or Pingora finds them on its
    // next TLS call and logs "Clearing dirty TLS error stack" each time
    // an upstream sends a bad chain.
    drop(ErrorStack::get());
    verdict.unwrap_or_else(|e| Some(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_read_among_other_pem_blocks() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let issuer = rcgen::Issuer::new(params, key);
        let list = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: 7u64.into(),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .unwrap();
        let pem = list.pem().unwrap();
        // A CA bundled with its list: the certificate is skipped.
        let bundle = format!("{}{pem}{pem}", cert.pem());
        assert_eq!(parse_pem(bundle.as_bytes()).unwrap(), vec![list.der().to_vec(); 2]);
        assert!(parse_pem(cert.pem().as_bytes()).unwrap_err().contains("no certificate revocation list"));
        let truncated = &pem[..pem.len() - 10];
        assert!(parse_pem(truncated.as_bytes()).unwrap_err().contains("has no -----END X509 CRL----- line"));
    }
}
