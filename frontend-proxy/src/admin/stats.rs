//! The statistics snapshot behind `/stats` and `/stats/prometheus`: every
//! counter, gauge and histogram read once from the atomics and named as
//! Envoy names it (`cluster.<name>.upstream_rq_200`), selected by the
//! `/stats` query options. [`render`] writes Envoy's text and JSON forms.
//!
//! Per-code and per-class cluster series exist only once a code was seen,
//! as in Envoy (which creates them lazily); the connection manager's
//! `downstream_rq_<n>xx` always exist, as in Envoy.

mod render;

pub use render::{render_json, render_text};

use crate::metrics::{ClusterStats, ConnManagerStats, HistogramSnapshot, SecretStats};
use crate::runtime::ListenerRuntime;
use crate::upstream::Cluster;
use regex::Regex;
use std::borrow::Cow;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Where a statistic lives: the first part of its Envoy name and, in
/// Prometheus, the label that carries the instance.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Server,
    ClusterManager,
    /// `cluster.<name>.`, label `envoy_cluster_name`.
    Cluster(String),
    /// `http.<stat_prefix>.`, label `envoy_http_conn_manager_prefix`.
    Http(String),
    /// `tcp.<stat_prefix>.`, label `envoy_tcp_prefix`.
    Tcp(String),
    /// `listener.<ip>_<port>.`, label `envoy_listener_address`.
    Listener(String),
    /// Process-wide codec statistics: `http1.` or `http2.` (every
    /// listener's, summed).
    Codec(&'static str),
    /// `sds.<secret name>.`: no label (Envoy extracts none), the name is
    /// part of the Prometheus metric's name.
    Sds(String),
}

impl Scope {
    /// The Envoy name prefix, without the trailing dot.
    pub fn prefix(&self) -> Cow<'_, str> {
        match self {
            Scope::Server => "server".into(),
            Scope::ClusterManager => "cluster_manager".into(),
            Scope::Cluster(n) => format!("cluster.{n}").into(),
            Scope::Http(p) => format!("http.{p}").into(),
            Scope::Tcp(p) => format!("tcp.{p}").into(),
            Scope::Listener(a) => format!("listener.{a}").into(),
            Scope::Codec(c) => (*c).into(),
            Scope::Sds(n) => format!("sds.{n}").into(),
        }
    }

    /// The prefix once the instance is extracted as a tag.
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Server => "server",
            Scope::ClusterManager => "cluster_manager",
            Scope::Cluster(_) => "cluster",
            Scope::Http(_) => "http",
            Scope::Tcp(_) => "tcp",
            Scope::Listener(_) => "listener",
            Scope::Codec(c) => c,
            Scope::Sds(_) => "sds",
        }
    }

    /// The Prometheus label naming the instance, if the scope has instances.
    pub fn tag(&self) -> Option<(&'static str, &str)> {
        match self {
            Scope::Server | Scope::ClusterManager | Scope::Codec(_) | Scope::Sds(_) => None,
            Scope::Cluster(n) => Some(("envoy_cluster_name", n)),
            Scope::Http(p) => Some(("envoy_http_conn_manager_prefix", p)),
            Scope::Tcp(p) => Some(("envoy_tcp_prefix", p)),
            Scope::Listener(a) => Some(("envoy_listener_address", a)),
        }
    }

    /// Envoy's spelling of a listener address in stat names: `0.0.0.0_8080`.
    /// A pipe's is its path, as Envoy's `asString()`.
    pub fn listener(address: &crate::config::model::Address) -> Self {
        Scope::Listener(address.to_string().replace(':', "_"))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Counter(u64),
    Gauge(i64),
    Histogram(HistogramSnapshot),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stat {
    pub scope: Scope,
    /// The name below the scope, e.g. `upstream_rq_200`.
    pub name: Cow<'static, str>,
    pub value: Value,
}

impl Stat {
    pub fn envoy_name(&self) -> String {
        format!("{}.{}", self.scope.prefix(), self.name)
    }

    /// Envoy's "used" flag, approximated: the value moved off zero.
    pub fn is_used(&self) -> bool {
        match &self.value {
            Value::Counter(n) => *n > 0,
            Value::Gauge(n) => *n != 0,
            Value::Histogram(h) => h.count > 0,
        }
    }
}

/// Appends statistics of one scope.
struct Builder<'a> {
    scope: Scope,
    out: &'a mut Vec<Stat>,
}

