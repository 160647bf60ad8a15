//! Where a request completes: Envoy's counters for the connection manager,
//! the cluster and the host, and one access-log line via tracing.

use super::context::RequestCtx;
use super::dispatch::authority;
use super::Proxy;
use pingora_error::Error;
use pingora_proxy::Session;
use std::sync::atomic::Ordering::Relaxed;
use tracing::info;

impl Proxy {
    /// Records a finished request in the stats and writes its access-log line.
    pub(super) fn record_completion(&self, session: &Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let elapsed = ctx.start.elapsed();
        let status = session.response_written().map(|r| r.status.as_u16()).unwrap_or(0);
        let listener = self.listener(ctx);
        let stats = &listener.stats;
        stats.downstream_rq_active.fetch_sub(1, Relaxed);
        stats.downstream_rq_total.fetch_add(1, Relaxed);
        if session.is_http2() {
            stats.downstream_rq_http2_total.fetch_add(1, Relaxed);
        } else {
            stats.downstream_rq_http1_total.fetch_add(1, Relaxed);
        }
        stats.downstream_rq.record(status);
        stats.downstream_rq_time.record(elapsed);

        let cluster = self.cluster(ctx);
        let from_cluster = ctx.attempts > 0 || ctx.reply.as_ref().is_some_and(|r| r.is_upstream_failure());
        if let (Some(c), true) = (cluster, from_cluster) {
            c.stats.upstream_rq_total.fetch_add(1, Relaxed);
            c.stats.upstream_rq.record(status);
            // As Envoy: only requests the upstream answered have an upstream time.
            if let (Some(start), Some(_)) = (ctx.upstream_start, ctx.upstream_time) {
                c.stats.upstream_rq_time.record(start.elapsed());
            }
            if ctx.retries > 0 && (200..500).contains(&status) {
                c.stats.upstream_rq_retry_success.fetch_add(1, Relaxed);
            }
            c.stats.upstream_cx_rx_bytes_total.fetch_add(session.upstream_body_bytes_received() as u64, Relaxed);
            c.stats.upstream_cx_tx_bytes_total.fetch_add(session.body_bytes_read() as u64, Relaxed);
        }
        if let Some(h) = &ctx.host {
            let counter = if (200..500).contains(&status) { &h.stats.rq_success } else { &h.stats.rq_error };
            counter.fetch_add(1, Relaxed);
        }
        ctx.active = None;

        let req = session.req_header();
        info!(
            target: "frontend_proxy::access",
            method = %req.method,
            path = %req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
            authority = authority(req).unwrap_or("-"),
            status,
            listener = %listener.name,
            cluster = cluster.map(|c| c.name()).unwrap_or("-"),
            upstream = %ctx.host.as_ref().map(|h| h.addr.to_string()).unwrap_or_else(|| "-".into()),
            attempts = ctx.attempts,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            request_id = ctx.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
            client = %ctx.client_addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
            local_reply = ctx.reply.is_some(),
            error = e.map(|e| e.etype().as_str()).unwrap_or("-"),
            "access"
        );
    }
}
