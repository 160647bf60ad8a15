//! One request's exchange with its cluster: the attempts (each sent by
//! `send`), the retry decisions the lifecycle makes after each, and the
//! response head and body the client gets.

use super::body::{pass_body, Body, BodyError, Passed, Side};
use super::buffers::Buffers;
use super::client::Client;
use super::pool::{self, PoolKey, Upstream};
use super::recycle;
use super::send::AttemptError;
use super::wire::{self, Framing, ResponseHead};
use super::NativeH1;
use crate::drain::Drain;
use crate::proxy::attempt::{AttemptFailure, AttemptStart};
use crate::proxy::context::{RequestCtx, StreamTimeout};
use bytes::Buf;
use http::Method;
use pingora_error::ErrorType;
use pingora_http::RequestHeader;
use std::sync::atomic::Ordering::Relaxed;
use tracing::{debug, warn};

/// How an exchange with the upstream ended.
pub(super) enum Exchange {
    /// The response went to the client; whether the client connection may
    /// carry another request.
    Done { status: u16, keep_alive: bool, upstream_body: u64 },
    /// No response headers went out: the proxy answers itself.
    Failed,
    /// The response broke off after its headers went out (or the client went
    /// away): the connection must close.
    Broken { status: u16, upstream_body: u64, error: ErrorType },
}

/// How one upstream attempt ended.
enum Attempt {
    /// A final response to forward: its connection, its head (left at the
    /// start of `bufs.up`, its length given), and whether the client
    /// connection closes after it.
    Answer {
        up: Upstream,
        head: ResponseHead,
        close: bool,
    },
    /// The response's status asks for a retry.
    RetryStatus,
    Failed(AttemptError),
}

