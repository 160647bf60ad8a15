//! film-service and rating-service together over real sockets: rating
//! registration, what happens when rating-service is down, slow or failing,
//! concurrency, graceful shutdown, metrics, and the built binary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use film_service::rating_client::{RatingClient, Timeouts};
use poem::http::{HeaderValue, Method, StatusCode};
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response};
use rating_service::rating::Ratings;
use serde_json::{json, Value};
use service_common::testing::{promtool_check, ChildService, LoopbackServer};
use tokio::sync::mpsc;

const BINARY: &str = env!("CARGO_BIN_EXE_film-service");

/// rating-service on a loopback port, and a handle on what it stores.
async fn rating_service() -> (LoopbackServer, Ratings) {
    rating_service_with(|ep| ep).await
}

/// rating-service with its endpoint wrapped by `wrap` (to slow it down).
async fn rating_service_with<F, E>(wrap: F) -> (LoopbackServer, Ratings)
where
    F: FnOnce(poem::endpoint::BoxEndpoint<'static, Response>) -> E,
    E: Endpoint + 'static,
{
    let state = rating_service::AppState::new(HeaderValue::from_static("rating-replica")).unwrap();
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
) -> (LoopbackServer, Ratings, mpsc::UnboundedReceiver<()>) {
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

/// film-service on a loopback port, registering ratings at `rating_url`.
async fn film_service(rating_url: &str, timeouts: Timeouts) -> LoopbackServer {
    let client = RatingClient::new(rating_url, timeouts).unwrap();
    let state = film_service::AppState::new(client, HeaderValue::from_static("film-replica")).unwrap();
    LoopbackServer::start(film_service::app(state)).await
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
    while !ratings.is_empty() {
        assert!(Instant::now() < deadline, "orphan rating not removed: {:?}", ratings.list());
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
    assert_eq!(ratings.len(), 1);
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

    let (_, all) = get_json(&http, &format!("{base}/films")).await;
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 101);
    assert_eq!(ratings.len(), 101);
    for film in all {
        let id = film["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(ratings.get(id).map(|r| r.name), film["name"].as_str().map(str::to_owned));
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
    assert_eq!(ratings.len(), 1);
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
    let mut service =
        ChildService::start(BINARY, &[], &[("RATING_SERVICE_URL", rating_url.as_str())], "film-service listening");
    let base = format!("http://{}", service.addr);
    let http = reqwest::Client::new();
    let (status, _) = post_film(&http, &base, "Heat").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(ratings.len(), 1);

    let out = std::process::Command::new(BINARY)
        .args(["healthcheck", "--listen", &service.addr.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    service.sigterm();
    let (status, lines) =
        tokio::task::spawn_blocking(move || (service.wait(Duration::from_secs(10)), service.log_lines()))
            .await
            .unwrap();
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
