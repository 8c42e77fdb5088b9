#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The grant vault over HTTP, against the contract in `docs/api.md` (Providers and policies,
//! Grants and tokens, Operator views): providers and policies, the connect flow through a fake
//! OAuth provider, token hand-out and single-flight refresh, refresh failures, revocation and the
//! revocation outbox, imports, operator views and audit rows, sealing and key rotation.
//!
//! Every test runs its body once per backend in [`backends`] (SQLite always, PostgreSQL when
//! `CUSTODY_TEST_POSTGRES_URL` is set), on a fresh server and database each time.

use base64::Engine as _;
use custody_identity::audit::{AuditEntry, AuditOutcome};
use custody_identity::ports::Random as _;
use custody_identity::{AppId, Secret};
use custody_providers::crypto::KeyRing;
use custody_providers::OsRandom;
use custody_server::{Config, RunningServer};
use custody_store::prelude::*;
use custody_store::testing::TestDatabase;
use custody_store::Backend;
use custody_tests::backend_test;
use custody_tests::browser_cookies::CookieJar;
use custody_tests::fake_idp::{Alg, FakeIdp};
use custody_tests::fake_oauth::{Failure, FakeOAuth, CLIENT_ID, CLIENT_SECRET};
use custody_tests::harness::{Answer, TestServer, ADMIN_TOKEN, MASTER_KEYS};
use custody_vault::grant::{Credential, TokenKind};
use custody_vault::Cipher as _;
use custody_vault::GrantId;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Where the connect flow sends the browser back to; never fetched, only read from `Location`.
const RETURN_URL: &str = "http://127.0.0.1:1/done";
/// The provider every test configures (pointing at its own [`FakeOAuth`]).
const PROVIDER: &str = "acme";

// ----- plumbing -----

