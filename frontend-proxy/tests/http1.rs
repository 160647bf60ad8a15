//! HTTP/1.1 on the wire, end to end over real sockets: body framings
//! (chunked, close-delimited, HEAD), pipelining, streamed uploads, interim
//! responses, stale pooled upstream connections, header edits, malformed
//! requests, and requests the native engine hands to Pingora mid-connection.
//! Backends here are scripted at the byte level. Addresses: 127.0.9.x.
//!
//! These run the native HTTP/1 engine (the default). The other suites also
//! run with `FRONTEND_PROXY_HTTP1_ENGINE=pingora` in CI; Pingora's engine
//! differs here: it forwards 1xx interim responses, closes pipelined
//! connections, and keeps a connection open after a 431.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::raw::{eof_within, ok, read_response, ScriptedBackend, Seen};
use support::{free_addr, ip, yaml, ProxyProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Whether the peer closed the connection (within a second).
async fn closed(s: &mut TcpStream) -> bool {
    eof_within(s, Duration::from_secs(1)).await
}

struct Stack {
    backend: ScriptedBackend,
    proxy: ProxyProcess,
    listen: SocketAddr,
    admin: SocketAddr,
}

async fn stack(host: u8, script: fn(&Seen) -> (Vec<u8>, bool), route_extra: &str) -> Stack {
    let backend = ScriptedBackend::start(ip(9, host), script).await;
    let (proxy, listen, admin) = proxy_to(host, backend.addr, route_extra).await;
    Stack { backend, proxy, listen, admin }
}

/// HTTP/1.0 is served here (Envoy's default answers it 426: tests/framing).
const ACCEPT_HTTP10: &str = "          http_protocol_options: { accept_http_10: true }";

/// A proxy on 127.0.9.`host` with one route to `backend`; its listener and admin addresses.
async fn proxy_to(host: u8, backend: SocketAddr, route_extra: &str) -> (ProxyProcess, SocketAddr, SocketAddr) {
    let listen = free_addr(ip(9, host));
    let admin = free_addr(ip(9, host));
    let vhosts = format!(
        r#"
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: raw }}{route_extra}"#
    );
    let endpoints = [(backend.ip().to_string(), backend.port())];
    let config = format!(
        "{}{}",
        yaml::admin(admin),
        yaml::bootstrap(
            &[yaml::listener("http", listen, &yaml::hcm("h1", ACCEPT_HTTP10, &vhosts))],
            &[yaml::cluster("raw", "STATIC", &endpoints, "")]
        )
    );
    let proxy = ProxyProcess::start_with_args(&config, listen, &["--http1-engine", "native"]).await;
    (proxy, listen, admin)
}

fn framings(seen: &Seen) -> (Vec<u8>, bool) {
    match seen.path.as_str() {
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
                .to_vec(),
            false,
        ),
        "/until-close" => (b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec(), true),
        "/early-hints" => {
            (b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(), false)
        }
        "/upload" => (ok(&format!("{} bytes", seen.body.len())), false),
        "/no-content" => (b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), false),
        p if p.starts_with("/big/") => {
            let body = big_body(p[5..].parse().unwrap());
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            ([head.as_bytes(), &body].concat(), false)
        }
        p => (ok(p), false),
    }
}

