//! Active health checking with Envoy's rules, on Pingora's HTTP and TCP
//! checkers (`tls`: our own for TLS clusters, which check the handshake
//! first):
//! - a new host of a health-checked cluster is unhealthy until it passes once;
//! - an HTTP response outside `expected_statuses` fails the host at once;
//! - network errors and timeouts fail it after `unhealthy_threshold` in a row;
//! - an unhealthy host recovers after `healthy_threshold` passes in a row;
//! - each host has its own schedule: the wait after a check depends on its
//!   result, on whether it moved the host towards or across a threshold, and
//!   on whether the cluster has had traffic ([`ActiveHealthCheck::next_interval`]).

use super::host::{ms, Host};
use super::{HealthCheckKind, HealthCheckSpec};
use crate::address::{Address, PipeConnector};
use pingora_core::connectors::L4Connect;
use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType};
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::Backend;
use rand::Rng;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tls::{TlsHttpCheck, TlsTcpCheck};

mod tls;

pub use tls::TlsProbe;

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
    /// The same check to pipe hosts, which connect through [`PipeConnector`].
    pipe_checker: Box<dyn HealthCheck + Send + Sync>,
}

impl ActiveHealthCheck {
    /// `tls`: a TLS cluster's; an HTTP check connects as requests do
    /// (client certificate, validation).
    pub fn new(spec: HealthCheckSpec, cluster: &str, tls: Option<TlsProbe>) -> Self {
        let checker = Self::checker(&spec, cluster, tls.clone(), None);
        let pipe_checker = Self::checker(&spec, cluster, tls, Some(Arc::new(PipeConnector)));
        Self { spec, checker, pipe_checker }
    }

