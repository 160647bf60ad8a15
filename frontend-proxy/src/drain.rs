//! Process lifecycle: turning SIGTERM (or the admin `/quitquitquit`) into a
//! graceful drain that ends as soon as in-flight requests are done.
//!
//! Pingora's graceful shutdown stops the accept loops, closes idle
//! keep-alive connections and lets running requests finish, but then sleeps
//! a fixed grace period. We keep that period as an upper bound
//! (`--drain-time-s`) and exit early once nothing is in flight, so `docker
//! stop` takes milliseconds on an idle proxy and never hits its 10 s kill.

use crate::metrics::ConnManagerStats;
use async_trait::async_trait;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;
use tracing::{error, info};

/// Shared lifecycle state: whether the proxy is draining, and a way for the
/// admin interface to ask for shutdown.
#[derive(Default)]
pub struct Drain {
    draining: AtomicBool,
    quit: Notify,
}

impl Drain {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    /// Starts a graceful shutdown, as SIGTERM does.
    pub fn request_shutdown(&self) {
        self.quit.notify_one();
    }
}

/// Pingora's shutdown watcher for our process.
pub struct SignalWatch {
    pub drain: Arc<Drain>,
    pub connection_managers: Vec<Arc<ConnManagerStats>>,
    pub max_drain: Duration,
}

impl SignalWatch {
    fn in_flight(&self) -> i64 {
        self.connection_managers.iter().map(|s| s.downstream_rq_active.load(Relaxed)).sum()
    }

    /// Exits the process once no request is in flight (or at the deadline,
    /// which Pingora's own grace period also enforces).
    fn spawn_drain_watcher(self: Arc<Self>) {
        let started = Instant::now();
        let spawned = std::thread::Builder::new().name("drain-watcher".into()).spawn(move || {
            // Let the accept loops observe the shutdown first.
            std::thread::sleep(Duration::from_millis(100));
            let mut idle_checks = 0;
            while started.elapsed() < self.max_drain {
                if self.in_flight() <= 0 {
                    idle_checks += 1;
                    if idle_checks >= 3 {
                        info!(elapsed_ms = started.elapsed().as_millis() as u64, "drained, exiting");
                        std::process::exit(0);
                    }
                } else {
                    idle_checks = 0;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        if let Err(e) = spawned {
            error!(error = %e, "cannot start the drain watcher; waiting for the full drain time");
        }
    }
}

/// Adapter so the `Arc` can be handed to Pingora.
pub struct SharedSignalWatch(pub Arc<SignalWatch>);

#[async_trait]
impl ShutdownSignalWatch for SharedSignalWatch {
    async fn recv(&self) -> ShutdownSignal {
        let watch = &self.0;
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::quit()))
        else {
            error!("cannot install signal handlers; only the admin interface can stop the proxy");
            watch.drain.quit.notified().await;
            watch.drain.draining.store(true, Relaxed);
            return ShutdownSignal::GracefulTerminate;
        };
        let why = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = quit.recv() => "SIGQUIT",
            _ = watch.drain.quit.notified() => "admin request",
        };
        info!(
            reason = why,
            in_flight = watch.in_flight(),
            "draining: no new connections, finishing in-flight requests"
        );
        watch.drain.draining.store(true, Relaxed);
        watch.clone().spawn_drain_watcher();
        ShutdownSignal::GracefulTerminate
    }
}
