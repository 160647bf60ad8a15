//! HTTP/2 clients in front of HTTP/1.1 upstreams (the native engine's
//! downgrade, and Pingora's path with `FRONTEND_PROXY_HTTP1_ENGINE=pingora`):
//! what the upstream receives, byte for byte, and what the h2 client gets.
//! The upstream is a scripted raw-TCP server that records every byte.
//! Addresses: 127.0.55.x.

mod support;

use bytes::Bytes;
use h2::client::SendRequest;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use support::raw::{ok, Answer, ScriptedBackend};
use support::yaml;
use support::{free_addr, ip, pingora_engine, ProxyProcess, LIMIT};
use tokio::net::TcpStream;

/// Routes: `/retry` retries 5xx once, `/slow` times out after 300 ms,
/// `/empty` goes to a cluster with no hosts, `/edit` adds headers both
/// ways, anything else goes to `up`.
fn routes() -> String {
    r#"            - name: all
              domains: ["*"]
              routes:
              - name: retry_route
                match: { prefix: "/retry" }
                route: { cluster: up, retry_policy: { retry_on: 5xx, num_retries: 1 } }
              - match: { prefix: "/slow" }
                route: { cluster: up, timeout: 0.3s }
              - match: { prefix: "/empty" }
                route: { cluster: empty }
              - match: { prefix: "/edit" }
                route: { cluster: up }
                request_headers_to_add:
                - { header: { key: x-added, value: "%PROTOCOL%" } }
                - { header: { key: x-host, value: "%REQ(host)%" } }
                request_headers_to_remove: [x-secret]
                response_headers_to_add: [{ header: { key: x-resp-added, value: "yes" } }]
              - name: main_route
                match: { prefix: "/" }
                route: { cluster: up }"#
        .to_string()
}

fn config(listen: SocketAddr, up: SocketAddr, log: Option<&Path>) -> String {
    let mut extra = "          codec_type: AUTO".to_string();
    if let Some(log) = log {
        extra.push_str(&format!(
            r#"
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {}
              log_format:
                text_format_source:
                  inline_string: "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_CLUSTER% %UPSTREAM_HOST% %ROUTE_NAME% %RESPONSE_CODE_DETAILS%\n""#,
            log.display()
        ));
    }
    yaml::bootstrap(
        &[yaml::listener("main", listen, &yaml::hcm("ingress_http", &extra, &routes()))],
        &[
            yaml::cluster("up", "STATIC", &[(up.ip().to_string(), up.port())], ""),
            yaml::cluster("empty", "STATIC", &[], ""),
        ],
    )
}

