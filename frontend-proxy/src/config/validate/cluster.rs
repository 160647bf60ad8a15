//! Clusters: discovery type, endpoints, load balancing, DNS settings, upstream TLS.

use super::dns::dns_spec;
use super::protocol::upstream_http;
use super::resilience;
use super::tls::upstream_tls;
use super::{Ctx, P};
use crate::config::raw::lenient::enum_name;
use crate::config::raw::{self, Field, List};
use crate::upstream::{
    ClusterSpec, DiscoveryType, EndpointAddress, EndpointSpec, LbPolicy, TcpKeepaliveSpec, UpstreamCodec,
};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Enum names as Envoy spells them; the file may use any case.
const CLUSTER_TYPES: &[&str] = &["STATIC", "STRICT_DNS", "LOGICAL_DNS", "EDS", "ORIGINAL_DST"];
const LB_POLICIES: &[&str] = &[
    "ROUND_ROBIN",
    "LEAST_REQUEST",
    "RING_HASH",
    "RANDOM",
    "MAGLEV",
    "CLUSTER_PROVIDED",
    "LOAD_BALANCING_POLICY_CONFIG",
    "ORIGINAL_DST_LB",
];
const HEALTH_STATUSES: &[&str] = &["UNKNOWN", "HEALTHY", "UNHEALTHY", "DRAINING", "TIMEOUT", "DEGRADED"];

/// Envoy's defaults.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Envoy fields accepted and ignored with a warning.
const CLUSTER_IGNORED: &[&str] = &[
    "per_connection_buffer_limit_bytes",
    "alt_stat_name",
    "metadata",
    "track_timeout_budgets",
    "track_cluster_stats",
    "cleanup_interval",
    "dns_jitter",
    "wait_for_warm_on_init",
    "close_connections_on_host_health_failure",
    "max_requests_per_connection",
    "use_tcp_for_dns_lookups",
];

pub(super) fn clusters(cx: &mut Ctx, p: &P, f: &Option<List<raw::Cluster>>) -> Vec<ClusterSpec> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for (cp, c) in cx.list(p, "clusters", f) {
        // Duplicates are found from the raw names, so a cluster with other
        // errors still takes part in the check.
        if let Some(Field::Ok(name)) = &c.name {
            if !names.insert(name.clone()) {
                cx.error(&cp.key("name"), format!("duplicate cluster name {name:?}"));
            }
        }
        match cluster(cx, &cp, c) {
            Some(spec) => out.push(spec),
            None => {
                if let Some(Field::Ok(name)) = &c.name {
                    cx.rejected_clusters.entry(name.clone()).or_insert_with(|| cp.0.clone());
                }
            }
        }
    }
    out
}

