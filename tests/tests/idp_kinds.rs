#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Okta and Keycloak end to end: their claim defaults, Okta's event hook (the one-time
//! verification GET, then System Log events) and Keycloak through the native format, each ending
//! in the user's grants revoked. The fake IdP stands in for both (kind chosen explicitly: the
//! fake serves from 127.0.0.1, not from `*.okta.com` or `/realms/...`; detection by URL is unit
//! tested in custody-identity).

use custody_tests::backend_test;
use custody_tests::fake_idp::{Alg, FakeIdp};
use custody_tests::harness::{Answer, Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn rfc3339(at: i64) -> String {
    custody_server::json::rfc3339(custody_identity::UnixTime(at))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// An Okta System Log event targeting the user `user_id` (shape from Okta's event hook docs).
fn okta_event(uuid: &str, event_type: &str, user_id: &str) -> Value {
    json!({
        "uuid": uuid,
        "published": rfc3339(now()),
        "eventType": event_type,
        "version": "0",
        "displayMessage": event_type,
        "severity": "INFO",
        "actor": {"id": "00uadmin", "type": "User", "alternateId": "admin@acme.example", "displayName": "Admin"},
        "client": {"ipAddress": "203.0.113.7"},
        "target": [{"id": user_id, "type": "User", "alternateId": "alice@acme.example", "displayName": "Alice"}]
    })
}

fn okta_delivery(events: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "eventType": "com.okta.event_hook",
        "eventTypeVersion": "1.0",
        "cloudEventsVersion": "0.1",
        "source": "https://dev-123456.okta.com/api/v1/eventHooks/who0001",
        "eventId": format!("delivery-{}", now()),
        "eventTime": rfc3339(now()),
        "contentType": "application/json",
        "data": {"events": events}
    }))
    .unwrap()
}

