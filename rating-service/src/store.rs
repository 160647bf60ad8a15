//! Where ratings are kept: the `ratings` table of the service's own
//! database, SQLite or PostgreSQL (see `service_common::db`). One statement
//! per operation; the database holds the rules (unique ids, ratings from 0
//! to 5), so they hold across replicas. The SQL is the same for both
//! databases.

use service_common::body::text_problem;
use service_common::db::{Database, DbError, Pool};
use service_common::listing::Page;
use service_common::on_pool;
use uuid::Uuid;

use crate::rating::Rating;

/// Why a change to the ratings was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Another rating has the id.
    #[error("id {0} is taken")]
    IdTaken(Uuid),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

#[derive(sqlx::FromRow)]
struct PageRow {
    seq: i64,
    #[sqlx(flatten)]
    rating: Rating,
}

/// The ratings of one rating-service; clones share the pool.
#[derive(Debug, Clone)]
pub struct RatingStore {
    db: Database,
}

impl RatingStore {
    /// Ratings in `db` (migrated with [`MIGRATIONS`](crate::MIGRATIONS)).
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The database, for readiness.
    pub fn database(&self) -> &Database {
        &self.db
    }

    fn pool(&self) -> Result<&Pool, DbError> {
        self.db.ready()?;
        Ok(self.db.pool())
    }

    /// Up to `limit` ratings after position `after`, oldest first.
    pub async fn page(&self, after: i64, limit: u32) -> Result<Page<Rating>, DbError> {
        const SQL: &str = "SELECT seq, id, name, rating FROM ratings WHERE seq > $1 ORDER BY seq LIMIT $2";
        let rows: Vec<PageRow> = on_pool!(self.pool()?, pool => {
            sqlx::query_as(SQL).bind(after).bind(i64::from(limit) + 1).fetch_all(pool).await?
        });
        Ok(Page::from_rows(rows.into_iter().map(|r| (r.seq, r.rating)).collect(), limit))
    }

    /// The rating with `id`.
    pub async fn get(&self, id: Uuid) -> Result<Option<Rating>, DbError> {
        const SQL: &str = "SELECT id, name, rating FROM ratings WHERE id = $1";
        Ok(on_pool!(self.pool()?, pool => sqlx::query_as(SQL).bind(id).fetch_optional(pool).await?))
    }

    /// The newest rating named exactly `name`.
    pub async fn find_by_name(&self, name: &str) -> Result<Option<Rating>, DbError> {
        const SQL: &str = "SELECT id, name, rating FROM ratings WHERE name = $1 ORDER BY seq DESC LIMIT 1";
        if text_problem(name).is_some() {
            // No rating can have it (and PostgreSQL cannot even compare a NUL).
            return Ok(None);
        }
        Ok(on_pool!(self.pool()?, pool => sqlx::query_as(SQL).bind(name).fetch_optional(pool).await?))
    }

    /// Stores `rating` unless its id is taken.
    pub async fn insert(&self, rating: &Rating) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO ratings (id, name, rating) VALUES ($1, $2, $3)";
        on_pool!(self.pool()?, pool => {
            sqlx::query(SQL).bind(rating.id).bind(&rating.name).bind(rating.rating).execute(pool).await.map(drop)
        })
        .map_err(|e| match DbError::from(e) {
            DbError::Unique { .. } => StoreError::IdTaken(rating.id),
            other => StoreError::Db(other),
        })
    }

    /// Replaces the name and value of the rating `rating.id`; `None` if
    /// there is no such rating.
    pub async fn replace(&self, rating: &Rating) -> Result<Option<Rating>, DbError> {
        const SQL: &str = "UPDATE ratings SET name = $2, rating = $3 WHERE id = $1 RETURNING id, name, rating";
        Ok(on_pool!(self.pool()?, pool => {
            sqlx::query_as(SQL).bind(rating.id).bind(&rating.name).bind(rating.rating).fetch_optional(pool).await?
        }))
    }

    /// Deletes the rating `id`; false if there was none.
    pub async fn remove(&self, id: Uuid) -> Result<bool, DbError> {
        const SQL: &str = "DELETE FROM ratings WHERE id = $1";
        let done = on_pool!(self.pool()?, pool => sqlx::query(SQL).bind(id).execute(pool).await?.rows_affected());
        Ok(done > 0)
    }
}
