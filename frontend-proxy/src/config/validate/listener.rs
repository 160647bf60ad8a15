//! Listeners and their filter chains (the listener filters, each chain's
//! transport socket and network filters); a chain's `filter_chain_match` is
//! `filter_chain_match.rs`'s, downstream TLS `tls.rs`'s, the HTTP connection
//! manager `hcm.rs`'s, a TCP proxy `tcp.rs`'s.

use super::filter_chain_match::{chain_match, same_matches};
use super::hcm::{connection_manager, HCM_TYPE};
use super::tcp::{tcp_proxy, TCP_PROXY_NAMES, TCP_PROXY_TYPE};
use super::tls::downstream_tls;
use super::{conflicts, Ctx, P};
use crate::chain_match::tls_inspector::MAX_CLIENT_HELLO;
use crate::chain_match::{ChainMatch, Inspector, Selection, DEFAULT_LISTENER_FILTERS_TIMEOUT};
use crate::config::model::{ChainConfig, Codec, Http2Settings, ListenerConfig, Serves};
use crate::config::raw::{self, Field, List};
use crate::tls::DownstreamTls;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

const HCM_NAMES: &[&str] = &["envoy.filters.network.http_connection_manager", "envoy.http_connection_manager"];
const CONNECTION_LIMIT_NAME: &str = "envoy.filters.network.connection_limit";
const CONNECTION_LIMIT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit";
pub(super) fn listeners(
    cx: &mut Ctx,
    p: &P,
    f: &Option<List<raw::Listener>>,
    clusters: &HashMap<String, usize>,
) -> Vec<ListenerConfig> {
    let mut out: Vec<ListenerConfig> = Vec::new();
    let mut names = HashSet::new();
    let given = given_names(f);
    for (lp, l) in cx.list(p, "listeners", f) {
        let Some(mut listener) = listener(cx, &lp, l, clusters) else {
            continue;
        };
        if !matches!(&l.name, Some(Field::Ok(n)) if !n.is_empty()) {
            // Envoy names an unnamed listener with a UUID; its address is as
            // unique and says more, with a suffix if the address repeats
            // (port 0) or another listener took it as its name.
            let base = listener.address.to_string();
            listener.name = (1..)
                .map(|i| if i == 1 { base.clone() } else { format!("{base}#{i}") })
                .find(|n| !names.contains(n) && !given.contains(n))
                .unwrap_or(base);
        }
        if !names.insert(listener.name.clone()) {
            cx.error(&lp.key("name"), format!("duplicate listener name {:?}", listener.name));
        }
        if let Some(other) = out.iter().find(|o| conflicts(&o.address, &listener.address)) {
            cx.error(&lp.key("address"), format!("{} is already used by listener {:?}", listener.address, other.name));
        }
        if listener.address.pipe().is_some() {
            if listener.tls.is_some() || listener.other_chains.iter().any(|c| c.tls.is_some()) {
                cx.error(
                    &lp.key("filter_chains"),
                    "TLS on a pipe (Unix domain socket) listener is not supported yet; its filter chains must be plaintext",
                );
            }
            // A pipe's accept loop serves its first chain: choosing one per
            // connection (by addresses, SNI, ...) is not done there.
            if listener.selection.is_some() {
                cx.error(
                    &lp.key("filter_chains"),
                    "a pipe (Unix domain socket) listener takes one filter chain, without filter_chain_match, default_filter_chain or listener filters (choosing a chain per connection is not supported on pipes yet)",
                );
            }
        }
        out.push(listener);
    }
    out
}

