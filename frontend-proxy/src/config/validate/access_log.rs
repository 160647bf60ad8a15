//! A connection manager's `access_log[]`: file, stdout and stderr loggers
//! and their formats, parsed here so a bad command operator is a
//! configuration error with its path, not a `-` in every line.

use super::headers::headers_to_add;
use super::route::header_matcher;
use super::{Ctx, DataSourceValue, P};
use crate::access_log::{Comparison, Filter, Format, Op, ResponseFlags};
use crate::config::model::{AccessLogConfig, BodyFormat, LocalReplyConfig, ResponseMapper};
use crate::config::raw::{self, Field, List};
use crate::routing::HeaderMutations;
use std::sync::Arc;

const FILE_TYPE: &str = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";
const STDOUT_TYPE: &str = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
const STDERR_TYPE: &str = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog";

/// The loggers of `access_log`, each with its format parsed.
pub(super) fn access_logs(cx: &mut Ctx, p: &P, f: &Option<List<raw::AccessLog>>) -> Vec<AccessLogConfig> {
    let mut out = Vec::new();
    for (lp, l) in cx.list(p, "access_log", f) {
        cx.other(&lp, l, &[]);
        let name = cx.opt(&lp, "name", &l.name).cloned().unwrap_or_default();
        // `Err`: the filter was rejected, and the logger with it (never one
        // that writes more than its filter selects); its typed_config is
        // still checked, so every error is reported at once.
        let filter = match cx.opt(&lp, "filter", &l.filter) {
            Some(f) => access_log_filter(cx, &lp.key("filter"), f).map(Arc::new).map(Some).ok_or(()),
            None if l.filter.is_some() => Err(()),
            None => Ok(None),
        };
        let tp = lp.key("typed_config");
        let empty = serde_yaml::Value::Mapping(Default::default());
        // As Envoy, the name alone picks a logger with its defaults.
        let tc = match (&l.typed_config, cx.opt(&lp, "typed_config", &l.typed_config)) {
            (_, Some(tc)) => tc,
            (None, None) => &empty,
            (Some(_), None) => continue,
        };
        let kind = match tc.get("@type").and_then(|v| v.as_str()) {
            Some(t) => t,
            None => match name.as_str() {
                "envoy.access_loggers.file" | "envoy.file_access_log" => FILE_TYPE,
                "envoy.access_loggers.stdout" => STDOUT_TYPE,
                "envoy.access_loggers.stderr" => STDERR_TYPE,
                _ => "",
            },
        };
        let logger = match kind {
            FILE_TYPE => file(cx, &tp, tc),
            STDOUT_TYPE => stream(cx, &tp, tc, "/dev/stdout"),
            STDERR_TYPE => stream(cx, &tp, tc, "/dev/stderr"),
            "" => {
                cx.error(&tp, format!("access logger {name:?} is not supported: only envoy.access_loggers.file, envoy.access_loggers.stdout and envoy.access_loggers.stderr are"));
                None
            }
            other => {
                cx.error(
                    &tp.key("@type"),
                    format!("access logger {other:?} is not supported: only FileAccessLog, StdoutAccessLog and StderrAccessLog are"),
                );
                None
            }
        };
        if let (Some((path, format)), Ok(filter)) = (logger, filter) {
            out.push(AccessLogConfig { path, format: Arc::new(format), filter, yaml_path: lp.0.clone() });
        }
    }
    out
}

