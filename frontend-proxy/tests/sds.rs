//! SDS from files: a listener serves the certificate an SDS file
//! (`path_config_source`) names, and when the files are replaced — an
//! atomic rename, a Kubernetes secret mount swapping its `..data` symlink
//! — new handshakes get the new certificate without a restart, while a
//! connection already open goes on. A broken update is refused (logged)
//! and the previous certificate stays. Client CAs from SDS
//! (`validation_context_sds_secret_config`) rotate the same way; secrets
//! from `static_resources.secrets` are found by name; what cannot be
//! served is a configuration error with its YAML path. Real certificates
//! (rcgen), real OpenSSL clients, real files, the real proxy binary.
//! Addresses: 127.0.47.x.

#[allow(unused_imports)]
mod support;

use boring::pkey::PKey;
use boring::ssl::{SslConnector, SslMethod, SslStream, SslVerifyMode};
use boring::x509::X509;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::proxy::ProxyProcess;
use support::{eventually, free_addr, ip, yaml, Backend, LIMIT};

/// A certificate and its key (PEM).
#[derive(Clone)]
struct Pair {
    cert: String,
    key: String,
}

/// A self-signed server certificate for `name`.
fn server_cert(name: &str) -> Pair {
    let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    Pair { cert: c.cert.pem(), key: c.signing_key.serialize_pem() }
}

/// A CA (its PEM) and a client certificate it signed.
fn ca_and_client(ca_name: &str) -> (String, Pair) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, ca_name);
    let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["client.test".to_string()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca).unwrap();
    (ca.pem(), Pair { cert: cert.pem(), key: key.serialize_pem() })
}

/// Writes `content` to `path` as certificate tooling does: a new file
/// renamed over the old one.
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Writes `pair` as `<stem>.pem` and `<stem>.key` in `dir`.
fn write_pair(dir: &Path, stem: &str, pair: &Pair) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
    replace(&cert, &pair.cert);
    replace(&key, &pair.key);
    (cert, key)
}

/// An SDS file holding the certificate secret `name`.
fn certificate_secret(name: &str, cert: &Path, key: &Path) -> String {
    format!(
        r#"resources:
- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: {name}
  tls_certificate:
    certificate_chain: {{ filename: "{}" }}
    private_key: {{ filename: "{}" }}
"#,
        cert.display(),
        key.display()
    )
}

/// An SDS file holding the validation context secret `name`.
fn validation_secret(name: &str, ca: &Path) -> String {
    format!(
        r#"resources:
- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: {name}
  validation_context:
    trusted_ca: {{ filename: "{}" }}
"#,
        ca.display()
    )
}

/// A TLS listener whose `DownstreamTlsContext` is `context` (indented
/// under `typed_config`).
fn listener(addr: SocketAddr, hcm: &str, context: &str) -> String {
    format!(
        r#"
  - name: sds
    address:
      socket_address: {{ address: {ip}, port_value: {port} }}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
{context}
      filters:{hcm}"#,
        ip = addr.ip(),
        port = addr.port()
    )
}

/// `common_tls_context` with the certificate from the SDS file `path`.
fn sds_context(path: &Path, extra: &str) -> String {
    format!(
        "          common_tls_context:\n            tls_certificate_sds_secret_configs:\n            - name: server\n              sds_config:\n                path_config_source: {{ path: \"{}\" }}\n{extra}",
        path.display()
    )
}

/// A bootstrap with `listener` and one cluster, `backend`.
fn bootstrap(listener: String, backend: &Backend) -> String {
    yaml::bootstrap(
        &[listener],
        &[yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], "")],
    )
}

fn hcm() -> String {
    yaml::hcm("sds", "", &yaml::routes(&[("/", "cluster: backend")]))
}

/// A TLS connection to `addr` with `client`'s certificate, if any.
fn connect(addr: SocketAddr, client: Option<&Pair>) -> Result<SslStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(LIMIT)).unwrap();
    let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
    connector.set_verify(SslVerifyMode::NONE);
    if let Some(c) = client {
        connector.set_certificate(&X509::from_pem(c.cert.as_bytes()).unwrap()).unwrap();
        connector.set_private_key(&PKey::private_key_from_pem(c.key.as_bytes()).unwrap()).unwrap();
    }
    let ssl = connector.build().configure().unwrap().into_ssl("localhost").unwrap();
    ssl.connect(tcp).map_err(|e| e.to_string())
}

