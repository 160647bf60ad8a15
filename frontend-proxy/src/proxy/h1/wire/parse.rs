//! Request and response heads read with `httparse`, and the facts the
//! engine frames messages by (RFC 9112 §§2-6).
//!
//! A head is parsed once, when its end has arrived ([`head_end`] scans only
//! the new bytes of each read), so a head trickled a byte at a time costs
//! linear, not quadratic, time.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, TRANSFER_ENCODING};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Uri};
use pingora_http::RequestHeader;
use std::mem::MaybeUninit;

use crate::proxy::framing::{add_length, Codings};
pub use crate::proxy::hop_by_hop::{has_token, is_hop_by_hop, ConnectionNamed};
use crate::proxy::LocalReply;

/// Largest upstream response head accepted (interim ones included).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Headers a request or response may carry; more is 431 (Envoy's default
/// `max_headers_count` is 100).
pub const MAX_HEADERS: usize = 128;

/// Room for a head's headers. Left uninitialised: httparse writes only the
/// ones it finds (zeroing all 128 was 4 KiB of stores per parse).
pub type HeaderSlots<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

pub fn header_slots<'b>() -> HeaderSlots<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// The end of the head that starts `buf` (just past its empty line),
/// looking for it from `from` on: the caller passes how far it had looked
/// (less three bytes, as the end may straddle two reads). Empty lines in
/// front of the head (RFC 9112 §2.2) are not its end.
pub fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = leading_empty_lines(buf);
    let mut at = from.max(start);
    while let Some(i) = memchr::memchr(b'\n', buf.get(at..)?) {
        let nl = at + i;
        match buf.get(nl + 1..) {
            Some([b'\r', b'\n', ..]) => return Some(nl + 3),
            Some([b'\n', ..]) => return Some(nl + 2),
            _ => at = nl + 1,
        }
    }
    None
}

