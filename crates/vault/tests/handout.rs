//! Hand-out as a use case, over in-memory ports: a fresh token, a refresh near expiry, policy
//! denial, and a deprovisioned user refused. No database and no sleeps: time is a manual clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use custody_identity::audit::AuditOutcome;
use custody_identity::UserStatus;
use custody_vault::grant::GrantStatus;
use custody_vault::policy::TokenAccess;
use custody_vault::service::{GrantSelector, GrantUseError};
use support::{Vault, REFRESH_WINDOW};

#[tokio::test]
async fn a_fresh_token_is_handed_out_without_calling_the_provider() {
    let v = Vault::new();
    v.provider().await;
    let alice = v.user("alice", &[]);
    let grant = v.grant(&alice, "access-fresh", Some("refresh-0"), 3600).await;

    let handout = v.service.hand_out(&alice, &GrantSelector::Provider(v.provider_name())).await.unwrap();

    assert_eq!(handout.access_token.expose(), "access-fresh");
    assert_eq!(handout.grant_id, grant);
    assert_eq!(handout.expires_at, Some(v.now().plus_seconds(3600)));
    assert_eq!(v.oauth.refresh_calls(), 0);
    assert_eq!(v.store.audit_actions().last().map(String::as_str), Some("token.handout"));
    assert_eq!(v.store.grant(&grant).unwrap().last_used_at, Some(v.now()));
}

#[tokio::test]
async fn a_token_near_expiry_is_refreshed_first_and_the_spent_refresh_token_queued_for_revocation() {
    let v = Vault::new();
    v.provider().await;
    let alice = v.user("alice", &[]);
    let grant = v.grant(&alice, "access-old", Some("refresh-0"), 3600).await;
    // Time passes until the token is inside the refresh window.
    v.clock.advance(3600 - REFRESH_WINDOW + 1);

    let handout = v.service.hand_out(&alice, &GrantSelector::Id(grant.clone())).await.unwrap();

    assert_eq!(handout.access_token.expose(), "access-1");
    assert_eq!(v.oauth.refresh_tokens_seen(), vec!["refresh-0".to_owned()]);
    assert_eq!(v.stored_access(&grant), "access-1");
    let credential = v.store.credential(&grant).unwrap();
    assert_eq!(credential.version, 2);
    assert_eq!(credential.expires_at, Some(v.now().plus_seconds(3600)));
    let outbox: Vec<String> = v.store.outbox_items().into_iter().map(|i| i.id).collect();
    assert_eq!(outbox, vec![format!("{grant}:superseded-refresh:v1")]);
    let actions = v.store.audit_actions();
    assert_eq!(&actions[actions.len() - 2..], ["token.refresh", "token.handout"]);
}

#[tokio::test]
async fn an_expired_token_without_a_refresh_token_expires_the_grant() {
    let v = Vault::new();
    v.provider().await;
    let alice = v.user("alice", &[]);
    let grant = v.grant(&alice, "access-old", None, 60).await;
    v.clock.advance(61);

    let refused = v.service.hand_out(&alice, &GrantSelector::Id(grant.clone())).await;

    assert_eq!(refused, Err(GrantUseError::ReauthRequired));
    assert_eq!(v.store.grant(&grant).unwrap().status, GrantStatus::Expired);
    assert!(v.store.credential(&grant).is_none());
    // And it stays that way.
    assert_eq!(v.service.hand_out(&alice, &GrantSelector::Id(grant)).await, Err(GrantUseError::ReauthRequired));
}

#[tokio::test]
async fn a_policy_that_does_not_allow_the_user_denies_and_records_the_denial() {
    let v = Vault::new();
    v.provider().await;
    v.policy(&["engineering"], TokenAccess::Handout).await;
    let outsider = v.user("mallory", &["sales"]);
    let insider = v.user("alice", &["engineering"]);
    let outsider_grant = v.grant(&outsider, "access-m", None, 3600).await;
    v.grant(&insider, "access-a", None, 3600).await;

    let refused = v.service.hand_out(&outsider, &GrantSelector::Provider(v.provider_name())).await;

    assert!(matches!(refused, Err(GrantUseError::PolicyDenied(_))), "{refused:?}");
    let denial = v.store.audit_rows().pop().unwrap();
    assert_eq!((denial.action.as_str(), denial.outcome), ("token.handout", AuditOutcome::Denied));
    assert_eq!(denial.grant_id.as_deref(), Some(outsider_grant.as_str()));
    assert_eq!(v.store.grant(&outsider_grant).unwrap().last_used_at, None);
    let allowed = v.service.hand_out(&insider, &GrantSelector::Provider(v.provider_name())).await.unwrap();
    assert_eq!(allowed.access_token.expose(), "access-a");
}

#[tokio::test]
async fn a_proxy_only_policy_keeps_the_token_inside() {
    let v = Vault::new();
    v.provider().await;
    v.policy(&["engineering"], TokenAccess::ProxyOnly).await;
    let alice = v.user("alice", &["engineering"]);
    v.grant(&alice, "access-a", None, 3600).await;

    let refused = v.service.hand_out(&alice, &GrantSelector::Provider(v.provider_name())).await;

    assert_eq!(refused, Err(GrantUseError::HandoutDisabled(custody_vault::ProviderName::parse("github").unwrap())));
    let lease = v.service.proxy_lease(&alice, &GrantSelector::Provider(v.provider_name())).await.unwrap();
    assert_eq!(lease.access_token.expose(), "access-a");
}

#[tokio::test]
async fn a_deprovisioned_user_is_refused_and_their_grants_are_revoked() {
    let v = Vault::new();
    v.provider().await;
    let alice = v.user("alice", &[]);
    let grant = v.grant(&alice, "access-a", Some("refresh-a"), 3600).await;

    let (user, revoked) = v.service.deprovision_user(&v.app, &alice.id, "operator").await.unwrap().unwrap();

    assert_eq!(user.status, UserStatus::Deprovisioned);
    assert_eq!(revoked.iter().map(|g| g.id.clone()).collect::<Vec<_>>(), vec![grant.clone()]);
    // The user as now stored is refused before any grant is read...
    let stored = v.store.user(&v.app, &alice.id).unwrap();
    assert!(matches!(
        v.service.hand_out(&stored, &GrantSelector::Id(grant.clone())).await,
        Err(GrantUseError::PolicyDenied(_))
    ));
    // ...and even a caller holding a stale copy finds the grant revoked and its tokens gone.
    assert_eq!(v.service.hand_out(&alice, &GrantSelector::Id(grant.clone())).await, Err(GrantUseError::GrantRevoked));
    assert!(v.store.credential(&grant).is_none());
    let mut queued: Vec<String> = v.store.outbox_items().into_iter().map(|i| i.id).collect();
    queued.sort();
    assert_eq!(queued, vec![format!("{grant}:access"), format!("{grant}:refresh")]);
    assert_eq!(v.oauth.refresh_calls(), 0);
}
