//! A client connection: the loop over its requests (keep-alive and
//! pipelining), reading each head within its timers, the replies to heads
//! that cannot be served, and the hand-off of what the engine leaves to
//! Pingora.

use super::body::Body;
use super::buffers::{Buffers, Kept};
use super::exchange::Exchange;
use super::io::{write_all, ClientStream};
use super::recycle::{self, Source};
use super::timer::Drained;
use super::wire::{self, ParsedRequest};
use super::{NativeH1, Served};
use crate::drain::Drain;
use crate::proxy::context::{RequestCtx, StreamTimeout};
use crate::proxy::lifecycle::Completion;
use crate::proxy::local_reply::LocalReply;
use crate::proxy::shorter;
use bytes::{Bytes, BytesMut};
use http::Method;
use pingora_error::ErrorType;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout, timeout_at, Instant};
use tracing::debug;

/// How long an idle connection stays open once a drain begins, for a
/// request its client may have sent already.
const DRAIN_GRACE: Duration = Duration::from_millis(250);
/// How long a connection closing with an unread request body keeps reading it.
const LINGER: Duration = Duration::from_secs(1);
/// Largest read while draining a request body before a close.
const DRAIN_READ: usize = 64 * 1024;

/// What reading a request head gave.
enum Head {
    /// A request, and when its first byte arrived.
    Request(Box<wire::Request>, std::time::Instant),
    /// The connection is over: the client closed it.
    Closed,
    /// Valid HTTP the engine leaves to Pingora.
    HandOff,
    /// A head the codec refuses: the reply, and when the head began.
    Reject(LocalReply, std::time::Instant),
    /// A head that stopped arriving.
    TimedOut(StreamTimeout, std::time::Instant),
}

/// What the connection does after a request.
enum Next {
    /// Waits for the next one.
    KeepAlive,
    /// Closes.
    Closed,
    /// Goes to Pingora's engine from these bytes on.
    HandOff(Bytes),
}

