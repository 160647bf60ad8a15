//! The HTTP/1.1 framing conformance suite (RFC 9112 §§2-7, RFC 9110 §7.6
//! and §6.6.1): exact bytes from a client and from a scripted upstream,
//! through the real proxy, over real sockets.
//!
//! Each case checks three things: (1) the bytes the client got, read with
//! the strict reader of `support/strict.rs` (one response, nothing after
//! it); (2) the bytes the backend got (never a request smuggled inside
//! another, never a hop-by-hop field); (3) that the next request on the
//! same client connection (when it stays open) and the next one over the
//! pooled upstream connection get their own clean answer, and, where the
//! case says the upstream connection must not be reused, that they came on
//! another connection.
//!
//! The cases are tables (`request_cases`, `response_cases`, ...). One proxy
//! (one worker, so the upstream pool is deterministic) serves a table;
//! each case has a backend of its own, routed by the path prefix `/<case>`
//! or the virtual host `<case>.example`. A table's test lists every case
//! that failed, and why. `FRAMING_CASE=<substring>` runs only the cases
//! whose name contains it.
//!
//! The cases say what the behaviour SHOULD be (issue 21). They run against
//! the native engine, and against Pingora's with
//! `FRONTEND_PROXY_HTTP1_ENGINE=pingora` (CI runs both); where the engines
//! legitimately differ (the README's list: 1xx forwarding, pipelining,
//! the head-timeout reply), the case says so next to its expectation.
//! Addresses: 127.0.12.x.

mod support;

use futures::StreamExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use support::raw::{ok, Answer, ConnLog, RawClient, ReadError, Response, ScriptedBackend, Seen};
use support::strict::{self, Asked, Framing};
use support::{free_addr, ip, pingora_engine, yaml, ProxyProcess};

// ---------------------------------------------------------------- cases

/// What a case's client saw: the responses read (as many as the case
/// expects, stopping at the first that could not be read), and what came
/// after them.
struct Outcome {
    pingora: bool,
    responses: Vec<Response>,
    error: Option<ReadError>,
    /// Bytes that arrived after the responses (a second, smuggled response).
    extra: Vec<u8>,
    closed: bool,
}

impl Outcome {
    fn first(&self) -> Result<&Response, String> {
        self.responses.first().ok_or_else(|| match &self.error {
            Some(e) => e.to_string(),
            None => "no response".to_string(),
        })
    }

    /// The first response is a reply the proxy makes when it refuses
    /// something (4xx, 5xx), or there is none.
    fn refused(&self) -> bool {
        self.responses.first().is_none_or(|r| r.status >= 400)
    }
}

type ClientCheck = Arc<dyn Fn(&Outcome) -> Result<(), String> + Send + Sync>;
type BackendCheck = Arc<dyn Fn(&Outcome, &[ConnLog]) -> Result<(), String> + Send + Sync>;
type Script = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

/// What happens to the client connection after the case's responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Close {
    Must,
    MustNot,
    Either,
}

/// Whether the upstream connection that carried the case may carry the
/// follow-up requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reuse {
    Any,
    /// It must be closed: the follow-ups come on another connection.
    Never,
    /// A clean exchange: the follow-up on the same client connection takes
    /// the pooled connection (checked on the native engine, whose pool is
    /// per worker and filled before the next request is read; Pingora's
    /// returns a connection to its pool on its own schedule).
    Expected,
}

struct Case {
    name: &'static str,
    request: Vec<u8>,
    asked: Asked,
    responses: usize,
    answer: Script,
    /// The body the backend's answers to the follow-up requests carry, by tag.
    next_body: fn(&str) -> String,
    client: ClientCheck,
    close: Close,
    backend: BackendCheck,
    reuse: Reuse,
    /// A 101 tunnel: bytes after the response belong to it; no follow-up on it.
    tunnel: bool,
}

/// Marks what must never reach a client head or a backend as a request.
const EVIL_HEAD: &str = "HTTP/1.1 200 OK\r\nSet-Cookie: EVIL=1\r\nContent-Length: 0\r\n\r\n";
const EVIL_RESPONSE: &str = "HTTP/1.1 200 OK\r\nSet-Cookie: EVIL=1\r\nContent-Length: 4\r\n\r\nEVIL";

impl Case {
    /// A case sending `request`, where `{p}` stands for the case's path
    /// prefix (`/<name>`) and `{v}` for its virtual host (`<name>.example`).
    /// By default the backend echoes the request body with a 200, the client
    /// must get exactly that, and the connection stays open.
    fn new(name: &'static str, request: impl AsRef<[u8]>) -> Self {
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
    fn get(name: &'static str, answer: impl Into<Vec<u8>>) -> Self {
        Self::new(name, "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n").answer(answer)
    }

    fn answer(self, bytes: impl Into<Vec<u8>>) -> Self {
        self.answer_with(Answer::send(bytes))
    }

    fn answer_with(mut self, answer: Answer) -> Self {
        self.answer = Arc::new(move |_| answer.clone());
        self
    }

    fn script(mut self, f: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Self {
        self.answer = Arc::new(f);
        self
    }

    fn expect(mut self, f: impl Fn(&Outcome) -> Result<(), String> + Send + Sync + 'static) -> Self {
        self.client = Arc::new(f);
        self
    }

    fn close(mut self, close: Close) -> Self {
        self.close = close;
        self
    }

    fn backend(mut self, f: impl Fn(&Outcome, &[ConnLog]) -> Result<(), String> + Send + Sync + 'static) -> Self {
        self.backend = Arc::new(f);
        self
    }

    fn reuse(mut self, reuse: Reuse) -> Self {
        self.reuse = reuse;
        self
    }

    fn head(mut self) -> Self {
        self.asked.head = true;
        self
    }

    fn responses(mut self, n: usize) -> Self {
        self.responses = n;
        self
    }

    fn next_body(mut self, f: fn(&str) -> String) -> Self {
        self.next_body = f;
        self
    }

    /// Refused with `code` before anything reaches the backend; the
    /// connection closes.
    fn refused(self, code: u16) -> Self {
        self.expect(rejected(&[code])).close(Close::Must).backend(nothing())
    }

    /// An upstream response the proxy must not forward: Envoy's 502 for an
    /// upstream protocol error, and the upstream connection is not reused.
    fn bad_gateway(self) -> Self {
        self.expect(protocol_error()).reuse(Reuse::Never).close(Close::Either)
    }

    /// A body error: 502 if it is found before the head goes out, else the
    /// response is cut and the connection closed; never reused upstream.
    fn cut(self) -> Self {
        self.expect(cut_or_502()).reuse(Reuse::Never).close(Close::Either)
    }
}

fn vhost(name: &str) -> String {
    format!("{}.example", name.replace('_', "-"))
}

fn show(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(&b[..b.len().min(400)]))
}

// ---------------------------------------------------------------- client checks

/// A complete response with this status and body.
fn status(code: u16, body: &'static str) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| {
        let r = o.first()?;
        if r.status != code || r.body != body.as_bytes() {
            return Err(format!("got {} {}, want {code} {body:?}", r.status, show(&r.body)));
        }
        Ok(())
    }
}

fn status_only(code: u16) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| match o.first()? {
        r if r.status == code => Ok(()),
        r => Err(format!("got {} {}, want {code}", r.status, show(&r.raw))),
    }
}

/// Envoy's reply to an upstream that broke the protocol before its
/// response head was through (`retried and the latest` may come before
/// `reset reason` when the request was retried).
fn protocol_error() -> impl Fn(&Outcome) -> Result<(), String> {
    |o| match o.first()? {
        r if r.status == 502 && r.body.ends_with(b"reset reason: protocol error") => Ok(()),
        r => Err(format!("got {} {}, want 502 ... reset reason: protocol error", r.status, show(&r.raw))),
    }
}

/// One of `codes`, then the connection closes.
fn rejected(codes: &[u16]) -> impl Fn(&Outcome) -> Result<(), String> {
    let codes = codes.to_vec();
    move |o| {
        let r = o.first()?;
        if !codes.contains(&r.status) {
            return Err(format!("got {} {}, want one of {codes:?}", r.status, show(&r.raw)));
        }
        if !o.closed {
            return Err(format!("{} but the connection stayed open", r.status));
        }
        Ok(())
    }
}

