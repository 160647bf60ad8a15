//! Envoy-named statistics, recorded on the request path with atomics only.
//!
//! One [`ClusterStats`] per cluster and one [`ConnManagerStats`] per HTTP
//! connection manager, created at start and reached through `Arc`s resolved
//! once, never looked up by name per request. The admin interface renders
//! them in Envoy's `/stats` and `/stats/prometheus` formats.
//!
//! Connections are counted where they open and close, not per request:
//! downstream ones by [`crate::downstream`] around each accepted connection,
//! upstream ones by [`UpstreamConnectionTracer`], which Pingora's connector
//! calls when a TCP connection is established and when its socket is dropped.

use crate::tls::VerifyFailure;
use pingora_core::upstreams::peer::{Tracer, Tracing};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Envoy's histogram bucket bounds, in milliseconds.
pub const HISTOGRAM_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

/// A latency histogram in milliseconds with Envoy's buckets.
#[derive(Debug)]
pub struct Histogram {
    /// Non-cumulative counts; the last slot is +Inf.
    buckets: [AtomicU64; HISTOGRAM_BUCKETS_MS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

/// A consistent-enough copy of a histogram for rendering.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts for each bound in [`HISTOGRAM_BUCKETS_MS`].
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_ms: f64,
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        let i = HISTOGRAM_BUCKETS_MS.iter().position(|b| ms <= *b).unwrap_or(HISTOGRAM_BUCKETS_MS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(d.as_micros().min(u128::from(u64::MAX)) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0;
        let cumulative = self.buckets[..HISTOGRAM_BUCKETS_MS.len()]
            .iter()
            .map(|b| {
                acc += b.load(Relaxed);
                acc
            })
            .collect();
        let inf = self.buckets[HISTOGRAM_BUCKETS_MS.len()].load(Relaxed);
        HistogramSnapshot { cumulative, count: acc + inf, sum_ms: self.sum_micros.load(Relaxed) as f64 / 1000.0 }
    }
}

/// One counter per HTTP status code 100..=599.
#[derive(Debug)]
pub struct StatusCounters(Box<[AtomicU64]>);

impl Default for StatusCounters {
    fn default() -> Self {
        Self((100..600).map(|_| AtomicU64::new(0)).collect())
    }
}

impl StatusCounters {
    pub fn record(&self, status: u16) {
        if let Some(c) = status.checked_sub(100).and_then(|i| self.0.get(i as usize)) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// `(code, count)` for every code seen at least once.
    pub fn nonzero(&self) -> Vec<(u16, u64)> {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let n = c.load(Relaxed);
                (n > 0).then_some((i as u16 + 100, n))
            })
            .collect()
    }

    /// Counts per class 1..=5 (`1xx`..`5xx`).
    pub fn classes(&self) -> [u64; 5] {
        let mut out = [0; 5];
        for (code, n) in self.nonzero() {
            out[(code / 100 - 1) as usize] += n;
        }
        out
    }
}

/// `cluster.<name>.*` statistics.
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub upstream_rq_total: AtomicU64,
    /// Per response code, local replies (503/504) included as in Envoy.
    pub upstream_rq: StatusCounters,
    pub upstream_rq_time: Histogram,
    pub upstream_rq_timeout: AtomicU64,
    pub upstream_rq_retry: AtomicU64,
    pub upstream_rq_retry_success: AtomicU64,
    pub upstream_rq_retry_overflow: AtomicU64,
    pub upstream_rq_pending_overflow: AtomicU64,
    /// TCP connections established. Unlike Envoy, a connection attempt that
    /// fails counts only in `upstream_cx_connect_fail`, not here.
    pub upstream_cx_total: AtomicU64,
    /// Of those, the ones that speak HTTP/1.1 and HTTP/2.
    pub upstream_cx_http1_total: AtomicU64,
    pub upstream_cx_http2_total: AtomicU64,
    /// Open connections, busy or idle in the pool.
    pub upstream_cx_active: AtomicI64,
    pub upstream_cx_connect_fail: AtomicU64,
    pub upstream_cx_connect_timeout: AtomicU64,
    /// Connections closed, by either side or by the idle pool.
    pub upstream_cx_destroy: AtomicU64,
    pub upstream_cx_overflow: AtomicU64,
    pub upstream_cx_rx_bytes_total: AtomicU64,
    pub upstream_cx_tx_bytes_total: AtomicU64,
    pub upstream_cx_none_healthy: AtomicU64,
    pub update_attempt: AtomicU64,
    pub update_success: AtomicU64,
    pub update_failure: AtomicU64,
    pub update_empty: AtomicU64,
    /// TLS clusters: upstream certificates refused by the validation
    /// context (each also a connect failure), as Envoy names them.
    pub ssl_fail_verify_error: AtomicU64,
    pub ssl_fail_verify_san: AtomicU64,
    pub ssl_fail_verify_cert_hash: AtomicU64,
}

