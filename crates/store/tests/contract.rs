//! Contract tests of the identity storage ports for `Store`: every case runs on SQLite and, when
//! `CUSTODY_TEST_POSTGRES_URL` is set, on PostgreSQL, each in a database of its own, so no test
//! depends on another or on the order they run in.

// Helpers outside `#[test]` functions are test code too (clippy.toml only exempts the latter).
#![allow(clippy::unwrap_used)]

#[macro_use]
mod support;

use custody_identity::app::App;
use custody_identity::audit::{AuditFilter, AuditOutcome};
use custody_identity::claims::{ClaimMappings, ClaimPath, ExtractedIdentity};
use custody_identity::idp::{IdpConfig, IdpEndpoints, IdpKind};
use custody_identity::ids::{AppId, IdpId, UserId};
use custody_identity::issuer::Issuer;
use custody_identity::page::PageRequest;
use custody_identity::ports::{CreateIdpError, LockGuard, ResolveUserError, StoreError, UpdateIdpError};
use custody_identity::time::UnixTime;
use custody_identity::user::{User, UserStatus};
use custody_store::prelude::*;
use custody_store::testing::{self, TestDatabase};
use custody_store::{Backend, ConnectError, Store, StoreOptions};
use std::collections::BTreeSet;
use std::path::Path;

use support::{app_at, audit, key_for, seed_app, uuid, NOW};

