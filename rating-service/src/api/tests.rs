//! Handler tests: every endpoint and every error path, through the whole
//! middleware stack, with `TestClient`, each on SQLite and on PostgreSQL.

use poem::http::{HeaderValue, StatusCode};
use poem::test::{TestClient, TestResponse};
use poem::Endpoint;
use serde_json::{json, Value};
use service_common::body::MAX_BODY_BYTES;
use service_common::db::{Database, PoolArgs};
use service_common::served_by::SERVED_BY;
use service_common::testing::Backend;
use uuid::Uuid;

use crate::store::RatingStore;
use crate::{app, AppState, MIGRATIONS};

const HOST: &str = "ratings-test-host";

/// rating-service in a `TestClient` on a fresh, migrated database.
async fn client(backend: Backend) -> (TestClient<impl Endpoint>, RatingStore) {
    let db = Database::open(&backend.fresh_url().await, &PoolArgs::default(), MIGRATIONS).unwrap();
    db.migrate().await.unwrap();
    let state = AppState::new(db, HeaderValue::from_static(HOST)).unwrap();
    let ratings = state.ratings.clone();
    (TestClient::new(app(state)), ratings)
}

/// Every stored rating, oldest first.
async fn all(ratings: &RatingStore) -> Vec<crate::rating::Rating> {
    ratings.page(0, 1000).await.unwrap().items
}

service_common::on_both_backends!(
    create_get_list_find,
    create_with_given_id_and_string_rating_as_film_service_did,
    old_clients_single_quoted_form_body,
    body_without_content_type_is_accepted,
    names_may_repeat_and_lookup_finds_the_newest,
    bad_bodies_are_400_and_store_nothing,
    bodies_over_one_mib_are_413,
    unknown_and_invalid_ids,
    replace_and_delete,
    pages_follow_the_link_header,
    unknown_paths_and_methods_are_json_errors,
    health_metrics_openapi_docs,
);

/// Checks `x-served-by` (every response carries it) and returns the JSON body.
async fn json_body(resp: TestResponse) -> Value {
    resp.assert_header(SERVED_BY, HOST);
    resp.0.into_body().into_json().await.unwrap()
}

/// Asserts an error response: status, `x-served-by`, and a JSON body whose
/// `error` contains `needle`.
async fn assert_error(resp: TestResponse, status: StatusCode, needle: &str) {
    resp.assert_status(status);
    let body = json_body(resp).await;
    let message = body["error"].as_str().unwrap_or_else(|| panic!("no error in {body}"));
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
}

async fn create_get_list_find(backend: Backend) {
    let (c, _) = client(backend).await;
    let resp = c.get("/ratings").send().await;
    resp.assert_status_is_ok();
    assert_eq!(json_body(resp).await, json!([]));

    let resp = c.post("/ratings").body_json(&json!({"name": "Citizen Kane", "rating": 4.5})).send().await;
    resp.assert_status(StatusCode::CREATED);
    let location = resp.0.headers()["location"].to_str().unwrap().to_owned();
    let created = json_body(resp).await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(location, format!("/ratings/{id}"));
    assert_eq!(created, json!({"id": id, "name": "Citizen Kane", "rating": 4.5}));

    let resp = c.get(&location).send().await;
    resp.assert_status_is_ok();
    assert_eq!(json_body(resp).await, created);

    let resp = c.get("/ratings").query("name", &"Citizen Kane").send().await;
    resp.assert_status_is_ok();
    assert_eq!(json_body(resp).await, created);

    let resp = c.get("/ratings").send().await;
    assert_eq!(json_body(resp).await, json!([created]));
}