/// How many bytes of empty lines (CRLF or LF) `buf` starts with.
fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match buf.get(i..) {
            Some([b'\r', b'\n', ..]) => i += 2,
            Some([b'\n', ..]) => i += 1,
            _ => return i,
        }
    }
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// A request head the native engine serves.
pub struct Request {
    pub header: RequestHeader,
    pub body: RequestBody,
    /// The client asked to close the connection after this request.
    pub close: bool,
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    /// `Content-Length` bytes (none without the header).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What reading a request head gave.
pub enum ParsedRequest {
    /// More bytes are needed.
    Partial,
    Complete(Box<Request>),
    /// Valid HTTP the native engine leaves to Pingora (upgrades, `Expect`,
    /// chunked request bodies, HTTP/1.0, h2c, non-origin-form targets).
    HandOff,
    /// Too many headers.
    TooManyHeaders,
    /// Framing that cannot be trusted, or bytes that are not HTTP (400).
    Malformed,
    /// A transfer coding besides chunked (501, RFC 9112 §6.1).
    UnsupportedCoding,
}

/// Headers the proxy may add to a request on its way upstream.
const EDGE_HEADERS: usize = 4;

/// Parses the request head at the start of `buf`. On `Complete`, the head
/// has been split off `buf` (header values share its memory). Fields named
/// by the request's `Connection` headers are left out.
pub fn parse_request(buf: &mut BytesMut) -> ParsedRequest {
    let mut slots = header_slots();
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return ParsedRequest::Partial,
        Err(httparse::Error::TooManyHeaders) => return ParsedRequest::TooManyHeaders,
        Err(_) if buf[leading_empty_lines(buf)..].starts_with(b"PRI * HTTP/2.0") => return ParsedRequest::HandOff,
        Err(_) => return ParsedRequest::Malformed,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return ParsedRequest::HandOff;
    };
    // Origin-form, or absolute-form (which `proxy::target` turns into
    // origin-form); asterisk- and authority-form go to Pingora.
    if method == "CONNECT" || !(path.starts_with('/') || is_absolute_http(path)) {
        return ParsedRequest::HandOff;
    }
    let mut body_len = None;
    let mut codings = Codings::default();
    let (mut close, mut hand_off) = (false, false);
    let mut named = ConnectionNamed::default();
    // (name, value start, value end) for each header, as offsets into `buf`.
    let base = buf.as_ptr() as usize;
    let mut offsets = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let repeated = body_len.is_some();
            match add_length(body_len, h.value) {
                Some(n) => body_len = Some(n),
                None => return ParsedRequest::Malformed,
            }
            if repeated {
                // The same length again: one goes on (RFC 9110 §8.6).
                continue;
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Forwarded as one `transfer-encoding: chunked` below.
            codings.add(h.value);
            continue;
        } else if name.eq_ignore_ascii_case(b"expect") || name.eq_ignore_ascii_case(b"upgrade") {
            hand_off = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            hand_off |= has_token(h.value, b"upgrade");
            close |= has_token(h.value, b"close");
            if !named.add(h.value) {
                return ParsedRequest::Malformed;
            }
        }
        let Ok(name) = HeaderName::from_bytes(name) else {
            return ParsedRequest::Malformed;
        };
        let start = h.value.as_ptr() as usize - base;
        offsets.push((name, start, start + h.value.len()));
    }
    // Framing first, whoever serves the request: a length beside a coding,
    // or codings that do not end in one chunked, cannot be trusted (RFC
    // 9112 §6.3); the connection closes after the 400.
    let body = match (codings.present, body_len) {
        (false, length) => RequestBody::Length(length.unwrap_or(0)),
        (true, Some(_)) => return ParsedRequest::Malformed,
        (true, None) => match codings.refusal() {
            None => RequestBody::Chunked,
            Some(LocalReply::UnsupportedTransferCoding) => return ParsedRequest::UnsupportedCoding,
            Some(_) => return ParsedRequest::Malformed,
        },
    };
    if hand_off {
        return ParsedRequest::HandOff;
    }
    if !named.is_empty() {
        offsets.retain(|(name, _, _)| !named.names(name.as_str().as_bytes()));
    }
    // Room for the headers the proxy adds (x-forwarded-proto, x-request-id,
    // x-forwarded-for, ...): growing the map later rehashes it.
    let capacity = offsets.len() + EDGE_HEADERS + usize::from(body == RequestBody::Chunked);
    let path_start = path.as_ptr() as usize - base;
    let path_end = path_start + path.len();
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return ParsedRequest::Malformed;
    };
    let head = buf.split_to(head_len).freeze();
    let mut values =
        offsets.into_iter().map(|(name, start, end)| (name, HeaderValue::from_maybe_shared(head.slice(start..end))));
    let header = match origin_form_uri(&head, path_start..path_end) {
        // The usual target: parts built directly, the path shared with the head.
        Some(uri) => {
            let mut parts = http::Request::new(()).into_parts().0;
            parts.method = method;
            parts.uri = uri;
            parts.headers = HeaderMap::with_capacity(capacity);
            if !values.all(|(name, value)| value.map(|v| parts.headers.append(name, v)).is_ok()) {
                return ParsedRequest::Malformed;
            }
            if body == RequestBody::Chunked {
                parts.headers.append(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            }
            RequestHeader::from(parts)
        }
        // Anything else (a fragment, bytes the URI refuses): Pingora's parse,
        // which keeps such a target verbatim for the wire.
        None => {
            let Ok(mut header) = RequestHeader::build_no_case(method, &head[path_start..path_end], Some(capacity))
            else {
                return ParsedRequest::Malformed;
            };
            if !values.all(|(name, value)| value.is_ok_and(|v| header.append_header(name, v).is_ok())) {
                return ParsedRequest::Malformed;
            }
            if body == RequestBody::Chunked && header.append_header(TRANSFER_ENCODING, "chunked").is_err() {
                return ParsedRequest::Malformed;
            }
            header
        }
    };
    ParsedRequest::Complete(Box::new(Request { header, body, close }))
}

/// Whether a target is an `http` or `https` URI.
fn is_absolute_http(target: &str) -> bool {
    let t = target.as_bytes();
    t.get(..7).is_some_and(|s| s.eq_ignore_ascii_case(b"http://"))
        || t.get(..8).is_some_and(|s| s.eq_ignore_ascii_case(b"https://"))
}