/// An HTTP client for one server (the harness's [`TestServer`] or a second instance).
#[derive(Debug, Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn of(s: &TestServer) -> Api {
        Api { http: s.http.clone(), base: s.base.clone() }
    }

    fn for_base(base: &str) -> Api {
        Api {
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            base: base.to_owned(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        user_token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        custody_tests::harness::send(&self.http, method, &format!("{}{}", self.base, path), bearer, user_token, body)
            .await
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.call(method, path, Some(ADMIN_TOKEN), None, body).await
    }

    async fn token(&self, key: &str, user: &str, body: Value) -> Answer {
        self.call(Method::POST, "/v1/token", Some(key), Some(user), Some(body)).await
    }
}

/// A second server instance on an existing database (the harness's `TestServer::start_on`
/// takes the `TestDatabase` by value, so two live instances on one database are built here).
struct Peer {
    server: Option<RunningServer>,
    api: Api,
    _dir: tempfile::TempDir,
}

impl Peer {
    async fn start(db_url: &str, master_keys: &str) -> Result<Peer, custody_server::state::StartError> {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::for_tests(db_url, dir.path(), ADMIN_TOKEN, master_keys);
        let server = custody_server::start(config).await?;
        let api = Api::for_base(&server.public_url);
        Ok(Peer { server: Some(server), api, _dir: dir })
    }

    async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

/// One test's world: a server, a fake IdP attached to an app (group claim `groups`, role claim
/// `roles`), a fake OAuth provider configured as [`PROVIDER`].
struct World {
    s: TestServer,
    api: Api,
    idp: FakeIdp,
    oauth: FakeOAuth,
    app: String,
    key: String,
    backend: Backend,
}

impl World {
    async fn new(backend: Backend) -> World {
        Self::on(TestServer::start(backend).await).await
    }

    async fn on(s: TestServer) -> World {
        let backend = s.db.backend();
        let idp = FakeIdp::start().await;
        let oauth = FakeOAuth::start().await;
        let (app, key) = s.create_app("Vault app").await;
        s.attach_idp(&app, &idp, json!({"claims": {"group": "groups", "role": "roles"}})).await;
        let api = Api::of(&s);
        let w = World { s, api, idp, oauth, app, key, backend };
        w.put_provider(PROVIDER).await;
        w
    }

    async fn put_provider(&self, name: &str) -> Answer {
        let a = self
            .api
            .admin(
                Method::PUT,
                &format!("/v1/apps/{}/providers/{name}", self.app),
                Some(self.oauth.provider_body(&["read", "write"])),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "[{}] put provider: {:?}", self.backend, a.body);
        a
    }

    fn user(&self, sub: &str) -> String {
        self.user_with(sub, &[], &[])
    }

    fn user_with(&self, sub: &str, groups: &[&str], roles: &[&str]) -> String {
        let mut claims = self.idp.claims_for(sub);
        claims["groups"] = json!(groups);
        claims["roles"] = json!(roles);
        self.idp.sign(claims, Alg::Rs256)
    }

    async fn token(&self, user: &str, body: Value) -> Answer {
        self.api.token(&self.key, user, body).await
    }

    async fn token_for(&self, user: &str) -> Answer {
        self.token(user, json!({"provider": PROVIDER})).await
    }

    async fn my_grants(&self, user: &str) -> Vec<Value> {
        let a = self.api.call(Method::GET, "/v1/grants", Some(&self.key), Some(user), None).await;
        assert_eq!(a.status, StatusCode::OK, "[{}] GET /v1/grants: {:?}", self.backend, a.body);
        assert_no_tokens(&a.body);
        a.body["items"].as_array().unwrap().clone()
    }

    /// Opens a connect session for `user` (`POST /v1/connect/sessions` with `body`).
    async fn start_connect(&self, user: &str, body: Value) -> Answer {
        self.api.call(Method::POST, "/v1/connect/sessions", Some(&self.key), Some(user), Some(body)).await
    }

    async fn connect(&self, user: &str) -> Connected {
        connect_flow(&self.api, &self.key, user, PROVIDER).await
    }

    async fn connect_ok(&self, user: &str) -> String {
        let c = self.connect(user).await;
        assert_eq!(c.param("status"), Some("connected"), "[{}] connect: {}", self.backend, c.location);
        c.param("grant_id").expect("grant_id").to_owned()
    }

    /// Operator import of a grant for `subject`; returns the grant object.
    async fn import(
        &self,
        subject: &str,
        provider: &str,
        access: &str,
        refresh: Option<&str>,
        expires_in: i64,
    ) -> Value {
        let mut body =
            json!({"subject": subject, "provider": provider, "access_token": access, "expires_in": expires_in});
        if let Some(r) = refresh {
            body["refresh_token"] = json!(r);
        }
        let a = self.api.admin(Method::POST, &format!("/v1/apps/{}/grants", self.app), Some(body)).await;
        assert_eq!(a.status, StatusCode::CREATED, "[{}] import: {:?}", self.backend, a.body);
        a.body
    }

    async fn audit(&self, action: &str) -> Vec<Value> {
        let a = self.api.admin(Method::GET, &format!("/v1/apps/{}/audit?action={action}", self.app), None).await;
        assert_eq!(a.status, StatusCode::OK, "[{}] audit: {:?}", self.backend, a.body);
        a.body["items"].as_array().unwrap().clone()
    }

    /// Drains the outbox in-process until `done` holds (10 s at most).
    async fn drain_until(&self, done: impl Fn(&FakeOAuth) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.s.state().vault().drain_outbox(100).await.expect("drain outbox");
            if done(&self.oauth) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "[{}] outbox not drained in time; revoked so far: {:?}",
                self.backend,
                self.oauth.revoked_tokens()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// No token value of the fake provider in a body that must never carry one.
fn assert_no_tokens(body: &Value) {
    let text = body.to_string();
    assert!(
        !text.contains("fake-access-") && !text.contains("fake-refresh-") && !text.contains(CLIENT_SECRET),
        "a token leaked: {text}"
    );
}

/// Where a connect flow ended: the `return_url` the browser was sent to, plus the callback URL
/// the provider sent it to (for replays).
struct Connected {
    location: String,
    params: HashMap<String, String>,
    callback: String,
}

impl Connected {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// The test browser's cookies (the connect flow binds itself to the browser with one per flow).
static BROWSER: CookieJar = CookieJar::new();

async fn get_redirect(http: &reqwest::Client, url: &str) -> (StatusCode, String) {
    let resp = BROWSER.get(http, url).await;
    let status = resp.status();
    let location = resp.headers().get("location").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, location)
}

/// Creates a connect session and follows the redirects the browser would: Custody's start URL,
/// the provider's authorization endpoint, Custody's callback.
async fn connect_flow(api: &Api, key: &str, user: &str, provider: &str) -> Connected {
    let a = api
        .call(
            Method::POST,
            "/v1/connect/sessions",
            Some(key),
            Some(user),
            Some(json!({"provider": provider, "return_url": RETURN_URL})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "connect session: {:?}", a.body);
    assert!(a.body["expires_at"].is_string(), "{:?}", a.body);
    let connect_url = a.body["connect_url"].as_str().unwrap().to_owned();
    assert!(connect_url.starts_with(&format!("{}/v1/connect/start?state=", api.base)), "{connect_url}");
    let (status, authorize) = get_redirect(&api.http, &connect_url).await;
    assert_eq!(status, StatusCode::FOUND, "connect start");
    let parsed = url::Url::parse(&authorize).unwrap();
    let q: HashMap<String, String> = parsed.query_pairs().into_owned().collect();
    assert_eq!(q.get("code_challenge_method").map(String::as_str), Some("S256"), "{authorize}");
    assert_eq!(q.get("client_id").map(String::as_str), Some(CLIENT_ID), "{authorize}");
    assert!(!authorize.contains(CLIENT_SECRET), "the client secret must not travel in the browser: {authorize}");
    let (status, callback) = get_redirect(&api.http, &authorize).await;
    assert_eq!(status, StatusCode::FOUND, "provider authorize");
    assert!(callback.starts_with(&format!("{}/v1/connect/callback?", api.base)), "{callback}");
    let (status, location) = get_redirect(&api.http, &callback).await;
    assert_eq!(status, StatusCode::FOUND, "connect callback");
    assert!(location.starts_with(RETURN_URL), "{location}");
    assert!(!location.contains("fake-access-") && !location.contains("fake-refresh-"), "{location}");
    let params = url::Url::parse(&location).unwrap().query_pairs().into_owned().collect();
    Connected { location, params, callback }
}

fn access_token(a: &Answer) -> String {
    a.body["access_token"].as_str().unwrap_or_else(|| panic!("no access token in {:?}", a.body)).to_owned()
}

/// FakeOAuth names each pair `fake-access-N` / `fake-refresh-N`.
fn refresh_twin(access: &str) -> String {
    access.replace("fake-access-", "fake-refresh-")
}

/// A second 32-byte key for rotation tests.
fn second_key() -> String {
    let bytes: Vec<u8> = (32u8..64).collect();
    format!("k2:{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Runs one SQL statement on a test database with the backend's command-line client (the
/// store's `testing` module has no raw-SQL helper) and returns its output (rows `|`-separated);
/// `None` when the client is not installed.
fn sql_cli(db: &TestDatabase, sql: &str) -> Option<String> {
    let (program, args): (&str, Vec<String>) = match db.backend() {
        Backend::Sqlite => {
            let path = db.url().trim_start_matches("sqlite://").trim_start_matches("sqlite:").to_owned();
            ("sqlite3", vec![path, sql.to_owned()])
        }
        Backend::Postgres => (
            "psql",
            vec![
                db.url().to_owned(),
                "-tAq".into(),
                "-v".into(),
                "ON_ERROR_STOP=1".into(),
                "-c".into(),
                sql.to_owned(),
            ],
        ),
    };
    match std::process::Command::new(program).args(&args).output() {
        Ok(out) => {
            assert!(out.status.success(), "{program} failed: {}", String::from_utf8_lossy(&out.stderr));
            Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        }
        // A missing client must fail the test, never skip a check silently.
        Err(e) => panic!("{program} is needed for this check (apt-get install sqlite3 postgresql-client): {e}"),
    }
}

fn raw_sql(db: &TestDatabase, sql: &str) -> bool {
    sql_cli(db, sql).is_some()
}

// ----- 1. providers and policies (operator) -----

backend_test!(providers_and_policies);
async fn providers_and_policies(backend: Backend) {
    let w = World::new(backend).await;
    let app = &w.app;
    let b = backend;

    // Explicit URLs: 200, the provider, never the secret.
    let a = w.put_provider("crm").await;
    assert_eq!(a.body["provider"], "crm", "[{b}] {:?}", a.body);
    assert_eq!(a.body["authorization_url"], w.oauth.authorization_url());
    assert_eq!(a.body["token_url"], w.oauth.token_url());
    assert_eq!(a.body["revocation_url"], w.oauth.revocation_url());
    assert_eq!(a.body["client_id"], CLIENT_ID);
    assert_eq!(a.body["scopes"], json!(["read", "write"]));
    assert!(a.body.get("client_secret").is_none(), "[{b}] {:?}", a.body);
    assert!(!a.body.to_string().contains(CLIENT_SECRET), "[{b}] {:?}", a.body);
    let created_at = a.body["created_at"].as_str().unwrap().to_owned();

    // Without the admin token: 401.
    let a = w
        .api
        .call(Method::PUT, &format!("/v1/apps/{app}/providers/x"), Some(&w.key), None, Some(w.oauth.provider_body(&[])))
        .await;
    assert_eq!((a.status, a.code()), (StatusCode::UNAUTHORIZED, "unauthorized"), "[{b}] {:?}", a.body);

    // A preset fills the endpoints and default scopes.
    let a = w
        .api
        .admin(
            Method::PUT,
            &format!("/v1/apps/{app}/providers/gh"),
            Some(json!({"preset": "github", "client_id": "gh-client", "client_secret": "gh-secret-value"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(a.body["authorization_url"], "https://github.com/login/oauth/authorize");
    assert_eq!(a.body["token_url"], "https://github.com/login/oauth/access_token");
    assert_eq!(a.body["revocation_url"], Value::Null);
    assert_eq!(a.body["scopes"], json!(["read:user"]));
    assert!(!a.body.to_string().contains("gh-secret-value"));

    // Unknown preset: 400.
    let a = w
        .api
        .admin(
            Method::PUT,
            &format!("/v1/apps/{app}/providers/ms"),
            Some(json!({"preset": "myspace", "client_id": "c", "client_secret": "s"})),
        )
        .await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_request"), "[{b}] {:?}", a.body);
    assert!(a.body["detail"].as_str().unwrap().contains("preset"), "[{b}] {:?}", a.body);
    // A new provider without a client secret: 400.
    let a = w
        .api
        .admin(
            Method::PUT,
            &format!("/v1/apps/{app}/providers/nosecret"),
            Some(json!({"preset": "google", "client_id": "c"})),
        )
        .await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_request"), "[{b}] {:?}", a.body);

    // GET one, GET list (by name), unknown 404.
    let a = w.api.admin(Method::GET, &format!("/v1/apps/{app}/providers/crm"), None).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(a.body["token_url"], w.oauth.token_url());
    assert!(!a.body.to_string().contains(CLIENT_SECRET));
    let a = w.api.admin(Method::GET, &format!("/v1/apps/{app}/providers"), None).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    let names: Vec<&str> =
        a.body["items"].as_array().unwrap().iter().map(|p| p["provider"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["acme", "crm", "gh"], "[{b}]");
    assert!(!a.body.to_string().contains(CLIENT_SECRET) && !a.body.to_string().contains("gh-secret-value"));
    let a = w.api.admin(Method::GET, &format!("/v1/apps/{app}/providers/nope"), None).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "provider_not_found"), "[{b}] {:?}", a.body);

    // PUT again without the secret: kept (the connect flow still authenticates at the token
    // endpoint), created_at unchanged, scopes updated.
    let mut body = w.oauth.provider_body(&["read"]);
    body.as_object_mut().unwrap().remove("client_secret");
    let a = w.api.admin(Method::PUT, &format!("/v1/apps/{app}/providers/{PROVIDER}"), Some(body)).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(a.body["scopes"], json!(["read"]));
    let a2 = w.api.admin(Method::PUT, &format!("/v1/apps/{app}/providers/crm"), Some(json!({"authorization_url": w.oauth.authorization_url(), "token_url": w.oauth.token_url(), "client_id": CLIENT_ID}))).await;
    assert_eq!(a2.status, StatusCode::OK, "[{b}] {:?}", a2.body);
    assert_eq!(a2.body["created_at"].as_str().unwrap(), created_at, "[{b}] created_at must survive an update");
    let alice = w.user("alice");
    let grant = w.connect_ok(&alice).await;
    let grants = w.my_grants(&alice).await;
    assert_eq!(grants[0]["scopes"], json!(["read"]), "[{b}] {grants:?}");

    // Policies: PUT, GET, list, DELETE.
    let path = format!("/v1/apps/{app}/policies/{PROVIDER}");
    let a = w.api.admin(Method::PUT, &path, Some(json!({"allow_groups": ["eng"], "allow_roles": ["admin"]}))).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(a.body["allow_groups"], json!(["eng"]));
    assert_eq!(a.body["allow_roles"], json!(["admin"]));
    let a = w.api.admin(Method::GET, &path, None).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(a.body["provider"], PROVIDER);
    assert_eq!(a.body["allow_groups"], json!(["eng"]));
    let a =
        w.api.admin(Method::PUT, &format!("/v1/apps/{app}/policies/crm"), Some(json!({"allow_roles": ["ops"]}))).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(a.body["allow_groups"], json!([]));
    let a = w.api.admin(Method::GET, &format!("/v1/apps/{app}/policies"), None).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    let names: Vec<&str> =
        a.body["items"].as_array().unwrap().iter().map(|p| p["provider"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["acme", "crm"], "[{b}] {:?}", a.body);
    let a = w.api.admin(Method::DELETE, &path, None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "[{b}] {:?}", a.body);
    let a = w.api.admin(Method::GET, &path, None).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "policy_not_found"), "[{b}] {:?}", a.body);
    let a = w.api.admin(Method::DELETE, &path, None).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "policy_not_found"), "[{b}] {:?}", a.body);
    // A policy for a provider that does not exist: 404.
    let a = w
        .api
        .admin(Method::PUT, &format!("/v1/apps/{app}/policies/nope"), Some(json!({"allow_groups": ["eng"]})))
        .await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "provider_not_found"), "[{b}] {:?}", a.body);

    // DELETE a provider: 204, its grants revoked, its policy gone, a second DELETE 404.
    let a = w.api.admin(Method::DELETE, &format!("/v1/apps/{app}/providers/{PROVIDER}"), None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "[{b}] {:?}", a.body);
    let grants = w.my_grants(&alice).await;
    assert_eq!(grants.len(), 1, "[{b}] {grants:?}");
    assert_eq!(grants[0]["id"], grant.as_str());
    assert_eq!(grants[0]["status"], "revoked", "[{b}] {grants:?}");
    assert!(grants[0]["revoked_at"].is_string(), "[{b}] {grants:?}");
    let a = w.token_for(&alice).await;
    assert_eq!(a.status.as_u16() / 100, 4, "[{b}] a deleted provider hands out nothing: {:?}", a.body);
    assert!(a.body.get("access_token").is_none());
    let a = w.api.admin(Method::GET, &format!("/v1/apps/{app}/providers/{PROVIDER}"), None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "[{b}] {:?}", a.body);
    let a = w.api.admin(Method::DELETE, &format!("/v1/apps/{app}/providers/{PROVIDER}"), None).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "provider_not_found"), "[{b}] {:?}", a.body);
    let a = w.api.admin(Method::GET, &format!("/v1/apps/{app}/policies"), None).await;
    let names: Vec<&str> =
        a.body["items"].as_array().unwrap().iter().map(|p| p["provider"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["crm"], "[{b}] the deleted provider's policy goes with it: {:?}", a.body);
    // The provider has a revocation URL: its tokens are revoked there.
    w.drain_until(|o| o.revoked_tokens().len() >= 2).await;
}

// ----- 2. connect, hand-out, refresh, revoke -----

backend_test!(connect_token_refresh_revoke);
async fn connect_token_refresh_revoke(backend: Backend) {
    let w = World::new(backend).await;
    let b = backend;
    let alice = w.user("alice");

    // A fresh grant (expires in an hour): the hand-out returns the token as issued.
    let grant = w.connect_ok(&alice).await;
    assert_eq!(w.oauth.code_exchanges(), 1);
    let grants = w.my_grants(&alice).await;
    assert_eq!(grants.len(), 1, "[{b}] {grants:?}");
    let g = &grants[0];
    assert_eq!(g["id"], grant.as_str());
    assert_eq!(g["provider"], PROVIDER);
    assert_eq!(g["status"], "active");
    assert_eq!(g["scopes"], json!(["read", "write"]), "[{b}] {g:?}");
    assert!(g["user_id"].is_string() && g["created_at"].is_string() && g["revoked_at"].is_null(), "[{b}] {g:?}");
    for field in
        ["id", "provider", "status", "scopes", "account", "user_id", "created_at", "last_used_at", "revoked_at"]
    {
        assert!(g.get(field).is_some(), "[{b}] grant lacks {field}: {g:?}");
    }

    let a = w.token_for(&alice).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(a.headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"), "[{b}]");
    let first = access_token(&a);
    assert!(first.starts_with("fake-access-"), "[{b}] {first}");
    assert_eq!(a.body["token_type"], "Bearer");
    assert_eq!(a.body["grant_id"], grant.as_str());
    assert_eq!(a.body["provider"], PROVIDER);
    assert_eq!(a.body["scopes"], json!(["read", "write"]));
    assert!(a.body["expires_at"].is_string(), "[{b}] {:?}", a.body);
    assert!(a.body.get("refresh_token").is_none(), "[{b}] the refresh token never leaves: {:?}", a.body);
    assert!(!a.body.to_string().contains("fake-refresh-"));
    assert_eq!(w.oauth.refresh_calls(), 0, "[{b}] no refresh for a token valid for an hour");
    // By grant id: the same token.
    let a = w.token(&alice, json!({"grant_id": grant})).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(access_token(&a), first);
    // Neither or both selectors: 400.
    let a = w.token(&alice, json!({})).await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_request"), "[{b}] {:?}", a.body);
    // No grant for that provider: 404.
    w.put_provider("other").await;
    let a = w.token(&alice, json!({"provider": "other"})).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "grant_not_found"), "[{b}] {:?}", a.body);
    // last_used_at is set by the hand-out.
    let grants = w.my_grants(&alice).await;
    assert!(grants[0]["last_used_at"].is_string(), "[{b}] {grants:?}");

    // Reconnect while the provider issues tokens expiring within the refresh window (30 s < 60 s):
    // the next hand-out refreshes once.
    w.oauth.set_expires_in(30);
    let again = w.connect_ok(&alice).await;
    assert_eq!(again, grant, "[{b}] reconnect keeps the grant");
    w.oauth.set_expires_in(3600);
    let a = w.token_for(&alice).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    let refreshed = access_token(&a);
    assert_eq!(w.oauth.refresh_calls(), 1, "[{b}]");
    assert_eq!(w.oauth.refresh_reuse(), 0, "[{b}]");
    assert_ne!(refreshed, first, "[{b}]");
    // The refreshed token is good for an hour: no further refresh.
    let a = w.token_for(&alice).await;
    assert_eq!(access_token(&a), refreshed, "[{b}]");
    assert_eq!(w.oauth.refresh_calls(), 1, "[{b}]");

    // Revoke: 200 revoked, then 410 grant_revoked on both selectors.
    let a = w.api.call(Method::DELETE, &format!("/v1/grants/{grant}"), Some(&w.key), Some(&alice), None).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(a.body["id"], grant.as_str());
    assert_eq!(a.body["status"], "revoked");
    assert!(a.body["revoked_at"].is_string(), "[{b}] {:?}", a.body);
    assert_no_tokens(&a.body);
    let a = w.token_for(&alice).await;
    assert_eq!((a.status, a.code()), (StatusCode::GONE, "grant_revoked"), "[{b}] {:?}", a.body);
    let a = w.token(&alice, json!({"grant_id": grant})).await;
    assert_eq!((a.status, a.code()), (StatusCode::GONE, "grant_revoked"), "[{b}] {:?}", a.body);
    // Revoking again answers the revoked grant.
    let a = w.api.call(Method::DELETE, &format!("/v1/grants/{grant}"), Some(&w.key), Some(&alice), None).await;
    assert_eq!((a.status, a.body["status"].as_str()), (StatusCode::OK, Some("revoked")), "[{b}] {:?}", a.body);
    let grants = w.my_grants(&alice).await;
    assert_eq!(grants[0]["status"], "revoked", "[{b}] {grants:?}");

    // The outbox revokes both stored tokens at the provider, and the tokens the reconnect and
    // the rotating refresh superseded.
    let rt = refresh_twin(&refreshed);
    w.drain_until(|o| {
        let r = o.revoked_tokens();
        r.contains(&refreshed) && r.contains(&rt) && r.contains(&first) && r.contains(&refresh_twin(&first))
    })
    .await;

    // A user can connect again after revoking: a new grant.
    let fresh = w.connect_ok(&alice).await;
    assert_ne!(fresh, grant, "[{b}] a revoked grant is final; reconnecting creates a new one");
    let a = w.token_for(&alice).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(a.body["grant_id"], fresh.as_str());
}

// ----- 3. reconnect -----

backend_test!(reconnect_updates_the_active_grant);
async fn reconnect_updates_the_active_grant(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice");
    let g1 = w.connect_ok(&alice).await;
    let t1 = access_token(&w.token_for(&alice).await);
    let created = w.my_grants(&alice).await[0]["created_at"].clone();
    let g2 = w.connect_ok(&alice).await;
    assert_eq!(g1, g2, "[{backend}] the same grant id");
    let t2 = access_token(&w.token_for(&alice).await);
    assert_ne!(t1, t2, "[{backend}] new tokens after reconnecting");
    assert_eq!(w.oauth.code_exchanges(), 2);
    let grants = w.my_grants(&alice).await;
    assert_eq!(grants.len(), 1, "[{backend}] {grants:?}");
    assert_eq!(grants[0]["status"], "active");
    assert_eq!(grants[0]["created_at"], created, "[{backend}]");
    // Another user connecting gets a grant of their own.
    let bob = w.user("bob");
    let g3 = w.connect_ok(&bob).await;
    assert_ne!(g3, g1, "[{backend}]");
    assert_eq!(access_token(&w.token_for(&alice).await), t2, "[{backend}] bob's connect leaves alice's grant alone");
}

// ----- 4. connect failures -----

backend_test!(connect_failures);
async fn connect_failures(backend: Backend) {
    let w = World::new(backend).await;
    let b = backend;
    let alice = w.user("alice");

    // Consent denied.
    w.oauth.deny_consent(true);
    let c = w.connect(&alice).await;
    assert_eq!(c.param("status"), Some("error"), "[{b}] {}", c.location);
    assert_eq!(c.param("error"), Some("access_denied"), "[{b}] {}", c.location);
    assert_eq!(c.param("grant_id"), None, "[{b}] {}", c.location);
    assert!(w.my_grants(&alice).await.is_empty(), "[{b}]");
    w.oauth.deny_consent(false);

    // The provider's token endpoint fails.
    w.oauth.fail_next_token_calls(&[Failure::ServerError]);
    let c = w.connect(&alice).await;
    assert_eq!(c.param("status"), Some("error"), "[{b}] {}", c.location);
    assert_eq!(c.param("error"), Some("provider_error"), "[{b}] {}", c.location);
    assert!(w.my_grants(&alice).await.is_empty(), "[{b}]");
    w.oauth.fail_next_token_calls(&[Failure::InvalidGrant]);
    let c = w.connect(&alice).await;
    assert_eq!(c.param("status"), Some("error"), "[{b}] {}", c.location);
    assert!(w.my_grants(&alice).await.is_empty(), "[{b}]");
    // Failed connects are audited.
    let rows = w.audit("grant.connect").await;
    assert!(rows.len() >= 3 && rows.iter().all(|r| r["outcome"] == "failure"), "[{b}] {rows:?}");

    // A state is single use: replaying the callback is 400 invalid_state and changes nothing.
    let c = w.connect(&alice).await;
    assert_eq!(c.param("status"), Some("connected"), "[{b}] {}", c.location);
    let (status, location) = get_redirect(&w.api.http, &c.callback).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "[{b}] replayed callback went to {location}");
    let resp = w.api.http.get(&c.callback).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "invalid_state", "[{b}] {body:?}");
    assert_eq!(w.my_grants(&alice).await.len(), 1, "[{b}]");
    assert_eq!(w.oauth.code_exchanges(), 3, "[{b}] a replay never reaches the provider");
    // Unknown states, at the start and at the callback.
    let a = w.api.call(Method::GET, "/v1/connect/start?state=made-up", None, None, None).await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_state"), "[{b}] {:?}", a.body);
    let a = w.api.call(Method::GET, "/v1/connect/callback?state=made-up&code=x", None, None, None).await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_state"), "[{b}] {:?}", a.body);

    // Session creation checks: unknown provider, bad return URL, no user token.
    let a = w.start_connect(&alice, json!({"provider": "nope", "return_url": RETURN_URL})).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "provider_not_found"), "[{b}] {:?}", a.body);
    let a = w.start_connect(&alice, json!({"provider": PROVIDER, "return_url": "javascript:alert(1)"})).await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_request"), "[{b}] {:?}", a.body);
    let a = w
        .api
        .call(
            Method::POST,
            "/v1/connect/sessions",
            Some(&w.key),
            None,
            Some(json!({"provider": PROVIDER, "return_url": RETURN_URL})),
        )
        .await;
    assert_eq!((a.status, a.code()), (StatusCode::UNAUTHORIZED, "user_token_missing"), "[{b}] {:?}", a.body);
}

