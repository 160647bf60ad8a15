//! Endpoint discovery for STATIC, STRICT_DNS and LOGICAL_DNS clusters, as a
//! Pingora [`ServiceDiscovery`].
//!
//! Envoy's semantics: each endpoint name is resolved on its own; a failed
//! lookup keeps that name's last good addresses; a successful empty answer
//! empties it; duplicate addresses collapse into one host. DNS is never
//! resolved on the request path: the cluster's refresh loop calls
//! `discover()` and publishes the result.

use super::dns::Resolver;
use super::host::Host;
use super::{DiscoveryType, EndpointAddress, EndpointSpec};
use crate::address::Address;
use crate::metrics::ClusterStats;
use async_trait::async_trait;
use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_error::Result;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::Backend;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tracing::{debug, info, warn};

/// What the last refresh concluded, for the refresh loop's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshOutcome {
    pub failed: bool,
    /// Smallest TTL seen in this refresh's answers.
    pub ttl: Option<Duration>,
}

pub struct EndpointDiscovery {
    cluster: String,
    kind: DiscoveryType,
    endpoints: Vec<EndpointSpec>,
    resolver: Option<Arc<dyn Resolver>>,
    stats: Arc<ClusterStats>,
    /// New hosts start unhealthy until their first health check passes.
    health_checked: bool,
    /// Keep hosts that left DNS while they pass health checks.
    retain_passing: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Last good addresses of each endpoint, by endpoint index.
    last_good: HashMap<usize, Vec<Address>>,
    /// Hosts of the current membership, kept so their counters survive refreshes.
    hosts: HashMap<Address, Arc<Host>>,
    outcome: Option<RefreshOutcome>,
}

impl EndpointDiscovery {
    pub fn new(
        cluster: String,
        kind: DiscoveryType,
        endpoints: Vec<EndpointSpec>,
        resolver: Option<Arc<dyn Resolver>>,
        stats: Arc<ClusterStats>,
        health_checked: bool,
        retain_passing: bool,
    ) -> Self {
        Self {
            cluster,
            kind,
            endpoints,
            resolver,
            stats,
            health_checked,
            retain_passing,
            state: Mutex::new(State::default()),
        }
    }

    /// The outcome of the most recent `discover()` call.
    pub fn last_outcome(&self) -> Option<RefreshOutcome> {
        self.lock().outcome
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves every endpoint; returns (index, addresses or None on failure).
    async fn resolve_all(&self) -> (Vec<(usize, Option<Vec<Address>>)>, Option<Duration>) {
        let mut out = Vec::with_capacity(self.endpoints.len());
        let mut ttl: Option<Duration> = None;
        for (i, ep) in self.endpoints.iter().enumerate() {
            match &ep.address {
                EndpointAddress::Ip(addr) => out.push((i, Some(vec![Address::Ip(*addr)]))),
                EndpointAddress::Pipe(pipe) => out.push((i, Some(vec![Address::Pipe(pipe.clone())]))),
                EndpointAddress::Dns { host, port } => {
                    let Some(resolver) = &self.resolver else {
                        out.push((i, None));
                        continue;
                    };
                    match resolver.resolve(host).await {
                        Ok(res) => {
                            ttl = match (ttl, res.ttl) {
                                (Some(a), Some(b)) => Some(a.min(b)),
                                (a, b) => a.or(b),
                            };
                            let mut addrs: Vec<Address> =
                                res.addrs.iter().map(|ip| Address::Ip(SocketAddr::new(*ip, *port))).collect();
                            if self.kind == DiscoveryType::LogicalDns {
                                addrs.truncate(1);
                            }
                            if addrs.is_empty() {
                                debug!(cluster = %self.cluster, host = %host, "name has no addresses");
                            }
                            out.push((i, Some(addrs)));
                        }
                        Err(e) => {
                            warn!(cluster = %self.cluster, error = %e, "DNS resolution failed; keeping the last known addresses");
                            out.push((i, None));
                        }
                    }
                }
            }
        }
        (out, ttl)
    }
}

#[async_trait]
impl ServiceDiscovery for EndpointDiscovery {
    async fn discover(&self) -> Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let dns = self.endpoints.iter().any(|e| matches!(e.address, EndpointAddress::Dns { .. }));
        if dns {
            self.stats.update_attempt.fetch_add(1, Relaxed);
        }
        let (results, ttl) = self.resolve_all().await;
        let failed = results.iter().any(|(_, r)| r.is_none());

