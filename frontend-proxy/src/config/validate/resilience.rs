//! Cluster resilience settings: active health checks, outlier detection,
//! circuit breakers and the panic threshold.

use super::{Ctx, P};
use crate::config::raw::lenient::enum_name;
use crate::config::raw::{self, List};
use crate::upstream::{CircuitBreakerSpec, HealthCheckKind, HealthCheckSpec, OutlierSpec};
use std::time::Duration;

/// Envoy's default interval for clusters that have not had traffic yet.
const DEFAULT_NO_TRAFFIC_INTERVAL: Duration = Duration::from_secs(60);

pub(super) fn health_checks(cx: &mut Ctx, p: &P, f: &Option<List<raw::HealthCheck>>) -> Option<HealthCheckSpec> {
    let list = cx.list(p, "health_checks", f);
    if list.len() > 1 {
        cx.error(&p.key("health_checks"), "only one health check per cluster is supported");
    }
    let (hp, h) = list.into_iter().next()?;
    cx.other(&hp, h, &["event_log_path", "always_log_health_check_failures"]);
    // Envoy requires all four.
    let timeout = required_duration(cx, &hp, "timeout", &h.timeout);
    let interval = required_duration(cx, &hp, "interval", &h.interval);
    let unhealthy_threshold = cx.req(&hp, "unhealthy_threshold", &h.unhealthy_threshold).copied();
    let healthy_threshold = cx.req(&hp, "healthy_threshold", &h.healthy_threshold).copied();
    for (name, v) in [("unhealthy_threshold", unhealthy_threshold), ("healthy_threshold", healthy_threshold)] {
        if v == Some(0) {
            cx.error(&hp.key(name), "must be at least 1");
        }
    }
    // The optional intervals, with Envoy's defaults: each falls back on the one it refines.
    let no_traffic_interval = positive_duration(cx, &hp, "no_traffic_interval", &h.no_traffic_interval)
        .unwrap_or(DEFAULT_NO_TRAFFIC_INTERVAL);
    let no_traffic_healthy_interval =
        positive_duration(cx, &hp, "no_traffic_healthy_interval", &h.no_traffic_healthy_interval)
            .unwrap_or(no_traffic_interval);
    let unhealthy_interval = positive_duration(cx, &hp, "unhealthy_interval", &h.unhealthy_interval);
    let unhealthy_edge_interval = positive_duration(cx, &hp, "unhealthy_edge_interval", &h.unhealthy_edge_interval);
    let healthy_edge_interval = positive_duration(cx, &hp, "healthy_edge_interval", &h.healthy_edge_interval);
    let initial_jitter = cx.duration(&hp, "initial_jitter", &h.initial_jitter).unwrap_or_default();
    let interval_jitter = cx.duration(&hp, "interval_jitter", &h.interval_jitter).unwrap_or_default();
    let interval_jitter_percent =
        cx.opt(&hp, "interval_jitter_percent", &h.interval_jitter_percent).copied().unwrap_or(0);
    let kind = match (h.http_health_check.is_some(), h.tcp_health_check.is_some()) {
        (true, false) => cx
            .opt(&hp, "http_health_check", &h.http_health_check)
            .and_then(|hh| http_health_check(cx, &hp.key("http_health_check"), hh)),
        (false, true) => {
            if let Some(t) = cx.opt(&hp, "tcp_health_check", &h.tcp_health_check) {
                let empty = t.is_null() || t.as_mapping().is_some_and(|m| m.is_empty());
                if !empty {
                    cx.error(
                        &hp.key("tcp_health_check"),
                        "send/receive payloads are not supported; use `tcp_health_check: {}`",
                    );
                }
            }
            Some(HealthCheckKind::Tcp)
        }
        _ => {
            cx.error(&hp, "exactly one of `http_health_check` or `tcp_health_check` is required (gRPC and custom checks are not supported)");
            None
        }
    };
    let interval = interval?;
    let unhealthy_interval = unhealthy_interval.unwrap_or(interval);
    Some(HealthCheckSpec {
        timeout: timeout?,
        interval,
        unhealthy_interval,
        unhealthy_edge_interval: unhealthy_edge_interval.unwrap_or(unhealthy_interval),
        healthy_edge_interval: healthy_edge_interval.unwrap_or(interval),
        no_traffic_interval,
        no_traffic_healthy_interval,
        initial_jitter,
        interval_jitter,
        interval_jitter_percent,
        unhealthy_threshold: unhealthy_threshold?,
        healthy_threshold: healthy_threshold?,
        kind: kind?,
    })
}

fn required_duration(cx: &mut Ctx, p: &P, name: &str, f: &Option<raw::Field<serde_yaml::Value>>) -> Option<Duration> {
    if f.is_none() {
        cx.error(&p.key(name), "required field is missing");
        return None;
    }
    positive_duration(cx, p, name, f)
}

/// An optional duration that Envoy requires to be above zero when set.
fn positive_duration(cx: &mut Ctx, p: &P, name: &str, f: &Option<raw::Field<serde_yaml::Value>>) -> Option<Duration> {
    let d = cx.duration(p, name, f)?;
    if d.is_zero() {
        cx.error(&p.key(name), "must be greater than 0");
        return None;
    }
    Some(d)
}

