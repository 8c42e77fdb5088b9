#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Sign-in over HTTP, against the contract in `docs/api.md` (the OIDC client sub-resource under
//! Identity provider, and Sign-in): the operator's OIDC client settings, SDK sessions through the
//! fake IdP's login form, the failures the callback must catch (a replayed or expired state, a
//! wrong nonce, an ID token for another audience, a failed code exchange), and the Wallet: its
//! cookie, CSRF tokens, revocation, sign-out through the IdP's end-session endpoint, and a
//! session that ends when its user is deprovisioned or suspended.
//!
//! Every test runs its body once per backend in [`backends`] (SQLite always, PostgreSQL when
//! `CUSTODY_TEST_POSTGRES_URL` is set), on a fresh server and database each time.

use custody_identity::{UnixTime, UserId, UserStatus};
use custody_store::testing::{count_rows, execute_sql, set_user_status};
use custody_tests::backend_test;
use custody_tests::fake_idp::{ClientAuth, FakeIdp, SignInFault};
use custody_tests::harness::{Answer, Backend, TestServer};
use custody_tests::sign_in_flow::{
    put_oidc, query_of, register_custody, sign_in_app, Browser, Page, CLIENT_ID, CLIENT_SECRET,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

// ----- plumbing -----

fn assert_problem(a: &Answer, status: StatusCode, code: &str) {
    assert_eq!(a.status, status, "expected {status} `{code}`, got {} {}", a.status, a.body);
    assert_eq!(a.code(), code, "problem code in {}", a.body);
}

fn assert_status(a: &Answer, status: StatusCode) {
    assert_eq!(a.status, status, "expected {status}, got {} {}", a.status, a.body);
}

/// Starts an SDK session: (session id, authorize URL).
async fn start_session(server: &TestServer, key: &str) -> (String, String) {
    let a = server.call(Method::POST, "/v1/auth/sessions", Some(key), None, Some(json!({}))).await;
    assert_status(&a, StatusCode::CREATED);
    (a.body["session_id"].as_str().unwrap().to_owned(), a.body["authorize_url"].as_str().unwrap().to_owned())
}

async fn session_status(server: &TestServer, key: &str, id: &str) -> Answer {
    server.call(Method::GET, &format!("/v1/auth/sessions/{id}"), Some(key), None, None).await
}

/// Runs an SDK sign-in as `username` through the fake IdP and returns (session id, the callback
/// page).
async fn sdk_sign_in(server: &TestServer, key: &str, username: &str) -> (String, Page) {
    let (id, authorize_url) = start_session(server, key).await;
    let mut browser = Browser::new();
    let callback = browser.log_in_at_idp(&authorize_url, username).await;
    assert!(callback.starts_with(&format!("{}/v1/auth/callback?", server.base)), "{callback}");
    let page = browser.get(&callback).await;
    (id, page)
}

async fn audit(server: &TestServer, app: &str, action: &str) -> Vec<Value> {
    let a = server.admin(Method::GET, &format!("/v1/apps/{app}/audit?action={action}"), None).await;
    assert_status(&a, StatusCode::OK);
    a.body["items"].as_array().cloned().unwrap_or_default()
}

async fn users(server: &TestServer, app: &str) -> Vec<Value> {
    let a = server.admin(Method::GET, &format!("/v1/apps/{app}/users"), None).await;
    assert_status(&a, StatusCode::OK);
    a.body["items"].as_array().cloned().unwrap_or_default()
}

/// A provider without a revocation endpoint (nothing is ever called) and a grant imported for
/// `subject`; returns the grant id.
async fn import_grant(server: &TestServer, app: &str, subject: &str, access_token: &str) -> String {
    let a = server
        .admin(
            Method::PUT,
            &format!("/v1/apps/{app}/providers/github"),
            Some(json!({
                "authorization_url": "https://provider.example.com/authorize",
                "token_url": "https://provider.example.com/token",
                "client_id": "provider-client",
                "client_secret": "provider-secret",
                "scopes": ["repo", "read:user"],
            })),
        )
        .await;
    assert_status(&a, StatusCode::OK);
    let a = server
        .admin(
            Method::POST,
            &format!("/v1/apps/{app}/grants"),
            Some(json!({"subject": subject, "provider": "github", "access_token": access_token,
                        "scopes": ["repo", "read:user"], "account": "octocat"})),
        )
        .await;
    assert_status(&a, StatusCode::CREATED);
    a.body["id"].as_str().unwrap().to_owned()
}

async fn grant_status(server: &TestServer, app: &str, grant: &str) -> String {
    let a = server.admin(Method::GET, &format!("/v1/apps/{app}/grants"), None).await;
    assert_status(&a, StatusCode::OK);
    let items = a.body["items"].as_array().cloned().unwrap_or_default();
    let found = items.iter().find(|g| g["id"] == json!(grant)).unwrap_or_else(|| panic!("grant {grant} listed"));
    found["status"].as_str().unwrap().to_owned()
}

/// A Wallet sign-in as `username` in `browser`: sign-in page, login, IdP, callback. Returns the
/// callback's answer (a redirect to `/wallet` on success).
async fn wallet_sign_in(server: &TestServer, browser: &mut Browser, app: &str, username: &str) -> Page {
    let login = browser.get(&server.url(&format!("/wallet/login?app_id={app}"))).await;
    assert_eq!(login.status, StatusCode::FOUND, "{}", login.text);
    let callback = browser.log_in_at_idp(&login.location(), username).await;
    assert!(callback.starts_with(&format!("{}/wallet/auth/callback?", server.base)), "{callback}");
    browser.get(&callback).await
}

fn assert_html_security_headers(page: &Page) {
    let csp = page.header("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "CSP: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "CSP: {csp}");
    assert!(!csp.contains("script-src"), "no script allowed at all: {csp}");
    assert!(!csp.contains("unsafe-inline"), "CSP: {csp}");
    assert_eq!(page.header("x-frame-options"), "DENY");
    assert_eq!(page.header("referrer-policy"), "no-referrer");
    assert_eq!(page.header("cache-control"), "no-store");
    assert!(page.header("content-type").starts_with("text/html"), "{}", page.header("content-type"));
    assert!(page.text.contains("<html lang=\"en\">"), "{}", page.text);
    assert!(!page.text.contains("<script"), "{}", page.text);
}

// ----- OIDC client settings -----

backend_test!(oidc_client_settings_are_sealed_shown_and_go_with_the_idp);
async fn oidc_client_settings_are_sealed_shown_and_go_with_the_idp(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    idp.advertise_sign_in();
    let (app, _) = server.create_app("Acme").await;
    let path = format!("/v1/apps/{app}/identity-provider/oidc");

    // Without an IdP there is nothing to attach the client to.
    let a = put_oidc(&server, &app, json!({})).await;
    assert_problem(&a, StatusCode::NOT_FOUND, "idp_not_configured");

    let a = server.attach_idp(&app, &idp, json!({})).await;
    let public = &server.base;
    assert_eq!(
        a.body["oidc"],
        json!({"configured": false, "client_id": null, "token_endpoint_auth_method": null,
               "redirect_uris": {"sdk": format!("{public}/v1/auth/callback"), "wallet": format!("{public}/wallet/auth/callback")},
               "logout_url": format!("{public}/wallet/sign-in")})
    );

    // Validation.
    let a = server.admin(Method::PUT, &path, Some(json!({"client_id": CLIENT_ID}))).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_request");
    let a = put_oidc(&server, &app, json!({"client_id": "has space"})).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_request");
    let a = put_oidc(&server, &app, json!({"client_secret": ""})).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_request");
    let a = put_oidc(&server, &app, json!({"token_endpoint_auth_method": "private_key_jwt"})).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_request");
    let a = put_oidc(&server, &app, json!({"extra": 1})).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_request");
    let a = server
        .call(Method::PUT, &path, Some("nope"), None, Some(json!({"client_id": "a", "client_secret": "b"})))
        .await;
    assert_problem(&a, StatusCode::UNAUTHORIZED, "unauthorized");

    let a = put_oidc(&server, &app, json!({})).await;
    assert_status(&a, StatusCode::OK);
    assert_eq!(a.body["oidc"]["configured"], true);
    assert_eq!(a.body["oidc"]["client_id"], CLIENT_ID);
    assert_eq!(a.body["oidc"]["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(a.body["oidc"]["logout_url"], json!(format!("{public}/wallet/sign-in")));
    assert!(!a.body.to_string().contains(CLIENT_SECRET), "the secret is never returned: {}", a.body);
    let got = server.admin(Method::GET, &format!("/v1/apps/{app}/identity-provider"), None).await;
    assert_eq!(got.body["oidc"], a.body["oidc"]);
    assert!(!got.body.to_string().contains(CLIENT_SECRET));

    // Stored sealed: the secret's bytes appear nowhere in the row.
    let store = server.store().await;
    assert_eq!(count_rows(&store, "oidc_clients").await.unwrap(), 1);
    let matched = execute_sql(
        &store,
        &format!("UPDATE oidc_clients SET updated_at = updated_at WHERE client_id = '{CLIENT_ID}'"),
    )
    .await
    .unwrap();
    assert_eq!(matched, 1);
    let leaked = execute_sql(
        &store,
        &format!(
            "UPDATE oidc_clients SET updated_at = updated_at WHERE client_secret = CAST('{CLIENT_SECRET}' AS {})",
            if backend == custody_store::Backend::Postgres { "BYTEA" } else { "BLOB" }
        ),
    )
    .await
    .unwrap();
    assert_eq!(leaked, 0, "the secret is sealed");

    // Replacing it; post authentication.
    let a = put_oidc(&server, &app, json!({"token_endpoint_auth_method": "client_secret_post"})).await;
    assert_status(&a, StatusCode::OK);
    assert_eq!(a.body["oidc"]["token_endpoint_auth_method"], "client_secret_post");

    let rows = audit(&server, &app, "idp.oidc_update").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["actor"], "operator");
    assert!(!json!(rows).to_string().contains(CLIENT_SECRET));

    // DELETE, and again.
    let a = server.admin(Method::DELETE, &path, None).await;
    assert_status(&a, StatusCode::NO_CONTENT);
    let a = server.admin(Method::DELETE, &path, None).await;
    assert_problem(&a, StatusCode::NOT_FOUND, "oidc_not_configured");
    assert_eq!(audit(&server, &app, "idp.oidc_delete").await.len(), 1);
    let got = server.admin(Method::GET, &format!("/v1/apps/{app}/identity-provider"), None).await;
    assert_eq!(got.body["oidc"]["configured"], false);

    // Deleting the IdP removes the OIDC client; a new IdP starts without one.
    assert_status(&put_oidc(&server, &app, json!({})).await, StatusCode::OK);
    let a = server.admin(Method::DELETE, &format!("/v1/apps/{app}/identity-provider"), None).await;
    assert_status(&a, StatusCode::NO_CONTENT);
    assert_eq!(count_rows(&store, "oidc_clients").await.unwrap(), 0);
    let a = server.attach_idp(&app, &idp, json!({})).await;
    assert_eq!(a.body["oidc"]["configured"], false);
    let a = server.admin(Method::DELETE, &path, None).await;
    assert_problem(&a, StatusCode::NOT_FOUND, "oidc_not_configured");
}

backend_test!(sign_in_without_oidc_settings_is_409);
async fn sign_in_without_oidc_settings_is_409(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    idp.advertise_sign_in();
    let (app, key) = server.create_app("Acme").await;

    // No IdP at all.
    let a = server.call(Method::POST, "/v1/auth/sessions", Some(&key), None, Some(json!({}))).await;
    assert_problem(&a, StatusCode::CONFLICT, "oidc_not_configured");
    // An IdP without an OIDC client.
    server.attach_idp(&app, &idp, json!({})).await;
    let a = server.call(Method::POST, "/v1/auth/sessions", Some(&key), None, Some(json!({}))).await;
    assert_problem(&a, StatusCode::CONFLICT, "oidc_not_configured");
    assert!(a.body["detail"].as_str().unwrap().contains("OIDC client"), "{}", a.body);
    // Nor for the Wallet.
    let mut browser = Browser::new();
    let page = browser.get(&server.url(&format!("/wallet/login?app_id={app}"))).await;
    assert_eq!(page.status, StatusCode::CONFLICT, "{}", page.text);
    let page = browser.get(&server.url(&format!("/wallet/sign-in?app_id={app}"))).await;
    assert_eq!(page.status, StatusCode::CONFLICT, "{}", page.text);
    assert!(page.text.contains("Acme"), "{}", page.text);

    // With a client it works; once the client is deleted it no longer does.
    assert_status(&put_oidc(&server, &app, json!({})).await, StatusCode::OK);
    let a = server.call(Method::POST, "/v1/auth/sessions", Some(&key), None, Some(json!({}))).await;
    assert_status(&a, StatusCode::CREATED);
    let a = server.admin(Method::DELETE, &format!("/v1/apps/{app}/identity-provider/oidc"), None).await;
    assert_status(&a, StatusCode::NO_CONTENT);
    let a = server.call(Method::POST, "/v1/auth/sessions", Some(&key), None, Some(json!({}))).await;
    assert_problem(&a, StatusCode::CONFLICT, "oidc_not_configured");

    // An IdP whose discovery names no authorization endpoint cannot sign in either.
    let plain = FakeIdp::start().await;
    register_custody(&server.base, &plain);
    let (app2, key2) = server.create_app("Plain").await;
    server.attach_idp(&app2, &plain, json!({})).await;
    assert_status(&put_oidc(&server, &app2, json!({})).await, StatusCode::OK);
    let a = server.call(Method::POST, "/v1/auth/sessions", Some(&key2), None, Some(json!({}))).await;
    assert_problem(&a, StatusCode::CONFLICT, "oidc_not_configured");
    assert!(a.body["detail"].as_str().unwrap().contains("authorization_endpoint"), "{}", a.body);

    // The API key is required.
    let a = server.call(Method::POST, "/v1/auth/sessions", None, None, Some(json!({}))).await;
    assert_problem(&a, StatusCode::UNAUTHORIZED, "unauthorized");
    let a = server.call(Method::POST, "/v1/auth/sessions", Some(&key), None, Some(json!({"x": 1}))).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_request");
}

// ----- SDK sessions -----

backend_test!(sdk_session_signs_the_user_in_and_hands_the_token_out_once);
async fn sdk_session_signs_the_user_in_and_hands_the_token_out_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = sign_in_app(&server, &idp, "Acme").await;
    idp.set_user_claims("alice", json!({"name": "Alice Liddell", "groups": ["eng"]}));
    // Map groups, so the sign-in is seen to sync them as a runtime token would.
    let a = server
        .admin(
            Method::PATCH,
            &format!("/v1/apps/{app}/identity-provider"),
            Some(json!({"claims": {"group": "groups"}})),
        )
        .await;
    assert_status(&a, StatusCode::OK);
    assert_eq!(a.body["claims_locked"], false);

    let a = server.call(Method::POST, "/v1/auth/sessions", Some(&key), None, Some(json!({}))).await;
    assert_status(&a, StatusCode::CREATED);
    assert_eq!(a.headers.get("cache-control").unwrap(), "no-store");
    let id = a.body["session_id"].as_str().unwrap().to_owned();
    assert!(a.body["expires_at"].as_str().unwrap().ends_with('Z'));
    let authorize_url = a.body["authorize_url"].as_str().unwrap().to_owned();
    assert!(authorize_url.starts_with(&idp.authorization_endpoint()), "{authorize_url}");
    let q = query_of(&authorize_url);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["redirect_uri"], format!("{}/v1/auth/callback", server.base));
    assert_eq!(q["scope"], "openid profile email");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert!(q["state"].len() >= 43 && q["nonce"].len() >= 43, "{q:?}");
    assert_ne!(q["state"], q["nonce"]);

    // Pending until the browser comes back.
    let s = session_status(&server, &key, &id).await;
    assert_status(&s, StatusCode::OK);
    assert_eq!(s.body["status"], "pending");
    assert!(s.body.get("user_token").is_none() && s.body.get("user").is_none(), "{}", s.body);
    // Another app's key cannot see it; a malformed id is 404 too.
    let (_, other_key) = server.create_app("Other").await;
    assert_problem(&session_status(&server, &other_key, &id).await, StatusCode::NOT_FOUND, "session_not_found");
    assert_problem(&session_status(&server, &key, "nope").await, StatusCode::NOT_FOUND, "session_not_found");
    assert!(users(&server, &app).await.is_empty());

    let mut browser = Browser::new();
    let callback = browser.log_in_at_idp(&authorize_url, "alice").await;
    let page = browser.get(&callback).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.text.contains("You can close this window"), "{}", page.text);
    assert!(page.text.contains("Acme"), "{}", page.text);
    assert_html_security_headers(&page);
    assert_eq!(idp.token_requests().last().unwrap().client_auth, ClientAuth::Basic);

    // The user was created, the mappings locked, the groups synced from the ID token.
    let listed = users(&server, &app).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["subject"], "alice");
    assert_eq!(listed[0]["email"], "alice@example.com");
    assert_eq!(listed[0]["name"], "Alice Liddell");
    assert_eq!(listed[0]["groups"], json!(["eng"]));
    let got = server.admin(Method::GET, &format!("/v1/apps/{app}/identity-provider"), None).await;
    assert_eq!(got.body["claims_locked"], true);
    let a = server
        .admin(Method::PATCH, &format!("/v1/apps/{app}/identity-provider"), Some(json!({"claims": {"group": "roles"}})))
        .await;
    assert_problem(&a, StatusCode::CONFLICT, "claim_mappings_locked");

    // The token, once.
    let s = session_status(&server, &key, &id).await;
    assert_status(&s, StatusCode::OK);
    assert_eq!(s.headers.get("cache-control").unwrap(), "no-store");
    assert_eq!(s.body["status"], "complete");
    assert_eq!(s.body["user"]["subject"], "alice");
    assert_eq!(s.body["user"]["user_id"], listed[0]["user_id"]);
    let token = s.body["user_token"].as_str().expect("the token on the first read").to_owned();
    assert_eq!(token.split('.').count(), 3);
    let again = session_status(&server, &key, &id).await;
    assert_eq!(again.body["status"], "complete");
    assert_eq!(again.body["user"]["subject"], "alice");
    assert!(again.body.get("user_token").is_none(), "never again: {}", again.body);

    // The ID token (audience: the client id, not the configured audience) is a user token.
    let me = server.runtime(Method::GET, "/v1/me", &key, &token, None).await;
    assert_status(&me, StatusCode::OK);
    assert_eq!(me.body["subject"], "alice");
    assert_eq!(me.body["user_id"], listed[0]["user_id"]);
    // ... for this app only: another app with the same IdP but no OIDC client refuses it.
    let (app3, key3) = server.create_app("Third").await;
    server.attach_idp(&app3, &idp, json!({})).await;
    let me = server.runtime(Method::GET, "/v1/me", &key3, &token, None).await;
    assert_problem(&me, StatusCode::UNAUTHORIZED, "invalid_user_token");
    // The configured audience still works for runtime tokens.
    let me = server.runtime(Method::GET, "/v1/me", &key, &idp.token_for("alice"), None).await;
    assert_status(&me, StatusCode::OK);

    // Audited.
    let rows = audit(&server, &app, "user.sign_in").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["outcome"], "success");
    assert_eq!(rows[0]["actor"], json!(format!("user:{}", listed[0]["user_id"].as_str().unwrap())));
    let all = server.admin(Method::GET, &format!("/v1/apps/{app}/audit?limit=1000"), None).await;
    assert!(!all.body.to_string().contains(&token), "no token in the audit log");

    // Once the OIDC client is gone, its ID tokens are no longer user tokens.
    let a = server.admin(Method::DELETE, &format!("/v1/apps/{app}/identity-provider/oidc"), None).await;
    assert_status(&a, StatusCode::NO_CONTENT);
    let me = server.runtime(Method::GET, "/v1/me", &key, &token, None).await;
    assert_problem(&me, StatusCode::UNAUTHORIZED, "invalid_user_token");
}

