//! Responses the proxy writes itself, with Envoy's status codes and bodies
//! (`no healthy upstream`, `upstream request timeout`, ...).

use bytes::Bytes;
use http::header;
use http::StatusCode;
use pingora_http::ResponseHeader;
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
    /// A request body over the buffer filter's `max_request_bytes`.
    PayloadTooLarge,
    /// `direct_response`.
    Direct { status: StatusCode, body: Option<Bytes> },
    /// `redirect` and `require_tls`.
    Redirect { status: StatusCode, location: String },
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
            LocalReply::StreamIdleTimeout | LocalReply::RequestTimeout | LocalReply::RequestHeaderTimeout => {
                StatusCode::REQUEST_TIMEOUT
            }
            LocalReply::UpgradeRejected => StatusCode::FORBIDDEN,
            LocalReply::BadRequest => StatusCode::BAD_REQUEST,
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
            LocalReply::NoRoute | LocalReply::Redirect { .. } => Bytes::new(),
            LocalReply::NoHealthyUpstream => Bytes::from_static(b"no healthy upstream"),
            LocalReply::ConnectFailure { retried } => reset_body(RESET, *retried, "connection failure"),
            LocalReply::UpstreamReset { retried } => reset_body(RESET, *retried, "connection termination"),
            LocalReply::UpstreamProtocolError { retried } => reset_body(RESET, *retried, "protocol error"),
            LocalReply::Overflow => reset_body(RESET, false, "overflow"),
            LocalReply::Timeout => Bytes::from_static(b"upstream request timeout"),
            LocalReply::StreamIdleTimeout => Bytes::from_static(b"stream timeout"),
            LocalReply::RequestTimeout => Bytes::from_static(b"request timeout"),
            LocalReply::RequestHeaderTimeout => Bytes::from_static(b"request header timeout"),
            LocalReply::UpgradeRejected => Bytes::from_static(b"upgrade failed"),
            LocalReply::BadRequest => Bytes::from_static(b"bad request"),
            LocalReply::HeadersTooLarge => Bytes::from_static(b"request headers too large"),
            LocalReply::UnsupportedTransferCoding => Bytes::from_static(b"transfer coding not implemented"),
            LocalReply::PayloadTooLarge => Bytes::from_static(b"Payload Too Large"),
            LocalReply::Direct { body, .. } => body.clone().unwrap_or_default(),
        }
    }

    /// Whether the reply is to a request the codec refused: as in Envoy,
    /// its connection closes after it.
    pub fn is_codec_error(&self) -> bool {
        matches!(self, LocalReply::BadRequest | LocalReply::HeadersTooLarge | LocalReply::UnsupportedTransferCoding)
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
}

/// Whether a request is gRPC, as Envoy tells (`Grpc::Common::isGrpcRequestHeaders`).
pub fn is_grpc(req: &pingora_http::RequestHeader) -> bool {
    req.headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(v.get(16), None | Some(b'+' | b';'))
    })
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

/// The status line of a local reply: 200 for gRPC, whose outcome is in `grpc-status`.
pub fn status(reply: &LocalReply, extra: &ReplyHeaders<'_>) -> StatusCode {
    if extra.grpc {
        StatusCode::OK
    } else {
        reply.status()
    }
}

/// Builds the response header of a local reply.
pub fn response_header(reply: &LocalReply, extra: &ReplyHeaders<'_>) -> pingora_error::Result<ResponseHeader> {
    let body = body(reply, extra);
    let mut resp = ResponseHeader::build(status(reply, extra), Some(8))?;
    resp.insert_header(header::DATE, super::date::now())?;
    resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
    if extra.grpc {
        // A trailers-only gRPC response (Envoy's local reply to gRPC).
        resp.insert_header(header::CONTENT_TYPE, "application/grpc")?;
        resp.insert_header("grpc-status", grpc_status(reply.status()).to_string())?;
        let text = reply.body();
        if !text.is_empty() {
            resp.insert_header("grpc-message", grpc_message(&text))?;
        }
    } else if !body.is_empty() {
        resp.insert_header(header::CONTENT_TYPE, "text/plain")?;
    }
    if let LocalReply::Redirect { location, .. } = reply {
        resp.insert_header(header::LOCATION, location.as_str())?;
    }
    if matches!(reply, LocalReply::Overflow) {
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

/// Writes a local reply to the client.
pub async fn send(session: &mut Session, reply: &LocalReply, extra: &ReplyHeaders<'_>) -> pingora_error::Result<()> {
    let resp = response_header(reply, extra)?;
    let body = body(reply, extra);
    let head_only = session.req_header().method == http::Method::HEAD;
    let empty = body.is_empty() || head_only;
    session.write_response_header(Box::new(resp), empty).await?;
    if !empty {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
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
            &ReplyHeaders { server: Some("envoy"), request_id: None, grpc: false },
        )
        .unwrap();
        assert_eq!(h.headers.get("x-envoy-overloaded").unwrap(), "true");
        assert_eq!(h.headers.get("server").unwrap(), "envoy");
        assert_eq!(h.headers.get("content-type").unwrap(), "text/plain");
        assert!(httpdate::parse_http_date(h.headers.get("date").unwrap().to_str().unwrap()).is_ok());
    }

    #[test]
    fn grpc_requests_get_grpc_statuses() {
        let grpc = ReplyHeaders { server: None, request_id: None, grpc: true };
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
            assert_eq!(is_grpc(&req), yes, "{ct}");
        }
    }
}
