//! Upstream HTTP/2 connections for [`super::forward`]: a per-worker pool of
//! h2 client connections per (cluster, host), each shared by as many
//! streams as the host and the cluster allow (`max_concurrent_streams`).
//!
//! Taking a stream slot is a `Vec` scan and a counter under a thread-local
//! borrow: no lock, no map entry removed and put back, no `getpeername`
//! per stream (what Pingora's pool of h2 connections costs each call,
//! bench/RESULTS.md). Each connection is driven by a task of its own,
//! which closes it once it has had no stream for the cluster's idle
//! timeout and sends the cluster's keepalive PINGs. A stream that finds
//! every connection full, or none, opens one; streams that come while it
//! is being opened wait for it rather than each opening their own, and
//! fail with it if it fails.

use crate::metrics::UpstreamCodecStat;
use crate::proxy::attempt::AttemptStart;
use crate::proxy::h1::{AttemptError, NativeH1, PoolKey, Upstream};
use crate::upstream::{AttemptResult, Http2Settings};
use bytes::Bytes;
use h2::client::{Connection, SendRequest};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::debug;

/// The flow-control windows when the cluster does not set them: those of
/// Pingora's HTTP/2 client, which these connections replace (8 MiB).
const DEFAULT_WINDOW: u32 = 1 << 23;
/// The largest frame the upstream is asked to send (Pingora's value).
const MAX_FRAME: u32 = 64 * 1024;
/// How long a keepalive PING waits for its answer before the connection
/// is closed (`connection_keepalive.timeout`: the one value accepted).
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// What a connection's task and the streams on it share.
struct Shared {
    /// Streams open on the connection.
    active: AtomicUsize,
    /// The connection ended, or is being closed as idle: no new stream.
    closed: AtomicBool,
    /// A stream found the connection going away (GOAWAY): no new stream.
    /// Apart from `closed`, which the idle check may set and take back.
    retired: AtomicBool,
    /// When the last stream ended, in milliseconds after `opened`.
    last_end_ms: AtomicU64,
    opened: Instant,
}

/// One pooled connection.
struct Pooled {
    send: SendRequest<Bytes>,
    shared: Arc<Shared>,
    /// The cluster's `max_concurrent_streams` (the host's own limit is
    /// read from the connection at each checkout: it may change).
    max: usize,
}

impl Pooled {
    /// Takes a stream slot if the connection has one.
    fn take(&self) -> Option<Lease> {
        if self.shared.closed.load(SeqCst) || self.shared.retired.load(SeqCst) {
            return None;
        }
        let limit = self.max.min(self.send.current_max_send_streams());
        let active = self.shared.active.fetch_add(1, SeqCst);
        // Checked after the count: an idle close that saw no stream has
        // already marked the connection closed (both `SeqCst`).
        if active >= limit || self.shared.closed.load(SeqCst) {
            self.shared.active.fetch_sub(1, SeqCst);
            return None;
        }
        Some(Lease { send: self.send.clone(), shared: self.shared.clone() })
    }
}

/// A stream slot on a pooled connection, held until the stream ends.
pub struct Lease {
    pub send: SendRequest<Bytes>,
    shared: Arc<Shared>,
}

impl Lease {
    /// No further stream goes on this connection (it answered with
    /// GOAWAY, or broke).
    pub fn retire(&self) {
        self.shared.retired.store(true, SeqCst);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let s = &self.shared;
        s.last_end_ms.store(s.opened.elapsed().as_millis() as u64, SeqCst);
        s.active.fetch_sub(1, SeqCst);
    }
}

/// The connections to one host of one cluster, on one worker.
#[derive(Default)]
struct Host {
    conns: Vec<Pooled>,
    /// Held while a connection is being opened.
    opening: Arc<tokio::sync::Mutex<()>>,
    /// Connections that failed to open: a stream that waited for one sees
    /// the count move and fails with it.
    failures: Arc<AtomicU64>,
}

