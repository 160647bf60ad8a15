//! Upstream mTLS and server-certificate validation: clusters present a
//! client certificate (`tls_certificates`) and check the upstream's
//! certificate against `trusted_ca`, `match_typed_subject_alt_names`,
//! pinned hashes and revocation lists, on requests (both HTTP/1 engines) and health checks.
//!
//! The upstreams are real TLS servers that require a client certificate
//! signed by the test CA: the proxy's own mTLS listeners (the downstream
//! side, tested on its own in `mtls.rs`), each with a server certificate
//! of other names, in front of a plain backend. Certificates are made by
//! rcgen. Addresses: 127.0.42.x.

#[allow(unused_imports)]
mod support;

use std::net::SocketAddr;
use support::proxy::ProxyProcess;
use support::{eventually, free_addr, ip, send, yaml, Backend, LIMIT};

/// PEM files of one certificate and its key.
struct Pem {
    cert: String,
    key: String,
}

/// The test PKI, written to `dir`: a CA, two server certificates it signed
/// (`a`: DNS backend.internal and URI spiffe://test/backend; `b`: DNS
/// other.example), a client certificate it signed, and a second CA that
/// signed nothing here.
struct Pki {
    ca: String,
    other_ca: String,
    a: Pem,
    b: Pem,
    client: Pem,
    /// SHA-256 of `a`'s certificate (DER), in hex with colons.
    a_hash: String,
    /// SHA-256 of `a`'s SubjectPublicKeyInfo, base64.
    a_spki: String,
    /// The CA, for revocation lists.
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

fn ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

fn pki(dir: &std::path::Path) -> Pki {
    let issuer = ca("test CA");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let sign = |name: &str, sans: Vec<rcgen::SanType>, usage: rcgen::ExtendedKeyUsagePurpose| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).unwrap();
        let pem = Pem {
            cert: write(&format!("{name}.pem"), &cert.pem()),
            key: write(&format!("{name}.key"), &key.serialize_pem()),
        };
        (pem, cert)
    };
    let dns = |n: &str| rcgen::SanType::DnsName(n.try_into().unwrap());
    let server = rcgen::ExtendedKeyUsagePurpose::ServerAuth;
    let (a, a_cert) = sign(
        "a",
        vec![dns("backend.internal"), rcgen::SanType::URI("spiffe://test/backend".try_into().unwrap())],
        server.clone(),
    );
    let (b, _) = sign("b", vec![dns("other.example")], server);
    let (client, _) = sign("client", vec![dns("proxy.internal")], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    let x509 = boring::x509::X509::from_der(a_cert.der()).unwrap();
    let digest = x509.digest(boring::hash::MessageDigest::sha256()).unwrap();
    let a_hash = digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
    let spki = boring::sha::sha256(&x509.public_key().unwrap().public_key_to_der().unwrap());
    use base64::Engine as _;
    let a_spki = base64::engine::general_purpose::STANDARD.encode(spki);
    Pki {
        ca: write("ca.pem", &issuer.pem()),
        other_ca: write("other-ca.pem", &ca("other CA").pem()),
        a,
        b,
        client,
        a_hash,
        a_spki,
        issuer,
    }
}

/// A CRL file from the test CA revoking the certificate in the file
/// `revoked` (valid from 2020 to 2099).
fn crl_file(pki: &Pki, dir: &std::path::Path, revoked: &str) -> String {
    let cert = boring::x509::X509::from_pem(&std::fs::read(revoked).unwrap()).unwrap();
    let serial = cert.serial_number().to_bn().unwrap().to_vec();
    let params = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2020, 1, 1),
        next_update: rcgen::date_time_ymd(2099, 1, 1),
        crl_number: 1u64.into(),
        issuing_distribution_point: None,
        revoked_certs: vec![rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from_slice(&serial),
            revocation_time: rcgen::date_time_ymd(2021, 1, 1),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let path = dir.join(format!("crl-{}.pem", serial.iter().map(|b| format!("{b:02x}")).collect::<String>()));
    std::fs::write(&path, params.signed_by(&pki.issuer).unwrap().pem().unwrap()).unwrap();
    path.display().to_string()
}

