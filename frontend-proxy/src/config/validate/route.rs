//! Route configuration: virtual hosts, routes, matches, actions, header edits.

use super::listener::upgrade_config;
use super::{Ctx, DataSourceValue, Fields, P};
use crate::config::raw::{self, List};
use crate::routing::{
    Action, ClusterChoice, DirectResponse, DomainPattern, Forward, HashPolicy, HeaderAppend, HeaderMatch,
    HeaderMatcher, HeaderMutations, HeaderToAdd, HeaderValueFormat, HostRewrite, PathMatch, PortMatching, Redirect,
    RequireTls, RetryOn, RetryPolicy, Route, RouteMatch, RouteTable, StringMatch, VirtualHost,
};
use bytes::Bytes;
use http::header::HeaderName;
use http::StatusCode;
use regex::Regex;
use std::collections::HashMap;
use std::time::Duration;

/// Envoy's default route timeout.
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
/// Envoy's default retry back-off base interval.
const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);
/// Envoy caps direct response bodies at 4 KiB by default.
const MAX_DIRECT_RESPONSE_BODY: usize = 4096;

pub(super) fn route_configuration(
    cx: &mut Ctx,
    p: &P,
    rc: &raw::RouteConfiguration,
    clusters: &HashMap<String, usize>,
    strip_any: bool,
    strip_matching: bool,
) -> Option<RouteTable> {
    cx.other(
        p,
        &rc.other,
        &Fields {
            known: &[
                "name",
                "virtual_hosts",
                "request_headers_to_add",
                "request_headers_to_remove",
                "response_headers_to_add",
                "response_headers_to_remove",
                "ignore_port_in_host_matching",
            ],
            ignored: &["validate_clusters", "internal_only_headers", "max_direct_response_body_size_bytes"],
        },
    );
    let name = cx.string(p, "name", &rc.name).unwrap_or_default();
    let headers = header_mutations(
        cx,
        p,
        &rc.request_headers_to_add,
        &rc.request_headers_to_remove,
        &rc.response_headers_to_add,
        &rc.response_headers_to_remove,
    );
    let port_matching =
        if strip_any || cx.boolean(p, "ignore_port_in_host_matching", &rc.ignore_port_in_host_matching, false) {
            PortMatching::StripAny
        } else if strip_matching {
            PortMatching::StripMatching
        } else {
            PortMatching::Exact
        };

    let mut vhosts = Vec::new();
    let mut all_domains = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (vp, vh) in cx.list(p, "virtual_hosts", &rc.virtual_hosts) {
        let Some((vhost, domains)) = virtual_host(cx, &vp, vh, clusters) else {
            continue;
        };
        for (i, (raw_domain, _)) in domains.iter().enumerate() {
            let key = raw_domain.to_ascii_lowercase();
            if let Some(first) = seen.get(&key) {
                let msg = if key == "*" {
                    format!("only one virtual host may use the domain \"*\" (also in virtual host {first:?})")
                } else {
                    format!("duplicate domain {raw_domain:?} (also in virtual host {first:?})")
                };
                cx.error(&vp.key("domains").idx(i), msg);
            } else {
                seen.insert(key, vhost.name.clone());
            }
        }
        all_domains.push(domains.into_iter().map(|(_, d)| d).collect());
        vhosts.push(vhost);
    }
    Some(RouteTable::new(name, vhosts, all_domains, port_matching, headers))
}

const VHOST_FIELDS: Fields = Fields {
    known: &[
        "name",
        "domains",
        "routes",
        "require_tls",
        "retry_policy",
        "request_headers_to_add",
        "request_headers_to_remove",
        "response_headers_to_add",
        "response_headers_to_remove",
    ],
    ignored: &["virtual_clusters", "include_request_attempt_count", "include_attempt_count_in_response", "metadata"],
};

