//! A cluster's upstream HTTP protocol: `typed_extension_protocol_options`
//! (`envoy.extensions.upstreams.http.v3.HttpProtocolOptions`), or the
//! deprecated cluster fields it replaced (`http2_protocol_options`,
//! `http_protocol_options`, `common_http_protocol_options`,
//! `protocol_selection`). Envoy refuses a cluster that mixes the two.

use super::{Ctx, P};
use crate::config::raw;
use crate::upstream::{Http2Settings, UpstreamCodec, UpstreamHttp};
use std::time::Duration;

const HTTP_OPTIONS_NAME: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// The extension's qualified name, which Envoy takes as a key too.
const HTTP_OPTIONS_EXTENSION: &str = "envoy.upstreams.http.http_protocol_options";
const HTTP_OPTIONS_TYPE: &str = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// Pingora's HTTP/2 client waits this long for a PING's answer.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Envoy's bounds on the HTTP/2 flow-control windows.
const WINDOW_MIN: u32 = 65_535;
const WINDOW_MAX: u32 = 2_147_483_647;

/// HTTP/2 fields that bound what a misbehaving peer may send (flood
/// protection) or pick Envoy's codec implementation: the upstream is trusted
/// and Pingora's codec has its own limits, so ignoring them changes no answer.
const HTTP2_IGNORED: &[&str] = &[
    "max_outbound_frames",
    "max_outbound_control_frames",
    "max_consecutive_inbound_frames_with_empty_payload",
    "max_inbound_priority_frames_per_stream",
    "max_inbound_window_update_frames_per_data_frame_sent",
    "stream_error_on_invalid_http_messaging",
    "override_stream_error_on_invalid_http_message",
    "use_oghttp2_codec",
];

/// HTTP/1 fields that apply to connections a client opens (a server
/// codec's settings): they do nothing on an upstream connection.
const HTTP1_IGNORED: &[&str] = &[
    "allow_absolute_url",
    "accept_http_10",
    "default_host_for_http_10",
    "allow_custom_methods",
    "override_stream_error_on_invalid_http_message",
    "ignore_http_11_upgrade",
];

/// The cluster's upstream protocol; `tls`: the cluster has a TLS transport socket.
pub(super) fn upstream_http(cx: &mut Ctx, p: &P, c: &raw::Cluster, tls: bool) -> UpstreamHttp {
    let deprecated = [
        ("http2_protocol_options", c.http2_protocol_options.is_some()),
        ("http_protocol_options", c.http_protocol_options.is_some()),
        ("common_http_protocol_options", c.common_http_protocol_options.is_some()),
        ("upstream_http_protocol_options", c.upstream_http_protocol_options.is_some()),
        ("protocol_selection", c.protocol_selection.is_some()),
    ];
    match cx.opt(p, "typed_extension_protocol_options", &c.typed_extension_protocol_options) {
        Some(map) => {
            let tp = p.key("typed_extension_protocol_options");
            for (name, _) in deprecated.iter().filter(|(_, set)| *set) {
                cx.error(
                    &p.key(name),
                    "cannot be set beside typed_extension_protocol_options (set it in HttpProtocolOptions)",
                );
            }
            let mut http = UpstreamHttp::default();
            for (key, value) in map {
                let kp = tp.key(key);
                // As Envoy: the value's `@type` picks the extension, else the key does.
                let type_url = value.get("@type").and_then(|t| t.as_str());
                if type_url != Some(HTTP_OPTIONS_TYPE) && key != HTTP_OPTIONS_NAME && key != HTTP_OPTIONS_EXTENSION {
                    cx.error(&kp, format!("protocol options {key:?} are not supported (only {HTTP_OPTIONS_NAME} is)"));
                    continue;
                }
                if let Some(o) = cx.typed::<raw::UpstreamHttpProtocolOptions>(&kp, value) {
                    http = http_protocol_options(cx, &kp, &o, tls);
                }
            }
            http
        }
        None => deprecated_fields(cx, p, c),
    }
}

