//! Where downstream connections come from: one Pingora service per group of
//! listeners, running our own accept loop for the plaintext ones and
//! Pingora's listener service for the TLS ones, on the same worker threads.
//! With `--http1-engine pingora`, plaintext listeners stay on Pingora's
//! listener too: its engine relies on the write buffer Pingora gives the
//! streams it accepts (a response head and a small body in one write).
//!
//! Pingora's accept path costs a plaintext connection more than serving a
//! request on it: a task future sized for a TLS handshake that tokio moves
//! on every state change, a 60 s handshake timer, a boxed stream with
//! per-read time accounting. Ours spawns a small task per connection that
//! hands the bare `TcpStream` to [`Downstream::serve_tcp`].

use crate::downstream::Downstream;
use async_trait::async_trait;
use futures::FutureExt;
use pingora_core::apps::ServerApp;
use pingora_core::server::{ListenFds, ShutdownWatch};
use pingora_core::services::listening::Service as PingoraListening;
use pingora_core::services::Service;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tracing::{error, info, warn};

/// As Pingora's listeners: the kernel's accept queue is not what limits us.
const BACKLOG: i32 = 65535;
/// After `EMFILE`/`ENFILE`, accept() fails at once until a descriptor
/// frees up: pause instead of spinning.
const FD_EXHAUSTED_PAUSE: Duration = Duration::from_secs(1);
/// errno values (no libc binding in this crate).
const ENFILE: i32 = 23;
const EMFILE: i32 = 24;

/// A plaintext listener's socket, bound before the server starts so a busy
/// address is a start-up error with the listener's name. It listens only
/// when the service starts, after the clusters have warmed up (Envoy's
/// order): until then connections are refused.
pub struct PlainListener {
    /// Index of the listener in the proxy's listener list.
    index: usize,
    name: String,
    address: SocketAddr,
    socket: Socket,
}

impl PlainListener {
    pub fn bind(index: usize, name: &str, address: SocketAddr) -> std::io::Result<Self> {
        let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.bind(&address.into())?;
        Ok(Self { index, name: name.to_string(), address, socket })
    }

    /// Starts listening; must run inside the runtime that will accept.
    fn listen(self) -> std::io::Result<TcpListener> {
        self.socket.listen(BACKLOG)?;
        self.socket.set_nonblocking(true)?;
        TcpListener::from_std(self.socket.into())
    }
}

/// The listeners of one group, served by one pool of worker threads.
pub struct Listening<A: ServerApp + Send + Sync + 'static> {
    name: String,
    downstream: Downstream<A>,
    plain: Vec<PlainListener>,
    /// Pingora's listener service for the TLS listeners (and the plaintext
    /// ones with `--http1-engine pingora`), if any.
    pingora: Option<PingoraListening<Downstream<A>>>,
    /// Worker threads of the service.
    workers: usize,
}

impl<A: ServerApp + Send + Sync + 'static> Listening<A> {
    pub fn new(
        name: String,
        downstream: Downstream<A>,
        plain: Vec<PlainListener>,
        pingora: Option<PingoraListening<Downstream<A>>>,
        workers: usize,
    ) -> Self {
        Self { name, downstream, plain, pingora, workers }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> Service for Listening<A> {
    async fn start_service(&mut self, fds: Option<ListenFds>, shutdown: ShutdownWatch, listeners_per_fd: usize) {
        let mut loops = Vec::new();
        let downstream = Arc::new(self.downstream.clone());
        for plain in self.plain.drain(..) {
            let (index, address, name) = (plain.index, plain.address, plain.name.clone());
            match plain.listen() {
                Ok(listener) => {
                    let accept = accept_loop(listener, index, downstream.clone(), shutdown.clone(), self.workers);
                    loops.push(tokio::spawn(accept));
                }
                Err(e) => {
                    // A proxy missing one of its listeners must not run on.
                    error!(listener = %name, %address, error = %e, "cannot listen");
                    std::process::exit(1);
                }
            }
        }
        if let Some(pingora) = self.pingora.as_mut() {
            // Pingora panics its service if it cannot bind a listener
            // (checked at start, but the address can be taken since); the
            // other listeners must not go on without it.
            let service = AssertUnwindSafe(pingora.start_service(fds, shutdown.clone(), listeners_per_fd));
            if service.catch_unwind().await.is_err() {
                error!("a listener could not start; exiting");
                std::process::exit(1);
            }
        }
        futures::future::join_all(loops).await;
        // The accept loops end at shutdown: Pingora's engine now closes its
        // idle keep-alive connections (the native engine watches the
        // shutdown itself).
        self.downstream.cleanup().await;
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Makes the connection's first read wait for the poller to report data.
/// Tokio marks an accepted socket readable before any event (1.54,
/// `TcpStream::new_accepted`), so the first read tried the socket at once;
/// under load the request is seldom there yet at accept time, and that read
/// was a `recvfrom` returning `EAGAIN` for 0.95 of the connections in
/// scenario (c). Only that assumption is cleared: a request that arrived
/// before the socket joined epoll is reported by the next poll (the kernel
/// checks a socket as it is added), as one arriving later is.
fn expect_request(tcp: &TcpStream) {
    let _ = tcp.try_io(Interest::READABLE, || Err::<(), _>(std::io::ErrorKind::WouldBlock.into()));
}

/// Accepts connections until the server shuts down, then closes the socket
/// (new connections are refused while the open ones drain).
async fn accept_loop<A: ServerApp + Send + Sync + 'static>(
    listener: TcpListener,
    index: usize,
    downstream: Arc<Downstream<A>>,
    mut shutdown: ShutdownWatch,
    workers: usize,
) {
    let address = listener.local_addr().ok();
    info!(?address, "accepting connections");
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = shutdown.changed() => match changed {
                Ok(()) if !*shutdown.borrow() => continue,
                _ => break,
            },
        };
        match accepted {
            Ok((tcp, peer)) => {
                // As Pingora's listener: responses go out as they are written.
                let _ = tcp.set_nodelay(true);
                expect_request(&tcp);
                let downstream = downstream.clone();
                let shutdown = shutdown.clone();
                // Boxed: the connection's future is 3.4 KB (a request's state
                // lives in it across awaits), and tokio moves a task's future
                // into place and writes its result over it; a box is moved
                // once and the task stays small.
                let connection = Box::pin(async move { downstream.serve_tcp(tcp, peer, index, &shutdown).await });
                match workers {
                    // One worker: no need to draw a random one.
                    1 => tokio::spawn(connection),
                    // Spread over the workers as Pingora's listener does.
                    _ => pingora_runtime::current_handle().spawn(connection),
                };
            }
            // The client gave up before it was accepted: nothing to report.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {}
            Err(e) => {
                warn!(?address, error = %e, "accept failed");
                if matches!(e.raw_os_error(), Some(EMFILE | ENFILE)) {
                    // The pause ends early if the server shuts down meanwhile.
                    let _ = tokio::time::timeout(FD_EXHAUSTED_PAUSE, shutdown.changed()).await;
                    if *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
    }
    info!(?address, "listener closed");
}
