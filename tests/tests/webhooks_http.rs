#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Lifecycle webhooks over HTTP, against the contract in `docs/api.md` (the webhook
//! sub-resources under Identity provider, and Lifecycle webhooks): the settings (enable, rotate,
//! disable), the receiver's authentication (Clerk's Svix signatures, the generated secret of
//! Auth0 and custom OIDC), every payload format, and the effects checked through the API and in
//! the database: deprovisioning with its full cascade, suspension and reactivation, event order,
//! group removal under a policy, duplicates, malformed payloads and a failing store.
//!
//! Every test runs its body once per backend in [`backends`] (SQLite always, PostgreSQL when
//! `CUSTODY_TEST_POSTGRES_URL` is set), on a fresh server and database each time.

use base64::Engine as _;
use custody_identity::{AppId, UnixTime, UserId};
use custody_store::prelude::*;
use custody_store::testing::{count_rows, execute_sql};
use custody_store::{Backend, Store};
use custody_tests::backend_test;
use custody_tests::fake_idp::{Alg, FakeIdp};
use custody_tests::fake_oauth::FakeOAuth;
use custody_tests::harness::{backends, Answer, TestServer};
use custody_vault::grant::GrantStatus;
use custody_vault::GrantId;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Extra request headers of a delivery.
type Headers = Vec<(&'static str, String)>;

/// A Clerk signing secret (Svix's documented example).
const CLERK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// Another one, for rotation and wrong-secret checks.
const CLERK_SECRET_2: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw3qG2gFNzHv8=";
/// Where connect flows return to; never fetched.
const RETURN_URL: &str = "http://127.0.0.1:1/done";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn rfc3339(t: i64) -> String {
    custody_server::json::rfc3339(UnixTime(t))
}

/// A native event.
fn native(id: &str, kind: &str, subject: &str, at: i64) -> Value {
    json!({"id": id, "type": kind, "subject": subject, "occurred_at": rfc3339(at)})
}

/// An Auth0 log-stream entry.
fn auth0_entry(log_id: &str, code: &str, user: &str, at: i64) -> Value {
    json!({"log_id": log_id, "data": {"type": code, "user_id": user, "date": rfc3339(at), "description": "test"}})
}

/// The Svix headers of a delivery signed with `secret` by the svix crate.
fn svix_headers(secret: &str, id: &str, ts: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let signature = svix::webhooks::Webhook::new(secret).unwrap().sign(id, ts, body).unwrap();
    vec![("svix-id", id.to_owned()), ("svix-timestamp", ts.to_string()), ("svix-signature", signature)]
}

/// A Svix `v1` signature computed independently of the svix crate: HMAC-SHA256 with OpenSSL over
/// `{id}.{ts}.{body}`, keyed with the base64-decoded part of the secret after `whsec_`.
fn openssl_signature(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
    let key = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let pkey = openssl::pkey::PKey::hmac(&key).unwrap();
    let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey).unwrap();
    signer.update(format!("{id}.{ts}.").as_bytes()).unwrap();
    signer.update(body).unwrap();
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(signer.sign_to_vec().unwrap()))
}

/// One test's world: a server, an app whose identity provider is a [`FakeIdp`] of the given
/// kind (group claim `groups`), a fake OAuth provider configured as `acme` and `beta`.
struct World {
    s: TestServer,
    idp: FakeIdp,
    oauth: FakeOAuth,
    app: String,
    key: String,
    backend: Backend,
}

impl World {
    async fn new(backend: Backend, kind: &str) -> World {
        let s = TestServer::start(backend).await;
        let idp = FakeIdp::start().await;
        let oauth = FakeOAuth::start().await;
        let (app, key) = s.create_app("Webhook app").await;
        let a = s.attach_idp(&app, &idp, json!({"kind": kind, "claims": {"group": "groups"}})).await;
        assert_eq!(a.body["kind"], kind, "{:?}", a.body);
        let w = World { s, idp, oauth, app, key, backend };
        for name in ["acme", "beta"] {
            let a = w.admin(Method::PUT, &format!("providers/{name}"), Some(w.oauth.provider_body(&["read"]))).await;
            assert_eq!(a.status, StatusCode::OK, "[{backend}] {:?}", a.body);
        }
        w
    }

    /// An operator call under `/v1/apps/{app}/`.
    async fn admin(&self, method: Method, rest: &str, body: Option<Value>) -> Answer {
        let path =
            if rest.is_empty() { format!("/v1/apps/{}", self.app) } else { format!("/v1/apps/{}/{rest}", self.app) };
        self.s.admin(method, &path, body).await
    }

    async fn enable(&self, body: Value) -> Answer {
        self.admin(Method::POST, "identity-provider/webhook/enable", Some(body)).await
    }

    /// Enables webhooks with a generated secret and returns it.
    async fn enable_generated(&self) -> String {
        let a = self.enable(json!({})).await;
        assert_eq!(a.status, StatusCode::OK, "[{}] enable: {:?}", self.backend, a.body);
        a.body["signing_secret"].as_str().unwrap().to_owned()
    }

    /// A user token for `sub` in `groups`, issued now.
    fn user(&self, sub: &str, groups: &[&str]) -> String {
        let mut claims = self.idp.claims_for(sub);
        claims["groups"] = json!(groups);
        self.idp.sign(claims, Alg::Rs256)
    }

    /// A user token for `sub` in `groups`, issued at `iat`.
    fn user_issued_at(&self, sub: &str, groups: &[&str], iat: i64) -> String {
        let mut claims = self.idp.claims_for(sub);
        claims["groups"] = json!(groups);
        claims["iat"] = json!(iat);
        self.idp.sign(claims, Alg::Rs256)
    }

    async fn me(&self, token: &str) -> Answer {
        self.s.runtime(Method::GET, "/v1/me", &self.key, token, None).await
    }

    /// Signs `sub` in once and returns their user id.
    async fn sign_in(&self, sub: &str, groups: &[&str]) -> String {
        let a = self.me(&self.user(sub, groups)).await;
        assert_eq!(a.status, StatusCode::OK, "[{}] /v1/me: {:?}", self.backend, a.body);
        a.body["user_id"].as_str().unwrap().to_owned()
    }

    async fn token(&self, user_token: &str, provider: &str) -> Answer {
        self.s.runtime(Method::POST, "/v1/token", &self.key, user_token, Some(json!({"provider": provider}))).await
    }

    /// Imports a grant of `provider` for `subject`; returns its id.
    async fn import(&self, subject: &str, provider: &str) -> String {
        let (access, refresh) = self.oauth.issue_tokens();
        let a = self
            .admin(
                Method::POST,
                "grants",
                Some(json!({"subject": subject, "provider": provider, "access_token": access, "refresh_token": refresh, "expires_in": 3600})),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "[{}] import: {:?}", self.backend, a.body);
        a.body["id"].as_str().unwrap().to_owned()
    }

