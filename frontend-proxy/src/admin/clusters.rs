//! `/clusters`: every cluster's settings and, per host, its counters and
//! health, in Envoy's `name::address::stat::value` lines or its JSON
//! (`envoy.admin.v3.Clusters`).

use crate::address::Address;
use crate::upstream::{Cluster, Host};
use serde_json::{json, Map, Value as Json};
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// A host's counters and gauges, in Envoy's order.
fn host_stats(h: &Host) -> [(&'static str, i64, bool); 8] {
    let s = &h.stats;
    let n = |v: u64| v as i64;
    [
        ("cx_active", s.cx_active.load(Relaxed), true),
        ("cx_connect_fail", n(s.cx_connect_fail.load(Relaxed)), false),
        ("cx_total", n(s.cx_total.load(Relaxed)), false),
        ("rq_active", s.rq_active.load(Relaxed), true),
        ("rq_error", n(s.rq_error.load(Relaxed)), false),
        ("rq_success", n(s.rq_success.load(Relaxed)), false),
        ("rq_timeout", n(s.rq_timeout.load(Relaxed)), false),
        ("rq_total", n(s.rq_total.load(Relaxed)), false),
    ]
}

/// A host's address as Envoy's `/clusters?format=json` shows it.
fn address_json(addr: &Address) -> Json {
    match addr {
        Address::Ip(a) => json!({ "socket_address": { "address": a.ip().to_string(), "port_value": a.port() } }),
        Address::Pipe(p) => json!({ "pipe": { "path": p.path } }),
    }
}

fn sorted_hosts(c: &Cluster) -> Vec<Arc<Host>> {
    let mut hosts = c.hosts();
    hosts.sort_by(|a, b| a.addr.cmp(&b.addr));
    hosts
}

/// Envoy's text form.
pub fn render_text<'a>(clusters: impl Iterator<Item = &'a Arc<Cluster>>) -> String {
    let mut out = String::new();
    for c in clusters {
        let name = c.name();
        let cb = &c.spec.circuit_breakers;
        let _ = writeln!(out, "{name}::observability_name::{name}");
        for (k, v) in [
            ("max_connections", cb.max_connections),
            ("max_pending_requests", cb.max_pending_requests),
            ("max_requests", cb.max_requests),
            ("max_retries", cb.max_retries),
        ] {
            let _ = writeln!(out, "{name}::default_priority::{k}::{v}");
        }
        let _ = writeln!(out, "{name}::added_via_api::false");
        for h in sorted_hosts(c) {
            let addr = &h.addr;
            for (stat, value, _) in host_stats(&h) {
                let _ = writeln!(out, "{name}::{addr}::{stat}::{value}");
            }
            let _ = writeln!(out, "{name}::{addr}::hostname::{}", h.hostname.as_deref().unwrap_or(""));
            let _ = writeln!(out, "{name}::{addr}::health_flags::{}", h.health_flags());
            let _ = writeln!(out, "{name}::{addr}::weight::{}", h.weight);
            for (k, v) in [("region", ""), ("zone", ""), ("sub_zone", ""), ("canary", "false"), ("priority", "0")] {
                let _ = writeln!(out, "{name}::{addr}::{k}::{v}");
            }
            let _ = writeln!(out, "{name}::{addr}::success_rate::-1");
            let _ = writeln!(out, "{name}::{addr}::local_origin_success_rate::-1");
        }
    }
    out
}

fn health_status(h: &Host) -> Json {
    let mut status = Map::new();
    let health = &h.health;
    for (set, key) in [
        (health.failed_active_hc.load(Relaxed), "failed_active_health_check"),
        (health.ejected.load(Relaxed), "failed_outlier_check"),
        (health.pending_active_hc.load(Relaxed), "pending_active_hc"),
        (health.pending_removal.load(Relaxed), "pending_dynamic_removal"),
    ] {
        if set {
            status.insert(key.into(), Json::Bool(true));
        }
    }
    status.insert("eds_health_status".into(), Json::String("HEALTHY".into()));
    Json::Object(status)
}

