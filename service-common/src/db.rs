//! The services' database: a connection pool on SQLite (the embedded
//! default, one replica) or PostgreSQL (shared by every replica), the
//! embedded migrations and when they have run, and what a database error
//! means for a client.
//!
//! Each service owns its queries (`store.rs`); this module owns what both
//! need around them: opening the pool from `--database-url` and the pool
//! flags ([`PoolArgs`]), running the migrations ([`Database::migrate`],
//! retried in the background by [`Database::migrate_until_done`] when
//! PostgreSQL is not there yet), the readiness `/healthz` reports
//! ([`Database::check`]), and sorting errors into "try again later" (503)
//! and defects (500) ([`DbError`]).
//!
//! Pool choices: no ping before each use (`test_before_acquire(false)`), so
//! a read is one round trip; a connection broken by a database restart fails
//! one query (503) and is then replaced. PostgreSQL gets `statement_timeout`
//! as a start-up parameter, so it costs no extra round trip either.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, PgPool, SqlitePool};

use crate::error::{error_chain, ApiError};

/// The pool flags both services take (the URL is each service's own flag,
/// with its own default).
#[derive(Debug, Clone, clap::Args)]
pub struct PoolArgs {
    /// Most connections this replica opens to the database.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,
    /// How long a request waits for a free connection (or a new one) before
    /// it is answered 503.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub database_acquire_timeout: Duration,
    /// Longest a single statement may run (PostgreSQL `statement_timeout`);
    /// on SQLite, how long a write waits for the file lock.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub database_statement_timeout: Duration,
}

impl Default for PoolArgs {
    fn default() -> Self {
        Self {
            database_max_connections: 5,
            database_acquire_timeout: Duration::from_secs(3),
            database_statement_timeout: Duration::from_secs(5),
        }
    }
}

/// Parses a duration flag: `3s`, `500ms`, `1m`; zero is refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 3s, 500ms, 1m)"))?;
    if duration.is_zero() {
        return Err("must be more than zero".to_owned());
    }
    Ok(duration)
}