backend_test!(client_secret_post_is_supported);
async fn client_secret_post_is_supported(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = sign_in_app(&server, &idp, "Acme").await;
    let a = put_oidc(&server, &app, json!({"token_endpoint_auth_method": "client_secret_post"})).await;
    assert_status(&a, StatusCode::OK);
    let (id, page) = sdk_sign_in(&server, &key, "bob").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert_eq!(idp.token_requests().last().unwrap().client_auth, ClientAuth::Post);
    assert_eq!(session_status(&server, &key, &id).await.body["status"], "complete");

    // A wrong secret fails the exchange.
    let a = server
        .admin(
            Method::PUT,
            &format!("/v1/apps/{app}/identity-provider/oidc"),
            Some(json!({"client_id": CLIENT_ID, "client_secret": "wrong"})),
        )
        .await;
    assert_status(&a, StatusCode::OK);
    let (id, page) = sdk_sign_in(&server, &key, "bob").await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{}", page.text);
    let s = session_status(&server, &key, &id).await;
    assert_eq!(s.body["status"], "failed");
    assert_eq!(s.body["error"], "code_exchange_failed");
    assert_eq!(idp.token_requests().last().unwrap().error.as_deref(), Some("invalid_client"));
}

backend_test!(a_state_is_single_use_and_bound_to_its_callback);
async fn a_state_is_single_use_and_bound_to_its_callback(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = sign_in_app(&server, &idp, "Acme").await;

    let (id, authorize_url) = start_session(&server, &key).await;
    let mut browser = Browser::new();
    let callback = browser.log_in_at_idp(&authorize_url, "carol").await;
    let state = query_of(&callback)["state"].clone();

    // The SDK state presented at the Wallet's callback (even with a forged binding cookie)
    // is unknown there, and stays usable at its own.
    let mut forged = Browser::new();
    forged.cookies.insert("custody_wallet_signin".into(), state.clone());
    let wrong_callback = callback.replace("/v1/auth/callback", "/wallet/auth/callback");
    let page = forged.get(&wrong_callback).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.text);
    assert!(!forged.cookies.contains_key("custody_wallet"));

    let page = browser.get(&callback).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    // Replaying the callback: the state is gone.
    let replay = browser.get(&callback).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST, "{}", replay.text);
    assert!(replay.text.contains("not valid"), "{}", replay.text);
    // Even with a fresh code from the IdP.
    let fresh = browser.log_in_at_idp(&authorize_url, "carol").await;
    assert_eq!(query_of(&fresh)["state"], state);
    let replay = browser.get(&fresh).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST, "{}", replay.text);
    // An unknown or missing state.
    let page = browser.get(&server.url("/v1/auth/callback?state=made-up&code=x")).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    let page = browser.get(&server.url("/v1/auth/callback")).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert_html_security_headers(&page);

    let s = session_status(&server, &key, &id).await;
    assert_eq!(s.body["status"], "complete", "{}", s.body);
    assert!(s.body["user_token"].is_string());
    assert_eq!(users(&server, &app).await.len(), 1);
    // Only the state's hash is stored.
    let store = server.store().await;
    assert_eq!(count_rows(&store, "sign_in_states").await.unwrap(), 0, "consumed");
}

