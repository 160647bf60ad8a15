//! Config fixtures: every valid file loads (with the expected warnings),
//! every invalid file fails with exactly the expected problems and YAML
//! paths, all reported at once. `--mode validate` prints the same.
//!
//! Expected output lives next to each fixture (`x.yaml` → `x.errors` or
//! `x.warnings`). After an intended change, regenerate with
//! `BLESS=1 cargo test -p frontend-proxy --test config` and review the diff.

use frontend_proxy::config;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

/// Compares `actual` with the file `expected_path`, or writes it under BLESS=1.
fn check(expected_path: &Path, actual: &str) -> Result<(), String> {
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(expected_path, actual).unwrap();
        return Ok(());
    }
    let expected = std::fs::read_to_string(expected_path).unwrap_or_default();
    if expected == actual {
        Ok(())
    } else {
        Err(format!("{}:\n--- expected\n{expected}--- actual\n{actual}", expected_path.display()))
    }
}

fn render(diags: &[config::Diagnostic]) -> String {
    diags.iter().map(|d| format!("{d}\n")).collect()
}

#[test]
fn valid_fixtures_load_with_expected_warnings() {
    let mut failures = Vec::new();
    for path in fixtures("valid") {
        match config::load(&path) {
            Ok(loaded) => {
                if let Err(e) = check(&path.with_extension("warnings"), &render(&loaded.warnings)) {
                    failures.push(e);
                }
            }
            Err(e) => failures.push(format!("{} should load:\n{e}", path.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn invalid_fixtures_report_every_error_with_its_path() {
    let mut failures = Vec::new();
    for path in fixtures("invalid") {
        match config::load(&path) {
            Ok(_) => failures.push(format!("{} should be rejected", path.display())),
            Err(e) => {
                if let Err(e) = check(&path.with_extension("errors"), &render(&e.diagnostics())) {
                    failures.push(e);
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_stack_configs_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for name in ["conf/frontend-proxy.yaml", "conf/local.yaml"] {
        let loaded = config::load(&root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(loaded.warnings.is_empty(), "{name}: {:?}", loaded.warnings);
        assert_eq!(loaded.bootstrap.clusters.len(), 2, "{name}");
    }
}

#[test]
fn seed_bootstrap_routes_films_and_ratings() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/seed-envoy.yaml");
    let b = config::load(&path).unwrap().bootstrap;
    let table = &b.listeners[0].hcm().unwrap().routes;
    let vh = table.find_virtual_host("localhost:8080", 8080).unwrap();
    let req = |p: &str| pingora_http::RequestHeader::build("GET", p.as_bytes(), None).unwrap();
    let films = vh.find_route(&req("/films?name=Citizen%20Kane")).unwrap();
    let ratings = vh.find_route(&req("/ratings/1")).unwrap();
    let cluster_of = |r: &frontend_proxy::routing::Route| match &r.action {
        frontend_proxy::routing::Action::Forward(f) => b.clusters[f.clusters.pick(0)].name.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(cluster_of(films), "film-service-cluster");
    assert_eq!(cluster_of(ratings), "rating-service-cluster");
    assert!(vh.find_route(&req("/other")).is_none());
    let c = &b.clusters[0];
    assert_eq!(c.connect_timeout, std::time::Duration::from_millis(250));
    assert_eq!(c.dns.refresh_rate, std::time::Duration::from_secs(5), "Envoy's default");
}

/// Every form protobuf's JSON mapping allows means what Envoy reads.
#[test]
fn protobuf_json_forms_mean_what_envoy_reads() {
    use frontend_proxy::config::model::{Codec, HeadersWithUnderscores, ServerHeader};
    use frontend_proxy::upstream::{DiscoveryType, LbPolicy};
    use std::time::Duration;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/protobuf-json-forms.yaml");
    let b = config::load(&path).unwrap().bootstrap;
    assert_eq!(b.admin.unwrap().address.port(), 9901);
    let [l] = &b.listeners[..] else { panic!("one listener: {:?}", b.listeners.len()) };
    assert_eq!((l.name.as_str(), l.address.port(), l.reuse_port), ("web", 8080, true));
    assert_eq!(l.tls.as_ref().unwrap().alpn_protocols, ["h2", "http/1.1"], "one entry, two protocols");
    let h = l.hcm().unwrap();
    assert_eq!(h.codec, Codec::Auto);
    assert!(h.use_remote_address && h.websocket);
    assert_eq!((h.xff_num_trusted_hops, h.max_request_headers_kb, h.max_headers_count), (1, 64, 50));
    assert_eq!(h.server_header, ServerHeader::PassThrough);
    assert_eq!(h.headers_with_underscores, HeadersWithUnderscores::RejectRequest);
    assert_eq!(h.stream_idle_timeout, Some(Duration::from_secs(300)));
    assert_eq!(h.request_timeout, Some(Duration::from_micros(1)));
    assert_eq!(h.idle_timeout, Some(Duration::from_millis(60_500)));
    let [c] = &b.clusters[..] else { panic!("one cluster") };
    assert_eq!(c.discovery, DiscoveryType::StrictDns);
    assert!(matches!(c.lb_policy, LbPolicy::LeastRequest { choice_count: 3 }));
    assert_eq!(c.connect_timeout, Duration::new(1, 5));
    assert_eq!((c.circuit_breakers.max_connections, c.circuit_breakers.max_requests), (1000, 2000));
    assert_eq!(c.healthy_panic_threshold, 25.5);
    let hc = c.health_check.as_ref().unwrap();
    assert_eq!((hc.unhealthy_threshold, hc.healthy_threshold, hc.interval), (2, 1, Duration::from_secs(5)));
    assert_eq!((c.endpoints.len(), c.endpoints[0].weight), (1, 2));
}

/// Unnamed listeners get distinct names (Envoy gives each a UUID).
#[test]
fn unnamed_listeners_are_named_by_address() {
    let listener = |name: &str, port: u16| {
        format!(
            r#"
  - {name}address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: s
          http_filters: [{{ name: envoy.filters.http.router }}]
          route_config: {{ virtual_hosts: [{{ name: v, domains: ["*"], routes: [] }}] }}"#
        )
    };
    let yaml = format!(
        "static_resources:\n  listeners:{}{}{}{}",
        listener("", 0),
        listener("", 0),
        listener("name: \"127.0.0.1:8082\"\n    ", 8081),
        listener("name: \"\"\n    ", 8082),
    );
    let b = config::parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")).bootstrap;
    let names: Vec<&str> = b.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["127.0.0.1:0", "127.0.0.1:0#2", "127.0.0.1:8082", "127.0.0.1:8082#2"]);
}

#[test]
fn validate_mode_prints_ok_or_every_error() {
    let bin = env!("CARGO_BIN_EXE_frontend-proxy");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let ok =
        Command::new(bin).args(["--mode", "validate", "-c"]).arg(dir.join("valid/seed-envoy.yaml")).output().unwrap();
    assert!(ok.status.success());
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(stdout.contains("configuration '") && stdout.trim_end().ends_with("seed-envoy.yaml' OK"), "{stdout}");

    let bad = dir.join("invalid/many-mistakes.yaml");
    let out = Command::new(bin).args(["--mode", "validate", "-c"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = std::fs::read_to_string(bad.with_extension("errors")).unwrap();
    for line in expected.lines() {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }

    let usage = Command::new(bin).args(["-c", "x.yaml", "--no-such-flag"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2), "unknown flags are a usage error");
    let missing = Command::new(bin).args(["--mode", "validate", "-c", "/nonexistent/envoy.yaml"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/envoy.yaml"));
}

#[test]
fn validate_mode_loads_tls_material() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        r#"
static_resources:
  listeners:
  - name: tls
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 8443 }} }}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{ filename: {dir}/missing.pem }}
              private_key: {{ filename: {dir}/missing-key.pem }}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: tls
          route_config: {{ virtual_hosts: [{{ name: a, domains: ["*"], routes: [{{ match: {{ prefix: "/" }}, direct_response: {{ status: 200 }} }}] }}] }}
          http_filters: [{{ name: envoy.filters.http.router }}]
"#,
        dir = dir.path().display()
    );
    let path = dir.path().join("tls.yaml");
    std::fs::write(&path, cfg).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_frontend-proxy"))
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("listener \"tls\": cannot read") && stderr.contains("missing.pem"), "{stderr}");
}

/// Fields that change what traffic may do or how much of it: a file that
/// loads with one of them "ignored" runs weaker than it says.
const SECURITY_OR_LIMIT: &[&str] = &[
    "http2_protocol_options",
    "max_concurrent_streams",
    "initial_stream_window_size",
    "initial_connection_window_size",
    "tls_params",
    "cipher_suites",
    "ecdh_curves",
    "require_client_certificate",
    "validation_context",
    "headers_with_underscores_action",
    "internal_only_headers",
    "merge_slashes",
    "normalize_path",
    "path_with_escaped_slashes_action",
    "max_request_headers_kb",
    "max_headers_count",
    "max_connections",
    "max_requests",
    "max_pending_requests",
    "max_requests_per_connection",
    "connection_limit",
    "global_downstream_max_connections",
    "use_remote_address",
    "xff_num_trusted_hops",
    "http_filters",
    "rbac",
];

/// A corpus file's header: `# expect: loads` or `# expect: refused: <text>`,
/// and `# feature: <name>` for the summary table.
struct Expectation {
    feature: String,
    refused: Option<String>,
}

fn expectation(path: &Path) -> Result<Expectation, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let (mut feature, mut expect) = (None, None);
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        if let Some(f) = line.strip_prefix("# feature:") {
            feature = Some(f.trim().to_string());
        } else if let Some(e) = line.strip_prefix("# expect:") {
            expect = Some(e.trim().to_string());
        }
    }
    let feature = feature.ok_or("no `# feature:` line in the header")?;
    let refused = match expect.as_deref() {
        Some("loads") => None,
        Some(e) => match e.strip_prefix("refused:") {
            Some(what) if !what.trim().is_empty() => Some(what.trim().to_string()),
            _ => return Err(format!("bad `# expect:` line {e:?}")),
        },
        None => return Err("no `# expect:` line in the header".into()),
    };
    Ok(Expectation { feature, refused })
}

/// Runs `--mode validate` on `path` (from the corpus directory, where its
/// relative certificate paths point) and returns (exit code, stdout,
/// stderr); a run past `limit` is killed and is an error.
fn validate(path: &Path, limit: Duration) -> Result<(Option<i32>, String, String), String> {
    let dir = path.parent().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_frontend-proxy"))
        .args(["--mode", "validate", "--log-level", "warning", "-c"])
        .arg(path)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("hung: no answer within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    Ok((out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into()))
}

/// The corpus: bootstraps shaped like the ones Envoy's examples and
/// configs use, each saying in its header whether it loads or which
/// feature refuses it. `--mode validate` must agree, never crash or hang,
/// and never load a file while ignoring one of its security or limit
/// fields. The feature table in docs/envoy-compatibility.md is generated
/// from the headers (`BLESS=1` rewrites it).
#[test]
fn corpus_loads_or_refuses_as_each_file_says() {
    let mut failures = Vec::new();
    // Feature (sorted without case) → its name, files that load, and the
    // reasons the others are refused.
    let mut table: BTreeMap<String, (String, usize, Vec<String>)> = BTreeMap::new();
    let files = fixtures("corpus");
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let expect = match expectation(path) {
            Ok(e) => e,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let row = table.entry(expect.feature.to_lowercase()).or_insert_with(|| (expect.feature.clone(), 0, Vec::new()));
        match &expect.refused {
            None => row.1 += 1,
            Some(why) => row.2.push(why.clone()),
        }
        let (code, stdout, stderr) = match validate(path, Duration::from_secs(10)) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        if code.is_none() || stderr.contains("panicked") {
            failures.push(format!("{name}: crashed (exit {code:?}):\n{stderr}"));
            continue;
        }
        match (&expect.refused, code) {
            (None, Some(0)) if stdout.contains("' OK") => {}
            (None, _) => failures.push(format!("{name}: should load, got exit {code:?}:\n{stderr}")),
            (Some(what), Some(1)) if stderr.contains(what.as_str()) => {}
            (Some(what), _) => {
                failures.push(format!("{name}: should be refused for {what:?}, got exit {code:?}:\n{stdout}{stderr}"))
            }
        }
        if code == Some(0) {
            for line in stderr.lines().filter(|l| l.contains("WARN")) {
                let path = line.split("path=").nth(1).and_then(|p| p.split_whitespace().next()).unwrap_or("");
                let keys = path.split(['.', '[']).collect::<Vec<_>>();
                if SECURITY_OR_LIMIT.iter().any(|k| keys.contains(k)) {
                    failures.push(format!("{name}: loads while ignoring a security or limit field: {line}"));
                }
            }
        }
    }
    let mut rows = String::from("| feature | files | load | refused, by |\n|---|---|---|---|\n");
    for (feature, loads, refused) in table.values() {
        let mut why = refused.clone();
        why.sort();
        why.dedup();
        let why: Vec<String> = why.iter().map(|w| format!("`{w}`")).collect();
        let by = if refused.is_empty() { "0".to_string() } else { format!("{}: {}", refused.len(), why.join(", ")) };
        rows.push_str(&format!("| {feature} | {} | {loads} | {by} |\n", loads + refused.len()));
    }
    let loads: usize = table.values().map(|(_, n, _)| n).sum();
    rows.push_str(&format!("\n{loads} of {} files load.\n", files.len()));
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/envoy-compatibility.md");
    let text = std::fs::read_to_string(&doc).unwrap();
    let (begin, end) = ("<!-- corpus-table:begin -->\n", "<!-- corpus-table:end -->");
    match (text.find(begin), text.find(end)) {
        (Some(b), Some(e)) if b < e => {
            let current = &text[b + begin.len()..e];
            if current != rows {
                if std::env::var_os("BLESS").is_some() {
                    let updated = format!("{}{rows}{}", &text[..b + begin.len()], &text[e..]);
                    std::fs::write(&doc, updated).unwrap();
                } else {
                    failures.push(format!(
                        "docs/envoy-compatibility.md's corpus table is stale (BLESS=1 rewrites it):\n--- expected\n{rows}--- in the file\n{current}"
                    ));
                }
            }
        }
        _ => failures.push(format!("docs/envoy-compatibility.md has no `{}` ... `{end}` markers", begin.trim_end())),
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A tcp_proxy's model: Envoy's defaults (idle_timeout 1 h,
/// max_connect_attempts 1), `0s` turning the idle timeout off, and
/// weighted clusters with their weights.
#[test]
fn tcp_proxy_fields_and_envoy_defaults() {
    use frontend_proxy::config::model::Serves;
    use frontend_proxy::routing::ClusterChoice;
    let listener = |port: u16, fields: &str| {
        format!(
            r#"
  - address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: p{port}
{fields}"#
        )
    };
    let cluster = |name: &str| {
        format!(
            "\n  - name: {name}\n    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 5000 }} }} }}"
        )
    };
    let yaml = format!(
        "static_resources:\n  listeners:{}{}{}\n  clusters:{}{}\n",
        listener(9000, "          cluster: a"),
        listener(
            9001,
            "          cluster: a\n          idle_timeout: 0s\n          max_connect_attempts: 3\n          max_downstream_connection_duration: 90s"
        ),
        listener(
            9002,
            "          idle_timeout: 2.5s\n          weighted_clusters:\n            clusters: [{ name: a, weight: 3 }, { name: b, weight: 1 }]"
        ),
        cluster("a"),
        cluster("b"),
    );
    let b = config::parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")).bootstrap;
    let tcp = |i: usize| match &b.listeners[i].serves {
        Serves::Tcp(t) => t.clone(),
        Serves::Http(_) => panic!("listener {i} is not a TCP proxy"),
    };
    let (first, second, third) = (tcp(0), tcp(1), tcp(2));
    assert_eq!(first.stat_prefix, "p9000");
    assert_eq!((first.idle_timeout, first.max_connect_attempts), (Some(Duration::from_secs(3600)), 1));
    assert!(matches!(first.cluster, ClusterChoice::Single(0)));
    assert_eq!((second.idle_timeout, second.max_connect_attempts), (None, 3));
    assert_eq!((first.max_duration, second.max_duration), (None, Some(Duration::from_secs(90))));
    assert_eq!(third.idle_timeout, Some(Duration::from_millis(2500)));
    assert!(matches!(&third.cluster, ClusterChoice::Weighted(w, 4) if w == &[(0, 3), (1, 1)]), "{:?}", third.cluster);
    assert!(b.listeners.iter().all(|l| l.hcm().is_none()));
}
