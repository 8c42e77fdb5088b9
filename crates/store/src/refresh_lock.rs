//! [`RefreshLock`] for [`Store`]: single flight of a grant's refresh, so a refresh token is never
//! spent twice.
//!
//! Two layers, taken in this order and released in the reverse one:
//! - In the process: one `tokio::sync::Mutex` per grant, in a map shared by the clones of a
//!   [`Store`]. An entry lives only while someone holds or waits for it, so the map does not grow
//!   with the number of grants ever refreshed.
//! - Across processes, on PostgreSQL: a session advisory lock (`pg_advisory_lock`) on a 64-bit
//!   hash of the grant id, held by a connection of a small pool of its own. Keeping those
//!   sessions apart from the main pool means held locks can never starve the queries the refresh
//!   itself runs. [`RefreshGuard::release`] unlocks and returns the session to its pool; a guard
//!   dropped without release (or a release that fails or is cancelled) detaches the session from
//!   the pool and closes it, which ends the lock with it.
//!
//! On SQLite the in-process lock is all there is: several processes refreshing through one SQLite
//! file are not supported (SQLite is the single-machine, single-process deployment; so are two
//! [`Store`]s opened separately on the same file in one process).
//!
//! Waiting is bounded by [`crate::StoreOptions::refresh_lock_timeout`] (in the process, for a
//! session, and server-side through `lock_timeout`); past it, `lock` fails with
//! [`RefreshLockError::TimedOut`].

use crate::pool::{checkout_postgres, PgConn};
use crate::store::Store;
use async_trait::async_trait;
use custody_vault::grant::GrantId;
use custody_vault::ports::{RefreshGuard, RefreshLock, RefreshLockError};
use diesel::sql_types::{BigInt, Bool};
use diesel::QueryableByName;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::RunQueryDsl;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

/// The per-grant mutexes of one process, by grant id.
type LocalLocks = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

/// Extra time the client gives a lock statement over the server-side `lock_timeout`, so the
/// server's clean error normally wins over dropping the session.
const CLIENT_GRACE: Duration = Duration::from_secs(2);

/// The refresh locks of a [`Store`] (shared by its clones).
pub(crate) struct RefreshLocks {
    local: Arc<LocalLocks>,
    /// PostgreSQL only: the sessions that hold advisory locks.
    sessions: Option<Pool<PgConn>>,
    timeout: Duration,
}

impl fmt::Debug for RefreshLocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshLocks")
            .field("cross_process", &self.sessions.is_some())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RefreshLocks {
    /// Locks in this process only (SQLite), or also across processes through `sessions`.
    pub(crate) fn new(sessions: Option<Pool<PgConn>>, timeout: Duration) -> Self {
        Self { local: Arc::new(Mutex::new(HashMap::new())), sessions, timeout }
    }

    /// How many grants have an in-process lock entry (held or waited for): for tests.
    #[cfg(feature = "testing")]
    pub(crate) fn local_entries(&self) -> usize {
        self.local.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    async fn lock(&self, grant: &GrantId) -> Result<Guard, RefreshLockError> {
        let deadline = Instant::now() + self.timeout;
        let local = LocalSlot::acquire(&self.local, grant.as_str(), self.timeout).await?;
        let session = match &self.sessions {
            None => None,
            Some(pool) => {
                let key = advisory_key(grant);
                let wait = deadline.saturating_duration_since(Instant::now());
                Some(Session { conn: advisory_lock(pool, key, wait).await?, key })
            }
        };
        Ok(Guard { session, _local: local })
    }
}

fn timed_out() -> RefreshLockError {
    RefreshLockError::TimedOut
}

/// The advisory-lock key of a grant: FNV-1a (64-bit) of a fixed prefix and the grant id. A
/// collision only makes two grants' refreshes wait for each other; the prefix keeps the keys
/// apart from other users of `bigint` advisory locks (the migration lock is one fixed key).
fn advisory_key(grant: &GrantId) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let hash = b"custody:refresh:"
        .iter()
        .chain(grant.as_str().as_bytes())
        .fold(OFFSET, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME));
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// One grant's entry in the in-process map, waited for or held. Dropping it releases the mutex
/// and removes the entry when nobody else holds or waits for it.
struct LocalSlot {
    map: Arc<LocalLocks>,
    key: String,
    /// While waiting: our handle on the entry's mutex.
    waiting: Option<Arc<tokio::sync::Mutex<()>>>,
    /// Once acquired.
    held: Option<OwnedMutexGuard<()>>,
}

impl LocalSlot {
    async fn acquire(map: &Arc<LocalLocks>, key: &str, timeout: Duration) -> Result<LocalSlot, RefreshLockError> {
        let mutex = {
            let mut locks = map.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(locks.entry(key.to_owned()).or_default())
        };
        // From here on, dropping `slot` (an error, a timeout, a cancelled future) cleans up.
        let mut slot =
            LocalSlot { map: Arc::clone(map), key: key.to_owned(), waiting: Some(Arc::clone(&mutex)), held: None };
        let guard = tokio::time::timeout(timeout, mutex.lock_owned()).await.map_err(|_| timed_out())?;
        slot.held = Some(guard);
        slot.waiting = None;
        Ok(slot)
    }
}

