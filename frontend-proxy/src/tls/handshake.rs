//! What a completed handshake leaves for the HTTP engines in the
//! connection's TLS digest (Pingora's `SslDigest` extension, which both
//! engines read): the filter chain serving it, and the client certificate's
//! `x-forwarded-client-cert` element when that chain's connection manager
//! writes one (`APPEND_FORWARD`, `SANITIZE_SET`). The element is built
//! once per connection, as Envoy caches it per connection too.

use super::name;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::SslDigest;
use pingora_core::tls::hash::MessageDigest;
use pingora_core::tls::ssl::SslRef;
use pingora_core::tls::x509::X509Ref;
use std::any::Any;
use std::fmt::Write;
use std::sync::Arc;

/// `set_current_client_cert_details`: what of the client's certificate
/// goes into its element beside `By` and `Hash`, which are always there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCertDetails {
    pub subject: bool,
    pub cert: bool,
    pub chain: bool,
    pub dns: bool,
    pub uri: bool,
}

/// Recorded on a connection by [`RecordHandshake`].
#[derive(Debug)]
struct Handshook {
    chain: usize,
    client_cert: Option<Box<str>>,
}

/// The filter chain recorded in a connection's TLS digest.
pub fn chosen_digest(digest: &SslDigest) -> Option<usize> {
    digest.extension.get::<Handshook>().map(|h| h.chain)
}

/// The client certificate's `x-forwarded-client-cert` element recorded in
/// a connection's TLS digest (only for chains that write one).
pub fn client_cert_element(digest: &SslDigest) -> Option<&str> {
    digest.extension.get::<Handshook>().and_then(|h| h.client_cert.as_deref())
}

/// Pingora's handshake hook: records the filter chain serving the
/// connection (its entry in the proxy's listener list) and, when `details`
/// is set, the client certificate's element.
pub struct RecordHandshake {
    details: Option<ClientCertDetails>,
    chain: usize,
}

impl RecordHandshake {
    pub fn new(details: Option<ClientCertDetails>, chain: usize) -> Self {
        Self { details, chain }
    }

    /// Whether the chain needs the element built.
    pub fn builds_elements(&self) -> bool {
        self.details.is_some()
    }
}

#[async_trait::async_trait]
impl TlsAccept for RecordHandshake {
    async fn handshake_complete_callback(&self, ssl: &SslRef) -> Option<Arc<dyn Any + Send + Sync>> {
        let client_cert = self.details.and_then(|d| element(ssl, d)).map(Into::into);
        Some(Arc::new(Handshook { chain: self.chain, client_cert }))
    }
}

/// The element Envoy writes for the client's certificate: `By` (each URI
/// SAN of the certificate we served), `Hash` (SHA-256 of the client's
/// certificate, hex), then what `details` asks for, in Envoy's order
/// (Cert, Chain, Subject, URI, DNS). `None` without a client certificate.
fn element(ssl: &SslRef, details: ClientCertDetails) -> Option<String> {
    let peer = ssl.peer_certificate()?;
    let mut out = String::new();
    for by in ssl.certificate().map(uris).unwrap_or_default() {
        push(&mut out, "By", &value(&by));
    }
    let hash = peer.digest(MessageDigest::sha256()).ok()?;
    let mut hex = String::with_capacity(hash.len() * 2);
    for b in hash.iter() {
        let _ = write!(hex, "{b:02x}");
    }
    push(&mut out, "Hash", &hex);
    if details.cert {
        if let Ok(pem) = peer.to_pem() {
            push(&mut out, "Cert", &format!("\"{}\"", url_encoded_pem(&pem)));
        }
    }
    if details.chain {
        // What the client sent, its own certificate first. On a server,
        // OpenSSL's peer chain leaves the client's certificate out; after a
        // resumption from a ticket (which keeps only the client's own
        // certificate) the chain is that certificate alone.
        let mut pems = peer.to_pem().unwrap_or_default();
        for cert in ssl.peer_cert_chain().into_iter().flatten() {
            if cert.to_der().ok() != peer.to_der().ok() {
                pems.extend(cert.to_pem().unwrap_or_default());
            }
        }
        push(&mut out, "Chain", &format!("\"{}\"", url_encoded_pem(&pems)));
    }
    if details.subject {
        // RFC 2253 text escapes `"` and `\`, so quoting keeps it one value.
        let subject = name::rfc2253(peer.subject_name()).unwrap_or_default();
        push(&mut out, "Subject", &format!("\"{subject}\""));
    }
    if details.uri {
        // One per URI SAN; present (empty) without one, as in Envoy.
        let uris = uris(&peer);
        if uris.is_empty() {
            push(&mut out, "URI", "");
        }
        for uri in uris {
            push(&mut out, "URI", &value(&uri));
        }
    }
    if details.dns {
        for dns in sans(&peer).into_iter().filter_map(|n| n.dnsname().map(str::to_string)) {
            push(&mut out, "DNS", &value(&dns));
        }
    }
    Some(out)
}

