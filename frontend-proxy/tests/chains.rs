//! Envoy's filter chain matching on listeners: TLS passthrough chosen by
//! SNI (the client completes its handshake with the backend), TLS and
//! plaintext chains on one listener, each TLS chain with its own
//! certificates, `tls_params` and client validation, `application_protocols`,
//! destination and source addresses, `default_filter_chain`, no match, and
//! `tls_inspector`'s timeout and a ClientHello arriving in pieces. Real
//! certificates, real OpenSSL clients and backend, the real proxy binary.
//! Addresses: 127.0.28.x.

#[allow(unused_imports)]
mod support;

use boring::ssl::{SslAcceptor, SslConnector, SslFiletype, SslMethod, SslVerifyMode, SslVersion};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;
use support::proxy::ProxyProcess;
use support::tcp::EchoBackend;
use support::{free_addr, ip, stat, yaml, LIMIT};

/// A self-signed certificate for `name`, written as `<name>.crt`/`.key`.
fn write_cert(dir: &Path, name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap().self_signed(&key).unwrap();
    let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c.to_string_lossy().into_owned(), k.to_string_lossy().into_owned())
}

/// A connection manager answering every request with `from <body>`.
fn says(body: &str) -> String {
    let hosts = format!(
        r#"            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "from {body}" }} }}"#
    );
    yaml::hcm(body, "", &hosts)
}

/// A downstream TLS transport socket with `cert`, and `params` /
/// `context` lines (common_tls_context's and DownstreamTlsContext's).
fn tls(cert: &(String, String), params: &str, context: &str) -> String {
    format!(
        r#"
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext{context}
          common_tls_context:{params}
            tls_certificates:
            - certificate_chain: {{ filename: "{c}" }}
              private_key: {{ filename: "{k}" }}"#,
        c = cert.0,
        k = cert.1
    )
}

/// A filter chain: `match_` (flow mapping contents, empty for none), a
/// transport socket (empty for plaintext), and its filters.
fn chain(match_: &str, transport: &str, filters: &str) -> String {
    let m = if match_.is_empty() { String::new() } else { format!(" filter_chain_match: {{ {match_} }}") };
    format!("\n    -{m}{transport}\n      filters:{filters}")
}

fn listener(name: &str, addr: SocketAddr, extra: &str, chains: &[String]) -> String {
    format!(
        r#"
  - name: {name}
    address:
      socket_address: {{ address: {ip}, port_value: {port} }}{extra}
    filter_chains:{chains}"#,
        ip = addr.ip(),
        port = addr.port(),
        chains = chains.concat()
    )
}

const INSPECTOR: &str = "\n    listener_filters:\n    - name: envoy.filters.listener.tls_inspector";

/// What a TLS client saw.
#[derive(Debug, Default)]
struct Seen {
    san: String,
    version: String,
    alpn: String,
    response: String,
}

/// A TCP stream that writes at most a few bytes at a time, apart: a
/// ClientHello in many segments.
#[derive(Debug)]
struct Slow(TcpStream);

impl Read for Slow {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Slow {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(40);
        std::thread::sleep(Duration::from_millis(20));
        self.0.write(&buf[..n])
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[derive(Clone, Copy, Default)]
struct Client<'a> {
    sni: &'a str,
    alpn: &'a [&'a str],
    max: Option<SslVersion>,
    slow: bool,
    /// Only the handshake: nothing is sent.
    handshake_only: bool,
}

/// Connects to `addr` as `c` says and sends `GET /`, on a blocking thread.
async fn talk(addr: SocketAddr, c: Client<'static>) -> Result<Seen, String> {
    tokio::task::spawn_blocking(move || talk_blocking(addr, c)).await.unwrap()
}

fn talk_blocking(addr: SocketAddr, c: Client) -> Result<Seen, String> {
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(LIMIT)).unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    b.set_max_proto_version(c.max).unwrap();
    if !c.alpn.is_empty() {
        let mut wire = Vec::new();
        for p in c.alpn {
            wire.push(p.len() as u8);
            wire.extend_from_slice(p.as_bytes());
        }
        b.set_alpn_protos(&wire).unwrap();
    }
    let mut config = b.build().configure().unwrap();
    config.set_verify_hostname(false);
    let ssl = config.into_ssl(c.sni).unwrap();
    if c.slow {
        finish(&mut ssl.connect(Slow(tcp)).map_err(|e| e.to_string())?, c)
    } else {
        finish(&mut ssl.connect(tcp).map_err(|e| e.to_string())?, c)
    }
}

