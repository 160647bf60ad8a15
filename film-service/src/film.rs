//! Films: the stored record and the bodies that create and replace one.

use poem_openapi::Object;
use serde::Deserialize;
use service_common::body::non_blank;
use service_common::catalog::{Catalog, Names, Record};
use uuid::Uuid;

/// A stored film.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct Film {
    /// The film's id, generated on creation; its rating has the same id.
    pub id: Uuid,
    /// The film's name, unique among films.
    pub name: String,
    /// The film's language.
    pub language: String,
}

impl Record for Film {
    fn id(&self) -> Uuid {
        self.id
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// The films of one film-service. Names are unique (exact match), so
/// `GET /films?name=` has one answer.
pub type Films = Catalog<Film>;

/// An empty [`Films`].
pub fn films() -> Films {
    Catalog::new(Names::Unique)
}

/// The body of `POST /films`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct NewFilm {
    /// The film's name; not empty, not taken by another film.
    #[oai(validator(min_length = 1))]
    #[serde(deserialize_with = "non_blank")]
    pub name: String,
    /// The film's language; not empty.
    #[oai(validator(min_length = 1))]
    #[serde(deserialize_with = "non_blank")]
    pub language: String,
}

/// The body of `PUT /films/{id}`: the film's new name and language.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct FilmUpdate {
    /// Optional; if given, it must be the id in the path.
    pub id: Option<Uuid>,
    /// The film's name; not empty, not taken by another film.
    #[oai(validator(min_length = 1))]
    #[serde(deserialize_with = "non_blank")]
    pub name: String,
    /// The film's language; not empty.
    #[oai(validator(min_length = 1))]
    #[serde(deserialize_with = "non_blank")]
    pub language: String,
}