async fn send(s: &TestServer, method: Method, path: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Answer {
    let mut req = s.http.request(method, s.url(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if let Some(body) = body {
        req = req.header("content-type", "application/json").body(body);
    }
    let resp = req.send().await.expect("sent");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    Answer { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null), headers }
}

/// Imports a grant for `subject`; returns its id.
async fn grant_for(s: &TestServer, app: &str, subject: &str) -> String {
    let a = s
        .admin(
            Method::PUT,
            &format!("/v1/apps/{app}/providers/github"),
            Some(json!({"preset": "github", "client_id": "c", "client_secret": "s"})),
        )
        .await;
    assert!(a.status.is_success(), "{:?}", a.body);
    let a = s
        .admin(
            Method::POST,
            &format!("/v1/apps/{app}/grants"),
            Some(json!({"subject": subject, "provider": "github", "access_token": format!("gho_{subject}")})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    a.body["id"].as_str().unwrap().to_owned()
}

async fn grant_status(s: &TestServer, app: &str, grant: &str) -> String {
    let a = s.admin(Method::GET, &format!("/v1/apps/{app}/grants"), None).await;
    a.body["items"].as_array().unwrap().iter().find(|g| g["id"] == grant).expect("grant listed")["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

backend_test!(okta_event_hooks_verify_the_url_then_deprovision_and_suspend);
async fn okta_event_hooks_verify_the_url_then_deprovision_and_suspend(backend: Backend) {
    let s = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = s.create_app("Okta app").await;
    let created = s.attach_idp(&app, &idp, json!({"kind": "okta"})).await;
    assert_eq!(created.body["kind"], "okta", "[{backend:?}] {:?}", created.body);
    assert_eq!(created.body["claims"]["group"], "groups", "[{backend:?}] Okta's default group claim");
    let enabled = s.admin(Method::POST, &format!("/v1/apps/{app}/identity-provider/webhook/enable"), None).await;
    assert_eq!(enabled.status, StatusCode::OK, "{:?}", enabled.body);
    assert_eq!(enabled.body["secret_source"], "generated");
    let secret = enabled.body["signing_secret"].as_str().unwrap().to_owned();
    let auth = format!("Bearer {secret}");
    let path = format!("/v1/webhooks/{app}");

    // Okta's one-time verification: the challenge is echoed once the secret is proven.
    let challenge = "vTp2m3AEr2v8yyqSjyRtjGw8";
    let a =
        send(&s, Method::GET, &path, &[("authorization", &auth), ("x-okta-verification-challenge", challenge)], None)
            .await;
    assert_eq!(a.status, StatusCode::OK, "[{backend:?}] {:?}", a.body);
    assert_eq!(a.body, json!({"verification": challenge}));
    let a = send(&s, Method::GET, &path, &[("x-okta-verification-challenge", challenge)], None).await;
    assert_eq!((a.status, a.code()), (StatusCode::UNAUTHORIZED, "invalid_signature"), "{:?}", a.body);
    let a = send(&s, Method::GET, &path, &[("authorization", &auth)], None).await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "malformed_payload"), "{:?}", a.body);

    // Two users, known by their Okta user ids, each holding a grant.
    let mut claims = idp.claims_for("00ualice");
    claims["groups"] = json!(["eng"]);
    let alice_token = idp.sign(claims, Alg::Rs256);
    let me = s.runtime(Method::GET, "/v1/me", &key, &alice_token, None).await;
    assert_eq!(me.status, StatusCode::OK, "{:?}", me.body);
    assert_eq!(me.body["groups"], json!(["eng"]), "Okta's groups claim");
    let alice_grant = grant_for(&s, &app, "00ualice").await;
    let bob_grant = grant_for(&s, &app, "00ubob").await;

    // Suspension, then unsuspension, of bob; deactivation of alice; an unrelated event.
    let body = okta_delivery(vec![
        okta_event("evt-1", "user.lifecycle.suspend", "00ubob"),
        okta_event("evt-2", "user.lifecycle.deactivate", "00ualice"),
        okta_event("evt-3", "user.session.start", "00ubob"),
    ]);
    let a = send(&s, Method::POST, &path, &[("authorization", &auth)], Some(body)).await;
    assert_eq!(a.status, StatusCode::OK, "[{backend:?}] {:?}", a.body);
    assert_eq!(a.body, json!({"processed": 2, "ignored": 1, "duplicates": 0}));
    assert_eq!(grant_status(&s, &app, &alice_grant).await, "revoked", "[{backend:?}] deactivation deprovisions");
    let me = s.runtime(Method::GET, "/v1/me", &key, &alice_token, None).await;
    assert_eq!((me.status, me.code()), (StatusCode::FORBIDDEN, "user_deprovisioned"), "{:?}", me.body);
    let bob_token = idp.token_for("00ubob");
    let me = s.runtime(Method::GET, "/v1/me", &key, &bob_token, None).await;
    assert_eq!((me.status, me.code()), (StatusCode::FORBIDDEN, "user_suspended"), "{:?}", me.body);
    assert_eq!(grant_status(&s, &app, &bob_grant).await, "active", "suspension keeps the grant");

    let later = okta_delivery(vec![okta_event("evt-4", "user.lifecycle.unsuspend", "00ubob")]);
    let a = send(&s, Method::POST, &path, &[("authorization", &auth)], Some(later.clone())).await;
    assert_eq!(a.body, json!({"processed": 1, "ignored": 0, "duplicates": 0}), "{:?}", a.body);
    let me = s.runtime(Method::GET, "/v1/me", &key, &bob_token, None).await;
    assert_eq!(me.status, StatusCode::OK, "unsuspended: {:?}", me.body);
    // Okta retries deliveries: the same event again is a duplicate.
    let a = send(&s, Method::POST, &path, &[("authorization", &auth)], Some(later)).await;
    assert_eq!(a.body, json!({"processed": 0, "ignored": 0, "duplicates": 1}), "{:?}", a.body);
    // A forged delivery changes nothing.
    let forged = okta_delivery(vec![okta_event("evt-5", "user.lifecycle.delete.initiated", "00ubob")]);
    let a = send(&s, Method::POST, &path, &[("authorization", "Bearer cwh_forged")], Some(forged)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(grant_status(&s, &app, &bob_grant).await, "active");
}

backend_test!(keycloak_realm_roles_and_native_deletion);
async fn keycloak_realm_roles_and_native_deletion(backend: Backend) {
    let s = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = s.create_app("Keycloak app").await;
    let created = s.attach_idp(&app, &idp, json!({"kind": "keycloak"})).await;
    assert_eq!(created.body["kind"], "keycloak");
    assert_eq!(created.body["claims"]["role"], "realm_access.roles", "[{backend:?}] {:?}", created.body);
    let mut claims = idp.claims_for("f3b1c2d4-kc-user");
    claims["realm_access"] = json!({"roles": ["offline_access", "billing-admin"]});
    let token = idp.sign(claims, Alg::Rs256);
    let me = s.runtime(Method::GET, "/v1/me", &key, &token, None).await;
    assert_eq!(me.status, StatusCode::OK, "{:?}", me.body);
    assert_eq!(me.body["roles"], json!(["billing-admin", "offline_access"]), "sorted");
    let grant = grant_for(&s, &app, "f3b1c2d4-kc-user").await;

    let enabled = s.admin(Method::POST, &format!("/v1/apps/{app}/identity-provider/webhook/enable"), None).await;
    let secret = enabled.body["signing_secret"].as_str().unwrap().to_owned();
    let body = serde_json::to_vec(&json!({"events": [{
        "id": "kc-evt-1", "type": "user.deleted", "subject": "f3b1c2d4-kc-user", "occurred_at": rfc3339(now())
    }]}))
    .unwrap();
    let auth = format!("Bearer {secret}");
    let a = send(&s, Method::POST, &format!("/v1/webhooks/{app}"), &[("authorization", &auth)], Some(body)).await;
    assert_eq!(a.body, json!({"processed": 1, "ignored": 0, "duplicates": 0}), "[{backend:?}] {:?}", a.body);
    assert_eq!(grant_status(&s, &app, &grant).await, "revoked");
    // Keycloak has no verification request.
    let a = send(
        &s,
        Method::GET,
        &format!("/v1/webhooks/{app}"),
        &[("authorization", &auth), ("x-okta-verification-challenge", "x")],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.body);
}
