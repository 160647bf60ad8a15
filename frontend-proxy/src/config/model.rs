//! The validated configuration: what the rest of the proxy runs from.
//! Built by [`super::validate`]; nothing in here can be invalid.

use crate::access_log::{Filter, Format};
pub use crate::address::{Address, Pipe};
use crate::chain_match::Selection;
use crate::routing::{ClusterChoice, HeaderMutations, RouteTable};
use crate::tls::{ClientCertDetails, DownstreamTls};
use crate::upstream::ClusterSpec;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct Bootstrap {
    pub admin: Option<AdminConfig>,
    pub listeners: Vec<ListenerConfig>,
    pub clusters: Vec<ClusterSpec>,
}

#[derive(Debug, Clone, Copy)]
pub struct AdminConfig {
    pub address: SocketAddr,
    /// `socket_address.ipv4_compat`: an IPv6 admin address takes IPv4
    /// clients too only with it, as a listener's.
    pub ipv4_compat: bool,
}

#[derive(Debug)]
pub struct ListenerConfig {
    pub name: String,
    pub address: Address,
    pub tls: Option<DownstreamTls>,
    /// What the first filter chain serves its connections with.
    pub serves: Serves,
    /// `envoy.filters.network.connection_limit`: open connections at most.
    pub max_connections: Option<u64>,
    /// `enable_reuse_port` (Envoy's default: true): a socket per worker
    /// instead of one they share.
    pub reuse_port: bool,
    /// `socket_address.ipv4_compat`: a listener on an IPv6 address also
    /// takes IPv4 connections (mapped) only when this is set, as in Envoy.
    pub ipv4_compat: bool,
    /// The filter chain's `transport_socket_connect_timeout`: how long a
    /// TLS handshake may take (`None`: the proxy's own bound, 60 s).
    pub handshake_timeout: Option<Duration>,
    /// What each filter chain after the first serves, in the listener's
    /// order (`default_filter_chain` last); `serves`, `tls` and
    /// `handshake_timeout` are the first chain's.
    pub other_chains: Vec<ChainConfig>,
    /// How a connection's filter chain is chosen; `None` for a listener
    /// with one filter chain, no match and no `tls_inspector` (the chain
    /// serves every connection, without a look at it first).
    pub selection: Option<Selection>,
}

impl ListenerConfig {
    /// The downstream TLS of every filter chain that terminates TLS.
    pub fn all_tls(&self) -> impl Iterator<Item = &DownstreamTls> {
        self.tls.iter().chain(self.other_chains.iter().filter_map(|c| c.tls.as_ref()))
    }
}

impl ListenerConfig {
    /// The first filter chain's HTTP connection manager, if it has one.
    pub fn hcm(&self) -> Option<&HttpConnectionManager> {
        match &self.serves {
            Serves::Http(h) => Some(h),
            Serves::Tcp(_) => None,
        }
    }
}

/// What a filter chain after a listener's first serves its connections with.
#[derive(Debug)]
pub struct ChainConfig {
    pub serves: Serves,
    pub max_connections: Option<u64>,
    /// Its own TLS (`None`: the chain gets the connection's bytes as they are).
    pub tls: Option<DownstreamTls>,
    /// Its `transport_socket_connect_timeout`.
    pub handshake_timeout: Option<Duration>,
}

/// The network filter that ends a filter chain: what its connections get.
#[derive(Debug)]
pub enum Serves {
    /// `envoy.filters.network.http_connection_manager`.
    Http(Box<HttpConnectionManager>),
    /// `envoy.filters.network.tcp_proxy`.
    Tcp(Arc<TcpProxy>),
}

impl Serves {
    pub fn is_tcp(&self) -> bool {
        matches!(self, Serves::Tcp(_))
    }

    /// What a TLS handshake on this chain records of a client certificate
    /// (a TCP proxy forwards no headers: nothing).
    pub fn client_cert_element(&self) -> Option<ClientCertDetails> {
        match self {
            Serves::Http(hcm) => hcm.client_cert_element(),
            Serves::Tcp(_) => None,
        }
    }
}

