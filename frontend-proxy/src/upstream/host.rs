//! One upstream endpoint (an address of a cluster) and its counters.
//!
//! A [`Host`] lives as long as its address stays in the cluster: discovery
//! keeps one `Arc<Host>` per address across refreshes and hangs it on the
//! Pingora `Backend` (in `ext`), so the request path reaches the host's
//! counters without a lookup.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

#[derive(Debug)]
pub struct Host {
    pub addr: SocketAddr,
    /// The DNS name it was resolved from, or `endpoint.hostname`.
    pub hostname: Option<String>,
    pub weight: u32,
    pub stats: HostStats,
}

/// Counters shown by `/clusters`.
#[derive(Debug, Default)]
pub struct HostStats {
    pub rq_total: AtomicU64,
    pub rq_success: AtomicU64,
    pub rq_error: AtomicU64,
    pub rq_timeout: AtomicU64,
    pub rq_active: AtomicI64,
    pub cx_total: AtomicU64,
    pub cx_connect_fail: AtomicU64,
}

impl Host {
    pub fn new(addr: SocketAddr, hostname: Option<String>, weight: u32) -> Arc<Self> {
        Arc::new(Self {
            addr,
            hostname,
            weight,
            stats: HostStats::default(),
        })
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
