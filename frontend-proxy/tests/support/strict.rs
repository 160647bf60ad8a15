//! A strict HTTP/1.1 reader written for the tests: the reference the
//! proxy's wire code is checked against (the framing suite, the
//! differential fuzzing in `tests/wire_fuzz.rs` and `fuzz/`).
//!
//! Two readings of a response head:
//! - [`upstream_response`]: how a careful recipient reads what an upstream
//!   sent: `httparse`'s grammar (which, as RFC 9112 §2.2 allows, skips empty
//!   lines before the status line and takes a bare LF as a line end; and,
//!   as §5.1 allows a proxy, whitespace before a field's colon), then
//!   RFC 9112 §6 framing with every doubt an error (conflicting or invalid
//!   `Content-Length`, `chunked` twice, `Transfer-Encoding` in HTTP/1.0, a
//!   status outside 100..=599, a 101 nobody asked for).
//! - [`client_response`]: what the proxy itself may send: the RFC 9112
//!   grammar with nothing obsolete or lenient (CRLF only, no obs-fold, no
//!   empty lines before the head, one `Content-Length` at most and never
//!   beside `Transfer-Encoding`).
//!
//! The chunked decoder ([`chunked`]) follows RFC 9112 §7.1 to the letter
//! (hex digits only, extensions as token / quoted-string, CRLF only,
//! well-formed trailer fields). Pure functions over byte slices, no I/O:
//! the fuzz crate includes this file as it is.
#![allow(dead_code)]

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304, `Content-Length: 0`).
    None,
    Length(u64),
    Chunked,
    /// Until the sender closes the connection.
    UntilClose,
    /// A 101 to a request that asked to upgrade: what follows is another protocol.
    Upgraded,
}

/// Header (or trailer) fields: names as sent, values without surrounding whitespace.
pub type Fields = Vec<(String, Vec<u8>)>;

/// A parsed head: status line or request line, and the header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub status: u16,
    pub reason: Vec<u8>,
    /// Field names as sent; values with the surrounding whitespace removed.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Bytes from the start of the input to the end of the head, empty
    /// lines skipped before it included.
    pub len: usize,
}

impl Head {
    /// Every value of the fields named `name` (case-insensitive).
    pub fn all(&self, name: &str) -> Vec<&[u8]> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice()).collect()
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.all(name).into_iter().next()
    }

    pub fn has(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

/// What a request asked for that changes how its response is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Asked {
    pub head: bool,
    pub upgrade: bool,
}

/// A response read up to the end of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Interim (1xx other than 101) heads before the final one.
    pub interim: Vec<Head>,
    pub head: Head,
    pub framing: Framing,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    pub trailers: Vec<(String, Vec<u8>)>,
    /// Where the message ends in the input; `None` for a body delimited by
    /// the close (it takes everything).
    pub end: Option<usize>,
}

/// Why the input is not (yet) one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// More bytes are needed.
    Partial,
    /// Not a valid message: why.
    Invalid(String),
}

fn invalid<T>(why: impl Into<String>) -> Result<T, Verdict> {
    Err(Verdict::Invalid(why.into()))
}

// ---------------------------------------------------------------- grammar

/// RFC 9110 §5.6.2 `tchar`.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// `field-vchar` / SP / HTAB: what may stand inside a field value.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Splits a list-valued field (RFC 9110 §5.6.1) into its non-empty elements.
pub fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows).filter(|e| !e.is_empty())
}

pub fn has_token(value: &[u8], token: &str) -> bool {
    list(value).any(|e| e.eq_ignore_ascii_case(token.as_bytes()))
}

/// One CRLF-terminated line at `buf[at..]`: its content and the index after
/// the CRLF. A CR not followed by LF, or a bare LF, is an error.
fn crlf_line(buf: &[u8], at: usize) -> Result<(&[u8], usize), Verdict> {
    let rest = &buf[at..];
    for (i, &b) in rest.iter().enumerate() {
        match b {
            b'\n' => return invalid("bare LF as a line end"),
            b'\r' => {
                return match rest.get(i + 1) {
                    Some(b'\n') => Ok((&rest[..i], at + i + 2)),
                    Some(_) => invalid("CR not followed by LF"),
                    None => Err(Verdict::Partial),
                }
            }
            _ => {}
        }
    }
    Err(Verdict::Partial)
}