/// `HttpProtocolOptions`: exactly one of the three protocol choices.
fn http_protocol_options(cx: &mut Ctx, p: &P, o: &raw::UpstreamHttpProtocolOptions, tls: bool) -> UpstreamHttp {
    cx.other(p, o, &[]);
    if cx.opt(p, "@type", &o.type_url).is_some_and(|t| t != HTTP_OPTIONS_TYPE) {
        cx.error(&p.key("@type"), format!("expected {HTTP_OPTIONS_TYPE}"));
    }
    if o.upstream_http_protocol_options.is_some() {
        upstream_http_protocol_options(cx, p);
    }
    let idle_timeout = common_options(cx, p, &o.common_http_protocol_options);
    let choices = [
        ("explicit_http_config", &o.explicit_http_config),
        ("use_downstream_protocol_config", &o.use_downstream_protocol_config),
        ("auto_config", &o.auto_config),
    ];
    let set: Vec<_> = choices.iter().filter(|(_, f)| f.is_some()).collect();
    let mut http = UpstreamHttp { idle_timeout, ..UpstreamHttp::default() };
    let [(name, f)] = set.as_slice() else {
        cx.error(p, "exactly one of explicit_http_config, use_downstream_protocol_config, auto_config must be set");
        return http;
    };
    let cp = p.key(name);
    let Some(config) = cx.opt(p, name, f) else { return http };
    cx.other(&cp, config, &[]);
    if config.http3_protocol_options.is_some() {
        cx.error(&cp.key("http3_protocol_options"), "upstream HTTP/3 is not supported");
    }
    if config.alternate_protocols_cache_options.is_some() {
        cx.error(&cp.key("alternate_protocols_cache_options"), "alternate protocols (HTTP/3) are not supported");
    }
    if let Some(h1) = cx.opt(&cp, "http_protocol_options", &config.http_protocol_options) {
        http1_options(cx, &cp.key("http_protocol_options"), h1);
    }
    let h2 = cx.opt(&cp, "http2_protocol_options", &config.http2_protocol_options);
    if let Some(h2) = h2 {
        http.http2 = http2_options(cx, &cp.key("http2_protocol_options"), h2);
    }
    http.codec = match *name {
        "explicit_http_config" => {
            let one_of =
                [config.http_protocol_options.is_some(), h2.is_some(), config.http3_protocol_options.is_some()];
            if one_of.iter().filter(|s| **s).count() != 1 {
                cx.error(
                    &cp,
                    "exactly one of http_protocol_options, http2_protocol_options, http3_protocol_options must be set",
                );
            }
            if h2.is_some() {
                UpstreamCodec::Http2
            } else {
                UpstreamCodec::Http1
            }
        }
        "auto_config" => {
            // As Envoy: choosing by ALPN needs a transport socket that has it.
            if !tls {
                cx.error(
                    &cp,
                    "auto_config chooses the protocol by ALPN and needs a TLS transport_socket on the cluster (use explicit_http_config for plain text)",
                );
            }
            UpstreamCodec::Alpn
        }
        // As Envoy: h2 for a client's h2 only when HTTP/2 options are given.
        _ if h2.is_some() => UpstreamCodec::Downstream,
        _ => UpstreamCodec::Http1,
    };
    http
}

/// The cluster fields `HttpProtocolOptions` replaced.
fn deprecated_fields(cx: &mut Ctx, p: &P, c: &raw::Cluster) -> UpstreamHttp {
    let mut http =
        UpstreamHttp { idle_timeout: common_options(cx, p, &c.common_http_protocol_options), ..Default::default() };
    if c.upstream_http_protocol_options.is_some() {
        upstream_http_protocol_options(cx, p);
    }
    if let Some(h1) = cx.opt(p, "http_protocol_options", &c.http_protocol_options) {
        http1_options(cx, &p.key("http_protocol_options"), h1);
    }
    let h2 = cx.opt(p, "http2_protocol_options", &c.http2_protocol_options);
    if let Some(h2) = h2 {
        http.http2 = http2_options(cx, &p.key("http2_protocol_options"), h2);
    }
    let downstream = cx.enumeration(
        p,
        "protocol_selection",
        &c.protocol_selection,
        &[("USE_CONFIGURED_PROTOCOL", false), ("USE_DOWNSTREAM_PROTOCOL", true)],
        false,
    );
    // As Envoy: USE_DOWNSTREAM_PROTOCOL speaks h2 to a client's h2 only
    // when the cluster has HTTP/2 options.
    http.codec = match (h2.is_some(), downstream) {
        (true, true) => UpstreamCodec::Downstream,
        (true, false) => UpstreamCodec::Http2,
        (false, _) => UpstreamCodec::Http1,
    };
    http
}

