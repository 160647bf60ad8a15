//! HTTP/1.1 on the wire for the native engine: request and response heads
//! parsed with `httparse`, message framing, the chunked-body scanner, and
//! heads written back out.

use crate::proxy::forwarding::X_EXPECTED_TIMEOUT;
use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Uri};
use pingora_http::RequestHeader;
use std::mem::MaybeUninit;
use std::time::Duration;

/// Headers a request or response may carry; more is 431 (Envoy's default
/// `max_headers_count` is 100).
pub const MAX_HEADERS: usize = 128;

/// Room for a head's headers. Left uninitialised: httparse writes only the
/// ones it finds (zeroing all 128 was 4 KiB of stores per parse).
pub type HeaderSlots<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

pub fn header_slots<'b>() -> HeaderSlots<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// Parses a response head into `resp`, its headers into `slots`.
pub fn parse_response<'h, 'b>(
    resp: &mut httparse::Response<'h, 'b>,
    buf: &'b [u8],
    slots: &'h mut HeaderSlots<'b>,
) -> httparse::Result<usize> {
    httparse::ParserConfig::default().parse_response_with_uninit_headers(resp, buf, slots)
}

/// Connection-level headers that are never forwarded. `transfer-encoding`
/// is kept: bodies pass through with the framing they arrived with.
const HOP_BY_HOP: [&str; 5] = ["connection", "keep-alive", "proxy-connection", "te", "upgrade"];

pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
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
    pub body_len: u64,
    /// The client asked to close the connection after this request.
    pub close: bool,
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
    Malformed,
}

/// Headers the proxy may add to a request on its way upstream.
const EDGE_HEADERS: usize = 4;

/// Parses the request head at the start of `buf`. On `Complete`, the head
/// has been split off `buf` (header values share its memory).
pub fn parse_request(buf: &mut BytesMut) -> ParsedRequest {
    let mut slots = header_slots();
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return ParsedRequest::Partial,
        Err(httparse::Error::TooManyHeaders) => return ParsedRequest::TooManyHeaders,
        Err(_) if buf.starts_with(b"PRI * HTTP/2.0") => return ParsedRequest::HandOff,
        Err(_) => return ParsedRequest::Malformed,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return ParsedRequest::HandOff;
    };
    if !path.starts_with('/') || method == "CONNECT" {
        return ParsedRequest::HandOff;
    }
    let mut body_len = None;
    let mut close = false;
    // (name, value start, value end) for each header, as offsets into `buf`.
    let base = buf.as_ptr() as usize;
    let mut offsets = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            match add_length(body_len, h.value) {
                Some(n) => body_len = Some(n),
                None => return ParsedRequest::Malformed,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return ParsedRequest::HandOff;
        } else if name.eq_ignore_ascii_case(b"connection") {
            if has_token(h.value, b"upgrade") {
                return ParsedRequest::HandOff;
            }
            close |= has_token(h.value, b"close");
        }
        let Ok(name) = HeaderName::from_bytes(name) else {
            return ParsedRequest::Malformed;
        };
        let start = h.value.as_ptr() as usize - base;
        offsets.push((name, start, start + h.value.len()));
    }
    // Room for the headers the proxy adds (x-forwarded-proto, x-request-id,
    // x-forwarded-for, ...): growing the map later rehashes it.
    let capacity = offsets.len() + EDGE_HEADERS;
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
            header
        }
    };
    ParsedRequest::Complete(Box::new(Request { header, body_len: body_len.unwrap_or(0), close }))
}

/// The URI of an origin-form target (`/path?query`, as `parse_request` has
/// checked) the URI holds byte for byte, sharing the head's memory; `None`
/// for anything Pingora's parse must see (a fragment to drop, bytes a URI
/// refuses).
fn origin_form_uri(head: &Bytes, path: std::ops::Range<usize>) -> Option<Uri> {
    if head.get(path.clone())?.contains(&b'#') {
        return None;
    }
    PathAndQuery::from_maybe_shared(head.slice(path)).ok().map(Uri::from)
}

/// A `Content-Length` value, given the one seen before (repeats must agree);
/// `None` if invalid or conflicting.
fn add_length(seen: Option<u64>, value: &[u8]) -> Option<u64> {
    let n = parse_length(value)?;
    seen.is_none_or(|s| s == n).then_some(n)
}

fn parse_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    value.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// What the engine needs from an upstream response head.
pub struct ResponseHead {
    pub status: u16,
    pub framing: Framing,
    /// The upstream will close the connection after this response.
    pub close: bool,
}