/// The DNS name in the certificate a new connection to `addr` is served.
async fn served(addr: SocketAddr) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let tls = connect(addr, None)?;
        let cert = tls.ssl().peer_certificate().ok_or("no certificate")?;
        let names = cert.subject_alt_names().ok_or("no names")?;
        names.iter().find_map(|n| n.dnsname().map(str::to_string)).ok_or_else(|| "no DNS name".to_string())
    })
    .await
    .unwrap()
}

/// A keep-alive `GET /` on `tls`: the status line.
fn request(tls: &mut SslStream<TcpStream>) -> Result<String, String> {
    tls.write_all(b"GET / HTTP/1.1\r\nhost: any\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let n = tls.read(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    text.lines().next().filter(|l| !l.is_empty()).map(str::to_string).ok_or_else(|| "no response".to_string())
}

/// `GET /` on a new connection with `client`'s certificate: the status
/// line, or why there was none.
async fn get(addr: SocketAddr, client: Option<Pair>) -> Result<String, String> {
    tokio::task::spawn_blocking(move || request(&mut connect(addr, client.as_ref())?)).await.unwrap()
}

/// Waits until new connections are served the certificate for `name`.
async fn until_served(addr: SocketAddr, name: &str, proxy: &ProxyProcess) {
    let seen = eventually(LIMIT, || async { served(addr).await.as_deref() == Ok(name) });
    assert!(seen.await, "never served {name} (now {:?}):\n{}", served(addr).await, proxy.log());
}

/// How many updates the proxy rejected so far.
fn rejections(proxy: &ProxyProcess) -> usize {
    proxy.log().matches("SDS secret update rejected").count()
}

async fn until_rejected(proxy: &ProxyProcess, count: usize) {
    let seen = eventually(LIMIT, || async { rejections(proxy) >= count });
    assert!(seen.await, "the broken update was not rejected:\n{}", proxy.log());
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_connections_and_a_broken_one_is_refused() {
    let backend = Backend::start("b", SocketAddr::new(ip(47, 1), 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (server_cert("a.test"), server_cert("b.test"));
    let (a_cert, a_key) = write_pair(dir.path(), "a", &a);
    let sds = dir.path().join("sds.yaml");
    replace(&sds, &certificate_secret("server", &a_cert, &a_key));
    let (addr, admin) = (free_addr(ip(47, 1)), free_addr(ip(47, 1)));
    let cfg = format!("{}{}", yaml::admin(admin), bootstrap(listener(addr, &hcm(), &sds_context(&sds, "")), &backend));
    let proxy = ProxyProcess::start(&cfg, addr).await;
    assert_eq!(served(addr).await.as_deref(), Ok("a.test"));
    let stat = |name: &str| {
        let name = format!("sds.server.{name}");
        async move { support::stat(admin, &name).await }
    };
    assert_eq!((stat("update_success").await, stat("update_rejected").await), (1, 0), "the first read counts");
    let mut open = tokio::task::spawn_blocking(move || connect(addr, None).unwrap()).await.unwrap();

    // New files, then the SDS file renamed over the old one.
    let (b_cert, b_key) = write_pair(dir.path(), "b", &b);
    replace(&sds, &certificate_secret("server", &b_cert, &b_key));
    until_served(addr, "b.test", &proxy).await;
    // The connection made before goes on, with the certificate it had.
    let (status, name) = tokio::task::spawn_blocking(move || {
        let status = request(&mut open);
        let cert = open.ssl().peer_certificate().unwrap();
        (status, cert.subject_alt_names().unwrap().iter().find_map(|n| n.dnsname().map(str::to_string)))
    })
    .await
    .unwrap();
    assert_eq!(status.as_deref(), Ok("HTTP/1.1 200 OK"), "{}", proxy.log());
    assert_eq!(name.as_deref(), Some("a.test"));
    assert_eq!(get(addr, None).await.as_deref(), Ok("HTTP/1.1 200 OK"));

    // A secret without its key, then a key that is not the certificate's:
    // each refused, and B stays.
    replace(
        &sds,
        "resources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  name: server\n  tls_certificate: { certificate_chain: { filename: /x.pem } }\n",
    );
    until_rejected(&proxy, 1).await;
    assert_eq!(served(addr).await.as_deref(), Ok("b.test"), "{}", proxy.log());
    replace(&sds, &certificate_secret("server", &a_cert, &b_key));
    until_rejected(&proxy, 2).await;
    assert_eq!(served(addr).await.as_deref(), Ok("b.test"), "{}", proxy.log());
    assert!(proxy.log().contains("do not match"), "{}", proxy.log());
    assert_eq!((stat("update_success").await, stat("update_rejected").await), (2, 2));

    // The certificate files themselves rewritten (the SDS file unchanged):
    // certbot's renewal, in place.
    replace(&sds, &certificate_secret("server", &b_cert, &b_key));
    let c = server_cert("c.test");
    replace(&b_key, &c.key);
    replace(&b_cert, &c.cert);
    until_served(addr, "c.test", &proxy).await;
}

/// What `openssl s_client` saw of one request on a new connection.
struct Seen {
    /// The session offered was resumed.
    resumed: bool,
    /// The proxy answered 200.
    answered: bool,
}

/// One request on a new connection by `openssl s_client` at `version`
/// (with the client certificate `client`, `(cert file, key file)`),
/// offering the session in `sess_in`, saving the one it is handed to
/// `sess_out`.
fn s_client(
    addr: SocketAddr,
    version: &str,
    client: Option<(&Path, &Path)>,
    sess_in: Option<&Path>,
    sess_out: &Path,
) -> Seen {
    use std::process::Stdio;
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string(), "-servername", "localhost", version, "-ign_eof"]);
    cmd.arg("-sess_out").arg(sess_out);
    if let Some(s) = sess_in {
        cmd.arg("-sess_in").arg(s);
    }
    if let Some((cert, key)) = client {
        cmd.arg("-cert").arg(cert).arg("-key").arg(key);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("openssl");
    // Reading the answer takes in the TLS 1.3 tickets sent after the handshake.
    let _ = child.stdin.take().unwrap().write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    Seen { resumed: text.contains("\nReused, "), answered: text.contains("HTTP/1.1 200") }
}

/// A rotation builds no new TLS context: a session (ticket or cached)
/// from before it resumes after it, as one from before any change would.
// s_client blocks its thread: the backend answers from the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_from_before_a_rotation_resume_after_it() {
    let backend = Backend::start("b", SocketAddr::new(ip(47, 6), 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let (a_cert, a_key) = write_pair(dir.path(), "a", &server_cert("a.test"));
    let sds = dir.path().join("sds.yaml");
    replace(&sds, &certificate_secret("server", &a_cert, &a_key));
    let addr = free_addr(ip(47, 6));
    let proxy = ProxyProcess::start(&bootstrap(listener(addr, &hcm(), &sds_context(&sds, "")), &backend), addr).await;
    let versions = ["-tls1_2", "-tls1_3"];
    let sessions: Vec<PathBuf> = versions.iter().map(|v| dir.path().join(format!("{v}.sess"))).collect();
    for (v, sess) in versions.iter().zip(&sessions) {
        let (version, sess) = (v.to_string(), sess.clone());
        let seen = tokio::task::spawn_blocking(move || s_client(addr, &version, None, None, &sess)).await.unwrap();
        assert!(seen.answered && !seen.resumed, "a first connection resumed, or was not answered");
    }

    let (b_cert, b_key) = write_pair(dir.path(), "b", &server_cert("b.test"));
    replace(&sds, &certificate_secret("server", &b_cert, &b_key));
    until_served(addr, "b.test", &proxy).await;
    for (v, sess) in versions.iter().zip(&sessions) {
        let (version, sess, out) = (v.to_string(), sess.clone(), dir.path().join("again.sess"));
        let seen =
            tokio::task::spawn_blocking(move || s_client(addr, &version, None, Some(&sess), &out)).await.unwrap();
        assert!(
            seen.answered && seen.resumed,
            "a {v} session from before the rotation was not resumed:\n{}",
            proxy.log()
        );
    }
}

/// A Kubernetes secret volume: the files are symlinks through `..data`,
/// itself a symlink to a timestamped directory, and an update swaps
/// `..data` to a new directory with one rename (`watched_directory` is
/// the mount, as Envoy's documentation advises).
#[tokio::test]
async fn a_kubernetes_secret_mount_swap_rotates_the_certificate() {
    use std::os::unix::fs::symlink;
    let backend = Backend::start("b", SocketAddr::new(ip(47, 2), 0)).await;
    let mount = tempfile::tempdir().unwrap();
    let m = mount.path();
    let version = |stem: &str, pair: &Pair| {
        let d = m.join(format!("..{stem}"));
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("tls.crt"), &pair.cert).unwrap();
        std::fs::write(d.join("tls.key"), &pair.key).unwrap();
        std::fs::write(d.join("sds.yaml"), certificate_secret("server", &m.join("tls.crt"), &m.join("tls.key")))
            .unwrap();
    };
    version("2026_01", &server_cert("a.test"));
    symlink("..2026_01", m.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key", "sds.yaml"] {
        symlink(format!("..data/{f}"), m.join(f)).unwrap();
    }
    let addr = free_addr(ip(47, 2));
    let context = format!(
        "          common_tls_context:\n            tls_certificate_sds_secret_configs:\n            - name: server\n              sds_config:\n                path_config_source:\n                  path: \"{}\"\n                  watched_directory: {{ path: \"{}\" }}\n                resource_api_version: V3\n",
        m.join("sds.yaml").display(),
        m.display()
    );
    let mut proxy = ProxyProcess::start(&bootstrap(listener(addr, &hcm(), &context), &backend), addr).await;
    assert_eq!(served(addr).await.as_deref(), Ok("a.test"));

    version("2026_02", &server_cert("b.test"));
    symlink("..2026_02", m.join("..data_tmp")).unwrap();
    std::fs::rename(m.join("..data_tmp"), m.join("..data")).unwrap();
    std::fs::remove_dir_all(m.join("..2026_01")).unwrap();
    until_served(addr, "b.test", &proxy).await;
    assert_eq!(get(addr, None).await.as_deref(), Ok("HTTP/1.1 200 OK"));
    assert_eq!(rejections(&proxy), 0, "{}", proxy.log());
    // The watch ends with the drain: the proxy exits as it would without it.
    proxy.signal("TERM");
    let exited = proxy.wait_exit(LIMIT);
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}:\n{}", proxy.log());
}

/// Client certificates are verified against the CAs an SDS file names;
/// when it changes, a client of the new CA is let in and one of the old
/// CA is not.
#[tokio::test]
async fn client_cas_from_sds_rotate() {
    let backend = Backend::start("b", SocketAddr::new(ip(47, 3), 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca1, client1) = ca_and_client("CA one");
    let (ca2, client2) = ca_and_client("CA two");
    let ca = dir.path().join("ca.pem");
    replace(&ca, &ca1);
    let server = server_cert("a.test");
    let (cert, key) = write_pair(dir.path(), "server", &server);
    let validation = dir.path().join("validation.yaml");
    replace(&validation, &validation_secret("clients", &ca));
    let sds = dir.path().join("sds.yaml");
    replace(&sds, &certificate_secret("server", &cert, &key));
    let addr = free_addr(ip(47, 3));
    let context = format!(
        "          require_client_certificate: true\n{}",
        sds_context(
            &sds,
            &format!(
                "            validation_context_sds_secret_config:\n              name: clients\n              sds_config: {{ path: \"{}\" }}\n",
                validation.display()
            )
        )
    );
    let proxy = ProxyProcess::start(&bootstrap(listener(addr, &hcm(), &context), &backend), addr).await;
    let ok = "HTTP/1.1 200 OK";
    assert_eq!(get(addr, Some(client1.clone())).await.as_deref(), Ok(ok), "{}", proxy.log());
    assert!(get(addr, Some(client2.clone())).await.is_err(), "a client of another CA was let in");
    assert!(get(addr, None).await.is_err(), "a client without a certificate was let in");

    // The CA file replaced (the SDS file names the same path).
    replace(&ca, &ca2);
    let accepted = eventually(LIMIT, || {
        let c = client2.clone();
        async move { get(addr, Some(c)).await.as_deref() == Ok(ok) }
    });
    assert!(accepted.await, "the new CA's client was never accepted:\n{}", proxy.log());
    assert!(get(addr, Some(client1)).await.is_err(), "the old CA's client is still let in");
}

/// A client verified under the old CAs cannot resume its session once
/// they changed (it would skip verification against the new ones): it
/// gets a full handshake, and is refused. While the CAs stay, it resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_verified_under_replaced_client_cas_do_not_resume() {
    let backend = Backend::start("b", SocketAddr::new(ip(47, 7), 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let (ca1, client1) = ca_and_client("CA one");
    let (ca2, _) = ca_and_client("CA two");
    let (client_cert, client_key) = write_pair(&d, "client", &client1);
    let ca = d.join("ca.pem");
    replace(&ca, &ca1);
    let validation = d.join("validation.yaml");
    replace(&validation, &validation_secret("clients", &ca));
    let (cert, key) = write_pair(&d, "server", &server_cert("a.test"));
    let sds = d.join("sds.yaml");
    replace(&sds, &certificate_secret("server", &cert, &key));
    let addr = free_addr(ip(47, 7));
    let validation_ref = format!(
        "            validation_context_sds_secret_config:\n              name: clients\n              sds_config: {{ path: \"{}\" }}\n",
        validation.display()
    );
    let context = format!("          require_client_certificate: true\n{}", sds_context(&sds, &validation_ref));
    let proxy = ProxyProcess::start(&bootstrap(listener(addr, &hcm(), &context), &backend), addr).await;
    let run = |version: &'static str, sess_in: Option<&'static str>, sess_out: &'static str| {
        let (d, c, k) = (d.clone(), client_cert.clone(), client_key.clone());
        tokio::task::spawn_blocking(move || {
            s_client(addr, version, Some((&c, &k)), sess_in.map(|s| d.join(s)).as_deref(), &d.join(sess_out))
        })
    };
    for (version, first, second) in [("-tls1_2", "12a", "12b"), ("-tls1_3", "13a", "13b")] {
        let seen = run(version, None, first).await.unwrap();
        assert!(seen.answered && !seen.resumed, "{version}: the client was not served:\n{}", proxy.log());
        let seen = run(version, Some(first), second).await.unwrap();
        assert!(seen.answered && seen.resumed, "{version}: the session did not resume while the CAs stayed");
    }

    replace(&ca, &ca2);
    let rotated = eventually(LIMIT, || async { proxy.log().contains("SDS secret updated") });
    assert!(rotated.await, "the CA was never rotated:\n{}", proxy.log());
    for (version, session) in [("-tls1_2", "12b"), ("-tls1_3", "13b")] {
        let seen = run(version, Some(session), "after").await.unwrap();
        assert!(!seen.resumed, "{version}: a session verified under the old CA resumed");
        assert!(!seen.answered, "{version}: the old CA's client was served");
    }
}

/// `static_resources.secrets`, named without `sds_config`: a certificate
/// and a validation context.
#[tokio::test]
async fn static_secrets_are_found_by_name() {
    let backend = Backend::start("b", SocketAddr::new(ip(47, 4), 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_pair(dir.path(), "server", &server_cert("static.test"));
    let (ca_pem, client) = ca_and_client("static CA");
    let ca = dir.path().join("ca.pem");
    replace(&ca, &ca_pem);
    let addr = free_addr(ip(47, 4));
    let context = "          common_tls_context:\n            tls_certificate_sds_secret_configs:\n            - name: server\n            validation_context_sds_secret_config: { name: clients }\n";
    let secrets = format!(
        "  secrets:\n  - name: server\n    tls_certificate:\n      certificate_chain: {{ filename: \"{}\" }}\n      private_key: {{ filename: \"{}\" }}\n  - name: clients\n    validation_context:\n      trusted_ca: {{ filename: \"{}\" }}\n",
        cert.display(),
        key.display(),
        ca.display()
    );
    let cfg = bootstrap(listener(addr, &hcm(), context), &backend).replacen(
        "static_resources:\n",
        &format!("static_resources:\n{secrets}"),
        1,
    );
    let proxy = ProxyProcess::start(&cfg, addr).await;
    assert_eq!(served(addr).await.as_deref(), Ok("static.test"), "{}", proxy.log());
    assert_eq!(get(addr, Some(client)).await.as_deref(), Ok("HTTP/1.1 200 OK"));
    let (_, stranger) = ca_and_client("another CA");
    assert!(get(addr, Some(stranger)).await.is_err(), "a client of an unknown CA was let in");
}

/// `--mode validate` on `cfg`: its exit code and what it printed on stderr.
fn validate(cfg: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, cfg).unwrap();
    let out = Command::new(support::proxy::binary()).args(["--mode", "validate", "-c"]).arg(&path).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[tokio::test]
async fn what_cannot_be_served_is_a_configuration_error_with_its_path() {
    let backend = Backend::start("b", SocketAddr::new(ip(47, 5), 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_pair(dir.path(), "server", &server_cert("a.test"));
    let sds = dir.path().join("sds.yaml");
    replace(&sds, &certificate_secret("server", &cert, &key));
    let ca = dir.path().join("ca.pem");
    replace(&ca, &ca_and_client("CA").0);
    let validation = dir.path().join("validation.yaml");
    replace(&validation, &validation_secret("server", &ca));
    let broken = dir.path().join("broken.yaml");
    replace(&broken, &certificate_secret("server", &dir.path().join("missing.pem"), &key));
    let addr = SocketAddr::new(ip(47, 5), 8443);
    let at = "static_resources.listeners[0].filter_chains[0].transport_socket.typed_config.common_tls_context";
    let sds_ref = |source: &str| {
        format!(
            "          common_tls_context:\n            tls_certificate_sds_secret_configs:\n            - name: server\n              sds_config: {source}\n"
        )
    };
    let cases: Vec<(String, String)> = vec![
        (
            sds_ref("{ path_config_source: { path: /nonexistent/sds.yaml } }"),
            format!("{at}.tls_certificate_sds_secret_configs[0].sds_config.path_config_source.path: /nonexistent/sds.yaml: cannot read the SDS file"),
        ),
        (
            sds_ref(&format!("{{ path: \"{}\" }}", validation.display())),
            format!("{at}.tls_certificate_sds_secret_configs[0].sds_config.path: {}: secret \"server\" holds no tls_certificate", validation.display()),
        ),
        (
            sds_ref("{ api_config_source: { api_type: GRPC, grpc_services: [{ envoy_grpc: { cluster_name: sds } }] } }"),
            format!("{at}.tls_certificate_sds_secret_configs[0].sds_config.api_config_source: SDS from a control plane is not supported yet"),
        ),
        (sds_ref("{ ads: {} }"), format!("{at}.tls_certificate_sds_secret_configs[0].sds_config.ads: SDS from a control plane")),
        (
            "          common_tls_context:\n            tls_certificate_sds_secret_configs: [{ name: nowhere }]\n".to_string(),
            format!("{at}.tls_certificate_sds_secret_configs[0].name: unknown secret \"nowhere\""),
        ),
        (
            format!(
                "          common_tls_context:\n            tls_certificates: [{{ certificate_chain: {{ filename: \"{}\" }}, private_key: {{ filename: \"{}\" }} }}]\n            tls_certificate_sds_secret_configs: [{{ name: server, sds_config: {{ path: \"{}\" }} }}]\n",
                cert.display(),
                key.display(),
                sds.display()
            ),
            format!("{at}.tls_certificate_sds_secret_configs: only one of `tls_certificates` and `tls_certificate_sds_secret_configs`"),
        ),
        (
            format!(
                "{}            validation_context: {{ trusted_ca: {{ filename: \"{}\" }} }}\n            validation_context_sds_secret_config: {{ name: v, sds_config: {{ path: \"{}\" }} }}\n",
                sds_ref(&format!("{{ path: \"{}\" }}", sds.display())),
                ca.display(),
                validation.display()
            ),
            format!("{at}.validation_context_sds_secret_config: only one of `validation_context` and `validation_context_sds_secret_config`"),
        ),
        (
            sds_ref(&format!("{{ path: \"{}\" }}", broken.display())),
            format!("{at}.tls_certificate_sds_secret_configs[0].sds_config: secret \"server\": cannot read {}", dir.path().join("missing.pem").display()),
        ),
    ];
    for (context, expected) in cases {
        let (code, stderr) = validate(&bootstrap(listener(addr, &hcm(), &context), &backend));
        assert_eq!(code, Some(1), "{context}\n{stderr}");
        assert!(stderr.contains(&expected), "expected {expected:?} in:\n{stderr}");
    }

    // Clusters: one client certificate, and one source of each kind.
    let cluster_at = "static_resources.clusters[0].transport_socket.typed_config.common_tls_context";
    let upstream = |common: &str| {
        yaml::cluster(
            "backend",
            "STATIC",
            &[(backend.addr.ip().to_string(), backend.addr.port())],
            &format!(
                "    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n        common_tls_context:\n{common}"
            ),
        )
    };
    let client_ref = format!("{{ name: server, sds_config: {{ path: \"{}\" }} }}", sds.display());
    let crl_broken = dir.path().join("crl-broken.pem");
    replace(&crl_broken, "not a list");
    let broken_validation = dir.path().join("validation-broken.yaml");
    replace(
        &broken_validation,
        &format!("{}    crl: {{ filename: \"{}\" }}\n", validation_secret("cas", &ca), crl_broken.display()),
    );
    let cluster_cases: Vec<(String, String)> = vec![
        (
            format!("          tls_certificate_sds_secret_configs: [{client_ref}, {client_ref}]\n"),
            format!("{cluster_at}.tls_certificate_sds_secret_configs: at most one client certificate may be given to an upstream"),
        ),
        (
            format!(
                "          tls_certificates: [{{ certificate_chain: {{ filename: \"{}\" }}, private_key: {{ filename: \"{}\" }} }}]\n          tls_certificate_sds_secret_configs: [{client_ref}]\n",
                cert.display(),
                key.display()
            ),
            format!("{cluster_at}.tls_certificate_sds_secret_configs: only one of `tls_certificates` and `tls_certificate_sds_secret_configs`"),
        ),
        (
            format!(
                "          validation_context: {{ trusted_ca: {{ filename: \"{}\" }} }}\n          validation_context_sds_secret_config: {{ name: server, sds_config: {{ path: \"{}\" }} }}\n",
                ca.display(),
                validation.display()
            ),
            format!("{cluster_at}.validation_context_sds_secret_config: only one of `validation_context` and `validation_context_sds_secret_config`"),
        ),
        (
            format!("          validation_context_sds_secret_config: {{ name: server, sds_config: {{ path: \"{}\" }} }}\n", sds.display()),
            format!("{cluster_at}.validation_context_sds_secret_config.sds_config.path: {}: secret \"server\" holds no validation_context", sds.display()),
        ),
        (
            format!("          validation_context_sds_secret_config: {{ name: cas, sds_config: {{ path: \"{}\" }} }}\n", broken_validation.display()),
            format!("{cluster_at}.validation_context_sds_secret_config.sds_config.path: {}: resources[0].validation_context.crl.filename: ", broken_validation.display()),
        ),
    ];
    for (common, expected) in cluster_cases {
        let cfg = yaml::bootstrap(&[listener(addr, &hcm(), &sds_context(&sds, ""))], &[upstream(&common)]);
        let (code, stderr) = validate(&cfg);
        assert_eq!(code, Some(1), "{common}\n{stderr}");
        assert!(stderr.contains(&expected), "expected {expected:?} in:\n{stderr}");
    }
    // And what the secrets of a listener or cluster may hold.
    let named = dir.path().join("named.yaml");
    replace(
        &named,
        &format!(
            "{}    match_typed_subject_alt_names: [{{ san_type: DNS, matcher: {{ exact: a }} }}]\n",
            validation_secret("cas", &ca)
        ),
    );
    let cfg = yaml::bootstrap(
        &[listener(addr, &hcm(), &sds_context(&sds, ""))],
        &[upstream(&format!(
            "          validation_context_sds_secret_config: {{ name: cas, sds_config: {{ path: \"{}\" }} }}\n",
            named.display()
        ))],
    );
    let (code, stderr) = validate(&cfg);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("resources[0].validation_context.match_typed_subject_alt_names: not supported in a secret"),
        "{stderr}"
    );
}
