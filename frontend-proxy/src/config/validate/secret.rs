//! Secrets: `static_resources.secrets`, the `SdsSecretConfig`s of a TLS
//! context that name one (static, or in an SDS file), and the files an
//! SDS `path_config_source` reads. A file is read when the bootstrap is
//! validated, so a missing or wrong one is an error with its YAML path;
//! Envoy would wait for it (listener warming), but a file that is not
//! there at start is a mistake, not a control plane that is late.

use super::{Ctx, P};
use crate::config::raw::{self, Field, List};
use crate::config::Diagnostic;
use crate::tls::{CertificateSource, PemSource, SdsFile, Secret, ValidationSecret};
use std::collections::HashMap;
use std::path::PathBuf;

const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// What a TLS context's `SdsSecretConfig` names.
pub(super) enum SecretRef {
    /// One of `static_resources.secrets`, resolved.
    Static(Secret),
    /// A secret in an SDS file, replaced when the file changes.
    File(SdsFile),
}

/// The kind of secret a field of a TLS context takes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Certificate,
    Validation,
}

impl Kind {
    fn field(self) -> &'static str {
        match self {
            Kind::Certificate => "tls_certificate",
            Kind::Validation => "validation_context",
        }
    }

    fn of(secret: &Secret) -> Kind {
        match secret {
            Secret::Certificate(_) => Kind::Certificate,
            Secret::Validation(_) => Kind::Validation,
        }
    }
}

/// `static_resources.secrets`, by name (`None`: defined but invalid, its
/// errors reported here).
pub(super) fn static_secrets(cx: &mut Ctx, p: &P, f: &Option<List<raw::Secret>>) -> HashMap<String, Option<Secret>> {
    let mut out = HashMap::new();
    for (sp, s) in cx.list(p, "secrets", f) {
        let (name, secret) = secret(cx, &sp, s);
        match name {
            Some(n) if n.is_empty() => cx.error(&sp.key("name"), "required: a static secret is found by its name"),
            Some(n) => {
                if out.insert(n.clone(), secret).is_some() {
                    cx.error(&sp.key("name"), format!("duplicate secret name {n:?}"));
                }
            }
            None => cx.error(&sp.key("name"), "required: a static secret is found by its name"),
        }
    }
    out
}

/// One `Secret`: its name and what it holds.
fn secret(cx: &mut Ctx, p: &P, s: &raw::Secret) -> (Option<String>, Option<Secret>) {
    cx.other(p, s, &[]);
    if cx.opt(p, "@type", &s.type_url).is_some_and(|t| t != SECRET_TYPE) {
        cx.error(&p.key("@type"), format!("expected {SECRET_TYPE}"));
    }
    let name = cx.string(p, "name", &s.name);
    for (field, set) in
        [("session_ticket_keys", s.session_ticket_keys.is_some()), ("generic_secret", s.generic_secret.is_some())]
    {
        if set {
            cx.error(&p.key(field), "not supported: a secret holds a tls_certificate or a validation_context here");
        }
    }
    let cert = cx.opt(p, "tls_certificate", &s.tls_certificate);
    let validation = cx.opt(p, "validation_context", &s.validation_context);
    let out = match (cert, validation) {
        (Some(c), None) => certificate(cx, &p.key("tls_certificate"), c).map(Secret::Certificate),
        (None, Some(v)) => validation_context(cx, &p.key("validation_context"), v).map(Secret::Validation),
        (Some(_), Some(_)) => {
            cx.error(p, "only one of `tls_certificate` and `validation_context` may be set");
            None
        }
        (None, None) => {
            if s.tls_certificate.is_none() && s.validation_context.is_none() {
                cx.error(p, "a secret needs a `tls_certificate` or a `validation_context`");
            }
            None
        }
    };
    (name, out)
}

fn certificate(cx: &mut Ctx, p: &P, c: &raw::TlsCertificate) -> Option<CertificateSource> {
    cx.other(p, c, &[]);
    // Every file the secret names is watched whatever this says (see
    // `sds.rs`), which includes what this directory would trigger.
    if let Some(dir) = cx.opt(p, "watched_directory", &c.watched_directory) {
        cx.other(&p.key("watched_directory"), dir, &[]);
        cx.req(&p.key("watched_directory"), "path", &dir.path);
    }
    let chain = cx.req(p, "certificate_chain", &c.certificate_chain);
    let key = cx.req(p, "private_key", &c.private_key);
    let chain = chain.and_then(|d| cx.pem_source(&p.key("certificate_chain"), d));
    let key = key.and_then(|d| cx.pem_source(&p.key("private_key"), d));
    Some(CertificateSource { certificate_chain: chain?, private_key: key? })
}

