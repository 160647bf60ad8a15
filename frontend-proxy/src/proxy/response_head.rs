//! The proxy's side of an upstream response head, whichever engine writes
//! it: the fields it replaces and adds (`x-envoy-upstream-service-time`,
//! `server`, `x-request-id`, `date`), the upstream's hop-by-hop fields it
//! drops, and the route's configured edits. The native engine writes the
//! common case straight from [`ResponseEdits`]; Pingora's engine, and the
//! native one for routes with edits, go through
//! [`Proxy::downstream_headers`].

use super::context::RequestCtx;
use super::hop_by_hop::{is_hop_by_hop, ConnectionNamed};
use super::{date, forwarding, Proxy};
use crate::config::model::ServerHeader;
use crate::routing::RequestInfo;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, DATE, SERVER};
use http::response::Parts as RespParts;
use http::StatusCode;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use std::time::Duration;

impl Proxy {
    /// Whether the route or its virtual host or table edits response headers.
    pub(super) fn edits_response_headers(&self, ctx: &RequestCtx) -> bool {
        self.route(ctx).is_some_and(|(t, vh, r)| {
            !(r.headers.response_is_empty() && vh.headers.response_is_empty() && t.headers.response_is_empty())
        })
    }

    /// The proxy's own fields on this request's response (both engines
    /// apply these: the native one as it writes the head, the Pingora one
    /// through [`Self::downstream_headers`]).
    pub(super) fn response_edits<'a>(&'a self, ctx: &'a RequestCtx) -> ResponseEdits<'a> {
        let hcm = &self.listener(ctx).hcm;
        ResponseEdits {
            upstream_time: self.upstream_service_time(ctx),
            server: self
                .server_values
                .get(ctx.listener)
                .and_then(Option::as_ref)
                .filter(|_| hcm.server_header != ServerHeader::PassThrough),
            server_overwrites: hcm.server_header == ServerHeader::Overwrite,
            request_id: ctx.request_id.as_ref().filter(|_| hcm.always_set_request_id_in_response),
            attempt_count: self
                .route(ctx)
                .filter(|(_, vh, _)| vh.attempt_count_downstream && ctx.attempts > 0)
                .map(|_| ctx.attempts),
        }
    }

    /// The `x-envoy-upstream-service-time` the proxy adds to the response:
    /// none when the router's `suppress_envoy_headers` says so (an
    /// upstream's own field then passes as it is).
    pub(super) fn upstream_service_time(&self, ctx: &RequestCtx) -> Option<Duration> {
        ctx.upstream_time.filter(|_| !self.listener(ctx).hcm.suppress_envoy_headers)
    }

    /// An upstream response head on its way to the client (Pingora's
    /// engine, and the native one for routes with response edits): the
    /// fields its `Connection` header names removed, the proxy's own
    /// fields, then the configured edits.
    pub(super) fn downstream_headers(&self, resp: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
        let listener = self.listener(ctx);
        let edits = self.response_edits(ctx);
        let status = resp.status;
        match resp.headers_mut_no_case() {
            // No case to keep (an HTTP/2 client's response, the native
            // engine's): edit the map itself (vendor/pingora-http's patch).
            // `insert_header` would spell each name in title case and parse
            // it back.
            Some(headers) => {
                for name in dropped_fields(headers, status, &edits) {
                    headers.remove(&name);
                }
                let (has_server, has_date) = (headers.contains_key(SERVER), headers.contains_key(DATE));
                edits.additions(has_server, has_date, |name, value| {
                    headers.insert(name.clone(), value.header_value());
                });
            }
            // The head keeps the case of each name in a second map (an
            // HTTP/1 upstream's, for an HTTP/1 client): edit both.
            None => {
                for name in dropped_fields(&resp.headers, status, &edits) {
                    resp.remove_header(&name);
                }
                let (has_server, has_date) = (resp.headers.contains_key(SERVER), resp.headers.contains_key(DATE));
                let mut added = Ok(());
                edits.additions(has_server, has_date, |name, value| {
                    if added.is_ok() {
                        added = resp.insert_header(name, value.header_value()).map(|_| ());
                    }
                });
                added?;
            }
        }
        if let Some((table, vh, route)) = self.route(ctx) {
            if !(route.headers.is_empty() && vh.headers.is_empty() && table.headers.is_empty()) {
                let info = RequestInfo {
                    client_addr: ctx.client_addr,
                    local_addr: Some(&listener.address),
                    protocol: "HTTP/1.1",
                    hostname: &self.hostname,
                    request: None,
                };
                route.headers.apply_response(resp, &info);
                vh.headers.apply_response(resp, &info);
                table.headers.apply_response(resp, &info);
                // Envoy's connection manager adds `date` after the route's
                // edits when none is left: a route removing the field does
                // not send a response without one.
                if !resp.headers.contains_key(DATE) {
                    resp.insert_header(DATE, date::now())?;
                }
            }
        }
        Ok(())
    }
}

