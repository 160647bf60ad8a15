//! Raw route configuration: virtual hosts, routes, matches, actions.

use super::{DataSource, Field, List, Other, TypedExtension, UpgradeConfig};
use serde_yaml::Value;

mapping! {
    pub struct RouteConfiguration {
        pub name: Option<Field<String>>,
        pub virtual_hosts: Option<List<VirtualHost>>,
        pub request_headers_to_add: Option<List<HeaderValueOption>>,
        pub request_headers_to_remove: Option<List<String>>,
        pub response_headers_to_add: Option<List<HeaderValueOption>>,
        pub response_headers_to_remove: Option<List<String>>,
        pub ignore_port_in_host_matching: Option<Field<bool>>,
        pub internal_only_headers: Option<List<String>>,
    }
}

mapping! {
    pub struct VirtualHost {
        pub name: Option<Field<String>>,
        pub domains: Option<List<String>>,
        pub routes: Option<List<Route>>,
        pub require_tls: Option<Field<String>>,
        pub retry_policy: Option<Field<RetryPolicy>>,
        pub include_request_attempt_count: Option<Field<bool>>,
        pub include_attempt_count_in_response: Option<Field<bool>>,
        pub request_headers_to_add: Option<List<HeaderValueOption>>,
        pub request_headers_to_remove: Option<List<String>>,
        pub response_headers_to_add: Option<List<HeaderValueOption>>,
        pub response_headers_to_remove: Option<List<String>>,
    }
}

mapping! {
    pub struct HeaderValueOption {
        pub header: Option<Field<HeaderValue>>,
        #[wrapper(BoolValue)]
        pub append: Option<Field<bool>>,
        pub append_action: Option<Field<String>>,
        pub keep_empty_value: Option<Field<bool>>,
    }
}

mapping! {
    pub struct HeaderValue {
        pub key: Option<Field<String>>,
        pub value: Option<Field<String>>,
        pub raw_value: Option<Field<String>>,
    }
}

mapping! {
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
    }
}

mapping! {
    pub struct RouteMatch {
        pub prefix: Option<Field<String>>,
        pub path: Option<Field<String>>,
        pub safe_regex: Option<Field<RegexMatcher>>,
        pub path_separated_prefix: Option<Field<String>>,
        #[wrapper(BoolValue)]
        pub case_sensitive: Option<Field<bool>>,
        pub headers: Option<List<HeaderMatcher>>,
    }
}

mapping! {
    pub struct RegexMatcher {
        pub google_re2: Option<Field<Value>>,
        pub regex: Option<Field<String>>,
    }
}

mapping! {
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
    }
}

mapping! {
    pub struct StringMatcher {
        pub exact: Option<Field<String>>,
        pub prefix: Option<Field<String>>,
        pub suffix: Option<Field<String>>,
        pub contains: Option<Field<String>>,
        pub safe_regex: Option<Field<RegexMatcher>>,
        pub ignore_case: Option<Field<bool>>,
    }
}

mapping! {
    pub struct RouteAction {
        pub cluster: Option<Field<String>>,
        pub weighted_clusters: Option<Field<WeightedClusters>>,
        pub prefix_rewrite: Option<Field<String>>,
        pub regex_rewrite: Option<Field<RegexRewrite>>,
        pub host_rewrite_literal: Option<Field<String>>,
        #[wrapper(BoolValue)]
        pub auto_host_rewrite: Option<Field<bool>>,
        pub append_x_forwarded_host: Option<Field<bool>>,
        pub priority: Option<Field<String>>,
        pub timeout: Option<Field<Value>>,
        pub idle_timeout: Option<Field<Value>>,
        pub retry_policy: Option<Field<RetryPolicy>>,
        pub hash_policy: Option<List<HashPolicy>>,
        pub upgrade_configs: Option<List<UpgradeConfig>>,
        pub max_stream_duration: Option<Field<MaxStreamDuration>>,
    }
}

mapping! {
    /// `RouteAction.MaxStreamDuration`.
    pub struct MaxStreamDuration {
        pub max_stream_duration: Option<Field<Value>>,
        pub grpc_timeout_header_max: Option<Field<Value>>,
        pub grpc_timeout_header_offset: Option<Field<Value>>,
    }
}

mapping! {
    pub struct WeightedClusters {
        pub clusters: Option<List<ClusterWeight>>,
        #[wrapper(UInt32Value)]
        pub total_weight: Option<Field<u32>>,
    }
}

mapping! {
    pub struct ClusterWeight {
        pub name: Option<Field<String>>,
        #[wrapper(UInt32Value)]
        pub weight: Option<Field<u32>>,
    }
}

mapping! {
    pub struct RegexRewrite {
        pub pattern: Option<Field<RegexMatcher>>,
        pub substitution: Option<Field<String>>,
    }
}

mapping! {
    pub struct RetryPolicy {
        pub retry_on: Option<Field<String>>,
        #[wrapper(UInt32Value)]
        pub num_retries: Option<Field<u32>>,
        pub per_try_timeout: Option<Field<Value>>,
        pub retriable_status_codes: Option<List<u32>>,
        pub retry_host_predicate: Option<List<TypedExtension>>,
        pub host_selection_retry_max_attempts: Option<Field<u32>>,
        pub retry_back_off: Option<Field<RetryBackOff>>,
    }
}

mapping! {
    pub struct RetryBackOff {
        pub base_interval: Option<Field<Value>>,
        pub max_interval: Option<Field<Value>>,
    }
}

mapping! {
    pub struct HashPolicy {
        pub header: Option<Field<HashPolicyHeader>>,
        pub connection_properties: Option<Field<HashPolicyConnection>>,
        pub terminal: Option<Field<bool>>,
    }
}

mapping! {
    pub struct HashPolicyHeader {
        pub header_name: Option<Field<String>>,
    }
}

mapping! {
    pub struct HashPolicyConnection {
        pub source_ip: Option<Field<bool>>,
    }
}

mapping! {
    pub struct RedirectAction {
        pub https_redirect: Option<Field<bool>>,
        pub scheme_redirect: Option<Field<String>>,
        pub host_redirect: Option<Field<String>>,
        pub port_redirect: Option<Field<u32>>,
        pub path_redirect: Option<Field<String>>,
        pub prefix_rewrite: Option<Field<String>>,
        pub response_code: Option<Field<String>>,
        pub strip_query: Option<Field<bool>>,
    }
}

mapping! {
    pub struct DirectResponseAction {
        pub status: Option<Field<u32>>,
        pub body: Option<Field<DataSource>>,
    }
}
