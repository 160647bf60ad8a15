//! What the proxy runs from, built once from the validated model by
//! `server`: each listener with its connection manager (or TCP proxy) and
//! its stats.
//!
//! Its own room because four others read it (the engines in `proxy`, the
//! per-connection policy in `downstream`, `admin` and `server`) and none of
//! them owns it. A configuration reload would build a new set and swap it in.

use crate::access_log::AccessLog;
use crate::chain_match::Selection;
use crate::config::model::{
    Address, ChainConfig, Codec, ForwardClientCert, HeadersWithUnderscores, Http10, Http2Settings,
    HttpConnectionManager, ListenerConfig, PathNormalization, ServerHeader, Serves, TcpProxy,
};
use crate::metrics::{ConnManagerStats, TcpProxyStats};
use crate::routing::{HeaderMutations, PortMatching, RouteTable};
use crate::tls::{ClientCertDetails, DownstreamTls};
use pingora_core::tls::ssl::SslAcceptor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A TLS handshake not done by then is given up (Pingora's listener's
/// bound) unless the filter chain's `transport_socket_connect_timeout`
/// says otherwise (Envoy has no bound by default).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// A listener as the proxy sees it at request time.
pub struct ListenerRuntime {
    pub name: String,
    pub address: Address,
    pub tls: bool,
    /// The HTTP connection manager; an empty one that is never used on a
    /// TCP proxy's chain (its connections go to `tcp_proxy` before any
    /// HTTP engine sees them).
    pub hcm: HttpConnectionManager,
    /// A TCP proxy's chain: where its connections go instead.
    pub tcp_proxy: Option<TcpProxyRuntime>,
    pub stats: Arc<ConnManagerStats>,
    /// `connection_limit`: open connections at most.
    pub max_connections: Option<u64>,
    /// `enable_reuse_port`: each worker accepts on its own socket.
    pub reuse_port: bool,
    /// An IPv6 listener also takes IPv4 connections (`ipv4_compat`).
    pub ipv4_compat: bool,
    /// How long a TLS handshake may take (`transport_socket_connect_timeout`).
    pub handshake_timeout: Duration,
    /// The connection manager's access loggers, their sinks open.
    pub access_logs: Vec<AccessLog>,
    /// A listener that chooses a filter chain per connection: the runtime
    /// (index in the proxy's list) serving each chain, in the listener's
    /// order (the first is the listener's own entry); empty otherwise.
    /// Chains after the first are entries of their own after every
    /// listener, with the listener's name and address (their stats merge
    /// into the listener's).
    pub chains: Vec<usize>,
    /// How the chain is chosen (the listener's own entry only).
    pub selection: Option<Arc<Selection>>,
    /// The chain's TLS: its handshake configuration, for what is checked
    /// once it is done (a required client certificate).
    pub tls_config: Option<Arc<DownstreamTls>>,
    /// The chain's TLS acceptor, built by `server` (its own certificates,
    /// ALPN, parameters and client validation).
    pub acceptor: Option<Arc<SslAcceptor>>,
    /// What the handshake records of a client certificate for the chain's
    /// `x-forwarded-client-cert` (`None`: nothing); one entry.
    pub client_cert_elements: Box<[Option<ClientCertDetails>]>,
    /// Some chain of the listener terminates TLS: the listener's `ssl.*`
    /// are reported.
    pub reports_tls: bool,
}

impl ListenerRuntime {
    /// The runtime of a validated listener, with fresh stats and the
    /// access loggers built from its `hcm.access_log`.
    pub fn new(l: ListenerConfig, access_logs: Vec<AccessLog>) -> Self {
        let (hcm, tcp_proxy) = split(l.serves);
        Self {
            client_cert_elements: Box::new([hcm.client_cert_element()]),
            hcm,
            tcp_proxy,
            chains: Vec::new(),
            selection: l.selection.map(Arc::new),
            reports_tls: l.tls.is_some(),
            acceptor: None,
            tls_config: l.tls.clone().map(Arc::new),
            name: l.name,
            address: l.address,
            tls: l.tls.is_some(),
            stats: Arc::new(ConnManagerStats::default()),
            max_connections: l.max_connections,
            reuse_port: l.reuse_port,
            ipv4_compat: l.ipv4_compat,
            handshake_timeout: l.handshake_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
            access_logs,
        }
    }
}

impl ListenerRuntime {
    /// The entry serving a filter chain after the first of `listener`.
    pub fn chain(listener: &ListenerRuntime, chain: ChainConfig, access_logs: Vec<AccessLog>) -> Self {
        let (hcm, tcp_proxy) = split(chain.serves);
        Self {
            client_cert_elements: Box::new([hcm.client_cert_element()]),
            hcm,
            tcp_proxy,
            name: listener.name.clone(),
            address: listener.address.clone(),
            tls: chain.tls.is_some(),
            stats: Arc::new(ConnManagerStats::default()),
            max_connections: chain.max_connections,
            reuse_port: listener.reuse_port,
            ipv4_compat: listener.ipv4_compat,
            handshake_timeout: chain.handshake_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
            access_logs,
            chains: Vec::new(),
            selection: None,
            reports_tls: chain.tls.is_some(),
            acceptor: None,
            tls_config: chain.tls.map(Arc::new),
        }
    }

    /// The entry serving a connection found to be listener `own`'s: the
    /// one its filter chain selection recorded on the connection, if any.
    pub fn serving(own: usize, chosen: Option<usize>) -> usize {
        chosen.unwrap_or(own)
    }
}

/// A TCP proxy as it runs: its configuration and its `tcp.<stat_prefix>.*`.
#[derive(Debug, Clone)]
pub struct TcpProxyRuntime {
    pub config: Arc<TcpProxy>,
    pub stats: Arc<TcpProxyStats>,
}

fn split(serves: Serves) -> (HttpConnectionManager, Option<TcpProxyRuntime>) {
    match serves {
        Serves::Http(hcm) => (*hcm, None),
        Serves::Tcp(config) => {
            (unused_connection_manager(), Some(TcpProxyRuntime { config, stats: Arc::new(TcpProxyStats::default()) }))
        }
    }
}

/// The connection manager of a TCP proxy's chain: nothing routes through
/// it. A placeholder rather than an `Option` on every request's path.
fn unused_connection_manager() -> HttpConnectionManager {
    let routes =
        RouteTable::new(String::new(), Vec::new(), Vec::new(), PortMatching::default(), HeaderMutations::default());
    HttpConnectionManager {
        stat_prefix: String::new(),
        codec: Codec::Http1,
        routes: Arc::new(routes),
        server_name: String::new(),
        server_header: ServerHeader::Overwrite,
        generate_request_id: false,
        preserve_external_request_id: false,
        always_set_request_id_in_response: false,
        use_remote_address: false,
        xff_num_trusted_hops: 0,
        skip_xff_append: false,
        stream_idle_timeout: None,
        request_timeout: None,
        request_headers_timeout: None,
        idle_timeout: None,
        drain_timeout: Duration::ZERO,
        max_stream_duration: None,
        max_request_headers_kb: 60,
        max_headers_count: 100,
        headers_with_underscores: HeadersWithUnderscores::Allow,
        path: PathNormalization::OFF,
        http10: Http10 { accept: false, default_host: None },
        max_requests_per_connection: None,
        websocket: false,
        max_request_bytes: None,
        suppress_envoy_headers: false,
        forward_client_cert: ForwardClientCert::Sanitize,
        client_cert_details: ClientCertDetails::default(),
        access_log: Vec::new(),
        local_reply: None,
        http2: Http2Settings::default(),
        http2_keepalive: None,
    }
}

/// The index of the pipe listener whose socket is `local`.
pub fn pipe_listener_index(
    listeners: &[Arc<ListenerRuntime>],
    local: &std::os::unix::net::SocketAddr,
) -> Option<usize> {
    listeners.iter().position(|l| l.address.pipe().is_some_and(|p| p.is(local)))
}

/// The index of the listener bound to `local`: the one with that exact
/// address, else one on the wildcard address with that port. With a single
/// listener, that one (no address needed, which saves a `getsockname`).
pub fn listener_index(listeners: &[Arc<ListenerRuntime>], local: Option<SocketAddr>) -> Option<usize> {
    if listeners.len() == 1 {
        return Some(0);
    }
    let local = local?;
    listeners.iter().position(|l| l.address.ip() == Some(local)).or_else(|| {
        listeners
            .iter()
            .position(|l| matches!(l.address, Address::Ip(a) if a.port() == local.port() && a.ip().is_unspecified()))
    })
}

/// Plaintext connections of a listener that chooses filter chains, served
/// by a chain other than its first: Pingora's engine finds a connection's
/// listener by local address, and a plaintext stream has no TLS digest to
/// carry the chain, so the chain is looked up here by both addresses (a
/// live connection's pair is unique) while the connection is open.
pub struct Chosen {
    key: (SocketAddr, SocketAddr),
}

static CHOSEN: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<(SocketAddr, SocketAddr), usize>>> =
    std::sync::LazyLock::new(Default::default);

impl Chosen {
    /// Records that `serving` serves the connection until this is dropped.
    pub fn record(local: SocketAddr, peer: SocketAddr, serving: usize) -> Chosen {
        let key = (local, peer);
        CHOSEN.lock().unwrap_or_else(|e| e.into_inner()).insert(key, serving);
        Chosen { key }
    }

    /// The entry serving the connection from `peer` to `local`, if recorded.
    pub fn lookup(local: SocketAddr, peer: SocketAddr) -> Option<usize> {
        CHOSEN.lock().unwrap_or_else(|e| e.into_inner()).get(&(local, peer)).copied()
    }
}

impl Drop for Chosen {
    fn drop(&mut self) {
        CHOSEN.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
    }
}