/// A listener that terminates TLS with `server`, requires a client
/// certificate signed by `ca` and routes to `backend`.
fn mtls_listener(name: &str, addr: SocketAddr, server: &Pem, ca: &str) -> String {
    let hcm = yaml::hcm(name, "", &yaml::routes(&[("/", "cluster: backend")]));
    yaml::tls_listener(name, addr, &hcm, &server.cert, &server.key).replace(
        "          common_tls_context:\n",
        &format!(
            "          require_client_certificate: true\n          common_tls_context:\n            validation_context:\n              trusted_ca: {{ filename: \"{ca}\" }}\n"
        ),
    )
}

/// A cluster of one TLS upstream; `common` is YAML inside
/// `common_tls_context` (8 spaces deep), `sni` the SNI if any, `extra` more
/// cluster-level YAML.
fn tls_cluster(name: &str, upstream: SocketAddr, sni: Option<&str>, common: &str, extra: &str) -> String {
    let sni = sni.map(|s| format!("        sni: {s}\n")).unwrap_or_default();
    yaml::cluster(
        name,
        "STATIC",
        &[(upstream.ip().to_string(), upstream.port())],
        &format!(
            r#"    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
{sni}        common_tls_context:
{common}{extra}"#
        ),
    )
}

const H2_OPTIONS: &str = r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
"#;

fn client_cert(pki: &Pki) -> String {
    format!(
        "          tls_certificates:\n          - certificate_chain: {{ filename: \"{}\" }}\n            private_key: {{ filename: \"{}\" }}\n",
        pki.client.cert, pki.client.key
    )
}

/// `validation_context` with `ca` and `more` (10 spaces deep).
fn validation(ca: &str, more: &str) -> String {
    format!("          validation_context:\n            trusted_ca: {{ filename: \"{ca}\" }}\n{more}")
}

