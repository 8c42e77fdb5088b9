//! The one-read hand-out (`HandoutService`) over in-memory ports: the remembered key and IdP
//! configuration are confirmed by the read, so a deleted key, a deprovisioned user and an edited
//! configuration hold on the very next hand-out. No database, no network, no sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use custody_identity::audit::Actor;
use custody_identity::ports::Clock as _;
use custody_identity::service::{AddIdp, IdentityService, ResolveError};
use custody_identity::user::UserRefused;
use custody_identity::user::LAST_SEEN_GRANULARITY_SECS;
use custody_identity::{AppName, ClaimPath, IdpKind, IdpPatch, RequestedClaims, TokenRejection, UserStatus};
use custody_testkit::{FakeIdp, ManualClock, MemoryStore, SeqRandom};
use custody_vault::handout::{HandoutError, HandoutPorts, HandoutService};
use custody_vault::policy::TokenAccess;
use custody_vault::service::{GrantSelector, GrantUseError};
use serde_json::json;
use std::sync::Arc;
use support::Vault;

const ISSUER: &str = "https://idp.example";

struct World {
    idp: Arc<FakeIdp>,
    identity: IdentityService,
    vault: Vault,
    handouts: HandoutService,
    key: String,
}

async fn world() -> World {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::default());
    let random = Arc::new(SeqRandom::default());
    let idp = Arc::new(FakeIdp::new(ISSUER));
    let identity = custody_testkit::identity_service(&store, &clock, &random, &idp);
    let (app, key) = identity.create_app(AppName::parse("demo").unwrap(), &Actor::operator()).await.unwrap();
    let add = AddIdp {
        issuer_url: ISSUER.into(),
        audience: Some("api".into()),
        kind: Some(IdpKind::from_static("custom_oidc")),
        claims: RequestedClaims { group: Some(Some(ClaimPath::parse("groups").unwrap())), ..Default::default() },
    };
    identity.add_idp(&app.id, add, &Actor::operator()).await.unwrap();
    let vault = Vault::on(store.clone(), clock.clone(), random, app.id.clone());
    vault.provider().await;
    let handouts =
        HandoutService::new(identity.clone(), vault.service.clone(), HandoutPorts { contexts: store, clock });
    World { idp, identity, vault, handouts, key: key.secret }
}

impl World {
    fn token(&self, sub: &str) -> String {
        self.token_in(sub, &[])
    }

    fn token_in(&self, sub: &str, groups: &[&str]) -> String {
        let now = self.vault.clock.now().0;
        self.idp
            .token(&json!({"iss": ISSUER, "aud": "api", "sub": sub, "groups": groups, "iat": now, "exp": now + 600}))
    }

    async fn hand_out(&self, sub: &str) -> Result<String, HandoutError> {
        self.hand_out_with(&self.token(sub)).await
    }

    async fn hand_out_with(&self, token: &str) -> Result<String, HandoutError> {
        let caller = self.handouts.admit(&self.key).await.unwrap().expect("the key is live");
        let selector = GrantSelector::Provider(self.vault.provider_name());
        let handout = self.handouts.hand_out(&caller, token, &selector).await?;
        Ok(handout.access_token.expose().to_owned())
    }
}

#[tokio::test]
async fn a_known_user_gets_the_token_and_every_handout_is_audited() {
    let w = world().await;
    // The first sight creates the user (and locks the mappings) on the ordinary path.
    assert!(matches!(w.hand_out("alice").await, Err(HandoutError::Use(GrantUseError::GrantNotFound))));
    let alice = w.vault.store.user_by_subject(&w.vault.app, "alice").expect("alice was created");
    w.vault.grant(&alice, "access-alice", None, 3600).await;
    for _ in 0..3 {
        assert_eq!(w.hand_out("alice").await.unwrap(), "access-alice");
    }
    let handouts = w.vault.store.audit_actions().iter().filter(|a| *a == "token.handout").count();
    assert_eq!(handouts, 3);
}

