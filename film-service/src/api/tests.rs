//! Handler tests: every endpoint and every error path, through the whole
//! middleware stack, with `TestClient`. rating-service runs in-process on a
//! loopback port (or a stand-in that fails, or nothing at all).

use std::net::SocketAddr;

use poem::http::{HeaderValue, StatusCode};
use poem::test::{TestClient, TestResponse};
use poem::{handler, Endpoint};
use serde_json::{json, Value};
use service_common::body::MAX_BODY_BYTES;
use service_common::served_by::SERVED_BY;
use service_common::testing::LoopbackServer;
use uuid::Uuid;

use crate::film::Films;
use crate::rating_client::{RatingClient, Timeouts};
use crate::{app, AppState};

const HOST: &str = "films-test-host";

/// film-service in a `TestClient`, with rating-service at `rating_url`.
fn film_service(rating_url: &str) -> (TestClient<impl Endpoint>, Films) {
    let client = RatingClient::new(rating_url, Timeouts::default()).unwrap();
    let state = AppState::new(client, HeaderValue::from_static(HOST)).unwrap();
    let films = state.films.clone();
    (TestClient::new(app(state)), films)
}

/// film-service with a real rating-service on a loopback port.
async fn stack() -> (TestClient<impl Endpoint>, Films, rating_service::rating::Ratings, LoopbackServer) {
    let rating_state = rating_service::AppState::new(HeaderValue::from_static("ratings")).unwrap();
    let ratings = rating_state.ratings.clone();
    let server = LoopbackServer::start(rating_service::app(rating_state)).await;
    let (client, films) = film_service(&server.url());
    (client, films, ratings, server)
}

/// A loopback address nobody listens on.
fn dead_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Checks `x-served-by` (every response carries it) and returns the JSON body.
async fn json_body(resp: TestResponse) -> Value {
    resp.assert_header(SERVED_BY, HOST);
    resp.0.into_body().into_json().await.unwrap()
}

/// Asserts an error response: status, `x-served-by`, and a JSON body that is
/// exactly `{"error": ...}` with `needle` in the message.
async fn assert_error(resp: TestResponse, status: StatusCode, needle: &str) {
    resp.assert_status(status);
    let body = json_body(resp).await;
    let message = body["error"].as_str().unwrap_or_else(|| panic!("no error in {body}"));
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
}

