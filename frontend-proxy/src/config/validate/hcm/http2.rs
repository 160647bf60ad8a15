//! A connection manager's `http2_protocol_options`: the settings its
//! downstream HTTP/2 connections advertise, the keepalive PINGs, and the
//! options accepted only at the value that means what frontend-proxy does.

use super::super::{Ctx, P};
use crate::config::model::{Http2Keepalive, Http2Settings};
use crate::config::raw::{self, Field};
use std::time::Duration;

/// Envoy's defaults for its HTTP/2 flood and abuse limits. h2 (under
/// Pingora) has its own limits for the same abuses, counted differently;
/// a file that sets one to anything else is refused rather than run with
/// a limit it did not ask for.
const HTTP2_ENVOY_LIMITS: &[(&str, u32)] = &[
    ("max_outbound_frames", 10000),
    ("max_outbound_control_frames", 1000),
    ("max_consecutive_inbound_frames_with_empty_payload", 1),
    ("max_inbound_priority_frames_per_stream", 100),
    ("max_inbound_window_update_frames_per_data_frame_sent", 10),
];

/// `http2_protocol_options` of a connection manager: the settings a
/// downstream HTTP/2 connection advertises are honoured; the rest is
/// accepted only at the value that means what frontend-proxy does.
pub(super) fn http2_options(
    cx: &mut Ctx,
    p: &P,
    h: &raw::HttpConnectionManager,
) -> (Http2Settings, Option<Http2Keepalive>) {
    let Some(o) = cx.opt(p, "http2_protocol_options", &h.http2_protocol_options) else {
        return (Http2Settings::default(), None);
    };
    let op = p.key("http2_protocol_options");
    // The codec Envoy uses, and the size of METADATA frames it refuses
    // anyway (`allow_metadata` below): neither changes what a request may do.
    cx.other(&op, o, &["use_oghttp2_codec", "max_metadata_size"]);
    let keepalive = cx.opt(&op, "connection_keepalive", &o.connection_keepalive).and_then(|k| {
        let kp = op.key("connection_keepalive");
        keepalive(cx, &kp, k)
    });
    if o.custom_settings_parameters.is_some() {
        cx.error(&op.key("custom_settings_parameters"), "custom HTTP/2 SETTINGS are not supported");
    }
    let ranged = |cx: &mut Ctx, name: &str, f: &Option<Field<u32>>, min: u32| {
        let v = cx.opt(&op, name, f).copied()?;
        if !(min..=2_147_483_647).contains(&v) {
            cx.error(&op.key(name), format!("must be between {min} and 2147483647"));
            return None;
        }
        Some(v)
    };
    let settings = Http2Settings {
        max_concurrent_streams: ranged(cx, "max_concurrent_streams", &o.max_concurrent_streams, 1),
        initial_stream_window_size: ranged(cx, "initial_stream_window_size", &o.initial_stream_window_size, 65535),
        initial_connection_window_size: ranged(
            cx,
            "initial_connection_window_size",
            &o.initial_connection_window_size,
            65535,
        ),
        hpack_table_size: cx.opt(&op, "hpack_table_size", &o.hpack_table_size).copied(),
    };
    if cx.boolean(&op, "allow_connect", &o.allow_connect, false) {
        cx.error(&op.key("allow_connect"), "CONNECT over HTTP/2 (RFC 8441 upgrades) is not supported");
    }
    if cx.boolean(&op, "allow_metadata", &o.allow_metadata, false) {
        cx.error(&op.key("allow_metadata"), "HTTP/2 METADATA frames are not supported");
    }
    let limits = [
        &o.max_outbound_frames,
        &o.max_outbound_control_frames,
        &o.max_consecutive_inbound_frames_with_empty_payload,
        &o.max_inbound_priority_frames_per_stream,
        &o.max_inbound_window_update_frames_per_data_frame_sent,
    ];
    for ((name, default), f) in HTTP2_ENVOY_LIMITS.iter().zip(limits) {
        if let Some(v) = cx.opt(&op, name, f) {
            if v != default {
                cx.error(
                    &op.key(name),
                    format!("only Envoy's default ({default}) is supported: HTTP/2 flood limits are h2's own, counted differently"),
                );
            }
        }
    }
    // An invalid HTTP/2 request resets its stream and the connection goes
    // on, as `true` asks: Pingora and h2 cannot close the connection
    // instead, as Envoy's default (`false`) does. Either way the invalid
    // request is refused, and h2 and Pingora bound how many such streams a
    // connection may open before it is closed (docs/envoy-compatibility.md).
    let _ = cx.opt(&op, "stream_error_on_invalid_http_messaging", &o.stream_error_on_invalid_http_messaging);
    let _ =
        cx.opt(&op, "override_stream_error_on_invalid_http_message", &o.override_stream_error_on_invalid_http_message);
    (settings, keepalive)
}

