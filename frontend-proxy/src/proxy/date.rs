//! The `Date` header the proxy adds to responses that lack one, and to its
//! own replies (RFC 9110 §6.6.1, as Envoy does): the current second in
//! IMF-fixdate, formatted once a second per worker thread.

use http::header::HeaderValue;
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    /// The second last formatted, and its text.
    static CACHED: RefCell<(u64, HeaderValue)> = const { RefCell::new((u64::MAX, HeaderValue::from_static(""))) };
}

/// `Date`'s value for now.
pub fn now() -> HeaderValue {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            // IMF-fixdate is ASCII: the value is always valid.
            let text = httpdate::fmt_http_date(now);
            cached.1 = HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""));
            cached.0 = second;
        }
        cached.1.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_is_an_imf_fixdate_of_now() {
        let value = now();
        let parsed = httpdate::parse_http_date(value.to_str().unwrap()).unwrap();
        let skew = SystemTime::now().duration_since(parsed).unwrap();
        assert!(skew.as_secs() <= 1, "{value:?}");
        assert_eq!(value.len(), "Sun, 06 Nov 1994 08:49:37 GMT".len());
    }
}
