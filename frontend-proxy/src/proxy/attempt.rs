//! Policy for upstream attempts: per-attempt timeouts, retry budgets and
//! circuit-breaker slots for retries, and overflow replies.

use super::context::RequestCtx;
use super::{LocalReply, Proxy};
use crate::routing::Forward;
use crate::upstream::{Cluster, Overflow};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tracing::warn;

impl Proxy {
    /// How long this attempt may wait for the upstream; `Err` if the route
    /// deadline has passed.
    pub(super) fn attempt_timeout(
        &self,
        ctx: &RequestCtx,
        upgrade: bool,
        now: Instant,
    ) -> std::result::Result<Option<Duration>, ()> {
        let forward = self.forward(ctx);
        if upgrade {
            // A WebSocket lives past the route timeout; the stream idle timeout bounds it.
            return Ok(ctx.stream_idle);
        }
        let remaining = match ctx.deadline {
            Some(d) => match d.checked_duration_since(now) {
                Some(r) if !r.is_zero() => Some(r),
                _ => return Err(()),
            },
            None => None,
        };
        Ok(shorter(remaining, forward.and_then(per_try_timeout)))
    }

    pub(super) fn retry_budget(&self, ctx: &RequestCtx) -> u32 {
        self.forward(ctx).and_then(|f| f.retry_policy.as_ref()).map(|p| p.num_retries).unwrap_or(0)
    }

    /// A circuit-breaker slot for a policy retry; `false` (and counted) when
    /// `max_retries` retries are already in flight.
    pub(super) fn take_retry_permit(&self, ctx: &mut RequestCtx) -> bool {
        let Some(c) = self.cluster(ctx) else { return false };
        match c.breaker.start_retry() {
            Ok(p) => {
                ctx.retry_permit = Some(p);
                true
            }
            Err(_) => {
                c.stats.upstream_rq_retry_overflow.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// Counts a circuit-breaker overflow; the reply is 503 with `x-envoy-overloaded`.
    pub(super) fn overflow(&self, ctx: &mut RequestCtx, cluster: &Cluster, kind: Overflow) {
        let counter = match kind {
            Overflow::Connections => &cluster.stats.upstream_cx_overflow,
            Overflow::PendingRequests | Overflow::Requests => &cluster.stats.upstream_rq_pending_overflow,
            Overflow::Retries => &cluster.stats.upstream_rq_retry_overflow,
        };
        counter.fetch_add(1, Relaxed);
        warn!(cluster = %cluster.name(), ?kind, "circuit breaker open");
        ctx.last_failure = Some(LocalReply::Overflow);
    }

    pub(super) fn record_retry(&self, ctx: &mut RequestCtx) {
        ctx.retries += 1;
        if let Some(c) = self.cluster(ctx) {
            c.stats.upstream_rq_retry.fetch_add(1, Relaxed);
        }
    }
}

/// The route's `per_try_timeout`, if it has a retry policy with one.
pub(super) fn per_try_timeout(forward: &Forward) -> Option<Duration> {
    forward.retry_policy.as_ref().and_then(|p| p.per_try_timeout)
}

/// The shorter of two optional timeouts, or the earlier of two optional
/// deadlines (`None` means no limit).
pub(crate) fn shorter<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
