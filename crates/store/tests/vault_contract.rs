//! Contract tests of the vault storage ports and `RefreshLock` for `Store` (and of
//! `UserStore::ensure_user`): every case runs on SQLite and, when `CUSTODY_TEST_POSTGRES_URL`
//! is set, on PostgreSQL, each in a database of its own, so no test depends on another or on the
//! order they run in.

// Helpers outside `#[test]` functions are test code too (clippy.toml only exempts the latter).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use custody_identity::app::ApiKeyRecord;
use custody_identity::audit::{AuditEntry, AuditFilter};
use custody_identity::cipher::SealedBox;
use custody_identity::claims::{ClaimMappings, ClaimPath, ExtractedIdentity};
use custody_identity::idp::{IdpConfig, IdpEndpoints, IdpKind};
use custody_identity::ids::{AppId, IdpId, UserId};
use custody_identity::issuer::Issuer;
use custody_identity::page::PageRequest;
use custody_identity::ports::{AuditLog, LockGuard, ResolveUserError, StoreError};
use custody_identity::time::UnixTime;
use custody_identity::user::{User, UserStatus};
use custody_store::prelude::*;
use custody_store::testing::{self, TestDatabase};
use custody_store::{Backend, Store, StoreOptions};
use custody_vault::grant::{Credential, Grant, GrantId, GrantStatus, TokenKind};
use custody_vault::policy::{Policy, PolicyLookup, TokenAccess};
use custody_vault::ports::{
    instance_secret_aad, ConnectState, GrantFilter, GrantSelector, HandoutView, LifecycleChange, LifecycleEvent,
    LifecycleOutcome, RefreshLock, RefreshLockError, RevokeScope, SaveGrantError, SealedKind, SealedValue,
};
use custody_vault::provider::{ProviderConfig, ProviderName};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use support::{audit, seed_app, uuid, NOW};

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn name(s: &str) -> ProviderName {
    ProviderName::parse(s).unwrap()
}

async fn seed_user(store: &Store, app: &AppId, subject: &str) -> User {
    store.ensure_user(app, subject, &UserId::parse(&uuid()).unwrap(), NOW).await.unwrap()
}

/// A provider; with a revocation URL when `revocable`.
fn provider(app: &AppId, provider: &str, revocable: bool) -> ProviderConfig {
    ProviderConfig {
        app_id: app.clone(),
        name: name(provider),
        authorization_url: format!("https://{provider}.example.com/authorize"),
        token_url: format!("https://{provider}.example.com/token"),
        revocation_url: revocable.then(|| format!("https://{provider}.example.com/revoke")),
        client_id: format!("client-{provider}"),
        client_secret: SealedBox(format!("sealed-secret-{provider}").into_bytes()),
        scopes: vec!["openid".into(), "email".into()],
        api_base_url: revocable.then(|| format!("https://api.{provider}.example.com")),
        created_at: NOW,
        updated_at: NOW,
    }
}

async fn seed_provider(store: &Store, app: &AppId, name: &str, revocable: bool) -> ProviderConfig {
    let config = provider(app, name, revocable);
    store.put_provider(&config, &audit(app, "provider.create", NOW)).await.unwrap();
    config
}

fn grant(user: &User, provider: &str, at: UnixTime) -> Grant {
    Grant {
        id: GrantId::parse(&uuid()).unwrap(),
        app_id: user.app_id.clone(),
        user_id: user.id.clone(),
        provider: name(provider),
        status: GrantStatus::Active,
        scopes: vec!["email".into()],
        account: Some("ann@example.com".into()),
        created_at: at,
        updated_at: at,
        last_used_at: None,
        revoked_at: None,
    }
}

fn credential(grant: &GrantId, with_refresh: bool, version: i64) -> Credential {
    Credential {
        grant_id: grant.clone(),
        access_token: SealedBox(format!("sealed-access-{grant}-{version}").into_bytes()),
        refresh_token: with_refresh.then(|| SealedBox(format!("sealed-refresh-{grant}-{version}").into_bytes())),
        token_type: "Bearer".into(),
        expires_at: Some(NOW.plus_seconds(3600)),
        version,
    }
}

fn grant_audit(grant: &Grant, action: &str) -> AuditEntry {
    AuditEntry {
        user_id: Some(grant.user_id.clone()),
        grant_id: Some(grant.id.to_string()),
        provider: Some(grant.provider.to_string()),
        ..audit(&grant.app_id, action, NOW)
    }
}

/// A new active grant of `user` for `provider`, with its credential.
async fn seed_grant(store: &Store, user: &User, provider: &str, with_refresh: bool, at: UnixTime) -> Grant {
    let g = grant(user, provider, at);
    store.save_grant(&g, &credential(&g.id, with_refresh, 1), true, &grant_audit(&g, "grant.connect")).await.unwrap();
    g
}

async fn count(store: &Store, table: &str) -> i64 {
    testing::count_rows(store, table).await.unwrap()
}

async fn audit_actions(store: &Store, app: &AppId) -> Vec<String> {
    let mut actions: Vec<String> = store
        .list_audit(app, &AuditFilter::default(), &PageRequest::new(Some(1000), None).unwrap())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.action)
        .collect();
    actions.sort();
    actions
}

fn event(id: &str, subject: &str, at: i64, change: LifecycleChange) -> LifecycleEvent {
    LifecycleEvent { event_id: id.to_owned(), subject: subject.to_owned(), occurred_at: UnixTime(at), change }
}

store_test!(ensure_user_finds_or_creates_without_touching_the_claim_lock);
async fn ensure_user_finds_or_creates_without_touching_the_claim_lock(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    let idp = idp_for(&app.id);
    store.create_idp(&idp, &audit(&app.id, "idp.create", NOW)).await.unwrap();

    let id = UserId::parse(&uuid()).unwrap();
    let user = store.ensure_user(&app.id, "imported", &id, NOW).await.unwrap();
    assert_eq!(user.id, id, "{b}");
    assert_eq!((user.status, user.created_at, user.last_seen_at), (UserStatus::Active, NOW, None), "{b}");
    assert!(user.groups.is_empty() && user.roles.is_empty() && user.email.is_none(), "{b}");
    assert_eq!(store.get_idp(&app.id).await.unwrap(), Some(idp), "{b}: not a sign-in: no lock");

    // Found again (the new id is not used), in any status.
    let again = store.ensure_user(&app.id, "imported", &UserId::parse(&uuid()).unwrap(), NOW).await.unwrap();
    assert_eq!(again, user, "{b}");
    testing::set_user_status(&store, &user.id, UserStatus::Deprovisioned, NOW).await.unwrap();
    let gone = store.ensure_user(&app.id, "imported", &UserId::parse(&uuid()).unwrap(), NOW).await.unwrap();
    assert_eq!(gone.status, UserStatus::Deprovisioned, "{b}");

    // Racing creators end up with one user.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, app) = (store.clone(), app.id.clone());
        tasks.push(tokio::spawn(async move {
            store.ensure_user(&app, "racer", &UserId::parse(&uuid()).unwrap(), NOW).await.unwrap().id
        }));
    }
    let mut ids = BTreeSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 1, "{b}");
    assert_eq!(count(&store, "users").await, 2, "{b}");
}