// ----- 5. single-flight refresh -----

backend_test!(concurrent_handouts_share_one_refresh);
async fn concurrent_handouts_share_one_refresh(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice");
    w.oauth.set_expires_in(30);
    w.connect_ok(&alice).await;
    w.oauth.set_expires_in(3600);
    w.oauth.set_refresh_delay(Duration::from_millis(200));
    let answers = race(vec![(w.api.clone(), 50)], &w.key, &alice).await;
    check_race(&w, &answers, backend, "one instance");
}

backend_test!(concurrent_handouts_on_two_instances_share_one_refresh);
async fn concurrent_handouts_on_two_instances_share_one_refresh(backend: Backend) {
    if backend != Backend::Postgres {
        return;
    }
    let w = World::new(backend).await;
    let alice = w.user("alice");
    w.oauth.set_expires_in(30);
    w.connect_ok(&alice).await;
    w.oauth.set_expires_in(3600);
    w.oauth.set_refresh_delay(Duration::from_millis(200));
    let mut peer = Peer::start(w.s.db.url(), MASTER_KEYS).await.expect("second instance starts");
    // Warm up the second instance (JWKS, API key) without touching the grant.
    let a = peer.api.call(Method::GET, "/v1/me", Some(&w.key), Some(&alice), None).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let answers = race(vec![(w.api.clone(), 25), (peer.api.clone(), 25)], &w.key, &alice).await;
    check_race(&w, &answers, backend, "two instances");
    peer.stop().await;
}

/// Fires `n` hand-outs at each API at once; returns every (status, body).
async fn race(apis: Vec<(Api, usize)>, key: &str, user: &str) -> Vec<(StatusCode, Value)> {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(apis.iter().map(|(_, n)| n).sum()));
    let mut tasks = Vec::new();
    for (api, n) in apis {
        for _ in 0..n {
            let (api, key, user, barrier) = (api.clone(), key.to_owned(), user.to_owned(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let a = api.token(&key, &user, json!({"provider": PROVIDER})).await;
                (a.status, a.body)
            }));
        }
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn check_race(w: &World, answers: &[(StatusCode, Value)], backend: Backend, what: &str) {
    for (status, body) in answers {
        assert_eq!(*status, StatusCode::OK, "[{backend}, {what}] {body:?}");
    }
    let tokens: std::collections::BTreeSet<&str> =
        answers.iter().map(|(_, b)| b["access_token"].as_str().unwrap()).collect();
    assert_eq!(tokens.len(), 1, "[{backend}, {what}] every caller gets the one refreshed token: {tokens:?}");
    assert_eq!(w.oauth.refresh_calls(), 1, "[{backend}, {what}] exactly one refresh");
    assert_eq!(w.oauth.refresh_reuse(), 0, "[{backend}, {what}] a refresh token is never spent twice");
}

// ----- 6. refresh failures -----

