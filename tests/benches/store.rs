//! The hand-out's one read (`HandoutContexts::handout_context`) against a real store: SQLite
//! always, PostgreSQL too when `CUSTODY_TEST_POSTGRES_URL` is set. The database holds one app with
//! its key, provider, policy, user and that user's grant with its credential, so each iteration
//! is the whole statement, its decoding and the row-to-domain conversion of the cached
//! hand-out's read, without HTTP, verification or the audit write around it.
//!
//! `cargo bench -p custody-tests --bench store`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use custody_identity::app::{ApiKeyRecord, App, AppName};
use custody_identity::audit::{AuditEntry, AuditOutcome};
use custody_identity::cipher::SealedBox;
use custody_identity::ids::{ApiKeyId, AppId, UserId};
use custody_identity::ports::{ApiKeyStore as _, AppStore as _, UserStore as _};
use custody_identity::time::UnixTime;
use custody_store::testing::{backends, TestDatabase};
use custody_store::Store;
use custody_vault::grant::{Credential, Grant, GrantId, GrantStatus};
use custody_vault::policy::{Policy, TokenAccess};
use custody_vault::ports::{
    GrantSelector, GrantStore as _, HandoutContexts as _, PolicyStore as _, ProviderStore as _,
};
use custody_vault::provider::{ProviderConfig, ProviderName};
use std::hint::black_box;

const NOW: UnixTime = UnixTime(1_800_000_000);

fn audit(app: &AppId, action: &str) -> AuditEntry {
    AuditEntry {
        id: format!("{action}-audit"),
        app_id: app.clone(),
        at: NOW,
        action: action.to_owned(),
        actor: "operator".to_owned(),
        user_id: None,
        grant_id: None,
        provider: None,
        outcome: AuditOutcome::Success,
        detail: None,
    }
}

/// Stores one app with everything a hand-out reads; returns its key.
async fn seed(store: &Store) -> ApiKeyRecord {
    let app_id = AppId::parse("6f1c1d52-0b8e-4e43-9a55-7b2d0c8d1e01").unwrap();
    let app = App { id: app_id.clone(), name: AppName::parse("Acme").unwrap(), created_at: NOW };
    let key = ApiKeyRecord {
        id: ApiKeyId::parse("6f1c1d52-0b8e-4e43-9a55-7b2d0c8d1e02").unwrap(),
        app_id: app_id.clone(),
        prefix: "0a1b2c3d4e5f6a7b".to_owned(),
        hash: (0..32).collect(),
        created_at: NOW,
        last_used_at: None,
    };
    let first_key = ApiKeyRecord {
        id: ApiKeyId::parse("6f1c1d52-0b8e-4e43-9a55-7b2d0c8d1e03").unwrap(),
        prefix: "ffffffffffffffff".to_owned(),
        ..key.clone()
    };
    store.create_app(&app, &first_key, &audit(&app_id, "app.create")).await.unwrap();
    store.create_api_key(&key, &audit(&app_id, "api_key.create")).await.unwrap();
    let github = ProviderName::parse("github").unwrap();
    let provider = ProviderConfig {
        app_id: app_id.clone(),
        name: github.clone(),
        authorization_url: "https://github.example.com/authorize".to_owned(),
        token_url: "https://github.example.com/token".to_owned(),
        revocation_url: None,
        client_id: "client".to_owned(),
        client_secret: SealedBox(vec![7; 48]),
        scopes: vec!["repo".to_owned()],
        api_base_url: None,
        created_at: NOW,
        updated_at: NOW,
    };
    store.put_provider(&provider, &audit(&app_id, "provider.create")).await.unwrap();
    let policy = Policy {
        app_id: app_id.clone(),
        provider: github.clone(),
        allow_groups: ["engineering".to_owned()].into(),
        allow_roles: Default::default(),
        token_access: TokenAccess::Handout,
        updated_at: NOW,
    };
    store.put_policy(&policy, &audit(&app_id, "policy.put")).await.unwrap();
    let user_id = UserId::parse("6f1c1d52-0b8e-4e43-9a55-7b2d0c8d1e04").unwrap();
    let user = store.ensure_user(&app_id, "auth0|ann", &user_id, NOW).await.unwrap();
    let grant = Grant {
        id: GrantId::parse("6f1c1d52-0b8e-4e43-9a55-7b2d0c8d1e05").unwrap(),
        app_id: app_id.clone(),
        user_id: user.id.clone(),
        provider: github,
        status: GrantStatus::Active,
        scopes: vec!["repo".to_owned(), "read:user".to_owned()],
        account: Some("ann@example.com".to_owned()),
        created_at: NOW,
        updated_at: NOW,
        last_used_at: None,
        revoked_at: None,
    };
    let credential = Credential {
        grant_id: grant.id.clone(),
        access_token: SealedBox(vec![9; 80]),
        refresh_token: Some(SealedBox(vec![8; 80])),
        token_type: "Bearer".to_owned(),
        expires_at: Some(NOW.plus_seconds(3600)),
        version: 1,
    };
    store.save_grant(&grant, &credential, true, &audit(&app_id, "grant.connect")).await.unwrap();
    key
}

fn handout_context(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for backend in backends() {
        let db = runtime.block_on(TestDatabase::new(backend)).unwrap();
        let store = runtime.block_on(db.connect()).unwrap();
        let key = runtime.block_on(seed(&store));
        let selector = GrantSelector::Provider(ProviderName::parse("github").unwrap());
        let read = || store.handout_context(black_box(&key), "auth0|ann", &selector);
        let context = runtime.block_on(read()).unwrap().expect("the key is stored");
        assert!(context.user.is_some() && context.view.is_some_and(|v| v.credential.is_some()), "seeded in full");
        c.bench_function(&format!("handout_context/{backend:?}"), |b| {
            b.iter(|| runtime.block_on(read()).unwrap());
        });
    }
}

criterion_group!(benches, handout_context);
criterion_main!(benches);
