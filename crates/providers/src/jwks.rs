//! JWT signature verification against an IdP's JSON Web Key Set.
//!
//! [`JwksVerifier`] implements the identity domain's [`TokenVerifier`] port:
//!
//! - Only RS256, PS256, ES256 and EdDSA are accepted; `none`, the HMAC family and anything else
//!   are refused before any key is looked at, so a token "signed" with an RSA public key as an
//!   HMAC secret (the key-confusion attack) never reaches a verifier.
//! - A key only verifies the algorithms that agree with it: RSA keys RS256 and PS256, EC P-256
//!   keys ES256, OKP Ed25519/Ed448 keys EdDSA, and only the JWK's own `alg` when it names one.
//!   Keys whose `use` is not `sig` (or whose `key_ops` lack `verify`) are skipped.
//! - The key set of each `jwks_uri` is parsed once into verifiers and kept, behind an `Arc`. It is
//!   fresh for the JWKS response's `Cache-Control: max-age` (clamped, see [`cache_ttl`]) and never
//!   longer than [`JwksSettings::max_age`]. The hot path is a map read and one signature check.
//! - A request never waits for a fetch while a key set is held: a request that finds its set past
//!   its freshness starts a refresh in the background and is answered with the set in hand
//!   (stale-while-revalidate); the last good set keeps serving while refreshes fail, for at most
//!   [`JwksSettings::max_stale`], retried at most every [`JwksSettings::failure_backoff`]. Only
//!   the very first load of a `jwks_uri` (nothing held yet) waits for its fetch.
//! - At most one fetch per `jwks_uri` is in flight; every caller that needs its result waits on
//!   the same fetch and is answered when it ends (a `watch` channel, not a lock held across it).
//! - An unknown `kid` causes at most one refetch per cooldown per `jwks_uri`; the cooldown counts
//!   from the last refetch a miss caused (not from the first fetch, so a key rotated right after
//!   start is still picked up). The token waits for that fetch (or the one already in flight) at
//!   most [`JwksSettings::miss_wait`], then is refused as an unknown key.
//! - [`JwksVerifier::refresh_now`] fetches at once (the operator's
//!   `POST /v1/apps/{app_id}/identity-provider/jwks/refresh`); tokens of a key that left the set
//!   fail from the next request, including those in the verified-token cache.
//!
//! Time (cooldowns, freshness, back-off, a remembered token's `exp`) is read from a
//! [`VerifierClock`]: the system's in production, one a test moves forward otherwise.
//!
//! Registered claims (`exp`, `iss`, `aud`, ...) are not checked here:
//! [`custody_identity::jwt::validate_claims`] does that with the caller's clock.

use crate::http::HttpClient;
use async_trait::async_trait;
use base64::Engine as _;
use custody_identity::idp::IdpConfig;
use custody_identity::jwt::TokenRejection;
use custody_identity::ports::{FetchedKeys, TokenVerifier};
use custody_identity::UnixTime;
use josekit::jwk::Jwk;
use josekit::jws::{EdDSA, JwsVerifier, ES256, PS256, RS256};
use moka::future::Cache;
use moka::sync::Cache as SyncCache;
use serde_json::{Map, Value};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// Where [`JwksVerifier`] reads the time: a monotonic instant for its refetch cooldown, key-set
/// freshness, staleness and failure back-off, and the wall clock for tokens' `exp` and the time a
/// set was fetched. Both must advance together; neither may go back.
pub trait VerifierClock: Send + Sync {
    /// Now, on a monotonic clock.
    fn instant(&self) -> Instant;
    /// Now, on the wall clock.
    fn wall(&self) -> SystemTime;
}

/// The system's clocks ([`Instant::now`], [`SystemTime::now`]): what [`JwksVerifier::new`] uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemVerifierClock;