fn idp_for(app: &AppId) -> IdpConfig {
    IdpConfig {
        id: IdpId::parse(&uuid()).unwrap(),
        app_id: app.clone(),
        kind: IdpKind::from_static("custom_oidc"),
        issuer: Issuer::new("https://idp.example.com"),
        jwks_uri: "https://idp.example.com/jwks".to_owned(),
        audience: Some("api".to_owned()),
        claims: ClaimMappings {
            user_id: ClaimPath::subject(),
            group: Some(ClaimPath::parse("groups").unwrap()),
            role: Some(ClaimPath::parse("/app/roles").unwrap()),
        },
        claims_locked_at: None,
        version: 1,
        created_at: NOW,
        endpoints: IdpEndpoints {
            authorization_endpoint: Some("https://idp.example.com/authorize".to_owned()),
            token_endpoint: None,
            end_session_endpoint: Some("https://idp.example.com/logout".to_owned()),
        },
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn identity(subject: &str, groups: &[&str], roles: &[&str]) -> ExtractedIdentity {
    ExtractedIdentity {
        subject: subject.to_owned(),
        email: Some(format!("{subject}@example.com")),
        name: Some("Ann".to_owned()),
        groups: set(groups),
        roles: set(roles),
    }
}

fn new_user_id() -> UserId {
    UserId::parse(&uuid()).unwrap()
}

/// An app with one key and an IdP configuration, unlocked at version 1.
async fn seed_app_with_idp(store: &Store) -> (App, IdpConfig) {
    let app = seed_app(store).await;
    let idp = idp_for(&app.id);
    store.create_idp(&idp, &audit(&app.id, "idp.create", NOW)).await.unwrap();
    (app, idp)
}

/// Resolves as the identity service does: with the current configuration, again on `ConfigChanged`.
async fn resolve(store: &Store, app: &AppId, who: &ExtractedIdentity, iat: Option<UnixTime>, now: UnixTime) -> User {
    for _ in 0..20 {
        let config = store.get_idp(app).await.unwrap().expect("idp configured");
        let lock = LockGuard { idp_version: config.version, already_locked: config.claims_locked() };
        match store.resolve_user(app, lock, who, iat, &new_user_id(), now).await {
            Err(ResolveUserError::ConfigChanged) => continue,
            other => return other.unwrap(),
        }
    }
    panic!("configuration kept changing");
}

#[test]
fn backends_follow_the_environment() {
    let expected = if std::env::var(testing::POSTGRES_URL_ENV).is_ok_and(|v| !v.trim().is_empty()) {
        vec![Backend::Sqlite, Backend::Postgres]
    } else {
        vec![Backend::Sqlite]
    };
    assert_eq!(testing::backends(), expected);
}

store_test!(a_migrated_store_answers);
async fn a_migrated_store_answers(_db: TestDatabase, store: Store) {
    store.ping().await.unwrap();
}

store_test!(apps_crud_and_cascade_delete);
async fn apps_crud_and_cascade_delete(db: TestDatabase, store: Store) {
    let b = db.backend();
    let (app, _) = seed_app_with_idp(&store).await;
    let other = seed_app(&store).await;
    assert_eq!(store.get_app(&app.id).await.unwrap(), Some(app.clone()), "{b}");

    let user = resolve(&store, &app.id, &identity("alice", &["g"], &[]), Some(NOW), NOW).await;
    testing::remove_user_group(&store, &user.id, "g", NOW).await.unwrap();
    store.append_audit(&audit(&app.id, "token.handout", NOW)).await.unwrap();
    store.create_api_key(&key_for(&app.id, NOW), &audit(&app.id, "api_key.create", NOW)).await.unwrap();

    let listed = store.list_apps(&PageRequest::first()).await.unwrap();
    assert_eq!(listed.items.len(), 2, "{b}");
    assert_eq!(listed.next_cursor, None, "{b}");

    assert!(store.delete_app(&app.id).await.unwrap(), "{b}");
    assert_eq!(store.get_app(&app.id).await.unwrap(), None, "{b}");
    assert_eq!(store.get_idp(&app.id).await.unwrap(), None, "{b}");
    assert_eq!(store.get_user(&app.id, &user.id).await.unwrap(), None, "{b}");
    assert!(store.list_api_keys(&app.id, &PageRequest::first()).await.unwrap().items.is_empty(), "{b}");
    assert!(
        store.list_audit(&app.id, &AuditFilter::default(), &PageRequest::first()).await.unwrap().items.is_empty(),
        "{b}"
    );
    assert_eq!(testing::count_rows(&store, "users").await.unwrap(), 0, "{b}");
    assert_eq!(testing::count_rows(&store, "membership_removals").await.unwrap(), 0, "{b}");
    assert_eq!(testing::count_rows(&store, "idp_configs").await.unwrap(), 0, "{b}");

    // The other app keeps everything.
    assert_eq!(testing::count_rows(&store, "apps").await.unwrap(), 1, "{b}");
    assert_eq!(testing::count_rows(&store, "api_keys").await.unwrap(), 1, "{b}");
    assert_eq!(testing::count_rows(&store, "audit_log").await.unwrap(), 1, "{b}");
    assert_eq!(store.get_app(&other.id).await.unwrap(), Some(other), "{b}");

    assert!(!store.delete_app(&app.id).await.unwrap(), "{b}");
}

store_test!(audit_rows_need_an_app_row_only_on_sqlite);
async fn audit_rows_need_an_app_row_only_on_sqlite(db: TestDatabase, store: Store) {
    let b = db.backend();
    // On PostgreSQL `audit_log` has no foreign key to `apps` (2026-12-07 migration): a row
    // written by a request that raced its app's deletion is kept, unlisted, until retention
    // prunes it. SQLite's main file keeps the key and refuses it.
    let ghost = AppId::parse(&uuid()).unwrap();
    let appended = store.append_audit(&audit(&ghost, "user.suspend", NOW)).await;
    let rows = testing::count_rows(&store, "audit_log").await.unwrap();
    match b {
        Backend::Postgres => {
            appended.unwrap();
            assert_eq!(rows, 1, "{b}");
        }
        Backend::Sqlite => {
            assert!(appended.is_err(), "{b}");
            assert_eq!(rows, 0, "{b}");
        }
    }
}

store_test!(api_keys_create_find_touch_delete);
async fn api_keys_create_find_touch_delete(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    let key = key_for(&app.id, NOW.plus_seconds(1));
    assert!(store.create_api_key(&key, &audit(&app.id, "api_key.create", NOW)).await.unwrap(), "{b}");
    assert_eq!(store.find_api_key(&key.prefix).await.unwrap(), Some(key.clone()), "{b}");
    assert_eq!(store.find_api_key("0000000000000000").await.unwrap(), None, "{b}");
    // With the app's IdP settings in the same read: none yet, then the stored ones.
    assert_eq!(store.find_api_key_with_idp(&key.prefix).await.unwrap(), Some((key.clone(), None)), "{b}");
    assert_eq!(store.find_api_key_with_idp("0000000000000000").await.unwrap(), None, "{b}");
    let idp = idp_for(&app.id);
    store.create_idp(&idp, &audit(&app.id, "idp.create", NOW)).await.unwrap();
    assert_eq!(store.find_api_key_with_idp(&key.prefix).await.unwrap(), Some((key.clone(), Some(idp))), "{b}");

    // An app that does not exist gets no key and no audit row.
    let ghost = AppId::parse(&uuid()).unwrap();
    let orphan = key_for(&ghost, NOW);
    assert!(!store.create_api_key(&orphan, &audit(&ghost, "api_key.create", NOW)).await.unwrap(), "{b}");
    assert_eq!(store.find_api_key(&orphan.prefix).await.unwrap(), None, "{b}");

    // A prefix is unique.
    let mut clash = key_for(&app.id, NOW);
    clash.prefix = key.prefix.clone();
    let err = store.create_api_key(&clash, &audit(&app.id, "api_key.create", NOW)).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{b}: {err:?}");

    store.touch_api_key(&key.id, NOW.plus_seconds(30)).await.unwrap();
    store.touch_api_key(&key.id, NOW.plus_seconds(20)).await.unwrap();
    let touched = store.find_api_key(&key.prefix).await.unwrap().unwrap();
    assert_eq!(touched.last_used_at, Some(NOW.plus_seconds(30)), "{b}");

    let keys = store.list_api_keys(&app.id, &PageRequest::first()).await.unwrap();
    assert_eq!(keys.items.len(), 2, "{b}");
    assert_eq!(keys.items[1].id, key.id, "{b}: oldest first");

    let other = seed_app(&store).await;
    assert!(!store.delete_api_key(&other.id, &key.id, &audit(&other.id, "api_key.delete", NOW)).await.unwrap(), "{b}");
    assert!(store.delete_api_key(&app.id, &key.id, &audit(&app.id, "api_key.delete", NOW)).await.unwrap(), "{b}");
    assert_eq!(store.find_api_key(&key.prefix).await.unwrap(), None, "{b}");
    assert!(!store.delete_api_key(&app.id, &key.id, &audit(&app.id, "api_key.delete", NOW)).await.unwrap(), "{b}");
    let deletions = AuditFilter { action: Some("api_key.delete".into()), user_id: None };
    assert_eq!(store.list_audit(&app.id, &deletions, &PageRequest::first()).await.unwrap().items.len(), 1, "{b}");
    assert!(store.list_audit(&other.id, &deletions, &PageRequest::first()).await.unwrap().items.is_empty(), "{b}");
}

store_test!(idp_create_update_delete);
async fn idp_create_update_delete(db: TestDatabase, store: Store) {
    let b = db.backend();
    let (app, idp) = seed_app_with_idp(&store).await;
    assert_eq!(store.get_idp(&app.id).await.unwrap(), Some(idp.clone()), "{b}");

    let again = idp_for(&app.id);
    assert_eq!(
        store.create_idp(&again, &audit(&app.id, "idp.create", NOW)).await,
        Err(CreateIdpError::AlreadyConfigured),
        "{b}"
    );
    let ghost = AppId::parse(&uuid()).unwrap();
    assert_eq!(
        store.create_idp(&idp_for(&ghost), &audit(&ghost, "idp.create", NOW)).await,
        Err(CreateIdpError::AppNotFound),
        "{b}"
    );

    // Lock it through a first sign-in: version 2, locked at NOW.
    resolve(&store, &app.id, &identity("alice", &[], &[]), Some(NOW), NOW).await;
    let locked = store.get_idp(&app.id).await.unwrap().unwrap();
    assert_eq!((locked.version, locked.claims_locked_at), (2, Some(NOW)), "{b}");

    let mut next = locked.clone();
    next.audience = None;
    next.version = 3;
    next.claims_locked_at = None; // ignored: the lock time never changes here
    assert_eq!(
        store.update_idp(&next, 1, &audit(&app.id, "idp.update", NOW)).await,
        Err(UpdateIdpError::VersionConflict),
        "{b}"
    );
    store.update_idp(&next, 2, &audit(&app.id, "idp.update", NOW)).await.unwrap();
    let stored = store.get_idp(&app.id).await.unwrap().unwrap();
    assert_eq!(stored, IdpConfig { claims_locked_at: Some(NOW), ..next.clone() }, "{b}");

    // A re-created configuration is not overwritten with the old one's data.
    let mut stale = next.clone();
    stale.id = IdpId::parse(&uuid()).unwrap();
    stale.version = 4;
    assert_eq!(
        store.update_idp(&stale, 3, &audit(&app.id, "idp.update", NOW)).await,
        Err(UpdateIdpError::VersionConflict),
        "{b}"
    );

    let bare = seed_app(&store).await;
    let mut unconfigured = idp_for(&bare.id);
    unconfigured.version = 2;
    assert_eq!(
        store.update_idp(&unconfigured, 1, &audit(&bare.id, "idp.update", NOW)).await,
        Err(UpdateIdpError::NotConfigured),
        "{b}"
    );

    assert!(store.delete_idp(&app.id, &audit(&app.id, "idp.delete", NOW)).await.unwrap(), "{b}");
    assert_eq!(store.get_idp(&app.id).await.unwrap(), None, "{b}");
    assert!(!store.delete_idp(&app.id, &audit(&app.id, "idp.delete", NOW)).await.unwrap(), "{b}");
    assert_eq!(store.list_users(&app.id, None, &PageRequest::first()).await.unwrap().items.len(), 1, "{b}: users stay");

    let actions: Vec<String> = store
        .list_audit(&app.id, &AuditFilter::default(), &PageRequest::first())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.action)
        .collect();
    let mut sorted = actions.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec!["app.create", "idp.create", "idp.delete", "idp.update"],
        "{b}: one row per change, none for refusals"
    );
}