impl Builder<'_> {
    fn push(&mut self, name: impl Into<Cow<'static, str>>, value: Value) {
        self.out.push(Stat { scope: self.scope.clone(), name: name.into(), value });
    }
    fn counter(&mut self, name: &'static str, c: &AtomicU64) {
        self.push(name, Value::Counter(c.load(Relaxed)));
    }
    fn gauge(&mut self, name: &'static str, g: &AtomicI64) {
        self.push(name, Value::Gauge(g.load(Relaxed)));
    }
}

/// `cluster.<name>.*`.
pub fn cluster(cluster: &Cluster, out: &mut Vec<Stat>) {
    let s: &ClusterStats = &cluster.stats;
    let mut b = Builder { scope: Scope::Cluster(cluster.name().to_string()), out };
    b.counter("upstream_rq_total", &s.upstream_rq_total);
    for (code, n) in s.upstream_rq.nonzero() {
        b.push(format!("upstream_rq_{code}"), Value::Counter(n));
    }
    for (i, n) in s.upstream_rq.classes().into_iter().enumerate() {
        if n > 0 {
            b.push(format!("upstream_rq_{}xx", i + 1), Value::Counter(n));
        }
    }
    b.push("upstream_rq_active", Value::Gauge(i64::from(cluster.breaker.requests())));
    b.counter("upstream_rq_timeout", &s.upstream_rq_timeout);
    b.counter("upstream_rq_retry", &s.upstream_rq_retry);
    b.counter("upstream_rq_retry_overflow", &s.upstream_rq_retry_overflow);
    b.counter("upstream_rq_retry_success", &s.upstream_rq_retry_success);
    b.counter("upstream_rq_pending_overflow", &s.upstream_rq_pending_overflow);
    b.counter("upstream_cx_total", &s.upstream_cx_total);
    b.counter("upstream_cx_http1_total", &s.upstream_cx_http1_total);
    b.counter("upstream_cx_http2_total", &s.upstream_cx_http2_total);
    b.gauge("upstream_cx_active", &s.upstream_cx_active);
    b.counter("upstream_cx_connect_fail", &s.upstream_cx_connect_fail);
    b.counter("upstream_cx_connect_timeout", &s.upstream_cx_connect_timeout);
    b.counter("upstream_cx_destroy", &s.upstream_cx_destroy);
    b.counter("upstream_cx_overflow", &s.upstream_cx_overflow);
    b.counter("upstream_cx_none_healthy", &s.upstream_cx_none_healthy);
    b.counter("upstream_cx_rx_bytes_total", &s.upstream_cx_rx_bytes_total);
    b.counter("upstream_cx_tx_bytes_total", &s.upstream_cx_tx_bytes_total);
    b.counter("update_attempt", &s.update_attempt);
    b.counter("update_success", &s.update_success);
    b.counter("update_failure", &s.update_failure);
    b.counter("update_empty", &s.update_empty);
    if cluster.spec.tls.is_some() {
        b.counter("ssl.fail_verify_error", &s.ssl_fail_verify_error);
        b.counter("ssl.fail_verify_san", &s.ssl_fail_verify_san);
        b.counter("ssl.fail_verify_cert_hash", &s.ssl_fail_verify_cert_hash);
    }
    let (total, healthy) = cluster.membership();
    b.push("membership_total", Value::Gauge(total as i64));
    b.push("membership_healthy", Value::Gauge(healthy as i64));
    b.push("membership_degraded", Value::Gauge(0));
    if let Some(o) = &cluster.outlier {
        b.push("outlier_detection.ejections_active", Value::Gauge(o.ejected_count() as i64));
        b.push("outlier_detection.ejections_enforced_total", Value::Counter(o.ejections_total.load(Relaxed) as u64));
    }
    b.push("upstream_rq_time", Value::Histogram(s.upstream_rq_time.snapshot()));
}

