//! Responses the proxy writes itself, with Envoy's status codes and bodies
//! (`no healthy upstream`, `upstream request timeout`, ...), as the
//! connection manager's `local_reply_config` rewrites them
//! ([`Proxy::local_reply_parts`], what both engines send).

use super::access::{details, flags};
use super::{Proxy, RequestCtx};
use crate::access_log::{Entry, Facts};
use crate::routing::RequestInfo;
use bytes::Bytes;
use http::header;
use http::StatusCode;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

/// Why the proxy answered instead of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalReply {
    /// No virtual host or route matched.
    NoRoute,
    /// The cluster has no host to offer.
    NoHealthyUpstream,
    /// Connecting failed (after trying other hosts when there were any).
    ConnectFailure { retried: bool },
    /// The upstream closed or reset before sending response headers.
    UpstreamReset { retried: bool },
    /// The upstream's response broke HTTP (a malformed head, a status out
    /// of range, framing that cannot be trusted).
    UpstreamProtocolError { retried: bool },
    /// No response within the route (or per-try) timeout.
    Timeout,
    /// A circuit breaker is open.
    Overflow,
    /// An Upgrade request the route does not allow.
    UpgradeRejected,
    /// The downstream request is malformed.
    BadRequest,
    /// Request headers over `max_request_headers_kb` or `max_headers_count`.
    HeadersTooLarge,
    /// A request body in a transfer coding other than chunked.
    UnsupportedTransferCoding,
    /// No bytes either way within the stream idle timeout, before the response started.
    StreamIdleTimeout,
    /// The request was not received in full within `request_timeout`.
    RequestTimeout,
    /// The request head was not received in full within `request_headers_timeout`.
    RequestHeaderTimeout,
    /// The stream outlived `max_stream_duration` before its response started.
    MaxStreamDuration,
    /// A request body over the buffer filter's `max_request_bytes`.
    PayloadTooLarge,
    /// `direct_response`.
    Direct { status: StatusCode, body: Option<Bytes> },
    /// `redirect` and `require_tls`.
    Redirect { status: StatusCode, location: String },
    /// A path `normalize_path` cannot normalize (`%00`), or one with an
    /// escaped slash under `path_with_escaped_slashes_action: REJECT_REQUEST`.
    PathNormalizationFailed,
    /// `UNESCAPE_AND_REDIRECT`: 307 to the normalized path (and query).
    NormalizedPathRedirect { location: String },
    /// An HTTP/1.0 request without `accept_http_10`.
    UpgradeRequired,
    /// An HTTP/1.0 request without Host, and no `default_host_for_http_10`.
    MissingHost,
}

impl LocalReply {
    pub fn status(&self) -> StatusCode {
        match self {
            LocalReply::NoRoute => StatusCode::NOT_FOUND,
            LocalReply::NoHealthyUpstream
            | LocalReply::ConnectFailure { .. }
            | LocalReply::UpstreamReset { .. }
            | LocalReply::Overflow => StatusCode::SERVICE_UNAVAILABLE,
            LocalReply::UpstreamProtocolError { .. } => StatusCode::BAD_GATEWAY,
            LocalReply::Timeout => StatusCode::GATEWAY_TIMEOUT,
            LocalReply::StreamIdleTimeout
            | LocalReply::RequestTimeout
            | LocalReply::RequestHeaderTimeout
            | LocalReply::MaxStreamDuration => StatusCode::REQUEST_TIMEOUT,
            LocalReply::UpgradeRejected => StatusCode::FORBIDDEN,
            LocalReply::BadRequest | LocalReply::PathNormalizationFailed | LocalReply::MissingHost => {
                StatusCode::BAD_REQUEST
            }
            LocalReply::NormalizedPathRedirect { .. } => StatusCode::TEMPORARY_REDIRECT,
            LocalReply::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            LocalReply::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            LocalReply::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            LocalReply::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            LocalReply::Direct { status, .. } | LocalReply::Redirect { status, .. } => *status,
        }
    }

