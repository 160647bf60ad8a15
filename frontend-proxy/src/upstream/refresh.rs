//! The periodic work behind every cluster, as one Pingora background
//! service: DNS re-resolution on Envoy's schedule, active health checks
//! (one schedule per host), and outlier-ejection sweeps. Never on the
//! request path.

use super::cluster::{Cluster, ClusterSet};
use super::health::{Outcome, Probe, Transition};
use super::host::Host;
use crate::address::Address;
use async_trait::async_trait;
use futures::future::join_all;
use futures::stream::{FuturesUnordered, StreamExt};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::services::ServiceReadyNotifier;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Pingora background service owning discovery, health checking and
/// outlier sweeps for all clusters. It reports ready after the first
/// discovery round and every host's first health check, so listeners open
/// with endpoints already known and judged, as Envoy's cluster warming does.
pub struct ClusterManager {
    pub clusters: Arc<ClusterSet>,
}

/// How long start-up waits for every host's first health check.
const FIRST_CHECKS_TIMEOUT: Duration = Duration::from_secs(5);

#[async_trait]
impl BackgroundService for ClusterManager {
    async fn start_with_ready_notifier(&self, shutdown: ShutdownWatch, ready: ServiceReadyNotifier) {
        self.clusters.warm().await;
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
        let first_checks = self.clusters.iter().filter(|c| c.health_check.is_some()).map(|c| first_checks_done(c));
        if tokio::time::timeout(FIRST_CHECKS_TIMEOUT, join_all(first_checks)).await.is_err() {
            warn!("first health checks did not finish in time; starting anyway");
        }
        for c in self.clusters.iter() {
            let (hosts, healthy) = c.membership();
            info!(cluster = %c.name(), hosts, healthy, "cluster initialized");
        }
        ready.notify_ready();
        join_all(loops).await;
    }
}

/// Re-resolves one cluster until shutdown, at the delay each refresh asks
/// for, or at once when the health checker asks.
async fn run_discovery(cluster: Arc<Cluster>, mut shutdown: ShutdownWatch) {
    let mut delay = cluster.next_refresh();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cluster.refresh_wakeup.notified() => {}
            _ = shutdown.changed() => return,
        }
        delay = tokio::select! {
            d = cluster.refresh() => d,
            _ = shutdown.changed() => return,
        };
    }
}

/// Returns once no host of the cluster waits for its first check.
async fn first_checks_done(cluster: &Cluster) {
    loop {
        // Registered before looking, so a check finishing in between is not missed.
        let progress = cluster.hc_progress.notified();
        tokio::pin!(progress);
        progress.as_mut().enable();
        if !cluster.hosts().iter().any(|h| h.health.pending_active_hc.load(Relaxed)) {
            return;
        }
        progress.await;
    }
}

/// One host's health-check schedule: Envoy's per-host session.
struct Session {
    host: Arc<Host>,
    /// When the next check starts.
    due: Instant,
    /// A check is running; `due` is set when it ends.
    in_flight: bool,
    /// `due` was chosen while the cluster had no traffic.
    no_traffic_wait: bool,
}

/// Health-checks every host of the cluster on its own schedule until
/// shutdown: a host's next check is due an interval after its last one
/// ended, the interval chosen by that check's outcome
/// ([`super::health::ActiveHealthCheck::next_interval`]). Checks of different hosts run
/// concurrently, so a host that times out delays no other.
async fn run_health_checks(cluster: Arc<Cluster>, mut shutdown: ShutdownWatch) {
    let Some(hc) = &cluster.health_check else { return };
    let mut sessions: HashMap<Address, Session> = HashMap::new();
    let mut checks = FuturesUnordered::new();
    let mut had_traffic = cluster.had_traffic();
    loop {
        let now = Instant::now();
        let hosts = cluster.hosts();
        // A session per current host; a host replaced at the same address
        // (new weight) is a new host with a new session, as in Envoy.
        sessions.retain(|addr, s| hosts.iter().any(|h| h.addr == *addr && Arc::ptr_eq(h, &s.host)));
        for h in &hosts {
            sessions.entry(h.addr.clone()).or_insert_with(|| Session {
                host: h.clone(),
                due: now + hc.initial_delay(),
                in_flight: false,
                no_traffic_wait: false,
            });
        }
        let traffic = cluster.had_traffic();
        if traffic && !had_traffic {
            // Beyond Envoy, which lets such a host sleep out the (60 s)
            // no-traffic interval: the first request means the cluster is
            // in use now, and hosts that failed while nothing was sent
            // (the proxy started before its backends) must not keep it in
            // panic mode for a minute.
            let mut woken = 0;
            for s in sessions.values_mut().filter(|s| s.no_traffic_wait && !s.in_flight) {
                s.due = now;
                woken += 1;
            }
            debug!(cluster = %cluster.name(), hosts = woken, "first traffic: checking hosts now");
        }
        had_traffic = traffic;
        for s in sessions.values_mut().filter(|s| !s.in_flight && s.due <= now) {
            s.in_flight = true;
            let host = s.host.clone();
            checks.push(async move {
                let probe = hc.probe(&host).await;
                (host, probe)
            });
        }
        let next_due = sessions.values().filter(|s| !s.in_flight).map(|s| s.due).min();
        tokio::select! {
            Some((host, probe)) = checks.next(), if !checks.is_empty() => {
                let Some(session) = sessions.get_mut(&host.addr).filter(|s| Arc::ptr_eq(&s.host, &host)) else {
                    continue; // the host left the cluster while it was checked
                };
                let outcome = hc.apply(&host, &probe);
                let traffic = cluster.had_traffic();
                let wait = hc.next_interval(&outcome, traffic);
                session.in_flight = false;
                session.due = Instant::now() + wait;
                session.no_traffic_wait = !traffic;
                report(&cluster, &host, &probe, &outcome, wait);
                if outcome.health_changed.is_some() {
                    cluster.recompute_health();
                }
                cluster.hc_progress.notify_waiters();
                // A host kept after it left DNS goes once it fails: now, not at the next refresh.
                if host.health.pending_removal.load(Relaxed) && !host.is_healthy() {
                    cluster.refresh_wakeup.notify_one();
                }
            }
            _ = tokio::time::sleep_until(next_due.unwrap_or(now)), if next_due.is_some() => {}
            // New hosts, or the first traffic.
            _ = cluster.hc_wakeup.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Logs a check: every one at debug, a change of health at info (up) or
/// warn (down).
fn report(cluster: &Cluster, host: &Host, probe: &Probe, outcome: &Outcome, next: Duration) {
    let reason = match probe {
        Probe::Pass => None,
        Probe::Rejected(why) | Probe::Unreachable(why) => Some(why.as_str()),
    };
    debug!(
        cluster = %cluster.name(),
        upstream = %host.addr,
        passed = outcome.passed,
        transition = ?outcome.transition,
        reason,
        next_check_ms = next.as_millis() as u64,
        "health check"
    );
    if outcome.transition != Transition::Changed {
        return;
    }
    let healthy = host.is_healthy();
    match reason {
        None => info!(cluster = %cluster.name(), upstream = %host.addr, healthy, "health check passed"),
        Some(why) => {
            warn!(cluster = %cluster.name(), upstream = %host.addr, healthy, reason = %why, "health check failed")
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
