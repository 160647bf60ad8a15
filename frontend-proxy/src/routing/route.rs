//! One route: its match (path, headers) and its action (forward to a
//! cluster, redirect, or answer directly).

use super::{ClusterId, HeaderMutations};
use bytes::Bytes;
use http::header::HeaderName;
use http::StatusCode;
use pingora_http::RequestHeader;
use regex::Regex;
use std::borrow::Cow;
use std::time::Duration;

#[derive(Debug)]
pub struct Route {
    pub name: Option<String>,
    pub matcher: RouteMatch,
    pub action: Action,
    pub headers: HeaderMutations,
}

#[derive(Debug)]
pub struct RouteMatch {
    pub path: PathMatch,
    /// Applies to `prefix`, `path` and `path_separated_prefix` (Envoy: not to regexes).
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatcher>,
}

#[derive(Debug)]
pub enum PathMatch {
    /// Matches the start of `:path`, query string included (as Envoy does).
    Prefix(String),
    /// The whole path, query string excluded.
    Exact(String),
    /// The whole path, query string excluded; compiled anchored.
    Regex(Regex),
    /// Prefix that must end at a `/` boundary, query string excluded.
    SeparatedPrefix(String),
}

impl RouteMatch {
    /// Whether the request matches. `path_and_query` is `:path`.
    pub fn matches(&self, path_and_query: &str, req: &RequestHeader) -> bool {
        self.path_matches(path_and_query) && self.headers.iter().all(|h| h.matches(req))
    }

    fn path_matches(&self, path_and_query: &str) -> bool {
        let path = path_only(path_and_query);
        match &self.path {
            PathMatch::Prefix(p) => starts_with(path_and_query, p, self.case_sensitive),
            PathMatch::Exact(p) => eq(path, p, self.case_sensitive),
            PathMatch::Regex(re) => re.is_match(path),
            PathMatch::SeparatedPrefix(p) => {
                starts_with(path, p, self.case_sensitive) && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
            }
        }
    }
}

/// `:path` without its query string or fragment.
pub fn path_only(path_and_query: &str) -> &str {
    match path_and_query.find(['?', '#']) {
        Some(i) => &path_and_query[..i],
        None => path_and_query,
    }
}

fn starts_with(s: &str, prefix: &str, case_sensitive: bool) -> bool {
    if case_sensitive {
        s.starts_with(prefix)
    } else {
        s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    }
}

fn eq(a: &str, b: &str, case_sensitive: bool) -> bool {
    if case_sensitive {
        a == b
    } else {
        a.eq_ignore_ascii_case(b)
    }
}

/// A header condition of a route (`match.headers[]`).
#[derive(Debug)]
pub struct HeaderMatcher {
    /// Lowercase; may be a pseudo-header (`:method`, `:path`, `:authority`, `:scheme`).
    pub name: String,
    pub kind: HeaderMatch,
    pub invert: bool,
    pub treat_missing_as_empty: bool,
}

#[derive(Debug)]
pub enum HeaderMatch {
    Present(bool),
    String(StringMatch),
}

#[derive(Debug)]
pub enum StringMatch {
    Exact(String, bool),
    Prefix(String, bool),
    Suffix(String, bool),
    Contains(String, bool),
    Regex(Regex),
}

impl StringMatch {
    pub fn matches(&self, value: &str) -> bool {
        fn fold(s: &str, ignore_case: bool) -> Cow<'_, str> {
            if ignore_case {
                Cow::Owned(s.to_ascii_lowercase())
            } else {
                Cow::Borrowed(s)
            }
        }
        // Patterns with ignore_case are stored lowercased by validation.
        match self {
            StringMatch::Exact(p, ic) => fold(value, *ic) == p.as_str(),
            StringMatch::Prefix(p, ic) => fold(value, *ic).starts_with(p.as_str()),
            StringMatch::Suffix(p, ic) => fold(value, *ic).ends_with(p.as_str()),
            StringMatch::Contains(p, ic) => fold(value, *ic).contains(p.as_str()),
            StringMatch::Regex(re) => re.is_match(value),
        }
    }
}

impl HeaderMatcher {
    pub fn matches(&self, req: &RequestHeader) -> bool {
        let value = header_value(req, &self.name);
        let value = match (value, self.treat_missing_as_empty) {
            (None, true) => Some(Cow::Borrowed("")),
            (v, _) => v,
        };
        let result = match (&self.kind, value) {
            (HeaderMatch::Present(want), v) => v.is_some() == *want,
            (HeaderMatch::String(_), None) => return false, // Envoy: absent never matches, even inverted
            (HeaderMatch::String(m), Some(v)) => m.matches(&v),
        };
        result != self.invert
    }
}

