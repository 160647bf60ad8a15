//! The lifecycle's decisions, on a proxy built from a real bootstrap: which
//! failures are retried and where, what the client is told, and what the
//! response head gets.

use super::*;
use crate::config;
use crate::proxy::attempt::AttemptFailure;
use crate::proxy::{ListenerRuntime, IDEMPOTENT_RESET_RETRIES};
use crate::upstream::{Cluster, ClusterSet};
use pingora_http::ResponseHeader;
use std::sync::Arc;

/// A proxy with one listener routing `/retry` (retry on 5xx and resets,
/// two retries), `/plain` (no policy) and `/short` (a 1 ms route timeout) to
/// a STATIC cluster of `hosts` endpoints.
async fn proxy(hosts: u16, cluster_extra: &str) -> Proxy {
    let endpoints: String = (0..hosts)
        .map(|i| {
            format!(
                "\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}",
                1000 + i
            )
        })
        .collect();
    let yaml = format!(
        r#"
static_resources:
  listeners:
  - name: l
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 8080 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: t
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/retry" }}
                route:
                  cluster: c
                  retry_policy: {{ retry_on: "5xx,reset", num_retries: 2 }}
              - match: {{ prefix: "/short" }}
                route: {{ cluster: c, timeout: 0.001s }}
              - match: {{ prefix: "/" }}
                route: {{ cluster: c }}
          http_filters:
          - name: envoy.filters.http.router
  clusters:
  - name: c
    connect_timeout: 1s
    type: STATIC{cluster_extra}
    load_assignment:
      cluster_name: c
      endpoints:
      - lb_endpoints:{endpoints}
"#
    );
    let loaded = match config::parse(&yaml) {
        Ok(l) => l,
        Err(e) => panic!("test bootstrap: {e}"),
    };
    let mut clusters = Vec::new();
    for spec in loaded.bootstrap.clusters {
        let cluster = Arc::new(Cluster::new(spec, None).unwrap());
        cluster.refresh().await;
        clusters.push(cluster);
    }
    let listeners =
        loaded.bootstrap.listeners.into_iter().map(|l| Arc::new(ListenerRuntime::new(l, Vec::new()))).collect();
    Proxy::new(listeners, Arc::new(ClusterSet::new(clusters)))
}

fn request(method: &str, path: &str) -> RequestHeader {
    let mut req = RequestHeader::build(method, path.as_bytes(), None).unwrap();
    req.insert_header("host", "films").unwrap();
    req
}

/// A request admitted and routed, ready for its first attempt.
fn admitted(p: &Proxy, method: &str, path: &str) -> RequestCtx {
    let mut ctx = RequestCtx::new();
    let reply = p.admit(&mut request(method, path), false, false, &mut ctx).unwrap();
    assert!(reply.is_none(), "{method} {path}: {reply:?}");
    ctx
}

fn reset(idempotent: bool) -> AttemptFailure {
    AttemptFailure {
        timed_out: false,
        protocol_error: false,
        from_upstream: true,
        response_started: false,
        body_truncated: false,
        idempotent,
        reused_connection: false,
    }
}

#[tokio::test]
async fn a_failed_connect_moves_to_another_host_until_none_is_left() {
    let p = proxy(3, "").await;
    let mut ctx = admitted(&p, "POST", "/plain");
    let mut seen = Vec::new();
    loop {
        let attempt = p.begin_attempt(&mut ctx, false).await.unwrap();
        assert!(!seen.contains(&attempt.host.addr), "{} tried twice", attempt.host.addr);
        seen.push(attempt.host.addr.clone());
        if !p.connect_failed(&mut ctx, false) {
            break;
        }
    }
    // Without a retry policy, even a POST: the request never left.
    assert_eq!(seen.len(), 3);
    assert_eq!(ctx.retries, 2);
    assert_eq!(p.final_failure(&mut ctx, None), LocalReply::ConnectFailure { retried: true });
}

#[tokio::test]
async fn without_a_policy_only_idempotent_requests_are_retried_after_a_reset() {
    let p = proxy(3, "").await;
    let mut get = admitted(&p, "GET", "/plain");
    let mut tries = 0;
    loop {
        p.begin_attempt(&mut get, false).await.unwrap();
        tries += 1;
        if !p.attempt_failed(&mut get, reset(true)) {
            break;
        }
    }
    assert_eq!(tries, 1 + IDEMPOTENT_RESET_RETRIES);
    assert_eq!(p.final_failure(&mut get, None), LocalReply::UpstreamReset { retried: true });

    let mut post = admitted(&p, "POST", "/plain");
    p.begin_attempt(&mut post, false).await.unwrap();
    assert!(!p.attempt_failed(&mut post, reset(false)));
    assert_eq!(p.final_failure(&mut post, None), LocalReply::UpstreamReset { retried: false });
}

