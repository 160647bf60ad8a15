//! The client side of upstream TLS: the certificate a cluster presents
//! (mTLS) and the checks an upstream's certificate must pass beyond its
//! chain (`match_typed_subject_alt_names`, `verify_certificate_hash`,
//! `verify_certificate_spki`, and the chain again with `crl`'s lists).
//!
//! Pingora's connector verifies the chain during the handshake only when
//! the peer has an SNI, and cannot match names other than the SNI or pin
//! hashes. So every handshake runs [`handshake_hook`], which judges the
//! finished handshake (OpenSSL records the chain's verification result even
//! when it did not abort on it) and leaves its [`ServerVerdict`] in the
//! connection's TLS digest; the request paths read it before writing a
//! request byte ([`verdict`]).

use super::{load_certificate, san_matches, CertificateSource, RevocationLists, SanMatcher, TlsError};
use pingora_core::protocols::tls::{HandshakeCompleteHook, SslDigest};
use pingora_core::tls::hash::MessageDigest;
use pingora_core::tls::ssl::SslRef;
use pingora_core::tls::x509::store::X509Store;
use pingora_core::tls::x509::{X509Ref, X509VerifyResult, X509};
use pingora_core::utils::tls::CertKey;
use std::sync::Arc;

/// What an upstream's certificate must carry, beyond a chain to the
/// cluster's `trusted_ca`. Empty lists check nothing (Envoy: no hostname
/// check either, unless asked for).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerCertificateChecks {
    /// `match_typed_subject_alt_names` and `match_subject_alt_names`: one
    /// must accept one of the certificate's names.
    pub subject_alt_names: Vec<SanMatcher>,
    /// `verify_certificate_hash`: SHA-256 of the certificate (DER).
    pub certificate_hashes: Vec<[u8; 32]>,
    /// `verify_certificate_spki`: SHA-256 of its SubjectPublicKeyInfo (DER).
    /// With hashes too, matching either list is enough, as in Envoy.
    pub spki_hashes: Vec<[u8; 32]>,
    /// `crl` and `only_verify_leaf_cert_crl`: the chain is verified again
    /// with the lists once the handshake is done.
    pub crl: Option<RevocationLists>,
}

/// Why an upstream's certificate was refused, named after the counter
/// Envoy adds to (`cluster.<name>.ssl.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyFailure {
    /// No certificate, or a chain that does not verify (`ssl.fail_verify_error`).
    Chain(String),
    /// No subject alternative name accepted (`ssl.fail_verify_san`).
    SubjectAltName,
    /// Neither hash pinned (`ssl.fail_verify_cert_hash`).
    CertificateHash,
}

impl std::fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyFailure::Chain(why) => write!(f, "upstream certificate not verified: {why}"),
            VerifyFailure::SubjectAltName => {
                f.write_str("upstream certificate has no subject alternative name the cluster accepts")
            }
            VerifyFailure::CertificateHash => {
                f.write_str("upstream certificate matches none of verify_certificate_hash / verify_certificate_spki")
            }
        }
    }
}

/// The judgement of one finished handshake, kept in its TLS digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerVerdict(pub Result<(), VerifyFailure>);

/// The verdict [`handshake_hook`] left in a connection's digest; `None`
/// when the hook did not run (the caller refuses such a connection).
pub fn verdict(digest: &SslDigest) -> Option<&ServerVerdict> {
    digest.extension.get::<ServerVerdict>()
}

/// The hook that judges each finished handshake of a cluster with a
/// validation context whose trusted CAs are `cas`.
pub fn handshake_hook(checks: ServerCertificateChecks, cas: &[X509]) -> Result<HandshakeCompleteHook, TlsError> {
    let revocation = match &checks.crl {
        Some(lists) => Some(super::crl::store(cas, lists).map_err(|e| TlsError::Setup(format!("crl: {e}")))?),
        None => None,
    };
    Ok(Arc::new(move |ssl: &SslRef| {
        let verdict = ServerVerdict(judge(ssl, &checks, revocation.as_ref()));
        let verdict: Arc<dyn std::any::Any + Send + Sync> = Arc::new(verdict);
        Some(verdict)
    }))
}

fn judge(ssl: &SslRef, checks: &ServerCertificateChecks, revocation: Option<&X509Store>) -> Result<(), VerifyFailure> {
    let Some(cert) = ssl.peer_certificate() else {
        return Err(VerifyFailure::Chain("the upstream sent no certificate".into()));
    };
    let result = ssl.verify_result();
    if result != X509VerifyResult::OK {
        return Err(VerifyFailure::Chain(result.error_string().to_string()));
    }
    if let Some(why) = revocation.and_then(|store| super::crl::chain_failure(store, ssl)) {
        return Err(VerifyFailure::Chain(why));
    }
    if !checks.subject_alt_names.is_empty() && !san_matches(&cert, &checks.subject_alt_names) {
        return Err(VerifyFailure::SubjectAltName);
    }
    let pinned = !checks.certificate_hashes.is_empty() || !checks.spki_hashes.is_empty();
    if pinned && !hash_pinned(&cert, checks) {
        return Err(VerifyFailure::CertificateHash);
    }
    Ok(())
}

fn hash_pinned(cert: &X509Ref, checks: &ServerCertificateChecks) -> bool {
    let by_cert = cert
        .digest(MessageDigest::sha256())
        .is_ok_and(|d| checks.certificate_hashes.iter().any(|h| h.as_slice() == &*d));
    let by_key = cert
        .public_key()
        .and_then(|k| k.public_key_to_der())
        .is_ok_and(|der| checks.spki_hashes.contains(&openssl::sha::sha256(&der)));
    by_cert || by_key
}

/// A cluster's client certificate, read and checked against its key, in
/// the form Pingora's connector presents.
pub fn client_certificate(source: &CertificateSource) -> Result<Arc<CertKey>, TlsError> {
    let c = load_certificate(source)?;
    let mut chain = vec![c.leaf];
    chain.extend(c.intermediates);
    Ok(Arc::new(CertKey::new(chain, c.key)))
}

#[cfg(test)]
mod tests {
    use super::super::dns_name_matches;

    #[test]
    fn exact_dns_names_match_as_host_names() {
        assert!(dns_name_matches("api.example.com", "api.example.com"));
        assert!(dns_name_matches("API.example.com", "api.EXAMPLE.com"), "host names ignore case");
        assert!(dns_name_matches("api.example.com", "*.example.com"), "a wildcard covers one label");
        assert!(!dns_name_matches("a.b.example.com", "*.example.com"), "and only one");
        assert!(!dns_name_matches("example.com", "*.example.com"));
        assert!(!dns_name_matches(".example.com", "*.example.com"), "an empty label is no label");
        assert!(!dns_name_matches("api.example.com", "api*.example.com"), "only a whole first label is a wildcard");
        assert!(!dns_name_matches("*.example.com", "api.example.com"));
    }
}
