//! The HTTP/2 server's connection behaviour, on every path a stream can
//! take (the native engine's downgrade, Pingora's engine, a local reply):
//! each stream counted once, Envoy's drain sequence (GOAWAY 2^31-1, new
//! streams for `drain_timeout`, the final GOAWAY) with in-flight streams
//! finishing, the malformed-stream budget, the idle timeout.
//! Addresses: 127.0.65.x.

mod support;

use bytes::Bytes;
use h2::client::SendRequest;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::raw::{ok, Answer, ScriptedBackend, Step};
use support::raw_h2::{RawH2, SETTINGS};
use support::yaml;
use support::{eventually, free_addr, ip, pingora_engine, stat, ProxyProcess, LIMIT};
use tokio::net::TcpStream;

/// `/films` and `/retry` (with a retry policy) go to `up`; nothing else has a route.
fn config(listen: SocketAddr, admin: SocketAddr, up: SocketAddr, extra: &str) -> String {
    let routes = r#"              - match: { prefix: "/retry" }
                route: { cluster: up, retry_policy: { retry_on: 5xx, num_retries: 1 } }
              - match: { prefix: "/films" }
                route: { cluster: up }"#;
    config_with_routes(listen, admin, up, extra, routes)
}

/// One virtual host for every domain with `routes`, cluster `up`, codec AUTO and `extra` HCM fields.
fn config_with_routes(listen: SocketAddr, admin: SocketAddr, up: SocketAddr, extra: &str, routes: &str) -> String {
    let vhost = format!("            - name: all\n              domains: [\"*\"]\n              routes:\n{routes}");
    yaml::bootstrap_with_admin(
        admin,
        &[yaml::listener("main", listen, &yaml::hcm("h2s", &format!("          codec_type: AUTO\n{extra}"), &vhost))],
        &[yaml::cluster("up", "STATIC", &[(up.ip().to_string(), up.port())], "")],
    )
}

/// A backend that answers every request with 200 `hello` after `delay`.
async fn backend(host: u8, delay: Duration) -> ScriptedBackend {
    ScriptedBackend::start(ip(65, host), move |_| Answer(vec![Step::Sleep(delay), Step::Send(ok("hello"))])).await
}

/// An h2c connection with prior knowledge, and a flag that turns true
/// once the connection has ended.
async fn connect(addr: SocketAddr) -> (SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    let ended = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, ended)
}

/// Sends a request (`body`: one DATA frame) and reads the whole response:
/// its status and body, or why the stream failed.
async fn request(
    send: &SendRequest<Bytes>,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, Vec<u8>), String> {
    let mut req = http::Request::builder().method(method).uri(uri);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req.body(()).unwrap();
    let work = async {
        let mut send = send.clone().ready().await.map_err(|e| e.to_string())?;
        let (resp, mut stream) = send.send_request(req, body.is_empty()).map_err(|e| e.to_string())?;
        if !body.is_empty() {
            stream.send_data(Bytes::copy_from_slice(body), true).map_err(|e| e.to_string())?;
        }
        let resp = resp.await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let mut body_stream = resp.into_body();
        let mut got = Vec::new();
        while let Some(d) = body_stream.data().await {
            let d = d.map_err(|e| e.to_string())?;
            let _ = body_stream.flow_control().release_capacity(d.len());
            got.extend_from_slice(&d);
        }
        Ok((status, got))
    };
    tokio::time::timeout(LIMIT, work).await.unwrap_or_else(|_| Err("timed out".into()))
}

/// A request our downgrade serves, one Pingora's engine serves as it
/// arrives (gRPC), one it serves once admitted here (a body under a retry
/// policy), and one answered locally (no route).
async fn four_paths(send: &SendRequest<Bytes>) -> [Result<(u16, Vec<u8>), String>; 4] {
    let grpc = [("content-type", "application/grpc"), ("te", "trailers")];
    let (native, pingora, admitted, local) = tokio::join!(
        request(send, "GET", "http://a.test/films", &[], b""),
        request(send, "POST", "http://a.test/films/grpc", &grpc, b"\0\0\0\0\0"),
        request(send, "POST", "http://a.test/retry", &[], b"body"),
        request(send, "GET", "http://a.test/nowhere", &[], b""),
    );
    [native, pingora, admitted, local]
}

