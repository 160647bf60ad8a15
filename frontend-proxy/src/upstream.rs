//! Upstream clusters: what a cluster is configured to be ([`ClusterSpec`]),
//! how its endpoints are discovered (static addresses or DNS re-resolved on a
//! schedule), and how a request picks one.
//!
//! Layout: `dns` (resolver seam), `discovery` (Pingora `ServiceDiscovery`
//! for STATIC / STRICT_DNS / LOGICAL_DNS), `host` (per-endpoint state,
//! health and counters), `selection` (load-balancing policies Pingora
//! lacks), `health` (active checks), `outlier` (passive ejection),
//! `circuit_breaker`, `cluster` (the runtime cluster tying them together)
//! and `refresh` (the background service running the periodic work).

mod circuit_breaker;
mod cluster;
mod discovery;
pub mod dns;
mod health;
mod host;
mod outlier;
mod refresh;
mod selection;

pub use circuit_breaker::{CircuitBreaker, Overflow, Permit};
pub use cluster::{Cluster, ClusterError, ClusterSet, Selected, UpstreamTlsMaterial};
pub use discovery::EndpointDiscovery;
pub use health::Probe;
pub use host::{ActiveRequest, Host, HostHealth};
pub use outlier::AttemptResult;
pub use refresh::ClusterManager;

use crate::metrics::ClusterStats;
use crate::tls::{ClientCertificate, ServerCertificateChecks, ServerVerdict, TlsVersion, TrustedCa, VerifyFailure};
use std::net::SocketAddr;
use std::sync::Arc;
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
    pub health_check: Option<HealthCheckSpec>,
    pub outlier: Option<OutlierSpec>,
    pub circuit_breakers: CircuitBreakerSpec,
    /// Below this share of healthy hosts (percent), health is ignored (Envoy's panic mode).
    pub healthy_panic_threshold: f64,
    /// Remove a host that left DNS even while it passes health checks.
    pub ignore_health_on_host_removal: bool,
    /// The HTTP version spoken to the hosts, and its settings.
    pub http: UpstreamHttp,
    /// `upstream_connection_options.tcp_keepalive`: probes on upstream connections.
    pub tcp_keepalive: Option<TcpKeepaliveSpec>,
}

/// Which HTTP version a cluster speaks to its hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamCodec {
    #[default]
    Http1,
    /// HTTP/2: h2c with prior knowledge in plain text, h2 over TLS (ALPN
    /// offers h2 alone).
    Http2,
    /// `auto_config`: ALPN offers h2 and HTTP/1.1 and the host chooses (TLS only).
    Alpn,
    /// `use_downstream_protocol_config`: the version the client spoke.
    Downstream,
}

impl UpstreamCodec {
    /// Whether a request that arrived in HTTP/1.1 may go upstream in h2.
    pub fn h2_for_http1_client(self) -> bool {
        matches!(self, Self::Http2 | Self::Alpn)
    }
}

/// `typed_extension_protocol_options` (or the deprecated cluster fields).
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamHttp {
    pub codec: UpstreamCodec,
    pub http2: Http2Settings,
    /// How long an unused connection is kept open (`None`: until the host closes it).
    pub idle_timeout: Option<Duration>,
}

impl Default for UpstreamHttp {
    fn default() -> Self {
        Self { codec: UpstreamCodec::Http1, http2: Http2Settings::default(), idle_timeout: Some(DEFAULT_IDLE_TIMEOUT) }
    }
}

/// How long an idle pooled upstream connection is kept when the cluster
/// does not say (`common_http_protocol_options.idle_timeout`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// `http2_protocol_options`, with Envoy's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Http2Settings {
    /// Streams opened at once on one connection (the host's own limit, if
    /// lower, applies too).
    pub max_concurrent_streams: u32,
    /// Flow-control windows; `None`: the HTTP/2 client's 8 MiB, not
    /// Envoy's 256 MiB, which is also what a stream may hold in memory
    /// while its client reads slowly.
    pub initial_stream_window_size: Option<u32>,
    pub initial_connection_window_size: Option<u32>,
    /// `connection_keepalive.interval`: a PING this often (its timeout is 5 s).
    pub ping_interval: Option<Duration>,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 2_147_483_647,
            initial_stream_window_size: None,
            initial_connection_window_size: None,
            ping_interval: None,
        }
    }
}

