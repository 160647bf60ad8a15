//! `prototype-h1-loop LISTEN UPSTREAM`: an HTTP/1.1 keep-alive proxy loop on
//! Pingora's `ServerApp`, for measuring only (bench/WHAT-WAS-DONE.md).
//!
//! It answers one question for issue #7: what does a request cost on a Pingora
//! server when `pingora_proxy::HttpProxy` is not in the path? It parses with
//! `httparse` into per-connection buffers, keeps upstream connections in a
//! per-thread `Vec`, adds the headers Envoy adds by default and forwards
//! `Content-Length` bodies. It has no routing, stats, timeouts, retries,
//! chunked framing or error replies: it is not a proxy anyone should run.
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::listening::Service;
use std::cell::{Cell, RefCell};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static A: mimalloc::MiMalloc = mimalloc::MiMalloc;

thread_local! {
    static POOL: RefCell<Vec<TcpStream>> = const { RefCell::new(Vec::new()) };
    static RNG: Cell<u64> = const { Cell::new(0x9E3779B97F4A7C15) };
}

fn rand64() -> u64 {
    RNG.with(|r| {
        let mut x = r.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        r.set(x);
        x
    })
}

struct Lean {
    upstream: std::net::SocketAddr,
}

const HOP: [&str; 6] = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"];

/// Appends `headers` to `out` in wire format, except hop-by-hop ones and those named in `also_drop`.
fn copy_headers(out: &mut Vec<u8>, headers: &[httparse::Header], also_drop: &[&str]) {
    let dropped = |name: &str| HOP.iter().chain(also_drop).any(|n| name.eq_ignore_ascii_case(n));
    for h in headers.iter().filter(|h| !dropped(h.name)) {
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
}

/// The head's length once `read_head` has seen its end; `None` on a parse error.
fn complete(parsed: httparse::Result<usize>) -> Option<usize> {
    match parsed.ok()? {
        httparse::Status::Complete(n) => Some(n),
        httparse::Status::Partial => None,
    }
}

fn content_length(headers: &[httparse::Header]) -> usize {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

async fn read_head(s: &mut (impl AsyncReadExt + Unpin), buf: &mut Vec<u8>) -> Option<()> {
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(());
        }
        let len = buf.len();
        buf.reserve(4096);
        let n = s.read_buf(buf).await.ok()?;
        if n == 0 || len > 65536 {
            return None;
        }
    }
}

impl Lean {
    async fn upstream(&self) -> Option<TcpStream> {
        if let Some(s) = POOL.with(|p| p.borrow_mut().pop()) {
            return Some(s);
        }
        let s = TcpStream::connect(self.upstream).await.ok()?;
        s.set_nodelay(true).ok()?;
        Some(s)
    }

    async fn one(&self, down: &mut Stream, dbuf: &mut Vec<u8>, out: &mut Vec<u8>, ubuf: &mut Vec<u8>) -> Option<()> {
        read_head(down, dbuf).await?;
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut hs);
        let head_len = complete(req.parse(dbuf))?;
        let body_len = content_length(req.headers);
        let close = req
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close"));
        out.clear();
        write!(out, "{} {} HTTP/1.1\r\n", req.method?, req.path?).ok()?;
        copy_headers(out, req.headers, &[]);
        let (a, b) = (rand64(), rand64());
        write!(out, "x-forwarded-proto: http\r\nx-request-id: {:08x}-{:04x}-4{:03x}-{:04x}-{:012x}\r\nx-envoy-expected-rq-timeout-ms: 15000\r\n\r\n",
            a >> 32, (a >> 16) & 0xffff, a & 0xfff, b >> 48, b & 0xffff_ffff_ffff).ok()?;
        // Request body (already buffered part; the prototype only does small bodies).
        let end = head_len + body_len.min(dbuf.len() - head_len);
        out.extend_from_slice(&dbuf[head_len..end]);
        dbuf.drain(..end);

        let start = Instant::now();
        let mut up = self.upstream().await?;
        up.write_all(out).await.ok()?;
        ubuf.clear();
        read_head(&mut up, ubuf).await?;
        let mut rh = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut rh);
        let rhead = complete(resp.parse(ubuf))?;
        let rlen = content_length(resp.headers);
        out.clear();
        write!(out, "HTTP/1.1 {} {}\r\n", resp.code?, resp.reason.unwrap_or("")).ok()?;
        // The proxy sets its own `server` header, as Envoy does by default.
        copy_headers(out, resp.headers, &["server"]);
        write!(out, "server: envoy\r\nx-envoy-upstream-service-time: {}\r\n\r\n", start.elapsed().as_millis()).ok()?;
        let have = (ubuf.len() - rhead).min(rlen);
        out.extend_from_slice(&ubuf[rhead..rhead + have]);
        let mut left = rlen - have;
        down.write_all(out).await.ok()?;
        while left > 0 {
            ubuf.clear();
            ubuf.reserve(65536.min(left));
            let n = up.read_buf(ubuf).await.ok()?;
            if n == 0 {
                return None;
            }
            let n = n.min(left);
            down.write_all(&ubuf[..n]).await.ok()?;
            left -= n;
        }
        down.flush().await.ok()?;
        POOL.with(|p| p.borrow_mut().push(up));
        if close {
            return None;
        }
        Some(())
    }
}

#[async_trait]
impl ServerApp for Lean {
    async fn process_new(self: &Arc<Self>, mut down: Stream, _shutdown: &ShutdownWatch) -> Option<Stream> {
        let (mut dbuf, mut out, mut ubuf) =
            (Vec::with_capacity(4096), Vec::with_capacity(4096), Vec::with_capacity(4096));
        while self.one(&mut down, &mut dbuf, &mut out, &mut ubuf).await.is_some() {}
        None
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let upstream = match (args.len(), args.get(2).map(|a| a.parse())) {
        (3, Some(Ok(addr))) => addr,
        _ => {
            eprintln!("usage: prototype-h1-loop LISTEN_ADDR UPSTREAM_IP:PORT");
            std::process::exit(2);
        }
    };
    let conf = ServerConf { threads: 1, ..Default::default() };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = Service::new("prototype-h1-loop".into(), Lean { upstream });
    svc.add_tcp(&args[1]);
    server.add_service(svc);
    server.run_forever();
}
