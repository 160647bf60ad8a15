//! TLS material: where certificates and keys come from ([`PemSource`], or
//! a secret an SDS file holds, [`SdsFile`]), a listener's certificate, key
//! and ALPN ([`DownstreamTls`]) and its acceptor, Envoy's `tls_params`
//! ([`TlsParams`]), and upstream trust anchors, loaded at start so that a
//! bad file fails `--mode validate` and start-up, never a request. What
//! SDS files hold is replaced while the listeners run (`rotation.rs`).
//! Certificates are read and chosen per client in `certificate.rs`, peer
//! names matched in `san.rs`.

use pingora_core::listeners::ALPN;
use pingora_core::tls::ssl::{
    select_next_proto, AlpnError, SelectCertError, SslAcceptor, SslContextBuilder, SslMethod, SslOptions, SslRef,
    SslSessionCacheMode, SslVerifyMode, SslVersion,
};
use pingora_core::tls::x509::X509;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

mod certificate;
mod crl;
mod handshake;
mod name;
mod renegotiation;
mod rotation;
mod san;
mod session;
mod upstream;

pub use upstream::{
    verdict, ClientCertificate, Connecting, ServerCertificateChecks, ServerVerdict, UpstreamContext, VerifyFailure,
};

use certificate::{load_certificate, load_certificates, one_per_key_type, ChainCertificates, LoadedCertificate};
pub use crl::{load as load_crls, parse_pem as parse_crls, RevocationLists};
pub use handshake::{chosen_digest, client_cert_element, ClientCertDetails, RecordHandshake};
pub use rotation::Secrets;
use san::san_matches;
pub use san::{SanMatcher, SanPattern, SanType};

/// PEM material: a file to read at start, or the text itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemSource {
    File(PathBuf),
    Inline(String),
}

/// One of `tls_certificates`: a certificate chain (leaf first) and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSource {
    pub certificate_chain: PemSource,
    pub private_key: PemSource,
}

/// A secret an SDS `path_config_source` reads from a file: the file holds
/// one `Secret` resource named `name`. Two references to the same secret
/// are equal wherever the bootstrap writes them.
#[derive(Debug, Clone)]
pub struct SdsFile {
    pub name: String,
    pub path: PathBuf,
    /// `path_config_source.watched_directory`.
    pub watched_directory: Option<PathBuf>,
    /// Where the bootstrap names it, for errors found when it is read.
    pub yaml_path: String,
}

impl PartialEq for SdsFile {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, &self.path, &self.watched_directory) == (&other.name, &other.path, &other.watched_directory)
    }
}

impl Eq for SdsFile {}

impl Hash for SdsFile {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (&self.name, &self.path, &self.watched_directory).hash(state);
    }
}

/// What a secret holds (`static_resources.secrets`, or an SDS file's).
#[derive(Debug, Clone)]
pub enum Secret {
    /// `tls_certificate`.
    Certificate(CertificateSource),
    /// `validation_context`: its `trusted_ca` and revocation lists.
    Validation(ValidationSecret),
}

/// What a `validation_context` secret holds: the CAs and, as Envoy takes
/// them from a secret too, the revocation lists (read again with the CAs
/// when the secret's files change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationSecret {
    pub trusted_ca: PemSource,
    /// `crl`.
    pub crl: Option<PemSource>,
    /// `only_verify_leaf_cert_crl`.
    pub crl_leaf_only: bool,
}

impl Secret {
    /// The files the secret's material is read from.
    pub fn files(&self) -> Vec<&std::path::Path> {
        let sources = match self {
            Secret::Certificate(c) => vec![&c.certificate_chain, &c.private_key],
            Secret::Validation(v) => std::iter::once(&v.trusted_ca).chain(v.crl.as_ref()).collect(),
        };
        sources
            .into_iter()
            .filter_map(|s| match s {
                PemSource::File(p) => Some(p.as_path()),
                PemSource::Inline(_) => None,
            })
            .collect()
    }
}

/// The CAs a client certificate must chain to: fixed, or an SDS file's
/// `validation_context` (replaced when the file changes).
#[derive(Debug, Clone, PartialEq)]
pub enum TrustedCa {
    Pem(PemSource),
    Sds(SdsFile),
}