    /// Connects `provider` for the user through the OAuth flow; returns the grant id.
    async fn connect(&self, user_token: &str, provider: &str) -> String {
        let a = self
            .s
            .runtime(
                Method::POST,
                "/v1/connect/sessions",
                &self.key,
                user_token,
                Some(json!({"provider": provider, "return_url": RETURN_URL})),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "[{}] connect session: {:?}", self.backend, a.body);
        let mut url = a.body["connect_url"].as_str().unwrap().to_owned();
        // Custody's start → the provider's authorize → Custody's callback → the return URL.
        let browser = custody_tests::browser_cookies::CookieJar::new();
        for _ in 0..3 {
            let resp = browser.get(&self.s.http, &url).await;
            assert_eq!(resp.status(), StatusCode::FOUND, "[{}] {url}", self.backend);
            url = resp.headers()["location"].to_str().unwrap().to_owned();
        }
        let params: HashMap<String, String> = url::Url::parse(&url).unwrap().query_pairs().into_owned().collect();
        assert_eq!(params.get("status").map(String::as_str), Some("connected"), "[{}] {url}", self.backend);
        params["grant_id"].clone()
    }

    /// Posts a raw delivery to the app's webhook URL.
    async fn deliver(&self, headers: &[(&str, String)], body: &[u8]) -> Answer {
        self.deliver_to(&self.app, headers, body).await
    }

    async fn deliver_to(&self, app: &str, headers: &[(&str, String)], body: &[u8]) -> Answer {
        let mut req = self.s.http.post(self.s.url(&format!("/v1/webhooks/{app}"))).body(body.to_vec());
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let resp = req.send().await.expect("delivery sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap_or_default();
        Answer { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null), headers }
    }

    /// A native delivery with the generated `secret` as a bearer token.
    async fn native(&self, secret: &str, events: Vec<Value>) -> Answer {
        let body = serde_json::to_vec(&json!({"events": events})).unwrap();
        self.deliver(&[("authorization", format!("Bearer {secret}"))], &body).await
    }

    /// A Clerk delivery of `event`, signed now with `secret`.
    async fn clerk(&self, secret: &str, id: &str, event: &Value) -> Answer {
        let body = serde_json::to_vec(event).unwrap();
        self.deliver(&svix_headers(secret, id, now(), &body), &body).await
    }

    async fn user_status(&self, user_id: &str) -> String {
        let a = self.admin(Method::GET, &format!("users/{user_id}"), None).await;
        assert_eq!(a.status, StatusCode::OK, "[{}] {:?}", self.backend, a.body);
        a.body["status"].as_str().unwrap().to_owned()
    }

    async fn users(&self) -> Vec<Value> {
        let a = self.admin(Method::GET, "users", None).await;
        assert_eq!(a.status, StatusCode::OK, "[{}] {:?}", self.backend, a.body);
        a.body["items"].as_array().unwrap().clone()
    }

    async fn audit(&self, action: &str) -> Vec<Value> {
        let a = self.admin(Method::GET, &format!("audit?action={action}"), None).await;
        assert_eq!(a.status, StatusCode::OK, "[{}] {:?}", self.backend, a.body);
        a.body["items"].as_array().unwrap().clone()
    }

    /// The statuses of the user's grants, read through the operator view.
    async fn grant_statuses(&self, user_id: &str) -> Vec<String> {
        let a = self.admin(Method::GET, &format!("grants?user_id={user_id}"), None).await;
        assert_eq!(a.status, StatusCode::OK, "[{}] {:?}", self.backend, a.body);
        a.body["items"].as_array().unwrap().iter().map(|g| g["status"].as_str().unwrap().to_owned()).collect()
    }

    fn app_id(&self) -> AppId {
        AppId::parse(&self.app).unwrap()
    }
}

fn counts(a: &Answer) -> (u64, u64, u64) {
    (
        a.body["processed"].as_u64().unwrap_or(u64::MAX),
        a.body["ignored"].as_u64().unwrap_or(u64::MAX),
        a.body["duplicates"].as_u64().unwrap_or(u64::MAX),
    )
}

/// Checks in the database (through the store's port, on a second connection) that every grant
/// of `user` is revoked and has no credential row left.
async fn assert_no_credentials(store: &Store, app: &AppId, grants: &[String], b: Backend) {
    for id in grants {
        let id = GrantId::parse(id).unwrap();
        let grant = store.get_grant(app, &id).await.unwrap().expect("grant row");
        assert_eq!(grant.status, GrantStatus::Revoked, "[{b}] grant {id:?}");
        assert!(grant.revoked_at.is_some(), "[{b}] grant {id:?}");
        assert!(store.load_credential(&id).await.unwrap().is_none(), "[{b}] credential of {id:?} left");
    }
}

// ----- settings -----

