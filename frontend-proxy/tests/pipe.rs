//! Listeners on Envoy's `pipe` addresses (Unix domain sockets): HTTP on
//! both engines and the TCP proxy through a socket file or an abstract
//! name, the file's mode, a stale file replaced at start and removed at
//! exit, the listener's stats named after its path, and what the access
//! log and `x-forwarded-for` make of a client without an address (Envoy's
//! way: no address appended, the client named after the listener's socket).

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use support::{eventually, free_addr, ip, stat, yaml, Backend, EchoBackend, ProxyProcess, LIMIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A listener on `pipe`; `extra` is the pipe's other fields (`, mode: 0600`).
fn pipe_listener(name: &str, path: &str, extra: &str, filters: &str) -> String {
    format!(
        r#"
  - name: {name}
    address:
      pipe: {{ path: "{path}"{extra} }}
    filter_chains:
    - filters:{filters}"#
    )
}

fn access_log(path: &Path) -> String {
    format!(
        r#"          use_remote_address: true
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {}
              log_format:
                text_format_source:
                  inline_string: "remote=%DOWNSTREAM_REMOTE_ADDRESS% local=%DOWNSTREAM_LOCAL_ADDRESS% code=%RESPONSE_CODE%\n""#,
        path.display()
    )
}

/// One HTTP/1.1 request on a fresh connection to the socket at `path`;
/// the whole response.
async fn get(path: &Path, target: &str) -> String {
    let mut s = tokio::net::UnixStream::connect(path).await.expect("connect to the pipe listener");
    let req = format!("GET {target} HTTP/1.1\r\nhost: films\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut out)).await.expect("response in time").unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn http_crosses_a_pipe_listener_and_its_file_is_ours() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("front.sock");
    // What a previous run left: replaced, as Envoy unlinks the path before bind.
    std::fs::write(&sock, b"stale").unwrap();
    let log = dir.path().join("access.log");
    let films = Backend::start("films-1", SocketAddr::new(ip(71, 1), 0)).await;
    let admin = free_addr(ip(71, 2));
    let routes = yaml::routes(&[("/", "cluster: films")]);
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[pipe_listener(
            "uds",
            &sock.display().to_string(),
            ", mode: 0640",
            &yaml::hcm("uds_http", &access_log(&log), &routes),
        )],
        &[yaml::cluster("films", "STATIC", &[(films.addr.ip().to_string(), films.addr.port())], "")],
    );
    let mut proxy = ProxyProcess::live(&cfg, admin).await;

    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket(), "the stale file was not replaced by the socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o640, "pipe.mode (octal 0640) applied to the socket file");

    let response = get(&sock, "/films").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}\n{}", proxy.log());
    assert!(response.contains("films-1"), "{response}");
    assert_eq!(films.hits(), 1);
    // Envoy appends no address to x-forwarded-for for a client that has none.
    assert_eq!(films.last_header("x-forwarded-for"), None);
    assert_eq!(films.last_header("x-forwarded-proto").as_deref(), Some("http"));
    let response = get(&sock, "/films").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // Stats under `listener.<path>.`, as Envoy names a pipe listener.
    let name = format!("listener.{}.downstream_cx_total", sock.display()).replace(':', "_");
    assert!(eventually(LIMIT, || async { stat(admin, &name).await == 2 }).await, "{name} is not 2");
    assert_eq!(stat(admin, "http.uds_http.downstream_rq_2xx").await, 2);

    // The client is named after the listener's socket, as Envoy does.
    let line = format!("remote={0} local={0} code=200", sock.display());
    let logged = eventually(LIMIT, || async {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().filter(|l| *l == line).count() == 2)
    })
    .await;
    assert!(logged, "{line:?} twice in:\n{}", std::fs::read_to_string(&log).unwrap_or_default());

    // The socket file goes when the proxy does.
    proxy.signal("TERM");
    let status = proxy.wait_exit(LIMIT).expect("the proxy exits on SIGTERM");
    assert!(status.success(), "{status}:\n{}", proxy.log());
    assert!(!sock.exists(), "the socket file outlived the proxy");
}

