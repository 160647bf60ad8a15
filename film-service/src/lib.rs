//! film-service: films `{id, name, language}` over HTTP, in memory; each new
//! film's rating is registered with rating-service.
//!
//! - [`film`]: the record and the request bodies.
//! - [`api`]: the `/films` endpoints, and film creation.
//! - [`rating_client`]: the client for rating-service.
//!
//! The HTTP shell (errors, metrics, `/healthz`, OpenAPI, shutdown) comes
//! from `service-common`.
#![forbid(unsafe_code)]

pub mod api;
pub mod film;
pub mod rating_client;

use std::sync::Arc;

use poem::http::HeaderValue;
use poem::{Endpoint, Response};
use service_common::metrics::Metrics;
use service_common::service::{self, ServiceInfo};

use crate::film::Films;
use crate::rating_client::RatingClient;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:5000";

/// Default rating-service base URL (its name in the compose network).
pub const DEFAULT_RATING_SERVICE_URL: &str = "http://rating-service:6000";

/// What the service holds and talks to.
pub struct AppState {
    /// The stored films.
    pub films: Films,
    /// Where new films' ratings are registered.
    pub ratings: RatingClient,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// The value of `x-served-by`.
    pub host: HeaderValue,
}

impl AppState {
    /// An empty service answering as `host`, registering ratings with
    /// `ratings`.
    pub fn new(ratings: RatingClient, host: HeaderValue) -> Result<Self, prometheus::Error> {
        Ok(Self { films: film::films(), ratings, metrics: Arc::new(Metrics::new()?), host })
    }
}

/// The whole service as one endpoint.
pub fn app(state: AppState) -> impl Endpoint<Output = Response> {
    let info = ServiceInfo { name: "film-service", version: env!("CARGO_PKG_VERSION"), host: state.host.clone() };
    let metrics = state.metrics.clone();
    service::endpoint(api::FilmApi::new(Arc::new(state)), info, metrics)
}
