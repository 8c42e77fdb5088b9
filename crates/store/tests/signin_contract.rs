//! Contract tests of the sign-in storage ports for `Store`, on SQLite and, when `CUSTODY_TEST_POSTGRES_URL`
//! is set, on PostgreSQL: OIDC clients and what they go with, single consumption of states and
//! of an SDK session's token under concurrency, and Wallet sessions.

// Helpers outside `#[test]` functions are test code too (clippy.toml only exempts the latter).
#![allow(clippy::unwrap_used)]

#[macro_use]
mod support;

use custody_identity::audit::AuditEntry;
use custody_identity::cipher::SealedBox;
use custody_identity::claims::ClaimMappings;
use custody_identity::idp::{IdpConfig, IdpEndpoints, IdpKind};
use custody_identity::ids::{AppId, IdpId, UserId};
use custody_identity::issuer::Issuer;
use custody_identity::signin::ports::{PutOidcClientError, SdkOutcome};
use custody_identity::signin::{
    OidcClient, OidcClientId, SdkSession, SdkSessionId, SdkSessionStatus, SignInFailure, SignInPurpose, SignInState,
    TokenAuthMethod, WalletSession,
};
use custody_identity::time::UnixTime;
use custody_store::prelude::*;
use custody_store::testing::{count_rows, TestDatabase};
use custody_store::Store;
use std::sync::Arc;

use support::{seed_app, uuid, NOW};

fn audit(app: &AppId, action: &str) -> AuditEntry {
    support::audit(app, action, NOW)
}

/// An app with a key and an IdP configuration.
async fn seed(store: &Store) -> (AppId, IdpConfig) {
    let app = seed_app(store).await;
    let idp = IdpConfig {
        id: IdpId::parse(&uuid()).unwrap(),
        app_id: app.id.clone(),
        kind: IdpKind::from_static("custom_oidc"),
        issuer: Issuer::new("https://idp.example.com"),
        jwks_uri: "https://idp.example.com/jwks".to_owned(),
        audience: None,
        claims: ClaimMappings::subject_only(),
        claims_locked_at: None,
        version: 1,
        created_at: NOW,
        endpoints: IdpEndpoints::default(),
    };
    store.create_idp(&idp, &audit(&app.id, "idp.create")).await.unwrap();
    (app.id, idp)
}

fn client_for(app: &AppId, idp: &IdpId) -> OidcClient {
    OidcClient {
        app_id: app.clone(),
        idp_id: idp.clone(),
        client_id: OidcClientId::parse("client-1").unwrap(),
        client_secret: SealedBox(vec![9; 40]),
        auth_method: TokenAuthMethod::ClientSecretBasic,
        created_at: NOW,
        updated_at: NOW,
    }
}

fn state_for(app: &AppId, purpose: SignInPurpose, session: Option<&SdkSession>) -> SignInState {
    let hash = uuid().replace('-', "");
    SignInState {
        state_hash: hash.clone(),
        app_id: app.clone(),
        purpose,
        sdk_session: session.map(|s| s.id.clone()),
        nonce_hash: "n".repeat(64),
        pkce_verifier: SealedBox(vec![3; 50]),
        created_at: NOW,
        expires_at: NOW.plus_seconds(600),
    }
}

fn session_for(app: &AppId) -> SdkSession {
    SdkSession {
        id: SdkSessionId::parse(&uuid()).unwrap(),
        app_id: app.clone(),
        status: SdkSessionStatus::Pending,
        error: None,
        user_id: None,
        user_token: None,
        created_at: NOW,
        expires_at: NOW.plus_seconds(600),
        completed_at: None,
        token_delivered_at: None,
    }
}

async fn user_of(store: &Store, app: &AppId, subject: &str) -> UserId {
    store.ensure_user(app, subject, &UserId::parse(&uuid()).unwrap(), NOW).await.unwrap().id
}

