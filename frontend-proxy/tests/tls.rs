//! TLS listeners and the clients that never finish a handshake: one that
//! hangs up right after its ClientHello (every load generator at the end
//! of a run, every port scanner), one that sends half a ClientHello, one
//! that speaks plaintext HTTP to the TLS port. Each is counted in Envoy's
//! `listener.<addr>.ssl.connection_error` and logged at debug, never at
//! error; completed handshakes count in `ssl.handshake`, a client that
//! chooses h2 and hangs up before its preface included (logged at debug
//! too). `tls_params` bound what a handshake may negotiate, on listeners
//! and towards clusters. Addresses: 127.0.12.x.

#[allow(unused_imports)]
mod support;

use pingora_core::tls::ssl::{HandshakeError, SslConnector, SslMethod, SslVerifyMode, SslVersion};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::proxy::ProxyProcess;
use support::{eventually, free_addr, ip, send, yaml, Backend};

/// The proxy binary at `--log-level debug` (the test reads what it logs at
/// every level), stopped on drop.
struct DebugProxy {
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl DebugProxy {
    async fn start(config: &str, ready: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("envoy.yaml");
        std::fs::write(&path, config).unwrap();
        let log = dir.path().join("proxy.log");
        let child = Command::new(support::proxy::binary())
            .arg("-c")
            .arg(&path)
            .args(["--concurrency", "2", "--log-level", "debug"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let p = Self { child, log, _dir: dir };
        let up = eventually(Duration::from_secs(15), || async { tokio::net::TcpStream::connect(ready).await.is_ok() });
        assert!(up.await, "proxy did not listen:\n{}", p.log());
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DebugProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_cert(dir: &Path) -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    (c.to_string_lossy().into_owned(), k.to_string_lossy().into_owned())
}

/// A connection the TLS client writes to but never reads from, so its
/// handshake stops after the ClientHello however fast the server answers.
#[derive(Debug)]
struct SendOnly(std::net::TcpStream);

impl std::io::Read for SendOnly {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::WouldBlock.into())
    }
}

impl std::io::Write for SendOnly {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.write(data)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Sends a real ClientHello and hangs up before reading the server's answer.
fn hang_up_after_client_hello(addr: SocketAddr) {
    let tcp = SendOnly(std::net::TcpStream::connect(addr).unwrap());
    let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
    connector.set_verify(SslVerifyMode::NONE);
    let ssl = connector.build().configure().unwrap().into_ssl("localhost").unwrap();
    match ssl.connect(tcp) {
        // The ClientHello is out; the client would wait for the ServerHello.
        Err(HandshakeError::WouldBlock(mid)) => drop(mid),
        other => panic!("expected a handshake in progress: {:?}", other.map(|_| ())),
    }
}

/// Completes a handshake choosing h2 by ALPN, and hangs up before the
/// HTTP/2 preface.
fn h2_then_hang_up(addr: SocketAddr) {
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
    connector.set_verify(SslVerifyMode::NONE);
    connector.set_alpn_protos(b"\x02h2").unwrap();
    let ssl = connector.build().configure().unwrap().into_ssl("localhost").unwrap();
    let tls = ssl.connect(tcp).map_err(|e| e.to_string()).unwrap();
    assert_eq!(tls.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
}

/// Sends the first bytes of a ClientHello (a record header and a little
/// more) and closes.
fn half_a_client_hello(addr: SocketAddr) {
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]).unwrap();
}

/// A plaintext HTTP request on the TLS port.
fn plaintext_on_tls_port(addr: SocketAddr) {
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = std::io::Read::read(&mut tcp, &mut [0u8; 512]);
}

#[tokio::test]
async fn clients_hanging_up_mid_handshake_are_counted_and_logged_at_debug() {
    let backend = Backend::start("b", SocketAddr::new(ip(12, 1), 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path());
    let secure = free_addr(ip(12, 1));
    let admin = free_addr(ip(12, 1));
    let routes = r#"
            - name: backend
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: app }"#;
    let cfg = format!(
        "{}{}",
        yaml::admin(admin),
        yaml::bootstrap(
            &[yaml::tls_listener("secure", secure, &yaml::hcm("ingress", "", routes), &cert, &key)],
            &[yaml::cluster("app", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], "")],
        )
    );
    let proxy = DebugProxy::start(&cfg, secure).await;
    let scope = format!("listener.{}", secure.to_string().replace(':', "_"));

    // Two completed handshakes: HTTP/2 and HTTP/1.1 by ALPN.
    let h2 = support::client().get(format!("https://{secure}/")).send().await.unwrap();
    assert_eq!((h2.status().as_u16(), h2.version()), (200, reqwest::Version::HTTP_2), "{}", proxy.log());
    let h1 = reqwest::Client::builder().no_proxy().http1_only().danger_accept_invalid_certs(true).build().unwrap();
    let r = h1.get(format!("https://{secure}/")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, reqwest::Version::HTTP_11));