fn upstream_http_protocol_options(cx: &mut Ctx, p: &P) {
    cx.error(
        &p.key("upstream_http_protocol_options"),
        "not supported (auto_sni and auto_san_validation: set the cluster's sni in its transport_socket)",
    );
}

/// `common_http_protocol_options` of upstream connections: the idle timeout
/// (0 disables it); the per-connection limits are not implemented upstream.
fn common_options(cx: &mut Ctx, p: &P, f: &Option<raw::Field<raw::HttpProtocolOptions>>) -> Option<Duration> {
    let default = UpstreamHttp::default().idle_timeout;
    let Some(o) = cx.opt(p, "common_http_protocol_options", f) else { return default };
    let op = p.key("common_http_protocol_options");
    cx.other(&op, o, &[]);
    let unsupported = [
        ("max_headers_count", o.max_headers_count.is_some()),
        ("headers_with_underscores_action", o.headers_with_underscores_action.is_some()),
        ("max_requests_per_connection", o.max_requests_per_connection.is_some()),
        ("max_connection_duration", o.max_connection_duration.is_some()),
        ("max_stream_duration", o.max_stream_duration.is_some()),
    ];
    for (name, _) in unsupported.iter().filter(|(_, set)| *set) {
        cx.error(&op.key(name), "not supported on upstream connections");
    }
    match cx.duration(&op, "idle_timeout", &o.idle_timeout) {
        Some(t) => (!t.is_zero()).then_some(t),
        None => default,
    }
}

fn http1_options(cx: &mut Ctx, p: &P, o: &raw::Http1ProtocolOptions) {
    for key in o.other.keys() {
        if HTTP1_IGNORED.contains(&key.as_str()) {
            cx.warn(&p.key(key), "ignored: it applies to connections from clients, not to upstream connections");
        } else {
            cx.error(&p.key(key), "not supported on upstream HTTP/1.1 connections");
        }
    }
}

