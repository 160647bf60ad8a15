//! Active health-check schedules, end to end: the real proxy checking real
//! upstreams, each check's arrival time taken at the upstream. Every
//! interval field of Envoy's `HealthCheck` is seen in the gaps between
//! checks, and the start order that used to leave hosts failed for a
//! minute (proxy first, backends a second later) recovers within about
//! `interval`. Addresses: 127.0.11.x.
//!
//! Bounds on gaps are loose above (a loaded machine delays a check, never
//! hastens one) and tight below (a check never comes before its interval).

#[path = "support/scripted_health.rs"]
mod scripted_health;
mod support;

use scripted_health::{Answer, ScriptedBackend, HEALTH_PATH};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{eventually, free_addr, ip, yaml, Backend, ProxyProcess};

const MS: Duration = Duration::from_millis(1);
/// How late a check may be on this shared 2-core machine.
const LATE: Duration = Duration::from_millis(400);

const CATCH_ALL: &str = r#"
            - name: backend
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: app }"#;

/// A proxy on 127.0.11.`host` in front of `upstreams`, the cluster
/// health-checked with `hc` (fields of `health_checks[0]`, one a line).
async fn proxy(host: u8, upstreams: &[SocketAddr], hc: &str) -> (ProxyProcess, SocketAddr, SocketAddr) {
    let listen = free_addr(ip(11, host));
    let admin = free_addr(ip(11, host));
    let hc: String = hc.lines().map(|l| format!("\n      {}", l.trim())).collect();
    let extra = format!(
        "    health_checks:\n    - http_health_check: {{ path: {HEALTH_PATH} }}{hc}\n    common_lb_config: {{ healthy_panic_threshold: {{ value: 0 }} }}"
    );
    let endpoints: Vec<(String, u16)> = upstreams.iter().map(|a| (a.ip().to_string(), a.port())).collect();
    let cfg = format!(
        "{}{}",
        yaml::admin(admin),
        yaml::bootstrap(
            &[yaml::listener("main", listen, &yaml::hcm("ingress", "", CATCH_ALL))],
            &[yaml::cluster("app", "STATIC", &endpoints, &extra)],
        )
    );
    let p = ProxyProcess::start(&cfg, listen).await;
    (p, listen, admin)
}

/// Waits until `b` has seen `n` checks; panics with the proxy's log if not.
async fn wait_checks(b: &ScriptedBackend, n: usize, limit: Duration, p: &ProxyProcess) -> Vec<(Instant, Answer)> {
    let ok = eventually(limit, || async { b.checks().len() >= n }).await;
    assert!(ok, "{} of {n} checks in {limit:?}: {:?}\n{}", b.checks().len(), answers(&b.checks()), p.log());
    b.checks()
}

fn answers(checks: &[(Instant, Answer)]) -> Vec<Answer> {
    checks.iter().map(|c| c.1).collect()
}

/// Asserts the gaps between checks `from`, `from + 1`, ... are the
/// `expected` intervals (each a check's result decides the next wait).
fn assert_gaps(checks: &[(Instant, Answer)], from: usize, expected: &[(Duration, &str)], log: &str) {
    let gaps: Vec<Duration> = checks.windows(2).map(|w| w[1].0 - w[0].0).collect();
    for (i, (want, why)) in expected.iter().enumerate() {
        let got = gaps[from + i];
        assert!(
            got + 10 * MS >= *want && got <= *want + LATE,
            "gap after check {} ({:?}) is {got:?}, want {want:?}: {why}\ngaps: {gaps:?}\nanswers: {:?}\n{log}",
            from + i,
            checks[from + i].1,
            answers(checks)
        );
    }
}

async fn one_request(listen: SocketAddr) -> Instant {
    let at = Instant::now();
    let r = support::client().get(format!("http://{listen}/")).send().await.expect("request");
    assert_eq!(r.status(), 200);
    at
}

/// With traffic, each result and transition picks its field, as in Envoy's
/// `HealthCheckerImplBase::interval`: `interval` for a healthy host and for
/// the pass that makes it healthy, `unhealthy_edge_interval` after a
/// failure below `unhealthy_threshold`, `unhealthy_interval` after the
/// failure that fails the host and while it keeps failing,
/// `healthy_edge_interval` after a pass below `healthy_threshold`.
#[tokio::test]
async fn with_traffic_each_check_result_picks_its_interval() {
    use Answer::{Close, Pass};
    let script = [Pass, Pass, Pass, Close, Close, Close, Pass, Pass, Pass];
    let b = ScriptedBackend::start(SocketAddr::new(ip(11, 1), 0), &script, Pass).await;
    let hc = "timeout: 0.5s
        interval: 0.1s
        unhealthy_interval: 1s
        unhealthy_edge_interval: 0.5s
        healthy_edge_interval: 1.5s
        unhealthy_threshold: 2
        healthy_threshold: 2";
    let (p, listen, _) = proxy(1, &[b.addr], hc).await;
    // Start-up checked the host once; with no traffic the next check waits
    // out the default no_traffic_interval (60 s).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.checks().len(), 1, "{:?}\n{}", answers(&b.checks()), p.log());

    let sent = one_request(listen).await;
    let checks = wait_checks(&b, 10, Duration::from_secs(15), &p).await;
    let first = checks[1].0.saturating_duration_since(sent);
    assert!(first < LATE, "the first request has the host checked at once, not in 60 s: {first:?}\n{}", p.log());
    let (interval, unhealthy, unhealthy_edge, healthy_edge) = (100 * MS, 1000 * MS, 500 * MS, 1500 * MS);
    assert_gaps(
        &checks,
        1,
        &[
            (interval, "pass, healthy"),
            (interval, "pass, healthy"),
            (unhealthy_edge, "failure 1 of 2: still healthy"),
            (unhealthy, "failure 2 of 2: failed now"),
            (unhealthy, "failure while failed"),
            (healthy_edge, "pass 1 of 2: still failed"),
            (interval, "pass 2 of 2: healthy now"),
            (interval, "pass, healthy"),
        ],
        &p.log(),
    );
}

