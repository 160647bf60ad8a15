//! Where films are kept: the `films` table of the service's own database,
//! SQLite or PostgreSQL (see `service_common::db`). One statement per
//! operation, so a read is one round trip; the database holds every rule
//! (unique ids and names), so they hold across replicas.
//!
//! A film is created in two steps (`crate::creation`): [`FilmStore::reserve`]
//! writes a *pending* row, which holds the id and the name but which no
//! reader sees, and [`FilmStore::commit`] turns it into a film. Pending rows
//! carry their age by the database's clock; the sweeper finds the old ones
//! with [`FilmStore::stale_pending`].
//!
//! The SQL is written once for both databases wherever they agree (`$1`
//! parameters work in both); only "now" differs.

use std::time::Duration;

use service_common::body::text_problem;
use service_common::db::{Database, DbError, Pool};
use service_common::listing::Page;
use service_common::on_pool;
use uuid::Uuid;

use crate::film::Film;

/// Why a change to the films was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Another film (or a film being created) has the name.
    #[error("name {0:?} is taken")]
    NameTaken(String),
    /// Another film has the id.
    #[error("id {0} is taken")]
    IdTaken(Uuid),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Milliseconds since the Unix epoch, by the database's clock.
const NOW_MS_SQLITE: &str = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";
const NOW_MS_POSTGRES: &str = "(extract(epoch FROM now()) * 1000)::bigint";

#[derive(sqlx::FromRow)]
struct PageRow {
    seq: i64,
    #[sqlx(flatten)]
    film: Film,
}

/// The films of one film-service; clones share the pool.
#[derive(Debug, Clone)]
pub struct FilmStore {
    db: Database,
    reserve_sql: String,
    commit_sql: String,
    stale_sql: String,
}

impl FilmStore {
    /// Films in `db` (migrated with [`MIGRATIONS`](crate::MIGRATIONS)).
    pub fn new(db: Database) -> Self {
        let now = if db.is_embedded() { NOW_MS_SQLITE } else { NOW_MS_POSTGRES };
        Self {
            reserve_sql: format!("INSERT INTO films (id, name, language, pending_since) VALUES ($1, $2, $3, {now})"),
            // A reservation older than the pending timeout belongs to the
            // sweeper: its creator may no longer commit it.
            commit_sql: format!(
                "UPDATE films SET pending_since = NULL \
                 WHERE id = $1 AND pending_since IS NOT NULL AND name IS NOT NULL AND pending_since > {now} - $2 \
                 RETURNING id, name, language"
            ),
            stale_sql: format!(
                "SELECT id FROM films WHERE pending_since IS NOT NULL AND pending_since <= {now} - $1 \
                 ORDER BY pending_since LIMIT $2"
            ),
            db,
        }
    }

    /// The database, for readiness.
    pub fn database(&self) -> &Database {
        &self.db
    }

    fn pool(&self) -> Result<&Pool, DbError> {
        self.db.ready()?;
        Ok(self.db.pool())
    }

    /// Up to `limit` films after position `after`, oldest first.
    pub async fn page(&self, after: i64, limit: u32) -> Result<Page<Film>, DbError> {
        const SQL: &str = "SELECT seq, id, name, language FROM films \
                           WHERE seq > $1 AND pending_since IS NULL ORDER BY seq LIMIT $2";
        let rows: Vec<PageRow> = on_pool!(self.pool()?, pool => {
            sqlx::query_as(SQL).bind(after).bind(i64::from(limit) + 1).fetch_all(pool).await?
        });
        Ok(Page::from_rows(rows.into_iter().map(|r| (r.seq, r.film)).collect(), limit))
    }

    /// The film with `id`.
    pub async fn get(&self, id: Uuid) -> Result<Option<Film>, DbError> {
        const SQL: &str = "SELECT id, name, language FROM films WHERE id = $1 AND pending_since IS NULL";
        Ok(on_pool!(self.pool()?, pool => sqlx::query_as(SQL).bind(id).fetch_optional(pool).await?))
    }

