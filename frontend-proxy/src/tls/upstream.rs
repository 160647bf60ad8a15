//! The client side of upstream TLS: the certificate a cluster presents
//! (mTLS) and the checks an upstream's certificate must pass (its chain to
//! `trusted_ca`, with `crl`'s lists, `match_typed_subject_alt_names`,
//! `verify_certificate_hash`, `verify_certificate_spki`), each fixed or
//! from an SDS secret that is replaced while the proxy runs.
//!
//! Pingora's connector verifies the chain during the handshake only when
//! the peer has an SNI, without revocation lists or intermediate anchors,
//! and cannot match names other than the SNI or pin hashes. So every
//! handshake runs the hook of [`Connecting`], which judges the finished handshake and leaves its
//! [`ServerVerdict`] in the connection's TLS digest; the request paths read
//! it before writing a request byte ([`verdict`]). The hook also turns
//! renegotiation off (`renegotiation.rs`) unless `allow_renegotiation` says.
//! Pingora's own check is kept as a first gate where it is no stricter
//! than the hook's (`Connecting::gate_cas`): it runs before our client
//! certificate is sent, as Envoy's verification does, so an upstream whose
//! chain does not verify never receives it. Without an SNI, or with an
//! intermediate CA in `trusted_ca`, only the hook judges, after the
//! handshake (the client certificate has been sent by then).
//!
//! Rotation: [`UpstreamContext::connecting`] is called for every peer
//! built (each request, each health check). It compares the secrets'
//! current material with what its [`Connecting`] was built from (pointer
//! equality) and rebuilds it only when a secret changed: new connections
//! then present the new certificate and trust the new CAs; connections
//! already open carry on, pooled ones included, as in Envoy (except that
//! Pingora's pool key holds the client certificate: on its paths an idle
//! connection made with an older certificate is left to close).

use super::rotation::{Authority, LiveAuthority, LiveCertificate};
use super::{
    crl, load_ca_bundle, load_certificate, renegotiation, san_matches, CertificateSource, LoadedCertificate,
    RevocationLists, SanMatcher, SdsFile, Secrets, TlsError, TrustedCa,
};
use arc_swap::ArcSwap;
use pingora_core::protocols::tls::{HandshakeCompleteHook, SslDigest};
use pingora_core::tls::hash::MessageDigest;
use pingora_core::tls::ssl::SslRef;
use pingora_core::tls::x509::store::X509Store;
use pingora_core::tls::x509::{X509Ref, X509};
use pingora_core::utils::tls::CertKey;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

/// The verdict the handshake hook left in a connection's digest; `None`
/// when there was none (the caller refuses such a connection when the
/// cluster verifies upstreams).
pub fn verdict(digest: &SslDigest) -> Option<&ServerVerdict> {
    digest.extension.get::<ServerVerdict>()
}

/// A cluster's client certificate: fixed, or a secret of an SDS file.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientCertificate {
    Pem(CertificateSource),
    Sds(SdsFile),
}

/// What one cluster's new connections are made with, as of now.
pub struct Connecting {
    /// Presented to the upstream.
    pub client_cert: Option<Arc<CertKey>>,
    /// Refuses renegotiation unless allowed and, with trusted CAs, judges the upstream's certificate.
    pub hook: HandshakeCompleteHook,
    /// The trusted CAs for Pingora's own check during the handshake, when
    /// that check is no stricter than the hook's: every CA a self-signed
    /// root (Pingora's store has no `X509_V_FLAG_PARTIAL_CHAIN`, so an
    /// intermediate anchor would refuse chains Envoy accepts). It runs
    /// before our client certificate is sent, so an upstream whose chain
    /// does not verify never receives it; `None`: only the hook judges.
    pub gate_cas: Option<Arc<Box<[X509]>>>,
    cert_from: Option<Arc<LoadedCertificate>>,
    ca_from: Option<Arc<Authority>>,
}

/// A cluster's TLS client side: fixed material, loaded at start, and the
/// secrets it follows.
pub struct UpstreamContext {
    fixed_cert: Option<Arc<CertKey>>,
    live_cert: Option<LiveCertificate>,
    fixed_cas: Option<Box<[X509]>>,
    live_ca: Option<LiveAuthority>,
    checks: Arc<ServerCertificateChecks>,
    /// `allow_renegotiation`.
    allow_renegotiation: bool,
    current: ArcSwap<Connecting>,
    /// The cluster's name, for the log.
    cluster: String,
    /// The secrets' material a rebuild last failed with (kept, so that
    /// it is not retried for every peer until a secret changes again).
    failed: Mutex<Option<Material>>,
    /// Rebuilds that failed (the previous material stayed in use).
    rebuild_failures: AtomicU64,
}

