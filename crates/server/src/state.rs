//! The composition root: builds the adapters from the configuration and hands them to the use
//! cases as port trait objects. Nothing about who may act is cached here: API keys, user status
//! and grants are read from the database on every request, so a deletion or deprovisioning holds
//! on every instance at once.

use crate::bootstrap::{self, Secrets};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::portal::session::PortalSessions;
use crate::portal::SignInThrottle;
use crate::problem::ApiError;
use custody_identity::ports::{Clock, Random, SecretHasher};
use custody_identity::service::{IdentityPorts, IdentityService, IdentitySettings};
use custody_identity::signin::{SignInPorts, SignInService, SignInSettings};
use custody_identity::{ApiKeyRecord, IdpConfig, IssuerUrlPolicy, UnixTime};
use custody_providers::crypto::{HmacHasher, KeyRing};
use custody_providers::discovery::HttpDiscovery;
use custody_providers::http::upstream::UpstreamClient;
use custody_providers::http::{HttpClient, HttpClientSettings};
use custody_providers::jwks::{JwksSettings, JwksVerifier};
use custody_providers::oauth::HttpOAuthClient;
use custody_providers::oidc::HttpOidcClient;
use custody_providers::OsRandom;
use custody_store::{Store, StoreOptions};
use custody_vault::handout::{HandoutCaller, HandoutPorts, HandoutService};
use custody_vault::service::{VaultPorts, VaultService, VaultSettings};
use custody_vault::webhook::{OutboxWaker, WebhookPorts, WebhookService};
use custody_vault::Cipher;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        UnixTime(i64::try_from(secs).unwrap_or(i64::MAX))
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    #[error("CUSTODY_MASTER_KEYS: {0}")]
    MasterKeys(String),
    #[error("database: {0}")]
    Database(String),
    #[error("the instance secret could not be opened with the configured master keys; was CUSTODY_MASTER_KEYS changed without keeping the old key?")]
    InstanceSecret,
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("outbound HTTP client: {0}")]
    HttpClient(String),
}

/// Hash purpose for the admin token.
const ADMIN_TOKEN_PURPOSE: &str = "admin-token";
/// The instance secret holding the keyed-hash key, sealed by the key ring.
const HASH_KEY_NAME: &str = "hash-key";

/// Everything a request handler needs: the use cases, and what belongs to the server itself
/// (configuration, metrics, the portal's sessions and throttle, the outbox waker, the proxy's
/// client). The adapters behind the use cases are not reachable from here, so a handler can only
/// act through a use case.
pub struct AppState {
    config: Config,
    public_url: String,
    identity: IdentityService,
    vault: VaultService,
    /// `POST /v1/token` in one read.
    handouts: HandoutService,
    /// Sign-in through the app's IdP: OIDC client settings, SDK sessions, the Wallet.
    signin: SignInService,
    /// Lifecycle webhooks: settings and deliveries.
    webhooks: WebhookService,
    /// The JWKS cache behind `identity`, held for its counters only.
    jwks: Arc<JwksVerifier>,
    /// The store behind the use cases, held for its counters only (`/metrics`).
    store_counters: Store,
    /// For the admin-token check.
    hasher: Arc<HmacHasher>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    /// The Developer Portal's operator sessions.
    portal_sessions: PortalSessions,
    /// Failed Developer Portal sign-ins, for the growing lock-out.
    portal_throttle: SignInThrottle,
    /// Wakes the revocation outbox worker after a revocation queued provider calls.
    outbox_wake: Arc<tokio::sync::Notify>,
    /// The proxy's outbound client (streaming, same address rules).
    upstream: UpstreamClient,
    admin_token_hash: Vec<u8>,
    /// Keys whose `last_used_at` was written in the last minute, to coalesce those writes.
    key_touches: moka::sync::Cache<String, ()>,
}

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState").field("public_url", &self.public_url).finish_non_exhaustive()
    }
}