async fn create_with_given_id_and_string_rating_as_film_service_did(backend: Backend) {
    let (c, ratings) = client(backend).await;
    let id = Uuid::new_v4();
    let resp = c.post("/ratings").body_json(&json!({"id": id, "name": "Heat", "rating": "5"})).send().await;
    resp.assert_status(StatusCode::CREATED);
    assert_eq!(json_body(resp).await, json!({"id": id, "name": "Heat", "rating": 5.0}));
    assert_eq!(ratings.get(id).await.unwrap().map(|r| r.rating), Some(5.0));

    // The same id again is a conflict and changes nothing.
    let resp = c.post("/ratings").body_json(&json!({"id": id, "name": "Other", "rating": 1})).send().await;
    assert_error(resp, StatusCode::CONFLICT, &format!("a rating with id {id} already exists")).await;
    assert_eq!(all(&ratings).await.len(), 1);
    assert_eq!(ratings.get(id).await.unwrap().map(|r| r.name), Some("Heat".to_owned()));
}

async fn old_clients_single_quoted_form_body(backend: Backend) {
    let (c, ratings) = client(backend).await;
    let resp = c
        .post("/ratings")
        .content_type("application/x-www-form-urlencoded")
        .body("{\n\t\t'name': 'Citizen Kane',\n\t\t'rating': '3.5'\n\t}")
        .send()
        .await;
    resp.assert_status(StatusCode::CREATED);
    assert_eq!(json_body(resp).await["rating"], json!(3.5));
    assert_eq!(ratings.find_by_name("Citizen Kane").await.unwrap().map(|r| r.rating), Some(3.5));
}

