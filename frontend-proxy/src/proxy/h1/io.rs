//! The client side of a native-engine connection: what it is served on
//! ([`ClientStream`]: a plaintext listener's own `TcpStream`, or a Pingora
//! stream for TLS) and the writes the engine makes on it.

use bytes::Buf;
use pingora_core::protocols::tls::SslDigest;
use std::future::Future;
use std::io::IoSlice;
use std::sync::Arc;
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most slices a write gathers: a head, a body part and a chunked body's end.
const SLICES: usize = 4;

/// What the native engine serves on.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + Sized {
    /// Waits until a read would find bytes (or the end), so a connection
    /// waiting for a request holds no buffer; streams that cannot tell
    /// return at once and wait in the read.
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }

    /// Writes `bytes`: the last the connection carries before it is shut down.
    fn write_last<B: Buf + Send + Sync>(&mut self, mut bytes: B) -> impl Future<Output = std::io::Result<()>> + Send {
        async move { write_all(self, &mut bytes).await }
    }

    /// The TLS digest of the connection (chosen chain, client certificate);
    /// `None` on plaintext.
    fn ssl_digest(&self) -> Option<Arc<SslDigest>> {
        None
    }
}

impl ClientStream for Box<dyn pingora_core::protocols::IO + '_> {
    fn ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.get_ssl_digest()
    }
}

/// The last response goes out with `MSG_MORE`: the kernel holds its last
/// part until the shutdown that follows, which sends it in the same segment
/// as the FIN. A connection that closes after its response (connection per
/// request) costs one segment less on both ends: one receive path and one
/// wake-up of the client fewer.
impl ClientStream for TcpStream {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        // The read's own waker slot: `TcpStream::readable` queues a waiter
        // under a lock instead.
        std::future::poll_fn(|cx| self.poll_read_ready(cx))
    }

    async fn write_last<B: Buf + Send + Sync>(&mut self, mut bytes: B) -> std::io::Result<()> {
        let me: &TcpStream = self;
        while bytes.has_remaining() {
            // The write's own waker slot, as `readable` (`async_io` queues a waiter).
            let n = std::future::poll_fn(|cx| loop {
                std::task::ready!(me.poll_write_ready(cx))?;
                let sent = me.try_io(tokio::io::Interest::WRITABLE, || {
                    let mut slices = [IoSlice::new(&[]); SLICES];
                    let n = bytes.chunks_vectored(&mut slices);
                    socket2::SockRef::from(me).send_vectored_with_flags(&slices[..n], MSG_MORE)
                });
                match sent {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    done => return Poll::Ready(done),
                }
            })
            .await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            bytes.advance(n);
        }
        Ok(())
    }
}

/// `send(2)`'s "more is coming" flag (Linux; elsewhere the bytes go at once).
#[cfg(target_os = "linux")]
const MSG_MORE: std::ffi::c_int = 0x8000;
#[cfg(not(target_os = "linux"))]
const MSG_MORE: std::ffi::c_int = 0;

/// Writes all of `bytes` (vectored when it is in several parts) and flushes.
pub async fn write_all<S: AsyncWrite + Unpin, B: Buf>(s: &mut S, bytes: &mut B) -> std::io::Result<()> {
    s.write_all_buf(bytes).await?;
    s.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::Context;

    /// A socket that takes at most three bytes per write, vectored or not.
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(3);
            self.0.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut n = 0;
            for b in bufs {
                let k = b.len().min(3 - n);
                self.0.extend_from_slice(&b[..k]);
                n += k;
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn parts_written_side_by_side_survive_short_writes() {
        let cases: [(&[u8], &[u8], &[u8]); 5] = [
            (b"HTTP/1.1 200 OK\r\n\r\n", b"0123456789", b""),
            (b"", b"body only", b""),
            (b"head only", b"", b""),
            (b"ab", b"c", b"\r\n"),
            (b"", b"", b"\r\n"),
        ];
        for (head, body, tail) in cases {
            let mut w = Trickle(Vec::new());
            write_all(&mut w, &mut head.chain(body).chain(tail)).await.unwrap();
            assert_eq!(w.0, [head, body, tail].concat());
        }
    }

    #[tokio::test]
    async fn the_last_write_on_a_socket_sends_every_part() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let big = vec![b'x'; 1 << 20];
        let writer = tokio::spawn(async move {
            let parts: (&[u8], &[u8], &[u8]) = (b"head|", &big, b"|tail");
            server.write_last(parts.0.chain(parts.1).chain(parts.2)).await.unwrap();
            server.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut client, &mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got.len(), 5 + (1 << 20) + 5);
        assert!(got.starts_with(b"head|x") && got.ends_with(b"x|tail"));
    }
}
