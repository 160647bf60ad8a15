//! A connection manager's `access_log[]`: file, stdout and stderr loggers
//! and their formats, parsed here so a bad command operator is a
//! configuration error with its path, not a `-` in every line.

use super::{Ctx, DataSourceValue, P};
use crate::access_log::Format;
use crate::config::model::AccessLogConfig;
use crate::config::raw::{self, List};
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
        if l.filter.is_some() {
            cx.error(
                &lp.key("filter"),
                "access log filters are not supported: the logger would write every request instead of the ones the filter selects",
            );
        }
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
        if let Some((path, format)) = logger {
            out.push(AccessLogConfig { path, format: Arc::new(format), yaml_path: lp.0.clone() });
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
        log_format(cx, &p.key("log_format"), lf)?
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
        Some(lf) => log_format(cx, &p.key("log_format"), lf)?,
        None if s.log_format.is_some() => return None,
        None => Format::default_text(),
    };
    Some((path.to_string(), format))
}

/// `SubstitutionFormatString`: `text_format`, `text_format_source` or `json_format`.
fn log_format(cx: &mut Ctx, p: &P, s: &raw::SubstitutionFormatString) -> Option<Format> {
    cx.other(p, s, &[]);
    if cx.boolean(p, "omit_empty_values", &s.omit_empty_values, false) {
        cx.error(&p.key("omit_empty_values"), "not supported: missing values are written as `-` (or null in JSON)");
    }
    if cx.opt(p, "content_type", &s.content_type).is_some() {
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
