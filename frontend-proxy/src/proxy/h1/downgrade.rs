//! HTTP/2 streams whose cluster speaks HTTP/1.1 upstream, served by the
//! native engine's upstream side instead of Pingora's `HttpProxy` (called
//! by our HTTP/2 server, `proxy/h2/stream.rs`, once the request is
//! admitted and routed; `Proxy::downgrades` decides which streams qualify).
//!
//! Turning HTTP/2 into HTTP/1 is where request smuggling lives, so the
//! request is held to HTTP/1's rules here: no control byte or space in the
//! target, an authority that is a valid `Host` (fields cannot hold CR, LF
//! or NUL: h2's decoder refuses them, below); no `transfer-encoding`;
//! the `content-length` fields agree, and the DATA frames carry exactly
//! that many bytes (the body's last bytes go upstream only once the
//! stream's end confirms the count); a body of unknown length goes
//! chunked; `Host` is the `:authority`. The response is passed as its
//! content: hop-by-hop fields and the chunked coding dropped, and a
//! response that breaks off or breaks HTTP/1 resets the stream.

use super::body::Body;
use super::buffers::Buffers;
use super::client::Client;
use super::exchange::Exchange;
use super::wire::{Http1Fields, RequestBody, ResponseHead};
use super::NativeH1;
use crate::drain::Drain;
use crate::proxy::context::RequestCtx;
use crate::proxy::framing::agreed_length;
use crate::proxy::response_head;
use crate::proxy::target;
use bytes::{Buf, Bytes, BytesMut};
use h2::SendStream;
use http::header::{HeaderName, TRANSFER_ENCODING};
use http::{HeaderValue, StatusCode};
use pingora_core::protocols::http::v2::server::HttpSession;
use pingora_error::ErrorType::{self, InvalidHTTPHeader};
use pingora_error::OrErr;
use pingora_http::{RequestHeader, ResponseHeader};
use std::future::poll_fn;
use std::io;
use std::time::Duration;
use tokio::time::{timeout_at, Instant};

/// How a stream served here ended (the caller answers or resets it).
pub enum Downgraded {
    /// The response went out whole.
    Done { upstream_body: u64 },
    /// No response head went out: the proxy answers with `ctx.last_failure`.
    Failed,
    /// The request cannot go to an HTTP/1 upstream as it stands (400).
    Refused,
    /// The response broke off after its head went out: the stream must be
    /// reset, never ended as if complete.
    Broken { upstream_body: u64, error: ErrorType },
    /// `max_stream_duration` ran out (the reply is set if nothing went out).
    MaxDuration,
}

/// The client side of an HTTP/2 stream, for the engine's exchange.
struct H2Client<'a> {
    session: &'a mut HttpSession,
    /// `Host` and framing for the upstream's request head.
    fields: Http1Fields,
    /// What the request body may still carry when it declared a length;
    /// `None`: it goes chunked.
    left: Option<u64>,
    /// The body ended (its last chunk, or its length, went upstream).
    ended: bool,
    /// The response head, until the first body part goes with it.
    head: Option<Box<ResponseHeader>>,
    /// h2's stream for the response body, once the head went out.
    body: Option<SendStream<Bytes>>,
}