async fn start<F, A>(host: u8, script: F) -> (ScriptedBackend, ProxyProcess, SocketAddr)
where
    F: Fn(&support::raw::Seen) -> A + Send + Sync + 'static,
    A: Into<Answer>,
{
    let up = ScriptedBackend::start(ip(55, host), script).await;
    let listen = free_addr(ip(55, host));
    let proxy = ProxyProcess::start(&config(listen, up.addr, None), listen).await;
    (up, proxy, listen)
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

/// What the client got on one stream.
#[derive(Debug)]
struct Got {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

/// Sends a request with `headers` and the body in `data` (one DATA frame
/// each, END_STREAM on the last); `Err`: the stream was reset (or the
/// response never completed).
async fn request(
    send: &mut SendRequest<Bytes>,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    data: &[&[u8]],
) -> Result<Got, String> {
    let mut req = http::Request::builder().method(method).uri(uri);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req.body(()).unwrap();
    let work = async {
        let mut send = send.clone().ready().await.map_err(|e| e.to_string())?;
        let (resp, mut stream) = send.send_request(req, data.is_empty()).map_err(|e| e.to_string())?;
        for (i, d) in data.iter().enumerate() {
            stream.send_data(Bytes::copy_from_slice(d), i + 1 == data.len()).map_err(|e| e.to_string())?;
        }
        let resp = resp.await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut body_stream = resp.into_body();
        let mut body = Vec::new();
        while let Some(d) = body_stream.data().await {
            let d = d.map_err(|e| e.to_string())?;
            let _ = body_stream.flow_control().release_capacity(d.len());
            body.extend_from_slice(&d);
        }
        body_stream.trailers().await.map_err(|e| e.to_string())?;
        Ok(Got { status, headers, body })
    };
    tokio::time::timeout(LIMIT, work).await.unwrap_or_else(|_| Err("timed out".into()))
}

#[tokio::test]
async fn the_upstream_gets_an_http1_head_with_host_from_the_authority() {
    let (up, _proxy, listen) = start(1, |_| (ok("hello"), false)).await;
    let mut h2 = connect(listen).await;
    let got = request(&mut h2, "GET", "http://films.test:8080/a/b?c=d", &[("x-one", "1")], &[]).await.unwrap();
    assert_eq!((got.status, got.body.as_slice()), (200, &b"hello"[..]));
    let seen = &up.requests()[0];
    assert_eq!((seen.method.as_str(), seen.path.as_str(), seen.version), ("GET", "/a/b?c=d", 1));
    assert_eq!(seen.headers_named("host"), ["films.test:8080"]);
    assert_eq!(seen.header("x-one"), Some("1"));
    assert!(seen.header("content-length").is_none() && seen.header("transfer-encoding").is_none());
    let raw = String::from_utf8_lossy(&up.received()).into_owned();
    assert!(raw.starts_with("GET /a/b?c=d HTTP/1.1\r\n"), "{raw}");
    assert!(!raw.contains("\r\n:"), "a pseudo-header went upstream: {raw}");
    // A `host` that disagrees with `:authority` is refused on both engines.
    let got = request(&mut h2, "GET", "http://films.test/x", &[("host", "evil.test")], &[]).await.unwrap();
    assert_eq!(got.status, 400);
    let got = request(&mut h2, "GET", "http://films.test/y", &[("host", "films.test")], &[]).await.unwrap();
    assert_eq!(got.status, 200);
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].headers_named("host"), ["films.test"]);
}

#[tokio::test]
async fn a_declared_length_stays_and_an_unknown_one_goes_chunked() {
    let (up, _proxy, listen) = start(2, |_| (ok("ok"), false)).await;
    let mut h2 = connect(listen).await;
    let got = request(&mut h2, "POST", "http://a.test/len", &[("content-length", "11")], &[b"hello ", b"world"]).await;
    assert_eq!(got.unwrap().status, 200);
    let got = request(&mut h2, "POST", "http://a.test/chunked", &[], &[b"abc", b"", b"defg"]).await;
    assert_eq!(got.unwrap().status, 200);
    let seen = up.requests();
    assert_eq!(seen[0].header("content-length"), Some("11"));
    assert!(seen[0].header("transfer-encoding").is_none());
    assert_eq!(seen[0].body, b"hello world");
    assert_eq!(seen[1].header("transfer-encoding"), Some("chunked"));
    assert!(seen[1].header("content-length").is_none());
    assert_eq!(seen[1].body, b"abcdefg");
}

#[tokio::test]
async fn data_longer_or_shorter_than_its_length_never_makes_a_whole_upstream_request() {
    let (up, _proxy, listen) = start(3, |_| (ok("ok"), false)).await;
    let mut h2 = connect(listen).await;
    let cases: [(&str, &[&[u8]]); 3] = [("5", &[b"0123456789"]), ("5", &[b"01234", b"56789"]), ("10", &[b"01234"])];
    for (length, data) in cases {
        let got = request(&mut h2, "POST", "http://a.test/p", &[("content-length", length)], data).await;
        assert!(got.is_err() || got.as_ref().is_ok_and(|g| g.status == 400), "{length} {data:?}: {got:?}");
    }
    // Nothing complete reached the upstream, and the connection still serves.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(up.requests().is_empty(), "{:?}", up.requests());
    let mut h2 = connect(listen).await;
    let got = request(&mut h2, "POST", "http://a.test/p", &[("content-length", "3")], &[b"abc"]).await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(up.requests().len(), 1);
    assert_eq!(up.requests()[0].body, b"abc");
}

#[tokio::test]
async fn a_truncated_or_malformed_upstream_response_resets_the_stream() {
    let (_up, _proxy, listen) = start(4, |seen| {
        let answer = match seen.path.as_str() {
            "/short" => b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
            "/badchunk" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n".to_vec(),
            "/cutchunk" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n".to_vec(),
            _ => ok("fine"),
        };
        (answer, true)
    })
    .await;
    let mut h2 = connect(listen).await;
    for path in ["/short", "/badchunk", "/cutchunk"] {
        let got = request(&mut h2, "GET", &format!("http://a.test{path}"), &[], &[]).await;
        assert!(got.is_err(), "{path} looked complete: {got:?}");
    }
    let got = request(&mut h2, "GET", "http://a.test/next", &[], &[]).await.unwrap();
    assert_eq!((got.status, got.body.as_slice()), (200, &b"fine"[..]));
}

