//! The ports the vault needs: storage of providers, policies, grants, credentials, connect
//! states, the revocation outbox, users' lifecycle and sealed values (one role-sized trait each);
//! a cross-process refresh lock; and an OAuth 2.0 client.

use crate::grant::{Credential, Grant, GrantId, GrantStatus, TokenKind, TokenSet};
use crate::policy::{Policy, PolicyLookup};
use crate::provider::{ProviderConfig, ProviderName};
use async_trait::async_trait;
use custody_identity::app::ApiKeyRecord;
use custody_identity::audit::AuditEntry;
use custody_identity::cipher::SealedBox;
use custody_identity::page::{Page, PageRequest};
use custody_identity::ports::StoreError;
use custody_identity::{AppId, Secret, UnixTime, User, UserId};

/// Filters for the operator's grant listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantFilter {
    pub user_id: Option<UserId>,
    pub provider: Option<ProviderName>,
    pub status: Option<GrantStatus>,
}

/// Which of a user's grants a hand-out is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantSelector {
    /// The user's current grant for the provider: the active one if any, else the most recently
    /// updated one of any status.
    Provider(ProviderName),
    /// One grant by id; it must belong to the user.
    Id(GrantId),
}

/// What a hand-out reads about one grant, read together in one statement: the grant, its
/// provider's policy and its credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoutView {
    pub grant: Grant,
    /// The provider's policy; [`PolicyLookup::Unreadable`] when the stored one cannot be decoded.
    pub policy: PolicyLookup,
    /// `None` when the grant has no credential (it is revoked or expired).
    pub credential: Option<Credential>,
}

/// The stored state of an app's identity provider configuration that decides whether a token
/// verified under a configuration remembered from an earlier request still stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdpStamp {
    /// The configuration's version; any edit raises it.
    pub version: i64,
    /// Whether its claim mappings are locked (the first sign-in locked them).
    pub claims_locked: bool,
}

/// Everything one hand-out reads, read together in one statement by
/// [`HandoutContexts::handout_context`], under an API key that still exists as presented. A
/// field is `None` when its row does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoutContext {
    /// The key's app's identity provider configuration, as stored now.
    pub idp: Option<IdpStamp>,
    /// The app's user whose subject the token names.
    pub user: Option<User>,
    /// That user's grant chosen by the selector, with its policy and credential.
    pub view: Option<HandoutView>,
}

/// The hand-out's single read, shared by the identity rules (the key, the IdP, the user) and the
/// vault rules (the grant, its policy, its credential) of `POST /v1/token`: one database round
/// trip instead of one per rule.
#[async_trait]
pub trait HandoutContexts: Send + Sync {
    /// In one statement, under the API key `key` as it was admitted: the stamp of its app's
    /// IdP configuration; the app's user whose subject is `subject`; and that user's grant
    /// chosen by `selector` (as [`CredentialStore::handout_view`]: by provider, the active grant
    /// first, then the most recently updated; by id, only the user's own), with its provider's
    /// policy and its credential. `None` when no stored key has `key`'s prefix, id and hash
    /// (it was deleted or replaced since), so a deleted key fails in the same read. Reads only:
    /// nothing is written.
    async fn handout_context(
        &self,
        key: &ApiKeyRecord,
        subject: &str,
        selector: &GrantSelector,
    ) -> Result<Option<HandoutContext>, StoreError>;
}

/// Which grants a revocation covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeScope {
    /// One grant of the app.
    Grant(GrantId),
    /// Every grant of one provider of the app.
    Provider(ProviderName),
    /// Every grant of one user of the app.
    User(UserId),
}

/// A pending connect flow, keyed by the hash of its `state` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectState {
    /// SHA-256 of the state value, hex; the value itself is never stored.
    pub state_hash: String,
    pub app_id: AppId,
    pub user_id: UserId,
    pub provider: ProviderName,
    pub return_url: String,
    pub scopes: Vec<String>,
    /// The PKCE code verifier, sealed with associated data `connect:<state_hash>`.
    pub pkce_verifier: SealedBox,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
    /// SHA-256 (hex) of the random value of the cookie that binds the flow to the browser that
    /// opened `connect_url` (RFC 6749 section 10.12); `None` until it is opened.
    pub browser_hash: Option<String>,
}

