//! The upstream side of one attempt: a pooled or new connection, the
//! request head and body sent, and the final response head read back
//! (interim 1xx responses dropped, as Envoy does).

use super::body::{Body, BodyError, BODY_READ};
use super::buffers::Buffers;
use super::client::{unless_gone, Client};
use super::pool::{self, PoolKey, Upstream};
use super::recycle::{self, Source, BUF};
use super::timer::within;
use super::wire::{self, HeadScan, MAX_RESPONSE_HEAD};
use super::NativeH1;
use crate::address::Address;
use crate::metrics::{UpstreamCodecStat, UpstreamConnectionTracer};
use crate::proxy::attempt::AttemptStart;
use crate::proxy::context::{RequestCtx, StreamTimeout};
use crate::proxy::shorter;
use bytes::{Buf, BytesMut};
use pingora_error::ErrorType;
use pingora_http::RequestHeader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use tracing::debug;

/// An attempt that ended before its response could be forwarded.
#[derive(Debug)]
pub(in crate::proxy) enum AttemptError {
    Connect {
        timed_out: bool,
        error: String,
    },
    Upstream {
        timed_out: bool,
        error: ErrorType,
    },
    /// The upstream's response breaks the protocol (502).
    Protocol(&'static str),
    /// The client went away while its body was being sent.
    Downstream,
    /// The client's body broke the coding or the size limit.
    Client(BodyError),
    /// A downstream-side timer (stream idle, `request_timeout`) ran out.
    Stream(StreamTimeout),
}

impl NativeH1 {
    /// A pooled connection to the attempt's host, or a new one.
    pub(super) async fn upstream(
        &self,
        attempt: &AttemptStart,
        key: &PoolKey,
        pooled: bool,
    ) -> Result<(Upstream, bool), AttemptError> {
        if let Some(conn) = pooled.then(|| pool::checkout(key)).flatten() {
            return Ok((conn, true));
        }
        // Boxed: the connect futures (Pingora's TLS one above all) would
        // otherwise be part of every connection's state, and copied with it.
        Box::pin(self.connect(attempt, UpstreamCodecStat::Http1)).await.map(|up| (up, false))
    }

    /// A new connection to the attempt's host, for `codec` (over TLS, ALPN
    /// offers that version alone).
    pub(in crate::proxy) async fn connect(
        &self,
        attempt: &AttemptStart,
        codec: UpstreamCodecStat,
    ) -> Result<Upstream, AttemptError> {
        let cluster = &attempt.cluster;
        let connect_timeout = cluster.spec.connect_timeout;
        if let Some(tls) = &cluster.spec.tls {
            let http2 = codec == UpstreamCodecStat::Http2;
            let peer = crate::proxy::peer(cluster, &attempt.host, attempt.timeout, http2);
            return match self.connector.new_stream(&peer).await {
                Ok(s) => match tls.admit(s.get_ssl_digest().as_deref(), &cluster.stats) {
                    Ok(()) => Ok(Upstream::pingora(s)),
                    Err(why) => Err(AttemptError::Connect { timed_out: false, error: why.to_string() }),
                },
                Err(e) => {
                    crate::upstream::count_handshake_error(&cluster.stats, e.etype());
                    Err(AttemptError::Connect {
                        timed_out: matches!(e.etype(), ErrorType::ConnectTimedout),
                        error: e.to_string(),
                    })
                }
            };
        }
        let addr = match &attempt.host.addr {
            Address::Ip(addr) => *addr,
            Address::Pipe(pipe) => {
                // A Unix socket connects at once or fails: no wait to bound.
                return match pipe.connect() {
                    Ok(s) => {
                        let tracer = UpstreamConnectionTracer::new(&cluster.stats, &attempt.host, Some(codec));
                        Ok(Upstream::unix(s, tracer))
                    }
                    Err(e) => Err(AttemptError::Connect { timed_out: false, error: e.to_string() }),
                };
            }
        };
        match timeout(connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                if let Some(k) = &cluster.spec.tcp_keepalive {
                    if let Err(e) = socket2::SockRef::from(&s).set_tcp_keepalive(&k.socket2()) {
                        debug!(error = %e, "cannot set TCP keepalive on an upstream connection");
                    }
                }
                let tracer = UpstreamConnectionTracer::new(&cluster.stats, &attempt.host, Some(codec));
                Ok(Upstream::tcp(s, tracer))
            }
            Ok(Err(e)) => Err(AttemptError::Connect { timed_out: false, error: e.to_string() }),
            Err(_) => Err(AttemptError::Connect { timed_out: true, error: "connect timed out".into() }),
        }
    }

