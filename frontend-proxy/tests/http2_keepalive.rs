//! `http2_protocol_options.connection_keepalive` on downstream HTTP/2
//! connections, with a hand-driven client: PINGs every `interval`; a
//! client that answers keeps its connection; one that does not is closed
//! after `timeout` and counted in `http2.keepalive_timeout`; frames from
//! the client start the timeout again (its answer may be behind them).
//! Pingora's engine refuses the setting at start. Addresses: 127.0.81.x.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::raw_h2::{RawH2, PING};
use support::{free_addr, ip, pingora_engine, stat, yaml, ProxyProcess, LIMIT};

const WINDOW_UPDATE: u8 = 0x8;

/// A local reply for every request; h2c with prior knowledge; PINGs every
/// 0.2 s (no jitter) answered within `timeout`.
fn config(listen: SocketAddr, admin: SocketAddr, timeout: &str) -> String {
    config_with(listen, admin, timeout, "")
}

/// [`config`] with `extra` connection manager fields.
fn config_with(listen: SocketAddr, admin: SocketAddr, timeout: &str, extra: &str) -> String {
    let extra = format!(
        "          codec_type: AUTO\n          http2_protocol_options:\n            connection_keepalive: {{ interval: 0.2s, timeout: {timeout}, interval_jitter: {{ value: 0 }} }}\n{extra}"
    );
    let vhost = "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: { prefix: \"/\" }\n                direct_response: { status: 200, body: { inline_string: pong } }";
    yaml::bootstrap_with_admin(admin, &[yaml::listener("main", listen, &yaml::hcm("ka", &extra, vhost))], &[])
}

async fn start(host: u8, timeout: &str) -> (ProxyProcess, SocketAddr, SocketAddr) {
    let (listen, admin) = (free_addr(ip(81, host)), free_addr(ip(81, host)));
    let proxy = ProxyProcess::live(&config(listen, admin, timeout), admin).await;
    (proxy, listen, admin)
}

/// The next PING from the proxy (not an acknowledgement); `None` if the
/// connection ended first.
async fn next_ping(h2: &mut RawH2) -> Option<Vec<u8>> {
    loop {
        let f = h2.frame().await?;
        if f.kind == PING && f.flags & 1 == 0 {
            return Some(f.payload);
        }
    }
}

#[tokio::test]
async fn a_client_that_answers_keeps_its_connection() {
    if pingora_engine() {
        return;
    }
    // A long timeout: a late answer on a loaded machine must not close it.
    let (proxy, listen, admin) = start(1, "2s").await;
    let mut h2 = RawH2::connect(listen).await;
    let started = Instant::now();
    for _ in 0..5 {
        let payload = next_ping(&mut h2).await.expect("a PING, not the end");
        h2.write(PING, 1, 0, &payload).await;
    }
    // Five PINGs, one every 0.2 s: the first ones answered did not close it.
    assert!(started.elapsed() >= Duration::from_millis(700), "{:?}", started.elapsed());
    h2.get(1, "/").await;
    h2.ok(1).await;
    assert_eq!(stat(admin, "http2.keepalive_timeout").await, 0, "{}", proxy.log());
}

#[tokio::test]
async fn a_client_that_does_not_answer_is_closed_after_the_timeout() {
    if pingora_engine() {
        return;
    }
    let (proxy, listen, admin) = start(2, "0.3s").await;
    let mut h2 = RawH2::connect(listen).await;
    next_ping(&mut h2).await.expect("a PING");
    let sent = Instant::now();
    // Not answered: the connection ends (no further PING) once the timeout is up.
    assert_eq!(next_ping(&mut h2).await, None, "a second PING while the first was unanswered");
    let waited = sent.elapsed();
    assert!(waited >= Duration::from_millis(250) && waited < LIMIT, "closed {waited:?} after the PING");
    assert_eq!(stat(admin, "http2.keepalive_timeout").await, 1, "{}", proxy.log());
}

#[tokio::test]
async fn frames_from_the_client_hold_the_timeout_off() {
    if pingora_engine() {
        return;
    }
    let (proxy, listen, admin) = start(3, "1s").await;
    let mut h2 = RawH2::connect(listen).await;
    next_ping(&mut h2).await.expect("a PING");
    // Never answered, but the client keeps sending (a connection
    // WINDOW_UPDATE every 0.1 s): for 3 s, three timeouts' worth, the
    // connection stays.
    let sending = Instant::now();
    while sending.elapsed() < Duration::from_secs(3) {
        h2.write(WINDOW_UPDATE, 0, 0, &1u32.to_be_bytes()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stat(admin, "http2.keepalive_timeout").await, 0, "closed while frames arrived: {}", proxy.log());
    // Then silence: closed after the timeout (and at most a quarter of it
    // more: the count is looked at that often), not a whole timeout later.
    let quiet = Instant::now();
    assert_eq!(next_ping(&mut h2).await, None);
    let waited = quiet.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(1800),
        "closed {waited:?} after the last frame"
    );
    assert_eq!(stat(admin, "http2.keepalive_timeout").await, 1, "{}", proxy.log());
}

#[tokio::test]
async fn a_draining_connection_is_closed_by_its_unanswered_ping() {
    if pingora_engine() {
        return;
    }
    // Idle after 0.3 s, then a 30 s drain: a dead client would hold the
    // connection that long if the PINGs stopped with the drain.
    let (listen, admin) = (free_addr(ip(81, 5)), free_addr(ip(81, 5)));
    let timers = "          common_http_protocol_options: { idle_timeout: 0.3s }\n          drain_timeout: 30s";
    let proxy = ProxyProcess::live(&config_with(listen, admin, "0.5s", timers), admin).await;
    let mut h2 = RawH2::connect(listen).await;
    let started = Instant::now();
    // The PING (at 0.2 s), the shutdown notice (0.3 s): neither answered.
    assert_eq!(next_ping(&mut h2).await.map(|_| ()), Some(()));
    while h2.frame().await.is_some() {}
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    assert_eq!(stat(admin, "http2.keepalive_timeout").await, 1, "{}", proxy.log());
    assert_eq!(stat(admin, "http.ka.downstream_cx_idle_timeout").await, 1, "{}", proxy.log());
}

#[test]
fn pingoras_engine_refuses_the_setting_at_start() {
    let (listen, admin) = (free_addr(ip(81, 4)), free_addr(ip(81, 4)));
    let stderr = support::proxy::refused_at_start(&config(listen, admin, "5s"), &["--http1-engine", "pingora"]);
    assert!(stderr.contains("connection_keepalive needs the native engine"), "{stderr}");
}