fn virtual_host(
    cx: &mut Ctx,
    p: &P,
    vh: &raw::VirtualHost,
    clusters: &HashMap<String, usize>,
) -> Option<(VirtualHost, Vec<(String, DomainPattern)>)> {
    cx.other(p, &vh.other, &VHOST_FIELDS);
    let name = cx.req(p, "name", &vh.name).cloned();
    let mut domains = Vec::new();
    let dlist = cx.list(p, "domains", &vh.domains);
    if dlist.is_empty() {
        cx.error(&p.key("domains"), "at least one domain is required");
    }
    for (dp, d) in dlist {
        match DomainPattern::parse(d) {
            Some(pattern) if !d.is_empty() => domains.push((d.clone(), pattern)),
            _ => cx.error(&dp, format!("invalid domain {d:?}: a wildcard may only be a leading `*` or a trailing `*`")),
        }
    }
    let require_tls = cx.enumeration(
        p,
        "require_tls",
        &vh.require_tls,
        &[("NONE", RequireTls::None), ("ALL", RequireTls::All), ("EXTERNAL_ONLY", RequireTls::ExternalOnly)],
        RequireTls::None,
    );
    let retry_policy =
        cx.opt(p, "retry_policy", &vh.retry_policy).and_then(|r| retry_policy(cx, &p.key("retry_policy"), r));
    let headers = header_mutations(
        cx,
        p,
        &vh.request_headers_to_add,
        &vh.request_headers_to_remove,
        &vh.response_headers_to_add,
        &vh.response_headers_to_remove,
    );
    let mut routes = Vec::new();
    for (rp, r) in cx.list(p, "routes", &vh.routes) {
        if let Some(route) = route(cx, &rp, r, clusters, retry_policy.as_ref()) {
            routes.push(route);
        }
    }
    Some((VirtualHost { name: name?, routes, require_tls, retry_policy, headers }, domains))
}

const ROUTE_FIELDS: Fields = Fields {
    known: &[
        "name",
        "match",
        "route",
        "redirect",
        "direct_response",
        "request_headers_to_add",
        "request_headers_to_remove",
        "response_headers_to_add",
        "response_headers_to_remove",
    ],
    ignored: &["decorator", "metadata", "tracing", "stat_prefix"],
};

fn route(
    cx: &mut Ctx,
    p: &P,
    r: &raw::Route,
    clusters: &HashMap<String, usize>,
    vhost_retry: Option<&RetryPolicy>,
) -> Option<Route> {
    cx.other(p, &r.other, &ROUTE_FIELDS);
    let matcher = cx.req(p, "match", &r.matcher).and_then(|m| route_match(cx, &p.key("match"), m));
    let actions = [r.route.is_some(), r.redirect.is_some(), r.direct_response.is_some()];
    if actions.iter().filter(|a| **a).count() != 1 {
        cx.error(p, "exactly one of `route`, `redirect`, `direct_response` is required");
        return None;
    }
    let action = if let Some(a) = cx.opt(p, "route", &r.route) {
        forward(cx, &p.key("route"), a, clusters, vhost_retry).map(Action::Forward)
    } else if let Some(a) = cx.opt(p, "redirect", &r.redirect) {
        redirect(cx, &p.key("redirect"), a).map(Action::Redirect)
    } else if let Some(a) = cx.opt(p, "direct_response", &r.direct_response) {
        direct_response(cx, &p.key("direct_response"), a).map(Action::Direct)
    } else {
        None
    };
    let headers = header_mutations(
        cx,
        p,
        &r.request_headers_to_add,
        &r.request_headers_to_remove,
        &r.response_headers_to_add,
        &r.response_headers_to_remove,
    );
    Some(Route { name: cx.string(p, "name", &r.name), matcher: matcher?, action: action?, headers })
}

