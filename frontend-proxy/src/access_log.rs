//! Envoy's access loggers: the command-operator format language
//! ([`format`], parsed once when the configuration loads), the filters
//! that pick which requests a logger writes ([`Filter`], also what a
//! `local_reply_config` mapper matches with), the line a finished request
//! renders to ([`Entry`] → `render`), and the sinks the lines go to
//! ([`Sink`]: a writer thread per path, fed through a bounded channel so a
//! slow disk never holds up a request, reopened on SIGUSR1).
//!
//! Nothing here knows about the configuration or the engines: `config`
//! parses formats with [`Format::parse_text`], `server` opens the sinks,
//! and `proxy` describes each finished request as an [`Entry`].

mod filter;
pub mod format;
mod render;
mod sink;

pub use filter::{Comparison, Facts, Filter, Op};
pub use format::{Format, FormatError};
pub use sink::{Sink, Sinks};

use crate::address::Address;
use pingora_http::RequestHeader;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One access logger of a connection manager: a format, where it writes,
/// and which requests (`filter`; `None`: all).
pub struct AccessLog {
    format: Arc<Format>,
    sink: Arc<Sink>,
    filter: Option<Arc<Filter>>,
}

thread_local! {
    /// The line being formatted, reused from request to request on a worker.
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
}

impl AccessLog {
    pub fn new(format: Arc<Format>, sink: Arc<Sink>, filter: Option<Arc<Filter>>) -> Self {
        Self { format, sink, filter }
    }

    /// Formats `entry` and hands the line to the sink's writer, if the
    /// logger's filter selects it; never blocks.
    pub fn log(&self, entry: &Entry<'_>) {
        if let Some(filter) = &self.filter {
            if !filter.evaluate(&entry.facts()) {
                return;
            }
        }
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            self.format.render(entry, &mut line);
            self.sink.write(line.as_str());
        });
    }
}

/// What a finished request gives its access log.
pub struct Entry<'a> {
    /// When the first byte of the request arrived.
    pub start: SystemTime,
    /// From the first request byte to the last response byte.
    pub duration: Duration,
    /// `None` for a request refused before it had a head.
    pub request: Option<&'a RequestHeader>,
    pub http2: bool,
    /// Status written to the client; 0 if none was.
    pub status: u16,
    pub flags: ResponseFlags,
    /// Request body bytes read from the client.
    pub bytes_received: u64,
    /// Response body bytes written to the client.
    pub bytes_sent: u64,
    /// The value of `x-envoy-upstream-service-time`, when the proxy added it.
    pub upstream_service_time: Option<Duration>,
    /// `ip:port`, or a pipe's path (Envoy's `asString()`).
    pub upstream_host: Option<&'a Address>,
    pub upstream_cluster: Option<&'a str>,
    pub downstream_remote: Option<SocketAddr>,
    /// The listener's address (a wildcard IP listener's: the one the
    /// client connected to).
    pub downstream_local: Option<&'a Address>,
    pub route_name: Option<&'a str>,
    pub hostname: &'a str,
    pub response_code_details: Option<&'a str>,
    /// The text of the local reply being formatted (`%LOCAL_REPLY_BODY%`;
    /// `None` in access logs).
    pub local_reply_body: Option<&'a str>,
}

impl Entry<'_> {
    /// What an access log filter judges the entry by.
    pub fn facts(&self) -> Facts<'_> {
        Facts { status: self.status, duration: self.duration, flags: self.flags, request: self.request }
    }
}

/// Envoy's response flags, as `%RESPONSE_FLAGS%` prints them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseFlags(u16);

impl ResponseFlags {
    pub const NO_HEALTHY_UPSTREAM: Self = Self(1);
    pub const UPSTREAM_REQUEST_TIMEOUT: Self = Self(1 << 1);
    pub const UPSTREAM_CONNECTION_FAILURE: Self = Self(1 << 3);
    pub const UPSTREAM_CONNECTION_TERMINATION: Self = Self(1 << 4);
    pub const UPSTREAM_OVERFLOW: Self = Self(1 << 5);
    pub const UPSTREAM_RETRY_LIMIT_EXCEEDED: Self = Self(1 << 6);
    pub const NO_ROUTE_FOUND: Self = Self(1 << 7);
    pub const DOWNSTREAM_CONNECTION_TERMINATION: Self = Self(1 << 8);
    pub const STREAM_IDLE_TIMEOUT: Self = Self(1 << 9);
    pub const DOWNSTREAM_PROTOCOL_ERROR: Self = Self(1 << 10);
    pub const UPSTREAM_PROTOCOL_ERROR: Self = Self(1 << 11);
    /// A TCP proxy's `max_downstream_connection_duration` ended the connection.
    pub const DURATION_TIMEOUT: Self = Self(1 << 12);

    /// Short names in the order Envoy prints them.
    const SHORT: [(Self, &'static str); 12] = [
        (Self::NO_HEALTHY_UPSTREAM, "UH"),
        (Self::UPSTREAM_REQUEST_TIMEOUT, "UT"),
        (Self::UPSTREAM_CONNECTION_FAILURE, "UF"),
        (Self::UPSTREAM_CONNECTION_TERMINATION, "UC"),
        (Self::UPSTREAM_OVERFLOW, "UO"),
        (Self::UPSTREAM_RETRY_LIMIT_EXCEEDED, "URX"),
        (Self::NO_ROUTE_FOUND, "NR"),
        (Self::DOWNSTREAM_CONNECTION_TERMINATION, "DC"),
        (Self::STREAM_IDLE_TIMEOUT, "SI"),
        (Self::DOWNSTREAM_PROTOCOL_ERROR, "DPE"),
        (Self::DURATION_TIMEOUT, "DT"),
        (Self::UPSTREAM_PROTOCOL_ERROR, "UPE"),
    ];

    /// The flag Envoy prints as `short` (`UH`, `NR`, ...), if this proxy
    /// ever raises it.
    pub fn from_short(short: &str) -> Option<Self> {
        Self::SHORT.iter().find(|(_, n)| *n == short).map(|(f, _)| *f)
    }

    /// The short names of every flag this proxy raises.
    pub fn short_names() -> impl Iterator<Item = &'static str> {
        Self::SHORT.iter().map(|(_, n)| *n)
    }

    /// Whether any flag of `other` is set.
    pub fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Appends the short names joined with `,`, or `-` when there are none.
    pub fn write_short(self, out: &mut String) {
        if self.is_empty() {
            out.push('-');
            return;
        }
        let mut first = true;
        for (flag, name) in Self::SHORT {
            if self.contains(flag) {
                if !first {
                    out.push(',');
                }
                out.push_str(name);
                first = false;
            }
        }
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for ResponseFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_print_as_envoy_short_names() {
        let mut s = String::new();
        ResponseFlags::default().write_short(&mut s);
        assert_eq!(s, "-");
        s.clear();
        (ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED | ResponseFlags::UPSTREAM_CONNECTION_FAILURE).write_short(&mut s);
        assert_eq!(s, "UF,URX");
        s.clear();
        ResponseFlags::NO_ROUTE_FOUND.write_short(&mut s);
        assert_eq!(s, "NR");
    }
}