    /// The film named exactly `name`.
    pub async fn find_by_name(&self, name: &str) -> Result<Option<Film>, DbError> {
        const SQL: &str = "SELECT id, name, language FROM films WHERE name = $1 AND pending_since IS NULL";
        if text_problem(name).is_some() {
            // No film can have it (and PostgreSQL cannot even compare a NUL).
            return Ok(None);
        }
        Ok(on_pool!(self.pool()?, pool => sqlx::query_as(SQL).bind(name).fetch_optional(pool).await?))
    }

    /// Writes a pending film: `id` and `name` are taken from now on, but
    /// no reader sees it until [`FilmStore::commit`].
    pub async fn reserve(&self, id: Uuid, name: &str, language: &str) -> Result<(), StoreError> {
        let sql = self.reserve_sql.as_str();
        on_pool!(self.pool()?, pool => {
            sqlx::query(sql).bind(id).bind(name).bind(language).execute(pool).await.map(drop)
        })
        .map_err(|e| conflict(e.into(), id, name))?;
        Ok(())
    }

    /// Turns the pending film `id` into a film, unless it was reserved more
    /// than `timeout` ago or abandoned (then `None`: the sweeper owns it).
    pub async fn commit(&self, id: Uuid, timeout: Duration) -> Result<Option<Film>, DbError> {
        let sql = self.commit_sql.as_str();
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        Ok(on_pool!(self.pool()?, pool => {
            sqlx::query_as(sql).bind(id).bind(timeout_ms).fetch_optional(pool).await?
        }))
    }

    /// Deletes the pending film `id` (a film is never deleted here).
    pub async fn release(&self, id: Uuid) -> Result<(), DbError> {
        const SQL: &str = "DELETE FROM films WHERE id = $1 AND pending_since IS NOT NULL";
        on_pool!(self.pool()?, pool => sqlx::query(SQL).bind(id).execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Gives the name of the pending film `id` back but keeps the row, so
    /// the sweeper still removes its rating later: for when the rating may
    /// exist and could not be removed now.
    pub async fn abandon(&self, id: Uuid) -> Result<(), DbError> {
        const SQL: &str = "UPDATE films SET name = NULL WHERE id = $1 AND pending_since IS NOT NULL";
        on_pool!(self.pool()?, pool => sqlx::query(SQL).bind(id).execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Up to `limit` pending films reserved at least `age` ago, oldest first.
    pub async fn stale_pending(&self, age: Duration, limit: u32) -> Result<Vec<Uuid>, DbError> {
        let sql = self.stale_sql.as_str();
        let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        let ids: Vec<(Uuid,)> = on_pool!(self.pool()?, pool => {
            sqlx::query_as(sql).bind(age_ms).bind(i64::from(limit)).fetch_all(pool).await?
        });
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }

    /// Replaces the name and language of the film `film.id`; `None` if there
    /// is no such film.
    pub async fn replace(&self, film: &Film) -> Result<Option<Film>, StoreError> {
        const SQL: &str = "UPDATE films SET name = $2, language = $3 \
                           WHERE id = $1 AND pending_since IS NULL RETURNING id, name, language";
        let updated = on_pool!(self.pool()?, pool => {
            sqlx::query_as(SQL).bind(film.id).bind(&film.name).bind(&film.language).fetch_optional(pool).await
        })
        .map_err(|e| conflict(e.into(), film.id, &film.name))?;
        Ok(updated)
    }

    /// Deletes the film `id`; false if there was none.
    pub async fn remove(&self, id: Uuid) -> Result<bool, DbError> {
        const SQL: &str = "DELETE FROM films WHERE id = $1 AND pending_since IS NULL";
        let done = on_pool!(self.pool()?, pool => sqlx::query(SQL).bind(id).execute(pool).await?.rows_affected());
        Ok(done > 0)
    }
}

/// A unique violation on `name` (or any other) as the conflict it is.
fn conflict(err: DbError, id: Uuid, name: &str) -> StoreError {
    match err {
        // PostgreSQL names the constraint (films_name_key), SQLite the
        // column (UNIQUE constraint failed: films.name).
        DbError::Unique { constraint } if constraint.contains("name") => StoreError::NameTaken(name.to_owned()),
        DbError::Unique { .. } => StoreError::IdTaken(id),
        other => StoreError::Db(other),
    }
}
