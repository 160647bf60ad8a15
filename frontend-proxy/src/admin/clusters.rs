//! `/clusters`: every cluster's settings and, per host, its counters and
//! health, in Envoy's `name::address::stat::value` lines or its JSON
//! (`envoy.admin.v3.Clusters`).

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

fn sorted_hosts(c: &Cluster) -> Vec<Arc<Host>> {
    let mut hosts = c.hosts();
    hosts.sort_by_key(|h| h.addr);
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
            let addr = h.addr;
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
                        "address": { "socket_address": { "address": h.addr.ip().to_string(), "port_value": h.addr.port() } },
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
