//! frontend-proxy: an edge proxy on Pingora that serves an Envoy v3 static
//! bootstrap.
//!
//! Layout:
//! - [`config`]: the bootstrap YAML, raw serde layer and validation into the runtime model.
//! - [`routing`]: virtual hosts, routes, header edits; Envoy's matching order.
//! - [`upstream`]: clusters, DNS discovery, load balancing.
//! - [`proxy`]: the Pingora `ProxyHttp` implementation.
//! - [`access_log`]: Envoy's access loggers: format strings, filters, the writer behind each file.
//! - [`metrics`]: Envoy-named statistics.
//! - [`tls`]: certificates and keys; [`sds`]: secrets from SDS files, watched and rotated.
//! - [`runtime`]: what the listeners run from, built once from the model.
//! - [`drain`]: the process lifecycle: one drain signal, and the connections it waits for.
//! - [`admin`]: Envoy's admin interface: stats, Prometheus, clusters, readiness.
//! - [`chain_match`]: which filter chain serves a connection; [`chain_match::tls_inspector`] peeks at its ClientHello.
//! - [`downstream`]: per-connection policy and the choice of HTTP engine; [`listen`]: our accept loop, one per
//!   worker thread, for TLS, pipe and plaintext listeners (plaintext TCP ones with `--http1-engine pingora`
//!   stay on Pingora's listener service).
//! - [`server`]: wiring it all into a Pingora server.
//! - [`cli`]: Envoy-compatible command line; [`probe`]: the container health probe.
// `deny`, not `forbid`: listen::defer holds the one setsockopt no safe crate
// offers, with its reason written there.
#![deny(unsafe_code)]

pub mod access_log;
pub mod address;
pub mod admin;
pub mod allocator;
pub mod chain_match;
pub mod cli;
pub mod config;
pub mod downstream;
pub mod drain;
/// The HTTP/1.1 wire code over byte slices, for fuzzing and differential tests only.
#[doc(hidden)]
pub mod fuzzing;
pub mod listen;
pub mod metrics;
pub mod probe;
pub mod proxy;
pub mod routing;
pub mod runtime;
pub mod sds;
pub mod server;
pub mod tls;
pub mod upstream;