/// The upstream's fields that do not reach the client: those the proxy's
/// own replace, those its `Connection` header names, and the other
/// hop-by-hop fields (Pingora's codec sets `connection` itself; a 101
/// keeps `upgrade`).
fn dropped_fields(headers: &HeaderMap, status: StatusCode, edits: &ResponseEdits<'_>) -> Vec<HeaderName> {
    let mut named = ConnectionNamed::default();
    for value in headers.get_all(CONNECTION) {
        // Past the cap, the fields named so far go; the rest are not
        // the client's concern (the codec has framed the body).
        if !named.add(value.as_bytes()) {
            break;
        }
    }
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let hop_by_hop = |n: &[u8]| {
        is_hop_by_hop(n) && !n.eq_ignore_ascii_case(b"connection") && !(switching && n.eq_ignore_ascii_case(b"upgrade"))
    };
    // The names themselves, cloned: parsing them again from their bytes
    // cost more than the rest of the edit.
    headers
        .keys()
        .filter(|n| {
            let n = n.as_str().as_bytes();
            edits.replaces(n) || named.names(n) || hop_by_hop(n)
        })
        .cloned()
        .collect()
}

/// A response head with no fields: to stand in while one is edited, or to build one in.
pub(super) fn empty_parts() -> RespParts {
    http::Response::new(()).into_parts().0
}

/// Drops the map that keeps the case of each field name, for a client that
/// speaks HTTP/2 (lower-case names on the wire): every later edit, ours
/// and Pingora's h2 writer's, then updates one map instead of two. (The
/// reason phrase goes too: HTTP/2 has none.)
pub(super) fn forget_case(resp: &mut ResponseHeader) {
    if resp.has_case() {
        let parts = RespParts::from(std::mem::replace(resp, ResponseHeader::from(empty_parts())));
        *resp = ResponseHeader::from(parts);
    }
}

/// The fields the proxy sets on a response from the upstream:
/// `x-envoy-upstream-service-time`, `server` (as `server_header_transformation`
/// says), `x-request-id` (with `always_set_request_id_in_response`) and
/// `date` when the upstream sent none.
pub(super) struct ResponseEdits<'a> {
    upstream_time: Option<Duration>,
    /// The listener's `server_name`, unless the upstream's passes through.
    server: Option<&'a HeaderValue>,
    server_overwrites: bool,
    request_id: Option<&'a HeaderValue>,
    /// `x-envoy-attempt-count` (`include_attempt_count_in_response`).
    attempt_count: Option<u32>,
}

/// The value of a field the proxy adds.
pub(super) enum Added<'a> {
    /// Whole milliseconds.
    Millis(Duration),
    Value(&'a HeaderValue),
    /// The current `Date`.
    Date,
    Number(u32),
}

impl Added<'_> {
    pub(super) fn header_value(&self) -> HeaderValue {
        match self {
            Added::Millis(t) => {
                // Sensitive: HPACK writes it as a literal never indexed. The
                // milliseconds differ from response to response; indexed, each
                // new one took a slot of the HTTP/2 encoder's dynamic table and
                // every lookup of the name walked all the values there (~50
                // comparisons a response under load).
                let mut v = HeaderValue::from(u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
                v.set_sensitive(true);
                v
            }
            Added::Value(v) => (*v).clone(),
            Added::Date => date::now(),
            Added::Number(n) => HeaderValue::from(*n),
        }
    }
}

impl ResponseEdits<'_> {
    /// Whether the upstream's field `name` gives way to one of the proxy's.
    pub fn replaces(&self, name: &[u8]) -> bool {
        (self.upstream_time.is_some() && name.eq_ignore_ascii_case(forwarding::X_UPSTREAM_SERVICE_TIME.as_bytes()))
            || (self.request_id.is_some() && name.eq_ignore_ascii_case(forwarding::X_REQUEST_ID.as_bytes()))
            || (self.server_overwrites && name.eq_ignore_ascii_case(b"server"))
            || (self.attempt_count.is_some() && name.eq_ignore_ascii_case(forwarding::X_ATTEMPT_COUNT.as_bytes()))
    }

    /// Calls `put` with each field the proxy adds, given whether the
    /// upstream's head (less what [`Self::replaces`] took) has `server` and
    /// `date`.
    pub fn additions(&self, has_server: bool, has_date: bool, mut put: impl FnMut(&HeaderName, Added<'_>)) {
        if let Some(t) = self.upstream_time {
            put(&forwarding::X_UPSTREAM_SERVICE_TIME_NAME, Added::Millis(t));
        }
        if let Some(server) = self.server.filter(|_| self.server_overwrites || !has_server) {
            put(&SERVER, Added::Value(server));
        }
        if let Some(id) = self.request_id {
            put(&forwarding::X_REQUEST_ID_NAME, Added::Value(id));
        }
        if let Some(n) = self.attempt_count {
            put(&forwarding::X_ATTEMPT_COUNT_NAME, Added::Number(n));
        }
        if !has_date {
            put(&DATE, Added::Date);
        }
    }
}
