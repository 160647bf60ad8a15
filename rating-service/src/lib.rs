//! rating-service: film ratings `{id, name, rating}` over HTTP, in memory.
//!
//! - [`rating`]: the record, the request bodies, the rating value rules.
//! - [`api`]: the `/ratings` endpoints.
//!
//! The HTTP shell (errors, metrics, `/healthz`, OpenAPI, shutdown) comes
//! from `service-common`.
#![forbid(unsafe_code)]

pub mod api;
pub mod rating;

use std::sync::Arc;

use poem::http::HeaderValue;
use poem::{Endpoint, Response};
use service_common::metrics::Metrics;
use service_common::service::{self, ServiceInfo};

use crate::rating::Ratings;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:6000";

/// What the service holds; clones share it.
#[derive(Clone)]
pub struct AppState {
    /// The stored ratings.
    pub ratings: Ratings,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// The value of `x-served-by`.
    pub host: HeaderValue,
}

impl AppState {
    /// An empty service answering as `host`.
    pub fn new(host: HeaderValue) -> Result<Self, prometheus::Error> {
        Ok(Self { ratings: rating::ratings(), metrics: Arc::new(Metrics::new()?), host })
    }
}

/// The whole service as one endpoint.
pub fn app(state: AppState) -> impl Endpoint<Output = Response> {
    service::endpoint(
        api::RatingApi::new(state.ratings),
        ServiceInfo { name: "rating-service", version: env!("CARGO_PKG_VERSION"), host: state.host },
        state.metrics,
    )
}
