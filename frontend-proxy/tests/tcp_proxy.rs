//! `envoy.filters.network.tcp_proxy` end to end: the real proxy binary
//! between real TCP clients (plain and OpenSSL) and raw TCP echo backends.
//! Bytes that are not HTTP, large transfers both ways at once, half-close,
//! the idle timeout, connect failures and retries to another host,
//! weighted clusters, TLS termination, `connection_limit`, the drain, and
//! the statistics the admin shows.

mod support;

use boring::ssl::{SslConnector, SslMethod, SslVerifyMode};
use std::io::{Read, Write};
use std::net::SocketAddr;
use support::prometheus::Exposition;
use support::tcp::EOF_TRAILER;
use support::{eventually, free_addr, ip, stat, yaml, EchoBackend, ProxyProcess, LIMIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(host: u8) -> SocketAddr {
    free_addr(ip(60, host))
}

/// `127.0.60.<host>` with port 0, for a backend that binds it and keeps the
/// port the kernel gives (no window between a probe and the bind).
fn on(host: u8) -> SocketAddr {
    SocketAddr::new(ip(60, host), 0)
}

fn endpoint(a: SocketAddr) -> (String, u16) {
    (a.ip().to_string(), a.port())
}

/// A plaintext listener on `listen` whose chain is `filters`.
fn tcp_listener(listen: SocketAddr, filters: &str) -> String {
    yaml::listener("tcp", listen, filters)
}

/// Reads until end of stream (or the limit, which fails the test).
async fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut out)).await.expect("end of stream in time").expect("read");
    out
}

/// Whether the proxy closes `s` without sending anything: end of stream,
/// or a reset (a close with the client's bytes unread sends one).
async fn closed_without_data(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(LIMIT, s.read(&mut buf)).await.expect("closed in time") {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// One proxy with an admin on `admin`, a tcp_proxy listener `listen` to
/// cluster `echo` (the `backend`), with `extra` tcp_proxy fields.
async fn proxy_to(admin: SocketAddr, listen: SocketAddr, backend: SocketAddr, extra: &str) -> ProxyProcess {
    let config = yaml::bootstrap_with_admin(
        admin,
        &[tcp_listener(listen, &yaml::tcp_proxy("raw", "cluster: echo", extra))],
        &[yaml::cluster("echo", "STATIC", &[endpoint(backend)], "")],
    );
    // Live once the listeners accept.
    ProxyProcess::live(&config, admin).await
}

/// Every byte value, and bytes that look like nothing HTTP would send,
/// cross unchanged; the client's FIN reaches the backend (which says so
/// and closes), and the backend's FIN reaches the client.
#[tokio::test]
async fn binary_bytes_and_half_close_cross_both_ways() {
    let (admin, listen) = (addr(1), addr(2));
    let backend = EchoBackend::start(on(3), None).await;
    let proxy = proxy_to(admin, listen, backend.addr, "").await;

    let mut s = TcpStream::connect(listen).await.unwrap();
    let payload: Vec<u8> = (0..=255u8).chain([0, 0, 0xff, b'\r', b'\n', b'\r', b'\n']).collect();
    s.write_all(&payload).await.unwrap();
    // Half-close: the echo of what was sent, then the backend's trailer,
    // still arrive after the client stopped writing.
    s.shutdown().await.unwrap();
    let got = read_to_end(&mut s).await;
    assert_eq!(got, [payload.as_slice(), EOF_TRAILER].concat(), "{}", proxy.log());
    assert!(eventually(LIMIT, || async { backend.ended() == 1 }).await);
}

/// A server that speaks first (SMTP, MySQL): its greeting reaches a
/// client that has sent nothing.
#[tokio::test]
async fn a_server_that_speaks_first_is_heard() {
    let (admin, listen) = (addr(4), addr(5));
    let backend = EchoBackend::start(on(6), Some(b"220 ready\r\n")).await;
    let _proxy = proxy_to(admin, listen, backend.addr, "").await;
    let mut s = TcpStream::connect(listen).await.unwrap();
    let mut greeting = [0u8; 11];
    tokio::time::timeout(LIMIT, s.read_exact(&mut greeting)).await.expect("greeting in time").unwrap();
    assert_eq!(&greeting, b"220 ready\r\n");
}

/// 8 MiB each way at the same time (the echo sends back while the client
/// still writes): nothing is lost or reordered, and the byte counters
/// say how much crossed.
#[tokio::test]
async fn large_transfers_both_ways_at_once_and_counted() {
    let (admin, listen) = (addr(7), addr(8));
    let backend = EchoBackend::start(on(9), None).await;
    let proxy = proxy_to(admin, listen, backend.addr, "").await;

    const SIZE: usize = 8 * 1024 * 1024;
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 7 + i / 4099) as u8).collect();
    let s = TcpStream::connect(listen).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        for chunk in sent.chunks(100_000) {
            w.write_all(chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::with_capacity(SIZE + EOF_TRAILER.len());
    tokio::time::timeout(LIMIT, r.read_to_end(&mut got)).await.expect("in time").unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), SIZE + EOF_TRAILER.len());
    assert!(got[..SIZE] == data[..], "the echo differs from what was sent");

    let admin_at = proxy.admin.unwrap();
    let expect = |name: &'static str, n: usize| async move {
        assert!(
            eventually(LIMIT, || async { stat(admin_at, name).await == n as u64 }).await,
            "{name}: {} (expected {n})",
            stat(admin_at, name).await
        );
    };
    expect("tcp.raw.downstream_cx_total", 1).await;
    expect("tcp.raw.downstream_cx_rx_bytes_total", SIZE).await;
    expect("tcp.raw.downstream_cx_tx_bytes_total", SIZE + EOF_TRAILER.len()).await;
    expect("cluster.echo.upstream_cx_tx_bytes_total", SIZE).await;
    expect("cluster.echo.upstream_cx_rx_bytes_total", SIZE + EOF_TRAILER.len()).await;
    expect("cluster.echo.upstream_cx_total", 1).await;
    expect("cluster.echo.upstream_cx_active", 0).await;
    let listener_total = format!("listener.{}.downstream_cx_total", listen.to_string().replace(':', "_"));
    assert_eq!(stat(admin_at, &listener_total).await, 1);

    // The same under Envoy's Prometheus names and tags.
    let (_, text) = proxy.get("/stats/prometheus").await;
    let prom = Exposition::parse(text);
    assert_eq!(prom.value("envoy_tcp_downstream_cx_total{envoy_tcp_prefix=\"raw\"}"), 1.0);
    assert_eq!(prom.value("envoy_cluster_upstream_cx_total{envoy_cluster_name=\"echo\"}"), 1.0);
}