/// A filter chain's TLS (its `DownstreamTlsContext`): certificates, ALPN
/// protocols and parameters. Each chain has an acceptor of its own; which
/// chain serves a connection is chosen before the handshake
/// (`chain_match.rs`), so a handshake never switches chains by SNI.
#[derive(Debug, Clone)]
pub struct DownstreamTls {
    /// At least one here or in `certificate_secrets`; several of different
    /// key types (RSA and ECDSA), of which each client gets the one its
    /// signature algorithms allow ([`choose`]).
    pub certificates: Vec<CertificateSource>,
    /// `tls_certificate_sds_secret_configs` read from SDS files (static
    /// secrets are in `certificates`); Envoy takes these or
    /// `tls_certificates`, never both.
    pub certificate_secrets: Vec<SdsFile>,
    /// Empty: Envoy's default for a TLS listener without ALPN (HTTP/1.1 and h2 per codec).
    pub alpn_protocols: Vec<String>,
    /// `common_tls_context.tls_params`.
    pub params: TlsParams,
    /// `session_timeout`, the `disable_*_session_resumption` switches and
    /// `session_ticket_keys`.
    pub sessions: SessionResumption,
    /// Client certificates (mTLS), if verified.
    pub client: Option<ClientValidation>,
}

/// `validation_context` of a listener: the CAs a client certificate must
/// chain to, whether a client must send one, the subject alternative
/// names one of which it must carry, and the lists that revoke certificates.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientValidation {
    pub trusted_ca: TrustedCa,
    /// `require_client_certificate`.
    pub require: bool,
    /// `match_typed_subject_alt_names`: empty accepts any name.
    pub subject_alt_names: Vec<SanMatcher>,
    /// `crl` and `only_verify_leaf_cert_crl` (with fixed `trusted_ca` only).
    pub crl: Option<RevocationLists>,
}

/// Counters the handshake feeds (`listener.<addr>.*`), as callbacks so
/// this room needs no stats of its own.
pub struct HandshakeEvents {
    /// A client certificate failed verification (`ssl.fail_verify_error`).
    pub verify_error: Box<dyn Fn() + Send + Sync>,
    /// A client certificate carried no accepted name (`ssl.fail_verify_san`).
    pub verify_san: Box<dyn Fn() + Send + Sync>,
}

/// How a listener lets clients resume TLS sessions. The default resumes
/// both ways, by ticket and from the server's cache, as Envoy does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionResumption {
    /// `session_timeout` in whole seconds (Envoy drops fractions); `None`
    /// keeps the library's two hours (OpenSSL's and BoringSSL's default).
    pub timeout_secs: Option<u32>,
    /// Session tickets: `disable_stateless_session_resumption` turns them off.
    pub tickets: bool,
    /// The server's session cache: `disable_stateful_session_resumption` turns it off.
    pub cache: bool,
    /// `session_ticket_keys.keys`: the first seals tickets, every one opens
    /// them. Empty: BoringSSL's own random key per listener (rotated every
    /// two days, the previous one still opening tickets).
    pub ticket_keys: Vec<SecretSource>,
}

impl Default for SessionResumption {
    fn default() -> Self {
        SessionResumption { timeout_secs: None, tickets: true, cache: true, ticket_keys: Vec::new() }
    }
}

/// Secret bytes: a file to read at start, or the bytes themselves (never
/// printed).
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Inline(Vec<u8>),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::File(p) => f.debug_tuple("File").field(p).finish(),
            SecretSource::Inline(b) => write!(f, "Inline({} bytes)", b.len()),
        }
    }
}

/// The length of an Envoy session ticket key: a 16-byte name, a 32-byte
/// HMAC secret and a 32-byte AES-256 key (`tls/session.rs` uses them).
pub const TICKET_KEY_LEN: usize = 80;

/// Envoy's `TlsParameters.TlsProtocol` (`TLS_AUTO` is the absence of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    V1_0,
    V1_1,
    V1_2,
    V1_3,
}