/// The HTTP version of an upstream connection, for `upstream_cx_http{1,2}_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamCodecStat {
    Http1,
    Http2,
}

impl ClusterStats {
    /// Counts a handshake whose certificate failed the validation context
    /// (`ssl.fail_verify_*`), on a request's connection or a health check's.
    pub fn count_verify_failure(&self, why: &VerifyFailure) {
        let counter = match why {
            VerifyFailure::Chain(_) => &self.ssl_fail_verify_error,
            VerifyFailure::SubjectAltName => &self.ssl_fail_verify_san,
            VerifyFailure::CertificateHash => &self.ssl_fail_verify_cert_hash,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Counts a new connection's codec.
    pub fn count_codec(&self, codec: UpstreamCodecStat) {
        match codec {
            UpstreamCodecStat::Http1 => self.upstream_cx_http1_total.fetch_add(1, Relaxed),
            UpstreamCodecStat::Http2 => self.upstream_cx_http2_total.fetch_add(1, Relaxed),
        };
    }
}

/// Upstream connection accounting, handed to Pingora as the peer's
/// [`Tracer`]: `on_connected` runs once per established TCP connection and
/// `on_disconnected` when its socket is dropped (closed after use, evicted
/// from the idle pool, or failed during the TLS handshake), so
/// `upstream_cx_active` is exact and includes idle pooled connections.
///
/// Pingora pools connections by address, not by cluster: if two clusters
/// list the same `ip:port`, a connection opened for one and reused by the
/// other stays counted on the first.
#[derive(Clone)]
pub struct UpstreamConnectionTracer {
    cluster: Arc<ClusterStats>,
    /// The connection's codec when it is known before the connection is
    /// made (otherwise ALPN decides, and the proxy counts it).
    codec: Option<UpstreamCodecStat>,
    /// The host's counters, reached through the host itself (an
    /// `upstream::Host`, which this room does not name).
    host: Arc<dyn AsRef<HostStats> + Send + Sync>,
}

impl std::fmt::Debug for UpstreamConnectionTracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConnectionTracer").field("host", (*self.host).as_ref()).finish_non_exhaustive()
    }
}

impl UpstreamConnectionTracer {
    /// The tracer to set on an upstream peer's options. One small
    /// allocation per attempt (Pingora's `Tracer` is a boxed trait object);
    /// the counters themselves are atomics reached through the `Arc`s.
    pub fn tracer<H: AsRef<HostStats> + Send + Sync + 'static>(
        cluster: &Arc<ClusterStats>,
        host: &Arc<H>,
        codec: Option<UpstreamCodecStat>,
    ) -> Tracer {
        Tracer(Box::new(Self::new(cluster, host, codec)))
    }

    /// For connections the proxy opens itself (the native HTTP/1 engine).
    pub fn new<H: AsRef<HostStats> + Send + Sync + 'static>(
        cluster: &Arc<ClusterStats>,
        host: &Arc<H>,
        codec: Option<UpstreamCodecStat>,
    ) -> Self {
        Self { cluster: cluster.clone(), codec, host: host.clone() }
    }

    fn host(&self) -> &HostStats {
        (*self.host).as_ref()
    }

    pub fn connected(&self) {
        self.cluster.upstream_cx_total.fetch_add(1, Relaxed);
        if let Some(codec) = self.codec {
            self.cluster.count_codec(codec);
        }
        self.cluster.upstream_cx_active.fetch_add(1, Relaxed);
        self.host().cx_total.fetch_add(1, Relaxed);
        self.host().cx_active.fetch_add(1, Relaxed);
    }

    pub fn disconnected(&self) {
        self.cluster.upstream_cx_active.fetch_sub(1, Relaxed);
        self.cluster.upstream_cx_destroy.fetch_add(1, Relaxed);
        self.host().cx_active.fetch_sub(1, Relaxed);
    }
}

