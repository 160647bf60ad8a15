//! What the proxy changes on the way to the upstream: Envoy's edge headers
//! (`x-request-id`, `x-forwarded-*`, `x-envoy-expected-rq-timeout-ms`), path
//! and host rewrites, and redirect targets.

use crate::config::model::{ForwardClientCert, HttpConnectionManager};
use crate::routing::{Forward, HostRewrite, PathMatch, Redirect, RouteMatch};
use crate::upstream::Host;
use http::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use http::uri::PathAndQuery;
use http::Uri;
use pingora_core::protocols::tls::SslDigest;
use pingora_error::{ErrorType::InvalidHTTPHeader, OrErr, Result};
use pingora_http::RequestHeader;
use std::net::IpAddr;
use std::time::Duration;

pub const X_REQUEST_ID: &str = "x-request-id";
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
pub const X_EXPECTED_TIMEOUT: &str = "x-envoy-expected-rq-timeout-ms";
pub const X_UPSTREAM_SERVICE_TIME: &str = "x-envoy-upstream-service-time";
pub const X_ATTEMPT_COUNT: &str = "x-envoy-attempt-count";

// As header names: inserting or looking up by `&str` parses the name again on every request.
pub const X_REQUEST_ID_NAME: HeaderName = HeaderName::from_static(X_REQUEST_ID);
const X_FORWARDED_FOR_NAME: HeaderName = HeaderName::from_static(X_FORWARDED_FOR);
const X_FORWARDED_PROTO_NAME: HeaderName = HeaderName::from_static(X_FORWARDED_PROTO);
const X_FORWARDED_CLIENT_CERT: &str = "x-forwarded-client-cert";
const X_FORWARDED_CLIENT_CERT_NAME: HeaderName = HeaderName::from_static(X_FORWARDED_CLIENT_CERT);
pub const X_EXPECTED_TIMEOUT_NAME: HeaderName = HeaderName::from_static(X_EXPECTED_TIMEOUT);
pub const X_UPSTREAM_SERVICE_TIME_NAME: HeaderName = HeaderName::from_static(X_UPSTREAM_SERVICE_TIME);
pub const X_ATTEMPT_COUNT_NAME: HeaderName = HeaderName::from_static(X_ATTEMPT_COUNT);
const X_FORWARDED_HOST_NAME: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What edge handling asks of the request's fields, found in one pass over
/// their names: a hash lookup for each of them cost more than the pass over
/// the few fields a request carries, and most are absent.
#[derive(Default)]
struct Seen {
    request_id: bool,
    forwarded_for: bool,
    forwarded_proto: bool,
    client_cert: bool,
    /// The `x-envoy-` fields the client sent (no allocation when none).
    envoy_internal: Vec<HeaderName>,
}

impl Seen {
    fn of(headers: &HeaderMap) -> Self {
        let mut seen = Seen::default();
        for name in headers.keys() {
            match name.as_str() {
                X_REQUEST_ID => seen.request_id = true,
                X_FORWARDED_FOR => seen.forwarded_for = true,
                X_FORWARDED_PROTO => seen.forwarded_proto = true,
                X_FORWARDED_CLIENT_CERT => seen.client_cert = true,
                n if n.starts_with("x-envoy-") => seen.envoy_internal.push(name.clone()),
                _ => {}
            }
        }
        seen
    }
}

/// Applies Envoy's edge header handling to the downstream request and
/// returns its request id: the client's, or a fresh UUID when there is none
/// (or when an edge proxy must not trust it); `None` if ids are disabled.
///
/// The id is marked sensitive: HPACK then writes it as a literal that is
/// never indexed. An id is unique per request, so indexing it only churns
/// the HTTP/2 encoder's dynamic table: each new id evicted another entry
/// and every lookup of the name compared the value with each id still in
/// the table (~60 comparisons a request on a pooled h2 upstream). The
/// bytes sent and received are the same either way.
pub fn edge_headers(
    req: &mut RequestHeader,
    hcm: &HttpConnectionManager,
    client_ip: Option<IpAddr>,
    tls: bool,
    client_cert: ClientCert<'_>,
) -> Result<Option<HeaderValue>> {
    let seen = Seen::of(&req.headers);
    let request_id = request_id(&req.headers, &seen, hcm).map(|mut id| {
        id.set_sensitive(true);
        id
    });
    let edits = EdgeEdits::of(&req.headers, seen, hcm, client_ip, tls, client_cert, request_id.clone())?;
    edits.apply(req)?;
    Ok(request_id)
}

