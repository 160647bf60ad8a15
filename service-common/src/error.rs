//! The one error type both services answer with, and the middleware that
//! makes every other error (unknown path, wrong method, unparsable path
//! parameter, a caught panic) answer with the same JSON shape.
//!
//! Every error response has the body `{"error": "<what is wrong>"}`.

use poem::error::ResponseError;
use poem::http::{header, HeaderValue, StatusCode};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, Registry};
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::{ApiResponse, Object};

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct ErrorBody {
    /// What went wrong, in words a client can act on.
    pub error: String,
}

/// Why a request failed; each variant is one status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed: bad JSON, a missing or empty field, ...
    #[error("{0}")]
    BadRequest(String),
    /// The addressed resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts what is stored (duplicate id or name).
    #[error("{0}")]
    Conflict(String),
    /// The request body is larger than the service accepts.
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A service this one depends on answered with an error.
    #[error("{0}")]
    BadGateway(String),
    /// A service this one depends on could not be reached in time.
    #[error("{0}")]
    Unavailable(String),
    /// A defect on our side; details are logged, not sent.
    #[error("internal error")]
    Internal,
}

impl ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn as_response(&self) -> Response {
        json_error(self.status(), self.to_string())
    }
}

/// In the OpenAPI document every operation may answer with any of these; the
/// status ranges keep the document honest without listing, per operation,
/// codes it cannot produce.
impl ApiResponse for ApiError {
    fn meta() -> MetaResponses {
        let content =
            || vec![MetaMediaType { content_type: "application/json; charset=utf-8", schema: ErrorBody::schema_ref() }];
        MetaResponses {
            responses: vec![
                MetaResponse {
                    description: "The request was rejected (malformed body, unknown id, \
                                  conflict, body too large); `error` says why.",
                    status: None,
                    status_range: Some("4XX".to_owned()),
                    content: content(),
                    headers: vec![],
                },
                MetaResponse {
                    description: "The service or one it depends on failed; nothing was stored.",
                    status: None,
                    status_range: Some("5XX".to_owned()),
                    content: content(),
                    headers: vec![],
                },
            ],
        }
    }

    fn register(registry: &mut Registry) {
        ErrorBody::register(registry);
    }
}

/// Builds the JSON error response for `status` with `message`.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ErrorBody { error: message.into() };
    Response::builder().status(status).content_type("application/json; charset=utf-8").body(body.to_json_string())
}

/// Middleware turning every error, and every error response that is not JSON
/// yet (poem's and poem-openapi's own are plain text), into the
/// `{"error": ...}` shape. Success responses pass through untouched.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonErrors;

impl<E: Endpoint> Middleware<E> for JsonErrors {
    type Output = JsonErrorsEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        JsonErrorsEndpoint { inner: ep }
    }
}

/// The endpoint [`JsonErrors`] wraps around its inner endpoint.
pub struct JsonErrorsEndpoint<E> {
    inner: E,
}

impl<E: Endpoint> Endpoint for JsonErrorsEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Response> {
        let resp = match self.inner.call(req).await {
            Ok(output) => output.into_response(),
            Err(err) => err.into_response(),
        };
        if !(resp.status().is_client_error() || resp.status().is_server_error())
            || is_json(resp.headers().get(header::CONTENT_TYPE))
        {
            return Ok(resp);
        }
        let (parts, body) = resp.into_parts();
        // The bodies rewritten here are the short messages poem's own errors
        // carry, so reading them whole is cheap.
        let text = body.into_string().await.unwrap_or_default();
        let message = match text.trim() {
            "" => parts.status.canonical_reason().unwrap_or("error").to_lowercase(),
            text => text.to_owned(),
        };
        let mut rewritten = json_error(parts.status, message);
        // Keep headers such as `Allow` and the extensions the route attached
        // (the matched path pattern the metrics label requests with).
        for (name, value) in parts.headers.iter() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                rewritten.headers_mut().insert(name.clone(), value.clone());
            }
        }
        *rewritten.extensions_mut() = parts.extensions;
        Ok(rewritten)
    }
}

fn is_json(content_type: Option<&HeaderValue>) -> bool {
    content_type.and_then(|v| v.to_str().ok()).and_then(|v| v.split(';').next()).is_some_and(|mime| {
        let mime = mime.trim();
        mime.eq_ignore_ascii_case("application/json") || mime.to_ascii_lowercase().ends_with("+json")
    })
}

/// An error and its sources, `: `-separated (reqwest's own message alone
/// hides the cause, e.g. "connection refused").
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::test::TestClient;
    use poem::{get, handler, EndpointExt, Route};

    #[handler]
    fn conflict() -> Result<()> {
        Err(ApiError::Conflict("a film named \"Heat\" already exists".into()).into())
    }

    #[handler]
    fn plain_failure() -> Result<()> {
        Err(poem::Error::from_string("boom", StatusCode::BAD_REQUEST))
    }

    #[handler]
    fn ok() -> &'static str {
        "fine"
    }

    fn app() -> impl Endpoint {
        Route::new().at("/conflict", get(conflict)).at("/plain", get(plain_failure)).at("/ok", get(ok)).with(JsonErrors)
    }

    #[tokio::test]
    async fn api_errors_keep_their_status_and_message() {
        let resp = TestClient::new(app()).get("/conflict").send().await;
        resp.assert_status(StatusCode::CONFLICT);
        resp.assert_content_type("application/json; charset=utf-8");
        resp.assert_json(serde_json::json!({"error": "a film named \"Heat\" already exists"})).await;
    }

    #[tokio::test]
    async fn plain_text_errors_become_json() {
        let resp = TestClient::new(app()).get("/plain").send().await;
        resp.assert_status(StatusCode::BAD_REQUEST);
        resp.assert_json(serde_json::json!({"error": "boom"})).await;
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_answer_json() {
        let client = TestClient::new(app());
        let resp = client.get("/nope").send().await;
        resp.assert_status(StatusCode::NOT_FOUND);
        resp.assert_json(serde_json::json!({"error": "not found"})).await;

        let resp = client.delete("/ok").send().await;
        resp.assert_status(StatusCode::METHOD_NOT_ALLOWED);
        resp.assert_json(serde_json::json!({"error": "method not allowed"})).await;
    }

    #[tokio::test]
    async fn success_passes_through() {
        let resp = TestClient::new(app()).get("/ok").send().await;
        resp.assert_status_is_ok();
        resp.assert_text("fine").await;
    }

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("tcp connect error: {0}")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn error_chain_names_every_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        assert_eq!(error_chain(&Outer(Middle(io))), "error sending request: tcp connect error: connection refused");
        assert_eq!(error_chain(&ApiError::Internal), "internal error");
    }

    #[test]
    fn json_content_types_are_recognised() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert!(is_json(Some(&v("application/json"))));
        assert!(is_json(Some(&v("Application/JSON; charset=utf-8"))));
        assert!(is_json(Some(&v("application/problem+json"))));
        assert!(!is_json(Some(&v("text/plain; charset=utf-8"))));
        assert!(!is_json(None));
    }
}