/// A request header's value for matching; several values join with `,`.
/// `host` and `:authority` are one field, as in Envoy's header map: an
/// HTTP/2 request's `:authority` answers for `host` too.
pub fn header_value<'a>(req: &'a RequestHeader, name: &str) -> Option<Cow<'a, str>> {
    match name {
        ":method" => return Some(Cow::Borrowed(req.method.as_str())),
        ":path" => return req.uri.path_and_query().map(|p| Cow::Borrowed(p.as_str())),
        ":authority" | "host" => {
            return req
                .headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .or_else(|| req.uri.authority().map(|a| a.as_str()))
                .map(Cow::Borrowed)
        }
        ":scheme" => return req.uri.scheme_str().map(Cow::Borrowed),
        _ => {}
    }
    let mut values = req.headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    let first = values.next()?;
    match values.next() {
        None => Some(Cow::Borrowed(first)),
        Some(second) => {
            let mut joined = format!("{first},{second}");
            for v in values {
                joined.push(',');
                joined.push_str(v);
            }
            Some(Cow::Owned(joined))
        }
    }
}

// Routes are built once at load and read on every request: a few hundred
// bytes more for the other variants cost nothing, a box would cost a
// pointer chase per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Action {
    Forward(Forward),
    Redirect(Redirect),
    Direct(DirectResponse),
}

#[derive(Debug)]
pub struct Forward {
    pub clusters: ClusterChoice,
    pub prefix_rewrite: Option<String>,
    pub regex_rewrite: Option<(Regex, String)>,
    pub host_rewrite: HostRewrite,
    /// `None`: no timeout (`timeout: 0s`).
    pub timeout: Option<Duration>,
    /// The route's stream idle timeout, overriding the connection manager's
    /// `stream_idle_timeout`; `Some(ZERO)` turns it off for the route.
    pub idle_timeout: Option<Duration>,
    /// `max_stream_duration.max_stream_duration`, overriding the connection
    /// manager's `common_http_protocol_options.max_stream_duration`;
    /// `Some(ZERO)` turns it off for the route.
    pub max_stream_duration: Option<Duration>,
    /// The route's own policy, else the virtual host's.
    pub retry_policy: Option<RetryPolicy>,
    pub hash_policy: Vec<HashPolicy>,
    /// Route-level override of the connection manager's WebSocket setting.
    pub websocket: Option<bool>,
    /// `max_stream_duration.grpc_timeout_header_max`: a gRPC request's
    /// `grpc-timeout` is its route timeout. Boxed: rare, and every route
    /// action is as large as a `Forward`.
    pub grpc_timeout: Option<Box<GrpcTimeout>>,
    /// `append_x_forwarded_host`: a host rewrite appends the original
    /// `Host` to `x-forwarded-host`.
    pub append_x_forwarded_host: bool,
}

/// How a gRPC request's `grpc-timeout` becomes its route timeout (Envoy's
/// router with `grpc_timeout_header_max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcTimeout {
    /// The cap (`None`: `0s`, no cap).
    pub max: Option<Duration>,
    /// Taken off the header's timeout, unless that would leave nothing.
    pub offset: Duration,
}

impl GrpcTimeout {
    /// The route timeout of a gRPC request (`None`: none), as Envoy's router
    /// computes it: the header (absent: none), less the offset, capped.
    pub fn route_timeout(&self, req: &RequestHeader) -> Option<Duration> {
        let mut t = req.headers.get("grpc-timeout").and_then(|v| parse_grpc_timeout(v.as_bytes())).unwrap_or_default();
        if self.offset < t {
            t -= self.offset;
        }
        if let Some(max) = self.max {
            if t.is_zero() || t > max {
                t = max;
            }
        }
        (!t.is_zero()).then_some(t)
    }
}