backend_test!(settings_enable_rotate_disable);
async fn settings_enable_rotate_disable(backend: Backend) {
    let b = backend;
    let w = World::new(backend, "custom_oidc").await;
    let url = format!("{}/v1/webhooks/{}", w.s.base, w.app);

    // Shown before enabling.
    let a = w.admin(Method::GET, "identity-provider/webhook", None).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(
        a.body,
        json!({"url": url, "enabled": false, "secret_source": "generated", "rotated_at": null}),
        "[{b}]"
    );
    let a = w.admin(Method::GET, "identity-provider", None).await;
    assert_eq!(
        a.body["webhook"],
        json!({"url": url, "enabled": false, "secret_source": "generated", "rotated_at": null}),
        "[{b}]"
    );

    // Enabling shows the generated secret once.
    let a = w.enable(json!({"signing_secret": CLERK_SECRET})).await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_request"), "[{b}] {:?}", a.body);
    let a = w.enable(json!({})).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(a.body["url"], url.as_str(), "[{b}]");
    assert_eq!(a.body["enabled"], true, "[{b}]");
    assert_eq!(a.body["secret_source"], "generated", "[{b}]");
    let secret = a.body["signing_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("cwh_") && secret.len() >= 40, "[{b}] {secret}");
    let a = w.admin(Method::GET, "identity-provider/webhook", None).await;
    assert_eq!(a.body, json!({"url": url, "enabled": true, "secret_source": "generated", "rotated_at": null}), "[{b}]");
    let a = w.admin(Method::GET, "identity-provider", None).await;
    assert_eq!(a.body["webhook"]["enabled"], true, "[{b}] {:?}", a.body);
    assert!(!a.body.to_string().contains(&secret), "[{b}] the secret is shown once only");

    let a = w.enable(json!({})).await;
    assert_eq!((a.status, a.code()), (StatusCode::CONFLICT, "webhooks_already_enabled"), "[{b}] {:?}", a.body);
    let a = w.native(&secret, vec![]).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (0, 0, 0)), "[{b}] {:?}", a.body);

    // Rotation: a new secret, the old one refused on the very next delivery.
    let a = w.admin(Method::POST, "identity-provider/webhook/rotate", Some(json!({}))).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    let rotated = a.body["signing_secret"].as_str().unwrap().to_owned();
    assert_ne!(rotated, secret, "[{b}]");
    assert!(a.body["rotated_at"].is_string(), "[{b}] {:?}", a.body);
    let a = w.native(&secret, vec![]).await;
    assert_eq!((a.status, a.code()), (StatusCode::UNAUTHORIZED, "invalid_signature"), "[{b}] {:?}", a.body);
    let a = w.native(&rotated, vec![]).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    let a = w.admin(Method::GET, "identity-provider", None).await;
    assert!(a.body["webhook"]["rotated_at"].is_string(), "[{b}] {:?}", a.body);

    // Disabling: every delivery is 404, and rotating or disabling again is a conflict.
    let a = w.admin(Method::POST, "identity-provider/webhook/disable", Some(json!({}))).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(a.body["enabled"], false, "[{b}]");
    let a = w.native(&rotated, vec![]).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "webhooks_not_enabled"), "[{b}] {:?}", a.body);
    for action in ["rotate", "disable"] {
        let a = w.admin(Method::POST, &format!("identity-provider/webhook/{action}"), None).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::CONFLICT, "webhooks_not_enabled"),
            "[{b}] {action}: {:?}",
            a.body
        );
    }
    let a = w.admin(Method::GET, "identity-provider/webhook", None).await;
    assert_eq!(a.body["enabled"], false, "[{b}]");

    // Audit rows, without the secret.
    for action in ["webhook.enable", "webhook.rotate", "webhook.disable"] {
        let rows = w.audit(action).await;
        assert_eq!(rows.len(), 1, "[{b}] {action}: {rows:?}");
        assert_eq!(rows[0]["actor"], "operator", "[{b}]");
        let text = serde_json::to_string(&rows).unwrap();
        assert!(!text.contains(&secret) && !text.contains(&rotated), "[{b}] {text}");
    }

    // Deleting the identity provider removes the settings; a new one starts disabled.
    let secret = w.enable_generated().await;
    let a = w.admin(Method::DELETE, "identity-provider", None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "[{b}] {:?}", a.body);
    let store = w.s.store().await;
    assert_eq!(count_rows(&store, "idp_webhooks").await.unwrap(), 0, "[{b}]");
    let a = w.admin(Method::GET, "identity-provider/webhook", None).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "idp_not_configured"), "[{b}] {:?}", a.body);
    let a = w.enable(json!({})).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "idp_not_configured"), "[{b}] {:?}", a.body);
    let a = w.native(&secret, vec![]).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "webhooks_not_enabled"), "[{b}] {:?}", a.body);
    w.s.attach_idp(&w.app, &w.idp, json!({})).await;
    let a = w.admin(Method::GET, "identity-provider/webhook", None).await;
    assert_eq!(a.body["enabled"], false, "[{b}] {:?}", a.body);
    let a = w.native(&secret, vec![]).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "webhooks_not_enabled"), "[{b}] {:?}", a.body);

    // Unknown and malformed app ids look the same as disabled webhooks.
    let a = w.deliver_to("00000000-0000-4000-8000-000000000000", &[], b"{}").await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "webhooks_not_enabled"), "[{b}] {:?}", a.body);
    let a = w.deliver_to("not-an-app", &[], b"{}").await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "webhooks_not_enabled"), "[{b}] {:?}", a.body);
    // Operator endpoints need the admin token.
    let a =
        w.s.call(Method::GET, &format!("/v1/apps/{}/identity-provider/webhook", w.app), Some(&w.key), None, None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "[{b}] {:?}", a.body);
}

backend_test!(concurrent_enables_leave_one_secret);
async fn concurrent_enables_leave_one_secret(backend: Backend) {
    let b = backend;
    let w = World::new(backend, "custom_oidc").await;
    let (a1, a2, a3, a4) =
        tokio::join!(w.enable(json!({})), w.enable(json!({})), w.enable(json!({})), w.enable(json!({})));
    let answers = [a1, a2, a3, a4];
    let winners: Vec<&Answer> = answers.iter().filter(|a| a.status == StatusCode::OK).collect();
    assert_eq!(winners.len(), 1, "[{b}] {answers:?}");
    assert!(
        answers.iter().filter(|a| a.status != StatusCode::OK).all(|a| a.code() == "webhooks_already_enabled"),
        "[{b}] {answers:?}"
    );
    // The one secret returned is the one that works.
    let secret = winners[0].body["signing_secret"].as_str().unwrap();
    let a = w.native(secret, vec![]).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(w.audit("webhook.enable").await.len(), 1, "[{b}]");
}

backend_test!(clerk_settings_need_a_signing_secret);
async fn clerk_settings_need_a_signing_secret(backend: Backend) {
    let b = backend;
    let w = World::new(backend, "clerk").await;
    let a = w.admin(Method::GET, "identity-provider/webhook", None).await;
    assert_eq!(a.body["secret_source"], "provided", "[{b}] {:?}", a.body);
    for body in [
        json!({}),
        json!({"signing_secret": "C2FVsBQIhrscChlQIMV+b5sSYspob7oD"}),
        json!({"signing_secret": "whsec_not base64!"}),
        json!({"signing_secret": "whsec_"}),
        json!({"signing_secret": "whsec_dGVzdA=="}),
    ] {
        let a = w.enable(body.clone()).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::BAD_REQUEST, "invalid_signing_secret"),
            "[{b}] {body}: {:?}",
            a.body
        );
        assert!(!a.body.to_string().contains("C2FVsBQIhrscChlQIMV"), "[{b}] {:?}", a.body);
    }
    let a = w.enable(json!({"signing_secret": 5})).await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_request"), "[{b}] {:?}", a.body);
    let a = w.enable(json!({"signing_secret": CLERK_SECRET})).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(a.body["secret_source"], "provided", "[{b}]");
    assert!(a.body.get("signing_secret").is_none(), "[{b}] a provided secret is never returned: {:?}", a.body);
    let a = w.admin(Method::POST, "identity-provider/webhook/rotate", Some(json!({}))).await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_signing_secret"), "[{b}] {:?}", a.body);
    // The stored secret is sealed: its bytes are not in the database in the clear.
    let store = w.s.store().await;
    assert_eq!(count_rows(&store, "idp_webhooks").await.unwrap(), 1, "[{b}]");
    let leaked = execute_sql(
        &store,
        "UPDATE idp_webhooks SET updated_at = updated_at WHERE secret_hash IS NOT NULL OR sealed_secret IS NULL",
    )
    .await
    .unwrap();
    assert_eq!(leaked, 0, "[{b}] a provided secret is stored sealed only");
}

