//! The connection manager's path normalization (`normalize_path`,
//! `merge_slashes`, `path_with_escaped_slashes_action`) end to end: the
//! path is normalized before routing, and the upstream gets the
//! normalized path; the query is never touched. Requests are written on
//! raw sockets (HTTP/1) or with hyper's HTTP/2 client (h2c, prior
//! knowledge): URL libraries (reqwest's) would normalize dot segments
//! themselves. Runs on both HTTP/1 engines
//! (`FRONTEND_PROXY_HTTP1_ENGINE=pingora`). Addresses: 127.0.27.x.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use std::net::SocketAddr;
use std::time::Duration;
use support::raw::{ok, read_response, Answer, ScriptedBackend, Seen};
use support::{eventually, free_addr, ip, stat, yaml, ProxyProcess};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The routes every listener here has: the echo backend answers with the
/// target it got (so a 200's body is what the upstream saw), but only for `/b` and `/x/y` (and prefix `/x%2F`, which only
/// an unnormalized path reaches); anything else is a 403 from the proxy,
/// so a response says how the proxy routed the request.
const VHOSTS: &str = r#"
            - name: all
              domains: ["*"]
              routes:
              - match: { path: "/b" }
                route: { cluster: echo }
              - match: { path: "/x/y" }
                route: { cluster: echo }
              - match: { prefix: "/x%2F" }
                route: { cluster: echo }
              - match: { prefix: "/" }
                direct_response: { status: 403, body: { inline_string: unmatched } }"#;

struct Stack {
    _proxy: ProxyProcess,
    backend: ScriptedBackend,
    admin: SocketAddr,
    /// Each listener's address, in the order of the settings given.
    listeners: Vec<SocketAddr>,
}

/// One proxy with a listener per entry of `settings` (connection manager
/// fields), all routed by [`VHOSTS`] to one echo backend.
async fn stack(host: u8, settings: &[&str]) -> Stack {
    let at = ip(27, host);
    let backend = ScriptedBackend::start(at, |seen: &Seen| Answer::send(ok(&seen.path))).await;
    let admin = free_addr(at);
    let listeners: Vec<SocketAddr> = settings.iter().map(|_| free_addr(at)).collect();
    let yaml_listeners: Vec<String> = settings
        .iter()
        .zip(&listeners)
        .enumerate()
        .map(|(i, (extra, addr))| yaml::listener(&format!("l{i}"), *addr, &yaml::hcm(&format!("l{i}"), extra, VHOSTS)))
        .collect();
    let endpoints = [(backend.addr.ip().to_string(), backend.addr.port())];
    let config = format!(
        "{}{}",
        yaml::admin(admin),
        yaml::bootstrap(&yaml_listeners, &[yaml::cluster("echo", "STATIC", &endpoints, "")])
    );
    let proxy = ProxyProcess::start(&config, listeners[0]).await;
    for l in &listeners {
        assert!(eventually(Duration::from_secs(5), || async { TcpStream::connect(l).await.is_ok() }).await);
    }
    Stack { _proxy: proxy, backend, admin, listeners }
}

/// Status, body and `Location` of an HTTP/1.1 GET of `target` (as written).
async fn get(listen: SocketAddr, target: &str) -> (u16, String, Option<String>) {
    let mut c = TcpStream::connect(listen).await.unwrap();
    c.write_all(format!("GET {target} HTTP/1.1\r\nHost: n\r\n\r\n").as_bytes()).await.unwrap();
    let r = read_response(&mut c, &mut Vec::new(), "GET").await;
    (r.status, String::from_utf8_lossy(&r.body).into_owned(), r.header("location").map(str::to_string))
}

/// The same over HTTP/2 (h2c with prior knowledge).
async fn get_h2(listen: SocketAddr, target: &str) -> (u16, String) {
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(listen).await.unwrap());
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://n{target}")).body(Empty::<Bytes>::new()).unwrap();
    assert_eq!(req.uri().path(), target.split('?').next().unwrap(), "the client must send the path as written");
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn upstream_paths(b: &ScriptedBackend) -> Vec<String> {
    b.requests().into_iter().map(|s| s.path).collect()
}

