//! The verified-token cache (issue 6): it only ever saves the signature check, and never
//! outlives what it may: a token's `exp`, the key that verified it, or the IdP settings. User
//! status is read on every request, so a deprovisioned user is refused with a cached token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use custody_providers::{HttpClient, HttpClientSettings, JwksSettings, JwksVerifier};
use custody_tests::backend_test;
use custody_tests::clock::ManualClock;
use custody_tests::fake_idp::{Alg, FakeIdp};
use custody_tests::harness::{Backend, TestServer};
use reqwest::{Method, StatusCode};
use std::sync::Arc;
use std::time::Duration;

fn verifier(cooldown: Duration) -> JwksVerifier {
    verifier_on(cooldown, Arc::new(ManualClock::new()))
}

/// A verifier reading the time from `clock`.
fn verifier_on(cooldown: Duration, clock: Arc<ManualClock>) -> JwksVerifier {
    let http =
        HttpClient::new(HttpClientSettings { allow_private_addresses: true, ..HttpClientSettings::default() }).unwrap();
    JwksVerifier::with_clock(http, JwksSettings { refetch_cooldown: cooldown, ..JwksSettings::default() }, clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_token_again_is_answered_from_the_cache() {
    let idp = FakeIdp::start().await;
    let v = verifier(Duration::from_secs(60));
    let token = idp.token_for("alice");
    let first = v.verify(&idp.jwks_uri(), &token).await.unwrap();
    assert_eq!(v.verified_cache_hits(), 0);
    let second = v.verify(&idp.jwks_uri(), &token).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(v.verified_cache_hits(), 1);
    // Another token is checked in full; the same token for another jwks_uri is not a hit.
    v.verify(&idp.jwks_uri(), &idp.token_for("bob")).await.unwrap();
    assert_eq!(v.verified_cache_hits(), 1);
    let other = format!("{}?other", idp.jwks_uri());
    let _ = v.verify(&other, &token).await;
    assert_eq!(v.verified_cache_hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_does_not_outlive_the_tokens_exp() {
    let idp = FakeIdp::start().await;
    let clock = Arc::new(ManualClock::new());
    let v = verifier_on(Duration::from_secs(60), clock.clone());
    let mut claims = idp.claims_for("alice");
    let exp = claims["iat"].as_i64().unwrap() + 2;
    claims["exp"] = serde_json::json!(exp);
    let token = idp.sign(claims, Alg::Rs256);
    v.verify(&idp.jwks_uri(), &token).await.unwrap();
    v.verify(&idp.jwks_uri(), &token).await.unwrap();
    assert_eq!(v.verified_cache_hits(), 1);
    // Past `exp` the entry is gone: the signature is checked again (the caller's claim check
    // then refuses the token; here only the cache is under test).
    clock.advance(Duration::from_millis(3100));
    v.verify(&idp.jwks_uri(), &token).await.unwrap();
    assert_eq!(v.verified_cache_hits(), 1, "an expired token's entry was used");
    // And a token that has already expired is never remembered.
    let mut claims = idp.claims_for("bob");
    claims["exp"] = serde_json::json!(claims["iat"].as_i64().unwrap() - 10);
    let stale = idp.sign(claims, Alg::Rs256);
    v.verify(&idp.jwks_uri(), &stale).await.unwrap();
    v.verify(&idp.jwks_uri(), &stale).await.unwrap();
    assert_eq!(v.verified_cache_hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_out_kid_ends_its_tokens_entries() {
    let idp = FakeIdp::start().await;
    // No cooldown, so the new key's first token refetches the JWKS at once.
    let v = verifier(Duration::ZERO);
    let old = idp.token_for("alice");
    v.verify(&idp.jwks_uri(), &old).await.unwrap();
    v.verify(&idp.jwks_uri(), &old).await.unwrap();
    assert_eq!(v.verified_cache_hits(), 1);
    idp.rotate(Alg::Rs256, true);
    // A token under the new key makes the verifier fetch the JWKS, which no longer holds the
    // old kid.
    v.verify(&idp.jwks_uri(), &idp.token_for("bob")).await.unwrap();
    let refused = v.verify(&idp.jwks_uri(), &old).await;
    assert!(refused.is_err(), "a token of a rotated-out key was still accepted: {refused:?}");
    assert_eq!(v.verified_cache_hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_the_idp_drops_its_entries() {
    let idp = FakeIdp::start().await;
    let v = verifier(Duration::from_secs(60));
    let token = idp.token_for("alice");
    v.verify(&idp.jwks_uri(), &token).await.unwrap();
    v.forget_jwks_uri(&idp.jwks_uri()).await;
    v.verify(&idp.jwks_uri(), &token).await.unwrap();
    assert_eq!(v.verified_cache_hits(), 0);
}

async fn me(server: &TestServer, key: &str, token: &str) -> (StatusCode, serde_json::Value) {
    let a = server.runtime(Method::GET, "/v1/me", key, token, None).await;
    (a.status, a.body)
}

backend_test!(settings_changes_and_deprovisioning_hold_with_a_cached_token);
async fn settings_changes_and_deprovisioning_hold_with_a_cached_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, key) = server.app_with_idp(&idp).await;
    let token = idp.token_for("alice");
    let (status, user) = me(&server, &key, &token).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(me(&server, &key, &token).await.0, StatusCode::OK);
    let hits = server.state().jwks().verified_cache_hits();
    assert!(hits >= 1, "the second call should have hit the cache");

    // An audience change applies to the cached token at once (claims are checked per call),
    // and drops the app's entries.
    let a = server
        .admin(
            Method::PATCH,
            &format!("/v1/apps/{app}/identity-provider"),
            Some(serde_json::json!({"audience": "another"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let (status, body) = me(&server, &key, &token).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_user_token")), "{body}");
    let a = server
        .admin(
            Method::PATCH,
            &format!("/v1/apps/{app}/identity-provider"),
            Some(serde_json::json!({"audience": idp.audience()})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(me(&server, &key, &token).await.0, StatusCode::OK);

    // Deprovisioning holds on the very next request, cached token or not.
    assert_eq!(me(&server, &key, &token).await.0, StatusCode::OK);
    let user_id = user["user_id"].as_str().unwrap();
    let a = server.admin(Method::POST, &format!("/v1/apps/{app}/users/{user_id}/deprovision"), None).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let (status, body) = me(&server, &key, &token).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("user_deprovisioned")), "{body}");
}
