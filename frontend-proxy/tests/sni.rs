//! TLS listeners with several certificates and several filter chains:
//! OpenSSL serves the certificate of the key type the client's signature
//! algorithms allow (RSA or ECDSA), and the client's SNI picks the filter
//! chain (its certificate and connection manager) in Envoy's order.
//! Real certificates (rcgen), real OpenSSL clients, the real proxy binary.
//! Addresses: 127.0.25.x.

#[allow(unused_imports)]
mod support;

use boring::pkey::{Id, PKey};
use boring::rsa::Rsa;
use boring::ssl::{SslConnector, SslMethod, SslVerifyMode};
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use support::proxy::ProxyProcess;
use support::{free_addr, ip, yaml, Backend};

/// A self-signed certificate for `names` with a key of `kind` ("rsa" or
/// "ecdsa"), written as `<file>.crt`/`<file>.key`; their paths.
fn write_cert(dir: &Path, file: &str, kind: &str, names: &[&str]) -> (String, String) {
    let key = match kind {
        // ring (rcgen's backend) signs with RSA keys but does not make them.
        "rsa" => {
            let pem = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap().private_key_to_pem_pkcs8().unwrap();
            rcgen::KeyPair::from_pem(std::str::from_utf8(&pem).unwrap()).unwrap()
        }
        _ => rcgen::KeyPair::generate().unwrap(),
    };
    let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.join(format!("{file}.crt")), dir.join(format!("{file}.key")));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c.to_string_lossy().into_owned(), k.to_string_lossy().into_owned())
}

/// `tls_certificates` entries for these (chain, key) file pairs.
fn certificates(certs: &[&(String, String)]) -> String {
    certs
        .iter()
        .map(|(c, k)| {
            format!(
                "\n            - certificate_chain: {{ filename: \"{c}\" }}\n              private_key: {{ filename: \"{k}\" }}"
            )
        })
        .collect()
}

/// A filter chain: `match_` (flow mapping contents, empty for none), a
/// TLS context with `certs`, and `hcm`.
fn chain(match_: &str, certs: &str, hcm: &str) -> String {
    let m = if match_.is_empty() { String::new() } else { format!("\n      filter_chain_match: {{ {match_} }}") };
    format!(
        r#"
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:{certs}{m}
      filters:{hcm}"#
    )
}

/// A listener at `addr` with these filter chains (and `extra` listener fields).
fn listener(addr: SocketAddr, chains: &[String], extra: &str) -> String {
    format!(
        r#"
  - name: tls
    address:
      socket_address: {{ address: {ip}, port_value: {port} }}{extra}
    filter_chains:{chains}"#,
        ip = addr.ip(),
        port = addr.port(),
        chains = chains.concat()
    )
}

/// What a client learns from one TLS connection: the key type of the
/// certificate it was served, its common name / first SAN, and the
/// response to `GET /` (status line and `x-served-by`).
#[derive(Debug)]
struct Seen {
    key: Id,
    san: String,
    response: String,
}

/// Connects with `sni` (none if empty), offering only `sigalgs` if given,
/// on a blocking thread (the backend runs on the test's runtime).
async fn connect(addr: SocketAddr, sni: &str, sigalgs: Option<&str>) -> Result<Seen, String> {
    let (sni, sigalgs) = (sni.to_string(), sigalgs.map(str::to_string));
    tokio::task::spawn_blocking(move || connect_blocking(addr, &sni, sigalgs.as_deref())).await.unwrap()
}