    /// Sends the request head and body and reads up to the final response
    /// head, which is left at the start of `bufs.up`; returns its length.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send_request<D: Client>(
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
            wire::write_request_head(&mut bufs.out, req, Some(self.proxy.expected_timeout(ctx)), down.http1_fields());
        } else {
            let mut upstream_req = req.clone();
            if let Some(fields) = down.http1_fields() {
                // Before the route's edits, which may set `Host` again.
                fields
                    .apply(&mut upstream_req)
                    .map_err(|e| AttemptError::Upstream { timed_out: false, error: e.etype().clone() })?;
            }
            self.proxy
                .upstream_headers(&mut upstream_req, req, D::HTTP2, ctx)
                .map_err(|e| AttemptError::Upstream { timed_out: false, error: e.etype().clone() })?;
            wire::write_request_head(&mut bufs.out, &upstream_req, None, None);
        }
        bufs.out.extend_from_slice(&body.buffered);
        let request_deadline = ctx.request_deadline.map(Instant::from_std);
        let max_body = self.proxy.listener(ctx).hcm.max_request_bytes;
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
            while !body.complete() && write_error.is_none() {
                if down_buf.is_empty() {
                    recycle::take_read(down_buf, Source::Client);
                    down_buf.reserve(usize::try_from(body.unread).unwrap_or(BODY_READ).min(BODY_READ));
                    let idle_ends = idle.map(|t| Instant::now() + t);
                    let read = match shorter(request_deadline, idle_ends) {
                        Some(end) => timeout_at(end, down.read_body(down_buf)).await.map_err(|_| {
                            match Some(end) == request_deadline {
                                true => AttemptError::Stream(StreamTimeout::Request),
                                false => AttemptError::Stream(StreamTimeout::Idle),
                            }
                        })?,
                        None => down.read_body(down_buf).await,
                    };
                    match read {
                        Ok(0) | Err(_) => return Err(AttemptError::Downstream),
                        Ok(_) => {}
                    }
                }
                let chunk = body.next_part(down_buf, max_body).map_err(AttemptError::Client)?;
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
            let waiting = async {
                match idle_first {
                    Some(t) => timeout(t, read_response_head(&mut up, up_buf))
                        .await
                        .map_err(|_| AttemptError::Stream(StreamTimeout::Idle))?,
                    None => read_response_head(&mut up, up_buf).await,
                }
            };
            let head = unless_gone(down, waiting).await.ok_or(AttemptError::Downstream)?;
            match (head, write_error) {
                (Ok(head_len), _) => Ok(head_len),
                (Err(head_error), Some(e)) => {
                    debug!(?head_error, error = %e, "no answer from the upstream after a failed write");
                    Err(AttemptError::Upstream { timed_out: false, error: ErrorType::WriteError })
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

/// Reads until a complete final response head is at the start of `buf`,
/// dropping interim (1xx) responses, as Envoy does; returns its length.
async fn read_response_head(up: &mut Upstream, buf: &mut BytesMut) -> Result<usize, AttemptError> {
    let mut scanned = 0;
    loop {
        match wire::scan_response_head(buf, scanned) {
            HeadScan::Final(len) => return Ok(len),
            HeadScan::Interim(len) => {
                buf.advance(len);
                scanned = 0;
                continue;
            }
            HeadScan::Invalid(why) => return Err(AttemptError::Protocol(why)),
            HeadScan::Partial(looked) => scanned = looked,
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(AttemptError::Protocol("response head too large"));
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