impl Tracing for UpstreamConnectionTracer {
    fn on_connected(&self) {
        self.connected();
    }

    fn on_disconnected(&self) {
        self.disconnected();
    }

    fn boxed_clone(&self) -> Box<dyn Tracing> {
        Box::new(self.clone())
    }
}

/// An upstream host's counters, shown by `/clusters`.
#[derive(Debug, Default)]
pub struct HostStats {
    pub rq_total: AtomicU64,
    pub rq_success: AtomicU64,
    pub rq_error: AtomicU64,
    pub rq_timeout: AtomicU64,
    pub rq_active: AtomicI64,
    pub cx_total: AtomicU64,
    /// Open connections to this host (see `metrics::UpstreamConnectionTracer`).
    pub cx_active: AtomicI64,
    pub cx_connect_fail: AtomicU64,
}

impl AsRef<HostStats> for HostStats {
    fn as_ref(&self) -> &HostStats {
        self
    }
}

/// A codec's `dropped_headers_with_underscores` and
/// `requests_rejected_with_underscores_in_headers`.
#[derive(Debug, Default)]
pub struct UnderscoreStats {
    pub dropped: AtomicU64,
    pub rejected: AtomicU64,
}

/// `sds.<secret name>.*`: the updates of a secret read from an SDS file,
/// the first read at start included (as Envoy counts its first fetch).
#[derive(Debug, Default)]
pub struct SecretStats {
    /// The file (or a file it names) changed, or was read at start.
    pub update_attempt: AtomicU64,
    /// The secret was read and is in use.
    pub update_success: AtomicU64,
    /// The secret could not be read or loaded; the previous one stays.
    pub update_rejected: AtomicU64,
}

/// `http.<stat_prefix>.*` statistics.
#[derive(Debug, Default)]
pub struct ConnManagerStats {
    pub downstream_rq_total: AtomicU64,
    pub downstream_rq_active: AtomicI64,
    pub downstream_rq: StatusCounters,
    pub downstream_rq_time: Histogram,
    pub downstream_cx_total: AtomicU64,
    pub downstream_cx_active: AtomicI64,
    /// Connections closed at once by the `connection_limit` filter.
    pub downstream_cx_overflow: AtomicU64,
    pub downstream_rq_http1_total: AtomicU64,
    pub downstream_rq_http2_total: AtomicU64,
    pub no_route: AtomicU64,
    pub no_cluster: AtomicU64,
    pub rq_direct_response: AtomicU64,
    pub rq_redirect: AtomicU64,
    /// Requests refused (400) by path normalization.
    pub downstream_rq_failed_path_normalization: AtomicU64,
    /// Requests answered 307 by `UNESCAPE_AND_REDIRECT`.
    pub downstream_rq_redirected_with_normalized_path: AtomicU64,
    /// Streams ended by `stream_idle_timeout` (or a route's `idle_timeout`).
    pub downstream_rq_idle_timeout: AtomicU64,
    /// Requests not received in full within `request_timeout`.
    pub downstream_rq_timeout: AtomicU64,
    pub downstream_rq_header_timeout: AtomicU64,
    /// Streams ended by `max_stream_duration`.
    pub downstream_rq_max_duration_reached: AtomicU64,
    /// Connections closed by `common_http_protocol_options.idle_timeout`.
    pub downstream_cx_idle_timeout: AtomicU64,
    /// Connections closed on a request the HTTP/1 codec could not accept
    /// (malformed, or headers over the limits).
    pub downstream_cx_protocol_error: AtomicU64,
    /// Headers with underscores dropped and requests rejected for one
    /// (`http1.*` / `http2.*`).
    pub http1_underscores: UnderscoreStats,
    pub http2_underscores: UnderscoreStats,
    /// HTTP/2 connections closed because a keepalive PING went unanswered
    /// (`http2.keepalive_timeout`).
    pub http2_keepalive_timeout: AtomicU64,
    /// TLS listeners: handshakes completed (`listener.<addr>.ssl.handshake`).
    pub ssl_handshake: AtomicU64,
    /// TLS listeners: connections that ended before their handshake
    /// completed, a client hanging up included (`ssl.connection_error`).
    pub ssl_connection_error: AtomicU64,
    /// Connections no filter chain matched, closed
    /// (`listener.<addr>.no_filter_chain_match`).
    pub no_filter_chain_match: AtomicU64,
    /// Connections the listener filters (`tls_inspector`) did not finish
    /// with in `listener_filters_timeout` (`downstream_pre_cx_timeout`).
    pub downstream_pre_cx_timeout: AtomicU64,
    /// mTLS: clients turned away for sending no certificate
    /// (`ssl.fail_verify_no_cert`) or one that failed verification
    /// (`ssl.fail_verify_error`).
    pub ssl_fail_verify_no_cert: AtomicU64,
    pub ssl_fail_verify_error: AtomicU64,
    /// mTLS: client certificates without an accepted subject alternative
    /// name (`ssl.fail_verify_san`).
    pub ssl_fail_verify_san: AtomicU64,
}