fn http2_options(cx: &mut Ctx, p: &P, o: &raw::Http2ProtocolOptions) -> Http2Settings {
    cx.other(p, o, HTTP2_IGNORED);
    let mut s = Http2Settings::default();
    if let Some(n) = cx.opt(p, "max_concurrent_streams", &o.max_concurrent_streams) {
        if *n == 0 || *n > WINDOW_MAX {
            cx.error(&p.key("max_concurrent_streams"), "must be between 1 and 2147483647");
        }
        s.max_concurrent_streams = *n;
    }
    for (name, f, slot) in [
        ("initial_stream_window_size", &o.initial_stream_window_size, &mut s.initial_stream_window_size),
        ("initial_connection_window_size", &o.initial_connection_window_size, &mut s.initial_connection_window_size),
    ] {
        if let Some(n) = cx.opt(p, name, f) {
            if !(WINDOW_MIN..=WINDOW_MAX).contains(n) {
                cx.error(&p.key(name), format!("must be between {WINDOW_MIN} and {WINDOW_MAX}"));
            }
            *slot = Some(*n);
        }
    }
    if cx.opt(p, "hpack_table_size", &o.hpack_table_size).is_some_and(|n| *n != 4096) {
        cx.error(
            &p.key("hpack_table_size"),
            "only the default 4096 is supported (the upstream HTTP/2 client's table size is fixed)",
        );
    }
    for (name, f) in [("allow_connect", &o.allow_connect), ("allow_metadata", &o.allow_metadata)] {
        if cx.boolean(p, name, f, false) {
            cx.error(&p.key(name), "not supported on upstream connections");
        }
    }
    if let Some(k) = cx.opt(p, "connection_keepalive", &o.connection_keepalive) {
        let kp = p.key("connection_keepalive");
        cx.other(&kp, k, &[]);
        s.ping_interval = cx.duration(&kp, "interval", &k.interval).filter(|d| !d.is_zero());
        match cx.duration(&kp, "timeout", &k.timeout) {
            Some(t) if t == PING_TIMEOUT => {}
            Some(_) => cx.error(
                &kp.key("timeout"),
                "only 5s is supported (the upstream HTTP/2 client waits 5 s for a PING's answer)",
            ),
            None => cx.error(&kp.key("timeout"), "required"),
        }
        if k.interval_jitter.is_some() {
            cx.warn(&kp.key("interval_jitter"), "ignored: PINGs are sent at exactly `interval`");
        }
        if k.connection_idle_interval.is_some() {
            cx.error(&kp.key("connection_idle_interval"), "not supported");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use crate::upstream::{Http2Settings, UpstreamCodec, UpstreamHttp};
    use std::time::Duration;

    /// The protocol of the one cluster `cluster_yaml` (keys at cluster level) describes.
    fn http(cluster_yaml: &str) -> UpstreamHttp {
        let text = format!(
            "static_resources:\n  clusters:\n  - name: c\n    type: STATIC\n{cluster_yaml}\n    load_assignment:\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 1 }} }} }}\n"
        );
        let loaded = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        loaded.bootstrap.clusters[0].http.clone()
    }

    fn typed(options: &str) -> String {
        format!(
            "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        {options}"
        )
    }

    const TLS: &str = "    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config: { \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext }";

    #[test]
    fn each_way_of_choosing_the_protocol() {
        assert_eq!(http(""), UpstreamHttp::default());
        assert_eq!(http(&typed("explicit_http_config: { http2_protocol_options: {} }")).codec, UpstreamCodec::Http2);
        assert_eq!(http(&typed("explicit_http_config: { http_protocol_options: {} }")).codec, UpstreamCodec::Http1);
        let auto = format!("{}\n{TLS}", typed("auto_config: {}"));
        assert_eq!(http(&auto).codec, UpstreamCodec::Alpn);
        let downstream = "use_downstream_protocol_config: { http2_protocol_options: {} }";
        assert_eq!(http(&typed(downstream)).codec, UpstreamCodec::Downstream);
        let h1_only = "use_downstream_protocol_config: { http_protocol_options: {} }";
        assert_eq!(http(&typed(h1_only)).codec, UpstreamCodec::Http1, "h2 only with HTTP/2 options, as Envoy");
        let by_name = "    typed_extension_protocol_options:\n      envoy.upstreams.http.http_protocol_options:\n        explicit_http_config: { http2_protocol_options: {} }";
        assert_eq!(http(by_name).codec, UpstreamCodec::Http2, "the extension's name is a key too");
        assert_eq!(http("    http2_protocol_options: {}").codec, UpstreamCodec::Http2);
        let both = "    http2_protocol_options: {}\n    protocol_selection: USE_DOWNSTREAM_PROTOCOL";
        assert_eq!(http(both).codec, UpstreamCodec::Downstream);
        assert_eq!(http("    protocol_selection: USE_DOWNSTREAM_PROTOCOL").codec, UpstreamCodec::Http1);
    }

    #[test]
    fn settings_reach_the_model() {
        let h = http(&typed(
            "common_http_protocol_options: { idle_timeout: 90s }\n        explicit_http_config: { http2_protocol_options: { max_concurrent_streams: 7, initial_stream_window_size: 65535, initial_connection_window_size: 1048576, connection_keepalive: { interval: 20s, timeout: 5s } } }",
        ));
        assert_eq!(h.idle_timeout, Some(Duration::from_secs(90)));
        assert_eq!(
            h.http2,
            Http2Settings {
                max_concurrent_streams: 7,
                initial_stream_window_size: Some(65535),
                initial_connection_window_size: Some(1_048_576),
                ping_interval: Some(Duration::from_secs(20)),
            }
        );
        assert_eq!(http("    common_http_protocol_options: { idle_timeout: 0s }").idle_timeout, None);
    }
}
