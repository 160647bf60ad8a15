//! HTTP/2 streams whose cluster speaks HTTP/2 upstream (gRPC above all),
//! forwarded stream to stream by our own code instead of Pingora's
//! `HttpProxy` (called by [`super::stream`] once the request is admitted
//! and routed; `Proxy::forwards_h2` decides which streams qualify).
//!
//! Pingora's path costs a gRPC call three times HAProxy's instructions:
//! its boxed per-stream futures, the request head cloned and converted
//! twice, a response channel and task, its timer wheel, its in-use pool
//! taking the connection out and back, and a `getpeername` per stream
//! (bench/RESULTS.md, "gRPC unary: where a call goes"). Here a stream takes
//! a slot on a pooled connection ([`super::client`]), the request goes with
//! `send_request`, DATA passes both ways as it comes under both sides'
//! flow control, and the response's trailers follow as trailers. The
//! lifecycle is the one every engine runs: attempts and retries, circuit
//! breakers, outlier detection, timeouts, stats and the access log.
//!
//! What differs from the request as it came: `:authority` is the rewritten
//! `Host` when the route rewrites it (HTTP/2 carries no `Host` upstream),
//! `:scheme` is the upstream connection's, and fields that are
//! connection-specific in HTTP/2 (RFC 9113 §8.2.2) never go upstream even
//! if a route's edits add them. Request trailers are not forwarded
//! (neither does Pingora's path: its HTTP/2 session does not read them).
//!
//! Layout: this file runs the attempts and a stream's event loop;
//! [`heads`] builds the upstream request and sends the response head;
//! [`io`] moves DATA and watches the client; [`deadline`] is the stream's
//! timer.

mod deadline;
mod heads;
mod io;

use super::client::{Lease, LeaseError};
use crate::proxy::attempt::{AttemptFailure, AttemptStart};
use crate::proxy::context::{RequestCtx, StreamTimeout};
use crate::proxy::h1::{send_down, Downgraded, NativeH1, PoolKey};
use crate::proxy::LocalReply;
use bytes::Bytes;
use deadline::Deadline;
use h2::{RecvStream, SendStream};
use heads::HeadError;
use http::{HeaderMap, Response};
use io::{capacity, client_event, data, Client};
use pingora_core::protocols::http::v2::server::HttpSession;
use pingora_error::ErrorType;
use std::future::poll_fn;
use std::sync::Arc;
use std::time::Instant;
use tokio::time::timeout_at;
use tracing::{debug, warn};

/// How one attempt ended.
enum Attempt {
    /// The stream is served (or broken): the caller returns this.
    Over(Downgraded),
    /// Try again (the lifecycle has recorded the retry).
    Retry,
    /// No response went out: the reply is in `ctx.last_failure`.
    Failed,
    /// The host never processed the stream: it may go again at once.
    Unsent,
}

/// Which timer ran out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Timer {
    /// The attempt's (route or per-try) timeout, or the upstream's read
    /// timeout once the response has started.
    Upstream,
    /// The stream idle timeout.
    Idle,
    /// `request_timeout`: the request body did not arrive in time.
    Request,
}

/// Everything that can move a stream along, as one event.
enum Event {
    Client(Client),
    /// Upstream flow-control capacity for the pending request DATA.
    Capacity(Option<Result<usize, h2::Error>>),
    Head(Result<Response<RecvStream>, h2::Error>),
    Data(Option<Result<Bytes, h2::Error>>),
    Trailers(Result<Option<HeaderMap>, h2::Error>),
    Timer(Timer),
}

impl NativeH1 {
    /// Serves an admitted and routed HTTP/2 stream on its HTTP/2 cluster.
    pub async fn forward_h2(self: &Arc<Self>, session: &mut HttpSession, ctx: &mut RequestCtx) -> Downgraded {
        let deadline = ctx.stream_deadline;
        let exchange = self.h2_exchange(session, ctx);
        match deadline {
            Some(end) => match timeout_at(end.into(), exchange).await {
                Ok(served) => served,
                Err(_) => {
                    self.proxy().max_duration_reached(ctx);
                    Downgraded::MaxDuration
                }
            },
            None => exchange.await,
        }
    }

