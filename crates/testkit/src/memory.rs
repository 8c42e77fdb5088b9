//! Every storage port on in-memory maps. One `Mutex` guards all the data, so each method is
//! atomic as the real store's transactions are. Listings return everything in one page (a
//! numeric offset cursor), ordered as the port documents.

use async_trait::async_trait;
use custody_identity::app::{ApiKeyRecord, App};
use custody_identity::audit::{AuditEntry, AuditFilter};
use custody_identity::cipher::SealedBox;
use custody_identity::claims::ExtractedIdentity;
use custody_identity::idp::IdpConfig;
use custody_identity::ids::{ApiKeyId, AppId, UserId};
use custody_identity::page::{Page, PageRequest};
use custody_identity::ports::{
    ApiKeyStore, AppStore, AuditLog, CreateIdpError, IdpStore, LockGuard, ResolveUserError, StoreError, StoreHealth,
    UpdateIdpError, UserStore,
};
use custody_identity::signin::ports::{
    OidcClients, PutOidcClientError, SdkOutcome, SdkSessions, SignInStates, WalletSessions,
};
use custody_identity::signin::{
    OidcClient, SdkSession, SdkSessionId, SdkSessionStatus, SignInPurpose, SignInState, WalletSession,
};
use custody_identity::IdpId;
use custody_identity::{UnixTime, User, UserStatus};
use custody_vault::grant::{Credential, Grant, GrantId, GrantStatus, TokenKind};
use custody_vault::policy::{Policy, PolicyLookup};
use custody_vault::ports::{
    ConnectState, ConnectStates, CredentialStore, GrantFilter, GrantSelector, GrantStore, HandoutContext,
    HandoutContexts, HandoutView, IdpStamp, LifecycleChange, LifecycleEvent, LifecycleLedger, LifecycleOutcome,
    LifecyclePlan, Maintenance, OutboxItem, PolicyStore, ProviderStore, RevocationOutbox, RevokeScope, SaveGrantError,
    SealedKind, SealedValue, SealedValues,
};
use custody_vault::provider::{ProviderConfig, ProviderName};
use custody_vault::webhook::{
    ChangeWebhooksError, EnableWebhooksError, StoredSecret, WebhookRecord, WebhookStore, WebhookTarget,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Everything stored.
#[derive(Debug, Default)]
struct Data {
    apps: Vec<App>,
    api_keys: Vec<ApiKeyRecord>,
    idps: Vec<IdpConfig>,
    users: Vec<User>,
    /// Per user: when its status last changed through a lifecycle event (for ordering).
    status_changed_at: HashMap<UserId, i64>,
    /// Per user: groups removed by a lifecycle event, and when.
    group_removals: HashMap<UserId, BTreeMap<String, i64>>,
    providers: Vec<ProviderConfig>,
    policies: Vec<Policy>,
    grants: Vec<Grant>,
    credentials: HashMap<GrantId, Credential>,
    connect_states: HashMap<String, ConnectState>,
    outbox: Vec<(OutboxItem, UnixTime)>,
    webhook_events: HashMap<(AppId, String), UnixTime>,
    audit: Vec<AuditEntry>,
    oidc_clients: Vec<OidcClient>,
    sign_in_states: HashMap<String, SignInState>,
    sdk_sessions: HashMap<SdkSessionId, SdkSession>,
    wallet_sessions: HashMap<String, WalletSession>,
    /// Webhook settings, per identity provider configuration.
    webhooks: HashMap<IdpId, WebhookRecord>,
}

/// The storage ports of the identity, vault and sign-in domains, in memory. Arrange state
/// through the ports themselves (or the `insert_*` helpers), then read what a use case wrote
/// with the inspection helpers ([`MemoryStore::audit_actions`], [`MemoryStore::grant`], ...).
#[derive(Debug, Default)]
pub struct MemoryStore {
    data: Mutex<Data>,
    failing: std::sync::atomic::AtomicBool,
}

fn page<T: Clone>(items: Vec<T>, request: &PageRequest) -> Result<Page<T>, StoreError> {
    let start = match &request.cursor {
        None => 0,
        Some(cursor) => cursor.parse::<usize>().map_err(|_| StoreError::InvalidCursor)?,
    };
    let limit = request.limit() as usize;
    let rest: Vec<T> = items.into_iter().skip(start).collect();
    let next_cursor = (rest.len() > limit).then(|| (start + limit).to_string());
    Ok(Page { items: rest.into_iter().take(limit).collect(), next_cursor })
}

fn superseded_id(grant: &GrantId, kind: TokenKind, version: i64) -> String {
    format!("{grant}:superseded-{}:v{version}", token_kind_str(kind))
}

fn token_kind_str(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Access => "access",
        TokenKind::Refresh => "refresh",
    }
}

impl Data {
    /// The user's grant chosen by `selector`, with its policy and credential (as the store's
    /// `handout_view`).
    fn handout_view(&self, app: &AppId, user: &UserId, selector: &GrantSelector) -> Option<HandoutView> {
        let grant = match selector {
            GrantSelector::Provider(provider) => self.current_grant(app, user, provider),
            GrantSelector::Id(id) => {
                self.grants.iter().find(|g| &g.app_id == app && &g.user_id == user && &g.id == id).cloned()
            }
        };
        grant.map(|grant| {
            let policy = match self.policies.iter().find(|p| p.app_id == grant.app_id && p.provider == grant.provider) {
                Some(policy) => PolicyLookup::Found(policy.clone()),
                None => PolicyLookup::None,
            };
            let credential = self.credentials.get(&grant.id).cloned();
            HandoutView { grant, policy, credential }
        })
    }