impl TlsVersion {
    /// Envoy's names, `TLS_AUTO` meaning the side's default.
    pub const NAMES: &'static [(&'static str, Option<TlsVersion>)] = &[
        ("TLS_AUTO", None),
        ("TLSv1_0", Some(TlsVersion::V1_0)),
        ("TLSv1_1", Some(TlsVersion::V1_1)),
        ("TLSv1_2", Some(TlsVersion::V1_2)),
        ("TLSv1_3", Some(TlsVersion::V1_3)),
    ];

    fn ssl(self) -> SslVersion {
        match self {
            TlsVersion::V1_0 => SslVersion::TLS1,
            TlsVersion::V1_1 => SslVersion::TLS1_1,
            TlsVersion::V1_2 => SslVersion::TLS1_2,
            TlsVersion::V1_3 => SslVersion::TLS1_3,
        }
    }

    /// The version OpenSSL reports for a connection (`SSL_get_version`).
    pub fn negotiated(name: &str) -> Option<TlsVersion> {
        match name {
            "TLSv1" => Some(TlsVersion::V1_0),
            "TLSv1.1" => Some(TlsVersion::V1_1),
            "TLSv1.2" => Some(TlsVersion::V1_2),
            "TLSv1.3" => Some(TlsVersion::V1_3),
            _ => None,
        }
    }
}

/// `tls_params` of a listener: what the handshake may negotiate. `None`
/// keeps the default (TLS 1.2 to 1.3, Mozilla's intermediate ciphers, BoringSSL's groups).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsParams {
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
    /// BoringSSL cipher list (TLS 1.0–1.2 only, as in Envoy).
    pub cipher_list: Option<String>,
    /// BoringSSL curves list (`ecdh_curves`).
    pub groups: Option<String>,
}

/// Whether BoringSSL knows this cipher, or equal-preference group of
/// ciphers (`[A|B]`), for TLS 1.0–1.2: every name must be one it has.
pub fn known_cipher(name: &str) -> bool {
    SslContextBuilder::new(SslMethod::tls()).is_ok_and(|mut b| b.set_strict_cipher_list(name).is_ok())
}

/// Whether BoringSSL knows this one ECDH curve (group).
pub fn known_group(name: &str) -> bool {
    !name.contains(':') && SslContextBuilder::new(SslMethod::tls()).is_ok_and(|mut b| b.set_curves_list(name).is_ok())
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{yaml_path}: secret {name:?} was not loaded")]
    SecretMissing { yaml_path: String, name: String },
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
    #[error("session ticket key {origin} has {len} bytes; a key must have exactly 80")]
    TicketKey { origin: String, len: usize },
}

fn read(source: &PemSource) -> Result<(Vec<u8>, String), TlsError> {
    match source {
        PemSource::File(p) => std::fs::read(p)
            .map(|b| (b, p.display().to_string()))
            .map_err(|e| TlsError::Read { path: p.display().to_string(), source: e }),
        PemSource::Inline(s) => Ok((s.as_bytes().to_vec(), "inline_string".to_string())),
    }
}

