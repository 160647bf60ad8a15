//! Request bodies as the services accept them: strict JSON first, the old
//! clients' single-quoted pseudo-JSON as a fallback, under any content type
//! (the old clients send `application/x-www-form-urlencoded`), at most
//! [`MAX_BODY_BYTES`]. Errors name the field they are about.

pub mod single_quoted;

use poem::http::header;
use poem::web::RequestBody;
use poem::Request;
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::error::ApiError;

/// The largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Why a request body was rejected.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Nothing but whitespace was sent.
    #[error("request body is empty; expected a JSON object")]
    Empty,
    /// More than [`MAX_BODY_BYTES`] were sent.
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The connection failed while the body was read.
    #[error("failed to read request body: {0}")]
    Read(String),
    /// Neither JSON nor the old single-quoted form.
    #[error("request body is not valid JSON: {0}")]
    Syntax(String),
    /// Valid JSON of the wrong shape: a missing, unknown or ill-typed field.
    #[error("invalid request body: {0}")]
    Shape(String),
}

impl From<BodyError> for ApiError {
    fn from(err: BodyError) -> Self {
        match err {
            BodyError::TooLarge { limit } => ApiError::PayloadTooLarge { limit },
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

/// Parses `bytes` as JSON, falling back to the single-quoted form when they
/// are not JSON and contain a `'`.
pub fn parse_value(bytes: &[u8]) -> Result<Value, BodyError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Empty);
    }
    let strict_error = match serde_json::from_slice(bytes) {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    let Some(text) = std::str::from_utf8(bytes).ok().filter(|t| t.contains('\'')) else {
        return Err(BodyError::Syntax(strict_error.to_string()));
    };
    let rewritten = single_quoted::to_json(text).map_err(|e| BodyError::Syntax(e.to_string()))?;
    serde_json::from_str(&rewritten).map_err(|e| BodyError::Syntax(e.to_string()))
}

/// Parses `bytes` (see [`parse_value`]) as a JSON object into `T`, naming
/// the offending field in the error.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    let value = parse_value(bytes)?;
    // serde would also accept a struct as an array of its fields in order.
    let found = match &value {
        Value::Object(_) => None,
        Value::Array(_) => Some("an array"),
        Value::String(_) => Some("a string"),
        Value::Number(_) => Some("a number"),
        Value::Bool(_) => Some("a boolean"),
        Value::Null => Some("null"),
    };
    if let Some(found) = found {
        return Err(BodyError::Shape(format!("expected a JSON object, found {found}")));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            BodyError::Shape(inner.to_string())
        } else {
            BodyError::Shape(format!("{path}: {inner}"))
        }
    })
}

/// The longest name or language accepted, in characters. Names are
/// indexed, and a PostgreSQL index entry must stay under about 2.7 kB (four
/// bytes a character at most).
pub const MAX_TEXT_CHARS: usize = 500;

/// The JSON-schema `pattern` of a text field, for the OpenAPI document: a
/// character that is not whitespace, and no NUL (PostgreSQL cannot store
/// it). [`text_problem`] is the check that is applied.
pub const TEXT_PATTERN: &str = r"^[^\x00]*[^\s\x00][^\x00]*$";

/// Why `text` is not acceptable as a name or language, if it is not.
pub fn text_problem(text: &str) -> Option<String> {
    if text.trim().is_empty() {
        return Some("must not be empty".to_owned());
    }
    if text.contains('\0') {
        return Some("must not contain NUL characters".to_owned());
    }
    let chars = text.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Some(format!("must be at most {MAX_TEXT_CHARS} characters long, got {chars}"));
    }
    None
}

/// Deserializes an optional field that, when present, must be a `T`:
/// `null` is refused (the schema says the field is a `T` or absent).
/// Use with `#[serde(default, deserialize_with = "present")]`.
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// Deserializes a name or language: more than whitespace, no NUL, at most
/// [`MAX_TEXT_CHARS`] characters.
pub fn text_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let s = String::deserialize(deserializer)?;
    match text_problem(&s) {
        Some(problem) => Err(D::Error::custom(problem)),
        None => Ok(s),
    }
}

/// A request body parsed leniently into `T` (see the module docs).
///
/// `T` derives `serde::Deserialize` for parsing (its messages name fields)
/// and `poem_openapi::Object` for the schema in the OpenAPI document.
#[derive(Debug, Clone, PartialEq)]
pub struct LenientJson<T>(pub T);