/// `tcp.<stat_prefix>.*` statistics of a TCP proxy.
#[derive(Debug, Default)]
pub struct TcpProxyStats {
    pub downstream_cx_total: AtomicU64,
    /// Connections without a cluster. Validation makes every cluster a
    /// tcp_proxy names exist, so this stays 0 until clusters can change at
    /// run time; Envoy's dashboards query it.
    pub downstream_cx_no_route: AtomicU64,
    pub downstream_cx_rx_bytes_total: AtomicU64,
    pub downstream_cx_tx_bytes_total: AtomicU64,
    /// Connections closed by `idle_timeout`.
    pub idle_timeout: AtomicU64,
    /// Connections closed by `max_downstream_connection_duration`.
    pub max_downstream_connection_duration: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.record(Duration::from_micros(300)); // 0.3 ms -> 0.5 bucket
        h.record(Duration::from_millis(7)); // -> 10 bucket
        h.record(Duration::from_secs(7200)); // -> +Inf
        let s = h.snapshot();
        assert_eq!(s.cumulative[0], 1);
        assert_eq!(s.cumulative[3], 2);
        assert_eq!(*s.cumulative.last().unwrap(), 2);
        assert_eq!(s.count, 3);
        assert!((s.sum_ms - (0.3 + 7.0 + 7_200_000.0)).abs() < 0.01);
    }

    #[test]
    fn upstream_tracer_counts_open_and_closed_connections() {
        let cluster = Arc::new(ClusterStats::default());
        let host = Arc::new(HostStats::default());
        let tracer = UpstreamConnectionTracer::tracer(&cluster, &host, Some(UpstreamCodecStat::Http2));
        // Pingora clones the peer's tracer into each new connection.
        let first = tracer.clone();
        let second = tracer.clone();
        first.0.on_connected();
        second.0.on_connected();
        first.0.on_disconnected();
        assert_eq!(cluster.upstream_cx_total.load(Relaxed), 2);
        assert_eq!(cluster.upstream_cx_active.load(Relaxed), 1);
        assert_eq!(cluster.upstream_cx_destroy.load(Relaxed), 1);
        assert_eq!(cluster.upstream_cx_http2_total.load(Relaxed), 2);
        assert_eq!(cluster.upstream_cx_http1_total.load(Relaxed), 0);
        assert_eq!(host.cx_total.load(Relaxed), 2);
        assert_eq!(host.cx_active.load(Relaxed), 1);
    }

    #[test]
    fn status_counters_and_classes() {
        let c = StatusCounters::default();
        c.record(200);
        c.record(200);
        c.record(503);
        c.record(42); // ignored
        c.record(700); // ignored
        assert_eq!(c.nonzero(), vec![(200, 2), (503, 1)]);
        assert_eq!(c.classes(), [0, 2, 0, 0, 1]);
    }
}
