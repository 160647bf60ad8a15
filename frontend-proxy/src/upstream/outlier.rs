//! Outlier detection: passive ejection of hosts whose responses keep
//! failing (Envoy's `consecutive_5xx` and `consecutive_gateway_failure`),
//! with ejection times that grow with each ejection.
//!
//! Results are recorded per upstream attempt on the request path (atomics
//! only); the cluster manager calls [`OutlierDetector::sweep`] every
//! `interval` to bring ejected hosts back.

use super::host::{ms, now_ms, Host};
use super::OutlierSpec;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use tracing::info;

/// What one upstream attempt ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    Status(u16),
    /// Connect failure, reset or timeout: a locally seen gateway failure.
    LocalFailure,
}

impl AttemptResult {
    fn is_5xx(self) -> bool {
        match self {
            AttemptResult::Status(s) => s >= 500,
            AttemptResult::LocalFailure => true,
        }
    }

    fn is_gateway_failure(self) -> bool {
        match self {
            AttemptResult::Status(s) => matches!(s, 502..=504),
            AttemptResult::LocalFailure => true,
        }
    }
}

pub struct OutlierDetector {
    pub spec: OutlierSpec,
    ejected: AtomicUsize,
    pub ejections_total: AtomicUsize,
}

impl OutlierDetector {
    pub fn new(spec: OutlierSpec) -> Self {
        Self { spec, ejected: AtomicUsize::new(0), ejections_total: AtomicUsize::new(0) }
    }

    /// Hosts ejected right now.
    pub fn ejected_count(&self) -> usize {
        self.ejected.load(Relaxed)
    }

    /// Records an attempt's result; returns true if it ejected the host.
    pub fn record(&self, host: &Host, result: AttemptResult, cluster_hosts: usize) -> bool {
        let h = &host.health;
        let five = if result.is_5xx() {
            h.consecutive_5xx.fetch_add(1, Relaxed) + 1
        } else {
            h.consecutive_5xx.store(0, Relaxed);
            0
        };
        let gateway = if result.is_gateway_failure() {
            h.consecutive_gateway_failure.fetch_add(1, Relaxed) + 1
        } else {
            h.consecutive_gateway_failure.store(0, Relaxed);
            0
        };
        let s = &self.spec;
        let by_5xx = five >= s.consecutive_5xx && enforced(s.enforcing_consecutive_5xx);
        let by_gateway = gateway >= s.consecutive_gateway_failure && enforced(s.enforcing_consecutive_gateway_failure);
        if (by_5xx || by_gateway) && self.try_eject(host, cluster_hosts) {
            info!(
                upstream = %host.addr,
                consecutive_5xx = five,
                consecutive_gateway_failure = gateway,
                ejections = h.ejections.load(Relaxed),
                "outlier detection ejected host"
            );
            return true;
        }
        false
    }

    fn try_eject(&self, host: &Host, cluster_hosts: usize) -> bool {
        let h = &host.health;
        if h.ejected.load(Relaxed) {
            return false;
        }
        // Envoy ejects at least one host whatever max_ejection_percent says.
        let ejected = self.ejected.load(Relaxed);
        if ejected > 0 && (ejected + 1) * 100 > cluster_hosts * self.spec.max_ejection_percent as usize {
            return false;
        }
        if h.ejected.swap(true, Relaxed) {
            return false;
        }
        let n = h.ejections.fetch_add(1, Relaxed) + 1;
        let duration = self.spec.base_ejection_time.saturating_mul(n).min(self.spec.max_ejection_time);
        h.ejected_until_ms.store(now_ms() + ms(duration), Relaxed);
        h.consecutive_5xx.store(0, Relaxed);
        h.consecutive_gateway_failure.store(0, Relaxed);
        self.ejected.fetch_add(1, Relaxed);
        self.ejections_total.fetch_add(1, Relaxed);
        true
    }

    /// Brings back hosts whose ejection time is over and lets the ejection
    /// multiplier of well-behaved hosts decay. Returns whether any host changed.
    pub fn sweep(&self, hosts: &[Arc<Host>]) -> bool {
        let now = now_ms();
        let mut changed = false;
        let mut ejected = 0;
        for host in hosts {
            let h = &host.health;
            if h.ejected.load(Relaxed) {
                if now >= h.ejected_until_ms.load(Relaxed) {
                    h.ejected.store(false, Relaxed);
                    changed = true;
                    info!(upstream = %host.addr, "outlier ejection ended");
                } else {
                    ejected += 1;
                }
            } else if h.ejections.load(Relaxed) > 0 {
                h.ejections.fetch_sub(1, Relaxed);
            }
        }
        self.ejected.store(ejected, Relaxed);
        changed
    }
}

fn enforced(percent: u32) -> bool {
    percent >= 100 || (percent > 0 && rand::random::<u32>() % 100 < percent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec() -> OutlierSpec {
        OutlierSpec {
            consecutive_5xx: 3,
            enforcing_consecutive_5xx: 100,
            consecutive_gateway_failure: 2,
            enforcing_consecutive_gateway_failure: 0,
            interval: Duration::from_millis(10),
            base_ejection_time: Duration::from_millis(40),
            max_ejection_time: Duration::from_secs(1),
            max_ejection_percent: 50,
        }
    }

    fn host() -> Arc<Host> {
        Host::new(crate::address::Address::Ip("127.0.0.1:1".parse().unwrap()), None, 1, false, None)
    }

    #[test]
    fn consecutive_5xx_ejects_and_a_success_resets() {
        let d = OutlierDetector::new(spec());
        let h = host();
        assert!(!d.record(&h, AttemptResult::Status(500), 4));
        assert!(!d.record(&h, AttemptResult::Status(200), 4));
        assert!(!d.record(&h, AttemptResult::Status(503), 4));
        assert!(!d.record(&h, AttemptResult::LocalFailure, 4));
        assert!(d.record(&h, AttemptResult::Status(500), 4));
        assert!(!h.is_healthy());
        assert_eq!(h.health_flags(), "/failed_outlier_check");
        assert_eq!(d.ejected_count(), 1);
    }

    #[test]
    fn gateway_failures_are_not_enforced_by_default() {
        let d = OutlierDetector::new(spec());
        let h = host();
        assert!(!d.record(&h, AttemptResult::Status(502), 4));
        assert!(!d.record(&h, AttemptResult::Status(502), 4));
        assert!(h.is_healthy());
    }

    #[test]
    fn max_ejection_percent_keeps_capacity_but_one_host_may_always_go() {
        let d = OutlierDetector::new(OutlierSpec { consecutive_5xx: 1, max_ejection_percent: 10, ..spec() });
        let (a, b) = (host(), host());
        assert!(d.record(&a, AttemptResult::Status(500), 2), "the first ejection is always allowed");
        assert!(!d.record(&b, AttemptResult::Status(500), 2), "a second would exceed 10%");
    }

    #[test]
    fn hosts_come_back_and_ejection_time_grows() {
        let d = OutlierDetector::new(OutlierSpec { consecutive_5xx: 1, ..spec() });
        let h = host();
        assert!(d.record(&h, AttemptResult::Status(500), 4));
        let first = h.health.ejected_until_ms.load(Relaxed) - now_ms();
        std::thread::sleep(Duration::from_millis(60));
        assert!(d.sweep(std::slice::from_ref(&h)));
        assert!(h.is_healthy());
        assert!(d.record(&h, AttemptResult::Status(500), 4));
        let second = h.health.ejected_until_ms.load(Relaxed) - now_ms();
        assert!(second > first + 20, "second ejection lasts longer: {first} then {second}");
    }
}