fn request_id(headers: &HeaderMap, seen: &Seen, hcm: &HttpConnectionManager) -> Option<HeaderValue> {
    let existing = seen.request_id.then(|| headers.get(&X_REQUEST_ID_NAME)).flatten().filter(|v| !v.is_empty());
    let trust_existing = !hcm.use_remote_address || hcm.preserve_external_request_id;
    match existing {
        Some(v) if trust_existing || !hcm.generate_request_id => Some(v.clone()),
        _ if hcm.generate_request_id => {
            let id = uuid::Builder::from_random_bytes(random_id_bytes()).into_uuid();
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            HeaderValue::from_bytes(id.hyphenated().encode_lower(&mut buf).as_bytes()).ok()
        }
        _ => None,
    }
}

/// How many ids' worth of random bytes a thread draws at a time.
const IDS_PER_DRAW: usize = 256;

thread_local! {
    /// Random bytes for the next request ids, and how many are used.
    static ID_BYTES: std::cell::RefCell<([u8; 16 * IDS_PER_DRAW], usize)> =
        const { std::cell::RefCell::new(([0; 16 * IDS_PER_DRAW], 16 * IDS_PER_DRAW)) };
}

/// 16 bytes from the thread-local CSPRNG for a v4 UUID, drawn 4 KiB at a
/// time as Envoy's random generator does: one draw of 16 bytes cost ~250
/// instructions, most of it per call (and `Uuid::new_v4()` makes a
/// getrandom(2) system call each time).
fn random_id_bytes() -> [u8; 16] {
    use rand::RngCore;
    ID_BYTES.with_borrow_mut(|(bytes, used)| {
        if *used == bytes.len() {
            rand::thread_rng().fill_bytes(bytes);
            *used = 0;
        }
        let mut out = [0; 16];
        out.copy_from_slice(&bytes[*used..*used + 16]);
        *used += 16;
        out
    })
}

/// The connection's client certificate, as `forward_client_cert_details`
/// sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientCert<'a> {
    /// The client presented a certificate (mutual TLS).
    pub presented: bool,
    /// Its `x-forwarded-client-cert` element, if the handshake built one
    /// (only for a connection manager that writes it).
    pub element: Option<&'a str>,
}

impl<'a> ClientCert<'a> {
    /// What a connection's TLS digest says (nothing without TLS).
    pub fn of(digest: Option<&'a SslDigest>) -> Self {
        match digest {
            // Pingora's digest holds the SHA-256 of the client's
            // certificate, and nothing when there was none.
            Some(d) => ClientCert { presented: !d.cert_digest.is_empty(), element: crate::tls::client_cert_element(d) },
            None => ClientCert::default(),
        }
    }
}

/// What [`edge_headers`] sets (`Some`) or removes (`None`): every value is
/// worked out from the request as it came before any is applied.
struct EdgeEdits {
    forwarded_proto: Option<HeaderValue>,
    /// Envoy-internal fields a client may have forged.
    envoy_internal: Vec<HeaderName>,
    forwarded_for: Option<HeaderValue>,
    client_cert: Option<Option<HeaderValue>>,
    request_id: Option<HeaderValue>,
}

impl EdgeEdits {
    fn of(
        headers: &HeaderMap,
        seen: Seen,
        hcm: &HttpConnectionManager,
        client_ip: Option<IpAddr>,
        tls: bool,
        client_cert: ClientCert<'_>,
        request_id: Option<HeaderValue>,
    ) -> Result<Self> {
        // Static values: a `&str` would be copied into a new header value per request.
        let scheme = HeaderValue::from_static(if tls { "https" } else { "http" });
        let mut edits = EdgeEdits {
            forwarded_proto: None,
            envoy_internal: Vec::new(),
            forwarded_for: None,
            client_cert: client_cert_edit(headers, seen.client_cert, hcm.forward_client_cert, client_cert),
            request_id,
        };
        if hcm.use_remote_address {
            // An edge proxy decides the scheme and drops Envoy-internal headers a
            // client may have forged.
            edits.forwarded_proto = Some(scheme);
            edits.envoy_internal = seen.envoy_internal;
            if let (Some(ip), false) = (client_ip, hcm.skip_xff_append) {
                let prev = seen.forwarded_for.then(|| headers.get(&X_FORWARDED_FOR_NAME)).flatten();
                let value = match prev.and_then(|v| v.to_str().ok()) {
                    Some(prev) if !prev.is_empty() => format!("{prev}, {ip}"),
                    _ => ip.to_string(),
                };
                let value = HeaderValue::try_from(value).or_err(InvalidHTTPHeader, "invalid x-forwarded-for")?;
                edits.forwarded_for = Some(value);
            }
        } else if !seen.forwarded_proto {
            edits.forwarded_proto = Some(scheme);
        }
        Ok(edits)
    }

