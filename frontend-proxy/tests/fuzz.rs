//! Property-based fuzzing (proptest) of the config loader and the route
//! matcher: they must never panic, whatever the input, and matching keeps
//! Envoy's order. (The HTTP/1.1 wire code has its own: `wire_fuzz.rs`.)
//!
//! CI runs the default 256 cases per property. Run longer with
//! `PROPTEST_CASES=100000 cargo test -p frontend-proxy --test fuzz --release`.

use frontend_proxy::config;
use pingora_http::RequestHeader;
use proptest::prelude::*;
use serde_yaml::{Mapping, Value};

/// Keys that appear in Envoy bootstraps, so generated trees reach deep validation.
const KEYS: &[&str] = &[
    "admin",
    "address",
    "socket_address",
    "port_value",
    "static_resources",
    "listeners",
    "clusters",
    "name",
    "filter_chains",
    "filters",
    "typed_config",
    "@type",
    "stat_prefix",
    "route_config",
    "virtual_hosts",
    "domains",
    "routes",
    "match",
    "prefix",
    "path",
    "safe_regex",
    "regex",
    "route",
    "cluster",
    "weighted_clusters",
    "weight",
    "timeout",
    "retry_policy",
    "retry_on",
    "num_retries",
    "http_filters",
    "type",
    "lb_policy",
    "load_assignment",
    "endpoints",
    "lb_endpoints",
    "endpoint",
    "connect_timeout",
    "dns_refresh_rate",
    "health_checks",
    "interval",
    "http_health_check",
    "outlier_detection",
    "circuit_breakers",
    "thresholds",
    "headers",
    "string_match",
    "exact",
    "direct_response",
    "status",
    "body",
    "inline_string",
    "redirect",
    "transport_socket",
    "codec_type",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|n| Value::Number(n.into())),
        "[ -~]{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "0.25s",
            "5s",
            "-1s",
            "1.5s",
            "99999999999s",
            "*",
            "*.a.com",
            "a.*",
            "/films",
            "STRICT_DNS",
            "STATIC",
            "ROUND_ROBIN",
            "MAGLEV",
            "envoy.filters.http.router",
            "envoy.filters.network.http_connection_manager",
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "127.0.0.1",
            "0.0.0.0",
            "::1",
            "localhost",
            "(",
            "[a-",
            "5xx,reset",
            "%REQ(x)%",
            "%",
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(6, 200, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kvs| {
                let mut m = Mapping::new();
                for (k, v) in kvs {
                    m.insert(Value::String(k.to_string()), v);
                }
                Value::Mapping(m)
            }),
        ]
    })
}

proptest! {
    #[test]
    fn loader_never_panics_on_generated_trees(v in tree()) {
        let text = serde_yaml::to_string(&v).unwrap();
        let _ = config::parse(&text);
    }

    #[test]
    fn loader_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
        let _ = config::parse(&text);
    }

    #[test]
    fn loader_never_panics_on_mutated_seed(cut in 0usize..2500, junk in "[ -~\n]{0,8}") {
        let seed = include_str!("fixtures/valid/everything.yaml");
        let cut = cut.min(seed.len());
        let cut = (0..=cut).rev().find(|i| seed.is_char_boundary(*i)).unwrap_or(0);
        let text = format!("{}{}{}", &seed[..cut], junk, &seed[cut..]);
        let _ = config::parse(&text);
    }
}

fn table() -> config::Bootstrap {
    let yaml = include_str!("fixtures/valid/everything.yaml");
    config::parse(yaml).expect("fixture loads").bootstrap
}

proptest! {
    #[test]
    fn route_matching_never_panics(
        host in "[a-zA-Z0-9.:*\\-]{0,40}",
        path in "/[ -~]{0,60}",
        header in "[ -~]{0,20}",
    ) {
        let b = table();
        let routes = &b.listeners[0].hcm().unwrap().routes;
        if let Some(vh) = routes.find_virtual_host(&host, 8080) {
            if let Ok(mut req) = RequestHeader::build("GET", path.as_bytes(), None) {
                let _ = req.insert_header("x-canary", header.as_str());
                let _ = vh.find_route(&req);
            }
        }
    }

    #[test]
    fn exact_domains_beat_wildcards(sub in "[a-z]{1,10}") {
        let b = table();
        let routes = &b.listeners[0].hcm().unwrap().routes;
        prop_assert_eq!(&routes.find_virtual_host("api.example.com", 8080).unwrap().name, "api");
        let wildcard = format!("{sub}.api.example.com");
        prop_assert_eq!(&routes.find_virtual_host(&wildcard, 8080).unwrap().name, "api");
        // `api.elsewhere.org` is the fixture's suffix wildcard `api.*`.
        prop_assume!(sub != "api");
        let other = format!("{sub}.elsewhere.org");
        prop_assert_eq!(&routes.find_virtual_host(&other, 8080).unwrap().name, "default");
    }
}

proptest! {
    /// The connection manager's path normalization, through the facade the
    /// libFuzzer target uses: any bytes, any settings.
    #[test]
    fn path_normalization_never_panics_and_is_idempotent(options in any::<u8>(), target in prop::collection::vec(any::<u8>(), 0..64)) {
        let result = frontend_proxy::fuzzing::check_path_normalization(options, &target);
        prop_assert!(result.is_ok(), "{:?}", result);
    }
}

/// The libFuzzer target's seeds pass its checks.
#[test]
fn path_normalization_seeds_pass() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/path_normalization");
    let mut seeds = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let (&options, target) = data.split_first().unwrap();
        assert_eq!(frontend_proxy::fuzzing::check_path_normalization(options, target), Ok(()));
        seeds += 1;
    }
    assert!(seeds > 0);
}

proptest! {
    /// `tls_inspector`'s ClientHello reading, through the facade the
    /// libFuzzer target uses: a real ClientHello with bytes flipped, cut or
    /// added (random bytes alone seldom look like a record header).
    #[test]
    fn client_hello_reading_never_panics(
        seed in 0usize..4,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut data = client_hello_seeds()[seed % client_hello_seeds().len()].clone();
        for (at, byte) in flips {
            let i = at.index(data.len());
            data[i] = byte;
        }
        data.truncate(cut.index(data.len() + 1));
        let result = frontend_proxy::fuzzing::check_client_hello(&data);
        prop_assert!(result.is_ok(), "{:?}", result);
    }
}

/// Real ClientHellos (`openssl s_client`: SNI and ALPN, no SNI, TLS 1.2, and
/// the first split across two records): the libFuzzer target's seeds.
fn client_hello_seeds() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/client_hello");
    let mut seeds: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    seeds.sort();
    seeds.into_iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// The seeds read as ClientHellos (the split one as the whole) and pass the
/// target's checks.
#[test]
fn client_hello_seeds_pass() {
    use frontend_proxy::chain_match::tls_inspector::{parse_client_hello, Peeked};
    let seeds = client_hello_seeds();
    assert_eq!(seeds.len(), 4);
    for data in &seeds {
        assert!(matches!(parse_client_hello(data), Peeked::Tls(_)), "{:?}", parse_client_hello(data));
        assert_eq!(frontend_proxy::fuzzing::check_client_hello(data), Ok(()));
    }
    assert_eq!(parse_client_hello(&seeds[0]), parse_client_hello(&seeds[3]));
    match parse_client_hello(&seeds[0]) {
        Peeked::Tls(hello) => {
            assert_eq!(hello.server_name.as_deref(), Some("a.example.com"));
            assert_eq!(hello.alpn, ["h2", "http/1.1"]);
        }
        other => panic!("{other:?}"),
    }
}
