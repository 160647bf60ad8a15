//! film-service and rating-service together over real sockets, on real
//! databases: rating registration, what happens when rating-service is
//! down, slow or failing, concurrency across replicas sharing PostgreSQL,
//! a replica dying midway through a creation, graceful shutdown, metrics,
//! and the built binary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use film_service::rating_client::{RatingClient, Timeouts};
use poem::http::{HeaderValue, Method, StatusCode};
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response};
use rating_service::store::RatingStore;
use serde_json::{json, Value};
use service_common::db::{Database, PoolArgs};
use service_common::testing::{count_rows, fresh_postgres_database, promtool_check, ChildService, LoopbackServer};
use tokio::sync::mpsc;

const BINARY: &str = env!("CARGO_BIN_EXE_film-service");

/// A migrated database at `url`.
async fn database(url: &str, migrations: service_common::db::Migrations) -> Database {
    let db = Database::open(url, &PoolArgs::default(), migrations).unwrap();
    db.migrate().await.unwrap();
    db
}

/// Every stored rating.
async fn all_ratings(ratings: &RatingStore) -> Vec<rating_service::rating::Rating> {
    ratings.page(0, 1000).await.unwrap().items
}

/// rating-service on a loopback port, and a handle on what it stores.
async fn rating_service() -> (LoopbackServer, RatingStore) {
    rating_service_with(|ep| ep).await
}

