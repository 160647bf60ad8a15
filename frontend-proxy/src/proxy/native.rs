//! The native HTTP/1.1 engine: serves plain HTTP/1.1 keep-alive traffic
//! without Pingora's `HttpProxy`, which costs about four times the
//! instructions per request that the work needs (bench/WHAT-WAS-DONE.md).
//!
//! It reads request heads into one reused buffer, runs the same request
//! lifecycle as the Pingora engine (`lifecycle.rs`: limits, edge headers,
//! routing, attempts and retries, stats, access log), keeps upstream
//! connections in a per-worker pool (`pool.rs`) and passes bodies through
//! with the framing they arrived with (`wire.rs`).
//!
//! Anything else — HTTP/1.0, upgrades and WebSockets, `Expect`, chunked
//! request bodies, h2c, absolute-form targets — is handed to Pingora on the
//! same connection, with the bytes already read replayed in front of it.

mod pool;
mod recycle;
pub(crate) mod wire;

use super::context::{RequestCtx, StreamTimeout};
use super::forwarding::{X_REQUEST_ID, X_UPSTREAM_SERVICE_TIME};
use super::lifecycle::{AttemptFailure, AttemptStart, Completion};
use super::local_reply::{self, LocalReply};
use super::shorter;
use super::Proxy;
use crate::config::model::ServerHeader;
use crate::metrics::UpstreamConnectionTracer;
use bytes::{Buf, Bytes, BytesMut};
use http::Method;
use pingora_core::connectors::TransportConnector;
use pingora_core::server::ShutdownWatch;
use pingora_error::ErrorType;
use pingora_http::{RequestHeader, ResponseHeader};
use pool::{PoolKey, Upstream};
use recycle::{Source, BUF};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant, Sleep};
use tracing::{debug, warn};
use wire::{Framing, ParsedRequest};

/// Largest read while passing a body through.
const BODY_READ: usize = 64 * 1024;
/// Largest body part copied behind a response head to go out in one write;
/// a larger one goes beside it in a vectored write.
const COALESCE: usize = 4096;
/// How long a connection closing with an unread request body keeps reading it.
const LINGER: Duration = Duration::from_secs(1);
/// Largest upstream response head accepted.
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// What the native engine serves on: a plaintext listener's own
/// `TcpStream`, or a Pingora `Stream` (TLS).
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// Waits until a read would find bytes (or the end), so a connection
    /// waiting for a request holds no buffer; streams that cannot tell
    /// return at once and wait in the read.
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }

    /// Writes `first` then `second` (`first` may be empty): the last bytes
    /// the connection carries before it is shut down.
    fn write_last<'a>(
        &'a mut self,
        first: &'a [u8],
        second: &'a [u8],
    ) -> impl Future<Output = std::io::Result<()>> + Send + 'a {
        write_two(self, first, second)
    }
}

impl ClientStream for Box<dyn pingora_core::protocols::IO + '_> {}

/// The last response goes out with `MSG_MORE`: the kernel holds its last
/// part until the shutdown that follows, which sends it in the same segment
/// as the FIN. A connection that closes after its response (connection per
/// request) costs one segment less on both ends: one receive path and one
/// wake-up of the client fewer.
impl ClientStream for TcpStream {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        // The read's own waker slot: `TcpStream::readable` queues a waiter
        // under a lock instead (~400 more instructions a request).
        std::future::poll_fn(|cx| self.poll_read_ready(cx))
    }

    async fn write_last(&mut self, mut first: &[u8], mut second: &[u8]) -> std::io::Result<()> {
        let me: &TcpStream = self;
        while !first.is_empty() || !second.is_empty() {
            // The write's own waker slot, as `readable` (`async_io` queues a waiter).
            let n = std::future::poll_fn(|cx| loop {
                std::task::ready!(me.poll_write_ready(cx))?;
                let sent = me.try_io(tokio::io::Interest::WRITABLE, || {
                    let socket = socket2::SockRef::from(me);
                    match first.is_empty() {
                        true => socket.send_with_flags(second, MSG_MORE),
                        false => socket.send_vectored_with_flags(
                            &[std::io::IoSlice::new(first), std::io::IoSlice::new(second)],
                            MSG_MORE,
                        ),
                    }
                });
                match sent {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    done => return Poll::Ready(done),
                }
            })
            .await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            let from_first = n.min(first.len());
            first = &first[from_first..];
            second = &second[n - from_first..];
        }
        Ok(())
    }
}

/// `send(2)`'s "more is coming" flag (Linux; elsewhere the bytes go at once).
#[cfg(target_os = "linux")]
const MSG_MORE: std::ffi::c_int = 0x8000;
#[cfg(not(target_os = "linux"))]
const MSG_MORE: std::ffi::c_int = 0;

/// How a connection served by the native engine ended.
pub enum Served<D> {
    Closed,
    /// The rest of the connection needs Pingora: the bytes read but not
    /// served, to replay in front of the stream.
    HandOff(Bytes, D),
}

/// The native engine, shared by every connection of a service.
pub struct NativeH1 {
    proxy: Proxy,
    /// Opens TLS upstream connections (plain ones are opened directly).
    connector: TransportConnector,
}

/// Buffers and timers one downstream connection reuses for all its requests.
/// The buffers are borrowed from the worker's free lists (`recycle.rs`)
/// while bytes move, and given back while the connection waits.
struct Buffers {
    /// Bytes read from the client, not yet consumed.
    down: BytesMut,
    /// Bytes read from the upstream, not yet forwarded.
    up: BytesMut,
    /// What is about to be written.
    out: Vec<u8>,
    /// The connection's idle timeout between requests.
    idle_timer: Rearmed,
    /// The route (or per-try) timeout of each attempt.
    attempt_timer: Rearmed,
}