fn route_match(cx: &mut Ctx, p: &P, m: &raw::RouteMatch) -> Option<RouteMatch> {
    cx.other(
        p,
        &m.other,
        &Fields {
            known: &["prefix", "path", "safe_regex", "path_separated_prefix", "case_sensitive", "headers"],
            ignored: &[],
        },
    );
    let set = [m.prefix.is_some(), m.path.is_some(), m.safe_regex.is_some(), m.path_separated_prefix.is_some()];
    if set.iter().filter(|s| **s).count() != 1 {
        cx.error(p, "exactly one of `prefix`, `path`, `safe_regex`, `path_separated_prefix` is required");
        return None;
    }
    let path = if let Some(s) = cx.opt(p, "prefix", &m.prefix) {
        PathMatch::Prefix(s.clone())
    } else if let Some(s) = cx.opt(p, "path", &m.path) {
        PathMatch::Exact(s.clone())
    } else if let Some(s) = cx.opt(p, "path_separated_prefix", &m.path_separated_prefix) {
        if s.ends_with('/') || s.contains(['?', '#']) {
            cx.error(&p.key("path_separated_prefix"), "must not end with `/` or contain `?` or `#`");
        }
        PathMatch::SeparatedPrefix(s.clone())
    } else if let Some(r) = cx.opt(p, "safe_regex", &m.safe_regex) {
        PathMatch::Regex(regex(cx, &p.key("safe_regex"), r)?)
    } else {
        return None;
    };
    let case_sensitive = cx.boolean(p, "case_sensitive", &m.case_sensitive, true);
    let headers =
        cx.list(p, "headers", &m.headers).into_iter().filter_map(|(hp, h)| header_matcher(cx, &hp, h)).collect();
    Some(RouteMatch { path, case_sensitive, headers })
}

/// Envoy's `RegexMatcher`, compiled to match the whole input.
fn regex(cx: &mut Ctx, p: &P, r: &raw::RegexMatcher) -> Option<Regex> {
    cx.other(p, &r.other, &Fields { known: &["google_re2", "regex"], ignored: &[] });
    let _ = cx.opt(p, "google_re2", &r.google_re2);
    let pattern = cx.req(p, "regex", &r.regex)?;
    match Regex::new(&format!("^(?:{pattern})$")) {
        Ok(re) => Some(re),
        Err(e) => {
            cx.error(&p.key("regex"), format!("invalid regular expression: {e}"));
            None
        }
    }
}

fn header_matcher(cx: &mut Ctx, p: &P, h: &raw::HeaderMatcher) -> Option<HeaderMatcher> {
    cx.other(
        p,
        &h.other,
        &Fields {
            known: &[
                "name",
                "exact_match",
                "prefix_match",
                "suffix_match",
                "contains_match",
                "safe_regex_match",
                "present_match",
                "string_match",
                "invert_match",
                "treat_missing_header_as_empty",
            ],
            ignored: &[],
        },
    );
    let name = cx.req(p, "name", &h.name)?.to_ascii_lowercase();
    let pseudo = [":method", ":path", ":authority", ":scheme"];
    if name.starts_with(':') && !pseudo.contains(&name.as_str()) {
        cx.error(&p.key("name"), format!("pseudo-header {name:?} is not supported"));
    } else if !name.starts_with(':') && HeaderName::from_bytes(name.as_bytes()).is_err() {
        cx.error(&p.key("name"), format!("invalid header name {name:?}"));
    }
    let kinds = [
        h.exact_match.is_some(),
        h.prefix_match.is_some(),
        h.suffix_match.is_some(),
        h.contains_match.is_some(),
        h.safe_regex_match.is_some(),
        h.present_match.is_some(),
        h.string_match.is_some(),
    ];
    let kind = match kinds.iter().filter(|k| **k).count() {
        0 => HeaderMatch::Present(true), // Envoy: no matcher means "present"
        1 => {
            if let Some(s) = cx.opt(p, "exact_match", &h.exact_match) {
                HeaderMatch::String(StringMatch::Exact(s.clone(), false))
            } else if let Some(s) = cx.opt(p, "prefix_match", &h.prefix_match) {
                HeaderMatch::String(StringMatch::Prefix(s.clone(), false))
            } else if let Some(s) = cx.opt(p, "suffix_match", &h.suffix_match) {
                HeaderMatch::String(StringMatch::Suffix(s.clone(), false))
            } else if let Some(s) = cx.opt(p, "contains_match", &h.contains_match) {
                HeaderMatch::String(StringMatch::Contains(s.clone(), false))
            } else if let Some(r) = cx.opt(p, "safe_regex_match", &h.safe_regex_match) {
                HeaderMatch::String(StringMatch::Regex(regex(cx, &p.key("safe_regex_match"), r)?))
            } else if let Some(b) = cx.opt(p, "present_match", &h.present_match) {
                HeaderMatch::Present(*b)
            } else if let Some(s) = cx.opt(p, "string_match", &h.string_match) {
                HeaderMatch::String(string_matcher(cx, &p.key("string_match"), s)?)
            } else {
                return None;
            }
        }
        _ => {
            cx.error(p, "only one match kind may be set per header matcher");
            return None;
        }
    };
    Some(HeaderMatcher {
        name,
        kind,
        invert: cx.boolean(p, "invert_match", &h.invert_match, false),
        treat_missing_as_empty: cx.boolean(p, "treat_missing_header_as_empty", &h.treat_missing_header_as_empty, false),
    })
}

