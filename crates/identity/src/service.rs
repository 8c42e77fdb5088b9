//! Identity use cases: apps and API keys, the IdP configuration life cycle, and turning a user
//! token into a known, active user. The server calls these; they reach the world only through
//! the ports they are built with.

use crate::app::{api_key_prefix, ApiKeyRecord, App, AppName, API_KEY_PREFIX_LEN};
use crate::audit::{Actor, AuditEntry, AuditFilter};
use crate::claims::ClaimMappings;
use crate::idp::{ClaimMappingsLocked, IdpConfig, IdpEndpoints, IdpKind, IdpPatch, RequestedClaims};
use crate::ids::{ApiKeyId, AppId, IdpId, UserId};
use crate::issuer::{InvalidIssuerUrl, Issuer, IssuerUrl, IssuerUrlPolicy};
use crate::jwt::{
    audience_contains, precheck_issuer, strip_bearer_scheme, validate_claims, ClaimExpectations, TokenRejection,
    VerifiedClaims,
};
use crate::kinds::{IdpAdapter, IdpKinds, SecretSource};
use crate::page::{Page, PageRequest};
use crate::ports::{
    ApiKeyStore, AppStore, AuditLog, Clock, CreateIdpError, Discovery, DiscoveryDocument, DiscoveryError, FetchedKeys,
    IdpStore, LockGuard, Random, ResolveUserError, SecretHasher, StoreError, StoreHealth, TokenVerifier,
    UpdateIdpError, UserStore,
};
use crate::user::{User, UserRefused, UserStatus};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use std::fmt;
use std::sync::Arc;

/// Hash purpose for API keys, so an API key hash can never stand in for another secret's.
pub const API_KEY_PURPOSE: &str = "api-key";

/// A freshly generated API key: shown once, then only its hash exists.
#[derive(Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub record: ApiKeyRecord,
    /// The whole key, to return in the creating response and nowhere else.
    pub secret: String,
}

impl fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewApiKey").field("record", &self.record).field("secret", &"[redacted]").finish()
    }
}

/// The outcome of discovering an issuer: what would be stored, plus what the operator can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredIdp {
    pub kind: IdpKind,
    /// The kind's name for people (`Auth0`).
    pub label: &'static str,
    /// Where the kind's webhook secret would come from.
    pub webhook_secret: SecretSource,
    pub document: DiscoveryDocument,
    pub claims: ClaimMappings,
}

