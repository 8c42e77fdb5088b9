//! Lifecycle webhooks as a use case, over in-memory ports: deliveries are authenticated, and
//! their events applied in the order they happened, not the order they arrive. A stale event
//! after a newer one is ignored, a deletion deprovisions (grants revoked, tokens queued for
//! revocation), suspend and unsuspend gate hand-out. No database, no sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use custody_identity::audit::Actor;
use custody_identity::idp::IdpEndpoints;
use custody_identity::ports::{AppStore as _, IdpStore as _, Random as _};
use custody_identity::{
    ApiKeyId, ApiKeyRecord, App, AppName, ClaimMappings, IdpConfig, IdpId, IdpKind, Issuer, Secret, User, UserStatus,
};
use custody_testkit::{CountingWaker, FakeHasher, NoSvix};
use custody_vault::grant::GrantStatus;
use custody_vault::service::{GrantSelector, GrantUseError};
use custody_vault::webhook::{Delivery, DeliveryCounts, ReceiveError, SvixHeaders, WebhookPorts, WebhookService};
use serde_json::json;
use std::sync::Arc;
use support::Vault;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

struct World {
    v: Vault,
    webhooks: WebhookService,
    waker: Arc<CountingWaker>,
    secret: Secret,
}

impl World {
    async fn new() -> World {
        let v = Vault::new();
        let now = v.now();
        let app = App { id: v.app.clone(), name: AppName::parse("demo").unwrap(), created_at: now };
        let key = ApiKeyRecord {
            id: ApiKeyId::parse(&v.random.uuid()).unwrap(),
            app_id: v.app.clone(),
            prefix: "0123456789abcdef".into(),
            hash: vec![1],
            created_at: now,
            last_used_at: None,
        };
        let audit = |action: &str| {
            custody_identity::audit::AuditEntry::new(v.random.uuid(), v.app.clone(), now, action, "operator")
        };
        v.store.create_app(&app, &key, &audit("app.create")).await.unwrap();
        let idp = IdpConfig {
            id: IdpId::parse(&v.random.uuid()).unwrap(),
            app_id: v.app.clone(),
            kind: IdpKind::from_static("custom_oidc"),
            issuer: Issuer::new("https://idp.example"),
            jwks_uri: "https://idp.example/jwks".into(),
            audience: None,
            claims: ClaimMappings::subject_only(),
            claims_locked_at: None,
            version: 1,
            created_at: now,
            endpoints: IdpEndpoints::default(),
        };
        v.store.create_idp(&idp, &audit("idp.create")).await.unwrap();
        let waker = Arc::new(CountingWaker::default());
        let webhooks = WebhookService::new(WebhookPorts {
            store: v.store.clone(),
            lifecycle: v.store.clone(),
            svix: Arc::new(NoSvix),
            hasher: Arc::new(FakeHasher),
            cipher: v.cipher.clone(),
            clock: v.clock.clone(),
            random: v.random.clone(),
            outbox: waker.clone(),
            kinds: custody_testkit::kinds(),
            public_url: "https://custody.example".into(),
        });
        let enabled = webhooks.enable(&v.app, None, &Actor::operator()).await.unwrap();
        let secret = enabled.signing_secret.expect("a generated secret");
        World { v, webhooks, waker, secret }
    }

    /// Delivers native events `(id, type, subject, seconds after the start)`.
    async fn deliver(&self, events: &[(&str, &str, &str, i64)]) -> Result<DeliveryCounts, ReceiveError> {
        let start = custody_identity::ports::Clock::now(self.v.clock.as_ref()).0;
        let events: Vec<_> = events
            .iter()
            .map(|(id, kind, subject, at)| {
                let at = OffsetDateTime::from_unix_timestamp(start + at).unwrap().format(&Rfc3339).unwrap();
                json!({"id": id, "type": kind, "subject": subject, "occurred_at": at})
            })
            .collect();
        let body = json!({ "events": events }).to_string();
        let delivery = Delivery {
            authorization: Some(self.secret.expose()),
            svix: &SvixHeaders::default(),
            body: body.as_bytes(),
        };
        self.webhooks.receive(&self.v.app, &delivery).await
    }

    fn status(&self, user: &User) -> UserStatus {
        self.v.store.user(&self.v.app, &user.id).unwrap().status
    }
}

fn counts(processed: u32, ignored: u32, duplicates: u32, revoked_grants: u32) -> DeliveryCounts {
    DeliveryCounts { processed, ignored, duplicates, revoked_grants }
}

#[tokio::test]
async fn a_stale_event_after_a_newer_one_is_ignored() {
    let w = World::new().await;
    let alice = w.v.user("alice", &[]);

    // Suspended at t=100; the reactivation that happened at t=50 arrives afterwards.
    let first = w.deliver(&[("e1", "user.suspended", "alice", 100)]).await.unwrap();
    let late = w.deliver(&[("e2", "user.reactivated", "alice", 50)]).await.unwrap();

    assert_eq!((first, late), (counts(1, 0, 0, 0), counts(0, 1, 0, 0)));
    assert_eq!(w.status(&alice), UserStatus::Suspended, "a late unblock cannot undo a later block");
    // A reactivation that happened later does apply.
    assert_eq!(w.deliver(&[("e3", "user.reactivated", "alice", 150)]).await.unwrap(), counts(1, 0, 0, 0));
    assert_eq!(w.status(&alice), UserStatus::Active);
}

