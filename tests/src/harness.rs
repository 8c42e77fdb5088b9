//! The server under test: started in-process on an ephemeral loopback port, with its own data
//! directory, explicit admin token and master keys, a fresh database and a [`ManualClock`] the
//! test moves forward; [`backend_test!`](crate::backend_test) to run a case on each backend; plus
//! small HTTP helpers so suites read as the API contract.

use crate::clock::ManualClock;
use crate::fake_idp::FakeIdp;
use custody_server::{Config, RunningServer};
use custody_store::testing::TestDatabase;
pub use custody_store::Backend;
use custody_store::Store;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

/// The admin token every test server accepts.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";
/// The key ring every test server starts with (one key).
pub const MASTER_KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The backends to run each suite on: SQLite always, PostgreSQL when configured.
pub fn backends() -> Vec<Backend> {
    custody_store::testing::backends()
}

/// Turns each `async fn name(backend: Backend)` named into one test per backend, `name::sqlite`
/// and `name::postgres`, so a failure names its backend and `cargo test name` runs both. The
/// PostgreSQL test passes without running when `CUSTODY_TEST_POSTGRES_URL` is unset, as the
/// suites always have.
///
/// ```ignore
/// backend_test!(apps_can_be_created);
/// async fn apps_can_be_created(backend: Backend) {
///     let server = TestServer::start(backend).await;
///     // ...
/// }
/// ```
#[macro_export]
macro_rules! backend_test {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::harness::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::harness::backends().contains(&$crate::harness::Backend::Postgres) {
                    super::$name($crate::harness::Backend::Postgres).await;
                }
            }
        }
    )+};
}

/// A running server and what it needs to stay alive.
#[derive(Debug)]
pub struct TestServer {
    pub server: Option<RunningServer>,
    pub base: String,
    pub http: reqwest::Client,
    pub db: TestDatabase,
    pub dir: tempfile::TempDir,
    /// The server's clock: [`ManualClock::advance`] moves "now" for every use case at once.
    pub clock: Arc<ManualClock>,
}

/// A response: status and JSON body (`Null` when empty or not JSON), plus headers.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// The problem `code`, for error answers.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

/// Sends a request to `url` with optional bearer token, user token (`x-user-token`) and JSON
/// body, and reads the whole answer.
pub async fn send(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    bearer: Option<&str>,
    user_token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut req = http.request(method, url);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    if let Some(t) = user_token {
        req = req.header("x-user-token", t);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer { status, body, headers }
}

impl TestServer {
    /// Starts a server on a fresh database of `backend`.
    pub async fn start(backend: Backend) -> TestServer {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts a server, letting the test adjust the configuration first.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let db = TestDatabase::new(backend).await.expect("test database");
        Self::start_on(db, adjust).await
    }

    /// Starts a server on an existing test database (e.g. a second instance sharing it).
    pub async fn start_on(db: TestDatabase, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::for_tests(db.url(), dir.path(), ADMIN_TOKEN, MASTER_KEYS);
        adjust(&mut config);
        let clock = Arc::new(ManualClock::new());
        let server = custody_server::server::start_with_clock(config, clock.clone()).await.expect("server starts");
        let base = server.public_url.clone();
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        TestServer { server: Some(server), base, http, db, dir, clock }
    }

    /// The running server's state (for in-process checks such as draining the outbox).
    pub fn state(&self) -> &Arc<custody_server::state::AppState> {
        &self.server.as_ref().expect("running").state
    }

    /// A second connection to the same database, for checking rows directly.
    pub async fn store(&self) -> Store {
        self.db.connect().await.expect("connect to test database")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request with optional bearer token, user token and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        user_token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        send(&self.http, method, &self.url(path), bearer, user_token, body).await
    }

    /// An operator call with the admin token.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.call(method, path, Some(ADMIN_TOKEN), None, body).await
    }

    /// A runtime call with an app key and a user token.
    pub async fn runtime(
        &self,
        method: Method,
        path: &str,
        api_key: &str,
        user_token: &str,
        body: Option<Value>,
    ) -> Answer {
        self.call(method, path, Some(api_key), Some(user_token), body).await
    }

    /// Creates an app; returns (app id, API key).
    pub async fn create_app(&self, name: &str) -> (String, String) {
        let a = self.admin(Method::POST, "/v1/apps", Some(json!({"name": name}))).await;
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
        (a.body["id"].as_str().unwrap().to_owned(), a.body["api_key"].as_str().unwrap().to_owned())
    }

    /// Attaches `idp` to the app as its identity provider (with the fake IdP's audience).
    pub async fn attach_idp(&self, app: &str, idp: &FakeIdp, extra: Value) -> Answer {
        let mut body = json!({"issuer_url": idp.issuer(), "audience": idp.audience()});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let a = self.admin(Method::POST, &format!("/v1/apps/{app}/identity-provider"), Some(body)).await;
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
        a
    }

    /// An app with the fake IdP attached: (app id, API key).
    pub async fn app_with_idp(&self, idp: &FakeIdp) -> (String, String) {
        let (app, key) = self.create_app("Test app").await;
        self.attach_idp(&app, idp, json!({})).await;
        (app, key)
    }

    /// Stops the server gracefully.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}
