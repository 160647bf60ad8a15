//! What happens to a request, whichever HTTP engine carries it: admission
//! (limits, request id, edge headers, routing), the stream's own timeouts,
//! the headers the proxy adds both ways, and the completion record. Each
//! upstream attempt's start and the retry decisions after it are in
//! `attempt`.
//!
//! The Pingora `ProxyHttp` phases (`proxy.rs`), the native HTTP/1 engine
//! (`h1`) and the HTTP/2 streams (`h2`) all call these, so they cannot
//! drift apart.

use super::attempt::{per_try_timeout, shorter, Refused};
use super::context::{RequestCtx, StreamTimeout};
use super::dispatch::authority;
use super::{forwarding, framing, hop_by_hop, limits, path, target, LocalReply, Proxy};
use crate::config::model::{Codec, Http10};
use crate::routing::{Action, HostRewrite, RequestInfo};
use pingora_error::Result;
use pingora_http::RequestHeader;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tracing::debug;

/// What the engine knows about a finished request.
pub struct Completion<'a> {
    /// `None` for a request refused before it had a head.
    pub request: Option<&'a RequestHeader>,
    /// Status written to the client; 0 if none was.
    pub status: u16,
    pub http2: bool,
    pub upstream_body_bytes: u64,
    pub request_body_bytes: u64,
    /// The error kind that ended the request, for the access log.
    pub error: Option<&'a str>,
}

