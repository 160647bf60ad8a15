//! Hop-by-hop fields (RFC 9110 §7.6.1): the ones a proxy never forwards,
//! and the ones a message's `Connection` header names, in either direction
//! and whichever engine carries the message.

use http::header::{HeaderName, HeaderValue, CONNECTION};
use pingora_http::RequestHeader;

/// Connection-level fields that are never forwarded. `transfer-encoding`
/// and `content-length` are the engine's to handle: bodies pass through
/// with the framing they arrived with.
const HOP_BY_HOP: [&str; 5] = ["connection", "keep-alive", "proxy-connection", "te", "upgrade"];

pub fn is_hop_by_hop(name: &[u8]) -> bool {
    // By length first: every field of every message passes here.
    match name.len() {
        2 | 7 | 10 | 16 => HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h.as_bytes())),
        _ => false,
    }
}

/// The connection options a `Connection` value carries besides the
/// fields it names.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
}

/// Fields a `Connection` header may not take away: the message's framing
/// and its target. Naming them there is ignored (removing `Content-Length`
/// would leave the body to be read as the next message).
fn is_protected(name: &[u8]) -> bool {
    [&b"content-length"[..], b"transfer-encoding", b"host"].iter().any(|p| name.eq_ignore_ascii_case(p))
}

/// Most fields a message's `Connection` headers may name: every field of
/// the message is checked against each, so a head of tokens would cost
/// their product.
const MAX_NAMED: usize = 32;

/// The fields a message's `Connection` headers name for removal (RFC 9110
/// §7.6.1), besides the hop-by-hop ones that go anyway.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConnectionNamed(Vec<Box<[u8]>>);

impl ConnectionNamed {
    /// Adds the tokens of one `Connection` value; `false` if that makes
    /// more than a message may name (the message is refused).
    pub fn add(&mut self, value: &[u8]) -> bool {
        self.add_with_options(value).is_some()
    }

    /// As [`add`](Self::add), also saying which options the value carries
    /// (one pass over it); `None` past the cap.
    pub fn add_with_options(&mut self, value: &[u8]) -> Option<Options> {
        let mut options = Options::default();
        for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"close") {
                options.close = true;
                continue;
            }
            if token.eq_ignore_ascii_case(b"keep-alive") {
                options.keep_alive = true;
                continue;
            }
            if token.eq_ignore_ascii_case(b"upgrade") {
                options.upgrade = true;
                continue;
            }
            if token.is_empty() || is_hop_by_hop(token) || is_protected(token) {
                continue;
            }
            if self.names(token) {
                continue;
            }
            if self.0.len() == MAX_NAMED {
                return None;
            }
            self.0.push(token.to_ascii_lowercase().into());
        }
        Some(options)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the field `name` is one the connection names.
    pub fn names(&self, name: &[u8]) -> bool {
        self.0.iter().any(|n| name.eq_ignore_ascii_case(n))
    }
}

/// Removes from a request the fields its `Connection` headers name, and
/// leaves only the connection options (`close`, `keep-alive`, `upgrade`)
/// in `Connection`. Runs before the proxy adds its own fields, so a client
/// cannot name them away; Pingora's codec, which refuses to forward a
/// request whose `Connection` names a field it must send, then sees none.
/// `false` if the request names more fields than it may (it is refused).
pub fn strip_connection_named(req: &mut RequestHeader) -> bool {
    let mut named = ConnectionNamed::default();
    for value in req.headers.get_all(CONNECTION) {
        if !named.add(value.as_bytes()) {
            return false;
        }
    }
    if named.is_empty() {
        return true;
    }
    let fields: Vec<HeaderName> = req.headers.keys().filter(|n| named.names(n.as_str().as_bytes())).cloned().collect();
    for name in fields {
        req.remove_header(&name);
    }
    let options: Vec<&[u8]> = req
        .headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| [&b"close"[..], b"keep-alive", b"upgrade"].iter().any(|o| t.eq_ignore_ascii_case(o)))
        .collect();
    let kept = HeaderValue::from_bytes(&options.join(&b", "[..])).ok().filter(|v| !v.is_empty());
    match kept {
        Some(value) => {
            let _ = req.insert_header(CONNECTION, value);
        }
        None => {
            req.remove_header(&CONNECTION);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_fields_go_and_connection_keeps_its_options() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("connection", "X-Forwarded-Proto, close, x-a").unwrap();
        req.append_header("x-forwarded-proto", "https").unwrap();
        req.append_header("x-a", "1").unwrap();
        req.append_header("x-b", "2").unwrap();
        req.append_header("host", "h").unwrap();
        assert!(strip_connection_named(&mut req));
        assert!(req.headers.get("x-forwarded-proto").is_none() && req.headers.get("x-a").is_none());
        assert_eq!(req.headers.get("connection").unwrap(), "close");
        assert_eq!(req.headers.get("x-b").unwrap(), "2");
        let mut host = RequestHeader::build("GET", b"/", None).unwrap();
        host.append_header("connection", "host, x-c").unwrap();
        host.append_header("host", "h").unwrap();
        assert!(strip_connection_named(&mut host));
        assert_eq!(host.headers.get("host").unwrap(), "h", "never the target");
        assert!(host.headers.get("connection").is_none());
        let mut flood = RequestHeader::build("GET", b"/", None).unwrap();
        let tokens: Vec<String> = (0..MAX_NAMED + 1).map(|i| format!("x-{i}")).collect();
        flood.append_header("connection", tokens.join(",")).unwrap();
        assert!(!strip_connection_named(&mut flood), "too many named fields");
        let mut repeated = RequestHeader::build("GET", b"/", None).unwrap();
        repeated.append_header("connection", vec!["x-a"; 1000].join(",")).unwrap();
        assert!(strip_connection_named(&mut repeated), "one field named many times is one");
        let mut named = ConnectionNamed::default();
        let options = named.add_with_options(b"Keep-Alive, x-a,close , Upgrade").unwrap();
        assert_eq!(options, Options { close: true, keep_alive: true, upgrade: true });
        assert!(named.names(b"X-A") && !named.names(b"close") && !named.names(b"upgrade"));
        for name in ["te", "TE", "upgrade", "connection", "keep-alive", "Proxy-Connection"] {
            assert!(is_hop_by_hop(name.as_bytes()), "{name}");
        }
        for name in ["t", "tee", "upgrades", "connectior", "content-length", "proxy-connectio"] {
            assert!(!is_hop_by_hop(name.as_bytes()), "{name}");
        }
    }
}
