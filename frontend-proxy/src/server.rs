//! Assembles the Pingora server from what was loaded: one proxy service for
//! the listeners, the cluster manager in the background, the admin
//! interface, and the drain that stops them. `prepare` does everything that
//! can fail on input (TLS material, resolvers) without opening sockets, so
//! `--mode validate` runs it too. `run` returns when the proxy has stopped,
//! with the error that stopped it if one did; `main` decides the exit code.

use crate::access_log::{AccessLog, Sink, Sinks};
use crate::admin::{self, Admin, InitializationWatch};
use crate::cli::{Cli, Http1Engine};
use crate::config::model::{Address, AdminConfig, Codec, Http2Settings, Serves};
use crate::config::Loaded;
use crate::downstream::Downstream;
use crate::drain::{Drain, Failure, PingoraShutdown};
use crate::listen::{Listener, Listening, PingoraSocket};
use crate::proxy::{NativeH1, Proxy};
use crate::runtime::ListenerRuntime;
use crate::sds::{SdsError, SecretService, SecretWatch};
use crate::tls;
use crate::upstream::{Cluster, ClusterError, ClusterManager, ClusterSet};
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig, TcpSocketOptions, ALPN, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora_core::protocols::http::v2::server::{default_h2_options, H2Options};
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_core::tls::ssl::SslAcceptor;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("listener {listener:?}: {source}")]
    Tls { listener: String, source: tls::TlsError },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Secret(#[from] SdsError),
    #[error("{yaml_path}: cannot open access log {file}: {source}")]
    AccessLog { yaml_path: String, file: String, source: std::io::Error },
    #[error("listener {listener:?}: cannot bind {address}: {source}")]
    Bind { listener: String, address: Address, source: std::io::Error },
    #[error("--admin-address-path: cannot write {path}: {source}")]
    AdminAddressPath { path: String, source: std::io::Error },
    /// Something the proxy cannot run without failed while it ran (a
    /// listener that could not start listening).
    #[error(transparent)]
    Stopped(Failure),
    /// Pingora's connection pool cannot key an abstract socket (it panics
    /// or never reuses one), and with its HTTP/1 engine every upstream
    /// request goes through that pool.
    #[error("cluster {cluster:?}: the abstract pipe {path} needs the native HTTP/1 engine (Pingora's pool cannot reuse an abstract socket); use a socket file, or drop --http1-engine pingora")]
    AbstractPipe { cluster: String, path: String },
    /// With Pingora's engine, Pingora's HTTP/2 server serves downstream
    /// HTTP/2, and it sends no PINGs of its own.
    #[error("listener {listener:?}: http_connection_manager.http2_protocol_options.connection_keepalive needs the native engine (Pingora's HTTP/2 server sends no keepalive PINGs); drop --http1-engine pingora or the setting")]
    PingoraKeepalive { listener: String },
}

/// Everything built from the configuration, before any socket is opened.
pub struct Prepared {
    listeners: Vec<(Arc<ListenerRuntime>, Option<Arc<SslAcceptor>>)>,
    /// The entries serving filter chains after a listener's first (see
    /// `ListenerRuntime::chains`), after the listeners in the runtime list.
    chains: Vec<Arc<ListenerRuntime>>,
    pub clusters: Arc<ClusterSet>,
    pub admin: Option<AdminConfig>,
    /// The bootstrap document as loaded, for `/config_dump`.
    document: serde_yaml::Value,
    /// Every access-log sink, flushed when the proxy stops.
    access_logs: Sinks,
    /// The secrets of SDS files, watched while the proxy runs.
    secrets: SecretWatch,
}