store_test!(oidc_clients_follow_their_idp);
async fn oidc_clients_follow_their_idp(db: TestDatabase, store: Store) {
    let b = db.backend();
    let (app, idp) = seed(&store).await;
    assert_eq!(store.get_oidc_client(&app).await.unwrap(), None, "{b}");
    assert_eq!(store.oidc_client_id(&app).await.unwrap(), None, "{b}");
    let client = client_for(&app, &idp.id);
    store.put_oidc_client(&client, &audit(&app, "idp.oidc_update")).await.unwrap();
    assert_eq!(store.get_oidc_client(&app).await.unwrap(), Some(client.clone()), "{b}");
    assert_eq!(store.oidc_client_id(&app).await.unwrap().as_deref(), Some("client-1"), "{b}");

    // Replacing it keeps one row.
    let replaced = OidcClient {
        client_id: OidcClientId::parse("client-2").unwrap(),
        auth_method: TokenAuthMethod::ClientSecretPost,
        updated_at: NOW.plus_seconds(5),
        ..client.clone()
    };
    store.put_oidc_client(&replaced, &audit(&app, "idp.oidc_update")).await.unwrap();
    assert_eq!(store.get_oidc_client(&app).await.unwrap(), Some(replaced.clone()), "{b}");
    assert_eq!(count_rows(&store, "oidc_clients").await.unwrap(), 1, "{b}");

    // A client for a configuration that is not the app's (any more) is refused.
    let stale = client_for(&app, &IdpId::parse(&uuid()).unwrap());
    assert_eq!(
        store.put_oidc_client(&stale, &audit(&app, "idp.oidc_update")).await,
        Err(PutOidcClientError::IdpChanged),
        "{b}"
    );

    // Compare-and-set re-sealing.
    let secrets = store.oidc_client_secrets(None, 10).await.unwrap();
    assert_eq!(secrets, vec![(app.clone(), replaced.client_secret.clone())], "{b}");
    let fresh = SealedBox(vec![4; 40]);
    assert!(store.replace_oidc_client_secret(&app, &replaced.client_secret, &fresh).await.unwrap());
    assert!(!store.replace_oidc_client_secret(&app, &replaced.client_secret, &fresh).await.unwrap());
    assert!(store.oidc_client_secrets(Some(&app), 10).await.unwrap().is_empty());

    // Pending sign-ins and Wallet sessions go with the client and the IdP.
    let user = user_of(&store, &app, "ann").await;
    assert!(store.create_sign_in(&state_for(&app, SignInPurpose::Wallet, None), None).await.unwrap());
    let wallet = WalletSession {
        id_hash: "w".repeat(64),
        app_id: app.clone(),
        idp_id: idp.id.clone(),
        user_id: user.clone(),
        id_token: Some(SealedBox(vec![5; 20])),
        created_at: NOW,
        expires_at: NOW.plus_seconds(3600),
    };
    store.create_wallet_session(&wallet, &audit(&app, "user.sign_in")).await.unwrap();
    assert_eq!(store.get_wallet_session(&wallet.id_hash).await.unwrap(), Some(wallet.clone()), "{b}");
    assert!(store.delete_idp(&app, &audit(&app, "idp.delete")).await.unwrap());
    for table in ["oidc_clients", "sign_in_states", "wallet_sessions"] {
        assert_eq!(count_rows(&store, table).await.unwrap(), 0, "{b}: {table}");
    }
    // Without a client, a sign-in cannot be stored.
    assert!(!store.create_sign_in(&state_for(&app, SignInPurpose::Wallet, None), None).await.unwrap(), "{b}");
    assert_eq!(count_rows(&store, "sdk_sessions").await.unwrap(), 0, "{b}");
}

