//! Routing a request to an action: virtual host and route lookup,
//! `require_tls`, direct responses and redirects, WebSocket admission, the
//! cluster pick and the consistent-hashing key.

use super::context::RequestCtx;
use super::{forwarding, LocalReply, Proxy};
use crate::routing::{Action, HashPolicy, RequireTls};
use pingora_http::RequestHeader;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

impl Proxy {
    /// Routes the request; returns the local reply to send, if any.
    /// `upgrade`: the request asks for a protocol upgrade (WebSocket).
    pub(super) fn route_request(&self, req: &RequestHeader, upgrade: bool, ctx: &mut RequestCtx) -> Option<LocalReply> {
        let listener = &self.listeners[ctx.listener];
        let table = &listener.hcm.routes;
        let authority = authority(req).unwrap_or_default();
        let stats = &listener.stats;
        let Some(v) = table.find_virtual_host_index(authority, listener.address.port()) else {
            stats.no_route.fetch_add(1, Relaxed);
            return Some(LocalReply::NoRoute);
        };
        let vh = &table.virtual_hosts[v];
        if vh.require_tls != RequireTls::None && !listener.tls {
            let mut location = format!("https://{}", authority_without_port(authority));
            location.push_str(req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
            return Some(LocalReply::Redirect { status: http::StatusCode::MOVED_PERMANENTLY, location });
        }
        let Some(r) = vh.find_route_index(req) else {
            stats.no_route.fetch_add(1, Relaxed);
            return Some(LocalReply::NoRoute);
        };
        ctx.route = Some((v, r));
        let route = &vh.routes[r];
        match &route.action {
            Action::Direct(d) => {
                stats.rq_direct_response.fetch_add(1, Relaxed);
                Some(LocalReply::Direct { status: d.status, body: d.body.clone() })
            }
            Action::Redirect(rd) => {
                stats.rq_redirect.fetch_add(1, Relaxed);
                let location = forwarding::redirect_location(req, authority, listener.tls, rd, &route.matcher);
                Some(LocalReply::Redirect { status: rd.status, location })
            }
            Action::Forward(f) => {
                if upgrade {
                    let websocket = req
                        .headers
                        .get(http::header::UPGRADE)
                        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
                    if !(websocket && f.websocket.unwrap_or(listener.hcm.websocket)) {
                        return Some(LocalReply::UpgradeRejected);
                    }
                }
                let cluster = f.clusters.pick(rand::random());
                ctx.cluster = Some(cluster);
                // Envoy's router: with `grpc_timeout_header_max`, a gRPC
                // request's `grpc-timeout` is its route timeout.
                ctx.route_timeout = match (&f.grpc_timeout, ctx.grpc) {
                    (Some(g), true) => g.route_timeout(req),
                    _ => f.timeout,
                };
                ctx.deadline = ctx.route_timeout.map(|t| ctx.start + t);
                ctx.hash_key = self
                    .clusters
                    .get(cluster)
                    .filter(|c| c.uses_hash_key())
                    .map(|_| hash_key(&f.hash_policy, req, ctx.client_addr));
                None
            }
        }
    }
}

/// `:authority` (h2) or `Host` (HTTP/1.1).
pub(super) fn authority(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
}

pub(super) fn authority_without_port(authority: &str) -> &str {
    crate::routing::split_port(authority).map(|(h, _)| h).unwrap_or(authority)
}

/// The consistent-hashing key from the route's hash policies; random when
/// no policy yields a value (as Envoy does).
pub(super) fn hash_key(policies: &[HashPolicy], req: &RequestHeader, client: Option<SocketAddr>) -> Vec<u8> {
    let mut key = Vec::new();
    for p in policies {
        let (found, terminal) = match p {
            HashPolicy::Header { name, terminal } => match req.headers.get(name) {
                Some(v) => {
                    key.extend_from_slice(v.as_bytes());
                    (true, *terminal)
                }
                None => (false, false),
            },
            HashPolicy::SourceIp { terminal } => match client {
                Some(a) => {
                    key.extend_from_slice(a.ip().to_string().as_bytes());
                    (true, *terminal)
                }
                None => (false, false),
            },
        };
        if found && terminal {
            break;
        }
    }
    if key.is_empty() {
        key.extend_from_slice(&rand::random::<u64>().to_le_bytes());
    }
    key
}
