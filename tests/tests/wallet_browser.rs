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
//! The WebDriver client lives in `custody_tests::browser`. Without `chromium` and
//! `chromedriver` the test prints a loud notice and passes without running, unless
//! `CUSTODY_REQUIRE_BROWSER=1` is set (CI), which makes a missing browser a failure.
//! `CUSTODY_CHROMIUM` and `CUSTODY_CHROMEDRIVER` name other binaries.

use custody_tests::browser::{browser_binaries, screenshot_dir, Browser, Driver};
use custody_tests::fake_idp::FakeIdp;
use custody_tests::harness::{backends, TestServer};
use custody_tests::sign_in_flow::sign_in_app;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_in_a_real_browser() {
    let Some((chromium, chromedriver)) = browser_binaries("Wallet") else { return };
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
        let shots = screenshot_dir("wallet-screenshots").join(format!("{backend:?}").to_lowercase());
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
        eprintln!("screenshots in {}", screenshot_dir("wallet-screenshots").display());
    }
}
