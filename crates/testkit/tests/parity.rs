//! The fakes and the real store agree: each scenario runs through the storage ports on
//! [`MemoryStore`] and on `custody_store::Store` (SQLite, and PostgreSQL when
//! `CUSTODY_TEST_POSTGRES_URL` is set), with the same assertions. The service tests trust the
//! fakes because of this file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use custody_identity::audit::AuditEntry;
use custody_identity::ports::{AppStore, IdpStore, Random as _, UserStore};
use custody_identity::signin::ports::{OidcClients, SdkOutcome, SdkSessions, SignInStates};
use custody_identity::signin::{
    OidcClient, OidcClientId, SdkSession, SdkSessionId, SdkSessionStatus, SignInPurpose, SignInState, TokenAuthMethod,
};
use custody_identity::{
    ApiKeyId, ApiKeyRecord, App, AppId, AppName, ClaimMappings, IdpConfig, IdpId, IdpKind, Issuer, Secret, UnixTime,
    User, UserId, UserStatus,
};
use custody_store::testing::TestDatabase;
use custody_testkit::{FakeCipher, MemoryStore, SeqRandom};
use custody_vault::grant::{Credential, Grant, GrantId, GrantStatus, TokenKind};
use custody_vault::ports::{
    CredentialStore, GrantSelector, GrantStore, LifecycleChange, LifecycleEvent, LifecycleLedger, LifecycleOutcome,
    ProviderStore, RevocationOutbox, RevokeScope, SaveGrantError,
};
use custody_vault::provider::{ProviderConfig, ProviderName};
use custody_vault::Cipher as _;

const NOW: UnixTime = UnixTime(1_800_000_000);

/// Every port the scenarios use.
trait Ports:
    AppStore
    + UserStore
    + IdpStore
    + ProviderStore
    + GrantStore
    + CredentialStore
    + LifecycleLedger
    + RevocationOutbox
    + OidcClients
    + SignInStates
    + SdkSessions
{
}

impl<T> Ports for T where
    T: AppStore
        + UserStore
        + IdpStore
        + ProviderStore
        + GrantStore
        + CredentialStore
        + LifecycleLedger
        + RevocationOutbox
        + OidcClients
        + SignInStates
        + SdkSessions
{
}

/// Runs `scenario` on the memory store and on every configured database.
macro_rules! on_every_store {
    ($scenario:ident) => {{
        $scenario(&MemoryStore::new(), "memory").await;
        for db in TestDatabase::all().await.unwrap() {
            let store = db.connect().await.unwrap();
            $scenario(&store, &format!("{:?}", db.backend())).await;
        }
    }};
}

struct Seed {
    random: SeqRandom,
    app: AppId,
}

impl Seed {
    fn audit(&self, action: &str) -> AuditEntry {
        AuditEntry::new(self.random.uuid(), self.app.clone(), NOW, action, "operator")
    }
}

async fn seed(store: &impl Ports) -> Seed {
    let random = SeqRandom::default();
    let app = AppId::parse(&random.uuid()).unwrap();
    let seed = Seed { app: app.clone(), random };
    let record = App { id: app.clone(), name: AppName::parse("Acme").unwrap(), created_at: NOW };
    let key = ApiKeyRecord {
        id: ApiKeyId::parse(&seed.random.uuid()).unwrap(),
        app_id: app.clone(),
        prefix: seed.random.uuid().replace('-', "")[16..].to_owned(),
        hash: vec![7; 32],
        created_at: NOW,
        last_used_at: None,
    };
    store.create_app(&record, &key, &seed.audit("app.create")).await.unwrap();
    seed
}

async fn user(store: &impl Ports, seed: &Seed, subject: &str) -> User {
    store.ensure_user(&seed.app, subject, &UserId::parse(&seed.random.uuid()).unwrap(), NOW).await.unwrap()
}

fn provider_name() -> ProviderName {
    ProviderName::parse("github").unwrap()
}

async fn provider(store: &impl Ports, seed: &Seed) {
    let name = provider_name();
    let secret = FakeCipher.seal_secret(&Secret::new("s"), &ProviderConfig::secret_aad(&seed.app, &name)).unwrap();
    let config = ProviderConfig {
        app_id: seed.app.clone(),
        name,
        authorization_url: "https://github.example/authorize".into(),
        token_url: "https://github.example/token".into(),
        revocation_url: Some("https://github.example/revoke".into()),
        client_id: "client".into(),
        client_secret: secret,
        scopes: vec![],
        api_base_url: None,
        created_at: NOW,
        updated_at: NOW,
    };
    store.put_provider(&config, &seed.audit("provider.create")).await.unwrap();
}