/// A strict `field-line` (RFC 9112 §5): `token ":" OWS value OWS`.
fn field_line(line: &[u8]) -> Result<(String, Vec<u8>), Verdict> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return invalid("obs-fold (a line starting with whitespace)");
    }
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return invalid(format!("field line without a colon: {:?}", String::from_utf8_lossy(line)));
    };
    let name = &line[..colon];
    if !is_token(name) {
        return invalid(format!("invalid field name {:?}", String::from_utf8_lossy(name)));
    }
    let value = trim_ows(&line[colon + 1..]);
    if let Some(b) = value.iter().find(|&&b| !is_field_byte(b)) {
        return invalid(format!("byte {b:#04x} in the value of {}", String::from_utf8_lossy(name)));
    }
    Ok((String::from_utf8_lossy(name).into_owned(), value.to_vec()))
}

/// Field lines up to the empty line, from `at`; the index after it.
fn field_lines(buf: &[u8], mut at: usize) -> Result<(Fields, usize), Verdict> {
    let mut fields = Vec::new();
    loop {
        let (line, next) = crlf_line(buf, at)?;
        at = next;
        if line.is_empty() {
            return Ok((fields, at));
        }
        fields.push(field_line(line)?);
        if fields.len() > 1000 {
            return invalid("more than 1000 header fields");
        }
    }
}

/// A response head in the strict grammar (what the proxy may send).
pub fn strict_response_head(buf: &[u8]) -> Result<Head, Verdict> {
    let (line, at) = crlf_line(buf, 0)?;
    let (version, status, reason) = status_line(line)?;
    let (headers, len) = field_lines(buf, at)?;
    Ok(Head { version, status, reason: reason.to_vec(), headers, len })
}

/// `HTTP-version SP 3DIGIT SP reason-phrase` (RFC 9112 §4).
fn status_line(line: &[u8]) -> Result<(u8, u16, &[u8]), Verdict> {
    let version = match line.get(..9) {
        Some(b"HTTP/1.1 ") => 1,
        Some(b"HTTP/1.0 ") => 0,
        _ => return invalid(format!("invalid status line {:?}", String::from_utf8_lossy(line))),
    };
    let code = &line[9..line.len().min(12)];
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) || line.get(12) != Some(&b' ') {
        return invalid(format!("invalid status code in {:?}", String::from_utf8_lossy(line)));
    }
    let reason = &line[13..];
    if let Some(b) = reason.iter().find(|&&b| !is_field_byte(b)) {
        return invalid(format!("byte {b:#04x} in the reason phrase"));
    }
    let status = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    Ok((version, status, reason))
}

/// A response head as `httparse` reads it: its strict settings, but for
/// whitespace between a field name and the colon, which RFC 9112 §5.1 lets
/// a proxy remove from a response (and so read the field).
pub fn httparse_response_head(buf: &[u8]) -> Result<Head, Verdict> {
    let mut slots = [httparse::EMPTY_HEADER; 256];
    let mut resp = httparse::Response::new(&mut slots);
    let parsed = httparse::ParserConfig::default()
        .allow_spaces_after_header_name_in_responses(true)
        .parse_response(&mut resp, buf);
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(Verdict::Partial),
        Err(e) => return invalid(format!("httparse: {e}")),
    };
    let headers = resp.headers.iter().map(|h| (h.name.to_string(), h.value.to_vec())).collect();
    Ok(Head {
        version: resp.version.unwrap_or(1),
        status: resp.code.unwrap_or(0),
        reason: resp.reason.unwrap_or("").as_bytes().to_vec(),
        headers,
        len,
    })
}

// ---------------------------------------------------------------- framing

/// `Content-Length` (RFC 9110 §8.6): every value, in every field, the same
/// run of digits that fits 64 bits. `Ok(None)` when there is none.
pub fn content_length(head: &Head) -> Result<Option<u64>, Verdict> {
    let mut seen = None;
    for value in head.all("content-length") {
        if value.is_empty() {
            return invalid("empty content-length");
        }
        for element in value.split(|&b| b == b',') {
            let element = trim_ows(element);
            if element.is_empty() || !element.iter().all(u8::is_ascii_digit) {
                return invalid(format!("invalid content-length {:?}", String::from_utf8_lossy(value)));
            }
            let Some(n) = std::str::from_utf8(element).ok().and_then(|s| s.parse::<u64>().ok()) else {
                return invalid("content-length does not fit 64 bits");
            };
            if seen.is_some_and(|s| s != n) {
                return invalid("conflicting content-length values");
            }
            seen = Some(n);
        }
    }
    Ok(seen)
}