impl ConnectState {
    /// The associated data of a connect state's sealed PKCE verifier.
    pub fn verifier_aad(state_hash: &str) -> Vec<u8> {
        format!("connect:{state_hash}").into_bytes()
    }
}

/// The associated data of an instance secret (a server-wide secret sealed in the database).
pub fn instance_secret_aad(name: &str) -> Vec<u8> {
    format!("instance-secret:{name}").into_bytes()
}

/// A token waiting to be revoked at its provider (RFC 7009) after its grant was revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: String,
    pub app_id: AppId,
    /// The grant the token belonged to; its sealed box is still bound to this id.
    pub grant_id: GrantId,
    pub provider: ProviderName,
    pub token_kind: TokenKind,
    pub token: SealedBox,
    pub revocation_url: String,
    pub client_id: String,
    /// Sealed with the provider's associated data ([`ProviderConfig::secret_aad`]).
    pub client_secret: SealedBox,
    pub attempts: i32,
    pub next_attempt_at: UnixTime,
}

// The lifecycle vocabulary and its ordering rule are the identity domain's; the vault applies
// the changes (a deprovision revokes grants).
pub use custody_identity::lifecycle::{LifecycleChange, LifecycleEvent, LifecyclePlan};

/// What applying a lifecycle event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleOutcome {
    /// The change was applied (with the grants it revoked, for a deprovision).
    Applied { user: User, revoked: Vec<Grant> },
    /// Acknowledged and ignored: the subject was never seen (nothing is created), the change
    /// is not allowed from the user's status (nothing leaves `deprovisioned`), or a suspend or
    /// reactivate is older than the user's last applied status change (by `occurred_at`), so a
    /// late "unblock" cannot undo a later block. A deprovision always applies. The event id is
    /// recorded all the same.
    Ignored(String),
    /// The event id was seen before; nothing was applied.
    Duplicate,
}

/// A kind of sealed value, for re-sealing under a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedKind {
    CredentialAccess,
    CredentialRefresh,
    ProviderSecret,
    OutboxToken,
    OutboxClientSecret,
    ConnectVerifier,
    InstanceSecret,
    /// A provided lifecycle webhook signing secret (Clerk's), bound to its app
    /// ([`crate::webhook::webhook_secret_aad`]).
    WebhookSecret,
}

/// One sealed value, with what identifies its row and so its associated data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedValue {
    pub kind: SealedKind,
    /// Opaque position for [`SealedValues::sealed_values`]' `after`.
    pub cursor: String,
    /// The associated data the value was sealed with.
    pub associated_data: Vec<u8>,
    pub sealed: SealedBox,
}

/// Saving a connected or imported grant raced with another save for the same user and
/// provider; the caller re-reads and tries again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaveGrantError {
    #[error("the user's grant for this provider changed concurrently")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

// Persistence for the vault is split by role: each use case takes the few ports it uses, and a
// test fakes only those. Every mutating method of every storage port is one transaction together
// with the audit rows it is given: it applies completely or changes nothing. Audit rows appended
// on their own go through [`custody_identity::ports::AuditLog`]. `custody-store`'s `Store`
// implements every role on one database.

