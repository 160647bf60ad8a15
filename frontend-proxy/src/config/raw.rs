//! Serde mirror of the Envoy v3 bootstrap subset frontend-proxy reads.
//!
//! Field names are Envoy's. Every field is wrapped in [`Field`], which keeps a
//! value that failed to deserialize as an error message instead of aborting
//! the whole parse, so validation can report every problem with its YAML path
//! at once. Fields the structs do not name land in `other` and are judged by
//! validation (ignored with a warning, or rejected as unsupported).
//!
//! Each struct is defined with [`mapping!`], which also lists its keys as
//! the file spells them ([`Keys`]): what a misspelled key is compared with
//! ("did you mean"), so the list cannot drift from the struct.
//!
//! Nothing here leaves the `config` module: [`super::validate`] turns it into
//! the runtime model.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_yaml::Value;
use std::collections::BTreeMap;

/// Defines raw structs: each field optional as the file spells it (with
/// `#[serde(rename = "...")]` where Rust cannot), the keys it does not name
/// kept in `other`, and its [`Keys`]. `#[wrapper(UInt32Value)]` marks a field
/// whose proto type is a wrapper, which protobuf also reads in the object
/// form `{value: 5}`.
macro_rules! mapping {
    (@key $field:ident $key:literal) => {
        $key
    };
    (@key $field:ident) => {
        stringify!($field)
    };
    ($(#[doc = $doc:literal])* pub struct $name:ident {
        $( $(#[doc = $field_doc:literal])* $(#[serde(rename = $key:literal)])? $(#[wrapper($wrapper:ident)])?
           pub $field:ident: $ty:ty, )*
    }) => {
        $(#[doc = $doc])*
        #[derive(Debug, serde::Deserialize)]
        pub struct $name {
            $( $(#[doc = $field_doc])* $(#[serde(rename = $key)])?
               $(
                   #[doc = concat!("A `google.protobuf.", stringify!($wrapper), "`: `{value: ...}` is read too.")]
                   #[serde(default, deserialize_with = "crate::config::raw::lenient::wrapper")]
               )?
               pub $field: $ty, )*
            #[serde(flatten)]
            pub other: Other,
        }

        impl $crate::config::raw::Keys for $name {
            const KEYS: &'static [&'static str] = &[$(mapping!(@key $field $($key)?)),*];

            fn other(&self) -> &Other {
                &self.other
            }
        }
    };
}

mod access_log;
mod cluster;
pub mod lenient;
mod route;
mod secret;

/// A raw struct's keys: the ones it reads, and the others the file had.
pub trait Keys {
    /// Every key the struct reads, as the file spells it.
    const KEYS: &'static [&'static str];
    /// The keys of the mapping that the struct does not name.
    fn other(&self) -> &Other;
}

pub use access_log::*;
pub use cluster::*;
pub use route::*;
pub use secret::*;

/// Keys of a mapping that the raw struct does not name.
pub type Other = BTreeMap<String, Value>;

/// A value from the file, or the reason it could not be read as `T`.
#[derive(Debug, Clone)]
pub enum Field<T> {
    Ok(T),
    Invalid(String),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Ok(Self::from_value(value))
    }
}

impl<T: DeserializeOwned> Field<T> {
    /// Reads `value` as `T` the way Envoy would ([`lenient`]).
    pub fn from_value(value: Value) -> Self {
        match T::deserialize(lenient::Lenient(value)) {
            Ok(v) => Field::Ok(v),
            Err(e) => Field::Invalid(tidy_serde_message(&e.to_string())),
        }
    }
}

/// serde's messages name Rust types (`expected struct Cluster`); say what the
/// file should contain instead.
fn tidy_serde_message(msg: &str) -> String {
    let mut msg =
        msg.replace("expected struct ", "expected a mapping for ").replace("expected a sequence", "expected a list");
    for (rust, words) in [
        ("expected u32", "expected a non-negative integer"),
        ("expected u16", "expected a non-negative integer"),
        ("expected i64", "expected an integer"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
    ] {
        msg = msg.replace(rust, words);
    }
    // Messages from nested values carry no useful location once the value
    // was re-read from a tree; drop serde_yaml's trailing position if any.
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    }
}

pub type List<T> = Field<Vec<Field<T>>>;

mapping! {
    pub struct Bootstrap {
        pub admin: Option<Field<Admin>>,
        pub static_resources: Option<Field<StaticResources>>,
        /// Names this proxy to a control plane.
        pub node: Option<Field<Value>>,
        /// Read only for the connection limits it may set.
        pub layered_runtime: Option<Field<Value>>,
        /// Read only for the connection limits it may set.
        pub overload_manager: Option<Field<Value>>,
    }
}

