//! Lifecycle webhooks: the per-app settings (enable, rotate, disable), authenticating a
//! delivery on its raw bytes, and applying the events it carries.
//!
//! Secrets: for Auth0, Okta, Keycloak and custom OIDC providers the server generates the secret, shows it once
//! and keeps only its keyed hash ([`SecretHasher`] with purpose [`WEBHOOK_SECRET_PURPOSE`]); a
//! delivery's `Authorization` value (with or without `Bearer `) is compared with it in constant
//! time. For Clerk the operator supplies Clerk's Svix signing secret (`whsec_` + base64), which
//! is sealed with associated data bound to the app ([`webhook_secret_aad`]); a delivery is
//! verified by the [`SvixVerifier`] port.
//!
//! Applying: the body is decoded by the kind's adapter
//! ([`custody_identity::kinds::IdpAdapter::decode_webhook`]) only after it is authenticated, and each
//! decoded change is applied in a transaction of its own with its audit row
//! ([`LifecycleLedger::apply_lifecycle_event`]). A storage failure stops the delivery: the changes
//! before it stay applied (a redelivery finds them as duplicates), nothing of the failing one is.

use crate::ports::{LifecycleChange, LifecycleEvent, LifecycleLedger, LifecycleOutcome};
use async_trait::async_trait;
use base64::Engine as _;
use custody_identity::audit::{Actor, AuditEntry};
use custody_identity::cipher::{Cipher, CipherError, SealedBox};
use custody_identity::idp::IdpKind;
use custody_identity::kinds::IdpKinds;
use custody_identity::lifecycle::{DecodedEvent, MalformedPayload, SvixMessage};
use custody_identity::ports::{Clock, Random, SecretHasher, StoreError};
use custody_identity::{AppId, IdpId, Invalid, Secret, UnixTime};
use std::fmt;
use std::sync::Arc;

/// The [`SecretHasher`] purpose of generated webhook secrets.
pub const WEBHOOK_SECRET_PURPOSE: &str = "webhook-secret";
/// The prefix of a generated webhook secret.
pub const GENERATED_SECRET_PREFIX: &str = "cwh_";
/// The prefix of a Svix (Clerk) signing secret.
pub const SVIX_SECRET_PREFIX: &str = "whsec_";
/// The shortest Svix signing key accepted, in decoded bytes (Svix issues 24 or 32).
pub const MIN_SVIX_KEY_BYTES: usize = 16;
/// The longest Svix signing key accepted, in decoded bytes.
pub const MAX_SVIX_KEY_BYTES: usize = 128;

/// The associated data of an app's sealed webhook signing secret.
pub fn webhook_secret_aad(app: &AppId) -> Vec<u8> {
    format!("webhook-secret:{}", app.as_str()).into_bytes()
}

pub use custody_identity::kinds::SecretSource;

/// A webhook secret as stored: never the generated secret itself.
#[derive(Clone, PartialEq, Eq)]
pub enum StoredSecret {
    /// The keyed hash of a generated secret.
    Hash(Vec<u8>),
    /// A provided signing secret, sealed with [`webhook_secret_aad`].
    Sealed(SealedBox),
}

impl StoredSecret {
    /// Where this secret came from.
    pub fn source(&self) -> SecretSource {
        match self {
            StoredSecret::Hash(_) => SecretSource::Generated,
            StoredSecret::Sealed(_) => SecretSource::Provided,
        }
    }
}

impl fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoredSecret::Hash(_) => f.write_str("Hash([redacted])"),
            StoredSecret::Sealed(b) => write!(f, "Sealed({b:?})"),
        }
    }
}

/// The stored webhook settings of an app's identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRecord {
    pub enabled: bool,
    /// Present while enabled.
    pub secret: Option<StoredSecret>,
    /// When the secret was last rotated; `None` when it was never rotated since enabling.
    pub rotated_at: Option<UnixTime>,
}

/// An app's identity provider as far as webhooks are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    pub idp_id: IdpId,
    pub kind: IdpKind,
    /// `None` when webhooks were never enabled for this identity provider.
    pub record: Option<WebhookRecord>,
}