    /// Envoy's body text for the reply.
    pub fn body(&self) -> Bytes {
        const RESET: &str = "upstream connect error or disconnect/reset before headers. ";
        match self {
            // Envoy's connection manager sends these with no body.
            LocalReply::NoRoute
            | LocalReply::Redirect { .. }
            | LocalReply::PathNormalizationFailed
            | LocalReply::NormalizedPathRedirect { .. }
            | LocalReply::MissingHost => Bytes::new(),
            // The codec's refusal, whose body is the status text.
            LocalReply::UpgradeRequired => Bytes::from_static(b"Upgrade Required"),
            LocalReply::NoHealthyUpstream => Bytes::from_static(b"no healthy upstream"),
            LocalReply::ConnectFailure { retried } => reset_body(RESET, *retried, "connection failure"),
            LocalReply::UpstreamReset { retried } => reset_body(RESET, *retried, "connection termination"),
            LocalReply::UpstreamProtocolError { retried } => reset_body(RESET, *retried, "protocol error"),
            LocalReply::Overflow => reset_body(RESET, false, "overflow"),
            LocalReply::Timeout => Bytes::from_static(b"upstream request timeout"),
            LocalReply::StreamIdleTimeout => Bytes::from_static(b"stream timeout"),
            LocalReply::RequestTimeout => Bytes::from_static(b"request timeout"),
            LocalReply::RequestHeaderTimeout => Bytes::from_static(b"request header timeout"),
            LocalReply::MaxStreamDuration => Bytes::from_static(b"downstream duration timeout"),
            LocalReply::UpgradeRejected => Bytes::from_static(b"upgrade failed"),
            LocalReply::BadRequest => Bytes::from_static(b"bad request"),
            LocalReply::HeadersTooLarge => Bytes::from_static(b"request headers too large"),
            LocalReply::UnsupportedTransferCoding => Bytes::from_static(b"transfer coding not implemented"),
            LocalReply::PayloadTooLarge => Bytes::from_static(b"Payload Too Large"),
            LocalReply::Direct { body, .. } => body.clone().unwrap_or_default(),
        }
    }

    /// Whether the reply is to a request the codec refused: as in Envoy,
    /// its connection closes after it. So does a 426 to HTTP/1.0 (Envoy
    /// marks the connection to close before refusing the request).
    pub fn is_codec_error(&self) -> bool {
        matches!(
            self,
            LocalReply::BadRequest
                | LocalReply::HeadersTooLarge
                | LocalReply::UnsupportedTransferCoding
                | LocalReply::UpgradeRequired
        )
    }

    /// Whether the reply counts as a response from the cluster in stats.
    pub fn is_upstream_failure(&self) -> bool {
        matches!(
            self,
            LocalReply::NoHealthyUpstream
                | LocalReply::ConnectFailure { .. }
                | LocalReply::UpstreamReset { .. }
                | LocalReply::UpstreamProtocolError { .. }
                | LocalReply::Timeout
                | LocalReply::Overflow
        )
    }
}

fn reset_body(prefix: &str, retried: bool, reason: &str) -> Bytes {
    let retried = if retried { "retried and the latest " } else { "" };
    Bytes::from(format!("{prefix}{retried}reset reason: {reason}"))
}

/// Header values a local reply carries besides its body.
pub struct ReplyHeaders<'a> {
    pub server: Option<&'a str>,
    pub request_id: Option<&'a http::HeaderValue>,
    /// The request is gRPC (`content-type: application/grpc*`): the reply is
    /// a gRPC status, as Envoy answers such requests.
    pub grpc: bool,
    /// `x-envoy-overloaded: true` on a circuit breaker's 503 (false with
    /// the router's `suppress_envoy_headers`, as Envoy's router).
    pub overloaded_header: bool,
}

