//! One stream of our HTTP/2 server: the request lifecycle `request_filter`
//! runs on Pingora's engine (admit: limits, normalization, edge headers,
//! route), then a local reply, our own path to an HTTP/2 cluster
//! (`forward.rs`), the native engine for an HTTP/1.1 one, or Pingora's
//! engine with the admitted context; stats and the access log once,
//! whichever served it. A stream the request alone keeps off our paths
//! (CONNECT, `Expect`) goes to Pingora's engine unadmitted, as it would
//! have before.

use super::{Connection, StreamGuard};
use crate::proxy::context::Admitted;
use crate::proxy::lifecycle::Completion;
use crate::proxy::{shorter, stream_left, Downgraded, LocalReply, Proxy, RequestCtx};
use crate::upstream::UpstreamCodec;
use pingora_core::apps::HttpServerApp;
use pingora_core::protocols::http::v2::server::HttpSession;
use pingora_core::protocols::http::ServerSession;
use pingora_http::RequestHeader;
use std::sync::atomic::Ordering::Relaxed;
use tracing::debug;

/// How the stream ended, for the access log.
#[derive(Default)]
struct Ended {
    /// Response body bytes (content) received from the upstream.
    upstream_body: u64,
    /// The error kind that ended the stream, if one did.
    error: Option<&'static str>,
}

/// Serves one stream; `guard` keeps the connection busy meanwhile.
pub(super) async fn serve<A: HttpServerApp + Send + Sync + 'static>(guard: StreamGuard<A>, mut session: HttpSession) {
    let conn: &Connection<A> = &guard.0;
    if never_downgraded(session.req_header()) {
        // Admitted by `request_filter`, as on Pingora's engine: no
        // admission here to hand over.
        conn.app.process_new_http(ServerSession::new_http2(session), &conn.shutdown).await;
        return;
    }
    let proxy = conn.engine.proxy();
    let mut ctx = RequestCtx::new();
    ctx.listener = conn.source.listener;
    ctx.client_addr = conn.source.client_addr;
    ctx.tls_digest = conn.tls_digest.clone();
    let reply = match proxy.admit(session.req_header_mut(), true, false, &mut ctx) {
        Ok(reply) => reply,
        Err(e) => {
            debug!(error = %e, "request rejected");
            Some(LocalReply::BadRequest)
        }
    };
    if reply.is_none() {
        if let Some(cluster) = proxy.cluster(&ctx) {
            // `Alpn` and `Downstream` may speak HTTP/2 too, and Pingora's
            // engine (a retried body, ALPN) pools its HTTP/2 connections.
            conn.turns.record(cluster.spec.http.codec != UpstreamCodec::Http1);
        }
    }
    let ended = match reply {
        Some(reply) => {
            send_reply(proxy, &mut session, &mut ctx, reply).await;
            Ended::default()
        }
        None if proxy.forwards_h2(session.req_header(), session.is_body_empty(), &ctx) => {
            // The downstream side of the stream idle timeout and
            // `max_stream_duration` (h2 reads have no timeout of their own).
            session.set_write_timeout(shorter(ctx.stream_idle, stream_left(&ctx)));
            // Inline, not boxed apart: the stream's task is one box already
            // (`proxy/h2.rs`), and a second one for this future cost an
            // allocation above mimalloc's small sizes and a copy, ~480
            // instructions a stream, where the larger task future costs
            // Pingora's path (rarely taken) only a longer copy as it spawns.
            serve_natively(conn, proxy, &mut session, &mut ctx, Path::Forward).await
        }
        None if proxy.downgrades(session.req_header(), session.is_body_empty(), &ctx) => {
            session.set_write_timeout(shorter(ctx.stream_idle, stream_left(&ctx)));
            serve_natively(conn, proxy, &mut session, &mut ctx, Path::Downgrade).await
        }
        None => {
            // Pingora's engine takes it from `request_filter` on, with this
            // context, and counts it in `logging`.
            let admitted = Admitted::new(ctx);
            session.req_header_mut().extensions_mut().insert(admitted.clone());
            conn.app.process_new_http(ServerSession::new_http2(session), &conn.shutdown).await;
            if let Some(mut ctx) = admitted.left() {
                // Pingora's engine ended the stream before either hook
                // (it answers some requests itself): still counted once,
                // or `downstream_rq_active` would never come down.
                let done = Completion {
                    request: None,
                    status: 0,
                    http2: true,
                    upstream_body_bytes: 0,
                    request_body_bytes: 0,
                    error: Some("EndedBeforeFilters"),
                };
                proxy.complete(&done, &mut ctx);
            }
            return;
        }
    };
    let done = Completion {
        request: Some(session.req_header()),
        status: session.response_written().map(|r| r.status.as_u16()).unwrap_or(0),
        http2: true,
        upstream_body_bytes: ended.upstream_body,
        request_body_bytes: session.body_bytes_read() as u64,
        error: ended.error,
    };
    proxy.complete(&done, &mut ctx);
    // Ends the stream if the response has not (an empty DATA frame); a
    // stream without a response is reset when the session drops.
    let _ = session.finish();
}

