//! The Pingora [`ProxyHttp`] implementation: ties routing, clusters, local
//! replies and stats together for each request. Decisions live in the
//! modules it calls; this file sequences them through Pingora's phases.

mod access_log;
mod attempt;
mod context;
mod dispatch;
mod forwarding;
mod limits;
mod local_reply;

pub use context::RequestCtx;

use attempt::{per_try_timeout, shorter};

pub use local_reply::LocalReply;

use crate::config::model::{Codec, HttpConnectionManager, ServerHeader};
use crate::metrics::{ConnManagerStats, UpstreamConnectionTracer};
use crate::routing::{Action, Forward, RequestInfo, Route, RouteTable, VirtualHost};
use crate::upstream::{AttemptResult, Cluster, ClusterSet};
use async_trait::async_trait;
use http::header::{HeaderValue, SERVER};
use local_reply::ReplyHeaders;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Connect failures are retried on other hosts at least this many times,
/// whatever the route's retry policy: the request never reached the host.
const MIN_CONNECT_RETRIES: u32 = 3;
/// Retries of an idempotent request reset by its upstream, without a retry policy.
const IDEMPOTENT_RESET_RETRIES: u32 = 2;
/// How long an idle pooled upstream connection is kept.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A listener as the proxy sees it at request time.
pub struct ListenerRuntime {
    pub name: String,
    pub address: SocketAddr,
    pub tls: bool,
    pub hcm: HttpConnectionManager,
    pub stats: Arc<ConnManagerStats>,
    /// `connection_limit`: open connections at most.
    pub max_connections: Option<u64>,
}

/// The proxy application shared by every listener.
pub struct Proxy {
    listeners: Vec<Arc<ListenerRuntime>>,
    clusters: Arc<ClusterSet>,
    hostname: String,
    /// Each listener's `server_name` as a header value, built once: inserting
    /// the `&str` would copy it into a new value on every response.
    server_values: Vec<Option<HeaderValue>>,
}

impl Proxy {
    pub fn new(listeners: Vec<Arc<ListenerRuntime>>, clusters: Arc<ClusterSet>) -> Self {
        let hostname =
            std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        let server_values = listeners.iter().map(|l| HeaderValue::from_str(&l.hcm.server_name).ok()).collect();
        Self { listeners, clusters, hostname, server_values }
    }

    /// The listener a connection arrived on, by its local address.
    fn listener_index(&self, session: &Session) -> usize {
        if self.listeners.len() == 1 {
            return 0;
        }
        let Some(local) = session.server_addr().and_then(|a| a.as_inet()).copied() else {
            return 0;
        };
        self.listeners
            .iter()
            .position(|l| l.address == local)
            .or_else(|| {
                self.listeners.iter().position(|l| l.address.port() == local.port() && l.address.ip().is_unspecified())
            })
            .unwrap_or(0)
    }

    fn listener(&self, ctx: &RequestCtx) -> &ListenerRuntime {
        &self.listeners[ctx.listener]
    }

