//! Portal sessions and sign-in throttling.
//!
//! A session token is 32 random bytes (base64url) that lives only in the `custody_portal` cookie;
//! the database keeps its keyed hash. The CSRF token of a session is another keyed hash of the
//! token (no storage, tied to the session, unguessable without the cookie).
//!
//! [`SignInThrottle`] counts failed sign-ins per client key: after [`FREE_FAILURES`] failures
//! each further failure locks the key out for twice as long as the last (from 2 s up to
//! [`MAX_LOCK_SECS`]); a successful sign-in clears it. It takes the time as an argument, so tests
//! drive it with an explicit clock.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use custody_identity::ports::{Clock, Random, SecretHasher, StoreError};
use custody_identity::UnixTime;
use custody_store::{PortalSession, Store};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// How long a session lasts.
pub const SESSION_SECS: i64 = 8 * 3600;
/// Failures allowed before the lock-out starts.
pub const FREE_FAILURES: u32 = 5;
/// The longest lock-out.
pub const MAX_LOCK_SECS: i64 = 15 * 60;
/// Keys remembered at most (oldest forgotten first), so the map cannot grow without bound.
const MAX_KEYS: usize = 10_000;

const SESSION_PURPOSE: &str = "portal-session";
const CSRF_PURPOSE: &str = "portal-csrf";

/// A new session token.
fn new_token(random: &dyn Random) -> String {
    URL_SAFE_NO_PAD.encode(random.bytes(32))
}

/// What the database stores for `token`.
fn token_hash(hasher: &dyn SecretHasher, token: &str) -> String {
    URL_SAFE_NO_PAD.encode(hasher.hash(SESSION_PURPOSE, token.as_bytes()))
}

/// The CSRF token of the session `token`.
fn csrf_token(hasher: &dyn SecretHasher, token: &str) -> String {
    URL_SAFE_NO_PAD.encode(hasher.hash(CSRF_PURPOSE, token.as_bytes()))
}

/// Whether `presented` is the CSRF token of `token` (constant-time).
fn csrf_matches(hasher: &dyn SecretHasher, token: &str, presented: &str) -> bool {
    match URL_SAFE_NO_PAD.decode(presented.as_bytes()) {
        Ok(bytes) => hasher.verify(CSRF_PURPOSE, token.as_bytes(), &bytes),
        Err(_) => false,
    }
}

/// The operator's signed-in browsers. Portal sessions belong to the server (the portal is a
/// surface of this binary, not a domain concept), so this is the one place outside the
/// composition root that holds the store, and it only reads and writes `portal_sessions`.
pub struct PortalSessions {
    store: Store,
    hasher: Arc<dyn SecretHasher>,
    random: Arc<dyn Random>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for PortalSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortalSessions").finish_non_exhaustive()
    }
}

impl PortalSessions {
    pub fn new(store: Store, hasher: Arc<dyn SecretHasher>, random: Arc<dyn Random>, clock: Arc<dyn Clock>) -> Self {
        Self { store, hasher, random, clock }
    }

    /// Starts a session of [`SESSION_SECS`] now; returns its token, which only the cookie
    /// carries (the database keeps its keyed hash).
    pub async fn start(&self) -> Result<String, StoreError> {
        let token = new_token(self.random.as_ref());
        let now = self.clock.now();
        let stored = PortalSession {
            id_hash: token_hash(self.hasher.as_ref(), &token),
            created_at: now,
            expires_at: UnixTime(now.0 + SESSION_SECS),
        };
        self.store.create_portal_session(&stored).await?;
        Ok(token)
    }

    /// Whether `token` names a session that has not expired. An expired one is deleted on the
    /// way (best effort: it is refused either way).
    pub async fn is_live(&self, token: &str) -> Result<bool, StoreError> {
        let hash = token_hash(self.hasher.as_ref(), token);
        match self.store.get_portal_session(&hash).await? {
            Some(s) if s.expires_at.0 > self.clock.now().0 => Ok(true),
            Some(_) => {
                let _ = self.store.delete_portal_session(&hash).await;
                Ok(false)
            }
            None => Ok(false),
        }
    }

    /// Ends the session `token` (sign-out).
    pub async fn end(&self, token: &str) -> Result<(), StoreError> {
        self.store.delete_portal_session(&token_hash(self.hasher.as_ref(), token)).await.map(|_| ())
    }

    /// The CSRF token of the session `token`.
    pub fn csrf_token(&self, token: &str) -> String {
        csrf_token(self.hasher.as_ref(), token)
    }

    /// Whether `presented` is the CSRF token of the session `token` (constant-time).
    pub fn csrf_matches(&self, token: &str, presented: &str) -> bool {
        csrf_matches(self.hasher.as_ref(), token, presented)
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    locked_until: UnixTime,
    last: UnixTime,
}

/// Failed portal sign-ins per client key (see the module docs).
#[derive(Debug, Default)]
pub struct SignInThrottle {
    failures: Mutex<HashMap<String, Failures>>,
}

impl SignInThrottle {
    /// `Some(seconds to wait)` while `key` is locked out at `now`.
    pub fn locked_for(&self, key: &str, now: UnixTime) -> Option<i64> {
        let map = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(key).map(|f| f.locked_until.0 - now.0).filter(|wait| *wait > 0)
    }

    /// Records a failure; returns the number of failures so far and the lock-out it started.
    pub fn fail(&self, key: &str, now: UnixTime) -> (u32, i64) {
        let mut map = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            if let Some(oldest) = map.iter().min_by_key(|(_, f)| f.last.0).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        let entry = map.entry(key.to_owned()).or_insert(Failures { count: 0, locked_until: now, last: now });
        // A day without failures starts the count over.
        if now.0 - entry.last.0 > 86_400 {
            entry.count = 0;
        }
        entry.count += 1;
        entry.last = now;
        let lock = if entry.count > FREE_FAILURES {
            let doublings = (entry.count - FREE_FAILURES).min(20);
            (1i64 << doublings).min(MAX_LOCK_SECS)
        } else {
            0
        };
        entry.locked_until = UnixTime(now.0 + lock);
        (entry.count, lock)
    }

    /// A successful sign-in clears the key.
    pub fn succeed(&self, key: &str) {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_out_grows_after_the_free_failures_and_a_success_clears_it() {
        let throttle = SignInThrottle::default();
        let t0 = UnixTime(1_000);
        for n in 1..=FREE_FAILURES {
            assert_eq!(throttle.fail("a", t0), (n, 0));
            assert_eq!(throttle.locked_for("a", t0), None);
        }
        assert_eq!(throttle.fail("a", t0), (FREE_FAILURES + 1, 2));
        assert_eq!(throttle.locked_for("a", t0), Some(2));
        assert_eq!(throttle.locked_for("a", UnixTime(1_002)), None);
        assert_eq!(throttle.fail("a", UnixTime(1_002)), (FREE_FAILURES + 2, 4));
        assert_eq!(throttle.locked_for("b", t0), None, "other clients are not affected");
        for _ in 0..30 {
            throttle.fail("a", UnixTime(1_010));
        }
        assert_eq!(throttle.locked_for("a", UnixTime(1_010)), Some(MAX_LOCK_SECS));
        throttle.succeed("a");
        assert_eq!(throttle.locked_for("a", UnixTime(1_010)), None);
        assert_eq!(throttle.fail("a", UnixTime(1_010)), (1, 0));
    }
}
