//! The target of an HTTP/1 request (RFC 9112 §3.2), checked the same way
//! whichever engine parsed it: exactly one valid `Host`, and an
//! absolute-form target turned into origin-form with its authority as
//! `Host` (§3.2.2), so that routing and the upstream see one authority.
//! HTTP/2 carries `:authority`, which Pingora's codec checks.
//!
//! A target with a `#fragment` is refused (400), as Envoy does (RFC 9112
//! §3.2 has no fragment in a request target): dropping it, as Pingora's
//! parse does, serves `/public#/../admin` as `/public` while a backend or
//! a log reading the line as sent may see another path.

use super::LocalReply;
use http::header::{HeaderValue, HOST};
use http::uri::PathAndQuery;
use http::{Method, Uri, Version};
use pingora_http::RequestHeader;

/// `Some(400)` for a request whose target cannot be trusted; otherwise
/// normalises an absolute-form target in place.
pub fn check(req: &mut RequestHeader, http2: bool) -> Option<LocalReply> {
    if http2 {
        return None;
    }
    // RFC 9112 §3.2: an HTTP/1.1 request without Host, or with more than
    // one, is refused whatever its target; HTTP/1.0 may leave it out (or
    // empty). An absolute-form target's authority then replaces it.
    let http11 = req.version == Version::HTTP_11;
    let mut hosts = req.headers.get_all(HOST).iter();
    let valid = match (hosts.next(), hosts.next()) {
        (None, _) => !http11,
        (Some(_), Some(_)) => false,
        (Some(host), None) if host.is_empty() => !http11,
        (Some(host), None) => is_valid_host(host.as_bytes()),
    };
    if !valid {
        return Some(LocalReply::BadRequest);
    }
    if req.method != Method::CONNECT && !req.raw_path().starts_with(b"/") && req.raw_path() != b"*" {
        return absolute_form(req).err();
    }
    None
}

/// Whether the request line at the start of an HTTP/1 head has a `#` in
/// its target (between the first and the last space of the line).
pub fn has_fragment(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    match (line.iter().position(|&b| b == b' '), line.iter().rposition(|&b| b == b' ')) {
        (Some(start), Some(end)) if start < end => line[start..end].contains(&b'#'),
        _ => false,
    }
}

/// `uri-host [":" port]` (RFC 3986 §3.2.2), naming a host (the grammar
/// lets `reg-name` be empty, but `:80` routes nowhere and a backend may
/// read it differently): an IPv6 address in brackets, or a name or IPv4
/// address of unreserved and sub-delim bytes (no user information, no
/// percent-encoding);
/// a port of digits that fits 16 bits. Written out rather than parsed
/// with `http::uri::Authority` plus a port check of our own: every
/// request passes here, and that took ~900 instructions of the ~24,000 a
/// proxied request costs (bench/RESULTS.md), this a small fraction.
pub(crate) fn is_valid_host(host: &[u8]) -> bool {
    let (name_ok, port) = match host {
        [b'[', rest @ ..] => {
            let Some(end) = rest.iter().position(|&b| b == b']') else { return false };
            // An IPv6 address as std reads it (no zone, no IPvFuture).
            let literal_ok = std::str::from_utf8(&rest[..end]).is_ok_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok());
            match &rest[end + 1..] {
                [] => (literal_ok, &[][..]),
                [b':', port @ ..] => (literal_ok, port),
                _ => return false,
            }
        }
        _ => {
            let (name, port) = match host.iter().position(|&b| b == b':') {
                Some(i) => (&host[..i], &host[i + 1..]),
                None => (host, &[][..]),
            };
            (!name.is_empty() && name.iter().all(|&b| is_reg_name_byte(b)), port)
        }
    };
    name_ok && port_fits(port)
}

/// RFC 3986 `unreserved` and `sub-delims`. No `%`: a percent-encoded
/// name (`admin%2eexample.com`) misses the virtual host it decodes to,
/// and a backend that decodes it sees another authority.
fn is_reg_name_byte(b: u8) -> bool {
    // A table: the `matches!` of ranges and bytes it is built from took
    // ~25 instructions a byte of every request's host.
    REG_NAME[usize::from(b)]
}

static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = matches!(b as u8, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
            | b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=');
        b += 1;
    }
    table
};

/// An empty port (`host:`, which the grammar allows) or digits that fit
/// 16 bits.
fn port_fits(port: &[u8]) -> bool {
    if port.len() > 5 {
        return false;
    }
    let mut value = 0u32;
    for &d in port {
        if !d.is_ascii_digit() {
            return false;
        }
        value = value * 10 + u32::from(d - b'0');
    }
    value <= u32::from(u16::MAX)
}

