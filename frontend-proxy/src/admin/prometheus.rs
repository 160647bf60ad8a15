//! Envoy's Prometheus exposition (`/stats/prometheus`, text format 0.0.4).
//!
//! Names follow Envoy's tag extraction: the instance part of a stat name
//! becomes a label (`cluster.<name>.` → `envoy_cluster_name`, `http.<prefix>.`
//! → `envoy_http_conn_manager_prefix`, `listener.<addr>.` →
//! `envoy_listener_address`), a trailing `_rq_<3 digits>` becomes
//! `envoy_response_code` and `_rq_<d>xx` becomes `_rq_xx` with
//! `envoy_response_code_class`; the rest is prefixed `envoy_` with
//! non-alphanumerics turned into `_`. Counters keep their names (no `_total`
//! added), so dashboards written for Envoy find the same series.
//!
//! The families are built with the `prometheus` crate (the version Pingora
//! uses) and served together with its default registry, so anything else
//! registered in the process appears on the same endpoint.

use super::stats::{Stat, Value};
use crate::metrics::HISTOGRAM_BUCKETS_MS;
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::TextEncoder;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// One Prometheus series: metric name and labels, in Envoy's label order
/// (the response code or class first, then the instance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub name: String,
    pub labels: Vec<(&'static str, String)>,
}

/// Maps an Envoy statistic to its Prometheus series.
pub fn series(stat: &Stat) -> Series {
    let (name, code) = extract_response_code(&stat.name);
    let mut labels = Vec::with_capacity(2);
    labels.extend(code);
    // A scope without a label keeps its instance in the name
    // (`sds.<name>.` as `envoy_sds_<name>_`), as Envoy's exporter does.
    let scope = match stat.scope.tag() {
        Some((label, value)) => {
            labels.push((label, value.to_string()));
            Cow::Borrowed(stat.scope.kind())
        }
        None => stat.scope.prefix(),
    };
    Series { name: sanitize(&format!("envoy_{scope}_{name}")), labels }
}

/// `upstream_rq_503` → (`upstream_rq`, code 503); `upstream_rq_5xx` →
/// (`upstream_rq_xx`, class 5); anything else unchanged.
fn extract_response_code(name: &str) -> (Cow<'_, str>, Option<(&'static str, String)>) {
    let Some(at) = name.rfind("_rq_") else { return (name.into(), None) };
    let (head, tail) = (&name[..at + 3], &name[at + 4..]);
    let bytes = tail.as_bytes();
    match bytes {
        [a, b, c] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
            (head.into(), Some(("envoy_response_code", tail.to_string())))
        }
        [a, b'x', b'x'] if a.is_ascii_digit() => {
            (format!("{head}_xx").into(), Some(("envoy_response_code_class", (*a as char).to_string())))
        }
        _ => (name.into(), None),
    }
}

/// Envoy's metric-name sanitizing: anything but `[a-zA-Z0-9_]` becomes `_`.
fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// A short `# HELP` text. Envoy prints none, but `promtool check metrics`
/// asks for one and scrapers ignore it.
fn help(name: &str, example: &Stat) -> String {
    let known = match name {
        "envoy_cluster_upstream_rq_total" => "Requests sent to the cluster",
        "envoy_cluster_upstream_rq" => "Requests completed, by response code (local replies included)",
        "envoy_cluster_upstream_rq_xx" => "Requests completed, by response code class (local replies included)",
        "envoy_cluster_upstream_rq_time" => "Upstream request time in milliseconds",
        "envoy_cluster_upstream_rq_active" => "Requests in flight to the cluster",
        "envoy_cluster_upstream_rq_timeout" => "Requests that timed out waiting for the upstream",
        "envoy_cluster_upstream_rq_retry" => "Request retries",
        "envoy_cluster_upstream_cx_total" => "Upstream connections established",
        "envoy_cluster_upstream_cx_http1_total" => "Upstream HTTP/1.1 connections established",
        "envoy_cluster_upstream_cx_http2_total" => "Upstream HTTP/2 connections established",
        "envoy_cluster_upstream_cx_active" => "Upstream connections open, busy or idle",
        "envoy_cluster_upstream_cx_destroy" => "Upstream connections closed",
        "envoy_cluster_upstream_cx_connect_fail" => "Upstream connection failures",
        "envoy_cluster_upstream_cx_rx_bytes_total" => "Response body bytes received from the upstream",
        "envoy_cluster_upstream_cx_tx_bytes_total" => "Request body bytes sent to the upstream",
        "envoy_cluster_membership_total" => "Hosts in the cluster",
        "envoy_cluster_membership_healthy" => "Healthy hosts in the cluster",
        "envoy_cluster_update_attempt" => "Endpoint discovery (DNS) refreshes attempted",
        "envoy_cluster_update_success" => "Endpoint discovery (DNS) refreshes that succeeded",
        "envoy_cluster_update_failure" => "Endpoint discovery (DNS) refreshes that failed",
        "envoy_http_downstream_rq_total" => "Requests received",
        "envoy_http_downstream_rq_xx" => "Responses sent, by response code class",
        "envoy_http_downstream_rq_time" => "Request time in milliseconds, first byte in to last byte out",
        "envoy_http_downstream_rq_active" => "Requests in progress",
        "envoy_http_downstream_cx_total" => "Downstream connections accepted",
        "envoy_http_downstream_cx_active" => "Downstream connections open",
        "envoy_server_live" => "1 while the server is live (not draining, health check not failed)",
        "envoy_server_uptime" => "Seconds since the server started",
        "envoy_server_memory_allocated" => "Bytes of anonymous resident memory (an estimate of allocated memory)",
        "envoy_server_state" => "0 live, 1 draining, 2 pre-initializing, 3 initializing",
        _ => "",
    };
    if known.is_empty() {
        let pattern = match example.scope.tag() {
            Some((label, _)) => format!("{}.<{}>.{}", example.scope.kind(), label, example.name),
            None => example.envoy_name(),
        };
        format!("Envoy statistic {pattern}")
    } else {
        known.to_string()
    }
}

