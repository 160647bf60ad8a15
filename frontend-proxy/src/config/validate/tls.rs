//! TLS transport sockets: `DownstreamTlsContext` on listeners and
//! `UpstreamTlsContext` on clusters.

use super::secret::{sds_secret_config, Kind, SecretRef};
use super::validation_context::{
    base64_sha256, hex_sha256, pins, revocation_lists, subject_alt_name_matchers, validation_secret,
};
use super::{Ctx, DataSourceValue, P};
use crate::config::raw;
use crate::tls::{
    CertificateSource, ClientCertificate, ClientValidation, DownstreamTls, SanMatcher, SanPattern, SanType, Secret,
    SecretSource, ServerCertificateChecks, SessionResumption, TlsParams, TlsVersion, TrustedCa, TICKET_KEY_LEN,
};
use crate::upstream::UpstreamTls;

const TLS_SOCKET_NAMES: &[&str] = &["envoy.transport_sockets.tls", "tls"];
const DOWNSTREAM_TLS_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const UPSTREAM_TLS_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";

pub(super) fn downstream_tls(cx: &mut Ctx, p: &P, ts: &raw::TypedExtension) -> Option<DownstreamTls> {
    cx.other(p, ts, &[]);
    let name = cx.string(p, "name", &ts.name).unwrap_or_default();
    let tc = cx.req(p, "typed_config", &ts.typed_config)?;
    let type_url = tc.get("@type").and_then(|v| v.as_str()).unwrap_or_default();
    if name == "envoy.transport_sockets.raw_buffer" {
        cx.error(p, "raw_buffer transport sockets are not supported; omit transport_socket for plain text");
        return None;
    }
    if !(TLS_SOCKET_NAMES.contains(&name.as_str()) || type_url == DOWNSTREAM_TLS_TYPE) {
        cx.error(p, format!("transport socket {name:?} is not supported: only envoy.transport_sockets.tls is"));
        return None;
    }
    let tp = p.key("typed_config");
    let ctx = cx.typed::<raw::DownstreamTlsContext>(&tp, tc)?;
    if cx.opt(&tp, "@type", &ctx.type_url).is_some_and(|t| t != DOWNSTREAM_TLS_TYPE) {
        cx.error(&tp.key("@type"), format!("expected {DOWNSTREAM_TLS_TYPE}"));
    }
    cx.other(&tp, &ctx, &[]);
    let sessions = session_resumption(cx, &tp, &ctx);
    let require = cx.boolean(&tp, "require_client_certificate", &ctx.require_client_certificate, false);
    let cp = tp.key("common_tls_context");
    let common = cx.req(&tp, "common_tls_context", &ctx.common_tls_context)?;
    cx.other(&cp, common, &[]);
    let params = tls_params(cx, &cp, common);
    // Client certificates: verified against `trusted_ca` when a client
    // sends one, and required with `require_client_certificate`.
    let mut client = None;
    if let Some(vc) = cx.opt(&cp, "validation_context", &common.validation_context) {
        let vp = cp.key("validation_context");
        cx.other(&vp, vc, &[]);
        let subject_alt_names = subject_alt_name_matchers(cx, &vp, vc);
        let pins = [
            ("verify_certificate_hash", vc.verify_certificate_hash.is_some()),
            ("verify_certificate_spki", vc.verify_certificate_spki.is_some()),
        ];
        for (field, _) in pins.into_iter().filter(|(_, set)| *set) {
            cx.error(
                &vp.key(field),
                "certificate pinning is supported on clusters (UpstreamTlsContext), not yet on listeners",
            );
        }
        if common.validation_context_sds_secret_config.is_some() {
            cx.error(
                &cp.key("validation_context_sds_secret_config"),
                "only one of `validation_context` and `validation_context_sds_secret_config` may be set",
            );
        }
        let crl = revocation_lists(cx, &vp, vc);
        match cx.req(&vp, "trusted_ca", &vc.trusted_ca) {
            Some(ca) => {
                let ca = cx.pem_source(&vp.key("trusted_ca"), ca);
                // A list that did not load is an error already: no client
                // validation rather than one without its revocation check.
                client = ca.zip(crl).map(|(ca, crl)| ClientValidation {
                    trusted_ca: TrustedCa::Pem(ca),
                    require,
                    subject_alt_names,
                    crl,
                })
            }
            None => return None,
        }
    } else if let Some(sc) =
        cx.opt(&cp, "validation_context_sds_secret_config", &common.validation_context_sds_secret_config)
    {
        // The secret's `trusted_ca` and `crl`; names are not matched (a
        // secret with `match_typed_subject_alt_names` is refused where it is read).
        let sp = cp.key("validation_context_sds_secret_config");
        let (trusted_ca, crl) = validation_secret(cx, &sp, sc)?;
        client = Some(ClientValidation { trusted_ca, require, subject_alt_names: Vec::new(), crl });
    } else if require {
        cx.error(
            &tp.key("require_client_certificate"),
            "needs common_tls_context.validation_context.trusted_ca (without it any client certificate would be accepted)",
        );
    }
    // Envoy joins the list with commas and splits it again: an entry
    // `"h2,http/1.1"` is two protocols.
    let mut alpn_protocols: Vec<String> = Vec::new();
    for (ip, entry) in cx.list(&cp, "alpn_protocols", &common.alpn_protocols) {
        for proto in entry.split(',') {
            if proto != "h2" && proto != "http/1.1" {
                cx.error(&ip, format!("ALPN protocol {proto:?} is not supported (h2, http/1.1)"));
            } else {
                alpn_protocols.push(proto.to_string());
            }
        }
    }
    let certs = cx.list(&cp, "tls_certificates", &common.tls_certificates);
    let sds = cx.list(&cp, "tls_certificate_sds_secret_configs", &common.tls_certificate_sds_secret_configs);
    if !certs.is_empty() && !sds.is_empty() {
        cx.error(
            &cp.key("tls_certificate_sds_secret_configs"),
            "only one of `tls_certificates` and `tls_certificate_sds_secret_configs` may be set",
        );
    }
    if certs.is_empty() && sds.is_empty() {
        cx.error(
            &cp.key("tls_certificates"),
            "at least one certificate is required (here or in tls_certificate_sds_secret_configs)",
        );
    }
    let mut certificates = Vec::new();
    let mut certificate_secrets = Vec::new();
    let mut complete = true;
    for (sp, sc) in sds {
        match sds_secret_config(cx, &sp, sc, Kind::Certificate) {
            Some(SecretRef::Static(Secret::Certificate(c))) => certificates.push(c),
            Some(SecretRef::File(file)) => certificate_secrets.push(file),
            _ => complete = false,
        }
    }
    for (cert_p, cert) in certs {
        match certificate_source(cx, &cert_p, cert) {
            Some(c) => certificates.push(c),
            None => complete = false,
        }
    }
    if !complete || (certificates.is_empty() && certificate_secrets.is_empty()) {
        return None;
    }
    Some(DownstreamTls { certificates, certificate_secrets, alpn_protocols, params, client, sessions: sessions? })
}