    /// Sets and removes the fields, in this order: `x-forwarded-proto`, the
    /// `x-envoy-` ones gone, `x-forwarded-for`, `x-forwarded-client-cert`,
    /// `x-request-id`.
    fn apply(self, req: &mut RequestHeader) -> Result<()> {
        let EdgeEdits { forwarded_proto, envoy_internal, forwarded_for, client_cert, request_id } = self;
        if let Some(v) = forwarded_proto {
            set_field(req, X_FORWARDED_PROTO_NAME, v)?;
        }
        for name in &envoy_internal {
            req.remove_header(name);
        }
        let rest = [
            forwarded_for.map(|v| (X_FORWARDED_FOR_NAME, Some(v))),
            client_cert.map(|v| (X_FORWARDED_CLIENT_CERT_NAME, v)),
            request_id.map(|v| (X_REQUEST_ID_NAME, Some(v))),
        ];
        for (name, value) in rest.into_iter().flatten() {
            match value {
                Some(v) => set_field(req, name, v)?,
                None => drop(req.remove_header(&name)),
            }
        }
        Ok(())
    }
}

/// `x-forwarded-client-cert` as `forward_client_cert_details` has it (see
/// [`ForwardClientCert`]); `None`: left as the client sent it. A client's
/// own header never reaches the upstream unless the mode forwards it from
/// a connection that presented a certificate, or always forwards it.
fn client_cert_edit(
    headers: &HeaderMap,
    sent: bool,
    mode: ForwardClientCert,
    cert: ClientCert<'_>,
) -> Option<Option<HeaderValue>> {
    use ForwardClientCert::*;
    let remove = || sent.then_some(None);
    match mode {
        AlwaysForwardOnly => None,
        _ if !cert.presented => remove(),
        Sanitize => remove(),
        ForwardOnly => None,
        AppendForward | SanitizeSet => {
            // A handshake that recorded no element (it cannot happen on a
            // chain that writes one) forwards nothing the client wrote.
            let Some(element) = cert.element else { return remove() };
            let mut value = Vec::new();
            if mode == AppendForward {
                for prev in headers.get_all(&X_FORWARDED_CLIENT_CERT_NAME) {
                    if !prev.is_empty() {
                        value.extend_from_slice(prev.as_bytes());
                        value.push(b',');
                    }
                }
                // A quote the client left open would swallow our element
                // into its last value: what it sent is dropped instead.
                if open_quote(&value) {
                    value.clear();
                }
            }
            value.extend_from_slice(element.as_bytes());
            // The client's part may hold bytes a header value cannot (our
            // element cannot): then the element alone.
            let header = HeaderValue::from_bytes(&value).or_else(|_| HeaderValue::from_str(element)).ok();
            Some(header)
        }
    }
}

/// Whether `value` ends inside a quoted string (`\"` escapes a quote).
fn open_quote(value: &[u8]) -> bool {
    let (mut open, mut escaped) = (false, false);
    for &b in value {
        match b {
            _ if escaped => escaped = false,
            b'\\' if open => escaped = true,
            b'"' => open = !open,
            _ => {}
        }
    }
    open
}

