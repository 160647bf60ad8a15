//! `request_headers_to_add/remove` and `response_headers_to_add/remove` at
//! route configuration, virtual host and route level.
//!
//! Values are Envoy header formatters: literal text with `%%` escapes and a
//! few `%OPERATOR%` substitutions. Validation rejects operators we do not
//! implement instead of sending them through literally.

use crate::address::Address;
use http::header::{HeaderName, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};
use std::net::SocketAddr;

/// What `append_action` (or the older `append`) says to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderAppend {
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
    OverwriteIfExists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValueToken {
    Literal(String),
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    DownstreamLocalAddress,
    DownstreamLocalAddressWithoutPort,
    Protocol,
    Hostname,
    RequestHeader(HeaderName),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderValueFormat(pub Vec<HeaderValueToken>);

impl HeaderValueFormat {
    /// Parses Envoy's header value syntax; returns the unsupported operator on error.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        let mut literal = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('%') {
            literal.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(r) = rest.strip_prefix('%') {
                literal.push('%');
                rest = r;
                continue;
            }
            let end = rest.find('%').ok_or_else(|| format!("unterminated `%` in {s:?}"))?;
            let op = &rest[..end];
            rest = &rest[end + 1..];
            let token = match op {
                "DOWNSTREAM_REMOTE_ADDRESS" => HeaderValueToken::DownstreamRemoteAddress,
                "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => HeaderValueToken::DownstreamRemoteAddressWithoutPort,
                "DOWNSTREAM_LOCAL_ADDRESS" => HeaderValueToken::DownstreamLocalAddress,
                "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => HeaderValueToken::DownstreamLocalAddressWithoutPort,
                "PROTOCOL" => HeaderValueToken::Protocol,
                "HOSTNAME" => HeaderValueToken::Hostname,
                _ => match op.strip_prefix("REQ(").and_then(|r| r.strip_suffix(')')) {
                    Some(name) => HeaderValueToken::RequestHeader(
                        HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                            .map_err(|_| format!("invalid header name {name:?} in %REQ()%"))?,
                    ),
                    None => return Err(format!("unsupported header value operator %{op}%")),
                },
            };
            if !literal.is_empty() {
                tokens.push(HeaderValueToken::Literal(std::mem::take(&mut literal)));
            }
            tokens.push(token);
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            tokens.push(HeaderValueToken::Literal(literal));
        }
        Ok(Self(tokens))
    }

    /// A value without operators, known at load time.
    pub fn as_literal(&self) -> Option<&str> {
        match self.0.as_slice() {
            [] => Some(""),
            [HeaderValueToken::Literal(s)] => Some(s),
            _ => None,
        }
    }

    fn render(&self, info: &RequestInfo<'_>) -> String {
        let mut out = String::new();
        for t in &self.0 {
            match t {
                HeaderValueToken::Literal(s) => out.push_str(s),
                HeaderValueToken::DownstreamRemoteAddress => match (info.client_addr, info.local_addr) {
                    (Some(a), _) => out.push_str(&a.to_string()),
                    // A pipe's client is named after the listener's socket, as in Envoy.
                    (None, Some(Address::Pipe(p))) => out.push_str(&p.path),
                    _ => {}
                },
                HeaderValueToken::DownstreamRemoteAddressWithoutPort => match (info.client_addr, info.local_addr) {
                    (Some(a), _) => out.push_str(&a.ip().to_string()),
                    (None, Some(Address::Pipe(p))) => out.push_str(&p.path),
                    _ => {}
                },
                HeaderValueToken::DownstreamLocalAddress => {
                    if let Some(a) = info.local_addr {
                        out.push_str(&a.to_string())
                    }
                }
                HeaderValueToken::DownstreamLocalAddressWithoutPort => match info.local_addr {
                    Some(Address::Ip(a)) => out.push_str(&a.ip().to_string()),
                    Some(Address::Pipe(p)) => out.push_str(&p.path),
                    None => {}
                },
                HeaderValueToken::Protocol => out.push_str(info.protocol),
                HeaderValueToken::Hostname => out.push_str(info.hostname),
                HeaderValueToken::RequestHeader(name) => {
                    let value = info.request.and_then(|r| match r.headers.get(name) {
                        // `host` is an HTTP/2 request's `:authority`: one
                        // field in Envoy's header map.
                        None if *name == http::header::HOST => r.uri.authority().map(|a| a.as_str()),
                        v => v.map(|v| v.to_str().unwrap_or_default()),
                    });
                    out.push_str(value.unwrap_or_default())
                }
            }
        }
        out
    }
}

/// Facts about the request that header formatters may use.
pub struct RequestInfo<'a> {
    pub client_addr: Option<SocketAddr>,
    pub local_addr: Option<&'a Address>,
    pub protocol: &'a str,
    pub hostname: &'a str,
    pub request: Option<&'a RequestHeader>,
}

