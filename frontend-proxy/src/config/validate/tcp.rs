//! `envoy.filters.network.tcp_proxy`: the cluster (or weighted clusters)
//! each connection is joined to, the timers that end it, and its access
//! logs (the connection manager's loggers, formats and filters). Fields the
//! proxy does not implement are errors naming their path: each changes
//! where bytes go or when a connection ends.

use super::{suggestion, Ctx, P};
use crate::config::model::TcpProxy;
use crate::config::raw::{self, Keys};
use crate::routing::ClusterChoice;
use std::collections::HashMap;
use std::time::Duration;

pub(super) const TCP_PROXY_NAMES: &[&str] = &["envoy.filters.network.tcp_proxy", "envoy.tcp_proxy"];
pub(super) const TCP_PROXY_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

/// Envoy's default `idle_timeout`.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Envoy fields of `TcpProxy` that are refused, with what they would do.
const NOT_SUPPORTED: &[(&str, &str)] = &[
    ("metadata_match", "endpoint subsets"),
    ("hash_policy", "hashing connections onto hosts"),
    ("tunneling_config", "tunneling TCP over HTTP (CONNECT)"),
    ("on_demand", "on-demand cluster discovery"),
    ("access_log_options", "access log entries before a connection ends"),
    ("access_log_flush_interval", "access log entries before a connection ends"),
    ("flush_access_log_on_connected", "access log entries before a connection ends"),
    ("backoff_options", "backoff between connect attempts"),
    ("proxy_protocol_tlvs", "PROXY protocol TLVs"),
    ("max_early_data_bytes", "early data (receive before the upstream connects)"),
    ("upstream_connect_mode", "delayed upstream connection"),
];

/// The tcp_proxy at `p` (its `typed_config`); `clusters` are the valid
/// clusters by name, `tls_clusters` the ones that speak TLS upstream.
pub(super) fn tcp_proxy(
    cx: &mut Ctx,
    p: &P,
    tc: &serde_yaml::Value,
    clusters: &HashMap<String, usize>,
) -> Option<TcpProxy> {
    let t = cx.typed::<raw::TcpProxy>(p, tc)?;
    for key in t.other().keys() {
        if let Some((_, what)) = NOT_SUPPORTED.iter().find(|(k, _)| k == key) {
            cx.error(&p.key(key), format!("{what}: not supported yet, so the configuration is refused"));
        } else {
            let hint =
                suggestion(key, raw::TcpProxy::KEYS).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            cx.error(&p.key(key), format!("unknown or unsupported field{hint}; frontend-proxy would not honour it, so it refuses the configuration"));
        }
    }
    let _ = cx.opt(p, "@type", &t.type_url);
    let stat_prefix = cx.req(p, "stat_prefix", &t.stat_prefix).cloned();
    if stat_prefix.as_deref() == Some("") {
        cx.error(&p.key("stat_prefix"), "must not be empty");
    }
    let cluster = cluster_choice(cx, p, &t, clusters);
    let idle_timeout = cx.duration(p, "idle_timeout", &t.idle_timeout).unwrap_or(DEFAULT_IDLE_TIMEOUT);
    let max_connect_attempts = cx.opt(p, "max_connect_attempts", &t.max_connect_attempts).copied().unwrap_or(1);
    if max_connect_attempts == 0 {
        cx.error(&p.key("max_connect_attempts"), "must be at least 1");
    }
    let max_duration = cx.duration(p, "max_downstream_connection_duration", &t.max_downstream_connection_duration);
    if max_duration.is_some_and(|d| d < Duration::from_millis(1)) {
        cx.error(&p.key("max_downstream_connection_duration"), "must be at least 1ms");
    }
    Some(TcpProxy {
        stat_prefix: stat_prefix.filter(|s| !s.is_empty())?,
        cluster: cluster?,
        idle_timeout: (!idle_timeout.is_zero()).then_some(idle_timeout),
        max_connect_attempts: max_connect_attempts.max(1),
        max_duration,
        access_log: super::access_log::access_logs(cx, p, &t.access_log),
    })
}

/// `cluster` or `weighted_clusters`, exactly one.
fn cluster_choice(cx: &mut Ctx, p: &P, t: &raw::TcpProxy, clusters: &HashMap<String, usize>) -> Option<ClusterChoice> {
    let lookup = |cx: &mut Ctx, p: &P, name: &str| -> Option<usize> {
        let id = clusters.get(name).copied();
        match id {
            None => cx.unknown_cluster(p, name),
            Some(_) if cx.tls_clusters.contains(name) => cx.error(
                p,
                format!("cluster {name:?} has a TLS transport socket: tcp_proxy to TLS upstreams is not supported yet"),
            ),
            Some(_) => {}
        }
        id
    };
    match (&t.cluster, &t.weighted_clusters) {
        (Some(_), None) => {
            let name = cx.opt(p, "cluster", &t.cluster)?;
            Some(ClusterChoice::Single(lookup(cx, &p.key("cluster"), name)?))
        }
        (None, Some(_)) => {
            let wp = p.key("weighted_clusters");
            let wc = cx.opt(p, "weighted_clusters", &t.weighted_clusters)?;
            cx.other(&wp, wc, &[]);
            let mut entries = Vec::new();
            let mut complete = true;
            for (cp, c) in cx.list(&wp, "clusters", &wc.clusters) {
                cx.other(&cp, c, &[]);
                let id = cx.req(&cp, "name", &c.name).and_then(|n| lookup(cx, &cp.key("name"), n));
                let weight = cx.req(&cp, "weight", &c.weight).copied();
                if weight == Some(0) {
                    cx.error(&cp.key("weight"), "must be at least 1");
                }
                match (id, weight) {
                    (Some(id), Some(w)) if w > 0 => entries.push((id, w)),
                    _ => complete = false,
                }
            }
            let total: u64 = entries.iter().map(|(_, w)| u64::from(*w)).sum();
            if wc.clusters.is_none() || (complete && entries.is_empty()) {
                cx.error(&wp.key("clusters"), "at least one cluster is required");
                return None;
            }
            if total > u64::from(u32::MAX) {
                cx.error(&wp.key("clusters"), "weights must add up to at most 4294967295");
                return None;
            }
            complete.then_some(ClusterChoice::Weighted(entries, total as u32))
        }
        (Some(_), Some(_)) => {
            cx.error(p, "`cluster` and `weighted_clusters` are mutually exclusive");
            None
        }
        (None, None) => {
            cx.error(p, "one of `cluster` or `weighted_clusters` is required");
            None
        }
    }
}