#[tokio::test]
async fn clusters_present_a_client_certificate_and_check_the_upstreams() {
    let backend = Backend::start("b", SocketAddr::new(ip(42, 1), 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (a, b, front, admin) = (free_addr(ip(42, 1)), free_addr(ip(42, 1)), free_addr(ip(42, 1)), free_addr(ip(42, 1)));
    let cert = client_cert(&pki);
    let sans = |m: &str| format!("            match_typed_subject_alt_names: {m}\n");
    let clusters = [
        // Chain only: no SNI, no names (Envoy checks no host name then).
        ("chain", a, None, format!("{cert}{}", validation(&pki.ca, ""))),
        ("no_cert", a, Some("backend.internal"), validation(&pki.ca, "")),
        ("dns_exact", a, None, format!("{cert}{}", validation(&pki.ca, &sans("[{ san_type: DNS, matcher: { exact: backend.internal } }]")))),
        ("dns_suffix", a, None, format!("{cert}{}", validation(&pki.ca, &sans("[{ san_type: DNS, matcher: { suffix: .INTERNAL, ignore_case: true } }]")))),
        ("uri", a, None, format!("{cert}{}", validation(&pki.ca, &sans("[{ san_type: URI, matcher: { exact: \"spiffe://test/backend\" } }]")))),
        ("any_type", a, None, format!("{cert}{}", validation(&pki.ca, "            match_subject_alt_names: [{ prefix: \"spiffe://test/\" }]\n"))),
        ("wrong_san", b, Some("other.example"), format!("{cert}{}", validation(&pki.ca, &sans("[{ san_type: DNS, matcher: { exact: backend.internal } }, { san_type: URI, matcher: { prefix: \"spiffe://\" } }]")))),
        // The SNI sent is the name checked, in place of any listed.
        ("auto_san", a, Some("backend.internal"), format!("{cert}{}", validation(&pki.ca, &sans("[{ san_type: DNS, matcher: { exact: nobody } }]")))),
        ("auto_san_wrong", b, Some("backend.internal"), format!("{cert}{}", validation(&pki.ca, ""))),
        ("untrusted_sni", a, Some("backend.internal"), format!("{cert}{}", validation(&pki.other_ca, ""))),
        ("untrusted", a, None, format!("{cert}{}", validation(&pki.other_ca, ""))),
        ("pinned", a, None, format!("{cert}{}", validation(&pki.ca, &format!("            verify_certificate_hash: [\"{}\"]\n", pki.a_hash)))),
        ("pinned_spki", a, None, format!("{cert}{}", validation(&pki.ca, &format!("            verify_certificate_spki: [\"{}\"]\n", pki.a_spki)))),
        ("pinned_other", b, None, format!("{cert}{}", validation(&pki.ca, &format!("            verify_certificate_hash: [\"{}\"]\n", pki.a_hash)))),
    ];
    // The same checks on HTTP/2 upstreams (Pingora's connector in both engines).
    let h2 = [
        (
            "h2_dns_exact",
            a,
            format!(
                "{cert}{}",
                validation(&pki.ca, &sans("[{ san_type: DNS, matcher: { exact: backend.internal } }]"))
            ),
        ),
        (
            "h2_wrong_san",
            b,
            format!(
                "{cert}{}",
                validation(&pki.ca, &sans("[{ san_type: DNS, matcher: { exact: backend.internal } }]"))
            ),
        ),
    ];
    let names = clusters.iter().map(|(n, ..)| *n).chain(h2.iter().map(|(n, ..)| *n));
    let routes: Vec<(String, String)> =
        names.map(|n| (format!("/{n}/"), format!("cluster: {n}, prefix_rewrite: /"))).collect();
    let routes: Vec<(&str, &str)> = routes.iter().map(|(p, a)| (p.as_str(), a.as_str())).collect();
    let mut cluster_yaml: Vec<String> = clusters
        .iter()
        .map(|(n, up, sni, common)| {
            let yaml = tls_cluster(n, *up, *sni, common, "");
            if n.starts_with("auto_san") {
                yaml.replace("        sni:", "        auto_sni_san_validation: true\n        sni:")
            } else {
                yaml
            }
        })
        .collect();
    cluster_yaml.extend(h2.iter().map(|(n, up, common)| tls_cluster(n, *up, None, common, H2_OPTIONS)));
    cluster_yaml.push(yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], ""));
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[
            mtls_listener("upstream_a", a, &pki.a, &pki.ca),
            mtls_listener("upstream_b", b, &pki.b, &pki.ca),
            yaml::listener("front", front, &yaml::hcm("front", "", &yaml::routes(&routes))),
        ],
        &cluster_yaml,
    );
    let proxy = ProxyProcess::start(&cfg, front).await;
    let c = support::client();
    let get = |name: &str| c.get(format!("http://{front}/{name}/"));
    let stat = |cluster: &str, name: &str| {
        let name = format!("cluster.{cluster}.{name}");
        async move { support::stat(admin, &name).await }
    };

    for ok in
        ["chain", "dns_exact", "dns_suffix", "uri", "any_type", "pinned", "pinned_spki", "h2_dns_exact", "auto_san"]
    {
        let (status, body) = send(get(ok)).await;
        assert_eq!(status, 200, "{ok}: {body}\n{}", proxy.log());
        assert_eq!(stat(ok, "upstream_cx_connect_fail").await, 0, "{ok}");
    }
    let hits = backend.hits();
    // The upstream turns a client without a certificate away.
    let (status, body) = send(get("no_cert")).await;
    assert_eq!(status, 503, "no_cert: {body}");
    // Certificates the cluster refuses: connect failures, counted as Envoy
    // names them, before any request byte went out.
    for (refused, counter) in [
        ("wrong_san", "ssl.fail_verify_san"),
        ("untrusted_sni", "ssl.fail_verify_error"),
        ("untrusted", "ssl.fail_verify_error"),
        ("pinned_other", "ssl.fail_verify_cert_hash"),
        ("h2_wrong_san", "ssl.fail_verify_san"),
        ("auto_san_wrong", "ssl.fail_verify_san"),
    ] {
        let (status, body) = send(get(refused)).await;
        assert_eq!(status, 503, "{refused}: {body}\n{}", proxy.log());
        assert!(body.contains("connection failure"), "{refused}: {body}");
        assert!(stat(refused, counter).await >= 1, "{refused}: {counter}");
        assert!(stat(refused, "upstream_cx_connect_fail").await >= 1, "{refused}");
    }
    assert_eq!(backend.hits(), hits, "a refused upstream was sent a request");
    assert_eq!(stat("wrong_san", "ssl.fail_verify_error").await, 0);
    assert_eq!(stat("chain", "ssl.fail_verify_san").await, 0);
    assert_eq!(stat("h2_dns_exact", "upstream_cx_http2_total").await, 1, "the h2 cluster spoke HTTP/2");
}