/// Makes an absolute-form target (`http://host/path`) origin-form, with
/// the target's authority replacing whatever `Host` said.
fn absolute_form(req: &mut RequestHeader) -> Result<(), LocalReply> {
    let uri = Uri::try_from(req.raw_path()).map_err(|_| LocalReply::BadRequest)?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(LocalReply::BadRequest);
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(LocalReply::BadRequest);
    }
    if !is_valid_host(authority.as_str().as_bytes()) {
        return Err(LocalReply::BadRequest);
    }
    let host = HeaderValue::from_str(authority.as_str()).map_err(|_| LocalReply::BadRequest)?;
    let path = uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    req.set_uri(Uri::from(path));
    req.insert_header(HOST, host).map_err(|_| LocalReply::BadRequest)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, target: &str, hosts: &[&str]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        req.set_version(version);
        for h in hosts {
            req.append_header("host", *h).unwrap();
        }
        req
    }

    #[test]
    fn a_fragment_is_found_in_the_target_only() {
        assert!(has_fragment(b"GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(has_fragment(b"GET http://x/#/../admin HTTP/1.1\r\n\r\n"));
        assert!(has_fragment(b"GET /# HTTP/1.0\n\n"));
        assert!(!has_fragment(b"GET /a%23b HTTP/1.1\r\nX-A: #\r\n\r\n"));
        assert!(!has_fragment(b"G#T /a HTTP/1.1\r\n\r\n"), "a method is not a target");
        assert!(!has_fragment(b"GET /a HTTP/1.1#\r\n\r\n"), "nor is a version");
        assert!(!has_fragment(b""));
        assert!(!has_fragment(b"GET#"));
    }

    #[test]
    fn a_reg_name_byte_is_unreserved_or_a_sub_delim() {
        // RFC 3986: ALPHA / DIGIT / "-" / "." / "_" / "~" and the sub-delims.
        for b in 0..=255u8 {
            let rfc = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b);
            assert_eq!(is_reg_name_byte(b), rfc, "byte {b:#04x}");
        }
    }

    #[test]
    fn http11_needs_exactly_one_valid_host() {
        let ok = |v, hosts: &[&str]| check(&mut request(v, "/", hosts), false).is_none();
        assert!(ok(Version::HTTP_11, &["example.com"]));
        assert!(ok(Version::HTTP_11, &["example.com:8080"]));
        assert!(ok(Version::HTTP_11, &["[::1]:80"]));
        assert!(!ok(Version::HTTP_11, &[]));
        assert!(!ok(Version::HTTP_11, &["a", "b"]));
        assert!(!ok(Version::HTTP_11, &["a", "a"]));
        assert!(!ok(Version::HTTP_11, &[""]));
        assert!(!ok(Version::HTTP_11, &["user@host"]));
        assert!(!ok(Version::HTTP_11, &["a b"]));
        assert!(!ok(Version::HTTP_11, &["host/path"]));
        assert!(!ok(Version::HTTP_11, &[":80"]), "a port without a host names nothing");
        assert!(ok(Version::HTTP_11, &["a.example:"]), "an empty port is allowed");
        assert!(ok(Version::HTTP_11, &["127.0.0.1:65535"]));
        assert!(ok(Version::HTTP_11, &["[2001:db8::1]:443"]));
        assert!(!ok(Version::HTTP_11, &["a:1:2"]));
        assert!(!ok(Version::HTTP_11, &["a:x"]));
        assert!(!ok(Version::HTTP_11, &["[::1"]));
        assert!(!ok(Version::HTTP_11, &["[::1]x"]));
        assert!(!ok(Version::HTTP_11, &["[]"]));
        assert!(!ok(Version::HTTP_11, &["[zz::1]"]));
        for bad in ["admin%2eexample.com", "%", "a%zz", "a%00.example", "[1]", "[:]", "[...]", "[::::::::::]"] {
            assert!(!ok(Version::HTTP_11, &[bad]), "{bad}");
        }
        assert!(!ok(Version::HTTP_11, &["a\"b"]));
        assert!(!ok(Version::HTTP_11, &["host:000080"]), "more than five digits");
        assert!(!ok(Version::HTTP_11, &["host:99999"]));
        assert!(!ok(Version::HTTP_11, &["[::1]:70000"]));
        assert!(!ok(Version::HTTP_11, &["host:65536"]));
        assert!(ok(Version::HTTP_11, &["host:00080"]), "five digits under 65536");
        assert!(!ok(Version::HTTP_11, &["host:+80"]));
        assert!(ok(Version::HTTP_11, &["[::1]"]));
        assert!(ok(Version::HTTP_10, &[]), "HTTP/1.0 may leave Host out");
        assert!(ok(Version::HTTP_10, &[""]));
        assert!(!ok(Version::HTTP_11, &[]) && check(&mut request(Version::HTTP_11, "http://a/", &[]), false).is_some());
        assert!(!ok(Version::HTTP_10, &["a", "b"]));
        assert!(check(&mut request(Version::HTTP_2, "/", &[]), true).is_none());
    }

    #[test]
    fn an_absolute_target_gives_host_and_path() {
        let mut req = request(Version::HTTP_11, "http://films.example:8080/films?x=1", &["other.example"]);
        assert!(check(&mut req, false).is_none());
        assert_eq!(req.raw_path(), b"/films?x=1");
        assert_eq!(req.headers.get_all("host").iter().collect::<Vec<_>>(), ["films.example:8080"]);
        let mut bare = request(Version::HTTP_11, "http://films.example", &["x"]);
        assert!(check(&mut bare, false).is_none());
        assert_eq!(bare.raw_path(), b"/");
        for bad in ["ftp://a/", "http://user@a/", "http:///x"] {
            assert!(check(&mut request(Version::HTTP_11, bad, &["a"]), false).is_some(), "{bad}");
        }
    }
}
