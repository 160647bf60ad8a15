//! The process lifecycle: one drain signal that every connection, accept
//! loop and engine is handed, and the record of what the drain waits for.
//!
//! A drain starts on SIGTERM, SIGINT or SIGQUIT, on the admin's
//! `/quitquitquit`, or when a listener fails ([`Drain::fail`]). From then
//! on the accept loops stop (new connections are refused), idle keep-alive
//! connections close, and each busy one closes after the response in
//! progress, which says `connection: close`; an HTTP/2 connection gets
//! Envoy's GOAWAY sequence, new streams taken for its connection manager's
//! `drain_timeout` (`proxy/h2.rs`). The drain is over once every
//! connection the proxy took is closed, or at `--drain-time-s`, whichever
//! comes first: `server::run` then returns and `main` exits. `docker stop`
//! so takes milliseconds on a proxy without HTTP/2 clients (with them, the
//! HTTP/2 grace: `drain_timeout`, at most half of the drain time) and never
//! meets its 10 s kill.
//! The admin interface answers throughout (`/ready` says `DRAINING`).
//!
//! [`Drain`] owns a [`CancellationToken`] (the signal) and a
//! [`TaskTracker`] (the open connections). Pingora's services and its HTTP
//! engine take a shutdown signal as a `ShutdownWatch` (a
//! `watch::Receiver<bool>`): [`Drain::watch`] is that view of the same
//! signal. Pingora's own shutdown (its watch, then its runtimes) runs once
//! the drain is over ([`PingoraShutdown`]), when nothing is left to wait for.

use async_trait::async_trait;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use std::error::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

/// Why the proxy stopped on its own: the error `server::run` returns.
pub type Failure = Box<dyn Error + Send + Sync>;

/// The drain signal and the open connections it waits for.
pub struct Drain {
    signal: CancellationToken,
    /// The signal as a flag: each request asks whether a drain began, and
    /// `CancellationToken::is_cancelled` takes a lock to answer.
    draining: AtomicBool,
    connections: TaskTracker,
    /// The signal as Pingora's `ShutdownWatch` sees it.
    watch: watch::Sender<bool>,
    /// What made the proxy stop, if something failed.
    failure: Mutex<Option<Failure>>,
    /// `--drain-time-s`: the longest the drain waits for connections.
    limit: Duration,
    /// When the drain started.
    started_at: OnceLock<Instant>,
}

