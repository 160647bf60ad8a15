//! The client side of an exchange, whatever carries it: where the request
//! body comes from, where the response head and body go. An HTTP/1
//! [`ClientStream`] reads and writes HTTP/1 bytes as they are; an HTTP/2
//! stream served by the engine (`downgrade.rs`) re-frames them.

use super::io::{write_all, ClientStream};
use super::wire::{self, ResponseHead};
use super::NativeH1;
use crate::proxy::context::RequestCtx;
use crate::proxy::date;
use crate::proxy::framing::Codings;
use crate::proxy::response_head::Added;
use bytes::{Buf, BytesMut};
use http::header::TRANSFER_ENCODING;
use pingora_http::ResponseHeader;
use std::future::Future;
use tokio::io::AsyncReadExt;

/// What one exchange needs from its client.
pub(super) trait Client: Send {
    /// Response bodies go out with their HTTP/1 framing (the chunked coding
    /// kept); otherwise as their content only.
    const FRAMED: bool;
    /// The client speaks HTTP/2 (for `%PROTOCOL%` in header rules).
    const HTTP2: bool;

    /// Reads more of the request body, as HTTP/1 bytes in the framing the
    /// request head declared, onto the end of `buf`; `Ok(0)` or an error:
    /// the body will not arrive whole.
    fn read_body(&mut self, buf: &mut BytesMut) -> impl Future<Output = std::io::Result<usize>> + Send;

    /// Prepares the response head from the upstream's (`resp`, checked into
    /// `head`): as HTTP/1 bytes in `out`, or kept to go out with the first
    /// body part. `close`: the client connection closes after the response.
    fn response_head(
        &mut self,
        engine: &NativeH1,
        out: &mut Vec<u8>,
        resp: &httparse::Response<'_, '_>,
        head: &ResponseHead,
        ctx: &RequestCtx,
        close: bool,
    ) -> pingora_error::Result<()>;

    /// Resolves once the client has gone away (an HTTP/2 stream reset, or
    /// its connection lost), so that the exchange stops waiting on the
    /// upstream, as Pingora's engine does for its HTTP/2 streams. Waits on
    /// [`unless_gone`] only when `WATCHES_GONE`.
    fn gone(&mut self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }

    /// Whether [`Self::gone`] can resolve. An HTTP/1 client's close is
    /// seen at its next read or write, as before: a watch while waiting on
    /// the upstream would cost every keep-alive request a poll.
    const WATCHES_GONE: bool = false;

    /// What the request head needs to go to an HTTP/1 upstream that it
    /// does not carry itself (an HTTP/2 stream's `Host` and framing),
    /// written in place of its own fields of those names.
    fn http1_fields(&self) -> Option<&wire::Http1Fields> {
        None
    }

    /// Passes the next bytes of the response (the head written in `out`
    /// first, if any, then body bytes); `end`: the response ends with them.
    fn pass<B: Buf + Send + Sync>(
        &mut self,
        bytes: B,
        end: bool,
        close: bool,
    ) -> impl Future<Output = std::io::Result<()>> + Send;
}

/// An HTTP/1 client: bytes go both ways as they are.
impl<D: ClientStream> Client for D {
    const FRAMED: bool = true;
    const HTTP2: bool = false;

    async fn read_body(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        self.read_buf(buf).await
    }

    fn response_head(
        &mut self,
        engine: &NativeH1,
        out: &mut Vec<u8>,
        resp: &httparse::Response<'_, '_>,
        head: &ResponseHead,
        ctx: &RequestCtx,
        close: bool,
    ) -> pingora_error::Result<()> {
        write_response_head(engine, out, resp, head, ctx, close)
    }

    async fn pass<B: Buf + Send + Sync>(&mut self, bytes: B, end: bool, close: bool) -> std::io::Result<()> {
        match close && end {
            true => self.write_last(bytes).await,
            false => write_all(self, &mut { bytes }).await,
        }
    }
}

/// Writes the response head the client gets: the upstream's fields that
/// go on, and the proxy's own (the lifecycle's [`Added`] list, which
/// the Pingora engine applies too).
fn write_response_head(
    engine: &NativeH1,
    out: &mut Vec<u8>,
    resp: &httparse::Response<'_, '_>,
    head: &ResponseHead,
    ctx: &RequestCtx,
    close: bool,
) -> pingora_error::Result<()> {
    wire::write_status_line(out, head.status, resp.reason);
    // A length repeated with the same value goes on once (RFC 9110 §8.6).
    let mut length_seen = false;
    let forwarded =
        resp.headers.iter().filter(|h| head.forwards(h.name.as_bytes())).filter(move |h| {
            !(h.name.eq_ignore_ascii_case("content-length") && std::mem::replace(&mut length_seen, true))
        });
    // The codings, spelled one way for the client's parser.
    let coding = head
        .recode
        .then(|| {
            let te = resp.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
            Codings::canonical(te.map(|h| h.value))
        })
        .flatten();
    if engine.proxy.edits_response_headers(ctx) {
        // Configured edits work on a header map, as in the Pingora engine.
        let mut map = ResponseHeader::build_no_case(head.status, Some(resp.headers.len() + 4))?;
        for h in forwarded {
            map.append_header(h.name.to_string(), h.value)?;
        }
        if let Some(coding) = coding {
            map.append_header(TRANSFER_ENCODING, coding)?;
        }
        engine.proxy.downstream_headers(&mut map, ctx)?;
        for (name, value) in map.headers.iter() {
            wire::put_header(out, name.as_str().as_bytes(), value.as_bytes());
        }
    } else {
        let edits = engine.proxy.response_edits(ctx);
        let (mut has_server, mut has_date) = (false, false);
        for h in forwarded {
            let name = h.name.as_bytes();
            if edits.replaces(name) {
                continue;
            }
            has_server |= name.eq_ignore_ascii_case(b"server");
            has_date |= name.eq_ignore_ascii_case(b"date");
            wire::put_header(out, name, h.value);
        }
        if let Some(coding) = coding {
            wire::put_header(out, b"transfer-encoding", coding.as_bytes());
        }
        edits.additions(has_server, has_date, |name, added| match added {
            Added::Millis(t) => wire::put_millis_header(out, name.as_str().as_bytes(), t),
            Added::Value(v) => wire::put_header(out, name.as_str().as_bytes(), v.as_bytes()),
            Added::Date => wire::put_header(out, name.as_str().as_bytes(), date::now().as_bytes()),
            Added::Number(n) => wire::put_header(out, name.as_str().as_bytes(), n.to_string().as_bytes()),
        });
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// `work`'s output, or `None` if the client went away first (then `work`
/// is dropped with what it holds, an upstream connection mid-exchange
/// included).
pub(super) async fn unless_gone<D: Client, F: Future>(down: &mut D, work: F) -> Option<F::Output> {
    if !D::WATCHES_GONE {
        return Some(work.await);
    }
    tokio::select! {
        biased;
        out = work => Some(out),
        () = down.gone() => None,
    }
}
