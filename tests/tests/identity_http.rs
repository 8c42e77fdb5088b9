#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The identity half of the HTTP contract (`/work/shared/docs/api.md`): apps and API keys, the
//! app's identity provider and its claim lock, `/v1/me` and every reason a user token is refused,
//! key rotation and the JWKS refetch cooldown, user lifecycle refusals, the operator's views of
//! users and audit rows, the operations endpoints, and that no secret leaks into a response.
//!
//! Every test runs its body once per backend in [`backends`] (SQLite always, PostgreSQL when
//! `CUSTODY_TEST_POSTGRES_URL` is set), each time with a fresh server, database and fake IdP.

use custody_identity::{UnixTime, UserId, UserStatus};
use custody_store::testing::{count_rows, set_user_status};
use custody_store::{Backend, Store};
use custody_tests::backend_test;
use custody_tests::fake_idp::{Alg, DiscoveryMode, FakeIdp};
use custody_tests::harness::{Answer, TestServer, ADMIN_TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------------
// Helpers

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Asserts an RFC 9457 problem answer with the contract's fields.
#[track_caller]
fn assert_problem(a: &Answer, status: StatusCode, code: &str) {
    assert_eq!(a.status, status, "expected {status} `{code}`, got {} {}", a.status, a.body);
    let content_type = a.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(content_type.starts_with("application/problem+json"), "content type `{content_type}` for {}", a.body);
    assert_eq!(a.code(), code, "problem code in {}", a.body);
    assert!(a.body["type"].as_str().is_some_and(|s| !s.is_empty()), "type in {}", a.body);
    assert!(a.body["title"].as_str().is_some_and(|s| !s.is_empty()), "title in {}", a.body);
    assert_eq!(a.body["status"].as_u64(), Some(u64::from(status.as_u16())), "status in {}", a.body);
    assert!(a.body["detail"].as_str().is_some_and(|s| !s.is_empty()), "detail in {}", a.body);
}

/// The problem's `detail`, lower-cased.
fn detail(a: &Answer) -> String {
    a.body["detail"].as_str().unwrap_or_default().to_lowercase()
}

#[track_caller]
fn assert_status(a: &Answer, status: StatusCode) {
    assert_eq!(a.status, status, "expected {status}, got {} {}", a.status, a.body);
}

/// `2026-11-22T10:00:00Z` (fractional seconds tolerated), UTC.
fn is_rfc3339_utc(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    let b = s.as_bytes();
    if b.len() < 20 || !s.ends_with('Z') {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && (b.len() == 20 || (b[19] == b'.' && digits(20..b.len() - 1)))
}

fn is_uuid(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    s.len() == 36
        && s.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

fn sorted(v: &[&str]) -> Vec<String> {
    let set: BTreeSet<String> = v.iter().map(|s| s.to_string()).collect();
    set.into_iter().collect()
}

fn items(a: &Answer) -> Vec<Value> {
    a.body["items"].as_array().cloned().unwrap_or_else(|| panic!("no items in {}", a.body))
}

async fn me(server: &TestServer, key: &str, token: &str) -> Answer {
    server.runtime(Method::GET, "/v1/me", key, token, None).await
}

async fn get_idp(server: &TestServer, app: &str) -> Answer {
    server.admin(Method::GET, &format!("/v1/apps/{app}/identity-provider"), None).await
}

async fn patch_idp(server: &TestServer, app: &str, body: Value) -> Answer {
    server.admin(Method::PATCH, &format!("/v1/apps/{app}/identity-provider"), Some(body)).await
}

async fn rows(store: &Store, table: &str) -> i64 {
    count_rows(store, table).await.unwrap()
}

/// A request with a raw body (for malformed JSON), answered like the harness's `call`.
async fn raw_call(
    server: &TestServer,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Answer {
    let mut req = server.http.request(method, server.url(path)).header("content-type", "application/json").body(body);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    Answer { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null), headers }
}

/// Sends `head` then `body` over a plain TCP connection while reading the answer concurrently (the
/// server may answer before it has read the body), and returns the status and the JSON body.
async fn raw_tcp(server: &TestServer, head: String, body: Vec<u8>) -> (u16, String, Value) {
    let addr = server.base.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let write = tokio::spawn(async move {
        // The server may close before the whole body is sent; that is fine.
        if writer.write_all(head.as_bytes()).await.is_ok() {
            let _ = writer.write_all(&body).await;
        }
        let _ = writer.flush().await;
        writer
    });
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                if complete_response(&answer) {
                    break;
                }
            }
        }
    }
    drop(write.await);
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_lowercase(), serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Whether `bytes` hold a whole response with a `content-length` body.
fn complete_response(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let length = head
        .lines()
        .find_map(|l| l.to_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)));
    length.is_some_and(|n| body.len() >= n)
}

/// Claims for `sub` with extra members.
fn claims_with(idp: &FakeIdp, sub: &str, extra: Value) -> Value {
    let mut claims = idp.claims_for(sub);
    for (k, v) in extra.as_object().unwrap() {
        claims[k.as_str()] = v.clone();
    }
    claims
}

/// An app whose IdP maps `group` and `role` as given (create-time claims).
async fn app_with_claims(server: &TestServer, idp: &FakeIdp, name: &str, claims: Value) -> (String, String) {
    let (app, key) = server.create_app(name).await;
    server.attach_idp(&app, idp, json!({ "claims": claims })).await;
    (app, key)
}

// ---------------------------------------------------------------------------------------------
// Apps

backend_test!(apps_create_get_list_delete);
async fn apps_create_get_list_delete(backend: Backend) {
    let server = TestServer::start(backend).await;
    let created = server.admin(Method::POST, "/v1/apps", Some(json!({"name": "Billing agent"}))).await;
    assert_status(&created, StatusCode::CREATED);
    assert!(created.headers.get("content-type").unwrap().to_str().unwrap().starts_with("application/json"));
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert!(is_uuid(&created.body["id"]), "{}", created.body);
    assert_eq!(created.body["name"], "Billing agent");
    assert!(is_rfc3339_utc(&created.body["created_at"]), "{}", created.body);
    let key = created.body["api_key"].as_str().unwrap().to_owned();
    assert!(key.len() >= 32, "an API key worth the name: {key}");

    // The key is shown only in the creating response.
    let got = server.admin(Method::GET, &format!("/v1/apps/{id}"), None).await;
    assert_status(&got, StatusCode::OK);
    assert_eq!(got.body["id"], created.body["id"]);
    assert_eq!(got.body["name"], "Billing agent");
    assert_eq!(got.body["created_at"], created.body["created_at"]);
    assert!(got.body.get("api_key").is_none(), "{}", got.body);
    assert!(!got.body.to_string().contains(&key));

    let list = server.admin(Method::GET, "/v1/apps", None).await;
    assert_status(&list, StatusCode::OK);
    assert_eq!(list.body["next_cursor"], Value::Null, "{}", list.body);
    let listed = items(&list);
    assert_eq!(listed.len(), 1, "{}", list.body);
    assert_eq!(listed[0]["id"], created.body["id"]);
    assert!(listed[0].get("api_key").is_none());
    assert!(!list.body.to_string().contains(&key));

    // Unknown and malformed ids are 404.
    let unknown = server.admin(Method::GET, "/v1/apps/00000000-0000-4000-8000-000000000000", None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_problem(&unknown, StatusCode::NOT_FOUND, unknown.code());
    let malformed = server.admin(Method::GET, "/v1/apps/not-a-uuid", None).await;
    assert_eq!(malformed.status, StatusCode::NOT_FOUND, "{}", malformed.body);

    let deleted = server.admin(Method::DELETE, &format!("/v1/apps/{id}"), None).await;
    assert_status(&deleted, StatusCode::NO_CONTENT);
    let gone = server.admin(Method::GET, &format!("/v1/apps/{id}"), None).await;
    assert_problem(&gone, StatusCode::NOT_FOUND, gone.code());
    let again = server.admin(Method::DELETE, &format!("/v1/apps/{id}"), None).await;
    assert_problem(&again, StatusCode::NOT_FOUND, again.code());
    let list = server.admin(Method::GET, "/v1/apps", None).await;
    assert!(items(&list).is_empty(), "{}", list.body);
    let store = server.store().await;
    for table in ["apps", "api_keys", "idp_configs", "users", "audit_log"] {
        assert_eq!(rows(&store, table).await, 0, "{table} rows left after the app was deleted");
    }
}

backend_test!(apps_list_paginates_with_limit_and_cursor);
async fn apps_list_paginates_with_limit_and_cursor(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut ids = BTreeSet::new();
    for i in 0..5 {
        ids.insert(server.create_app(&format!("app {i}")).await.0);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let path = match &cursor {
            None => "/v1/apps?limit=2".to_owned(),
            Some(c) => format!(
                "/v1/apps?limit=2&cursor={}",
                url::form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>()
            ),
        };
        let page = server.admin(Method::GET, &path, None).await;
        assert_status(&page, StatusCode::OK);
        let page_items = items(&page);
        assert!(page_items.len() <= 2, "{}", page.body);
        pages.push(page_items.len());
        seen.extend(page_items.iter().map(|a| a["id"].as_str().unwrap().to_owned()));
        match &page.body["next_cursor"] {
            Value::Null => break,
            Value::String(c) => cursor = Some(c.clone()),
            other => panic!("next_cursor must be a string or null, got {other}"),
        }
        assert!(pages.len() < 10, "pagination does not end");
    }
    assert_eq!(pages, vec![2, 2, 1]);
    assert_eq!(seen.len(), 5, "no app twice: {seen:?}");
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), ids);

    let all = server.admin(Method::GET, "/v1/apps", None).await;
    assert_eq!(items(&all).len(), 5);
    assert_eq!(all.body["next_cursor"], Value::Null);
    let exact = server.admin(Method::GET, "/v1/apps?limit=5", None).await;
    assert_eq!(items(&exact).len(), 5);
    assert_eq!(exact.body["next_cursor"], Value::Null, "no next page when the page is exactly full");
    let max = server.admin(Method::GET, "/v1/apps?limit=1000", None).await;
    assert_status(&max, StatusCode::OK);

    for bad in [
        "/v1/apps?limit=0",
        "/v1/apps?limit=1001",
        "/v1/apps?limit=abc",
        "/v1/apps?limit=-1",
        "/v1/apps?cursor=garbage!!",
    ] {
        let a = server.admin(Method::GET, bad, None).await;
        assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_request");
    }
    let a = server.admin(Method::GET, "/v1/apps?limit=0", None).await;
    assert!(detail(&a).contains("limit"), "{}", a.body);
}

