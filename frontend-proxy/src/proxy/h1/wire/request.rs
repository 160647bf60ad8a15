//! Request heads read with `httparse`, and how their bodies are delimited
//! (RFC 9112 §§3, 6).

use super::head::{header_slots, leading_empty_lines};
use crate::proxy::framing::{add_length, Codings};
use crate::proxy::hop_by_hop::ConnectionNamed;
use crate::proxy::LocalReply;
use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, TRANSFER_ENCODING};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Uri};
use pingora_http::RequestHeader;

/// A request head the native engine serves.
pub struct Request {
    pub header: RequestHeader,
    /// The head as it arrived, for a hand-off to Pingora after routing.
    pub head: Bytes,
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
    /// HTTP/1.0, h2c, asterisk- and authority-form targets).
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
            let Some(options) = named.add_with_options(h.value) else {
                return ParsedRequest::Malformed;
            };
            hand_off |= options.upgrade;
            close |= options.close;
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
    // A fragment is refused, as Envoy does (see `target.rs`).
    if path.as_bytes().contains(&b'#') {
        return ParsedRequest::Malformed;
    }
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
        // Anything else (bytes the URI refuses): Pingora's parse,
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
    ParsedRequest::Complete(Box::new(Request { header, head, body, close }))
}

/// Whether a target is an `http` or `https` URI.
fn is_absolute_http(target: &str) -> bool {
    let t = target.as_bytes();
    t.get(..7).is_some_and(|s| s.eq_ignore_ascii_case(b"http://"))
        || t.get(..8).is_some_and(|s| s.eq_ignore_ascii_case(b"https://"))
}

/// The URI of an origin-form target (`/path?query`, as `parse_request` has
/// checked) the URI holds byte for byte, sharing the head's memory; `None`
/// for anything Pingora's parse must see (bytes a URI refuses).
fn origin_form_uri(head: &Bytes, path: std::ops::Range<usize>) -> Option<Uri> {
    let target = head.get(path.clone())?;
    if !target.starts_with(b"/") {
        return None;
    }
    PathAndQuery::from_maybe_shared(head.slice(path)).ok().map(Uri::from)
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
    fn a_target_with_a_fragment_is_malformed() {
        for target in ["/a#frag", "/a?b#c", "/#", "http://h/a#b"] {
            let parsed = parse(&format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n"));
            assert!(matches!(parsed, ParsedRequest::Malformed), "{target}");
        }
    }

    #[test]
    fn targets_come_out_as_pingoras_parse_makes_them() {
        let targets = ["/films?x=1", "/", "/%7Euser/./x", "/q?a=\"{}|^`", "/caf\u{e9}", "/a?"];
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
}