/// 502, or a response cut short by the close (never a complete wrong one,
/// never a second status line inside the first).
fn cut_or_502() -> impl Fn(&Outcome) -> Result<(), String> {
    |o| match (o.responses.first(), &o.error) {
        (Some(r), _) if r.status == 502 => protocol_error()(o),
        (Some(r), _) => Err(format!("forwarded a complete {} response: {}", r.status, show(&r.raw))),
        (None, Some(ReadError::Closed)) => Ok(()),
        (None, Some(ReadError::Truncated(b))) => match b.windows(7).filter(|w| w == b"HTTP/1.").count() {
            0 | 1 => Ok(()),
            _ => Err(format!("a second status line inside a cut response: {}", show(b))),
        },
        (None, Some(e)) => Err(e.to_string()),
        (None, None) => Err("no response".to_string()),
    }
}

/// Either check passes.
fn either(
    a: impl Fn(&Outcome) -> Result<(), String> + Send + Sync + 'static,
    b: impl Fn(&Outcome) -> Result<(), String> + Send + Sync + 'static,
) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| a(o).or_else(|ea| b(o).map_err(|eb| format!("{ea}; nor: {eb}")))
}

/// Both checks pass.
fn both(
    a: impl Fn(&Outcome) -> Result<(), String> + Send + Sync + 'static,
    b: impl Fn(&Outcome) -> Result<(), String> + Send + Sync + 'static,
) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| a(o).and_then(|()| b(o))
}

/// The first response has no field named `name`.
fn lacks(name: &'static str) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| match o.first()?.header(name) {
        None => Ok(()),
        Some(v) => Err(format!("the client got {name}: {v}")),
    }
}

/// Statuses of the interim responses the client got before the first final one.
fn interim(want: &'static [u16]) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| match &o.first()?.interim {
        got if got == want => Ok(()),
        got => Err(format!("interim responses {got:?}, want {want:?}")),
    }
}

/// RFC 9110 §5.6.7: `Sun, 06 Nov 1994 08:49:37 GMT`.
fn is_imf_fixdate(v: &str) -> bool {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let b = v.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    v.is_ascii()
        && b.len() == 29
        && DAYS.contains(&&v[0..3])
        && &v[3..5] == ", "
        && digits(5..7)
        && b[7] == b' '
        && MONTHS.contains(&&v[8..11])
        && b[11] == b' '
        && digits(12..16)
        && b[16] == b' '
        && digits(17..19)
        && b[19] == b':'
        && digits(20..22)
        && b[22] == b':'
        && digits(23..25)
        && &v[25..] == " GMT"
}