/// No byte either way for `idle_timeout`: both connections close, and
/// `idle_timeout` counts it. Traffic before that keeps it open.
#[tokio::test]
async fn idle_timeout_closes_both_sides() {
    let (admin, listen) = (addr(10), addr(11));
    let backend = EchoBackend::start(on(12), None).await;
    let proxy = proxy_to(admin, listen, backend.addr, "          idle_timeout: 0.4s").await;

    let mut s = TcpStream::connect(listen).await.unwrap();
    for _ in 0..3 {
        s.write_all(b"ping").await.unwrap();
        let mut echo = [0u8; 4];
        s.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"ping");
    }
    // Then silence: the proxy closes (no trailer: the backend saw a close,
    // or a FIN it answers into a closed connection).
    let rest = read_to_end(&mut s).await;
    assert!(rest.is_empty() || rest == EOF_TRAILER, "{rest:?}");
    assert!(eventually(LIMIT, || async { backend.ended() == 1 }).await, "the upstream side closed too");
    assert_eq!(stat(proxy.admin.unwrap(), "tcp.raw.idle_timeout").await, 1);
}

/// Nothing listens upstream: the client's connection is closed and the
/// failure is counted on the cluster.
#[tokio::test]
async fn upstream_down_closes_the_client_and_counts_connect_fail() {
    let (admin, listen, dead) = (addr(13), addr(14), addr(15));
    let proxy = proxy_to(admin, listen, dead, "").await;
    let mut s = TcpStream::connect(listen).await.unwrap();
    let _ = s.write_all(b"hello?").await;
    assert!(closed_without_data(&mut s).await);
    let admin = proxy.admin.unwrap();
    assert_eq!(stat(admin, "cluster.echo.upstream_cx_connect_fail").await, 1);
    assert_eq!(stat(admin, "cluster.echo.upstream_cx_total").await, 0);
    assert_eq!(stat(admin, "tcp.raw.downstream_cx_total").await, 1);
}

