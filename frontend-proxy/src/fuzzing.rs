//! The HTTP/1.1 wire code as plain functions over byte slices, for the
//! fuzz targets (`frontend-proxy/fuzz/`) and the differential properties
//! (`tests/wire_fuzz.rs`): the request-head parser, the reading of an
//! upstream's response head (interim responses skipped, framing, status
//! checks), and the chunked-body scanner; and the properties of the
//! connection manager's path normalization and of `tls_inspector`'s
//! ClientHello reading; and a ClientHello builder for the inspector's
//! unit tests and `tests/chains.rs` (hellos no TLS stack would write).
//!
//! Not an API for anything else. These signatures are the contract the
//! engine keeps whatever it does inside: small verdicts, no engine types.

use crate::proxy::h1::wire;
use bytes::BytesMut;
use std::ops::Range;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (HEAD, 1xx, 204, 304, `Content-Length: 0`).
    None,
    Length(u64),
    Chunked,
    /// Until the sender closes the connection.
    UntilClose,
}

impl From<wire::Framing> for BodyFraming {
    fn from(f: wire::Framing) -> Self {
        match f {
            wire::Framing::Empty => BodyFraming::None,
            wire::Framing::Length(n) => BodyFraming::Length(n),
            wire::Framing::Chunked => BodyFraming::Chunked,
            wire::Framing::UntilClose => BodyFraming::UntilClose,
        }
    }
}

/// What the engine makes of the first bytes a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestVerdict {
    /// More bytes are needed.
    Partial,
    /// A request the engine serves itself: the head's length, how its body
    /// is delimited, and whether the client asked to close after it.
    Served { head_len: usize, body: BodyFraming, close: bool },
    /// Valid HTTP another engine serves (upgrades, `Expect`, HTTP/1.0, ...).
    HandOff,
    /// Refused with this status (400, 431, 501).
    Refused { status: u16 },
}

/// Reads the request head at the start of `bytes`.
pub fn parse_request(bytes: &[u8]) -> RequestVerdict {
    let mut buf = BytesMut::from(bytes);
    match wire::parse_request(&mut buf) {
        wire::ParsedRequest::Partial => RequestVerdict::Partial,
        wire::ParsedRequest::Complete(mut r) => {
            // What the lifecycle checks before routing, as both engines run it.
            if let Some(reply) = crate::proxy::lifecycle::request_checks(&mut r.header, false) {
                return RequestVerdict::Refused { status: reply.status().as_u16() };
            }
            let body = match r.body {
                wire::RequestBody::Length(0) => BodyFraming::None,
                wire::RequestBody::Length(n) => BodyFraming::Length(n),
                wire::RequestBody::Chunked => BodyFraming::Chunked,
            };
            RequestVerdict::Served { head_len: bytes.len() - buf.len(), body, close: r.close }
        }
        wire::ParsedRequest::HandOff => RequestVerdict::HandOff,
        wire::ParsedRequest::TooManyHeaders => RequestVerdict::Refused { status: 431 },
        wire::ParsedRequest::Malformed => RequestVerdict::Refused { status: 400 },
        wire::ParsedRequest::UnsupportedCoding => RequestVerdict::Refused { status: 501 },
    }
}

/// What the request asked that changes how its response is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Asked {
    pub head: bool,
    pub upgrade: bool,
}

/// What the engine makes of the first bytes an upstream sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseVerdict {
    /// More bytes are needed.
    Partial,
    /// The final response head (after any interim ones): where it is in
    /// the input, its status, how its body is delimited, and whether the
    /// connection may carry another request once the body is through.
    Final { head: Range<usize>, status: u16, framing: BodyFraming, keep_alive: bool },
    /// Not forwarded: the client gets a 502.
    BadGateway,
}

/// Reads the response head at the start of `bytes` as the engine reads an
/// upstream's answer to a request that asked `asked`.
pub fn response_head(bytes: &[u8], asked: Asked) -> ResponseVerdict {
    // The engine's read loop (`exchange::read_response_head`), over a
    // slice. The engine never asks to upgrade (upgrades go to Pingora).
    let _ = asked.upgrade;
    let mut start = 0;
    loop {
        let buf = &bytes[start..];
        let end = match wire::scan_response_head(buf, 0) {
            wire::HeadScan::Final(end) => end,
            wire::HeadScan::Interim(len) => {
                start += len;
                continue;
            }
            wire::HeadScan::Invalid(_) => return ResponseVerdict::BadGateway,
            wire::HeadScan::Partial(_) if buf.len() > wire::MAX_RESPONSE_HEAD => return ResponseVerdict::BadGateway,
            wire::HeadScan::Partial(_) => return ResponseVerdict::Partial,
        };
        let mut slots = wire::header_slots();
        let mut resp = httparse::Response::new(&mut []);
        let parsed = wire::parse_response(&mut resp, &buf[..end], &mut slots);
        return match (parsed, wire::response_head(&resp, asked.head)) {
            (Ok(httparse::Status::Complete(_)), Ok(head)) => ResponseVerdict::Final {
                head: start..start + end,
                status: head.status,
                framing: head.framing.into(),
                keep_alive: !head.close,
            },
            _ => ResponseVerdict::BadGateway,
        };
    }
}

/// What the chunked scanner makes of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkedVerdict {
    /// The body goes on.
    Partial,
    /// It ends after `len` bytes (of all the parts together); `forwarded`
    /// is what the client gets of them (the trailer section emptied).
    End { len: usize, forwarded: Vec<u8> },
    /// Not a valid chunked body: the response is cut (or refused).
    Invalid,
}

