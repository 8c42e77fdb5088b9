#![allow(clippy::unwrap_used, clippy::expect_used)]
//! "Nothing secret is logged or returned, except the one response that creates it"
//! (docs/architecture.md, Security model), checked end to end.
//!
//! The `custody` binary runs as a child process with `CUSTODY_LOG=trace` and JSON logs, its
//! stderr captured in memory, while this test drives a full flow through it: apps and API keys,
//! the IdP, a provider with a client secret, connect, hand-out, refresh (and a failed refresh),
//! import, operator views, revocation and the revocation outbox. Then no access token, refresh
//! token, client secret, API key, admin token, master key or user JWT may appear in the logs, and
//! none may appear in any response (bodies and `Location` headers) except access tokens in
//! `POST /v1/token` answers and each API key in the response that created it.
//!
//! Why a child process and not a global subscriber in this process: the `custody-tests` crate
//! does not depend on `tracing`/`tracing-subscriber`, and the binary's own logging set-up is what
//! operators run. The test runs `cargo build --bin custody` first (a no-op when it is fresh), or
//! uses the binary named by `CUSTODY_BIN`.

use custody_store::testing::TestDatabase;
use custody_store::Backend;
use custody_tests::backend_test;
use custody_tests::binary::custody_binary;
use custody_tests::fake_idp::{Alg, FakeIdp};
use custody_tests::fake_oauth::{Failure, FakeOAuth, CLIENT_SECRET};
use custody_tests::harness::{ADMIN_TOKEN, MASTER_KEYS};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RETURN_URL: &str = "http://127.0.0.1:1/done";
const PROVIDER: &str = "acme";

