//! Access logs end to end: the proxy binary with `access_log` file loggers
//! (Envoy's default text format and a JSON dictionary) writes one line per
//! request, with Envoy's response flags for local replies, and flushes
//! on shutdown. Run with either HTTP/1 engine
//! (`FRONTEND_PROXY_HTTP1_ENGINE=pingora`). Addresses: 127.0.14.x.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use support::yaml;
use support::{client, free_addr, ip, Backend, ProxyProcess, LIMIT};

/// Named routes: `/films` to a live backend, `/empty` to a cluster with
/// no hosts; anything else matches no route.
const ROUTES: &str = r#"
            - name: all
              domains: ["*"]
              routes:
              - name: films_route
                match: { prefix: "/films" }
                route: { cluster: films }
              - name: empty_route
                match: { prefix: "/empty" }
                route: { cluster: empty }"#;

fn access_logs(text: &Path, json: &Path) -> String {
    format!(
        r#"          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {text}
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {json}
              log_format:
                json_format:
                  code: "%RESPONSE_CODE%"
                  flags: "%RESPONSE_FLAGS%"
                  line: "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
                  cluster: "%UPSTREAM_CLUSTER%"
                  upstream: "%UPSTREAM_HOST%"
                  route: "%ROUTE_NAME%"
                  details: "%RESPONSE_CODE_DETAILS%"
                  client: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"
                  sent: "%BYTES_SENT%"
                  service_time: "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%""#,
        text = text.display(),
        json = json.display()
    )
}

async fn start(host: u8, logs: &Path) -> (Backend, ProxyProcess, String) {
    let films = Backend::start("films-1", SocketAddr::new(ip(14, host), 0)).await;
    let listen = free_addr(ip(14, host));
    let extra = access_logs(&logs.join("access.log"), &logs.join("access.json"));
    let cfg = yaml::bootstrap(
        &[yaml::listener("main", listen, &yaml::hcm("ingress_http", &extra, ROUTES))],
        &[
            yaml::cluster("films", "STATIC", &[(films.addr.ip().to_string(), films.addr.port())], ""),
            yaml::cluster("empty", "STATIC", &[], ""),
        ],
    );
    let proxy = ProxyProcess::start(&cfg, listen).await;
    (films, proxy, format!("http://{listen}"))
}

