//! Route actions: forwarding (clusters, rewrites, timeouts, retries,
//! hashing), redirects and direct responses.

use super::upgrade::upgrade_config;
use super::{Ctx, DataSourceValue, P};
use crate::config::raw;
use crate::routing::{
    ClusterChoice, DirectResponse, Forward, GrpcTimeout, HashPolicy, HostRewrite, Redirect, RetryOn, RetryPolicy,
};
use bytes::Bytes;
use http::header::HeaderName;
use http::StatusCode;
use regex::Regex;
use std::collections::HashMap;
use std::time::Duration;

/// Envoy's default route timeout.
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
/// Envoy's default retry back-off base interval.
const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);
/// Envoy caps direct response bodies at 4 KiB by default.
const MAX_DIRECT_RESPONSE_BODY: usize = 4096;

/// Envoy fields accepted and ignored with a warning.
const ACTION_IGNORED: &[&str] = &["include_vh_rate_limits"];

pub(super) fn forward(
    cx: &mut Ctx,
    p: &P,
    a: &raw::RouteAction,
    clusters: &HashMap<String, usize>,
    vhost_retry: Option<&RetryPolicy>,
) -> Option<Forward> {
    cx.other(p, a, ACTION_IGNORED);
    // HIGH picks the clusters' HIGH circuit breaker thresholds, which are
    // not implemented (`resilience.rs`): refused rather than run under the
    // DEFAULT ones.
    if cx.enumeration(p, "priority", &a.priority, &[("DEFAULT", false), ("HIGH", true)], false) {
        cx.error(&p.key("priority"), "HIGH priority routing is not supported");
    }
    let lookup = |cx: &mut Ctx, p: &P, name: &str| -> Option<usize> {
        let id = clusters.get(name).copied();
        if id.is_none() {
            cx.unknown_cluster(p, name);
        }
        id
    };
    let choice = match (a.cluster.is_some(), a.weighted_clusters.is_some()) {
        (true, false) => {
            let name = cx.opt(p, "cluster", &a.cluster)?;
            ClusterChoice::Single(lookup(cx, &p.key("cluster"), name)?)
        }
        (false, true) => {
            let wp = p.key("weighted_clusters");
            let wc = cx.opt(p, "weighted_clusters", &a.weighted_clusters)?;
            cx.other(&wp, wc, &["runtime_key_prefix"]);
            let mut entries = Vec::new();
            for (cp, c) in cx.list(&wp, "clusters", &wc.clusters) {
                cx.other(&cp, c, &[]);
                let id = cx.req(&cp, "name", &c.name).and_then(|n| lookup(cx, &cp.key("name"), n));
                let weight = cx.req(&cp, "weight", &c.weight).copied();
                if let (Some(id), Some(w)) = (id, weight) {
                    if w > 0 {
                        entries.push((id, w));
                    }
                }
            }
            let total: u64 = entries.iter().map(|(_, w)| u64::from(*w)).sum();
            if let Some(t) = cx.opt(&wp, "total_weight", &wc.total_weight) {
                if u64::from(*t) != total {
                    cx.error(&wp.key("total_weight"), format!("is {t} but the weights add up to {total}"));
                }
            }
            if total == 0 || total > u64::from(u32::MAX) {
                cx.error(&wp.key("clusters"), "weights must add up to more than 0 and fit in 32 bits");
                return None;
            }
            ClusterChoice::Weighted(entries, total as u32)
        }
        _ => {
            cx.error(
                p,
                "exactly one of `cluster` or `weighted_clusters` is required (cluster_header is not supported)",
            );
            return None;
        }
    };
    let prefix_rewrite = cx.string(p, "prefix_rewrite", &a.prefix_rewrite);
    let regex_rewrite = cx.opt(p, "regex_rewrite", &a.regex_rewrite).and_then(|rr| {
        let rp = p.key("regex_rewrite");
        cx.other(&rp, rr, &[]);
        let pattern = cx.req(&rp, "pattern", &rr.pattern).and_then(|pt| regex_unanchored(cx, &rp.key("pattern"), pt));
        let substitution = cx.req(&rp, "substitution", &rr.substitution).cloned();
        Some((pattern?, envoy_substitution(&substitution?)))
    });
    if prefix_rewrite.is_some() && regex_rewrite.is_some() {
        cx.error(p, "`prefix_rewrite` and `regex_rewrite` are mutually exclusive");
    }
    let literal = cx.string(p, "host_rewrite_literal", &a.host_rewrite_literal);
    let auto = cx.boolean(p, "auto_host_rewrite", &a.auto_host_rewrite, false);
    let host_rewrite = match (literal, auto) {
        (Some(_), true) => {
            cx.error(p, "`host_rewrite_literal` and `auto_host_rewrite` are mutually exclusive");
            HostRewrite::Keep
        }
        (Some(h), false) => HostRewrite::Literal(h),
        (None, true) => HostRewrite::Auto,
        (None, false) => HostRewrite::Keep,
    };
    let timeout = cx.duration(p, "timeout", &a.timeout).unwrap_or(DEFAULT_ROUTE_TIMEOUT);
    let idle_timeout = cx.duration(p, "idle_timeout", &a.idle_timeout);
    let (max_stream_duration, grpc_timeout) = match cx.opt(p, "max_stream_duration", &a.max_stream_duration) {
        Some(m) => max_stream_duration(cx, p, m),
        None => (None, None),
    };
    let retry = match cx.opt(p, "retry_policy", &a.retry_policy) {
        Some(r) => retry_policy(cx, &p.key("retry_policy"), r),
        None => vhost_retry.cloned(),
    };
    let hash_policy =
        cx.list(p, "hash_policy", &a.hash_policy).into_iter().filter_map(|(hp, h)| hash_policy(cx, &hp, h)).collect();
    let mut websocket = None;
    for (up, u) in cx.list(p, "upgrade_configs", &a.upgrade_configs) {
        if let Some(enabled) = upgrade_config(cx, &up, u) {
            websocket = Some(enabled);
        }
    }
    Some(Forward {
        clusters: choice,
        prefix_rewrite,
        regex_rewrite,
        host_rewrite,
        timeout: (!timeout.is_zero()).then_some(timeout),
        idle_timeout,
        max_stream_duration,
        retry_policy: retry,
        hash_policy,
        websocket,
        grpc_timeout,
        append_x_forwarded_host: cx.boolean(p, "append_x_forwarded_host", &a.append_x_forwarded_host, false),
    })
}

