//! rating-service's database, with the built binary and real databases:
//! five replicas migrating one PostgreSQL database at once, PostgreSQL
//! going away and coming back (503, not ready, recovery by itself), a
//! service started before its database, a SQLite file kept across a
//! restart, and bad database URLs.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use service_common::testing::{fresh_postgres_database, ChildService, PgCluster};

const BINARY: &str = env!("CARGO_BIN_EXE_rating-service");
const READY: &str = "rating-service listening";

fn start(database_url: &str) -> ChildService {
    ChildService::start(BINARY, &["--database-url", database_url], &[], READY)
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let resp = http.get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Polls `url` until it answers `status`, for at most `within`.
async fn wait_for_status(http: &reqwest::Client, url: &str, status: u16, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (got, body) = get(http, url).await;
        if got == status {
            return body;
        }
        assert!(Instant::now() < deadline, "{url} still answers {got} {body} after {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post_rating(http: &reqwest::Client, base: &str, name: &str) -> (u16, Value) {
    let resp = http.post(format!("{base}/ratings")).json(&json!({"name": name, "rating": 4})).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn five_replicas_migrate_one_database_at_once() {
    let url = fresh_postgres_database().await;
    // Started back to back: their migrations overlap (each waits for the
    // previous one only to have bound its port, not to have migrated).
    let replicas: Vec<ChildService> = (0..5).map(|_| start(&url)).collect();
    let http = reqwest::Client::new();
    for replica in &replicas {
        wait_for_status(&http, &format!("http://{}/healthz", replica.addr), 200, Duration::from_secs(20)).await;
    }
    for replica in &replicas {
        let mut lines = replica.log_lines_until("database ready", Duration::from_secs(10));
        assert!(lines.iter().any(|l| l.contains("database ready")), "{lines:?}");
        lines.extend(replica.log_lines());
        assert!(!lines.iter().any(|l| l.contains("not ready")), "a replica's migration failed: {lines:?}");
    }
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.unwrap();
    let (applied,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM _sqlx_migrations WHERE success").fetch_one(&mut conn).await.unwrap();
    assert_eq!(applied as usize, rating_service::MIGRATIONS.postgres.iter().count());

    // One database: what one replica stores, every replica reads.
    let (status, created) = post_rating(&http, &format!("http://{}", replicas[0].addr), "Heat").await;
    assert_eq!(status, 201, "{created}");
    for replica in &replicas {
        let (status, body) =
            get(&http, &format!("http://{}/ratings/{}", replica.addr, created["id"].as_str().unwrap())).await;
        assert_eq!((status, body), (200, created.clone()));
    }
}

#[tokio::test]
async fn database_down_is_503_not_ready_and_recovers_by_itself() {
    let cluster = PgCluster::start();
    let service = start(&cluster.url("postgres"));
    let base = format!("http://{}", service.addr);
    let http = reqwest::Client::new();
    wait_for_status(&http, &format!("{base}/healthz"), 200, Duration::from_secs(20)).await;
    let (status, created) = post_rating(&http, &base, "Heat").await;
    assert_eq!(status, 201);
    let rating_url = format!("{base}/ratings/{}", created["id"].as_str().unwrap());

    cluster.stop();
    let unavailable = json!({"error": "database unavailable; try again later"});
    // The first use of each pooled connection finds it broken; every answer
    // is a 503 with the same message.
    for _ in 0..8 {
        assert_eq!(get(&http, &rating_url).await, (503, unavailable.clone()));
    }
    assert_eq!(post_rating(&http, &base, "Ronin").await, (503, unavailable.clone()));
    let (status, health) = get(&http, &format!("{base}/healthz")).await;
    assert_eq!(status, 503);
    assert!(health["error"].as_str().unwrap().starts_with("not ready: database unavailable"), "{health}");
    // The health check subcommand (Docker's) says unhealthy.
    let out = std::process::Command::new(BINARY)
        .args(["healthcheck", "--listen", &service.addr.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    cluster.restart();
    wait_for_status(&http, &format!("{base}/healthz"), 200, Duration::from_secs(20)).await;
    // Every pooled connection is usable again, and nothing was lost.
    for _ in 0..8 {
        assert_eq!(get(&http, &rating_url).await, (200, created.clone()));
    }
    assert_eq!(post_rating(&http, &base, "Ronin").await.0, 201);
}

#[tokio::test]
async fn a_service_started_before_its_database_waits_for_it() {
    let cluster = PgCluster::start();
    let url = cluster.url("postgres");
    cluster.stop();
    let service = start(&url);
    let base = format!("http://{}", service.addr);
    let http = reqwest::Client::new();
    let (status, health) = get(&http, &format!("{base}/healthz")).await;
    assert_eq!(status, 503);
    assert!(health["error"].as_str().unwrap().contains("schema is not ready"), "{health}");
    assert_eq!(
        get(&http, &format!("{base}/ratings")).await,
        (503, json!({"error": "database unavailable; try again later"}))
    );

    cluster.restart();
    wait_for_status(&http, &format!("{base}/healthz"), 200, Duration::from_secs(30)).await;
    assert_eq!(post_rating(&http, &base, "Heat").await.0, 201);
    // Its first migration may be waiting on a connection when the database
    // returns (then no "not ready" line is written): only the outcome is sure.
    let lines = service.log_lines_until("database ready", Duration::from_secs(5));
    assert!(lines.iter().any(|l| l.contains("database ready")), "{lines:?}");
}

#[tokio::test]
async fn a_sqlite_file_keeps_every_rating_across_a_restart() {
    let dir = std::env::temp_dir().join(format!("ratings-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("ratings.db").display());
    let http = reqwest::Client::new();

    let mut first = start(&url);
    let base = format!("http://{}", first.addr);
    let mut made = Vec::new();
    for name in ["Heat", "Ronin", "Heat"] {
        let (status, body) = post_rating(&http, &base, name).await;
        assert_eq!(status, 201);
        made.push(body);
    }
    first.sigterm();
    assert!(tokio::task::spawn_blocking(move || first.wait(Duration::from_secs(10))).await.unwrap().success());

    let second = start(&url);
    let base = format!("http://{}", second.addr);
    assert_eq!(get(&http, &format!("{base}/ratings")).await, (200, json!(made)));
    drop(second);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_database_urls_are_refused_at_start() {
    let run = |url: &str| {
        std::process::Command::new(BINARY).args(["--listen", "127.0.0.1:0", "--database-url", url]).output().unwrap()
    };
    let out = run("mysql://x@y/z");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(r#"--database-url / DATABASE_URL: database URL "mysql://x@y/z" is invalid"#), "{stderr}");

    let out = run("sqlite:///nonexistent-directory/ratings.db");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: cannot open the database sqlite:///nonexistent-directory/ratings.db"), "{stderr}");
}