fn string_matcher(cx: &mut Ctx, p: &P, s: &raw::StringMatcher) -> Option<StringMatch> {
    cx.other(
        p,
        &s.other,
        &Fields { known: &["exact", "prefix", "suffix", "contains", "safe_regex", "ignore_case"], ignored: &[] },
    );
    let ic = cx.boolean(p, "ignore_case", &s.ignore_case, false);
    let fold = |v: &String| {
        if ic {
            v.to_ascii_lowercase()
        } else {
            v.clone()
        }
    };
    let set = [s.exact.is_some(), s.prefix.is_some(), s.suffix.is_some(), s.contains.is_some(), s.safe_regex.is_some()];
    if set.iter().filter(|x| **x).count() != 1 {
        cx.error(p, "exactly one of `exact`, `prefix`, `suffix`, `contains`, `safe_regex` is required");
        return None;
    }
    if let Some(v) = cx.opt(p, "exact", &s.exact) {
        Some(StringMatch::Exact(fold(v), ic))
    } else if let Some(v) = cx.opt(p, "prefix", &s.prefix) {
        Some(StringMatch::Prefix(fold(v), ic))
    } else if let Some(v) = cx.opt(p, "suffix", &s.suffix) {
        Some(StringMatch::Suffix(fold(v), ic))
    } else if let Some(v) = cx.opt(p, "contains", &s.contains) {
        Some(StringMatch::Contains(fold(v), ic))
    } else if let Some(r) = cx.opt(p, "safe_regex", &s.safe_regex) {
        if ic {
            cx.error(&p.key("ignore_case"), "has no effect with safe_regex; use (?i) in the pattern");
        }
        regex(cx, &p.key("safe_regex"), r).map(StringMatch::Regex)
    } else {
        None
    }
}

const ACTION_FIELDS: Fields = Fields {
    known: &[
        "cluster",
        "weighted_clusters",
        "prefix_rewrite",
        "regex_rewrite",
        "host_rewrite_literal",
        "auto_host_rewrite",
        "timeout",
        "idle_timeout",
        "retry_policy",
        "hash_policy",
        "upgrade_configs",
    ],
    ignored: &["priority", "include_vh_rate_limits", "append_x_forwarded_host"],
};