store_test!(providers_put_get_list_and_update_keeps_created_at);
async fn providers_put_get_list_and_update_keeps_created_at(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    let other = seed_app(&store).await;
    assert_eq!(store.get_provider(&app.id, &name("google")).await.unwrap(), None, "{b}");

    let google = seed_provider(&store, &app.id, "google", true).await;
    assert_eq!(store.get_provider(&app.id, &name("google")).await.unwrap(), Some(google.clone()), "{b}");
    assert_eq!(store.get_provider(&other.id, &name("google")).await.unwrap(), None, "{b}");

    // An update keeps the stored created_at whatever it is given, and replaces the rest.
    let mut update = provider(&app.id, "google", false);
    update.client_id = "client-2".into();
    update.client_secret = SealedBox(b"sealed-secret-2".to_vec());
    update.scopes = vec!["profile".into()];
    update.created_at = NOW.plus_seconds(500);
    update.updated_at = NOW.plus_seconds(500);
    store.put_provider(&update, &audit(&app.id, "provider.update", NOW)).await.unwrap();
    let stored = store.get_provider(&app.id, &name("google")).await.unwrap().unwrap();
    assert_eq!(stored, ProviderConfig { created_at: NOW, ..update }, "{b}");

    for p in ["slack", "github", "a-crm", "microsoft"] {
        seed_provider(&store, &app.id, p, false).await;
    }
    seed_provider(&store, &other.id, "zeta", false).await;
    let mut names = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list_providers(&app.id, &PageRequest::new(Some(2), cursor).unwrap()).await.unwrap();
        assert!(page.items.len() <= 2, "{b}");
        names.extend(page.items.into_iter().map(|p| p.name.to_string()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(names, vec!["a-crm", "github", "google", "microsoft", "slack"], "{b}: by name, this app only");

    // A provider for an app that does not exist is refused, with no audit row.
    let ghost = AppId::parse(&uuid()).unwrap();
    assert!(store.put_provider(&provider(&ghost, "x", false), &audit(&ghost, "provider.create", NOW)).await.is_err());
    let actions = audit_actions(&store, &app.id).await;
    assert_eq!(actions.iter().filter(|a| a.starts_with("provider.")).count(), 6, "{b}");
}

store_test!(policies_put_get_list_delete_and_fail_closed);
async fn policies_put_get_list_delete_and_fail_closed(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    seed_provider(&store, &app.id, "google", true).await;
    seed_provider(&store, &app.id, "github", false).await;
    assert_eq!(store.get_policy(&app.id, &name("google")).await.unwrap(), PolicyLookup::None, "{b}");

    let policy = Policy {
        app_id: app.id.clone(),
        provider: name("google"),
        allow_groups: set(&["eng"]),
        allow_roles: set(&["admin", "dev"]),
        token_access: TokenAccess::Handout,
        updated_at: NOW,
    };
    store.put_policy(&policy, &audit(&app.id, "policy.put", NOW)).await.unwrap();
    assert_eq!(store.get_policy(&app.id, &name("google")).await.unwrap(), PolicyLookup::Found(policy.clone()), "{b}");
    // Replacing it also switches its token access (the `proxy_only` column round-trips).
    let replaced = Policy {
        allow_groups: BTreeSet::new(),
        token_access: TokenAccess::ProxyOnly,
        updated_at: NOW.plus_seconds(1),
        ..policy.clone()
    };
    store.put_policy(&replaced, &audit(&app.id, "policy.put", NOW)).await.unwrap();
    assert_eq!(store.get_policy(&app.id, &name("google")).await.unwrap(), PolicyLookup::Found(replaced.clone()));

    // A policy needs its provider.
    let orphan = Policy { provider: name("nope"), ..policy.clone() };
    assert!(store.put_policy(&orphan, &audit(&app.id, "policy.put", NOW)).await.is_err(), "{b}");

    let github = Policy { provider: name("github"), ..policy.clone() };
    store.put_policy(&github, &audit(&app.id, "policy.put", NOW)).await.unwrap();
    let page = store.list_policies(&app.id, &PageRequest::new(Some(1), None).unwrap()).await.unwrap();
    assert_eq!(page.items, vec![github.clone()], "{b}: by provider name");
    let page = store.list_policies(&app.id, &PageRequest::new(Some(1), page.next_cursor).unwrap()).await.unwrap();
    assert_eq!((page.items, page.next_cursor), (vec![replaced], None), "{b}");

    // A stored policy that does not decode denies; the listing refuses rather than hide it.
    for sql in [
        "UPDATE policies SET allow_groups_json = '{not json' WHERE provider = 'google'",
        "UPDATE policies SET allow_groups_json = '[]', allow_roles_json = '[1, 2]' WHERE provider = 'google'",
    ] {
        assert_eq!(testing::execute_sql(&store, sql).await.unwrap(), 1, "{b}");
        assert_eq!(store.get_policy(&app.id, &name("google")).await.unwrap(), PolicyLookup::Unreadable, "{b}");
        assert!(matches!(store.list_policies(&app.id, &PageRequest::first()).await, Err(StoreError::Unavailable(_))));
    }
    assert_eq!(store.get_policy(&app.id, &name("github")).await.unwrap(), PolicyLookup::Found(github), "{b}");
    // Writing it again repairs it.
    store.put_policy(&policy, &audit(&app.id, "policy.put", NOW)).await.unwrap();
    assert_eq!(store.get_policy(&app.id, &name("google")).await.unwrap(), PolicyLookup::Found(policy), "{b}");

    assert!(store.delete_policy(&app.id, &name("google"), &audit(&app.id, "policy.delete", NOW)).await.unwrap());
    assert!(!store.delete_policy(&app.id, &name("google"), &audit(&app.id, "policy.delete", NOW)).await.unwrap());
    assert_eq!(store.get_policy(&app.id, &name("google")).await.unwrap(), PolicyLookup::None, "{b}");
    let actions = audit_actions(&store, &app.id).await;
    assert_eq!(actions.iter().filter(|a| *a == "policy.delete").count(), 1, "{b}");
    assert_eq!(actions.iter().filter(|a| *a == "policy.put").count(), 4, "{b}");
}

store_test!(save_grant_inserts_updates_and_reports_conflicts);
async fn save_grant_inserts_updates_and_reports_conflicts(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    seed_provider(&store, &app.id, "google", true).await;
    let ann = seed_user(&store, &app.id, "ann").await;

    let first = grant(&ann, "google", NOW);
    let cred = credential(&first.id, true, 1);
    store.save_grant(&first, &cred, true, &grant_audit(&first, "grant.connect")).await.unwrap();
    assert_eq!(store.get_grant(&app.id, &first.id).await.unwrap(), Some(first.clone()), "{b}");
    assert_eq!(store.load_credential(&first.id).await.unwrap(), Some(cred.clone()), "{b}");
    let elsewhere = seed_app(&store).await;
    assert_eq!(store.get_grant(&elsewhere.id, &first.id).await.unwrap(), None, "{b}: other app");

    // A second new active grant for the same user and provider conflicts, writing nothing.
    let audits = count(&store, "audit_log").await;
    let second = grant(&ann, "google", NOW);
    let err = store.save_grant(&second, &credential(&second.id, false, 1), true, &grant_audit(&second, "x")).await;
    assert_eq!(err, Err(SaveGrantError::Conflict), "{b}");
    assert_eq!(store.get_grant(&app.id, &second.id).await.unwrap(), None, "{b}");
    assert_eq!(count(&store, "audit_log").await, audits, "{b}");

    // An update replaces scopes, account and the credential; created_at and last_used_at stay.
    let touched = NOW.plus_seconds(30);
    store.record_handout(&first.id, Some(touched), &grant_audit(&first, "token.handout")).await.unwrap();
    let updated = Grant {
        scopes: vec!["email".into(), "drive".into()],
        account: Some("other@example.com".into()),
        created_at: NOW.plus_seconds(99),
        updated_at: NOW.plus_seconds(60),
        last_used_at: None,
        ..first.clone()
    };
    let new_cred = credential(&first.id, false, 1);
    store.save_grant(&updated, &new_cred, false, &grant_audit(&first, "grant.connect")).await.unwrap();
    let stored = store.get_grant(&app.id, &first.id).await.unwrap().unwrap();
    assert_eq!(stored, Grant { created_at: NOW, last_used_at: Some(touched), ..updated.clone() }, "{b}");
    let stored_cred = store.load_credential(&first.id).await.unwrap().unwrap();
    assert_eq!(stored_cred, Credential { version: 2, ..new_cred }, "{b}: the version moves past the old one");
    // So a refresh that read version 1 loses its compare-and-set.
    let late = credential(&first.id, true, 2);
    assert!(!store.replace_credential(&late, 1, &grant_audit(&first, "token.refresh")).await.unwrap(), "{b}");

    // Only an active grant can be updated.
    store
        .revoke_grants(&app.id, &RevokeScope::Grant(first.id.clone()), NOW, &grant_audit(&first, "grant.revoke"))
        .await
        .unwrap();
    let err = store.save_grant(&updated, &credential(&first.id, false, 1), false, &grant_audit(&first, "x")).await;
    assert_eq!(err, Err(SaveGrantError::Conflict), "{b}");
    assert_eq!(store.load_credential(&first.id).await.unwrap(), None, "{b}");
    // With the old one revoked, a new active grant is fine.
    let third = seed_grant(&store, &ann, "google", false, NOW.plus_seconds(100)).await;
    assert_eq!(store.current_grant(&app.id, &ann.id, &name("google")).await.unwrap().unwrap().id, third.id);

    // Two new saves racing for the same user and provider: exactly one wins.
    let bob = seed_user(&store, &app.id, "bob").await;
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (store, g) = (store.clone(), grant(&bob, "google", NOW));
        tasks.push(tokio::spawn(async move {
            store.save_grant(&g, &credential(&g.id, true, 1), true, &grant_audit(&g, "grant.connect")).await
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1, "{b}: {outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == Err(SaveGrantError::Conflict)).count(), 1, "{b}: {outcomes:?}");

    // No grant for a provider that is gone or a user who is deprovisioned.
    let nope = grant(&bob, "nope", NOW);
    assert!(matches!(
        store.save_grant(&nope, &credential(&nope.id, false, 1), true, &grant_audit(&nope, "x")).await,
        Err(SaveGrantError::Store(_))
    ));
    let cy = seed_user(&store, &app.id, "cy").await;
    testing::set_user_status(&store, &cy.id, UserStatus::Deprovisioned, NOW).await.unwrap();
    let late = grant(&cy, "google", NOW);
    assert!(matches!(
        store.save_grant(&late, &credential(&late.id, false, 1), true, &grant_audit(&late, "x")).await,
        Err(SaveGrantError::Store(_))
    ));
    assert_eq!(store.get_grant(&app.id, &late.id).await.unwrap(), None, "{b}");
}

store_test!(current_grant_prefers_the_active_one_then_the_latest);
async fn current_grant_prefers_the_active_one_then_the_latest(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    seed_provider(&store, &app.id, "google", false).await;
    seed_provider(&store, &app.id, "github", false).await;
    let ann = seed_user(&store, &app.id, "ann").await;
    assert_eq!(store.current_grant(&app.id, &ann.id, &name("google")).await.unwrap(), None, "{b}");

    let old = seed_grant(&store, &ann, "google", true, NOW).await;
    store
        .revoke_grants(&app.id, &RevokeScope::Grant(old.id.clone()), NOW.plus_seconds(10), &grant_audit(&old, "r"))
        .await
        .unwrap();
    let newer = seed_grant(&store, &ann, "google", true, NOW.plus_seconds(1)).await;
    assert!(store
        .expire_grant(&newer.id, 1, NOW.plus_seconds(20), &grant_audit(&newer, "token.refresh"))
        .await
        .unwrap());
    let current = store.current_grant(&app.id, &ann.id, &name("google")).await.unwrap().unwrap();
    assert_eq!((current.id, current.status), (newer.id.clone(), GrantStatus::Expired), "{b}: latest update");

    // An active grant wins even when updated before the others.
    let active = seed_grant(&store, &ann, "google", true, NOW.plus_seconds(5)).await;
    let current = store.current_grant(&app.id, &ann.id, &name("google")).await.unwrap().unwrap();
    assert_eq!((current.id, current.status), (active.id, GrantStatus::Active), "{b}");

    assert_eq!(store.current_grant(&app.id, &ann.id, &name("github")).await.unwrap(), None, "{b}");
    let other = seed_app(&store).await;
    assert_eq!(store.current_grant(&other.id, &ann.id, &name("google")).await.unwrap(), None, "{b}");
}

store_test!(the_handout_context_picks_the_grant_handout_view_picks);
async fn the_handout_context_picks_the_grant_handout_view_picks(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    let key = support::key_for(&app.id, NOW);
    store.create_api_key(&key, &audit(&app.id, "api_key.create", NOW)).await.unwrap();
    seed_provider(&store, &app.id, "google", false).await;
    let ann = seed_user(&store, &app.id, "ann").await;
    let google = GrantSelector::Provider(name("google"));
    let context = |selector: GrantSelector| {
        let (store, key) = (store.clone(), key.clone());
        async move { store.handout_context(&key, "ann", &selector).await.unwrap() }
    };
    // Nothing under a key that is not stored as admitted: no such prefix, or the prefix of a key
    // with another id or hash (one deleted and created again).
    let unknown = ApiKeyRecord { prefix: "no-such-prefix".to_owned(), ..key.clone() };
    let other_id = ApiKeyRecord { id: support::key_for(&app.id, NOW).id, ..key.clone() };
    let other_hash = ApiKeyRecord { hash: vec![0; 32], ..key.clone() };
    for stale in [unknown, other_id, other_hash] {
        assert_eq!(store.handout_context(&stale, "ann", &google).await.unwrap(), None, "{b}: {stale:?}");
    }
    let none_yet = context(google.clone()).await.unwrap();
    assert_eq!((none_yet.user, none_yet.view), (Some(ann.clone()), None), "{b}");
    assert_eq!(
        store.handout_context(&key, "nobody", &google).await.unwrap().map(|c| (c.user, c.view)),
        Some((None, None)),
        "{b}: an unknown subject is no user, under a live key"
    );

    // Three grants, one row each: revoked ones on both sides of the active one in time.
    let revoke = |g: &Grant, at: i64| {
        let (store, g) = (store.clone(), g.clone());
        async move {
            let scope = RevokeScope::Grant(g.id.clone());
            store.revoke_grants(&g.app_id, &scope, NOW.plus_seconds(at), &grant_audit(&g, "r")).await.unwrap();
        }
    };
    let first = seed_grant(&store, &ann, "google", false, NOW).await;
    revoke(&first, 10).await;
    let latest = seed_grant(&store, &ann, "google", false, NOW.plus_seconds(30)).await;
    revoke(&latest, 40).await;
    let active = seed_grant(&store, &ann, "google", false, NOW.plus_seconds(20)).await;
    let chosen = context(google.clone()).await.unwrap().view.unwrap();
    assert_eq!(chosen.grant.id, active.id, "{b}: the active grant first, though another is newer");
    assert_eq!(Some(chosen), store.handout_view(&app.id, &ann.id, &google).await.unwrap(), "{b}");

    // None active: the most recently updated, as `handout_view` orders them.
    revoke(&active, 15).await;
    let chosen = context(google.clone()).await.unwrap().view.unwrap();
    assert_eq!(chosen.grant.id, latest.id, "{b}: the most recently updated");
    assert_eq!(Some(chosen), store.handout_view(&app.id, &ann.id, &google).await.unwrap(), "{b}");

    // By id, the grant named, whatever its rank.
    let by_id = context(GrantSelector::Id(first.id.clone())).await.unwrap().view.unwrap();
    assert_eq!((&by_id.grant.id, by_id.grant.status), (&first.id, GrantStatus::Revoked), "{b}");
    assert_eq!(
        Some(by_id),
        store.handout_view(&app.id, &ann.id, &GrantSelector::Id(first.id.clone())).await.unwrap(),
        "{b}"
    );

    // Once the key is deleted, nothing.
    assert!(store.delete_api_key(&app.id, &key.id, &audit(&app.id, "api_key.delete", NOW)).await.unwrap());
    assert_eq!(context(google.clone()).await, None, "{b}: a deleted key reads nothing");
}

store_test!(handout_view_reads_grant_policy_and_credential_together);
async fn handout_view_reads_grant_policy_and_credential_together(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    seed_provider(&store, &app.id, "google", false).await;
    seed_provider(&store, &app.id, "github", false).await;
    let ann = seed_user(&store, &app.id, "ann").await;
    let bob = seed_user(&store, &app.id, "bob").await;
    let by_provider = |p: &str| GrantSelector::Provider(name(p));
    assert_eq!(store.handout_view(&app.id, &ann.id, &by_provider("google")).await.unwrap(), None, "{b}");

    // The current grant (as `current_grant` picks it), no policy, its credential.
    let old = seed_grant(&store, &ann, "google", true, NOW).await;
    store
        .revoke_grants(&app.id, &RevokeScope::Grant(old.id.clone()), NOW.plus_seconds(10), &grant_audit(&old, "r"))
        .await
        .unwrap();
    let active = seed_grant(&store, &ann, "google", false, NOW.plus_seconds(1)).await;
    let view = store.handout_view(&app.id, &ann.id, &by_provider("google")).await.unwrap().unwrap();
    let current = store.current_grant(&app.id, &ann.id, &name("google")).await.unwrap().unwrap();
    assert_eq!(
        view,
        HandoutView { grant: current, policy: PolicyLookup::None, credential: Some(credential(&active.id, false, 1)) },
        "{b}"
    );
    assert_eq!(view.grant.id, active.id, "{b}");

    // The provider's policy comes along; another provider's does not.
    let policy = Policy {
        app_id: app.id.clone(),
        provider: name("google"),
        allow_groups: set(&["eng"]),
        allow_roles: BTreeSet::new(),
        token_access: TokenAccess::Handout,
        updated_at: NOW,
    };
    store.put_policy(&policy, &audit(&app.id, "policy.put", NOW)).await.unwrap();
    let github_policy = Policy { provider: name("github"), allow_groups: set(&["ops"]), ..policy.clone() };
    store.put_policy(&github_policy, &audit(&app.id, "policy.put", NOW)).await.unwrap();
    let view = store.handout_view(&app.id, &ann.id, &by_provider("google")).await.unwrap().unwrap();
    assert_eq!(view.policy, PolicyLookup::Found(policy.clone()), "{b}");

    // By id: only the user's own grant of this app; a revoked one has no credential.
    let by_id = |g: &Grant| GrantSelector::Id(g.id.clone());
    let view = store.handout_view(&app.id, &ann.id, &by_id(&old)).await.unwrap().unwrap();
    assert_eq!((view.grant.status, view.credential), (GrantStatus::Revoked, None), "{b}");
    assert_eq!(store.handout_view(&app.id, &bob.id, &by_id(&active)).await.unwrap(), None, "{b}: not bob's");
    let other = seed_app(&store).await;
    assert_eq!(store.handout_view(&other.id, &ann.id, &by_id(&active)).await.unwrap(), None, "{b}");

    // A policy row that no longer decodes reads as unreadable (deny), not as "no policy".
    testing::execute_sql(&store, "UPDATE policies SET allow_groups_json = 'not json'").await.unwrap();
    let view = store.handout_view(&app.id, &ann.id, &by_provider("google")).await.unwrap().unwrap();
    assert_eq!(view.policy, PolicyLookup::Unreadable, "{b}");
}

store_test!(concurrent_handout_records_are_all_committed_and_a_bad_one_fails_alone);
async fn concurrent_handout_records_are_all_committed_and_a_bad_one_fails_alone(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    seed_provider(&store, &app.id, "google", false).await;
    let ann = seed_user(&store, &app.id, "ann").await;
    let g = seed_grant(&store, &ann, "google", false, NOW).await;
    let before = count(&store, "audit_log").await;
    // The SQLite side file has no unique index on audit ids (nothing looks them up, and every
    // group commit paid for it); this test adds one, so that a taken id fails its row there too.
    custody_store::testing::execute_handout_audit_sql(
        &store,
        "CREATE UNIQUE INDEX IF NOT EXISTS audit_log_test_id_idx ON audit_log (id)",
    )
    .await
    .unwrap();

    // Many at once, so the writer groups them; every caller returns only once its row is in.
    let taken = grant_audit(&g, "token.handout");
    store.record_handout(&g.id, None, &taken).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200i64 {
        let (store, g) = (store.clone(), g.clone());
        // One record reuses an audit id that is taken (a unique violation): it alone fails.
        let entry = if i == 100 {
            taken.clone()
        } else {
            AuditEntry { action: format!("token.handout.{i}"), ..grant_audit(&g, "token.handout") }
        };
        tasks.spawn(async move {
            let result = store.record_handout(&g.id, Some(NOW.plus_seconds(i)), &entry).await;
            let filter = AuditFilter { action: Some(entry.action.clone()), user_id: None };
            let page = PageRequest::new(Some(10), None).unwrap();
            let visible = store.list_audit(&g.app_id, &filter, &page).await.unwrap().items;
            (i, result, visible.iter().any(|e| e.id == entry.id))
        });
    }
    let mut failed = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (i, result, visible) = done.unwrap();
        match result {
            Ok(()) => assert!(visible, "{b}: record {i} answered before its row was committed"),
            Err(StoreError::Unavailable(_)) => failed.push(i),
            Err(e) => panic!("{b}: record {i}: {e}"),
        }
    }
    assert_eq!(failed, vec![100], "{b}");
    assert_eq!(count(&store, "audit_log").await, before + 1 + 199, "{b}");
    let stored = store.get_grant(&app.id, &g.id).await.unwrap().unwrap();
    assert_eq!(stored.last_used_at, Some(NOW.plus_seconds(199)), "{b}: the latest touch wins");
}

store_test!(grants_list_newest_first_with_filters);
async fn grants_list_newest_first_with_filters(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    seed_provider(&store, &app.id, "google", false).await;
    seed_provider(&store, &app.id, "github", false).await;
    let ann = seed_user(&store, &app.id, "ann").await;
    let bob = seed_user(&store, &app.id, "bob").await;
    let mut all = Vec::new();
    for (i, (user, p)) in [(&ann, "google"), (&ann, "github"), (&bob, "google"), (&bob, "github")].iter().enumerate() {
        // Two share a timestamp, so the id breaks the tie.
        all.push(seed_grant(&store, user, p, false, NOW.plus_seconds((i as i64) / 2 * 10 + i as i64 % 2)).await);
    }
    // Revoked, then connected again with the same timestamp: a mix of statuses and a tie.
    store
        .revoke_grants(&app.id, &RevokeScope::Grant(all[0].id.clone()), NOW, &grant_audit(&all[0], "r"))
        .await
        .unwrap();
    seed_grant(&store, &ann, "google", false, NOW).await;
    let mut expected: Vec<(i64, String)> = Vec::new();
    let listed = store.list_grants(&app.id, &GrantFilter::default(), &PageRequest::first()).await.unwrap();
    for g in &listed.items {
        expected.push((g.created_at.0, g.id.to_string()));
    }
    let mut sorted = expected.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(expected, sorted, "{b}: newest first");
    assert_eq!(listed.items.len(), 5, "{b}");

    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_grants(&app.id, &GrantFilter::default(), &PageRequest::new(Some(2), cursor).unwrap())
            .await
            .unwrap();
        paged.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(paged, listed.items, "{b}");

    let by_user = GrantFilter { user_id: Some(bob.id.clone()), ..GrantFilter::default() };
    let items = store.list_grants(&app.id, &by_user, &PageRequest::first()).await.unwrap().items;
    assert!(items.len() == 2 && items.iter().all(|g| g.user_id == bob.id), "{b}");
    let filter = GrantFilter { provider: Some(name("google")), status: Some(GrantStatus::Revoked), user_id: None };
    let items = store.list_grants(&app.id, &filter, &PageRequest::first()).await.unwrap().items;
    assert_eq!(items.iter().map(|g| g.id.clone()).collect::<Vec<_>>(), vec![all[0].id.clone()], "{b}");

    let other = seed_app(&store).await;
    assert!(store
        .list_grants(&other.id, &GrantFilter::default(), &PageRequest::first())
        .await
        .unwrap()
        .items
        .is_empty());
    for bad in ["not a cursor", "e30"] {
        let page = PageRequest::new(Some(2), Some(bad.to_owned())).unwrap();
        assert_eq!(store.list_grants(&app.id, &GrantFilter::default(), &page).await, Err(StoreError::InvalidCursor));
        assert_eq!(store.list_providers(&app.id, &page).await, Err(StoreError::InvalidCursor), "{b}");
        assert_eq!(store.list_policies(&app.id, &page).await, Err(StoreError::InvalidCursor), "{b}");
    }
}

store_test!(revoke_grants_per_scope_queues_tokens_and_deletes_credentials);
async fn revoke_grants_per_scope_queues_tokens_and_deletes_credentials(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    let google = seed_provider(&store, &app.id, "google", true).await;
    seed_provider(&store, &app.id, "github", false).await;
    let ann = seed_user(&store, &app.id, "ann").await;
    let bob = seed_user(&store, &app.id, "bob").await;
    let ann_google = seed_grant(&store, &ann, "google", true, NOW).await;
    let ann_github = seed_grant(&store, &ann, "github", true, NOW).await;
    let bob_google = seed_grant(&store, &bob, "google", false, NOW).await;
    let ann_google_cred = store.load_credential(&ann_google.id).await.unwrap().unwrap();

    // Another app's grants are out of every scope.
    let other = seed_app(&store).await;
    seed_provider(&store, &other.id, "google", true).await;
    let zed = seed_user(&store, &other.id, "ann").await;
    let zed_google = seed_grant(&store, &zed, "google", true, NOW).await;

    let at = NOW.plus_seconds(100);
    let revoked = store
        .revoke_grants(
            &app.id,
            &RevokeScope::Grant(ann_google.id.clone()),
            at,
            &grant_audit(&ann_google, "grant.revoke"),
        )
        .await
        .unwrap();
    let expected = Grant { status: GrantStatus::Revoked, revoked_at: Some(at), updated_at: at, ..ann_google.clone() };
    assert_eq!(revoked, vec![expected.clone()], "{b}");
    assert_eq!(store.get_grant(&app.id, &ann_google.id).await.unwrap(), Some(expected), "{b}");
    assert_eq!(store.load_credential(&ann_google.id).await.unwrap(), None, "{b}");
    assert_eq!(count(&store, "credentials").await, 3, "{b}");

    // Both tokens queued, copied as they were, with the provider's revocation settings.
    let mut items = store.due_revocations(at, 100).await.unwrap();
    items.sort_by_key(|i| i.token_kind == TokenKind::Refresh);
    assert_eq!(items.len(), 2, "{b}");
    for (item, (kind, token)) in items.iter().zip([
        (TokenKind::Access, ann_google_cred.access_token.clone()),
        (TokenKind::Refresh, ann_google_cred.refresh_token.clone().unwrap()),
    ]) {
        assert_eq!((item.token_kind, &item.token), (kind, &token), "{b}");
        assert_eq!((&item.app_id, &item.grant_id, &item.provider), (&app.id, &ann_google.id, &name("google")));
        assert_eq!(Some(&item.revocation_url), google.revocation_url.as_ref(), "{b}");
        assert_eq!((&item.client_id, &item.client_secret), (&google.client_id, &google.client_secret), "{b}");
        assert_eq!((item.attempts, item.next_attempt_at), (0, at), "{b}");
    }

    // Revoking again changes nothing and writes no audit row.
    let audits = count(&store, "audit_log").await;
    let again = store
        .revoke_grants(
            &app.id,
            &RevokeScope::Grant(ann_google.id.clone()),
            at,
            &grant_audit(&ann_google, "grant.revoke"),
        )
        .await
        .unwrap();
    assert!(again.is_empty(), "{b}");
    assert_eq!(count(&store, "audit_log").await, audits, "{b}");

    // A provider without a revocation URL: nothing queued, credentials deleted all the same.
    let revoked = store
        .revoke_grants(&app.id, &RevokeScope::Provider(name("github")), at, &audit(&app.id, "r", at))
        .await
        .unwrap();
    assert_eq!(revoked.iter().map(|g| g.id.clone()).collect::<Vec<_>>(), vec![ann_github.id.clone()], "{b}");
    assert_eq!(count(&store, "revocation_outbox").await, 2, "{b}");
    assert_eq!(store.load_credential(&ann_github.id).await.unwrap(), None, "{b}");

    // By user: only the access token (there is no refresh token).
    let revoked =
        store.revoke_grants(&app.id, &RevokeScope::User(bob.id.clone()), at, &audit(&app.id, "r", at)).await.unwrap();
    assert_eq!(revoked.iter().map(|g| g.id.clone()).collect::<Vec<_>>(), vec![bob_google.id.clone()], "{b}");
    assert_eq!(count(&store, "revocation_outbox").await, 3, "{b}");
    assert_eq!(count(&store, "credentials").await, 1, "{b}: only the other app's is left");
    assert_eq!(store.get_grant(&other.id, &zed_google.id).await.unwrap().unwrap().status, GrantStatus::Active);

    // A grant of another app is not in scope.
    let scope = RevokeScope::Grant(zed_google.id.clone());
    assert!(store.revoke_grants(&app.id, &scope, at, &audit(&app.id, "r", at)).await.unwrap().is_empty(), "{b}");
    assert_eq!(count(&store, "credentials").await, 1, "{b}");
    let actions = audit_actions(&store, &app.id).await;
    assert_eq!(actions.iter().filter(|a| *a == "r" || *a == "grant.revoke").count(), 3, "{b}");
}

store_test!(delete_provider_revokes_its_grants_then_goes_with_its_policy);
async fn delete_provider_revokes_its_grants_then_goes_with_its_policy(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    let slack = seed_provider(&store, &app.id, "slack", true).await;
    seed_provider(&store, &app.id, "github", true).await;
    let policy = Policy {
        app_id: app.id.clone(),
        provider: name("slack"),
        allow_groups: set(&["eng"]),
        allow_roles: BTreeSet::new(),
        token_access: TokenAccess::Handout,
        updated_at: NOW,
    };
    store.put_policy(&policy, &audit(&app.id, "policy.put", NOW)).await.unwrap();
    let ann = seed_user(&store, &app.id, "ann").await;
    let bob = seed_user(&store, &app.id, "bob").await;
    let a = seed_grant(&store, &ann, "slack", true, NOW).await;
    let expired = seed_grant(&store, &bob, "slack", true, NOW).await;
    assert!(store.expire_grant(&expired.id, 1, NOW, &grant_audit(&expired, "token.refresh")).await.unwrap());
    let kept = seed_grant(&store, &ann, "github", true, NOW).await;

    let at = NOW.plus_seconds(7);
    let mut deletion = audit(&app.id, "provider.delete", at);
    deletion.provider = Some("slack".into());
    let revoked = store.delete_provider(&app.id, &name("slack"), at, &deletion).await.unwrap().unwrap();
    // Every grant that was not revoked yet, the expired one included.
    let ids: BTreeSet<GrantId> = revoked.iter().map(|g| g.id.clone()).collect();
    assert_eq!(ids, BTreeSet::from([a.id.clone(), expired.id.clone()]), "{b}");
    assert!(revoked.iter().all(|g| g.status == GrantStatus::Revoked && g.revoked_at == Some(at)), "{b}");
    assert_eq!(store.get_provider(&app.id, &name("slack")).await.unwrap(), None, "{b}");
    assert_eq!(store.get_policy(&app.id, &name("slack")).await.unwrap(), PolicyLookup::None, "{b}");
    assert_eq!(count(&store, "policies").await, 0, "{b}");
    // The grants stay for the record.
    assert_eq!(store.get_grant(&app.id, &a.id).await.unwrap().unwrap().revoked_at, Some(at), "{b}");
    assert_eq!(store.get_grant(&app.id, &expired.id).await.unwrap().unwrap().status, GrantStatus::Revoked);
    // The queued tokens (only the active grant still had some) carry the deleted provider's
    // settings.
    let items = store.due_revocations(at, 100).await.unwrap();
    assert_eq!(items.len(), 2, "{b}");
    assert!(items.iter().all(|i| i.grant_id == a.id
        && Some(&i.revocation_url) == slack.revocation_url.as_ref()
        && i.client_secret == slack.client_secret));
    assert!(store.load_credential(&kept.id).await.unwrap().is_some(), "{b}");
    assert_eq!(count(&store, "credentials").await, 1, "{b}");

    assert_eq!(
        store.delete_provider(&app.id, &name("slack"), at, &audit(&app.id, "provider.delete", at)).await.unwrap(),
        None
    );
    let actions = audit_actions(&store, &app.id).await;
    assert_eq!(actions.iter().filter(|x| *x == "provider.delete").count(), 1, "{b}");
}

store_test!(deprovision_user_revokes_everything_in_one_go);
async fn deprovision_user_revokes_everything_in_one_go(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    seed_provider(&store, &app.id, "google", true).await;
    seed_provider(&store, &app.id, "github", false).await;
    let ann = seed_user(&store, &app.id, "ann").await;
    let bob = seed_user(&store, &app.id, "bob").await;
    let g1 = seed_grant(&store, &ann, "google", true, NOW).await;
    let g2 = seed_grant(&store, &ann, "github", true, NOW.plus_seconds(1)).await;
    let bobs = seed_grant(&store, &bob, "google", true, NOW).await;
    store.create_connect_state(&connect_state(&ann, "google", "h-ann")).await.unwrap();
    store.create_connect_state(&connect_state(&bob, "google", "h-bob")).await.unwrap();

    let at = NOW.plus_seconds(50);
    let mut entry = audit(&app.id, "user.deprovision", at);
    entry.user_id = Some(ann.id.clone());
    let (user, revoked) = store.deprovision_user(&app.id, &ann.id, at, &entry).await.unwrap().unwrap();
    assert_eq!(user, User { status: UserStatus::Deprovisioned, ..ann.clone() }, "{b}");
    assert_eq!(store.get_user(&app.id, &ann.id).await.unwrap(), Some(user.clone()), "{b}");
    assert_eq!(revoked.iter().map(|g| g.id.clone()).collect::<Vec<_>>(), vec![g2.id.clone(), g1.id.clone()]);
    assert!(revoked.iter().all(|g| g.status == GrantStatus::Revoked && g.revoked_at == Some(at)), "{b}");
    for g in [&g1, &g2] {
        assert_eq!(store.load_credential(&g.id).await.unwrap(), None, "{b}");
    }
    assert!(store.load_credential(&bobs.id).await.unwrap().is_some(), "{b}");
    let items = store.due_revocations(at, 100).await.unwrap();
    assert_eq!(items.len(), 2, "{b}: google's access and refresh tokens (github has no revocation URL)");
    assert!(items.iter().all(|i| i.grant_id == g1.id), "{b}");
    assert_eq!(store.peek_connect_state("h-ann").await.unwrap(), None, "{b}: pending flows are dropped");
    assert!(store.peek_connect_state("h-bob").await.unwrap().is_some(), "{b}");

    // Again: nothing changes, nothing is written.
    let audits = count(&store, "audit_log").await;
    let (again, none) = store.deprovision_user(&app.id, &ann.id, at.plus_seconds(1), &entry).await.unwrap().unwrap();
    assert_eq!((again, none), (user, vec![]), "{b}");
    assert_eq!(count(&store, "audit_log").await, audits, "{b}");
    assert_eq!(count(&store, "revocation_outbox").await, 2, "{b}");

    // Unknown users, and users of another app.
    let other = seed_app(&store).await;
    assert_eq!(store.deprovision_user(&other.id, &bob.id, at, &audit(&other.id, "x", at)).await.unwrap(), None);
    let ghost = UserId::parse(&uuid()).unwrap();
    assert_eq!(store.deprovision_user(&app.id, &ghost, at, &audit(&app.id, "x", at)).await.unwrap(), None);
    assert_eq!(store.get_user(&app.id, &bob.id).await.unwrap().unwrap().status, UserStatus::Active, "{b}");
    assert_eq!(audit_actions(&store, &app.id).await.iter().filter(|a| *a == "user.deprovision").count(), 1);
}

fn connect_state(user: &User, provider: &str, hash: &str) -> ConnectState {
    ConnectState {
        state_hash: hash.to_owned(),
        app_id: user.app_id.clone(),
        user_id: user.id.clone(),
        provider: name(provider),
        return_url: "https://app.example.com/done?x=1".to_owned(),
        scopes: vec!["email".into(), "drive".into()],
        pkce_verifier: SealedBox(format!("sealed-verifier-{hash}").into_bytes()),
        created_at: NOW,
        expires_at: NOW.plus_seconds(600),
        browser_hash: None,
    }
}

store_test!(lifecycle_events_apply_once_in_order_and_never_revive);
async fn lifecycle_events_apply_once_in_order_and_never_revive(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    seed_provider(&store, &app.id, "google", true).await;
    let ann = seed_user(&store, &app.id, "ann").await;
    let g = seed_grant(&store, &ann, "google", true, NOW).await;
    let apply = |e: LifecycleEvent| {
        let (store, app) = (store.clone(), app.id.clone());
        async move { store.apply_lifecycle_event(&app, &e, NOW, &audit(&app, "user.lifecycle", NOW)).await.unwrap() }
    };
    let status = |o: &LifecycleOutcome| match o {
        LifecycleOutcome::Applied { user, .. } => Some(user.status),
        _ => None,
    };

    // An unknown subject creates nothing; its event id is recorded all the same.
    let users = count(&store, "users").await;
    assert!(matches!(apply(event("e0", "stranger", 1, LifecycleChange::Suspend)).await, LifecycleOutcome::Ignored(_)));
    assert_eq!(count(&store, "users").await, users, "{b}");
    assert_eq!(apply(event("e0", "stranger", 1, LifecycleChange::Suspend)).await, LifecycleOutcome::Duplicate);

    // Suspend, then reactivate; the grant is kept.
    let o = apply(event("e1", "ann", 100, LifecycleChange::Suspend)).await;
    assert_eq!(status(&o), Some(UserStatus::Suspended), "{b}");
    assert_eq!(apply(event("e1", "ann", 100, LifecycleChange::Reactivate)).await, LifecycleOutcome::Duplicate);
    assert_eq!(store.get_user(&app.id, &ann.id).await.unwrap().unwrap().status, UserStatus::Suspended, "{b}");
    let o = apply(event("e2", "ann", 110, LifecycleChange::Reactivate)).await;
    assert_eq!(status(&o), Some(UserStatus::Active), "{b}");
    assert!(store.load_credential(&g.id).await.unwrap().is_some(), "{b}");

    // Out of order: a reactivation older than a later suspension is ignored.
    assert_eq!(status(&apply(event("e3", "ann", 200, LifecycleChange::Suspend)).await), Some(UserStatus::Suspended));
    assert!(matches!(apply(event("e4", "ann", 150, LifecycleChange::Reactivate)).await, LifecycleOutcome::Ignored(_)));
    assert_eq!(store.get_user(&app.id, &ann.id).await.unwrap().unwrap().status, UserStatus::Suspended, "{b}");

    // A profile change is not a status change.
    let o =
        apply(event("e5", "ann", 1, LifecycleChange::Profile { email: Some("new@example.com".into()), name: None }))
            .await;
    let LifecycleOutcome::Applied { user, revoked } = o else { panic!("{b}: {o:?}") };
    assert_eq!((user.email.as_deref(), user.status, revoked), (Some("new@example.com"), UserStatus::Suspended, vec![]));

    // Deprovisioning revokes; nothing revives the user afterwards.
    let o = apply(event("e6", "ann", 300, LifecycleChange::Deprovision)).await;
    let LifecycleOutcome::Applied { user, revoked } = o else { panic!("{b}: {o:?}") };
    assert_eq!(user.status, UserStatus::Deprovisioned, "{b}");
    assert_eq!(
        revoked.iter().map(|g| (g.id.clone(), g.status)).collect::<Vec<_>>(),
        vec![(g.id.clone(), GrantStatus::Revoked)]
    );
    assert_eq!(store.load_credential(&g.id).await.unwrap(), None, "{b}");
    assert_eq!(count(&store, "revocation_outbox").await, 2, "{b}");
    for (i, change) in [
        LifecycleChange::Reactivate,
        LifecycleChange::Suspend,
        LifecycleChange::Deprovision,
        LifecycleChange::RemoveGroup("g".into()),
        LifecycleChange::Profile { email: Some("x@example.com".into()), name: None },
    ]
    .into_iter()
    .enumerate()
    {
        let o = apply(event(&format!("late-{i}"), "ann", 400, change)).await;
        assert!(matches!(o, LifecycleOutcome::Ignored(_)), "{b}: {o:?}");
    }
    let stored = store.get_user(&app.id, &ann.id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.email.as_deref()), (UserStatus::Deprovisioned, Some("new@example.com")));

    // One audit row per applied event, naming the user.
    let filter = AuditFilter { action: Some("user.lifecycle".into()), user_id: Some(ann.id.clone()) };
    let rows = store.list_audit(&app.id, &filter, &PageRequest::first()).await.unwrap().items;
    assert_eq!(rows.len(), 5, "{b}");
    assert_eq!(audit_actions(&store, &app.id).await.iter().filter(|a| *a == "user.lifecycle").count(), 5);

    // Event ids are per app; old ones can be forgotten.
    let other = seed_app(&store).await;
    let e1 = event("e1", "ann", 1, LifecycleChange::Suspend);
    let o = store.apply_lifecycle_event(&other.id, &e1, NOW, &audit(&other.id, "l", NOW)).await.unwrap();
    assert!(matches!(o, LifecycleOutcome::Ignored(_)), "{b}");
    assert_eq!(store.prune_webhook_events(NOW).await.unwrap(), 0, "{b}");
    assert_eq!(store.prune_webhook_events(NOW.plus_seconds(1)).await.unwrap(), 13, "{b}");
    assert_eq!(count(&store, "webhook_events").await, 0, "{b}");
    assert!(matches!(apply(event("e1", "ann", 500, LifecycleChange::Suspend)).await, LifecycleOutcome::Ignored(_)));
}

fn idp_for(app: &AppId) -> IdpConfig {
    IdpConfig {
        id: IdpId::parse(&uuid()).unwrap(),
        app_id: app.clone(),
        kind: IdpKind::from_static("custom_oidc"),
        issuer: Issuer::new("https://idp.example.com"),
        jwks_uri: "https://idp.example.com/jwks".to_owned(),
        audience: None,
        claims: ClaimMappings {
            user_id: ClaimPath::subject(),
            group: Some(ClaimPath::parse("groups").unwrap()),
            role: None,
        },
        claims_locked_at: None,
        version: 1,
        created_at: NOW,
        endpoints: IdpEndpoints { authorization_endpoint: None, token_endpoint: None, end_session_endpoint: None },
    }
}

async fn resolve(store: &Store, app: &AppId, subject: &str, groups: &[&str], iat: UnixTime, now: UnixTime) -> User {
    let who = ExtractedIdentity {
        subject: subject.to_owned(),
        email: None,
        name: None,
        groups: set(groups),
        roles: BTreeSet::new(),
    };
    for _ in 0..20 {
        let config = store.get_idp(app).await.unwrap().unwrap();
        let lock = LockGuard { idp_version: config.version, already_locked: config.claims_locked() };
        match store.resolve_user(app, lock, &who, Some(iat), &UserId::parse(&uuid()).unwrap(), now).await {
            Err(ResolveUserError::ConfigChanged) => continue,
            other => return other.unwrap(),
        }
    }
    panic!("configuration kept changing");
}

store_test!(lifecycle_group_removal_holds_against_older_tokens);
async fn lifecycle_group_removal_holds_against_older_tokens(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    store.create_idp(&idp_for(&app.id), &audit(&app.id, "idp.create", NOW)).await.unwrap();
    let user = resolve(&store, &app.id, "fay", &["g", "h"], NOW, NOW).await;
    let removed_at = NOW.plus_seconds(100);
    let o = store
        .apply_lifecycle_event(
            &app.id,
            &event("rm", "fay", removed_at.0, LifecycleChange::RemoveGroup("g".into())),
            removed_at,
            &audit(&app.id, "user.lifecycle", removed_at),
        )
        .await
        .unwrap();
    let LifecycleOutcome::Applied { user: changed, .. } = o else { panic!("{b}: {o:?}") };
    assert_eq!(changed.groups, set(&["h"]), "{b}");
    assert_eq!(store.get_user(&app.id, &user.id).await.unwrap().unwrap().groups, set(&["h"]), "{b}");
    assert_eq!(testing::membership_removals(&store, &user.id).await.unwrap(), vec![("g".into(), removed_at)]);

    // An older removal of the same group does not move the record back.
    let o = store
        .apply_lifecycle_event(
            &app.id,
            &event("rm-old", "fay", 50, LifecycleChange::RemoveGroup("g".into())),
            removed_at,
            &audit(&app.id, "user.lifecycle", removed_at),
        )
        .await
        .unwrap();
    assert!(matches!(o, LifecycleOutcome::Applied { .. }), "{b}");
    assert_eq!(testing::membership_removals(&store, &user.id).await.unwrap(), vec![("g".into(), removed_at)]);

    // A token issued before the removal does not restore the group; one issued after does.
    let later = NOW.plus_seconds(200);
    let seen = resolve(&store, &app.id, "fay", &["g", "h"], NOW.plus_seconds(99), later).await;
    assert_eq!(seen.groups, set(&["h"]), "{b}");
    let seen = resolve(&store, &app.id, "fay", &["g", "h"], removed_at.plus_seconds(1), later).await;
    assert_eq!(seen.groups, set(&["g", "h"]), "{b}");
    assert!(testing::membership_removals(&store, &user.id).await.unwrap().is_empty(), "{b}");

    // The testing helper takes the same path.
    assert!(testing::remove_user_group(&store, &user.id, "h", later).await.unwrap(), "{b}");
    assert_eq!(store.get_user(&app.id, &user.id).await.unwrap().unwrap().groups, set(&["g"]), "{b}");
    assert!(!testing::remove_user_group(&store, &UserId::parse(&uuid()).unwrap(), "h", later).await.unwrap());
}

store_test!(connect_states_are_consumed_once);
async fn connect_states_are_consumed_once(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    let ann = seed_user(&store, &app.id, "ann").await;
    let state = connect_state(&ann, "google", "abc123");
    store.create_connect_state(&state).await.unwrap();
    assert!(store.create_connect_state(&state).await.is_err(), "{b}: the hash is unique");
    assert_eq!(store.peek_connect_state("abc123").await.unwrap(), Some(state.clone()), "{b}");
    assert_eq!(store.peek_connect_state("abc123").await.unwrap(), Some(state.clone()), "{b}: peeking keeps it");
    // Bound to one browser once: the first binding wins, a second is refused.
    assert!(store.bind_connect_state("abc123", "browser-1").await.unwrap(), "{b}");
    assert!(!store.bind_connect_state("abc123", "browser-2").await.unwrap(), "{b}");
    assert!(!store.bind_connect_state("unknown", "browser-1").await.unwrap(), "{b}");
    let state = ConnectState { browser_hash: Some("browser-1".into()), ..state };
    assert_eq!(store.peek_connect_state("abc123").await.unwrap(), Some(state.clone()), "{b}");

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.consume_connect_state("abc123").await.unwrap() }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.extend(t.await.unwrap());
    }
    assert_eq!(got, vec![state], "{b}: exactly one consumer gets it");
    assert_eq!(store.peek_connect_state("abc123").await.unwrap(), None, "{b}");
    assert_eq!(store.consume_connect_state("abc123").await.unwrap(), None, "{b}");

    // States abandoned more than a day ago are cleared when new ones are created; recently
    // expired ones stay, so a late callback is still told it expired.
    let mut stale = connect_state(&ann, "google", "stale");
    (stale.created_at, stale.expires_at) = (NOW.plus_seconds(-100_000), NOW.plus_seconds(-99_400));
    store.create_connect_state(&stale).await.unwrap();
    assert_eq!(store.peek_connect_state("stale").await.unwrap(), Some(stale), "{b}");
    let mut expired = connect_state(&ann, "google", "expired");
    (expired.created_at, expired.expires_at) = (NOW.plus_seconds(-700), NOW.plus_seconds(-100));
    store.create_connect_state(&expired).await.unwrap();
    store.create_connect_state(&connect_state(&ann, "google", "fresh")).await.unwrap();
    assert_eq!(store.peek_connect_state("stale").await.unwrap(), None, "{b}");
    assert_eq!(store.peek_connect_state("expired").await.unwrap(), Some(expired), "{b}");
}

store_test!(credentials_compare_and_set_expire_and_hand_out);
async fn credentials_compare_and_set_expire_and_hand_out(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    seed_provider(&store, &app.id, "google", true).await;
    let ann = seed_user(&store, &app.id, "ann").await;
    let g = seed_grant(&store, &ann, "google", true, NOW).await;

    let next = credential(&g.id, true, 2);
    assert!(store.replace_credential(&next, 1, &grant_audit(&g, "token.refresh")).await.unwrap(), "{b}");
    assert_eq!(store.load_credential(&g.id).await.unwrap(), Some(next.clone()), "{b}");
    let lost = credential(&g.id, false, 2);
    assert!(!store.replace_credential(&lost, 1, &grant_audit(&g, "token.refresh")).await.unwrap(), "{b}");
    assert_eq!(store.load_credential(&g.id).await.unwrap(), Some(next), "{b}");
    assert_eq!(audit_actions(&store, &app.id).await.iter().filter(|a| *a == "token.refresh").count(), 1);

    // Hand-outs: an audit row each; last_used_at only when touched, never backwards.
    store.record_handout(&g.id, None, &grant_audit(&g, "token.handout")).await.unwrap();
    assert_eq!(store.get_grant(&app.id, &g.id).await.unwrap().unwrap().last_used_at, None, "{b}");
    store.record_handout(&g.id, Some(NOW.plus_seconds(60)), &grant_audit(&g, "token.handout")).await.unwrap();
    store.record_handout(&g.id, Some(NOW.plus_seconds(30)), &grant_audit(&g, "token.handout")).await.unwrap();
    let stored = store.get_grant(&app.id, &g.id).await.unwrap().unwrap();
    assert_eq!((stored.last_used_at, stored.updated_at), (Some(NOW.plus_seconds(60)), NOW), "{b}");
    assert_eq!(audit_actions(&store, &app.id).await.iter().filter(|a| *a == "token.handout").count(), 3);

    // The refresh rotated the refresh token: the old one is queued for revocation.
    assert_eq!(count(&store, "revocation_outbox").await, 1, "{b}");
    store.finish_revocation(&format!("{}:superseded-refresh:v1", g.id), None).await.unwrap();
    assert_eq!(count(&store, "revocation_outbox").await, 0, "{b}: under the id the port documents");

    // Expiry compares the credential version: a stale one changes nothing, writes no audit.
    let at = NOW.plus_seconds(90);
    assert!(!store.expire_grant(&g.id, 1, at, &grant_audit(&g, "token.refresh")).await.unwrap(), "{b}");
    assert_eq!(store.get_grant(&app.id, &g.id).await.unwrap().unwrap().status, GrantStatus::Active, "{b}");
    assert_eq!(audit_actions(&store, &app.id).await.iter().filter(|a| *a == "token.refresh").count(), 1);
    // Expiry: status, credential gone, nothing queued for the provider.
    assert!(store.expire_grant(&g.id, 2, at, &grant_audit(&g, "token.refresh")).await.unwrap(), "{b}");
    let stored = store.get_grant(&app.id, &g.id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.updated_at, stored.revoked_at), (GrantStatus::Expired, at, None), "{b}");
    assert_eq!(store.load_credential(&g.id).await.unwrap(), None, "{b}");
    assert_eq!(count(&store, "revocation_outbox").await, 0, "{b}");
    assert!(!store.replace_credential(&credential(&g.id, true, 3), 2, &grant_audit(&g, "x")).await.unwrap());
    // An expired grant can be revoked; nothing is left to queue.
    let revoked = store.revoke_grants(&app.id, &RevokeScope::Grant(g.id.clone()), at, &grant_audit(&g, "r")).await;
    assert_eq!(revoked.unwrap().len(), 1, "{b}");
    assert_eq!(count(&store, "revocation_outbox").await, 0, "{b}");
}