/// rating-service with its endpoint wrapped by `wrap` (to slow it down).
async fn rating_service_with<F, E>(wrap: F) -> (LoopbackServer, RatingStore)
where
    F: FnOnce(poem::endpoint::BoxEndpoint<'static, Response>) -> E,
    E: Endpoint + 'static,
{
    let db = database("sqlite::memory:", rating_service::MIGRATIONS).await;
    let state = rating_service::AppState::new(db, HeaderValue::from_static("rating-replica")).unwrap();
    let ratings = state.ratings.clone();
    let server = LoopbackServer::start(wrap(rating_service::app(state).boxed())).await;
    (server, ratings)
}

/// rating-service that answers POSTs only after `delay`; with `store_first`
/// it stores the rating before waiting, otherwise after. The receiver gets
/// a message as each POST arrives, so tests need not guess with sleeps.
async fn slow_rating_service(
    delay: Duration,
    store_first: bool,
) -> (LoopbackServer, RatingStore, mpsc::UnboundedReceiver<()>) {
    let (arrived, arrivals) = mpsc::unbounded_channel();
    let (server, ratings) = rating_service_with(move |ep| {
        ep.around(move |ep, req: Request| {
            let arrived = arrived.clone();
            async move {
                if req.method() != Method::POST {
                    return ep.call(req).await;
                }
                let _ = arrived.send(());
                if store_first {
                    let resp = ep.call(req).await;
                    tokio::time::sleep(delay).await;
                    resp
                } else {
                    tokio::time::sleep(delay).await;
                    ep.call(req).await
                }
            }
        })
    })
    .await;
    (server, ratings, arrivals)
}

/// film-service on a loopback port with a database of its own,
/// registering ratings at `rating_url`.
async fn film_service(rating_url: &str, timeouts: Timeouts) -> LoopbackServer {
    film_replica(&database("sqlite::memory:", film_service::MIGRATIONS).await, rating_url, timeouts, "film-replica")
        .await
}

/// A film-service replica on `db` answering as `host`.
async fn film_replica(db: &Database, rating_url: &str, timeouts: Timeouts, host: &'static str) -> LoopbackServer {
    let client = RatingClient::new(rating_url, timeouts).unwrap();
    let state = film_service::AppState::new(db.clone(), client, HeaderValue::from_static(host)).unwrap();
    LoopbackServer::start(film_service::app(Arc::new(state))).await
}

async fn get_json(http: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let resp = http.get(url).send().await.unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    (status, resp.json().await.unwrap())
}

async fn post_film(http: &reqwest::Client, base: &str, name: &str) -> (StatusCode, Value) {
    let resp =
        http.post(format!("{base}/films")).json(&json!({"name": name, "language": "English"})).send().await.unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn film_post_registers_its_rating_over_the_socket() {
    let (ratings_server, _) = rating_service().await;
    let films = film_service(&ratings_server.url(), Timeouts::default()).await;
    let http = reqwest::Client::new();

    // The old clients' exact request.
    let resp = http
        .post(format!("{}/films", films.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("{\n\t\t'name': 'Citizen Kane',\n\t\t'language': 'English'\n\t}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["x-served-by"], "film-replica");
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let film: Value = resp.json().await.unwrap();
    let id = film["id"].as_str().unwrap();
    assert_eq!(location, format!("/films/{id}"));

    let (status, rating) = get_json(&http, &format!("{}/ratings/{id}", ratings_server.url())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rating, json!({"id": id, "name": "Citizen Kane", "rating": 5.0}));
    let (status, fetched) = get_json(&http, &format!("{}{location}", films.url())).await;
    assert_eq!((status, fetched), (StatusCode::OK, film));
}

#[tokio::test]
async fn rating_service_down_stores_nothing_and_says_so() {
    let (ratings_server, _) = rating_service().await;
    let rating_url = ratings_server.url();
    ratings_server.shutdown().await.unwrap().unwrap();
    let films = film_service(&rating_url, Timeouts::default()).await;
    let http = reqwest::Client::new();

    let (status, body) = post_film(&http, &films.url(), "Heat").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, json!({"error": "film not stored: rating-service could not be reached; try again later"}));
    assert_eq!(get_json(&http, &format!("{}/films", films.url())).await, (StatusCode::OK, json!([])));
    let (status, _) = get_json(&http, &format!("{}/films?name=Heat", films.url())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rating_service_timeout_is_503_and_the_late_rating_is_removed() {
    // rating-service stores the rating but answers after the client gave up.
    let (ratings_server, ratings, _) = slow_rating_service(Duration::from_secs(2), true).await;
    let timeouts = Timeouts { connect: Duration::from_millis(500), total: Duration::from_millis(300) };
    let films = film_service(&ratings_server.url(), timeouts).await;
    let http = reqwest::Client::new();

    let started = Instant::now();
    let (status, body) = post_film(&http, &films.url(), "Heat").await;
    assert!(started.elapsed() < Duration::from_secs(2), "the timeout bounds the call");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, json!({"error": "film not stored: rating-service did not answer in time; try again later"}));
    assert_eq!(get_json(&http, &format!("{}/films", films.url())).await, (StatusCode::OK, json!([])));

    // The rating rating-service stored anyway is deleted in the background.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !all_ratings(&ratings).await.is_empty() {
        assert!(Instant::now() < deadline, "orphan rating not removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_film_is_invisible_until_its_rating_is_registered() {
    let (ratings_server, ratings, mut arrivals) = slow_rating_service(Duration::from_secs(1), false).await;
    let films = film_service(&ratings_server.url(), Timeouts::default()).await;
    let http = reqwest::Client::new();
    let base = films.url();

    let pending = tokio::spawn({
        let (http, base) = (http.clone(), base.clone());
        async move { post_film(&http, &base, "Heat").await }
    });
    arrivals.recv().await.unwrap();
    assert_eq!(get_json(&http, &format!("{base}/films")).await, (StatusCode::OK, json!([])));
    assert_eq!(get_json(&http, &format!("{base}/films?name=Heat")).await.0, StatusCode::NOT_FOUND);
    // The name is held, though: a concurrent POST cannot take it.
    let (status, body) = post_film(&http, &base, "Heat").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let (status, film) = pending.await.unwrap();
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(get_json(&http, &format!("{base}/films")).await, (StatusCode::OK, json!([film])));
    assert_eq!(all_ratings(&ratings).await.len(), 1);
}

#[tokio::test]
async fn a_film_whose_rating_fails_is_never_visible() {
    // Answers 500 after a delay, so the film is pending for a while.
    let refusing = poem::endpoint::make(|_req| async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        Ok::<_, poem::Error>((StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response())
    });
    let ratings_server = LoopbackServer::start(refusing).await;
    let films = film_service(&ratings_server.url(), Timeouts::default()).await;
    let http = reqwest::Client::new();
    let base = films.url();

    let pending = tokio::spawn({
        let (http, base) = (http.clone(), base.clone());
        async move { post_film(&http, &base, "Heat").await }
    });
    let mut polls = 0;
    while !pending.is_finished() {
        assert_eq!(get_json(&http, &format!("{base}/films")).await, (StatusCode::OK, json!([])));
        polls += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(polls > 3, "the POST was not pending long enough to observe");
    let (status, body) = pending.await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        body,
        json!({"error": "film not stored: rating-service refused its rating (500 Internal Server Error: boom)"})
    );
    assert_eq!(get_json(&http, &format!("{base}/films")).await, (StatusCode::OK, json!([])));
}

#[tokio::test]
async fn concurrent_posts_are_all_stored_and_names_stay_unique() {
    let (ratings_server, ratings) = rating_service().await;
    let films = film_service(&ratings_server.url(), Timeouts::default()).await;
    let http = reqwest::Client::new();
    let base = Arc::new(films.url());

    let distinct = (0..100).map(|i| {
        let (http, base) = (http.clone(), base.clone());
        tokio::spawn(async move { post_film(&http, &base, &format!("Film {i}")).await.0 })
    });
    let same = (0..20).map(|_| {
        let (http, base) = (http.clone(), base.clone());
        tokio::spawn(async move { post_film(&http, &base, "Contested").await.0 })
    });
    let tasks: Vec<_> = distinct.chain(same).collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert!(statuses[..100].iter().all(|s| *s == StatusCode::CREATED), "{statuses:?}");
    let contested = &statuses[100..];
    assert_eq!(contested.iter().filter(|s| **s == StatusCode::CREATED).count(), 1, "{contested:?}");
    assert_eq!(contested.iter().filter(|s| **s == StatusCode::CONFLICT).count(), 19, "{contested:?}");

    let (_, all) = get_json(&http, &format!("{base}/films?limit=1000")).await;
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 101);
    assert_eq!(all_ratings(&ratings).await.len(), 101);
    for film in all {
        let id = film["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(ratings.get(id).await.unwrap().map(|r| r.name), film["name"].as_str().map(str::to_owned));
    }
}

#[tokio::test]
async fn shutdown_finishes_a_film_post_in_flight() {
    let (ratings_server, ratings, mut arrivals) = slow_rating_service(Duration::from_millis(500), false).await;
    let films = film_service(&ratings_server.url(), Timeouts::default()).await;
    let http = reqwest::Client::new();
    let base = films.url();

    let pending = tokio::spawn({
        let (http, base) = (http.clone(), base.clone());
        async move { post_film(&http, &base, "Heat").await }
    });
    // The POST is in film-service, waiting for rating-service.
    arrivals.recv().await.unwrap();
    let stopped = films.shutdown();
    let (status, _) = pending.await.unwrap();
    assert_eq!(status, StatusCode::CREATED);
    tokio::time::timeout(Duration::from_secs(5), stopped).await.unwrap().unwrap().unwrap();
    assert_eq!(all_ratings(&ratings).await.len(), 1);
}

#[tokio::test]
async fn metrics_pass_promtool() {
    let (ratings_server, _) = rating_service().await;
    let films = film_service(&ratings_server.url(), Timeouts::default()).await;
    let http = reqwest::Client::new();
    let base = films.url();
    post_film(&http, &base, "Heat").await;
    post_film(&http, &base, "Heat").await;
    for path in ["/films", "/films/nope", "/films?name=Heat", "/nowhere", "/healthz"] {
        http.get(format!("{base}{path}")).send().await.unwrap();
    }
    let text = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains(r#"http_requests_total{method="POST",route="/films",status="409"} 1"#), "{text}");
    assert!(text.contains(r#"route="unmatched""#), "{text}");
    promtool_check(&text).unwrap();
}

#[tokio::test]
async fn binary_serves_registers_and_stops_on_sigterm() {
    let (ratings_server, ratings) = rating_service().await;
    let rating_url = ratings_server.url();
    let mut service = ChildService::start(
        BINARY,
        &["--database-url", "sqlite::memory:"],
        &[("RATING_SERVICE_URL", rating_url.as_str())],
        "film-service listening",
    );
    let base = format!("http://{}", service.addr);
    let http = reqwest::Client::new();
    let (status, _) = post_film(&http, &base, "Heat").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(all_ratings(&ratings).await.len(), 1);

    let out = std::process::Command::new(BINARY)
        .args(["healthcheck", "--listen", &service.addr.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    service.sigterm();
    let (status, lines) =
        tokio::task::spawn_blocking(move || service.wait_with_log(Duration::from_secs(10))).await.unwrap();
    assert!(status.success(), "{status:?}");
    assert!(lines.iter().any(|l| l.contains("method=POST path=/films route=/films status=201")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("film-service stopped")), "{lines:?}");
}

#[test]
fn binary_rejects_a_bad_rating_service_url() {
    let out = std::process::Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0", "--rating-service-url", "rating-service:6000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(r#"rating-service URL "rating-service:6000" is invalid"#), "{stderr}");
}

#[tokio::test]
async fn fifty_posts_of_one_name_over_five_replicas_make_one_film() {
    let films_db = database(&fresh_postgres_database().await, film_service::MIGRATIONS).await;
    let ratings_db = database(&fresh_postgres_database().await, rating_service::MIGRATIONS).await;
    let ratings_state = rating_service::AppState::new(ratings_db.clone(), HeaderValue::from_static("r")).unwrap();
    let ratings_server = LoopbackServer::start(rating_service::app(ratings_state)).await;
    let hosts = ["film-1", "film-2", "film-3", "film-4", "film-5"];
    let mut replicas = Vec::new();
    for host in hosts {
        // Each replica has a pool of its own on the shared database.
        let db = database(&films_db_url(&films_db), film_service::MIGRATIONS).await;
        replicas.push(film_replica(&db, &ratings_server.url(), Timeouts::default(), host).await);
    }
    let bases: Vec<String> = replicas.iter().map(LoopbackServer::url).collect();
    let http = reqwest::Client::new();

    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (http, base) = (http.clone(), bases[i % bases.len()].clone());
            tokio::spawn(async move { post_film(&http, &base, "Contested").await })
        })
        .collect();
    let mut created = Vec::new();
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            (StatusCode::CREATED, film) => created.push(film),
            (StatusCode::CONFLICT, body) => {
                assert_eq!(body, json!({"error": "a film named \"Contested\" already exists"}));
                conflicts += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((created.len(), conflicts), (1, 49));
    assert_eq!(count_rows(&films_db, "films").await, 1);
    assert_eq!(count_rows(&ratings_db, "ratings").await, 1, "the 49 refused never reached rating-service");

    // Created through one replica, read through every one.
    let id = created[0]["id"].as_str().unwrap();
    for base in &bases {
        assert_eq!(get_json(&http, &format!("{base}/films/{id}")).await, (StatusCode::OK, created[0].clone()));
    }
}

/// The URL `db` was opened with (tests only open password-less URLs).
fn films_db_url(db: &Database) -> String {
    db.display_url().to_owned()
}

#[tokio::test]
async fn a_replica_killed_midway_is_undone_by_another_replicas_sweeper() {
    let films_url = fresh_postgres_database().await;
    let films_db = database(&films_url, film_service::MIGRATIONS).await;
    // rating-service stores the rating, then takes 3 s to answer: the
    // replica is killed in between.
    let (ratings_server, ratings, mut arrivals) = slow_rating_service(Duration::from_secs(3), true).await;
    let rating_url = ratings_server.url();
    let env = [("RATING_SERVICE_URL", rating_url.as_str())];
    let doomed = ChildService::start(BINARY, &["--database-url", &films_url], &env, "film-service listening");
    let http = reqwest::Client::new();
    let base = format!("http://{}", doomed.addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_json(&http, &format!("{base}/healthz")).await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "film-service never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pending = tokio::spawn({
        let (http, base) = (http.clone(), base.clone());
        async move { http.post(format!("{base}/films")).json(&json!({"name": "Heat", "language": "English"})).send().await }
    });
    arrivals.recv().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(doomed); // SIGKILL: no chance to undo anything
    assert!(pending.await.unwrap().is_err(), "the client saw the connection die");
    assert_eq!(all_ratings(&ratings).await.len(), 1, "a rating without its film");
    assert_eq!(count_rows(&films_db, "films").await, 1, "the pending film that records it");

    // Another replica's sweeper undoes it once it is older than the timeout.
    let survivor = ChildService::start(
        BINARY,
        &["--database-url", &films_url, "--pending-timeout", "1s", "--sweep-interval", "200ms"],
        &env,
        "film-service listening",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while count_rows(&films_db, "films").await > 0 || !all_ratings(&ratings).await.is_empty() {
        assert!(Instant::now() < deadline, "the unfinished creation was not undone");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The log line follows the deletion; give the reader a moment.
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lines.iter().any(|l: &String| l.contains("undid a film creation that did not finish")) {
        assert!(Instant::now() < deadline, "no log of the sweep: {lines:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        lines.extend(survivor.log_lines());
    }
    let base = format!("http://{}", survivor.addr);
    assert_eq!(get_json(&http, &format!("{base}/films")).await, (StatusCode::OK, json!([])));
    let (status, _) = get_json(&http, &format!("{base}/films?name=Heat")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn films_database_down_is_503_and_registers_no_rating() {
    let cluster = service_common::testing::PgCluster::start();
    let films_db = database(&cluster.url("postgres"), film_service::MIGRATIONS).await;
    let (ratings_server, ratings) = rating_service().await;
    let films = film_replica(&films_db, &ratings_server.url(), Timeouts::default(), "film-replica").await;
    let http = reqwest::Client::new();
    assert_eq!(post_film(&http, &films.url(), "Heat").await.0, StatusCode::CREATED);

    cluster.stop();
    let unavailable = json!({"error": "database unavailable; try again later"});
    assert_eq!(post_film(&http, &films.url(), "Ronin").await, (StatusCode::SERVICE_UNAVAILABLE, unavailable.clone()));
    assert_eq!(
        get_json(&http, &format!("{}/films", films.url())).await,
        (StatusCode::SERVICE_UNAVAILABLE, unavailable)
    );
    assert_eq!(all_ratings(&ratings).await.len(), 1, "no rating for the film that was not stored");

    cluster.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = post_film(&http, &films.url(), "Ronin").await;
        if status == StatusCode::CREATED {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, listed) = get_json(&http, &format!("{}/films", films.url())).await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(all_ratings(&ratings).await.len(), 2);
}
