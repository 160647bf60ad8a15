//! The HTTP/1.1 wire code as plain functions over byte slices, for the
//! fuzz targets (`frontend-proxy/fuzz/`) and the differential properties
//! (`tests/wire_fuzz.rs`): the request-head parser, the reading of an
//! upstream's response head (interim responses skipped, framing, status
//! checks), and the chunked-body scanner.
//!
//! Not an API for anything else. These signatures are the contract the
//! engine keeps whatever it does inside: small verdicts, no engine types.

use crate::proxy::native::{self, wire};
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
    /// A request the engine serves itself: the head's length, the body's,
    /// and whether the client asked to close after it.
    Served { head_len: usize, body_len: u64, close: bool },
    /// Valid HTTP another engine serves (upgrades, HTTP/1.0, chunked bodies, ...).
    HandOff,
    /// Refused with this status (400, 431).
    Refused { status: u16 },
}

/// Reads the request head at the start of `bytes`.
pub fn parse_request(bytes: &[u8]) -> RequestVerdict {
    let mut buf = BytesMut::from(bytes);
    match wire::parse_request(&mut buf) {
        wire::ParsedRequest::Partial => RequestVerdict::Partial,
        wire::ParsedRequest::Complete(r) => {
            RequestVerdict::Served { head_len: bytes.len() - buf.len(), body_len: r.body_len, close: r.close }
        }
        wire::ParsedRequest::HandOff => RequestVerdict::HandOff,
        wire::ParsedRequest::TooManyHeaders => RequestVerdict::Refused { status: 431 },
        wire::ParsedRequest::Malformed => RequestVerdict::Refused { status: 400 },
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
    // The engine's read loop (`read_response_head`), over a slice.
    let mut start = 0;
    loop {
        let buf = &bytes[start..];
        let Some(end) = native::head_end(buf, 0) else {
            return match buf.len() > native::MAX_RESPONSE_HEAD {
                true => ResponseVerdict::BadGateway,
                false => ResponseVerdict::Partial,
            };
        };
        if native::is_interim(buf) {
            start += end;
            continue;
        }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedVerdict {
    /// The body goes on.
    Partial,
    /// It ends after this many bytes (of all the parts together).
    End(usize),
    /// Not a valid chunked body: the response is cut (or refused).
    Invalid,
}

/// Scans a chunked body that arrives in `parts` (one read each), as the
/// engine does while it passes the body on.
pub fn chunked_body(parts: &[&[u8]]) -> ChunkedVerdict {
    let mut scanner = wire::ChunkedScanner::default();
    let mut offset = 0;
    for part in parts {
        match scanner.scan(part) {
            Ok(Some(end)) => return ChunkedVerdict::End(offset + end),
            Ok(None) => offset += part.len(),
            Err(_) => return ChunkedVerdict::Invalid,
        }
    }
    ChunkedVerdict::Partial
}
