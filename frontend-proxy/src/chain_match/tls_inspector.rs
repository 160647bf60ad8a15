//! Envoy's `tls_inspector` listener filter: learns, before anything is
//! read, whether the client speaks TLS and which server name (SNI) and
//! protocols (ALPN) its ClientHello names ([`inspect`]). The bytes are
//! peeked, never consumed, so whatever serves the chosen filter chain — a
//! TLS handshake, an HTTP engine, a TCP proxy forwarding the TLS bytes
//! untouched — reads the connection from its first byte.
//!
//! The ClientHello reading ([`parse_client_hello`]) is a plain function
//! over bytes, fuzzed (`fuzzing::check_client_hello`).

use std::time::Duration;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// What a ClientHello tells before the handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The `host_name` of the server_name extension, lowercase.
    pub server_name: Option<String>,
    /// The `application_layer_protocol_negotiation` offer, in order.
    pub alpn: Vec<String>,
}

/// What the first bytes of a connection are.
#[derive(Debug, PartialEq, Eq)]
pub enum Peeked {
    Tls(ClientHello),
    /// Not a TLS ClientHello (plain text, or malformed).
    NotTls,
    /// A ClientHello, not all there yet.
    Incomplete,
    /// A ClientHello longer than [`MAX_CLIENT_HELLO`].
    TooLarge,
}

/// The largest ClientHello inspected (Envoy's `max_client_hello_size`
/// default); a longer one closes the connection, as in Envoy.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;
/// Record headers around the ClientHello's fragments: a ClientHello of
/// the largest size in records of at least 512 bytes.
const MAX_PEEK: usize = MAX_CLIENT_HELLO + 5 * (MAX_CLIENT_HELLO / 512 + 1) + 4;