#[tokio::test]
async fn streams_on_every_path_of_one_connection_are_counted_once() {
    let up = backend(1, Duration::from_millis(200)).await;
    let (listen, admin) = (free_addr(ip(65, 1)), free_addr(ip(65, 1)));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let access_log = format!(
        r#"          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {}
              log_format:
                text_format_source:
                  inline_string: "%REQ(:PATH)% %PROTOCOL% %RESPONSE_CODE%\n""#,
        log.display()
    );
    let proxy = ProxyProcess::live(&config(listen, admin, up.addr, &access_log), admin).await;
    let (send, _ended) = connect(listen).await;
    let [native, pingora, admitted, local] = four_paths(&send).await;
    assert_eq!(native, Ok((200, b"hello".to_vec())));
    assert_eq!(pingora.map(|r| r.0), Ok(200));
    assert_eq!(admitted.map(|r| r.0), Ok(200));
    assert_eq!(local.map(|r| r.0), Ok(404));
    assert_eq!(up.requests().len(), 3, "the routed streams reached the backend");
    // Pingora's engine counts in `logging`, after the response went out.
    let counted = eventually(LIMIT, || async { stat(admin, "http.h2s.downstream_rq_total").await >= 4 }).await;
    assert!(counted, "{}", proxy.log());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stat(admin, "http.h2s.downstream_rq_total").await, 4);
    assert_eq!(stat(admin, "http.h2s.downstream_rq_http2_total").await, 4);
    assert_eq!(stat(admin, "http.h2s.downstream_rq_2xx").await, 3);
    assert_eq!(stat(admin, "http.h2s.downstream_rq_4xx").await, 1);
    assert_eq!(stat(admin, "http.h2s.downstream_rq_active").await, 0);
    let mut got = support::log_lines(&log, 4).await;
    got.sort();
    assert_eq!(got, ["/films HTTP/2 200", "/films/grpc HTTP/2 200", "/nowhere HTTP/2 404", "/retry HTTP/2 200"]);
}

#[tokio::test]
async fn a_drain_sends_goaway_and_streams_in_flight_complete() {
    let up = backend(2, Duration::from_millis(1500)).await;
    let (listen, admin) = (free_addr(ip(65, 2)), free_addr(ip(65, 2)));
    let drain = "          drain_timeout: 0.1s\n";
    let mut proxy = ProxyProcess::live(&config(listen, admin, up.addr, drain), admin).await;
    let (send, ended) = connect(listen).await;
    let in_flight = tokio::spawn({
        let send = send.clone();
        async move {
            let grpc = [("content-type", "application/grpc")];
            let (native, pingora) = tokio::join!(
                request(&send, "GET", "http://a.test/films", &[], b""),
                request(&send, "POST", "http://a.test/films/grpc", &grpc, b"\0\0\0\0\0"),
            );
            (native, pingora)
        }
    });
    assert!(eventually(LIMIT, || async { up.requests().len() == 2 }).await, "both streams reached the backend");
    proxy.signal("TERM");
    // The GOAWAY (and the final one, `drain_timeout` later) arrive long
    // before the backend answers: a stream opened now is refused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = request(&send, "GET", "http://a.test/films", &[], b"").await;
    assert!(late.is_err(), "a stream opened after the drain's GOAWAY was served: {late:?}");
    let (native, pingora) = in_flight.await.unwrap();
    assert_eq!(native, Ok((200, b"hello".to_vec())), "{}", proxy.log());
    assert_eq!(pingora.map(|r| r.0), Ok(200));
    tokio::time::timeout(LIMIT, ended).await.expect("the connection closes once its streams are done").unwrap();
    let exit = proxy.wait_exit(LIMIT).expect("the proxy exits once drained");
    assert!(exit.success(), "{}", proxy.log());
    assert_eq!(up.requests().len(), 2, "the refused stream never went upstream");
}

