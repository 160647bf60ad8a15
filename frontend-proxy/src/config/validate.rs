//! Raw bootstrap → runtime model. Collects every problem with its YAML path.
//!
//! Policy for fields frontend-proxy does not implement: if ignoring the field
//! cannot change what traffic does (logging, stats sinks, buffer tuning), it
//! is ignored with a warning; otherwise it is an error. Unknown fields are
//! errors, as in Envoy.

mod access_log;
mod action;
mod cluster;
mod context;
mod dns;
mod filter_chain_match;
mod hcm;
mod headers;
mod listener;
mod protocol;
mod resilience;
mod route;
mod secret;
mod tcp;
mod tls;
mod upgrade;
mod validation_context;

use super::model::{Address, AdminConfig, Bootstrap};
use super::raw::{self, Field};
use super::{Diagnostic, LoadError};
use crate::tls::{SdsFile, Secret};
use serde_yaml::Value;
use std::collections::HashMap;

use context::{decode_base64, suggestion, Ctx, DataSourceValue, P};

/// Envoy fields accepted and ignored with a warning.
const BOOTSTRAP_IGNORED: &[&str] = &[
    "stats_sinks",
    "stats_config",
    "stats_flush_interval",
    "watchdog",
    "watchdogs",
    "cluster_manager",
    "tracing",
    "fatal_actions",
    "enable_dispatcher_stats",
    "application_log_config",
    "stats_server_version_override",
];

/// The validated bootstrap and the warnings, or every error.
pub(super) fn bootstrap(raw: &raw::Bootstrap) -> Result<(Bootstrap, Vec<Diagnostic>), LoadError> {
    let mut cx = Ctx::default();
    let root = P::root();
    cx.other(&root, raw, BOOTSTRAP_IGNORED);
    // `node` only names this proxy to a control plane: nothing to check.
    let _ = cx.opt(&root, "node", &raw.node);
    global_connection_limits(&mut cx, &root, raw);
    cx.static_runtime = static_runtime_layers(raw);

    let admin = cx.opt(&root, "admin", &raw.admin).and_then(|a| admin(&mut cx, &root.key("admin"), a));

    let sp = root.key("static_resources");
    let (listeners, clusters) = match cx.opt(&root, "static_resources", &raw.static_resources) {
        Some(sr) => {
            cx.other(&sp, sr, &[]);
            cx.secrets = secret::static_secrets(&mut cx, &sp, &sr.secrets);
            let clusters = cluster::clusters(&mut cx, &sp, &sr.clusters);
            let ids: HashMap<String, usize> = clusters.iter().enumerate().map(|(i, c)| (c.name.clone(), i)).collect();
            cx.tls_clusters = clusters.iter().filter(|c| c.tls.is_some()).map(|c| c.name.clone()).collect();
            let listeners = listener::listeners(&mut cx, &sp, &sr.listeners, &ids);
            (listeners, clusters)
        }
        None => (Vec::new(), Vec::new()),
    };
    if listeners.is_empty() && cx.errors.is_empty() {
        cx.warn(&sp.key("listeners"), "no listeners: the proxy will serve nothing");
    }
    if let Some(a) = &admin {
        if let Some(l) = listeners.iter().find(|l| conflicts(&l.address, &Address::Ip(a.address))) {
            cx.error(&root.key("admin").key("address"), format!("{} is also used by listener {:?}", a.address, l.name));
        }
    }
    if !cx.errors.is_empty() {
        return Err(LoadError::Invalid(cx.errors));
    }
    Ok((Bootstrap { admin, listeners, clusters }, cx.warnings))
}

/// Reads the secret an SDS file holds (for the watcher that reloads it):
/// every problem, with its path in the file, in one message.
pub(super) fn read_secret(file: &SdsFile) -> Result<Secret, String> {
    secret::read_file(file)
}

/// The static layers of `layered_runtime`, each with its path.
fn static_runtime_layers(raw: &raw::Bootstrap) -> Vec<(P, Value)> {
    let Some(Field::Ok(rt)) = &raw.layered_runtime else { return Vec::new() };
    let layers = rt.get("layers").and_then(Value::as_sequence).map(Vec::as_slice).unwrap_or_default();
    let lp = P::root().key("layered_runtime").key("layers");
    layers
        .iter()
        .enumerate()
        .filter_map(|(i, l)| Some((lp.idx(i).key("static_layer"), l.get("static_layer")?.clone())))
        .collect()
}

impl Ctx {
    /// Where a static runtime layer sets `key` (written flat, `a.b.c`,
    /// nested, or anything between), if one does.
    pub fn runtime_key_set_at(&self, key: &str) -> Option<P> {
        fn has(v: &Value, parts: &[&str]) -> bool {
            (1..=parts.len()).any(|i| match v.get(parts[..i].join(".")) {
                Some(_) if i == parts.len() => true,
                Some(inner) => has(inner, &parts[i..]),
                None => false,
            })
        }
        let parts: Vec<&str> = key.split('.').collect();
        self.static_runtime.iter().find(|(_, layer)| has(layer, &parts)).map(|(p, _)| p.clone())
    }
}

