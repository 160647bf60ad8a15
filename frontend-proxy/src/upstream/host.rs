//! One upstream endpoint (an address of a cluster): its counters and its
//! health as seen by active health checks and outlier detection.
//!
//! A [`Host`] lives as long as its address stays in the cluster: discovery
//! keeps one `Arc<Host>` per address across refreshes and hangs it on the
//! Pingora `Backend` (in `ext`), so the request path reaches the host's
//! counters and health without a lookup.

use crate::address::Address;
use crate::metrics::HostStats;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Host {
    /// An IP and port, or a pipe (STATIC clusters only).
    pub addr: Address,
    /// The DNS name it was resolved from, or `endpoint.hostname`.
    pub hostname: Option<String>,
    pub weight: u32,
    /// Health checks go to this port instead of `addr`'s.
    pub health_check_port: Option<u16>,
    pub stats: HostStats,
    pub health: HostHealth,
}

/// Health state. All atomics: written by the health checker, the outlier
/// detector and discovery, read on every host selection.
#[derive(Debug, Default)]
pub struct HostHealth {
    /// Failed active health checking (Envoy's `/failed_active_hc`).
    pub failed_active_hc: AtomicBool,
    /// New in a health-checked cluster, not checked yet (`/pending_active_hc`).
    pub pending_active_hc: AtomicBool,
    pub hc_consecutive_success: AtomicU32,
    pub hc_consecutive_failure: AtomicU32,
    /// Ejected by outlier detection (`/failed_outlier_check`).
    pub ejected: AtomicBool,
    /// Milliseconds since [`clock_epoch`] when the ejection ends.
    pub ejected_until_ms: AtomicU64,
    /// Ejections so far, the multiplier of the next ejection time.
    pub ejections: AtomicU32,
    pub consecutive_5xx: AtomicU32,
    pub consecutive_gateway_failure: AtomicU32,
    /// Gone from DNS, kept while it passes health checks (`/pending_dynamic_removal`).
    pub pending_removal: AtomicBool,
}

/// A monotonic epoch for health timestamps stored in atomics.
pub fn clock_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since [`clock_epoch`].
pub fn now_ms() -> u64 {
    clock_epoch().elapsed().as_millis() as u64
}

pub fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// What an upstream connection's tracer counts on (`metrics`).
impl AsRef<HostStats> for Host {
    fn as_ref(&self) -> &HostStats {
        &self.stats
    }
}

impl Host {
    /// `health_checked`: new hosts of a health-checked cluster start
    /// unhealthy until their first check passes, as in Envoy.
    pub fn new(
        addr: Address,
        hostname: Option<String>,
        weight: u32,
        health_checked: bool,
        health_check_port: Option<u16>,
    ) -> Arc<Self> {
        let health = HostHealth::default();
        health.pending_active_hc.store(health_checked, Relaxed);
        Arc::new(Self { addr, hostname, weight, health_check_port, stats: HostStats::default(), health })
    }

    /// Marks a request as started on this host; the guard ends it.
    pub fn start_request(self: &Arc<Self>) -> ActiveRequest {
        self.stats.rq_total.fetch_add(1, Relaxed);
        self.stats.rq_active.fetch_add(1, Relaxed);
        ActiveRequest(self.clone())
    }

    pub fn active_requests(&self) -> i64 {
        self.stats.rq_active.load(Relaxed)
    }

    /// Whether load balancing may pick this host (outside panic mode).
    pub fn is_healthy(&self) -> bool {
        let h = &self.health;
        !(h.failed_active_hc.load(Relaxed) || h.pending_active_hc.load(Relaxed) || h.ejected.load(Relaxed))
    }

    /// Envoy's `/clusters` `health_flags`: `healthy` or the failing reasons.
    pub fn health_flags(&self) -> String {
        let h = &self.health;
        let mut flags = String::new();
        for (set, name) in [
            (h.failed_active_hc.load(Relaxed), "/failed_active_hc"),
            (h.pending_active_hc.load(Relaxed), "/pending_active_hc"),
            (h.ejected.load(Relaxed), "/failed_outlier_check"),
            (h.pending_removal.load(Relaxed), "/pending_dynamic_removal"),
        ] {
            if set {
                flags.push_str(name);
            }
        }
        if flags.is_empty() {
            flags.push_str("healthy");
        }
        flags
    }
}

/// Decrements the host's active request count when dropped, whatever path
/// the request ended on.
#[derive(Debug)]
pub struct ActiveRequest(Arc<Host>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.stats.rq_active.fetch_sub(1, Relaxed);
    }
}
