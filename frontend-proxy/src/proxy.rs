//! The Pingora [`ProxyHttp`] implementation: ties routing, clusters, local
//! replies and stats together for each request. Decisions live in the
//! modules it calls; this file sequences them through Pingora's phases.

mod access;
mod attempt;
mod context;
mod date;
mod dispatch;
mod forwarding;
mod framing;
mod grpc;
// `pub(crate)`: the fuzzing facade (`crate::fuzzing`) reaches the wire code.
pub(crate) mod h1;
mod h2;
mod hop_by_hop;
pub(crate) mod lifecycle;
mod limits;
mod local_reply;
// `pub(crate)`: the fuzzing facade checks its properties.
pub(crate) mod path;
mod response_head;
mod target;
pub mod tcp;
mod upstream_peer;

pub use context::RequestCtx;
use context::{Admitted, StreamTimeout};

use attempt::{AttemptFailure, Refused};
use lifecycle::Completion;

pub use h1::{ClientStream, Downgraded, NativeH1, Served};
pub use h2::H2Source;
pub use local_reply::LocalReply;

use crate::config::model::ServerHeader;
use crate::metrics::UpstreamCodecStat;
use crate::routing::{Action, Forward, Route, RouteTable, VirtualHost};
use crate::runtime::{self, ListenerRuntime};
use crate::upstream::{self, Cluster, ClusterSet, UpstreamCodec};
use async_trait::async_trait;
pub(crate) use attempt::shorter;
use http::header::HeaderValue;
use local_reply::ReplyHeaders;
use pingora_core::upstreams::peer::{HttpPeer, ALPN};
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};
use upstream_peer::peer;