/// Envoy's process-wide downstream connection limit, set by the runtime key
/// `overload.global_downstream_max_connections` or the overload manager's
/// `global_downstream_max_connections` resource monitor, is not
/// implemented (only per-listener `connection_limit` is): either is an
/// error. Runtime layers and overload settings without it are ignored with
/// a warning.
fn global_connection_limits(cx: &mut Ctx, root: &P, raw: &raw::Bootstrap) {
    const KEY: &str = "overload.global_downstream_max_connections";
    const MONITOR: &str = "envoy.resource_monitors.global_downstream_max_connections";
    const UNSUPPORTED: &str =
        "a process-wide downstream connection limit is not supported (use the envoy.filters.network.connection_limit filter on each listener)";
    const PER_LISTENER: &str =
        "a listener connection limit from the runtime is not supported (use the envoy.filters.network.connection_limit filter on the listener)";
    let ignored = "ignored: frontend-proxy does not implement this field, and ignoring it does not change how requests are routed or answered";
    if let Some(rt) = cx.opt(root, "layered_runtime", &raw.layered_runtime) {
        let rp = root.key("layered_runtime");
        let mut limited = false;
        let layers = repeated(rt.get("layers"));
        for (i, layer) in layers.iter().enumerate() {
            let Some(static_layer) = layer.get("static_layer") else {
                continue;
            };
            let sp = rp.key("layers").idx(i).key("static_layer");
            // Runtime keys are dotted, written flat or as nested mappings
            // (or both at once): compare them flattened.
            let mut keys = Vec::new();
            runtime_keys(String::new(), static_layer, &mut keys);
            for key in keys {
                let per_listener = key
                    .strip_prefix("envoy.resource_limits.listener.")
                    .is_some_and(|rest| rest.ends_with(".connection_limit"));
                if key == KEY {
                    cx.error(&sp.key(&key), UNSUPPORTED);
                    limited = true;
                } else if per_listener {
                    cx.error(&sp.key(&key), PER_LISTENER);
                    limited = true;
                }
            }
        }
        if !limited {
            cx.warn(&rp, ignored);
        }
    }
    if let Some(om) = cx.opt(root, "overload_manager", &raw.overload_manager) {
        let op = root.key("overload_manager");
        let mut limited = false;
        let monitors = repeated(om.get("resource_monitors"));
        for (i, m) in monitors.iter().enumerate() {
            let name = m.get("name").and_then(Value::as_str).unwrap_or_default();
            let type_url =
                m.get("typed_config").and_then(|t| t.get("@type")).and_then(Value::as_str).unwrap_or_default();
            let max = m.get("typed_config").and_then(|t| t.get("max_active_downstream_connections"));
            if name == MONITOR || type_url.contains("DownstreamConnectionsConfig") || max.is_some() {
                cx.error(&op.key("resource_monitors").idx(i), UNSUPPORTED);
                limited = true;
            }
        }
        if !limited {
            cx.warn(&op, ignored);
        }
    }
}

/// The entries of a repeated field read from a free-form value: a list,
/// or a single value standing for a list of one, as Envoy reads it.
fn repeated(v: Option<&Value>) -> Vec<&Value> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => items.iter().collect(),
        Some(single) => vec![single],
    }
}

/// The dotted runtime keys a static layer sets (`a: {b: 1}` is `a.b`).
fn runtime_keys(prefix: String, v: &Value, out: &mut Vec<String>) {
    match v.as_mapping() {
        Some(map) => {
            for (k, v) in map {
                let k = k.as_str().map_or_else(|| format!("{k:?}"), str::to_string);
                runtime_keys(if prefix.is_empty() { k } else { format!("{prefix}.{k}") }, v, out);
            }
        }
        None => out.push(prefix),
    }
}

fn admin(cx: &mut Ctx, p: &P, a: &raw::Admin) -> Option<AdminConfig> {
    cx.other(p, a, &["access_log_path", "access_log", "profile_path"]);
    // An admin block without an address disables the admin interface, as in Envoy.
    a.address.as_ref()?;
    let address = cx.ip_socket_address(p, "address", &a.address)?;
    let ipv4_compat = match &a.address {
        Some(Field::Ok(a)) => match &a.socket_address {
            Some(Field::Ok(sa)) => matches!(sa.ipv4_compat, Some(Field::Ok(true))),
            _ => false,
        },
        _ => false,
    };
    Some(AdminConfig { address, ipv4_compat })
}

/// Whether two listen addresses would collide when bound.
pub(super) fn conflicts(a: &Address, b: &Address) -> bool {
    let (a, b) = match (a, b) {
        (Address::Ip(a), Address::Ip(b)) => (*a, *b),
        (Address::Pipe(a), Address::Pipe(b)) => return a.path == b.path,
        _ => return false,
    };
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    a.ip() == b.ip()
        || (a.ip().is_unspecified() && a.is_ipv4() == b.is_ipv4())
        || (b.ip().is_unspecified() && a.is_ipv4() == b.is_ipv4())
}

#[cfg(test)]
mod tests {
    use super::super::model::Pipe;
    use super::*;
    use std::sync::Arc;

    #[test]
    fn address_conflicts() {
        let ip = |s: &str| Address::Ip(s.parse().unwrap());
        let (a, b, c) = (ip("0.0.0.0:80"), ip("127.0.0.1:80"), ip("127.0.0.2:80"));
        assert!(conflicts(&a, &b));
        assert!(!conflicts(&b, &c));
        assert!(conflicts(&b, &b));
        assert!(!conflicts(&ip("127.0.0.1:0"), &ip("127.0.0.1:0")));
        let pipe = |path: &str| Address::Pipe(Arc::new(Pipe { path: path.into(), mode: 0 }));
        assert!(conflicts(&pipe("/run/a.sock"), &pipe("/run/a.sock")));
        assert!(!conflicts(&pipe("/run/a.sock"), &pipe("@a.sock")));
        assert!(!conflicts(&pipe("/run/a.sock"), &b));
    }
}
