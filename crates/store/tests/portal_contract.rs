//! Contract tests of the Developer Portal session methods of `Store`, on SQLite and, when
//! `CUSTODY_TEST_POSTGRES_URL` is set, on PostgreSQL: a session is found by its hash only,
//! deleted once, and expired sessions are swept when a new one is created.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod support;

use custody_identity::UnixTime;
use custody_store::testing::TestDatabase;
use custody_store::{PortalSession, Store};

const NOW: UnixTime = UnixTime(1_800_000_000);

fn session(hash: &str, created: i64, ttl: i64) -> PortalSession {
    PortalSession { id_hash: hash.to_owned(), created_at: UnixTime(created), expires_at: UnixTime(created + ttl) }
}

store_test!(portal_sessions_round_trip_and_sweep);
async fn portal_sessions_round_trip_and_sweep(db: TestDatabase, store: Store) {
    let first = session("hash-one", NOW.0, 100);
    store.create_portal_session(&first).await.unwrap();
    assert_eq!(store.get_portal_session("hash-one").await.unwrap(), Some(first.clone()));
    assert_eq!(store.get_portal_session("hash-two").await.unwrap(), None);

    // A session created after the first expired sweeps it.
    let second = session("hash-two", NOW.0 + 100, 100);
    store.create_portal_session(&second).await.unwrap();
    assert_eq!(store.get_portal_session("hash-one").await.unwrap(), None, "{:?}", db.backend());
    assert_eq!(store.get_portal_session("hash-two").await.unwrap(), Some(second));

    assert!(store.delete_portal_session("hash-two").await.unwrap());
    assert!(!store.delete_portal_session("hash-two").await.unwrap());
    assert_eq!(store.get_portal_session("hash-two").await.unwrap(), None);

    // The same hash twice is refused (primary key), not silently merged.
    store.create_portal_session(&session("dup", NOW.0 + 150, 100)).await.unwrap();
    assert!(store.create_portal_session(&session("dup", NOW.0 + 150, 100)).await.is_err());
}