async fn body_without_content_type_is_accepted(backend: Backend) {
    let (c, _) = client(backend).await;
    let resp = c.post("/ratings").body(r#"{"name": "Schindler's List", "rating": 5}"#).send().await;
    resp.assert_status(StatusCode::CREATED);
    assert_eq!(json_body(resp).await["name"], json!("Schindler's List"));
}

async fn names_may_repeat_and_lookup_finds_the_newest(backend: Backend) {
    let (c, _) = client(backend).await;
    for value in [1, 2] {
        let resp = c.post("/ratings").body_json(&json!({"name": "Heat", "rating": value})).send().await;
        resp.assert_status(StatusCode::CREATED);
    }
    let resp = c.get("/ratings?name=Heat").send().await;
    assert_eq!(json_body(resp).await["rating"], json!(2.0));
    let resp = c.get("/ratings?name=Nope").send().await;
    assert_error(resp, StatusCode::NOT_FOUND, r#"no rating named "Nope""#).await;
    let resp = c.get("/ratings?name=%00").send().await;
    assert_error(resp, StatusCode::NOT_FOUND, "no rating named").await;
}

async fn pages_follow_the_link_header(backend: Backend) {
    let (c, _) = client(backend).await;
    let mut made = Vec::new();
    for i in 0..5 {
        let resp = c.post("/ratings").body_json(&json!({"name": "Heat", "rating": i})).send().await;
        resp.assert_status(StatusCode::CREATED);
        made.push(json_body(resp).await);
    }
    let first = c.get("/ratings?limit=3").send().await;
    let link = first.0.headers()["link"].to_str().unwrap().to_owned();
    assert_eq!(json_body(first).await, json!(made[..3]));
    let next = link.strip_prefix('<').and_then(|l| l.split_once(">; rel=\"next\"")).unwrap().0.to_owned();
    assert!(next.starts_with("/ratings?limit=3&after="), "{link}");
    let second = c.get(&next).send().await;
    assert!(second.0.headers().get("link").is_none());
    assert_eq!(json_body(second).await, json!(made[3..]));
    let resp = c.get("/ratings?limit=0").send().await;
    assert_error(resp, StatusCode::BAD_REQUEST, "limit").await;
    let resp = c.get("/ratings?after=later").send().await;
    assert_error(resp, StatusCode::BAD_REQUEST, "failed to parse parameter `after`").await;
}

async fn bad_bodies_are_400_and_store_nothing(backend: Backend) {
    let (c, ratings) = client(backend).await;
    let cases: &[(&str, &str)] = &[
        ("", "request body is empty"),
        ("{\"name\": ", "request body is not valid JSON"),
        ("{'name': 'x", "unterminated single-quoted string"),
        (r#"{"rating": 3}"#, "missing field `name`"),
        (r#"{"name": "a"}"#, "missing field `rating`"),
        (r#"{"name": "", "rating": 3}"#, "name: must not be empty"),
        (r#"{"name": "  ", "rating": 3}"#, "name: must not be empty"),
        (r#"{"name": "a\u0000", "rating": 3}"#, "name: must not contain NUL characters"),
        (r#"{"name": 42, "rating": 3}"#, "name: invalid type: integer `42`"),
        (r#"{"name": "a", "rating": "five"}"#, "rating: must be a number from 0 to 5"),
        (r#"{"name": "a", "rating": 6}"#, "rating: must be a number from 0 to 5, got 6"),
        (r#"{"name": "a", "rating": -0.5}"#, "rating: must be a number from 0 to 5"),
        (r#"{"name": "a", "rating": 3, "stars": 3}"#, "unknown field `stars`"),
        (r#"{"id": "nope", "name": "a", "rating": 3}"#, "id: "),
        (r#"{"id": null, "name": "a", "rating": 3}"#, "id: invalid type: null"),
        (r#"["a", 3]"#, "expected a JSON object, found an array"),
    ];
    for (body, needle) in cases {
        let resp = c.post("/ratings").body(*body).send().await;
        assert_error(resp, StatusCode::BAD_REQUEST, needle).await;
    }
    assert!(all(&ratings).await.is_empty());
}

async fn bodies_over_one_mib_are_413(backend: Backend) {
    let (c, ratings) = client(backend).await;
    let name = "x".repeat(MAX_BODY_BYTES);
    let body = format!(r#"{{"name": "{name}", "rating": 3}}"#);
    // Declared length over the limit: refused before reading.
    let resp = c.post("/ratings").header("content-length", body.len()).body(body.clone()).send().await;
    assert_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "exceeds the limit of 1048576 bytes").await;
    // No declared length (streamed): refused once the limit is crossed.
    let streamed = poem::Body::from_async_read(std::io::Cursor::new(body.into_bytes()));
    let resp = c.post("/ratings").body(streamed).send().await;
    assert_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "exceeds the limit").await;
    assert!(all(&ratings).await.is_empty());
}

async fn unknown_and_invalid_ids(backend: Backend) {
    let (c, _) = client(backend).await;
    let id = Uuid::new_v4();
    let resp = c.get(format!("/ratings/{id}")).send().await;
    assert_error(resp, StatusCode::NOT_FOUND, &format!("no rating with id {id}")).await;
    let resp = c.get("/ratings/not-a-uuid").send().await;
    assert_error(resp, StatusCode::BAD_REQUEST, r#"invalid rating id "not-a-uuid": not a UUID"#).await;
    let resp = c.delete("/ratings/7").send().await;
    assert_error(resp, StatusCode::BAD_REQUEST, r#"invalid rating id "7": not a UUID"#).await;
}

async fn replace_and_delete(backend: Backend) {
    let (c, ratings) = client(backend).await;
    let created = c.post("/ratings").body_json(&json!({"name": "Heat", "rating": 3})).send().await;
    let id = json_body(created).await["id"].as_str().unwrap().to_owned();
    let url = format!("/ratings/{id}");

    let resp = c.put(&url).body_json(&json!({"name": "Heat (1995)", "rating": "4.5"})).send().await;
    resp.assert_status_is_ok();
    assert_eq!(json_body(resp).await, json!({"id": id, "name": "Heat (1995)", "rating": 4.5}));
    let resp = c.put(&url).body_json(&json!({"id": id, "name": "Heat", "rating": 4})).send().await;
    resp.assert_status_is_ok();

    let other = Uuid::new_v4();
    let resp = c.put(&url).body_json(&json!({"id": other, "name": "X", "rating": 1})).send().await;
    assert_error(resp, StatusCode::BAD_REQUEST, "differs from the id in the path").await;
    let resp = c.put(&url).body_json(&json!({"name": "X", "rating": 9})).send().await;
    assert_error(resp, StatusCode::BAD_REQUEST, "rating: must be a number from 0 to 5").await;
    let resp = c.put(&url).body_json(&json!({"name": "X"})).send().await;
    assert_error(resp, StatusCode::BAD_REQUEST, "missing field `rating`").await;
    let resp = c.put(format!("/ratings/{other}")).body_json(&json!({"name": "X", "rating": 1})).send().await;
    assert_error(resp, StatusCode::NOT_FOUND, "no rating with id").await;
    let stored = all(&ratings).await;
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].name.as_str(), stored[0].rating), ("Heat", 4.0));

    let resp = c.delete(&url).send().await;
    resp.assert_status(StatusCode::NO_CONTENT);
    resp.assert_header(SERVED_BY, HOST);
    let resp = c.delete(&url).send().await;
    assert_error(resp, StatusCode::NOT_FOUND, "no rating with id").await;
    assert!(all(&ratings).await.is_empty());
}

async fn unknown_paths_and_methods_are_json_errors(backend: Backend) {
    let (c, _) = client(backend).await;
    assert_error(c.get("/films").send().await, StatusCode::NOT_FOUND, "not found").await;
    assert_error(c.get("/ratings/").send().await, StatusCode::NOT_FOUND, "not found").await;
    assert_error(c.patch("/ratings").send().await, StatusCode::METHOD_NOT_ALLOWED, "method not allowed").await;
}

async fn health_metrics_openapi_docs(backend: Backend) {
    let (c, _) = client(backend).await;
    let resp = c.get("/healthz").send().await;
    resp.assert_status_is_ok();
    assert_eq!(json_body(resp).await, json!({"status": "ok"}));

    c.get(format!("/ratings/{}", Uuid::new_v4())).send().await;
    c.get("/no/such/path").send().await;
    let resp = c.get("/metrics").send().await;
    resp.assert_status_is_ok();
    resp.assert_content_type("text/plain; version=0.0.4; charset=utf-8");
    resp.assert_header(SERVED_BY, HOST);
    let text = resp.0.into_body().into_string().await.unwrap();
    assert!(text.contains(r#"http_requests_total{method="GET",route="/ratings/{id}",status="404"} 1"#), "{text}");
    assert!(text.contains(r#"http_requests_total{method="GET",route="unmatched",status="404"} 1"#));
    assert!(text.contains(r#"http_requests_total{method="GET",route="/healthz",status="200"} 1"#));
    assert!(text.contains("http_request_duration_seconds_bucket"));

    let resp = c.get("/openapi.json").send().await;
    resp.assert_status_is_ok();
    let spec = json_body(resp).await;
    let paths = spec["paths"].as_object().unwrap();
    let mut ops: Vec<String> =
        paths.iter().flat_map(|(p, item)| item.as_object().unwrap().keys().map(move |m| format!("{m} {p}"))).collect();
    ops.sort();
    assert_eq!(
        ops,
        [
            "delete /ratings/{id}",
            "get /healthz",
            "get /metrics",
            "get /ratings",
            "get /ratings/{id}",
            "post /ratings",
            "put /ratings/{id}",
        ]
    );
    let created = &spec["paths"]["/ratings"]["post"]["responses"]["201"];
    assert_eq!(created["headers"]["LOCATION"]["required"], json!(true), "{created}");
    assert_eq!(
        spec["components"]["schemas"]["RatingListing"]["oneOf"],
        json!([{"type": "array", "items": {"$ref": "#/components/schemas/Rating"}}, {"$ref": "#/components/schemas/Rating"}])
    );
    assert_eq!(spec["components"]["schemas"]["RatingListing"].get("type"), None);

    let resp = c.get("/docs").send().await;
    resp.assert_status_is_ok();
    resp.assert_header(SERVED_BY, HOST);
    let html = resp.0.into_body().into_string().await.unwrap();
    assert!(html.contains("swagger"), "{html}");
}
