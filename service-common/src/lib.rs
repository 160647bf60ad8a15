//! What film-service and rating-service share, so each service crate holds
//! only its own records and API.
//!
//! - [`service`]: the HTTP shell (OpenAPI document, Swagger UI, middleware).
//! - [`body`]: lenient request bodies (JSON, or the old clients'
//!   single-quoted pseudo-JSON under any content type), 1 MiB limit.
//! - [`error`]: the one error type and the JSON error body for every error.
//! - [`db`]: the database pool (SQLite or PostgreSQL), migrations,
//!   readiness, and what database errors mean for a client.
//! - [`listing`]: the answer of `GET /<collection>[?name=]`, pagination.
//! - [`served_by`]: the `x-served-by` header.
//! - [`metrics`]: Prometheus metrics and the access log.
//! - [`path_id`]: ids in paths, with errors a client can read.
//! - [`ops`]: `/healthz` and `/metrics`.
//! - [`spec`]: what follows from the OpenAPI document (closed object
//!   schemas, `Allow` on 405).
//! - [`server`]: binding, serving, graceful shutdown on SIGTERM / Ctrl-C.
//! - [`healthcheck`]: the `healthcheck` subcommand.
//! - [`telemetry`]: tracing setup.
//! - `testing` (feature `testing`, and in service-common's own tests):
//!   helpers for the services' integration tests.
#![forbid(unsafe_code)]

pub mod body;
pub mod db;
pub mod error;
pub mod healthcheck;
pub mod listing;
pub mod metrics;
pub mod ops;
pub mod path_id;
pub mod served_by;
pub mod server;
pub mod service;
pub mod spec;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use body::LenientJson;
pub use error::ApiError;