/// Envoy's `KeepaliveSettings` on downstream connections. `None` when no
/// PING is to be sent (no `interval`) or the settings are invalid.
fn keepalive(cx: &mut Ctx, kp: &P, k: &raw::KeepaliveSettings) -> Option<Http2Keepalive> {
    const MIN: Duration = Duration::from_millis(1);
    cx.other(kp, k, &[]);
    // Unset: no PINGs on an interval. Set, at least 1 ms, as Envoy checks.
    let interval = cx.duration(kp, "interval", &k.interval);
    if interval.is_some_and(|d| d < MIN) {
        cx.error(&kp.key("interval"), "must be at least 1ms");
    }
    let timeout = cx.duration(kp, "timeout", &k.timeout);
    match timeout {
        None if k.timeout.is_none() => cx.error(&kp.key("timeout"), "required"),
        Some(t) if t < MIN => cx.error(&kp.key("timeout"), "must be at least 1ms"),
        _ => {}
    }
    let mut jitter = 15.0;
    if let Some(pct) = cx.opt(kp, "interval_jitter", &k.interval_jitter) {
        let jp = kp.key("interval_jitter");
        cx.other(&jp, pct, &[]);
        jitter = cx.opt(&jp, "value", &pct.value).copied().unwrap_or(0.0);
        if !(0.0..=100.0).contains(&jitter) {
            cx.error(&jp.key("value"), "must be between 0 and 100");
        }
    }
    match cx.duration(kp, "connection_idle_interval", &k.connection_idle_interval) {
        Some(d) if d < MIN => cx.error(&kp.key("connection_idle_interval"), "must be at least 1ms"),
        // Envoy sends it only before opening a stream, which a server never does.
        Some(_) => cx.warn(
            &kp.key("connection_idle_interval"),
            "has no effect on downstream connections (Envoy sends these PINGs only before opening a stream)",
        ),
        None => {}
    }
    let interval = interval.filter(|d| *d >= MIN)?;
    let timeout = timeout.filter(|t| *t >= MIN)?;
    (0.0..=100.0).contains(&jitter).then_some(Http2Keepalive { interval, timeout, jitter: jitter / 100.0 })
}

#[cfg(test)]
mod tests {
    use crate::config::model::Http2Keepalive;
    use crate::config::parse;
    use std::time::Duration;

    /// The keepalive of a listener whose connection manager has
    /// `http2_protocol_options` `options`.
    fn keepalive(options: &str) -> Option<Http2Keepalive> {
        let text = format!(
            "static_resources:\n  listeners:\n  - name: l\n    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 1 }} }}\n    filter_chains:\n    - filters:\n      - name: envoy.filters.network.http_connection_manager\n        typed_config:\n          \"@type\": {}\n          stat_prefix: l\n          http2_protocol_options: {options}\n          route_config: {{ virtual_hosts: [{{ name: a, domains: [\"*\"], routes: [{{ match: {{ prefix: / }}, direct_response: {{ status: 200 }} }}] }}] }}\n          http_filters: [{{ name: envoy.filters.http.router }}]\n",
            super::super::HCM_TYPE
        );
        let loaded = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        loaded.bootstrap.listeners[0].hcm().expect("an HTTP listener").http2_keepalive
    }

    #[test]
    fn connection_keepalive_as_envoy_reads_it() {
        let k = keepalive("{ connection_keepalive: { interval: 30s, timeout: 5s } }").expect("PINGs");
        assert_eq!((k.interval, k.timeout), (Duration::from_secs(30), Duration::from_secs(5)));
        assert_eq!(k.jitter, 0.15, "Envoy's default jitter");
        let k = keepalive("{ connection_keepalive: { interval: 0.5s, timeout: 0.1s, interval_jitter: { value: 0 } } }")
            .expect("PINGs");
        assert_eq!((k.interval, k.timeout, k.jitter), (Duration::from_millis(500), Duration::from_millis(100), 0.0));
        // No interval: no PINGs.
        assert_eq!(keepalive("{ connection_keepalive: { timeout: 5s } }"), None);
        assert_eq!(keepalive("{ max_concurrent_streams: 10 }"), None);
    }
}
