//! Listeners, their filter chains (SNI) and downstream TLS; the HTTP
//! connection manager a chain runs is `hcm.rs`'s, a TCP proxy `tcp.rs`'s.

use super::hcm::{connection_manager, HCM_TYPE};
use super::tcp::{tcp_proxy, TCP_PROXY_NAMES, TCP_PROXY_TYPE};
use super::tls::downstream_tls;
use super::{conflicts, Ctx, P};
use crate::config::model::{ChainConfig, ListenerConfig, Serves};
use crate::config::raw::{self, Field, List};
use crate::tls::{DownstreamTls, ListenerTls, TlsChain};
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
        if listener.address.pipe().is_some() && listener.tls.is_some() {
            cx.error(
                &lp.key("filter_chains"),
                "TLS on a pipe (Unix domain socket) listener is not supported yet; its filter chains must be plaintext",
            );
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
            "continue_on_listener_filters_timeout",
            "listener_filters_timeout",
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
    for (fp, filter) in cx.list(p, "listener_filters", &l.listener_filters) {
        let fname = cx.string(&fp, "name", &filter.name).unwrap_or_default();
        match fname.as_str() {
            // The accept loop reads the SNI in the ClientHello itself.
            "envoy.filters.listener.tls_inspector" => inspector = true,
            "envoy.filters.listener.http_inspector" => {
                cx.warn(&fp, format!("{fname} is not needed (no filter chain matches application_protocols); ignored"))
            }
            _ => cx.error(&fp, format!("listener filter {fname:?} is not supported")),
        }
    }

    let chains = cx.list(p, "filter_chains", &l.filter_chains);
    if l.filter_chains.is_none() {
        cx.error(&p.key("filter_chains"), "required field is missing");
    }
    let mut built = Vec::new();
    for (cp, raw_chain) in chains {
        let names = chain_match(cx, &cp, raw_chain);
        let chain = filter_chain(cx, &cp, raw_chain, clusters);
        built.push((cp, raw_chain, names, chain));
    }
    let mut default_chain = None;
    if let Some(raw_chain) = cx.opt(p, "default_filter_chain", &l.default_filter_chain) {
        let dp = p.key("default_filter_chain");
        if raw_chain.filter_chain_match.is_some() {
            cx.error(&dp.key("filter_chain_match"), "a default filter chain has no match");
        }
        let chain = filter_chain(cx, &dp, raw_chain, clusters);
        default_chain = Some(built.len());
        built.push((dp, raw_chain, Some(Vec::new()), chain));
    }
    if built.is_empty() {
        return None;
    }
    let several = built.len() > 1;
    if several {
        several_chains(cx, &built, default_chain);
    }
    if several && !inspector {
        // Envoy sees no SNI without it: every TLS client would take the
        // chain without server names (or none). Refused rather than served
        // otherwise than Envoy would.
        cx.error(
            &p.key("listener_filters"),
            "filter chains selected by server_names need the envoy.filters.listener.tls_inspector listener filter (without it Envoy sees no SNI)",
        );
    }
    let address = address?;
    let mut tls_chains = Vec::new();
    let mut served = Vec::new();
    let mut first_tls = None;
    let mut complete = true;
    // The handshake's bound applies before SNI picks a chain: one for the listener.
    let handshake_timeout = built[0].3.handshake_timeout;
    if built.iter().any(|(_, _, _, c)| c.handshake_timeout != handshake_timeout) {
        cx.error(
            &p.key("filter_chains"),
            "every filter chain must have the same transport_socket_connect_timeout: the handshake is bounded before SNI chooses a chain",
        );
        complete = false;
    }
    for (_, _, names, chain) in built {
        match (names, chain.tls) {
            (Some(server_names), Some(Some(t))) => {
                tls_chains.push(TlsChain {
                    server_names,
                    certificates: t.certificates.clone(),
                    certificate_secrets: t.certificate_secrets.clone(),
                });
                if first_tls.as_ref().is_some_and(|f: &DownstreamTls| f.sessions != t.sessions) {
                    cx.error(
                        &p.key("filter_chains"),
                        "every filter chain must have the same session settings (session_timeout, disable_*_session_resumption, session_ticket_keys): one TLS acceptor serves the listener",
                    );
                    complete = false;
                }
                first_tls.get_or_insert(t);
            }
            (Some(_), Some(None)) if !several => {}
            _ => complete = false,
        }
        match chain.serves {
            Some(serves) => served.push(ChainConfig { serves, max_connections: chain.max_connections }),
            None => complete = false,
        }
    }
    if !complete || served.is_empty() {
        return None;
    }
    let tls = first_tls.map(|t| ListenerTls {
        chains: tls_chains,
        default_chain,
        alpn_protocols: t.alpn_protocols,
        client: t.client,
        params: t.params,
        sessions: t.sessions,
    });
    let first = served.remove(0);
    Some(ListenerConfig {
        // Unnamed listeners are named by `listeners`.
        name: name.unwrap_or_default(),
        address,
        tls,
        serves: first.serves,
        max_connections: first.max_connections,
        reuse_port,
        handshake_timeout,
        ipv4_compat,
        other_chains: served,
    })
}