    async fn h2_exchange(self: &Arc<Self>, session: &mut HttpSession, ctx: &mut RequestCtx) -> Downgraded {
        let proxy = self.proxy();
        // Request DATA taken from the client: an attempt after that cannot
        // send the body again.
        let mut body_taken = false;
        loop {
            let attempt = match proxy.begin_attempt(ctx, false).await {
                Ok(a) => a,
                Err(_) => return Downgraded::Failed,
            };
            let key = (ctx.cluster.unwrap_or(0), attempt.host.addr.clone());
            let mut outcome = match self.lease_within(session, ctx, &attempt, &key, body_taken).await {
                Ok((lease, reused)) => {
                    self.h2_attempt(session, ctx, &attempt, lease, reused, false, &mut body_taken).await
                }
                Err(failed) => failed,
            };
            if matches!(outcome, Attempt::Unsent) {
                // The host had told the connection to go away before it
                // processed the stream: once more on a new connection,
                // not counted as a retry (the keep-alive race of HTTP/2).
                debug!(upstream = %attempt.host.addr, "stream not processed by the host; on a new connection");
                outcome = match self.lease_within(session, ctx, &attempt, &key, body_taken).await {
                    Ok((lease, reused)) => {
                        self.h2_attempt(session, ctx, &attempt, lease, reused, true, &mut body_taken).await
                    }
                    Err(failed) => failed,
                };
            }
            match outcome {
                Attempt::Over(served) => return served,
                Attempt::Retry => continue,
                Attempt::Failed | Attempt::Unsent => return Downgraded::Failed,
            }
        }
    }

    /// A stream slot on a connection to the attempt's host, waited for
    /// within the attempt's timeout and only while the client is there;
    /// `Err`: how the attempt ended instead (a connect failure recorded).
    async fn lease_within(
        self: &Arc<Self>,
        session: &mut HttpSession,
        ctx: &mut RequestCtx,
        attempt: &AttemptStart,
        key: &PoolKey,
        body_taken: bool,
    ) -> Result<(Lease, bool), Attempt> {
        let end = attempt.timeout.map(|t| attempt.started + t);
        let lease = async {
            match end {
                Some(end) => timeout_at(end.into(), self.h2_lease(attempt, key)).await.ok(),
                None => Some(self.h2_lease(attempt, key).await),
            }
        };
        let leased = tokio::select! {
            biased;
            l = lease => Some(l),
            _ = session.idle() => None,
        };
        // No longer waiting for a connection, whatever came of it.
        ctx.pending_permit = None;
        let Some(leased) = leased else {
            return Err(Attempt::Over(Downgraded::Broken { upstream_body: 0, error: ErrorType::ReadError }));
        };
        match leased {
            Some(Ok(l)) => Ok(l),
            Some(Err(LeaseError::Connect { timed_out, error })) => {
                let retry = self.proxy().connect_failed(ctx, timed_out);
                warn!(upstream = %attempt.host.addr, %error, retry, "upstream connect failed");
                Err(retry_or_fail(retry && !body_taken))
            }
            None => {
                // Waited past the route (or per-try) timeout for a slot:
                // the proxy's queue, not the host's failure (outlier
                // detection does not count it).
                let failure =
                    AttemptFailure { from_upstream: false, ..failure(session, false, body_taken, true, false) };
                Err(retry_or_fail(self.proxy().attempt_failed(ctx, failure)))
            }
        }
    }

