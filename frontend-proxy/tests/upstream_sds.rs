//! Clusters' TLS secrets from SDS files, rotated while the proxy runs: the
//! client certificate (`tls_certificate_sds_secret_configs`) and the trusted
//! CAs with their revocation lists (`validation_context_sds_secret_config`);
//! revocation lists in a listener's SDS validation secret; and the upstream
//! TLS behaviours Envoy has by default: renegotiation refused, an
//! intermediate CA trusted on its own (partial chains).
//!
//! The upstreams are BoringSSL servers in this process (or `openssl
//! s_server`, to renegotiate) that ask for a client certificate, accept any, and answer each request with the DNS name of
//! the certificate they were shown, on a connection they then close (so
//! every request is a new upstream connection). Certificates are made by
//! rcgen; the proxy is the real binary. Addresses: 127.0.48.x.

#[allow(unused_imports)]
mod support;

use boring::pkey::PKey;
use boring::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode};
use boring::x509::X509;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;
use support::proxy::ProxyProcess;
use support::{eventually, free_addr, ip, send, yaml, LIMIT};

/// A certificate and its key (PEM text).
#[derive(Clone)]
struct Pair {
    cert: String,
    key: String,
}

type Issuer = rcgen::CertifiedIssuer<'static, rcgen::KeyPair>;

fn ca(name: &str) -> Issuer {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// An intermediate CA signed by `root`.
fn intermediate(root: &Issuer, name: &str) -> Issuer {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    rcgen::CertifiedIssuer::signed_by(params, rcgen::KeyPair::generate().unwrap(), root).unwrap()
}

/// A certificate for `name` signed by `issuer`, for a server or a client.
fn leaf(issuer: &Issuer, name: &str, server: bool) -> Pair {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params.extended_key_usages = vec![if server {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    }];
    let cert = params.signed_by(&key, issuer).unwrap();
    Pair { cert: cert.pem(), key: key.serialize_pem() }
}

/// A CRL of `issuer` revoking the certificate `revoked` (PEM).
fn crl(issuer: &Issuer, revoked: &str) -> String {
    let cert = X509::from_pem(revoked.as_bytes()).unwrap();
    let serial = cert.serial_number().to_bn().unwrap().to_vec();
    rcgen::CertificateRevocationListParams {
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
    }
    .signed_by(issuer)
    .unwrap()
    .pem()
    .unwrap()
}

/// Writes `content` to `path` as certificate tooling does: a new file
/// renamed over the old one.
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    replace(&path, content);
    path
}

const SECRET: &str = "\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// An SDS file holding the certificate secret `name`.
fn certificate_secret(name: &str, cert: &Path, key: &Path) -> String {
    format!(
        "resources:\n- {SECRET}\n  name: {name}\n  tls_certificate:\n    certificate_chain: {{ filename: \"{}\" }}\n    private_key: {{ filename: \"{}\" }}\n",
        cert.display(),
        key.display()
    )
}

/// An SDS file holding the validation secret `name`: `ca`, and `crl` if any.
fn validation_secret(name: &str, ca: &Path, crl: Option<&Path>) -> String {
    let crl = crl.map(|c| format!("    crl: {{ filename: \"{}\" }}\n", c.display())).unwrap_or_default();
    format!(
        "resources:\n- {SECRET}\n  name: {name}\n  validation_context:\n    trusted_ca: {{ filename: \"{}\" }}\n{crl}",
        ca.display()
    )
}

/// What became of a renegotiation an upstream asked for.
#[derive(Debug, PartialEq)]
enum Renegotiation {
    /// The proxy refused it (a `no_renegotiation` alert).
    Refused,
    /// The proxy answered it with a ClientHello: it went through.
    Renegotiated,
    /// Anything else (what the server printed).
    Other(String),
}

/// A TLS upstream serving `pair`; see the module comment.
fn upstream(addr: SocketAddr, pair: &Pair) -> SocketAddr {
    let listener = TcpListener::bind(addr).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    b.set_certificate(&X509::from_pem(pair.cert.as_bytes()).unwrap()).unwrap();
    b.set_private_key(&PKey::private_key_from_pem(pair.key.as_bytes()).unwrap()).unwrap();
    b.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
    let acceptor = std::sync::Arc::new(b.build());
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let acceptor = acceptor.clone();
            std::thread::spawn(move || serve(&acceptor, tcp));
        }
    });
    addr
}