/// Builds the listener's TLS acceptor. `allowed` is what the listener's
/// codec serves: h2 and HTTP/1.1 (h2 preferred; the listener's
/// `alpn_protocols` may narrow the offer), or one of them; `None` (TCP
/// proxies only) offers `alpn_protocols` as they are. `events` are
/// called for a client certificate that fails verification (the
/// handshake fails). `secrets` holds the
/// current material of the SDS files the listener names (loaded by the
/// caller, see [`Secrets`]).
pub fn downstream_acceptor(
    tls: &DownstreamTls,
    allowed: Option<ALPN>,
    events: HandshakeEvents,
    secrets: &Secrets,
) -> Result<SslAcceptor, TlsError> {
    let HandshakeEvents { verify_error, verify_san } = events;
    let fixed = load_certificates(&tls.certificates)?;
    let live = tls.certificate_secrets.iter().map(|f| secrets.certificate(f)).collect::<Result<Vec<_>, _>>()?;
    let current: Vec<_> = live.iter().map(|l| l.load_full()).collect();
    one_per_key_type(fixed.iter().chain(current.iter().map(|c| c.as_ref())))?;
    let mut certificates = ChainCertificates { fixed, live };
    // Client CAs from an SDS file are installed per connection too.
    let live_ca = match tls.client.as_ref().map(|c| &c.trusted_ca) {
        Some(TrustedCa::Sds(file)) => Some(secrets.authority(file)?),
        _ => None,
    };
    let mut builder =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).map_err(|e| TlsError::Setup(e.to_string()))?;
    let only = certificates.live.is_empty() && certificates.fixed.len() == 1;
    // What a resumed session's client certificate was verified against:
    // the certificates served (those from SDS files aside: a renewed
    // certificate keeps its sessions) and the client validation. The
    // session id context is its digest, as Envoy's: a session from a
    // listener that trusted other CAs or names, or from before a CA was
    // removed, does not resume here even under a shared ticket key.
    let (static_cas, bundled) = match tls.client.as_ref().map(|c| &c.trusted_ca) {
        Some(TrustedCa::Pem(source)) => load_ca_bundle(source).map(|(cas, lists)| (cas.into_vec(), lists))?,
        _ => (Vec::new(), Vec::new()),
    };
    // `crl`'s lists and those bundled in `trusted_ca`, as Envoy checks.
    let client_crl = tls.client.as_ref().and_then(|c| RevocationLists::with_bundled(c.crl.clone(), bundled));
    let context = {
        let mut digest = boring::sha::Sha256::new();
        for c in &certificates.fixed {
            digest.update(&c.leaf.to_der().map_err(|e| TlsError::Setup(e.to_string()))?);
        }
        for ca in &static_cas {
            digest.update(&ca.to_der().map_err(|e| TlsError::Setup(e.to_string()))?);
        }
        if let Some(client) = &tls.client {
            digest.update(format!("{:?}", client.subject_alt_names).as_bytes());
            // A session verified before a list revoked its client does
            // not resume under the list (a ticket key shared across a restart).
            if let Some(crl) = &client_crl {
                digest.update(&[u8::from(crl.leaf_only)]);
                crl.der.iter().for_each(|der| digest.update(der));
            }
        }
        digest.finish()
    };
    // The common case, one certificate read at start: set once on the
    // context, nothing per connection.
    let per_connection = if only {
        let Some(c) = certificates.fixed.pop() else {
            return Err(TlsError::Setup("no certificate".into()));
        };
        builder.set_certificate(&c.leaf).map_err(|e| TlsError::Setup(e.to_string()))?;
        for intermediate in c.intermediates {
            builder.add_extra_chain_cert(intermediate).map_err(|e| TlsError::Setup(e.to_string()))?;
        }
        builder.set_private_key(&c.key).map_err(|e| TlsError::Setup(e.to_string()))?;
        builder.check_private_key().map_err(|e| TlsError::Mismatch(e.to_string()))?;
        None
    } else {
        Some(certificates)
    };
    if per_connection.is_some() || live_ca.is_some() {
        // Once the ClientHello is read, before the session lookup and the
        // choice of certificate: the chain's certificates are offered per
        // connection, and material from SDS files is read here, as it is
        // at that moment: a rotation needs no new context, so the session
        // cache and ticket keys stay. The session id context then covers
        // the file's current client CAs too.
        builder.set_select_certificate_callback(move |mut hello| {
            let installed = match &per_connection {
                Some(certs) => certs.install(&mut hello),
                // `only`: the context has the one certificate.
                None => Ok(()),
            };
            let ssl = hello.ssl_mut();
            let trusted = match &live_ca {
                Some(ca) => {
                    let mut id = boring::sha::Sha256::new();
                    id.update(&context);
                    id.update(&ca.load().id);
                    session::set_session_id_context(ssl, &id.finish())
                        .and_then(|()| rotation::verify_store(ca))
                        .and_then(|store| ssl.set_verify_cert_store(store))
                }
                None => Ok(()),
            };
            installed.and(trusted).map_err(|_| SelectCertError::ERROR)
        });
    }
    if let Some(client) = &tls.client {
        for ca in &static_cas {
            builder.cert_store_mut().add_cert(ca.clone()).map_err(|e| TlsError::Setup(e.to_string()))?;
        }
        crl::trust_intermediates(builder.cert_store_mut()).map_err(|e| TlsError::Setup(e.to_string()))?;
        if let Some(lists) = &client_crl {
            // A revoked certificate, or (checking the whole chain) one whose
            // issuer has no list, fails in the verify callback below.
            crl::install(builder.cert_store_mut(), lists).map_err(|e| TlsError::Setup(format!("crl: {e}")))?;
        }
        // Asked for, verified when sent. A client that sends none is turned
        // away after the handshake when one is required (counted there as
        // `ssl.fail_verify_no_cert`), as OpenSSL's own refusal could not be
        // told apart from other failed handshakes.
        // Resumed sessions keep the verified client; OpenSSL refuses to
        // resume without a context to tie them to (see `context` above).
        builder.set_session_id_context(&context).map_err(|e| TlsError::Setup(e.to_string()))?;
        let names = client.subject_alt_names.clone();
        builder.set_verify_callback(SslVerifyMode::PEER, move |ok, chain| {
            if !ok {
                verify_error();
                return false;
            }
            // The client's own certificate (depth 0), once its chain holds.
            if chain.error_depth() != 0 || names.is_empty() {
                return true;
            }
            let accepted = chain.current_cert().is_some_and(|c| san_matches(c, &names));
            if !accepted {
                verify_san();
            }
            accepted
        });
    }
    let params = &tls.params;
    if let Some(v) = params.min_version {
        builder.set_min_proto_version(Some(v.ssl())).map_err(|e| TlsError::Setup(e.to_string()))?;
    }
    if let Some(v) = params.max_version {
        builder.set_max_proto_version(Some(v.ssl())).map_err(|e| TlsError::Setup(e.to_string()))?;
    }
    if let Some(list) = &params.cipher_list {
        builder.set_strict_cipher_list(list).map_err(|e| TlsError::Setup(format!("cipher_suites: {e}")))?;
    }
    if let Some(list) = &params.groups {
        builder.set_curves_list(list).map_err(|e| TlsError::Setup(format!("ecdh_curves: {e}")))?;
    }
    resumption(&mut builder, &tls.sessions)?;

    let offers_h2 = tls.alpn_protocols.is_empty() || tls.alpn_protocols.iter().any(|p| p == "h2");
    let offers_h1 = tls.alpn_protocols.is_empty() || tls.alpn_protocols.iter().any(|p| p == "http/1.1");
    // Wire format, in our order of preference.
    let ours: std::borrow::Cow<'static, [u8]> = match allowed {
        Some(ALPN::H2) => H2.into(),
        Some(ALPN::H2H1) if offers_h2 && offers_h1 => H2_H1.into(),
        Some(ALPN::H2H1) if offers_h2 => H2.into(),
        Some(_) => H1.into(),
        None if tls.alpn_protocols.is_empty() => return Ok(builder.build()),
        None => alpn_wire(&tls.alpn_protocols).into(),
    };
    // Our first protocol the client offers; none in common: no ALPN in the
    // answer, and the client decides whether to go on (RFC 7301 allows both).
    builder.set_alpn_select_callback(move |_, offered| match &ours {
        std::borrow::Cow::Borrowed(ours) => select_next_proto(ours, offered).ok_or(AlpnError::NOACK),
        std::borrow::Cow::Owned(ours) => select_offered(ours, offered).ok_or(AlpnError::NOACK),
    });
    Ok(builder.build())
}