backend_test!(operator_endpoints_require_the_admin_token);
async fn operator_endpoints_require_the_admin_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (app, key) = server.create_app("guarded").await;
    let endpoints: Vec<(Method, String, Option<Value>)> = vec![
        (Method::POST, "/v1/apps".into(), Some(json!({"name": "x"}))),
        (Method::GET, "/v1/apps".into(), None),
        (Method::GET, format!("/v1/apps/{app}"), None),
        (Method::DELETE, format!("/v1/apps/{app}"), None),
        (Method::POST, format!("/v1/apps/{app}/api-keys"), None),
        (Method::GET, format!("/v1/apps/{app}/api-keys"), None),
        (
            Method::POST,
            format!("/v1/apps/{app}/identity-provider/discover"),
            Some(json!({"issuer_url": "https://example.com"})),
        ),
        (Method::POST, format!("/v1/apps/{app}/identity-provider"), Some(json!({"issuer_url": "https://example.com"}))),
        (Method::GET, format!("/v1/apps/{app}/identity-provider"), None),
        (Method::PATCH, format!("/v1/apps/{app}/identity-provider"), Some(json!({}))),
        (Method::DELETE, format!("/v1/apps/{app}/identity-provider"), None),
        (Method::GET, format!("/v1/apps/{app}/users"), None),
        (Method::GET, format!("/v1/apps/{app}/audit"), None),
    ];
    let wrong = format!("{ADMIN_TOKEN}x");
    for (method, path, body) in &endpoints {
        for bearer in [None, Some("wrong-token"), Some(wrong.as_str()), Some(key.as_str())] {
            let a = server.call(method.clone(), path, bearer, None, body.clone()).await;
            assert_problem(&a, StatusCode::UNAUTHORIZED, "unauthorized");
            if let Some(b) = bearer {
                assert!(!a.body.to_string().contains(b), "the presented credential is echoed: {}", a.body);
            }
        }
        // The admin token under another scheme is not a bearer token.
        let resp = server
            .http
            .request(method.clone(), server.url(path))
            .header("authorization", format!("Basic {ADMIN_TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{method} {path} with Basic");
    }
    // Nothing above changed anything.
    let store = server.store().await;
    assert_eq!(rows(&store, "apps").await, 1);
    assert_eq!(rows(&store, "api_keys").await, 1);
    assert_eq!(rows(&store, "idp_configs").await, 0);
}