/// The transfer codings of a message, in order (lowercase names, without
/// parameters); `Ok(None)` when there is no `Transfer-Encoding`.
pub fn transfer_codings(head: &Head) -> Result<Option<Vec<String>>, Verdict> {
    let fields = head.all("transfer-encoding");
    if fields.is_empty() {
        return Ok(None);
    }
    let mut codings = Vec::new();
    for value in fields {
        for element in list(value) {
            let name = trim_ows(element.split(|&b| b == b';').next().unwrap_or_default());
            if !is_token(name) {
                return invalid(format!("invalid transfer coding {:?}", String::from_utf8_lossy(element)));
            }
            codings.push(String::from_utf8_lossy(name).to_ascii_lowercase());
        }
    }
    if codings.is_empty() {
        return invalid("transfer-encoding without a coding");
    }
    if codings.iter().filter(|c| *c == "chunked").count() > 1 {
        return invalid("chunked applied more than once");
    }
    Ok(Some(codings))
}

/// How the body of a response to `asked` is delimited (RFC 9112 §6.3),
/// `Invalid` for every framing a careful intermediary must not guess at.
pub fn response_framing(head: &Head, asked: Asked) -> Result<Framing, Verdict> {
    match head.status {
        0..=99 | 600.. => return invalid(format!("status {} out of range", head.status)),
        101 if asked.upgrade => return Ok(Framing::Upgraded),
        101 => return invalid("101 to a request that did not ask to upgrade"),
        _ => {}
    }
    // The field values are checked whatever the status: a 204 with a
    // broken length says the upstream cannot be trusted with framing.
    let length = content_length(head)?;
    let codings = transfer_codings(head)?;
    if codings.is_some() && head.version == 0 {
        return invalid("transfer-encoding in an HTTP/1.0 response");
    }
    if asked.head || (100..200).contains(&head.status) || head.status == 204 || head.status == 304 {
        return Ok(Framing::None);
    }
    Ok(match (codings, length) {
        (Some(c), _) if c.last().is_some_and(|l| l == "chunked") => Framing::Chunked,
        (Some(_), _) => Framing::UntilClose,
        (None, Some(0)) => Framing::None,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::UntilClose,
    })
}

/// Trailer fields that must not reach the client (RFC 9110 §6.5.1: framing,
/// routing, connection and content-processing fields).
pub const FORBIDDEN_TRAILERS: [&str; 12] = [
    "content-length",
    "transfer-encoding",
    "trailer",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "content-encoding",
    "content-type",
    "content-range",
];

pub fn is_forbidden_trailer(name: &str) -> bool {
    FORBIDDEN_TRAILERS.iter().any(|f| name.eq_ignore_ascii_case(f))
}

// ---------------------------------------------------------------- chunked

/// A decoded chunked body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunked {
    pub body: Vec<u8>,
    pub trailers: Vec<(String, Vec<u8>)>,
    /// Bytes of the input the body takes, up to and including its last CRLF.
    pub len: usize,
}

/// Decodes the chunked body at the start of `buf` (RFC 9112 §7.1).
pub fn chunked(buf: &[u8]) -> Result<Chunked, Verdict> {
    let mut at = 0;
    let mut body = Vec::new();
    loop {
        let (line, next) = crlf_line(buf, at)?;
        let size = chunk_size_line(line)?;
        at = next;
        if size == 0 {
            let (trailers, end) = field_lines(buf, at)?;
            return Ok(Chunked { body, trailers, len: end });
        }
        let size = usize::try_from(size).or_else(|_| invalid("chunk larger than memory"))?;
        let Some(data_end) = at.checked_add(size) else { return invalid("chunk size overflows") };
        if buf.len() < data_end {
            return Err(Verdict::Partial);
        }
        body.extend_from_slice(&buf[at..data_end]);
        match buf.get(data_end..data_end + 2) {
            Some(b"\r\n") => at = data_end + 2,
            None if buf.len() < data_end + 2 && buf[data_end..].iter().all(|&b| b == b'\r') => {
                return Err(Verdict::Partial)
            }
            _ => return invalid("chunk data not followed by CRLF"),
        }
    }
}

/// `chunk-size [ chunk-ext ]`: the size.
fn chunk_size_line(line: &[u8]) -> Result<u64, Verdict> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return invalid(format!("invalid chunk size line {:?}", String::from_utf8_lossy(line)));
    }
    let mut size = 0u64;
    for &d in &line[..digits] {
        let v = (d as char).to_digit(16).unwrap_or(0) as u64;
        size = match size.checked_mul(16).and_then(|s| s.checked_add(v)) {
            Some(s) => s,
            None => return invalid("chunk size overflows 64 bits"),
        };
    }
    chunk_extensions(&line[digits..])?;
    Ok(size)
}

