//! The connection manager's timers, end to end over real sockets:
//! `stream_idle_timeout` (and a route's `idle_timeout` overriding it),
//! `request_timeout`, and `common_http_protocol_options.idle_timeout`,
//! with Envoy's 408 local replies and `http.<prefix>.downstream_rq_*`
//! counters. Backends here hang, stall or flood on purpose.
//! Addresses: 127.0.10.x.
//!
//! Runs with either HTTP/1 engine (CI runs it again with
//! `FRONTEND_PROXY_HTTP1_ENGINE=pingora`); chunked request bodies always
//! go through Pingora's.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use support::raw::{closes_within, ok, read_reply, Answer, Reply, ScriptedBackend};
use support::{free_addr, ip, yaml, ProxyProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A backend that misbehaves by path: `.../hang` never answers, `/stall-body`
/// sends 10 of 1000 body bytes and stops, `/big` sends a 1 GiB body as fast
/// as it is read; anything else gets `200 ok`.
async fn backend(ip: IpAddr) -> ScriptedBackend {
    ScriptedBackend::start(ip, |seen| {
        let stall = Duration::from_secs(30);
        match seen.path.as_str() {
            p if p.ends_with("/hang") => Answer::default().then_sleep(stall).then_close(),
            "/stall-body" => Answer::send(&b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789"[..])
                .then_sleep(stall)
                .then_close(),
            "/big" => Answer::send(&b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n"[..])
                .then_flood(vec![b'x'; 64 * 1024])
                .then_close(),
            _ => Answer::send(ok("ok")),
        }
    })
    .await
}

struct Stack {
    _backend: ScriptedBackend,
    proxy: ProxyProcess,
    listen: SocketAddr,
    admin: SocketAddr,
}

/// A proxy with connection manager settings `hcm_extra` and `routes` (YAML
/// list items) to one misbehaving backend.
async fn stack(host: u8, hcm_extra: &str, routes: &str) -> Stack {
    stack_with(host, hcm_extra, routes, &[]).await
}

async fn stack_with(host: u8, hcm_extra: &str, routes: &str, args: &[&str]) -> Stack {
    let backend = backend(ip(10, host)).await;
    let listen = free_addr(ip(10, host));
    let admin = free_addr(ip(10, host));
    let vhosts = format!(
        r#"
            - name: all
              domains: ["*"]
              routes:{routes}"#
    );
    let endpoints = [(backend.addr.ip().to_string(), backend.addr.port())];
    let config = format!(
        "{}{}",
        yaml::admin(admin),
        yaml::bootstrap(
            &[yaml::listener("http", listen, &yaml::hcm("timers", hcm_extra, &vhosts))],
            &[yaml::cluster("slow", "STATIC", &endpoints, "")]
        )
    );
    let proxy = ProxyProcess::start_with_args(&config, listen, args).await;
    Stack { _backend: backend, proxy, listen, admin }
}

impl Stack {
    /// Sends raw request bytes on a new connection and reads the reply.
    async fn exchange(&self, request: &[u8]) -> (Reply, Duration) {
        let mut c = TcpStream::connect(self.listen).await.unwrap();
        let start = Instant::now();
        c.write_all(request).await.unwrap();
        let reply = read_reply(&mut c).await;
        (reply, start.elapsed())
    }

    /// `http.timers.<name>` from `/stats`.
    async fn counter(&self, name: &str) -> u64 {
        support::stat(self.admin, &format!("http.timers.{name}")).await
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: timers\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn stream_idle_timeout_answers_408_while_the_upstream_is_silent() {
    let routes = r#"
              - match: { prefix: "/off/" }
                route: { cluster: slow, timeout: 1s, idle_timeout: 0s }
              - match: { prefix: "/long/" }
                route: { cluster: slow, timeout: 0s, idle_timeout: 1.2s }
              - match: { prefix: "/" }
                route: { cluster: slow, timeout: 0s }"#;
    let t = stack(1, "          stream_idle_timeout: 0.3s", routes).await;

    // No route timeout: the connection manager's stream idle timeout ends it.
    let (r, took) = t.exchange(&get("/hang")).await;
    assert_eq!((r.status, r.body.as_str()), (408, "stream timeout"), "{r:?}");
    assert!(took >= Duration::from_millis(250), "answered before the idle timeout: {took:?}");
    assert_eq!(t.counter("downstream_rq_idle_timeout").await, 1);

    // The route's idle_timeout overrides it: longer here...
    let (r, took) = t.exchange(&get("/long/hang")).await;
    assert_eq!((r.status, r.body.as_str()), (408, "stream timeout"), "{r:?}");
    assert!(took >= Duration::from_millis(1100), "the route's 1.2 s idle timeout was not used: {took:?}");

    // ...and 0s turns it off, leaving the route timeout (504, not 408).
    let (r, _) = t.exchange(&get("/off/hang")).await;
    assert_eq!((r.status, r.body.as_str()), (504, "upstream request timeout"), "{r:?}");
    assert_eq!(t.counter("downstream_rq_idle_timeout").await, 2);
    let _ = &t.proxy;
}

#[tokio::test]
async fn a_response_body_that_stalls_is_cut_at_the_idle_timeout() {
    let routes = r#"
              - match: { prefix: "/" }
                route: { cluster: slow, timeout: 0s }"#;
    let t = stack(2, "          stream_idle_timeout: 1s", routes).await;
    // Also on a connection the client closes after the response: the end of
    // such a response is held for the FIN (`MSG_MORE`), what comes before
    // it must not be.
    // Pingora's engine holds a `Content-Length` body until it is complete
    // (it flushes only bodies without a length): what arrived comes out
    // when the idle timeout ends the stream.
    let pingora = support::pingora_engine();
    let first_bytes_within = Duration::from_millis(if pingora { 5000 } else { 800 });
    let keep_alive = get("/stall-body");
    let close = b"GET /stall-body HTTP/1.1\r\nHost: timers\r\nConnection: close\r\n\r\n".to_vec();
    for (i, request) in [keep_alive, close].into_iter().enumerate() {
        let mut c = TcpStream::connect(t.listen).await.unwrap();
        c.write_all(&request).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(10).any(|w| w == b"0123456789") {
            // Well inside the idle timeout's cut (1 s): bytes held for a close would come with it.
            let n = tokio::time::timeout(first_bytes_within, c.read(&mut buf)).await;
            let n = n.unwrap_or_else(|_| panic!("request {i}: the head and first body bytes were held back")).unwrap();
            assert!(n > 0, "closed before the first body bytes");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
        // The head went out: the only signal left is closing the connection.
        assert!(closes_within(&mut c, Duration::from_secs(5)).await, "connection not closed after the body stalled");
        assert_eq!(t.counter("downstream_rq_idle_timeout").await, i as u64 + 1);
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_at_the_idle_timeout() {
    let routes = r#"
              - match: { prefix: "/" }
                route: { cluster: slow }"#;
    let t = stack(3, "          stream_idle_timeout: 0.3s", routes).await;
    let mut c = TcpStream::connect(t.listen).await.unwrap();
    c.write_all(&get("/big")).await.unwrap();
    // Reads nothing: the proxy's writes stop once the socket buffers fill.
    assert!(
        support::eventually(Duration::from_secs(15), || async { t.counter("downstream_rq_idle_timeout").await == 1 })
            .await,
        "the idle timeout did not end a response the client stopped reading"
    );
    assert!(closes_within(&mut c, Duration::from_secs(10)).await, "connection not closed");
}

#[tokio::test]
async fn request_timeout_answers_408_when_the_body_stops_arriving() {
    let routes = r#"
              - match: { prefix: "/" }
                route: { cluster: slow }"#;
    let t = stack(4, "          request_timeout: 0.4s", routes).await;

    // 10 of 100 bytes, then nothing.
    let (r, took) =
        t.exchange(b"POST /upload/hang HTTP/1.1\r\nHost: timers\r\nContent-Length: 100\r\n\r\n0123456789").await;
    assert_eq!((r.status, r.body.as_str()), (408, "request timeout"), "{r:?}");
    assert!(took >= Duration::from_millis(350), "answered before the request timeout: {took:?}");
    assert!(r.closed, "a connection with an unread body must close");

    // The same with a chunked body (Pingora's engine in either mode).
    let (r, _) = t
        .exchange(
            b"POST /upload/hang HTTP/1.1\r\nHost: timers\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n",
        )
        .await;
    assert_eq!((r.status, r.body.as_str()), (408, "request timeout"), "{r:?}");
    assert!(r.closed, "a connection with an unread body must close");
    assert_eq!(t.counter("downstream_rq_timeout").await, 2);
    assert_eq!(t.counter("downstream_rq_idle_timeout").await, 0);

    // A complete request is not affected, and the connection stays usable.
    let mut c = TcpStream::connect(t.listen).await.unwrap();
    for _ in 0..2 {
        c.write_all(&get("/fine")).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.ends_with(b"ok") {
            let n = c.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed");
            buf.extend_from_slice(&chunk[..n]);
        }
        assert!(buf.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout() {
    let routes = r#"
              - match: { prefix: "/" }
                route: { cluster: slow }"#;
    let t = stack(5, "          common_http_protocol_options: { idle_timeout: 1s }", routes).await;
    let mut c = TcpStream::connect(t.listen).await.unwrap();
    c.write_all(&get("/fine")).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = c.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let idle = Instant::now();
    assert!(closes_within(&mut c, Duration::from_secs(5)).await, "idle connection kept open");
    assert!(idle.elapsed() >= Duration::from_millis(900), "closed before the idle timeout: {:?}", idle.elapsed());
    let _ = t.admin;
}

#[tokio::test]
async fn a_request_head_that_stops_arriving_gets_408() {
    let routes = r#"
              - match: { prefix: "/" }
                route: { cluster: slow }"#;
    // The native engine reads heads itself and answers as Envoy does;
    // Pingora's closes the connection at the same deadline.
    let hcm = "          request_timeout: 0.4s\n          stream_idle_timeout: 2s";
    let t = stack_with(6, hcm, routes, &["--http1-engine", "native"]).await;
    let (r, took) = t.exchange(b"GET /fine HTTP/1.1\r\nHost: tim").await;
    assert_eq!((r.status, r.body.as_str()), (408, "request timeout"), "{r:?}");
    assert!(took >= Duration::from_millis(350), "answered before the request timeout: {took:?}");
    assert!(r.closed);
    assert_eq!(t.counter("downstream_rq_timeout").await, 1);
    // Counted and logged as a request (a 4xx), but not a protocol error.
    assert_eq!(t.counter("downstream_rq_4xx").await, 1);
    assert_eq!(t.counter("downstream_rq_total").await, 1);
    assert_eq!(t.counter("downstream_cx_protocol_error").await, 0);

    let hcm = "          stream_idle_timeout: 0.3s";
    let t = stack_with(7, hcm, routes, &["--http1-engine", "native"]).await;
    let (r, _) = t.exchange(b"GET /fine HTTP/1.1\r\nHost: tim").await;
    assert_eq!((r.status, r.body.as_str()), (408, "stream timeout"), "{r:?}");
    assert_eq!(t.counter("downstream_rq_idle_timeout").await, 1);

    // request_headers_timeout: Envoy's own reply and counter.
    let hcm = "          request_headers_timeout: 0.3s\n          request_timeout: 5s";
    let t = stack_with(9, hcm, routes, &["--http1-engine", "native"]).await;
    let (r, took) = t.exchange(b"GET /fine HTTP/1.1\r\nHost: tim").await;
    assert_eq!((r.status, r.body.as_str()), (408, "request header timeout"), "{r:?}");
    assert!(took >= Duration::from_millis(250), "answered before the headers timeout: {took:?}");
    assert!(r.closed);
    assert_eq!(t.counter("downstream_rq_header_timeout").await, 1);
    assert_eq!(t.counter("downstream_rq_timeout").await, 0);

    let t = stack_with(8, "          request_timeout: 0.4s", routes, &["--http1-engine", "pingora"]).await;
    let mut c = TcpStream::connect(t.listen).await.unwrap();
    c.write_all(b"GET /fine HTTP/1.1\r\nHost: tim").await.unwrap();
    assert!(closes_within(&mut c, Duration::from_secs(5)).await, "Pingora's engine kept a stalled head open");
}

#[tokio::test]
async fn max_stream_duration_answers_408_and_routes_override_it() {
    let routes = r#"
              - match: { prefix: "/off/" }
                route: { cluster: slow, timeout: 1s, max_stream_duration: { max_stream_duration: 0s } }
              - match: { prefix: "/long/" }
                route: { cluster: slow, timeout: 0s, max_stream_duration: { max_stream_duration: 1.5s } }
              - match: { prefix: "/" }
                route: { cluster: slow, timeout: 0s }"#;
    let hcm = "          common_http_protocol_options: { max_stream_duration: 0.5s }";
    let t = stack(11, hcm, routes).await;

    // The connection manager's limit, while the upstream is silent.
    let (r, took) = t.exchange(&get("/hang")).await;
    assert_eq!((r.status, r.body.as_str()), (408, "downstream duration timeout"), "{r:?}");
    assert!(took >= Duration::from_millis(450), "answered before max_stream_duration: {took:?}");
    assert!(took < Duration::from_millis(1400), "answered long after max_stream_duration: {took:?}");
    assert_eq!(t.counter("downstream_rq_max_duration_reached").await, 1);

    // A route's own limit replaces it...
    let (r, took) = t.exchange(&get("/long/hang")).await;
    assert_eq!((r.status, r.body.as_str()), (408, "downstream duration timeout"), "{r:?}");
    assert!(took >= Duration::from_millis(1400), "the route's 1.5 s was not used: {took:?}");

    // ...and 0s turns it off, leaving the route timeout (504).
    let (r, took) = t.exchange(&get("/off/hang")).await;
    assert_eq!((r.status, r.body.as_str()), (504, "upstream request timeout"), "{r:?}");
    assert!(took >= Duration::from_millis(950), "{took:?}");
    assert_eq!(t.counter("downstream_rq_max_duration_reached").await, 2);

    // A quick request is not affected.
    let (r, _) = t.exchange(&get("/fine")).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{r:?}");
}

#[tokio::test]
async fn max_stream_duration_ends_a_response_that_outlives_it() {
    let routes = r#"
              - match: { prefix: "/" }
                route: { cluster: slow, timeout: 0s, max_stream_duration: { max_stream_duration: 0.6s } }"#;
    let t = stack(12, "", routes).await;
    let mut c = TcpStream::connect(t.listen).await.unwrap();
    let start = Instant::now();
    c.write_all(&get("/stall-body")).await.unwrap();
    // The head went out (the native engine sends it at once): the stream
    // can only end by closing the connection, well before the backend's 30 s.
    assert!(closes_within(&mut c, Duration::from_secs(5)).await, "connection not closed after max_stream_duration");
    assert!(start.elapsed() >= Duration::from_millis(550), "closed early: {:?}", start.elapsed());
    assert_eq!(t.counter("downstream_rq_max_duration_reached").await, 1);
}

#[test]
/// A route's whole-stream limit and its gRPC timeout fields load together
/// (the limit is this suite's; `grpc-timeout` is tests/grpc.rs's).
fn max_stream_duration_loads_beside_the_grpc_timeout_fields() {
    let listen: SocketAddr = "127.0.10.13:1".parse().unwrap();
    let routes = r#"
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route:
                  cluster: slow
                  max_stream_duration: { max_stream_duration: 5s, grpc_timeout_header_max: 0s }"#;
    let config = yaml::bootstrap(
        &[yaml::listener("http", listen, &yaml::hcm("timers", "", routes))],
        &[yaml::cluster("slow", "STATIC", &[("127.0.0.1".into(), 1)], "")],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(support::proxy::binary())
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"), "{stderr}");
}

#[tokio::test]
async fn max_stream_duration_runs_while_the_head_arrives() {
    let routes = r#"
              - match: { prefix: "/" }
                route: { cluster: slow }"#;
    // The native engine reads heads itself; the connection manager's limit
    // runs from the first byte, as Envoy's does from the stream's start.
    let hcm =
        "          common_http_protocol_options: { max_stream_duration: 0.4s }\n          stream_idle_timeout: 5s";
    let t = stack_with(14, hcm, routes, &["--http1-engine", "native"]).await;
    let (r, took) = t.exchange(b"GET /fine HTTP/1.1\r\nHost: tim").await;
    assert_eq!((r.status, r.body.as_str()), (408, "downstream duration timeout"), "{r:?}");
    assert!(took >= Duration::from_millis(350), "answered before max_stream_duration: {took:?}");
    assert!(r.closed);
    assert_eq!(t.counter("downstream_rq_max_duration_reached").await, 1);
}
