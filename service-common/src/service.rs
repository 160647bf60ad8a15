//! The HTTP shell every service shares: its API and the operational
//! endpoints in one OpenAPI document (`/openapi.json`, Swagger UI at
//! `/docs`), wrapped in the middleware stack.
//!
//! From the outside in: [`Observe`] (metrics and access log, so it sees the
//! final status), [`ServedBy`], [`JsonErrors`], [`AllowHeader`] (405s say
//! what is allowed), then `CatchPanic` (a defect becomes a JSON 500, not a
//! dropped connection). The document at `/openapi.json` closes its object
//! schemas ([`close_object_schemas`]).

use std::sync::Arc;

use poem::http::HeaderValue;
use poem::middleware::CatchPanic;
use poem::{Endpoint, EndpointExt, Response, Route};
use poem_openapi::{OpenApi, OpenApiService};

use crate::db::Database;
use crate::error::JsonErrors;
use crate::metrics::{operation_routes, Metrics, Observe};
use crate::ops::OpsApi;
use crate::served_by::ServedBy;
use crate::spec::{close_object_schemas, methods_by_path, AllowHeader};

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

/// Builds the endpoint serving `api`, the operational endpoints (readiness
/// of `db`), the OpenAPI document and Swagger UI, with the shared middleware
/// around them.
pub fn endpoint<A>(api: A, info: ServiceInfo, metrics: Arc<Metrics>, db: Database) -> impl Endpoint<Output = Response>
where
    A: OpenApi + Send + Sync + 'static,
{
    let routes = operation_routes::<(A, OpsApi)>();
    let service = OpenApiService::new((api, OpsApi::new(metrics.clone(), db)), info.name, info.version);
    let spec = service.spec();
    let allow = AllowHeader::new(methods_by_path(&spec));
    let document = close_object_schemas(&spec);
    let spec = poem::endpoint::make_sync(move |_| {
        Response::builder().content_type("application/json; charset=utf-8").body(document.clone())
    });
    let docs = service.swagger_ui();
    Route::new()
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .nest("/", service)
        .with(CatchPanic::new())
        .with(AllowHeader::clone(&allow))
        .with(JsonErrors)
        .with(ServedBy::new(info.host))
        .with(Observe::new(metrics, routes))
}

#[cfg(test)]
mod tests {
    use poem::http::StatusCode;
    use poem::test::TestClient;
    use poem_openapi::payload::PlainText;

    use super::*;
    use crate::served_by::SERVED_BY;

    struct Defective;

    #[OpenApi]
    impl Defective {
        #[oai(path = "/boom", method = "get", operation_id = "boom")]
        async fn boom(&self) -> PlainText<String> {
            panic!("a defect")
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_a_json_500_and_is_counted() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let info = ServiceInfo { name: "test", version: "0", host: HeaderValue::from_static("replica") };
        static NONE: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;
        let db = Database::open(
            "sqlite::memory:",
            &crate::db::PoolArgs::default(),
            crate::db::Migrations { sqlite: &NONE, postgres: &NONE },
        )
        .unwrap();
        db.migrate().await.unwrap();
        let client = TestClient::new(endpoint(Defective, info, metrics.clone(), db));
        let resp = client.get("/boom").send().await;
        resp.assert_status(StatusCode::INTERNAL_SERVER_ERROR);
        resp.assert_header(SERVED_BY, "replica");
        let body: serde_json::Value = resp.0.into_body().into_json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
        let text = metrics.render().unwrap();
        // The panic unwound past the router, so the route is not known.
        assert!(text.contains(r#"http_requests_total{method="GET",route="unmatched",status="500"} 1"#), "{text}");
        // The service keeps serving.
        client.get("/healthz").send().await.assert_status_is_ok();
    }
}