backend_test!(refresh_failures);
async fn refresh_failures(backend: Backend) {
    let w = World::new(backend).await;
    let b = backend;
    w.oauth.set_expires_in(30);

    // invalid_grant: 410 reauth_required, the grant becomes expired.
    let alice = w.user("alice");
    let ga = w.connect_ok(&alice).await;
    w.oauth.fail_next_token_calls(&[Failure::InvalidGrant]);
    let a = w.token_for(&alice).await;
    assert_eq!((a.status, a.code()), (StatusCode::GONE, "reauth_required"), "[{b}] {:?}", a.body);
    assert_eq!(w.oauth.refresh_calls(), 1);
    let grants = w.my_grants(&alice).await;
    assert_eq!(
        (grants[0]["id"].as_str(), grants[0]["status"].as_str()),
        (Some(ga.as_str()), Some("expired")),
        "[{b}] {grants:?}"
    );
    let a = w.token_for(&alice).await;
    assert_eq!((a.status, a.code()), (StatusCode::GONE, "reauth_required"), "[{b}] {:?}", a.body);
    assert_eq!(w.oauth.refresh_calls(), 1, "[{b}] an expired grant does not call the provider again");
    let rows = w.audit("token.refresh").await;
    assert!(rows.iter().any(|r| r["grant_id"] == ga.as_str() && r["outcome"] == "failure"), "[{b}] {rows:?}");
    // Reconnecting after expiry gives an active grant again.
    w.oauth.set_expires_in(3600);
    w.connect_ok(&alice).await;
    let a = w.token_for(&alice).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    w.oauth.set_expires_in(30);

    // A transient provider failure while the access token has not expired yet: the current
    // token is handed out; the next hand-out refreshes again.
    let erin = w.user("erin");
    w.connect_ok(&erin).await;
    let calls = w.oauth.refresh_calls();
    w.oauth.fail_next_token_calls(&[Failure::ServerError]);
    let a = w.token_for(&erin).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] the still-valid token: {:?}", a.body);
    assert_eq!(w.oauth.refresh_calls(), calls + 1, "[{b}]");
    let again = w.token_for(&erin).await;
    assert_eq!(again.status, StatusCode::OK, "[{b}] {:?}", again.body);
    assert_ne!(access_token(&a), access_token(&again), "[{b}] refreshed once the provider is back");

    // A transient provider failure once the access token has expired: 502 provider_error, the
    // grant stays active, later works.
    w.oauth.set_expires_in(0);
    let bob = w.user("bob");
    let gb = w.connect_ok(&bob).await;
    let calls = w.oauth.refresh_calls();
    w.oauth.fail_next_token_calls(&[Failure::ServerError]);
    let a = w.token_for(&bob).await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_GATEWAY, "provider_error"), "[{b}] {:?}", a.body);
    assert_no_tokens(&a.body);
    w.oauth.set_expires_in(30);
    let grants = w.my_grants(&bob).await;
    assert_eq!(
        (grants[0]["id"].as_str(), grants[0]["status"].as_str()),
        (Some(gb.as_str()), Some("active")),
        "[{b}] {grants:?}"
    );
    let a = w.token_for(&bob).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(w.oauth.refresh_calls(), calls + 2);
    assert_eq!(w.oauth.refresh_reuse(), 0, "[{b}]");

    // An access token that has expired, with no refresh token to renew it: 410 reauth_required.
    // (The grant is not marked `expired` in that case; see the report.)
    let (access, _) = w.oauth.issue_tokens();
    w.import("dave", PROVIDER, &access, None, 0).await;
    let a = w.token_for(&w.user("dave")).await;
    assert_eq!((a.status, a.code()), (StatusCode::GONE, "reauth_required"), "[{b}] {:?}", a.body);
    assert_no_tokens(&a.body);

    // A provider that issues no new refresh token: the old one is kept and used again.
    w.oauth.set_rotate_refresh_tokens(false);
    let carol = w.user("carol");
    w.connect_ok(&carol).await;
    let calls = w.oauth.refresh_calls();
    let a1 = w.token_for(&carol).await;
    assert_eq!(a1.status, StatusCode::OK, "[{b}] {:?}", a1.body);
    let a2 = w.token_for(&carol).await;
    assert_eq!(a2.status, StatusCode::OK, "[{b}] {:?}", a2.body);
    assert_eq!(w.oauth.refresh_calls(), calls + 2, "[{b}] both hand-outs refreshed (tokens expire within the window)");
    assert_ne!(access_token(&a1), access_token(&a2), "[{b}] the second refresh worked with the kept refresh token");
    assert_eq!(w.oauth.refresh_reuse(), 0, "[{b}]");
}

// ----- 7. policies -----

backend_test!(policies_decide_who_may_use_a_provider);
async fn policies_decide_who_may_use_a_provider(backend: Backend) {
    let w = World::new(backend).await;
    let b = backend;
    for sub in ["eng-user", "plain-user", "admin-user"] {
        let (access, refresh) = w.oauth.issue_tokens();
        w.import(sub, PROVIDER, &access, Some(&refresh), 3600).await;
    }
    let eng = w.user_with("eng-user", &["eng"], &[]);
    let plain = w.user_with("plain-user", &["sales"], &["viewer"]);
    let admin = w.user_with("admin-user", &[], &["admin"]);
    let session = |user: String| {
        let api = w.api.clone();
        let key = w.key.clone();
        async move {
            api.call(
                Method::POST,
                "/v1/connect/sessions",
                Some(&key),
                Some(&user),
                Some(json!({"provider": PROVIDER, "return_url": RETURN_URL})),
            )
            .await
        }
    };

    // No policy: everyone.
    for user in [&eng, &plain, &admin] {
        let a = w.token_for(user).await;
        assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    }
    assert_eq!(session(plain.clone()).await.status, StatusCode::CREATED, "[{b}]");

    // Groups.
    let path = format!("/v1/apps/{}/policies/{PROVIDER}", w.app);
    let a = w.api.admin(Method::PUT, &path, Some(json!({"allow_groups": ["eng"]}))).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(w.token_for(&eng).await.status, StatusCode::OK, "[{b}]");
    assert_eq!(session(eng.clone()).await.status, StatusCode::CREATED, "[{b}]");
    for user in [&plain, &admin] {
        let a = w.token_for(user).await;
        assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "policy_denied"), "[{b}] {:?}", a.body);
        assert!(a.body.get("access_token").is_none());
        let a = session(user.clone()).await;
        assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "policy_denied"), "[{b}] {:?}", a.body);
    }
    // Denials are audited.
    let rows = w.audit("token.handout").await;
    assert!(rows.iter().any(|r| r["outcome"] == "denied"), "[{b}] {rows:?}");
    // The group comes from the token: the same user with the group in a new token is allowed.
    let plain_now_eng = w.user_with("plain-user", &["eng"], &[]);
    assert_eq!(w.token_for(&plain_now_eng).await.status, StatusCode::OK, "[{b}]");
    let a = w.token_for(&plain).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "[{b}] the group left with the next token: {:?}", a.body);

    // Roles.
    let a = w.api.admin(Method::PUT, &path, Some(json!({"allow_roles": ["admin"]}))).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(w.token_for(&admin).await.status, StatusCode::OK, "[{b}]");
    assert_eq!(session(admin.clone()).await.status, StatusCode::CREATED, "[{b}]");
    for user in [&eng, &plain] {
        let a = w.token_for(user).await;
        assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "policy_denied"), "[{b}] {:?}", a.body);
        let a = session(user.clone()).await;
        assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "policy_denied"), "[{b}] {:?}", a.body);
    }
    // Either groups or roles.
    let a = w.api.admin(Method::PUT, &path, Some(json!({"allow_groups": ["eng"], "allow_roles": ["admin"]}))).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(w.token_for(&eng).await.status, StatusCode::OK, "[{b}]");
    assert_eq!(w.token_for(&admin).await.status, StatusCode::OK, "[{b}]");
    assert_eq!(w.token_for(&plain).await.status, StatusCode::FORBIDDEN, "[{b}]");
    // An empty policy allows nobody.
    let a = w.api.admin(Method::PUT, &path, Some(json!({}))).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(w.token_for(&eng).await.status, StatusCode::FORBIDDEN, "[{b}]");
    // Deleting the policy allows everyone again.
    assert_eq!(w.api.admin(Method::DELETE, &path, None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(w.token_for(&plain).await.status, StatusCode::OK, "[{b}]");

    // A policy that cannot be read denies (fail closed).
    let a = w.api.admin(Method::PUT, &path, Some(json!({"allow_groups": ["eng"]}))).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    if !raw_sql(&w.s.db, "UPDATE policies SET allow_groups_json = 'not json'") {
        eprintln!("[{b}] SKIPPED the corrupted-policy check: no command-line SQL client (sqlite3/psql) and no raw-SQL helper in custody_store::testing");
        return;
    }
    let a = w.token_for(&eng).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::FORBIDDEN, "policy_denied"),
        "[{b}] an unreadable policy denies: {:?}",
        a.body
    );
    assert!(a.body.get("access_token").is_none());
    let a = session(eng.clone()).await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "policy_denied"), "[{b}] {:?}", a.body);
}

// ----- 8. other users' and other apps' grants -----

backend_test!(grants_of_others_are_not_found);
async fn grants_of_others_are_not_found(backend: Backend) {
    let w = World::new(backend).await;
    let b = backend;
    let alice = w.user("alice");
    let bob = w.user("bob");
    let ga = w.connect_ok(&alice).await;
    w.connect_ok(&bob).await;

    // Another user of the same app.
    let a = w.token(&bob, json!({"grant_id": ga})).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "grant_not_found"), "[{b}] {:?}", a.body);
    assert!(a.body.get("access_token").is_none());
    let a = w.api.call(Method::DELETE, &format!("/v1/grants/{ga}"), Some(&w.key), Some(&bob), None).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "grant_not_found"), "[{b}] {:?}", a.body);
    // There is no single-grant GET in the contract; whatever answers must not show the grant.
    let a = w.api.call(Method::GET, &format!("/v1/grants/{ga}"), Some(&w.key), Some(&bob), None).await;
    assert_ne!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert!(!a.body.to_string().contains(&ga), "[{b}] {:?}", a.body);
    let bobs = w.my_grants(&bob).await;
    assert!(bobs.iter().all(|g| g["id"] != ga.as_str()), "[{b}] {bobs:?}");
    // Malformed and unknown ids: 404 as well.
    for id in ["not-a-uuid", "00000000-0000-4000-8000-000000000000"] {
        let a = w.token(&bob, json!({"grant_id": id})).await;
        assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "grant_not_found"), "[{b}] {:?}", a.body);
        let a = w.api.call(Method::DELETE, &format!("/v1/grants/{id}"), Some(&w.key), Some(&bob), None).await;
        assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "grant_not_found"), "[{b}] {:?}", a.body);
    }

    // Another app (same IdP, same subject): its key and its operator paths cannot reach it.
    let (app2, key2) = w.s.create_app("Other app").await;
    w.s.attach_idp(&app2, &w.idp, json!({})).await;
    let a = w.api.token(&key2, &alice, json!({"grant_id": ga})).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "grant_not_found"), "[{b}] {:?}", a.body);
    let a = w.api.token(&key2, &alice, json!({"provider": PROVIDER})).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "[{b}] {:?}", a.body);
    let a = w.api.call(Method::DELETE, &format!("/v1/grants/{ga}"), Some(&key2), Some(&alice), None).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "grant_not_found"), "[{b}] {:?}", a.body);
    let a = w.api.call(Method::GET, "/v1/grants", Some(&key2), Some(&alice), None).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(a.body["items"], json!([]), "[{b}] {:?}", a.body);
    let a = w.api.admin(Method::POST, &format!("/v1/apps/{app2}/grants/{ga}/revoke"), Some(json!({}))).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "grant_not_found"), "[{b}] {:?}", a.body);
    let a = w.api.admin(Method::GET, &format!("/v1/apps/{app2}/grants"), None).await;
    assert_eq!(a.body["items"], json!([]), "[{b}] {:?}", a.body);

    // Nothing of that touched alice's grant.
    let a = w.token(&alice, json!({"grant_id": ga})).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(w.my_grants(&alice).await[0]["status"], "active");
}

