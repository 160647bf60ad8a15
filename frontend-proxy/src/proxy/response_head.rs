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
use http::header::{HeaderName, HeaderValue, CONNECTION, DATE, SERVER};
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
        let mut named = ConnectionNamed::default();
        for value in resp.headers.get_all(CONNECTION) {
            // Past the cap, the fields named so far go; the rest are not
            // the client's concern (Pingora's codec has framed the body).
            if !named.add(value.as_bytes()) {
                break;
            }
        }
        // Pingora's codec sets `connection` itself; a 101 keeps `upgrade`.
        let switching = resp.status == http::StatusCode::SWITCHING_PROTOCOLS;
        let hop_by_hop = |n: &[u8]| {
            is_hop_by_hop(n)
                && !n.eq_ignore_ascii_case(b"connection")
                && !(switching && n.eq_ignore_ascii_case(b"upgrade"))
        };
        let dropped: Vec<HeaderName> = resp
            .headers
            .keys()
            .map(|n| n.as_str().as_bytes())
            .filter(|n| edits.replaces(n) || named.names(n) || hop_by_hop(n))
            .filter_map(|n| HeaderName::from_bytes(n).ok())
            .collect();
        for name in dropped {
            resp.remove_header(&name);
        }
        let (has_server, has_date) = (resp.headers.contains_key(SERVER), resp.headers.contains_key(DATE));
        let mut added = Ok(());
        edits.additions(has_server, has_date, |name, value| {
            let value = match value {
                Added::Millis(t) => HeaderValue::from(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                Added::Value(v) => v.clone(),
                Added::Date => date::now(),
                Added::Number(n) => HeaderValue::from(n),
            };
            if added.is_ok() {
                added = resp.insert_header(name, value).map(|_| ());
            }
        });
        added?;
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
            }
        }
        Ok(())
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
