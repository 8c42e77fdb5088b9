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
//!
//! `keys.rs` turns a fetched key set into verifiers and finds a token's candidates in it;
//! `token.rs` takes a token apart before any key is looked at.

use crate::http::HttpClient;
use async_trait::async_trait;
use custody_identity::idp::IdpConfig;
use custody_identity::jwt::TokenRejection;
use custody_identity::ports::{FetchedKeys, TokenVerifier};
use custody_identity::UnixTime;
use moka::future::Cache;
use moka::sync::Cache as SyncCache;
use serde_json::{Map, Value};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

mod keys;
mod token;

use keys::{build_key_set, lookup, Alg, KeySet, Lookup};
use token::{decode_payload, parse_token};

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
mod tests;