backend_test!(an_expired_state_fails_and_a_late_session_reads_expired);
async fn an_expired_state_fails_and_a_late_session_reads_expired(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = sign_in_app(&server, &idp, "Acme").await;
    let store = server.store().await;

    // A session nobody completed in time reads `expired`.
    let (idle, _) = start_session(&server, &key).await;
    let expired =
        execute_sql(&store, &format!("UPDATE sdk_sessions SET expires_at = created_at - 1 WHERE id = '{idle}'"))
            .await
            .unwrap();
    assert_eq!(expired, 1);
    assert_eq!(session_status(&server, &key, &idle).await.body["status"], "expired");

    // A browser coming back after the state expired: refused, nobody signed in.
    let (id, authorize_url) = start_session(&server, &key).await;
    let mut browser = Browser::new();
    let callback = browser.log_in_at_idp(&authorize_url, "dave").await;
    execute_sql(&store, "UPDATE sign_in_states SET expires_at = created_at - 1").await.unwrap();
    let page = browser.get(&callback).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.text);
    assert!(page.text.contains("expired"), "{}", page.text);
    let s = session_status(&server, &key, &id).await;
    assert_eq!(s.body["status"], "expired", "{}", s.body);
    assert!(s.body.get("user_token").is_none());
    assert!(users(&server, &app).await.is_empty());
    assert!(idp.token_requests().is_empty(), "no code exchange after expiry");
    let rows = audit(&server, &app, "user.sign_in").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["outcome"], "failure");
    assert!(rows[0]["detail"].as_str().unwrap().contains("expired"), "{rows:?}");
}