impl Drain {
    /// A drain that waits at most `limit` for connections to close.
    pub fn new(limit: Duration) -> Arc<Self> {
        Arc::new(Self {
            signal: CancellationToken::new(),
            draining: AtomicBool::new(false),
            connections: TaskTracker::new(),
            watch: watch::Sender::new(false),
            failure: Mutex::new(None),
            limit,
            started_at: OnceLock::new(),
        })
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts the drain (once; later calls change nothing).
    pub fn start(&self, reason: &str) {
        if self.signal.is_cancelled() {
            return;
        }
        info!(
            reason,
            open_connections = self.connections.len(),
            "draining: no new connections, finishing in-flight requests"
        );
        self.started_at.get_or_init(Instant::now);
        self.draining.store(true, Ordering::Release);
        self.signal.cancel();
        self.watch.send_replace(true);
        // The drain ends when the tracker is empty, once it is closed.
        self.connections.close();
    }

    /// Stops the proxy for `failure` (a listener that cannot serve): the
    /// drain starts, Pingora stops at once, and `server::run` returns it.
    pub fn fail(&self, failure: impl Into<Failure>) {
        let failure = failure.into();
        error!(error = %failure, "stopping");
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(failure);
        self.start("failure");
    }

    /// The failure that stopped the proxy, if one did.
    pub fn take_failure(&self) -> Option<Failure> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn failed(&self) -> bool {
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Resolves once the drain has started; may be polled again after.
    pub fn started(&self) -> WaitForCancellationFuture<'_> {
        self.signal.cancelled()
    }

    /// The drain signal for a task that takes a token (a child: cancelling
    /// it does not start the drain, which only [`start`](Self::start) does).
    pub fn signal(&self) -> CancellationToken {
        self.signal.child_token()
    }

    /// The drain signal as Pingora's shutdown watch (true once draining).
    pub fn watch(&self) -> ShutdownWatch {
        self.watch.subscribe()
    }

    /// Where connections are spawned or counted (a token each) so that the
    /// drain waits for them.
    pub fn connections(&self) -> &TaskTracker {
        &self.connections
    }

    /// How long the drain still waits for connections (all of its limit
    /// before it starts): what a connection's own grace must fit in.
    pub fn time_left(&self) -> Duration {
        match self.started_at.get() {
            Some(started) => self.limit.saturating_sub(started.elapsed()),
            None => self.limit,
        }
    }

    /// Waits for a started drain to end: every connection closed, or its
    /// limit passed. Whether it ended on its own.
    pub async fn finished(&self) -> bool {
        self.started().await;
        match tokio::time::timeout(self.time_left(), self.connections.wait()).await {
            Ok(()) => {
                let elapsed = self.started_at.get().map_or(Duration::ZERO, Instant::elapsed);
                info!(elapsed_ms = elapsed.as_millis() as u64, "drained");
                true
            }
            Err(_) => {
                warn!(
                    open_connections = self.connections.len(),
                    "drain time is up; closing the connections still open"
                );
                false
            }
        }
    }
}

/// Pingora's shutdown signal, driven by the drain: `recv` starts the drain
/// on a signal and returns once it is over (at once after a failure).
/// Pingora then flips its own watch and stops its runtimes, which only has
/// idle tasks left to drop: its grace period is 0 (`server.rs`).
pub struct PingoraShutdown {
    pub drain: Arc<Drain>,
}

#[async_trait]
impl ShutdownSignalWatch for PingoraShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let drain = &self.drain;
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::quit())) {
            (Ok(mut term), Ok(mut int), Ok(mut quit)) => {
                tokio::select! {
                    _ = term.recv() => drain.start("SIGTERM"),
                    _ = int.recv() => drain.start("SIGINT"),
                    _ = quit.recv() => drain.start("SIGQUIT"),
                    _ = drain.started() => {}
                }
            }
            _ => {
                error!("cannot install signal handlers; only the admin interface can stop the proxy");
                drain.started().await;
            }
        }
        if drain.failed() {
            return ShutdownSignal::FastShutdown;
        }
        drain.finished().await;
        ShutdownSignal::GracefulTerminate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_drain_ends_when_the_last_connection_closes() {
        let drain = Drain::new(Duration::from_secs(60));
        let mut watch = drain.watch();
        let connection = drain.connections().token();
        assert!(!drain.is_draining() && !*watch.borrow());
        drain.start("test");
        assert!(drain.is_draining() && *watch.borrow_and_update());
        let waiting = tokio::spawn({
            let drain = drain.clone();
            async move { drain.finished().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a connection is still open");
        drop(connection);
        assert!(waiting.await.unwrap(), "ended on its own, before the limit");
    }

    #[tokio::test]
    async fn the_drain_time_bounds_the_wait() {
        let drain = Drain::new(Duration::from_millis(10));
        let _stuck = drain.connections().token();
        assert_eq!(drain.time_left(), Duration::from_millis(10), "the whole limit before the drain");
        drain.start("test");
        assert!(!drain.finished().await);
        assert_eq!(drain.time_left(), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_failure_starts_the_drain_and_is_kept() {
        let drain = Drain::new(Duration::from_secs(60));
        drain.fail(std::io::Error::other("listener gone"));
        drain.fail(std::io::Error::other("second"));
        assert!(drain.is_draining());
        let shutdown = PingoraShutdown { drain: drain.clone() };
        assert!(matches!(shutdown.recv().await, ShutdownSignal::FastShutdown));
        assert_eq!(drain.take_failure().map(|e| e.to_string()).as_deref(), Some("listener gone"));
    }
}
