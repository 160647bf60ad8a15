//! The HTTP connection manager of a filter chain: its settings, its
//! HTTP/1 and HTTP/2 options, and its HTTP filters (the router's options
//! included). Its `http2_protocol_options` are read in [`http2`].

mod http2;

use super::access_log;
use super::upgrade::upgrade_config;
use super::{route, Ctx, P};
use crate::config::model::{
    Codec, EscapedSlashes, ForwardClientCert, HeadersWithUnderscores, Http10, HttpConnectionManager, PathNormalization,
    ServerHeader,
};
use crate::config::raw::{self, Field, List};
use crate::tls::ClientCertDetails;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub(super) const HCM_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const BUFFER_NAME: &str = "envoy.filters.http.buffer";
const BUFFER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer";
const ROUTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const ROUTER_NAMES: &[&str] = &["envoy.filters.http.router", "envoy.router"];

/// Envoy's default stream idle timeout.
const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a request head may take to arrive when the file does not say.
/// Envoy has no default (its edge best practice sets 10 s): without one, a
/// client that trickles a head a byte at a time holds its connection as
/// long as each byte comes within the stream idle timeout. `0s` in the
/// file still turns it off.
pub const DEFAULT_REQUEST_HEADERS_TIMEOUT: Duration = Duration::from_secs(10);
/// Envoy's default for a downstream connection's idle timeout.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Envoy's default grace between an HTTP/2 shutdown notice and the final GOAWAY.
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Envoy fields accepted and ignored with a warning.
const HCM_IGNORED: &[&str] = &[
    "tracing",
    "delayed_close_timeout",
    "internal_address_config",
    "request_id_extension",
    "access_log_flush_interval",
    "flush_access_log_on_new_request",
    "access_log_options",
];

