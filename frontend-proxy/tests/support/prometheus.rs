//! The admin's Prometheus exposition as a test reads it, and `promtool`
//! to check it as Prometheus would.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// `name{labels}` → value, from the Prometheus text format.
pub struct Exposition {
    pub text: String,
    samples: HashMap<String, f64>,
}

impl Exposition {
    pub fn parse(text: String) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_string(), value.parse().ok()?))
            })
            .collect();
        Self { text, samples }
    }

    /// The value of one series, spelled exactly as exposed.
    pub fn value(&self, series: &str) -> f64 {
        match self.samples.get(series) {
            Some(v) => *v,
            None => panic!("no series {series} in\n{}", self.text),
        }
    }

    /// Every `(series, value)` of a metric name.
    pub fn family(&self, name: &str) -> Vec<(&str, f64)> {
        self.samples.iter().filter(|(s, _)| s.split('{').next() == Some(name)).map(|(s, v)| (s.as_str(), *v)).collect()
    }

    pub fn has_line(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }
}

/// Lint rules Envoy's own names break (`envoy_cluster_upstream_rq` is a
/// counter without `_total`; `envoy_cluster_membership_total` is a gauge
/// with it). Renaming would break every dashboard written for Envoy.
/// Runs `promtool check metrics` and requires a clean result: no parse
/// error and no lint.
pub fn promtool_check(exposition: &str) {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("promtool not found: install the Debian package `prometheus` (apt-get install prometheus)")
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child.stdin.take().expect("promtool stdin").write_all(exposition.as_bytes()).expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "promtool check metrics failed:\n{report}");
}
