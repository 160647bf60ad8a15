//! Access loggers: HCM `access_log[]` and the logger configs it names.

use super::{DataSource, Field, HeaderMatcher, HeaderValueOption, List, Other};
use serde_yaml::Value;

mapping! {
    /// `envoy.config.accesslog.v3.AccessLog`.
    pub struct AccessLog {
        pub name: Option<Field<String>>,
        pub typed_config: Option<Field<Value>>,
        pub filter: Option<Field<AccessLogFilter>>,
    }
}

mapping! {
    /// `envoy.config.accesslog.v3.AccessLogFilter`: exactly one of these.
    pub struct AccessLogFilter {
        pub status_code_filter: Option<Field<ComparisonHolder>>,
        pub duration_filter: Option<Field<ComparisonHolder>>,
        pub not_health_check_filter: Option<Field<Value>>,
        pub traceable_filter: Option<Field<Value>>,
        pub runtime_filter: Option<Field<RuntimeFilter>>,
        pub and_filter: Option<Field<FilterList>>,
        pub or_filter: Option<Field<FilterList>>,
        pub header_filter: Option<Field<HeaderFilter>>,
        pub response_flag_filter: Option<Field<ResponseFlagFilter>>,
        pub grpc_status_filter: Option<Field<Value>>,
        pub extension_filter: Option<Field<Value>>,
        pub metadata_filter: Option<Field<Value>>,
        pub log_type_filter: Option<Field<Value>>,
    }
}

mapping! {
    /// `StatusCodeFilter` and `DurationFilter`: one `comparison`.
    pub struct ComparisonHolder {
        pub comparison: Option<Field<ComparisonFilter>>,
    }
}

mapping! {
    /// `envoy.config.accesslog.v3.ComparisonFilter`.
    pub struct ComparisonFilter {
        pub op: Option<Field<String>>,
        pub value: Option<Field<RuntimeUInt32>>,
    }
}

mapping! {
    /// `envoy.config.core.v3.RuntimeUInt32`.
    pub struct RuntimeUInt32 {
        pub default_value: Option<Field<u32>>,
        pub runtime_key: Option<Field<String>>,
    }
}

mapping! {
    /// `envoy.config.accesslog.v3.RuntimeFilter`.
    pub struct RuntimeFilter {
        pub runtime_key: Option<Field<String>>,
        pub percent_sampled: Option<Field<FractionalPercent>>,
        pub use_independent_randomness: Option<Field<bool>>,
    }
}

mapping! {
    /// `envoy.type.v3.FractionalPercent`.
    pub struct FractionalPercent {
        pub numerator: Option<Field<u32>>,
        pub denominator: Option<Field<String>>,
    }
}

mapping! {
    /// `AndFilter` and `OrFilter`.
    pub struct FilterList {
        pub filters: Option<List<AccessLogFilter>>,
    }
}

mapping! {
    /// `envoy.config.accesslog.v3.HeaderFilter`.
    pub struct HeaderFilter {
        pub header: Option<Field<HeaderMatcher>>,
    }
}

mapping! {
    /// `envoy.config.accesslog.v3.ResponseFlagFilter`.
    pub struct ResponseFlagFilter {
        pub flags: Option<List<String>>,
    }
}

mapping! {
    /// `envoy.extensions.access_loggers.file.v3.FileAccessLog`.
    pub struct FileAccessLog {
        #[serde(rename = "@type")]
        pub type_url: Option<Field<String>>,
        pub path: Option<Field<String>>,
        pub log_format: Option<Field<SubstitutionFormatString>>,
        /// Deprecated: a format string.
        pub format: Option<Field<String>>,
        /// Deprecated: a format dictionary.
        pub json_format: Option<Field<serde_yaml::Mapping>>,
        pub typed_json_format: Option<Field<Value>>,
    }
}

mapping! {
    /// `envoy.extensions.access_loggers.stream.v3.StdoutAccessLog` and `StderrAccessLog`.
    pub struct StreamAccessLog {
        #[serde(rename = "@type")]
        pub type_url: Option<Field<String>>,
        pub log_format: Option<Field<SubstitutionFormatString>>,
    }
}

mapping! {
    /// `envoy.config.core.v3.SubstitutionFormatString`.
    pub struct SubstitutionFormatString {
        pub text_format: Option<Field<String>>,
        pub text_format_source: Option<Field<DataSource>>,
        pub json_format: Option<Field<serde_yaml::Mapping>>,
        pub omit_empty_values: Option<Field<bool>>,
        pub content_type: Option<Field<String>>,
        pub formatters: Option<Field<Value>>,
        pub json_format_options: Option<Field<Value>>,
    }
}

mapping! {
    /// The connection manager's `local_reply_config` (`LocalReplyConfig`).
    pub struct LocalReplyConfig {
        pub mappers: Option<List<ResponseMapper>>,
        pub body_format: Option<Field<SubstitutionFormatString>>,
    }
}

mapping! {
    /// `ResponseMapper`: what a local reply the filter selects becomes.
    pub struct ResponseMapper {
        pub filter: Option<Field<AccessLogFilter>>,
        pub status_code: Option<Field<u32>>,
        pub body: Option<Field<DataSource>>,
        pub body_format_override: Option<Field<SubstitutionFormatString>>,
        pub headers_to_add: Option<List<HeaderValueOption>>,
    }
}