#[tokio::test]
async fn health_checks_to_a_tls_cluster_present_the_client_certificate_and_validate() {
    let backend = Backend::start("b", SocketAddr::new(ip(42, 2), 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (a, front, admin) = (free_addr(ip(42, 2)), free_addr(ip(42, 2)), free_addr(ip(42, 2)));
    let cert = client_cert(&pki);
    let hc = r#"    health_checks:
    - timeout: 1s
      interval: 0.2s
      no_traffic_interval: 0.2s
      unhealthy_threshold: 1
      healthy_threshold: 1
      http_health_check: { path: /healthz }
    common_lb_config: { healthy_panic_threshold: { value: 0 } }
"#;
    let sans = "            match_typed_subject_alt_names: [{ san_type: DNS, matcher: { exact: backend.internal } }]\n";
    let wrong = "            match_typed_subject_alt_names: [{ san_type: DNS, matcher: { exact: someone.else } }]\n";
    let clusters = [
        ("checked", format!("{cert}{}", validation(&pki.ca, sans))),
        ("checked_no_cert", validation(&pki.ca, "")),
        ("checked_wrong_san", format!("{cert}{}", validation(&pki.ca, wrong))),
        // TCP checks: the handshake and the certificate checks.
        ("tcp_checked", format!("{cert}{}", validation(&pki.ca, sans))),
        ("tcp_checked_wrong_san", format!("{cert}{}", validation(&pki.ca, wrong))),
    ];
    let routes: Vec<(String, String)> =
        clusters.iter().map(|(n, _)| (format!("/{n}/"), format!("cluster: {n}, prefix_rewrite: /"))).collect();
    let routes: Vec<(&str, &str)> = routes.iter().map(|(p, a)| (p.as_str(), a.as_str())).collect();
    let mut cluster_yaml: Vec<String> = clusters
        .iter()
        .map(|(n, common)| {
            let hc = if n.starts_with("tcp") {
                hc.replace("http_health_check: { path: /healthz }", "tcp_health_check: {}")
            } else {
                hc.to_string()
            };
            tls_cluster(n, a, Some("backend.internal"), common, &hc)
        })
        .collect();
    cluster_yaml.push(yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], ""));
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[
            mtls_listener("upstream_a", a, &pki.a, &pki.ca),
            yaml::listener("front", front, &yaml::hcm("front", "", &yaml::routes(&routes))),
        ],
        &cluster_yaml,
    );
    let proxy = ProxyProcess::start(&cfg, front).await;
    // `/clusters`: `<cluster>::<addr>::health_flags::<flags>`; a host
    // whose first check failed is `/failed_active_hc` alone (before its
    // first check it is `/pending_active_hc` too).
    let flags = |cluster: &str| {
        let (admin, line) = (admin, format!("{cluster}::{a}::health_flags::"));
        async move {
            let text = support::client().get(format!("http://{admin}/clusters")).send().await.unwrap();
            let text = text.text().await.unwrap();
            text.lines().find_map(|l| l.strip_prefix(&line).map(str::to_string)).unwrap_or_default()
        }
    };
    assert!(eventually(LIMIT, || async { flags("checked").await == "healthy" }).await, "{}", proxy.log());
    assert_eq!(backend.last_uri(), "/healthz", "the check went through to the backend");
    // The others were checked and failed: no client certificate, or a
    // certificate without the name asked for.
    assert!(eventually(LIMIT, || async { flags("tcp_checked").await == "healthy" }).await, "{}", proxy.log());
    for failing in ["checked_no_cert", "checked_wrong_san", "tcp_checked_wrong_san"] {
        assert!(
            eventually(LIMIT, || async { flags(failing).await == "/failed_active_hc" }).await,
            "{failing}: {}\n{}",
            flags(failing).await,
            proxy.log()
        );
    }
    // Counted where requests count it.
    assert!(support::stat(admin, "cluster.checked_wrong_san.ssl.fail_verify_san").await >= 1);
    assert!(support::stat(admin, "cluster.tcp_checked_wrong_san.ssl.fail_verify_san").await >= 1);
    assert_eq!(support::stat(admin, "cluster.checked.ssl.fail_verify_san").await, 0);
    let c = support::client();
    let (status, body) = send(c.get(format!("http://{front}/checked/"))).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = send(c.get(format!("http://{front}/checked_wrong_san/"))).await;
    assert_eq!(status, 503);
}

