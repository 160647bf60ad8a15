//! Upstream connections of the native engine and the per-worker pool of
//! idle ones.
//!
//! Each worker thread keeps its own idle connections, most recently used
//! first, so checking one out or in is a `Vec` push/pop with no lock and
//! no task per idle connection. A sweeper task per thread closes
//! connections idle for longer than their cluster's idle timeout
//! (`common_http_protocol_options.idle_timeout`) or closed by the
//! upstream, so they do not hold file descriptors or skew `cx_active`.

use crate::address::Address;
use crate::metrics::UpstreamConnectionTracer;
use pingora_core::protocols::Stream;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// Idle connections kept per host and worker; beyond it the oldest closes.
const MAX_IDLE_PER_HOST: usize = 1024;
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The transport under an upstream connection.
pub enum Transport {
    /// Plain TCP, opened by the engine itself.
    Tcp(TcpStream),
    /// A plain pipe (Unix domain socket), opened by the engine itself.
    Unix(UnixStream),
    /// Opened by Pingora's connector (TLS).
    Pingora(Stream),
}

/// An open upstream connection; counted in the cluster's and host's
/// `cx_active` for as long as it lives.
pub struct Upstream {
    transport: Transport,
    /// Counts the close for plain connections (Pingora's stream does it for TLS).
    counted: Option<UpstreamConnectionTracer>,
}

impl Upstream {
    /// A new plain connection: counted as opened now.
    pub fn tcp(stream: TcpStream, tracer: UpstreamConnectionTracer) -> Self {
        tracer.connected();
        Self { transport: Transport::Tcp(stream), counted: Some(tracer) }
    }

    /// A new plain connection on a pipe: counted as opened now.
    pub fn unix(stream: UnixStream, tracer: UpstreamConnectionTracer) -> Self {
        tracer.connected();
        Self { transport: Transport::Unix(stream), counted: Some(tracer) }
    }

    /// A connection from Pingora's connector, which counts it itself.
    pub fn pingora(stream: Stream) -> Self {
        Self { transport: Transport::Pingora(stream), counted: None }
    }

    /// Waits until a read would find bytes (or the end); a TLS connection
    /// cannot tell and returns at once.
    pub async fn readable(&self) -> std::io::Result<()> {
        match &self.transport {
            Transport::Tcp(s) => std::future::poll_fn(|cx| s.poll_read_ready(cx)).await,
            Transport::Unix(s) => std::future::poll_fn(|cx| s.poll_read_ready(cx)).await,
            Transport::Pingora(_) => Ok(()),
        }
    }

    /// Whether the connection can carry another request: the upstream has
    /// not closed it and sent nothing unasked for. Never blocks.
    fn is_reusable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        matches!(Pin::new(self).poll_read(&mut cx, &mut buf), Poll::Pending)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(t) = &self.counted {
            t.disconnected();
        }
    }
}

impl AsyncRead for Upstream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.transport {
            Transport::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Pingora(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        match &mut self.transport {
            Transport::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Transport::Unix(s) => Pin::new(s).poll_write(cx, data),
            Transport::Pingora(s) => Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.transport {
            Transport::Tcp(s) => Pin::new(s).poll_flush(cx),
            Transport::Unix(s) => Pin::new(s).poll_flush(cx),
            Transport::Pingora(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.transport {
            Transport::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Pingora(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Which pool an upstream connection belongs to: the cluster (its TLS
/// settings) and the host's address (an IP one is copied, a pipe's shared).
pub type PoolKey = (usize, Address);

struct Idle {
    conn: Upstream,
    /// When the cluster's idle timeout closes it (`None`: never).
    expires: Option<Instant>,
}

impl Idle {
    fn usable(&mut self) -> bool {
        self.expires.is_none_or(|e| Instant::now() < e) && self.conn.is_reusable()
    }
}

/// Pool keys come from the configuration and DNS, not from clients:
/// SipHash's resistance to flooding buys nothing there, and the Fx hash
/// costs a fraction of it on every checkout and checkin.
type IdleMap = HashMap<PoolKey, VecDeque<Idle>, rustc_hash::FxBuildHasher>;

thread_local! {
    static IDLE: RefCell<IdleMap> = RefCell::new(IdleMap::default());
    static SWEEPER: Cell<bool> = const { Cell::new(false) };
}

/// The most recently used live idle connection to `key`, if any.
pub fn checkout(key: &PoolKey) -> Option<Upstream> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let conns = idle.get_mut(key)?;
        while let Some(mut c) = conns.pop_back() {
            if c.usable() {
                return Some(c.conn);
            }
        }
        None
    })
}

/// Keeps a connection that finished a request cleanly for the next one,
/// for at most `idle_timeout` (`None`: until the upstream closes it).
pub fn checkin(key: PoolKey, conn: Upstream, idle_timeout: Option<Duration>) {
    let evicted = IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let conns = idle.entry(key).or_default();
        conns.push_back(Idle { conn, expires: idle_timeout.map(|t| Instant::now() + t) });
        (conns.len() > MAX_IDLE_PER_HOST).then(|| conns.pop_front())
    });
    drop(evicted);
    if !SWEEPER.get() {
        SWEEPER.set(true);
        tokio::spawn(sweep_forever());
    }
}

/// Closes expired and dead idle connections of this thread, periodically.
async fn sweep_forever() {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let closed: Vec<Idle> = IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            let mut closed = Vec::new();
            for conns in idle.values_mut() {
                let mut keep = VecDeque::with_capacity(conns.len());
                for mut c in conns.drain(..) {
                    if c.usable() {
                        keep.push_back(c);
                    } else {
                        closed.push(c);
                    }
                }
                *conns = keep;
            }
            idle.retain(|_, conns| !conns.is_empty());
            closed
        });
        drop(closed);
    }
}
