//! TLS records read whole. BoringSSL reads a record as two reads of
//! exactly what it needs — the 5-byte header, then the body — and, unlike
//! OpenSSL, has no read-ahead of its own (`SSL_CTX_set_read_ahead` is a
//! no-op), so on a bare socket every record costs two `recvfrom(2)`. Under
//! the TLS stream of each downstream connection, [`ReadAhead`] answers a
//! short read with one socket read of up to a whole record and hands the
//! rest out from memory. The buffer exists only while it holds bytes: an
//! idle connection keeps none (memory per idle connection is what issue 26
//! counts).

use super::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, L4Stream, Peek, ProxyDigest, Shutdown, SocketDigest, Ssl,
    TimingDigest, TlsRef, UniqueID, UniqueIDType, ALPN,
};
use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest TLS record BoringSSL accepts: a 5-byte header and 2^14
/// bytes of plaintext plus 320 of expansion (TLS 1.2 CBC; TLS 1.3 allows
/// 256) — its `SSL3_RT_MAX_PACKET_SIZE`.
const RECORD_MAX: usize = 5 + (1 << 14) + 320;

/// A downstream socket read a record at a time (see the module comment).
pub struct ReadAhead {
    inner: L4Stream,
    /// Read from the socket, not yet handed out; empty (and unallocated)
    /// between bursts.
    buf: BytesMut,
}

impl ReadAhead {
    pub fn new(inner: L4Stream) -> Self {
        Self { inner, buf: BytesMut::new() }
    }
}

impl std::fmt::Debug for ReadAhead {
    /// The buffered ciphertext's length, not its bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadAhead").field("inner", &self.inner).field("buffered", &self.buf.len()).finish()
    }
}

impl AsyncRead for ReadAhead {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.buf.is_empty() {
            // A caller with room for a whole record reads into its own.
            if out.remaining() >= RECORD_MAX {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            // Read on the stack; only what the caller has no room for is
            // kept, in a buffer of its size: a read that finds nothing
            // allocates nothing.
            let mut stack = [MaybeUninit::<u8>::uninit(); RECORD_MAX];
            let mut read = ReadBuf::uninit(&mut stack);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let read = read.filled();
            let n = read.len().min(out.remaining());
            out.put_slice(&read[..n]);
            if n < read.len() {
                this.buf = BytesMut::from(&read[n..]);
            }
            return Poll::Ready(Ok(()));
        }
        let n = this.buf.len().min(out.remaining());
        out.put_slice(&this.buf[..n]);
        this.buf.advance(n);
        if this.buf.is_empty() {
            this.buf = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

delegate_async_write!(ReadAhead);
delegate_stream_traits!(ReadAhead);

#[async_trait]
impl Peek for ReadAhead {
    /// Only before the handshake would anyone peek, when nothing is buffered.
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        if self.buf.is_empty() {
            self.inner.try_peek(buf).await
        } else {
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn short_reads_are_served_from_one_socket_read_and_nothing_is_kept_when_empty() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut stream = ReadAhead::new(L4Stream::from(server));
        let record: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        client.write_all(&record).await.unwrap();
        client.flush().await.unwrap();
        // What BoringSSL asks for: a header, then the body.
        let mut header = [0u8; 5];
        stream.read_exact(&mut header).await.unwrap();
        assert_eq!(header, record[..5]);
        assert_eq!(stream.buf.len(), record.len() - 5, "the rest of the record was read with the header");
        let mut body = vec![0u8; record.len() - 5];
        stream.read_exact(&mut body).await.unwrap();
        assert_eq!(body, record[5..]);
        assert!(stream.buf.is_empty() && stream.buf.capacity() == 0, "an empty buffer is freed");
        drop(client);
        let mut rest = Vec::new();
        assert_eq!(stream.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