fn file(cx: &mut Ctx, p: &P, tc: &serde_yaml::Value) -> Option<(String, Format)> {
    let f = cx.typed::<raw::FileAccessLog>(p, tc)?;
    cx.other(p, &f, &[]);
    let _ = cx.opt(p, "@type", &f.type_url);
    let path = cx.req(p, "path", &f.path).cloned();
    if path.as_deref() == Some("") {
        cx.error(&p.key("path"), "must not be empty");
    }
    let set = [f.log_format.is_some(), f.format.is_some(), f.json_format.is_some(), f.typed_json_format.is_some()];
    if set.iter().filter(|s| **s).count() > 1 {
        cx.error(p, "only one of `log_format`, `format`, `json_format`, `typed_json_format` may be set");
        return None;
    }
    let format = if let Some(lf) = cx.opt(p, "log_format", &f.log_format) {
        log_format(cx, &p.key("log_format"), lf, false)?
    } else if let Some(s) = cx.opt(p, "format", &f.format) {
        text(cx, &p.key("format"), s)?
    } else if let Some(m) = cx.opt(p, "json_format", &f.json_format) {
        json(cx, &p.key("json_format"), m)?
    } else if let Some(v) = cx.opt(p, "typed_json_format", &f.typed_json_format) {
        match v.as_mapping() {
            Some(m) => json(cx, &p.key("typed_json_format"), m)?,
            None => {
                cx.error(&p.key("typed_json_format"), "expected a mapping");
                return None;
            }
        }
    } else if set.iter().any(|s| *s) {
        return None;
    } else {
        Format::default_text()
    };
    Some((path.filter(|p| !p.is_empty())?, format))
}

fn stream(cx: &mut Ctx, p: &P, tc: &serde_yaml::Value, path: &str) -> Option<(String, Format)> {
    let s = cx.typed::<raw::StreamAccessLog>(p, tc)?;
    cx.other(p, &s, &[]);
    let _ = cx.opt(p, "@type", &s.type_url);
    let format = match cx.opt(p, "log_format", &s.log_format) {
        Some(lf) => log_format(cx, &p.key("log_format"), lf, false)?,
        None if s.log_format.is_some() => return None,
        None => Format::default_text(),
    };
    Some((path.to_string(), format))
}

/// `SubstitutionFormatString`: `text_format`, `text_format_source` or `json_format`.
fn log_format(cx: &mut Ctx, p: &P, s: &raw::SubstitutionFormatString, local_reply: bool) -> Option<Format> {
    cx.other(p, s, &[]);
    if cx.boolean(p, "omit_empty_values", &s.omit_empty_values, false) {
        cx.error(&p.key("omit_empty_values"), "not supported: missing values are written as `-` (or null in JSON)");
    }
    if cx.opt(p, "content_type", &s.content_type).is_some() && !local_reply {
        cx.warn(&p.key("content_type"), "ignored: it only applies to local reply bodies, not to access logs");
    }
    for (name, f) in [("formatters", &s.formatters), ("json_format_options", &s.json_format_options)] {
        if f.is_some() {
            cx.error(&p.key(name), "not supported");
        }
    }
    let set = [s.text_format.is_some(), s.text_format_source.is_some(), s.json_format.is_some()];
    if set.iter().filter(|s| **s).count() != 1 {
        cx.error(p, "exactly one of `text_format`, `text_format_source`, `json_format` must be set");
        return None;
    }
    if let Some(t) = cx.opt(p, "text_format", &s.text_format) {
        return text(cx, &p.key("text_format"), t);
    }
    if let Some(m) = cx.opt(p, "json_format", &s.json_format) {
        return json(cx, &p.key("json_format"), m);
    }
    let sp = p.key("text_format_source");
    let ds = cx.opt(p, "text_format_source", &s.text_format_source)?;
    let (text_path, bytes) = match cx.data_source(&sp, ds)? {
        DataSourceValue::Inline(b) => {
            let key = if ds.inline_string.is_some() { "inline_string" } else { "inline_bytes" };
            (sp.key(key), b)
        }
        DataSourceValue::File(f) => match std::fs::read(&f) {
            Ok(b) => (sp.key("filename"), b),
            Err(e) => {
                cx.error(&sp.key("filename"), format!("cannot read {f}: {e}"));
                return None;
            }
        },
    };
    match String::from_utf8(bytes) {
        Ok(t) => text(cx, &text_path, &t),
        Err(_) => {
            cx.error(&text_path, "the format must be UTF-8 text");
            None
        }
    }
}

fn text(cx: &mut Ctx, p: &P, s: &str) -> Option<Format> {
    match Format::parse_text(s) {
        Ok(f) => Some(f),
        Err(e) => {
            cx.error(p, e.to_string());
            None
        }
    }
}

