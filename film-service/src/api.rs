//! The films API: `/films` and `/films/{id}`. Creating a film is in
//! [`crate::creation`].

use std::sync::Arc;

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi, Tags};
use service_common::listing::{self, Listing, DEFAULT_LIMIT};
use service_common::path_id::PathId;
use service_common::{ApiError, LenientJson};
use uuid::Uuid;

use crate::creation::create_film;
use crate::film::{Film, FilmUpdate, NewFilm};
use crate::store::StoreError;
use crate::AppState;

#[derive(Tags)]
enum ApiTags {
    /// Films `{id, name, language}`.
    Films,
}

/// The answer to `GET /films`.
#[derive(ApiResponse)]
pub enum Listed {
    /// A page of films, oldest first, or with `name`, the film of that
    /// name. `Link` (RFC 8288) gives the next page's URL, `rel="next"`, when
    /// there may be more films; it is absent on the last page.
    #[oai(status = 200)]
    Ok(Json<Listing<Film>>, #[oai(header = "Link")] Option<String>),
}

/// The answer to a successful `POST /films`.
#[derive(ApiResponse)]
pub enum Created {
    /// The film and its rating (5) were stored; `Location` is the film's URL.
    #[oai(status = 201)]
    Created(Json<Film>, #[oai(header = "Location")] String),
}

/// The answer to a successful `DELETE /films/{id}`.
#[derive(ApiResponse)]
pub enum Deleted {
    /// The film was removed (its rating stays in rating-service).
    #[oai(status = 204)]
    Deleted,
}

/// The films endpoints.
pub struct FilmApi {
    state: Arc<AppState>,
}

impl FilmApi {
    /// Serves the films of `state`.
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("no film with id {id}"))
}

fn refused(err: StoreError) -> ApiError {
    match err {
        StoreError::NameTaken(name) => ApiError::Conflict(format!("a film named {name:?} already exists")),
        StoreError::IdTaken(id) => ApiError::Conflict(format!("a film with id {id} already exists")),
        StoreError::Db(e) => e.into(),
    }
}

#[OpenApi(tag = "ApiTags::Films")]
impl FilmApi {
    /// List films, oldest first, a page at a time; or with `name`, get the
    /// film of that name (404 if none; `limit` and `after` are then
    /// checked but do not apply).
    #[oai(path = "/films", method = "get", operation_id = "listFilms")]
    async fn list(
        &self,
        /// The exact name of the film to get.
        name: Query<Option<String>>,
        /// Films per page (default 100, at most 1000).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u32>>,
        /// Where the page starts: the opaque cursor of the `Link` header
        /// (`rel="next"`) of the previous page. Absent: from the oldest film.
        #[oai(validator(pattern = "^[0-9]{1,18}$"))]
        after: Query<Option<String>>,
    ) -> Result<Listed, ApiError> {
        let limit = limit.0.unwrap_or(DEFAULT_LIMIT);
        let position = listing::parse_after(after.0.as_deref())?;
        if let Some(name) = name.0 {
            return match self.state.films.find_by_name(&name).await? {
                Some(film) => Ok(Listed::Ok(Json(Listing::One(film)), None)),
                None => Err(ApiError::NotFound(format!("no film named {name:?}"))),
            };
        }
        let page = self.state.films.page(position, limit).await?;
        let link = page.next.map(|next| listing::next_link("/films", limit, &next));
        Ok(Listed::Ok(Json(Listing::All(page.items)), link))
    }

    /// Create a film and register its rating (5) with rating-service, under
    /// the film's id (201 with `Location`). 409 if the name is taken; 503
    /// if the database or rating-service is unavailable, 502 if
    /// rating-service refuses; then nothing is stored.
    #[oai(path = "/films", method = "post", operation_id = "createFilm")]
    async fn create(&self, body: LenientJson<NewFilm>) -> Result<Created, ApiError> {
        let state = self.state.clone();
        // Run to the end even if the client disconnects, so a creation is
        // never left half done by a hang-up.
        let film = tokio::spawn(async move { create_film(&state, body.0).await }).await.map_err(|e| {
            tracing::error!(error = %e, "film creation task failed");
            ApiError::Internal
        })??;
        let location = format!("/films/{}", film.id);
        Ok(Created::Created(Json(film), location))
    }

    /// Get one film (404 if none).
    #[oai(path = "/films/:id", method = "get", operation_id = "getFilm")]
    async fn get(&self, id: Path<PathId>) -> Result<Json<Film>, ApiError> {
        let id = id.0.parse("film")?;
        self.state.films.get(id).await?.map(Json).ok_or_else(|| not_found(id))
    }

    /// Replace the name and language of an existing film (404 if none, 409
    /// if the new name is another film's). Its rating is not changed.
    #[oai(path = "/films/:id", method = "put", operation_id = "replaceFilm")]
    async fn replace(&self, id: Path<PathId>, body: LenientJson<FilmUpdate>) -> Result<Json<Film>, ApiError> {
        let id = id.0.parse("film")?;
        let update = body.0;
        if let Some(body_id) = update.id.filter(|body_id| *body_id != id) {
            return Err(ApiError::BadRequest(format!(
                "id in the body ({body_id}) differs from the id in the path ({id})"
            )));
        }
        let film = Film { id, name: update.name, language: update.language };
        self.state.films.replace(&film).await.map_err(refused)?.map(Json).ok_or_else(|| not_found(id))
    }

    /// Delete a film (204; 404 if none). Its rating stays in rating-service.
    #[oai(path = "/films/:id", method = "delete", operation_id = "deleteFilm")]
    async fn delete(&self, id: Path<PathId>) -> Result<Deleted, ApiError> {
        let id = id.0.parse("film")?;
        if self.state.films.remove(id).await? {
            Ok(Deleted::Deleted)
        } else {
            Err(not_found(id))
        }
    }
}

#[cfg(test)]
mod tests;