    // The start-up wait's probes (connect, close) were already such clients.
    let errors_before = support::stat(admin, &format!("{scope}.ssl.connection_error")).await;
    let debug_before = failed_handshake_lines(&proxy.log());
    assert_eq!(errors_before, debug_before as u64, "{}", proxy.log());
    let clients: [fn(SocketAddr); 3] = [hang_up_after_client_hello, half_a_client_hello, plaintext_on_tls_port];
    for (i, client) in clients.into_iter().enumerate() {
        tokio::task::spawn_blocking(move || client(secure)).await.unwrap();
        let counted = eventually(Duration::from_secs(5), || async {
            support::stat(admin, &format!("{scope}.ssl.connection_error")).await == errors_before + i as u64 + 1
        });
        assert!(counted.await, "client {i} counted\n{}", proxy.log());
    }
    assert_eq!(support::stat(admin, &format!("{scope}.ssl.handshake")).await, 2);
    tokio::task::spawn_blocking(move || h2_then_hang_up(secure)).await.unwrap();
    let counted = eventually(Duration::from_secs(5), || async {
        support::stat(admin, &format!("{scope}.ssl.handshake")).await == 3
    });
    assert!(counted.await, "a completed handshake, whatever follows");
    // The proxy still serves.
    let r = support::client().get(format!("https://{secure}/")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let prometheus =
        support::client().get(format!("http://{admin}/stats/prometheus")).send().await.unwrap().text().await.unwrap();
    let label = format!("envoy_listener_address=\"{}\"", secure.to_string().replace(':', "_"));
    for (name, value) in
        [("envoy_listener_ssl_connection_error", errors_before + 3), ("envoy_listener_ssl_handshake", 4)]
    {
        let line = prometheus.lines().find(|l| l.starts_with(name) && l.contains(&label));
        assert_eq!(line.map(|l| l.rsplit(' ').next().unwrap_or_default()), Some(value.to_string().as_str()), "{name}");
    }

    let log = proxy.log();
    // Pingora's connector logs "failed to acquire reusable stream" at ERROR
    // when its idle-connection watcher still holds a pooled upstream
    // connection as a request takes it (a race inside pingora-core's
    // `reused_stream`; the request gets a new connection): not about clients.
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains(" WARN "))
        .filter(|l| !l.contains("failed to acquire reusable stream"))
        .collect();
    assert!(errors.is_empty(), "a client's ordinary behaviour logs nothing above debug: {errors:#?}");
    assert_eq!(failed_handshake_lines(&log), debug_before + 3, "one debug line per failed handshake\n{log}");
}

fn failed_handshake_lines(log: &str) -> usize {
    log.lines().filter(|l| l.contains("DEBUG") && l.contains("TLS handshake failed")).count()
}

/// A TLS listener with `tls_params` (flow mapping contents) under its common context.
fn tls_listener_with_params(name: &str, addr: SocketAddr, hcm: &str, cert: (&str, &str), params: &str) -> String {
    yaml::tls_listener(name, addr, hcm, cert.0, cert.1)
        .replace("\n      filters:", &format!("\n            tls_params: {{ {params} }}\n      filters:"))
}