#[tokio::test]
async fn events_in_one_delivery_apply_by_when_they_happened() {
    let w = World::new().await;
    let alice = w.v.user("alice", &[]);

    let delivered =
        w.deliver(&[("e1", "user.reactivated", "alice", 20), ("e2", "user.suspended", "alice", 10)]).await.unwrap();

    // The reactivation (t=20) applies; the suspension that happened before it (t=10) is stale.
    assert_eq!(delivered, counts(1, 1, 0, 0));
    assert_eq!(w.status(&alice), UserStatus::Active);
}

#[tokio::test]
async fn a_deletion_deprovisions_and_nothing_brings_the_user_back() {
    let w = World::new().await;
    w.v.provider().await;
    let alice = w.v.user("alice", &[]);
    let grant = w.v.grant(&alice, "access-a", Some("refresh-a"), 3600).await;

    // Deleted at t=10, even though a suspension at t=20 was already applied: a deletion
    // always applies, however late.
    w.deliver(&[("e1", "user.suspended", "alice", 20)]).await.unwrap();
    let deleted = w.deliver(&[("e2", "user.deleted", "alice", 10)]).await.unwrap();

    assert_eq!(deleted, counts(1, 0, 0, 1));
    assert_eq!(w.status(&alice), UserStatus::Deprovisioned);
    assert_eq!(w.v.store.grant(&grant).unwrap().status, GrantStatus::Revoked);
    assert!(w.v.store.credential(&grant).is_none());
    assert_eq!(w.v.store.outbox_items().len(), 2, "both tokens queued for revocation at the provider");
    assert_eq!(w.waker.wakes(), 1, "the outbox worker is woken");
    // Nothing leaves deprovisioned, and the user's grants hand nothing out.
    assert_eq!(w.deliver(&[("e3", "user.reactivated", "alice", 30)]).await.unwrap(), counts(0, 1, 0, 0));
    assert_eq!(w.status(&alice), UserStatus::Deprovisioned);
    assert_eq!(w.v.service.hand_out(&alice, &GrantSelector::Id(grant)).await, Err(GrantUseError::GrantRevoked));
}

#[tokio::test]
async fn suspend_and_unsuspend_gate_hand_out_and_keep_the_grants() {
    let w = World::new().await;
    w.v.provider().await;
    let alice = w.v.user("alice", &[]);
    let grant = w.v.grant(&alice, "access-a", None, 3600).await;
    let selector = GrantSelector::Id(grant.clone());

    w.deliver(&[("e1", "user.suspended", "alice", 10)]).await.unwrap();
    let suspended = w.v.store.user(&w.v.app, &alice.id).unwrap();
    assert!(matches!(w.v.service.hand_out(&suspended, &selector).await, Err(GrantUseError::PolicyDenied(_))));
    assert_eq!(w.v.store.grant(&grant).unwrap().status, GrantStatus::Active, "suspension keeps grants");

    w.deliver(&[("e2", "user.reactivated", "alice", 20)]).await.unwrap();
    let active = w.v.store.user(&w.v.app, &alice.id).unwrap();
    assert_eq!(w.v.service.hand_out(&active, &selector).await.unwrap().access_token.expose(), "access-a");
}

#[tokio::test]
async fn a_redelivered_event_is_a_duplicate_and_an_unknown_subject_is_ignored() {
    let w = World::new().await;
    let alice = w.v.user("alice", &[]);

    w.deliver(&[("e1", "user.suspended", "alice", 10)]).await.unwrap();
    let again = w.deliver(&[("e1", "user.suspended", "alice", 10)]).await.unwrap();
    let stranger = w.deliver(&[("e2", "user.deleted", "nobody", 10)]).await.unwrap();

    assert_eq!((again, stranger), (counts(0, 0, 1, 0), counts(0, 1, 0, 0)));
    assert_eq!(w.status(&alice), UserStatus::Suspended);
    assert_eq!(w.v.store.audit_actions().iter().filter(|a| *a == "user.suspend").count(), 1);
}

#[tokio::test]
async fn a_delivery_without_the_secret_changes_nothing() {
    let w = World::new().await;
    let alice = w.v.user("alice", &[]);
    let body = json!({"events": [{"id": "e1", "type": "user.deleted", "subject": "alice",
        "occurred_at": "2030-01-01T00:00:00Z"}]})
    .to_string();

    let forged = w
        .webhooks
        .receive(
            &w.v.app,
            &Delivery { authorization: Some("guessed"), svix: &SvixHeaders::default(), body: body.as_bytes() },
        )
        .await;

    assert!(matches!(forged, Err(ReceiveError::InvalidSignature(_))), "{forged:?}");
    assert_eq!(w.status(&alice), UserStatus::Active);
}
