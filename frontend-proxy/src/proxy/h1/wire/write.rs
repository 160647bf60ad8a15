//! Heads written back out: the request the upstream gets, status lines and
//! header lines, and the proxy's own replies.

use super::RequestBody;
use crate::proxy::forwarding::X_EXPECTED_TIMEOUT;
use crate::proxy::hop_by_hop::is_hop_by_hop;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::Version;
use pingora_http::RequestHeader;
use std::time::Duration;

/// Appends `name: value\r\n`.
pub fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes `name: <whole milliseconds>\r\n` without the formatting
/// machinery, which costs more than the rest of the header line.
pub fn put_millis_header(out: &mut Vec<u8>, name: &[u8], t: Duration) {
    put_decimal_header(out, name, u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
}

/// Writes `name: <n>\r\n`, `n` in decimal.
fn put_decimal_header(out: &mut Vec<u8>, name: &[u8], mut n: u64) {
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

/// The fields an HTTP/1 upstream needs that an HTTP/2 request does not
/// carry as HTTP/1 ones: `Host` (its `:authority`) and its body's framing.
/// Written in place of the request's own fields of those names, so that
/// the request head goes upstream without a copy (`h1/downgrade.rs`).
#[derive(Debug, Clone)]
pub struct Http1Fields {
    pub host: HeaderValue,
    /// `Some(Length(n))`: `content-length: n`; `Some(Chunked)`:
    /// `transfer-encoding: chunked`; `None`: no body, and neither field.
    pub framing: Option<RequestBody>,
}

impl Http1Fields {
    /// Whether the request's own field `name` gives way to these.
    fn replace(name: &str) -> bool {
        matches!(name, "host" | "content-length" | "transfer-encoding")
    }

    /// Sets the fields in a request head that is edited before it goes.
    pub fn apply(&self, req: &mut RequestHeader) -> pingora_error::Result<()> {
        req.set_version(Version::HTTP_11);
        req.remove_header(&TRANSFER_ENCODING);
        req.remove_header(&CONTENT_LENGTH);
        req.insert_header(HOST, self.host.clone())?;
        match self.framing {
            Some(RequestBody::Length(n)) => req.insert_header(CONTENT_LENGTH, n),
            Some(RequestBody::Chunked) => req.insert_header(TRANSFER_ENCODING, HeaderValue::from_static("chunked")),
            None => Ok(()),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self.framing {
            Some(RequestBody::Length(n)) => put_decimal_header(out, b"content-length", n),
            Some(RequestBody::Chunked) => put_header(out, b"transfer-encoding", b"chunked"),
            None => {}
        }
    }
}

/// Writes the request head the upstream gets (HTTP/1.1, no hop-by-hop
/// headers). `expected_timeout`: `Some` replaces the request's
/// `x-envoy-expected-rq-timeout-ms` with this value (`Some(None)` drops it).
/// `fields`: written in place of the request's own `Host` and framing.
pub fn write_request_head(
    out: &mut Vec<u8>,
    req: &RequestHeader,
    expected_timeout: Option<Option<Duration>>,
    fields: Option<&Http1Fields>,
) {
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.raw_path());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(f) = fields {
        put_header(out, b"host", f.host.as_bytes());
    }
    for (name, value) in req.headers.iter() {
        let name = name.as_str();
        let replaced = (expected_timeout.is_some() && name == X_EXPECTED_TIMEOUT)
            || (fields.is_some() && Http1Fields::replace(name));
        if !replaced && !is_hop_by_hop(name.as_bytes()) {
            put_header(out, name.as_bytes(), value.as_bytes());
        }
    }
    if let Some(f) = fields {
        f.write(out);
    }
    if let Some(Some(t)) = expected_timeout {
        put_millis_header(out, X_EXPECTED_TIMEOUT.as_bytes(), t);
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes `HTTP/1.1 <status> <reason>\r\n` for a status the caller has
/// checked to be three digits (100-599): the canonical reason if there is
/// one, else the upstream's.
pub fn write_status_line(out: &mut Vec<u8>, status: u16, reason: Option<&str>) {
    let canonical = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(canonical.or(reason).unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
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
    use super::super::request::{parse_request, ParsedRequest};
    use super::*;
    use bytes::BytesMut;

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
    fn request_head_replaces_the_expected_timeout_and_drops_hop_by_hop() {
        let mut buf = BytesMut::from(
            "GET /a?b HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nX-Envoy-Expected-Rq-Timeout-Ms: 5\r\n\r\n",
        );
        let ParsedRequest::Complete(r) = parse_request(&mut buf) else { panic!() };
        let mut out = Vec::new();
        write_request_head(&mut out, &r.header, Some(Some(Duration::from_secs(15))), None);
        assert_eq!(out, b"GET /a?b HTTP/1.1\r\nhost: h\r\nx-envoy-expected-rq-timeout-ms: 15000\r\n\r\n");
        out.clear();
        write_request_head(&mut out, &r.header, None, None);
        assert_eq!(out, b"GET /a?b HTTP/1.1\r\nhost: h\r\nx-envoy-expected-rq-timeout-ms: 5\r\n\r\n");
    }

    #[test]
    fn status_lines_carry_the_canonical_reason() {
        let mut out = Vec::new();
        write_status_line(&mut out, 404, Some("Nope"));
        write_status_line(&mut out, 599, Some("Custom"));
        write_status_line(&mut out, 299, None);
        assert_eq!(out, b"HTTP/1.1 404 Not Found\r\nHTTP/1.1 599 Custom\r\nHTTP/1.1 299 \r\n");
    }
}
