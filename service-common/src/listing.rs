//! The answer of `GET /<collection>[?name=NAME]`: one page of the
//! collection as an array, or with `name`, the one matching record as an
//! object; and how pages are asked for and linked.
//!
//! Pages are oldest first, at most `limit` records (default
//! [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]); when more may follow, the
//! response has a `Link: <...&after=CURSOR>; rel="next"` header (RFC 8288).
//! The cursor is opaque to clients; it is the storage order of the last
//! record of the page, so a page costs one index range scan however deep
//! it is. Every record that exists when a listing starts and still exists
//! when it ends is listed exactly once; records created meanwhile may or
//! may not be.
//!
//! poem-openapi's `Union` derive would describe this as `type: object` with
//! a `oneOf` that includes an array, which no validator accepts; this type
//! describes it as a plain `oneOf`.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};
use serde_json::Value;

use crate::error::ApiError;

/// Records per page when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 100;
/// The largest `limit` accepted.
pub const MAX_LIMIT: u32 = 1000;

/// One page of records, and the cursor of the next page if there may be one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The records, oldest first.
    pub items: Vec<T>,
    /// The `after` value of the next page; `None` on the last page.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows of `(position, record)`: the
    /// extra row only says that there is a next page.
    pub fn from_rows(mut rows: Vec<(i64, T)>, limit: u32) -> Self {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next = if more { rows.last().map(|(position, _)| position.to_string()) } else { None };
        Self { items: rows.into_iter().map(|(_, record)| record).collect(), next }
    }
}

/// The position after which a page starts: 0 (before the first record)
/// without `after`, else the decoded cursor.
pub fn parse_after(after: Option<&str>) -> Result<i64, ApiError> {
    match after {
        None => Ok(0),
        Some(cursor) => cursor.parse::<i64>().ok().filter(|position| *position >= 0).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "invalid cursor {cursor:?}: pass `after` exactly as the `Link` header of the previous page gives it"
            ))
        }),
    }
}

/// The `Link` header value pointing at the next page of `path`.
pub fn next_link(path: &str, limit: u32, next: &str) -> String {
    format!("<{path}?limit={limit}&after={next}>; rel=\"next\"")
}

/// Every record, or the one a name lookup found.
#[derive(Debug, Clone, PartialEq)]
pub enum Listing<T> {
    /// A page of records, oldest first.
    All(Vec<T>),
    /// The record with the requested name.
    One(T),
}

impl<T: Type> Type for Listing<T> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        format!("{}Listing", T::name()).into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Reference(Self::name().into_owned())
    }

    fn register(registry: &mut Registry) {
        registry.create_schema::<Self, _>(Self::name().into_owned(), |registry| {
            T::register(registry);
            Vec::<T>::register(registry);
            MetaSchema {
                description: Some(
                    "A page of records, oldest first (no `name` given), or the one with the given `name`.",
                ),
                one_of: vec![Vec::<T>::schema_ref(), T::schema_ref()],
                ..MetaSchema::ANY
            }
        });
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl<T: ToJSON> ToJSON for Listing<T> {
    fn to_json(&self) -> Option<Value> {
        match self {
            Listing::All(all) => all.to_json(),
            Listing::One(one) => one.to_json(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_know_whether_more_follow() {
        let rows = |n: i64| (1..=n).map(|i| (i * 10, i)).collect::<Vec<_>>();
        assert_eq!(Page::from_rows(rows(3), 2), Page { items: vec![1, 2], next: Some("20".into()) });
        assert_eq!(Page::from_rows(rows(2), 2), Page { items: vec![1, 2], next: None });
        assert_eq!(Page::from_rows(rows(0), 2), Page { items: Vec::<i64>::new(), next: None });
    }

    #[test]
    fn cursors_and_links() {
        assert_eq!(parse_after(None).unwrap(), 0);
        assert_eq!(parse_after(Some("42")).unwrap(), 42);
        for bad in ["", "x", "-1", "1.5", "99999999999999999999"] {
            let err = parse_after(Some(bad)).unwrap_err().to_string();
            assert!(err.starts_with("invalid cursor"), "{bad}: {err}");
        }
        assert_eq!(next_link("/films", 100, "42"), r#"</films?limit=100&after=42>; rel="next""#);
    }
}
