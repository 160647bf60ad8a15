//! Where downstream connections come from: one Pingora service per group of
//! listeners, running our own accept loop for plaintext and TLS listeners,
//! on the service's worker threads. With `--http1-engine pingora`,
//! plaintext listeners are Pingora's listener service's instead: its engine
//! relies on the write buffer Pingora gives the streams it accepts (a
//! response head and a small body in one write).
//!
//! TLS handshakes are ours too (on Pingora's TLS stream), so a client that
//! hangs up mid-handshake is counted on its listener (`ssl.connection_error`)
//! and logged at debug; Pingora's listener logs each at error.
//!
//! Pingora's accept path costs a plaintext connection more than serving a
//! request on it: a task future sized for a TLS handshake that tokio moves
//! on every state change, a 60 s handshake timer, a boxed stream with
//! per-read time accounting. Ours spawns a small task per connection that
//! hands the bare `TcpStream` to [`Downstream::serve_tcp`].
//!
//! As Envoy's workers, each worker thread runs its own accept loop, and a
//! connection stays on the worker that accepted it: on a socket of its own
//! (`SO_REUSEPORT`, the kernel spreads connections; Envoy's default
//! `enable_reuse_port: true`) or on one socket all of them watch. Handing
//! connections from one accepting thread to the others left each socket
//! registered with the accepting thread's poller, so every event of a
//! connection served elsewhere woke two threads (an `eventfd` write for a
//! good share of the requests).
//!
//! Listeners on a `pipe` (a Unix domain socket) run our accept loop
//! whatever the engine: one socket the workers share, bound as Envoy binds
//! it (the path unlinked first, `mode` applied), its file removed when the
//! listener closes. Their connections go to the engine chosen.
//!
//! Each worker that runs our accept loops also collects its allocator's
//! heap once a second (`allocator.rs`), so what a burst of connections
//! freed goes back to the system when the worker goes quiet.

use crate::config::model::Address;
use crate::downstream::Downstream;
use crate::drain::Drain;
use async_trait::async_trait;
use futures::FutureExt;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::server::{ListenFds, ShutdownWatch};
use pingora_core::services::listening::Service as PingoraListening;
use pingora_core::services::{Service, ServiceReadyNotifier, ServiceWithDependents};
use pingora_core::tls::ssl::SslAcceptor;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::os::fd::IntoRawFd;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::runtime::Handle;
use tracing::{info, warn};

pub mod allocator;
mod defer;
mod pipe;

use pipe::{bind_pipe, PipeFile};

/// A listener that cannot serve: the proxy stops rather than run without it.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("listener {listener:?}: cannot listen on {address}: {source}")]
    Listen { listener: String, address: Address, source: std::io::Error },
    #[error("a listener served by Pingora could not start (its listener service panicked)")]
    PingoraPanicked,
}

/// As Pingora's listeners: the kernel's accept queue is not what limits us.
const BACKLOG: i32 = 65535;
/// `TCP_DEFER_ACCEPT` period: a connection is accepted when its request
/// starts, or after this (rounded up to the kernel's next SYN-ACK
/// retransmission) for a client that sends nothing, so none is lost.
/// nginx and HAProxy use 1 s too.
const DEFER_ACCEPT_SECS: i32 = 1;
/// After `EMFILE`/`ENFILE`, accept() fails at once until a descriptor
/// frees up: pause instead of spinning.
const FD_EXHAUSTED_PAUSE: Duration = Duration::from_secs(1);

/// The sockets of a listener our accept loop serves, bound before the
/// server starts so a busy address is a start-up error with the listener's
/// name. They listen only when the service starts, after the clusters have
/// warmed up (Envoy's order): until then connections are refused.
pub struct Listener {
    /// Index of the listener in the proxy's listener list.
    index: usize,
    name: String,
    address: Address,
    /// One per worker with `SO_REUSEPORT`, or one they all share (always
    /// for a pipe).
    sockets: Vec<Socket>,
    /// A pipe's socket file, removed once the listener closes.
    pipe_file: Option<Arc<PipeFile>>,
    /// TLS listeners: the handshake every connection starts with.
    tls: Option<Arc<SslAcceptor>>,
    /// A plaintext TCP proxy: connections go to it, and are accepted at
    /// once (the server may speak first: no `TCP_DEFER_ACCEPT`).
    tcp_proxy: bool,
    /// The filter chain is chosen per connection (`chain_match.rs`).
    selects: bool,
}