fn validation_context(cx: &mut Ctx, p: &P, v: &raw::ValidationContext) -> Option<ValidationSecret> {
    cx.other(p, v, &[]);
    // Names and pins a secret carries would otherwise go unchecked.
    for (field, set) in [
        ("match_typed_subject_alt_names", v.match_typed_subject_alt_names.is_some()),
        ("match_subject_alt_names", v.match_subject_alt_names.is_some()),
    ] {
        if set {
            cx.error(
                &p.key(field),
                "not supported in a secret (names are matched from the listener's or cluster's own validation_context)",
            );
        }
    }
    for (field, set) in [
        ("verify_certificate_hash", v.verify_certificate_hash.is_some()),
        ("verify_certificate_spki", v.verify_certificate_spki.is_some()),
    ] {
        if set {
            cx.error(&p.key(field), "not supported in a secret (pins are given in a cluster's own validation_context)");
        }
    }
    let crl_leaf_only = cx.boolean(p, "only_verify_leaf_cert_crl", &v.only_verify_leaf_cert_crl, false);
    // The lists are read and parsed now, so that a broken one is an error
    // with its path (at start) or a refused update (while running); they
    // are read again, with the CAs, whenever the secret's files change.
    let mut crl_ok = true;
    let crl = match cx.opt(p, "crl", &v.crl) {
        Some(ds) => {
            let cp = p.key("crl");
            let source = cx.pem_source(&cp, ds);
            if let Some(source) = &source {
                let at = match source {
                    PemSource::File(_) => cp.key("filename"),
                    PemSource::Inline(_) => cp.clone(),
                };
                if let Err(e) = crate::tls::load_crls(source, crl_leaf_only) {
                    cx.error(&at, e.to_string());
                    crl_ok = false;
                }
            }
            crl_ok &= source.is_some();
            source
        }
        None => None,
    };
    let ca = cx.req(p, "trusted_ca", &v.trusted_ca)?;
    let trusted_ca = cx.pem_source(&p.key("trusted_ca"), ca)?;
    crl_ok.then_some(ValidationSecret { trusted_ca, crl, crl_leaf_only })
}

/// A TLS context's `SdsSecretConfig` for a secret of `kind`.
pub(super) fn sds_secret_config(cx: &mut Ctx, p: &P, c: &raw::SdsSecretConfig, kind: Kind) -> Option<SecretRef> {
    cx.other(p, c, &[]);
    let name = cx.string(p, "name", &c.name);
    let Some(source) = cx.opt(p, "sds_config", &c.sds_config) else {
        if c.sds_config.is_some() {
            return None;
        }
        // No source: one of `static_resources.secrets`.
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            cx.error(&p.key("name"), "required: without sds_config, the name of one of static_resources.secrets");
            return None;
        };
        return match cx.secrets.get(&name).cloned() {
            Some(Some(secret)) if Kind::of(&secret) == kind => Some(SecretRef::Static(secret)),
            Some(Some(_)) => {
                cx.error(&p.key("name"), format!("secret {name:?} holds no {}", kind.field()));
                None
            }
            // Defined, and its errors reported where it is.
            Some(None) => None,
            None => {
                cx.error(
                    &p.key("name"),
                    format!("unknown secret {name:?}: static_resources.secrets has none of that name"),
                );
                None
            }
        };
    };
    let sp = p.key("sds_config");
    let file = config_source(cx, &sp, source)?;
    let file = SdsFile { name: name.unwrap_or_default(), yaml_path: sp.0.clone(), ..file };
    let path_p = match source.path_config_source {
        Some(_) => sp.key("path_config_source").key("path"),
        None => sp.key("path"),
    };
    match read_file(&file) {
        Ok(secret) if Kind::of(&secret) == kind => Some(SecretRef::File(file)),
        Ok(_) => {
            cx.error(&path_p, format!("{}: secret {:?} holds no {}", file.path.display(), file.name, kind.field()));
            None
        }
        Err(problems) => {
            cx.error(&path_p, format!("{}: {problems}", file.path.display()));
            None
        }
    }
}

/// An SDS `ConfigSource`: a file (`path_config_source`, or the older
/// `path`). Control planes (`api_config_source`, `ads`) are refused.
fn config_source(cx: &mut Ctx, p: &P, s: &raw::ConfigSource) -> Option<SdsFile> {
    cx.other(p, s, &[]);
    let mut ok = true;
    for (field, set) in [
        ("api_config_source", s.api_config_source.is_some()),
        ("ads", s.ads.is_some()),
        ("self", s.self_source.is_some()),
        ("authorities", s.authorities.is_some()),
    ] {
        if set {
            cx.error(
                &p.key(field),
                "SDS from a control plane is not supported yet: only secrets from files (`path_config_source`) and static_resources.secrets are",
            );
            ok = false;
        }
    }
    cx.enumeration(p, "resource_api_version", &s.resource_api_version, &[("AUTO", ()), ("V3", ())], ());
    // A file is read at start (it must exist then), so there is nothing
    // to wait for: the timeout never applies.
    let _ = cx.duration(p, "initial_fetch_timeout", &s.initial_fetch_timeout);
    let (path, watched_directory) =
        match (cx.opt(p, "path", &s.path), cx.opt(p, "path_config_source", &s.path_config_source)) {
            (Some(_), Some(_)) => {
                cx.error(p, "only one of `path` and `path_config_source` may be set");
                return None;
            }
            (Some(path), None) => (Some(path.clone()), None),
            (None, Some(pcs)) => {
                let pp = p.key("path_config_source");
                cx.other(&pp, pcs, &[]);
                let dir = cx.opt(&pp, "watched_directory", &pcs.watched_directory).and_then(|d| {
                    let dp = pp.key("watched_directory");
                    cx.other(&dp, d, &[]);
                    cx.req(&dp, "path", &d.path).cloned()
                });
                (cx.req(&pp, "path", &pcs.path).cloned(), dir)
            }
            (None, None) => {
                if ok && s.path.is_none() && s.path_config_source.is_none() {
                    cx.error(p, "a secret's source must be a file: `path_config_source` (or `path`)");
                }
                return None;
            }
        };
    let path = path.filter(|p| !p.is_empty());
    if path.is_none() {
        cx.error(p, "the SDS file's path must not be empty");
    }
    if !ok {
        return None;
    }
    Some(SdsFile {
        name: String::new(),
        path: PathBuf::from(path?),
        watched_directory: watched_directory.map(PathBuf::from),
        yaml_path: String::new(),
    })
}