fn stream_error(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Whether bytes could end an HTTP/1 line or field early.
fn breaks_a_line(bytes: &[u8]) -> bool {
    bytes.iter().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

/// Whether a request target has a byte an HTTP/1 request line cannot
/// carry as it is (controls, space, DEL): the line's fields would split
/// differently upstream.
fn breaks_a_target(target: &[u8]) -> bool {
    target.iter().any(|&b| b <= b' ' || b == 0x7f)
}

/// What the request needs to go to an HTTP/1 upstream (before the route's
/// edits): its `Host` and its body's framing, written in place of its own
/// fields of those names; `None` if it cannot be sent as HTTP/1.
fn http1_fields(req: &RequestHeader, has_body: bool) -> Option<Http1Fields> {
    let authority = req.uri.authority()?.as_str();
    let target = req.raw_path();
    let origin_form = target.starts_with(b"/") || target == b"*";
    // The authority becomes `Host`: held to the grammar HTTP/1's Host is
    // checked against (no userinfo, no percent-encoding, a 16-bit port).
    if !target::is_valid_host(authority.as_bytes()) || breaks_a_target(target) || !origin_form {
        return None;
    }
    if req.headers.contains_key(TRANSFER_ENCODING) {
        // Connection-specific in HTTP/2 (RFC 9113 §8.2.2): malformed.
        return None;
    }
    // No field can end an HTTP/1 line early: `http`'s types hold no CR, LF
    // or NUL (their constructors refuse them; h2's decoder builds every
    // name and value through them and ends the connection with a
    // PROTOCOL_ERROR GOAWAY on such a field, tests/downgrade.rs). A scan
    // here took ~1,200 instructions a stream.
    debug_assert!(!req
        .headers
        .iter()
        .any(|(n, v)| breaks_a_line(n.as_str().as_bytes()) || breaks_a_line(v.as_bytes())));
    let framing = match agreed_length(&req.headers).ok()? {
        Some(n) => Some(RequestBody::Length(n)),
        None if has_body => Some(RequestBody::Chunked),
        None => None,
    };
    Some(Http1Fields { host: HeaderValue::from_str(authority).ok()?, framing })
}

/// A request head that holds nothing, in the session's place while its own
/// is lent to the exchange (no allocation: an empty map, a static `/`).
fn placeholder() -> RequestHeader {
    http::Request::new(()).into_parts().0.into()
}

/// A session whose request head is lent out: the head is put back when
/// this drops, however the exchange using it ends (a timeout, an early
/// return, the future dropped).
struct Lent<'a> {
    session: &'a mut HttpSession,
    head: RequestHeader,
}

impl<'a> Lent<'a> {
    fn new(session: &'a mut HttpSession) -> Self {
        let head = std::mem::replace(session.req_header_mut(), placeholder());
        Lent { session, head }
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        std::mem::swap(self.session.req_header_mut(), &mut self.head);
    }
}

/// Sends response DATA to an HTTP/2 client as its flow control allows,
/// each wait for its window within `idle` (the stream idle timeout), on
/// h2's stream itself: Pingora's session writer arms a timer around each
/// write and each wait (~1,900 instructions for a small body, against
/// ~1,200 here; bench/RESULTS.md). Also used by streams
/// forwarded to HTTP/2 clusters (`proxy/h2/forward.rs`).
pub async fn send_down(
    down: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
    idle: Option<Duration>,
) -> Result<(), ErrorType> {
    if data.is_empty() {
        // No window needed; an empty frame only to carry the end.
        return match end {
            true => down.send_data(data, true).map_err(|_| ErrorType::WriteError),
            false => Ok(()),
        };
    }
    while !data.is_empty() {
        down.reserve_capacity(data.len());
        let mut granted = down.capacity();
        if granted == 0 {
            let wait = poll_fn(|cx| down.poll_capacity(cx));
            let got = match idle {
                Some(t) => tokio::time::timeout(t, wait).await.map_err(|_| ErrorType::WriteTimedout)?,
                None => wait.await,
            };
            granted = match got {
                Some(Ok(n)) => n,
                _ => return Err(ErrorType::WriteError),
            };
            if granted == 0 {
                continue;
            }
        }
        let chunk = data.split_to(granted.min(data.len()));
        down.send_data(chunk, end && data.is_empty()).map_err(|_| ErrorType::WriteError)?;
    }
    Ok(())
}

impl NativeH1 {
    /// Serves an admitted and routed HTTP/2 stream on its cluster.
    pub async fn serve_h2(&self, session: &mut HttpSession, ctx: &mut RequestCtx, drain: &Drain) -> Downgraded {
        let has_body = !session.is_body_done();
        let Some(fields) = http1_fields(session.req_header(), has_body) else {
            return Downgraded::Refused;
        };
        let framing = fields.framing.unwrap_or(RequestBody::Length(0));
        let max_body = self.proxy.listener(ctx).hcm.max_request_bytes;
        let left = match framing {
            RequestBody::Length(n) => Some(n),
            RequestBody::Chunked => None,
        };
        let mut bufs = Buffers::new();
        let mut body = match Body::start(framing, &mut BytesMut::new(), max_body) {
            Ok(body) => body,
            Err(_) => return Downgraded::Refused,
        };
        let deadline = ctx.stream_deadline;
        // The request head goes upstream as the session holds it, `fields`
        // written in place of its own: lent to the exchange, not copied
        // (~1,600 instructions a stream with the copy's drop,
        // bench/RESULTS.md), and put back as it came. The session calls the
        // exchange makes (the request body, the response, the reset watch)
        // do not read it.
        let exchange = {
            let mut lent = Lent::new(session);
            let Lent { session, head } = &mut lent;
            let mut client = H2Client { session, fields, left, ended: !has_body, head: None, body: None };
            let exchange = self.forward(&mut client, &mut bufs, head, ctx, &mut body, true, drain);
            match deadline {
                Some(end) => timeout_at(Instant::from_std(end), exchange).await.ok(),
                None => Some(exchange.await),
            }
        };
        match exchange {
            Some(Exchange::Done { upstream_body, .. }) => Downgraded::Done { upstream_body },
            Some(Exchange::Failed) => Downgraded::Failed,
            Some(Exchange::Broken { upstream_body, error, .. }) => Downgraded::Broken { upstream_body, error },
            None => {
                self.proxy.max_duration_reached(ctx);
                Downgraded::MaxDuration
            }
        }
    }
}

impl H2Client<'_> {
    /// The next DATA of the request body: `None` at the stream's end.
    async fn data(&mut self) -> io::Result<Option<bytes::Bytes>> {
        loop {
            match self.session.read_body_bytes().await {
                Ok(Some(d)) if d.is_empty() => continue,
                Ok(d) => return Ok(d),
                Err(_) => return Err(stream_error("request stream broken")),
            }
        }
    }
}

