//! A hand-driven HTTP/2 client over a real socket: frames written and read
//! as bytes, so a test sees exactly what the proxy sent (a client library
//! would answer PINGs, or stop at a GOAWAY, on its own).

use super::LIMIT;
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// A hand-driven HTTP/2 client: what a test reads is what the proxy sent,
/// not what a client library made of it (h2's client, for one, stops
/// opening streams once it has any GOAWAY).
pub struct RawH2 {
    pub tcp: TcpStream,
}

/// One frame: its type, flags, stream and payload.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

pub const HEADERS: u8 = 0x1;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const END_STREAM: u8 = 0x1;

impl RawH2 {
    /// The preface and empty SETTINGS, the proxy's SETTINGS acknowledged.
    pub async fn connect(addr: SocketAddr) -> Self {
        use tokio::io::AsyncWriteExt;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
        let mut h2 = Self { tcp };
        loop {
            let f = h2.frame().await.expect("the proxy's SETTINGS");
            if f.kind == SETTINGS && f.flags & 1 == 0 {
                break;
            }
        }
        h2.write(SETTINGS, 1, 0, &[]).await;
        h2
    }

    pub async fn write(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        frame.extend([kind, flags]);
        frame.extend(stream.to_be_bytes());
        frame.extend(payload);
        // The proxy may have closed the connection already: what it does
        // with the stream is what the test reads next.
        let _ = self.tcp.write_all(&frame).await;
    }

    /// `GET http://a.test{path}` on `stream`, without a body. HPACK by
    /// hand: `:method GET`, `:scheme http` indexed; `:path` and
    /// `:authority` literal, not indexed.
    pub async fn get(&mut self, stream: u32, path: &str) {
        let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
        block.extend(path.as_bytes());
        block.extend([0x01, 6]);
        block.extend(b"a.test");
        self.write(HEADERS, END_STREAM | 0x4, stream, &block).await;
    }

    /// The next frame; `None` once the connection has ended.
    pub async fn frame(&mut self) -> Option<Frame> {
        use tokio::io::AsyncReadExt;
        let mut head = [0u8; 9];
        match tokio::time::timeout(LIMIT, self.tcp.read_exact(&mut head)).await.expect("a frame or the end") {
            Ok(_) => {}
            Err(_) => return None,
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        self.tcp.read_exact(&mut payload).await.ok()?;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        Some(Frame { kind: head[3], flags: head[4], stream, payload })
    }

    /// The frames up to the next of `kind` on `stream` (any stream for
    /// GOAWAY), which is returned; the proxy never PINGs here.
    pub async fn until(&mut self, kind: u8, stream: u32) -> Frame {
        loop {
            let f = self.frame().await.unwrap_or_else(|| panic!("the connection ended before frame type {kind}"));
            assert_ne!(f.kind, PING, "a PING from the proxy: {f:?}");
            if f.kind == kind && (kind == GOAWAY || f.stream == stream) {
                return f;
            }
        }
    }

    /// The response head on `stream` says 200 (`:status` indexed, 0x88).
    pub async fn ok(&mut self, stream: u32) {
        let head = self.until(HEADERS, stream).await;
        assert_eq!(head.payload.first(), Some(&0x88), "stream {stream} was not answered 200: {head:?}");
    }

    /// The next GOAWAY: its last stream identifier and error code.
    pub async fn goaway(&mut self) -> (u32, u32) {
        let f = self.until(GOAWAY, 0).await;
        let word = |i: usize| u32::from_be_bytes(f.payload[i..i + 4].try_into().unwrap());
        (word(0) & 0x7fff_ffff, word(4))
    }

    /// Reads to the end of the connection: no frame on `stream` before it.
    pub async fn ends_without(&mut self, stream: u32) {
        while let Some(f) = self.frame().await {
            assert!(f.stream != stream || f.kind == 0x3, "stream {stream} was served: {f:?}");
        }
    }
}