/// `*( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] )`.
fn chunk_extensions(mut s: &[u8]) -> Result<(), Verdict> {
    let skip_ws = |s: &mut &[u8]| {
        while let [b' ' | b'\t', rest @ ..] = *s {
            *s = rest;
        }
    };
    let token = |s: &mut &[u8]| -> bool {
        let n = s.iter().take_while(|&&b| is_tchar(b)).count();
        *s = &s[n..];
        n > 0
    };
    loop {
        skip_ws(&mut s);
        if s.is_empty() {
            return Ok(());
        }
        let [b';', rest @ ..] = s else { return invalid("invalid chunk extension") };
        s = rest;
        skip_ws(&mut s);
        if !token(&mut s) {
            return invalid("invalid chunk extension name");
        }
        let mut look = s;
        skip_ws(&mut look);
        if let [b'=', rest @ ..] = look {
            s = rest;
            skip_ws(&mut s);
            if let [b'"', rest @ ..] = s {
                s = quoted_string_rest(rest)?;
            } else if !token(&mut s) {
                return invalid("invalid chunk extension value");
            }
        }
    }
}

/// After the opening quote: the input after the closing one.
fn quoted_string_rest(mut s: &[u8]) -> Result<&[u8], Verdict> {
    loop {
        match s {
            [b'"', rest @ ..] => return Ok(rest),
            [b'\\', c, rest @ ..] if *c == b'\t' || *c == b' ' || (0x21..=0x7e).contains(c) || *c >= 0x80 => s = rest,
            [c, rest @ ..]
                if *c == b'\t'
                    || *c == b' '
                    || *c == 0x21
                    || (0x23..=0x5b).contains(c)
                    || (0x5d..=0x7e).contains(c)
                    || *c >= 0x80 =>
            {
                s = rest
            }
            _ => return invalid("invalid quoted-string in a chunk extension"),
        }
    }
}

// ---------------------------------------------------------------- messages

/// Reads the body that follows a head at `buf[at..]`.
fn body(buf: &[u8], at: usize, framing: Framing) -> Result<(Vec<u8>, Fields, Option<usize>), Verdict> {
    match framing {
        Framing::None => Ok((Vec::new(), Vec::new(), Some(at))),
        Framing::Length(n) => {
            let n = usize::try_from(n).or_else(|_| invalid("body larger than memory"))?;
            match at.checked_add(n) {
                Some(end) if end <= buf.len() => Ok((buf[at..end].to_vec(), Vec::new(), Some(end))),
                _ => Err(Verdict::Partial),
            }
        }
        Framing::Chunked => {
            let c = chunked(&buf[at..])?;
            Ok((c.body, c.trailers, Some(at + c.len)))
        }
        Framing::UntilClose => Ok((buf[at..].to_vec(), Vec::new(), None)),
        // What follows a 101 is the tunnel, not this message.
        Framing::Upgraded => Ok((Vec::new(), Vec::new(), Some(at))),
    }
}

/// One response as a careful recipient reads what an upstream sent:
/// interim responses skipped, the final one's body read. With
/// `closed: false` a close-delimited body is `Partial` (more may come).
pub fn upstream_response(buf: &[u8], asked: Asked, closed: bool) -> Result<Message, Verdict> {
    response(buf, asked, closed, httparse_response_head)
}

/// One response in the strict grammar the proxy must write, with the
/// framing rules a client relies on: at most one `Content-Length`, never
/// beside `Transfer-Encoding`, trailers without framing fields.
pub fn client_response(buf: &[u8], asked: Asked, closed: bool) -> Result<Message, Verdict> {
    let m = response(buf, asked, closed, strict_response_head)?;
    for head in m.interim.iter().chain([&m.head]) {
        if head.all("content-length").len() > 1 {
            return invalid("more than one content-length field");
        }
        if head.has("content-length") && head.has("transfer-encoding") {
            return invalid("content-length beside transfer-encoding");
        }
    }
    if let Some((name, _)) = m.trailers.iter().find(|(n, _)| is_forbidden_trailer(n)) {
        return invalid(format!("forbidden trailer field {name}"));
    }
    Ok(m)
}