#[tokio::test]
async fn file_loggers_write_envoys_default_format_and_json() {
    let logs = tempfile::tempdir().unwrap();
    let (films, proxy, url) = start(1, logs.path()).await;
    let get = |path: &str| client().get(format!("{url}{path}")).header("user-agent", "access-test").send();
    assert_eq!(get("/films/1").await.unwrap().status(), 200);
    assert_eq!(get("/nothing").await.unwrap().status(), 404);
    assert_eq!(get("/empty").await.unwrap().status(), 503);

    // Each request came on a connection of its own, which may be another
    // worker's: lines come in the order requests end, as in Envoy, not the
    // order they were sent. Put them in the order of the requests.
    let order = ["/films/1 ", "/nothing ", "/empty "];
    let position = |line: &str| order.iter().position(|p| line.contains(p));
    let mut text = support::log_lines(&logs.path().join("access.log"), 3).await;
    text.sort_by_key(|l| position(l));
    assert_eq!(text.len(), 3, "{text:#?}\n{}", proxy.log());
    let films_addr = films.addr.to_string();
    // [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
    // %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%
    // "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"
    for line in &text {
        let time = &line[1..25];
        assert!(line.starts_with('[') && &line[25..27] == "] ", "{line}");
        assert!(time.len() == 24 && time.ends_with('Z') && &time[10..11] == "T" && &time[19..20] == ".", "{line}");
        let fields: Vec<&str> = line[27..].split('"').collect();
        assert_eq!(fields.len(), 13, "{line}");
        assert_eq!(fields[3], "-", "no x-forwarded-for: {line}");
        assert_eq!(fields[5], "access-test", "{line}");
        assert_eq!(fields[7].len(), 36, "a generated request id: {line}");
        assert!(fields[9].starts_with("127.0.14.1:"), "{line}");
    }
    let middle = |line: &str| line[27..].split('"').nth(2).unwrap().trim().to_string();
    let numbers = |line: &str| middle(line).split(' ').map(String::from).collect::<Vec<_>>();
    assert!(text[0][27..].starts_with("\"GET /films/1 HTTP/1.1\" 200 - 0 "), "{}", text[0]);
    assert!(text[0].ends_with(&format!("\"{films_addr}\"")), "{}", text[0]);
    let ok = numbers(&text[0]);
    assert!(ok[3] != "0" && ok[5] != "-", "body bytes and an upstream service time: {ok:?}");
    assert!(text[1][27..].starts_with("\"GET /nothing HTTP/1.1\" 404 NR 0 0 "), "{}", text[1]);
    assert!(text[1].ends_with("\"-\""), "{}", text[1]);
    assert_eq!(numbers(&text[1])[5], "-", "no upstream service time");
    assert!(text[2][27..].starts_with("\"GET /empty HTTP/1.1\" 503 UH 0 19 "), "{}", text[2]);
    assert!(text[2].ends_with("\"-\""), "{}", text[2]);

    let json = support::log_lines(&logs.path().join("access.json"), 3).await;
    let mut json: Vec<serde_json::Value> = json.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    json.sort_by_key(|j| position(&format!("{} ", j["line"].as_str().unwrap_or_default())));
    assert_eq!(json[0]["code"], 200);
    assert_eq!(json[0]["flags"], "-");
    assert_eq!(json[0]["line"], "GET /films/1 HTTP/1.1");
    assert_eq!(json[0]["cluster"], "films");
    assert_eq!(json[0]["upstream"], films_addr);
    assert_eq!(json[0]["route"], "films_route");
    assert_eq!(json[0]["details"], "via_upstream");
    assert_eq!(json[0]["client"], "127.0.0.1");
    assert!(json[0]["sent"].as_u64().unwrap() > 0 && json[0]["service_time"].is_u64(), "{}", json[0]);
    assert_eq!(json[1]["code"], 404);
    assert_eq!(json[1]["flags"], "NR");
    assert_eq!(json[1]["route"], serde_json::Value::Null);
    assert_eq!(json[1]["upstream"], serde_json::Value::Null);
    assert_eq!(json[1]["details"], "route_not_found");
    assert_eq!(json[2]["code"], 503);
    assert_eq!(json[2]["flags"], "UH");
    assert_eq!(json[2]["cluster"], "empty");
    assert_eq!(json[2]["route"], "empty_route");
    assert_eq!(json[2]["details"], "no_healthy_upstream");
    assert_eq!(json[2]["sent"], 19);
}

#[tokio::test]
async fn shutdown_flushes_what_the_writer_holds() {
    let logs = tempfile::tempdir().unwrap();
    let (_films, mut proxy, url) = start(2, logs.path()).await;
    let path = logs.path().join("access.log");
    assert_eq!(client().get(format!("{url}/nothing")).send().await.unwrap().status(), 404);
    let sent = Instant::now();
    proxy.signal("TERM");
    let status = proxy.wait_exit(LIMIT).expect("the proxy exits on SIGTERM");
    assert!(status.success(), "{status}:\n{}", proxy.log());
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 1, "exited {:?} after the request:\n{text}", sent.elapsed());
    assert!(text.contains("\"GET /nothing HTTP/1.1\" 404 NR "), "{text}");
}

#[tokio::test]
async fn no_access_log_is_written_at_the_default_log_level() {
    // Envoy writes no access log unless the configuration asks; nor does
    // the proxy's own log carry a line per request at `info`.
    let films = Backend::start("films-1", SocketAddr::new(ip(14, 3), 0)).await;
    let listen = free_addr(ip(14, 3));
    let cfg = yaml::bootstrap(
        &[yaml::listener("main", listen, &yaml::hcm("ingress_http", "", ROUTES))],
        &[
            yaml::cluster("films", "STATIC", &[(films.addr.ip().to_string(), films.addr.port())], ""),
            yaml::cluster("empty", "STATIC", &[], ""),
        ],
    );
    let proxy = ProxyProcess::start(&cfg, listen).await;
    assert_eq!(client().get(format!("http://{listen}/films/1")).send().await.unwrap().status(), 200);
    assert_eq!(client().get(format!("http://{listen}/nothing")).send().await.unwrap().status(), 404);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = proxy.log();
    assert!(!log.contains("/films/1") && !log.contains("/nothing"), "{log}");
}

#[test]
fn an_unopenable_access_log_fails_the_start_with_its_yaml_path() {
    let listen: SocketAddr = "127.0.14.4:1".parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let extra = access_logs(&missing.join("access.log"), &dir.path().join("access.json"));
    let cfg = yaml::bootstrap(
        &[yaml::listener("main", listen, &yaml::hcm("ingress_http", &extra, ROUTES))],
        &[yaml::cluster("films", "STATIC", &[], ""), yaml::cluster("empty", "STATIC", &[], "")],
    );
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new(support::proxy::binary())
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.access_log[0]: cannot open access log"
        ),
        "{stderr}"
    );
}