impl WebhookTarget {
    /// The secret deliveries must prove, when webhooks are enabled.
    pub fn active_secret(&self) -> Option<&StoredSecret> {
        self.record.as_ref().filter(|r| r.enabled).and_then(|r| r.secret.as_ref())
    }
}

/// Enabling webhooks at the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnableWebhooksError {
    #[error("the app has no identity provider")]
    NotConfigured,
    #[error("webhooks are already enabled")]
    AlreadyEnabled,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Rotating the secret of, or disabling, enabled webhooks at the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeWebhooksError {
    #[error("the app has no identity provider")]
    NotConfigured,
    #[error("webhooks are not enabled")]
    NotEnabled,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Persistence of webhook settings. Each mutating method is one transaction with its audit row,
/// and applies only while the app's identity provider is still `idp` (deleting the identity
/// provider deletes its webhook settings).
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// The app's identity provider and its webhook settings; `None` when the app has none.
    async fn webhook_target(&self, app: &AppId) -> Result<Option<WebhookTarget>, StoreError>;
    /// Enables webhooks with `secret`, unless they are enabled already.
    async fn enable_webhooks(
        &self,
        app: &AppId,
        idp: &IdpId,
        secret: &StoredSecret,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<(), EnableWebhooksError>;
    /// Replaces the secret of enabled webhooks and stamps `rotated_at`; the old secret no
    /// longer matches from the commit on.
    async fn rotate_webhook_secret(
        &self,
        app: &AppId,
        idp: &IdpId,
        secret: &StoredSecret,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<(), ChangeWebhooksError>;
    /// Disables enabled webhooks and forgets their secret.
    async fn disable_webhooks(
        &self,
        app: &AppId,
        idp: &IdpId,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<(), ChangeWebhooksError>;
}

/// The Svix signature headers of a delivery, as received (unverified).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SvixHeaders {
    /// `svix-id`.
    pub id: Option<String>,
    /// `svix-timestamp`, seconds since the epoch as text.
    pub timestamp: Option<String>,
    /// `svix-signature`: space-separated `v1,<base64>` signatures.
    pub signature: Option<String>,
}

/// Why a Svix signature was refused. Messages never carry the secret or the signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvixRejection {
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    #[error("the svix-timestamp header is not a time")]
    BadTimestamp,
    #[error("the svix-timestamp is more than five minutes old")]
    TooOld,
    #[error("the svix-timestamp is more than five minutes in the future")]
    TooNew,
    #[error("no signature matches")]
    NoMatch,
    #[error("the signing secret is not usable")]
    BadSecret,
}

/// Verifies Svix webhook signatures: HMAC-SHA256 over `{svix-id}.{svix-timestamp}.{body}` with
/// the base64-decoded secret, any one of several `v1,` signatures matching, the timestamp
/// within five minutes of the verifier's clock.
pub trait SvixVerifier: Send + Sync {
    fn verify(&self, secret: &Secret, headers: &SvixHeaders, body: &[u8]) -> Result<(), SvixRejection>;
}

/// Asks the revocation outbox worker to run now.
pub trait OutboxWaker: Send + Sync {
    fn wake(&self);
}

/// An app's webhook settings as shown to the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookView {
    /// `<public>/v1/webhooks/{app_id}`, shown before webhooks are enabled.
    pub url: String,
    pub enabled: bool,
    pub secret_source: SecretSource,
    pub rotated_at: Option<UnixTime>,
}

/// The settings after enabling or rotating, with the generated secret shown this once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnabledWebhooks {
    pub view: WebhookView,
    /// The generated secret (Auth0, custom OIDC); `None` for a provided secret.
    pub signing_secret: Option<Secret>,
}

/// Reading the webhook settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookSettingsError {
    #[error("the app has no identity provider")]
    NotConfigured,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Errors of enabling webhooks ([`WebhookService::enable`]) and of replacing their secret
