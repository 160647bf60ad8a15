//! The admin interface against the real binary: traffic through a real
//! listener to real backends, then Envoy's `/stats`, `/stats/prometheus`
//! (checked by `promtool`), `/clusters`, readiness and the POST-only
//! commands. Every test owns its 127.0.4.x addresses.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::prometheus::{promtool_check, Exposition};
use support::{client, free_addr, ip, send, yaml, Backend, ProxyProcess, LIMIT};

/// A free port on `127.0.4.<host>`, the loopback block these tests own.
fn addr(host: u8) -> SocketAddr {
    free_addr(ip(4, host))
}

/// Polls `path` until `done(body)` holds; returns the last body.
async fn wait_for(proxy: &ProxyProcess, path: &str, done: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let (status, body) = proxy.get(path).await;
        if status == 200 && done(&body) {
            return body;
        }
        assert!(start.elapsed() < LIMIT, "{path} never reached the expected state:\n{body}\n{}", proxy.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn endpoint(a: SocketAddr) -> (String, u16) {
    (a.ip().to_string(), a.port())
}

struct Traffic {
    proxy: ProxyProcess,
    backend: Backend,
    listener: SocketAddr,
}

/// Admin .10, listener .11, backend .12, nothing listening on .13.
/// Sends 3 × 200, 1 × 404 and a route timeout (504) through `good`, and
/// one 503 each through `dead` (connection refused) and `empty` (no endpoints).
async fn traffic() -> Traffic {
    let admin = addr(10);
    let listener = addr(11);
    let backend = Backend::start("good", addr(12)).await;
    let dead = addr(13);
    let config = yaml::bootstrap_with_admin(
        admin,
        &[yaml::route_listener(
            listener,
            "admin_test",
            &[
                ("/dead", "cluster: dead"),
                ("/empty", "cluster: empty"),
                ("/hang", "cluster: good, timeout: 0.25s"),
                ("/", "cluster: good"),
            ],
        )],
        &[
            yaml::cluster("good", "STATIC", &[endpoint(backend.addr)], ""),
            yaml::cluster("dead", "STATIC", &[endpoint(dead)], ""),
            yaml::cluster("empty", "STATIC", &[], ""),
        ],
    );
    let proxy = ProxyProcess::live(&config, admin).await;
    let http = client();
    let url = |p: &str| format!("http://{listener}{p}");
    for (path, expected) in
        [("/a", 200), ("/b", 200), ("/c", 200), ("/status/404", 404), ("/hang", 504), ("/dead", 503), ("/empty", 503)]
    {
        let (status, body) = send(http.get(url(path))).await;
        assert_eq!(status, expected, "{path}: {body}");
    }
    // Counting happens in the logging phase, just after the response went out.
    wait_for(&proxy, "/stats?filter=downstream_rq_total", |b| b.contains("http.admin_test.downstream_rq_total: 7"))
        .await;
    Traffic { proxy, backend, listener }
}

#[tokio::test]
async fn stats_count_requests_per_cluster_and_code() {
    let t = traffic().await;
    let (_, stats) = t.proxy.get("/stats").await;
    for line in [
        "cluster.good.upstream_rq_total: 5",
        "cluster.good.upstream_rq_200: 3",
        "cluster.good.upstream_rq_404: 1",
        "cluster.good.upstream_rq_2xx: 3",
        "cluster.good.upstream_rq_4xx: 1",
        // The route timeout's local 504, too.
        "cluster.good.upstream_rq_504: 1",
        "cluster.good.upstream_rq_5xx: 1",
        "cluster.good.upstream_rq_timeout: 1",
        "cluster.good.membership_total: 1",
        "cluster.good.membership_healthy: 1",
        // Local replies count in the cluster's per-code stats, as in Envoy.
        "cluster.dead.upstream_rq_total: 1",
        "cluster.dead.upstream_rq_503: 1",
        "cluster.dead.upstream_rq_5xx: 1",
        "cluster.dead.upstream_cx_connect_fail: 1",
        "cluster.empty.upstream_rq_503: 1",
        "cluster.empty.upstream_cx_none_healthy: 1",
        "cluster.empty.membership_total: 0",
        "http.admin_test.downstream_rq_2xx: 3",
        "http.admin_test.downstream_rq_4xx: 1",
        "http.admin_test.downstream_rq_5xx: 3",
        "server.live: 1",
        "server.state: 0",
    ] {
        assert!(stats.lines().any(|l| l == line), "missing {line:?} in\n{stats}");
    }
    // A cluster never sees a code it did not answer (Envoy creates them lazily).
    assert!(!stats.contains("cluster.good.upstream_rq_503"), "{stats}");
    assert!(!stats.contains("cluster.empty.upstream_rq_2"), "{stats}");
    assert!(stats.lines().any(|l| l.starts_with("cluster.good.upstream_rq_time: P0(")), "{stats}");

    let (_, filtered) = t.proxy.get("/stats?filter=%5Ecluster%5C.good%5C.upstream_rq_2").await;
    assert_eq!(filtered, "cluster.good.upstream_rq_200: 3\ncluster.good.upstream_rq_2xx: 3\n");
    let (_, used) = t.proxy.get("/stats?usedonly&filter=cluster.good.upstream_rq_(t|r)").await;
    assert!(used.contains("cluster.good.upstream_rq_total: 5") && !used.contains("upstream_rq_retry"), "{used}");
    let (status, bad) = t.proxy.get("/stats?filter=(").await;
    assert_eq!(status, 400, "{bad}");

    let (_, json) = t.proxy.get("/stats?format=json").await;
    let json: serde_json::Value = serde_json::from_str(&json).expect("stats json");
    let entries = json["stats"].as_array().expect("stats array");
    let value = |name: &str| entries.iter().find(|e| e["name"] == name).map(|e| e["value"].clone());
    assert_eq!(value("cluster.good.upstream_rq_total"), Some(5.into()));
    let histograms = entries.iter().find_map(|e| e.get("histograms")).expect("histograms entry");
    assert!(histograms["computed_quantiles"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["name"] == "cluster.good.upstream_rq_time"));
}

#[tokio::test]
async fn prometheus_exposition_matches_envoy_and_passes_promtool() {
    let t = traffic().await;
    let (status, text) = t.proxy.get("/stats/prometheus").await;
    assert_eq!(status, 200);
    let p = Exposition::parse(text);
    for line in [
        "# TYPE envoy_cluster_upstream_rq_total counter",
        r#"envoy_cluster_upstream_rq_total{envoy_cluster_name="good"} 5"#,
        "# TYPE envoy_cluster_upstream_rq untyped",
        r#"envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="good"} 3"#,
        r#"envoy_cluster_upstream_rq{envoy_response_code="404",envoy_cluster_name="good"} 1"#,
        r#"envoy_cluster_upstream_rq{envoy_response_code="504",envoy_cluster_name="good"} 1"#,
        r#"envoy_cluster_upstream_rq_timeout{envoy_cluster_name="good"} 1"#,
        r#"envoy_cluster_upstream_rq{envoy_response_code="503",envoy_cluster_name="dead"} 1"#,
        r#"envoy_cluster_upstream_rq{envoy_response_code="503",envoy_cluster_name="empty"} 1"#,
        "# TYPE envoy_cluster_upstream_rq_xx untyped",
        r#"envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="good"} 3"#,
        r#"envoy_cluster_upstream_rq_xx{envoy_response_code_class="4",envoy_cluster_name="good"} 1"#,
        r#"envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="dead"} 1"#,
        "# TYPE envoy_cluster_upstream_rq_time histogram",
        r#"envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="good",le="0.5"} "#,
        // The 504 never got an upstream answer, so it has no upstream time (as in Envoy).
        r#"envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="good",le="+Inf"} 4"#,
        r#"envoy_cluster_upstream_rq_time_count{envoy_cluster_name="good"} 4"#,
        "# TYPE envoy_cluster_upstream_cx_active gauge",
        r#"envoy_cluster_upstream_cx_connect_fail{envoy_cluster_name="dead"} 1"#,
        "# TYPE envoy_cluster_membership_healthy gauge",
        r#"envoy_cluster_membership_total{envoy_cluster_name="good"} 1"#,
        r#"envoy_cluster_membership_healthy{envoy_cluster_name="good"} 1"#,
        r#"envoy_cluster_membership_total{envoy_cluster_name="empty"} 0"#,
        r#"envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="admin_test"} 7"#,
        r#"envoy_http_downstream_rq_xx{envoy_response_code_class="5",envoy_http_conn_manager_prefix="admin_test"} 3"#,
        r#"envoy_http_downstream_rq_time_count{envoy_http_conn_manager_prefix="admin_test"} 7"#,
        "# TYPE envoy_http_downstream_cx_active gauge",
        "# TYPE envoy_server_live gauge",
        "envoy_server_live 1",
        "# TYPE envoy_server_uptime gauge",
    ] {
        let found = if line.ends_with(' ') { p.text.lines().any(|l| l.starts_with(line)) } else { p.has_line(line) };
        assert!(found, "missing {line:?} in\n{}", p.text);
    }
    assert!(p.value("envoy_server_memory_allocated") > 0.0);
    for name in [
        "envoy_cluster_upstream_cx_rx_bytes_total",
        "envoy_cluster_upstream_cx_tx_bytes_total",
        "envoy_cluster_upstream_rq_timeout",
        "envoy_cluster_upstream_rq_retry",
        "envoy_cluster_update_success",
        "envoy_cluster_update_failure",
    ] {
        assert_eq!(p.family(name).len(), 3, "{name} for every cluster");
    }

    // What the issue's dashboard queries divide: per cluster, the classes add up to the total.
    for cluster in ["good", "dead", "empty"] {
        let total = p.value(&format!(r#"envoy_cluster_upstream_rq_total{{envoy_cluster_name="{cluster}"}}"#));
        let classes: f64 = p
            .family("envoy_cluster_upstream_rq_xx")
            .iter()
            .filter(|(s, _)| s.contains(&format!(r#"envoy_cluster_name="{cluster}""#)))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(classes, total, "{cluster}");
    }

    // Connections: every downstream request here used one client connection
    // pool; upstream, opened = open + closed.
    let listener = format!("{}_{}", t.listener.ip(), t.listener.port());
    let http_cx = p.value(r#"envoy_http_downstream_cx_total{envoy_http_conn_manager_prefix="admin_test"}"#);
    assert!(http_cx >= 1.0);
    assert_eq!(
        p.value(&format!(r#"envoy_listener_downstream_cx_total{{envoy_listener_address="{listener}"}}"#)),
        http_cx
    );
    let good = |stat: &str| p.value(&format!(r#"envoy_cluster_{stat}{{envoy_cluster_name="good"}}"#));
    assert!(good("upstream_cx_total") >= 1.0);
    assert_eq!(good("upstream_cx_active"), good("upstream_cx_total") - good("upstream_cx_destroy"));

    promtool_check(&p.text);
}

#[tokio::test]
async fn upstream_connections_are_counted_until_they_close() {
    let t = traffic().await;
    let cx = |stat: &'static str| {
        let proxy = &t.proxy;
        async move {
            let (_, body) = proxy.get(&format!("/stats?filter=%5Ecluster%5C.good%5C.upstream_cx_{stat}%24")).await;
            body.rsplit(' ').next().and_then(|v| v.trim().parse::<i64>().ok()).expect("cx stat")
        }
    };
    // The route timeout closed the pooled connection it hung on.
    assert_eq!(cx("active").await, cx("total").await - cx("destroy").await);
    // A new request opens one more; the backend keeps it alive, so it stays pooled.
    let (status, _) = send(client().get(format!("http://{}/again", t.listener))).await;
    assert_eq!(status, 200);
    wait_for(&t.proxy, "/stats?filter=downstream_rq_total", |b| b.contains("http.admin_test.downstream_rq_total: 8"))
        .await;
    assert!(cx("active").await >= 1, "{}", t.proxy.get("/stats?filter=upstream_cx").await.1);
    let opened = cx("total").await;
    // The backend closes them; Pingora's pool notices and drops its end.
    t.backend.close_connections();
    wait_for(&t.proxy, "/stats?filter=%5Ecluster%5C.good%5C.upstream_cx_active%24", |b| {
        b == "cluster.good.upstream_cx_active: 0\n"
    })
    .await;
    assert_eq!(cx("destroy").await, opened);
    let (_, clusters) = t.proxy.get("/clusters").await;
    assert!(clusters.contains(&format!("good::{}::cx_active::0", t.backend.addr)), "{clusters}");
}

#[tokio::test]
async fn clusters_lists_hosts_in_envoy_text_and_json() {
    let t = traffic().await;
    let host = t.backend.addr;
    let (_, text) = t.proxy.get("/clusters").await;
    for line in [
        "good::observability_name::good".to_string(),
        "good::default_priority::max_connections::1024".to_string(),
        "good::default_priority::max_retries::3".to_string(),
        format!("good::{host}::rq_total::5"),
        format!("good::{host}::rq_success::4"),
        format!("good::{host}::rq_error::1"),
        format!("good::{host}::rq_timeout::1"),
        format!("good::{host}::rq_active::0"),
        format!("good::{host}::health_flags::healthy"),
        format!("good::{host}::weight::1"),
        "empty::added_via_api::false".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert!(text.lines().any(|l| l.starts_with(&format!("good::{host}::cx_active::"))), "{text}");
    assert!(text.lines().any(|l| l.starts_with("dead::") && l.ends_with("::rq_error::1")), "{text}");

    let (_, json) = t.proxy.get("/clusters?format=json").await;
    let json: serde_json::Value = serde_json::from_str(&json).expect("clusters json");
    let statuses = json["cluster_statuses"].as_array().expect("cluster_statuses");
    let good = statuses.iter().find(|c| c["name"] == "good").expect("good cluster");
    let h = &good["host_statuses"][0];
    assert_eq!(h["address"]["socket_address"]["port_value"], host.port());
    assert_eq!(h["address"]["socket_address"]["address"], host.ip().to_string());
    assert_eq!(h["health_status"]["eds_health_status"], "HEALTHY");
    let rq_total = h["stats"].as_array().unwrap().iter().find(|s| s["name"] == "rq_total").expect("rq_total");
    assert_eq!(rq_total["value"], "5");
    let empty = statuses.iter().find(|c| c["name"] == "empty").expect("empty cluster");
    assert_eq!(empty["host_statuses"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn ready_health_check_commands_and_post_only_endpoints() {
    let admin = addr(20);
    let backend = Backend::start("good", addr(22)).await;
    let config = yaml::bootstrap_with_admin(
        admin,
        &[yaml::route_listener(addr(21), "ready_test", &[("/", "cluster: good")])],
        &[yaml::cluster("good", "STATIC", &[endpoint(backend.addr)], "")],
    );
    let mut proxy = ProxyProcess::live(&config, admin).await;
    assert_eq!(proxy.get("/ready").await, (200, "LIVE\n".to_string()));

    for path in ["/healthcheck/fail", "/healthcheck/ok", "/quitquitquit"] {
        let (status, body) = proxy.get(path).await;
        assert_eq!((status, body.as_str()), (405, "Method GET not allowed, POST required.\n"), "{path}");
    }
    assert_eq!(proxy.get("/ready").await.0, 200, "a refused GET changes nothing");
    assert!(proxy.is_running());

    assert_eq!(proxy.post("/healthcheck/fail").await, (200, "OK\n".to_string()));
    assert_eq!(proxy.get("/ready").await, (503, "DRAINING\n".to_string()));
    let (_, info) = proxy.get("/server_info").await;
    let info: serde_json::Value = serde_json::from_str(&info).expect("server_info json");
    assert_eq!(info["state"], "DRAINING");
    let (_, live) = proxy.get("/stats?filter=%5Eserver%5C.live%24").await;
    assert_eq!(live, "server.live: 0\n");
    assert_eq!(proxy.post("/healthcheck/ok").await, (200, "OK\n".to_string()));
    assert_eq!(proxy.get("/ready").await, (200, "LIVE\n".to_string()));

    let (_, info) = proxy.get("/server_info").await;
    let info: serde_json::Value = serde_json::from_str(&info).expect("server_info json");
    assert_eq!(info["state"], "LIVE");
    assert_eq!(info["command_line_options"]["concurrency"], 1);
    assert!(info["command_line_options"]["config_path"].as_str().unwrap().ends_with("envoy.yaml"));
    assert!(info["uptime_current_epoch"].as_str().unwrap().ends_with('s'));

    let (status, index) = proxy.get("/").await;
    assert_eq!(status, 200);
    assert!(index.contains("href=\"/stats/prometheus\"") && index.contains("method=\"post\""), "{index}");
    let (status, unknown) = proxy.get("/no/such/endpoint").await;
    assert_eq!(status, 404);
    assert!(unknown.contains("/clusters"), "{unknown}");

    assert_eq!(proxy.post("/quitquitquit").await.0, 200);
    let exit = proxy.wait_exit(LIMIT).expect("the proxy exits after /quitquitquit");
    assert!(exit.success(), "{exit}\n{}", proxy.log());
}

#[tokio::test]
async fn config_dump_redacts_inline_private_keys() {
    let admin = addr(30);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let listener = yaml::with_inline_tls(
        &yaml::route_listener(addr(31), "dump_test", &[("/", "cluster: films")]),
        &cert_pem,
        &key_pem,
    );
    let config =
        yaml::bootstrap_with_admin(admin, &[listener], &[yaml::cluster("films", "STATIC", &[endpoint(addr(32))], "")]);
    let proxy = ProxyProcess::live(&config, admin).await;

    let (status, dump) = proxy.get("/config_dump").await;
    assert_eq!(status, 200);
    assert!(!dump.contains("PRIVATE KEY"), "key material leaked:\n{dump}");
    let json: serde_json::Value = serde_json::from_str(&dump).expect("config_dump json");
    let configs = json["configs"].as_array().expect("configs");
    assert_eq!(configs[0]["@type"], "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump");
    let chain = &configs[0]["bootstrap"]["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]
        ["typed_config"]["common_tls_context"]["tls_certificates"][0];
    assert_eq!(chain["private_key"]["inline_string"], "[redacted]");
    assert!(chain["certificate_chain"]["inline_string"].as_str().unwrap().contains("BEGIN CERTIFICATE"));
    assert_eq!(configs[1]["static_clusters"][0]["cluster"]["name"], "films");
    assert_eq!(configs[2]["static_listeners"][0]["listener"]["name"], "dump_test_listener");

    // The dump is what runs: the file as loaded, not as it is now.
    std::fs::write(&proxy.config, config.replace("dump_test_listener", "edited_listener")).expect("edit the file");
    let (_, again) = proxy.get("/config_dump").await;
    assert!(again.contains("dump_test_listener") && !again.contains("edited_listener"), "{again}");
}

/// Until the clusters' first discovery ends, `/ready` says PRE_INITIALIZING
/// and the listeners stay closed. The name server here never answers, so
/// discovery gives up after the resolver's 4 s budget; the admin interface
/// answers within milliseconds of start, well inside that window.
#[tokio::test]
async fn ready_is_pre_initializing_until_first_discovery() {
    let admin = addr(40);
    let listener = addr(41);
    let silent_dns = std::net::UdpSocket::bind(addr(42)).expect("bind silent DNS");
    let dns = silent_dns.local_addr().expect("dns addr");
    let resolver = yaml::resolver(dns);
    let config = yaml::bootstrap_with_admin(
        admin,
        &[yaml::route_listener(listener, "warming_test", &[("/", "cluster: films")])],
        &[yaml::cluster("films", "STRICT_DNS", &[("films.test".to_string(), 5000)], &resolver)],
    );
    let proxy = ProxyProcess::with_admin(&config, admin, 1).await;
    assert_eq!(proxy.get("/ready").await, (503, "PRE_INITIALIZING\n".to_string()));
    let (_, warming) = proxy.get("/stats?filter=warming_clusters").await;
    assert_eq!(warming, "cluster_manager.warming_clusters: 1\n");
    assert!(tokio::net::TcpStream::connect(listener).await.is_err(), "listeners open only after warming");

    let start = Instant::now();
    while proxy.get("/ready").await.0 != 200 {
        assert!(start.elapsed() < LIMIT, "never left PRE_INITIALIZING:\n{}", proxy.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(tokio::net::TcpStream::connect(listener).await.is_ok(), "listeners open once warming ends");
    let (_, attempts) = proxy.get("/stats?filter=%5Ecluster%5C.films%5C.update_attempt%24").await;
    let attempts: u64 = attempts.rsplit(' ').next().and_then(|v| v.trim().parse().ok()).expect("update_attempt");
    assert!(attempts >= 1, "the first discovery was attempted");
    drop(silent_dns);
}

/// `/ready` says LIVE only once every listener accepts: 24 plaintext ones
/// and a TLS one (which Pingora's listener service serves, on either
/// engine). Polled back to back, the first LIVE is followed at once by a
/// connect to each. Before, the admin went LIVE as soon as the clusters
/// were warm, while the listeners' service could still be starting (with
/// 32 workers it takes milliseconds to find its threads): a load balancer
/// gating on `/ready` was refused. That build failed this check in 4 of 5
/// starts on the native engine, so the proxy is started three times.
#[tokio::test]
async fn live_means_every_listener_accepts() {
    let backend = Backend::start("good", addr(73)).await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    for _ in 0..3 {
        let admin = addr(70);
        // Distinct ports (free_port never gives one twice).
        let plain: Vec<SocketAddr> = (0..24).map(|_| addr(71)).collect();
        let tls = addr(72);
        let mut listeners: Vec<String> = plain
            .iter()
            .enumerate()
            .map(|(i, a)| yaml::route_listener(*a, &format!("plain_{i}"), &[("/", "cluster: good")]))
            .collect();
        listeners.push(yaml::with_inline_tls(
            &yaml::route_listener(tls, "tls", &[("/", "cluster: good")]),
            &cert_pem,
            &key_pem,
        ));
        let clusters = [yaml::cluster("good", "STATIC", &[endpoint(backend.addr)], "")];
        let proxy =
            ProxyProcess::with_admin(&yaml::bootstrap_with_admin(admin, &listeners, &clusters), admin, 32).await;
        // One kept-alive connection: a fraction of a millisecond between a
        // LIVE answer and the connects below.
        let poll = client();
        let start = Instant::now();
        while !matches!(poll.get(format!("http://{admin}/ready")).send().await, Ok(r) if r.status() == 200) {
            assert!(start.elapsed() < LIMIT, "never became LIVE:\n{}", proxy.log());
        }
        for listener in plain.iter().rev().chain([&tls]) {
            let connected = tokio::net::TcpStream::connect(listener).await;
            assert!(connected.is_ok(), "LIVE, but listener {listener} refused: {connected:?}\n{}", proxy.log());
        }
        let (status, body) = send(client().get(format!("http://{}/", plain[0]))).await;
        assert_eq!(status, 200, "{body}");
    }
}

/// An admin on port 0 gets its port from the kernel; `--admin-address-path`
/// writes where (Envoy's flag), and the log says it too. The admin serves
/// that address: the socket bound at start-up is the one it accepts on.
/// Before, the start-up check bound the address, closed it, and the admin
/// service bound it again, so a port 0 admin served on another port than
/// the one checked, and a fixed one was refused (or free for another
/// process) in between.
#[tokio::test]
async fn an_admin_on_port_zero_is_found_through_admin_address_path() {
    let backend = Backend::start("good", addr(92)).await;
    let listener = addr(91);
    let config = yaml::bootstrap_with_admin(
        SocketAddr::new(ip(4, 90), 0),
        &[yaml::route_listener(listener, "admin_port_zero", &[("/", "cluster: good")])],
        &[yaml::cluster("good", "STATIC", &[endpoint(backend.addr)], "")],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("admin-address");
    let args = ["--admin-address-path", path.to_str().expect("utf-8 path")];
    // The file is written before the listeners open.
    let proxy = ProxyProcess::start_with_args(&config, listener, &args).await;
    let written = std::fs::read_to_string(&path).expect("admin address file");
    let admin: SocketAddr = written.parse().unwrap_or_else(|e| panic!("{written:?}: {e}"));
    assert_eq!(admin.ip(), ip(4, 90));
    assert_ne!(admin.port(), 0);
    assert!(proxy.log().contains(&format!("admin interface address={admin}")), "{}", proxy.log());
    let (status, body) = send(client().get(format!("http://{admin}/ready"))).await;
    assert_eq!((status, body.as_str()), (200, "LIVE\n"), "{}", proxy.log());
}

/// A file that cannot be written stops the start, naming the flag.
#[test]
fn an_admin_address_path_that_cannot_be_written_stops_the_start() {
    let config = yaml::bootstrap_with_admin(
        SocketAddr::new(ip(4, 93), 0),
        &[yaml::route_listener(addr(94), "admin_path_refused", &[("/", "cluster: none")])],
        &[yaml::cluster("none", "STATIC", &[], "")],
    );
    let stderr = support::proxy::refused_at_start(&config, &["--admin-address-path", "/nonexistent/dir/admin"]);
    assert!(stderr.contains("--admin-address-path: cannot write /nonexistent/dir/admin"), "{stderr}");
}

/// Each plaintext listener counts its own connections and requests: the
/// accept loop tells them apart by the socket, not by address.
#[tokio::test]
async fn each_listener_counts_its_own_traffic() {
    let admin = addr(60);
    let (one, two) = (addr(61), addr(62));
    let backend = Backend::start("good", addr(63)).await;
    let config = yaml::bootstrap_with_admin(
        admin,
        &[
            yaml::route_listener(one, "first", &[("/", "cluster: good")]),
            yaml::route_listener(two, "second", &[("/", "cluster: good")]),
        ],
        &[yaml::cluster("good", "STATIC", &[endpoint(backend.addr)], "")],
    );
    let proxy = ProxyProcess::live(&config, admin).await;
    for (listener, requests) in [(one, 2), (two, 3)] {
        for _ in 0..requests {
            // A client per request: a connection each.
            let (status, body) = send(client().get(format!("http://{listener}/"))).await;
            assert_eq!(status, 200, "{body}");
        }
    }
    let stats = wait_for(&proxy, "/stats?filter=downstream_rq_total", |b| {
        b.contains("http.first.downstream_rq_total: 2") && b.contains("http.second.downstream_rq_total: 3")
    })
    .await;
    let (_, cx) = proxy.get("/stats?filter=downstream_cx_total").await;
    for line in ["http.first.downstream_cx_total: 2", "http.second.downstream_cx_total: 3"] {
        assert!(cx.contains(line), "{line} missing:\n{cx}\n{stats}");
    }
}

/// The admin stays up while the proxy drains after SIGTERM, as Envoy's does:
/// `/ready` says DRAINING until the last in-flight request is done.
#[tokio::test]
async fn admin_stays_up_and_says_draining_during_shutdown() {
    let admin = addr(50);
    let listen = addr(51);
    let backend = Backend::start("good", addr(52)).await;
    let config = yaml::bootstrap_with_admin(
        admin,
        &[yaml::route_listener(listen, "drain_test", &[("/", "cluster: good, timeout: 1.5s")])],
        &[yaml::cluster("good", "STATIC", &[endpoint(backend.addr)], "")],
    );
    let mut proxy = ProxyProcess::live(&config, admin).await;
    // Listeners open once the cluster is warm; the admin answers before that.
    let start = Instant::now();
    while proxy.get("/ready").await.0 != 200 {
        assert!(start.elapsed() < LIMIT, "never became ready:\n{}", proxy.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A request the backend never answers: the route timeout ends it after 1.5 s.
    let in_flight = tokio::spawn(async move { send(client().get(format!("http://{listen}/hang"))).await.0 });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = proxy.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = client().get(format!("http://{admin}/ready")).send().await;
    let ready = match ready {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => panic!("admin gone while draining: {e}\n{}", proxy.log()),
    };
    assert_eq!(ready, (503, "DRAINING\n".to_string()));
    assert!(proxy.is_running(), "still finishing the in-flight request");
    assert_eq!(in_flight.await.unwrap(), 504);
    let exit = proxy.wait_exit(LIMIT).expect("exits once drained");
    assert!(exit.success(), "{exit}\n{}", proxy.log());
}

/// A listener that cannot listen when warming ends stops the proxy rather
/// than leave it serving without that listener: the error names the
/// listener and the exit code is 1. Another socket takes the address while
/// the proxy warms up: both may bind it (`SO_REUSEADDR`, neither
/// listening), only the first to listen keeps it. The name server never
/// answers, so warming lasts the resolver's 4 s budget.
#[tokio::test]
async fn a_listener_that_cannot_listen_stops_the_proxy() {
    let admin = addr(80);
    let listener = addr(81);
    let silent_dns = std::net::UdpSocket::bind(addr(82)).expect("bind silent DNS");
    let dns = silent_dns.local_addr().expect("dns addr");
    let resolver = yaml::resolver(dns);
    let config = yaml::bootstrap_with_admin(
        admin,
        &[yaml::route_listener(listener, "taken", &[("/", "cluster: films")])],
        &[yaml::cluster("films", "STRICT_DNS", &[("films.test".to_string(), 5000)], &resolver)],
    );
    // The admin answers once the proxy has bound its listeners' sockets.
    let mut proxy = ProxyProcess::with_admin(&config, admin, 1).await;
    assert_eq!(proxy.get("/ready").await, (503, "PRE_INITIALIZING\n".to_string()));
    let thief = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    thief.set_reuse_address(true).expect("SO_REUSEADDR");
    thief.bind(&listener.into()).expect("a second bind while nobody listens");
    thief.listen(16).expect("listen first");

    let exit = proxy.wait_exit(LIMIT).expect("the proxy stops");
    let log = proxy.log();
    assert_eq!(exit.code(), Some(1), "{exit}\n{log}");
    let named = format!("listener \"taken_listener\": cannot listen on {listener}");
    assert!(log.lines().any(|l| l.starts_with("error: ") && l.contains(&named)), "{log}");
    drop(silent_dns);
}
