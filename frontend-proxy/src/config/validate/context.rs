//! The collector threaded through validation ([`Ctx`]: errors and warnings
//! with their YAML paths, [`P`]) and the readers every part of the
//! bootstrap shares: fields, durations, enums, addresses, pipes, data
//! sources, and the policy tables for fields frontend-proxy does not
//! implement (ignored with a warning, default-only, not yet).

use super::super::duration;
use super::super::model::{Address, Pipe};
use super::super::raw::{self, Field, Keys, List};
use super::super::Diagnostic;
use crate::tls::{PemSource, Secret};
use serde_yaml::Value;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// A YAML path under construction.
#[derive(Clone, Debug)]
pub(super) struct P(pub(super) String);

impl P {
    pub(super) fn root() -> Self {
        P(String::new())
    }
    pub(super) fn key(&self, k: &str) -> P {
        if self.0.is_empty() {
            P(k.to_string())
        } else {
            P(format!("{}.{k}", self.0))
        }
    }
    pub(super) fn idx(&self, i: usize) -> P {
        P(format!("{}[{i}]", self.0))
    }
}

/// The collector threaded through validation.
#[derive(Default)]
pub(super) struct Ctx {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
    /// Clusters the file defines but validation rejected, by name, with
    /// their YAML path: a reference to one is not "unknown".
    pub rejected_clusters: HashMap<String, String>,
    /// `layered_runtime`'s static layers, with their paths: runtime layers
    /// are not read, so a key a filter names there is an error.
    pub static_runtime: Vec<(P, Value)>,
    /// `static_resources.secrets` by name (`None`: defined but rejected).
    pub secrets: HashMap<String, Option<Secret>>,
    /// Valid clusters that speak TLS to their hosts (a tcp_proxy cannot
    /// use them yet).
    pub tls_clusters: std::collections::HashSet<String>,
}

impl Ctx {
    pub fn error(&mut self, p: &P, message: impl Into<String>) {
        self.errors.push(Diagnostic { path: p.0.clone(), message: message.into() });
    }

    pub fn warn(&mut self, p: &P, message: impl Into<String>) {
        self.warnings.push(Diagnostic { path: p.0.clone(), message: message.into() });
    }

    /// A reference to a cluster that is not among the valid ones: says
    /// whether the file defines it (and it was rejected) or not at all.
    pub fn unknown_cluster(&mut self, p: &P, name: &str) {
        let message = match self.rejected_clusters.get(name) {
            Some(at) => format!("cluster {name:?} is defined at {at} but was rejected (see its errors)"),
            None => format!("unknown cluster {name:?}"),
        };
        self.error(p, message);
    }