mapping! {
    pub struct Admin {
        pub address: Option<Field<Address>>,
    }
}

mapping! {
    pub struct Address {
        pub socket_address: Option<Field<SocketAddress>>,
        pub pipe: Option<Field<Pipe>>,
    }
}

mapping! {
    pub struct Pipe {
        pub path: Option<Field<String>>,
        /// An integer; read from the value itself, as Envoy's YAML reader
        /// takes `0600` as octal where YAML 1.2 makes it a string.
        pub mode: Option<Field<Value>>,
    }
}

mapping! {
    pub struct SocketAddress {
        pub address: Option<Field<String>>,
        pub port_value: Option<Field<u32>>,
        pub protocol: Option<Field<String>>,
        pub ipv4_compat: Option<Field<bool>>,
    }
}

mapping! {
    pub struct StaticResources {
        pub listeners: Option<List<Listener>>,
        pub clusters: Option<List<Cluster>>,
        pub secrets: Option<List<Secret>>,
    }
}

mapping! {
    pub struct Listener {
        pub name: Option<Field<String>>,
        pub address: Option<Field<Address>>,
        pub filter_chains: Option<List<FilterChain>>,
        pub default_filter_chain: Option<Field<FilterChain>>,
        pub listener_filters: Option<List<TypedExtension>>,
        #[wrapper(BoolValue)]
        pub enable_reuse_port: Option<Field<bool>>,
        pub access_log: Option<Field<Value>>,
        pub listener_filters_timeout: Option<Field<Value>>,
        pub continue_on_listener_filters_timeout: Option<Field<bool>>,
    }
}

mapping! {
    pub struct FilterChain {
        pub filters: Option<List<TypedExtension>>,
        pub transport_socket: Option<Field<TypedExtension>>,
        pub filter_chain_match: Option<Field<Value>>,
        pub name: Option<Field<String>>,
        pub transport_socket_connect_timeout: Option<Field<Value>>,
    }
}

mapping! {
    /// `{name, typed_config}`: filters, transport sockets, DNS resolvers.
    pub struct TypedExtension {
        pub name: Option<Field<String>>,
        pub typed_config: Option<Field<Value>>,
    }
}

mapping! {
    pub struct HttpConnectionManager {
        #[serde(rename = "@type")]
        pub type_url: Option<Field<String>>,
        pub stat_prefix: Option<Field<String>>,
        pub codec_type: Option<Field<String>>,
        pub route_config: Option<Field<RouteConfiguration>>,
        pub http_filters: Option<List<TypedExtension>>,
        pub server_name: Option<Field<String>>,
        pub server_header_transformation: Option<Field<String>>,
        #[wrapper(BoolValue)]
        pub generate_request_id: Option<Field<bool>>,
        pub preserve_external_request_id: Option<Field<bool>>,
        pub always_set_request_id_in_response: Option<Field<bool>>,
        #[wrapper(BoolValue)]
        pub use_remote_address: Option<Field<bool>>,
        pub xff_num_trusted_hops: Option<Field<u32>>,
        pub skip_xff_append: Option<Field<bool>>,
        pub forward_client_cert_details: Option<Field<String>>,
        pub set_current_client_cert_details: Option<Field<ClientCertDetails>>,
        pub stream_idle_timeout: Option<Field<Value>>,
        pub request_timeout: Option<Field<Value>>,
        pub request_headers_timeout: Option<Field<Value>>,
        pub drain_timeout: Option<Field<Value>>,
        #[wrapper(UInt32Value)]
        pub max_request_headers_kb: Option<Field<u32>>,
        pub common_http_protocol_options: Option<Field<HttpProtocolOptions>>,
        pub upgrade_configs: Option<List<UpgradeConfig>>,
        pub strip_any_host_port: Option<Field<bool>>,
        pub strip_matching_host_port: Option<Field<bool>>,
        pub access_log: Option<List<AccessLog>>,
        pub local_reply_config: Option<Field<LocalReplyConfig>>,
        pub http2_protocol_options: Option<Field<DownstreamHttp2Options>>,
        pub http_protocol_options: Option<Field<DownstreamHttp1Options>>,
        pub proxy_100_continue: Option<Field<bool>>,
        pub stream_error_on_invalid_http_message: Option<Field<bool>>,
        pub add_user_agent: Option<Field<bool>>,
        #[wrapper(BoolValue)]
        pub normalize_path: Option<Field<bool>>,
        pub merge_slashes: Option<Field<bool>>,
        pub path_with_escaped_slashes_action: Option<Field<String>>,
    }
}