fn serve(acceptor: &SslAcceptor, tcp: TcpStream) {
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let Ok(mut tls) = acceptor.accept(tcp) else { return };
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf) {
            Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let client = tls
        .ssl()
        .peer_certificate()
        .and_then(|c| c.subject_alt_names()?.iter().find_map(|n| n.dnsname().map(str::to_string)))
        .unwrap_or_else(|| "none".to_string());
    let response = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{client}", client.len());
    let _ = tls.write_all(response.as_bytes());
    let _ = tls.shutdown();
}

/// An upstream that asks for a TLS 1.2 renegotiation once it has read a
/// request, and reports what the proxy did about it: `openssl s_server`
/// (its `r` command), as BoringSSL, which the proxy and these tests link,
/// has no server-side renegotiation. It serves one connection; the answer
/// goes out only if the renegotiation went through.
fn renegotiating_upstream(
    host: std::net::IpAddr,
    pair: &Pair,
    dir: &Path,
) -> (SocketAddr, mpsc::Receiver<Renegotiation>) {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};
    let (cert, key) = (write(dir, "upstream.pem", &pair.cert), write(dir, "upstream.key", &pair.key));
    let addr = free_addr(host);
    let mut server = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec openssl s_server -accept {addr} -cert {} -key {} -tls1_2 -crlf -state -naccept 1 2>&1",
            cert.display(),
            key.display()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl s_server");
    let mut stdin = server.stdin.take().unwrap();
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = server.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first line of the server's output `what` accepts, within `within`.
    fn wait_for(lines: &mpsc::Receiver<String>, what: impl Fn(&str) -> bool, within: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            match lines.recv_timeout(left) {
                Ok(line) if what(&line) => return Some(line),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
    assert!(wait_for(&lines, |l| l.contains("ACCEPT"), LIMIT).is_some(), "s_server did not start");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // The request's head ends with an empty line (s_server prints what it reads).
        if wait_for(&lines, |l| l.trim_end_matches('\r').is_empty(), LIMIT).is_none() {
            let _ = tx.send(Renegotiation::Other("no request".into()));
            return;
        }
        stdin.write_all(b"r\n").unwrap();
        // The proxy answers with a ClientHello or a `no_renegotiation` alert.
        let answer = |l: &str| l.contains("read client hello") || l.contains("renegotiation") || l.contains("ERROR");
        let outcome = match wait_for(&lines, answer, LIMIT) {
            Some(l) if l.contains("read client hello") => Renegotiation::Renegotiated,
            Some(l) if l.contains("no renegotiation") => Renegotiation::Refused,
            other => Renegotiation::Other(format!("{other:?}")),
        };
        if outcome == Renegotiation::Renegotiated {
            let _ = stdin.write_all(b"HTTP/1.1 200 OK\ncontent-length: 4\nconnection: close\n\nnone");
            let _ = stdin.flush();
            std::thread::sleep(Duration::from_millis(500));
        }
        let _ = tx.send(outcome);
        let _ = server.kill();
        let _ = server.wait();
    });
    (addr, rx)
}

/// A cluster `up` of one TLS upstream; `common` is YAML inside
/// `common_tls_context` (10 spaces deep).
fn tls_cluster(upstream: SocketAddr, common: &str) -> String {
    yaml::cluster(
        "up",
        "STATIC",
        &[(upstream.ip().to_string(), upstream.port())],
        &format!(
            "    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n        common_tls_context:\n{common}"
        ),
    )
}

fn sds_certificate(path: &Path) -> String {
    format!(
        "          tls_certificate_sds_secret_configs:\n          - name: client\n            sds_config: {{ path_config_source: {{ path: \"{}\" }} }}\n",
        path.display()
    )
}

fn sds_validation(path: &Path) -> String {
    format!(
        "          validation_context_sds_secret_config:\n            name: cas\n            sds_config: {{ path_config_source: {{ path: \"{}\" }} }}\n",
        path.display()
    )
}