/// Envoy's `ipv4_compat`: an IPv6 socket takes IPv4 connections only when
/// it is set, whatever the system's `net.ipv6.bindv6only` default (Linux's
/// is dual-stack, so a listener on `::` would take IPv4 clients the file
/// did not let in).
fn only_v6(socket: &Socket, address: SocketAddr, ipv4_compat: bool) -> std::io::Result<()> {
    if address.is_ipv6() {
        socket.set_only_v6(!ipv4_compat)?;
    }
    Ok(())
}

impl Listener {
    /// Binds `sockets` sockets to `address`; more than one share it with
    /// `SO_REUSEPORT`. An IPv6 address takes IPv4 connections too only
    /// with `ipv4_compat`.
    pub fn bind(
        index: usize,
        name: &str,
        address: &Address,
        sockets: usize,
        ipv4_compat: bool,
    ) -> std::io::Result<Self> {
        let (name, tls, tcp_proxy) = (name.to_string(), None, false);
        let address = match address {
            Address::Ip(ip) => *ip,
            Address::Pipe(pipe) => {
                let (socket, pipe_file) = bind_pipe(pipe)?;
                let (address, sockets) = (Address::Pipe(pipe.clone()), vec![socket]);
                return Ok(Self { index, name, address, sockets, pipe_file, tls, tcp_proxy, selects: false });
            }
        };
        let bind = || -> std::io::Result<Socket> {
            let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
            socket.set_reuse_address(true)?;
            only_v6(&socket, address, ipv4_compat)?;
            if sockets > 1 {
                socket.set_reuse_port(true)?;
            }
            socket.bind(&address.into())?;
            Ok(socket)
        };
        let sockets = (0..sockets.max(1)).map(|_| bind()).collect::<std::io::Result<_>>()?;
        Ok(Self {
            index,
            name,
            address: Address::Ip(address),
            sockets,
            pipe_file: None,
            tls,
            tcp_proxy,
            selects: false,
        })
    }

    /// Makes it a plaintext TCP proxy's listener.
    pub fn with_tcp_proxy(mut self) -> Self {
        self.tcp_proxy = true;
        self
    }

    /// Makes it a TLS listener.
    pub fn with_tls(mut self, acceptor: Arc<SslAcceptor>) -> Self {
        self.tls = Some(acceptor);
        self
    }

    /// Makes it a listener that chooses a filter chain per connection.
    pub fn with_selection(mut self) -> Self {
        self.selects = true;
        self
    }

    /// Starts listening: a socket for each of `workers` accept loops, its
    /// own (bound for as many workers) or a handle on the shared one.
    fn listen(self, workers: usize) -> std::io::Result<Listen> {
        if self.address.pipe().is_some() {
            // One socket, shared by the workers.
            let mut sockets = Vec::with_capacity(workers);
            for socket in &self.sockets {
                socket.listen(BACKLOG)?;
                socket.set_nonblocking(true)?;
                for _ in 0..workers {
                    sockets.push(ListenSocket::Pipe(socket.try_clone()?.into()));
                }
            }
            return Ok(Listen { sockets, deferred: false });
        }
        for socket in &self.sockets {
            socket.listen(BACKLOG)?;
            // After listen(), which resets it. Accepted connections inherit
            // it: no ACK of its own for a request, which the response
            // acknowledges anyway (HAProxy's default in HTTP mode). Not
            // behind a TCP proxy: a protocol may wait for the ACK (Nagle).
            if !self.tcp_proxy {
                socket.set_tcp_quickack(false)?;
            }
            socket.set_nonblocking(true)?;
        }
        // A connection joins the accept queue with its first bytes: one
        // wake-up of the worker per connection instead of two. An HTTP
        // (or TLS) client speaks first, so nothing waits on us; behind a
        // TCP proxy the server may speak first.
        let deferred = !self.tcp_proxy
            && self.sockets.iter().all(|socket| match defer::set(socket, DEFER_ACCEPT_SECS) {
            Ok(()) => true,
            Err(e) => {
                warn!(listener = %self.name, error = %e, "TCP_DEFER_ACCEPT not set; connections are accepted at once");
                false
            }
        });
        let sockets = match self.sockets.as_slice() {
            [shared] => (0..workers)
                .map(|_| Ok(ListenSocket::Tcp(shared.try_clone()?.into())))
                .collect::<std::io::Result<_>>()?,
            _ => self.sockets.into_iter().map(|s| ListenSocket::Tcp(s.into())).collect(),
        };
        Ok(Listen { sockets, deferred })
    }
}