fn forward(
    cx: &mut Ctx,
    p: &P,
    a: &raw::RouteAction,
    clusters: &HashMap<String, usize>,
    vhost_retry: Option<&RetryPolicy>,
) -> Option<Forward> {
    cx.other(p, &a.other, &ACTION_FIELDS);
    let lookup = |cx: &mut Ctx, p: &P, name: &str| -> Option<usize> {
        let id = clusters.get(name).copied();
        if id.is_none() {
            cx.error(p, format!("unknown cluster {name:?}"));
        }
        id
    };
    let choice = match (a.cluster.is_some(), a.weighted_clusters.is_some()) {
        (true, false) => {
            let name = cx.opt(p, "cluster", &a.cluster)?;
            ClusterChoice::Single(lookup(cx, &p.key("cluster"), name)?)
        }
        (false, true) => {
            let wp = p.key("weighted_clusters");
            let wc = cx.opt(p, "weighted_clusters", &a.weighted_clusters)?;
            cx.other(
                &wp,
                &wc.other,
                &Fields { known: &["clusters", "total_weight"], ignored: &["runtime_key_prefix"] },
            );
            let mut entries = Vec::new();
            for (cp, c) in cx.list(&wp, "clusters", &wc.clusters) {
                cx.other(&cp, &c.other, &Fields { known: &["name", "weight"], ignored: &[] });
                let id = cx.req(&cp, "name", &c.name).and_then(|n| lookup(cx, &cp.key("name"), n));
                let weight = cx.req(&cp, "weight", &c.weight).copied();
                if let (Some(id), Some(w)) = (id, weight) {
                    if w > 0 {
                        entries.push((id, w));
                    }
                }
            }
            let total: u64 = entries.iter().map(|(_, w)| u64::from(*w)).sum();
            if let Some(t) = cx.opt(&wp, "total_weight", &wc.total_weight) {
                if u64::from(*t) != total {
                    cx.error(&wp.key("total_weight"), format!("is {t} but the weights add up to {total}"));
                }
            }
            if total == 0 || total > u64::from(u32::MAX) {
                cx.error(&wp.key("clusters"), "weights must add up to more than 0 and fit in 32 bits");
                return None;
            }
            ClusterChoice::Weighted(entries, total as u32)
        }
        _ => {
            cx.error(
                p,
                "exactly one of `cluster` or `weighted_clusters` is required (cluster_header is not supported)",
            );
            return None;
        }
    };
    let prefix_rewrite = cx.string(p, "prefix_rewrite", &a.prefix_rewrite);
    let regex_rewrite = cx.opt(p, "regex_rewrite", &a.regex_rewrite).and_then(|rr| {
        let rp = p.key("regex_rewrite");
        cx.other(&rp, &rr.other, &Fields { known: &["pattern", "substitution"], ignored: &[] });
        let pattern = cx.req(&rp, "pattern", &rr.pattern).and_then(|pt| regex_unanchored(cx, &rp.key("pattern"), pt));
        let substitution = cx.req(&rp, "substitution", &rr.substitution).cloned();
        Some((pattern?, envoy_substitution(&substitution?)))
    });
    if prefix_rewrite.is_some() && regex_rewrite.is_some() {
        cx.error(p, "`prefix_rewrite` and `regex_rewrite` are mutually exclusive");
    }
    let literal = cx.string(p, "host_rewrite_literal", &a.host_rewrite_literal);
    let auto = cx.boolean(p, "auto_host_rewrite", &a.auto_host_rewrite, false);
    let host_rewrite = match (literal, auto) {
        (Some(_), true) => {
            cx.error(p, "`host_rewrite_literal` and `auto_host_rewrite` are mutually exclusive");
            HostRewrite::Keep
        }
        (Some(h), false) => HostRewrite::Literal(h),
        (None, true) => HostRewrite::Auto,
        (None, false) => HostRewrite::Keep,
    };
    let timeout = cx.duration(p, "timeout", &a.timeout).unwrap_or(DEFAULT_ROUTE_TIMEOUT);
    let idle_timeout = cx.duration(p, "idle_timeout", &a.idle_timeout);
    let retry = match cx.opt(p, "retry_policy", &a.retry_policy) {
        Some(r) => retry_policy(cx, &p.key("retry_policy"), r),
        None => vhost_retry.cloned(),
    };
    let hash_policy =
        cx.list(p, "hash_policy", &a.hash_policy).into_iter().filter_map(|(hp, h)| hash_policy(cx, &hp, h)).collect();
    let mut websocket = None;
    for (up, u) in cx.list(p, "upgrade_configs", &a.upgrade_configs) {
        if let Some(enabled) = upgrade_config(cx, &up, u) {
            websocket = Some(enabled);
        }
    }
    Some(Forward {
        clusters: choice,
        prefix_rewrite,
        regex_rewrite,
        host_rewrite,
        timeout: (!timeout.is_zero()).then_some(timeout),
        idle_timeout: idle_timeout.filter(|d| !d.is_zero()),
        retry_policy: retry,
        hash_policy,
        websocket,
    })
}

fn regex_unanchored(cx: &mut Ctx, p: &P, r: &raw::RegexMatcher) -> Option<Regex> {
    cx.other(p, &r.other, &Fields { known: &["google_re2", "regex"], ignored: &[] });
    let pattern = cx.req(p, "regex", &r.regex)?;
    Regex::new(pattern).map_err(|e| cx.error(&p.key("regex"), format!("invalid regular expression: {e}"))).ok()
}

