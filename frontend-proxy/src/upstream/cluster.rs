//! The runtime cluster: a Pingora `LoadBalancer` fed by [`EndpointDiscovery`],
//! host selection that honours health and Envoy's panic threshold, the
//! cluster's health checker, outlier detector and circuit breakers.
//! [`super::refresh`] drives the periodic work.

use super::circuit_breaker::CircuitBreaker;
use super::discovery::{host_of, EndpointDiscovery};
use super::dns::{HickoryResolver, Resolver};
use super::health::{ActiveHealthCheck, TlsProbe};
use super::host::Host;
use super::outlier::{AttemptResult, OutlierDetector};
use super::selection::{LeastRequest, Maglev};
use super::{ClusterSpec, DiscoveryType, LbPolicy, UpstreamTls};
use crate::address::Address;
use crate::metrics::ClusterStats;
use crate::tls::{Secrets, UpstreamContext};
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use futures::future::join_all;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result as PResult;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::selection::consistent::KetamaHashing;
use pingora_load_balancing::selection::{BackendIter, BackendSelection, Random, RoundRobin};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{info, warn};

/// How long start-up waits for the first resolution of every cluster before
/// opening listeners anyway (Envoy's cluster warming).
const INITIAL_RESOLUTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Shares the discovery with the `LoadBalancer` that owns a boxed copy.
struct SharedDiscovery(Arc<EndpointDiscovery>);

#[async_trait]
impl ServiceDiscovery for SharedDiscovery {
    async fn discover(&self) -> PResult<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        self.0.discover().await
    }
}

enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    RingHash(LoadBalancer<KetamaHashing>),
    Maglev(LoadBalancer<Maglev>),
    LeastRequest(LoadBalancer<LeastRequest>),
}

macro_rules! with_lb {
    ($b:expr, $lb:ident => $e:expr) => {
        match $b {
            Balancer::RoundRobin($lb) => $e,
            Balancer::Random($lb) => $e,
            Balancer::RingHash($lb) => $e,
            Balancer::Maglev($lb) => $e,
            Balancer::LeastRequest($lb) => $e,
        }
    };
}

fn balancer<S>(discovery: &Arc<EndpointDiscovery>, config: Option<S::Config>) -> LoadBalancer<S>
where
    S: BackendSelection + 'static,
    S::Iter: BackendIter,
{
    let backends = Backends::new(Box::new(SharedDiscovery(discovery.clone())));
    LoadBalancer::from_backends_with_config(backends, config)
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster {cluster:?}: {source}")]
    Dns { cluster: String, source: super::dns::DnsError },
    #[error("cluster {cluster:?}: upstream TLS: {source}")]
    Tls { cluster: String, source: crate::tls::TlsError },
}

/// What a TLS cluster's connections are made with: the trust anchors,
/// the client certificate and the handshake check, loaded at start and
/// followed as their SDS secrets change. Both HTTP engines and the health
/// checker configure their peers from it, each time they make one.
pub struct UpstreamTlsMaterial {
    context: UpstreamContext,
    /// Keeps the cluster's connections to itself in Pingora's pool, which
    /// otherwise shares a connection between peers that differ only in
    /// checks it does not know of (names, pinned hashes, the CA).
    cluster_key: u64,
}

impl UpstreamTlsMaterial {
    fn load(name: &str, tls: &UpstreamTls, secrets: &Secrets) -> Result<Self, crate::tls::TlsError> {
        let context = UpstreamContext::new(
            name,
            tls.trusted_ca.as_ref(),
            tls.client_certificate.as_ref(),
            tls.server_checks.clone(),
            tls.allow_renegotiation,
            secrets,
        )?;
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(name, &mut h);
        Ok(Self { context, cluster_key: std::hash::Hasher::finish(&h) })
    }

