//! Upstream attempts, whichever HTTP engine makes them: each attempt's
//! start (back-off, circuit-breaker slots, host, timeouts), the retry
//! decision after it fails or answers, retry budgets and overflow replies.

use super::context::RequestCtx;
use super::{limits, LocalReply, Proxy, IDEMPOTENT_RESET_RETRIES, MIN_CONNECT_RETRIES};
use crate::routing::Forward;
use crate::upstream::{AttemptResult, Cluster, Host, Overflow};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Why an upstream attempt could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The route timeout ran out before the attempt (504).
    Timeout,
    /// A circuit breaker is open (503).
    Overflow,
    /// The cluster has no host to offer (503).
    NoHealthyUpstream,
}

/// The host an attempt goes to, and how long it may wait for it.
pub struct AttemptStart {
    pub cluster: Arc<Cluster>,
    pub host: Arc<Host>,
    /// Read/write timeout of this attempt (`None`: no limit).
    pub timeout: Option<Duration>,
    /// The stream idle timeout, if it is not already `timeout`.
    pub idle: Option<Duration>,
    /// When the attempt started (`timeout` runs from here).
    pub started: Instant,
}

impl AttemptStart {
    /// The timeout for each upstream read or write, and whether it is the
    /// stream idle timeout (shorter than what is left of the route's).
    pub fn io_timeout(&self) -> (Option<Duration>, bool) {
        match (self.timeout, self.idle) {
            (Some(t), Some(i)) if i < t => (Some(i), true),
            (None, Some(i)) => (Some(i), true),
            (t, _) => (t, false),
        }
    }
}

/// How an upstream attempt failed after the connection was made.
#[derive(Debug, Clone, Copy)]
pub struct AttemptFailure {
    pub timed_out: bool,
    /// The upstream's response broke HTTP (answered with 502).
    pub protocol_error: bool,
    /// The upstream (not the client) closed, reset or timed out.
    pub from_upstream: bool,
    /// Response headers already went to the client.
    pub response_started: bool,
    /// The request body is no longer fully buffered, so it cannot be resent.
    pub body_truncated: bool,
    pub idempotent: bool,
    /// The attempt ran on a pooled (reused) upstream connection.
    pub reused_connection: bool,
}

impl Proxy {
    /// Starts an upstream attempt: waits out a retry back-off, takes the
    /// circuit-breaker slots and picks a host. Sets `ctx.last_failure` when
    /// refusing.
    pub(super) async fn begin_attempt(
        &self,
        ctx: &mut RequestCtx,
        upgrade: bool,
    ) -> std::result::Result<AttemptStart, Refused> {
        let Some(cluster) = self.cluster(ctx).cloned() else {
            ctx.last_failure = Some(LocalReply::NoHealthyUpstream);
            return Err(Refused::NoHealthyUpstream);
        };
        let mut now = Instant::now();
        let Ok(timeout) = self.attempt_timeout(ctx, upgrade, now) else {
            ctx.last_failure = Some(LocalReply::Timeout);
            return Err(Refused::Timeout);
        };
        if std::mem::take(&mut ctx.backoff) {
            if let Some(p) = self.forward(ctx).and_then(|f| f.retry_policy.as_ref()) {
                tokio::time::sleep(limits::retry_backoff(p.backoff_base, p.backoff_max, ctx.retries)).await;
                now = Instant::now();
            }
        }
        if ctx.request_permit.is_none() {
            match cluster.breaker.start_request() {
                Ok(p) => ctx.request_permit = Some(p),
                Err(kind) => {
                    self.overflow(ctx, &cluster, kind);
                    return Err(Refused::Overflow);
                }
            }
        }
        match cluster.breaker.start_pending() {
            Ok(p) => ctx.pending_permit = Some(p),
            Err(kind) => {
                self.overflow(ctx, &cluster, kind);
                return Err(Refused::Overflow);
            }
        }
        let key: &[u8] = ctx.hash_key.as_deref().unwrap_or(&[]);
        let Some(host) = cluster.select(key, &ctx.tried) else {
            if ctx.last_failure.is_none() {
                cluster.stats.upstream_cx_none_healthy.fetch_add(1, Relaxed);
                ctx.last_failure = Some(LocalReply::NoHealthyUpstream);
            }
            return Err(Refused::NoHealthyUpstream);
        };
        ctx.attempts += 1;
        ctx.active = Some(host.start_request());
        ctx.host = Some(host.clone());
        ctx.upstream_start = Some(now);
        let idle = if upgrade { None } else { ctx.stream_idle };
        Ok(AttemptStart { cluster, host, timeout, idle, started: now })
    }

