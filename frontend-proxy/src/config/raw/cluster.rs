//! Raw clusters: discovery, endpoints, DNS, load balancing and resilience.

use super::{Address, Field, HttpProtocolOptions, List, Other, RetryBackOff, TypedExtension};
use serde_yaml::Value;
use std::collections::BTreeMap;

mapping! {
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
        pub upstream_connection_options: Option<Field<UpstreamConnectionOptions>>,
        pub least_request_lb_config: Option<Field<LeastRequestLbConfig>>,
        pub ignore_health_on_host_removal: Option<Field<bool>>,
        /// Keyed by extension name; `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`
        /// is read as [`UpstreamHttpProtocolOptions`].
        pub typed_extension_protocol_options: Option<Field<BTreeMap<String, Value>>>,
        /// Deprecated cluster-level protocol fields (before `typed_extension_protocol_options`).
        pub http2_protocol_options: Option<Field<Http2ProtocolOptions>>,
        pub http_protocol_options: Option<Field<Http1ProtocolOptions>>,
        pub common_http_protocol_options: Option<Field<HttpProtocolOptions>>,
        pub upstream_http_protocol_options: Option<Field<Value>>,
        pub protocol_selection: Option<Field<String>>,
    }
}

mapping! {
    /// `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`.
    pub struct UpstreamHttpProtocolOptions {
        #[serde(rename = "@type")]
        pub type_url: Option<Field<String>>,
        pub common_http_protocol_options: Option<Field<HttpProtocolOptions>>,
        pub upstream_http_protocol_options: Option<Field<Value>>,
        pub explicit_http_config: Option<Field<ProtocolConfig>>,
        pub use_downstream_protocol_config: Option<Field<ProtocolConfig>>,
        pub auto_config: Option<Field<ProtocolConfig>>,
    }
}

mapping! {
    /// `explicit_http_config`, `use_downstream_protocol_config` and `auto_config`.
    pub struct ProtocolConfig {
        pub http_protocol_options: Option<Field<Http1ProtocolOptions>>,
        pub http2_protocol_options: Option<Field<Http2ProtocolOptions>>,
        pub http3_protocol_options: Option<Field<Value>>,
        pub alternate_protocols_cache_options: Option<Field<Value>>,
    }
}

mapping! {
    /// `config.core.v3.Http1ProtocolOptions`: judged key by key (none changes
    /// an upstream connection in a way frontend-proxy implements).
    pub struct Http1ProtocolOptions {
    }
}

mapping! {
    /// `config.core.v3.Http2ProtocolOptions`, the fields that change an
    /// upstream connection; the flood limits and codec choices are judged
    /// from `other`.
    pub struct Http2ProtocolOptions {
        pub hpack_table_size: Option<Field<u32>>,
        pub max_concurrent_streams: Option<Field<u32>>,
        pub initial_stream_window_size: Option<Field<u32>>,
        pub initial_connection_window_size: Option<Field<u32>>,
        pub allow_connect: Option<Field<bool>>,
        pub allow_metadata: Option<Field<bool>>,
        pub connection_keepalive: Option<Field<KeepaliveSettings>>,
    }
}

mapping! {
    pub struct KeepaliveSettings {
        pub interval: Option<Field<Value>>,
        pub timeout: Option<Field<Value>>,
        pub interval_jitter: Option<Field<Percent>>,
        pub connection_idle_interval: Option<Field<Value>>,
    }
}

mapping! {
    pub struct UpstreamConnectionOptions {
        pub tcp_keepalive: Option<Field<TcpKeepalive>>,
    }
}

mapping! {
    /// Envoy's `TcpKeepalive`: unset values are the system's.
    pub struct TcpKeepalive {
        pub keepalive_probes: Option<Field<u32>>,
        pub keepalive_time: Option<Field<u32>>,
        pub keepalive_interval: Option<Field<u32>>,
    }
}

mapping! {
    pub struct ClusterLoadAssignment {
        pub cluster_name: Option<Field<String>>,
        pub endpoints: Option<List<LocalityLbEndpoints>>,
    }
}

mapping! {
    pub struct LocalityLbEndpoints {
        pub lb_endpoints: Option<List<LbEndpoint>>,
        pub priority: Option<Field<u32>>,
    }
}