impl Client for H2Client<'_> {
    const FRAMED: bool = false;
    const HTTP2: bool = true;
    const WATCHES_GONE: bool = true;

    fn http1_fields(&self) -> Option<&Http1Fields> {
        Some(&self.fields)
    }

    /// A reset stream (or a lost connection) frees its slot in the
    /// client's `max_concurrent_streams` at once: without this watch, a
    /// client resetting stream after stream would hold an upstream
    /// connection and a circuit-breaker slot for each until its upstream
    /// answered.
    async fn gone(&mut self) {
        match self.body.as_mut() {
            // Once the head went out, h2 reports a reset on the body's
            // stream only (the session's watch would fail at once).
            Some(body) => {
                let _ = poll_fn(|cx| body.poll_reset(cx)).await;
            }
            None => {
                let _ = self.session.idle().await;
            }
        }
    }

    async fn read_body(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        if self.ended {
            return Ok(0);
        }
        let data = self.data().await?;
        match (self.left.as_mut(), data) {
            (Some(left), Some(d)) => {
                if d.len() as u64 > *left {
                    return Err(stream_error("request DATA longer than its content-length"));
                }
                *left -= d.len() as u64;
                if *left == 0 {
                    // The body's last bytes: they go on only once the stream
                    // has ended where its length says.
                    if self.data().await?.is_some() {
                        return Err(stream_error("request DATA longer than its content-length"));
                    }
                    self.ended = true;
                }
                buf.extend_from_slice(&d);
                Ok(d.len())
            }
            (Some(_), None) => Err(stream_error("request DATA shorter than its content-length")),
            (None, Some(d)) => {
                let before = buf.len();
                buf.extend_from_slice(format!("{:x}\r\n", d.len()).as_bytes());
                buf.extend_from_slice(&d);
                buf.extend_from_slice(b"\r\n");
                Ok(buf.len() - before)
            }
            (None, None) => {
                self.ended = true;
                buf.extend_from_slice(b"0\r\n\r\n");
                Ok(5)
            }
        }
    }

    fn response_head(
        &mut self,
        engine: &NativeH1,
        _out: &mut Vec<u8>,
        resp: &httparse::Response<'_, '_>,
        head: &ResponseHead,
        ctx: &RequestCtx,
        _close: bool,
    ) -> pingora_error::Result<()> {
        // Built as `http` parts, without a case map (HTTP/2 names are lower
        // case): `ResponseHeader::append_header` would copy each name into a
        // new string and parse it back, ~600 instructions a field.
        let mut parts = response_head::empty_parts();
        parts.status = StatusCode::from_u16(head.status).or_err(InvalidHTTPHeader, "invalid status")?;
        parts.headers.reserve(resp.headers.len() + 4);
        // A length repeated with the same value goes on once (RFC 9110 §8.6);
        // the coding does not go at all: DATA frames carry the content.
        let mut length_seen = false;
        // Without the route's edits, the proxy's own fields are set here as
        // the head is built (as the HTTP/1 writer does), rather than by
        // `downstream_headers` on a finished map: ~1,400 instructions a
        // stream of fields appended, looked up and removed again
        // (bench/RESULTS.md).
        let edits = (!engine.proxy.edits_response_headers(ctx)).then(|| engine.proxy.response_edits(ctx));
        let (mut has_server, mut has_date) = (false, false);
        for h in resp.headers.iter().filter(|h| head.forwards(h.name.as_bytes())) {
            let is_length = h.name.eq_ignore_ascii_case("content-length");
            if (is_length && std::mem::replace(&mut length_seen, true))
                || h.name.eq_ignore_ascii_case("transfer-encoding")
                || edits.as_ref().is_some_and(|e| e.replaces(h.name.as_bytes()))
            {
                continue;
            }
            has_server |= h.name.eq_ignore_ascii_case("server");
            has_date |= h.name.eq_ignore_ascii_case("date");
            let name = HeaderName::from_bytes(h.name.as_bytes()).or_err(InvalidHTTPHeader, "invalid header name")?;
            let value = HeaderValue::from_bytes(h.value).or_err(InvalidHTTPHeader, "invalid header value")?;
            parts.headers.try_append(name, value).or_err(InvalidHTTPHeader, "too many header fields")?;
        }
        let map = match edits {
            Some(edits) => {
                let headers = &mut parts.headers;
                edits.additions(has_server, has_date, |name, added| {
                    headers.insert(name.clone(), added.header_value());
                });
                ResponseHeader::from(parts)
            }
            None => {
                let mut map = ResponseHeader::from(parts);
                engine.proxy.downstream_headers(&mut map, ctx)?;
                map
            }
        };
        self.head = Some(Box::new(map));
        Ok(())
    }

    async fn pass<B: Buf + Send + Sync>(&mut self, mut bytes: B, end: bool, _close: bool) -> io::Result<()> {
        let data = bytes.copy_to_bytes(bytes.remaining());
        if let Some(head) = self.head.take() {
            let headers_end = end && data.is_empty();
            // As built (`vendor/pingora-core` patch 2): `date` is the
            // upstream's or ours, and the head is not copied.
            self.session
                .write_response_header_as_built(*head, headers_end)
                .map_err(|_| stream_error("response head refused"))?;
            if headers_end {
                return Ok(());
            }
            // From here Pingora's session no longer knows whether the
            // stream ended (`finish` does nothing; `shutdown` resets): the
            // exchange returns right after its last `pass`, with nothing
            // awaited that could turn a whole response into a broken one.
            self.body = self.session.take_response_body_writer();
        }
        if data.is_empty() && !end {
            return Ok(());
        }
        let body = self.body.as_mut().ok_or_else(|| stream_error("response body before its head"))?;
        let idle = self.session.get_write_timeout();
        send_down(body, data, end, idle).await.map_err(|_| stream_error("response body refused"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{CONTENT_LENGTH, HOST};
    use http::{Method, Version};

    fn h2_request(uri: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = http::Request::builder().method(Method::POST).uri(uri).version(Version::HTTP_2);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        req.body(()).unwrap().into_parts().0.into()
    }

    /// The head an HTTP/1 upstream gets for `req` on a route without edits.
    fn written(req: &RequestHeader, has_body: bool) -> String {
        let fields = http1_fields(req, has_body).expect("sendable as HTTP/1");
        let mut out = Vec::new();
        super::super::wire::write_request_head(&mut out, req, None, Some(&fields));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn host_comes_from_the_authority_and_a_known_length_stays() {
        let req = h2_request(
            "https://example.com:8443/a?b",
            &[("host", "example.com:8443"), ("content-length", "5"), ("x-a", "1"), ("content-length", "5")],
        );
        assert_eq!(
            written(&req, true),
            "POST /a?b HTTP/1.1\r\nhost: example.com:8443\r\nx-a: 1\r\ncontent-length: 5\r\n\r\n"
        );
        // A route that edits the head gets a copy with the same fields.
        let mut edited = req.clone();
        http1_fields(&req, true).unwrap().apply(&mut edited).unwrap();
        assert_eq!(edited.headers.get_all(HOST).iter().collect::<Vec<_>>(), ["example.com:8443"]);
        assert_eq!(edited.headers.get_all(CONTENT_LENGTH).iter().collect::<Vec<_>>(), ["5"]);
        assert_eq!(edited.raw_path(), b"/a?b");
        assert_eq!(edited.version, Version::HTTP_11);
        assert!(!edited.headers.contains_key(TRANSFER_ENCODING));
    }

    #[test]
    fn an_unknown_length_goes_chunked_and_no_body_goes_without() {
        let req = h2_request("http://a/", &[("x-a", "1")]);
        assert_eq!(written(&req, true), "POST / HTTP/1.1\r\nhost: a\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(http1_fields(&req, true).unwrap().framing, Some(RequestBody::Chunked));
        assert_eq!(written(&req, false), "POST / HTTP/1.1\r\nhost: a\r\nx-a: 1\r\n\r\n");
        let mut edited = req.clone();
        http1_fields(&req, true).unwrap().apply(&mut edited).unwrap();
        assert_eq!(edited.headers.get(TRANSFER_ENCODING).unwrap(), "chunked");
        assert!(!edited.headers.contains_key(CONTENT_LENGTH));
        let mut edited = req.clone();
        http1_fields(&req, false).unwrap().apply(&mut edited).unwrap();
        assert!(!edited.headers.contains_key(TRANSFER_ENCODING) && !edited.headers.contains_key(CONTENT_LENGTH));
    }

    #[test]
    fn the_placeholder_holds_nothing() {
        let p = placeholder();
        assert!(p.headers.is_empty());
        assert_eq!(p.raw_path(), b"/");
    }

    #[test]
    fn a_target_or_authority_http1_would_split_differently_is_refused() {
        for t in [&b"/a b"[..], b"/a\tb", b"/a\x7f", b"/a\x01", b"/\r\nX: y"] {
            assert!(breaks_a_target(t), "{t:?}");
        }
        assert!(!breaks_a_target(b"/a%20b?c=d&e=~"));
        for a in [&b"a%2eexample"[..], b"a:99999", b"user@a", b""] {
            assert!(!target::is_valid_host(a), "{a:?}");
        }
    }

    #[test]
    fn what_http1_would_read_differently_is_refused() {
        for (uri, headers) in [
            ("http://user@a/", vec![]),
            ("/relative", vec![]),
            ("http://a/", vec![("transfer-encoding", "chunked")]),
            ("http://a/", vec![("content-length", "5"), ("content-length", "6")]),
            ("http://a/", vec![("content-length", "5, 6")]),
            ("http://a/", vec![("content-length", "x")]),
        ] {
            let req = h2_request(uri, &headers);
            assert!(http1_fields(&req, true).is_none(), "accepted {uri} {headers:?}");
        }
    }
}
