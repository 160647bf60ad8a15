//! The stream wrappers a downstream connection goes through before an
//! engine reads it: [`HeaderDeadline`] (Envoy's `request_headers_timeout`
//! on Pingora's engine) and [`Replay`] (bytes the native engine read,
//! handed back when it passes the connection to Pingora), and the macros
//! that delegate Pingora's stream traits to the wrapped stream (also used
//! by `read_ahead.rs`).

use super::{H2_CLIENT_PREFACE, H2_PREFACE_LEN};
use async_trait::async_trait;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::TlsRef;
use pingora_core::protocols::{GetProxyDigest, GetSocketDigest, GetTimingDigest, SocketDigest, TimingDigest};
use pingora_core::protocols::{Peek, Shutdown, Ssl, Stream, UniqueID, UniqueIDType, ALPN};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests: nothing armed.
    Idle,
    /// Request headers are arriving: the deadline runs.
    Headers,
    /// Headers complete; the body and the response follow.
    Body,
}

/// An HTTP/1 stream whose request headers must arrive completely within
/// `timeout` of their first byte. The deadline re-arms when the proxy
/// starts writing a final response (the next bytes belong to a new request).
#[derive(Debug)]
pub struct HeaderDeadline {
    inner: Stream,
    timeout: Duration,
    phase: Phase,
    deadline: Option<Pin<Box<Sleep>>>,
    /// The last (up to three) bytes seen, to find `\r\n\r\n` across reads.
    tail: Vec<u8>,
}

impl HeaderDeadline {
    pub fn new(inner: Stream, timeout: Duration) -> Self {
        Self { inner, timeout, phase: Phase::Idle, deadline: None, tail: Vec::new() }
    }

    /// Looks for the end of the headers, also across read boundaries.
    fn scan(&mut self, data: &[u8]) {
        let mut window = Vec::with_capacity(self.tail.len() + data.len());
        window.extend_from_slice(&self.tail);
        window.extend_from_slice(data);
        // The empty line that ends a head: CRLF or a bare LF (RFC 9112 §2.2).
        if window.windows(3).any(|w| w == b"\n\r\n") || window.windows(2).any(|w| w == b"\n\n") {
            self.phase = Phase::Body;
            self.deadline = None;
        }
        self.tail = window[window.len().saturating_sub(3)..].to_vec();
    }
}

impl AsyncRead for HeaderDeadline {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if let Some(deadline) = self.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "request headers did not arrive within request_headers_timeout",
                )));
            }
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            let data = buf.filled()[before..].to_vec();
            if !data.is_empty() {
                if self.phase == Phase::Idle {
                    self.phase = Phase::Headers;
                    self.tail.clear();
                    let timeout = self.timeout;
                    self.deadline = Some(Box::pin(tokio::time::sleep_until(Instant::now() + timeout)));
                }
                if self.phase == Phase::Headers {
                    self.scan(&data);
                }
            }
        }
        res
    }
}

impl AsyncWrite for HeaderDeadline {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        // A final (non-1xx) response starts: whatever is read next is a new request.
        if data.starts_with(b"HTTP/1.") && data.get(9) != Some(&b'1') {
            self.phase = Phase::Idle;
            self.deadline = None;
        }
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if bufs.first().is_some_and(|b| b.starts_with(b"HTTP/1.") && b.get(9) != Some(&b'1')) {
            self.phase = Phase::Idle;
            self.deadline = None;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Implements Pingora's stream traits for a wrapper by delegating to its
/// `inner` stream (all but `AsyncRead`/`AsyncWrite` and `Peek`).
macro_rules! delegate_stream_traits {
    ($wrapper:ty) => {
        #[async_trait]
        impl Shutdown for $wrapper {
            async fn shutdown(&mut self) {
                self.inner.shutdown().await
            }
        }

        impl UniqueID for $wrapper {
            fn id(&self) -> UniqueIDType {
                self.inner.id()
            }
        }

        impl Ssl for $wrapper {
            fn get_ssl(&self) -> Option<&TlsRef> {
                self.inner.get_ssl()
            }
            fn get_ssl_digest(&self) -> Option<Arc<pingora_core::protocols::tls::SslDigest>> {
                self.inner.get_ssl_digest()
            }
            fn selected_alpn_proto(&self) -> Option<ALPN> {
                self.inner.selected_alpn_proto()
            }
        }

        impl GetTimingDigest for $wrapper {
            fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
                self.inner.get_timing_digest()
            }
            fn get_read_pending_time(&self) -> Duration {
                self.inner.get_read_pending_time()
            }
            fn get_write_pending_time(&self) -> Duration {
                self.inner.get_write_pending_time()
            }
        }

        impl GetProxyDigest for $wrapper {
            fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
                self.inner.get_proxy_digest()
            }
            fn set_proxy_digest(&mut self, digest: ProxyDigest) {
                self.inner.set_proxy_digest(digest)
            }
        }

        impl GetSocketDigest for $wrapper {
            fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
                self.inner.get_socket_digest()
            }
            fn set_socket_digest(&mut self, digest: SocketDigest) {
                self.inner.set_socket_digest(digest)
            }
        }
    };
}

/// Implements `AsyncWrite` for a wrapper that writes through its `inner`
/// stream unchanged.
macro_rules! delegate_async_write {
    ($wrapper:ty) => {
        impl AsyncWrite for $wrapper {
            fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
                Pin::new(&mut self.inner).poll_write(cx, data)
            }

            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.inner).poll_shutdown(cx)
            }

            fn poll_write_vectored(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> Poll<std::io::Result<usize>> {
                Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
        }
    };
}

delegate_stream_traits!(HeaderDeadline);

#[async_trait]
impl Peek for HeaderDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// A stream whose first bytes were already read (by the native engine):
/// reads return them before anything new, so Pingora sees the connection
/// from the start of the request it takes over.
#[derive(Debug)]
pub struct Replay {
    read: bytes::Bytes,
    inner: Stream,
}

impl Replay {
    pub fn new(read: bytes::Bytes, inner: Stream) -> Self {
        Self { read, inner }
    }
}

impl AsyncRead for Replay {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read.split_to(n));
        Poll::Ready(Ok(()))
    }
}

delegate_async_write!(Replay);

delegate_stream_traits!(Replay);

#[async_trait]
impl Peek for Replay {
    /// All Pingora (and [`is_http1`]) peek for is the h2c preface. Pingora's
    /// own streams wait for `buf.len()` bytes, so a whole request shorter
    /// than the preface (`GET / HTTP/1.0\r\n\r\n` is 18 bytes) would wait
    /// for bytes that never come. Here reading stops at the first byte that
    /// differs from the preface: the rest of `buf` is zeroed, so it cannot
    /// equal the preface and the connection is HTTP/1. What is read is kept
    /// for the reads that follow.
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        while self.read.len() < buf.len() && H2_CLIENT_PREFACE.starts_with(&self.read) {
            let mut more = [0u8; H2_PREFACE_LEN];
            let want = (buf.len() - self.read.len()).min(more.len());
            let n = self.inner.read(&mut more[..want]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let mut read = Vec::with_capacity(self.read.len() + n);
            read.extend_from_slice(&self.read);
            read.extend_from_slice(&more[..n]);
            self.read = read.into();
        }
        let n = self.read.len().min(buf.len());
        buf[..n].copy_from_slice(&self.read[..n]);
        buf[n..].fill(0);
        Ok(true)
    }
}