/// ([`WebhookService::rotate`]): both take a new secret from the operator's input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretChangeError {
    #[error("the app has no identity provider")]
    NotConfigured,
    /// Enabling webhooks that are enabled.
    #[error("webhooks are already enabled; rotate the secret or disable them first")]
    AlreadyEnabled,
    /// Rotating the secret of webhooks that are not enabled.
    #[error("webhooks are not enabled")]
    NotEnabled,
    /// The pasted signing secret is missing or not the provider's kind of secret.
    #[error(transparent)]
    InvalidSigningSecret(Invalid),
    #[error(transparent)]
    Invalid(Invalid),
    #[error("the signing secret could not be sealed")]
    Sealing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Disabling webhooks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisableError {
    #[error("the app has no identity provider")]
    NotConfigured,
    #[error("webhooks are not enabled")]
    NotEnabled,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What applying a delivery did, counted per identity-provider event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    /// Events applied (at least one of their changes was).
    pub processed: u32,
    /// Events acknowledged and not acted on: types Custody ignores, subjects never seen, and
    /// changes not allowed or older than the user's last status change.
    pub ignored: u32,
    /// Events whose every change had been applied before (same event id).
    pub duplicates: u32,
    /// Grants revoked by deprovisions in this delivery.
    pub revoked_grants: u32,
}

/// A delivery whose origin is proven, ready to decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDelivery {
    /// The kind whose adapter decodes the body.
    kind: IdpKind,
    /// For Clerk: the verified `svix-id` and `svix-timestamp`.
    svix: Option<(String, UnixTime)>,
}

/// Receiving a delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    /// Unknown app, no identity provider, or webhooks not enabled.
    #[error("webhooks are not enabled for this app")]
    NotEnabled,
    /// The delivery does not prove the secret; nothing was read from its body.
    #[error("invalid signature: {0}")]
    InvalidSignature(String),
    #[error(transparent)]
    Malformed(#[from] MalformedPayload),
    /// Storage failed; nothing of the failing event was applied. `applied` counts what the
    /// delivery applied before it (kept: a redelivery finds those as duplicates).
    #[error("storage failed: {error}")]
    Store { error: StoreError, applied: DeliveryCounts },
    #[error("the stored signing secret could not be opened")]
    Sealing,
}

impl From<StoreError> for ReceiveError {
    fn from(error: StoreError) -> Self {
        ReceiveError::Store { error, applied: DeliveryCounts::default() }
    }
}

/// A delivery as received: the raw body and the headers that may authenticate it. `Debug`
/// never shows the `Authorization` value (it is the secret itself) nor the body.
#[derive(Clone, Copy)]
pub struct Delivery<'a> {
    /// The `Authorization` header value.
    pub authorization: Option<&'a str>,
    pub svix: &'a SvixHeaders,
    pub body: &'a [u8],
}

impl fmt::Debug for Delivery<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("authorization", &self.authorization.map(|_| "[redacted]"))
            .field("svix_id", &self.svix.id)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// The webhook use cases over their ports.
#[derive(Clone)]
pub struct WebhookService {
    store: Arc<dyn WebhookStore>,
    lifecycle: Arc<dyn LifecycleLedger>,
    svix: Arc<dyn SvixVerifier>,
    hasher: Arc<dyn SecretHasher>,
    cipher: Arc<dyn Cipher>,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    outbox: Arc<dyn OutboxWaker>,
    kinds: IdpKinds,
    public_url: String,
}

impl fmt::Debug for WebhookService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookService").field("public_url", &self.public_url).finish_non_exhaustive()
    }
}

/// The ports and settings [`WebhookService`] is built from.
pub struct WebhookPorts {
    pub store: Arc<dyn WebhookStore>,
    /// Where the decoded events are applied.
    pub lifecycle: Arc<dyn LifecycleLedger>,
    pub svix: Arc<dyn SvixVerifier>,
    pub hasher: Arc<dyn SecretHasher>,
    pub cipher: Arc<dyn Cipher>,
    pub clock: Arc<dyn Clock>,
    pub random: Arc<dyn Random>,
    pub outbox: Arc<dyn OutboxWaker>,
    /// The identity-provider adapters: each kind's webhook secret, format and decoder.
    pub kinds: IdpKinds,
    /// The public base URL, for the webhook URL shown to the operator.
    pub public_url: String,
}

impl fmt::Debug for WebhookPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookPorts").field("public_url", &self.public_url).finish_non_exhaustive()
    }
}

