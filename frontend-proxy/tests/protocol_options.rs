//! Connection manager and route fields that change what goes on the wire:
//! the HTTP/2 settings a listener advertises (`http2_protocol_options`),
//! and the headers routes add (`include_request_attempt_count`,
//! `include_attempt_count_in_response`, `append_x_forwarded_host`).
//! Addresses: 127.0.21.x.

mod support;

use pingora_core::tls::ssl::{SslConnector, SslMethod, SslVerifyMode};
use pingora_core::tls::tokio_ssl::SslStream;
use std::net::SocketAddr;
use std::time::Duration;
use support::yaml;
use support::{free_addr, ip, Backend, ProxyProcess};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the server's first frames say on a new h2c connection: its
/// SETTINGS as (identifier, value), and the connection window increment
/// it sent on stream 0 (0 if none came with them).
async fn server_settings(addr: SocketAddr) -> (Vec<(u16, u32)>, u32) {
    first_frames(TcpStream::connect(addr).await.unwrap()).await
}

/// [`server_settings`] over TLS, h2 chosen by ALPN.
async fn server_settings_tls(addr: SocketAddr) -> (Vec<(u16, u32)>, u32) {
    let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
    connector.set_verify(SslVerifyMode::NONE);
    connector.set_alpn_protos(b"\x02h2").unwrap();
    let ssl = connector.build().configure().unwrap().into_ssl("localhost").unwrap();
    let mut tls = SslStream::new(ssl, TcpStream::connect(addr).await.unwrap()).unwrap();
    std::pin::Pin::new(&mut tls).connect().await.unwrap();
    assert_eq!(tls.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
    first_frames(tls).await
}

async fn first_frames(mut s: impl AsyncRead + AsyncWrite + Unpin) -> (Vec<(u16, u32)>, u32) {
    // The preface and an empty SETTINGS frame.
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let mut settings = None;
    let mut window = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    loop {
        let mut head = [0u8; 9];
        let read = tokio::time::timeout_at(deadline, s.read_exact(&mut head)).await;
        let Ok(Ok(_)) = read else { break };
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.unwrap();
        match kind {
            // SETTINGS, not an acknowledgement.
            4 if flags & 1 == 0 => {
                settings = Some(
                    payload
                        .chunks(6)
                        .map(|e| (u16::from_be_bytes([e[0], e[1]]), u32::from_be_bytes([e[2], e[3], e[4], e[5]])))
                        .collect(),
                );
            }
            8 if stream == 0 => window += u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]),
            _ => {}
        }
    }
    (settings.expect("the server sent no SETTINGS"), window)
}

fn setting(settings: &[(u16, u32)], id: u16) -> Option<u32> {
    settings.iter().rev().find(|(i, _)| *i == id).map(|(_, v)| *v)
}

