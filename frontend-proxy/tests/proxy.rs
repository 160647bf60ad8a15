//! End-to-end behaviour of the proxy binary over real sockets: routing,
//! Envoy local replies, headers, TLS, h2c, WebSocket, connect-failure
//! retries. Addresses: 127.0.1.x.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::yaml;
use support::{client, free_addr, ip, Backend, Behaviour, ProxyProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn host_port(b: &Backend) -> (String, u16) {
    (b.addr.ip().to_string(), b.addr.port())
}

/// The seed stack's shape: `/films` and `/ratings` to two clusters.
const ROUTES: &str = r#"
            - name: api
              domains: ["api.example.com", "api.example.com:*"]
              routes:
              - match: { prefix: "/v1/films" }
                route: { cluster: films, prefix_rewrite: "/films", host_rewrite_literal: films.internal }
            - name: backend
              domains: ["*"]
              routes:
              - match: { prefix: "/films" }
                route: { cluster: films }
              - match: { prefix: "/ratings" }
                route: { cluster: ratings }
              - match: { path: "/direct" }
                direct_response: { status: 200, body: { inline_string: "direct reply" } }
              - match: { prefix: "/old" }
                redirect: { path_redirect: "/new", response_code: FOUND }
              - match: { prefix: "/slow" }
                route: { cluster: films, timeout: 0.3s }
              - match: { prefix: "/empty" }
                route: { cluster: empty }
              - match: { prefix: "/dead" }
                route: { cluster: dead }"#;

/// One route answered by the proxy itself.
const DIRECT: &str = r#"
            - name: direct
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                direct_response: { status: 200 }"#;

struct Stack {
    films: Backend,
    ratings: Backend,
    proxy: ProxyProcess,
    url: String,
}

async fn stack(host: u8, hcm_extra: &str) -> Stack {
    let films = Backend::start("films-1", SocketAddr::new(ip(1, host), 0)).await;
    // Reached through STRICT_DNS on `localhost`, which /etc/hosts maps to 127.0.0.1.
    let ratings = Backend::start("ratings-1", SocketAddr::new(ip(0, 1), 0)).await;
    let dead = free_addr(ip(1, host));
    let listen = free_addr(ip(1, host));
    let cfg = yaml::bootstrap(
        &[yaml::listener("main", listen, &yaml::hcm("ingress_http", hcm_extra, ROUTES))],
        &[
            yaml::cluster("films", "STATIC", &[host_port(&films)], ""),
            yaml::cluster(
                "ratings",
                "STRICT_DNS",
                &[("localhost".into(), ratings.addr.port())],
                "    dns_lookup_family: V4_ONLY",
            ),
            yaml::cluster("empty", "STATIC", &[], ""),
            yaml::cluster("dead", "STATIC", &[(dead.ip().to_string(), dead.port())], ""),
        ],
    );
    let proxy = ProxyProcess::start(&cfg, listen).await;
    Stack { films, ratings, proxy, url: format!("http://{listen}") }
}

#[tokio::test]
async fn routes_by_prefix_to_clusters_and_answers_locally() {
    let s = stack(1, "").await;
    let c = client();
    let r = c.get(format!("{}/films?name=Citizen%20Kane", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-served-by"], "films-1");
    assert_eq!(s.films.last_uri(), "/films?name=Citizen%20Kane");

    // STRICT_DNS through the system resolver (/etc/hosts: localhost).
    let r = c.get(format!("{}/ratings", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", s.proxy.log());
    assert_eq!(r.headers()["x-served-by"], "ratings-1");
    assert_eq!(s.ratings.hits(), 1);

    let r = c.get(format!("{}/direct", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "direct reply");

    let r = c.get(format!("{}/nothing-here", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["server"], "envoy");

    let no_redirect =
        reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirect.get(format!("{}/old/x?q=1", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert!(r.headers()["location"].to_str().unwrap().ends_with("/new?q=1"), "{:?}", r.headers());
}

#[tokio::test]
async fn virtual_host_by_authority_with_rewrites() {
    let s = stack(2, "").await;
    let c = client();
    let r = c.get(format!("{}/v1/films/7?x=1", s.url)).header("host", "api.example.com").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.films.last_uri(), "/films/7?x=1");
    assert_eq!(s.films.last_header("host").as_deref(), Some("films.internal"));
    // the api virtual host has no /ratings route: 404, not the default host
    let r = c.get(format!("{}/ratings", s.url)).header("host", "api.example.com").send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn envoy_local_replies_for_upstream_failures() {
    let s = stack(3, "").await;
    let c = client();
    let r = c.get(format!("{}/empty", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.text().await.unwrap(), "no healthy upstream");

    let r = c.get(format!("{}/dead", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.text().await.unwrap(),
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
    );

    let r = c.get(format!("{}/slow/delay/3000", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(r.text().await.unwrap(), "upstream request timeout");

    // The proxy still serves normally afterwards.
    let r = c.get(format!("{}/films", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn envoy_edge_headers() {
    let s = stack(4, "          server_name: frontend-test\n          use_remote_address: true").await;
    let c = client();
    let r = c
        .get(format!("{}/films", s.url))
        .header("x-envoy-internal", "forged")
        .header("x-forwarded-client-cert", "By=spiffe://forged;URI=spiffe://admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["server"], "frontend-test");
    let service_time: u64 = r.headers()["x-envoy-upstream-service-time"].to_str().unwrap().parse().unwrap();
    assert!(service_time < 10_000);
    let id = s.films.last_header("x-request-id").expect("request id generated");
    assert!(uuid_like(&id), "{id}");
    assert_eq!(s.films.last_header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(s.films.last_header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(s.films.last_header("x-envoy-expected-rq-timeout-ms").as_deref(), Some("15000"));
    assert_eq!(s.films.last_header("x-envoy-internal"), None, "edge proxy strips forged x-envoy-* headers");
    assert_eq!(s.films.last_header("x-forwarded-client-cert"), None, "forward_client_cert_details: SANITIZE");
}

#[tokio::test]
async fn keeps_client_request_id_when_not_an_edge() {
    let s = stack(5, "").await;
    let c = client();
    c.get(format!("{}/films", s.url))
        .header("x-request-id", "abc-123")
        .header("x-forwarded-client-cert", "By=spiffe://forged")
        .send()
        .await
        .unwrap();
    assert_eq!(s.films.last_header("x-request-id").as_deref(), Some("abc-123"));
    // SANITIZE (Envoy's default) whether or not the proxy is the edge.
    assert_eq!(s.films.last_header("x-forwarded-client-cert"), None);
    assert_eq!(s.films.last_header("x-forwarded-for"), None, "no XFF without use_remote_address");
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn serves_h2c_with_prior_knowledge() {
    let s = stack(6, "          codec_type: AUTO").await;
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let r = h2.get(format!("{}/films", s.url)).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-served-by"], "films-1");
}

/// A whole request shorter than the HTTP/2 client preface (24 bytes) is
/// answered at once on both engines: telling HTTP/1 from h2c must not wait
/// for bytes the client will never send (Pingora's engine waited for 24).
#[tokio::test]
async fn a_request_shorter_than_the_h2c_preface_is_answered() {
    let s = stack(14, "          codec_type: AUTO\n          http_protocol_options: { accept_http_10: true, default_host_for_http_10: t }").await;
    let addr = s.url.trim_start_matches("http://").to_string();
    for (request, status) in [(&b"GET /old HTTP/1.0\r\n\r\n"[..], 302), (b"GET /films HTTP/1.0\r\n\r\n", 200)] {
        assert!(request.len() < 24);
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        c.write_all(request).await.unwrap();
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), support::raw::read_response(&mut c, &mut buf, "GET"))
            .await
            .unwrap_or_else(|_| panic!("no answer to {:?}: {}", String::from_utf8_lossy(request), s.proxy.log()));
        assert_eq!(r.status, status, "{r:?}");
    }
    // A malformed short request gets its 400, not a stall.
    let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
    c.write_all(b"GET /\r\n\r\n").await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), support::raw::read_reply(&mut c))
        .await
        .expect("no answer to a short malformed request");
    assert_eq!(reply.status, 400, "{reply:?}");
    // h2c with prior knowledge still works on the same listener.
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let r = h2.get(format!("{}/films", s.url)).send().await.unwrap();
    assert_eq!((r.version(), r.status().as_u16()), (reqwest::Version::HTTP_2, 200));
}

#[tokio::test]
async fn tls_listener_serves_the_same_routes() {
    let films = Backend::start("films-tls", SocketAddr::new(ip(1, 7), 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let plain = free_addr(ip(1, 7));
    let secure = free_addr(ip(1, 7));
    let routes = r#"
            - name: backend
              domains: ["*"]
              routes:
              - match: { prefix: "/films" }
                route: { cluster: films }"#;
    let hcm = yaml::hcm("ingress", "", routes);
    let cfg = yaml::bootstrap(
        &[
            yaml::listener("plain", plain, &hcm),
            yaml::tls_listener("secure", secure, &hcm, cert_path.to_str().unwrap(), key_path.to_str().unwrap()),
        ],
        &[yaml::cluster("films", "STATIC", &[host_port(&films)], "")],
    );
    let proxy = ProxyProcess::start(&cfg, secure).await;
    let c = client();
    let r = c.get(format!("https://{secure}/films")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", proxy.log());
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "AUTO codec negotiates h2 over TLS");
    assert_eq!(r.headers()["x-served-by"], "films-tls");
    assert_eq!(films.last_header("x-forwarded-proto").as_deref(), Some("https"));
    let r = c.get(format!("http://{plain}/films")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h1 = reqwest::Client::builder().no_proxy().http1_only().danger_accept_invalid_certs(true).build().unwrap();
    let r = h1.get(format!("https://{secure}/films")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);
}

async fn upgrade(addr: SocketAddr, path: &str) -> (String, tokio::net::TcpStream) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    (String::from_utf8_lossy(&buf[..n]).into_owned(), s)
}

#[tokio::test]
async fn websocket_upgrades_pass_through_only_when_enabled() {
    let s = stack(8, "          upgrade_configs:\n          - upgrade_type: websocket").await;
    let listen: SocketAddr = s.url.trim_start_matches("http://").parse().unwrap();
    let (head, mut stream) = upgrade(listen, "/films/ws").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream.write_all(b"ping over the tunnel").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"ping over the tunnel");

    let off = stack(9, "").await;
    let listen: SocketAddr = off.url.trim_start_matches("http://").parse().unwrap();
    let (head, _) = upgrade(listen, "/films/ws").await;
    assert!(head.starts_with("HTTP/1.1 403"), "Envoy refuses upgrades without upgrade_configs: {head}");
}

#[tokio::test]
async fn a_killed_replica_costs_no_request() {
    let (backends, proxy, listen) = policy_stack(10, "ROUND_ROBIN", "").await;
    let c = client();
    let mut failures = Vec::new();
    for i in 0..300 {
        if i == 100 {
            backends[1].stop();
        }
        match c.get(format!("http://{listen}/films/{i}")).send().await {
            Ok(r) if r.status() == 200 => {}
            Ok(r) => failures.push(format!("{i}: {}", r.status())),
            Err(e) => failures.push(format!("{i}: {e}")),
        }
    }
    assert!(failures.is_empty(), "failed requests: {failures:?}\n{}", proxy.log());
    let hits: Vec<usize> = backends.iter().map(|b| b.hits()).collect();
    assert!(hits.iter().all(|h| *h > 20), "every replica served before the kill: {hits:?}");
    assert!(hits[0] + hits[2] > 220, "the survivors took over: {hits:?}");
}

#[tokio::test]
async fn round_robin_is_even_over_static_endpoints() {
    let (backends, _proxy, listen) = policy_stack(11, "ROUND_ROBIN", "").await;
    let c = client();
    for _ in 0..150 {
        assert_eq!(c.get(format!("http://{listen}/")).send().await.unwrap().status(), 200);
    }
    for b in &backends {
        assert!((45..=55).contains(&b.hits()), "{} got {}", b.name(), b.hits());
    }
}

#[tokio::test]
async fn sigterm_exits_promptly_and_refuses_new_connections() {
    let s = stack(12, "").await;
    let listen: SocketAddr = s.url.trim_start_matches("http://").parse().unwrap();
    let c = client();
    assert_eq!(c.get(format!("{}/films", s.url)).send().await.unwrap().status(), 200);
    let mut proxy = s.proxy;
    proxy.signal("TERM");
    let status = proxy.wait_exit(Duration::from_secs(5)).expect("exited within 5 s");
    assert!(status.success(), "{status}");
    assert!(tokio::net::TcpStream::connect(listen).await.is_err());
}

#[test]
fn a_taken_listen_address_fails_the_start_naming_the_listener() {
    let taken = std::net::TcpListener::bind(SocketAddr::new(ip(1, 30), 0)).unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = yaml::bootstrap(&[yaml::listener("busy_one", addr, &yaml::hcm("ingress_http", "", DIRECT))], &[]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new(support::proxy::binary()).arg("-c").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("listener \"busy_one\": cannot bind {addr}")), "{stderr}");
}

/// Envoy's `enable_reuse_port` (default true): each worker accepts on a
/// socket of its own (`SO_REUSEPORT`, which another such socket of the same
/// user can join, as with Envoy); `false` keeps one socket the workers
/// share, and the address stays exclusive. Both serve every connection.
/// Pingora's listener (`--http1-engine pingora`) always has one socket.
#[tokio::test]
async fn enable_reuse_port_decides_whether_workers_share_a_socket() {
    let pingora = support::pingora_engine();
    for (host, setting, joinable) in [(31, None, true), (32, Some("true"), true), (33, Some("false"), false)] {
        let joinable = joinable && !pingora;
        let listen = free_addr(ip(1, host));
        let mut listener = yaml::listener("main", listen, &yaml::hcm("ingress_http", "", DIRECT));
        if let Some(value) = setting {
            listener =
                listener.replace("    filter_chains:", &format!("    enable_reuse_port: {value}\n    filter_chains:"));
        }
        let _proxy = ProxyProcess::start(&yaml::bootstrap(&[listener], &[]), listen).await;
        // New connections, whichever worker takes them.
        for i in 0..20 {
            let c = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
            let status = c.get(format!("http://{listen}/{i}")).send().await.unwrap().status();
            assert_eq!(status, 200, "{setting:?}, request {i}");
        }
        let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        other.set_reuse_port(true).unwrap();
        let joined = other.bind(&listen.into());
        assert_eq!(joined.is_ok(), joinable, "{setting:?}: {joined:?}");
    }
}

/// Accepted connections start in delayed-ACK ("pingpong") mode, set on the
/// listening socket after listen() (HAProxy's default for HTTP): the kernel
/// does not acknowledge a request on its own, the response does. The mode
/// shows in /proc/net/tcp (the field after `ato`: `quick << 1 | pingpong`).
/// `/proc/net/tcp`'s entry for the socket `local` → `remote`: its state
/// (01 established, 03 SYN_RECV) and its ACK flags (bit 0: delayed-ACK,
/// "pingpong", mode).
fn tcp_entry(local: SocketAddr, remote: SocketAddr) -> Option<(u8, u32)> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!("{:08X}:{:04X}", u32::from_le_bytes(v4.ip().octets()), v4.port()),
        SocketAddr::V6(_) => unreachable!("IPv4 loopback"),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // A connection not yet established (a request sock) has a shorter line.
        (f.len() > 3 && f[1] == local && f[2] == remote)
            .then(|| (u8::from_str_radix(f[3], 16).unwrap(), f.get(14).and_then(|v| v.parse().ok()).unwrap_or(0)))
    })
}

#[tokio::test]
async fn accepted_connections_do_not_acknowledge_a_request_on_their_own() {
    if support::pingora_engine() {
        return; // Pingora's listener leaves the kernel's default.
    }
    let listen = free_addr(ip(1, 34));
    let cfg = yaml::bootstrap(&[yaml::listener("main", listen, &yaml::hcm("ingress_http", "", DIRECT))], &[]);
    let _proxy = ProxyProcess::start(&cfg, listen).await;
    // The kernel leaves delayed-ACK mode when its delayed-ACK timer fires
    // (40 ms on) before anything is sent: on a loaded machine the test may
    // look too late, so it tries a few connections; a listener that never
    // sets the mode fails every one.
    let mut seen = Vec::new();
    for _ in 0..5 {
        let mut client = tokio::net::TcpStream::connect(listen).await.unwrap();
        let me = client.local_addr().unwrap();
        // The first bytes of a request: the connection is accepted with them.
        client.write_all(b"G").await.unwrap();
        // Looked at as soon as it is established: a tight loop, as the
        // window is the 40 ms of the delayed-ACK timer.
        let started = std::time::Instant::now();
        let server_flags = loop {
            match tcp_entry(listen, me) {
                Some((1, flags)) => break flags,
                _ if started.elapsed() > Duration::from_secs(5) => panic!("no connection on the server side"),
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        };
        let (_, client_flags) = tcp_entry(me, listen).unwrap();
        assert!(client_flags & 1 == 0, "a socket connect() made starts in quick-ACK mode");
        if server_flags & 1 == 1 {
            return;
        }
        seen.push(server_flags);
    }
    panic!("the accepted socket acknowledges on its own (flags {seen:?})");
}

#[tokio::test]
async fn a_connection_is_accepted_with_its_first_bytes_and_none_is_lost() {
    if support::pingora_engine() {
        return; // Pingora's listener accepts at once.
    }
    let listen = free_addr(ip(1, 36));
    let cfg = yaml::bootstrap(&[yaml::listener("main", listen, &yaml::hcm("ingress_http", "", DIRECT))], &[]);
    let _proxy = ProxyProcess::start(&cfg, listen).await;

    // Connected from the client's side, but not established on the
    // server's until the request starts (TCP_DEFER_ACCEPT).
    let mut talker = tokio::net::TcpStream::connect(listen).await.unwrap();
    let talker_addr = talker.local_addr().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tcp_entry(listen, talker_addr).map(|(state, _)| state), Some(3), "accepted before its first byte");
    talker.write_all(b"GET /films HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), talker.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    // A client that sends nothing is still accepted once the period is
    // over, and served when it does speak.
    let mut silent = tokio::net::TcpStream::connect(listen).await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let established = || async { tcp_entry(listen, silent_addr).is_some_and(|(state, _)| state == 1) };
    assert!(support::eventually(Duration::from_secs(10), established).await, "a silent connection was never accepted");
    silent.write_all(b"GET /films HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), silent.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
}

#[tokio::test]
async fn backend_status_codes_pass_through() {
    let s = stack(13, "").await;
    s.films.set(Behaviour::Status(418));
    let r = client().get(format!("{}/films", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 418);
}

async fn policy_stack(host: u8, policy: &str, route_extra: &str) -> (Vec<Backend>, ProxyProcess, SocketAddr) {
    let backends = vec![
        Backend::start("a", SocketAddr::new(ip(1, host), 0)).await,
        Backend::start("b", SocketAddr::new(ip(1, host), 0)).await,
        Backend::start("c", SocketAddr::new(ip(1, host), 0)).await,
    ];
    let listen = free_addr(ip(1, host));
    let routes = format!(
        r#"
            - name: backend
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route:
                  cluster: films
{route_extra}"#
    );
    let cluster = yaml::cluster("films", "STATIC", &backends.iter().map(host_port).collect::<Vec<_>>(), "")
        .replace("lb_policy: ROUND_ROBIN", &format!("lb_policy: {policy}"));
    let cfg = yaml::bootstrap(&[yaml::listener("main", listen, &yaml::hcm("ingress", "", &routes))], &[cluster]);
    let proxy = ProxyProcess::start(&cfg, listen).await;
    (backends, proxy, listen)
}

#[tokio::test]
async fn consistent_hashing_pins_a_key_to_a_host() {
    for (i, policy) in ["RING_HASH", "MAGLEV"].iter().enumerate() {
        let hash = "                  hash_policy: [{ header: { header_name: x-user } }]";
        let (_backends, _proxy, listen) = policy_stack(20 + i as u8, policy, hash).await;
        let c = client();
        let mut by_user: std::collections::HashMap<String, std::collections::HashSet<String>> = Default::default();
        for round in 0..5 {
            for user in 0..20 {
                let r = c
                    .get(format!("http://{listen}/?r={round}"))
                    .header("x-user", format!("user-{user}"))
                    .send()
                    .await
                    .unwrap();
                let who = r.headers()["x-served-by"].to_str().unwrap().to_string();
                by_user.entry(format!("user-{user}")).or_default().insert(who);
            }
        }
        assert!(by_user.values().all(|hosts| hosts.len() == 1), "{policy}: a user moved between hosts: {by_user:?}");
        let used: std::collections::HashSet<_> = by_user.values().flatten().collect();
        assert!(used.len() >= 2, "{policy}: 20 users all hashed to one host");
    }
}

#[tokio::test]
async fn least_request_avoids_a_busy_host() {
    let (backends, _proxy, listen) = policy_stack(22, "LEAST_REQUEST", "").await;
    // Hold four slow requests on whichever hosts they land on, then see
    // where quick requests go: not to the hosts already busy.
    let slow: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                let c = reqwest::Client::builder().no_proxy().build().unwrap();
                c.get(format!("http://{listen}/delay/1500")).send().await.unwrap().headers()["x-served-by"]
                    .to_str()
                    .unwrap()
                    .to_string()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy: Vec<usize> = backends.iter().map(|b| b.hits()).collect();
    let c = client();
    let mut quick = std::collections::HashMap::new();
    for _ in 0..60 {
        let r = c.get(format!("http://{listen}/")).send().await.unwrap();
        *quick.entry(r.headers()["x-served-by"].to_str().unwrap().to_string()).or_insert(0usize) += 1;
    }
    for s in slow {
        s.await.unwrap();
    }
    // The least busy host (fewest slow requests) takes the most quick ones.
    let names = ["a", "b", "c"];
    let idlest = (0..3).min_by_key(|i| busy[*i]).unwrap();
    let busiest = (0..3).max_by_key(|i| busy[*i]).unwrap();
    let q = |i: usize| quick.get(names[i]).copied().unwrap_or(0);
    assert!(busy[busiest] > busy[idlest], "slow requests spread evenly: {busy:?}");
    assert!(q(idlest) > q(busiest), "busy {busy:?}, quick {quick:?}");
}

/// Reads a response head and checks it is a 200.
async fn ok_response(c: &mut tokio::net::TcpStream) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
}

/// Opens `n` connections to `listen`, each served one `request`, and keeps them.
async fn served_connections(listen: &str, request: &[u8], n: usize) -> Vec<tokio::net::TcpStream> {
    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = tokio::net::TcpStream::connect(listen).await.unwrap();
        c.write_all(request).await.unwrap();
        ok_response(&mut c).await;
        open.push(c);
    }
    open
}

/// The proxy's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// An idle keep-alive connection holds no I/O buffers: they go back to the
/// worker's free lists between requests (and while an upstream thinks), as
/// HAProxy's do. Before, each connection kept three 4 KiB buffers and grew
/// the proxy by 18 KiB; then 6.1 KiB, mostly the connection's task (4.6 KB);
/// since that task stopped holding some futures twice (2.8 KB), 4.1 KiB.
#[tokio::test]
async fn idle_keep_alive_connections_hold_no_buffers() {
    if support::pingora_engine() {
        return; // Pingora's sessions keep their own buffers.
    }
    let s = stack(35, "").await;
    let listen = s.url.trim_start_matches("http://").to_string();
    let request = b"GET /films HTTP/1.1\r\nHost: x\r\n\r\n";
    // Warm up: the worker's lists, the upstream pool, the allocator.
    let _warm = served_connections(&listen, request, 50).await;
    let before = rss_kib(s.proxy.pid());
    const IDLE: usize = 1000;
    let mut idle = served_connections(&listen, request, IDLE).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let per_connection = rss_kib(s.proxy.pid()).saturating_sub(before) as f64 / IDLE as f64;
    // Three 4 KiB buffers alone would be 12; the 4.6 KB task made it 6.1.
    assert!(per_connection < 5.5, "{per_connection:.1} KiB per idle connection");
    // They are all still open and served.
    for c in idle.iter_mut().step_by(100) {
        c.write_all(request).await.unwrap();
        ok_response(c).await;
    }
}

/// `headers_with_underscores_action`: REJECT_REQUEST answers 400 and closes
/// (HTTP/1 as Envoy's codec does, over h2 too), DROP_HEADER forwards the
/// request without those headers, ALLOW (the default) forwards them.
#[tokio::test]
async fn headers_with_underscores_are_rejected_dropped_or_allowed_as_configured() {
    let backend = Backend::start("underscores", SocketAddr::new(ip(1, 40), 0)).await;
    let (reject, drop, allow) = (free_addr(ip(1, 40)), free_addr(ip(1, 40)), free_addr(ip(1, 40)));
    let admin = free_addr(ip(1, 40));
    let routes = yaml::routes(&[("/", "cluster: backend")]);
    let hcm = |prefix: &str, action: &str| {
        let extra = format!("          common_http_protocol_options: {{ headers_with_underscores_action: {action} }}");
        yaml::hcm(prefix, &extra, &routes)
    };
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[
            yaml::listener("reject", reject, &hcm("reject", "REJECT_REQUEST")),
            yaml::listener("drop", drop, &hcm("drop", "DROP_HEADER")),
            yaml::listener("allow", allow, &hcm("allow", "ALLOW")),
        ],
        &[yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], "")],
    );
    let proxy = ProxyProcess::start(&cfg, allow).await;

    let mut s = tokio::net::TcpStream::connect(reject).await.unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nhost: x\r\nx_user: admin\r\n\r\n").await.unwrap();
    let reply = support::raw::read_reply(&mut s).await;
    assert_eq!((reply.status, reply.closed), (400, true), "{reply:?}\n{}", proxy.log());
    assert_eq!(backend.hits(), 0, "a rejected request reached the upstream");
    // Without an underscore, the same listener serves.
    let (status, _) = support::send(client().get(format!("http://{reject}/ok")).header("x-user", "a")).await;
    assert_eq!(status, 200);

    let r = client().get(format!("http://{drop}/b")).header("x_user", "admin").header("x-kept", "1").send().await;
    assert_eq!(r.unwrap().status(), 200);
    assert_eq!(backend.last_header("x_user"), None, "DROP_HEADER forwarded the header");
    assert_eq!(backend.last_header("x-kept").as_deref(), Some("1"));

    let r = client().get(format!("http://{allow}/c")).header("x_user", "admin").send().await;
    assert_eq!(r.unwrap().status(), 200);
    assert_eq!(backend.last_header("x_user").as_deref(), Some("admin"));

    // Counted as Envoy's codecs count them (HTTP/1 here).
    let engine = if support::pingora_engine() { "pingora" } else { "native" };
    assert_eq!(support::stat(admin, "http1.requests_rejected_with_underscores_in_headers").await, 1, "{engine}");
    assert_eq!(support::stat(admin, "http1.dropped_headers_with_underscores").await, 1, "{engine}");
    assert_eq!(support::stat(admin, "http.reject.downstream_cx_protocol_error").await, 1, "{engine}");
}

/// `internal_only_headers` are removed from every request: at the edge
/// every client is external, whatever it claims (`x-envoy-internal: true`
/// from a client is not trusted, with or without `use_remote_address`).
#[tokio::test]
async fn internal_only_headers_are_removed_from_external_requests() {
    let backend = Backend::start("internal", SocketAddr::new(ip(1, 41), 0)).await;
    let (edge, inner) = (free_addr(ip(1, 41)), free_addr(ip(1, 41)));
    let routes = yaml::routes(&[("/", "cluster: backend")]);
    let hcm = |prefix: &str, extra: &str| {
        yaml::hcm(prefix, extra, &routes).replace(
            "            name: local_route",
            "            name: local_route\n            internal_only_headers: [X-Secret]",
        )
    };
    let cfg = yaml::bootstrap(
        &[
            yaml::listener("edge", edge, &hcm("edge", "          use_remote_address: true")),
            yaml::listener("inner", inner, &hcm("inner", "")),
        ],
        &[yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], "")],
    );
    let _proxy = ProxyProcess::start(&cfg, inner).await;
    let get = |addr: SocketAddr, internal: bool| {
        let req = client().get(format!("http://{addr}/")).header("x-secret", "s").header("x-other", "o");
        if internal {
            req.header("x-envoy-internal", "true")
        } else {
            req
        }
    };

    assert_eq!(support::send(get(inner, false)).await.0, 200);
    assert_eq!(backend.last_header("x-secret"), None, "an external request kept an internal-only header");
    assert_eq!(backend.last_header("x-other").as_deref(), Some("o"));
    // A client cannot claim to be internal, on either listener.
    for addr in [inner, edge] {
        assert_eq!(support::send(get(addr, true)).await.0, 200);
        assert_eq!(backend.last_header("x-secret"), None, "a client claiming to be internal kept it");
        assert_eq!(backend.last_header("x-other").as_deref(), Some("o"));
    }
}

/// `max_requests_per_connection` (with `codec_type: HTTP1`): the response
/// to the last request says `connection: close` and the connection ends.
#[tokio::test]
async fn a_connection_ends_after_max_requests_per_connection() {
    let backend = Backend::start("max-requests", SocketAddr::new(ip(1, 42), 0)).await;
    let addr = free_addr(ip(1, 42));
    let extra =
        "          codec_type: HTTP1\n          common_http_protocol_options: { max_requests_per_connection: 2 }";
    let cfg = yaml::bootstrap(
        &[yaml::listener("web", addr, &yaml::hcm("web", extra, &yaml::routes(&[("/", "cluster: backend")])))],
        &[yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], "")],
    );
    let proxy = ProxyProcess::start(&cfg, addr).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(b"GET /1 HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let first = support::raw::read_response(&mut s, &mut buf, "GET").await;
    assert_eq!(first.status, 200, "{}", proxy.log());
    assert_ne!(first.header("connection"), Some("close"), "closed before the limit");
    s.write_all(b"GET /2 HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let second = support::raw::read_response(&mut s, &mut buf, "GET").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("connection"), Some("close"), "{second:?}");
    assert!(support::raw::closes_within(&mut s, Duration::from_secs(2)).await, "the connection stayed open");
    assert_eq!(backend.hits(), 2);
}

/// `local_reply_config`: mappers chosen by access-log filters rewrite the
/// proxy's own replies (direct responses included, as in Envoy), then the
/// body format formats them; upstream responses are left alone.
#[tokio::test]
async fn local_reply_config_rewrites_the_proxys_own_replies() {
    let hcm = r#"          local_reply_config:
            mappers:
            - filter:
                status_code_filter: { comparison: { op: EQ, value: { default_value: 503, runtime_key: k } } }
              status_code: 502
              body: { inline_string: "backend unavailable" }
              headers_to_add:
              - header: { key: x-mapped, value: "yes" }
            - filter: { header_filter: { header: { name: x-plain, present_match: true } } }
              body_format_override:
                text_format: "plain %LOCAL_REPLY_BODY% %RESPONSE_CODE%"
                content_type: "text/html"
            body_format:
              json_format:
                code: "%RESPONSE_CODE%"
                message: "%LOCAL_REPLY_BODY%"
                path: "%REQ(:PATH)%""#;
    let s = stack(43, hcm).await;
    let c = client();
    let json = |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));

    // The first mapper: 503 no healthy upstream becomes 502 with its body and header.
    let r = c.get(format!("{}/empty", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["x-mapped"], "yes");
    assert_eq!(r.headers()["content-type"], "application/json");
    let body = json(&r.text().await.unwrap());
    assert_eq!(body, serde_json::json!({"code": 502, "message": "backend unavailable", "path": "/empty"}));

    // No mapper: the body format alone, over Envoy's (empty) 404 body.
    let r = c.get(format!("{}/nothing", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().get("x-mapped").is_none());
    assert_eq!(json(&r.text().await.unwrap()), serde_json::json!({"code": 404, "message": "", "path": "/nothing"}));

    // The second mapper's own format and content type.
    let r = c.get(format!("{}/nothing", s.url)).header("x-plain", "1").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "text/html");
    assert_eq!(r.text().await.unwrap(), "plain  404");

    // A direct response is a local reply too.
    let r = c.get(format!("{}/direct", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = json(&r.text().await.unwrap());
    assert_eq!(body, serde_json::json!({"code": 200, "message": "direct reply", "path": "/direct"}));

    // What the upstream answers is not touched.
    let r = c.get(format!("{}/films/1", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-served-by"], "films-1");
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.text().await.unwrap(), "films-1");
    let _ = (&s.films, &s.ratings, &s.proxy);
}

#[test]
fn local_reply_config_that_cannot_be_honoured_is_an_error_naming_its_path() {
    let hcm = r#"          local_reply_config:
            mappers:
            - filter: { traceable_filter: {} }
              status_code: 503
            - status_code: 700
              body: { inline_string: "x" }
            body_format:
              text_format: "%NOT_AN_OPERATOR%""#;
    let listen: SocketAddr = "127.0.1.44:1".parse().unwrap();
    let cfg = yaml::bootstrap(
        &[yaml::listener("main", listen, &yaml::hcm("ingress_http", hcm, DIRECT))],
        &[yaml::cluster("films", "STATIC", &[], "")],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new(support::proxy::binary())
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let at = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.local_reply_config";
    for expected in [
        format!("{at}.mappers[0].filter.traceable_filter: traceable_filter is not supported"),
        format!("{at}.mappers[1].filter: required field is missing"),
        format!("{at}.mappers[1].status_code: 700 is not a status from 200 to 599"),
        format!("{at}.body_format.text_format: unknown command operator %NOT_AN_OPERATOR%"),
    ] {
        assert!(stderr.contains(&expected), "missing {expected:?} in:\n{stderr}");
    }
}

/// The router's `suppress_envoy_headers`: no `x-envoy-*` field of the
/// router's own on the upstream request, the response, or a circuit
/// breaker's 503; an upstream's own `x-envoy-upstream-service-time`
/// passes as it is.
#[tokio::test]
async fn suppress_envoy_headers_adds_no_router_fields() {
    let films = Backend::start("films-1", SocketAddr::new(ip(1, 50), 0)).await;
    let listen = free_addr(ip(1, 50));
    let routes = r#"
            - name: backend
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: films, timeout: 5s }"#;
    let hcm = format!("{}\n              suppress_envoy_headers: true", yaml::hcm("ingress_http", "", routes));
    let cb = "    circuit_breakers:\n      thresholds:\n      - max_requests: 1";
    let cfg = yaml::bootstrap(
        &[yaml::listener("main", listen, &hcm)],
        &[yaml::cluster("films", "STATIC", &[host_port(&films)], cb)],
    );
    let _proxy = ProxyProcess::start(&cfg, listen).await;
    let c = client();

    // Request side: no expected timeout, and the client's own is not forwarded.
    let r =
        c.get(format!("http://{listen}/films")).header("x-envoy-expected-rq-timeout-ms", "123").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(films.last_header("x-envoy-expected-rq-timeout-ms"), None);
    assert_eq!(films.last_header("x-forwarded-proto").as_deref(), Some("http"), "the connection manager's fields stay");
    // Response side: no service time of the proxy's.
    assert_eq!(r.headers().get("x-envoy-upstream-service-time"), None);

    // An upstream's own service time passes as it is, alone.
    let r = c
        .get(format!("http://{listen}/films"))
        .header("x-echo-x-envoy-upstream-service-time", "4242")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let times: Vec<_> = r.headers().get_all("x-envoy-upstream-service-time").iter().collect();
    assert_eq!(times, ["4242"]);

    // A circuit breaker's 503 says nothing of `x-envoy-overloaded`. The
    // slow request takes the breaker's one slot; the request before gives
    // its slot back just after its response is written, so on a loaded
    // machine the slow one may come too early and be refused: it is sent
    // again until it reaches the backend.
    let slow = loop {
        let hits = films.hits();
        let slow = tokio::spawn(async move {
            let c = reqwest::Client::builder().no_proxy().build().unwrap();
            c.get(format!("http://{listen}/delay/1000")).send().await.map(|r| r.status().as_u16())
        });
        assert!(support::eventually(support::LIMIT, || async { films.hits() > hits || slow.is_finished() }).await);
        if films.hits() > hits {
            break slow;
        }
        assert_eq!(slow.await.unwrap().unwrap(), 503, "refused only while the slot was taken");
    };
    let r = c.get(format!("http://{listen}/films")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers().get("x-envoy-overloaded"), None);
    assert_eq!(slow.await.unwrap().unwrap(), 200);
}