/// The URI of an origin-form target (`/path?query`, as `parse_request` has
/// checked) the URI holds byte for byte, sharing the head's memory; `None`
/// for anything Pingora's parse must see (a fragment to drop, bytes a URI
/// refuses).
fn origin_form_uri(head: &Bytes, path: std::ops::Range<usize>) -> Option<Uri> {
    let target = head.get(path.clone())?;
    if !target.starts_with(b"/") || target.contains(&b'#') {
        return None;
    }
    PathAndQuery::from_maybe_shared(head.slice(path)).ok().map(Uri::from)
}

/// Parses a response head into `resp`, its headers into `slots`.
pub fn parse_response<'h, 'b>(
    resp: &mut httparse::Response<'h, 'b>,
    buf: &'b [u8],
    slots: &'h mut HeaderSlots<'b>,
) -> httparse::Result<usize> {
    httparse::ParserConfig::default().parse_response_with_uninit_headers(resp, buf, slots)
}

/// Where the next response head in an upstream's bytes stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadScan {
    /// Not all there yet; the end was looked for up to the offset given.
    Partial(usize),
    /// An interim (1xx) response of this many bytes: dropped, as Envoy does.
    Interim(usize),
    /// A final response head of this many bytes.
    Final(usize),
    /// Not a response the proxy may forward.
    Invalid(&'static str),
}

/// Finds the response head at the start of `buf` (empty lines in front of
/// it skipped), having looked up to `scanned` before. Only the status line
/// is read here; the caller parses a final head in full.
pub fn scan_response_head(buf: &[u8], scanned: usize) -> HeadScan {
    let Some(end) = head_end(buf, scanned) else {
        return HeadScan::Partial(buf.len().saturating_sub(3).max(scanned));
    };
    match status_code(&buf[leading_empty_lines(buf)..end]) {
        // The native engine never asks to upgrade: a 101 is not an answer to its request.
        Some(101) => HeadScan::Invalid("101 response to a request that did not ask to upgrade"),
        // An interim head is dropped, but only a well-formed one: where a
        // broken one ends is anybody's guess.
        Some(100..=199) if !interim_is_well_formed(&buf[..end]) => HeadScan::Invalid("malformed interim response"),
        Some(100..=199) => HeadScan::Interim(end),
        Some(200..=599) => HeadScan::Final(end),
        Some(_) => HeadScan::Invalid("response status out of range"),
        None => HeadScan::Invalid("malformed response status line"),
    }
}

/// Whether an interim head parses in full, with no field that would
/// frame a body (a 1xx has none, RFC 9110 §15.2).
fn interim_is_well_formed(head: &[u8]) -> bool {
    let mut slots = header_slots();
    let mut resp = httparse::Response::new(&mut []);
    match parse_response(&mut resp, head, &mut slots) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => resp.headers.iter().all(|h| {
            let name = h.name.as_bytes();
            !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"transfer-encoding"))
                || (name.eq_ignore_ascii_case(b"content-length")
                    && crate::proxy::framing::parse_length(h.value).is_some())
        }),
        _ => false,
    }
}

/// The status of a status line `HTTP/1.x ddd ...` (RFC 9112 §4).
fn status_code(line: &[u8]) -> Option<u16> {
    match line {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', b'0' | b'1', b' ', d @ ..] => {
            let digits = d.get(..3)?;
            if !digits.iter().all(u8::is_ascii_digit) || !matches!(d.get(3), Some(b' ' | b'\r' | b'\n')) {
                return None;
            }
            Some(digits.iter().fold(0, |n, d| n * 10 + u16::from(d - b'0')))
        }
        _ => None,
    }
}

/// What the engine needs from an upstream response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub framing: Framing,
    /// The upstream connection cannot carry another request after this
    /// response: the upstream said so, or the framing is one no connection
    /// should be trusted after (RFC 9112 §6.1, §6.3).
    pub close: bool,
    /// `Content-Length` is not forwarded: `Transfer-Encoding` overrides it
    /// (RFC 9112 §6.3), or the status has no content (204).
    pub drop_length: bool,
    /// `Transfer-Encoding` goes on written one way
    /// ([`Codings::canonical`]), not as received.
    pub recode: bool,
    /// Fields the upstream's `Connection` headers name.
    pub connection_named: ConnectionNamed,
}

