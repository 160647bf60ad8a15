//! Handler tests: every endpoint and every error path, through the whole
//! middleware stack, with `TestClient`, each on SQLite and on PostgreSQL.
//! rating-service runs in-process on a loopback port with a database of its
//! own (or a stand-in that fails, or nothing at all).

use std::sync::Arc;

use poem::http::{HeaderValue, StatusCode};
use poem::test::{TestClient, TestResponse};
use poem::{handler, Endpoint};
use serde_json::{json, Value};
use service_common::body::MAX_BODY_BYTES;
use service_common::db::{Database, PoolArgs};
use service_common::served_by::SERVED_BY;
use service_common::testing::{count_rows, dead_addr, Backend, LoopbackServer};
use uuid::Uuid;

use crate::rating_client::{RatingClient, Timeouts};
use crate::{app, AppState, MIGRATIONS};

const HOST: &str = "films-test-host";

/// A migrated database of `backend` with `migrations`.
async fn database(backend: Backend, migrations: service_common::db::Migrations) -> Database {
    let db = Database::open(&backend.fresh_url().await, &PoolArgs::default(), migrations).unwrap();
    db.migrate().await.unwrap();
    db
}

/// film-service in a `TestClient` on a fresh database, with rating-service
/// at `rating_url`; also returns the database.
async fn film_service(backend: Backend, rating_url: &str) -> (TestClient<impl Endpoint>, Database) {
    let db = database(backend, MIGRATIONS).await;
    let client = RatingClient::new(rating_url, Timeouts::default()).unwrap();
    let state = AppState::new(db.clone(), client, HeaderValue::from_static(HOST)).unwrap();
    (TestClient::new(app(Arc::new(state))), db)
}

