//! Envoy's admin interface on `admin.address`: statistics (`/stats`,
//! `/stats/prometheus`), cluster and host status (`/clusters`), readiness
//! (`/ready`), server and configuration information, and the mutating
//! commands (`/healthcheck/fail|ok`, `/quitquitquit`, POST only).
//!
//! It runs as its own single-threaded Pingora service and only reads the
//! atomics the request path writes; nothing here is on the proxy's hot path.
//!
//! Layout: [`stats`] (the snapshot and `/stats`), [`prometheus`] (Envoy's
//! Prometheus names and exposition), [`clusters`], [`server_info`] (state,
//! version, memory), [`config_dump`], [`query`] (query strings).

mod clusters;
mod config_dump;
pub mod prometheus;
mod query;
mod server_info;
pub mod stats;

pub use server_info::ServerState;

use crate::cli::Cli;
use crate::drain::Drain;
use crate::metrics::SecretStats;
use crate::runtime::ListenerRuntime;
use crate::upstream::ClusterSet;
use async_trait::async_trait;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::{background_service, BackgroundService, GenBackgroundService};
use query::Query;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;
use tracing::{info, warn};

/// Request bodies of admin commands are read and dropped, up to this much.
const MAX_BODY: usize = 64 * 1024;

/// The endpoints, in Envoy's words; POST-only ones are marked.
const ENDPOINTS: &[(&str, &str, bool)] = &[
    ("/", "Admin home page", false),
    ("/clusters", "upstream cluster status", false),
    ("/config_dump", "dump current Envoy configs", false),
    ("/healthcheck/fail", "cause the server to fail health checks", true),
    ("/healthcheck/ok", "cause the server to pass health checks", true),
    ("/help", "print out list of admin commands", false),
    ("/quitquitquit", "exit the server", true),
    ("/ready", "print server state, return 200 if LIVE, otherwise return 503", false),
    ("/server_info", "print server version/status information", false),
    ("/stats", "print server stats", false),
    ("/stats/prometheus", "print server stats in prometheus format", false),
];

const TEXT: &str = "text/plain; charset=UTF-8";
const JSON: &str = "application/json";
const HTML: &str = "text/html; charset=UTF-8";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=UTF-8";

/// What the admin interface reads and controls.
pub struct Admin {
    clusters: Arc<ClusterSet>,
    listeners: Vec<Arc<ListenerRuntime>>,
    secrets: Vec<(String, Arc<SecretStats>)>,
    drain: Arc<Drain>,
    started: Instant,
    concurrency: usize,
    /// Every cluster finished its first discovery (Envoy's cluster warming).
    initialized: AtomicBool,
    /// `POST /healthcheck/fail` until `POST /healthcheck/ok`.
    health_check_failed: AtomicBool,
    command_line: Cli,
    config_dump: serde_json::Value,
}

/// What the admin interface is handed at start: what was loaded and what
/// runs from it.
pub struct Inputs {
    pub clusters: Arc<ClusterSet>,
    pub listeners: Vec<Arc<ListenerRuntime>>,
    pub drain: Arc<Drain>,
    /// Worker threads of the proxy.
    pub concurrency: usize,
    /// The command line this process was started with (`/server_info`).
    pub command_line: Cli,
    /// The bootstrap document as loaded (`/config_dump`).
    pub document: serde_yaml::Value,
    /// Secrets from SDS files, by name, with their statistics.
    pub secrets: Vec<(String, Arc<SecretStats>)>,
}

/// An admin response before it becomes HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Reply {
    fn new(status: StatusCode, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self { status, content_type, body: body.into() }
    }

    fn json(value: &serde_json::Value) -> Self {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        Self::new(StatusCode::OK, JSON, body)
    }
}

impl Admin {
    /// The admin state for a running server. `/config_dump` is rendered
    /// once, from the document as it was loaded: the file may change since.
    pub fn new(inputs: Inputs) -> Arc<Self> {
        let config_dump = config_dump::render(&inputs.document).unwrap_or_else(|e| {
            warn!(error = %e, "config_dump will be empty");
            config_dump::unavailable()
        });
        Arc::new(Self {
            clusters: inputs.clusters,
            listeners: inputs.listeners,
            secrets: inputs.secrets,
            drain: inputs.drain,
            started: Instant::now(),
            concurrency: inputs.concurrency,
            initialized: AtomicBool::new(false),
            health_check_failed: AtomicBool::new(false),
            command_line: inputs.command_line,
            config_dump,
        })
    }