impl<'a, T> ApiExtractor<'a> for LenientJson<T>
where
    T: Type + DeserializeOwned + Send,
{
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: Some(
                "A JSON object. For the old clients, any content type is accepted and a body \
                 that is not JSON may use single-quoted strings (`{'name': 'Citizen Kane'}`). \
                 At most 1 MiB.",
            ),
            content: vec![MetaMediaType { content_type: "application/json", schema: T::schema_ref() }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let bytes = read_limited(request, body, MAX_BODY_BYTES).await.map_err(ApiError::from)?;
        let value = parse(&bytes).map_err(ApiError::from)?;
        Ok(Self(value))
    }
}

/// Reads the whole body, refusing more than `limit` bytes: at once when
/// `Content-Length` says so, otherwise as soon as the limit is crossed.
async fn read_limited(request: &Request, body: &mut RequestBody, limit: usize) -> Result<Vec<u8>, BodyError> {
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let body = body.take().map_err(|e| BodyError::Read(e.to_string()))?;
    match body.into_bytes_limit(limit).await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(poem::error::ReadBodyError::PayloadTooLarge) => Err(BodyError::TooLarge { limit }),
        Err(e) => Err(BodyError::Read(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(deserialize_with = "text_field")]
        name: String,
        language: String,
    }

    fn err<T: std::fmt::Debug>(r: Result<T, BodyError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn strict_json_wins_even_with_apostrophes() {
        let v = parse_value(br#"{"name": "Schindler's List", "language": "English"}"#).unwrap();
        assert_eq!(v, json!({"name": "Schindler's List", "language": "English"}));
    }

    #[test]
    fn single_quoted_fallback() {
        let v = parse_value(b"{\n\t\t'name': 'Citizen Kane',\n\t\t'language': 'English'\n\t}").unwrap();
        assert_eq!(v, json!({"name": "Citizen Kane", "language": "English"}));
    }

    #[test]
    fn empty_and_garbage_bodies() {
        assert_eq!(err(parse_value(b"")), "request body is empty; expected a JSON object");
        assert_eq!(err(parse_value(b" \n\t")), "request body is empty; expected a JSON object");
        assert_eq!(
            err(parse_value(b"{\"name\": ")),
            "request body is not valid JSON: EOF while parsing a value at line 1 column 9"
        );
        assert_eq!(
            err(parse_value(b"{'name': 'x}")),
            "request body is not valid JSON: unterminated single-quoted string starting at line 1 column 10"
        );
        assert!(err(parse_value(b"\xff\xfe'")).starts_with("request body is not valid JSON: "));
    }

    #[test]
    fn shape_errors_name_the_field() {
        assert_eq!(err(parse::<Sample>(br#"{"language": "English"}"#)), "invalid request body: missing field `name`");
        assert_eq!(
            err(parse::<Sample>(br#"{"name": " ", "language": "English"}"#)),
            "invalid request body: name: must not be empty"
        );
        assert_eq!(
            err(parse::<Sample>(br#"{"name": 7, "language": "English"}"#)),
            "invalid request body: name: invalid type: integer `7`, expected a string"
        );
        assert!(
            err(parse::<Sample>(br#"{"name": "a", "language": "b", "year": 1941}"#)).contains("unknown field `year`")
        );
        assert_eq!(
            err(parse::<Sample>(br#"["Heat", "English"]"#)),
            "invalid request body: expected a JSON object, found an array"
        );
        assert_eq!(err(parse::<Sample>(b"null")), "invalid request body: expected a JSON object, found null");
    }

    #[test]
    fn text_fields_are_bounded() {
        assert_eq!(
            err(parse::<Sample>(br#"{"name": "a\u0000b", "language": "English"}"#)),
            "invalid request body: name: must not contain NUL characters"
        );
        let long = format!(r#"{{"name": "{}", "language": "English"}}"#, "\u{e9}".repeat(MAX_TEXT_CHARS + 1));
        assert_eq!(
            err(parse::<Sample>(long.as_bytes())),
            "invalid request body: name: must be at most 500 characters long, got 501"
        );
        let longest = format!(r#"{{"name": "{}", "language": "English"}}"#, "\u{e9}".repeat(MAX_TEXT_CHARS));
        assert!(parse::<Sample>(longest.as_bytes()).is_ok());
    }

    #[test]
    fn too_large_maps_to_413_everything_else_to_400() {
        use poem::error::ResponseError;
        let e = ApiError::from(BodyError::TooLarge { limit: 10 });
        assert_eq!(e.status(), poem::http::StatusCode::PAYLOAD_TOO_LARGE);
        let e = ApiError::from(BodyError::Empty);
        assert_eq!(e.status(), poem::http::StatusCode::BAD_REQUEST);
    }
}
