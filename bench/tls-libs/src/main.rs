//! A tiny HTTP/1.1 server over TLS, the same for every TLS stack it is
//! built with (one Cargo feature each, `stack.rs`): it answers every
//! request with a fixed 50-byte body and keeps the connection open unless
//! the request says `Connection: close`. What differs between the builds
//! is the TLS layer alone, so instructions and memory measured around it
//! (`compare.py`) are the stack's.
//!
//! `tls-server PORT CERT_PEM KEY_PEM`; `TLS_TICKETS=stateful` turns the
//! stateless session tickets off (resumption from a session cache only).

mod stack;

use mimalloc::MiMalloc;
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

// The proxy's global allocator: glibc malloc keeps a different amount
// per connection, and the comparison is about the proxy's process.
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// bench.py's backend body: 50 bytes.
const BODY: &[u8] = b"frontend-proxy bench backend: 50 bytes of body...\n";
/// ~150 bytes with the body, as a small proxied response.
const RESPONSE_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: tls-libs\r\nContent-Type: text/plain\r\nContent-Length: 50\r\n\r\n";
/// The largest request head read; larger ones close the connection.
const HEAD_MAX: usize = 1024;

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, port, cert, key] = args.as_slice() else {
        eprintln!("usage: tls-server PORT CERT_PEM KEY_PEM");
        std::process::exit(2);
    };
    let port: u16 = port.parse().map_err(|_| io::Error::other("PORT: not a number"))?;
    let stateless = std::env::var("TLS_TICKETS").map_or(true, |v| v != "stateful");
    let acceptor = Arc::new(stack::Acceptor::new(cert, key, stateless)?);
    // One thread, as one proxy worker; callgrind serialises threads anyway.
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        println!("{} listening on {port}", stack::NAME);
        loop {
            let (tcp, _) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A failed handshake or read just ends the connection.
                if let Ok(stream) = acceptor.accept(tcp).await {
                    let _ = serve(stream).await;
                }
            });
        }
    })
}

/// Keep-alive HTTP/1.1: read a head, answer it, until the client closes
/// or asks to. Request bodies are not expected (GETs only).
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> io::Result<()> {
    let mut buf = vec![0u8; HEAD_MAX];
    let mut filled = 0;
    loop {
        let end = loop {
            if let Some(at) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if filled == buf.len() {
                return Err(io::Error::other("request head too large"));
            }
            let n = s.read(&mut buf[filled..]).await?;
            if n == 0 {
                return Ok(());
            }
            filled += n;
        };
        let close = wants_close(&buf[..end]);
        let mut out = Vec::with_capacity(RESPONSE_HEAD.len() + BODY.len());
        out.extend_from_slice(RESPONSE_HEAD);
        out.extend_from_slice(BODY);
        s.write_all(&out).await?;
        s.flush().await?;
        if close {
            return s.shutdown().await;
        }
        buf.copy_within(end..filled, 0);
        filled -= end;
    }
}

/// Whether the head has `Connection: close` (any case).
fn wants_close(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n').any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line.len() > 11
            && line[..11].eq_ignore_ascii_case(b"connection:")
            && line[11..].trim_ascii().eq_ignore_ascii_case(b"close")
    })
}