store_test!(outbox_items_are_due_retried_and_finished);
async fn outbox_items_are_due_retried_and_finished(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    seed_provider(&store, &app.id, "google", true).await;
    let ann = seed_user(&store, &app.id, "ann").await;
    let bob = seed_user(&store, &app.id, "bob").await;
    let g1 = seed_grant(&store, &ann, "google", true, NOW).await;
    let g2 = seed_grant(&store, &bob, "google", false, NOW).await;
    store.revoke_grants(&app.id, &RevokeScope::Grant(g1.id.clone()), NOW, &grant_audit(&g1, "r")).await.unwrap();
    store
        .revoke_grants(&app.id, &RevokeScope::Grant(g2.id.clone()), NOW.plus_seconds(5), &grant_audit(&g2, "r"))
        .await
        .unwrap();

    assert!(store.due_revocations(NOW.plus_seconds(-1), 10).await.unwrap().is_empty(), "{b}");
    let due = store.due_revocations(NOW.plus_seconds(5), 10).await.unwrap();
    assert_eq!(
        due.iter().map(|i| i.grant_id.clone()).collect::<Vec<_>>(),
        vec![g1.id.clone(), g1.id.clone(), g2.id.clone()]
    );
    assert_eq!(store.due_revocations(NOW.plus_seconds(5), 1).await.unwrap().len(), 1, "{b}: limit");

    // A retry moves an item to the back of the queue until its time comes.
    let first = due[0].clone();
    store.retry_revocation(&first.id, 1, NOW.plus_seconds(60)).await.unwrap();
    let due = store.due_revocations(NOW.plus_seconds(10), 10).await.unwrap();
    assert!(due.iter().all(|i| i.id != first.id) && due.len() == 2, "{b}");
    let due = store.due_revocations(NOW.plus_seconds(60), 10).await.unwrap();
    let retried = due.iter().find(|i| i.id == first.id).unwrap();
    assert_eq!((retried.attempts, retried.next_attempt_at), (1, NOW.plus_seconds(60)), "{b}");
    assert_eq!(due.last().unwrap().id, first.id, "{b}: oldest due first");

    // Finishing removes the item with its audit row, once.
    let done = audit(&app.id, "grant.provider_revoke", NOW);
    store.finish_revocation(&first.id, Some(&done)).await.unwrap();
    store.finish_revocation(&first.id, Some(&audit(&app.id, "grant.provider_revoke", NOW))).await.unwrap();
    store.finish_revocation(&due[0].id, None).await.unwrap();
    assert_eq!(count(&store, "revocation_outbox").await, 1, "{b}");
    assert_eq!(audit_actions(&store, &app.id).await.iter().filter(|a| *a == "grant.provider_revoke").count(), 1);
}

