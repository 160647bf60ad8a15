//! Subject alternative name matching (Envoy's
//! `match_typed_subject_alt_names`): the matchers a validation context
//! holds and the check of a peer certificate's names against them, for
//! client certificates on listeners and server certificates upstream.

use pingora_core::tls::x509::X509Ref;

/// The kinds of subject alternative name Envoy matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanType {
    Dns,
    Uri,
    Email,
    IpAddress,
}

/// A string matcher, as Envoy's `StringMatcher` (patterns with
/// `ignore_case` stored lowercase).
#[derive(Debug, Clone)]
pub enum SanPattern {
    Exact(String, bool),
    Prefix(String, bool),
    Suffix(String, bool),
    Contains(String, bool),
    Regex(regex::Regex),
}

impl PartialEq for SanPattern {
    fn eq(&self, other: &Self) -> bool {
        use SanPattern::*;
        match (self, other) {
            (Exact(a, x), Exact(b, y))
            | (Prefix(a, x), Prefix(b, y))
            | (Suffix(a, x), Suffix(b, y))
            | (Contains(a, x), Contains(b, y)) => a == b && x == y,
            (Regex(a), Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl SanPattern {
    fn matches(&self, value: &str) -> bool {
        let fold = |ic: bool| if ic { value.to_ascii_lowercase() } else { value.to_string() };
        match self {
            SanPattern::Exact(p, ic) => fold(*ic) == *p,
            SanPattern::Prefix(p, ic) => fold(*ic).starts_with(p.as_str()),
            SanPattern::Suffix(p, ic) => fold(*ic).ends_with(p.as_str()),
            SanPattern::Contains(p, ic) => fold(*ic).contains(p.as_str()),
            SanPattern::Regex(re) => re.is_match(value),
        }
    }
}

/// One of `match_typed_subject_alt_names`.
#[derive(Debug, Clone, PartialEq)]
pub struct SanMatcher {
    pub san_type: SanType,
    pub pattern: SanPattern,
}

/// Whether `cert` carries a subject alternative name one of `matchers`
/// accepts (Envoy: any matcher, any name of its type).
pub(super) fn san_matches(cert: &X509Ref, matchers: &[SanMatcher]) -> bool {
    let Some(names) = cert.subject_alt_names() else { return false };
    names.iter().any(|name| {
        let typed = [
            (SanType::Dns, name.dnsname().map(str::to_string)),
            (SanType::Uri, name.uri().map(str::to_string)),
            (SanType::Email, name.email().map(str::to_string)),
            (SanType::IpAddress, name.ipaddress().and_then(ip_text)),
        ];
        typed.iter().any(|(kind, value)| {
            value.as_deref().is_some_and(|v| {
                matchers.iter().any(|m| {
                    m.san_type == *kind
                        && match (&m.pattern, kind) {
                            // Envoy matches an exact DNS name as a host name:
                            // case-insensitive, and a wildcard name
                            // (`*.example.com`) covers one label.
                            (SanPattern::Exact(name, _), SanType::Dns) => dns_name_matches(name, v),
                            (pattern, _) => pattern.matches(v),
                        }
                })
            })
        })
    })
}

/// Whether the certificate's DNS name `san` (perhaps `*.rest`) covers `name`.
pub(super) fn dns_name_matches(name: &str, san: &str) -> bool {
    if name.eq_ignore_ascii_case(san) {
        return true;
    }
    let Some(rest) = san.strip_prefix('*') else { return false };
    rest.starts_with('.')
        && name.len() > rest.len()
        && name.is_char_boundary(name.len() - rest.len())
        && name[name.len() - rest.len()..].eq_ignore_ascii_case(rest)
        && !name[..name.len() - rest.len()].contains('.')
}

/// An IP SAN as text (4 or 16 bytes).
fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(|b| std::net::Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes).ok().map(|b| std::net::Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}