impl AppState {
    /// Builds the adapters and use cases. `public_url` is the configured one, or derived from
    /// the bound address when none was configured.
    pub async fn build(config: Config, public_url: String, secrets: &Secrets) -> Result<AppState, StartError> {
        Self::build_with_clock(config, public_url, secrets, Arc::new(SystemClock)).await
    }

    /// As [`AppState::build`], with the clock every use case reads "now" from (tests pass one
    /// they move forward instead of sleeping).
    pub async fn build_with_clock(
        config: Config,
        public_url: String,
        secrets: &Secrets,
        clock: Arc<dyn Clock>,
    ) -> Result<AppState, StartError> {
        let random = Arc::new(OsRandom);
        let cipher =
            Arc::new(KeyRing::parse(secrets.master_keys.expose()).map_err(|e| StartError::MasterKeys(e.to_string()))?);
        let store_options =
            StoreOptions { max_connections: config.database_max_connections, ..StoreOptions::default() };
        let store = Store::connect(&config.database_url, store_options)
            .await
            .map_err(|e| StartError::Database(e.to_string()))?;
        let hash_key = instance_hash_key(&store, cipher.as_ref(), random.as_ref()).await?;
        let hasher = Arc::new(HmacHasher::new(&hash_key).map_err(|_| StartError::InstanceSecret)?);
        let admin_token_hash = hasher.hash(ADMIN_TOKEN_PURPOSE, secrets.admin_token.expose().as_bytes());

        let http = HttpClient::new(HttpClientSettings {
            allow_private_addresses: config.allow_insecure_issuers,
            ..HttpClientSettings::default()
        })
        .map_err(|e| StartError::HttpClient(e.to_string()))?;
        let upstream = custody_providers::http::upstream::UpstreamClient::new(
            custody_providers::http::upstream::UpstreamSettings {
                connect_timeout: Duration::from_secs(10),
                overall_timeout: Duration::from_secs(config.proxy_timeout_secs),
                allow_private_addresses: config.allow_insecure_issuers,
            },
        )
        .map_err(|e| StartError::HttpClient(e.to_string()))?;
        let discovery = Arc::new(HttpDiscovery::new(http.clone()));
        let verifier = Arc::new(JwksVerifier::new(
            http.clone(),
            JwksSettings {
                refetch_cooldown: Duration::from_secs(config.jwks_refetch_cooldown_secs),
                max_age: Duration::from_secs(config.jwks_max_age_secs),
                miss_wait: Duration::from_millis(config.jwks_miss_wait_ms),
                max_token_bytes: config.max_token_bytes,
                verified_cache_bytes: config.token_cache_mb * 1024 * 1024,
                ..JwksSettings::default()
            },
        ));
        let kinds = custody_providers::idp::registry();
        // One database serves every storage role; each use case gets only the roles it uses.
        let db = Arc::new(store.clone());
        let identity = IdentityService::new(
            IdentityPorts {
                health: db.clone(),
                apps: db.clone(),
                api_keys: db.clone(),
                idps: db.clone(),
                users: db.clone(),
                discovery,
                verifier: verifier.clone(),
                clock: clock.clone(),
                random: random.clone(),
                hasher: hasher.clone(),
                audit: db.clone(),
            },
            IdentitySettings {
                issuer_policy: if config.allow_insecure_issuers {
                    IssuerUrlPolicy::AllowInsecureLoopback
                } else {
                    IssuerUrlPolicy::HttpsOnly
                },
                leeway_secs: config.jwt_leeway_secs,
                kinds: kinds.clone(),
            },
        );
        let signin = SignInService::new(
            SignInPorts {
                identity: identity.clone(),
                idps: db.clone(),
                users: db.clone(),
                clients: db.clone(),
                states: db.clone(),
                sdk_sessions: db.clone(),
                wallet_sessions: db.clone(),
                audit: db.clone(),
                oidc: Arc::new(HttpOidcClient::new(http.clone())),
                cipher: cipher.clone(),
                hasher: hasher.clone(),
                clock: clock.clone(),
                random: random.clone(),
            },
            SignInSettings::new(public_url.clone()),
        );
        // Provider calls get their own timeout: a hanging provider answers within it, so the
        // callers sharing a refresh attempt get an answer (or the still-valid token) in time.
        let provider_http = HttpClient::new(HttpClientSettings {
            allow_private_addresses: config.allow_insecure_issuers,
            request_timeout: Duration::from_millis(config.provider_timeout_ms),
            connect_timeout: Duration::from_millis(config.provider_timeout_ms).min(Duration::from_secs(5)),
            ..HttpClientSettings::default()
        })
        .map_err(|e| StartError::HttpClient(e.to_string()))?;
        let vault = VaultService::new(
            VaultPorts {
                providers: db.clone(),
                policies: db.clone(),
                grants: db.clone(),
                credentials: db.clone(),
                lifecycle: db.clone(),
                connect_states: db.clone(),
                outbox: db.clone(),
                sealed: db.clone(),
                maintenance: db.clone(),
                audit: db.clone(),
                locks: db.clone(),
                oauth: Arc::new(HttpOAuthClient::new(provider_http)),
                cipher: cipher.clone(),
                clock: clock.clone(),
                random: random.clone(),
            },
            VaultSettings {
                refresh_window_secs: config.refresh_window_secs,
                public_url: public_url.clone(),
                outbox_retry_base_secs: config.outbox_retry_base_secs,
                allow_insecure_api_base: config.allow_insecure_issuers,
            },
        );
        let handouts = HandoutService::new(
            identity.clone(),
            vault.clone(),
            HandoutPorts { contexts: db.clone(), clock: clock.clone() },
        );
        let outbox_wake = Arc::new(tokio::sync::Notify::new());
        let webhooks = WebhookService::new(WebhookPorts {
            store: db.clone(),
            lifecycle: db,
            svix: Arc::new(custody_providers::SvixSignatures),
            hasher: hasher.clone(),
            cipher: cipher.clone(),
            clock: clock.clone(),
            random: random.clone(),
            outbox: Arc::new(NotifyOutbox(outbox_wake.clone())),
            kinds,
            public_url: public_url.clone(),
        });
        let store_counters = store.clone();
        let portal_sessions = PortalSessions::new(store, hasher.clone(), random, clock.clone());
        Ok(AppState {
            config,
            public_url,
            identity,
            vault,
            handouts,
            signin,
            webhooks,
            jwks: verifier,
            store_counters,
            hasher,
            clock,
            metrics: Metrics::default(),
            portal_sessions,
            portal_throttle: SignInThrottle::default(),
            outbox_wake,
            upstream,
            admin_token_hash,
            key_touches: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
        })
    }