fn fixed_validation(ca: &Path) -> String {
    format!("          validation_context:\n            trusted_ca: {{ filename: \"{}\" }}\n", ca.display())
}

/// The proxy: a plain listener at `front` routing everything to `cluster`.
async fn proxy(front: SocketAddr, admin: SocketAddr, cluster: String) -> ProxyProcess {
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[yaml::listener("front", front, &yaml::hcm("front", "", &yaml::routes(&[("/", "cluster: up")])))],
        &[cluster],
    );
    ProxyProcess::start(&cfg, front).await
}

/// `GET /` through the proxy: the status and body.
async fn get(front: SocketAddr) -> (u16, String) {
    send(support::client().get(format!("http://{front}/"))).await
}

#[tokio::test]
async fn a_cluster_client_certificate_from_sds_rotates_and_a_broken_update_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = ca("test CA");
    let server = leaf(&root, "backend.internal", true);
    let (one, two) = (leaf(&root, "client-one.test", false), leaf(&root, "client-two.test", false));
    let up = upstream(SocketAddr::new(ip(48, 1), 0), &server);
    let (cert, key) = (write(d, "client.pem", &one.cert), write(d, "client.key", &one.key));
    let sds = write(d, "client.yaml", &certificate_secret("client", &cert, &key));
    let ca_path = write(d, "ca.pem", &root.pem());
    let (front, admin) = (free_addr(ip(48, 1)), free_addr(ip(48, 1)));
    let proxy =
        proxy(front, admin, tls_cluster(up, &format!("{}{}", sds_certificate(&sds), fixed_validation(&ca_path)))).await;
    let stat = |name: &str| {
        let name = format!("sds.client.{name}");
        async move { support::stat(admin, &name).await }
    };

    assert_eq!(get(front).await, (200, "client-one.test".to_string()), "{}", proxy.log());
    assert_eq!((stat("update_success").await, stat("update_rejected").await), (1, 0), "the first read counts");

    // Rotated: new upstream connections present the new certificate.
    replace(&key, &two.key);
    replace(&cert, &two.cert);
    let rotated = eventually(LIMIT, || async { get(front).await == (200, "client-two.test".to_string()) });
    assert!(rotated.await, "the new client certificate was never presented:\n{}", proxy.log());

    // A certificate without its key is refused; the current one stays.
    let before = stat("update_rejected").await;
    replace(&cert, &one.cert);
    let refused = eventually(LIMIT, || async { stat("update_rejected").await > before });
    assert!(refused.await, "the broken update was not refused:\n{}", proxy.log());
    assert_eq!(get(front).await, (200, "client-two.test".to_string()));
    assert!(proxy.log().contains("SDS secret update rejected"), "{}", proxy.log());
}

#[tokio::test]
async fn a_cluster_trusted_ca_from_sds_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old_ca, new_ca) = (ca("old CA"), ca("new CA"));
    let server = leaf(&new_ca, "backend.internal", true);
    let up = upstream(SocketAddr::new(ip(48, 2), 0), &server);
    let ca_path = write(d, "ca.pem", &old_ca.pem());
    let sds = write(d, "cas.yaml", &validation_secret("cas", &ca_path, None));
    let (front, admin) = (free_addr(ip(48, 2)), free_addr(ip(48, 2)));
    let proxy = proxy(front, admin, tls_cluster(up, &sds_validation(&sds))).await;

    let (status, body) = get(front).await;
    assert_eq!(status, 503, "an upstream of an untrusted CA was used: {body}\n{}", proxy.log());
    assert!(support::stat(admin, "cluster.up.ssl.fail_verify_error").await >= 1);

    replace(&ca_path, &new_ca.pem());
    let trusted = eventually(LIMIT, || async { get(front).await.0 == 200 });
    assert!(trusted.await, "the new CA was never trusted:\n{}", proxy.log());
    assert_eq!(support::stat(admin, "sds.cas.update_success").await, 2);
}

