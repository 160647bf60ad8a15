//! The DNS seam: a [`Resolver`] trait the discovery code calls, and the
//! production implementation on hickory-resolver.
//!
//! hickory's own cache is disabled: refresh timing is discovery's business
//! (Envoy re-resolves every `dns_refresh_rate` and only honours TTLs with
//! `respect_dns_ttl`), and a cached TTL-600 answer from Docker's DNS would
//! hide a scale-up for ten minutes.

use super::{DnsSpec, LookupFamily};
use async_trait::async_trait;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use std::net::IpAddr;
use std::time::Duration;

/// The addresses a name resolved to and the smallest TTL among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub addrs: Vec<IpAddr>,
    pub ttl: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("failed to resolve {host}: {message}")]
    Lookup { host: String, message: String },
    #[error("cannot read the system resolver configuration: {0}")]
    SystemConfig(String),
}

/// Resolves host names. Implementations must not cache beyond one call.
#[async_trait]
pub trait Resolver: Send + Sync {
    /// A name that does not exist (NXDOMAIN) or has no address records is a
    /// successful, empty resolution; only failures to get an answer are errors.
    async fn resolve(&self, host: &str) -> Result<Resolution, DnsError>;
}

/// hickory-resolver with the cluster's name servers, or the system's.
pub struct HickoryResolver {
    inner: TokioResolver,
}

/// Per-query timeout; with two attempts a dead server costs at most 4 s.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

impl HickoryResolver {
    pub fn new(spec: &DnsSpec) -> Result<Self, DnsError> {
        let (config, mut opts) = if spec.resolvers.is_empty() {
            let (config, mut opts) =
                hickory_resolver::system_conf::read_system_conf().map_err(|e| DnsError::SystemConfig(e.to_string()))?;
            // /etc/hosts first, as c-ares does for Envoy.
            opts.use_hosts_file = ResolveHosts::Always;
            (config, opts)
        } else {
            let mut config = ResolverConfig::new();
            for addr in &spec.resolvers {
                config.add_name_server(NameServerConfig::new(*addr, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(*addr, Protocol::Tcp));
            }
            let mut opts = ResolverOpts::default();
            opts.use_hosts_file = ResolveHosts::Never;
            (config, opts)
        };
        // hickory's cache (moka) evicts lazily even at size 0, so `resolve`
        // also clears it before every lookup.
        opts.cache_size = 0;
        // One server at a time: UDP first, TCP when it fails or truncates.
        opts.num_concurrent_reqs = 1;
        opts.timeout = QUERY_TIMEOUT;
        opts.attempts = 2;
        opts.ip_strategy = match spec.lookup_family {
            LookupFamily::Auto => LookupIpStrategy::Ipv6thenIpv4,
            LookupFamily::V4Only => LookupIpStrategy::Ipv4Only,
            LookupFamily::V6Only => LookupIpStrategy::Ipv6Only,
            LookupFamily::V4Preferred => LookupIpStrategy::Ipv4thenIpv6,
            LookupFamily::All => LookupIpStrategy::Ipv4AndIpv6,
        };
        let inner =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default()).with_options(opts).build();
        Ok(Self { inner })
    }
}

/// NXDOMAIN, or NOERROR without address records: the name really has no
/// address. hickory also reports SERVFAIL and REFUSED as "no records";
/// those are failures, and must keep the last good hosts.
fn is_authoritative_empty(e: &hickory_resolver::ResolveError) -> bool {
    use hickory_resolver::proto::op::ResponseCode;
    use hickory_resolver::proto::ProtoErrorKind;
    match e.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => {
            matches!(*response_code, ResponseCode::NXDomain | ResponseCode::NoError)
        }
        _ => false,
    }
}

#[async_trait]
impl Resolver for HickoryResolver {
    async fn resolve(&self, host: &str) -> Result<Resolution, DnsError> {
        self.inner.clear_cache();
        match self.inner.lookup_ip(host).await {
            Ok(lookup) => {
                let ttl = lookup
                    .as_lookup()
                    .records()
                    .iter()
                    .filter(|r| r.data().ip_addr().is_some())
                    .map(|r| Duration::from_secs(u64::from(r.ttl())))
                    .min();
                let mut addrs: Vec<IpAddr> = lookup.iter().collect();
                addrs.dedup();
                Ok(Resolution { addrs, ttl })
            }
            Err(e) if is_authoritative_empty(&e) => {
                tracing::debug!(host, error = %e, "name has no address records");
                Ok(Resolution { addrs: Vec::new(), ttl: None })
            }
            Err(e) => Err(DnsError::Lookup { host: host.to_string(), message: e.to_string() }),
        }
    }
}