store_test!(resolve_user_creates_and_locks);
async fn resolve_user_creates_and_locks(db: TestDatabase, store: Store) {
    let b = db.backend();
    let (app, idp) = seed_app_with_idp(&store).await;
    let alice = identity("alice", &["eng"], &["admin"]);
    let id = new_user_id();

    let unlocked = LockGuard { idp_version: idp.version, already_locked: false };
    let user = store.resolve_user(&app.id, unlocked, &alice, Some(NOW), &id, NOW).await.unwrap();
    assert_eq!(user.id, id, "{b}");
    assert_eq!(user.status, UserStatus::Active, "{b}");
    assert_eq!((user.groups.clone(), user.roles.clone()), (set(&["eng"]), set(&["admin"])), "{b}");
    assert_eq!((user.created_at, user.last_seen_at), (NOW, Some(NOW)), "{b}");
    assert_eq!(user.email.as_deref(), Some("alice@example.com"), "{b}");
    assert_eq!(store.get_user(&app.id, &id).await.unwrap(), Some(user.clone()), "{b}");

    let config = store.get_idp(&app.id).await.unwrap().unwrap();
    assert_eq!((config.version, config.claims_locked_at), (idp.version + 1, Some(NOW)), "{b}");

    // Stale and unlocked: the configuration changed underneath.
    let err = store.resolve_user(&app.id, unlocked, &alice, Some(NOW), &new_user_id(), NOW).await;
    assert_eq!(err, Err(ResolveUserError::ConfigChanged), "{b}");
    // The caller believed it locked, but the stored configuration is not locked (or older).
    let other = seed_app_with_idp(&store).await.0;
    let wrong = LockGuard { idp_version: 1, already_locked: true };
    assert_eq!(
        store.resolve_user(&other.id, wrong, &alice, Some(NOW), &new_user_id(), NOW).await,
        Err(ResolveUserError::ConfigChanged),
        "{b}"
    );

    // Locked: the same user again, without a new lock.
    let locked = LockGuard { idp_version: config.version, already_locked: true };
    let again =
        store.resolve_user(&app.id, locked, &alice, Some(NOW), &new_user_id(), NOW.plus_seconds(5)).await.unwrap();
    assert_eq!(again, user, "{b}: unchanged and seen within the minute: nothing written");
    assert_eq!(store.get_idp(&app.id).await.unwrap().unwrap().version, config.version, "{b}");

    // An audience edit (version bump) does not invalidate tokens verified under the lock.
    let mut edited = config.clone();
    edited.audience = Some("other".into());
    edited.version += 1;
    store.update_idp(&edited, config.version, &audit(&app.id, "idp.update", NOW)).await.unwrap();
    let later = NOW.plus_seconds(120);
    let seen = store.resolve_user(&app.id, locked, &alice, Some(NOW), &new_user_id(), later).await.unwrap();
    assert_eq!(seen.last_seen_at, Some(later), "{b}: a stale last_seen_at is refreshed");

    // Gone: the configuration was deleted.
    store.delete_idp(&app.id, &audit(&app.id, "idp.delete", NOW)).await.unwrap();
    assert_eq!(
        store.resolve_user(&app.id, locked, &alice, Some(NOW), &new_user_id(), later).await,
        Err(ResolveUserError::ConfigChanged),
        "{b}"
    );
    assert_eq!(
        store
            .resolve_user(
                &app.id,
                LockGuard { idp_version: 1, already_locked: false },
                &alice,
                None,
                &new_user_id(),
                later
            )
            .await,
        Err(ResolveUserError::ConfigChanged),
        "{b}"
    );
}

