//! The Developer Portal over HTTP, on SQLite and (with `CUSTODY_TEST_POSTGRES_URL`) PostgreSQL:
//! the sign-in and its cookie, the security headers, CSRF refusals, sign-in throttling, secrets
//! shown exactly once, the claim-lock display, and audit rows with the actor `operator:portal`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use custody_tests::backend_test;
use custody_tests::fake_idp::FakeIdp;
use custody_tests::harness::{backends, Backend, TestServer, ADMIN_TOKEN};
use custody_tests::portal::{session_of, PortalClient, PortalPage};
use reqwest::{Method, StatusCode};
use serde_json::Value;

fn assert_security_headers(page: &PortalPage, what: &str) {
    let h = |n: &str| page.headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let csp = h("content-security-policy");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(csp.contains("script-src 'self'"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert!(csp.contains("default-src 'none'"), "{what}: {csp}");
    assert_eq!(h("x-frame-options"), "DENY", "{what}");
    assert_eq!(h("cache-control"), "no-store", "{what}");
    assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
    assert!(!page.html.contains("<script>") && !page.html.contains(" style=\""), "{what}: inline script or style");
}

/// The app id in a portal path of the page (`/portal/apps/{id}/…`).
fn first_app_id(html: &str) -> String {
    let start = html.find("/portal/apps/").expect("an app link") + "/portal/apps/".len();
    html[start..start + 36].to_owned()
}

async fn audit_actors(server: &TestServer, app: &str) -> Vec<(String, String)> {
    let a = server.admin(Method::GET, &format!("/v1/apps/{app}/audit?limit=100"), None).await;
    a.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap().to_owned(), e["actor"].as_str().unwrap().to_owned()))
        .collect()
}

backend_test!(sign_in_sets_a_strict_cookie_stored_as_a_hash_and_sign_out_ends_it);
async fn sign_in_sets_a_strict_cookie_stored_as_a_hash_and_sign_out_ends_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let anonymous = PortalClient::new(&server);
    let form = anonymous.get("/portal").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.html.contains("<label for=\"admin_token\">Admin token</label>"), "{}", form.html);
    assert!(form.html.contains(">Sign in</button>"));
    assert_security_headers(&form, "sign-in form");

    let wrong = anonymous.post("/portal/sign-in", &[("admin_token", "not-the-token")]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "[{backend}]");
    assert!(wrong.html.contains("not the admin token"), "{}", wrong.html);
    assert_eq!(session_of(&wrong), None);

    let right = anonymous.post("/portal/sign-in", &[("admin_token", ADMIN_TOKEN)]).await;
    assert_eq!(right.status, StatusCode::SEE_OTHER);
    assert_eq!(right.location(), "/portal");
    let cookie = right.set_cookies().into_iter().find(|c| c.starts_with("custody_portal=")).unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/portal", "Max-Age=28800"] {
        assert!(cookie.contains(flag), "[{backend}] {cookie} lacks {flag}");
    }
    assert!(!cookie.contains("Secure"), "plain http: no Secure flag: {cookie}");
    let token = session_of(&right).unwrap();
    assert!(token.len() >= 43, "{token}");
    // Only a keyed hash is stored: the token itself finds nothing.
    let store = server.store().await;
    assert_eq!(store.get_portal_session(&token).await.unwrap(), None);

    let client = PortalClient { server: &server, session: Some(token.clone()) };
    let home = client.get("/portal").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.html.contains(">Create app</button>") && home.html.contains(">Sign out</button>"));
    assert_security_headers(&home, "apps page");

    let out = client.submit("/portal", "/portal/sign-out", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(session_of(&out).as_deref(), Some(""), "the cookie is cleared");
    let after = client.get("/portal/apps").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER, "the session is gone on the server too");
}

