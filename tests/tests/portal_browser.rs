#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Developer Portal in a real browser (headless Chromium through chromedriver,
//! `custody_tests::browser`), walking each identity-provider guide of `docs/idp-*.md` click for
//! click by the visible labels of the shared surfaces contract:
//!
//! sign in with the **Admin token** → **Create app** (the API key shown once) → **Identity** →
//! **Add Identity Provider** → **Issuer URL** → **Discover** (the detected kind, mappings
//! pre-filled) → **Audience** → **Add Provider** → **User Authentication (OIDC)**: **Client ID**,
//! **Client Secret**, **Save** → **Webhooks**: **Enable Webhooks** (Auth0 and custom OIDC: the
//! generated secret shown once; Clerk: **Signing Secret** `whsec_…` and **Save Secret**) →
//! **Providers** (a preset) → the guides' Test step: a test user's token makes them appear in
//! **Users**, a deletion webhook makes their grants show as revoked in **Grants** → **Audit**
//! shows `operator:portal` → **Sign out**.
//!
//! Screenshots of every step go to `target/portal-screenshots/<backend>/<guide>-NN-step.png`.
//! Without Chromium the test prints a loud notice and passes without running, unless
//! `CUSTODY_REQUIRE_BROWSER=1` (CI) makes that a failure.

use custody_tests::browser::{browser_binaries, screenshot_dir, Browser, Driver};
use custody_tests::fake_idp::{Alg, FakeIdp};
use custody_tests::harness::{backends, TestServer, ADMIN_TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// Svix's documented example secret, as a Clerk dashboard would show it.
const CLERK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Guide {
    Auth0,
    Clerk,
    CustomOidc,
}

impl Guide {
    fn name(self) -> &'static str {
        match self {
            Guide::Auth0 => "auth0",
            Guide::Clerk => "clerk",
            Guide::CustomOidc => "custom-oidc",
        }
    }

    /// What the operator picks in **Kind** (the fake IdP runs on 127.0.0.1, a "custom domain").
    fn kind_option(self) -> Option<&'static str> {
        match self {
            Guide::Auth0 => Some("Auth0"),
            Guide::Clerk => Some("Clerk"),
            Guide::CustomOidc => None,
        }
    }

    fn detected(self) -> &'static str {
        match self {
            Guide::Auth0 => "Auth0",
            Guide::Clerk => "Clerk",
            Guide::CustomOidc => "Custom OIDC",
        }
    }

    /// The test user's subject as each IdP spells it.
    fn subject(self) -> &'static str {
        match self {
            Guide::Auth0 => "auth0|alice",
            Guide::Clerk => "user_2alice",
            Guide::CustomOidc => "alice",
        }
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The IdP's deletion event for `subject`, signed as that IdP does.
async fn send_deletion(server: &TestServer, app: &str, guide: Guide, secret: Option<&str>) -> StatusCode {
    let subject = guide.subject();
    let at = custody_server::json::rfc3339(custody_identity::UnixTime(now()));
    let (body, headers): (Vec<u8>, Vec<(String, String)>) = match guide {
        Guide::Auth0 => (
            serde_json::to_vec(&json!([{"log_id": "90000000001", "data": {"type": "sdu", "user_id": subject, "date": at, "description": "deleted"}}]))
                .unwrap(),
            vec![("authorization".into(), format!("Bearer {}", secret.unwrap()))],
        ),
        Guide::CustomOidc => (
            serde_json::to_vec(&json!({"events": [{"id": "evt-1", "type": "user.deleted", "subject": subject, "occurred_at": at}]}))
                .unwrap(),
            vec![("authorization".into(), format!("Bearer {}", secret.unwrap()))],
        ),
        Guide::Clerk => {
            let body = serde_json::to_vec(&json!({"type": "user.deleted", "object": "event", "timestamp": now() * 1000,
                "data": {"id": subject, "deleted": true, "object": "user"}}))
            .unwrap();
            let signature = svix::webhooks::Webhook::new(CLERK_SECRET).unwrap().sign("msg_portal1", now(), &body).unwrap();
            let headers = vec![
                ("svix-id".into(), "msg_portal1".into()),
                ("svix-timestamp".into(), now().to_string()),
                ("svix-signature".into(), signature),
            ];
            (body, headers)
        }
    };
    let mut request = server.http.post(server.url(&format!("/v1/webhooks/{app}"))).body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.send().await.unwrap().status()
}