// ----- 9. import, operator views, audit -----

backend_test!(import_operator_views_and_audit);
async fn import_operator_views_and_audit(backend: Backend) {
    let w = World::new(backend).await;
    let b = backend;
    let app = &w.app;
    w.put_provider("beta").await;

    // Import by subject: the user is created, the tokens are sealed, the grant is returned.
    let (access, refresh) = w.oauth.issue_tokens();
    let a = w
        .api
        .admin(
            Method::POST,
            &format!("/v1/apps/{app}/grants"),
            Some(json!({"subject": "imp-1", "provider": PROVIDER, "access_token": access, "refresh_token": refresh,
                        "expires_in": 3600, "scopes": ["read"], "account": "imp@example.com"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "[{b}] {:?}", a.body);
    assert_no_tokens(&a.body);
    let g1 = a.body["id"].as_str().unwrap().to_owned();
    let user_id = a.body["user_id"].as_str().unwrap().to_owned();
    assert_eq!(a.body["provider"], PROVIDER);
    assert_eq!(a.body["status"], "active");
    assert_eq!(a.body["scopes"], json!(["read"]));
    assert_eq!(a.body["account"], "imp@example.com");
    let u = w.api.admin(Method::GET, &format!("/v1/apps/{app}/users/{user_id}"), None).await;
    assert_eq!((u.status, u.body["subject"].as_str()), (StatusCode::OK, Some("imp-1")), "[{b}] {:?}", u.body);

    // The user (same subject, through the app's IdP) gets the imported token.
    let imp = w.user("imp-1");
    let a = w.token_for(&imp).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(access_token(&a), access);
    assert_eq!(a.body["grant_id"], g1.as_str());
    let me = w.api.call(Method::GET, "/v1/me", Some(&w.key), Some(&imp), None).await;
    assert_eq!(me.body["user_id"], user_id.as_str(), "[{b}] the import created the same user the token resolves to");

    // Import by user id, expiring within the refresh window: the hand-out refreshes.
    let (access2, refresh2) = w.oauth.issue_tokens();
    let a = w
        .api
        .admin(
            Method::POST,
            &format!("/v1/apps/{app}/grants"),
            Some(json!({"user_id": user_id, "provider": "beta", "access_token": access2, "refresh_token": refresh2, "expires_in": 30})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "[{b}] {:?}", a.body);
    let g2 = a.body["id"].as_str().unwrap().to_owned();
    assert_eq!(a.body["user_id"], user_id.as_str());
    // Newest-first needs distinct timestamps (seconds).
    w.s.clock.advance(Duration::from_millis(1100));
    let a = w.token(&imp, json!({"provider": "beta"})).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_ne!(access_token(&a), access2, "[{b}] refreshed");
    assert_eq!(w.oauth.refresh_calls(), 1);

    // Import errors.
    let a = w
        .api
        .admin(
            Method::POST,
            &format!("/v1/apps/{app}/grants"),
            Some(json!({"subject": "imp-1", "provider": "nope", "access_token": "x"})),
        )
        .await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "provider_not_found"), "[{b}] {:?}", a.body);
    let a = w
        .api
        .admin(
            Method::POST,
            &format!("/v1/apps/{app}/grants"),
            Some(json!({"user_id": "00000000-0000-4000-8000-000000000000", "provider": PROVIDER, "access_token": "x"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "[{b}] {:?}", a.body);
    let a = w
        .api
        .admin(
            Method::POST,
            &format!("/v1/apps/{app}/grants"),
            Some(json!({"subject": "s", "user_id": user_id, "provider": PROVIDER, "access_token": "x"})),
        )
        .await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_request"), "[{b}] {:?}", a.body);
    let a = w
        .api
        .admin(Method::POST, &format!("/v1/apps/{app}/grants"), Some(json!({"subject": "s", "provider": PROVIDER})))
        .await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_request"), "[{b}] {:?}", a.body);
    let a = w
        .api
        .call(
            Method::POST,
            &format!("/v1/apps/{app}/grants"),
            Some(&w.key),
            None,
            Some(json!({"subject": "s", "provider": PROVIDER, "access_token": "x"})),
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNAUTHORIZED, "unauthorized"),
        "[{b}] an API key is not the operator: {:?}",
        a.body
    );

    // A connected grant for another user, for the filters and the connect audit row.
    let other = w.user("other");
    let g3 = w.connect_ok(&other).await;

    // Operator listing with filters.
    let list = |query: String| {
        let api = w.api.clone();
        let path = format!("/v1/apps/{app}/grants{query}");
        async move {
            let a = api.admin(Method::GET, &path, None).await;
            assert_eq!(a.status, StatusCode::OK, "{path}: {:?}", a.body);
            assert_no_tokens(&a.body);
            let mut ids: Vec<String> =
                a.body["items"].as_array().unwrap().iter().map(|g| g["id"].as_str().unwrap().to_owned()).collect();
            ids.sort();
            ids
        }
    };
    let sorted = |mut v: Vec<&String>| {
        v.sort();
        v.into_iter().cloned().collect::<Vec<String>>()
    };
    assert_eq!(list(String::new()).await, sorted(vec![&g1, &g2, &g3]), "[{b}]");
    assert_eq!(list("?provider=beta".into()).await, vec![g2.clone()], "[{b}]");
    assert_eq!(list(format!("?user_id={user_id}")).await, sorted(vec![&g1, &g2]), "[{b}]");
    assert_eq!(list(format!("?user_id={user_id}&provider={PROVIDER}")).await, vec![g1.clone()], "[{b}]");
    assert!(list("?status=revoked".into()).await.is_empty(), "[{b}]");
    let a = w.api.admin(Method::GET, &format!("/v1/apps/{app}/grants?status=bogus"), None).await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_request"), "[{b}] {:?}", a.body);
    let a = w.api.admin(Method::GET, &format!("/v1/apps/{app}/grants?limit=1"), None).await;
    assert_eq!(a.body["items"].as_array().unwrap().len(), 1, "[{b}] {:?}", a.body);
    assert!(a.body["next_cursor"].is_string(), "[{b}] {:?}", a.body);

    // Operator revoke with a reason.
    let a = w
        .api
        .admin(Method::POST, &format!("/v1/apps/{app}/grants/{g2}/revoke"), Some(json!({"reason": "offboarding"})))
        .await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(a.body["status"], "revoked");
    assert_eq!(a.body["id"], g2.as_str());
    assert_no_tokens(&a.body);
    let a = w
        .api
        .admin(
            Method::POST,
            &format!("/v1/apps/{app}/grants/00000000-0000-4000-8000-000000000000/revoke"),
            Some(json!({})),
        )
        .await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "grant_not_found"), "[{b}] {:?}", a.body);
    assert_eq!(list("?status=revoked".into()).await, vec![g2.clone()], "[{b}]");
    assert_eq!(list("?status=active".into()).await, sorted(vec![&g1, &g3]), "[{b}]");
    let a = w.token(&imp, json!({"provider": "beta"})).await;
    assert_eq!((a.status, a.code()), (StatusCode::GONE, "grant_revoked"), "[{b}] {:?}", a.body);

    // Audit rows, newest first.
    let handouts = w.audit("token.handout").await;
    assert!(handouts.len() >= 2, "[{b}] {handouts:?}");
    assert!(handouts.iter().all(|r| r["action"] == "token.handout"), "[{b}] {handouts:?}");
    assert_eq!(handouts[0]["grant_id"], g2.as_str(), "[{b}] newest first: {handouts:?}");
    assert!(
        handouts
            .iter()
            .any(|r| r["grant_id"] == g1.as_str() && r["outcome"] == "success" && r["user_id"] == user_id.as_str()),
        "[{b}] {handouts:?}"
    );
    let ats: Vec<&str> = handouts.iter().map(|r| r["at"].as_str().unwrap()).collect();
    assert!(ats.windows(2).all(|p| p[0] >= p[1]), "[{b}] newest first: {ats:?}");
    let refreshes = w.audit("token.refresh").await;
    assert!(
        refreshes.iter().any(|r| r["grant_id"] == g2.as_str() && r["outcome"] == "success" && r["provider"] == "beta"),
        "[{b}] {refreshes:?}"
    );
    let revokes = w.audit("grant.revoke").await;
    assert_eq!(revokes.len(), 1, "[{b}] {revokes:?}");
    assert_eq!(revokes[0]["grant_id"], g2.as_str());
    assert_eq!(revokes[0]["actor"], "operator");
    assert_eq!(revokes[0]["detail"], "offboarding");
    let connects = w.audit("grant.connect").await;
    assert!(connects.iter().any(|r| r["grant_id"] == g3.as_str() && r["outcome"] == "success"), "[{b}] {connects:?}");
    let imports = w.audit("grant.import").await;
    assert_eq!(imports.len(), 2, "[{b}] {imports:?}");
    for row in handouts.iter().chain(&refreshes).chain(&revokes).chain(&connects).chain(&imports) {
        for field in ["id", "at", "action", "actor", "user_id", "grant_id", "provider", "outcome", "detail"] {
            assert!(row.get(field).is_some(), "[{b}] audit row lacks {field}: {row:?}");
        }
    }
    let all = w.api.admin(Method::GET, &format!("/v1/apps/{app}/audit?user_id={user_id}"), None).await;
    assert_no_tokens(&all.body);
    assert!(
        all.body["items"].as_array().unwrap().iter().all(|r| r["user_id"] == user_id.as_str()),
        "[{b}] {:?}",
        all.body
    );
}

// ----- 10. sealing and key rotation -----

backend_test!(swapped_ciphertexts_do_not_open);
async fn swapped_ciphertexts_do_not_open(backend: Backend) {
    let w = World::new(backend).await;
    let b = backend;
    let (ta, ra) = w.oauth.issue_tokens();
    let (tb, rb) = w.oauth.issue_tokens();
    let ga = w.import("a", PROVIDER, &ta, Some(&ra), 3600).await["id"].as_str().unwrap().to_owned();
    let gb = w.import("b", PROVIDER, &tb, Some(&rb), 3600).await["id"].as_str().unwrap().to_owned();
    let (ua, ub) = (w.user("a"), w.user("b"));
    assert_eq!(access_token(&w.token_for(&ua).await), ta);
    assert_eq!(access_token(&w.token_for(&ub).await), tb);

    // Swap the sealed access tokens of the two credential rows, through the store itself.
    let store = w.s.store().await;
    let (ga_id, gb_id) = (GrantId::parse(&ga).unwrap(), GrantId::parse(&gb).unwrap());
    let ca = store.load_credential(&ga_id).await.unwrap().expect("credential a");
    let cb = store.load_credential(&gb_id).await.unwrap().expect("credential b");
    let audit = |grant: &str| AuditEntry {
        id: OsRandom.uuid(),
        app_id: AppId::parse(&w.app).unwrap(),
        at: w.s.state().now(),
        action: "test.tamper".into(),
        actor: "system".into(),
        user_id: None,
        grant_id: Some(grant.to_owned()),
        provider: Some(PROVIDER.into()),
        outcome: AuditOutcome::Success,
        detail: None,
    };
    let swapped_a = Credential { access_token: cb.access_token.clone(), version: ca.version + 1, ..ca.clone() };
    let swapped_b = Credential { access_token: ca.access_token.clone(), version: cb.version + 1, ..cb.clone() };
    assert!(store.replace_credential(&swapped_a, ca.version, &audit(&ga)).await.unwrap(), "[{b}]");
    assert!(store.replace_credential(&swapped_b, cb.version, &audit(&gb)).await.unwrap(), "[{b}]");

    for (user, own, other) in [(&ua, &ta, &tb), (&ub, &tb, &ta)] {
        let a = w.token_for(user).await;
        assert_eq!((a.status, a.code()), (StatusCode::INTERNAL_SERVER_ERROR, "sealing_error"), "[{b}] {:?}", a.body);
        let text = a.body.to_string();
        assert!(!text.contains(other.as_str()) && !text.contains(own.as_str()), "[{b}] {text}");
    }
    // The grants are untouched otherwise.
    assert_eq!(w.my_grants(&ua).await[0]["status"], "active");
}

backend_test!(key_rotation_and_reseal);
async fn key_rotation_and_reseal(backend: Backend) {
    let b = backend;
    let k2 = second_key();
    // Grants sealed under k1.
    let w = World::new(backend).await;
    let (access, refresh) = w.oauth.issue_tokens();
    w.import("rot", PROVIDER, &access, Some(&refresh), 3600).await;
    let user = w.user("rot");
    assert_eq!(access_token(&w.token_for(&user).await), access);
    let World { mut s, idp, oauth, app, key, .. } = w;
    s.stop().await;
    let TestServer { db, .. } = s;

    // k2 first, k1 still known: old grants open; reseal moves everything to k2.
    let both = format!("{k2},{MASTER_KEYS}");
    let mut s = TestServer::start_on(db, |c| c.master_keys = Some(Secret::new(both.clone()))).await;
    let api = Api::of(&s);
    let a = api.token(&key, &user, json!({"provider": PROVIDER})).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] k1 grants open with k2,k1: {:?}", a.body);
    assert_eq!(access_token(&a), access);
    // A new grant sealed now uses k2.
    let (access_new, refresh_new) = oauth.issue_tokens();
    let a = api.admin(Method::POST, &format!("/v1/apps/{app}/grants"), Some(json!({"subject": "rot2", "provider": PROVIDER, "access_token": access_new, "refresh_token": refresh_new, "expires_in": 3600}))).await;
    assert_eq!(a.status, StatusCode::CREATED, "[{b}] {:?}", a.body);
    let report = s.state().vault().reseal_all(100).await.expect("reseal");
    // At least: access and refresh token, the provider's client secret, the instance hash key.
    assert!(report.resealed >= 4, "[{b}] {report:?}");
    assert!(report.examined >= report.resealed + 2, "[{b}] the k2 grant was examined too: {report:?}");
    let again = s.state().vault().reseal_all(100).await.expect("reseal again");
    assert_eq!(again.resealed, 0, "[{b}] nothing stale after a reseal: {again:?}");
    s.stop().await;
    let TestServer { db, .. } = s;

    // Only k2: everything still opens (tokens, provider secret for refresh, API keys).
    let mut s = TestServer::start_on(db, |c| c.master_keys = Some(Secret::new(k2.clone()))).await;
    let api = Api::of(&s);
    let a = api.token(&key, &user, json!({"provider": PROVIDER})).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] resealed grants open with k2 alone: {:?}", a.body);
    assert_eq!(access_token(&a), access);
    let a = api.token(&key, &idp.sign(idp.claims_for("rot2"), Alg::Rs256), json!({"provider": PROVIDER})).await;
    assert_eq!(access_token(&a), access_new, "[{b}]");
    // The provider's client secret opens too: a connect flow authenticates at the token endpoint.
    let c = connect_flow(&api, &key, &user, PROVIDER).await;
    assert_eq!(c.param("status"), Some("connected"), "[{b}] {}", c.location);
    s.stop().await;
    let TestServer { db, .. } = s;

    // Only k1 (the retired key): the server refuses to start, or at least opens nothing.
    match Peer::start(db.url(), MASTER_KEYS).await {
        Err(e) => assert!(!e.to_string().contains("AAECAwQF"), "[{b}] the error never shows key material: {e}"),
        Ok(mut peer) => {
            let a = peer.api.token(&key, &user, json!({"provider": PROVIDER})).await;
            assert_ne!(a.status, StatusCode::OK, "[{b}] a retired key must not open k2 values: {:?}", a.body);
            assert!(a.body.get("access_token").is_none());
            peer.stop().await;
        }
    }
    drop(db);
}