    /// `l4`: how it connects, when not as Pingora does (pipes).
    fn checker(
        spec: &HealthCheckSpec,
        cluster: &str,
        tls: Option<TlsProbe>,
        l4: Option<Arc<PipeConnector>>,
    ) -> Box<dyn HealthCheck + Send + Sync> {
        let l4 = l4.map(|c| c as Arc<dyn L4Connect + Send + Sync>);
        match &spec.kind {
            HealthCheckKind::Tcp => match tls {
                // Envoy connects through the cluster's transport socket, so
                // the check passes once the TLS handshake is done and the
                // certificate checks hold.
                Some(tls) => {
                    let mut peer = HttpPeer::new("0.0.0.0:1", true, String::new());
                    peer.options.connection_timeout = Some(spec.timeout);
                    peer.options.total_connection_timeout = Some(spec.timeout);
                    peer.options.custom_l4 = l4;
                    tls.material.apply(&tls.tls, &mut peer);
                    Box::new(TlsTcpCheck::new(peer, tls))
                }
                None => {
                    let mut tcp = TcpHealthCheck::new();
                    tcp.peer_template.options.connection_timeout = Some(spec.timeout);
                    tcp.peer_template.options.total_connection_timeout = Some(spec.timeout);
                    tcp.peer_template.options.custom_l4 = l4;
                    tcp
                }
            },
            HealthCheckKind::Http { path, host, expected } => {
                // Envoy's default Host header is the cluster name.
                let authority = host.clone().unwrap_or_else(|| cluster.to_string());
                let mut http = HttpHealthCheck::new(&authority, tls.is_some());
                if let Some(t) = &tls {
                    t.material.apply(&t.tls, &mut http.peer_template);
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
                opts.custom_l4 = l4;
                let expected = expected.clone();
                http.validator = Some(Box::new(move |resp| {
                    let status = resp.status.as_u16();
                    if expected.iter().any(|(s, e)| (*s..*e).contains(&status)) {
                        Ok(())
                    } else {
                        Error::e_explain(ErrorType::CustomCode(UNEXPECTED_STATUS, status), "health check")
                    }
                }));
                match tls {
                    Some(tls) => Box::new(TlsHttpCheck::new(http, tls)),
                    None => Box::new(http),
                }
            }
        }
    }

    /// Probes one host, bounded by the check's timeout.
    pub async fn probe(&self, host: &Host) -> Probe {
        let (addr, checker) = match &host.addr {
            Address::Ip(a) => {
                let mut addr = *a;
                if let Some(port) = host.health_check_port {
                    addr.set_port(port);
                }
                (PingoraAddr::Inet(addr), &self.checker)
            }
            Address::Pipe(p) => match p.pingora_addr() {
                Ok(addr) => (addr, &self.pipe_checker),
                Err(e) => return Probe::Unreachable(e.to_string()),
            },
        };
        let backend = Backend { addr, weight: 1, ext: Default::default() };
        match tokio::time::timeout(self.spec.timeout, checker.check(&backend)).await {
            Ok(Ok(())) => Probe::Pass,
            Ok(Err(e)) => match e.etype() {
                ErrorType::CustomCode(UNEXPECTED_STATUS, status) => Probe::Rejected(format!("status {status}")),
                _ => Probe::Unreachable(e.to_string()),
            },
            Err(_) => Probe::Unreachable(format!("timed out after {:?}", self.spec.timeout)),
        }
    }

    /// Applies a probe result to the host, as Envoy's health checker
    /// session does (`handleSuccess` / `setUnhealthy`).
    pub fn apply(&self, host: &Host, probe: &Probe) -> Outcome {
        let h = &host.health;
        let was_healthy = !h.failed_active_hc.load(Relaxed) && !h.pending_active_hc.load(Relaxed);
        // A host never checked yet: its first result decides, whatever the thresholds say.
        let first_check = h.pending_active_hc.swap(false, Relaxed);
        let failed = h.failed_active_hc.load(Relaxed) || first_check;
        let transition = match probe {
            Probe::Pass => {
                h.hc_consecutive_failure.store(0, Relaxed);
                let passes = h.hc_consecutive_success.fetch_add(1, Relaxed) + 1;
                if !failed {
                    Transition::Unchanged
                } else if first_check || passes >= self.spec.healthy_threshold {
                    h.failed_active_hc.store(false, Relaxed);
                    Transition::Changed
                } else {
                    Transition::Pending
                }
            }
            Probe::Rejected(_) | Probe::Unreachable(_) => {
                h.hc_consecutive_success.store(0, Relaxed);
                let fails = h.hc_consecutive_failure.fetch_add(1, Relaxed) + 1;
                let at_once = matches!(probe, Probe::Rejected(_));
                if failed {
                    h.failed_active_hc.store(true, Relaxed);
                    // Envoy counts a first check as a change, though the host was excluded before too.
                    if first_check {
                        Transition::Changed
                    } else {
                        Transition::Unchanged
                    }
                } else if at_once || fails >= self.spec.unhealthy_threshold {
                    h.failed_active_hc.store(true, Relaxed);
                    Transition::Changed
                } else {
                    Transition::Pending
                }
            }
        };
        let healthy = !h.failed_active_hc.load(Relaxed) && !h.pending_active_hc.load(Relaxed);
        Outcome {
            passed: *probe == Probe::Pass,
            transition,
            health_changed: (healthy != was_healthy).then_some(healthy),
        }
    }

    /// How long a host waits for its next check after `outcome`: Envoy's
    /// `HealthCheckerImplBase::interval`. `had_traffic`: the cluster has
    /// ever been sent a request.
    pub fn next_interval(&self, outcome: &Outcome, had_traffic: bool) -> Duration {
        let s = &self.spec;
        let pending = outcome.transition == Transition::Pending;
        let base = match (had_traffic, outcome.passed, pending) {
            (true, false, true) => s.unhealthy_edge_interval,
            (true, false, false) => s.unhealthy_interval,
            (true, true, true) => s.healthy_edge_interval,
            (true, true, false) => s.interval,
            (false, true, false) => s.no_traffic_healthy_interval,
            (false, _, _) => s.no_traffic_interval,
        };
        self.with_jitter(base, s.interval_jitter)
    }

    /// The wait before a new host's first check: none, or a random time
    /// below `initial_jitter`.
    pub fn initial_delay(&self) -> Duration {
        if self.spec.initial_jitter.is_zero() {
            Duration::ZERO
        } else {
            self.with_jitter(Duration::ZERO, self.spec.initial_jitter)
        }
    }

    /// Envoy's `intervalWithJitter`: adds a random share below
    /// `interval_jitter_percent` of `base` and a random time below
    /// `jitter`, in whole milliseconds, and never returns zero (a zero wait
    /// would check a host in a tight loop).
    fn with_jitter(&self, base: Duration, jitter: Duration) -> Duration {
        let mut rng = rand::thread_rng();
        let base_ms = ms(base);
        let mut total = base_ms;
        let percent = u64::from(self.spec.interval_jitter_percent).saturating_mul(base_ms) / 100;
        if percent > 0 {
            total = total.saturating_add(rng.gen_range(0..percent));
        }
        let jitter_ms = ms(jitter);
        if jitter_ms > 0 {
            total = total.saturating_add(rng.gen_range(0..jitter_ms));
        }
        Duration::from_millis(total.max(1))
    }
}

/// Whether a check moved the host's health: Envoy's `HealthTransition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Unchanged,
    /// Towards a change, below the threshold that makes it.
    Pending,
    Changed,
}

