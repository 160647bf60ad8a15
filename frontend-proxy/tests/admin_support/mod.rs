//! Harness for the admin-interface tests: hyper backends, the real proxy
//! binary with a temporary bootstrap, admin HTTP calls, a reader for the
//! Prometheus text format, and `promtool`. Addresses are 127.0.4.x only.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How long any single wait in these tests may take.
pub const LIMIT: Duration = Duration::from_secs(15);

/// `127.0.4.<host>`, the loopback block these tests own.
pub fn addr(host: u8) -> SocketAddr {
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 4, host));
    let probe = StdListener::bind(SocketAddr::new(ip, 0)).expect("bind probe port");
    probe.local_addr().expect("probe address")
}

/// A hyper upstream: `/status/<code>` answers that code, `/hang` never
/// answers, anything else 200.
/// Keeps connections alive until [`Backend::close_connections`].
pub struct Backend {
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Backend {
    pub async fn start(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind backend");
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let conns = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service_fn(answer))
                        .await;
                });
                conns.lock().expect("connections lock").push(conn);
            }
        });
        Self { addr, accept, connections }
    }

    /// Drops every open connection (the proxy's pooled ones included).
    pub fn close_connections(&self) {
        for c in self.connections.lock().expect("connections lock").drain(..) {
            c.abort();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.accept.abort();
        self.close_connections();
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/hang" {
        // Longer than any test: the proxy's route timeout answers first.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let status = req.uri().path().strip_prefix("/status/").and_then(|c| c.parse::<u16>().ok()).unwrap_or(200);
    let mut resp = Response::new(Full::new(Bytes::from_static(b"backend\n")));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    Ok(resp)
}

/// The real `frontend-proxy` binary; killed when dropped.
pub struct Proxy {
    child: Child,
    pub admin: SocketAddr,
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
}

impl Proxy {
    /// Writes `config` and starts the proxy; returns once the admin
    /// interface answers at all (whatever its state).
    pub async fn spawn(config: &str, admin: SocketAddr) -> Self {
        Self::spawn_with_workers(config, admin, 1).await
    }

    /// [`Proxy::spawn`] with `workers` worker threads.
    pub async fn spawn_with_workers(config: &str, admin: SocketAddr, workers: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("envoy.yaml");
        std::fs::write(&path, config).expect("write config");
        let log = dir.path().join("proxy.log");
        let child = Command::new(env!("CARGO_BIN_EXE_frontend-proxy"))
            .arg("-c")
            .arg(&path)
            .args(["--concurrency", &workers.to_string(), "--log-level", "info", "--drain-time-s", "5"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn frontend-proxy");
        let mut proxy = Self { child, admin, _dir: dir, log };
        let start = Instant::now();
        while tokio::net::TcpStream::connect(admin).await.is_err() {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!("frontend-proxy exited early ({status}):\n{}", proxy.log());
            }
            assert!(start.elapsed() < LIMIT, "admin did not listen on {admin}:\n{}", proxy.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        proxy
    }

    /// Starts the proxy and waits until `/ready` says LIVE.
    pub async fn start(config: &str, admin: SocketAddr) -> Self {
        let proxy = Self::spawn(config, admin).await;
        let start = Instant::now();
        while proxy.get("/ready").await.0 != 200 {
            assert!(start.elapsed() < LIMIT, "proxy never became LIVE:\n{}", proxy.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        proxy
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub async fn get(&self, path_and_query: &str) -> (u16, String) {
        send(client().get(format!("http://{}{path_and_query}", self.admin))).await
    }

    pub async fn post(&self, path: &str) -> (u16, String) {
        send(client().post(format!("http://{}{path}", self.admin))).await
    }

    /// Waits for the process to exit; `None` if it is still running at the limit.
    pub async fn wait_exit(&mut self) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < LIMIT {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().expect("client")
}

pub async fn send(req: reqwest::RequestBuilder) -> (u16, String) {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

/// `name{labels}` → value, from the Prometheus text format.
pub struct Exposition {
    pub text: String,
    samples: HashMap<String, f64>,
}

impl Exposition {
    pub fn parse(text: String) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_string(), value.parse().ok()?))
            })
            .collect();
        Self { text, samples }
    }

    /// The value of one series, spelled exactly as exposed.
    pub fn value(&self, series: &str) -> f64 {
        match self.samples.get(series) {
            Some(v) => *v,
            None => panic!("no series {series} in\n{}", self.text),
        }
    }

    /// Every `(series, value)` of a metric name.
    pub fn family(&self, name: &str) -> Vec<(&str, f64)> {
        self.samples.iter().filter(|(s, _)| s.split('{').next() == Some(name)).map(|(s, v)| (s.as_str(), *v)).collect()
    }

    pub fn has_line(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }
}

/// Lint rules Envoy's own names break (`envoy_cluster_upstream_rq` is a
/// counter without `_total`; `envoy_cluster_membership_total` is a gauge
/// with it). Renaming would break every dashboard written for Envoy.
/// Runs `promtool check metrics` and requires a clean result: no parse
/// error and no lint.
pub fn promtool_check(exposition: &str) {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("promtool not found: install the Debian package `prometheus` (apt-get install prometheus)")
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child.stdin.take().expect("promtool stdin").write_all(exposition.as_bytes()).expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "promtool check metrics failed:\n{report}");
}

/// Bootstrap pieces.
pub mod yaml {
    use std::net::SocketAddr;

    pub fn admin(addr: SocketAddr) -> String {
        format!("admin:\n  address:\n    socket_address: {{ address: {}, port_value: {} }}\n", addr.ip(), addr.port())
    }

    /// A plain listener routing each `(prefix, route action)` in order,
    /// e.g. `("/", "cluster: films, timeout: 1s")`.
    pub fn listener(addr: SocketAddr, stat_prefix: &str, routes: &[(&str, &str)]) -> String {
        let routes: String = routes
            .iter()
            .map(|(prefix, action)| {
                format!("\n              - match: {{ prefix: \"{prefix}\" }}\n                route: {{ {action} }}")
            })
            .collect();
        format!(
            r#"
  - name: {stat_prefix}_listener
    address:
      socket_address: {{ address: {ip}, port_value: {port} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {stat_prefix}
          route_config:
            name: local_route
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:{routes}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"#,
            ip = addr.ip(),
            port = addr.port()
        )
    }

    /// A STATIC cluster (or any `kind` with `extra` YAML at cluster level).
    pub fn cluster(name: &str, kind: &str, endpoints: &[(String, u16)], extra: &str) -> String {
        let endpoints: String = endpoints
            .iter()
            .map(|(host, port)| {
                format!("\n        - endpoint: {{ address: {{ socket_address: {{ address: \"{host}\", port_value: {port} }} }} }}")
            })
            .collect();
        let assignment = if endpoints.is_empty() {
            String::new()
        } else {
            format!("\n    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:{endpoints}")
        };
        format!("\n  - name: {name}\n    connect_timeout: 0.25s\n    type: {kind}{assignment}\n{extra}")
    }

    /// `listener` with a TLS transport socket whose certificate and key are inline PEM.
    pub fn with_inline_tls(listener: &str, cert_pem: &str, key_pem: &str) -> String {
        let block = |pem: &str| pem.lines().map(|l| format!("\n                  {l}")).collect::<String>();
        let tls = format!(
            r#"    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain:
                inline_string: |{cert}
              private_key:
                inline_string: |{key}
      filters:"#,
            cert = block(cert_pem),
            key = block(key_pem)
        );
        listener.replace("    - filters:", &tls)
    }

    pub fn bootstrap(admin: SocketAddr, listeners: &[String], clusters: &[String]) -> String {
        format!(
            "{}static_resources:\n  listeners:{}\n  clusters:{}\n",
            self::admin(admin),
            listeners.concat(),
            clusters.concat()
        )
    }
}