    fn provider(&self, app: &AppId, name: &ProviderName) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| &p.app_id == app && &p.name == name)
    }

    fn outbox_item(
        &self,
        grant: &Grant,
        id: String,
        kind: TokenKind,
        token: SealedBox,
        now: UnixTime,
    ) -> Option<OutboxItem> {
        let provider = self.provider(&grant.app_id, &grant.provider)?;
        Some(OutboxItem {
            id,
            app_id: grant.app_id.clone(),
            grant_id: grant.id.clone(),
            provider: grant.provider.clone(),
            token_kind: kind,
            token,
            revocation_url: provider.revocation_url.clone()?,
            client_id: provider.client_id.clone(),
            client_secret: provider.client_secret.clone(),
            attempts: 0,
            next_attempt_at: now,
        })
    }

    fn queue(&mut self, item: Option<OutboxItem>, now: UnixTime) {
        if let Some(item) = item {
            if !self.outbox.iter().any(|(i, _)| i.id == item.id) {
                self.outbox.push((item, now));
            }
        }
    }

    /// `revoke_grants` inside an open "transaction".
    fn revoke_in_scope(&mut self, app: &AppId, scope: &RevokeScope, now: UnixTime) -> Vec<Grant> {
        let in_scope = |g: &Grant| {
            &g.app_id == app
                && g.status != GrantStatus::Revoked
                && match scope {
                    RevokeScope::Grant(id) => &g.id == id,
                    RevokeScope::Provider(p) => &g.provider == p,
                    RevokeScope::User(u) => &g.user_id == u,
                }
        };
        let mut revoked = Vec::new();
        for i in 0..self.grants.len() {
            if !in_scope(&self.grants[i]) {
                continue;
            }
            let grant = &mut self.grants[i];
            grant.status = GrantStatus::Revoked;
            grant.revoked_at = Some(now);
            grant.updated_at = now;
            let grant = grant.clone();
            if let Some(credential) = self.credentials.remove(&grant.id) {
                let access = self.outbox_item(
                    &grant,
                    format!("{}:{}", grant.id, token_kind_str(TokenKind::Access)),
                    TokenKind::Access,
                    credential.access_token,
                    now,
                );
                self.queue(access, now);
                if let Some(refresh) = credential.refresh_token {
                    let id = format!("{}:{}", grant.id, token_kind_str(TokenKind::Refresh));
                    let item = self.outbox_item(&grant, id, TokenKind::Refresh, refresh, now);
                    self.queue(item, now);
                }
            }
            revoked.push(grant);
        }
        revoked.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        revoked
    }

    fn current_grant(&self, app: &AppId, user: &UserId, provider: &ProviderName) -> Option<Grant> {
        let mine = self.grants.iter().filter(|g| &g.app_id == app && &g.user_id == user && &g.provider == provider);
        mine.clone()
            .find(|g| g.status == GrantStatus::Active)
            .or_else(|| mine.max_by_key(|g| (g.updated_at, g.id.clone())))
            .cloned()
    }

    fn user_mut(&mut self, app: &AppId, user: &UserId) -> Option<&mut User> {
        self.users.iter_mut().find(|u| &u.app_id == app && &u.id == user)
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn data(&self) -> Result<MutexGuard<'_, Data>, StoreError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the memory store is set to fail".into()));
        }
        Ok(self.data.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn peek(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// While set, every port method fails with [`StoreError::Unavailable`].
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stores a user as is (any status), replacing one with the same id.
    pub fn insert_user(&self, user: User) {
        let mut data = self.peek();
        data.users.retain(|u| u.id != user.id);
        data.users.push(user);
    }

    /// The app's user with `subject`, if any.
    pub fn user_by_subject(&self, app: &AppId, subject: &str) -> Option<User> {
        self.peek().users.iter().find(|u| &u.app_id == app && u.subject == subject).cloned()
    }

    pub fn user(&self, app: &AppId, user: &UserId) -> Option<User> {
        self.peek().users.iter().find(|u| &u.app_id == app && &u.id == user).cloned()
    }

    pub fn grant(&self, grant: &GrantId) -> Option<Grant> {
        self.peek().grants.iter().find(|g| &g.id == grant).cloned()
    }

    pub fn credential(&self, grant: &GrantId) -> Option<Credential> {
        self.peek().credentials.get(grant).cloned()
    }

    /// The outbox items, in the order they were queued.
    pub fn outbox_items(&self) -> Vec<OutboxItem> {
        self.peek().outbox.iter().map(|(i, _)| i.clone()).collect()
    }

    /// Every audit row, oldest first.
    pub fn audit_rows(&self) -> Vec<AuditEntry> {
        self.peek().audit.clone()
    }

    /// The actions of the audit rows, oldest first.
    pub fn audit_actions(&self) -> Vec<String> {
        self.peek().audit.iter().map(|a| a.action.clone()).collect()
    }

    pub fn sdk_session(&self, id: &SdkSessionId) -> Option<SdkSession> {
        self.peek().sdk_sessions.get(id).cloned()
    }

    pub fn wallet_session_count(&self) -> usize {
        self.peek().wallet_sessions.len()
    }

    pub fn sign_in_state_count(&self) -> usize {
        self.peek().sign_in_states.len()
    }
}

// ----- identity -----

#[async_trait]
impl StoreHealth for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.data().map(|_| ())
    }
}

#[async_trait]
impl AppStore for MemoryStore {
    async fn create_app(&self, app: &App, key: &ApiKeyRecord, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut data = self.data()?;
        data.apps.push(app.clone());
        data.api_keys.push(key.clone());
        data.audit.push(audit.clone());
        Ok(())
    }

    async fn list_apps(&self, request: &PageRequest) -> Result<Page<App>, StoreError> {
        let mut apps = self.data()?.apps.clone();
        apps.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        page(apps, request)
    }

    async fn get_app(&self, id: &AppId) -> Result<Option<App>, StoreError> {
        Ok(self.data()?.apps.iter().find(|a| &a.id == id).cloned())
    }

    async fn delete_app(&self, id: &AppId) -> Result<bool, StoreError> {
        let mut data = self.data()?;
        let before = data.apps.len();
        data.apps.retain(|a| &a.id != id);
        if data.apps.len() == before {
            return Ok(false);
        }
        data.api_keys.retain(|k| &k.app_id != id);
        data.idps.retain(|c| &c.app_id != id);
        data.users.retain(|u| &u.app_id != id);
        let gone: Vec<GrantId> = data.grants.iter().filter(|g| &g.app_id == id).map(|g| g.id.clone()).collect();
        for grant in &gone {
            data.credentials.remove(grant);
        }
        data.grants.retain(|g| &g.app_id != id);
        data.providers.retain(|p| &p.app_id != id);
        data.policies.retain(|p| &p.app_id != id);
        data.audit.retain(|a| &a.app_id != id);
        Ok(true)
    }
}