impl Drop for LocalSlot {
    fn drop(&mut self) {
        // Under the map's lock, so nobody clones the entry between the count and the removal.
        let mut locks = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        self.held = None;
        self.waiting = None;
        if locks.get(&self.key).is_some_and(|m| Arc::strong_count(m) == 1) {
            locks.remove(&self.key);
        }
    }
}

/// A pooled session that (may) hold an advisory lock: unless defused by [`Detach::keep`],
/// dropping it takes the connection out of its pool and closes it, so a session in an unknown
/// state (a lock statement failed, timed out or was cancelled) never serves anyone again.
struct Detach(Option<Object<PgConn>>);

impl Detach {
    fn keep(mut self) -> Option<Object<PgConn>> {
        self.0.take()
    }
}

impl Drop for Detach {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(Object::take(conn));
        }
    }
}

/// Takes the session advisory lock `key` on a connection of `pool`, waiting at most `wait`.
async fn advisory_lock(pool: &Pool<PgConn>, key: i64, wait: Duration) -> Result<Object<PgConn>, RefreshLockError> {
    let mut session = Detach(Some(checkout_postgres(pool, wait).await?));
    let Some(conn) = session.0.as_mut() else { return Err(timed_out()) };
    let statement = diesel::sql_query("SELECT pg_advisory_lock($1)").bind::<BigInt, _>(key);
    match tokio::time::timeout(wait + CLIENT_GRACE, statement.execute(&mut **conn)).await {
        Ok(Ok(_)) => session.keep().ok_or_else(timed_out),
        Ok(Err(e)) => {
            // Most likely `lock_timeout` (SQLSTATE 55P03); the session is discarded either way.
            tracing::warn!(error = %e, "could not take a refresh lock");
            Err(timed_out())
        }
        Err(_) => Err(timed_out()),
    }
}

#[derive(QueryableByName)]
struct Unlocked {
    #[diesel(sql_type = Bool)]
    unlocked: bool,
}

/// A session holding the advisory lock `key`.
struct Session {
    conn: Object<PgConn>,
    key: i64,
}

/// A held refresh lock. Field order matters: `Drop` discards a session still held, then the
/// in-process slot is released.
struct Guard {
    session: Option<Session>,
    _local: LocalSlot,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshGuard").field("key", &self._local.key).finish_non_exhaustive()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            // Not released (or the release did not complete): close the session, which ends
            // its lock, rather than hand a locked session back to the pool.
            drop(Detach(Some(session.conn)));
        }
    }
}

#[async_trait]
impl RefreshGuard for Guard {
    async fn release(mut self: Box<Self>) {
        if let Some(session) = self.session.as_mut() {
            let statement =
                diesel::sql_query("SELECT pg_advisory_unlock($1) AS unlocked").bind::<BigInt, _>(session.key);
            match statement.get_result::<Unlocked>(&mut *session.conn).await {
                // Only a session known to hold nothing goes back to the pool.
                Ok(Unlocked { unlocked: true }) => drop(self.session.take()),
                Ok(Unlocked { unlocked: false }) => tracing::warn!("a refresh lock was not held at release"),
                Err(e) => tracing::warn!(error = %e, "could not release a refresh lock; closing its session"),
            }
        }
        // Whatever is left is discarded by `Drop`, and the in-process slot released.
    }
}

#[async_trait]
impl RefreshLock for Store {
    async fn lock(&self, grant: &GrantId) -> Result<Box<dyn RefreshGuard>, RefreshLockError> {
        Ok(Box::new(self.refresh_locks().lock(grant).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advisory_keys_are_stable_and_distinct() {
        let a = GrantId::parse("00000000-0000-4000-8000-000000000001").unwrap();
        let b = GrantId::parse("00000000-0000-4000-8000-000000000002").unwrap();
        assert_eq!(advisory_key(&a), advisory_key(&a.clone()));
        assert_ne!(advisory_key(&a), advisory_key(&b));
    }

    #[tokio::test]
    async fn local_entries_go_away_when_unused() {
        let locks = RefreshLocks::new(None, Duration::from_secs(5));
        let grant = GrantId::parse("00000000-0000-4000-8000-000000000001").unwrap();
        let first = locks.lock(&grant).await.unwrap();
        assert_eq!(locks.local.lock().unwrap().len(), 1);
        // A waiter that gives up leaves the entry to the holder.
        let short =
            RefreshLocks { local: Arc::clone(&locks.local), sessions: None, timeout: Duration::from_millis(20) };
        assert!(short.lock(&grant).await.is_err());
        assert_eq!(locks.local.lock().unwrap().len(), 1);
        Box::new(first).release().await;
        assert_eq!(locks.local.lock().unwrap().len(), 0);
        drop(locks.lock(&grant).await.unwrap());
        assert_eq!(locks.local.lock().unwrap().len(), 0);
    }
}