#[tokio::test]
async fn http2_settings_are_advertised_per_listener() {
    let backend = Backend::start("b", SocketAddr::new(ip(21, 1), 0)).await;
    let (tuned, plain, secure) = (free_addr(ip(21, 1)), free_addr(ip(21, 1)), free_addr(ip(21, 1)));
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let routes = yaml::routes(&[("/", "cluster: backend")]);
    let options = "          codec_type: AUTO
          http2_protocol_options:
            max_concurrent_streams: 7
            initial_stream_window_size: 70000
            initial_connection_window_size: 1048576
            hpack_table_size: 0
            max_outbound_frames: 10000
            override_stream_error_on_invalid_http_message: true";
    let cfg = yaml::bootstrap(
        &[
            yaml::listener("tuned", tuned, &yaml::hcm("tuned", options, &routes)),
            yaml::listener("plain", plain, &yaml::hcm("plain", "          codec_type: AUTO", &routes)),
            yaml::tls_listener(
                "secure",
                secure,
                &yaml::hcm("secure", "          http2_protocol_options: { max_concurrent_streams: 9 }", &routes),
                cert_path.to_str().unwrap(),
                key_path.to_str().unwrap(),
            ),
        ],
        &[yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], "")],
    );
    let proxy = ProxyProcess::start(&cfg, plain).await;

    let (settings, window) = server_settings(tuned).await;
    assert_eq!(setting(&settings, 3), Some(7), "max_concurrent_streams: {settings:?}\n{}", proxy.log());
    assert_eq!(setting(&settings, 4), Some(70000), "initial_stream_window_size: {settings:?}");
    assert_eq!(setting(&settings, 1), Some(0), "hpack_table_size: {settings:?}");
    assert_eq!(window, 1048576 - 65535, "the connection window grows to initial_connection_window_size");

    // The other listener keeps the defaults (its own service).
    let (settings, window) = server_settings(plain).await;
    assert_eq!(setting(&settings, 3), Some(100), "{settings:?}");
    assert_eq!(setting(&settings, 4), None, "{settings:?}");
    assert_eq!(setting(&settings, 1), None, "{settings:?}");
    assert_eq!(window, 0);

    // A TLS listener with settings of its own.
    let (settings, _) = server_settings_tls(secure).await;
    assert_eq!(setting(&settings, 3), Some(9), "{settings:?}");
    assert_eq!(setting(&settings, 4), None, "{settings:?}");

    // And the tuned listener serves requests.
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let r = h2.get(format!("http://{tuned}/")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn attempt_counts_and_forwarded_host_are_added_when_asked() {
    let ok = Backend::start("ok", SocketAddr::new(ip(21, 2), 0)).await;
    let flaky = Backend::start("flaky", SocketAddr::new(ip(21, 2), 0)).await;
    flaky.set(support::Behaviour::Status(503));
    let (counted, plain) = (free_addr(ip(21, 2)), free_addr(ip(21, 2)));
    let routes = |flags: &str| {
        format!(
            r#"            - name: all
              domains: ["*"]
{flags}
              routes:
              - match: {{ prefix: "/retry" }}
                route: {{ cluster: flaky, retry_policy: {{ retry_on: 5xx, num_retries: 2 }} }}
              - match: {{ prefix: "/rewrite" }}
                route: {{ cluster: ok, host_rewrite_literal: films.internal, append_x_forwarded_host: true }}
              - match: {{ prefix: "/" }}
                route: {{ cluster: ok, host_rewrite_literal: films.internal }}"#
        )
    };
    let flags =
        "              include_request_attempt_count: true\n              include_attempt_count_in_response: true";
    let ep = |b: &Backend| vec![(b.addr.ip().to_string(), b.addr.port())];
    let cfg = yaml::bootstrap(
        &[
            yaml::listener("counted", counted, &yaml::hcm("counted", "", &routes(flags))),
            yaml::listener("plain", plain, &yaml::hcm("plain", "", &routes(""))),
        ],
        &[yaml::cluster("ok", "STATIC", &ep(&ok), ""), yaml::cluster("flaky", "STATIC", &ep(&flaky), "")],
    );
    let proxy = ProxyProcess::start(&cfg, plain).await;
    let c = support::client();

    // Three attempts: each upstream request says which it is, the client
    // hears how many there were.
    let r = c.get(format!("http://{counted}/retry")).send().await.unwrap();
    assert_eq!(r.status(), 503, "{}", proxy.log());
    assert_eq!(r.headers()["x-envoy-attempt-count"], "3");
    assert_eq!(flaky.last_header("x-envoy-attempt-count").as_deref(), Some("3"));
    let r = c.get(format!("http://{counted}/")).header("x-envoy-attempt-count", "7").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-envoy-attempt-count"], "1");
    assert_eq!(ok.last_header("x-envoy-attempt-count").as_deref(), Some("1"), "the client's value is replaced");
    // Without the flags, neither way.
    let r = c.get(format!("http://{plain}/retry")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("x-envoy-attempt-count").is_none());
    assert_eq!(flaky.last_header("x-envoy-attempt-count"), None);

    // The host the client asked for is kept in x-forwarded-host when the
    // route rewrites it, appended to what is there.
    let r = c.get(format!("http://{plain}/rewrite")).header("host", "front.example").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(ok.last_header("host").as_deref(), Some("films.internal"));
    assert_eq!(ok.last_header("x-forwarded-host").as_deref(), Some("front.example"));
    let r = c
        .get(format!("http://{plain}/rewrite"))
        .header("host", "front.example")
        .header("x-forwarded-host", "cdn.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(ok.last_header("x-forwarded-host").as_deref(), Some("cdn.example,front.example"));
    // A rewrite without append_x_forwarded_host leaves it alone.
    let r = c.get(format!("http://{plain}/")).header("host", "front.example").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(ok.last_header("host").as_deref(), Some("films.internal"));
    assert_eq!(ok.last_header("x-forwarded-host"), None);

    // Over HTTP/2 the host comes from :authority.
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let r = h2.get(format!("http://{plain}/rewrite")).send().await.unwrap();
    assert_eq!((r.version(), r.status().as_u16()), (reqwest::Version::HTTP_2, 200));
    assert_eq!(ok.last_header("x-forwarded-host"), Some(plain.to_string()));
    let r = h2.get(format!("http://{counted}/retry")).send().await.unwrap();
    assert_eq!(r.headers()["x-envoy-attempt-count"], "3");
}

/// A port free on `::` for IPv6 and IPv4 alike (probed dual-stack).
fn free_dual_stack_port() -> u16 {
    support::free_port("::".parse().unwrap())
}

#[tokio::test]
async fn a_listener_on_the_ipv6_any_address_takes_ipv4_only_with_ipv4_compat() {
    let backend = Backend::start("b", SocketAddr::new(ip(21, 4), 0)).await;
    let (v6only, dual) = (free_dual_stack_port(), free_dual_stack_port());
    let hcm = yaml::hcm("any", "", &yaml::routes(&[("/", "cluster: backend")]));
    let on_any = |name: &str, port: u16, compat: &str| {
        yaml::listener(name, SocketAddr::new("::".parse().unwrap(), port), &hcm)
            .replace("address: ::,", &format!("address: \"::\",{compat}"))
    };
    let cfg = yaml::bootstrap(
        &[on_any("v6only", v6only, ""), on_any("dual", dual, " ipv4_compat: true,")],
        &[yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], "")],
    );
    let proxy = ProxyProcess::start(&cfg, SocketAddr::new("::1".parse().unwrap(), dual)).await;
    let c = support::client();
    let get = |url: String| {
        let c = c.clone();
        async move { c.get(url).send().await.map(|r| r.status().as_u16()) }
    };
    assert_eq!(get(format!("http://[::1]:{v6only}/")).await.ok(), Some(200), "{}", proxy.log());
    assert!(get(format!("http://127.0.0.1:{v6only}/")).await.is_err(), "an IPv4 client got in without ipv4_compat");
    assert_eq!(get(format!("http://[::1]:{dual}/")).await.ok(), Some(200));
    assert_eq!(get(format!("http://127.0.0.1:{dual}/")).await.ok(), Some(200), "ipv4_compat takes IPv4 too");
}

