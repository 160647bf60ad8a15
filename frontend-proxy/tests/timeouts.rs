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
use support::{free_addr, ip, yaml, ProxyProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that misbehaves by path: `.../hang` never answers, `/stall-body`
/// sends 10 of 1000 body bytes and stops, `/big` sends a 1 GiB body as fast
/// as it is read; anything else gets `200 ok`. It takes a port the kernel
/// picks on `ip`: a port probed free and bound later can be taken in between.
async fn backend(ip: IpAddr) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await.expect("bind backend");
    let addr = listener.local_addr().expect("backend addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(path) = read_head(&mut s, &mut buf).await else { return };
                    if path.ends_with("/hang") {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                    if path == "/stall-body" {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789").await;
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                    if path == "/big" {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n").await;
                        let chunk = vec![b'x'; 64 * 1024];
                        while s.write_all(&chunk).await.is_ok() {}
                        return;
                    }
                    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Reads up to the end of a request head (bodies are ignored); its path.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            buf.drain(..end + 4);
            return head.split(' ').nth(1).map(str::to_string);
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A response as the client saw it, and whether the proxy then closed the connection.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
    closed: bool,
}

/// Reads one response with a `Content-Length` body (within 10 s), then
/// checks whether the connection is closed.
async fn read_reply(s: &mut TcpStream) -> Reply {
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut chunk = [0u8; 4096];
    let (status, len, head_end) = loop {
        let mut storage = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut storage);
        if let Ok(httparse::Status::Complete(n)) = resp.parse(&buf) {
            let len = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| String::from_utf8_lossy(h.value).parse::<usize>().unwrap())
                .unwrap_or(0);
            break (resp.code.unwrap(), len, n);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            other => panic!("no response head: {other:?}, got {:?}", String::from_utf8_lossy(&buf)),
        }
    };
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.expect("body");
        assert!(n > 0, "connection closed in the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
    Reply { status, body, closed: closes_within(s, Duration::from_secs(1)).await }
}

/// Whether the peer closes the connection within `limit` (data is skipped).
async fn closes_within(s: &mut TcpStream, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

struct Stack {
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
    let endpoints = [(backend.ip().to_string(), backend.port())];
    let config = format!(
        "{}{}",
        yaml::admin(admin),
        yaml::bootstrap(
            &[yaml::listener("http", listen, &yaml::hcm("timers", hcm_extra, &vhosts))],
            &[yaml::cluster("slow", "STATIC", &endpoints, "")]
        )
    );
    let proxy = ProxyProcess::start_with_args(&config, listen, args).await;
    Stack { proxy, listen, admin }
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