backend_test!(id_tokens_that_do_not_verify_are_refused);
async fn id_tokens_that_do_not_verify_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = sign_in_app(&server, &idp, "Acme").await;
    for (fault, detail) in [
        (SignInFault::WrongNonce, "nonce"),
        (SignInFault::WrongAudience, "audience"),
        (SignInFault::ExpiredIdToken, "expired"),
        (SignInFault::UnpublishedKey, "key"),
    ] {
        eprintln!("fault {fault:?}");
        idp.set_sign_in_fault(fault);
        let (id, page) = sdk_sign_in(&server, &key, "eve").await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.text);
        assert!(page.text.contains("invalid_id_token"), "{}", page.text);
        let s = session_status(&server, &key, &id).await;
        assert_eq!(s.body["status"], "failed", "{}", s.body);
        assert_eq!(s.body["error"], "invalid_id_token");
        assert!(s.body.get("user_token").is_none() && s.body.get("user").is_none(), "{}", s.body);
        let rows = audit(&server, &app, "user.sign_in").await;
        assert_eq!(rows[0]["outcome"], "failure");
        assert!(rows[0]["detail"].as_str().unwrap().contains(detail), "{fault:?}: {}", rows[0]["detail"]);
    }
    // Nobody was created, and the mappings did not lock.
    assert!(users(&server, &app).await.is_empty());
    let got = server.admin(Method::GET, &format!("/v1/apps/{app}/identity-provider"), None).await;
    assert_eq!(got.body["claims_locked"], false);

    idp.set_sign_in_fault(SignInFault::None);
    let (id, page) = sdk_sign_in(&server, &key, "eve").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert_eq!(session_status(&server, &key, &id).await.body["status"], "complete");
}

