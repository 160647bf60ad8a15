//! The periodic work behind every cluster, as one Pingora background
//! service: DNS re-resolution on Envoy's schedule, active health checks,
//! and outlier-ejection sweeps. Never on the request path.

use super::cluster::{Cluster, ClusterSet};
use super::health::Probe;
use async_trait::async_trait;
use futures::future::join_all;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::services::ServiceReadyNotifier;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Pingora background service owning discovery, health checking and
/// outlier sweeps for all clusters. It reports ready after the first
/// discovery round (and first health checks), so listeners open with
/// endpoints already known, as Envoy's cluster warming does.
pub struct ClusterManager {
    pub clusters: Arc<ClusterSet>,
}

#[async_trait]
impl BackgroundService for ClusterManager {
    async fn start_with_ready_notifier(&self, shutdown: ShutdownWatch, ready: ServiceReadyNotifier) {
        self.clusters.warm().await;
        let first_checks = self.clusters.iter().filter(|c| c.health_check.is_some()).map(|c| health_check_round(c));
        if tokio::time::timeout(Duration::from_secs(5), join_all(first_checks)).await.is_err() {
            warn!("first health checks did not finish in time; starting anyway");
        }
        for c in self.clusters.iter() {
            let (hosts, healthy) = c.membership();
            info!(cluster = %c.name(), hosts, healthy, "cluster initialized");
        }
        ready.notify_ready();

        let mut loops = Vec::new();
        for c in self.clusters.iter() {
            if c.is_dynamic() {
                loops.push(tokio::spawn(run_discovery(c.clone(), shutdown.clone())));
            }
            if c.health_check.is_some() {
                loops.push(tokio::spawn(run_health_checks(c.clone(), shutdown.clone())));
            }
            if c.outlier.is_some() {
                loops.push(tokio::spawn(run_outlier_sweeps(c.clone(), shutdown.clone())));
            }
        }
        join_all(loops).await;
    }
}

/// Re-resolves one cluster until shutdown, at the delay each refresh asks for.
async fn run_discovery(cluster: Arc<Cluster>, mut shutdown: ShutdownWatch) {
    let mut delay = cluster.next_refresh();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
        delay = tokio::select! {
            d = cluster.refresh() => d,
            _ = shutdown.changed() => return,
        };
    }
}

/// Probes every host of the cluster once, concurrently, and applies the results.
async fn health_check_round(cluster: &Cluster) {
    let Some(hc) = &cluster.health_check else { return };
    let hosts = cluster.hosts();
    let probes = join_all(hosts.iter().map(|h| hc.probe(h))).await;
    let mut changed = false;
    for (host, probe) in hosts.iter().zip(probes) {
        if let Some(healthy) = hc.apply(host, &probe) {
            changed = true;
            match &probe {
                Probe::Pass => info!(cluster = %cluster.name(), upstream = %host.addr, healthy, "health check passed"),
                Probe::Rejected(why) | Probe::Unreachable(why) => {
                    warn!(cluster = %cluster.name(), upstream = %host.addr, healthy, reason = %why, "health check failed")
                }
            }
        }
    }
    if changed {
        cluster.recompute_health();
    }
}

async fn run_health_checks(cluster: Arc<Cluster>, mut shutdown: ShutdownWatch) {
    let Some(hc) = &cluster.health_check else { return };
    loop {
        let any_unhealthy = cluster.hosts().iter().any(|h| !h.is_healthy());
        let had_traffic = cluster.stats.upstream_rq_total.load(Relaxed) > 0 || cluster.breaker.requests() > 0;
        let delay = hc.next_interval(any_unhealthy, had_traffic);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            // New hosts are checked at once rather than at the next interval.
            _ = cluster.hc_wakeup.notified() => {}
            _ = shutdown.changed() => return,
        }
        tokio::select! {
            _ = health_check_round(&cluster) => {}
            _ = shutdown.changed() => return,
        }
        // A host that left DNS and then failed goes away now, not at the next refresh.
        if cluster.hosts().iter().any(|h| h.health.pending_removal.load(Relaxed) && !h.is_healthy()) {
            cluster.refresh().await;
        }
    }
}

async fn run_outlier_sweeps(cluster: Arc<Cluster>, mut shutdown: ShutdownWatch) {
    let Some(o) = &cluster.outlier else { return };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(o.spec.interval) => {}
            _ = shutdown.changed() => return,
        }
        if o.sweep(&cluster.hosts()) {
            cluster.recompute_health();
        }
    }
}
