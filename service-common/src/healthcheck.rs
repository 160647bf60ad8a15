//! The `healthcheck` subcommand: GET a health URL and exit 0 on 200, 1
//! otherwise, saying why. Docker's HEALTHCHECK runs it, so the runtime image
//! needs no curl.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use crate::error::error_chain;

/// How long the whole check may take.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Arguments of the `healthcheck` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    /// URL to GET [default: /healthz on the port the service listens on]
    #[arg(long)]
    pub url: Option<String>,
}

/// Why a health check failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    /// The HTTP client could not be built.
    #[error("cannot build HTTP client: {0}")]
    Client(String),
    /// The request failed (refused, timed out, bad URL, ...).
    #[error("GET {url} failed: {reason}")]
    Request {
        /// The URL checked.
        url: String,
        /// The error and its causes.
        reason: String,
    },
    /// The service answered, but not 200.
    #[error("GET {url} answered {status}")]
    Status {
        /// The URL checked.
        url: String,
        /// The status received.
        status: u16,
    },
}

/// `http://<addr>/healthz` for a service listening on `listen`; a wildcard
/// address is reached through loopback.
pub fn default_url(listen: SocketAddr) -> String {
    let host = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/healthz", SocketAddr::new(host, listen.port()))
}

/// GETs `url`; Ok on 200.
pub async fn check(url: &str, timeout: Duration) -> Result<(), HealthcheckError> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(|e| HealthcheckError::Client(error_chain(&e)))?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| HealthcheckError::Request { url: url.to_owned(), reason: error_chain(&e) })?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(HealthcheckError::Status { url: url.to_owned(), status: resp.status().as_u16() });
    }
    Ok(())
}

/// Runs the subcommand for a service listening on `listen`.
pub async fn run(args: &HealthcheckArgs, listen: SocketAddr) -> ExitCode {
    let url = args.url.clone().unwrap_or_else(|| default_url(listen));
    match check(&url, TIMEOUT).await {
        Ok(()) => {
            println!("healthy: GET {url} answered 200");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_url_uses_loopback_for_wildcards() {
        let url = |s: &str| default_url(s.parse().unwrap());
        assert_eq!(url("0.0.0.0:5000"), "http://127.0.0.1:5000/healthz");
        assert_eq!(url("[::]:6000"), "http://[::1]:6000/healthz");
        assert_eq!(url("10.1.2.3:5000"), "http://10.1.2.3:5000/healthz");
    }

    #[tokio::test]
    async fn refused_connection_is_an_error_naming_the_url() {
        let url = format!("http://{}/healthz", crate::testing::dead_addr());
        let err = check(&url, TIMEOUT).await.unwrap_err().to_string();
        assert!(err.starts_with(&format!("GET {url} failed: ")), "{err}");
    }

    #[tokio::test]
    async fn invalid_url_is_an_error() {
        assert!(check("not a url", TIMEOUT).await.is_err());
    }
}
