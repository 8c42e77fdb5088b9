//! `Store::database_calls` counts the statements that reach the database, on SQLite and, when
//! `CUSTODY_TEST_POSTGRES_URL` is set, on PostgreSQL: a point read is one, a transaction is its
//! statements plus `BEGIN` and `COMMIT`, and the hand-out log's batch is one `INSERT` (a transaction only when a grant's `last_used_at` moves).

// Helpers outside `#[test]` functions are test code too (clippy.toml only exempts the latter).
#![allow(clippy::unwrap_used)]

#[macro_use]
mod support;

use custody_identity::audit::AuditFilter;
use custody_identity::page::PageRequest;
use custody_store::prelude::*;
use custody_store::testing::TestDatabase;
use custody_store::Store;
use custody_vault::grant::GrantId;

use support::{audit, key_for, seed_app, uuid, NOW};

/// The calls `store` made while `f` ran.
async fn calls_during<T>(store: &Store, f: impl std::future::Future<Output = T>) -> (u64, T) {
    let before = store.database_calls();
    let value = f.await;
    (store.database_calls() - before, value)
}

store_test!(a_point_read_is_one_call);
async fn a_point_read_is_one_call(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    // The same on every checkout: the first read may open a connection, later ones reuse it.
    for _ in 0..3 {
        let (calls, found) = calls_during(&store, store.get_app(&app.id)).await;
        assert_eq!(found.unwrap().map(|a| a.id), Some(app.id.clone()), "{b}");
        assert_eq!(calls, 1, "{b}");
    }
}

store_test!(a_transaction_counts_begin_its_statements_and_commit);
async fn a_transaction_counts_begin_its_statements_and_commit(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    // BEGIN, the key's INSERT, the audit row's INSERT, COMMIT.
    let (calls, created) =
        calls_during(&store, store.create_api_key(&key_for(&app.id, NOW), &audit(&app.id, "api_key.create", NOW)))
            .await;
    assert!(created.unwrap(), "{b}");
    assert_eq!(calls, 4, "{b}");
}

store_test!(a_handout_record_is_one_insert_or_one_batch_transaction);
async fn a_handout_record_is_one_insert_or_one_batch_transaction(db: TestDatabase, store: Store) {
    let b = db.backend();
    let app = seed_app(&store).await;
    let grant = GrantId::parse(&uuid()).unwrap();
    let mut written = Vec::new();
    for _ in 0..2 {
        // No `last_used_at` due: the audit INSERT alone (atomic by itself).
        let mut entry = audit(&app.id, "token.handout", NOW);
        entry.detail = Some("one \"quoted\", {braced} detail".into());
        let (calls, recorded) = calls_during(&store, store.record_handout(&grant, None, &entry)).await;
        recorded.unwrap();
        assert_eq!(calls, 1, "{b}");
        written.push(entry);
    }
    // `last_used_at` due: BEGIN, the UPDATE, the INSERT, COMMIT.
    let entry = audit(&app.id, "token.handout", NOW);
    let (calls, recorded) = calls_during(&store, store.record_handout(&grant, Some(NOW), &entry)).await;
    recorded.unwrap();
    assert_eq!(calls, 4, "{b}");
    written.push(entry);
    // Every field arrives as written, newest first.
    let listed = store.list_audit(&app.id, &AuditFilter::default(), &PageRequest::first()).await.unwrap().items;
    let handouts: Vec<_> = listed.into_iter().filter(|e| e.action == "token.handout").collect();
    written.reverse();
    assert_eq!(handouts, written, "{b}");
}
