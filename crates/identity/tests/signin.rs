//! Sign-in completion as a use case, over in-memory ports and a fake identity provider: the
//! state is consumed once, the SDK session is finished and its token handed out once, a replay
//! is refused, and an expired or deprovisioned sign-in fails as such. No database, no network,
//! no sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use custody_identity::audit::Actor;
use custody_identity::cipher::Cipher as _;
use custody_identity::ids::AppId;
use custody_identity::ports::{AppStore as _, Clock as _, Random as _};
use custody_identity::service::{AddIdp, IdentityPorts, IdentityService, IdentitySettings};
use custody_identity::signin::ports::OidcClients as _;
use custody_identity::signin::service::{CallbackError, SdkSessionState, SignedIn, WalletAccess};
use custody_identity::signin::{
    OidcClient, OidcClientId, SdkSessionStatus, SignInFailure, SignInPorts, SignInPurpose, SignInService,
    SignInSettings, TokenAuthMethod,
};
use custody_identity::{
    ApiKeyRecord, App, AppName, IdpKind, IssuerUrlPolicy, RequestedClaims, Secret, User, UserStatus,
};
use custody_testkit::{FakeCipher, FakeHasher, FakeIdp, ManualClock, MemoryStore, SeqRandom};
use serde_json::json;
use std::sync::Arc;

const ISSUER: &str = "https://idp.example";
const CLIENT_ID: &str = "custody-client";

struct World {
    store: Arc<MemoryStore>,
    clock: Arc<ManualClock>,
    idp: Arc<FakeIdp>,
    signin: SignInService,
    app: AppId,
}

impl World {
    async fn new() -> World {
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(ManualClock::default());
        let random = Arc::new(SeqRandom::default());
        let idp = Arc::new(FakeIdp::new(ISSUER));
        let cipher = Arc::new(FakeCipher);
        let hasher = Arc::new(FakeHasher);
        let identity = IdentityService::new(
            IdentityPorts {
                health: store.clone(),
                apps: store.clone(),
                api_keys: store.clone(),
                idps: store.clone(),
                users: store.clone(),
                discovery: idp.clone(),
                verifier: idp.clone(),
                clock: clock.clone(),
                random: random.clone(),
                hasher: hasher.clone(),
                audit: store.clone(),
            },
            IdentitySettings {
                issuer_policy: IssuerUrlPolicy::HttpsOnly,
                leeway_secs: 0,
                kinds: custody_testkit::kinds(),
            },
        );
        let signin = SignInService::new(
            SignInPorts {
                identity: identity.clone(),
                idps: store.clone(),
                users: store.clone(),
                clients: store.clone(),
                states: store.clone(),
                sdk_sessions: store.clone(),
                wallet_sessions: store.clone(),
                audit: store.clone(),
                oidc: idp.clone(),
                cipher: cipher.clone(),
                hasher,
                clock: clock.clone(),
                random: random.clone(),
            },
            SignInSettings::new("https://custody.example"),
        );
        // The app, its identity provider (through the use case) and its OIDC client.
        let app = AppId::parse(&random.uuid()).unwrap();
        let now = clock.now();
        let key = ApiKeyRecord {
            id: custody_identity::ApiKeyId::parse(&random.uuid()).unwrap(),
            app_id: app.clone(),
            prefix: "0123456789abcdef".into(),
            hash: vec![1],
            created_at: now,
            last_used_at: None,
        };
        let record = App { id: app.clone(), name: AppName::parse("demo").unwrap(), created_at: now };
        let audit = identity.audit(&app, "app.create", "operator", None);
        store.create_app(&record, &key, &audit).await.unwrap();
        let request = AddIdp {
            issuer_url: ISSUER.into(),
            audience: Some("api".into()),
            kind: Some(IdpKind::from_static("custom_oidc")),
            claims: RequestedClaims::default(),
        };
        let config = identity.add_idp(&app, request, &Actor::operator()).await.unwrap();
        let client = OidcClient {
            app_id: app.clone(),
            idp_id: config.id.clone(),
            client_id: OidcClientId::parse(CLIENT_ID).unwrap(),
            client_secret: cipher.seal_secret(&Secret::new("client-secret"), &OidcClient::secret_aad(&app)).unwrap(),
            auth_method: TokenAuthMethod::ClientSecretBasic,
            created_at: now,
            updated_at: now,
        };
        store.put_oidc_client(&client, &identity.audit(&app, "oidc_client.put", "operator", None)).await.unwrap();
        World { store, clock, idp, signin, app }
    }

    /// What the browser brings back from the IdP for the last authorization request: its state,
    /// and a code that exchanges for an ID token of `subject` with the request's nonce.
    fn idp_answers(&self, subject: &str, code: &str) -> String {
        let seen = self.idp.last_authorization().expect("an authorization request");
        let now = self.clock.now().0;
        let claims = json!({
            "iss": ISSUER, "aud": CLIENT_ID, "sub": subject, "iat": now, "exp": now + 300, "nonce": seen.nonce,
        });
        self.idp.issue_code(code, self.idp.token(&claims));
        seen.state
    }
}

fn user_of(signed_in: SignedIn) -> User {
    match signed_in {
        SignedIn::Sdk { user, .. } | SignedIn::Wallet { user, .. } => user,
    }
}