#[tokio::test]
async fn chunked_responses_arrive_as_their_content() {
    let (_up, _proxy, listen) = start(5, |_| {
        (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-Up: 1\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n".to_vec(), false)
    })
    .await;
    let mut h2 = connect(listen).await;
    let got = request(&mut h2, "GET", "http://a.test/c", &[], &[]).await.unwrap();
    assert_eq!((got.status, got.body.as_slice()), (201, &b"hello world"[..]));
    assert_eq!(got.headers["x-up"], "1");
    for hop in ["transfer-encoding", "connection", "keep-alive"] {
        assert!(!got.headers.contains_key(hop), "{hop} reached the h2 client");
    }
}

#[tokio::test]
async fn nothing_of_one_stream_reaches_the_next() {
    // The first response carries bytes past its length: its connection is not reused.
    let (up, _proxy, listen) = start(6, |seen| match seen.path.as_str() {
        "/first" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nforged"
                .to_vec(),
            false,
        ),
        _ => (ok("second"), false),
    })
    .await;
    let mut h2 = connect(listen).await;
    let got = request(&mut h2, "GET", "http://a.test/first", &[], &[]).await.unwrap();
    assert_eq!(got.body, b"ok");
    let got = request(&mut h2, "GET", "http://a.test/second", &[], &[]).await.unwrap();
    assert_eq!(got.body, b"second");
    let log = up.log();
    assert_eq!(log[0].requests.len(), 1, "a connection with stray bytes was reused");
}

#[tokio::test]
async fn local_replies_and_retries_on_status_behave_as_on_pingora() {
    let retries = std::sync::atomic::AtomicUsize::new(0);
    let (up, _proxy, listen) = start(7, move |seen| match seen.path.as_str() {
        "/retry" if retries.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 => {
            Answer::send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy".to_vec())
        }
        "/slow" => Answer::hang(),
        _ => Answer::send(ok("done")),
    })
    .await;
    let mut h2 = connect(listen).await;
    let got = request(&mut h2, "GET", "http://a.test/empty", &[], &[]).await.unwrap();
    assert_eq!((got.status, got.body.as_slice()), (503, &b"no healthy upstream"[..]));
    let started = Instant::now();
    let got = request(&mut h2, "GET", "http://a.test/slow", &[], &[]).await.unwrap();
    assert_eq!((got.status, got.body.as_slice()), (504, &b"upstream request timeout"[..]));
    assert!(started.elapsed() < Duration::from_secs(3));
    let got = request(&mut h2, "GET", "http://a.test/retry", &[], &[]).await.unwrap();
    assert_eq!((got.status, got.body.as_slice()), (200, &b"done"[..]));
    let retried: Vec<_> = up.requests().into_iter().filter(|s| s.path == "/retry").collect();
    assert_eq!(retried.len(), 2);
}

#[tokio::test]
async fn route_header_rules_apply_both_ways() {
    let (up, _proxy, listen) = start(8, |_| (ok("e"), false)).await;
    let mut h2 = connect(listen).await;
    let got = request(&mut h2, "GET", "http://a.test/edit", &[("x-secret", "s")], &[]).await.unwrap();
    assert_eq!(got.headers["x-resp-added"], "yes");
    let seen = &up.requests()[0];
    assert_eq!(seen.header("x-added"), Some("HTTP/2"));
    // `host` is the `:authority`, for the rules as for the upstream.
    assert_eq!(seen.header("x-host"), Some("a.test"));
    assert!(seen.header("x-secret").is_none());
    assert_eq!(seen.headers_named("host"), ["a.test"]);
    // An edited head gets HTTP/1's framing as an unedited one does.
    let got = request(&mut h2, "POST", "http://a.test/edit", &[], &[b"abc", b"de"]).await.unwrap();
    assert_eq!(got.status, 200);
    let seen = &up.requests()[1];
    assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
    assert!(seen.header("content-length").is_none());
    assert_eq!(seen.body, b"abcde");
    assert_eq!(seen.headers_named("host"), ["a.test"]);
}