store_test!(concurrent_first_resolution_yields_one_user);
async fn concurrent_first_resolution_yields_one_user(db: TestDatabase, store: Store) {
    let b = db.backend();
    let (app, idp) = seed_app_with_idp(&store).await;

    // Ten first requests for a new subject while the mappings are still unlocked: the lock is
    // taken once; the others see ConfigChanged, reload and resolve the same user.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (store, app) = (store.clone(), app.id.clone());
        tasks.push(tokio::spawn(
            async move { resolve(&store, &app, &identity("bob", &["g"], &[]), Some(NOW), NOW).await },
        ));
    }
    let mut ids = BTreeSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap().id);
    }
    assert_eq!(ids.len(), 1, "{b}");
    assert_eq!(store.get_idp(&app.id).await.unwrap().unwrap().version, idp.version + 1, "{b}: locked exactly once");

    // Ten first requests for another new subject under the lock, racing on the insert itself.
    let locked = LockGuard { idp_version: idp.version + 1, already_locked: true };
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (store, app) = (store.clone(), app.id.clone());
        tasks.push(tokio::spawn(async move {
            store
                .resolve_user(&app, locked, &identity("carol", &[], &[]), Some(NOW), &new_user_id(), NOW)
                .await
                .unwrap()
        }));
    }
    let mut ids = BTreeSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap().id);
    }
    assert_eq!(ids.len(), 1, "{b}");
    assert_eq!(store.list_users(&app.id, None, &PageRequest::first()).await.unwrap().items.len(), 2, "{b}");
}