// ----- Clerk (Svix) -----

backend_test!(clerk_deliveries_are_verified_with_svix);
async fn clerk_deliveries_are_verified_with_svix(backend: Backend) {
    let b = backend;
    let w = World::new(backend, "clerk").await;
    let a = w.enable(json!({"signing_secret": CLERK_SECRET})).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    let alice = w.sign_in("user_alice", &[]).await;
    let bob = w.sign_in("user_bob", &[]).await;
    let carol = w.sign_in("user_carol", &[]).await;

    // The independent OpenSSL implementation matches Svix's published vector.
    assert_eq!(
        openssl_signature(
            CLERK_SECRET,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1_649_367_553,
            br#"{"email":"test@example.com","username":"test_user"}"#
        ),
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
    );

    let deleted = |user: &str| json!({"type": "user.deleted", "object": "event", "timestamp": now() * 1000, "data": {"id": user, "deleted": true, "object": "user"}});

    // Refused, and nothing changes: wrong secret, stale and future timestamps, missing
    // headers, a body changed by one byte, a signature of another message id.
    let body = serde_json::to_vec(&deleted("user_alice")).unwrap();
    let good = svix_headers(CLERK_SECRET, "msg_a1", now(), &body);
    let mut refused: Vec<(&str, Headers, Vec<u8>)> = vec![
        ("wrong secret", svix_headers(CLERK_SECRET_2, "msg_a1", now(), &body), body.clone()),
        ("stale", svix_headers(CLERK_SECRET, "msg_a1", now() - 301, &body), body.clone()),
        ("future", svix_headers(CLERK_SECRET, "msg_a1", now() + 301, &body), body.clone()),
        ("no headers", vec![], body.clone()),
        ("other id", vec![("svix-id", "msg_other".into()), good[1].clone(), good[2].clone()], body.clone()),
        ("bearer instead", vec![("authorization", format!("Bearer {CLERK_SECRET}"))], body.clone()),
    ];
    for missing in 0..3 {
        let mut headers = good.clone();
        let name = headers.remove(missing).0;
        refused.push((name, headers, body.clone()));
    }
    let mut changed = body.clone();
    let i = changed.iter().position(|c| *c == b'a').unwrap();
    changed[i] = b'b';
    refused.push(("one byte changed", good.clone(), changed));
    for (what, headers, body) in &refused {
        let a = w.deliver(headers, body).await;
        assert_eq!((a.status, a.code()), (StatusCode::UNAUTHORIZED, "invalid_signature"), "[{b}] {what}: {:?}", a.body);
    }
    assert_eq!(w.user_status(&alice).await, "active", "[{b}]");
    assert_eq!(count_rows(&w.s.store().await, "webhook_events").await.unwrap(), 0, "[{b}]");

    // Signed by the svix crate: applied once, a replay is a duplicate.
    let a = w.deliver(&good, &body).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (1, 0, 0)), "[{b}] {:?}", a.body);
    assert_eq!(w.user_status(&alice).await, "deprovisioned", "[{b}]");
    let a = w.deliver(&svix_headers(CLERK_SECRET, "msg_a1", now(), &body), &body).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (0, 0, 1)), "[{b}] {:?}", a.body);

    // The fixed vector, signed with OpenSSL, among several `v1,` signatures.
    let body = serde_json::to_vec(&deleted("user_bob")).unwrap();
    let ts = now();
    let signature = format!(
        "v1,bm90LXRoaXMtb25l {} v2,ignored",
        openssl_signature(CLERK_SECRET, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", ts, &body)
    );
    let headers = vec![
        ("svix-id", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk".to_owned()),
        ("svix-timestamp", ts.to_string()),
        ("svix-signature", signature),
    ];
    let a = w.deliver(&headers, &body).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (1, 0, 0)), "[{b}] {:?}", a.body);
    assert_eq!(w.user_status(&bob).await, "deprovisioned", "[{b}]");

    // user.updated: the profile, and `banned` suspends and reactivates.
    let updated = |id: &str, banned: bool, at: i64| {
        json!({"type": "user.updated", "timestamp": at * 1000, "data": {
            "id": "user_carol", "first_name": "Carol", "last_name": "Jones", "banned": banned,
            "primary_email_address_id": "idn_2",
            "email_addresses": [{"id": "idn_1", "email_address": "old@example.com"}, {"id": "idn_2", "email_address": format!("carol+{id}@example.com")}]}})
    };
    let t = now();
    let a = w.clerk(CLERK_SECRET, "msg_c1", &updated("c1", true, t)).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (1, 0, 0)), "[{b}] {:?}", a.body);
    let a = w.admin(Method::GET, &format!("users/{carol}"), None).await;
    assert_eq!(a.body["status"], "suspended", "[{b}] {:?}", a.body);
    assert_eq!(a.body["email"], "carol+c1@example.com", "[{b}] {:?}", a.body);
    assert_eq!(a.body["name"], "Carol Jones", "[{b}] {:?}", a.body);
    let a = w.token(&w.user("user_carol", &[]), "acme").await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "user_suspended"), "[{b}] {:?}", a.body);
    let a = w.clerk(CLERK_SECRET, "msg_c2", &updated("c2", false, t + 1)).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (1, 0, 0)), "[{b}] {:?}", a.body);
    assert_eq!(w.user_status(&carol).await, "active", "[{b}]");

    // Other types and subjects never seen: acknowledged, nothing created.
    let users_before = w.users().await.len();
    let a = w.clerk(CLERK_SECRET, "msg_x1", &json!({"type": "user.created", "data": {"id": "user_new"}})).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (0, 1, 0)), "[{b}] {:?}", a.body);
    let a = w.clerk(CLERK_SECRET, "msg_x2", &deleted("user_never_seen")).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (0, 1, 0)), "[{b}] {:?}", a.body);
    assert_eq!(w.users().await.len(), users_before, "[{b}]");

    // Rotation: the old secret is refused on the very next delivery.
    let a = w
        .admin(Method::POST, "identity-provider/webhook/rotate", Some(json!({"signing_secret": CLERK_SECRET_2})))
        .await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert!(a.body.get("signing_secret").is_none(), "[{b}] {:?}", a.body);
    let a = w.clerk(CLERK_SECRET, "msg_r1", &updated("r1", false, now())).await;
    assert_eq!((a.status, a.code()), (StatusCode::UNAUTHORIZED, "invalid_signature"), "[{b}] {:?}", a.body);
    let a = w.clerk(CLERK_SECRET_2, "msg_r2", &updated("r2", false, now())).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (1, 0, 0)), "[{b}] {:?}", a.body);

    let rows = w.audit("user.deprovision").await;
    assert_eq!(rows.len(), 2, "[{b}] {rows:?}");
    assert!(rows.iter().all(|r| r["actor"] == "idp"), "[{b}] {rows:?}");
    assert!(rows.iter().any(|r| r["detail"].as_str().unwrap().contains("msg_a1")), "[{b}] {rows:?}");
}

