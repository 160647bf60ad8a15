//! Secrets from SDS files while the proxy runs: each holds its current
//! certificate (or CAs and revocation lists) behind an `ArcSwap`, which a
//! listener's handshake reads once per connection, a cluster once per
//! request (`upstream.rs`), and [`Secrets::replace`] swaps when the file
//! changes. Connections already open keep what they were handshaken with;
//! the acceptor, its session cache and its ticket keys are never rebuilt.

use super::crl::{self, RevocationLists};
use super::{load_ca_bundle, load_certificate, LoadedCertificate, SdsFile, Secret, TlsError, ValidationSecret};
use arc_swap::ArcSwap;
use boring::sha::sha256;
use pingora_core::tls::error::ErrorStack;
use pingora_core::tls::x509::store::X509Store;
use pingora_core::tls::x509::X509;
use std::collections::HashMap;
use std::sync::Arc;

/// One SDS certificate, as the handshake reads it.
pub(super) type LiveCertificate = Arc<ArcSwap<LoadedCertificate>>;
/// One SDS validation context's CAs and lists, as the handshake reads them.
pub(super) type LiveAuthority = Arc<ArcSwap<Authority>>;

/// CAs and revocation lists, and a digest of them that names the
/// sessions verified under them: a session from before they changed does
/// not resume (its client would not be verified against the new ones), as
/// in Envoy, whose session id context hashes the validation context.
pub(super) struct Authority {
    pub(super) cas: Box<[X509]>,
    pub(super) crl: Option<RevocationLists>,
    pub(super) id: [u8; 32],
}

impl Authority {
    fn load(secret: &ValidationSecret) -> Result<Self, TlsError> {
        let (cas, bundled) = load_ca_bundle(&secret.trusted_ca)?;
        let crl = match &secret.crl {
            Some(c) => Some(crl::load(c, secret.crl_leaf_only)?),
            None => Some(RevocationLists { der: Vec::new(), leaf_only: secret.crl_leaf_only }),
        };
        // The lists bundled in `trusted_ca` count too, as in Envoy.
        let crl = RevocationLists::with_bundled(crl, bundled);
        // A list that does not install (signed by nothing here is fine:
        // OpenSSL then fails the chain) is refused now, not per connection.
        crl::store(&cas, crl.as_ref(), false).map_err(|e| TlsError::Setup(format!("crl: {e}")))?;
        let mut der = Vec::new();
        for ca in cas.iter() {
            der.extend(ca.to_der().map_err(|e| TlsError::Setup(e.to_string()))?);
        }
        if let Some(lists) = &crl {
            der.push(u8::from(lists.leaf_only));
            lists.der.iter().for_each(|l| der.extend_from_slice(l));
        }
        Ok(Authority { id: sha256(&der), cas, crl })
    }
}

/// Every SDS secret the listeners name, each with what it holds now.
/// A secret named in several places is loaded and replaced once.
#[derive(Default)]
pub struct Secrets {
    certificates: HashMap<SdsFile, LiveCertificate>,
    authorities: HashMap<SdsFile, LiveAuthority>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("certificates", &self.certificates.keys().map(|k| &k.name).collect::<Vec<_>>())
            .field("authorities", &self.authorities.keys().map(|k| &k.name).collect::<Vec<_>>())
            .finish()
    }
}

/// What a secret's material is loaded as: a certificate or CAs.
enum Loaded {
    Certificate(LoadedCertificate),
    Authority(Authority),
}

fn load(secret: &Secret) -> Result<Loaded, TlsError> {
    match secret {
        Secret::Certificate(c) => load_certificate(c).map(Loaded::Certificate),
        Secret::Validation(v) => Authority::load(v).map(Loaded::Authority),
    }
}

impl Secrets {
    /// Loads `secret`, the first material `file` held; a secret already
    /// loaded is left as it is.
    pub fn insert(&mut self, file: &SdsFile, secret: &Secret) -> Result<(), TlsError> {
        if self.certificates.contains_key(file) || self.authorities.contains_key(file) {
            return Ok(());
        }
        match load(secret)? {
            Loaded::Certificate(c) => {
                self.certificates.insert(file.clone(), Arc::new(ArcSwap::from_pointee(c)));
            }
            Loaded::Authority(cas) => {
                self.authorities.insert(file.clone(), Arc::new(ArcSwap::from_pointee(cas)));
            }
        }
        Ok(())
    }

    /// Replaces what `file` holds with `secret`, read from it again. On
    /// an error (unreadable files, a key that does not match, a secret of
    /// the other kind) the previous material stays in use.
    pub fn replace(&self, file: &SdsFile, secret: &Secret) -> Result<(), TlsError> {
        match (load(secret)?, self.certificates.get(file), self.authorities.get(file)) {
            (Loaded::Certificate(c), Some(live), _) => live.store(Arc::new(c)),
            (Loaded::Authority(cas), _, Some(live)) => live.store(Arc::new(cas)),
            (Loaded::Certificate(_), None, _) => {
                return Err(TlsError::Setup(format!(
                    "secret {:?} now holds a tls_certificate where a validation_context is used",
                    file.name
                )))
            }
            (Loaded::Authority(_), _, None) => {
                return Err(TlsError::Setup(format!(
                    "secret {:?} now holds a validation_context where a tls_certificate is used",
                    file.name
                )))
            }
        }
        Ok(())
    }

    /// Every secret loaded, for whoever watches their files.
    pub fn files(&self) -> impl Iterator<Item = &SdsFile> {
        self.certificates.keys().chain(self.authorities.keys())
    }

    pub(super) fn certificate(&self, file: &SdsFile) -> Result<LiveCertificate, TlsError> {
        self.certificates.get(file).cloned().ok_or_else(|| missing(file))
    }

    pub(super) fn authority(&self, file: &SdsFile) -> Result<LiveAuthority, TlsError> {
        self.authorities.get(file).cloned().ok_or_else(|| missing(file))
    }
}

fn missing(file: &SdsFile) -> TlsError {
    TlsError::SecretMissing { yaml_path: file.yaml_path.clone(), name: file.name.clone() }
}

/// A verification store with the CAs and lists `live` holds now, for one
/// connection (OpenSSL takes the store over; a store cannot be shared
/// through rust-openssl, and building one is a few reference counts).
pub(super) fn verify_store(live: &LiveAuthority) -> Result<X509Store, ErrorStack> {
    let now = live.load();
    crl::store(&now.cas, now.crl.as_ref(), false)
}
