//! The identity use cases over in-memory ports: API keys, and a user token resolved into a
//! user (the first sign-in locks the claim mappings; expiry follows the manual clock). No
//! database, no network, no sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use custody_identity::audit::Actor;
use custody_identity::claims::ClaimPath;
use custody_identity::ports::Clock as _;
use custody_identity::service::{AddIdp, IdentityService, PatchIdpError, ResolveError};
use custody_identity::{AppName, IdpKind, IdpPatch, RequestedClaims, TokenRejection, UserStatus};
use custody_testkit::{FakeIdp, ManualClock, MemoryStore, SeqRandom};
use serde_json::json;
use std::sync::Arc;

const ISSUER: &str = "https://idp.example";

struct World {
    clock: Arc<ManualClock>,
    idp: Arc<FakeIdp>,
    identity: IdentityService,
}

fn world() -> World {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::default());
    let idp = Arc::new(FakeIdp::new(ISSUER));
    let identity = custody_testkit::identity_service(&store, &clock, &Arc::new(SeqRandom::default()), &idp);
    World { clock, idp, identity }
}

fn add_idp() -> AddIdp {
    AddIdp {
        issuer_url: ISSUER.into(),
        audience: Some("api".into()),
        kind: Some(IdpKind::from_static("custom_oidc")),
        claims: RequestedClaims::default(),
    }
}

#[tokio::test]
async fn an_api_key_authenticates_until_it_is_deleted() {
    let w = world();
    let (app, key) = w.identity.create_app(AppName::parse("demo").unwrap(), &Actor::operator()).await.unwrap();

    let record = w.identity.authenticate_api_key(&key.secret).await.unwrap().expect("the key is live");
    assert_eq!(record.app_id, app.id);
    let mut forged = key.secret.clone();
    forged.push('x');
    assert_eq!(w.identity.authenticate_api_key(&forged).await.unwrap(), None);

    assert!(w.identity.delete_api_key(&app.id, &record.id, &Actor::operator()).await.unwrap());
    assert_eq!(w.identity.authenticate_api_key(&key.secret).await.unwrap(), None);
}

#[tokio::test]
async fn the_first_user_locks_the_claim_mappings_and_tokens_expire_with_the_clock() {
    let w = world();
    let (app, _) = w.identity.create_app(AppName::parse("demo").unwrap(), &Actor::operator()).await.unwrap();
    let config = w.identity.add_idp(&app.id, add_idp(), &Actor::operator()).await.unwrap();
    assert!(!config.claims_locked());
    let now = w.clock.now().0;
    let token = w.idp.token(&json!({"iss": ISSUER, "aud": "api", "sub": "alice", "iat": now, "exp": now + 60}));

    let alice = w.identity.resolve_user(&app.id, &token).await.unwrap();

    assert_eq!((alice.subject.as_str(), alice.status), ("alice", UserStatus::Active));
    // The same token names the same user.
    assert_eq!(w.identity.resolve_user(&app.id, &token).await.unwrap().id, alice.id);
    // The mappings are locked now: changing the user id claim is refused.
    let patch = IdpPatch {
        audience: None,
        claims: RequestedClaims { user_id: Some(ClaimPath::parse("email").unwrap()), ..RequestedClaims::default() },
    };
    assert!(matches!(w.identity.patch_idp(&app.id, &patch, &Actor::operator()).await, Err(PatchIdpError::Locked(_))));
    // A minute later the token has expired.
    w.clock.advance(60);
    assert_eq!(
        w.identity.resolve_user(&app.id, &token).await,
        Err(ResolveError::InvalidToken(TokenRejection::Expired))
    );
}

#[tokio::test]
async fn a_token_for_another_audience_or_with_a_bad_signature_is_refused() {
    let w = world();
    let (app, _) = w.identity.create_app(AppName::parse("demo").unwrap(), &Actor::operator()).await.unwrap();
    w.identity.add_idp(&app.id, add_idp(), &Actor::operator()).await.unwrap();
    let now = w.clock.now().0;
    let other = w.idp.token(&json!({"iss": ISSUER, "aud": "other", "sub": "alice", "exp": now + 60}));
    let good = w.idp.token(&json!({"iss": ISSUER, "aud": "api", "sub": "alice", "exp": now + 60}));
    let tampered = format!("{}.forged", good.rsplit_once('.').unwrap().0);

    assert!(matches!(
        w.identity.resolve_user(&app.id, &other).await,
        Err(ResolveError::InvalidToken(TokenRejection::WrongAudience { .. }))
    ));
    assert_eq!(
        w.identity.resolve_user(&app.id, &tampered).await,
        Err(ResolveError::InvalidToken(TokenRejection::BadSignature))
    );
}