#[tokio::test]
async fn a_connection_is_closed_after_its_budget_of_malformed_streams() {
    let up = backend(3, Duration::ZERO).await;
    let (listen, admin) = (free_addr(ip(65, 3)), free_addr(ip(65, 3)));
    let _proxy = ProxyProcess::live(&config(listen, admin, up.addr, ""), admin).await;
    let (send, ended) = connect(listen).await;
    // Userinfo in `:authority`: the h2 codec's check answers 400 itself.
    let malformed = || request(&send, "GET", "http://user@a.test/films", &[], b"");
    for i in 0..31 {
        assert_eq!(malformed().await.map(|r| r.0), Ok(400), "malformed stream {i}");
        if i == 15 {
            // Valid streams between them do not reset the budget.
            assert_eq!(request(&send, "GET", "http://a.test/films", &[], b"").await.map(|r| r.0), Ok(200));
        }
    }
    assert_eq!(request(&send, "GET", "http://a.test/films", &[], b"").await.map(|r| r.0), Ok(200));
    // The 32nd: the connection ends.
    let _ = malformed().await;
    tokio::time::timeout(LIMIT, ended).await.expect("the connection closed after 32 malformed streams").unwrap();
    assert!(request(&send, "GET", "http://a.test/films", &[], b"").await.is_err());
    assert_eq!(up.requests().len(), 2);
}

#[tokio::test]
async fn an_idle_connection_closes_after_the_idle_timeout() {
    if pingora_engine() {
        // Pingora's HTTP/2 server is run without an idle timeout.
        return;
    }
    let up = backend(4, Duration::from_millis(1200)).await;
    let (listen, admin) = (free_addr(ip(65, 4)), free_addr(ip(65, 4)));
    let idle = "          common_http_protocol_options: { idle_timeout: 0.5s }";
    let proxy = ProxyProcess::live(&config(listen, admin, up.addr, idle), admin).await;
    let (send, ended) = connect(listen).await;
    // A stream in flight keeps the connection, however long it takes.
    assert_eq!(request(&send, "GET", "http://a.test/films", &[], b"").await.map(|r| r.0), Ok(200));
    let idle_since = Instant::now();
    tokio::time::timeout(LIMIT, ended).await.expect("the idle connection closes").unwrap();
    let after = idle_since.elapsed();
    // h2's client ends the connection on the shutdown notice (the
    // sequence itself: `an_idle_timeout_starts_the_drain_sequence`).
    assert!(after >= Duration::from_millis(400), "closed {after:?} after its last stream");
    assert_eq!(stat(admin, "http.h2s.downstream_cx_idle_timeout").await, 1, "{}", proxy.log());
}

#[tokio::test]
async fn a_connect_stream_is_answered_and_leaves_no_active_request() {
    // Pingora's engine answers CONNECT (405) before its filters run: a
    // stream admitted first would stay in `downstream_rq_active` for good.
    let up = backend(5, Duration::ZERO).await;
    let (listen, admin) = (free_addr(ip(65, 5)), free_addr(ip(65, 5)));
    let routes = r#"              - match: { prefix: "/" }
                route: { cluster: up }"#;
    let proxy = ProxyProcess::live(&config_with_routes(listen, admin, up.addr, "", routes), admin).await;
    let (send, _ended) = connect(listen).await;
    for _ in 0..3 {
        assert_eq!(request(&send, "CONNECT", "a.test:443", &[], b"").await.map(|r| r.0), Ok(405));
    }
    assert_eq!(request(&send, "GET", "http://a.test/films", &[], b"").await.map(|r| r.0), Ok(200));
    eventually(LIMIT, || async { stat(admin, "http.h2s.downstream_rq_active").await == 0 }).await;
    assert_eq!(stat(admin, "http.h2s.downstream_rq_active").await, 0, "{}", proxy.log());
    assert!(up.requests().iter().all(|r| r.method != "CONNECT"), "no CONNECT went upstream");
}