        let mut state = self.lock();
        let mut backends = BTreeSet::new();
        let mut hosts = HashMap::new();
        for (i, result) in results {
            let addrs = match result {
                Some(addrs) => {
                    state.last_good.insert(i, addrs.clone());
                    addrs
                }
                None => state.last_good.get(&i).cloned().unwrap_or_default(),
            };
            let ep = &self.endpoints[i];
            let hostname = ep.hostname.clone().or_else(|| match &ep.address {
                EndpointAddress::Dns { host, .. } => Some(host.clone()),
                EndpointAddress::Ip(_) | EndpointAddress::Pipe(_) => None,
            });
            for addr in addrs {
                if hosts.contains_key(&addr) {
                    continue; // duplicates collapse; the first endpoint wins
                }
                let Some(backend_addr) = pingora_addr(&self.cluster, &addr) else { continue };
                let host = state.hosts.get(&addr).filter(|h| h.weight == ep.weight).cloned().unwrap_or_else(|| {
                    Host::new(addr.clone(), hostname.clone(), ep.weight, self.health_checked, ep.health_check_port)
                });
                host.health.pending_removal.store(false, Relaxed);
                let mut backend = Backend { addr: backend_addr, weight: ep.weight as usize, ext: Default::default() };
                backend.ext.insert(host.clone());
                backends.insert(backend);
                hosts.insert(addr, host);
            }
        }
        if self.retain_passing {
            // Envoy: a host gone from DNS but passing health checks keeps
            // its traffic until it fails one.
            for (addr, host) in &state.hosts {
                let h = &host.health;
                if hosts.contains_key(addr) || h.failed_active_hc.load(Relaxed) || h.pending_active_hc.load(Relaxed) {
                    continue;
                }
                let Some(backend_addr) = pingora_addr(&self.cluster, addr) else { continue };
                h.pending_removal.store(true, Relaxed);
                let mut backend = Backend { addr: backend_addr, weight: host.weight as usize, ext: Default::default() };
                backend.ext.insert(host.clone());
                backends.insert(backend);
                hosts.insert(addr.clone(), host.clone());
            }
        }
        let added: Vec<String> =
            hosts.keys().filter(|a| !state.hosts.contains_key(a)).map(ToString::to_string).collect();
        let removed: Vec<String> =
            state.hosts.keys().filter(|a| !hosts.contains_key(a)).map(ToString::to_string).collect();
        if !added.is_empty() || !removed.is_empty() {
            info!(cluster = %self.cluster, ?added, ?removed, hosts = hosts.len(), "cluster membership changed");
        }
        state.hosts = hosts;
        state.outcome = Some(RefreshOutcome { failed, ttl });
        drop(state);

        if dns {
            if failed {
                self.stats.update_failure.fetch_add(1, Relaxed);
            } else {
                self.stats.update_success.fetch_add(1, Relaxed);
                if backends.is_empty() {
                    self.stats.update_empty.fetch_add(1, Relaxed);
                }
            }
        }
        Ok((backends, HashMap::new()))
    }
}

/// The address Pingora's load balancers key a host by (its hash for
/// ring_hash and maglev: `ip:port`, or the pipe's path).
fn pingora_addr(cluster: &str, addr: &Address) -> Option<PingoraAddr> {
    match addr {
        Address::Ip(a) => Some(PingoraAddr::Inet(*a)),
        Address::Pipe(p) => match p.pingora_addr() {
            Ok(a) => Some(a),
            Err(e) => {
                warn!(cluster = %cluster, pipe = %p.path, error = %e, "pipe endpoint has no usable address; left out");
                None
            }
        },
    }
}

/// The [`Host`] a Pingora backend stands for.
pub fn host_of(backend: &Backend) -> Option<&Arc<Host>> {
    backend.ext.get::<Arc<Host>>()
}