    /// Sets a peer of this cluster up for TLS: SNI, the current client
    /// certificate and curves, and the checks. The handshake hook verifies
    /// the chain, names and pins (see `tls/upstream.rs`) once the handshake
    /// is done; when the trusted CAs are all roots, Pingora's connector
    /// verifies the chain during the handshake too (with an SNI only: it
    /// verifies nothing without one), so that a server whose chain does not
    /// verify is refused before our client certificate is sent, as Envoy
    /// does. Its check is a subset of the hook's (no names: Pingora's
    /// host-name check is off; no lists, no pins).
    pub fn apply(&self, tls: &UpstreamTls, peer: &mut HttpPeer) {
        let now = self.context.connecting();
        peer.sni = tls.sni.clone().unwrap_or_default();
        peer.options.verify_cert = now.gate_cas.is_some();
        peer.options.verify_hostname = false;
        peer.options.ca = now.gate_cas.clone();
        peer.options.curves = tls.ecdh_curves.clone().map(std::borrow::Cow::Owned);
        peer.options.upstream_tls_handshake_complete_hook = Some(now.hook.clone());
        peer.client_cert_key = now.client_cert.clone();
        peer.group_key = self.cluster_key;
    }
}

/// A cluster at run time.
pub struct Cluster {
    pub spec: ClusterSpec,
    pub stats: Arc<ClusterStats>,
    upstream_tls: Option<Arc<UpstreamTlsMaterial>>,
    balancer: Balancer,
    discovery: Arc<EndpointDiscovery>,
    host_count: AtomicUsize,
    consecutive_failures: AtomicUsize,
    /// When the refresh loop should run next, as decided by the last refresh (ms).
    next_refresh_ms: AtomicU64,
    pub health_check: Option<ActiveHealthCheck>,
    pub outlier: Option<OutlierDetector>,
    pub breaker: Arc<CircuitBreaker>,
    healthy_hosts: AtomicUsize,
    /// Too few healthy hosts: balance over all of them (Envoy's panic mode).
    panic: AtomicBool,
    /// Wakes the health checker: new hosts need their first check, or the
    /// cluster has just had its first traffic.
    pub(super) hc_wakeup: Notify,
    /// Wakes the discovery loop for a refresh now (a host kept after it
    /// left DNS has failed a check).
    pub(super) refresh_wakeup: Notify,
    /// Told after every applied health check (start-up waits on it).
    pub(super) hc_progress: Notify,
    /// A request has been routed here once (Envoy's "the cluster has had
    /// traffic", which ends the no-traffic health-check intervals).
    had_traffic: AtomicBool,
    /// ROUND_ROBIN with equal weights (every DNS cluster): the hosts, for
    /// a selection that skips Pingora's `select_with` (a `HashSet`, a
    /// `Backend` clone and a SipHash lookup per request, a visible share
    /// of a request on the native engine). `None`: Pingora's balancer selects.
    round_robin: ArcSwapOption<Vec<Arc<Host>>>,
    next: AtomicUsize,
}

/// A host picked for a request.
pub type Selected = Arc<Host>;

impl Cluster {
    /// Builds the cluster; `resolver` overrides the one the spec asks for (tests).
    pub fn new(spec: ClusterSpec, resolver: Option<Arc<dyn Resolver>>) -> Result<Self, ClusterError> {
        Self::with_secrets(spec, resolver, &Secrets::default())
    }