/// Connect failures are retried on other hosts at least this many times,
/// whatever the route's retry policy: the request never reached the host.
const MIN_CONNECT_RETRIES: u32 = 3;
/// Retries of an idempotent request reset by its upstream, without a retry policy.
const IDEMPOTENT_RESET_RETRIES: u32 = 2;

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

    /// Whether an admitted, routed HTTP/2 stream goes to the native engine
    /// (`h2.rs`): its cluster speaks HTTP/1.1 (not h2, not ALPN), it is not
    /// gRPC, not CONNECT, no `Expect`, its authority has no userinfo, and
    /// it has no body or no retry policy (Pingora buffers a body to replay
    /// it). HTTP/2 has no upgrades (Pingora's session never reports one).
    fn downgrades(&self, req: &RequestHeader, body_empty: bool, ctx: &RequestCtx) -> bool {
        let (Some(forward), Some(cluster)) = (self.forward(ctx), self.cluster(ctx)) else {
            return false;
        };
        cluster.spec.http.codec == UpstreamCodec::Http1
            && !ctx.grpc
            && req.method != http::Method::CONNECT
            // Interim responses are dropped on both paths: a client waiting
            // for `100 Continue` stays with Pingora's, as HTTP/1 ones do.
            && !req.headers.contains_key(http::header::EXPECT)
            && req.uri.authority().is_some_and(|a| !a.as_str().contains('@'))
            && (forward.retry_policy.is_none() || body_empty)
    }

    /// Whether an HTTP/2 stream goes to its HTTP/2 cluster by our own
    /// stream-to-stream path (`h2/forward.rs`) rather than Pingora's
    /// `HttpProxy`: the same conditions as [`Self::downgrades`] but the
    /// cluster's codec (a cluster that lets ALPN choose stays with Pingora).
    fn forwards_h2(&self, req: &RequestHeader, body_empty: bool, ctx: &RequestCtx) -> bool {
        let (Some(forward), Some(cluster)) = (self.forward(ctx), self.cluster(ctx)) else {
            return false;
        };
        matches!(cluster.spec.http.codec, UpstreamCodec::Http2 | UpstreamCodec::Downstream)
            && req.method != http::Method::CONNECT
            && !req.headers.contains_key(http::header::EXPECT)
            && req.uri.authority().is_some_and(|a| !a.as_str().contains('@'))
            && (forward.retry_policy.is_none() || body_empty)
    }

    /// The listener a connection arrived on, by its local address.
    fn listener_index(&self, session: &Session) -> usize {
        let local = match self.listeners.len() {
            1 => None,
            _ => match session.server_addr() {
                // A pipe's (plaintext: no filter chain to choose).
                Some(pingora_core::protocols::l4::socket::SocketAddr::Unix(pipe)) => {
                    return runtime::pipe_listener_index(&self.listeners, pipe).unwrap_or(0);
                }
                other => other.and_then(|a| a.as_inet()).copied(),
            },
        };
        let index = runtime::listener_index(&self.listeners, local).unwrap_or(0);
        // A filter chain chosen for the connection serves with its own
        // connection manager.
        let chosen = session.digest().and_then(|d| d.ssl_digest.as_deref()).and_then(crate::tls::chosen_digest);
        let chosen = chosen.or_else(|| {
            // A plaintext chain: only listeners that choose chains record one.
            self.listeners[index].selection.as_ref()?;
            let local = session.server_addr().and_then(|a| a.as_inet()).copied()?;
            let peer = session.client_addr().and_then(|a| a.as_inet()).copied()?;
            runtime::Chosen::lookup(local, peer)
        });
        ListenerRuntime::serving(index, chosen)
    }

    fn listener(&self, ctx: &RequestCtx) -> &ListenerRuntime {
        &self.listeners[ctx.listener]
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

    /// The headers a local reply to this request carries.
    fn reply_headers<'a>(&'a self, ctx: &'a RequestCtx) -> ReplyHeaders<'a> {
        let hcm = &self.listener(ctx).hcm;
        let server = (hcm.server_header != ServerHeader::PassThrough).then_some(hcm.server_name.as_str());
        let request_id = ctx.request_id.as_ref().filter(|_| hcm.always_set_request_id_in_response);
        ReplyHeaders { server, request_id, grpc: ctx.grpc, overloaded_header: !hcm.suppress_envoy_headers }
    }

    /// Sends a local reply; returns the status it went out with (a gRPC
    /// request's is 200, and `local_reply_config` may change it).
    async fn reply(&self, session: &mut Session, ctx: &mut RequestCtx, reply: LocalReply) -> Result<u16> {
        if reply.is_codec_error() {
            // As Envoy (and the native engine): the connection ends after it.
            session.set_keepalive(None);
        }
        let parts = self.local_reply_parts(ctx, &reply, Some(session.req_header()), session.is_http2());
        let result = match parts {
            Ok((head, body)) => {
                if session.req_header().method != http::Method::HEAD {
                    ctx.reply_bytes = body.len() as u64;
                }
                let status = head.status.as_u16();
                local_reply::send(session, head, body).await.map(|()| status)
            }
            Err(e) => Err(e),
        };
        ctx.reply = Some(reply);
        result
    }

    /// The downstream side of the stream idle timeout and `request_timeout`,
    /// and the connection's `idle_timeout` between requests (HTTP/1; h2
    /// streams have no per-read timeout in Pingora).
    fn downstream_timeouts(&self, session: &mut Session, ctx: &RequestCtx) {
        let read = match ctx.request_deadline {
            Some(d) => shorter(ctx.stream_idle, Some(d.saturating_duration_since(Instant::now()))),
            None => ctx.stream_idle,
        };
        let stream_left = stream_left(ctx);
        session.set_read_timeout(shorter(read, stream_left));
        session.set_write_timeout(shorter(ctx.stream_idle, stream_left));
        if session.get_keepalive().is_some() {
            // Pingora counts whole seconds; 0 keeps the connection without a limit.
            let idle = self.listener(ctx).hcm.idle_timeout;
            session.set_keepalive(Some(idle.map_or(0, |d| d.as_secs_f64().ceil().max(1.0) as u64)));
        }
    }
}