/// Whether the request alone keeps a stream off our own paths, whatever
/// its route (CONNECT, `Expect`: the request's own conditions in
/// [`Proxy::downgrades`] and [`Proxy::forwards_h2`], read before `admit`
/// changes anything). Such streams go to Pingora's engine as they arrive.
fn never_downgraded(req: &RequestHeader) -> bool {
    req.method == http::Method::CONNECT || req.headers.contains_key(http::header::EXPECT)
}

/// Which of our own paths serves a stream.
enum Path {
    /// To an HTTP/2 cluster, stream to stream (`forward.rs`).
    Forward,
    /// To an HTTP/1.1 cluster, by the native engine (`h1/downgrade.rs`).
    Downgrade,
}

/// Serves a routed stream on one of our own paths, answering it locally
/// or resetting it as Pingora's engine would.
async fn serve_natively<A>(
    conn: &Connection<A>,
    proxy: &Proxy,
    session: &mut HttpSession,
    ctx: &mut RequestCtx,
    path: Path,
) -> Ended {
    let served = match path {
        Path::Forward => conn.engine.forward_h2(session, ctx).await,
        Path::Downgrade => conn.engine.serve_h2(session, ctx, &conn.drain).await,
    };
    let reply = match served {
        Downgraded::Done { upstream_body } => return Ended { upstream_body, error: None },
        Downgraded::Broken { upstream_body, error } => {
            // Never ended as if the response were whole.
            session.shutdown();
            return Ended { upstream_body, error: Some(error.as_str()) };
        }
        Downgraded::MaxDuration if session.response_written().is_some() => {
            session.shutdown();
            return Ended { upstream_body: 0, error: Some("ReadTimedout") };
        }
        Downgraded::MaxDuration => LocalReply::MaxStreamDuration,
        Downgraded::Refused => {
            proxy.listener(ctx).stats.downstream_cx_protocol_error.fetch_add(1, Relaxed);
            LocalReply::BadRequest
        }
        Downgraded::Failed => proxy.final_failure(ctx, None),
    };
    send_reply(proxy, session, ctx, reply).await;
    Ended::default()
}

/// Writes a local reply on the stream, rendered as on every other path
/// (`local_reply_config` included).
async fn send_reply(proxy: &Proxy, session: &mut HttpSession, ctx: &mut RequestCtx, reply: LocalReply) {
    // A client that grants no flow-control window must not hold the
    // stream (and with it the connection) forever: the stream idle
    // timeout bounds the reply's writes, as it does the downgrade's
    // (`admit` may answer before it chose the route's).
    let idle = ctx.stream_idle.or(proxy.listener(ctx).hcm.stream_idle_timeout);
    session.set_write_timeout(shorter(idle, stream_left(ctx)));
    let parts = proxy.local_reply_parts(ctx, &reply, Some(session.req_header()), true);
    ctx.reply = Some(reply);
    let sent = match parts {
        Ok((head, body)) => {
            let head_only = session.req_header().method == http::Method::HEAD;
            if !head_only {
                ctx.reply_bytes = body.len() as u64;
            }
            let empty = body.is_empty() || head_only;
            match session.write_response_header(Box::new(head), empty) {
                Ok(()) if !empty => session.write_body(body, true).await,
                other => other,
            }
        }
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        debug!(error = %e, "failed to send local reply");
    }
}