#[async_trait]
impl ApiKeyStore for MemoryStore {
    async fn create_api_key(&self, key: &ApiKeyRecord, audit: &AuditEntry) -> Result<bool, StoreError> {
        let mut data = self.data()?;
        if !data.apps.iter().any(|a| a.id == key.app_id) {
            return Ok(false);
        }
        data.api_keys.push(key.clone());
        data.audit.push(audit.clone());
        Ok(true)
    }

    async fn list_api_keys(&self, app: &AppId, request: &PageRequest) -> Result<Page<ApiKeyRecord>, StoreError> {
        let keys = self.data()?.api_keys.iter().filter(|k| &k.app_id == app).cloned().collect();
        page(keys, request)
    }

    async fn delete_api_key(&self, app: &AppId, key: &ApiKeyId, audit: &AuditEntry) -> Result<bool, StoreError> {
        let mut data = self.data()?;
        let before = data.api_keys.len();
        data.api_keys.retain(|k| !(&k.app_id == app && &k.id == key));
        let deleted = data.api_keys.len() != before;
        if deleted {
            data.audit.push(audit.clone());
        }
        Ok(deleted)
    }

    async fn find_api_key(&self, prefix: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        Ok(self.data()?.api_keys.iter().find(|k| k.prefix == prefix).cloned())
    }

    async fn find_api_key_with_idp(
        &self,
        prefix: &str,
    ) -> Result<Option<(ApiKeyRecord, Option<IdpConfig>)>, StoreError> {
        let data = self.data()?;
        Ok(data.api_keys.iter().find(|k| k.prefix == prefix).map(|k| {
            let idp = data.idps.iter().find(|c| c.app_id == k.app_id).cloned();
            (k.clone(), idp)
        }))
    }

    async fn touch_api_key(&self, key: &ApiKeyId, at: UnixTime) -> Result<(), StoreError> {
        if let Some(k) = self.data()?.api_keys.iter_mut().find(|k| &k.id == key) {
            k.last_used_at = Some(at);
        }
        Ok(())
    }
}

#[async_trait]
impl IdpStore for MemoryStore {
    async fn get_idp(&self, app: &AppId) -> Result<Option<IdpConfig>, StoreError> {
        Ok(self.data()?.idps.iter().find(|c| &c.app_id == app).cloned())
    }

    async fn create_idp(&self, config: &IdpConfig, audit: &AuditEntry) -> Result<(), CreateIdpError> {
        let mut data = self.data()?;
        if !data.apps.iter().any(|a| a.id == config.app_id) {
            return Err(CreateIdpError::AppNotFound);
        }
        if data.idps.iter().any(|c| c.app_id == config.app_id) {
            return Err(CreateIdpError::AlreadyConfigured);
        }
        data.idps.push(config.clone());
        data.audit.push(audit.clone());
        Ok(())
    }

    async fn update_idp(
        &self,
        config: &IdpConfig,
        expected_version: i64,
        audit: &AuditEntry,
    ) -> Result<(), UpdateIdpError> {
        let mut data = self.data()?;
        let stored = data.idps.iter_mut().find(|c| c.app_id == config.app_id).ok_or(UpdateIdpError::NotConfigured)?;
        if stored.version != expected_version {
            return Err(UpdateIdpError::VersionConflict);
        }
        let locked_at = stored.claims_locked_at;
        *stored = IdpConfig { claims_locked_at: locked_at, version: expected_version + 1, ..config.clone() };
        data.audit.push(audit.clone());
        Ok(())
    }

    async fn delete_idp(&self, app: &AppId, audit: &AuditEntry) -> Result<bool, StoreError> {
        let mut data = self.data()?;
        let before = data.idps.len();
        data.idps.retain(|c| &c.app_id != app);
        let deleted = data.idps.len() != before;
        if deleted {
            // The OIDC client and sessions belong to the configuration.
            data.oidc_clients.retain(|c| &c.app_id != app);
            data.wallet_sessions.retain(|_, s| &s.app_id != app);
            let remaining: Vec<IdpId> = data.idps.iter().map(|c| c.id.clone()).collect();
            data.webhooks.retain(|idp, _| remaining.contains(idp));
            data.audit.push(audit.clone());
        }
        Ok(deleted)
    }

    async fn oidc_client_id(&self, app: &AppId) -> Result<Option<String>, StoreError> {
        Ok(self.data()?.oidc_clients.iter().find(|c| &c.app_id == app).map(|c| c.client_id.as_str().to_owned()))
    }
}

#[async_trait]
impl UserStore for MemoryStore {
    async fn resolve_user(
        &self,
        app: &AppId,
        lock: LockGuard,
        identity: &ExtractedIdentity,
        token_issued_at: Option<UnixTime>,
        new_user_id: &UserId,
        now: UnixTime,
    ) -> Result<User, ResolveUserError> {
        let mut data = self.data()?;
        let idp = data.idps.iter_mut().find(|c| &c.app_id == app).ok_or(ResolveUserError::ConfigChanged)?;
        if lock.already_locked {
            if idp.claims_locked_at.is_none() || idp.version < lock.idp_version {
                return Err(ResolveUserError::ConfigChanged);
            }
        } else {
            // Lock the mappings only if they are still the ones the token was mapped with.
            if idp.version != lock.idp_version {
                return Err(ResolveUserError::ConfigChanged);
            }
            idp.claims_locked_at = idp.claims_locked_at.or(Some(now));
            idp.version += 1;
        }
        let existing = data.users.iter().position(|u| &u.app_id == app && u.subject == identity.subject);
        let index = match existing {
            Some(i) => i,
            None => {
                data.users.push(User {
                    id: new_user_id.clone(),
                    app_id: app.clone(),
                    subject: identity.subject.clone(),
                    status: UserStatus::Active,
                    email: None,
                    name: None,
                    groups: Default::default(),
                    roles: Default::default(),
                    created_at: now,
                    last_seen_at: None,
                });
                data.users.len() - 1
            }
        };
        let user_id = data.users[index].id.clone();
        let removals = data.group_removals.get(&user_id).cloned().unwrap_or_default();
        let user = &mut data.users[index];
        if user.status == UserStatus::Deprovisioned {
            return Ok(user.clone());
        }
        // A group removed by a lifecycle event comes back only with a token issued after it.
        user.groups = identity
            .groups
            .iter()
            .filter(|g| removals.get(*g).is_none_or(|removed| token_issued_at.is_some_and(|iat| iat.0 > *removed)))
            .cloned()
            .collect();
        user.roles = identity.roles.clone();
        user.email = identity.email.clone().or_else(|| user.email.clone());
        user.name = identity.name.clone().or_else(|| user.name.clone());
        user.last_seen_at = Some(now);
        Ok(user.clone())
    }

