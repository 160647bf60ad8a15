//! Downstream request limits checked once the headers are in (Envoy's
//! `max_request_headers_kb`, `max_headers_count`, the buffer filter's
//! `max_request_bytes`, `headers_with_underscores_action`), and the retry
//! back-off.

use super::LocalReply;
use crate::config::model::{HeadersWithUnderscores, HttpConnectionManager};
use pingora_http::RequestHeader;
use std::time::Duration;

/// A local reply if the request breaks a header or declared-body limit.
pub fn check_request(req: &RequestHeader, hcm: &HttpConnectionManager) -> Option<LocalReply> {
    if req.headers.len() > hcm.max_headers_count as usize {
        return Some(LocalReply::HeadersTooLarge);
    }
    let limit = hcm.max_request_headers_kb as usize * 1024;
    // Pingora has already bounded this at 1 MiB; approximate the wire size.
    let mut size = req.method.as_str().len() + req.uri.path_and_query().map(|p| p.as_str().len()).unwrap_or(1) + 12;
    for (name, value) in req.headers.iter() {
        size += name.as_str().len() + value.len() + 4;
        if size > limit {
            return Some(LocalReply::HeadersTooLarge);
        }
    }
    if let Some(max) = hcm.max_request_bytes {
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > u64::from(max)) {
            return Some(LocalReply::PayloadTooLarge);
        }
    }
    None
}

/// `headers_with_underscores_action`: a 400 for a request with a header
/// whose name has an underscore (REJECT_REQUEST), or those headers removed
/// (DROP_HEADER); `Ok` with how many were removed.
pub fn underscore_headers(req: &mut RequestHeader, action: HeadersWithUnderscores) -> Result<u64, LocalReply> {
    if action == HeadersWithUnderscores::Allow {
        return Ok(0);
    }
    let names: Vec<http::HeaderName> = req.headers.keys().filter(|n| n.as_str().contains('_')).cloned().collect();
    if names.is_empty() {
        return Ok(0);
    }
    if action == HeadersWithUnderscores::RejectRequest {
        return Err(LocalReply::BadRequest);
    }
    let mut dropped = 0;
    for name in names {
        // Every value of a repeated header counts, as in Envoy.
        dropped += req.headers.get_all(&name).iter().count() as u64;
        req.remove_header(&name);
    }
    Ok(dropped)
}

/// Envoy's retry back-off: exponential with full jitter,
/// `random(0, min(base * 2^(n-1), max))` before retry `n`.
pub fn retry_backoff(base: Duration, max: Duration, retry: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << retry.saturating_sub(1).min(16)).min(max);
    let ms = exp.as_millis().max(1) as u64;
    Duration::from_millis(rand::random::<u64>() % (ms + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for (n, v) in headers {
            req.append_header(n.to_string(), *v).unwrap();
        }
        req
    }

    #[test]
    fn underscore_headers_are_kept_rejected_or_dropped() {
        let headers = [("x_user", "a"), ("x-user", "b"), ("x_other", "c")];
        let mut req = request(&headers);
        assert!(matches!(underscore_headers(&mut req, HeadersWithUnderscores::Allow), Ok(0)));
        assert_eq!(req.headers.len(), 3);
        assert!(matches!(
            underscore_headers(&mut req, HeadersWithUnderscores::RejectRequest),
            Err(LocalReply::BadRequest)
        ));
        assert!(matches!(underscore_headers(&mut req, HeadersWithUnderscores::DropHeader), Ok(2)));
        let left: Vec<&str> = req.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-user"]);
        let mut clean = request(&[("x-user", "b")]);
        assert!(matches!(underscore_headers(&mut clean, HeadersWithUnderscores::RejectRequest), Ok(0)));
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let base = Duration::from_millis(25);
        let max = Duration::from_millis(250);
        for n in 1..20 {
            let d = retry_backoff(base, max, n);
            assert!(d <= max, "{d:?}");
            assert!(d <= base * (1 << (n - 1).min(4)), "retry {n}: {d:?}");
        }
    }
}