fn regex_unanchored(cx: &mut Ctx, p: &P, r: &raw::RegexMatcher) -> Option<Regex> {
    cx.other(p, r, &[]);
    let pattern = cx.req(p, "regex", &r.regex)?;
    Regex::new(pattern).map_err(|e| cx.error(&p.key("regex"), format!("invalid regular expression: {e}"))).ok()
}

/// RE2 substitutions write groups as `\1`; the regex crate wants `${1}`.
fn envoy_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(|n| n.is_ascii_digit()) => {
                let d = chars.next().unwrap_or('0');
                out.push_str(&format!("${{{d}}}"));
            }
            '$' => out.push_str("$$"),
            other => out.push(other),
        }
    }
    out
}

pub(super) fn retry_policy(cx: &mut Ctx, p: &P, r: &raw::RetryPolicy) -> Option<RetryPolicy> {
    cx.other(p, r, &[]);
    let retry_on = match cx.opt(p, "retry_on", &r.retry_on).map(|s| RetryOn::parse(s)) {
        Some(Ok(on)) => on,
        Some(Err(bad)) => {
            cx.error(&p.key("retry_on"), format!("retry condition {bad:?} is not supported (5xx, gateway-error, connect-failure, reset, retriable-4xx, retriable-status-codes, refused-stream)"));
            RetryOn::default()
        }
        None => RetryOn::default(),
    };
    let mut codes = Vec::new();
    for (cp, c) in cx.list(p, "retriable_status_codes", &r.retriable_status_codes) {
        match u16::try_from(*c).ok().filter(|c| (100..=599).contains(c)) {
            Some(c) => codes.push(c),
            None => cx.error(&cp, "not an HTTP status code"),
        }
    }
    let mut avoid_previous_hosts = false;
    for (hp, h) in cx.list(p, "retry_host_predicate", &r.retry_host_predicate) {
        match cx.string(&hp, "name", &h.name).as_deref() {
            Some("envoy.retry_host_predicates.previous_hosts") => avoid_previous_hosts = true,
            other => cx.error(&hp, format!("retry host predicate {other:?} is not supported")),
        }
    }
    let (base, max) = match cx.opt(p, "retry_back_off", &r.retry_back_off) {
        Some(b) => back_off(cx, &p.key("retry_back_off"), b, DEFAULT_BACKOFF_BASE)?,
        None => (DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_BASE * 10),
    };
    let _ = cx.opt(p, "host_selection_retry_max_attempts", &r.host_selection_retry_max_attempts);
    Some(RetryPolicy {
        retry_on,
        num_retries: cx.opt(p, "num_retries", &r.num_retries).copied().unwrap_or(1),
        per_try_timeout: cx.duration(p, "per_try_timeout", &r.per_try_timeout).filter(|d| !d.is_zero()),
        retriable_status_codes: codes,
        avoid_previous_hosts,
        backoff_base: base,
        backoff_max: max,
    })
}

