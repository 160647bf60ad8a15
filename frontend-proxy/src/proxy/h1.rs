//! The native HTTP/1.1 engine: serves plain HTTP/1.1 keep-alive traffic
//! without Pingora's `HttpProxy`, at a fraction of the instructions per
//! request (bench/RESULTS.md).
//!
//! It reads request heads into one reused buffer, runs the same request
//! lifecycle as the Pingora engine (`lifecycle.rs`: limits, edge headers,
//! routing, attempts and retries, stats, access log), keeps upstream
//! connections in a per-worker pool and passes bodies through with the
//! framing they arrived with, checked on the way.
//!
//! It also serves HTTP/2 streams whose cluster speaks HTTP/1.1 upstream,
//! for our HTTP/2 server (`proxy/h2.rs`, [`downgrade`]): the exchange works on a
//! [`client::Client`], an HTTP/1 stream or an HTTP/2 one.
//!
//! Anything else — HTTP/1.0, upgrades and WebSockets, `Expect`, h2c,
//! `OPTIONS *`, CONNECT, and a request routed to a cluster that speaks
//! HTTP/2 upstream — is handed to Pingora on the same connection, with the
//! bytes already read replayed in front of it.
//!
//! Layout: [`conn`] (the connection loop, request heads, local replies),
//! [`exchange`] (attempts on the cluster, retries, the response),
//! [`client`] (what an exchange needs from its client), [`downgrade`]
//! (HTTP/2 streams), [`send`] (one attempt's upstream side), [`body`] (request and response
//! bodies), [`buffers`] (what a connection reuses), [`wire`] (parsing and
//! writing HTTP/1.1), [`io`] (the client stream and writes), [`timer`],
//! [`pool`] (upstream connections), [`recycle`] (buffers).

mod body;
mod buffers;
mod client;
mod conn;
mod downgrade;
mod exchange;
mod io;
mod pool;
mod recycle;
mod send;
mod timer;
pub(crate) mod wire;

pub use downgrade::{send_down, Downgraded};
pub use io::ClientStream;
pub(super) use pool::{PoolKey, Upstream};
pub(super) use send::AttemptError;

use super::Proxy;
use bytes::Bytes;
use pingora_core::connectors::TransportConnector;

/// How a connection served by the native engine ended.
pub enum Served {
    Closed,
    /// The rest of the connection needs Pingora: the bytes read but not
    /// served, to replay in front of the stream.
    HandOff(Bytes),
}

/// The native engine, shared by every connection of a service.
pub struct NativeH1 {
    proxy: Proxy,
    /// Opens TLS upstream connections (plain ones are opened directly).
    connector: TransportConnector,
}

impl NativeH1 {
    pub fn new(proxy: Proxy) -> Self {
        Self { proxy, connector: TransportConnector::new(None) }
    }

    /// The lifecycle the engine runs its requests through (our HTTP/2
    /// server, `proxy/h2.rs`, runs its streams' through it too).
    pub(super) fn proxy(&self) -> &Proxy {
        &self.proxy
    }
}