mapping! {
    /// `HttpConnectionManager.set_current_client_cert_details`: what of the
    /// client's certificate goes into `x-forwarded-client-cert`.
    pub struct ClientCertDetails {
        #[wrapper(BoolValue)]
        pub subject: Option<Field<bool>>,
        pub cert: Option<Field<bool>>,
        pub chain: Option<Field<bool>>,
        pub dns: Option<Field<bool>>,
        pub uri: Option<Field<bool>>,
    }
}

mapping! {
    /// `HttpConnectionManager.http_protocol_options` (downstream HTTP/1).
    pub struct DownstreamHttp1Options {
        pub allow_absolute_url: Option<Field<bool>>,
        pub accept_http_10: Option<Field<bool>>,
        pub default_host_for_http_10: Option<Field<String>>,
        pub header_key_format: Option<Field<Value>>,
        pub enable_trailers: Option<Field<bool>>,
        pub allow_chunked_length: Option<Field<bool>>,
        pub override_stream_error_on_invalid_http_message: Option<Field<bool>>,
        pub send_fully_qualified_url: Option<Field<bool>>,
        pub allow_custom_methods: Option<Field<bool>>,
        pub ignore_http_11_upgrade: Option<Field<Value>>,
    }
}

mapping! {
    /// `HttpConnectionManager.http2_protocol_options` (downstream).
    pub struct DownstreamHttp2Options {
        pub hpack_table_size: Option<Field<u32>>,
        pub max_concurrent_streams: Option<Field<u32>>,
        pub initial_stream_window_size: Option<Field<u32>>,
        pub initial_connection_window_size: Option<Field<u32>>,
        pub allow_connect: Option<Field<bool>>,
        pub allow_metadata: Option<Field<bool>>,
        pub max_outbound_frames: Option<Field<u32>>,
        pub max_outbound_control_frames: Option<Field<u32>>,
        pub max_consecutive_inbound_frames_with_empty_payload: Option<Field<u32>>,
        pub max_inbound_priority_frames_per_stream: Option<Field<u32>>,
        pub max_inbound_window_update_frames_per_data_frame_sent: Option<Field<u32>>,
        pub stream_error_on_invalid_http_messaging: Option<Field<bool>>,
        pub override_stream_error_on_invalid_http_message: Option<Field<bool>>,
        pub connection_keepalive: Option<Field<KeepaliveSettings>>,
        pub custom_settings_parameters: Option<Field<Value>>,
    }
}

mapping! {
    pub struct HttpProtocolOptions {
        pub idle_timeout: Option<Field<Value>>,
        #[wrapper(UInt32Value)]
        pub max_headers_count: Option<Field<u32>>,
        pub headers_with_underscores_action: Option<Field<String>>,
        #[wrapper(UInt32Value)]
        pub max_requests_per_connection: Option<Field<u32>>,
        pub max_connection_duration: Option<Field<Value>>,
        pub max_stream_duration: Option<Field<Value>>,
    }
}

mapping! {
    pub struct UpgradeConfig {
        pub upgrade_type: Option<Field<String>>,
        #[wrapper(BoolValue)]
        pub enabled: Option<Field<bool>>,
    }
}

mapping! {
    pub struct DownstreamTlsContext {
        #[serde(rename = "@type")]
        pub type_url: Option<Field<String>>,
        pub common_tls_context: Option<Field<CommonTlsContext>>,
        #[wrapper(BoolValue)]
        pub require_client_certificate: Option<Field<bool>>,
        pub session_timeout: Option<Field<Value>>,
        pub disable_stateless_session_resumption: Option<Field<bool>>,
        pub disable_stateful_session_resumption: Option<Field<bool>>,
        pub session_ticket_keys: Option<Field<SessionTicketKeys>>,
    }
}

mapping! {
    /// `DownstreamTlsContext.session_ticket_keys`.
    pub struct SessionTicketKeys {
        pub keys: Option<List<DataSource>>,
    }
}

mapping! {
    pub struct UpstreamTlsContext {
        #[serde(rename = "@type")]
        pub type_url: Option<Field<String>>,
        pub common_tls_context: Option<Field<CommonTlsContext>>,
        pub sni: Option<Field<String>>,
        pub auto_sni_san_validation: Option<Field<bool>>,
        pub allow_renegotiation: Option<Field<bool>>,
    }
}

mapping! {
    pub struct CommonTlsContext {
        pub tls_certificates: Option<List<TlsCertificate>>,
        pub alpn_protocols: Option<List<String>>,
        pub validation_context: Option<Field<ValidationContext>>,
        pub tls_params: Option<Field<TlsParameters>>,
        pub tls_certificate_sds_secret_configs: Option<List<SdsSecretConfig>>,
        pub validation_context_sds_secret_config: Option<Field<SdsSecretConfig>>,
    }
}