/// What a [`Connecting`] is built from: the secrets' current values.
type Material = (Option<Arc<LoadedCertificate>>, Option<Arc<Authority>>);

impl UpstreamContext {
    /// Loads the fixed material and looks the secrets up in `secrets`
    /// (loaded by the caller, see [`Secrets`]). `trusted_ca`: `None`
    /// accepts any certificate, as Envoy without a validation context.
    pub fn new(
        cluster: &str,
        trusted_ca: Option<&TrustedCa>,
        client: Option<&ClientCertificate>,
        mut checks: ServerCertificateChecks,
        allow_renegotiation: bool,
        secrets: &Secrets,
    ) -> Result<Self, TlsError> {
        let (fixed_cert, live_cert) = match client {
            Some(ClientCertificate::Pem(source)) => (Some(cert_key(&load_certificate(source)?)), None),
            Some(ClientCertificate::Sds(file)) => (None, Some(secrets.certificate(file)?)),
            None => (None, None),
        };
        let (fixed_cas, live_ca) = match trusted_ca {
            Some(TrustedCa::Pem(source)) => {
                // Lists bundled in `trusted_ca` are checked too, as in Envoy.
                let (cas, bundled) = load_ca_bundle(source)?;
                checks.crl = RevocationLists::with_bundled(checks.crl.take(), bundled);
                (Some(cas), None)
            }
            Some(TrustedCa::Sds(file)) => (None, Some(secrets.authority(file)?)),
            None => (None, None),
        };
        let cert = live_cert.as_ref().map(|l| l.load_full());
        let ca = live_ca.as_ref().map(|l| l.load_full());
        let mut context = UpstreamContext {
            fixed_cert,
            live_cert,
            fixed_cas,
            live_ca,
            checks: Arc::new(checks),
            allow_renegotiation,
            current: ArcSwap::from_pointee(Connecting {
                client_cert: None,
                hook: Arc::new(|_: &SslRef| None),
                gate_cas: None,
                cert_from: None,
                ca_from: None,
            }),
            cluster: cluster.to_string(),
            failed: Mutex::new(None),
            rebuild_failures: AtomicU64::new(0),
        };
        let first = context.build(cert, ca)?;
        context.current = ArcSwap::from_pointee(first);
        Ok(context)
    }

    /// What a new connection is made with now: the material built last,
    /// unless a secret changed since (a rare rebuild; otherwise a few
    /// atomic loads). A rebuild that fails keeps the previous material;
    /// it is logged and counted once, and not tried again for the same
    /// secrets (every peer would otherwise retry it).
    pub fn connecting(&self) -> Arc<Connecting> {
        let now = self.current.load_full();
        let cert = self.live_cert.as_ref().map(|l| l.load_full());
        let ca = self.live_ca.as_ref().map(|l| l.load_full());
        if same(&now.cert_from, &cert) && same(&now.ca_from, &ca) {
            return now;
        }
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if failed.as_ref().is_some_and(|(c, a)| same(c, &cert) && same(a, &ca)) {
            return now;
        }
        match self.build(cert.clone(), ca.clone()) {
            Ok(next) => {
                *failed = None;
                let next = Arc::new(next);
                self.current.store(next.clone());
                next
            }
            Err(e) => {
                tracing::warn!(
                    cluster = %self.cluster,
                    error = %e,
                    "upstream TLS: the cluster's new SDS material could not be set up; connections keep the previous"
                );
                self.rebuild_failures.fetch_add(1, Ordering::Relaxed);
                *failed = Some((cert, ca));
                now
            }
        }
    }

    /// How many rebuilds from changed secrets failed (see [`Self::connecting`]).
    pub fn rebuild_failures(&self) -> u64 {
        self.rebuild_failures.load(Ordering::Relaxed)
    }

    fn build(&self, cert: Option<Arc<LoadedCertificate>>, ca: Option<Arc<Authority>>) -> Result<Connecting, TlsError> {
        let client_cert = match &cert {
            Some(c) => Some(cert_key(c)),
            None => self.fixed_cert.clone(),
        };
        let cas: Option<&[X509]> = ca.as_deref().map(|a| &*a.cas).or(self.fixed_cas.as_deref());
        // Lists from the secret, or from the bootstrap with fixed CAs.
        let lists = ca.as_deref().and_then(|a| a.crl.as_ref()).or(self.checks.crl.as_ref());
        let gate_cas = cas.filter(|cas| cas.iter().all(self_signed)).map(|cas| Arc::new(Box::from(cas)));
        let verifier = match cas {
            Some(cas) => {
                Some(crl::store(cas, lists, true).map_err(|e| TlsError::Setup(format!("trusted_ca/crl: {e}")))?)
            }
            None => None,
        };
        let (checks, allow_renegotiation) = (self.checks.clone(), self.allow_renegotiation);
        let hook: HandshakeCompleteHook = Arc::new(move |ssl: &SslRef| {
            renegotiation::set(ssl, allow_renegotiation);
            // Without a validation context Envoy accepts any certificate.
            let verifier = verifier.as_ref()?;
            let verdict: Arc<dyn std::any::Any + Send + Sync> = Arc::new(ServerVerdict(judge(ssl, &checks, verifier)));
            Some(verdict)
        });
        Ok(Connecting { client_cert, hook, gate_cas, cert_from: cert, ca_from: ca })
    }
}