/// Before any traffic: `no_traffic_healthy_interval` after a pass of a
/// healthy host, `no_traffic_interval` after anything else; the first
/// request ends both (checked at once, then `interval`).
#[tokio::test]
async fn without_traffic_the_no_traffic_intervals_apply_until_the_first_request() {
    use Answer::{Pass, Status};
    let script = [Pass, Status(503), Status(503), Pass, Pass];
    let b = ScriptedBackend::start(SocketAddr::new(ip(11, 2), 0), &script, Pass).await;
    let hc = "timeout: 0.5s
        interval: 0.1s
        no_traffic_interval: 0.5s
        no_traffic_healthy_interval: 1.2s
        unhealthy_threshold: 1
        healthy_threshold: 1";
    let (p, listen, _) = proxy(2, &[b.addr], hc).await;
    let checks = wait_checks(&b, 5, Duration::from_secs(10), &p).await;
    let (no_traffic, no_traffic_healthy) = (500 * MS, 1200 * MS);
    assert_gaps(
        &checks,
        0,
        &[
            (no_traffic_healthy, "first check passed: healthy"),
            (no_traffic, "503: failed"),
            (no_traffic, "503 while failed"),
            (no_traffic_healthy, "pass: healthy again"),
        ],
        &p.log(),
    );
    // The host now sleeps 1.2 s; the first request wakes it.
    let sent = one_request(listen).await;
    let checks = wait_checks(&b, 7, Duration::from_secs(5), &p).await;
    let woken = checks[5].0.saturating_duration_since(sent);
    assert!(woken < LATE, "checked at the first request, not after 1.2 s: {woken:?}\n{}", p.log());
    assert_gaps(&checks, 5, &[(100 * MS, "traffic now: interval")], &p.log());
}

/// `interval_jitter` adds a random wait below it to every interval.
#[tokio::test]
async fn interval_jitter_spreads_the_checks() {
    let b = ScriptedBackend::start(SocketAddr::new(ip(11, 3), 0), &[], Answer::Pass).await;
    let hc = "timeout: 0.5s
        interval: 0.1s
        no_traffic_interval: 0.1s
        interval_jitter: 0.5s
        unhealthy_threshold: 1
        healthy_threshold: 1";
    let (p, _, _) = proxy(3, &[b.addr], hc).await;
    let checks = wait_checks(&b, 11, Duration::from_secs(15), &p).await;
    let gaps: Vec<Duration> = checks.windows(2).map(|w| w[1].0 - w[0].0).collect();
    for g in &gaps {
        assert!(*g + 10 * MS >= 100 * MS && *g <= 600 * MS + LATE, "{gaps:?}");
    }
    let (low, high) = (gaps.iter().min().unwrap(), gaps.iter().max().unwrap());
    // Ten draws from 0..500 ms all within 150 ms of each other: about 1 in 10^4.
    assert!(*high - *low > 150 * MS, "the waits vary: {gaps:?}");
}

/// The reported bug: the proxy starts a second before its three backends,
/// under steady traffic; every host fails its first check. They must be
/// healthy within about `interval` of answering, not after the 60 s
/// no-traffic interval the first failure was scheduled with.
#[tokio::test]
async fn backends_starting_after_the_proxy_are_healthy_within_an_interval() {
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr(ip(11, 4))).collect();
    let hc = "timeout: 0.25s
        interval: 0.5s
        unhealthy_threshold: 2
        healthy_threshold: 1";
    let (p, listen, admin) = proxy(4, &addrs, hc).await;
    let healthy = || async {
        let text =
            support::client().get(format!("http://{admin}/clusters")).send().await.unwrap().text().await.unwrap();
        let flags: Vec<&str> = text.lines().filter(|l| l.contains("::health_flags::")).collect();
        flags.len() == 3 && flags.iter().all(|l| l.ends_with("::healthy"))
    };
    assert!(!healthy().await, "nothing answers yet");

    // Steady traffic from before the backends exist until the end.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, ok) = (stop.clone(), ok.clone());
        tokio::spawn(async move {
            let c = support::client();
            while !stop.load(Ordering::SeqCst) {
                if matches!(c.get(format!("http://{listen}/")).send().await, Ok(r) if r.status() == 200) {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut backends = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        backends.push(Backend::start(&format!("r{i}"), *a).await);
    }
    let started = Instant::now();
    // `interval` plus a check's timeout and a loaded machine's delays.
    let limit = Duration::from_secs(3);
    let recovered = eventually(limit, healthy).await;
    let took = started.elapsed();
    let served = eventually(Duration::from_secs(2), || async { ok.load(Ordering::SeqCst) > 0 }).await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    assert!(recovered, "hosts still failed {took:?} after their backends started\n{}", p.log());
    assert!(served, "traffic gets through");
    for b in &backends {
        assert!(b.hits() > 0, "{} served traffic (health checks count too)", b.name());
    }
}