/// `{base_interval, max_interval}`; max defaults to 10 × base.
pub(super) fn back_off(
    cx: &mut Ctx,
    p: &P,
    b: &raw::RetryBackOff,
    default_base: Duration,
) -> Option<(Duration, Duration)> {
    cx.other(p, b, &[]);
    let base = cx.duration(p, "base_interval", &b.base_interval).unwrap_or(default_base);
    if base.is_zero() {
        cx.error(&p.key("base_interval"), "must be greater than 0");
        return None;
    }
    let max = cx.duration(p, "max_interval", &b.max_interval).unwrap_or(base * 10);
    if max < base {
        cx.error(&p.key("max_interval"), "must not be smaller than base_interval");
        return None;
    }
    Some((base, max))
}

fn hash_policy(cx: &mut Ctx, p: &P, h: &raw::HashPolicy) -> Option<HashPolicy> {
    cx.other(p, h, &[]);
    let terminal = cx.boolean(p, "terminal", &h.terminal, false);
    match (cx.opt(p, "header", &h.header), cx.opt(p, "connection_properties", &h.connection_properties)) {
        (Some(hd), None) => {
            let hp = p.key("header");
            cx.other(&hp, hd, &[]);
            let name = cx.req(&hp, "header_name", &hd.header_name)?;
            match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
                Ok(name) => Some(HashPolicy::Header { name, terminal }),
                Err(_) => {
                    cx.error(&hp.key("header_name"), format!("invalid header name {name:?}"));
                    None
                }
            }
        }
        (None, Some(c)) => {
            let cp = p.key("connection_properties");
            cx.other(&cp, c, &[]);
            cx.boolean(&cp, "source_ip", &c.source_ip, false).then_some(HashPolicy::SourceIp { terminal })
        }
        _ => {
            cx.error(p, "exactly one of `header` or `connection_properties` is required (cookie, query_parameter and filter_state hashing are not supported)");
            None
        }
    }
}