// ----- 11. the revocation outbox -----

backend_test!(outbox_retries_failed_revocations);
async fn outbox_retries_failed_revocations(backend: Backend) {
    let w = World::new(backend).await;
    let b = backend;
    let (access, _) = w.oauth.issue_tokens();
    // Access token only: one outbox item.
    let g = w.import("out", PROVIDER, &access, None, 3600).await["id"].as_str().unwrap().to_owned();
    w.oauth.fail_next_revocations(1);
    let a = w.api.admin(Method::POST, &format!("/v1/apps/{}/grants/{g}/revoke", w.app), Some(json!({}))).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    // The revoke wakes the worker; its attempt fails.
    wait_for(|| w.oauth.revocation_calls() >= 1, "[first revocation attempt]").await;
    assert_eq!(w.oauth.revocation_calls(), 1, "[{b}]");
    assert!(w.oauth.revoked_tokens().is_empty(), "[{b}] the first attempt failed");
    // Past the retry delay (1 s base in tests), the next pass revokes it.
    w.s.clock.advance(Duration::from_millis(2100));
    w.drain_until(|o| o.revoked_tokens().contains(&access)).await;
    assert!(w.oauth.revocation_calls() >= 2, "[{b}]");
    let rows = w.audit("grant.provider_revoke").await;
    assert!(rows.iter().any(|r| r["grant_id"] == g.as_str() && r["outcome"] == "success"), "[{b}] {rows:?}");
}