    /// The configuration the server started with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The public base URL (configured, or derived from the bound address).
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Apps, API keys, identity providers, users and audit rows.
    pub fn identity(&self) -> &IdentityService {
        &self.identity
    }

    /// Providers, policies, grants, hand-out, proxy leases, revocation and maintenance.
    pub fn vault(&self) -> &VaultService {
        &self.vault
    }

    /// The one-read hand-out.
    pub fn handouts(&self) -> &HandoutService {
        &self.handouts
    }

    /// Admits an API key for the one-read hand-out ([`HandoutService::admit`]): against the
    /// remembered record, else the store; the hand-out confirms it in its read.
    pub async fn admit_remembered_key(&self, presented: &str) -> Result<Arc<HandoutCaller>, ApiError> {
        let caller = self.handouts.admit(presented).await?.ok_or_else(ApiError::unauthorized)?;
        self.note_key_use(&caller.key);
        Ok(caller)
    }

    /// Sign-in through the app's IdP: OIDC client settings, SDK sessions, the Wallet.
    pub fn signin(&self) -> &SignInService {
        &self.signin
    }

    /// Lifecycle webhooks: settings and deliveries.
    pub fn webhooks(&self) -> &WebhookService {
        &self.webhooks
    }

    /// The JWKS cache, for its counters (`/metrics`) and for tests that wait for a background
    /// fetch; verification and key refreshes go through [`Self::identity`].
    pub fn jwks(&self) -> &JwksVerifier {
        &self.jwks
    }