store_test!(sealed_values_page_through_every_kind_and_replace_compare_and_set);
async fn sealed_values_page_through_every_kind_and_replace_compare_and_set(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    seed_provider(&store, &app.id, "google", true).await;
    seed_provider(&store, &app.id, "github", true).await;
    let ann = seed_user(&store, &app.id, "ann").await;
    let bob = seed_user(&store, &app.id, "bob").await;
    let cy = seed_user(&store, &app.id, "cy").await;
    let mut grants = Vec::new();
    for u in [&ann, &bob, &cy] {
        grants.push(seed_grant(&store, u, "google", true, NOW).await);
    }
    grants.push(seed_grant(&store, &ann, "github", false, NOW).await);
    let revoked = seed_grant(&store, &bob, "github", true, NOW).await;
    store
        .revoke_grants(&app.id, &RevokeScope::Grant(revoked.id.clone()), NOW, &grant_audit(&revoked, "r"))
        .await
        .unwrap();
    store.create_connect_state(&connect_state(&ann, "google", "h1")).await.unwrap();
    store.create_connect_state(&connect_state(&bob, "google", "h2")).await.unwrap();
    store.put_instance_secret_if_absent("hash-key", b"sealed-hash-key").await.unwrap();

    let expected: BTreeMap<&str, usize> = BTreeMap::from([
        ("CredentialAccess", 4),
        ("CredentialRefresh", 3),
        ("ProviderSecret", 2),
        ("OutboxToken", 2),
        ("OutboxClientSecret", 2),
        ("ConnectVerifier", 2),
        ("InstanceSecret", 1),
    ]);
    for kind in [
        SealedKind::CredentialAccess,
        SealedKind::CredentialRefresh,
        SealedKind::ProviderSecret,
        SealedKind::OutboxToken,
        SealedKind::OutboxClientSecret,
        SealedKind::ConnectVerifier,
        SealedKind::InstanceSecret,
    ] {
        let mut all: Vec<SealedValue> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let batch = store.sealed_values(kind, after.as_deref(), 2).await.unwrap();
            assert!(batch.len() <= 2, "{b}");
            assert!(batch.iter().all(|v| v.kind == kind), "{b}");
            let Some(last) = batch.last() else { break };
            after = Some(last.cursor.clone());
            all.extend(batch);
        }
        assert_eq!(all.len(), expected[format!("{kind:?}").as_str()], "{b}: {kind:?}");
        let cursors: BTreeSet<&String> = all.iter().map(|v| &v.cursor).collect();
        assert_eq!(cursors.len(), all.len(), "{b}: {kind:?}: no value twice");
        for v in &all {
            assert_eq!(v.associated_data, expected_aad(&store, &app.id, v).await, "{b}: {kind:?}");
        }

        // Compare-and-set on the old bytes.
        let v = &all[0];
        let new = SealedBox([v.sealed.0.as_slice(), b"-resealed"].concat());
        assert!(store.replace_sealed(v, &new).await.unwrap(), "{b}: {kind:?}");
        assert!(!store.replace_sealed(v, &SealedBox(b"other".to_vec())).await.unwrap(), "{b}: {kind:?}: stale");
        let again = store.sealed_values(kind, None, 1000).await.unwrap();
        let replaced = again.iter().find(|x| x.cursor == v.cursor).unwrap();
        assert_eq!((&replaced.sealed, &replaced.associated_data), (&new, &v.associated_data), "{b}: {kind:?}");
        assert_eq!(again.len(), all.len(), "{b}: {kind:?}");
    }
    assert_eq!(
        store.sealed_values(SealedKind::CredentialAccess, Some("nonsense"), 2).await,
        Err(StoreError::InvalidCursor)
    );
    assert!(store.sealed_values(SealedKind::CredentialAccess, None, 0).await.unwrap().is_empty(), "{b}");
    // The replaced values are the ones the domain reads back.
    let resealed = store.sealed_values(SealedKind::CredentialAccess, None, 1).await.unwrap().remove(0);
    let owner = grants.iter().find(|g| Credential::aad(&g.id, TokenKind::Access) == resealed.associated_data).unwrap();
    assert_eq!(store.load_credential(&owner.id).await.unwrap().unwrap().access_token, resealed.sealed, "{b}");
    assert!(resealed.sealed.0.ends_with(b"-resealed"), "{b}");
    assert_eq!(store.get_instance_secret("hash-key").await.unwrap(), Some(b"sealed-hash-key-resealed".to_vec()), "{b}");
}