fn label_pairs(labels: &[(&'static str, String)], extra: Option<(&str, String)>) -> Vec<proto::LabelPair> {
    labels
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .chain(extra.map(|(n, v)| (n.to_string(), v)))
        .map(|(n, v)| {
            let mut p = proto::LabelPair::default();
            p.set_name(n);
            p.set_value(v);
            p
        })
        .collect()
}

fn metric(series: &Series, value: &Value) -> proto::Metric {
    let mut m = proto::Metric::from_label(label_pairs(&series.labels, None));
    match value {
        Value::Counter(n) => {
            let mut c = proto::Counter::default();
            c.set_value(*n as f64);
            m.set_counter(c);
        }
        Value::Gauge(n) => {
            let mut g = proto::Gauge::default();
            g.set_value(*n as f64);
            m.set_gauge(g);
        }
        Value::Histogram(h) => {
            let buckets = HISTOGRAM_BUCKETS_MS
                .iter()
                .zip(&h.cumulative)
                .map(|(bound, count)| {
                    let mut b = proto::Bucket::default();
                    b.set_upper_bound(*bound);
                    b.set_cumulative_count(*count);
                    b
                })
                .collect();
            let mut p = proto::Histogram::default();
            p.set_bucket(buckets);
            p.set_sample_count(h.count);
            p.set_sample_sum(h.sum_ms);
            m.set_histogram(p);
        }
    }
    m
}

fn metric_type(value: &Value) -> MetricType {
    match value {
        Value::Counter(_) => MetricType::COUNTER,
        Value::Gauge(_) => MetricType::GAUGE,
        Value::Histogram(_) => MetricType::HISTOGRAM,
    }
}

/// The metric families for `stats`, sorted by name.
pub fn families(stats: &[Stat]) -> Vec<MetricFamily> {
    let mut by_name: BTreeMap<String, MetricFamily> = BTreeMap::new();
    for stat in stats {
        let s = series(stat);
        let kind = metric_type(&stat.value);
        let family = by_name.entry(s.name.clone()).or_insert_with(|| {
            let mut f = MetricFamily::default();
            f.set_name(s.name.clone());
            f.set_help(help(&s.name, stat));
            f.set_field_type(kind);
            f
        });
        // Two stats of different kinds under one name would be invalid output.
        if family.get_field_type() == kind {
            family.mut_metric().push(metric(&s, &stat.value));
        }
    }
    by_name.into_values().collect()
}

/// Renders `stats`, plus, when `with_registry`, every family of the
/// process's default `prometheus` registry whose name is not taken.
pub fn render(stats: &[Stat], with_registry: bool) -> Result<String, prometheus::Error> {
    let mut all = families(stats);
    if with_registry {
        let ours: std::collections::HashSet<String> = all.iter().map(|f| f.name().to_string()).collect();
        all.extend(prometheus::gather().into_iter().filter(|f| !ours.contains(f.name())));
        all.sort_by(|a, b| a.name().cmp(b.name()));
    }
    let mut out = String::new();
    TextEncoder::new().encode_utf8(&all, &mut out)?;
    Ok(untype_envoy_names(&out))
}

/// Envoy's names break Prometheus' naming rules in two ways: counters
/// without `_total` (`envoy_cluster_upstream_rq`) and gauges with it
/// (`envoy_cluster_membership_total`). Those families are declared
/// `untyped` (the `prometheus` crate cannot encode that type itself): every
/// name Envoy dashboards query stays, `rate()` works as before, and the
/// output passes `promtool check metrics` without a lint.
fn untype_envoy_names(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.trim_end().splitn(2, ' ');
            let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let total = name.ends_with("_total");
            if (kind == "counter" && !total) || (kind == "gauge" && total) {
                out.push_str(&format!("# TYPE {name} untyped\n"));
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::stats::Scope;
    use super::*;
    use crate::metrics::Histogram;
    use std::time::Duration;

    fn stat(scope: Scope, name: &'static str, value: Value) -> Stat {
        Stat { scope, name: name.into(), value }
    }

    fn mapped(scope: Scope, name: &'static str) -> (String, Vec<(&'static str, String)>) {
        let s = series(&stat(scope, name, Value::Counter(1)));
        (s.name, s.labels)
    }

    fn cluster() -> Scope {
        Scope::Cluster("film-service-cluster".into())
    }

    #[test]
    fn cluster_names_and_labels() {
        let name = ("envoy_cluster_name", "film-service-cluster".to_string());
        assert_eq!(
            mapped(cluster(), "upstream_rq_total"),
            ("envoy_cluster_upstream_rq_total".into(), vec![name.clone()])
        );
        assert_eq!(
            mapped(cluster(), "upstream_rq_200"),
            ("envoy_cluster_upstream_rq".into(), vec![("envoy_response_code", "200".into()), name.clone()])
        );
        assert_eq!(
            mapped(cluster(), "upstream_rq_5xx"),
            ("envoy_cluster_upstream_rq_xx".into(), vec![("envoy_response_code_class", "5".into()), name.clone()])
        );
        assert_eq!(
            mapped(cluster(), "outlier_detection.ejections_active"),
            ("envoy_cluster_outlier_detection_ejections_active".into(), vec![name])
        );
    }

    #[test]
    fn connection_manager_listener_and_server_names() {
        let prefix = ("envoy_http_conn_manager_prefix", "ingress_http".to_string());
        assert_eq!(
            mapped(Scope::Http("ingress_http".into()), "downstream_rq_2xx"),
            ("envoy_http_downstream_rq_xx".into(), vec![("envoy_response_code_class", "2".into()), prefix.clone()])
        );
        assert_eq!(
            mapped(Scope::Http("ingress_http".into()), "downstream_cx_total"),
            ("envoy_http_downstream_cx_total".into(), vec![prefix])
        );
        assert_eq!(
            mapped(
                Scope::listener(&crate::config::model::Address::Ip("0.0.0.0:8080".parse().unwrap())),
                "downstream_cx_active"
            ),
            ("envoy_listener_downstream_cx_active".into(), vec![("envoy_listener_address", "0.0.0.0_8080".into())])
        );
        assert_eq!(mapped(Scope::Server, "live"), ("envoy_server_live".into(), vec![]));
        assert_eq!(
            mapped(Scope::ClusterManager, "active_clusters"),
            ("envoy_cluster_manager_active_clusters".into(), vec![])
        );
    }

    #[test]
    fn a_secret_keeps_its_name_in_the_metric_name() {
        assert_eq!(
            mapped(Scope::Sds("server-cert".into()), "update_rejected"),
            ("envoy_sds_server_cert_update_rejected".into(), vec![])
        );
        assert_eq!(mapped(Scope::Server, "live"), ("envoy_server_live".into(), vec![]));
    }

    #[test]
    fn only_real_codes_become_labels() {
        // `rq_redirect`, `_rq_total`, 2-digit or lettered suffixes keep their names.
        assert_eq!(extract_response_code("rq_redirect"), ("rq_redirect".into(), None));
        assert_eq!(extract_response_code("upstream_rq_20"), ("upstream_rq_20".into(), None));
        assert_eq!(extract_response_code("upstream_rq_abc"), ("upstream_rq_abc".into(), None));
        assert_eq!(extract_response_code("upstream_rq_x5x").1, None);
        assert_eq!(
            sanitize("envoy_cluster_circuit_breakers.default.rq-open"),
            "envoy_cluster_circuit_breakers_default_rq_open"
        );
    }

    #[test]
    fn text_exposition() {
        let h = Histogram::default();
        h.record(Duration::from_millis(3));
        let stats = vec![
            stat(cluster(), "upstream_rq_200", Value::Counter(12)),
            stat(cluster(), "upstream_rq_404", Value::Counter(1)),
            stat(cluster(), "upstream_cx_active", Value::Gauge(2)),
            stat(cluster(), "upstream_rq_time", Value::Histogram(h.snapshot())),
        ];
        let text = render(&stats, false).unwrap();
        for line in [
            "# TYPE envoy_cluster_upstream_rq untyped",
            r#"envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="film-service-cluster"} 12"#,
            r#"envoy_cluster_upstream_rq{envoy_response_code="404",envoy_cluster_name="film-service-cluster"} 1"#,
            "# TYPE envoy_cluster_upstream_cx_active gauge",
            r#"envoy_cluster_upstream_cx_active{envoy_cluster_name="film-service-cluster"} 2"#,
            "# TYPE envoy_cluster_upstream_rq_time histogram",
            r#"envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="film-service-cluster",le="1"} 0"#,
            r#"envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="film-service-cluster",le="5"} 1"#,
            r#"envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="film-service-cluster",le="3600000"} 1"#,
            r#"envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="film-service-cluster",le="+Inf"} 1"#,
            r#"envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="film-service-cluster"} 3"#,
            r#"envoy_cluster_upstream_rq_time_count{envoy_cluster_name="film-service-cluster"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // One TYPE line per family even with several series.
        assert_eq!(text.matches("# TYPE envoy_cluster_upstream_rq untyped").count(), 1);
    }
}
