//! Envoy's access log filters (`AccessLogFilter`): which finished requests
//! a logger writes, and which local replies a `local_reply_config` mapper
//! rewrites. Built once by `config` from the file; evaluated per request
//! against a few facts the request already has ([`Facts`]), before any
//! line is formatted, so a filtered-out request costs a comparison.

use super::ResponseFlags;
use crate::routing::HeaderMatcher;
use pingora_http::RequestHeader;
use std::sync::OnceLock;
use std::time::Duration;

/// What a filter looks at.
#[derive(Clone, Copy)]
pub struct Facts<'a> {
    /// Status sent (or being sent) to the client; 0 if none.
    pub status: u16,
    /// From the first request byte until now (the end, for an access log).
    pub duration: Duration,
    pub flags: ResponseFlags,
    /// `None` for a request refused before it had a head: header filters
    /// see an empty header map then, as in Envoy.
    pub request: Option<&'a RequestHeader>,
}

/// `ComparisonFilter.op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ge,
    Le,
}

/// `ComparisonFilter`: `op` against `value.default_value` (runtime layers
/// are not read, so the default is the value).
#[derive(Debug, Clone, Copy)]
pub struct Comparison {
    pub op: Op,
    pub value: u64,
}

impl Comparison {
    fn holds(self, actual: u64) -> bool {
        match self.op {
            Op::Eq => actual == self.value,
            Op::Ge => actual >= self.value,
            Op::Le => actual <= self.value,
        }
    }
}

#[derive(Debug)]
pub enum Filter {
    /// `status_code_filter`: the response code (0 when none was sent).
    Status(Comparison),
    /// `duration_filter`: the request's duration in whole milliseconds.
    Duration(Comparison),
    /// `not_health_check_filter`. A request is a health check only when the
    /// `envoy.filters.http.health_check` filter marks it; this proxy has no
    /// such filter, so no request is one and this always passes.
    NotHealthCheck,
    /// `response_flag_filter`: any of these flags; `None` (no `flags`
    /// listed) means any flag at all.
    ResponseFlag(Option<ResponseFlags>),
    /// `header_filter`: the request headers match.
    Header(HeaderMatcher),
    /// `runtime_filter` at its default `percent_sampled`, in parts per
    /// million. `independent`: a fresh random number per evaluation;
    /// otherwise the request id decides, so every logger samples the same
    /// requests (Envoy's default).
    Runtime {
        per_million: u32,
        independent: bool,
    },
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

impl Filter {
    pub fn evaluate(&self, f: &Facts<'_>) -> bool {
        match self {
            Filter::Status(c) => c.holds(u64::from(f.status)),
            Filter::Duration(c) => c.holds(f.duration.as_millis().try_into().unwrap_or(u64::MAX)),
            Filter::NotHealthCheck => true,
            Filter::ResponseFlag(None) => !f.flags.is_empty(),
            Filter::ResponseFlag(Some(wanted)) => f.flags.intersects(*wanted),
            Filter::Header(m) => m.matches(f.request.unwrap_or_else(|| empty_request())),
            Filter::Runtime { per_million, independent } => {
                let draw = match (independent, f.request.and_then(request_id_number)) {
                    (false, Some(n)) => n,
                    _ => rand::random::<u64>(),
                };
                draw % 1_000_000 < u64::from(*per_million)
            }
            Filter::And(all) => all.iter().all(|x| x.evaluate(f)),
            Filter::Or(any) => any.iter().any(|x| x.evaluate(f)),
        }
    }
}

/// A header map with nothing in it, for requests that never had a head.
fn empty_request() -> &'static RequestHeader {
    static EMPTY: OnceLock<RequestHeader> = OnceLock::new();
    EMPTY.get_or_init(|| {
        let mut r = RequestHeader::build("GET", b"/", None).expect("a static request line");
        r.remove_header(&http::header::HOST);
        r
    })
}

/// A number taken from the request's `x-request-id` (the first 16 hex
/// digits of a UUID), so independent loggers agree on a request.
fn request_id_number(req: &RequestHeader) -> Option<u64> {
    let id = req.headers.get("x-request-id")?.as_bytes();
    let mut n: u64 = 0;
    let mut digits = 0;
    for b in id {
        if *b == b'-' {
            continue;
        }
        let d = (*b as char).to_digit(16)?;
        n = (n << 4) | u64::from(d);
        digits += 1;
        if digits == 16 {
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(status: u16, ms: u64, flags: ResponseFlags) -> Facts<'static> {
        Facts { status, duration: Duration::from_millis(ms), flags, request: None }
    }

    #[test]
    fn comparisons_nesting_and_flags() {
        let ge500 = Filter::Status(Comparison { op: Op::Ge, value: 500 });
        assert!(ge500.evaluate(&facts(503, 0, ResponseFlags::default())));
        assert!(!ge500.evaluate(&facts(404, 0, ResponseFlags::default())));
        let slow = Filter::Duration(Comparison { op: Op::Ge, value: 100 });
        let either = Filter::Or(vec![ge500, slow]);
        assert!(either.evaluate(&facts(200, 150, ResponseFlags::default())));
        assert!(!either.evaluate(&facts(200, 99, ResponseFlags::default())));
        let both = Filter::And(vec![
            Filter::Status(Comparison { op: Op::Eq, value: 404 }),
            Filter::ResponseFlag(Some(ResponseFlags::NO_ROUTE_FOUND)),
        ]);
        assert!(both.evaluate(&facts(404, 0, ResponseFlags::NO_ROUTE_FOUND)));
        assert!(!both.evaluate(&facts(404, 0, ResponseFlags::default())));
        assert!(Filter::ResponseFlag(None).evaluate(&facts(503, 0, ResponseFlags::NO_HEALTHY_UPSTREAM)));
        assert!(!Filter::ResponseFlag(None).evaluate(&facts(200, 0, ResponseFlags::default())));
    }

    #[test]
    fn runtime_sampling_follows_the_request_id() {
        let none = Filter::Runtime { per_million: 0, independent: false };
        let all = Filter::Runtime { per_million: 1_000_000, independent: true };
        assert!(!none.evaluate(&facts(200, 0, ResponseFlags::default())));
        assert!(all.evaluate(&facts(200, 0, ResponseFlags::default())));
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("x-request-id", "00000000-0000-0000-0000-000000000063").unwrap();
        assert_eq!(request_id_number(&req), Some(0));
        let half = Filter::Runtime { per_million: 500_000, independent: false };
        let f = Facts { request: Some(&req), ..facts(200, 0, ResponseFlags::default()) };
        assert!(half.evaluate(&f), "0 % 1e6 is under half");
    }
}
