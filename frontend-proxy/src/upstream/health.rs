//! Active health checking with Envoy's rules, on Pingora's HTTP and TCP
//! checkers:
//! - a new host of a health-checked cluster is unhealthy until it passes once;
//! - an HTTP response outside `expected_statuses` fails the host at once;
//! - network errors and timeouts fail it after `unhealthy_threshold` in a row;
//! - an unhealthy host recovers after `healthy_threshold` passes in a row.

use super::host::Host;
use super::{HealthCheckKind, HealthCheckSpec, UpstreamTls};
use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_error::{Error, ErrorType};
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::Backend;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

const UNEXPECTED_STATUS: &str = "unexpected health check status";

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Pass,
    /// The host answered, wrongly: fails at once.
    Rejected(String),
    /// No (timely) answer: counts toward `unhealthy_threshold`.
    Unreachable(String),
}

pub struct ActiveHealthCheck {
    pub spec: HealthCheckSpec,
    checker: Box<dyn HealthCheck + Send + Sync>,
}

impl ActiveHealthCheck {
    pub fn new(spec: HealthCheckSpec, cluster: &str, tls: Option<&UpstreamTls>) -> Self {
        let checker: Box<dyn HealthCheck + Send + Sync> = match &spec.kind {
            HealthCheckKind::Tcp => {
                let mut tcp = TcpHealthCheck::new();
                tcp.peer_template.options.connection_timeout = Some(spec.timeout);
                tcp.peer_template.options.total_connection_timeout = Some(spec.timeout);
                tcp
            }
            HealthCheckKind::Http { path, host, expected } => {
                // Envoy's default Host header is the cluster name.
                let authority = host.clone().unwrap_or_else(|| cluster.to_string());
                let mut http = HttpHealthCheck::new(&authority, tls.is_some());
                if let Some(t) = tls {
                    http.peer_template.sni = t.sni.clone().unwrap_or_default();
                    http.peer_template.options.verify_cert = false;
                    http.peer_template.options.verify_hostname = false;
                }
                if let Ok(mut req) = RequestHeader::build("GET", path.as_bytes(), None) {
                    let _ = req.insert_header("host", authority.as_str());
                    let _ = req.insert_header("user-agent", "Envoy/HC");
                    http.req = req;
                }
                let opts = &mut http.peer_template.options;
                opts.connection_timeout = Some(spec.timeout);
                opts.total_connection_timeout = Some(spec.timeout);
                opts.read_timeout = Some(spec.timeout);
                opts.write_timeout = Some(spec.timeout);
                let expected = expected.clone();
                http.validator = Some(Box::new(move |resp| {
                    let status = resp.status.as_u16();
                    if expected.iter().any(|(s, e)| (*s..*e).contains(&status)) {
                        Ok(())
                    } else {
                        Error::e_explain(ErrorType::CustomCode(UNEXPECTED_STATUS, status), "health check")
                    }
                }));
                Box::new(http)
            }
        };
        Self { spec, checker }
    }

    /// Probes one host, bounded by the check's timeout.
    pub async fn probe(&self, host: &Host) -> Probe {
        let mut addr = host.addr;
        if let Some(port) = host.health_check_port {
            addr.set_port(port);
        }
        let backend = Backend { addr: PingoraAddr::Inet(addr), weight: 1, ext: Default::default() };
        match tokio::time::timeout(self.spec.timeout, self.checker.check(&backend)).await {
            Ok(Ok(())) => Probe::Pass,
            Ok(Err(e)) => match e.etype() {
                ErrorType::CustomCode(UNEXPECTED_STATUS, status) => Probe::Rejected(format!("status {status}")),
                _ => Probe::Unreachable(e.to_string()),
            },
            Err(_) => Probe::Unreachable(format!("timed out after {:?}", self.spec.timeout)),
        }
    }