fn http_health_check(cx: &mut Ctx, p: &P, h: &raw::HttpHealthCheck) -> Option<HealthCheckKind> {
    cx.other(p, h, &["request_headers_to_add", "request_headers_to_remove"]);
    let path = cx.req(p, "path", &h.path).cloned();
    if path.as_ref().is_some_and(|s| !s.starts_with('/')) {
        cx.error(&p.key("path"), "must start with `/`");
    }
    let mut expected = Vec::new();
    for (rp, r) in cx.list(p, "expected_statuses", &h.expected_statuses) {
        cx.other(&rp, r, &[]);
        let start = cx.req(&rp, "start", &r.start).copied();
        let end = cx.req(&rp, "end", &r.end).copied();
        match (start, end) {
            (Some(s), Some(e)) if (100..=600).contains(&s) && (101..=600).contains(&e) && s < e => {
                expected.push((s as u16, e as u16));
            }
            (Some(_), Some(_)) => cx.error(&rp, "must be a range [start, end) of HTTP statuses within 100..600"),
            _ => {}
        }
    }
    if expected.is_empty() {
        expected.push((200, 201)); // Envoy: only 200 is healthy by default
    }
    Some(HealthCheckKind::Http { path: path?, host: cx.string(p, "host", &h.host), expected })
}

pub(super) fn outlier_detection(cx: &mut Ctx, p: &P, o: &raw::OutlierDetection) -> Option<OutlierSpec> {
    cx.other(p, o, &[]);
    let percent = |cx: &mut Ctx, name: &str, f: &Option<raw::Field<u32>>, default: u32| -> u32 {
        let v = cx.opt(p, name, f).copied().unwrap_or(default);
        if v > 100 {
            cx.error(&p.key(name), "must be a percentage (0..100)");
        }
        v.min(100)
    };
    let base = cx.duration(p, "base_ejection_time", &o.base_ejection_time).unwrap_or(Duration::from_secs(30));
    let max = cx.duration(p, "max_ejection_time", &o.max_ejection_time).unwrap_or(Duration::from_secs(300)).max(base);
    let interval = cx.duration(p, "interval", &o.interval).unwrap_or(Duration::from_secs(10));
    if interval.is_zero() {
        cx.error(&p.key("interval"), "must be greater than 0");
        return None;
    }
    cx.warn(
        p,
        "success-rate and failure-percentage ejection are not implemented; only consecutive_5xx and consecutive_gateway_failure eject hosts",
    );
    Some(OutlierSpec {
        consecutive_5xx: cx.opt(p, "consecutive_5xx", &o.consecutive_5xx).copied().unwrap_or(5).max(1),
        enforcing_consecutive_5xx: percent(cx, "enforcing_consecutive_5xx", &o.enforcing_consecutive_5xx, 100),
        consecutive_gateway_failure: cx
            .opt(p, "consecutive_gateway_failure", &o.consecutive_gateway_failure)
            .copied()
            .unwrap_or(5)
            .max(1),
        // Envoy does not enforce gateway-failure ejection unless asked to.
        enforcing_consecutive_gateway_failure: percent(
            cx,
            "enforcing_consecutive_gateway_failure",
            &o.enforcing_consecutive_gateway_failure,
            0,
        ),
        interval,
        base_ejection_time: base,
        max_ejection_time: max,
        max_ejection_percent: percent(cx, "max_ejection_percent", &o.max_ejection_percent, 10),
    })
}

pub(super) fn circuit_breakers(cx: &mut Ctx, p: &P, c: &raw::CircuitBreakers) -> CircuitBreakerSpec {
    cx.other(p, c, &["per_host_thresholds"]);
    let mut spec = CircuitBreakerSpec::default();
    for (tp, t) in cx.list(p, "thresholds", &c.thresholds) {
        cx.other(&tp, t, &["retry_budget", "track_remaining", "max_connection_pools"]);
        // Thresholds that never apply are still checked, so a mistake in
        // them is reported with the others.
        let applies = match cx.opt(&tp, "priority", &t.priority).map(|s| enum_name(s, &["DEFAULT", "HIGH"])) {
            None | Some("DEFAULT") => true,
            Some("HIGH") => {
                cx.warn(
                    &tp.key("priority"),
                    "HIGH priority routing is not implemented, so these thresholds never apply",
                );
                false
            }
            Some(other) => {
                cx.error(&tp.key("priority"), format!("unknown value {other:?}, expected one of DEFAULT, HIGH"));
                false
            }
        };
        let mut read = spec;
        let field = |cx: &mut Ctx, name: &str, f: &Option<raw::Field<u32>>, current: u32| {
            cx.opt(&tp, name, f).copied().unwrap_or(current)
        };
        read.max_connections = field(cx, "max_connections", &t.max_connections, read.max_connections);
        read.max_pending_requests =
            field(cx, "max_pending_requests", &t.max_pending_requests, read.max_pending_requests);
        read.max_requests = field(cx, "max_requests", &t.max_requests, read.max_requests);
        read.max_retries = field(cx, "max_retries", &t.max_retries, read.max_retries);
        if applies {
            spec = read;
        }
    }
    spec
}

/// `common_lb_config.healthy_panic_threshold.value`, percent (default 50).
pub(super) fn panic_threshold(cx: &mut Ctx, p: &P, c: &raw::CommonLbConfig) -> f64 {
    cx.other(p, c, &["update_merge_window", "ignore_new_hosts_until_first_hc"]);
    let Some(pct) = cx.opt(p, "healthy_panic_threshold", &c.healthy_panic_threshold) else {
        return 50.0;
    };
    let pp = p.key("healthy_panic_threshold");
    cx.other(&pp, pct, &[]);
    let v = cx.opt(&pp, "value", &pct.value).copied().unwrap_or(0.0);
    if !(0.0..=100.0).contains(&v) {
        cx.error(&pp.key("value"), "must be between 0 and 100");
        return 50.0;
    }
    v
}
