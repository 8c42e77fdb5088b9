#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Wallet in a real browser: headless Chromium (Debian's `chromium` package) driven over the
//! W3C WebDriver protocol through `chromedriver` (Debian's `chromium-driver`).
//!
//! The flow: the Wallet's sign-in page → the "Sign in" button → the fake IdP's login form →
//! type a username, submit → back through the callback to the grants list, which shows a grant
//! imported beforehand → "Revoke" → the grant is revoked (checked through the API) → "Sign out"
//! → through the IdP's end-session endpoint back to the sign-in page, which knows the app from
//! `state`. Screenshots of each step go to `target/wallet-screenshots/`.
//!
//! The WebDriver client is a few JSON calls over `reqwest` (already the suites' HTTP client)
//! rather than a crate such as `fantoccini`: the handful of commands used here (new session,
//! navigate, find, click, send keys, source, screenshot) do not justify another HTTP and TLS
//! stack in the dependency tree.
//!
//! Without `chromium` and `chromedriver` the test fails with a message saying how to install
//! them, unless `CUSTODY_SKIP_BROWSER_TESTS=1` is set. `CUSTODY_CHROMIUM` and
//! `CUSTODY_CHROMEDRIVER` name other binaries.

use base64::Engine as _;
use custody_tests::fake_idp::FakeIdp;
use custody_tests::harness::{backends, TestServer};
use custody_tests::sign_in_flow::sign_in_app;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key of a web element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a step may take (a page load, a redirect chain).
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// `name` as an executable: the path in `env_var` if set, else the first match on `PATH`.
fn find_executable(env_var: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// Where screenshots go: `<target dir>/wallet-screenshots`.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
    target.join("wallet-screenshots")
}