#[tokio::test]
async fn revocation_lists_in_an_sds_secret_apply_to_clusters_and_rotate_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = ca("test CA");
    let (server, other) = (leaf(&root, "backend.internal", true), leaf(&root, "other.internal", true));
    let up = upstream(SocketAddr::new(ip(48, 3), 0), &server);
    let ca_path = write(d, "ca.pem", &root.pem());
    let crl_path = write(d, "crl.pem", &crl(&root, &server.cert));
    let sds = write(d, "cas.yaml", &validation_secret("cas", &ca_path, Some(&crl_path)));
    let (front, admin) = (free_addr(ip(48, 3)), free_addr(ip(48, 3)));
    let proxy = proxy(front, admin, tls_cluster(up, &sds_validation(&sds))).await;

    let (status, body) = get(front).await;
    assert_eq!(status, 503, "a revoked upstream was used: {body}\n{}", proxy.log());
    assert!(support::stat(admin, "cluster.up.ssl.fail_verify_error").await >= 1);

    // The list replaced by one revoking another certificate.
    replace(&crl_path, &crl(&root, &other.cert));
    let accepted = eventually(LIMIT, || async { get(front).await.0 == 200 });
    assert!(accepted.await, "the new list never applied:\n{}", proxy.log());
}

/// A TLS connection to `addr` presenting `client`; `Ok` once a request
/// was answered.
fn mtls_get(addr: SocketAddr, client: &Pair) -> Result<String, String> {
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(LIMIT)).unwrap();
    let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
    connector.set_verify(SslVerifyMode::NONE);
    connector.set_certificate(&X509::from_pem(client.cert.as_bytes()).unwrap()).unwrap();
    connector.set_private_key(&PKey::private_key_from_pem(client.key.as_bytes()).unwrap()).unwrap();
    let ssl = connector.build().configure().unwrap().into_ssl("localhost").unwrap();
    let mut tls = ssl.connect(tcp).map_err(|e| e.to_string())?;
    tls.write_all(b"GET / HTTP/1.1\r\nhost: any\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let n = tls.read(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    text.lines().next().filter(|l| !l.is_empty()).map(str::to_string).ok_or_else(|| "no response".into())
}

/// A listener at `addr` serving `server`, requiring a client certificate
/// verified by `validation` (YAML inside `common_tls_context`, 12 deep).
fn mtls_listener(addr: SocketAddr, server: (&Path, &Path), validation: &str) -> String {
    let hcm = yaml::hcm("mtls", "", &yaml::routes(&[("/", "cluster: local")]));
    yaml::tls_listener("mtls", addr, &hcm, &server.0.display().to_string(), &server.1.display().to_string()).replace(
        "          common_tls_context:\n",
        &format!("          require_client_certificate: true\n          common_tls_context:\n{validation}"),
    )
}

#[tokio::test]
async fn revocation_lists_in_a_listener_sds_secret_refuse_clients_and_rotate() {
    let backend = support::Backend::start("b", SocketAddr::new(ip(48, 4), 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = ca("test CA");
    let server = leaf(&root, "proxy.test", true);
    let (one, two) = (leaf(&root, "client-one.test", false), leaf(&root, "client-two.test", false));
    let (cert, key) = (write(d, "server.pem", &server.cert), write(d, "server.key", &server.key));
    let ca_path = write(d, "ca.pem", &root.pem());
    let crl_path = write(d, "crl.pem", &crl(&root, &one.cert));
    let sds = write(d, "clients.yaml", &validation_secret("clients", &ca_path, Some(&crl_path)));
    let validation = format!(
        "            validation_context_sds_secret_config:\n              name: clients\n              sds_config: {{ path: \"{}\" }}\n",
        sds.display()
    );
    let addr = free_addr(ip(48, 4));
    let cfg = yaml::bootstrap(
        &[mtls_listener(addr, (&cert, &key), &validation)],
        &[yaml::cluster("local", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], "")],
    );
    let proxy = ProxyProcess::start(&cfg, addr).await;
    let get = |client: &Pair| {
        let client = client.clone();
        async move { tokio::task::spawn_blocking(move || mtls_get(addr, &client)).await.unwrap() }
    };
    let ok = "HTTP/1.1 200 OK";
    assert_eq!(get(&two).await.as_deref(), Ok(ok), "{}", proxy.log());
    assert!(get(&one).await.is_err(), "a revoked client was let in");

    replace(&crl_path, &crl(&root, &two.cert));
    let rotated = eventually(LIMIT, || async { get(&one).await.as_deref() == Ok(ok) });
    assert!(rotated.await, "the new list never applied:\n{}", proxy.log());
    assert!(get(&two).await.is_err(), "the newly revoked client was let in");
}

#[tokio::test]
async fn an_upstream_asking_to_renegotiate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = ca("test CA");
    let server = leaf(&root, "backend.internal", true);
    let (up, outcomes) = renegotiating_upstream(ip(48, 5), &server, dir.path());
    let ca_path = write(dir.path(), "ca.pem", &root.pem());
    let (front, admin) = (free_addr(ip(48, 5)), free_addr(ip(48, 5)));
    let proxy = proxy(front, admin, tls_cluster(up, &fixed_validation(&ca_path))).await;
    let (status, body) = get(front).await;
    assert_ne!(status, 200, "the request went through a renegotiation: {body}\n{}", proxy.log());
    let outcome = tokio::task::spawn_blocking(move || outcomes.recv_timeout(LIMIT)).await.unwrap();
    assert_eq!(outcome, Ok(Renegotiation::Refused), "{}", proxy.log());
}