#[tokio::test]
async fn nothing_is_retried_once_the_response_started_or_the_body_streamed() {
    let p = proxy(3, "").await;
    for failure in [
        AttemptFailure { response_started: true, ..reset(true) },
        AttemptFailure { body_truncated: true, ..reset(true) },
        AttemptFailure { timed_out: true, ..reset(true) },
    ] {
        let mut ctx = admitted(&p, "GET", "/retry");
        p.begin_attempt(&mut ctx, false).await.unwrap();
        let retried = p.attempt_failed(&mut ctx, failure);
        let expect = failure.timed_out && !failure.response_started && !failure.body_truncated;
        assert_eq!(retried, expect, "{failure:?}");
    }
}

#[tokio::test]
async fn a_protocol_error_is_a_502_and_a_timeout_a_504() {
    let p = proxy(1, "").await;
    let mut ctx = admitted(&p, "POST", "/plain");
    p.begin_attempt(&mut ctx, false).await.unwrap();
    assert!(!p.attempt_failed(&mut ctx, AttemptFailure { protocol_error: true, ..reset(false) }));
    let reply = p.final_failure(&mut ctx, None);
    assert_eq!((reply.status().as_u16(), reply.clone()), (502, LocalReply::UpstreamProtocolError { retried: false }));

    let mut ctx = admitted(&p, "POST", "/plain");
    p.begin_attempt(&mut ctx, false).await.unwrap();
    assert!(!p.attempt_failed(&mut ctx, AttemptFailure { timed_out: true, ..reset(false) }));
    assert_eq!(p.final_failure(&mut ctx, None).status().as_u16(), 504);
}

#[tokio::test]
async fn a_retry_policy_retries_statuses_on_other_hosts_up_to_num_retries() {
    let p = proxy(3, "").await;
    let mut ctx = admitted(&p, "POST", "/retry");
    let mut hosts = Vec::new();
    loop {
        let attempt = p.begin_attempt(&mut ctx, false).await.unwrap();
        hosts.push(attempt.host.addr.clone());
        if !p.upstream_answered(&mut ctx, 503, false) {
            break;
        }
        p.record_retry(&mut ctx);
    }
    assert_eq!(hosts.len(), 3, "one try and two retries");
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), 3, "each retry went to a host not tried before");
    // A status the policy does not name, or a body that streamed, ends it.
    let mut ctx = admitted(&p, "POST", "/retry");
    p.begin_attempt(&mut ctx, false).await.unwrap();
    assert!(!p.upstream_answered(&mut ctx, 404, false));
    assert!(!p.upstream_answered(&mut ctx, 503, true));
}

#[tokio::test]
async fn an_attempt_after_the_route_timeout_is_refused_with_504() {
    let p = proxy(1, "").await;
    let mut ctx = admitted(&p, "GET", "/short");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(p.begin_attempt(&mut ctx, false).await.err(), Some(Refused::Timeout));
    assert_eq!(p.final_failure(&mut ctx, Some(Refused::Timeout)), LocalReply::Timeout);
}

#[tokio::test]
async fn the_circuit_breaker_refuses_what_is_over_its_limit() {
    let p = proxy(1, "\n    circuit_breakers: { thresholds: [ { max_requests: 1 } ] }").await;
    let mut first = admitted(&p, "GET", "/plain");
    p.begin_attempt(&mut first, false).await.unwrap();
    let mut second = admitted(&p, "GET", "/plain");
    assert_eq!(p.begin_attempt(&mut second, false).await.err(), Some(Refused::Overflow));
    assert_eq!(p.final_failure(&mut second, Some(Refused::Overflow)), LocalReply::Overflow);
    drop(first);
    let mut third = admitted(&p, "GET", "/plain");
    assert!(p.begin_attempt(&mut third, false).await.is_ok(), "the slot came back");
}

#[tokio::test]
async fn requests_without_one_valid_host_are_refused_before_routing() {
    let p = proxy(1, "").await;
    let mut ctx = RequestCtx::new();
    let mut two = request("GET", "/plain");
    two.append_header("host", "other").unwrap();
    assert_eq!(p.admit(&mut two, false, false, &mut ctx).unwrap(), Some(LocalReply::BadRequest));
    let mut none = RequestHeader::build("GET", b"/plain", None).unwrap();
    let mut ctx = RequestCtx::new();
    assert_eq!(p.admit(&mut none, false, false, &mut ctx).unwrap(), Some(LocalReply::BadRequest));
    assert!(ctx.route.is_none());
}

