//! Binding a listener and serving until SIGTERM or Ctrl-C, then finishing
//! the requests in flight (`docker stop` sends SIGTERM and waits 10 s).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use poem::listener::TcpAcceptor;
use poem::{Endpoint, Server};

/// How long in-flight requests may take to finish after a shutdown signal;
/// below Docker's 10 s so the process exits before it is killed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// A bound listener, not yet serving.
pub struct Listener {
    acceptor: TcpAcceptor,
    local_addr: SocketAddr,
}

/// Binds `addr` (port 0 picks a free port; see [`Listener::local_addr`]).
pub async fn bind(addr: SocketAddr) -> io::Result<Listener> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    Ok(Listener { acceptor: TcpAcceptor::from_tokio(listener)?, local_addr })
}

impl Listener {
    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `ep` until `shutdown` completes, then stops accepting and gives
    /// in-flight requests up to [`SHUTDOWN_GRACE`] to finish.
    pub async fn serve<E>(self, ep: E, shutdown: impl Future<Output = ()>) -> io::Result<()>
    where
        E: Endpoint + 'static,
    {
        Server::new_with_acceptor(self.acceptor).run_with_graceful_shutdown(ep, shutdown, Some(SHUTDOWN_GRACE)).await
    }
}

/// Completes on the first SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
