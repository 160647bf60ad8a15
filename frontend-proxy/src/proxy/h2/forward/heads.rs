//! The heads of a stream forwarded HTTP/2 to HTTP/2: the request as the
//! upstream gets it, and the response head checked and sent to the client.

use crate::proxy::attempt::AttemptStart;
use crate::proxy::context::RequestCtx;
use crate::proxy::forwarding::{millis, X_EXPECTED_TIMEOUT_NAME};
use crate::proxy::framing;
use crate::proxy::h1::NativeH1;
use crate::proxy::response_head;
use h2::RecvStream;
use http::header::{HeaderName, CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue, Response, Uri};
use pingora_core::protocols::http::v2::server::HttpSession;
use pingora_http::{RequestHeader, ResponseHeader};
use tracing::debug;

/// Fields connection-specific in HTTP/2 (RFC 9113 §8.2.2): the h2 client
/// refuses a request carrying any of them.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const CONNECTION_SPECIFIC: [HeaderName; 4] = [CONNECTION, TRANSFER_ENCODING, UPGRADE, KEEP_ALIVE];
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether a field may not go upstream in HTTP/2 (`te: trailers`, which
/// gRPC sends, is the one value of `te` allowed). Looked for in one pass
/// over the fields: a lookup per name would hash each of them on every
/// request, where they are almost never present. Names are compared with
/// names: `CONNECTION_SPECIFIC.contains` built and dropped the array for
/// every field, and a comparison with a `&str` ignores case byte by byte.
fn forbidden((name, value): (&HeaderName, &HeaderValue)) -> bool {
    *name == CONNECTION
        || *name == TRANSFER_ENCODING
        || *name == UPGRADE
        || *name == KEEP_ALIVE
        || *name == PROXY_CONNECTION
        || (*name == TE && value != "trailers")
}

/// Removes the connection-specific fields, and `te` unless it says
/// `trailers`.
fn strip_connection_specific(headers: &mut HeaderMap) {
    for name in CONNECTION_SPECIFIC.iter().chain([&PROXY_CONNECTION]) {
        headers.remove(name);
    }
    let trailers = headers.get_all(TE).iter().any(|v| v == "trailers");
    headers.remove(TE);
    if trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// The upstream's `:authority`: a rewritten `Host`, else the request's
/// own authority, else its `Host`.
fn authority(
    rewritten: bool,
    host: Option<HeaderValue>,
    target: Option<&Authority>,
) -> Result<Authority, &'static str> {
    match (rewritten, host, target) {
        (true, Some(h), _) => Authority::try_from(h.as_bytes()).map_err(|_| "invalid rewritten host"),
        (_, _, Some(a)) => Ok(a.clone()),
        (_, Some(h), None) => Authority::try_from(h.as_bytes()).map_err(|_| "invalid host"),
        (_, None, None) => Err("no authority"),
    }
}

/// The upstream request's target: the connection's scheme, the authority,
/// and the path (`/` when the request had none).
fn h2_target(scheme: Scheme, authority: Authority, path: Option<http::uri::PathAndQuery>) -> Result<Uri, &'static str> {
    let mut target = http::uri::Parts::default();
    target.scheme = Some(scheme);
    target.authority = Some(authority);
    target.path_and_query = Some(path.unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")));
    Uri::from_parts(target).map_err(|_| "invalid request target")
}

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
        let proxy = self.proxy();
        let scheme = if attempt.cluster.spec.tls.is_some() { Scheme::HTTPS } else { Scheme::HTTP };
        if proxy.forwards_request_unchanged(ctx) {
            // Most routes: only the map of fields is copied, not the whole
            // head to be edited and taken apart as below (~800 instructions
            // a gRPC call).
            let mut headers = down.headers.clone();
            let host = headers.remove(HOST);
            if headers.iter().any(forbidden) {
                strip_connection_specific(&mut headers);
            }
            match proxy.expected_timeout(ctx) {
                Some(t) => {
                    headers.insert(X_EXPECTED_TIMEOUT_NAME, HeaderValue::from(millis(t)));
                }
                None => {
                    headers.remove(X_EXPECTED_TIMEOUT_NAME);
                }
            }
            let authority = authority(false, host, down.uri.authority())?;
            let path = down.uri.path_and_query().cloned();
            let mut req = http::Request::new(());
            *req.method_mut() = down.method.clone();
            *req.uri_mut() = h2_target(scheme, authority, path)?;
            *req.version_mut() = http::Version::HTTP_2;
            *req.headers_mut() = headers;
            *req.extensions_mut() = down.extensions.clone();
            return Ok(req);
        }
        let mut up = down.clone();
        proxy.upstream_headers(&mut up, down, true, ctx).map_err(|_| "the route's edits failed")?;
        let rewritten =
            !matches!(proxy.forward(ctx).map(|f| &f.host_rewrite), None | Some(crate::routing::HostRewrite::Keep));
        // HTTP/2 carries the host in `:authority` alone.
        let host = up.remove_header(&HOST);
        let authority = authority(rewritten, host, up.uri.authority())?;
        let mut parts: http::request::Parts = up.into();
        let path = std::mem::take(&mut parts.uri).into_parts().path_and_query;
        parts.uri = h2_target(scheme, authority, path)?;
        parts.version = http::Version::HTTP_2;
        if parts.headers.iter().any(forbidden) {
            strip_connection_specific(&mut parts.headers);
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