#[tokio::test]
async fn a_header_given_as_raw_value_is_added_with_its_bytes() {
    let backend = Backend::start("b", SocketAddr::new(ip(21, 5), 0)).await;
    let addr = free_addr(ip(21, 5));
    // "from-bytes", base64 as protobuf's JSON mapping writes bytes.
    let routes = r#"            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: backend }
                request_headers_to_add: [{ header: { key: x-raw, raw_value: "ZnJvbS1ieXRlcw==" } }]
                response_headers_to_add: [{ header: { key: x-raw-back, raw_value: "ZnJvbS1ieXRlcw" } }]"#;
    let cfg = yaml::bootstrap(
        &[yaml::listener("raw", addr, &yaml::hcm("raw", "", routes))],
        &[yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], "")],
    );
    let proxy = ProxyProcess::start(&cfg, addr).await;
    let r = support::client().get(format!("http://{addr}/")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", proxy.log());
    assert_eq!(backend.last_header("x-raw").as_deref(), Some("from-bytes"));
    assert_eq!(r.headers()["x-raw-back"], "from-bytes");
}

/// The timers `ss` shows on established connections to `dst` (an IP).
fn connection_timers(dst: std::net::IpAddr) -> String {
    let out = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established", "dst", &dst.to_string()])
        .output()
        .expect("ss (iproute2)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn upstream_connections_get_the_clusters_tcp_keepalive() {
    let kept = Backend::start("kept", SocketAddr::new(ip(21, 6), 0)).await;
    let plain = Backend::start("plain", SocketAddr::new(ip(21, 7), 0)).await;
    let addr = free_addr(ip(21, 8));
    let ep = |b: &Backend| vec![(b.addr.ip().to_string(), b.addr.port())];
    let keepalive = "    upstream_connection_options:
      tcp_keepalive: { keepalive_time: 77, keepalive_interval: 5, keepalive_probes: 3 }
";
    let cfg = yaml::bootstrap(
        &[yaml::route_listener(addr, "ka", &[("/kept", "cluster: kept"), ("/", "cluster: plain")])],
        &[yaml::cluster("kept", "STATIC", &ep(&kept), keepalive), yaml::cluster("plain", "STATIC", &ep(&plain), "")],
    );
    let proxy = ProxyProcess::start(&cfg, addr).await;
    let c = support::client();
    assert_eq!(c.get(format!("http://{addr}/kept")).send().await.unwrap().status(), 200, "{}", proxy.log());
    assert_eq!(c.get(format!("http://{addr}/")).send().await.unwrap().status(), 200);
    // The pooled upstream connections stay open: the proxy's side of the
    // one to `kept` runs a keepalive timer (first probe after 77 s).
    let timers = connection_timers(kept.addr.ip());
    assert!(timers.contains("keepalive"), "no keepalive timer towards the kept cluster:\n{timers}");
    assert!(timers.contains("timer:(keepalive,1min"), "keepalive_time 77 s: {timers}");
    let timers = connection_timers(plain.addr.ip());
    assert!(!timers.is_empty(), "no pooled connection to the plain cluster");
    assert!(!timers.contains("keepalive"), "keepalive without upstream_connection_options:\n{timers}");
}

#[tokio::test]
async fn the_admin_interface_on_the_ipv6_any_address_takes_ipv4_only_with_ipv4_compat() {
    // The admin interface serves /config_dump and /stats: an IPv6-only
    // address must not let IPv4 clients in (Linux's sockets are dual-stack).
    let backend = Backend::start("b", SocketAddr::new(ip(21, 7), 0)).await;
    let cluster = yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], "");
    let c = support::client();
    for (compat, ipv4_allowed) in [("", false), (" ipv4_compat: true,", true)] {
        let port = free_dual_stack_port();
        let listen = free_addr(ip(21, 7));
        let hcm = yaml::hcm("adm", "", &yaml::routes(&[("/", "cluster: backend")]));
        let admin =
            format!("admin:\n  address:\n    socket_address: {{ address: \"::\",{compat} port_value: {port} }}\n");
        let cfg =
            format!("{admin}{}", yaml::bootstrap(&[yaml::listener("l", listen, &hcm)], std::slice::from_ref(&cluster)));
        let v6: SocketAddr = SocketAddr::new("::1".parse().unwrap(), port);
        let proxy = ProxyProcess::with_admin(&cfg, v6, 1).await;
        let ready = c.get(format!("http://[::1]:{port}/ready")).send().await;
        assert!(ready.is_ok(), "{}", proxy.log());
        let v4 = c.get(format!("http://127.0.0.1:{port}/stats")).send().await;
        assert_eq!(v4.is_ok(), ipv4_allowed, "IPv4 client on an admin at [::] with {compat:?}: {v4:?}");
    }
}