/// A pool on one of the two supported databases. Queries are written once
/// per service and run on either arm (see [`on_pool!`](crate::on_pool)).
#[derive(Debug, Clone)]
pub enum Pool {
    /// `sqlite://FILE` or `sqlite::memory:`.
    Sqlite(SqlitePool),
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE`.
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the SQLite or the PostgreSQL pool of
/// a [`Pool`]: the same query text and binds, type-checked for each driver.
#[macro_export]
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Pool::Sqlite($pool) => $body,
            $crate::db::Pool::Postgres($pool) => $body,
        }
    };
}

/// The embedded migrations of one service, one set per database.
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    /// For SQLite.
    pub sqlite: &'static Migrator,
    /// For PostgreSQL.
    pub postgres: &'static Migrator,
}

/// Why a database operation failed, as far as a client is concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    /// A unique constraint refused the change (`constraint` names it where
    /// the driver says, else the database's message).
    #[error("unique constraint violated: {constraint}")]
    Unique {
        /// The constraint's name (PostgreSQL) or the message naming the
        /// column (SQLite).
        constraint: String,
    },
    /// The database cannot be reached or is busy, or the schema is not
    /// there yet: the same request may succeed later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a defect to fix, not to retry.
    #[error("database error: {0}")]
    Failed(String),
}

impl From<sqlx::Error> for DbError {
    fn from(err: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let reason = error_chain(&err);
        match &err {
            E::Database(db) if db.is_unique_violation() => {
                DbError::Unique { constraint: db.constraint().map_or_else(|| db.message().to_owned(), str::to_owned) }
            }
            E::Database(db) if db.code().as_deref().is_some_and(transient_code) => DbError::Unavailable(reason),
            E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Protocol(_) => {
                DbError::Unavailable(reason)
            }
            _ => DbError::Failed(reason),
        }
    }
}

/// Error codes after which the same statement may well succeed: PostgreSQL's
/// (five-character SQLSTATEs) connection exceptions (08), insufficient
/// resources (53), operator intervention (57: shut down, starting up,
/// statement timeout), serialization failures and deadlocks (40); SQLite's
/// (numbers) BUSY (5) and LOCKED (6), with or without extended codes.
fn transient_code(code: &str) -> bool {
    if code.len() == 5 {
        return ["08", "53", "57", "40"].iter().any(|class| code.starts_with(class));
    }
    code.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
}

impl From<DbError> for ApiError {
    /// Unique violations are the service's to explain (409); this is for
    /// the rest.
    fn from(err: DbError) -> Self {
        match err {
            DbError::Unavailable(reason) => {
                tracing::warn!(error = %reason, "database unavailable");
                ApiError::Unavailable("database unavailable; try again later".to_owned())
            }
            DbError::Unique { constraint } => {
                tracing::error!(constraint = %constraint, "unexpected unique violation");
                ApiError::Internal
            }
            DbError::Failed(reason) => {
                tracing::error!(error = %reason, "database error");
                ApiError::Internal
            }
        }
    }
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL is not one the drivers accept.
    #[error("database URL {url:?} is invalid: {reason}")]
    InvalidUrl {
        /// The URL, password hidden.
        url: String,
        /// What the driver said.
        reason: String,
    },
}

/// A service's database: the pool, its migrations, and whether they have
/// run. Clones share all three.
#[derive(Debug, Clone)]
pub struct Database {
    pool: Pool,
    migrations: Migrations,
    migrated: Arc<AtomicBool>,
    display_url: Arc<str>,
}

impl Database {
    /// Opens a pool on `url` (`sqlite://FILE`, `sqlite::memory:`,
    /// `postgres://...`). No connection is made yet: the first query or
    /// [`Database::migrate`] makes one. A SQLite file is created if missing.
    pub fn open(url: &str, args: &PoolArgs, migrations: Migrations) -> Result<Self, OpenError> {
        let display_url = redact(url);
        let invalid = |reason: String| OpenError::InvalidUrl { url: display_url.clone(), reason };
        let pool = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| invalid(error_chain(&e)))?
                .create_if_missing(true)
                // WAL: readers do not wait for the writer. FULL: a 201 is
                // on disk, also across a power cut, not only a restart.
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(args.database_statement_timeout);
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            let mut pool = SqlitePoolOptions::new()
                .max_connections(args.database_max_connections)
                .acquire_timeout(args.database_acquire_timeout)
                .test_before_acquire(false);
            if in_memory {
                // An in-memory database lives as long as one connection to
                // it: keep one, forever.
                pool = pool.min_connections(1).idle_timeout(None).max_lifetime(None);
            }
            Pool::Sqlite(pool.connect_lazy_with(options))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let timeout_ms = args.database_statement_timeout.as_millis().to_string();
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| invalid(error_chain(&e)))?
                .options([("statement_timeout", timeout_ms.as_str())]);
            let pool = PgPoolOptions::new()
                .max_connections(args.database_max_connections)
                .acquire_timeout(args.database_acquire_timeout)
                .test_before_acquire(false)
                .connect_lazy_with(options);
            Pool::Postgres(pool)
        } else {
            return Err(invalid("expected sqlite://FILE, sqlite::memory: or postgres://USER@HOST/DATABASE".to_owned()));
        };
        Ok(Self { pool, migrations, migrated: Arc::new(AtomicBool::new(false)), display_url: display_url.into() })
    }

    /// The pool, for queries. Check [`Database::ready`] first.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The URL, without its password, for logs.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// Whether this is the embedded (SQLite) database.
    pub fn is_embedded(&self) -> bool {
        matches!(self.pool, Pool::Sqlite(_))
    }

    /// Ok once the migrations have run; until then requests get 503.
    pub fn ready(&self) -> Result<(), DbError> {
        if self.migrated.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(DbError::Unavailable("the schema is not ready yet (migrations have not run)".to_owned()))
        }
    }

    /// Applies the migrations not applied yet, then marks the database
    /// ready. Safe when several replicas start at once: on PostgreSQL, sqlx
    /// holds an advisory lock on the database while it checks and applies
    /// them, so one replica migrates and the others find the work done. The
    /// lock lives in a connection of its own, closed afterwards whatever
    /// happened, so a failed attempt never leaves it held by a pooled
    /// connection.
    pub async fn migrate(&self) -> Result<(), DbError> {
        match &self.pool {
            Pool::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                // run_direct: `run` is not Send-friendly enough for a spawned
                // task (sqlx's own workaround for its `Acquire` bound).
                self.migrations.sqlite.run_direct(&mut *conn).await.map_err(migrate_error)?;
            }
            Pool::Postgres(pool) => {
                let mut conn = sqlx::PgConnection::connect_with(&pool.connect_options()).await?;
                let result = self.migrations.postgres.run_direct(&mut conn).await.map_err(migrate_error);
                let _ = conn.close().await;
                result?;
            }
        }
        self.migrated.store(true, Ordering::Release);
        Ok(())
    }

    /// At start-up: migrates an embedded database now (a local file that
    /// cannot be opened or migrated will not get better by waiting, so the
    /// error is the caller's to report), and a PostgreSQL one in the
    /// background until it succeeds, so the service starts, answers 503 and
    /// reports not ready until the database is there.
    pub async fn start(&self) -> Result<(), DbError> {
        if self.is_embedded() {
            self.migrate().await?;
            tracing::info!(database = %self.display_url, "database ready (migrations applied)");
        } else {
            let db = self.clone();
            tokio::spawn(async move { db.migrate_until_done().await });
        }
        Ok(())
    }

    /// Runs [`Database::migrate`] until it succeeds, waiting longer after
    /// each failure (up to 30 s) and saying why in the log.
    pub async fn migrate_until_done(&self) {
        let mut wait = Duration::from_millis(250);
        loop {
            match self.migrate().await {
                Ok(()) => {
                    tracing::info!(database = %self.display_url, "database ready (migrations applied)");
                    return;
                }
                Err(e) => {
                    tracing::warn!(database = %self.display_url, error = %e, retry_in = ?wait, "database not ready");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Readiness for `/healthz`: migrated, and a `SELECT 1` answers.
    pub async fn check(&self) -> Result<(), DbError> {
        self.ready()?;
        on_pool!(&self.pool, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Closes every connection (on shutdown).
    pub async fn close(&self) {
        on_pool!(&self.pool, pool => pool.close().await);
    }
}

fn migrate_error(err: sqlx::migrate::MigrateError) -> DbError {
    match err {
        sqlx::migrate::MigrateError::Execute(e) => DbError::from(e),
        other => DbError::Failed(error_chain(&other)),
    }
}

/// `url` with the password replaced by `***` (also in a URL too broken to
/// parse, since it is for error messages about such URLs).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").unwrap_err().contains("more than zero"));
        assert!(parse_duration("three").unwrap_err().contains("examples"));
    }

    #[test]
    fn transient_codes() {
        for code in ["08006", "57P01", "57P03", "57014", "53300", "40001", "5", "517", "6"] {
            assert!(transient_code(code), "{code}");
        }
        for code in ["23505", "42P01", "22021", "1", "19", "2067"] {
            assert!(!transient_code(code), "{code}");
        }
    }

    #[test]
    fn urls_are_checked_and_redacted() {
        static EMPTY: Migrator = Migrator::DEFAULT;
        let m = Migrations { sqlite: &EMPTY, postgres: &EMPTY };
        let err = Database::open("mysql://x@y/z", &PoolArgs::default(), m).unwrap_err().to_string();
        assert!(err.contains("expected sqlite://FILE"), "{err}");
        let err = Database::open("postgres://a:secret@h:notaport/d", &PoolArgs::default(), m).unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
        assert_eq!(redact("postgres://films:pw@postgres:5432/films"), "postgres://films:***@postgres:5432/films");
        assert_eq!(redact("sqlite://films.db"), "sqlite://films.db");
        assert_eq!(redact("postgres://films@h/films"), "postgres://films@h/films");
        assert_eq!(redact("postgres://a:b@c@h:x/d?e=f"), "postgres://a:***@h:x/d?e=f");
    }
}
