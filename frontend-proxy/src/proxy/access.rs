//! A finished request as its access loggers see it: what the lifecycle
//! knows, in Envoy's terms (response flags, response code details).

use super::lifecycle::Completion;
use super::{LocalReply, Proxy, RequestCtx};
use crate::access_log::{Entry, ResponseFlags};
use http::Method;
use std::time::{Duration, SystemTime};

impl Proxy {
    /// Writes the request's line to each access logger of its listener.
    pub(super) fn write_access_logs(&self, done: &Completion<'_>, ctx: &RequestCtx, elapsed: Duration) {
        let listener = self.listener(ctx);
        if listener.access_logs.is_empty() {
            return;
        }
        let head_request = done.request.is_some_and(|r| r.method == Method::HEAD);
        let mut flags = ctx.reply.as_ref().map(flags).unwrap_or_default();
        if flags.is_empty() && ctx.reply.is_none() && done.status == 0 && done.request.is_some() {
            // Nothing reached the client and the proxy did not give up on
            // its own: the client went away first.
            flags = ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION;
        }
        let details = match &ctx.reply {
            Some(r) => Some(details(r)),
            None if ctx.upstream_time.is_some() && done.status != 0 => Some("via_upstream"),
            None => None,
        };
        let bytes_sent = match &ctx.reply {
            Some(_) if head_request => 0,
            Some(_) => ctx.reply_bytes,
            None => done.upstream_body_bytes,
        };
        let entry = Entry {
            request: done.request,
            http2: done.http2,
            status: done.status,
            flags,
            bytes_received: done.request_body_bytes,
            bytes_sent,
            response_code_details: details,
            ..self.entry_of(ctx, elapsed)
        };
        for log in &listener.access_logs {
            log.log(&entry);
        }
    }
}

impl Proxy {
    /// What the request's context tells an access-log entry (timing,
    /// upstream, addresses, route), `elapsed` after its first byte; the
    /// caller fills in the request, the outcome and the byte counts.
    pub(super) fn entry_of<'a>(&'a self, ctx: &'a RequestCtx, elapsed: Duration) -> Entry<'a> {
        let now = SystemTime::now();
        Entry {
            start: now.checked_sub(elapsed).unwrap_or(now),
            duration: elapsed,
            request: None,
            http2: false,
            status: 0,
            flags: ResponseFlags::default(),
            bytes_received: 0,
            bytes_sent: 0,
            upstream_service_time: self.upstream_service_time(ctx),
            upstream_host: ctx.host.as_ref().map(|h| &h.addr),
            upstream_cluster: self.cluster(ctx).map(|c| c.name()),
            downstream_remote: ctx.client_addr,
            downstream_local: Some(&self.listener(ctx).address),
            route_name: self.route(ctx).and_then(|(_, _, r)| r.name.as_deref()),
            hostname: &self.hostname,
            response_code_details: None,
            local_reply_body: None,
        }
    }
}

/// Envoy's response flags for a reply the proxy wrote itself.
pub(super) fn flags(reply: &LocalReply) -> ResponseFlags {
    let exhausted = |retried: bool| match retried {
        true => ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED,
        false => ResponseFlags::default(),
    };
    match reply {
        LocalReply::NoRoute => ResponseFlags::NO_ROUTE_FOUND,
        LocalReply::NoHealthyUpstream => ResponseFlags::NO_HEALTHY_UPSTREAM,
        LocalReply::ConnectFailure { retried } => ResponseFlags::UPSTREAM_CONNECTION_FAILURE | exhausted(*retried),
        LocalReply::UpstreamReset { retried } => ResponseFlags::UPSTREAM_CONNECTION_TERMINATION | exhausted(*retried),
        LocalReply::UpstreamProtocolError { retried } => ResponseFlags::UPSTREAM_PROTOCOL_ERROR | exhausted(*retried),
        LocalReply::Timeout => ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
        LocalReply::Overflow => ResponseFlags::UPSTREAM_OVERFLOW,
        LocalReply::StreamIdleTimeout => ResponseFlags::STREAM_IDLE_TIMEOUT,
        LocalReply::BadRequest | LocalReply::HeadersTooLarge | LocalReply::UnsupportedTransferCoding => {
            ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR
        }
        LocalReply::UpgradeRejected
        | LocalReply::RequestTimeout
        | LocalReply::RequestHeaderTimeout
        | LocalReply::MaxStreamDuration
        | LocalReply::PayloadTooLarge
        | LocalReply::Direct { .. }
        | LocalReply::Redirect { .. }
        | LocalReply::PathNormalizationFailed
        | LocalReply::NormalizedPathRedirect { .. }
        | LocalReply::UpgradeRequired
        | LocalReply::MissingHost => ResponseFlags::default(),
    }
}

/// `%RESPONSE_CODE_DETAILS%` for a reply the proxy wrote itself.
pub(super) fn details(reply: &LocalReply) -> &'static str {
    match reply {
        LocalReply::NoRoute => "route_not_found",
        LocalReply::NoHealthyUpstream => "no_healthy_upstream",
        LocalReply::ConnectFailure { .. } => "upstream_reset_before_response_started{connection_failure}",
        LocalReply::UpstreamReset { .. } => "upstream_reset_before_response_started{connection_termination}",
        LocalReply::UpstreamProtocolError { .. } => "upstream_reset_before_response_started{protocol_error}",
        LocalReply::Overflow => "upstream_reset_before_response_started{overflow}",
        LocalReply::Timeout => "upstream_response_timeout",
        LocalReply::UpgradeRejected => "upgrade_failed",
        LocalReply::BadRequest => "codec_error",
        LocalReply::HeadersTooLarge => "headers_too_large",
        LocalReply::UnsupportedTransferCoding => "invalid_transfer_encoding",
        LocalReply::StreamIdleTimeout => "stream_idle_timeout",
        LocalReply::RequestTimeout => "request_overall_timeout",
        LocalReply::RequestHeaderTimeout => "request_header_timeout",
        LocalReply::MaxStreamDuration => "max_duration_timeout",
        LocalReply::PayloadTooLarge => "request_payload_too_large",
        LocalReply::Direct { .. } | LocalReply::Redirect { .. } => "direct_response",
        LocalReply::PathNormalizationFailed | LocalReply::NormalizedPathRedirect { .. } => "path_normalization_failed",
        LocalReply::UpgradeRequired => "low_version",
        LocalReply::MissingHost => "missing_host_header",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_replies_carry_envoys_flags() {
        let short = |r: LocalReply| {
            let mut s = String::new();
            flags(&r).write_short(&mut s);
            s
        };
        assert_eq!(short(LocalReply::NoRoute), "NR");
        assert_eq!(short(LocalReply::NoHealthyUpstream), "UH");
        assert_eq!(short(LocalReply::ConnectFailure { retried: false }), "UF");
        assert_eq!(short(LocalReply::ConnectFailure { retried: true }), "UF,URX");
        assert_eq!(short(LocalReply::UpstreamReset { retried: false }), "UC");
        assert_eq!(short(LocalReply::Timeout), "UT");
        assert_eq!(short(LocalReply::Overflow), "UO");
        assert_eq!(short(LocalReply::StreamIdleTimeout), "SI");
        assert_eq!(short(LocalReply::PayloadTooLarge), "-");
    }
}