fn response(
    buf: &[u8],
    asked: Asked,
    closed: bool,
    read_head: fn(&[u8]) -> Result<Head, Verdict>,
) -> Result<Message, Verdict> {
    let mut at = 0;
    let mut interim = Vec::new();
    loop {
        let mut head = read_head(&buf[at..])?;
        let start = at;
        at += head.len;
        head.len = at - start;
        let framing = response_framing(&head, asked)?;
        if (100..200).contains(&head.status) && head.status != 101 {
            interim.push(head);
            continue;
        }
        let (body, trailers, end) = body(buf, at, framing)?;
        if framing == Framing::UntilClose && !closed {
            return Err(Verdict::Partial);
        }
        return Ok(Message { interim, head, framing, body, trailers, end });
    }
}

/// The final response head as a careful recipient reads an upstream's
/// bytes (`httparse`'s grammar), interim responses skipped, and its body's
/// framing. Its `len` counts from the start of the input.
pub fn final_response_head(buf: &[u8], asked: Asked) -> Result<(Head, Framing), Verdict> {
    let mut at = 0;
    loop {
        let mut head = httparse_response_head(&buf[at..])?;
        at += head.len;
        head.len = at;
        let framing = response_framing(&head, asked)?;
        if !(100..200).contains(&head.status) || head.status == 101 {
            return Ok((head, framing));
        }
    }
}

/// Whether the connection cannot carry another message after this one:
/// asked to close, HTTP/1.0 without keep-alive, or framing in doubt
/// (RFC 9112 §9.3, §6.3).
pub fn closes_after(head: &Head) -> bool {
    let connection = head.all("connection");
    let says = |token| connection.iter().any(|v| has_token(v, token));
    says("close")
        || (head.version == 0 && !says("keep-alive"))
        || (head.has("content-length") && head.has("transfer-encoding"))
}

// ---------------------------------------------------------------- requests

/// A request head with its framing, as a careful server reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    pub version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    pub len: usize,
    pub framing: Framing,
}

impl RequestHead {
    pub fn all(&self, name: &str) -> Vec<&[u8]> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice()).collect()
    }
}

/// RFC 9110 §4.2.1 / RFC 3986 §3.2.2: a `Host` value: `uri-host [ ":" port ]`,
/// never empty for an `http` URI.
pub fn valid_host(v: &[u8]) -> bool {
    if v.is_empty() {
        return false;
    }
    let (host, port) = if let [b'[', ..] = v {
        match v.iter().position(|&b| b == b']') {
            Some(i) => (&v[..=i], &v[i + 1..]),
            None => return false,
        }
    } else {
        match v.iter().rposition(|&b| b == b':') {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, &v[v.len()..]),
        }
    };
    let port_ok = port.is_empty() || (port[0] == b':' && port[1..].iter().all(u8::is_ascii_digit));
    let host_ok =
        !host.is_empty() && host.iter().all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%[]:".contains(&b));
    port_ok && host_ok
}

/// A request head as a server that cannot be smuggled reads it
/// (`httparse`'s grammar, then RFC 9112 §3.2 and §6 with doubts as errors).
pub fn request(buf: &[u8]) -> Result<RequestHead, Verdict> {
    let mut slots = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(Verdict::Partial),
        Err(e) => return invalid(format!("httparse: {e}")),
    };
    let headers: Vec<(String, Vec<u8>)> = req.headers.iter().map(|h| (h.name.to_string(), h.value.to_vec())).collect();
    let version = req.version.unwrap_or(1);
    let head = Head { version, status: 0, reason: Vec::new(), headers: headers.clone(), len };
    let hosts = head.all("host");
    match (version, hosts.as_slice()) {
        (1, []) => return invalid("HTTP/1.1 request without host"),
        (_, [_, _, ..]) => return invalid("more than one host"),
        (1, [h]) if !valid_host(h) => return invalid("invalid host"),
        _ => {}
    }
    let length = content_length(&head)?;
    let codings = transfer_codings(&head)?;
    let framing = match (codings, length) {
        (Some(_), _) if version == 0 => return invalid("transfer-encoding in an HTTP/1.0 request"),
        (Some(_), Some(_)) => return invalid("content-length beside transfer-encoding"),
        (Some(c), None) if c.last().is_some_and(|l| l == "chunked") => Framing::Chunked,
        (Some(_), None) => return invalid("a request whose last transfer coding is not chunked"),
        (None, Some(0) | None) => Framing::None,
        (None, Some(n)) => Framing::Length(n),
    };
    Ok(RequestHead {
        method: req.method.unwrap_or("").to_string(),
        target: req.path.unwrap_or("").to_string(),
        version,
        headers,
        len,
        framing,
    })
}
