//! rating-service: film ratings `{id, name, rating}` over HTTP, stored in
//! its own database (SQLite by default, PostgreSQL when replicas share it).
//!
//! - [`rating`]: the record, the request bodies, the rating value rules.
//! - [`store`]: the `ratings` table.
//! - [`api`]: the `/ratings` endpoints.
//!
//! The HTTP shell (errors, metrics, `/healthz`, OpenAPI, shutdown) and the
//! database plumbing come from `service-common`.
#![forbid(unsafe_code)]

pub mod api;
pub mod rating;
pub mod store;

use std::sync::Arc;

use poem::http::HeaderValue;
use poem::{Endpoint, Response};
use service_common::db::{Database, Migrations};
use service_common::metrics::Metrics;
use service_common::service::{self, ServiceInfo};
use sqlx::migrate::Migrator;

use crate::store::RatingStore;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:6000";

/// Default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://ratings.db";

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// The schema of the ratings database, embedded in the binary.
pub const MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE_MIGRATIONS, postgres: &POSTGRES_MIGRATIONS };

/// What the service holds; clones share it.
#[derive(Clone)]
pub struct AppState {
    /// The stored ratings.
    pub ratings: RatingStore,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// The value of `x-served-by`.
    pub host: HeaderValue,
}

impl AppState {
    /// A service on `db`, answering as `host`.
    pub fn new(db: Database, host: HeaderValue) -> Result<Self, prometheus::Error> {
        Ok(Self { ratings: RatingStore::new(db), metrics: Arc::new(Metrics::new()?), host })
    }
}

/// The whole service as one endpoint.
pub fn app(state: AppState) -> impl Endpoint<Output = Response> {
    let db = state.ratings.database().clone();
    service::endpoint(
        api::RatingApi::new(state.ratings),
        ServiceInfo { name: "rating-service", version: env!("CARGO_PKG_VERSION"), host: state.host },
        state.metrics,
        db,
    )
}