    /// The `server` header value of the request's listener.
    fn server_value(&self, ctx: &RequestCtx, hcm: &HttpConnectionManager) -> Result<HeaderValue> {
        match self.server_values.get(ctx.listener) {
            Some(Some(v)) => Ok(v.clone()),
            _ => HeaderValue::from_str(&hcm.server_name)
                .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "invalid server_name", e)),
        }
    }

    fn route<'a>(&'a self, ctx: &RequestCtx) -> Option<(&'a RouteTable, &'a VirtualHost, &'a Route)> {
        let table = &*self.listener(ctx).hcm.routes;
        let (v, r) = ctx.route?;
        let vh = table.virtual_hosts.get(v)?;
        Some((table, vh, vh.routes.get(r)?))
    }

    fn forward<'a>(&'a self, ctx: &RequestCtx) -> Option<&'a Forward> {
        match &self.route(ctx)?.2.action {
            Action::Forward(f) => Some(f),
            _ => None,
        }
    }

    fn cluster(&self, ctx: &RequestCtx) -> Option<&Arc<Cluster>> {
        self.clusters.get(ctx.cluster?)
    }

    async fn reply(&self, session: &mut Session, ctx: &mut RequestCtx, reply: LocalReply) -> Result<()> {
        let hcm = &self.listener(ctx).hcm;
        let server = (hcm.server_header != ServerHeader::PassThrough).then_some(hcm.server_name.as_str());
        let request_id = ctx.request_id.as_ref().filter(|_| hcm.always_set_request_id_in_response);
        let result = local_reply::send(session, &reply, &ReplyHeaders { server, request_id }).await;
        ctx.reply = Some(reply);
        result
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {
        // Pingora's default adds a response compression module, disabled,
        // that still builds its state and runs its filters on every request.
        // Envoy compresses only with a compressor filter, which we do not have.
    }

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.listener = self.listener_index(session);
        ctx.client_addr = session.client_addr().and_then(|a| a.as_inet()).copied();
        let listener = self.listeners[ctx.listener].clone();
        listener.stats.downstream_rq_active.fetch_add(1, Relaxed);
        if listener.hcm.codec == Codec::Http2 && !session.is_http2() {
            self.reply(session, ctx, LocalReply::BadRequest).await?;
            return Ok(true);
        }
        if let Some(reply) = limits::check_request(session.req_header(), &listener.hcm) {
            self.reply(session, ctx, reply).await?;
            return Ok(true);
        }
        ctx.request_id = forwarding::request_id(session.req_header(), &listener.hcm);
        forwarding::edge_headers(
            session.req_header_mut(),
            &listener.hcm,
            ctx.client_addr.map(|a| a.ip()),
            listener.tls,
            ctx.request_id.as_ref(),
        )?;
        match self.route_request(session, ctx) {
            Some(reply) => {
                self.reply(session, ctx, reply).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let cluster = self
            .cluster(ctx)
            .cloned()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request has no cluster"))?;
        let timeout = match self.attempt_timeout(ctx, session.is_upgrade_req()) {
            Ok(t) => t,
            Err(()) => {
                ctx.last_failure = Some(LocalReply::Timeout);
                return Err(Error::explain(ErrorType::HTTPStatus(504), "route timeout passed before an attempt"));
            }
        };
        if std::mem::take(&mut ctx.backoff) {
            if let Some(p) = self.forward(ctx).and_then(|f| f.retry_policy.as_ref()) {
                tokio::time::sleep(limits::retry_backoff(p.backoff_base, p.backoff_max, ctx.retries)).await;
            }
        }
        if ctx.request_permit.is_none() {
            match cluster.breaker.start_request() {
                Ok(p) => ctx.request_permit = Some(p),
                Err(kind) => return Err(self.overflow(ctx, &cluster, kind)),
            }
        }
        match cluster.breaker.start_pending() {
            Ok(p) => ctx.pending_permit = Some(p),
            Err(kind) => return Err(self.overflow(ctx, &cluster, kind)),
        }
        let key: &[u8] = ctx.hash_key.as_deref().unwrap_or(&[]);
        let Some(host) = cluster.select(key, &ctx.tried) else {
            if ctx.last_failure.is_none() {
                cluster.stats.upstream_cx_none_healthy.fetch_add(1, Relaxed);
                ctx.last_failure = Some(LocalReply::NoHealthyUpstream);
            }
            return Err(Error::explain(ErrorType::HTTPStatus(503), "no healthy upstream"));
        };
        ctx.attempts += 1;
        ctx.active = Some(host.start_request());
        ctx.host = Some(host.clone());

        let tls = cluster.spec.tls.as_ref();
        let sni = tls.and_then(|t| t.sni.clone()).unwrap_or_default();
        let mut peer = HttpPeer::new(host.addr, tls.is_some(), sni);
        peer.options.connection_timeout = Some(cluster.spec.connect_timeout);
        peer.options.total_connection_timeout = Some(cluster.spec.connect_timeout);
        peer.options.read_timeout = timeout;
        peer.options.write_timeout = timeout;
        peer.options.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
        // Counts the connection's open and close (cx_total/active/destroy), pooled or not.
        peer.options.tracer = Some(UpstreamConnectionTracer::tracer(&cluster.stats, &host));
        if let Some(tls) = tls {
            // Envoy verifies upstream certificates only with a validation context.
            peer.options.verify_cert = tls.trusted_ca.is_some();
            peer.options.verify_hostname = tls.trusted_ca.is_some() && tls.sni.is_some();
            peer.options.ca = cluster.upstream_ca();
        }
        ctx.upstream_start = Some(Instant::now());
        Ok(Box::new(peer))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // No longer waiting for a connection.
        ctx.pending_permit = None;
        // New connections are counted by the peer's `UpstreamConnectionTracer`.
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // The buffer filter's limit, for bodies that did not declare their length.
        if let (Some(max), Some(chunk)) = (self.listener(ctx).hcm.max_request_bytes, body.as_ref()) {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > u64::from(max) {
                ctx.last_failure = Some(LocalReply::PayloadTooLarge);
                let mut e = Error::explain(ErrorType::HTTPStatus(413), "request body over max_request_bytes");
                e.as_down();
                return Err(e);
            }
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
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
        // The first attempt announces the configured timeout; retries what is left of it.
        let expected = if ctx.attempts <= 1 {
            self.forward(ctx).and_then(|f| shorter(f.timeout, per_try_timeout(f)))
        } else {
            self.attempt_timeout(ctx, false).ok().flatten()
        };
        forwarding::rewrite_upstream(upstream, &route.matcher, forward, host, expected)?;
        if !(route.headers.is_empty() && vh.headers.is_empty() && table.headers.is_empty()) {
            let listener = self.listener(ctx);
            let downstream = session.req_header();
            let info = RequestInfo {
                client_addr: ctx.client_addr,
                local_addr: Some(listener.address),
                protocol: if session.is_http2() { "HTTP/2" } else { "HTTP/1.1" },
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

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if resp.status.is_informational() {
            return Ok(());
        }
        ctx.upstream_time = ctx.upstream_start.map(|s| s.elapsed());
        let status = resp.status.as_u16();
        if let (Some(c), Some(h)) = (self.cluster(ctx), &ctx.host) {
            c.record_attempt(h, AttemptResult::Status(status));
        }
        let Some(policy) = self.forward(ctx).and_then(|f| f.retry_policy.as_ref()) else {
            return Ok(());
        };
        if policy.retries_status(status)
            && ctx.retries < policy.num_retries
            && !ctx.deadline_passed()
            && !session.as_ref().retry_buffer_truncated()
            && self.take_retry_permit(ctx)
        {
            ctx.retrying_status = true;
            ctx.backoff = true;
            if let Some(h) = &ctx.host {
                if policy.avoid_previous_hosts {
                    ctx.tried.push(h.addr);
                }
            }
            debug!(status, attempt = ctx.attempts, "retrying on response status");
            return Err(Error::explain(ErrorType::HTTPStatus(status), "retriable response status"));
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let listener = self.listener(ctx);
        let hcm = &listener.hcm;
        if let Some(t) = ctx.upstream_time {
            resp.insert_header(forwarding::X_UPSTREAM_SERVICE_TIME, t.as_millis().to_string())?;
        }
        match hcm.server_header {
            ServerHeader::Overwrite => resp.insert_header(SERVER, self.server_value(ctx, hcm)?)?,
            ServerHeader::AppendIfAbsent if !resp.headers.contains_key(SERVER) => {
                resp.insert_header(SERVER, self.server_value(ctx, hcm)?)?
            }
            _ => {}
        }
        if hcm.always_set_request_id_in_response {
            if let Some(id) = &ctx.request_id {
                resp.insert_header(forwarding::X_REQUEST_ID, id.clone())?;
            }
        }
        if let Some((table, vh, route)) = self.route(ctx) {
            if !(route.headers.is_empty() && vh.headers.is_empty() && table.headers.is_empty()) {
                let info = RequestInfo {
                    client_addr: ctx.client_addr,
                    local_addr: Some(listener.address),
                    protocol: "HTTP/1.1",
                    hostname: &self.hostname,
                    request: None,
                };
                route.headers.apply_response(resp, &info);
                vh.headers.apply_response(resp, &info);
                table.headers.apply_response(resp, &info);
            }
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let timed_out = matches!(e.etype(), ErrorType::ConnectTimedout);
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
            ctx.tried.push(h.addr);
        }
        let budget = self.retry_budget(ctx).max(MIN_CONNECT_RETRIES);
        let another_host = self.cluster(ctx).is_some_and(|c| c.has_host_outside(&ctx.tried));
        let retry = another_host && ctx.retries < budget && !ctx.deadline_passed();
        warn!(upstream = %peer, error = %e, retry, "upstream connect failed");
        ctx.last_failure = Some(LocalReply::ConnectFailure { retried: ctx.retries > 0 });
        if retry {
            self.record_retry(ctx);
        }
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        if std::mem::take(&mut ctx.retrying_status) {
            self.record_retry(ctx);
            e.set_retry(true);
            return e;
        }
        let timed_out = matches!(e.etype(), ErrorType::ReadTimedout | ErrorType::WriteTimedout);
        if e.esource() == &ErrorSource::Upstream {
            if let (Some(c), Some(h)) = (self.cluster(ctx), &ctx.host) {
                c.record_attempt(h, AttemptResult::LocalFailure);
            }
        }
        let started = session.response_written().is_some();
        let policy = self.forward(ctx).and_then(|f| f.retry_policy.as_ref());
        let may_retry = !started && !session.as_ref().retry_buffer_truncated() && !ctx.deadline_passed();
        let retry = match policy {
            Some(p) if may_retry && ctx.retries < p.num_retries => {
                let on = &p.retry_on;
                let wanted = if timed_out {
                    on.server_error || on.gateway_error
                } else {
                    on.server_error || on.reset || (client_reused && on.refused_stream)
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
                let idempotent = session.req_header().method.is_idempotent();
                idempotent
                    && may_retry
                    && !timed_out
                    && ctx.retries < IDEMPOTENT_RESET_RETRIES
                    && e.esource() == &ErrorSource::Upstream
            }
        };
        if timed_out {
            if let Some(c) = self.cluster(ctx) {
                c.stats.upstream_rq_timeout.fetch_add(1, Relaxed);
            }
            if let Some(h) = &ctx.host {
                h.stats.rq_timeout.fetch_add(1, Relaxed);
            }
        }
        ctx.last_failure =
            Some(if timed_out { LocalReply::Timeout } else { LocalReply::UpstreamReset { retried: ctx.retries > 0 } });
        if retry {
            if let Some(h) = &ctx.host {
                if policy.is_none_or(|p| p.avoid_previous_hosts) {
                    ctx.tried.push(h.addr);
                }
            }
            self.record_retry(ctx);
        }
        debug!(upstream = %peer, error = %e, retry, client_reused, "upstream request failed");
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let reply = match e.esource() {
            _ if matches!(e.etype(), ErrorType::HTTPStatus(413)) => Some(LocalReply::PayloadTooLarge),
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => None,
                _ => Some(LocalReply::BadRequest),
            },
            _ => Some(ctx.last_failure.take().unwrap_or(match e.etype() {
                ErrorType::HTTPStatus(504) => LocalReply::Timeout,
                ErrorType::HTTPStatus(503) => LocalReply::NoHealthyUpstream,
                _ => LocalReply::UpstreamReset { retried: ctx.retries > 0 },
            })),
        };
        let Some(reply) = reply else {
            return FailToProxy { error_code: 0, can_reuse_downstream: false };
        };
        if session.response_written().is_some() {
            // Headers already went out: the only signal left is closing the connection.
            return FailToProxy { error_code: 0, can_reuse_downstream: false };
        }
        let code = reply.status().as_u16();
        // Pingora closes the downstream connection after a failed proxy
        // attempt; say so, or the client would reuse a closing connection.
        session.set_keepalive(None);
        if let Err(err) = self.reply(session, ctx, reply).await {
            debug!(error = %err, "failed to send local reply");
        }
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        // The access log line and our own warnings carry the outcome with fields.
        true
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        _error: &Error,
        _context: pingora_proxy::ProxyWarnLogContext,
    ) -> bool {
        true
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        self.record_completion(session, e, ctx);
    }
}