/// Reads framing and connection facts from a parsed response. `Err` names
/// what is wrong with a response the proxy cannot forward.
pub fn response_head(resp: &httparse::Response<'_, '_>, head_request: bool) -> Result<ResponseHead, &'static str> {
    let status = resp.code.ok_or("no status")?;
    let mut length = None;
    let mut chunked = None;
    let mut close = resp.version != Some(1);
    let mut keep_alive = false;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            length = Some(add_length(length, h.value).ok_or("invalid content-length")?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= has_token(h.value, b"close");
            keep_alive |= has_token(h.value, b"keep-alive");
        }
    }
    if resp.version == Some(0) && keep_alive {
        close = false;
    }
    let framing = if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    Ok(ResponseHead { status, framing, close })
}

/// Appends `name: value\r\n`.
pub fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes `name: <whole milliseconds>\r\n` without the formatting
/// machinery, which costs several hundred instructions per number.
pub fn put_millis_header(out: &mut Vec<u8>, name: &[u8], t: std::time::Duration) {
    let mut n = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    put_header(out, name, &digits[i..]);
}

/// Writes the request head the upstream gets (HTTP/1.1, no hop-by-hop
/// headers). `expected_timeout`: `Some` replaces the request's
/// `x-envoy-expected-rq-timeout-ms` with this value (`Some(None)` drops it).
pub fn write_request_head(out: &mut Vec<u8>, req: &RequestHeader, expected_timeout: Option<Option<Duration>>) {
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.raw_path());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers.iter() {
        let name = name.as_str();
        let replaced = expected_timeout.is_some() && name == X_EXPECTED_TIMEOUT;
        if !replaced && !is_hop_by_hop(name.as_bytes()) {
            put_header(out, name.as_bytes(), value.as_bytes());
        }
    }
    if let Some(Some(t)) = expected_timeout {
        put_millis_header(out, X_EXPECTED_TIMEOUT.as_bytes(), t);
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes `HTTP/1.1 <status> <reason>\r\n`.
pub fn write_status_line(out: &mut Vec<u8>, status: u16, reason: Option<&str>) {
    let canonical = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason());
    out.extend_from_slice(b"HTTP/1.1 ");
    let status = status.clamp(100, 999);
    out.extend_from_slice(&[b'0' + (status / 100) as u8, b'0' + (status / 10 % 10) as u8, b'0' + (status % 10) as u8]);
    out.push(b' ');
    out.extend_from_slice(canonical.or(reason).unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Finds where a chunked body ends, without decoding it: the bytes pass
/// through unchanged.
#[derive(Debug, Default)]
pub struct ChunkedScanner {
    state: ChunkState,
    size: u64,
    digits: u8,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    EndLf,
    Done,
}

impl ChunkedScanner {
    /// Feeds the next bytes of the body. `Ok(Some(n))`: the body ends after
    /// the first `n` bytes of `data`; `Ok(None)`: it continues.
    pub fn scan(&mut self, data: &[u8]) -> Result<Option<usize>, &'static str> {
        use ChunkState::*;
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            match self.state {
                Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        self.digits += 1;
                        if self.digits > 15 {
                            return Err("chunk size too large");
                        }
                        self.size = self.size * 16 + d;
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => self.state = Extension,
                    b'\r' if self.digits > 0 => self.state = SizeLf,
                    _ => return Err("invalid chunk size"),
                },
                Extension => {
                    if b == b'\r' {
                        self.state = SizeLf;
                    } else if b == b'\n' {
                        return Err("bare LF in chunk extension");
                    }
                }
                SizeLf => {
                    if b != b'\n' {
                        return Err("expected LF after chunk size");
                    }
                    self.state = if self.size == 0 { TrailerStart } else { Data };
                }
                Data => {
                    let take = self.size.min((data.len() - i) as u64);
                    self.size -= take;
                    i += take as usize;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                DataCr if b == b'\r' => self.state = DataLf,
                DataLf if b == b'\n' => {
                    self.state = Size;
                    self.digits = 0;
                }
                DataCr | DataLf => return Err("chunk data not followed by CRLF"),
                TrailerStart => self.state = if b == b'\r' { EndLf } else { TrailerLine },
                TrailerLine => {
                    if b == b'\n' {
                        self.state = TrailerStart;
                    }
                }
                EndLf => {
                    if b != b'\n' {
                        return Err("expected LF after the last chunk");
                    }
                    self.state = Done;
                    return Ok(Some(i + 1));
                }
                Done => return Ok(Some(i)),
            }
            i += 1;
        }
        Ok(None)
    }
}