/// Our first protocol (both lists in wire format) the client offers, as
/// a slice of the client's list (what OpenSSL's callback must return when
/// ours is not `'static`).
fn select_offered<'a>(ours: &[u8], offered: &'a [u8]) -> Option<&'a [u8]> {
    alpn_names(ours).find_map(|ours| alpn_names(offered).find(|theirs| *theirs == ours))
}

/// The protocol names of an ALPN list in wire format.
fn alpn_names(mut wire: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (&len, rest) = wire.split_first()?;
        let (name, rest) = rest.split_at_checked(usize::from(len))?;
        wire = rest;
        Some(name)
    })
}

/// ALPN protocol names in their wire format (each after its length);
/// names longer than a length byte allows are left out (validation
/// refuses them).
fn alpn_wire(protocols: &[String]) -> Vec<u8> {
    let mut wire = Vec::new();
    for p in protocols {
        if let Ok(len) = u8::try_from(p.len()) {
            wire.push(len);
            wire.extend_from_slice(p.as_bytes());
        }
    }
    wire
}

/// Applies a listener's session resumption settings. The acceptor is
/// shared by every worker, so a ticket or cached session from one worker
/// resumes on any other.
fn resumption(builder: &mut SslContextBuilder, s: &SessionResumption) -> Result<(), TlsError> {
    if !s.tickets {
        // BoringSSL, as Envoy on it: TLS 1.2 still resumes from the cache,
        // TLS 1.3 (which resumes by ticket only) does not resume at all.
        builder.set_options(SslOptions::NO_TICKET);
    }
    if !s.cache {
        builder.set_session_cache_mode(SslSessionCacheMode::OFF);
    }
    if let Some(secs) = s.timeout_secs {
        session::set_timeout(builder, secs);
    }
    let mut keys = Vec::with_capacity(s.ticket_keys.len());
    for source in &s.ticket_keys {
        let (key, origin) = match source {
            SecretSource::File(p) => std::fs::read(p)
                .map(|b| (b, p.display().to_string()))
                .map_err(|e| TlsError::Read { path: p.display().to_string(), source: e })?,
            SecretSource::Inline(b) => (b.clone(), "inline".to_string()),
        };
        let key: [u8; TICKET_KEY_LEN] =
            key.as_slice().try_into().map_err(|_| TlsError::TicketKey { origin, len: key.len() })?;
        keys.push(key);
    }
    if !keys.is_empty() {
        session::set_ticket_keys(builder, &keys);
    }
    Ok(())
}