#[tokio::test]
async fn a_local_reply_to_a_client_without_window_ends_at_the_stream_idle_timeout() {
    if pingora_engine() {
        // Pingora's engine has no write timeout on a local reply.
        return;
    }
    let up = backend(6, Duration::ZERO).await;
    let (listen, admin) = (free_addr(ip(65, 6)), free_addr(ip(65, 6)));
    let routes = r#"              - match: { prefix: "/direct" }
                direct_response: { status: 200, body: { inline_string: "hello from a direct response" } }"#;
    let extra = "          stream_idle_timeout: 1s\n          drain_timeout: 0.1s\n          common_http_protocol_options: { idle_timeout: 0.5s }\n";
    let proxy = ProxyProcess::live(&config_with_routes(listen, admin, up.addr, extra, routes), admin).await;
    let tcp = TcpStream::connect(listen).await.unwrap();
    // A window of 0: the reply's body can never be sent.
    let (send, conn) = h2::client::Builder::new().initial_window_size(0).handshake::<_, Bytes>(tcp).await.unwrap();
    let ended = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut send = send.ready().await.unwrap();
    let req = http::Request::builder().method("GET").uri("http://a.test/direct").body(()).unwrap();
    let (resp, _stream) = send.send_request(req, true).unwrap();
    let started = Instant::now();
    let _ = tokio::time::timeout(LIMIT, resp).await.expect("the head arrives");
    // The stream ends at the stream idle timeout, then the idle connection at its own.
    tokio::time::timeout(LIMIT, ended).await.expect("the connection closes").unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900), "ended after {:?}", started.elapsed());
    assert_eq!(stat(admin, "http.h2s.downstream_rq_active").await, 0, "{}", proxy.log());
    assert_eq!(stat(admin, "http.h2s.downstream_cx_idle_timeout").await, 1, "{}", proxy.log());
}