/// Checks an operator-supplied Svix signing secret: `whsec_` followed by standard base64 of
/// [`MIN_SVIX_KEY_BYTES`] to [`MAX_SVIX_KEY_BYTES`] bytes.
pub fn validate_svix_secret(secret: &str) -> Result<(), Invalid> {
    let bad = |reason: String| Invalid::new("signing_secret", reason);
    let Some(encoded) = secret.strip_prefix(SVIX_SECRET_PREFIX) else {
        return Err(bad(format!("expected Clerk's signing secret, which starts with `{SVIX_SECRET_PREFIX}`")));
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| bad(format!("the part after `{SVIX_SECRET_PREFIX}` is not base64")))?;
    if !(MIN_SVIX_KEY_BYTES..=MAX_SVIX_KEY_BYTES).contains(&key.len()) {
        return Err(bad(format!(
            "the key must be {MIN_SVIX_KEY_BYTES} to {MAX_SVIX_KEY_BYTES} bytes; copy the whole secret"
        )));
    }
    Ok(())
}

/// The secret in an `Authorization` value: the value itself, or what follows `Bearer `.
fn presented_token(authorization: &str) -> &str {
    let value = authorization.trim();
    match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    }
}

/// The audit action of a lifecycle change.
fn change_action(change: &LifecycleChange) -> &'static str {
    match change {
        LifecycleChange::Deprovision => "user.deprovision",
        LifecycleChange::Suspend => "user.suspend",
        LifecycleChange::Reactivate => "user.reactivate",
        LifecycleChange::RemoveGroup(_) => "user.group_remove",
        LifecycleChange::Profile { .. } => "user.profile",
    }
}

/// A new secret and what is stored of it, from the operator's input.
struct NewSecret {
    stored: StoredSecret,
    shown: Option<Secret>,
}

impl WebhookService {
    pub fn new(ports: WebhookPorts) -> Self {
        Self {
            store: ports.store,
            lifecycle: ports.lifecycle,
            svix: ports.svix,
            hasher: ports.hasher,
            cipher: ports.cipher,
            clock: ports.clock,
            random: ports.random,
            outbox: ports.outbox,
            kinds: ports.kinds,
            public_url: ports.public_url,
        }
    }

    /// The URL an identity provider delivers the app's events to.
    pub fn url(&self, app: &AppId) -> String {
        format!("{}/v1/webhooks/{}", self.public_url, app.as_str())
    }

    fn view(&self, app: &AppId, target: &WebhookTarget) -> WebhookView {
        let record = target.record.as_ref().filter(|r| r.enabled);
        WebhookView {
            url: self.url(app),
            enabled: record.is_some(),
            secret_source: record
                .and_then(|r| r.secret.as_ref())
                .map(StoredSecret::source)
                .unwrap_or_else(|| self.kinds.adapter(&target.kind).webhook_secret()),
            rotated_at: record.and_then(|r| r.rotated_at),
        }
    }

    fn audit(&self, app: &AppId, action: &str, actor: &str, detail: Option<String>) -> AuditEntry {
        AuditEntry {
            detail,
            ..AuditEntry::new(self.random.ordered_uuid(), app.clone(), self.clock.now(), action, actor)
        }
    }

    /// The settings of an app whose identity provider is `target`, as shown to the operator.
    pub fn view_of(&self, app: &AppId, target: &WebhookTarget) -> WebhookView {
        self.view(app, target)
    }

    /// The app's webhook settings; the URL is shown before webhooks are enabled.
    pub async fn settings(&self, app: &AppId) -> Result<WebhookView, WebhookSettingsError> {
        let target = self.store.webhook_target(app).await?.ok_or(WebhookSettingsError::NotConfigured)?;
        Ok(self.view(app, &target))
    }

