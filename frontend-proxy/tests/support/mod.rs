//! Shared test harness: real backends, a real DNS server, and the real
//! proxy binary, all on loopback addresses owned by one test each; the
//! bootstrap YAML they are wired with; the admin's Prometheus text and
//! `promtool`.
#![allow(dead_code)]

pub mod backend;
pub mod differential;
pub mod dns;
pub mod prometheus;
pub mod proxy;
pub mod raw;
pub mod raw_h2;
pub mod strict;
pub mod tcp;

#[allow(unused_imports)]
pub use backend::{Backend, Behaviour};
#[allow(unused_imports)]
pub use dns::TestDns;
pub use proxy::ProxyProcess;
#[allow(unused_imports)]
pub use tcp::EchoBackend;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long any single wait in a test may take.
pub const LIMIT: Duration = Duration::from_secs(15);

/// `127.0.<group>.<host>`: every test uses its own addresses, so tests can
/// run in parallel and the ports they pick (binding `:0`, or [`free_port`])
/// cannot collide.
pub fn ip(group: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, group, host))
}

/// Ports [`free_port`] hands out: below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768-60999 by default), from which it
/// picks on its own for every `bind(:0)` and every connection's source
/// port. A port probed there could be taken by one of those between the
/// probe and the test's own bind (CI once failed with AddrInUse binding a
/// port probed free a moment before), and a client dialing a port nobody
/// listens on could be given that very port as its source and connect to
/// itself. It ends below the port `.ci/run` gives its PostgreSQL (25432
/// on); service-common's `unused_port` draws from the same range.
const TEST_PORTS: std::ops::Range<u16> = 10_000..25_000;

/// A currently free port on `ip`, never the same one twice in a test
/// process (a port probed free is free again once the probe has closed:
/// two addresses of one test, a proxy's listener and a dead upstream, were
/// once one; nor one given on the any-address again on another).
/// Candidates are random, so concurrent test processes (cargo
/// nextest runs one per test) rarely try the same one, and a probe bind
/// skips any port in use.
pub fn free_port(ip: IpAddr) -> u16 {
    static GIVEN: Mutex<BTreeSet<SocketAddr>> = Mutex::new(BTreeSet::new());
    let span = u64::from(TEST_PORTS.end - TEST_PORTS.start);
    for _ in 0..10_000 {
        let port = TEST_PORTS.start + (rand::random::<u64>() % span) as u16;
        let probe = match TcpListener::bind(SocketAddr::new(ip, port)) {
            Ok(probe) => probe,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => panic!("probe {ip}:{port}: {e}"),
        };
        let addr = probe.local_addr().expect("probe addr");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        // A port given on an any-address (a wildcard listener) is taken on
        // every address, and the other way round.
        let clash = given.iter().any(|a| a.port() == port && (a.ip().is_unspecified() || ip.is_unspecified()));
        if !clash && given.insert(addr) {
            return port;
        }
    }
    panic!("no free port on {ip} in {TEST_PORTS:?}");
}

pub fn free_addr(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, free_port(ip))
}

/// Whether the suites run against Pingora's HTTP/1 engine
/// (`FRONTEND_PROXY_HTTP1_ENGINE=pingora`, as CI does once).
pub fn pingora_engine() -> bool {
    std::env::var("FRONTEND_PROXY_HTTP1_ENGINE").is_ok_and(|e| e == "pingora")
}

/// An access log file's lines once it has `n` of them (its writer flushes
/// every second); fails the test if they do not come within [`LIMIT`], or
/// if the last line is cut short.
pub async fn log_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(String::from).collect();
        if lines.len() >= n {
            assert!(text.ends_with('\n'), "{text:?}");
            return lines;
        }
        assert!(start.elapsed() < LIMIT, "{} has {} of {n} lines:\n{text}", path.display(), lines.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// An HTTP client that talks to the given address directly (no proxy env).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client")
}