/// Loads TLS material, builds clusters and opens the access logs (files
/// open in append mode); reports every failure.
pub fn prepare(loaded: Loaded) -> Result<Prepared, Vec<StartError>> {
    let Loaded { bootstrap, document, .. } = loaded;
    let mut errors = Vec::new();
    let secrets = match SecretWatch::load(&bootstrap.listeners, &bootstrap.clusters) {
        Ok(s) => s,
        Err(e) => {
            errors.extend(e.into_iter().map(StartError::from));
            SecretWatch::default()
        }
    };
    let mut clusters = Vec::new();
    for spec in bootstrap.clusters {
        match Cluster::with_secrets(spec, None, secrets.secrets()) {
            Ok(c) => clusters.push(Arc::new(c)),
            Err(e) => errors.push(e.into()),
        }
    }
    let mut listeners = Vec::new();
    let mut chains = Vec::new();
    let count = bootstrap.listeners.len();
    let mut sinks = Sinks::default();
    let mut open_logs = |serves: &mut Serves, errors: &mut Vec<StartError>| {
        let mut access_logs = Vec::new();
        let configured = match serves {
            Serves::Http(hcm) => std::mem::take(&mut hcm.access_log),
            Serves::Tcp(tcp) => tcp.access_log.clone(),
        };
        for log in configured {
            match sinks.open(&log.path) {
                Ok(sink) => access_logs.push(AccessLog::new(log.format, sink, log.filter)),
                Err(source) => errors.push(StartError::AccessLog { yaml_path: log.yaml_path, file: log.path, source }),
            }
        }
        access_logs
    };
    for (index, mut l) in bootstrap.listeners.into_iter().enumerate() {
        let access_logs = open_logs(&mut l.serves, &mut errors);
        let tls = l.tls.clone();
        let selects = l.selection.is_some();
        let other_chains = std::mem::take(&mut l.other_chains);
        let mut runtime = ListenerRuntime::new(l, access_logs);
        runtime.reports_tls |= other_chains.iter().any(|c| c.tls.is_some());
        // Each chain's TLS acceptor: its own certificates, ALPN (what its
        // connection manager speaks; a TCP proxy's `alpn_protocols` as
        // they are), parameters and client validation.
        let mut ok = true;
        let mut acceptor_of = |runtime: &ListenerRuntime,
                               tls: &Option<tls::DownstreamTls>,
                               errors: &mut Vec<StartError>| {
            let t = tls.as_ref()?;
            let codec = runtime.tcp_proxy.is_none().then_some(runtime.hcm.codec);
            match tls::downstream_acceptor(t, codec.map(alpn), handshake_events(&runtime.stats), secrets.secrets()) {
                Ok(a) => Some(Arc::new(a)),
                // Reported once, by the secret's loading.
                Err(tls::TlsError::SecretMissing { .. }) => {
                    ok = false;
                    None
                }
                Err(source) => {
                    errors.push(StartError::Tls { listener: runtime.name.clone(), source });
                    ok = false;
                    None
                }
            }
        };
        runtime.acceptor = acceptor_of(&runtime, &tls, &mut errors);
        if selects {
            // Chain 0 is the listener's own entry; the others follow every
            // listener, in order.
            runtime.chains.push(index);
            for mut chain in other_chains {
                let logs = open_logs(&mut chain.serves, &mut errors);
                let chain_tls = chain.tls.clone();
                let mut entry = ListenerRuntime::chain(&runtime, chain, logs);
                entry.acceptor = acceptor_of(&entry, &chain_tls, &mut errors);
                runtime.chains.push(count + chains.len());
                chains.push(Arc::new(entry));
            }
        }
        if !ok {
            continue;
        }
        let acceptor = if selects { None } else { runtime.acceptor.clone() };
        listeners.push((Arc::new(runtime), acceptor));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Prepared {
        listeners,
        chains,
        clusters: Arc::new(ClusterSet::new(clusters)),
        admin: bootstrap.admin,
        document,
        access_logs: sinks,
        secrets,
    })
}

/// The listener counters a TLS handshake feeds.
fn handshake_events(stats: &Arc<crate::metrics::ConnManagerStats>) -> tls::HandshakeEvents {
    let (verify, san) = (stats.clone(), stats.clone());
    tls::HandshakeEvents {
        verify_error: Box::new(move || {
            verify.ssl_fail_verify_error.fetch_add(1, Relaxed);
        }),
        verify_san: Box::new(move || {
            san.ssl_fail_verify_san.fetch_add(1, Relaxed);
        }),
    }
}

/// The protocols a TLS listener may offer with ALPN, as its codec allows.
fn alpn(codec: Codec) -> ALPN {
    match codec {
        Codec::Auto => ALPN::H2H1,
        Codec::Http1 => ALPN::H1,
        Codec::Http2 => ALPN::H2,
    }
}

/// Listeners served by one service.
struct Group {
    h2c: bool,
    http2: Http2Settings,
    members: Vec<AcceptedBy>,
}

/// The HTTP/2 server settings for `http2_protocol_options`: Pingora's
/// bounded defaults, with what the file sets on top.
fn h2_options(s: &Http2Settings) -> Option<H2Options> {
    if *s == Http2Settings::default() {
        return None;
    }
    let mut o = default_h2_options();
    if let Some(n) = s.max_concurrent_streams {
        o.max_concurrent_streams(n);
    }
    if let Some(n) = s.initial_stream_window_size {
        o.initial_window_size(n);
    }
    if let Some(n) = s.initial_connection_window_size {
        o.initial_connection_window_size(n);
    }
    if let Some(n) = s.hpack_table_size {
        o.header_table_size(n);
    }
    Some(o)
}