fn json(cx: &mut Ctx, p: &P, m: &serde_yaml::Mapping) -> Option<Format> {
    match Format::parse_json(m) {
        Ok(f) => Some(f),
        Err(errors) => {
            for (key, e) in errors {
                cx.error(&key.map_or_else(|| p.clone(), |k| p.key(&k)), e.to_string());
            }
            None
        }
    }
}

/// Envoy's response flag short names that this proxy never raises: a
/// filter on one would silently never match, so it is an error.
const UNTRACKED_FLAGS: &[&str] = &[
    "LH", "LR", "UR", "DI", "FI", "RL", "UAEX", "RLSE", "IH", "UMSDR", "RFCF", "NFCF", "DT", "NC", "OM", "DF", "DO",
    "DR", "UDO",
];

/// `AccessLogFilter` (also a `local_reply_config` mapper's `filter`):
/// exactly one kind; what is not implemented is an error at its path.
pub(super) fn access_log_filter(cx: &mut Ctx, p: &P, f: &raw::AccessLogFilter) -> Option<Filter> {
    cx.other(p, f, &[]);
    let set = [
        f.status_code_filter.is_some(),
        f.duration_filter.is_some(),
        f.not_health_check_filter.is_some(),
        f.traceable_filter.is_some(),
        f.runtime_filter.is_some(),
        f.and_filter.is_some(),
        f.or_filter.is_some(),
        f.header_filter.is_some(),
        f.response_flag_filter.is_some(),
        f.grpc_status_filter.is_some(),
        f.extension_filter.is_some(),
        f.metadata_filter.is_some(),
        f.log_type_filter.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        cx.error(p, "exactly one filter kind must be set (status_code_filter, duration_filter, not_health_check_filter, runtime_filter, and_filter, or_filter, header_filter, response_flag_filter)");
        return None;
    }
    if let Some(c) = cx.opt(p, "status_code_filter", &f.status_code_filter) {
        return comparison_holder(cx, &p.key("status_code_filter"), c).map(Filter::Status);
    }
    if let Some(c) = cx.opt(p, "duration_filter", &f.duration_filter) {
        return comparison_holder(cx, &p.key("duration_filter"), c).map(Filter::Duration);
    }
    if let Some(v) = cx.opt(p, "not_health_check_filter", &f.not_health_check_filter) {
        if !v.as_mapping().is_some_and(|m| m.is_empty()) && !v.is_null() {
            cx.error(&p.key("not_health_check_filter"), "expected an empty mapping `{}`");
            return None;
        }
        return Some(Filter::NotHealthCheck);
    }
    if let Some(r) = cx.opt(p, "runtime_filter", &f.runtime_filter) {
        return runtime_filter(cx, &p.key("runtime_filter"), r);
    }
    for (name, list, and) in [("and_filter", &f.and_filter, true), ("or_filter", &f.or_filter, false)] {
        if let Some(l) = cx.opt(p, name, list) {
            let lp = p.key(name);
            cx.other(&lp, l, &[]);
            let items = cx.list(&lp, "filters", &l.filters);
            let count = match &l.filters {
                Some(Field::Ok(v)) => v.len(),
                Some(Field::Invalid(_)) => return None,
                None => 0,
            };
            if count < 2 {
                cx.error(&lp.key("filters"), "at least two filters are required");
                return None;
            }
            let mut filters = Vec::with_capacity(items.len());
            for (ip, item) in items {
                filters.push(access_log_filter(cx, &ip, item));
            }
            let filters: Option<Vec<Filter>> = filters.into_iter().collect();
            let filters = filters.filter(|v| v.len() == count)?;
            return Some(if and { Filter::And(filters) } else { Filter::Or(filters) });
        }
    }
    if let Some(h) = cx.opt(p, "header_filter", &f.header_filter) {
        let hp = p.key("header_filter");
        cx.other(&hp, h, &[]);
        let m = cx.req(&hp, "header", &h.header)?;
        return header_matcher(cx, &hp.key("header"), m).map(Filter::Header);
    }
    if let Some(r) = cx.opt(p, "response_flag_filter", &f.response_flag_filter) {
        let rp = p.key("response_flag_filter");
        cx.other(&rp, r, &[]);
        if r.flags.is_none() {
            return Some(Filter::ResponseFlag(None));
        }
        let mut flags = ResponseFlags::default();
        let mut ok = true;
        for (fp, name) in cx.list(&rp, "flags", &r.flags) {
            match ResponseFlags::from_short(name) {
                Some(flag) => flags |= flag,
                None if UNTRACKED_FLAGS.contains(&name.as_str()) => {
                    cx.error(&fp, format!("response flag {name:?} is not supported: this proxy never raises it, so the filter would never match (supported: {})", ResponseFlags::short_names().collect::<Vec<_>>().join(", ")));
                    ok = false;
                }
                None => {
                    cx.error(&fp, format!("unknown response flag {name:?}"));
                    ok = false;
                }
            }
        }
        // Envoy: an empty `flags` list means any flag.
        return ok.then_some(Filter::ResponseFlag((!flags.is_empty()).then_some(flags)));
    }
    let unsupported = [
        (
            "traceable_filter",
            f.traceable_filter.is_some(),
            "tracing is not implemented, so whether a request is traceable is not known",
        ),
        ("grpc_status_filter", f.grpc_status_filter.is_some(), "gRPC statuses are not tracked"),
        ("extension_filter", f.extension_filter.is_some(), "no extension filters are implemented"),
        ("metadata_filter", f.metadata_filter.is_some(), "dynamic metadata is not implemented"),
        ("log_type_filter", f.log_type_filter.is_some(), "only end-of-request access logs are written"),
    ];
    for (name, present, why) in unsupported {
        if present {
            cx.error(&p.key(name), format!("{name} is not supported: {why}"));
        }
    }
    None
}