/// A `chromedriver` process this test started; killed (by its own handle) when dropped.
struct Driver {
    child: Child,
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start(chromedriver: &Path) -> Driver {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().unwrap().port()
        };
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", chromedriver.display()));
        let driver = Driver { child, base: format!("http://127.0.0.1:{port}") };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if let Ok(r) = http.get(format!("{}/status", driver.base)).send().await {
                if r.json::<Value>().await.is_ok_and(|v| v["value"]["ready"] == true) {
                    return driver;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready on port {port}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One WebDriver session (one browser).
struct Browser {
    http: reqwest::Client,
    session: String,
    shots: PathBuf,
}

impl Browser {
    async fn open(driver: &Driver, chromium: &Path, profile: &Path, shots: PathBuf) -> Browser {
        let http = reqwest::Client::new();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--no-proxy-server",
            "--window-size=1100,800",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {"binary": chromium.display().to_string(), "args": args},
        }}});
        let answer: Value = http
            .post(format!("{}/session", driver.base))
            .json(&capabilities)
            .send()
            .await
            .expect("new session sent")
            .json()
            .await
            .expect("new session answer");
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver did not start a browser: {answer}"))
            .to_owned();
        let browser = Browser { http, session: format!("{}/session/{session}", driver.base), shots };
        browser.command(Method::POST, "/timeouts", json!({"pageLoad": 20_000, "implicit": 0})).await;
        browser
    }

    async fn command(&self, method: Method, path: &str, body: Value) -> Value {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.session));
        if method != Method::GET && method != Method::DELETE {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "WebDriver {method} {path} answered {status}: {answer}");
        answer["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.command(Method::POST, "/url", json!({ "url": url })).await;
    }

    async fn url(&self) -> String {
        self.command(Method::GET, "/url", Value::Null).await.as_str().unwrap_or_default().to_owned()
    }

    async fn source(&self) -> String {
        self.command(Method::GET, "/source", Value::Null).await.as_str().unwrap_or_default().to_owned()
    }

    async fn title(&self) -> String {
        self.command(Method::GET, "/title", Value::Null).await.as_str().unwrap_or_default().to_owned()
    }

    /// The element matching a CSS selector, waiting for it to appear.
    async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let response = self
                .http
                .post(format!("{}/element", self.session))
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .await
                .expect("find sent");
            if response.status().is_success() {
                let answer: Value = response.json().await.expect("find answer");
                return answer["value"][ELEMENT_KEY].as_str().expect("element reference").to_owned();
            }
            assert!(Instant::now() < deadline, "no element `{css}` on {}:\n{}", self.url().await, self.source().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command(Method::POST, &format!("/element/{element}/click"), json!({})).await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(Method::POST, &format!("/element/{element}/value"), json!({ "text": text })).await;
    }

    async fn text_of(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.command(Method::GET, &format!("/element/{element}/text"), Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until the current URL satisfies `done`; returns it.
    async fn wait_for_url(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let url = self.url().await;
            if done(&url) {
                return url;
            }
            assert!(Instant::now() < deadline, "waited for {what}; the browser is at {url}:\n{}", self.source().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self.command(Method::GET, "/screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD.decode(encoded.as_str().unwrap_or_default()).expect("PNG");
        std::fs::create_dir_all(&self.shots).expect("screenshot directory");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
        path
    }

    async fn close(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_in_a_real_browser() {
    if std::env::var("CUSTODY_SKIP_BROWSER_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("CUSTODY_SKIP_BROWSER_TESTS=1: the browser test is skipped");
        return;
    }
    let (Some(chromium), Some(chromedriver)) =
        (find_executable("CUSTODY_CHROMIUM", "chromium"), find_executable("CUSTODY_CHROMEDRIVER", "chromedriver"))
    else {
        panic!(
            "the Wallet browser test needs headless Chromium and chromedriver: install them with \
             `apt-get install -y chromium chromium-driver` (or name them in CUSTODY_CHROMIUM and \
             CUSTODY_CHROMEDRIVER), or set CUSTODY_SKIP_BROWSER_TESTS=1 to skip this test"
        );
    };
    let driver = Driver::start(&chromedriver).await;
    for backend in backends() {
        eprintln!("backend {backend:?}");
        let server = TestServer::start(backend).await;
        let idp = FakeIdp::start().await;
        let (app, key) = sign_in_app(&server, &idp, "Acme Robotics").await;

        // A grant for alice, through the import endpoint.
        let access_token = "gho_browser_test_token_value";
        let a = server
            .admin(
                Method::PUT,
                &format!("/v1/apps/{app}/providers/github"),
                Some(json!({"authorization_url": "https://provider.example.com/authorize",
                            "token_url": "https://provider.example.com/token",
                            "client_id": "provider-client", "client_secret": "provider-secret",
                            "scopes": ["repo", "read:user"]})),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let a = server
            .admin(
                Method::POST,
                &format!("/v1/apps/{app}/grants"),
                Some(json!({"subject": "alice", "provider": "github", "access_token": access_token,
                            "scopes": ["repo", "read:user"], "account": "alice-codes"})),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        let grant = a.body["id"].as_str().unwrap().to_owned();

        let profile = tempfile::tempdir().expect("a fresh profile directory");
        let shots = screenshot_dir().join(format!("{backend:?}").to_lowercase());
        let browser = Browser::open(&driver, &chromium, profile.path(), shots).await;

        // The sign-in page.
        browser.go(&server.url(&format!("/wallet/sign-in?app_id={app}"))).await;
        assert_eq!(browser.text_of("h1").await, "Sign in to your Wallet");
        assert!(browser.source().await.contains("Acme Robotics"));
        browser.screenshot("01-sign-in").await;

        // The IdP's login form.
        browser.click("form[action=\"/wallet/login\"] button").await;
        browser.wait_for_url("the IdP's login form", |u| u.starts_with(&idp.authorization_endpoint())).await;
        browser.type_into("#username", "alice").await;
        browser.screenshot("02-idp-login").await;
        browser.click("#sign-in").await;

        // The grants list.
        let wallet = server.url("/wallet");
        browser.wait_for_url("the Wallet", |u| u == wallet).await;
        assert_eq!(browser.text_of("h1").await, "Your connected accounts");
        let source = browser.source().await;
        assert!(source.contains("alice@example.com"), "{source}");
        assert!(source.contains("alice-codes"), "{source}");
        assert!(source.contains("repo read:user"), "{source}");
        assert!(!source.contains(access_token), "never a token value");
        assert_eq!(browser.text_of("tbody .status").await, "Active");
        browser.screenshot("03-wallet").await;

        // Revoke.
        browser.click(&format!("form[action=\"/wallet/grants/{grant}/revoke\"] button")).await;
        browser.wait_for_url("the Wallet after revoking", |u| u.ends_with("/wallet?revoked=github")).await;
        assert!(browser.text_of(".notice").await.contains("was revoked"));
        assert_eq!(browser.text_of("tbody .status").await, "Revoked");
        browser.screenshot("04-revoked").await;
        let a = server.admin(Method::GET, &format!("/v1/apps/{app}/grants"), None).await;
        let listed = a.body["items"].as_array().unwrap().iter().find(|g| g["id"] == json!(grant)).cloned().unwrap();
        assert_eq!(listed["status"], "revoked", "through the operator API");
        let a = server.runtime(Method::GET, "/v1/grants", &key, &idp.token_for("alice"), None).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.body["items"][0]["id"], json!(grant));
        assert_eq!(a.body["items"][0]["status"], "revoked", "through the user's API");
        let a = server
            .runtime(Method::POST, "/v1/token", &key, &idp.token_for("alice"), Some(json!({"provider": "github"})))
            .await;
        assert_eq!(a.status, StatusCode::GONE, "{}", a.body);

        // Sign out: through the IdP's end-session endpoint, back to the sign-in page.
        browser.click("form[action=\"/wallet/sign-out\"] button").await;
        let sign_in = server.url("/wallet/sign-in?state=");
        let landed = browser.wait_for_url("the sign-in page", |u| u.starts_with(&sign_in)).await;
        assert_eq!(landed, format!("{sign_in}{app}"));
        assert_eq!(browser.text_of("h1").await, "Sign in to your Wallet");
        assert!(browser.source().await.contains("Acme Robotics"));
        assert_eq!(idp.logout_requests().len(), 1);
        browser.screenshot("05-signed-out").await;

        // The session is over.
        browser.go(&wallet).await;
        assert_eq!(browser.title().await, "You are signed out");
        browser.close().await;
        eprintln!("screenshots in {}", screenshot_dir().display());
    }
}
