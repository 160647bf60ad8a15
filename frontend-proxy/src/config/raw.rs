//! Serde mirror of the Envoy v3 bootstrap subset frontend-proxy reads.
//!
//! Field names are Envoy's. Every field is wrapped in [`Field`], which keeps a
//! value that failed to deserialize as an error message instead of aborting
//! the whole parse, so validation can report every problem with its YAML path
//! at once. Fields the structs do not name land in `other` and are judged by
//! validation (ignored with a warning, or rejected as unsupported).
//!
//! Nothing here leaves the `config` module: [`super::validate`] turns it into
//! the runtime model.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_yaml::Value;
use std::collections::BTreeMap;

mod cluster;
mod route;

pub use cluster::*;
pub use route::*;

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
    pub fn from_value(value: Value) -> Self {
        match serde_yaml::from_value::<T>(value) {
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

#[derive(Debug, Deserialize)]
pub struct Bootstrap {
    pub admin: Option<Field<Admin>>,
    pub static_resources: Option<Field<StaticResources>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct Admin {
    pub address: Option<Field<Address>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct Address {
    pub socket_address: Option<Field<SocketAddress>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct SocketAddress {
    pub address: Option<Field<String>>,
    pub port_value: Option<Field<u32>>,
    pub protocol: Option<Field<String>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct StaticResources {
    pub listeners: Option<List<Listener>>,
    pub clusters: Option<List<Cluster>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct Listener {
    pub name: Option<Field<String>>,
    pub address: Option<Field<Address>>,
    pub filter_chains: Option<List<FilterChain>>,
    pub listener_filters: Option<List<TypedExtension>>,
    pub enable_reuse_port: Option<Field<bool>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct FilterChain {
    pub filters: Option<List<TypedExtension>>,
    pub transport_socket: Option<Field<TypedExtension>>,
    pub filter_chain_match: Option<Field<Value>>,
    pub name: Option<Field<String>>,
    #[serde(flatten)]
    pub other: Other,
}

/// `{name, typed_config}`: filters, transport sockets, DNS resolvers.
#[derive(Debug, Deserialize)]
pub struct TypedExtension {
    pub name: Option<Field<String>>,
    pub typed_config: Option<Field<Value>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct HttpConnectionManager {
    #[serde(rename = "@type")]
    pub type_url: Option<Field<String>>,
    pub stat_prefix: Option<Field<String>>,
    pub codec_type: Option<Field<String>>,
    pub route_config: Option<Field<RouteConfiguration>>,
    pub http_filters: Option<List<TypedExtension>>,
    pub server_name: Option<Field<String>>,
    pub server_header_transformation: Option<Field<String>>,
    pub generate_request_id: Option<Field<bool>>,
    pub preserve_external_request_id: Option<Field<bool>>,
    pub always_set_request_id_in_response: Option<Field<bool>>,
    pub use_remote_address: Option<Field<bool>>,
    pub xff_num_trusted_hops: Option<Field<u32>>,
    pub skip_xff_append: Option<Field<bool>>,
    pub stream_idle_timeout: Option<Field<Value>>,
    pub request_timeout: Option<Field<Value>>,
    pub request_headers_timeout: Option<Field<Value>>,
    pub max_request_headers_kb: Option<Field<u32>>,
    pub common_http_protocol_options: Option<Field<HttpProtocolOptions>>,
    pub upgrade_configs: Option<List<UpgradeConfig>>,
    pub strip_any_host_port: Option<Field<bool>>,
    pub strip_matching_host_port: Option<Field<bool>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct HttpProtocolOptions {
    pub idle_timeout: Option<Field<Value>>,
    pub max_headers_count: Option<Field<u32>>,
    pub max_connection_duration: Option<Field<Value>>,
    pub max_stream_duration: Option<Field<Value>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct UpgradeConfig {
    pub upgrade_type: Option<Field<String>>,
    pub enabled: Option<Field<bool>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct DownstreamTlsContext {
    #[serde(rename = "@type")]
    pub type_url: Option<Field<String>>,
    pub common_tls_context: Option<Field<CommonTlsContext>>,
    pub require_client_certificate: Option<Field<bool>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct UpstreamTlsContext {
    #[serde(rename = "@type")]
    pub type_url: Option<Field<String>>,
    pub common_tls_context: Option<Field<CommonTlsContext>>,
    pub sni: Option<Field<String>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct CommonTlsContext {
    pub tls_certificates: Option<List<TlsCertificate>>,
    pub alpn_protocols: Option<List<String>>,
    pub validation_context: Option<Field<ValidationContext>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct TlsCertificate {
    pub certificate_chain: Option<Field<DataSource>>,
    pub private_key: Option<Field<DataSource>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct ValidationContext {
    pub trusted_ca: Option<Field<DataSource>>,
    #[serde(flatten)]
    pub other: Other,
}

/// Envoy's `DataSource`: exactly one of the three.
#[derive(Debug, Deserialize)]
pub struct DataSource {
    pub filename: Option<Field<String>>,
    pub inline_string: Option<Field<String>>,
    pub inline_bytes: Option<Field<String>>,
    #[serde(flatten)]
    pub other: Other,
}

/// `envoy.filters.network.connection_limit`.
#[derive(Debug, Deserialize)]
pub struct ConnectionLimit {
    #[serde(rename = "@type")]
    pub type_url: Option<Field<String>>,
    pub stat_prefix: Option<Field<String>>,
    pub max_connections: Option<Field<u64>>,
    #[serde(flatten)]
    pub other: Other,
}

/// `envoy.filters.http.buffer`.
#[derive(Debug, Deserialize)]
pub struct BufferFilter {
    #[serde(rename = "@type")]
    pub type_url: Option<Field<String>>,
    pub max_request_bytes: Option<Field<u32>>,
    #[serde(flatten)]
    pub other: Other,
}