/// `filter_chain_match`: the server names that select the chain
/// (lowercase, as SNI is compared), or `None` when the match is invalid.
/// Envoy's other criteria come after server names in its order, or before
/// it on what one listener address always has; they are refused until
/// supported, not ignored.
fn chain_match(cx: &mut Ctx, p: &P, chain: &raw::FilterChain) -> Option<Vec<String>> {
    let Some(m) = cx.opt(p, "filter_chain_match", &chain.filter_chain_match) else {
        return Some(Vec::new());
    };
    let mp = p.key("filter_chain_match");
    if m.is_null() {
        return Some(Vec::new());
    }
    let Some(map) = m.as_mapping() else {
        cx.error(&mp, "expected a mapping");
        return None;
    };
    let mut names = Some(Vec::new());
    for (k, v) in map {
        let key = k.as_str().unwrap_or_default();
        let kp = mp.key(key);
        match key {
            "server_names" => {
                // Protobuf's JSON mapping takes one value for a list too.
                let items = match v {
                    serde_yaml::Value::Sequence(items) => items.clone(),
                    one => vec![one.clone()],
                };
                for (i, item) in items.iter().enumerate() {
                    let ip = kp.idx(i);
                    match item.as_str() {
                        Some(n) if valid_server_name(n) => {
                            if let Some(names) = names.as_mut() {
                                names.push(n.to_ascii_lowercase());
                            }
                        }
                        _ => {
                            cx.error(&ip, "expected a server name, exact or with a leading `*.` wildcard");
                            names = None;
                        }
                    }
                }
            }
            "transport_protocol" => match v.as_str() {
                Some("tls") if chain.transport_socket.is_some() => {}
                Some("tls") => {
                    cx.error(&kp, "a plaintext filter chain cannot match TLS connections");
                    names = None;
                }
                _ => {
                    cx.error(
                        &kp,
                        "only `tls` is supported (plaintext and TLS filter chains on one listener are not supported yet)",
                    );
                    names = None;
                }
            },
            _ => {
                cx.error(
                    &kp,
                    "not supported (filter chains are matched by server_names and transport_protocol: tls only)",
                );
                names = None;
            }
        }
    }
    names
}

/// An exact DNS name or `*.` and one: Envoy's wildcard is a leading label only.
fn valid_server_name(n: &str) -> bool {
    let exact = n.strip_prefix("*.").unwrap_or(n);
    !exact.is_empty()
        && !exact.starts_with('.')
        && !exact.ends_with('.')
        && !exact.contains("..")
        && exact.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
}

/// What several filter chains on one listener must satisfy today: all TLS,
/// one handshake configuration (only certificates differ), and no two
/// chains matching the same name.
fn several_chains(
    cx: &mut Ctx,
    built: &[(P, &raw::FilterChain, Option<Vec<String>>, Chain)],
    default_chain: Option<usize>,
) {
    let Some((_, _, _, first)) = built.first() else { return };
    let first_tls = match &first.tls {
        Some(Some(t)) => Some((t.alpn_protocols.clone(), t.params.clone(), t.client.clone())),
        _ => None,
    };
    let mut seen: Vec<(String, &P)> = Vec::new();
    let mut catch_all: Option<&P> = None;
    for (i, (cp, _, names, chain)) in built.iter().enumerate() {
        if matches!(chain.tls, Some(None)) {
            cx.error(
                &cp.key("transport_socket"),
                "several filter chains are supported on TLS listeners only (plaintext and TLS chains on one listener are not supported yet)",
            );
        }
        if let (Some(Some(t)), Some((alpn, params, client))) = (&chain.tls, &first_tls) {
            if i > 0 && (&t.alpn_protocols != alpn || &t.params != params || &t.client != client) {
                cx.error(
                    &cp.key("transport_socket"),
                    "alpn_protocols, tls_params, validation_context and require_client_certificate must be the same on every filter chain of a listener (only certificates may differ)",
                );
            }
        }
        if Some(i) == default_chain {
            continue;
        }
        let Some(names) = names else { continue };
        if names.is_empty() {
            if let Some(other) = catch_all {
                cx.error(
                    &cp.key("filter_chain_match"),
                    format!("{} has the same match (no server_names): Envoy refuses this", other.0),
                );
            }
            catch_all = Some(cp);
        }
        for n in names {
            if let Some((_, other)) = seen.iter().find(|(s, _)| s == n) {
                cx.error(
                    &cp.key("filter_chain_match").key("server_names"),
                    format!("server name {n:?} is matched by {} too: Envoy refuses this", other.0),
                );
            } else {
                seen.push((n.clone(), cp));
            }
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
