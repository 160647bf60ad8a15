//! Access loggers: HCM `access_log[]` and the logger configs it names.

use super::{DataSource, Field, Other};
use serde_yaml::Value;

mapping! {
    /// `envoy.config.accesslog.v3.AccessLog`.
    pub struct AccessLog {
        pub name: Option<Field<String>>,
        pub typed_config: Option<Field<Value>>,
        pub filter: Option<Field<Value>>,
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
