//! Bodies: the request body a client sends (what was read with the head,
//! and what is still to come) and the response body passed from the
//! upstream to the client with the framing it arrived with.

use super::buffers::Buffers;
use super::client::{unless_gone, Client};
use super::pool::Upstream;
use super::timer::within;
use super::wire::{ChunkedScanner, Framing, RequestBody, TRAILER_END};
use crate::proxy::attempt::AttemptStart;
use crate::proxy::local_reply::LocalReply;
use bytes::{Buf, Bytes, BytesMut};
use pingora_error::ErrorType;
use tokio::io::AsyncReadExt;
use tracing::debug;

/// Largest read while passing a body through.
pub(super) const BODY_READ: usize = 64 * 1024;
/// Largest body part copied behind a response head to go out in one write;
/// a larger one goes beside it in a vectored write.
const COALESCE: usize = 4096;

/// A request body: the part already read with the head, and what is left
/// to read from the client.
pub(super) struct Body {
    /// What goes to the upstream first (of a chunked body, the part up to
    /// where it ends, its trailer fields left out).
    pub buffered: Bytes,
    /// Bytes of a `Content-Length` body still to read.
    pub unread: u64,
    /// A chunked body still arriving, and where its scan stands.
    pub chunked: Option<Box<ChunkedScanner>>,
    /// Not all of it was read with the head: it streams, and cannot be resent.
    pub streamed: bool,
    /// Body bytes received from the client so far.
    pub received: u64,
}

/// Why a request body could not be passed on: the client's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::proxy) enum BodyError {
    /// The chunked coding is broken (400).
    Malformed,
    /// More than the buffer filter's `max_request_bytes` (413).
    TooLarge,
}

impl BodyError {
    /// What the client is told.
    pub fn reply(self) -> LocalReply {
        match self {
            BodyError::Malformed => LocalReply::BadRequest,
            BodyError::TooLarge => LocalReply::PayloadTooLarge,
        }
    }
}

impl Body {
    /// The body of a request with `framing`, from what `down` holds after
    /// the head (the body's bytes are taken out of it); `max` is the
    /// buffer filter's limit, if any.
    pub fn start(framing: RequestBody, down: &mut BytesMut, max: Option<u32>) -> Result<Self, BodyError> {
        match framing {
            RequestBody::Length(len) => {
                let buffered = len.min(down.len() as u64) as usize;
                let unread = len - buffered as u64;
                Ok(Body {
                    buffered: down.split_to(buffered).freeze(),
                    unread,
                    chunked: None,
                    streamed: unread > 0,
                    received: buffered as u64,
                })
            }
            RequestBody::Chunked => {
                let mut scanner = Box::new(ChunkedScanner::default());
                let buffered = take_chunks(&mut scanner, down, max)?;
                let done = scanner.is_done();
                Ok(Body {
                    received: buffered.len() as u64,
                    buffered,
                    unread: 0,
                    chunked: (!done).then_some(scanner),
                    streamed: !done,
                })
            }
        }
    }

    /// A body refused as it stands: nothing more of it is read, and the
    /// connection closes after the reply (lingering, so that a client still
    /// sending gets the reply rather than a reset).
    pub fn refused() -> Self {
        Body { buffered: Bytes::new(), unread: u64::MAX, chunked: None, streamed: true, received: 0 }
    }

    /// Whether the whole body is in memory, so an attempt can be repeated.
    pub fn complete(&self) -> bool {
        self.unread == 0 && self.chunked.is_none()
    }

    /// The next part to pass on from what `down` holds (not empty), taken
    /// out of it.
    pub fn next_part(&mut self, down: &mut BytesMut, max: Option<u32>) -> Result<Bytes, BodyError> {
        let part = match self.chunked.as_mut() {
            Some(scanner) => {
                let part = take_chunks(scanner, down, max)?;
                if scanner.is_done() {
                    self.chunked = None;
                }
                part
            }
            None => {
                let n = (self.unread as usize).min(down.len());
                self.unread -= n as u64;
                down.split_to(n).freeze()
            }
        };
        self.received += part.len() as u64;
        Ok(part)
    }
}