#[tokio::test]
async fn tcp_proxy_serves_an_abstract_pipe() {
    use std::os::linux::net::SocketAddrExt;
    let echo = EchoBackend::start(SocketAddr::new(ip(71, 3), 0), None).await;
    let admin = free_addr(ip(71, 4));
    let name = format!("frontend-proxy-test-{}", std::process::id());
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[pipe_listener("abstract", &format!("@{name}"), "", &yaml::tcp_proxy("uds_tcp", "cluster: echo", ""))],
        &[yaml::cluster("echo", "STATIC", &[(echo.addr.ip().to_string(), echo.addr.port())], "")],
    );
    let proxy = ProxyProcess::live(&cfg, admin).await;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let std = std::os::unix::net::UnixStream::connect_addr(&addr).expect("connect to the abstract socket");
    std.set_nonblocking(true).unwrap();
    let mut s = tokio::net::UnixStream::from_std(std).unwrap();
    s.write_all(b"hello over a pipe").await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut out)).await.expect("echo in time").unwrap();
    assert_eq!(out, [&b"hello over a pipe"[..], support::tcp::EOF_TRAILER].concat(), "{}", proxy.log());
    assert_eq!(stat(admin, "tcp.uds_tcp.downstream_cx_total").await, 1);
    assert_eq!(stat(admin, &format!("listener.@{name}.downstream_cx_total")).await, 1);
}

#[tokio::test]
async fn a_pipe_listener_and_an_ip_listener_serve_side_by_side() {
    // Pingora's engine: the IP listener is Pingora's listener service's and
    // the pipe ours; each must find its own listener entry.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("side.sock");
    let films = Backend::start("films-2", SocketAddr::new(ip(71, 5), 0)).await;
    let admin = free_addr(ip(71, 6));
    let listen = free_addr(ip(71, 6));
    let routes = yaml::routes(&[("/", "cluster: films")]);
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[
            yaml::listener("tcp", listen, &yaml::hcm("tcp_http", "", &routes)),
            pipe_listener("uds", &sock.display().to_string(), "", &yaml::hcm("uds_http", "", &routes)),
        ],
        &[yaml::cluster("films", "STATIC", &[(films.addr.ip().to_string(), films.addr.port())], "")],
    );
    let proxy = ProxyProcess::live(&cfg, admin).await;
    let response = get(&sock, "/a").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}\n{}", proxy.log());
    let (status, _) = support::send(support::client().get(format!("http://{listen}/b"))).await;
    assert_eq!(status, 200);
    assert_eq!(stat(admin, "http.uds_http.downstream_rq_2xx").await, 1);
    assert_eq!(stat(admin, "http.tcp_http.downstream_rq_2xx").await, 1);
}

#[test]
fn a_pipe_address_loads_as_envoy_reads_it() {
    use frontend_proxy::config::model::Address;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus/unix-socket.yaml");
    let b = frontend_proxy::config::load(&path).unwrap().bootstrap;
    let Address::Pipe(pipe) = &b.listeners[0].address else { panic!("{:?}", b.listeners[0].address) };
    // `mode: 0600` is octal, as Envoy's YAML reader takes it.
    assert_eq!((pipe.path.as_str(), pipe.mode, pipe.is_abstract()), ("/var/run/envoy.sock", 0o600, false));
    assert_eq!(b.listeners[0].address.to_string(), "/var/run/envoy.sock");
}

#[tokio::test]
async fn h2c_crosses_a_pipe_listener() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("h2.sock");
    let films = Backend::start("films-3", SocketAddr::new(ip(71, 7), 0)).await;
    let admin = free_addr(ip(71, 8));
    let routes = yaml::routes(&[("/", "cluster: films")]);
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[pipe_listener("uds", &sock.display().to_string(), "", &yaml::hcm("uds_h2", "", &routes))],
        &[yaml::cluster("films", "STATIC", &[(films.addr.ip().to_string(), films.addr.port())], "")],
    );
    let proxy = ProxyProcess::live(&cfg, admin).await;
    let unix = tokio::net::UnixStream::connect(&sock).await.unwrap();
    // HTTP/2 with prior knowledge (h2c), as the connection manager's AUTO codec takes it.
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(unix)).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("http://films/h2").body(Empty::<bytes::Bytes>::new()).unwrap();
    let resp = tokio::time::timeout(LIMIT, send.send_request(req)).await.expect("h2 response in time").unwrap();
    assert_eq!(resp.status(), 200, "{}", proxy.log());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("films-3"), "{body:?}");
    assert_eq!(stat(admin, "http.uds_h2.downstream_rq_2xx").await, 1);
}

// ---- Pipes as cluster endpoints (STATIC clusters connect over Unix sockets) ----