impl VerifierClock for SystemVerifierClock {
    fn instant(&self) -> Instant {
        Instant::now()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Tuning of [`JwksVerifier`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksSettings {
    /// Tokens longer than this many bytes are refused with [`TokenRejection::TooLong`].
    pub max_token_bytes: usize,
    /// At most one refetch caused by an unknown key id per this period, per `jwks_uri`.
    pub refetch_cooldown: Duration,
    /// Lifetime of a key set whose response has no usable `Cache-Control: max-age`.
    pub default_ttl: Duration,
    /// Lower bound of a key set's lifetime (also used for `no-cache` and `no-store`).
    pub min_ttl: Duration,
    /// Upper bound of a key set's lifetime.
    pub max_ttl: Duration,
    /// After a failed fetch, how long before the next fetch of that `jwks_uri` is tried (other
    /// than a refetch for an unknown key id, which has its own cooldown).
    pub failure_backoff: Duration,
    /// How long after it was fetched a key set may still serve while refreshes fail.
    pub max_stale: Duration,
    /// The longest a key set counts as fresh, whatever its `Cache-Control` says
    /// (`CUSTODY_JWKS_MAX_AGE_SECS`): a key removed from the JWKS stops verifying at most this
    /// long (plus one background fetch) after the set holding it was fetched.
    pub max_age: Duration,
    /// How long a token whose `kid` is not in the held set waits for a refetch before it is
    /// refused (`CUSTODY_JWKS_MISS_WAIT_MS`).
    pub miss_wait: Duration,
    /// Keys beyond this many in one JWKS are ignored.
    pub max_keys: usize,
    /// The largest JWKS response accepted, in bytes.
    pub max_jwks_bytes: usize,
    /// How many key sets (distinct `jwks_uri`s) the cache holds at most.
    pub max_cached_sets: u64,
    /// Memory bound of the verified-token cache, in bytes (approximate: token, claims and key
    /// id of each entry); 0 disables it. See [`JwksVerifier::verify`].
    pub verified_cache_bytes: u64,
}

impl Default for JwksSettings {
    fn default() -> Self {
        Self {
            max_token_bytes: 16 * 1024,
            refetch_cooldown: Duration::from_secs(60),
            default_ttl: Duration::from_secs(10 * 60),
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 60 * 60),
            failure_backoff: Duration::from_secs(10),
            max_stale: Duration::from_secs(24 * 60 * 60),
            max_age: Duration::from_secs(300),
            miss_wait: Duration::from_secs(2),
            max_keys: 100,
            max_jwks_bytes: 1024 * 1024,
            max_cached_sets: 10_000,
            verified_cache_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The lifetime of a key set fetched with this `Cache-Control` header value: `max-age` clamped
/// to `[min_ttl, max_ttl]`; `min_ttl` for `no-cache` or `no-store`; `default_ttl` (clamped) when
/// the header is absent or has no parsable `max-age`.
pub fn cache_ttl(cache_control: Option<&str>, config: &JwksSettings) -> Duration {
    let min = config.min_ttl;
    let max = config.max_ttl.max(min);
    let clamp = |d: Duration| d.max(min).min(max);
    let Some(value) = cache_control else {
        return clamp(config.default_ttl);
    };
    let mut max_age = None;
    for directive in value.split(',') {
        let directive = directive.trim();
        let (name, argument) = match directive.split_once('=') {
            Some((name, argument)) => (name.trim(), Some(argument.trim().trim_matches('"'))),
            None => (directive, None),
        };
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return min;
        }
        if name.eq_ignore_ascii_case("max-age") && max_age.is_none() {
            max_age = argument.and_then(|a| a.parse::<u64>().ok());
        }
    }
    match max_age {
        Some(secs) => clamp(Duration::from_secs(secs)),
        None => clamp(config.default_ttl),
    }
}

/// The signature algorithms Custody accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Rs256,
    Ps256,
    Es256,
    EdDsa,
}

impl Alg {
    fn parse(name: &str) -> Option<Alg> {
        match name {
            "RS256" => Some(Alg::Rs256),
            "PS256" => Some(Alg::Ps256),
            "ES256" => Some(Alg::Es256),
            "EdDSA" => Some(Alg::EdDsa),
            _ => None,
        }
    }

    /// The algorithms a JWK may verify, from its key type and curve.
    fn for_key(jwk: &Jwk) -> &'static [Alg] {
        match (jwk.key_type(), jwk.curve()) {
            ("RSA", _) => &[Alg::Rs256, Alg::Ps256],
            ("EC", Some("P-256")) => &[Alg::Es256],
            ("OKP", Some("Ed25519" | "Ed448")) => &[Alg::EdDsa],
            _ => &[],
        }
    }

    fn verifier(self, jwk: &Jwk) -> Result<Box<dyn JwsVerifier>, josekit::JoseError> {
        Ok(match self {
            Alg::Rs256 => Box::new(RS256.verifier_from_jwk(jwk)?),
            Alg::Ps256 => Box::new(PS256.verifier_from_jwk(jwk)?),
            Alg::Es256 => Box::new(ES256.verifier_from_jwk(jwk)?),
            Alg::EdDsa => Box::new(EdDSA.verifier_from_jwk(jwk)?),
        })
    }
}

/// One usable (key, algorithm) pair of a JWKS.
struct VerifyingKey {
    kid: Option<String>,
    alg: Alg,
    verifier: Box<dyn JwsVerifier>,
}

/// Which key verified a token.
struct VerifiedBy {
    kid: Option<String>,
    alg: Alg,
    set: std::sync::Weak<KeySet>,
}

/// How long a token's `exp` leaves it to live at `now`; `None` when it has no usable `exp` or has
/// expired (such tokens are not remembered).
fn remaining_lifetime(claims: &Map<String, Value>, now: SystemTime) -> Option<Duration> {
    let exp = claims.get("exp")?.as_f64()?;
    let now = now.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64();
    (exp > now).then(|| Duration::from_secs_f64((exp - now).min(MAX_VERIFIED_TTL.as_secs_f64())))
}

/// A parsed JWKS.
struct KeySet {
    keys: Vec<VerifyingKey>,
    fetched_at: Instant,
    /// The same moment on the wall clock, for the operator's refresh answer.
    fetched_at_wall: SystemTime,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|k| (k.kid.as_deref(), k.alg)).collect();
        f.debug_struct("KeySet").field("keys", &kids).finish()
    }
}

/// What one fetch ended with, shared with every caller waiting for it: `None` while it runs.
type Outcome = Option<Result<Arc<KeySet>, ()>>;

/// Per-`jwks_uri` state. The lock is a plain mutex held only for a few field reads and writes,
/// never across a fetch: callers that need a fetch's result wait on its `watch` channel.
#[derive(Debug, Default)]
struct Slot {
    state: StdMutex<SlotState>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // A poisoned lock only means a panic elsewhere while it was held; the fields stay valid.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Debug, Default)]
struct SlotState {
    /// The last set fetched successfully: what requests are answered with.
    current: Option<Arc<KeySet>>,
    /// Until when `current` needs no refresh.
    fresh_until: Option<Instant>,
    /// The fetch in flight, if any.
    in_flight: Option<watch::Receiver<Outcome>>,
    /// When a miss last caused a refetch (the cooldown counts from here).
    last_miss_refetch: Option<Instant>,
    /// When a fetch last failed.
    last_failure: Option<Instant>,
}

impl SlotState {
    /// The fetch in flight, unless its task is gone (it always sends before ending; this only
    /// guards against a task that died).
    fn running(&self) -> Option<watch::Receiver<Outcome>> {
        self.in_flight.as_ref().filter(|rx| rx.has_changed().is_ok()).cloned()
    }
}

/// What [`JwksVerifier::refresh_now`] fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshedKeys {
    /// The key ids of the usable keys, sorted, without duplicates (keys without a kid are left
    /// out).
    pub kids: Vec<String>,
    /// When the set was fetched.
    pub fetched_at: SystemTime,
}

