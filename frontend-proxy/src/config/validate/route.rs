//! Route configuration: virtual hosts, routes and their matches.

use super::action::{direct_response, forward, redirect, retry_policy};
use super::headers::{header_mutations, headers_to_remove};
use super::{Ctx, P};
use crate::config::raw;
use crate::routing::{
    Action, DomainPattern, HeaderMatch, HeaderMatcher, PathMatch, PortMatching, RequireTls, RetryPolicy, Route,
    RouteMatch, RouteTable, StringMatch, VirtualHost,
};
use http::header::HeaderName;
use regex::Regex;
use std::collections::HashMap;

pub(super) fn route_configuration(
    cx: &mut Ctx,
    p: &P,
    rc: &raw::RouteConfiguration,
    clusters: &HashMap<String, usize>,
    strip_any: bool,
    strip_matching: bool,
) -> Option<RouteTable> {
    cx.other(p, rc, &["validate_clusters", "max_direct_response_body_size_bytes"]);
    let internal_only_headers = headers_to_remove(cx, p, "internal_only_headers", &rc.internal_only_headers);
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
    let mut table = RouteTable::new(name, vhosts, all_domains, port_matching, headers);
    table.internal_only_headers = internal_only_headers;
    Some(table)
}

/// Envoy fields accepted and ignored with a warning.
const VHOST_IGNORED: &[&str] = &["virtual_clusters", "metadata"];

fn virtual_host(
    cx: &mut Ctx,
    p: &P,
    vh: &raw::VirtualHost,
    clusters: &HashMap<String, usize>,
) -> Option<(VirtualHost, Vec<(String, DomainPattern)>)> {
    cx.other(p, vh, VHOST_IGNORED);
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
    Some((
        VirtualHost {
            name: name?,
            routes,
            require_tls,
            retry_policy,
            headers,
            attempt_count_upstream: cx.boolean(
                p,
                "include_request_attempt_count",
                &vh.include_request_attempt_count,
                false,
            ),
            attempt_count_downstream: cx.boolean(
                p,
                "include_attempt_count_in_response",
                &vh.include_attempt_count_in_response,
                false,
            ),
        },
        domains,
    ))
}

/// Envoy fields accepted and ignored with a warning.
const ROUTE_IGNORED: &[&str] = &["decorator", "metadata", "tracing", "stat_prefix"];

fn route(
    cx: &mut Ctx,
    p: &P,
    r: &raw::Route,
    clusters: &HashMap<String, usize>,
    vhost_retry: Option<&RetryPolicy>,
) -> Option<Route> {
    cx.other(p, r, ROUTE_IGNORED);
    let matcher = cx.req(p, "match", &r.matcher).and_then(|m| route_match(cx, &p.key("match"), m));
    let actions = [r.route.is_some(), r.redirect.is_some(), r.direct_response.is_some()];
    // Without exactly one action the route is rejected, and its headers are
    // still checked.
    let action = if actions.iter().filter(|a| **a).count() != 1 {
        cx.error(p, "exactly one of `route`, `redirect`, `direct_response` is required");
        None
    } else if let Some(a) = cx.opt(p, "route", &r.route) {
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
    cx.other(p, m, &[]);
    let set = [m.prefix.is_some(), m.path.is_some(), m.safe_regex.is_some(), m.path_separated_prefix.is_some()];
    // A bad path match does not stop the header matchers being checked.
    let path = if set.iter().filter(|s| **s).count() != 1 {
        cx.error(p, "exactly one of `prefix`, `path`, `safe_regex`, `path_separated_prefix` is required");
        None
    } else if let Some(s) = cx.opt(p, "prefix", &m.prefix) {
        Some(PathMatch::Prefix(s.clone()))
    } else if let Some(s) = cx.opt(p, "path", &m.path) {
        Some(PathMatch::Exact(s.clone()))
    } else if let Some(s) = cx.opt(p, "path_separated_prefix", &m.path_separated_prefix) {
        if s.ends_with('/') || s.contains(['?', '#']) {
            cx.error(&p.key("path_separated_prefix"), "must not end with `/` or contain `?` or `#`");
        }
        Some(PathMatch::SeparatedPrefix(s.clone()))
    } else if let Some(r) = cx.opt(p, "safe_regex", &m.safe_regex) {
        regex(cx, &p.key("safe_regex"), r).map(PathMatch::Regex)
    } else {
        None
    };
    let case_sensitive = cx.boolean(p, "case_sensitive", &m.case_sensitive, true);
    let headers =
        cx.list(p, "headers", &m.headers).into_iter().filter_map(|(hp, h)| header_matcher(cx, &hp, h)).collect();
    Some(RouteMatch { path: path?, case_sensitive, headers })
}

/// Envoy's `RegexMatcher`, compiled to match the whole input.
fn regex(cx: &mut Ctx, p: &P, r: &raw::RegexMatcher) -> Option<Regex> {
    cx.other(p, r, &[]);
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

pub(super) fn header_matcher(cx: &mut Ctx, p: &P, h: &raw::HeaderMatcher) -> Option<HeaderMatcher> {
    cx.other(p, h, &[]);
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

pub(super) fn string_matcher(cx: &mut Ctx, p: &P, s: &raw::StringMatcher) -> Option<StringMatch> {
    cx.other(p, s, &[]);
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
