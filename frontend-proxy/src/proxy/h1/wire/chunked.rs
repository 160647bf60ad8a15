//! The chunked transfer coding of response bodies (RFC 9112 §7.1), checked
//! strictly as it passes through: chunk bytes go on unchanged, anything
//! outside the grammar ends the response instead of reaching the client.
//!
//! Trailer fields are dropped, as Envoy's HTTP/1 codec does by default
//! (`enable_trailers: false`): many fields must never appear after the
//! content (framing, routing, cookies, RFC 9110 §6.5.1), and a client that
//! merges trailers into the header section would take them as the
//! upstream's headers. The empty trailer section the client gets
//! ([`TRAILER_END`]) is written by the caller once the body is over.

use crate::proxy::framing::is_tchar;
/// What the caller writes after the last chunk in place of the trailer section.
pub const TRAILER_END: &[u8] = b"\r\n";

/// Longest chunk-size line (size and extensions) accepted.
const MAX_SIZE_LINE: u32 = 4096;
/// Largest trailer section accepted (it is read and dropped).
const MAX_TRAILERS: u32 = 16 * 1024;

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The result of scanning the next bytes of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// The first `forward` bytes go to the client.
    pub forward: usize,
    /// The first `consumed` bytes belong to the body (`forward` or more:
    /// trailer fields are consumed and dropped).
    pub consumed: usize,
    /// The body ended: [`TRAILER_END`] goes out after the forwarded bytes,
    /// and bytes past `consumed` are not part of this response.
    pub done: bool,
}

/// Finds where a chunked body ends, checking it on the way.
#[derive(Debug, Default)]
pub struct ChunkedScanner {
    state: State,
    /// Chunk size being read, then the data bytes left in the chunk.
    size: u64,
    digits: u8,
    /// Bytes of the current size line, or of the trailer section.
    line: u32,
    /// Chunk data seen so far.
    data: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    /// Whitespace after the size or an extension: `;` or the line end follows.
    ExtSpace,
    /// After `;`: whitespace, then an extension name.
    ExtNameStart,
    ExtName,
    /// Whitespace after an extension name: `=`, `;` or the line end follows.
    ExtAfterName,
    /// After `=`: whitespace, then a token or a quoted string.
    ExtValueStart,
    ExtToken,
    ExtQuoted,
    ExtQuotedPair,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerLineStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `qdtext` (RFC 9110 §5.6.4).
fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5B | 0x5D..=0x7E | 0x80..=0xFF)
}

/// What a field value may hold: visible characters, obs-text, SP and HTAB.
fn is_field_char(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21..=0x7E | 0x80..=0xFF)
}

impl ChunkedScanner {
    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes of chunk data (the content, without the coding) seen so far.
    pub fn data_len(&self) -> u64 {
        self.data
    }

    /// Scans the next bytes of the body (`data` starts where the previous
    /// call's `consumed` ended).
    pub fn scan(&mut self, data: &[u8]) -> Result<Scanned, ChunkError> {
        self.scan_with(data, |_| {})
    }

    /// As [`Self::scan`], for a client that gets the content without the
    /// coding (an HTTP/2 client): the chunk data within the first
    /// `consumed` bytes, in order, is appended to `spans` (`forward` is
    /// then of no use). A span may end a chunk part-way; the next call
    /// carries on with the rest of it.
    pub fn scan_data(&mut self, data: &[u8], spans: &mut Vec<std::ops::Range<usize>>) -> Result<Scanned, ChunkError> {
        self.scan_with(data, |span| spans.push(span))
    }