/// Reads the secret `file` names from its file, as Envoy's file
/// subscription does: one `Secret` resource, named as the reference says.
/// Every problem, with its path in the file, in one message.
pub(super) fn read_file(file: &SdsFile) -> Result<Secret, String> {
    let text = std::fs::read_to_string(&file.path).map_err(|e| format!("cannot read the SDS file: {e}"))?;
    let value: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| format!("invalid YAML: {e}"))?;
    let raw = match Field::<raw::SecretFile>::from_value(value) {
        Field::Ok(r) => r,
        Field::Invalid(msg) => return Err(msg),
    };
    let mut cx = Ctx::default();
    let root = P::root();
    cx.other(&root, &raw, &[]);
    let _ = cx.opt(&root, "version_info", &raw.version_info);
    let _ = cx.opt(&root, "nonce", &raw.nonce);
    if cx.opt(&root, "type_url", &raw.type_url).is_some_and(|t| t != SECRET_TYPE) {
        cx.error(&root.key("type_url"), format!("expected {SECRET_TYPE}"));
    }
    let resources = cx.list(&root, "resources", &raw.resources);
    let mut out = None;
    if resources.len() != 1 && cx.errors.is_empty() {
        cx.error(&root.key("resources"), format!("an SDS file holds exactly one secret, not {}", resources.len()));
    }
    if let Some((rp, r)) = resources.into_iter().next() {
        // Resources in a file are `Any`s: their type says what they are.
        cx.req(&rp, "@type", &r.type_url);
        let (name, secret) = secret(&mut cx, &rp, r);
        let name = name.unwrap_or_default();
        if name != file.name {
            cx.error(
                &rp.key("name"),
                format!("the secret is named {name:?}, not {:?} as the bootstrap says", file.name),
            );
        }
        out = secret;
    }
    match out {
        Some(secret) if cx.errors.is_empty() => Ok(secret),
        _ => Err(cx.errors.iter().map(Diagnostic::to_string).collect::<Vec<_>>().join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, name: &str) -> Result<Secret, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sds.json");
        std::fs::write(&path, text).unwrap();
        let file = SdsFile { name: name.into(), path, watched_directory: None, yaml_path: String::new() };
        read_file(&file)
    }

    const CERT: &str = r#"{"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", "name": "s",
        "tls_certificate": {"certificate_chain": {"filename": "/c.pem"}, "private_key": {"inline_string": "k"}}}"#;

    #[test]
    fn a_file_holds_one_secret_of_the_name_the_bootstrap_gives() {
        let one = format!(r#"{{"version_info": "1", "resources": [{CERT}]}}"#);
        assert!(matches!(read(&one, "s"), Ok(Secret::Certificate(_))));
        assert_eq!(
            read(&one, "t").unwrap_err(),
            r#"resources[0].name: the secret is named "s", not "t" as the bootstrap says"#
        );
        let two = format!(r#"{{"resources": [{CERT}, {CERT}]}}"#);
        assert_eq!(read(&two, "s").unwrap_err(), "resources: an SDS file holds exactly one secret, not 2");
        assert_eq!(read("{}", "s").unwrap_err(), "resources: an SDS file holds exactly one secret, not 0");
    }

    #[test]
    fn a_secret_in_a_file_is_checked_as_the_bootstrap_is() {
        let untyped = r#"resources: [{name: s, validation_context: {trusted_ca: {filename: /ca.pem}}}]"#;
        assert_eq!(read(untyped, "s").unwrap_err(), "resources[0].@type: required field is missing");
        let no_key = "resources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  name: s\n  tls_certificate: {certificate_chain: {filename: /c.pem}, pasword: x}\n";
        let e = read(no_key, "s").unwrap_err();
        assert!(e.contains("resources[0].tls_certificate.pasword: unknown or unsupported field"), "{e}");
        assert!(e.contains("resources[0].tls_certificate.private_key: required field is missing"), "{e}");
        assert!(read("resources: [", "s").unwrap_err().starts_with("invalid YAML"));
    }
}