/// What the handshake chose, and the answer to `GET /`.
fn finish<S: Read + Write>(tls: &mut boring::ssl::SslStream<S>, c: Client) -> Result<Seen, String> {
    let mut seen = Seen::default();
    let ssl = tls.ssl();
    let cert = ssl.peer_certificate().ok_or("no certificate")?;
    seen.san = cert
        .subject_alt_names()
        .and_then(|s| s.iter().next().and_then(|n| n.dnsname().map(str::to_string)))
        .unwrap_or_default();
    seen.version = ssl.version_str().to_string();
    seen.alpn = ssl.selected_alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default();
    if c.handshake_only {
        return Ok(seen);
    }
    tls.write_all(b"GET / HTTP/1.1\r\nhost: any\r\nconnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    seen.response = String::from_utf8_lossy(&raw).into_owned();
    Ok(seen)
}

/// Sends `GET /` in plain text from `source` (any if `None`) and reads the answer.
async fn plain(addr: SocketAddr, source: Option<IpAddr>) -> String {
    tokio::task::spawn_blocking(move || {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        if let Some(s) = source {
            socket.bind(&SocketAddr::new(s, 0).into()).unwrap();
        }
        if socket.connect(&addr.into()).is_err() {
            return String::new();
        }
        let mut tcp: TcpStream = socket.into();
        tcp.set_read_timeout(Some(LIMIT)).unwrap();
        let _ = tcp.write_all(b"GET / HTTP/1.1\r\nhost: any\r\nconnection: close\r\n\r\n");
        let mut raw = Vec::new();
        let _ = tcp.read_to_end(&mut raw);
        String::from_utf8_lossy(&raw).into_owned()
    })
    .await
    .unwrap()
}

/// A TLS server (the passthrough's backend) answering each connection's
/// first bytes with `backend: hello`.
fn tls_backend(addr: SocketAddr, cert: &(String, String)) -> SocketAddr {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    b.set_certificate_chain_file(&cert.0).unwrap();
    b.set_private_key_file(&cert.1, SslFiletype::PEM).unwrap();
    let acceptor = b.build();
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let acceptor = acceptor.clone();
            std::thread::spawn(move || {
                let Ok(mut tls) = acceptor.accept(tcp) else { return };
                let mut buf = [0u8; 1024];
                let _ = tls.read(&mut buf);
                let _ =
                    tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 14\r\nconnection: close\r\n\r\nbackend: hello");
                let _ = tls.shutdown();
            });
        }
    });
    addr
}

fn scope(addr: SocketAddr) -> String {
    format!("listener.{}", addr.to_string().replace(':', "_"))
}

