//! STRICT_DNS clusters against a real DNS server on loopback whose records
//! the tests change: scale up and down, names that do not exist yet, and
//! failing lookups. Addresses: 127.0.2.x.

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use support::proxy::PendingProxy;
use support::{client, eventually, free_port, ip, yaml, Backend, ProxyProcess, TestDns};

const ROUTES: &str = r#"
            - name: backend
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: films }"#;

/// Three replicas on 127.0.2.<base>..<base+2>, all on one port, as compose
/// replicas are; a DNS server; a proxy re-resolving every 200 ms.
async fn setup(base: u8, dns_extra: &str) -> (Vec<Backend>, TestDns, PendingProxy, SocketAddr) {
    let named = [("replica-1", ip(2, base)), ("replica-2", ip(2, base + 1)), ("replica-3", ip(2, base + 2))];
    let backends = Backend::start_on_one_port(&named).await;
    let port = backends[0].addr.port();
    let dns = TestDns::start(ip(2, base)).await;
    let listen = SocketAddr::new(ip(2, base), free_port(ip(2, base)));
    let extra = format!(
        "    dns_refresh_rate: 0.2s\n    dns_lookup_family: V4_ONLY\n{}\n{dns_extra}",
        yaml::resolver(dns.addr)
    );
    let cfg = yaml::bootstrap(
        &[yaml::listener("main", listen, &yaml::hcm("ingress", "", ROUTES))],
        &[yaml::cluster("films", "STRICT_DNS", &[("films.svc.test".into(), port)], &extra)],
    );
    (backends, dns, ProxyProcess::empty(cfg), listen)
}

fn ips(backends: &[Backend], n: usize) -> Vec<IpAddr> {
    backends.iter().take(n).map(|b| b.addr.ip()).collect()
}

/// Sends `n` requests; returns (replica -> count, failures).
async fn drive(listen: SocketAddr, n: usize) -> (HashMap<String, usize>, Vec<String>) {
    let c = client();
    let mut seen = HashMap::new();
    let mut failures = Vec::new();
    for i in 0..n {
        match c.get(format!("http://{listen}/films/{i}")).send().await {
            Ok(r) if r.status() == 200 => {
                let who = r.headers()["x-served-by"].to_str().unwrap().to_string();
                *seen.entry(who).or_insert(0) += 1;
            }
            Ok(r) => failures.push(format!("{i}: {}", r.status())),
            Err(e) => failures.push(format!("{i}: {e}")),
        }
    }
    (seen, failures)
}