/// Rewrites the upstream request's path and host for the route, and tells
/// the upstream how long the proxy will wait and, when the virtual host
/// asks (`include_request_attempt_count`), which attempt this is.
pub fn rewrite_upstream(
    req: &mut RequestHeader,
    matcher: &RouteMatch,
    forward: &Forward,
    host: &Host,
    expected_timeout: Option<Duration>,
    attempt: Option<u32>,
) -> Result<()> {
    if let Some(new_path) = rewritten_path(req, matcher, forward) {
        let mut parts = req.uri.clone().into_parts();
        parts.path_and_query = Some(PathAndQuery::try_from(new_path).map_err(|e| {
            pingora_error::Error::because(pingora_error::ErrorType::InternalError, "invalid rewritten path", e)
        })?);
        let uri = Uri::from_parts(parts).map_err(|e| {
            pingora_error::Error::because(pingora_error::ErrorType::InternalError, "invalid rewritten uri", e)
        })?;
        req.set_uri(uri);
    }
    if forward.append_x_forwarded_host && !matches!(forward.host_rewrite, HostRewrite::Keep) {
        append_forwarded_host(req)?;
    }
    let rewritten_host = match &forward.host_rewrite {
        HostRewrite::Keep => None,
        HostRewrite::Literal(h) => Some(HeaderValue::from_str(h)),
        HostRewrite::Auto => Some(match &host.hostname {
            Some(name) => HeaderValue::from_str(name),
            None => HeaderValue::try_from(host.addr.to_string()),
        }),
    };
    if let Some(value) = rewritten_host {
        set_field(req, HOST, value.or_err(InvalidHTTPHeader, "invalid host rewrite")?)?;
    }
    match expected_timeout {
        // A value from the number: no `String` to allocate and parse back.
        Some(t) => set_field(req, X_EXPECTED_TIMEOUT_NAME, HeaderValue::from(millis(t)))?,
        None => {
            req.remove_header(&X_EXPECTED_TIMEOUT_NAME);
        }
    }
    if let Some(n) = attempt {
        set_field(req, X_ATTEMPT_COUNT_NAME, HeaderValue::from(n))?;
    }
    Ok(())
}

/// Sets a field: in the map itself when the request keeps no case map
/// (every request the native engine parses, and Pingora's HTTP/2 ones;
/// Pingora's setter spells the name in title case for a case map and
/// parses it back even without one, ~1,500 instructions a field), through
/// the setter otherwise, which keeps the case map in step. (Removing needs
/// no such care: Pingora's `remove_header` only looks the name up.)
fn set_field(req: &mut RequestHeader, name: HeaderName, value: HeaderValue) -> Result<()> {
    match req.headers_mut_no_case() {
        Some(map) => {
            map.insert(name, value);
            Ok(())
        }
        None => req.insert_header(name, value),
    }
}

/// A duration in whole milliseconds, as Envoy's timeout fields carry it.
pub fn millis(t: Duration) -> u64 {
    u64::try_from(t.as_millis()).unwrap_or(u64::MAX)
}

