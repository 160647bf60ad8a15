//! Request metrics in the Prometheus text format, and the access log: both
//! are written in one place, per request, by the [`Observe`] middleware.
//!
//! Requests are labelled with the route template (`/films/{id}`), never the
//! raw path, and with a closed set of methods, so the number of series stays
//! bounded whatever clients send.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use poem::http::Method;
use poem::PathPattern;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};
use poem_openapi::OperationId;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

/// Route label of requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One service's request metrics, in a registry of its own (two services in
/// one test process must not share counters).
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests answered, by route, method and status."),
            &["route", "method", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from receiving a request to having its response ready, by route and method.",
            ),
            &["route", "method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self { registry, requests, duration })
    }

    /// Records one answered request.
    pub fn observe(&self, route: &str, method: &Method, status: u16, elapsed: Duration) {
        let method = method_label(method);
        self.requests.with_label_values(&[route, method, &status.to_string()]).inc();
        self.duration.with_label_values(&[route, method]).observe(elapsed.as_secs_f64());
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// Methods outside the standard set share one label value.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

/// Turns poem's route pattern (`/films/:id`, `/files/*path`) into the
/// OpenAPI-style template (`/films/{id}`) used as the route label.
pub fn route_template(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|segment| match segment.strip_prefix([':', '*']) {
            Some(name) => {
                let name = name.split('<').next().unwrap_or(name);
                format!("{{{name}}}")
            }
            None => segment.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The path template of each OpenAPI operation, by operation id.
///
/// poem-openapi routes `/films/{id}` as `/films/:param0`, so the route poem
/// matched does not make a readable label; the operation id it attaches to
/// each response, looked up here, does.
pub type OperationRoutes = HashMap<&'static str, String>;

/// The [`OperationRoutes`] of the API `A`.
pub fn operation_routes<A: poem_openapi::OpenApi>() -> OperationRoutes {
    A::meta()
        .into_iter()
        .flat_map(|api| api.paths)
        .flat_map(|path| {
            let template = path.path;
            path.operations.into_iter().filter_map(move |op| op.operation_id.map(|id| (id, template.clone())))
        })
        .collect()
}

/// Middleware recording [`Metrics`] and writing one access-log line per
/// request (method, path, route, status, duration).
#[derive(Clone)]
pub struct Observe {
    metrics: Arc<Metrics>,
    routes: Arc<OperationRoutes>,
}

impl Observe {
    /// Records into `metrics`, labelling OpenAPI operations by `routes`.
    pub fn new(metrics: Arc<Metrics>, routes: OperationRoutes) -> Self {
        Self { metrics, routes: Arc::new(routes) }
    }

    fn route_label(routes: &OperationRoutes, resp: &Response) -> String {
        if let Some(template) = resp.data::<OperationId>().and_then(|id| routes.get(id.0)) {
            return template.clone();
        }
        match resp.data::<PathPattern>() {
            // A path under a nested router that matched nothing inside it
            // carries the (empty) pattern of the nest.
            Some(pattern) if !pattern.0.is_empty() && pattern.0.as_ref() != "/" => route_template(&pattern.0),
            _ => UNMATCHED_ROUTE.to_owned(),
        }
    }
}

impl<E: Endpoint> Middleware<E> for Observe {
    type Output = ObserveEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        ObserveEndpoint { inner: ep, observe: self.clone() }
    }
}

/// The endpoint [`Observe`] wraps around its inner endpoint.
pub struct ObserveEndpoint<E> {
    inner: E,
    observe: Observe,
}

impl<E: Endpoint> Endpoint for ObserveEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Response> {
        let start = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let resp = match self.inner.call(req).await {
            Ok(output) => output.into_response(),
            Err(err) => err.into_response(),
        };
        let elapsed = start.elapsed();
        let route = Observe::route_label(&self.observe.routes, &resp);
        let status = resp.status().as_u16();
        self.observe.metrics.observe(&route, &method, status, elapsed);
        tracing::info!(
            method = %method,
            path = %path,
            route = %route,
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_templates() {
        assert_eq!(route_template("/films/:id"), "/films/{id}");
        assert_eq!(route_template("/films"), "/films");
        assert_eq!(route_template("/a/:id<\\d+>/b"), "/a/{id}/b");
        assert_eq!(route_template("/docs/*path"), "/docs/{path}");
        assert_eq!(route_template("/"), "/");
    }

    #[test]
    fn methods_outside_the_standard_set_share_a_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "OTHER");
    }

    #[test]
    fn renders_observations() {
        let m = Metrics::new().unwrap();
        m.observe("/films/{id}", &Method::GET, 404, Duration::from_millis(3));
        let text = m.render().unwrap();
        assert!(text.contains(r#"http_requests_total{method="GET",route="/films/{id}",status="404"} 1"#), "{text}");
        assert!(text.contains(r#"http_request_duration_seconds_count{method="GET",route="/films/{id}"} 1"#));
    }
}