/// The names the file gives its listeners, so generated ones avoid them.
fn given_names(f: &Option<List<raw::Listener>>) -> HashSet<String> {
    let Some(Field::Ok(items)) = f else {
        return HashSet::new();
    };
    items
        .iter()
        .filter_map(|l| match l {
            Field::Ok(raw::Listener { name: Some(Field::Ok(n)), .. }) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

fn listener(cx: &mut Ctx, p: &P, l: &raw::Listener, clusters: &HashMap<String, usize>) -> Option<ListenerConfig> {
    cx.other(
        p,
        l,
        &[
            "per_connection_buffer_limit_bytes",
            "traffic_direction",
            "stat_prefix",
            "metadata",
            "reuse_port",
            "drain_type",
            "tcp_backlog_size",
        ],
    );
    let name = cx.string(p, "name", &l.name);
    let address = cx.listen_address(p, "address", &l.address);
    let ipv4_compat = match &l.address {
        Some(Field::Ok(a)) => match &a.socket_address {
            Some(Field::Ok(sa)) => matches!(sa.ipv4_compat, Some(Field::Ok(true))),
            _ => false,
        },
        _ => false,
    };
    let reuse_port = cx.boolean(p, "enable_reuse_port", &l.enable_reuse_port, true);
    if l.access_log.is_some() {
        cx.error(
            &p.key("access_log"),
            "listener access logs are not supported yet; configure `access_log` on the http_connection_manager instead",
        );
    }

    let mut inspector = false;
    let mut http_inspector = None;
    for (fp, filter) in cx.list(p, "listener_filters", &l.listener_filters) {
        let fname = cx.string(&fp, "name", &filter.name).unwrap_or_default();
        match fname.as_str() {
            // Peeks at the ClientHello before a chain is chosen (`chain_match.rs`).
            "envoy.filters.listener.tls_inspector" => {
                tls_inspector_config(cx, &fp, filter);
                inspector = true
            }
            "envoy.filters.listener.http_inspector" => {
                listener_filter_config(cx, &fp, filter, HTTP_INSPECTOR_TYPE, &[]);
                http_inspector = Some(fp)
            }
            _ => cx.error(&fp, format!("listener filter {fname:?} is not supported")),
        }
    }
    let filters_timeout = match cx.duration(p, "listener_filters_timeout", &l.listener_filters_timeout) {
        // Envoy's `0s`: no bound.
        Some(t) if t.is_zero() => None,
        Some(t) => Some(t),
        None => Some(DEFAULT_LISTENER_FILTERS_TIMEOUT),
    };
    let continue_on_timeout =
        cx.boolean(p, "continue_on_listener_filters_timeout", &l.continue_on_listener_filters_timeout, false);

    let chains = cx.list(p, "filter_chains", &l.filter_chains);
    if l.filter_chains.is_none() {
        cx.error(&p.key("filter_chains"), "required field is missing");
    }
    let mut built = Vec::new();
    for (cp, raw_chain) in chains {
        let m = chain_match(cx, &cp, raw_chain);
        if let Some(m) = m.as_ref().filter(|_| !inspector) {
            // Without the inspector a connection has no server name or
            // protocols, and its transport is raw_buffer: the chain is dead
            // (Envoy only warns; never weaker than the file says).
            if !m.server_names.is_empty()
                || !m.application_protocols.is_empty()
                || m.transport_protocol.as_deref() == Some("tls")
            {
                cx.error(
                    &cp.key("filter_chain_match"),
                    "matches server_names, application_protocols or transport_protocol: tls, which only envoy.filters.listener.tls_inspector finds, and the listener has none: Envoy would never match this chain (its connections would go to another chain); add the tls_inspector listener filter",
                );
            }
        }
        let chain = filter_chain(cx, &cp, raw_chain, clusters);
        built.push((cp, m, chain));
    }
    let mut default_chain = None;
    if let Some(raw_chain) = cx.opt(p, "default_filter_chain", &l.default_filter_chain) {
        let dp = p.key("default_filter_chain");
        if raw_chain.filter_chain_match.is_some() {
            cx.error(&dp.key("filter_chain_match"), "a default filter chain has no match");
        }
        let chain = filter_chain(cx, &dp, raw_chain, clusters);
        default_chain = Some(built.len());
        built.push((dp, Some(ChainMatch::default()), chain));
    }
    if built.is_empty() {
        return None;
    }
    let matches: Vec<_> = built.iter().map(|(cp, m, _)| (cp, m.as_ref())).collect();
    same_matches(cx, &matches, default_chain);
    same_http_protocols(cx, &built);
    if let Some(fp) = http_inspector {
        // It tells plaintext clients' protocols apart for application_protocols.
        if built.iter().any(|(_, m, _)| m.as_ref().is_some_and(|m| !m.application_protocols.is_empty())) {
            cx.error(&fp, "envoy.filters.listener.http_inspector is not supported: application_protocols match the ALPN tls_inspector finds only");
        } else {
            cx.warn(&fp, "envoy.filters.listener.http_inspector is not needed (no filter chain matches application_protocols); ignored");
        }
    }
    let address = address?;
    let mut matches = Vec::new();
    let mut served = Vec::new();
    let mut complete = true;
    for (i, (_, m, chain)) in built.into_iter().enumerate() {
        match m {
            Some(m) if Some(i) != default_chain => matches.push(m),
            Some(_) => {}
            None => complete = false,
        }
        let tls = match chain.tls {
            Some(t) => t,
            None => {
                complete = false;
                None
            }
        };
        match chain.serves {
            Some(serves) => served.push(ChainConfig {
                serves,
                max_connections: chain.max_connections,
                tls,
                handshake_timeout: chain.handshake_timeout,
            }),
            None => complete = false,
        }
    }
    if !complete || served.is_empty() {
        return None;
    }
    let plain = served.len() == 1 && default_chain.is_none() && !inspector && matches[0] == ChainMatch::default();
    let selection = (!plain).then(|| Selection {
        chains: matches,
        default_chain,
        inspector: inspector.then_some(Inspector { timeout: filters_timeout, continue_on_timeout }),
    });
    let first = served.remove(0);
    Some(ListenerConfig {
        // Unnamed listeners are named by `listeners`.
        name: name.unwrap_or_default(),
        address,
        tls: first.tls,
        serves: first.serves,
        max_connections: first.max_connections,
        reuse_port,
        handshake_timeout: first.handshake_timeout,
        ipv4_compat,
        other_chains: served,
        selection,
    })
}

const TLS_INSPECTOR_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
const HTTP_INSPECTOR_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector";

/// Checks one field's value: `Err` says why it is refused.
type FieldCheck = fn(&serde_yaml::Value) -> Result<(), String>;

/// A listener filter's `typed_config`: its `@type`, and each other field
/// by its check in `fields`. Unknown fields are errors at their path.
fn listener_filter_config(
    cx: &mut Ctx,
    fp: &P,
    filter: &raw::TypedExtension,
    type_url: &str,
    fields: &[(&str, FieldCheck)],
) {
    let Some(tc) = cx.opt(fp, "typed_config", &filter.typed_config) else { return };
    let tp = fp.key("typed_config");
    let Some(map) = tc.as_mapping() else {
        cx.error(&tp, "expected a mapping");
        return;
    };
    for (k, v) in map {
        let key = k.as_str().unwrap_or_default();
        if key == "@type" {
            if v.as_str() != Some(type_url) {
                cx.error(&tp.key("@type"), format!("expected {type_url}"));
            }
            continue;
        }
        match fields.iter().find(|(name, _)| *name == key) {
            Some((_, check)) => {
                if let Err(why) = check(v) {
                    cx.error(&tp.key(key), why);
                }
            }
            None => cx.error(&tp.key(key), format!("unknown or unsupported field of {type_url}")),
        }
    }
}

/// A boolean, or protobuf's `BoolValue` mapping `{ value: ... }`.
fn bool_value(v: &serde_yaml::Value) -> Option<bool> {
    v.as_bool().or_else(|| v.get("value").and_then(serde_yaml::Value::as_bool))
}

/// An integer, or protobuf's `UInt32Value` mapping `{ value: ... }`.
fn u32_value(v: &serde_yaml::Value) -> Option<u64> {
    v.as_u64().or_else(|| v.get("value").and_then(serde_yaml::Value::as_u64)).filter(|n| *n <= u64::from(u32::MAX))
}

/// `TlsInspector`: what it does here is Envoy's default; a field that
/// would change that is refused.
fn tls_inspector_config(cx: &mut Ctx, fp: &P, filter: &raw::TypedExtension) {
    fn only_false(v: &serde_yaml::Value, what: &str) -> Result<(), String> {
        match bool_value(v) {
            Some(false) => Ok(()),
            Some(true) => Err(format!("{what} is not supported (only false, Envoy's default)")),
            None => Err("expected a boolean".into()),
        }
    }
    listener_filter_config(
        cx,
        fp,
        filter,
        TLS_INSPECTOR_TYPE,
        &[
            ("enable_ja3_fingerprinting", |v| only_false(v, "JA3 fingerprinting")),
            ("enable_ja4_fingerprinting", |v| only_false(v, "JA4 fingerprinting")),
            // A ClientHello that does not parse goes on as raw_buffer, as
            // with Envoy's default.
            ("close_connection_on_client_hello_parsing_errors", |v| {
                only_false(v, "closing the connection on a ClientHello that does not parse")
            }),
            ("max_client_hello_size", |v| match u32_value(v) {
                Some(n) if n == MAX_CLIENT_HELLO as u64 => Ok(()),
                Some(_) => Err(format!("only {} (Envoy's default) is supported", MAX_CLIENT_HELLO)),
                None => Err("expected an unsigned integer".into()),
            }),
            // Only how much Envoy reads first: the ClientHello and what is
            // decided from it are the same whatever the size.
            ("initial_read_buffer_size", |v| match u32_value(v) {
                Some(n) if n > 0 && n <= 65536 => Ok(()),
                _ => Err("expected an integer from 1 to 65536".into()),
            }),
        ],
    );
}

/// A listener's HTTP chains must agree on whether HTTP/2 is served (their
/// `codec_type`) and on their `http2_protocol_options`: Pingora sets both
/// per service, and a listener is one service, so a chain of its own would
/// be served with the first chain's (an HTTP/1-only chain answering the h2c
/// preface with HTTP/2, another chain's stream limits and windows).
fn same_http_protocols(cx: &mut Ctx, built: &[(P, Option<ChainMatch>, Chain)]) {
    let mut first: Option<(&P, bool, Http2Settings)> = None;
    for (cp, _, chain) in built {
        let Some(Serves::Http(h)) = &chain.serves else { continue };
        let h2 = h.codec != Codec::Http1;
        let http2 = if h2 { h.http2 } else { Http2Settings::default() };
        let Some((fp, f_h2, f_http2)) = first else {
            first = Some((cp, h2, http2));
            continue;
        };
        if h2 != f_h2 {
            cx.error(
                cp,
                format!("this chain's http_connection_manager {} HTTP/2 (codec_type) and {}'s {}: the chains of one listener must agree on codec_type being HTTP1 or not (they share one HTTP/2 server); put them on separate listeners", if h2 { "serves" } else { "does not serve" }, fp.0, if f_h2 { "does" } else { "does not" }),
            );
        } else if http2 != f_http2 {
            cx.error(
                cp,
                format!("this chain's http2_protocol_options differ from {}'s: the chains of one listener share one HTTP/2 server and its settings; give them the same options or put them on separate listeners", fp.0),
            );
        }
    }
}

/// What a filter chain configures.
struct Chain {
    /// `None` when the transport socket is invalid; `Some(None)` for plain text.
    tls: Option<Option<DownstreamTls>>,
    /// The terminal filter, once valid.
    serves: Option<Serves>,
    max_connections: Option<u64>,
    handshake_timeout: Option<Duration>,
}

fn filter_chain(cx: &mut Ctx, p: &P, chain: &raw::FilterChain, clusters: &HashMap<String, usize>) -> Chain {
    cx.other(p, chain, &["metadata"]);
    // Envoy's default, and `0s`, set no bound: the proxy keeps its own.
    let handshake_timeout = cx
        .duration(p, "transport_socket_connect_timeout", &chain.transport_socket_connect_timeout)
        .filter(|t| !t.is_zero());
    let _ = cx.opt(p, "name", &chain.name);
    let tls = match cx.opt(p, "transport_socket", &chain.transport_socket) {
        None => Some(None),
        Some(ts) => downstream_tls(cx, &p.key("transport_socket"), ts).map(Some),
    };
    let filters = cx.list(p, "filters", &chain.filters);
    if chain.filters.is_none() || filters.is_empty() {
        cx.error(&p.key("filters"), "an http_connection_manager or tcp_proxy filter is required");
    }
    let mut out = Chain { tls, serves: None, max_connections: None, handshake_timeout };
    for (i, (fp, filter)) in filters.iter().enumerate() {
        cx.other(fp, *filter, &[]);
        let name = cx.string(fp, "name", &filter.name).unwrap_or_default();
        let Some(tc) = cx.opt(fp, "typed_config", &filter.typed_config) else {
            if filter.typed_config.is_none() {
                cx.error(&fp.key("typed_config"), "required field is missing");
            }
            continue;
        };
        let type_url = tc.get("@type").and_then(|v| v.as_str()).unwrap_or_default();
        let tp = fp.key("typed_config");
        if name == CONNECTION_LIMIT_NAME || type_url == CONNECTION_LIMIT_TYPE {
            if i == filters.len() - 1 {
                cx.error(fp, "connection_limit must come before http_connection_manager or tcp_proxy");
            }
            out.max_connections = connection_limit(cx, &tp, tc);
            continue;
        }
        if TCP_PROXY_NAMES.contains(&name.as_str()) || type_url == TCP_PROXY_TYPE {
            if i != filters.len() - 1 {
                cx.error(fp, "tcp_proxy must be the last network filter");
            }
            if !type_url.is_empty() && type_url != TCP_PROXY_TYPE {
                cx.error(&tp.key("@type"), format!("expected {TCP_PROXY_TYPE}"));
            }
            out.serves = tcp_proxy(cx, &tp, tc, clusters).map(|t| Serves::Tcp(Arc::new(t)));
            continue;
        }
        if !(HCM_NAMES.contains(&name.as_str()) || type_url == HCM_TYPE) {
            cx.error(
                fp,
                format!("network filter {name:?} is not supported: only envoy.filters.network.http_connection_manager and envoy.filters.network.tcp_proxy (and connection_limit before either) are"),
            );
            continue;
        }
        if i != filters.len() - 1 {
            cx.error(fp, "http_connection_manager must be the last network filter");
        }
        match Field::<raw::HttpConnectionManager>::from_value(tc.clone()) {
            Field::Ok(raw) => {
                out.serves = connection_manager(cx, &tp, &raw, clusters).map(|h| Serves::Http(Box::new(h)))
            }
            Field::Invalid(msg) => cx.error(&tp, msg),
        }
    }
    out
}

fn connection_limit(cx: &mut Ctx, p: &P, tc: &serde_yaml::Value) -> Option<u64> {
    let c = cx.typed::<raw::ConnectionLimit>(p, tc)?;
    cx.other(p, &c, &[]);
    let _ = cx.opt(p, "@type", &c.type_url);
    cx.req(p, "stat_prefix", &c.stat_prefix);
    let max = cx.req(p, "max_connections", &c.max_connections).copied()?;
    if max == 0 {
        cx.error(&p.key("max_connections"), "must be at least 1");
        return None;
    }
    Some(max)
}