impl NativeH1 {
    /// Forwards the request to the route's cluster, retrying as the route
    /// and the defaults allow, and streams the response back.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn forward<D: Client>(
        &self,
        down: &mut D,
        bufs: &mut Buffers,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
        body: &mut Body,
        keep_alive: bool,
        drain: &Drain,
    ) -> Exchange {
        loop {
            let attempt = match self.proxy.begin_attempt(ctx, false).await {
                Ok(a) => a,
                // `begin_attempt` has set `ctx.last_failure`, the reply to send.
                Err(_) => return Exchange::Failed,
            };
            let key: PoolKey = (ctx.cluster.unwrap_or(0), attempt.host.addr.clone());
            let (outcome, reused) = self.attempt(down, bufs, req, ctx, body, &key, &attempt).await;
            let outcome = match outcome {
                Ok((up, head_len)) => self.answer(down, bufs, req, ctx, body, up, head_len, keep_alive, drain),
                Err(e) => Attempt::Failed(e),
            };
            match outcome {
                Attempt::Answer { mut up, head, close } => {
                    let (exchange, reusable) = self.respond(down, bufs, ctx, &mut up, &head, close, &attempt).await;
                    if reusable {
                        pool::checkin(key, up, attempt.cluster.spec.http.idle_timeout);
                    }
                    return exchange;
                }
                Attempt::RetryStatus => {
                    // This response is dropped with its connection.
                    self.proxy.record_retry(ctx);
                    bufs.up.clear();
                }
                Attempt::Failed(AttemptError::Connect { timed_out, error }) => {
                    let retry = self.proxy.connect_failed(ctx, timed_out);
                    warn!(upstream = %attempt.host.addr, %error, retry, "upstream connect failed");
                    if !retry {
                        return Exchange::Failed;
                    }
                }
                Attempt::Failed(AttemptError::Downstream) => {
                    return Exchange::Broken { status: 0, upstream_body: 0, error: ErrorType::ReadError };
                }
                Attempt::Failed(AttemptError::Client(e)) => {
                    if e == BodyError::Malformed {
                        self.proxy.listener(ctx).stats.downstream_cx_protocol_error.fetch_add(1, Relaxed);
                    }
                    ctx.last_failure = Some(e.reply());
                    return Exchange::Failed;
                }
                Attempt::Failed(AttemptError::Stream(which)) => {
                    // Sets the 408 as the reply; the upstream connection is dropped.
                    self.proxy.stream_timed_out(ctx, which);
                    return Exchange::Failed;
                }
                Attempt::Failed(failed @ (AttemptError::Upstream { .. } | AttemptError::Protocol(_))) => {
                    let (timed_out, protocol_error, why) = match failed {
                        AttemptError::Upstream { timed_out, error } => (timed_out, false, error.as_str()),
                        AttemptError::Protocol(why) => (false, true, why),
                        _ => (false, false, ""),
                    };
                    let failure = AttemptFailure {
                        timed_out,
                        protocol_error,
                        from_upstream: true,
                        response_started: false,
                        body_truncated: body.streamed,
                        idempotent: req.method.is_idempotent(),
                        reused_connection: reused,
                    };
                    let retry = self.proxy.attempt_failed(ctx, failure);
                    debug!(upstream = %attempt.host.addr, error = why, retry, reused, "upstream request failed");
                    bufs.up.clear();
                    if !retry {
                        return Exchange::Failed;
                    }
                }
            }
        }
    }

    /// One attempt on the host `attempt` picked: on a pooled connection if
    /// there is one, then (if the upstream had just closed that one) on a
    /// new connection. Returns the connection and the final response
    /// head's length, and whether the connection was a pooled one.
    #[allow(clippy::too_many_arguments)]
    async fn attempt<D: Client>(
        &self,
        down: &mut D,
        bufs: &mut Buffers,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
        body: &mut Body,
        key: &PoolKey,
        attempt: &AttemptStart,
    ) -> (Result<(Upstream, usize), AttemptError>, bool) {
        let mut reused = false;
        let mut result = Err(AttemptError::Downstream);
        for pooled in [true, false] {
            result = match self.upstream(attempt, key, pooled).await {
                Ok((up, was_pooled)) => {
                    reused = was_pooled;
                    ctx.pending_permit = None;
                    self.send_request(down, bufs, req, ctx, body, up, attempt).await
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
        (result, reused)
    }

    /// Checks the final response head at the start of `bufs.up`, decides
    /// on a retry by its status, and writes the head the client gets into
    /// `bufs.out`.
    #[allow(clippy::too_many_arguments)]
    fn answer<D: Client>(
        &self,
        down: &mut D,
        bufs: &mut Buffers,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
        body: &Body,
        up: Upstream,
        head_len: usize,
        keep_alive: bool,
        drain: &Drain,
    ) -> Attempt {
        let mut slots = wire::header_slots();
        let mut resp = httparse::Response::new(&mut []);
        let parsed = wire::parse_response(&mut resp, &bufs.up[..head_len], &mut slots);
        let mut head = match parsed {
            // The scan found the head's end: the parse is complete or fails.
            Ok(httparse::Status::Complete(_)) => match wire::response_head(&resp, req.method == Method::HEAD) {
                Ok(head) => head,
                Err(why) => return Attempt::Failed(AttemptError::Protocol(why)),
            },
            Ok(httparse::Status::Partial) | Err(_) => {
                return Attempt::Failed(AttemptError::Protocol("malformed response head"))
            }
        };
        // An upstream connection that did not take the whole body is not reused.
        head.close |= !body.complete();
        if self.proxy.upstream_answered(ctx, head.status, body.streamed) {
            return Attempt::RetryStatus;
        }
        // A body the upstream answered before it all arrived leaves the
        // rest unread on the client connection: it must close. A drain
        // that began while the request was in flight closes the connection
        // after this response, and says so (as Envoy does).
        let close = !keep_alive || drain.is_draining() || head.framing == Framing::UntilClose || !body.complete();
        recycle::take_write(&mut bufs.out);
        if down.response_head(self, &mut bufs.out, &resp, &head, ctx, close).is_err() {
            return Attempt::Failed(AttemptError::Protocol("response head cannot be forwarded"));
        }
        bufs.up.advance(head_len);
        Attempt::Answer { up, head, close }
    }
}

impl NativeH1 {
    /// Sends the response head in `bufs.out` and the body after it; also
    /// says whether the upstream connection ended cleanly, to be pooled.
    /// (It borrows what the caller holds anyway: by value, each would sit
    /// twice in the connection's task.)
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn respond<D: Client>(
        &self,
        down: &mut D,
        bufs: &mut Buffers,
        ctx: &mut RequestCtx,
        up: &mut Upstream,
        head: &ResponseHead,
        close: bool,
        attempt: &AttemptStart,
    ) -> (Exchange, bool) {
        let status = head.status;
        ctx.response_started = Some(status);
        match pass_body(down, bufs, up, head.framing, close, attempt).await {
            Passed::Done { received, clean } => {
                let reusable = clean && !head.close && head.framing != Framing::UntilClose;
                (Exchange::Done { status, keep_alive: !close, upstream_body: received }, reusable)
            }
            Passed::Broken { received, error, side } => {
                match side {
                    Side::Idle => {
                        self.proxy.stream_timed_out(ctx, StreamTimeout::Idle);
                    }
                    Side::Upstream => {
                        let failure = AttemptFailure {
                            timed_out: error == ErrorType::ReadTimedout,
                            protocol_error: error == ErrorType::InvalidHTTPHeader,
                            from_upstream: true,
                            response_started: true,
                            body_truncated: true,
                            idempotent: false,
                            reused_connection: false,
                        };
                        self.proxy.attempt_failed(ctx, failure);
                    }
                    Side::Downstream => {}
                }
                (Exchange::Broken { status, upstream_body: received, error }, false)
            }
        }
    }
}