    pub fn state(&self) -> ServerState {
        ServerState::of(
            self.drain.is_draining(),
            self.initialized.load(Relaxed),
            self.health_check_failed.load(Relaxed),
        )
    }

    /// Marks the end of the clusters' first discovery.
    pub fn mark_initialized(&self) {
        self.initialized.store(true, Relaxed);
    }

    /// Every statistic, read now, sorted by Envoy name.
    pub fn snapshot(&self) -> Vec<stats::Stat> {
        let mut out = Vec::new();
        for c in self.clusters.iter() {
            stats::cluster(c, &mut out);
        }
        for l in &self.listeners {
            stats::listener(l, &mut out);
        }
        for (name, s) in &self.secrets {
            stats::secret(name, s, &mut out);
        }
        let state = self.state();
        let clusters = self.clusters.iter().count() as i64;
        let values = stats::ServerValues {
            live: state == ServerState::Live,
            state: state.gauge(),
            uptime_s: self.started.elapsed().as_secs() as i64,
            concurrency: self.concurrency as i64,
            memory: server_info::Memory::read(),
            clusters,
            warming_clusters: if self.initialized.load(Relaxed) { 0 } else { clusters },
        };
        stats::server(&values, &mut out);
        stats::normalize(out)
    }

    /// Answers one admin request.
    pub fn handle(&self, method: &Method, path: &str, query: &str) -> Reply {
        let query = Query::parse(query);
        let Some(&(endpoint, _, mutates)) = ENDPOINTS.iter().find(|(p, _, _)| *p == path) else {
            return Reply::new(StatusCode::NOT_FOUND, TEXT, format!("invalid path. admin commands are:\n{}", help()));
        };
        if mutates && method != Method::POST {
            return Reply::new(
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT,
                format!("Method {method} not allowed, POST required.\n"),
            );
        }
        match endpoint {
            "/" => Reply::new(StatusCode::OK, HTML, index()),
            "/help" => Reply::new(StatusCode::OK, TEXT, format!("admin commands are:\n{}", help())),
            "/ready" => {
                let state = self.state();
                let status = if state == ServerState::Live { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                Reply::new(status, TEXT, format!("{}\n", state.as_str()))
            }
            // Envoy accepts `/stats?format=prometheus` as an alias.
            "/stats" if query.get("format") == Some("prometheus") => self.prometheus(&query),
            "/stats" => self.stats(&query),
            "/stats/prometheus" => self.prometheus(&query),
            "/clusters" if query.json() => Reply::json(&clusters::render_json(self.clusters.iter())),
            "/clusters" => Reply::new(StatusCode::OK, TEXT, clusters::render_text(self.clusters.iter())),
            "/server_info" => Reply::json(&server_info::render(
                self.state(),
                self.started.elapsed(),
                &self.command_line,
                self.concurrency,
            )),
            "/config_dump" => Reply::json(&self.config_dump),
            "/healthcheck/fail" => {
                self.health_check_failed.store(true, Relaxed);
                info!("admin: health check set to fail");
                Reply::new(StatusCode::OK, TEXT, "OK\n")
            }
            "/healthcheck/ok" => {
                self.health_check_failed.store(false, Relaxed);
                info!("admin: health check set to pass");
                Reply::new(StatusCode::OK, TEXT, "OK\n")
            }
            "/quitquitquit" => {
                info!("admin: shutdown requested");
                self.drain.start("admin request");
                Reply::new(StatusCode::OK, TEXT, "OK\n")
            }
            _ => Reply::new(StatusCode::NOT_FOUND, TEXT, help()),
        }
    }

    fn stats(&self, query: &Query) -> Reply {
        let selection = match query.selection() {
            Ok(s) => s,
            Err(reply) => return reply,
        };
        let stats: Vec<stats::Stat> = self.snapshot().into_iter().filter(|s| selection.keeps(s)).collect();
        if query.json() {
            Reply::json(&stats::render_json(&stats))
        } else {
            Reply::new(StatusCode::OK, TEXT, stats::render_text(&stats))
        }
    }

    fn prometheus(&self, query: &Query) -> Reply {
        let selection = match query.selection() {
            Ok(s) => s,
            Err(reply) => return reply,
        };
        let unfiltered = selection.filter.is_none() && !selection.used_only && selection.kind.is_none();
        let stats: Vec<stats::Stat> = self.snapshot().into_iter().filter(|s| selection.keeps(s)).collect();
        match prometheus::render(&stats, unfiltered) {
            Ok(text) => Reply::new(StatusCode::OK, PROMETHEUS, text),
            Err(e) => {
                warn!(error = %e, "cannot encode Prometheus metrics");
                Reply::new(StatusCode::INTERNAL_SERVER_ERROR, TEXT, format!("cannot encode metrics: {e}\n"))
            }
        }
    }
}

fn help() -> String {
    ENDPOINTS
        .iter()
        .map(|(path, text, post)| format!("  {path}{}: {text}\n", if *post { " (POST)" } else { "" }))
        .collect()
}

fn index() -> String {
    let rows: String = ENDPOINTS
        .iter()
        .map(|(path, text, post)| {
            if *post {
                format!(
                    "<tr><td><form action=\"{path}\" method=\"post\"><button>{path}</button></form></td><td>{text}</td></tr>\n"
                )
            } else {
                format!("<tr><td><a href=\"{path}\">{path}</a></td><td>{text}</td></tr>\n")
            }
        })
        .collect();
    format!(
        "<!DOCTYPE html>\n<html><head><title>frontend-proxy admin</title></head><body>\n\
         <h1>frontend-proxy admin</h1>\n<table>\n{rows}</table>\n</body></html>\n"
    )
}

/// The Pingora application serving [`Admin`].
pub struct AdminApp(pub Arc<Admin>);

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let (method, path, query) = {
            let req = session.req_header();
            (req.method.clone(), req.uri.path().to_string(), req.uri.query().unwrap_or("").to_string())
        };
        // Drain a (small) body so the connection can be reused.
        let mut read = 0;
        while read < MAX_BODY {
            match session.read_request_body().await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) | Err(_) => break,
            }
        }
        let reply = self.0.handle(&method, &path, &query);
        let mut response = Response::new(if method == Method::HEAD { Vec::new() } else { reply.body.clone() });
        *response.status_mut() = reply.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
        headers.insert(CONTENT_LENGTH, HeaderValue::from(reply.body.len()));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, max-age=0"));
        headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
        response
    }
}

