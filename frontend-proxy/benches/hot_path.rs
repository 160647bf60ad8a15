//! Micro-benchmarks of the per-request work frontend-proxy does itself:
//! virtual host + route matching, endpoint selection, stats recording.
//! Everything is built from Envoy YAML through `config::parse`, so these
//! measure the real runtime structures. `cargo bench -p frontend-proxy`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use frontend_proxy::config;
use frontend_proxy::metrics::{Histogram, StatusCounters};
use frontend_proxy::upstream::Cluster;
use pingora_http::RequestHeader;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

const HCM_HEAD: &str = r#"
static_resources:
  listeners:
  - name: bench
    address: { socket_address: { address: 127.0.0.1, port_value: 10000 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
          route_config:
            name: bench
            virtual_hosts:
            - name: other
              domains: ["other.example.com", "*.other.example.com"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: backend }
            - name: api
              domains: ["api.example.com", "api.example.com:10000"]
              routes:
"#;

/// `n` routes: prefixes and exact paths alternating (the kinds most
/// configurations use), then a catch-all.
fn route_yaml(n: usize) -> String {
    let mut y = String::from(HCM_HEAD);
    for i in 0..n - 1 {
        if i % 2 == 0 {
            y.push_str(&format!("              - match: {{ prefix: \"/svc{i}/\" }}\n"));
        } else {
            y.push_str(&format!("              - match: {{ path: \"/exact/{i}\" }}\n"));
        }
        y.push_str("                route: { cluster: backend }\n");
    }
    y.push_str("              - match: { prefix: \"/\" }\n                route: { cluster: backend }\n");
    y.push_str(&clusters_yaml(&[("backend", "ROUND_ROBIN", 1)]));
    y
}

fn clusters_yaml(clusters: &[(&str, &str, usize)]) -> String {
    let mut y = String::from("  clusters:\n");
    for (name, policy, hosts) in clusters {
        y.push_str(&format!(
            "  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n    lb_policy: {policy}\n    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n"
        ));
        for h in 0..*hosts {
            y.push_str(&format!(
                "        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.1.{}, port_value: {} }} }} }}\n",
                h % 250 + 1,
                8000 + h
            ));
        }
    }
    y
}

fn request(path: &str) -> RequestHeader {
    let mut r = RequestHeader::build("GET", path.as_bytes(), None).expect("request");
    r.insert_header("host", "api.example.com").expect("host");
    r.insert_header("user-agent", "bench").expect("ua");
    r
}

fn route_matching(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_match");
    g.throughput(Throughput::Elements(1));
    for n in [10usize, 100, 1000] {
        let loaded = config::parse(&route_yaml(n)).expect("valid config");
        let table = loaded.bootstrap.listeners[0].hcm().unwrap().routes.clone();
        // The first route, the last specific route (a full scan, as Envoy
        // matches routes in order), and a path only the catch-all takes.
        let cases = [
            ("first", "/svc0/items/42".to_string()),
            ("last", format!("/exact/{}", if (n - 2) % 2 == 1 { n - 2 } else { n - 3 })),
            ("fallthrough", "/nothing/here?q=1".to_string()),
        ];
        for (case, path) in cases {
            let req = request(&path);
            let find = || {
                let host = req.headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("");
                let v = table.find_virtual_host_index(host, 10000)?;
                table.virtual_hosts[v].find_route_index(&req)
            };
            assert!(find().is_some(), "{case} with {n} routes must match");
            g.bench_with_input(BenchmarkId::new(case, n), &n, |b, _| b.iter(|| black_box(find())));
        }
    }
    g.finish();
}

fn endpoint_selection(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut g = c.benchmark_group("select");
    g.throughput(Throughput::Elements(1));
    for hosts in [3usize, 100] {
        let specs = [
            ("round_robin", "ROUND_ROBIN"),
            ("random", "RANDOM"),
            ("least_request", "LEAST_REQUEST"),
            ("ring_hash", "RING_HASH"),
            ("maglev", "MAGLEV"),
        ];
        let yaml: Vec<(&str, &str, usize)> = specs.iter().map(|(n, p)| (*n, *p, hosts)).collect();
        let text = format!("static_resources:\n  listeners: []\n{}", clusters_yaml(&yaml));
        let loaded = config::parse(&text).expect("valid clusters");
        for spec in loaded.bootstrap.clusters {
            let name = spec.name.clone();
            let cluster = Arc::new(Cluster::new(spec, None).expect("cluster"));
            runtime.block_on(cluster.refresh());
            assert_eq!(cluster.membership().0, hosts);
            let key = b"user-1234";
            assert!(cluster.select(key, &[]).is_some());
            g.bench_with_input(BenchmarkId::new(name.as_str(), hosts), &hosts, |b, _| {
                b.iter(|| black_box(cluster.select(black_box(key), &[])))
            });
        }
    }
    g.finish();
}

fn metric_recording(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics");
    g.throughput(Throughput::Elements(1));
    let h = Histogram::default();
    let mut i = 0u64;
    g.bench_function("histogram_record", |b| {
        b.iter(|| {
            // Spread over the buckets a fast proxy actually hits (0.1–30 ms).
            i = i.wrapping_add(7919);
            h.record(black_box(Duration::from_micros(100 + i % 30_000)))
        })
    });
    let s = StatusCounters::default();
    g.bench_function("status_record", |b| b.iter(|| s.record(black_box(200))));
    g.finish();
}

criterion_group!(benches, route_matching, endpoint_selection, metric_recording);
criterion_main!(benches);
