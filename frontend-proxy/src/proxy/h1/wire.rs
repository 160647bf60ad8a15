//! HTTP/1.1 on the wire for the native engine: what heads share
//! ([`head`]), request heads ([`request`]), upstream response heads
//! ([`response`]), the chunked coding of bodies ([`chunked`]), and heads
//! written back out ([`write`]).

pub mod chunked;
pub mod head;
pub mod request;
pub mod response;
pub mod write;

pub use chunked::{ChunkedScanner, TRAILER_END};
pub use head::{head_end, header_slots};
pub use request::{parse_request, ParsedRequest, Request, RequestBody};
pub use response::{
    parse_response, response_head, scan_response_head, Framing, HeadScan, ResponseHead, MAX_RESPONSE_HEAD,
};
pub use write::{put_header, put_millis_header, write_local_reply, write_request_head, write_status_line, Http1Fields};