/// Envoy's JSON form. As in proto JSON, zero values are omitted and 64-bit
/// values are strings.
pub fn render_json<'a>(clusters: impl Iterator<Item = &'a Arc<Cluster>>) -> Json {
    let statuses: Vec<Json> = clusters
        .map(|c| {
            let cb = &c.spec.circuit_breakers;
            let hosts: Vec<Json> = sorted_hosts(c)
                .iter()
                .map(|h| {
                    let stats: Vec<Json> = host_stats(h)
                        .into_iter()
                        .map(|(name, value, gauge)| {
                            let mut s = Map::new();
                            s.insert("name".into(), name.into());
                            if value != 0 {
                                s.insert("value".into(), value.to_string().into());
                            }
                            if gauge {
                                s.insert("type".into(), "GAUGE".into());
                            }
                            Json::Object(s)
                        })
                        .collect();
                    let mut host = json!({
                        "address": address_json(&h.addr),
                        "stats": stats,
                        "health_status": health_status(h),
                        "weight": h.weight,
                        "locality": {},
                    });
                    if let (Some(name), Some(obj)) = (&h.hostname, host.as_object_mut()) {
                        obj.insert("hostname".into(), name.clone().into());
                    }
                    host
                })
                .collect();
            json!({
                "name": c.name(),
                "observability_name": c.name(),
                "circuit_breakers": { "thresholds": [{
                    "max_connections": cb.max_connections,
                    "max_pending_requests": cb.max_pending_requests,
                    "max_requests": cb.max_requests,
                    "max_retries": cb.max_retries,
                }]},
                "host_statuses": hosts,
            })
        })
        .collect();
    json!({ "cluster_statuses": statuses })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOTSTRAP: &str = r#"
static_resources:
  listeners: []
  clusters:
  - name: films
    connect_timeout: 1s
    type: STATIC
    circuit_breakers: { thresholds: [{ max_connections: 7 }] }
    load_assignment:
      cluster_name: films
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.2, port_value: 5000 } } }
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 5000 } } }
"#;

    async fn cluster() -> Arc<Cluster> {
        let loaded = crate::config::parse(BOOTSTRAP).expect("valid bootstrap");
        let spec = loaded.bootstrap.clusters.into_iter().next().expect("one cluster");
        let cluster = Arc::new(Cluster::new(spec, None).expect("cluster"));
        cluster.refresh().await;
        cluster
    }

    #[tokio::test]
    async fn text_lines_per_cluster_and_host() {
        let c = cluster().await;
        let hosts = sorted_hosts(&c);
        drop(hosts[0].start_request());
        hosts[0].stats.rq_success.fetch_add(1, Relaxed);
        hosts[1].health.failed_active_hc.store(true, Relaxed);
        let text = render_text([c].iter());
        for line in [
            "films::observability_name::films",
            "films::default_priority::max_connections::7",
            "films::default_priority::max_retries::3",
            "films::127.0.0.1:5000::rq_total::1",
            "films::127.0.0.1:5000::rq_success::1",
            "films::127.0.0.1:5000::rq_active::0",
            "films::127.0.0.1:5000::health_flags::healthy",
            "films::127.0.0.1:5000::weight::1",
            "films::127.0.0.2:5000::health_flags::/failed_active_hc",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // Hosts in address order.
        assert!(text.find("127.0.0.1:5000").unwrap() < text.find("127.0.0.2:5000").unwrap());
    }

    #[tokio::test]
    async fn json_omits_zeros_and_flags_unhealthy_hosts() {
        let c = cluster().await;
        let hosts = sorted_hosts(&c);
        drop(hosts[0].start_request());
        hosts[1].health.ejected.store(true, Relaxed);
        let json = render_json([c].iter());
        let cluster = &json["cluster_statuses"][0];
        assert_eq!(cluster["name"], "films");
        assert_eq!(cluster["circuit_breakers"]["thresholds"][0]["max_connections"], 7);
        let first = &cluster["host_statuses"][0];
        assert_eq!(first["address"]["socket_address"]["address"], "127.0.0.1");
        let stat = |name: &str| first["stats"].as_array().unwrap().iter().find(|s| s["name"] == name).cloned().unwrap();
        assert_eq!(stat("rq_total")["value"], "1");
        assert!(stat("rq_error").get("value").is_none(), "zero values are omitted");
        assert_eq!(stat("cx_active")["type"], "GAUGE");
        assert_eq!(cluster["host_statuses"][1]["health_status"]["failed_outlier_check"], true);
    }
}