backend_test!(forms_without_the_sessions_csrf_token_change_nothing);
async fn forms_without_the_sessions_csrf_token_change_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let a = PortalClient::signed_in(&server).await;
    let b = PortalClient::signed_in(&server).await;
    let missing = a.post("/portal/apps", &[("name", "No token")]).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN, "[{backend}]");
    let wrong = a.post("/portal/apps", &[("csrf", "AAAA"), ("name", "Wrong token")]).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let b_token = b.get("/portal").await.csrf();
    let crossed = a.post("/portal/apps", &[("csrf", &b_token), ("name", "Other session's token")]).await;
    assert_eq!(crossed.status, StatusCode::FORBIDDEN, "a token is bound to its session");
    let no_cookie = PortalClient::new(&server).post("/portal/apps", &[("csrf", &b_token), ("name", "x")]).await;
    assert_eq!(no_cookie.status, StatusCode::SEE_OTHER, "signed out: back to the sign-in form");
    let apps = server.admin(Method::GET, "/v1/apps", None).await;
    assert_eq!(apps.body["items"].as_array().unwrap().len(), 0, "[{backend}] nothing was created");
    let ok = a.submit("/portal", "/portal/apps", &[("name", "With token")]).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.html);
}

#[tokio::test]
async fn repeated_wrong_tokens_lock_the_sign_in_out() {
    let server = TestServer::start(backends()[0]).await;
    let client = PortalClient::new(&server);
    for _ in 0..5 {
        let page = client.post("/portal/sign-in", &[("admin_token", "guess")]).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
    // The sixth failure starts the lock-out: now even the right token is refused until it ends.
    let sixth = client.post("/portal/sign-in", &[("admin_token", "guess")]).await;
    assert_eq!(sixth.status, StatusCode::UNAUTHORIZED);
    let locked = client.post("/portal/sign-in", &[("admin_token", ADMIN_TOKEN)]).await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS, "{}", locked.html);
    assert!(locked.html.contains("Too many failed sign-ins"), "{}", locked.html);
    assert!(locked.headers.contains_key("retry-after"));
    assert_eq!(session_of(&locked), None);
}

backend_test!(secrets_are_shown_once_and_changes_are_audited_as_the_portal);
async fn secrets_are_shown_once_and_changes_are_audited_as_the_portal(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let portal = PortalClient::signed_in(&server).await;
    let created = portal.submit("/portal", "/portal/apps", &[("name", "Acme")]).await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(created.html.contains("will not be shown again"));
    let start = created.html.find("<code id=\"secret-value\">").unwrap() + "<code id=\"secret-value\">".len();
    let key = created.html[start..].split('<').next().unwrap().to_owned();
    assert!(key.starts_with("ck_"), "{key}");
    let app = first_app_id(&created.html);
    let base = format!("/portal/apps/{app}");
    for page in ["/portal", &format!("{base}/api-keys"), &format!("{base}/audit")] {
        let html = portal.get(page).await.html;
        assert!(!html.contains(&key), "[{backend}] {page} shows the key again");
    }
    // The key works: it is the app's.
    let me = server.call(Method::GET, "/v1/grants", Some(&key), None, None).await;
    assert_eq!(me.code(), "user_token_missing", "the key was accepted: {:?}", me.body);

    // Identity: Discover, then Add Provider with the pre-filled mappings.
    let identity = format!("{base}/identity");
    let discovered = portal.submit(&identity, &format!("{identity}/discover"), &[("issuer_url", &idp.issuer())]).await;
    assert_eq!(discovered.status, StatusCode::OK, "{}", discovered.html);
    assert!(discovered.html.contains("Custom OIDC") && discovered.html.contains("value=\"sub\""));
    let bad = portal
        .submit(&identity, &format!("{identity}/discover"), &[("issuer_url", "http://127.0.0.1:1/nothing")])
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.html.contains("class=\"field-error\" id=\"issuer_url-error\""), "{}", bad.html);
    let added = portal
        .submit(
            &identity,
            &identity,
            &[
                ("issuer_url", &idp.issuer()),
                ("kind", "custom_oidc"),
                ("user_id_claim", "sub"),
                ("group_claim", "groups"),
                ("role_claim", ""),
                ("audience", idp.audience()),
            ],
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.html);

    // Generated webhook secret: in the enabling response only.
    let enabled = portal.submit(&identity, &format!("{identity}/webhooks/enable"), &[]).await;
    assert_eq!(enabled.status, StatusCode::OK, "{}", enabled.html);
    let start = enabled.html.find("<code id=\"secret-value\">").unwrap() + "<code id=\"secret-value\">".len();
    let secret = enabled.html[start..].split('<').next().unwrap().to_owned();
    assert!(secret.len() >= 32, "{secret}");
    assert!(!portal.get(&identity).await.html.contains(&secret), "[{backend}] the secret is shown again");
    let settings = server.admin(Method::GET, &format!("/v1/apps/{app}/identity-provider/webhook"), None).await;
    assert_eq!(settings.body["enabled"], true);

    // Disable asks first; confirmed, it is done.
    let asked = portal.submit(&identity, &format!("{identity}/webhooks/disable"), &[]).await;
    assert!(asked.html.contains("Disable webhooks?"), "{}", asked.html);
    let settings = server.admin(Method::GET, &format!("/v1/apps/{app}/identity-provider/webhook"), None).await;
    assert_eq!(settings.body["enabled"], true, "not before the confirmation");
    let done = portal.submit(&identity, &format!("{identity}/webhooks/disable"), &[("confirm", "yes")]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);

    let actors = audit_actors(&server, &app).await;
    for action in ["app.create", "idp.create", "webhook.enable", "webhook.disable"] {
        let found = actors.iter().find(|(a, _)| a == action);
        assert_eq!(found.map(|(_, actor)| actor.as_str()), Some("operator:portal"), "[{backend}] {action}: {actors:?}");
    }
    // The admin API still writes `operator`.
    server.admin(Method::POST, &format!("/v1/apps/{app}/api-keys"), Some(serde_json::json!({}))).await;
    let actors = audit_actors(&server, &app).await;
    assert!(actors.iter().any(|(a, actor)| a == "api_key.create" && actor == "operator"), "{actors:?}");
}