/// `envoy.filters.network.tcp_proxy`: each connection is joined to one
/// upstream connection and bytes are copied both ways.
#[derive(Debug)]
pub struct TcpProxy {
    /// `tcp.<stat_prefix>.*` statistics.
    pub stat_prefix: String,
    /// `cluster`, or `weighted_clusters` (one picked per connection).
    pub cluster: ClusterChoice,
    /// No byte either way for this long closes both connections (`None`:
    /// never; Envoy's default is 1 h).
    pub idle_timeout: Option<Duration>,
    /// Upstream connection attempts before the downstream connection is
    /// closed (each to another host when there is one).
    pub max_connect_attempts: u32,
    /// `max_downstream_connection_duration`: a connection is closed this
    /// long after its upstream connection was made (`None`: no limit).
    pub max_duration: Option<Duration>,
    /// `access_log`: where each finished connection is written, and how.
    pub access_log: Vec<AccessLogConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// HTTP/1.1 and HTTP/2 (h2c with prior knowledge on plain text, ALPN on TLS).
    Auto,
    Http1,
    Http2,
}

/// `forward_client_cert_details`: whether a request's
/// `x-forwarded-client-cert` reaches the upstream, and whether the client's
/// certificate is added to it. Every mode but `AlwaysForwardOnly` removes
/// the header from a request whose connection carried no client
/// certificate, as Envoy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardClientCert {
    /// Removed from every request (Envoy's default).
    Sanitize,
    /// Passed on unchanged from a client that presented a certificate.
    ForwardOnly,
    /// The client's certificate appended as one more element.
    AppendForward,
    /// Replaced by the client's certificate.
    SanitizeSet,
    /// Passed on unchanged, whatever the connection.
    AlwaysForwardOnly,
}

impl ForwardClientCert {
    /// Whether requests need the client certificate's element written.
    pub fn writes(self) -> bool {
        matches!(self, Self::AppendForward | Self::SanitizeSet)
    }
}

/// `server_header_transformation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerHeader {
    Overwrite,
    AppendIfAbsent,
    PassThrough,
}

/// `common_http_protocol_options.headers_with_underscores_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadersWithUnderscores {
    Allow,
    /// 400, and the connection closes (Envoy's HTTP/1 codec).
    RejectRequest,
    /// The headers are removed before routing.
    DropHeader,
}

/// `path_with_escaped_slashes_action`: what a path with `%2F`, `%5C`
/// (either case) gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Forwarded as it came (Envoy's default).
    KeepUnchanged,
    /// 400.
    RejectRequest,
    /// 307 to the path with them unescaped (and normalized as configured).
    UnescapeAndRedirect,
    /// Unescaped, then routed and forwarded.
    UnescapeAndForward,
}

/// How the connection manager normalizes a request's path before routing
/// (the upstream gets the normalized path too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathNormalization {
    /// `normalize_path`: RFC 3986 normalization as Envoy does it.
    pub normalize: bool,
    /// `merge_slashes`.
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
}

impl PathNormalization {
    /// Envoy's defaults: the path is left as it came.
    pub const OFF: Self =
        PathNormalization { normalize: false, merge_slashes: false, escaped_slashes: EscapedSlashes::KeepUnchanged };
}

/// `http_protocol_options.accept_http_10` and `default_host_for_http_10`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Http10 {
    /// Off (Envoy's default): an HTTP/1.0 request gets 426.
    pub accept: bool,
    /// The Host an HTTP/1.0 request without one is given.
    pub default_host: Option<http::HeaderValue>,
}