/// What one check did to a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub passed: bool,
    pub transition: Transition,
    /// The host's new health, if this check changed whether it takes traffic.
    pub health_changed: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    /// Every interval distinct, so a test tells which one was chosen.
    fn spec(unhealthy: u32, healthy: u32) -> HealthCheckSpec {
        HealthCheckSpec {
            timeout: SEC,
            interval: 2 * SEC,
            unhealthy_interval: 3 * SEC,
            unhealthy_edge_interval: 4 * SEC,
            healthy_edge_interval: 5 * SEC,
            no_traffic_interval: 60 * SEC,
            no_traffic_healthy_interval: 70 * SEC,
            initial_jitter: Duration::ZERO,
            interval_jitter: Duration::ZERO,
            interval_jitter_percent: 0,
            unhealthy_threshold: unhealthy,
            healthy_threshold: healthy,
            kind: HealthCheckKind::Tcp,
        }
    }

    fn checker(unhealthy: u32, healthy: u32) -> ActiveHealthCheck {
        ActiveHealthCheck::new(spec(unhealthy, healthy), "c", None)
    }

    fn host(checked: bool) -> std::sync::Arc<Host> {
        Host::new(crate::address::Address::Ip("127.0.0.1:1".parse().unwrap()), None, 1, checked, None)
    }

    fn down() -> Probe {
        Probe::Unreachable("x".into())
    }

    #[test]
    fn new_hosts_wait_for_their_first_pass() {
        let hc = checker(3, 3);
        let h = host(true);
        assert!(!h.is_healthy());
        let o = hc.apply(&h, &Probe::Pass);
        assert_eq!(o.health_changed, Some(true), "one pass is enough for a new host");
        assert_eq!(o.transition, Transition::Changed);
        assert!(h.is_healthy());
    }

    #[test]
    fn rejection_fails_at_once_network_errors_need_the_threshold() {
        let hc = checker(3, 2);
        let h = host(false);
        assert_eq!(hc.apply(&h, &down()).health_changed, None);
        assert_eq!(hc.apply(&h, &down()).health_changed, None);
        assert_eq!(hc.apply(&h, &down()).health_changed, Some(false));
        assert_eq!(h.health_flags(), "/failed_active_hc");
        assert_eq!(hc.apply(&h, &Probe::Pass).health_changed, None, "needs healthy_threshold passes");
        assert_eq!(hc.apply(&h, &Probe::Pass).health_changed, Some(true));
        let rejected = hc.apply(&h, &Probe::Rejected("status 503".into()));
        assert_eq!(rejected.health_changed, Some(false), "a bad status fails at once");
        assert_eq!(rejected.transition, Transition::Changed);
    }

    #[test]
    fn a_new_host_that_fails_its_first_check_is_failed() {
        let hc = checker(3, 1);
        let h = host(true);
        let o = hc.apply(&h, &down());
        assert_eq!(o.health_changed, None, "it was not taking traffic before either");
        assert_eq!(o.transition, Transition::Changed);
        assert_eq!(h.health_flags(), "/failed_active_hc");
    }

    /// The walk of Envoy's comment in `HealthCheckerImplBase::interval`,
    /// with traffic: each check's result and transition pick the interval.
    #[test]
    fn with_traffic_each_transition_has_its_interval() {
        let hc = checker(2, 3);
        let h = host(true);
        let next = |p: Probe| {
            let o = hc.apply(&h, &p);
            hc.next_interval(&o, true)
        };
        assert_eq!(next(down()), 3 * SEC, "first check failed: unhealthy, changed");
        assert_eq!(next(down()), 3 * SEC, "still unhealthy: unhealthy_interval");
        assert_eq!(next(Probe::Pass), 5 * SEC, "1 of 3 passes: healthy_edge_interval");
        assert_eq!(next(Probe::Pass), 5 * SEC, "2 of 3 passes: healthy_edge_interval");
        assert_eq!(next(Probe::Pass), 2 * SEC, "healthy now: interval");
        assert!(h.is_healthy());
        assert_eq!(next(Probe::Pass), 2 * SEC, "still healthy: interval");
        assert_eq!(next(down()), 4 * SEC, "1 of 2 failures: unhealthy_edge_interval");
        assert_eq!(next(Probe::Pass), 2 * SEC, "a pass resets the count: interval");
        assert_eq!(next(down()), 4 * SEC, "1 of 2 failures again");
        assert_eq!(next(down()), 3 * SEC, "unhealthy now: unhealthy_interval");
        assert!(!h.is_healthy());
        assert_eq!(next(Probe::Pass), 5 * SEC);
        assert_eq!(next(down()), 3 * SEC, "a failure restarts the passes");
        assert_eq!(next(Probe::Pass), 5 * SEC);
        assert_eq!(next(Probe::Pass), 5 * SEC);
        assert!(!h.is_healthy(), "three passes in a row are needed");
    }

    /// Without traffic, only `no_traffic_interval` and, for passes that
    /// leave the host healthy, `no_traffic_healthy_interval`.
    #[test]
    fn without_traffic_the_no_traffic_intervals_apply() {
        let hc = checker(2, 2);
        let h = host(true);
        let next = |p: Probe| {
            let o = hc.apply(&h, &p);
            hc.next_interval(&o, false)
        };
        assert_eq!(next(Probe::Pass), 70 * SEC, "healthy: no_traffic_healthy_interval");
        assert_eq!(next(Probe::Pass), 70 * SEC);
        assert_eq!(next(down()), 60 * SEC, "on the edge: no_traffic_interval");
        assert_eq!(next(down()), 60 * SEC, "unhealthy: no_traffic_interval");
        assert_eq!(next(Probe::Pass), 60 * SEC, "a pass on the edge is not healthy yet");
        assert_eq!(next(Probe::Pass), 70 * SEC, "healthy again");
    }

    #[test]
    fn jitter_adds_below_its_bounds_and_never_makes_zero() {
        let mut s = spec(1, 1);
        s.interval_jitter = Duration::from_millis(100);
        s.interval_jitter_percent = 10;
        s.initial_jitter = Duration::from_millis(50);
        let hc = ActiveHealthCheck::new(s, "c", None);
        let pass = Outcome { passed: true, transition: Transition::Unchanged, health_changed: None };
        let (mut low, mut high) = (Duration::MAX, Duration::ZERO);
        for _ in 0..2000 {
            let d = hc.next_interval(&pass, true);
            // 2 s + below 10 % of it + below 100 ms.
            assert!(d >= 2 * SEC && d < Duration::from_millis(2000 + 200 + 100), "{d:?}");
            (low, high) = (low.min(d), high.max(d));
            let first = hc.initial_delay();
            assert!(first >= Duration::from_millis(1) && first < Duration::from_millis(50), "{first:?}");
        }
        assert!(high - low > Duration::from_millis(150), "the jitter varies: {low:?}..{high:?}");
        assert_eq!(checker(1, 1).initial_delay(), Duration::ZERO, "no initial_jitter: check at once");
    }
}