/// Completes a handshake offering at most `max`; the version agreed, or why not.
fn handshake_version(addr: SocketAddr, max: Option<SslVersion>) -> Result<String, String> {
    let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
    connector.set_verify(SslVerifyMode::NONE);
    connector.set_max_proto_version(max).unwrap();
    let ssl = connector.build().configure().unwrap().into_ssl("localhost").unwrap();
    let tls = ssl.connect(tcp).map_err(|e| e.to_string())?;
    Ok(tls.ssl().version_str().to_string())
}

#[tokio::test]
async fn listener_tls_versions_are_bounded_by_tls_params() {
    let backend = Backend::start("b", SocketAddr::new(ip(12, 2), 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path());
    let hcm = yaml::hcm("secure", "", &yaml::routes(&[("/", "cluster: backend")]));
    let (only13, only12) = (free_addr(ip(12, 2)), free_addr(ip(12, 2)));
    let cfg = yaml::bootstrap(
        &[
            tls_listener_with_params("only13", only13, &hcm, (&cert, &key), "tls_minimum_protocol_version: TLSv1_3"),
            tls_listener_with_params(
                "only12",
                only12,
                &hcm,
                (&cert, &key),
                "tls_maximum_protocol_version: TLSv1_2, cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256, ECDHE-ECDSA-AES128-GCM-SHA256], ecdh_curves: [P-256]",
            ),
        ],
        &[yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], "")],
    );
    let proxy = ProxyProcess::start(&cfg, only12).await;

    let refused = handshake_version(only13, Some(SslVersion::TLS1_2));
    assert!(refused.is_err(), "a TLS 1.2 client got in past a TLSv1_3 minimum: {refused:?}");
    assert_eq!(handshake_version(only13, None).as_deref(), Ok("TLSv1.3"), "{}", proxy.log());
    assert_eq!(handshake_version(only12, None).as_deref(), Ok("TLSv1.2"), "{}", proxy.log());

    // The cipher list binds TLS 1.2: a client offering only another cipher is refused.
    let tcp = std::net::TcpStream::connect(only12).unwrap();
    let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
    connector.set_verify(SslVerifyMode::NONE);
    connector.set_cipher_list("ECDHE-RSA-AES256-GCM-SHA384").unwrap();
    let ssl = connector.build().configure().unwrap().into_ssl("localhost").unwrap();
    assert!(ssl.connect(tcp).is_err(), "a cipher outside cipher_suites was negotiated");
}

#[tokio::test]
async fn cluster_tls_minimum_refuses_an_upstream_that_only_speaks_less() {
    let backend = Backend::start("b", SocketAddr::new(ip(12, 3), 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path());
    // The proxy is its own TLS-1.2-only upstream: `tls12` terminates TLS
    // 1.2 in front of the plain backend.
    let tls12 = free_addr(ip(12, 3));
    let front = free_addr(ip(12, 3));
    let to_backend = yaml::hcm("tls12", "", &yaml::routes(&[("/", "cluster: backend")]));
    let front_hcm = yaml::hcm(
        "front",
        "",
        &yaml::routes(&[("/strict", "cluster: strict, prefix_rewrite: /"), ("/", "cluster: lenient")]),
    );
    let upstream_tls = |params: &str| {
        format!(
            r#"    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
          tls_params: {{ {params} }}
"#
        )
    };
    let ep = [(tls12.ip().to_string(), tls12.port())];
    let cfg = yaml::bootstrap(
        &[
            tls_listener_with_params(
                "tls12",
                tls12,
                &to_backend,
                (&cert, &key),
                "tls_maximum_protocol_version: TLSv1_2",
            ),
            yaml::listener("front", front, &front_hcm),
        ],
        &[
            yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], ""),
            yaml::cluster("strict", "STATIC", &ep, &upstream_tls("tls_minimum_protocol_version: TLSv1_3")),
            yaml::cluster("lenient", "STATIC", &ep, &upstream_tls("ecdh_curves: [P-256, X25519]")),
        ],
    );
    let proxy = ProxyProcess::start(&cfg, front).await;
    let c = support::client();

    let (status, _) = send(c.get(format!("http://{front}/lenient"))).await;
    assert_eq!(status, 200, "TLS 1.2 meets the default minimum:\n{}", proxy.log());
    let hits = backend.hits();
    let (status, body) = send(c.get(format!("http://{front}/strict"))).await;
    assert_eq!(status, 503, "{body}\n{}", proxy.log());
    assert!(body.contains("connection failure"), "{body}");
    assert_eq!(backend.hits(), hits, "no request may travel over TLS 1.2");
}