store_test!(groups_roles_and_profile_follow_the_token);
async fn groups_roles_and_profile_follow_the_token(db: TestDatabase, store: Store) {
    let b = db.backend();
    let (app, _) = seed_app_with_idp(&store).await;
    let first = resolve(&store, &app.id, &identity("dan", &["a", "b"], &["r1"]), Some(NOW), NOW).await;

    let mut next = identity("dan", &["b", "c"], &[]);
    next.email = Some("dan@new.example.com".into());
    next.name = None;
    let t = NOW.plus_seconds(10);
    let user = resolve(&store, &app.id, &next, Some(t), t).await;
    assert_eq!(user.id, first.id, "{b}");
    assert_eq!(user.groups, set(&["b", "c"]), "{b}");
    assert!(user.roles.is_empty(), "{b}");
    assert_eq!(user.email.as_deref(), Some("dan@new.example.com"), "{b}");
    assert_eq!(user.name.as_deref(), Some("Ann"), "{b}: kept when the token does not carry it");
    assert_eq!(user.last_seen_at, Some(t), "{b}");
    assert_eq!(store.get_user(&app.id, &user.id).await.unwrap(), Some(user.clone()), "{b}");

    // Nothing new within the minute: no write, last_seen_at stays.
    let t2 = t.plus_seconds(30);
    assert_eq!(resolve(&store, &app.id, &next, Some(t2), t2).await.last_seen_at, Some(t), "{b}");
    let t3 = t.plus_seconds(61);
    assert_eq!(resolve(&store, &app.id, &next, Some(t3), t3).await.last_seen_at, Some(t3), "{b}");
}

store_test!(a_known_unchanged_user_back_after_a_minute_is_one_read_and_one_update);
async fn a_known_unchanged_user_back_after_a_minute_is_one_read_and_one_update(db: TestDatabase, store: Store) {
    let b = db.backend();
    let (app, _) = seed_app_with_idp(&store).await;
    let who = identity("fay", &["a"], &["r"]);
    let first = resolve(&store, &app.id, &who, Some(NOW), NOW).await;
    let config = store.get_idp(&app.id).await.unwrap().unwrap();
    let lock = LockGuard { idp_version: config.version, already_locked: true };
    let later = NOW.plus_seconds(61);
    let before = store.database_calls();
    let seen = store.resolve_user(&app.id, lock, &who, Some(NOW), &new_user_id(), later).await.unwrap();
    // The read, then the sighting's UPDATE (group-committed with the hand-out log): no
    // transaction of its own.
    assert_eq!(store.database_calls() - before, 2, "{b}");
    assert_eq!(seen, User { last_seen_at: Some(later), ..first.clone() }, "{b}");
    assert_eq!(store.get_user(&app.id, &first.id).await.unwrap(), Some(seen.clone()), "{b}");
    // A token that says something new still takes the write transaction.
    let changed = identity("fay", &["a", "b"], &["r"]);
    let much_later = later.plus_seconds(61);
    let written = store.resolve_user(&app.id, lock, &changed, Some(later), &new_user_id(), much_later).await.unwrap();
    assert_eq!((written.groups, written.last_seen_at), (set(&["a", "b"]), Some(much_later)), "{b}");
}

store_test!(deprovisioned_user_is_returned_unchanged_and_never_recreated);
async fn deprovisioned_user_is_returned_unchanged_and_never_recreated(db: TestDatabase, store: Store) {
    let b = db.backend();
    let (app, _) = seed_app_with_idp(&store).await;
    let user = resolve(&store, &app.id, &identity("erin", &["a"], &["r"]), Some(NOW), NOW).await;
    assert!(testing::set_user_status(&store, &user.id, UserStatus::Deprovisioned, NOW).await.unwrap(), "{b}");
    let gone = store.get_user(&app.id, &user.id).await.unwrap().unwrap();

    let mut changed = identity("erin", &["x"], &[]);
    changed.email = Some("erin@elsewhere.example.com".into());
    let later = NOW.plus_seconds(3600);
    // The read-only path (locked configuration).
    let seen = resolve(&store, &app.id, &changed, Some(later), later).await;
    assert_eq!(seen, gone, "{b}");
    // The write path (a caller that still believed the mappings unlocked).
    let version = store.get_idp(&app.id).await.unwrap().unwrap().version;
    let unlocked = LockGuard { idp_version: version, already_locked: false };
    let seen = store.resolve_user(&app.id, unlocked, &changed, Some(later), &new_user_id(), later).await.unwrap();
    assert_eq!(seen, gone, "{b}");

    assert_eq!(store.get_user(&app.id, &user.id).await.unwrap(), Some(gone.clone()), "{b}");
    let all = store.list_users(&app.id, None, &PageRequest::first()).await.unwrap();
    assert_eq!(all.items, vec![gone], "{b}: not recreated");
    let active = store.list_users(&app.id, Some(UserStatus::Active), &PageRequest::first()).await.unwrap();
    assert!(active.items.is_empty(), "{b}");
}