/// `allow_renegotiation: true` follows the request, as in Envoy (without
/// a validation context: with one it is refused, see below).
#[tokio::test]
async fn allow_renegotiation_lets_an_upstream_renegotiate() {
    let dir = tempfile::tempdir().unwrap();
    let root = ca("test CA");
    let server = leaf(&root, "backend.internal", true);
    let (up, outcomes) = renegotiating_upstream(ip(48, 8), &server, dir.path());
    let ca_path = write(dir.path(), "ca.pem", &root.pem());
    let (front, admin) = (free_addr(ip(48, 8)), free_addr(ip(48, 8)));
    let allow = |common: &str| {
        tls_cluster(up, common).replace(
            "        common_tls_context:\n",
            "        allow_renegotiation: true\n        common_tls_context:\n",
        )
    };
    // With a validation context: a renegotiated certificate would go unchecked.
    let refused = allow(&fixed_validation(&ca_path));
    let cfg_path = dir.path().join("envoy.yaml");
    std::fs::write(
        &cfg_path,
        yaml::bootstrap(&[yaml::route_listener(front, "front", &[("/", "cluster: up")])], &[refused]),
    )
    .unwrap();
    let out = std::process::Command::new(support::proxy::binary())
        .args(["--mode", "validate", "-c"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("allow_renegotiation") && stderr.contains("would not be verified"), "{stderr}");
    let cluster = allow("          tls_params: { tls_minimum_protocol_version: TLSv1_2 }\n");
    let proxy = proxy(front, admin, cluster).await;
    let (status, body) = get(front).await;
    let outcome = tokio::task::spawn_blocking(move || outcomes.recv_timeout(LIMIT)).await.unwrap();
    assert_eq!(status, 200, "{body}\n{outcome:?}\n{}", proxy.log());
    assert_eq!(outcome, Ok(Renegotiation::Renegotiated), "{}", proxy.log());
}

#[tokio::test]
async fn an_intermediate_ca_alone_is_a_trust_anchor_upstream_and_downstream() {
    let backend = support::Backend::start("b", SocketAddr::new(ip(48, 6), 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = ca("root CA");
    let inter = intermediate(&root, "intermediate CA");
    // The upstream sends its certificate alone, without the intermediate.
    let server = leaf(&inter, "backend.internal", true);
    let up = upstream(SocketAddr::new(ip(48, 6), 0), &server);
    let inter_path = write(d, "intermediate.pem", &inter.pem());
    let (front, admin) = (free_addr(ip(48, 6)), free_addr(ip(48, 6)));
    let listener_addr = free_addr(ip(48, 6));
    let proxy_cert = leaf(&root, "proxy.test", true);
    let (cert, key) = (write(d, "proxy.pem", &proxy_cert.cert), write(d, "proxy.key", &proxy_cert.key));
    let validation = format!(
        "            validation_context:\n              trusted_ca: {{ filename: \"{}\" }}\n",
        inter_path.display()
    );
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[
            yaml::listener("front", front, &yaml::hcm("front", "", &yaml::routes(&[("/", "cluster: up")]))),
            mtls_listener(listener_addr, (&cert, &key), &validation),
        ],
        &[
            tls_cluster(up, &fixed_validation(&inter_path)),
            yaml::cluster("local", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], ""),
        ],
    );
    let proxy = ProxyProcess::start(&cfg, front).await;
    let (status, body) = get(front).await;
    assert_eq!(status, 200, "{body}\n{}", proxy.log());
    // A client certificate of the intermediate, sent without it.
    let client = leaf(&inter, "client.test", false);
    let ok = tokio::task::spawn_blocking(move || mtls_get(listener_addr, &client)).await.unwrap();
    assert_eq!(ok.as_deref(), Ok("HTTP/1.1 200 OK"), "{}", proxy.log());
    // Another root's client is still refused.
    let stranger = leaf(&ca("other CA"), "stranger.test", false);
    let refused = tokio::task::spawn_blocking(move || mtls_get(listener_addr, &stranger)).await.unwrap();
    assert!(refused.is_err(), "a client of an untrusted CA was let in");
}

#[tokio::test]
async fn health_checks_follow_the_cluster_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old_ca, new_ca) = (ca("old CA"), ca("new CA"));
    let server = leaf(&new_ca, "backend.internal", true);
    let up = upstream(SocketAddr::new(ip(48, 7), 0), &server);
    let ca_path = write(d, "ca.pem", &old_ca.pem());
    let sds = write(d, "cas.yaml", &validation_secret("cas", &ca_path, None));
    let (front, admin) = (free_addr(ip(48, 7)), free_addr(ip(48, 7)));
    let hc = "    health_checks:\n    - timeout: 1s\n      interval: 0.2s\n      no_traffic_interval: 0.2s\n      unhealthy_threshold: 1\n      healthy_threshold: 1\n      tcp_health_check: {}\n";
    let cluster = tls_cluster(up, &sds_validation(&sds))
        .replace("    transport_socket:\n", &format!("{hc}    transport_socket:\n"));
    let proxy = proxy(front, admin, cluster).await;
    let flags = || async move {
        let line = format!("up::{up}::health_flags::");
        let text =
            support::client().get(format!("http://{admin}/clusters")).send().await.unwrap().text().await.unwrap();
        text.lines().find_map(|l| l.strip_prefix(&line).map(str::to_string)).unwrap_or_default()
    };
    let failed = eventually(LIMIT, || async { flags().await == "/failed_active_hc" });
    assert!(failed.await, "an upstream of an untrusted CA passed its check: {}\n{}", flags().await, proxy.log());
    replace(&ca_path, &new_ca.pem());
    let healthy = eventually(LIMIT, || async { flags().await == "healthy" });
    assert!(healthy.await, "the check never used the new CA: {}\n{}", flags().await, proxy.log());
}