    /// One attempt: the request on a stream of the leased connection, then
    /// the response to the client. Unless it is the `last_chance`, a
    /// stream the host never processed (the connection could not take it,
    /// or it was above the last id of the host's GOAWAY) before any request
    /// DATA was taken comes back [`Attempt::Unsent`].
    #[allow(clippy::too_many_arguments)]
    async fn h2_attempt(
        &self,
        session: &mut HttpSession,
        ctx: &mut RequestCtx,
        attempt: &AttemptStart,
        mut lease: Lease,
        reused: bool,
        last_chance: bool,
        body_taken: &mut bool,
    ) -> Attempt {
        let proxy = self.proxy();
        let req = match self.upstream_request(session.req_header(), ctx, attempt) {
            Ok(r) => r,
            Err(why) => {
                debug!(error = why, "request cannot go upstream in HTTP/2");
                ctx.last_failure = Some(LocalReply::BadRequest);
                return Attempt::Failed;
            }
        };
        let mut request_done = session.is_body_done();
        let attempt_end = attempt.timeout.map(|t| attempt.started + t);
        // Ready at once unless the host lowered its stream limit under us:
        // then bounded by the attempt's timeout.
        let ready = poll_fn(|cx| lease.send.poll_ready(cx));
        let ready = match attempt_end {
            Some(end) => timeout_at(end.into(), ready).await,
            None => Ok(ready.await),
        };
        let sent = match ready {
            Ok(Ok(())) => lease.send.send_request(req, request_done),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                let failure = failure(session, reused, *body_taken, true, false);
                return retry_or_fail(proxy.attempt_failed(ctx, failure));
            }
        };
        let (head, mut up_body) = match sent {
            Ok(pair) => pair,
            Err(e) => {
                // The connection went away (GOAWAY, closed): this request
                // never reached the host.
                lease.retire();
                if !last_chance && !*body_taken {
                    return Attempt::Unsent;
                }
                return self.failed(ctx, session, attempt, &e, reused, *body_taken);
            }
        };
        let mut up_body = (!request_done).then_some(&mut up_body);
        let mut head = std::pin::pin!(head);
        // Request DATA read from the client, waiting for upstream capacity.
        let mut pending: Option<Bytes> = None;
        let mut recv: Option<RecvStream> = None;
        // The client's side of the response body, once its head went out.
        let mut down: Option<SendStream<Bytes>> = None;
        let mut upstream_body = 0u64;
        let max_body = proxy.listener(ctx).hcm.max_request_bytes.map(u64::from);
        let (read_timeout, idle_binds) = attempt.io_timeout();
        let mut last_moved = Instant::now();
        let mut timer = Deadline::new();
        loop {
            // The timer that runs out first, for where the stream is.
            let (deadline, which) = {
                let idle = ctx.stream_idle.map(|t| (last_moved + t, Timer::Idle));
                let upstream = match recv {
                    None => attempt_end.map(|e| (e, Timer::Upstream)),
                    Some(_) => {
                        read_timeout.map(|t| (last_moved + t, if idle_binds { Timer::Idle } else { Timer::Upstream }))
                    }
                };
                // `request_timeout` ends with the request, or once the
                // response has started (as Envoy's).
                let request = ctx
                    .request_deadline
                    .filter(|_| !request_done && recv.is_none() && session.response_written().is_none())
                    .map(|d| (d, Timer::Request));
                [idle, upstream, request].into_iter().flatten().min_by_key(|(d, _)| *d).unzip()
            };
            timer.set(deadline);
            // Request DATA is read only once the last went upstream; until
            // then (and once the request is in) the client is only watched
            // for a reset.
            let reading = !request_done && pending.is_none();
            let event = tokio::select! {
                biased;
                c = client_event(session, &mut down, reading) => Event::Client(c),
                c = capacity(&mut up_body, pending.as_ref().map_or(0, Bytes::len)), if pending.is_some() => Event::Capacity(c),
                h = head.as_mut(), if recv.is_none() => Event::Head(h),
                d = data(&mut recv), if recv.is_some() => Event::Data(d),
                () = timer.expired(), if deadline.is_some() => Event::Timer(which.unwrap_or(Timer::Upstream)),
            };
            match event {
                Event::Client(Client::Data(d)) => {
                    *body_taken = true;
                    ctx.body_bytes += d.len() as u64;
                    if max_body.is_some_and(|max| ctx.body_bytes > max) {
                        if session.response_written().is_some() {
                            return Attempt::Over(Downgraded::Broken { upstream_body, error: ErrorType::ReadError });
                        }
                        ctx.last_failure = Some(LocalReply::PayloadTooLarge);
                        return Attempt::Failed;
                    }
                    last_moved = Instant::now();
                    if d.is_empty() {
                        continue;
                    }
                    pending = Some(d);
                }
                Event::Client(Client::End) => {
                    request_done = true;
                    if let Some(up) = up_body.as_mut() {
                        if up.send_data(Bytes::new(), true).is_err() {
                            // The upstream stream is gone: its end shows on the response side.
                        }
                    }
                    up_body = None;
                }
                Event::Client(Client::Gone) => {
                    // Dropping the upstream stream resets it (CANCEL).
                    return Attempt::Over(Downgraded::Broken { upstream_body, error: ErrorType::ReadError });
                }
                Event::Capacity(Some(Ok(n))) if n > 0 => {
                    let Some(mut d) = pending.take() else { continue };
                    let chunk = d.split_to(n.min(d.len()));
                    let end = d.is_empty() && session.is_body_done();
                    let Some(up) = up_body.as_mut() else { continue };
                    if up.send_data(chunk, end).is_err() {
                        up_body = None;
                        continue;
                    }
                    if !d.is_empty() {
                        pending = Some(d);
                    } else if end {
                        request_done = true;
                        up_body = None;
                    }
                }
                Event::Capacity(Some(Ok(_))) => {}
                Event::Capacity(_) => {
                    // The upstream stream ended or was reset: no more body
                    // goes; the response side tells what happened.
                    pending = None;
                    up_body = None;
                    request_done = true;
                }
                Event::Head(Ok(resp)) => {
                    last_moved = Instant::now();
                    match self.response_head(session, ctx, resp, *body_taken) {
                        Ok(Some(body)) => {
                            recv = Some(body);
                            // The body and trailers go on h2's stream itself:
                            // Pingora's writer would add a timer of its own
                            // to every DATA frame.
                            down = session.take_response_body_writer();
                        }
                        Ok(None) => {
                            return Attempt::Over(Downgraded::Done { upstream_body: 0 });
                        }
                        Err(HeadError::RetryStatus) => {
                            proxy.record_retry(ctx);
                            return Attempt::Retry;
                        }
                        Err(HeadError::Protocol(why)) => {
                            debug!(upstream = %attempt.host.addr, error = why, "upstream response refused");
                            let failure = failure(session, reused, *body_taken, false, true);
                            return retry_or_fail(proxy.attempt_failed(ctx, failure));
                        }
                        Err(HeadError::Client) => {
                            return Attempt::Over(Downgraded::Broken {
                                upstream_body: 0,
                                error: ErrorType::WriteError,
                            });
                        }
                    }
                }
                Event::Head(Err(e)) => {
                    // A stream above a GOAWAY's last id was not processed
                    // (RFC 9113 §8.7): the keep-alive race of HTTP/2. A
                    // stream refused by itself is the retry policy's
                    // (`refused-stream`), as in Envoy.
                    // Only the host's own GOAWAY says so: h2 fails every
                    // stream with a GOAWAY of its own when the host breaks
                    // the protocol, processed or not.
                    if e.is_go_away() && e.is_remote() {
                        lease.retire();
                        if !last_chance && !*body_taken {
                            return Attempt::Unsent;
                        }
                    }
                    return self.failed(ctx, session, attempt, &e, reused, *body_taken);
                }
                Event::Data(Some(Ok(d))) => {
                    last_moved = Instant::now();
                    let Some(body) = recv.as_mut() else { continue };
                    let _ = body.flow_control().release_capacity(d.len());
                    upstream_body += d.len() as u64;
                    let end = body.is_end_stream();
                    if end && !request_done {
                        // The response is whole: whatever of the request is
                        // left is not needed (as Envoy, the stream ends).
                        request_done = true;
                    }
                    let Some(down) = down.as_mut() else { continue };
                    if let Err(e) = send_down(down, d, end, ctx.stream_idle).await {
                        return self.client_broke(ctx, upstream_body, &e);
                    }
                    if end {
                        return Attempt::Over(Downgraded::Done { upstream_body });
                    }
                }
                Event::Data(Some(Err(e))) => {
                    return self.broke_upstream(ctx, attempt, &e, upstream_body);
                }
                Event::Data(None) => {
                    let Some(mut body) = recv.take() else { continue };
                    // Trailers, if the response has them.
                    let trailers = tokio::select! {
                        t = body.trailers() => Event::Trailers(t),
                        () = timer.expired(), if deadline.is_some() => Event::Timer(which.unwrap_or(Timer::Upstream)),
                    };
                    let Some(down) = down.as_mut() else { continue };
                    return match trailers {
                        Event::Trailers(Ok(Some(t))) => match down.send_trailers(t) {
                            Ok(()) => Attempt::Over(Downgraded::Done { upstream_body }),
                            Err(_) => self.client_broke(ctx, upstream_body, &ErrorType::WriteError),
                        },
                        // The end as an empty DATA frame.
                        Event::Trailers(Ok(None)) => match down.send_data(Bytes::new(), true) {
                            Ok(()) => Attempt::Over(Downgraded::Done { upstream_body }),
                            Err(_) => self.client_broke(ctx, upstream_body, &ErrorType::WriteError),
                        },
                        Event::Trailers(Err(e)) => self.broke_upstream(ctx, attempt, &e, upstream_body),
                        _ => self.timed_out_in_body(ctx, which.unwrap_or(Timer::Upstream), upstream_body),
                    };
                }
                Event::Trailers(_) => {}
                Event::Timer(which) if recv.is_some() || session.response_written().is_some() => {
                    return self.timed_out_in_body(ctx, which, upstream_body);
                }
                Event::Timer(Timer::Upstream) => {
                    let failure = failure(session, reused, *body_taken, true, false);
                    return retry_or_fail(proxy.attempt_failed(ctx, failure));
                }
                Event::Timer(Timer::Idle) => {
                    proxy.stream_timed_out(ctx, StreamTimeout::Idle);
                    return Attempt::Failed;
                }
                Event::Timer(Timer::Request) => {
                    proxy.stream_timed_out(ctx, StreamTimeout::Request);
                    return Attempt::Failed;
                }
            }
        }
    }

    /// An attempt that failed before its response: recorded, retried if the
    /// lifecycle says so.
    #[allow(clippy::too_many_arguments)]
    fn failed(
        &self,
        ctx: &mut RequestCtx,
        session: &HttpSession,
        attempt: &AttemptStart,
        e: &h2::Error,
        reused: bool,
        body_taken: bool,
    ) -> Attempt {
        let protocol_error = e.reason() == Some(h2::Reason::PROTOCOL_ERROR) && !e.is_remote();
        let f = failure(session, reused, body_taken, false, protocol_error);
        let retry = self.proxy().attempt_failed(ctx, f);
        debug!(upstream = %attempt.host.addr, error = %e, retry, reused, "upstream request failed");
        retry_or_fail(retry)
    }

    /// The upstream broke off a response that had started.
    fn broke_upstream(
        &self,
        ctx: &mut RequestCtx,
        attempt: &AttemptStart,
        e: &h2::Error,
        upstream_body: u64,
    ) -> Attempt {
        let f = AttemptFailure {
            timed_out: false,
            protocol_error: false,
            from_upstream: true,
            response_started: true,
            body_truncated: true,
            idempotent: false,
            reused_connection: false,
        };
        self.proxy().attempt_failed(ctx, f);
        debug!(upstream = %attempt.host.addr, error = %e, "upstream response broke off");
        Attempt::Over(Downgraded::Broken { upstream_body, error: ErrorType::ReadError })
    }

    /// A timer ran out once the response had started: the stream is reset.
    fn timed_out_in_body(&self, ctx: &mut RequestCtx, which: Timer, upstream_body: u64) -> Attempt {
        match which {
            Timer::Upstream => {
                let f = AttemptFailure {
                    timed_out: true,
                    protocol_error: false,
                    from_upstream: true,
                    response_started: true,
                    body_truncated: true,
                    idempotent: false,
                    reused_connection: false,
                };
                self.proxy().attempt_failed(ctx, f);
            }
            Timer::Idle | Timer::Request => {
                self.proxy().stream_timed_out(ctx, StreamTimeout::Idle);
            }
        }
        Attempt::Over(Downgraded::Broken { upstream_body, error: ErrorType::ReadTimedout })
    }

    /// Writing to the client failed (it went away, or its window stayed
    /// shut past the stream idle timeout).
    fn client_broke(&self, ctx: &mut RequestCtx, upstream_body: u64, e: &ErrorType) -> Attempt {
        if *e == ErrorType::WriteTimedout {
            self.proxy().stream_timed_out(ctx, StreamTimeout::Idle);
        }
        Attempt::Over(Downgraded::Broken { upstream_body, error: e.clone() })
    }
}

fn retry_or_fail(retry: bool) -> Attempt {
    if retry {
        Attempt::Retry
    } else {
        Attempt::Failed
    }
}

/// An attempt's failure before its response started, for the lifecycle.
fn failure(
    session: &HttpSession,
    reused: bool,
    body_taken: bool,
    timed_out: bool,
    protocol_error: bool,
) -> AttemptFailure {
    AttemptFailure {
        timed_out,
        protocol_error,
        from_upstream: true,
        response_started: false,
        body_truncated: body_taken,
        idempotent: session.req_header().method.is_idempotent(),
        reused_connection: reused,
    }
}
