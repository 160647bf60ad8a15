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

#[derive(Debug, Deserialize)]
pub struct RouteConfiguration {
    pub name: Option<Field<String>>,
    pub virtual_hosts: Option<List<VirtualHost>>,
    pub request_headers_to_add: Option<List<HeaderValueOption>>,
    pub request_headers_to_remove: Option<List<String>>,
    pub response_headers_to_add: Option<List<HeaderValueOption>>,
    pub response_headers_to_remove: Option<List<String>>,
    pub ignore_port_in_host_matching: Option<Field<bool>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct VirtualHost {
    pub name: Option<Field<String>>,
    pub domains: Option<List<String>>,
    pub routes: Option<List<Route>>,
    pub require_tls: Option<Field<String>>,
    pub retry_policy: Option<Field<RetryPolicy>>,
    pub request_headers_to_add: Option<List<HeaderValueOption>>,
    pub request_headers_to_remove: Option<List<String>>,
    pub response_headers_to_add: Option<List<HeaderValueOption>>,
    pub response_headers_to_remove: Option<List<String>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct HeaderValueOption {
    pub header: Option<Field<HeaderValue>>,
    pub append: Option<Field<bool>>,
    pub append_action: Option<Field<String>>,
    pub keep_empty_value: Option<Field<bool>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct HeaderValue {
    pub key: Option<Field<String>>,
    pub value: Option<Field<String>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct Route {
    pub name: Option<Field<String>>,
    #[serde(rename = "match")]
    pub matcher: Option<Field<RouteMatch>>,
    pub route: Option<Field<RouteAction>>,
    pub redirect: Option<Field<RedirectAction>>,
    pub direct_response: Option<Field<DirectResponseAction>>,
    pub request_headers_to_add: Option<List<HeaderValueOption>>,
    pub request_headers_to_remove: Option<List<String>>,
    pub response_headers_to_add: Option<List<HeaderValueOption>>,
    pub response_headers_to_remove: Option<List<String>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct RouteMatch {
    pub prefix: Option<Field<String>>,
    pub path: Option<Field<String>>,
    pub safe_regex: Option<Field<RegexMatcher>>,
    pub path_separated_prefix: Option<Field<String>>,
    pub case_sensitive: Option<Field<bool>>,
    pub headers: Option<List<HeaderMatcher>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct RegexMatcher {
    pub google_re2: Option<Field<Value>>,
    pub regex: Option<Field<String>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct HeaderMatcher {
    pub name: Option<Field<String>>,
    pub exact_match: Option<Field<String>>,
    pub prefix_match: Option<Field<String>>,
    pub suffix_match: Option<Field<String>>,
    pub contains_match: Option<Field<String>>,
    pub safe_regex_match: Option<Field<RegexMatcher>>,
    pub present_match: Option<Field<bool>>,
    pub string_match: Option<Field<StringMatcher>>,
    pub invert_match: Option<Field<bool>>,
    pub treat_missing_header_as_empty: Option<Field<bool>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct StringMatcher {
    pub exact: Option<Field<String>>,
    pub prefix: Option<Field<String>>,
    pub suffix: Option<Field<String>>,
    pub contains: Option<Field<String>>,
    pub safe_regex: Option<Field<RegexMatcher>>,
    pub ignore_case: Option<Field<bool>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct RouteAction {
    pub cluster: Option<Field<String>>,
    pub weighted_clusters: Option<Field<WeightedClusters>>,
    pub prefix_rewrite: Option<Field<String>>,
    pub regex_rewrite: Option<Field<RegexRewrite>>,
    pub host_rewrite_literal: Option<Field<String>>,
    pub auto_host_rewrite: Option<Field<bool>>,
    pub timeout: Option<Field<Value>>,
    pub idle_timeout: Option<Field<Value>>,
    pub retry_policy: Option<Field<RetryPolicy>>,
    pub hash_policy: Option<List<HashPolicy>>,
    pub upgrade_configs: Option<List<UpgradeConfig>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct WeightedClusters {
    pub clusters: Option<List<ClusterWeight>>,
    pub total_weight: Option<Field<u32>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct ClusterWeight {
    pub name: Option<Field<String>>,
    pub weight: Option<Field<u32>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct RegexRewrite {
    pub pattern: Option<Field<RegexMatcher>>,
    pub substitution: Option<Field<String>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct RetryPolicy {
    pub retry_on: Option<Field<String>>,
    pub num_retries: Option<Field<u32>>,
    pub per_try_timeout: Option<Field<Value>>,
    pub retriable_status_codes: Option<List<u32>>,
    pub retry_host_predicate: Option<List<TypedExtension>>,
    pub host_selection_retry_max_attempts: Option<Field<u32>>,
    pub retry_back_off: Option<Field<RetryBackOff>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct RetryBackOff {
    pub base_interval: Option<Field<Value>>,
    pub max_interval: Option<Field<Value>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct HashPolicy {
    pub header: Option<Field<HashPolicyHeader>>,
    pub connection_properties: Option<Field<HashPolicyConnection>>,
    pub terminal: Option<Field<bool>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct HashPolicyHeader {
    pub header_name: Option<Field<String>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct HashPolicyConnection {
    pub source_ip: Option<Field<bool>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct RedirectAction {
    pub https_redirect: Option<Field<bool>>,
    pub scheme_redirect: Option<Field<String>>,
    pub host_redirect: Option<Field<String>>,
    pub port_redirect: Option<Field<u32>>,
    pub path_redirect: Option<Field<String>>,
    pub prefix_rewrite: Option<Field<String>>,
    pub response_code: Option<Field<String>>,
    pub strip_query: Option<Field<bool>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct DirectResponseAction {
    pub status: Option<Field<u32>>,
    pub body: Option<Field<DataSource>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct Cluster {
    pub name: Option<Field<String>>,
    #[serde(rename = "type")]
    pub discovery_type: Option<Field<String>>,
    pub connect_timeout: Option<Field<Value>>,
    pub lb_policy: Option<Field<String>>,
    pub load_assignment: Option<Field<ClusterLoadAssignment>>,
    pub dns_refresh_rate: Option<Field<Value>>,
    pub dns_failure_refresh_rate: Option<Field<RetryBackOff>>,
    pub respect_dns_ttl: Option<Field<bool>>,
    pub dns_lookup_family: Option<Field<String>>,
    pub typed_dns_resolver_config: Option<Field<TypedExtension>>,
    pub dns_resolvers: Option<List<Address>>,
    pub dns_resolution_config: Option<Field<DnsResolutionConfig>>,
    pub transport_socket: Option<Field<TypedExtension>>,
    pub health_checks: Option<List<HealthCheck>>,
    pub outlier_detection: Option<Field<OutlierDetection>>,
    pub circuit_breakers: Option<Field<CircuitBreakers>>,
    pub common_lb_config: Option<Field<CommonLbConfig>>,
    pub ring_hash_lb_config: Option<Field<Value>>,
    pub maglev_lb_config: Option<Field<Value>>,
    pub least_request_lb_config: Option<Field<LeastRequestLbConfig>>,
    pub ignore_health_on_host_removal: Option<Field<bool>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct ClusterLoadAssignment {
    pub cluster_name: Option<Field<String>>,
    pub endpoints: Option<List<LocalityLbEndpoints>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct LocalityLbEndpoints {
    pub lb_endpoints: Option<List<LbEndpoint>>,
    pub priority: Option<Field<u32>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct LbEndpoint {
    pub endpoint: Option<Field<Endpoint>>,
    pub load_balancing_weight: Option<Field<u32>>,
    pub health_status: Option<Field<String>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct Endpoint {
    pub address: Option<Field<Address>>,
    pub hostname: Option<Field<String>>,
    pub health_check_config: Option<Field<EndpointHealthCheckConfig>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct DnsResolutionConfig {
    pub resolvers: Option<List<Address>>,
    #[serde(flatten)]
    pub other: Other,
}

/// `CaresDnsResolverConfig`, the typed config of `envoy.network.dns_resolver.cares`.
#[derive(Debug, Deserialize)]
pub struct CaresDnsResolverConfig {
    #[serde(rename = "@type")]
    pub type_url: Option<Field<String>>,
    pub resolvers: Option<List<Address>>,
    pub use_resolvers_as_fallback: Option<Field<bool>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct LeastRequestLbConfig {
    pub choice_count: Option<Field<u32>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct EndpointHealthCheckConfig {
    pub port_value: Option<Field<u32>>,
    pub hostname: Option<Field<String>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct HealthCheck {
    pub timeout: Option<Field<Value>>,
    pub interval: Option<Field<Value>>,
    pub unhealthy_threshold: Option<Field<u32>>,
    pub healthy_threshold: Option<Field<u32>>,
    pub no_traffic_interval: Option<Field<Value>>,
    pub unhealthy_interval: Option<Field<Value>>,
    pub interval_jitter: Option<Field<Value>>,
    pub http_health_check: Option<Field<HttpHealthCheck>>,
    pub tcp_health_check: Option<Field<Value>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct HttpHealthCheck {
    pub path: Option<Field<String>>,
    pub host: Option<Field<String>>,
    pub expected_statuses: Option<List<Int64Range>>,
    #[serde(flatten)]
    pub other: Other,
}

/// `[start, end)`, as Envoy's `type.v3.Int64Range`.
#[derive(Debug, Deserialize)]
pub struct Int64Range {
    pub start: Option<Field<i64>>,
    pub end: Option<Field<i64>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct OutlierDetection {
    pub consecutive_5xx: Option<Field<u32>>,
    pub consecutive_gateway_failure: Option<Field<u32>>,
    pub interval: Option<Field<Value>>,
    pub base_ejection_time: Option<Field<Value>>,
    pub max_ejection_time: Option<Field<Value>>,
    pub max_ejection_percent: Option<Field<u32>>,
    pub enforcing_consecutive_5xx: Option<Field<u32>>,
    pub enforcing_consecutive_gateway_failure: Option<Field<u32>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct CircuitBreakers {
    pub thresholds: Option<List<Thresholds>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct Thresholds {
    pub priority: Option<Field<String>>,
    pub max_connections: Option<Field<u32>>,
    pub max_pending_requests: Option<Field<u32>>,
    pub max_requests: Option<Field<u32>>,
    pub max_retries: Option<Field<u32>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct CommonLbConfig {
    pub healthy_panic_threshold: Option<Field<Percent>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct Percent {
    pub value: Option<Field<f64>>,
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
