//! Upstream clusters: what a cluster is configured to be ([`ClusterSpec`]),
//! how its endpoints are discovered (static addresses or DNS re-resolved on a
//! schedule), and how a request picks one.
//!
//! Layout: `dns` (resolver seam), `discovery` (Pingora `ServiceDiscovery`
//! for STATIC / STRICT_DNS / LOGICAL_DNS), `host` (per-endpoint state and
//! counters), `selection` (load-balancing policies Pingora lacks),
//! `cluster` (the runtime cluster tying them together and its refresh loop).

mod cluster;
mod discovery;
pub mod dns;
mod host;
mod selection;

pub use cluster::{Cluster, ClusterError, ClusterManager, ClusterSet, Selected};
pub use discovery::EndpointDiscovery;
pub use host::{ActiveRequest, Host, HostStats};

use crate::config::model::PemSource;
use std::net::SocketAddr;
use std::time::Duration;

/// A cluster as configured.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub name: String,
    pub discovery: DiscoveryType,
    pub endpoints: Vec<EndpointSpec>,
    pub lb_policy: LbPolicy,
    pub connect_timeout: Duration,
    pub dns: DnsSpec,
    pub tls: Option<UpstreamTls>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryType {
    Static,
    /// Every address of every endpoint name is a host; re-resolved on a schedule.
    StrictDns,
    /// Only the first address of the (single) endpoint name is used.
    LogicalDns,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    pub address: EndpointAddress,
    pub weight: u32,
    /// `endpoint.hostname`, used by `auto_host_rewrite`.
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointAddress {
    Ip(SocketAddr),
    Dns { host: String, port: u16 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    Random,
    /// Consistent hashing on a ring (Ketama).
    RingHash,
    /// Consistent hashing with a Maglev lookup table.
    Maglev,
    /// Power of `choice_count` random choices, fewest active requests wins.
    LeastRequest {
        choice_count: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSpec {
    pub refresh_rate: Duration,
    /// Retry interval after a failed lookup: starts at the first value and
    /// doubles up to the second.
    pub failure_refresh: (Duration, Duration),
    pub respect_ttl: bool,
    pub lookup_family: LookupFamily,
    /// Name servers to ask; empty: the system's configuration.
    pub resolvers: Vec<SocketAddr>,
}

/// `dns_lookup_family`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupFamily {
    /// IPv6, falling back to IPv4 when there is none.
    Auto,
    V4Only,
    V6Only,
    /// IPv4, falling back to IPv6 when there is none.
    V4Preferred,
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    pub sni: Option<String>,
    /// Verify the upstream's certificate against this CA; Envoy does not
    /// verify without a validation context, and neither do we.
    pub trusted_ca: Option<PemSource>,
}