/// Runtime layers are not read: a key a static layer sets would be
/// ignored, and the filter would judge by the default instead.
fn runtime_key_unset(cx: &mut Ctx, p: &P, key: &str, default: &str) -> Option<()> {
    match cx.runtime_key_set_at(key) {
        None => Some(()),
        Some(at) => {
            cx.error(
                p,
                format!("runtime key {key:?} is set at {}, but runtime layers are not read: the filter would use its `{default}`; write the value there instead", at.0),
            );
            None
        }
    }
}

fn comparison_holder(cx: &mut Ctx, p: &P, h: &raw::ComparisonHolder) -> Option<Comparison> {
    cx.other(p, h, &[]);
    let c = cx.req(p, "comparison", &h.comparison)?;
    let cp = p.key("comparison");
    cx.other(&cp, c, &[]);
    let op = cx.enumeration(&cp, "op", &c.op, &[("EQ", Op::Eq), ("GE", Op::Ge), ("LE", Op::Le)], Op::Eq);
    let v = cx.req(&cp, "value", &c.value)?;
    let vp = cp.key("value");
    cx.other(&vp, v, &[]);
    // Envoy requires the key, and reads it from the runtime; without a
    // runtime layer holding it the default is the value, as here.
    let key = cx.req(&vp, "runtime_key", &v.runtime_key)?;
    if key.is_empty() {
        cx.error(&vp.key("runtime_key"), "must not be empty");
        return None;
    }
    runtime_key_unset(cx, &vp.key("runtime_key"), key, "default_value")?;
    let value = cx.opt(&vp, "default_value", &v.default_value).copied().unwrap_or(0);
    Some(Comparison { op, value: u64::from(value) })
}