/// film-service with a real rating-service (same backend) on a loopback
/// port; returns both databases.
async fn stack(backend: Backend) -> (TestClient<impl Endpoint>, Database, Database, LoopbackServer) {
    let ratings_db = database(backend, rating_service::MIGRATIONS).await;
    let rating_state = rating_service::AppState::new(ratings_db.clone(), HeaderValue::from_static("ratings")).unwrap();
    let server = LoopbackServer::start(rating_service::app(rating_state)).await;
    let (client, films_db) = film_service(backend, &server.url()).await;
    (client, films_db, ratings_db, server)
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

/// The rating stored under `id`, read straight from rating-service's table.
async fn stored_rating(ratings: &Database, id: Uuid) -> Option<(String, f64)> {
    let store = rating_service::store::RatingStore::new(ratings.clone());
    store.get(id).await.unwrap().map(|r| (r.name, r.rating))
}

service_common::on_both_backends!(
    create_registers_the_rating_and_answers_201_with_location,
    old_clients_exact_curl_body,
    strict_json_keeps_apostrophes,
    duplicate_name_is_409_and_registers_nothing,
    bad_bodies_are_400_and_store_nothing,
    bodies_over_one_mib_are_413,
    unknown_and_invalid_ids_and_names,
    replace_and_delete,
    rating_service_unreachable_is_503_and_stores_nothing,
    rating_service_error_is_502_and_stores_nothing,
    pages_follow_the_link_header,
    unknown_paths_and_methods_are_json_errors,
    health_metrics_openapi_docs,
);

async fn create_registers_the_rating_and_answers_201_with_location(backend: Backend) {
    let (c, films, ratings, _server) = stack(backend).await;
    let resp = c.get("/films").send().await;
    resp.assert_status_is_ok();
    assert!(resp.0.headers().get("link").is_none());
    assert_eq!(json_body(resp).await, json!([]));

    let resp = c.post("/films").body_json(&json!({"name": "Citizen Kane", "language": "English"})).send().await;
    resp.assert_status(StatusCode::CREATED);
    let location = resp.0.headers()["location"].to_str().unwrap().to_owned();
    let film = json_body(resp).await;
    let id: Uuid = film["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(location, format!("/films/{id}"));
    assert_eq!(film, json!({"id": id, "name": "Citizen Kane", "language": "English"}));
    assert_eq!(stored_rating(&ratings, id).await, Some(("Citizen Kane".to_owned(), 5.0)));

    let resp = c.get(&location).send().await;
    resp.assert_status_is_ok();
    assert_eq!(json_body(resp).await, film);
    let resp = c.get("/films").query("name", &"Citizen Kane").send().await;
    resp.assert_status_is_ok();
    assert_eq!(json_body(resp).await, film);
    assert_eq!(json_body(c.get("/films").send().await).await, json!([film]));
    assert_eq!(count_rows(&films, "films").await, 1);
}

async fn old_clients_exact_curl_body(backend: Backend) {
    let (c, films, ratings, _server) = stack(backend).await;
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
    assert_eq!(count_rows(&films, "films").await, 1);
    assert_eq!(count_rows(&ratings, "ratings").await, 1);
}

async fn strict_json_keeps_apostrophes(backend: Backend) {
    let (c, _, ratings, _server) = stack(backend).await;
    let resp = c
        .post("/films")
        .content_type("application/json")
        .body(r#"{"name": "Schindler's List", "language": "English"}"#)
        .send()
        .await;
    resp.assert_status(StatusCode::CREATED);
    let id: Uuid = json_body(resp).await["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(stored_rating(&ratings, id).await.unwrap().0, "Schindler's List");
    let resp = c.get("/films?name=Schindler%27s%20List").send().await;
    resp.assert_status_is_ok();
}

async fn duplicate_name_is_409_and_registers_nothing(backend: Backend) {
    let (c, films, ratings, _server) = stack(backend).await;
    let body = json!({"name": "Heat", "language": "English"});
    c.post("/films").body_json(&body).send().await.assert_status(StatusCode::CREATED);
    let resp = c.post("/films").body_json(&json!({"name": "Heat", "language": "French"})).send().await;
    assert_error(resp, StatusCode::CONFLICT, r#"a film named "Heat" already exists"#).await;
    assert_eq!(count_rows(&films, "films").await, 1);
    assert_eq!(json_body(c.get("/films?name=Heat").send().await).await["language"], "English");
    assert_eq!(count_rows(&ratings, "ratings").await, 1);
}

async fn bad_bodies_are_400_and_store_nothing(backend: Backend) {
    let (c, films, ratings, _server) = stack(backend).await;
    let long = format!(r#"{{"name": "{}", "language": "English"}}"#, "x".repeat(501));
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
        (r#"{"name": "He\u0000at", "language": "English"}"#, "name: must not contain NUL characters"),
        (&long, "name: must be at most 500 characters long, got 501"),
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
        let resp = c.post("/films").content_type("application/json").body(body.to_string()).send().await;
        assert_error(resp, StatusCode::BAD_REQUEST, needle).await;
    }
    assert_eq!(count_rows(&films, "films").await, 0);
    assert_eq!(count_rows(&ratings, "ratings").await, 0);
}

async fn bodies_over_one_mib_are_413(backend: Backend) {
    let (c, films, ratings, _server) = stack(backend).await;
    let body = format!(r#"{{"name": "{}", "language": "English"}}"#, "x".repeat(MAX_BODY_BYTES));
    let resp = c.post("/films").header("content-length", body.len()).body(body.clone()).send().await;
    assert_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "exceeds the limit of 1048576 bytes").await;
    let streamed = poem::Body::from_async_read(std::io::Cursor::new(body.into_bytes()));
    let resp = c.post("/films").body(streamed).send().await;
    assert_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "exceeds the limit").await;
    assert_eq!(count_rows(&films, "films").await, 0);
    assert_eq!(count_rows(&ratings, "ratings").await, 0);
}

async fn unknown_and_invalid_ids_and_names(backend: Backend) {
    let (c, _) = film_service(backend, &format!("http://{}", dead_addr())).await;
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
    // Names no film can have are not even asked for (PostgreSQL refuses NUL).
    assert_error(c.get("/films?name=a%00b").send().await, StatusCode::NOT_FOUND, "no film named").await;
    let long = "x".repeat(600);
    assert_error(c.get("/films").query("name", &long).send().await, StatusCode::NOT_FOUND, "no film named").await;
}

async fn replace_and_delete(backend: Backend) {
    let (c, films, ratings, _server) = stack(backend).await;
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
    let listed = json_body(c.get("/films").send().await).await;
    assert_eq!(
        listed,
        json!([{"id": heat["id"], "name": "Heat", "language": "German"}, ronin]),
        "a replaced film keeps its place"
    );

    let resp = c.delete(&url).send().await;
    resp.assert_status(StatusCode::NO_CONTENT);
    resp.assert_header(SERVED_BY, HOST);
    assert_error(c.delete(&url).send().await, StatusCode::NOT_FOUND, "no film with id").await;
    assert_error(c.get(&url).send().await, StatusCode::NOT_FOUND, "no film with id").await;
    assert_eq!(count_rows(&films, "films").await, 1);
    // Ratings belong to rating-service; deleting a film leaves its rating.
    assert_eq!(count_rows(&ratings, "ratings").await, 2);
    // The name is free again, and re-creating it works although the old
    // rating with that name is still there.
    let resp = c.post("/films").body_json(&json!({"name": "Heat", "language": "English"})).send().await;
    resp.assert_status(StatusCode::CREATED);
    assert_eq!(count_rows(&ratings, "ratings").await, 3);
}

async fn rating_service_unreachable_is_503_and_stores_nothing(backend: Backend) {
    let (c, films) = film_service(backend, &format!("http://{}", dead_addr())).await;
    let resp = c.post("/films").body_json(&json!({"name": "Heat", "language": "English"})).send().await;
    assert_error(resp, StatusCode::SERVICE_UNAVAILABLE, "film not stored: rating-service could not be reached").await;
    assert_eq!(count_rows(&films, "films").await, 0, "the reservation was released");
    assert_error(c.get("/films?name=Heat").send().await, StatusCode::NOT_FOUND, "no film named").await;
    // The name was released: nothing blocks a retry.
    let resp = c.post("/films").body_json(&json!({"name": "Heat", "language": "English"})).send().await;
    resp.assert_status(StatusCode::SERVICE_UNAVAILABLE);
}

#[handler]
fn refusing_rating_service() -> (StatusCode, poem::web::Json<Value>) {
    (StatusCode::UNPROCESSABLE_ENTITY, poem::web::Json(json!({"error": "no such language"})))
}

async fn rating_service_error_is_502_and_stores_nothing(backend: Backend) {
    let server = LoopbackServer::start(refusing_rating_service).await;
    let (c, films) = film_service(backend, &server.url()).await;
    let resp = c.post("/films").body_json(&json!({"name": "Heat", "language": "English"})).send().await;
    assert_error(
        resp,
        StatusCode::BAD_GATEWAY,
        "film not stored: rating-service refused its rating (422 Unprocessable Entity: no such language)",
    )
    .await;
    assert_eq!(count_rows(&films, "films").await, 0);
    assert_eq!(json_body(c.get("/films").send().await).await, json!([]));
}

async fn pages_follow_the_link_header(backend: Backend) {
    let (c, _, _, _server) = stack(backend).await;
    let mut made = Vec::new();
    for i in 0..7 {
        let resp =
            c.post("/films").body_json(&json!({"name": format!("Film {i}"), "language": "English"})).send().await;
        resp.assert_status(StatusCode::CREATED);
        made.push(json_body(resp).await);
    }
    // Deleting one in the middle does not disturb the pages.
    let gone = made.remove(3);
    c.delete(format!("/films/{}", gone["id"].as_str().unwrap())).send().await.assert_status(StatusCode::NO_CONTENT);

    let mut url = "/films?limit=2".to_owned();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let resp = c.get(&url).send().await;
        resp.assert_status_is_ok();
        let link = resp.0.headers().get("link").map(|v| v.to_str().unwrap().to_owned());
        let page = json_body(resp).await;
        assert!(page.as_array().unwrap().len() <= 2, "{page}");
        seen.extend(page.as_array().unwrap().iter().cloned());
        pages += 1;
        let Some(link) = link else { break };
        let next = link.strip_prefix('<').and_then(|l| l.split_once(">; rel=\"next\"")).unwrap().0;
        assert!(next.starts_with("/films?limit=2&after="), "{link}");
        url = next.to_owned();
    }
    assert_eq!(seen, made, "every film once, oldest first");
    assert_eq!(pages, 3);

    // The default page and the limits.
    assert_eq!(json_body(c.get("/films").send().await).await.as_array().unwrap().len(), 6);
    assert!(c.get("/films?limit=1000").send().await.0.headers().get("link").is_none());
    for bad in ["0", "1001", "-1", "x"] {
        let resp = c.get(format!("/films?limit={bad}")).send().await;
        assert_error(resp, StatusCode::BAD_REQUEST, "limit").await;
    }
    for bad in ["x", "-3", "", "1234567890123456789"] {
        let resp = c.get(format!("/films?after={bad}")).send().await;
        assert_error(resp, StatusCode::BAD_REQUEST, "failed to parse parameter `after`").await;
    }
}

async fn unknown_paths_and_methods_are_json_errors(backend: Backend) {
    let (c, _) = film_service(backend, &format!("http://{}", dead_addr())).await;
    assert_error(c.get("/ratings").send().await, StatusCode::NOT_FOUND, "not found").await;
    assert_error(c.get("/films/").send().await, StatusCode::NOT_FOUND, "not found").await;
    assert_error(c.patch("/films").send().await, StatusCode::METHOD_NOT_ALLOWED, "method not allowed").await;
    assert_error(c.post(format!("/films/{}", Uuid::new_v4())).send().await, StatusCode::METHOD_NOT_ALLOWED, "method")
        .await;
}

async fn health_metrics_openapi_docs(backend: Backend) {
    let (c, _) = film_service(backend, &format!("http://{}", dead_addr())).await;
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
    // Pagination is described: the parameters with their bounds, the header.
    let list = &spec["paths"]["/films"]["get"];
    let params: Vec<&str> =
        list["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(params, ["name", "limit", "after"]);
    let limit = &list["parameters"][1]["schema"];
    assert_eq!((limit["minimum"].as_f64(), limit["maximum"].as_f64()), (Some(1.0), Some(1000.0)), "{limit}");
    assert_eq!(list["parameters"][2]["schema"]["pattern"], json!("^[0-9]{1,18}$"));
    assert!(list["responses"]["200"]["headers"]["LINK"].is_object(), "{list}");
    // Bodies refuse unknown fields, and the schemas say so.
    assert_eq!(spec["components"]["schemas"]["NewFilm"]["additionalProperties"], json!(false));
    // A 405 says what is allowed.
    let resp = c.delete("/films").send().await;
    resp.assert_status(StatusCode::METHOD_NOT_ALLOWED);
    resp.assert_header("allow", "GET, POST");

    let resp = c.get("/docs").send().await;
    resp.assert_status_is_ok();
    assert!(resp.0.into_body().into_string().await.unwrap().contains("swagger"));
}