pub(super) fn connection_manager(
    cx: &mut Ctx,
    p: &P,
    h: &raw::HttpConnectionManager,
    clusters: &HashMap<String, usize>,
) -> Option<HttpConnectionManager> {
    cx.other(p, h, HCM_IGNORED);
    if let Some(t) = cx.opt(p, "@type", &h.type_url) {
        if t != HCM_TYPE {
            cx.error(&p.key("@type"), format!("expected {HCM_TYPE}"));
        }
    }
    let stat_prefix = cx.req(p, "stat_prefix", &h.stat_prefix).cloned();
    let codec = cx.enumeration(
        p,
        "codec_type",
        &h.codec_type,
        &[("AUTO", Codec::Auto), ("HTTP1", Codec::Http1), ("HTTP2", Codec::Http2)],
        Codec::Auto,
    );
    let HttpFilters { max_request_bytes, suppress_envoy_headers } = http_filters(cx, p, &h.http_filters);
    let (http2, http2_keepalive) = http2::http2_options(cx, p, h);
    let http10 = http1_options(cx, p, h);
    let path = path_normalization(cx, p, h);

    let server_header = cx.enumeration(
        p,
        "server_header_transformation",
        &h.server_header_transformation,
        &[
            ("OVERWRITE", ServerHeader::Overwrite),
            ("APPEND_IF_ABSENT", ServerHeader::AppendIfAbsent),
            ("PASS_THROUGH", ServerHeader::PassThrough),
        ],
        ServerHeader::Overwrite,
    );
    let strip_any = cx.boolean(p, "strip_any_host_port", &h.strip_any_host_port, false);
    let strip_matching = cx.boolean(p, "strip_matching_host_port", &h.strip_matching_host_port, false);
    if strip_any && strip_matching {
        cx.error(p, "`strip_any_host_port` and `strip_matching_host_port` are mutually exclusive");
    }

    let mut max_headers_count = 100;
    let mut headers_with_underscores = HeadersWithUnderscores::Allow;
    let mut max_requests_per_connection = None;
    let mut idle_timeout = Some(DEFAULT_IDLE_TIMEOUT);
    let mut max_stream_duration = None;
    let op = p.key("common_http_protocol_options");
    if let Some(o) = cx.opt(p, "common_http_protocol_options", &h.common_http_protocol_options) {
        cx.other(&op, o, &[]);
        headers_with_underscores = cx.enumeration(
            &op,
            "headers_with_underscores_action",
            &o.headers_with_underscores_action,
            &[
                ("ALLOW", HeadersWithUnderscores::Allow),
                ("REJECT_REQUEST", HeadersWithUnderscores::RejectRequest),
                ("DROP_HEADER", HeadersWithUnderscores::DropHeader),
            ],
            HeadersWithUnderscores::Allow,
        );
        // 0 is no limit, as in Envoy.
        max_requests_per_connection =
            cx.opt(&op, "max_requests_per_connection", &o.max_requests_per_connection).copied().filter(|n| *n > 0);
        if max_requests_per_connection.is_some() && codec != Codec::Http1 {
            // Pingora's HTTP/2 server cannot end a connection after N
            // streams, and HTTP/1 alone would be weaker than the file says.
            cx.error(
                &op.key("max_requests_per_connection"),
                "supported only with codec_type: HTTP1 (HTTP/2 connections cannot be ended after a number of streams)",
            );
        }
        if let Some(t) = cx.duration(&op, "idle_timeout", &o.idle_timeout) {
            idle_timeout = (!t.is_zero()).then_some(t);
        }
        if let Some(n) = cx.opt(&op, "max_headers_count", &o.max_headers_count) {
            max_headers_count = *n;
        }
        if o.max_connection_duration.is_some() {
            cx.error(&op.key("max_connection_duration"), "not supported");
        }
        // As Envoy, 0 is no limit.
        max_stream_duration = cx.duration(&op, "max_stream_duration", &o.max_stream_duration).filter(|t| !t.is_zero());
    }

    let (forward_client_cert, client_cert_details) = client_cert(cx, p, h);
    let mut websocket = false;
    for (up, u) in cx.list(p, "upgrade_configs", &h.upgrade_configs) {
        if let Some(enabled) = upgrade_config(cx, &up, u) {
            websocket = enabled;
        }
    }

    let routes = match cx.req(p, "route_config", &h.route_config) {
        Some(rc) => route::route_configuration(cx, &p.key("route_config"), rc, clusters, strip_any, strip_matching),
        None => None,
    };
    let max_request_headers_kb = cx.opt(p, "max_request_headers_kb", &h.max_request_headers_kb).copied().unwrap_or(60);
    if !(1..=8192).contains(&max_request_headers_kb) {
        cx.error(&p.key("max_request_headers_kb"), "must be between 1 and 8192");
    }
    let stream_idle_timeout =
        cx.duration(p, "stream_idle_timeout", &h.stream_idle_timeout).unwrap_or(DEFAULT_STREAM_IDLE_TIMEOUT);
    let request_timeout = cx.duration(p, "request_timeout", &h.request_timeout);
    let request_headers_timeout = cx
        .duration(p, "request_headers_timeout", &h.request_headers_timeout)
        .unwrap_or(DEFAULT_REQUEST_HEADERS_TIMEOUT);
    let drain_timeout = cx.duration(p, "drain_timeout", &h.drain_timeout).unwrap_or(DEFAULT_DRAIN_TIMEOUT);
    let server_name = cx.string(p, "server_name", &h.server_name).unwrap_or_else(|| "envoy".to_string());
    if http::HeaderValue::from_str(&server_name).is_err() {
        cx.error(&p.key("server_name"), "must be a valid header value (visible ASCII, spaces and tabs)");
    }
    Some(HttpConnectionManager {
        stat_prefix: stat_prefix?,
        codec,
        routes: Arc::new(routes?),
        server_name,
        server_header,
        generate_request_id: cx.boolean(p, "generate_request_id", &h.generate_request_id, true),
        preserve_external_request_id: cx.boolean(
            p,
            "preserve_external_request_id",
            &h.preserve_external_request_id,
            false,
        ),
        always_set_request_id_in_response: cx.boolean(
            p,
            "always_set_request_id_in_response",
            &h.always_set_request_id_in_response,
            false,
        ),
        use_remote_address: cx.boolean(p, "use_remote_address", &h.use_remote_address, false),
        xff_num_trusted_hops: cx.opt(p, "xff_num_trusted_hops", &h.xff_num_trusted_hops).copied().unwrap_or(0),
        skip_xff_append: cx.boolean(p, "skip_xff_append", &h.skip_xff_append, false),
        stream_idle_timeout: nonzero(stream_idle_timeout),
        request_timeout: request_timeout.and_then(nonzero),
        request_headers_timeout: nonzero(request_headers_timeout),
        idle_timeout,
        drain_timeout,
        max_stream_duration,
        max_request_headers_kb,
        max_headers_count,
        headers_with_underscores,
        path,
        http10,
        max_requests_per_connection,
        websocket,
        max_request_bytes,
        suppress_envoy_headers,
        forward_client_cert,
        client_cert_details,
        access_log: access_log::access_logs(cx, p, &h.access_log),
        local_reply: cx
            .opt(p, "local_reply_config", &h.local_reply_config)
            .and_then(|c| access_log::local_reply_config(cx, &p.key("local_reply_config"), c)),
        http2,
        http2_keepalive,
    })
}