/// A STATIC round-robin cluster over `pipes` (paths, `@name` abstract) then
/// `ips`; `extra`: more fields of the cluster.
fn pipe_cluster(name: &str, pipes: &[&str], ips: &[SocketAddr], extra: &str) -> String {
    let mut eps = String::new();
    for p in pipes {
        eps += &format!("\n        - endpoint: {{ address: {{ pipe: {{ path: \"{p}\" }} }} }}");
    }
    for a in ips {
        eps += &format!(
            "\n        - endpoint: {{ address: {{ socket_address: {{ address: \"{}\", port_value: {} }} }} }}",
            a.ip(),
            a.port()
        );
    }
    format!(
        "\n  - name: {name}\n    connect_timeout: 0.25s\n    type: STATIC\n    lb_policy: ROUND_ROBIN\n    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:{eps}\n{extra}"
    )
}

async fn admin_text(admin: SocketAddr, path: &str) -> String {
    support::client().get(format!("http://{admin}{path}")).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn requests_reach_pipe_hosts_in_turn_with_an_ip_host_over_kept_connections() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("films.sock").display().to_string();
    // Pingora's engine takes socket files only (see the test below).
    let abstract_name = if support::pingora_engine() {
        dir.path().join("second.sock").display().to_string()
    } else {
        format!("@frontend-proxy-upstream-{}", std::process::id())
    };
    let on_file = Backend::start_pipe("films-file", &file);
    let on_abstract = Backend::start_pipe("films-abstract", &abstract_name);
    let on_ip = Backend::start("films-ip", SocketAddr::new(ip(71, 9), 0)).await;
    let log = dir.path().join("access.log");
    let admin = free_addr(ip(71, 10));
    let listen = free_addr(ip(71, 10));
    let logging = format!(
        r#"          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {}
              log_format:
                text_format_source:
                  inline_string: "up=%UPSTREAM_HOST%\n""#,
        log.display()
    );
    let routes = yaml::routes(&[("/", "cluster: films")]);
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[yaml::listener("main", listen, &yaml::hcm("main", &logging, &routes))],
        &[pipe_cluster("films", &[&file, &abstract_name], &[on_ip.addr], "")],
    );
    let proxy = ProxyProcess::live(&cfg, admin).await;
    let client = support::client();
    for _ in 0..6 {
        let (status, body) = support::send(client.get(format!("http://{listen}/films"))).await;
        assert_eq!(status, 200, "{body}\n{}", proxy.log());
    }
    assert_eq!((on_file.hits(), on_abstract.hits(), on_ip.hits()), (2, 2, 2), "round robin over all three hosts");
    // One connection per host, kept and reused (the client's one connection
    // stays on one worker, whose pool holds them).
    assert_eq!(stat(admin, "cluster.films.upstream_cx_total").await, 3, "{}", proxy.log());
    assert_eq!(stat(admin, "cluster.films.upstream_rq_total").await, 6);

    // /clusters names a pipe host by its path, as Envoy does.
    let text = admin_text(admin, "/clusters").await;
    for host in [&file, &abstract_name, &on_ip.addr.to_string()] {
        assert!(text.contains(&format!("films::{host}::health_flags::healthy\n")), "{host} in:\n{text}");
        assert!(text.contains(&format!("films::{host}::rq_total::2\n")), "{host} in:\n{text}");
    }
    let json: serde_json::Value = serde_json::from_str(&admin_text(admin, "/clusters?format=json").await).unwrap();
    let hosts = json["cluster_statuses"][0]["host_statuses"].as_array().unwrap().clone();
    let addresses: Vec<&serde_json::Value> = hosts.iter().map(|h| &h["address"]).collect();
    assert!(addresses.contains(&&serde_json::json!({ "pipe": { "path": file } })), "{addresses:?}");
    assert!(addresses.contains(&&serde_json::json!({ "pipe": { "path": abstract_name } })), "{addresses:?}");

    // %UPSTREAM_HOST% is the pipe's path.
    let logged =
        eventually(LIMIT, || async { std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 6) }).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged, "{text}");
    for host in [&file, &abstract_name, &on_ip.addr.to_string()] {
        assert_eq!(text.lines().filter(|l| *l == format!("up={host}")).count(), 2, "{host} in:\n{text}");
    }
}