#[tokio::test]
async fn an_sdk_sign_in_completes_once_and_hands_its_token_out_once() {
    let w = World::new().await;
    let started = w.signin.start_sdk_session(&w.app).await.unwrap();
    let state = w.idp_answers("alice", "code-1");
    assert_eq!(w.store.sign_in_state_count(), 1);

    let signed_in = w.signin.complete(SignInPurpose::Sdk, &state, Some("code-1"), None).await.unwrap();

    let SignedIn::Sdk { session_id, user, .. } = signed_in else { panic!("an SDK sign-in") };
    assert_eq!(session_id, started.id);
    assert_eq!((user.subject.as_str(), user.status), ("alice", UserStatus::Active));
    assert_eq!(w.store.sign_in_state_count(), 0, "the state is consumed");
    let session = w.store.sdk_session(&started.id).unwrap();
    assert_eq!(session.status, SdkSessionStatus::Complete);
    assert_eq!(session.user_id.as_ref(), Some(&user.id));
    assert_eq!(w.store.audit_actions().last().map(String::as_str), Some("user.sign_in"));

    // The SDK reads the session: the ID token comes out once, the user every time.
    let first = w.signin.sdk_session(&w.app, &started.id).await.unwrap();
    assert_eq!(first.status, SdkSessionState::Complete);
    let token = first.user_token.expect("the ID token, the first time");
    assert_eq!(token.expose().split('.').count(), 3);
    let second = w.signin.sdk_session(&w.app, &started.id).await.unwrap();
    assert_eq!(second.user_token, None);
    assert_eq!(second.user.map(|u| u.id), Some(user.id));
}

#[tokio::test]
async fn a_replayed_callback_is_refused() {
    let w = World::new().await;
    let started = w.signin.start_sdk_session(&w.app).await.unwrap();
    let state = w.idp_answers("alice", "code-1");
    w.signin.complete(SignInPurpose::Sdk, &state, Some("code-1"), None).await.unwrap();
    let audit_rows = w.store.audit_rows().len();

    // The same state again (even with a fresh code) is unknown: it was consumed.
    w.idp_answers("mallory", "code-2");
    let replay = w.signin.complete(SignInPurpose::Sdk, &state, Some("code-2"), None).await;

    assert_eq!(replay, Err(CallbackError::UnknownState));
    assert_eq!(w.store.sdk_session(&started.id).unwrap().status, SdkSessionStatus::Complete);
    assert_eq!(w.store.audit_rows().len(), audit_rows, "a replay writes nothing");
}

#[tokio::test]
async fn a_state_is_consumed_only_at_its_own_callback() {
    let w = World::new().await;
    w.signin.start_sdk_session(&w.app).await.unwrap();
    let state = w.idp_answers("alice", "code-1");

    let elsewhere = w.signin.complete(SignInPurpose::Wallet, &state, Some("code-1"), None).await;

    assert_eq!(elsewhere, Err(CallbackError::UnknownState));
    assert!(w.signin.complete(SignInPurpose::Sdk, &state, Some("code-1"), None).await.is_ok());
}

#[tokio::test]
async fn a_sign_in_that_comes_back_too_late_fails_its_sdk_session() {
    let w = World::new().await;
    let started = w.signin.start_sdk_session(&w.app).await.unwrap();
    let state = w.idp_answers("alice", "code-1");
    w.clock.set(started.expires_at);

    let late = w.signin.complete(SignInPurpose::Sdk, &state, Some("code-1"), None).await;

    assert_eq!(late, Err(CallbackError::Failed { app_id: w.app.clone(), failure: SignInFailure::Expired }));
    let session = w.store.sdk_session(&started.id).unwrap();
    assert_eq!((session.status, session.error), (SdkSessionStatus::Failed, Some(SignInFailure::Expired)));
    assert_eq!(session.user_token, None);
}

#[tokio::test]
async fn a_deprovisioned_user_cannot_sign_in() {
    let w = World::new().await;
    w.signin.start_wallet_sign_in(&w.app).await.unwrap();
    let state = w.idp_answers("alice", "code-1");
    let alice = user_of(w.signin.complete(SignInPurpose::Wallet, &state, Some("code-1"), None).await.unwrap());
    w.store.insert_user(User { status: UserStatus::Deprovisioned, ..alice });
    let sessions = w.store.wallet_session_count();

    w.signin.start_wallet_sign_in(&w.app).await.unwrap();
    let state = w.idp_answers("alice", "code-2");
    let refused = w.signin.complete(SignInPurpose::Wallet, &state, Some("code-2"), None).await;

    assert_eq!(
        refused,
        Err(CallbackError::Failed { app_id: w.app.clone(), failure: SignInFailure::UserDeprovisioned })
    );
    assert_eq!(w.store.wallet_session_count(), sessions, "no Wallet session for a deprovisioned user");
}

#[tokio::test]
async fn a_wallet_sign_in_opens_a_session_that_ends_with_its_user() {
    let w = World::new().await;
    let started = w.signin.start_wallet_sign_in(&w.app).await.unwrap();
    assert_eq!(w.idp.last_authorization().unwrap().state, started.state.expose());
    let state = w.idp_answers("alice", "code-1");

    let SignedIn::Wallet { session_token, user, .. } =
        w.signin.complete(SignInPurpose::Wallet, &state, Some("code-1"), None).await.unwrap()
    else {
        panic!("a Wallet sign-in")
    };

    let WalletAccess::Active { user: seen, .. } = w.signin.wallet_access(session_token.expose()).await.unwrap() else {
        panic!("an active session")
    };
    assert_eq!(seen.id, user.id);
    // Suspended at the IdP: the session ends on its next use and is deleted.
    w.store.insert_user(User { status: UserStatus::Suspended, ..user });
    assert!(matches!(w.signin.wallet_access(session_token.expose()).await.unwrap(), WalletAccess::Ended { .. }));
    assert_eq!(w.store.wallet_session_count(), 0);
}
