//! Benchmark pieces for `cargo xtask bench`, built on the in-process harness.
//!
//! [`deletion_webhook`] measures the deprovisioning path of the lifecycle webhooks: the time
//! from sending a signed `user.deleted` delivery for a user who holds 1,000 active grants to
//! receiving its 200. Everything that request does is inside the measurement: authenticating
//! the delivery, decoding it, and the one transaction that marks the user deprovisioned, revokes
//! the 1,000 grants, deletes their credential rows, queues their tokens for provider revocation
//! (2,000 outbox rows: each grant has an access and a refresh token, and the provider a
//! revocation endpoint) and writes the audit row. Provider revocations run after the answer, in
//! the outbox worker, and are not measured.

use crate::fake_idp::FakeIdp;
use crate::fake_oauth::FakeOAuth;
use crate::harness::TestServer;
use custody_store::Backend;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The number of grants the user holds in [`deletion_webhook`].
pub const GRANTS: usize = 1000;

/// How many setup requests are in flight at once.
const SETUP_CONCURRENCY: usize = 8;

/// The subject of the benchmarked user.
const SUBJECT: &str = "bench-user";

/// Starts a fresh server on `backend` (PostgreSQL needs `CUSTODY_TEST_POSTGRES_URL`, as the test
/// suites do), gives one user [`GRANTS`] active grants (one per provider, imported through the
/// operator API), enables custom-OIDC webhooks, and returns the time from sending the user's
/// `user.deleted` webhook to its 200. Panics when the setup or the delivery fails.
pub async fn deletion_webhook(backend: Backend) -> Duration {
    deletion_webhook_with(backend, GRANTS).await
}

/// As [`deletion_webhook`] for a user holding `grants` grants.
pub async fn deletion_webhook_with(backend: Backend, grants: usize) -> Duration {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let oauth = FakeOAuth::start().await;
    let (app, _key) = server.app_with_idp(&idp).await;
    let server = Arc::new(server);

    // One provider per grant (a user has at most one active grant per provider), then one
    // import each, a few requests at a time.
    let provider_body = oauth.provider_body(&["read"]);
    in_parallel(&server, grants, |s, i| {
        let (app, body) = (app.clone(), provider_body.clone());
        async move {
            let a = s.admin(Method::PUT, &format!("/v1/apps/{app}/providers/p{i:05}"), Some(body)).await;
            assert_eq!(a.status, StatusCode::OK, "provider p{i:05}: {:?}", a.body);
        }
    })
    .await;
    in_parallel(&server, grants, |s, i| {
        let app = app.clone();
        async move {
            let body = json!({
                "subject": SUBJECT,
                "provider": format!("p{i:05}"),
                "access_token": format!("bench-access-{i}"),
                "refresh_token": format!("bench-refresh-{i}"),
                "expires_in": 3600,
            });
            let a = s.admin(Method::POST, &format!("/v1/apps/{app}/grants"), Some(body)).await;
            assert_eq!(a.status, StatusCode::CREATED, "import {i}: {:?}", a.body);
        }
    })
    .await;

    let a =
        server.admin(Method::POST, &format!("/v1/apps/{app}/identity-provider/webhook/enable"), Some(json!({}))).await;
    assert_eq!(a.status, StatusCode::OK, "enable webhooks: {:?}", a.body);
    let secret = a.body["signing_secret"].as_str().expect("generated secret").to_owned();
    let body = serde_json::to_vec(&json!({"events": [{
        "id": "bench-deletion",
        "type": "user.deleted",
        "subject": SUBJECT,
        "occurred_at": custody_server::json::rfc3339(server.state().now()),
    }]}))
    .expect("JSON");
    let request = server
        .http
        .post(server.url(&format!("/v1/webhooks/{app}")))
        .header("authorization", format!("Bearer {secret}"))
        .header("content-type", "application/json")
        .body(body);

    let started = Instant::now();
    let response = request.send().await.expect("delivery sent");
    let status = response.status();
    let answer = response.bytes().await.expect("answer read");
    let elapsed = started.elapsed();

    assert_eq!(status, StatusCode::OK, "delivery: {}", String::from_utf8_lossy(&answer));
    let answer: serde_json::Value = serde_json::from_slice(&answer).expect("JSON answer");
    assert_eq!(answer["processed"], 1, "{answer}");
    let a = server.admin(Method::GET, &format!("/v1/apps/{app}/grants?status=active&limit=1"), None).await;
    assert_eq!(a.body["items"], json!([]), "every grant is revoked: {:?}", a.body);

    if let Ok(mut server) = Arc::try_unwrap(server) {
        server.stop().await;
    }
    elapsed
}

/// Runs `task(server, i)` for `i` in `0..n`, [`SETUP_CONCURRENCY`] at a time.
async fn in_parallel<F, Fut>(server: &Arc<TestServer>, n: usize, task: F)
where
    F: Fn(Arc<TestServer>, usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut running = tokio::task::JoinSet::new();
    for i in 0..n {
        if running.len() >= SETUP_CONCURRENCY {
            if let Some(done) = running.join_next().await {
                done.expect("setup task");
            }
        }
        running.spawn(task(server.clone(), i));
    }
    while let Some(done) = running.join_next().await {
        done.expect("setup task");
    }
}