backend_test!(a_failed_code_exchange_fails_the_session);
async fn a_failed_code_exchange_fails_the_session(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = sign_in_app(&server, &idp, "Acme").await;
    for fault in [SignInFault::RejectCode, SignInFault::TokenServerError, SignInFault::NoIdToken] {
        eprintln!("fault {fault:?}");
        idp.set_sign_in_fault(fault);
        let (id, page) = sdk_sign_in(&server, &key, "frank").await;
        assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{}", page.text);
        assert!(page.text.contains("code_exchange_failed"), "{}", page.text);
        let s = session_status(&server, &key, &id).await;
        assert_eq!(s.body["status"], "failed");
        assert_eq!(s.body["error"], "code_exchange_failed");
    }
    assert!(users(&server, &app).await.is_empty());

    // The user cancelling at the IdP.
    idp.set_sign_in_fault(SignInFault::None);
    let (id, authorize_url) = start_session(&server, &key).await;
    let q = query_of(&authorize_url);
    let mut browser = Browser::new();
    let form: Vec<(&str, &str)> = vec![
        ("client_id", &q["client_id"]),
        ("redirect_uri", &q["redirect_uri"]),
        ("state", &q["state"]),
        ("action", "cancel"),
    ];
    let cancelled = browser.post_form(&idp.authorization_endpoint(), &form).await;
    assert_eq!(cancelled.status, StatusCode::FOUND);
    let page = browser.get(&cancelled.location()).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.text);
    assert!(page.text.contains("cancelled"), "{}", page.text);
    let s = session_status(&server, &key, &id).await;
    assert_eq!(s.body["error"], "access_denied");
}