fn cluster(cx: &mut Ctx, p: &P, c: &raw::Cluster) -> Option<ClusterSpec> {
    cx.other(p, c, CLUSTER_IGNORED);
    let name = cx.req(p, "name", &c.name).cloned();
    let discovery = match cx.opt(p, "type", &c.discovery_type).map(|t| enum_name(t, CLUSTER_TYPES)) {
        None | Some("STATIC") => Some(DiscoveryType::Static),
        Some("STRICT_DNS") => Some(DiscoveryType::StrictDns),
        Some("LOGICAL_DNS") => Some(DiscoveryType::LogicalDns),
        Some(t @ ("EDS" | "ORIGINAL_DST")) => {
            cx.error(&p.key("type"), format!("{t} clusters are not supported (STATIC, STRICT_DNS, LOGICAL_DNS are)"));
            None
        }
        Some(other) => {
            cx.error(
                &p.key("type"),
                format!("unknown value {other:?}, expected one of STATIC, STRICT_DNS, LOGICAL_DNS"),
            );
            None
        }
    };
    // A bad type is reported, and the rest of the cluster is still checked
    // (its endpoints as host names, which takes IPs too).
    let rejected_type = discovery.is_none();
    let discovery = discovery.unwrap_or(DiscoveryType::StrictDns);
    let connect_timeout = cx.duration(p, "connect_timeout", &c.connect_timeout).unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    if connect_timeout.is_zero() {
        cx.error(&p.key("connect_timeout"), "must be greater than 0");
    }
    let lb_policy = lb_policy(cx, p, c);
    let endpoints = match cx.opt(p, "load_assignment", &c.load_assignment) {
        Some(la) => load_assignment(cx, &p.key("load_assignment"), la, discovery),
        None => Vec::new(),
    };
    if endpoints.is_empty() {
        cx.warn(&p.key("load_assignment"), "the cluster has no endpoints; requests to it get 503");
    }
    if discovery == DiscoveryType::LogicalDns && endpoints.len() > 1 {
        cx.error(&p.key("load_assignment"), "LOGICAL_DNS clusters take exactly one endpoint");
    }
    let dns = dns_spec(cx, p, c);
    // `None` when the transport socket was rejected; the checks below still run.
    let tls = match cx.opt(p, "transport_socket", &c.transport_socket) {
        Some(ts) => upstream_tls(cx, &p.key("transport_socket"), ts).map(Some),
        None => Some(None),
    };
    // A rejected transport socket counts as TLS: its own error is enough.
    let http = upstream_http(cx, p, c, !matches!(tls, Some(None)));
    if lb_policy == Some(LbPolicy::RingHash) && endpoints.iter().any(|e| matches!(e.address, EndpointAddress::Pipe(_)))
    {
        // Pingora's Ketama ring leaves out every host that is not an IP.
        cx.error(&p.key("lb_policy"), "RING_HASH balances over IP endpoints only; a pipe endpoint needs another policy (MAGLEV hashes a pipe's path)");
    }
    if http.codec != UpstreamCodec::Http1 {
        let abstract_pipe = endpoints.iter().find_map(|e| match &e.address {
            EndpointAddress::Pipe(pipe) if pipe.is_abstract() => Some(pipe.clone()),
            _ => None,
        });
        if let Some(pipe) = abstract_pipe {
            // HTTP/2 goes through Pingora's pool, which can neither hash nor
            // reuse a connection to an abstract socket.
            cx.error(
                &p.key("load_assignment"),
                format!(
                    "the abstract pipe {} takes HTTP/1.1 only (upstream HTTP/2 cannot pool an abstract socket); use a socket file",
                    pipe.path
                ),
            );
        }
    }
    let health_check = resilience::health_checks(cx, p, &c.health_checks);
    if health_check.is_some() && discovery == DiscoveryType::LogicalDns {
        cx.error(&p.key("health_checks"), "health checks on LOGICAL_DNS clusters are not supported");
    }
    let outlier = cx
        .opt(p, "outlier_detection", &c.outlier_detection)
        .and_then(|o| resilience::outlier_detection(cx, &p.key("outlier_detection"), o));
    let circuit_breakers = cx
        .opt(p, "circuit_breakers", &c.circuit_breakers)
        .map(|b| resilience::circuit_breakers(cx, &p.key("circuit_breakers"), b))
        .unwrap_or_default();
    let healthy_panic_threshold = cx
        .opt(p, "common_lb_config", &c.common_lb_config)
        .map(|l| resilience::panic_threshold(cx, &p.key("common_lb_config"), l))
        .unwrap_or(50.0);
    if rejected_type {
        return None;
    }
    Some(ClusterSpec {
        name: name?,
        discovery,
        endpoints,
        lb_policy: lb_policy?,
        connect_timeout,
        dns: dns?,
        tls: tls?,
        health_check,
        outlier,
        circuit_breakers,
        healthy_panic_threshold,
        ignore_health_on_host_removal: cx.boolean(
            p,
            "ignore_health_on_host_removal",
            &c.ignore_health_on_host_removal,
            false,
        ),
        http,
        tcp_keepalive: tcp_keepalive(cx, p, c),
    })
}