impl NativeH1 {
    /// Serves HTTP/1.1 requests from `client_addr` on `down` until the
    /// connection ends or needs Pingora (the caller keeps the stream to
    /// hand it over).
    ///
    /// An `async` block rather than an `async fn`: an `async fn`'s future
    /// keeps each argument twice (as passed, and moved into the body's
    /// locals), and this future is most of an idle connection's task.
    pub fn serve<'a, D: ClientStream>(
        &'a self,
        down: &'a mut D,
        client_addr: Option<&'a SocketAddr>,
        listener: usize,
        drain: &'a Drain,
    ) -> impl Future<Output = Served> + 'a {
        // Made here, and the drain reached through it: the future keeps
        // one reference to the drain, not two.
        let mut drained = Drained::new(drain);
        async move {
            let mut kept = Kept::default();
            let mut served = 0u32;
            // A connection's task is as large as this future's largest
            // state, and an idle keep-alive connection holds it: between
            // requests only what the wait needs is in it. A request (its
            // buffers, its head's timers, its context, its exchange) is one
            // boxed future from its first byte to its response's last,
            // freed before the next wait.
            loop {
                // Unread bytes are a pipelined request: no wait.
                if kept.down.is_empty() && !self.wait_for_request(down, &mut kept, listener, &mut drained).await {
                    return Served::Closed;
                }
                served = served.saturating_add(1);
                let (addr, drain) = (client_addr.copied(), drained.drain());
                let next = Box::pin(self.request(down, &mut kept, addr, listener, drain, served)).await;
                match next {
                    Next::KeepAlive => {}
                    Next::Closed => return Served::Closed,
                    Next::HandOff(read) => return Served::HandOff(read),
                }
            }
        }
    }

    /// Between requests: waits for the client's next bytes within the idle
    /// timeout and reads them; `false` if the connection is over (closed,
    /// idle too long, or the server is shutting down). A drain closes the
    /// connection: a request already waiting is read first; one still on
    /// its way gets `DRAIN_GRACE` to arrive, and either is served with
    /// `connection: close` (closing at once lost requests clients had just
    /// sent). No buffer is held until the socket is readable. An `async`
    /// block, as [`Self::serve`].
    #[allow(clippy::manual_async_fn)] // an `async fn` keeps its arguments twice
    fn wait_for_request<'a, D: ClientStream, R: Future<Output = ()> + Unpin>(
        &'a self,
        down: &'a mut D,
        kept: &'a mut Kept,
        listener: usize,
        // The connection's [`Drained`] (generic: its lifetime is not `'a`).
        drained: &'a mut R,
    ) -> impl Future<Output = bool> + 'a {
        async move {
            let idle_timeout = self.proxy.listeners[listener].hcm.idle_timeout;
            let idle_ends = idle_timeout.map(|t| Instant::now() + t);
            let buf = &mut kept.down;
            let read = tokio::select! {
                biased;
                r = kept.timer.run(idle_ends, async {
                    down.readable().await?;
                    recycle::take_read(buf, Source::Client);
                    down.read_buf(buf).await
                }) => r,
                _ = &mut *drained => {
                    // Boxed: its timer would take room in every idle
                    // connection's task for the one wait a drain makes.
                    let late = Box::pin(timeout(DRAIN_GRACE, async {
                        down.readable().await?;
                        recycle::take_read(buf, Source::Client);
                        down.read_buf(buf).await
                    }));
                    match late.await {
                        Ok(read) => Ok(read),
                        Err(_) => return false,
                    }
                }
            };
            match read {
                Ok(Ok(n)) => n > 0,
                Ok(Err(_)) => false,
                Err(_) => {
                    let listener = &self.proxy.listeners[listener];
                    listener.stats.downstream_cx_idle_timeout.fetch_add(1, Relaxed);
                    debug!(listener = %listener.name, "connection idle timeout");
                    false
                }
            }
        }
    }

    /// One request of the connection, the `served`th, from its first bytes
    /// (in `kept.down`) on, in the buffers it takes for it.
    async fn request<D: ClientStream>(
        &self,
        down: &mut D,
        kept: &mut Kept,
        client_addr: Option<SocketAddr>,
        listener: usize,
        drain: &Drain,
        served: u32,
    ) -> Next {
        let mut bufs = Buffers::resume(kept);
        let next = self.next_request(down, &mut bufs, client_addr, listener, drain, served).await;
        if let Next::KeepAlive = next {
            bufs.suspend(kept);
        }
        next
    }

    /// Reads the rest of a request head whose first bytes are in
    /// `bufs.down`, and serves it (or answers a head that cannot be
    /// served): the `served`th request of the connection.
    async fn next_request<D: ClientStream>(
        &self,
        down: &mut D,
        bufs: &mut Buffers,
        client_addr: Option<SocketAddr>,
        listener: usize,
        drain: &Drain,
        served: u32,
    ) -> Next {
        let head = self.read_request(down, &mut bufs.down, listener).await;
        let (request, started) = match head {
            Head::Request(request, started) => (request, started),
            Head::Closed => return Next::Closed,
            Head::HandOff => return Next::HandOff(std::mem::take(&mut bufs.down).freeze()),
            Head::Reject(..) | Head::TimedOut(..) => {
                Box::pin(self.reject(down, &mut bufs.out, head, listener, client_addr)).await;
                // The reply and the FIN go out before the close, which
                // resets the connection if the client sent more.
                let _ = down.shutdown().await;
                return Next::Closed;
            }
        };
        // `max_requests_per_connection`: the last one's response says `connection: close`.
        let max_requests = self.proxy.listeners[listener].hcm.max_requests_per_connection;
        let last = max_requests.is_some_and(|m| served >= m);
        let mut ctx = RequestCtx::starting(started);
        ctx.listener = listener;
        ctx.client_addr = client_addr;
        ctx.tls_digest = down.ssl_digest();
        let (keep_alive, unread_body) = match self.serve_request(down, bufs, request, &mut ctx, drain, last).await {
            Ok(done) => done,
            Err(head) => {
                // Pingora's engine serves it (and the rest of the
                // connection) from its head on.
                let mut replay = BytesMut::with_capacity(head.len() + bufs.down.len());
                replay.extend_from_slice(&head);
                replay.extend_from_slice(&bufs.down);
                return Next::HandOff(replay.freeze());
            }
        };
        if !keep_alive {
            let _ = down.shutdown().await;
            if unread_body {
                linger(down).await;
            }
            return Next::Closed;
        }
        Next::KeepAlive
    }

    /// Answers a request head that cannot be served (malformed, too large,
    /// or too slow to arrive) and accounts for it.
    async fn reject<D: ClientStream>(
        &self,
        down: &mut D,
        out: &mut Vec<u8>,
        head: Head,
        listener: usize,
        client_addr: Option<SocketAddr>,
    ) {
        let head_ctx = |at| {
            let mut ctx = RequestCtx::starting(at);
            ctx.listener = listener;
            ctx.client_addr = client_addr;
            ctx
        };
        let (mut ctx, reply, protocol_error) = match head {
            Head::Reject(reply, at) => (head_ctx(at), reply, true),
            Head::TimedOut(which, at) => {
                let mut ctx = head_ctx(at);
                let reply = self.proxy.stream_timed_out(&mut ctx, which);
                (ctx, reply, false)
            }
            Head::Request(..) | Head::Closed | Head::HandOff => return,
        };
        let status = self.send_reply(down, out, &mut ctx, reply, None, true).await;
        self.proxy.head_rejected(&mut ctx, status.unwrap_or(0), protocol_error);
    }

    /// Reads a request head whose first bytes are in `buf`. The head is
    /// parsed at once (to turn away what is not HTTP) and when its end has
    /// arrived; in between, only the new bytes are looked at.
    async fn read_request<D: ClientStream>(&self, down: &mut D, buf: &mut BytesMut, listener: usize) -> Head {
        let hcm = &self.proxy.listeners[listener].hcm;
        let limit = hcm.max_request_headers_kb as usize * 1024;
        let at = std::time::Instant::now();
        // How far the end of the head has been looked for, and whether the
        // head has been parsed since its first read.
        let (mut scanned, mut parsed_once) = (0, false);
        loop {
            let end = wire::head_end(buf, scanned);
            if end.is_some() || !parsed_once {
                parsed_once = true;
                match wire::parse_request(buf) {
                    ParsedRequest::Complete(r) => return Head::Request(r, at),
                    ParsedRequest::Partial => {}
                    ParsedRequest::HandOff => return Head::HandOff,
                    ParsedRequest::TooManyHeaders => return Head::Reject(LocalReply::HeadersTooLarge, at),
                    ParsedRequest::Malformed => return Head::Reject(LocalReply::BadRequest, at),
                    ParsedRequest::UnsupportedCoding => return Head::Reject(LocalReply::UnsupportedTransferCoding, at),
                }
            }
            if buf.len() > limit {
                return Head::Reject(LocalReply::HeadersTooLarge, at);
            }
            scanned = end.unwrap_or(buf.len().saturating_sub(3));
            recycle::take_read(buf, Source::Client);
            // Part of a head: `request_headers_timeout`, the stream idle
            // timeout and `request_timeout` run.
            let headers_end = hcm.request_headers_timeout.map(|t| Instant::from_std(at + t));
            let request_ends = hcm.request_timeout.map(|t| Instant::from_std(at + t));
            let idle_ends = hcm.stream_idle_timeout.map(|t| Instant::now() + t);
            // As Envoy, the connection manager's `max_stream_duration`
            // runs from the stream's start (a route's only once routed).
            let max_ends = hcm.max_stream_duration.map(|t| Instant::from_std(at + t));
            let read = match shorter(shorter(headers_end, max_ends), shorter(request_ends, idle_ends)) {
                Some(end) => match timeout_at(end, down.read_buf(buf)).await {
                    Ok(r) => r,
                    Err(_) if Some(end) == headers_end => return Head::TimedOut(StreamTimeout::Headers, at),
                    Err(_) if Some(end) == request_ends => return Head::TimedOut(StreamTimeout::Request, at),
                    Err(_) if Some(end) == max_ends => return Head::TimedOut(StreamTimeout::MaxDuration, at),
                    Err(_) => return Head::TimedOut(StreamTimeout::Idle, at),
                },
                None => down.read_buf(buf).await,
            };
            match read {
                Ok(0) | Err(_) => return Head::Closed,
                Ok(_) => {}
            }
        }
    }

    /// Serves one request; returns whether the connection may carry another,
    /// and whether part of the request body was left unread. `Err(head)`:
    /// the request routes to a cluster that speaks HTTP/2, which this engine
    /// does not; nothing of it was sent or read past its head.
    async fn serve_request<D: ClientStream>(
        &self,
        down: &mut D,
        bufs: &mut Buffers,
        // Boxed: the head stays where the parser put it, and the future
        // holds a pointer, not a second copy of it beside `req`.
        request: Box<wire::Request>,
        ctx: &mut RequestCtx,
        drain: &Drain,
        last: bool,
    ) -> Result<(bool, bool), Bytes> {
        let wire::Request { header: mut req, head, body: framing, close } = *request;
        let reply = match self.proxy.admit(&mut req, false, false, ctx) {
            Ok(reply) => reply,
            Err(e) => {
                debug!(error = %e, "request rejected");
                Some(LocalReply::BadRequest)
            }
        };
        if reply.is_none() && self.proxy.needs_pingora(ctx) {
            self.proxy.withdraw(ctx);
            return Err(head);
        }
        drop(head);
        let max_body = self.proxy.listeners[ctx.listener].hcm.max_request_bytes;
        let started = Body::start(framing, &mut bufs.down, max_body);
        let (mut body, reply) = match started {
            Ok(body) => (body, reply),
            Err(e) => (Body::refused(), reply.or(Some(e.reply()))),
        };
        let mut keep_alive = !close && !drain.is_draining() && !last;
        let (status, upstream_body, error) = match reply {
            Some(reply) => {
                // As Envoy: a request the codec rejects ends its connection.
                keep_alive &= body.complete() && !reply.is_codec_error();
                let status = self.send_reply(down, &mut bufs.out, ctx, reply, Some(&req), !keep_alive).await;
                (status.unwrap_or(0), 0, status.is_none().then_some(ErrorType::WriteError))
            }
            None => match self.forward_within(down, bufs, &req, ctx, &mut body, keep_alive, drain).await {
                None => {
                    // `max_stream_duration` ran out: 408 if the response had
                    // not started, else the connection ends mid-response.
                    // Either way the exchange was cut off wherever it was.
                    keep_alive = false;
                    let reply = self.proxy.max_duration_reached(ctx);
                    match ctx.response_started {
                        Some(status) => (status, 0, Some(ErrorType::ReadTimedout)),
                        None => {
                            let status = self.send_reply(down, &mut bufs.out, ctx, reply, Some(&req), true).await;
                            (status.unwrap_or(0), 0, None)
                        }
                    }
                }
                Some(Exchange::Done { status, keep_alive: k, upstream_body }) => {
                    keep_alive &= k;
                    (status, upstream_body, None)
                }
                Some(Exchange::Failed) => {
                    keep_alive &= body.complete() && !drain.is_draining();
                    let reply = self.proxy.final_failure(ctx, None);
                    let status = self.send_reply(down, &mut bufs.out, ctx, reply, Some(&req), !keep_alive).await;
                    (status.unwrap_or(0), 0, None)
                }
                Some(Exchange::Broken { status, upstream_body, error }) => {
                    keep_alive = false;
                    (status, upstream_body, Some(error))
                }
            },
        };
        let done = Completion {
            request: Some(&req),
            status,
            http2: false,
            upstream_body_bytes: upstream_body,
            request_body_bytes: body.received,
            error: error.as_ref().map(|e| e.as_str()),
        };
        self.proxy.complete(&done, ctx);
        Ok((keep_alive, !body.complete()))
    }

    /// [`Self::forward`] bounded by the request's `max_stream_duration`;
    /// `None` if it ran out first.
    #[allow(clippy::too_many_arguments)]
    async fn forward_within<D: ClientStream>(
        &self,
        down: &mut D,
        bufs: &mut Buffers,
        req: &pingora_http::RequestHeader,
        ctx: &mut RequestCtx,
        body: &mut Body,
        keep_alive: bool,
        drain: &Drain,
    ) -> Option<Exchange> {
        match ctx.stream_deadline {
            Some(end) => {
                timeout_at(Instant::from_std(end), self.forward(down, bufs, req, ctx, body, keep_alive, drain))
                    .await
                    .ok()
            }
            None => Some(self.forward(down, bufs, req, ctx, body, keep_alive, drain).await),
        }
    }

    /// Writes a local reply; returns its status, or `None` if the client is gone.
    pub(super) async fn send_reply<D: ClientStream>(
        &self,
        down: &mut D,
        out: &mut Vec<u8>,
        ctx: &mut RequestCtx,
        reply: LocalReply,
        request: Option<&pingora_http::RequestHeader>,
        close: bool,
    ) -> Option<u16> {
        let (head, body) = self.proxy.local_reply_parts(ctx, &reply, request, false).ok()?;
        let body = if request.is_some_and(|r| r.method == Method::HEAD) { Bytes::new() } else { body };
        ctx.reply_bytes = body.len() as u64;
        recycle::take_write(out);
        wire::write_local_reply(out, &head, &body, close);
        ctx.reply = Some(reply);
        match close {
            true => down.write_last(out.as_slice()).await.ok()?,
            false => write_all(down, &mut out.as_slice()).await.ok()?,
        }
        Some(head.status.as_u16())
    }
}

/// After answering a request whose body was not all read: the rest is read
/// and dropped for a while before the connection closes, so the client
/// gets the answer instead of a reset (Envoy's delayed close, nginx's
/// lingering close).
async fn linger<D: ClientStream>(down: &mut D) {
    let mut sink = vec![0u8; DRAIN_READ];
    let _ = timeout(LINGER, async {
        while let Ok(n) = down.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