/// The admin listener as a Pingora service: one thread, plain HTTP, on the
/// socket [`bind`] opened at start-up.
pub fn service(admin: Arc<Admin>, socket: std::net::TcpListener) -> GenBackgroundService<AdminListener> {
    let socket = std::sync::Mutex::new(Some(socket));
    let mut service = background_service("admin", AdminListener { app: Arc::new(AdminApp(admin)), socket });
    service.threads = Some(1);
    service
}

/// The admin server's own accept loop. Pingora stops every listening
/// service when a graceful shutdown starts; the admin must stay up while the
/// proxy drains (so `/ready` can say `DRAINING` and `/stats` stays
/// scrapable), as Envoy's does. It ends with the process.
///
/// It serves the socket bound and listening since start-up, not one bound
/// again: in between the address was closed (a client saw a refused or
/// reset connection after the admin had answered) and free for another
/// process to take, which left the proxy running without its admin.
pub struct AdminListener {
    app: Arc<AdminApp>,
    /// Taken by the one start of the service.
    socket: std::sync::Mutex<Option<std::net::TcpListener>>,
}

/// Binds the admin address. As Envoy (and the proxy's listeners), an IPv6
/// address takes IPv4 clients only with `ipv4_compat`: Linux's default is
/// dual-stack, which left an admin interface on `::` open to IPv4 clients
/// the file did not let in.
pub fn bind(address: SocketAddr, ipv4_compat: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(!ipv4_compat)?;
    }
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[async_trait]
impl BackgroundService for AdminListener {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(socket) = socket else { return };
        let address = socket.local_addr().ok();
        let listener = match tokio::net::TcpListener::from_std(socket) {
            Ok(l) => l,
            Err(e) => {
                warn!(?address, error = %e, "admin interface cannot accept connections");
                return;
            }
        };
        // Requests are answered as if no shutdown were coming.
        let (_never, not_shutting_down) = tokio::sync::watch::channel(false);
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let app = self.app.clone();
            let shutdown = not_shutting_down.clone();
            tokio::spawn(async move {
                let stream: pingora_core::protocols::Stream = Box::new(L4Stream::from(tcp));
                let _ = app.process_new(stream, &shutdown).await;
            });
        }
    }
}

