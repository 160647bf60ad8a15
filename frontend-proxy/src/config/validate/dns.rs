//! DNS settings of a cluster: refresh rates, lookup family, and the
//! resolvers to ask (c-ares typed config, `dns_resolution_config`, or the
//! deprecated `dns_resolvers`).

use super::action::back_off;
use super::{Ctx, P};
use crate::config::raw::{self, Field, List};
use crate::upstream::{DnsSpec, LookupFamily};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Envoy's default.
const DEFAULT_DNS_REFRESH_RATE: Duration = Duration::from_secs(5);

const CARES_NAME: &str = "envoy.network.dns_resolver.cares";
const CARES_TYPE: &str = "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig";

pub(super) fn dns_spec(cx: &mut Ctx, p: &P, c: &raw::Cluster) -> Option<DnsSpec> {
    let refresh_rate = cx.duration(p, "dns_refresh_rate", &c.dns_refresh_rate).unwrap_or(DEFAULT_DNS_REFRESH_RATE);
    if refresh_rate < Duration::from_millis(1) {
        cx.error(&p.key("dns_refresh_rate"), "must be at least 1ms");
    }
    let failure_refresh = match cx.opt(p, "dns_failure_refresh_rate", &c.dns_failure_refresh_rate) {
        Some(b) => back_off(cx, &p.key("dns_failure_refresh_rate"), b, refresh_rate)?,
        None => (refresh_rate, refresh_rate),
    };
    let lookup_family = cx.enumeration(
        p,
        "dns_lookup_family",
        &c.dns_lookup_family,
        &[
            ("AUTO", LookupFamily::Auto),
            ("V4_ONLY", LookupFamily::V4Only),
            ("V6_ONLY", LookupFamily::V6Only),
            ("V4_PREFERRED", LookupFamily::V4Preferred),
            ("ALL", LookupFamily::All),
        ],
        LookupFamily::Auto,
    );
    let sources = [c.typed_dns_resolver_config.is_some(), c.dns_resolvers.is_some(), c.dns_resolution_config.is_some()];
    if sources.iter().filter(|s| **s).count() > 1 {
        cx.error(p, "set only one of `typed_dns_resolver_config`, `dns_resolution_config`, `dns_resolvers`");
    }
    let mut resolvers = Vec::new();
    if let Some(t) = cx.opt(p, "typed_dns_resolver_config", &c.typed_dns_resolver_config) {
        resolvers = cares_resolvers(cx, &p.key("typed_dns_resolver_config"), t);
    }
    if c.dns_resolvers.is_some() {
        resolvers = resolver_list(cx, p, "dns_resolvers", &c.dns_resolvers);
    }
    if let Some(r) = cx.opt(p, "dns_resolution_config", &c.dns_resolution_config) {
        let rp = p.key("dns_resolution_config");
        cx.other(&rp, r, &["dns_resolver_options"]);
        resolvers = resolver_list(cx, &rp, "resolvers", &r.resolvers);
    }
    Some(DnsSpec {
        refresh_rate,
        failure_refresh,
        respect_ttl: cx.boolean(p, "respect_dns_ttl", &c.respect_dns_ttl, false),
        lookup_family,
        resolvers,
    })
}

fn cares_resolvers(cx: &mut Ctx, p: &P, t: &raw::TypedExtension) -> Vec<SocketAddr> {
    cx.other(p, t, &[]);
    let name = cx.string(p, "name", &t.name).unwrap_or_default();
    let Some(tc) = cx.req(p, "typed_config", &t.typed_config) else {
        return Vec::new();
    };
    let type_url = tc.get("@type").and_then(|v| v.as_str()).unwrap_or_default();
    if name != CARES_NAME && type_url != CARES_TYPE {
        cx.error(p, format!("DNS resolver {name:?} is not supported: only {CARES_NAME} is"));
        return Vec::new();
    }
    let tp = p.key("typed_config");
    let cfg = match Field::<raw::CaresDnsResolverConfig>::from_value(tc.clone()) {
        Field::Ok(c) => c,
        Field::Invalid(msg) => {
            cx.error(&tp, msg);
            return Vec::new();
        }
    };
    cx.other(
        &tp,
        &cfg,
        &[
            "dns_resolver_options",
            "filter_unroutable_families",
            "udp_max_queries",
            "query_timeout_seconds",
            "query_tries",
            "rotate_nameservers",
            "edns0_max_payload_size",
        ],
    );
    if cx.opt(&tp, "@type", &cfg.type_url).is_some_and(|t| t != CARES_TYPE) {
        cx.error(&tp.key("@type"), format!("expected {CARES_TYPE}"));
    }
    if cx.boolean(&tp, "use_resolvers_as_fallback", &cfg.use_resolvers_as_fallback, false) {
        cx.error(&tp.key("use_resolvers_as_fallback"), "not supported: the listed resolvers are always used");
    }
    resolver_list(cx, &tp, "resolvers", &cfg.resolvers)
}

fn resolver_list(cx: &mut Ctx, p: &P, name: &str, f: &Option<List<raw::Address>>) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    let list = cx.list(p, name, f);
    if f.is_some() && list.is_empty() {
        cx.error(&p.key(name), "must list at least one resolver");
    }
    for (rp, addr) in list {
        let Some((host, port)) = cx.socket_address(&rp, addr) else {
            continue;
        };
        match host.parse::<IpAddr>() {
            Ok(ip) => out.push(SocketAddr::new(ip, if port == 0 { 53 } else { port })),
            Err(_) => cx
                .error(&rp.key("socket_address").key("address"), format!("{host:?}: a resolver must be an IP address")),
        }
    }
    out
}