/// Why a fetch failed; logged, never returned.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error("the JWKS answered HTTP {0}")]
    Status(u16),
    #[error("the response is not a JWKS (a JSON object with a `keys` array)")]
    NotJwks,
}

/// Where a token's key was looked for.
enum Lookup<'a> {
    /// Keys to try, in order.
    Candidates(Vec<&'a VerifyingKey>),
    /// No key with this kid (or, without a kid, no key for this algorithm): worth a refetch.
    Missing,
    /// The kid exists but its key does not agree with the token's algorithm.
    Mismatch,
}

fn lookup<'a>(set: &'a KeySet, kid: Option<&str>, alg: Alg) -> Lookup<'a> {
    match kid {
        Some(kid) => {
            let mut found = false;
            let mut candidates = Vec::new();
            for key in set.keys.iter().filter(|k| k.kid.as_deref() == Some(kid)) {
                found = true;
                if key.alg == alg {
                    candidates.push(key);
                }
            }
            match (found, candidates.is_empty()) {
                (false, _) => Lookup::Missing,
                (true, true) => Lookup::Mismatch,
                (true, false) => Lookup::Candidates(candidates),
            }
        }
        None => {
            let candidates: Vec<_> = set.keys.iter().filter(|k| k.alg == alg).collect();
            if candidates.is_empty() {
                Lookup::Missing
            } else {
                Lookup::Candidates(candidates)
            }
        }
    }
}

/// A compact JWS taken apart, signature not yet checked.
struct ParsedToken<'t> {
    alg: Alg,
    kid: Option<String>,
    signing_input: &'t str,
    payload: &'t str,
    signature: Vec<u8>,
}

fn b64(part: &str) -> Result<Vec<u8>, TokenRejection> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenRejection::Malformed)
}

/// An attacker-chosen algorithm name, made safe to put in an error message.
fn shown_alg(alg: &str) -> String {
    alg.chars().take(32).map(|c| if c.is_ascii_graphic() { c } else { '?' }).collect()
}

fn parse_token(token: &str, max_bytes: usize) -> Result<ParsedToken<'_>, TokenRejection> {
    if token.len() > max_bytes {
        return Err(TokenRejection::TooLong(max_bytes));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenRejection::Malformed);
    };
    if header.is_empty() || payload.is_empty() {
        return Err(TokenRejection::Malformed);
    }
    let header: Map<String, Value> = match serde_json::from_slice(&b64(header)?) {
        Ok(Value::Object(map)) => map,
        _ => return Err(TokenRejection::Malformed),
    };
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => {
            Alg::parse(alg).ok_or_else(|| TokenRejection::DisallowedAlgorithm(shown_alg(alg)))?
        }
        _ => return Err(TokenRejection::Malformed),
    };
    // No extension is understood, so any critical one makes the token unacceptable (RFC 7515
    // section 4.1.11); this also rules out unencoded payloads (RFC 7797).
    if header.contains_key("crit") {
        return Err(TokenRejection::Malformed);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(TokenRejection::Malformed),
    };
    let signature = b64(signature)?;
    if signature.is_empty() {
        return Err(TokenRejection::Malformed);
    }
    // Everything before the last dot: `header.payload`, exactly as transmitted.
    let signing_input = token.rfind('.').map_or(token, |i| &token[..i]);
    Ok(ParsedToken { alg, kid, signing_input, payload, signature })
}

fn decode_payload(payload: &str) -> Result<Map<String, Value>, TokenRejection> {
    match serde_json::from_slice(&b64(payload)?) {
        Ok(Value::Object(claims)) => Ok(claims),
        _ => Err(TokenRejection::Malformed),
    }
}

/// Parses a JWKS body into verifiers, skipping keys that are not usable.
fn build_key_set(body: &[u8], max_keys: usize, clock: &dyn VerifierClock) -> Result<KeySet, FetchError> {
    let keys = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut object)) => match object.remove("keys") {
            Some(Value::Array(keys)) => keys,
            _ => return Err(FetchError::NotJwks),
        },
        _ => return Err(FetchError::NotJwks),
    };
    let mut usable = Vec::new();
    for value in keys.into_iter().take(max_keys) {
        let Value::Object(map) = value else { continue };
        let Ok(jwk) = Jwk::from_map(map) else { continue };
        if jwk.key_use().is_some_and(|u| u != "sig") {
            continue;
        }
        let kid = jwk.key_id().map(str::to_owned);
        let declared = jwk.algorithm();
        if declared.is_some_and(|a| Alg::parse(a).is_none()) {
            tracing::debug!(kid = ?kid, "skipping a JWK whose alg is not allowed");
            continue;
        }
        for &alg in Alg::for_key(&jwk) {
            if declared.is_some_and(|a| Alg::parse(a) != Some(alg)) {
                continue;
            }
            match alg.verifier(&jwk) {
                Ok(verifier) => usable.push(VerifyingKey { kid: kid.clone(), alg, verifier }),
                Err(_) => tracing::debug!(kid = ?kid, ?alg, "skipping a JWK that is not a usable key"),
            }
        }
    }
    Ok(KeySet { keys: usable, fetched_at: clock.instant(), fetched_at_wall: clock.wall() })
}

/// A token whose signature verified, remembered so the same token presented again (an SDK
/// reuses its user's JWT for many calls) skips the signature check. Only the signature is
/// remembered: the caller still checks `exp`, `nbf`, `iss` and `aud` on every use, and the user,
/// grants and policy are read on every request.
struct VerifiedToken {
    claims: Arc<Map<String, Value>>,
    jwks_uri: String,
    /// The key that verified it; a hit requires the current key set to still hold it.
    kid: Option<String>,
    alg: Alg,
    /// The set it was verified with, for keys without a kid (then only that very set counts).
    set: std::sync::Weak<KeySet>,
    /// Until the token's `exp` (and at most an hour).
    ttl: Duration,
    /// The end of `ttl` on the verifier's clock: the cache evicts on its own clock, this keeps a
    /// hit from outliving the token's `exp` on the verifier's.
    expires_at: SystemTime,
    weight: u32,
}

