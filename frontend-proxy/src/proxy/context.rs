//! The state one request carries through Pingora's phases.

use super::LocalReply;
use crate::address::Address;
use crate::upstream::{ActiveRequest, Host, Permit};
use http::header::HeaderValue;
use pingora_core::protocols::tls::SslDigest;
use pingora_http::RequestHeader;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Per-request state.
pub struct RequestCtx {
    pub(super) start: Instant,
    pub(super) listener: usize,
    pub(super) request_id: Option<HeaderValue>,
    /// (virtual host, route) indices in the listener's route table.
    pub(super) route: Option<(usize, usize)>,
    pub(super) cluster: Option<usize>,
    pub(super) host: Option<Arc<Host>>,
    pub(super) active: Option<ActiveRequest>,
    /// Hosts this request already failed on, avoided by retries.
    pub(super) tried: Vec<Address>,
    pub(super) attempts: u32,
    pub(super) retries: u32,
    /// The route timeout this request runs under (`deadline` is its end).
    pub(super) route_timeout: Option<Duration>,
    pub(super) deadline: Option<Instant>,
    pub(super) upstream_start: Option<Instant>,
    pub(super) upstream_time: Option<Duration>,
    /// What to answer if the last upstream attempt fails for good.
    pub(super) last_failure: Option<LocalReply>,
    /// The reply the proxy wrote itself, if it did.
    pub(super) reply: Option<LocalReply>,
    /// The body bytes of that reply as sent (after `local_reply_config`).
    pub(super) reply_bytes: u64,
    /// The current upstream error is a retry on a response status.
    pub(super) retrying_status: bool,
    pub(super) hash_key: Option<Vec<u8>>,
    pub(super) client_addr: Option<SocketAddr>,
    /// The connection's TLS digest (chosen chain, client certificate).
    pub(super) tls_digest: Option<Arc<SslDigest>>,
    /// Circuit-breaker slots this request holds.
    pub(super) request_permit: Option<Permit>,
    pub(super) pending_permit: Option<Permit>,
    /// Set when a new upstream connection was refused after its handshake
    /// (below the cluster's TLS minimum): whether to retry.
    pub(super) refused_connection: Option<bool>,
    pub(super) retry_permit: Option<Permit>,
    /// The next attempt is a policy retry and waits for its back-off first.
    pub(super) backoff: bool,
    /// Request body bytes seen, for the buffer filter's limit.
    pub(super) body_bytes: u64,
    /// The stream idle timeout: the route's `idle_timeout`, else the
    /// connection manager's `stream_idle_timeout` (`None`: off).
    pub(super) stream_idle: Option<Duration>,
    /// When `request_timeout` runs out, if set.
    pub(super) request_deadline: Option<Instant>,
    /// When `max_stream_duration` (the route's, else the connection
    /// manager's) runs out, if set.
    pub(super) stream_deadline: Option<Instant>,
    /// The status of the response head sent to the client, once it was
    /// (native engine; Pingora's session knows its own).
    pub(super) response_started: Option<u16>,
    /// The current upstream read/write timeout is the stream idle timeout.
    pub(super) upstream_idle_binds: bool,
    /// The request is gRPC: local replies are gRPC statuses.
    pub(super) grpc: bool,
    /// The attempt opened a connection whose HTTP version ALPN chose; it
    /// is counted (`upstream_cx_http{1,2}_total`) when the response shows it.
    pub(super) count_codec: bool,
    /// Headers with underscores `admit` dropped (and counted).
    pub(super) underscores_dropped: u64,
    /// The HTTP/1 request target had a `#fragment`, which Pingora's parse
    /// strips from the header `admit` sees: `admit` refuses it.
    pub(super) target_fragment: bool,
}

/// The context of an HTTP/2 stream our server (`h2.rs`) admitted and
/// routed, handed to Pingora's engine with the request (its extensions are
/// the one way in: they must be `Clone`, hence the shared slot).
/// `request_filter`, or `logging` if the stream ends before it, takes it
/// back, so the stream is admitted and counted once.
#[derive(Clone)]
pub(super) struct Admitted(Arc<Mutex<Option<Box<RequestCtx>>>>);

impl Admitted {
    pub(super) fn new(ctx: RequestCtx) -> Self {
        Self(Arc::new(Mutex::new(Some(Box::new(ctx)))))
    }

    /// The context, if neither `request_filter` nor `logging` took it.
    pub(super) fn left(&self) -> Option<Box<RequestCtx>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The context `req` carries, if it carries one (taken once).
    pub(super) fn take(req: &mut RequestHeader) -> Option<Box<RequestCtx>> {
        let slot = req.extensions_mut().remove::<Admitted>()?;
        let ctx = slot.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        ctx
    }
}

/// A downstream-side timer that ended a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamTimeout {
    /// No bytes either way within the stream idle timeout.
    Idle,
    /// The request was not received in full within `request_timeout`.
    Request,
    /// The request head was not received in full within `request_headers_timeout`.
    Headers,
    /// The head was still arriving when the connection manager's
    /// `max_stream_duration` ran out.
    MaxDuration,
}

impl StreamTimeout {
    /// The local reply, if the response has not started yet.
    pub(super) fn reply(self) -> LocalReply {
        match self {
            StreamTimeout::Idle => LocalReply::StreamIdleTimeout,
            StreamTimeout::Request => LocalReply::RequestTimeout,
            StreamTimeout::Headers => LocalReply::RequestHeaderTimeout,
            StreamTimeout::MaxDuration => LocalReply::MaxStreamDuration,
        }
    }
}

impl RequestCtx {
    pub(super) fn new() -> Self {
        Self::starting(Instant::now())
    }

    /// A request whose first byte arrived at `start`.
    pub(super) fn starting(start: Instant) -> Self {
        Self {
            start,
            listener: 0,
            request_id: None,
            route: None,
            cluster: None,
            host: None,
            active: None,
            tried: Vec::new(),
            attempts: 0,
            retries: 0,
            route_timeout: None,
            deadline: None,
            upstream_start: None,
            upstream_time: None,
            last_failure: None,
            reply: None,
            reply_bytes: 0,
            retrying_status: false,
            hash_key: None,
            client_addr: None,
            tls_digest: None,
            request_permit: None,
            pending_permit: None,
            refused_connection: None,
            retry_permit: None,
            backoff: false,
            body_bytes: 0,
            stream_idle: None,
            request_deadline: None,
            stream_deadline: None,
            response_started: None,
            upstream_idle_binds: false,
            grpc: false,
            count_codec: false,
            underscores_dropped: 0,
            target_fragment: false,
        }
    }

    /// Whether the route timeout has run out.
    pub(super) fn deadline_passed(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Whether `max_stream_duration` has run out.
    pub(super) fn stream_deadline_passed(&self) -> bool {
        self.stream_deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Whether `request_timeout` has run out.
    pub(super) fn request_deadline_passed(&self) -> bool {
        self.request_deadline.is_some_and(|d| Instant::now() >= d)
    }
}