backend_test!(a_deprovisioned_user_cannot_sign_in);
async fn a_deprovisioned_user_cannot_sign_in(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = sign_in_app(&server, &idp, "Acme").await;
    let (_, page) = sdk_sign_in(&server, &key, "gina").await;
    assert_eq!(page.status, StatusCode::OK);
    let user = users(&server, &app).await[0]["user_id"].as_str().unwrap().to_owned();
    let a = server.admin(Method::POST, &format!("/v1/apps/{app}/users/{user}/deprovision"), None).await;
    assert_status(&a, StatusCode::OK);

    let (id, page) = sdk_sign_in(&server, &key, "gina").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.text);
    let s = session_status(&server, &key, &id).await;
    assert_eq!(s.body["status"], "failed");
    assert_eq!(s.body["error"], "user_deprovisioned");
    assert!(s.body.get("user_token").is_none());
    let rows = audit(&server, &app, "user.sign_in").await;
    assert_eq!(rows[0]["outcome"], "denied");
    assert_eq!(rows[0]["user_id"], json!(user));
}

// ----- the Wallet -----

backend_test!(wallet_sign_in_sets_a_safe_cookie_and_lists_grants_without_tokens);
async fn wallet_sign_in_sets_a_safe_cookie_and_lists_grants_without_tokens(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, _) = sign_in_app(&server, &idp, "Acme <Corp>").await;
    let access_token = "gho_wallet_secret_token_value_123";
    let grant = import_grant(&server, &app, "henry", access_token).await;

    let mut browser = Browser::new();
    // The sign-in page: the app's name (escaped), a sign-in button, safe headers.
    let page = browser.get(&server.url(&format!("/wallet/sign-in?app_id={app}"))).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.text.contains("Acme &lt;Corp&gt;"), "{}", page.text);
    assert!(!page.text.contains("Acme <Corp>"));
    assert!(page.text.contains("<button type=\"submit\">Sign in</button>"), "{}", page.text);
    assert!(page.text.contains("<h1>"), "{}", page.text);
    assert_html_security_headers(&page);
    assert!(page.header("content-security-policy").contains(&idp.issuer()), "the form may lead to the IdP");
    // Unknown apps.
    let unknown = browser.get(&server.url("/wallet/sign-in?app_id=00000000-0000-4000-8000-000000000000")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(browser.get(&server.url("/wallet/sign-in")).await.status, StatusCode::NOT_FOUND);

    // Login: to the IdP, with a cookie binding the sign-in to this browser.
    let login = browser.get(&server.url(&format!("/wallet/login?app_id={app}"))).await;
    assert_eq!(login.status, StatusCode::FOUND);
    let q = query_of(&login.location());
    assert_eq!(q["redirect_uri"], format!("{}/wallet/auth/callback", server.base));
    let binding = login.set_cookie("custody_wallet_signin").expect("binding cookie");
    assert!(binding.contains("HttpOnly") && binding.contains("SameSite=Lax"), "{binding}");
    assert!(binding.contains("Path=/wallet/auth"), "{binding}");
    assert!(!binding.contains("Secure"), "http public URL: {binding}");

    // Back from the IdP without the binding cookie: refused, and the state is not spent.
    let callback = browser.log_in_at_idp(&login.location(), "henry").await;
    let mut other = Browser::new();
    let page = other.get(&callback).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.text);
    assert!(page.set_cookie("custody_wallet").is_none());

    let done = browser.get(&callback).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text);
    assert_eq!(done.location(), "/wallet");
    let cookie = done.set_cookie("custody_wallet").expect("session cookie");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(cookie.contains("Path=/wallet"), "{cookie}");
    assert!(cookie.contains("Max-Age="), "{cookie}");
    assert!(!cookie.contains("Secure"), "{cookie}");
    assert!(!browser.cookies.contains_key("custody_wallet_signin"), "binding cookie cleared");
    let session_token = browser.cookies["custody_wallet"].clone();
    // Stored as a hash only.
    let store = server.store().await;
    assert_eq!(count_rows(&store, "wallet_sessions").await.unwrap(), 1);
    let by_value =
        execute_sql(&store, &format!("DELETE FROM wallet_sessions WHERE id_hash = '{session_token}'")).await.unwrap();
    assert_eq!(by_value, 0);

    let wallet = browser.get(&server.url("/wallet")).await;
    assert_eq!(wallet.status, StatusCode::OK, "{}", wallet.text);
    assert_html_security_headers(&wallet);
    assert!(wallet.text.contains("henry@example.com"), "{}", wallet.text);
    assert!(wallet.text.contains("github"), "{}", wallet.text);
    assert!(wallet.text.contains("octocat"), "{}", wallet.text);
    assert!(wallet.text.contains("repo read:user"), "{}", wallet.text);
    assert!(wallet.text.contains("Active"), "{}", wallet.text);
    assert!(wallet.text.contains("Never"), "never used yet: {}", wallet.text);
    assert!(wallet.text.contains(&format!("action=\"/wallet/grants/{grant}/revoke\"")), "{}", wallet.text);
    assert!(wallet.text.contains("<button type=\"submit\" class=\"danger\""), "{}", wallet.text);
    assert!(!wallet.text.contains(access_token), "never a token value");
    assert!(!wallet.text.contains(&session_token), "never the session token");

    // Signed in already: the sign-in page goes straight to the wallet.
    let page = browser.get(&server.url(&format!("/wallet/sign-in?app_id={app}"))).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/wallet");

    let rows = audit(&server, &app, "user.sign_in").await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0]["detail"].as_str().unwrap().contains("Wallet"), "{rows:?}");

    // Without a session.
    let mut stranger = Browser::new();
    assert_eq!(stranger.get(&server.url("/wallet")).await.status, StatusCode::UNAUTHORIZED);
    stranger.cookies.insert("custody_wallet".into(), "made-up".into());
    let page = stranger.get(&server.url("/wallet")).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(!stranger.cookies.contains_key("custody_wallet"), "a dead cookie is cleared");
}