/// Sends `req`; its status and body.
pub async fn send(req: reqwest::RequestBuilder) -> (u16, String) {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

/// One counter or gauge (`http.h1.downstream_rq_4xx`) from the admin's `/stats`.
pub async fn stat(admin: SocketAddr, name: &str) -> u64 {
    let url = format!("http://{admin}/stats?filter=%5E{}%24", name.replace('.', "%5C."));
    let text = client().get(url).send().await.unwrap().text().await.unwrap();
    let prefix = format!("{name}: ");
    let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {name}: {text}"));
    line[prefix.len()..].parse().unwrap()
}

/// Envoy bootstrap pieces for tests.
pub mod yaml {
    use std::net::SocketAddr;

    pub fn hcm(stat_prefix: &str, extra: &str, virtual_hosts: &str) -> String {
        format!(
            r#"
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {stat_prefix}
{extra}
          route_config:
            name: local_route
            virtual_hosts:
{virtual_hosts}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"#
        )
    }

    /// A `tcp_proxy` network filter; `target` is `cluster: x` or a
    /// `weighted_clusters` block, `extra` more fields (each line indented
    /// ten spaces).
    pub fn tcp_proxy(stat_prefix: &str, target: &str, extra: &str) -> String {
        format!(
            r#"
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: {stat_prefix}
          {target}
{extra}"#
        )
    }

    /// A plain listener with one connection manager.
    pub fn listener(name: &str, addr: SocketAddr, hcm: &str) -> String {
        format!(
            r#"
  - name: {name}
    address:
      socket_address: {{ address: {ip}, port_value: {port} }}
    filter_chains:
    - filters:{hcm}"#,
            ip = addr.ip(),
            port = addr.port()
        )
    }

    /// A TLS listener; `cert`/`key` are file paths.
    pub fn tls_listener(name: &str, addr: SocketAddr, hcm: &str, cert: &str, key: &str) -> String {
        format!(
            r#"
  - name: {name}
    address:
      socket_address: {{ address: {ip}, port_value: {port} }}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{ filename: "{cert}" }}
              private_key: {{ filename: "{key}" }}
      filters:{hcm}"#,
            ip = addr.ip(),
            port = addr.port()
        )
    }

    /// A cluster; `endpoints` are `(host, port)`; `extra` is raw YAML at cluster level.
    pub fn cluster(name: &str, kind: &str, endpoints: &[(String, u16)], extra: &str) -> String {
        let eps: String = endpoints
            .iter()
            .map(|(h, p)| {
                format!(
                    r#"
        - endpoint:
            address:
              socket_address: {{ address: "{h}", port_value: {p} }}"#
                )
            })
            .collect();
        let la = if endpoints.is_empty() {
            String::new()
        } else {
            format!(
                r#"
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:{eps}"#
            )
        };
        format!(
            r#"
  - name: {name}
    connect_timeout: 0.25s
    type: {kind}
    lb_policy: ROUND_ROBIN{la}
{extra}"#
        )
    }

    /// Resolver block pointing a DNS cluster at a test DNS server.
    pub fn resolver(dns: SocketAddr) -> String {
        format!(
            r#"    typed_dns_resolver_config:
      name: envoy.network.dns_resolver.cares
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig
        resolvers:
        - socket_address: {{ address: {ip}, port_value: {port} }}"#,
            ip = dns.ip(),
            port = dns.port()
        )
    }

    /// The admin block, to go in front of [`bootstrap`].
    pub fn admin(addr: SocketAddr) -> String {
        format!("admin:\n  address:\n    socket_address: {{ address: {}, port_value: {} }}\n", addr.ip(), addr.port())
    }

    /// One virtual host for every domain, routing each `(prefix, route
    /// action)` in order, e.g. `("/", "cluster: films, timeout: 1s")`.
    pub fn routes(routes: &[(&str, &str)]) -> String {
        let routes: String = routes
            .iter()
            .map(|(prefix, action)| {
                format!("\n              - match: {{ prefix: \"{prefix}\" }}\n                route: {{ {action} }}")
            })
            .collect();
        format!("            - name: all\n              domains: [\"*\"]\n              routes:{routes}")
    }

    /// A plain listener `<stat_prefix>_listener` whose connection manager
    /// routes as [`routes`] does.
    pub fn route_listener(addr: SocketAddr, stat_prefix: &str, routes: &[(&str, &str)]) -> String {
        listener(&format!("{stat_prefix}_listener"), addr, &hcm(stat_prefix, "", &self::routes(routes)))
    }

    /// `listener` with a TLS transport socket whose certificate and key are inline PEM.
    pub fn with_inline_tls(listener: &str, cert_pem: &str, key_pem: &str) -> String {
        let block = |pem: &str| pem.lines().map(|l| format!("\n                  {l}")).collect::<String>();
        let tls = format!(
            r#"    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain:
                inline_string: |{cert}
              private_key:
                inline_string: |{key}
      filters:"#,
            cert = block(cert_pem),
            key = block(key_pem)
        );
        listener.replace("    - filters:", &tls)
    }

    /// [`bootstrap`] with the admin interface on `admin`.
    pub fn bootstrap_with_admin(admin: SocketAddr, listeners: &[String], clusters: &[String]) -> String {
        format!("{}{}", self::admin(admin), bootstrap(listeners, clusters))
    }

    pub fn bootstrap(listeners: &[String], clusters: &[String]) -> String {
        format!(
            "static_resources:\n  listeners:{}\n  clusters:{}\n",
            listeners.concat(),
            if clusters.is_empty() { " []".to_string() } else { clusters.concat() }
        )
    }
}