store_test!(removed_group_returns_only_with_a_newer_token);
async fn removed_group_returns_only_with_a_newer_token(db: TestDatabase, store: Store) {
    let b = db.backend();
    let (app, _) = seed_app_with_idp(&store).await;
    let who = identity("fay", &["g", "h"], &[]);
    let user = resolve(&store, &app.id, &who, Some(NOW), NOW).await;
    let removed_at = NOW.plus_seconds(100);
    testing::remove_user_group(&store, &user.id, "g", removed_at).await.unwrap();
    assert_eq!(store.get_user(&app.id, &user.id).await.unwrap().unwrap().groups, set(&["h"]), "{b}");

    let now = NOW.plus_seconds(200);
    for iat in [Some(NOW.plus_seconds(99)), Some(removed_at), None] {
        let seen = resolve(&store, &app.id, &who, iat, now).await;
        assert_eq!(seen.groups, set(&["h"]), "{b}: token issued at {iat:?}");
        assert_eq!(
            testing::membership_removals(&store, &user.id).await.unwrap(),
            vec![("g".to_string(), removed_at)],
            "{b}"
        );
    }

    let seen = resolve(&store, &app.id, &who, Some(removed_at.plus_seconds(1)), now).await;
    assert_eq!(seen.groups, set(&["g", "h"]), "{b}");
    assert!(testing::membership_removals(&store, &user.id).await.unwrap().is_empty(), "{b}: the removal is superseded");
    assert_eq!(store.get_user(&app.id, &user.id).await.unwrap().unwrap().groups, set(&["g", "h"]), "{b}");
}