/// A TLS listener with `extra` (block YAML) in its `DownstreamTlsContext`.
fn tls_listener_with_sessions(name: &str, addr: SocketAddr, hcm: &str, cert: (&str, &str), extra: &str) -> String {
    yaml::tls_listener(name, addr, hcm, cert.0, cert.1)
        .replace("\n          common_tls_context:", &format!("\n{extra}\n          common_tls_context:"))
}

/// One request on a new connection by `openssl s_client` at `version`
/// (`-tls1_2`, `-tls1_3`), offering the session saved in `sess_in`, saving
/// the one the server hands out to `sess_out`. Whether the handshake
/// resumed the session offered.
fn s_client(addr: SocketAddr, version: &str, sess_in: Option<&Path>, sess_out: &Path) -> bool {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string(), "-servername", "localhost", version, "-ign_eof"]);
    cmd.arg("-sess_out").arg(sess_out);
    if let Some(s) = sess_in {
        cmd.arg("-sess_in").arg(s);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("openssl");
    // The proxy answers and closes; reading the answer takes in the
    // TLS 1.3 tickets that come after the handshake.
    child.stdin.take().unwrap().write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("HTTP/1.1 200"), "no answer through {addr}:\n{text}");
    if text.contains("\nReused, ") {
        true
    } else {
        assert!(text.contains("\nNew, "), "s_client did not say New or Reused:\n{text}");
        false
    }
}

/// Whether a second connection resumes the first one's session.
fn resumes(addr: SocketAddr, version: &str, dir: &Path) -> bool {
    resumes_across(addr, addr, version, dir)
}

/// Whether a connection to `second` resumes a session from `first`.
fn resumes_across(first: SocketAddr, second: SocketAddr, version: &str, dir: &Path) -> bool {
    let (a, b) = (dir.join("first.sess"), dir.join("second.sess"));
    assert!(!s_client(first, version, None, &a));
    s_client(second, version, Some(&a), &b)
}