#[derive(Debug, Clone)]
pub struct HeaderToAdd {
    pub name: HeaderName,
    pub value: HeaderValueFormat,
    pub append: HeaderAppend,
    pub keep_empty_value: bool,
}

/// Header edits at one level of the route configuration.
#[derive(Debug, Clone, Default)]
pub struct HeaderMutations {
    pub request_add: Vec<HeaderToAdd>,
    pub request_remove: Vec<HeaderName>,
    pub response_add: Vec<HeaderToAdd>,
    pub response_remove: Vec<HeaderName>,
}

impl HeaderMutations {
    pub fn is_empty(&self) -> bool {
        self.request_add.is_empty()
            && self.request_remove.is_empty()
            && self.response_add.is_empty()
            && self.response_remove.is_empty()
    }

    /// No request header is added or removed.
    pub fn request_is_empty(&self) -> bool {
        self.request_add.is_empty() && self.request_remove.is_empty()
    }

    /// No response header is added or removed.
    pub fn response_is_empty(&self) -> bool {
        self.response_add.is_empty() && self.response_remove.is_empty()
    }

    pub fn apply_request(&self, req: &mut RequestHeader, info: &RequestInfo<'_>) {
        for name in &self.request_remove {
            req.remove_header(name);
        }
        for add in &self.request_add {
            apply(req, add, info);
        }
    }

    pub fn apply_response(&self, resp: &mut ResponseHeader, info: &RequestInfo<'_>) {
        for name in &self.response_remove {
            resp.remove_header(name);
        }
        for add in &self.response_add {
            apply(resp, add, info);
        }
    }
}

/// The header API shared by Pingora's request and response headers (which
/// keep a case map beside the `HeaderMap`, so edits go through their methods).
trait EditHeaders {
    fn has(&self, name: &HeaderName) -> bool;
    fn insert(&mut self, name: HeaderName, value: HeaderValue);
    fn append(&mut self, name: HeaderName, value: HeaderValue);
}

macro_rules! edit_headers {
    ($t:ty) => {
        impl EditHeaders for $t {
            fn has(&self, name: &HeaderName) -> bool {
                self.headers.contains_key(name)
            }
            // Name and value are already valid, so these cannot fail.
            fn insert(&mut self, name: HeaderName, value: HeaderValue) {
                let _ = self.insert_header(name, value);
            }
            fn append(&mut self, name: HeaderName, value: HeaderValue) {
                let _ = self.append_header(name, value);
            }
        }
    };
}

edit_headers!(RequestHeader);
edit_headers!(ResponseHeader);

fn apply(headers: &mut impl EditHeaders, add: &HeaderToAdd, info: &RequestInfo<'_>) {
    let value = add.value.render(info);
    if value.is_empty() && !add.keep_empty_value {
        return;
    }
    let Ok(value) = HeaderValue::from_str(&value) else {
        return; // a substituted value that is not a valid header value is dropped, as Envoy does
    };
    let present = headers.has(&add.name);
    match add.append {
        HeaderAppend::AppendIfExistsOrAdd => headers.append(add.name.clone(), value),
        HeaderAppend::AddIfAbsent if !present => headers.insert(add.name.clone(), value),
        HeaderAppend::OverwriteIfExistsOrAdd => headers.insert(add.name.clone(), value),
        HeaderAppend::OverwriteIfExists if present => headers.insert(add.name.clone(), value),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_literals_escapes_and_operators() {
        let f = HeaderValueFormat::parse("100%% from %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%").unwrap();
        assert_eq!(
            f.0,
            vec![HeaderValueToken::Literal("100% from ".into()), HeaderValueToken::DownstreamRemoteAddressWithoutPort]
        );
        assert_eq!(HeaderValueFormat::parse("plain").unwrap().as_literal(), Some("plain"));
        assert!(HeaderValueFormat::parse("%START_TIME%").unwrap_err().contains("START_TIME"));
        assert!(HeaderValueFormat::parse("50%").is_err());
    }

    #[test]
    fn host_is_the_authority_of_a_request_without_a_host_field() {
        let f = HeaderValueFormat::parse("%REQ(Host)%|%REQ(x-a)%").unwrap();
        let render = |req: &RequestHeader| {
            f.render(&RequestInfo {
                client_addr: None,
                local_addr: None,
                protocol: "HTTP/2",
                hostname: "proxy",
                request: Some(req),
            })
        };
        let h2: RequestHeader = http::Request::builder()
            .uri("https://films.local:8443/a")
            .header("x-a", "1")
            .body(())
            .unwrap()
            .into_parts()
            .0
            .into();
        assert_eq!(render(&h2), "films.local:8443|1");
        let mut h1 = RequestHeader::build("GET", b"/a", None).unwrap();
        assert_eq!(render(&h1), "|");
        h1.insert_header("host", "films.local").unwrap();
        assert_eq!(render(&h1), "films.local|");
    }
}