/// `http.<stat_prefix>.*` (or `tcp.<stat_prefix>.*`) and
/// `listener.<address>.*` of one listener's filter chain.
pub fn listener(listener: &ListenerRuntime, out: &mut Vec<Stat>) {
    let s: &ConnManagerStats = &listener.stats;
    if let Some(tcp) = &listener.tcp_proxy {
        let t = &tcp.stats;
        let mut b = Builder { scope: Scope::Tcp(tcp.config.stat_prefix.clone()), out };
        b.counter("downstream_cx_total", &t.downstream_cx_total);
        b.counter("downstream_cx_no_route", &t.downstream_cx_no_route);
        b.counter("downstream_cx_rx_bytes_total", &t.downstream_cx_rx_bytes_total);
        b.counter("downstream_cx_tx_bytes_total", &t.downstream_cx_tx_bytes_total);
        b.counter("idle_timeout", &t.idle_timeout);
        b.counter("max_downstream_connection_duration", &t.max_downstream_connection_duration);
        listener_scope(listener, s, out);
        return;
    }
    let mut b = Builder { scope: Scope::Http(listener.hcm.stat_prefix.clone()), out };
    b.counter("downstream_rq_total", &s.downstream_rq_total);
    b.gauge("downstream_rq_active", &s.downstream_rq_active);
    for (i, n) in s.downstream_rq.classes().into_iter().enumerate() {
        b.push(format!("downstream_rq_{}xx", i + 1), Value::Counter(n));
    }
    b.counter("downstream_rq_http1_total", &s.downstream_rq_http1_total);
    b.counter("downstream_rq_http2_total", &s.downstream_rq_http2_total);
    b.counter("downstream_cx_total", &s.downstream_cx_total);
    b.gauge("downstream_cx_active", &s.downstream_cx_active);
    b.counter("no_route", &s.no_route);
    b.counter("no_cluster", &s.no_cluster);
    b.counter("rq_direct_response", &s.rq_direct_response);
    b.counter("rq_redirect", &s.rq_redirect);
    b.counter("downstream_rq_failed_path_normalization", &s.downstream_rq_failed_path_normalization);
    b.counter("downstream_rq_redirected_with_normalized_path", &s.downstream_rq_redirected_with_normalized_path);
    b.counter("downstream_rq_idle_timeout", &s.downstream_rq_idle_timeout);
    b.counter("downstream_rq_timeout", &s.downstream_rq_timeout);
    b.counter("downstream_rq_header_timeout", &s.downstream_rq_header_timeout);
    b.counter("downstream_rq_max_duration_reached", &s.downstream_rq_max_duration_reached);
    b.counter("downstream_cx_idle_timeout", &s.downstream_cx_idle_timeout);
    b.counter("downstream_cx_protocol_error", &s.downstream_cx_protocol_error);
    b.push("downstream_rq_time", Value::Histogram(s.downstream_rq_time.snapshot()));

    // `headers_with_underscores_action`, as Envoy's codecs count it.
    for (codec, u) in [("http1", &s.http1_underscores), ("http2", &s.http2_underscores)] {
        let mut b = Builder { scope: Scope::Codec(codec), out: &mut *b.out };
        b.counter("dropped_headers_with_underscores", &u.dropped);
        b.counter("requests_rejected_with_underscores_in_headers", &u.rejected);
        if codec == "http2" {
            b.counter("keepalive_timeout", &s.http2_keepalive_timeout);
        }
    }

    listener_scope(listener, s, b.out);
}

