//! The ports the identity domain needs from the outside world. Adapters implement them:
//! `custody-store` the storage, `custody-providers` discovery, verification and randomness, and
//! the server a real clock.

use crate::app::{ApiKeyRecord, App};
use crate::audit::{AuditEntry, AuditFilter};
use crate::claims::ExtractedIdentity;
use crate::idp::IdpConfig;
use crate::ids::{ApiKeyId, AppId, UserId};
use crate::issuer::IssuerUrl;
use crate::jwt::TokenRejection;
use crate::page::{Page, PageRequest};
use crate::time::UnixTime;
use crate::user::{User, UserStatus};
use async_trait::async_trait;
use serde_json::{Map, Value};

/// The current time. Every use of "now" in the domain comes from here or from an argument.
pub trait Clock: Send + Sync {
    fn now(&self) -> UnixTime;
}

/// Unpredictable values from a cryptographically secure source.
pub trait Random: Send + Sync {
    /// A new random (version 4) UUID in canonical text form.
    fn uuid(&self) -> String;
    /// A new identifier for a row written at a high rate (an audit row), in canonical UUID text
    /// form: unique as [`Random::uuid`] is, and, where the adapter can, increasing in creation
    /// order (a version 7 UUID), so that consecutive rows land side by side in a unique index
    /// instead of each on a random page of it. Nothing may rely on the order: it is a
    /// performance property, and the default is [`Random::uuid`].
    fn ordered_uuid(&self) -> String {
        self.uuid()
    }
    /// `len` random bytes.
    fn bytes(&self, len: usize) -> Vec<u8>;
}

/// Keyed hashing of secrets the server generates and only needs to recognise (API keys, the
/// admin token, generated webhook secrets). The key never leaves the adapter.
pub trait SecretHasher: Send + Sync {
    /// The keyed hash of `secret`, domain-separated by `purpose`.
    fn hash(&self, purpose: &str, secret: &[u8]) -> Vec<u8>;
    /// Whether `secret` hashes to `expected`, compared in constant time.
    fn verify(&self, purpose: &str, secret: &[u8], expected: &[u8]) -> bool;
}

/// A storage failure: the operation changed nothing and may be retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("the page cursor is not valid")]
    InvalidCursor,
}

