//! rating-service over real sockets: in-process on a loopback port, and as
//! the built binary (healthcheck subcommand, SIGTERM with a request in
//! flight).

use std::time::Duration;

use poem::http::HeaderValue;
use rating_service::{app, AppState, MIGRATIONS};
use serde_json::{json, Value};
use service_common::db::{Database, PoolArgs};
use service_common::testing::{promtool_check, ChildService, LoopbackServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BINARY: &str = env!("CARGO_BIN_EXE_rating-service");

#[tokio::test]
async fn serves_over_a_socket_and_metrics_pass_promtool() {
    let db = Database::open("sqlite::memory:", &PoolArgs::default(), MIGRATIONS).unwrap();
    db.migrate().await.unwrap();
    let state = AppState::new(db, HeaderValue::from_static("replica-a")).unwrap();
    let server = LoopbackServer::start(app(state)).await;
    let http = reqwest::Client::new();
    let base = server.url();

    // The old clients' exact request: curl --data, so a form content type,
    // single quotes, newlines and tabs.
    let resp = http
        .post(format!("{base}/ratings"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("{\n\t\t'name': 'Citizen Kane',\n\t\t'rating': '5'\n\t}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["x-served-by"], "replica-a");
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["rating"], json!(5.0));

    for path in ["/ratings", "/ratings/not-a-uuid", "/nope", "/healthz"] {
        let resp = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.headers()["x-served-by"], "replica-a", "{path}");
    }
    let resp = http.delete(format!("{base}/ratings")).send().await.unwrap();
    assert_eq!(resp.status(), 405);

    let resp = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains(r#"route="/ratings/{id}",status="400""#), "{text}");
    assert!(text.contains(r#"http_requests_total{method="DELETE",route="/ratings",status="405"} 1"#));
    promtool_check(&text).unwrap();

    server.shutdown().await.unwrap().unwrap();
}

#[test]
fn binary_healthcheck_subcommand() {
    let service = ChildService::start(BINARY, &["--database-url", "sqlite::memory:"], &[], "rating-service listening");
    let url = format!("http://{}/healthz", service.addr);
    let out = std::process::Command::new(BINARY).args(["healthcheck", "--url", &url]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("answered 200"));

    // Default URL: derived from --listen / LISTEN_ADDR.
    let out = std::process::Command::new(BINARY)
        .args(["healthcheck"])
        .env("LISTEN_ADDR", service.addr.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // A path that answers 404, and a port nobody listens on.
    let out = std::process::Command::new(BINARY)
        .args(["healthcheck", "--url", &format!("http://{}/nope", service.addr)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("answered 404"), "{out:?}");
    let dead = service_common::testing::dead_addr();
    let out = std::process::Command::new(BINARY)
        .args(["healthcheck", "--url", &format!("http://{dead}/healthz")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("unhealthy: GET http://"), "{stderr}");
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_then_exits_zero() {
    let mut service =
        ChildService::start(BINARY, &["--database-url", "sqlite::memory:"], &[], "rating-service listening");
    let body = r#"{"name": "Heat", "rating": 4}"#;
    let (first, rest) = body.split_at(10);

    // A first request proves the connection is accepted and served; then
    // the head and part of a body, so a request is in flight.
    let mut conn = tokio::net::TcpStream::connect(service.addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(r#"{"status":"ok"}"#) {
        let mut buf = [0; 1024];
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let head = format!(
        "POST /ratings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{first}",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    service.sigterm();
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.write_all(rest.as_bytes()).await.unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(response.contains(r#""name":"Heat""#), "{response}");

    let status = tokio::task::spawn_blocking(move || service.wait_with_log(Duration::from_secs(10))).await.unwrap();
    assert!(status.0.success(), "{status:?}");
    assert!(status.1.iter().any(|l| l.contains("SIGTERM received")), "{:?}", status.1);
}