    /// A new secret for an identity provider of `kind`: generated (and shown once) for Auth0
    /// and custom OIDC, the operator's validated `whsec_...` for Clerk.
    fn new_secret(
        &self,
        app: &AppId,
        kind: &IdpKind,
        provided: Option<Secret>,
    ) -> Result<NewSecret, SecretChangeError> {
        match (self.kinds.adapter(kind).webhook_secret(), provided) {
            (SecretSource::Provided, None) => Err(SecretChangeError::InvalidSigningSecret(Invalid::new(
                "signing_secret",
                format!("{} webhooks need the provider's signing secret (`{SVIX_SECRET_PREFIX}...`)", kind.as_str()),
            ))),
            (SecretSource::Provided, Some(secret)) => {
                validate_svix_secret(secret.expose()).map_err(SecretChangeError::InvalidSigningSecret)?;
                let sealed = self
                    .cipher
                    .seal_secret(&secret, &webhook_secret_aad(app))
                    .map_err(|_| SecretChangeError::Sealing)?;
                Ok(NewSecret { stored: StoredSecret::Sealed(sealed), shown: None })
            }
            (SecretSource::Generated, Some(_)) => Err(SecretChangeError::Invalid(Invalid::new(
                "signing_secret",
                format!("{} webhooks use a secret the server generates; omit this field", kind.as_str()),
            ))),
            (SecretSource::Generated, None) => {
                let secret = Secret::new(format!(
                    "{GENERATED_SECRET_PREFIX}{}",
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.random.bytes(32))
                ));
                let hash = self.hasher.hash(WEBHOOK_SECRET_PURPOSE, secret.expose().as_bytes());
                Ok(NewSecret { stored: StoredSecret::Hash(hash), shown: Some(secret) })
            }
        }
    }

    /// Enables webhooks. Returns the generated secret (Auth0, custom OIDC) this once.
    pub async fn enable(
        &self,
        app: &AppId,
        signing_secret: Option<Secret>,
        actor: &Actor,
    ) -> Result<EnabledWebhooks, SecretChangeError> {
        let target = self.store.webhook_target(app).await?.ok_or(SecretChangeError::NotConfigured)?;
        if target.active_secret().is_some() {
            return Err(SecretChangeError::AlreadyEnabled);
        }
        let secret = self.new_secret(app, &target.kind, signing_secret)?;
        let source = secret.stored.source();
        let audit =
            self.audit(app, "webhook.enable", actor.as_str(), Some(format!("secret source: {}", source.as_str())));
        let now = self.clock.now();
        self.store.enable_webhooks(app, &target.idp_id, &secret.stored, now, &audit).await.map_err(|e| match e {
            EnableWebhooksError::NotConfigured => SecretChangeError::NotConfigured,
            EnableWebhooksError::AlreadyEnabled => SecretChangeError::AlreadyEnabled,
            EnableWebhooksError::Store(e) => SecretChangeError::Store(e),
        })?;
        Ok(EnabledWebhooks {
            view: WebhookView { url: self.url(app), enabled: true, secret_source: source, rotated_at: None },
            signing_secret: secret.shown,
        })
    }

    /// Replaces the webhook secret; the old one stops working at once.
    pub async fn rotate(
        &self,
        app: &AppId,
        signing_secret: Option<Secret>,
        actor: &Actor,
    ) -> Result<EnabledWebhooks, SecretChangeError> {
        let target = self.store.webhook_target(app).await?.ok_or(SecretChangeError::NotConfigured)?;
        if target.active_secret().is_none() {
            return Err(SecretChangeError::NotEnabled);
        }
        let secret = self.new_secret(app, &target.kind, signing_secret)?;
        let source = secret.stored.source();
        let audit = self.audit(app, "webhook.rotate", actor.as_str(), Some("webhook secret rotated".into()));
        let now = self.clock.now();
        self.store.rotate_webhook_secret(app, &target.idp_id, &secret.stored, now, &audit).await.map_err(
            |e| match e {
                ChangeWebhooksError::NotConfigured => SecretChangeError::NotConfigured,
                ChangeWebhooksError::NotEnabled => SecretChangeError::NotEnabled,
                ChangeWebhooksError::Store(e) => SecretChangeError::Store(e),
            },
        )?;
        Ok(EnabledWebhooks {
            view: WebhookView { url: self.url(app), enabled: true, secret_source: source, rotated_at: Some(now) },
            signing_secret: secret.shown,
        })
    }

    /// Disables webhooks and forgets the secret: every delivery answers "not enabled".
    pub async fn disable(&self, app: &AppId, actor: &Actor) -> Result<WebhookView, DisableError> {
        let target = self.store.webhook_target(app).await?.ok_or(DisableError::NotConfigured)?;
        if target.active_secret().is_none() {
            return Err(DisableError::NotEnabled);
        }
        let audit = self.audit(app, "webhook.disable", actor.as_str(), Some("webhooks disabled".into()));
        self.store.disable_webhooks(app, &target.idp_id, self.clock.now(), &audit).await.map_err(|e| match e {
            ChangeWebhooksError::NotConfigured => DisableError::NotConfigured,
            ChangeWebhooksError::NotEnabled => DisableError::NotEnabled,
            ChangeWebhooksError::Store(e) => DisableError::Store(e),
        })?;
        Ok(WebhookView {
            url: self.url(app),
            enabled: false,
            secret_source: self.kinds.adapter(&target.kind).webhook_secret(),
            rotated_at: None,
        })
    }

    /// Authenticates a delivery on its raw bytes, before anything reads the body.
    pub async fn authenticate(&self, app: &AppId, delivery: &Delivery<'_>) -> Result<VerifiedDelivery, ReceiveError> {
        let target = self.store.webhook_target(app).await?.ok_or(ReceiveError::NotEnabled)?;
        let secret = target.active_secret().ok_or(ReceiveError::NotEnabled)?;
        match secret {
            StoredSecret::Hash(hash) => {
                let presented = delivery
                    .authorization
                    .map(presented_token)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| ReceiveError::InvalidSignature("the Authorization header is missing".into()))?;
                if !self.hasher.verify(WEBHOOK_SECRET_PURPOSE, presented.as_bytes(), hash) {
                    return Err(ReceiveError::InvalidSignature("the Authorization value does not match".into()));
                }
                Ok(VerifiedDelivery { kind: target.kind.clone(), svix: None })
            }
            StoredSecret::Sealed(sealed) => {
                let secret = self.cipher.open_secret(sealed, &webhook_secret_aad(app)).map_err(|e| match e {
                    CipherError::Malformed
                    | CipherError::UnknownKey(_)
                    | CipherError::Unauthentic
                    | CipherError::Internal => ReceiveError::Sealing,
                })?;
                self.svix
                    .verify(&secret, delivery.svix, delivery.body)
                    .map_err(|e| ReceiveError::InvalidSignature(e.to_string()))?;
                // The verifier checked both headers; read them for the event id and time.
                let id = delivery.svix.id.clone().unwrap_or_default();
                let timestamp = delivery
                    .svix
                    .timestamp
                    .as_deref()
                    .and_then(|t| t.trim().parse::<i64>().ok())
                    .ok_or_else(|| ReceiveError::InvalidSignature(SvixRejection::BadTimestamp.to_string()))?;
                Ok(VerifiedDelivery { kind: target.kind.clone(), svix: Some((id, UnixTime(timestamp))) })
            }
        }
    }

    /// Decodes a verified body and applies its events in order, each change in a transaction of
    /// its own; wakes the outbox worker when a deprovision queued provider revocations.
    pub async fn apply(
        &self,
        app: &AppId,
        verified: &VerifiedDelivery,
        body: &[u8],
    ) -> Result<DeliveryCounts, ReceiveError> {
        let message = verified.svix.as_ref().map(|(id, timestamp)| SvixMessage { id, timestamp: *timestamp });
        let adapter = self.kinds.adapter(&verified.kind);
        let events = adapter.decode_webhook(body, message.as_ref())?;
        let mut counts = DeliveryCounts::default();
        let result = self.apply_events(app, adapter.webhook_format(), &events, &mut counts).await;
        if counts.revoked_grants > 0 {
            self.outbox.wake();
        }
        result.map_err(|error| ReceiveError::Store { error, applied: counts })?;
        Ok(counts)
    }

    async fn apply_events(
        &self,
        app: &AppId,
        format: &'static str,
        events: &[DecodedEvent],
        counts: &mut DeliveryCounts,
    ) -> Result<(), StoreError> {
        for event in events {
            let changes = match event {
                DecodedEvent::Ignored { .. } => {
                    counts.ignored += 1;
                    continue;
                }
                DecodedEvent::Act(changes) => changes,
            };
            let (mut applied, mut duplicates) = (0, 0);
            for change in changes {
                match self.apply_one(app, format, change).await? {
                    LifecycleOutcome::Applied { revoked, .. } => {
                        applied += 1;
                        counts.revoked_grants += u32::try_from(revoked.len()).unwrap_or(u32::MAX);
                    }
                    LifecycleOutcome::Duplicate => duplicates += 1,
                    LifecycleOutcome::Ignored(_) => {}
                }
            }
            if applied > 0 {
                counts.processed += 1;
            } else if duplicates == changes.len() && duplicates > 0 {
                counts.duplicates += 1;
            } else {
                counts.ignored += 1;
            }
        }
        Ok(())
    }

    async fn apply_one(
        &self,
        app: &AppId,
        format: &'static str,
        event: &LifecycleEvent,
    ) -> Result<LifecycleOutcome, StoreError> {
        let audit = self.audit(
            app,
            change_action(&event.change),
            "idp",
            Some(format!("{format} webhook event {}", event.event_id)),
        );
        self.lifecycle.apply_lifecycle_event(app, event, self.clock.now(), &audit).await
    }

    /// Answers an identity provider's one-time check of the webhook URL, for kinds whose adapter
    /// names a verification header (Okta event hooks send a GET with
    /// `x-okta-verification-challenge` and the configured secret): the request must prove the
    /// secret like a delivery, and the header's value comes back to be echoed. `header` reads a
    /// request header by its lowercase name.
    pub async fn verify_endpoint(
        &self,
        app: &AppId,
        authorization: Option<&str>,
        header: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<String, ReceiveError> {
        let headers = SvixHeaders::default();
        let verified = self.authenticate(app, &Delivery { authorization, svix: &headers, body: b"" }).await?;
        let adapter = self.kinds.adapter(&verified.kind);
        let Some(name) = adapter.webhook_verification_header() else {
            return Err(MalformedPayload(format!(
                "{} webhooks have no verification request; only kinds that verify the URL with a GET (Okta event hooks) do",
                adapter.label()
            ))
            .into());
        };
        let challenge = header(name).map(|v| v.trim().to_owned()).unwrap_or_default();
        if challenge.is_empty() || challenge.len() > 256 || !challenge.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                MalformedPayload(format!("the {name} header is required: 1 to 256 printable characters")).into()
            );
        }
        Ok(challenge)
    }

    /// Authenticates and applies a delivery.
    pub async fn receive(&self, app: &AppId, delivery: &Delivery<'_>) -> Result<DeliveryCounts, ReceiveError> {
        let verified = self.authenticate(app, delivery).await?;
        self.apply(app, &verified, delivery.body).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn svix_secret_validation() {
        assert!(validate_svix_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_ok());
        assert!(validate_svix_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw3qG2gFNzHv8=").is_ok());
        for bad in [
            "",
            "whsec_",
            "C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "whsec_not base64!",
            "whsec_dGVzdA==",
            "WHSEC_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        ] {
            assert!(validate_svix_secret(bad).is_err(), "{bad}");
        }
        let e = validate_svix_secret("whsec_%%%secret%%%").unwrap_err();
        assert_eq!(e.field, "signing_secret");
        assert!(!e.to_string().contains("secret%%%"), "the message never repeats the secret");
    }

    #[test]
    fn authorization_values() {
        assert_eq!(presented_token("cwh_abc"), "cwh_abc");
        assert_eq!(presented_token("Bearer cwh_abc"), "cwh_abc");
        assert_eq!(presented_token("bearer  cwh_abc "), "cwh_abc");
        assert_eq!(presented_token("Basic cwh_abc"), "Basic cwh_abc");
    }

    #[test]
    fn sources_and_debug() {
        for s in [SecretSource::Generated, SecretSource::Provided] {
            assert_eq!(SecretSource::parse(s.as_str()), Some(s));
        }
        assert_eq!(format!("{:?}", StoredSecret::Hash(vec![1, 2, 3])), "Hash([redacted])");
        assert_eq!(format!("{:?}", StoredSecret::Sealed(SealedBox(vec![0; 4]))), "Sealed(SealedBox(4 bytes))");
        let headers = SvixHeaders::default();
        let delivery = Delivery { authorization: Some("Bearer cwh_topsecret"), svix: &headers, body: b"{}" };
        assert!(!format!("{delivery:?}").contains("topsecret"));
        let app = AppId::parse("00000000-0000-4000-8000-000000000002").unwrap();
        assert_eq!(webhook_secret_aad(&app), b"webhook-secret:00000000-0000-4000-8000-000000000002".to_vec());
    }
}