#[test]
fn validate_mode_loads_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    // `a`'s certificate with the client's key: they do not match.
    let common = format!(
        "          tls_certificates:\n          - certificate_chain: {{ filename: \"{}\" }}\n            private_key: {{ filename: \"{}\" }}\n",
        pki.a.cert, pki.client.key
    );
    let listen = free_addr(ip(42, 3));
    let cfg = yaml::bootstrap(
        &[yaml::route_listener(listen, "front", &[("/", "cluster: mtls")])],
        &[tls_cluster("mtls", free_addr(ip(42, 3)), None, &common, "")],
    );
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new(support::proxy::binary())
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cluster \"mtls\": upstream TLS: certificate and private key do not match"), "{stderr}");
}

#[tokio::test]
async fn clusters_refuse_an_upstream_whose_certificate_a_crl_revokes() {
    let backend = Backend::start("b", SocketAddr::new(ip(42, 3), 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let [a, front, admin] = [(); 3].map(|_| free_addr(ip(42, 3)));
    let cert = client_cert(&pki);
    let crl = |revoked: &str| format!("            crl: {{ filename: \"{}\" }}\n", crl_file(&pki, dir.path(), revoked));
    let (revokes_a, revokes_b) = (crl(&pki.a.cert), crl(&pki.b.cert));
    // The CA with a list in one `trusted_ca` file: Envoy checks it too.
    let bundle = |revoked: &str, name: &str| {
        let list = std::fs::read_to_string(crl_file(&pki, dir.path(), revoked)).unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{}{list}", std::fs::read_to_string(&pki.ca).unwrap())).unwrap();
        path.display().to_string()
    };
    let (bundle_a, bundle_b) = (bundle(&pki.a.cert, "bundle-a.pem"), bundle(&pki.b.cert, "bundle-b.pem"));
    let clusters = [
        ("revoked", None, revokes_a.clone()),
        // Verified during the handshake too (Pingora does with an SNI).
        ("revoked_sni", Some("backend.internal"), revokes_a.clone()),
        ("revoked_leaf_only", None, format!("{revokes_a}            only_verify_leaf_cert_crl: true\n")),
        ("not_revoked", None, revokes_b),
    ];
    let names: Vec<(String, String)> = clusters
        .iter()
        .map(|(n, ..)| *n)
        .chain(["bundled_revoked", "bundled_revoked_sni", "bundled_not_revoked"])
        .map(|n| (format!("/{n}/"), format!("cluster: {n}, prefix_rewrite: /")))
        .collect();
    let routes: Vec<(&str, &str)> = names.iter().map(|(p, a)| (p.as_str(), a.as_str())).collect();
    let mut cluster_yaml: Vec<String> = clusters
        .iter()
        .map(|(n, sni, more)| tls_cluster(n, a, *sni, &format!("{cert}{}", validation(&pki.ca, more)), ""))
        .collect();
    for (n, sni, ca) in [
        ("bundled_revoked", None, &bundle_a),
        ("bundled_revoked_sni", Some("backend.internal"), &bundle_a),
        ("bundled_not_revoked", None, &bundle_b),
    ] {
        cluster_yaml.push(tls_cluster(n, a, sni, &format!("{cert}{}", validation(ca, "")), ""));
    }
    cluster_yaml.push(yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], ""));
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[
            mtls_listener("upstream_a", a, &pki.a, &pki.ca),
            yaml::listener("front", front, &yaml::hcm("front", "", &yaml::routes(&routes))),
        ],
        &cluster_yaml,
    );
    let proxy = ProxyProcess::start(&cfg, front).await;
    let c = support::client();
    let stat = |cluster: &str, name: &str| {
        let name = format!("cluster.{cluster}.{name}");
        async move { support::stat(admin, &name).await }
    };

    for ok in ["not_revoked", "bundled_not_revoked"] {
        let (status, body) = send(c.get(format!("http://{front}/{ok}/"))).await;
        assert_eq!(status, 200, "{ok}: {body}\n{}", proxy.log());
    }
    let hits = backend.hits();
    for refused in ["revoked", "revoked_sni", "revoked_leaf_only", "bundled_revoked", "bundled_revoked_sni"] {
        let (status, body) = send(c.get(format!("http://{front}/{refused}/"))).await;
        assert_eq!(status, 503, "{refused}: {body}\n{}", proxy.log());
        assert!(stat(refused, "ssl.fail_verify_error").await >= 1, "{refused}");
        assert!(stat(refused, "upstream_cx_connect_fail").await >= 1, "{refused}");
    }
    assert_eq!(backend.hits(), hits, "a revoked upstream was sent a request");
    assert_eq!(stat("not_revoked", "ssl.fail_verify_error").await, 0);
    // A refused chain leaves no errors on OpenSSL's queue for the next
    // TLS call on that thread to find and log.
    for _ in 0..8 {
        let (status, body) = send(c.get(format!("http://{front}/not_revoked/"))).await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(!proxy.log().contains("Clearing dirty TLS error stack"), "{}", proxy.log());
}