pub(super) fn redirect(cx: &mut Ctx, p: &P, r: &raw::RedirectAction) -> Option<Redirect> {
    cx.other(p, r, &[]);
    let https = cx.boolean(p, "https_redirect", &r.https_redirect, false);
    let scheme = cx.string(p, "scheme_redirect", &r.scheme_redirect);
    if https && scheme.is_some() {
        cx.error(p, "`https_redirect` and `scheme_redirect` are mutually exclusive");
    }
    let path = cx.string(p, "path_redirect", &r.path_redirect);
    let prefix_rewrite = cx.string(p, "prefix_rewrite", &r.prefix_rewrite);
    if path.is_some() && prefix_rewrite.is_some() {
        cx.error(p, "`path_redirect` and `prefix_rewrite` are mutually exclusive");
    }
    let port = match cx.opt(p, "port_redirect", &r.port_redirect).map(|p| u16::try_from(*p)) {
        Some(Ok(port)) => Some(port),
        Some(Err(_)) => {
            cx.error(&p.key("port_redirect"), "must be at most 65535");
            None
        }
        None => None,
    };
    let status = cx.enumeration(
        p,
        "response_code",
        &r.response_code,
        &[
            ("MOVED_PERMANENTLY", StatusCode::MOVED_PERMANENTLY),
            ("FOUND", StatusCode::FOUND),
            ("SEE_OTHER", StatusCode::SEE_OTHER),
            ("TEMPORARY_REDIRECT", StatusCode::TEMPORARY_REDIRECT),
            ("PERMANENT_REDIRECT", StatusCode::PERMANENT_REDIRECT),
        ],
        StatusCode::MOVED_PERMANENTLY,
    );
    Some(Redirect {
        scheme: if https { Some("https".into()) } else { scheme },
        host: cx.string(p, "host_redirect", &r.host_redirect),
        port,
        path,
        prefix_rewrite,
        status,
        strip_query: cx.boolean(p, "strip_query", &r.strip_query, false),
    })
}

pub(super) fn direct_response(cx: &mut Ctx, p: &P, d: &raw::DirectResponseAction) -> Option<DirectResponse> {
    cx.other(p, d, &[]);
    let status = cx.req(p, "status", &d.status).copied();
    let status = match status.and_then(|s| u16::try_from(s).ok()).filter(|s| (200..=599).contains(s)) {
        Some(s) => StatusCode::from_u16(s).ok(),
        None => {
            if status.is_some() {
                cx.error(&p.key("status"), "must be an HTTP status between 200 and 599");
            }
            None
        }
    };
    let body = match cx.opt(p, "body", &d.body) {
        None => None,
        Some(ds) => {
            let bp = p.key("body");
            match cx.data_source(&bp, ds)? {
                DataSourceValue::Inline(b) => Some(b),
                DataSourceValue::File(f) => match std::fs::read(&f) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        cx.error(&bp.key("filename"), format!("cannot read {f}: {e}"));
                        return None;
                    }
                },
            }
        }
    };
    if body.as_ref().is_some_and(|b| b.len() > MAX_DIRECT_RESPONSE_BODY) {
        cx.error(&p.key("body"), format!("is larger than {MAX_DIRECT_RESPONSE_BODY} bytes"));
    }
    Some(DirectResponse { status: status?, body: body.map(Bytes::from) })
}

/// A route's `max_stream_duration`: the limit on a stream's whole life
/// (overriding the connection manager's; `0s` turns it off), and the gRPC
/// timeout fields, which make a request's `grpc-timeout` its route timeout.
fn max_stream_duration(
    cx: &mut Ctx,
    p: &P,
    m: &raw::MaxStreamDuration,
) -> (Option<Duration>, Option<Box<GrpcTimeout>>) {
    let mp = p.key("max_stream_duration");
    cx.other(&mp, m, &[]);
    let limit = cx.duration(&mp, "max_stream_duration", &m.max_stream_duration);
    let offset = cx.duration(&mp, "grpc_timeout_header_offset", &m.grpc_timeout_header_offset);
    let grpc = match cx.duration(&mp, "grpc_timeout_header_max", &m.grpc_timeout_header_max) {
        Some(max) => {
            Some(Box::new(GrpcTimeout { max: (!max.is_zero()).then_some(max), offset: offset.unwrap_or_default() }))
        }
        None => {
            if offset.is_some() {
                cx.warn(
                    &mp.key("grpc_timeout_header_offset"),
                    "ignored without grpc_timeout_header_max (grpc-timeout is then not read), as in Envoy",
                );
            }
            None
        }
    };
    (limit, grpc)
}

#[cfg(test)]
mod tests {
    use super::envoy_substitution;

    #[test]
    fn substitution_groups() {
        assert_eq!(envoy_substitution(r"/v2/\1/x"), "/v2/${1}/x");
        assert_eq!(envoy_substitution("$5"), "$$5");
    }
}