#[tokio::test]
async fn tls_passthrough_termination_and_plaintext_chains_on_one_listener() {
    let dir = tempfile::tempdir().unwrap();
    let cert = |n: &str| write_cert(dir.path(), n);
    let (backend_cert, term, old, h2, h1, mtls) = (
        cert("backend.test"),
        cert("term.test"),
        cert("old.test"),
        cert("h2.test"),
        cert("h1.test"),
        cert("mtls.test"),
    );
    let backend = tls_backend(SocketAddr::new(ip(28, 1), 0), &backend_cert);
    let (addr, admin) = (free_addr(ip(28, 1)), free_addr(ip(28, 1)));
    let only13 = "\n            tls_params: { tls_minimum_protocol_version: TLSv1_3 }";
    let upto12 = "\n            tls_params: { tls_maximum_protocol_version: TLSv1_2 }";
    let mtls_params = format!("\n            validation_context: {{ trusted_ca: {{ filename: \"{}\" }} }}", term.0);
    let require = "\n          require_client_certificate: true";
    let chains = [
        chain("server_names: [pass.test]", "", &yaml::tcp_proxy("pass", "cluster: tls_backend", "")),
        chain("server_names: [term.test]", &tls(&term, only13, ""), &says("term")),
        chain("server_names: [old.test]", &tls(&old, upto12, ""), &says("old")),
        chain("server_names: [alpn.test], application_protocols: [h2]", &tls(&h2, "", ""), &says("h2")),
        chain("server_names: [alpn.test]", &tls(&h1, "", ""), &says("h1")),
        chain("server_names: [mtls.test]", &tls(&mtls, &mtls_params, require), &says("mtls")),
        chain("transport_protocol: raw_buffer", "", &says("plain")),
    ];
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[listener("mixed", addr, INSPECTOR, &chains)],
        &[yaml::cluster("tls_backend", "STATIC", &[(backend.ip().to_string(), backend.port())], "")],
    );
    let proxy = ProxyProcess::live(&cfg, admin).await;
    let log = || proxy.log();

    // Passthrough: the backend's certificate, the backend's answer.
    let seen =
        talk(addr, Client { sni: "pass.test", ..Client::default() }).await.unwrap_or_else(|e| panic!("{e}\n{}", log()));
    assert_eq!(seen.san, "backend.test");
    assert!(seen.response.ends_with("backend: hello"), "{seen:?}");

    // Termination with the chain's own certificate and parameters.
    let seen = talk(addr, Client { sni: "term.test", ..Client::default() }).await.unwrap();
    assert_eq!((seen.san.as_str(), seen.version.as_str()), ("term.test", "TLSv1.3"));
    assert!(seen.response.ends_with("from term"), "{seen:?}\n{}", log());
    let tls12 = Client { sni: "term.test", max: Some(SslVersion::TLS1_2), ..Client::default() };
    assert!(talk(addr, tls12).await.is_err(), "term.test accepts TLS 1.3 only");
    let old12 = Client { sni: "old.test", max: Some(SslVersion::TLS1_2), ..Client::default() };
    let seen = talk(addr, old12).await.unwrap();
    assert_eq!((seen.san.as_str(), seen.version.as_str()), ("old.test", "TLSv1.2"));
    assert!(seen.response.ends_with("from old"), "{seen:?}");
    let seen = talk(addr, Client { sni: "old.test", ..Client::default() }).await.unwrap();
    assert_eq!(seen.version, "TLSv1.2", "old.test allows up to TLS 1.2");

    // A ClientHello in many small segments is read whole.
    let seen = talk(addr, Client { sni: "term.test", slow: true, ..Client::default() }).await.unwrap();
    assert!(seen.response.ends_with("from term"), "{seen:?}\n{}", log());

    // The client's ALPN offer picks between two chains of one name.
    let seen =
        talk(addr, Client { sni: "alpn.test", alpn: &["h2", "http/1.1"], handshake_only: true, ..Client::default() })
            .await
            .unwrap();
    assert_eq!((seen.san.as_str(), seen.alpn.as_str()), ("h2.test", "h2"));
    let seen = talk(addr, Client { sni: "alpn.test", alpn: &["http/1.1"], ..Client::default() }).await.unwrap();
    assert_eq!((seen.san.as_str(), seen.alpn.as_str()), ("h1.test", "http/1.1"));
    assert!(seen.response.ends_with("from h1"), "{seen:?}");

    // Client certificates are required on the mTLS chain only.
    let refused = talk(addr, Client { sni: "mtls.test", ..Client::default() }).await;
    assert!(refused.as_ref().map_or(true, |s| !s.response.contains("from mtls")), "{refused:?}");

    // Plain text on the same listener.
    assert!(plain(addr, None).await.ends_with("from plain"), "{}", log());

    // No chain for this name, none for TLS without one: closed and counted.
    for sni in ["nope.test", "PASS.test.evil"] {
        let r = talk(addr, Client { sni, ..Client::default() }).await;
        assert!(r.is_err(), "{sni}: {r:?}");
    }
    // Case folds: the name in any case takes the passthrough.
    let seen = talk(addr, Client { sni: "PASS.Test", ..Client::default() }).await.unwrap();
    assert_eq!(seen.san, "backend.test");
    assert_eq!(stat(admin, &format!("{}.no_filter_chain_match", scope(addr))).await, 2);
    assert!(stat(admin, &format!("{}.ssl.fail_verify_no_cert", scope(addr))).await >= 1);
}