/// A timer a connection re-arms for each request instead of creating a new
/// one: moving a registered tokio timer to a later deadline is one atomic
/// exchange, while a new timer takes the timer driver's lock to register
/// and again to cancel. Created on first use.
#[derive(Default)]
struct Rearmed(Option<Pin<Box<Sleep>>>);

/// Resolves once the server is shutting down (or its shutdown watch is
/// gone), and stays resolved. One per connection: its waiter stays
/// registered on the watch across requests, where a `changed()` per idle
/// wait registered and removed one every time (~300 instructions a
/// request). Set up on the first idle wait that has to wait, so a
/// connection whose requests are always there never pays for it.
struct Drained<'a> {
    shutdown: &'a ShutdownWatch,
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send + 'a>>>,
    done: bool,
}

impl<'a> Drained<'a> {
    fn new(shutdown: &'a ShutdownWatch) -> Self {
        Self { shutdown, wait: None, done: false }
    }
}

impl Future for Drained<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if !this.done {
            let shutdown = this.shutdown;
            let wait = this.wait.get_or_insert_with(|| {
                Box::pin(async move {
                    let mut watch = shutdown.clone();
                    // Already shutting down when the clone was taken: `changed()`
                    // would wait for a further change.
                    if !*watch.borrow_and_update() {
                        let _ = watch.changed().await;
                    }
                })
            });
            this.done = wait.as_mut().poll(cx).is_ready();
        }
        if this.done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// A re-armed timer ran out before what it bounded finished.
#[derive(Debug)]
struct TimedOut;

impl Rearmed {
    /// Runs `f` until `deadline` (`None`: no limit). If `f` is ready at
    /// once, the timer is not touched.
    fn run<F: Future>(&mut self, deadline: Option<Instant>, f: F) -> RunRearmed<'_, F> {
        RunRearmed { f, timer: self, deadline, armed: false }
    }
}

// The bounding futures below hold what they bound in place. As `async fn`s
// they held it twice (the argument, and the pinned copy polled), and the
// connection's task is as large as its largest such chain.
pin_project_lite::pin_project! {
    /// [`Rearmed::run`]'s future.
    struct RunRearmed<'a, F> {
        #[pin]
        f: F,
        timer: &'a mut Rearmed,
        deadline: Option<Instant>,
        armed: bool,
    }
}

impl<F: Future> Future for RunRearmed<'_, F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.f.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        let Some(deadline) = *this.deadline else { return Poll::Pending };
        let slot = &mut this.timer.0;
        if !*this.armed {
            *this.armed = true;
            match slot {
                Some(timer) => timer.as_mut().reset(deadline),
                None => *slot = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        match slot {
            Some(timer) => timer.as_mut().poll(cx).map(|()| Err(TimedOut)),
            None => Poll::Pending,
        }
    }
}

pin_project_lite::pin_project! {
    /// [`within`]'s future.
    struct Within<F> {
        #[pin]
        f: F,
        limit: Option<Duration>,
        #[pin]
        timer: Option<Sleep>,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.f.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        let Some(limit) = *this.limit else { return Poll::Pending };
        if this.timer.is_none() {
            this.timer.set(Some(tokio::time::sleep(limit)));
        }
        match this.timer.as_pin_mut() {
            Some(timer) => timer.poll(cx).map(|()| Err(TimedOut)),
            None => Poll::Pending,
        }
    }
}

impl Buffers {
    /// Between requests: gives the buffers back, but for unread bytes of
    /// the next request (pipelined), which move to a smaller buffer if a
    /// large body made theirs grow.
    fn release(&mut self) {
        Self::give_back(&mut self.out, &mut self.down, &mut self.up);
        if self.down.capacity() > 4 * BUF && self.down.len() < BUF {
            let rest = std::mem::replace(&mut self.down, BytesMut::with_capacity(BUF));
            self.down.extend_from_slice(&rest);
        }
    }

    /// Gives back what the next wait does not need: the write buffer, the
    /// upstream's (its bytes are passed on), and the client's unless it
    /// holds unread bytes (a pipelined request).
    fn give_back(out: &mut Vec<u8>, down: &mut BytesMut, up: &mut BytesMut) {
        recycle::give_write(out);
        recycle::give_read(down, Source::Client);
        up.clear();
        recycle::give_read(up, Source::Upstream);
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        self.down.clear();
        Self::give_back(&mut self.out, &mut self.down, &mut self.up);
    }
}

/// A request body: the part already read with the head, and what is left
/// to read from the client.
struct Body {
    buffered: Bytes,
    unread: u64,
    /// Not all of it was read with the head: it streams, and cannot be resent.
    streamed: bool,
}

impl Body {
    /// Whether the whole body is in memory, so an attempt can be repeated.
    fn complete(&self) -> bool {
        self.unread == 0
    }
}

/// How an exchange with the upstream ended.
enum Exchange {
    /// The response went to the client; whether the client connection may
    /// carry another request.
    Done { status: u16, keep_alive: bool, upstream_body: u64 },
    /// No response headers went out: the proxy answers itself.
    Failed,
    /// The response broke off after its headers went out (or the client went
    /// away): the connection must close.
    Broken { status: u16, upstream_body: u64, error: ErrorType },
}

/// An attempt that ended before its response could be forwarded.
#[derive(Debug)]
enum AttemptError {
    Connect {
        timed_out: bool,
        error: String,
    },
    Upstream {
        timed_out: bool,
        error: ErrorType,
    },
    /// The client went away while its body was being sent.
    Downstream,
    /// A downstream-side timer (stream idle, `request_timeout`) ran out.
    Stream(StreamTimeout),
}