/// Pool keys come from the configuration and DNS, not from clients (as in
/// the HTTP/1 pool).
type Pool = HashMap<PoolKey, Host, rustc_hash::FxBuildHasher>;

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// A slot on a connection to `key`'s host, if one has room; forgets the
/// connections that ended.
fn checkout(key: &PoolKey) -> Option<Lease> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let host = pool.get_mut(key)?;
        host.conns.retain(|c| {
            let gone = c.shared.closed.load(SeqCst) || c.shared.retired.load(SeqCst);
            !gone || c.shared.active.load(SeqCst) > 0
        });
        host.conns.iter().find_map(Pooled::take)
    })
}

/// The lock for opening a connection to `key`'s host, and its failure count.
fn opening(key: &PoolKey) -> (Arc<tokio::sync::Mutex<()>>, Arc<AtomicU64>) {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let host = pool.entry(key.clone()).or_default();
        (host.opening.clone(), host.failures.clone())
    })
}

/// How taking a stream slot failed.
pub enum LeaseError {
    /// No connection could be opened (a connect failure for the lifecycle).
    Connect { timed_out: bool, error: String },
}

impl NativeH1 {
    /// A stream slot on a connection to the attempt's host: a pooled
    /// connection with room, or a new one. Also says whether it was pooled.
    ///
    /// A new connection is opened by a task of its own, which holds the
    /// host's opening lock until it is pooled or has failed: a stream that
    /// stops waiting (its timeout, its client gone) does not cancel the
    /// connect, which the streams after it need.
    pub(super) async fn h2_lease(
        self: &Arc<Self>,
        attempt: &AttemptStart,
        key: &PoolKey,
    ) -> Result<(Lease, bool), LeaseError> {
        if let Some(lease) = checkout(key) {
            return Ok((lease, true));
        }
        let (lock, failures) = opening(key);
        let seen = failures.load(SeqCst);
        let opening = lock.lock_owned().await;
        // Another stream may have opened one while this one waited.
        if let Some(lease) = checkout(key) {
            return Ok((lease, true));
        }
        if failures.load(SeqCst) != seen {
            return Err(LeaseError::Connect { timed_out: false, error: "connection to the host failed".into() });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let engine = self.clone();
        let key = key.clone();
        let attempt = AttemptStart {
            cluster: attempt.cluster.clone(),
            host: attempt.host.clone(),
            timeout: attempt.timeout,
            idle: attempt.idle,
            started: attempt.started,
        };
        tokio::spawn(async move {
            let _opening = opening;
            let opened = match engine.open_h2(&attempt).await {
                Ok(pooled) => {
                    let lease = pooled.take();
                    POOL.with(|pool| pool.borrow_mut().entry(key).or_default().conns.push(pooled));
                    // A host that allows no stream at all: as a failed connect.
                    lease.ok_or(LeaseError::Connect { timed_out: false, error: "the host allows no stream".into() })
                }
                Err(e) => {
                    failures.fetch_add(1, SeqCst);
                    Err(e)
                }
            };
            // A stream that stopped waiting drops its slot with the message;
            // a failure nobody waits for any more is still counted.
            if let Err(Err(LeaseError::Connect { timed_out, error })) = tx.send(opened) {
                debug!(upstream = %attempt.host.addr, %error, "upstream connect failed after its streams gave up");
                let stats = &attempt.cluster.stats;
                stats.upstream_cx_connect_fail.fetch_add(1, Relaxed);
                if timed_out {
                    stats.upstream_cx_connect_timeout.fetch_add(1, Relaxed);
                }
                attempt.host.stats.cx_connect_fail.fetch_add(1, Relaxed);
                attempt.cluster.record_attempt(&attempt.host, AttemptResult::LocalFailure);
            }
        });
        match rx.await {
            Ok(opened) => opened.map(|l| (l, false)),
            Err(_) => Err(LeaseError::Connect { timed_out: false, error: "the connect task ended".into() }),
        }
    }

    /// A new HTTP/2 connection to the attempt's host, its task started.
    async fn open_h2(&self, attempt: &AttemptStart) -> Result<Pooled, LeaseError> {
        let cluster = &attempt.cluster;
        let io = match self.connect(attempt, UpstreamCodecStat::Http2).await {
            Ok(io) => io,
            Err(AttemptError::Connect { timed_out, error }) => return Err(LeaseError::Connect { timed_out, error }),
            Err(other) => return Err(LeaseError::Connect { timed_out: false, error: format!("{other:?}") }),
        };
        let settings = &cluster.spec.http.http2;
        let max = settings.max_concurrent_streams as usize;
        // The handshake's SETTINGS exchange is bounded by the connect timeout.
        let shaken = tokio::time::timeout(cluster.spec.connect_timeout, builder(settings).handshake(io)).await;
        let (send, conn) = match shaken {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                return Err(LeaseError::Connect { timed_out: false, error: format!("HTTP/2 handshake: {e}") })
            }
            Err(_) => return Err(LeaseError::Connect { timed_out: true, error: "HTTP/2 handshake timed out".into() }),
        };
        let shared = Arc::new(Shared {
            active: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            last_end_ms: AtomicU64::new(0),
            opened: Instant::now(),
        });
        let idle = cluster.spec.http.idle_timeout;
        tokio::spawn(drive(conn, shared.clone(), idle, settings.ping_interval));
        Ok(Pooled { send, shared, max })
    }
}