backend_test!(wallet_cookie_is_secure_over_https);
async fn wallet_cookie_is_secure_over_https(backend: Backend) {
    let public = "https://custody.test";
    let mut server = TestServer::start_with(backend, |c| c.public_url = public.to_owned()).await;
    // Browsers would reach the public URL; the test reaches the same server directly.
    server.base = format!("http://{}", server.server.as_ref().unwrap().local_addr);
    let idp = FakeIdp::start().await;
    idp.advertise_sign_in();
    register_custody(public, &idp);
    let (app, _) = server.create_app("Acme").await;
    server.attach_idp(&app, &idp, json!({})).await;
    let a = put_oidc(&server, &app, json!({})).await;
    assert_eq!(a.body["oidc"]["redirect_uris"]["wallet"], "https://custody.test/wallet/auth/callback");

    let mut browser = Browser::new();
    let login = browser.get(&server.url(&format!("/wallet/login?app_id={app}"))).await;
    assert!(login.set_cookie("custody_wallet_signin").unwrap().contains("; Secure"));
    let callback = browser.log_in_at_idp(&login.location(), "ivy").await;
    assert!(callback.starts_with("https://custody.test/wallet/auth/callback?"), "{callback}");
    let done = browser.get(&callback.replace(public, &server.base)).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text);
    let cookie = done.set_cookie("custody_wallet").unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
}

backend_test!(wallet_forms_need_the_session_csrf_token);
async fn wallet_forms_need_the_session_csrf_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, _) = sign_in_app(&server, &idp, "Acme").await;
    let grant = import_grant(&server, &app, "jack", "gho_jack").await;
    import_grant(&server, &app, "kate", "gho_kate").await;

    let mut jack = Browser::new();
    assert_eq!(wallet_sign_in(&server, &mut jack, &app, "jack").await.status, StatusCode::SEE_OTHER);
    let mut kate = Browser::new();
    assert_eq!(wallet_sign_in(&server, &mut kate, &app, "kate").await.status, StatusCode::SEE_OTHER);
    let jack_csrf = jack.get(&server.url("/wallet")).await.hidden_input("csrf").unwrap();
    let kate_csrf = kate.get(&server.url("/wallet")).await.hidden_input("csrf").unwrap();
    assert_ne!(jack_csrf, kate_csrf);

    let revoke = server.url(&format!("/wallet/grants/{grant}/revoke"));
    for fields in [vec![], vec![("csrf", "made-up")], vec![("csrf", kate_csrf.as_str())]] {
        let page = jack.post_form(&revoke, &fields).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{fields:?}: {}", page.text);
        assert_html_security_headers(&page);
    }
    assert_eq!(grant_status(&server, &app, &grant).await, "active");
    // Sign-out needs it too.
    let page = jack.post_form(&server.url("/wallet/sign-out"), &[]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(jack.get(&server.url("/wallet")).await.status, StatusCode::OK, "still signed in");
    // Without the cookie, the token alone does nothing.
    let mut stranger = Browser::new();
    let page = stranger.post_form(&revoke, &[("csrf", &jack_csrf)]).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    // Kate cannot revoke Jack's grant, even with her own token.
    let page = kate.post_form(&revoke, &[("csrf", &kate_csrf)]).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.text);
    assert_eq!(grant_status(&server, &app, &grant).await, "active");

    // With Jack's own token it works, through `revoke_user_grant`.
    let page = jack.post_form(&revoke, &[("csrf", &jack_csrf)]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.text);
    assert_eq!(page.location(), "/wallet?revoked=github");
    assert_eq!(grant_status(&server, &app, &grant).await, "revoked");
    let wallet = jack.get(&server.url("/wallet?revoked=github")).await;
    assert!(wallet.text.contains("was revoked"), "{}", wallet.text);
    assert!(wallet.text.contains("Revoked"), "{}", wallet.text);
    assert!(!wallet.text.contains(&format!("/wallet/grants/{grant}/revoke")), "no button for a revoked grant");
    let rows = audit(&server, &app, "grant.revoke").await;
    let jack_id = users(&server, &app)
        .await
        .into_iter()
        .find(|u| u["subject"] == "jack")
        .map(|u| u["user_id"].as_str().unwrap().to_owned())
        .unwrap();
    assert_eq!(rows[0]["actor"], json!(format!("user:{jack_id}")));
    assert_eq!(rows[0]["grant_id"], json!(grant));
}

backend_test!(wallet_sign_out_goes_through_the_idp_and_back);
async fn wallet_sign_out_goes_through_the_idp_and_back(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, _) = sign_in_app(&server, &idp, "Acme").await;
    let mut browser = Browser::new();
    assert_eq!(wallet_sign_in(&server, &mut browser, &app, "liam").await.status, StatusCode::SEE_OTHER);
    let wallet = browser.get(&server.url("/wallet")).await;
    let csrf = wallet.hidden_input("csrf").unwrap();
    assert!(wallet.header("content-security-policy").contains(&idp.issuer()), "sign-out leads to the IdP");

    let out = browser.post_form(&server.url("/wallet/sign-out"), &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.text);
    assert!(out.set_cookie("custody_wallet").unwrap().contains("Max-Age=0"));
    let location = out.location();
    assert!(location.starts_with(&idp.end_session_endpoint()), "{location}");
    let q = query_of(&location);
    assert_eq!(q["post_logout_redirect_uri"], format!("{}/wallet/sign-in", server.base), "bare, no query");
    assert_eq!(q["state"], app);
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["id_token_hint"].split('.').count(), 3);
    // The IdP sends the browser back with the state; the page knows the app from it.
    let back = browser.get(&location).await;
    assert_eq!(back.status, StatusCode::FOUND, "{}", back.text);
    assert_eq!(back.location(), format!("{}/wallet/sign-in?state={app}", server.base));
    let page = browser.get(&back.location()).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.text.contains("Acme"), "{}", page.text);
    assert!(page.text.contains(&format!("name=\"app_id\" value=\"{app}\"")), "{}", page.text);
    assert_eq!(idp.logout_requests().len(), 1);
    // The session is over.
    assert_eq!(browser.get(&server.url("/wallet")).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(audit(&server, &app, "user.sign_out").await.len(), 1);

    // An IdP without an end-session endpoint: straight back to the sign-in page.
    let plain = FakeIdp::start().await;
    plain.advertise_sign_in();
    plain.set_metadata("end_session_endpoint", Value::Null);
    register_custody(&server.base, &plain);
    let (app2, _) = server.create_app("Plain").await;
    server.attach_idp(&app2, &plain, json!({})).await;
    assert_status(&put_oidc(&server, &app2, json!({})).await, StatusCode::OK);
    let mut browser = Browser::new();
    assert_eq!(wallet_sign_in(&server, &mut browser, &app2, "mia").await.status, StatusCode::SEE_OTHER);
    let csrf = browser.get(&server.url("/wallet")).await.hidden_input("csrf").unwrap();
    let out = browser.post_form(&server.url("/wallet/sign-out"), &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), format!("{}/wallet/sign-in?app_id={app2}", server.base));
    assert!(plain.logout_requests().is_empty());
}