fn migration_dirs(backend: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations").join(backend);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn migration_folders_stay_in_step() {
    let sqlite = migration_dirs("sqlite");
    let postgres = migration_dirs("postgres");
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, postgres, "migrations/sqlite and migrations/postgres must list the same versions");
    for backend in ["sqlite", "postgres"] {
        for name in &sqlite {
            for file in ["up.sql", "down.sql"] {
                let path =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations").join(backend).join(name).join(file);
                assert!(path.is_file(), "{} is missing", path.display());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_revert_and_report() {
    let expected = migration_dirs("sqlite");
    for db in TestDatabase::all().await.unwrap() {
        let b = db.backend();
        let store = Store::connect_without_migrating(db.url(), StoreOptions::default()).await.unwrap();
        let status = store.migration_status().await.unwrap();
        assert_eq!(status.iter().map(|s| s.name.clone()).collect::<Vec<_>>(), expected, "{b}");
        assert!(status.iter().all(|s| !s.applied), "{b}");
        assert_eq!(store.migrate_down().await.unwrap(), None, "{b}: nothing to revert");

        assert_eq!(store.migrate_up().await.unwrap().len(), expected.len(), "{b}");
        assert!(store.migration_status().await.unwrap().iter().all(|s| s.applied), "{b}");
        assert!(store.migrate_up().await.unwrap().is_empty(), "{b}: idempotent");
        store.list_apps(&PageRequest::first()).await.unwrap();

        // Reverting goes back one version at a time, newest first; older tables stay until
        // their own version is reverted.
        let mut applied: Vec<String> = store.migration_status().await.unwrap().into_iter().map(|s| s.version).collect();
        while let Some(last) = applied.pop() {
            assert_eq!(store.migrate_down().await.unwrap(), Some(last.clone()), "{b}");
            let status = store.migration_status().await.unwrap();
            assert!(status.iter().all(|s| s.applied == applied.contains(&s.version)), "{b}: after reverting {last}");
            if !applied.is_empty() {
                store.list_apps(&PageRequest::first()).await.unwrap();
            }
            if applied.len() == 1 {
                assert!(testing::count_rows(&store, "grants").await.is_err(), "{b}: vault tables are gone");
            }
        }
        assert!(store.list_apps(&PageRequest::first()).await.is_err(), "{b}: tables are gone");
        assert_eq!(store.migrate_down().await.unwrap(), None, "{b}: nothing left to revert");

        // Connecting migrates again.
        let store = db.connect().await.unwrap();
        assert!(store.migration_status().await.unwrap().iter().all(|s| s.applied), "{b}");
        seed_app(&store).await;
    }
}

store_test!(pagination_is_keyset_and_cursors_are_checked);
async fn pagination_is_keyset_and_cursors_are_checked(db: TestDatabase, store: Store) {
    let b = db.backend();
    // Five apps, two sharing a timestamp so the id breaks the tie.
    let mut created = Vec::new();
    for at in [5, 1, 3, 3, 9] {
        let app = app_at(UnixTime(at));
        store.create_app(&app, &key_for(&app.id, NOW), &audit(&app.id, "app.create", NOW)).await.unwrap();
        created.push(app);
    }
    created.sort_by_key(|a| (a.created_at, a.id.clone()));

    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = store.list_apps(&PageRequest::new(Some(2), cursor).unwrap()).await.unwrap();
        assert!(page.items.len() <= 2, "{b}");
        pages += 1;
        seen.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 3, "{b}");
    assert_eq!(seen, created, "{b}");

    // An exact fit has no next page.
    let all = store.list_apps(&PageRequest::new(Some(5), None).unwrap()).await.unwrap();
    assert_eq!((all.items.len(), all.next_cursor), (5, None), "{b}");
    let first = store.list_apps(&PageRequest::new(Some(4), None).unwrap()).await.unwrap();
    assert!(first.next_cursor.is_some(), "{b}");

    for bad in ["not a cursor", "e30", ""] {
        let page = PageRequest::new(Some(2), Some(bad.to_owned())).unwrap();
        assert_eq!(store.list_apps(&page).await, Err(StoreError::InvalidCursor), "{b}: {bad:?}");
        assert_eq!(store.list_users(&created[0].id, None, &page).await, Err(StoreError::InvalidCursor), "{b}");
        assert_eq!(store.list_api_keys(&created[0].id, &page).await, Err(StoreError::InvalidCursor), "{b}");
        assert_eq!(
            store.list_audit(&created[0].id, &AuditFilter::default(), &page).await,
            Err(StoreError::InvalidCursor),
            "{b}"
        );
    }

    // Users page the same way.
    let app = &created[0];
    store.create_idp(&idp_for(&app.id), &audit(&app.id, "idp.create", NOW)).await.unwrap();
    for (i, subject) in ["u1", "u2", "u3"].iter().enumerate() {
        let t = NOW.plus_seconds(i as i64);
        resolve(&store, &app.id, &identity(subject, &[], &[]), Some(t), t).await;
    }
    let p1 = store.list_users(&app.id, None, &PageRequest::new(Some(2), None).unwrap()).await.unwrap();
    let p2 =
        store.list_users(&app.id, None, &PageRequest::new(Some(2), p1.next_cursor.clone()).unwrap()).await.unwrap();
    let subjects: Vec<String> = p1.items.iter().chain(&p2.items).map(|u| u.subject.clone()).collect();
    assert_eq!(subjects, vec!["u1", "u2", "u3"], "{b}");
    assert_eq!(p2.next_cursor, None, "{b}");
}

store_test!(audit_newest_first_with_filters);
async fn audit_newest_first_with_filters(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await; // one `app.create` row at NOW
    let user = UserId::parse(&uuid()).unwrap();
    for i in 1..=6 {
        let mut entry = audit(&app.id, if i % 2 == 0 { "token.handout" } else { "grant.revoke" }, NOW.plus_seconds(i));
        if i % 3 == 0 {
            entry.user_id = Some(user.clone());
            entry.provider = Some("github".into());
            entry.grant_id = Some(uuid());
            entry.outcome = AuditOutcome::Denied;
        }
        store.append_audit(&entry).await.unwrap();
    }

    let all = store.list_audit(&app.id, &AuditFilter::default(), &PageRequest::first()).await.unwrap();
    let times: Vec<i64> = all.items.iter().map(|e| e.at.0 - NOW.0).collect();
    assert_eq!(times, vec![6, 5, 4, 3, 2, 1, 0], "{b}");
    assert_eq!(all.items[0].outcome, AuditOutcome::Denied, "{b}");
    assert_eq!(all.items[0].provider.as_deref(), Some("github"), "{b}");

    let handouts = AuditFilter { action: Some("token.handout".into()), user_id: None };
    let times: Vec<i64> = store
        .list_audit(&app.id, &handouts, &PageRequest::first())
        .await
        .unwrap()
        .items
        .iter()
        .map(|e| e.at.0 - NOW.0)
        .collect();
    assert_eq!(times, vec![6, 4, 2], "{b}");

    let by_user = AuditFilter { action: None, user_id: Some(user.clone()) };
    let rows = store.list_audit(&app.id, &by_user, &PageRequest::first()).await.unwrap().items;
    assert_eq!(rows.iter().map(|e| e.at.0 - NOW.0).collect::<Vec<_>>(), vec![6, 3], "{b}");
    assert!(rows.iter().all(|e| e.user_id.as_ref() == Some(&user)), "{b}");

    let both = AuditFilter { action: Some("grant.revoke".into()), user_id: Some(user) };
    let rows = store.list_audit(&app.id, &both, &PageRequest::first()).await.unwrap().items;
    assert_eq!(rows.iter().map(|e| e.at.0 - NOW.0).collect::<Vec<_>>(), vec![3], "{b}");

    // Paging newest first: rows come back in reverse order of writing, even when a later row
    // carries the same or an earlier second.
    store.append_audit(&audit(&app.id, "tie", NOW.plus_seconds(4))).await.unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_audit(&app.id, &AuditFilter::default(), &PageRequest::new(Some(3), cursor).unwrap())
            .await
            .unwrap();
        seen.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 8, "{b}");
    assert_eq!(seen[0].action, "tie", "{b}");
    let times: Vec<i64> = seen[1..].iter().map(|e| e.at.0 - NOW.0).collect();
    assert_eq!(times, vec![6, 5, 4, 3, 2, 1, 0], "{b}");
}

store_test!(failed_audit_insert_rolls_everything_back);
async fn failed_audit_insert_rolls_everything_back(db: TestDatabase, store: Store) {
    let b = db.backend();
    let existing = seed_app(&store).await;
    let taken = audit(&existing.id, "something", NOW);
    store.append_audit(&taken).await.unwrap();
    let mut duplicate = taken.clone();

    // create_app: app and key are not left behind.
    let app = app_at(NOW);
    let key = key_for(&app.id, NOW);
    duplicate.app_id = app.id.clone();
    let err = store.create_app(&app, &key, &duplicate).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{b}: {err:?}");
    assert_eq!(store.get_app(&app.id).await.unwrap(), None, "{b}");
    assert_eq!(store.find_api_key(&key.prefix).await.unwrap(), None, "{b}");

    // create_idp, create_api_key, delete_api_key: likewise.
    duplicate.app_id = existing.id.clone();
    assert!(matches!(store.create_idp(&idp_for(&existing.id), &duplicate).await, Err(CreateIdpError::Store(_))), "{b}");
    assert_eq!(store.get_idp(&existing.id).await.unwrap(), None, "{b}");
    let extra = key_for(&existing.id, NOW);
    assert!(store.create_api_key(&extra, &duplicate).await.is_err(), "{b}");
    assert_eq!(store.find_api_key(&extra.prefix).await.unwrap(), None, "{b}");
    let first_key = store.list_api_keys(&existing.id, &PageRequest::first()).await.unwrap().items.remove(0);
    assert!(store.delete_api_key(&existing.id, &first_key.id, &duplicate).await.is_err(), "{b}");
    assert_eq!(store.find_api_key(&first_key.prefix).await.unwrap(), Some(first_key), "{b}");

    // update_idp and delete_idp.
    let idp = idp_for(&existing.id);
    store.create_idp(&idp, &audit(&existing.id, "idp.create", NOW)).await.unwrap();
    let mut next = idp.clone();
    next.audience = None;
    next.version = 2;
    assert!(matches!(store.update_idp(&next, 1, &duplicate).await, Err(UpdateIdpError::Store(_))), "{b}");
    assert!(store.delete_idp(&existing.id, &duplicate).await.is_err(), "{b}");
    assert_eq!(store.get_idp(&existing.id).await.unwrap(), Some(idp), "{b}");

    assert_eq!(testing::count_rows(&store, "audit_log").await.unwrap(), 3, "{b}");
}

store_test!(instance_secrets_first_writer_wins);
async fn instance_secrets_first_writer_wins(db: TestDatabase, store: Store) {
    let b = db.backend();
    assert_eq!(store.get_instance_secret("hash-key").await.unwrap(), None, "{b}");
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(
            async move { store.put_instance_secret_if_absent("hash-key", &[i; 32]).await.unwrap() },
        ));
    }
    let mut values = BTreeSet::new();
    for t in tasks {
        values.insert(t.await.unwrap());
    }
    assert_eq!(values.len(), 1, "{b}: every racer sees the winner");
    let winner = values.into_iter().next().unwrap();
    assert_eq!(store.get_instance_secret("hash-key").await.unwrap(), Some(winner.clone()), "{b}");
    assert_eq!(store.put_instance_secret_if_absent("hash-key", b"other").await.unwrap(), winner, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_are_checked() {
    assert_eq!(
        Store::connect("mysql://localhost/db", StoreOptions::default()).await.unwrap_err(),
        ConnectError::UnsupportedScheme("mysql".into())
    );
    assert!(matches!(
        Store::connect("sqlite::memory:", StoreOptions::default()).await,
        Err(ConnectError::InvalidUrl(_))
    ));

    // `sqlite:path` works too and creates missing directories.
    let db = TestDatabase::new(Backend::Sqlite).await.unwrap();
    let dir = Path::new(db.url().trim_start_matches("sqlite://")).parent().unwrap().join("nested/deeper");
    let store =
        Store::connect(&format!("sqlite:{}", dir.join("c.db").display()), StoreOptions::default()).await.unwrap();
    seed_app(&store).await;
    assert!(dir.join("c.db").is_file());
}

#[tokio::test(flavor = "current_thread")]
async fn connect_works_on_a_current_thread_runtime() {
    for db in TestDatabase::all().await.unwrap() {
        let store = db.connect().await.unwrap();
        seed_app(&store).await;
    }
}
