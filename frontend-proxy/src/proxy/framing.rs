//! How HTTP/1 messages are delimited (RFC 9112 §6, RFC 9110 §8.6), and the
//! rules both engines hold them to. The native engine applies them as it
//! parses; for what Pingora's codec parsed, the lifecycle applies them to
//! the header it hands over ([`check_request`], [`check_response`]).

use super::LocalReply;
use http::header::{HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Version};
use pingora_http::{RequestHeader, ResponseHeader};

/// The transfer codings of a message's `Transfer-Encoding` fields, in order.
#[derive(Debug, Default, Clone, Copy)]
pub struct Codings {
    /// A `Transfer-Encoding` field was there.
    pub present: bool,
    /// A field listed no coding, had an empty element (`chunked ,`), or a
    /// coding whose name is not a token (`0 05`). RFC 9110 §5.6.1 lets a
    /// recipient skip empty elements, but Pingora's codec and hyper read
    /// `chunked ,` as not chunked, so the proxy and its peers would
    /// disagree on where the body ends; a name that is not a token is no
    /// coding anyone can agree on.
    pub malformed: bool,
    pub count: usize,
    pub chunked: usize,
    pub chunked_last: bool,
}

impl Codings {
    /// Adds the codings of one field value.
    pub fn add(&mut self, value: &[u8]) {
        self.present = true;
        for coding in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if coding.is_empty() {
                self.malformed = true;
                continue;
            }
            // `transfer-coding = token *( OWS ";" OWS transfer-parameter )`
            let mut parts = coding.split(|b| *b == b';');
            let name = parts.next().unwrap_or_default().trim_ascii();
            if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
                self.malformed = true;
            }
            self.count += 1;
            self.chunked_last = name.eq_ignore_ascii_case(b"chunked");
            // `chunked` takes no parameters (RFC 9112 §7.1): `chunked;` or
            // `chunked;x=y` is chunked to some parsers and not to others.
            if self.chunked_last && parts.next().is_some() {
                self.malformed = true;
            }
            self.chunked += usize::from(self.chunked_last);
        }
    }

    fn of(headers: &HeaderMap) -> Self {
        let mut codings = Codings::default();
        for value in headers.get_all(TRANSFER_ENCODING) {
            codings.add(value.as_bytes());
        }
        codings
    }

    /// Chunked is applied once, as the last coding (RFC 9112 §6.1, §6.3).
    pub fn chunked_once_last(&self) -> bool {
        self.chunked == 1 && self.chunked_last
    }

    /// The codings of `values` written one way (lowercase, `, `-separated),
    /// for the next hop: the fields as received may be spelled in ways its
    /// parser reads differently.
    pub fn canonical<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<HeaderValue> {
        let codings: Vec<Vec<u8>> = values
            .flat_map(|v| v.split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|c| !c.is_empty())
            .map(<[u8]>::to_ascii_lowercase)
            .collect();
        HeaderValue::from_bytes(&codings.join(&b", "[..])).ok()
    }

    /// What a request with these codings gets: `None` if it may be served.
    /// Codings that do not end in one chunked leave the body's length
    /// unknown (400, §6.3); others before chunked are not understood (501).
    pub fn refusal(&self) -> Option<LocalReply> {
        if !self.present {
            None
        } else if self.malformed || !self.chunked_once_last() {
            Some(LocalReply::BadRequest)
        } else if self.count > 1 {
            Some(LocalReply::UnsupportedTransferCoding)
        } else {
            None
        }
    }
}

/// RFC 9110 §5.6.2: the characters of a token.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A `Content-Length` value: decimal digits, surrounding whitespace allowed.
pub fn parse_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A `Content-Length` value, given the one seen before (repeats must agree);
/// `None` if invalid or conflicting.
pub fn add_length(seen: Option<u64>, value: &[u8]) -> Option<u64> {
    let n = parse_length(value)?;
    seen.is_none_or(|s| s == n).then_some(n)
}

/// The one length the `Content-Length` fields (and comma-separated
/// elements) agree on; `Err` if they do not, or one is not a number.
pub fn agreed_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut seen = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for element in value.as_bytes().split(|b| *b == b',') {
            seen = Some(add_length(seen, element).ok_or(())?);
        }
    }
    Ok(seen)
}

/// Whether the `Content-Length` fields are a single plain number.
fn single_plain_length(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    values.next().is_some_and(|v| parse_length(v.as_bytes()).is_some()) && values.next().is_none()
}

