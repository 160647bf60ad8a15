//! Direct access to a request's header map, for the headers the proxy sets
//! on every request.
//!
//! Pingora's `RequestHeader` has no mutable access to its map: every
//! `append_header` / `insert_header` spells the name in title case (for a
//! case map the request may not even have) and parses it back into a
//! `HeaderName`: hundreds of instructions and an allocation per header. A request
//! without a case map whose target is its URI (every request the native
//! engine parses, and Pingora's HTTP/2 ones) loses nothing when it goes to
//! `http::request::Parts` and back, so [`edit`] does that and hands out the
//! map itself.

use http::HeaderMap;
use pingora_http::RequestHeader;

/// Runs `f` on the request's header map, or returns `None` without calling
/// it when the request keeps state `http::request::Parts` cannot hold (a
/// case map, or a target other than its URI); the caller then goes through
/// `insert_header` and friends.
pub fn edit<R>(req: &mut RequestHeader, f: impl FnOnce(&mut HeaderMap) -> R) -> Option<R> {
    if req.has_case() || !target_is_uri(req) {
        return None;
    }
    let end_stream = req.send_end_stream();
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts: http::request::Parts = std::mem::replace(req, placeholder).into();
    let out = f(&mut parts.headers);
    *req = RequestHeader::from(parts);
    if let Some(end_stream) = end_stream {
        req.set_send_end_stream(end_stream);
    }
    Some(out)
}

/// Whether the request's wire target is read from its URI (rather than kept
/// as separate bytes), so a header rebuilt from the URI has the same one.
fn target_is_uri(req: &RequestHeader) -> bool {
    let from_uri = req.uri.path_and_query().map(|pq| pq.as_str().as_bytes());
    from_uri.is_some_and(|pq| std::ptr::eq(pq, req.raw_path()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderName, HeaderValue};

    fn names(req: &RequestHeader) -> Vec<String> {
        req.headers.iter().map(|(k, v)| format!("{k}={}", v.to_str().unwrap())).collect()
    }

    #[test]
    fn a_request_without_case_is_edited_in_place_and_keeps_the_rest() {
        let mut req = RequestHeader::build_no_case("POST", b"/a/b?x=1", None).unwrap();
        req.append_header("host", "example.com").unwrap();
        req.extensions_mut().insert(7u32);
        let n = edit(&mut req, |h| {
            h.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static("http"));
            h.append(HeaderName::from_static("host"), HeaderValue::from_static("second"));
            h.len()
        });
        assert_eq!(n, Some(3));
        assert_eq!(names(&req), ["host=example.com", "host=second", "x-forwarded-proto=http"]);
        assert_eq!(req.method, http::Method::POST);
        assert_eq!(req.raw_path(), b"/a/b?x=1");
        assert_eq!(req.extensions.get::<u32>(), Some(&7));
    }

    #[test]
    fn a_request_with_a_case_map_is_left_to_pingora() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("Host", "example.com").unwrap();
        assert_eq!(edit(&mut req, |h| h.clear()), None);
        assert_eq!(names(&req), ["host=example.com"]);
    }

    #[test]
    fn a_target_the_uri_does_not_hold_is_left_to_pingora() {
        // Absolute-form: the URI keeps only the path, the wire target is kept apart.
        let mut req = RequestHeader::build_no_case("GET", b"http://example.com/x", None).unwrap();
        assert_eq!(edit(&mut req, |h| h.clear()), None);
        assert_eq!(req.raw_path(), b"http://example.com/x");
    }

    #[test]
    fn http2_end_stream_survives() {
        let mut req = RequestHeader::build_no_case("GET", b"/", None).unwrap();
        req.set_version(http::Version::HTTP_2);
        req.set_send_end_stream(false);
        assert_eq!(edit(&mut req, |_| ()), Some(()));
        assert_eq!(req.send_end_stream(), Some(false));
        assert_eq!(req.version, http::Version::HTTP_2);
    }
}