mapping! {
    pub struct LbEndpoint {
        pub endpoint: Option<Field<Endpoint>>,
        #[wrapper(UInt32Value)]
        pub load_balancing_weight: Option<Field<u32>>,
        pub health_status: Option<Field<String>>,
    }
}

mapping! {
    pub struct Endpoint {
        pub address: Option<Field<Address>>,
        pub hostname: Option<Field<String>>,
        pub health_check_config: Option<Field<EndpointHealthCheckConfig>>,
    }
}

mapping! {
    pub struct DnsResolutionConfig {
        pub resolvers: Option<List<Address>>,
    }
}

mapping! {
    /// `CaresDnsResolverConfig`, the typed config of `envoy.network.dns_resolver.cares`.
    pub struct CaresDnsResolverConfig {
        #[serde(rename = "@type")]
        pub type_url: Option<Field<String>>,
        pub resolvers: Option<List<Address>>,
        pub use_resolvers_as_fallback: Option<Field<bool>>,
    }
}

mapping! {
    pub struct LeastRequestLbConfig {
        #[wrapper(UInt32Value)]
        pub choice_count: Option<Field<u32>>,
    }
}

mapping! {
    pub struct EndpointHealthCheckConfig {
        pub port_value: Option<Field<u32>>,
        pub hostname: Option<Field<String>>,
    }
}

mapping! {
    pub struct HealthCheck {
        pub timeout: Option<Field<Value>>,
        pub interval: Option<Field<Value>>,
        #[wrapper(UInt32Value)]
        pub unhealthy_threshold: Option<Field<u32>>,
        #[wrapper(UInt32Value)]
        pub healthy_threshold: Option<Field<u32>>,
        pub no_traffic_interval: Option<Field<Value>>,
        pub no_traffic_healthy_interval: Option<Field<Value>>,
        pub unhealthy_interval: Option<Field<Value>>,
        pub unhealthy_edge_interval: Option<Field<Value>>,
        pub healthy_edge_interval: Option<Field<Value>>,
        pub initial_jitter: Option<Field<Value>>,
        pub interval_jitter: Option<Field<Value>>,
        pub interval_jitter_percent: Option<Field<u32>>,
        pub http_health_check: Option<Field<HttpHealthCheck>>,
        pub tcp_health_check: Option<Field<Value>>,
    }
}

mapping! {
    pub struct HttpHealthCheck {
        pub path: Option<Field<String>>,
        pub host: Option<Field<String>>,
        pub expected_statuses: Option<List<Int64Range>>,
    }
}

mapping! {
    /// `[start, end)`, as Envoy's `type.v3.Int64Range`.
    pub struct Int64Range {
        pub start: Option<Field<i64>>,
        pub end: Option<Field<i64>>,
    }
}

mapping! {
    pub struct OutlierDetection {
        #[wrapper(UInt32Value)]
        pub consecutive_5xx: Option<Field<u32>>,
        #[wrapper(UInt32Value)]
        pub consecutive_gateway_failure: Option<Field<u32>>,
        pub interval: Option<Field<Value>>,
        pub base_ejection_time: Option<Field<Value>>,
        pub max_ejection_time: Option<Field<Value>>,
        #[wrapper(UInt32Value)]
        pub max_ejection_percent: Option<Field<u32>>,
        #[wrapper(UInt32Value)]
        pub enforcing_consecutive_5xx: Option<Field<u32>>,
        #[wrapper(UInt32Value)]
        pub enforcing_consecutive_gateway_failure: Option<Field<u32>>,
    }
}

mapping! {
    pub struct CircuitBreakers {
        pub thresholds: Option<List<Thresholds>>,
    }
}

mapping! {
    pub struct Thresholds {
        pub priority: Option<Field<String>>,
        #[wrapper(UInt32Value)]
        pub max_connections: Option<Field<u32>>,
        #[wrapper(UInt32Value)]
        pub max_pending_requests: Option<Field<u32>>,
        #[wrapper(UInt32Value)]
        pub max_requests: Option<Field<u32>>,
        #[wrapper(UInt32Value)]
        pub max_retries: Option<Field<u32>>,
    }
}

mapping! {
    pub struct CommonLbConfig {
        pub healthy_panic_threshold: Option<Field<Percent>>,
    }
}

mapping! {
    pub struct Percent {
        pub value: Option<Field<f64>>,
    }
}