backend_test!(mappings_are_editable_until_the_first_sign_in_then_shown_locked);
async fn mappings_are_editable_until_the_first_sign_in_then_shown_locked(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = server.app_with_idp(&idp).await;
    let portal = PortalClient::signed_in(&server).await;
    let identity = format!("/portal/apps/{app}/identity");
    let before = portal.get(&identity).await;
    assert!(before.html.contains(">Save</button>") && !before.html.contains("<strong>Locked</strong>"));
    let saved = portal
        .submit(
            &identity,
            &format!("{identity}/mappings"),
            &[
                ("user_id_claim", "sub"),
                ("group_claim", "groups"),
                ("role_claim", "roles"),
                ("audience", idp.audience()),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.html);
    let config = server.admin(Method::GET, &format!("/v1/apps/{app}/identity-provider"), None).await;
    assert_eq!(config.body["claims"]["role"], "roles", "[{backend}] {:?}", config.body);

    let me = server.runtime(Method::GET, "/v1/me", &key, &idp.token_for("alice"), None).await;
    assert_eq!(me.status, StatusCode::OK, "{:?}", me.body);
    let after = portal.get(&identity).await;
    assert!(after.html.contains("<strong>Locked</strong> since 20"), "[{backend}] {}", after.html);
    assert!(
        !after.html.contains("action=\"/portal/apps/") || !after.html.contains("/mappings\""),
        "no mappings form after the lock"
    );
    assert!(after.html.contains(" UTC"), "times in UTC");
    // A stale form posted anyway is refused by the use case.
    let refused = portal.submit(&identity, &format!("{identity}/mappings"), &[("user_id_claim", "email")]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.html);
    let config = server.admin(Method::GET, &format!("/v1/apps/{app}/identity-provider"), None).await;
    assert_eq!(config.body["claims"]["user_id"], "sub");
    let users = portal.get(&format!("/portal/apps/{app}/users")).await;
    assert!(users.html.contains(">alice</a>"), "{}", users.html);
    let _: Value = config.body;
}

#[tokio::test]
async fn the_landing_page_links_to_the_portal_and_the_api() {
    let server = TestServer::start(backends()[0]).await;
    let page = PortalClient::new(&server).get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    for link in ["href=\"/portal\"", "href=\"/openapi.json\"", "href=\"/healthz\"", "href=\"/readyz\""] {
        assert!(page.html.contains(link), "{link}");
    }
    assert_security_headers(&page, "landing");
    let css = PortalClient::new(&server).get("/portal/static/portal.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.headers["content-type"].to_str().unwrap().starts_with("text/css"));
}
