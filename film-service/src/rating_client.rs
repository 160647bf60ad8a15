//! The client film-service registers new films' ratings with.
//!
//! Connect and total timeouts are bounded, so a slow or dead rating-service
//! costs a film POST at most [`Timeouts::total`]. Errors say whether the
//! rating might have been stored anyway (a timeout after the request was
//! sent), so the caller can undo it.

use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde::Serialize;
use service_common::error::error_chain;
use uuid::Uuid;

/// The rating every new film starts with.
pub const INITIAL_RATING: f64 = 5.0;

/// How long a call to rating-service may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To establish the connection.
    pub connect: Duration,
    /// For the whole exchange, connection included.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { connect: Duration::from_secs(2), total: Duration::from_secs(5) }
    }
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not an http URL.
    #[error("rating-service URL {url:?} is invalid: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// reqwest could not build its client.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// Why a call to rating-service failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection could be made; the request never reached it.
    #[error("rating-service could not be reached: {0}")]
    Unreachable(String),
    /// The request was sent but no complete answer came back in time (or the
    /// connection broke): it may or may not have been applied.
    #[error("rating-service did not answer: {0}")]
    NoAnswer(String),
    /// rating-service answered with a non-2xx status.
    #[error("rating-service answered {status}: {message}")]
    Rejected {
        /// The status it answered with.
        status: StatusCode,
        /// Its `error` message, or the start of its body.
        message: String,
    },
}

impl CallError {
    /// Whether the call may have taken effect despite the error.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, CallError::NoAnswer(_))
    }

    fn from_reqwest(err: reqwest::Error) -> Self {
        let reason = error_chain(&err);
        if err.is_connect() {
            CallError::Unreachable(reason)
        } else {
            CallError::NoAnswer(reason)
        }
    }
}

#[derive(Serialize)]
struct RegisterBody<'a> {
    id: Uuid,
    name: &'a str,
    rating: f64,
}

/// A client for one rating-service.
#[derive(Debug, Clone)]
pub struct RatingClient {
    http: reqwest::Client,
    ratings: Url,
}

impl RatingClient {
    /// A client for the rating-service at `base` (e.g.
    /// `http://rating-service:6000`).
    pub fn new(base: &str, timeouts: Timeouts) -> Result<Self, ClientError> {
        let invalid = |reason: String| ClientError::InvalidUrl { url: base.to_owned(), reason };
        let ratings =
            Url::parse(&format!("{}/ratings", base.trim_end_matches('/'))).map_err(|e| invalid(e.to_string()))?;
        if ratings.scheme() != "http" {
            return Err(invalid(format!("scheme must be http, not {:?}", ratings.scheme())));
        }
        if ratings.host_str().is_none_or(str::is_empty) {
            return Err(invalid("no host".to_owned()));
        }
        if ratings.query().is_some() || ratings.fragment().is_some() {
            return Err(invalid("must not have a query or fragment".to_owned()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.total)
            .build()
            .map_err(|e| ClientError::Build(error_chain(&e)))?;
        Ok(Self { http, ratings })
    }

    /// The `/ratings` URL this client posts to.
    pub fn ratings_url(&self) -> &Url {
        &self.ratings
    }

    /// Registers the rating `{id, name, rating: 5}`.
    pub async fn register(&self, id: Uuid, name: &str) -> Result<(), CallError> {
        let body = RegisterBody { id, name, rating: INITIAL_RATING };
        let resp = self.http.post(self.ratings.clone()).json(&body).send().await.map_err(CallError::from_reqwest)?;
        check(resp).await
    }

    /// Deletes the rating `id`; a rating that is not there counts as
    /// deleted.
    pub async fn unregister(&self, id: Uuid) -> Result<(), CallError> {
        let mut url = self.ratings.clone();
        url.path_segments_mut()
            .map_err(|()| CallError::Unreachable("base URL cannot have a path".to_owned()))?
            .push(&id.to_string());
        let resp = self.http.delete(url).send().await.map_err(CallError::from_reqwest)?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        check(resp).await
    }
}

/// Ok for 2xx; otherwise the status and rating-service's `error` message.
async fn check(resp: reqwest::Response) -> Result<(), CallError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(200).collect());
    Err(CallError::Rejected { status, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(base: &str) -> Result<String, String> {
        RatingClient::new(base, Timeouts::default()).map(|c| c.ratings_url().to_string()).map_err(|e| e.to_string())
    }

    #[test]
    fn base_urls() {
        assert_eq!(url("http://rating-service:6000"), Ok("http://rating-service:6000/ratings".into()));
        assert_eq!(url("http://127.0.0.1:6000/"), Ok("http://127.0.0.1:6000/ratings".into()));
        assert_eq!(url("http://gw/api/"), Ok("http://gw/api/ratings".into()));
        assert!(url("rating-service:6000").unwrap_err().contains("is invalid"));
        assert!(url("https://rating-service").unwrap_err().contains("scheme must be http"));
        assert!(url("http://h/?x=1").unwrap_err().contains("query"));
        assert!(url("").is_err());
    }
}