/// A file logger at `path` writing `%RESPONSE_CODE% %REQ(:PATH)%`, with
/// `filter` (YAML at the logger's indentation + 2).
fn filtered_logger(path: &Path, filter: &str) -> String {
    format!(
        r#"
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {}
              log_format:
                text_format: "%RESPONSE_CODE% %REQ(:PATH)% %RESPONSE_FLAGS%\n"
            filter:{filter}"#,
        path.display()
    )
}

#[tokio::test]
async fn filters_pick_the_requests_each_logger_writes() {
    let logs = tempfile::tempdir().unwrap();
    let log = |name: &str| logs.path().join(name);
    let loggers = [
        (
            "errors",
            r#"
              status_code_filter:
                comparison: { op: GE, value: { default_value: 500, runtime_key: access_log.errors } }"#,
        ),
        (
            "not_found",
            r#"
              and_filter:
                filters:
                - status_code_filter: { comparison: { op: EQ, value: { default_value: 404, runtime_key: k } } }
                - response_flag_filter: { flags: [NR] }"#,
        ),
        (
            "flagged",
            r#"
              response_flag_filter: {}"#,
        ),
        (
            "debug_or_slow",
            r#"
              or_filter:
                filters:
                - header_filter: { header: { name: x-debug, string_match: { exact: "1" } } }
                - duration_filter: { comparison: { op: GE, value: { default_value: 60000, runtime_key: k } } }"#,
        ),
        (
            "all",
            r#"
              not_health_check_filter: {}"#,
        ),
        (
            "sampled_none",
            r#"
              runtime_filter: { runtime_key: sample, percent_sampled: { numerator: 0, denominator: HUNDRED } }"#,
        ),
        (
            "sampled_all",
            r#"
              runtime_filter: { runtime_key: sample, percent_sampled: { numerator: 100 } }"#,
        ),
    ];
    let mut extra = String::from("          access_log:");
    for (name, filter) in loggers {
        extra.push_str(&filtered_logger(&log(name), filter));
    }
    let films = Backend::start("films-1", SocketAddr::new(ip(14, 5), 0)).await;
    let listen = free_addr(ip(14, 5));
    let cfg = yaml::bootstrap(
        &[yaml::listener("main", listen, &yaml::hcm("ingress_http", &extra, ROUTES))],
        &[
            yaml::cluster("films", "STATIC", &[(films.addr.ip().to_string(), films.addr.port())], ""),
            yaml::cluster("empty", "STATIC", &[], ""),
        ],
    );
    let mut proxy = ProxyProcess::start(&cfg, listen).await;
    let url = format!("http://{listen}");
    assert_eq!(client().get(format!("{url}/films/1")).send().await.unwrap().status(), 200);
    assert_eq!(client().get(format!("{url}/films/2")).header("x-debug", "1").send().await.unwrap().status(), 200);
    assert_eq!(client().get(format!("{url}/nothing")).send().await.unwrap().status(), 404);
    assert_eq!(client().get(format!("{url}/empty")).send().await.unwrap().status(), 503);
    // Shutdown flushes every writer, so an empty file is a filtered one.
    proxy.signal("TERM");
    assert!(proxy.wait_exit(LIMIT).expect("exits on SIGTERM").success(), "{}", proxy.log());
    // Lines in the order requests ended: each came on a connection of its
    // own, maybe on another worker (as in Envoy, order across workers is
    // not kept), so they are compared sorted, as sets.
    let read = |name: &str| {
        let text = std::fs::read_to_string(log(name)).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        lines.iter().map(|l| format!("{l}\n")).collect::<String>()
    };
    assert_eq!(read("errors"), "503 /empty UH\n");
    assert_eq!(read("not_found"), "404 /nothing NR\n");
    assert_eq!(read("flagged"), "404 /nothing NR\n503 /empty UH\n");
    assert_eq!(read("debug_or_slow"), "200 /films/2 -\n");
    assert_eq!(read("all"), "200 /films/1 -\n200 /films/2 -\n404 /nothing NR\n503 /empty UH\n");
    assert_eq!(read("sampled_none"), "");
    assert_eq!(read("sampled_all"), read("all"));
}