/// The framing rules for an HTTP/1 request Pingora's codec accepted:
/// `Some(reply)` refuses it (the connection then closes).
pub fn check_request(req: &mut RequestHeader, http2: bool) -> Option<LocalReply> {
    if http2 || req.version == Version::HTTP_2 {
        return None;
    }
    let codings = Codings::of(&req.headers);
    if let Some(reply) = codings.refusal() {
        return Some(reply);
    }
    if codings.present {
        // One chunked, however the client spelled it, goes on as `chunked`.
        let _ = req.insert_header(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
    match agreed_length(&req.headers) {
        Err(()) => Some(LocalReply::BadRequest),
        Ok(None) => None,
        Ok(Some(length)) => {
            if !single_plain_length(&req.headers) {
                let _ = req.insert_header(CONTENT_LENGTH, HeaderValue::from(length));
            }
            None
        }
    }
}

/// The framing rules for an upstream response Pingora's codec accepted
/// (Pingora frames the body itself; this refuses what the native engine
/// refuses, and leaves one `Content-Length`). `Err` names the violation.
pub fn check_response(resp: &mut ResponseHeader, upgrade_requested: bool) -> Result<(), &'static str> {
    let status = resp.status.as_u16();
    if status == 101 && !upgrade_requested {
        return Err("101 response to a request that did not ask to upgrade");
    }
    if status > 599 {
        return Err("response status out of range");
    }
    let codings = Codings::of(&resp.headers);
    if codings.chunked > 1 {
        return Err("chunked applied more than once");
    }
    if codings.malformed {
        return Err("transfer-encoding without a valid coding");
    }
    if codings.present && resp.version == Version::HTTP_10 {
        return Err("transfer-encoding in an HTTP/1.0 response");
    }
    if codings.present {
        // Pingora frames by the codings and has dropped any length already;
        // one spelling of them goes on.
        if let Some(value) = Codings::canonical(resp.headers.get_all(TRANSFER_ENCODING).iter().map(|v| v.as_bytes())) {
            resp.insert_header(TRANSFER_ENCODING, value).map_err(|_| "invalid transfer-encoding")?;
        }
        return Ok(());
    }
    match agreed_length(&resp.headers) {
        Err(()) => Err("invalid content-length"),
        Ok(Some(length)) if !single_plain_length(&resp.headers) => {
            resp.insert_header(CONTENT_LENGTH, HeaderValue::from(length)).map_err(|_| "invalid content-length")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/", None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn request_codings_and_lengths() {
        let refused = |h: &[(&str, &str)]| check_request(&mut req(h), false).map(|r| r.status().as_u16());
        assert_eq!(refused(&[("transfer-encoding", "chunked")]), None);
        assert_eq!(refused(&[("transfer-encoding", "chunked, chunked")]), Some(400));
        assert_eq!(refused(&[("transfer-encoding", "gzip")]), Some(400));
        assert_eq!(refused(&[("transfer-encoding", "")]), Some(400));
        assert_eq!(refused(&[("transfer-encoding", "chunked ,")]), Some(400));
        assert_eq!(refused(&[("transfer-encoding", ", chunked")]), Some(400));
        assert_eq!(refused(&[("transfer-encoding", "gzip, chunked")]), Some(501));
        assert_eq!(refused(&[("transfer-encoding", "x y, chunked")]), Some(400), "not a token");
        assert_eq!(refused(&[("transfer-encoding", "chunked;")]), Some(400), "chunked takes no parameters");
        assert_eq!(refused(&[("transfer-encoding", "gzip, chunked;a=b")]), Some(400));
        assert_eq!(refused(&[("transfer-encoding", "gzip;q=1, chunked")]), Some(501), "a parameter is allowed");
        assert_eq!(refused(&[("content-length", "3"), ("content-length", "4")]), Some(400));
        assert_eq!(refused(&[("content-length", "3, 4")]), Some(400));
        assert_eq!(refused(&[("content-length", "x")]), Some(400));
        assert_eq!(check_request(&mut req(&[("transfer-encoding", "chunked, chunked")]), true), None, "HTTP/2");
        for same in [&[("content-length", "3"), ("content-length", "3")][..], &[("content-length", "3, 3")]] {
            let mut r = req(same);
            assert_eq!(check_request(&mut r, false), None);
            assert_eq!(r.headers.get_all("content-length").iter().collect::<Vec<_>>(), ["3"]);
        }
    }

    #[test]
    fn response_checks() {
        let check = |status: u16, headers: &[(&str, &str)], upgrade: bool| {
            let mut r = ResponseHeader::build(status, None).unwrap();
            for (n, v) in headers {
                r.append_header(n.to_string(), *v).unwrap();
            }
            check_response(&mut r, upgrade).map(|()| r)
        };
        assert!(check(101, &[], false).is_err());
        assert!(check(101, &[], true).is_ok());
        assert!(check(600, &[], false).is_err());
        assert!(check(200, &[("transfer-encoding", "chunked, chunked")], false).is_err());
        assert!(check(200, &[("transfer-encoding", " ")], false).is_err());
        assert!(check(200, &[("transfer-encoding", "chunked ,")], false).is_err());
        let r = check(200, &[("content-length", "2"), ("content-length", "2")], false).unwrap();
        assert_eq!(r.headers.get_all("content-length").iter().collect::<Vec<_>>(), ["2"]);
    }
}