#[tokio::test]
async fn a_dead_pipe_is_a_connect_failure_and_a_retry_reaches_a_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("gone.sock").display().to_string();
    let live = dir.path().join("live.sock").display().to_string();
    let backend = Backend::start_pipe("films-live", &live);
    let admin = free_addr(ip(71, 11));
    let listen = free_addr(ip(71, 11));
    let routes = yaml::routes(&[
        ("/retry", "cluster: mixed, retry_policy: { retry_on: connect-failure, num_retries: 1 }"),
        ("/", "cluster: dead"),
    ]);
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[yaml::listener("main", listen, &yaml::hcm("main", "", &routes))],
        &[pipe_cluster("dead", &[&dead], &[], ""), pipe_cluster("mixed", &[&dead, &live], &[], "")],
    );
    let proxy = ProxyProcess::live(&cfg, admin).await;
    let (status, body) = support::send(support::client().get(format!("http://{listen}/films"))).await;
    assert_eq!(status, 503, "{}", proxy.log());
    assert_eq!(body, "upstream connect error or disconnect/reset before headers. reset reason: connection failure");
    assert_eq!(stat(admin, "cluster.dead.upstream_cx_connect_fail").await, 1);
    assert_eq!(stat(admin, "cluster.dead.upstream_rq_retry").await, 0);

    for _ in 0..4 {
        let (status, body) = support::send(support::client().get(format!("http://{listen}/retry"))).await;
        assert_eq!(status, 200, "{body}\n{}", proxy.log());
        assert_eq!(body, "films-live");
    }
    assert_eq!(backend.hits(), 4);
    let failed = stat(admin, "cluster.mixed.upstream_cx_connect_fail").await;
    assert!(failed >= 1, "the dead pipe was never picked");
    assert_eq!(stat(admin, "cluster.mixed.upstream_rq_retry").await, failed, "each connect failure retried once");
}

/// `cluster`'s `health_flags` for `host` in /clusters.
async fn health_flags(admin: SocketAddr, cluster: &str, host: &str) -> String {
    let text = admin_text(admin, "/clusters").await;
    let prefix = format!("{cluster}::{host}::health_flags::");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {prefix} in:\n{text}")).to_string()
}

#[tokio::test]
async fn health_checks_mark_pipe_hosts_unhealthy_and_healthy_again() {
    let dir = tempfile::tempdir().unwrap();
    let http_sock = dir.path().join("http.sock").display().to_string();
    let tcp_sock = dir.path().join("tcp.sock").display().to_string();
    let http_backend = Backend::start_pipe("hc-http", &http_sock);
    let tcp_backend = Backend::start_pipe("hc-tcp", &tcp_sock);
    let admin = free_addr(ip(71, 12));
    let listen = free_addr(ip(71, 12));
    let hc = |check: &str| {
        format!(
            "    health_checks:\n    - timeout: 0.5s\n      interval: 0.1s\n      no_traffic_interval: 0.1s\n      unhealthy_threshold: 1\n      healthy_threshold: 1\n      {check}\n    common_lb_config: {{ healthy_panic_threshold: {{ value: 0 }} }}"
        )
    };
    let routes = yaml::routes(&[("/tcp", "cluster: tcphc"), ("/", "cluster: httphc")]);
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[yaml::listener("main", listen, &yaml::hcm("main", "", &routes))],
        &[
            pipe_cluster("httphc", &[&http_sock], &[], &hc("http_health_check: { path: /healthz }")),
            pipe_cluster("tcphc", &[&tcp_sock], &[], &hc("tcp_health_check: {}")),
        ],
    );
    let proxy = ProxyProcess::live(&cfg, admin).await;
    for (cluster, sock) in [("httphc", &http_sock), ("tcphc", &tcp_sock)] {
        let ok = eventually(LIMIT, || async { health_flags(admin, cluster, sock).await == "healthy" }).await;
        assert!(ok, "{cluster}: {}\n{}", health_flags(admin, cluster, sock).await, proxy.log());
    }
    assert!(http_backend.hits() >= 1, "the HTTP check reached the pipe backend");
    assert_eq!(http_backend.last_uri(), "/healthz");
    let (status, body) = support::send(support::client().get(format!("http://{listen}/films"))).await;
    assert_eq!((status, body.as_str()), (200, "hc-http"));

    // HTTP: a 503 fails the host; TCP: the socket gone fails it.
    http_backend.set(support::Behaviour::Status(503));
    tcp_backend.stop();
    std::fs::remove_file(&tcp_sock).unwrap();
    for (cluster, sock) in [("httphc", &http_sock), ("tcphc", &tcp_sock)] {
        let down =
            eventually(LIMIT, || async { health_flags(admin, cluster, sock).await == "/failed_active_hc" }).await;
        assert!(down, "{cluster}: {}", health_flags(admin, cluster, sock).await);
    }
    let (status, _) = support::send(support::client().get(format!("http://{listen}/tcp"))).await;
    assert_eq!(status, 503, "no healthy host");

    http_backend.set(support::Behaviour::Normal);
    let _tcp_again = Backend::start_pipe("hc-tcp-2", &tcp_sock);
    for (cluster, sock) in [("httphc", &http_sock), ("tcphc", &tcp_sock)] {
        let up = eventually(LIMIT, || async { health_flags(admin, cluster, sock).await == "healthy" }).await;
        assert!(up, "{cluster}: {}", health_flags(admin, cluster, sock).await);
    }
    let (status, body) = support::send(support::client().get(format!("http://{listen}/tcp"))).await;
    assert_eq!((status, body.as_str()), (200, "hc-tcp-2"));
}