#[derive(Debug)]
pub struct HttpConnectionManager {
    pub stat_prefix: String,
    pub codec: Codec,
    pub routes: Arc<RouteTable>,
    pub server_name: String,
    pub server_header: ServerHeader,
    pub generate_request_id: bool,
    pub preserve_external_request_id: bool,
    pub always_set_request_id_in_response: bool,
    pub use_remote_address: bool,
    pub xff_num_trusted_hops: u32,
    pub skip_xff_append: bool,
    /// `None`: disabled.
    pub stream_idle_timeout: Option<Duration>,
    pub request_timeout: Option<Duration>,
    pub request_headers_timeout: Option<Duration>,
    /// Connection idle timeout (`common_http_protocol_options.idle_timeout`).
    pub idle_timeout: Option<Duration>,
    /// `drain_timeout`: on an HTTP/2 connection, the grace between the
    /// shutdown notice (GOAWAY with stream 2^31-1) and the final GOAWAY,
    /// when the proxy drains or the connection's idle timeout fires.
    pub drain_timeout: Duration,
    /// `common_http_protocol_options.max_stream_duration`: the longest a
    /// request may last, from its first byte (`None`: no limit).
    pub max_stream_duration: Option<Duration>,
    pub max_request_headers_kb: u32,
    pub max_headers_count: u32,
    pub headers_with_underscores: HeadersWithUnderscores,
    /// `normalize_path`, `merge_slashes`, `path_with_escaped_slashes_action`.
    pub path: PathNormalization,
    pub http10: Http10,
    /// `common_http_protocol_options.max_requests_per_connection` (HTTP/1
    /// codec only): the response to the last request says `connection:
    /// close` and the connection ends.
    pub max_requests_per_connection: Option<u32>,
    /// `upgrade_configs` lists `websocket`.
    pub websocket: bool,
    /// `envoy.filters.http.buffer`: larger request bodies get 413.
    pub max_request_bytes: Option<u32>,
    /// The router's `suppress_envoy_headers`: no `x-envoy-expected-rq-timeout-ms`
    /// upstream, no `x-envoy-upstream-service-time` or `x-envoy-overloaded`
    /// downstream.
    pub suppress_envoy_headers: bool,
    /// `forward_client_cert_details`: what happens to `x-forwarded-client-cert`.
    pub forward_client_cert: ForwardClientCert,
    /// `set_current_client_cert_details`, for the modes that write the header.
    pub client_cert_details: ClientCertDetails,
    /// `access_log`: where each finished request is written, and how.
    pub access_log: Vec<AccessLogConfig>,
    /// `local_reply_config`: how the proxy's own replies are rewritten.
    pub local_reply: Option<Arc<LocalReplyConfig>>,
    /// `http2_protocol_options`: what downstream HTTP/2 connections advertise.
    pub http2: Http2Settings,
    /// `http2_protocol_options.connection_keepalive`: PINGs on downstream
    /// HTTP/2 connections (`None`: no `interval`, none sent).
    pub http2_keepalive: Option<Http2Keepalive>,
}

impl HttpConnectionManager {
    /// What a TLS handshake on this connection manager's chain must record
    /// of the client's certificate for `x-forwarded-client-cert`.
    pub fn client_cert_element(&self) -> Option<ClientCertDetails> {
        self.forward_client_cert.writes().then_some(self.client_cert_details)
    }
}

/// `local_reply_config`: the first mapper whose filter selects a local
/// reply rewrites it; the body is then formatted.
#[derive(Debug)]
pub struct LocalReplyConfig {
    pub mappers: Vec<ResponseMapper>,
    /// `None`: the body text as it is, `text/plain`.
    pub body_format: Option<BodyFormat>,
}

#[derive(Debug)]
pub struct ResponseMapper {
    pub filter: Filter,
    pub status: Option<http::StatusCode>,
    pub body: Option<bytes::Bytes>,
    pub body_format: Option<BodyFormat>,
    /// `headers_to_add`, as response header edits.
    pub headers: HeaderMutations,
}

/// A local reply body format and its `content_type`.
#[derive(Debug)]
pub struct BodyFormat {
    pub format: Format,
    pub content_type: String,
}

/// The downstream HTTP/2 settings `http2_protocol_options` sets; `None`
/// keeps the server's default (Pingora's: 100 concurrent streams; h2's:
/// 64 KiB windows, a 4 KiB HPACK table). Listeners whose settings differ
/// are served by separate services (`server.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Http2Settings {
    pub max_concurrent_streams: Option<u32>,
    pub initial_stream_window_size: Option<u32>,
    pub initial_connection_window_size: Option<u32>,
    pub hpack_table_size: Option<u32>,
}

/// Envoy's `KeepaliveSettings` on a downstream HTTP/2 connection: a PING
/// every `interval` (plus up to `jitter` of it, drawn anew each time); a
/// connection whose PING goes unanswered for `timeout` is closed, unless
/// other frames arrived meanwhile (the answer may be queued behind them),
/// which starts the timeout again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Http2Keepalive {
    pub interval: Duration,
    pub timeout: Duration,
    /// `interval_jitter` as a fraction of `interval` (Envoy's default 15 %).
    pub jitter: f64,
}

/// One access logger (file, stdout or stderr) with its parsed format.
#[derive(Debug, Clone)]
pub struct AccessLogConfig {
    /// A file, or `/dev/stdout` / `/dev/stderr`.
    pub path: String,
    pub format: Arc<Format>,
    /// `filter`: which requests it writes (`None`: all).
    pub filter: Option<Arc<Filter>>,
    /// Where the logger is in the file, for errors found when it is opened.
    pub yaml_path: String,
}