    async fn ensure_user(
        &self,
        app: &AppId,
        subject: &str,
        new_user_id: &UserId,
        now: UnixTime,
    ) -> Result<User, StoreError> {
        let mut data = self.data()?;
        if let Some(user) = data.users.iter().find(|u| &u.app_id == app && u.subject == subject) {
            return Ok(user.clone());
        }
        let user = User {
            id: new_user_id.clone(),
            app_id: app.clone(),
            subject: subject.to_owned(),
            status: UserStatus::Active,
            email: None,
            name: None,
            groups: Default::default(),
            roles: Default::default(),
            created_at: now,
            last_seen_at: None,
        };
        data.users.push(user.clone());
        Ok(user)
    }

    async fn get_user(&self, app: &AppId, user: &UserId) -> Result<Option<User>, StoreError> {
        Ok(self.data()?.users.iter().find(|u| &u.app_id == app && &u.id == user).cloned())
    }

    async fn list_users(
        &self,
        app: &AppId,
        status: Option<UserStatus>,
        request: &PageRequest,
    ) -> Result<Page<User>, StoreError> {
        let users = self
            .data()?
            .users
            .iter()
            .filter(|u| &u.app_id == app && status.is_none_or(|s| u.status == s))
            .cloned()
            .collect();
        page(users, request)
    }
}

#[async_trait]
impl AuditLog for MemoryStore {
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.data()?.audit.push(entry.clone());
        Ok(())
    }

    async fn list_audit(
        &self,
        app: &AppId,
        filter: &AuditFilter,
        request: &PageRequest,
    ) -> Result<Page<AuditEntry>, StoreError> {
        let mut rows: Vec<AuditEntry> = self
            .data()?
            .audit
            .iter()
            .filter(|a| &a.app_id == app)
            .filter(|a| filter.action.as_ref().is_none_or(|action| &a.action == action))
            .filter(|a| filter.user_id.as_ref().is_none_or(|u| a.user_id.as_ref() == Some(u)))
            .cloned()
            .collect();
        rows.reverse();
        page(rows, request)
    }
}

// ----- vault -----

#[async_trait]
impl ProviderStore for MemoryStore {
    async fn put_provider(&self, provider: &ProviderConfig, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut data = self.data()?;
        let created_at = data.provider(&provider.app_id, &provider.name).map(|p| p.created_at);
        data.providers.retain(|p| !(p.app_id == provider.app_id && p.name == provider.name));
        data.providers
            .push(ProviderConfig { created_at: created_at.unwrap_or(provider.created_at), ..provider.clone() });
        data.audit.push(audit.clone());
        Ok(())
    }

    async fn get_provider(&self, app: &AppId, name: &ProviderName) -> Result<Option<ProviderConfig>, StoreError> {
        Ok(self.data()?.provider(app, name).cloned())
    }

    async fn list_providers(&self, app: &AppId, request: &PageRequest) -> Result<Page<ProviderConfig>, StoreError> {
        let mut providers: Vec<ProviderConfig> =
            self.data()?.providers.iter().filter(|p| &p.app_id == app).cloned().collect();
        providers.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        page(providers, request)
    }

    async fn delete_provider(
        &self,
        app: &AppId,
        name: &ProviderName,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<Option<Vec<Grant>>, StoreError> {
        let mut data = self.data()?;
        if data.provider(app, name).is_none() {
            return Ok(None);
        }
        // Revoked first: the outbox items need the provider's revocation URL and client.
        let revoked = data.revoke_in_scope(app, &RevokeScope::Provider(name.clone()), now);
        data.providers.retain(|p| !(&p.app_id == app && &p.name == name));
        data.policies.retain(|p| !(&p.app_id == app && &p.provider == name));
        data.audit.push(audit.clone());
        Ok(Some(revoked))
    }
}

#[async_trait]
impl PolicyStore for MemoryStore {
    async fn put_policy(&self, policy: &Policy, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut data = self.data()?;
        data.policies.retain(|p| !(p.app_id == policy.app_id && p.provider == policy.provider));
        data.policies.push(policy.clone());
        data.audit.push(audit.clone());
        Ok(())
    }

    async fn get_policy(&self, app: &AppId, provider: &ProviderName) -> Result<PolicyLookup, StoreError> {
        let data = self.data()?;
        Ok(match data.policies.iter().find(|p| &p.app_id == app && &p.provider == provider) {
            Some(policy) => PolicyLookup::Found(policy.clone()),
            None => PolicyLookup::None,
        })
    }

    async fn list_policies(&self, app: &AppId, request: &PageRequest) -> Result<Page<Policy>, StoreError> {
        let mut policies: Vec<Policy> = self.data()?.policies.iter().filter(|p| &p.app_id == app).cloned().collect();
        policies.sort_by(|a, b| a.provider.as_str().cmp(b.provider.as_str()));
        page(policies, request)
    }

    async fn delete_policy(
        &self,
        app: &AppId,
        provider: &ProviderName,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut data = self.data()?;
        let before = data.policies.len();
        data.policies.retain(|p| !(&p.app_id == app && &p.provider == provider));
        let deleted = data.policies.len() != before;
        if deleted {
            data.audit.push(audit.clone());
        }
        Ok(deleted)
    }
}

#[async_trait]
impl GrantStore for MemoryStore {
    async fn get_grant(&self, app: &AppId, grant: &GrantId) -> Result<Option<Grant>, StoreError> {
        Ok(self.data()?.grants.iter().find(|g| &g.app_id == app && &g.id == grant).cloned())
    }