#[tokio::test]
async fn the_access_log_line_is_the_same_on_both_engines() {
    if pingora_engine() {
        // This test runs both engines itself.
        return;
    }
    let up = ScriptedBackend::start(ip(55, 9), |seen| match seen.path.as_str() {
        "/chunked" => {
            Answer::send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n".to_vec())
        }
        _ => Answer::send(ok("hello")),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut per_engine = Vec::new();
    for engine in ["native", "pingora"] {
        let log = dir.path().join(format!("{engine}.log"));
        let listen = free_addr(ip(55, 9));
        let cfg = config(listen, up.addr, Some(&log));
        let proxy = ProxyProcess::start_with_args(&cfg, listen, &["--http1-engine", engine]).await;
        let mut h2 = connect(listen).await;
        request(&mut h2, "GET", "http://a.test/films", &[], &[]).await.unwrap();
        request(&mut h2, "POST", "http://a.test/films", &[("content-length", "3")], &[b"abc"]).await.unwrap();
        request(&mut h2, "GET", "http://a.test/chunked", &[], &[]).await.unwrap();
        request(&mut h2, "GET", "http://a.test/empty", &[], &[]).await.unwrap();
        per_engine.push(support::log_lines(&log, 4).await);
        drop(proxy);
    }
    assert_eq!(per_engine[0].len(), 4, "{per_engine:?}");
    assert_eq!(per_engine[0], per_engine[1]);
}

/// A backend that reads one request head per connection, answers with
/// `answer` (possibly nothing, or a head and part of a body) and then
/// stalls; it reports each request's arrival and how long after it the
/// proxy closed that connection.
async fn stalling_backend(
    addr: std::net::IpAddr,
    answer: &'static [u8],
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<(&'static str, Duration)>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((addr, 0)).await.unwrap();
    let local = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let at = Instant::now();
                let _ = tx.send(("request", Duration::ZERO));
                let _ = s.write_all(answer).await;
                // Whatever comes next, the end of the connection is what counts.
                while let Ok(n) = s.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = tx.send(("closed", at.elapsed()));
            });
        }
    });
    (local, rx)
}

/// A client that resets its stream while the upstream is still working on
/// it frees the upstream connection at once (as Pingora's path does), not
/// when the route's timeout (15 s by default) ends: a client resetting
/// stream after stream must not hold an upstream connection and a
/// circuit-breaker slot for each.
#[tokio::test]
async fn a_reset_stream_releases_its_upstream_at_once() {
    let answers: [(&[u8], u8); 2] = [
        // No answer yet: the proxy waits for the response head.
        (b"", 10),
        // A head and half the body: the proxy waits for the rest.
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", 11),
    ];
    for (answer, host) in answers {
        let (up, mut events) = stalling_backend(ip(55, host), answer).await;
        let listen = free_addr(ip(55, host));
        let _proxy = ProxyProcess::start(&config(listen, up, None), listen).await;
        let h2 = connect(listen).await;
        let mut send = h2.ready().await.unwrap();
        let req = http::Request::builder().method("GET").uri("http://a.test/stall").body(()).unwrap();
        let (resp, mut stream) = send.send_request(req, true).unwrap();
        let first = tokio::time::timeout(LIMIT, events.recv()).await.unwrap().unwrap();
        assert_eq!(first.0, "request");
        if !answer.is_empty() {
            // The head reached the client before it gives up.
            let resp = tokio::time::timeout(LIMIT, resp).await.unwrap().unwrap();
            assert_eq!(resp.status(), 200);
        }
        stream.send_reset(h2::Reason::CANCEL);
        let (what, after) = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .unwrap_or_else(|_| panic!("answer {answer:?}: the upstream connection stayed open after the reset"))
            .unwrap();
        assert_eq!(what, "closed");
        assert!(after < Duration::from_secs(5), "answer {answer:?}: closed {after:?} after the request");
    }
}

/// A backend that answers each request with a 200 of `len` bytes: the head
/// and the first half at once, the rest after `pause`.
async fn two_part_backend(addr: std::net::IpAddr, len: usize, pause: Duration) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((addr, 0)).await.unwrap();
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.clear();
                    let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
                    let (first, rest) = body.split_at(len / 2);
                    if s.write_all(&[head.as_bytes(), first].concat()).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(pause).await;
                    if s.write_all(rest).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    local
}