// s_client blocks its thread: the backend answers from the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_session_resumption_follows_the_tls_context() {
    let backend = Backend::start("b", SocketAddr::new(ip(12, 4), 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path());
    let hcm = yaml::hcm("sessions", "", &yaml::routes(&[("/", "cluster: backend")]));
    let addrs: Vec<SocketAddr> = (0..7).map(|_| free_addr(ip(12, 4))).collect();
    // 80 bytes: a 16-byte name, a 32-byte HMAC secret, a 32-byte AES key.
    let ticket_key = format!("{{ inline_string: \"{}\" }}", "k".repeat(80));
    let other_key = format!("{{ inline_string: \"{}\" }}", "o".repeat(80));
    let settings = [
        ("defaults", String::new()),
        (
            "none",
            "          disable_stateless_session_resumption: true\n          disable_stateful_session_resumption: true"
                .to_string(),
        ),
        ("stateful", "          disable_stateless_session_resumption: true".to_string()),
        ("stateless", "          disable_stateful_session_resumption: true".to_string()),
        // Long enough that two s_client runs one after the other fit in it
        // on a loaded machine (1 s did not on CI); the test waits it out.
        ("short", "          session_timeout: 4s".to_string()),
        // Two listeners sharing a ticket key, and so each other's tickets
        // (each would make its own random key otherwise); keyed2 has
        // rotated to a new key: it seals with it and still opens tickets
        // under the old one, which keyed1 alone holds.
        (
            "keyed1",
            format!("          disable_stateful_session_resumption: true\n          session_ticket_keys: {{ keys: [{ticket_key}] }}"),
        ),
        (
            "keyed2",
            format!("          disable_stateful_session_resumption: true\n          session_ticket_keys: {{ keys: [{other_key}, {ticket_key}] }}"),
        ),
    ];
    let listeners: Vec<String> = settings
        .iter()
        .zip(&addrs)
        .map(|((name, extra), addr)| tls_listener_with_sessions(name, *addr, &hcm, (&cert, &key), extra))
        .collect();
    let cfg = yaml::bootstrap(
        &listeners,
        &[yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], "")],
    );
    let proxy = ProxyProcess::start(&cfg, addrs[6]).await;
    let d = dir.path();
    let [defaults, none, stateful, stateless, short, keyed1, keyed2] = addrs[..] else { unreachable!() };
    let log = || proxy.log();

    for v in ["-tls1_2", "-tls1_3"] {
        assert!(resumes(defaults, v, d), "{v}: sessions resume by default\n{}", log());
        assert!(!resumes(none, v, d), "{v}: resumption is off\n{}", log());
        // BoringSSL, as Envoy on it: TLS 1.3 resumes by ticket only.
        let cached = v == "-tls1_2";
        assert_eq!(resumes(stateful, v, d), cached, "{v}: the session cache without tickets\n{}", log());
        assert!(resumes(stateless, v, d), "{v}: tickets still resume without the cache\n{}", log());
        assert!(resumes_across(keyed1, keyed2, v, d), "{v}: keyed2 opens keyed1's tickets\n{}", log());
        assert!(!resumes_across(keyed2, keyed1, v, d), "{v}: keyed1 cannot open keyed2's new key's\n{}", log());
        assert!(!resumes_across(stateless, keyed2, v, d), "{v}: a ticket under a random key is not opened\n{}", log());
    }
    // Without the cache and tickets off, no resumption either way: checked
    // above. A session ticket key is the key, not just the switch: a cache
    // of its own is off on keyed1/keyed2, so only the shared key resumes.

    // A session resumes within its 4 s lifetime, and not after it: TLS 1.2
    // and 1.3 alike (BoringSSL keeps two lifetimes; both are set).
    let sessions = ["-tls1_2", "-tls1_3"].map(|v| {
        let (a, b) = (d.join(format!("short{v}.sess")), d.join(format!("short2{v}.sess")));
        assert!(!s_client(short, v, None, &a));
        assert!(s_client(short, v, Some(&a), &b), "{v}: resumed within its lifetime\n{}", log());
        (v, a, b)
    });
    tokio::time::sleep(Duration::from_millis(5100)).await;
    for (v, a, b) in &sessions {
        assert!(!s_client(short, v, Some(a), b), "{v}: a session past session_timeout was resumed\n{}", log());
    }
}

#[tokio::test]
async fn a_handshake_gets_the_filter_chains_transport_socket_connect_timeout() {
    use tokio::io::AsyncReadExt;
    let backend = Backend::start("b", SocketAddr::new(ip(12, 5), 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path());
    let hcm = yaml::hcm("handshake", "", &yaml::routes(&[("/", "cluster: backend")]));
    let (bounded, default) = (free_addr(ip(12, 5)), free_addr(ip(12, 5)));
    let cfg = yaml::bootstrap(
        &[
            yaml::tls_listener("bounded", bounded, &hcm, &cert, &key)
                .replace("\n      filters:", "\n      transport_socket_connect_timeout: 1s\n      filters:"),
            yaml::tls_listener("default", default, &hcm, &cert, &key),
        ],
        &[yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], "")],
    );
    let proxy = ProxyProcess::start(&cfg, default).await;

    // Clients that open a connection and never start the handshake.
    let mut idle_bounded = tokio::net::TcpStream::connect(bounded).await.unwrap();
    let mut idle_default = tokio::net::TcpStream::connect(default).await.unwrap();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), idle_bounded.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "the handshake outlived its 1 s: {closed:?}\n{}", proxy.log());
    let open = tokio::time::timeout(Duration::from_millis(500), idle_default.read(&mut buf)).await;
    assert!(open.is_err(), "the default bound is 60 s: {open:?}");
    // A client that does handshake is served as before.
    assert_eq!(handshake_version(bounded, None).as_deref(), Ok("TLSv1.3"));
}