    async fn current_grant(
        &self,
        app: &AppId,
        user: &UserId,
        provider: &ProviderName,
    ) -> Result<Option<Grant>, StoreError> {
        Ok(self.data()?.current_grant(app, user, provider))
    }

    async fn list_grants(
        &self,
        app: &AppId,
        filter: &GrantFilter,
        request: &PageRequest,
    ) -> Result<Page<Grant>, StoreError> {
        let mut grants: Vec<Grant> = self
            .data()?
            .grants
            .iter()
            .filter(|g| &g.app_id == app)
            .filter(|g| filter.user_id.as_ref().is_none_or(|u| &g.user_id == u))
            .filter(|g| filter.provider.as_ref().is_none_or(|p| &g.provider == p))
            .filter(|g| filter.status.is_none_or(|s| g.status == s))
            .cloned()
            .collect();
        grants.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        page(grants, request)
    }

    async fn save_grant(
        &self,
        grant: &Grant,
        credential: &Credential,
        is_new: bool,
        audit: &AuditEntry,
    ) -> Result<(), SaveGrantError> {
        let mut data = self.data()?;
        let now = grant.updated_at;
        if is_new {
            let taken = data.grants.iter().any(|g| {
                g.app_id == grant.app_id
                    && g.user_id == grant.user_id
                    && g.provider == grant.provider
                    && g.status == GrantStatus::Active
            });
            if taken {
                return Err(SaveGrantError::Conflict);
            }
            data.grants.push(grant.clone());
        } else {
            let Some(stored) = data.grants.iter_mut().find(|g| g.id == grant.id && g.status == GrantStatus::Active)
            else {
                return Err(SaveGrantError::Conflict);
            };
            *stored = grant.clone();
            if let Some(old) = data.credentials.remove(&grant.id) {
                let access = data.outbox_item(
                    grant,
                    superseded_id(&grant.id, TokenKind::Access, old.version),
                    TokenKind::Access,
                    old.access_token,
                    now,
                );
                data.queue(access, now);
                if let Some(refresh) = old.refresh_token {
                    let id = superseded_id(&grant.id, TokenKind::Refresh, old.version);
                    let item = data.outbox_item(grant, id, TokenKind::Refresh, refresh, now);
                    data.queue(item, now);
                }
            }
        }
        data.credentials.insert(grant.id.clone(), credential.clone());
        data.audit.push(audit.clone());
        Ok(())
    }

    async fn revoke_grants(
        &self,
        app: &AppId,
        scope: &RevokeScope,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<Vec<Grant>, StoreError> {
        let mut data = self.data()?;
        let revoked = data.revoke_in_scope(app, scope, now);
        data.audit.push(audit.clone());
        Ok(revoked)
    }
}

#[async_trait]
impl HandoutContexts for MemoryStore {
    async fn handout_context(
        &self,
        key: &ApiKeyRecord,
        subject: &str,
        selector: &GrantSelector,
    ) -> Result<Option<HandoutContext>, StoreError> {
        let data = self.data()?;
        let stored = data.api_keys.iter().find(|k| k.prefix == key.prefix);
        if !stored.is_some_and(|stored| stored.id == key.id && stored.hash == key.hash) {
            return Ok(None);
        }
        let idp = data
            .idps
            .iter()
            .find(|c| c.app_id == key.app_id)
            .map(|c| IdpStamp { version: c.version, claims_locked: c.claims_locked() });
        let user = data.users.iter().find(|u| u.app_id == key.app_id && u.subject == subject).cloned();
        let view = user.as_ref().and_then(|u| data.handout_view(&key.app_id, &u.id, selector));
        Ok(Some(HandoutContext { idp, user, view }))
    }
}

#[async_trait]
impl CredentialStore for MemoryStore {
    async fn load_credential(&self, grant: &GrantId) -> Result<Option<Credential>, StoreError> {
        Ok(self.data()?.credentials.get(grant).cloned())
    }

    async fn handout_view(
        &self,
        app: &AppId,
        user: &UserId,
        selector: &GrantSelector,
    ) -> Result<Option<HandoutView>, StoreError> {
        Ok(self.data()?.handout_view(app, user, selector))
    }

    async fn replace_credential(
        &self,
        credential: &Credential,
        expected_version: i64,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut data = self.data()?;
        let Some(stored) = data.credentials.get(&credential.grant_id).cloned() else { return Ok(false) };
        if stored.version != expected_version {
            return Ok(false);
        }
        if let (Some(old), Some(grant)) =
            (&stored.refresh_token, data.grants.iter().find(|g| g.id == credential.grant_id).cloned())
        {
            if credential.refresh_token.as_ref() != Some(old) {
                let id = superseded_id(&grant.id, TokenKind::Refresh, expected_version);
                let item = data.outbox_item(&grant, id, TokenKind::Refresh, old.clone(), audit.at);
                data.queue(item, audit.at);
            }
        }
        data.credentials.insert(credential.grant_id.clone(), credential.clone());
        data.audit.push(audit.clone());
        Ok(true)
    }

    async fn expire_grant(
        &self,
        grant: &GrantId,
        credential_version: i64,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut data = self.data()?;
        if data.credentials.get(grant).is_none_or(|c| c.version != credential_version) {
            return Ok(false);
        }
        let Some(stored) = data.grants.iter_mut().find(|g| &g.id == grant && g.status == GrantStatus::Active) else {
            return Ok(false);
        };
        stored.status = GrantStatus::Expired;
        stored.updated_at = now;
        data.credentials.remove(grant);
        data.audit.push(audit.clone());
        Ok(true)
    }

