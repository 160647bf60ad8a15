//! The operational endpoints every service has: `GET /healthz` and
//! `GET /metrics`, described in the OpenAPI document with the rest.

use std::sync::Arc;

use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use crate::db::Database;
use crate::error::ApiError;
use crate::metrics::Metrics;

#[derive(Tags)]
enum OpsTags {
    /// Health and metrics.
    Operations,
}

/// The body of a healthy `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// The answer of `GET /metrics`.
#[derive(ApiResponse)]
pub enum MetricsResponse {
    /// Request counts and latencies in the Prometheus text format.
    #[oai(status = 200, content_type = "text/plain; version=0.0.4; charset=utf-8")]
    Ok(PlainText<String>),
}

/// The operational endpoints.
pub struct OpsApi {
    metrics: Arc<Metrics>,
    db: Database,
}

impl OpsApi {
    /// Serves `metrics` at `/metrics` and the readiness of `db` at
    /// `/healthz`.
    pub fn new(metrics: Arc<Metrics>, db: Database) -> Self {
        Self { metrics, db }
    }
}

#[OpenApi(tag = "OpsTags::Operations")]
impl OpsApi {
    /// Readiness: 200 when the service can answer requests, i.e. its
    /// database has been migrated and answers a `SELECT 1` now; 503 with
    /// the reason otherwise (database unreachable, schema not ready). Docker's
    /// health check and the proxy's use it to stop sending traffic here.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> Result<Json<Health>, ApiError> {
        match self.db.check().await {
            Ok(()) => Ok(Json(Health { status: "ok".to_owned() })),
            Err(e) => {
                tracing::debug!(error = %e, "not ready");
                Err(ApiError::Unavailable(format!("not ready: {e}")))
            }
        }
    }

    /// Prometheus metrics: `http_requests_total{route,method,status}` and
    /// `http_request_duration_seconds{route,method}`.
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(&self) -> Result<MetricsResponse, ApiError> {
        match self.metrics.render() {
            Ok(text) => Ok(MetricsResponse::Ok(PlainText(text))),
            Err(e) => {
                tracing::error!(error = %e, "rendering metrics failed");
                Err(ApiError::Internal)
            }
        }
    }
}
