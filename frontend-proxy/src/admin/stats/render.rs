//! `/stats` renderings: Envoy's text form (`name: value`, histograms as
//! quantiles estimated from their buckets) and its JSON form.

use super::{Stat, Value};
use crate::metrics::{HistogramSnapshot, HISTOGRAM_BUCKETS_MS};
use serde_json::{json, Value as Json};
use std::fmt::Write as _;

/// The quantiles Envoy reports for histograms in `/stats`, in percent.
pub const QUANTILES: [f64; 10] = [0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 100.0];

/// Estimates a quantile from cumulative buckets, interpolating linearly
/// inside the bucket (as Prometheus' `histogram_quantile` does).
pub fn quantile(h: &HistogramSnapshot, q: f64) -> Option<f64> {
    if h.count == 0 {
        return None;
    }
    let rank = (q * h.count as f64).max(f64::MIN_POSITIVE);
    let mut lower = (0.0, 0u64);
    for (bound, cumulative) in HISTOGRAM_BUCKETS_MS.iter().zip(&h.cumulative) {
        if *cumulative as f64 >= rank {
            let in_bucket = (cumulative - lower.1) as f64;
            let fraction = if in_bucket > 0.0 { (rank - lower.1 as f64) / in_bucket } else { 1.0 };
            return Some(lower.0 + (bound - lower.0) * fraction);
        }
        lower = (*bound, *cumulative);
    }
    // Above the largest bound: report that bound.
    Some(lower.0)
}

/// Envoy's `/stats` text: `name: value` lines, histograms last.
pub fn render_text(stats: &[Stat]) -> String {
    let mut out = String::new();
    let (histograms, scalars): (Vec<&Stat>, Vec<&Stat>) =
        stats.iter().partition(|s| matches!(s.value, Value::Histogram(_)));
    for s in scalars {
        match s.value {
            Value::Counter(n) => {
                let _ = writeln!(out, "{}: {n}", s.envoy_name());
            }
            Value::Gauge(n) => {
                let _ = writeln!(out, "{}: {n}", s.envoy_name());
            }
            Value::Histogram(_) => {}
        }
    }
    for s in histograms {
        let Value::Histogram(h) = &s.value else { continue };
        let _ = write!(out, "{}: ", s.envoy_name());
        if h.count == 0 {
            out.push_str("No recorded values\n");
            continue;
        }
        let parts: Vec<String> = QUANTILES
            .iter()
            .map(|q| format!("P{q}(nan,{})", round(quantile(h, q / 100.0).unwrap_or(f64::NAN))))
            .collect();
        out.push_str(&parts.join(" "));
        out.push('\n');
    }
    out
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Envoy's `/stats?format=json`.
pub fn render_json(stats: &[Stat]) -> Json {
    let mut entries: Vec<Json> = Vec::new();
    let mut computed = Vec::new();
    for s in stats {
        match &s.value {
            Value::Counter(n) => entries.push(json!({ "name": s.envoy_name(), "value": n })),
            Value::Gauge(n) => entries.push(json!({ "name": s.envoy_name(), "value": n })),
            Value::Histogram(h) => {
                let values: Vec<Json> = QUANTILES
                    .iter()
                    .map(|q| json!({ "interval": null, "cumulative": quantile(h, q / 100.0).map(round) }))
                    .collect();
                computed.push(json!({ "name": s.envoy_name(), "values": values }));
            }
        }
    }
    if !computed.is_empty() {
        entries.push(json!({ "histograms": { "supported_quantiles": QUANTILES, "computed_quantiles": computed } }));
    }
    json!({ "stats": entries })
}

#[cfg(test)]
mod tests {
    use super::super::Scope;
    use super::*;
    use crate::metrics::Histogram;
    use std::time::Duration;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let h = Histogram::default();
        for _ in 0..4 {
            h.record(Duration::from_millis(3)); // 1 < x <= 5 bucket
        }
        let s = h.snapshot();
        assert_eq!(quantile(&s, 0.5), Some(3.0));
        assert_eq!(quantile(&s, 1.0), Some(5.0));
        assert_eq!(quantile(&HistogramSnapshot { cumulative: vec![0; 19], count: 0, sum_ms: 0.0 }, 0.5), None);
        let text = render_text(&[Stat { scope: Scope::Server, name: "t".into(), value: Value::Histogram(s) }]);
        assert!(text.starts_with("server.t: P0(nan,1) P25(nan,2) P50(nan,3)"), "{text}");
    }
}