/// Which side a body transfer failed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Upstream,
    Downstream,
    /// Nothing moved either way within the stream idle timeout.
    Idle,
}

impl NativeH1 {
    pub fn new(proxy: Proxy) -> Self {
        Self { proxy, connector: TransportConnector::new(None) }
    }

    /// Serves HTTP/1.1 requests from `client_addr` on `down` until the
    /// connection ends or needs Pingora.
    pub async fn serve<D: ClientStream>(
        &self,
        mut down: D,
        client_addr: Option<SocketAddr>,
        listener: usize,
        shutdown: &ShutdownWatch,
    ) -> Served<D> {
        let mut drained = Drained::new(shutdown);
        let mut bufs = Buffers {
            down: BytesMut::new(),
            up: BytesMut::new(),
            out: Vec::new(),
            idle_timer: Rearmed::default(),
            attempt_timer: Rearmed::default(),
        };
        // A connection's task is as large as this future's largest state:
        // what a request needs lives in `serve_request`'s and `reject`'s
        // futures and in scopes that end before the next await, so that no
        // state carries a slot for another's locals.
        loop {
            let next = match self
                .read_request(&mut down, &mut bufs.down, &mut bufs.idle_timer, listener, shutdown, &mut drained)
                .await
            {
                Ok(Some(r)) => Ok(r),
                Ok(None) => return Served::Closed,
                Err(next) => Err(next),
            };
            let (request, started) = match next {
                Ok(r) => r,
                Err(Next::HandOff) => return Served::HandOff(std::mem::take(&mut bufs.down).freeze(), down),
                Err(next) => {
                    self.reject(&mut down, &mut bufs.out, next, listener, client_addr).await;
                    // The reply and the FIN go out before the close, which
                    // resets the connection if the client sent more.
                    let _ = down.shutdown().await;
                    return Served::Closed;
                }
            };
            let (keep_alive, unread_body) = {
                let mut ctx = RequestCtx::starting(started);
                ctx.listener = listener;
                ctx.client_addr = client_addr;
                self.serve_request(&mut down, &mut bufs, request, &mut ctx, shutdown).await
            };
            if !keep_alive {
                let _ = down.shutdown().await;
                if unread_body {
                    linger(&mut down).await;
                }
                return Served::Closed;
            }
            bufs.release();
        }
    }

    /// Answers a request head that cannot be served (malformed, too large,
    /// or too slow to arrive) and accounts for it.
    async fn reject<D: ClientStream>(
        &self,
        down: &mut D,
        out: &mut Vec<u8>,
        next: Next,
        listener: usize,
        client_addr: Option<SocketAddr>,
    ) {
        let head_ctx = |at| {
            let mut ctx = RequestCtx::starting(at);
            ctx.listener = listener;
            ctx.client_addr = client_addr;
            ctx
        };
        let (mut ctx, reply, protocol_error) = match next {
            Next::Reject(reply, at) => (head_ctx(at), reply, true),
            Next::TimedOut(which, at) => {
                let mut ctx = head_ctx(at);
                let reply = self.proxy.stream_timed_out(&mut ctx, which);
                (ctx, reply, false)
            }
            Next::HandOff => return,
        };
        let status = self.send_reply(down, out, &mut ctx, reply, false, true).await;
        self.proxy.head_rejected(&mut ctx, status.unwrap_or(0), protocol_error);
    }