struct VerifiedExpiry;

impl moka::Expiry<[u8; 32], Arc<VerifiedToken>> for VerifiedExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<VerifiedToken>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The longest a verified token is remembered, whatever its `exp`.
const MAX_VERIFIED_TTL: Duration = Duration::from_secs(3600);

struct Inner {
    client: HttpClient,
    clock: Arc<dyn VerifierClock>,
    config: JwksSettings,
    verified: Option<Cache<[u8; 32], Arc<VerifiedToken>>>,
    /// Key sets and fetch state, per `jwks_uri`.
    slots: SyncCache<String, Arc<Slot>>,
    fetches: AtomicU64,
    fetch_failures: AtomicU64,
    verified_hits: AtomicU64,
}

/// Verifies JWT signatures with the keys published at an IdP's `jwks_uri`. Cheap to clone:
/// clones share the cache and the counters.
#[derive(Clone)]
pub struct JwksVerifier {
    inner: Arc<Inner>,
}

impl fmt::Debug for JwksVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksVerifier")
            .field("settings", &self.inner.config)
            .field("cached_sets", &self.inner.slots.entry_count())
            .field("fetches", &self.fetch_count())
            .finish_non_exhaustive()
    }
}

impl JwksVerifier {
    /// A verifier fetching key sets through `client`, on the system's clocks.
    pub fn new(client: HttpClient, config: JwksSettings) -> Self {
        Self::with_clock(client, config, Arc::new(SystemVerifierClock))
    }

    /// A verifier reading the time from `clock` (tests move theirs forward instead of sleeping).
    pub fn with_clock(client: HttpClient, config: JwksSettings, clock: Arc<dyn VerifierClock>) -> Self {
        let slots = SyncCache::builder().max_capacity(config.max_cached_sets).build();
        let verified = (config.verified_cache_bytes > 0).then(|| {
            Cache::builder()
                .max_capacity(config.verified_cache_bytes)
                .weigher(|_: &[u8; 32], v: &Arc<VerifiedToken>| v.weight)
                .expire_after(VerifiedExpiry)
                .support_invalidation_closures()
                .build()
        });
        Self {
            inner: Arc::new(Inner {
                client,
                clock,
                config,
                verified,
                slots,
                fetches: AtomicU64::new(0),
                fetch_failures: AtomicU64::new(0),
                verified_hits: AtomicU64::new(0),
            }),
        }
    }

    /// How many JWKS fetches were attempted since start (for metrics).
    pub fn fetch_count(&self) -> u64 {
        self.inner.fetches.load(Ordering::Relaxed)
    }

    /// How many verifications were answered from the verified-token cache (for metrics).
    pub fn verified_cache_hits(&self) -> u64 {
        self.inner.verified_hits.load(Ordering::Relaxed)
    }

    /// How many of those fetches failed (for metrics).
    pub fn fetch_failure_count(&self) -> u64 {
        self.inner.fetch_failures.load(Ordering::Relaxed)
    }

    /// The configuration in force.
    pub fn settings(&self) -> &JwksSettings {
        &self.inner.config
    }

    /// Verifies `token`'s signature with the keys at `jwks_uri` and returns its claims; see the
    /// module documentation for the rules. [`TokenVerifier::verify_signature`] calls this with
    /// the configuration's `jwks_uri`.
    ///
    /// A token verified before is answered from the verified-token cache while its entry lives
    /// (until the token's `exp`, at most an hour, within the cache's memory bound) and the key
    /// that verified it is still in the cached key set: a key rotated out of the JWKS, or
    /// [`JwksVerifier::forget_jwks_uri`], ends its tokens' entries.
    pub async fn verify(&self, jwks_uri: &str, token: &str) -> Result<Arc<Map<String, Value>>, TokenRejection> {
        if token.len() > self.inner.config.max_token_bytes {
            return Err(TokenRejection::TooLong(self.inner.config.max_token_bytes));
        }
        let Some(verified) = &self.inner.verified else {
            return self.verify_uncached(jwks_uri, token).await.map(|(c, _)| Arc::new(c));
        };
        let digest = token_digest(token);
        if let Some(hit) = verified.get(&digest).await {
            if hit.jwks_uri == jwks_uri && self.still_holds(&hit) {
                self.inner.verified_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(hit.claims.clone());
            }
            verified.invalidate(&digest).await;
        }
        let (claims, by) = self.verify_uncached(jwks_uri, token).await?;
        let claims = Arc::new(claims);
        let now = self.inner.clock.wall();
        if let Some(ttl) = remaining_lifetime(&claims, now) {
            let weight = u32::try_from(token.len() * 2 + 256).unwrap_or(u32::MAX);
            let entry = VerifiedToken {
                claims: claims.clone(),
                jwks_uri: jwks_uri.to_owned(),
                kid: by.kid,
                alg: by.alg,
                set: by.set,
                ttl: ttl.min(MAX_VERIFIED_TTL),
                expires_at: now + ttl.min(MAX_VERIFIED_TTL),
                weight,
            };
            verified.insert(digest, Arc::new(entry)).await;
        }
        Ok(claims)
    }