/// `max_connect_attempts: 2` with a dead and a live host: every client
/// gets through, the attempts on the dead host counted as failures.
#[tokio::test]
async fn max_connect_attempts_tries_another_host() {
    let (admin, listen, dead) = (addr(16), addr(17), addr(18));
    let backend = EchoBackend::start(on(19), None).await;
    let config = yaml::bootstrap_with_admin(
        admin,
        &[tcp_listener(listen, &yaml::tcp_proxy("retry", "cluster: two", "          max_connect_attempts: 2"))],
        &[yaml::cluster("two", "STATIC", &[endpoint(dead), endpoint(backend.addr)], "")],
    );
    let proxy = ProxyProcess::live(&config, admin).await;
    for i in 0..4u8 {
        let mut s = TcpStream::connect(listen).await.unwrap();
        s.write_all(&[i]).await.unwrap();
        s.shutdown().await.unwrap();
        assert_eq!(read_to_end(&mut s).await, [&[i][..], EOF_TRAILER].concat(), "{}", proxy.log());
    }
    assert_eq!(backend.accepted(), 4);
    // Round robin starts on either host: two or more of the four tried the dead one first.
    assert!(stat(admin, "cluster.two.upstream_cx_connect_fail").await >= 2);
}

/// `weighted_clusters`: each connection goes to one of the clusters, and
/// both get some of forty (all in one: a chance of 2^-39).
#[tokio::test]
async fn weighted_clusters_spread_connections() {
    let (admin, listen) = (addr(20), addr(21));
    let (a, b) = (EchoBackend::start(on(22), None).await, EchoBackend::start(on(23), None).await);
    let target = "weighted_clusters:\n            clusters:\n            - { name: a, weight: 1 }\n            - { name: b, weight: 1 }";
    let config = yaml::bootstrap_with_admin(
        admin,
        &[tcp_listener(listen, &yaml::tcp_proxy("split", target, ""))],
        &[yaml::cluster("a", "STATIC", &[endpoint(a.addr)], ""), yaml::cluster("b", "STATIC", &[endpoint(b.addr)], "")],
    );
    let proxy = ProxyProcess::live(&config, admin).await;
    for _ in 0..40 {
        let mut s = TcpStream::connect(listen).await.unwrap();
        s.shutdown().await.unwrap();
        assert_eq!(read_to_end(&mut s).await, EOF_TRAILER, "{}", proxy.log());
    }
    assert_eq!(a.accepted() + b.accepted(), 40);
    assert!(a.accepted() > 0 && b.accepted() > 0, "a {} b {}", a.accepted(), b.accepted());
}

/// A TLS listener terminates TLS and proxies the plaintext inside; no
/// ALPN protocol is chosen (the chain lists none), even for a client
/// that offers h2.
#[tokio::test]
async fn tls_listener_terminates_and_proxies() {
    let (admin, listen) = (addr(24), addr(25));
    let backend = EchoBackend::start(on(26), None).await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let listener = yaml::with_inline_tls(
        &tcp_listener(listen, &yaml::tcp_proxy("tls_raw", "cluster: echo", "")),
        &cert.cert.pem(),
        &cert.signing_key.serialize_pem(),
    );
    let config = yaml::bootstrap_with_admin(
        admin,
        &[listener],
        &[yaml::cluster("echo", "STATIC", &[endpoint(backend.addr)], "")],
    );
    let proxy = ProxyProcess::live(&config, admin).await;
    let exchanged = tokio::task::spawn_blocking(move || {
        let tcp = std::net::TcpStream::connect(listen).unwrap();
        tcp.set_read_timeout(Some(LIMIT)).unwrap();
        let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
        connector.set_verify(SslVerifyMode::NONE);
        connector.set_alpn_protos(b"\x02h2\x08http/1.1").unwrap();
        let ssl = connector.build().configure().unwrap().into_ssl("localhost").unwrap();
        let mut tls = ssl.connect(tcp).map_err(|e| e.to_string()).unwrap();
        let alpn = tls.ssl().selected_alpn_protocol().map(<[u8]>::to_vec);
        tls.write_all(b"\x00\x01binary over TLS\xff").unwrap();
        let mut echo = [0u8; 18];
        tls.read_exact(&mut echo).unwrap();
        (alpn, echo.to_vec())
    })
    .await
    .unwrap();
    assert_eq!(exchanged, (None, b"\x00\x01binary over TLS\xff".to_vec()), "{}", proxy.log());
    let admin = proxy.admin.unwrap();
    assert_eq!(stat(admin, "tcp.tls_raw.downstream_cx_total").await, 1);
    let handshakes = format!("listener.{}.ssl.handshake", listen.to_string().replace(':', "_"));
    assert_eq!(stat(admin, &handshakes).await, 1);
}