/// Runs once the cluster manager reports ready (it is a dependency), and
/// records that start-up discovery is over: `/ready` leaves `PRE_INITIALIZING`.
pub struct InitializationWatch(pub Arc<Admin>);

#[async_trait]
impl BackgroundService for InitializationWatch {
    async fn start(&self, _shutdown: ShutdownWatch) {
        self.0.mark_initialized();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> Arc<Admin> {
        use clap::Parser;
        Admin::new(Inputs {
            clusters: Arc::new(ClusterSet::new(Vec::new())),
            listeners: Vec::new(),
            drain: Drain::new(std::time::Duration::from_secs(5)),
            concurrency: 1,
            command_line: Cli::try_parse_from(["frontend-proxy", "-c", "envoy.yaml"]).unwrap(),
            document: serde_yaml::Value::Null,
            secrets: Vec::new(),
        })
    }

    fn body(r: &Reply) -> String {
        String::from_utf8_lossy(&r.body).into_owned()
    }

    #[test]
    fn readiness_follows_startup_and_health_check_commands() {
        let a = admin();
        let ready = |a: &Admin| a.handle(&Method::GET, "/ready", "");
        assert_eq!(ready(&a).status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body(&ready(&a)), "PRE_INITIALIZING\n");
        a.mark_initialized();
        assert_eq!((ready(&a).status, body(&ready(&a))), (StatusCode::OK, "LIVE\n".to_string()));

        let refused = a.handle(&Method::GET, "/healthcheck/fail", "");
        assert_eq!(refused.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body(&refused), "Method GET not allowed, POST required.\n");
        assert_eq!(ready(&a).status, StatusCode::OK);

        assert_eq!(a.handle(&Method::POST, "/healthcheck/fail", "").status, StatusCode::OK);
        assert_eq!((ready(&a).status, body(&ready(&a))), (StatusCode::SERVICE_UNAVAILABLE, "DRAINING\n".to_string()));
        a.handle(&Method::POST, "/healthcheck/ok", "");
        assert_eq!(ready(&a).status, StatusCode::OK);
        assert_eq!(a.handle(&Method::GET, "/quitquitquit", "").status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn index_help_and_unknown_paths() {
        let a = admin();
        let index = a.handle(&Method::GET, "/", "");
        assert_eq!(index.content_type, HTML);
        assert!(body(&index).contains("<a href=\"/stats/prometheus\">"));
        let missing = a.handle(&Method::GET, "/nope", "");
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        assert!(body(&missing).contains("/quitquitquit (POST): exit the server"));
    }

    #[test]
    fn server_stats_without_clusters() {
        let a = admin();
        let text = body(&a.handle(&Method::GET, "/stats", "filter=%5Eserver%5C.(live|state)%24"));
        assert_eq!(text, "server.live: 0\nserver.state: 2\n");
        a.mark_initialized();
        let prom = body(&a.handle(&Method::GET, "/stats/prometheus", "filter=server.live"));
        assert!(prom.contains("# TYPE envoy_server_live gauge\nenvoy_server_live 1\n"), "{prom}");
        assert_eq!(a.handle(&Method::GET, "/stats", "format=prometheus&filter=server.live").body, prom.into_bytes());
        let json: serde_json::Value =
            serde_json::from_slice(&a.handle(&Method::GET, "/stats", "format=json").body).unwrap();
        assert!(json["stats"].as_array().unwrap().iter().any(|s| s["name"] == "server.uptime"));
    }
}