/// `upstream_connection_options.tcp_keepalive`; the interface name and
/// Happy Eyeballs settings only shape how a connection is made.
fn tcp_keepalive(cx: &mut Ctx, p: &P, c: &raw::Cluster) -> Option<TcpKeepaliveSpec> {
    let o = cx.opt(p, "upstream_connection_options", &c.upstream_connection_options)?;
    let op = p.key("upstream_connection_options");
    cx.other(&op, o, &["set_local_interface_name_on_upstream_connections", "happy_eyeballs_config"]);
    let k = cx.opt(&op, "tcp_keepalive", &o.tcp_keepalive)?;
    let kp = op.key("tcp_keepalive");
    cx.other(&kp, k, &[]);
    Some(TcpKeepaliveSpec {
        time: cx.opt(&kp, "keepalive_time", &k.keepalive_time).copied(),
        interval: cx.opt(&kp, "keepalive_interval", &k.keepalive_interval).copied(),
        probes: cx.opt(&kp, "keepalive_probes", &k.keepalive_probes).copied(),
    })
}

fn lb_policy(cx: &mut Ctx, p: &P, c: &raw::Cluster) -> Option<LbPolicy> {
    for (name, f) in [("ring_hash_lb_config", &c.ring_hash_lb_config), ("maglev_lb_config", &c.maglev_lb_config)] {
        if cx.opt(p, name, f).is_some() {
            cx.warn(&p.key(name), "table and ring sizes are chosen by frontend-proxy; ignored");
        }
    }
    let mut choice_count = 2;
    if let Some(lr) = cx.opt(p, "least_request_lb_config", &c.least_request_lb_config) {
        let lp = p.key("least_request_lb_config");
        cx.other(&lp, lr, &["active_request_bias", "slow_start_config"]);
        if let Some(n) = cx.opt(&lp, "choice_count", &lr.choice_count) {
            if *n < 2 {
                cx.error(&lp.key("choice_count"), "must be at least 2");
            }
            choice_count = *n;
        }
    }
    let policy = match cx.opt(p, "lb_policy", &c.lb_policy).map(|t| enum_name(t, LB_POLICIES)) {
        None | Some("ROUND_ROBIN") => LbPolicy::RoundRobin,
        Some("RANDOM") => LbPolicy::Random,
        Some("RING_HASH") => LbPolicy::RingHash,
        Some("MAGLEV") => LbPolicy::Maglev,
        Some("LEAST_REQUEST") => LbPolicy::LeastRequest { choice_count },
        Some(t @ ("CLUSTER_PROVIDED" | "LOAD_BALANCING_POLICY_CONFIG" | "ORIGINAL_DST_LB")) => {
            cx.error(&p.key("lb_policy"), format!("{t} is not supported"));
            return None;
        }
        Some(other) => {
            cx.error(
                &p.key("lb_policy"),
                format!(
                    "unknown value {other:?}, expected one of ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV"
                ),
            );
            return None;
        }
    };
    Some(policy)
}

fn load_assignment(
    cx: &mut Ctx,
    p: &P,
    la: &raw::ClusterLoadAssignment,
    discovery: DiscoveryType,
) -> Vec<EndpointSpec> {
    cx.other(p, la, &["policy", "named_endpoints"]);
    let _ = cx.opt(p, "cluster_name", &la.cluster_name);
    let mut out = Vec::new();
    for (lp, locality) in cx.list(p, "endpoints", &la.endpoints) {
        cx.other(&lp, locality, &["locality", "load_balancing_weight", "metadata", "proximity"]);
        if cx.opt(&lp, "priority", &locality.priority).is_some_and(|p| *p != 0) {
            cx.error(&lp.key("priority"), "priority levels other than 0 (failover) are not supported");
        }
        for (ep, lb) in cx.list(&lp, "lb_endpoints", &locality.lb_endpoints) {
            if let Some(e) = lb_endpoint(cx, &ep, lb, discovery) {
                if !out.contains(&e) {
                    out.push(e);
                }
            }
        }
    }
    out
}