/// Exactly one `Date`, an IMF-fixdate within two minutes of now.
fn dated_now() -> impl Fn(&Outcome) -> Result<(), String> {
    |o| {
        let r = o.first()?;
        let dates = r.headers_named("date");
        let [date] = dates.as_slice() else { return Err(format!("{} date fields: {dates:?}", dates.len())) };
        if !is_imf_fixdate(date) {
            return Err(format!("date {date:?} is not an IMF-fixdate"));
        }
        let at = httpdate::parse_http_date(date).map_err(|e| format!("date {date:?}: {e}"))?;
        let skew = match SystemTime::now().duration_since(at) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        if skew > Duration::from_secs(120) {
            return Err(format!("date {date:?} is {skew:?} from now"));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- backend checks

/// Not a byte reached the backend.
fn nothing() -> impl Fn(&Outcome, &[ConnLog]) -> Result<(), String> {
    |_, log| match log.iter().map(|c| c.bytes.len()).sum::<usize>() {
        0 => Ok(()),
        _ => Err(format!("the backend got {}", show(&log.iter().flat_map(|c| c.bytes.clone()).collect::<Vec<_>>()))),
    }
}

/// No complete request reached the backend (the start of one may have,
/// before the proxy found the error and closed the connection).
fn no_request() -> impl Fn(&Outcome, &[ConnLog]) -> Result<(), String> {
    |_, log| {
        let seen: Vec<String> =
            log.iter().flat_map(|c| &c.requests).map(|s| format!("{} {}", s.method, s.path)).collect();
        match seen.as_slice() {
            [] => Ok(()),
            _ => Err(format!("the backend got complete requests {seen:?}")),
        }
    }
}

/// Exactly one request reached the backend, and `check` holds for it.
fn one(
    check: impl Fn(&Seen) -> Result<(), String> + Send + Sync,
) -> impl Fn(&Outcome, &[ConnLog]) -> Result<(), String> {
    move |_, log| {
        let seen: Vec<&Seen> = log.iter().flat_map(|c| &c.requests).collect();
        match seen.as_slice() {
            [s] => check(s),
            _ => Err(format!(
                "the backend got {} requests ({})",
                seen.len(),
                show(&log.iter().flat_map(|c| c.bytes.clone()).collect::<Vec<_>>())
            )),
        }
    }
}

/// When the client was refused, no complete request; else exactly one, for which `check` holds.
fn refused_or_one(
    check: impl Fn(&Seen) -> Result<(), String> + Send + Sync,
) -> impl Fn(&Outcome, &[ConnLog]) -> Result<(), String> {
    let one = one(check);
    move |o, log| if o.refused() { no_request()(o, log) } else { one(o, log) }
}

/// The request body as the backend decoded it.
fn body(want: &'static str) -> impl Fn(&Seen) -> Result<(), String> {
    move |s| match s.body == want.as_bytes() {
        true => Ok(()),
        false => Err(format!("the backend got body {}, want {want:?}", show(&s.body))),
    }
}

/// The backend got the request without any of these fields.
fn without(names: &'static [&'static str]) -> impl Fn(&Seen) -> Result<(), String> {
    move |s| match names.iter().find(|n| s.header(n).is_some()) {
        None => Ok(()),
        Some(n) => Err(format!("the backend got {n}: {:?}", s.header(n).unwrap_or_default())),
    }
}

/// One `Content-Length` field, with this value (a repeated one collapsed).
fn single_length(want: &'static str) -> impl Fn(&Seen) -> Result<(), String> {
    move |s| match s.headers_named("content-length").as_slice() {
        [v] if *v == want => Ok(()),
        got => Err(format!("the backend got content-length {got:?}, want one {want:?}")),
    }
}

/// Trailers the backend got include no framing or routing field.
fn no_forbidden_trailer(s: &Seen) -> Result<(), String> {
    match s.trailers.iter().find(|(n, _)| strict::is_forbidden_trailer(n)) {
        None => Ok(()),
        Some((n, v)) => Err(format!("the backend got the trailer {n}: {}", show(v))),
    }
}

// ---------------------------------------------------------------- harness

/// Requests of the case itself: not the follow-ups.
fn case_requests(log: &[ConnLog]) -> impl Iterator<Item = &Seen> {
    log.iter().flat_map(|c| &c.requests).filter(|s| !s.path.ends_with("/next") && !s.path.ends_with("/after"))
}

/// A proxy serving `cases`, each with a backend of its own, and a decoy
/// behind the virtual host `decoy.example`.
struct Group {
    proxy: ProxyProcess,
    listen: SocketAddr,
    backends: Vec<ScriptedBackend>,
    decoy: ScriptedBackend,
}

/// The route timeout: long enough for every case, short enough that a
/// proxy waiting for bytes that never come fails the case, not the suite.
const ROUTE_TIMEOUT: &str = "3s";

async fn group(host: u8, cases: &[Case], hcm_extra: &str) -> Group {
    let at = ip(12, host);
    let decoy = ScriptedBackend::start(at, |_: &Seen| Answer::send(ok("decoy"))).await;
    let mut backends = Vec::new();
    for case in cases {
        let answer = case.answer.clone();
        let next_body = case.next_body;
        let backend = ScriptedBackend::start(at, move |seen: &Seen| {
            for tag in ["next", "after"] {
                if seen.path.ends_with(&format!("/{tag}")) {
                    return Answer::send(ok(&next_body(tag)));
                }
            }
            answer(seen)
        })
        .await;
        backends.push(backend);
    }
    let route = |cluster: &str| format!("route: {{ cluster: {cluster}, timeout: {ROUTE_TIMEOUT} }}");
    let mut vhosts = String::new();
    for case in cases {
        vhosts.push_str(&format!(
            r#"
            - name: {name}
              domains: ["{domain}"]
              routes:
              - match: {{ prefix: "/" }}
                {route}"#,
            name = case.name,
            domain = vhost(case.name),
            route = route(case.name)
        ));
    }
    vhosts.push_str(&format!(
        r#"
            - name: decoy
              domains: ["decoy.example"]
              routes:
              - match: {{ prefix: "/" }}
                {}
            - name: by_path
              domains: ["*"]
              routes:"#,
        route("decoy")
    ));
    for case in cases {
        vhosts.push_str(&format!(
            r#"
              - match: {{ path_separated_prefix: "/{name}" }}
                {route}"#,
            name = case.name,
            route = route(case.name)
        ));
    }
    let mut clusters: Vec<String> = cases
        .iter()
        .zip(&backends)
        .map(|(case, b)| yaml::cluster(case.name, "STATIC", &[(b.addr.ip().to_string(), b.addr.port())], ""))
        .collect();
    clusters.push(yaml::cluster("decoy", "STATIC", &[(decoy.addr.ip().to_string(), decoy.addr.port())], ""));
    let listen = free_addr(at);
    let admin = free_addr(at);
    let config = format!(
        "{}{}",
        yaml::admin(admin),
        yaml::bootstrap(&[yaml::listener("framing", listen, &yaml::hcm("framing", hcm_extra, &vhosts))], &clusters)
    );
    // One worker: every request meets the same upstream pool.
    let proxy = ProxyProcess::start_with_args(&config, listen, &["--concurrency", "1"]).await;
    Group { proxy, listen, backends, decoy }
}

/// What arrives after a response within this window counts as a second one.
const EXTRA_WINDOW: Duration = Duration::from_millis(250);
/// How long a connection that must close may take to.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);

/// A follow-up request on `c`: it must get its own clean 200, and nothing after it.
async fn follow_up(c: &mut RawClient, case: &Case, tag: &str) -> Result<(), String> {
    let request = format!("GET /{}/{tag} HTTP/1.1\r\nHost: framing\r\n\r\n", case.name);
    if !c.send(request.as_bytes()).await {
        return Err(format!("{tag}: the connection refused the request"));
    }
    let want = (case.next_body)(tag);
    let r = c.response(Asked::default()).await.map_err(|e| format!("{tag}: {e}"))?;
    if r.status != 200 || r.body != want.as_bytes() {
        return Err(format!(
            "{tag}: got {} {}, want 200 {want:?} (bytes of another exchange?)",
            r.status,
            show(&r.raw)
        ));
    }
    evil_free(&r).map_err(|e| format!("{tag}: {e}"))?;
    let extra = c.rest(EXTRA_WINDOW).await;
    if !extra.is_empty() {
        return Err(format!("{tag}: bytes after the response: {}", show(&extra)));
    }
    Ok(())
}

/// No field of a response came from a body or a stray response upstream.
fn evil_free(r: &Response) -> Result<(), String> {
    match r.headers.iter().find(|(n, v)| n.contains("evil") || v.to_ascii_lowercase().contains("evil")) {
        None => Ok(()),
        Some((n, v)) => Err(format!("the client got {n}: {v}, bytes the upstream sent as data")),
    }
}

/// Runs one case against `backend`; every problem found.
async fn run(g: &Group, case: &Case, backend: &ScriptedBackend) -> Vec<String> {
    let pingora = pingora_engine();
    let mut problems = Vec::new();
    let mut c = RawClient::connect(g.listen).await;
    if !c.send(&case.request).await {
        problems.push("the proxy refused the request bytes".to_string());
    }
    let (mut responses, mut error) = (Vec::new(), None);
    for _ in 0..case.responses {
        match c.response_within(case.asked, Duration::from_secs(6)).await {
            Ok(r) => responses.push(r),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    if error.is_some() {
        // The bytes of a response that could not be read are in the error, not extra.
        c.buf.clear();
    }
    let refused = responses.first().is_none_or(|r| r.status >= 400);
    let wait = match case.close {
        Close::Must => CLOSE_WITHIN,
        Close::Either if refused => CLOSE_WITHIN,
        _ => EXTRA_WINDOW,
    };
    let extra = c.rest(wait).await;
    let o = Outcome { pingora, responses, error, extra, closed: c.closed };

    // (1) What the client got.
    if let Err(e) = (case.client)(&o) {
        problems.push(format!("client: {e}"));
    }
    match (case.close, o.closed) {
        (Close::Must, false) => problems.push("client: the connection stayed open".to_string()),
        (Close::MustNot, true) => problems.push("client: the connection was closed".to_string()),
        _ => {}
    }
    if !o.extra.is_empty() && !case.tunnel {
        problems.push(format!("client: bytes after the response: {}", show(&o.extra)));
    }
    for r in &o.responses {
        if let Err(e) = evil_free(r) {
            problems.push(format!("client: {e}"));
        }
    }

    // (2) What the backend got, before any follow-up.
    let log = backend.log();
    if let Err(e) = (case.backend)(&o, &log) {
        problems.push(format!("backend: {e}"));
    }
    let case_conns: Vec<usize> = case_requests(&log).map(|s| s.conn).collect();

    // (3) The next request on the same client connection, then one on a
    // new connection: both go over the pooled upstream connection if any.
    let same_connection = !c.closed && !case.tunnel;
    if same_connection {
        if let Err(e) = follow_up(&mut c, case, "next").await {
            problems.push(format!("next request on the client connection: {e}"));
        }
    }
    let mut fresh = RawClient::connect(g.listen).await;
    if let Err(e) = follow_up(&mut fresh, case, "after").await {
        problems.push(format!("next request on a new client connection: {e}"));
    }
    let log = backend.log();
    let conn_of =
        |tag: &str| log.iter().flat_map(|c| &c.requests).find(|s| s.path.ends_with(&format!("/{tag}"))).map(|s| s.conn);
    match case.reuse {
        Reuse::Never => {
            for tag in ["next", "after"] {
                if conn_of(tag).is_some_and(|n| case_conns.contains(&n)) {
                    problems.push(format!("upstream: the {tag} request reused the case's upstream connection"));
                }
            }
        }
        Reuse::Expected if !pingora && same_connection && conn_of("next").is_some_and(|n| !case_conns.contains(&n)) => {
            problems.push("upstream: a clean upstream connection was not reused".to_string());
        }
        _ => {}
    }
    if let Some(s) = log.iter().flat_map(|c| &c.requests).find(|s| s.path.contains("SMUGGLED")) {
        problems.push(format!("backend: got the smuggled request {} {}", s.method, s.path));
    }
    problems
}

/// Runs every case of a table on one proxy; fails listing each failing case.
async fn run_table(host: u8, cases: Vec<Case>, hcm_extra: &str) {
    let only = std::env::var("FRAMING_CASE").unwrap_or_default();
    let cases: Vec<Case> = cases.into_iter().filter(|c| c.name.contains(&only)).collect();
    if cases.is_empty() {
        return;
    }
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    let dup = names.windows(2).find(|w| w[0] == w[1]);
    assert!(dup.is_none(), "case name used twice: {dup:?}");
    let g = group(host, &cases, hcm_extra).await;
    let started = Instant::now();
    let results: Vec<(&str, Vec<String>)> = futures::stream::iter(cases.iter().zip(&g.backends))
        .map(|(case, backend)| async { (case.name, run(&g, case, backend).await) })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut failed: Vec<String> = results
        .iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(name, p)| format!("  {name}:\n    {}", p.join("\n    ")))
        .collect();
    failed.sort();
    // Nothing a peer sent may panic the proxy, or stop it.
    let mut g = g;
    if let Ok(Some(status)) = g.proxy.child.try_wait() {
        failed.push(format!("  (proxy): exited with {status}"));
    }
    if let Some(line) = g.proxy.log().lines().find(|l| l.contains("panicked")) {
        failed.push(format!("  (proxy): {line}"));
    }
    // No case routes to the decoy: a request there was routed by the wrong authority.
    let decoy: Vec<String> = g.decoy.requests().iter().map(|s| s.path.clone()).collect();
    if !decoy.is_empty() {
        failed.push(format!("  (decoy.example): got {decoy:?}"));
    }
    let engine = if pingora_engine() { "pingora" } else { "native" };
    eprintln!("{} cases on the {engine} engine in {:?}, {} failed", results.len(), started.elapsed(), failed.len());
    assert!(
        failed.is_empty(),
        "{} of {} cases failed on the {engine} engine:\n{}",
        failed.len(),
        results.len(),
        failed.join("\n")
    );
}

// ---------------------------------------------------------------- client-side cases

/// A request the proxy must serve, or refuse with 400 before anything
/// reaches the backend (RFC 9110 §8.6 lets a recipient do either with a
/// repeated `Content-Length`).
fn served_or_refused(
    case: Case,
    want_body: &'static str,
    check: impl Fn(&Seen) -> Result<(), String> + Send + Sync + 'static,
) -> Case {
    case.expect(either(status(200, want_body), rejected(&[400]))).close(Close::Either).backend(refused_or_one(check))
}

/// A request whose body is found broken while it streams: 400 and close,
/// or just the close; no complete request upstream.
fn broken_body(case: Case) -> Case {
    let refused = |o: &Outcome| match (&o.responses.first(), &o.error) {
        (None, Some(ReadError::Closed)) => Ok(()),
        _ => rejected(&[400])(o),
    };
    case.expect(refused).close(Close::Must).backend(no_request())
}

fn post(headers: &str, body: &str) -> String {
    format!("POST {{p}} HTTP/1.1\r\nHost: framing\r\n{headers}\r\n{body}")
}

/// `post`, with a second request after it that must never be answered or reach the backend.
fn post_smuggling(headers: &str, body: &str) -> String {
    format!("{}GET {{p}}/SMUGGLED HTTP/1.1\r\nHost: framing\r\n\r\n", post(headers, body))
}

fn chunked(body: &str) -> String {
    post_smuggling("Transfer-Encoding: chunked\r\n", body)
}

fn get_with(headers: &str) -> String {
    format!("GET {{p}} HTTP/1.1\r\n{headers}\r\n")
}

/// The request cases: what a client may send (RFC 9112 §§2-3, 5-7, RFC 9110 §7.6).
fn request_cases() -> Vec<Case> {
    let v = |name: &'static str| vhost(name);
    vec![
        // RFC 9110 §8.6 / RFC 9112 §6.3: Content-Length.
        served_or_refused(
            Case::new("req_cl_repeated_equal", post("Content-Length: 3\r\nContent-Length: 3\r\n", "abc")),
            "abc",
            |s| body("abc")(s).and_then(|()| single_length("3")(s)),
        ),
        served_or_refused(Case::new("req_cl_list_equal", post("Content-Length: 3, 3\r\n", "abc")), "abc", |s| {
            body("abc")(s).and_then(|()| single_length("3")(s))
        }),
        Case::new("req_cl_conflicting", post_smuggling("Content-Length: 3\r\nContent-Length: 4\r\n", "abcd")).refused(400),
        Case::new("req_cl_list_conflicting", post_smuggling("Content-Length: 3, 4\r\n", "abcd")).refused(400),
        Case::new("req_cl_plus_sign", post_smuggling("Content-Length: +3\r\n", "abc")).refused(400),
        Case::new("req_cl_minus_sign", post_smuggling("Content-Length: -3\r\n", "abc")).refused(400),
        Case::new("req_cl_space_inside", post_smuggling("Content-Length: 1 0\r\n", "abc")).refused(400),
        Case::new("req_cl_hex", post_smuggling("Content-Length: 0x3\r\n", "abc")).refused(400),
        Case::new("req_cl_empty", post_smuggling("Content-Length:\r\n", "abc")).refused(400),
        Case::new("req_cl_huge", post("Content-Length: 99999999999999999999999\r\n", "abc"))
            .expect(rejected(&[400, 413]))
            .close(Close::Must)
            .backend(nothing()),
        Case::new("req_cl_leading_zeros", post("Content-Length: 0003\r\n", "abc"))
            .expect(status(200, "abc"))
            .backend(one(body("abc"))),
        Case::new("req_cl_whitespace_around", post("Content-Length:   3  \r\n", "abc"))
            .expect(status(200, "abc"))
            .backend(one(body("abc"))),
        // RFC 9112 §6.1 / §6.3: Transfer-Encoding.
        Case::new("req_te_and_cl", post_smuggling("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"))
            .refused(400),
        Case::new("req_cl_and_te", post_smuggling("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "0\r\n\r\n"))
            .refused(400),
        Case::new("req_te_chunked_not_last", post_smuggling("Transfer-Encoding: chunked, identity\r\n", "3\r\nabc\r\n0\r\n\r\n"))
            .refused(400),
        Case::new("req_te_chunked_twice", post_smuggling("Transfer-Encoding: chunked, chunked\r\n", "3\r\nabc\r\n0\r\n\r\n"))
            .refused(400),
        Case::new("req_te_split_chunked_first", post_smuggling("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", "abc"))
            .expect(rejected(&[400, 501]))
            .close(Close::Must)
            .backend(nothing()),
        // RFC 9112 §6.1: 501 for a coding the server does not understand; §6.3: 400 as chunked is not last.
        Case::new("req_te_unknown", post_smuggling("Transfer-Encoding: foo\r\n", "abc"))
            .expect(rejected(&[400, 501]))
            .close(Close::Must)
            .backend(nothing()),
        Case::new("req_te_gzip_chunked", post("Transfer-Encoding: gzip, chunked\r\n", "3\r\nabc\r\n0\r\n\r\n"))
            .expect(either(rejected(&[400, 501]), status(200, "abc")))
            .close(Close::Either)
            .backend(refused_or_one(body("abc"))),
        Case::new("req_te_split_chunked_last", post("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\n\r\n"))
            .expect(either(rejected(&[400, 501]), status(200, "abc")))
            .close(Close::Either)
            .backend(refused_or_one(body("abc"))),
        Case::new(
            "req_te_in_http10",
            "POST {p} HTTP/1.0\r\nHost: framing\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET {p}/SMUGGLED HTTP/1.1\r\nHost: framing\r\n\r\n",
        )
        .refused(400),
        Case::new(
            "req_te_and_cl_in_http10",
            "POST {p} HTTP/1.0\r\nHost: framing\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\nGET {p}/SMUGGLED HTTP/1.1\r\nHost: framing\r\n\r\n",
        )
        .refused(400),
        Case::new("req_te_case_and_whitespace", post("Transfer-Encoding:   ChUnKeD  \r\n", "3\r\nabc\r\n0\r\n\r\n"))
            .expect(status(200, "abc"))
            .backend(one(body("abc"))),
        Case::new("req_te_chunked", post("Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"))
            .expect(status(200, "abcdefg"))
            .backend(one(body("abcdefg"))),
        Case::new("req_te_vertical_tab", post_smuggling("Transfer-Encoding:\x0bchunked\r\n", "0\r\n\r\n")).refused(400),
        // RFC 9112 §5.1: whitespace between a field name and the colon: 400.
        Case::new("req_te_space_before_colon", post_smuggling("Transfer-Encoding : chunked\r\nContent-Length: 3\r\n", "0\r\n\r\n"))
            .refused(400),
        // RFC 9112 §7.1: chunk sizes and extensions.
        broken_body(Case::new("req_chunk_size_overflow", chunked("fffffffffffffffffffff\r\nabc\r\n0\r\n\r\n"))),
        Case::new("req_chunk_size_hex_upper", post("Transfer-Encoding: chunked\r\n", "A\r\n0123456789\r\n0\r\n\r\n"))
            .expect(status(200, "0123456789"))
            .backend(one(body("0123456789"))),
        Case::new("req_chunk_size_leading_zeros", post("Transfer-Encoding: chunked\r\n", "0003\r\nabc\r\n0\r\n\r\n"))
            .expect(status(200, "abc"))
            .backend(one(body("abc"))),
        broken_body(Case::new("req_chunk_size_empty", chunked("\r\nabc\r\n0\r\n\r\n"))),
        broken_body(Case::new("req_chunk_size_0x", chunked("0x3\r\nabc\r\n0\r\n\r\n"))),
        broken_body(Case::new("req_chunk_size_negative", chunked("-3\r\nabc\r\n0\r\n\r\n"))),
        broken_body(Case::new("req_chunk_size_leading_space", chunked(" 3\r\nabc\r\n0\r\n\r\n"))),
        Case::new(
            "req_chunk_ext_valid",
            post("Transfer-Encoding: chunked\r\n", "3;a=b;c=\"d;e\" ; f\r\nabc\r\n0;x=y\r\n\r\n"),
        )
        .expect(status(200, "abc"))
        .backend(one(body("abc"))),
        broken_body(Case::new("req_chunk_ext_nul", chunked("3;a\0b\r\nabc\r\n0\r\n\r\n"))),
        broken_body(Case::new("req_chunk_ext_bare_cr", chunked("3;a\rb\r\nabc\r\n0\r\n\r\n"))),
        broken_body(Case::new("req_chunk_ext_bare_lf", chunked("3;a\nabc\r\n0\r\n\r\n"))),
        broken_body(Case::new("req_chunk_bare_lf_line_ends", chunked("3\nabc\n0\n\n"))),
        broken_body(Case::new("req_chunk_data_too_long", chunked("3\r\nabcd\r\n0\r\n\r\n"))),
        broken_body(Case::new("req_chunk_last_bare_lf", chunked("3\r\nabc\r\n0\r\n\n"))),
        // RFC 9112 §7.1.2: trailers.
        Case::new("req_trailer_valid", post("Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n"))
            .expect(status(200, "abc"))
            .backend(one(body("abc"))),
        broken_body(Case::new("req_trailer_bare_lf", chunked("3\r\nabc\r\n0\r\nX-T: 1\n\r\n"))),
        broken_body(Case::new("req_trailer_obs_fold", chunked("3\r\nabc\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"))),
        broken_body(Case::new("req_trailer_nul", chunked("3\r\nabc\r\n0\r\nX-T: a\0b\r\n\r\n"))),
        served_or_refused(
            Case::new("req_trailer_content_length", post("Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\nContent-Length: 10\r\n\r\n")),
            "abc",
            |s| body("abc")(s).and_then(|()| no_forbidden_trailer(s)),
        ),
        served_or_refused(
            Case::new("req_trailer_transfer_encoding", post("Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n")),
            "abc",
            |s| body("abc")(s).and_then(|()| no_forbidden_trailer(s)),
        ),
        served_or_refused(
            Case::new("req_trailer_host", post("Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\nHost: decoy.example\r\n\r\n")),
            "abc",
            |s| body("abc")(s).and_then(|()| no_forbidden_trailer(s)),
        ),
        // RFC 9112 §5.2, §2.2, §5.1, RFC 9110 §5.5: field syntax.
        Case::new("req_obs_fold", get_with("Host: framing\r\nX-A: 1\r\n 2\r\n")).refused(400),
        Case::new("req_whitespace_before_first_field", get_with(" Host: framing\r\n")).refused(400),
        Case::new("req_bare_cr_in_value", get_with("Host: framing\r\nX-A: a\rb\r\n")).refused(400),
        Case::new("req_bare_cr_line_end", get_with("Host: framing\rX-A: 1\r\n")).refused(400),
        Case::new("req_nul_in_value", get_with("Host: framing\r\nX-A: a\0b\r\n")).refused(400),
        Case::new("req_nul_in_target", "GET {p}/a\0b HTTP/1.1\r\nHost: framing\r\n\r\n").refused(400),
        Case::new("req_ctl_in_name", get_with("Host: framing\r\nX\x01A: 1\r\n")).refused(400),
        Case::new("req_empty_field_name", get_with("Host: framing\r\n: x\r\n")).refused(400),
        Case::new("req_non_ascii_field_name", get_with("Host: framing\r\nCaf\u{e9}: 1\r\n")).refused(400),
        Case::new("req_tab_before_colon", post_smuggling("Content-Length\t: 3\r\n", "abc")).refused(400),
        Case::new("req_two_spaces_in_request_line", "GET  {p} HTTP/1.1\r\nHost: framing\r\n\r\n").refused(400),
        // RFC 9112 §2.2: a bare LF MAY be taken as a line end.
        Case::new("req_bare_lf_line_ends", "GET {p} HTTP/1.1\nHost: framing\n\n")
            .expect(either(status(200, ""), rejected(&[400])))
            .close(Close::Either)
            .backend(refused_or_one(|_| Ok(()))),
        // RFC 9112 §2.2: a server SHOULD ignore an empty line before the request line.
        Case::new("req_leading_crlf", "\r\nGET {p} HTTP/1.1\r\nHost: framing\r\n\r\n").backend(one(|_| Ok(()))),
        // RFC 9112 §3.2: Host. An empty one is refused as well: RFC 9110
        // §4.2.1 forbids an `http` URI with an empty host. HTTP/1.0 needs none
        // (RFC 9112 §3.2 asks it of HTTP/1.1 only): the default virtual host serves it.
        Case::new("req_host_missing", get_with("")).refused(400),
        Case::new("req_host_twice_same", get_with("Host: framing\r\nHost: framing\r\n")).refused(400),
        Case::new("req_host_twice_different", get_with("Host: framing\r\nHost: decoy.example\r\n")).refused(400),
        Case::new("req_host_empty", get_with("Host:\r\n")).refused(400),
        Case::new("req_host_invalid", get_with("Host: fra ming\r\n")).refused(400),
        Case::new("req_host_missing_http10", "GET {p} HTTP/1.0\r\n\r\n").close(Close::Must).backend(one(|_| Ok(()))),
        Case::new("req_host_empty_http10", "GET {p} HTTP/1.0\r\nHost:\r\n\r\n").close(Close::Must).backend(one(|_| Ok(()))),
        // RFC 9112 §3.2.2: the authority of an absolute-form target wins over Host.
        Case::new("req_absolute_form_other_host", "GET http://{v}{p}/x HTTP/1.1\r\nHost: decoy.example\r\n\r\n").backend(one(
            move |s| {
                let want = v("req_absolute_form_other_host");
                match (s.headers_named("host").as_slice(), s.path.as_str()) {
                    ([h], "/req_absolute_form_other_host/x") if *h == want => Ok(()),
                    (hosts, path) => Err(format!("the backend got {path} with host {hosts:?}, want host {want}")),
                }
            },
        )),
        Case::new("req_absolute_form_same_host", "GET http://{v}{p}/x HTTP/1.1\r\nHost: {v}\r\n\r\n").backend(one(move |s| {
            let want = v("req_absolute_form_same_host");
            match (s.headers_named("host").as_slice(), s.path.as_str()) {
                ([h], "/req_absolute_form_same_host/x") if *h == want => Ok(()),
                (hosts, path) => Err(format!("the backend got {path} with host {hosts:?}, want host {want}")),
            }
        })),
        Case::new("req_absolute_form_without_host", "GET http://{v}{p}/x HTTP/1.1\r\n\r\n").refused(400),
        // RFC 9110 §7.6.1: fields named in Connection, and the hop-by-hop set, stop here.
        Case::new("req_connection_named_fields", get_with("Host: framing\r\nConnection: x-hop, keep-alive\r\nX-Hop: secret\r\nX-Kept: yes\r\n"))
            .backend(one(|s| {
                without(&["x-hop", "connection"])(s)?;
                match s.header("x-kept") {
                    Some("yes") => Ok(()),
                    other => Err(format!("the backend got x-kept {other:?}, want yes")),
                }
            })),
        Case::new("req_hop_by_hop_fields", get_with("Host: framing\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: gzip\r\n"))
            .backend(one(without(&["keep-alive", "proxy-connection", "te", "connection"]))),
        // The proxy's own edge fields are added after the client's hop-by-hop ones are gone.
        Case::new("req_connection_cannot_remove_edge_fields", get_with("Host: framing\r\nConnection: x-forwarded-proto, x-request-id\r\n"))
            .backend(one(|s| match (s.header("x-forwarded-proto"), s.header("x-request-id")) {
                (Some("http"), Some(id)) if !id.is_empty() => Ok(()),
                other => Err(format!("the backend got x-forwarded-proto, x-request-id {other:?}")),
            })),
        // RFC 9112 §9.3.2: pipelining. Pingora's engine answers the first
        // request and closes (README); the native engine answers all, in order.
        Case::new(
            "req_pipelined",
            "GET {p}/1 HTTP/1.1\r\nHost: framing\r\n\r\nGET {p}/2 HTTP/1.1\r\nHost: framing\r\n\r\nGET {p}/3 HTTP/1.1\r\nHost: framing\r\n\r\n",
        )
        .script(|s| Answer::send(ok(&s.path)))
        .responses(3)
        .expect(pipelined(&["/req_pipelined/1", "/req_pipelined/2", "/req_pipelined/3"]))
        .close(Close::Either),
        Case::new(
            "req_pipelined_with_bodies",
            "POST {p}/1 HTTP/1.1\r\nHost: framing\r\nContent-Length: 3\r\n\r\nabcPOST {p}/2 HTTP/1.1\r\nHost: framing\r\nContent-Length: 3\r\n\r\ndef",
        )
        .responses(2)
        .expect(pipelined(&["abc", "def"]))
        .close(Close::Either),
        // A refused request ends the connection: what was pipelined behind it is never served.
        Case::new(
            "req_pipelined_behind_a_refused_one",
            "GET {p}/1 HTTP/1.1\r\nHost: framing\r\n\r\nGET {p}/2 HTTP/1.1\r\nHost: framing\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxyGET {p}/SMUGGLED HTTP/1.1\r\nHost: framing\r\n\r\n",
        )
        .script(|s| Answer::send(ok(&s.path)))
        .responses(2)
        .expect(|o| {
            let first = o.first()?;
            if first.body != b"/req_pipelined_behind_a_refused_one/1" {
                return Err(format!("first response {}", show(&first.raw)));
            }
            match o.responses.get(1) {
                Some(r) if r.status == 400 => Ok(()),
                // Pingora's engine closes a pipelined connection after the first response.
                None if o.pingora && o.closed => Ok(()),
                Some(r) => Err(format!("second response {} {}, want 400", r.status, show(&r.raw))),
                None => Err(format!("no second response: {:?}", o.error)),
            }
        })
        .close(Close::Must)
        .backend(one(|s| match s.path.as_str() {
            "/req_pipelined_behind_a_refused_one/1" => Ok(()),
            p => Err(format!("the backend got {p}")),
        })),
        // RFC 9110 §10.1.1: Expect: 100-continue, with the body sent at once.
        Case::new("req_expect_100_continue", post("Expect: 100-continue\r\nContent-Length: 3\r\n", "abc"))
            .expect(|o| {
                let r = o.first()?;
                match (r.status, r.body.as_slice(), r.interim.as_slice()) {
                    (200, b"abc", [] | [100]) => Ok(()),
                    _ => Err(format!("got {}", show(&r.raw))),
                }
            })
            .backend(one(body("abc"))),
    ]
}

/// Pipelined responses with these bodies, in order. Pingora's engine may
/// close after the first (README), the native engine answers all.
fn pipelined(bodies: &'static [&'static str]) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| {
        for (r, want) in o.responses.iter().zip(bodies) {
            if r.status != 200 || r.body != want.as_bytes() {
                return Err(format!("got {} {}, want 200 {want:?}", r.status, show(&r.raw)));
            }
        }
        match o.responses.len() {
            n if n == bodies.len() && !o.closed => Ok(()),
            n if o.pingora && n >= 1 && o.closed => Ok(()),
            n => Err(format!("{n} of {} responses ({:?}), closed: {}", bodies.len(), o.error, o.closed)),
        }
    }
}

#[tokio::test]
async fn client_side_framing() {
    run_table(1, request_cases(), "").await;
}

// ---------------------------------------------------------------- upstream-side cases

/// `HTTP/1.1 200 OK` with these header lines, then `rest` (body bytes as sent).
fn resp(headers: &str, rest: &str) -> String {
    format!("HTTP/1.1 200 OK\r\n{headers}\r\n{rest}")
}

fn chunked_resp(body: &str) -> String {
    resp("Transfer-Encoding: chunked\r\n", body)
}

/// 200 with `want` as the body: delimited by the close (then the client
/// connection must close too) or re-framed by the proxy.
fn until_close(want: &'static str) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| {
        status(200, want)(o)?;
        match (o.first()?.framing, o.closed) {
            (Framing::UntilClose, false) => Err("a close-delimited body, and the connection stayed open".to_string()),
            _ => Ok(()),
        }
    }
}

/// The head went out, then the connection closed before the body's end.
fn cut_after_head() -> impl Fn(&Outcome) -> Result<(), String> {
    |o| match (&o.responses.first(), &o.error) {
        (None, Some(ReadError::Truncated(b))) if b.starts_with(b"HTTP/1.1 200") => cut_or_502()(o),
        _ => Err(format!("want a cut 200, got {:?} / {:?}", o.responses.first().map(|r| show(&r.raw)), o.error)),
    }
}

/// What the native engine and Pingora's do with interim responses (README:
/// the native engine drops them, as Envoy; Pingora's forwards them).
fn interim_by_engine(forwarded: &'static [u16]) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| if o.pingora { interim(forwarded)(o) } else { interim(&[])(o) }
}

/// The response cases: what an upstream may send (RFC 9112 §§2, 4-7).
fn response_cases() -> Vec<Case> {
    let late = Duration::from_millis(50);
    let evil_body = resp(&format!("Content-Length: {}\r\n", EVIL_HEAD.len()), EVIL_HEAD);
    let ok_or_502 = || either(status(200, "ok"), protocol_error());
    vec![
        // RFC 9112 §2.2: empty lines before the head are skipped, or the
        // response refused; the body is never taken for a head.
        Case::get("resp_leading_crlf", format!("\r\n{evil_body}"))
            .expect(either(status(200, EVIL_HEAD), protocol_error())),
        Case::get("resp_leading_lf", format!("\n{evil_body}")).expect(either(status(200, EVIL_HEAD), protocol_error())),
        Case::get("resp_leading_two_crlf", format!("\r\n\r\n{evil_body}"))
            .expect(either(status(200, EVIL_HEAD), protocol_error())),
        // Bytes after a complete response: the connection is not reused,
        // whether they come with it or later, while it sits in the pool.
        Case::get("resp_stray_crlf_after", format!("{}\r\n", String::from_utf8_lossy(&ok("ok"))))
            .expect(status(200, "ok"))
            .reuse(Reuse::Never),
        Case::new("resp_stray_crlf_late", "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .answer_with(Answer::send(ok("ok")).then_sleep(late).then_send("\r\n"))
            .expect(status(200, "ok"))
            .reuse(Reuse::Never),
        Case::new("resp_stray_lf_late", "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .answer_with(Answer::send(ok("ok")).then_sleep(late).then_send("\n"))
            .expect(status(200, "ok"))
            .reuse(Reuse::Never),
        // Issue 21 #1: a stray CRLF, then the next response's body looks
        // like a head; the next client must get that body, not its fields.
        Case::get("resp_stray_crlf_then_head_like_body", format!("{}\r\n", String::from_utf8_lossy(&ok("ok"))))
            .next_body(|tag| format!("{EVIL_HEAD}{tag}"))
            .expect(status(200, "ok"))
            .reuse(Reuse::Never),
        Case::new("resp_late_response", "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .answer_with(Answer::send(ok("ok")).then_sleep(late).then_send(EVIL_RESPONSE))
            .expect(status(200, "ok"))
            .reuse(Reuse::Never),
        Case::get("resp_second_response_same_write", format!("{}{EVIL_RESPONSE}", String::from_utf8_lossy(&ok("ok"))))
            .expect(status(200, "ok"))
            .reuse(Reuse::Never),
        Case::get("resp_garbage_after", format!("{}garbage", String::from_utf8_lossy(&ok("ok"))))
            .expect(status(200, "ok"))
            .reuse(Reuse::Never),
        // RFC 9112 §6.3: Transfer-Encoding wins over Content-Length, which is
        // dropped; the connection is not reused.
        Case::get(
            "resp_cl_and_te",
            resp("Content-Length: 100\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        )
        .expect(both(status(200, "hello"), lacks("content-length")))
        .reuse(Reuse::Never),
        Case::get(
            "resp_te_and_short_cl",
            resp("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        )
        .expect(both(status(200, "hello"), lacks("content-length")))
        .reuse(Reuse::Never),
        // RFC 9110 §8.6: Content-Length.
        Case::get("resp_cl_conflicting", resp("Content-Length: 2\r\nContent-Length: 3\r\n", "okk")).bad_gateway(),
        Case::get("resp_cl_list_conflicting", resp("Content-Length: 2, 3\r\n", "okk")).bad_gateway(),
        Case::get("resp_cl_repeated_equal", resp("Content-Length: 2\r\nContent-Length: 2\r\n", "ok"))
            .expect(ok_or_502()),
        Case::get("resp_cl_list_equal", resp("Content-Length: 2, 2\r\n", "ok")).expect(ok_or_502()),
        Case::get("resp_cl_plus_sign", resp("Content-Length: +2\r\n", "ok")).bad_gateway(),
        Case::get("resp_cl_minus_sign", resp("Content-Length: -2\r\n", "ok")).bad_gateway(),
        Case::get("resp_cl_space_inside", resp("Content-Length: 1 2\r\n", "ok")).bad_gateway(),
        Case::get("resp_cl_hex", resp("Content-Length: 0x2\r\n", "ok")).bad_gateway(),
        Case::get("resp_cl_huge", resp("Content-Length: 99999999999999999999\r\n", "ok")).bad_gateway(),
        Case::get("resp_cl_empty", resp("Content-Length:\r\n", "ok")).bad_gateway(),
        Case::get("resp_cl_leading_zeros", resp("Content-Length: 002\r\n", "ok"))
            .expect(status(200, "ok"))
            .reuse(Reuse::Expected),
        Case::new("resp_cl_body_cut_by_close", "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .answer_with(Answer::send(resp("Content-Length: 10\r\n", "ok")).then_close())
            .cut(),
        // RFC 9112 §6.1, §6.3: Transfer-Encoding.
        Case::new("resp_te_chunked_not_last", "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .answer_with(Answer::send(resp("Transfer-Encoding: chunked, gzip\r\n", "raw bytes")).then_close())
            .expect(either(until_close("raw bytes"), protocol_error()))
            .close(Close::Either),
        Case::get("resp_te_chunked_twice", resp("Transfer-Encoding: chunked, chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"))
            .bad_gateway(),
        Case::new("resp_te_unknown", "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .answer_with(Answer::send(resp("Transfer-Encoding: foo\r\n", "raw bytes")).then_close())
            .expect(either(until_close("raw bytes"), protocol_error()))
            .close(Close::Either),
        // RFC 9112 §6.1: TE in HTTP/1.0 means faulty framing: never reused (issue 21 #7).
        Case::get(
            "resp_te_in_http10",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .expect(either(status(200, "hello"), protocol_error()))
        .reuse(Reuse::Never),
        Case::get(
            "resp_te_split_chunked_last",
            resp("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        )
        .expect(status(200, "hello")),
        Case::new("resp_te_split_chunked_first", "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .answer_with(
                Answer::send(resp("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", "raw bytes"))
                    .then_close(),
            )
            .expect(either(until_close("raw bytes"), protocol_error()))
            .close(Close::Either),
        Case::get("resp_te_empty", resp("Transfer-Encoding:\r\nContent-Length: 2\r\n", "ok")).bad_gateway(),
        Case::get("resp_te_case_and_whitespace", resp("Transfer-Encoding:  ChunKed \r\n", "5\r\nhello\r\n0\r\n\r\n"))
            .expect(status(200, "hello"))
            .reuse(Reuse::Expected),
        // RFC 9112 §7.1: chunks, checked strictly (issue 21 #3).
        Case::get("resp_chunked", chunked_resp("5;a=b;c=\"d e\"\r\nhello\r\n0\r\n\r\n"))
            .expect(status(200, "hello"))
            .reuse(Reuse::Expected),
        Case::get("resp_chunk_size_hex_upper", chunked_resp("A\r\n0123456789\r\n0\r\n\r\n"))
            .expect(status(200, "0123456789"))
            .reuse(Reuse::Expected),
        Case::get("resp_chunk_size_leading_zeros", chunked_resp("0005\r\nhello\r\n000\r\n\r\n"))
            .expect(status(200, "hello")),
        Case::get("resp_chunk_size_overflow", chunked_resp("fffffffffffffffffff\r\nhello\r\n0\r\n\r\n")).cut(),
        Case::new("resp_chunk_size_overflow_after_the_head", "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .answer_with(
                // Long enough for the head and the first chunk to be on their way.
                Answer::send(chunked_resp("5\r\nhello\r\n"))
                    .then_sleep(Duration::from_millis(300))
                    .then_send("fffffffffffffffffff\r\nx\r\n0\r\n\r\n"),
            )
            .expect(cut_after_head())
            .reuse(Reuse::Never)
            .close(Close::Must),
        Case::get("resp_chunk_size_empty", chunked_resp("\r\nhello\r\n0\r\n\r\n")).cut(),
        Case::get("resp_chunk_size_0x", chunked_resp("0x5\r\nhello\r\n0\r\n\r\n")).cut(),
        Case::get("resp_chunk_size_leading_space", chunked_resp(" 5\r\nhello\r\n0\r\n\r\n")).cut(),
        Case::get("resp_chunk_ext_nul", chunked_resp("5;a\0\r\nhello\r\n0\r\n\r\n")).cut(),
        Case::get("resp_chunk_ext_bare_cr", chunked_resp("5;a\rb\r\nhello\r\n0\r\n\r\n")).cut(),
        Case::get("resp_chunk_ext_bare_lf", chunked_resp("5;a\nhello\r\n0\r\n\r\n")).cut(),
        Case::get("resp_chunk_ext_open_quote", chunked_resp("5;a=\"b\r\nhello\r\n0\r\n\r\n")).cut(),
        Case::get("resp_chunk_ext_without_name", chunked_resp("5;=x\r\nhello\r\n0\r\n\r\n")).cut(),
        Case::get("resp_chunk_last_bare_lf", chunked_resp(&format!("5\r\nhello\r\n0\r\n\n{EVIL_RESPONSE}"))).cut(),
        Case::get("resp_chunk_size_bare_lf", chunked_resp("5\nhello\r\n0\r\n\r\n")).cut(),
        Case::get("resp_chunk_data_too_long", chunked_resp("5\r\nhelloXY\r\n0\r\n\r\n")).cut(),
        Case::get("resp_chunk_data_bare_lf", chunked_resp("5\r\nhello\n0\r\n\r\n")).cut(),
        Case::new("resp_chunk_last_missing", "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .answer_with(Answer::send(chunked_resp("5\r\nhello\r\n")).then_close())
            .cut(),
        // RFC 9112 §7.1.2: trailers, well-formed, and none that frames or routes.
        Case::get("resp_trailer", chunked_resp("5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"))
            .expect(status(200, "hello"))
            .reuse(Reuse::Expected),
        Case::get("resp_trailer_bare_lf", chunked_resp("5\r\nhello\r\n0\r\nX-T: 1\n\r\n")).cut(),
        Case::get("resp_trailer_obs_fold", chunked_resp("5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n")).cut(),
        Case::get("resp_trailer_without_colon", chunked_resp("5\r\nhello\r\n0\r\ngarbage\r\n\r\n")).cut(),
        Case::get("resp_trailer_nul", chunked_resp("5\r\nhello\r\n0\r\nX-T: a\0b\r\n\r\n")).cut(),
        Case::get("resp_trailer_content_length", chunked_resp("5\r\nhello\r\n0\r\nContent-Length: 10\r\n\r\n"))
            .expect(either(status(200, "hello"), cut_or_502()))
            .close(Close::Either),
        Case::get(
            "resp_trailer_transfer_encoding",
            chunked_resp("5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        )
        .expect(either(status(200, "hello"), cut_or_502()))
        .close(Close::Either),
        Case::get("resp_trailer_host", chunked_resp("5\r\nhello\r\n0\r\nHost: decoy.example\r\n\r\n"))
            .expect(either(status(200, "hello"), cut_or_502()))
            .close(Close::Either),
        // RFC 9112 §5.2, §5.1, §2.2, RFC 9110 §5.5: head syntax.
        Case::get("resp_obs_fold", resp("X-A: 1\r\n 2\r\nContent-Length: 2\r\n", "ok")).expect(ok_or_502()),
        Case::get("resp_bare_cr_in_value", resp("X-A: a\rb\r\nContent-Length: 2\r\n", "ok")).bad_gateway(),
        Case::get("resp_nul_in_value", resp("X-A: a\0b\r\nContent-Length: 2\r\n", "ok")).bad_gateway(),
        Case::get("resp_space_before_colon", resp("Content-Length : 2\r\n", "ok")).expect(ok_or_502()),
        Case::get("resp_bare_lf_line_ends", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok").expect(ok_or_502()),
        Case::get("resp_ctl_in_name", resp("X\x01A: 1\r\nContent-Length: 2\r\n", "ok")).bad_gateway(),
        Case::get("resp_field_without_colon", resp("Garbage\r\nContent-Length: 2\r\n", "ok")).bad_gateway(),
        Case::get("resp_not_http", "SSH-2.0-OpenSSH_9.2\r\n\r\n").bad_gateway(),
        Case::get("resp_http2_version", "HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok").bad_gateway(),
        // RFC 9112 §4: a three-digit status, 100..=599 (issue 21 #4).
        Case::get("resp_status_099", "HTTP/1.1 099 Weird\r\nContent-Length: 2\r\n\r\nok").bad_gateway(),
        Case::get("resp_status_000", "HTTP/1.1 000 Zero\r\nContent-Length: 2\r\n\r\nok").bad_gateway(),
        Case::get("resp_status_600", "HTTP/1.1 600 Big\r\nContent-Length: 2\r\n\r\nok").bad_gateway(),
        Case::get("resp_status_999", "HTTP/1.1 999 Bigger\r\nContent-Length: 2\r\n\r\nok").bad_gateway(),
        Case::get("resp_status_not_a_number", "HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok").bad_gateway(),
        Case::get("resp_status_two_digits", "HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok").bad_gateway(),
        Case::get("resp_status_four_digits", "HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok").bad_gateway(),
        Case::get("resp_status_599", "HTTP/1.1 599 Custom\r\nContent-Length: 2\r\n\r\nok").expect(status(599, "ok")),
        Case::get("resp_status_without_reason", "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok")
            .expect(status(200, "ok")),
        // RFC 9110 §15.2: interim responses.
        Case::get("resp_100_then_200", format!("HTTP/1.1 100 Continue\r\n\r\n{}", String::from_utf8_lossy(&ok("ok"))))
            .expect(both(status(200, "ok"), interim_by_engine(&[100])))
            .reuse(Reuse::Expected),
        Case::get(
            "resp_103_then_200",
            format!("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n{}", String::from_utf8_lossy(&ok("ok"))),
        )
        .expect(both(status(200, "ok"), interim_by_engine(&[103])))
        .reuse(Reuse::Expected),
        Case::get(
            "resp_three_1xx",
            format!(
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n{}",
                String::from_utf8_lossy(&ok("ok"))
            ),
        )
        .expect(both(status(200, "ok"), interim_by_engine(&[100, 103, 102])))
        .reuse(Reuse::Expected),
        // A 1xx has no body, whatever its fields say.
        Case::get(
            "resp_1xx_with_length",
            format!("HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n\r\n{}", String::from_utf8_lossy(&ok("ok"))),
        )
        .expect(both(status(200, "ok"), interim_by_engine(&[103]))),
        // Issue 21 #7: a 101 nobody asked for is refused, and the connection dropped.
        Case::get(
            "resp_101_unasked",
            format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: upgrade\r\n\r\n{EVIL_RESPONSE}"),
        )
        .bad_gateway(),
        upgraded(),
        // RFC 9112 §6.3 (1): no body after HEAD, 1xx, 204, 304; bytes the
        // upstream sends anyway make its connection unusable.
        Case::get("resp_204_with_body", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello")
            .expect(status(204, ""))
            .reuse(Reuse::Never),
        Case::get(
            "resp_204_with_chunked_body",
            "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        .expect(status(204, ""))
        .reuse(Reuse::Never),
        Case::get("resp_304_with_body", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello")
            .expect(status(304, ""))
            .reuse(Reuse::Never),
        Case::get("resp_304_with_length", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n")
            .expect(status(304, ""))
            .reuse(Reuse::Expected),
        Case::new("resp_head_with_length", "HEAD {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .head()
            .answer(resp("Content-Length: 5\r\n", ""))
            .expect(both(status(200, ""), |o| match o.first()?.header("content-length") {
                Some("5") => Ok(()),
                other => Err(format!("content-length {other:?}, want the upstream's 5")),
            }))
            .reuse(Reuse::Expected),
        Case::new("resp_head_with_body", "HEAD {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .head()
            .answer(resp("Content-Length: 5\r\n", "hello"))
            .expect(status(200, ""))
            .reuse(Reuse::Never),
        Case::new("resp_head_chunked", "HEAD {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .head()
            .answer(resp("Transfer-Encoding: chunked\r\n", ""))
            .expect(status(200, ""))
            .reuse(Reuse::Expected),
        // RFC 9112 §6.3 (8), §9.3, §9.6: close-delimited bodies, and closes announced.
        Case::new("resp_close_delimited", "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .answer_with(Answer::send(resp("", "until the end")).then_close())
            .expect(until_close("until the end"))
            .close(Close::Either),
        Case::new("resp_close_delimited_http10", "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .answer_with(Answer::send("HTTP/1.0 200 OK\r\n\r\nold style").then_close())
            .expect(until_close("old style"))
            .close(Close::Either),
        Case::get("resp_connection_close", resp("Connection: close\r\nContent-Length: 2\r\n", "ok"))
            .expect(status(200, "ok"))
            .reuse(Reuse::Never),
        Case::get("resp_http10_keep_alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok")
            .expect(status(200, "ok")),
        Case::get("resp_http10_without_keep_alive", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .expect(status(200, "ok"))
            .reuse(Reuse::Never),
    ]
}

/// RFC 9110 §7.8: a 101 to a request that asked to upgrade; the tunnel's
/// bytes follow it.
fn upgraded() -> Case {
    let mut case = Case::new(
        "resp_101_asked",
        "GET {p} HTTP/1.1\r\nHost: framing\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .answer_with(
        Answer::send(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\ntunnel bytes",
        )
        .then_sleep(Duration::from_millis(300))
        .then_close(),
    )
    .expect(|o| {
        let r = o.first()?;
        match (r.status, r.header("upgrade"), o.extra.as_slice()) {
            (101, Some("websocket"), b"tunnel bytes") => Ok(()),
            _ => Err(format!("got {} then {}", show(&r.raw), show(&o.extra))),
        }
    })
    .close(Close::Either);
    case.asked.upgrade = true;
    case.tunnel = true;
    case
}

#[tokio::test]
async fn upstream_side_framing() {
    run_table(2, response_cases(), "          upgrade_configs:\n          - upgrade_type: websocket").await;
}

// ---------------------------------------------------------------- fields and dates

/// RFC 9110 §7.6.1 on responses, and §6.6.1: Date.
fn field_cases() -> Vec<Case> {
    vec![
        Case::get("resp_connection_named_fields", resp("Connection: x-internal\r\nX-Internal: secret\r\nX-Public: yes\r\nContent-Length: 2\r\n", "ok"))
            .expect(both(both(status(200, "ok"), lacks("x-internal")), |o| match o.first()?.header("x-public") {
                Some("yes") => Ok(()),
                other => Err(format!("x-public {other:?}, want yes")),
            })),
        Case::get(
            "resp_hop_by_hop_fields",
            resp("Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\nContent-Length: 2\r\n", "ok"),
        )
        .expect(both(
            both(status(200, "ok"), lacks("keep-alive")),
            both(both(lacks("proxy-connection"), lacks("te")), lacks("upgrade")),
        )),
        Case::get("resp_date_added", ok("ok")).expect(both(status(200, "ok"), dated_now())),
        Case::get("resp_date_kept", resp("Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 2\r\n", "ok")).expect(both(
            status(200, "ok"),
            |o| match o.first()?.headers_named("date").as_slice() {
                ["Sun, 06 Nov 1994 08:49:37 GMT"] => Ok(()),
                got => Err(format!("date fields {got:?}, want the upstream's")),
            },
        )),
        Case::new("local_reply_date_404", "GET /no-route-here HTTP/1.1\r\nHost: framing\r\n\r\n")
            .expect(both(status_only(404), dated_now()))
            .backend(nothing()),
        Case::new("local_reply_date_400", "GET {p} HTTP/1.1\r\nHost: framing\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
            .expect(both(rejected(&[400]), dated_now()))
            .close(Close::Must)
            .backend(nothing()),
        Case::get("local_reply_date_502", "SSH-2.0-OpenSSH_9.2\r\n\r\n").bad_gateway().expect(both(protocol_error(), dated_now())),
    ]
}

#[tokio::test]
async fn hop_by_hop_fields_and_dates() {
    run_table(3, field_cases(), "").await;
}

// ---------------------------------------------------------------- head deadline

/// Sends a request head a byte every `every`, for at most `limit`; how long
/// until the proxy answered or closed, and what it answered.
async fn trickle(listen: SocketAddr, every: Duration, limit: Duration) -> (Duration, Result<Response, ReadError>) {
    let mut c = RawClient::connect(listen).await;
    let start = Instant::now();
    c.send(b"GET /deadline HTTP/1.1\r\nHost: framing\r\nX-Slow: ").await;
    while start.elapsed() < limit {
        if !c.send(b"a").await {
            break;
        }
        match c.response_within(Asked::default(), every).await {
            Err(ReadError::TimedOut(b)) if b.is_empty() => {}
            other => return (start.elapsed(), other),
        }
    }
    (start.elapsed(), Err(ReadError::TimedOut(Vec::new())))
}

/// Issue 21 #8: the head has a deadline of its own, even when every byte
/// comes within the idle timeout. The native engine answers Envoy's 408;
/// Pingora's closes without a reply (README).
fn head_timed_out(took: Duration, limit: Duration, answer: &Result<Response, ReadError>) -> Result<(), String> {
    if took >= limit {
        return Err(format!("a head trickled for {took:?} was still being read"));
    }
    match answer {
        Ok(r) if !pingora_engine() && r.status == 408 && r.body == b"request header timeout" => Ok(()),
        Err(ReadError::Closed) if pingora_engine() => Ok(()),
        other => Err(format!("after {took:?}: {other:?}")),
    }
}

#[tokio::test]
async fn a_request_head_must_arrive_within_request_headers_timeout() {
    let hcm = "          request_headers_timeout: 0.5s\n          stream_idle_timeout: 10s";
    let g = group(4, &[Case::get("deadline", ok("ok"))], hcm).await;
    let limit = Duration::from_secs(6);
    let (took, answer) = trickle(g.listen, Duration::from_millis(100), limit).await;
    let result = head_timed_out(took, limit, &answer);
    assert!(result.is_ok(), "{result:?}");
    assert!(took >= Duration::from_millis(450), "answered before the deadline: {took:?}");
    assert!(g.backends[0].log().is_empty(), "the trickled head reached the upstream");
}

/// TODO(lead): with no `request_headers_timeout` configured, the default the
/// README documents (about 10 s) bounds a head; this allows up to 30 s.
#[tokio::test]
async fn a_request_head_has_a_deadline_by_default() {
    let g = group(5, &[Case::get("deadline", ok("ok"))], "").await;
    let limit = Duration::from_secs(30);
    let (took, answer) = trickle(g.listen, Duration::from_millis(500), limit).await;
    let result = head_timed_out(took, limit, &answer);
    assert!(result.is_ok(), "{result:?}");
}