/// The associated data the domain defines for the row behind `v`.
async fn expected_aad(store: &Store, app: &AppId, v: &SealedValue) -> Vec<u8> {
    match v.kind {
        SealedKind::CredentialAccess | SealedKind::CredentialRefresh => {
            let kind = if v.kind == SealedKind::CredentialAccess { TokenKind::Access } else { TokenKind::Refresh };
            let grants = store.list_grants(app, &GrantFilter::default(), &PageRequest::first()).await.unwrap().items;
            let matching: Vec<Grant> =
                grants.into_iter().filter(|g| Credential::aad(&g.id, kind) == v.associated_data).collect();
            assert_eq!(matching.len(), 1, "{:?}", v.kind);
            let cred = store.load_credential(&matching[0].id).await.unwrap().unwrap();
            let stored = if kind == TokenKind::Access { Some(cred.access_token) } else { cred.refresh_token };
            assert_eq!(stored, Some(v.sealed.clone()));
            Credential::aad(&matching[0].id, kind)
        }
        SealedKind::ProviderSecret => {
            let providers = store.list_providers(app, &PageRequest::first()).await.unwrap().items;
            let p = providers.into_iter().find(|p| p.client_secret == v.sealed).unwrap();
            ProviderConfig::secret_aad(&p.app_id, &p.name)
        }
        SealedKind::OutboxToken | SealedKind::OutboxClientSecret => {
            let items = store.due_revocations(UnixTime(i64::MAX), 100).await.unwrap();
            if v.kind == SealedKind::OutboxToken {
                let item = items.into_iter().find(|i| i.token == v.sealed).unwrap();
                Credential::aad(&item.grant_id, item.token_kind)
            } else {
                let item = items.into_iter().find(|i| i.client_secret == v.sealed).unwrap();
                ProviderConfig::secret_aad(&item.app_id, &item.provider)
            }
        }
        SealedKind::ConnectVerifier => {
            let hash = String::from_utf8(v.sealed.0.clone()).unwrap().trim_start_matches("sealed-verifier-").to_owned();
            let state = store.peek_connect_state(&hash).await.unwrap().unwrap();
            assert_eq!(state.pkce_verifier, v.sealed);
            ConnectState::verifier_aad(&state.state_hash)
        }
        SealedKind::InstanceSecret => instance_secret_aad("hash-key"),
        // Covered by the webhook suite (tests/tests/webhooks_http.rs).
        SealedKind::WebhookSecret => custody_vault::webhook::webhook_secret_aad(app),
    }
}

