//! HTTP/1.1 at the byte level over real sockets: a client that sends exact
//! bytes and reads responses with the strict reader of `strict.rs`, and a
//! scripted backend that logs the exact bytes each connection received and
//! answers with scripted bytes (stray bytes, delays and closes included).

use super::strict::{self, Asked, Framing, Verdict};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a client waits for a response unless told otherwise.
pub const RESPONSE_LIMIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------- client

/// A response as the client saw it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    pub trailers: Vec<(String, Vec<u8>)>,
    /// Statuses of the interim (1xx) responses before this one.
    pub interim: Vec<u16>,
    pub framing: Framing,
    /// The exact bytes, interim responses included.
    pub raw: Vec<u8>,
}

impl Response {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn from_message(m: strict::Message, raw: Vec<u8>) -> Self {
        let headers = m
            .head
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        Self {
            status: m.head.status,
            version: m.head.version,
            headers,
            body: m.body,
            trailers: m.trailers,
            interim: m.interim.iter().map(|h| h.status).collect(),
            framing: m.framing,
            raw,
        }
    }
}

/// Why no response could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The connection closed (or was reset) before any byte of a response.
    Closed,
    /// It closed after part of a response: the bytes that came.
    Truncated(Vec<u8>),
    /// What came is not one valid HTTP/1.1 response: why, and the bytes.
    Malformed(String, Vec<u8>),
    /// No complete response within the limit: the bytes that came.
    TimedOut(Vec<u8>),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |b: &[u8]| format!("{:?}", String::from_utf8_lossy(&b[..b.len().min(600)]));
        match self {
            ReadError::Closed => write!(f, "closed before a response"),
            ReadError::Truncated(b) => write!(f, "closed mid-response after {}", show(b)),
            ReadError::Malformed(why, b) => write!(f, "malformed response ({why}): {}", show(b)),
            ReadError::TimedOut(b) => write!(f, "no complete response in time, got {}", show(b)),
        }
    }
}

/// Reads what arrives next into `buf`, until `deadline`. `Some(true)`: bytes
/// came; `Some(false)`: the peer closed or reset; `None`: the deadline passed.
async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> Option<bool> {
    let mut chunk = [0u8; 64 * 1024];
    match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
        Err(_) => None,
        Ok(Ok(0)) | Ok(Err(_)) => Some(false),
        Ok(Ok(n)) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(true)
        }
    }
}

/// Reads one response (and the interim ones before it) to a request that
/// asked `asked`, within `limit`, with the strict reader; its bytes leave
/// `buf`, bytes after it stay. `closed` is set when the peer closed.
pub async fn try_read_response(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    closed: &mut bool,
    asked: Asked,
    limit: Duration,
) -> Result<Response, ReadError> {
    let deadline = Instant::now() + limit;
    loop {
        match strict::client_response(buf, asked, *closed) {
            Ok(m) => {
                let end = m.end.unwrap_or(buf.len());
                let raw: Vec<u8> = buf.drain(..end).collect();
                return Ok(Response::from_message(m, raw));
            }
            Err(Verdict::Invalid(why)) => return Err(ReadError::Malformed(why, buf.clone())),
            Err(Verdict::Partial) if *closed => {
                return Err(if buf.is_empty() { ReadError::Closed } else { ReadError::Truncated(buf.clone()) })
            }
            Err(Verdict::Partial) => match fill(s, buf, deadline).await {
                Some(true) => {}
                Some(false) => *closed = true,
                None => return Err(ReadError::TimedOut(buf.clone())),
            },
        }
    }
}

/// What a request asks that changes how its response is read.
pub fn asked(method: &str) -> Asked {
    Asked { head: method.eq_ignore_ascii_case("HEAD"), upgrade: false }
}

/// Reads one response to a `method` request; panics if there is none.
pub async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>, method: &str) -> Response {
    let mut closed = false;
    match try_read_response(s, buf, &mut closed, asked(method), RESPONSE_LIMIT).await {
        Ok(r) => r,
        Err(e) => panic!("no response: {e}"),
    }
}

/// Reads one response and returns its exact bytes as text; panics if there is none.
pub async fn read_response_text(s: &mut TcpStream) -> String {
    String::from_utf8_lossy(&read_response(s, &mut Vec::new(), "GET").await.raw).into_owned()
}

/// Whether the peer closes the connection within `limit`; bytes that arrive
/// meanwhile are skipped.
pub async fn closes_within(s: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut sink = Vec::new();
    loop {
        match fill(s, &mut sink, deadline).await {
            Some(true) => sink.clear(),
            Some(false) => return true,
            None => return false,
        }
    }
}

/// Whether the next thing to happen within `limit` is the peer closing:
/// `false` if a byte arrives first, or nothing happens.
pub async fn eof_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut b = [0u8; 1];
    matches!(tokio::time::timeout(limit, s.read(&mut b)).await, Ok(Ok(0)) | Ok(Err(_)))
}

/// A reply read within 10 s, and whether the proxy then closed the connection.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub closed: bool,
}

