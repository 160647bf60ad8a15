//! The HTTP shell every service shares: its API and the operational
//! endpoints in one OpenAPI document (`/openapi.json`, Swagger UI at
//! `/docs`), wrapped in the middleware stack.
//!
//! From the outside in: [`Observe`] (metrics and access log, so it sees the
//! final status), [`ServedBy`], [`JsonErrors`], then `CatchPanic` (a defect
//! becomes a JSON 500, not a dropped connection).

use std::sync::Arc;

use poem::http::HeaderValue;
use poem::middleware::CatchPanic;
use poem::{Endpoint, EndpointExt, Response, Route};
use poem_openapi::{OpenApi, OpenApiService};

use crate::error::JsonErrors;
use crate::metrics::{operation_routes, Metrics, Observe};
use crate::ops::OpsApi;
use crate::served_by::ServedBy;

/// What a service is called and who is answering.
#[derive(Debug, Clone)]
pub struct ServiceInfo {
    /// The service's name, the OpenAPI document's title.
    pub name: &'static str,
    /// The service's version, the OpenAPI document's version.
    pub version: &'static str,
    /// The value of `x-served-by`.
    pub host: HeaderValue,
}

/// Builds the endpoint serving `api`, the operational endpoints, the OpenAPI
/// document and Swagger UI, with the shared middleware around them.
pub fn endpoint<A>(api: A, info: ServiceInfo, metrics: Arc<Metrics>) -> impl Endpoint<Output = Response>
where
    A: OpenApi + Send + Sync + 'static,
{
    let routes = operation_routes::<(A, OpsApi)>();
    let service = OpenApiService::new((api, OpsApi::new(metrics.clone())), info.name, info.version);
    let spec = service.spec_endpoint();
    let docs = service.swagger_ui();
    Route::new()
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .nest("/", service)
        .with(CatchPanic::new())
        .with(JsonErrors)
        .with(ServedBy::new(info.host))
        .with(Observe::new(metrics, routes))
}