/// Envoy's `append_x_forwarded_host`: the `Host` the client sent goes at
/// the end of `x-forwarded-host` (comma-separated, as Envoy appends),
/// unless it is the last value there already (a retry rewrites again).
fn append_forwarded_host(req: &mut RequestHeader) -> Result<()> {
    // HTTP/2 carries the host in `:authority`.
    let original = req
        .headers
        .get(HOST)
        .cloned()
        .or_else(|| req.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    let Some(original) = original.filter(|h| !h.is_empty()) else {
        return Ok(());
    };
    let value = match req.headers.get(&X_FORWARDED_HOST_NAME) {
        None => original,
        Some(existing) if existing.as_bytes().is_empty() => original,
        Some(existing) => {
            let last = existing.as_bytes().rsplit(|b| *b == b',').next().unwrap_or_default().trim_ascii();
            if last == original.as_bytes() {
                return Ok(());
            }
            let mut joined = existing.as_bytes().to_vec();
            joined.push(b',');
            joined.extend_from_slice(original.as_bytes());
            HeaderValue::from_bytes(&joined).or_err(InvalidHTTPHeader, "invalid x-forwarded-host")?
        }
    };
    req.insert_header(X_FORWARDED_HOST_NAME, value)?;
    Ok(())
}

fn rewritten_path(req: &RequestHeader, matcher: &RouteMatch, forward: &Forward) -> Option<String> {
    let pq = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let (path, query) = match pq.find('?') {
        Some(i) => (&pq[..i], &pq[i..]),
        None => (pq, ""),
    };
    if let Some(prefix) = &forward.prefix_rewrite {
        let matched = match &matcher.path {
            PathMatch::Prefix(p) | PathMatch::SeparatedPrefix(p) | PathMatch::Exact(p) => p.len().min(path.len()),
            PathMatch::Regex(_) => path.len(),
        };
        let mut out = format!("{prefix}{}", &path[matched..]);
        if out.is_empty() {
            out.push('/');
        }
        out.push_str(query);
        return Some(out);
    }
    if let Some((re, substitution)) = &forward.regex_rewrite {
        let mut out = re.replace_all(path, substitution.as_str()).into_owned();
        out.push_str(query);
        return Some(out);
    }
    None
}

/// The `Location` of a redirect route.
pub fn redirect_location(
    req: &RequestHeader,
    authority: &str,
    tls: bool,
    r: &Redirect,
    matcher: &RouteMatch,
) -> String {
    let old_scheme = if tls { "https" } else { "http" };
    let scheme = r.scheme.as_deref().unwrap_or(old_scheme);
    let (host, port) = match crate::routing::split_port(authority) {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    let host = r.host.as_deref().unwrap_or(host);
    let port = match (r.port, port) {
        (Some(p), _) => Some(p),
        // Switching scheme drops the old scheme's port.
        (None, Some(_)) if scheme != old_scheme => None,
        (None, p) => p,
    };
    let default_port = if scheme == "https" { 443 } else { 80 };
    let port = port.filter(|p| *p != default_port).map(|p| format!(":{p}")).unwrap_or_default();

    let pq = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let (path, query) = match pq.find('?') {
        Some(i) => (&pq[..i], &pq[i..]),
        None => (pq, ""),
    };
    let mut path_out = match (&r.path, &r.prefix_rewrite) {
        (Some(p), _) => p.clone(),
        (None, Some(prefix)) => {
            let matched = match &matcher.path {
                PathMatch::Prefix(p) | PathMatch::SeparatedPrefix(p) | PathMatch::Exact(p) => p.len().min(path.len()),
                PathMatch::Regex(_) => path.len(),
            };
            format!("{prefix}{}", &path[matched..])
        }
        (None, None) => path.to_string(),
    };
    if !r.strip_query && !path_out.contains('?') {
        path_out.push_str(query);
    }
    format!("{scheme}://{host}{port}{path_out}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::ClusterChoice;
    use http::StatusCode;

    #[test]
    fn generated_ids_are_distinct_v4_uuids_across_draws() {
        let mut ids = std::collections::HashSet::new();
        for _ in 0..3 * IDS_PER_DRAW + 7 {
            let id = uuid::Builder::from_random_bytes(random_id_bytes()).into_uuid();
            assert_eq!(id.get_version(), Some(uuid::Version::Random));
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            assert!(ids.insert(id), "{id} repeated");
        }
        // A fresh thread draws its own bytes.
        let other = std::thread::spawn(random_id_bytes).join().unwrap();
        assert!(!ids.contains(&uuid::Builder::from_random_bytes(other).into_uuid()));
    }

    fn forward(prefix: Option<&str>) -> Forward {
        Forward {
            clusters: ClusterChoice::Single(0),
            prefix_rewrite: prefix.map(String::from),
            regex_rewrite: None,
            host_rewrite: HostRewrite::Keep,
            timeout: None,
            idle_timeout: None,
            max_stream_duration: None,
            retry_policy: None,
            hash_policy: vec![],
            websocket: None,
            grpc_timeout: None,
            append_x_forwarded_host: false,
        }
    }

    fn m(prefix: &str) -> RouteMatch {
        RouteMatch { path: PathMatch::Prefix(prefix.into()), case_sensitive: true, headers: vec![] }
    }

    #[test]
    fn prefix_rewrite_keeps_rest_and_query() {
        let req = RequestHeader::build("GET", b"/api/films/1?x=1", None).unwrap();
        assert_eq!(rewritten_path(&req, &m("/api"), &forward(Some(""))).as_deref(), Some("/films/1?x=1"));
        assert_eq!(rewritten_path(&req, &m("/api/"), &forward(Some("/v2/"))).as_deref(), Some("/v2/films/1?x=1"));
        let root = RequestHeader::build("GET", b"/api", None).unwrap();
        assert_eq!(rewritten_path(&root, &m("/api"), &forward(Some(""))).as_deref(), Some("/"));
    }

    #[test]
    fn redirect_targets() {
        let req = RequestHeader::build("GET", b"/old/page?q=1", None).unwrap();
        let r = Redirect {
            scheme: Some("https".into()),
            host: None,
            port: None,
            path: None,
            prefix_rewrite: Some("/new".into()),
            status: StatusCode::MOVED_PERMANENTLY,
            strip_query: false,
        };
        assert_eq!(
            redirect_location(&req, "example.com:80", false, &r, &m("/old")),
            "https://example.com/new/page?q=1"
        );
        let r2 = Redirect { strip_query: true, prefix_rewrite: None, ..r };
        assert_eq!(redirect_location(&req, "example.com", false, &r2, &m("/old")), "https://example.com/old/page");
    }

    #[test]
    fn a_quote_left_open_is_found() {
        assert!(!open_quote(b"By=a;Hash=b,"));
        assert!(!open_quote(br#"Subject="CN=a\"b";URI=x,"#));
        assert!(open_quote(br#"URI=spiffe://evil;Subject=","#));
        assert!(open_quote(br#"Subject="a\","#));
    }
}