/// Scans a chunked body that arrives in `parts` (one read each), as the
/// engine does while it passes the body on.
pub fn chunked_body(parts: &[&[u8]]) -> ChunkedVerdict {
    let mut scanner = wire::ChunkedScanner::default();
    let (mut offset, mut forwarded) = (0, Vec::new());
    for part in parts {
        match scanner.scan(part) {
            Ok(s) => {
                forwarded.extend_from_slice(&part[..s.forward]);
                if s.done {
                    forwarded.extend_from_slice(wire::TRAILER_END);
                    return ChunkedVerdict::End { len: offset + s.consumed, forwarded };
                }
                offset += part.len();
            }
            Err(_) => return ChunkedVerdict::Invalid,
        }
    }
    ChunkedVerdict::Partial
}

/// The properties of path normalization (`normalize_path`, `merge_slashes`,
/// `path_with_escaped_slashes_action`) for `target` under the settings
/// `options` picks (its low four bits): never a panic; a target it keeps,
/// rewrites or redirects to starts with `/` when the original did; and
/// normalizing that again changes nothing. `Err` says which broke.
pub fn check_path_normalization(options: u8, target: &[u8]) -> Result<(), String> {
    use crate::config::model::{EscapedSlashes, PathNormalization};
    use crate::proxy::path::{normalize, Outcome};
    let escaped_slashes = match (options >> 2) & 3 {
        0 => EscapedSlashes::KeepUnchanged,
        1 => EscapedSlashes::RejectRequest,
        2 => EscapedSlashes::UnescapeAndRedirect,
        _ => EscapedSlashes::UnescapeAndForward,
    };
    let opts = PathNormalization { normalize: options & 1 != 0, merge_slashes: options & 2 != 0, escaped_slashes };
    let once = match normalize(target, &opts) {
        Outcome::Reject | Outcome::Unchanged => return Ok(()),
        Outcome::Rewritten(t) | Outcome::Redirect(t) => t,
    };
    let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if target.first() == Some(&b'/') && once.first() != Some(&b'/') {
        return Err(format!("{opts:?}: {:?} became {:?}, not a path", show(target), show(&once)));
    }
    let path = once.split(|&b| b == b'?').next().unwrap_or_default();
    if opts.normalize && crate::proxy::path::has_dot_segment_parameters(path) {
        // Left by the first pass (from `%2E%2E;`), stripped by a second, as in Envoy.
        return Ok(());
    }
    match normalize(&once, &opts) {
        Outcome::Unchanged => Ok(()),
        again => Err(format!("{opts:?}: {:?} became {:?}, then {again:?}", show(target), show(&once))),
    }
}

/// The properties of `tls_inspector`'s ClientHello reading for the first
/// bytes of a connection: never a panic; a server name it reports is one
/// a TLS stack would take (lowercase, not empty, no NUL); bytes after a
/// whole ClientHello change nothing (it reads the hello, no more); and a
/// ClientHello cut short is not reported as one. `Err` says which broke.
pub fn check_client_hello(bytes: &[u8]) -> Result<(), String> {
    use crate::chain_match::tls_inspector::{parse_client_hello, Peeked};
    let whole = parse_client_hello(bytes);
    if let Peeked::Tls(hello) = &whole {
        if let Some(name) = &hello.server_name {
            if name.is_empty() || name.contains('\0') || name.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(format!("server name {name:?} reported"));
            }
        }
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(b"\x16\x03\x01\x00\x05garbage");
        let again = parse_client_hello(&longer);
        if again != whole {
            return Err(format!("{whole:?} became {again:?} with bytes after it"));
        }
        // The shortest prefix that reads as this hello (searched by halves:
        // a prefix reads as the hello from its last byte on); one byte
        // less must not be a ClientHello yet.
        let (mut lo, mut hi) = (0, bytes.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if parse_client_hello(&bytes[..mid]) == whole {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        if let Some(n) = hi.checked_sub(1) {
            if let Peeked::Tls(cut) = parse_client_hello(&bytes[..n]) {
                return Err(format!("{n} bytes of a ClientHello read as {cut:?}, the whole as {whole:?}"));
            }
        }
    }
    Ok(())
}

/// A ClientHello record as no TLS stack would write one unasked: TLS 1.2,
/// one cipher suite, these extensions (type, contents) in this order, then
/// `tail` inside the extensions block and `after` after it (lengths as
/// `u16`: keep them small).
pub fn crafted_client_hello(exts: &[(u16, Vec<u8>)], tail: &[u8], after: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    for (t, data) in exts {
        block.extend_from_slice(&t.to_be_bytes());
        block.extend_from_slice(&(data.len() as u16).to_be_bytes());
        block.extend_from_slice(data);
    }
    block.extend_from_slice(tail);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(block.len() as u16).to_be_bytes());
    body.extend_from_slice(&block);
    body.extend_from_slice(after);
    let mut msg = vec![1, 0];
    msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
    msg.extend_from_slice(&body);
    let mut rec = vec![22, 3, 1];
    rec.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    rec.extend_from_slice(&msg);
    rec
}

/// The `server_name` extension with these (name type, name) entries; a
/// client sends one, `(0, host)`.
pub fn server_name_extension(entries: &[(u8, &[u8])]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for (t, n) in entries {
        list.push(*t);
        list.extend_from_slice(&(n.len() as u16).to_be_bytes());
        list.extend_from_slice(n);
    }
    let mut data = (list.len() as u16).to_be_bytes().to_vec();
    data.extend_from_slice(&list);
    (0, data)
}

/// The ALPN extension offering these protocol names.
pub fn alpn_extension(names: &[&[u8]]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for n in names {
        list.push(n.len() as u8);
        list.extend_from_slice(n);
    }
    let mut data = (list.len() as u16).to_be_bytes().to_vec();
    data.extend_from_slice(&list);
    (16, data)
}
