//! Creating a film across two databases: the film in film-service's, its
//! rating in rating-service's. There is no transaction spanning both, so
//! the film's row is the record of what is under way:
//!
//! 1. **reserve**: a pending row with the film's id and name (one INSERT).
//!    The unique constraints refuse a taken name here, before rating-service
//!    is asked anything, whichever replica the other request went to.
//!    Readers do not see pending rows.
//! 2. **register** the rating (5) with rating-service under the film's id.
//! 3. **commit**: the row stops being pending (one UPDATE); from now on the
//!    film is visible, and it has its rating.
//!
//! If step 2 or 3 fails, the creation is undone before the client is
//! answered 503/502: the rating is deleted if it may exist, then the pending
//! row. Whatever cannot be undone at once (rating-service or the database
//! is down, or film-service dies between steps) is left as a pending row,
//! and the sweeper ([`sweep`], every replica, every `--sweep-interval`)
//! undoes it once it is older than `--pending-timeout`: it deletes the
//! rating (a rating that is not there counts as deleted) and then the row.
//! A creator may only commit within the pending timeout, so the sweeper and
//! a slow creator never both act on the same row. Undoing is always right:
//! a pending film was never shown to anyone, and its client never got a
//! 201.

use std::sync::Arc;
use std::time::Duration;

use service_common::ApiError;
use uuid::Uuid;

use crate::film::{Film, NewFilm};
use crate::rating_client::CallError;
use crate::store::StoreError;
use crate::AppState;

/// How many stale pending films one sweep undoes at most.
const SWEEP_BATCH: u32 = 100;

/// Creates a film (see the module docs); on success the film is stored and
/// visible, and its rating is registered.
pub async fn create_film(state: &AppState, new: NewFilm) -> Result<Film, ApiError> {
    let id = Uuid::new_v4();
    state.films.reserve(id, &new.name, &new.language).await.map_err(|e| refused(e, &new.name))?;

    if let Err(err) = state.ratings.register(id, &new.name).await {
        tracing::warn!(film = %id, name = %new.name, error = %err, "rating registration failed; film not stored");
        undo(state, id, rating_may_exist(&err)).await;
        return Err(rating_failed(&err));
    }

    match state.films.commit(id, state.pending_timeout).await {
        Ok(Some(film)) => {
            tracing::debug!(id = %film.id, name = %film.name, "film stored");
            Ok(film)
        }
        Ok(None) => {
            tracing::warn!(film = %id, timeout = ?state.pending_timeout, "film creation took longer than the pending timeout");
            undo(state, id, true).await;
            Err(ApiError::Unavailable("film not stored: creating it took too long; try again later".to_owned()))
        }
        Err(err) => {
            tracing::warn!(film = %id, error = %err, "committing the film failed");
            undo(state, id, true).await;
            Err(ApiError::Unavailable("film not stored: database unavailable; try again later".to_owned()))
        }
    }
}

/// Whether rating-service may have stored the rating although the call
/// failed: a request that was sent and not answered, or answered with a
/// 5xx (an intermediary's, possibly after the rating was stored). A refused
/// connection or a 4xx means it was not stored.
fn rating_may_exist(err: &CallError) -> bool {
    match err {
        CallError::Unreachable(_) => false,
        CallError::NoAnswer(_) => true,
        CallError::Rejected { status, .. } => status.is_server_error(),
    }
}

/// Undoes a creation that failed after its reservation. Each step that
/// fails leaves the pending row for the sweeper; the name is given back at
/// once whenever possible, so the client's retry is not refused with 409.
async fn undo(state: &AppState, id: Uuid, rating_may_exist: bool) {
    if rating_may_exist {
        if let Err(e) = state.ratings.unregister(id).await {
            tracing::warn!(film = %id, error = %e, "cannot delete the rating of an unstored film now; the sweeper will");
            if let Err(e) = state.films.abandon(id).await {
                tracing::warn!(film = %id, error = %e, "cannot give the name back now; the sweeper will");
            }
            return;
        }
    }
    if let Err(e) = state.films.release(id).await {
        tracing::warn!(film = %id, error = %e, "cannot delete the pending film now; the sweeper will");
    }
}

/// Undoes every pending film older than the pending timeout (up to a
/// batch); returns how many were undone.
pub async fn sweep(state: &AppState) -> Result<usize, StoreError> {
    let stale = state.films.stale_pending(state.pending_timeout, SWEEP_BATCH).await?;
    let mut undone = 0;
    for id in stale {
        match state.ratings.unregister(id).await {
            Ok(()) => {
                state.films.release(id).await?;
                tracing::info!(film = %id, "undid a film creation that did not finish");
                undone += 1;
            }
            Err(e) => tracing::warn!(film = %id, error = %e, "cannot delete the rating of an unfinished film yet"),
        }
    }
    Ok(undone)
}

/// Sweeps every `interval` until the process ends.
pub async fn run_sweeper(state: Arc<AppState>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if state.films.database().ready().is_err() {
            continue;
        }
        if let Err(e) = sweep(&state).await {
            tracing::warn!(error = %e, "sweeping unfinished film creations failed");
        }
    }
}

/// The client's answer when the reservation was refused.
fn refused(err: StoreError, name: &str) -> ApiError {
    match err {
        StoreError::NameTaken(_) => ApiError::Conflict(format!("a film named {name:?} already exists")),
        StoreError::IdTaken(id) => ApiError::Conflict(format!("a film with id {id} already exists")),
        StoreError::Db(e) => e.into(),
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

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;

    #[test]
    fn which_failures_may_have_stored_the_rating() {
        let rejected = |status| CallError::Rejected { status, message: String::new() };
        assert!(!rating_may_exist(&CallError::Unreachable("refused".into())));
        assert!(rating_may_exist(&CallError::NoAnswer("timed out".into())));
        assert!(rating_may_exist(&rejected(StatusCode::BAD_GATEWAY)));
        assert!(rating_may_exist(&rejected(StatusCode::INTERNAL_SERVER_ERROR)));
        // A 409 is another rating's id: deleting it would destroy it.
        assert!(!rating_may_exist(&rejected(StatusCode::CONFLICT)));
        assert!(!rating_may_exist(&rejected(StatusCode::BAD_REQUEST)));
    }
}