#[tokio::test]
async fn tcp_proxy_connects_to_a_pipe_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("echo.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf).await;
                let _ = s.write_all(&buf).await;
                let _ = s.write_all(b" (over a pipe)").await;
            });
        }
    });
    let admin = free_addr(ip(71, 13));
    let listen = free_addr(ip(71, 13));
    let path = sock.display().to_string();
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[yaml::listener("tcp", listen, &yaml::tcp_proxy("to_pipe", "cluster: echo", ""))],
        &[pipe_cluster("echo", &[&path], &[], "")],
    );
    let proxy = ProxyProcess::live(&cfg, admin).await;
    let mut s = tokio::net::TcpStream::connect(listen).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut out)).await.expect("echo in time").unwrap();
    assert_eq!(String::from_utf8_lossy(&out), "hello (over a pipe)", "{}", proxy.log());
    assert_eq!(stat(admin, "cluster.echo.upstream_cx_total").await, 1);
}

#[test]
fn pipe_endpoints_are_refused_where_envoy_refuses_them() {
    let cfg = |kind: &str, pipe: &str| {
        format!(
            "static_resources:\n  clusters:\n  - name: c\n    connect_timeout: 1s\n    type: {kind}\n    load_assignment:\n      cluster_name: c\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ pipe: {pipe} }} }}\n"
        )
    };
    let error = |text: String| match frontend_proxy::config::parse(&text) {
        Ok(_) => panic!("loaded:\n{text}"),
        Err(e) => e.to_string(),
    };
    let e = error(cfg("STRICT_DNS", "{ path: /run/a.sock }"));
    assert!(e.contains("endpoint.address.pipe") && e.contains("needs a STATIC cluster"), "{e}");
    let e = error(cfg("LOGICAL_DNS", "{ path: /run/a.sock }"));
    assert!(e.contains("needs a STATIC cluster"), "{e}");
    let e = error(cfg("STATIC", "{ path: \"\" }"));
    assert!(e.contains("pipe.path") && e.contains("must not be empty"), "{e}");
    let e = error(cfg("STATIC", &format!("{{ path: /{} }}", "x".repeat(120))));
    assert!(e.contains("pipe.path") && e.contains("longer than"), "{e}");
    let e = error(cfg("STATIC", "{ path: /run/a.sock, mode: 0600 }"));
    assert!(e.contains("pipe.mode") && e.contains("listeners only"), "{e}");
    let e =
        error(cfg("STATIC", "{ path: /run/a.sock }").replace("type: STATIC", "type: STATIC\n    lb_policy: RING_HASH"));
    assert!(e.contains("lb_policy") && e.contains("RING_HASH balances over IP endpoints only"), "{e}");
    let maglev = cfg("STATIC", "{ path: /run/a.sock }").replace("type: STATIC", "type: STATIC\n    lb_policy: MAGLEV");
    assert!(frontend_proxy::config::parse(&maglev).is_ok());
    assert!(frontend_proxy::config::parse(&cfg("STATIC", "{ path: /run/a.sock }")).is_ok());
    assert!(frontend_proxy::config::parse(&cfg("STATIC", "{ path: \"@abstract\" }")).is_ok());
}

#[test]
fn pingoras_engine_refuses_an_abstract_pipe_endpoint_at_start() {
    let text = yaml::bootstrap(&[], &[pipe_cluster("films", &["@frontend-proxy-never-bound"], &[], "")]);
    let stderr = support::proxy::refused_at_start(&text, &["--http1-engine", "pingora"]);
    assert!(
        stderr.contains("the abstract pipe @frontend-proxy-never-bound needs the native HTTP/1 engine"),
        "{stderr}"
    );
}

