//! Films: the stored record and the bodies that create and replace one.

use poem_openapi::Object;
use serde::Deserialize;
use service_common::body::{present, text_field};
use uuid::Uuid;

/// A stored film.
#[derive(Debug, Clone, PartialEq, Eq, Object, sqlx::FromRow)]
pub struct Film {
    /// The film's id, generated on creation; its rating has the same id.
    pub id: Uuid,
    /// The film's name, unique among films.
    pub name: String,
    /// The film's language.
    pub language: String,
}

/// The body of `POST /films`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct NewFilm {
    /// The film's name; not blank, no NUL, at most 500 characters, not taken
    /// by another film.
    #[oai(validator(min_length = 1, max_length = 500, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"))]
    #[serde(deserialize_with = "text_field")]
    pub name: String,
    /// The film's language; not blank, no NUL, at most 500 characters.
    #[oai(validator(min_length = 1, max_length = 500, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"))]
    #[serde(deserialize_with = "text_field")]
    pub language: String,
}

/// The body of `PUT /films/{id}`: the film's new name and language.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct FilmUpdate {
    /// Optional; if given, it must be the id in the path (400 otherwise).
    /// Not in the OpenAPI schema: the old clients send it, new ones need not.
    #[oai(skip)]
    #[serde(default, deserialize_with = "present")]
    pub id: Option<Uuid>,
    /// The film's name; not blank, no NUL, at most 500 characters, not taken
    /// by another film.
    #[oai(validator(min_length = 1, max_length = 500, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"))]
    #[serde(deserialize_with = "text_field")]
    pub name: String,
    /// The film's language; not blank, no NUL, at most 500 characters.
    #[oai(validator(min_length = 1, max_length = 500, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"))]
    #[serde(deserialize_with = "text_field")]
    pub language: String,
}