mapping! {
    pub struct TlsParameters {
        pub tls_minimum_protocol_version: Option<Field<String>>,
        pub tls_maximum_protocol_version: Option<Field<String>>,
        pub cipher_suites: Option<List<String>>,
        pub ecdh_curves: Option<List<String>>,
    }
}

mapping! {
    pub struct TlsCertificate {
        pub certificate_chain: Option<Field<DataSource>>,
        pub private_key: Option<Field<DataSource>>,
        /// Envoy reloads an SDS secret's files when this directory changes.
        pub watched_directory: Option<Field<WatchedDirectory>>,
    }
}

mapping! {
    pub struct ValidationContext {
        pub trusted_ca: Option<Field<DataSource>>,
        pub match_typed_subject_alt_names: Option<List<SubjectAltNameMatcher>>,
        /// Deprecated in Envoy: matchers of any name type.
        pub match_subject_alt_names: Option<List<route::StringMatcher>>,
        pub verify_certificate_hash: Option<List<String>>,
        pub verify_certificate_spki: Option<List<String>>,
        pub crl: Option<Field<DataSource>>,
        pub only_verify_leaf_cert_crl: Option<Field<bool>>,
    }
}

mapping! {
    pub struct SubjectAltNameMatcher {
        pub san_type: Option<Field<String>>,
        pub matcher: Option<Field<route::StringMatcher>>,
    }
}

mapping! {
    /// Envoy's `DataSource`: exactly one of the three.
    pub struct DataSource {
        pub filename: Option<Field<String>>,
        pub inline_string: Option<Field<String>>,
        pub inline_bytes: Option<Field<String>>,
    }
}

mapping! {
    /// `envoy.filters.network.connection_limit`.
    pub struct ConnectionLimit {
        #[serde(rename = "@type")]
        pub type_url: Option<Field<String>>,
        pub stat_prefix: Option<Field<String>>,
        #[wrapper(UInt64Value)]
        pub max_connections: Option<Field<u64>>,
    }
}

mapping! {
    /// `envoy.filters.network.tcp_proxy`: the fields frontend-proxy reads;
    /// the others stay in `other` and are refused.
    pub struct TcpProxy {
        #[serde(rename = "@type")]
        pub type_url: Option<Field<String>>,
        pub stat_prefix: Option<Field<String>>,
        pub cluster: Option<Field<String>>,
        pub weighted_clusters: Option<Field<TcpWeightedClusters>>,
        pub idle_timeout: Option<Field<Value>>,
        #[wrapper(UInt32Value)]
        pub max_connect_attempts: Option<Field<u32>>,
        pub max_downstream_connection_duration: Option<Field<Value>>,
        pub access_log: Option<List<AccessLog>>,
    }
}

mapping! {
    /// `tcp_proxy.weighted_clusters`.
    pub struct TcpWeightedClusters {
        pub clusters: Option<List<ClusterWeight>>,
    }
}

mapping! {
    /// `envoy.filters.http.buffer`.
    pub struct BufferFilter {
        #[serde(rename = "@type")]
        pub type_url: Option<Field<String>>,
        #[wrapper(UInt32Value)]
        pub max_request_bytes: Option<Field<u32>>,
    }
}

mapping! {
    /// `envoy.filters.http.router`'s options: the ones frontend-proxy reads
    /// or deliberately ignores; the others stay in `other` and are refused.
    pub struct RouterFilter {
        #[serde(rename = "@type")]
        pub type_url: Option<Field<String>>,
        #[wrapper(BoolValue)]
        pub dynamic_stats: Option<Field<bool>>,
        pub start_child_span: Option<Field<bool>>,
        pub suppress_grpc_request_failure_code_stats: Option<Field<bool>>,
        pub suppress_envoy_headers: Option<Field<bool>>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_fields_as_the_file_spells_them() {
        assert_eq!(Admin::KEYS, ["address"]);
        assert_eq!(&Route::KEYS[..2], ["name", "match"]);
        assert!(HttpConnectionManager::KEYS.contains(&"@type"));
        assert!(!HttpConnectionManager::KEYS.contains(&"type_url"));
        assert!(Cluster::KEYS.contains(&"type") && Cluster::KEYS.contains(&"load_assignment"));
        let admin: Admin = serde_yaml::from_str("address: {}\nprofile_path: /tmp/x").unwrap();
        assert_eq!(admin.other().keys().collect::<Vec<_>>(), ["profile_path"]);
    }
}