/// Envoy's `TcpKeepalive`, in seconds and probes; `None` keeps the system's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpKeepaliveSpec {
    pub time: Option<u32>,
    pub interval: Option<u32>,
    pub probes: Option<u32>,
}

impl TcpKeepaliveSpec {
    /// Linux's defaults (`net.ipv4.tcp_keepalive_{time,intvl,probes}`), for
    /// Pingora's connector, which takes all three.
    const SYSTEM: (u32, u32, u32) = (7200, 75, 9);

    pub fn socket2(&self) -> socket2::TcpKeepalive {
        let mut k = socket2::TcpKeepalive::new();
        if let Some(t) = self.time {
            k = k.with_time(std::time::Duration::from_secs(t.into()));
        }
        if let Some(i) = self.interval {
            k = k.with_interval(std::time::Duration::from_secs(i.into()));
        }
        if let Some(p) = self.probes {
            k = k.with_retries(p);
        }
        k
    }

    pub fn pingora(&self) -> pingora_core::protocols::l4::ext::TcpKeepalive {
        let (time, interval, probes) = Self::SYSTEM;
        pingora_core::protocols::l4::ext::TcpKeepalive {
            idle: std::time::Duration::from_secs(self.time.unwrap_or(time).into()),
            interval: std::time::Duration::from_secs(self.interval.unwrap_or(interval).into()),
            count: self.probes.unwrap_or(probes) as usize,
            #[cfg(target_os = "linux")]
            user_timeout: std::time::Duration::ZERO,
        }
    }
}

/// `health_checks[0]` of a cluster. Which interval follows a check is
/// Envoy's rule, in [`health`]'s `next_interval`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckSpec {
    pub timeout: Duration,
    /// After a pass that leaves a healthy host healthy (or makes it so).
    pub interval: Duration,
    /// After a failure of an unhealthy host, or one that makes it so
    /// (defaults to `interval`).
    pub unhealthy_interval: Duration,
    /// After a failure of a healthy host that is still below
    /// `unhealthy_threshold` (defaults to `unhealthy_interval`).
    pub unhealthy_edge_interval: Duration,
    /// After a pass of an unhealthy host that is still below
    /// `healthy_threshold` (defaults to `interval`).
    pub healthy_edge_interval: Duration,
    /// Every check while the cluster has never had traffic (default 60 s),
    /// except passes of healthy hosts, which use the next one.
    pub no_traffic_interval: Duration,
    /// Defaults to `no_traffic_interval`.
    pub no_traffic_healthy_interval: Duration,
    /// A host's first check waits a random time below this (0: at once).
    pub initial_jitter: Duration,
    /// Every wait gets a random time below this added.
    pub interval_jitter: Duration,
    /// And a random share below this percentage of the wait itself.
    pub interval_jitter_percent: u32,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    pub kind: HealthCheckKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// GET `path`; a status outside `expected` (`[start, end)` ranges) fails at once.
    Http { path: String, host: Option<String>, expected: Vec<(u16, u16)> },
    /// A TCP connect.
    Tcp,
}

/// `outlier_detection`: passive ejection of hosts that keep failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierSpec {
    pub consecutive_5xx: u32,
    /// Percent of detections that eject (Envoy's `enforcing_*`).
    pub enforcing_consecutive_5xx: u32,
    pub consecutive_gateway_failure: u32,
    pub enforcing_consecutive_gateway_failure: u32,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

/// `circuit_breakers.thresholds` for the DEFAULT priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakerSpec {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
}

