//! The Pingora peer an attempt connects to: a cluster host's address (IP
//! or pipe), its TLS, timeouts, keepalive, HTTP/2 settings, the ALPN its
//! codec allows, and the tracer that counts its connections.

use crate::address::{Address, Pipe, PipeConnector};
use crate::metrics::{UpstreamCodecStat, UpstreamConnectionTracer};
use crate::upstream::{Cluster, Host, UpstreamCodec};
use pingora_core::upstreams::peer::{HttpPeer, ALPN};
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// The HTTP versions an attempt on `cluster` may speak, as ALPN (on a
/// plain-text peer, `H2` is HTTP/2 with prior knowledge: h2c).
fn upstream_alpn(codec: UpstreamCodec, downstream_http2: bool) -> ALPN {
    match codec {
        UpstreamCodec::Http1 => ALPN::H1,
        UpstreamCodec::Http2 => ALPN::H2,
        UpstreamCodec::Alpn => ALPN::H2H1,
        UpstreamCodec::Downstream if downstream_http2 => ALPN::H2,
        UpstreamCodec::Downstream => ALPN::H1,
    }
}

/// A peer on a pipe: Pingora keys its pool by the path (`@name` for an
/// abstract one) and connects through [`PipeConnector`]. TLS, if the
/// cluster has it, runs over the pipe as over TCP.
fn pipe_peer(pipe: &Pipe, tls: bool, sni: String) -> HttpPeer {
    static CONNECTOR: std::sync::OnceLock<Arc<PipeConnector>> = std::sync::OnceLock::new();
    let mut peer = HttpPeer::new(std::net::SocketAddr::from(([0, 0, 0, 0], 0)), tls, sni);
    match pipe.pingora_addr() {
        Ok(addr) => peer._address = addr,
        // Not after validation (it checks the path); the peer then fails to connect.
        Err(e) => warn!(pipe = %pipe.path, error = %e, "pipe has no usable address"),
    }
    peer.options.custom_l4 = Some(CONNECTOR.get_or_init(|| Arc::new(PipeConnector)).clone());
    peer
}

/// The Pingora peer for an attempt on `host`.
pub(super) fn peer(cluster: &Cluster, host: &Arc<Host>, timeout: Option<Duration>, downstream_http2: bool) -> HttpPeer {
    let tls = cluster.spec.tls.as_ref();
    let sni = tls.and_then(|t| t.sni.clone()).unwrap_or_default();
    let mut peer = match &host.addr {
        Address::Ip(addr) => HttpPeer::new(*addr, tls.is_some(), sni),
        Address::Pipe(pipe) => pipe_peer(pipe, tls.is_some(), sni),
    };
    peer.options.connection_timeout = Some(cluster.spec.connect_timeout);
    peer.options.total_connection_timeout = Some(cluster.spec.connect_timeout);
    peer.options.read_timeout = timeout;
    peer.options.write_timeout = timeout;
    let http = &cluster.spec.http;
    peer.options.idle_timeout = http.idle_timeout;
    peer.options.tcp_keepalive = cluster.spec.tcp_keepalive.map(|k| k.pingora());
    let alpn = upstream_alpn(http.codec, downstream_http2);
    if alpn.get_max_http_version() == 2 {
        peer.options.max_h2_streams = http.http2.max_concurrent_streams as usize;
        peer.options.h2_stream_window_size = http.http2.initial_stream_window_size;
        peer.options.h2_connection_window_size = http.http2.initial_connection_window_size;
        peer.options.h2_ping_interval = http.http2.ping_interval;
    }
    // Counts the connection's open and close (cx_total/active/destroy), pooled
    // or not, and its codec when the peer's ALPN settles it.
    let codec = match alpn {
        ALPN::H1 => Some(UpstreamCodecStat::Http1),
        ALPN::H2 => Some(UpstreamCodecStat::Http2),
        _ => None,
    };
    peer.options.alpn = alpn;
    peer.options.tracer = Some(UpstreamConnectionTracer::tracer(&cluster.stats, host, codec));
    if let Some((tls, material)) = cluster.upstream_tls() {
        material.apply(tls, &mut peer);
    }
    peer
}