/// Reads one reply, then waits up to a second for the connection to close.
pub async fn read_reply(s: &mut TcpStream) -> Reply {
    let (mut buf, mut closed) = (Vec::new(), false);
    let r = match try_read_response(s, &mut buf, &mut closed, Asked::default(), Duration::from_secs(10)).await {
        Ok(r) => r,
        Err(e) => panic!("no response head: {e}"),
    };
    let closed = closed || closes_within(s, Duration::from_secs(1)).await;
    Reply { status: r.status, body: r.text(), closed }
}

/// A client connection that sends exact bytes and reads with the strict reader.
pub struct RawClient {
    pub stream: TcpStream,
    /// Bytes read and not yet taken by a response.
    pub buf: Vec<u8>,
    /// The proxy closed (or reset) the connection.
    pub closed: bool,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Self { stream, buf: Vec::new(), closed: false }
    }

    /// Sends `bytes`; `false` if the connection refused them.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// One response to a request that asked `asked`, within [`RESPONSE_LIMIT`].
    pub async fn response(&mut self, asked: Asked) -> Result<Response, ReadError> {
        self.response_within(asked, RESPONSE_LIMIT).await
    }

    pub async fn response_within(&mut self, asked: Asked, limit: Duration) -> Result<Response, ReadError> {
        try_read_response(&mut self.stream, &mut self.buf, &mut self.closed, asked, limit).await
    }

    /// Whatever else arrives within `window` (and was read already): bytes
    /// a second, smuggled response would be made of. Notes a close.
    pub async fn rest(&mut self, window: Duration) -> Vec<u8> {
        let deadline = Instant::now() + window;
        while !self.closed {
            match fill(&mut self.stream, &mut self.buf, deadline).await {
                Some(true) => {}
                Some(false) => self.closed = true,
                None => break,
            }
        }
        std::mem::take(&mut self.buf)
    }

    /// Whether the connection is closed within `limit` (bytes skipped).
    pub async fn closes_within(&mut self, limit: Duration) -> bool {
        if !self.closed {
            self.buf.clear();
            self.closed = closes_within(&mut self.stream, limit).await;
        }
        self.closed
    }
}

// ---------------------------------------------------------------- backend

/// A request as the scripted backend read it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Which accepted connection (0, 1, ...) it came on, and its place there.
    pub conn: usize,
    pub index: usize,
    pub method: String,
    pub path: String,
    pub version: u8,
    /// Names lowercased, values as text.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    pub trailers: Vec<(String, Vec<u8>)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }
}

/// One step of a scripted answer.
#[derive(Debug, Clone)]
pub enum Step {
    Send(Vec<u8>),
    Sleep(Duration),
    /// Writes these bytes over and over until the peer stops taking them.
    Flood(Vec<u8>),
    /// Closes the connection (what follows is not run).
    Close,
}

/// What the backend does for one request.
#[derive(Debug, Clone, Default)]
pub struct Answer(pub Vec<Step>);

impl Answer {
    pub fn send(bytes: impl Into<Vec<u8>>) -> Self {
        Self(vec![Step::Send(bytes.into())])
    }

    /// Never answers (for an hour).
    pub fn hang() -> Self {
        Self(vec![Step::Sleep(Duration::from_secs(3600))])
    }

    pub fn then_send(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.0.push(Step::Send(bytes.into()));
        self
    }

    pub fn then_sleep(mut self, d: Duration) -> Self {
        self.0.push(Step::Sleep(d));
        self
    }

    pub fn then_flood(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.0.push(Step::Flood(bytes.into()));
        self
    }

    pub fn then_close(mut self) -> Self {
        self.0.push(Step::Close);
        self
    }
}

/// `(bytes, close after them)`.
impl From<(Vec<u8>, bool)> for Answer {
    fn from((bytes, close): (Vec<u8>, bool)) -> Self {
        let a = Answer::send(bytes);
        if close {
            a.then_close()
        } else {
            a
        }
    }
}

/// What one accepted connection received and how it went.
#[derive(Debug, Clone, Default)]
pub struct ConnLog {
    /// Every byte received, in order.
    pub bytes: Vec<u8>,
    pub requests: Vec<Seen>,
    /// The proxy closed it (EOF or reset).
    pub closed_by_peer: bool,
    /// Bytes the backend could not read as a request: why (it stops answering).
    pub unreadable: Option<String>,
}

type Script = dyn Fn(&Seen) -> Answer + Send + Sync;