/// `connection_limit` before the tcp_proxy: over the limit, a new
/// connection is closed at once (never reaching the backend) and counted.
#[tokio::test]
async fn connection_limit_caps_tcp_proxy_connections() {
    let (admin, listen) = (addr(27), addr(28));
    let backend = EchoBackend::start(on(29), None).await;
    let limit = r#"
      - name: envoy.filters.network.connection_limit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit
          stat_prefix: limit
          max_connections: 1"#;
    let filters = format!("{limit}{}", yaml::tcp_proxy("capped", "cluster: echo", ""));
    let config = yaml::bootstrap_with_admin(
        admin,
        &[tcp_listener(listen, &filters)],
        &[yaml::cluster("echo", "STATIC", &[endpoint(backend.addr)], "")],
    );
    let proxy = ProxyProcess::live(&config, admin).await;
    let mut first = TcpStream::connect(listen).await.unwrap();
    first.write_all(b"one").await.unwrap();
    let mut echo = [0u8; 3];
    first.read_exact(&mut echo).await.unwrap();
    let mut second = TcpStream::connect(listen).await.unwrap();
    let _ = second.write_all(b"two").await;
    assert!(closed_without_data(&mut second).await);
    let overflow = format!("listener.{}.downstream_cx_overflow", listen.to_string().replace(':', "_"));
    assert_eq!(stat(admin, &overflow).await, 1, "{}", proxy.log());
    assert_eq!(backend.accepted(), 1);
    // The first still works.
    first.write_all(b"ok").await.unwrap();
    let mut echo = [0u8; 2];
    first.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ok");
}

/// On SIGTERM the listener stops accepting, an open session goes on until
/// its client is done, and then the proxy exits.
#[tokio::test]
async fn drain_lets_open_sessions_finish() {
    let (admin, listen) = (addr(30), addr(31));
    let backend = EchoBackend::start(on(32), None).await;
    let mut proxy = proxy_to(admin, listen, backend.addr, "").await;
    let mut s = TcpStream::connect(listen).await.unwrap();
    s.write_all(b"before").await.unwrap();
    let mut echo = [0u8; 6];
    s.read_exact(&mut echo).await.unwrap();

    proxy.signal("TERM");
    assert!(
        eventually(LIMIT, || async { TcpStream::connect(listen).await.is_err() }).await,
        "the listener still accepts while draining"
    );
    assert!(proxy.is_running(), "the open session holds the drain");
    s.write_all(b"during").await.unwrap();
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"during");
    s.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut s).await, EOF_TRAILER);
    drop(s);
    let exit = proxy.wait_exit(LIMIT).expect("exits once the session is over");
    assert!(exit.success(), "{exit}\n{}", proxy.log());
}