store_test!(refresh_lock_is_single_flight_per_grant);
async fn refresh_lock_is_single_flight_per_grant(db: TestDatabase, store: Store) {
    let b = db.backend();
    let grant = GrantId::parse(&uuid()).unwrap();
    let other = GrantId::parse(&uuid()).unwrap();
    let guard = store.lock(&grant).await.unwrap();

    let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
    let waiter = {
        let (store, grant) = (store.clone(), grant.clone());
        tokio::spawn(async move {
            let guard = store.lock(&grant).await.unwrap();
            let _ = tx.send(());
            guard.release().await;
        })
    };
    // Another grant is not held up.
    let unrelated = tokio::time::timeout(Duration::from_secs(5), store.lock(&other)).await.unwrap().unwrap();
    unrelated.release().await;
    // Nothing signals "still waiting": a bounded wait that sees no lock taken is the check.
    let taken = tokio::time::timeout(Duration::from_millis(300), &mut rx).await;
    assert!(taken.is_err(), "{b}: the second locker waits");
    guard.release().await;
    tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
    assert!(rx.try_recv().is_ok(), "{b}");

    // A guard dropped without release frees the lock too.
    let dropped = store.lock(&grant).await.unwrap();
    drop(dropped);
    let again = tokio::time::timeout(Duration::from_secs(5), store.lock(&grant)).await.unwrap().unwrap();
    again.release().await;
    assert_eq!(testing::refresh_lock_entries(&store), 0, "{b}: no entry outlives its use");

    // Many contenders take turns; none overlaps another.
    let inside = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (store, grant, inside) = (store.clone(), grant.clone(), inside.clone());
        tasks.push(tokio::spawn(async move {
            let guard = store.lock(&grant).await.unwrap();
            assert_eq!(inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 0);
            tokio::time::sleep(Duration::from_millis(20)).await;
            inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            guard.release().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(testing::refresh_lock_entries(&store), 0, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_lock_excludes_other_processes_on_postgres() {
    let mut ran = false;
    for db in TestDatabase::all().await.unwrap() {
        if db.backend() != Backend::Postgres {
            continue;
        }
        ran = true;
        // Two stores with pools of their own stand for two processes.
        let first = db.connect().await.unwrap();
        let options = StoreOptions { refresh_lock_timeout: Duration::from_secs(2), ..StoreOptions::default() };
        let second = Store::connect(db.url(), options).await.unwrap();
        let grant = GrantId::parse(&uuid()).unwrap();

        let held = first.lock(&grant).await.unwrap();
        let started = std::time::Instant::now();
        let refused = second.lock(&grant).await;
        assert!(matches!(refused, Err(RefreshLockError::TimedOut)), "the other process waits, then gives up");
        assert!(started.elapsed() >= Duration::from_millis(1500), "{:?}", started.elapsed());

        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let waiter = {
            let (second, grant) = (second.clone(), grant.clone());
            tokio::spawn(async move {
                let guard = second.lock(&grant).await.unwrap();
                let _ = tx.send(());
                guard
            })
        };
        let taken = tokio::time::timeout(Duration::from_millis(300), &mut rx).await;
        assert!(taken.is_err(), "the other process waits while the lock is held");
        held.release().await;
        let guard = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();

        // The second process dies holding it (its session goes away): the first can lock again.
        drop(guard);
        let again = tokio::time::timeout(Duration::from_secs(5), first.lock(&grant)).await.unwrap().unwrap();
        again.release().await;
        // Released sessions hold nothing: the other store locks at once.
        let once_more = tokio::time::timeout(Duration::from_secs(5), second.lock(&grant)).await.unwrap().unwrap();
        once_more.release().await;
    }
    assert_eq!(ran, testing::backends().contains(&Backend::Postgres));
}

store_test!(failed_audit_insert_rolls_vault_changes_back);
async fn failed_audit_insert_rolls_vault_changes_back(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    seed_provider(&store, &app.id, "google", true).await;
    let ann = seed_user(&store, &app.id, "ann").await;
    let g = seed_grant(&store, &ann, "google", true, NOW).await;
    let taken = audit(&app.id, "taken", NOW);
    AuditLog::append_audit(&store, &taken).await.unwrap();
    let dup = AuditEntry { action: "dup".into(), ..taken.clone() };

    let bob = seed_user(&store, &app.id, "bob").await;
    let new = grant(&bob, "google", NOW);
    assert!(matches!(
        store.save_grant(&new, &credential(&new.id, true, 1), true, &dup).await,
        Err(SaveGrantError::Store(_))
    ));
    assert_eq!(store.get_grant(&app.id, &new.id).await.unwrap(), None, "{b}");

    assert!(store.revoke_grants(&app.id, &RevokeScope::Grant(g.id.clone()), NOW, &dup).await.is_err(), "{b}");
    assert!(store.delete_provider(&app.id, &name("google"), NOW, &dup).await.is_err(), "{b}");
    assert!(store.deprovision_user(&app.id, &ann.id, NOW, &dup).await.is_err(), "{b}");
    let e = event("e", "ann", 1, LifecycleChange::Deprovision);
    assert!(store.apply_lifecycle_event(&app.id, &e, NOW, &dup).await.is_err(), "{b}");
    assert!(store.replace_credential(&credential(&g.id, true, 2), 1, &dup).await.is_err(), "{b}");

    assert_eq!(store.get_grant(&app.id, &g.id).await.unwrap().unwrap().status, GrantStatus::Active, "{b}");
    assert_eq!(store.load_credential(&g.id).await.unwrap(), Some(credential(&g.id, true, 1)), "{b}");
    assert!(store.get_provider(&app.id, &name("google")).await.unwrap().is_some(), "{b}");
    assert_eq!(store.get_user(&app.id, &ann.id).await.unwrap().unwrap().status, UserStatus::Active, "{b}");
    assert_eq!(count(&store, "revocation_outbox").await, 0, "{b}");
    assert_eq!(count(&store, "webhook_events").await, 0, "{b}: the event id is not kept either");
}

store_test!(deleting_an_app_removes_every_vault_row);
async fn deleting_an_app_removes_every_vault_row(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    let kept = seed_app(&store).await;
    for a in [&app, &kept] {
        seed_provider(&store, &a.id, "google", true).await;
        let policy = Policy {
            app_id: a.id.clone(),
            provider: name("google"),
            allow_groups: set(&["eng"]),
            allow_roles: BTreeSet::new(),
            token_access: TokenAccess::Handout,
            updated_at: NOW,
        };
        store.put_policy(&policy, &audit(&a.id, "policy.put", NOW)).await.unwrap();
        let ann = seed_user(&store, &a.id, "ann").await;
        let bob = seed_user(&store, &a.id, "bob").await;
        let g = seed_grant(&store, &ann, "google", true, NOW).await;
        seed_grant(&store, &bob, "google", true, NOW).await;
        store.revoke_grants(&a.id, &RevokeScope::Grant(g.id.clone()), NOW, &grant_audit(&g, "r")).await.unwrap();
        store.create_connect_state(&connect_state(&bob, "google", &format!("h-{}", a.id))).await.unwrap();
        store
            .apply_lifecycle_event(
                &a.id,
                &event("e1", "nobody", 1, LifecycleChange::Suspend),
                NOW,
                &audit(&a.id, "l", NOW),
            )
            .await
            .unwrap();
    }
    let tables =
        ["providers", "policies", "grants", "credentials", "connect_states", "revocation_outbox", "webhook_events"];
    let mut before = Vec::new();
    for t in tables {
        before.push(count(&store, t).await);
    }
    assert_eq!(before, vec![2, 2, 4, 2, 2, 4, 2], "{b}");

    assert!(store.delete_app(&app.id).await.unwrap(), "{b}");
    for (t, n) in tables.iter().zip(before) {
        assert_eq!(count(&store, t).await, n / 2, "{b}: {t}");
    }
    assert!(store.get_provider(&kept.id, &name("google")).await.unwrap().is_some(), "{b}");
}

store_test!(superseded_tokens_are_queued_for_revocation);
async fn superseded_tokens_are_queued_for_revocation(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    seed_provider(&store, &app.id, "google", true).await;
    seed_provider(&store, &app.id, "github", false).await;
    let ann = seed_user(&store, &app.id, "ann").await;
    let g = seed_grant(&store, &ann, "google", true, NOW).await;
    let outbox = |store: Store| async move {
        let mut items = store.due_revocations(NOW.plus_seconds(3600), 100).await.unwrap();
        items.sort_by(|a, b| a.id.cmp(&b.id));
        items.into_iter().map(|i| (i.id, i.token_kind, i.token)).collect::<Vec<_>>()
    };

    // A refresh that keeps the refresh token (the same sealed box) queues nothing.
    let mut kept = credential(&g.id, true, 2);
    kept.refresh_token = credential(&g.id, true, 1).refresh_token;
    assert!(store.replace_credential(&kept, 1, &grant_audit(&g, "token.refresh")).await.unwrap(), "{b}");
    assert_eq!(outbox(store.clone()).await, vec![], "{b}");

    // A rotated refresh token: the old one is queued; a lost compare-and-set queues nothing.
    let rotated = credential(&g.id, true, 3);
    assert!(!store.replace_credential(&credential(&g.id, true, 9), 1, &grant_audit(&g, "x")).await.unwrap());
    assert!(store.replace_credential(&rotated, 2, &grant_audit(&g, "token.refresh")).await.unwrap(), "{b}");
    let old_refresh = kept.refresh_token.clone().unwrap();
    assert_eq!(
        outbox(store.clone()).await,
        vec![(format!("{}:superseded-refresh:v2", g.id), TokenKind::Refresh, old_refresh.clone())],
        "{b}"
    );

    // A reconnect replaces the credential: both replaced tokens are queued.
    let reconnected = credential(&g.id, true, 1);
    let reconnected = Credential { access_token: SealedBox(b"reconnect-access".to_vec()), ..reconnected };
    store.save_grant(&g, &reconnected, false, &grant_audit(&g, "grant.connect")).await.unwrap();
    assert_eq!(
        outbox(store.clone()).await,
        vec![
            (format!("{}:superseded-access:v3", g.id), TokenKind::Access, rotated.access_token.clone()),
            (format!("{}:superseded-refresh:v2", g.id), TokenKind::Refresh, old_refresh),
            (format!("{}:superseded-refresh:v3", g.id), TokenKind::Refresh, rotated.refresh_token.clone().unwrap()),
        ],
        "{b}"
    );
    assert_eq!(store.load_credential(&g.id).await.unwrap().unwrap().version, 4, "{b}: past the replaced one");

    // A provider without a revocation URL: nothing to queue.
    let h = seed_grant(&store, &ann, "github", true, NOW).await;
    assert!(store.replace_credential(&credential(&h.id, true, 2), 1, &grant_audit(&h, "token.refresh")).await.unwrap());
    store.save_grant(&h, &credential(&h.id, true, 1), false, &grant_audit(&h, "grant.connect")).await.unwrap();
    assert_eq!(outbox(store.clone()).await.len(), 3, "{b}");
}

store_test!(audit_rows_are_pruned_before_a_cutoff_in_batches);
async fn audit_rows_are_pruned_before_a_cutoff_in_batches(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    let other = seed_app(&store).await;
    // 25 old rows of two apps, then 5 recent ones (plus the two app.create rows at NOW).
    for i in 0..25 {
        let owner = if i % 2 == 0 { &app.id } else { &other.id };
        AuditLog::append_audit(&store, &audit(owner, "token.handout", NOW.plus_seconds(-86_400 * 10 + i)))
            .await
            .unwrap();
    }
    for i in 0..5 {
        AuditLog::append_audit(&store, &audit(&app.id, "token.handout", NOW.plus_seconds(i))).await.unwrap();
    }
    let before = count(&store, "audit_log").await;
    assert_eq!(before, 32, "{b}");
    let cutoff = NOW.plus_seconds(-86_400);
    // The two app.create rows come first and are recent: the first window of 10 holds 8 old
    // ones, and so on while rows are deleted.
    let mut batches = Vec::new();
    loop {
        let deleted = store.prune_audit(cutoff, 10).await.unwrap();
        if deleted == 0 {
            break;
        }
        batches.push(deleted);
    }
    assert_eq!(batches.iter().sum::<u64>(), 25, "{b}: {batches:?}");
    assert!(batches.iter().all(|n| *n <= 10), "{b}: {batches:?}");
    assert_eq!(count(&store, "audit_log").await, 7, "{b}");
    assert!(audit_actions(&store, &other.id).await.iter().all(|a| a == "app.create"), "{b}");
    assert_eq!(store.prune_audit(NOW.plus_seconds(-86_400 * 365), 10).await.unwrap(), 0, "{b}");
}

store_test!(handout_rows_list_prune_and_leave_with_their_app_among_the_others);
/// Hand-out rows (on SQLite in a file of their own) are listed with the other audit rows,
/// newest first, across pages, filtered alike; retention prunes them; deleting the app takes
/// them along.
async fn handout_rows_list_prune_and_leave_with_their_app_among_the_others(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    let other = seed_app(&store).await;
    seed_provider(&store, &app.id, "github", false).await;
    let ann = seed_user(&store, &app.id, "ann").await;
    let g = seed_grant(&store, &ann, "github", false, NOW).await;
    let at = |s: i64| NOW.plus_seconds(s);
    // Both kinds, one second apart: (second, is a hand-out). Listings are newest first, in
    // reverse order of writing, so the seconds follow the order of writing here.
    let write = |second: i64, handout: bool| {
        let (store, grant) = (store.clone(), g.id.clone());
        let entry =
            AuditEntry { at: at(second), ..grant_audit(&g, if handout { "token.handout" } else { "x.change" }) };
        async move {
            if handout {
                store.record_handout(&grant, None, &entry).await.unwrap();
            } else {
                AuditLog::append_audit(&store, &entry).await.unwrap();
            }
            entry.id
        }
    };
    let mut written = Vec::new();
    for (second, handout) in [(10, true), (11, false), (12, true), (13, true), (14, false)] {
        written.push(write(second, handout).await);
    }
    store
        .record_handout(
            &g.id,
            None,
            &AuditEntry { app_id: other.id.clone(), ..audit(&other.id, "token.handout", at(12)) },
        )
        .await
        .unwrap();

    // Pages of two, newest first: the rows seeded before (at NOW) come last.
    let list = |filter: AuditFilter| {
        let store = store.clone();
        let app = app.id.clone();
        async move {
            let (mut ids, mut cursor) = (Vec::new(), None);
            loop {
                let page = store.list_audit(&app, &filter, &PageRequest::new(Some(2), cursor).unwrap()).await.unwrap();
                assert!(page.items.len() <= 2);
                ids.extend(page.items.into_iter().map(|e| (e.at.0 - NOW.0, e.id)));
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => return ids,
                }
            }
        }
    };
    let all = list(AuditFilter::default()).await;
    let seconds: Vec<i64> = all.iter().map(|(s, _)| *s).collect();
    assert_eq!(seconds, vec![14, 13, 12, 11, 10, 0, 0, 0], "{b}");
    let mine: Vec<&String> = all.iter().filter(|(s, _)| *s != 0).map(|(_, id)| id).collect();
    assert_eq!(mine, written.iter().rev().collect::<Vec<_>>(), "{b}");
    let handouts = list(AuditFilter { action: Some("token.handout".into()), user_id: None }).await;
    assert_eq!(handouts.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![13, 12, 10], "{b}");

    // Retention: two old rows go, one of each kind.
    write(-90_000, true).await;
    write(-89_999, false).await;
    assert_eq!(count(&store, "audit_log").await, 12, "{b}");
    assert_eq!(store.prune_audit(at(-86_400), 100).await.unwrap(), 2, "{b}");
    assert_eq!(list(AuditFilter::default()).await.len(), 8, "{b}");

    // Deleting the app takes its rows of both kinds, and only its own.
    assert!(store.delete_app(&app.id).await.unwrap(), "{b}");
    assert_eq!(count(&store, "audit_log").await, 2, "{b}: the other app's app.create and hand-out");
    assert_eq!(audit_actions(&store, &other.id).await, vec!["app.create", "token.handout"], "{b}");
}
