//! The films API: `/films` and `/films/{id}`.
//!
//! Creating a film registers its rating with rating-service first and only
//! then stores the film, so a film is never visible without its rating; if
//! rating-service fails, nothing is stored (see [`create_film`]).

use std::sync::Arc;

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi, Tags};
use service_common::catalog::CatalogError;
use service_common::listing::Listing;
use service_common::path_id::PathId;
use service_common::{ApiError, LenientJson};
use uuid::Uuid;

use crate::film::{Film, FilmUpdate, NewFilm};
use crate::rating_client::CallError;
use crate::AppState;

#[derive(Tags)]
enum ApiTags {
    /// Films `{id, name, language}`.
    Films,
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

fn conflict(err: CatalogError) -> ApiError {
    match err {
        CatalogError::NameTaken(name) => ApiError::Conflict(format!("a film named {name:?} already exists")),
        CatalogError::IdTaken(id) => ApiError::Conflict(format!("a film with id {id} already exists")),
        CatalogError::NotFound(id) => not_found(id),
    }
}

/// What the client is told when the rating could not be registered.
fn rating_failed(err: &CallError) -> ApiError {
    match err {
        CallError::Unreachable(_) => {
            ApiError::Unavailable("film not stored: rating-service could not be reached; try again later".to_owned())
        }
        CallError::NoAnswer(_) => {
            ApiError::Unavailable("film not stored: rating-service did not answer in time; try again later".to_owned())
        }
        CallError::Rejected { status, message } => {
            ApiError::BadGateway(format!("film not stored: rating-service refused its rating ({status}: {message})"))
        }
    }
}

/// Creates a film: reserves its id and name, registers its rating, then
/// commits the film. Readers never see a reserved film; if registering
/// fails the reservation is dropped and nothing is stored. A registration
/// that timed out may still have been applied by rating-service, so it is
/// undone in the background, best effort.
pub async fn create_film(state: &AppState, new: NewFilm) -> Result<Film, ApiError> {
    let reservation = state.films.reserve(Uuid::new_v4(), &new.name).map_err(conflict)?;
    let id = reservation.id();
    if let Err(err) = state.ratings.register(id, reservation.name()).await {
        tracing::warn!(film = %id, name = %reservation.name(), error = %err, "rating registration failed; film not stored");
        if err.outcome_unknown() {
            let ratings = state.ratings.clone();
            tokio::spawn(async move {
                match ratings.unregister(id).await {
                    Ok(()) => tracing::info!(film = %id, "rating of the unstored film removed"),
                    Err(e) => tracing::warn!(film = %id, error = %e, "could not remove the rating of an unstored film"),
                }
            });
        }
        return Err(rating_failed(&err));
    }
    let film = reservation.commit(|id, name| Film { id, name, language: new.language });
    tracing::debug!(id = %film.id, name = %film.name, "film stored");
    Ok(film)
}

#[OpenApi(tag = "ApiTags::Films")]
impl FilmApi {
    /// List all films, or with `name`, get the film of that name (404 if
    /// none).
    #[oai(path = "/films", method = "get", operation_id = "listFilms")]
    async fn list(&self, name: Query<Option<String>>) -> Result<Json<Listing<Film>>, ApiError> {
        match name.0 {
            None => Ok(Json(Listing::All(self.state.films.list()))),
            Some(name) => match self.state.films.find_by_name(&name) {
                Some(film) => Ok(Json(Listing::One(film))),
                None => Err(ApiError::NotFound(format!("no film named {name:?}"))),
            },
        }
    }

    /// Create a film and register its rating (5) with rating-service, under
    /// the film's id (201 with `Location`). 409 if the name is taken; 503 or
    /// 502 if rating-service is unreachable or refuses, and then nothing is
    /// stored.
    #[oai(path = "/films", method = "post", operation_id = "createFilm")]
    async fn create(&self, body: LenientJson<NewFilm>) -> Result<Created, ApiError> {
        let state = self.state.clone();
        // Run to the end even if the client disconnects, so a registered
        // rating is never left without its film.
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
        self.state.films.get(id).map(Json).ok_or_else(|| not_found(id))
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
        self.state.films.replace(film).map(Json).map_err(conflict)
    }

    /// Delete a film (204; 404 if none). Its rating stays in rating-service.
    #[oai(path = "/films/:id", method = "delete", operation_id = "deleteFilm")]
    async fn delete(&self, id: Path<PathId>) -> Result<Deleted, ApiError> {
        let id = id.0.parse("film")?;
        self.state.films.remove(id).map(|_| Deleted::Deleted).ok_or_else(|| not_found(id))
    }
}

#[cfg(test)]
mod tests;