    /// The scan, telling `on_data` where each run of chunk data lies (for
    /// [`Self::scan`] a closure that does nothing, compiled away).
    #[inline(always)]
    fn scan_with(
        &mut self,
        data: &[u8],
        mut on_data: impl FnMut(std::ops::Range<usize>),
    ) -> Result<Scanned, ChunkError> {
        use State::*;
        let in_trailers_at_start = self.in_trailers();
        let mut forward = if in_trailers_at_start { Some(0) } else { None };
        let mut i = 0;
        while i < data.len() {
            if self.state == Data {
                let take = self.size.min((data.len() - i) as u64);
                self.size -= take;
                self.data += take;
                on_data(i..i + take as usize);
                i += take as usize;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let b = data[i];
            i += 1;
            if self.in_size_line() {
                self.line += 1;
                if self.line > MAX_SIZE_LINE {
                    return Err(ChunkError("chunk size line too long"));
                }
            } else if self.in_trailers() {
                self.line += 1;
                if self.line > MAX_TRAILERS {
                    return Err(ChunkError("trailer section too large"));
                }
            }
            self.state = match (self.state, b) {
                (Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                    self.digits += 1;
                    if self.digits > 15 {
                        return Err(ChunkError("chunk size too large"));
                    }
                    // A hex digit: `to_digit` cannot fail here.
                    self.size = self.size * 16 + u64::from((b as char).to_digit(16).unwrap_or(0));
                    Size
                }
                (Size, _) if self.digits == 0 => return Err(ChunkError("invalid chunk size")),
                (Size | ExtSpace | ExtToken, b' ' | b'\t') => ExtSpace,
                (Size | ExtSpace | ExtName | ExtAfterName | ExtToken, b';') => ExtNameStart,
                (Size | ExtSpace | ExtName | ExtAfterName | ExtToken, b'\r') => SizeLf,
                (ExtNameStart, b) if is_space(b) => ExtNameStart,
                (ExtNameStart | ExtName, b) if is_tchar(b) => ExtName,
                (ExtName | ExtAfterName, b) if is_space(b) => ExtAfterName,
                (ExtName | ExtAfterName, b'=') => ExtValueStart,
                (ExtValueStart, b) if is_space(b) => ExtValueStart,
                (ExtValueStart, b'"') => ExtQuoted,
                (ExtValueStart | ExtToken, b) if is_tchar(b) => ExtToken,
                (ExtQuoted, b'"') => ExtSpace,
                (ExtQuoted, b'\\') => ExtQuotedPair,
                (ExtQuoted, b) if is_qdtext(b) => ExtQuoted,
                (ExtQuotedPair, b) if is_field_char(b) => ExtQuoted,
                (Size | ExtSpace | ExtNameStart | ExtName | ExtAfterName | ExtValueStart | ExtToken, _)
                | (ExtQuoted | ExtQuotedPair, _) => return Err(ChunkError("invalid chunk extension")),
                (SizeLf, b'\n') => {
                    self.line = 0;
                    if self.size == 0 {
                        // The last chunk: what follows is the trailer section.
                        forward = Some(i);
                        TrailerLineStart
                    } else {
                        Data
                    }
                }
                (SizeLf, _) => return Err(ChunkError("chunk size line not ended by CRLF")),
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => {
                    self.digits = 0;
                    self.size = 0;
                    Size
                }
                (DataCr | DataLf, _) => return Err(ChunkError("chunk data not followed by CRLF")),
                (TrailerLineStart, b'\r') => EndLf,
                (TrailerLineStart | TrailerName, b) if is_tchar(b) => TrailerName,
                (TrailerName, b':') => TrailerValue,
                (TrailerLineStart | TrailerName, _) => return Err(ChunkError("invalid trailer field")),
                (TrailerValue, b'\r') => TrailerLf,
                (TrailerValue, b) if is_field_char(b) => TrailerValue,
                (TrailerValue, _) => return Err(ChunkError("invalid trailer field value")),
                (TrailerLf, b'\n') => TrailerLineStart,
                (TrailerLf, _) => return Err(ChunkError("trailer field not ended by CRLF")),
                (EndLf, b'\n') => {
                    self.state = Done;
                    return Ok(Scanned { forward: forward.unwrap_or(0), consumed: i, done: true });
                }
                (EndLf, _) => return Err(ChunkError("chunked body not ended by CRLF")),
                (Data, _) => Data,
                (Done, _) => {
                    return Ok(Scanned { forward: forward.unwrap_or(0), consumed: i - 1, done: true });
                }
            };
        }
        Ok(Scanned { forward: forward.unwrap_or(data.len()), consumed: data.len(), done: false })
    }

    fn in_size_line(&self) -> bool {
        use State::*;
        matches!(
            self.state,
            Size | ExtSpace
                | ExtNameStart
                | ExtName
                | ExtAfterName
                | ExtValueStart
                | ExtToken
                | ExtQuoted
                | ExtQuotedPair
                | SizeLf
        )
    }

    fn in_trailers(&self) -> bool {
        use State::*;
        matches!(self.state, TrailerLineStart | TrailerName | TrailerValue | TrailerLf | EndLf | Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `body` in two parts split at every offset; returns what the
    /// client gets and the bytes left after the body, or the error.
    fn pass(body: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ChunkError> {
        let mut seen = None;
        for split in 0..=body.len() {
            let mut s = ChunkedScanner::default();
            let (mut out, mut rest) = (Vec::new(), Vec::new());
            let mut pending: Vec<u8> = Vec::new();
            let mut result = Ok(());
            for part in [&body[..split], &body[split..]] {
                pending.extend_from_slice(part);
                if s.is_done() {
                    rest.extend_from_slice(&pending);
                    pending.clear();
                    continue;
                }
                match s.scan(&pending) {
                    Ok(r) => {
                        out.extend_from_slice(&pending[..r.forward]);
                        if r.done {
                            out.extend_from_slice(TRAILER_END);
                            rest.extend_from_slice(&pending[r.consumed..]);
                            pending.clear();
                        } else {
                            pending.drain(..r.consumed);
                        }
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            let this = result.map(|()| (out, rest));
            match &seen {
                None => seen = Some(this),
                Some(first) => assert_eq!(first, &this, "split at {split} differs"),
            }
        }
        seen.unwrap_or(Err(ChunkError("empty")))
    }

    #[test]
    fn chunks_pass_unchanged_and_the_end_is_found_across_reads() {
        let body = b"5;ext=1;q=\"a b\\\"\"\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\n\r\nNEXT";
        let (out, rest) = pass(body).unwrap();
        assert_eq!(out, &body[..body.len() - 4]);
        assert_eq!(rest, b"NEXT");
    }

    #[test]
    fn trailer_fields_are_dropped() {
        let (out, rest) = pass(b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\nSet-Cookie: a=b\r\n\r\n").unwrap();
        assert_eq!(out, b"3\r\nabc\r\n0\r\n\r\n");
        assert!(rest.is_empty());
        let (out, _) = pass(b"0;last\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!(out, b"0;last\r\n\r\n");
    }

    #[test]
    fn anything_outside_the_grammar_is_refused() {
        let bad: &[&[u8]] = &[
            b"zz\r\n",
            b"\r\n",
            b"1\r\nab",
            b"0\r\n\n",
            b"0\n\r\n",
            b"1\nx\r\n0\r\n\r\n",
            b"1;\0\r\nx\r\n",
            b"1;a=\"\0\"\r\nx\r\n",
            b"1;a b\r\nx\r\n",
            b"1 2\r\nx\r\n",
            b"0\r\nX: a\nY: b\r\n\r\n",
            b"0\r\n X: folded\r\n\r\n",
            b"0\r\nX : a\r\n\r\n",
            b"0\r\nX: a\0b\r\n\r\n",
            b"0\r\nX: a\r\r\n\r\n",
            b"1000000000000000\r\n",
            b"-1\r\n",
            b"0x5\r\n",
        ];
        for body in bad {
            assert!(pass(body).is_err(), "accepted {:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn extensions_whitespace_and_hex_case_are_accepted() {
        for body in [&b"A ; name = value \r\n0123456789\r\n0\r\n\r\n"[..], b"a;n=\"\\\\\"\r\n0123456789\r\n00\r\n\r\n"]
        {
            let (out, _) = pass(body).unwrap();
            assert_eq!(out, body);
        }
    }

    /// Scans `body` in two parts split at every offset, as an HTTP/2
    /// client's pass does; returns the content and the bytes after the body.
    fn content(body: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ChunkError> {
        let mut seen = None;
        for split in 0..=body.len() {
            let mut s = ChunkedScanner::default();
            let (mut out, mut pending) = (Vec::new(), Vec::new());
            let mut result = Err(ChunkError("body did not end"));
            for part in [&body[..split], &body[split..]] {
                pending.extend_from_slice(part);
                if s.is_done() {
                    continue;
                }
                let mut spans = Vec::new();
                match s.scan_data(&pending, &mut spans) {
                    Ok(r) => {
                        assert!(spans.iter().all(|sp| sp.end <= r.consumed));
                        for sp in spans {
                            out.extend_from_slice(&pending[sp]);
                        }
                        pending.drain(..r.consumed);
                        if r.done {
                            result = Ok(());
                        }
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            let this = result.map(|()| (out, pending));
            match &seen {
                None => seen = Some(this),
                Some(first) => assert_eq!(first, &this, "split at {split} differs"),
            }
        }
        seen.unwrap_or(Err(ChunkError("empty")))
    }

    #[test]
    fn data_spans_give_the_content_without_the_coding() {
        let body = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (out, rest) = content(body).unwrap();
        assert_eq!(out, b"hello0123456789abcdef");
        assert_eq!(rest, b"NEXT");
        let (out, rest) = content(b"0\r\n\r\n").unwrap();
        assert!(out.is_empty() && rest.is_empty());
    }

    #[test]
    fn data_spans_stop_at_a_grammar_error_or_an_unfinished_body() {
        for bad in [&b"3\r\nabcX\r\n0\r\n\r\n"[..], b"zz\r\n", b"3\r\nabc\r\n0\r\n"] {
            assert!(content(bad).is_err(), "accepted {:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_size_line_without_end_is_bounded() {
        let mut s = ChunkedScanner::default();
        let mut line = b"1;a=".to_vec();
        line.extend(std::iter::repeat_n(b'x', 5000));
        assert_eq!(s.scan(&line), Err(ChunkError("chunk size line too long")));
    }
}