/// Creating an IdP configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateIdpError {
    #[error("the app already has an identity provider")]
    AlreadyConfigured,
    #[error("the app does not exist")]
    AppNotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Replacing an IdP configuration with compare-and-set on its version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateIdpError {
    #[error("the identity provider changed concurrently")]
    VersionConflict,
    #[error("the app has no identity provider")]
    NotConfigured,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Resolving a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveUserError {
    /// The IdP configuration is gone or no longer at the version the token was verified against;
    /// the caller reloads it and verifies again.
    #[error("the identity provider configuration changed while resolving the user")]
    ConfigChanged,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How the store must treat the claim lock when resolving a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockGuard {
    /// The configuration version the token was verified and its claims mapped under.
    pub idp_version: i64,
    /// Whether that configuration was already locked. When it was not, the store locks it in the
    /// same transaction, only if the stored version still equals `idp_version`.
    pub already_locked: bool,
}

// Persistence is split by role: each use case takes the few ports it uses, and a test can fake
// one role without the rest. Every mutating method of every storage port is one transaction: it
// either applies completely, together with the audit entry it is given, or changes nothing and
// returns an error. `custody-store`'s `Store` implements them all on one database.

/// Whether the database answers (the readiness probe).
#[async_trait]
pub trait StoreHealth: Send + Sync {
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Apps: the tenants everything else belongs to.
#[async_trait]
pub trait AppStore: Send + Sync {
    /// Creates an app with its first API key.
    async fn create_app(&self, app: &App, key: &ApiKeyRecord, audit: &AuditEntry) -> Result<(), StoreError>;
    /// Apps, oldest first.
    async fn list_apps(&self, page: &PageRequest) -> Result<Page<App>, StoreError>;
    async fn get_app(&self, id: &AppId) -> Result<Option<App>, StoreError>;
    /// Deletes an app and everything it owns (keys, IdP, users, grants, credentials, audit).
    /// `false` when there was no such app.
    async fn delete_app(&self, id: &AppId) -> Result<bool, StoreError>;
}

/// An app's API keys (stored as keyed hashes, found by their public prefix).
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// Adds an API key to an existing app. `false` when the app does not exist.
    async fn create_api_key(&self, key: &ApiKeyRecord, audit: &AuditEntry) -> Result<bool, StoreError>;
    /// The app's keys, oldest first.
    async fn list_api_keys(&self, app: &AppId, page: &PageRequest) -> Result<Page<ApiKeyRecord>, StoreError>;
    /// `false` when the app has no such key.
    async fn delete_api_key(&self, app: &AppId, key: &ApiKeyId, audit: &AuditEntry) -> Result<bool, StoreError>;
    /// The key with this public prefix, if any.
    async fn find_api_key(&self, prefix: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// As [`ApiKeyStore::find_api_key`], together with the key's app's identity provider
    /// configuration (`None` when it has none), in one read: what every runtime call needs
    /// first.
    async fn find_api_key_with_idp(
        &self,
        prefix: &str,
    ) -> Result<Option<(ApiKeyRecord, Option<IdpConfig>)>, StoreError>;
    /// Records that a key was used at `at`.
    async fn touch_api_key(&self, key: &ApiKeyId, at: UnixTime) -> Result<(), StoreError>;
}

/// An app's identity provider configuration (one per app), versioned for compare-and-set.
#[async_trait]
pub trait IdpStore: Send + Sync {
    async fn get_idp(&self, app: &AppId) -> Result<Option<IdpConfig>, StoreError>;
    /// Stores the app's IdP configuration; one per app.
    async fn create_idp(&self, config: &IdpConfig, audit: &AuditEntry) -> Result<(), CreateIdpError>;
    /// Replaces the configuration if the stored version is still `expected_version`. The lock
    /// time is never changed by this method.
    async fn update_idp(
        &self,
        config: &IdpConfig,
        expected_version: i64,
        audit: &AuditEntry,
    ) -> Result<(), UpdateIdpError>;
    /// Removes the app's IdP configuration; users stay. `false` when there was none.
    async fn delete_idp(&self, app: &AppId, audit: &AuditEntry) -> Result<bool, StoreError>;
    /// The client id of the app's OIDC sign-in client, when one is set: ID tokens from sign-in
    /// name it as their audience and are accepted as user tokens too. Stores without sign-in
    /// support have none.
    async fn oidc_client_id(&self, app: &AppId) -> Result<Option<String>, StoreError> {
        let _ = app;
        Ok(None)
    }
}

/// An app's users, keyed by their subject at the IdP.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Finds the user (app, `identity.subject`) or creates it as `active`, in one transaction
    /// that also sets the claim lock per `lock`. For a user who is not deprovisioned, replaces
    /// email and name (when the token carries them) and the token-sourced groups and roles,
    /// except groups removed by a lifecycle event after `token_issued_at`, and updates
    /// `last_seen_at` (writes may be skipped when nothing changed and it was updated less than a
    /// minute ago; when only `last_seen_at` is due, that one update may be written alone,
    /// outside a transaction, since it can never move backwards). A deprovisioned user is
    /// returned unchanged. `new_user_id` is used only when the user is created.
    async fn resolve_user(
        &self,
        app: &AppId,
        lock: LockGuard,
        identity: &ExtractedIdentity,
        token_issued_at: Option<UnixTime>,
        new_user_id: &UserId,
        now: UnixTime,
    ) -> Result<User, ResolveUserError>;
    /// Finds the user (app, `subject`) or creates it as `active` with `new_user_id`, without
    /// touching the claim lock (an operator's import is not a sign-in). Returns the user as
    /// stored, of any status.
    async fn ensure_user(
        &self,
        app: &AppId,
        subject: &str,
        new_user_id: &UserId,
        now: UnixTime,
    ) -> Result<User, StoreError>;
    async fn get_user(&self, app: &AppId, user: &UserId) -> Result<Option<User>, StoreError>;
    /// The app's users, oldest first, optionally only those with `status`.
    async fn list_users(
        &self,
        app: &AppId,
        status: Option<UserStatus>,
        page: &PageRequest,
    ) -> Result<Page<User>, StoreError>;
}

/// The audit log, shared by every domain: the rows mutating methods write with their change,
/// and rows appended on their own for outcomes that change nothing else (a failed connect flow
/// or sign-in).
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends an audit row on its own.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// Audit rows, newest first.
    async fn list_audit(
        &self,
        app: &AppId,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>, StoreError>;
}

/// An IdP's OpenID Provider metadata, as far as Custody uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryDocument {
    /// The `issuer` the document declares (already checked to match the URL asked for).
    pub issuer: String,
    pub jwks_uri: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
    /// `id_token_signing_alg_values_supported`.
    pub signing_algs: Vec<String>,
}

/// Why discovery failed. Messages are safe to show to the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("the discovery document could not be fetched: {0}")]
    Unreachable(String),
    #[error("the discovery document answered HTTP {0}")]
    Status(u16),
    #[error("the discovery document is not a JSON object")]
    NotJson,
    #[error("the discovery document declares issuer `{declared}`, which does not match")]
    IssuerMismatch { declared: String },
    #[error("the discovery document has no jwks_uri")]
    NoJwksUri,
    #[error("the discovery document's {0} is not an acceptable URL")]
    BadEndpoint(&'static str),
}

/// Fetches an issuer's OpenID configuration.
#[async_trait]
pub trait Discovery: Send + Sync {
    /// Fetches `issuer_url.discovery_url()` (timeouts, size limit, no redirects, address
    /// rules) and checks that it is a JSON object whose `issuer` matches and that has a
    /// `jwks_uri`.
    async fn discover(&self, issuer_url: &IssuerUrl) -> Result<DiscoveryDocument, DiscoveryError>;
}

/// Verifies JWT signatures against an IdP's JWKS.
#[async_trait]
pub trait TokenVerifier: Send + Sync {
    /// Checks that `token` is a compact JWS no longer than the configured cap, signed with an
    /// allowed algorithm (RS256, PS256, ES256, EdDSA) by a key in the JWKS at `config.jwks_uri`
    /// whose parameters agree with the algorithm, and returns its payload claims. It does not
    /// check `exp`, `iss` or `aud`: [`crate::jwt::validate_claims`] does, with the caller's `now`.
    /// The claims are shared, so a verifier that remembers verified tokens answers a repeated
    /// token without copying its claims.
    async fn verify_signature(
        &self,
        config: &IdpConfig,
        token: &str,
    ) -> Result<std::sync::Arc<Map<String, Value>>, TokenRejection>;

    /// Forgets whatever is cached for this app's IdP (keys, verified tokens), after its
    /// configuration changed or went away.
    async fn forget(&self, config: &IdpConfig);

    /// Fetches the key set at `config.jwks_uri` now (after a fetch already in flight ends, since
    /// it may have started before the keys changed) and makes it the set in use: tokens signed
    /// by a key it no longer holds fail from the next verification, cached ones included.
    /// [`TokenRejection::KeysUnavailable`] when the fetch fails.
    async fn refresh_keys(&self, config: &IdpConfig) -> Result<FetchedKeys, TokenRejection>;
}

/// An IdP's key set as [`TokenVerifier::refresh_keys`] just fetched it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedKeys {
    /// The key ids of the usable keys, sorted, without duplicates (keys without a kid are left
    /// out).
    pub kids: Vec<String>,
    /// When the set was fetched.
    pub fetched_at: UnixTime,
}