    /// An optional field's value; an unreadable value is reported.
    pub fn opt<'a, T>(&mut self, p: &P, name: &str, f: &'a Option<Field<T>>) -> Option<&'a T> {
        match f {
            None => None,
            Some(Field::Ok(v)) => Some(v),
            Some(Field::Invalid(msg)) => {
                self.error(&p.key(name), msg.clone());
                None
            }
        }
    }

    /// A required field's value; a missing or unreadable value is reported.
    pub fn req<'a, T>(&mut self, p: &P, name: &str, f: &'a Option<Field<T>>) -> Option<&'a T> {
        if f.is_none() {
            self.error(&p.key(name), "required field is missing");
        }
        self.opt(p, name, f)
    }

    /// The readable entries of a list field, each with its path.
    pub fn list<'a, T>(&mut self, p: &P, name: &str, f: &'a Option<List<T>>) -> Vec<(P, &'a T)> {
        let lp = p.key(name);
        let Some(items) = self.opt(p, name, f) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Field::Ok(v) => out.push((lp.idx(i), v)),
                Field::Invalid(msg) => self.error(&lp.idx(i), msg.clone()),
            }
        }
        out
    }

    pub fn string(&mut self, p: &P, name: &str, f: &Option<Field<String>>) -> Option<String> {
        self.opt(p, name, f).cloned()
    }

    pub fn boolean(&mut self, p: &P, name: &str, f: &Option<Field<bool>>, default: bool) -> bool {
        self.opt(p, name, f).copied().unwrap_or(default)
    }

    pub fn duration(&mut self, p: &P, name: &str, f: &Option<Field<Value>>) -> Option<Duration> {
        let v = self.opt(p, name, f)?;
        match duration::parse(v) {
            Ok(d) => Some(d),
            Err(msg) => {
                self.error(&p.key(name), msg);
                None
            }
        }
    }

    /// An Envoy enum written as its name, in any case (as Envoy parses
    /// enums); errors list the canonical names.
    pub fn enumeration<T: Copy>(
        &mut self,
        p: &P,
        name: &str,
        f: &Option<Field<String>>,
        table: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(s) = self.opt(p, name, f) else {
            return default;
        };
        match table.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
            Some((_, v)) => *v,
            None => {
                let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
                self.error(&p.key(name), format!("unknown value {s:?}, expected one of {}", names.join(", ")));
                default
            }
        }
    }

    /// Judges the keys raw struct `raw` did not name: an Envoy field in
    /// `ignored` (one that cannot change what traffic does) is a warning,
    /// any other key an error, with the closest key `raw` reads as a hint.
    /// A `typed_config` (or other free-form value) read as `T`; a value of
    /// the wrong shape is an error at `p`.
    pub fn typed<T: serde::de::DeserializeOwned>(&mut self, p: &P, value: &serde_yaml::Value) -> Option<T> {
        match Field::<T>::from_value(value.clone()) {
            Field::Ok(v) => Some(v),
            Field::Invalid(msg) => {
                self.error(p, msg);
                None
            }
        }
    }

    pub fn other<T: Keys>(&mut self, p: &P, raw: &T, ignored: &[&str]) {
        for (key, value) in raw.other() {
            let refused = DEFAULT_ONLY.iter().find(|(k, is_default, _)| k == key && !is_default(value));
            if let Some((_, _, why)) = refused.filter(|_| ignored.contains(&key.as_str())) {
                self.error(&p.key(key), format!("{why}, so a value other than the default is refused"));
            } else if ignored.contains(&key.as_str()) {
                self.warn(
                    &p.key(key),
                    "ignored: frontend-proxy does not implement this field, and ignoring it does not change how requests are routed or answered",
                );
            } else if let Some((_, feature)) = NOT_YET.iter().find(|(k, _)| k == key) {
                self.error(&p.key(key), format!("{feature}: not supported yet, so the configuration is refused"));
            } else {
                let hint = suggestion(key, T::KEYS).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
                self.error(
                    &p.key(key),
                    format!("unknown or unsupported field{hint}; frontend-proxy would not honour it, so it refuses the configuration"),
                );
            }
        }
    }

    /// `{socket_address: {address, port_value}}` where the address must be an IP.
    pub fn ip_socket_address(&mut self, p: &P, name: &str, f: &Option<Field<raw::Address>>) -> Option<SocketAddr> {
        let ap = p.key(name);
        let addr = self.req(p, name, f)?;
        let (host, port) = self.socket_address(&ap, addr)?;
        match host.parse::<IpAddr>() {
            Ok(ip) => Some(SocketAddr::new(ip, port)),
            Err(_) => {
                self.error(
                    &ap.key("socket_address").key("address"),
                    format!("{host:?} is not an IP address (this address must be an IP, not a host name)"),
                );
                None
            }
        }
    }

    /// A listener's address: an IP `socket_address`, or a `pipe` (a Unix
    /// domain socket).
    pub fn listen_address(&mut self, p: &P, name: &str, f: &Option<Field<raw::Address>>) -> Option<Address> {
        let ap = p.key(name);
        let addr = self.req(p, name, f)?;
        if addr.pipe.is_none() {
            return self.ip_socket_address(p, name, f).map(Address::Ip);
        }
        self.other(&ap, addr, &[]);
        if addr.socket_address.is_some() {
            self.error(&ap, "socket_address and pipe are one of: set only one");
            return None;
        }
        let pp = ap.key("pipe");
        let pipe = self.opt(&ap, "pipe", &addr.pipe)?;
        self.pipe(&pp, pipe).map(|p| Address::Pipe(Arc::new(p)))
    }

    /// Envoy's `Pipe`, with the checks Envoy's `PipeInstance` makes.
    pub fn pipe(&mut self, p: &P, pipe: &raw::Pipe) -> Option<Pipe> {
        self.other(p, pipe, &[]);
        let path = self.req(p, "path", &pipe.path).cloned();
        let mode = match self.opt(p, "mode", &pipe.mode) {
            None => Some(0),
            Some(v) => match pipe_mode(v) {
                Some(m) if m <= 0o777 => Some(m),
                _ => {
                    self.error(
                        &p.key("mode"),
                        format!("{} is not a file mode: an integer of at most 0777 (511)", value_text(v)),
                    );
                    None
                }
            },
        };
        let path = path?;
        let pp = p.key("path");
        if path.is_empty() {
            self.error(&pp, "must not be empty");
            return None;
        }
        // `sun_path` holds 108 bytes, the last a NUL (Envoy's limit, abstract names included).
        if path.len() > MAX_PIPE_PATH {
            self.error(
                &pp,
                format!("{} bytes: longer than a Unix domain socket path may be ({MAX_PIPE_PATH} bytes)", path.len()),
            );
            return None;
        }
        let abstract_name = path.starts_with('@');
        if !abstract_name && path.contains('\0') {
            self.error(&pp, "a socket path cannot contain a NUL byte");
            return None;
        }
        let mode = mode?;
        if abstract_name && mode != 0 {
            self.error(&p.key("mode"), "an abstract socket (a path starting with @) has no file, so no mode");
            return None;
        }
        Some(Pipe { path, mode })
    }

    /// The host and port of an `Address`.
    pub fn socket_address(&mut self, p: &P, addr: &raw::Address) -> Option<(String, u16)> {
        self.other(p, addr, &[]);
        if addr.pipe.is_some() {
            self.error(
                &p.key("pipe"),
                "a pipe (Unix domain socket) address is supported on listeners and STATIC cluster endpoints only; this address must be a socket_address",
            );
            return None;
        }
        let sp = p.key("socket_address");
        let sa = self.req(p, "socket_address", &addr.socket_address)?;
        self.other(&sp, sa, &[]);
        // Read where it matters (a listener on `::`); elsewhere it is inert.
        let _ = self.opt(&sp, "ipv4_compat", &sa.ipv4_compat);
        self.enumeration(&sp, "protocol", &sa.protocol, &[("TCP", ())], ());
        let host = self.req(&sp, "address", &sa.address).cloned();
        let port = self.req(&sp, "port_value", &sa.port_value).copied();
        let port = match port.map(u16::try_from) {
            Some(Ok(p)) => Some(p),
            Some(Err(_)) => {
                self.error(&sp.key("port_value"), "must be at most 65535");
                None
            }
            None => None,
        };
        let host = host?;
        if host.is_empty() {
            self.error(&sp.key("address"), "must not be empty");
            return None;
        }
        Some((host, port?))
    }

    /// Envoy's `DataSource` (`filename` / `inline_string` / `inline_bytes`).
    pub fn data_source(&mut self, p: &P, ds: &raw::DataSource) -> Option<DataSourceValue> {
        self.other(p, ds, &[]);
        let file = self.string(p, "filename", &ds.filename);
        let inline = self.string(p, "inline_string", &ds.inline_string);
        let bytes = self.string(p, "inline_bytes", &ds.inline_bytes);
        let count = [file.is_some(), inline.is_some(), bytes.is_some()].iter().filter(|b| **b).count();
        if count != 1 {
            self.error(p, "exactly one of `filename`, `inline_string`, `inline_bytes` must be set");
            return None;
        }
        if let Some(f) = file {
            return Some(DataSourceValue::File(f));
        }
        if let Some(s) = inline {
            return Some(DataSourceValue::Inline(s.into_bytes()));
        }
        let b64 = bytes.unwrap_or_default();
        match decode_base64(&b64) {
            Some(b) => Some(DataSourceValue::Inline(b)),
            None => {
                self.error(&p.key("inline_bytes"), "not valid base64");
                None
            }
        }
    }

    pub fn pem_source(&mut self, p: &P, ds: &raw::DataSource) -> Option<PemSource> {
        match self.data_source(p, ds)? {
            DataSourceValue::File(f) => Some(PemSource::File(f.into())),
            DataSourceValue::Inline(b) => match String::from_utf8(b) {
                Ok(s) => Some(PemSource::Inline(s)),
                Err(_) => {
                    self.error(p, "PEM data must be text");
                    None
                }
            },
        }
    }
}