#[tokio::test]
async fn addresses_and_ports_choose_chains_and_the_default_takes_the_rest() {
    let admin = free_addr(ip(28, 2));
    let any = free_addr("0.0.0.0".parse().unwrap());
    let one = free_addr(ip(28, 5));
    let cidr = |a: &str| format!("{{ address_prefix: {a}, prefix_len: 32 }}");
    let default = "\n    default_filter_chain:\n      filters:".to_string() + &says("default").replace("\n", "\n  ");
    let wildcard = listener(
        "any",
        any,
        "",
        &[
            chain(&format!("prefix_ranges: [{}]", cidr("127.0.28.3")), "", &says("dst3")),
            chain(
                &format!("prefix_ranges: [{}], source_prefix_ranges: [{}]", cidr("127.0.28.4"), cidr("127.0.28.10")),
                "",
                &says("dst4src10"),
            ),
            chain("destination_port: 1", "", &says("port1")),
        ],
    ) + &default;
    let ported = listener(
        "ported",
        one,
        "",
        &[
            chain(
                &format!("destination_port: {}, source_prefix_ranges: [{}]", one.port(), cidr("127.0.28.20")),
                "",
                &says("port"),
            ),
            chain("", "", &says("portless")),
        ],
    );
    let unused = yaml::cluster("unused", "STATIC", &[("127.0.28.2".to_string(), 1)], "");
    let cfg = yaml::bootstrap_with_admin(admin, &[wildcard, ported], &[unused]);
    let proxy = ProxyProcess::live(&cfg, admin).await;
    let to = |host: u8, port: u16| SocketAddr::new(ip(28, host), port);
    let body = |s: String| s.rsplit("\r\n").next().unwrap_or_default().to_string();
    assert_eq!(body(plain(to(3, any.port()), None).await), "from dst3", "{}", proxy.log());
    assert_eq!(body(plain(to(4, any.port()), Some(ip(28, 10))).await), "from dst4src10");
    // 127.0.28.4 has its chain: a client outside its sources does not
    // fall back to a less specific chain (Envoy's order), but to the default.
    assert_eq!(body(plain(to(4, any.port()), Some(ip(28, 11))).await), "from default");
    assert_eq!(body(plain(to(6, any.port()), None).await), "from default");

    // The port's chain is the most specific; a client it refuses is closed.
    assert_eq!(body(plain(one, Some(ip(28, 20))).await), "from port", "{}", proxy.log());
    assert_eq!(plain(one, Some(ip(28, 21))).await, "");
    assert_eq!(stat(admin, &format!("{}.no_filter_chain_match", scope(one))).await, 1);
}

#[tokio::test]
async fn tls_inspector_times_out_or_continues() {
    let admin = free_addr(ip(28, 7));
    let echo = EchoBackend::start(SocketAddr::new(ip(28, 7), 0), None).await;
    let (strict, lenient) = (free_addr(ip(28, 7)), free_addr(ip(28, 7)));
    let extra = |cont: bool| {
        format!("{INSPECTOR}\n    listener_filters_timeout: 0.3s\n    continue_on_listener_filters_timeout: {cont}")
    };
    let tcp = yaml::tcp_proxy("echo", "cluster: echo", "");
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[
            listener("strict", strict, &extra(false), &[chain("", "", &tcp)]),
            listener("lenient", lenient, &extra(true), &[chain("transport_protocol: raw_buffer", "", &tcp)]),
        ],
        &[yaml::cluster("echo", "STATIC", &[(echo.addr.ip().to_string(), echo.addr.port())], "")],
    );
    let proxy = ProxyProcess::live(&cfg, admin).await;
    // The first byte of a TLS record, then nothing: the inspector waits.
    let (a, b) = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(strict).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        s.write_all(&[0x16]).unwrap();
        let mut buf = [0u8; 16];
        let closed = s.read(&mut buf).map_or(true, |n| n == 0);
        let mut l = TcpStream::connect(lenient).unwrap();
        l.set_read_timeout(Some(LIMIT)).unwrap();
        l.write_all(&[0x16]).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        l.write_all(b"abc").unwrap();
        let mut got = Vec::new();
        while got.len() < 4 {
            match l.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        (closed, got)
    })
    .await
    .unwrap();
    assert!(a, "the strict listener closes when its listener filters time out");
    assert_eq!(b, b"\x16abc", "{}", proxy.log());
    assert_eq!(stat(admin, &format!("{}.downstream_pre_cx_timeout", scope(strict))).await, 1);
    assert_eq!(stat(admin, &format!("{}.downstream_pre_cx_timeout", scope(lenient))).await, 1);
}