/// `listener.<address>.*`.
fn listener_scope(listener: &ListenerRuntime, s: &ConnManagerStats, out: &mut Vec<Stat>) {
    let mut b = Builder { scope: Scope::listener(&listener.address), out };
    b.counter("downstream_cx_total", &s.downstream_cx_total);
    b.gauge("downstream_cx_active", &s.downstream_cx_active);
    b.counter("downstream_cx_overflow", &s.downstream_cx_overflow);
    if listener.selection.is_some() {
        b.counter("downstream_pre_cx_timeout", &s.downstream_pre_cx_timeout);
    }
    if listener.selection.is_some() || listener.reports_tls {
        b.counter("no_filter_chain_match", &s.no_filter_chain_match);
    }
    if listener.reports_tls {
        b.counter("ssl.handshake", &s.ssl_handshake);
        b.counter("ssl.connection_error", &s.ssl_connection_error);
        b.counter("ssl.fail_verify_no_cert", &s.ssl_fail_verify_no_cert);
        b.counter("ssl.fail_verify_error", &s.ssl_fail_verify_error);
        b.counter("ssl.fail_verify_san", &s.ssl_fail_verify_san);
    }
}

/// `sds.<name>.*` of one secret from an SDS file.
pub fn secret(name: &str, s: &SecretStats, out: &mut Vec<Stat>) {
    let mut b = Builder { scope: Scope::Sds(name.to_string()), out };
    b.counter("update_attempt", &s.update_attempt);
    b.counter("update_success", &s.update_success);
    b.counter("update_rejected", &s.update_rejected);
}

/// Process-wide values for `server.*` and `cluster_manager.*`.
#[derive(Debug, Clone)]
pub struct ServerValues {
    pub live: bool,
    /// Envoy's `server.state`: 0 live, 1 draining, 2 pre-initializing, 3 initializing.
    pub state: i64,
    pub uptime_s: i64,
    pub concurrency: i64,
    pub memory: super::server_info::Memory,
    pub clusters: i64,
    pub warming_clusters: i64,
}

pub fn server(v: &ServerValues, out: &mut Vec<Stat>) {
    let mut b = Builder { scope: Scope::Server, out };
    b.push("live", Value::Gauge(i64::from(v.live)));
    b.push("state", Value::Gauge(v.state));
    b.push("uptime", Value::Gauge(v.uptime_s));
    b.push("concurrency", Value::Gauge(v.concurrency));
    b.push("hot_restart_epoch", Value::Gauge(0));
    b.push("memory_allocated", Value::Gauge(v.memory.allocated as i64));
    b.push("memory_heap_size", Value::Gauge(v.memory.heap_size as i64));
    b.push("memory_physical_size", Value::Gauge(v.memory.physical_size as i64));
    let total_connections = b
        .out
        .iter()
        .filter(|s| matches!(s.scope, Scope::Listener(_)) && s.name == "downstream_cx_active")
        .map(|s| if let Value::Gauge(n) = s.value { n } else { 0 })
        .sum();
    b.push("total_connections", Value::Gauge(total_connections));
    let mut b = Builder { scope: Scope::ClusterManager, out: b.out };
    b.push("active_clusters", Value::Gauge(v.clusters - v.warming_clusters));
    b.push("warming_clusters", Value::Gauge(v.warming_clusters));
    b.push("cluster_added", Value::Counter(v.clusters as u64));
}

/// Sorts by Envoy name and merges statistics that share one (two listeners
/// with the same `stat_prefix` share their `http.*` stats, as in Envoy).
pub fn normalize(mut stats: Vec<Stat>) -> Vec<Stat> {
    stats.sort_by(|a, b| (&a.scope, &a.name).cmp(&(&b.scope, &b.name)));
    let mut out: Vec<Stat> = Vec::with_capacity(stats.len());
    for s in stats {
        match out.last_mut() {
            Some(last) if last.scope == s.scope && last.name == s.name => merge(&mut last.value, s.value),
            _ => out.push(s),
        }
    }
    out.sort_by_cached_key(Stat::envoy_name);
    out
}

