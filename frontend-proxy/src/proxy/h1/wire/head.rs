//! What request and response heads share on the wire: room for their
//! fields, and where a head ends (RFC 9112 §2.2). A head is parsed once,
//! when its end has arrived ([`head_end`] scans only the new bytes of each
//! read), so a head trickled a byte at a time costs linear, not quadratic,
//! time.

use std::mem::MaybeUninit;

/// Headers a request or response may carry; more is 431 (Envoy's default
/// `max_headers_count` is 100).
pub const MAX_HEADERS: usize = 128;

/// Room for a head's headers. Left uninitialised: httparse writes only the
/// ones it finds (zeroing all 128 was 4 KiB of stores per parse).
pub type HeaderSlots<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

pub fn header_slots<'b>() -> HeaderSlots<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// The end of the head that starts `buf` (just past its empty line),
/// looking for it from `from` on: the caller passes how far it had looked
/// (less three bytes, as the end may straddle two reads). Empty lines in
/// front of the head (RFC 9112 §2.2) are not its end.
pub fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = leading_empty_lines(buf);
    let mut at = from.max(start);
    while let Some(i) = memchr::memchr(b'\n', buf.get(at..)?) {
        let nl = at + i;
        match buf.get(nl + 1..) {
            Some([b'\r', b'\n', ..]) => return Some(nl + 3),
            Some([b'\n', ..]) => return Some(nl + 2),
            _ => at = nl + 1,
        }
    }
    None
}

/// How many bytes of empty lines (CRLF or LF) `buf` starts with.
pub(super) fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match buf.get(i..) {
            Some([b'\r', b'\n', ..]) => i += 2,
            Some([b'\n', ..]) => i += 1,
            _ => return i,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_end_is_found_from_where_the_last_look_stopped() {
        let head = b"\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\nrest";
        for from in 0..head.len() - 6 {
            assert_eq!(head_end(head, from.min(head.len() - 7)), Some(head.len() - 4), "from {from}");
        }
        assert_eq!(head_end(b"HTTP/1.1 200 OK\n\nbody", 0), Some(17));
        assert_eq!(head_end(b"\r\n\r\n", 0), None, "empty lines alone are no head");
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
    }
}
