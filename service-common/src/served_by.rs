//! The `x-served-by` header: every response names the replica that produced
//! it, so a person behind the proxy can tell replicas apart.

use poem::http::{HeaderName, HeaderValue};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};

/// The header every response carries.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-served-by");

/// Reads this machine's host name once: the kernel's, else `HOSTNAME`, else
/// `unknown`. Names that cannot be a header value also become `unknown`.
pub fn hostname() -> HeaderValue {
    let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let from_env = || std::env::var("HOSTNAME").ok();
    from_kernel
        .into_iter()
        .chain(from_env())
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty())
        .and_then(|name| HeaderValue::from_str(&name).ok())
        .unwrap_or_else(|| HeaderValue::from_static("unknown"))
}

/// Middleware adding `x-served-by: <host>` to every response, errors
/// included (it turns errors into responses to do so).
#[derive(Debug, Clone)]
pub struct ServedBy {
    host: HeaderValue,
}

impl ServedBy {
    /// Stamps responses with `host`.
    pub fn new(host: HeaderValue) -> Self {
        Self { host }
    }
}

impl<E: Endpoint> Middleware<E> for ServedBy {
    type Output = ServedByEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        ServedByEndpoint { inner: ep, host: self.host.clone() }
    }
}

/// The endpoint [`ServedBy`] wraps around its inner endpoint.
pub struct ServedByEndpoint<E> {
    inner: E,
    host: HeaderValue,
}

impl<E: Endpoint> Endpoint for ServedByEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Response> {
        let mut resp = match self.inner.call(req).await {
            Ok(output) => output.into_response(),
            Err(err) => err.into_response(),
        };
        resp.headers_mut().insert(SERVED_BY, self.host.clone());
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::http::StatusCode;
    use poem::test::TestClient;
    use poem::{get, handler, EndpointExt, Route};

    #[handler]
    fn ok() -> &'static str {
        "ok"
    }

    #[tokio::test]
    async fn stamps_success_and_errors() {
        let app = Route::new().at("/ok", get(ok)).with(ServedBy::new(HeaderValue::from_static("replica-7")));
        let client = TestClient::new(app);
        let resp = client.get("/ok").send().await;
        resp.assert_status_is_ok();
        resp.assert_header(SERVED_BY, "replica-7");
        let resp = client.get("/missing").send().await;
        resp.assert_status(StatusCode::NOT_FOUND);
        resp.assert_header(SERVED_BY, "replica-7");
    }

    #[test]
    fn hostname_is_never_empty() {
        assert!(!hostname().is_empty());
    }
}
