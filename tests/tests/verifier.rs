#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `HttpDiscovery`, `JwksVerifier` and the domain's claim checks against a real (fake) OpenID
//! Provider over HTTP on loopback.

use custody_identity::idp::{IdpConfig, IdpEndpoints, IdpKind};
use custody_identity::jwt::{validate_claims, ClaimExpectations, TokenRejection, VerifiedClaims};
use custody_identity::ports::{Discovery, DiscoveryError, TokenVerifier};
use custody_identity::{AppId, ClaimMappings, IdpId, Issuer, IssuerUrl, IssuerUrlPolicy, UnixTime};
use custody_providers::{HttpClient, HttpClientSettings, HttpDiscovery, JwksSettings, JwksVerifier};
use custody_tests::clock::ManualClock;
use custody_tests::fake_idp::{Alg, DiscoveryMode, FakeIdp};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn client(allow_private: bool) -> HttpClient {
    HttpClient::new(HttpClientSettings { allow_private_addresses: allow_private, ..HttpClientSettings::default() })
        .unwrap()
}

fn verifier_with(config: JwksSettings) -> JwksVerifier {
    JwksVerifier::new(client(true), config)
}

/// A verifier reading the time from `clock`, for tests that move time forward.
fn verifier_on(config: JwksSettings, clock: &Arc<ManualClock>) -> JwksVerifier {
    JwksVerifier::with_clock(client(true), config, clock.clone())
}

fn verifier(cooldown: Duration) -> JwksVerifier {
    verifier_with(JwksSettings { refetch_cooldown: cooldown, ..JwksSettings::default() })
}

fn now() -> UnixTime {
    UnixTime(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64)
}

fn idp_config(idp: &FakeIdp) -> IdpConfig {
    config_for_jwks(idp, idp.jwks_uri())
}

fn config_for_jwks(idp: &FakeIdp, jwks_uri: String) -> IdpConfig {
    IdpConfig {
        id: IdpId::parse("00000000-0000-4000-8000-000000000001").unwrap(),
        app_id: AppId::parse("00000000-0000-4000-8000-000000000002").unwrap(),
        kind: IdpKind::from_static("custom_oidc"),
        issuer: Issuer::new(idp.issuer()),
        jwks_uri,
        audience: Some(idp.audience().to_owned()),
        claims: ClaimMappings::subject_only(),
        claims_locked_at: None,
        version: 1,
        created_at: now(),
        endpoints: IdpEndpoints::default(),
    }
}

/// Signature, then the registered claims, as the domain does it.
async fn verify(verifier: &JwksVerifier, config: &IdpConfig, token: &str) -> Result<VerifiedClaims, TokenRejection> {
    let claims = verifier.verify_signature(config, token).await?;
    let expect = ClaimExpectations { issuer: &config.issuer, audience: config.audience.as_deref(), leeway_secs: 60 };
    validate_claims(claims, &expect, now())
}