/// A listener ready for its service.
enum Bound {
    /// Plaintext, served by our accept loop, on a socket bound here.
    Plain(Listener),
    /// Plaintext with `--http1-engine pingora`: served by Pingora's listener
    /// service, with the write buffer its engine was tuned with (a stream
    /// from our loop cannot be given one: `set_buffer` is crate-private).
    PingoraPlain(PingoraSocket),
    /// TLS, served by our accept loop (the handshake included), whatever
    /// the HTTP/1 engine.
    Tls(Listener),
}

/// Who accepts a listener's connections.
enum AcceptedBy {
    Us(Listener),
    Pingora(Arc<ListenerRuntime>, PingoraSocket),
}

/// Binds every listener's sockets: a busy address fails the start with the
/// listener's name, and no other process can take it before the listeners
/// open. They listen once the clusters have warmed up (`listen.rs`).
fn bind_listeners(
    listeners: Vec<(Arc<ListenerRuntime>, Option<Arc<SslAcceptor>>)>,
    chains: &[Arc<ListenerRuntime>],
    engine: Http1Engine,
    workers: usize,
) -> Result<Vec<(Arc<ListenerRuntime>, Bound)>, StartError> {
    let mut bound = Vec::with_capacity(listeners.len());
    let count = listeners.len();
    for (index, (l, tls)) in listeners.into_iter().enumerate() {
        let bind_error = |source| StartError::Bind { listener: l.name.clone(), address: l.address.clone(), source };
        let sockets = if l.reuse_port { workers } else { 1 };
        let b = match (tls, engine, &l.address) {
            // The filter chain is chosen per connection in our accept loop.
            _ if l.selection.is_some() => {
                // Connections are accepted at once when some chain may be
                // a protocol whose server speaks first (a plaintext TCP proxy).
                let server_first = l.chains.iter().any(|&i| {
                    let entry = if i == index { Some(&l) } else { chains.get(i.wrapping_sub(count)) };
                    entry.is_some_and(|e| e.tcp_proxy.is_some() && e.acceptor.is_none())
                });
                let listener =
                    Listener::bind(index, &l.name, &l.address, sockets, l.ipv4_compat).map_err(bind_error)?;
                let listener = if server_first { listener.with_tcp_proxy() } else { listener };
                let listener = listener.with_selection();
                if l.acceptor.is_some() || l.tcp_proxy.is_some() {
                    Bound::Tls(listener)
                } else {
                    Bound::Plain(listener)
                }
            }
            // A TCP proxy is served by our accept loop whatever the engine.
            (None, _, _) if l.tcp_proxy.is_some() => Bound::Plain(
                Listener::bind(index, &l.name, &l.address, sockets, l.ipv4_compat)
                    .map_err(bind_error)?
                    .with_tcp_proxy(),
            ),
            // So is a pipe: its connections go to the engine chosen.
            (None, Http1Engine::Native, _) | (None, Http1Engine::Pingora, Address::Pipe(_)) => {
                Bound::Plain(Listener::bind(index, &l.name, &l.address, sockets, l.ipv4_compat).map_err(bind_error)?)
            }
            (None, Http1Engine::Pingora, Address::Ip(address)) => {
                Bound::PingoraPlain(PingoraSocket::bind(&l.name, *address, l.ipv4_compat).map_err(bind_error)?)
            }
            (Some(acceptor), _, _) => {
                let listener =
                    Listener::bind(index, &l.name, &l.address, sockets, l.ipv4_compat).map_err(bind_error)?;
                Bound::Tls(listener.with_tls(acceptor))
            }
        };
        bound.push((l, b));
    }
    Ok(bound)
}

/// Idle upstream connections Pingora keeps, per worker thread (its pool is
/// one LRU of this times the threads). Pingora's default, 128, is far below
/// what Envoy keeps (every connection up to a cluster's `max_connections`):
/// with many busy clients, requests paid for a new upstream connection
/// because the pool had just closed an idle one.
fn keepalive_pool_size(clusters: &ClusterSet, threads: usize) -> usize {
    let envoy: usize = clusters.iter().map(|c| c.breaker.spec.max_connections as usize).sum();
    (envoy / threads).clamp(128, 16 * 1024)
}