pub(super) enum DataSourceValue {
    File(String),
    Inline(Vec<u8>),
}

/// Envoy's `inline_bytes`: standard base64, padded or not; line breaks
/// (a YAML block) do not count.
pub(super) fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine;
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    LENIENT.decode(compact).ok()
}

/// The closest known field name, for typos (edit distance at most 2).
pub(super) fn suggestion<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::levenshtein(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Ignored fields that would change what traffic does at any value but
/// their default: the default is accepted (with the ignored-field
/// warning), anything else is an error naming the field.
type IsDefault = fn(&Value) -> bool;
const DEFAULT_ONLY: &[(&str, IsDefault, &str)] = &[
    (
        "max_requests_per_connection",
        |v| v.is_null() || v.as_u64() == Some(0),
        "a limit on requests per upstream connection is not supported yet",
    ),
    (
        "close_connections_on_host_health_failure",
        |v| v.as_bool() == Some(false),
        "closing a host's connections when it fails its health checks is not supported yet",
    ),
    ("per_host_thresholds", empty, "per-host circuit breaker thresholds are not supported yet"),
    ("retry_budget", Value::is_null, "retry budgets are not supported yet (max_retries applies)"),
    ("max_connection_pools", Value::is_null, "a limit on connection pools is not supported yet"),
    (
        "ignore_new_hosts_until_first_hc",
        |v| v.as_bool() == Some(false),
        "keeping new hosts out of load balancing until their first health check is not supported yet",
    ),
    ("request_headers_to_add", empty, "headers on health check requests are not supported yet"),
    ("request_headers_to_remove", empty, "headers on health check requests are not supported yet"),
    (
        "policy",
        |v| v.get("drop_overloads").is_none_or(empty),
        "`drop_overloads` (dropping a share of requests) is not supported",
    ),
    (
        "cluster_manager",
        |v| v.get("upstream_bind_config").is_none_or(Value::is_null),
        "`upstream_bind_config` (the upstream source address) is not supported",
    ),
];

/// An absent value, or an empty list or mapping.
fn empty(v: &Value) -> bool {
    v.is_null() || v.as_sequence().is_some_and(Vec::is_empty) || v.as_mapping().is_some_and(|m| m.is_empty())
}

/// Envoy fields that stand for a whole feature frontend-proxy does not
/// have yet: their error names the feature rather than the field.
const NOT_YET: &[(&str, &str)] = &[
    ("dynamic_resources", "xDS (dynamic configuration: LDS, CDS, ADS)"),
    ("cds_config", "xDS (dynamic configuration: CDS)"),
    ("lds_config", "xDS (dynamic configuration: LDS)"),
    ("eds_cluster_config", "EDS (endpoints from a control plane; use `load_assignment`)"),
    ("rds", "RDS (routes from a control plane; use `route_config`)"),
    ("lb_subset_config", "subset load balancing"),
    ("transport_socket_matches", "per-endpoint transport sockets"),
    ("cluster_type", "custom cluster types"),
    (
        "combined_validation_context",
        "a validation context combined with one from SDS (use `validation_context` or `validation_context_sds_secret_config`)",
    ),
    (
        "session_ticket_keys_sds_secret_config",
        "session ticket keys from SDS (secret discovery; use `session_ticket_keys`)",
    ),
];

/// The longest `pipe.path`: `sun_path` less its terminating NUL.
const MAX_PIPE_PATH: usize = 107;

/// `pipe.mode` as Envoy's YAML reader takes an integer: a leading `0`
/// makes it octal (`0600`), `0x` hexadecimal.
fn pipe_mode(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => {
            let s = s.trim();
            let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(hex) => (hex, 16),
                None if s.len() > 1 && s.starts_with('0') => (s.strip_prefix("0o").unwrap_or(&s[1..]), 8),
                None => (s, 10),
            };
            u32::from_str_radix(digits, radix).ok()
        }
        _ => None,
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        _ => serde_yaml::to_string(v).map(|s| s.trim_end().to_string()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos() {
        assert_eq!(suggestion("lb_polcy", &["lb_policy", "name"]), Some("lb_policy"));
        assert_eq!(suggestion("completely_else", &["lb_policy"]), None);
    }

    #[test]
    fn base64() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVs\n bG8").unwrap(), b"hello");
        assert!(decode_base64("a$b").is_none());
    }

    #[test]
    fn pipe_modes_read_as_envoy_reads_them() {
        let mode = |yaml: &str| pipe_mode(&serde_yaml::from_str(yaml).unwrap());
        assert_eq!(mode("0600"), Some(0o600));
        assert_eq!(mode("0o600"), Some(0o600));
        assert_eq!(mode("384"), Some(384));
        assert_eq!(mode("0x1ff"), Some(0o777));
        assert_eq!(mode("0"), Some(0));
        assert_eq!(mode("0800"), None);
        assert_eq!(mode("-1"), None);
        assert_eq!(mode("rw"), None);
    }
}
