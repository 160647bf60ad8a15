//! `/config_dump`: the bootstrap this process runs, as JSON in Envoy's
//! `envoy.admin.v3.ConfigDump` layout (bootstrap, static clusters, static
//! listeners).
//!
//! The configuration is static, so the bootstrap document `config::load`
//! validated at start is the running configuration. It is handed to the
//! admin interface as loaded (never read again: later edits to the file do
//! not show). Secrets are redacted the way Envoy does for sensitive
//! fields: inline key material becomes `[redacted]`, file names stay.

use serde_json::{json, Map, Value as Json};

/// Keys whose subtree holds secret material.
const SENSITIVE: &[&str] = &["private_key", "password", "session_ticket_keys", "hmac_secret", "secret"];
/// DataSource fields that carry the material itself.
const INLINE: &[&str] = &["inline_string", "inline_bytes"];
const REDACTED: &str = "[redacted]";

/// A YAML document JSON cannot hold (a mapping key that is not a string).
#[derive(Debug, thiserror::Error)]
#[error("cannot show the bootstrap as JSON: {0}")]
pub struct ConfigDumpError(#[from] serde_json::Error);

/// The dump of the bootstrap `document` (merge keys already applied).
pub fn render(document: &serde_yaml::Value) -> Result<Json, ConfigDumpError> {
    let mut bootstrap = serde_json::to_value(document)?;
    redact(&mut bootstrap, false);
    Ok(layout(bootstrap))
}

/// The dump when the bootstrap cannot be shown.
pub fn unavailable() -> Json {
    json!({ "configs": [] })
}

/// Replaces secret material below sensitive keys.
fn redact(value: &mut Json, sensitive: bool) {
    match value {
        Json::Object(map) => {
            for (key, v) in map.iter_mut() {
                let below = sensitive || SENSITIVE.contains(&key.as_str());
                let material = INLINE.contains(&key.as_str()) || (SENSITIVE.contains(&key.as_str()) && v.is_string());
                if below && material {
                    *v = Json::String(REDACTED.into());
                } else {
                    redact(v, below);
                }
            }
        }
        Json::Array(items) => items.iter_mut().for_each(|v| redact(v, sensitive)),
        _ => {}
    }
}

fn typed(type_url: &str, mut body: Json) -> Json {
    if let Json::Object(map) = &mut body {
        let mut out = Map::new();
        out.insert("@type".into(), Json::String(format!("type.googleapis.com/{type_url}")));
        out.append(map);
        return Json::Object(out);
    }
    body
}

fn layout(bootstrap: Json) -> Json {
    let resources = |kind: &str| -> Vec<Json> {
        bootstrap.pointer(&format!("/static_resources/{kind}")).and_then(Json::as_array).cloned().unwrap_or_default()
    };
    let clusters: Vec<Json> = resources("clusters")
        .into_iter()
        .map(|c| json!({ "cluster": typed("envoy.config.cluster.v3.Cluster", c) }))
        .collect();
    let listeners: Vec<Json> = resources("listeners")
        .into_iter()
        .map(|l| json!({ "listener": typed("envoy.config.listener.v3.Listener", l) }))
        .collect();
    json!({ "configs": [
        typed("envoy.admin.v3.BootstrapConfigDump", json!({ "bootstrap": bootstrap })),
        typed("envoy.admin.v3.ClustersConfigDump", json!({ "static_clusters": clusters })),
        typed("envoy.admin.v3.ListenersConfigDump", json!({ "static_listeners": listeners })),
    ]})
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOTSTRAP: &str = r#"
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 9901 } } }
static_resources:
  listeners:
  - name: https
    filter_chains:
    - transport_socket:
        typed_config:
          common_tls_context:
            tls_certificates:
            - certificate_chain: { inline_string: "CERT" }
              private_key: { inline_string: "-----BEGIN PRIVATE KEY-----SECRET" }
            - certificate_chain: { filename: /c.pem }
              private_key: { filename: /k.pem }
  clusters:
  - name: films
    type: STRICT_DNS
"#;

    #[test]
    fn dump_layout_and_redaction() {
        let dump = render(&serde_yaml::from_str(BOOTSTRAP).unwrap()).unwrap();
        let text = dump.to_string();
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("CERT"), "certificates are public");
        assert!(text.contains("/k.pem"), "file names stay");
        let configs = dump["configs"].as_array().unwrap();
        assert_eq!(configs[0]["@type"], "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump");
        let certs = &configs[0]["bootstrap"]["static_resources"]["listeners"][0]["filter_chains"][0]
            ["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificates"];
        assert_eq!(certs[0]["private_key"]["inline_string"], REDACTED);
        assert_eq!(configs[1]["static_clusters"][0]["cluster"]["name"], "films");
        assert_eq!(
            configs[1]["static_clusters"][0]["cluster"]["@type"],
            "type.googleapis.com/envoy.config.cluster.v3.Cluster"
        );
        assert_eq!(configs[2]["static_listeners"][0]["listener"]["name"], "https");
    }

    #[test]
    fn plain_string_secrets_are_redacted() {
        let mut v = json!({ "a": { "password": "hunter2", "other": "x" }, "list": [{ "hmac_secret": { "inline_bytes": "AAAA" } }] });
        redact(&mut v, false);
        assert_eq!(v["a"]["password"], REDACTED);
        assert_eq!(v["a"]["other"], "x");
        assert_eq!(v["list"][0]["hmac_secret"]["inline_bytes"], REDACTED);
    }

    #[test]
    fn a_document_json_cannot_hold_is_an_error() {
        let document: serde_yaml::Value = serde_yaml::from_str("{[1, 2]: x}").unwrap();
        assert!(render(&document).is_err());
    }
}