impl Proxy {
    /// An admitted request Pingora's engine takes upstream: a body under a
    /// retry policy is kept to replay, and the downstream timers are set.
    fn towards_upstream(&self, session: &mut Session, ctx: &RequestCtx) {
        if self.forward(ctx).is_some_and(|f| f.retry_policy.is_some()) {
            session.enable_retry_buffering();
        }
        self.downstream_timeouts(session, ctx);
    }
}

/// What is left of `max_stream_duration`, as a timeout for the next read
/// or write (`None`: no limit). Pingora has no timer for a whole stream:
/// each read and write is bounded by what was left when it was set, and
/// each response body chunk checks the deadline (`response_body_filter`).
fn stream_left(ctx: &RequestCtx) -> Option<Duration> {
    ctx.stream_deadline.map(|d| d.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)))
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
        // Interim responses are dropped, as Envoy does and the native
        // engine does (a 100 the client asked for with `Expect` excepted);
        // an HTTP/1.0 client must never get one (RFC 9110 §15.2).
        session.as_mut().set_ignore_info_resp(true);
        if let Some(admitted) = Admitted::take(session.req_header_mut()) {
            // An HTTP/2 stream our own server (`h2.rs`) admitted and routed
            // here: what is left is the upstream side.
            *ctx = *admitted;
            self.towards_upstream(session, ctx);
            return Ok(false);
        }
        ctx.listener = self.listener_index(session);
        if let Some(max) = self.listener(ctx).hcm.max_requests_per_connection {
            // Pingora carries the count to the connection's next request
            // and answers the last with `connection: close` (HTTP/1 only,
            // the one codec this is allowed with).
            if session.get_keepalive_reuses_remaining().is_none() {
                session.set_keepalive_reuses_remaining(Some(max - 1));
            }
        }
        ctx.client_addr = session.client_addr().and_then(|a| a.as_inet()).copied();
        ctx.tls_digest = session.digest().and_then(|d| d.ssl_digest.clone());
        let (http2, upgrade) = (session.is_http2(), session.is_upgrade_req());
        ctx.target_fragment = session.as_http1().is_some_and(|h1| target::has_fragment(&h1.get_headers_raw_bytes()));
        match self.admit(session.req_header_mut(), http2, upgrade, ctx)? {
            Some(reply) => {
                self.reply(session, ctx, reply).await?;
                Ok(true)
            }
            None => {
                self.towards_upstream(session, ctx);
                Ok(false)
            }
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let start = match self.begin_attempt(ctx, session.is_upgrade_req()).await {
            Ok(start) => start,
            Err(Refused::Timeout) => {
                return Err(Error::explain(ErrorType::HTTPStatus(504), "route timeout passed before an attempt"))
            }
            Err(Refused::Overflow) => {
                return Err(Error::explain(ErrorType::HTTPStatus(503), "circuit breaker overflow"))
            }
            Err(Refused::NoHealthyUpstream) => {
                return Err(Error::explain(ErrorType::HTTPStatus(503), "no healthy upstream"))
            }
        };
        let (timeout, idle) = start.io_timeout();
        ctx.upstream_idle_binds = idle;
        Ok(Box::new(peer(&start.cluster, &start.host, shorter(timeout, stream_left(ctx)), session.is_http2())))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(cluster) = self.cluster(ctx).filter(|c| c.spec.tls.is_some()).cloned() {
            let ssl = digest.and_then(|d| d.ssl_digest.as_deref());
            if let Some(Err(why)) = cluster.spec.tls.as_ref().map(|t| t.admit(ssl, &cluster.stats)) {
                // A connect failure, before any request byte went out.
                let retry = self.connect_failed(ctx, false);
                warn!(upstream = %peer, error = %why, retry, "upstream connect failed");
                ctx.refused_connection = Some(retry);
                return Err(Error::explain(ErrorType::TLSHandshakeFailure, why.to_string()));
            }
        }
        // No longer waiting for a connection.
        ctx.pending_permit = None;
        // A new connection whose version ALPN chose: counted once the response shows it.
        ctx.count_codec = !reused && peer.options.alpn == ALPN::H2H1;
        // New connections are counted by the peer's `UpstreamConnectionTracer`.
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.stream_deadline_passed() {
            self.max_duration_reached(ctx);
            let mut e = Error::explain(ErrorType::HTTPStatus(408), "max_stream_duration passed");
            e.as_down();
            return Err(e);
        }
        if let Some(deadline) = ctx.request_deadline {
            if end_of_stream {
                // The request is in: `request_timeout` no longer applies.
                ctx.request_deadline = None;
                session.set_read_timeout(shorter(ctx.stream_idle, stream_left(ctx)));
            } else {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    self.stream_timed_out(ctx, StreamTimeout::Request);
                    let mut e = Error::explain(ErrorType::HTTPStatus(408), "request_timeout passed");
                    e.as_down();
                    return Err(e);
                }
                session.set_read_timeout(shorter(shorter(ctx.stream_idle, Some(left)), stream_left(ctx)));
            }
        }
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
        self.upstream_headers(upstream, session.req_header(), session.is_http2(), ctx)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // What Pingora's codec lets through and the native engine refuses.
        if let Err(why) = framing::check_response(resp, session.is_upgrade_req()) {
            debug!(error = why, "upstream response refused");
            let mut e = Error::explain(ErrorType::InvalidHTTPHeader, why);
            e.as_up();
            return Err(e);
        }
        if std::mem::take(&mut ctx.count_codec) {
            if let Some(c) = self.cluster(ctx) {
                let h2 = resp.version == http::Version::HTTP_2;
                c.stats.count_codec(if h2 { UpstreamCodecStat::Http2 } else { UpstreamCodecStat::Http1 });
            }
        }
        if resp.status.is_informational() {
            return Ok(());
        }
        let status = resp.status.as_u16();
        if self.upstream_answered(ctx, status, session.as_ref().retry_buffer_truncated()) {
            ctx.retrying_status = true;
            return Err(Error::explain(ErrorType::HTTPStatus(status), "retriable response status"));
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if session.is_process_shutting_down() {
            // As Envoy while draining: `connection: close`, and the connection ends after this response.
            session.set_keepalive(None);
        }
        if session.is_http2() {
            response_head::forget_case(resp);
        } else {
            // Pingora writes the upstream's version; the client speaks to us, in HTTP/1.1.
            resp.set_version(http::Version::HTTP_11);
        }
        self.downstream_headers(resp, ctx)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(c) = self.cluster(ctx) {
            upstream::count_handshake_error(&c.stats, e.etype());
        }
        let retry = self.connect_failed(ctx, matches!(e.etype(), ErrorType::ConnectTimedout));
        warn!(upstream = %peer, error = %e, retry, "upstream connect failed");
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
        if let Some(retry) = ctx.refused_connection.take() {
            // Counted as a connect failure in `connected_to_upstream`.
            e.set_retry(retry);
            return e;
        }
        if std::mem::take(&mut ctx.retrying_status) {
            self.record_retry(ctx);
            e.set_retry(true);
            return e;
        }
        let timed_out = matches!(e.etype(), ErrorType::ReadTimedout | ErrorType::WriteTimedout);
        if timed_out && ctx.stream_deadline_passed() {
            // `max_stream_duration`: the stream's own limit, not retried.
            if ctx.last_failure != Some(LocalReply::MaxStreamDuration) {
                self.max_duration_reached(ctx);
            }
            e.set_retry(false);
            return e;
        }
        if timed_out && (e.esource() == &ErrorSource::Downstream || ctx.upstream_idle_binds) {
            // The client's side timed out, or the stream idle timeout (not
            // the route's) did: not the upstream's failure, and not retried.
            // A downstream timeout gets its reply in `fail_to_proxy`.
            if e.esource() == &ErrorSource::Upstream {
                self.stream_timed_out(ctx, StreamTimeout::Idle);
            }
            e.set_retry(false);
            return e;
        }
        let from_upstream = e.esource() == &ErrorSource::Upstream;
        let failure = AttemptFailure {
            timed_out,
            // Pingora's codec refused the upstream's response.
            protocol_error: from_upstream && matches!(e.etype(), ErrorType::InvalidHTTPHeader),
            from_upstream,
            response_started: session.response_written().is_some(),
            body_truncated: session.as_ref().retry_buffer_truncated(),
            idempotent: session.req_header().method.is_idempotent(),
            reused_connection: client_reused,
        };
        let retry = self.attempt_failed(ctx, failure);
        debug!(upstream = %peer, error = %e, retry, client_reused, "upstream request failed");
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let reply = match e.esource() {
            _ if matches!(e.etype(), ErrorType::HTTPStatus(413)) => Some(LocalReply::PayloadTooLarge),
            _ if matches!(e.etype(), ErrorType::HTTPStatus(408)) => ctx.last_failure.take(),
            _ if ctx.last_failure == Some(LocalReply::MaxStreamDuration) => ctx.last_failure.take(),
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => None,
                ErrorType::ReadTimedout | ErrorType::WriteTimedout if ctx.stream_deadline_passed() => {
                    Some(self.max_duration_reached(ctx))
                }
                ErrorType::ReadTimedout => {
                    let which =
                        if ctx.request_deadline_passed() { StreamTimeout::Request } else { StreamTimeout::Idle };
                    Some(self.stream_timed_out(ctx, which))
                }
                ErrorType::WriteTimedout => {
                    self.stream_timed_out(ctx, StreamTimeout::Idle);
                    None
                }
                _ => Some(LocalReply::BadRequest),
            },
            _ => Some(self.final_failure(
                ctx,
                match e.etype() {
                    ErrorType::HTTPStatus(504) => Some(Refused::Timeout),
                    ErrorType::HTTPStatus(503) => Some(Refused::NoHealthyUpstream),
                    _ => None,
                },
            )),
        };
        let Some(reply) = reply else {
            return FailToProxy { error_code: 0, can_reuse_downstream: false };
        };
        if session.response_written().is_some() {
            // Headers already went out: the only signal left is closing the connection.
            return FailToProxy { error_code: 0, can_reuse_downstream: false };
        }
        // Pingora closes the downstream connection after a failed proxy
        // attempt; say so, or the client would reuse a closing connection.
        session.set_keepalive(None);
        let code = match self.reply(session, ctx, reply).await {
            Ok(status) => status,
            Err(err) => {
                debug!(error = %err, "failed to send local reply");
                0
            }
        };
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if !end_of_stream && ctx.stream_deadline_passed() && ctx.reply.is_none() {
            // The response outlived `max_stream_duration`: the stream ends
            // (the connection closes, as the response has started).
            self.max_duration_reached(ctx);
            return Err(Error::explain(ErrorType::HTTPStatus(408), "max_stream_duration passed"));
        }
        Ok(None)
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
        if let Some(admitted) = Admitted::take(session.req_header_mut()) {
            // A stream our HTTP/2 server admitted that ended before
            // `request_filter`: it is counted under its own context.
            *ctx = *admitted;
        }
        let done = Completion {
            request: Some(session.req_header()),
            status: session.response_written().map(|r| r.status.as_u16()).unwrap_or(0),
            http2: session.is_http2(),
            upstream_body_bytes: session.upstream_body_bytes_received() as u64,
            request_body_bytes: session.body_bytes_read() as u64,
            error: e.map(|e| e.etype().as_str()),
        };
        self.complete(&done, ctx);
    }
}