    /// [`Cluster::new`], with the SDS secrets its upstream TLS names
    /// (loaded by the caller, see `sds.rs`).
    pub fn with_secrets(
        spec: ClusterSpec,
        resolver: Option<Arc<dyn Resolver>>,
        secrets: &Secrets,
    ) -> Result<Self, ClusterError> {
        let needs_dns = spec.discovery != DiscoveryType::Static;
        let resolver: Option<Arc<dyn Resolver>> = match (resolver, needs_dns) {
            (Some(r), _) => Some(r),
            (None, true) => Some(Arc::new(
                HickoryResolver::new(&spec.dns)
                    .map_err(|source| ClusterError::Dns { cluster: spec.name.clone(), source })?,
            )),
            (None, false) => None,
        };
        let upstream_tls = match &spec.tls {
            Some(tls) => Some(Arc::new(
                UpstreamTlsMaterial::load(&spec.name, tls, secrets)
                    .map_err(|source| ClusterError::Tls { cluster: spec.name.clone(), source })?,
            )),
            None => None,
        };
        let stats = Arc::new(ClusterStats::default());
        let health_checked = spec.health_check.is_some();
        let discovery = Arc::new(EndpointDiscovery::new(
            spec.name.clone(),
            spec.discovery,
            spec.endpoints.clone(),
            resolver,
            stats.clone(),
            health_checked,
            health_checked && !spec.ignore_health_on_host_removal,
        ));
        let health_check = spec.health_check.clone().map(|h| {
            let tls = spec.tls.clone().zip(upstream_tls.clone());
            let tls = tls.map(|(tls, material)| TlsProbe { tls, material, stats: stats.clone() });
            ActiveHealthCheck::new(h, &spec.name, tls)
        });
        let outlier = spec.outlier.clone().map(OutlierDetector::new);
        let breaker = CircuitBreaker::new(spec.circuit_breakers);
        let balancer = match spec.lb_policy {
            LbPolicy::RoundRobin => Balancer::RoundRobin(balancer(&discovery, None)),
            LbPolicy::Random => Balancer::Random(balancer(&discovery, None)),
            LbPolicy::RingHash => Balancer::RingHash(balancer(&discovery, None)),
            LbPolicy::Maglev => Balancer::Maglev(balancer(&discovery, None)),
            LbPolicy::LeastRequest { choice_count } => Balancer::LeastRequest(balancer(&discovery, Some(choice_count))),
        };
        Ok(Self {
            spec,
            stats,
            upstream_tls,
            balancer,
            discovery,
            host_count: AtomicUsize::new(0),
            consecutive_failures: AtomicUsize::new(0),
            next_refresh_ms: AtomicU64::new(0),
            health_check,
            outlier,
            breaker,
            healthy_hosts: AtomicUsize::new(0),
            panic: AtomicBool::new(false),
            hc_wakeup: Notify::new(),
            refresh_wakeup: Notify::new(),
            hc_progress: Notify::new(),
            had_traffic: AtomicBool::new(false),
            round_robin: ArcSwapOption::empty(),
            next: AtomicUsize::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// How this cluster's TLS connections are made (`None`: plain text).
    pub fn upstream_tls(&self) -> Option<(&UpstreamTls, &UpstreamTlsMaterial)> {
        self.spec.tls.as_ref().zip(self.upstream_tls.as_deref())
    }

    /// Whether the policy hashes a request key (RING_HASH, MAGLEV).
    pub fn uses_hash_key(&self) -> bool {
        matches!(self.spec.lb_policy, LbPolicy::RingHash | LbPolicy::Maglev)
    }

    /// Picks a host, skipping the addresses in `avoid` (hosts already tried
    /// by this request). `None` when no host is available.
    pub fn select(&self, key: &[u8], avoid: &[Address]) -> Option<Selected> {
        self.note_traffic();
        if let Some(hosts) = self.round_robin.load().as_deref() {
            let panic = self.panic.load(Relaxed);
            // Each host at most once, starting at the next one in turn.
            for _ in 0..hosts.len() {
                let host = &hosts[self.next.fetch_add(1, Relaxed) % hosts.len()];
                if acceptable(host, avoid, panic) {
                    return Some(host.clone());
                }
            }
            return None;
        }
        let max_iterations = self.host_count.load(Relaxed) * 2 + 4;
        let panic = self.panic.load(Relaxed);
        let accept = |b: &Backend, ready: bool| ready && host_of(b).is_some_and(|h| acceptable(h, avoid, panic));
        let backend = with_lb!(&self.balancer, lb => lb.select_with(key, max_iterations, accept))?;
        host_of(&backend).cloned()
    }

    /// Records that the cluster has traffic. The first time, hosts waiting
    /// out a no-traffic interval are checked now instead (see `refresh`).
    fn note_traffic(&self) {
        // A load first, so the request path does not write a shared cache
        // line on every request.
        let first = !self.had_traffic.load(Relaxed) && !self.had_traffic.swap(true, Relaxed);
        if first && self.health_check.is_some() {
            self.hc_wakeup.notify_one();
        }
    }

    /// Whether a request has ever been routed to this cluster.
    pub fn had_traffic(&self) -> bool {
        self.had_traffic.load(Relaxed)
    }

    /// Whether [`Self::select`] has a host to offer outside `avoid`, without
    /// selecting one (which would move the round-robin position).
    pub fn has_host_outside(&self, avoid: &[Address]) -> bool {
        let panic = self.panic.load(Relaxed);
        self.hosts().iter().any(|h| acceptable(h, avoid, panic))
    }

    /// Hosts in the cluster and how many of them are healthy.
    pub fn membership(&self) -> (usize, usize) {
        (self.host_count.load(Relaxed), self.healthy_hosts.load(Relaxed))
    }

    /// Whether the cluster is in panic mode (balancing over unhealthy hosts too).
    pub fn in_panic(&self) -> bool {
        self.panic.load(Relaxed)
    }

    /// Recounts healthy hosts after a health change and decides panic mode:
    /// below `healthy_panic_threshold` percent healthy, health is ignored.
    pub fn recompute_health(&self) {
        let hosts = self.hosts();
        let total = hosts.len();
        let healthy = hosts.iter().filter(|h| h.is_healthy()).count();
        self.host_count.store(total, Relaxed);
        self.healthy_hosts.store(healthy, Relaxed);
        let panic = total > 0 && (healthy as f64) * 100.0 < self.spec.healthy_panic_threshold * total as f64;
        if self.panic.swap(panic, Relaxed) != panic {
            if panic {
                warn!(cluster = %self.spec.name, healthy, total, "panic mode: too few healthy hosts, balancing over all of them");
            } else {
                info!(cluster = %self.spec.name, healthy, total, "left panic mode");
            }
        }
    }

    /// Feeds one upstream attempt's result to outlier detection.
    pub fn record_attempt(&self, host: &Host, result: AttemptResult) {
        if let Some(o) = &self.outlier {
            if o.record(host, result, self.host_count.load(Relaxed)) {
                self.recompute_health();
            }
        }
    }

    /// The current hosts.
    pub fn hosts(&self) -> Vec<Arc<Host>> {
        let backends = with_lb!(&self.balancer, lb => lb.backends().get_backend());
        backends.iter().filter_map(|b| host_of(b).cloned()).collect()
    }

    /// Runs discovery once and publishes the result; returns when to run next.
    pub async fn refresh(&self) -> Duration {
        let next = self.refresh_once().await;
        self.next_refresh_ms.store(next.as_millis() as u64, Relaxed);
        next
    }

    /// The delay the last refresh asked for (the refresh rate before any).
    pub(super) fn next_refresh(&self) -> Duration {
        match self.next_refresh_ms.load(Relaxed) {
            0 => self.spec.dns.refresh_rate,
            ms => Duration::from_millis(ms),
        }
    }

    async fn refresh_once(&self) -> Duration {
        if let Err(e) = with_lb!(&self.balancer, lb => lb.update().await) {
            warn!(cluster = %self.spec.name, error = %e, "endpoint discovery failed");
        }
        if let Balancer::RoundRobin(_) = self.balancer {
            let hosts = self.hosts();
            let equal_weights = hosts.windows(2).all(|w| w[0].weight == w[1].weight);
            self.round_robin.store((equal_weights && !hosts.is_empty()).then(|| Arc::new(hosts)));
        }
        self.recompute_health();
        if self.health_check.is_some() && self.hosts().iter().any(|h| h.health.pending_active_hc.load(Relaxed)) {
            self.hc_wakeup.notify_one();
        }
        let outcome = self.discovery.last_outcome();
        let dns = &self.spec.dns;
        match outcome {
            Some(o) if o.failed => {
                let n = self.consecutive_failures.fetch_add(1, Relaxed).min(16) as u32;
                let (base, max) = dns.failure_refresh;
                base.saturating_mul(1 << n.min(10)).min(max)
            }
            Some(o) => {
                self.consecutive_failures.store(0, Relaxed);
                match (dns.respect_ttl, o.ttl) {
                    (true, Some(ttl)) if !ttl.is_zero() => ttl,
                    _ => dns.refresh_rate,
                }
            }
            None => dns.refresh_rate,
        }
    }

    pub(super) fn is_dynamic(&self) -> bool {
        self.spec.discovery != DiscoveryType::Static
    }
}

/// The selection rule: not already tried by this request, and healthy
/// unless the cluster is in panic mode.
fn acceptable(host: &Host, avoid: &[Address], panic: bool) -> bool {
    !avoid.contains(&host.addr) && (panic || host.is_healthy())
}

/// Every cluster, indexed by the ids routes were resolved to.
pub struct ClusterSet {
    clusters: Vec<Arc<Cluster>>,
}

impl ClusterSet {
    pub fn new(clusters: Vec<Arc<Cluster>>) -> Self {
        Self { clusters }
    }

    pub fn get(&self, id: usize) -> Option<&Arc<Cluster>> {
        self.clusters.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.clusters.iter()
    }

    /// First discovery of every cluster, concurrently, bounded in time.
    pub async fn warm(&self) {
        let all = join_all(self.clusters.iter().map(|c| c.refresh()));
        if tokio::time::timeout(INITIAL_RESOLUTION_TIMEOUT, all).await.is_err() {
            warn!("initial endpoint discovery did not finish in time; starting anyway");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn cluster(weights: [u32; 3]) -> Cluster {
        let endpoints: String = (1..=3)
            .zip(weights)
            .map(|(i, w)| {
                format!(
                    "\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.{i}, port_value: 80 }} }} }}\n          load_balancing_weight: {w}"
                )
            })
            .collect();
        let text = format!(
            "static_resources:\n  listeners: []\n  clusters:\n  - name: c\n    connect_timeout: 1s\n    type: STATIC\n    lb_policy: ROUND_ROBIN\n    load_assignment:\n      cluster_name: c\n      endpoints:\n      - lb_endpoints:{endpoints}\n"
        );
        let loaded = crate::config::parse(&text).expect("valid bootstrap");
        let spec = loaded.bootstrap.clusters.into_iter().next().expect("one cluster");
        let c = Cluster::new(spec, None).expect("cluster");
        c.refresh().await;
        c
    }

    fn last_octet(h: &Host) -> u8 {
        match h.addr.ip().expect("an IP host").ip() {
            std::net::IpAddr::V4(ip) => ip.octets()[3],
            std::net::IpAddr::V6(_) => 0,
        }
    }

    #[tokio::test]
    async fn round_robin_takes_turns_and_skips_unusable_hosts() {
        let c = cluster([1, 1, 1]).await;
        assert!(c.round_robin.load().is_some(), "equal weights use the cluster's own round robin");
        let picks: Vec<u8> = (0..6).map(|_| last_octet(&c.select(b"", &[]).unwrap())).collect();
        assert_eq!(picks[..3], picks[3..], "{picks:?}");
        let mut first = picks[..3].to_vec();
        first.sort();
        assert_eq!(first, [1, 2, 3]);

        let second = Address::Ip("127.0.0.2:80".parse().unwrap());
        for _ in 0..6 {
            assert_ne!(
                last_octet(&c.select(b"", std::slice::from_ref(&second)).unwrap()),
                2,
                "a tried host was picked again"
            );
        }
        let hosts = c.hosts();
        hosts[0].health.failed_active_hc.store(true, Relaxed);
        hosts[1].health.failed_active_hc.store(true, Relaxed);
        for _ in 0..6 {
            assert_eq!(last_octet(&c.select(b"", &[]).unwrap()), 3);
        }
        hosts[2].health.failed_active_hc.store(true, Relaxed);
        c.recompute_health();
        // All unhealthy: panic mode balances over all of them again.
        assert!(c.in_panic());
        assert!(c.select(b"", &[]).is_some());
        let all: Vec<Address> = hosts.iter().map(|h| h.addr.clone()).collect();
        assert!(c.select(b"", &all).is_none());
    }

    #[tokio::test]
    async fn weighted_round_robin_follows_the_weights() {
        let c = cluster([1, 2, 1]).await;
        assert!(c.round_robin.load().is_none(), "weights go through Pingora's weighted round robin");
        let mut counts = [0usize; 4];
        for _ in 0..400 {
            counts[last_octet(&c.select(b"", &[]).unwrap()) as usize] += 1;
        }
        assert_eq!(counts[1..], [100, 200, 100], "{counts:?}");
    }
}