/// As Envoy, SIGUSR1 reopens every access-log file (after a log rotation
/// moved it away); the writers do it before their next write or flush.
/// The handler is installed before this returns; a thread of its own
/// waits for the signal, so no worker is involved.
fn reopen_access_logs_on_sigusr1(sinks: Vec<Arc<Sink>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let installed = tokio::runtime::Builder::new_current_thread().enable_io().build().and_then(|rt| {
        let usr1 = {
            let _in_runtime = rt.enter();
            signal(SignalKind::user_defined1())?
        };
        Ok((rt, usr1))
    });
    let (rt, mut usr1) = match installed {
        Ok(x) => x,
        Err(e) => {
            warn!(error = %e, "cannot handle SIGUSR1: access logs cannot be reopened, and the signal would end the process");
            return;
        }
    };
    let spawned = std::thread::Builder::new().name("sigusr1".into()).spawn(move || {
        rt.block_on(async move {
            while usr1.recv().await.is_some() {
                info!(files = sinks.len(), "SIGUSR1: reopening access logs");
                for sink in &sinks {
                    sink.reopen();
                }
            }
        })
    });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the SIGUSR1 thread: access logs cannot be reopened");
    }
}

/// Runs the proxy until it has drained (or failed). Blocks.
pub fn run(prepared: Prepared, cli: Cli) -> Result<(), StartError> {
    let runtimes: Vec<Arc<ListenerRuntime>> =
        prepared.listeners.iter().map(|(l, _)| l.clone()).chain(prepared.chains.iter().cloned()).collect();
    let threads = cli.concurrency.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let engine = cli.http1_engine;
    if engine == Http1Engine::Pingora {
        for c in prepared.clusters.iter() {
            if let Some(path) = c.spec.endpoints.iter().find_map(|e| match &e.address {
                crate::upstream::EndpointAddress::Pipe(p) if p.is_abstract() => Some(p.path.clone()),
                _ => None,
            }) {
                return Err(StartError::AbstractPipe { cluster: c.name().to_string(), path });
            }
        }
        if let Some(l) = runtimes.iter().find(|l| l.hcm.http2_keepalive.is_some() && l.hcm.codec != Codec::Http1) {
            return Err(StartError::PingoraKeepalive { listener: l.name.clone() });
        }
    }
    let drain_time = Duration::from_secs(cli.drain_time_s);
    // Before any listener opens: SIGUSR1's default action ends the process.
    reopen_access_logs_on_sigusr1(prepared.access_logs.all());
    let bound = bind_listeners(prepared.listeners, &prepared.chains, engine, threads)?;
    let admin_socket = match &prepared.admin {
        Some(admin) => Some(admin::bind(admin.address, admin.ipv4_compat).map_err(|source| StartError::Bind {
            listener: "admin".into(),
            address: Address::Ip(admin.address),
            source,
        })?),
        None => None,
    };
    let conf = ServerConf {
        threads,
        // The drain runs before Pingora's shutdown starts (`drain.rs`): by
        // then nothing is left to wait for.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: keepalive_pool_size(&prepared.clusters, threads),
        // Envoy's model: a connection stays on the worker that accepted it.
        // Tokio's work-stealing scheduler (LIFO slot) let some of 1000 busy
        // connections wait while others were served, at a much higher p99.
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let conf = server.configuration.clone();

    let drain = Drain::new(drain_time);

    let cluster_manager = background_service("cluster manager", ClusterManager { clusters: prepared.clusters.clone() });
    let cluster_handle = server.add_service(cluster_manager);
    let secret_stats = prepared.secrets.stats();
    if !prepared.secrets.is_empty() {
        let watch = SecretService { watch: std::sync::Mutex::new(Some(prepared.secrets)), stop: drain.signal() };
        server.add_service(background_service("sds files", watch));
    }

    // The admin interface starts at once (answering PRE_INITIALIZING on
    // /ready); the watch marks the end of warming when the clusters are ready
    // and every listener accepts (dependencies added with the listeners).
    let mut warmed = None;
    if let (Some(AdminConfig { address, .. }), Some(socket)) = (prepared.admin.as_ref(), admin_socket) {
        // The bound address: with port 0 the kernel chose the port.
        let address = socket.local_addr().unwrap_or(*address);
        info!(%address, "admin interface");
        if let Some(path) = &cli.admin_address_path {
            std::fs::write(path, address.to_string())
                .map_err(|source| StartError::AdminAddressPath { path: path.display().to_string(), source })?;
        }
        let admin = Admin::new(admin::Inputs {
            clusters: prepared.clusters.clone(),
            listeners: runtimes.clone(),
            drain: drain.clone(),
            concurrency: conf.threads,
            command_line: cli,
            document: prepared.document,
            secrets: secret_stats,
        });
        server.add_service(admin::service(admin.clone(), socket));
        let watch = server.add_service(background_service("admin initialization", InitializationWatch(admin)));
        watch.add_dependency(&cluster_handle);
        warmed = Some(watch);
    }

    // Listeners share a service (one thread pool) unless they differ in
    // what Pingora sets per service: whether h2c is on, and the HTTP/2
    // settings (`http2_protocol_options`). TLS listeners negotiate the
    // protocol with ALPN and join the first group with their settings.
    let mut groups: Vec<Group> = Vec::new();
    let mut with_tls = Vec::new();
    for (l, b) in bound {
        let tls = matches!(b, Bound::Tls(..));
        let stat_prefix = l.tcp_proxy.as_ref().map_or(&l.hcm.stat_prefix, |t| &t.config.stat_prefix);
        info!(listener = %l.name, address = %l.address, tls, tcp_proxy = l.tcp_proxy.is_some(), %stat_prefix, "listening");
        // An HTTP/1-only listener never speaks HTTP/2: its settings do not matter.
        let h2c = l.hcm.codec != Codec::Http1;
        let http2 = if h2c { l.hcm.http2 } else { Http2Settings::default() };
        let member = match b {
            Bound::Tls(listener) => {
                with_tls.push((http2, AcceptedBy::Us(listener)));
                continue;
            }
            Bound::PingoraPlain(socket) => AcceptedBy::Pingora(l, socket),
            Bound::Plain(socket) => AcceptedBy::Us(socket),
        };
        match groups.iter_mut().find(|g| g.h2c == h2c && g.http2 == http2) {
            Some(g) => g.members.push(member),
            None => groups.push(Group { h2c, http2, members: vec![member] }),
        }
    }
    for (http2, member) in with_tls {
        match groups.iter_mut().find(|g| g.http2 == http2) {
            Some(g) => g.members.push(member),
            None => groups.push(Group { h2c: false, http2, members: vec![member] }),
        }
    }
    for Group { h2c, http2, members } in groups {
        let mut ours = Vec::new();
        let mut pingora_listeners = Vec::new();
        for p in members {
            match p {
                AcceptedBy::Us(socket) => ours.push(socket),
                AcceptedBy::Pingora(l, socket) => pingora_listeners.push((l, socket)),
            }
        }
        let proxy = Proxy::new(runtimes.clone(), prepared.clusters.clone());
        let name = if h2c { "proxy" } else { "proxy (HTTP/1 only)" };
        let mut app = pingora_proxy::HttpProxy::new(proxy, conf.clone());
        app.handle_init_modules();
        let mut opts = HttpServerOptions::default();
        opts.h2c = h2c;
        app.server_options = Some(opts);
        app.h2_options = h2_options(&http2);
        let native = (engine == Http1Engine::Native)
            .then(|| NativeH1::new(Proxy::new(runtimes.clone(), prepared.clusters.clone())));
        let downstream = Downstream::new(app, runtimes.clone(), native, prepared.clusters.clone(), drain.clone());
        // Plaintext and TLS listeners run our accept loop; plaintext ones
        // with Pingora's engine Pingora's listener service, inside the same
        // service (the same threads).
        let mut prebound = Vec::new();
        let pingora = (!pingora_listeners.is_empty()).then(|| {
            let mut service = Service::new(name.to_string(), downstream.clone());
            for (l, socket) in pingora_listeners {
                prebound.push(socket);
                // No 64 KiB read buffer under each connection (tokio's
                // `BufReader` zero-fills it, and the engine reads into
                // buffers of its own); the write buffer stays.
                let unbuffered = L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE);
                // Should Pingora bind the address itself (no socket table),
                // it keeps `ipv4_compat` as our socket does.
                let mut options = TcpSocketOptions::default();
                options.ipv6_only = l.address.ip().is_some_and(|a| a.is_ipv6()).then_some(!l.ipv4_compat);
                service.add_listener(
                    ListenerConfig::tcp(l.address.to_string()).l4_buffer(unbuffered).tcp_socket_options(options),
                );
            }
            service
        });
        let group = Listening::new(name.to_string(), downstream, ours, pingora, prebound, threads, drain.clone());
        let handle = server.add_service(group);
        handle.add_dependency(&cluster_handle);
        if let Some(warmed) = &warmed {
            warmed.add_dependency(&handle);
        }
    }

    server.run(RunArgs { shutdown_signal: Box::new(PingoraShutdown { drain: drain.clone() }) });
    prepared.access_logs.flush_all();
    match drain.take_failure() {
        Some(failure) => Err(StartError::Stopped(failure)),
        None => Ok(()),
    }
}