    async fn record_handout(
        &self,
        grant: &GrantId,
        touch: Option<UnixTime>,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut data = self.data()?;
        if let (Some(at), Some(stored)) = (touch, data.grants.iter_mut().find(|g| &g.id == grant)) {
            stored.last_used_at = Some(at);
        }
        data.audit.push(audit.clone());
        Ok(())
    }
}

#[async_trait]
impl LifecycleLedger for MemoryStore {
    async fn deprovision_user(
        &self,
        app: &AppId,
        user: &UserId,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<Option<(User, Vec<Grant>)>, StoreError> {
        let mut data = self.data()?;
        let Some(stored) = data.user_mut(app, user) else { return Ok(None) };
        if stored.status == UserStatus::Deprovisioned {
            return Ok(Some((stored.clone(), Vec::new())));
        }
        stored.status = UserStatus::Deprovisioned;
        let stored = stored.clone();
        data.connect_states.retain(|_, s| &s.user_id != user);
        let revoked = data.revoke_in_scope(app, &RevokeScope::User(user.clone()), now);
        data.audit.push(audit.clone());
        Ok(Some((stored, revoked)))
    }

    async fn apply_lifecycle_event(
        &self,
        app: &AppId,
        event: &LifecycleEvent,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<LifecycleOutcome, StoreError> {
        let mut data = self.data()?;
        let key = (app.clone(), event.event_id.clone());
        if data.webhook_events.contains_key(&key) {
            return Ok(LifecycleOutcome::Duplicate);
        }
        data.webhook_events.insert(key, now);
        let Some(user) = data.users.iter().find(|u| &u.app_id == app && u.subject == event.subject).cloned() else {
            return Ok(LifecycleOutcome::Ignored("the subject is not a known user".into()));
        };
        let occurred_at = event.occurred_at.0;
        let changed_at = data.status_changed_at.get(&user.id).copied();
        let mut revoked = Vec::new();
        let user = match event.change.plan(user.status, changed_at, occurred_at) {
            LifecyclePlan::Ignore(reason) => return Ok(LifecycleOutcome::Ignored(reason.to_owned())),
            LifecyclePlan::Status(next) => {
                data.status_changed_at.insert(user.id.clone(), occurred_at);
                if next == UserStatus::Deprovisioned {
                    data.connect_states.retain(|_, s| s.user_id != user.id);
                    revoked = data.revoke_in_scope(app, &RevokeScope::User(user.id.clone()), now);
                }
                User { status: next, ..user }
            }
            LifecyclePlan::RemoveGroup => {
                let LifecycleChange::RemoveGroup(group) = &event.change else {
                    return Err(StoreError::Unavailable("unexpected lifecycle change".into()));
                };
                let mut groups = user.groups.clone();
                groups.remove(group);
                data.group_removals.entry(user.id.clone()).or_default().insert(group.clone(), occurred_at);
                User { groups, ..user }
            }
            LifecyclePlan::Profile => {
                let LifecycleChange::Profile { email, name } = &event.change else {
                    return Err(StoreError::Unavailable("unexpected lifecycle change".into()));
                };
                let email = email.clone().or_else(|| user.email.clone());
                let name = name.clone().or_else(|| user.name.clone());
                User { email, name, ..user }
            }
        };
        if let Some(stored) = data.user_mut(app, &user.id) {
            *stored = user.clone();
        }
        data.audit.push(AuditEntry { user_id: Some(user.id.clone()), ..audit.clone() });
        Ok(LifecycleOutcome::Applied { user, revoked })
    }
}

#[async_trait]
impl Maintenance for MemoryStore {
    async fn prune_webhook_events(&self, before: UnixTime) -> Result<u64, StoreError> {
        let mut data = self.data()?;
        let count = data.webhook_events.len();
        data.webhook_events.retain(|_, at| *at >= before);
        Ok((count - data.webhook_events.len()) as u64)
    }

    async fn prune_audit(&self, before: UnixTime, limit: u32) -> Result<u64, StoreError> {
        let mut data = self.data()?;
        // The `limit` oldest rows (in insertion order, as the real store's index order), of
        // which those older than `before` go.
        let mut deleted = 0;
        let mut kept = Vec::new();
        for (i, row) in std::mem::take(&mut data.audit).into_iter().enumerate() {
            if i < limit as usize && row.at < before {
                deleted += 1;
            } else {
                kept.push(row);
            }
        }
        data.audit = kept;
        Ok(deleted)
    }
}

#[async_trait]
impl SealedValues for MemoryStore {
    async fn sealed_values(
        &self,
        kind: SealedKind,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SealedValue>, StoreError> {
        let data = self.data()?;
        let mut values: Vec<SealedValue> = match kind {
            SealedKind::CredentialAccess => data
                .credentials
                .values()
                .map(|c| SealedValue {
                    kind,
                    cursor: c.grant_id.to_string(),
                    associated_data: Credential::aad(&c.grant_id, TokenKind::Access),
                    sealed: c.access_token.clone(),
                })
                .collect(),
            SealedKind::CredentialRefresh => data
                .credentials
                .values()
                .filter_map(|c| {
                    Some(SealedValue {
                        kind,
                        cursor: c.grant_id.to_string(),
                        associated_data: Credential::aad(&c.grant_id, TokenKind::Refresh),
                        sealed: c.refresh_token.clone()?,
                    })
                })
                .collect(),
            SealedKind::ProviderSecret => data
                .providers
                .iter()
                .map(|p| SealedValue {
                    kind,
                    cursor: format!("{}/{}", p.app_id, p.name),
                    associated_data: ProviderConfig::secret_aad(&p.app_id, &p.name),
                    sealed: p.client_secret.clone(),
                })
                .collect(),
            SealedKind::ConnectVerifier => data
                .connect_states
                .values()
                .map(|s| SealedValue {
                    kind,
                    cursor: s.state_hash.clone(),
                    associated_data: ConnectState::verifier_aad(&s.state_hash),
                    sealed: s.pkce_verifier.clone(),
                })
                .collect(),
            // Outbox tokens, instance and webhook secrets are not kept by the memory store.
            SealedKind::OutboxToken
            | SealedKind::OutboxClientSecret
            | SealedKind::InstanceSecret
            | SealedKind::WebhookSecret => Vec::new(),
        };
        values.sort_by(|a, b| a.cursor.cmp(&b.cursor));
        Ok(values.into_iter().filter(|v| after.is_none_or(|a| v.cursor.as_str() > a)).take(limit as usize).collect())
    }

    async fn replace_sealed(&self, value: &SealedValue, new: &SealedBox) -> Result<bool, StoreError> {
        let mut data = self.data()?;
        let slot: Option<&mut SealedBox> = match value.kind {
            SealedKind::CredentialAccess => {
                data.credentials.values_mut().find(|c| c.grant_id.as_str() == value.cursor).map(|c| &mut c.access_token)
            }
            SealedKind::CredentialRefresh => data
                .credentials
                .values_mut()
                .find(|c| c.grant_id.as_str() == value.cursor)
                .and_then(|c| c.refresh_token.as_mut()),
            SealedKind::ProviderSecret => data
                .providers
                .iter_mut()
                .find(|p| format!("{}/{}", p.app_id, p.name) == value.cursor)
                .map(|p| &mut p.client_secret),
            SealedKind::ConnectVerifier => data.connect_states.get_mut(&value.cursor).map(|s| &mut s.pkce_verifier),
            _ => None,
        };
        match slot {
            Some(slot) if *slot == value.sealed => {
                *slot = new.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl ConnectStates for MemoryStore {
    async fn create_connect_state(&self, state: &ConnectState) -> Result<(), StoreError> {
        self.data()?.connect_states.insert(state.state_hash.clone(), state.clone());
        Ok(())
    }

    async fn peek_connect_state(&self, state_hash: &str) -> Result<Option<ConnectState>, StoreError> {
        Ok(self.data()?.connect_states.get(state_hash).cloned())
    }

    async fn bind_connect_state(&self, state_hash: &str, browser_hash: &str) -> Result<bool, StoreError> {
        let mut data = self.data()?;
        match data.connect_states.get_mut(state_hash) {
            Some(state) if state.browser_hash.is_none() => {
                state.browser_hash = Some(browser_hash.to_owned());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn consume_connect_state(&self, state_hash: &str) -> Result<Option<ConnectState>, StoreError> {
        Ok(self.data()?.connect_states.remove(state_hash))
    }
}

#[async_trait]
impl RevocationOutbox for MemoryStore {
    async fn due_revocations(&self, now: UnixTime, limit: u32) -> Result<Vec<OutboxItem>, StoreError> {
        let data = self.data()?;
        let mut due: Vec<&(OutboxItem, UnixTime)> =
            data.outbox.iter().filter(|(i, _)| i.next_attempt_at <= now).collect();
        due.sort_by_key(|(i, created)| (i.next_attempt_at, *created));
        Ok(due.into_iter().take(limit as usize).map(|(i, _)| i.clone()).collect())
    }

    async fn finish_revocation(&self, id: &str, audit: Option<&AuditEntry>) -> Result<(), StoreError> {
        let mut data = self.data()?;
        data.outbox.retain(|(i, _)| i.id != id);
        if let Some(audit) = audit {
            data.audit.push(audit.clone());
        }
        Ok(())
    }

    async fn queue_revocations(&self, items: &[OutboxItem], now: UnixTime) -> Result<(), StoreError> {
        let mut data = self.data()?;
        for item in items {
            data.queue(Some(item.clone()), now);
        }
        Ok(())
    }

    async fn retry_revocation(&self, id: &str, attempts: i32, next_attempt_at: UnixTime) -> Result<(), StoreError> {
        if let Some((item, _)) = self.data()?.outbox.iter_mut().find(|(i, _)| i.id == id) {
            item.attempts = attempts;
            item.next_attempt_at = next_attempt_at;
        }
        Ok(())
    }
}

// ----- sign-in -----

#[async_trait]
impl OidcClients for MemoryStore {
    async fn put_oidc_client(&self, client: &OidcClient, audit: &AuditEntry) -> Result<(), PutOidcClientError> {
        let mut data = self.data()?;
        if !data.idps.iter().any(|c| c.app_id == client.app_id && c.id == client.idp_id) {
            return Err(PutOidcClientError::IdpChanged);
        }
        let created_at = data.oidc_clients.iter().find(|c| c.app_id == client.app_id).map(|c| c.created_at);
        data.oidc_clients.retain(|c| c.app_id != client.app_id);
        data.oidc_clients.push(OidcClient { created_at: created_at.unwrap_or(client.created_at), ..client.clone() });
        data.audit.push(audit.clone());
        Ok(())
    }

    async fn get_oidc_client(&self, app: &AppId) -> Result<Option<OidcClient>, StoreError> {
        Ok(self.data()?.oidc_clients.iter().find(|c| &c.app_id == app).cloned())
    }

    async fn delete_oidc_client(&self, app: &AppId, audit: &AuditEntry) -> Result<bool, StoreError> {
        let mut data = self.data()?;
        let before = data.oidc_clients.len();
        data.oidc_clients.retain(|c| &c.app_id != app);
        let deleted = data.oidc_clients.len() != before;
        if deleted {
            data.sign_in_states.retain(|_, s| &s.app_id != app);
            data.audit.push(audit.clone());
        }
        Ok(deleted)
    }

    async fn oidc_client_secrets(
        &self,
        after: Option<&AppId>,
        limit: u32,
    ) -> Result<Vec<(AppId, SealedBox)>, StoreError> {
        let mut secrets: Vec<(AppId, SealedBox)> =
            self.data()?.oidc_clients.iter().map(|c| (c.app_id.clone(), c.client_secret.clone())).collect();
        secrets.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(secrets.into_iter().filter(|(app, _)| after.is_none_or(|a| app > a)).take(limit as usize).collect())
    }

    async fn replace_oidc_client_secret(
        &self,
        app: &AppId,
        old: &SealedBox,
        new: &SealedBox,
    ) -> Result<bool, StoreError> {
        let mut data = self.data()?;
        match data.oidc_clients.iter_mut().find(|c| &c.app_id == app) {
            Some(client) if &client.client_secret == old => {
                client.client_secret = new.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl SignInStates for MemoryStore {
    async fn create_sign_in(&self, state: &SignInState, session: Option<&SdkSession>) -> Result<bool, StoreError> {
        let mut data = self.data()?;
        if !data.oidc_clients.iter().any(|c| c.app_id == state.app_id) {
            return Ok(false);
        }
        let horizon = state.created_at.plus_seconds(-86_400);
        data.sign_in_states.retain(|_, s| s.expires_at >= horizon);
        data.sdk_sessions.retain(|_, s| s.expires_at >= horizon);
        data.sign_in_states.insert(state.state_hash.clone(), state.clone());
        if let Some(session) = session {
            data.sdk_sessions.insert(session.id.clone(), session.clone());
        }
        Ok(true)
    }

    async fn consume_sign_in_state(
        &self,
        state_hash: &str,
        purpose: SignInPurpose,
    ) -> Result<Option<SignInState>, StoreError> {
        let mut data = self.data()?;
        if data.sign_in_states.get(state_hash).is_none_or(|s| s.purpose != purpose) {
            return Ok(None);
        }
        Ok(data.sign_in_states.remove(state_hash))
    }
}

#[async_trait]
impl SdkSessions for MemoryStore {
    async fn get_sdk_session(&self, app: &AppId, id: &SdkSessionId) -> Result<Option<SdkSession>, StoreError> {
        Ok(self.data()?.sdk_sessions.get(id).filter(|s| &s.app_id == app).cloned())
    }

    async fn finish_sdk_session(
        &self,
        id: &SdkSessionId,
        outcome: SdkOutcome<'_>,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut data = self.data()?;
        let Some(session) = data.sdk_sessions.get_mut(id).filter(|s| s.status == SdkSessionStatus::Pending) else {
            return Ok(false);
        };
        match outcome {
            SdkOutcome::Complete { user, token } => {
                session.status = SdkSessionStatus::Complete;
                session.user_id = Some(user.clone());
                session.user_token = Some(token.clone());
            }
            SdkOutcome::Failed(failure) => {
                session.status = SdkSessionStatus::Failed;
                session.error = Some(failure);
            }
        }
        session.completed_at = Some(now);
        data.audit.push(audit.clone());
        Ok(true)
    }

    async fn take_sdk_token(
        &self,
        app: &AppId,
        id: &SdkSessionId,
        now: UnixTime,
    ) -> Result<Option<SealedBox>, StoreError> {
        let mut data = self.data()?;
        let Some(session) =
            data.sdk_sessions.get_mut(id).filter(|s| &s.app_id == app && s.status == SdkSessionStatus::Complete)
        else {
            return Ok(None);
        };
        let token = session.user_token.take();
        if token.is_some() {
            session.token_delivered_at = Some(now);
        }
        Ok(token)
    }
}

#[async_trait]
impl WalletSessions for MemoryStore {
    async fn create_wallet_session(&self, session: &WalletSession, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut data = self.data()?;
        data.wallet_sessions.retain(|_, s| s.expires_at >= session.created_at);
        data.wallet_sessions.insert(session.id_hash.clone(), session.clone());
        data.audit.push(audit.clone());
        Ok(())
    }

    async fn get_wallet_session(&self, id_hash: &str) -> Result<Option<WalletSession>, StoreError> {
        Ok(self.data()?.wallet_sessions.get(id_hash).cloned())
    }

    async fn delete_wallet_session(&self, id_hash: &str, audit: Option<&AuditEntry>) -> Result<bool, StoreError> {
        let mut data = self.data()?;
        let deleted = data.wallet_sessions.remove(id_hash).is_some();
        if let (true, Some(audit)) = (deleted, audit) {
            data.audit.push(audit.clone());
        }
        Ok(deleted)
    }
}

// ----- webhooks -----

impl Data {
    /// The webhook settings of `app` if its identity provider is still `idp`.
    fn webhook_record(&mut self, app: &AppId, idp: &IdpId) -> Option<&mut WebhookRecord> {
        if !self.idps.iter().any(|c| &c.app_id == app && &c.id == idp) {
            return None;
        }
        Some(self.webhooks.entry(idp.clone()).or_insert(WebhookRecord {
            enabled: false,
            secret: None,
            rotated_at: None,
        }))
    }
}

#[async_trait]
impl WebhookStore for MemoryStore {
    async fn webhook_target(&self, app: &AppId) -> Result<Option<WebhookTarget>, StoreError> {
        let data = self.data()?;
        Ok(data.idps.iter().find(|c| &c.app_id == app).map(|c| WebhookTarget {
            idp_id: c.id.clone(),
            kind: c.kind.clone(),
            record: data.webhooks.get(&c.id).cloned(),
        }))
    }

    async fn enable_webhooks(
        &self,
        app: &AppId,
        idp: &IdpId,
        secret: &StoredSecret,
        _now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<(), EnableWebhooksError> {
        let mut data = self.data()?;
        let record = data.webhook_record(app, idp).ok_or(EnableWebhooksError::NotConfigured)?;
        if record.enabled {
            return Err(EnableWebhooksError::AlreadyEnabled);
        }
        *record = WebhookRecord { enabled: true, secret: Some(secret.clone()), rotated_at: None };
        data.audit.push(audit.clone());
        Ok(())
    }

    async fn rotate_webhook_secret(
        &self,
        app: &AppId,
        idp: &IdpId,
        secret: &StoredSecret,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<(), ChangeWebhooksError> {
        let mut data = self.data()?;
        let record = data.webhook_record(app, idp).ok_or(ChangeWebhooksError::NotConfigured)?;
        if !record.enabled {
            return Err(ChangeWebhooksError::NotEnabled);
        }
        record.secret = Some(secret.clone());
        record.rotated_at = Some(now);
        data.audit.push(audit.clone());
        Ok(())
    }

    async fn disable_webhooks(
        &self,
        app: &AppId,
        idp: &IdpId,
        _now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<(), ChangeWebhooksError> {
        let mut data = self.data()?;
        let record = data.webhook_record(app, idp).ok_or(ChangeWebhooksError::NotConfigured)?;
        if !record.enabled {
            return Err(ChangeWebhooksError::NotEnabled);
        }
        *record = WebhookRecord { enabled: false, secret: None, rotated_at: record.rotated_at };
        data.audit.push(audit.clone());
        Ok(())
    }
}