/// One TLS listener, two chains chosen by SNI: an HTTP connection manager
/// and a TCP proxy. Each name gets what its chain serves.
#[tokio::test]
async fn sni_chooses_between_http_and_tcp_proxy_chains() {
    let (admin, listen) = (addr(33), addr(34));
    let backend = EchoBackend::start(on(35), None).await;
    let cert = rcgen::generate_simple_self_signed(vec!["http.example".into(), "raw.example".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let tls = format!(
        r#"      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{ filename: "{}" }}
              private_key: {{ filename: "{}" }}"#,
        cert_path.display(),
        key_path.display()
    );
    let hosts = r#"            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                direct_response: { status: 200, body: { inline_string: "from http" } }"#;
    let listener = format!(
        r#"
  - name: sni
    address: {{ socket_address: {{ address: {ip}, port_value: {port} }} }}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }}
    filter_chains:
    - filter_chain_match: {{ server_names: ["http.example"] }}
{tls}
      filters:{hcm}
    - filter_chain_match: {{ server_names: ["raw.example"] }}
{tls}
      filters:{tcp}"#,
        ip = listen.ip(),
        port = listen.port(),
        hcm = yaml::hcm("web", "", hosts),
        tcp = yaml::tcp_proxy("raw", "cluster: echo", ""),
    );
    let config = yaml::bootstrap_with_admin(
        admin,
        &[listener],
        &[yaml::cluster("echo", "STATIC", &[endpoint(backend.addr)], "")],
    );
    let proxy = ProxyProcess::live(&config, admin).await;
    let talk = move |name: &'static str, send: &'static [u8]| {
        tokio::task::spawn_blocking(move || {
            let tcp = std::net::TcpStream::connect(listen).unwrap();
            tcp.set_read_timeout(Some(LIMIT)).unwrap();
            let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
            connector.set_verify(SslVerifyMode::NONE);
            let ssl = connector.build().configure().unwrap().into_ssl(name).unwrap();
            let mut tls = ssl.connect(tcp).map_err(|e| e.to_string()).unwrap();
            tls.write_all(send).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // HTTP: until the proxy closes (`connection: close`); raw: the echo.
            while send.starts_with(b"GET / HTTP/1.1\r\n") || got.len() < send.len() {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            String::from_utf8_lossy(&got).into_owned()
        })
    };
    let http = talk("http.example", b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    assert!(http.starts_with("HTTP/1.1 200") && http.ends_with("from http"), "{http}\n{}", proxy.log());
    let raw = talk("raw.example", b"GET / HTTP/1.1 but raw").await.unwrap();
    assert_eq!(raw, "GET / HTTP/1.1 but raw", "{}", proxy.log());
    assert_eq!(backend.accepted(), 1);
    let admin = proxy.admin.unwrap();
    assert_eq!(stat(admin, "tcp.raw.downstream_cx_total").await, 1);
    assert_eq!(stat(admin, "http.web.downstream_rq_total").await, 1);
}

/// A health-checked cluster (TCP checks) with a dead and a live host:
/// once the checks have run, every connection goes to the live host with
/// one connect attempt, none to the dead one.
#[tokio::test]
async fn only_healthy_hosts_take_connections() {
    let (admin, listen, dead) = (addr(36), addr(37), addr(38));
    let backend = EchoBackend::start(on(39), None).await;
    let checks = "    health_checks:\n    - { timeout: 1s, interval: 0.2s, unhealthy_threshold: 1, healthy_threshold: 1, tcp_health_check: {} }\n    common_lb_config: { healthy_panic_threshold: { value: 0 } }";
    let config = yaml::bootstrap_with_admin(
        admin,
        &[tcp_listener(listen, &yaml::tcp_proxy("checked", "cluster: hc", ""))],
        &[yaml::cluster("hc", "STATIC", &[endpoint(dead), endpoint(backend.addr)], checks)],
    );
    let proxy = ProxyProcess::live(&config, admin).await;
    assert!(
        eventually(LIMIT, || async { stat(admin, "cluster.hc.membership_healthy").await == 1 }).await,
        "{}",
        proxy.log()
    );
    for i in 0..6u8 {
        let mut s = TcpStream::connect(listen).await.unwrap();
        s.write_all(&[i]).await.unwrap();
        s.shutdown().await.unwrap();
        assert_eq!(read_to_end(&mut s).await, [&[i][..], EOF_TRAILER].concat(), "{}", proxy.log());
    }
    assert_eq!(stat(admin, "cluster.hc.upstream_cx_connect_fail").await, 0);
}

/// The cluster's `circuit_breakers.max_connections`: with one upstream
/// connection open, the next client is closed and `upstream_cx_overflow`
/// counts it.
#[tokio::test]
async fn circuit_breaker_caps_upstream_connections() {
    let (admin, listen) = (addr(40), addr(41));
    let backend = EchoBackend::start(on(42), None).await;
    let breaker = "    circuit_breakers: { thresholds: [{ max_connections: 1 }] }";
    let config = yaml::bootstrap_with_admin(
        admin,
        &[tcp_listener(listen, &yaml::tcp_proxy("capped", "cluster: one", ""))],
        &[yaml::cluster("one", "STATIC", &[endpoint(backend.addr)], breaker)],
    );
    let proxy = ProxyProcess::live(&config, admin).await;
    let mut first = TcpStream::connect(listen).await.unwrap();
    first.write_all(b"one").await.unwrap();
    let mut echo = [0u8; 3];
    first.read_exact(&mut echo).await.unwrap();
    let mut second = TcpStream::connect(listen).await.unwrap();
    assert!(closed_without_data(&mut second).await, "{}", proxy.log());
    assert_eq!(stat(admin, "cluster.one.upstream_cx_overflow").await, 1);
    assert_eq!(backend.accepted(), 1);
    // Once the first is done, a new client gets through.
    first.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut first).await, EOF_TRAILER);
    assert!(
        eventually(LIMIT, || async { stat(admin, "cluster.one.upstream_cx_active").await == 0 }).await,
        "the upstream connection closed"
    );
    let mut third = TcpStream::connect(listen).await.unwrap();
    third.write_all(b"3").await.unwrap();
    let mut echo = [0u8; 1];
    third.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"3");
}

