//! Fault tests: replicas dying, hanging, failing and leaving DNS under
//! load; SIGTERM under load; hostile clients. Every run is bounded in time
//! and uses only 127.0.3.x.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::raw::read_response_text;
use support::{eventually, free_addr, ip, yaml, Backend, Behaviour, ProxyProcess, TestDns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Outcome of a load run.
#[derive(Default, Debug)]
struct Load {
    ok: AtomicUsize,
    failures: Mutex<Vec<String>>,
    served_by: Mutex<HashMap<String, usize>>,
}

impl Load {
    fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }
    fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }
}

/// `workers` keep-alive clients sending requests until `stop` or `per_worker` each.
fn spawn_load(
    url: String,
    workers: usize,
    per_worker: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
    let load = Arc::new(Load::default());
    let tasks = (0..workers)
        .map(|w| {
            let (url, load, stop) = (url.clone(), load.clone(), stop.clone());
            tokio::spawn(async move {
                let c = reqwest::Client::builder()
                    .no_proxy()
                    .pool_max_idle_per_host(1)
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                for i in 0..per_worker {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match c.get(format!("{url}?w={w}&i={i}")).send().await {
                        Ok(r) if r.status() == 200 => {
                            load.ok.fetch_add(1, Ordering::SeqCst);
                            if let Some(v) = r.headers().get("x-served-by") {
                                *load.served_by.lock().unwrap().entry(v.to_str().unwrap().to_string()).or_insert(0) +=
                                    1;
                            }
                        }
                        Ok(r) => {
                            let status = r.status();
                            let body = r.text().await.unwrap_or_default();
                            load.failures.lock().unwrap().push(format!("w{w}#{i}: {status} {body}"))
                        }
                        Err(e) => load.failures.lock().unwrap().push(format!("w{w}#{i}: {e}")),
                    }
                }
            })
        })
        .collect();
    (load, tasks)
}

async fn join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        t.await.unwrap();
    }
}

const CATCH_ALL: &str = r#"
            - name: backend
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: app }"#;

fn routes_with(route_extra: &str) -> String {
    format!(
        r#"
            - name: backend
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route:
                  cluster: app
{route_extra}"#
    )
}

fn host_port(b: &Backend) -> (String, u16) {
    (b.addr.ip().to_string(), b.addr.port())
}

async fn three(host: u8) -> Vec<Backend> {
    let mut v = Vec::new();
    for i in 1..=3 {
        v.push(Backend::start(&format!("r{i}"), SocketAddr::new(ip(3, host), 0)).await);
    }
    v
}

/// Three replicas on 127.3.`host`.x in cluster "app" (with `cluster_extra`
/// appended), and a proxy listening on that address with connection
/// manager `hcm`.
async fn app_of_three(host: u8, hcm: &str, cluster_extra: &str) -> (Vec<Backend>, ProxyProcess, SocketAddr) {
    let backends = three(host).await;
    let listen = free_addr(ip(3, host));
    let cfg = yaml::bootstrap(
        &[yaml::listener("main", listen, hcm)],
        &[yaml::cluster("app", "STATIC", &backends.iter().map(host_port).collect::<Vec<_>>(), cluster_extra)],
    );
    let proxy = ProxyProcess::start(&cfg, listen).await;
    (backends, proxy, listen)
}

/// Fault test 1: a replica is killed mid-run; no client request fails.
#[tokio::test]
async fn killing_a_replica_under_load_fails_no_request() {
    let (backends, proxy, listen) = app_of_three(1, &yaml::hcm("ingress", "", CATCH_ALL), "").await;
    let stop = Arc::new(AtomicBool::new(false));
    let (load, tasks) = spawn_load(format!("http://{listen}/films/delay/2"), 8, 150, stop);
    assert!(eventually(Duration::from_secs(10), || async { load.ok() >= 300 }).await);
    backends[1].stop();
    join(tasks).await;
    assert!(load.failures().is_empty(), "failed requests: {:?}\n{}", load.failures(), proxy.log());
    assert_eq!(load.ok(), 1200);
    let served = load.served_by.lock().unwrap().clone();
    assert!(served.get("r1").copied().unwrap_or(0) > 300 && served.get("r3").copied().unwrap_or(0) > 300, "{served:?}");
}