fn same<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// A root: issued by itself, as OpenSSL decides when it looks for the
/// end of a chain (names, key identifiers), its own signature checked too.
fn self_signed(ca: &X509) -> bool {
    ca.issued(ca).is_ok() && ca.public_key().and_then(|k| ca.verify(&k)).unwrap_or(false)
}

fn judge(ssl: &SslRef, checks: &ServerCertificateChecks, verifier: &X509Store) -> Result<(), VerifyFailure> {
    let Some(cert) = ssl.peer_certificate() else {
        return Err(VerifyFailure::Chain("the upstream sent no certificate".into()));
    };
    if let Some(why) = super::crl::chain_failure(verifier, ssl) {
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
        .is_ok_and(|der| checks.spki_hashes.contains(&boring::sha::sha256(&der)));
    by_cert || by_key
}

/// A certificate in the form Pingora's connector presents.
fn cert_key(c: &LoadedCertificate) -> Arc<CertKey> {
    let mut chain = vec![c.leaf.clone()];
    chain.extend(c.intermediates.iter().cloned());
    Arc::new(CertKey::new(chain, c.key.clone()))
}

#[cfg(test)]
mod tests {
    use super::super::san::dns_name_matches;
    use super::super::{PemSource, Secret};
    use super::*;

    fn certificate(name: &str) -> Secret {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        Secret::Certificate(CertificateSource {
            certificate_chain: PemSource::Inline(c.cert.pem()),
            private_key: PemSource::Inline(c.signing_key.serialize_pem()),
        })
    }

    #[test]
    fn a_cluster_rebuilds_what_it_connects_with_only_when_a_secret_changed() {
        let file = SdsFile {
            name: "client".into(),
            path: "/sds.yaml".into(),
            watched_directory: None,
            yaml_path: String::new(),
        };
        let mut secrets = Secrets::default();
        secrets.insert(&file, &certificate("one.test")).unwrap();
        let client = ClientCertificate::Sds(file.clone());
        let context =
            UpstreamContext::new("c", None, Some(&client), ServerCertificateChecks::default(), false, &secrets)
                .unwrap();
        let first = context.connecting();
        assert!(Arc::ptr_eq(&first, &context.connecting()), "nothing changed: the same material, not a rebuild");
        let name = |c: &Connecting| {
            let cert = c.client_cert.as_ref().unwrap().leaf().subject_alt_names().unwrap();
            cert.iter().find_map(|n| n.dnsname().map(str::to_string)).unwrap()
        };
        assert_eq!(name(&first), "one.test");
        secrets.replace(&file, &certificate("two.test")).unwrap();
        let second = context.connecting();
        assert_eq!(name(&second), "two.test", "the rotated certificate is presented");
        assert!(Arc::ptr_eq(&second, &context.connecting()), "and built once");
    }

    #[test]
    fn a_rebuild_that_fails_is_counted_once_and_the_previous_material_stays() {
        let file =
            SdsFile { name: "cas".into(), path: "/sds.yaml".into(), watched_directory: None, yaml_path: String::new() };
        let root = rcgen::generate_simple_self_signed(vec!["ca.test".to_string()]).unwrap();
        let secret = Secret::Validation(super::super::ValidationSecret {
            trusted_ca: PemSource::Inline(root.cert.pem()),
            crl: None,
            crl_leaf_only: false,
        });
        let mut secrets = Secrets::default();
        secrets.insert(&file, &secret).unwrap();
        let ca = TrustedCa::Sds(file.clone());
        let context =
            UpstreamContext::new("c", Some(&ca), None, ServerCertificateChecks::default(), false, &secrets).unwrap();
        let first = context.connecting();
        // Material that loading would have refused (a list that does not
        // parse), as a way to make the rebuild fail.
        let live = secrets.authority(&file).unwrap();
        let cas = live.load().cas.clone();
        let bad = RevocationLists { der: vec![vec![1, 2, 3]], leaf_only: false };
        live.store(Arc::new(Authority { cas, crl: Some(bad), id: [0; 32] }));
        for _ in 0..3 {
            assert!(Arc::ptr_eq(&first, &context.connecting()), "the previous material stays");
        }
        assert_eq!(context.rebuild_failures(), 1, "counted (and tried) once for the same secrets");
    }

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