/// RE2 substitutions write groups as `\1`; the regex crate wants `${1}`.
fn envoy_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(|n| n.is_ascii_digit()) => {
                let d = chars.next().unwrap_or('0');
                out.push_str(&format!("${{{d}}}"));
            }
            '$' => out.push_str("$$"),
            other => out.push(other),
        }
    }
    out
}

pub(super) fn retry_policy(cx: &mut Ctx, p: &P, r: &raw::RetryPolicy) -> Option<RetryPolicy> {
    cx.other(
        p,
        &r.other,
        &Fields {
            known: &[
                "retry_on",
                "num_retries",
                "per_try_timeout",
                "retriable_status_codes",
                "retry_host_predicate",
                "host_selection_retry_max_attempts",
                "retry_back_off",
            ],
            ignored: &[],
        },
    );
    let retry_on = match cx.opt(p, "retry_on", &r.retry_on).map(|s| RetryOn::parse(s)) {
        Some(Ok(on)) => on,
        Some(Err(bad)) => {
            cx.error(&p.key("retry_on"), format!("retry condition {bad:?} is not supported (5xx, gateway-error, connect-failure, reset, retriable-4xx, retriable-status-codes, refused-stream)"));
            RetryOn::default()
        }
        None => RetryOn::default(),
    };
    let mut codes = Vec::new();
    for (cp, c) in cx.list(p, "retriable_status_codes", &r.retriable_status_codes) {
        match u16::try_from(*c).ok().filter(|c| (100..=599).contains(c)) {
            Some(c) => codes.push(c),
            None => cx.error(&cp, "not an HTTP status code"),
        }
    }
    let mut avoid_previous_hosts = false;
    for (hp, h) in cx.list(p, "retry_host_predicate", &r.retry_host_predicate) {
        match cx.string(&hp, "name", &h.name).as_deref() {
            Some("envoy.retry_host_predicates.previous_hosts") => avoid_previous_hosts = true,
            other => cx.error(&hp, format!("retry host predicate {other:?} is not supported")),
        }
    }
    let (base, max) = match cx.opt(p, "retry_back_off", &r.retry_back_off) {
        Some(b) => back_off(cx, &p.key("retry_back_off"), b, DEFAULT_BACKOFF_BASE)?,
        None => (DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_BASE * 10),
    };
    let _ = cx.opt(p, "host_selection_retry_max_attempts", &r.host_selection_retry_max_attempts);
    Some(RetryPolicy {
        retry_on,
        num_retries: cx.opt(p, "num_retries", &r.num_retries).copied().unwrap_or(1),
        per_try_timeout: cx.duration(p, "per_try_timeout", &r.per_try_timeout).filter(|d| !d.is_zero()),
        retriable_status_codes: codes,
        avoid_previous_hosts,
        backoff_base: base,
        backoff_max: max,
    })
}

/// `{base_interval, max_interval}`; max defaults to 10 × base.
pub(super) fn back_off(
    cx: &mut Ctx,
    p: &P,
    b: &raw::RetryBackOff,
    default_base: Duration,
) -> Option<(Duration, Duration)> {
    cx.other(p, &b.other, &Fields { known: &["base_interval", "max_interval"], ignored: &[] });
    let base = cx.duration(p, "base_interval", &b.base_interval).unwrap_or(default_base);
    if base.is_zero() {
        cx.error(&p.key("base_interval"), "must be greater than 0");
        return None;
    }
    let max = cx.duration(p, "max_interval", &b.max_interval).unwrap_or(base * 10);
    if max < base {
        cx.error(&p.key("max_interval"), "must not be smaller than base_interval");
        return None;
    }
    Some((base, max))
}

fn hash_policy(cx: &mut Ctx, p: &P, h: &raw::HashPolicy) -> Option<HashPolicy> {
    cx.other(p, &h.other, &Fields { known: &["header", "connection_properties", "terminal"], ignored: &[] });
    let terminal = cx.boolean(p, "terminal", &h.terminal, false);
    match (cx.opt(p, "header", &h.header), cx.opt(p, "connection_properties", &h.connection_properties)) {
        (Some(hd), None) => {
            let hp = p.key("header");
            cx.other(&hp, &hd.other, &Fields { known: &["header_name"], ignored: &[] });
            let name = cx.req(&hp, "header_name", &hd.header_name)?;
            match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
                Ok(name) => Some(HashPolicy::Header { name, terminal }),
                Err(_) => {
                    cx.error(&hp.key("header_name"), format!("invalid header name {name:?}"));
                    None
                }
            }
        }
        (None, Some(c)) => {
            let cp = p.key("connection_properties");
            cx.other(&cp, &c.other, &Fields { known: &["source_ip"], ignored: &[] });
            cx.boolean(&cp, "source_ip", &c.source_ip, false).then_some(HashPolicy::SourceIp { terminal })
        }
        _ => {
            cx.error(p, "exactly one of `header` or `connection_properties` is required (cookie, query_parameter and filter_state hashing are not supported)");
            None
        }
    }
}