fn merge(into: &mut Value, other: Value) {
    match (into, other) {
        (Value::Counter(a), Value::Counter(b)) => *a += b,
        (Value::Gauge(a), Value::Gauge(b)) => *a += b,
        (Value::Histogram(a), Value::Histogram(b)) => {
            for (x, y) in a.cumulative.iter_mut().zip(b.cumulative) {
                *x += y;
            }
            a.count += b.count;
            a.sum_ms += b.sum_ms;
        }
        _ => {}
    }
}

/// `/stats` query options.
#[derive(Debug, Default)]
pub struct Selection {
    pub filter: Option<Regex>,
    pub used_only: bool,
    /// `type=Counters|Gauges|Histograms`; `None`: all.
    pub kind: Option<Kind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counters,
    Gauges,
    Histograms,
}

impl Selection {
    pub fn keeps(&self, s: &Stat) -> bool {
        let kind_ok = matches!(
            (self.kind, &s.value),
            (None, _)
                | (Some(Kind::Counters), Value::Counter(_))
                | (Some(Kind::Gauges), Value::Gauge(_))
                | (Some(Kind::Histograms), Value::Histogram(_))
        );
        kind_ok && (!self.used_only || s.is_used()) && self.filter.as_ref().is_none_or(|f| f.is_match(&s.envoy_name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::Address;

    fn counter(scope: Scope, name: &'static str, n: u64) -> Stat {
        Stat { scope, name: name.into(), value: Value::Counter(n) }
    }

    #[test]
    fn envoy_names() {
        let c = counter(Scope::Cluster("film-service-cluster".into()), "upstream_rq_total", 12);
        assert_eq!(c.envoy_name(), "cluster.film-service-cluster.upstream_rq_total");
        let l = counter(Scope::listener(&Address::Ip("0.0.0.0:8080".parse().unwrap())), "downstream_cx_total", 1);
        assert_eq!(l.envoy_name(), "listener.0.0.0.0_8080.downstream_cx_total");
        let v6 = counter(Scope::listener(&Address::Ip("[::]:8080".parse().unwrap())), "downstream_cx_total", 1);
        assert_eq!(v6.envoy_name(), "listener.[__]_8080.downstream_cx_total");
        assert_eq!(render_text(&[c]), "cluster.film-service-cluster.upstream_rq_total: 12\n");
    }

    #[test]
    fn same_prefix_listeners_share_their_stats() {
        let a = counter(Scope::Http("ingress".into()), "downstream_rq_total", 2);
        let b = counter(Scope::Http("ingress".into()), "downstream_rq_total", 3);
        let other = counter(Scope::Http("admin".into()), "downstream_rq_total", 1);
        let merged = normalize(vec![a, other, b]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].envoy_name(), "http.admin.downstream_rq_total");
        assert_eq!(merged[1].value, Value::Counter(5));
    }

    #[test]
    fn selection_filters_by_regex_use_and_type() {
        let stats = [
            counter(Scope::Cluster("a".into()), "upstream_rq_total", 0),
            counter(Scope::Cluster("a".into()), "upstream_cx_total", 4),
            Stat { scope: Scope::Server, name: "live".into(), value: Value::Gauge(1) },
        ];
        let sel = Selection { filter: Some(Regex::new("upstream_").unwrap()), ..Default::default() };
        assert_eq!(stats.iter().filter(|s| sel.keeps(s)).count(), 2);
        let used = Selection { used_only: true, ..Default::default() };
        assert_eq!(stats.iter().filter(|s| used.keeps(s)).count(), 2);
        let gauges = Selection { kind: Some(Kind::Gauges), ..Default::default() };
        assert_eq!(stats.iter().filter(|s| gauges.keeps(s)).count(), 1);
    }
}
