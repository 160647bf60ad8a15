//! The HTTP/1.1 framing conformance suite (RFC 9112 §§2-7, RFC 9110 §7.6
//! and §6.6.1): exact bytes from a client and from a scripted upstream,
//! through the real proxy, over real sockets.
//!
//! Each case checks three things: (1) the bytes the client got, read with
//! the strict reader of `support/strict.rs` (one response, nothing after
//! it); (2) the bytes the backend got (never a request smuggled inside
//! another, never a hop-by-hop field); (3) that the next request on the
//! same client connection (when it stays open) and the next one over the
//! pooled upstream connection get their own clean answer, and, where the
//! case says the upstream connection must not be reused, that they came on
//! another connection.
//!
//! The cases are tables (`requests.rs`, `responses.rs`, `fields.rs`; what
//! a case is in `case.rs`, its checks in `checks.rs`). One proxy
//! (one worker, so the upstream pool is deterministic) serves a table;
//! each case has a backend of its own, routed by the path prefix `/<case>`
//! or the virtual host `<case>.example`. A table's test lists every case
//! that failed, and why. `FRAMING_CASE=<substring>` runs only the cases
//! whose name contains it.
//!
//! The cases say what the behaviour SHOULD be (issue 21). They run against
//! the native engine, and against Pingora's with
//! `FRONTEND_PROXY_HTTP1_ENGINE=pingora` (CI runs both); where the engines
//! legitimately differ (the README's list: 1xx forwarding, pipelining,
//! the head-timeout reply), the case says so next to its expectation.
//! Addresses: 127.0.12.x.

#[path = "../support/mod.rs"]
mod support;

mod case;
mod checks;
mod fields;
mod harness;
mod requests;
mod responses;

use case::Case;
use harness::{group, run_table};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::pingora_engine;
use support::raw::{ok, RawClient, ReadError, Response};
use support::strict::Asked;

/// The tables' HTTP/1.0 cases are about framing: HTTP/1.0 is accepted
/// there (Envoy's default refuses it, `http10_*` below).
const ACCEPT_HTTP10: &str = "          http_protocol_options: { accept_http_10: true }";

#[tokio::test]
async fn client_side_framing() {
    run_table(1, requests::request_cases(), ACCEPT_HTTP10).await;
}

#[tokio::test]
async fn upstream_side_framing() {
    let hcm = format!("{ACCEPT_HTTP10}\n          upgrade_configs:\n          - upgrade_type: websocket");
    run_table(2, responses::response_cases(), &hcm).await;
}

#[tokio::test]
async fn hop_by_hop_fields_and_dates() {
    run_table(3, fields::field_cases(), "").await;
}

// ---------------------------------------------------------------- head deadline

/// Sends a request head a byte every `every`, for at most `limit`; how long
/// until the proxy answered or closed, and what it answered.
async fn trickle(listen: SocketAddr, every: Duration, limit: Duration) -> (Duration, Result<Response, ReadError>) {
    let mut c = RawClient::connect(listen).await;
    let start = Instant::now();
    c.send(b"GET /deadline HTTP/1.1\r\nHost: framing\r\nX-Slow: ").await;
    while start.elapsed() < limit {
        if !c.send(b"a").await {
            break;
        }
        match c.response_within(Asked::default(), every).await {
            Err(ReadError::TimedOut(b)) if b.is_empty() => {}
            other => return (start.elapsed(), other),
        }
    }
    (start.elapsed(), Err(ReadError::TimedOut(Vec::new())))
}

/// Issue 21 #8: the head has a deadline of its own, even when every byte
/// comes within the idle timeout. The native engine answers Envoy's 408;
/// Pingora's closes without a reply (README).
fn head_timed_out(took: Duration, limit: Duration, answer: &Result<Response, ReadError>) -> Result<(), String> {
    if took >= limit {
        return Err(format!("a head trickled for {took:?} was still being read"));
    }
    match answer {
        Ok(r) if !pingora_engine() && r.status == 408 && r.body == b"request header timeout" => Ok(()),
        Err(ReadError::Closed) if pingora_engine() => Ok(()),
        other => Err(format!("after {took:?}: {other:?}")),
    }
}

#[tokio::test]
async fn a_request_head_must_arrive_within_request_headers_timeout() {
    let hcm = "          request_headers_timeout: 0.5s\n          stream_idle_timeout: 10s";
    let g = group(4, &[Case::get("deadline", ok("ok"))], hcm).await;
    let limit = Duration::from_secs(6);
    let (took, answer) = trickle(g.listen, Duration::from_millis(100), limit).await;
    let result = head_timed_out(took, limit, &answer);
    assert!(result.is_ok(), "{result:?}");
    assert!(took >= Duration::from_millis(450), "answered before the deadline: {took:?}");
    assert!(g.backends[0].log().is_empty(), "the trickled head reached the upstream");
}