    /// Records a failed connect and decides whether to try another host.
    pub(super) fn connect_failed(&self, ctx: &mut RequestCtx, timed_out: bool) -> bool {
        ctx.pending_permit = None;
        if let Some(c) = self.cluster(ctx) {
            c.stats.upstream_cx_connect_fail.fetch_add(1, Relaxed);
            if timed_out {
                c.stats.upstream_cx_connect_timeout.fetch_add(1, Relaxed);
            }
            if let Some(h) = &ctx.host {
                c.record_attempt(h, AttemptResult::LocalFailure);
            }
        }
        if let Some(h) = &ctx.host {
            h.stats.cx_connect_fail.fetch_add(1, Relaxed);
            ctx.tried.push(h.addr.clone());
        }
        let budget = self.retry_budget(ctx).max(MIN_CONNECT_RETRIES);
        let another_host = self.cluster(ctx).is_some_and(|c| c.has_host_outside(&ctx.tried));
        let retry = another_host && ctx.retries < budget && !ctx.deadline_passed();
        ctx.last_failure = Some(LocalReply::ConnectFailure { retried: ctx.retries > 0 });
        if retry {
            self.record_retry(ctx);
        }
        retry
    }

    /// Records an attempt that failed after connecting (reset, close,
    /// timeout) and decides whether to retry it.
    pub(super) fn attempt_failed(&self, ctx: &mut RequestCtx, f: AttemptFailure) -> bool {
        if f.timed_out && ctx.stream_deadline_passed() {
            // The stream's own limit, not the upstream's failure: not retried.
            self.max_duration_reached(ctx);
            return false;
        }
        if f.from_upstream {
            if let (Some(c), Some(h)) = (self.cluster(ctx), &ctx.host) {
                c.record_attempt(h, AttemptResult::LocalFailure);
            }
        }
        let policy = self.forward(ctx).and_then(|fw| fw.retry_policy.as_ref());
        let may_retry = !f.response_started && !f.body_truncated && !ctx.deadline_passed();
        let retry = match policy {
            Some(p) if may_retry && ctx.retries < p.num_retries => {
                let on = &p.retry_on;
                let wanted = if f.timed_out {
                    on.server_error || on.gateway_error
                } else {
                    on.server_error || on.reset || (f.reused_connection && on.refused_stream)
                };
                wanted && self.take_retry_permit(ctx) && {
                    ctx.backoff = true;
                    true
                }
            }
            Some(_) => false,
            // Beyond Envoy's default: an idempotent request whose upstream
            // closed or reset before answering (replicas killed or scaled
            // away) is retried on other hosts, twice at most.
            None => {
                f.idempotent && may_retry && !f.timed_out && ctx.retries < IDEMPOTENT_RESET_RETRIES && f.from_upstream
            }
        };
        if f.timed_out {
            if let Some(c) = self.cluster(ctx) {
                c.stats.upstream_rq_timeout.fetch_add(1, Relaxed);
            }
            if let Some(h) = &ctx.host {
                h.stats.rq_timeout.fetch_add(1, Relaxed);
            }
        }
        let retried = ctx.retries > 0;
        ctx.last_failure = Some(match f {
            AttemptFailure { timed_out: true, .. } => LocalReply::Timeout,
            AttemptFailure { protocol_error: true, .. } => LocalReply::UpstreamProtocolError { retried },
            _ => LocalReply::UpstreamReset { retried },
        });
        if retry {
            if let Some(h) = &ctx.host {
                if policy.is_none_or(|p| p.avoid_previous_hosts) {
                    ctx.tried.push(h.addr.clone());
                }
            }
            self.record_retry(ctx);
        }
        retry
    }

    /// The upstream sent final response headers: records the attempt and
    /// decides whether the status asks for a retry (the caller then records
    /// it with [`Proxy::record_retry`]).
    pub(super) fn upstream_answered(&self, ctx: &mut RequestCtx, status: u16, body_truncated: bool) -> bool {
        ctx.upstream_time = ctx.upstream_start.map(|s| s.elapsed());
        if let (Some(c), Some(h)) = (self.cluster(ctx), &ctx.host) {
            c.record_attempt(h, AttemptResult::Status(status));
        }
        let Some(policy) = self.forward(ctx).and_then(|f| f.retry_policy.as_ref()) else {
            return false;
        };
        if policy.retries_status(status)
            && ctx.retries < policy.num_retries
            && !ctx.deadline_passed()
            && !body_truncated
            && self.take_retry_permit(ctx)
        {
            ctx.backoff = true;
            if let Some(h) = &ctx.host {
                if policy.avoid_previous_hosts {
                    ctx.tried.push(h.addr.clone());
                }
            }
            debug!(status, attempt = ctx.attempts, "retrying on response status");
            return true;
        }
        false
    }

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
