//! `envoy.filters.network.tcp_proxy`: a downstream connection (plaintext,
//! or TLS once its handshake is done) is joined to one new upstream
//! connection to a host of its cluster, and bytes are copied both ways
//! until both sides are done.
//!
//! The copying is tokio's [`copy_bidirectional`]: a bounded buffer each
//! way (no stream is held whole), and a side's end of stream (FIN) shuts
//! down writing on the other side while the other direction goes on, as
//! Envoy's half-close. What it lacks, byte counts while the connection is
//! open and the time of the last byte, [`Metered`] adds around each side;
//! `idle_timeout` is a timer that checks that time when it fires.
//!
//! Upstream connections use the cluster as HTTP requests do: load
//! balancing over healthy hosts, `connect_timeout`, `max_connect_attempts`
//! tries (another host each when there is one), the circuit breaker's
//! `max_connections`, and outlier detection fed with each connect's result.

use crate::access_log::{AccessLog, Entry, ResponseFlags};
use crate::config::model::Address;
use crate::metrics::UpstreamConnectionTracer;
use crate::runtime::TcpProxyRuntime;
use crate::upstream::{AttemptResult, Cluster, ClusterSet, Host};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{copy_bidirectional, AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_util::either::Either;

/// An upstream connection: TCP, or a pipe.
type UpstreamStream = Either<TcpStream, UnixStream>;
use tokio::time::{sleep_until, timeout, Instant};
use tracing::debug;

/// The two ends of a proxied connection, for the access log.
#[derive(Debug, Clone)]
pub struct Peers {
    /// `None` on a pipe (a Unix domain socket's client has no address).
    pub client: Option<SocketAddr>,
    /// The address the client connected to, when known.
    pub local: Option<Address>,
}

/// Proxies `downstream` to a host of the TCP proxy's cluster until both
/// directions are done, the idle timeout passes, or an error ends it, then
/// writes the connection to `access_logs`. Returning drops both
/// connections (closing them).
pub async fn serve<S>(
    mut downstream: S,
    peers: Peers,
    tcp: &TcpProxyRuntime,
    clusters: &ClusterSet,
    access_logs: &[AccessLog],
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = SystemTime::now();
    let started = Instant::now();
    let stats = &*tcp.stats;
    stats.downstream_cx_total.fetch_add(1, Relaxed);
    let id = tcp.config.cluster.pick(rand::random());
    let mut session = Session { flags: ResponseFlags::default(), upstream: None, received: 0, sent: 0 };
    match clusters.get(id) {
        Some(cluster) => proxy(&mut downstream, peers.client, tcp, cluster, &mut session).await,
        None => {
            stats.downstream_cx_no_route.fetch_add(1, Relaxed);
            session.flags |= ResponseFlags::NO_ROUTE_FOUND;
        }
    }
    if access_logs.is_empty() {
        return;
    }
    let entry = Entry {
        start,
        duration: started.elapsed(),
        request: None,
        http2: false,
        status: 0,
        flags: session.flags,
        bytes_received: session.received,
        bytes_sent: session.sent,
        upstream_service_time: None,
        upstream_host: session.upstream.as_ref(),
        upstream_cluster: clusters.get(id).map(|c| c.name()),
        downstream_remote: peers.client,
        downstream_local: peers.local.as_ref(),
        route_name: None,
        hostname: hostname(),
        response_code_details: None,
        local_reply_body: None,
    };
    for log in access_logs {
        log.log(&entry);
    }
}

/// What one proxied connection did, for its access log entry.
struct Session {
    flags: ResponseFlags,
    upstream: Option<crate::address::Address>,
    /// Bytes read from the client and written to it.
    received: u64,
    sent: u64,
}

async fn proxy<S>(
    downstream: &mut S,
    client: Option<SocketAddr>,
    tcp: &TcpProxyRuntime,
    cluster: &Cluster,
    session: &mut Session,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let stats = &*tcp.stats;
    // Held while the upstream connection is open.
    let Ok(_permit) = cluster.breaker.start_connection() else {
        cluster.stats.upstream_cx_overflow.fetch_add(1, Relaxed);
        session.flags |= ResponseFlags::UPSTREAM_OVERFLOW;
        debug!(cluster = %cluster.name(), ?client, "circuit breaker full (max_connections); closing the connection");
        return;
    };
    let (upstream, host) = match connect(cluster, tcp.config.max_connect_attempts).await {
        Ok(connected) => connected,
        Err(flag) => {
            session.flags |= flag;
            debug!(cluster = %cluster.name(), ?client, "no upstream connection; closing the connection");
            return;
        }
    };
    session.upstream = Some(host.addr.clone());
    let _open = OpenUpstream::new(UpstreamConnectionTracer::new(&cluster.stats, &host, None));
    let started = Instant::now();
    let last_activity = AtomicU64::new(0);
    let mut down = Metered::new(
        downstream,
        &stats.downstream_cx_rx_bytes_total,
        &stats.downstream_cx_tx_bytes_total,
        &last_activity,
        started,
    );
    let mut up = Metered::new(
        upstream,
        &cluster.stats.upstream_cx_rx_bytes_total,
        &cluster.stats.upstream_cx_tx_bytes_total,
        &last_activity,
        started,
    );
    let limits = Limits { idle: tcp.config.idle_timeout, until: tcp.config.max_duration.map(|d| started + d) };
    let ended = pump(&mut down, &mut up, limits, &last_activity, started).await;
    (session.received, session.sent) = (down.read, down.written);
    match ended {
        Ok(Ended::Done) => {}
        Ok(Ended::Idle) => {
            // Counted only: Envoy sets no response flag for it.
            stats.idle_timeout.fetch_add(1, Relaxed);
            debug!(?client, upstream = %host.addr, "tcp_proxy idle timeout; closing both connections");
        }
        Ok(Ended::MaxDuration) => {
            stats.max_downstream_connection_duration.fetch_add(1, Relaxed);
            session.flags |= ResponseFlags::DURATION_TIMEOUT;
            debug!(?client, upstream = %host.addr, "tcp_proxy max_downstream_connection_duration; closing both connections");
        }
        Err(e) => {
            debug!(?client, upstream = %host.addr, error = %e, "tcp_proxy connection ended with an error");
        }
    }
}

/// What ends a connection besides its peers.
struct Limits {
    /// `idle_timeout`.
    idle: Option<Duration>,
    /// `max_downstream_connection_duration`, as a deadline.
    until: Option<Instant>,
}

enum Ended {
    /// Both directions reached their end of stream.
    Done,
    /// No byte moved for the idle timeout.
    Idle,
    /// The connection lasted `max_downstream_connection_duration`.
    MaxDuration,
}

/// Copies both ways until both are done, an error, or a limit: the idle
/// timeout passing with no byte moved (`last_activity`: milliseconds after
/// `started`), or the connection's deadline.
async fn pump<A, B>(
    down: &mut A,
    up: &mut B,
    limits: Limits,
    last_activity: &AtomicU64,
    started: Instant,
) -> io::Result<Ended>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let copy = copy_bidirectional(down, up);
    tokio::pin!(copy);
    if limits.idle.is_none() && limits.until.is_none() {
        return copy.await.map(|_| Ended::Done);
    }
    let until = at(limits.until);
    tokio::pin!(until);
    loop {
        let last = last_activity.load(Relaxed);
        let idle = at(limits.idle.map(|idle| started + Duration::from_millis(last) + idle));
        tokio::select! {
            done = &mut copy => return done.map(|_| Ended::Done),
            _ = &mut until => return Ok(Ended::MaxDuration),
            _ = idle => {
                // Bytes moved since the timer was set: wait out the rest.
                if last_activity.load(Relaxed) == last {
                    return Ok(Ended::Idle);
                }
            }
        }
    }
}