fn connect_blocking(addr: SocketAddr, sni: &str, sigalgs: Option<&str>) -> Result<Seen, String> {
    let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
    connector.set_verify(SslVerifyMode::NONE);
    if let Some(s) = sigalgs {
        connector.set_sigalgs_list(s).unwrap();
    }
    let mut config = connector.build().configure().unwrap();
    config.set_use_server_name_indication(!sni.is_empty());
    config.set_verify_hostname(false);
    let ssl = config.into_ssl(if sni.is_empty() { "unused" } else { sni }).unwrap();
    let mut tls = ssl.connect(tcp).map_err(|e| e.to_string())?;
    let cert = tls.ssl().peer_certificate().ok_or("no certificate")?;
    let key = cert.public_key().unwrap().id();
    let san = cert
        .subject_alt_names()
        .and_then(|s| s.iter().next().and_then(|n| n.dnsname().map(str::to_string)))
        .unwrap_or_default();
    tls.write_all(b"GET / HTTP/1.1\r\nhost: any\r\nconnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    if let Err(e) = tls.read_to_end(&mut raw) {
        // A peer closing without close_notify after the response is fine.
        if raw.is_empty() {
            return Err(format!("reading the response: {e}"));
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let status = text.lines().next().unwrap_or_default().to_string();
    let served_by = text
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("x-served-by:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    Ok(Seen { key, san, response: format!("{status} by {served_by}") })
}

#[tokio::test]
async fn rsa_and_ecdsa_certificates_are_served_by_the_clients_signature_algorithms() {
    let backend = Backend::start("b", SocketAddr::new(ip(25, 1), 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let rsa = write_cert(dir.path(), "rsa", "rsa", &["rsa.example.com"]);
    let ecdsa = write_cert(dir.path(), "ecdsa", "ecdsa", &["ecdsa.example.com"]);
    let addr = free_addr(ip(25, 1));
    let hcm = yaml::hcm("multi", "", &yaml::routes(&[("/", "cluster: backend")]));
    let cfg = yaml::bootstrap(
        &[listener(addr, &[chain("", &certificates(&[&rsa, &ecdsa]), &hcm)], "")],
        &[yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], "")],
    );
    let proxy = ProxyProcess::start(&cfg, addr).await;

    for (sigalgs, key, san) in
        [("ECDSA+SHA256", Id::EC, "ecdsa.example.com"), ("RSA-PSS+SHA256:RSA+SHA256", Id::RSA, "rsa.example.com")]
    {
        let seen =
            connect(addr, "any.example.com", Some(sigalgs)).await.unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
        assert_eq!((seen.key, seen.san.as_str()), (key, san), "offering {sigalgs}");
        assert_eq!(seen.response, "HTTP/1.1 200 OK by b", "{}", proxy.log());
    }
    // Both allowed: the client gets one of them, and is served.
    let seen = connect(addr, "", None).await.unwrap();
    assert_eq!(seen.response, "HTTP/1.1 200 OK by b");
}

const INSPECTOR: &str = "\n    listener_filters:\n    - name: envoy.filters.listener.tls_inspector";

#[tokio::test]
async fn sni_selects_the_filter_chain_in_envoys_order_and_no_match_is_closed() {
    let backend = Backend::start("b", SocketAddr::new(ip(25, 2), 0)).await;
    let other = Backend::start("c", SocketAddr::new(ip(25, 2), 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let cert = |file: &str, kind: &str| write_cert(dir.path(), file, kind, &[&format!("{file}.test")]);
    let (exact, wild, deeper, fallback) =
        (cert("exact", "ecdsa"), cert("wild", "ecdsa"), cert("deeper", "rsa"), cert("fallback", "ecdsa"));
    let (sni, strict, admin) = (free_addr(ip(25, 2)), free_addr(ip(25, 2)), free_addr(ip(25, 2)));
    let hcm = yaml::hcm("sni", "", &yaml::routes(&[("/", "cluster: backend")]));
    // The exact names' chain has a connection manager of its own.
    let own = yaml::hcm("exact", "", &yaml::routes(&[("/", "cluster: other")]));
    let default = chain("", &certificates(&[&fallback]), &hcm)
        .replacen("\n    - transport_socket:", "\n    default_filter_chain:\n      transport_socket:", 1)
        .replace("\n    ", "\n      ")
        .replacen("\n      default_filter_chain:", "\n    default_filter_chain:", 1);
    let listeners = [
        listener(
            sni,
            &[
                chain("server_names: [\"*.example.com\"]", &certificates(&[&wild]), &hcm),
                chain(
                    "server_names: [A.Example.com, other.test], transport_protocol: tls",
                    &certificates(&[&exact]),
                    &own,
                ),
                chain("server_names: \"*.b.example.com\"", &certificates(&[&deeper]), &hcm),
            ],
            INSPECTOR,
        ) + &default,
        listener(strict, &[chain("server_names: [only.example.com]", &certificates(&[&exact]), &hcm)], INSPECTOR)
            .replace("name: tls", "name: strict"),
    ];
    let cfg = format!(
        "{}{}",
        yaml::admin(admin),
        yaml::bootstrap(
            &listeners,
            &[
                yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], ""),
                yaml::cluster("other", "STATIC", &[(other.addr.ip().to_string(), other.addr.port())], ""),
            ],
        )
    );
    let proxy = ProxyProcess::start(&cfg, strict).await;

    for (name, served, by) in [
        ("a.example.com", "exact.test", "c"),
        ("A.EXAMPLE.COM", "exact.test", "c"),
        ("other.test", "exact.test", "c"),
        ("x.example.com", "wild.test", "b"),
        ("x.y.example.com", "wild.test", "b"),
        ("x.b.example.com", "deeper.test", "b"),
        ("b.example.com", "wild.test", "b"),
        ("example.com", "fallback.test", "b"),
        ("", "fallback.test", "b"),
    ] {
        let seen = connect(sni, name, None).await.unwrap_or_else(|e| panic!("{name}: {e}\n{}", proxy.log()));
        assert_eq!(seen.san, served, "SNI {name:?}");
        assert_eq!(seen.response, format!("HTTP/1.1 200 OK by {by}"), "SNI {name:?}\n{}", proxy.log());
    }
    // HTTP/2 (Pingora's engine) serves a chain with its own connection
    // manager too; the chains' stats add up under the listener's.
    for (name, by) in [("a.example.com", "c"), ("x.example.com", "b")] {
        let client =
            reqwest::Client::builder().no_proxy().danger_accept_invalid_certs(true).resolve(name, sni).build().unwrap();
        let r = client.get(format!("https://{name}:{}/", sni.port())).send().await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        let served_by = r.headers().get("x-served-by").and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!((r.status().as_u16(), served_by.as_deref()), (200, Some(by)), "{name}");
    }
    let exact_rq = support::stat(admin, "http.exact.downstream_rq_2xx").await;
    assert_eq!(exact_rq, 4, "three HTTP/1.1 requests and one HTTP/2 on the exact chain");
    let sni_scope = format!("listener.{}", sni.to_string().replace(':', "_"));
    assert_eq!(support::stat(admin, &format!("{sni_scope}.downstream_cx_total")).await, 11);

    // No chain and no default: the handshake fails, counted as Envoy counts it.
    let seen = connect(strict, "only.example.com", None).await.unwrap();
    assert_eq!(seen.san, "exact.test");
    for name in ["other.example.com", ""] {
        assert!(connect(strict, name, None).await.is_err(), "SNI {name:?} was served");
    }
    let scope = format!("listener.{}", strict.to_string().replace(':', "_"));
    assert_eq!(support::stat(admin, &format!("{scope}.no_filter_chain_match")).await, 2);
    assert_eq!(support::stat(admin, &format!("{sni_scope}.no_filter_chain_match")).await, 0);
}

#[test]
fn two_certificates_of_one_key_type_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let one = write_cert(dir.path(), "one", "ecdsa", &["one.test"]);
    let two = write_cert(dir.path(), "two", "ecdsa", &["two.test"]);
    let hcm = yaml::hcm("dup", "", &yaml::routes(&[("/", "cluster: backend")]));
    let cfg = yaml::bootstrap(
        &[listener(free_addr(ip(25, 3)), &[chain("", &certificates(&[&one, &two]), &hcm)], "")],
        &[yaml::cluster("backend", "STATIC", &[("127.0.25.3".to_string(), 1)], "")],
    );
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new(support::proxy::binary())
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("at most one certificate of each key type"), "{text}");
}
