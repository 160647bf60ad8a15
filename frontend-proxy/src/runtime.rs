//! What the proxy runs from, built once from the validated model by
//! `server`: each listener with its connection manager and its stats.
//!
//! Its own room because four others read it (the engines in `proxy`, the
//! per-connection policy in `downstream`, `admin` and `server`) and none of
//! them owns it. A configuration reload would build a new set and swap it in.

use crate::access_log::AccessLog;
use crate::config::model::{ChainConfig, HttpConnectionManager, ListenerConfig};
use crate::metrics::ConnManagerStats;
use crate::tls::{ClientCertDetails, ListenerTls};
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
    pub address: SocketAddr,
    pub tls: bool,
    pub hcm: HttpConnectionManager,
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
    /// A TLS listener with several filter chains: the runtime (index in
    /// the proxy's list) serving each chain, in the order of its
    /// `ListenerTls::chains`; empty with one chain. Chains after the first
    /// are entries of their own after every listener, with the listener's
    /// name and address (their stats merge into the listener's).
    pub chains: Vec<usize>,
    /// TLS listeners: the handshake configuration, for what is checked
    /// once it is done (a required client certificate).
    pub tls_config: Option<Arc<ListenerTls>>,
    /// TLS listeners: per filter chain (in `ListenerTls::chains` order),
    /// what the handshake records of a client certificate for the chain's
    /// `x-forwarded-client-cert` (`None`: nothing).
    pub client_cert_elements: Box<[Option<ClientCertDetails>]>,
}

impl ListenerRuntime {
    /// The runtime of a validated listener, with fresh stats and the
    /// access loggers built from its `hcm.access_log`.
    pub fn new(l: ListenerConfig, access_logs: Vec<AccessLog>) -> Self {
        Self {
            chains: Vec::new(),
            client_cert_elements: Box::new([l.hcm.client_cert_element()]),
            tls_config: l.tls.clone().map(Arc::new),
            name: l.name,
            address: l.address,
            tls: l.tls.is_some(),
            hcm: l.hcm,
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
        Self {
            name: listener.name.clone(),
            address: listener.address,
            tls: listener.tls,
            hcm: chain.hcm,
            stats: Arc::new(ConnManagerStats::default()),
            max_connections: chain.max_connections,
            reuse_port: listener.reuse_port,
            ipv4_compat: listener.ipv4_compat,
            handshake_timeout: listener.handshake_timeout,
            access_logs,
            chains: Vec::new(),
            client_cert_elements: Box::new([]),
            tls_config: listener.tls_config.clone(),
        }
    }

    /// The entry serving the filter chain a TLS handshake chose (position
    /// `chosen` in the listener's chains); `own` is this listener's index.
    pub fn serving(&self, own: usize, chosen: Option<usize>) -> usize {
        chosen.and_then(|c| self.chains.get(c)).copied().unwrap_or(own)
    }
}

/// The index of the listener bound to `local`: the one with that exact
/// address, else one on the wildcard address with that port. With a single
/// listener, that one (no address needed, which saves a `getsockname`).
pub fn listener_index(listeners: &[Arc<ListenerRuntime>], local: Option<SocketAddr>) -> Option<usize> {
    if listeners.len() == 1 {
        return Some(0);
    }
    let local = local?;
    listeners
        .iter()
        .position(|l| l.address == local)
        .or_else(|| listeners.iter().position(|l| l.address.port() == local.port() && l.address.ip().is_unspecified()))
}