    /// Whether the key that verified a remembered token is still in the key set now held for
    /// its `jwks_uri` (no waiting: an absent set means "not sure", which is a miss). A hit on a
    /// set past its freshness starts its background refresh, so a key removed from the JWKS
    /// also ends the tokens that only ever hit this cache.
    fn still_holds(&self, hit: &VerifiedToken) -> bool {
        if self.inner.clock.wall() >= hit.expires_at {
            return false;
        }
        let Some(slot) = self.inner.slots.get(hit.jwks_uri.as_str()) else { return false };
        let current = {
            let mut state = slot.lock();
            match self.usable_set(&hit.jwks_uri, &slot, &mut state) {
                Some(current) => current,
                None => return false,
            }
        };
        match &hit.kid {
            Some(kid) => current.keys.iter().any(|k| k.kid.as_deref() == Some(kid.as_str()) && k.alg == hit.alg),
            None => hit.set.upgrade().is_some_and(|set| Arc::ptr_eq(&set, &current)),
        }
    }

    /// The full check: parse, find the key (refetching once per cooldown for an unknown kid),
    /// verify the signature. Returns the claims and which key verified them.
    async fn verify_uncached(
        &self,
        jwks_uri: &str,
        token: &str,
    ) -> Result<(Map<String, Value>, VerifiedBy), TokenRejection> {
        let parsed = parse_token(token, self.inner.config.max_token_bytes)?;
        let mut set = self.key_set(jwks_uri).await?;
        // At most two looks: the set in hand, then the set after one (possibly shared) refetch.
        for _ in 0..2 {
            match lookup(&set, parsed.kid.as_deref(), parsed.alg) {
                Lookup::Candidates(keys) => {
                    return match keys
                        .iter()
                        .find(|k| k.verifier.verify(parsed.signing_input.as_bytes(), &parsed.signature).is_ok())
                    {
                        Some(key) => {
                            let by = VerifiedBy { kid: key.kid.clone(), alg: key.alg, set: Arc::downgrade(&set) };
                            decode_payload(parsed.payload).map(|claims| (claims, by))
                        }
                        None => Err(TokenRejection::BadSignature),
                    };
                }
                Lookup::Mismatch => return Err(TokenRejection::BadSignature),
                Lookup::Missing => match self.refetch_for_miss(jwks_uri, &set).await {
                    Some(newer) => set = newer,
                    None => return Err(TokenRejection::UnknownKey),
                },
            }
        }
        Err(TokenRejection::UnknownKey)
    }

    /// Drops the key set and fetch state of `jwks_uri`, and every token it verified.
    pub async fn forget_jwks_uri(&self, jwks_uri: &str) {
        self.inner.slots.invalidate(jwks_uri);
        if let Some(verified) = &self.inner.verified {
            let uri = jwks_uri.to_owned();
            // Only fails when closures are not supported, which the builder enables.
            let _ = verified.invalidate_entries_if(move |_, v| v.jwks_uri == uri);
        }
    }

    /// Fetches the key set of `jwks_uri` now (after letting a fetch already in flight end, since
    /// it may have started before the keys changed) and makes it the set in use: tokens of a key
    /// it no longer holds fail from the next request. Waits for the fetch (bounded by the HTTP
    /// client's timeout); [`TokenRejection::KeysUnavailable`] when it fails.
    pub async fn refresh_now(&self, jwks_uri: &str) -> Result<RefreshedKeys, TokenRejection> {
        let slot = self.slot(jwks_uri);
        let running = slot.lock().running();
        if let Some(running) = running {
            let _ = wait(running, None).await;
        }
        let fetch = {
            let mut state = slot.lock();
            state.running().unwrap_or_else(|| self.start_fetch(jwks_uri, &slot, &mut state))
        };
        let set = wait(fetch, None).await.ok_or(TokenRejection::KeysUnavailable)?;
        let mut kids: Vec<String> = set.keys.iter().filter_map(|k| k.kid.clone()).collect();
        kids.sort();
        kids.dedup();
        Ok(RefreshedKeys { kids, fetched_at: set.fetched_at_wall })
    }

    /// Waits until no fetch of `jwks_uri` is in flight: lets tests and tools observe the state a
    /// background refresh leaves without guessing how long it takes.
    pub async fn settled(&self, jwks_uri: &str) {
        let Some(slot) = self.inner.slots.get(jwks_uri) else { return };
        loop {
            let running = slot.lock().running();
            match running {
                Some(fetch) => {
                    let _ = wait(fetch, None).await;
                }
                None => return,
            }
        }
    }

    fn slot(&self, jwks_uri: &str) -> Arc<Slot> {
        match self.inner.slots.get(jwks_uri) {
            Some(slot) => slot,
            None => self.inner.slots.get_with(jwks_uri.to_owned(), Default::default),
        }
    }

    /// How long ago `then` was, on the verifier's clock.
    fn since(&self, then: Instant) -> Duration {
        self.inner.clock.instant().saturating_duration_since(then)
    }

    /// The held set if it may still serve (not older than `max_stale`), starting a background
    /// refresh when it is past its freshness (unless one runs or the last one failed within
    /// the backoff).
    fn usable_set(&self, jwks_uri: &str, slot: &Arc<Slot>, state: &mut SlotState) -> Option<Arc<KeySet>> {
        let config = &self.inner.config;
        let current = state.current.clone().filter(|set| self.since(set.fetched_at) <= config.max_stale)?;
        let stale = state.fresh_until.is_none_or(|until| self.inner.clock.instant() >= until);
        let backing_off = state.last_failure.is_some_and(|t| self.since(t) < config.failure_backoff);
        if stale && !backing_off && state.running().is_none() {
            self.start_fetch(jwks_uri, slot, state);
        }
        Some(current)
    }

    /// The key set to verify with: the one held (never waiting for a refresh), or, when none is
    /// held yet, the result of the first fetch, shared by all callers.
    async fn key_set(&self, jwks_uri: &str) -> Result<Arc<KeySet>, TokenRejection> {
        let slot = self.slot(jwks_uri);
        let fetch = {
            let mut state = slot.lock();
            if let Some(set) = self.usable_set(jwks_uri, &slot, &mut state) {
                return Ok(set);
            }
            match state.running() {
                Some(running) => running,
                None if state.last_failure.is_some_and(|t| self.since(t) < self.inner.config.failure_backoff) => {
                    return Err(TokenRejection::KeysUnavailable);
                }
                None => self.start_fetch(jwks_uri, &slot, &mut state),
            }
        };
        wait(fetch, None).await.ok_or(TokenRejection::KeysUnavailable)
    }