#[tokio::test]
async fn a_remembered_key_fails_once_deleted() {
    let w = world().await;
    w.hand_out("alice").await.unwrap_err();
    let caller = w.handouts.admit(&w.key).await.unwrap().unwrap();
    assert!(w.identity.delete_api_key(&caller.key.app_id, &caller.key.id, &Actor::operator()).await.unwrap());
    // Admitted against the remembered record, refused by the read.
    let selector = GrantSelector::Provider(w.vault.provider_name());
    let refused = w.handouts.hand_out(&caller, &w.token("alice"), &selector).await;
    assert!(matches!(refused, Err(HandoutError::KeyNotValid)), "{refused:?}");
    // And forgotten: the next admission reads the store, which no longer has it.
    assert!(w.handouts.admit(&w.key).await.unwrap().is_none());
}

#[tokio::test]
async fn a_deprovisioned_user_is_refused_on_the_next_handout() {
    let w = world().await;
    w.hand_out("alice").await.unwrap_err();
    let alice = w.vault.store.user_by_subject(&w.vault.app, "alice").unwrap();
    w.vault.grant(&alice, "access-alice", None, 3600).await;
    assert_eq!(w.hand_out("alice").await.unwrap(), "access-alice");
    w.vault.store.insert_user(custody_identity::User { status: UserStatus::Deprovisioned, ..alice });
    let refused = w.hand_out("alice").await;
    assert!(
        matches!(refused, Err(HandoutError::Resolve(ResolveError::Refused(UserRefused::Deprovisioned)))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_edited_configuration_applies_to_the_next_handout() {
    let w = world().await;
    w.hand_out("alice").await.unwrap_err();
    let alice = w.vault.store.user_by_subject(&w.vault.app, "alice").unwrap();
    w.vault.grant(&alice, "access-alice", None, 3600).await;
    assert_eq!(w.hand_out("alice").await.unwrap(), "access-alice");
    let caller = w.handouts.admit(&w.key).await.unwrap().unwrap();
    let patch = IdpPatch { audience: Some(Some("another".into())), claims: RequestedClaims::default() };
    w.identity.patch_idp(&caller.key.app_id, &patch, &Actor::operator()).await.unwrap();
    // The remembered configuration (audience `api`) would accept the token; the read sees the
    // new version and the token is verified again under the stored one.
    let selector = GrantSelector::Provider(w.vault.provider_name());
    let refused = w.handouts.hand_out(&caller, &w.token("alice"), &selector).await;
    assert!(
        matches!(refused, Err(HandoutError::Resolve(ResolveError::InvalidToken(TokenRejection::WrongAudience { .. })))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_returning_or_changed_user_is_written_and_served_as_written() {
    let w = world().await;
    w.hand_out("alice").await.unwrap_err();
    let alice = w.vault.store.user_by_subject(&w.vault.app, "alice").unwrap();
    w.vault.grant(&alice, "access-alice", None, 3600).await;

    // Back after more than a minute: `last_seen_at` moves, and the grant of the one read serves.
    w.vault.clock.advance(LAST_SEEN_GRANULARITY_SECS + 1);
    assert_eq!(w.hand_out("alice").await.unwrap(), "access-alice");
    let seen = w.vault.store.user_by_subject(&w.vault.app, "alice").unwrap();
    assert_eq!(seen.last_seen_at, Some(w.vault.clock.now()));

    // The policy asks for a group the stored user lacks: refused. A token that carries it
    // changes the user, and the policy applies to the user as written: served.
    w.vault.policy(&["engineering"], TokenAccess::Handout).await;
    let refused = w.hand_out("alice").await;
    assert!(matches!(refused, Err(HandoutError::Use(GrantUseError::PolicyDenied(_)))), "{refused:?}");
    assert_eq!(w.hand_out_with(&w.token_in("alice", &["engineering"])).await.unwrap(), "access-alice");
    let changed = w.vault.store.user_by_subject(&w.vault.app, "alice").unwrap();
    assert_eq!(changed.groups.iter().collect::<Vec<_>>(), ["engineering"]);
    // And taken away again by the next token without it.
    let refused = w.hand_out("alice").await;
    assert!(matches!(refused, Err(HandoutError::Use(GrantUseError::PolicyDenied(_)))), "{refused:?}");
}