    /// Reads the next request head, and when its first byte arrived.
    /// `Ok(None)`: the connection is over (closed, idle too long, or the
    /// server is shutting down).
    async fn read_request<D: ClientStream>(
        &self,
        down: &mut D,
        buf: &mut BytesMut,
        idle_timer: &mut Rearmed,
        listener: usize,
        shutdown: &ShutdownWatch,
        drained: &mut Drained<'_>,
    ) -> Result<Option<(Box<wire::Request>, std::time::Instant)>, Next> {
        let listener = &self.proxy.listeners[listener];
        let hcm = &listener.hcm;
        let limit = hcm.max_request_headers_kb as usize * 1024;
        let mut started = (!buf.is_empty()).then(std::time::Instant::now);
        loop {
            if let Some(at) = started {
                match wire::parse_request(buf) {
                    ParsedRequest::Complete(r) => return Ok(Some((r, at))),
                    ParsedRequest::Partial if buf.len() > limit => {
                        return Err(Next::Reject(LocalReply::HeadersTooLarge, at))
                    }
                    ParsedRequest::Partial => {}
                    ParsedRequest::HandOff => return Err(Next::HandOff),
                    ParsedRequest::TooManyHeaders => return Err(Next::Reject(LocalReply::HeadersTooLarge, at)),
                    ParsedRequest::Malformed => return Err(Next::Reject(LocalReply::BadRequest, at)),
                }
            }
            if started.is_some() {
                recycle::take_read(buf, Source::Client);
            }
            let read = match started {
                None => {
                    // Between requests: the idle timeout runs and a shutdown closes the connection.
                    if *shutdown.borrow() {
                        return Ok(None);
                    }
                    let idle_ends = hcm.idle_timeout.map(|t| Instant::now() + t);
                    let read = tokio::select! {
                        biased;
                        r = idle_timer.run(idle_ends, async {
                            down.readable().await?;
                            recycle::take_read(buf, Source::Client);
                            down.read_buf(buf).await
                        }) => r,
                        _ = &mut *drained => return Ok(None),
                    };
                    let Ok(read) = read else {
                        listener.stats.downstream_cx_idle_timeout.fetch_add(1, Relaxed);
                        debug!(listener = %listener.name, "connection idle timeout");
                        return Ok(None);
                    };
                    started = Some(std::time::Instant::now());
                    read
                }
                Some(at) => {
                    // Part of a head: `request_headers_timeout`, the stream idle
                    // timeout and `request_timeout` run.
                    let headers_end = hcm.request_headers_timeout.map(|t| Instant::from_std(at + t));
                    let request_ends = hcm.request_timeout.map(|t| Instant::from_std(at + t));
                    let idle_ends = hcm.stream_idle_timeout.map(|t| Instant::now() + t);
                    match shorter(headers_end, shorter(request_ends, idle_ends)) {
                        Some(end) => match timeout_at(end, down.read_buf(buf)).await {
                            Ok(r) => r,
                            Err(_) if Some(end) == headers_end => {
                                return Err(Next::TimedOut(StreamTimeout::Headers, at))
                            }
                            Err(_) if Some(end) == request_ends => {
                                return Err(Next::TimedOut(StreamTimeout::Request, at))
                            }
                            Err(_) => return Err(Next::TimedOut(StreamTimeout::Idle, at)),
                        },
                        None => down.read_buf(buf).await,
                    }
                }
            };
            match read {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        }
    }

    /// Serves one request; returns whether the connection may carry another,
    /// and whether part of the request body was left unread.
    async fn serve_request<D: ClientStream>(
        &self,
        down: &mut D,
        bufs: &mut Buffers,
        // Boxed: the head stays where the parser put it, and the future
        // holds a pointer, not a second copy of it beside `req`.
        request: Box<wire::Request>,
        ctx: &mut RequestCtx,
        shutdown: &ShutdownWatch,
    ) -> (bool, bool) {
        let wire::Request { header: mut req, body_len, close } = *request;
        let buffered = body_len.min(bufs.down.len() as u64) as usize;
        let unread = body_len - buffered as u64;
        let mut body = Body { buffered: bufs.down.split_to(buffered).freeze(), unread, streamed: unread > 0 };
        let head_request = req.method == Method::HEAD;
        let reply = match self.proxy.admit(&mut req, false, false, ctx) {
            Ok(reply) => reply,
            Err(e) => {
                debug!(error = %e, "request rejected");
                Some(LocalReply::BadRequest)
            }
        };
        let mut keep_alive = !close && !*shutdown.borrow();
        let (status, upstream_body, error) = match reply {
            Some(reply) => {
                // As Envoy: a request the codec rejects ends its connection.
                let codec_error = matches!(reply, LocalReply::BadRequest | LocalReply::HeadersTooLarge);
                keep_alive &= body.complete() && !codec_error;
                let status = self.send_reply(down, &mut bufs.out, ctx, reply, head_request, !keep_alive).await;
                (status.unwrap_or(0), 0, status.is_none().then_some(ErrorType::WriteError))
            }
            None => match self.forward(down, bufs, &req, ctx, &mut body, keep_alive, shutdown).await {
                Exchange::Done { status, keep_alive: k, upstream_body } => {
                    keep_alive &= k;
                    (status, upstream_body, None)
                }
                Exchange::Failed => {
                    keep_alive &= body.complete() && !*shutdown.borrow();
                    let reply = self.proxy.final_failure(ctx, None);
                    let status = self.send_reply(down, &mut bufs.out, ctx, reply, head_request, !keep_alive).await;
                    (status.unwrap_or(0), 0, None)
                }
                Exchange::Broken { status, upstream_body, error } => {
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
            request_body_bytes: body_len - body.unread,
            error: error.as_ref().map(|e| e.as_str()),
        };
        self.proxy.complete(&done, ctx);
        (keep_alive, !body.complete())
    }

    /// Writes a local reply; returns its status, or `None` if the client is gone.
    async fn send_reply<D: ClientStream>(
        &self,
        down: &mut D,
        out: &mut Vec<u8>,
        ctx: &mut RequestCtx,
        reply: LocalReply,
        head_request: bool,
        close: bool,
    ) -> Option<u16> {
        let head = local_reply::response_header(&reply, &self.proxy.reply_headers(ctx)).ok()?;
        let body = if head_request { Bytes::new() } else { reply.body() };
        recycle::take_write(out);
        wire::write_local_reply(out, &head, &body, close);
        ctx.reply = Some(reply);
        match close {
            true => down.write_last(&[], out).await.ok()?,
            false => write_all(down, out).await.ok()?,
        }
        Some(head.status.as_u16())
    }

    /// Forwards the request to the route's cluster, retrying as the route
    /// and the defaults allow, and streams the response back.
    #[allow(clippy::too_many_arguments)]
    async fn forward<D: ClientStream>(
        &self,
        down: &mut D,
        bufs: &mut Buffers,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
        body: &mut Body,
        keep_alive: bool,
        shutdown: &ShutdownWatch,
    ) -> Exchange {
        let head_request = req.method == Method::HEAD;
        loop {
            let attempt = match self.proxy.begin_attempt(ctx, false).await {
                Ok(a) => a,
                // `begin_attempt` has set `ctx.last_failure`, the reply to send.
                Err(_) => return Exchange::Failed,
            };
            let key: PoolKey = (ctx.cluster.unwrap_or(0), attempt.host.addr);
            let mut reused = false;
            let mut result = Err(AttemptError::Downstream);
            for pooled in [true, false] {
                result = match self.upstream(&attempt, key, pooled).await {
                    Ok((up, was_pooled)) => {
                        reused = was_pooled;
                        ctx.pending_permit = None;
                        self.send_request(down, bufs, req, ctx, body, up, &attempt).await
                    }
                    Err(e) => Err(e),
                };
                // A pooled connection the upstream closed just as it was
                // reused (the keep-alive race): the request never reached
                // it, so it goes again on a new connection to the same host.
                let stale = reused
                    && !body.streamed
                    && req.method.is_idempotent()
                    && matches!(
                        result,
                        Err(AttemptError::Upstream {
                            timed_out: false,
                            error: ErrorType::ConnectionClosed | ErrorType::WriteError | ErrorType::ReadError
                        })
                    );
                if !stale {
                    break;
                }
                debug!(upstream = %attempt.host.addr, "pooled connection closed by the upstream; reconnecting");
                bufs.up.clear();
            }
            // The response head, checked, and the decision to retry on its status.
            let result = result.and_then(|(up, head_len)| {
                let mut slots = wire::header_slots();
                let mut resp = httparse::Response::new(&mut []);
                let parsed = wire::parse_response(&mut resp, &bufs.up[..head_len], &mut slots);
                let mut head = match (parsed, wire::response_head(&resp, head_request)) {
                    (Ok(httparse::Status::Complete(_)), Ok(head)) => head,
                    _ => return Err(AttemptError::Upstream { timed_out: false, error: ErrorType::InvalidHTTPHeader }),
                };
                // An upstream connection that did not take the whole body is not reused.
                head.close |= !body.complete();
                if self.proxy.upstream_answered(ctx, head.status, body.streamed) {
                    return Ok(None);
                }
                // A body the upstream answered before it all arrived leaves
                // the rest unread on the client connection: it must close.
                // A drain that began while the request was in flight closes the
                // connection after this response, and says so (as Envoy does).
                let close =
                    !keep_alive || *shutdown.borrow() || head.framing == Framing::UntilClose || !body.complete();
                recycle::take_write(&mut bufs.out);
                self.write_response_head(&mut bufs.out, &resp, ctx, close)
                    .map_err(|_| AttemptError::Upstream { timed_out: false, error: ErrorType::InvalidHTTPHeader })?;
                bufs.up.advance(head_len);
                Ok(Some((up, head, close)))
            });
            match result {
                Ok(Some((mut up, head, close))) => {
                    let (exchange, reusable) = self.respond(down, bufs, ctx, &mut up, &head, close, &attempt).await;
                    if reusable {
                        pool::checkin(key, up);
                    }
                    return exchange;
                }
                Ok(None) => {
                    // A retriable status: this response is dropped with its connection.
                    self.proxy.record_retry(ctx);
                    bufs.up.clear();
                }
                Err(AttemptError::Connect { timed_out, error }) => {
                    let retry = self.proxy.connect_failed(ctx, timed_out);
                    warn!(upstream = %attempt.host.addr, %error, retry, "upstream connect failed");
                    if !retry {
                        return Exchange::Failed;
                    }
                }
                Err(AttemptError::Downstream) => {
                    return Exchange::Broken { status: 0, upstream_body: 0, error: ErrorType::ReadError };
                }
                Err(AttemptError::Stream(which)) => {
                    // Sets the 408 as the reply; the upstream connection is dropped.
                    self.proxy.stream_timed_out(ctx, which);
                    return Exchange::Failed;
                }
                Err(AttemptError::Upstream { timed_out, error }) => {
                    let failure = AttemptFailure {
                        timed_out,
                        from_upstream: true,
                        response_started: false,
                        body_truncated: body.streamed,
                        idempotent: req.method.is_idempotent(),
                        reused_connection: reused,
                    };
                    let retry = self.proxy.attempt_failed(ctx, failure);
                    debug!(upstream = %attempt.host.addr, error = error.as_str(), retry, reused, "upstream request failed");
                    bufs.up.clear();
                    if !retry {
                        return Exchange::Failed;
                    }
                }
            }
        }
    }

    /// Writes the response head the client gets: the upstream's headers
    /// without hop-by-hop ones, plus the proxy's own (see
    /// [`Proxy::downstream_headers`], which this matches).
    fn write_response_head(
        &self,
        out: &mut Vec<u8>,
        resp: &httparse::Response<'_, '_>,
        ctx: &RequestCtx,
        close: bool,
    ) -> pingora_error::Result<()> {
        let status = resp.code.unwrap_or(502);
        wire::write_status_line(out, status, resp.reason);
        if self.proxy.edits_response_headers(ctx) {
            // Configured edits work on a header map, as in the Pingora engine.
            let mut head = ResponseHeader::build_no_case(status, Some(resp.headers.len() + 4))?;
            for h in resp.headers.iter().filter(|h| !wire::is_hop_by_hop(h.name.as_bytes())) {
                head.append_header(h.name.to_string(), h.value)?;
            }
            self.proxy.downstream_headers(&mut head, ctx)?;
            for (name, value) in head.headers.iter() {
                wire::put_header(out, name.as_str().as_bytes(), value.as_bytes());
            }
        } else {
            let hcm = &self.proxy.listener(ctx).hcm;
            let request_id = ctx.request_id.as_ref().filter(|_| hcm.always_set_request_id_in_response);
            let mut has_server = false;
            for h in resp.headers.iter() {
                let name = h.name.as_bytes();
                let ours = name.eq_ignore_ascii_case(X_UPSTREAM_SERVICE_TIME.as_bytes())
                    || (request_id.is_some() && name.eq_ignore_ascii_case(X_REQUEST_ID.as_bytes()));
                if ours || wire::is_hop_by_hop(name) {
                    continue;
                }
                if name.eq_ignore_ascii_case(b"server") {
                    has_server = true;
                    if hcm.server_header == ServerHeader::Overwrite {
                        continue;
                    }
                }
                wire::put_header(out, name, h.value);
            }
            if let Some(t) = ctx.upstream_time {
                wire::put_millis_header(out, X_UPSTREAM_SERVICE_TIME.as_bytes(), t);
            }
            let add_server = match hcm.server_header {
                ServerHeader::Overwrite => true,
                ServerHeader::AppendIfAbsent => !has_server,
                ServerHeader::PassThrough => false,
            };
            if add_server {
                wire::put_header(out, b"server", hcm.server_name.as_bytes());
            }
            if let Some(id) = request_id {
                wire::put_header(out, X_REQUEST_ID.as_bytes(), id.as_bytes());
            }
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// Sends the response head in `bufs.out` and the body after it; also
    /// says whether the upstream connection ended cleanly, to be pooled.
    /// (It borrows what the caller holds anyway: by value, each would sit
    /// twice in the connection's task.)
    #[allow(clippy::too_many_arguments)]
    async fn respond<D: ClientStream>(
        &self,
        down: &mut D,
        bufs: &mut Buffers,
        ctx: &mut RequestCtx,
        up: &mut Upstream,
        head: &wire::ResponseHead,
        close: bool,
        attempt: &AttemptStart,
    ) -> (Exchange, bool) {
        let status = head.status;
        match pass_body(down, bufs, up, head.framing, close, attempt).await {
            Ok((sent, clean)) => {
                let reusable = clean && !head.close && head.framing != Framing::UntilClose;
                (Exchange::Done { status, keep_alive: !close, upstream_body: sent }, reusable)
            }
            Err((sent, error, side)) => {
                if side == Side::Idle {
                    self.proxy.stream_timed_out(ctx, StreamTimeout::Idle);
                } else if side == Side::Upstream {
                    let failure = AttemptFailure {
                        timed_out: error == ErrorType::ReadTimedout,
                        from_upstream: true,
                        response_started: true,
                        body_truncated: true,
                        idempotent: false,
                        reused_connection: false,
                    };
                    self.proxy.attempt_failed(ctx, failure);
                }
                (Exchange::Broken { status, upstream_body: sent, error }, false)
            }
        }
    }

    /// A pooled connection to the attempt's host, or a new one.
    async fn upstream(
        &self,
        attempt: &AttemptStart,
        key: PoolKey,
        pooled: bool,
    ) -> Result<(Upstream, bool), AttemptError> {
        if let Some(conn) = pooled.then(|| pool::checkout(key)).flatten() {
            return Ok((conn, true));
        }
        // Boxed: the connect futures (Pingora's TLS one above all) would
        // otherwise be part of every connection's state, and copied with it.
        Box::pin(self.connect(attempt)).await.map(|up| (up, false))
    }

    /// A new connection to the attempt's host.
    async fn connect(&self, attempt: &AttemptStart) -> Result<Upstream, AttemptError> {
        let cluster = &attempt.cluster;
        let connect_timeout = cluster.spec.connect_timeout;
        if cluster.spec.tls.is_some() {
            let peer = super::peer(cluster, &attempt.host, attempt.timeout);
            return match self.connector.new_stream(&peer).await {
                Ok(s) => Ok(Upstream::pingora(s)),
                Err(e) => Err(AttemptError::Connect {
                    timed_out: matches!(e.etype(), ErrorType::ConnectTimedout),
                    error: e.to_string(),
                }),
            };
        }
        match timeout(connect_timeout, TcpStream::connect(attempt.host.addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                let tracer = UpstreamConnectionTracer::new(&cluster.stats, &attempt.host);
                Ok(Upstream::tcp(s, tracer))
            }
            Ok(Err(e)) => Err(AttemptError::Connect { timed_out: false, error: e.to_string() }),
            Err(_) => Err(AttemptError::Connect { timed_out: true, error: "connect timed out".into() }),
        }
    }

    /// Sends the request head and body and reads up to the final response
    /// head, which is left at the start of `bufs.up`; returns its length.
    #[allow(clippy::too_many_arguments)]
    async fn send_request<D: ClientStream>(
        &self,
        down: &mut D,
        bufs: &mut Buffers,
        req: &RequestHeader,
        ctx: &RequestCtx,
        body: &mut Body,
        mut up: Upstream,
        attempt: &AttemptStart,
    ) -> Result<(Upstream, usize), AttemptError> {
        let idle = attempt.idle;
        let deadline = attempt.timeout.map(|t| Instant::from_std(attempt.started) + t);
        recycle::take_write(&mut bufs.out);
        if self.proxy.forwards_request_unchanged(ctx) {
            // Most routes: the head goes out as it came in (no copy of the header map).
            wire::write_request_head(&mut bufs.out, req, Some(self.proxy.expected_timeout(ctx)));
        } else {
            let mut upstream_req = req.clone();
            self.proxy
                .upstream_headers(&mut upstream_req, req, false, ctx)
                .map_err(|e| AttemptError::Upstream { timed_out: false, error: e.etype().clone() })?;
            wire::write_request_head(&mut bufs.out, &upstream_req, None);
        }
        bufs.out.extend_from_slice(&body.buffered);
        let request_deadline = ctx.request_deadline.map(Instant::from_std);
        let attempt_timer = &mut bufs.attempt_timer;
        let (out, down_buf, up_buf) = (&mut bufs.out, &mut bufs.down, &mut bufs.up);
        let exchange = async {
            // A write the upstream refuses may mean it has answered already
            // (413 to an upload it will not take): its answer, if there is
            // one, is read below before the write error counts.
            let mut write_error =
                within(idle, up.write_all(out)).await.map_err(|_| AttemptError::Stream(StreamTimeout::Idle))?.err();
            // The rest of a large body streams from the client, each read
            // within the stream idle timeout and what is left of `request_timeout`.
            while body.unread > 0 && write_error.is_none() {
                if down_buf.is_empty() {
                    recycle::take_read(down_buf, Source::Client);
                    down_buf.reserve(BODY_READ.min(body.unread as usize));
                    let idle_ends = idle.map(|t| Instant::now() + t);
                    let read = match shorter(request_deadline, idle_ends) {
                        Some(end) => timeout_at(end, down.read_buf(down_buf)).await.map_err(|_| {
                            match Some(end) == request_deadline {
                                true => AttemptError::Stream(StreamTimeout::Request),
                                false => AttemptError::Stream(StreamTimeout::Idle),
                            }
                        })?,
                        None => down.read_buf(down_buf).await,
                    };
                    match read {
                        Ok(0) | Err(_) => return Err(AttemptError::Downstream),
                        Ok(_) => {}
                    }
                }
                let n = (body.unread as usize).min(down_buf.len());
                let chunk = down_buf.split_to(n);
                body.unread -= n as u64;
                write_error = within(idle, up.write_all(&chunk))
                    .await
                    .map_err(|_| AttemptError::Stream(StreamTimeout::Idle))?
                    .err();
            }
            // The request went out: no buffer is held while the upstream thinks.
            Buffers::give_back(out, down_buf, up_buf);
            // Waiting for the response: the stream idle timeout needs a timer
            // of its own only if it is shorter than the attempt's timeout.
            let idle_first = match attempt.io_timeout() {
                (t, true) => t,
                _ => None,
            };
            let head = match idle_first {
                Some(t) => timeout(t, read_response_head(&mut up, up_buf))
                    .await
                    .map_err(|_| AttemptError::Stream(StreamTimeout::Idle))?,
                None => read_response_head(&mut up, up_buf).await,
            };
            match (head, write_error) {
                (Ok(head_len), _) => Ok(head_len),
                (Err(head_error), Some(e)) => {
                    debug!(?head_error, "no answer from the upstream after a failed write");
                    Err(upstream_write(e))
                }
                (Err(e), None) => Err(e),
            }
        };
        let head_len = attempt_timer
            .run(deadline, exchange)
            .await
            .map_err(|_| AttemptError::Upstream { timed_out: true, error: ErrorType::ReadTimedout })??;
        Ok((up, head_len))
    }
}

/// Why reading a request head stopped short of a request.
enum Next {
    HandOff,
    /// A reply to a head the codec refuses, and when the head began.
    Reject(LocalReply, std::time::Instant),
    TimedOut(StreamTimeout, std::time::Instant),
}

fn upstream_write(e: std::io::Error) -> AttemptError {
    debug!(error = %e, "upstream write failed");
    AttemptError::Upstream { timed_out: false, error: ErrorType::WriteError }
}

/// Passes the response body from `up` to the client, after the head
/// waiting in `bufs.out`. `Ok((body bytes, upstream connection clean))`;
/// `Err((body bytes, error, whether the upstream caused it))`.
async fn pass_body<D: ClientStream>(
    down: &mut D,
    bufs: &mut Buffers,
    up: &mut Upstream,
    framing: Framing,
    close: bool,
    attempt: &AttemptStart,
) -> Result<(u64, bool), (u64, ErrorType, Side)> {
    let (read_timeout, idle_binds) = attempt.io_timeout();
    let read_side = if idle_binds { Side::Idle } else { Side::Upstream };
    let mut sent = 0u64;
    let mut chunks = wire::ChunkedScanner::default();
    let mut left = match framing {
        Framing::Length(n) => n,
        Framing::Empty => 0,
        Framing::Chunked | Framing::UntilClose => u64::MAX,
    };
    loop {
        // What the upstream sent, up to the end of the body.
        let take = match framing {
            Framing::Empty => 0,
            Framing::Length(_) => left.min(bufs.up.len() as u64) as usize,
            Framing::Chunked => match chunks.scan(&bufs.up) {
                Ok(Some(end)) => {
                    left = 0;
                    end
                }
                Ok(None) => bufs.up.len(),
                Err(e) => {
                    debug!(error = e, "malformed chunked response body");
                    return Err((sent, ErrorType::InvalidHTTPHeader, Side::Upstream));
                }
            },
            Framing::UntilClose => bufs.up.len(),
        };
        // The head (first time round) and the body bytes read with it go
        // out in one write (a small body part copied behind the head, a
        // large one beside it in a vectored write); later parts straight
        // from the upstream buffer.
        let body = &bufs.up[..take];
        let (head, data): (&[u8], &[u8]) = if bufs.out.is_empty() {
            (&[], body)
        } else if body.len() <= COALESCE {
            bufs.out.extend_from_slice(body);
            (&[], &bufs.out)
        } else {
            (&bufs.out, body)
        };
        if !data.is_empty() {
            let last = close && ends_body(framing, take, left);
            let write = async {
                match last {
                    true => down.write_last(head, data).await,
                    false => write_two(down, head, data).await,
                }
            };
            match within(attempt.idle, write).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err((sent, ErrorType::WriteError, Side::Downstream)),
                Err(_) => return Err((sent, ErrorType::WriteTimedout, Side::Idle)),
            }
        }
        bufs.out.clear();
        bufs.up.advance(take);
        sent += take as u64;
        if let Framing::Length(_) = framing {
            left -= take as u64;
        }
        if left == 0 {
            return Ok((sent, bufs.up.is_empty()));
        }
        bufs.up.reserve(BODY_READ.min(usize::try_from(left).unwrap_or(BODY_READ)));
        match within(read_timeout, up.read_buf(&mut bufs.up)).await {
            Ok(Ok(0)) if framing == Framing::UntilClose => return Ok((sent, false)),
            Ok(Ok(0)) => return Err((sent, ErrorType::ConnectionClosed, Side::Upstream)),
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Err((sent, ErrorType::ReadError, Side::Upstream)),
            Err(_) => return Err((sent, ErrorType::ReadTimedout, read_side)),
        }
    }
}

/// Whether writing `take` more bytes ends a body with `framing`, of which
/// `left` were still to come (`pass_body`'s count: 0 once a chunked body's
/// end is found, `u64::MAX` while it or a close-delimited one goes on).
fn ends_body(framing: Framing, take: usize, left: u64) -> bool {
    match framing {
        Framing::Length(_) => take as u64 == left,
        Framing::Empty | Framing::Chunked => left == 0,
        // Only the upstream's close says it is over.
        Framing::UntilClose => false,
    }
}

/// Reads until a complete final response head is at the start of `buf`,
/// skipping interim (1xx) responses; returns the head's length.
async fn read_response_head(up: &mut Upstream, buf: &mut BytesMut) -> Result<usize, AttemptError> {
    let mut scanned = 0;
    loop {
        if let Some(end) = head_end(buf, scanned) {
            // Interim responses (103 Early Hints) are dropped, as Envoy does.
            if is_interim(buf) {
                buf.advance(end);
                scanned = 0;
                continue;
            }
            return Ok(end);
        }
        scanned = buf.len().saturating_sub(3);
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(AttemptError::Upstream { timed_out: false, error: ErrorType::InvalidHTTPHeader });
        }
        if buf.capacity() == 0 {
            // Waiting for the response: no buffer held until it comes.
            up.readable()
                .await
                .map_err(|_| AttemptError::Upstream { timed_out: false, error: ErrorType::ReadError })?;
            recycle::take_read(buf, Source::Upstream);
        }
        buf.reserve(BUF);
        match up.read_buf(buf).await {
            Ok(0) => return Err(AttemptError::Upstream { timed_out: false, error: ErrorType::ConnectionClosed }),
            Ok(_) => {}
            Err(_) => return Err(AttemptError::Upstream { timed_out: false, error: ErrorType::ReadError }),
        }
    }
}

/// Whether the complete head at the start of `buf` is an interim (1xx)
/// response to skip. `HTTP/1.1 1xx`: the status starts at byte 9; the
/// caller parses the rest.
pub(crate) fn is_interim(buf: &[u8]) -> bool {
    buf.get(9) == Some(&b'1') && !buf.starts_with(b"HTTP/1.1 101")
}

/// The end of the head (`\r\n\r\n`) in `buf`, looking from `from`.
pub(crate) fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(i) = memchr::memchr(b'\n', &buf[at..]) {
        let nl = at + i;
        if buf[nl + 1..].starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        if buf.get(nl + 1) == Some(&b'\n') {
            return Some(nl + 2);
        }
        at = nl + 1;
    }
    None
}

/// Runs `f` within `limit` (`Err` when it runs out), the time counted from
/// the first poll that finds it not ready. A future that is ready at once
/// costs no timer: most reads and writes on the hot path are.
fn within<F: Future>(limit: Option<Duration>, f: F) -> Within<F> {
    Within { f, limit, timer: None }
}

/// After answering a request whose body was not all read: the rest is read
/// and dropped for a while before the connection closes, so the client
/// gets the answer instead of a reset (Envoy's delayed close, nginx's
/// lingering close).
async fn linger<D: ClientStream>(down: &mut D) {
    let mut sink = vec![0u8; BODY_READ];
    let _ = timeout(LINGER, async {
        while let Ok(n) = down.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

async fn write_all<S: AsyncWrite + Unpin + ?Sized>(s: &mut S, data: &[u8]) -> std::io::Result<()> {
    s.write_all(data).await?;
    s.flush().await
}

/// Writes `first` then `second` (`first` may be empty), with vectored
/// writes when both are there.
async fn write_two<S: AsyncWrite + Unpin + ?Sized>(
    s: &mut S,
    mut first: &[u8],
    mut second: &[u8],
) -> std::io::Result<()> {
    while !first.is_empty() {
        let n = s.write_vectored(&[std::io::IoSlice::new(first), std::io::IoSlice::new(second)]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_first = n.min(first.len());
        first = &first[from_first..];
        second = &second[n - from_first..];
    }
    write_all(s, second).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::IoSlice;
    use std::task::Context;

    /// A socket that takes at most three bytes per write, vectored or not.
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(3);
            self.0.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut n = 0;
            for b in bufs {
                let k = b.len().min(3 - n);
                self.0.extend_from_slice(&b[..k]);
                n += k;
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn only_the_write_that_completes_a_body_ends_it() {
        // (framing, bytes taken, bytes left before them, ends)
        let cases = [
            (Framing::Length(10), 4, 10, false),
            (Framing::Length(10), 6, 6, true),
            (Framing::Length(10), 10, 10, true),
            (Framing::Empty, 0, 0, true),
            (Framing::Chunked, 100, u64::MAX, false),
            (Framing::Chunked, 5, 0, true),
            (Framing::UntilClose, 100, u64::MAX, false),
        ];
        for (framing, take, left, ends) in cases {
            assert_eq!(ends_body(framing, take, left), ends, "{framing:?} take {take} left {left}");
        }
    }

    #[tokio::test]
    async fn a_head_and_body_written_side_by_side_survive_short_writes() {
        let cases: [(&[u8], &[u8]); 4] =
            [(b"HTTP/1.1 200 OK\r\n\r\n", b"0123456789"), (b"", b"body only"), (b"head only", b""), (b"ab", b"c")];
        for (head, body) in cases {
            let mut w = Trickle(Vec::new());
            write_two(&mut w, head, body).await.unwrap();
            assert_eq!(w.0, [head, body].concat());
        }
    }
}