/// `forward_client_cert_details` and `set_current_client_cert_details`.
fn client_cert(cx: &mut Ctx, p: &P, h: &raw::HttpConnectionManager) -> (ForwardClientCert, ClientCertDetails) {
    use ForwardClientCert::*;
    let table = [
        ("SANITIZE", Sanitize),
        ("FORWARD_ONLY", ForwardOnly),
        ("APPEND_FORWARD", AppendForward),
        ("SANITIZE_SET", SanitizeSet),
        ("ALWAYS_FORWARD_ONLY", AlwaysForwardOnly),
    ];
    let mode = cx.enumeration(p, "forward_client_cert_details", &h.forward_client_cert_details, &table, Sanitize);
    let mut details = ClientCertDetails::default();
    if let Some(d) = cx.opt(p, "set_current_client_cert_details", &h.set_current_client_cert_details) {
        let dp = p.key("set_current_client_cert_details");
        cx.other(&dp, d, &[]);
        details = ClientCertDetails {
            subject: cx.boolean(&dp, "subject", &d.subject, false),
            cert: cx.boolean(&dp, "cert", &d.cert, false),
            chain: cx.boolean(&dp, "chain", &d.chain, false),
            dns: cx.boolean(&dp, "dns", &d.dns, false),
            uri: cx.boolean(&dp, "uri", &d.uri, false),
        };
        if !mode.writes() && details != ClientCertDetails::default() {
            // Envoy reads it only for the two modes that write the header.
            cx.warn(&dp, "has no effect: only APPEND_FORWARD and SANITIZE_SET write the client certificate's details");
        }
    }
    (mode, details)
}

/// `normalize_path`, `merge_slashes` and `path_with_escaped_slashes_action`.
/// Envoy lets runtime keys stand in for the first and last when the file
/// leaves them out; runtime layers are not read here, so such a key is an
/// error rather than a normalization silently not done.
fn path_normalization(cx: &mut Ctx, p: &P, h: &raw::HttpConnectionManager) -> PathNormalization {
    let normalize = cx.opt(p, "normalize_path", &h.normalize_path).copied();
    let escaped = cx.opt(p, "path_with_escaped_slashes_action", &h.path_with_escaped_slashes_action).is_some();
    for (key, set_in_file) in [
        ("http_connection_manager.normalize_path", normalize.is_some()),
        ("http_connection_manager.path_with_escaped_slashes_action", escaped),
        ("http_connection_manager.path_with_escaped_slashes_action_enabled", false),
    ] {
        if set_in_file {
            continue;
        }
        // Reported once, however many connection managers leave it out.
        let Some(at) = cx.runtime_key_set_at(key).map(|at| at.key(key)) else { continue };
        if !cx.errors.iter().any(|d| d.path == at.0) {
            cx.error(
                &at,
                "runtime keys are not read: set the connection manager's field instead (normalize_path, path_with_escaped_slashes_action)",
            );
        }
    }
    const UNCHANGED: EscapedSlashes = EscapedSlashes::KeepUnchanged;
    PathNormalization {
        normalize: normalize.unwrap_or(false),
        merge_slashes: cx.boolean(p, "merge_slashes", &h.merge_slashes, false),
        escaped_slashes: cx.enumeration(
            p,
            "path_with_escaped_slashes_action",
            &h.path_with_escaped_slashes_action,
            &[
                // Envoy's implementation-specific default is to keep them.
                ("IMPLEMENTATION_SPECIFIC_DEFAULT", UNCHANGED),
                ("KEEP_UNCHANGED", UNCHANGED),
                ("REJECT_REQUEST", EscapedSlashes::RejectRequest),
                ("UNESCAPE_AND_REDIRECT", EscapedSlashes::UnescapeAndRedirect),
                ("UNESCAPE_AND_FORWARD", EscapedSlashes::UnescapeAndForward),
            ],
            UNCHANGED,
        ),
    }
}