/// Fault test 2: a replica hangs; requests are answered within the route
/// timeout (retried elsewhere per the policy) and the replica is ejected by
/// health checks within interval x threshold.
#[tokio::test]
async fn a_hanging_replica_is_ejected_and_costs_at_most_a_timeout() {
    let route = r#"                  timeout: 2s
                  retry_policy:
                    retry_on: 5xx,reset,connect-failure
                    num_retries: 2
                    per_try_timeout: 0.4s"#;
    let hc = r#"    health_checks:
    - timeout: 0.2s
      interval: 0.2s
      no_traffic_interval: 0.2s
      unhealthy_threshold: 2
      healthy_threshold: 1
      http_health_check: { path: /healthz }
    # Envoy allows 3 concurrent retries by default; six clients can all be
    # waiting on the hung replica at once.
    circuit_breakers:
      thresholds:
      - max_retries: 10"#;
    let (backends, proxy, listen) = app_of_three(2, &yaml::hcm("ingress", "", &routes_with(route)), hc).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (load, tasks) = spawn_load(format!("http://{listen}/films"), 6, 100_000, stop.clone());
    assert!(eventually(Duration::from_secs(10), || async { load.ok() >= 200 }).await);

    let hung_at = Instant::now();
    backends[0].set(Behaviour::Hang);
    // interval (0.2 s) x unhealthy_threshold (2) + a check's timeout, with slack.
    let ejected = eventually(Duration::from_secs(3), || async {
        let before = backends[0].hits();
        tokio::time::sleep(Duration::from_millis(300)).await;
        backends[0].hits() == before
    })
    .await;
    let ejection_time = hung_at.elapsed();
    assert!(ejected, "the hanging replica kept getting requests\n{}", proxy.log());
    let ok_before = load.ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    join(tasks).await;
    assert!(load.ok() > ok_before + 50, "traffic continued on the others");
    assert!(load.failures().is_empty(), "per-try timeouts retried elsewhere: {:?}", load.failures());
    eprintln!("hanging replica ejected after {ejection_time:?}");
}

/// Fault test 3: DNS scale-down while under load fails no request.
#[tokio::test]
async fn dns_scale_down_under_load_fails_no_request() {
    let backends = Backend::start_on_one_port(&[("r1", ip(3, 31)), ("r2", ip(3, 32)), ("r3", ip(3, 33))]).await;
    let port = backends[0].addr.port();
    let dns = TestDns::start(ip(3, 31)).await;
    dns.set("app.test", &backends.iter().map(|b| b.addr.ip()).collect::<Vec<_>>());
    let listen = free_addr(ip(3, 31));
    let extra = format!("    dns_refresh_rate: 0.2s\n    dns_lookup_family: V4_ONLY\n{}", yaml::resolver(dns.addr));
    let cfg = yaml::bootstrap(
        &[yaml::listener("main", listen, &yaml::hcm("ingress", "", CATCH_ALL))],
        &[yaml::cluster("app", "STRICT_DNS", &[("app.test".into(), port)], &extra)],
    );
    let _proxy = ProxyProcess::start(&cfg, listen).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (load, tasks) = spawn_load(format!("http://{listen}/films/delay/2"), 8, 200, stop);
    assert!(eventually(Duration::from_secs(10), || async { load.ok() >= 200 }).await);
    // Like `docker compose up --scale app=1`: replicas leave DNS and die.
    dns.set("app.test", &[backends[0].addr.ip()]);
    backends[2].stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    backends[1].stop();
    join(tasks).await;
    assert!(load.failures().is_empty(), "failed requests: {:?}\n{}", load.failures(), _proxy.log());
    assert_eq!(load.ok(), 1600);
}

