//! Per-connection policy in front of the HTTP engines and the TCP proxy:
//! connection counting and the `connection_limit` cap, the choice of
//! engine (or `proxy::tcp` for a tcp_proxy filter chain), and Envoy's
//! `request_headers_timeout` against slow-header (slowloris) clients on
//! Pingora's engine (the native engine bounds heads itself).
//!
//! [`Downstream`] takes connections two ways: from our own accept loop
//! (`listen.rs`) as a bare `TcpStream`, plaintext or to do the TLS
//! handshake on, and from Pingora's listener service (plaintext with
//! `--http1-engine pingora`) as a [`ServerApp`]. Pingora gives HTTP
//! apps no hook at connection open/close, and bounds header reading only
//! per read (a client trickling a byte a minute keeps its connection
//! forever), so streams for its engine are wrapped in [`HeaderDeadline`].

// `streams.rs` defines the macros `read_ahead.rs` uses: it comes first.
#[macro_use]
mod streams;
mod read_ahead;

use crate::chain_match::tls_inspector::{inspect, Inspected};
use crate::chain_match::Connection;
use crate::config::model::{Address, Codec};
use crate::drain::Drain;
use crate::metrics::ConnManagerStats;
use crate::proxy::{shorter, tcp, ClientStream, H2Source, NativeH1, Served};
use crate::runtime::Chosen;
use crate::runtime::{listener_index, ListenerRuntime};
use crate::tls::{missing_client_certificate, RecordHandshake};
use crate::upstream::ClusterSet;
use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::server as tls_server;
use pingora_core::protocols::tls::TlsRef;
use pingora_core::protocols::{GetProxyDigest, GetSocketDigest, GetTimingDigest, SocketDigest, TimingDigest};
use pingora_core::protocols::{Peek, Shutdown, Ssl, Stream, UniqueID, UniqueIDType, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_core::tls::ssl::SslAcceptor;
use std::borrow::Borrow;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tracing::debug;

use read_ahead::ReadAhead;
pub use streams::{HeaderDeadline, Replay};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";
/// The whole client connection preface.
const H2_CLIENT_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const H2_PREFACE_LEN: usize = H2_CLIENT_PREFACE.len();

/// Wraps a Pingora server app with per-listener connection policy, and
/// serves HTTP/1.1 with the native engine when one is given. Clones share
/// the app and the engine.
pub struct Downstream<A> {
    inner: Arc<A>,
    listeners: Arc<[Arc<ListenerRuntime>]>,
    native: Option<Arc<NativeH1>>,
    /// The clusters TCP proxies connect to.
    clusters: Arc<ClusterSet>,
    /// The drain: the native engine follows its signal, and the
    /// connections Pingora's listener hands over are counted in its record
    /// (our accept loop spawns its own on it).
    drain: Arc<Drain>,
}

impl<A> Clone for Downstream<A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            listeners: self.listeners.clone(),
            native: self.native.clone(),
            clusters: self.clusters.clone(),
            drain: self.drain.clone(),
        }
    }
}

impl<A> Downstream<A> {
    pub fn new(
        inner: A,
        listeners: Vec<Arc<ListenerRuntime>>,
        native: Option<NativeH1>,
        clusters: Arc<ClusterSet>,
        drain: Arc<Drain>,
    ) -> Self {
        Self { inner: Arc::new(inner), listeners: listeners.into(), native: native.map(Arc::new), clusters, drain }
    }

    /// Counts a connection on listener `index` (plaintext from our accept
    /// loop, or TLS after its handshake) and hands it to the listener's
    /// TCP proxy; one without a TCP proxy is closed.
    pub async fn serve_tcp_proxy<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: S, peers: tcp::Peers, index: usize) {
        let listener = &self.listeners[index];
        let Some(proxy) = &listener.tcp_proxy else { return };
        let Some(_open) = open(listener) else { return };
        tcp::serve(stream, peers, proxy, &self.clusters, &listener.access_logs).await;
    }
}