backend_test!(outbox_survives_a_restart);
async fn outbox_survives_a_restart(backend: Backend) {
    let w = World::new(backend).await;
    let b = backend;
    let (access, refresh) = w.oauth.issue_tokens();
    let g = w.import("out", PROVIDER, &access, Some(&refresh), 3600).await["id"].as_str().unwrap().to_owned();
    // Both attempts of the first pass fail, so the items are still queued when it stops.
    w.oauth.fail_next_revocations(2);
    let a = w
        .api
        .admin(Method::POST, &format!("/v1/apps/{}/grants/{g}/revoke", w.app), Some(json!({"reason": "restart test"})))
        .await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    wait_for(|| w.oauth.revocation_calls() >= 2, "[first outbox pass]").await;
    assert!(w.oauth.revoked_tokens().is_empty(), "[{b}]");
    let World { mut s, oauth, .. } = w;
    s.stop().await;
    let TestServer { db, .. } = s;

    let s = TestServer::start_on(db, |_| {}).await;
    // Past the retry delay on the new instance's clock.
    s.clock.advance(Duration::from_millis(2100));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        s.state().vault().drain_outbox(100).await.expect("drain");
        let revoked = oauth.revoked_tokens();
        if revoked.contains(&access) && revoked.contains(&refresh) {
            break;
        }
        assert!(Instant::now() < deadline, "[{b}] the queued revocations were lost: {revoked:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for(cond: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ----- races and in-flight flows -----

backend_test!(revoke_during_a_refresh);
/// A revoke that lands while the grant's refresh is at the provider: the hand-out answers
/// `grant_revoked`, and the tokens that refresh minted (which no grant holds any more) are
/// revoked at the provider through the outbox, not left live.
async fn revoke_during_a_refresh(backend: Backend) {
    let w = World::new(backend).await;
    let b = backend;
    let alice = w.user("alice");
    w.oauth.set_expires_in(30);
    let grant = w.connect_ok(&alice).await;
    w.oauth.set_expires_in(3600);
    w.oauth.set_refresh_delay(Duration::from_millis(700));
    let (api, key, user) = (w.api.clone(), w.key.clone(), alice.clone());
    let handout = tokio::spawn(async move { api.token(&key, &user, json!({"provider": PROVIDER})).await });
    wait_for(|| w.oauth.refresh_calls() == 1, "[the refresh to reach the provider]").await;
    // The outbox's first attempts fail, so the old refresh token is still live when the
    // provider answers the refresh (otherwise the provider would reject it, which is the
    // other ending of this race).
    w.oauth.fail_next_revocations(2);
    let a = w.api.call(Method::DELETE, &format!("/v1/grants/{grant}"), Some(&w.key), Some(&alice), None).await;
    assert_eq!((a.status, a.body["status"].as_str()), (StatusCode::OK, Some("revoked")), "[{b}] {:?}", a.body);
    let a = handout.await.unwrap();
    // The grant was revoked while its refresh was in flight: no token of a revoked grant.
    assert!(a.body.get("access_token").is_none(), "[{b}] a revoked grant handed out a token: {:?}", a.body);
    assert_eq!(a.status, StatusCode::GONE, "[{b}] {:?}", a.body);
    assert_eq!(w.my_grants(&alice).await[0]["status"], "revoked", "[{b}]");
    // The tokens the provider minted in that refresh must not stay live at the provider.
    // FakeOAuth numbers its tokens: the pair minted by the refresh is the one before the
    // next pair it issues.
    let (next, _) = w.oauth.issue_tokens();
    let n: u64 = next.trim_start_matches("fake-access-").parse().unwrap();
    let minted_refresh = format!("fake-refresh-{}", n - 1);
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut minted_revoked = false;
    while Instant::now() < deadline {
        w.s.state().vault().drain_outbox(100).await.unwrap();
        if w.oauth.revoked_tokens().contains(&minted_refresh) {
            minted_revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut problems = Vec::new();
    if !minted_revoked {
        problems.push(format!(
            "the refresh token minted by a refresh that lost the race with a revoke ({minted_refresh}) is never revoked at the provider (revoked: {:?})",
            w.oauth.revoked_tokens()
        ));
    }
    if a.code() != "grant_revoked" {
        problems.push(format!(
            "the hand-out answered `{}` for a grant revoked during its refresh; expected `grant_revoked`",
            a.code()
        ));
    }
    assert!(problems.is_empty(), "[{b}] {}", problems.join("; "));
}

backend_test!(concurrent_callbacks_leave_one_active_grant);
async fn concurrent_callbacks_leave_one_active_grant(backend: Backend) {
    let w = World::new(backend).await;
    let b = backend;
    let alice = w.user("alice");
    // Two connect flows up to the provider's redirect back, then both callbacks at once.
    let mut callbacks = Vec::new();
    for _ in 0..2 {
        let a =
            w.start_connect(&alice, json!({"provider": PROVIDER, "return_url": RETURN_URL, "scopes": ["read"]})).await;
        assert_eq!(a.status, StatusCode::CREATED, "[{b}] {:?}", a.body);
        let (_, authorize) = get_redirect(&w.api.http, a.body["connect_url"].as_str().unwrap()).await;
        let (_, callback) = get_redirect(&w.api.http, &authorize).await;
        callbacks.push(callback);
    }
    let (r1, r2) = tokio::join!(get_redirect(&w.api.http, &callbacks[0]), get_redirect(&w.api.http, &callbacks[1]));
    let ids: Vec<String> = [r1, r2]
        .iter()
        .map(|(status, location)| {
            assert_eq!(*status, StatusCode::FOUND, "[{b}]");
            let q: HashMap<String, String> = url::Url::parse(location).unwrap().query_pairs().into_owned().collect();
            assert_eq!(q.get("status").map(String::as_str), Some("connected"), "[{b}] {location}");
            q["grant_id"].clone()
        })
        .collect();
    assert_eq!(ids[0], ids[1], "[{b}] both callbacks land on the user's one active grant");
    let grants = w.my_grants(&alice).await;
    assert_eq!(grants.len(), 1, "[{b}] {grants:?}");
    assert_eq!(grants[0]["status"], "active");
    // Requested scopes are what the grant records.
    assert_eq!(grants[0]["scopes"], json!(["read"]), "[{b}] {grants:?}");
    let a = w.token_for(&alice).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
}

backend_test!(a_connect_in_flight_cannot_store_tokens_for_a_deprovisioned_user);
async fn a_connect_in_flight_cannot_store_tokens_for_a_deprovisioned_user(backend: Backend) {
    let w = World::new(backend).await;
    let b = backend;
    let alice = w.user("alice");
    let me = w.api.call(Method::GET, "/v1/me", Some(&w.key), Some(&alice), None).await;
    let user_id = custody_identity::UserId::parse(me.body["user_id"].as_str().unwrap()).unwrap();
    let a = w.start_connect(&alice, json!({"provider": PROVIDER, "return_url": RETURN_URL})).await;
    assert_eq!(a.status, StatusCode::CREATED, "[{b}] {:?}", a.body);
    let (_, authorize) = get_redirect(&w.api.http, a.body["connect_url"].as_str().unwrap()).await;
    let (_, callback) = get_redirect(&w.api.http, &authorize).await;
    // The IdP says the user is gone while they are at the provider.
    let store = w.s.store().await;
    let now = w.s.state().now();
    assert!(custody_store::testing::set_user_status(
        &store,
        &user_id,
        custody_identity::UserStatus::Deprovisioned,
        now
    )
    .await
    .unwrap());
    let (status, location) = get_redirect(&w.api.http, &callback).await;
    assert_eq!(status, StatusCode::FOUND, "[{b}]");
    assert!(location.contains("status=error"), "[{b}] {location}");
    let a = w.api.admin(Method::GET, &format!("/v1/apps/{}/grants?user_id={user_id}", w.app), None).await;
    assert_eq!(a.body["items"], json!([]), "[{b}] no grant for a deprovisioned user: {:?}", a.body);
}

// ----- operator deprovisioning and app deletion (vault side) -----

backend_test!(operator_deprovision_revokes_everything);
async fn operator_deprovision_revokes_everything(backend: Backend) {
    let w = World::new(backend).await;
    let b = backend;
    w.put_provider("beta").await;
    let alice = w.user("alice");
    let g1 = w.connect_ok(&alice).await;
    let (access, refresh) = w.oauth.issue_tokens();
    let me = w.api.call(Method::GET, "/v1/me", Some(&w.key), Some(&alice), None).await;
    let user_id = me.body["user_id"].as_str().unwrap().to_owned();
    let a = w
        .api
        .admin(
            Method::POST,
            &format!("/v1/apps/{}/grants", w.app),
            Some(json!({"user_id": user_id, "provider": "beta", "access_token": access, "refresh_token": refresh})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "[{b}] {:?}", a.body);
    let connected = access_token(&w.token_for(&alice).await);
    let bob = w.user("bob");
    w.connect_ok(&bob).await;

    let a =
        w.api.admin(Method::POST, &format!("/v1/apps/{}/users/{user_id}/deprovision", w.app), Some(json!({}))).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(a.body["status"], "deprovisioned", "[{b}] {:?}", a.body);
    let a = w.api.admin(Method::GET, &format!("/v1/apps/{}/grants?user_id={user_id}", w.app), None).await;
    let statuses: Vec<&str> =
        a.body["items"].as_array().unwrap().iter().map(|g| g["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, vec!["revoked", "revoked"], "[{b}] {:?}", a.body);
    let a = w.token(&alice, json!({"grant_id": g1})).await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "user_deprovisioned"), "[{b}] {:?}", a.body);
    // An import cannot bring the user's tokens back.
    let a = w
        .api
        .admin(
            Method::POST,
            &format!("/v1/apps/{}/grants", w.app),
            Some(json!({"user_id": user_id, "provider": PROVIDER, "access_token": "x"})),
        )
        .await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "user_deprovisioned"), "[{b}] {:?}", a.body);
    // Every stored token of the user is revoked at the provider; bob's grant is untouched.
    let (connected_refresh, a1, r1) = (refresh_twin(&connected), access.clone(), refresh.clone());
    w.drain_until(move |o| {
        let r = o.revoked_tokens();
        [&connected, &connected_refresh, &a1, &r1].iter().all(|t| r.contains(t))
    })
    .await;
    let a = w.token_for(&bob).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    let rows = w.audit("user.deprovision").await;
    assert!(!rows.is_empty(), "[{b}] {rows:?}");
}

backend_test!(deleting_an_app_deletes_its_credentials);
async fn deleting_an_app_deletes_its_credentials(backend: Backend) {
    let w = World::new(backend).await;
    let b = backend;
    let alice = w.user("alice");
    w.connect_ok(&alice).await;
    let (access, _) = w.oauth.issue_tokens();
    w.import("imp", PROVIDER, &access, None, 3600).await;
    // A second app whose rows must stay.
    let (app2, _) = w.s.create_app("Keeps its rows").await;
    let a = w
        .api
        .admin(Method::PUT, &format!("/v1/apps/{app2}/providers/{PROVIDER}"), Some(w.oauth.provider_body(&["read"])))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    w.api
        .admin(
            Method::POST,
            &format!("/v1/apps/{app2}/grants"),
            Some(json!({"subject": "x", "provider": PROVIDER, "access_token": "other-app-token"})),
        )
        .await;

    let a = w.api.admin(Method::DELETE, &format!("/v1/apps/{}", w.app), None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "[{b}] {:?}", a.body);
    let count = |table: &str| sql_cli(&w.s.db, &format!("SELECT COUNT(*) FROM {table}"));
    let Some(credentials) = count("credentials") else {
        eprintln!("[{b}] SKIPPED the row counts: no command-line SQL client (sqlite3/psql)");
        return;
    };
    assert_eq!(credentials, "1", "[{b}] only the other app's credential remains");
    assert_eq!(count("grants").unwrap(), "1", "[{b}]");
    assert_eq!(count("providers").unwrap(), "1", "[{b}]");
    assert_eq!(
        sql_cli(&w.s.db, &format!("SELECT COUNT(*) FROM grants WHERE app_id = '{}'", w.app)).unwrap(),
        "0",
        "[{b}]"
    );
    let a = w.api.admin(Method::GET, &format!("/v1/apps/{}/grants", w.app), None).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "app_not_found"), "[{b}] {:?}", a.body);
}

backend_test!(a_handout_whose_audit_row_fails_hands_nothing_out);
/// Every hand-out writes its audit row before answering: when the row cannot be written, the
/// request fails with 503 and no token leaves the vault.
async fn a_handout_whose_audit_row_fails_hands_nothing_out(backend: Backend) {
    let w = World::new(backend).await;
    let b = backend;
    let alice = w.user("alice");
    w.connect_ok(&alice).await;
    assert_eq!(w.token_for(&alice).await.status, StatusCode::OK, "[{b}]");
    let store = w.s.store().await;
    let (create, drop): (Vec<&str>, Vec<&str>) = match backend {
        Backend::Sqlite => (
            vec![
                "CREATE TRIGGER handout_audit_failure BEFORE INSERT ON audit_log \
                 WHEN NEW.action = 'token.handout' BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
            ],
            vec!["DROP TRIGGER handout_audit_failure"],
        ),
        Backend::Postgres => (
            vec![
                "CREATE FUNCTION handout_audit_failure() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
                "CREATE TRIGGER handout_audit_failure BEFORE INSERT ON audit_log FOR EACH ROW \
                 WHEN (NEW.action = 'token.handout') EXECUTE FUNCTION handout_audit_failure()",
            ],
            vec!["DROP TRIGGER handout_audit_failure ON audit_log", "DROP FUNCTION handout_audit_failure()"],
        ),
    };
    // Where hand-out rows are written: on SQLite, a file of their own.
    for sql in create {
        custody_store::testing::execute_handout_audit_sql(&store, sql).await.unwrap();
    }
    let a = w.token_for(&alice).await;
    assert_eq!((a.status, a.code()), (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"), "[{b}] {:?}", a.body);
    assert!(a.body.get("access_token").is_none(), "[{b}] a token left without its audit row: {:?}", a.body);
    for sql in drop {
        custody_store::testing::execute_handout_audit_sql(&store, sql).await.unwrap();
    }
    assert_eq!(w.token_for(&alice).await.status, StatusCode::OK, "[{b}]");
}

backend_test!(a_refused_import_changes_nothing);
/// A refused import (unknown provider, malformed token) creates no user for its subject.
async fn a_refused_import_changes_nothing(backend: Backend) {
    let w = World::new(backend).await;
    let b = backend;
    let path = format!("/v1/apps/{}/grants", w.app);
    let unknown = json!({"subject": "newcomer", "provider": "nope", "access_token": "t"});
    let a = w.api.admin(Method::POST, &path, Some(unknown)).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "provider_not_found"), "[{b}] {:?}", a.body);
    let empty = json!({"subject": "newcomer", "provider": PROVIDER, "access_token": ""});
    let a = w.api.admin(Method::POST, &path, Some(empty)).await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_request"), "[{b}] {:?}", a.body);
    let users = w.api.admin(Method::GET, &format!("/v1/apps/{}/users", w.app), None).await;
    assert_eq!(users.body["items"], json!([]), "[{b}] a refused import created a user");
}

// ----- a hanging provider (issue 15, item 11) and a credential that moved on (item 8) -----

backend_test!(fifty_callers_share_one_attempt_while_the_provider_hangs);
/// Fifty hand-outs of one grant while the provider hangs past the configured provider timeout:
/// one provider call for all of them (they share the attempt), and the answers are 502
/// `provider_error` when the access token has expired, or the current token when it has not.
/// Never 503, never a wait for the refresh lock's 30 s.
async fn fifty_callers_share_one_attempt_while_the_provider_hangs(backend: Backend) {
    const PROVIDER_TIMEOUT_MS: u64 = 1500;
    let s = TestServer::start_with(backend, |c| c.provider_timeout_ms = PROVIDER_TIMEOUT_MS).await;
    let w = World::on(s).await;
    for (sub, expires_in) in [("expired", 0), ("still-valid", 30)] {
        let user = w.user(sub);
        w.oauth.set_refresh_delay(Duration::ZERO);
        w.oauth.set_expires_in(expires_in);
        w.connect_ok(&user).await;
        // The provider now takes far longer than the configured timeout.
        w.oauth.set_refresh_delay(Duration::from_secs(60));
        let calls = w.oauth.refresh_calls();
        let started = Instant::now();
        let answers = race(vec![(w.api.clone(), 50)], &w.key, &user).await;
        let elapsed = started.elapsed();
        let provider_calls = w.oauth.refresh_calls() - calls;
        let mut by_answer: std::collections::BTreeMap<String, usize> = Default::default();
        for (status, body) in &answers {
            let code = body["code"].as_str().unwrap_or("token");
            *by_answer.entry(format!("{} {code}", status.as_u16())).or_default() += 1;
        }
        eprintln!(
            "[{backend}] 50 callers, provider hanging, access token {sub}: {provider_calls} provider call(s), \
             answers {by_answer:?}, all answered within {elapsed:?}"
        );
        assert_eq!(provider_calls, 1, "[{backend}, {sub}] one provider call for the attempt: {by_answer:?}");
        if expires_in == 0 {
            assert_eq!(by_answer.get("502 provider_error"), Some(&50), "[{backend}, {sub}] {by_answer:?}");
        } else {
            assert_eq!(by_answer.get("200 token"), Some(&50), "[{backend}, {sub}] {by_answer:?}");
            let tokens: std::collections::BTreeSet<&str> =
                answers.iter().map(|(_, b)| b["access_token"].as_str().unwrap()).collect();
            assert_eq!(tokens.len(), 1, "[{backend}, {sub}] the current token for everyone");
        }
        assert!(elapsed < Duration::from_secs(10), "[{backend}, {sub}] bounded by the provider timeout: {elapsed:?}");
        // The grant is untouched: once the provider answers again, it refreshes.
        w.oauth.set_refresh_delay(Duration::ZERO);
        let a = w.token_for(&user).await;
        assert_eq!(a.status, StatusCode::OK, "[{backend}, {sub}] {:?}", a.body);
    }
}

backend_test!(invalid_grant_after_the_credential_moved_on_uses_the_new_one);
/// The provider rejects the refresh token (`invalid_grant`) because someone else (another
/// process on the same database) spent it and stored the next credential meanwhile: the
/// hand-out uses that credential, and the grant stays active.
async fn invalid_grant_after_the_credential_moved_on_uses_the_new_one(backend: Backend) {
    let w = World::new(backend).await;
    let b = backend;
    let alice = w.user("alice");
    w.oauth.set_expires_in(30);
    let ga = w.connect_ok(&alice).await;
    let grant = GrantId::parse(&ga).unwrap();
    w.oauth.set_refresh_delay(Duration::from_millis(500));
    w.oauth.fail_next_token_calls(&[Failure::InvalidGrant]);
    let calls = w.oauth.refresh_calls();
    let handout = {
        let (api, key, user) = (w.api.clone(), w.key.clone(), alice.clone());
        tokio::spawn(async move { api.token(&key, &user, json!({"provider": PROVIDER})).await })
    };
    wait_for(|| w.oauth.refresh_calls() > calls, "the refresh to reach the provider").await;
    // Another process refreshes first and stores the next credential.
    let state = w.s.state();
    let store = w.s.store().await;
    let cipher = KeyRing::parse(MASTER_KEYS).unwrap();
    let current = store.load_credential(&grant).await.unwrap().expect("credential");
    let seal =
        |kind: TokenKind, value: &str| cipher.seal_secret(&Secret::new(value), &Credential::aad(&grant, kind)).unwrap();
    let next = Credential {
        access_token: seal(TokenKind::Access, "moved-on-access"),
        refresh_token: Some(seal(TokenKind::Refresh, "moved-on-refresh")),
        expires_at: Some(state.now().plus_seconds(3600)),
        version: current.version + 1,
        ..current.clone()
    };
    let audit = AuditEntry {
        id: OsRandom.uuid(),
        app_id: AppId::parse(&w.app).unwrap(),
        at: state.now(),
        action: "token.refresh".into(),
        actor: "system".into(),
        user_id: None,
        grant_id: Some(ga.clone()),
        provider: Some(PROVIDER.into()),
        outcome: AuditOutcome::Success,
        detail: None,
    };
    assert!(store.replace_credential(&next, current.version, &audit).await.unwrap(), "[{b}]");
    let a = handout.await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "[{b}] the credential that moved on: {:?}", a.body);
    assert_eq!(access_token(&a), "moved-on-access", "[{b}]");
    let grants = w.my_grants(&alice).await;
    assert_eq!(grants[0]["status"], "active", "[{b}] {grants:?}");
    w.oauth.set_refresh_delay(Duration::ZERO);
}

