//! Raw clusters: discovery, endpoints, DNS, load balancing and resilience.

use super::{Address, Field, List, Other, RetryBackOff, TypedExtension};
use serde_yaml::Value;

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
        pub unhealthy_threshold: Option<Field<u32>>,
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
        pub consecutive_5xx: Option<Field<u32>>,
        pub consecutive_gateway_failure: Option<Field<u32>>,
        pub interval: Option<Field<Value>>,
        pub base_ejection_time: Option<Field<Value>>,
        pub max_ejection_time: Option<Field<Value>>,
        pub max_ejection_percent: Option<Field<u32>>,
        pub enforcing_consecutive_5xx: Option<Field<u32>>,
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
        pub max_connections: Option<Field<u32>>,
        pub max_pending_requests: Option<Field<u32>>,
        pub max_requests: Option<Field<u32>>,
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
