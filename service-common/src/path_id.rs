//! Record ids in request paths (`/films/{id}`).
//!
//! poem-openapi reports an unparsable path parameter under its internal
//! name (``failed to parse path `param0` ``), which tells a client nothing.
//! So ids are taken as text, documented as UUIDs, and parsed by the handler
//! with [`PathId::parse`], whose error names what is wrong.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseFromParameter, ParseResult, Type};
use uuid::Uuid;

use crate::error::ApiError;

/// The text of an id path parameter; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathId(pub String);

impl PathId {
    /// The id as a UUID, or a 400 naming the `kind` of record (`film`).
    pub fn parse(&self, kind: &str) -> Result<Uuid, ApiError> {
        self.0.parse().map_err(|_| ApiError::BadRequest(format!("invalid {kind} id {:?}: not a UUID", self.0)))
    }
}

impl Type for PathId {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string_uuid".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new_with_format("string", "uuid")))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ParseFromParameter for PathId {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(Self(value.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uuids_and_names_the_kind_otherwise() {
        let id = Uuid::new_v4();
        assert_eq!(PathId(id.to_string()).parse("film").unwrap(), id);
        let err = PathId("42".into()).parse("film").unwrap_err();
        assert_eq!(err.to_string(), r#"invalid film id "42": not a UUID"#);
    }
}