    /// Applies a probe result; returns the host's new health if it changed.
    pub fn apply(&self, host: &Host, probe: &Probe) -> Option<bool> {
        let h = &host.health;
        let was_healthy = !h.failed_active_hc.load(Relaxed) && !h.pending_active_hc.load(Relaxed);
        match probe {
            Probe::Pass => {
                h.hc_consecutive_failure.store(0, Relaxed);
                let passes = h.hc_consecutive_success.fetch_add(1, Relaxed) + 1;
                if h.pending_active_hc.swap(false, Relaxed) {
                    // A new host needs one pass, whatever healthy_threshold says.
                    h.failed_active_hc.store(false, Relaxed);
                } else if passes >= self.spec.healthy_threshold {
                    h.failed_active_hc.store(false, Relaxed);
                }
            }
            Probe::Rejected(_) => {
                h.hc_consecutive_success.store(0, Relaxed);
                h.hc_consecutive_failure.fetch_add(1, Relaxed);
                h.failed_active_hc.store(true, Relaxed);
                h.pending_active_hc.store(false, Relaxed);
            }
            Probe::Unreachable(_) => {
                h.hc_consecutive_success.store(0, Relaxed);
                let fails = h.hc_consecutive_failure.fetch_add(1, Relaxed) + 1;
                if fails >= self.spec.unhealthy_threshold || h.pending_active_hc.load(Relaxed) {
                    h.failed_active_hc.store(true, Relaxed);
                    h.pending_active_hc.store(false, Relaxed);
                }
            }
        }
        let healthy = !h.failed_active_hc.load(Relaxed) && !h.pending_active_hc.load(Relaxed);
        (healthy != was_healthy).then_some(healthy)
    }

    /// How long to wait before the next round.
    pub fn next_interval(&self, any_unhealthy: bool, had_traffic: bool) -> Duration {
        if !had_traffic {
            self.spec.no_traffic_interval
        } else if any_unhealthy {
            self.spec.unhealthy_interval
        } else {
            self.spec.interval
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(unhealthy: u32, healthy: u32) -> ActiveHealthCheck {
        ActiveHealthCheck::new(
            HealthCheckSpec {
                timeout: Duration::from_secs(1),
                interval: Duration::from_secs(1),
                unhealthy_interval: Duration::from_secs(1),
                no_traffic_interval: Duration::from_secs(60),
                unhealthy_threshold: unhealthy,
                healthy_threshold: healthy,
                kind: HealthCheckKind::Tcp,
            },
            "c",
            None,
        )
    }

    fn host(checked: bool) -> std::sync::Arc<Host> {
        Host::new("127.0.0.1:1".parse().unwrap(), None, 1, checked, None)
    }

    #[test]
    fn new_hosts_wait_for_their_first_pass() {
        let hc = checker(3, 3);
        let h = host(true);
        assert!(!h.is_healthy());
        assert_eq!(hc.apply(&h, &Probe::Pass), Some(true), "one pass is enough for a new host");
        assert!(h.is_healthy());
    }

    #[test]
    fn rejection_fails_at_once_network_errors_need_the_threshold() {
        let hc = checker(3, 2);
        let h = host(false);
        assert_eq!(hc.apply(&h, &Probe::Unreachable("x".into())), None);
        assert_eq!(hc.apply(&h, &Probe::Unreachable("x".into())), None);
        assert_eq!(hc.apply(&h, &Probe::Unreachable("x".into())), Some(false));
        assert_eq!(h.health_flags(), "/failed_active_hc");
        assert_eq!(hc.apply(&h, &Probe::Pass), None, "needs healthy_threshold passes");
        assert_eq!(hc.apply(&h, &Probe::Pass), Some(true));
        assert_eq!(hc.apply(&h, &Probe::Rejected("status 503".into())), Some(false), "a bad status fails at once");
    }

    #[test]
    fn a_new_host_that_fails_its_first_check_is_failed() {
        let hc = checker(3, 1);
        let h = host(true);
        assert_eq!(hc.apply(&h, &Probe::Unreachable("x".into())), None);
        assert_eq!(h.health_flags(), "/failed_active_hc");
    }
}