/// Whether a client that had to send a certificate did not (mTLS with
/// `require_client_certificate`): the connection is to be closed.
pub fn missing_client_certificate(tls: &DownstreamTls, ssl: &SslRef) -> bool {
    tls.client.as_ref().is_some_and(|c| c.require) && ssl.peer_certificate().is_none()
}

const H1: &[u8] = b"\x08http/1.1";
const H2: &[u8] = b"\x02h2";
const H2_H1: &[u8] = b"\x02h2\x08http/1.1";

/// A `trusted_ca` file's certificates, and the revocation lists (`X509
/// CRL` blocks, as DER) bundled with them.
pub type CaBundle = (Box<[X509]>, Vec<Vec<u8>>);

/// Reads a `trusted_ca` file: its CAs, and its lists, which Envoy checks
/// revocation with too (see [`RevocationLists::with_bundled`]).
pub fn load_ca_bundle(source: &PemSource) -> Result<CaBundle, TlsError> {
    let (pem, origin) = read(source)?;
    let lists = crl::bundled(&pem)
        .map_err(|why| TlsError::Certificate { origin: origin.clone(), message: format!("revocation list: {why}") })?;
    let certs = X509::stack_from_pem(&pem)
        .map_err(|e| TlsError::Certificate { origin: origin.clone(), message: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Certificate { origin, message: "no certificate found".into() });
    }
    Ok((certs.into_boxed_slice(), lists))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_of_tcp_proxies_is_our_first_protocol_the_client_offers() {
        let ours = alpn_wire(&["http/1.1".to_string(), "h2".to_string()]);
        assert_eq!(ours, b"\x08http/1.1\x02h2");
        assert_eq!(select_offered(&ours, b"\x02h2\x08http/1.1"), Some(&b"http/1.1"[..]));
        assert_eq!(select_offered(&ours, b"\x02h2"), Some(&b"h2"[..]));
        assert_eq!(select_offered(&ours, b"\x06spdy/1"), None);
        // A malformed offer (a length past the end) matches nothing.
        assert_eq!(select_offered(&ours, b"\x09http/1.1"), None);
    }
}