impl Proxy {
    /// Everything between a complete request header and the first upstream
    /// attempt. `Some(reply)` when the proxy answers itself. `ctx.listener`
    /// and `ctx.client_addr` must be set; counts the request as active.
    pub(super) fn admit(
        &self,
        req: &mut RequestHeader,
        http2: bool,
        upgrade: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<LocalReply>> {
        let listener = &self.listeners[ctx.listener];
        listener.stats.downstream_rq_active.fetch_add(1, Relaxed);
        ctx.grpc = super::grpc::is_grpc(req);
        // Envoy's codec refuses these (and counts a protocol error).
        if listener.hcm.codec == Codec::Http2 && !http2 {
            listener.stats.downstream_cx_protocol_error.fetch_add(1, Relaxed);
            return Ok(Some(LocalReply::BadRequest));
        }
        if ctx.target_fragment {
            listener.stats.downstream_cx_protocol_error.fetch_add(1, Relaxed);
            return Ok(Some(LocalReply::BadRequest));
        }
        if let Some(reply) = request_checks(req, http2) {
            listener.stats.downstream_cx_protocol_error.fetch_add(1, Relaxed);
            return Ok(Some(reply));
        }
        let underscores = if http2 { &listener.stats.http2_underscores } else { &listener.stats.http1_underscores };
        match limits::underscore_headers(req, listener.hcm.headers_with_underscores) {
            Ok(0) => {}
            Ok(dropped) => {
                underscores.dropped.fetch_add(dropped, Relaxed);
                ctx.underscores_dropped = dropped;
            }
            Err(reply) => {
                // Envoy's codec refuses the request: a protocol error.
                underscores.rejected.fetch_add(1, Relaxed);
                listener.stats.downstream_cx_protocol_error.fetch_add(1, Relaxed);
                return Ok(Some(reply));
            }
        }
        if let Some(reply) = limits::check_request(req, &listener.hcm) {
            if matches!(reply, LocalReply::HeadersTooLarge) {
                listener.stats.downstream_cx_protocol_error.fetch_add(1, Relaxed);
            }
            return Ok(Some(reply));
        }
        // What the connection manager does first, as Envoy: HTTP/1.0 is
        // refused or given a Host, then the path is normalized, before
        // anything (edge headers, routing) reads it. Both HTTP/1 engines
        // come here; the native one hands HTTP/1.0 to Pingora's before.
        if let Some(reply) = http10(req, http2, &listener.hcm.http10) {
            if matches!(reply, LocalReply::UpgradeRequired) {
                // Envoy's HTTP/1 codec refuses it: a protocol error.
                listener.stats.downstream_cx_protocol_error.fetch_add(1, Relaxed);
            }
            return Ok(Some(reply));
        }
        if let Some(reply) = path::apply(req, &listener.hcm.path, ctx.grpc) {
            let counter = match reply {
                LocalReply::NormalizedPathRedirect { .. } => {
                    &listener.stats.downstream_rq_redirected_with_normalized_path
                }
                _ => &listener.stats.downstream_rq_failed_path_normalization,
            };
            counter.fetch_add(1, Relaxed);
            return Ok(Some(reply));
        }
        let client_ip = ctx.client_addr.map(|a| a.ip());
        let client_cert = forwarding::ClientCert::of(ctx.tls_digest.as_deref());
        ctx.request_id = forwarding::edge_headers(req, &listener.hcm, client_ip, listener.tls, client_cert)?;
        // Before routing: a route's header matchers and hash policy must not
        // see what a client may not send, as in Envoy.
        internal_only_headers(req, &listener.hcm.routes.internal_only_headers);
        let reply = self.route_request(req, upgrade, ctx);
        ctx.stream_idle = match self.forward(ctx).and_then(|f| f.idle_timeout) {
            Some(t) => (!t.is_zero()).then_some(t),
            None => listener.hcm.stream_idle_timeout,
        };
        ctx.request_deadline = listener.hcm.request_timeout.map(|t| ctx.start + t);
        let max_duration = match self.forward(ctx).and_then(|f| f.max_stream_duration) {
            Some(t) => (!t.is_zero()).then_some(t),
            None => listener.hcm.max_stream_duration,
        };
        ctx.stream_deadline = max_duration.map(|t| ctx.start + t);
        Ok(reply)
    }

    /// Whether the request, admitted by the native HTTP/1 engine, must be
    /// served by Pingora's instead: its cluster speaks HTTP/2 upstream.
    pub(super) fn needs_pingora(&self, ctx: &RequestCtx) -> bool {
        self.cluster(ctx).is_some_and(|c| c.spec.http.codec.h2_for_http1_client())
    }

    /// Takes back what [`Self::admit`] counted, for a request handed to the
    /// other engine, which admits it again.
    pub(super) fn withdraw(&self, ctx: &RequestCtx) {
        let listener = &self.listeners[ctx.listener];
        listener.stats.downstream_rq_active.fetch_sub(1, Relaxed);
        listener.stats.http1_underscores.dropped.fetch_sub(ctx.underscores_dropped, Relaxed);
    }

    /// Records a request ended by a downstream-side timer (stream idle or
    /// `request_timeout`); returns the reply to send if the response has
    /// not started.
    pub(super) fn stream_timed_out(&self, ctx: &mut RequestCtx, which: StreamTimeout) -> LocalReply {
        let stats = &self.listener(ctx).stats;
        match which {
            StreamTimeout::Idle => stats.downstream_rq_idle_timeout.fetch_add(1, Relaxed),
            StreamTimeout::Request => stats.downstream_rq_timeout.fetch_add(1, Relaxed),
            StreamTimeout::Headers => stats.downstream_rq_header_timeout.fetch_add(1, Relaxed),
            StreamTimeout::MaxDuration => stats.downstream_rq_max_duration_reached.fetch_add(1, Relaxed),
        };
        debug!(?which, "stream timed out");
        ctx.last_failure = Some(which.reply());
        which.reply()
    }

    /// Records a request ended by `max_stream_duration` (Envoy's
    /// `downstream_rq_max_duration_reached`); returns the reply to send if
    /// the response has not started (408 `downstream duration timeout`).
    pub(super) fn max_duration_reached(&self, ctx: &mut RequestCtx) -> LocalReply {
        self.listener(ctx).stats.downstream_rq_max_duration_reached.fetch_add(1, Relaxed);
        debug!("max stream duration reached");
        ctx.last_failure = Some(LocalReply::MaxStreamDuration);
        LocalReply::MaxStreamDuration
    }

    /// Completes a request turned away before it had a head to route, once
    /// its local reply (`status`, 0 if unsent) is out: malformed (400) or
    /// over the header limits (431), both protocol errors, or a head that
    /// stopped arriving (408, counted by [`Self::stream_timed_out`]). As in
    /// Envoy, it is a request like any other in the stats and access log.
    pub(super) fn head_rejected(&self, ctx: &mut RequestCtx, status: u16, protocol_error: bool) {
        let stats = &self.listener(ctx).stats;
        if protocol_error {
            stats.downstream_cx_protocol_error.fetch_add(1, Relaxed);
        }
        // `complete` ends an active request; this one never reached `admit`.
        stats.downstream_rq_active.fetch_add(1, Relaxed);
        let done = Completion {
            request: None,
            status,
            http2: false,
            upstream_body_bytes: 0,
            request_body_bytes: 0,
            error: Some(if protocol_error { "protocol_error" } else { "request_head_timeout" }),
        };
        self.complete(&done, ctx);
    }

    /// The request header as the upstream sees it: path and host rewrites,
    /// the expected timeout, and the configured header edits.
    pub(super) fn upstream_headers(
        &self,
        upstream: &mut RequestHeader,
        downstream: &RequestHeader,
        http2: bool,
        ctx: &RequestCtx,
    ) -> Result<()> {
        let Some((table, vh, route)) = self.route(ctx) else {
            return Ok(());
        };
        let Action::Forward(forward) = &route.action else {
            return Ok(());
        };
        let Some(host) = ctx.host.as_ref() else {
            return Ok(());
        };
        let expected = self.expected_timeout(ctx);
        let attempt = vh.attempt_count_upstream.then_some(ctx.attempts);
        forwarding::rewrite_upstream(upstream, &route.matcher, forward, host, expected, attempt)?;
        if !(route.headers.is_empty() && vh.headers.is_empty() && table.headers.is_empty()) {
            let listener = self.listener(ctx);
            let info = RequestInfo {
                client_addr: ctx.client_addr,
                local_addr: Some(&listener.address),
                protocol: if http2 { "HTTP/2" } else { "HTTP/1.1" },
                hostname: &self.hostname,
                request: Some(downstream),
            };
            // Most specific first; the route configuration's edits win.
            route.headers.apply_request(upstream, &info);
            vh.headers.apply_request(upstream, &info);
            table.headers.apply_request(upstream, &info);
        }
        Ok(())
    }

    /// `x-envoy-expected-rq-timeout-ms` for this attempt: the first one
    /// announces the configured timeout; retries what is left of it. None
    /// (the field is removed) when the router's `suppress_envoy_headers`
    /// says so.
    pub(super) fn expected_timeout(&self, ctx: &RequestCtx) -> Option<Duration> {
        if self.listener(ctx).hcm.suppress_envoy_headers {
            return None;
        }
        let forward = self.forward(ctx)?;
        if ctx.attempts <= 1 {
            shorter(ctx.route_timeout, per_try_timeout(forward))
        } else {
            self.attempt_timeout(ctx, false, Instant::now()).ok().flatten()
        }
    }

    /// Whether the upstream request is the downstream one as it stands, plus
    /// the expected timeout: no path or host rewrite, no header edits.
    pub(super) fn forwards_request_unchanged(&self, ctx: &RequestCtx) -> bool {
        let Some((table, vh, route)) = self.route(ctx) else { return false };
        let Action::Forward(f) = &route.action else { return false };
        f.prefix_rewrite.is_none()
            && f.regex_rewrite.is_none()
            && matches!(f.host_rewrite, HostRewrite::Keep)
            && !vh.attempt_count_upstream
            && route.headers.request_is_empty()
            && vh.headers.request_is_empty()
            && table.headers.request_is_empty()
    }

    /// The reply to send when the request failed upstream for good.
    pub(super) fn final_failure(&self, ctx: &mut RequestCtx, refused: Option<Refused>) -> LocalReply {
        ctx.last_failure.take().unwrap_or(match refused {
            Some(Refused::Timeout) => LocalReply::Timeout,
            Some(Refused::Overflow) => LocalReply::Overflow,
            Some(Refused::NoHealthyUpstream) => LocalReply::NoHealthyUpstream,
            None => LocalReply::UpstreamReset { retried: ctx.retries > 0 },
        })
    }

    /// Records a finished request in the stats and writes its line to the
    /// listener's access logs.
    pub(super) fn complete(&self, done: &Completion<'_>, ctx: &mut RequestCtx) {
        let now = Instant::now();
        let elapsed = now - ctx.start;
        let status = done.status;
        let listener = self.listener(ctx);
        let stats = &listener.stats;
        stats.downstream_rq_active.fetch_sub(1, Relaxed);
        stats.downstream_rq_total.fetch_add(1, Relaxed);
        if done.http2 {
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
            // A local reply to gRPC is written as 200: the cluster's stats
            // count what it stands for, as Envoy's router does.
            let upstream_status = match &ctx.reply {
                Some(r) if r.is_upstream_failure() => r.status().as_u16(),
                _ => status,
            };
            c.stats.upstream_rq.record(upstream_status);
            // As Envoy: only requests the upstream answered have an upstream time.
            if let (Some(start), Some(_)) = (ctx.upstream_start, ctx.upstream_time) {
                c.stats.upstream_rq_time.record(now - start);
            }
            if ctx.retries > 0 && (200..500).contains(&status) {
                c.stats.upstream_rq_retry_success.fetch_add(1, Relaxed);
            }
            c.stats.upstream_cx_rx_bytes_total.fetch_add(done.upstream_body_bytes, Relaxed);
            c.stats.upstream_cx_tx_bytes_total.fetch_add(done.request_body_bytes, Relaxed);
        }
        if let Some(h) = &ctx.host {
            let counter = if (200..500).contains(&status) { &h.stats.rq_success } else { &h.stats.rq_error };
            counter.fetch_add(1, Relaxed);
        }
        ctx.active = None;

        self.write_access_logs(done, ctx, elapsed);
        // For developers (`--log-level debug`); access logs are what the
        // configuration's `access_log` asks for.
        let req = done.request;
        debug!(
            target: "frontend_proxy::access",
            method = req.map(|r| r.method.as_str()).unwrap_or("-"),
            path = req.map(|r| r.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")).unwrap_or("-"),
            authority = req.and_then(authority).unwrap_or("-"),
            status,
            listener = %listener.name,
            cluster = cluster.map(|c| c.name()).unwrap_or("-"),
            upstream = %ctx.host.as_ref().map(|h| h.addr.to_string()).unwrap_or_else(|| "-".into()),
            attempts = ctx.attempts,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            request_id = ctx.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
            client = %ctx.client_addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
            local_reply = ctx.reply.is_some(),
            error = done.error.unwrap_or("-"),
            "access"
        );
    }
}

/// Envoy removes `internal_only_headers` from requests that are not
/// internal. Every client of an edge proxy is external: the names go from
/// every request, whatever it says of itself (a client's own
/// `x-envoy-internal: true` is not trusted).
fn internal_only_headers(req: &mut RequestHeader, names: &[http::HeaderName]) {
    for name in names {
        req.remove_header(name);
    }
}

/// `accept_http_10` and `default_host_for_http_10`: 426 to an HTTP/1.0
/// request unless accepted; an accepted one without Host gets the default
/// one, or 400 when there is none (Envoy's connection manager). An empty
/// Host is a Host.
fn http10(req: &mut RequestHeader, http2: bool, http10: &Http10) -> Option<LocalReply> {
    if http2 || req.version != http::Version::HTTP_10 {
        return None;
    }
    if !http10.accept {
        return Some(LocalReply::UpgradeRequired);
    }
    if req.headers.contains_key(http::header::HOST) {
        return None;
    }
    match &http10.default_host {
        Some(host) => req.insert_header(http::header::HOST, host.clone()).err().map(|_| LocalReply::BadRequest),
        None => Some(LocalReply::MissingHost),
    }
}

/// The rules a request head is held to before anything routes on it,
/// whichever engine parsed it (and the fuzzing facade): fields named in
/// `Connection` go, framing (`proxy::framing`) and target
/// (`proxy::target`) are checked. `Some(reply)` refuses the request.
pub(crate) fn request_checks(req: &mut RequestHeader, http2: bool) -> Option<LocalReply> {
    if !http2 && !hop_by_hop::strip_connection_named(req) {
        return Some(LocalReply::BadRequest);
    }
    framing::check_request(req, http2).or_else(|| target::check(req, http2))
}

#[cfg(test)]
mod tests;