/// `kib` KiB of a pattern that shows a lost, repeated or reordered byte.
fn big_body(kib: usize) -> Vec<u8> {
    (0..kib * 1024).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn large_responses_arrive_intact_on_a_kept_alive_connection() {
    // After the first large body the upstream buffer has room for a whole
    // response, so later heads go out beside large body parts (vectored).
    let t = stack(9, framings, "").await;
    let mut c = TcpStream::connect(t.listen).await.unwrap();
    let mut buf = Vec::new();
    for kib in [1, 64, 300, 64, 5, 64] {
        c.write_all(format!("GET /big/{kib} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await.unwrap();
        let r = read_response(&mut c, &mut buf, "GET").await;
        assert_eq!(r.status, 200);
        assert!(r.body == big_body(kib), "{kib} KiB body differs (got {} bytes)", r.body.len());
    }
    assert!(buf.is_empty(), "unexpected bytes after the responses");
}

#[tokio::test]
async fn chunked_close_delimited_and_empty_bodies_pass_through() {
    let t = stack(1, framings, "").await;
    let mut c = TcpStream::connect(t.listen).await.unwrap();
    let mut buf = Vec::new();
    for (method, path, want_status, want_body) in [
        ("GET", "/chunked", 200, &b"hello world"[..]),
        ("HEAD", "/head", 200, b""),
        ("GET", "/no-content", 204, b""),
        ("GET", "/early-hints", 200, b"ok"),
        ("GET", "/after", 200, b"/after"),
    ] {
        c.write_all(format!("{method} {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await.unwrap();
        let r = read_response(&mut c, &mut buf, method).await;
        assert_eq!(r.status, want_status, "{path}: {r:?}");
        assert_eq!(r.body, want_body, "{path}");
        assert!(r.header("x-envoy-upstream-service-time").is_some(), "{path}: {r:?}");
        assert_ne!(r.header("connection"), Some("close"), "{path}");
    }
    // The one interim response was dropped: a single 200 came back.
    assert!(buf.is_empty(), "unexpected bytes after the responses: {buf:?}");
    // A body delimited by the upstream's close ends the client connection too.
    c.write_all(b"GET /until-close HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let r = read_response(&mut c, &mut buf, "GET").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"until the end"[..]));
    assert_eq!(r.header("connection"), Some("close"));
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_pooled_connections() {
    let t = stack(2, framings, "").await;
    let mut c = TcpStream::connect(t.listen).await.unwrap();
    let mut buf = Vec::new();
    let mut batch = String::new();
    for i in 0..5 {
        batch.push_str(&format!("GET /p{i} HTTP/1.1\r\nHost: t\r\n\r\n"));
    }
    c.write_all(batch.as_bytes()).await.unwrap();
    for i in 0..5 {
        let r = read_response(&mut c, &mut buf, "GET").await;
        assert_eq!(String::from_utf8_lossy(&r.body), format!("/p{i}"));
    }
    // Sequential requests reuse one upstream connection.
    assert_eq!(t.backend.connections(), 1);
}

#[tokio::test]
async fn large_upload_streams_to_the_upstream() {
    let t = stack(3, framings, "").await;
    let mut c = TcpStream::connect(t.listen).await.unwrap();
    let mut buf = Vec::new();
    let body = vec![b'x'; 3 * 1024 * 1024 + 7];
    c.write_all(format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes())
        .await
        .unwrap();
    c.write_all(&body).await.unwrap();
    let r = read_response(&mut c, &mut buf, "POST").await;
    assert_eq!(String::from_utf8_lossy(&r.body), format!("{} bytes", body.len()));
    // The connection is still good for the next request.
    c.write_all(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut c, &mut buf, "GET").await.body, b"/next");
}

#[tokio::test]
async fn a_chunked_upload_streams_to_the_upstream_chunk_by_chunk() {
    let t = stack(13, framings, "").await;
    let mut c = TcpStream::connect(t.listen).await.unwrap();
    let mut buf = Vec::new();
    c.write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n").await.unwrap();
    // 2 MiB in chunks of varying size, written in pieces that split chunk
    // lines, with extensions and a trailer the proxy drops.
    let mut wire = Vec::new();
    let mut sent = 0usize;
    for i in 0..600usize {
        let size = 1000 + (i * 37) % 5000;
        wire.extend_from_slice(format!("{size:x};n={i}\r\n").as_bytes());
        wire.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, size));
        wire.extend_from_slice(b"\r\n");
        sent += size;
    }
    wire.extend_from_slice(b"0\r\nX-Checksum: 1\r\n\r\n");
    for piece in wire.chunks(7919) {
        c.write_all(piece).await.unwrap();
    }
    let r = read_response(&mut c, &mut buf, "POST").await;
    assert_eq!(String::from_utf8_lossy(&r.body), format!("{sent} bytes"));
    let seen = t.backend.requests();
    let upload = seen.iter().find(|s| s.path == "/upload").expect("the backend got the upload");
    assert!(upload.header("x-checksum").is_none(), "trailer fields are dropped");
    // The connection is still good for the next request.
    c.write_all(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut c, &mut buf, "GET").await.body, b"/next");
}

#[tokio::test]
async fn an_upstream_answering_before_the_upload_ends_is_forwarded() {
    // As a server enforcing an upload limit: 413 as soon as the head is in,
    // then close without reading the body (the kernel resets the connection).
    let listener = TcpListener::bind(SocketAddr::new(ip(9, 8), 0)).await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).await.is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = s
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!")
                .await;
        }
    });
    let (_proxy, listen, _) = proxy_to(8, backend, "").await;
    let mut c = TcpStream::connect(listen).await.unwrap();
    let body = vec![b'x'; 8 * 1024 * 1024];
    c.write_all(format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes())
        .await
        .unwrap();
    // The client keeps sending while the answer comes back; the proxy stops
    // reading the body, so the write may fail once the connection closes.
    let (mut rd, mut wr) = c.into_split();
    let sender = tokio::spawn(async move {
        let _ = wr.write_all(&body).await;
        wr
    });
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
            _ => break,
        }
        if got.ends_with(b"too big!") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 413"), "the upstream's answer was not forwarded: {text:?}");
    assert!(text.to_ascii_lowercase().contains("connection: close"), "{text:?}");
    assert!(text.ends_with("too big!"), "{text:?}");
    sender.abort();
}

