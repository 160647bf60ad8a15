//! Request routing: picks the virtual host by `:authority` and the route by
//! path and headers, in Envoy's order.
//!
//! The types here are the validated, runtime form of an Envoy
//! `RouteConfiguration`; `config::validate` builds them. Matching allocates
//! nothing for the common case (ASCII hosts and paths, case-sensitive routes).

mod header_mutation;
mod route;

pub use header_mutation::{
    HeaderAppend, HeaderMutations, HeaderToAdd, HeaderValueFormat, HeaderValueToken, RequestInfo,
};
pub use route::{
    header_value, parse_grpc_timeout, Action, ClusterChoice, DirectResponse, Forward, GrpcTimeout, HashPolicy,
    HeaderMatch, HeaderMatcher, HostRewrite, PathMatch, Redirect, RetryOn, RetryPolicy, Route, RouteMatch, StringMatch,
};

use pingora_http::RequestHeader;
use std::collections::HashMap;

/// Index of a cluster in the proxy's cluster list, resolved at load time.
pub type ClusterId = usize;

/// Envoy's `require_tls` on a virtual host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequireTls {
    None,
    /// Plain-HTTP requests get a 301 to https.
    All,
    /// Like `All`, but only for requests that did not come through a trusted proxy.
    ExternalOnly,
}

/// A virtual host: the routes served for a set of domains.
#[derive(Debug)]
pub struct VirtualHost {
    pub name: String,
    pub routes: Vec<Route>,
    pub require_tls: RequireTls,
    pub retry_policy: Option<RetryPolicy>,
    pub headers: HeaderMutations,
    /// `include_request_attempt_count`: `x-envoy-attempt-count` on each upstream request.
    pub attempt_count_upstream: bool,
    /// `include_attempt_count_in_response`: `x-envoy-attempt-count` on the upstream's response.
    pub attempt_count_downstream: bool,
}

/// How host names are compared with domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortMatching {
    /// The port in `Host` takes part in matching (Envoy's default).
    #[default]
    Exact,
    /// Any `:port` suffix is removed before matching.
    StripAny,
    /// The port is removed when it equals the listener's port.
    StripMatching,
}

/// A domain entry of a virtual host, classified for Envoy's search order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    Exact(String),
    /// `*.example.com`: the text after the `*`.
    Suffix(String),
    /// `example.*`: the text before the `*`.
    Prefix(String),
    Any,
}

impl DomainPattern {
    /// Classifies a domain as written in the file. Returns `None` for a `*`
    /// in the middle, which Envoy rejects.
    pub fn parse(domain: &str) -> Option<Self> {
        let d = domain.to_ascii_lowercase();
        if d == "*" {
            return Some(Self::Any);
        }
        let stars = d.matches('*').count();
        match stars {
            0 => Some(Self::Exact(d)),
            1 if d.starts_with('*') => Some(Self::Suffix(d[1..].to_string())),
            1 if d.ends_with('*') => Some(Self::Prefix(d[..d.len() - 1].to_string())),
            _ => None,
        }
    }
}

/// The route table of one HTTP connection manager.
#[derive(Debug)]
pub struct RouteTable {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
    exact: HashMap<String, usize>,
    /// Longest suffix first.
    suffixes: Vec<(String, usize)>,
    /// Longest prefix first.
    prefixes: Vec<(String, usize)>,
    any: Option<usize>,
    pub port_matching: PortMatching,
    pub headers: HeaderMutations,
    /// `internal_only_headers`: removed from every request before routing
    /// (at the edge every client is external).
    pub internal_only_headers: Vec<http::HeaderName>,
}

impl RouteTable {
    /// Builds the table. `domains[i]` are the patterns of `virtual_hosts[i]`;
    /// duplicates must have been rejected by validation.
    pub fn new(
        name: String,
        virtual_hosts: Vec<VirtualHost>,
        domains: Vec<Vec<DomainPattern>>,
        port_matching: PortMatching,
        headers: HeaderMutations,
    ) -> Self {
        let mut exact = HashMap::new();
        let mut suffixes = Vec::new();
        let mut prefixes = Vec::new();
        let mut any = None;
        for (i, patterns) in domains.into_iter().enumerate() {
            for p in patterns {
                match p {
                    DomainPattern::Exact(d) => {
                        exact.entry(d).or_insert(i);
                    }
                    DomainPattern::Suffix(s) => suffixes.push((s, i)),
                    DomainPattern::Prefix(s) => prefixes.push((s, i)),
                    DomainPattern::Any => {
                        any.get_or_insert(i);
                    }
                }
            }
        }
        // Stable sort keeps file order between equal lengths, as Envoy does.
        suffixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        prefixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        Self {
            name,
            virtual_hosts,
            exact,
            suffixes,
            prefixes,
            any,
            port_matching,
            headers,
            internal_only_headers: Vec::new(),
        }
    }

    /// Envoy's virtual host search: exact, longest suffix wildcard, longest
    /// prefix wildcard, then `*`. `listener_port` serves `StripMatching`.
    pub fn find_virtual_host(&self, authority: &str, listener_port: u16) -> Option<&VirtualHost> {
        self.find_virtual_host_index(authority, listener_port).map(|i| &self.virtual_hosts[i])
    }

    /// Like [`Self::find_virtual_host`], returning the index in `virtual_hosts`.
    pub fn find_virtual_host_index(&self, authority: &str, listener_port: u16) -> Option<usize> {
        let host = self.host_for_matching(authority, listener_port);
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        self.match_domain(host)
    }