#[tokio::test]
async fn follows_dns_scale_up_and_down_with_even_round_robin() {
    let (backends, dns, proxy, listen) = setup(10, "").await;
    dns.set("films.svc.test", &ips(&backends, 1));
    let proxy = proxy.start_at(listen).await;

    let (seen, failures) = drive(listen, 30).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(seen.get("replica-1"), Some(&30), "{seen:?}");

    // Scale up 1 -> 3: the proxy follows within the refresh rate.
    dns.set("films.svc.test", &ips(&backends, 3));
    assert!(
        eventually(Duration::from_secs(5), || async { backends[2].hits() > 0 && backends[1].hits() > 0 }).await
            || drive(listen, 6).await.0.len() == 3,
        "new replicas never got traffic\n{}",
        proxy.log()
    );
    let (seen, failures) = drive(listen, 150).await;
    assert!(failures.is_empty(), "{failures:?}");
    for name in ["replica-1", "replica-2", "replica-3"] {
        let n = seen.get(name).copied().unwrap_or(0);
        assert!((45..=55).contains(&n), "{name} got {n} of 150: {seen:?}");
    }

    // Scale down 3 -> 2: replica-3 stays up but leaves DNS; it stops getting traffic.
    dns.set("films.svc.test", &ips(&backends, 2));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = backends[2].hits();
    let (seen, failures) = drive(listen, 100).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(backends[2].hits(), before, "a replica removed from DNS still got traffic: {seen:?}");
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[tokio::test]
async fn scale_down_under_load_costs_no_request() {
    let (backends, dns, proxy, listen) = setup(20, "").await;
    dns.set("films.svc.test", &ips(&backends, 3));
    let _proxy = proxy.start_at(listen).await;
    let load = tokio::spawn(drive(listen, 400));
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The replica leaves DNS and dies at the same moment, as `docker compose
    // up --scale` does; requests the proxy sends before its next refresh must
    // be retried on the survivors.
    dns.set("films.svc.test", &ips(&backends, 2));
    backends[2].stop();
    let (seen, failures) = load.await.unwrap();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(seen.contains_key("replica-1") && seen.contains_key("replica-2"), "{seen:?}");
}

#[tokio::test]
async fn serves_503_until_the_name_exists_then_routes_without_restart() {
    let (backends, dns, proxy, listen) = setup(30, "").await;
    // The name does not exist yet (NXDOMAIN), as when the proxy starts before its upstreams.
    let proxy = proxy.start_at(listen).await;
    let r = client().get(format!("http://{listen}/films")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().await.unwrap(), "no healthy upstream");

    dns.set("films.svc.test", &ips(&backends, 1));
    let routed = eventually(Duration::from_secs(5), || async {
        matches!(client().get(format!("http://{listen}/films")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(routed, "never routed after the name appeared\n{}", proxy.log());
}

#[tokio::test]
async fn failed_lookups_keep_the_last_good_hosts() {
    let (backends, dns, proxy, listen) = setup(40, "").await;
    dns.set("films.svc.test", &ips(&backends, 2));
    let proxy = proxy.start_at(listen).await;
    let (seen, _) = drive(listen, 10).await;
    assert_eq!(seen.len(), 2);
    dns.set_failing(true);
    let queries = dns.queries();
    assert!(eventually(Duration::from_secs(5), || async { dns.queries() > queries + 2 }).await);
    let (seen, failures) = drive(listen, 20).await;
    assert!(failures.is_empty(), "{failures:?}\n{}", proxy.log());
    assert_eq!(seen.len(), 2, "hosts kept through SERVFAIL: {seen:?}");
}

#[tokio::test]
async fn ttl_is_ignored_unless_respect_dns_ttl() {
    // Docker's DNS answers with TTL 600; the proxy must still re-resolve on its own schedule.
    let (backends, dns, proxy, listen) = setup(50, "").await;
    dns.set_ttl(600);
    dns.set("films.svc.test", &ips(&backends, 1));
    let _proxy = proxy.start_at(listen).await;
    let queries = dns.queries();
    assert!(
        eventually(Duration::from_secs(3), || async { dns.queries() >= queries + 5 }).await,
        "the proxy stopped asking: {} queries",
        dns.queries() - queries
    );

    let (backends2, dns2, proxy2, listen2) = setup(60, "    respect_dns_ttl: true").await;
    dns2.set_ttl(600);
    dns2.set("films.svc.test", &ips(&backends2, 1));
    let _proxy2 = proxy2.start_at(listen2).await;
    let q = dns2.queries();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(dns2.queries(), q, "respect_dns_ttl: no new query before the TTL expires");
}

#[tokio::test]
async fn resolver_tells_failures_from_empty_answers() {
    use frontend_proxy::upstream::dns::{HickoryResolver, Resolver};
    use frontend_proxy::upstream::{DnsSpec, LookupFamily};
    let dns = TestDns::start(ip(2, 70)).await;
    let spec = DnsSpec {
        refresh_rate: Duration::from_secs(1),
        failure_refresh: (Duration::from_secs(1), Duration::from_secs(1)),
        respect_ttl: false,
        lookup_family: LookupFamily::V4Only,
        resolvers: vec![dns.addr],
    };
    let r = HickoryResolver::new(&spec).unwrap();
    dns.set("a.test", &[ip(2, 71), ip(2, 72)]);
    let res = r.resolve("a.test").await.unwrap();
    assert_eq!(res.addrs, vec![ip(2, 71), ip(2, 72)]);
    assert_eq!(res.ttl, Some(Duration::from_secs(600)));
    dns.remove("a.test");
    assert!(r.resolve("a.test").await.unwrap().addrs.is_empty(), "NXDOMAIN is an empty answer");
    dns.set_failing(true);
    let failed = r.resolve("a.test").await;
    assert!(failed.is_err(), "SERVFAIL must be an error, got {failed:?}");
}
