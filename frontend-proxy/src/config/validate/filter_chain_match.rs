//! A filter chain's `filter_chain_match`, and the listener-wide rule that
//! no two chains match the same connection; choosing a chain at run time is
//! `crate::chain_match`'s.

use super::{Ctx, P};
use crate::chain_match::{ChainMatch, Cidr, MatchKey, SourceType};
use crate::config::raw;
use std::collections::HashMap;

/// `filter_chain_match`, or `None` when it is invalid. Server names are
/// lowercase, as SNI is compared.
pub(super) fn chain_match(cx: &mut Ctx, p: &P, chain: &raw::FilterChain) -> Option<ChainMatch> {
    let Some(m) = cx.opt(p, "filter_chain_match", &chain.filter_chain_match) else {
        return Some(ChainMatch::default());
    };
    let mp = p.key("filter_chain_match");
    if m.is_null() {
        return Some(ChainMatch::default());
    }
    let Some(map) = m.as_mapping() else {
        cx.error(&mp, "expected a mapping");
        return None;
    };
    let mut out = ChainMatch::default();
    let mut valid = true;
    for (k, v) in map {
        let key = k.as_str().unwrap_or_default();
        let kp = mp.key(key);
        // Protobuf's JSON mapping takes one value for a list too.
        let items = match v {
            serde_yaml::Value::Sequence(items) => items.clone(),
            serde_yaml::Value::Null => Vec::new(),
            one => vec![one.clone()],
        };
        let mut bad = |cx: &mut Ctx, p: &P, msg: &str| {
            cx.error(p, msg.to_string());
            valid = false;
        };
        match key {
            "server_names" => {
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some(n) if valid_server_name(n) => out.server_names.push(n.to_ascii_lowercase()),
                        _ => bad(cx, &kp.idx(i), "expected a server name, exact or with a leading `*.` wildcard"),
                    }
                }
            }
            "transport_protocol" => match v.as_str() {
                Some(t @ ("tls" | "raw_buffer")) => out.transport_protocol = Some(t.to_string()),
                Some("") => {}
                _ => bad(cx, &kp, "expected `tls` or `raw_buffer` (what tls_inspector tells apart)"),
            },
            "application_protocols" => {
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some(a) if !a.is_empty() => out.application_protocols.push(a.to_string()),
                        _ => bad(cx, &kp.idx(i), "expected a protocol name"),
                    }
                }
            }
            "destination_port" => match port(v) {
                Some(port) => out.destination_port = Some(port),
                None => bad(cx, &kp, "expected a port, 1 to 65535"),
            },
            "source_ports" => {
                for (i, item) in items.iter().enumerate() {
                    match port(item) {
                        Some(port) => out.source_ports.push(port),
                        None => bad(cx, &kp.idx(i), "expected a port, 1 to 65535"),
                    }
                }
            }
            "prefix_ranges" | "direct_source_prefix_ranges" | "source_prefix_ranges" => {
                let mut ranges = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match cidr(item) {
                        Ok(c) => ranges.push(c),
                        Err(msg) => bad(cx, &kp.idx(i), &msg),
                    }
                }
                match key {
                    "prefix_ranges" => out.prefix_ranges = ranges,
                    "direct_source_prefix_ranges" => out.direct_source_prefix_ranges = ranges,
                    _ => out.source_prefix_ranges = ranges,
                }
            }
            "source_type" => match v {
                serde_yaml::Value::String(s) if s == "ANY" => out.source_type = SourceType::Any,
                serde_yaml::Value::String(s) if s == "SAME_IP_OR_LOOPBACK" => out.source_type = SourceType::Local,
                serde_yaml::Value::String(s) if s == "EXTERNAL" => out.source_type = SourceType::External,
                serde_yaml::Value::Number(n) if n.as_u64() == Some(0) => out.source_type = SourceType::Any,
                serde_yaml::Value::Number(n) if n.as_u64() == Some(1) => out.source_type = SourceType::Local,
                serde_yaml::Value::Number(n) if n.as_u64() == Some(2) => out.source_type = SourceType::External,
                _ => bad(cx, &kp, "expected ANY, SAME_IP_OR_LOOPBACK or EXTERNAL"),
            },
            "address_suffix" | "suffix_len" => bad(cx, &kp, "not implemented by Envoy either (it refuses a listener using it)"),
            _ => bad(
                cx,
                &kp,
                "unknown field of filter_chain_match (destination_port, prefix_ranges, server_names, transport_protocol, application_protocols, direct_source_prefix_ranges, source_type, source_prefix_ranges, source_ports)",
            ),
        }
    }
    valid.then_some(out)
}

/// A port number, 1 to 65535 (a number, or a string of one as protobuf's JSON allows).
fn port(v: &serde_yaml::Value) -> Option<u16> {
    let n = match v {
        serde_yaml::Value::Number(n) => n.as_u64()?,
        serde_yaml::Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    u16::try_from(n).ok().filter(|p| *p != 0)
}

/// `{address_prefix, prefix_len}`.
fn cidr(v: &serde_yaml::Value) -> Result<Cidr, String> {
    let Some(map) = v.as_mapping() else { return Err("expected {address_prefix, prefix_len}".into()) };
    let mut addr = None;
    let mut len = 0u64;
    for (k, v) in map {
        match k.as_str().unwrap_or_default() {
            "address_prefix" => addr = v.as_str().and_then(|a| a.parse::<std::net::IpAddr>().ok()),
            "prefix_len" => {
                len = match v {
                    serde_yaml::Value::Number(n) => n.as_u64(),
                    serde_yaml::Value::String(s) => s.parse().ok(),
                    serde_yaml::Value::Mapping(m) => m.get("value").and_then(|v| v.as_u64()),
                    _ => None,
                }
                .ok_or("prefix_len: expected a number")?
            }
            other => return Err(format!("unknown field {other:?} of a CIDR range")),
        }
    }
    let addr = addr.ok_or("address_prefix: expected an IP address")?;
    u8::try_from(len)
        .ok()
        .and_then(|l| Cidr::new(addr, l))
        .ok_or_else(|| format!("prefix_len {len} is longer than the address"))
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

/// Envoy refuses a listener where two filter chains have the same match
/// (for some combination of their criteria's values).
pub(super) fn same_matches(cx: &mut Ctx, chains: &[(&P, Option<&ChainMatch>)], default_chain: Option<usize>) {
    let mut seen: HashMap<MatchKey, &P> = HashMap::new();
    for (i, &(cp, m)) in chains.iter().enumerate() {
        let Some(m) = m.filter(|_| Some(i) != default_chain) else { continue };
        let Some(keys) = m.keys(MAX_MATCH_COMBINATIONS) else {
            cx.error(
                &cp.key("filter_chain_match"),
                format!("more than {MAX_MATCH_COMBINATIONS} combinations of criteria; split the chain"),
            );
            continue;
        };
        for key in keys {
            if let Some(other) = seen.get(&key) {
                let message = if std::ptr::eq(*other, cp) {
                    "a value is listed twice in this chain's criteria (server names compare case-insensitively, addresses after masking to their prefix_len): Envoy refuses the repeated match".to_string()
                } else {
                    format!("{} has the same match: Envoy refuses two filter chains with the same match", other.0)
                };
                cx.error(&cp.key("filter_chain_match"), message);
                break;
            }
            seen.insert(key, cp);
        }
    }
}

/// Beyond this, a chain's lists are refused rather than compared.
const MAX_MATCH_COMBINATIONS: usize = 1 << 16;