fn redirect(cx: &mut Ctx, p: &P, r: &raw::RedirectAction) -> Option<Redirect> {
    cx.other(
        p,
        &r.other,
        &Fields {
            known: &[
                "https_redirect",
                "scheme_redirect",
                "host_redirect",
                "port_redirect",
                "path_redirect",
                "prefix_rewrite",
                "response_code",
                "strip_query",
            ],
            ignored: &[],
        },
    );
    let https = cx.boolean(p, "https_redirect", &r.https_redirect, false);
    let scheme = cx.string(p, "scheme_redirect", &r.scheme_redirect);
    if https && scheme.is_some() {
        cx.error(p, "`https_redirect` and `scheme_redirect` are mutually exclusive");
    }
    let path = cx.string(p, "path_redirect", &r.path_redirect);
    let prefix_rewrite = cx.string(p, "prefix_rewrite", &r.prefix_rewrite);
    if path.is_some() && prefix_rewrite.is_some() {
        cx.error(p, "`path_redirect` and `prefix_rewrite` are mutually exclusive");
    }
    let port = match cx.opt(p, "port_redirect", &r.port_redirect).map(|p| u16::try_from(*p)) {
        Some(Ok(port)) => Some(port),
        Some(Err(_)) => {
            cx.error(&p.key("port_redirect"), "must be at most 65535");
            None
        }
        None => None,
    };
    let status = cx.enumeration(
        p,
        "response_code",
        &r.response_code,
        &[
            ("MOVED_PERMANENTLY", StatusCode::MOVED_PERMANENTLY),
            ("FOUND", StatusCode::FOUND),
            ("SEE_OTHER", StatusCode::SEE_OTHER),
            ("TEMPORARY_REDIRECT", StatusCode::TEMPORARY_REDIRECT),
            ("PERMANENT_REDIRECT", StatusCode::PERMANENT_REDIRECT),
        ],
        StatusCode::MOVED_PERMANENTLY,
    );
    Some(Redirect {
        scheme: if https { Some("https".into()) } else { scheme },
        host: cx.string(p, "host_redirect", &r.host_redirect),
        port,
        path,
        prefix_rewrite,
        status,
        strip_query: cx.boolean(p, "strip_query", &r.strip_query, false),
    })
}

fn direct_response(cx: &mut Ctx, p: &P, d: &raw::DirectResponseAction) -> Option<DirectResponse> {
    cx.other(p, &d.other, &Fields { known: &["status", "body"], ignored: &[] });
    let status = cx.req(p, "status", &d.status).copied();
    let status = match status.and_then(|s| u16::try_from(s).ok()).filter(|s| (200..=599).contains(s)) {
        Some(s) => StatusCode::from_u16(s).ok(),
        None => {
            if status.is_some() {
                cx.error(&p.key("status"), "must be an HTTP status between 200 and 599");
            }
            None
        }
    };
    let body = match cx.opt(p, "body", &d.body) {
        None => None,
        Some(ds) => {
            let bp = p.key("body");
            match cx.data_source(&bp, ds)? {
                DataSourceValue::Inline(b) => Some(b),
                DataSourceValue::File(f) => match std::fs::read(&f) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        cx.error(&bp.key("filename"), format!("cannot read {f}: {e}"));
                        return None;
                    }
                },
            }
        }
    };
    if body.as_ref().is_some_and(|b| b.len() > MAX_DIRECT_RESPONSE_BODY) {
        cx.error(&p.key("body"), format!("is larger than {MAX_DIRECT_RESPONSE_BODY} bytes"));
    }
    Some(DirectResponse { status: status?, body: body.map(Bytes::from) })
}