fn lb_endpoint(cx: &mut Ctx, p: &P, lb: &raw::LbEndpoint, discovery: DiscoveryType) -> Option<EndpointSpec> {
    cx.other(p, lb, &["metadata"]);
    let weight = cx.opt(p, "load_balancing_weight", &lb.load_balancing_weight).copied().unwrap_or(1);
    if weight == 0 || weight > 1000 {
        cx.error(&p.key("load_balancing_weight"), "must be between 1 and 1000");
    }
    let status =
        cx.opt(p, "health_status", &lb.health_status).map(|s| enum_name(s, HEALTH_STATUSES)).unwrap_or("UNKNOWN");
    let excluded = match status {
        "UNKNOWN" | "HEALTHY" => false,
        "UNHEALTHY" | "DRAINING" | "TIMEOUT" => true,
        other => {
            cx.error(&p.key("health_status"), format!("health status {other:?} is not supported"));
            false
        }
    };
    let epp = p.key("endpoint");
    let e = cx.req(p, "endpoint", &lb.endpoint)?;
    cx.other(&epp, e, &[]);
    let mut health_check_port = None;
    if let Some(hc) = cx.opt(&epp, "health_check_config", &e.health_check_config) {
        let hp = epp.key("health_check_config");
        cx.other(&hp, hc, &[]);
        if hc.hostname.is_some() {
            cx.error(&hp.key("hostname"), "not supported");
        }
        match cx.opt(&hp, "port_value", &hc.port_value).map(|p| u16::try_from(*p)) {
            Some(Ok(port)) if port > 0 => health_check_port = Some(port),
            Some(_) => cx.error(&hp.key("port_value"), "must be between 1 and 65535"),
            None => {}
        }
    }
    let hostname = cx.string(&epp, "hostname", &e.hostname);
    let ap = epp.key("address");
    let addr = cx.req(&epp, "address", &e.address)?;
    if let Some(pipe) = cx.opt(&ap, "pipe", &addr.pipe) {
        // Envoy: only a STATIC cluster takes a pipe; DNS clusters resolve
        // `socket_address` names and reject any other address.
        let pp = ap.key("pipe");
        if addr.socket_address.is_some() {
            cx.error(&ap, "socket_address and pipe are one of: set only one");
            return None;
        }
        if discovery != DiscoveryType::Static {
            cx.error(&pp, "a pipe (Unix domain socket) endpoint needs a STATIC cluster; DNS clusters resolve socket_address names");
            return None;
        }
        if pipe.mode.is_some() {
            // Envoy reads `mode` when it binds a listener only.
            cx.error(&pp.key("mode"), "a file mode applies to pipe listeners only, not to an endpoint");
            return None;
        }
        let pipe = cx.pipe(&pp, pipe)?;
        if excluded {
            cx.warn(p, format!("health_status {status}: endpoint excluded from load balancing"));
            return None;
        }
        if health_check_port.is_some() {
            cx.error(
                &epp.key("health_check_config").key("port_value"),
                "a pipe endpoint has no port to health check instead",
            );
            return None;
        }
        return Some(EndpointSpec {
            address: EndpointAddress::Pipe(Arc::new(pipe)),
            weight,
            hostname,
            health_check_port,
        });
    }
    let (host, port) = cx.socket_address(&ap, addr)?;
    let address = match (host.parse::<IpAddr>(), discovery) {
        (Ok(ip), _) => EndpointAddress::Ip(SocketAddr::new(ip, port)),
        (Err(_), DiscoveryType::Static) => {
            cx.error(
                &ap.key("socket_address").key("address"),
                format!(
                    "{host:?} is not an IP address; STATIC clusters need IPs (use type: STRICT_DNS for host names)"
                ),
            );
            return None;
        }
        (Err(_), _) => {
            if !valid_dns_name(&host) {
                cx.error(&ap.key("socket_address").key("address"), format!("{host:?} is not a valid host name"));
                return None;
            }
            EndpointAddress::Dns { host, port }
        }
    };
    if excluded {
        cx.warn(p, format!("health_status {status}: endpoint excluded from load balancing"));
        return None;
    }
    Some(EndpointSpec { address, weight, hostname, health_check_port })
}

fn valid_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}