    /// The current time as the server tells it (cookie lifetimes, the portal's throttle).
    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// Statements the store has sent to the database (see [`Store::database_calls`]), for
    /// `/metrics`.
    pub fn database_calls(&self) -> u64 {
        self.store_counters.database_calls()
    }

    /// Request counts and latencies for `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The Developer Portal's operator sessions.
    pub fn portal_sessions(&self) -> &PortalSessions {
        &self.portal_sessions
    }

    /// Failed Developer Portal sign-ins, for the growing lock-out.
    pub fn portal_throttle(&self) -> &SignInThrottle {
        &self.portal_throttle
    }

    /// The proxy's outbound client.
    pub fn upstream(&self) -> &UpstreamClient {
        &self.upstream
    }

    /// Whether `presented` is the admin token (constant-time comparison of keyed hashes).
    pub fn is_admin_token(&self, presented: &str) -> bool {
        self.hasher.verify(ADMIN_TOKEN_PURPOSE, presented.as_bytes(), &self.admin_token_hash)
    }

    /// The live API key `presented` belongs to, or 401. Looked up in the database on every
    /// call (one indexed read), so a deleted key fails at once on every instance.
    pub async fn authenticate_api_key(&self, presented: &str) -> Result<ApiKeyRecord, ApiError> {
        let record = self.identity.authenticate_api_key(presented).await?.ok_or_else(ApiError::unauthorized)?;
        self.note_key_use(&record);
        Ok(record)
    }

    /// As [`Self::authenticate_api_key`], with the app's identity provider configuration read in
    /// the same statement.
    pub async fn authenticate_api_key_with_idp(
        &self,
        presented: &str,
    ) -> Result<(ApiKeyRecord, Option<IdpConfig>), ApiError> {
        let (record, idp) =
            self.identity.authenticate_api_key_with_idp(presented).await?.ok_or_else(ApiError::unauthorized)?;
        self.note_key_use(&record);
        Ok((record, idp))
    }

    /// Records the key's `last_used_at`, at most once a minute per key, off the request path.
    fn note_key_use(&self, record: &ApiKeyRecord) {
        if self.key_touches.get(record.id.as_str()).is_none() {
            self.key_touches.insert(record.id.as_str().to_owned(), ());
            let (identity, id) = (self.identity.clone(), record.id.clone());
            tokio::spawn(async move {
                if let Err(e) = identity.record_key_use(&id).await {
                    tracing::warn!(error = %e, "could not record API key use");
                }
            });
        }
    }

    /// Asks the outbox worker to run now (after revocations queued provider calls).
    pub fn wake_outbox(&self) {
        self.outbox_wake.notify_one();
    }

    /// Resolves when [`Self::wake_outbox`] was called (for the outbox worker).
    pub async fn outbox_woken(&self) {
        self.outbox_wake.notified().await;
    }
}

/// Wakes the outbox worker for the webhook use case.
#[derive(Debug)]
struct NotifyOutbox(Arc<tokio::sync::Notify>);

impl OutboxWaker for NotifyOutbox {
    fn wake(&self) {
        self.0.notify_one();
    }
}

/// The keyed-hash key shared by every instance on this database: generated once, sealed by the
/// key ring, stored in the database; whichever instance stores it first wins.
pub async fn instance_hash_key(store: &Store, cipher: &KeyRing, random: &OsRandom) -> Result<Vec<u8>, StartError> {
    let aad = custody_vault::ports::instance_secret_aad(HASH_KEY_NAME);
    let stored =
        match store.get_instance_secret(HASH_KEY_NAME).await.map_err(|e| StartError::Database(e.to_string()))? {
            Some(sealed) => sealed,
            None => {
                let sealed = cipher.seal(&random.bytes(32), &aad).map_err(|_| StartError::InstanceSecret)?;
                store
                    .put_instance_secret_if_absent(HASH_KEY_NAME, &sealed.0)
                    .await
                    .map_err(|e| StartError::Database(e.to_string()))?
            }
        };
    cipher.open(&custody_vault::SealedBox(stored), &aad).map_err(|_| StartError::InstanceSecret)
}