/// The response body goes to the client on h2's stream under the client's
/// flow control: a body four times the client's window, in two parts
/// with a pause between them (the proxy watches for the client's reset
/// meanwhile), arrives whole and in order.
#[tokio::test]
async fn a_body_larger_than_the_clients_window_arrives_whole_across_a_pause() {
    const LEN: usize = 4 * 65_535;
    let up = two_part_backend(ip(55, 12), LEN, Duration::from_millis(300)).await;
    let listen = free_addr(ip(55, 12));
    let _proxy = ProxyProcess::start(&config(listen, up, None), listen).await;
    let mut h2 = connect(listen).await;
    for _ in 0..2 {
        let got = request(&mut h2, "GET", "http://a.test/big", &[], &[]).await.unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(got.body.len(), LEN);
        assert!(got.body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8), "the body's bytes changed");
    }
}

/// A client that grants no more window holds the stream only until the
/// stream idle timeout: then it is reset, never ended as if complete.
#[tokio::test]
async fn a_client_granting_no_window_is_reset_at_the_stream_idle_timeout() {
    const LEN: usize = 4 * 65_535;
    let up = two_part_backend(ip(55, 13), LEN, Duration::ZERO).await;
    let listen = free_addr(ip(55, 13));
    let hcm = yaml::hcm("ingress_http", "          codec_type: AUTO\n          stream_idle_timeout: 0.5s", &routes());
    let config = yaml::bootstrap(
        &[yaml::listener("main", listen, &hcm)],
        &[
            yaml::cluster("up", "STATIC", &[(up.ip().to_string(), up.port())], ""),
            yaml::cluster("empty", "STATIC", &[], ""),
        ],
    );
    let _proxy = ProxyProcess::start(&config, listen).await;
    let h2 = connect(listen).await;
    let mut send = h2.ready().await.unwrap();
    let req = http::Request::builder().method("GET").uri("http://a.test/big").body(()).unwrap();
    let (resp, _stream) = send.send_request(req, true).unwrap();
    let started = Instant::now();
    let mut body = tokio::time::timeout(LIMIT, resp).await.unwrap().unwrap().into_body();
    let mut got = 0;
    // Read what the window allowed, never giving capacity back.
    let ended = tokio::time::timeout(LIMIT, async {
        loop {
            match body.data().await {
                Some(Ok(d)) => got += d.len(),
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    })
    .await
    .expect("the stream outlived the stream idle timeout");
    let err = ended.expect_err("a body cut at the window ended as if complete");
    // Pingora's engine drops its HTTP/2 session, which resets with CANCEL.
    let reason = if pingora_engine() { h2::Reason::CANCEL } else { h2::Reason::INTERNAL_ERROR };
    assert_eq!(err.reason(), Some(reason), "{err}");
    assert!(got <= 65_535, "{got} bytes beyond the window");
    let after = started.elapsed();
    assert!(after >= Duration::from_millis(400) && after < Duration::from_secs(5), "reset after {after:?}");
}

#[tokio::test]
async fn the_upstreams_date_stays_and_the_proxy_adds_one_where_there_was_none() {
    let old = "Sun, 06 Nov 1994 08:49:37 GMT";
    let (_up, _proxy, listen) = start(14, move |seen| {
        let answer = match seen.path.as_str() {
            "/dated" | "/edit" => format!(
                "HTTP/1.1 200 OK\r\nDate: {old}\r\nServer: upstream\r\nX-Envoy-Upstream-Service-Time: 999999\r\n\
                 Connection: x-gone\r\nX-Gone: 1\r\nKeep-Alive: timeout=5\r\nX-Stays: 1\r\nContent-Length: 2\r\n\r\nok"
            )
            .into_bytes(),
            _ => ok("ok"),
        };
        (answer, false)
    })
    .await;
    let mut h2 = connect(listen).await;
    // The proxy's own fields replace the upstream's, and what its
    // `Connection` names stays behind, with route edits or without.
    for path in ["/dated", "/edit"] {
        let got = request(&mut h2, "GET", &format!("http://a.test{path}"), &[], &[]).await.unwrap();
        let h = &got.headers;
        let dates: Vec<_> = h.get_all("date").iter().collect();
        if !pingora_engine() {
            // As Envoy does; Pingora's engine writes its own.
            assert_eq!(dates, [old], "{path}: {h:?}");
        }
        assert_eq!(h.get_all("server").iter().collect::<Vec<_>>(), ["envoy"], "{path}: {h:?}");
        let times: Vec<_> = h.get_all("x-envoy-upstream-service-time").iter().collect();
        assert!(times.len() == 1 && times[0] != "999999", "{path}: {h:?}");
        assert!(h.get("x-gone").is_none() && h.get("keep-alive").is_none(), "{path}: {h:?}");
        assert_eq!(h.get("x-stays").map(|v| v.to_str().unwrap()), Some("1"), "{path}: {h:?}");
    }
    let got = request(&mut h2, "GET", "http://a.test/undated", &[], &[]).await.unwrap();
    let dates: Vec<_> = got.headers.get_all("date").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(dates.len(), 1, "{:?}", got.headers);
    let date = httpdate::parse_http_date(dates[0]).expect("an HTTP date");
    assert!(std::time::SystemTime::now().duration_since(date).unwrap_or_default() < Duration::from_secs(5));
}

/// A field value with CR, LF or NUL would split the HTTP/1 head it is
/// written into. h2's decoder refuses such a value before the proxy sees
/// the request (it ends the connection with a PROTOCOL_ERROR GOAWAY), in
/// every form a field can come in; the downgrade relies on that rather
/// than scanning every field of every request again.
#[tokio::test]
async fn a_field_value_that_would_split_an_http1_line_never_goes_upstream() {
    use support::raw_h2::RawH2;
    let (up, _proxy, listen) = start(15, |_| (ok("fine"), false)).await;
    // HPACK literals not indexed: a new name `x-bad` with each bad value;
    // `user-agent` by its static index (58) with a bad value; a value
    // Huffman-coded; bad names.
    let new_name = |name: &[u8], value: &[u8]| {
        let mut field = vec![0x00, name.len() as u8];
        field.extend(name);
        field.push(value.len() as u8);
        field.extend(value);
        field
    };
    let mut fields: Vec<Vec<u8>> =
        [&b"a\r\nx-forged: 1"[..], b"a\rb", b"a\nb", b"a\0b"].iter().map(|v| new_name(b"x-bad", v)).collect();
    let mut indexed = vec![0x0f, 58 - 15, 14];
    indexed.extend(b"a\r\nx-forged: 1");
    fields.push(indexed);
    // "a\rb" Huffman-coded (RFC 7541 Appendix B: a 00011, CR 30 bits of
    // 0x3ffffffd, b 100011, then EOS padding).
    let mut huffman = vec![0x00, 5];
    huffman.extend(b"x-bad");
    huffman.extend([0x80 | 6, 0x1f, 0xff, 0xff, 0xff, 0xb1, 0xff]);
    fields.push(huffman);
    fields.push(new_name(b"x-b\r\nx-forged: 1\r\nx-bad", b"v"));
    fields.push(new_name(b"x-b\0d", b"v"));
    for field in fields {
        let bad = String::from_utf8_lossy(&field).into_owned();
        let mut h2 = RawH2::connect(listen).await;
        // GET http://a.test/bad with the field.
        let mut block = vec![0x82, 0x86, 0x04, 4];
        block.extend(b"/bad");
        block.extend([0x01, 6]);
        block.extend(b"a.test");
        block.extend(&field);
        h2.write(0x1, 0x5, 1, &block).await;
        // h2's GOAWAY (PROTOCOL_ERROR, no stream processed), nothing on the
        // stream first: a reset from the proxy's own code would not show
        // that h2 refused the field.
        assert_eq!(h2.goaway().await, (0, 1), "{bad:?}");
        // The connection is not served after that either.
        h2.get(3, "/after").await;
        h2.ends_without(3).await;
    }
    let mut h2 = RawH2::connect(listen).await;
    h2.get(1, "/good").await;
    h2.ok(1).await;
    let seen = up.requests();
    assert_eq!(seen.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(), ["/good"]);
    let raw = String::from_utf8_lossy(&up.received()).into_owned();
    assert!(!raw.contains("x-forged") && !raw.contains("x-bad"), "{raw}");
}