backend_test!(superseded_tokens_are_revoked_at_the_provider);
/// A refresh that rotates the refresh token, and a reconnect, queue the tokens they supersede
/// for revocation at the provider.
async fn superseded_tokens_are_revoked_at_the_provider(backend: Backend) {
    let w = World::new(backend).await;
    let b = backend;
    let alice = w.user("alice");
    w.oauth.set_expires_in(30);
    w.connect_ok(&alice).await;
    let first = access_token(&w.token_for(&alice).await);
    // That hand-out refreshed: the connect's refresh token was rotated away.
    w.drain_until(|o| o.revoked_tokens().len() == 1).await;
    let revoked = w.oauth.revoked_tokens();
    assert!(revoked[0].starts_with("fake-refresh-"), "[{b}] {revoked:?}");
    assert_ne!(revoked[0], refresh_twin(&first), "[{b}] not the live one");
    // A reconnect replaces the credential: its access and refresh tokens are revoked.
    w.oauth.set_expires_in(3600);
    w.connect_ok(&alice).await;
    w.drain_until(|o| o.revoked_tokens().len() == 3).await;
    let revoked = w.oauth.revoked_tokens();
    assert!(revoked.contains(&first) && revoked.contains(&refresh_twin(&first)), "[{b}] {revoked:?}");
    let a = w.token_for(&alice).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert!(!revoked.contains(&access_token(&a)), "[{b}]");
}

// ----- the connect flow is bound to the browser that opened it (issue 15, item 2) -----

backend_test!(connect_is_bound_to_the_browser_that_opened_it);
/// RFC 6749 section 10.12: an attacker who opens a connect URL for their own user and sends the
/// provider's consent URL (or the connect URL) to a victim cannot land the victim's account
/// under their user. The callback needs the cookie `/v1/connect/start` set, in the browser that
/// opened the flow; without it (or with another value) it is refused and nothing is stored.
async fn connect_is_bound_to_the_browser_that_opened_it(backend: Backend) {
    let w = World::new(backend).await;
    let b = backend;
    let mallory = w.user("mallory");
    let a = w.start_connect(&mallory, json!({"provider": PROVIDER, "return_url": RETURN_URL})).await;
    assert_eq!(a.status, StatusCode::CREATED, "[{b}] {:?}", a.body);
    let connect_url = a.body["connect_url"].as_str().unwrap().to_owned();

    // The attacker's browser opens the connect URL: a binding cookie is set.
    let attacker = CookieJar::new();
    let resp = attacker.get(&w.api.http, &connect_url).await;
    assert_eq!(resp.status(), StatusCode::FOUND, "[{b}]");
    let set_cookie = resp.headers().get("set-cookie").expect("a binding cookie").to_str().unwrap().to_owned();
    assert!(set_cookie.starts_with("custody_connect_"), "[{b}] {set_cookie}");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/v1/connect", "Max-Age=600"] {
        assert!(set_cookie.contains(attribute), "[{b}] {attribute} in {set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "[{b}] plain http here: {set_cookie}");
    let consent_url = resp.headers()["location"].to_str().unwrap().to_owned();

    // The victim's browser opens the same connect URL: refused, it is bound already.
    let victim = CookieJar::new();
    let resp = victim.get(&w.api.http, &connect_url).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "[{b}]");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "connect_browser_mismatch", "[{b}] {body:?}");

    // The victim consents at the provider; the provider sends the victim's browser back.
    let resp = victim.get(&w.api.http, &consent_url).await;
    let callback = resp.headers()["location"].to_str().unwrap().to_owned();
    let resp = victim.get(&w.api.http, &callback).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "[{b}] the victim's callback is refused");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "connect_browser_mismatch", "[{b}] {body:?}");
    assert!(body["detail"].as_str().unwrap().contains("another browser"), "[{b}] {body:?}");
    // A forged cookie of the right name does no better.
    let cookie_name = set_cookie.split('=').next().unwrap();
    let resp = w.api.http.get(&callback).header("cookie", format!("{cookie_name}=forged")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "[{b}]");
    assert!(w.my_grants(&mallory).await.is_empty(), "[{b}] no grant for the attacker's user");
    assert_eq!(w.oauth.code_exchanges(), 0, "[{b}] the code was never exchanged");

    // The browser that opened it may open it again, and finish it.
    let resp = attacker.get(&w.api.http, &connect_url).await;
    assert_eq!(resp.status(), StatusCode::FOUND, "[{b}] reopened in the same browser");
    let resp = attacker.get(&w.api.http, &callback).await;
    assert_eq!(resp.status(), StatusCode::FOUND, "[{b}]");
    let cleared = resp.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(cleared.contains("Max-Age=0"), "[{b}] the binding cookie is cleared: {cleared}");
    assert!(resp.headers()["location"].to_str().unwrap().contains("status=connected"), "[{b}]");
    assert_eq!(w.my_grants(&mallory).await.len(), 1, "[{b}]");
}
