//! Upstream response heads: where the next one starts and ends (interim
//! ones skipped), whether its status and framing can be trusted, and which
//! of its fields go on (RFC 9112 §§4, 6; RFC 9110 §15).

use super::head::{head_end, header_slots, leading_empty_lines, HeaderSlots};
use crate::proxy::framing::{add_length, Codings};
use crate::proxy::hop_by_hop::{is_hop_by_hop, ConnectionNamed};

/// Largest upstream response head accepted (interim ones included).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
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
/// frame a body (a 1xx has none, RFC 9110 §15.2): no `Transfer-Encoding`,
/// and `Content-Length` fields only if they are numbers that agree.
fn interim_is_well_formed(head: &[u8]) -> bool {
    let mut slots = header_slots();
    let mut resp = httparse::Response::new(&mut []);
    match parse_response(&mut resp, head, &mut slots) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {
            let mut length = None;
            resp.headers.iter().all(|h| {
                let name = h.name.as_bytes();
                if name.eq_ignore_ascii_case(b"transfer-encoding") {
                    return false;
                }
                if name.eq_ignore_ascii_case(b"content-length") {
                    length = add_length(length, h.value);
                    return length.is_some();
                }
                true
            })
        }
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
    // An explicit `close` option ends the connection whatever else its
    // `Connection` fields say; HTTP/1.0 closes unless `keep-alive` asks
    // otherwise.
    let mut close = false;
    let mut keep_alive = false;
    let mut connection_named = ConnectionNamed::default();
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            length = length.and_then(|seen| add_length(seen, h.value).map(Some).ok_or(()));
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings.add(h.value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            let options = connection_named.add_with_options(h.value).ok_or("too many connection options")?;
            close |= options.close;
            keep_alive |= options.keep_alive;
        }
    }
    if codings.chunked > 1 {
        return Err("chunked applied more than once");
    }
    if codings.malformed {
        return Err("transfer-encoding without a valid coding");
    }
    let coded = codings.present;
    let length = length.map_err(|()| "invalid content-length")?;
    let has_length = length.is_some();
    if coded && http10 {
        // RFC 9112 §6.1: the framing of such a message is faulty.
        return Err("transfer-encoding in an HTTP/1.0 response");
    }
    if http10 && !keep_alive {
        close = true;
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
    // RFC 9112 §6.3: no length beside a coding, even where there is no
    // body to frame (a HEAD or 304 response's fields describe another).
    let drop_length = coded || status == 204;
    Ok(ResponseHead { status, framing, close, drop_length, recode: coded, connection_named })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> HeadScan {
        scan_response_head(text.as_bytes(), 0)
    }

    #[test]
    fn response_heads_are_told_apart_by_their_status_line() {
        assert_eq!(scan("HTTP/1.1 200 OK\r\n\r\nbody"), HeadScan::Final(19));
        assert_eq!(scan("\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"), HeadScan::Final(31));
        assert_eq!(scan("\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200"), HeadScan::Interim(38));
        assert_eq!(scan("HTTP/1.1 100\r\n\r\n"), HeadScan::Interim(16));
        assert_eq!(scan("HTTP/1.1 199 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"), HeadScan::Interim(57));
        let conflicting = "HTTP/1.1 199 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert!(matches!(scan(conflicting), HeadScan::Invalid(_)), "lengths that disagree, even in a 1xx");
        assert!(matches!(scan("HTTP/1.1 100\r\nTransfer-Encoding: chunked\r\n\r\n"), HeadScan::Invalid(_)));
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
        assert!(head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false).unwrap().close);
        // `close` wins over `keep-alive`, in either order (found by
        // tests/wire_fuzz.rs).
        for fields in ["Connection: keep-alive\r\nConnection: close", "Connection: close, keep-alive"] {
            for version in ["1.0", "1.1"] {
                let text = format!("HTTP/{version} 200 OK\r\n{fields}\r\nContent-Length: 0\r\n\r\n");
                assert!(head(&text, false).unwrap().close, "{text:?}");
            }
        }
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
