//! Hop-by-hop fields (RFC 9110 §7.6.1): the ones a proxy never forwards,
//! and the ones a message's `Connection` header names, in either direction
//! and whichever engine carries the message.

/// Connection-level fields that are never forwarded. `transfer-encoding`
/// and `content-length` are the engine's to handle: bodies pass through
/// with the framing they arrived with.
const HOP_BY_HOP: [&str; 5] = ["connection", "keep-alive", "proxy-connection", "te", "upgrade"];

pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

/// Fields a `Connection` header may not take away: the message's framing
/// and its target. Naming them there is ignored (removing `Content-Length`
/// would leave the body to be read as the next message).
fn is_protected(name: &[u8]) -> bool {
    [&b"content-length"[..], b"transfer-encoding", b"host"].iter().any(|p| name.eq_ignore_ascii_case(p))
}

/// The fields a message's `Connection` headers name for removal (RFC 9110
/// §7.6.1), besides the hop-by-hop ones that go anyway.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConnectionNamed(Vec<Box<[u8]>>);

impl ConnectionNamed {
    /// Adds the tokens of one `Connection` value.
    pub fn add(&mut self, value: &[u8]) {
        for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if token.is_empty() || is_hop_by_hop(token) || is_protected(token) || token.eq_ignore_ascii_case(b"close") {
                continue;
            }
            self.0.push(token.to_ascii_lowercase().into());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the field `name` is one the connection names.
    pub fn names(&self, name: &[u8]) -> bool {
        self.0.iter().any(|n| name.eq_ignore_ascii_case(n))
    }
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    value.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}