/// Envoy's session settings of a `DownstreamTlsContext`. Each is honoured:
/// a shorter lifetime or no resumption is what the file asks for, so
/// ignoring one would let a client resume a session the file forbids.
fn session_resumption(cx: &mut Ctx, tp: &P, ctx: &raw::DownstreamTlsContext) -> Option<SessionResumption> {
    let mut out = SessionResumption::default();
    let mut ok = true;
    if let Some(t) = cx.duration(tp, "session_timeout", &ctx.session_timeout) {
        // Envoy reads whole seconds below 2^32.
        match u32::try_from(t.as_secs()) {
            Ok(0) => {
                cx.error(
                    &tp.key("session_timeout"),
                    "must be at least 1s (turn resumption off with disable_stateless_session_resumption and disable_stateful_session_resumption)",
                );
                ok = false;
            }
            Ok(secs) => out.timeout_secs = Some(secs),
            Err(_) => {
                cx.error(&tp.key("session_timeout"), "must be less than 4294967296s");
                ok = false;
            }
        }
    }
    let no_tickets = cx.opt(tp, "disable_stateless_session_resumption", &ctx.disable_stateless_session_resumption);
    out.tickets = !no_tickets.copied().unwrap_or(false);
    out.cache = !cx.boolean(tp, "disable_stateful_session_resumption", &ctx.disable_stateful_session_resumption, false);
    if let Some(keys) = cx.opt(tp, "session_ticket_keys", &ctx.session_ticket_keys) {
        let kp = tp.key("session_ticket_keys");
        // One of Envoy's `session_ticket_keys_type`, like the switch.
        if no_tickets.is_some() {
            cx.error(&kp, "only one of `session_ticket_keys` and `disable_stateless_session_resumption` may be set");
            ok = false;
        }
        cx.other(&kp, keys, &[]);
        let list = cx.list(&kp, "keys", &keys.keys);
        if list.is_empty() {
            cx.error(&kp.key("keys"), "at least one key is required");
            ok = false;
        }
        // The first seals new tickets, every one opens them (rotation).
        for (kp, key) in list {
            match cx.data_source(&kp, key) {
                Some(DataSourceValue::File(f)) => out.ticket_keys.push(SecretSource::File(f.into())),
                Some(DataSourceValue::Inline(b)) if b.len() == TICKET_KEY_LEN => {
                    out.ticket_keys.push(SecretSource::Inline(b))
                }
                Some(DataSourceValue::Inline(b)) => {
                    cx.error(&kp, format!("a session ticket key must have exactly 80 bytes, not {}", b.len()));
                    ok = false;
                }
                None => ok = false,
            }
        }
    }
    ok.then_some(out)
}