/// The binary running as a child process; killed (by its handle) when dropped.
struct Custody {
    child: Child,
    logs: Arc<Mutex<String>>,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Custody {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Custody {
    async fn start(db: &TestDatabase) -> Custody {
        let bin = tokio::task::spawn_blocking(custody_binary).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut cmd = Command::new(bin);
        for (k, _) in std::env::vars() {
            if k.starts_with("CUSTODY_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("CUSTODY_LISTEN", format!("127.0.0.1:{port}"))
            .env("CUSTODY_DATA_DIR", dir.path())
            .env("CUSTODY_DATABASE_URL", db.url())
            .env("CUSTODY_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("CUSTODY_MASTER_KEYS", MASTER_KEYS)
            .env("CUSTODY_ALLOW_INSECURE_ISSUERS", "true")
            .env("CUSTODY_REFRESH_WINDOW_SECS", "60")
            .env("CUSTODY_OUTBOX_RETRY_SECS", "1")
            .env("CUSTODY_LOG", "trace")
            .env("CUSTODY_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn custody");
        let logs = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let mut l = logs.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let mut custody = Custody { child, logs, base: format!("http://127.0.0.1:{port}"), _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !custody.logs().contains("custody is serving") {
            if let Ok(Some(status)) = custody.child.try_wait() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!("custody exited ({status}): {}", custody.logs());
            }
            assert!(Instant::now() < deadline, "custody did not start: {}", custody.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        custody
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }
}

/// One response as a client saw it: what was called, and everything that came back as text.
#[derive(Debug)]
struct Seen {
    method: Method,
    path: String,
    status: StatusCode,
    text: String,
}

/// An HTTP client that keeps every response for the final scan.
struct Recorder {
    http: reqwest::Client,
    base: String,
    seen: Mutex<Vec<Seen>>,
}

impl Recorder {
    fn new(base: &str) -> Recorder {
        Recorder {
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            base: base.to_owned(),
            seen: Mutex::new(Vec::new()),
        }
    }

    fn record(&self, method: Method, url: &str, status: StatusCode, headers: &reqwest::header::HeaderMap, body: &str) {
        let mut text = String::new();
        for (name, value) in headers {
            text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("")));
        }
        text.push_str(body);
        let path = url.strip_prefix(&self.base).unwrap_or(url).to_owned();
        self.seen.lock().unwrap().push(Seen { method, path, status, text });
    }

    /// The `x-request-id` of the last response.
    fn last_request_id(&self) -> String {
        let seen = self.seen.lock().unwrap();
        let last = seen.last().expect("a response");
        let id = last.text.lines().find_map(|l| l.strip_prefix("x-request-id: "));
        id.expect("every response carries x-request-id").to_owned()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        user: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        if let Some(u) = user {
            req = req.header("x-user-token", u);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        self.record(method, &url, status, &headers, &text);
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, path, Some(ADMIN_TOKEN), None, body).await
    }

    /// A GET that must redirect; returns `Location`.
    async fn follow(&self, url: &str) -> String {
        static BROWSER: custody_tests::browser_cookies::CookieJar = custody_tests::browser_cookies::CookieJar::new();
        let resp = BROWSER.get(&self.http, url).await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        if url.starts_with(&self.base) {
            self.record(Method::GET, url, status, &headers, &text);
        }
        assert_eq!(status, StatusCode::FOUND, "{url}: {text}");
        headers.get("location").unwrap().to_str().unwrap().to_owned()
    }

    async fn connect(&self, key: &str, user: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/connect/sessions",
                Some(key),
                Some(user),
                Some(json!({"provider": PROVIDER, "return_url": RETURN_URL})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body:?}");
        let authorize = self.follow(body["connect_url"].as_str().unwrap()).await;
        let callback = self.follow(&authorize).await;
        let back = self.follow(&callback).await;
        let params: std::collections::HashMap<String, String> =
            url::Url::parse(&back).unwrap().query_pairs().into_owned().collect();
        assert_eq!(params.get("status").map(String::as_str), Some("connected"), "{back}");
        params["grant_id"].clone()
    }
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

backend_test!(no_secret_in_logs_or_responses);
async fn no_secret_in_logs_or_responses(backend: Backend) {
    let b = backend;
    let db = TestDatabase::new(backend).await.expect("test database");
    let custody = Custody::start(&db).await;
    let idp = FakeIdp::start().await;
    let oauth = FakeOAuth::start().await;
    let api = Recorder::new(&custody.base);

    // Apps and API keys: each key appears in its creating response only.
    let (status, app) = api.admin(Method::POST, "/v1/apps", Some(json!({"name": "Secrets app"}))).await;
    assert_eq!(status, StatusCode::CREATED, "[{b}] {app:?}");
    let app_id = app["id"].as_str().unwrap().to_owned();
    let first_key = app["api_key"].as_str().unwrap().to_owned();
    let (status, created) = api.admin(Method::POST, &format!("/v1/apps/{app_id}/api-keys"), None).await;
    assert_eq!(status, StatusCode::CREATED, "[{b}] {created:?}");
    let second_key = created["api_key"].as_str().unwrap().to_owned();
    // A third key, deleted at once: presenting it later is a rejected credential.
    let (status, created) = api.admin(Method::POST, &format!("/v1/apps/{app_id}/api-keys"), None).await;
    assert_eq!(status, StatusCode::CREATED, "[{b}] {created:?}");
    let deleted_key = created["api_key"].as_str().unwrap().to_owned();
    let deleted_id = created["id"].as_str().unwrap().to_owned();
    let (status, _) = api.admin(Method::DELETE, &format!("/v1/apps/{app_id}/api-keys/{deleted_id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "[{b}]");
    api.admin(Method::GET, &format!("/v1/apps/{app_id}/api-keys"), None).await;
    api.admin(Method::GET, &format!("/v1/apps/{app_id}"), None).await;
    let (status, body) = api
        .admin(
            Method::POST,
            &format!("/v1/apps/{app_id}/identity-provider"),
            Some(json!({"issuer_url": idp.issuer(), "audience": idp.audience(), "claims": {"group": "groups"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "[{b}] {body:?}");

    // A provider with its client secret, a policy.
    let (status, body) = api
        .admin(Method::PUT, &format!("/v1/apps/{app_id}/providers/{PROVIDER}"), Some(oauth.provider_body(&["read"])))
        .await;
    assert_eq!(status, StatusCode::OK, "[{b}] {body:?}");
    api.admin(Method::GET, &format!("/v1/apps/{app_id}/providers/{PROVIDER}"), None).await;
    api.admin(Method::GET, &format!("/v1/apps/{app_id}/providers"), None).await;
    api.admin(Method::PUT, &format!("/v1/apps/{app_id}/policies/{PROVIDER}"), Some(json!({"allow_groups": ["eng"]})))
        .await;

    let sign = |sub: &str| {
        let mut claims = idp.claims_for(sub);
        claims["groups"] = json!(["eng"]);
        claims["email"] = json!(format!("{sub}@example.com"));
        idp.sign(claims, Alg::Rs256)
    };
    let (alice, bob, imp) = (sign("alice"), sign("bob"), sign("imp"));
    // Rejected credentials must not be logged either: a deleted API key, a user token for
    // another audience, a wrong admin token.
    let mut foreign = idp.claims_for("alice");
    foreign["aud"] = json!("someone-else");
    let foreign = idp.sign(foreign, Alg::Rs256);
    let wrong_admin = "wrong-admin-token-0123456789abcdef";
    let (status, _) = api.call(Method::GET, "/v1/me", Some(&deleted_key), Some(&alice), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "[{b}]");
    let (status, _) = api.call(Method::GET, "/v1/me", Some(&first_key), Some(&foreign), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "[{b}]");
    let (status, _) = api.call(Method::GET, "/v1/apps", Some(wrong_admin), None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "[{b}]");

    // Connect (tokens expiring within the refresh window), hand out (refresh), list.
    oauth.set_expires_in(30);
    let grant = api.connect(&first_key, &alice).await;
    oauth.set_expires_in(3600);
    let (status, body) =
        api.call(Method::POST, "/v1/token", Some(&second_key), Some(&alice), Some(json!({"provider": PROVIDER}))).await;
    assert_eq!(status, StatusCode::OK, "[{b}] {body:?}");
    assert_eq!(oauth.refresh_calls(), 1, "[{b}]");
    api.call(Method::POST, "/v1/token", Some(&second_key), Some(&alice), Some(json!({"grant_id": grant}))).await;
    api.call(Method::GET, "/v1/grants", Some(&first_key), Some(&alice), None).await;
    api.call(Method::GET, "/v1/me", Some(&first_key), Some(&alice), None).await;

    // Failed refreshes of an expired access token (a still-valid one would be handed out): a
    // transient provider error, then a rejected refresh token.
    oauth.set_expires_in(0);
    api.connect(&first_key, &bob).await;
    oauth.fail_next_token_calls(&[Failure::ServerError, Failure::InvalidGrant]);
    let (status, _) =
        api.call(Method::POST, "/v1/token", Some(&first_key), Some(&bob), Some(json!({"provider": PROVIDER}))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "[{b}]");
    let (status, _) =
        api.call(Method::POST, "/v1/token", Some(&first_key), Some(&bob), Some(json!({"provider": PROVIDER}))).await;
    assert_eq!(status, StatusCode::GONE, "[{b}]");
    oauth.set_expires_in(3600);

    // Import (tokens in the request body), hand-out with a refresh, operator views.
    let (access, refresh) = oauth.issue_tokens();
    let (status, imported) = api
        .admin(
            Method::POST,
            &format!("/v1/apps/{app_id}/grants"),
            Some(json!({"subject": "imp", "provider": PROVIDER, "access_token": access, "refresh_token": refresh, "expires_in": 30})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "[{b}] {imported:?}");
    let (status, body) =
        api.call(Method::POST, "/v1/token", Some(&first_key), Some(&imp), Some(json!({"provider": PROVIDER}))).await;
    assert_eq!(status, StatusCode::OK, "[{b}] {body:?}");
    api.admin(Method::GET, &format!("/v1/apps/{app_id}/grants"), None).await;
    api.admin(Method::GET, &format!("/v1/apps/{app_id}/users"), None).await;

    // Revocations: by the user, by the operator; the outbox revokes at the provider (after a
    // failed first attempt, so the retry path runs too).
    oauth.fail_next_revocations(1);
    let (status, _) =
        api.call(Method::DELETE, &format!("/v1/grants/{grant}"), Some(&first_key), Some(&alice), None).await;
    assert_eq!(status, StatusCode::OK, "[{b}]");
    let imported_id = imported["id"].as_str().unwrap();
    let (status, _) = api
        .admin(Method::POST, &format!("/v1/apps/{app_id}/grants/{imported_id}/revoke"), Some(json!({"reason": "test"})))
        .await;
    assert_eq!(status, StatusCode::OK, "[{b}]");
    api.call(Method::POST, "/v1/token", Some(&first_key), Some(&alice), Some(json!({"provider": PROVIDER}))).await;
    wait_until("the outbox to revoke four tokens", || oauth.revoked_tokens().len() >= 4).await;
    api.admin(Method::GET, &format!("/v1/apps/{app_id}/audit"), None).await;
    // A provider update without the secret, and a deletion.
    let mut body = oauth.provider_body(&["read"]);
    body.as_object_mut().unwrap().remove("client_secret");
    api.admin(Method::PUT, &format!("/v1/apps/{app_id}/providers/{PROVIDER}"), Some(body)).await;
    api.admin(Method::DELETE, &format!("/v1/apps/{app_id}/providers/{PROVIDER}"), None).await;
    // The last request's summary line is the last it logs: wait for it to arrive.
    let last = api.last_request_id();
    wait_until("the last request's log line", || {
        custody.logs().lines().any(|l| l.contains(&last) && l.contains("duration_us"))
    })
    .await;

    // ----- the scan -----
    let logs = custody.logs();
    assert!(logs.contains("custody is serving"), "[{b}] logs captured");
    assert!(
        logs.contains("\"level\":\"DEBUG\"") || logs.contains("\"level\":\"TRACE\""),
        "[{b}] the capture runs below INFO: {logs}"
    );
    let master_key_material = MASTER_KEYS.split_once(':').unwrap().1;
    let jwt_signature = |t: &str| t.rsplit('.').next().unwrap().to_owned();
    let never: Vec<(&str, String)> = vec![
        ("a refresh token", "fake-refresh-".to_owned()),
        ("the provider client secret", CLIENT_SECRET.to_owned()),
        ("the admin token", ADMIN_TOKEN.to_owned()),
        ("master key material", master_key_material.to_owned()),
        ("a user token", jwt_signature(&alice)),
        ("a user token", jwt_signature(&bob)),
        ("a user token", jwt_signature(&imp)),
        ("a rejected user token", jwt_signature(&foreign)),
        ("a rejected admin token", wrong_admin.to_owned()),
    ];
    let in_logs: Vec<(&str, String)> = never
        .iter()
        .cloned()
        .chain([
            ("an access token", "fake-access-".to_owned()),
            ("an API key", first_key.clone()),
            ("an API key", second_key.clone()),
            ("a deleted API key", deleted_key.clone()),
        ])
        .collect();
    for (what, needle) in &in_logs {
        if let Some(line) = logs.lines().find(|l| l.contains(needle.as_str())) {
            panic!("[{b}] {what} appears in the logs: {line}");
        }
    }

    let seen = api.seen.lock().unwrap();
    assert!(seen.len() > 30, "[{b}] {} responses recorded", seen.len());
    let created_app = |s: &Seen| s.method == Method::POST && s.path == "/v1/apps";
    let created_key = |s: &Seen| s.method == Method::POST && s.path.ends_with("/api-keys");
    let handout = |s: &Seen| s.method == Method::POST && s.path == "/v1/token" && s.status == StatusCode::OK;
    for s in seen.iter() {
        for (what, needle) in &never {
            assert!(
                !s.text.contains(needle.as_str()),
                "[{b}] {what} in the response to {} {}: {}",
                s.method,
                s.path,
                s.text
            );
        }
        if !handout(s) {
            assert!(
                !s.text.contains("fake-access-"),
                "[{b}] an access token in the response to {} {}: {}",
                s.method,
                s.path,
                s.text
            );
        }
        if !created_app(s) {
            assert!(
                !s.text.contains(first_key.as_str()),
                "[{b}] the first API key in the response to {} {}: {}",
                s.method,
                s.path,
                s.text
            );
        }
        if !created_key(s) {
            assert!(
                !s.text.contains(deleted_key.as_str()),
                "[{b}] the deleted API key in the response to {} {}: {}",
                s.method,
                s.path,
                s.text
            );
            assert!(
                !s.text.contains(second_key.as_str()),
                "[{b}] the second API key in the response to {} {}: {}",
                s.method,
                s.path,
                s.text
            );
        }
    }
    // The exceptions really carried their secret (the scan looked at the right text).
    assert!(seen.iter().any(|s| handout(s) && s.text.contains("fake-access-")), "[{b}]");
    assert!(seen.iter().any(|s| created_app(s) && s.text.contains(first_key.as_str())), "[{b}]");
    drop(seen);
    drop(custody);
    drop(db);
}