    /// `seen` lacks the token's key. Returns a newer set to look in, if there is one: a set
    /// fetched meanwhile, or the result of the fetch in flight or of one started now when the
    /// cooldown allows, waited for at most `miss_wait`.
    async fn refetch_for_miss(&self, jwks_uri: &str, seen: &Arc<KeySet>) -> Option<Arc<KeySet>> {
        let slot = self.slot(jwks_uri);
        let fetch = {
            let mut state = slot.lock();
            if let Some(current) = &state.current {
                if !Arc::ptr_eq(current, seen) {
                    return Some(current.clone());
                }
            }
            match state.running() {
                Some(running) => running,
                None => {
                    let cooling_down =
                        state.last_miss_refetch.is_some_and(|t| self.since(t) < self.inner.config.refetch_cooldown);
                    if cooling_down {
                        return None;
                    }
                    state.last_miss_refetch = Some(self.inner.clock.instant());
                    self.start_fetch(jwks_uri, &slot, &mut state)
                }
            }
        };
        wait(fetch, Some(self.inner.config.miss_wait)).await.filter(|newer| !Arc::ptr_eq(newer, seen))
    }

    /// Starts a fetch in a task of its own (so no caller's cancellation or timeout ends it) and
    /// returns the channel its outcome is announced on. The caller holds the slot's lock and has
    /// checked that no fetch is running.
    fn start_fetch(&self, jwks_uri: &str, slot: &Arc<Slot>, state: &mut SlotState) -> watch::Receiver<Outcome> {
        let (announce, outcome) = watch::channel(None);
        state.in_flight = Some(outcome.clone());
        self.inner.fetches.fetch_add(1, Ordering::Relaxed);
        let this = self.clone();
        let slot = slot.clone();
        let jwks_uri = jwks_uri.to_owned();
        tokio::spawn(async move {
            let result = this.fetch(&jwks_uri).await;
            let outcome = {
                let mut state = slot.lock();
                state.in_flight = None;
                match result {
                    Ok((set, ttl)) => {
                        let set = Arc::new(set);
                        tracing::debug!(jwks_uri, keys = set.keys.len(), ttl_secs = ttl.as_secs(), "JWKS fetched");
                        state.fresh_until = Some(set.fetched_at + ttl);
                        state.current = Some(set.clone());
                        state.last_failure = None;
                        Ok(set)
                    }
                    Err(error) => {
                        this.inner.fetch_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(jwks_uri, %error, "JWKS fetch failed");
                        state.last_failure = Some(this.inner.clock.instant());
                        Err(())
                    }
                }
            };
            // Every receiver, including callers that gave up waiting, sees the outcome.
            let _ = announce.send(Some(outcome));
        });
        outcome
    }

    async fn fetch(&self, jwks_uri: &str) -> Result<(KeySet, Duration), FetchError> {
        let response = self.inner.client.get_with_limit(jwks_uri, self.inner.config.max_jwks_bytes).await?;
        if response.status != http::StatusCode::OK {
            return Err(FetchError::Status(response.status.as_u16()));
        }
        let set = build_key_set(&response.body, self.inner.config.max_keys, self.inner.clock.as_ref())?;
        let ttl = cache_ttl(response.header_joined("cache-control").as_deref(), &self.inner.config)
            .min(self.inner.config.max_age);
        Ok((set, ttl))
    }
}

/// Waits for a fetch's outcome, at most `bound` when given: the set it fetched, or `None` when
/// it failed or the bound passed first.
async fn wait(mut fetch: watch::Receiver<Outcome>, bound: Option<Duration>) -> Option<Arc<KeySet>> {
    let ended = async {
        match fetch.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.as_ref().and_then(|o| o.as_ref().ok().cloned()),
            Err(_) => None,
        }
    };
    match bound {
        Some(bound) => tokio::time::timeout(bound, ended).await.ok().flatten(),
        None => ended.await,
    }
}

#[async_trait]
impl TokenVerifier for JwksVerifier {
    async fn verify_signature(
        &self,
        config: &IdpConfig,
        token: &str,
    ) -> Result<Arc<Map<String, Value>>, TokenRejection> {
        self.verify(&config.jwks_uri, token).await
    }

    async fn forget(&self, config: &IdpConfig) {
        self.forget_jwks_uri(&config.jwks_uri).await;
    }

    async fn refresh_keys(&self, config: &IdpConfig) -> Result<FetchedKeys, TokenRejection> {
        let refreshed = self.refresh_now(&config.jwks_uri).await?;
        let secs = refreshed.fetched_at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Ok(FetchedKeys { kids: refreshed.kids, fetched_at: UnixTime(i64::try_from(secs).unwrap_or(i64::MAX)) })
    }
}