backend_test!(malformed_bodies_are_invalid_request_naming_the_field);
async fn malformed_bodies_are_invalid_request_naming_the_field(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, _) = server.create_app("bodies").await;
    let bearer = Some(ADMIN_TOKEN);

    let a = raw_call(&server, Method::POST, "/v1/apps", bearer, "{not json").await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_request");
    let a = raw_call(&server, Method::POST, "/v1/apps", bearer, r#"{"name": "x"} trailing"#).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_request");
    let a = raw_call(&server, Method::POST, "/v1/apps", bearer, "[]").await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_request");

    let cases: Vec<(Method, String, &str, &str)> = vec![
        (Method::POST, "/v1/apps".into(), "{}", "name"),
        (Method::POST, "/v1/apps".into(), r#"{"name": 5}"#, "name"),
        (Method::POST, "/v1/apps".into(), r#"{"name": null}"#, "name"),
        (Method::POST, "/v1/apps".into(), r#"{"name": ""}"#, "name"),
        (Method::POST, "/v1/apps".into(), r#"{"name": "x", "colour": "red"}"#, "colour"),
        (Method::POST, format!("/v1/apps/{app}/identity-provider/discover"), "{}", "issuer_url"),
        (Method::POST, format!("/v1/apps/{app}/identity-provider/discover"), r#"{"issuer_url": 7}"#, "issuer_url"),
        (Method::POST, format!("/v1/apps/{app}/identity-provider"), "{}", "issuer_url"),
        (Method::POST, format!("/v1/apps/{app}/identity-provider"), r#"{"issuer_url": ["x"]}"#, "issuer_url"),
    ];
    for (method, path, body, field) in cases {
        let a = raw_call(&server, method.clone(), &path, bearer, body).await;
        assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_request");
        assert!(detail(&a).contains(field), "{method} {path} {body}: detail should name `{field}`: {}", a.body);
    }
    let issuer = idp.issuer();
    let nested: Vec<(String, &str)> = vec![
        (json!({"issuer_url": issuer, "audience": 5}).to_string(), "audience"),
        (json!({"issuer_url": issuer, "kind": "pingfederate"}).to_string(), "kind"),
        (json!({"issuer_url": issuer, "claims": {"group": 5}}).to_string(), "claims.group"),
        (json!({"issuer_url": issuer, "claims": {"role": ["a"]}}).to_string(), "claims.role"),
        (json!({"issuer_url": issuer, "claims": {"user_id": ""}}).to_string(), "claims.user_id"),
        (json!({"issuer_url": issuer, "claims": "sub"}).to_string(), "claims"),
    ];
    for (body, field) in nested {
        let a =
            raw_call(&server, Method::POST, &format!("/v1/apps/{app}/identity-provider"), bearer, body.clone()).await;
        assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_request");
        assert!(detail(&a).contains(field), "{body}: detail should name `{field}`: {}", a.body);
    }
    assert_eq!(idp.discovery_fetches(), 0, "a refused body must not reach discovery");
    server.attach_idp(&app, &idp, json!({})).await;
    for (body, field) in [(r#"{"audience": 5}"#, "audience"), (r#"{"claims": {"group": false}}"#, "claims.group")] {
        let a = raw_call(&server, Method::PATCH, &format!("/v1/apps/{app}/identity-provider"), bearer, body).await;
        assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_request");
        assert!(detail(&a).contains(field), "{body}: detail should name `{field}`: {}", a.body);
    }
    let store = server.store().await;
    assert_eq!(rows(&store, "apps").await, 1, "no app was created by a bad body");
}

backend_test!(bodies_over_one_mebibyte_are_413);
async fn bodies_over_one_mebibyte_are_413(backend: Backend) {
    let server = TestServer::start(backend).await;
    let limit = 1024 * 1024;

    // Declared too large: answered from the header alone.
    let head = format!(
        "POST /v1/apps HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN_TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        limit + 1
    );
    let (status, headers, body) = raw_tcp(&server, head, b"{\"name\": \"".to_vec()).await;
    assert_eq!(status, 413, "{headers}\n{body}");
    assert!(headers.contains("content-type: application/problem+json"), "{headers}");
    assert_eq!(body["code"], "payload_too_large", "{body}");
    assert_eq!(body["status"], 413);

    // Chunked, no length: refused once more than the limit has arrived.
    let mut chunked = Vec::new();
    let chunk = vec![b' '; 64 * 1024];
    chunked.extend_from_slice(b"1\r\n{\r\n");
    for _ in 0..(limit / chunk.len() + 2) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = format!(
        "POST /v1/apps HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN_TOKEN}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    let (status, headers, body) = raw_tcp(&server, head, chunked).await;
    assert_eq!(status, 413, "{headers}\n{body}");
    assert_eq!(body["code"], "payload_too_large", "{body}");

    // Exactly 1 MiB is still accepted.
    let mut exact = br#"{"name": "padded"}"#.to_vec();
    exact.resize(limit, b' ');
    let a = raw_call(&server, Method::POST, "/v1/apps", Some(ADMIN_TOKEN), exact).await;
    assert_status(&a, StatusCode::CREATED);
    let store = server.store().await;
    assert_eq!(rows(&store, "apps").await, 1, "only the 1 MiB body created an app");
}

backend_test!(deleting_an_app_stops_its_api_key_at_once);
async fn deleting_an_app_stops_its_api_key_at_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = server.app_with_idp(&idp).await;
    let (_other, other_key) = server.app_with_idp(&idp).await;
    let token = idp.token_for("alice");
    assert_status(&me(&server, &key, &token).await, StatusCode::OK);
    assert_status(&me(&server, &other_key, &token).await, StatusCode::OK);

    assert_status(&server.admin(Method::DELETE, &format!("/v1/apps/{app}"), None).await, StatusCode::NO_CONTENT);
    let refused = me(&server, &key, &token).await;
    assert_problem(&refused, StatusCode::UNAUTHORIZED, "unauthorized");
    let users = server.admin(Method::GET, &format!("/v1/apps/{app}/users"), None).await;
    assert_eq!(users.status, StatusCode::NOT_FOUND, "{}", users.body);
    // The other app is untouched.
    assert_status(&me(&server, &other_key, &token).await, StatusCode::OK);
    let store = server.store().await;
    assert_eq!(rows(&store, "users").await, 1, "the deleted app's users went with it");
    assert_eq!(rows(&store, "idp_configs").await, 1);
}

// ---------------------------------------------------------------------------------------------
// API keys

backend_test!(api_keys_create_list_delete);
async fn api_keys_create_list_delete(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, first_key) = server.app_with_idp(&idp).await;
    let token = idp.token_for("alice");

    let created = server.admin(Method::POST, &format!("/v1/apps/{app}/api-keys"), None).await;
    assert_status(&created, StatusCode::CREATED);
    assert!(is_uuid(&created.body["id"]), "{}", created.body);
    assert!(is_rfc3339_utc(&created.body["created_at"]), "{}", created.body);
    let key_id = created.body["id"].as_str().unwrap().to_owned();
    let second_key = created.body["api_key"].as_str().unwrap().to_owned();
    assert_ne!(second_key, first_key);

    let list = server.admin(Method::GET, &format!("/v1/apps/{app}/api-keys"), None).await;
    assert_status(&list, StatusCode::OK);
    assert_eq!(list.body["next_cursor"], Value::Null);
    let keys = items(&list);
    assert_eq!(keys.len(), 2, "{}", list.body);
    for k in &keys {
        assert!(is_uuid(&k["id"]), "{k}");
        let prefix = k["prefix"].as_str().unwrap_or_else(|| panic!("prefix in {k}"));
        assert!(!prefix.is_empty() && prefix.len() < 24, "a prefix, not the key: {prefix}");
        assert!(is_rfc3339_utc(&k["created_at"]), "{k}");
        assert!(k["last_used_at"].is_null() || is_rfc3339_utc(&k["last_used_at"]), "{k}");
        assert!(k.get("api_key").is_none(), "{k}");
    }
    let text = list.body.to_string();
    assert!(!text.contains(&first_key) && !text.contains(&second_key), "a secret in the key list: {text}");
    let listed = keys.iter().find(|k| k["id"] == created.body["id"]).expect("the new key is listed");
    assert!(second_key.starts_with(listed["prefix"].as_str().unwrap()), "the prefix identifies the key");
    let limited = server.admin(Method::GET, &format!("/v1/apps/{app}/api-keys?limit=1"), None).await;
    assert_eq!(items(&limited).len(), 1);
    assert!(limited.body["next_cursor"].is_string(), "{}", limited.body);

    // Both keys work; the new key's use is recorded.
    assert_status(&me(&server, &second_key, &token).await, StatusCode::OK);
    assert_status(&me(&server, &first_key, &token).await, StatusCode::OK);
    let mut used = Value::Null;
    for _ in 0..50 {
        let list = server.admin(Method::GET, &format!("/v1/apps/{app}/api-keys"), None).await;
        used = items(&list).into_iter().find(|k| k["id"] == created.body["id"]).unwrap()["last_used_at"].clone();
        if !used.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(is_rfc3339_utc(&used), "last_used_at after use: {used}");

    let deleted = server.admin(Method::DELETE, &format!("/v1/apps/{app}/api-keys/{key_id}"), None).await;
    assert_status(&deleted, StatusCode::NO_CONTENT);
    // Refused on the very next call, though it was just used (and so cached).
    assert_problem(&me(&server, &second_key, &token).await, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_status(&me(&server, &first_key, &token).await, StatusCode::OK);
    let again = server.admin(Method::DELETE, &format!("/v1/apps/{app}/api-keys/{key_id}"), None).await;
    assert_problem(&again, StatusCode::NOT_FOUND, again.code());
    let list = server.admin(Method::GET, &format!("/v1/apps/{app}/api-keys"), None).await;
    assert_eq!(items(&list).len(), 1);

    // Keys of an unknown app.
    let unknown = "00000000-0000-4000-8000-000000000000";
    let a = server.admin(Method::POST, &format!("/v1/apps/{unknown}/api-keys"), None).await;
    assert_problem(&a, StatusCode::NOT_FOUND, a.code());
    let a = server.admin(Method::GET, &format!("/v1/apps/{unknown}/api-keys"), None).await;
    assert_problem(&a, StatusCode::NOT_FOUND, a.code());

    // A made-up key, and a key with the right prefix but the wrong secret.
    assert_problem(&me(&server, "ck_nope", &token).await, StatusCode::UNAUTHORIZED, "unauthorized");
    let mut forged = first_key.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert_problem(&me(&server, &forged, &token).await, StatusCode::UNAUTHORIZED, "unauthorized");
}

backend_test!(an_api_key_reaches_only_its_own_app);
async fn an_api_key_reaches_only_its_own_app(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app_a, key_a) = server.app_with_idp(&idp).await;
    let (app_b, key_b) = server.app_with_idp(&idp).await;
    let (_app_c, key_c) = server.create_app("no idp").await;
    let token = idp.sign(claims_with(&idp, "alice", json!({"email": "alice@a.example"})), Alg::Rs256);

    let in_a = me(&server, &key_a, &token).await;
    assert_status(&in_a, StatusCode::OK);
    // The same subject through app B is app B's own user, not app A's.
    let in_b = me(&server, &key_b, &token).await;
    assert_status(&in_b, StatusCode::OK);
    assert_ne!(in_a.body["user_id"], in_b.body["user_id"]);
    assert_eq!(in_b.body["subject"], "alice");
    // App C has no IdP: its key does not borrow another app's.
    assert_problem(&me(&server, &key_c, &token).await, StatusCode::CONFLICT, "idp_not_configured");

    let user_a = in_a.body["user_id"].as_str().unwrap();
    let user_b = in_b.body["user_id"].as_str().unwrap();
    let list_a = server.admin(Method::GET, &format!("/v1/apps/{app_a}/users"), None).await;
    assert_eq!(items(&list_a).iter().map(|u| u["user_id"].clone()).collect::<Vec<_>>(), vec![json!(user_a)]);
    let cross = server.admin(Method::GET, &format!("/v1/apps/{app_a}/users/{user_b}"), None).await;
    assert_problem(&cross, StatusCode::NOT_FOUND, cross.code());
    let cross = server.admin(Method::GET, &format!("/v1/apps/{app_b}/users/{user_a}"), None).await;
    assert_problem(&cross, StatusCode::NOT_FOUND, cross.code());

    // Deleting app A's key through app B's path is 404 and the key keeps working.
    let keys_a = server.admin(Method::GET, &format!("/v1/apps/{app_a}/api-keys"), None).await;
    let key_a_id = items(&keys_a)[0]["id"].as_str().unwrap().to_owned();
    let cross = server.admin(Method::DELETE, &format!("/v1/apps/{app_b}/api-keys/{key_a_id}"), None).await;
    assert_problem(&cross, StatusCode::NOT_FOUND, cross.code());
    assert_status(&me(&server, &key_a, &token).await, StatusCode::OK);

    // Suspending A's user leaves B's alone.
    let store = server.store().await;
    set_user_status(&store, &UserId::parse(user_a).unwrap(), UserStatus::Suspended, UnixTime(now())).await.unwrap();
    assert_problem(&me(&server, &key_a, &token).await, StatusCode::FORBIDDEN, "user_suspended");
    assert_status(&me(&server, &key_b, &token).await, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// Identity provider: discovery

backend_test!(discover_reports_the_issuer_and_stores_nothing);
async fn discover_reports_the_issuer_and_stores_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, _) = server.create_app("discovering").await;
    let path = format!("/v1/apps/{app}/identity-provider/discover");

    let a = server.admin(Method::POST, &path, Some(json!({"issuer_url": idp.issuer()}))).await;
    assert_status(&a, StatusCode::OK);
    assert_eq!(a.body["kind"], "custom_oidc");
    assert_eq!(a.body["issuer"], json!(idp.issuer()));
    assert_eq!(a.body["jwks_uri"], json!(idp.jwks_uri()));
    assert_eq!(a.body["authorization_endpoint"], Value::Null);
    assert_eq!(a.body["token_endpoint"], Value::Null);
    assert_eq!(a.body["end_session_endpoint"], Value::Null);
    let algs = strings(&a.body["signing_algs"]);
    for alg in ["RS256", "ES256", "EdDSA"] {
        assert!(algs.iter().any(|x| x == alg), "{alg} in {algs:?}");
    }
    assert_eq!(a.body["claims"], json!({"user_id": "sub", "group": null, "role": null}));
    assert_eq!(a.body["capabilities"]["webhooks"], "generated_secret");
    assert_eq!(a.body["capabilities"]["oidc_sign_in"], false);
    assert_eq!(idp.discovery_fetches(), 1);

    // Stores nothing.
    assert_problem(&get_idp(&server, &app).await, StatusCode::NOT_FOUND, "idp_not_configured");
    let store = server.store().await;
    assert_eq!(rows(&store, "idp_configs").await, 0);

    // Sign-in endpoints are passed through and make OIDC sign-in possible.
    let base = idp.issuer();
    idp.set_metadata("authorization_endpoint", json!(format!("{base}/authorize")));
    idp.set_metadata("token_endpoint", json!(format!("{base}/token")));
    idp.set_metadata("end_session_endpoint", json!(format!("{base}/logout")));
    let a = server.admin(Method::POST, &path, Some(json!({"issuer_url": format!("{base}/")}))).await;
    assert_status(&a, StatusCode::OK);
    assert_eq!(a.body["authorization_endpoint"], json!(format!("{base}/authorize")));
    assert_eq!(a.body["token_endpoint"], json!(format!("{base}/token")));
    assert_eq!(a.body["end_session_endpoint"], json!(format!("{base}/logout")));
    assert_eq!(a.body["capabilities"]["oidc_sign_in"], true);

    // A kind override changes the defaults and the webhook scheme.
    let a = server.admin(Method::POST, &path, Some(json!({"issuer_url": idp.issuer(), "kind": "clerk"}))).await;
    assert_status(&a, StatusCode::OK);
    assert_eq!(a.body["kind"], "clerk");
    assert_eq!(a.body["claims"]["group"], "org_memberships");
    assert_eq!(a.body["claims"]["user_id"], "sub");
    assert_eq!(a.body["capabilities"]["webhooks"], "provided_secret");

    assert_eq!(rows(&store, "idp_configs").await, 0, "discovery never stores");
    let audit = server.admin(Method::GET, &format!("/v1/apps/{app}/audit"), None).await;
    assert!(items(&audit).iter().all(|r| r["action"] != "idp.create"), "{}", audit.body);

    // Unknown app.
    let a = server
        .admin(
            Method::POST,
            "/v1/apps/00000000-0000-4000-8000-000000000000/identity-provider/discover",
            Some(json!({"issuer_url": idp.issuer()})),
        )
        .await;
    assert_problem(&a, StatusCode::NOT_FOUND, a.code());
}

backend_test!(discovery_failures_are_422_and_nothing_is_stored);
async fn discovery_failures_are_422_and_nothing_is_stored(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, _) = server.create_app("failing").await;
    let discover = format!("/v1/apps/{app}/identity-provider/discover");
    let create = format!("/v1/apps/{app}/identity-provider");
    let store = server.store().await;

    type Setup = Box<dyn Fn(&FakeIdp)>;
    let cases: Vec<(&str, Setup)> = vec![
        ("server error", Box::new(|i: &FakeIdp| i.set_discovery_mode(DiscoveryMode::ServerError))),
        ("not JSON", Box::new(|i: &FakeIdp| i.set_discovery_mode(DiscoveryMode::NotJson))),
        ("no jwks_uri", Box::new(|i: &FakeIdp| i.set_discovery_mode(DiscoveryMode::MissingJwksUri))),
        ("issuer mismatch", Box::new(|i: &FakeIdp| i.set_declared_issuer(Some("http://127.0.0.1:1/someone-else")))),
    ];
    for (name, setup) in cases {
        idp.set_discovery_mode(DiscoveryMode::Normal);
        idp.set_declared_issuer(None);
        setup(&idp);
        let body = json!({"issuer_url": idp.issuer(), "audience": idp.audience()});
        let before = idp.discovery_fetches();
        let a = server.admin(Method::POST, &discover, Some(json!({"issuer_url": idp.issuer()}))).await;
        assert_problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "discovery_failed");
        let a = server.admin(Method::POST, &create, Some(body)).await;
        assert_problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "discovery_failed");
        assert_eq!(idp.discovery_fetches(), before + 2, "{name}: create discovers again");
        assert_problem(&get_idp(&server, &app).await, StatusCode::NOT_FOUND, "idp_not_configured");
        assert_eq!(rows(&store, "idp_configs").await, 0, "{name}: nothing stored");
    }
    // Unreachable.
    let a = server.admin(Method::POST, &create, Some(json!({"issuer_url": "http://127.0.0.1:1"}))).await;
    assert_problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "discovery_failed");
    assert_eq!(rows(&store, "idp_configs").await, 0);

    // Once the IdP behaves, creation works (nothing half-stored blocks it).
    idp.set_discovery_mode(DiscoveryMode::Normal);
    idp.set_declared_issuer(None);
    server.attach_idp(&app, &idp, json!({})).await;
    let audit = server.admin(Method::GET, &format!("/v1/apps/{app}/audit?action=idp.create"), None).await;
    assert_eq!(items(&audit).len(), 1, "only the successful create is audited: {}", audit.body);
}

backend_test!(invalid_issuer_urls_are_400);
async fn invalid_issuer_urls_are_400(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, _) = server.create_app("urls").await;
    let issuer = idp.issuer();
    let bad = [
        format!("{issuer}?tenant=1"),
        format!("{issuer}/#frag"),
        format!("{issuer}/.well-known/openid-configuration"),
        "idp.example.com".to_owned(),
        "/relative/path".to_owned(),
        "ftp://idp.example.com".to_owned(),
        "http://idp.example.com".to_owned(),
        String::new(),
    ];
    for url in &bad {
        for path in [format!("/v1/apps/{app}/identity-provider/discover"), format!("/v1/apps/{app}/identity-provider")]
        {
            let a = server.admin(Method::POST, &path, Some(json!({"issuer_url": url}))).await;
            assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_issuer_url");
        }
    }
    assert_eq!(idp.discovery_fetches(), 0, "a refused URL is never fetched");
    assert_problem(&get_idp(&server, &app).await, StatusCode::NOT_FOUND, "idp_not_configured");
    let store = server.store().await;
    assert_eq!(rows(&store, "idp_configs").await, 0);
}

backend_test!(plain_http_loopback_issuer_refused_unless_insecure_issuers_allowed);
async fn plain_http_loopback_issuer_refused_unless_insecure_issuers_allowed(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.allow_insecure_issuers = false).await;
    let idp = FakeIdp::start().await;
    let (app, _) = server.create_app("strict").await;
    for path in [format!("/v1/apps/{app}/identity-provider/discover"), format!("/v1/apps/{app}/identity-provider")] {
        for url in [idp.issuer(), format!("http://localhost:{}", idp.addr().port())] {
            let a = server.admin(Method::POST, &path, Some(json!({"issuer_url": url}))).await;
            assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_issuer_url");
        }
    }
    assert_eq!(idp.discovery_fetches(), 0);
    let store = server.store().await;
    assert_eq!(rows(&store, "idp_configs").await, 0);
}

// ---------------------------------------------------------------------------------------------
// Identity provider: create, read, patch, delete

backend_test!(create_idp_returns_the_idp_object);
async fn create_idp_returns_the_idp_object(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, _) = server.create_app("with idp").await;
    let created = server.attach_idp(&app, &idp, json!({})).await;
    let o = &created.body;
    let public = &server.base;
    assert!(is_uuid(&o["id"]), "{o}");
    assert_eq!(o["kind"], "custom_oidc");
    assert_eq!(o["issuer"], json!(idp.issuer()));
    assert_eq!(o["jwks_uri"], json!(idp.jwks_uri()));
    assert_eq!(o["audience"], json!(idp.audience()));
    assert_eq!(o["claims"], json!({"user_id": "sub", "group": null, "role": null}));
    assert_eq!(o["claims_locked"], false);
    assert_eq!(o["claims_locked_at"], Value::Null);
    assert_eq!(o["oidc"]["configured"], false);
    assert_eq!(o["oidc"]["client_id"], Value::Null);
    assert_eq!(o["oidc"]["redirect_uris"]["sdk"], json!(format!("{public}/v1/auth/callback")));
    assert_eq!(o["oidc"]["redirect_uris"]["wallet"], json!(format!("{public}/wallet/auth/callback")));
    assert_eq!(o["oidc"]["logout_url"], json!(format!("{public}/wallet/sign-in")));
    assert_eq!(o["webhook"]["url"], json!(format!("{public}/v1/webhooks/{app}")));
    assert_eq!(o["webhook"]["enabled"], false);
    assert_eq!(o["webhook"]["secret_source"], "generated");
    assert_eq!(o["webhook"]["rotated_at"], Value::Null);
    assert!(is_rfc3339_utc(&o["created_at"]), "{o}");

    let got = get_idp(&server, &app).await;
    assert_status(&got, StatusCode::OK);
    assert_eq!(&got.body, o, "GET shows what create returned");

    // One IdP per app.
    let second = server
        .admin(Method::POST, &format!("/v1/apps/{app}/identity-provider"), Some(json!({"issuer_url": idp.issuer()})))
        .await;
    assert_problem(&second, StatusCode::CONFLICT, "idp_already_configured");
    assert_eq!(get_idp(&server, &app).await.body, *o, "the first IdP is untouched");
    let store = server.store().await;
    assert_eq!(rows(&store, "idp_configs").await, 1);

    // No audience: tokens are accepted whatever their `aud`.
    let (open_app, open_key) = server.create_app("no audience").await;
    let a = server
        .admin(
            Method::POST,
            &format!("/v1/apps/{open_app}/identity-provider"),
            Some(json!({"issuer_url": idp.issuer()})),
        )
        .await;
    assert_status(&a, StatusCode::CREATED);
    assert_eq!(a.body["audience"], Value::Null);
    let token = idp.sign(claims_with(&idp, "bob", json!({"aud": "someone-else"})), Alg::Rs256);
    assert_status(&me(&server, &open_key, &token).await, StatusCode::OK);

    // Unknown app.
    let a = server
        .admin(
            Method::POST,
            "/v1/apps/00000000-0000-4000-8000-000000000000/identity-provider",
            Some(json!({"issuer_url": idp.issuer()})),
        )
        .await;
    assert_problem(&a, StatusCode::NOT_FOUND, a.code());
    let a = get_idp(&server, "00000000-0000-4000-8000-000000000000").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

backend_test!(kind_override_and_explicit_claims);
async fn kind_override_and_explicit_claims(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;

    let (clerk_app, clerk_key) = server.create_app("clerk on a custom domain").await;
    let clerk = server.attach_idp(&clerk_app, &idp, json!({"kind": "clerk"})).await;
    assert_eq!(clerk.body["kind"], "clerk");
    assert_eq!(clerk.body["claims"], json!({"user_id": "sub", "group": "org_memberships", "role": null}));
    assert_eq!(clerk.body["webhook"]["secret_source"], "provided");
    // Clerk's default group claim is read as an object whose keys are the groups.
    let token = idp.sign(
        claims_with(&idp, "user_2x", json!({"org_memberships": {"org_a": "admin", "org_b": "basic_member"}})),
        Alg::Rs256,
    );
    let a = me(&server, &clerk_key, &token).await;
    assert_status(&a, StatusCode::OK);
    assert_eq!(strings(&a.body["groups"]), sorted(&["org_a", "org_b"]));

    let (auth0_app, _) = server.create_app("auth0 on a custom domain").await;
    let auth0 = server.attach_idp(&auth0_app, &idp, json!({"kind": "auth0"})).await;
    assert_eq!(auth0.body["kind"], "auth0");
    assert_eq!(auth0.body["claims"], json!({"user_id": "sub", "group": null, "role": null}));
    assert_eq!(auth0.body["webhook"]["secret_source"], "generated");

    // An explicit null drops a default.
    let (plain_clerk, _) = server.create_app("clerk without groups").await;
    let a = server.attach_idp(&plain_clerk, &idp, json!({"kind": "clerk", "claims": {"group": null}})).await;
    assert_eq!(a.body["claims"]["group"], Value::Null);

    // Explicit claims, the user id included.
    let (custom_app, custom_key) = server.create_app("explicit claims").await;
    let a = server
        .attach_idp(&custom_app, &idp, json!({"claims": {"user_id": "uid", "group": "groups", "role": "/app/roles"}}))
        .await;
    assert_eq!(a.body["claims"], json!({"user_id": "uid", "group": "groups", "role": "/app/roles"}));
    let token = idp.sign(
        claims_with(&idp, "sub-is-not-the-id", json!({"uid": "u-42", "groups": ["g"], "app": {"roles": ["r"]}})),
        Alg::Rs256,
    );
    let a = me(&server, &custom_key, &token).await;
    assert_status(&a, StatusCode::OK);
    assert_eq!(a.body["subject"], "u-42");
    assert_eq!(strings(&a.body["groups"]), vec!["g"]);
    assert_eq!(strings(&a.body["roles"]), vec!["r"]);
    let without_uid = idp.token_for("someone");
    let a = me(&server, &custom_key, &without_uid).await;
    assert_problem(&a, StatusCode::UNAUTHORIZED, "invalid_user_token");
    assert!(detail(&a).contains("uid"), "the missing claim is named: {}", a.body);
}

backend_test!(patch_and_delete_idp);
async fn patch_and_delete_idp(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = server.app_with_idp(&idp).await;
    let original = get_idp(&server, &app).await.body;

    let a = patch_idp(&server, &app, json!({"audience": "another-audience"})).await;
    assert_status(&a, StatusCode::OK);
    assert_eq!(a.body["audience"], "another-audience");
    assert_eq!(a.body["id"], original["id"]);
    assert_eq!(a.body["claims"], original["claims"]);
    assert_eq!(get_idp(&server, &app).await.body["audience"], "another-audience");
    // The audience is enforced as patched.
    let token = idp.token_for("alice");
    let refused = me(&server, &key, &token).await;
    assert_problem(&refused, StatusCode::UNAUTHORIZED, "invalid_user_token");
    assert!(detail(&refused).contains("audience"), "{}", refused.body);
    assert_eq!(get_idp(&server, &app).await.body["claims_locked"], false, "a refused token locks nothing");

    let a = patch_idp(&server, &app, json!({"audience": null})).await;
    assert_status(&a, StatusCode::OK);
    assert_eq!(a.body["audience"], Value::Null);
    let a =
        patch_idp(&server, &app, json!({"audience": idp.audience(), "claims": {"group": "groups", "role": "roles"}}))
            .await;
    assert_status(&a, StatusCode::OK);
    assert_eq!(a.body["audience"], json!(idp.audience()));
    assert_eq!(a.body["claims"], json!({"user_id": "sub", "group": "groups", "role": "roles"}));
    let a = patch_idp(&server, &app, json!({})).await;
    assert_status(&a, StatusCode::OK);
    assert_eq!(a.body["claims"]["group"], "groups", "an empty PATCH changes nothing");
    let a = patch_idp(&server, &app, json!({"audience": ""})).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(detail(&a).contains("audience"), "{}", a.body);

    let deleted = server.admin(Method::DELETE, &format!("/v1/apps/{app}/identity-provider"), None).await;
    assert_status(&deleted, StatusCode::NO_CONTENT);
    assert_problem(&get_idp(&server, &app).await, StatusCode::NOT_FOUND, "idp_not_configured");
    let again = server.admin(Method::DELETE, &format!("/v1/apps/{app}/identity-provider"), None).await;
    assert_problem(&again, StatusCode::NOT_FOUND, "idp_not_configured");
    assert_problem(
        &patch_idp(&server, &app, json!({"audience": "x"})).await,
        StatusCode::NOT_FOUND,
        "idp_not_configured",
    );
    assert_problem(&me(&server, &key, &token).await, StatusCode::CONFLICT, "idp_not_configured");
}

backend_test!(a_replacement_idp_finds_the_same_users);
async fn a_replacement_idp_finds_the_same_users(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = server.app_with_idp(&idp).await;
    let first = me(&server, &key, &idp.token_for("alice")).await;
    assert_status(&first, StatusCode::OK);
    assert_eq!(get_idp(&server, &app).await.body["claims_locked"], true);

    let old_id = get_idp(&server, &app).await.body["id"].clone();
    assert_status(
        &server.admin(Method::DELETE, &format!("/v1/apps/{app}/identity-provider"), None).await,
        StatusCode::NO_CONTENT,
    );
    let store = server.store().await;
    assert_eq!(rows(&store, "users").await, 1, "users stay when the IdP goes");
    let replacement = server.attach_idp(&app, &idp, json!({"claims": {"group": "groups"}})).await;
    assert_eq!(replacement.body["claims_locked"], false, "a new configuration starts unlocked");
    assert_eq!(replacement.body["claims_locked_at"], Value::Null);
    assert_ne!(replacement.body["id"], old_id);

    let token = idp.sign(claims_with(&idp, "alice", json!({"groups": ["g1"]})), Alg::Rs256);
    let again = me(&server, &key, &token).await;
    assert_status(&again, StatusCode::OK);
    assert_eq!(again.body["user_id"], first.body["user_id"]);
    assert_eq!(again.body["created_at"], first.body["created_at"]);
    assert_eq!(strings(&again.body["groups"]), vec!["g1"]);
    assert_eq!(rows(&store, "users").await, 1);
    assert_eq!(get_idp(&server, &app).await.body["claims_locked"], true);
}

// ---------------------------------------------------------------------------------------------
// The claim lock

backend_test!(claim_mappings_lock_after_the_first_user);
async fn claim_mappings_lock_after_the_first_user(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = server.app_with_idp(&idp).await;

    // Before any user, the mappings can change freely.
    let a = patch_idp(&server, &app, json!({"claims": {"group": "groups"}})).await;
    assert_status(&a, StatusCode::OK);
    let a = patch_idp(&server, &app, json!({"claims": {"group": "teams", "role": "roles"}})).await;
    assert_status(&a, StatusCode::OK);
    assert_eq!(a.body["claims"], json!({"user_id": "sub", "group": "teams", "role": "roles"}));
    // Refused tokens do not lock.
    assert_problem(&me(&server, &key, "garbage").await, StatusCode::UNAUTHORIZED, "invalid_user_token");
    let expired = idp.sign(claims_with(&idp, "alice", json!({"exp": now() - 3600})), Alg::Rs256);
    assert_problem(&me(&server, &key, &expired).await, StatusCode::UNAUTHORIZED, "invalid_user_token");
    let got = get_idp(&server, &app).await;
    assert_eq!(got.body["claims_locked"], false);
    assert_eq!(got.body["claims_locked_at"], Value::Null);

    let token = idp.sign(claims_with(&idp, "alice", json!({"teams": ["t1"], "roles": ["r1"]})), Alg::Rs256);
    let first = me(&server, &key, &token).await;
    assert_status(&first, StatusCode::OK);
    assert_eq!(strings(&first.body["groups"]), vec!["t1"]);
    let got = get_idp(&server, &app).await;
    assert_eq!(got.body["claims_locked"], true, "{}", got.body);
    assert!(is_rfc3339_utc(&got.body["claims_locked_at"]), "{}", got.body);
    let locked = got.body.clone();

    for (change, field) in [
        (json!({"claims": {"group": "other"}}), "group"),
        (json!({"claims": {"group": null}}), "group"),
        (json!({"claims": {"user_id": "uid"}}), "user_id"),
        (json!({"claims": {"role": null}}), "role"),
        (json!({"claims": {"role": "/app/roles"}}), "role"),
        // Audience and a claim change together: all or nothing.
        (json!({"audience": "changed-too", "claims": {"group": "other"}}), "group"),
    ] {
        let a = patch_idp(&server, &app, change.clone()).await;
        assert_problem(&a, StatusCode::CONFLICT, "claim_mappings_locked");
        assert!(detail(&a).contains(field), "{change}: {}", a.body);
    }
    assert_eq!(get_idp(&server, &app).await.body, locked, "refused patches changed nothing");

    // Repeating the current values is not a change.
    let same = patch_idp(&server, &app, json!({"claims": {"user_id": "sub", "group": "teams", "role": "roles"}})).await;
    assert_status(&same, StatusCode::OK);
    assert_eq!(same.body["claims"], locked["claims"]);
    assert_eq!(same.body["claims_locked"], true);
    assert_eq!(same.body["claims_locked_at"], locked["claims_locked_at"]);

    // The audience stays editable.
    let a = patch_idp(&server, &app, json!({"audience": "new-audience", "claims": {"group": "teams"}})).await;
    assert_status(&a, StatusCode::OK);
    assert_eq!(a.body["audience"], "new-audience");
    assert_eq!(a.body["claims_locked"], true);
    assert_eq!(a.body["claims_locked_at"], locked["claims_locked_at"], "the lock time does not move");
    let a = patch_idp(&server, &app, json!({"audience": idp.audience()})).await;
    assert_status(&a, StatusCode::OK);
    assert_status(&me(&server, &key, &token).await, StatusCode::OK);
}

backend_test!(claim_lock_races_with_a_mapping_change);
async fn claim_lock_races_with_a_mapping_change(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let mut outcomes = Vec::new();
    for round in 0..8 {
        let (app, key) = server.create_app(&format!("race {round}")).await;
        server.attach_idp(&app, &idp, json!({"claims": {"group": "groups"}})).await;
        let token =
            idp.sign(claims_with(&idp, "alice", json!({"groups": ["old-group"], "teams": ["new-group"]})), Alg::Rs256);
        let patch_path = format!("/v1/apps/{app}/identity-provider");
        let (patched, first) = tokio::join!(
            server.admin(Method::PATCH, &patch_path, Some(json!({"claims": {"group": "teams"}}))),
            me(&server, &key, &token),
        );
        assert_status(&first, StatusCode::OK);
        let got = get_idp(&server, &app).await;
        assert_eq!(got.body["claims_locked"], true, "{}", got.body);
        let locked_group = got.body["claims"]["group"].as_str().unwrap().to_owned();
        match patched.status {
            StatusCode::OK => {
                assert_eq!(locked_group, "teams", "the PATCH succeeded, so its mapping must be the locked one");
                outcomes.push("patch first");
            }
            StatusCode::CONFLICT => {
                assert_problem(&patched, StatusCode::CONFLICT, "claim_mappings_locked");
                assert_eq!(locked_group, "groups", "the PATCH was refused, so the old mapping is locked");
                outcomes.push("lock first");
            }
            other => panic!("round {round}: PATCH answered {other} {}", patched.body),
        }
        let expected = if locked_group == "teams" { "new-group" } else { "old-group" };
        assert_eq!(
            strings(&first.body["groups"]),
            vec![expected],
            "round {round}: /v1/me used a mapping other than the locked one"
        );
        let user = first.body["user_id"].as_str().unwrap();
        let stored = server.admin(Method::GET, &format!("/v1/apps/{app}/users/{user}"), None).await;
        assert_eq!(strings(&stored.body["groups"]), vec![expected], "round {round}: stored groups");
        let again = me(&server, &key, &token).await;
        assert_eq!(strings(&again.body["groups"]), vec![expected], "round {round}: later calls");
    }
    eprintln!("race outcomes: {outcomes:?}");
}

// ---------------------------------------------------------------------------------------------
// /v1/me

backend_test!(me_creates_the_user_then_keeps_it_in_step_with_tokens);
async fn me_creates_the_user_then_keeps_it_in_step_with_tokens(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = app_with_claims(&server, &idp, "me", json!({"group": "groups", "role": "roles"})).await;
    let store = server.store().await;
    assert_eq!(rows(&store, "users").await, 0);

    let token = idp.sign(
        claims_with(&idp, "alice", json!({"email": "alice@example.com", "name": "Alice", "groups": ["eng", "admins", "eng"], "roles": ["viewer"]})),
        Alg::Rs256,
    );
    let first = me(&server, &key, &token).await;
    assert_status(&first, StatusCode::OK);
    let u = &first.body;
    assert!(is_uuid(&u["user_id"]), "{u}");
    assert_eq!(u["subject"], "alice");
    assert_eq!(u["status"], "active");
    assert_eq!(u["email"], "alice@example.com");
    assert_eq!(u["name"], "Alice");
    assert_eq!(strings(&u["groups"]), sorted(&["admins", "eng"]), "{u}");
    assert_eq!(strings(&u["roles"]), vec!["viewer"]);
    assert!(is_rfc3339_utc(&u["created_at"]), "{u}");
    assert!(is_rfc3339_utc(&u["last_seen_at"]), "{u}");
    assert_eq!(rows(&store, "users").await, 1);

    // The same token again: the same user, nothing new.
    let again = me(&server, &key, &token).await;
    assert_status(&again, StatusCode::OK);
    assert_eq!(again.body["user_id"], u["user_id"]);
    assert_eq!(rows(&store, "users").await, 1);

    // A later token with a new profile and memberships updates them.
    let later = idp.sign(
        claims_with(
            &idp,
            "alice",
            json!({"email": "alice@new.example", "name": "Alice B.", "groups": ["sales"], "roles": []}),
        ),
        Alg::Es256,
    );
    let updated = me(&server, &key, &later).await;
    assert_status(&updated, StatusCode::OK);
    assert_eq!(updated.body["user_id"], u["user_id"]);
    assert_eq!(updated.body["created_at"], u["created_at"]);
    assert_eq!(updated.body["email"], "alice@new.example");
    assert_eq!(updated.body["name"], "Alice B.");
    assert_eq!(strings(&updated.body["groups"]), vec!["sales"]);
    assert!(strings(&updated.body["roles"]).is_empty(), "{}", updated.body);
    assert_eq!(rows(&store, "users").await, 1);

    // The operator sees what /v1/me saw.
    let user_id = u["user_id"].as_str().unwrap();
    let view = server.admin(Method::GET, &format!("/v1/apps/{app}/users/{user_id}"), None).await;
    assert_status(&view, StatusCode::OK);
    for field in ["user_id", "subject", "status", "email", "name", "groups", "roles", "created_at"] {
        assert_eq!(view.body[field], updated.body[field], "{field}");
    }

    // A token without the group claim leaves no groups (memberships come from tokens).
    let bare = idp.token_for("alice");
    let a = me(&server, &key, &bare).await;
    assert_status(&a, StatusCode::OK);
    assert!(strings(&a.body["groups"]).is_empty(), "{}", a.body);
    assert_eq!(a.body["user_id"], u["user_id"]);

    // A second subject is a second user.
    let bob = me(&server, &key, &idp.token_for("bob")).await;
    assert_status(&bob, StatusCode::OK);
    assert_ne!(bob.body["user_id"], u["user_id"]);
    assert_eq!(bob.body["email"], Value::Null);
    assert_eq!(rows(&store, "users").await, 2);
}

backend_test!(group_claims_as_array_string_and_object);
async fn group_claims_as_array_string_and_object(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let cases: Vec<(&str, Value, Vec<String>)> = vec![
        ("groups", json!({"groups": ["b", "a"]}), sorted(&["a", "b"])),
        ("groups", json!({"groups": "solo"}), vec!["solo".into()]),
        (
            "org_memberships",
            json!({"org_memberships": {"org_1": "admin", "org_2": "member"}}),
            sorted(&["org_1", "org_2"]),
        ),
        ("https://example.com/groups", json!({"https://example.com/groups": ["url-named"]}), vec!["url-named".into()]),
        ("cognito:groups", json!({"cognito:groups": ["pool-group"]}), vec!["pool-group".into()]),
        ("/o/teams", json!({"o": {"teams": ["pointer"]}}), vec!["pointer".into()]),
        ("realm_access.groups", json!({"realm_access": {"groups": ["dotted"]}}), vec!["dotted".into()]),
        // Unusable shapes give no groups rather than a guess.
        ("groups", json!({"groups": 42}), vec![]),
        ("groups", json!({}), vec![]),
    ];
    for (i, (claim, extra, expected)) in cases.into_iter().enumerate() {
        let (_, key) = app_with_claims(&server, &idp, &format!("groups {i}"), json!({"group": claim})).await;
        let a = me(&server, &key, &idp.sign(claims_with(&idp, "alice", extra.clone()), Alg::Rs256)).await;
        assert_status(&a, StatusCode::OK);
        assert_eq!(strings(&a.body["groups"]), expected, "group claim `{claim}` from {extra}");
        assert!(a.body["groups"].is_array(), "groups is always an array: {}", a.body);
    }
}

backend_test!(role_claims_by_json_pointer_and_dotted_path);
async fn role_claims_by_json_pointer_and_dotted_path(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (_, pointer_key) = app_with_claims(&server, &idp, "pointer", json!({"role": "/app/roles"})).await;
    let (_, dotted_key) = app_with_claims(&server, &idp, "dotted", json!({"role": "realm_access.roles"})).await;
    let claims = json!({"app": {"roles": ["admin", "billing"]}, "realm_access": {"roles": ["kc-admin"]}});
    let token = idp.sign(claims_with(&idp, "alice", claims), Alg::Rs256);

    let a = me(&server, &pointer_key, &token).await;
    assert_status(&a, StatusCode::OK);
    assert_eq!(strings(&a.body["roles"]), sorted(&["admin", "billing"]));
    assert!(strings(&a.body["groups"]).is_empty());
    let a = me(&server, &dotted_key, &token).await;
    assert_status(&a, StatusCode::OK);
    assert_eq!(strings(&a.body["roles"]), vec!["kc-admin"]);

    // A single string role through the pointer; then a token without it clears the roles.
    let token = idp.sign(claims_with(&idp, "alice", json!({"app": {"roles": "owner"}})), Alg::Rs256);
    assert_eq!(strings(&me(&server, &pointer_key, &token).await.body["roles"]), vec!["owner"]);
    let a = me(&server, &pointer_key, &idp.token_for("alice")).await;
    assert_status(&a, StatusCode::OK);
    assert!(strings(&a.body["roles"]).is_empty(), "{}", a.body);
}

backend_test!(me_requires_an_api_key_a_user_token_and_an_idp);
async fn me_requires_an_api_key_a_user_token_and_an_idp(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (_, key) = server.app_with_idp(&idp).await;
    let token = idp.token_for("alice");

    let a = server.call(Method::GET, "/v1/me", Some(&key), None, None).await;
    assert_problem(&a, StatusCode::UNAUTHORIZED, "user_token_missing");
    let resp = server.http.get(server.url("/v1/me")).bearer_auth(&key).header("x-user-token", "").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "user_token_missing");

    assert_problem(
        &server.call(Method::GET, "/v1/me", None, Some(&token), None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_problem(
        &server.call(Method::GET, "/v1/me", Some("ck_wrong"), Some(&token), None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    // The admin token is not an app key.
    assert_problem(
        &server.call(Method::GET, "/v1/me", Some(ADMIN_TOKEN), Some(&token), None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );

    let (_, bare_key) = server.create_app("no idp yet").await;
    assert_problem(&me(&server, &bare_key, &token).await, StatusCode::CONFLICT, "idp_not_configured");
    let store = server.store().await;
    assert_eq!(rows(&store, "users").await, 0);
}

// ---------------------------------------------------------------------------------------------
// Token rejections

backend_test!(every_rejected_token_is_401_with_its_reason);
async fn every_rejected_token_is_401_with_its_reason(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = server.app_with_idp(&idp).await;
    let t = now();
    let base = || idp.claims_for("mallory");
    let with = |extra: Value| claims_with(&idp, "mallory", extra);
    let without = |name: &str| {
        let mut c = base();
        c.as_object_mut().unwrap().remove(name);
        c
    };
    let valid = idp.token_for("mallory");
    // Claims changed after signing: the signature no longer matches.
    let tampered = {
        let parts: Vec<&str> = valid.split('.').collect();
        use base64::Engine as _;
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(with(json!({"sub": "admin"})).to_string());
        format!("{}.{}.{}", parts[0], payload, parts[2])
    };
    let mut big = base();
    big["padding"] = json!("x".repeat(17 * 1024));
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("alg none", idp.unsigned_token(base()), &["none"]),
        ("HS256 keyed with the RSA public key", idp.hs256_with_public_key(base()), &["hs256"]),
        ("expired", idp.sign(with(json!({"iat": t - 7200, "exp": t - 3600})), Alg::Rs256), &["expired"]),
        ("not yet valid", idp.sign(with(json!({"nbf": t + 3600})), Alg::Rs256), &["not yet valid"]),
        ("issued in the future", idp.sign(with(json!({"iat": t + 3600, "exp": t + 7200})), Alg::Rs256), &["future"]),
        ("no exp", idp.sign(without("exp"), Alg::Rs256), &["exp"]),
        ("wrong issuer", idp.sign(with(json!({"iss": "https://evil.example.com"})), Alg::Rs256), &["issuer"]),
        ("wrong audience", idp.sign(with(json!({"aud": "someone-else"})), Alg::Es256), &["audience"]),
        ("audience list without ours", idp.sign(with(json!({"aud": ["a", "b"]})), Alg::Rs256), &["audience"]),
        ("missing user id", idp.sign(without("sub"), Alg::EdDsa), &["user-id", "sub"]),
        ("empty user id", idp.sign(with(json!({"sub": ""})), Alg::Rs256), &["user-id", "sub"]),
        ("garbage", "this-is-not-a-jwt".to_owned(), &["well-formed"]),
        ("three garbage parts", "a.b.c".to_owned(), &["well-formed"]),
        ("oversize", idp.sign(big, Alg::Rs256), &["longer than 16384"]),
        ("unpublished key", idp.sign_with_unpublished_key(base(), Alg::Rs256), &["key"]),
        ("tampered claims", tampered, &["signature"]),
        (
            "ES256 under the RSA key's kid",
            idp.sign_with_kid(base(), Alg::Es256, Some(&idp.current_kid(Alg::Rs256))),
            &["signature"],
        ),
    ];
    for (name, token, reasons) in &cases {
        let a = me(&server, &key, token).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{name}: {}", a.body);
        assert_problem(&a, StatusCode::UNAUTHORIZED, "invalid_user_token");
        let d = detail(&a);
        for reason in *reasons {
            assert!(d.contains(reason), "{name}: detail `{d}` should say `{reason}`");
        }
        if token.len() > 12 {
            assert!(!a.body.to_string().contains(token.as_str()), "{name}: the token is echoed");
        }
    }
    // The valid token itself is fine; the rejections created no user and locked nothing
    // before it.
    let store = server.store().await;
    assert_eq!(rows(&store, "users").await, 0);
    assert_eq!(get_idp(&server, &app).await.body["claims_locked"], false);
    assert_status(&me(&server, &key, &valid).await, StatusCode::OK);
    assert_eq!(rows(&store, "users").await, 1);
    // Within the leeway (60 s) a just-expired token is still accepted.
    let just_expired = idp.sign(with(json!({"exp": t - 5})), Alg::Rs256);
    assert_status(&me(&server, &key, &just_expired).await, StatusCode::OK);
    // An audience list that includes ours is accepted.
    let listed = idp.sign(with(json!({"aud": ["other", idp.audience()]})), Alg::Rs256);
    assert_status(&me(&server, &key, &listed).await, StatusCode::OK);
}

backend_test!(rs256_es256_and_eddsa_are_accepted);
async fn rs256_es256_and_eddsa_are_accepted(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (_, key) = server.app_with_idp(&idp).await;
    let mut user = Value::Null;
    let mut fetches = None;
    for alg in Alg::ALL {
        let a = me(&server, &key, &idp.sign(idp.claims_for("alice"), alg)).await;
        assert_status(&a, StatusCode::OK);
        if user.is_null() {
            user = a.body["user_id"].clone();
        }
        assert_eq!(a.body["user_id"], user, "{alg:?}: the same user whatever the algorithm");
        let now_fetches = idp.jwks_fetches();
        assert_eq!(*fetches.get_or_insert(now_fetches), now_fetches, "{alg:?}: one JWKS fetch serves every key");
    }
}

backend_test!(a_rotated_key_is_picked_up);
async fn a_rotated_key_is_picked_up(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (_, key) = server.app_with_idp(&idp).await;
    let old = idp.token_for("alice");
    assert_status(&me(&server, &key, &old).await, StatusCode::OK);
    let fetches = idp.jwks_fetches();

    let new_kid = idp.rotate(Alg::Rs256, false);
    let fresh = idp.token_for("alice");
    assert!(fresh.len() > 10 && idp.current_kid(Alg::Rs256) == new_kid);
    let a = me(&server, &key, &fresh).await;
    assert_status(&a, StatusCode::OK);
    assert_eq!(idp.jwks_fetches(), fetches + 1, "the unknown kid caused one refetch");
    // The old key is still published and still verifies; nothing else is fetched.
    assert_status(&me(&server, &key, &old).await, StatusCode::OK);
    assert_status(&me(&server, &key, &idp.token_for("bob")).await, StatusCode::OK);
    assert_eq!(idp.jwks_fetches(), fetches + 1);
}

backend_test!(a_flood_of_unknown_kids_costs_at_most_one_jwks_fetch);
async fn a_flood_of_unknown_kids_costs_at_most_one_jwks_fetch(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (_, key) = server.app_with_idp(&idp).await;
    assert_status(&me(&server, &key, &idp.token_for("alice")).await, StatusCode::OK);
    let before = idp.jwks_fetches();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let http = server.http.clone();
        let url = server.url("/v1/me");
        let key = key.clone();
        let alg = Alg::ALL[i % 3];
        let token = idp.sign_with_random_kid(idp.claims_for("alice"), alg);
        tasks.spawn(async move {
            let resp = http.get(url).bearer_auth(key).header("x-user-token", token).send().await.expect("sent");
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        });
    }
    let mut count = 0;
    while let Some(joined) = tasks.join_next().await {
        let (status, body) = joined.unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["code"], "invalid_user_token", "{body}");
        count += 1;
    }
    assert_eq!(count, 100);
    let after = idp.jwks_fetches();
    assert!(after <= before + 1, "{} JWKS fetches for a flood of unknown kids (at most 1 allowed)", after - before);

    // Good tokens keep working off the cached keys.
    assert_status(&me(&server, &key, &idp.token_for("bob")).await, StatusCode::OK);
    assert_eq!(idp.jwks_fetches(), after);
}

backend_test!(unreachable_keys_are_503_and_cached_keys_keep_serving);
async fn unreachable_keys_are_503_and_cached_keys_keep_serving(backend: Backend) {
    let server = TestServer::start(backend).await;
    let store = server.store().await;

    // Keys never fetched and the JWKS down: the IdP is unavailable, the token is not "bad".
    let down = FakeIdp::start().await;
    let (app, key) = server.app_with_idp(&down).await;
    down.set_jwks_failing(true);
    let a = me(&server, &key, &down.token_for("alice")).await;
    assert_problem(&a, StatusCode::SERVICE_UNAVAILABLE, "idp_unavailable");
    assert_eq!(rows(&store, "users").await, 0);
    assert_eq!(get_idp(&server, &app).await.body["claims_locked"], false);

    // Keys fetched once keep verifying through an outage.
    let flaky = FakeIdp::start().await;
    let (_, flaky_key) = server.app_with_idp(&flaky).await;
    assert_status(&me(&server, &flaky_key, &flaky.token_for("alice")).await, StatusCode::OK);
    flaky.set_jwks_failing(true);
    assert_status(&me(&server, &flaky_key, &flaky.token_for("bob")).await, StatusCode::OK);
    assert_status(&me(&server, &flaky_key, &flaky.sign(flaky.claims_for("carol"), Alg::EdDsa)).await, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// Several instances on one database

/// A second server process on `server`'s database.
/// The configuration of another instance on `server`'s database, with a data dir of its own.
fn peer_config(server: &TestServer, dir: &tempfile::TempDir) -> custody_server::Config {
    custody_server::Config::for_tests(server.db.url(), dir.path(), ADMIN_TOKEN, custody_tests::harness::MASTER_KEYS)
}

async fn second_instance(server: &TestServer) -> (custody_server::RunningServer, tempfile::TempDir, TestServerClient) {
    let dir = tempfile::tempdir().unwrap();
    let running = custody_server::start(peer_config(server, &dir)).await.expect("second instance starts");
    let client = TestServerClient { base: running.public_url.clone(), http: reqwest::Client::new() };
    (running, dir, client)
}

/// Whether `backend` runs several instances on one database: PostgreSQL does. On SQLite a
/// second serving instance is refused (one process per database file, tests/tests/data_dir.rs),
/// which this checks before leaving the multi-instance tests to PostgreSQL.
async fn serves_several_instances(backend: Backend) -> bool {
    if backend != Backend::Sqlite {
        return true;
    }
    let server = TestServer::start(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let refused =
        custody_server::start(peer_config(&server, &dir)).await.expect_err("a second instance on one SQLite file");
    assert!(refused.to_string().contains("another custody process"), "{refused}");
    false
}

/// Just enough of a client for the second instance.
struct TestServerClient {
    base: String,
    http: reqwest::Client,
}

impl TestServerClient {
    async fn me(&self, key: &str, token: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(format!("{}/v1/me", self.base))
            .bearer_auth(key)
            .header("x-user-token", token)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

backend_test!(user_status_holds_on_every_instance_at_once);
async fn user_status_holds_on_every_instance_at_once(backend: Backend) {
    if !serves_several_instances(backend).await {
        return;
    }
    let server = TestServer::start(backend).await;
    let (second, _dir, client) = second_instance(&server).await;
    let idp = FakeIdp::start().await;
    let (app, key) = server.app_with_idp(&idp).await;
    let token = idp.token_for("alice");
    let first = me(&server, &key, &token).await;
    assert_status(&first, StatusCode::OK);
    let (status, body) = client.me(&key, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], first.body["user_id"], "one user across instances");
    // The lock set through one instance is seen by the other.
    assert_eq!(get_idp(&server, &app).await.body["claims_locked"], true);

    let store = server.store().await;
    let user = UserId::parse(first.body["user_id"].as_str().unwrap()).unwrap();
    set_user_status(&store, &user, UserStatus::Deprovisioned, UnixTime(now())).await.unwrap();
    let (status, body) = client.me(&key, &token).await;
    assert_eq!((status, body["code"].clone()), (StatusCode::FORBIDDEN, json!("user_deprovisioned")), "{body}");
    assert_problem(&me(&server, &key, &token).await, StatusCode::FORBIDDEN, "user_deprovisioned");
    second.shutdown().await;
}

// The contract: a deleted API key "stops working at once", on every instance sharing the database.
backend_test!(a_deleted_api_key_stops_at_once_on_every_instance);
async fn a_deleted_api_key_stops_at_once_on_every_instance(backend: Backend) {
    if !serves_several_instances(backend).await {
        return;
    }
    let server = TestServer::start(backend).await;
    let (second, _dir, client) = second_instance(&server).await;
    let idp = FakeIdp::start().await;
    let (app, _) = server.app_with_idp(&idp).await;
    let created = server.admin(Method::POST, &format!("/v1/apps/{app}/api-keys"), None).await;
    let key = created.body["api_key"].as_str().unwrap().to_owned();
    let key_id = created.body["id"].as_str().unwrap().to_owned();
    let token = idp.token_for("alice");
    assert_eq!(client.me(&key, &token).await.0, StatusCode::OK);
    assert_status(
        &server.admin(Method::DELETE, &format!("/v1/apps/{app}/api-keys/{key_id}"), None).await,
        StatusCode::NO_CONTENT,
    );
    let (status, body) = client.me(&key, &token).await;
    second.shutdown().await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the deleted key was accepted by another instance: {body}");
}

// ---------------------------------------------------------------------------------------------
// User lifecycle

backend_test!(suspended_and_deprovisioned_users_are_refused);
async fn suspended_and_deprovisioned_users_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = server.app_with_idp(&idp).await;
    let store = server.store().await;
    let token = idp.sign(claims_with(&idp, "alice", json!({"email": "alice@example.com"})), Alg::Rs256);
    let first = me(&server, &key, &token).await;
    assert_status(&first, StatusCode::OK);
    let user_id = UserId::parse(first.body["user_id"].as_str().unwrap()).unwrap();
    let view_path = format!("/v1/apps/{app}/users/{user_id}");

    assert!(set_user_status(&store, &user_id, UserStatus::Suspended, UnixTime(now())).await.unwrap());
    assert_problem(&me(&server, &key, &token).await, StatusCode::FORBIDDEN, "user_suspended");
    let fresh = idp.sign(claims_with(&idp, "alice", json!({"email": "alice@example.com"})), Alg::EdDsa);
    assert_problem(&me(&server, &key, &fresh).await, StatusCode::FORBIDDEN, "user_suspended");
    assert_eq!(server.admin(Method::GET, &view_path, None).await.body["status"], "suspended");

    assert!(set_user_status(&store, &user_id, UserStatus::Active, UnixTime(now())).await.unwrap());
    assert_status(&me(&server, &key, &token).await, StatusCode::OK);

    assert!(set_user_status(&store, &user_id, UserStatus::Deprovisioned, UnixTime(now())).await.unwrap());
    let users_before = rows(&store, "users").await;
    assert_problem(&me(&server, &key, &token).await, StatusCode::FORBIDDEN, "user_deprovisioned");
    // A fresh, valid token (issued after the deprovisioning, new profile) changes nothing.
    let fresh = idp.sign(
        claims_with(
            &idp,
            "alice",
            json!({"email": "alice@elsewhere.example", "name": "Alice Again", "iat": now() + 1}),
        ),
        Alg::Es256,
    );
    let a = me(&server, &key, &fresh).await;
    assert_problem(&a, StatusCode::FORBIDDEN, "user_deprovisioned");
    assert_eq!(rows(&store, "users").await, users_before, "no new user for a deprovisioned subject");
    let view = server.admin(Method::GET, &view_path, None).await;
    assert_eq!(view.body["status"], "deprovisioned", "not reactivated: {}", view.body);
    assert_eq!(view.body["email"], "alice@example.com", "a deprovisioned user is not updated: {}", view.body);
    let listed = server.admin(Method::GET, &format!("/v1/apps/{app}/users"), None).await;
    assert_eq!(items(&listed).len(), 1);
    assert_eq!(items(&listed)[0]["status"], "deprovisioned");

    // Other users are unaffected.
    assert_status(&me(&server, &key, &idp.token_for("bob")).await, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// Operator views

backend_test!(operator_user_views);
async fn operator_user_views(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = server.app_with_idp(&idp).await;
    let store = server.store().await;
    let mut ids = BTreeSet::new();
    for sub in ["alice", "bob", "carol"] {
        let a = me(
            &server,
            &key,
            &idp.sign(claims_with(&idp, sub, json!({"email": format!("{sub}@example.com")})), Alg::Rs256),
        )
        .await;
        ids.insert(a.body["user_id"].as_str().unwrap().to_owned());
    }
    let users_path = format!("/v1/apps/{app}/users");
    let all = server.admin(Method::GET, &users_path, None).await;
    assert_status(&all, StatusCode::OK);
    assert_eq!(all.body["next_cursor"], Value::Null);
    let listed = items(&all);
    assert_eq!(listed.iter().map(|u| u["user_id"].as_str().unwrap().to_owned()).collect::<BTreeSet<_>>(), ids);
    for u in &listed {
        for field in ["user_id", "subject", "status", "email", "name", "groups", "roles", "created_at", "last_seen_at"]
        {
            assert!(u.get(field).is_some(), "{field} in {u}");
        }
    }
    let bob = listed.iter().find(|u| u["subject"] == "bob").unwrap().clone();
    let bob_id = UserId::parse(bob["user_id"].as_str().unwrap()).unwrap();
    set_user_status(&store, &bob_id, UserStatus::Suspended, UnixTime(now())).await.unwrap();

    let suspended = server.admin(Method::GET, &format!("{users_path}?status=suspended"), None).await;
    assert_eq!(items(&suspended).iter().map(|u| u["subject"].clone()).collect::<Vec<_>>(), vec![json!("bob")]);
    let active = server.admin(Method::GET, &format!("{users_path}?status=active"), None).await;
    assert_eq!(items(&active).len(), 2);
    assert!(items(&active).iter().all(|u| u["status"] == "active"));
    let none = server.admin(Method::GET, &format!("{users_path}?status=deprovisioned"), None).await;
    assert!(items(&none).is_empty());
    let bad = server.admin(Method::GET, &format!("{users_path}?status=zombie"), None).await;
    assert_problem(&bad, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(detail(&bad).contains("status"), "{}", bad.body);

    // Pagination.
    let mut seen = BTreeSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..5 {
        let path = match &cursor {
            None => format!("{users_path}?limit=2"),
            Some(c) => format!(
                "{users_path}?limit=2&cursor={}",
                url::form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>()
            ),
        };
        let page = server.admin(Method::GET, &path, None).await;
        for u in items(&page) {
            assert!(seen.insert(u["user_id"].as_str().unwrap().to_owned()), "a user twice");
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids);

    let one = server.admin(Method::GET, &format!("{users_path}/{bob_id}"), None).await;
    assert_status(&one, StatusCode::OK);
    assert_eq!(one.body["subject"], "bob");
    assert_eq!(one.body["status"], "suspended");
    assert_eq!(one.body["email"], "bob@example.com");
    let unknown = server.admin(Method::GET, &format!("{users_path}/00000000-0000-4000-8000-000000000000"), None).await;
    assert_problem(&unknown, StatusCode::NOT_FOUND, unknown.code());
    let malformed = server.admin(Method::GET, &format!("{users_path}/not-an-id"), None).await;
    assert_problem(&malformed, StatusCode::NOT_FOUND, malformed.code());
    let no_app = server.admin(Method::GET, "/v1/apps/00000000-0000-4000-8000-000000000000/users", None).await;
    assert_problem(&no_app, StatusCode::NOT_FOUND, no_app.code());
}

backend_test!(audit_rows_for_configuration_changes);
async fn audit_rows_for_configuration_changes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, _) = server.create_app("audited").await;
    let audit_path = format!("/v1/apps/{app}/audit");
    // Each row is written before the response: visible right after each call.
    let a = server.admin(Method::GET, &audit_path, None).await;
    assert_status(&a, StatusCode::OK);
    assert!(items(&a).iter().any(|r| r["action"] == "app.create"), "{}", a.body);
    server.attach_idp(&app, &idp, json!({})).await;
    let a = server.admin(Method::GET, &format!("{audit_path}?action=idp.create"), None).await;
    assert_eq!(items(&a).len(), 1, "{}", a.body);
    assert_status(&patch_idp(&server, &app, json!({"audience": "aud-2"})).await, StatusCode::OK);
    assert_status(&patch_idp(&server, &app, json!({"claims": {"group": "groups"}})).await, StatusCode::OK);
    // A PATCH that changes nothing is not a configuration change.
    assert_status(&patch_idp(&server, &app, json!({"claims": {"group": "groups"}})).await, StatusCode::OK);

    let all = server.admin(Method::GET, &audit_path, None).await;
    assert_status(&all, StatusCode::OK);
    let rows_all = items(&all);
    let actions: Vec<&str> = rows_all.iter().map(|r| r["action"].as_str().unwrap()).collect();
    for action in ["app.create", "idp.create", "idp.update"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    assert_eq!(actions.iter().filter(|a| **a == "idp.update").count(), 2, "{actions:?}");
    for r in &rows_all {
        assert!(is_uuid(&r["id"]), "{r}");
        assert!(is_rfc3339_utc(&r["at"]), "{r}");
        assert_eq!(r["actor"], "operator", "{r}");
        assert_eq!(r["outcome"], "success", "{r}");
        for field in ["user_id", "grant_id", "provider", "detail"] {
            assert!(r.get(field).is_some(), "{field} in {r}");
        }
    }
    // Newest first (to the second the rows carry).
    let times: Vec<&str> = rows_all.iter().map(|r| r["at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");

    let updates = server.admin(Method::GET, &format!("{audit_path}?action=idp.update"), None).await;
    let updates = items(&updates);
    assert_eq!(updates.len(), 2);
    assert!(updates.iter().all(|r| r["action"] == "idp.update"));
    let none = server.admin(Method::GET, &format!("{audit_path}?action=no.such.action"), None).await;
    assert!(items(&none).is_empty());
    let page = server.admin(Method::GET, &format!("{audit_path}?limit=1"), None).await;
    assert_eq!(items(&page).len(), 1);
    assert!(page.body["next_cursor"].is_string());

    let other = server.create_app("other").await.0;
    let theirs = server.admin(Method::GET, &format!("/v1/apps/{other}/audit"), None).await;
    assert!(items(&theirs).iter().all(|r| r["action"] == "app.create"), "another app's rows only: {}", theirs.body);
    let no_app = server.admin(Method::GET, "/v1/apps/00000000-0000-4000-8000-000000000000/audit", None).await;
    assert_problem(&no_app, StatusCode::NOT_FOUND, no_app.code());
}

backend_test!(audit_rows_are_newest_first_within_a_second);
// Audit rows written within the same second still list newest first (the store orders by an
// insertion sequence, not by the one-second `at`).
async fn audit_rows_are_newest_first_within_a_second(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, _) = server.create_app("ordered").await;
    let mut performed = vec!["app.create"];
    assert_status(&server.admin(Method::POST, &format!("/v1/apps/{app}/api-keys"), None).await, StatusCode::CREATED);
    performed.push("api_key.create");
    server.attach_idp(&app, &idp, json!({})).await;
    performed.push("idp.create");
    assert_status(&patch_idp(&server, &app, json!({"audience": "a2"})).await, StatusCode::OK);
    performed.push("idp.update");
    assert_status(&server.admin(Method::POST, &format!("/v1/apps/{app}/api-keys"), None).await, StatusCode::CREATED);
    performed.push("api_key.create");
    assert_status(
        &server.admin(Method::DELETE, &format!("/v1/apps/{app}/identity-provider"), None).await,
        StatusCode::NO_CONTENT,
    );
    performed.push("idp.delete");
    let audit = server.admin(Method::GET, &format!("/v1/apps/{app}/audit"), None).await;
    let actions: Vec<String> = items(&audit).iter().map(|r| r["action"].as_str().unwrap().to_owned()).collect();
    let expected: Vec<String> = performed.iter().rev().map(|s| s.to_string()).collect();
    assert_eq!(actions, expected, "audit rows must be newest first");
}

// ---------------------------------------------------------------------------------------------
// Operations and routing

backend_test!(operations_endpoints_and_routing_errors);
async fn operations_endpoints_and_routing_errors(backend: Backend) {
    let server = TestServer::start(backend).await;
    let health = server.call(Method::GET, "/healthz", None, None, None).await;
    assert_status(&health, StatusCode::OK);
    assert_status(&server.call(Method::GET, "/readyz", None, None, None).await, StatusCode::OK);
    // Some traffic to count; every answer, errors included, carries a request id.
    let refused = server.call(Method::GET, "/v1/apps", None, None, None).await;
    for a in [&health, &refused] {
        assert!(a.headers.get("x-request-id").is_some_and(|v| !v.is_empty()), "x-request-id on {}", a.status);
    }
    let resp = server.http.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = resp.text().await.unwrap();
    assert!(text.contains("custody_http_requests_total"), "{text}");
    assert!(text.contains("# TYPE custody_http_requests_total counter"), "{text}");

    for path in ["/nope", "/v1/nope", "/v1/apps/x/y/z/w", "/v1/me/extra"] {
        let a = server.admin(Method::GET, path, None).await;
        assert_problem(&a, StatusCode::NOT_FOUND, "not_found");
    }
    let cases: Vec<(Method, &str, Vec<&str>)> = vec![
        (Method::DELETE, "/v1/me", vec!["GET"]),
        (Method::PUT, "/v1/apps", vec!["GET", "POST"]),
        (Method::POST, "/healthz", vec!["GET"]),
        (
            Method::PUT,
            "/v1/apps/00000000-0000-4000-8000-000000000000/identity-provider",
            vec!["GET", "POST", "PATCH", "DELETE"],
        ),
    ];
    for (method, path, allowed) in cases {
        let a = server.admin(method.clone(), path, None).await;
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {}", a.body);
        assert_problem(&a, StatusCode::METHOD_NOT_ALLOWED, a.code());
        let allow = a
            .headers
            .get("allow")
            .unwrap_or_else(|| panic!("{method} {path}: no Allow header"))
            .to_str()
            .unwrap()
            .to_owned();
        let listed: BTreeSet<String> = allow.split(',').map(|m| m.trim().to_owned()).collect();
        for m in allowed {
            assert!(listed.contains(m), "{method} {path}: Allow `{allow}` lacks {m}");
        }
        assert!(!listed.contains(method.as_str()), "{method} {path}: Allow `{allow}`");
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets

backend_test!(no_secret_appears_in_any_other_response);
async fn no_secret_appears_in_any_other_response(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, first_key) = server.create_app("secretive").await;
    let created = server.admin(Method::POST, &format!("/v1/apps/{app}/api-keys"), None).await;
    let second_key = created.body["api_key"].as_str().unwrap().to_owned();
    let key_id = created.body["id"].as_str().unwrap().to_owned();
    let (other_app, other_key) = server.create_app("other").await;
    server.attach_idp(&app, &idp, json!({})).await;
    let token = idp.token_for("alice");

    let mut bodies: Vec<(String, String)> = Vec::new();
    let mut record = |what: &str, a: &Answer| bodies.push((what.to_owned(), a.body.to_string()));
    record("get app", &server.admin(Method::GET, &format!("/v1/apps/{app}"), None).await);
    record("list apps", &server.admin(Method::GET, "/v1/apps", None).await);
    record("list keys", &server.admin(Method::GET, &format!("/v1/apps/{app}/api-keys"), None).await);
    record("list other keys", &server.admin(Method::GET, &format!("/v1/apps/{other_app}/api-keys"), None).await);
    record("get idp", &get_idp(&server, &app).await);
    record("patch idp", &patch_idp(&server, &app, json!({"claims": {"group": "groups"}})).await);
    record("me", &me(&server, &first_key, &token).await);
    record("me 2", &me(&server, &second_key, &token).await);
    record("users", &server.admin(Method::GET, &format!("/v1/apps/{app}/users"), None).await);
    record("audit", &server.admin(Method::GET, &format!("/v1/apps/{app}/audit"), None).await);
    record("other audit", &server.admin(Method::GET, &format!("/v1/apps/{other_app}/audit"), None).await);
    record("locked patch", &patch_idp(&server, &app, json!({"claims": {"group": "x"}})).await);
    record("wrong admin", &server.call(Method::GET, "/v1/apps", Some(&first_key), None, None).await);
    record("admin as key", &server.call(Method::GET, "/v1/me", Some(ADMIN_TOKEN), Some(&token), None).await);
    record("bad token", &me(&server, &first_key, "x.y.z").await);
    record("no idp", &me(&server, &other_key, &token).await);
    record("delete key", &server.admin(Method::DELETE, &format!("/v1/apps/{app}/api-keys/{key_id}"), None).await);
    record("deleted key", &me(&server, &second_key, &token).await);
    record(
        "bad json",
        &raw_call(&server, Method::POST, "/v1/apps", Some(ADMIN_TOKEN), format!("{{\"name\": \"{second_key}")).await,
    );
    let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    bodies.push(("metrics".into(), metrics));

    // `ck_<hex prefix>_<secret>`; the secret itself may contain `_`.
    let secret_part = |k: &str| k.splitn(3, '_').nth(2).unwrap().to_owned();
    let secrets = [
        ADMIN_TOKEN.to_owned(),
        first_key.clone(),
        second_key.clone(),
        other_key.clone(),
        secret_part(&first_key),
        secret_part(&second_key),
        secret_part(&other_key),
    ];
    for (what, body) in &bodies {
        for secret in &secrets {
            assert!(secret.len() >= 16, "test secret too short to search for: {secret}");
            assert!(!body.contains(secret.as_str()), "{what}: a secret appears in the response: {body}");
        }
    }
}