/// A response the proxy writes itself, as bytes: head and (unless `HEAD`) body.
pub fn write_local_reply(out: &mut Vec<u8>, head: &pingora_http::ResponseHeader, body: &Bytes, close: bool) {
    write_status_line(out, head.status.as_u16(), None);
    for (name, value) in head.headers.iter() {
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ParsedRequest {
        parse_request(&mut BytesMut::from(text))
    }

    #[test]
    fn millisecond_headers() {
        let mut out = Vec::new();
        for ms in [0, 7, 15000, u64::MAX] {
            put_millis_header(&mut out, b"x-t", Duration::from_millis(ms));
        }
        put_millis_header(&mut out, b"x-t", Duration::MAX);
        let max = u64::MAX;
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("x-t: 0\r\nx-t: 7\r\nx-t: 15000\r\nx-t: {max}\r\nx-t: {max}\r\n")
        );
    }

    #[test]
    fn request_heads() {
        let mut buf = BytesMut::from("GET /films?x=1 HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-A: 2\r\n\r\nNEXT");
        let ParsedRequest::Complete(r) = parse_request(&mut buf) else { panic!("not complete") };
        assert_eq!(&buf[..], b"NEXT");
        assert_eq!(r.header.raw_path(), b"/films?x=1");
        assert_eq!(r.header.headers.get_all("x-a").iter().count(), 2);
        assert_eq!((r.body_len, r.close), (0, false));
        assert!(matches!(parse("GET / HTTP/1.1\r\nHost: a"), ParsedRequest::Partial));
        assert!(matches!(parse("GET / HTTP/1.0\r\n\r\n"), ParsedRequest::HandOff));
        assert!(matches!(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), ParsedRequest::HandOff));
        assert!(matches!(parse("GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\n"), ParsedRequest::HandOff));
        assert!(matches!(parse("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), ParsedRequest::HandOff));
        assert!(matches!(parse("GET http://a/ HTTP/1.1\r\n\r\n"), ParsedRequest::HandOff));
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
        assert_eq!((r.body_len, r.close), (5, true));
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
    fn request_head_replaces_the_expected_timeout_and_drops_hop_by_hop() {
        let mut buf = BytesMut::from(
            "GET /a?b HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nX-Envoy-Expected-Rq-Timeout-Ms: 5\r\n\r\n",
        );
        let ParsedRequest::Complete(r) = parse_request(&mut buf) else { panic!() };
        let mut out = Vec::new();
        write_request_head(&mut out, &r.header, Some(Some(Duration::from_secs(15))));
        assert_eq!(out, b"GET /a?b HTTP/1.1\r\nhost: h\r\nx-envoy-expected-rq-timeout-ms: 15000\r\n\r\n");
        out.clear();
        write_request_head(&mut out, &r.header, None);
        assert_eq!(out, b"GET /a?b HTTP/1.1\r\nhost: h\r\nx-envoy-expected-rq-timeout-ms: 5\r\n\r\n");
    }

    fn framing(text: &str, head: bool) -> Result<Framing, &'static str> {
        let mut storage = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut storage);
        resp.parse(text.as_bytes()).unwrap();
        response_head(&resp, head).map(|h| h.framing)
    }

    #[test]
    fn response_framing() {
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false), Ok(Framing::Length(5)));
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true), Ok(Framing::Empty));
        assert_eq!(framing("HTTP/1.1 204 No Content\r\n\r\n", false), Ok(Framing::Empty));
        assert_eq!(framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false), Ok(Framing::Chunked));
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n", false), Ok(Framing::UntilClose));
        assert!(framing("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
    }

    #[test]
    fn chunked_end_is_found_across_reads() {
        let body = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for split in 0..body.len() {
            let mut s = ChunkedScanner::default();
            let (a, b) = body.split_at(split);
            let end = match s.scan(a).unwrap() {
                Some(n) => n,
                None => a.len() + s.scan(b).unwrap().expect("end in second part"),
            };
            assert_eq!(&body[end..], b"NEXT", "split at {split}");
        }
        assert!(ChunkedScanner::default().scan(b"zz\r\n").is_err());
        assert!(ChunkedScanner::default().scan(b"1\r\nab").is_err());
        assert_eq!(ChunkedScanner::default().scan(b"0\r\n\r\n"), Ok(Some(5)));
    }
}