// ----- Auth0 (generated secret) -----

backend_test!(auth0_log_streams_with_the_generated_secret);
async fn auth0_log_streams_with_the_generated_secret(backend: Backend) {
    let b = backend;
    let w = World::new(backend, "auth0").await;
    let a = w.admin(Method::GET, "identity-provider/webhook", None).await;
    assert_eq!(a.body["secret_source"], "generated", "[{b}] {:?}", a.body);
    let secret = w.enable_generated().await;
    let alice = w.sign_in("auth0|alice", &[]).await;
    let bob = w.sign_in("auth0|bob", &[]).await;
    let grant = w.import("auth0|alice", "acme").await;
    let t = now();

    // Refused, nothing changed: a wrong token, another scheme, no header at all.
    let body = serde_json::to_vec(&json!([auth0_entry("900001", "sdu", "auth0|alice", t)])).unwrap();
    for headers in [
        vec![("authorization", "Bearer cwh_wrong".to_owned())],
        vec![("authorization", format!("Bearer {secret}x"))],
        vec![("authorization", format!("Basic {secret}"))],
        vec![],
    ] {
        let a = w.deliver(&headers, &body).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::UNAUTHORIZED, "invalid_signature"),
            "[{b}] {headers:?}: {:?}",
            a.body
        );
    }
    assert_eq!(w.user_status(&alice).await, "active", "[{b}]");
    assert_eq!(w.grant_statuses(&alice).await, vec!["active"], "[{b}]");
    assert_eq!(count_rows(&w.s.store().await, "webhook_events").await.unwrap(), 0, "[{b}]");

    // The secret as is (Auth0 sends the configured token verbatim), a JSON array with an
    // ignored entry.
    let body = serde_json::to_vec(&json!([
        auth0_entry("900001", "sdu", "auth0|alice", t),
        auth0_entry("900002", "s", "auth0|bob", t),
    ]))
    .unwrap();
    let a = w.deliver(&[("authorization", secret.clone())], &body).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (1, 1, 0)), "[{b}] {:?}", a.body);
    assert_eq!(w.user_status(&alice).await, "deprovisioned", "[{b}]");
    assert_eq!(w.grant_statuses(&alice).await, vec!["revoked"], "[{b}]");
    assert_eq!(w.user_status(&bob).await, "active", "[{b}]");
    assert_eq!(w.grant_statuses(&bob).await, Vec::<String>::new(), "[{b}]");
    assert_no_credentials(&w.s.store().await, &w.app_id(), &[grant], b).await;

    // With `Bearer ` (any case); one object; JSON lines; a replay is a duplicate.
    let one = serde_json::to_vec(&auth0_entry("900003", "ublkdu", "auth0|bob", t)).unwrap();
    let a = w.deliver(&[("authorization", format!("bearer {secret}"))], &one).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (1, 0, 0)), "[{b}] {:?}", a.body);
    assert_eq!(w.user_status(&bob).await, "suspended", "[{b}]");
    let lines = format!(
        "{}\n{}\n",
        auth0_entry("900003", "ublkdu", "auth0|bob", t),
        auth0_entry("900004", "ubuu", "auth0|bob", t + 1)
    );
    let a = w.deliver(&[("authorization", format!("Bearer {secret}"))], lines.as_bytes()).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (1, 0, 1)), "[{b}] {:?}", a.body);
    assert_eq!(w.user_status(&bob).await, "active", "[{b}]");
    let a = w.deliver(&[("authorization", format!("Bearer {secret}"))], &body).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (0, 1, 1)), "[{b}] {:?}", a.body);

    // Rotation: the old token is refused at once.
    let a = w.admin(Method::POST, "identity-provider/webhook/rotate", None).await;
    let rotated = a.body["signing_secret"].as_str().unwrap().to_owned();
    let a = w.deliver(&[("authorization", format!("Bearer {secret}"))], &one).await;
    assert_eq!((a.status, a.code()), (StatusCode::UNAUTHORIZED, "invalid_signature"), "[{b}] {:?}", a.body);
    let a = w.deliver(&[("authorization", rotated)], &one).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (0, 0, 1)), "[{b}] {:?}", a.body);
}

// ----- deprovisioning -----

