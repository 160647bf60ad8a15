//! A listener's or an upstream's certificates: read and checked at start
//! (or when an SDS file changes), at most one per key type, and the one a
//! client is served chosen from its ClientHello, as Envoy chooses.

use super::{read, CertificateSource, TlsError};
use arc_swap::ArcSwap;
use pingora_core::tls::error::ErrorStack;
use pingora_core::tls::nid::Nid;
use pingora_core::tls::pkey::{PKey, Private};
use pingora_core::tls::ssl::{ClientHello, ExtensionType, SslRef};
use pingora_core::tls::x509::X509;
use std::sync::Arc;

/// A certificate chain and its key, read and checked.
pub(super) struct LoadedCertificate {
    pub(super) leaf: X509,
    pub(super) intermediates: Vec<X509>,
    pub(super) key: PKey<Private>,
    /// For an ECDSA key, the one TLS signature algorithm it signs with
    /// (`ecdsa_secp256r1_sha256` and so on: TLS 1.3 ties curve and hash).
    ecdsa_sigalg: Option<u16>,
}

pub(super) fn load_certificate(source: &CertificateSource) -> Result<LoadedCertificate, TlsError> {
    let (cert_pem, cert_origin) = read(&source.certificate_chain)?;
    let (key_pem, key_origin) = read(&source.private_key)?;
    let mut chain = X509::stack_from_pem(&cert_pem)
        .map_err(|e| TlsError::Certificate { origin: cert_origin.clone(), message: e.to_string() })?
        .into_iter();
    let leaf = chain
        .next()
        .ok_or_else(|| TlsError::Certificate { origin: cert_origin.clone(), message: "no certificate found".into() })?;
    let key = PKey::private_key_from_pem(&key_pem)
        .map_err(|e| TlsError::Key { origin: key_origin.clone(), message: e.to_string() })?;
    let matches = leaf.public_key().is_ok_and(|public| public.public_eq(&key));
    if !matches {
        return Err(TlsError::Mismatch(format!("{cert_origin} and {key_origin}")));
    }
    let ecdsa_sigalg = key.ec_key().ok().and_then(|ec| match ec.group().curve_name() {
        Some(Nid::X9_62_PRIME256V1) => Some(0x0403),
        Some(Nid::SECP384R1) => Some(0x0503),
        Some(Nid::SECP521R1) => Some(0x0603),
        _ => None,
    });
    Ok(LoadedCertificate { leaf, intermediates: chain.collect(), key, ecdsa_sigalg })
}

/// Reads every certificate of a listener. As Envoy, at most one per key
/// type: of two that the client would both accept, the second would never
/// be served.
pub(super) fn load_certificates(sources: &[CertificateSource]) -> Result<Vec<LoadedCertificate>, TlsError> {
    let certs = sources.iter().map(load_certificate).collect::<Result<Vec<_>, _>>()?;
    one_per_key_type(certs.iter())?;
    Ok(certs)
}

pub(super) fn one_per_key_type<'a>(certs: impl Iterator<Item = &'a LoadedCertificate>) -> Result<(), TlsError> {
    let mut seen = Vec::new();
    for (i, c) in certs.enumerate() {
        if seen.contains(&c.key.id()) {
            return Err(TlsError::Setup(format!(
                "tls_certificates[{i}]: at most one certificate of each key type ({:?}) may be given",
                c.key.id()
            )));
        }
        seen.push(c.key.id());
    }
    Ok(())
}

/// The ECDHE-ECDSA cipher suites of TLS 1.0–1.2 BoringSSL has (GCM,
/// ChaCha20-Poly1305, CBC): a client offering none cannot be served an
/// ECDSA certificate below TLS 1.3.
const ECDHE_ECDSA_SUITES: [u16; 7] = [0xC02B, 0xC02C, 0xCCA9, 0xC009, 0xC00A, 0xC023, 0xC024];

/// Which of a chain's certificates a client gets, as Envoy chooses (one
/// per key type, so at most one of each): an ECDSA certificate if the
/// client can verify its signature — its `signature_algorithms` hold the
/// certificate's algorithm, and it offers TLS 1.3 or an ECDHE-ECDSA
/// suite —, otherwise one that is not ECDSA (RSA), otherwise the first.
/// BoringSSL serves one certificate per connection, so the choice is ours
/// and is made from the ClientHello alone: a resumed session gets the one
/// its full handshake got.
fn choose<'a>(certs: &[&'a LoadedCertificate], hello: &ClientHello<'_>) -> Option<&'a LoadedCertificate> {
    fn u16s(list: &[u8]) -> impl Iterator<Item = u16> + '_ {
        list.chunks_exact(2).map(|p| u16::from_be_bytes([p[0], p[1]]))
    }
    // Both extensions are length-prefixed lists (2 bytes; 1 for versions).
    let sigalgs = hello.get_extension(ExtensionType::SIGNATURE_ALGORITHMS).and_then(|e| e.get(2..)).unwrap_or(&[]);
    let tls13 = hello
        .get_extension(ExtensionType::SUPPORTED_VERSIONS)
        .and_then(|e| e.get(1..))
        .is_some_and(|v| u16s(v).any(|v| v == 0x0304));
    let ecdsa_suite = tls13 || u16s(hello.ciphers()).any(|c| ECDHE_ECDSA_SUITES.contains(&c));
    let ecdsa_ok =
        |c: &&&LoadedCertificate| c.ecdsa_sigalg.is_some_and(|alg| ecdsa_suite && u16s(sigalgs).any(|s| s == alg));
    certs.iter().find(ecdsa_ok).or_else(|| certs.iter().find(|c| c.ecdsa_sigalg.is_none())).or(certs.first()).copied()
}

/// Installs `cert` on one connection, with its intermediates.
fn use_certificate(ssl: &mut SslRef, cert: &LoadedCertificate) -> Result<(), ErrorStack> {
    ssl.set_certificate(&cert.leaf)?;
    ssl.set_private_key(&cert.key)?;
    for i in &cert.intermediates {
        ssl.add_chain_cert(i)?;
    }
    Ok(())
}

/// A filter chain's certificates as the handshake finds them: those read
/// once, at start, and those of SDS files, as each is when a client connects.
/// Of several (of different key types), the client's capabilities choose one ([`choose`]).
pub(super) struct ChainCertificates {
    pub(super) fixed: Vec<LoadedCertificate>,
    /// SDS certificates as `rotation.rs` swaps them (its `LiveCertificate`).
    pub(super) live: Vec<Arc<ArcSwap<LoadedCertificate>>>,
}

impl ChainCertificates {
    /// Installs the one `hello`'s client gets.
    pub(super) fn install(&self, hello: &mut ClientHello<'_>) -> Result<(), ErrorStack> {
        let current: Vec<_> = self.live.iter().map(|l| l.load_full()).collect();
        let all: Vec<&LoadedCertificate> = self.fixed.iter().chain(current.iter().map(|c| c.as_ref())).collect();
        match choose(&all, hello) {
            Some(cert) => use_certificate(hello.ssl_mut(), cert),
            None => Ok(()),
        }
    }
}