struct Shared {
    accepted: AtomicUsize,
    conns: Mutex<Vec<ConnLog>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// An upstream speaking HTTP/1.1 at the byte level: each request read is
/// answered by the script; every byte received is logged per connection.
pub struct ScriptedBackend {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl ScriptedBackend {
    /// Listens on a port of `ip` the kernel picks at bind time (probing for
    /// a free port and binding it later can lose the port to another socket).
    pub async fn start<F, A>(ip: IpAddr, script: F) -> Self
    where
        F: Fn(&Seen) -> A + Send + Sync + 'static,
        A: Into<Answer>,
    {
        let script: Arc<Script> = Arc::new(move |seen: &Seen| script(seen).into());
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await.expect("bind scripted backend");
        let addr = listener.local_addr().expect("scripted backend address");
        let shared = Arc::new(Shared {
            accepted: AtomicUsize::new(0),
            conns: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = {
                    let mut conns = s.conns.lock().unwrap();
                    conns.push(ConnLog::default());
                    conns.len() - 1
                };
                s.accepted.fetch_add(1, SeqCst);
                let task = tokio::spawn(serve(stream, conn, s.clone(), script.clone()));
                let mut tasks = s.tasks.lock().unwrap();
                tasks.retain(|t| !t.is_finished());
                tasks.push(task);
            }
        });
        Self { addr, shared, accept }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(SeqCst)
    }

    /// What each connection received so far.
    pub fn log(&self) -> Vec<ConnLog> {
        self.shared.conns.lock().unwrap().clone()
    }

    /// Every request read so far, connection by connection.
    pub fn requests(&self) -> Vec<Seen> {
        self.log().into_iter().flat_map(|c| c.requests).collect()
    }

    /// Every byte received so far, all connections one after the other.
    pub fn received(&self) -> Vec<u8> {
        self.log().into_iter().flat_map(|c| c.bytes).collect()
    }

    /// Like a killed process: stops accepting and drops every connection.
    pub fn stop(&self) {
        self.accept.abort();
        for t in self.shared.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Drop for ScriptedBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads more from `s` into `buf` and the connection's log; `false` at the end.
async fn receive(s: &mut TcpStream, buf: &mut Vec<u8>, conn: usize, shared: &Shared) -> bool {
    let mut chunk = [0u8; 64 * 1024];
    let n = match s.read(&mut chunk).await {
        Ok(0) | Err(_) => 0,
        Ok(n) => n,
    };
    let mut conns = shared.conns.lock().unwrap();
    if n == 0 {
        conns[conn].closed_by_peer = true;
        return false;
    }
    conns[conn].bytes.extend_from_slice(&chunk[..n]);
    buf.extend_from_slice(&chunk[..n]);
    true
}

async fn serve(mut s: TcpStream, conn: usize, shared: Arc<Shared>, script: Arc<Script>) {
    let mut buf = Vec::new();
    let mut index = 0;
    loop {
        let seen = match next_request(&buf) {
            Ok(Some((seen, used))) => {
                buf.drain(..used);
                Seen { conn, index, ..seen }
            }
            Ok(None) => {
                if !receive(&mut s, &mut buf, conn, &shared).await {
                    return;
                }
                continue;
            }
            Err(why) => {
                shared.conns.lock().unwrap()[conn].unreadable = Some(why);
                // Keep logging what comes until the proxy closes.
                while receive(&mut s, &mut buf, conn, &shared).await {}
                return;
            }
        };
        index += 1;
        let answer = script(&seen);
        shared.conns.lock().unwrap()[conn].requests.push(seen);
        for step in answer.0 {
            match step {
                Step::Send(bytes) => {
                    if s.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Step::Sleep(d) => tokio::time::sleep(d).await,
                Step::Flood(bytes) => while s.write_all(&bytes).await.is_ok() {},
                Step::Close => {
                    let _ = s.shutdown().await;
                    // Log what the proxy still sends (it should send nothing).
                    while receive(&mut s, &mut buf, conn, &shared).await {}
                    return;
                }
            }
        }
    }
}

/// A complete request at the start of `buf` and its length; `Ok(None)` if
/// more bytes are needed; `Err` if it cannot be read.
fn next_request(buf: &[u8]) -> Result<Option<(Seen, usize)>, String> {
    let mut slots = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut slots);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("request head: {e}")),
    };
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
        .collect();
    let mut seen = Seen {
        conn: 0,
        index: 0,
        method: req.method.unwrap_or("").to_string(),
        path: req.path.unwrap_or("").to_string(),
        version: req.version.unwrap_or(1),
        headers,
        body: Vec::new(),
        trailers: Vec::new(),
    };
    let chunked = seen
        .headers_named("transfer-encoding")
        .last()
        .is_some_and(|v| strict::list(v.as_bytes()).last().is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")));
    if chunked {
        return match strict::chunked(&buf[head_len..]) {
            Ok(c) => {
                seen.body = c.body;
                seen.trailers = c.trailers;
                Ok(Some((seen, head_len + c.len)))
            }
            Err(Verdict::Partial) => Ok(None),
            Err(Verdict::Invalid(why)) => Err(format!("chunked request body: {why}")),
        };
    }
    let len = match seen.header("content-length") {
        None => 0,
        Some(v) => v.trim().parse::<usize>().map_err(|_| format!("request content-length {v:?}"))?,
    };
    if buf.len() < head_len + len {
        return Ok(None);
    }
    seen.body = buf[head_len..head_len + len].to_vec();
    Ok(Some((seen, head_len + len)))
}

/// `HTTP/1.1 200 OK` with a `Content-Length` body.
pub fn ok(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}
