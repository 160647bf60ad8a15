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
