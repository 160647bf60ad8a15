//! Steady load on the proxy from the client host, and what it saw.
//!
//! Two kinds of client, both paced: keep-alive clients (one connection,
//! request after request, a new connection only when the proxy closes it)
//! and new-connection clients (a connection per request). A small HTTP/1.1
//! client of our own, not reqwest, so every outcome is told apart: a status,
//! a refused or timed-out connect, a connection closed before any byte of
//! the response (a keep-alive race a browser retries), a response cut short
//! (a half-written response), or no answer within the client's timeout.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longer than any timeout of the proxy's route, so the proxy's answer is seen.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Status(u16),
    Refused,
    ConnectTimeout,
    /// Closed before any byte of the response.
    Closed,
    /// Closed in the middle of the response.
    Truncated,
    Timeout,
    Other(String),
}

impl Outcome {
    pub fn label(&self) -> String {
        match self {
            Outcome::Status(s) => s.to_string(),
            Outcome::Refused => "refused".into(),
            Outcome::ConnectTimeout => "connect timeout".into(),
            Outcome::Closed => "closed before response".into(),
            Outcome::Truncated => "truncated".into(),
            Outcome::Timeout => "client timeout".into(),
            Outcome::Other(e) => e.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Sample {
    /// When the request started, since the load started.
    pub at: Duration,
    pub took: Duration,
    pub outcome: Outcome,
    /// `x-served-by` of a response.
    pub served_by: Option<String>,
}

impl Sample {
    pub fn ok(&self) -> bool {
        self.outcome == Outcome::Status(200)
    }
}

pub struct Load {
    pub t0: Instant,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `keep_alive` and `new_conn` clients against `target` on the
    /// current runtime (a lab host's), each pausing `pace` between requests.
    pub fn start(target: SocketAddr, keep_alive: usize, new_conn: usize, pace: Duration) -> Self {
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for w in 0..keep_alive + new_conn {
            let (stop, samples) = (stop.clone(), samples.clone());
            let reuse = w < keep_alive;
            tasks.push(tokio::spawn(async move {
                let mut conn: Option<TcpStream> = None;
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let start = Instant::now();
                    let path = format!("/chaos?w={w}&i={i}");
                    let (outcome, served_by) = request(target, &path, reuse, &mut conn).await;
                    let s = Sample { at: start - t0, took: start.elapsed(), outcome, served_by };
                    samples.lock().unwrap().push(s);
                    i += 1;
                    tokio::time::sleep(pace).await;
                }
            }));
        }
        Self { t0, stop, samples, tasks }
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    /// Time since the load started.
    pub fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        self.samples.lock().unwrap().clone()
    }
}

/// One request; on a kept connection when `reuse`.
async fn request(
    target: SocketAddr,
    path: &str,
    reuse: bool,
    conn: &mut Option<TcpStream>,
) -> (Outcome, Option<String>) {
    // As a client's connection pool does: a kept connection the proxy has
    // closed meanwhile (it answers EOF at once) is not used again.
    if let Some(stream) = conn.as_ref() {
        let mut probe = [0u8; 1];
        if !matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
            *conn = None;
        }
    }
    let fresh = conn.is_none() || !reuse;
    if fresh {
        match tokio::time::timeout(CLIENT_TIMEOUT, TcpStream::connect(target)).await {
            Err(_) => return (Outcome::ConnectTimeout, None),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return (Outcome::Refused, None),
            Ok(Err(e)) => return (Outcome::Other(format!("connect: {e}")), None),
            Ok(Ok(s)) => *conn = Some(s),
        }
    }
    let Some(stream) = conn.as_mut() else { return (Outcome::Other("no connection".into()), None) };
    let close = if reuse { "" } else { "connection: close\r\n" };
    let req = format!("GET {path} HTTP/1.1\r\nhost: app\r\n{close}\r\n");
    let result = tokio::time::timeout(CLIENT_TIMEOUT, exchange(stream, req.as_bytes())).await;
    let (outcome, served_by, keep) = match result {
        Err(_) => (Outcome::Timeout, None, false),
        Ok(r) => r,
    };
    if !keep || !reuse {
        *conn = None;
    }
    (outcome, served_by)
}

/// Writes the request and reads one response; whether the connection may be reused.
async fn exchange(stream: &mut TcpStream, req: &[u8]) -> (Outcome, Option<String>, bool) {
    if let Err(e) = stream.write_all(req).await {
        return (io_outcome(&e, false), None, false);
    }
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) => return (if buf.is_empty() { Outcome::Closed } else { Outcome::Truncated }, None, false),
            Ok(n) => n,
            Err(e) => return (io_outcome(&e, !buf.is_empty()), None, false),
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return (Outcome::Other(format!("bad response: {e}")), None, false),
        };
        let header = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        let status = resp.code.unwrap_or(0);
        let served_by = header("x-served-by");
        let keep = !header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let Some(length) = header("content-length").and_then(|v| v.trim().parse::<usize>().ok()) else {
            return (Outcome::Other(format!("{status} without content-length")), served_by, false);
        };
        // The body: all of it, or the response was cut short.
        while buf.len() < head_len + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return (Outcome::Truncated, served_by, false),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        return (Outcome::Status(status), served_by, keep);
    }
}

fn io_outcome(e: &std::io::Error, started: bool) -> Outcome {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionReset | BrokenPipe | ConnectionAborted if !started => Outcome::Closed,
        ConnectionReset | BrokenPipe | ConnectionAborted => Outcome::Truncated,
        _ => Outcome::Other(e.to_string()),
    }
}

/// Requests between two moments of the run, summed up.
#[derive(Debug, Default)]
pub struct Summary {
    pub sent: usize,
    pub ok: usize,
    /// Every outcome but 200, by label.
    pub failed: BTreeMap<String, usize>,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Summary {
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Self {
        let mut s = Summary::default();
        let mut took = Vec::new();
        for x in samples {
            s.sent += 1;
            if x.ok() {
                s.ok += 1;
            } else {
                *s.failed.entry(x.outcome.label()).or_default() += 1;
            }
            took.push(x.took);
        }
        took.sort();
        let pick = |q: f64| took.get(((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1))).copied();
        s.p50 = pick(0.5).unwrap_or_default();
        s.p99 = pick(0.99).unwrap_or_default();
        s.max = took.last().copied().unwrap_or_default();
        s
    }

    pub fn failures(&self) -> usize {
        self.sent - self.ok
    }

    /// `503: 2, refused: 40`, or `none`.
    pub fn failed_text(&self) -> String {
        if self.failed.is_empty() {
            return "none".into();
        }
        self.failed.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
    }
}
