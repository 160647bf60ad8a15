//! The heads of a stream forwarded HTTP/2 to HTTP/2: the request as the
//! upstream gets it, and the response head checked and sent to the client.

use crate::proxy::attempt::AttemptStart;
use crate::proxy::context::RequestCtx;
use crate::proxy::framing;
use crate::proxy::h1::NativeH1;
use crate::proxy::response_head;
use h2::RecvStream;
use http::header::{HeaderName, CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Response, Uri};
use pingora_core::protocols::http::v2::server::HttpSession;
use pingora_http::{RequestHeader, ResponseHeader};
use tracing::debug;

/// Fields connection-specific in HTTP/2 (RFC 9113 §8.2.2): the h2 client
/// refuses a request carrying any of them.
const CONNECTION_SPECIFIC: [HeaderName; 4] =
    [CONNECTION, TRANSFER_ENCODING, UPGRADE, HeaderName::from_static("keep-alive")];
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

impl NativeH1 {
    /// The request as the upstream gets it: the route's rewrites and edits,
    /// `:scheme` and `:authority` for the upstream connection, and no
    /// connection-specific field.
    pub(super) fn upstream_request(
        &self,
        down: &RequestHeader,
        ctx: &RequestCtx,
        attempt: &AttemptStart,
    ) -> Result<http::Request<()>, &'static str> {
        let mut up = down.clone();
        self.proxy().upstream_headers(&mut up, down, true, ctx).map_err(|_| "the route's edits failed")?;
        let rewritten = !matches!(
            self.proxy().forward(ctx).map(|f| &f.host_rewrite),
            None | Some(crate::routing::HostRewrite::Keep)
        );
        // HTTP/2 carries the host in `:authority` alone.
        let host = up.remove_header(&HOST);
        let authority = match (rewritten, host, up.uri.authority()) {
            (true, Some(h), _) => Authority::try_from(h.as_bytes()).map_err(|_| "invalid rewritten host")?,
            (_, _, Some(a)) => a.clone(),
            (_, Some(h), None) => Authority::try_from(h.as_bytes()).map_err(|_| "invalid host")?,
            (_, None, None) => return Err("no authority"),
        };
        let scheme = if attempt.cluster.spec.tls.is_some() { Scheme::HTTPS } else { Scheme::HTTP };
        let mut parts: http::request::Parts = up.into();
        let mut target = std::mem::take(&mut parts.uri).into_parts();
        target.scheme = Some(scheme);
        target.authority = Some(authority);
        if target.path_and_query.is_none() {
            target.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        parts.uri = Uri::from_parts(target).map_err(|_| "invalid request target")?;
        parts.version = http::Version::HTTP_2;
        // One pass over the fields: a lookup per name would hash each of
        // them on every request, where they are almost never present.
        // (`te: trailers`, which gRPC sends, is the one value allowed.)
        let forbidden = |(n, v): (&HeaderName, &HeaderValue)| {
            CONNECTION_SPECIFIC.contains(n) || n == PROXY_CONNECTION || (n == TE && v != "trailers")
        };
        if parts.headers.iter().any(forbidden) {
            for name in CONNECTION_SPECIFIC.iter().chain([&PROXY_CONNECTION]) {
                parts.headers.remove(name);
            }
            let trailers = parts.headers.get_all(TE).iter().any(|v| v == "trailers");
            parts.headers.remove(TE);
            if trailers {
                parts.headers.insert(TE, HeaderValue::from_static("trailers"));
            }
        }
        Ok(http::Request::from_parts(parts, ()))
    }

    /// Checks the response head, decides on a retry by its status, and
    /// sends the head the client gets. `Ok(None)`: the response ended with
    /// its head.
    pub(super) fn response_head(
        &self,
        session: &mut HttpSession,
        ctx: &mut RequestCtx,
        resp: Response<RecvStream>,
        body_taken: bool,
    ) -> Result<Option<RecvStream>, HeadError> {
        let proxy = self.proxy();
        let (parts, body) = resp.into_parts();
        let mut head = ResponseHeader::from(parts);
        if head.status.is_informational() {
            return Err(HeadError::Protocol("interim response as the final one"));
        }
        framing::check_response(&mut head, false).map_err(HeadError::Protocol)?;
        if let Some(c) = proxy.cluster(ctx) {
            if std::mem::take(&mut ctx.count_codec) {
                c.stats.count_codec(crate::metrics::UpstreamCodecStat::Http2);
            }
        }
        let status = head.status.as_u16();
        if proxy.upstream_answered(ctx, status, body_taken) {
            return Err(HeadError::RetryStatus);
        }
        response_head::forget_case(&mut head);
        if let Err(e) = proxy.downstream_headers(&mut head, ctx) {
            debug!(error = %e, "response head cannot be forwarded");
            return Err(HeadError::Protocol("response head cannot be forwarded"));
        }
        ctx.response_started = Some(status);
        let end = body.is_end_stream();
        // As built: `date` is the upstream's or ours (`downstream_headers`),
        // and Pingora's writer would copy the head (`vendor/pingora-core` patch 2).
        session.write_response_header_as_built(head, end).map_err(|_| HeadError::Client)?;
        Ok((!end).then_some(body))
    }
}

/// Why a response head was not forwarded.
pub(super) enum HeadError {
    RetryStatus,
    Protocol(&'static str),
    /// The client's stream refused it.
    Client,
}
