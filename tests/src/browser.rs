//! Headless Chromium through the W3C WebDriver protocol (`chromedriver`), for the Wallet and
//! Developer Portal browser suites.
//!
//! The WebDriver client is a few JSON calls over `reqwest` (already the suites' HTTP client)
//! rather than a crate such as `fantoccini`: the handful of commands used (new session,
//! navigate, find by CSS or XPath, click, send keys, source, screenshot) do not justify another
//! HTTP and TLS stack in the dependency tree. [`Browser::press`] and [`Browser::fill`] find
//! controls by their visible labels, as an operator following a guide would.

use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key of a web element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a step may take (a page load, a redirect chain).
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// `name` as an executable: the path in `env_var` if set, else the first match on `PATH`.
pub fn find_executable(env_var: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// Where screenshots go: `<target dir>/<name>` (`wallet-screenshots`, `portal-screenshots`).
pub fn screenshot_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
    target.join(name)
}

/// Chromium and chromedriver, or `None` with a loud notice when they are missing (the test then
/// passes without running). With `CUSTODY_REQUIRE_BROWSER=1` (set in CI) a missing browser
/// fails the test instead; `CUSTODY_SKIP_BROWSER_TESTS=1` skips it on purpose.
pub fn browser_binaries(suite: &str) -> Option<(PathBuf, PathBuf)> {
    if std::env::var("CUSTODY_SKIP_BROWSER_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("CUSTODY_SKIP_BROWSER_TESTS=1: the {suite} browser test is skipped");
        return None;
    }
    let found =
        (find_executable("CUSTODY_CHROMIUM", "chromium"), find_executable("CUSTODY_CHROMEDRIVER", "chromedriver"));
    if let (Some(chromium), Some(chromedriver)) = found {
        return Some((chromium, chromedriver));
    }
    let how = "install them with `apt-get install -y chromium chromium-driver` (or name them in CUSTODY_CHROMIUM \
               and CUSTODY_CHROMEDRIVER)";
    if std::env::var("CUSTODY_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
        panic!("CUSTODY_REQUIRE_BROWSER=1 but the {suite} browser test has no headless Chromium/chromedriver: {how}");
    }
    eprintln!(
        "\n**********************************************************************\n\
         SKIPPED: the {suite} browser test found no headless Chromium/chromedriver.\n\
         It passes WITHOUT RUNNING. To run it, {how}.\n\
         Set CUSTODY_REQUIRE_BROWSER=1 to make a missing browser a failure.\n\
         **********************************************************************\n"
    );
    None
}

/// A `chromedriver` process this test started; killed (by its own handle) when dropped.
#[derive(Debug)]
pub struct Driver {
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
    pub async fn start(chromedriver: &Path) -> Driver {
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
#[derive(Debug)]
pub struct Browser {
    http: reqwest::Client,
    session: String,
    shots: PathBuf,
}

impl Browser {
    pub async fn open(driver: &Driver, chromium: &Path, profile: &Path, shots: PathBuf) -> Browser {
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

    pub async fn command(&self, method: Method, path: &str, body: Value) -> Value {
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

    pub async fn go(&self, url: &str) {
        self.command(Method::POST, "/url", json!({ "url": url })).await;
    }

    pub async fn url(&self) -> String {
        self.command(Method::GET, "/url", Value::Null).await.as_str().unwrap_or_default().to_owned()
    }

    pub async fn source(&self) -> String {
        self.command(Method::GET, "/source", Value::Null).await.as_str().unwrap_or_default().to_owned()
    }

    pub async fn title(&self) -> String {
        self.command(Method::GET, "/title", Value::Null).await.as_str().unwrap_or_default().to_owned()
    }

    /// The element matching a CSS selector, waiting for it to appear.
    pub async fn find(&self, css: &str) -> String {
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

    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command(Method::POST, &format!("/element/{element}/click"), json!({})).await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(Method::POST, &format!("/element/{element}/value"), json!({ "text": text })).await;
    }

    pub async fn text_of(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.command(Method::GET, &format!("/element/{element}/text"), Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until the current URL satisfies `done`; returns it.
    pub async fn wait_for_url(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
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

    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self.command(Method::GET, "/screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD.decode(encoded.as_str().unwrap_or_default()).expect("PNG");
        std::fs::create_dir_all(&self.shots).expect("screenshot directory");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
        path
    }

    /// The element matching an XPath expression, waiting for it to appear.
    pub async fn find_xpath(&self, xpath: &str) -> String {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let response = self
                .http
                .post(format!("{}/element", self.session))
                .json(&json!({"using": "xpath", "value": xpath}))
                .send()
                .await
                .expect("find sent");
            if response.status().is_success() {
                let answer: Value = response.json().await.expect("find answer");
                return answer["value"][ELEMENT_KEY].as_str().expect("element reference").to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "nothing matches `{xpath}` on {}:\n{}",
                self.url().await,
                self.source().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the button or link whose visible text is `label` (within `scope`, an XPath prefix
    /// such as `//section[h2='Webhooks']`, or `""` for the whole page).
    pub async fn press(&self, scope: &str, label: &str) {
        let xpath = format!("{scope}//*[self::button or self::a][normalize-space()='{label}' and not(@hidden)]");
        let element = self.find_xpath(&xpath).await;
        self.command(Method::POST, &format!("/element/{element}/click"), json!({})).await;
    }

    /// Types into the field whose `<label>` reads `label`.
    pub async fn fill(&self, label: &str, text: &str) {
        let xpath = format!("//*[self::input or self::select][@id=//label[normalize-space()='{label}']/@for]");
        let element = self.find_xpath(&xpath).await;
        let tag = self.command(Method::GET, &format!("/element/{element}/name"), Value::Null).await;
        if tag.as_str() == Some("input") {
            self.command(Method::POST, &format!("/element/{element}/clear"), json!({})).await;
        }
        self.command(Method::POST, &format!("/element/{element}/value"), json!({ "text": text })).await;
    }

    /// The text of the first element matching a CSS selector.
    pub async fn text(&self, css: &str) -> String {
        self.text_of(css).await
    }

    pub async fn close(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}