/// `--mode validate` on a config with `access_log` loggers `extra` (and
/// top-level YAML `top`); its exit code and stderr.
fn validate(extra: &str, top: &str) -> (Option<i32>, String) {
    let listen: SocketAddr = "127.0.14.6:1".parse().unwrap();
    let cfg = format!(
        "{top}{}",
        yaml::bootstrap(
            &[yaml::listener("main", listen, &yaml::hcm("ingress_http", extra, ROUTES))],
            &[yaml::cluster("films", "STATIC", &[], ""), yaml::cluster("empty", "STATIC", &[], "")],
        )
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new(support::proxy::binary())
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn filters_this_proxy_cannot_honour_are_errors_naming_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut extra = String::from("          access_log:");
    extra.push_str(&filtered_logger(
        &dir.path().join("a.log"),
        r#"
              or_filter:
                filters:
                - traceable_filter: {}
                - response_flag_filter: { flags: [UH, RL, XX] }"#,
    ));
    let (code, stderr) = validate(&extra, "");
    assert_eq!(code, Some(1), "{stderr}");
    let at =
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.access_log[0].filter.or_filter.filters";
    assert!(stderr.contains(&format!("{at}[0].traceable_filter: traceable_filter is not supported")), "{stderr}");
    assert!(
        stderr.contains(&format!("{at}[1].response_flag_filter.flags[1]: response flag \"RL\" is not supported")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{at}[1].response_flag_filter.flags[2]: unknown response flag \"XX\"")),
        "{stderr}"
    );
}

#[tokio::test]
async fn sigusr1_reopens_the_files_after_a_rotation() {
    let logs = tempfile::tempdir().unwrap();
    let (_films, proxy, url) = start(7, logs.path()).await;
    let path = logs.path().join("access.log");
    let get = |p: &str| client().get(format!("{url}{p}")).send();
    assert_eq!(get("/before").await.unwrap().status(), 404);
    support::log_lines(&path, 1).await;
    // What logrotate does: move the file away, then signal.
    let rotated = logs.path().join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    proxy.signal("USR1");
    let start = Instant::now();
    while !proxy.log().contains("SIGUSR1: reopening access logs") {
        assert!(start.elapsed() < LIMIT, "no sign of SIGUSR1:\n{}", proxy.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get("/after").await.unwrap().status(), 404);
    let new = support::log_lines(&path, 1).await;
    assert_eq!(new.len(), 1, "{new:?}");
    assert!(new[0].contains("\"GET /after HTTP/1.1\" 404 NR "), "{new:?}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(old.lines().count(), 1, "{old}");
    assert!(old.contains("\"GET /before HTTP/1.1\" 404 NR "), "{old}");
    // The JSON logger was reopened too, in place: it holds both lines.
    assert_eq!(support::log_lines(&logs.path().join("access.json"), 2).await.len(), 2);
    let mut proxy = proxy;
    assert!(proxy.is_running(), "SIGUSR1 must not end the proxy:\n{}", proxy.log());
}

#[test]
fn a_runtime_key_a_static_layer_sets_is_an_error_as_it_would_not_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut extra = String::from("          access_log:");
    extra.push_str(&filtered_logger(
        &dir.path().join("a.log"),
        r#"
              and_filter:
                filters:
                - status_code_filter: { comparison: { op: GE, value: { default_value: 500, runtime_key: access_log.min_status } } }
                - runtime_filter: { runtime_key: access_log.sampled, percent_sampled: { numerator: 5 } }"#,
    ));
    let top = "layered_runtime:\n  layers:\n  - name: static\n    static_layer:\n      access_log:\n        min_status: 400\n      access_log.sampled: 100\n";
    let (code, stderr) = validate(&extra, top);
    assert_eq!(code, Some(1), "{stderr}");
    let at = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.access_log[0].filter.and_filter.filters";
    assert!(
        stderr.contains(&format!("{at}[0].status_code_filter.comparison.value.runtime_key: runtime key \"access_log.min_status\" is set at layered_runtime.layers[0].static_layer")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{at}[1].runtime_filter.runtime_key: runtime key \"access_log.sampled\" is set at")),
        "{stderr}"
    );
    // Keys no layer sets are fine: the defaults are the values, as in Envoy.
    let (code, stderr) =
        validate(&extra, "layered_runtime:\n  layers:\n  - name: static\n    static_layer: { other: 1 }\n");
    assert_eq!(code, Some(0), "{stderr}");
}