#[test]
fn an_abstract_pipe_endpoint_takes_http1_only() {
    let text = yaml::bootstrap(
        &[],
        &[pipe_cluster(
            "films",
            &["@films"],
            &[],
            "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: { http2_protocol_options: {} }",
        )],
    );
    let e = match frontend_proxy::config::parse(&text) {
        Ok(_) => panic!("loaded:\n{text}"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("load_assignment") && e.contains("takes HTTP/1.1 only"), "{e}");
    // A socket file may carry HTTP/2.
    assert!(frontend_proxy::config::parse(&text.replace("@films", "/run/films.sock")).is_ok());
}

/// A TLS HTTP/1.1 server on the socket file `path` (blocking, a thread per
/// connection): answers every request `200 tls-piped`; records the SNI
/// each handshake named.
fn tls_pipe_server(path: &Path, cert_pem: &str, key_pem: &str) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use boring::ssl::{SslAcceptor, SslMethod};
    use std::io::{Read, Write};
    let names = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    builder.set_certificate(&boring::x509::X509::from_pem(cert_pem.as_bytes()).unwrap()).unwrap();
    builder.set_private_key(&boring::pkey::PKey::private_key_from_pem(key_pem.as_bytes()).unwrap()).unwrap();
    let seen = names.clone();
    builder.set_servername_callback(move |ssl, _| {
        seen.lock().unwrap().push(ssl.servername(boring::ssl::NameType::HOST_NAME).unwrap_or("").to_string());
        Ok(())
    });
    let acceptor = std::sync::Arc::new(builder.build());
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let acceptor = acceptor.clone();
            std::thread::spawn(move || {
                let Ok(mut tls) = acceptor.accept(conn) else { return };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\ntls-piped";
                        if tls.write_all(reply).is_err() {
                            return;
                        }
                    }
                    match tls.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    names
}

#[tokio::test]
async fn tls_runs_over_a_pipe_endpoint_with_the_clusters_sni() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("tls.sock");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["backend.internal".to_string()]).unwrap().self_signed(&key).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert.pem()).unwrap();
    let names = tls_pipe_server(&sock, &cert.pem(), &key.serialize_pem());
    let admin = free_addr(ip(71, 14));
    let listen = free_addr(ip(71, 14));
    let tls = format!(
        r#"    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: backend.internal
        common_tls_context:
          validation_context:
            trusted_ca: {{ filename: "{}" }}
            match_typed_subject_alt_names:
            - san_type: DNS
              matcher: {{ exact: backend.internal }}"#,
        ca.display()
    );
    let routes = yaml::routes(&[("/", "cluster: secure")]);
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[yaml::listener("main", listen, &yaml::hcm("main", "", &routes))],
        &[pipe_cluster("secure", &[&sock.display().to_string()], &[], &tls)],
    );
    let proxy = ProxyProcess::live(&cfg, admin).await;
    let client = support::client();
    for _ in 0..3 {
        let (status, body) = support::send(client.get(format!("http://{listen}/secure"))).await;
        assert_eq!((status, body.as_str()), (200, "tls-piped"), "{}", proxy.log());
    }
    let names = names.lock().unwrap().clone();
    assert!(!names.is_empty() && names.iter().all(|n| n == "backend.internal"), "{names:?}");
    assert_eq!(stat(admin, "cluster.secure.upstream_cx_total").await, names.len() as u64);
    assert_eq!(stat(admin, "cluster.secure.upstream_cx_total").await, 1, "the TLS connection is kept and reused");
}

#[tokio::test]
async fn http2_reaches_a_pipe_file_endpoint_on_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("h2up.sock").display().to_string();
    let backend = Backend::start_pipe("films-h2", &sock);
    let admin = free_addr(ip(71, 15));
    let listen = free_addr(ip(71, 15));
    let h2 = r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }"#;
    let routes = yaml::routes(&[("/", "cluster: films")]);
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[yaml::listener("main", listen, &yaml::hcm("main", "", &routes))],
        &[pipe_cluster("films", &[&sock], &[], h2)],
    );
    let proxy = ProxyProcess::live(&cfg, admin).await;
    for _ in 0..3 {
        let (status, body) = support::send(support::client().get(format!("http://{listen}/h2"))).await;
        assert_eq!((status, body.as_str()), (200, "films-h2"), "{}", proxy.log());
    }
    assert_eq!(backend.hits(), 3);
    assert_eq!(stat(admin, "cluster.films.upstream_cx_http2_total").await, 1, "one h2c connection, reused");
    assert_eq!(stat(admin, "cluster.films.upstream_cx_total").await, 1);
}