/// Resolves at `deadline`; never without one.
async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The machine's name for `%HOSTNAME%`, read once.
fn hostname() -> &'static str {
    static HOSTNAME: OnceLock<String> = OnceLock::new();
    HOSTNAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
    })
}

/// Up to `attempts` connects, to a host not tried yet while there is one.
/// Every failure is counted and reported to outlier detection; the error
/// is the access log's flag for it.
async fn connect(cluster: &Cluster, attempts: u32) -> Result<(UpstreamStream, Arc<Host>), ResponseFlags> {
    let mut tried: Vec<crate::address::Address> = Vec::new();
    for _ in 0..attempts {
        // A hashing policy gets a random key: without a hash_policy, Envoy's
        // tcp_proxy spreads connections as a random one does.
        let key = rand::random::<u64>().to_le_bytes();
        let host = match cluster.select(&key, &tried) {
            Some(host) => host,
            // Every host tried: try them again, as Envoy's next attempt may.
            None if !tried.is_empty() => match cluster.select(&key, &[]) {
                Some(host) => host,
                None => break,
            },
            None => {
                cluster.stats.upstream_cx_none_healthy.fetch_add(1, Relaxed);
                return Err(ResponseFlags::NO_HEALTHY_UPSTREAM);
            }
        };
        let addr = match &host.addr {
            crate::address::Address::Ip(addr) => *addr,
            // A Unix socket connects at once or fails: no wait to bound.
            crate::address::Address::Pipe(pipe) => match pipe.connect() {
                Ok(stream) => {
                    cluster.record_attempt(&host, AttemptResult::Status(200));
                    return Ok((Either::Right(stream), host));
                }
                Err(e) => {
                    debug!(cluster = %cluster.name(), upstream = %host.addr, error = %e, "tcp_proxy connect failed");
                    cluster.stats.upstream_cx_connect_fail.fetch_add(1, Relaxed);
                    host.stats.cx_connect_fail.fetch_add(1, Relaxed);
                    cluster.record_attempt(&host, AttemptResult::LocalFailure);
                    tried.push(host.addr.clone());
                    continue;
                }
            },
        };
        match timeout(cluster.spec.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                if let Some(k) = &cluster.spec.tcp_keepalive {
                    if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&k.socket2()) {
                        debug!(error = %e, "cannot set TCP keepalive on an upstream connection");
                    }
                }
                cluster.record_attempt(&host, AttemptResult::Status(200));
                return Ok((Either::Left(stream), host));
            }
            Ok(Err(e)) => {
                debug!(cluster = %cluster.name(), upstream = %host.addr, error = %e, "tcp_proxy connect failed");
            }
            Err(_) => {
                cluster.stats.upstream_cx_connect_timeout.fetch_add(1, Relaxed);
                debug!(cluster = %cluster.name(), upstream = %host.addr, "tcp_proxy connect timed out");
            }
        }
        cluster.stats.upstream_cx_connect_fail.fetch_add(1, Relaxed);
        host.stats.cx_connect_fail.fetch_add(1, Relaxed);
        cluster.record_attempt(&host, AttemptResult::LocalFailure);
        tried.push(host.addr.clone());
    }
    Err(ResponseFlags::UPSTREAM_CONNECTION_FAILURE)
}