backend_test!(a_wallet_session_ends_when_its_user_is_deprovisioned_or_suspended);
async fn a_wallet_session_ends_when_its_user_is_deprovisioned_or_suspended(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, _) = sign_in_app(&server, &idp, "Acme").await;
    let grant = import_grant(&server, &app, "nora", "gho_nora").await;
    let mut browser = Browser::new();
    assert_eq!(wallet_sign_in(&server, &mut browser, &app, "nora").await.status, StatusCode::SEE_OTHER);
    let csrf = browser.get(&server.url("/wallet")).await.hidden_input("csrf").unwrap();
    let cookie = browser.cookies["custody_wallet"].clone();

    let user = users(&server, &app).await[0]["user_id"].as_str().unwrap().to_owned();
    let a = server.admin(Method::POST, &format!("/v1/apps/{app}/users/{user}/deprovision"), None).await;
    assert_status(&a, StatusCode::OK);

    let page = browser.get(&server.url("/wallet")).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.text);
    assert!(page.text.contains("removed"), "{}", page.text);
    assert!(!browser.cookies.contains_key("custody_wallet"), "cookie cleared");
    // The session is gone for good: the old cookie is unknown now.
    browser.cookies.insert("custody_wallet".into(), cookie);
    let page = browser.post_form(&server.url(&format!("/wallet/grants/{grant}/revoke")), &[("csrf", &csrf)]).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.text);
    let store = server.store().await;
    assert_eq!(count_rows(&store, "wallet_sessions").await.unwrap(), 0);

    // Suspension ends a session too.
    let mut browser = Browser::new();
    assert_eq!(wallet_sign_in(&server, &mut browser, &app, "oscar").await.status, StatusCode::SEE_OTHER);
    assert_eq!(browser.get(&server.url("/wallet")).await.status, StatusCode::OK);
    let oscar = users(&server, &app)
        .await
        .into_iter()
        .find(|u| u["subject"] == "oscar")
        .map(|u| u["user_id"].as_str().unwrap().to_owned())
        .unwrap();
    assert!(set_user_status(&store, &UserId::parse(&oscar).unwrap(), UserStatus::Suspended, UnixTime(1))
        .await
        .unwrap());
    let page = browser.get(&server.url("/wallet")).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.text);
    assert!(page.text.contains("suspended"), "{}", page.text);
    // ... and it stays over after reactivation: the user signs in again.
    set_user_status(&store, &UserId::parse(&oscar).unwrap(), UserStatus::Active, UnixTime(2)).await.unwrap();
    assert_eq!(browser.get(&server.url("/wallet")).await.status, StatusCode::UNAUTHORIZED);

    // An expired session goes back to the sign-in page.
    let mut browser = Browser::new();
    assert_eq!(wallet_sign_in(&server, &mut browser, &app, "oscar").await.status, StatusCode::SEE_OTHER);
    execute_sql(&store, "UPDATE wallet_sessions SET expires_at = created_at").await.unwrap();
    let page = browser.get(&server.url("/wallet")).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), format!("/wallet/sign-in?app_id={app}"));
}

backend_test!(the_client_secret_is_resealed_under_a_new_master_key);
async fn the_client_secret_is_resealed_under_a_new_master_key(backend: Backend) {
    use base64::Engine as _;
    use custody_identity::Secret;
    use custody_tests::harness::MASTER_KEYS;
    let k2 = format!("k2:{}", base64::engine::general_purpose::STANDARD.encode([7u8; 32]));
    let mut server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (_, key) = sign_in_app(&server, &idp, "Acme").await;
    server.stop().await;
    let TestServer { db, .. } = server;

    // k2 first, k1 still known: the secret sealed under k1 is moved to k2.
    let both = format!("{k2},{MASTER_KEYS}");
    let mut server = TestServer::start_on(db, |c| c.master_keys = Some(Secret::new(both))).await;
    server.state().vault().reseal_all(100).await.expect("vault reseal");
    let report = server.state().signin().reseal_client_secrets(100).await.expect("reseal");
    assert_eq!((report.examined, report.resealed), (1, 1), "{report:?}");
    let again = server.state().signin().reseal_client_secrets(100).await.expect("reseal again");
    assert_eq!(again.resealed, 0, "{again:?}");
    server.stop().await;
    let TestServer { db, .. } = server;

    // Only k2: the client secret still authenticates Custody at the token endpoint.
    let server = TestServer::start_on(db, |c| c.master_keys = Some(Secret::new(k2.clone()))).await;
    register_custody(&server.base, &idp);
    let (id, page) = sdk_sign_in(&server, &key, "pat").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert_eq!(session_status(&server, &key, &id).await.body["status"], "complete");
}