impl ResponseHead {
    /// Whether an upstream field goes on to the client: not hop-by-hop, not
    /// named in `Connection`, not a length the framing overrides.
    pub fn forwards(&self, name: &[u8]) -> bool {
        let overridden_length = self.drop_length && name.eq_ignore_ascii_case(b"content-length");
        let recoded = self.recode && name.eq_ignore_ascii_case(b"transfer-encoding");
        let named = !self.connection_named.is_empty() && self.connection_named.names(name);
        !(is_hop_by_hop(name) || overridden_length || recoded || named)
    }
}

/// Reads framing and connection facts from a parsed response. `Err` names
/// what is wrong with a response the proxy cannot forward.
pub fn response_head(resp: &httparse::Response<'_, '_>, head_request: bool) -> Result<ResponseHead, &'static str> {
    let status = resp.code.ok_or("no status")?;
    if !(200..=599).contains(&status) {
        return Err("response status out of range");
    }
    let http10 = resp.version != Some(1);
    // The length; lengths that do not agree, or are not numbers, fail the
    // response even beside a coding (RFC 9110 §8.6: the framing is broken).
    let mut length: Result<Option<u64>, ()> = Ok(None);
    let mut codings = Codings::default();
    let mut close = http10;
    let mut keep_alive = false;
    let mut connection_named = ConnectionNamed::default();
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            length = length.and_then(|seen| add_length(seen, h.value).map(Some).ok_or(()));
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings.add(h.value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= has_token(h.value, b"close");
            keep_alive |= has_token(h.value, b"keep-alive");
            if !connection_named.add(h.value) {
                return Err("too many connection options");
            }
        }
    }
    if codings.chunked > 1 {
        return Err("chunked applied more than once");
    }
    if codings.empty_field {
        return Err("transfer-encoding without a coding");
    }
    let coded = codings.present;
    let length = length.map_err(|()| "invalid content-length")?;
    let has_length = length.is_some();
    if coded && http10 {
        // RFC 9112 §6.1: the framing of such a message is faulty.
        return Err("transfer-encoding in an HTTP/1.0 response");
    }
    if http10 && keep_alive {
        close = false;
    }
    let no_content = head_request || status == 204 || status == 304;
    let framing = if no_content {
        Framing::Empty
    } else if coded {
        // A coding other than chunked last: the body runs to the close.
        if codings.chunked_last {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    // Framing the upstream got wrong (a length beside a coding, a coding in
    // HTTP/1.0) leaves doubt about where its next response would start.
    if coded && (has_length || http10) {
        close = true;
    }
    let drop_length = (coded && !no_content) || status == 204;
    Ok(ResponseHead { status, framing, close, drop_length, recode: coded, connection_named })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ParsedRequest {
        parse_request(&mut BytesMut::from(text))
    }

    #[test]
    fn request_heads() {
        let mut buf = BytesMut::from("GET /films?x=1 HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-A: 2\r\n\r\nNEXT");
        let ParsedRequest::Complete(r) = parse_request(&mut buf) else { panic!("not complete") };
        assert_eq!(&buf[..], b"NEXT");
        assert_eq!(r.header.raw_path(), b"/films?x=1");
        assert_eq!(r.header.headers.get_all("x-a").iter().count(), 2);
        assert_eq!((r.body, r.close), (RequestBody::Length(0), false));
        assert!(matches!(parse("GET / HTTP/1.1\r\nHost: a"), ParsedRequest::Partial));
        assert!(matches!(parse("GET / HTTP/1.0\r\n\r\n"), ParsedRequest::HandOff));
        assert!(matches!(parse("POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"), ParsedRequest::HandOff));
        assert!(matches!(parse("GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\n"), ParsedRequest::HandOff));
        assert!(matches!(parse("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), ParsedRequest::HandOff));
        assert!(matches!(parse("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), ParsedRequest::HandOff));
        assert!(matches!(parse("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"), ParsedRequest::HandOff));
        let ParsedRequest::Complete(r) = parse("GET http://a/b?c HTTP/1.1\r\nHost: x\r\n\r\n") else { panic!() };
        assert_eq!(r.header.raw_path(), b"http://a/b?c", "proxy::target makes it origin-form");
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            ParsedRequest::Malformed
        ));
        assert!(matches!(parse("GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), ParsedRequest::Malformed));
        assert!(matches!(parse("G(T / HTTP/1.1\r\n\r\n"), ParsedRequest::Malformed));
        let ParsedRequest::Complete(r) = parse("POST / HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
        else {
            panic!()
        };
        assert_eq!((r.body, r.close), (RequestBody::Length(5), true));
    }

    #[test]
    fn request_codings_are_chunked_once_and_last_or_refused() {
        let body = |te: &str| match parse(&format!("POST / HTTP/1.1\r\nHost: h\r\n{te}\r\n")) {
            ParsedRequest::Complete(r) => Ok(r.body),
            ParsedRequest::Malformed => Err(400),
            ParsedRequest::UnsupportedCoding => Err(501),
            _ => Err(0),
        };
        assert_eq!(body("Transfer-Encoding: chunked\r\n"), Ok(RequestBody::Chunked));
        assert_eq!(body("Transfer-Encoding:  ChUnKeD \r\n"), Ok(RequestBody::Chunked));
        assert_eq!(body("Transfer-Encoding: gzip, chunked\r\n"), Err(501));
        assert_eq!(body("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"), Err(501));
        for bad in [
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked, chunked\r\n",
            "Transfer-Encoding: chunked, identity\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
            "Transfer-Encoding: foo\r\n",
            "Transfer-Encoding: \r\n",
            "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\nContent-Length: 1\r\n",
        ] {
            assert_eq!(body(bad), Err(400), "{bad:?}");
        }
        let ParsedRequest::Complete(r) = parse("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n")
        else {
            panic!()
        };
        assert_eq!(r.header.headers.get_all("content-length").iter().count(), 1, "a repeated length goes on once");
    }

    #[test]
    fn fields_named_by_connection_are_left_out_but_framing_and_host_stay() {
        let ParsedRequest::Complete(r) = parse(
            "POST / HTTP/1.1\r\nHost: h\r\nConnection: X-Secret, content-length, Host, keep-alive\r\n\
             X-Secret: 1\r\nX-Other: 2\r\nContent-Length: 3\r\n\r\nabc",
        ) else {
            panic!()
        };
        let h = &r.header.headers;
        assert!(h.get("x-secret").is_none());
        assert_eq!(h.get("x-other").unwrap(), "2");
        assert_eq!(h.get("host").unwrap(), "h");
        assert_eq!(r.body, RequestBody::Length(3));
    }

    #[test]
    fn targets_come_out_as_pingoras_parse_makes_them() {
        let targets = ["/films?x=1", "/", "/a#frag", "/a?b#c", "/%7Euser/./x", "/q?a=\"{}|^`", "/caf\u{e9}", "/a?"];
        for target in targets {
            for method in ["GET", "POST", "PURGE"] {
                let parsed = parse(&format!("{method} {target} HTTP/1.1\r\nHost: h\r\n\r\n"));
                let Ok(pingora) = RequestHeader::build_no_case(method, target.as_bytes(), None) else {
                    assert!(matches!(parsed, ParsedRequest::Malformed), "{target}: Pingora refuses it");
                    continue;
                };
                let ParsedRequest::Complete(r) = parsed else { panic!("{method} {target}: not complete") };
                let ours = &r.header;
                assert_eq!(ours.raw_path(), pingora.raw_path(), "{target}");
                assert_eq!(ours.raw_path_is_utf8(), pingora.raw_path_is_utf8(), "{target}");
                assert_eq!((ours.uri.path(), ours.uri.query()), (pingora.uri.path(), pingora.uri.query()), "{target}");
                assert_eq!((&ours.method, ours.version), (&pingora.method, pingora.version), "{target}");
                assert_eq!(ours.headers.get("host").unwrap(), "h");
            }
        }
    }

    #[test]
    fn the_head_end_is_found_from_where_the_last_look_stopped() {
        let head = b"\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\nrest";
        for from in 0..head.len() - 6 {
            assert_eq!(head_end(head, from.min(head.len() - 7)), Some(head.len() - 4), "from {from}");
        }
        assert_eq!(head_end(b"HTTP/1.1 200 OK\n\nbody", 0), Some(17));
        assert_eq!(head_end(b"\r\n\r\n", 0), None, "empty lines alone are no head");
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
    }

    fn scan(text: &str) -> HeadScan {
        scan_response_head(text.as_bytes(), 0)
    }

    #[test]
    fn response_heads_are_told_apart_by_their_status_line() {
        assert_eq!(scan("HTTP/1.1 200 OK\r\n\r\nbody"), HeadScan::Final(19));
        assert_eq!(scan("\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"), HeadScan::Final(31));
        assert_eq!(scan("\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200"), HeadScan::Interim(38));
        assert_eq!(scan("HTTP/1.1 100\r\n\r\n"), HeadScan::Interim(16));
        assert!(matches!(scan("HTTP/1.1 101 Switching Protocols\r\n\r\n"), HeadScan::Invalid(_)));
        assert!(matches!(scan("HTTP/1.1 099 Weird\r\n\r\n"), HeadScan::Invalid(_)));
        assert!(matches!(scan("HTTP/1.1 600 Odd\r\n\r\n"), HeadScan::Invalid(_)));
        assert!(matches!(scan("HTTP/1.1 20 OK\r\n\r\n"), HeadScan::Invalid(_)));
        assert!(matches!(scan("HTTP/1.1 2000 OK\r\n\r\n"), HeadScan::Invalid(_)));
        assert!(matches!(scan("HTTP/2.0 200 OK\r\n\r\n"), HeadScan::Invalid(_)));
        assert!(matches!(scan("X\r\nHTTP/1.1 200 OK\r\n\r\n"), HeadScan::Invalid(_)));
        assert_eq!(scan("HTTP/1.1 200 OK\r\nA: b\r\n"), HeadScan::Partial(20));
        assert_eq!(scan("\r\n\r\n"), HeadScan::Partial(1));
    }

    fn head(text: &str, head_request: bool) -> Result<ResponseHead, &'static str> {
        let mut storage = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut storage);
        resp.parse(text.as_bytes()).unwrap();
        response_head(&resp, head_request)
    }

    fn framing(text: &str, head_request: bool) -> Result<Framing, &'static str> {
        head(text, head_request).map(|h| h.framing)
    }

    #[test]
    fn response_framing() {
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false), Ok(Framing::Length(5)));
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true), Ok(Framing::Empty));
        assert_eq!(framing("HTTP/1.1 204 No Content\r\n\r\n", false), Ok(Framing::Empty));
        assert_eq!(framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false), Ok(Framing::Chunked));
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", false),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", false),
            Ok(Framing::UntilClose)
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n", false), Ok(Framing::UntilClose));
        assert!(framing("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
        assert!(framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", false).is_err());
        assert!(framing("HTTP/1.1 099 Low\r\n\r\n", false).is_err());
    }

    #[test]
    fn doubtful_framing_is_not_trusted_with_another_request() {
        let both = head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", false).unwrap();
        assert_eq!(both.framing, Framing::Chunked);
        assert!(both.close && both.drop_length && !both.forwards(b"Content-Length"));
        let old = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n", false);
        assert!(old.is_err(), "RFC 9112 §6.1: faulty framing");
        let kept = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", false).unwrap();
        assert!(!kept.close);
        let fine = head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false).unwrap();
        assert!(!fine.close && fine.forwards(b"content-length"));
    }

    #[test]
    fn response_fields_named_by_connection_do_not_go_on() {
        let h = head("HTTP/1.1 200 OK\r\nConnection: X-Internal, Content-Length\r\nContent-Length: 2\r\n\r\n", false)
            .unwrap();
        assert!(!h.forwards(b"x-internal"));
        assert!(!h.forwards(b"Connection"));
        assert!(h.forwards(b"content-length"), "framing is not the upstream's to remove");
        assert!(h.forwards(b"x-other"));
    }
}
