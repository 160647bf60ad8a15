//! Raw secrets: `static_resources.secrets`, the `SdsSecretConfig` that
//! names one, and the file an SDS `path_config_source` reads them from.

use super::{Field, List, Other, TlsCertificate, ValidationContext};
use serde_yaml::Value;

mapping! {
    /// `envoy.extensions.transport_sockets.tls.v3.Secret`.
    pub struct Secret {
        #[serde(rename = "@type")]
        pub type_url: Option<Field<String>>,
        pub name: Option<Field<String>>,
        pub tls_certificate: Option<Field<TlsCertificate>>,
        pub validation_context: Option<Field<ValidationContext>>,
        pub session_ticket_keys: Option<Field<Value>>,
        pub generic_secret: Option<Field<Value>>,
    }
}

mapping! {
    /// `SdsSecretConfig`: a secret by name, from `static_resources.secrets`
    /// (no `sds_config`) or from a config source.
    pub struct SdsSecretConfig {
        pub name: Option<Field<String>>,
        pub sds_config: Option<Field<ConfigSource>>,
    }
}

mapping! {
    /// `envoy.config.core.v3.ConfigSource`, as an SDS secret's source.
    pub struct ConfigSource {
        /// The deprecated form of `path_config_source.path`.
        pub path: Option<Field<String>>,
        pub path_config_source: Option<Field<PathConfigSource>>,
        pub resource_api_version: Option<Field<String>>,
        pub initial_fetch_timeout: Option<Field<Value>>,
        pub api_config_source: Option<Field<Value>>,
        pub ads: Option<Field<Value>>,
        #[serde(rename = "self")]
        pub self_source: Option<Field<Value>>,
        pub authorities: Option<Field<Value>>,
    }
}

mapping! {
    pub struct PathConfigSource {
        pub path: Option<Field<String>>,
        pub watched_directory: Option<Field<WatchedDirectory>>,
    }
}

mapping! {
    pub struct WatchedDirectory {
        pub path: Option<Field<String>>,
    }
}

mapping! {
    /// What an SDS file holds: a `DiscoveryResponse`, of which only the
    /// resources matter.
    pub struct SecretFile {
        pub resources: Option<List<Secret>>,
        pub version_info: Option<Field<Value>>,
        pub type_url: Option<Field<String>>,
        pub nonce: Option<Field<Value>>,
    }
}