/// A ClientHello record carrying these `server_name` extensions, one per
/// name (two make a duplicate extension).
fn hello_with_server_names(names: &[&str]) -> Vec<u8> {
    use frontend_proxy::fuzzing::{crafted_client_hello, server_name_extension};
    let extensions: Vec<_> = names.iter().map(|n| server_name_extension(&[(0, n.as_bytes())])).collect();
    crafted_client_hello(&extensions, &[], &[])
}

/// A ClientHello with two `server_name` extensions does not pick the
/// chain of either name: BoringSSL (and so Envoy's inspector, and a TLS
/// backend behind a passthrough chain) refuses it, so here it is not TLS.
/// Were the last name taken, `admin.example.com`'s source restriction
/// could be passed by naming `public.example.com` second, while a lenient
/// backend reads the first.
#[tokio::test]
async fn a_duplicate_server_name_extension_picks_no_named_chain() {
    let admin = free_addr(ip(28, 8));
    let echo = EchoBackend::start(SocketAddr::new(ip(28, 8), 0), None).await;
    let addr = free_addr(ip(28, 8));
    let tcp = yaml::tcp_proxy("echo", "cluster: echo", "");
    let chains = [
        chain("server_names: [admin.example.com], source_prefix_ranges: [{ address_prefix: 127.0.28.99, prefix_len: 32 }]", "", &tcp),
        chain("server_names: [public.example.com]", "", &tcp),
    ];
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[listener("sni", addr, INSPECTOR, &chains)],
        &[yaml::cluster("echo", "STATIC", &[(echo.addr.ip().to_string(), echo.addr.port())], "")],
    );
    let proxy = ProxyProcess::live(&cfg, admin).await;
    let send = |hello: Vec<u8>| {
        tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(LIMIT)).unwrap();
            s.write_all(&hello).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while got.len() < hello.len() {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            got == hello
        })
    };
    // The public name alone takes its chain: the echo answers.
    assert!(send(hello_with_server_names(&["public.example.com"])).await.unwrap(), "{}", proxy.log());
    // Both, public last: no chain (not TLS, and no raw_buffer chain).
    let both = hello_with_server_names(&["admin.example.com", "public.example.com"]);
    assert!(!send(both).await.unwrap(), "a duplicate server_name took a chain\n{}", proxy.log());
    assert_eq!(stat(admin, &format!("{}.no_filter_chain_match", scope(addr))).await, 1);
}

/// tls_inspector peeks on the connection's own socket: a connection being
/// inspected holds one descriptor in the proxy, not two.
#[tokio::test]
async fn inspected_connections_hold_one_descriptor_each() {
    let admin = free_addr(ip(28, 9));
    let addr = free_addr(ip(28, 9));
    let extra = format!("{INSPECTOR}\n    listener_filters_timeout: 0s");
    let tcp = yaml::tcp_proxy("unused", "cluster: unused", "");
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[listener("waiting", addr, &extra, &[chain("transport_protocol: raw_buffer", "", &tcp)])],
        &[yaml::cluster("unused", "STATIC", &[("127.0.28.9".to_string(), 1)], "")],
    );
    let proxy = ProxyProcess::live(&cfg, admin).await;
    let fds = move |pid: u32| std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let pid = proxy.pid();
    let before = fds(pid);
    const N: usize = 32;
    // The first byte of a TLS record, then nothing: each waits in the inspector.
    let clients: Vec<TcpStream> = (0..N)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&[0x16]).unwrap();
            s
        })
        .collect();
    // Until every connection is accepted and the count holds still.
    let deadline = std::time::Instant::now() + LIMIT;
    let mut last = 0;
    let mut steady = 0;
    while steady < 5 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = fds(pid);
        // (A few of the descriptors counted before may be gone.)
        steady = if now == last && now + 4 >= before + N { steady + 1 } else { 0 };
        last = now;
    }
    assert!(last + 4 >= before + N, "{last} descriptors, {before} before {N} connections\n{}", proxy.log());
    assert!(last < before + N + N / 2, "{last} descriptors for {N} connections ({before} before): more than one each");
    drop(clients);
}
