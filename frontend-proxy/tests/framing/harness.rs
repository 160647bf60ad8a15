//! Runs a table of cases: one proxy (one worker, so the upstream pool is
//! deterministic), a backend per case, the cases side by side, and the
//! follow-up requests that show whether an exchange left anything behind.

use crate::case::{show, vhost, Case, Close, Outcome, Reuse};
use crate::support::raw::{ok, Answer, ConnLog, RawClient, Response, ScriptedBackend, Seen};
use crate::support::strict::Asked;
use crate::support::{free_addr, ip, pingora_engine, yaml, ProxyProcess};
use futures::StreamExt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Requests of the case itself: not the follow-ups.
pub(crate) fn case_requests(log: &[ConnLog]) -> impl Iterator<Item = &Seen> {
    log.iter().flat_map(|c| &c.requests).filter(|s| !s.path.ends_with("/next") && !s.path.ends_with("/after"))
}

/// A proxy serving `cases`, each with a backend of its own, and a decoy
/// behind the virtual host `decoy.example`.
pub(crate) struct Group {
    pub(crate) proxy: ProxyProcess,
    pub(crate) listen: SocketAddr,
    pub(crate) backends: Vec<ScriptedBackend>,
    pub(crate) decoy: ScriptedBackend,
}

/// The route timeout: long enough for every case, short enough that a
/// proxy waiting for bytes that never come fails the case, not the suite.
pub(crate) const ROUTE_TIMEOUT: &str = "3s";

pub(crate) async fn group(host: u8, cases: &[Case], hcm_extra: &str) -> Group {
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
pub(crate) const EXTRA_WINDOW: Duration = Duration::from_millis(250);
/// How long a connection that must close may take to.
pub(crate) const CLOSE_WITHIN: Duration = Duration::from_secs(2);

/// A follow-up request on `c`: it must get its own clean 200, and nothing after it.
pub(crate) async fn follow_up(c: &mut RawClient, case: &Case, tag: &str) -> Result<(), String> {
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
pub(crate) fn evil_free(r: &Response) -> Result<(), String> {
    match r.headers.iter().find(|(n, v)| n.contains("evil") || v.to_ascii_lowercase().contains("evil")) {
        None => Ok(()),
        Some((n, v)) => Err(format!("the client got {n}: {v}, bytes the upstream sent as data")),
    }
}

/// Runs one case against `backend`; every problem found.
pub(crate) async fn run(g: &Group, case: &Case, backend: &ScriptedBackend) -> Vec<String> {
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
pub(crate) async fn run_table(host: u8, cases: Vec<Case>, hcm_extra: &str) {
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