/// Envoy's `Grpc::Utility::httpToGrpcStatus`: the gRPC status a local reply
/// with this HTTP status stands for.
pub fn grpc_status(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    }
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2): bytes outside
/// printable ASCII, and `%` itself.
fn grpc_message(text: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The body a local reply carries (none for gRPC: the text goes in `grpc-message`).
pub fn body(reply: &LocalReply, extra: &ReplyHeaders<'_>) -> Bytes {
    if extra.grpc {
        Bytes::new()
    } else {
        reply.body()
    }
}

/// Builds the response header of a local reply, as Envoy writes it.
pub fn response_header(reply: &LocalReply, extra: &ReplyHeaders<'_>) -> pingora_error::Result<ResponseHeader> {
    head(reply, reply.status(), &reply.body(), "text/plain", extra)
}

/// The response header of `reply` sent with `status` and `body` (of
/// `content_type`), as `local_reply_config` may rewrite them. To a gRPC
/// request it is a trailers-only gRPC response, as Envoy answers one:
/// status 200, `grpc-status` from the reply's status, the body's text in
/// `grpc-message`, and no body ([`body`]).
pub fn head(
    reply: &LocalReply,
    status: StatusCode,
    body: &Bytes,
    content_type: &str,
    extra: &ReplyHeaders<'_>,
) -> pingora_error::Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(if extra.grpc { StatusCode::OK } else { status }, Some(8))?;
    resp.insert_header(header::DATE, super::date::now())?;
    if extra.grpc {
        resp.insert_header(header::CONTENT_LENGTH, "0")?;
        resp.insert_header(header::CONTENT_TYPE, "application/grpc")?;
        resp.insert_header("grpc-status", grpc_status(status).to_string())?;
        if !body.is_empty() {
            resp.insert_header("grpc-message", grpc_message(body))?;
        }
    } else {
        resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
        if !body.is_empty() {
            resp.insert_header(header::CONTENT_TYPE, content_type)?;
        }
    }
    if let LocalReply::Redirect { location, .. } | LocalReply::NormalizedPathRedirect { location } = reply {
        resp.insert_header(header::LOCATION, location.as_str())?;
    }
    if extra.overloaded_header && matches!(reply, LocalReply::Overflow) {
        resp.insert_header("x-envoy-overloaded", "true")?;
    }
    if let Some(server) = extra.server {
        resp.insert_header(header::SERVER, server)?;
    }
    if let Some(id) = extra.request_id {
        resp.insert_header("x-request-id", id.clone())?;
    }
    Ok(resp)
}

