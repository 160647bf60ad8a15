//! Real HTTP upstreams on hyper: each answers with its name (body and
//! `x-served-by`), counts requests, and can be told to misbehave. Paths
//! ask for a behaviour too: `/status/<code>` answers that code,
//! `/delay/<ms>` waits first, `/hang` never answers, `/echo` returns the
//! request body.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Normal,
    /// Every response has this status.
    Status(u16),
    /// Accepts requests and never answers.
    Hang,
}

struct Shared {
    name: String,
    hits: AtomicUsize,
    behaviour: Mutex<Behaviour>,
    last_headers: Mutex<Vec<(String, String)>>,
    last_uri: Mutex<String>,
    conns: Mutex<Vec<JoinHandle<()>>>,
}

pub struct Backend {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &str, addr: SocketAddr) -> Self {
        Self::try_start(name, addr).await.expect("bind backend")
    }

    /// Backends `(name, ip)`, all on one port (what a DNS name resolving to
    /// them needs). A port probed free on the first address may be taken on
    /// another (another test process probes there too): then the whole set
    /// moves to another port.
    pub async fn start_on_one_port(named: &[(&str, IpAddr)]) -> Vec<Self> {
        let ips: Vec<IpAddr> = named.iter().map(|(_, ip)| *ip).collect();
        'port: for _ in 0..20 {
            let port = super::free_port(ips[0]);
            let mut backends = Vec::new();
            for (name, ip) in named {
                match Self::try_start(name, SocketAddr::new(*ip, port)).await {
                    Ok(b) => backends.push(b),
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue 'port,
                    Err(e) => panic!("bind backend on {ip}:{port}: {e}"),
                }
            }
            return backends;
        }
        panic!("no port free on all of {ips:?}");
    }

    async fn try_start(name: &str, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr().expect("backend addr");
        let listener = Arc::new(listener);
        Ok(Self::serve(name, addr, move || {
            let l = listener.clone();
            async move { l.accept().await.map(|(s, _)| s) }
        }))
    }

    /// A backend on a Unix domain socket: `path` a file, or `@name` for an
    /// abstract one (Envoy's spelling). Its `addr` is `0.0.0.0:0`.
    pub fn start_pipe(name: &str, path: &str) -> Self {
        use std::os::linux::net::SocketAddrExt;
        let std = match path.strip_prefix('@') {
            Some(abs) => {
                let a = std::os::unix::net::SocketAddr::from_abstract_name(abs.as_bytes()).unwrap();
                std::os::unix::net::UnixListener::bind_addr(&a)
            }
            None => std::os::unix::net::UnixListener::bind(path),
        }
        .unwrap_or_else(|e| panic!("bind pipe backend {path}: {e}"));
        std.set_nonblocking(true).unwrap();
        let listener = Arc::new(tokio::net::UnixListener::from_std(std).unwrap());
        Self::serve(name, SocketAddr::from(([0, 0, 0, 0], 0)), move || {
            let l = listener.clone();
            async move { l.accept().await.map(|(s, _)| s) }
        })
    }

    fn serve<F, Fut, S>(name: &str, addr: SocketAddr, mut accept: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = std::io::Result<S>> + Send,
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared {
            name: name.to_string(),
            hits: AtomicUsize::new(0),
            behaviour: Mutex::new(Behaviour::Normal),
            last_headers: Mutex::new(Vec::new()),
            last_uri: Mutex::new(String::new()),
            conns: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok(stream) = accept().await else {
                    continue;
                };
                let conn_shared = s.clone();
                let conn = tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(conn_shared.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
                let mut conns = s.conns.lock().unwrap();
                conns.retain(|c| !c.is_finished());
                conns.push(conn);
            }
        });
        Self { addr, shared, task }
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    pub fn set(&self, b: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = b;
    }

    pub fn last_header(&self, name: &str) -> Option<String> {
        self.shared.last_headers.lock().unwrap().iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    /// Every value of `name` in the last request, in order.
    pub fn last_header_values(&self, name: &str) -> Vec<String> {
        self.shared.last_headers.lock().unwrap().iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }

    pub fn last_uri(&self) -> String {
        self.shared.last_uri.lock().unwrap().clone()
    }

    /// Drops every open connection (the proxy's pooled ones included) and
    /// goes on accepting new ones.
    pub fn close_connections(&self) {
        for c in self.shared.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Like a killed process: stops accepting and drops every open
    /// connection, so the port refuses and pooled connections break.
    pub fn stop(&self) {
        self.task.abort();
        self.close_connections();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn handle(s: Arc<Shared>, mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    s.hits.fetch_add(1, Ordering::SeqCst);
    *s.last_uri.lock().unwrap() = req.uri().to_string();
    *s.last_headers.lock().unwrap() =
        req.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect();
    let behaviour = *s.behaviour.lock().unwrap();
    let path = req.uri().path().to_string();
    // `x-echo-<name>: <value>` asks for `<name>: <value>` on the response, so a
    // test can see what the proxy does with an upstream's own fields.
    let echoed: Vec<(String, http::HeaderValue)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().strip_prefix("x-echo-")?.to_string(), v.clone())))
        .collect();

    if req.headers().get("upgrade").is_some() {
        // Minimal upgrade: switch protocols and echo whatever comes.
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on_upgrade.await {
                let mut io = TokioIo::new(up);
                let (mut r, mut w) = tokio::io::split(&mut io);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();

    let delay = path.find("/delay/").and_then(|i| path[i + 7..].split('/').next()?.parse::<u64>().ok());
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = match behaviour {
        _ if path == "/hang" => {
            // Longer than any test: the proxy's route timeout answers first.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            200
        }
        Behaviour::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            200
        }
        Behaviour::Status(code) => code,
        Behaviour::Normal => path.strip_prefix("/status/").and_then(|c| c.parse().ok()).unwrap_or(200),
    };
    let text = if path.starts_with("/echo") { String::from_utf8_lossy(&body).into_owned() } else { s.name.clone() };
    let mut resp = Response::builder().status(status).header("x-served-by", s.name.as_str());
    for (name, value) in echoed {
        resp = resp.header(name, value);
    }
    Ok(resp.header("content-type", "text/plain").body(Full::new(Bytes::from(text))).unwrap())
}