pub(super) fn upstream_tls(cx: &mut Ctx, p: &P, ts: &raw::TypedExtension) -> Option<UpstreamTls> {
    cx.other(p, ts, &[]);
    let name = cx.string(p, "name", &ts.name).unwrap_or_default();
    let tc = cx.req(p, "typed_config", &ts.typed_config)?;
    let type_url = tc.get("@type").and_then(|v| v.as_str()).unwrap_or_default();
    if name != "envoy.transport_sockets.tls" && type_url != UPSTREAM_TLS_TYPE {
        cx.error(p, format!("transport socket {name:?} is not supported: only envoy.transport_sockets.tls is"));
        return None;
    }
    let tp = p.key("typed_config");
    let ctx = cx.typed::<raw::UpstreamTlsContext>(&tp, tc)?;
    cx.other(&tp, &ctx, &["max_session_keys"]);
    if cx.opt(&tp, "@type", &ctx.type_url).is_some_and(|t| t != UPSTREAM_TLS_TYPE) {
        cx.error(&tp.key("@type"), format!("expected {UPSTREAM_TLS_TYPE}"));
    }
    let mut trusted_ca = None;
    let mut server_checks = ServerCertificateChecks::default();
    let mut client_certificate = None;
    let mut params = TlsParams::default();
    if let Some(common) = cx.opt(&tp, "common_tls_context", &ctx.common_tls_context) {
        let cp = tp.key("common_tls_context");
        cx.other(&cp, common, &[]);
        params = tls_params(cx, &cp, common);
        let pp = cp.key("tls_params");
        // Pingora's connector offers TLS 1.0 to 1.3 with its own cipher
        // list for every cluster: a narrower offer cannot be made per
        // cluster, and a minimum is checked once the handshake is done.
        if params.max_version.is_some_and(|v| v < TlsVersion::V1_3) {
            cx.error(
                &pp.key("tls_maximum_protocol_version"),
                "an upstream maximum below TLSv1_3 is not supported (the upstream connector always offers TLS 1.3)",
            );
        }
        if params.cipher_list.is_some() {
            cx.error(
                &pp.key("cipher_suites"),
                "upstream cipher suites are not supported (the upstream connector's cipher list is fixed)",
            );
        }
        let certs = cx.list(&cp, "tls_certificates", &common.tls_certificates);
        if certs.len() > 1 {
            // As Envoy: a client context presents one certificate.
            cx.error(&cp.key("tls_certificates"), "at most one client certificate may be given to an upstream");
        }
        let sds = cx.list(&cp, "tls_certificate_sds_secret_configs", &common.tls_certificate_sds_secret_configs);
        if sds.len() > 1 {
            cx.error(
                &cp.key("tls_certificate_sds_secret_configs"),
                "at most one client certificate may be given to an upstream",
            );
        }
        if !certs.is_empty() && !sds.is_empty() {
            cx.error(
                &cp.key("tls_certificate_sds_secret_configs"),
                "only one of `tls_certificates` and `tls_certificate_sds_secret_configs` may be set",
            );
        }
        client_certificate = match sds.into_iter().next() {
            Some((sp, sc)) => match sds_secret_config(cx, &sp, sc, Kind::Certificate) {
                Some(SecretRef::Static(Secret::Certificate(c))) => Some(ClientCertificate::Pem(c)),
                Some(SecretRef::File(file)) => Some(ClientCertificate::Sds(file)),
                _ => None,
            },
            None => certs
                .into_iter()
                .next()
                .and_then(|(cert_p, cert)| certificate_source(cx, &cert_p, cert))
                .map(ClientCertificate::Pem),
        };
        if let Some(sc) =
            cx.opt(&cp, "validation_context_sds_secret_config", &common.validation_context_sds_secret_config)
        {
            // CAs and lists from the secret; names and pins cannot come
            // with it here (no `combined_validation_context`).
            if common.validation_context.is_some() {
                cx.error(
                    &cp.key("validation_context_sds_secret_config"),
                    "only one of `validation_context` and `validation_context_sds_secret_config` may be set",
                );
            }
            if let Some((ca, crl)) = validation_secret(cx, &cp.key("validation_context_sds_secret_config"), sc) {
                trusted_ca = Some(ca);
                server_checks.crl = crl;
            }
        }
        if common.alpn_protocols.is_some() {
            cx.error(&cp.key("alpn_protocols"), "upstream ALPN is chosen by the cluster's protocol options (typed_extension_protocol_options), not set here");
        }
        if let Some(vc) = cx.opt(&cp, "validation_context", &common.validation_context) {
            let vp = cp.key("validation_context");
            cx.other(&vp, vc, &[]);
            // Required: name checks or pins without a chain to a trusted CA
            // prove nothing (Envoy refuses SAN checks without one too).
            if let Some(ca) = cx.req(&vp, "trusted_ca", &vc.trusted_ca) {
                trusted_ca = cx.pem_source(&vp.key("trusted_ca"), ca).map(TrustedCa::Pem);
            }
            // `None`: the lists did not load, an error already.
            server_checks.crl = revocation_lists(cx, &vp, vc).flatten();
            server_checks.subject_alt_names = subject_alt_name_matchers(cx, &vp, vc);
            server_checks.certificate_hashes =
                pins(cx, &vp, "verify_certificate_hash", &vc.verify_certificate_hash, hex_sha256);
            server_checks.spki_hashes =
                pins(cx, &vp, "verify_certificate_spki", &vc.verify_certificate_spki, base64_sha256);
        }
    }
    let sni = cx.string(&tp, "sni", &ctx.sni);
    if cx.boolean(&tp, "auto_sni_san_validation", &ctx.auto_sni_san_validation, false) {
        // Envoy checks the SNI it sent instead of any listed names; ours is
        // always `sni` (no `auto_host_sni`), so without one there would be
        // nothing to check.
        let ap = tp.key("auto_sni_san_validation");
        match &sni {
            None => cx.error(&ap, "needs sni: the name checked is the SNI sent"),
            Some(_) if trusted_ca.is_none() => {
                cx.error(&ap, "needs common_tls_context.validation_context.trusted_ca (a name proves nothing without a trusted chain)")
            }
            Some(name) => {
                server_checks.subject_alt_names =
                    vec![SanMatcher { san_type: SanType::Dns, pattern: SanPattern::Exact(name.clone(), false) }];
            }
        }
    }
    // Envoy's default refuses a server's renegotiation request.
    let allow_renegotiation = cx.boolean(&tp, "allow_renegotiation", &ctx.allow_renegotiation, false);
    if allow_renegotiation && trusted_ca.is_some() {
        // Our checks (names, pins, lists) judge the certificate of the
        // first handshake only; OpenSSL lets a renegotiating server present
        // another one, which nothing would check.
        cx.error(
            &tp.key("allow_renegotiation"),
            "not supported with a validation context: a certificate the server presents when it renegotiates would not be verified",
        );
    }
    Some(UpstreamTls {
        sni,
        allow_renegotiation,
        trusted_ca,
        server_checks,
        client_certificate,
        // Envoy's default minimum for clients.
        min_version: params.min_version.unwrap_or(TlsVersion::V1_2),
        ecdh_curves: params.groups,
    })
}

