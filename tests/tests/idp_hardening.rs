#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Identity and key-set hardening (issue 15 items 3, 4, 9, 10 and 14): object-shaped group
//! claims, NUL bytes at every door, a hanging IdP never stalling a request, key-set lifetimes and
//! the operator's refresh, and error messages that say what to do.
//!
//! Every storage-touching test runs once per backend in [`backends`] (SQLite always, PostgreSQL
//! when `CUSTODY_TEST_POSTGRES_URL` is set).

use custody_tests::backend_test;
use custody_tests::fake_idp::{Alg, FakeIdp};
use custody_tests::fake_oauth::FakeOAuth;
use custody_tests::harness::{Answer, Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[track_caller]
fn assert_problem(a: &Answer, status: StatusCode, code: &str) {
    assert_eq!(a.status, status, "expected {status} `{code}`, got {} {}", a.status, a.body);
    assert_eq!(a.code(), code, "problem code in {}", a.body);
}

fn detail(a: &Answer) -> String {
    a.body["detail"].as_str().unwrap_or_default().to_owned()
}

async fn me(server: &TestServer, key: &str, token: &str) -> Answer {
    server.runtime(Method::GET, "/v1/me", key, token, None).await
}

fn claims_with(idp: &FakeIdp, sub: &str, extra: Value) -> Value {
    let mut claims = idp.claims_for(sub);
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    claims
}

// ---------------------------------------------------------------------------------------------
// Item 3: object-shaped group claims

backend_test!(object_group_claims_count_only_true_objects_and_strings);
async fn object_group_claims_count_only_true_objects_and_strings(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = server.create_app("groups").await;
    server.attach_idp(&app, &idp, json!({"claims": {"group": "groups"}})).await;
    let groups = json!({
        "admins": false, "flag": true, "none": null, "zero": 0, "empty": "", "blank": {},
        "list": ["x"], "org": {"role": "admin"}, "team": "lead"
    });
    let a = me(&server, &key, &idp.sign(claims_with(&idp, "alice", json!({"groups": groups})), Alg::Rs256)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["groups"], json!(["flag", "org", "team"]), "[{backend:?}]");
}

// ---------------------------------------------------------------------------------------------
// Item 4: NUL bytes

backend_test!(nul_in_token_claims_is_401_on_every_backend);
async fn nul_in_token_claims_is_401_on_every_backend(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (_, key) = server.app_with_idp(&idp).await;
    for (claim, extra, sub) in [
        ("sub", json!({}), "al\u{0}ice"),
        ("name", json!({"name": "Al\u{0}ice"}), "alice"),
        ("email", json!({"email": "alice\u{0}@example.com"}), "alice"),
    ] {
        let a = me(&server, &key, &idp.sign(claims_with(&idp, sub, extra), Alg::Rs256)).await;
        assert_problem(&a, StatusCode::UNAUTHORIZED, "invalid_user_token");
        assert!(detail(&a).contains(&format!("`{claim}`")) && detail(&a).contains("NUL"), "{}", a.body);
    }
    // A NUL in a group value drops that value only.
    let (app2, key2) = server.create_app("nul groups").await;
    server.attach_idp(&app2, &idp, json!({"claims": {"group": "groups"}})).await;
    let token = idp.sign(claims_with(&idp, "bob", json!({"groups": ["a\u{0}", "ok"]})), Alg::Rs256);
    let a = me(&server, &key2, &token).await;
    assert_eq!(a.status, StatusCode::OK, "[{backend:?}] {}", a.body);
    assert_eq!(a.body["groups"], json!(["ok"]));
}

backend_test!(nul_in_api_input_is_400_on_every_backend);
async fn nul_in_api_input_is_400_on_every_backend(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let oauth = FakeOAuth::start().await;
    let (app, _) = server.app_with_idp(&idp).await;
    let put = server
        .admin(Method::PUT, &format!("/v1/apps/{app}/providers/github"), Some(oauth.provider_body(&["read"])))
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    let mut bad_client = oauth.provider_body(&["read"]);
    bad_client["client_id"] = json!("id\u{0}");
    let a = server.admin(Method::PUT, &format!("/v1/apps/{app}/providers/github"), Some(bad_client)).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_request");

    let a = server.admin(Method::POST, "/v1/apps", Some(json!({"name": "a\u{0}b"}))).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_request");

    let import = json!({"subject": "dave", "provider": "github", "access_token": "at", "expires_in": 3600});
    let with = |field: &str, value: &str| {
        let mut body = import.clone();
        body[field] = json!(value);
        body
    };
    for (field, body) in [
        ("subject", with("subject", "da\u{0}ve")),
        ("access_token", with("access_token", "a\u{0}t")),
        ("refresh_token", with("refresh_token", "r\u{0}t")),
        ("account", with("account", "dave\u{0}@example.com")),
        ("token_type", with("token_type", "Bea\u{0}rer")),
    ] {
        let a = server.admin(Method::POST, &format!("/v1/apps/{app}/grants"), Some(body)).await;
        assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_request");
        assert!(detail(&a).starts_with(field), "[{backend:?}] {field}: {}", a.body);
    }
    let users = server.admin(Method::GET, &format!("/v1/apps/{app}/users"), None).await;
    assert_eq!(users.body["items"], json!([]), "[{backend:?}] a refused import creates no user");
    let ok = server.admin(Method::POST, &format!("/v1/apps/{app}/grants"), Some(import)).await;
    assert_eq!(ok.status, StatusCode::CREATED, "[{backend:?}] {}", ok.body);
}

// ---------------------------------------------------------------------------------------------
// Items 9 and 10: a hanging IdP, key-set lifetimes and the operator's refresh

backend_test!(a_hanging_idp_does_not_stall_user_requests);
async fn a_hanging_idp_does_not_stall_user_requests(backend: Backend) {
    // Key sets are never fresh: every request wants a refresh, none may wait for it.
    let server = TestServer::start_with(backend, |c| {
        c.jwks_max_age_secs = 0;
        c.jwks_miss_wait_ms = 300;
    })
    .await;
    let idp = FakeIdp::start().await;
    let (app, key) = server.app_with_idp(&idp).await;
    assert_eq!(me(&server, &key, &idp.token_for("alice")).await.status, StatusCode::OK);
    let jwks_uri = server.admin(Method::GET, &format!("/v1/apps/{app}/identity-provider"), None).await.body["jwks_uri"]
        .as_str()
        .unwrap()
        .to_owned();
    server.state().jwks().settled(&jwks_uri).await;
    idp.set_jwks_hanging(true);
    let mut slowest = std::time::Duration::ZERO;
    for i in 0..10 {
        let started = std::time::Instant::now();
        let a = me(&server, &key, &idp.token_for(&format!("user{i}"))).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(a.status, StatusCode::OK, "[{backend:?}] {}", a.body);
    }
    eprintln!("[{backend:?}] GET /v1/me with a hanging IdP: slowest of 10 {slowest:?}");
    assert!(slowest < std::time::Duration::from_secs(2), "[{backend:?}] a request waited: {slowest:?}");
    // An unknown kid is refused after the miss wait, not after the IdP's hang.
    let started = std::time::Instant::now();
    let a = me(&server, &key, &idp.sign_with_random_kid(idp.claims_for("mallory"), Alg::Rs256)).await;
    assert_problem(&a, StatusCode::UNAUTHORIZED, "invalid_user_token");
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
    idp.set_jwks_hanging(false);
}

backend_test!(operator_refresh_fetches_now_and_a_removed_kid_fails_next);
async fn operator_refresh_fetches_now_and_a_removed_kid_fails_next(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = server.app_with_idp(&idp).await;
    let old = idp.token_for("alice");
    assert_eq!(me(&server, &key, &old).await.status, StatusCode::OK);
    assert_eq!(me(&server, &key, &old).await.status, StatusCode::OK, "now in the verified-token cache");
    let old_kid = idp.current_kid(Alg::Rs256);
    let new_kid = idp.rotate(Alg::Rs256, true);
    let path = format!("/v1/apps/{app}/identity-provider/jwks/refresh");
    let a = server.admin(Method::POST, &path, None).await;
    assert_eq!(a.status, StatusCode::OK, "[{backend:?}] {}", a.body);
    let kids: Vec<&str> = a.body["kids"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert!(kids.contains(&new_kid.as_str()) && !kids.contains(&old_kid.as_str()), "{kids:?}");
    let fetched_at = a.body["fetched_at"].as_str().unwrap();
    assert!(fetched_at.len() == 20 && fetched_at.ends_with('Z'), "{fetched_at}");
    let refused = me(&server, &key, &old).await;
    assert_problem(&refused, StatusCode::UNAUTHORIZED, "invalid_user_token");
    assert_eq!(me(&server, &key, &idp.token_for("alice")).await.status, StatusCode::OK);

    // Operator only; an app without an IdP is 404; a failing JWKS is 503 and keeps the set.
    let as_app = server.call(Method::POST, &path, Some(&key), None, None).await;
    assert_eq!(as_app.status, StatusCode::UNAUTHORIZED, "{}", as_app.body);
    let (bare, _) = server.create_app("bare").await;
    let none = server.admin(Method::POST, &format!("/v1/apps/{bare}/identity-provider/jwks/refresh"), None).await;
    assert_problem(&none, StatusCode::NOT_FOUND, "idp_not_configured");
    idp.set_jwks_failing(true);
    let failed = server.admin(Method::POST, &path, None).await;
    assert_problem(&failed, StatusCode::SERVICE_UNAVAILABLE, "idp_unavailable");
    assert_eq!(me(&server, &key, &idp.token_for("bob")).await.status, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// Item 14: error messages that let a user act

backend_test!(token_refusals_name_what_to_fix);
async fn token_refusals_name_what_to_fix(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (_, key) = server.app_with_idp(&idp).await;
    let issuer = idp.issuer();

    // Wrong `iss`: both issuers named.
    let other_iss = claims_with(&idp, "alice", json!({"iss": "https://other-idp.example/"}));
    let token = idp.sign(other_iss.clone(), Alg::Rs256);
    let a = me(&server, &key, &token).await;
    assert_problem(&a, StatusCode::UNAUTHORIZED, "invalid_user_token");
    assert!(detail(&a).contains("`https://other-idp.example/`"), "{}", a.body);
    assert!(detail(&a).contains(&format!("`{issuer}`")), "{}", a.body);
    assert!(!a.body.to_string().contains(&token), "the token is never echoed");

    // From another issuer with a kid this IdP never had: "another issuer", checked before
    // the kid, and no key-set refetch for it.
    let fetches = idp.jwks_fetches();
    let a = me(&server, &key, &idp.sign_with_random_kid(other_iss, Alg::Rs256)).await;
    assert_problem(&a, StatusCode::UNAUTHORIZED, "invalid_user_token");
    assert!(detail(&a).contains("`https://other-idp.example/`") && !detail(&a).contains("key id"), "{}", a.body);
    assert_eq!(idp.jwks_fetches(), fetches, "[{backend:?}] a foreign token costs no JWKS fetch");

    // Wrong audience: the configured and the received audiences named.
    let a = me(&server, &key, &idp.sign(claims_with(&idp, "alice", json!({"aud": ["web-app"]})), Alg::Rs256)).await;
    assert_problem(&a, StatusCode::UNAUTHORIZED, "invalid_user_token");
    assert!(detail(&a).contains("`web-app`") && detail(&a).contains(&format!("`{}`", idp.audience())), "{}", a.body);

    // `X-User-Token: Bearer <jwt>` is accepted.
    let a = me(&server, &key, &format!("Bearer {}", idp.token_for("alice"))).await;
    assert_eq!(a.status, StatusCode::OK, "[{backend:?}] {}", a.body);
    assert_eq!(a.body["subject"], "alice");
}

backend_test!(plain_http_refusal_names_the_setting);
async fn plain_http_refusal_names_the_setting(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.allow_insecure_issuers = false).await;
    let idp = FakeIdp::start().await;
    let (app, _) = server.create_app("strict").await;
    let a = server
        .admin(Method::POST, &format!("/v1/apps/{app}/identity-provider"), Some(json!({"issuer_url": idp.issuer()})))
        .await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_issuer_url");
    assert!(detail(&a).contains("CUSTODY_ALLOW_INSECURE_ISSUERS"), "{}", a.body);
}

backend_test!(token_for_an_unknown_provider_or_an_unconnected_user_says_which);
async fn token_for_an_unknown_provider_or_an_unconnected_user_says_which(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let oauth = FakeOAuth::start().await;
    let (app, key) = server.app_with_idp(&idp).await;
    let put = server
        .admin(Method::PUT, &format!("/v1/apps/{app}/providers/github"), Some(oauth.provider_body(&["read"])))
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    let user = idp.token_for("alice");
    let token = |body: Value| server.call(Method::POST, "/v1/token", Some(&key), Some(&user), Some(body));

    let a = token(json!({"provider": "slack"})).await;
    assert_problem(&a, StatusCode::NOT_FOUND, "provider_not_found");
    assert!(detail(&a).contains("`slack`"), "{}", a.body);

    let a = token(json!({"provider": "github"})).await;
    assert_problem(&a, StatusCode::NOT_FOUND, "grant_not_found");
    assert!(detail(&a).contains("POST /v1/connect/sessions") && detail(&a).contains("`github`"), "{}", a.body);
}