#[tokio::test]
async fn normalize_path_removes_dot_segments_before_routing_and_upstream() {
    let s = stack(1, &["          normalize_path: true", ""]).await;
    let (on, off) = (s.listeners[0], s.listeners[1]);
    for (target, routed_as) in [
        ("/a/../b", "/b"),
        ("/a/./../b", "/b"),
        ("/../../b", "/b"),
        ("/a/%2e%2E/b", "/b"),
        ("/%62", "/b"),
        ("/a\\..\\b", "/b"),
        // Dot segments with parameters (Envoy's CVE-2026-73551 fix): a
        // servlet container would resolve `..;` past the route too.
        ("/x/..;jsessionid=1/b", "/b"),
        ("/.;p/b", "/b"),
        // The query is not the path's: left as it came.
        ("/a/../b?q=/../x%2F//", "/b?q=/../x%2F//"),
    ] {
        assert_eq!(get(on, target).await, (200, routed_as.to_string(), None), "{target}");
        assert!(upstream_paths(&s.backend).iter().any(|p| p == routed_as), "{target}");
    }
    // A NUL, escaped, cannot be normalized: 400 (no body), counted.
    assert_eq!(get(on, "/a/%00/../b").await, (400, String::new(), None));
    assert_eq!(stat(s.admin, "http.l0.downstream_rq_failed_path_normalization").await, 1);
    // Envoy's default: the path is left alone (and routes nowhere here).
    assert_eq!(get(off, "/a/../b").await, (403, "unmatched".to_string(), None));
    assert_eq!(get(off, "/%62").await, (403, "unmatched".to_string(), None));
    // HTTP/2 requests are normalized the same way.
    assert_eq!(get_h2(on, "/a/../b?q=..").await, (200, "/b?q=..".to_string()));
    assert_eq!(get_h2(off, "/a/../b").await, (403, "unmatched".to_string()));
}

#[tokio::test]
async fn merge_slashes_collapses_runs_of_slashes() {
    let s = stack(2, &["          merge_slashes: true", "          normalize_path: true"]).await;
    let (merge, normalize_only) = (s.listeners[0], s.listeners[1]);
    for (target, routed_as) in [("//b", "/b"), ("/x///y", "/x/y"), ("//x//y?q=//", "/x/y?q=//")] {
        assert_eq!(get(merge, target).await, (200, routed_as.to_string(), None), "{target}");
        assert!(upstream_paths(&s.backend).iter().any(|p| p == routed_as), "{target}");
    }
    assert_eq!(get_h2(merge, "/x//y").await, (200, "/x/y".to_string()));
    // normalize_path alone keeps runs of slashes, as Envoy.
    assert_eq!(get(normalize_only, "/x//y").await, (403, "unmatched".to_string(), None));
}

#[tokio::test]
async fn escaped_slashes_are_kept_rejected_redirected_or_unescaped() {
    let s = stack(
        3,
        &[
            "",
            "          path_with_escaped_slashes_action: REJECT_REQUEST",
            "          path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT\n          normalize_path: true",
            "          path_with_escaped_slashes_action: unescape_and_forward",
        ],
    )
    .await;
    let [keep, reject, redirect, forward] = s.listeners[..] else { unreachable!() };

    // KEEP_UNCHANGED (the default): routed and forwarded as it came.
    assert_eq!(get(keep, "/x%2Fy").await, (200, "/x%2Fy".to_string(), None));
    assert_eq!(upstream_paths(&s.backend), ["/x%2Fy"]);

    // REJECT_REQUEST: 400, whatever the case of the hex digits; a query may carry them.
    for target in ["/x%2Fy", "/x%2fy", "/x%5Cy", "/x%5cy"] {
        assert_eq!(get(reject, target).await, (400, String::new(), None), "{target}");
    }
    assert_eq!(get(reject, "/b?q=%2F").await, (200, "/b?q=%2F".to_string(), None));
    assert_eq!(stat(s.admin, "http.l1.downstream_rq_failed_path_normalization").await, 4);

    // UNESCAPE_AND_REDIRECT: 307 to the unescaped (here also normalized)
    // path with its query, and nothing upstream.
    let before = s.backend.requests().len();
    assert_eq!(get(redirect, "/x%2Fy?q=%2F").await, (307, String::new(), Some("/x/y?q=%2F".to_string())));
    assert_eq!(get(redirect, "/a%2F..%5Cb").await, (307, String::new(), Some("/b".to_string())));
    assert_eq!(s.backend.requests().len(), before, "a redirected request reached the upstream");
    assert_eq!(stat(s.admin, "http.l2.downstream_rq_redirected_with_normalized_path").await, 2);
    // Without escaped slashes there is nothing to redirect: normalized and served.
    assert_eq!(get(redirect, "/a/../b").await, (200, "/b".to_string(), None));

    // UNESCAPE_AND_FORWARD: routed and forwarded unescaped.
    assert_eq!(get(forward, "/x%2Fy").await, (200, "/x/y".to_string(), None));
    assert!(upstream_paths(&s.backend).iter().any(|p| p == "/x/y"));
    assert_eq!(get_h2(forward, "/x%2fy").await, (200, "/x/y".to_string()));
}