backend_test!(deprovision_cascade);
async fn deprovision_cascade(backend: Backend) {
    let b = backend;
    let w = World::new(backend, "custom_oidc").await;
    let secret = w.enable_generated().await;
    let alice_token = w.user("alice", &[]);
    let alice = w.sign_in("alice", &[]).await;
    let connected = w.connect(&alice_token, "acme").await;
    let imported = w.import("alice", "beta").await;
    let a = w.token(&alice_token, "acme").await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    let handed_out = a.body["access_token"].as_str().unwrap().to_owned();
    let bob_token = w.user("bob", &[]);
    w.sign_in("bob", &[]).await;
    w.connect(&bob_token, "acme").await;
    let store = w.s.store().await;
    assert_eq!(count_rows(&store, "credentials").await.unwrap(), 3, "[{b}]");
    let users_before = w.users().await.len();

    let started = Instant::now();
    let a = w.native(&secret, vec![native("del-1", "user.deleted", "alice", now())]).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (1, 0, 0)), "[{b}] {:?}", a.body);
    assert!(started.elapsed() < Duration::from_secs(5), "[{b}]");

    // In the database: every grant of alice revoked, no credential row of hers left; bob's
    // untouched.
    assert_no_credentials(&store, &w.app_id(), &[connected.clone(), imported.clone()], b).await;
    assert_eq!(count_rows(&store, "credentials").await.unwrap(), 1, "[{b}] only bob's credential is left");
    assert_eq!(w.grant_statuses(&alice).await, vec!["revoked", "revoked"], "[{b}]");
    let user = custody_identity::ports::UserStore::get_user(&store, &w.app_id(), &UserId::parse(&alice).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.status, custody_identity::UserStatus::Deprovisioned, "[{b}]");

    // The next token request is denied, and so is a fresh valid token of the same user;
    // no new user appears.
    let a = w.token(&alice_token, "acme").await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "user_deprovisioned"), "[{b}] {:?}", a.body);
    let fresh = w.user_issued_at("alice", &["eng"], now() + 1);
    for path in ["/v1/me", "/v1/grants"] {
        let a = w.s.runtime(Method::GET, path, &w.key, &fresh, None).await;
        assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "user_deprovisioned"), "[{b}] {path}: {:?}", a.body);
    }
    let a = w.token(&fresh, "beta").await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "user_deprovisioned"), "[{b}] {:?}", a.body);
    assert_eq!(w.users().await.len(), users_before, "[{b}]");
    assert_eq!(w.user_status(&alice).await, "deprovisioned", "[{b}]");

    // Bob still works; the handed-out token is revoked at the provider by the outbox.
    let a = w.token(&bob_token, "acme").await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !w.oauth.revoked_tokens().contains(&handed_out) {
        assert!(Instant::now() < deadline, "[{b}] not revoked at the provider: {:?}", w.oauth.revoked_tokens());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Redelivery is a duplicate; later events cannot bring alice back.
    let a = w.native(&secret, vec![native("del-1", "user.deleted", "alice", now())]).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (0, 0, 1)), "[{b}] {:?}", a.body);
    let a = w
        .native(
            &secret,
            vec![
                native("re-1", "user.reactivated", "alice", now() + 60),
                native("del-2", "user.deleted", "alice", now()),
            ],
        )
        .await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (0, 2, 0)), "[{b}] {:?}", a.body);
    assert_eq!(w.user_status(&alice).await, "deprovisioned", "[{b}]");

    // A subject never seen is acknowledged and creates nothing.
    let a = w.native(&secret, vec![native("ghost-1", "user.deleted", "ghost", now())]).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (0, 1, 0)), "[{b}] {:?}", a.body);
    assert_eq!(w.users().await.len(), users_before, "[{b}]");

    let rows = w.audit("user.deprovision").await;
    assert_eq!(rows.len(), 1, "[{b}] {rows:?}");
    assert_eq!((rows[0]["actor"].as_str(), rows[0]["user_id"].as_str()), (Some("idp"), Some(alice.as_str())), "[{b}]");
}

backend_test!(suspend_reactivate_and_event_order);
async fn suspend_reactivate_and_event_order(backend: Backend) {
    let b = backend;
    let w = World::new(backend, "custom_oidc").await;
    let secret = w.enable_generated().await;
    let token = w.user("dana", &[]);
    let dana = w.sign_in("dana", &[]).await;
    w.import("dana", "acme").await;
    let t = now();

    let a = w.native(&secret, vec![native("s-1", "user.suspended", "dana", t)]).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (1, 0, 0)), "[{b}] {:?}", a.body);
    let a = w.token(&token, "acme").await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "user_suspended"), "[{b}] {:?}", a.body);
    let a = w.me(&token).await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "user_suspended"), "[{b}] {:?}", a.body);
    assert_eq!(w.grant_statuses(&dana).await, vec!["active"], "[{b}] grants are kept");

    let a = w.native(&secret, vec![native("r-1", "user.reactivated", "dana", t + 1)]).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (1, 0, 0)), "[{b}] {:?}", a.body);
    let a = w.token(&token, "acme").await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);

    // Out of order: a suspension at t+10 arrives first, a reactivation from t+5 later. The
    // late one does not undo the block; a newer one does.
    let a = w
        .native(
            &secret,
            vec![native("s-2", "user.suspended", "dana", t + 10), native("r-2", "user.reactivated", "dana", t + 5)],
        )
        .await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (1, 1, 0)), "[{b}] {:?}", a.body);
    assert_eq!(w.user_status(&dana).await, "suspended", "[{b}]");
    let a = w.native(&secret, vec![native("r-3", "user.reactivated", "dana", t + 20)]).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (1, 0, 0)), "[{b}] {:?}", a.body);
    assert_eq!(w.user_status(&dana).await, "active", "[{b}]");

    // A deletion applies however late it arrives; nothing reactivates after it.
    let a = w
        .native(
            &secret,
            vec![native("d-1", "user.deleted", "dana", t + 2), native("r-4", "user.reactivated", "dana", t + 30)],
        )
        .await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (1, 1, 0)), "[{b}] {:?}", a.body);
    assert_eq!(w.user_status(&dana).await, "deprovisioned", "[{b}]");
    assert_eq!(w.grant_statuses(&dana).await, vec!["revoked"], "[{b}]");
    for action in ["user.suspend", "user.reactivate"] {
        assert!(!w.audit(action).await.is_empty(), "[{b}] {action}");
    }
}

backend_test!(membership_removal_turns_an_allow_into_a_deny);
async fn membership_removal_turns_an_allow_into_a_deny(backend: Backend) {
    let b = backend;
    let w = World::new(backend, "custom_oidc").await;
    let secret = w.enable_generated().await;
    let a = w.admin(Method::PUT, "policies/acme", Some(json!({"allow_groups": ["eng"]}))).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    let t = now();
    let before = w.user_issued_at("erin", &["eng", "ops"], t - 5);
    let a = w.me(&before).await;
    assert_eq!(a.body["groups"], json!(["eng", "ops"]), "[{b}] {:?}", a.body);
    w.import("erin", "acme").await;
    let a = w.token(&before, "acme").await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);

    let mut removal = native("g-1", "group.member_removed", "erin", t);
    removal["group"] = json!("eng");
    let a = w.native(&secret, vec![removal]).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (1, 0, 0)), "[{b}] {:?}", a.body);

    // The same token, issued before the removal, no longer carries the group.
    let a = w.token(&before, "acme").await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "policy_denied"), "[{b}] {:?}", a.body);
    let a = w.me(&before).await;
    assert_eq!(a.body["groups"], json!(["ops"]), "[{b}] {:?}", a.body);
    let a = w.token(&w.user_issued_at("erin", &["eng", "ops"], t), "acme").await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "policy_denied"), "[{b}] {:?}", a.body);
    // A token issued after the removal that names the group again restores it.
    let a = w.token(&w.user_issued_at("erin", &["eng"], t + 1), "acme").await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    assert_eq!(w.audit("user.group_remove").await.len(), 1, "[{b}]");
}

backend_test!(clerk_membership_removal);
async fn clerk_membership_removal(backend: Backend) {
    let b = backend;
    let w = World::new(backend, "clerk").await;
    w.enable(json!({"signing_secret": CLERK_SECRET})).await;
    let a = w.admin(Method::PUT, "policies/acme", Some(json!({"allow_groups": ["org_eng"]}))).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    let token = w.user_issued_at("user_frank", &["org_eng"], now() - 5);
    w.me(&token).await;
    w.import("user_frank", "acme").await;
    assert_eq!(w.token(&token, "acme").await.status, StatusCode::OK, "[{b}]");
    let event = json!({"type": "organizationMembership.deleted", "timestamp": now() * 1000, "data": {
        "id": "orgmem_1", "organization": {"id": "org_eng"}, "public_user_data": {"user_id": "user_frank"}}});
    let a = w.clerk(CLERK_SECRET, "msg_m1", &event).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (1, 0, 0)), "[{b}] {:?}", a.body);
    let a = w.token(&token, "acme").await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "policy_denied"), "[{b}] {:?}", a.body);
}