/// The socket of a listener Pingora's listener service serves (plaintext
/// with `--http1-engine pingora`), bound before the server starts
/// as ours are, and listening once the clusters have warmed up. Pingora's
/// service then takes it over instead of binding its own.
pub struct PingoraSocket {
    name: String,
    address: SocketAddr,
    socket: Socket,
}

impl PingoraSocket {
    /// Binds, with `SO_REUSEADDR` as Pingora's own listeners.
    pub fn bind(name: &str, address: SocketAddr, ipv4_compat: bool) -> std::io::Result<Self> {
        let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        only_v6(&socket, address, ipv4_compat)?;
        socket.bind(&address.into())?;
        Ok(Self { name: name.to_string(), address, socket })
    }

    /// Starts listening and leaves the socket in Pingora's table of
    /// listening sockets (its zero-downtime upgrade path), where its
    /// listener service looks for one by the address it was given before
    /// it binds its own. Without a table the socket is closed, and Pingora
    /// binds the address itself.
    fn listen(self, fds: Option<&ListenFds>) -> std::io::Result<()> {
        let Some(fds) = fds else { return Ok(()) };
        self.socket.listen(BACKLOG)?;
        // Pingora registers it with tokio as it is: a blocking accept()
        // would stall the worker and every connection on it.
        self.socket.set_nonblocking(true)?;
        fds.lock().add(self.address.to_string(), self.socket.into_raw_fd());
        Ok(())
    }
}

/// One accept loop's listening socket.
enum ListenSocket {
    Tcp(std::net::TcpListener),
    Pipe(std::os::unix::net::UnixListener),
}

/// A listener's sockets once listening, one per accept loop.
struct Listen {
    sockets: Vec<ListenSocket>,
    /// Whether `TCP_DEFER_ACCEPT` is on: an accepted connection has its
    /// first bytes waiting.
    deferred: bool,
}

/// The listeners of one group, served by one pool of worker threads.
pub struct Listening<A: HttpServerApp + Send + Sync + 'static> {
    name: String,
    downstream: Downstream<A>,
    own: Vec<Listener>,
    /// Pingora's listener service for the plaintext listeners with
    /// `--http1-engine pingora`, if any.
    pingora: Option<PingoraListening<Downstream<A>>>,
    /// Its sockets, bound at start-up.
    prebound: Vec<PingoraSocket>,
    /// Worker threads of the service.
    workers: usize,
    /// The drain: when the accept loops stop, and what waits for connections.
    drain: Arc<Drain>,
}

impl<A: HttpServerApp + Send + Sync + 'static> Listening<A> {
    pub fn new(
        name: String,
        downstream: Downstream<A>,
        own: Vec<Listener>,
        pingora: Option<PingoraListening<Downstream<A>>>,
        prebound: Vec<PingoraSocket>,
        workers: usize,
        drain: Arc<Drain>,
    ) -> Self {
        Self { name, downstream, own, pingora, prebound, workers, drain }
    }
}