/// Counts an open upstream connection until it is dropped.
struct OpenUpstream(UpstreamConnectionTracer);

impl OpenUpstream {
    fn new(tracer: UpstreamConnectionTracer) -> Self {
        tracer.connected();
        Self(tracer)
    }
}

impl Drop for OpenUpstream {
    fn drop(&mut self) {
        self.0.disconnected();
    }
}

/// A side of the proxied connection that counts the bytes read from it
/// (`rx`, and `read` for this connection alone) and written to it (`tx`,
/// `written`) as they move, and records when the last one did
/// (milliseconds since `started`).
struct Metered<'a, S> {
    inner: S,
    rx: &'a AtomicU64,
    tx: &'a AtomicU64,
    read: u64,
    written: u64,
    activity: &'a AtomicU64,
    started: Instant,
}

impl<'a, S> Metered<'a, S> {
    fn new(inner: S, rx: &'a AtomicU64, tx: &'a AtomicU64, activity: &'a AtomicU64, started: Instant) -> Self {
        Self { inner, rx, tx, read: 0, written: 0, activity, started }
    }

    fn active(&self) {
        self.activity.store(self.started.elapsed().as_millis() as u64, Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<'_, S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let n = (buf.filled().len() - before) as u64;
            if n > 0 {
                self.rx.fetch_add(n, Relaxed);
                self.read += n;
                self.active();
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<'_, S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = polled {
            if n > 0 {
                self.tx.fetch_add(n as u64, Relaxed);
                self.written += n as u64;
                self.active();
            }
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn metered_counts_both_ways_and_marks_activity() {
        let (a, mut b) = tokio::io::duplex(64);
        let (rx, tx, activity) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(u64::MAX));
        let mut m = Metered::new(a, &rx, &tx, &activity, Instant::now());
        m.write_all(b"hello").await.unwrap();
        b.write_all(b"abc").await.unwrap();
        let mut buf = [0u8; 3];
        m.read_exact(&mut buf).await.unwrap();
        assert_eq!((rx.load(Relaxed), tx.load(Relaxed)), (3, 5));
        assert_eq!((m.read, m.written), (3, 5));
        assert_ne!(activity.load(Relaxed), u64::MAX, "activity recorded");
    }
}