#[tokio::test]
async fn the_response_head_gets_the_proxys_fields_once() {
    let p = proxy(1, "").await;
    let mut ctx = admitted(&p, "GET", "/plain");
    p.begin_attempt(&mut ctx, false).await.unwrap();
    p.upstream_answered(&mut ctx, 200, false);
    let mut resp = ResponseHeader::build(200, None).unwrap();
    resp.append_header("server", "upstream").unwrap();
    resp.append_header("x-envoy-upstream-service-time", "999999").unwrap();
    resp.append_header("connection", "x-secret").unwrap();
    resp.append_header("x-secret", "1").unwrap();
    p.downstream_headers(&mut resp, &ctx).unwrap();
    let h = &resp.headers;
    assert_eq!(h.get_all("server").iter().collect::<Vec<_>>(), ["envoy"], "overwritten by default");
    assert_eq!(h.get_all("x-envoy-upstream-service-time").iter().count(), 1);
    assert_ne!(h.get("x-envoy-upstream-service-time").unwrap(), "999999");
    assert!(h.get("x-secret").is_none(), "named by the upstream's Connection");
    assert!(httpdate::parse_http_date(h.get("date").unwrap().to_str().unwrap()).is_ok());

    let mut dated = ResponseHeader::build(200, None).unwrap();
    dated.append_header("date", "Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
    p.downstream_headers(&mut dated, &ctx).unwrap();
    assert_eq!(dated.headers.get_all("date").iter().collect::<Vec<_>>(), ["Sun, 06 Nov 1994 08:49:37 GMT"]);
}

/// The same edits on a head without the case map (an HTTP/2 client's, the
/// native engine's), which are made on the `http` head directly.
#[tokio::test]
async fn a_head_without_case_gets_the_same_fields() {
    let p = proxy(1, "").await;
    let mut ctx = admitted(&p, "GET", "/plain");
    p.begin_attempt(&mut ctx, false).await.unwrap();
    p.upstream_answered(&mut ctx, 200, false);
    let mut resp = ResponseHeader::build(200, None).unwrap();
    resp.append_header("Server", "upstream").unwrap();
    resp.append_header("x-envoy-upstream-service-time", "999999").unwrap();
    resp.append_header("connection", "x-secret, keep-alive").unwrap();
    resp.append_header("x-secret", "1").unwrap();
    resp.append_header("keep-alive", "timeout=5").unwrap();
    resp.append_header("x-kept", "a").unwrap();
    resp.append_header("x-kept", "b").unwrap();
    crate::proxy::response_head::forget_case(&mut resp);
    assert!(!resp.has_case());
    resp.set_reason_phrase(Some("Fine")).unwrap();
    p.downstream_headers(&mut resp, &ctx).unwrap();
    assert!(!resp.has_case());
    let h = &resp.headers;
    assert_eq!(h.get_all("server").iter().collect::<Vec<_>>(), ["envoy"], "overwritten by default");
    assert_eq!(h.get_all("x-envoy-upstream-service-time").iter().count(), 1);
    assert_ne!(h.get("x-envoy-upstream-service-time").unwrap(), "999999");
    assert!(h.get("x-secret").is_none(), "named by the upstream's Connection");
    assert!(h.get("keep-alive").is_none(), "hop-by-hop");
    assert_eq!(h.get_all("x-kept").iter().collect::<Vec<_>>(), ["a", "b"]);
    assert!(httpdate::parse_http_date(h.get("date").unwrap().to_str().unwrap()).is_ok());
    assert_eq!(resp.get_reason_phrase(), Some("Fine"), "an own reason phrase is kept");
    assert!(h.get("x-envoy-upstream-service-time").unwrap().is_sensitive(), "never indexed by HPACK");
    assert!(!h.get("server").unwrap().is_sensitive());
}

/// Values unique to a request are marked sensitive, so that an HTTP/2
/// encoder writes them as literals and keeps them out of its dynamic table.
#[tokio::test]
async fn a_request_id_is_never_indexed() {
    let p = proxy(1, "").await;
    for client_id in [None, Some("from-the-client")] {
        let mut req = request("GET", "/plain");
        if let Some(id) = client_id {
            req.insert_header("x-request-id", id).unwrap();
        }
        let mut ctx = RequestCtx::new();
        assert!(p.admit(&mut req, false, false, &mut ctx).unwrap().is_none());
        let id = ctx.request_id.as_ref().expect("an id");
        assert!(id.is_sensitive(), "{client_id:?}");
        if let Some(client) = client_id {
            assert_eq!(id, client, "the client's id is kept");
        }
        let sent = req.headers.get("x-request-id").unwrap();
        assert_eq!(sent, id);
        assert!(sent.is_sensitive(), "{client_id:?}");
        assert!(!req.headers.get("host").unwrap().is_sensitive());
    }
}