#[tokio::test]
async fn a_client_stalled_inside_its_preface_is_closed_at_the_idle_timeout() {
    if pingora_engine() {
        // Pingora's HTTP/2 server is run without an idle timeout.
        return;
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = backend(7, Duration::ZERO).await;
    let (listen, admin) = (free_addr(ip(65, 7)), free_addr(ip(65, 7)));
    let idle = "          common_http_protocol_options: { idle_timeout: 0.5s }";
    let proxy = ProxyProcess::live(&config(listen, admin, up.addr, idle), admin).await;
    // Before the connection: the timeout runs from the proxy's accept,
    // which a busy machine may take a while to reach.
    let started = Instant::now();
    let mut tcp = TcpStream::connect(listen).await.unwrap();
    // All of the preface but its last two bytes.
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(LIMIT, tcp.read_to_end(&mut rest)).await.expect("the connection closes");
    assert!(started.elapsed() >= Duration::from_millis(400), "closed after {:?}", started.elapsed());
    // The socket closes as the handshake is dropped, a moment before the count.
    let counted = eventually(LIMIT, || async { stat(admin, "http.h2s.downstream_cx_idle_timeout").await == 1 }).await;
    assert!(counted, "{}", proxy.log());
}

#[tokio::test]
async fn a_drain_takes_new_streams_for_the_drain_timeout_then_sends_the_final_goaway() {
    if pingora_engine() {
        // Pingora's HTTP/2 server drains with h2's graceful shutdown (the
        // final GOAWAY one PING round trip after the first; docs/http1.md).
        return;
    }
    let up = backend(8, Duration::ZERO).await;
    let (listen, admin) = (free_addr(ip(65, 8)), free_addr(ip(65, 8)));
    // Long enough for stream 3 to race in on a loaded machine, and less
    // than half of the drain time (5 s), which would cut it.
    let drain = "          drain_timeout: 2s\n";
    let mut proxy = ProxyProcess::live(&config(listen, admin, up.addr, drain), admin).await;
    let mut h2 = RawH2::connect(listen).await;
    h2.get(1, "/films").await;
    h2.ok(1).await;
    proxy.signal("TERM");
    let started = Instant::now();
    assert_eq!(h2.goaway().await, (0x7fff_ffff, 0), "the shutdown notice: stream 2^31-1, NO_ERROR");
    // Within the grace a stream still races in, and is served.
    h2.get(3, "/films").await;
    h2.ok(3).await;
    assert_eq!(h2.goaway().await, (3, 0), "the final GOAWAY names the last stream taken");
    let grace = started.elapsed();
    assert!(grace >= Duration::from_millis(1900), "the final GOAWAY came {grace:?} after the drain began");
    // After it, a stream is not taken, and the idle connection closes.
    h2.get(5, "/films").await;
    h2.ends_without(5).await;
    assert_eq!(up.requests().len(), 2, "stream 5 never went upstream");
    let exit = proxy.wait_exit(LIMIT).expect("the proxy exits once drained");
    assert!(exit.success(), "{}", proxy.log());
}

#[tokio::test]
async fn an_idle_timeout_starts_the_drain_sequence() {
    if pingora_engine() {
        // Pingora's HTTP/2 server is run without an idle timeout.
        return;
    }
    let up = backend(9, Duration::ZERO).await;
    let (listen, admin) = (free_addr(ip(65, 9)), free_addr(ip(65, 9)));
    let idle = "          drain_timeout: 2s\n          common_http_protocol_options: { idle_timeout: 0.4s }";
    let proxy = ProxyProcess::live(&config(listen, admin, up.addr, idle), admin).await;
    let mut h2 = RawH2::connect(listen).await;
    h2.get(1, "/films").await;
    h2.ok(1).await;
    let idle_since = Instant::now();
    assert_eq!(h2.goaway().await, (0x7fff_ffff, 0), "the shutdown notice");
    let notice = idle_since.elapsed();
    assert!(notice >= Duration::from_millis(300), "notice {notice:?} after the last stream");
    assert_eq!(stat(admin, "http.h2s.downstream_cx_idle_timeout").await, 1, "{}", proxy.log());
    // As on the drain, a stream racing the notice is served.
    h2.get(3, "/films").await;
    h2.ok(3).await;
    assert_eq!(h2.goaway().await, (3, 0), "the final GOAWAY");
    let last = idle_since.elapsed() - notice;
    assert!(last >= Duration::from_millis(1900), "final GOAWAY {last:?} after the notice");
    h2.get(5, "/films").await;
    h2.ends_without(5).await;
    assert_eq!(up.requests().len(), 2, "stream 5 never went upstream");
}

#[tokio::test]
async fn a_connection_whose_last_stream_is_the_highest_closes_after_its_final_goaway() {
    if pingora_engine() {
        // Pingora's HTTP/2 server is run without an idle timeout.
        return;
    }
    let up = backend(10, Duration::ZERO).await;
    let (listen, admin) = (free_addr(ip(65, 10)), free_addr(ip(65, 10)));
    let idle = "          drain_timeout: 0.2s\n          common_http_protocol_options: { idle_timeout: 0.2s }";
    let proxy = ProxyProcess::live(&config(listen, admin, up.addr, idle), admin).await;
    let mut h2 = RawH2::connect(listen).await;
    // A first stream may have any odd identifier: 2^31-1 makes the final
    // GOAWAY look like a notice to h2, which then never closes by itself.
    h2.get(0x7fff_ffff, "/films").await;
    h2.ok(0x7fff_ffff).await;
    assert_eq!(h2.goaway().await, (0x7fff_ffff, 0), "the shutdown notice");
    assert_eq!(h2.goaway().await, (0x7fff_ffff, 0), "the final GOAWAY");
    h2.ends_without(1).await;
    // The gauge comes down once the connection's task has ended, which may
    // be just after the client saw the socket close.
    let closed = eventually(LIMIT, || async { stat(admin, "http.h2s.downstream_cx_active").await == 0 }).await;
    assert!(closed, "{}", proxy.log());
}

#[tokio::test]
async fn a_client_that_stops_reading_does_not_hold_its_connection_past_the_drain_sequence() {
    if pingora_engine() {
        // Pingora's HTTP/2 server is run without an idle timeout.
        return;
    }
    let body = "x".repeat(32 << 20);
    let up = ScriptedBackend::start(ip(65, 11), move |_| Answer(vec![Step::Send(ok(&body))])).await;
    let (listen, admin) = (free_addr(ip(65, 11)), free_addr(ip(65, 11)));
    let timers = "          stream_idle_timeout: 0.5s\n          drain_timeout: 0.2s\n          common_http_protocol_options: { idle_timeout: 0.2s }";
    let proxy = ProxyProcess::live(&config(listen, admin, up.addr, timers), admin).await;
    let mut h2 = RawH2::connect(listen).await;
    // Windows wide open, then no more reads: the proxy's writes stall in
    // the socket, and h2 cannot flush its GOAWAYs or close by itself.
    h2.write(SETTINGS, 0, 0, &[0, 4, 0x7f, 0xff, 0xff, 0xff]).await;
    h2.write(0x8, 0, 0, &(0x7fff_ffffu32 - 65_535).to_be_bytes()).await;
    h2.get(1, "/films").await;
    let closed = eventually(LIMIT, || async { stat(admin, "http.h2s.downstream_cx_active").await == 0 }).await;
    assert!(closed, "the connection is still open: {}", proxy.log());
    assert_eq!(stat(admin, "http.h2s.downstream_cx_idle_timeout").await, 1, "{}", proxy.log());
}

#[tokio::test]
async fn with_the_default_timers_a_drain_sends_the_final_goaway_before_the_drain_time_is_up() {
    if pingora_engine() {
        // Pingora's HTTP/2 server drains with h2's graceful shutdown.
        return;
    }
    let up = backend(12, Duration::ZERO).await;
    let (listen, admin) = (free_addr(ip(65, 12)), free_addr(ip(65, 12)));
    // `drain_timeout` 5 s and `--drain-time-s` 5: the grace is cut to half
    // of what the drain has left, so the final GOAWAY still goes out.
    let mut proxy = ProxyProcess::live(&config(listen, admin, up.addr, ""), admin).await;
    let mut h2 = RawH2::connect(listen).await;
    h2.get(1, "/films").await;
    h2.ok(1).await;
    proxy.signal("TERM");
    assert_eq!(h2.goaway().await, (0x7fff_ffff, 0), "the shutdown notice");
    assert_eq!(h2.goaway().await, (1, 0), "the final GOAWAY");
    h2.ends_without(3).await;
    let exit = proxy.wait_exit(LIMIT).expect("the proxy exits once drained");
    assert!(exit.success(), "{}", proxy.log());
    assert!(!proxy.log().contains("drain time is up"), "the drain ended on its own: {}", proxy.log());
}

#[tokio::test]
async fn a_connection_idle_past_the_memory_release_serves_streams_again() {
    if pingora_engine() {
        // Pingora's HTTP/2 server keeps h2's memory for the connection's life.
        return;
    }
    // After a second without a stream, h2 gives back its stream slab and
    // frame buffers (h2 patch 4): the next streams allocate them anew.
    let up = backend(13, Duration::ZERO).await;
    let (listen, admin) = (free_addr(ip(65, 13)), free_addr(ip(65, 13)));
    let args = ["--concurrency", "1", "--log-level", "debug"];
    let proxy = ProxyProcess::start_with_args(&config(listen, admin, up.addr, ""), admin, &args).await;
    assert!(eventually(LIMIT, || async { TcpStream::connect(listen).await.is_ok() }).await);
    let released = || proxy.log().matches("released its stream memory").count();
    let (send, _ended) = connect(listen).await;
    for round in 0..2 {
        let (a, b, c, d, e) = tokio::join!(
            request(&send, "GET", "http://a.test/films", &[], b""),
            request(&send, "GET", "http://a.test/films", &[], b""),
            request(&send, "GET", "http://a.test/films", &[], b""),
            request(&send, "GET", "http://a.test/films", &[], b""),
            request(&send, "POST", "http://a.test/films", &[], b"a body"),
        );
        for r in [a, b, c, d, e] {
            assert_eq!(r, Ok((200, b"hello".to_vec())), "round {round}");
        }
        if round == 1 {
            // A stream answered before its request body ends is reset, and
            // h2 keeps it for a second more: the release waits for it.
            let req = http::Request::builder().method("POST").uri("http://a.test/nowhere").body(()).unwrap();
            let (resp, _body) = send.clone().ready().await.unwrap().send_request(req, false).unwrap();
            assert_eq!(tokio::time::timeout(LIMIT, resp).await.unwrap().unwrap().status(), 404);
        }
        let want = round + 1;
        assert!(eventually(LIMIT, || async { released() >= want }).await, "round {round}: {}", proxy.log());
    }
    assert_eq!(up.requests().len(), 10);
}