/// With no `request_headers_timeout` in the file, a head still has 10 s
/// (docs/http1.md), though each byte comes well within the stream idle timeout.
#[tokio::test]
async fn a_request_head_has_a_deadline_by_default() {
    let g = group(5, &[Case::get("deadline", ok("ok"))], "").await;
    let limit = Duration::from_secs(30);
    let (took, answer) = trickle(g.listen, Duration::from_millis(500), limit).await;
    let result = head_timed_out(took, limit, &answer);
    assert!(result.is_ok(), "{result:?}");
    assert!(took >= Duration::from_millis(9500), "the default deadline is 10 s, it ended at {took:?}");
}

/// A head ended by bare LFs is complete: the head deadline stops there, and
/// a body slower than it is served (both engines; this one goes to Pingora's
/// as HTTP/1.0).
#[tokio::test]
async fn a_head_ended_by_bare_lfs_stops_the_head_deadline() {
    let hcm = format!("          request_headers_timeout: 0.5s\n          stream_idle_timeout: 10s\n{ACCEPT_HTTP10}");
    let hcm = hcm.as_str();
    let g = group(6, &[Case::get("bare_lf", ok("ok"))], hcm).await;
    let mut c = RawClient::connect(g.listen).await;
    assert!(c.send(b"POST /bare_lf HTTP/1.0\nHost: framing\nContent-Length: 6\n\n").await);
    for byte in b"abcdef" {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(c.send(&[*byte]).await, "the proxy stopped taking the body");
    }
    let r = c.response_within(Asked::default(), Duration::from_secs(5)).await;
    assert_eq!(r.map(|r| r.status).ok(), Some(200));
}

// ---------------------------------------------------------------- HTTP/1.0

/// `accept_http_10` left out (Envoy's default): an HTTP/1.0 request gets
/// 426 (body `Upgrade Required`, as Envoy's codec sends it) and its
/// connection closes, keep-alive or not, Host or
/// not; nothing reaches the upstream. HTTP/1.1 on the same listener is
/// served. Both engines decide this in the shared request lifecycle (the
/// native one hands HTTP/1.0 to Pingora's first).
#[tokio::test]
async fn http10_gets_426_unless_accepted() {
    let g = group(7, &[Case::get("old", ok("ok"))], "").await;
    for request in [
        "GET /old HTTP/1.0\r\nHost: framing\r\n\r\n",
        "GET /old HTTP/1.0\r\nHost: framing\r\nConnection: keep-alive\r\n\r\n",
        // Longer than h2c's 24-byte preface: Pingora waits for that many
        // bytes before it tells HTTP/1 from h2c, so a shorter request waits.
        "GET /old/no-host HTTP/1.0\r\n\r\n",
        "POST /old HTTP/1.0\r\nHost: framing\r\nContent-Length: 3\r\n\r\nabc",
    ] {
        let mut c = RawClient::connect(g.listen).await;
        assert!(c.send(request.as_bytes()).await);
        let r = c.response(Asked::default()).await.unwrap_or_else(|e| panic!("{request:?}: {e}"));
        assert_eq!((r.status, r.body.as_slice()), (426, &b"Upgrade Required"[..]), "{request:?}");
        assert!(c.closes_within(harness::CLOSE_WITHIN).await, "{request:?}: the connection stayed open");
    }
    assert!(g.backends[0].log().is_empty(), "an HTTP/1.0 request reached the upstream");
    let mut c = RawClient::connect(g.listen).await;
    assert!(c.send(b"GET /old HTTP/1.1\r\nHost: framing\r\n\r\n").await);
    let r = c.response(Asked::default()).await.unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
}

/// With `accept_http_10`, HTTP/1.0 is served; `default_host_for_http_10`
/// is the Host of a request that has none: it routes by it (the path
/// matches no route, the virtual host does) and the upstream gets it. A
/// request with a Host keeps its own.
#[tokio::test]
async fn http10_without_host_gets_default_host_for_http_10() {
    let hcm = format!(
        "          http_protocol_options: {{ accept_http_10: true, default_host_for_http_10: {} }}",
        case::vhost("old")
    );
    let g = group(8, &[Case::get("old", ok("ok"))], &hcm).await;
    for (request, host) in [
        ("GET /elsewhere HTTP/1.0\r\n\r\n", case::vhost("old")),
        ("GET /old HTTP/1.0\r\nHost: framing\r\n\r\n", "framing".to_string()),
    ] {
        let mut c = RawClient::connect(g.listen).await;
        assert!(c.send(request.as_bytes()).await);
        let r = c.response(Asked::default()).await.unwrap_or_else(|e| panic!("{request:?}: {e}"));
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]), "{request:?}");
        let seen = g.backends[0].requests();
        let last = seen.last().expect("the upstream got the request");
        assert_eq!(last.headers_named("host"), vec![host.as_str()], "{request:?}");
    }
}
