//! HTTP/1.1 on the wire for the native engine: request and response heads
//! ([`parse`]), the chunked coding of response bodies ([`chunked`]), and
//! heads written back out ([`write`]).

pub mod chunked;
pub mod parse;
pub mod write;

pub use chunked::{ChunkedScanner, TRAILER_END};
pub use parse::MAX_RESPONSE_HEAD;
pub use parse::{
    head_end, header_slots, parse_request, parse_response, response_head, scan_response_head, Framing, HeadScan,
    ParsedRequest, Request, RequestBody, ResponseHead,
};
pub use write::{put_header, put_millis_header, write_local_reply, write_request_head, write_status_line};