fn issuer_url(idp: &FakeIdp) -> IssuerUrl {
    IssuerUrl::parse(&idp.issuer(), IssuerUrlPolicy::AllowInsecureLoopback).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Discovery

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_fetches_and_checks_the_document() {
    let idp = FakeIdp::start().await;
    let discovery = HttpDiscovery::new(client(true));
    let doc = discovery.discover(&issuer_url(&idp)).await.unwrap();
    assert_eq!(doc.issuer, idp.issuer());
    assert_eq!(doc.jwks_uri, idp.jwks_uri());
    assert_eq!(doc.signing_algs, vec!["RS256", "ES256", "EdDSA"]);
    assert_eq!(doc.authorization_endpoint, None);
    assert_eq!(idp.discovery_fetches(), 1);

    // Optional endpoints are passed through; an issuer URL with a trailing slash still matches.
    idp.set_metadata("token_endpoint", json!(format!("{}/token", idp.issuer())));
    let with_slash = IssuerUrl::parse(&format!("{}/", idp.issuer()), IssuerUrlPolicy::AllowInsecureLoopback).unwrap();
    let doc = discovery.discover(&with_slash).await.unwrap();
    assert_eq!(doc.token_endpoint, Some(format!("{}/token", idp.issuer())));
    assert_eq!(doc.issuer, idp.issuer());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_failures() {
    let idp = FakeIdp::start().await;
    let discovery = HttpDiscovery::new(client(true));
    let url = issuer_url(&idp);

    idp.set_discovery_mode(DiscoveryMode::ServerError);
    assert_eq!(discovery.discover(&url).await, Err(DiscoveryError::Status(500)));

    idp.set_discovery_mode(DiscoveryMode::NotJson);
    assert_eq!(discovery.discover(&url).await, Err(DiscoveryError::NotJson));

    idp.set_discovery_mode(DiscoveryMode::MissingJwksUri);
    assert_eq!(discovery.discover(&url).await, Err(DiscoveryError::NoJwksUri));

    idp.set_discovery_mode(DiscoveryMode::Normal);
    idp.set_declared_issuer(Some("https://evil.example.com"));
    assert_eq!(
        discovery.discover(&url).await,
        Err(DiscoveryError::IssuerMismatch { declared: "https://evil.example.com".into() })
    );

    idp.set_declared_issuer(None);
    idp.set_metadata("jwks_uri", json!("ftp://example.com/jwks"));
    assert_eq!(discovery.discover(&url).await, Err(DiscoveryError::BadEndpoint("jwks_uri")));
    assert_eq!(idp.discovery_fetches(), 5);

    // Nothing listening.
    let gone = {
        let other = FakeIdp::start().await;
        issuer_url(&other)
    };
    assert!(matches!(discovery.discover(&gone).await, Err(DiscoveryError::Unreachable(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_refused_unless_private_addresses_are_allowed() {
    let idp = FakeIdp::start().await;
    let strict = HttpDiscovery::new(client(false));
    let port = idp.addr().port();

    // Plain http is refused outright.
    let err = strict.discover(&issuer_url(&idp)).await.unwrap_err();
    assert!(matches!(&err, DiscoveryError::Unreachable(m) if m.contains("https")), "{err:?}");

    // https to a loopback address, literal or by name, is refused before connecting.
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("[::1]:{port}")] {
        let url = IssuerUrl::parse(&format!("https://{host}"), IssuerUrlPolicy::HttpsOnly).unwrap();
        let err = strict.discover(&url).await.unwrap_err();
        assert!(matches!(&err, DiscoveryError::Unreachable(m) if m.contains("not allowed")), "{host}: {err:?}");
    }
    assert_eq!(idp.discovery_fetches(), 0);

    // The same rules hold for the JWKS.
    let verifier = JwksVerifier::new(client(false), JwksSettings::default());
    for jwks_uri in [idp.jwks_uri(), format!("https://127.0.0.1:{port}/jwks")] {
        let config = config_for_jwks(&idp, jwks_uri);
        assert_eq!(verifier.verify_signature(&config, &idp.token_for("u")).await, Err(TokenRejection::KeysUnavailable));
    }
    assert_eq!(idp.jwks_fetches(), 0);
}

// ---------------------------------------------------------------------------------------------
// Verification

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifies_rs256_es256_and_eddsa_with_one_fetch() {
    let idp = FakeIdp::start().await;
    let verifier = verifier(Duration::from_secs(60));
    let config = idp_config(&idp);
    for alg in Alg::ALL {
        let token = idp.sign(idp.claims_for(&format!("user-{}", alg.as_str())), alg);
        let verified = verify(&verifier, &config, &token).await.unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(verified.claims["sub"], json!(format!("user-{}", alg.as_str())));
        assert!(verified.issued_at.is_some());
    }
    // Without a kid, every key for the algorithm is tried.
    let no_kid = idp.sign_with_kid(idp.claims_for("anon"), Alg::Es256, None);
    assert_eq!(verify(&verifier, &config, &no_kid).await.unwrap().claims["sub"], "anon");
    assert_eq!(idp.jwks_fetches(), 1);
    assert_eq!(verifier.fetch_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_share_one_fetch() {
    let idp = FakeIdp::start().await;
    let verifier = verifier(Duration::from_secs(60));
    let config = idp_config(&idp);
    let token = idp.token_for("u");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (verifier, config, token) = (verifier.clone(), config.clone(), token.clone());
            tokio::spawn(async move { verifier.verify_signature(&config, &token).await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().is_ok());
    }
    assert_eq!(idp.jwks_fetches(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_right_after_start_is_picked_up() {
    let idp = FakeIdp::start().await;
    let verifier = verifier(Duration::from_secs(3600));
    let config = idp_config(&idp);
    let old_token = idp.token_for("u");
    verify(&verifier, &config, &old_token).await.unwrap();
    assert_eq!(idp.jwks_fetches(), 1);

    let new_kid = idp.rotate(Alg::Rs256, false);
    assert_eq!(idp.current_kid(Alg::Rs256), new_kid);
    let new_token = idp.token_for("u");
    verify(&verifier, &config, &new_token).await.unwrap();
    assert_eq!(idp.jwks_fetches(), 2, "the unknown kid caused one refetch");
    verify(&verifier, &config, &old_token).await.unwrap();
    verify(&verifier, &config, &new_token).await.unwrap();
    assert_eq!(idp.jwks_fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_costs_one_refetch_per_cooldown() {
    let idp = FakeIdp::start().await;
    let verifier = verifier(Duration::from_secs(3600));
    let config = idp_config(&idp);
    let good = idp.token_for("u");
    verify(&verifier, &config, &good).await.unwrap();
    assert_eq!(idp.jwks_fetches(), 1);

    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let alg = Alg::ALL[i % 3];
            let token = idp.sign_with_random_kid(idp.claims_for("attacker"), alg);
            let (verifier, config) = (verifier.clone(), config.clone());
            tokio::spawn(async move { verifier.verify_signature(&config, &token).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Err(TokenRejection::UnknownKey));
    }
    assert_eq!(idp.jwks_fetches(), 2, "exactly one refetch after the initial fetch");
    assert_eq!(verifier.fetch_count(), 2);

    // Within the cooldown even a genuinely new key waits; known keys keep working.
    idp.rotate(Alg::Es256, false);
    let rotated = idp.sign(idp.claims_for("u"), Alg::Es256);
    assert_eq!(verifier.verify_signature(&config, &rotated).await, Err(TokenRejection::UnknownKey));
    verify(&verifier, &config, &good).await.unwrap();
    assert_eq!(idp.jwks_fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_cooldown_a_new_miss_refetches_again() {
    let idp = FakeIdp::start().await;
    let cooldown = Duration::from_secs(1);
    let clock = Arc::new(ManualClock::new());
    let verifier = verifier_on(JwksSettings { refetch_cooldown: cooldown, ..JwksSettings::default() }, &clock);
    let config = idp_config(&idp);
    verify(&verifier, &config, &idp.token_for("u")).await.unwrap();

    let unknown = || idp.sign_with_random_kid(idp.claims_for("u"), Alg::Rs256);
    assert_eq!(verifier.verify_signature(&config, &unknown()).await, Err(TokenRejection::UnknownKey));
    assert_eq!(idp.jwks_fetches(), 2);
    assert_eq!(verifier.verify_signature(&config, &unknown()).await, Err(TokenRejection::UnknownKey));
    assert_eq!(idp.jwks_fetches(), 2, "still cooling down");

    clock.advance(cooldown + Duration::from_millis(100));
    assert_eq!(verifier.verify_signature(&config, &unknown()).await, Err(TokenRejection::UnknownKey));
    assert_eq!(idp.jwks_fetches(), 3);

    // A rotation that drops the old key: the new key is found after the next cooldown, the old
    // one is gone from then on.
    clock.advance(cooldown + Duration::from_millis(100));
    let old = idp.token_for("u");
    idp.rotate(Alg::Rs256, true);
    let new = idp.token_for("u");
    verify(&verifier, &config, &new).await.unwrap();
    assert_eq!(idp.jwks_fetches(), 4);
    assert_eq!(verify(&verifier, &config, &old).await, Err(TokenRejection::UnknownKey));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refetch_keeps_the_keys_already_held() {
    let idp = FakeIdp::start().await;
    let verifier = verifier(Duration::from_secs(3600));
    let config = idp_config(&idp);
    let good = idp.token_for("u");
    verify(&verifier, &config, &good).await.unwrap();

    idp.set_jwks_failing(true);
    idp.rotate(Alg::EdDsa, false);
    let rotated = idp.sign(idp.claims_for("u"), Alg::EdDsa);
    assert_eq!(verifier.verify_signature(&config, &rotated).await, Err(TokenRejection::UnknownKey));
    assert_eq!(idp.jwks_fetches(), 2);
    assert_eq!(verifier.fetch_failure_count(), 1);
    verify(&verifier, &config, &good).await.unwrap();

    // With no keys at all, the answer is KeysUnavailable.
    let fresh = verifier_with(JwksSettings { failure_backoff: Duration::ZERO, ..JwksSettings::default() });
    assert_eq!(fresh.verify_signature(&config, &good).await, Err(TokenRejection::KeysUnavailable));
    idp.set_jwks_failing(false);
    assert!(fresh.verify_signature(&config, &good).await.is_ok(), "recovers once the JWKS answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_lifetime_follows_cache_control_and_stale_keys_serve_while_refresh_fails() {
    let idp = FakeIdp::start().await;
    idp.set_jwks_cache_control(Some("public, max-age=1"));
    let clock = Arc::new(ManualClock::new());
    let verifier = verifier_on(
        JwksSettings {
            min_ttl: Duration::from_millis(500),
            failure_backoff: Duration::from_millis(500),
            ..JwksSettings::default()
        },
        &clock,
    );
    let config = idp_config(&idp);
    let good = idp.token_for("u");
    verify(&verifier, &config, &good).await.unwrap();
    verify(&verifier, &config, &good).await.unwrap();
    assert_eq!(idp.jwks_fetches(), 1, "cached for max-age");

    clock.advance(Duration::from_millis(1200));
    verify(&verifier, &config, &good).await.unwrap();
    verifier.settled(&config.jwks_uri).await;
    assert_eq!(idp.jwks_fetches(), 2, "refetched (in the background) once max-age passed");

    idp.set_jwks_failing(true);
    clock.advance(Duration::from_millis(1200));
    verify(&verifier, &config, &good).await.unwrap();
    verifier.settled(&config.jwks_uri).await;
    assert_eq!(idp.jwks_fetches(), 3, "the refresh was tried, failed, and the last good keys served");
    verify(&verifier, &config, &good).await.unwrap();
    assert_eq!(idp.jwks_fetches(), 3, "not retried before the failure backoff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_drops_the_cached_keys() {
    let idp = FakeIdp::start().await;
    let verifier = verifier(Duration::from_secs(3600));
    let config = idp_config(&idp);
    verify(&verifier, &config, &idp.token_for("u")).await.unwrap();
    verifier.forget(&config).await;
    verify(&verifier, &config, &idp.token_for("u")).await.unwrap();
    assert_eq!(idp.jwks_fetches(), 2);
}

// ---------------------------------------------------------------------------------------------
// Rejections

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_broken_tokens_are_rejected() {
    let idp = FakeIdp::start().await;
    let verifier = verifier(Duration::from_secs(3600));
    let config = idp_config(&idp);
    let claims = idp.claims_for("victim");
    let check = |token: String| {
        let (verifier, config) = (verifier.clone(), config.clone());
        async move { verifier.verify_signature(&config, &token).await }
    };

    assert_eq!(
        check(idp.unsigned_token(claims.clone())).await,
        Err(TokenRejection::DisallowedAlgorithm("none".into()))
    );
    assert_eq!(
        check(idp.hs256_with_public_key(claims.clone())).await,
        Err(TokenRejection::DisallowedAlgorithm("HS256".into()))
    );
    assert_eq!(idp.jwks_fetches(), 0, "disallowed algorithms are refused before any key is fetched");

    assert_eq!(check(idp.sign_with_unpublished_key(claims.clone(), Alg::Es256)).await, Err(TokenRejection::UnknownKey));

    // The kid of the RSA key on an ES256 token: the key does not agree with the algorithm.
    let rsa_kid = idp.current_kid(Alg::Rs256);
    let mismatched = idp.sign_with_kid(claims.clone(), Alg::Es256, Some(&rsa_kid));
    assert_eq!(check(mismatched).await, Err(TokenRejection::BadSignature));

    // A payload swapped under a valid signature.
    let token = idp.token_for("victim");
    let parts: Vec<&str> = token.split('.').collect();
    let other_payload = idp.token_for("attacker").split('.').nth(1).unwrap().to_owned();
    let swapped = format!("{}.{}.{}", parts[0], other_payload, parts[2]);
    assert_eq!(check(swapped).await, Err(TokenRejection::BadSignature));

    for garbage in ["", "not a jwt", "a.b", "a.b.c", "....", "eyJhbGciOiJSUzI1NiJ9.e30"] {
        assert_eq!(check(garbage.to_owned()).await, Err(TokenRejection::Malformed), "{garbage:?}");
    }

    let mut big = idp.claims_for("victim");
    big["padding"] = Value::String("x".repeat(17 * 1024));
    assert_eq!(check(idp.sign(big, Alg::Rs256)).await, Err(TokenRejection::TooLong(16 * 1024)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_claims_are_checked_after_the_signature() {
    let idp = FakeIdp::start().await;
    let verifier = verifier(Duration::from_secs(3600));
    let config = idp_config(&idp);

    let mut expired = idp.claims_for("u");
    expired["exp"] = json!(now().seconds() - 120);
    assert_eq!(verify(&verifier, &config, &idp.sign(expired, Alg::Rs256)).await, Err(TokenRejection::Expired));

    let mut no_exp = idp.claims_for("u");
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(verify(&verifier, &config, &idp.sign(no_exp, Alg::Es256)).await, Err(TokenRejection::MissingExpiry));

    let mut wrong_aud = idp.claims_for("u");
    wrong_aud["aud"] = json!("someone-else");
    assert!(matches!(
        verify(&verifier, &config, &idp.sign(wrong_aud, Alg::EdDsa)).await,
        Err(TokenRejection::WrongAudience { .. })
    ));

    let mut wrong_iss = idp.claims_for("u");
    wrong_iss["iss"] = json!(format!("{}/", idp.issuer()));
    assert!(matches!(
        verify(&verifier, &config, &idp.sign(wrong_iss, Alg::Rs256)).await,
        Err(TokenRejection::WrongIssuer { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// A hanging IdP (issue 15 items 9 and 10)

/// A verifier whose key sets are never fresh (every use starts a background refresh) and whose
/// unknown-kid wait is `miss_wait`.
fn always_refreshing(miss_wait: Duration) -> JwksVerifier {
    verifier_with(JwksSettings {
        max_age: Duration::ZERO,
        miss_wait,
        failure_backoff: Duration::ZERO,
        refetch_cooldown: Duration::ZERO,
        ..JwksSettings::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_idp_never_stalls_a_request_while_keys_are_held() {
    let idp = FakeIdp::start().await;
    let verifier = always_refreshing(Duration::from_millis(300));
    let config = idp_config(&idp);
    verify(&verifier, &config, &idp.token_for("first")).await.unwrap();
    verifier.settled(&config.jwks_uri).await;
    let before = idp.jwks_fetches();

    // From here the IdP accepts the JWKS request and never answers (until the end of the test,
    // well inside the HTTP client's 10 s timeout): any request that waited for it would take
    // that long.
    idp.set_jwks_hanging(true);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (verifier, config, token) = (verifier.clone(), config.clone(), idp.token_for(&format!("user{i}")));
        tasks.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let result = verify(&verifier, &config, &token).await;
            (result, started.elapsed())
        }));
    }
    let mut slowest = Duration::ZERO;
    for task in tasks {
        let (result, took) = task.await.unwrap();
        result.unwrap();
        slowest = slowest.max(took);
    }
    eprintln!("hanging IdP, 20 concurrent requests with a stale key set: slowest {slowest:?}");
    assert!(slowest < Duration::from_secs(2), "a request waited for the hanging fetch: {slowest:?}");
    // The refresh each request wanted is one fetch in flight, still hanging.
    assert!(idp.jwks_fetches() - before <= 1, "{} fetches for one stale set", idp.jwks_fetches() - before);

    // An unknown kid waits for that fetch at most `miss_wait`, then is refused.
    let started = std::time::Instant::now();
    let unknown = verifier.verify_signature(&config, &idp.sign_with_random_kid(idp.claims_for("x"), Alg::Rs256)).await;
    let took = started.elapsed();
    eprintln!("hanging IdP, unknown kid: refused after {took:?}");
    assert_eq!(unknown, Err(TokenRejection::UnknownKey));
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(2), "{took:?}");
    assert!(idp.jwks_fetches() - before <= 1, "the miss joined the fetch in flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_caller_waiting_on_a_fetch_is_answered_when_it_ends() {
    let idp = FakeIdp::start().await;
    let verifier = always_refreshing(Duration::from_secs(30));
    let config = idp_config(&idp);
    verify(&verifier, &config, &idp.token_for("first")).await.unwrap();
    verifier.settled(&config.jwks_uri).await;
    idp.set_jwks_hanging(true);
    // This request starts the (hanging) background refresh and is answered at once.
    verify(&verifier, &config, &idp.token_for("second")).await.unwrap();
    let fetches = idp.jwks_fetches();

    // A key published meanwhile: its tokens wait on the fetch in flight, none starts another.
    idp.rotate(Alg::Es256, false);
    let mut waiters = Vec::new();
    for i in 0..8 {
        let token = idp.sign(idp.claims_for(&format!("w{i}")), Alg::Es256);
        let (verifier, config) = (verifier.clone(), config.clone());
        waiters.push(tokio::spawn(async move { verify(&verifier, &config, &token).await }));
    }
    tokio::task::yield_now().await;
    assert!(waiters.iter().all(|w| !w.is_finished()), "the waiters wait for the fetch");
    let lifted = std::time::Instant::now();
    idp.set_jwks_hanging(false);
    for waiter in waiters {
        waiter.await.unwrap().expect("answered with the new key once the fetch ended");
    }
    assert!(lifted.elapsed() < Duration::from_secs(5), "{:?}", lifted.elapsed());
    assert!(idp.jwks_fetches() - fetches <= 1, "one fetch for all waiters: {}", idp.jwks_fetches() - fetches);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_sets_are_refreshed_within_max_age_and_a_removed_kid_fails_next() {
    let idp = FakeIdp::start().await;
    // No Cache-Control (a real OpenID provider's default): max_age bounds the set's life.
    let clock = Arc::new(ManualClock::new());
    let verifier = verifier_on(
        JwksSettings {
            max_age: Duration::from_millis(200),
            refetch_cooldown: Duration::from_secs(3600),
            ..JwksSettings::default()
        },
        &clock,
    );
    let config = idp_config(&idp);
    let old = idp.token_for("u");
    verify(&verifier, &config, &old).await.unwrap();
    verify(&verifier, &config, &old).await.unwrap();
    assert_eq!(idp.jwks_fetches(), 1);
    idp.rotate(Alg::Rs256, true);
    clock.advance(Duration::from_millis(250));
    // Past max_age: this use starts the refresh (it is still answered with the set in hand)...
    let _ = verify(&verifier, &config, &old).await;
    verifier.settled(&config.jwks_uri).await;
    assert_eq!(idp.jwks_fetches(), 2);
    // ...and from the next request the removed kid fails, from the verified-token cache too.
    assert_eq!(verifier.verify_signature(&config, &old).await, Err(TokenRejection::UnknownKey));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_now_fetches_at_once_and_ends_a_removed_kid() {
    let idp = FakeIdp::start().await;
    let verifier = verifier(Duration::from_secs(3600));
    let config = idp_config(&idp);
    let old = idp.token_for("u");
    verify(&verifier, &config, &old).await.unwrap();
    verify(&verifier, &config, &old).await.unwrap();
    assert_eq!(verifier.verified_cache_hits(), 1);
    let old_kid = idp.current_kid(Alg::Rs256);
    let new_kid = idp.rotate(Alg::Rs256, true);
    let refreshed = verifier.refresh_now(&config.jwks_uri).await.unwrap();
    assert!(refreshed.kids.contains(&new_kid), "{:?}", refreshed.kids);
    assert!(!refreshed.kids.contains(&old_kid), "{:?}", refreshed.kids);
    assert_eq!(idp.jwks_fetches(), 2);
    assert_eq!(verifier.verify_signature(&config, &old).await, Err(TokenRejection::UnknownKey));
    idp.set_jwks_failing(true);
    assert_eq!(verifier.refresh_now(&config.jwks_uri).await, Err(TokenRejection::KeysUnavailable));
    // A failed refresh keeps the set in hand.
    verify(&verifier, &config, &idp.token_for("v")).await.unwrap();
}