/// `http_protocol_options` and the connection manager's other codec
/// switches: what both HTTP/1 engines do is accepted (and is the
/// default, unless said), anything else is an error naming the field.
fn http1_options(cx: &mut Ctx, p: &P, h: &raw::HttpConnectionManager) -> Http10 {
    // Both engines proxy `Expect: 100-continue` and the upstream's 100 (what
    // `true` asks); Envoy's default answers 100 itself. Either way the
    // request and its answer are the same: only when the body leaves the
    // client differs.
    let _ = cx.opt(p, "proxy_100_continue", &h.proxy_100_continue);
    if cx.boolean(p, "stream_error_on_invalid_http_message", &h.stream_error_on_invalid_http_message, false) {
        cx.error(
            &p.key("stream_error_on_invalid_http_message"),
            "true is not supported: an invalid HTTP/1 request always closes its connection (Envoy's default)",
        );
    }
    if cx.boolean(p, "add_user_agent", &h.add_user_agent, false) {
        cx.error(
            &p.key("add_user_agent"),
            "not supported: user-agent and x-envoy-downstream-service-cluster are not set from the node's cluster",
        );
    }
    let Some(o) = cx.opt(p, "http_protocol_options", &h.http_protocol_options) else {
        return Http10::default();
    };
    let op = p.key("http_protocol_options");
    // Envoy's choice of HTTP/1 parser: both engines parse as they do.
    cx.other(&op, o, &["use_balsa_parser"]);
    let unsupported = |cx: &mut Ctx, name: &str, message: &str| cx.error(&op.key(name), message.to_string());
    if !cx.boolean(&op, "allow_absolute_url", &o.allow_absolute_url, true) {
        unsupported(cx, "allow_absolute_url", "false is not supported: absolute-form targets are always served");
    }
    let accept = cx.boolean(&op, "accept_http_10", &o.accept_http_10, false);
    // Empty means none, as in Envoy.
    let default_host = match cx.opt(&op, "default_host_for_http_10", &o.default_host_for_http_10) {
        Some(host) if !host.is_empty() => match http::HeaderValue::from_str(host) {
            Ok(v) => Some(v),
            Err(_) => {
                unsupported(cx, "default_host_for_http_10", "must be a valid header value");
                None
            }
        },
        _ => None,
    };
    if o.header_key_format.is_some() {
        unsupported(cx, "header_key_format", "not supported: header names are not re-cased");
    }
    if cx.boolean(&op, "enable_trailers", &o.enable_trailers, false) {
        unsupported(cx, "enable_trailers", "true is not supported: HTTP/1 trailers are dropped (Envoy's default)");
    }
    if cx.boolean(&op, "allow_chunked_length", &o.allow_chunked_length, false) {
        unsupported(
            cx,
            "allow_chunked_length",
            "true is not supported: a request with both Content-Length and Transfer-Encoding is refused (400)",
        );
    }
    if cx.opt(&op, "override_stream_error_on_invalid_http_message", &o.override_stream_error_on_invalid_http_message)
        == Some(&true)
    {
        unsupported(
            cx,
            "override_stream_error_on_invalid_http_message",
            "true is not supported: an invalid HTTP/1 request always closes its connection",
        );
    }
    if cx.boolean(&op, "send_fully_qualified_url", &o.send_fully_qualified_url, false) {
        unsupported(cx, "send_fully_qualified_url", "true is not supported: upstream requests use origin-form targets");
    }
    // Both engines take any method that is a token (what `true` asks);
    // Envoy's default parser knows a fixed list.
    let _ = cx.opt(&op, "allow_custom_methods", &o.allow_custom_methods);
    let ignore_upgrade = cx.opt(&op, "ignore_http_11_upgrade", &o.ignore_http_11_upgrade);
    if ignore_upgrade.is_some_and(|v| v.as_sequence().is_none_or(|s| !s.is_empty())) {
        unsupported(cx, "ignore_http_11_upgrade", "not supported: upgrades are served as upgrade_configs say");
    }
    Http10 { accept, default_host }
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// Checks the HTTP filter list: the buffer filter's request size limit and
/// the router's options.
fn http_filters(cx: &mut Ctx, p: &P, f: &Option<List<raw::TypedExtension>>) -> HttpFilters {
    let filters = cx.list(p, "http_filters", f);
    let mut max_request_bytes = None;
    let mut suppress_envoy_headers = false;
    if f.is_none() || filters.is_empty() {
        cx.error(&p.key("http_filters"), "must end with envoy.filters.http.router");
        return HttpFilters { max_request_bytes, suppress_envoy_headers };
    }
    let last = filters.len() - 1;
    for (i, (fp, filter)) in filters.iter().enumerate() {
        cx.other(fp, *filter, &["disabled", "is_optional"]);
        let name = cx.string(fp, "name", &filter.name).unwrap_or_default();
        let config = cx.opt(fp, "typed_config", &filter.typed_config);
        let type_url = config.and_then(|v| v.get("@type")).and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let is_router = ROUTER_NAMES.contains(&name.as_str()) || type_url == ROUTER_TYPE;
        if name == BUFFER_NAME || type_url == BUFFER_TYPE {
            if i == last {
                cx.error(fp, "the router must be the last HTTP filter");
            }
            let tp = fp.key("typed_config");
            match config.map(|c| Field::<raw::BufferFilter>::from_value(c.clone())) {
                Some(Field::Ok(b)) => {
                    cx.other(&tp, &b, &[]);
                    let _ = cx.opt(&tp, "@type", &b.type_url);
                    max_request_bytes = cx.req(&tp, "max_request_bytes", &b.max_request_bytes).copied();
                }
                Some(Field::Invalid(msg)) => cx.error(&tp, msg),
                None => cx.error(&tp, "required field is missing"),
            }
        } else if !is_router {
            cx.error(
                fp,
                format!("HTTP filter {name:?} is not supported: frontend-proxy only runs the router (and the buffer filter), and silently skipping a filter (authentication, rate limiting, ...) would change what traffic is allowed"),
            );
        } else if i != last {
            cx.error(fp, "the router must be the last HTTP filter");
        } else if let Some(c) = config {
            let tp = fp.key("typed_config");
            match Field::<raw::RouterFilter>::from_value(c.clone()) {
                Field::Ok(r) => suppress_envoy_headers = router_options(cx, &tp, r),
                Field::Invalid(msg) => cx.error(&tp, msg),
            }
        }
    }
    HttpFilters { max_request_bytes, suppress_envoy_headers }
}

/// What the router's options say; the ones frontend-proxy cannot honour
/// are refused, each naming its field.
fn router_options(cx: &mut Ctx, p: &P, mut r: raw::RouterFilter) -> bool {
    let _ = cx.opt(p, "@type", &r.type_url);
    for (key, field) in [
        ("dynamic_stats", &r.dynamic_stats),
        ("start_child_span", &r.start_child_span),
        ("suppress_grpc_request_failure_code_stats", &r.suppress_grpc_request_failure_code_stats),
    ] {
        if cx.opt(p, key, field).is_some() {
            cx.warn(
                &p.key(key),
                "ignored: this field only shapes Envoy's statistics or tracing, and ignoring it does not change how requests are routed or answered",
            );
        }
    }
    for (key, why) in ROUTER_REFUSED {
        if r.other.remove(*key).is_some() {
            cx.error(&p.key(key), format!("{why}: not supported yet, so the configuration is refused"));
        }
    }
    cx.other(p, &r, &[]);
    cx.boolean(p, "suppress_envoy_headers", &r.suppress_envoy_headers, false)
}

/// Router options that change what reaches the upstream or the client
/// (or what is logged), which frontend-proxy does not do.
const ROUTER_REFUSED: &[(&str, &str)] = &[
    ("respect_expected_rq_timeout", "taking the route timeout from the request's x-envoy-expected-rq-timeout-ms"),
    ("upstream_log", "upstream logs (one entry per upstream attempt)"),
    ("upstream_log_options", "upstream log options"),
    ("strict_check_headers", "strict checking of x-envoy-* request headers (400 on invalid values)"),
    ("upstream_http_filters", "upstream HTTP filters"),
];

/// What the HTTP filter list configures.
struct HttpFilters {
    /// The buffer filter's request size limit.
    max_request_bytes: Option<u32>,
    /// The router's `suppress_envoy_headers`.
    suppress_envoy_headers: bool,
}