async fn walk(server: &TestServer, browser: &Browser, guide: Guide) {
    let g = guide.name();
    let shot = |n: &str| format!("{g}-{n}");
    let idp = FakeIdp::start().await;

    // Sign in.
    browser.go(&server.url("/portal")).await;
    browser.fill("Admin token", ADMIN_TOKEN).await;
    browser.screenshot(&shot("01-sign-in")).await;
    browser.press("", "Sign in").await;

    // Create app: the key is shown once, with the warning.
    browser.fill("Name", &format!("Acme ({})", guide.detected())).await;
    browser.press("", "Create app").await;
    let api_key = browser.text("#secret-value").await;
    assert!(api_key.starts_with("ck_"), "{api_key}");
    assert!(browser.source().await.contains("will not be shown again"));
    browser.screenshot(&shot("02-app-created")).await;

    // Identity → Add Identity Provider → Issuer URL → Discover.
    browser.press("", &format!("Acme ({})", guide.detected())).await;
    browser.press("//nav", "Identity").await;
    let identity_url = browser.url().await;
    let app = identity_url.split("/portal/apps/").nth(1).unwrap().split('/').next().unwrap().to_owned();
    browser.press("", "Add Identity Provider").await;
    browser.fill("Issuer URL", &idp.issuer()).await;
    if let Some(kind) = guide.kind_option() {
        browser.fill("Kind", kind).await;
    }
    browser.screenshot(&shot("03-issuer-url")).await;
    browser.press("", "Discover").await;
    assert_eq!(browser.text(".detected-kind").await, guide.detected());
    browser.fill("Group claim", "groups").await;
    browser.fill("Audience", idp.audience()).await;
    browser.screenshot(&shot("04-discovered")).await;
    browser.press("", "Add Provider").await;
    browser.find_xpath("//h2[normalize-space()='Identity provider']").await;
    browser.screenshot(&shot("05-provider-added")).await;

    // User Authentication (OIDC): the secret is never shown back.
    let oidc = "//section[h2='User Authentication (OIDC)']";
    browser.fill("Client ID", "portal-client").await;
    browser.fill("Client Secret", "portal-client-secret-value").await;
    browser.press(oidc, "Save").await;
    assert!(browser.text(".notice").await.contains("OIDC client saved"));
    assert!(!browser.source().await.contains("portal-client-secret-value"));
    browser.screenshot(&shot("06-oidc")).await;

    // Webhooks, in the IdP's shape.
    let hooks = "//section[h2='Webhooks']";
    assert!(browser.source().await.contains(&format!("/v1/webhooks/{app}")), "the Webhook URL is shown first");
    browser.press(hooks, "Enable Webhooks").await;
    let secret = if guide == Guide::Clerk {
        browser.fill("Signing Secret", CLERK_SECRET).await;
        browser.screenshot(&shot("07-signing-secret")).await;
        browser.press("", "Save Secret").await;
        assert!(!browser.source().await.contains(CLERK_SECRET));
        None
    } else {
        let secret = browser.text("#secret-value").await;
        assert!(secret.len() >= 32);
        Some(secret)
    };
    browser.find_xpath(&format!("{hooks}//button[normalize-space()='Disable Webhooks']")).await;
    browser.screenshot(&shot("08-webhooks-enabled")).await;

    // Providers: a preset.
    browser.press("//nav", "Providers").await;
    browser.fill("Provider name", "github").await;
    browser.fill("Preset", "github").await;
    browser.fill("OAuth client ID", "gh-client").await;
    browser.fill("OAuth client secret", "gh-client-secret").await;
    browser.press("", "Save provider").await;
    browser.find_xpath("//th[normalize-space()='github']").await;
    browser.screenshot(&shot("09-providers")).await;

    // Test step: the test user's token makes them appear in Users.
    let mut claims = idp.claims_for(guide.subject());
    claims["groups"] = json!(["staff"]);
    let token = idp.sign(claims, Alg::Rs256);
    let me = server.runtime(Method::GET, "/v1/me", &api_key, &token, None).await;
    assert_eq!(me.status, StatusCode::OK, "[{g}] {}", me.body);
    let a = server
        .admin(
            Method::POST,
            &format!("/v1/apps/{app}/grants"),
            Some(json!({"subject": guide.subject(), "provider": "github", "access_token": "gho_portal_test", "scopes": ["repo"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    browser.press("//nav", "Users").await;
    browser.find_xpath(&format!("//a[normalize-space()='{}']", guide.subject())).await;
    browser.screenshot(&shot("10-users")).await;
    browser.go(&identity_url).await;
    assert!(browser.source().await.contains("<strong>Locked</strong>"), "the first sign-in locked the mappings");
    browser.screenshot(&shot("11-locked")).await;

    // A deletion webhook: their grants show as revoked in Grants.
    assert_eq!(send_deletion(server, &app, guide, secret.as_deref()).await, StatusCode::OK, "[{g}]");
    browser.press("//nav", "Grants").await;
    assert_eq!(browser.text("tbody .status").await, "revoked");
    browser.screenshot(&shot("12-grants-revoked")).await;
    browser.press("//nav", "Users").await;
    assert!(browser.source().await.contains("deprovisioned"));

    // Audit: the portal's changes, as operator:portal.
    browser.press("//nav", "Audit").await;
    assert!(browser.source().await.contains("operator:portal"));
    browser.screenshot(&shot("13-audit")).await;

    browser.press("", "Sign out").await;
    browser.find_xpath("//label[normalize-space()='Admin token']").await;
    let _: Value = me.body;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idp_guides_in_a_real_browser() {
    let Some((chromium, chromedriver)) = browser_binaries("Developer Portal") else { return };
    let driver = Driver::start(&chromedriver).await;
    for backend in backends() {
        let server = TestServer::start(backend).await;
        let shots = screenshot_dir("portal-screenshots").join(format!("{backend:?}").to_lowercase());
        for guide in [Guide::Auth0, Guide::Clerk, Guide::CustomOidc] {
            let profile = tempfile::tempdir().expect("a fresh profile directory");
            let browser = Browser::open(&driver, &chromium, profile.path(), shots.clone()).await;
            walk(&server, &browser, guide).await;
            browser.close().await;
        }
        eprintln!("screenshots in {}", shots.display());
    }
}