/// Scans the chunked body bytes at the start of `down` and takes out the
/// part that belongs to the body: what goes upstream (the trailer section
/// replaced by an empty one once it ends).
fn take_chunks(scanner: &mut ChunkedScanner, down: &mut BytesMut, max: Option<u32>) -> Result<Bytes, BodyError> {
    let scanned = scanner.scan(down).map_err(|e| {
        debug!(error = %e, "malformed chunked request body");
        BodyError::Malformed
    })?;
    if max.is_some_and(|max| scanner.data_len() > u64::from(max)) {
        return Err(BodyError::TooLarge);
    }
    let mut part = down.split_to(scanned.consumed);
    if scanned.done && scanned.forward + TRAILER_END.len() == scanned.consumed {
        // No trailer fields: the bytes go on as they came.
        return Ok(part.freeze());
    }
    part.truncate(scanned.forward);
    if scanned.done {
        // Room enough: the dropped section held at least its empty line.
        part.extend_from_slice(TRAILER_END);
    }
    Ok(part.freeze())
}

/// Which side a body transfer failed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Upstream,
    Downstream,
    /// Nothing moved either way within the stream idle timeout.
    Idle,
}

/// How passing a response body ended.
pub(super) enum Passed {
    /// All of it went out: body bytes received, and whether the upstream
    /// sent nothing past the body (its connection may be pooled).
    Done { received: u64, clean: bool },
    /// It broke off: body bytes received, the error, and whose.
    Broken { received: u64, error: ErrorType, side: Side },
}

