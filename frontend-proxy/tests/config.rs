//! Config fixtures: every valid file loads (with the expected warnings),
//! every invalid file fails with exactly the expected problems and YAML
//! paths, all reported at once. `--mode validate` prints the same.
//!
//! Expected output lives next to each fixture (`x.yaml` → `x.errors` or
//! `x.warnings`). After an intended change, regenerate with
//! `BLESS=1 cargo test -p frontend-proxy --test config` and review the diff.

use frontend_proxy::config;
use std::path::{Path, PathBuf};
use std::process::Command;

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
    let table = &b.listeners[0].hcm.routes;
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
    let h = &l.hcm;
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