/// A `grpc-timeout` value: up to 8 digits and a unit (`H`, `M`, `S`, `m`,
/// `u`, `n`); `None` if malformed, as gRPC reads it.
pub fn parse_grpc_timeout(v: &[u8]) -> Option<Duration> {
    let (digits, unit) = v.split_at_checked(v.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[derive(Debug)]
pub enum ClusterChoice {
    Single(ClusterId),
    /// Clusters with their weights (> 0) and the sum of the weights.
    Weighted(Vec<(ClusterId, u32)>, u32),
}

impl ClusterChoice {
    /// Picks a cluster; `dice` is a uniformly random number.
    pub fn pick(&self, dice: u64) -> ClusterId {
        match self {
            ClusterChoice::Single(id) => *id,
            ClusterChoice::Weighted(entries, total) => {
                let mut point = (dice % u64::from((*total).max(1))) as u32;
                for (id, w) in entries {
                    if point < *w {
                        return *id;
                    }
                    point -= w;
                }
                entries.last().map(|(id, _)| *id).unwrap_or_default()
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRewrite {
    Keep,
    Literal(String),
    /// `auto_host_rewrite`: the endpoint's host name (DNS clusters) or address.
    Auto,
}

#[derive(Debug)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub prefix_rewrite: Option<String>,
    pub status: StatusCode,
    pub strip_query: bool,
}

#[derive(Debug)]
pub struct DirectResponse {
    pub status: StatusCode,
    pub body: Option<Bytes>,
}

/// Envoy `retry_on` conditions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn {
    pub server_error: bool,
    pub gateway_error: bool,
    pub connect_failure: bool,
    pub reset: bool,
    pub retriable_4xx: bool,
    pub retriable_status_codes: bool,
    pub refused_stream: bool,
}

impl RetryOn {
    /// Parses Envoy's comma-separated list; returns the unknown entry on error.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut on = RetryOn::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "5xx" => on.server_error = true,
                "gateway-error" => on.gateway_error = true,
                "connect-failure" => on.connect_failure = true,
                "reset" | "reset-before-request" => on.reset = true,
                "retriable-4xx" => on.retriable_4xx = true,
                "retriable-status-codes" => on.retriable_status_codes = true,
                "refused-stream" => on.refused_stream = true,
                other => return Err(other.to_string()),
            }
        }
        Ok(on)
    }
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub retry_on: RetryOn,
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub retriable_status_codes: Vec<u16>,
    /// `previous_hosts` predicate: retries avoid hosts already tried.
    pub avoid_previous_hosts: bool,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl RetryPolicy {
    /// Whether a response with this status may be retried under the policy.
    pub fn retries_status(&self, status: u16) -> bool {
        let on = &self.retry_on;
        (on.server_error && status >= 500)
            || (on.gateway_error && matches!(status, 502..=504))
            || (on.retriable_4xx && status == 409)
            || (on.retriable_status_codes && self.retriable_status_codes.contains(&status))
    }
}

/// `hash_policy[]` entries for RING_HASH / MAGLEV clusters.
#[derive(Debug, Clone)]
pub enum HashPolicy {
    Header { name: HeaderName, terminal: bool },
    SourceIp { terminal: bool },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn m(path: PathMatch, case_sensitive: bool) -> RouteMatch {
        RouteMatch { path, case_sensitive, headers: vec![] }
    }

    #[test]
    fn host_and_authority_are_one_field() {
        let h2: RequestHeader =
            http::Request::builder().uri("https://films.local/a").body(()).unwrap().into_parts().0.into();
        assert_eq!(header_value(&h2, "host").as_deref(), Some("films.local"));
        assert_eq!(header_value(&h2, ":authority").as_deref(), Some("films.local"));
        let h1 = req("/a", &[("Host", "films.local:8080")]);
        assert_eq!(header_value(&h1, "host").as_deref(), Some("films.local:8080"));
        assert_eq!(header_value(&h1, ":authority").as_deref(), Some("films.local:8080"));
        assert_eq!(header_value(&req("/a", &[]), "host"), None);
    }

    #[test]
    fn prefix_includes_query_path_does_not() {
        let prefix = m(PathMatch::Prefix("/films".into()), true);
        assert!(prefix.matches("/films?name=x", &req("/films?name=x", &[])));
        assert!(prefix.matches("/filmsxyz", &req("/filmsxyz", &[])));
        assert!(!prefix.matches("/Films", &req("/Films", &[])));
        let exact = m(PathMatch::Exact("/films".into()), true);
        assert!(exact.matches("/films?name=x", &req("/films?name=x", &[])));
        assert!(!exact.matches("/films/1", &req("/films/1", &[])));
    }

    #[test]
    fn case_insensitive_prefix_and_path() {
        let prefix = m(PathMatch::Prefix("/films".into()), false);
        assert!(prefix.matches("/FILMS/1", &req("/FILMS/1", &[])));
        let exact = m(PathMatch::Exact("/films".into()), false);
        assert!(exact.matches("/Films", &req("/Films", &[])));
    }

    #[test]
    fn regex_is_whole_path_without_query() {
        let re = m(PathMatch::Regex(Regex::new("^(?:/films/[0-9]+)$").unwrap()), true);
        assert!(re.matches("/films/12?x=1", &req("/films/12?x=1", &[])));
        assert!(!re.matches("/films/12/x", &req("/films/12/x", &[])));
    }

    #[test]
    fn separated_prefix() {
        let sp = m(PathMatch::SeparatedPrefix("/api".into()), true);
        assert!(sp.matches("/api", &req("/api", &[])));
        assert!(sp.matches("/api/x", &req("/api/x", &[])));
        assert!(sp.matches("/api?q", &req("/api?q", &[])));
        assert!(!sp.matches("/apix", &req("/apix", &[])));
    }

    #[test]
    fn header_matchers() {
        let r = req("/", &[("x-env", "Canary"), ("x-multi", "a"), ("x-multi", "b")]);
        let hm =
            |name: &str, kind, invert| HeaderMatcher { name: name.into(), kind, invert, treat_missing_as_empty: false };
        assert!(hm("x-env", HeaderMatch::String(StringMatch::Exact("Canary".into(), false)), false).matches(&r));
        assert!(hm("x-env", HeaderMatch::String(StringMatch::Exact("canary".into(), true)), false).matches(&r));
        assert!(hm("x-env", HeaderMatch::String(StringMatch::Exact("canary".into(), false)), true).matches(&r));
        assert!(hm("x-multi", HeaderMatch::String(StringMatch::Exact("a,b".into(), false)), false).matches(&r));
        assert!(hm("x-none", HeaderMatch::Present(false), false).matches(&r));
        assert!(hm("x-env", HeaderMatch::Present(true), false).matches(&r));
        // absent header never matches a string matcher, inverted or not
        assert!(!hm("x-none", HeaderMatch::String(StringMatch::Prefix("a".into(), false)), true).matches(&r));
        assert!(hm(":method", HeaderMatch::String(StringMatch::Exact("GET".into(), false)), false).matches(&r));
    }

    #[test]
    fn weighted_pick_follows_weights() {
        let c = ClusterChoice::Weighted(vec![(0, 1), (1, 3)], 4);
        let picks: Vec<_> = (0..8).map(|d| c.pick(d)).collect();
        assert_eq!(picks, vec![0, 1, 1, 1, 0, 1, 1, 1]);
    }

    #[test]
    fn retry_on_parse_and_status() {
        let on = RetryOn::parse("5xx, connect-failure").unwrap();
        assert!(on.server_error && on.connect_failure && !on.reset);
        assert_eq!(RetryOn::parse("5xx,bogus"), Err("bogus".to_string()));
        let p = RetryPolicy {
            retry_on: RetryOn::parse("gateway-error,retriable-status-codes").unwrap(),
            num_retries: 1,
            per_try_timeout: None,
            retriable_status_codes: vec![429],
            avoid_previous_hosts: false,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
        };
        assert!(p.retries_status(503) && p.retries_status(429) && !p.retries_status(500));
    }
}

#[cfg(test)]
mod grpc_timeout_tests {
    use super::*;

    #[test]
    fn grpc_timeout_values() {
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout(b"3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout(b"99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse_grpc_timeout(b"5n"), Some(Duration::from_nanos(5)));
        for bad in [&b""[..], b"S", b"123456789S", b"1s", b"-1S", b"1.5S", b"10"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn envoys_route_timeout_from_the_header() {
        let req = |t: Option<&str>| {
            let mut r = RequestHeader::build("POST", b"/a.B/C", None).unwrap();
            if let Some(t) = t {
                r.insert_header("grpc-timeout", t).unwrap();
            }
            r
        };
        let secs = Duration::from_secs;
        let capped = GrpcTimeout { max: Some(secs(10)), offset: Duration::ZERO };
        assert_eq!(capped.route_timeout(&req(Some("2S"))), Some(secs(2)));
        assert_eq!(capped.route_timeout(&req(Some("60S"))), Some(secs(10)), "capped");
        assert_eq!(capped.route_timeout(&req(None)), Some(secs(10)), "no header: the cap");
        assert_eq!(capped.route_timeout(&req(Some("x"))), Some(secs(10)), "malformed: as absent");
        let open = GrpcTimeout { max: None, offset: Duration::from_millis(500) };
        assert_eq!(open.route_timeout(&req(Some("3S"))), Some(Duration::from_millis(2500)), "offset taken off");
        assert_eq!(open.route_timeout(&req(Some("100m"))), Some(Duration::from_millis(100)), "not below nothing");
        assert_eq!(open.route_timeout(&req(None)), None, "no header, no cap: no timeout");
    }
}