fn push(out: &mut String, key: &str, value: &str) {
    if !out.is_empty() {
        out.push(';');
    }
    out.push_str(key);
    out.push('=');
    out.push_str(value);
}

fn sans(cert: &X509Ref) -> Vec<pingora_core::tls::x509::GeneralName> {
    cert.subject_alt_names().map(|s| s.into_iter().collect()).unwrap_or_default()
}

fn uris(cert: &X509Ref) -> Vec<String> {
    sans(cert).iter().filter_map(|n| n.uri().map(str::to_string)).collect()
}

/// PEM as Envoy puts it in the header: newlines, spaces and the base64
/// characters that mean something in a URL percent-encoded.
fn url_encoded_pem(pem: &[u8]) -> String {
    let mut out = String::with_capacity(pem.len() + pem.len() / 16);
    for &b in pem {
        match b {
            b'\n' => out.push_str("%0A"),
            b' ' => out.push_str("%20"),
            b'+' => out.push_str("%2B"),
            b'/' => out.push_str("%2F"),
            b'=' => out.push_str("%3D"),
            b'\r' => out.push_str("%0D"),
            _ => out.push(char::from(b)),
        }
    }
    out
}

/// A SAN as a header value: as written when it is plain (what Envoy
/// writes); quoted, with `"` and `\` escaped, when it holds a separator
/// of the header's syntax (`,` `;` `=` `"`) or a space, so that a name a
/// CA signed cannot add elements or keys of its own; bytes a header value
/// cannot carry percent-encoded (and then `%` too, so that an encoded byte
/// and the same text written out stay apart).
fn value(raw: &str) -> String {
    let unusual = |c: char| c.is_ascii_control() || !c.is_ascii();
    let encode = raw.contains(unusual);
    let mut text = String::with_capacity(raw.len());
    for c in raw.chars() {
        if unusual(c) || (encode && c == '%') {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(text, "%{b:02X}");
            }
        } else {
            text.push(c);
        }
    }
    if !text.contains([',', ';', '=', '"', '\\', ' ']) {
        return text;
    }
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_name_is_written_as_is_and_one_with_separators_is_quoted() {
        assert_eq!(value("spiffe://example.org/ns/a/sa/b"), "spiffe://example.org/ns/a/sa/b");
        assert_eq!(value("a.example.com"), "a.example.com");
        assert_eq!(value("x;By=evil"), "\"x;By=evil\"");
        assert_eq!(value("x,Hash=00"), "\"x,Hash=00\"");
        assert_eq!(value("a\"b\\c d"), "\"a\\\"b\\\\c d\"");
        assert_eq!(value("a\r\nb"), "a%0D%0Ab");
        assert_eq!(value("a%0Ab\n"), "a%250Ab%0A");
        assert_eq!(value("a%0Ab"), "a%0Ab");
        assert_eq!(value("é"), "%C3%A9");
    }

    #[test]
    fn pem_is_url_encoded_as_envoy_writes_it() {
        let pem = b"-----BEGIN CERTIFICATE-----\nMIIB+a/b=\n-----END CERTIFICATE-----\n";
        assert_eq!(
            url_encoded_pem(pem),
            "-----BEGIN%20CERTIFICATE-----%0AMIIB%2Ba%2Fb%3D%0A-----END%20CERTIFICATE-----%0A"
        );
    }
}