fn header_mutations(
    cx: &mut Ctx,
    p: &P,
    req_add: &Option<List<raw::HeaderValueOption>>,
    req_remove: &Option<List<String>>,
    resp_add: &Option<List<raw::HeaderValueOption>>,
    resp_remove: &Option<List<String>>,
) -> HeaderMutations {
    HeaderMutations {
        request_add: headers_to_add(cx, p, "request_headers_to_add", req_add),
        request_remove: headers_to_remove(cx, p, "request_headers_to_remove", req_remove),
        response_add: headers_to_add(cx, p, "response_headers_to_add", resp_add),
        response_remove: headers_to_remove(cx, p, "response_headers_to_remove", resp_remove),
    }
}

fn headers_to_add(cx: &mut Ctx, p: &P, name: &str, f: &Option<List<raw::HeaderValueOption>>) -> Vec<HeaderToAdd> {
    let mut out = Vec::new();
    for (hp, h) in cx.list(p, name, f) {
        cx.other(
            &hp,
            &h.other,
            &Fields { known: &["header", "append", "append_action", "keep_empty_value"], ignored: &[] },
        );
        let Some(hv) = cx.req(&hp, "header", &h.header) else {
            continue;
        };
        let vp = hp.key("header");
        cx.other(&vp, &hv.other, &Fields { known: &["key", "value"], ignored: &["raw_value"] });
        let key = cx.req(&vp, "key", &hv.key).cloned();
        let value = cx.string(&vp, "value", &hv.value).unwrap_or_default();
        if h.append.is_some() && h.append_action.is_some() {
            cx.error(&hp, "`append` and `append_action` are mutually exclusive");
        }
        let append = match cx.opt(&hp, "append", &h.append) {
            Some(true) => HeaderAppend::AppendIfExistsOrAdd,
            Some(false) => HeaderAppend::OverwriteIfExistsOrAdd,
            None => cx.enumeration(
                &hp,
                "append_action",
                &h.append_action,
                &[
                    ("APPEND_IF_EXISTS_OR_ADD", HeaderAppend::AppendIfExistsOrAdd),
                    ("ADD_IF_ABSENT", HeaderAppend::AddIfAbsent),
                    ("OVERWRITE_IF_EXISTS_OR_ADD", HeaderAppend::OverwriteIfExistsOrAdd),
                    ("OVERWRITE_IF_EXISTS", HeaderAppend::OverwriteIfExists),
                ],
                HeaderAppend::AppendIfExistsOrAdd,
            ),
        };
        let Some(key) = key else { continue };
        let Ok(header) = HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes()) else {
            cx.error(&vp.key("key"), format!("invalid header name {key:?}"));
            continue;
        };
        if key.starts_with(':') || header == http::header::HOST {
            cx.error(&vp.key("key"), "pseudo-headers and host cannot be modified this way");
            continue;
        }
        let format = match HeaderValueFormat::parse(&value) {
            Ok(f) => f,
            Err(e) => {
                cx.error(&vp.key("value"), e);
                continue;
            }
        };
        if let Some(lit) = format.as_literal() {
            if http::HeaderValue::from_str(lit).is_err() {
                cx.error(&vp.key("value"), "not a valid header value");
                continue;
            }
        }
        out.push(HeaderToAdd {
            name: header,
            value: format,
            append,
            keep_empty_value: cx.boolean(&hp, "keep_empty_value", &h.keep_empty_value, false),
        });
    }
    out
}

fn headers_to_remove(cx: &mut Ctx, p: &P, name: &str, f: &Option<List<String>>) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for (hp, h) in cx.list(p, name, f) {
        match HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) {
            Ok(n) if !h.starts_with(':') && n != http::header::HOST => out.push(n),
            _ => cx.error(&hp, format!("{h:?} cannot be removed (invalid, pseudo-header or host)")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::envoy_substitution;

    #[test]
    fn substitution_groups() {
        assert_eq!(envoy_substitution(r"/v2/\1/x"), "/v2/${1}/x");
        assert_eq!(envoy_substitution("$5"), "$$5");
    }
}
