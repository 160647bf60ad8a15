//! The ratings API: `/ratings` and `/ratings/{id}`.

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi, Tags};
use service_common::listing::{self, Listing, DEFAULT_LIMIT};
use service_common::path_id::PathId;
use service_common::{ApiError, LenientJson};
use uuid::Uuid;

use crate::rating::{NewRating, Rating, RatingUpdate};
use crate::store::{RatingStore, StoreError};

#[derive(Tags)]
enum ApiTags {
    /// Film ratings `{id, name, rating}`.
    Ratings,
}

/// The answer to `GET /ratings`.
#[derive(ApiResponse)]
pub enum Listed {
    /// A page of ratings, oldest first, or with `name`, the newest rating of
    /// that name. `Link` (RFC 8288) gives the next page's URL,
    /// `rel="next"`, when there may be more ratings; it is absent on the
    /// last page.
    #[oai(status = 200)]
    Ok(Json<Listing<Rating>>, #[oai(header = "Link")] Option<String>),
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
    ratings: RatingStore,
}

impl RatingApi {
    /// Serves `ratings`.
    pub fn new(ratings: RatingStore) -> Self {
        Self { ratings }
    }
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("no rating with id {id}"))
}

#[OpenApi(tag = "ApiTags::Ratings")]
impl RatingApi {
    /// List ratings, oldest first, a page at a time; or with `name`, get the
    /// newest rating of that name (404 if none; `limit` and `after` are then
    /// checked but do not apply).
    #[oai(path = "/ratings", method = "get", operation_id = "listRatings")]
    async fn list(
        &self,
        /// The exact name of the rating to get.
        name: Query<Option<String>>,
        /// Ratings per page (default 100, at most 1000).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u32>>,
        /// Where the page starts: the opaque cursor of the `Link` header
        /// (`rel="next"`) of the previous page. Absent: from the oldest
        /// rating.
        #[oai(validator(pattern = "^[0-9]{1,18}$"))]
        after: Query<Option<String>>,
    ) -> Result<Listed, ApiError> {
        let limit = limit.0.unwrap_or(DEFAULT_LIMIT);
        let position = listing::parse_after(after.0.as_deref())?;
        if let Some(name) = name.0 {
            return match self.ratings.find_by_name(&name).await? {
                Some(rating) => Ok(Listed::Ok(Json(Listing::One(rating)), None)),
                None => Err(ApiError::NotFound(format!("no rating named {name:?}"))),
            };
        }
        let page = self.ratings.page(position, limit).await?;
        let link = page.next.map(|next| listing::next_link("/ratings", limit, &next));
        Ok(Listed::Ok(Json(Listing::All(page.items)), link))
    }

    /// Store a rating (201 with `Location`); 409 if the id is taken.
    #[oai(path = "/ratings", method = "post", operation_id = "createRating")]
    async fn create(&self, body: LenientJson<NewRating>) -> Result<Created, ApiError> {
        let new = body.0;
        let rating = Rating { id: new.id.unwrap_or_else(Uuid::new_v4), name: new.name, rating: new.rating };
        self.ratings.insert(&rating).await.map_err(|e| match e {
            StoreError::IdTaken(id) => ApiError::Conflict(format!("a rating with id {id} already exists")),
            StoreError::Db(e) => e.into(),
        })?;
        tracing::debug!(id = %rating.id, name = %rating.name, "rating stored");
        let location = format!("/ratings/{}", rating.id);
        Ok(Created::Created(Json(rating), location))
    }

    /// Get one rating (404 if none).
    #[oai(path = "/ratings/:id", method = "get", operation_id = "getRating")]
    async fn get(&self, id: Path<PathId>) -> Result<Json<Rating>, ApiError> {
        let id = id.0.parse("rating")?;
        self.ratings.get(id).await?.map(Json).ok_or_else(|| not_found(id))
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
        self.ratings.replace(&rating).await?.map(Json).ok_or_else(|| not_found(id))
    }

    /// Delete a rating (204; 404 if none).
    #[oai(path = "/ratings/:id", method = "delete", operation_id = "deleteRating")]
    async fn delete(&self, id: Path<PathId>) -> Result<Deleted, ApiError> {
        let id = id.0.parse("rating")?;
        if self.ratings.remove(id).await? {
            Ok(Deleted::Deleted)
        } else {
            Err(not_found(id))
        }
    }
}

#[cfg(test)]
mod tests;