/// Keeps `downstream_cx_active` right however the connection ends.
struct OpenConnection<'a>(&'a ConnManagerStats);

/// Counts a new connection on `listener`; `None` if it is over the
/// listener's `connection_limit` (the connection is to be closed).
fn open(listener: &ListenerRuntime) -> Option<OpenConnection<'_>> {
    let stats = &listener.stats;
    stats.downstream_cx_total.fetch_add(1, Relaxed);
    let active = stats.downstream_cx_active.fetch_add(1, Relaxed) + 1;
    let open = OpenConnection(stats);
    match listener.max_connections {
        Some(max) if active > max as i64 => {
            stats.downstream_cx_overflow.fetch_add(1, Relaxed);
            debug!(listener = %listener.name, max, "connection limit reached; closing new connection");
            None
        }
        _ => Some(open),
    }
}

/// A Pingora stream for a connection our accept loop took, as Pingora's
/// listener would have built it (the peer address known from accept).
fn l4_stream(tcp: TcpStream, peer: SocketAddr) -> L4Stream {
    let mut stream = L4Stream::from(tcp);
    let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
    let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(peer)));
    stream.set_socket_digest(digest);
    stream
}

/// A Pingora stream for a plaintext connection the native engine hands
/// over: the digest looks the peer's address up if asked (one
/// `getpeername(2)` on a rare path), so the connection's task need not
/// keep a copy of it for the hand-off.
fn pingora_stream(tcp: TcpStream) -> Stream {
    let mut stream = L4Stream::from(tcp);
    stream.set_socket_digest(SocketDigest::from_raw_fd(stream.as_raw_fd()));
    Box::new(stream)
}

