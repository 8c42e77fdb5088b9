//! The fixture of the vault's service-level tests: the use cases over the test kit's in-memory
//! ports, a manual clock and fake providers. No database, no network, no sleeps.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use custody_identity::audit::AuditEntry;
use custody_identity::ids::{AppId, UserId};
use custody_identity::ports::Random as _;
use custody_identity::{Secret, UnixTime, User, UserStatus};
use custody_testkit::{FakeCipher, FakeOAuth, ManualClock, MemoryRefreshLock, MemoryStore, SeqRandom};
use custody_vault::grant::{Credential, Grant, GrantId, GrantStatus, TokenKind};
use custody_vault::policy::{Policy, TokenAccess};
use custody_vault::ports::{GrantStore as _, PolicyStore as _, ProviderStore as _};
use custody_vault::provider::{ProviderConfig, ProviderName};
use custody_vault::service::{VaultPorts, VaultService, VaultSettings};
use custody_vault::Cipher as _;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Refresh when the access token expires within this many seconds.
pub const REFRESH_WINDOW: i64 = 60;
pub const PROVIDER: &str = "github";

pub struct Vault {
    pub store: Arc<MemoryStore>,
    pub clock: Arc<ManualClock>,
    pub random: Arc<SeqRandom>,
    pub oauth: Arc<FakeOAuth>,
    pub locks: Arc<MemoryRefreshLock>,
    pub cipher: Arc<FakeCipher>,
    pub service: VaultService,
    pub app: AppId,
}

impl Vault {
    pub fn new() -> Self {
        let random = Arc::new(SeqRandom::default());
        let app = AppId::parse(&random.uuid()).unwrap();
        Vault::on(Arc::new(MemoryStore::new()), Arc::new(ManualClock::default()), random, app)
    }

    /// The vault over `store`, for `app`, sharing the clock and random source (a test that also
    /// runs identity use cases on the same store).
    pub fn on(store: Arc<MemoryStore>, clock: Arc<ManualClock>, random: Arc<SeqRandom>, app: AppId) -> Self {
        let oauth = Arc::new(FakeOAuth::default());
        let locks = Arc::new(MemoryRefreshLock::default());
        let cipher = Arc::new(FakeCipher);
        let service = VaultService::new(
            VaultPorts {
                providers: store.clone(),
                policies: store.clone(),
                grants: store.clone(),
                credentials: store.clone(),
                lifecycle: store.clone(),
                connect_states: store.clone(),
                outbox: store.clone(),
                sealed: store.clone(),
                maintenance: store.clone(),
                audit: store.clone(),
                locks: locks.clone(),
                oauth: oauth.clone(),
                cipher: cipher.clone(),
                clock: clock.clone(),
                random: random.clone(),
            },
            VaultSettings {
                refresh_window_secs: REFRESH_WINDOW,
                public_url: "https://custody.example".into(),
                outbox_retry_base_secs: 30,
                allow_insecure_api_base: false,
            },
        );
        Vault { store, clock, random, oauth, locks, cipher, service, app }
    }

    pub fn now(&self) -> UnixTime {
        custody_identity::ports::Clock::now(self.clock.as_ref())
    }

    fn audit(&self, action: &str) -> AuditEntry {
        AuditEntry::new(self.random.uuid(), self.app.clone(), self.now(), action, "test")
    }

    /// An active user of the app with these groups.
    pub fn user(&self, subject: &str, groups: &[&str]) -> User {
        let user = User {
            id: UserId::parse(&self.random.uuid()).unwrap(),
            app_id: self.app.clone(),
            subject: subject.into(),
            status: UserStatus::Active,
            email: None,
            name: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            roles: BTreeSet::new(),
            created_at: self.now(),
            last_seen_at: None,
        };
        self.store.insert_user(user.clone());
        user
    }

    pub fn provider_name(&self) -> ProviderName {
        ProviderName::parse(PROVIDER).unwrap()
    }

    /// The provider, with a revocation URL (so replaced tokens are queued for revocation).
    pub async fn provider(&self) {
        let name = self.provider_name();
        let secret =
            self.cipher.seal_secret(&Secret::new("client-secret"), &ProviderConfig::secret_aad(&self.app, &name));
        let config = ProviderConfig {
            app_id: self.app.clone(),
            name,
            authorization_url: "https://github.example/authorize".into(),
            token_url: "https://github.example/token".into(),
            revocation_url: Some("https://github.example/revoke".into()),
            client_id: "client".into(),
            client_secret: secret.unwrap(),
            scopes: vec!["repo".into()],
            api_base_url: Some("https://api.github.example".into()),
            created_at: self.now(),
            updated_at: self.now(),
        };
        self.store.put_provider(&config, &self.audit("provider.create")).await.unwrap();
    }

    pub async fn policy(&self, allow_groups: &[&str], token_access: TokenAccess) {
        let policy = Policy {
            app_id: self.app.clone(),
            provider: self.provider_name(),
            allow_groups: allow_groups.iter().map(|g| g.to_string()).collect(),
            allow_roles: BTreeSet::new(),
            token_access,
            updated_at: self.now(),
        };
        self.store.put_policy(&policy, &self.audit("policy.put")).await.unwrap();
    }

    /// An active grant of `user` whose access token `access` expires in `expires_in` seconds,
    /// with refresh token `refresh` when given.
    pub async fn grant(&self, user: &User, access: &str, refresh: Option<&str>, expires_in: i64) -> GrantId {
        let id = GrantId::parse(&self.random.uuid()).unwrap();
        let now = self.now();
        let grant = Grant {
            id: id.clone(),
            app_id: self.app.clone(),
            user_id: user.id.clone(),
            provider: self.provider_name(),
            status: GrantStatus::Active,
            scopes: vec!["repo".into()],
            account: None,
            created_at: now,
            updated_at: now,
            last_used_at: None,
            revoked_at: None,
        };
        let seal =
            |value: &str, kind| self.cipher.seal_secret(&Secret::new(value), &Credential::aad(&id, kind)).unwrap();
        let credential = Credential {
            grant_id: id.clone(),
            access_token: seal(access, TokenKind::Access),
            refresh_token: refresh.map(|r| seal(r, TokenKind::Refresh)),
            token_type: "Bearer".into(),
            expires_at: Some(now.plus_seconds(expires_in)),
            version: 1,
        };
        self.store.save_grant(&grant, &credential, true, &self.audit("grant.connect")).await.unwrap();
        id
    }

    /// The plaintext of a grant's stored access token.
    pub fn stored_access(&self, grant: &GrantId) -> String {
        let credential = self.store.credential(grant).expect("a credential");
        self.cipher
            .open_secret(&credential.access_token, &Credential::aad(grant, TokenKind::Access))
            .unwrap()
            .expose()
            .to_owned()
    }
}
