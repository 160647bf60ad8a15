//! The target of an HTTP/1 request (RFC 9112 §3.2), checked the same way
//! whichever engine parsed it: exactly one valid `Host`, and an
//! absolute-form target turned into origin-form with its authority as
//! `Host` (§3.2.2), so that routing and the upstream see one authority.
//! HTTP/2 carries `:authority`, which Pingora's codec checks.

use super::LocalReply;
use http::header::{HeaderValue, HOST};
use http::uri::{Authority, PathAndQuery};
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

/// `uri-host [":" port]`: an authority without user information, naming
/// a host (the grammar lets `reg-name` be empty, but `:80` routes nowhere
/// and a backend may read it differently).
fn is_valid_host(host: &[u8]) -> bool {
    if host.is_empty() || host.contains(&b'@') {
        return false;
    }
    match Authority::try_from(host) {
        Ok(a) => !a.host().is_empty() && port_fits(a.as_str()),
        Err(_) => false,
    }
}

/// Whether the port, if any, fits 16 bits (`Authority` accepts any digits
/// and then reports no port at all).
fn port_fits(authority: &str) -> bool {
    let after_host = match authority.rfind(']') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    match after_host.rsplit_once(':') {
        Some((_, port)) => port.is_empty() || port.parse::<u16>().is_ok(),
        None => true,
    }
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
        assert!(!ok(Version::HTTP_11, &["host:99999"]));
        assert!(!ok(Version::HTTP_11, &["[::1]:70000"]));
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