/// Writes a local reply's head and body to the client.
pub async fn send(session: &mut Session, resp: ResponseHeader, body: Bytes) -> pingora_error::Result<()> {
    let head_only = session.req_header().method == http::Method::HEAD;
    let empty = body.is_empty() || head_only;
    session.write_response_header(Box::new(resp), empty).await?;
    if !empty {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

impl Proxy {
    /// The head and body of a local reply as the client gets it: Envoy's,
    /// rewritten by the connection manager's `local_reply_config` when it
    /// has one (the first mapper whose filter selects the reply sets its
    /// status, body and headers; then `body_format` formats the body,
    /// `%LOCAL_REPLY_BODY%` being its text). Both engines send these.
    pub(super) fn local_reply_parts(
        &self,
        ctx: &RequestCtx,
        reply: &LocalReply,
        request: Option<&RequestHeader>,
        http2: bool,
    ) -> pingora_error::Result<(ResponseHeader, Bytes)> {
        let extra = self.reply_headers(ctx);
        let listener = self.listener(ctx);
        let Some(config) = listener.hcm.local_reply.as_deref() else {
            return Ok((response_header(reply, &extra)?, body(reply, &extra)));
        };
        let mut status = reply.status();
        let mut text = reply.body();
        let flags = flags(reply);
        let elapsed = ctx.start.elapsed();
        let facts = Facts { status: status.as_u16(), duration: elapsed, flags, request };
        let mut format = config.body_format.as_ref();
        let mut headers = None;
        if let Some(m) = config.mappers.iter().find(|m| m.filter.evaluate(&facts)) {
            status = m.status.unwrap_or(status);
            if let Some(b) = &m.body {
                text = b.clone();
            }
            format = m.body_format.as_ref().or(format);
            headers = Some(&m.headers);
        }
        let (body, content_type) = match format {
            None => (text, "text/plain"),
            Some(f) => {
                let text = String::from_utf8_lossy(&text);
                let entry = Entry {
                    request,
                    http2,
                    status: status.as_u16(),
                    flags,
                    bytes_received: ctx.body_bytes,
                    response_code_details: Some(details(reply)),
                    local_reply_body: Some(&text),
                    ..self.entry_of(ctx, elapsed)
                };
                let mut out = String::new();
                f.format.render(&entry, &mut out);
                (Bytes::from(out), f.content_type.as_str())
            }
        };
        let mut head = head(reply, status, &body, content_type, &extra)?;
        if let Some(h) = headers {
            let info = RequestInfo {
                client_addr: ctx.client_addr,
                local_addr: Some(&listener.address),
                protocol: if http2 { "HTTP/2" } else { "HTTP/1.1" },
                hostname: &self.hostname,
                request,
            };
            h.apply_response(&mut head, &info);
        }
        // To gRPC the (formatted) text went into `grpc-message`.
        let body = if extra.grpc { Bytes::new() } else { body };
        Ok((head, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_bodies() {
        assert_eq!(LocalReply::NoHealthyUpstream.body(), "no healthy upstream");
        assert_eq!(
            LocalReply::ConnectFailure { retried: false }.body(),
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
        );
        assert_eq!(
            LocalReply::ConnectFailure { retried: true }.body(),
            "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: connection failure"
        );
        assert_eq!(LocalReply::UpstreamProtocolError { retried: false }.status(), 502);
        assert_eq!(
            LocalReply::UpstreamProtocolError { retried: false }.body(),
            "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
        );
        assert_eq!(LocalReply::Timeout.status(), 504);
        assert_eq!(LocalReply::Timeout.body(), "upstream request timeout");
        assert_eq!(LocalReply::StreamIdleTimeout.status(), 408);
        assert_eq!(LocalReply::StreamIdleTimeout.body(), "stream timeout");
        assert_eq!(LocalReply::RequestTimeout.status(), 408);
        assert_eq!(LocalReply::RequestTimeout.body(), "request timeout");
        assert_eq!(LocalReply::RequestHeaderTimeout.status(), 408);
        assert_eq!(LocalReply::RequestHeaderTimeout.body(), "request header timeout");
        assert_eq!(
            LocalReply::Overflow.body(),
            "upstream connect error or disconnect/reset before headers. reset reason: overflow"
        );
    }

    #[test]
    fn overflow_sets_envoy_header() {
        let h = response_header(
            &LocalReply::Overflow,
            &ReplyHeaders { server: Some("envoy"), request_id: None, grpc: false, overloaded_header: true },
        )
        .unwrap();
        assert_eq!(h.headers.get("x-envoy-overloaded").unwrap(), "true");
        assert_eq!(h.headers.get("server").unwrap(), "envoy");
        assert_eq!(h.headers.get("content-type").unwrap(), "text/plain");
        assert!(httpdate::parse_http_date(h.headers.get("date").unwrap().to_str().unwrap()).is_ok());
    }

    #[test]
    fn grpc_requests_get_grpc_statuses() {
        let grpc = ReplyHeaders { server: None, request_id: None, grpc: true, overloaded_header: true };
        let h = response_header(&LocalReply::NoHealthyUpstream, &grpc).unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.headers.get("grpc-status").unwrap(), "14");
        assert_eq!(h.headers.get("grpc-message").unwrap(), "no healthy upstream");
        assert_eq!(h.headers.get("content-type").unwrap(), "application/grpc");
        assert_eq!(h.headers.get("content-length").unwrap(), "0");
        assert!(body(&LocalReply::NoHealthyUpstream, &grpc).is_empty());
        let route = response_header(&LocalReply::NoRoute, &grpc).unwrap();
        assert_eq!(route.headers.get("grpc-status").unwrap(), "12");
        assert!(route.headers.get("grpc-message").is_none());
        assert_eq!(grpc_status(StatusCode::GATEWAY_TIMEOUT), 14);
        assert_eq!(grpc_status(StatusCode::BAD_REQUEST), 13);
        assert_eq!(grpc_status(StatusCode::PAYLOAD_TOO_LARGE), 2);
        assert_eq!(grpc_message(b"50% done\n"), "50%25 done%0A");
        let mut req = pingora_http::RequestHeader::build("POST", b"/a.B/C", None).unwrap();
        for (ct, yes) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC;x=1", true),
            ("application/grpc-web", false),
            ("application/json", false),
        ] {
            req.insert_header("content-type", ct).unwrap();
            assert_eq!(crate::proxy::grpc::is_grpc(&req), yes, "{ct}");
        }
    }
}