/// An app's OAuth providers (their endpoints and sealed client secrets).
#[async_trait]
pub trait ProviderStore: Send + Sync {
    /// Creates or replaces a provider (keeping `created_at` of an existing one).
    async fn put_provider(&self, provider: &ProviderConfig, audit: &AuditEntry) -> Result<(), StoreError>;
    async fn get_provider(&self, app: &AppId, name: &ProviderName) -> Result<Option<ProviderConfig>, StoreError>;
    /// Providers by name.
    async fn list_providers(&self, app: &AppId, page: &PageRequest) -> Result<Page<ProviderConfig>, StoreError>;
    /// Deletes a provider and its policy, revoking its grants as [`GrantStore::revoke_grants`]
    /// does, in one transaction. `None` when there was no such provider, else the grants revoked.
    async fn delete_provider(
        &self,
        app: &AppId,
        name: &ProviderName,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<Option<Vec<Grant>>, StoreError>;
}

/// Each provider's hand-out policy (at most one per provider).
#[async_trait]
pub trait PolicyStore: Send + Sync {
    async fn put_policy(&self, policy: &Policy, audit: &AuditEntry) -> Result<(), StoreError>;
    /// The provider's policy; [`PolicyLookup::Unreadable`] when a stored policy cannot be decoded.
    async fn get_policy(&self, app: &AppId, provider: &ProviderName) -> Result<PolicyLookup, StoreError>;
    async fn list_policies(&self, app: &AppId, page: &PageRequest) -> Result<Page<Policy>, StoreError>;
    /// `false` when there was none.
    async fn delete_policy(&self, app: &AppId, provider: &ProviderName, audit: &AuditEntry)
        -> Result<bool, StoreError>;
}

/// Grants: who connected which provider, their life cycle (connect, import, revoke).
#[async_trait]
pub trait GrantStore: Send + Sync {
    async fn get_grant(&self, app: &AppId, grant: &GrantId) -> Result<Option<Grant>, StoreError>;
    /// The user's grant for the provider: the active one if any, else the most recently
    /// updated one of any status.
    async fn current_grant(
        &self,
        app: &AppId,
        user: &UserId,
        provider: &ProviderName,
    ) -> Result<Option<Grant>, StoreError>;
    /// Grants, newest first.
    async fn list_grants(
        &self,
        app: &AppId,
        filter: &GrantFilter,
        page: &PageRequest,
    ) -> Result<Page<Grant>, StoreError>;
    /// Stores a grant and its credential. When `is_new`, inserts the grant (conflict if the
    /// user already has an active grant for the provider); otherwise updates the grant, which
    /// must still be active (conflict if not), and replaces its credential, queueing the
    /// replaced tokens' revocation at the provider (outbox ids
    /// `<grant id>:superseded-access:v<old version>` and `...-refresh:...`) when the provider
    /// has a revocation URL.
    async fn save_grant(
        &self,
        grant: &Grant,
        credential: &Credential,
        is_new: bool,
        audit: &AuditEntry,
    ) -> Result<(), SaveGrantError>;
    /// Revokes every non-revoked grant in `scope` of `app`: status `revoked`, `revoked_at`,
    /// credentials deleted, and for providers with a revocation URL one outbox item per stored
    /// token (the sealed boxes move as they are). Returns the grants revoked.
    async fn revoke_grants(
        &self,
        app: &AppId,
        scope: &RevokeScope,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<Vec<Grant>, StoreError>;
}

/// Grants' credentials as hand-out and refresh use them: the consistent read a hand-out starts
/// from, versioned replacement after a refresh, expiry when the provider refuses the refresh
/// token, and the hand-out's own record.
#[async_trait]
pub trait CredentialStore: Send + Sync {
    async fn load_credential(&self, grant: &GrantId) -> Result<Option<Credential>, StoreError>;
    /// The grant `selector` names among `user`'s grants of `app`, with its provider's policy
    /// and its credential, as one consistent read; `None` when there is no such grant.
    async fn handout_view(
        &self,
        app: &AppId,
        user: &UserId,
        selector: &GrantSelector,
    ) -> Result<Option<HandoutView>, StoreError>;
    /// Replaces a credential if its stored version is still `expected_version` (the new
    /// credential carries the next version). `false` when the version moved on or it is gone.
    /// When the new credential's sealed refresh token differs from the stored one (the provider
    /// rotated it; a kept token is passed as the same sealed box), the old one is queued for
    /// revocation at the provider (`<grant id>:superseded-refresh:v<expected_version>`), in the
    /// same transaction.
    async fn replace_credential(
        &self,
        credential: &Credential,
        expected_version: i64,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;
    /// Marks an active grant `expired` (its refresh token was rejected) and deletes its
    /// credential, with the audit row, if the stored credential is still at
    /// `credential_version`. `false`, changing nothing, when the credential moved on (another
    /// process refreshed it, the user reconnected) or is gone.
    async fn expire_grant(
        &self,
        grant: &GrantId,
        credential_version: i64,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;
    /// Records a hand-out: the audit row, and `last_used_at` when `touch` is given.
    async fn record_handout(
        &self,
        grant: &GrantId,
        touch: Option<UnixTime>,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;
}

/// Users' lifecycle as the identity provider reports it (webhooks) or the operator decides.
#[async_trait]
pub trait LifecycleLedger: Send + Sync {
    /// Deprovisions a user in one transaction: status `deprovisioned` (final), every grant
    /// revoked exactly as [`GrantStore::revoke_grants`] with [`RevokeScope::User`] does (outbox
    /// items included), the audit row. `None` when the app has no such user. Deprovisioning an
    /// already deprovisioned user changes nothing and returns it with no grants.
    async fn deprovision_user(
        &self,
        app: &AppId,
        user: &UserId,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<Option<(User, Vec<Grant>)>, StoreError>;

    /// Applies one identity-provider lifecycle event in one transaction, see [`LifecycleEvent`].
    async fn apply_lifecycle_event(
        &self,
        app: &AppId,
        event: &LifecycleEvent,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<LifecycleOutcome, StoreError>;
}

/// Housekeeping: forgetting what is kept only for a while.
#[async_trait]
pub trait Maintenance: Send + Sync {
    /// Forgets webhook event ids received before `before` (they are kept at least 7 days).
    async fn prune_webhook_events(&self, before: UnixTime) -> Result<u64, StoreError>;
    /// Deletes, among the `limit` oldest audit rows (of every app), those recorded before
    /// `before`; returns how many. Call it again while it deletes rows. Looking only at the
    /// oldest rows keeps each call an index range read (no index on the time is needed, and
    /// writing the audit stays as cheap as it was); a row recorded out of order behind a newer
    /// one goes in a later pass, once the rows ahead of it are old enough.
    async fn prune_audit(&self, before: UnixTime, limit: u32) -> Result<u64, StoreError>;
}

/// Every sealed value, for re-sealing under a new master key.
#[async_trait]
pub trait SealedValues: Send + Sync {
    /// Up to `limit` sealed values of one kind, in a stable order, after the `after` cursor
    /// (the `cursor` of the last value of the previous batch).
    async fn sealed_values(
        &self,
        kind: SealedKind,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SealedValue>, StoreError>;
    /// Replaces one sealed value if it still equals `old` (compare-and-set). `false` otherwise.
    async fn replace_sealed(&self, value: &SealedValue, new: &SealedBox) -> Result<bool, StoreError>;
}

/// Pending connect flows, keyed by the hash of their `state` value.
#[async_trait]
pub trait ConnectStates: Send + Sync {
    async fn create_connect_state(&self, state: &ConnectState) -> Result<(), StoreError>;
    /// Reads a connect state without consuming it.
    async fn peek_connect_state(&self, state_hash: &str) -> Result<Option<ConnectState>, StoreError>;
    /// Binds a connect state to a browser: sets its `browser_hash` if it has none yet. `false`
    /// when it is gone or already bound (to this or another browser).
    async fn bind_connect_state(&self, state_hash: &str, browser_hash: &str) -> Result<bool, StoreError>;
    /// Deletes and returns a connect state: a state can be consumed once.
    async fn consume_connect_state(&self, state_hash: &str) -> Result<Option<ConnectState>, StoreError>;
}

/// Tokens waiting to be revoked at their provider (RFC 7009), retried until done or given up.
#[async_trait]
pub trait RevocationOutbox: Send + Sync {
    /// Outbox items due at `now`, oldest first.
    async fn due_revocations(&self, now: UnixTime, limit: u32) -> Result<Vec<OutboxItem>, StoreError>;
    /// Removes an item (done, or given up, with its audit row).
    async fn finish_revocation(&self, id: &str, audit: Option<&AuditEntry>) -> Result<(), StoreError>;
    /// Adds items to the outbox (an item whose id is already there is left alone), for tokens
    /// that no grant holds, such as those minted by a refresh that lost a race with a revoke.
    async fn queue_revocations(&self, items: &[OutboxItem], now: UnixTime) -> Result<(), StoreError>;
    /// Schedules another attempt.
    async fn retry_revocation(&self, id: &str, attempts: i32, next_attempt_at: UnixTime) -> Result<(), StoreError>;
}

/// Holds a grant's refresh lock until released.
#[async_trait]
pub trait RefreshGuard: Send {
    /// Releases the lock. Dropping the guard without calling this must also release it (for
    /// example by discarding the database session that holds it).
    async fn release(self: Box<Self>);
}

/// Why a grant's refresh lock was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshLockError {
    /// Someone else held it for longer than the wait allows: another refresh of the grant (in
    /// this or another process) is stuck, typically on a provider that does not answer.
    #[error("timed out waiting for another refresh of this grant")]
    TimedOut,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Mutual exclusion of refreshes of one grant, within this process and across every process
/// that shares the database, so a refresh token is never spent twice.
#[async_trait]
pub trait RefreshLock: Send + Sync {
    /// Waits (for a bounded time) for and takes the grant's refresh lock.
    async fn lock(&self, grant: &GrantId) -> Result<Box<dyn RefreshGuard>, RefreshLockError>;
}

/// A provider's OAuth endpoints and client credentials, opened for one call.
#[derive(Debug, Clone)]
pub struct OAuthEndpoint<'a> {
    pub authorization_url: &'a str,
    pub token_url: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a Secret,
}

/// Why an OAuth call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// RFC 6749 `invalid_grant`: the code or refresh token is no longer good.
    #[error("the provider rejected the grant (invalid_grant)")]
    InvalidGrant,
    /// Another OAuth error the provider returned (`error` code only; descriptions may echo input).
    #[error("the provider answered with error `{0}`")]
    Rejected(String),
    /// Network failure, timeout, 5xx, or an answer that is not a token response.
    #[error("the provider could not be reached or answered badly: {0}")]
    Transient(String),
}

/// An OAuth 2.0 client (RFC 6749, PKCE RFC 7636, revocation RFC 7009).
#[async_trait]
pub trait OAuthClient: Send + Sync {
    /// The URL to send the user to: response_type=code, client_id, redirect_uri, scope, state,
    /// code_challenge (S256 of `pkce_verifier`), code_challenge_method=S256.
    fn authorization_url(
        &self,
        endpoint: &OAuthEndpoint<'_>,
        redirect_uri: &str,
        scopes: &[String],
        state: &str,
        pkce_verifier: &str,
    ) -> Result<String, OAuthError>;
    /// Exchanges an authorization code.
    async fn exchange_code(
        &self,
        endpoint: &OAuthEndpoint<'_>,
        code: &str,
        redirect_uri: &str,
        pkce_verifier: &str,
    ) -> Result<TokenSet, OAuthError>;
    /// Uses a refresh token.
    async fn refresh(&self, endpoint: &OAuthEndpoint<'_>, refresh_token: &Secret) -> Result<TokenSet, OAuthError>;
    /// Revokes a token at `revocation_url` (RFC 7009).
    async fn revoke(
        &self,
        revocation_url: &str,
        client_id: &str,
        client_secret: &Secret,
        token: &Secret,
        kind: TokenKind,
    ) -> Result<(), OAuthError>;
}