/// Pingora tells the services that depend on this one (the admin's
/// readiness) once every listener of the group accepts connections.
///
/// Everything here follows the drain, not the `ShutdownWatch` Pingora hands
/// the service: Pingora's watch only turns once the drain is over.
#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServiceWithDependents for Listening<A> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        _pingora_shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready: ServiceReadyNotifier,
    ) {
        if let Err(e) = self.serve(fds, listeners_per_fd, ready).await {
            self.drain.fail(e);
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> Listening<A> {
    /// Opens the group's listeners and serves them until the drain starts.
    async fn serve(
        &mut self,
        fds: Option<ListenFds>,
        listeners_per_fd: usize,
        ready: ServiceReadyNotifier,
    ) -> Result<(), ListenError> {
        let mut loops = Vec::new();
        let downstream = Arc::new(self.downstream.clone());
        let workers = if self.own.is_empty() { Vec::new() } else { worker_handles(self.workers).await };
        for worker in &workers {
            worker.spawn(allocator::collect_while_serving(self.drain.clone()));
        }
        for listener in self.own.drain(..) {
            let (index, address, name, tls, tcp_proxy, selects) = (
                listener.index,
                listener.address.clone(),
                listener.name.clone(),
                listener.tls.clone(),
                listener.tcp_proxy,
                listener.selects,
            );
            let pipe_file = listener.pipe_file.clone();
            let Listen { sockets, deferred } = listener
                .listen(workers.len())
                .map_err(|source| ListenError::Listen { listener: name.clone(), address: address.clone(), source })?;
            for (worker, socket) in workers.iter().zip(sockets) {
                let accept = AcceptLoop {
                    listener: name.clone(),
                    address: address.clone(),
                    pipe_file: pipe_file.clone(),
                    index,
                    deferred,
                    tls: tls.clone(),
                    tcp_proxy,
                    selects,
                    downstream: downstream.clone(),
                    drain: self.drain.clone(),
                };
                loops.push(worker.spawn(accept.run(socket)));
            }
        }
        for socket in self.prebound.drain(..) {
            let (listener, address) = (socket.name.clone(), socket.address);
            socket.listen(fds.as_ref()).map_err(|source| ListenError::Listen {
                listener,
                address: Address::Ip(address),
                source,
            })?;
        }
        ready.notify_ready();
        if let Some(pingora) = self.pingora.as_mut() {
            // Pingora panics its service if a listener cannot start (the
            // socket is ours, but taking it over can still fail); the other
            // listeners must not go on without it.
            let service = AssertUnwindSafe(Service::start_service(pingora, fds, self.drain.watch(), listeners_per_fd));
            if service.catch_unwind().await.is_err() {
                return Err(ListenError::PingoraPanicked);
            }
        }
        for finished in futures::future::join_all(loops).await {
            // An accept loop that could not watch its socket.
            if let Ok(Err(e)) = finished {
                return Err(e);
            }
        }
        // The accept loops end when the drain starts: Pingora's engine now
        // closes its idle keep-alive connections (the native engine watches
        // the drain itself).
        self.downstream.cleanup().await;
        Ok(())
    }
}

/// Makes the connection's first read wait for the poller to report data
/// (when `TCP_DEFER_ACCEPT` could not be set: with it, the data is there).
/// Tokio marks an accepted socket readable before any event (1.54,
/// `TcpStream::new_accepted`), so the first read tried the socket at once;
/// under load the request is seldom there yet at accept time, and that read
/// was a `recvfrom` returning `EAGAIN` for nearly every new connection.
/// Only that assumption is cleared: a request that arrived
/// before the socket joined epoll is reported by the next poll (the kernel
/// checks a socket as it is added), as one arriving later is.
fn expect_request(tcp: &TcpStream) {
    let _ = tcp.try_io(Interest::READABLE, || Err::<(), _>(std::io::ErrorKind::WouldBlock.into()));
}

/// A runtime handle for each worker thread of the running service, in no
/// particular order. Pingora hands out the handle of a random worker, so
/// probes go to random ones until each has answered (three on average for
/// two workers). Should that take implausibly long, workers repeat.
async fn worker_handles(workers: usize) -> Vec<Handle> {
    let mut found: Vec<(ThreadId, Handle)> = Vec::with_capacity(workers);
    for _ in 0..workers * 64 {
        if found.len() == workers {
            break;
        }
        let handle = pingora_runtime::current_handle();
        if let Ok(thread) = handle.spawn(async { std::thread::current().id() }).await {
            if !found.iter().any(|(t, _)| *t == thread) {
                found.push((thread, handle));
            }
        }
    }
    if found.len() < workers {
        warn!(workers, found = found.len(), "not every worker thread answered; some run two accept loops");
    }
    let handles: Vec<Handle> = found.into_iter().map(|(_, h)| h).collect();
    handles.iter().cycle().take(workers).cloned().collect()
}

/// One worker's accept loop on one listener.
struct AcceptLoop<A> {
    listener: String,
    address: Address,
    /// A pipe's socket file, removed when the last loop on it ends.
    pipe_file: Option<Arc<PipeFile>>,
    /// The listener's index in the proxy's listener list.
    index: usize,
    /// `TCP_DEFER_ACCEPT` is on: a connection has its first bytes waiting.
    deferred: bool,
    /// TLS listeners: the handshake to run first.
    tls: Option<Arc<SslAcceptor>>,
    /// A plaintext TCP proxy's listener.
    tcp_proxy: bool,
    /// The filter chain is chosen per connection.
    selects: bool,
    downstream: Arc<Downstream<A>>,
    drain: Arc<Drain>,
}

/// A listening socket as an accept loop watches it. What the two kinds
/// share (the drain, the spawn, the handling of accept errors) is
/// [`AcceptLoop::run`]; what differs is in [`AcceptLoop::spawn`].
enum Accepting {
    Tcp(TcpListener),
    Pipe(UnixListener),
}

/// A connection as accepted: a TCP one has its client's address, a Unix
/// domain socket's client has none.
enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Pipe(UnixStream),
}

impl Accepting {
    /// Registers the socket with this worker's poller.
    fn watch(socket: ListenSocket) -> std::io::Result<Self> {
        Ok(match socket {
            ListenSocket::Tcp(socket) => Accepting::Tcp(TcpListener::from_std(socket)?),
            ListenSocket::Pipe(socket) => Accepting::Pipe(UnixListener::from_std(socket)?),
        })
    }

    async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            Accepting::Tcp(listener) => listener.accept().await.map(|(tcp, peer)| Accepted::Tcp(tcp, peer)),
            Accepting::Pipe(listener) => listener.accept().await.map(|(unix, _)| Accepted::Pipe(unix)),
        }
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> AcceptLoop<A> {
    /// Accepts connections on this worker until the drain starts, then
    /// closes its socket (new connections are refused while the open ones
    /// finish) and, on a pipe, lets go of its socket file. Each connection
    /// is served on this worker, as a task the drain waits for.
    async fn run(self, socket: ListenSocket) -> Result<(), ListenError> {
        let listener = Accepting::watch(socket).map_err(|source| ListenError::Listen {
            listener: self.listener.clone(),
            address: self.address.clone(),
            source,
        })?;
        // The address the logs name: the bound one for TCP (the port the
        // kernel chose for port 0), the path for a pipe.
        let address = match &listener {
            Accepting::Tcp(tcp) => format!("{:?}", tcp.local_addr().ok()),
            Accepting::Pipe(_) => self.address.to_string(),
        };
        info!(%address, "accepting connections");
        let shutdown = self.drain.watch();
        let drain_started = self.drain.started();
        tokio::pin!(drain_started);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = &mut drain_started => break,
            };
            match accepted {
                Ok(connection) => self.spawn(connection, &shutdown),
                // The client gave up before it was accepted: nothing to report.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    warn!(%address, error = %e, "accept failed");
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                        // The pause ends early if the drain starts meanwhile.
                        let _ = tokio::time::timeout(FD_EXHAUSTED_PAUSE, &mut drain_started).await;
                    }
                }
            }
        }
        // Closed before a pipe's file goes (the last loop's `pipe_file`).
        drop(listener);
        info!(%address, "listener closed");
        drop(self.pipe_file);
        Ok(())
    }

    /// Serves one connection as a task on this worker that the drain waits
    /// for: to the TCP proxy, the filter chain selection, the TLS handshake
    /// or the HTTP engine, as the listener says.
    ///
    /// Most are boxed: the connection's future is large (a request's state
    /// lives in it across awaits), and tokio moves a task's future into
    /// place and writes its result over it; a box is moved once and the
    /// task stays small. The tracker wraps the box, so the box's size (a
    /// mimalloc size class) is the connection's alone.
    fn spawn(&self, connection: Accepted, shutdown: &ShutdownWatch) {
        let downstream = self.downstream.clone();
        let shutdown = shutdown.clone();
        let index = self.index;
        let connections = self.drain.connections();
        let (tcp, peer) = match connection {
            Accepted::Tcp(tcp, peer) => (tcp, peer),
            // No address, no TCP options; TLS and chain selection on a pipe
            // are refused by the configuration.
            Accepted::Pipe(unix) => {
                if self.tcp_proxy {
                    let peers = crate::proxy::tcp::Peers { client: None, local: Some(self.address.clone()) };
                    connections.spawn(async move { downstream.serve_tcp_proxy(unix, peers, index).await });
                } else {
                    connections.spawn(Box::pin(downstream.serve_pipe(unix, index, shutdown)));
                }
                return;
            }
        };
        // As Pingora's listener: responses go out as they are written.
        let _ = tcp.set_nodelay(true);
        if !self.deferred {
            expect_request(&tcp);
        }
        match self.tls.clone() {
            _ if self.selects => {
                connections
                    .spawn(Box::pin(async move { downstream.serve_selected(tcp, peer, index, &shutdown).await }));
            }
            None if self.tcp_proxy => {
                let local = tcp.local_addr().ok().map(Address::Ip);
                let peers = crate::proxy::tcp::Peers { client: Some(peer), local };
                connections.spawn(async move { downstream.serve_tcp_proxy(tcp, peers, index).await });
            }
            None => {
                connections.spawn(Box::pin(downstream.serve_tcp(tcp, peer, index, shutdown)));
            }
            Some(acceptor) => {
                connections.spawn(Box::pin(async move {
                    downstream.serve_tls(tcp, peer, index, &acceptor, false, &shutdown).await
                }));
            }
        }
    }
}