// ----- malformed payloads and failures -----

backend_test!(malformed_payloads_change_nothing);
async fn malformed_payloads_change_nothing(backend: Backend) {
    let b = backend;
    let t = now();
    let ok = native("n-ok", "user.deleted", "gina", t);
    let native_cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("not json", b"{events".to_vec()),
        ("array", serde_json::to_vec(&json!([ok])).unwrap()),
        ("no events", b"{}".to_vec()),
        ("events not array", serde_json::to_vec(&json!({"events": ok})).unwrap()),
        ("event not object", serde_json::to_vec(&json!({"events": [ok, 5]})).unwrap()),
        (
            "no id",
            serde_json::to_vec(
                &json!({"events": [ok, {"type": "user.deleted", "subject": "gina", "occurred_at": rfc3339(t)}]}),
            )
            .unwrap(),
        ),
        (
            "no subject",
            serde_json::to_vec(
                &json!({"events": [ok, {"id": "x", "type": "user.deleted", "occurred_at": rfc3339(t)}]}),
            )
            .unwrap(),
        ),
        (
            "no time",
            serde_json::to_vec(&json!({"events": [ok, {"id": "x", "type": "user.deleted", "subject": "gina"}]}))
                .unwrap(),
        ),
        (
            "unix time",
            serde_json::to_vec(
                &json!({"events": [ok, {"id": "x", "type": "user.suspended", "subject": "gina", "occurred_at": t}]}),
            )
            .unwrap(),
        ),
        (
            "no group",
            serde_json::to_vec(&json!({"events": [ok, native("x", "group.member_removed", "gina", t)]})).unwrap(),
        ),
        ("trailing garbage", format!("{} ]", json!({"events": [ok]})).into_bytes()),
        ("not utf-8", vec![0xff, 0xfe, b'{', b'}']),
    ];
    let w = World::new(backend, "custom_oidc").await;
    let secret = w.enable_generated().await;
    let gina = w.sign_in("gina", &[]).await;
    w.import("gina", "acme").await;
    for (what, body) in &native_cases {
        let a = w.deliver(&[("authorization", format!("Bearer {secret}"))], body).await;
        assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "malformed_payload"), "[{b}] {what}: {:?}", a.body);
    }
    // A body over 1 MiB is refused before anything else (declared length; the server
    // answers without reading it, so only its start is sent).
    let head = format!(
        "POST /v1/webhooks/{} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {secret}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        w.app,
        1024 * 1024 + 1
    );
    let answer = raw_tcp(&w.s, head, b"{\"events\": [".to_vec()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "[{b}] {answer}");
    assert!(answer.contains("payload_too_large"), "[{b}] {answer}");
    // Authentication comes before parsing: garbage with a wrong secret is 401, not 400.
    let a = w.deliver(&[("authorization", "Bearer nope".into())], b"{events").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "[{b}] {:?}", a.body);
    assert_eq!(w.user_status(&gina).await, "active", "[{b}]");
    assert_eq!(w.grant_statuses(&gina).await, vec!["active"], "[{b}]");
    let store = w.s.store().await;
    assert_eq!(count_rows(&store, "webhook_events").await.unwrap(), 0, "[{b}] no event of a malformed batch applies");

    let w = World::new(backend, "auth0").await;
    let secret = w.enable_generated().await;
    let entry = auth0_entry("1", "sdu", "auth0|gina", t);
    let auth0_cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", b" \n".to_vec()),
        ("not json", b"[{".to_vec()),
        ("numbers", b"[1]".to_vec()),
        ("string", br#""sdu""#.to_vec()),
        ("no data", br#"{"log_id": "1"}"#.to_vec()),
        ("no user", serde_json::to_vec(&json!({"log_id": "1", "data": {"type": "sdu", "date": rfc3339(t)}})).unwrap()),
        ("no date", serde_json::to_vec(&json!({"log_id": "1", "data": {"type": "ubuu", "user_id": "u"}})).unwrap()),
        (
            "no log id",
            serde_json::to_vec(&json!({"data": {"type": "sdu", "user_id": "u", "date": rfc3339(t)}})).unwrap(),
        ),
        ("broken line", format!("{entry}\n{{\"log_id\":").into_bytes()),
    ];
    for (what, body) in &auth0_cases {
        let a = w.deliver(&[("authorization", secret.clone())], body).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::BAD_REQUEST, "malformed_payload"),
            "[{b}] auth0 {what}: {:?}",
            a.body
        );
    }

    let w = World::new(backend, "clerk").await;
    w.enable(json!({"signing_secret": CLERK_SECRET})).await;
    let clerk_cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("array", b"[]".to_vec()),
        ("no type", br#"{"data": {"id": "u"}}"#.to_vec()),
        ("no data", br#"{"type": "user.deleted"}"#.to_vec()),
        ("no id", br#"{"type": "user.deleted", "data": {}}"#.to_vec()),
        ("banned not bool", br#"{"type": "user.updated", "data": {"id": "u", "banned": "yes"}}"#.to_vec()),
        (
            "no organization",
            br#"{"type": "organizationMembership.deleted", "data": {"public_user_data": {"user_id": "u"}}}"#.to_vec(),
        ),
    ];
    for (i, (what, body)) in clerk_cases.iter().enumerate() {
        let a = w.deliver(&svix_headers(CLERK_SECRET, &format!("msg_bad{i}"), now(), body), body).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::BAD_REQUEST, "malformed_payload"),
            "[{b}] clerk {what}: {:?}",
            a.body
        );
    }
}

