//! `request_headers_to_add/remove` and `response_headers_to_add/remove`.

use super::{decode_base64, Ctx, P};
use crate::config::raw::{self, List};
use crate::routing::{HeaderAppend, HeaderMutations, HeaderToAdd, HeaderValueFormat};
use http::header::HeaderName;

/// Why an edit of a framing field is refused.
const FRAMING_EDIT: &str = "content-length and transfer-encoding frame the message's body and are the \
     proxy's to write: an edit could make the peer read the message's end elsewhere (request or response smuggling), \
     so it is refused";

/// Fields that say where a message's body ends. The proxy writes them from
/// the body it sends; a configured edit of one (added, say, from a client's
/// `%REQ()%`, or removed from a request with a body) would let the peer
/// read a message boundary where the proxy did not put one. Envoy accepts
/// such edits; they are refused here rather than applied or ignored.
fn frames_the_body(name: &HeaderName) -> bool {
    name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING
}

pub(super) fn header_mutations(
    cx: &mut Ctx,
    p: &P,
    req_add: &Option<List<raw::HeaderValueOption>>,
    req_remove: &Option<List<String>>,
    resp_add: &Option<List<raw::HeaderValueOption>>,
    resp_remove: &Option<List<String>>,
) -> HeaderMutations {
    HeaderMutations {
        request_add: headers_to_add(cx, p, "request_headers_to_add", req_add),
        request_remove: headers_to_remove(cx, p, "request_headers_to_remove", req_remove),
        response_add: headers_to_add(cx, p, "response_headers_to_add", resp_add),
        response_remove: headers_to_remove(cx, p, "response_headers_to_remove", resp_remove),
    }
}

pub(super) fn headers_to_add(
    cx: &mut Ctx,
    p: &P,
    name: &str,
    f: &Option<List<raw::HeaderValueOption>>,
) -> Vec<HeaderToAdd> {
    let mut out = Vec::new();
    for (hp, h) in cx.list(p, name, f) {
        cx.other(&hp, h, &[]);
        let Some(hv) = cx.req(&hp, "header", &h.header) else {
            continue;
        };
        let vp = hp.key("header");
        cx.other(&vp, hv, &[]);
        let key = cx.req(&vp, "key", &hv.key).cloned();
        // `raw_value` is the value as bytes (base64 in YAML, as protobuf's
        // JSON mapping writes them): ignoring it added the header empty.
        let value = match (cx.string(&vp, "value", &hv.value), cx.string(&vp, "raw_value", &hv.raw_value)) {
            (Some(_), Some(_)) => {
                cx.error(&vp, "only one of `value` and `raw_value` may be set");
                continue;
            }
            (None, Some(raw)) => match decode_base64(&raw).map(String::from_utf8) {
                Some(Ok(v)) => v,
                Some(Err(_)) => {
                    cx.error(&vp.key("raw_value"), "must be text (a header value of visible ASCII)");
                    continue;
                }
                None => {
                    cx.error(&vp.key("raw_value"), "not valid base64");
                    continue;
                }
            },
            (value, None) => value.unwrap_or_default(),
        };
        if h.append.is_some() && h.append_action.is_some() {
            cx.error(&hp, "`append` and `append_action` are mutually exclusive");
        }
        let append = match cx.opt(&hp, "append", &h.append) {
            Some(true) => HeaderAppend::AppendIfExistsOrAdd,
            Some(false) => HeaderAppend::OverwriteIfExistsOrAdd,
            None => cx.enumeration(
                &hp,
                "append_action",
                &h.append_action,
                &[
                    ("APPEND_IF_EXISTS_OR_ADD", HeaderAppend::AppendIfExistsOrAdd),
                    ("ADD_IF_ABSENT", HeaderAppend::AddIfAbsent),
                    ("OVERWRITE_IF_EXISTS_OR_ADD", HeaderAppend::OverwriteIfExistsOrAdd),
                    ("OVERWRITE_IF_EXISTS", HeaderAppend::OverwriteIfExists),
                ],
                HeaderAppend::AppendIfExistsOrAdd,
            ),
        };
        let Some(key) = key else { continue };
        let Ok(header) = HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes()) else {
            cx.error(&vp.key("key"), format!("invalid header name {key:?}"));
            continue;
        };
        if key.starts_with(':') || header == http::header::HOST {
            cx.error(&vp.key("key"), "pseudo-headers and host cannot be modified this way");
            continue;
        }
        if frames_the_body(&header) {
            cx.error(&vp.key("key"), FRAMING_EDIT);
            continue;
        }
        let format = match HeaderValueFormat::parse(&value) {
            Ok(f) => f,
            Err(e) => {
                cx.error(&vp.key("value"), e);
                continue;
            }
        };
        if let Some(lit) = format.as_literal() {
            if http::HeaderValue::from_str(lit).is_err() {
                cx.error(&vp.key("value"), "not a valid header value");
                continue;
            }
        }
        out.push(HeaderToAdd {
            name: header,
            value: format,
            append,
            keep_empty_value: cx.boolean(&hp, "keep_empty_value", &h.keep_empty_value, false),
        });
    }
    out
}

pub(super) fn headers_to_remove(cx: &mut Ctx, p: &P, name: &str, f: &Option<List<String>>) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for (hp, h) in cx.list(p, name, f) {
        match HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) {
            Ok(n) if frames_the_body(&n) => cx.error(&hp, FRAMING_EDIT),
            Ok(n) if !h.starts_with(':') && n != http::header::HOST => out.push(n),
            _ => cx.error(&hp, format!("{h:?} cannot be removed (invalid, pseudo-header or host)")),
        }
    }
    out
}
