//! A conformance case: what it sends, what its backend answers, and what
//! must hold for the client, the backend and the upstream connection.

use crate::checks::{cut_or_502, nothing, protocol_error, rejected, status};
use crate::support::pingora_engine;
use crate::support::raw::{ok, Answer, ConnLog, ReadError, Response, Seen};
use crate::support::strict::Asked;
use std::sync::Arc;

/// What a case's client saw: the responses read (as many as the case
/// expects, stopping at the first that could not be read), and what came
/// after them.
pub(crate) struct Outcome {
    pub(crate) pingora: bool,
    pub(crate) responses: Vec<Response>,
    pub(crate) error: Option<ReadError>,
    /// Bytes that arrived after the responses (a second, smuggled response).
    pub(crate) extra: Vec<u8>,
    pub(crate) closed: bool,
}

impl Outcome {
    pub(crate) fn first(&self) -> Result<&Response, String> {
        self.responses.first().ok_or_else(|| match &self.error {
            Some(e) => e.to_string(),
            None => "no response".to_string(),
        })
    }

    /// The first response is a reply the proxy makes when it refuses
    /// something (4xx, 5xx), or there is none.
    pub(crate) fn refused(&self) -> bool {
        self.responses.first().is_none_or(|r| r.status >= 400)
    }
}

pub(crate) type ClientCheck = Arc<dyn Fn(&Outcome) -> Result<(), String> + Send + Sync>;
pub(crate) type BackendCheck = Arc<dyn Fn(&Outcome, &[ConnLog]) -> Result<(), String> + Send + Sync>;
pub(crate) type Script = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

/// What happens to the client connection after the case's responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Close {
    Must,
    MustNot,
    Either,
}

/// Whether the upstream connection that carried the case may carry the
/// follow-up requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reuse {
    Any,
    /// It must be closed: the follow-ups come on another connection.
    Never,
    /// A clean exchange: the follow-up on the same client connection takes
    /// the pooled connection (checked on the native engine, whose pool is
    /// per worker and filled before the next request is read; Pingora's
    /// returns a connection to its pool on its own schedule).
    Expected,
}

pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) request: Vec<u8>,
    pub(crate) asked: Asked,
    pub(crate) responses: usize,
    pub(crate) answer: Script,
    /// The body the backend's answers to the follow-up requests carry, by tag.
    pub(crate) next_body: fn(&str) -> String,
    pub(crate) client: ClientCheck,
    pub(crate) close: Close,
    pub(crate) backend: BackendCheck,
    pub(crate) reuse: Reuse,
    /// A 101 tunnel: bytes after the response belong to it; no follow-up on it.
    pub(crate) tunnel: bool,
}

/// Marks what must never reach a client head or a backend as a request.
pub(crate) const EVIL_HEAD: &str = "HTTP/1.1 200 OK\r\nSet-Cookie: EVIL=1\r\nContent-Length: 0\r\n\r\n";
pub(crate) const EVIL_RESPONSE: &str = "HTTP/1.1 200 OK\r\nSet-Cookie: EVIL=1\r\nContent-Length: 4\r\n\r\nEVIL";

impl Case {
    /// A case sending `request`, where `{p}` stands for the case's path
    /// prefix (`/<name>`) and `{v}` for its virtual host (`<name>.example`).
    /// By default the backend echoes the request body with a 200, the client
    /// must get exactly that, and the connection stays open.
    pub(crate) fn new(name: &'static str, request: impl AsRef<[u8]>) -> Self {
        let request = String::from_utf8_lossy(request.as_ref()).into_owned();
        let request = request.replace("{p}", &format!("/{name}")).replace("{v}", &vhost(name));
        Self {
            name,
            request: request.into_bytes(),
            asked: Asked::default(),
            responses: 1,
            answer: Arc::new(|seen: &Seen| Answer::send(ok(&String::from_utf8_lossy(&seen.body)))),
            next_body: |tag| tag.to_string(),
            client: Arc::new(status(200, "")),
            close: Close::MustNot,
            backend: Arc::new(|_, _| Ok(())),
            reuse: Reuse::Any,
            tunnel: false,
        }
    }

    /// `GET /<name>` answered with `answer`.
    pub(crate) fn get(name: &'static str, answer: impl Into<Vec<u8>>) -> Self {
        Self::new(name, "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n").answer(answer)
    }

    pub(crate) fn answer(self, bytes: impl Into<Vec<u8>>) -> Self {
        self.answer_with(Answer::send(bytes))
    }

    pub(crate) fn answer_with(mut self, answer: Answer) -> Self {
        self.answer = Arc::new(move |_| answer.clone());
        self
    }

    pub(crate) fn script(mut self, f: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Self {
        self.answer = Arc::new(f);
        self
    }

    pub(crate) fn expect(mut self, f: impl Fn(&Outcome) -> Result<(), String> + Send + Sync + 'static) -> Self {
        self.client = Arc::new(f);
        self
    }

    pub(crate) fn close(mut self, close: Close) -> Self {
        self.close = close;
        self
    }

    pub(crate) fn backend(
        mut self,
        f: impl Fn(&Outcome, &[ConnLog]) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.backend = Arc::new(f);
        self
    }

    pub(crate) fn reuse(mut self, reuse: Reuse) -> Self {
        self.reuse = reuse;
        self
    }

    pub(crate) fn head(mut self) -> Self {
        self.asked.head = true;
        self
    }

    pub(crate) fn responses(mut self, n: usize) -> Self {
        self.responses = n;
        self
    }

    pub(crate) fn next_body(mut self, f: fn(&str) -> String) -> Self {
        self.next_body = f;
        self
    }

    /// Refused with `code` before anything reaches the backend; the
    /// connection closes.
    pub(crate) fn refused(self, code: u16) -> Self {
        self.expect(rejected(&[code])).close(Close::Must).backend(nothing())
    }

    /// An upstream response the proxy must not forward: Envoy's 502 for an
    /// upstream protocol error, and the upstream connection is not reused.
    pub(crate) fn bad_gateway(self) -> Self {
        self.expect(protocol_error()).reuse(Reuse::Never).close(Close::Either)
    }

    /// A body error: 502 if it is found before the head goes out, else the
    /// response is cut and the connection closed; never reused upstream.
    pub(crate) fn cut(self) -> Self {
        self.expect(cut_or_502()).reuse(Reuse::Never).close(Close::Either)
    }

    /// What Pingora's engine does instead, where its codec decides before
    /// any hook of ours runs: `difference` names the entry in
    /// docs/http1.md, "Engine differences". The override must still be
    /// safe: nothing smuggled, nothing of one message in another.
    pub(crate) fn on_pingora(self, difference: &'static str, adjust: impl FnOnce(Self) -> Self) -> Self {
        debug_assert!(!difference.is_empty());
        if pingora_engine() {
            adjust(self)
        } else {
            self
        }
    }
}

pub(crate) fn vhost(name: &str) -> String {
    format!("{}.example", name.replace('_', "-"))
}

pub(crate) fn show(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(&b[..b.len().min(400)]))
}
