//! Envoy's circuit breakers for one cluster: caps on concurrent requests,
//! requests waiting for a connection, and retries. Over a cap the request
//! gets a 503 with `x-envoy-overloaded: true` instead of piling onto a
//! struggling upstream.
//!
//! Upstream connections are not counted directly (Pingora's pool has no
//! close hook); with HTTP/1.1 upstreams each request in flight holds one
//! connection, so `max_connections` caps requests in flight as well.

use super::CircuitBreakerSpec;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    Connections,
    PendingRequests,
    Requests,
    Retries,
}

#[derive(Debug, Default)]
pub struct CircuitBreaker {
    pub spec: CircuitBreakerSpec,
    requests: AtomicU32,
    pending: AtomicU32,
    retries: AtomicU32,
}

/// Releases its slot when dropped.
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<CircuitBreaker>,
    kind: Overflow,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.breaker.counter(self.kind).fetch_sub(1, Relaxed);
    }
}

impl CircuitBreaker {
    pub fn new(spec: CircuitBreakerSpec) -> Arc<Self> {
        Arc::new(Self { spec, ..Default::default() })
    }

    fn counter(&self, kind: Overflow) -> &AtomicU32 {
        match kind {
            Overflow::Connections | Overflow::Requests => &self.requests,
            Overflow::PendingRequests => &self.pending,
            Overflow::Retries => &self.retries,
        }
    }

    fn acquire(self: &Arc<Self>, kind: Overflow, limit: u32) -> Result<Permit, Overflow> {
        let counter = self.counter(kind);
        let previous = counter.fetch_add(1, Relaxed);
        if previous >= limit {
            counter.fetch_sub(1, Relaxed);
            return Err(kind);
        }
        Ok(Permit { breaker: self.clone(), kind })
    }

    /// A request going upstream (held until it completes).
    pub fn start_request(self: &Arc<Self>) -> Result<Permit, Overflow> {
        let s = &self.spec;
        let (limit, kind) = if s.max_connections < s.max_requests {
            (s.max_connections, Overflow::Connections)
        } else {
            (s.max_requests, Overflow::Requests)
        };
        self.acquire(kind, limit)
    }

    /// A TCP proxy's upstream connection (held while it is open): counted
    /// with the requests, as each of those holds a connection too.
    pub fn start_connection(self: &Arc<Self>) -> Result<Permit, Overflow> {
        self.acquire(Overflow::Connections, self.spec.max_connections)
    }

    /// A request waiting for an upstream connection.
    pub fn start_pending(self: &Arc<Self>) -> Result<Permit, Overflow> {
        self.acquire(Overflow::PendingRequests, self.spec.max_pending_requests)
    }

    /// A retry in progress.
    pub fn start_retry(self: &Arc<Self>) -> Result<Permit, Overflow> {
        self.acquire(Overflow::Retries, self.spec.max_retries)
    }

    pub fn requests(&self) -> u32 {
        self.requests.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_releases() {
        let b = CircuitBreaker::new(CircuitBreakerSpec { max_requests: 2, ..Default::default() });
        let p1 = b.start_request().unwrap();
        let _p2 = b.start_request().unwrap();
        assert_eq!(b.start_request().unwrap_err(), Overflow::Requests);
        drop(p1);
        assert!(b.start_request().is_ok());
    }

    #[test]
    fn the_smaller_of_connections_and_requests_applies() {
        let b = CircuitBreaker::new(CircuitBreakerSpec { max_connections: 1, ..Default::default() });
        let _p = b.start_request().unwrap();
        assert_eq!(b.start_request().unwrap_err(), Overflow::Connections);
        let r = CircuitBreaker::new(CircuitBreakerSpec { max_retries: 0, ..Default::default() });
        assert_eq!(r.start_retry().unwrap_err(), Overflow::Retries);
    }
}
