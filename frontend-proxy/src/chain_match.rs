//! Envoy's filter chain matching: which of a listener's filter chains
//! serves a connection ([`Selection::select`], in Envoy's order of
//! `FilterChainMatch` criteria), from the connection's addresses and what
//! the `tls_inspector` listener filter ([`tls_inspector`]) read of its
//! ClientHello.
//!
//! Selection is per connection and only for listeners that need it: a
//! listener with one filter chain, no match and no `tls_inspector` never
//! comes here (no peek, no `getsockname`).
//!
//! A room of its own, below `config` (which validates into it), `runtime`
//! and `downstream` (which run it): it imports none of them.

pub mod tls_inspector;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tls_inspector::ClientHello;

/// A CIDR range (`CidrRange`), its address masked to its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// `None` when `len` is longer than the address.
    pub fn new(addr: IpAddr, len: u8) -> Option<Cidr> {
        let addr = match addr {
            IpAddr::V4(a) if len <= 32 => {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) if len <= 128 => {
                let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
            _ => return None,
        };
        Some(Cidr { addr, len })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        Cidr::new(ip, self.len).is_some_and(|c| c.addr == self.addr)
    }
}

/// `source_type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SourceType {
    #[default]
    Any,
    /// `SAME_IP_OR_LOOPBACK`: the client is on a loopback address or on
    /// the address it connected to.
    Local,
    /// `EXTERNAL`: any other client.
    External,
}

/// One filter chain's `filter_chain_match`; an empty criterion matches
/// any connection. Server names are lowercase.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChainMatch {
    pub destination_port: Option<u16>,
    pub prefix_ranges: Vec<Cidr>,
    pub server_names: Vec<String>,
    pub transport_protocol: Option<String>,
    pub application_protocols: Vec<String>,
    pub direct_source_prefix_ranges: Vec<Cidr>,
    pub source_type: SourceType,
    pub source_prefix_ranges: Vec<Cidr>,
    pub source_ports: Vec<u16>,
}

/// What two chains with the same match share: one combination of their
/// criteria (a list criterion contributes each of its values).
pub type MatchKey = (
    Option<u16>,
    Option<Cidr>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Cidr>,
    SourceType,
    Option<Cidr>,
    Option<u16>,
);

