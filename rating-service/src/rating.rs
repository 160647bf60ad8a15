//! Ratings: the stored record, the bodies that create and replace one, and
//! how a rating value is read (a number or a numeric string, 0 to 5).

use std::fmt;

use poem_openapi::Object;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};
use service_common::body::{present, text_field};
use uuid::Uuid;

/// The lowest rating.
pub const MIN: f64 = 0.0;
/// The highest rating.
pub const MAX: f64 = 5.0;

/// A stored rating.
#[derive(Debug, Clone, PartialEq, Object, sqlx::FromRow)]
pub struct Rating {
    /// The rating's id; for a rating film-service registered, the film's id.
    pub id: Uuid,
    /// The rated film's name.
    pub name: String,
    /// From 0 to 5, e.g. 3.5.
    pub rating: f64,
}

/// The body of `POST /ratings`.
#[derive(Debug, Clone, PartialEq, Deserialize, Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct NewRating {
    /// The id to store the rating under; generated when absent. film-service
    /// passes the film's id. An id already in use is refused with 409.
    #[serde(default, deserialize_with = "present")]
    pub id: Option<Uuid>,
    /// The rated film's name; not blank, no NUL, at most 500 characters.
    #[oai(validator(min_length = 1, max_length = 500, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"))]
    #[serde(deserialize_with = "text_field")]
    pub name: String,
    /// From 0 to 5; a numeric string (`"3.5"`, as the old film-service sent)
    /// is accepted too.
    #[oai(validator(minimum(value = "0"), maximum(value = "5")))]
    #[serde(deserialize_with = "rating_value")]
    pub rating: f64,
}

/// The body of `PUT /ratings/{id}`: the rating's new name and value.
#[derive(Debug, Clone, PartialEq, Deserialize, Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct RatingUpdate {
    /// Optional; if given, it must be the id in the path (400 otherwise).
    /// Not in the OpenAPI schema: the old clients send it, new ones need not.
    #[oai(skip)]
    #[serde(default, deserialize_with = "present")]
    pub id: Option<Uuid>,
    /// The rated film's name; not blank, no NUL, at most 500 characters.
    #[oai(validator(min_length = 1, max_length = 500, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"))]
    #[serde(deserialize_with = "text_field")]
    pub name: String,
    /// From 0 to 5; a numeric string is accepted too.
    #[oai(validator(minimum(value = "0"), maximum(value = "5")))]
    #[serde(deserialize_with = "rating_value")]
    pub rating: f64,
}

/// Reads a rating from a JSON number or a string holding one, and checks
/// that it lies in [`MIN`]..=[`MAX`].
pub fn rating_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    deserializer.deserialize_any(RatingVisitor)
}

struct RatingVisitor;

impl RatingVisitor {
    fn check<E: de::Error>(value: f64) -> Result<f64, E> {
        if !(MIN..=MAX).contains(&value) {
            return Err(E::custom(format!("must be a number from {MIN} to {MAX}, got {value}")));
        }
        // -0 is a valid rating but should read as 0.
        Ok(value + 0.0)
    }
}

impl Visitor<'_> for RatingVisitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a number from {MIN} to {MAX}, or a string holding one")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Self::check(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Self::check(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Self::check(v as f64)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        match v.trim().parse::<f64>() {
            // "NaN" and "inf" parse as f64 but are no rating.
            Ok(value) if value.is_finite() => Self::check(value),
            _ => Err(E::custom(format!("must be a number from {MIN} to {MAX}, got the string {v:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use service_common::body::parse;

    fn rating(body: &str) -> Result<f64, String> {
        parse::<NewRating>(body.as_bytes()).map(|r| r.rating).map_err(|e| e.to_string())
    }

    #[test]
    fn numbers_and_numeric_strings() {
        assert_eq!(rating(r#"{"name": "a", "rating": 5}"#), Ok(5.0));
        assert_eq!(rating(r#"{"name": "a", "rating": 3.5}"#), Ok(3.5));
        assert_eq!(rating(r#"{"name": "a", "rating": 0}"#), Ok(0.0));
        assert_eq!(rating(r#"{"name": "a", "rating": "5"}"#), Ok(5.0));
        assert_eq!(rating(r#"{"name": "a", "rating": " 3.5 "}"#), Ok(3.5));
        assert_eq!(rating(r#"{"name": "a", "rating": "-0"}"#).map(f64::to_bits), Ok(0.0f64.to_bits()));
        assert_eq!(rating("{'name': 'a', 'rating': '4.5'}"), Ok(4.5));
    }

    #[test]
    fn out_of_range_and_non_numeric() {
        assert_eq!(
            rating(r#"{"name": "a", "rating": 5.5}"#),
            Err("invalid request body: rating: must be a number from 0 to 5, got 5.5".into())
        );
        assert_eq!(
            rating(r#"{"name": "a", "rating": -1}"#),
            Err("invalid request body: rating: must be a number from 0 to 5, got -1".into())
        );
        assert_eq!(
            rating(r#"{"name": "a", "rating": "five"}"#),
            Err(r#"invalid request body: rating: must be a number from 0 to 5, got the string "five""#.into())
        );
        for bad in [r#""NaN""#, r#""inf""#, r#""""#, "true", "null", "[5]"] {
            let body = format!(r#"{{"name": "a", "rating": {bad}}}"#);
            let err = rating(&body).unwrap_err();
            assert!(err.starts_with("invalid request body: rating: "), "{bad}: {err}");
        }
        assert_eq!(rating(r#"{"name": "a"}"#), Err("invalid request body: missing field `rating`".into()));
    }

    #[test]
    fn id_is_optional_but_must_be_a_uuid() {
        let r = parse::<NewRating>(br#"{"name": "a", "rating": 1}"#).unwrap();
        assert_eq!(r.id, None);
        let id = Uuid::new_v4();
        let r = parse::<NewRating>(format!(r#"{{"id": "{id}", "name": "a", "rating": 1}}"#).as_bytes()).unwrap();
        assert_eq!(r.id, Some(id));
        let err = parse::<NewRating>(br#"{"id": "42", "name": "a", "rating": 1}"#).unwrap_err();
        assert!(err.to_string().starts_with("invalid request body: id: "), "{err}");
    }
}