impl<A: HttpServerApp + Send + Sync + 'static> Downstream<A> {
    /// Serves a connection our accept loop took on listener `index`: the
    /// connection's whole future, owning what it needs, so the task holds
    /// no layer around it.
    pub fn serve_tcp(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        index: usize,
        shutdown: ShutdownWatch,
    ) -> impl Future<Output = ()> + Send + 'static {
        Self::serve(self, tcp, Some(peer), index, true, shutdown, pingora_stream)
    }

    /// Serves a connection our accept loop took on pipe listener `index`
    /// (plaintext: TLS on a pipe is refused by the configuration). Its
    /// client has no address: `x-forwarded-for` gets nothing appended, as
    /// in Envoy, whose logs name the client after the listener's socket.
    pub fn serve_pipe(
        self: Arc<Self>,
        unix: UnixStream,
        index: usize,
        shutdown: ShutdownWatch,
    ) -> impl Future<Output = ()> + Send + 'static {
        let mut stream = L4Stream::from(unix);
        // The listener's own address, where Pingora's engine looks for the
        // listener of a request (no getsockname(2)).
        let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
        if let Some(local) = self.listeners[index].address.pipe().and_then(|p| p.std_addr().ok()) {
            let _ = digest.local_addr.set(Some(PingoraAddr::Unix(local)));
        }
        stream.set_socket_digest(digest);
        let stream: Stream = Box::new(stream);
        Self::serve(self, stream, None, index, true, shutdown, |s| s)
    }

    /// Serves a connection our accept loop took on a listener that chooses
    /// a filter chain per connection (`chain_match.rs`): `tls_inspector`
    /// peeks at it if configured, the match picks the chain, and the chain
    /// serves it from its first byte (nothing was consumed): its own TLS
    /// handshake, its HTTP engine, or its TCP proxy (TLS passed through as
    /// it is). No chain: the connection is closed and counted
    /// (`no_filter_chain_match`).
    pub async fn serve_selected(&self, tcp: TcpStream, peer: SocketAddr, index: usize, shutdown: &ShutdownWatch) {
        let listener = &self.listeners[index];
        let Some(selection) = listener.selection.as_deref() else { return };
        let mut conn = Connection { peer: Some(peer), ..Connection::default() };
        if let Some(inspector) = &selection.inspector {
            match inspect(&tcp, inspector.timeout).await {
                Inspected::Tls(hello) => conn.hello = Some(hello),
                Inspected::Plain => {}
                Inspected::Closed => {
                    debug!(listener = %listener.name, client = %peer, "closed before tls_inspector could tell");
                    return;
                }
                Inspected::TimedOut => {
                    listener.stats.downstream_pre_cx_timeout.fetch_add(1, Relaxed);
                    if !inspector.continue_on_timeout {
                        debug!(listener = %listener.name, client = %peer, "listener filters timed out; closing");
                        return;
                    }
                }
            }
        }
        let local = tcp.local_addr().ok();
        if selection.needs_local() {
            conn.local = local;
        }
        let Some(serving) = selection.select(&conn).and_then(|chain| listener.chains.get(chain).copied()) else {
            listener.stats.no_filter_chain_match.fetch_add(1, Relaxed);
            debug!(listener = %listener.name, client = %peer, "no filter chain matches; closing");
            return;
        };
        let target = &self.listeners[serving];
        if let Some(acceptor) = &target.acceptor {
            return self.serve_tls(tcp, peer, serving, acceptor, true, shutdown).await;
        }
        if target.tcp_proxy.is_some() {
            // Boxed, as in `serve_tls`: the TCP proxy's future would size
            // every connection's task.
            let peers = tcp::Peers { client: Some(peer), local: local.map(Address::Ip) };
            return Box::pin(self.serve_tcp_proxy(tcp, peers, serving)).await;
        }
        // For Pingora's engine, should the connection go there.
        let Some(record) = plaintext_record(local, serving, index) else {
            debug!(listener = %listener.name, client = %peer, "no local address to record the chosen filter chain under; closing");
            return;
        };
        let _chosen = record.map(|l| Chosen::record(l, peer, serving));
        Self::serve(self, tcp, Some(peer), serving, true, shutdown, pingora_stream).await
    }

    /// Serves a connection our accept loop took on TLS listener `index`:
    /// the handshake, then HTTP/1.1 or h2 as ALPN chose. A handshake that
    /// fails or never ends (a client hanging up mid-handshake, a port
    /// scanner, a client that rejects the certificate) is the client's
    /// ordinary behaviour: counted in `ssl.connection_error` and logged at
    /// debug, as Envoy does, never at error.
    pub async fn serve_tls(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        index: usize,
        acceptor: &SslAcceptor,
        chosen: bool,
        shutdown: &ShutdownWatch,
    ) {
        let listener = &self.listeners[index];
        let stream = ReadAhead::new(l4_stream(tcp, peer));
        let handshake_timeout = listener.handshake_timeout;
        // Boxed: the handshake's state is not needed once it is done, and an
        // idle keep-alive connection should not keep room for it.
        // A chosen filter chain is recorded on the connection for Pingora's
        // engine (which finds the listener by address), with what
        // `x-forwarded-client-cert` needs of the client's certificate when
        // the chain's connection manager writes it.
        let record = RecordHandshake::new(listener.client_cert_elements.first().copied().flatten(), index);
        let handshake = Box::pin(tokio::time::timeout(handshake_timeout, async {
            if !chosen && !record.builds_elements() {
                tls_server::handshake(acceptor, stream).await
            } else {
                tls_server::handshake_with_callback(acceptor, stream, &record).await
            }
        }));
        let tls = match handshake.await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                listener.stats.ssl_connection_error.fetch_add(1, Relaxed);
                debug!(listener = %listener.name, client = %peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                listener.stats.ssl_connection_error.fetch_add(1, Relaxed);
                debug!(listener = %listener.name, client = %peer, timeout = ?handshake_timeout, "TLS handshake timed out");
                return;
            }
        };
        if let Some(config) = &listener.tls_config {
            if missing_client_certificate(config, tls.ssl()) {
                listener.stats.ssl_fail_verify_no_cert.fetch_add(1, Relaxed);
                listener.stats.ssl_connection_error.fetch_add(1, Relaxed);
                debug!(listener = %listener.name, client = %peer, "client sent no certificate; closing");
                return;
            }
        }
        listener.stats.ssl_handshake.fetch_add(1, Relaxed);
        let serving = index;
        if self.listeners[serving].tcp_proxy.is_some() {
            let local = tls.get_socket_digest().and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied());
            // Boxed: inline, the TCP proxy's future set the size of every
            // TLS connection's task, HTTP ones included (bench/RESULTS.md).
            let peers = tcp::Peers { client: Some(peer), local: local.map(Address::Ip) };
            return Box::pin(self.serve_tcp_proxy(tls, peers, serving)).await;
        }
        let mut stream: Stream = Box::new(tls);
        let h2_alpn = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        if h2_alpn {
            // Pingora's HTTP/2 server logs a connection that ends before the
            // client's preface at error; a client that negotiates h2 and
            // hangs up (a TLS probe, a load generator done) is ordinary.
            let mut first = vec![0u8; H2_PREFACE_LEN];
            match tokio::time::timeout(handshake_timeout, stream.read(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {
                    first.truncate(n);
                    stream = Box::new(Replay::new(first.into(), stream));
                }
                Ok(_) => {
                    debug!(listener = %listener.name, client = %peer, "client closed before its HTTP/2 preface");
                    return;
                }
                Err(_) => {
                    debug!(listener = %listener.name, client = %peer, "no HTTP/2 preface in time");
                    return;
                }
            }
        }
        Self::serve(self, stream, Some(peer), serving, !h2_alpn, shutdown, |s| s).await;
    }

    /// Counts the connection on listener `index` and serves it: with the
    /// native engine if there is one and `native_fits` (it finds h2c itself
    /// and hands it over), else with Pingora's, on the stream `into_pingora`
    /// makes of it. `this` and `shutdown` are borrowed or owned (a spawned
    /// connection's future owns them).
    ///
    /// An `async` block rather than an `async fn`: an `async fn`'s future
    /// keeps each argument twice (as passed, and moved into the body's
    /// locals), and an idle connection's task is this future.
    #[allow(clippy::manual_async_fn)] // an `async fn` keeps its arguments twice
    fn serve<'a, S: ClientStream + 'a>(
        this: impl Deref<Target = Self> + Send + 'a,
        mut stream: S,
        peer: Option<SocketAddr>,
        index: usize,
        native_fits: bool,
        shutdown: impl Borrow<ShutdownWatch> + Send + 'a,
        into_pingora: impl FnOnce(S) -> Stream + Send + 'a,
    ) -> impl Future<Output = ()> + 'a {
        async move {
            // The listener is looked up again after the native engine's
            // await rather than held across it: this future stays smaller.
            let Some(_open) = open(&this.listeners[index]) else { return };
            let read = match &this.native {
                Some(native) if native_fits && this.listeners[index].hcm.codec != Codec::Http2 => {
                    match native.serve(&mut stream, peer.as_ref(), index, &this.drain).await {
                        Served::Closed => {
                            // Closed before the connection stops counting.
                            drop(stream);
                            return;
                        }
                        Served::HandOff(read) => read,
                    }
                }
                _ => bytes::Bytes::new(),
            };
            let source = H2Source { listener: index, client_addr: peer };
            // Pingora's engine is boxed: its future would otherwise take
            // room in every native connection's task, idle ones included.
            Box::pin(this.pingora_engine(read, into_pingora(stream), source, shutdown.borrow())).await;
        }
    }

    /// Pingora's engine, with the head deadline it lacks, on `stream` after
    /// the bytes already `read` from it; or, with the native engine, our
    /// HTTP/2 server if the connection speaks HTTP/2 (`proxy/h2.rs`). A
    /// plaintext stream is always a [`Replay`]: its peek for the h2c
    /// preface does not wait for bytes a short request never sends (Pingora
    /// peeks again before every request of a keep-alive connection). TLS
    /// streams are never peeked for it.
    async fn pingora_engine(&self, read: bytes::Bytes, stream: Stream, source: H2Source, shutdown: &ShutdownWatch) {
        let listener = &self.listeners[source.listener];
        let mut stream: Stream = match read.is_empty() && stream.get_ssl_digest().is_some() {
            true => stream,
            false => Box::new(Replay::new(read, stream)),
        };
        if let Some(native) = &self.native {
            if speaks_h2(&mut stream, listener).await {
                // Boxed: awaited inline, its future took twice its size in
                // this one, idle connections included (bench/RESULTS.md).
                return Box::pin(native.serve_h2_connection(stream, source, &self.inner, &self.drain, shutdown)).await;
            }
        }
        // Pingora's engine has no timer of its own for a request head that
        // stops arriving: `request_timeout` bounds it too (closing the
        // connection; the native engine answers 408).
        let head_limit = shorter(listener.hcm.request_headers_timeout, listener.hcm.request_timeout);
        let guarded = match head_limit {
            Some(timeout) if is_http1(&mut stream).await => Box::new(HeaderDeadline::new(stream, timeout)) as Stream,
            _ => stream,
        };
        self.pingora(guarded, shutdown).await;
    }

    /// Runs Pingora's app on `stream` for as long as it keeps the connection.
    async fn pingora(&self, stream: Stream, shutdown: &ShutdownWatch) {
        let mut next = self.inner.process_new(stream, shutdown).await;
        while let Some(stream) = next {
            next = self.inner.process_new(stream, shutdown).await;
        }
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.downstream_cx_active.fetch_sub(1, Relaxed);
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Downstream<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        // The local address costs a getsockname(2) per connection; only
        // needed to tell listeners apart.
        let local = match self.listeners.len() {
            1 => None,
            _ => stream.get_socket_digest().and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied()),
        };
        // Open until the connection closes: the drain waits for it.
        let _open = self.drain.connections().token();
        let Some(index) = listener_index(&self.listeners, local) else {
            return self.inner.process_new(stream, shutdown).await;
        };
        let h2_alpn = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        let peer = stream.get_socket_digest().and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
        Self::serve(&**self, stream, peer, index, !h2_alpn, shutdown, |s| s).await;
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// Under which local address a plaintext chain `serving` other than the
/// listener's first (`index`) is recorded for Pingora's engine (which finds
/// it by the connection's addresses): `Some(None)` when nothing needs
/// recording, `None` when it must be and cannot (no local address): the
/// connection is then closed rather than served by the first chain's
/// settings (another codec, `x-forwarded-proto: https` of a TLS chain...).
fn plaintext_record(local: Option<SocketAddr>, serving: usize, index: usize) -> Option<Option<SocketAddr>> {
    match local {
        _ if serving == index => Some(None),
        Some(l) => Some(Some(l)),
        None => None,
    }
}

/// Whether a connection speaks HTTP/2 as Pingora's engine would serve it:
/// TLS if ALPN chose h2; plaintext if it opens with the h2c preface on a
/// listener whose codec allows HTTP/2 (Pingora's `h2c` option).
async fn speaks_h2(stream: &mut Stream, listener: &ListenerRuntime) -> bool {
    if stream.get_ssl_digest().is_some() {
        return matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
    }
    listener.hcm.codec != Codec::Http1 && !is_http1(stream).await
}

/// HTTP/1 unless ALPN chose h2 or the client opened with the h2c preface.
async fn is_http1(stream: &mut Stream) -> bool {
    if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
        return false;
    }
    let mut buf = [0u8; H2_PREFACE.len()];
    match stream.try_peek(&mut buf).await {
        Ok(true) => buf != H2_PREFACE,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_plaintext_chain_without_a_local_address_is_not_served() {
        let local: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(plaintext_record(Some(local), 3, 3), Some(None));
        assert_eq!(plaintext_record(None, 3, 3), Some(None), "the first chain needs no record");
        assert_eq!(plaintext_record(Some(local), 4, 3), Some(Some(local)));
        assert_eq!(plaintext_record(None, 4, 3), None, "closed, not served by the first chain");
    }
}