/// A TLS server on its own thread that asks every client for a
/// certificate, accepts any, and records whether one was sent; it answers
/// `200` to one request per connection. `cert`/`key` are PEM files.
fn recording_server(cert: &str, key: &str) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use boring::ssl::{SslAcceptor, SslFiletype, SslMethod, SslVerifyMode};
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let got = std::sync::Arc::new(AtomicBool::new(false));
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    acceptor.set_certificate_chain_file(cert).unwrap();
    acceptor.set_private_key_file(key, SslFiletype::PEM).unwrap();
    let seen = got.clone();
    acceptor.set_verify_callback(SslVerifyMode::PEER, move |_, ctx| {
        if ctx.current_cert().is_some() {
            seen.store(true, SeqCst);
        }
        true
    });
    let acceptor = acceptor.build();
    let listener = std::net::TcpListener::bind(SocketAddr::new(ip(42, 4), 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let Ok(mut tls) = acceptor.accept(tcp) else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            let _ = tls.shutdown();
        }
    });
    (addr, got)
}

#[tokio::test]
async fn the_client_certificate_is_not_sent_to_an_upstream_whose_chain_does_not_verify() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    // A server certificate for the right name from a CA the cluster does not trust.
    let mitm_ca = ca("mitm CA");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["backend.internal".to_string()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let mitm_cert = params.signed_by(&key, &mitm_ca).unwrap();
    let (mitm_pem, mitm_key) = (dir.path().join("mitm.pem"), dir.path().join("mitm.key"));
    std::fs::write(&mitm_pem, mitm_cert.pem()).unwrap();
    std::fs::write(&mitm_key, key.serialize_pem()).unwrap();
    let (mitm, mitm_got) = recording_server(mitm_pem.to_str().unwrap(), mitm_key.to_str().unwrap());
    // The same server with a trusted certificate: it does receive ours.
    let (honest, honest_got) = recording_server(&pki.a.cert, &pki.a.key);
    let [front, admin] = [(); 2].map(|_| free_addr(ip(42, 4)));
    let common = format!("{}{}", client_cert(&pki), validation(&pki.ca, ""));
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[yaml::listener(
            "front",
            front,
            &yaml::hcm(
                "front",
                "",
                &yaml::routes(&[
                    ("/mitm/", "cluster: mitm, prefix_rewrite: /"),
                    ("/honest/", "cluster: honest, prefix_rewrite: /"),
                ]),
            ),
        )],
        &[
            tls_cluster("mitm", mitm, Some("backend.internal"), &common, ""),
            tls_cluster("honest", honest, Some("backend.internal"), &common, ""),
        ],
    );
    let proxy = ProxyProcess::start(&cfg, front).await;
    let c = support::client();
    let (status, body) = send(c.get(format!("http://{front}/honest/"))).await;
    assert_eq!(status, 200, "{body}\n{}", proxy.log());
    assert!(honest_got.load(SeqCst), "a trusted upstream receives the client certificate");
    let (status, body) = send(c.get(format!("http://{front}/mitm/"))).await;
    assert_eq!(status, 503, "{body}\n{}", proxy.log());
    assert!(support::stat(admin, "cluster.mitm.ssl.fail_verify_error").await >= 1);
    assert!(!mitm_got.load(SeqCst), "the client certificate went to an upstream nobody had verified");
}