fn runtime_filter(cx: &mut Ctx, p: &P, r: &raw::RuntimeFilter) -> Option<Filter> {
    cx.other(p, r, &[]);
    let key = cx.req(p, "runtime_key", &r.runtime_key)?;
    if key.is_empty() {
        cx.error(&p.key("runtime_key"), "must not be empty");
        return None;
    }
    runtime_key_unset(cx, &p.key("runtime_key"), key, "percent_sampled")?;
    let independent = cx.boolean(p, "use_independent_randomness", &r.use_independent_randomness, false);
    // Envoy: without `percent_sampled`, 0 % (unless the runtime says otherwise).
    let per_million = match cx.opt(p, "percent_sampled", &r.percent_sampled) {
        None if r.percent_sampled.is_some() => return None,
        None => 0,
        Some(fp) => {
            let pp = p.key("percent_sampled");
            cx.other(&pp, fp, &[]);
            let scale = cx.enumeration(
                &pp,
                "denominator",
                &fp.denominator,
                &[("HUNDRED", 10_000u64), ("TEN_THOUSAND", 100), ("MILLION", 1)],
                10_000,
            );
            let n = cx.opt(&pp, "numerator", &fp.numerator).copied().unwrap_or(0);
            // As Envoy: a numerator over the denominator means 100 %.
            (u64::from(n) * scale).min(1_000_000) as u32
        }
    };
    Some(Filter::Runtime { per_million, independent })
}

/// The connection manager's `local_reply_config`.
pub(super) fn local_reply_config(cx: &mut Ctx, p: &P, c: &raw::LocalReplyConfig) -> Option<Arc<LocalReplyConfig>> {
    cx.other(p, c, &[]);
    let mut ok = true;
    let mut mappers = Vec::new();
    for (mp, m) in cx.list(p, "mappers", &c.mappers) {
        match response_mapper(cx, &mp, m) {
            Some(m) => mappers.push(m),
            None => ok = false,
        }
    }
    let body_format = match cx.opt(p, "body_format", &c.body_format) {
        Some(f) => Some(body_format(cx, &p.key("body_format"), f)?),
        None if c.body_format.is_some() => return None,
        None => None,
    };
    ok.then(|| Arc::new(LocalReplyConfig { mappers, body_format }))
}

fn response_mapper(cx: &mut Ctx, p: &P, m: &raw::ResponseMapper) -> Option<ResponseMapper> {
    cx.other(p, m, &[]);
    let filter = cx.req(p, "filter", &m.filter).and_then(|f| access_log_filter(cx, &p.key("filter"), f));
    let status = match cx.opt(p, "status_code", &m.status_code) {
        Some(s) if (200..600).contains(s) => http::StatusCode::from_u16(*s as u16).ok(),
        Some(s) => {
            cx.error(&p.key("status_code"), format!("{s} is not a status from 200 to 599"));
            return None;
        }
        None => None,
    };
    let body = match cx.opt(p, "body", &m.body) {
        Some(ds) => match cx.data_source(&p.key("body"), ds)? {
            DataSourceValue::Inline(b) => Some(bytes::Bytes::from(b)),
            DataSourceValue::File(f) => match std::fs::read(&f) {
                Ok(b) => Some(bytes::Bytes::from(b)),
                Err(e) => {
                    cx.error(&p.key("body").key("filename"), format!("cannot read {f}: {e}"));
                    return None;
                }
            },
        },
        None => None,
    };
    let body_format = match cx.opt(p, "body_format_override", &m.body_format_override) {
        Some(f) => Some(body_format(cx, &p.key("body_format_override"), f)?),
        None => None,
    };
    let headers = HeaderMutations {
        response_add: headers_to_add(cx, p, "headers_to_add", &m.headers_to_add),
        ..HeaderMutations::default()
    };
    Some(ResponseMapper { filter: filter?, status, body, body_format, headers })
}

/// A local reply `body_format`: a format and its content type (Envoy's
/// defaults: `text/plain` for text, `application/json` for JSON).
fn body_format(cx: &mut Ctx, p: &P, s: &raw::SubstitutionFormatString) -> Option<BodyFormat> {
    let json = s.json_format.is_some();
    let format = log_format(cx, p, s, true)?;
    let content_type = match cx.opt(p, "content_type", &s.content_type) {
        Some(t) if http::HeaderValue::from_str(t).is_err() => {
            cx.error(&p.key("content_type"), "not a valid header value");
            return None;
        }
        Some(t) => t.clone(),
        None if json => "application/json".to_string(),
        None => "text/plain".to_string(),
    };
    Some(BodyFormat { format, content_type })
}