impl Default for CircuitBreakerSpec {
    /// Envoy's defaults.
    fn default() -> Self {
        Self { max_connections: 1024, max_pending_requests: 1024, max_requests: 1024, max_retries: 3 }
    }
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
    /// `health_check_config.port_value`: health check this port instead.
    pub health_check_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointAddress {
    Ip(SocketAddr),
    Dns {
        host: String,
        port: u16,
    },
    /// A Unix domain socket (STATIC clusters only).
    Pipe(Arc<crate::address::Pipe>),
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

/// A cluster's `UpstreamTlsContext`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    pub sni: Option<String>,
    /// Verify the upstream's certificate against these CAs (fixed, or an
    /// SDS secret's, with its revocation lists); Envoy does not verify
    /// without a validation context, and neither do we.
    pub trusted_ca: Option<TrustedCa>,
    /// What the upstream's certificate must carry besides its chain (only
    /// with `trusted_ca`); checked once the handshake is done, before any
    /// request is written ([`UpstreamTls::check_connection`]).
    pub server_checks: ServerCertificateChecks,
    /// `common_tls_context.tls_certificates[0]` or the secret of
    /// `tls_certificate_sds_secret_configs[0]`: presented to the upstream (mTLS).
    pub client_certificate: Option<ClientCertificate>,
    /// The lowest version a handshake may settle on (`tls_params`; Envoy's
    /// default TLSv1_2). Pingora's connector offers from TLS 1.0, so a
    /// connection that negotiated less is refused before any request is
    /// written on it.
    pub min_version: TlsVersion,
    /// `allow_renegotiation`: a server's TLS 1.2 renegotiation request is
    /// followed (Envoy's default, and ours, refuses it).
    pub allow_renegotiation: bool,
    /// `tls_params.ecdh_curves`, as an OpenSSL groups list (requests and
    /// health checks).
    pub ecdh_curves: Option<String>,
}

/// Why a finished handshake may not carry requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsRefusal {
    /// Below the cluster's minimum version.
    Version(String),
    /// The upstream's certificate failed the validation context.
    Verify(VerifyFailure),
}

impl std::fmt::Display for TlsRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsRefusal::Version(why) => f.write_str(why),
            TlsRefusal::Verify(why) => why.fmt(f),
        }
    }
}

impl UpstreamTls {
    /// Whether a handshake that negotiated `version` (OpenSSL's name) may carry requests.
    pub fn check_negotiated(&self, version: &str) -> Result<(), String> {
        match TlsVersion::negotiated(version) {
            Some(v) if v >= self.min_version => Ok(()),
            _ => Err(format!("upstream negotiated {version}, below the cluster's minimum {:?}", self.min_version)),
        }
    }

    /// Whether a finished handshake (its digest) may carry requests: the
    /// version, and with a validation context the verdict on the upstream's
    /// certificate. A connection without a verdict is refused too.
    pub fn check_connection(&self, digest: Option<&pingora_core::protocols::tls::SslDigest>) -> Result<(), TlsRefusal> {
        let version = digest.map(|d| d.version.as_ref()).unwrap_or_default();
        self.check_negotiated(version).map_err(TlsRefusal::Version)?;
        if self.trusted_ca.is_none() {
            return Ok(());
        }
        match digest.and_then(crate::tls::verdict) {
            Some(ServerVerdict(Ok(()))) => Ok(()),
            Some(ServerVerdict(Err(why))) => Err(TlsRefusal::Verify(why.clone())),
            None => Err(TlsRefusal::Verify(VerifyFailure::Chain("the handshake was not checked".into()))),
        }
    }

    /// [`UpstreamTls::check_connection`], counting a refused certificate in
    /// the cluster's `ssl.fail_verify_*` (requests and health checks alike).
    pub fn admit(
        &self,
        digest: Option<&pingora_core::protocols::tls::SslDigest>,
        stats: &ClusterStats,
    ) -> Result<(), TlsRefusal> {
        self.check_connection(digest).inspect_err(|why| {
            if let TlsRefusal::Verify(failure) = why {
                stats.count_verify_failure(failure);
            }
        })
    }
}

/// Counts a failed TLS connect that was OpenSSL refusing the upstream's
/// chain during the handshake (`ssl.fail_verify_error`).
pub fn count_handshake_error(stats: &ClusterStats, error: &pingora_error::ErrorType) {
    if matches!(error, pingora_error::ErrorType::InvalidCert) {
        stats.count_verify_failure(&VerifyFailure::Chain(String::new()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_negotiated_version_below_the_minimum_is_refused() {
        let tls = UpstreamTls {
            sni: None,
            allow_renegotiation: false,
            trusted_ca: None,
            server_checks: ServerCertificateChecks::default(),
            client_certificate: None,
            min_version: TlsVersion::V1_3,
            ecdh_curves: None,
        };
        assert!(tls.check_negotiated("TLSv1.3").is_ok());
        assert!(tls.check_negotiated("TLSv1.2").is_err());
        // A connection that says nothing about its version is not trusted either.
        assert!(tls.check_negotiated("").is_err());
        let default = UpstreamTls { min_version: TlsVersion::V1_2, ..tls };
        assert!(default.check_negotiated("TLSv1.2").is_ok());
        assert!(default.check_negotiated("TLSv1.1").is_err());
    }
}
