//! A raw TCP backend for the TCP proxy: it echoes every byte back as it
//! arrives and, when the client half-closes, writes a trailer and closes
//! its side, so a test sees that the end of stream crossed the proxy both
//! ways. A backend that speaks first (a greeting on accept) is an option.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Written after the echo once the client's end of stream arrived.
pub const EOF_TRAILER: &[u8] = b"<eof seen>";

pub struct EchoBackend {
    pub addr: SocketAddr,
    /// Connections accepted.
    accepted: Arc<AtomicUsize>,
    /// Connections whose client half-closed (EOF read) or closed.
    ended: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl EchoBackend {
    /// An echo server on `addr`; `greeting`, if any, is sent on accept.
    pub async fn start(addr: SocketAddr, greeting: Option<&'static [u8]>) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind echo backend");
        let addr = listener.local_addr().expect("echo addr");
        let (accepted, ended) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (a, e) = (accepted.clone(), ended.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                a.fetch_add(1, SeqCst);
                let e = e.clone();
                tokio::spawn(async move {
                    if let Some(g) = greeting {
                        if s.write_all(g).await.is_err() {
                            return;
                        }
                    }
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) => {
                                e.fetch_add(1, SeqCst);
                                let _ = s.write_all(EOF_TRAILER).await;
                                let _ = s.shutdown().await;
                                return;
                            }
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    e.fetch_add(1, SeqCst);
                                    return;
                                }
                            }
                            Err(_) => {
                                e.fetch_add(1, SeqCst);
                                return;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, accepted, ended, task }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(SeqCst)
    }

    pub fn ended(&self) -> usize {
        self.ended.load(SeqCst)
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}
