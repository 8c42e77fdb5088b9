//! `POST /v1/token` in one read (`custody_vault::handout`): the key record and IdP configuration
//! remembered between requests never outlive what they stand for. A deleted key, a deprovisioned
//! or suspended user, an edited IdP configuration and a changed group all take effect on the very
//! next hand-out, on both backends (and, on PostgreSQL, on another instance that remembered the
//! key).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use custody_store::Backend;
use custody_tests::backend_test;
use custody_tests::fake_idp::{Alg, FakeIdp};
use custody_tests::harness::{TestServer, ADMIN_TOKEN, MASTER_KEYS};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// An app with the fake IdP, a `github` provider whose policy admits only group `eng`, and an
/// imported grant for `alice`: (app id, API key).
async fn app_with_grant(server: &TestServer, idp: &FakeIdp) -> (String, String) {
    let (app, key) = server.create_app("Test app").await;
    server.attach_idp(&app, idp, json!({"claims": {"group": "groups"}})).await;
    let a = server
        .admin(
            Method::PUT,
            &format!("/v1/apps/{app}/providers/github"),
            Some(json!({"preset": "github", "client_id": "c", "client_secret": "s"})),
        )
        .await;
    assert!(a.status.is_success(), "{:?}", a.body);
    let a = server
        .admin(
            Method::POST,
            &format!("/v1/apps/{app}/grants"),
            Some(json!({"subject": "alice", "provider": "github", "access_token": "gho_alice",
                        "expires_in": 86_400, "scopes": ["repo"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    (app, key)
}

async fn token(server: &TestServer, key: &str, user_token: &str, body: Value) -> (StatusCode, Value) {
    let a = server.runtime(Method::POST, "/v1/token", key, user_token, Some(body)).await;
    (a.status, a.body)
}

/// A token for `sub` carrying `groups`.
fn with_groups(idp: &FakeIdp, sub: &str, groups: &[&str]) -> String {
    let mut claims = idp.claims_for(sub);
    claims["groups"] = json!(groups);
    idp.sign(claims, Alg::Rs256)
}

fn github() -> Value {
    json!({"provider": "github"})
}

backend_test!(a_remembered_key_stops_at_once_when_deleted);
async fn a_remembered_key_stops_at_once_when_deleted(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = app_with_grant(&server, &idp).await;
    let alice = idp.token_for("alice");
    // Twice: the second admission is against the remembered record, in one read.
    for _ in 0..2 {
        let (status, body) = token(&server, &key, &alice, github()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["access_token"], "gho_alice");
    }
    let keys = server.admin(Method::GET, &format!("/v1/apps/{app}/api-keys"), None).await;
    let key_id = keys.body["items"][0]["id"].as_str().unwrap().to_owned();
    let a = server.admin(Method::DELETE, &format!("/v1/apps/{app}/api-keys/{key_id}"), None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.body);
    let (status, body) = token(&server, &key, &alice, github()).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")), "{body}");
    // A wrong secret under a live key's prefix is refused before its body is used.
    let (_, other_key) = server.create_app("other").await;
    let forged = format!("{}x", &other_key[..other_key.len() - 1]);
    let forged = if forged == other_key { format!("{}y", &other_key[..other_key.len() - 1]) } else { forged };
    assert_eq!(token(&server, &forged, &alice, github()).await.0, StatusCode::UNAUTHORIZED);
}

backend_test!(a_key_deleted_on_one_instance_stops_on_another_that_remembered_it);
async fn a_key_deleted_on_one_instance_stops_on_another_that_remembered_it(backend: Backend) {
    if backend == Backend::Sqlite {
        // One serving process per SQLite file (tests/tests/data_dir.rs): nothing to share.
        return;
    }
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = app_with_grant(&server, &idp).await;
    let dir = tempfile::tempdir().unwrap();
    let config = custody_server::Config::for_tests(server.db.url(), dir.path(), ADMIN_TOKEN, MASTER_KEYS);
    let second = custody_server::start(config).await.expect("second instance starts");
    let http = reqwest::Client::new();
    let hand_out = || {
        http.post(format!("{}/v1/token", second.public_url))
            .bearer_auth(&key)
            .header("x-user-token", idp.token_for("alice"))
            .json(&github())
            .send()
    };
    for _ in 0..2 {
        assert_eq!(hand_out().await.unwrap().status(), StatusCode::OK);
    }
    let keys = server.admin(Method::GET, &format!("/v1/apps/{app}/api-keys"), None).await;
    let key_id = keys.body["items"][0]["id"].as_str().unwrap().to_owned();
    let a = server.admin(Method::DELETE, &format!("/v1/apps/{app}/api-keys/{key_id}"), None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.body);
    let status = hand_out().await.unwrap().status();
    second.shutdown().await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the other instance trusted the key it remembered");
}

backend_test!(user_status_and_groups_hold_on_the_next_handout);
async fn user_status_and_groups_hold_on_the_next_handout(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = app_with_grant(&server, &idp).await;
    let eng = with_groups(&idp, "alice", &["eng"]);
    let sales = with_groups(&idp, "alice", &["sales"]);
    assert_eq!(token(&server, &key, &eng, github()).await.0, StatusCode::OK);
    let a = server
        .admin(Method::PUT, &format!("/v1/apps/{app}/policies/github"), Some(json!({"allow_groups": ["eng"]})))
        .await;
    assert!(a.status.is_success(), "{:?}", a.body);
    // The policy and the token's groups are applied on every hand-out, remembered key or not.
    assert_eq!(token(&server, &key, &eng, github()).await.0, StatusCode::OK);
    let (status, body) = token(&server, &key, &sales, github()).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("policy_denied")), "{body}");
    assert_eq!(token(&server, &key, &eng, github()).await.0, StatusCode::OK);

    let users = server.admin(Method::GET, &format!("/v1/apps/{app}/users"), None).await;
    let user = users.body["items"][0]["user_id"].as_str().unwrap().to_owned();
    let a = server.admin(Method::POST, &format!("/v1/apps/{app}/users/{user}/deprovision"), None).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let (status, body) = token(&server, &key, &eng, github()).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("user_deprovisioned")), "{body}");
}

backend_test!(an_idp_edit_applies_to_the_next_handout);
async fn an_idp_edit_applies_to_the_next_handout(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = app_with_grant(&server, &idp).await;
    let alice = idp.token_for("alice");
    for _ in 0..2 {
        assert_eq!(token(&server, &key, &alice, github()).await.0, StatusCode::OK);
    }
    let path = format!("/v1/apps/{app}/identity-provider");
    let patch = |audience: &str| server.admin(Method::PATCH, &path, Some(json!({"audience": audience})));
    assert_eq!(patch("another-audience").await.status, StatusCode::OK);
    let (status, body) = token(&server, &key, &alice, github()).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_user_token")), "{body}");
    assert_eq!(patch(idp.audience()).await.status, StatusCode::OK);
    for _ in 0..2 {
        assert_eq!(token(&server, &key, &alice, github()).await.0, StatusCode::OK);
    }
}

backend_test!(errors_keep_their_order_and_meaning);
async fn errors_keep_their_order_and_meaning(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (_, key) = app_with_grant(&server, &idp).await;
    let alice = idp.token_for("alice");
    assert_eq!(token(&server, &key, &alice, github()).await.0, StatusCode::OK);
    // A bad user token outranks a bad body.
    let (status, body) = token(&server, &key, "not-a-jwt", json!({"nope": 1})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = token(&server, &key, &alice, json!({})).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")), "{body}");
    // A user seen for the first time is created on the way, and has no grant.
    let (status, body) = token(&server, &key, &idp.token_for("bob"), github()).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("grant_not_found")), "{body}");
    let (status, body) = token(&server, &key, &alice, json!({"provider": "slack"})).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("provider_not_found")), "{body}");
    // By grant id: someone else's grant is not found.
    let (status, body) = token(&server, &key, &alice, github()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let grant = body["grant_id"].as_str().unwrap().to_owned();
    let (status, body) = token(&server, &key, &alice, json!({"grant_id": grant})).await;
    assert_eq!((status, body["access_token"].as_str()), (StatusCode::OK, Some("gho_alice")), "{body}");
    let (status, body) = token(&server, &key, &idp.token_for("bob"), json!({"grant_id": grant})).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("grant_not_found")), "{body}");
}