fn grant_of(seed: &Seed, user: &User) -> Grant {
    Grant {
        id: GrantId::parse(&seed.random.uuid()).unwrap(),
        app_id: seed.app.clone(),
        user_id: user.id.clone(),
        provider: provider_name(),
        status: GrantStatus::Active,
        scopes: vec![],
        account: None,
        created_at: NOW,
        updated_at: NOW,
        last_used_at: None,
        revoked_at: None,
    }
}

fn credential(grant: &GrantId, access: &str, refresh: Option<&str>, version: i64) -> Credential {
    let seal = |v: &str, kind| FakeCipher.seal_secret(&Secret::new(v), &Credential::aad(grant, kind)).unwrap();
    Credential {
        grant_id: grant.clone(),
        access_token: seal(access, TokenKind::Access),
        refresh_token: refresh.map(|r| seal(r, TokenKind::Refresh)),
        token_type: "Bearer".into(),
        expires_at: Some(NOW.plus_seconds(3600)),
        version,
    }
}

fn event(id: &str, subject: &str, at: i64, change: LifecycleChange) -> LifecycleEvent {
    LifecycleEvent { event_id: id.into(), subject: subject.into(), occurred_at: NOW.plus_seconds(at), change }
}

fn outcome(outcome: LifecycleOutcome) -> String {
    match outcome {
        LifecycleOutcome::Applied { user, revoked } => format!("applied {} {}", user.status.as_str(), revoked.len()),
        LifecycleOutcome::Ignored(_) => "ignored".to_owned(),
        LifecycleOutcome::Duplicate => "duplicate".to_owned(),
    }
}

async fn lifecycle(store: &impl Ports, on: &str) {
    let seed = seed(store).await;
    provider(store, &seed).await;
    let alice = user(store, &seed, "alice").await;
    let grant = grant_of(&seed, &alice);
    let first = credential(&grant.id, "a", Some("r"), 1);
    store.save_grant(&grant, &first, true, &seed.audit("grant.connect")).await.unwrap();
    let steps = [
        (event("e1", "alice", 100, LifecycleChange::Suspend), "applied suspended 0"),
        (event("e2", "alice", 50, LifecycleChange::Reactivate), "ignored"),
        (event("e1", "alice", 200, LifecycleChange::Reactivate), "duplicate"),
        (event("e3", "nobody", 10, LifecycleChange::Deprovision), "ignored"),
        (event("e4", "alice", 10, LifecycleChange::Deprovision), "applied deprovisioned 1"),
        (event("e5", "alice", 300, LifecycleChange::Reactivate), "ignored"),
    ];
    for (event, expected) in steps {
        let applied = store.apply_lifecycle_event(&seed.app, &event, NOW, &seed.audit("user.lifecycle")).await;
        assert_eq!(outcome(applied.unwrap()), expected, "{on}: {event:?}");
    }
    let stored = store.get_user(&seed.app, &alice.id).await.unwrap().unwrap();
    assert_eq!(stored.status, UserStatus::Deprovisioned, "{on}");
    let mut queued: Vec<String> = store.due_revocations(NOW, 10).await.unwrap().into_iter().map(|i| i.id).collect();
    queued.sort();
    assert_eq!(queued, vec![format!("{}:access", grant.id), format!("{}:refresh", grant.id)], "{on}");
}

async fn credentials(store: &impl Ports, on: &str) {
    let seed = seed(store).await;
    provider(store, &seed).await;
    let alice = user(store, &seed, "alice").await;
    let grant = grant_of(&seed, &alice);
    let audit = || seed.audit("grant");
    store.save_grant(&grant, &credential(&grant.id, "a1", Some("r1"), 1), true, &audit()).await.unwrap();
    let second = grant_of(&seed, &alice);
    assert_eq!(
        store.save_grant(&second, &credential(&second.id, "x", None, 1), true, &audit()).await,
        Err(SaveGrantError::Conflict),
        "{on}: one active grant per user and provider"
    );
    // Compare-and-set on the version; a rotated refresh token queues the old one.
    let next = credential(&grant.id, "a2", Some("r2"), 2);
    assert!(!store.replace_credential(&next, 5, &audit()).await.unwrap(), "{on}");
    assert!(store.replace_credential(&next, 1, &audit()).await.unwrap(), "{on}");
    assert_eq!(store.load_credential(&grant.id).await.unwrap(), Some(next.clone()), "{on}");
    let queued: Vec<String> = store.due_revocations(NOW, 10).await.unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(queued, vec![format!("{}:superseded-refresh:v1", grant.id)], "{on}");
    // Expiry needs the current version.
    assert!(!store.expire_grant(&grant.id, 1, NOW, &audit()).await.unwrap(), "{on}");
    let selector = GrantSelector::Provider(provider_name());
    let view = store.handout_view(&seed.app, &alice.id, &selector).await.unwrap().unwrap();
    assert_eq!((view.grant.id.clone(), view.credential), (grant.id.clone(), Some(next)), "{on}");
    assert!(store.expire_grant(&grant.id, 2, NOW, &audit()).await.unwrap(), "{on}");
    assert_eq!(store.get_grant(&seed.app, &grant.id).await.unwrap().unwrap().status, GrantStatus::Expired, "{on}");
    assert_eq!(store.load_credential(&grant.id).await.unwrap(), None, "{on}");
    // Revoking an expired grant revokes it, with no token left to queue.
    let revoked = store.revoke_grants(&seed.app, &RevokeScope::User(alice.id.clone()), NOW, &audit()).await.unwrap();
    assert_eq!(revoked.len(), 1, "{on}");
    assert_eq!(store.due_revocations(NOW, 10).await.unwrap().len(), 1, "{on}");
}

