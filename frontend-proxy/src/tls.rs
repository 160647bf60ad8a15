//! TLS material: where certificates and keys come from ([`PemSource`]), a
//! listener's certificate, key and ALPN ([`DownstreamTls`]) and upstream
//! trust anchors, loaded at start so that a bad file fails `--mode
//! validate` and start-up, never a request.

use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::ALPN;
use pingora_core::tls::pkey::PKey;
use pingora_core::tls::ssl::{SslAcceptor, SslMethod};
use pingora_core::tls::x509::X509;
use std::path::PathBuf;

/// PEM material: a file to read at start, or the text itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemSource {
    File(PathBuf),
    Inline(String),
}

/// A TLS listener's certificate chain, key and ALPN protocols.
#[derive(Debug, Clone)]
pub struct DownstreamTls {
    pub certificate_chain: PemSource,
    pub private_key: PemSource,
    /// Empty: Envoy's default for a TLS listener without ALPN (HTTP/1.1 and h2 per codec).
    pub alpn_protocols: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid certificate in {origin}: {message}")]
    Certificate { origin: String, message: String },
    #[error("invalid private key in {origin}: {message}")]
    Key { origin: String, message: String },
    #[error("certificate and private key do not match: {0}")]
    Mismatch(String),
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

fn read(source: &PemSource) -> Result<(Vec<u8>, String), TlsError> {
    match source {
        PemSource::File(p) => std::fs::read(p)
            .map(|b| (b, p.display().to_string()))
            .map_err(|e| TlsError::Read { path: p.display().to_string(), source: e }),
        PemSource::Inline(s) => Ok((s.as_bytes().to_vec(), "inline_string".to_string())),
    }
}

/// Builds the listener's TLS settings. `allowed` is what the listener's
/// codec serves (h2 and HTTP/1.1, or one of them); with both, the
/// listener's `alpn_protocols` may narrow the offer.
pub fn downstream_settings(tls: &DownstreamTls, allowed: ALPN) -> Result<TlsSettings, TlsError> {
    let (cert_pem, cert_origin) = read(&tls.certificate_chain)?;
    let (key_pem, key_origin) = read(&tls.private_key)?;
    let mut chain = X509::stack_from_pem(&cert_pem)
        .map_err(|e| TlsError::Certificate { origin: cert_origin.clone(), message: e.to_string() })?
        .into_iter();
    let leaf = chain
        .next()
        .ok_or_else(|| TlsError::Certificate { origin: cert_origin.clone(), message: "no certificate found".into() })?;
    let key = PKey::private_key_from_pem(&key_pem)
        .map_err(|e| TlsError::Key { origin: key_origin, message: e.to_string() })?;

    let mut builder =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).map_err(|e| TlsError::Setup(e.to_string()))?;
    builder.set_certificate(&leaf).map_err(|e| TlsError::Setup(e.to_string()))?;
    for intermediate in chain {
        builder.add_extra_chain_cert(intermediate).map_err(|e| TlsError::Setup(e.to_string()))?;
    }
    builder.set_private_key(&key).map_err(|e| TlsError::Setup(e.to_string()))?;
    builder.check_private_key().map_err(|e| TlsError::Mismatch(e.to_string()))?;

    let mut settings = TlsSettings::from(builder);
    let offers_h2 = tls.alpn_protocols.is_empty() || tls.alpn_protocols.iter().any(|p| p == "h2");
    let offers_h1 = tls.alpn_protocols.is_empty() || tls.alpn_protocols.iter().any(|p| p == "http/1.1");
    let alpn = match allowed {
        ALPN::H2H1 if offers_h2 && offers_h1 => ALPN::H2H1,
        ALPN::H2H1 if offers_h2 => ALPN::H2,
        ALPN::H2H1 => ALPN::H1,
        other => other,
    };
    settings.set_alpn(alpn);
    Ok(settings)
}

/// Trust anchors for verifying an upstream.
pub fn load_ca(source: &PemSource) -> Result<Box<[X509]>, TlsError> {
    let (pem, origin) = read(source)?;
    let certs = X509::stack_from_pem(&pem)
        .map_err(|e| TlsError::Certificate { origin: origin.clone(), message: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Certificate { origin, message: "no certificate found".into() });
    }
    Ok(certs.into_boxed_slice())
}