impl ChainMatch {
    /// Every combination of the criteria's values (Envoy files each chain
    /// under each of them, and refuses a listener where two chains meet);
    /// `None` beyond `limit` combinations.
    pub fn keys(&self, limit: usize) -> Option<Vec<MatchKey>> {
        fn each<T: Clone>(v: &[T]) -> Vec<Option<T>> {
            if v.is_empty() {
                vec![None]
            } else {
                v.iter().cloned().map(Some).collect()
            }
        }
        let (ports, dst, names, alpn, direct, src, sports) = (
            [self.destination_port],
            each(&self.prefix_ranges),
            each(&self.server_names),
            each(&self.application_protocols),
            each(&self.direct_source_prefix_ranges),
            each(&self.source_prefix_ranges),
            each(&self.source_ports),
        );
        let total = [dst.len(), names.len(), alpn.len(), direct.len(), src.len(), sports.len()]
            .iter()
            .try_fold(1usize, |acc, n| acc.checked_mul(*n))
            .filter(|n| *n <= limit)?;
        let mut out = Vec::with_capacity(total);
        for p in ports {
            for d in &dst {
                for n in &names {
                    for a in &alpn {
                        for ds in &direct {
                            for s in &src {
                                for sp in &sports {
                                    out.push((
                                        p,
                                        *d,
                                        n.clone(),
                                        self.transport_protocol.clone(),
                                        a.clone(),
                                        *ds,
                                        self.source_type,
                                        *s,
                                        *sp,
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
        Some(out)
    }

    /// Whether a criterion needs the connection's local address.
    fn needs_local(&self) -> bool {
        self.destination_port.is_some() || !self.prefix_ranges.is_empty() || self.source_type != SourceType::Any
    }
}

/// `envoy.filters.listener.tls_inspector` and its listener's
/// `listener_filters_timeout` / `continue_on_listener_filters_timeout`.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspector {
    /// `None`: no bound (Envoy's `0s`).
    pub timeout: Option<Duration>,
    pub continue_on_timeout: bool,
}

/// Envoy's default `listener_filters_timeout`.
pub const DEFAULT_LISTENER_FILTERS_TIMEOUT: Duration = Duration::from_secs(15);

/// How a listener with several filter chains (or one with a match, or a
/// `tls_inspector`) picks the chain of a connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// The match of each filter chain, in the listener's order.
    pub chains: Vec<ChainMatch>,
    /// `default_filter_chain`: its position among the listener's chains
    /// (after those of `chains`).
    pub default_chain: Option<usize>,
    pub inspector: Option<Inspector>,
}

/// What a connection shows of itself to the match.
#[derive(Debug, Default)]
pub struct Connection {
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    /// What `tls_inspector` found: the server name (lowercase) and the
    /// protocols the ClientHello offers, in its order.
    pub hello: Option<ClientHello>,
}

/// The IP a criterion compares: an IPv4 client on a dual-stack socket
/// (`::ffff:a.b.c.d`) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The longest of `ranges` holding `ip`, as a rank (0: no ranges, which
/// matches anything; `None`: none holds it).
fn prefix_rank(ranges: &[Cidr], ip: Option<IpAddr>) -> Option<u32> {
    if ranges.is_empty() {
        return Some(0);
    }
    let ip = canonical(ip?);
    ranges.iter().filter(|r| r.contains(ip)).map(|r| u32::from(r.len) + 1).max()
}

impl Selection {
    /// Whether the match needs the connection's local address.
    pub fn needs_local(&self) -> bool {
        self.chains.iter().any(ChainMatch::needs_local)
    }

    /// The filter chain for `c`, in Envoy's order: destination port,
    /// destination IP, server name, transport protocol, application
    /// protocols, direct source IP, source type, source IP, source port.
    /// At each step the chains that match most specifically stay (an empty
    /// criterion matching anything, least specifically); Envoy never goes
    /// back to a less specific branch when a later step fails. No chain:
    /// `default_filter_chain`, if any.
    pub fn select(&self, c: &Connection) -> Option<usize> {
        let mut cands: Vec<usize> = (0..self.chains.len()).collect();
        let local = c.local.map(|a| canonical(a.ip()));
        let peer = c.peer.map(|a| canonical(a.ip()));
        let sni = c.hello.as_ref().and_then(|h| h.server_name.as_deref());
        let alpn: &[String] = c.hello.as_ref().map_or(&[], |h| &h.alpn);
        let transport = if c.hello.is_some() { "tls" } else { "raw_buffer" };
        let is_local = peer.is_some_and(|p| p.is_loopback() || Some(p) == local);
        type Rank<'a> = Box<dyn Fn(&ChainMatch) -> Option<u32> + 'a>;
        let steps: [Rank; 9] = [
            Box::new(|m| match m.destination_port {
                None => Some(0),
                Some(p) => (c.local.map(|l| l.port()) == Some(p)).then_some(1),
            }),
            Box::new(|m| prefix_rank(&m.prefix_ranges, local)),
            Box::new(|m| server_name_rank(&m.server_names, sni)),
            Box::new(|m| match &m.transport_protocol {
                None => Some(0),
                Some(t) => (t == transport).then_some(1),
            }),
            Box::new(|m| {
                if m.application_protocols.is_empty() {
                    return Some(0);
                }
                // The client's first protocol some chain names wins.
                let first = alpn.iter().position(|a| m.application_protocols.contains(a))?;
                Some(u32::try_from(alpn.len() - first).unwrap_or(u32::MAX))
            }),
            Box::new(|m| prefix_rank(&m.direct_source_prefix_ranges, peer)),
            Box::new(|m| match m.source_type {
                SourceType::Any => Some(0),
                SourceType::Local => is_local.then_some(1),
                SourceType::External => (!is_local).then_some(1),
            }),
            Box::new(|m| prefix_rank(&m.source_prefix_ranges, peer)),
            Box::new(|m| {
                if m.source_ports.is_empty() {
                    return Some(0);
                }
                c.peer.is_some_and(|p| m.source_ports.contains(&p.port())).then_some(1)
            }),
        ];
        for rank in &steps {
            let ranks: Vec<Option<u32>> = cands.iter().map(|&i| rank(&self.chains[i])).collect();
            let Some(best) = ranks.iter().flatten().max().copied() else {
                cands.clear();
                break;
            };
            cands = cands.into_iter().zip(ranks).filter(|(_, r)| *r == Some(best)).map(|(i, _)| i).collect();
        }
        cands.first().copied().or(self.default_chain)
    }
}

/// How well `names` match the client's server name: exactly (highest),
/// by the longest `*.` wildcard suffix, or not at all when the chain names
/// none (lowest). A client without SNI matches only a chain without names.
fn server_name_rank(names: &[String], sni: Option<&str>) -> Option<u32> {
    if names.is_empty() {
        return Some(0);
    }
    let sni = sni?;
    if names.iter().any(|n| n == sni) {
        return Some(u32::MAX);
    }
    names
        .iter()
        .filter_map(|n| n.strip_prefix('*'))
        .filter(|suffix| sni.len() > suffix.len() && sni.ends_with(suffix))
        .map(|suffix| u32::try_from(suffix.len()).unwrap_or(u32::MAX - 1))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> ChainMatch {
        ChainMatch::default()
    }

    fn conn(local: &str, peer: &str, sni: Option<&str>, alpn: &[&str]) -> Connection {
        Connection {
            local: Some(local.parse().unwrap()),
            peer: Some(peer.parse().unwrap()),
            hello: sni.map(|s| ClientHello {
                server_name: (!s.is_empty()).then(|| s.to_string()),
                alpn: alpn.iter().map(|a| a.to_string()).collect(),
            }),
        }
    }

    #[test]
    fn most_specific_wins_in_envoy_order_without_going_back() {
        let cidr = |s: &str, l| Cidr::new(s.parse().unwrap(), l).unwrap();
        let sel = Selection {
            chains: vec![
                ChainMatch { server_names: vec!["a.example.com".into()], ..m() },
                ChainMatch { server_names: vec!["*.example.com".into()], ..m() },
                ChainMatch { server_names: vec!["*.b.example.com".into()], ..m() },
                ChainMatch { transport_protocol: Some("raw_buffer".into()), ..m() },
                ChainMatch { destination_port: Some(8443), source_prefix_ranges: vec![cidr("10.0.0.0", 8)], ..m() },
                ChainMatch { transport_protocol: Some("tls".into()), application_protocols: vec!["h2".into()], ..m() },
                ChainMatch { transport_protocol: Some("tls".into()), ..m() },
            ],
            default_chain: Some(7),
            inspector: None,
        };
        let l = "127.0.0.1:443";
        assert_eq!(sel.select(&conn(l, "127.0.0.1:1", Some("a.example.com"), &[])), Some(0));
        assert_eq!(sel.select(&conn(l, "127.0.0.1:1", Some("x.example.com"), &[])), Some(1));
        assert_eq!(sel.select(&conn(l, "127.0.0.1:1", Some("x.b.example.com"), &[])), Some(2));
        // `*.example.com` does not match the bare domain.
        assert_eq!(sel.select(&conn(l, "127.0.0.1:1", Some("example.com"), &["h2"])), Some(5));
        assert_eq!(sel.select(&conn(l, "127.0.0.1:1", Some("example.com"), &["http/1.1"])), Some(6));
        assert_eq!(sel.select(&conn(l, "127.0.0.1:1", None, &[])), Some(3));
        // Port 8443 has one chain: a client outside its range gets the
        // default, not a port-less chain.
        assert_eq!(sel.select(&conn("127.0.0.1:8443", "10.1.2.3:1", None, &[])), Some(4));
        assert_eq!(sel.select(&conn("127.0.0.1:8443", "11.1.2.3:1", None, &[])), Some(7));
        let v4mapped = conn("[::ffff:127.0.0.1]:8443", "[::ffff:10.0.0.1]:1", None, &[]);
        assert_eq!(sel.select(&v4mapped), Some(4));
    }

    #[test]
    fn source_type_and_ports() {
        let sel = Selection {
            chains: vec![
                ChainMatch { source_type: SourceType::Local, ..m() },
                ChainMatch { source_type: SourceType::External, source_ports: vec![1000], ..m() },
            ],
            default_chain: None,
            inspector: None,
        };
        assert_eq!(sel.select(&conn("10.0.0.1:80", "127.0.0.5:1", None, &[])), Some(0));
        assert_eq!(sel.select(&conn("10.0.0.1:80", "10.0.0.1:1", None, &[])), Some(0));
        assert_eq!(sel.select(&conn("10.0.0.1:80", "10.0.0.2:1000", None, &[])), Some(1));
        assert_eq!(sel.select(&conn("10.0.0.1:80", "10.0.0.2:1001", None, &[])), None);
    }

    #[test]
    fn keys_expand_lists_and_stop_at_the_limit() {
        let c = ChainMatch { server_names: vec!["a".into(), "b".into()], source_ports: vec![1, 2, 3], ..m() };
        assert_eq!(c.keys(100).map(|k| k.len()), Some(6));
        assert_eq!(c.keys(5), None);
    }

    /// The accept fast path (no peek, no `getsockname`) depends on this:
    /// one chain without match, inspector or default chooses nothing.
    #[test]
    fn only_listeners_that_choose_get_a_selection() {
        let listener = |extra: &str, chain_match: &str| {
            format!(
                r#"
static_resources:
  listeners:
  - name: l
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 8080 }} }}{extra}
    filter_chains:
    - {chain_match}filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: s
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200 }}
          http_filters:
          - name: envoy.filters.http.router
"#
            )
        };
        let selection = |yaml: String| {
            let loaded = crate::config::parse(&yaml).unwrap_or_else(|e| panic!("{e}"));
            loaded.bootstrap.listeners.into_iter().next().unwrap().selection
        };
        assert_eq!(selection(listener("", "")), None);
        assert_eq!(selection(listener("", "filter_chain_match: {}\n      ")), None);
        let inspector = "\n    listener_filters:\n    - name: envoy.filters.listener.tls_inspector";
        let s = selection(listener(inspector, "")).expect("the inspector runs");
        assert_eq!(
            s.inspector,
            Some(Inspector { timeout: Some(DEFAULT_LISTENER_FILTERS_TIMEOUT), continue_on_timeout: false })
        );
        let s = selection(listener("", "filter_chain_match: { source_type: EXTERNAL }\n      ")).expect("a match");
        assert_eq!(s.chains[0].source_type, SourceType::External);
    }
}