/// The verified-token cache's key: the SHA-256 of the token, so the cache holds no bearer token.
/// Hashed with the low-level SHA-256 context: OpenSSL 3's one-shot `SHA256()` (behind
/// `openssl::sha::sha256`) fetches the algorithm from its provider and allocates a digest
/// context on every call, which profiled at 3.5% of a reused-token hand-out's CPU where the
/// hashing itself is 0.2%.
fn token_digest(token: &str) -> [u8; 32] {
    let mut hasher = openssl::sha::Sha256::new();
    hasher.update(token.as_bytes());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use josekit::jwk::KeyPair as _;
    use josekit::jws::JwsHeader;
    use josekit::jwt::JwtPayload;
    use serde_json::json;

    fn cfg() -> JwksSettings {
        JwksSettings::default()
    }

    /// The cache key is the token's SHA-256 (FIPS 180-2's test vectors), however it is computed.
    #[test]
    fn the_cache_key_is_the_tokens_sha256() {
        let hex = |d: [u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(token_digest("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(hex(token_digest(two_blocks)), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    }

    #[test]
    fn cache_control_parsing() {
        let c = cfg();
        assert_eq!(cache_ttl(None, &c), Duration::from_secs(600));
        assert_eq!(cache_ttl(Some("public, max-age=3600"), &c), Duration::from_secs(3600));
        assert_eq!(cache_ttl(Some("max-age=\"120\", must-revalidate"), &c), Duration::from_secs(120));
        assert_eq!(cache_ttl(Some("MAX-AGE = 900"), &c), Duration::from_secs(900));
        assert_eq!(cache_ttl(Some("max-age=5"), &c), Duration::from_secs(60), "clamped up");
        assert_eq!(cache_ttl(Some("max-age=99999999"), &c), Duration::from_secs(86_400), "clamped down");
        assert_eq!(cache_ttl(Some("no-store"), &c), Duration::from_secs(60));
        assert_eq!(cache_ttl(Some("public, no-cache, max-age=3600"), &c), Duration::from_secs(60));
        assert_eq!(cache_ttl(Some("max-age=abc"), &c), Duration::from_secs(600));
        assert_eq!(cache_ttl(Some("max-age=-5"), &c), Duration::from_secs(600));
        assert_eq!(cache_ttl(Some("public"), &c), Duration::from_secs(600));
        assert_eq!(cache_ttl(Some("s-maxage=30, max-age=300"), &c), Duration::from_secs(300));
        let odd = JwksSettings { min_ttl: Duration::from_secs(100), max_ttl: Duration::from_secs(10), ..cfg() };
        assert_eq!(cache_ttl(Some("max-age=50"), &odd), Duration::from_secs(100), "min wins over a smaller max");
    }

    struct Keys {
        rsa_private: Jwk,
        rsa_public: Jwk,
    }

    fn rsa() -> Keys {
        let pair = RS256.generate_key_pair(2048).unwrap();
        let mut private_map = pair.to_jwk_private_key().as_ref().clone();
        private_map.remove("alg");
        // No kid on the signing key: josekit would put it in every header, over the test's own.
        let rsa_private = Jwk::from_map(private_map).unwrap();
        let mut rsa_public = pair.to_jwk_public_key();
        rsa_public.set_key_id("r1");
        Keys { rsa_private, rsa_public }
    }

    fn sign(alg: &str, kid: Option<&str>, private: &Jwk) -> String {
        let mut header = JwsHeader::new();
        if let Some(kid) = kid {
            header.set_key_id(kid);
        }
        let payload = JwtPayload::from_map(json!({"sub": "u"}).as_object().unwrap().clone()).unwrap();
        let signer: Box<dyn josekit::jws::JwsSigner> = match alg {
            "RS256" => Box::new(RS256.signer_from_jwk(private).unwrap()),
            "PS256" => Box::new(PS256.signer_from_jwk(private).unwrap()),
            _ => unreachable!(),
        };
        josekit::jwt::encode_with_signer(&payload, &header, &*signer).unwrap()
    }

    fn set_of(keys: Value) -> KeySet {
        build_key_set(json!({ "keys": keys }).to_string().as_bytes(), 100, &SystemVerifierClock).unwrap()
    }

    fn check(set: &KeySet, token: &str) -> Result<Map<String, Value>, TokenRejection> {
        let parsed = parse_token(token, 16 * 1024)?;
        match lookup(set, parsed.kid.as_deref(), parsed.alg) {
            Lookup::Candidates(keys) => {
                if keys.iter().any(|k| k.verifier.verify(parsed.signing_input.as_bytes(), &parsed.signature).is_ok()) {
                    decode_payload(parsed.payload)
                } else {
                    Err(TokenRejection::BadSignature)
                }
            }
            Lookup::Mismatch => Err(TokenRejection::BadSignature),
            Lookup::Missing => Err(TokenRejection::UnknownKey),
        }
    }

    /// The public JWK as a JSON object, without an `alg` member.
    fn public_map(jwk: &Jwk) -> Value {
        let mut map = jwk.as_ref().clone();
        map.remove("alg");
        Value::Object(map)
    }

    #[test]
    fn rsa_key_verifies_rs256_and_ps256_unless_its_alg_says_otherwise() {
        let k = rsa();
        let set = set_of(json!([public_map(&k.rsa_public)]));
        assert_eq!(set.keys.len(), 2);
        assert_eq!(check(&set, &sign("RS256", Some("r1"), &k.rsa_private)).unwrap()["sub"], "u");
        assert!(check(&set, &sign("PS256", Some("r1"), &k.rsa_private)).is_ok());
        assert!(check(&set, &sign("RS256", None, &k.rsa_private)).is_ok(), "no kid: try the keys for the alg");
        assert_eq!(check(&set, &sign("RS256", Some("other"), &k.rsa_private)), Err(TokenRejection::UnknownKey));

        let mut only_rs = public_map(&k.rsa_public);
        only_rs["alg"] = json!("RS256");
        let set = set_of(json!([only_rs]));
        assert_eq!(set.keys.len(), 1);
        assert_eq!(check(&set, &sign("PS256", Some("r1"), &k.rsa_private)), Err(TokenRejection::BadSignature));
    }

    #[test]
    fn unusable_keys_are_skipped() {
        let k = rsa();
        let mut enc = public_map(&k.rsa_public);
        enc["use"] = json!("enc");
        let mut rs384 = public_map(&k.rsa_public);
        rs384["alg"] = json!("RS384");
        let mut verify_ops_missing = public_map(&k.rsa_public);
        verify_ops_missing["key_ops"] = json!(["encrypt"]);
        let p384 = Value::Object(ES256.generate_key_pair().unwrap().to_jwk_public_key().as_ref().clone());
        let mut p384 = p384;
        p384["crv"] = json!("P-384");
        let set = set_of(
            json!([enc, rs384, verify_ops_missing, p384, {"kty": "oct", "k": "c2VjcmV0"}, "junk", {"kty": "RSA"}]),
        );
        assert!(set.keys.is_empty(), "{set:?}");
        assert!(matches!(build_key_set(b"[]", 10, &SystemVerifierClock), Err(FetchError::NotJwks)));
        assert!(matches!(build_key_set(b"{\"keys\": {}}", 10, &SystemVerifierClock), Err(FetchError::NotJwks)));
    }

    #[test]
    fn token_shape_rules() {
        let long = "a".repeat(100);
        assert_eq!(parse_token(&long, 99).err(), Some(TokenRejection::TooLong(99)));
        for garbage in ["", "abc", "a.b", "a.b.c.d", "!!.e30.c2ln", "e30.e30.c2ln", ".e30.c2ln"] {
            assert!(matches!(parse_token(garbage, 1000), Err(TokenRejection::Malformed)), "{garbage}");
        }
        let header = |h: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.to_string());
        let with = |h: Value| format!("{}.e30.c2ln", header(h));
        assert!(
            matches!(parse_token(&with(json!({"alg": "none"})), 1000), Err(TokenRejection::DisallowedAlgorithm(a)) if a == "none")
        );
        assert!(
            matches!(parse_token(&with(json!({"alg": "HS256"})), 1000), Err(TokenRejection::DisallowedAlgorithm(a)) if a == "HS256")
        );
        assert!(matches!(
            parse_token(&with(json!({"alg": "RS256", "crit": ["b64"]})), 1000),
            Err(TokenRejection::Malformed)
        ));
        assert!(matches!(parse_token(&with(json!({"alg": "RS256", "kid": 5})), 1000), Err(TokenRejection::Malformed)));
        let shown = match parse_token(&with(json!({"alg": "x\u{1}".repeat(40)})), 1000) {
            Err(TokenRejection::DisallowedAlgorithm(a)) => a,
            _ => panic!(),
        };
        assert_eq!(shown.len(), 32);
        assert!(shown.chars().all(|c| c.is_ascii_graphic()));
        let token = with(json!({"alg": "ES256", "kid": "k"}));
        let ok = parse_token(&token, 1000).map_err(|_| ()).unwrap();
        assert_eq!(ok.signing_input, format!("{}.e30", header(json!({"alg": "ES256", "kid": "k"}))));
        assert_eq!(ok.signature, b"sig");
    }

    // Property tests (issue 15 item 17): compact JWS parsing never panics, only allowed
    // algorithms get through, and no tampering yields claims the signer did not sign.
    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::sync::OnceLock;

        /// One RSA key and a token it signed, made once (key generation is slow).
        fn signed() -> &'static (KeySet, String) {
            static SIGNED: OnceLock<(KeySet, String)> = OnceLock::new();
            SIGNED.get_or_init(|| {
                let k = rsa();
                (set_of(json!([public_map(&k.rsa_public)])), sign("RS256", Some("r1"), &k.rsa_private))
            })
        }

        fn b64s(bytes: &[u8]) -> String {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        }

        proptest! {
            #[test]
            fn any_text_parses_or_is_refused(token in ".{0,400}") {
                if let Ok(parsed) = parse_token(&token, 16 * 1024) {
                    prop_assert!(!parsed.signature.is_empty());
                    prop_assert_eq!(token.matches('.').count(), 2);
                }
            }

            #[test]
            fn any_header_yields_an_allowed_algorithm_or_a_refusal(
                header in proptest::collection::vec(any::<u8>(), 0..120),
                alg in prop_oneof![
                    Just("RS256".to_owned()),
                    Just("none".to_owned()),
                    Just("HS256".to_owned()),
                    Just("EdDSA".to_owned()),
                    ".{0,8}",
                ],
                crit in any::<bool>(),
            ) {
                let raw = format!("{}.e30.c2ln", b64s(&header));
                let _ = parse_token(&raw, 16 * 1024);
                let mut h = json!({"alg": alg});
                if crit {
                    h["crit"] = json!(["b64"]);
                }
                let token = format!("{}.e30.c2ln", b64s(h.to_string().as_bytes()));
                match parse_token(&token, 16 * 1024) {
                    Ok(_) => prop_assert!(!crit && Alg::parse(&alg).is_some()),
                    Err(TokenRejection::DisallowedAlgorithm(shown)) => {
                        prop_assert!(Alg::parse(&alg).is_none());
                        prop_assert!(shown.chars().all(|c| c.is_ascii_graphic()) && shown.len() <= 32);
                    }
                    Err(_) => {}
                }
            }

            #[test]
            fn no_tampering_verifies_to_other_claims(position in 0usize..2000, replacement in "[A-Za-z0-9_.-]") {
                let (set, token) = signed();
                let original = check(set, token).unwrap();
                let mut bytes = token.clone().into_bytes();
                let at = position % bytes.len();
                bytes[at] = replacement.as_bytes()[0];
                let tampered = String::from_utf8(bytes).unwrap();
                if let Ok(claims) = check(set, &tampered) {
                    prop_assert_eq!(claims, original.clone(), "a changed token verified to other claims");
                }
            }

            #[test]
            fn any_jwks_body_builds_a_set_or_is_refused(body in proptest::collection::vec(any::<u8>(), 0..300)) {
                let _ = build_key_set(&body, 10, &SystemVerifierClock);
            }

            #[test]
            fn any_cache_control_gives_a_lifetime_within_bounds(header in ".{0,60}") {
                let c = cfg();
                let ttl = cache_ttl(Some(&header), &c);
                prop_assert!(ttl >= c.min_ttl && ttl <= c.max_ttl);
            }
        }
    }
}
