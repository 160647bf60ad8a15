//! The ratings API: `/ratings` and `/ratings/{id}`.

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi, Tags};
use service_common::catalog::CatalogError;
use service_common::listing::Listing;
use service_common::path_id::PathId;
use service_common::{ApiError, LenientJson};
use uuid::Uuid;

use crate::rating::{NewRating, Rating, RatingUpdate, Ratings};

#[derive(Tags)]
enum ApiTags {
    /// Film ratings `{id, name, rating}`.
    Ratings,
}

/// The answer to a successful `POST /ratings`.
#[derive(ApiResponse)]
pub enum Created {
    /// The rating was stored; `Location` is its URL.
    #[oai(status = 201)]
    Created(Json<Rating>, #[oai(header = "Location")] String),
}

/// The answer to a successful `DELETE /ratings/{id}`.
#[derive(ApiResponse)]
pub enum Deleted {
    /// The rating was removed.
    #[oai(status = 204)]
    Deleted,
}

/// The ratings endpoints.
pub struct RatingApi {
    ratings: Ratings,
}

impl RatingApi {
    /// Serves `ratings`.
    pub fn new(ratings: Ratings) -> Self {
        Self { ratings }
    }
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("no rating with id {id}"))
}

fn conflict(err: CatalogError) -> ApiError {
    match err {
        CatalogError::IdTaken(id) => ApiError::Conflict(format!("a rating with id {id} already exists")),
        CatalogError::NameTaken(name) => ApiError::Conflict(format!("a rating named {name:?} already exists")),
        CatalogError::NotFound(id) => not_found(id),
    }
}

#[OpenApi(tag = "ApiTags::Ratings")]
impl RatingApi {
    /// List all ratings, or with `name`, get the newest rating of that name
    /// (404 if none).
    #[oai(path = "/ratings", method = "get", operation_id = "listRatings")]
    async fn list(&self, name: Query<Option<String>>) -> Result<Json<Listing<Rating>>, ApiError> {
        match name.0 {
            None => Ok(Json(Listing::All(self.ratings.list()))),
            Some(name) => match self.ratings.find_by_name(&name) {
                Some(rating) => Ok(Json(Listing::One(rating))),
                None => Err(ApiError::NotFound(format!("no rating named {name:?}"))),
            },
        }
    }

    /// Store a rating (201 with `Location`); 409 if the id is taken.
    #[oai(path = "/ratings", method = "post", operation_id = "createRating")]
    async fn create(&self, body: LenientJson<NewRating>) -> Result<Created, ApiError> {
        let new = body.0;
        let rating = Rating { id: new.id.unwrap_or_else(Uuid::new_v4), name: new.name, rating: new.rating };
        let rating = self.ratings.insert(rating).map_err(conflict)?;
        tracing::debug!(id = %rating.id, name = %rating.name, "rating stored");
        let location = format!("/ratings/{}", rating.id);
        Ok(Created::Created(Json(rating), location))
    }

    /// Get one rating (404 if none).
    #[oai(path = "/ratings/:id", method = "get", operation_id = "getRating")]
    async fn get(&self, id: Path<PathId>) -> Result<Json<Rating>, ApiError> {
        let id = id.0.parse("rating")?;
        self.ratings.get(id).map(Json).ok_or_else(|| not_found(id))
    }

    /// Replace the name and value of an existing rating (404 if none).
    #[oai(path = "/ratings/:id", method = "put", operation_id = "replaceRating")]
    async fn replace(&self, id: Path<PathId>, body: LenientJson<RatingUpdate>) -> Result<Json<Rating>, ApiError> {
        let id = id.0.parse("rating")?;
        let update = body.0;
        if let Some(body_id) = update.id.filter(|body_id| *body_id != id) {
            return Err(ApiError::BadRequest(format!(
                "id in the body ({body_id}) differs from the id in the path ({id})"
            )));
        }
        let rating = Rating { id, name: update.name, rating: update.rating };
        self.ratings.replace(rating).map(Json).map_err(conflict)
    }

    /// Delete a rating (204; 404 if none).
    #[oai(path = "/ratings/:id", method = "delete", operation_id = "deleteRating")]
    async fn delete(&self, id: Path<PathId>) -> Result<Deleted, ApiError> {
        let id = id.0.parse("rating")?;
        self.ratings.remove(id).map(|_| Deleted::Deleted).ok_or_else(|| not_found(id))
    }
}

#[cfg(test)]
mod tests;