    fn match_domain(&self, host: &str) -> Option<usize> {
        if let Some(i) = self.exact.get(host) {
            return Some(*i);
        }
        // A wildcard never matches an empty string, hence the strict `>`.
        for (suffix, i) in &self.suffixes {
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                return Some(*i);
            }
        }
        for (prefix, i) in &self.prefixes {
            if host.len() > prefix.len() && host.starts_with(prefix.as_str()) {
                return Some(*i);
            }
        }
        self.any
    }

    fn host_for_matching<'a>(&self, authority: &'a str, listener_port: u16) -> &'a str {
        let strip = match self.port_matching {
            PortMatching::Exact => return authority,
            PortMatching::StripAny => true,
            PortMatching::StripMatching => false,
        };
        match split_port(authority) {
            Some((host, port)) if strip || port == listener_port => host,
            _ => authority,
        }
    }
}

/// Splits `host:port` (or `[v6]:port`) into its parts.
pub fn split_port(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = authority.rsplit_once(':')?;
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return None; // a bare IPv6 address without a port
    }
    Some((host, port.parse().ok()?))
}

impl VirtualHost {
    /// The first route whose match accepts the request.
    pub fn find_route(&self, req: &RequestHeader) -> Option<&Route> {
        self.find_route_index(req).map(|i| &self.routes[i])
    }

    /// Like [`Self::find_route`], returning the index in `routes`.
    pub fn find_route_index(&self, req: &RequestHeader) -> Option<usize> {
        let path = req.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
        self.routes.iter().position(|r| r.matcher.matches(path, req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vh(name: &str) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            routes: vec![],
            require_tls: RequireTls::None,
            retry_policy: None,
            headers: HeaderMutations::default(),
            attempt_count_upstream: false,
            attempt_count_downstream: false,
        }
    }

    fn table(entries: &[(&str, &[&str])], ports: PortMatching) -> RouteTable {
        let vhosts = entries.iter().map(|(n, _)| vh(n)).collect();
        let domains =
            entries.iter().map(|(_, ds)| ds.iter().map(|d| DomainPattern::parse(d).unwrap()).collect()).collect();
        RouteTable::new("t".into(), vhosts, domains, ports, HeaderMutations::default())
    }

    fn pick<'a>(t: &'a RouteTable, host: &str) -> Option<&'a str> {
        t.find_virtual_host(host, 8080).map(|v| v.name.as_str())
    }

    #[test]
    fn envoy_domain_order() {
        let t = table(
            &[
                ("any", &["*"]),
                ("prefix", &["api.*"]),
                ("short-suffix", &["*.com"]),
                ("long-suffix", &["*.example.com"]),
                ("exact", &["www.example.com"]),
            ],
            PortMatching::Exact,
        );
        let cases = [
            ("www.example.com", "exact"),
            ("WWW.Example.COM", "exact"),
            ("foo.example.com", "long-suffix"),
            ("foo.other.com", "short-suffix"),
            // a suffix wildcard beats a prefix wildcard
            ("api.example.com", "long-suffix"),
            ("api.internal", "prefix"),
            ("localhost", "any"),
            // a wildcard never matches an empty string
            (".example.com", "short-suffix"),
        ];
        for (host, want) in cases {
            assert_eq!(pick(&t, host), Some(want), "host {host}");
        }
    }

    #[test]
    fn longest_wildcard_wins_regardless_of_file_order() {
        let t = table(
            &[("short", &["*.com"]), ("long", &["*.b.com"]), ("p1", &["a.*"]), ("p2", &["a.b.*"])],
            PortMatching::Exact,
        );
        assert_eq!(pick(&t, "x.b.com"), Some("long"));
        assert_eq!(pick(&t, "a.b.net"), Some("p2"));
        assert_eq!(pick(&t, "a.c.net"), Some("p1"));
    }

    #[test]
    fn no_default_means_no_match() {
        let t = table(&[("exact", &["a.com"])], PortMatching::Exact);
        assert_eq!(pick(&t, "b.com"), None);
    }

    #[test]
    fn port_takes_part_by_default() {
        let t = table(&[("exact", &["a.com"]), ("port", &["a.com:9000"])], PortMatching::Exact);
        assert_eq!(pick(&t, "a.com"), Some("exact"));
        assert_eq!(pick(&t, "a.com:9000"), Some("port"));
        assert_eq!(pick(&t, "a.com:8080"), None);
    }

    #[test]
    fn port_stripping_modes() {
        let any = table(&[("exact", &["a.com"])], PortMatching::StripAny);
        assert_eq!(pick(&any, "a.com:1234"), Some("exact"));
        let matching = table(&[("exact", &["a.com"])], PortMatching::StripMatching);
        assert_eq!(pick(&matching, "a.com:8080"), Some("exact"));
        assert_eq!(pick(&matching, "a.com:1234"), None);
        assert_eq!(split_port("[::1]:80"), Some(("[::1]", 80)));
        assert_eq!(split_port("::1"), None);
    }

    #[test]
    fn domain_pattern_parse() {
        assert_eq!(DomainPattern::parse("*"), Some(DomainPattern::Any));
        assert_eq!(DomainPattern::parse("*.A.com"), Some(DomainPattern::Suffix(".a.com".into())));
        assert_eq!(DomainPattern::parse("*-bar.com"), Some(DomainPattern::Suffix("-bar.com".into())));
        assert_eq!(DomainPattern::parse("foo.*"), Some(DomainPattern::Prefix("foo.".into())));
        assert_eq!(DomainPattern::parse("a.*.com"), None);
        assert_eq!(DomainPattern::parse("*.a.*"), None);
    }
}