/// `access_log` on a tcp_proxy: a line per connection when it ends, in
/// Envoy's operators (the bytes each way, the upstream host and cluster,
/// `UF` for a connection no host took; `%REQ(...)%` is `-`).
#[tokio::test]
async fn access_log_writes_a_line_per_connection() {
    let (admin, listen, dead_listen, dead) = (addr(43), addr(44), addr(45), addr(46));
    let backend = EchoBackend::start(on(47), None).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tcp.log");
    let logger = format!(
        r#"          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {}
              log_format: {{ text_format_source: {{ inline_string: "%UPSTREAM_CLUSTER% %UPSTREAM_HOST% %BYTES_RECEIVED% %BYTES_SENT% %RESPONSE_FLAGS% %REQ(:PATH)% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%\n" }} }}"#,
        path.display()
    );
    let config = yaml::bootstrap_with_admin(
        admin,
        &[
            tcp_listener(listen, &yaml::tcp_proxy("logged", "cluster: echo", &logger)),
            yaml::listener("down", dead_listen, &yaml::tcp_proxy("logged_down", "cluster: dead", &logger)),
        ],
        &[
            yaml::cluster("echo", "STATIC", &[endpoint(backend.addr)], ""),
            yaml::cluster("dead", "STATIC", &[endpoint(dead)], ""),
        ],
    );
    let proxy = ProxyProcess::live(&config, admin).await;
    let mut s = TcpStream::connect(listen).await.unwrap();
    s.write_all(b"12345").await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut s).await, [&b"12345"[..], EOF_TRAILER].concat());
    let mut down = TcpStream::connect(dead_listen).await.unwrap();
    assert!(closed_without_data(&mut down).await);

    // The client connects from the loopback's first address.
    let client = "127.0.0.1";
    let mut expected = [
        format!("echo {} 5 {} - - {client}", backend.addr, 5 + EOF_TRAILER.len()),
        format!("dead - 0 0 UF - {client}"),
    ];
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    assert!(eventually(LIMIT, || async { read().lines().count() == 2 }).await, "{}\n{}", read(), proxy.log());
    let mut lines: Vec<String> = read().lines().map(str::to_string).collect();
    lines.sort();
    expected.sort();
    assert_eq!(lines, expected);
}

/// `max_downstream_connection_duration`: a connection busy all along is
/// still closed when it has lasted that long, and counted; the access log
/// says `DT`.
#[tokio::test]
async fn max_downstream_connection_duration_closes_busy_connections() {
    let (admin, listen) = (addr(48), addr(49));
    let backend = EchoBackend::start(on(50), None).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tcp.log");
    let extra = format!(
        r#"          max_downstream_connection_duration: 0.5s
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {}
              log_format: {{ text_format_source: {{ inline_string: "%RESPONSE_FLAGS%\n" }} }}"#,
        path.display()
    );
    let proxy = proxy_to(admin, listen, backend.addr, &extra).await;
    let mut s = TcpStream::connect(listen).await.unwrap();
    // Keep talking until the proxy closes the connection.
    let closed = tokio::time::timeout(LIMIT, async {
        let mut echo = [0u8; 4];
        loop {
            if s.write_all(b"ping").await.is_err() || s.read_exact(&mut echo).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "still open after {LIMIT:?}:\n{}", proxy.log());
    assert_eq!(stat(admin, "tcp.raw.max_downstream_connection_duration").await, 1);
    assert_eq!(stat(admin, "tcp.raw.idle_timeout").await, 0);
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    assert!(eventually(LIMIT, || async { read() == "DT\n" }).await, "{:?}", read());
}
