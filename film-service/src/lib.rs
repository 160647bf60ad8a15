//! film-service: films `{id, name, language}` over HTTP, stored in its own
//! database (SQLite by default, PostgreSQL when replicas share it); each new
//! film's rating is registered with rating-service.
//!
//! - [`film`]: the record and the request bodies.
//! - [`store`]: the `films` table.
//! - [`api`]: the `/films` endpoints.
//! - [`creation`]: creating a film across the two services' databases, and
//!   the sweeper that undoes creations that did not finish.
//! - [`rating_client`]: the client for rating-service.
//!
//! The HTTP shell (errors, metrics, `/healthz`, OpenAPI, shutdown) and the
//! database plumbing come from `service-common`.
#![forbid(unsafe_code)]

pub mod api;
pub mod creation;
pub mod film;
pub mod rating_client;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use poem::http::HeaderValue;
use poem::{Endpoint, Response};
use service_common::db::{Database, Migrations};
use service_common::metrics::Metrics;
use service_common::service::{self, ServiceInfo};
use sqlx::migrate::Migrator;

use crate::rating_client::RatingClient;
use crate::store::FilmStore;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:5000";

/// Default rating-service base URL (its name in the compose network).
pub const DEFAULT_RATING_SERVICE_URL: &str = "http://rating-service:6000";

/// Default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://films.db";

/// Default age at which an unfinished film creation is undone. Far above
/// the longest a creation can take (rating-service's timeout plus two
/// statements), so only a creation whose replica died or lost its database
/// is ever swept.
pub const DEFAULT_PENDING_TIMEOUT: Duration = Duration::from_secs(60);

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// The schema of the films database, embedded in the binary.
pub const MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE_MIGRATIONS, postgres: &POSTGRES_MIGRATIONS };

/// What the service holds and talks to.
pub struct AppState {
    /// The stored films.
    pub films: FilmStore,
    /// Where new films' ratings are registered.
    pub ratings: RatingClient,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// The value of `x-served-by`.
    pub host: HeaderValue,
    /// How long a film creation may take before the sweeper undoes it.
    pub pending_timeout: Duration,
}

impl AppState {
    /// A service on `db`, answering as `host`, registering ratings with
    /// `ratings`.
    pub fn new(db: Database, ratings: RatingClient, host: HeaderValue) -> Result<Self, prometheus::Error> {
        Ok(Self {
            films: FilmStore::new(db),
            ratings,
            metrics: Arc::new(Metrics::new()?),
            host,
            pending_timeout: DEFAULT_PENDING_TIMEOUT,
        })
    }
}

/// The whole service as one endpoint.
pub fn app(state: Arc<AppState>) -> impl Endpoint<Output = Response> {
    let info = ServiceInfo { name: "film-service", version: env!("CARGO_PKG_VERSION"), host: state.host.clone() };
    let metrics = state.metrics.clone();
    let db = state.films.database().clone();
    service::endpoint(api::FilmApi::new(state), info, metrics, db)
}