/// Reads the ClientHello at the start of `buf`, which may be split across
/// TLS records (and is, whatever the records, across TCP segments: the
/// caller peeks again with more).
pub fn parse_client_hello(buf: &[u8]) -> Peeked {
    let mut message = Vec::new();
    let mut rest = buf;
    loop {
        // Header: content type 22 (handshake), version 3.x, length.
        let Some(header) = rest.get(..5) else {
            return if rest.is_empty() || rest[0] == 22 { Peeked::Incomplete } else { Peeked::NotTls };
        };
        if header[0] != 22 || header[1] != 3 {
            return Peeked::NotTls;
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > 16384 {
            return Peeked::NotTls;
        }
        let Some(fragment) = rest.get(5..5 + len) else {
            message.extend_from_slice(&rest[5..]);
            return match hello_length(&message) {
                Err(p) => p,
                Ok(_) => Peeked::Incomplete,
            };
        };
        message.extend_from_slice(fragment);
        rest = &rest[5 + len..];
        match hello_length(&message) {
            Err(p) => return p,
            Ok(Some(total)) if message.len() >= total => return hello(&message[..total]),
            Ok(_) => {}
        }
    }
}

/// The ClientHello message's whole length (header included) once its
/// header is there; `Err` when it is not a ClientHello or too long.
fn hello_length(message: &[u8]) -> Result<Option<usize>, Peeked> {
    match message.first() {
        None => return Ok(None),
        Some(1) => {}
        Some(_) => return Err(Peeked::NotTls),
    }
    let Some(len) = message.get(1..4) else { return Ok(None) };
    let total = 4 + ((usize::from(len[0]) << 16) | (usize::from(len[1]) << 8) | usize::from(len[2]));
    if total > MAX_CLIENT_HELLO {
        return Err(Peeked::TooLarge);
    }
    Ok(Some(total))
}

/// The server name and ALPN offer of a complete ClientHello message.
///
/// As strict as BoringSSL (whose parse Envoy's inspector uses) where
/// leniency would let this chain selection and a TLS-passthrough backend
/// read different names from the same bytes: the message and its
/// extensions block must be consumed exactly, an extension type may occur
/// once, and `server_name` must hold exactly one non-empty `host_name`
/// without NUL. Anything else is not TLS (`raw_buffer`), as in Envoy, whose
/// inspector fails the parse.
fn hello(message: &[u8]) -> Peeked {
    // `message` is exactly the handshake message (`hello_length`).
    let Some(body) = message.get(4..) else { return Peeked::NotTls };
    let Ok((after, ch)) = tls_parser::parse_tls_handshake_client_hello(body) else {
        return Peeked::NotTls;
    };
    if !after.is_empty() {
        return Peeked::NotTls;
    }
    let mut out = ClientHello::default();
    let mut seen = std::collections::HashSet::new();
    // Extensions one by one, so that one tls-parser reads more strictly
    // than OpenSSL does cannot hide the two that matter.
    let mut ext = ch.ext.unwrap_or_default();
    while !ext.is_empty() {
        let [t0, t1, l0, l1, rest @ ..] = ext else { return Peeked::NotTls };
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let Some((data, next)) = rest.split_at_checked(len) else { return Peeked::NotTls };
        ext = next;
        let kind = u16::from_be_bytes([*t0, *t1]);
        if !seen.insert(kind) {
            return Peeked::NotTls;
        }
        match kind {
            0 => match server_name(data) {
                Some(name) => out.server_name = Some(name),
                None => return Peeked::NotTls,
            },
            16 => match alpn(data) {
                Some(protocols) => out.alpn = protocols,
                None => return Peeked::NotTls,
            },
            _ => {}
        }
    }
    Peeked::Tls(out)
}

/// A 16-bit length-prefixed vector that is exactly all of `data`.
fn whole_u16_vector(data: &[u8]) -> Option<&[u8]> {
    let [l0, l1, rest @ ..] = data else { return None };
    (usize::from(u16::from_be_bytes([*l0, *l1])) == rest.len()).then_some(rest)
}

/// The `server_name` extension's one host name, lowercased: BoringSSL
/// refuses a list of other than one entry, another name type, an empty
/// name, one longer than 255 bytes or one with NUL. Names that are not
/// UTF-8 are refused too (no configured name could equal them, and a
/// lossy reading could).
fn server_name(data: &[u8]) -> Option<String> {
    let [0, l0, l1, name @ ..] = whole_u16_vector(data)? else { return None };
    if usize::from(u16::from_be_bytes([*l0, *l1])) != name.len()
        || name.is_empty()
        || name.len() > 255
        || name.contains(&0)
    {
        return None;
    }
    std::str::from_utf8(name).ok().map(str::to_ascii_lowercase)
}

/// The ALPN extension's protocols: a non-empty list of non-empty names
/// that fills the extension exactly (RFC 7301, as BoringSSL reads it).
fn alpn(data: &[u8]) -> Option<Vec<String>> {
    let mut list = whole_u16_vector(data)?;
    if list.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    while let [len, rest @ ..] = list {
        let (name, next) = rest.split_at_checked(usize::from(*len))?;
        if name.is_empty() {
            return None;
        }
        out.push(String::from_utf8_lossy(name).into_owned());
        list = next;
    }
    Some(out)
}

/// How `tls_inspector` ended on a connection.
#[derive(Debug)]
pub enum Inspected {
    /// TLS, with what the ClientHello says.
    Tls(ClientHello),
    /// Not TLS (`raw_buffer`).
    Plain,
    /// The client closed, or sent a ClientHello too large: close it.
    Closed,
    /// Nothing conclusive within the timeout.
    TimedOut,
}

/// Peeks at the connection's first bytes until they show a ClientHello,
/// or something else, within `timeout`. Nothing is consumed.
pub async fn inspect(tcp: &TcpStream, timeout: Option<Duration>) -> Inspected {
    let peeking = peek_hello(tcp);
    match timeout {
        Some(t) => tokio::time::timeout(t, peeking).await.unwrap_or(Inspected::TimedOut),
        None => peeking.await,
    }
}

async fn peek_hello(tcp: &TcpStream) -> Inspected {
    use futures::FutureExt;
    // Allocated once the client has sent something: a connection that
    // never does holds no buffer.
    let mut buf = Vec::new();
    let mut seen = 0;
    loop {
        let Ok(ready) = tcp.ready(Interest::READABLE).await else { return Inspected::Closed };
        if buf.is_empty() {
            buf = vec![0u8; MAX_PEEK];
        }
        // recv(MSG_PEEK) on the socket itself (tokio's `peek`, ready now,
        // so it completes on its first poll). A peek that finds nothing new
        // clears the readiness, so the next wait is for more bytes (the
        // socket stays readable while the first ones are there).
        let peeked = tcp.try_io(Interest::READABLE, || match tcp.peek(&mut buf).now_or_never() {
            None => Err(std::io::ErrorKind::WouldBlock.into()),
            Some(Ok(n)) if n == seen && n > 0 && !ready.is_read_closed() => Err(std::io::ErrorKind::WouldBlock.into()),
            Some(r) => r,
        });
        let n = match peeked {
            Ok(0) => return Inspected::Closed,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return Inspected::Closed,
        };
        let closed = n == seen;
        seen = n;
        match parse_client_hello(&buf[..n]) {
            Peeked::Tls(hello) => return Inspected::Tls(hello),
            Peeked::NotTls => return Inspected::Plain,
            Peeked::TooLarge => return Inspected::Closed,
            // The client sent part of a ClientHello and hung up.
            Peeked::Incomplete if closed || n == buf.len() => return Inspected::Closed,
            Peeked::Incomplete => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // Short names: the table of ambiguous hellos below is read row by row.
    use crate::fuzzing::{
        alpn_extension as alpn_ext, crafted_client_hello as crafted, server_name_extension as sni_ext,
    };

    /// A ClientHello as OpenSSL's client writes it.
    fn client_hello(sni: Option<&str>, alpn: &[&str]) -> Vec<u8> {
        use boring::ssl::{SslConnector, SslMethod};
        let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
        if !alpn.is_empty() {
            let mut wire = Vec::new();
            for p in alpn {
                wire.push(p.len() as u8);
                wire.extend_from_slice(p.as_bytes());
            }
            b.set_alpn_protos(&wire).unwrap();
        }
        let mut cfg = b.build().configure().unwrap();
        cfg.set_use_server_name_indication(sni.is_some());
        cfg.set_verify_hostname(false);
        let (a, mut other) = std::os::unix::net::UnixStream::pair().unwrap();
        other.set_nonblocking(true).unwrap();
        a.set_nonblocking(true).unwrap();
        let _ = cfg.connect(sni.unwrap_or("ignored"), a);
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut other, &mut out);
        out
    }

    #[test]
    fn reads_sni_and_alpn_also_in_pieces() {
        let hello = client_hello(Some("API.Example.com"), &["h2", "http/1.1"]);
        let want =
            ClientHello { server_name: Some("api.example.com".into()), alpn: vec!["h2".into(), "http/1.1".into()] };
        assert_eq!(parse_client_hello(&hello), Peeked::Tls(want));
        for cut in 0..hello.len() {
            assert_eq!(parse_client_hello(&hello[..cut]), Peeked::Incomplete, "cut at {cut}");
        }
        let none = client_hello(None, &[]);
        assert_eq!(parse_client_hello(&none), Peeked::Tls(ClientHello::default()));
    }

    #[test]
    fn a_hello_split_across_records_is_read() {
        let hello = client_hello(Some("a.example.com"), &["h2"]);
        let message = &hello[5..];
        let mut split = Vec::new();
        for part in message.chunks(7) {
            split.extend_from_slice(&[22, 3, 1, 0, part.len() as u8]);
            split.extend_from_slice(part);
        }
        assert!(
            matches!(parse_client_hello(&split), Peeked::Tls(h) if h.server_name.as_deref() == Some("a.example.com"))
        );
    }

    #[test]
    fn plain_text_malformed_and_oversized_input() {
        assert_eq!(parse_client_hello(b"GET / HTTP/1.1\r\n"), Peeked::NotTls);
        assert_eq!(parse_client_hello(&[22, 3, 1, 0, 4, 2, 0, 0, 0]), Peeked::NotTls);
        assert_eq!(parse_client_hello(&[22, 3, 1, 0, 4, 1, 0xff, 0, 0]), Peeked::TooLarge);
        // A ClientHello with garbage inside.
        assert_eq!(parse_client_hello(&[22, 3, 1, 0, 8, 1, 0, 0, 4, 3, 3, 0, 0]), Peeked::NotTls);
        let hello = client_hello(Some("a.example.com"), &["h2"]);
        for i in 5..hello.len() {
            for v in [0u8, 0xff, 0x80] {
                let mut bad = hello.clone();
                bad[i] = v;
                let _ = parse_client_hello(&bad);
            }
        }
    }

    #[test]
    fn a_crafted_hello_that_boringssl_accepts_is_read() {
        let ok = crafted(&[sni_ext(&[(0, b"Admin.Example.com")]), alpn_ext(&[b"h2"]), (43, vec![2, 3, 4])], &[], &[]);
        let want = ClientHello { server_name: Some("admin.example.com".into()), alpn: vec!["h2".into()] };
        assert_eq!(parse_client_hello(&ok), Peeked::Tls(want));
        assert_eq!(parse_client_hello(&crafted(&[], &[], &[])), Peeked::Tls(ClientHello::default()));
    }

    /// Each of these would let the chain be chosen by another name than
    /// the one a backend behind a TLS-passthrough chain reads: not TLS.
    #[test]
    fn ambiguous_hellos_are_not_tls() {
        let admin: &[u8] = b"admin.example.com";
        let public: &[u8] = b"public.example.com";
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("duplicate server_name", crafted(&[sni_ext(&[(0, admin)]), sni_ext(&[(0, public)])], &[], &[])),
            ("duplicate other extension", crafted(&[(43, vec![2, 3, 4]), (43, vec![2, 3, 4])], &[], &[])),
            ("duplicate alpn", crafted(&[alpn_ext(&[b"h2"]), alpn_ext(&[b"http/1.1"])], &[], &[])),
            ("two host names", crafted(&[sni_ext(&[(0, admin), (0, public)])], &[], &[])),
            ("another name type first", crafted(&[sni_ext(&[(1, admin), (0, public)])], &[], &[])),
            ("only another name type", crafted(&[sni_ext(&[(1, admin)])], &[], &[])),
            ("empty list", crafted(&[sni_ext(&[])], &[], &[])),
            ("empty extension", crafted(&[(0, vec![])], &[], &[])),
            ("empty name", crafted(&[sni_ext(&[(0, b"")])], &[], &[])),
            ("NUL in name", crafted(&[sni_ext(&[(0, b"public.example.com\0admin")])], &[], &[])),
            ("long name", crafted(&[sni_ext(&[(0, &[b'a'; 256])])], &[], &[])),
            ("stray byte after sni list", crafted(&[(0, [sni_ext(&[(0, public)]).1, vec![0]].concat())], &[], &[])),
            ("1 stray byte in extensions", crafted(&[sni_ext(&[(0, public)])], &[0], &[])),
            ("3 stray bytes in extensions", crafted(&[sni_ext(&[(0, public)])], &[0, 0, 0], &[])),
            ("bytes after extensions", crafted(&[sni_ext(&[(0, public)])], &[], &[0, 0])),
            ("empty alpn list", crafted(&[alpn_ext(&[])], &[], &[])),
            ("empty alpn name", crafted(&[alpn_ext(&[b"h2", b""])], &[], &[])),
        ];
        for (what, hello) in cases {
            assert_eq!(parse_client_hello(&hello), Peeked::NotTls, "{what}");
        }
    }
}