/// Passes the response body from `up` to the client, after the head
/// waiting in `bufs.out`. A chunked body is checked as it goes (its
/// trailer fields dropped); one that breaks the grammar ends the response
/// there, and the connection closes. A client that takes the content only
/// (`!D::FRAMED`) gets the chunks' data without the coding.
pub(super) async fn pass_body<D: Client>(
    down: &mut D,
    bufs: &mut Buffers,
    up: &mut Upstream,
    framing: Framing,
    close: bool,
    attempt: &AttemptStart,
) -> Passed {
    let (read_timeout, idle_binds) = attempt.io_timeout();
    let read_side = if idle_binds { Side::Idle } else { Side::Upstream };
    let mut received = 0u64;
    let mut chunks = ChunkedScanner::default();
    // Where the chunk data lies in what was read (content-only clients).
    let mut spans = Vec::new();
    let dechunk = !D::FRAMED && framing == Framing::Chunked;
    // Bytes of a `Content-Length` body still to come.
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    if !D::FRAMED && framing != Framing::Empty {
        // A content-only client gets the head at once, as Pingora's path
        // sends it: a body that then breaks resets a stream whose status
        // the client (and the access log) saw.
        if let Err(broken) = send_part(down, &b""[..], false, close, attempt).await {
            return broken.with(received);
        }
    }
    loop {
        // What the upstream sent, up to the end of the body: the bytes that
        // go on, the bytes that belong to the body, whether it ends here.
        let (forward, consumed, end) = match framing {
            Framing::Empty => (0, 0, true),
            Framing::Length(_) => {
                let n = left.min(bufs.up.len() as u64) as usize;
                (n, n, n as u64 == left)
            }
            Framing::Chunked if dechunk => match chunks.scan_data(&bufs.up, &mut spans) {
                Ok(s) => (0, s.consumed, s.done),
                Err(e) => {
                    debug!(error = %e, "malformed chunked response body");
                    return Passed::Broken { received, error: ErrorType::InvalidHTTPHeader, side: Side::Upstream };
                }
            },
            Framing::Chunked => match chunks.scan(&bufs.up) {
                Ok(s) => (s.forward, s.consumed, s.done),
                Err(e) => {
                    debug!(error = %e, "malformed chunked response body");
                    return Passed::Broken { received, error: ErrorType::InvalidHTTPHeader, side: Side::Upstream };
                }
            },
            Framing::UntilClose => (bufs.up.len(), bufs.up.len(), false),
        };
        if dechunk {
            // The content of this read in one part (one DATA frame, not one
            // per chunk: an upstream writing one-byte chunks must not make
            // the client side ten times as many frames), the end of the
            // response with it; with no content, the head at once.
            let joined;
            let content: &[u8] = match spans.as_slice() {
                [] => &[],
                [one] => &bufs.up[one.clone()],
                many => {
                    let mut all = Vec::with_capacity(many.iter().map(|s| s.len()).sum());
                    for span in many {
                        all.extend_from_slice(&bufs.up[span.clone()]);
                    }
                    joined = all;
                    &joined
                }
            };
            spans.clear();
            received += content.len() as u64;
            if let Err(broken) = send_part(down, content, end, close, attempt).await {
                return broken.with(received);
            }
        } else {
            let tail = if end && framing == Framing::Chunked { TRAILER_END } else { &[] };
            // The head (first time round) and the body bytes read with it go
            // out in one write (a small body part copied behind the head, a
            // large one beside it in a vectored write); later parts straight
            // from the upstream buffer.
            let body = &bufs.up[..forward];
            let parts: (&[u8], &[u8], &[u8]) = if bufs.out.is_empty() {
                (&[], body, tail)
            } else if body.len() <= COALESCE {
                bufs.out.extend_from_slice(body);
                bufs.out.extend_from_slice(tail);
                (&bufs.out, &[], &[])
            } else {
                (&bufs.out, body, tail)
            };
            let bytes = Buf::chain(Buf::chain(parts.0, parts.1), parts.2);
            // A client that frames nothing itself gets the head at once,
            // and needs to hear of the end.
            if bytes.has_remaining() || !D::FRAMED {
                if let Err(broken) = send_part(down, bytes, end, close, attempt).await {
                    return broken.with(received);
                }
            }
            received += consumed as u64;
        }
        bufs.out.clear();
        bufs.up.advance(consumed);
        left -= (consumed as u64).min(left);
        if end {
            return Passed::Done { received, clean: bufs.up.is_empty() };
        }
        let want = match framing {
            Framing::Length(_) => usize::try_from(left).unwrap_or(BODY_READ).min(BODY_READ),
            _ => BODY_READ,
        };
        bufs.up.reserve(want);
        let Some(read) = unless_gone(down, within(read_timeout, up.read_buf(&mut bufs.up))).await else {
            return Passed::Broken { received, error: ErrorType::ConnectionClosed, side: Side::Downstream };
        };
        match read {
            Ok(Ok(0)) if framing == Framing::UntilClose => {
                if !D::FRAMED {
                    if let Err(broken) = send_part(down, &b""[..], true, close, attempt).await {
                        return broken.with(received);
                    }
                }
                return Passed::Done { received, clean: false };
            }
            Ok(Ok(0)) => return Passed::Broken { received, error: ErrorType::ConnectionClosed, side: Side::Upstream },
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Passed::Broken { received, error: ErrorType::ReadError, side: Side::Upstream },
            Err(_) => return Passed::Broken { received, error: ErrorType::ReadTimedout, side: read_side },
        }
    }
}

/// A write to the client that failed: the error and whose.
struct WriteFailed(ErrorType, Side);

impl WriteFailed {
    fn with(self, received: u64) -> Passed {
        Passed::Broken { received, error: self.0, side: self.1 }
    }
}

/// Passes `bytes` to the client within the stream idle timeout.
async fn send_part<D: Client, B: Buf + Send + Sync>(
    down: &mut D,
    bytes: B,
    end: bool,
    close: bool,
    attempt: &AttemptStart,
) -> Result<(), WriteFailed> {
    match within(attempt.idle, down.pass(bytes, end, close)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(WriteFailed(ErrorType::WriteError, Side::Downstream)),
        Err(_) => Err(WriteFailed(ErrorType::WriteTimedout, Side::Idle)),
    }
}