#[tokio::test]
async fn create_registers_the_rating_and_answers_201_with_location() {
    let (c, films, ratings, _server) = stack().await;
    let resp = c.get("/films").send().await;
    resp.assert_status_is_ok();
    assert_eq!(json_body(resp).await, json!([]));

    let resp = c.post("/films").body_json(&json!({"name": "Citizen Kane", "language": "English"})).send().await;
    resp.assert_status(StatusCode::CREATED);
    let location = resp.0.headers()["location"].to_str().unwrap().to_owned();
    let film = json_body(resp).await;
    let id: Uuid = film["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(location, format!("/films/{id}"));
    assert_eq!(film, json!({"id": id, "name": "Citizen Kane", "language": "English"}));

    let rating = ratings.get(id).expect("rating registered under the film's id");
    assert_eq!((rating.name.as_str(), rating.rating), ("Citizen Kane", 5.0));

    let resp = c.get(&location).send().await;
    resp.assert_status_is_ok();
    assert_eq!(json_body(resp).await, film);
    let resp = c.get("/films").query("name", &"Citizen Kane").send().await;
    resp.assert_status_is_ok();
    assert_eq!(json_body(resp).await, film);
    assert_eq!(json_body(c.get("/films").send().await).await, json!([film]));
    assert_eq!(films.len(), 1);
}

#[tokio::test]
async fn old_clients_exact_curl_body() {
    let (c, films, ratings, _server) = stack().await;
    // verify.sh: curl -X POST .../films --data "{ ... }" (form content type,
    // single quotes, newlines and tabs).
    let resp = c
        .post("/films")
        .content_type("application/x-www-form-urlencoded")
        .body("{\n\t\t'name': 'Citizen Kane',\n\t\t'language': 'English'\n\t}")
        .send()
        .await;
    resp.assert_status(StatusCode::CREATED);
    let film = json_body(resp).await;
    assert_eq!(film["name"], json!("Citizen Kane"));
    assert_eq!(film["language"], json!("English"));
    assert_eq!(films.len(), 1);
    assert_eq!(ratings.len(), 1);
}

#[tokio::test]
async fn strict_json_keeps_apostrophes() {
    let (c, _, ratings, _server) = stack().await;
    let resp = c
        .post("/films")
        .content_type("application/json")
        .body(r#"{"name": "Schindler's List", "language": "English"}"#)
        .send()
        .await;
    resp.assert_status(StatusCode::CREATED);
    assert_eq!(json_body(resp).await["name"], json!("Schindler's List"));
    assert_eq!(ratings.list()[0].name, "Schindler's List");
    let resp = c.get("/films?name=Schindler%27s%20List").send().await;
    resp.assert_status_is_ok();
}

#[tokio::test]
async fn duplicate_name_is_409_and_registers_nothing() {
    let (c, films, ratings, _server) = stack().await;
    let body = json!({"name": "Heat", "language": "English"});
    c.post("/films").body_json(&body).send().await.assert_status(StatusCode::CREATED);
    let resp = c.post("/films").body_json(&json!({"name": "Heat", "language": "French"})).send().await;
    assert_error(resp, StatusCode::CONFLICT, r#"a film named "Heat" already exists"#).await;
    assert_eq!(films.len(), 1);
    assert_eq!(films.list()[0].language, "English");
    assert_eq!(ratings.len(), 1);
}

#[tokio::test]
async fn bad_bodies_are_400_and_store_nothing() {
    let (c, films, ratings, _server) = stack().await;
    let cases: &[(&str, &str)] = &[
        ("", "request body is empty"),
        ("{\"name\": ", "request body is not valid JSON"),
        ("not json", "request body is not valid JSON"),
        ("{'name': 'Schindler's List', 'language': 'English'}", "request body is not valid JSON"),
        ("{'name': 'x", "unterminated single-quoted string"),
        (r#"{"language": "English"}"#, "missing field `name`"),
        (r#"{"name": "Heat"}"#, "missing field `language`"),
        (r#"{"name": "", "language": "English"}"#, "name: must not be empty"),
        (r#"{"name": "Heat", "language": " "}"#, "language: must not be empty"),
        (r#"{"name": ["Heat"], "language": "English"}"#, "name: invalid type: sequence"),
        (r#"{"name": "Heat", "language": null}"#, "language: invalid type: null"),
        (r#"{"name": "Heat", "language": "English", "year": 1995}"#, "unknown field `year`"),
        (
            r#"{"id": "0b0c6a02-4f9a-4bb1-9e5e-2f9e0c1f0a11", "name": "Heat", "language": "English"}"#,
            "unknown field `id`",
        ),
        (r#""Heat""#, "expected a JSON object, found a string"),
    ];
    for (body, needle) in cases {
        let resp = c.post("/films").content_type("application/json").body(*body).send().await;
        assert_error(resp, StatusCode::BAD_REQUEST, needle).await;
    }
    assert!(films.is_empty());
    assert!(ratings.is_empty());
}

#[tokio::test]
async fn bodies_over_one_mib_are_413() {
    let (c, films, ratings, _server) = stack().await;
    let body = format!(r#"{{"name": "{}", "language": "English"}}"#, "x".repeat(MAX_BODY_BYTES));
    let resp = c.post("/films").header("content-length", body.len()).body(body.clone()).send().await;
    assert_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "exceeds the limit of 1048576 bytes").await;
    let streamed = poem::Body::from_async_read(std::io::Cursor::new(body.into_bytes()));
    let resp = c.post("/films").body(streamed).send().await;
    assert_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "exceeds the limit").await;
    assert!(films.is_empty());
    assert!(ratings.is_empty());
}

#[tokio::test]
async fn unknown_and_invalid_ids_and_names() {
    let (c, _) = film_service(&format!("http://{}", dead_addr()));
    let id = Uuid::new_v4();
    assert_error(c.get(format!("/films/{id}")).send().await, StatusCode::NOT_FOUND, &format!("no film with id {id}"))
        .await;
    assert_error(c.get("/films/42").send().await, StatusCode::BAD_REQUEST, r#"invalid film id "42": not a UUID"#).await;
    assert_error(c.delete("/films/x").send().await, StatusCode::BAD_REQUEST, r#"invalid film id "x": not a UUID"#)
        .await;
    let resp = c.put("/films/x").body_json(&json!({"name": "Heat", "language": "English"})).send().await;
    assert_error(resp, StatusCode::BAD_REQUEST, r#"invalid film id "x": not a UUID"#).await;
    assert_error(c.get("/films?name=Nope").send().await, StatusCode::NOT_FOUND, r#"no film named "Nope""#).await;
    assert_error(c.get("/films?name=").send().await, StatusCode::NOT_FOUND, r#"no film named """#).await;
}

#[tokio::test]
async fn replace_and_delete() {
    let (c, films, ratings, _server) = stack().await;
    let heat =
        json_body(c.post("/films").body_json(&json!({"name": "Heat", "language": "English"})).send().await).await;
    let ronin =
        json_body(c.post("/films").body_json(&json!({"name": "Ronin", "language": "English"})).send().await).await;
    let url = format!("/films/{}", heat["id"].as_str().unwrap());

    let resp = c.put(&url).body("{'name': 'Heat (1995)', 'language': 'English'}").send().await;
    resp.assert_status_is_ok();
    assert_eq!(json_body(resp).await, json!({"id": heat["id"], "name": "Heat (1995)", "language": "English"}));
    let resp = c.put(&url).body_json(&json!({"id": heat["id"], "name": "Heat", "language": "German"})).send().await;
    resp.assert_status_is_ok();

    let resp = c.put(&url).body_json(&json!({"name": "Ronin", "language": "English"})).send().await;
    assert_error(resp, StatusCode::CONFLICT, r#"a film named "Ronin" already exists"#).await;
    let resp = c.put(&url).body_json(&json!({"id": ronin["id"], "name": "X", "language": "English"})).send().await;
    assert_error(resp, StatusCode::BAD_REQUEST, "differs from the id in the path").await;
    let resp = c.put(&url).body_json(&json!({"name": "X"})).send().await;
    assert_error(resp, StatusCode::BAD_REQUEST, "missing field `language`").await;
    let resp =
        c.put(format!("/films/{}", Uuid::new_v4())).body_json(&json!({"name": "X", "language": "Y"})).send().await;
    assert_error(resp, StatusCode::NOT_FOUND, "no film with id").await;
    let stored = films.list();
    assert_eq!((stored[0].name.as_str(), stored[0].language.as_str()), ("Heat", "German"));
    assert_eq!(stored[1].name, "Ronin");

    let resp = c.delete(&url).send().await;
    resp.assert_status(StatusCode::NO_CONTENT);
    resp.assert_header(SERVED_BY, HOST);
    assert_error(c.delete(&url).send().await, StatusCode::NOT_FOUND, "no film with id").await;
    assert_error(c.get(&url).send().await, StatusCode::NOT_FOUND, "no film with id").await;
    assert_eq!(films.len(), 1);
    // Ratings belong to rating-service; deleting a film leaves its rating.
    assert_eq!(ratings.len(), 2);
    // The name is free again, and re-creating it works although the old
    // rating with that name is still there.
    let resp = c.post("/films").body_json(&json!({"name": "Heat", "language": "English"})).send().await;
    resp.assert_status(StatusCode::CREATED);
    assert_eq!(ratings.len(), 3);
}

#[tokio::test]
async fn rating_service_unreachable_is_503_and_stores_nothing() {
    let (c, films) = film_service(&format!("http://{}", dead_addr()));
    let resp = c.post("/films").body_json(&json!({"name": "Heat", "language": "English"})).send().await;
    assert_error(resp, StatusCode::SERVICE_UNAVAILABLE, "film not stored: rating-service could not be reached").await;
    assert!(films.is_empty());
    assert_error(c.get("/films?name=Heat").send().await, StatusCode::NOT_FOUND, "no film named").await;
    // The name was released: nothing blocks a retry.
    let resp = c.post("/films").body_json(&json!({"name": "Heat", "language": "English"})).send().await;
    resp.assert_status(StatusCode::SERVICE_UNAVAILABLE);
}

#[handler]
fn refusing_rating_service() -> (StatusCode, poem::web::Json<Value>) {
    (StatusCode::INTERNAL_SERVER_ERROR, poem::web::Json(json!({"error": "disk full"})))
}

#[tokio::test]
async fn rating_service_error_is_502_and_stores_nothing() {
    let server = LoopbackServer::start(refusing_rating_service).await;
    let (c, films) = film_service(&server.url());
    let resp = c.post("/films").body_json(&json!({"name": "Heat", "language": "English"})).send().await;
    assert_error(
        resp,
        StatusCode::BAD_GATEWAY,
        "film not stored: rating-service refused its rating (500 Internal Server Error: disk full)",
    )
    .await;
    assert!(films.is_empty());
    assert_eq!(json_body(c.get("/films").send().await).await, json!([]));
}

#[tokio::test]
async fn unknown_paths_and_methods_are_json_errors() {
    let (c, _) = film_service(&format!("http://{}", dead_addr()));
    assert_error(c.get("/ratings").send().await, StatusCode::NOT_FOUND, "not found").await;
    assert_error(c.get("/films/").send().await, StatusCode::NOT_FOUND, "not found").await;
    assert_error(c.patch("/films").send().await, StatusCode::METHOD_NOT_ALLOWED, "method not allowed").await;
    assert_error(c.post(format!("/films/{}", Uuid::new_v4())).send().await, StatusCode::METHOD_NOT_ALLOWED, "method")
        .await;
}

#[tokio::test]
async fn health_metrics_openapi_docs() {
    let (c, _) = film_service(&format!("http://{}", dead_addr()));
    assert_eq!(json_body(c.get("/healthz").send().await).await, json!({"status": "ok"}));
    c.get(format!("/films/{}", Uuid::new_v4())).send().await;
    c.post("/films").body("{").send().await;

    let resp = c.get("/metrics").send().await;
    resp.assert_status_is_ok();
    resp.assert_content_type("text/plain; version=0.0.4; charset=utf-8");
    resp.assert_header(SERVED_BY, HOST);
    let text = resp.0.into_body().into_string().await.unwrap();
    assert!(text.contains(r#"http_requests_total{method="GET",route="/films/{id}",status="404"} 1"#), "{text}");
    assert!(text.contains(r#"http_requests_total{method="POST",route="/films",status="400"} 1"#), "{text}");

    let spec = json_body(c.get("/openapi.json").send().await).await;
    let mut ops: Vec<String> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, item)| item.as_object().unwrap().keys().map(move |m| format!("{m} {p}")))
        .collect();
    ops.sort();
    assert_eq!(
        ops,
        [
            "delete /films/{id}",
            "get /films",
            "get /films/{id}",
            "get /healthz",
            "get /metrics",
            "post /films",
            "put /films/{id}",
        ]
    );
    assert_eq!(spec["paths"]["/films"]["post"]["responses"]["201"]["headers"]["LOCATION"]["required"], json!(true));
    assert!(spec["paths"]["/films"]["post"]["responses"]["5XX"].is_object());

    let resp = c.get("/docs").send().await;
    resp.assert_status_is_ok();
    assert!(resp.0.into_body().into_string().await.unwrap().contains("swagger"));
}
