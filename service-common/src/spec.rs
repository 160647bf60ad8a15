//! What the services derive from their OpenAPI document: the document as
//! served (every object schema closed with `additionalProperties: false`,
//! as the bodies refuse unknown fields), and the `Allow` header of a 405,
//! which poem's router leaves out (RFC 9110 requires it).

use std::sync::Arc;

use poem::http::{header, HeaderValue, StatusCode};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};
use serde_json::Value;

/// `spec` (an OpenAPI JSON document) with `additionalProperties: false` on
/// every object schema of its components that does not say otherwise.
/// poem-openapi's `deny_unknown_fields` refuses unknown fields but does not
/// say so in the schema; a client generating bodies from it must know.
pub fn close_object_schemas(spec: &str) -> String {
    let Ok(mut doc) = serde_json::from_str::<Value>(spec) else {
        return spec.to_owned();
    };
    if let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        for schema in schemas.values_mut().filter_map(Value::as_object_mut) {
            if schema.get("type").and_then(Value::as_str) == Some("object") {
                schema.entry("additionalProperties").or_insert(Value::Bool(false));
            }
        }
    }
    doc.to_string()
}

/// The methods of each path template of `spec`, e.g. `/films/{id}` →
/// `GET, PUT, DELETE`.
pub fn methods_by_path(spec: &str) -> Vec<(Vec<String>, String)> {
    let doc: Value = serde_json::from_str(spec).unwrap_or(Value::Null);
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        return Vec::new();
    };
    paths
        .iter()
        .map(|(path, item)| {
            let segments = path.split('/').map(str::to_owned).collect();
            let methods: Vec<String> =
                item.as_object().map(|ops| ops.keys().map(|m| m.to_ascii_uppercase()).collect()).unwrap_or_default();
            (segments, methods.join(", "))
        })
        .collect()
}

/// Middleware adding `Allow` to a 405 that has none, from the methods the
/// document gives the request's path.
#[derive(Debug, Clone)]
pub struct AllowHeader {
    paths: Arc<Vec<(Vec<String>, String)>>,
}

impl AllowHeader {
    /// Answers for the paths of `paths` ([`methods_by_path`]).
    pub fn new(paths: Vec<(Vec<String>, String)>) -> Self {
        Self { paths: Arc::new(paths) }
    }

    fn allowed(&self, path: &str) -> Option<&str> {
        let segments: Vec<&str> = path.split('/').collect();
        self.paths
            .iter()
            .find(|(template, _)| {
                template.len() == segments.len()
                    && template.iter().zip(&segments).all(|(t, s)| t == s || (t.starts_with('{') && !s.is_empty()))
            })
            .map(|(_, methods)| methods.as_str())
    }
}

impl<E: Endpoint> Middleware<E> for AllowHeader {
    type Output = AllowHeaderEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        AllowHeaderEndpoint { inner: ep, allow: self.clone() }
    }
}

/// The endpoint [`AllowHeader`] wraps around its inner endpoint.
pub struct AllowHeaderEndpoint<E> {
    inner: E,
    allow: AllowHeader,
}

impl<E: Endpoint> Endpoint for AllowHeaderEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Response> {
        let path = req.uri().path().to_owned();
        let mut resp = match self.inner.call(req).await {
            Ok(output) => output.into_response(),
            Err(err) => err.into_response(),
        };
        if resp.status() == StatusCode::METHOD_NOT_ALLOWED && !resp.headers().contains_key(header::ALLOW) {
            if let Some(value) = self.allow.allowed(&path).and_then(|m| HeaderValue::from_str(m).ok()) {
                resp.headers_mut().insert(header::ALLOW, value);
            }
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"{"paths": {"/films": {"get": {}, "post": {}}, "/films/{id}": {"get": {}, "delete": {}}},
        "components": {"schemas": {"Film": {"type": "object"}, "Open": {"type": "object", "additionalProperties": {}},
        "Listing": {"oneOf": []}}}}"#;

    #[test]
    fn object_schemas_are_closed() {
        let doc: Value = serde_json::from_str(&close_object_schemas(SPEC)).unwrap();
        assert_eq!(doc["components"]["schemas"]["Film"]["additionalProperties"], Value::Bool(false));
        assert_eq!(doc["components"]["schemas"]["Open"]["additionalProperties"], serde_json::json!({}));
        assert_eq!(doc["components"]["schemas"]["Listing"].get("additionalProperties"), None);
    }

    #[test]
    fn allow_lists_the_methods_of_the_matching_template() {
        let allow = AllowHeader::new(methods_by_path(SPEC));
        assert_eq!(allow.allowed("/films"), Some("GET, POST"));
        assert_eq!(allow.allowed("/films/42"), Some("DELETE, GET"));
        assert_eq!(allow.allowed("/films/"), None);
        assert_eq!(allow.allowed("/ratings"), None);
    }
}