/// Fault test 4: a replica answering 503 is ejected by outlier detection
/// and comes back after base_ejection_time.
#[tokio::test]
async fn outlier_detection_ejects_a_failing_replica_and_brings_it_back() {
    let od = r#"    outlier_detection:
      consecutive_5xx: 3
      interval: 0.2s
      base_ejection_time: 1s
      max_ejection_percent: 50"#;
    let (backends, proxy, listen) = app_of_three(4, &yaml::hcm("ingress", "", CATCH_ALL), od).await;
    let c = support::client();
    backends[1].set(Behaviour::Status(503));
    let mut five_hundreds = 0;
    for i in 0..60 {
        let r = c
            .get(format!("http://{listen}/"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e:?}\n{}", proxy.log()));
        if r.status() == 503 {
            five_hundreds += 1;
        }
    }
    assert_eq!(five_hundreds, 3, "ejected after exactly consecutive_5xx failures\n{}", proxy.log());
    let ejected_hits = backends[1].hits();
    for _ in 0..30 {
        assert_eq!(c.get(format!("http://{listen}/")).send().await.unwrap().status(), 200);
    }
    assert_eq!(backends[1].hits(), ejected_hits, "no traffic while ejected");

    backends[1].set(Behaviour::Normal);
    let back = eventually(Duration::from_secs(4), || async {
        let _ = c.get(format!("http://{listen}/")).send().await;
        backends[1].hits() > ejected_hits
    })
    .await;
    assert!(back, "the replica never came back after base_ejection_time");
}

/// Fault test 5: SIGTERM under load: in-flight requests complete, new
/// connections are refused, the process exits within 5 s.
#[tokio::test]
async fn sigterm_under_load_finishes_in_flight_requests() {
    let (backends, mut proxy, listen) = app_of_three(5, &yaml::hcm("ingress", "", CATCH_ALL), "").await;
    // Slow requests, each on its own connection, in flight when SIGTERM lands.
    let in_flight: Vec<_> = (0..6)
        .map(|i| {
            tokio::spawn(async move {
                let c = reqwest::Client::builder().no_proxy().build().unwrap();
                c.get(format!("http://{listen}/slow/delay/800?i={i}")).send().await.map(|r| r.status().as_u16())
            })
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(5), || async { backends.iter().map(|b| b.hits()).sum::<usize>() >= 6 }).await
    );
    let t0 = Instant::now();
    proxy.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(tokio::net::TcpStream::connect(listen).await.is_err(), "new connections are refused while draining");
    for t in in_flight {
        assert_eq!(t.await.unwrap().expect("in-flight request completed"), 200);
    }
    let status = proxy.wait_exit(Duration::from_secs(5)).expect("exited within 5 s");
    assert!(status.success());
    assert!(t0.elapsed() < Duration::from_secs(5));
}

/// Draining closes an idle keep-alive connection at once, not when the
/// process exits, and a response finishing during the drain says
/// `connection: close`, whether an upstream or the proxy wrote it.
#[tokio::test]
async fn draining_closes_idle_connections_and_busy_ones_after_their_response() {
    let routes = r#"
            - name: backend
              domains: ["*"]
              routes:
              - match: { prefix: "/short" }
                route: { cluster: app, timeout: 1s }
              - match: { prefix: "/gone" }
                direct_response: { status: 410 }
              - match: { prefix: "/" }
                route: { cluster: app }"#;
    let (_backends, mut proxy, listen) = app_of_three(11, &yaml::hcm("ingress", "", routes), "").await;
    let mut idle = tokio::net::TcpStream::connect(listen).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let first = read_response_text(&mut idle).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // A request in flight keeps the process draining for over two seconds.
    let mut busy = tokio::net::TcpStream::connect(listen).await.unwrap();
    busy.write_all(b"GET /delay/2500 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    // One the route timeout answers (504) while the process drains.
    let mut timed_out = tokio::net::TcpStream::connect(listen).await.unwrap();
    timed_out.write_all(b"GET /short/delay/2500 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    // And one whose head is still arriving: the proxy answers it itself.
    let mut arriving = tokio::net::TcpStream::connect(listen).await.unwrap();
    arriving.write_all(b"GET /gone HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    proxy.signal("TERM");
    let t0 = Instant::now();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "idle connection not closed: {read:?}\n{}", proxy.log());
    // At once, not when the process exits (2.3 s from now).
    assert!(t0.elapsed() < Duration::from_millis(1500), "closed only after {:?}", t0.elapsed());
    assert!(proxy.wait_exit(Duration::from_millis(10)).is_none(), "still draining the busy request");

    // Pingora's engine drops a connection whose head is incomplete when the
    // drain begins; the native engine reads the request and answers it.
    if !support::pingora_engine() {
        arriving.write_all(b"\r\n").await.unwrap();
        let reply =
            tokio::time::timeout(Duration::from_secs(3), read_response_text(&mut arriving)).await.expect("answered");
        assert!(reply.starts_with("HTTP/1.1 410"), "{reply}");
        assert!(reply.to_lowercase().contains("\r\nconnection: close\r\n"), "{reply}");
    }
    let after = tokio::time::timeout(Duration::from_secs(2), arriving.read(&mut byte)).await;
    assert!(matches!(after, Ok(Ok(0)) | Ok(Err(_))), "connection not closed after the local reply: {after:?}");

    let reply =
        tokio::time::timeout(Duration::from_secs(3), read_response_text(&mut timed_out)).await.expect("answered");
    assert!(reply.starts_with("HTTP/1.1 504"), "{reply}");
    assert!(reply.to_lowercase().contains("\r\nconnection: close\r\n"), "{reply}");
    let after = tokio::time::timeout(Duration::from_secs(2), timed_out.read(&mut byte)).await;
    assert!(matches!(after, Ok(Ok(0)) | Ok(Err(_))), "connection not closed after the local reply: {after:?}");

    let response = tokio::time::timeout(Duration::from_secs(5), read_response_text(&mut busy)).await.expect("answered");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.to_lowercase().contains("\r\nconnection: close\r\n"), "{response}");
    let after = tokio::time::timeout(Duration::from_secs(2), busy.read(&mut byte)).await;
    assert!(matches!(after, Ok(Ok(0)) | Ok(Err(_))), "busy connection not closed after its response: {after:?}");
    let status = proxy.wait_exit(Duration::from_secs(5)).expect("exited once drained");
    assert!(status.success());
}

/// Fault test 6: hostile clients get a 4xx or a closed connection, and the
/// proxy keeps serving everyone else.
#[tokio::test]
async fn hostile_clients_are_refused_and_others_are_served() {
    let hcm_extra = "          request_headers_timeout: 1s\n          max_request_headers_kb: 8";
    let hcm = yaml::hcm("ingress", hcm_extra, CATCH_ALL).replace(
        "          http_filters:\n",
        "          http_filters:\n          - name: envoy.filters.http.buffer\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer\n              max_request_bytes: 1024\n",
    );
    let (_backends, proxy, listen) = app_of_three(6, &hcm, "").await;
    let c = support::client();

    // Slowloris: headers trickle in and never finish.
    let mut slow = tokio::net::TcpStream::connect(listen).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let slow_task = tokio::spawn(async move {
        let start = Instant::now();
        let mut buf = [0u8; 256];
        loop {
            if slow.write_all(b"X-Slow: 1\r\n").await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_millis(300), slow.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => break,
                Err(_) => {}
            }
            if start.elapsed() > Duration::from_secs(6) {
                return None;
            }
        }
        Some(start.elapsed())
    });

    // Headers over max_request_headers_kb.
    let big = "x".repeat(10 * 1024);
    let r = c.get(format!("http://{listen}/")).header("x-big", big).send().await.unwrap();
    assert_eq!(r.status(), 431);
    // Body over the buffer filter's max_request_bytes, declared and chunked.
    let r = c.post(format!("http://{listen}/echo")).body(vec![b'a'; 4096]).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let chunks = futures_util_stream(vec![vec![b'a'; 800], vec![b'b'; 800]]);
    let chunked = c.post(format!("http://{listen}/echo")).body(reqwest::Body::wrap_stream(chunks)).send().await;
    assert!(matches!(&chunked, Ok(r) if r.status() == 413) || chunked.is_err(), "{chunked:?}");
    // Garbage instead of HTTP.
    let mut g = tokio::net::TcpStream::connect(listen).await.unwrap();
    g.write_all(b"\x16\x03\x01\x00\xffnot http at all\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ =
        tokio::time::timeout(Duration::from_secs(5), g.read_to_end(&mut buf)).await.expect("garbage connection closed");
    let head = String::from_utf8_lossy(&buf);
    assert!(buf.is_empty() || head.starts_with("HTTP/1.1 400"), "{head}");

    // Everyone else is still served, during and after.
    for _ in 0..20 {
        assert_eq!(c.get(format!("http://{listen}/")).send().await.unwrap().status(), 200);
    }
    let closed_after = slow_task.await.unwrap().expect("slowloris connection closed by the proxy");
    assert!(closed_after < Duration::from_secs(4), "closed after {closed_after:?}\n{}", proxy.log());
}

fn futures_util_stream(chunks: Vec<Vec<u8>>) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::iter(chunks.into_iter().map(Ok))
}

#[tokio::test]
async fn active_health_checks_remove_and_restore_a_host() {
    let hc = r#"    health_checks:
    - timeout: 0.2s
      interval: 0.1s
      no_traffic_interval: 0.1s
      unhealthy_threshold: 2
      healthy_threshold: 2
      http_health_check: { path: /healthz, expected_statuses: [{ start: 200, end: 300 }] }"#;
    let (backends, proxy, listen) = app_of_three(7, &yaml::hcm("ingress", "", CATCH_ALL), hc).await;
    let c = support::client();
    // A bad status fails the host at once.
    backends[2].set(Behaviour::Status(500));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut seen = HashMap::new();
    for _ in 0..30 {
        let r = c.get(format!("http://{listen}/")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", proxy.log());
        *seen.entry(r.headers()["x-served-by"].to_str().unwrap().to_string()).or_insert(0) += 1;
    }
    assert!(!seen.contains_key("r3"), "{seen:?}");
    backends[2].set(Behaviour::Normal);
    assert!(
        eventually(Duration::from_secs(3), || async {
            matches!(c.get(format!("http://{listen}/")).send().await, Ok(r) if r.headers()["x-served-by"] == "r3")
        })
        .await
    );
}

#[tokio::test]
async fn panic_mode_uses_all_hosts_when_too_few_are_healthy() {
    // /healthz fails on two of three hosts: 33 % healthy < 50 % panic threshold.
    let hc = r#"    health_checks:
    - timeout: 0.2s
      interval: 0.1s
      no_traffic_interval: 0.1s
      unhealthy_threshold: 1
      healthy_threshold: 1
      http_health_check: { path: /status/503 }"#;
    let (_backends, _proxy, listen) = app_of_three(8, &yaml::hcm("ingress", "", CATCH_ALL), hc).await;
    let c = support::client();
    // Every host fails its checks: the cluster panics and still serves.
    let mut seen = HashMap::new();
    for _ in 0..30 {
        let r = c.get(format!("http://{listen}/films")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        *seen.entry(r.headers()["x-served-by"].to_str().unwrap().to_string()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "panic mode balances over all hosts: {seen:?}");
}

#[tokio::test]
async fn circuit_breaker_overflow_answers_503_overloaded() {
    let backend = Backend::start("slow", SocketAddr::new(ip(3, 9), 0)).await;
    let listen = free_addr(ip(3, 9));
    let cb = "    circuit_breakers:\n      thresholds:\n      - max_requests: 2";
    let cfg = yaml::bootstrap(
        &[yaml::listener("main", listen, &yaml::hcm("ingress", "", CATCH_ALL))],
        &[yaml::cluster("app", "STATIC", &[host_port(&backend)], cb)],
    );
    let _proxy = ProxyProcess::start(&cfg, listen).await;
    let slow: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(async move {
                let c = reqwest::Client::builder().no_proxy().build().unwrap();
                c.get(format!("http://{listen}/delay/1000")).send().await.map(|r| r.status().as_u16())
            })
        })
        .collect();
    assert!(eventually(Duration::from_secs(5), || async { backend.hits() >= 2 }).await);
    let r = support::client().get(format!("http://{listen}/")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-envoy-overloaded"], "true");
    assert_eq!(
        r.text().await.unwrap(),
        "upstream connect error or disconnect/reset before headers. reset reason: overflow"
    );
    for s in slow {
        assert_eq!(s.await.unwrap().unwrap(), 200);
    }
    assert_eq!(support::client().get(format!("http://{listen}/")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn connection_limit_closes_connections_over_the_cap() {
    let backend = Backend::start("b", SocketAddr::new(ip(3, 10), 0)).await;
    let listen = free_addr(ip(3, 10));
    let limit = r#"
      - name: envoy.filters.network.connection_limit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit
          stat_prefix: limit
          max_connections: 2"#;
    let hcm = format!("{limit}{}", yaml::hcm("ingress", "", CATCH_ALL));
    let cfg = yaml::bootstrap(
        &[yaml::listener("main", listen, &hcm)],
        &[yaml::cluster("app", "STATIC", &[host_port(&backend)], "")],
    );
    let _proxy = ProxyProcess::start(&cfg, listen).await;
    // Two kept-alive connections that have each been served once, so the
    // proxy has certainly counted them before the third arrives.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = tokio::net::TcpStream::connect(listen).await.unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await.unwrap().unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
        held.push(conn);
    }
    let mut third = tokio::net::TcpStream::connect(listen).await.unwrap();
    third.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.ok();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(3), third.read_to_end(&mut buf)).await.expect("closed");
    assert!(n.is_err() || buf.is_empty(), "the third connection is closed without an answer");
    drop(held);
    assert!(
        eventually(Duration::from_secs(3), || async {
            matches!(support::client().get(format!("http://{listen}/")).send().await, Ok(r) if r.status() == 200)
        })
        .await
    );
}

/// Envoy: a host gone from DNS but still passing health checks keeps its
/// traffic until it fails one; then it goes.
#[tokio::test]
async fn a_host_gone_from_dns_keeps_traffic_while_it_passes_health_checks() {
    let [a, b]: [Backend; 2] =
        Backend::start_on_one_port(&[("a", ip(3, 41)), ("b", ip(3, 42))]).await.try_into().ok().expect("two backends");
    let port = a.addr.port();
    let dns = TestDns::start(ip(3, 41)).await;
    dns.set("app.test", &[a.addr.ip(), b.addr.ip()]);
    let listen = free_addr(ip(3, 41));
    let extra = format!(
        "    dns_refresh_rate: 0.1s\n    dns_lookup_family: V4_ONLY\n{}\n    health_checks:\n    - {{ timeout: 0.2s, interval: 0.1s, no_traffic_interval: 0.1s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {{ path: /healthz }} }}",
        yaml::resolver(dns.addr)
    );
    let cfg = yaml::bootstrap(
        &[yaml::listener("main", listen, &yaml::hcm("ingress", "", CATCH_ALL))],
        &[yaml::cluster("app", "STRICT_DNS", &[("app.test".into(), port)], &extra)],
    );
    let proxy = ProxyProcess::start(&cfg, listen).await;
    let c = support::client();
    // b must be a member before it leaves DNS, or this tests a host that
    // never joined (a start-up check once let the wait for the port end
    // before the first resolution).
    let b_serves = || async {
        let r = c.get(format!("http://{listen}/")).send().await;
        matches!(r, Ok(r) if r.headers().get("x-served-by").is_some_and(|v| v == "b"))
    };
    assert!(eventually(Duration::from_secs(5), b_serves).await, "b joins from DNS\n{}", proxy.log());
    dns.set("app.test", &[a.addr.ip()]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut from_b = 0;
    for _ in 0..20 {
        let r = c.get(format!("http://{listen}/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        from_b += usize::from(r.headers()["x-served-by"] == "b");
    }
    assert!(from_b >= 5, "b still passes its checks, so it keeps traffic ({from_b}/20)\n{}", proxy.log());

    b.set(Behaviour::Status(503));
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..20 {
        let r = c.get(format!("http://{listen}/")).send().await.unwrap();
        assert_eq!(r.headers()["x-served-by"], "a", "b failed its check after leaving DNS: gone");
    }
}