store_test!(states_and_tokens_are_consumed_once);
async fn states_and_tokens_are_consumed_once(db: TestDatabase, store: Store) {
    let b = db.backend();
    let (app, idp) = seed(&store).await;
    store.put_oidc_client(&client_for(&app, &idp.id), &audit(&app, "idp.oidc_update")).await.unwrap();
    let session = session_for(&app);
    let state = state_for(&app, SignInPurpose::Sdk, Some(&session));
    assert!(store.create_sign_in(&state, Some(&session)).await.unwrap());
    assert_eq!(store.get_sdk_session(&app, &session.id).await.unwrap(), Some(session.clone()), "{b}");
    let (other, _) = seed(&store).await;
    assert_eq!(store.get_sdk_session(&other, &session.id).await.unwrap(), None, "{b}: another app's");

    // Not at the other purpose's callback; once at its own, however many try at once.
    assert_eq!(store.consume_sign_in_state(&state.state_hash, SignInPurpose::Wallet).await.unwrap(), None);
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, hash) = (store.clone(), state.state_hash.clone());
            tokio::spawn(async move { store.consume_sign_in_state(&hash, SignInPurpose::Sdk).await.unwrap() })
        })
        .collect();
    let mut consumed = Vec::new();
    for t in tasks {
        consumed.extend(t.await.unwrap());
    }
    assert_eq!(consumed, vec![state.clone()], "{b}");

    // Completing: only from pending.
    let user = user_of(&store, &app, "bob").await;
    let token = SealedBox(vec![8; 30]);
    let outcome = SdkOutcome::Complete { user: &user, token: &token };
    assert!(store.finish_sdk_session(&session.id, outcome.clone(), NOW, &audit(&app, "user.sign_in")).await.unwrap());
    assert!(!store.finish_sdk_session(&session.id, outcome, NOW, &audit(&app, "user.sign_in")).await.unwrap());
    assert!(!store
        .finish_sdk_session(&session.id, SdkOutcome::Failed(SignInFailure::IdpError), NOW, &audit(&app, "user.sign_in"))
        .await
        .unwrap());
    let done = store.get_sdk_session(&app, &session.id).await.unwrap().unwrap();
    assert_eq!(done.status, SdkSessionStatus::Complete, "{b}");
    assert_eq!(done.user_id, Some(user.clone()), "{b}");

    // The token: once, to one of many concurrent readers; never to another app.
    assert_eq!(store.take_sdk_token(&other, &session.id, NOW).await.unwrap(), None, "{b}");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, id, app) = (store.clone(), session.id.clone(), app.clone());
            tokio::spawn(async move { store.take_sdk_token(&app, &id, NOW).await.unwrap() })
        })
        .collect();
    let mut taken = Vec::new();
    for t in tasks {
        taken.extend(t.await.unwrap());
    }
    assert_eq!(taken, vec![token], "{b}");
    let after = store.get_sdk_session(&app, &session.id).await.unwrap().unwrap();
    assert_eq!(after.user_token, None, "{b}");
    assert_eq!(after.token_delivered_at, Some(NOW), "{b}");

    // A failed session records why.
    let failed = session_for(&app);
    assert!(store.create_sign_in(&state_for(&app, SignInPurpose::Sdk, Some(&failed)), Some(&failed)).await.unwrap());
    let outcome = SdkOutcome::Failed(SignInFailure::InvalidIdToken);
    assert!(store.finish_sdk_session(&failed.id, outcome, NOW, &audit(&app, "user.sign_in")).await.unwrap());
    let read = store.get_sdk_session(&app, &failed.id).await.unwrap().unwrap();
    assert_eq!((read.status, read.error), (SdkSessionStatus::Failed, Some(SignInFailure::InvalidIdToken)));

    // Deleting the app takes everything with it.
    assert!(store.delete_app(&app).await.unwrap());
    assert!(store.delete_app(&other).await.unwrap());
    for table in ["oidc_clients", "sign_in_states", "sdk_sessions", "wallet_sessions"] {
        assert_eq!(count_rows(&store, table).await.unwrap(), 0, "{b}: {table}");
    }
}

store_test!(wallet_sessions_are_deleted_once_and_expired_ones_are_forgotten);
async fn wallet_sessions_are_deleted_once_and_expired_ones_are_forgotten(db: TestDatabase, store: Store) {
    let b = db.backend();
    let (app, idp) = seed(&store).await;
    let user = user_of(&store, &app, "cy").await;
    let session = |hash: char, expires_at: UnixTime| WalletSession {
        id_hash: hash.to_string().repeat(64),
        app_id: app.clone(),
        idp_id: idp.id.clone(),
        user_id: user.clone(),
        id_token: None,
        created_at: NOW,
        expires_at,
    };
    let old = WalletSession { created_at: NOW.plus_seconds(-7200), ..session('a', NOW.plus_seconds(-3600)) };
    store.create_wallet_session(&old, &audit(&app, "user.sign_in")).await.unwrap();
    let live = session('b', NOW.plus_seconds(3600));
    store.create_wallet_session(&live, &audit(&app, "user.sign_in")).await.unwrap();
    assert_eq!(store.get_wallet_session(&old.id_hash).await.unwrap(), None, "{b}: expired ones go");
    assert!(store.delete_wallet_session(&live.id_hash, Some(&audit(&app, "user.sign_out"))).await.unwrap());
    assert!(!store.delete_wallet_session(&live.id_hash, None).await.unwrap());
    assert_eq!(store.get_wallet_session(&live.id_hash).await.unwrap(), None, "{b}");
}