/// `common_tls_context.tls_params`: versions, and cipher suites and curves
/// BoringSSL knows, each tried on its own as Envoy does.
fn tls_params(cx: &mut Ctx, cp: &P, common: &raw::CommonTlsContext) -> TlsParams {
    let Some(tp) = cx.opt(cp, "tls_params", &common.tls_params) else {
        return TlsParams::default();
    };
    let pp = cp.key("tls_params");
    cx.other(&pp, tp, &[]);
    let min_version =
        cx.enumeration(&pp, "tls_minimum_protocol_version", &tp.tls_minimum_protocol_version, TlsVersion::NAMES, None);
    let max_version =
        cx.enumeration(&pp, "tls_maximum_protocol_version", &tp.tls_maximum_protocol_version, TlsVersion::NAMES, None);
    if let (Some(min), Some(max)) = (min_version, max_version) {
        if min > max {
            cx.error(&pp.key("tls_minimum_protocol_version"), "must not be above tls_maximum_protocol_version");
        }
    }
    let mut ciphers = Vec::new();
    for (ip, entry) in cx.list(&pp, "cipher_suites", &tp.cipher_suites) {
        // An entry is a cipher or an equal-preference group `[A|B]`,
        // both BoringSSL's syntax, as in Envoy.
        // As Envoy, each entry is what BoringSSL's strict cipher-list
        // syntax accepts (rules such as `!aNULL` too); one entry is one
        // item of the list, so no separator of its own.
        let single = !entry.contains([':', ',', ';', ' ']);
        if single && crate::tls::known_cipher(entry) {
            ciphers.push(entry.to_string());
        } else {
            cx.error(
                &ip,
                format!(
                    "cipher suite {entry:?} is not known to BoringSSL (TLS 1.3 suites cannot be chosen, as in Envoy)"
                ),
            );
        }
    }
    let mut groups = Vec::new();
    for (ip, name) in cx.list(&pp, "ecdh_curves", &tp.ecdh_curves) {
        if crate::tls::known_group(name) {
            groups.push(name.clone());
        } else {
            cx.error(&ip, format!("ECDH curve {name:?} is not known to BoringSSL"));
        }
    }
    TlsParams {
        min_version,
        max_version,
        cipher_list: (!ciphers.is_empty()).then(|| ciphers.join(":")),
        groups: (!groups.is_empty()).then(|| groups.join(":")),
    }
}

/// One of `tls_certificates`: its chain and key, each from a file or inline.
fn certificate_source(cx: &mut Ctx, cert_p: &P, cert: &raw::TlsCertificate) -> Option<CertificateSource> {
    cx.other(cert_p, cert, &[]);
    if cert.watched_directory.is_some() {
        cx.warn(
            &cert_p.key("watched_directory"),
            "ignored: it applies to certificates from SDS files only, as in Envoy (these are read once, at start)",
        );
    }
    let chain = cx.req(cert_p, "certificate_chain", &cert.certificate_chain);
    let key = cx.req(cert_p, "private_key", &cert.private_key);
    let chain = chain.and_then(|c| cx.pem_source(&cert_p.key("certificate_chain"), c));
    let key = key.and_then(|k| cx.pem_source(&cert_p.key("private_key"), k));
    Some(CertificateSource { certificate_chain: chain?, private_key: key? })
}