/// Lists bundled in an SDS secret's `trusted_ca` file are checked, and
/// follow the file (Envoy reads a CA file's CRLs too).
#[tokio::test]
async fn lists_bundled_in_an_sds_trusted_ca_apply_to_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = ca("test CA");
    let (server, other) = (leaf(&root, "backend.internal", true), leaf(&root, "other.internal", true));
    let up = upstream(SocketAddr::new(ip(48, 9), 0), &server);
    let ca_path = write(d, "ca.pem", &format!("{}{}", root.pem(), crl(&root, &server.cert)));
    let sds = write(d, "cas.yaml", &validation_secret("cas", &ca_path, None));
    let (front, admin) = (free_addr(ip(48, 9)), free_addr(ip(48, 9)));
    let proxy = proxy(front, admin, tls_cluster(up, &sds_validation(&sds))).await;

    let (status, body) = get(front).await;
    assert_eq!(status, 503, "a revoked upstream was used: {body}\n{}", proxy.log());
    assert!(support::stat(admin, "cluster.up.ssl.fail_verify_error").await >= 1);

    replace(&ca_path, &format!("{}{}", root.pem(), crl(&root, &other.cert)));
    let accepted = eventually(LIMIT, || async { get(front).await.0 == 200 });
    assert!(accepted.await, "the new bundle never applied:\n{}", proxy.log());
}