/// Errors of [`IdentityService::discover`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoverError {
    #[error(transparent)]
    InvalidIssuerUrl(#[from] InvalidIssuerUrl),
    #[error(transparent)]
    Failed(#[from] DiscoveryError),
    /// The requested kind has no adapter.
    #[error("kind: unknown identity provider kind `{kind}`; use one of {known}, or omit it to detect the kind")]
    UnknownKind { kind: IdpKind, known: String },
}

/// Errors of [`IdentityService::add_idp`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddIdpError {
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    #[error("the app already has an identity provider")]
    AlreadyConfigured,
    #[error("the app does not exist")]
    AppNotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Errors of [`IdentityService::patch_idp`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchIdpError {
    #[error("the app has no identity provider")]
    NotConfigured,
    #[error(transparent)]
    Locked(#[from] ClaimMappingsLocked),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Errors of [`IdentityService::resolve_user`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("the app has no identity provider")]
    NotConfigured,
    #[error(transparent)]
    InvalidToken(#[from] TokenRejection),
    #[error(transparent)]
    Refused(#[from] UserRefused),
    /// The configuration changed between verification and resolution; verify again.
    #[error("the identity provider configuration changed while resolving the user")]
    ConfigChanged,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A request to add an IdP to an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddIdp {
    pub issuer_url: String,
    pub audience: Option<String>,
    pub kind: Option<IdpKind>,
    pub claims: RequestedClaims,
}

/// Settings of the identity use cases.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    pub issuer_policy: IssuerUrlPolicy,
    pub leeway_secs: i64,
    /// The identity-provider adapters this build registers (`custody_providers::idp::registry`).
    pub kinds: IdpKinds,
}

/// The ports the identity use cases run on: the storage roles they use, and the outside world.
#[derive(Clone)]
pub struct IdentityPorts {
    /// Whether the database answers (`/readyz`).
    pub health: Arc<dyn StoreHealth>,
    pub apps: Arc<dyn AppStore>,
    pub api_keys: Arc<dyn ApiKeyStore>,
    pub idps: Arc<dyn IdpStore>,
    pub users: Arc<dyn UserStore>,
    pub discovery: Arc<dyn Discovery>,
    pub verifier: Arc<dyn TokenVerifier>,
    pub clock: Arc<dyn Clock>,
    pub random: Arc<dyn Random>,
    pub hasher: Arc<dyn SecretHasher>,
    /// The operator's audit reads.
    pub audit: Arc<dyn AuditLog>,
}

impl fmt::Debug for IdentityPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityPorts").finish_non_exhaustive()
    }
}

/// The identity use cases over their ports.
#[derive(Clone)]
pub struct IdentityService {
    health: Arc<dyn StoreHealth>,
    apps: Arc<dyn AppStore>,
    api_keys: Arc<dyn ApiKeyStore>,
    idps: Arc<dyn IdpStore>,
    users: Arc<dyn UserStore>,
    discovery: Arc<dyn Discovery>,
    verifier: Arc<dyn TokenVerifier>,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    hasher: Arc<dyn SecretHasher>,
    audit: Arc<dyn AuditLog>,
    settings: IdentitySettings,
}

impl fmt::Debug for IdentityService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityService").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl IdentityService {
    pub fn new(ports: IdentityPorts, settings: IdentitySettings) -> Self {
        let IdentityPorts { health, apps, api_keys, idps, users, discovery, verifier, clock, random, hasher, audit } =
            ports;
        Self { health, apps, api_keys, idps, users, discovery, verifier, clock, random, hasher, audit, settings }
    }

    /// The registered identity-provider kinds.
    pub fn kinds(&self) -> &IdpKinds {
        &self.settings.kinds
    }

    /// The adapter of a stored configuration's kind.
    pub fn kind_adapter(&self, kind: &IdpKind) -> &dyn IdpAdapter {
        self.settings.kinds.adapter(kind)
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn random(&self) -> &Arc<dyn Random> {
        &self.random
    }

    fn new_id(&self) -> String {
        self.random.uuid()
    }

    /// An audit entry for an operator's action on `app`, stamped now.
    pub fn audit(&self, app: &AppId, action: &str, actor: &str, detail: Option<String>) -> AuditEntry {
        AuditEntry {
            detail,
            ..AuditEntry::new(self.random.ordered_uuid(), app.clone(), self.clock.now(), action, actor)
        }
    }

    fn generate_api_key(&self, app: &AppId) -> NewApiKey {
        let prefix: String = self.random.bytes(API_KEY_PREFIX_LEN / 2).iter().map(|b| format!("{b:02x}")).collect();
        let secret_part = URL_SAFE_NO_PAD.encode(self.random.bytes(32));
        let secret = format!("ck_{prefix}_{secret_part}");
        let hash = self.hasher.hash(API_KEY_PURPOSE, secret.as_bytes());
        let id = ApiKeyId::parse(&self.new_id()).unwrap_or_else(|_| unreachable_uuid());
        NewApiKey {
            record: ApiKeyRecord {
                id,
                app_id: app.clone(),
                prefix,
                hash,
                created_at: self.clock.now(),
                last_used_at: None,
            },
            secret,
        }
    }

    /// Creates an app and its first API key.
    pub async fn create_app(&self, name: AppName, actor: &Actor) -> Result<(App, NewApiKey), StoreError> {
        let id = AppId::parse(&self.new_id()).unwrap_or_else(|_| unreachable_uuid());
        let app = App { id: id.clone(), name, created_at: self.clock.now() };
        let key = self.generate_api_key(&id);
        let audit = self.audit(&id, "app.create", actor.as_str(), Some(format!("app `{}` created", app.name.as_str())));
        self.apps.create_app(&app, &key.record, &audit).await?;
        Ok((app, key))
    }

    /// Adds an API key; `None` when the app does not exist.
    pub async fn create_api_key(&self, app: &AppId, actor: &Actor) -> Result<Option<NewApiKey>, StoreError> {
        let key = self.generate_api_key(app);
        let audit =
            self.audit(app, "api_key.create", actor.as_str(), Some(format!("key {} created", key.record.prefix)));
        Ok(self.api_keys.create_api_key(&key.record, &audit).await?.then_some(key))
    }

    /// Deletes an API key; `false` when the app has no such key.
    pub async fn delete_api_key(&self, app: &AppId, key: &ApiKeyId, actor: &Actor) -> Result<bool, StoreError> {
        let audit = self.audit(app, "api_key.delete", actor.as_str(), Some(format!("key {key} deleted")));
        self.api_keys.delete_api_key(app, key, &audit).await
    }

    /// The key record a presented API key belongs to, or `None` when it is not a live key.
    pub async fn authenticate_api_key(&self, presented: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let Some(prefix) = api_key_prefix(presented) else { return Ok(None) };
        let Some(record) = self.api_keys.find_api_key(prefix).await? else { return Ok(None) };
        Ok(self.key_matches(presented, &record).then_some(record))
    }

    /// As [`Self::authenticate_api_key`], with the app's identity provider configuration read
    /// in the same statement (for [`Self::resolve_user_under`]).
    pub async fn authenticate_api_key_with_idp(
        &self,
        presented: &str,
    ) -> Result<Option<(ApiKeyRecord, Option<IdpConfig>)>, StoreError> {
        let Some(prefix) = api_key_prefix(presented) else { return Ok(None) };
        let Some((record, idp)) = self.api_keys.find_api_key_with_idp(prefix).await? else { return Ok(None) };
        Ok(self.key_matches(presented, &record).then_some((record, idp)))
    }

    /// Whether `presented` is the key `record` was made for (its keyed hash matches), for callers
    /// that remember records between requests.
    pub fn key_matches(&self, presented: &str, record: &ApiKeyRecord) -> bool {
        self.hasher.verify(API_KEY_PURPOSE, presented.as_bytes(), &record.hash)
    }

    /// Fetches and checks an issuer's discovery document; stores nothing.
    pub async fn discover(
        &self,
        issuer_url: &str,
        kind_override: Option<IdpKind>,
    ) -> Result<DiscoveredIdp, DiscoverError> {
        let url = IssuerUrl::parse(issuer_url, self.settings.issuer_policy)?;
        let requested = match &kind_override {
            Some(kind) => Some(self.settings.kinds.get(kind).ok_or_else(|| DiscoverError::UnknownKind {
                kind: kind.clone(),
                known: self.settings.kinds.names(),
            })?),
            None => None,
        };
        let document = self.discovery.discover(&url).await?;
        let adapter = requested.unwrap_or_else(|| self.settings.kinds.detect(&url));
        Ok(DiscoveredIdp {
            kind: adapter.kind(),
            label: adapter.label(),
            webhook_secret: adapter.webhook_secret(),
            claims: adapter.default_claims(),
            document,
        })
    }

    /// Discovers the issuer again and stores the app's IdP configuration; nothing is stored if
    /// discovery fails.
    pub async fn add_idp(&self, app: &AppId, request: AddIdp, actor: &Actor) -> Result<IdpConfig, AddIdpError> {
        if self.apps.get_app(app).await?.is_none() {
            return Err(AddIdpError::AppNotFound);
        }
        if self.idps.get_idp(app).await?.is_some() {
            return Err(AddIdpError::AlreadyConfigured);
        }
        let discovered = self.discover(&request.issuer_url, request.kind).await?;
        let config = IdpConfig {
            id: IdpId::parse(&self.new_id()).unwrap_or_else(|_| unreachable_uuid()),
            app_id: app.clone(),
            kind: discovered.kind,
            issuer: Issuer::new(discovered.document.issuer.clone()),
            jwks_uri: discovered.document.jwks_uri.clone(),
            audience: request.audience,
            claims: request.claims.over(&discovered.claims),
            claims_locked_at: None,
            version: 1,
            created_at: self.clock.now(),
            endpoints: IdpEndpoints {
                authorization_endpoint: discovered.document.authorization_endpoint,
                token_endpoint: discovered.document.token_endpoint,
                end_session_endpoint: discovered.document.end_session_endpoint,
            },
        };
        let audit = self.audit(
            app,
            "idp.create",
            actor.as_str(),
            Some(format!("{} identity provider {} added", config.kind.as_str(), config.issuer)),
        );
        match self.idps.create_idp(&config, &audit).await {
            Ok(()) => Ok(config),
            Err(CreateIdpError::AlreadyConfigured) => Err(AddIdpError::AlreadyConfigured),
            Err(CreateIdpError::AppNotFound) => Err(AddIdpError::AppNotFound),
            Err(CreateIdpError::Store(e)) => Err(e.into()),
        }
    }

    /// Applies an operator's change, refusing changes to locked mappings. A concurrent change
    /// (including the first sign-in locking the mappings) makes it re-read and re-decide.
    pub async fn patch_idp(&self, app: &AppId, patch: &IdpPatch, actor: &Actor) -> Result<IdpConfig, PatchIdpError> {
        for _ in 0..8 {
            let current = self.idps.get_idp(app).await?.ok_or(PatchIdpError::NotConfigured)?;
            let next = patch.apply(&current)?;
            if next == current {
                return Ok(current);
            }
            let audit =
                self.audit(app, "idp.update", actor.as_str(), Some("identity provider settings changed".into()));
            match self.idps.update_idp(&next, current.version, &audit).await {
                Ok(()) => {
                    self.verifier.forget(&current).await;
                    return Ok(next);
                }
                Err(UpdateIdpError::VersionConflict) => continue,
                Err(UpdateIdpError::NotConfigured) => return Err(PatchIdpError::NotConfigured),
                Err(UpdateIdpError::Store(e)) => return Err(e.into()),
            }
        }
        Err(StoreError::Unavailable("the identity provider kept changing concurrently".into()).into())
    }

    /// Removes the app's IdP configuration; `false` when there was none.
    pub async fn delete_idp(&self, app: &AppId, actor: &Actor) -> Result<bool, StoreError> {
        let current = self.idps.get_idp(app).await?;
        let audit = self.audit(app, "idp.delete", actor.as_str(), Some("identity provider removed".into()));
        let deleted = self.idps.delete_idp(app, &audit).await?;
        if let Some(config) = current {
            self.verifier.forget(&config).await;
        }
        Ok(deleted)
    }

    /// Verifies a user token for `config` and checks its registered claims at the current time.
    pub async fn verify_token(&self, config: &IdpConfig, token: &str) -> Result<VerifiedClaims, TokenRejection> {
        self.verify_token_for_audience(config, token, config.audience.as_deref()).await
    }

    /// As [`Self::verify_token`], with an explicit audience (sign-in ID tokens name the client).
    pub async fn verify_token_for_audience(
        &self,
        config: &IdpConfig,
        token: &str,
        audience: Option<&str>,
    ) -> Result<VerifiedClaims, TokenRejection> {
        let token = strip_bearer_scheme(token);
        precheck_issuer(token, &config.issuer)?;
        let claims = self.verifier.verify_signature(config, token).await?;
        let expect = ClaimExpectations { issuer: &config.issuer, audience, leeway_secs: self.settings.leeway_secs };
        validate_claims(claims, &expect, self.clock.now())
    }

    /// Verifies a user token on a runtime endpoint: its audience must be the configured one or,
    /// when the app has an OIDC sign-in client, that client's id (an ID token from sign-in). The
    /// client id is looked up only for a token the configured audience does not accept.
    /// The token may carry a `Bearer ` prefix; one whose payload names another issuer is refused
    /// as such before any key is looked at.
    pub async fn verify_user_token(&self, config: &IdpConfig, token: &str) -> Result<VerifiedClaims, ResolveError> {
        let token = strip_bearer_scheme(token);
        precheck_issuer(token, &config.issuer)?;
        let claims = self.verifier.verify_signature(config, token).await?;
        let mut audience = config.audience.clone();
        if let Some(configured) = &config.audience {
            if !audience_contains(&claims, configured) {
                if let Some(client_id) = self.idps.oidc_client_id(&config.app_id).await? {
                    if audience_contains(&claims, &client_id) {
                        audience = Some(client_id);
                    }
                }
            }
        }
        let expect = ClaimExpectations {
            issuer: &config.issuer,
            audience: audience.as_deref(),
            leeway_secs: self.settings.leeway_secs,
        };
        Ok(validate_claims(claims, &expect, self.clock.now())?)
    }

    /// Resolves the user a token names: verify, map claims, find or create the user (locking the
    /// mappings on first sight), sync profile and memberships, and refuse users who may not act.
    pub async fn resolve_user(&self, app: &AppId, token: &str) -> Result<User, ResolveError> {
        let user = self.resolve_user_any_status(app, token).await?;
        user.ensure_active()?;
        Ok(user)
    }

    /// As [`Self::resolve_user`] but returns users of any status.
    pub async fn resolve_user_any_status(&self, app: &AppId, token: &str) -> Result<User, ResolveError> {
        let config = self.idps.get_idp(app).await?;
        self.resolve_any_status_under(app, config, token).await
    }

    /// As [`Self::resolve_user`], starting from the app's identity provider configuration as
    /// the caller just read it (see [`Self::authenticate_api_key_with_idp`]). Should it have
    /// changed since, the store notices and the configuration is read again.
    pub async fn resolve_user_under(
        &self,
        app: &AppId,
        config: Option<IdpConfig>,
        token: &str,
    ) -> Result<User, ResolveError> {
        let user = self.resolve_any_status_under(app, config, token).await?;
        user.ensure_active()?;
        Ok(user)
    }

    async fn resolve_any_status_under(
        &self,
        app: &AppId,
        mut config: Option<IdpConfig>,
        token: &str,
    ) -> Result<User, ResolveError> {
        // A configuration change between verification and resolution makes the store refuse;
        // verifying again under the new configuration is always correct, and changes are rare.
        for _ in 0..4 {
            let config = match config.take() {
                Some(config) => config,
                None => self.idps.get_idp(app).await?.ok_or(ResolveError::NotConfigured)?,
            };
            let verified = self.verify_user_token(&config, token).await?;
            match self.resolve_verified(&config, &verified).await {
                Err(ResolveError::ConfigChanged) => continue,
                other => return other,
            }
        }
        Err(StoreError::Unavailable("the identity provider kept changing concurrently".into()).into())
    }

    /// Resolves the user named by claims already verified under `config`.
    pub async fn resolve_verified(&self, config: &IdpConfig, verified: &VerifiedClaims) -> Result<User, ResolveError> {
        let identity = config.claims.extract(&verified.claims).map_err(TokenRejection::from)?;
        let lock = LockGuard { idp_version: config.version, already_locked: config.claims_locked() };
        let new_id = UserId::parse(&self.new_id()).unwrap_or_else(|_| unreachable_uuid());
        match self
            .users
            .resolve_user(&config.app_id, lock, &identity, verified.issued_at, &new_id, self.clock.now())
            .await
        {
            Ok(user) => Ok(user),
            Err(ResolveUserError::ConfigChanged) => Err(ResolveError::ConfigChanged),
            Err(ResolveUserError::Store(e)) => Err(e.into()),
        }
    }

    // ----- operator reads and maintenance (the server never reaches the store itself) -----

    /// Whether the storage answers (readiness).
    pub async fn check_storage(&self) -> Result<(), StoreError> {
        self.health.ping().await
    }

    /// One page of the apps.
    pub async fn list_apps(&self, page: &PageRequest) -> Result<Page<App>, StoreError> {
        self.apps.list_apps(page).await
    }

    /// The app `id`, if it exists.
    pub async fn get_app(&self, id: &AppId) -> Result<Option<App>, StoreError> {
        self.apps.get_app(id).await
    }

    /// Deletes the app and everything it owns; `false` when there was no such app. What the
    /// token verifier cached for the app's IdP is forgotten, so nothing outlives the app.
    pub async fn delete_app(&self, id: &AppId) -> Result<bool, StoreError> {
        let idp = self.idps.get_idp(id).await?;
        if !self.apps.delete_app(id).await? {
            return Ok(false);
        }
        if let Some(config) = idp {
            self.verifier.forget(&config).await;
        }
        Ok(true)
    }

    /// One page of the app's API keys (records only; the keys themselves are never stored).
    pub async fn list_api_keys(&self, app: &AppId, page: &PageRequest) -> Result<Page<ApiKeyRecord>, StoreError> {
        self.api_keys.list_api_keys(app, page).await
    }

    /// Records that `key` was used now. Callers coalesce these writes; the time only informs
    /// the operator, so a lost write costs nothing.
    pub async fn record_key_use(&self, key: &ApiKeyId) -> Result<(), StoreError> {
        self.api_keys.touch_api_key(key, self.clock.now()).await
    }

    /// The app's identity provider configuration, if it has one.
    pub async fn get_idp(&self, app: &AppId) -> Result<Option<IdpConfig>, StoreError> {
        self.idps.get_idp(app).await
    }

    /// Fetches the key set of `config`'s IdP now (see [`TokenVerifier::refresh_keys`]): a key
    /// the IdP removed stops verifying from the next request, cached tokens included.
    pub async fn refresh_keys(&self, config: &IdpConfig) -> Result<FetchedKeys, TokenRejection> {
        self.verifier.refresh_keys(config).await
    }

    /// One page of the app's users, oldest first, optionally only those with `status`.
    pub async fn list_users(
        &self,
        app: &AppId,
        status: Option<UserStatus>,
        page: &PageRequest,
    ) -> Result<Page<User>, StoreError> {
        self.users.list_users(app, status, page).await
    }

    /// The app's user `user`, of any status.
    pub async fn get_user(&self, app: &AppId, user: &UserId) -> Result<Option<User>, StoreError> {
        self.users.get_user(app, user).await
    }

    /// The user with `subject` in `app`, created `active` when unknown, without touching the
    /// claim lock (an operator's import is not a sign-in). Returned as stored, of any status.
    pub async fn ensure_user(&self, app: &AppId, subject: &str) -> Result<User, StoreError> {
        let new_id = UserId::parse(&self.new_id()).unwrap_or_else(|_| unreachable_uuid());
        self.users.ensure_user(app, subject, &new_id, self.clock.now()).await
    }

    /// One page of the app's audit rows matching `filter`, newest first.
    pub async fn list_audit(
        &self,
        app: &AppId,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>, StoreError> {
        self.audit.list_audit(app, filter, page).await
    }
}

fn unreachable_uuid<T>() -> T {
    // The Random port promises canonical UUIDs; a broken adapter is a programming error.
    panic!("the Random port returned a malformed UUID")
}