/// The client's settings: the cluster's windows and stream limit, no push.
fn builder(settings: &Http2Settings) -> h2::client::Builder {
    let mut b = h2::client::Builder::new();
    b.enable_push(false)
        .initial_max_send_streams(settings.max_concurrent_streams as usize)
        .max_frame_size(MAX_FRAME)
        .initial_window_size(settings.initial_stream_window_size.unwrap_or(DEFAULT_WINDOW))
        .initial_connection_window_size(settings.initial_connection_window_size.unwrap_or(DEFAULT_WINDOW));
    b
}

/// Drives a connection until it ends, the host's keepalive PING goes
/// unanswered, or it has had no stream for `idle` (then it is closed;
/// streams about to take it see it closed and open another).
async fn drive(conn: Connection<Upstream, Bytes>, shared: Arc<Shared>, idle: Option<Duration>, ping: Option<Duration>) {
    let mut conn = std::pin::pin!(conn);
    let mut pinger = ping.and_then(|_| conn.as_mut().ping_pong());
    let far = Duration::from_secs(86_400 * 365);
    let mut idle_check = tokio::time::Instant::now() + idle.unwrap_or(far);
    let mut next_ping = tokio::time::Instant::now() + ping.unwrap_or(far);
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(error = %e, "upstream HTTP/2 connection ended");
                }
                break;
            }
            () = tokio::time::sleep_until(idle_check) => {
                let limit = idle.unwrap_or(far);
                if shared.active.load(SeqCst) > 0 {
                    idle_check += limit;
                    continue;
                }
                let ended = shared.opened + Duration::from_millis(shared.last_end_ms.load(SeqCst));
                if ended.elapsed() < limit {
                    idle_check = tokio::time::Instant::from_std(ended + limit);
                    continue;
                }
                // Marked closed before the count is read again (both
                // `SeqCst`): a checkout either sees it closed or is counted.
                shared.closed.store(true, SeqCst);
                if shared.active.load(SeqCst) > 0 {
                    shared.closed.store(false, SeqCst);
                    idle_check += limit;
                    continue;
                }
                debug!("upstream HTTP/2 connection closed after its idle timeout");
                break;
            }
            () = tokio::time::sleep_until(next_ping), if pinger.is_some() => {
                let Some(p) = pinger.as_mut() else { break };
                let pong = tokio::time::timeout(PING_TIMEOUT, p.ping(h2::Ping::opaque()));
                // The connection must keep moving while the PING waits.
                let answered = tokio::select! {
                    r = pong => matches!(r, Ok(Ok(_))),
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            debug!(error = %e, "upstream HTTP/2 connection ended");
                        }
                        false
                    }
                };
                if !answered {
                    debug!("upstream HTTP/2 connection closed: keepalive PING unanswered");
                    break;
                }
                next_ping = tokio::time::Instant::now() + ping.unwrap_or(far);
            }
        }
    }
    shared.closed.store(true, SeqCst);
}
