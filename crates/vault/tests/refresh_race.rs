//! Refresh single-flight as a use case: concurrent hand-outs of one expiring grant share one
//! provider refresh, its success and its failure alike. The provider is held open on purpose
//! (no timers): every caller lines up behind the one attempt before it is let go.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use custody_identity::User;
use custody_testkit::RefreshAnswer;
use custody_vault::grant::GrantStatus;
use custody_vault::ports::OAuthError;
use custody_vault::service::{GrantSelector, GrantUseError, Handout};
use support::{Vault, REFRESH_WINDOW};

const CALLERS: usize = 8;

/// Starts `CALLERS` hand-outs of `user`'s grant at once, waits until the provider has been
/// reached and every caller is parked, then lets the provider answer.
async fn concurrent_handouts(v: &Vault, user: &User) -> Vec<Result<Handout, GrantUseError>> {
    v.oauth.hold_refreshes();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (service, user, selector) =
                (v.service.clone(), user.clone(), GrantSelector::Provider(v.provider_name()));
            tokio::spawn(async move { service.hand_out(&user, &selector).await })
        })
        .collect();
    v.oauth.refreshes_reached(1).await;
    // On this single-threaded runtime each yield lets every ready caller run until it parks on
    // the shared attempt; the held provider guarantees the attempt is still running.
    for _ in 0..CALLERS * 4 {
        tokio::task::yield_now().await;
    }
    v.oauth.release_refreshes();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

#[tokio::test]
async fn concurrent_handouts_of_an_expiring_grant_refresh_it_once() {
    let v = Vault::new();
    v.provider().await;
    let alice = v.user("alice", &[]);
    let grant = v.grant(&alice, "access-0", Some("refresh-0"), REFRESH_WINDOW - 1).await;

    let results = concurrent_handouts(&v, &alice).await;

    assert_eq!(v.oauth.refresh_calls(), 1, "one provider refresh for {CALLERS} callers");
    for result in results {
        assert_eq!(result.unwrap().access_token.expose(), "access-1");
    }
    assert_eq!(v.oauth.refresh_tokens_seen(), vec!["refresh-0".to_owned()]);
    assert_eq!(v.store.credential(&grant).unwrap().version, 2);
    assert_eq!(v.store.audit_actions().iter().filter(|a| *a == "token.refresh").count(), 1);
    assert_eq!(v.store.audit_actions().iter().filter(|a| *a == "token.handout").count(), CALLERS);
}

#[tokio::test]
async fn a_failing_refresh_is_shared_by_every_waiter() {
    let v = Vault::new();
    v.provider().await;
    let alice = v.user("alice", &[]);
    // Already expired: a provider failure cannot fall back to the current token.
    let grant = v.grant(&alice, "access-0", Some("refresh-0"), 10).await;
    v.clock.advance(11);
    v.oauth.answer_refreshes_with(RefreshAnswer::Fail(OAuthError::Transient("503".into())));

    let results = concurrent_handouts(&v, &alice).await;

    assert_eq!(v.oauth.refresh_calls(), 1, "the failure is shared, not retried per caller");
    for result in results {
        assert!(matches!(result, Err(GrantUseError::Provider(_))), "{result:?}");
    }
    // A transient failure leaves the grant as it was, for the next attempt.
    assert_eq!(v.store.grant(&grant).unwrap().status, GrantStatus::Active);
    assert_eq!(v.store.credential(&grant).unwrap().version, 1);
    // The next caller tries again (the failed attempt is not cached).
    v.oauth.answer_refreshes_with(RefreshAnswer::Tokens { expires_in: 3600, rotate: false });
    let handout = v.service.hand_out(&alice, &GrantSelector::Id(grant.clone())).await.unwrap();
    assert_eq!((handout.access_token.expose(), v.oauth.refresh_calls()), ("access-2", 2));
}

#[tokio::test]
async fn a_provider_failure_before_expiry_hands_out_the_still_valid_token() {
    let v = Vault::new();
    v.provider().await;
    let alice = v.user("alice", &[]);
    v.grant(&alice, "access-0", Some("refresh-0"), REFRESH_WINDOW - 1).await;
    v.oauth.answer_refreshes_with(RefreshAnswer::Fail(OAuthError::Transient("timeout".into())));

    let results = concurrent_handouts(&v, &alice).await;

    assert_eq!(v.oauth.refresh_calls(), 1);
    for result in results {
        assert_eq!(result.unwrap().access_token.expose(), "access-0");
    }
}

#[tokio::test]
async fn a_rejected_refresh_token_expires_the_grant_for_every_waiter() {
    let v = Vault::new();
    v.provider().await;
    let alice = v.user("alice", &[]);
    let grant = v.grant(&alice, "access-0", Some("refresh-0"), 10).await;
    v.clock.advance(11);
    v.oauth.answer_refreshes_with(RefreshAnswer::Fail(OAuthError::InvalidGrant));

    let results = concurrent_handouts(&v, &alice).await;

    assert_eq!(v.oauth.refresh_calls(), 1);
    for result in results {
        assert_eq!(result, Err(GrantUseError::ReauthRequired));
    }
    assert_eq!(v.store.grant(&grant).unwrap().status, GrantStatus::Expired);
    assert!(v.store.credential(&grant).is_none());
}
