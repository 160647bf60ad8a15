//! Health checks to TLS clusters: they connect as requests do (the
//! cluster's client certificate and certificate checks, as its SDS
//! secrets hold them at each check), and a host whose
//! certificate the cluster refuses fails its check before any request byte
//! is written, counted in `cluster.<name>.ssl.*` as for requests.

use crate::metrics::ClusterStats;
use crate::upstream::{count_handshake_error, UpstreamTls, UpstreamTlsMaterial};
use pingora_core::connectors::http::Connector as HttpConnector;
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::tls::SslDigest;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType};
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck};
use pingora_load_balancing::Backend;
use std::sync::Arc;

/// An HTTP check to a TLS cluster. Pingora's `HttpHealthCheck` writes its
/// request as soon as it has a connection, so nothing could refuse an
/// upstream whose certificate fails the cluster's validation context; this
/// one reads the handshake's verdict first, then checks as it does.
pub(super) struct TlsHttpCheck {
    /// The peer, request and status validator.
    http: HttpHealthCheck,
    tls: TlsProbe,
    connector: HttpConnector,
}

/// What a health check to a TLS cluster connects with, and where it
/// counts refused certificates (`cluster.<name>.ssl.*`, as requests do).
#[derive(Clone)]
pub struct TlsProbe {
    pub tls: UpstreamTls,
    pub material: Arc<UpstreamTlsMaterial>,
    pub stats: Arc<ClusterStats>,
}

impl TlsProbe {
    /// Whether a finished handshake may be checked over, as for requests.
    fn admit(&self, ssl: Option<&SslDigest>) -> pingora_error::Result<()> {
        self.tls
            .admit(ssl, &self.stats)
            .or_else(|why| Error::e_explain(ErrorType::TLSHandshakeFailure, why.to_string()))
    }

    fn count_connect_error(&self, e: &Error) {
        count_handshake_error(&self.stats, e.etype());
    }
}

/// A TCP check to a TLS cluster: the handshake, with the cluster's client
/// certificate and checks (Pingora's `TcpHealthCheck` cannot present one).
pub(super) struct TlsTcpCheck {
    peer: HttpPeer,
    tls: TlsProbe,
    connector: TransportConnector,
}

#[async_trait::async_trait]
impl HealthCheck for TlsTcpCheck {
    fn health_threshold(&self, _success: bool) -> usize {
        // Unused: `ActiveHealthCheck::apply` applies the thresholds.
        1
    }

    async fn check(&self, target: &Backend) -> pingora_error::Result<()> {
        let mut peer = self.peer.clone();
        peer._address = target.addr.clone();
        // The cluster's material as of now (its secrets may have changed).
        self.tls.material.apply(&self.tls.tls, &mut peer);
        let stream = self.connector.new_stream(&peer).await.inspect_err(|e| self.tls.count_connect_error(e))?;
        self.tls.admit(stream.get_ssl_digest().as_deref())
    }
}

#[async_trait::async_trait]
impl HealthCheck for TlsHttpCheck {
    fn health_threshold(&self, success: bool) -> usize {
        self.http.health_threshold(success)
    }

    async fn check(&self, target: &Backend) -> pingora_error::Result<()> {
        let mut peer = self.http.peer_template.clone();
        peer._address = target.addr.clone();
        self.tls.material.apply(&self.tls.tls, &mut peer);
        let (mut session, _) =
            self.connector.get_http_session(&peer).await.inspect_err(|e| self.tls.count_connect_error(e))?;
        self.tls.admit(session.digest().and_then(|d| d.ssl_digest.as_deref()))?;
        session.set_write_timeout(peer.options.write_timeout);
        session.write_request_header(Box::new(self.http.req.clone())).await?;
        session.finish_request_body().await?;
        session.set_read_timeout(peer.options.read_timeout);
        session.read_response_header().await?;
        let resp = session
            .response_header()
            .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "no health check response"))?;
        if let Some(validator) = &self.http.validator {
            validator(resp)?;
        }
        while session.read_response_body().await?.is_some() {}
        Ok(())
    }
}

impl TlsHttpCheck {
    pub(super) fn new(http: HttpHealthCheck, tls: TlsProbe) -> Self {
        Self { http, tls, connector: HttpConnector::new(None) }
    }
}

impl TlsTcpCheck {
    pub(super) fn new(peer: HttpPeer, tls: TlsProbe) -> Self {
        Self { peer, tls, connector: TransportConnector::new(None) }
    }
}