/// Sends `head` and `body` over a plain TCP connection and returns the whole answer as text.
async fn raw_tcp(server: &TestServer, head: String, body: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and close before the body is written; that is the point.
    let _ = stream.write_all(&body).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Makes every audit row for `user_id` written by the identity provider fail, so the lifecycle
/// transaction of an event for that user fails at its very end, after the status change and the
/// revocations.
async fn fail_events_for(store: &Store, backend: Backend, user_id: &str) {
    match backend {
        Backend::Sqlite => {
            execute_sql(
                store,
                &format!(
                    "CREATE TRIGGER webhook_test_failure BEFORE INSERT ON audit_log \
                     WHEN NEW.user_id = '{user_id}' AND NEW.actor = 'idp' \
                     BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
                ),
            )
            .await
            .unwrap();
        }
        Backend::Postgres => {
            execute_sql(
                store,
                "CREATE FUNCTION webhook_test_failure() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
            )
            .await
            .unwrap();
            execute_sql(
                store,
                &format!(
                    "CREATE TRIGGER webhook_test_failure BEFORE INSERT ON audit_log FOR EACH ROW \
                     WHEN (NEW.user_id = '{user_id}' AND NEW.actor = 'idp') EXECUTE FUNCTION webhook_test_failure()"
                ),
            )
            .await
            .unwrap();
        }
    }
}

async fn heal(store: &Store, backend: Backend) {
    match backend {
        Backend::Sqlite => {
            execute_sql(store, "DROP TRIGGER webhook_test_failure").await.unwrap();
        }
        Backend::Postgres => {
            execute_sql(store, "DROP TRIGGER webhook_test_failure ON audit_log").await.unwrap();
            execute_sql(store, "DROP FUNCTION webhook_test_failure()").await.unwrap();
        }
    }
}

backend_test!(a_failing_store_answers_503_and_applies_nothing_of_the_failing_event);
async fn a_failing_store_answers_503_and_applies_nothing_of_the_failing_event(backend: Backend) {
    let b = backend;
    let w = World::new(backend, "custom_oidc").await;
    let secret = w.enable_generated().await;
    let mut ids = HashMap::new();
    let mut grants = HashMap::new();
    for sub in ["hal", "ida", "jon"] {
        ids.insert(sub, w.sign_in(sub, &[]).await);
        grants.insert(sub, w.import(sub, "acme").await);
    }
    let store = w.s.store().await;
    fail_events_for(&store, backend, &ids["ida"]).await;
    let t = now();
    let batch = vec![
        native("f-1", "user.deleted", "hal", t),
        native("f-2", "user.deleted", "ida", t),
        native("f-3", "user.suspended", "jon", t),
    ];

    let a = w.native(&secret, batch.clone()).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "[{b}] {:?}", a.body);
    // The event before the failure stays applied; the failing one changed nothing (status,
    // grant, credential, event id); the one after was not attempted.
    assert_eq!(w.user_status(&ids["hal"]).await, "deprovisioned", "[{b}]");
    assert_eq!(w.user_status(&ids["ida"]).await, "active", "[{b}]");
    assert_eq!(w.grant_statuses(&ids["ida"]).await, vec!["active"], "[{b}]");
    let ida_grant = GrantId::parse(&grants["ida"]).unwrap();
    assert!(store.load_credential(&ida_grant).await.unwrap().is_some(), "[{b}] ida's credential must survive");
    assert_eq!(w.user_status(&ids["jon"]).await, "active", "[{b}]");
    assert_eq!(count_rows(&store, "webhook_events").await.unwrap(), 1, "[{b}]");
    let a = w.token(&w.user("ida", &[]), "acme").await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);

    // The identity provider retries once storage is back: the applied event is a duplicate.
    heal(&store, backend).await;
    let a = w.native(&secret, batch).await;
    assert_eq!((a.status, counts(&a)), (StatusCode::OK, (2, 0, 1)), "[{b}] {:?}", a.body);
    assert_eq!(w.user_status(&ids["ida"]).await, "deprovisioned", "[{b}]");
    assert_eq!(w.user_status(&ids["jon"]).await, "suspended", "[{b}]");
    assert_no_credentials(&store, &w.app_id(), &[grants["hal"].clone(), grants["ida"].clone()], b).await;

    // A store that cannot record event ids at all: 503, nothing applied.
    execute_sql(&store, "DROP TABLE webhook_events").await.unwrap();
    let a = w.native(&secret, vec![native("f-4", "user.reactivated", "jon", t + 5)]).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "[{b}] {:?}", a.body);
    assert_eq!(w.user_status(&ids["jon"]).await, "suspended", "[{b}]");
}

// ----- key rotation -----

backend_test!(a_clerk_secret_is_resealed_under_a_new_master_key);
async fn a_clerk_secret_is_resealed_under_a_new_master_key(backend: Backend) {
    let b = backend;
    let k2 = format!("k2:{}", base64::engine::general_purpose::STANDARD.encode((32u8..64).collect::<Vec<u8>>()));
    let w = World::new(backend, "clerk").await;
    let a = w.enable(json!({"signing_secret": CLERK_SECRET})).await;
    assert_eq!(a.status, StatusCode::OK, "[{b}] {:?}", a.body);
    w.sign_in("user_kim", &[]).await;
    let World { mut s, app, .. } = w;
    s.stop().await;
    let TestServer { db, .. } = s;

    // k2 first, k1 still known: the secret sealed under k1 opens; reseal moves it to k2.
    let both = format!("{k2},{}", custody_tests::harness::MASTER_KEYS);
    let mut s = TestServer::start_on(db, |c| c.master_keys = Some(custody_identity::Secret::new(both.clone()))).await;
    let before = s.state().vault().reseal_all(100).await.expect("reseal");
    assert!(before.resealed >= 2, "[{b}] the hash key and the webhook secret: {before:?}");
    s.stop().await;
    let TestServer { db, .. } = s;

    // Only k2: Clerk deliveries still verify.
    let s = TestServer::start_on(db, |c| c.master_keys = Some(custody_identity::Secret::new(k2.clone()))).await;
    let body = serde_json::to_vec(&json!({"type": "user.deleted", "data": {"id": "user_kim"}})).unwrap();
    let mut req = s.http.post(s.url(&format!("/v1/webhooks/{app}"))).body(body.clone());
    for (name, value) in svix_headers(CLERK_SECRET, "msg_k1", now(), &body) {
        req = req.header(name, value);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "[{b}] {:?}", resp.text().await);
}

// ----- the deletion benchmark piece -----

backend_test!(deletion_benchmark_runs);
async fn deletion_benchmark_runs(backend: Backend) {
    let elapsed = custody_tests::bench::deletion_webhook_with(backend, 20).await;
    assert!(elapsed < Duration::from_secs(10), "[{backend}] {elapsed:?}");
}

/// The full benchmark (1,000 grants); run by hand with
/// `cargo test -p custody-tests --test webhooks_http -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: slow; cargo xtask bench runs it"]
async fn deletion_benchmark_full() {
    for backend in backends() {
        let mut runs = Vec::new();
        for _ in 0..3 {
            runs.push(custody_tests::bench::deletion_webhook(backend).await);
        }
        #[allow(clippy::print_stdout)]
        {
            println!("deletion webhook, {} grants, {backend}: {runs:?}", custody_tests::bench::GRANTS);
        }
    }
}