fn closes_after_idle(seen: &Seen) -> (Vec<u8>, bool) {
    // Advertises keep-alive but closes right after: the next request must
    // not be lost on the dead pooled connection.
    (ok(&seen.path), true)
}

#[tokio::test]
async fn upstream_closing_a_pooled_connection_loses_no_request() {
    let t = stack(4, closes_after_idle, "").await;
    let c = support::client();
    for i in 0..20 {
        let r = c.get(format!("http://{}/r{i}", t.listen)).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.text().await.unwrap(), format!("/r{i}"));
        if i % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}

#[tokio::test]
async fn requests_the_native_engine_does_not_serve_still_work_on_the_same_connection() {
    let t = stack(5, framings, "").await;
    let mut c = TcpStream::connect(t.listen).await.unwrap();
    let mut buf = Vec::new();
    c.write_all(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut c, &mut buf, "GET").await.body, b"/first");
    // A chunked request body goes to Pingora, on the same connection.
    c.write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut c, &mut buf, "POST").await;
    assert_eq!((r.status, String::from_utf8_lossy(&r.body).as_ref()), (200, "3 bytes"));
    let mut c = TcpStream::connect(t.listen).await.unwrap();
    let mut buf = Vec::new();
    c.write_all(b"GET /old HTTP/1.0\r\nHost: t\r\n\r\n").await.unwrap();
    let r = read_response(&mut c, &mut buf, "GET").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"/old"[..]));
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_envoy_replies() {
    let t = stack(6, framings, "").await;
    for (request, status) in [
        ("GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_string(), 400),
        ("G@T / HTTP/1.1\r\nHost: t\r\n\r\n".to_string(), 400),
        (format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "a".repeat(70 * 1024)), 431),
        (format!("GET / HTTP/1.1\r\nHost: t\r\n{}\r\n", "X-Many: 1\r\n".repeat(101)), 431),
    ] {
        let mut c = TcpStream::connect(t.listen).await.unwrap();
        let mut buf = Vec::new();
        c.write_all(request.as_bytes()).await.unwrap();
        let r = read_response(&mut c, &mut buf, "GET").await;
        assert_eq!(r.status, status, "{}: {r:?}", &request[..40]);
        assert!(closed(&mut c).await, "connection left open after {status}");
    }
    assert_eq!(t.backend.connections(), 0, "a bad request reached the upstream");
    // Envoy's accounting: each is a protocol error and a 4xx request.
    for (name, n) in [("downstream_cx_protocol_error", 4), ("downstream_rq_4xx", 4), ("downstream_rq_total", 4)] {
        assert_eq!(support::stat(t.admin, &format!("http.h1.{name}")).await, n, "{name}");
    }
}

#[tokio::test]
async fn route_header_edits_apply_both_ways() {
    let edits = r#"
                request_headers_to_add:
                - header: { key: x-added, value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" }
                response_headers_to_add:
                - header: { key: x-route, value: edited }
                response_headers_to_remove: [x-secret, date]"#;
    fn echo_added(seen: &Seen) -> (Vec<u8>, bool) {
        let added = seen.header("x-added").unwrap_or("missing");
        let head = format!(
            "HTTP/1.1 200 OK\r\nX-Secret: s\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: {}\r\n\r\n",
            added.len()
        );
        ([head.as_bytes(), added.as_bytes()].concat(), false)
    }
    let t = stack(7, echo_added, edits).await;
    let r = support::client().get(format!("http://{}/", t.listen)).send().await.unwrap();
    assert_eq!(r.headers()["x-route"], "edited");
    assert!(r.headers().get("x-secret").is_none());
    // The upstream's `date` is removed, and the proxy's own added after
    // the edits, as Envoy's connection manager does.
    let dates: Vec<_> = r.headers().get_all("date").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(dates.len(), 1, "{dates:?}");
    let date = httpdate::parse_http_date(dates[0]).expect("an HTTP date");
    assert!(std::time::SystemTime::now().duration_since(date).unwrap_or_default() < std::time::Duration::from_secs(5));
    assert!(r.headers().get("x-envoy-upstream-service-time").is_some());
    assert_eq!(r.headers()["server"], "envoy");
    // The client's address (it connects from 127.0.0.1).
    assert_eq!(r.text().await.unwrap(), "127.0.0.1");
    let _ = (&t.proxy, t.admin);
}