async fn sign_in(store: &impl Ports, on: &str) {
    let seed = seed(store).await;
    let idp = IdpConfig {
        id: IdpId::parse(&seed.random.uuid()).unwrap(),
        app_id: seed.app.clone(),
        kind: IdpKind::from_static("custom_oidc"),
        issuer: Issuer::new("https://idp.example"),
        jwks_uri: "https://idp.example/jwks".into(),
        audience: None,
        claims: ClaimMappings::subject_only(),
        claims_locked_at: None,
        version: 1,
        created_at: NOW,
        endpoints: Default::default(),
    };
    store.create_idp(&idp, &seed.audit("idp.create")).await.unwrap();
    let client = OidcClient {
        app_id: seed.app.clone(),
        idp_id: idp.id.clone(),
        client_id: OidcClientId::parse("client").unwrap(),
        client_secret: FakeCipher.seal(b"s", &OidcClient::secret_aad(&seed.app)).unwrap(),
        auth_method: TokenAuthMethod::ClientSecretBasic,
        created_at: NOW,
        updated_at: NOW,
    };
    store.put_oidc_client(&client, &seed.audit("oidc.put")).await.unwrap();
    let session_id = SdkSessionId::parse(&seed.random.uuid()).unwrap();
    let session = SdkSession {
        id: session_id.clone(),
        app_id: seed.app.clone(),
        status: SdkSessionStatus::Pending,
        error: None,
        user_id: None,
        user_token: None,
        created_at: NOW,
        expires_at: NOW.plus_seconds(600),
        completed_at: None,
        token_delivered_at: None,
    };
    let hash = "ab".repeat(32);
    let state = SignInState {
        state_hash: hash.clone(),
        app_id: seed.app.clone(),
        purpose: SignInPurpose::Sdk,
        sdk_session: Some(session_id.clone()),
        nonce_hash: "cd".repeat(32),
        pkce_verifier: FakeCipher.seal(b"v", &SignInState::verifier_aad(&hash)).unwrap(),
        created_at: NOW,
        expires_at: NOW.plus_seconds(600),
    };
    assert!(store.create_sign_in(&state, Some(&session)).await.unwrap(), "{on}");
    // Consumed once, and only at its own callback.
    assert_eq!(store.consume_sign_in_state(&hash, SignInPurpose::Wallet).await.unwrap(), None, "{on}");
    assert_eq!(store.consume_sign_in_state(&hash, SignInPurpose::Sdk).await.unwrap(), Some(state.clone()), "{on}");
    assert_eq!(store.consume_sign_in_state(&hash, SignInPurpose::Sdk).await.unwrap(), None, "{on}");
    // Finished once; its token taken once.
    let alice = user(store, &seed, "alice").await;
    let token = FakeCipher.seal(b"id-token", &SdkSession::token_aad(&session_id)).unwrap();
    let complete = || SdkOutcome::Complete { user: &alice.id, token: &token };
    assert!(store.finish_sdk_session(&session_id, complete(), NOW, &seed.audit("user.sign_in")).await.unwrap());
    assert!(!store.finish_sdk_session(&session_id, complete(), NOW, &seed.audit("user.sign_in")).await.unwrap());
    assert_eq!(store.take_sdk_token(&seed.app, &session_id, NOW).await.unwrap(), Some(token.clone()), "{on}");
    assert_eq!(store.take_sdk_token(&seed.app, &session_id, NOW).await.unwrap(), None, "{on}");
    let stored = store.get_sdk_session(&seed.app, &session_id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.user_id, stored.token_delivered_at),
        (SdkSessionStatus::Complete, Some(alice.id.clone()), Some(NOW)),
        "{on}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_apply_alike() {
    on_every_store!(lifecycle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_compare_and_set_alike() {
    on_every_store!(credentials);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_states_and_sessions_are_single_use_alike() {
    on_every_store!(sign_in);
}
