//! HTTP/2 clients in front of HTTP/2 upstreams: our own stream-to-stream
//! path (`proxy/h2/forward.rs`) and its pool of upstream connections
//! (`proxy/h2/client.rs`). What the upstream receives, how streams share
//! connections, the cluster's `http2_protocol_options` on the wire
//! (windows, stream limit, keepalive PINGs), resets both ways, and the
//! access log line against Pingora's path. gRPC over it: tests/grpc.rs.
//! Addresses: 127.0.74.x.

mod support;

use bytes::Bytes;
use h2::client::SendRequest;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use support::{free_addr, ip, pingora_engine, stat, yaml, Backend, ProxyProcess, LIMIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The cluster options of an h2c cluster: `http2` inside
/// `http2_protocol_options`, `common` inside `common_http_protocol_options`.
fn h2c(http2: &str, common: &str) -> String {
    format!(
        r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        common_http_protocol_options: {{ {common} }}
        explicit_http_config:
          http2_protocol_options: {{ {http2} }}"#
    )
}

/// A proxy routing `/rewrite/` (to `/echo/`, with `Host` rewritten) and
/// everything else to one h2c cluster `up` on `backend`.
async fn proxy_to(host: u8, backend: SocketAddr, http2: &str, common: &str) -> (ProxyProcess, SocketAddr, SocketAddr) {
    let listen = free_addr(ip(74, host));
    let admin = free_addr(ip(74, host));
    let routes = [
        ("/rewrite/", "cluster: up, prefix_rewrite: \"/echo/\", host_rewrite_literal: upstream.example"),
        ("/", "cluster: up"),
    ];
    let config = yaml::bootstrap_with_admin(
        admin,
        &[yaml::route_listener(listen, "front", &routes)],
        &[yaml::cluster("up", "STATIC", &[(backend.ip().to_string(), backend.port())], &h2c(http2, common))],
    );
    (ProxyProcess::live(&config, admin).await, listen, admin)
}

/// An h2c connection with prior knowledge.
async fn connect(addr: SocketAddr) -> SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// Sends a request without body and waits for its response head.
async fn head(h2: &SendRequest<Bytes>, req: http::Request<()>) -> http::Response<h2::RecvStream> {
    let mut send = h2.clone().ready().await.unwrap();
    let (resp, _) = send.send_request(req, true).unwrap();
    tokio::time::timeout(LIMIT, resp).await.unwrap().unwrap()
}

/// A proxy on 127.0.74.`host` whose connection manager `front` has the
/// given virtual hosts (and `hcm_tail` appended to its options), to one
/// h2c cluster `up` on `backend`.
async fn proxy_routing(host: u8, backend: SocketAddr, routes: &str, hcm_tail: &str) -> (ProxyProcess, SocketAddr) {
    let listen = free_addr(ip(74, host));
    let hcm = format!("{}{hcm_tail}", yaml::hcm("front", "", routes));
    let config = yaml::bootstrap(
        &[yaml::listener("main", listen, &hcm)],
        &[yaml::cluster("up", "STATIC", &[(backend.ip().to_string(), backend.port())], &h2c("", ""))],
    );
    (ProxyProcess::start(&config, listen).await, listen)
}

/// Sends one request (its body in one DATA frame) and reads the whole
/// response: status and body.
async fn request(send: &SendRequest<Bytes>, method: &str, uri: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let req = http::Request::builder().method(method).uri(uri).body(()).unwrap();
    let work = async {
        let mut send = send.clone().ready().await.map_err(|e| e.to_string())?;
        let (resp, mut stream) = send.send_request(req, body.is_empty()).map_err(|e| e.to_string())?;
        if !body.is_empty() {
            stream.send_data(Bytes::copy_from_slice(body), true).map_err(|e| e.to_string())?;
        }
        let resp = resp.await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let mut recv = resp.into_body();
        let mut got = Vec::new();
        while let Some(d) = recv.data().await {
            let d = d.map_err(|e| e.to_string())?;
            let _ = recv.flow_control().release_capacity(d.len());
            got.extend_from_slice(&d);
        }
        Ok((status, got))
    };
    tokio::time::timeout(LIMIT, work).await.unwrap_or_else(|_| Err("timed out".into()))
}

#[tokio::test]
async fn streams_share_one_upstream_connection_and_carry_the_routes_rewrites() {
    let backend = Backend::start("up", SocketAddr::new(ip(74, 1), 0)).await;
    let (proxy, listen, admin) = proxy_to(1, backend.addr, "", "").await;
    let h2 = connect(listen).await;
    // Twenty streams at once, each with its own body.
    let calls = (0..20).map(|i| {
        let h2 = h2.clone();
        async move {
            request(&h2, "POST", &format!("http://front.example/rewrite/{i}"), format!("body {i}").as_bytes()).await
        }
    });
    for (i, got) in futures::future::join_all(calls).await.into_iter().enumerate() {
        let (status, body) = got.unwrap_or_else(|e| panic!("stream {i}: {e}\n{}", proxy.log()));
        assert_eq!((status, String::from_utf8(body).unwrap()), (200, format!("body {i}")));
    }
    // `:authority` is the rewritten host; no `Host` field goes upstream.
    assert!(backend.last_uri().starts_with("http://upstream.example/echo/"), "{}", backend.last_uri());
    assert_eq!(backend.last_header("host"), None);
    // Then one at a time, on the same connection.
    for _ in 0..5 {
        assert_eq!(request(&h2, "GET", "http://front.example/plain", b"").await.unwrap().0, 200);
    }
    assert_eq!(backend.last_uri(), "http://front.example/plain");
    assert_eq!(backend.hits(), 25);
    if !pingora_engine() {
        // Pingora's pool opens a connection for each stream that finds none
        // ready (docs/http1.md); ours has the others wait for the one.
        assert_eq!(stat(admin, "cluster.up.upstream_cx_total").await, 1, "{}", proxy.log());
        assert_eq!(stat(admin, "cluster.up.upstream_cx_http2_total").await, 1);
    }
    assert_eq!(stat(admin, "cluster.up.upstream_rq_200").await, 25);
    assert_eq!(stat(admin, "http.front.downstream_rq_active").await, 0);
    assert_eq!(stat(admin, "cluster.up.upstream_rq_active").await, 0);
}

#[tokio::test]
async fn a_connection_at_its_stream_limit_is_joined_by_another() {
    let backend = Backend::start("up", SocketAddr::new(ip(74, 2), 0)).await;
    let (proxy, listen, admin) = proxy_to(2, backend.addr, "max_concurrent_streams: 2", "").await;
    let h2 = connect(listen).await;
    for round in 0..2 {
        // Six streams in flight together, two per connection.
        let calls = (0..6).map(|_| request(&h2, "GET", "http://front.example/delay/300", b""));
        for got in futures::future::join_all(calls).await {
            assert_eq!(got.unwrap_or_else(|e| panic!("round {round}: {e}\n{}", proxy.log())).0, 200);
        }
    }
    // Three connections, opened in the first round and reused in the
    // second (Pingora's pool opens more: one per stream that finds none ready).
    if !pingora_engine() {
        assert_eq!(stat(admin, "cluster.up.upstream_cx_total").await, 3, "{}", proxy.log());
        assert_eq!(stat(admin, "cluster.up.upstream_cx_active").await, 3);
    }
    assert_eq!(stat(admin, "cluster.up.upstream_rq_200").await, 12);
}

#[tokio::test]
async fn an_idle_upstream_connection_closes_after_the_clusters_idle_timeout() {
    let backend = Backend::start("up", SocketAddr::new(ip(74, 3), 0)).await;
    let (proxy, listen, admin) = proxy_to(3, backend.addr, "", "idle_timeout: 0.3s").await;
    let h2 = connect(listen).await;
    assert_eq!(request(&h2, "GET", "http://front.example/a", b"").await.unwrap().0, 200);
    // Busy for longer than the idle timeout: not closed under its stream.
    assert_eq!(request(&h2, "GET", "http://front.example/delay/600", b"").await.unwrap().0, 200);
    assert_eq!(stat(admin, "cluster.up.upstream_cx_destroy").await, 0, "{}", proxy.log());
    let deadline = Instant::now() + Duration::from_secs(3);
    while stat(admin, "cluster.up.upstream_cx_destroy").await == 0 {
        assert!(Instant::now() < deadline, "the idle connection stayed open\n{}", proxy.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stat(admin, "cluster.up.upstream_cx_active").await, 0);
    // The next stream opens a new one.
    assert_eq!(request(&h2, "GET", "http://front.example/b", b"").await.unwrap().0, 200);
    assert_eq!(stat(admin, "cluster.up.upstream_cx_total").await, 2);
}

/// One frame as the upstream reads it.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// An upstream that speaks HTTP/2 by hand: it reads the proxy's preface
/// and frames, and answers only what a test writes.
struct RawUpstream {
    s: TcpStream,
}

impl RawUpstream {
    async fn accept(listener: &TcpListener) -> Self {
        let (mut s, _) = tokio::time::timeout(LIMIT, listener.accept()).await.unwrap().unwrap();
        let mut preface = [0u8; 24];
        s.read_exact(&mut preface).await.unwrap();
        assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        Self { s }
    }

    /// The next frame; `None` once the proxy has closed the connection.
    async fn frame(&mut self) -> Option<Frame> {
        let mut head = [0u8; 9];
        self.s.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        self.s.read_exact(&mut payload).await.ok()?;
        Some(Frame { kind: head[3], flags: head[4], stream, payload })
    }

    /// Frames until one of `kind` (on a stream other than 0 if `on_stream`).
    async fn until(&mut self, kind: u8, on_stream: bool) -> Frame {
        loop {
            let f = tokio::time::timeout(LIMIT, self.frame()).await.unwrap().expect("connection closed");
            if f.kind == kind && (!on_stream || f.stream != 0) {
                return f;
            }
        }
    }

    async fn write(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = (payload.len() as u32).to_be_bytes();
        let mut frame = vec![len[1], len[2], len[3], kind, flags];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        self.s.write_all(&frame).await.unwrap();
    }
}

fn setting(payload: &[u8], id: u16) -> Option<u32> {
    payload
        .chunks(6)
        .rev()
        .find(|e| u16::from_be_bytes([e[0], e[1]]) == id)
        .map(|e| u32::from_be_bytes([e[2], e[3], e[4], e[5]]))
}

#[tokio::test]
async fn the_upstream_connection_speaks_the_clusters_settings_and_keepalive() {
    let listener = TcpListener::bind((ip(74, 4), 0)).await.unwrap();
    let options = "initial_stream_window_size: 131072, initial_connection_window_size: 1048576, \
                   connection_keepalive: { interval: 1s, timeout: 5s }";
    let (proxy, listen, admin) = proxy_to(4, listener.local_addr().unwrap(), options, "").await;
    let h2 = connect(listen).await;
    let call = tokio::spawn(async move { request(&h2, "GET", "http://front.example/x", b"").await });
    let mut up = RawUpstream::accept(&listener).await;
    let settings = up.until(4, false).await;
    assert_eq!(settings.flags & 1, 0, "the client's own SETTINGS first");
    assert_eq!(setting(&settings.payload, 2), Some(0), "push disabled: {settings:?}");
    assert_eq!(setting(&settings.payload, 4), Some(131_072), "initial window: {settings:?}");
    let window = up.until(8, false).await;
    assert_eq!(window.stream, 0);
    let increment = u32::from_be_bytes(window.payload[..4].try_into().unwrap());
    assert_eq!(increment, 1_048_576 - 65_535, "connection window");
    // Our SETTINGS and the acknowledgement of the proxy's; then the request.
    up.write(4, 0, 0, &[]).await;
    up.write(4, 1, 0, &[]).await;
    let headers = up.until(1, true).await;
    assert_eq!(headers.flags & 1, 1, "a GET without body ends its stream with its head");
    // `:status: 200` (static table index 8), END_STREAM | END_HEADERS.
    up.write(1, 0x5, headers.stream, &[0x88]).await;
    let (status, _) = call.await.unwrap().unwrap();
    assert_eq!(status, 200, "{}", proxy.log());
    // A keepalive PING about a second later, which this upstream leaves
    // unanswered: the proxy closes the connection 5 s after it.
    let ping = up.until(6, false).await;
    assert_eq!(ping.flags & 1, 0);
    let sent = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), async { while up.frame().await.is_some() {} }).await;
    assert!(closed.is_ok(), "the connection stayed open after an unanswered PING\n{}", proxy.log());
    let after = sent.elapsed();
    assert!(after > Duration::from_secs(4) && after < Duration::from_secs(7), "closed {after:?} after the PING");
    let deadline = Instant::now() + Duration::from_secs(2);
    while stat(admin, "cluster.up.upstream_cx_destroy").await != 1 {
        assert!(Instant::now() < deadline, "{}", proxy.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn resets_cross_in_both_directions() {
    let listener = TcpListener::bind((ip(74, 5), 0)).await.unwrap();
    let (proxy, listen, admin) = proxy_to(5, listener.local_addr().unwrap(), "", "").await;
    let h2 = connect(listen).await;
    let mut send = h2.clone().ready().await.unwrap();
    let req = http::Request::builder().method("POST").uri("http://front.example/x").body(()).unwrap();
    let (resp, mut body) = send.send_request(req, false).unwrap();
    body.send_data(Bytes::from_static(b"part"), false).unwrap();
    let mut up = RawUpstream::accept(&listener).await;
    up.write(4, 0, 0, &[]).await;
    let first = up.until(1, true).await;
    assert_eq!(first.flags & 1, 0, "the body is still coming");
    let data = up.until(0, true).await;
    assert_eq!(data.payload, b"part");
    // The client gives up: the upstream stream is cancelled (RST_STREAM CANCEL).
    body.send_reset(h2::Reason::CANCEL);
    drop(resp);
    let reset = up.until(3, true).await;
    assert_eq!((reset.stream, reset.payload.as_slice()), (first.stream, &8u32.to_be_bytes()[..]));
    // The upstream resets the next one before answering (a POST: not
    // retried): the client gets Envoy's reply, and the proxy keeps serving.
    let call = tokio::spawn({
        let h2 = h2.clone();
        async move { request(&h2, "POST", "http://front.example/y", b"").await }
    });
    let second = up.until(1, true).await;
    up.write(3, 0, second.stream, &2u32.to_be_bytes()).await; // INTERNAL_ERROR
    let (status, body) = call.await.unwrap().unwrap();
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("reset"), "{}", String::from_utf8_lossy(&body));
    let call = tokio::spawn(async move { request(&h2, "GET", "http://front.example/z", b"").await });
    let third = up.until(1, true).await;
    up.write(1, 0x5, third.stream, &[0x88]).await;
    assert_eq!(call.await.unwrap().unwrap().0, 200, "{}", proxy.log());
    assert_eq!(stat(admin, "cluster.up.upstream_cx_total").await, 1);
    assert_eq!(stat(admin, "http.front.downstream_rq_active").await, 0);
}

fn logged_config(listen: SocketAddr, up: SocketAddr, log: &Path) -> String {
    let extra = format!(
        r#"          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {}
              log_format:
                text_format_source:
                  inline_string: "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_CLUSTER% %UPSTREAM_HOST% %ROUTE_NAME% %RESPONSE_CODE_DETAILS%\n""#,
        log.display()
    );
    let routes = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - name: main\n                match: { prefix: \"/\" }\n                route: { cluster: up, timeout: 0.5s }";
    yaml::bootstrap(
        &[yaml::listener("main", listen, &yaml::hcm("front", &extra, routes))],
        &[yaml::cluster("up", "STATIC", &[(up.ip().to_string(), up.port())], &h2c("", ""))],
    )
}

#[tokio::test]
async fn the_access_log_line_is_the_same_as_on_pingoras_path() {
    if pingora_engine() {
        // This test runs both engines itself.
        return;
    }
    let backend = Backend::start("up", SocketAddr::new(ip(74, 6), 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut per_engine = Vec::new();
    for engine in ["native", "pingora"] {
        let log = dir.path().join(format!("{engine}.log"));
        let listen = free_addr(ip(74, 6));
        let cfg = logged_config(listen, backend.addr, &log);
        let proxy = ProxyProcess::start_with_args(&cfg, listen, &["--http1-engine", engine]).await;
        let h2 = connect(listen).await;
        request(&h2, "GET", "http://a.test/films", b"").await.unwrap();
        request(&h2, "POST", "http://a.test/echo", b"abc").await.unwrap();
        request(&h2, "GET", "http://a.test/status/503", b"").await.unwrap();
        request(&h2, "GET", "http://a.test/hang", b"").await.unwrap();
        per_engine.push(support::log_lines(&log, 4).await);
        drop(proxy);
    }
    assert_eq!(per_engine[0].len(), 4, "{per_engine:?}");
    assert_eq!(per_engine[0], per_engine[1]);
}

#[tokio::test]
async fn an_upstream_over_tls_speaks_http2_when_the_cluster_says_so() {
    // The proxy is its own TLS hop: `front` (h2c from the client) sends to
    // cluster `viatls` (TLS, explicit HTTP/2: ALPN offers h2 alone), which
    // is the proxy's own TLS listener `edge`, which sends to the backend.
    let backend = Backend::start("up", SocketAddr::new(ip(74, 7), 0)).await;
    let front = free_addr(ip(74, 7));
    let edge = free_addr(ip(74, 7));
    let admin = free_addr(ip(74, 7));
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let edge_listener = yaml::with_inline_tls(
        &yaml::route_listener(edge, "edge", &[("/", "cluster: plain")]),
        &cert.cert.pem(),
        &cert.signing_key.serialize_pem(),
    )
    .replace("          common_tls_context:\n", "          common_tls_context:\n            alpn_protocols: [h2]\n");
    let via_tls = format!(
        r#"    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
{}"#,
        h2c("", "")
    );
    let config = yaml::bootstrap_with_admin(
        admin,
        &[yaml::route_listener(front, "front", &[("/", "cluster: viatls")]), edge_listener],
        &[
            yaml::cluster("viatls", "STATIC", &[(edge.ip().to_string(), edge.port())], &via_tls),
            yaml::cluster("plain", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], ""),
        ],
    );
    let proxy = ProxyProcess::live(&config, admin).await;
    let h2 = connect(front).await;
    for i in 0..3 {
        let (status, body) =
            request(&h2, "POST", "http://a.test/echo", format!("over tls {i}").as_bytes()).await.unwrap();
        assert_eq!((status, String::from_utf8(body).unwrap()), (200, format!("over tls {i}")), "{}", proxy.log());
    }
    assert_eq!(stat(admin, "cluster.viatls.upstream_cx_total").await, 1, "{}", proxy.log());
    assert_eq!(stat(admin, "cluster.viatls.upstream_cx_http2_total").await, 1);
    assert_eq!(stat(admin, "http.edge.downstream_rq_http2_total").await, 3);
}

#[tokio::test]
async fn a_request_on_a_route_without_edits_goes_upstream_with_its_fields_and_the_expected_timeout() {
    let backend = Backend::start("up", SocketAddr::new(ip(74, 14), 0)).await;
    let (proxy, listen, _admin) = proxy_to(14, backend.addr, "", "").await;
    let h2 = connect(listen).await;
    // A `host` beside `:authority` (RFC 9113 §8.3.1: the same, or the
    // request is malformed), a field of two values, and the client's own
    // expected timeout, which the proxy's replaces.
    let req = http::Request::builder()
        .method("POST")
        .uri("http://front.example/plain?q=1")
        .header("host", "front.example")
        .header("te", "trailers")
        .header("x-two", "first")
        .header("x-two", "second")
        .header("x-envoy-expected-rq-timeout-ms", "1")
        .body(())
        .unwrap();
    assert_eq!(head(&h2, req).await.status(), 200, "{}", proxy.log());
    assert_eq!(backend.last_uri(), "http://front.example/plain?q=1");
    assert_eq!(backend.last_header("host"), None, "HTTP/2 carries the host in `:authority` alone");
    assert_eq!(backend.last_header_values("te"), ["trailers"]);
    assert_eq!(backend.last_header_values("x-two"), ["first", "second"]);
    // The route's default timeout, 15 s (Envoy's).
    assert_eq!(backend.last_header_values("x-envoy-expected-rq-timeout-ms"), ["15000"]);
    assert!(backend.last_header("x-request-id").is_some());
}

/// The router's `suppress_envoy_headers` on a route without edits: no
/// expected timeout upstream, the client's own included.
#[tokio::test]
async fn suppress_envoy_headers_sends_no_expected_timeout_upstream() {
    let backend = Backend::start("up", SocketAddr::new(ip(74, 15), 0)).await;
    let routes = r#"            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: up }"#;
    let (proxy, listen) = proxy_routing(15, backend.addr, routes, "\n              suppress_envoy_headers: true").await;
    let h2 = connect(listen).await;
    let req = http::Request::builder()
        .method("GET")
        .uri("http://a.test/x")
        .header("x-envoy-expected-rq-timeout-ms", "123")
        .header("x-kept", "yes")
        .body(())
        .unwrap();
    assert_eq!(head(&h2, req).await.status(), 200, "{}", proxy.log());
    assert_eq!(backend.last_header("x-kept").as_deref(), Some("yes"));
    assert_eq!(backend.last_header("x-envoy-expected-rq-timeout-ms"), None);
}

#[tokio::test]
async fn a_stream_the_upstream_never_processed_goes_again_on_a_new_connection() {
    if pingora_engine() {
        // Pingora's path fails such a stream (docs/http1.md).
        return;
    }
    let listener = TcpListener::bind((ip(74, 8), 0)).await.unwrap();
    let (proxy, listen, admin) = proxy_to(8, listener.local_addr().unwrap(), "", "").await;
    let h2 = connect(listen).await;
    // A POST without body: not idempotent, so only the GOAWAY's promise
    // (nothing above its last stream was processed) lets it go again.
    let call = tokio::spawn({
        let h2 = h2.clone();
        async move { request(&h2, "POST", "http://front.example/once", b"").await }
    });
    let mut first = RawUpstream::accept(&listener).await;
    first.write(4, 0, 0, &[]).await;
    let headers = first.until(1, true).await;
    // GOAWAY, last stream 0, NO_ERROR: the stream was not processed.
    let mut goaway = 0u32.to_be_bytes().to_vec();
    goaway.extend_from_slice(&0u32.to_be_bytes());
    first.write(7, 0, 0, &goaway).await;
    let mut second = RawUpstream::accept(&listener).await;
    second.write(4, 0, 0, &[]).await;
    let again = second.until(1, true).await;
    assert_eq!(again.payload, headers.payload.clone(), "the same request head, not HPACK state of the old connection");
    second.write(1, 0x5, again.stream, &[0x88]).await;
    assert_eq!(call.await.unwrap().unwrap().0, 200, "{}", proxy.log());
    assert_eq!(stat(admin, "cluster.up.upstream_rq_retry").await, 0);
    assert_eq!(stat(admin, "cluster.up.upstream_cx_total").await, 2);
    // The next stream goes on the new connection.
    let call = tokio::spawn(async move { request(&h2, "GET", "http://front.example/next", b"").await });
    let next = second.until(1, true).await;
    second.write(1, 0x5, next.stream, &[0x88]).await;
    assert_eq!(call.await.unwrap().unwrap().0, 200);
    assert_eq!(stat(admin, "cluster.up.upstream_cx_total").await, 2);
}

#[tokio::test]
async fn connection_specific_fields_never_go_upstream_even_when_a_route_adds_them() {
    if pingora_engine() {
        // Pingora's HTTP/2 client refuses such a request: 503 (docs/http1.md).
        return;
    }
    let backend = Backend::start("up", SocketAddr::new(ip(74, 9), 0)).await;
    let routes = r#"            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: up }
                request_headers_to_add:
                - header: { key: keep-alive, value: "timeout=5" }
                - header: { key: proxy-connection, value: keep-alive }
                - header: { key: te, value: gzip }
                - header: { key: x-kept, value: "yes" }"#;
    let (proxy, listen) = proxy_routing(9, backend.addr, routes, "").await;
    let h2 = connect(listen).await;
    // gRPC's `te: trailers` is the one `te` HTTP/2 allows: it stays.
    let req = http::Request::builder().method("GET").uri("http://a.test/x").header("te", "trailers").body(()).unwrap();
    // The upstream's h2 codec would refuse the stream if any got through.
    assert_eq!(head(&h2, req).await.status(), 200, "{}", proxy.log());
    assert_eq!(backend.last_header("x-kept").as_deref(), Some("yes"));
    assert_eq!(backend.last_header("te").as_deref(), Some("trailers"));
    for name in ["keep-alive", "proxy-connection"] {
        assert_eq!(backend.last_header(name), None, "{name}");
    }
}

#[tokio::test]
async fn a_client_reset_mid_response_cancels_the_upstream_stream() {
    let listener = TcpListener::bind((ip(74, 10), 0)).await.unwrap();
    let (proxy, listen, admin) = proxy_to(10, listener.local_addr().unwrap(), "", "").await;
    let h2 = connect(listen).await;
    let mut send = h2.clone().ready().await.unwrap();
    let req = http::Request::builder().method("GET").uri("http://front.example/stream").body(()).unwrap();
    let (resp, _) = send.send_request(req, true).unwrap();
    let mut up = RawUpstream::accept(&listener).await;
    up.write(4, 0, 0, &[]).await;
    let headers = up.until(1, true).await;
    // The head (`:status: 200`, END_HEADERS) and a first DATA frame; the
    // response goes on.
    up.write(1, 0x4, headers.stream, &[0x88]).await;
    up.write(0, 0, headers.stream, b"first").await;
    let resp = tokio::time::timeout(LIMIT, resp).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(LIMIT, body.data()).await.unwrap().unwrap().unwrap();
    assert_eq!(&first[..], b"first");
    // The client resets: the upstream stream is cancelled.
    drop(body);
    let reset = up.until(3, true).await;
    assert_eq!((reset.stream, reset.payload.as_slice()), (headers.stream, &8u32.to_be_bytes()[..]), "{}", proxy.log());
    let deadline = Instant::now() + Duration::from_secs(2);
    while stat(admin, "http.front.downstream_rq_active").await != 0 {
        assert!(Instant::now() < deadline, "{}", proxy.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stat(admin, "cluster.up.upstream_rq_active").await, 0);
}

#[tokio::test]
async fn a_stream_the_proxy_fails_for_a_protocol_error_is_not_sent_again() {
    let listener = TcpListener::bind((ip(74, 11), 0)).await.unwrap();
    let (proxy, listen, admin) = proxy_to(11, listener.local_addr().unwrap(), "", "").await;
    let h2 = connect(listen).await;
    let call = tokio::spawn(async move { request(&h2, "POST", "http://front.example/once", b"").await });
    let mut up = RawUpstream::accept(&listener).await;
    up.write(4, 0, 0, &[]).await;
    up.until(1, true).await;
    // A connection WINDOW_UPDATE of 0: a connection error. The proxy's h2
    // fails every stream on it with a GOAWAY of its own; the host may have
    // acted on the request, so it must not go again.
    up.write(8, 0, 0, &0u32.to_be_bytes()).await;
    let (status, _) = call.await.unwrap().unwrap();
    // Envoy's upstream protocol error; Pingora's path calls it a reset.
    assert_eq!(status, if pingora_engine() { 503 } else { 502 }, "{}", proxy.log());
    let again = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await;
    assert!(again.is_err(), "the request went out again");
    assert_eq!(stat(admin, "cluster.up.upstream_cx_total").await, 1);
}

#[tokio::test]
async fn streams_waiting_for_a_connection_time_out_without_cancelling_it() {
    if pingora_engine() {
        // Pingora's path waits for the connect timeout: 503 (docs/http1.md).
        return;
    }
    // A host that takes TCP connections and never answers the TLS
    // handshake: the connect runs until the cluster's 2 s connect timeout.
    let listener = TcpListener::bind((ip(74, 12), 0)).await.unwrap();
    let host = listener.local_addr().unwrap();
    let listen = free_addr(ip(74, 12));
    let admin = free_addr(ip(74, 12));
    let tls = format!(
        r#"    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
{}"#,
        h2c("", "")
    );
    let cluster = yaml::cluster("up", "STATIC", &[(host.ip().to_string(), host.port())], &tls)
        .replace("connect_timeout: 0.25s", "connect_timeout: 2s");
    let config = yaml::bootstrap_with_admin(
        admin,
        &[yaml::route_listener(listen, "front", &[("/", "cluster: up, timeout: 0.3s")])],
        &[cluster],
    );
    let proxy = ProxyProcess::live(&config, admin).await;
    let h2 = connect(listen).await;
    let started = Instant::now();
    let calls = (0..3).map(|_| request(&h2, "GET", "http://front.example/x", b""));
    let accepted = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let at = Instant::now();
        let mut buf = [0u8; 1024];
        while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
        let open_for = at.elapsed();
        // No second connection while the first was being opened.
        let second = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        (open_for, second.is_ok())
    });
    for got in futures::future::join_all(calls).await {
        let (status, body) = got.unwrap();
        assert_eq!(
            (status, String::from_utf8_lossy(&body).as_ref()),
            (504, "upstream request timeout"),
            "{}",
            proxy.log()
        );
    }
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    let (open_for, second) = accepted.await.unwrap();
    // The connect went on after the streams gave up, to its own timeout.
    assert!(open_for > Duration::from_millis(1500), "the connect was cancelled after {open_for:?}");
    assert!(!second, "a second connection was opened while the first was");
    assert_eq!(stat(admin, "cluster.up.upstream_rq_timeout").await, 3);
    assert_eq!(stat(admin, "cluster.up.upstream_cx_connect_timeout").await, 1, "{}", proxy.log());
}

#[tokio::test]
async fn the_date_is_the_upstreams_or_the_proxys_and_connection_specific_response_fields_never_reach_the_client() {
    let backend = Backend::start("up", SocketAddr::new(ip(74, 13), 0)).await;
    let routes = r#"            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/x" }
                route: { cluster: up }
                response_headers_to_add:
                - header: { key: keep-alive, value: "timeout=5" }
                - header: { key: proxy-connection, value: keep-alive }
                - header: { key: x-kept, value: "yes" }
              - match: { prefix: "/" }
                route: { cluster: up }
                response_headers_to_add: [{ header: { key: x-kept, value: "yes" } }]
                response_headers_to_remove: [date]"#;
    let (proxy, listen) = proxy_routing(13, backend.addr, routes, "").await;
    let h2 = connect(listen).await;
    let old = "Sun, 06 Nov 1994 08:49:37 GMT";
    // `/undated` removes the upstream's `date`: the proxy adds its own after the edits.
    for (path, upstream_date) in [("/x", Some(old)), ("/x", None), ("/undated", Some(old))] {
        let mut req = http::Request::builder().method("GET").uri(format!("http://a.test{path}"));
        if let Some(date) = upstream_date {
            // The backend answers `date: <date>` (and then adds none of its own).
            req = req.header("x-echo-date", date);
        }
        let resp = head(&h2, req.body(()).unwrap()).await;
        assert_eq!(resp.status(), 200, "{}", proxy.log());
        let headers = resp.headers();
        assert_eq!(headers["x-kept"], "yes");
        for name in ["keep-alive", "proxy-connection"] {
            assert!(!headers.contains_key(name), "{name} reached the client");
        }
        let dates: Vec<_> = headers.get_all("date").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(dates.len(), 1, "{dates:?}");
        let date = httpdate::parse_http_date(dates[0]).expect("an HTTP date");
        match upstream_date {
            // Envoy keeps the upstream's `date` (Pingora's engine writes its own).
            Some(sent) if path == "/x" && !pingora_engine() => assert_eq!(dates[0], sent),
            _ => {
                let age = std::time::SystemTime::now().duration_since(date).unwrap_or_default();
                assert!(age < Duration::from_secs(5), "{dates:?}");
            }
        }
    }
}
