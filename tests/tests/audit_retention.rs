//! Audit retention (issue 15, item 15): the worker's pruning deletes the audit rows older than
//! `CUSTODY_AUDIT_RETENTION_DAYS` as its clock tells the time, and nothing newer, on SQLite and
//! PostgreSQL.

// Test bodies outside `#[test]` functions (backend_test!) are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custody_identity::audit::AuditEntry;
use custody_identity::ports::AuditLog;
use custody_identity::ports::{Clock, Random as _};
use custody_identity::{AppId, UnixTime};
use custody_providers::OsRandom;
use custody_store::testing::count_rows;
use custody_tests::backend_test;
use custody_tests::harness::{Backend, TestServer};

/// A clock stopped at one instant: the test decides what "now" is.
#[derive(Debug)]
struct FixedClock(UnixTime);

impl Clock for FixedClock {
    fn now(&self) -> UnixTime {
        self.0
    }
}

backend_test!(the_worker_prunes_audit_rows_older_than_the_retention);
async fn the_worker_prunes_audit_rows_older_than_the_retention(backend: Backend) {
    const DAY: i64 = 86_400;
    let s = TestServer::start(backend).await;
    let (app, _) = s.create_app("Retention").await;
    let store = s.store().await;
    // "Now" for the worker: an hour after the server's own rows (app.create) were written.
    let now = s.state().now().plus_seconds(3600);
    let row =
        |at: UnixTime| AuditEntry::new(OsRandom.uuid(), AppId::parse(&app).unwrap(), at, "token.handout", "user:x");
    // 2,500 rows 31 days old (more than two batches), 3 rows 29 days old.
    for i in 0..2_500 {
        AuditLog::append_audit(&store, &row(now.plus_seconds(-31 * DAY + i))).await.unwrap();
    }
    for i in 0..3 {
        AuditLog::append_audit(&store, &row(now.plus_seconds(-29 * DAY + i))).await.unwrap();
    }
    let before = count_rows(&store, "audit_log").await.unwrap();
    let deleted = custody_server::worker::prune_audit(&store, &FixedClock(now), 30).await.unwrap();
    assert_eq!(deleted, 2_500, "[{backend}]");
    assert_eq!(count_rows(&store, "audit_log").await.unwrap(), before - 2_500, "[{backend}]");
    // Two days later by the clock, the next three go too, and the server's own rows stay.
    let deleted =
        custody_server::worker::prune_audit(&store, &FixedClock(now.plus_seconds(2 * DAY)), 30).await.unwrap();
    assert_eq!(deleted, 3, "[{backend}]");
    assert_eq!(count_rows(&store, "audit_log").await.unwrap(), before - 2_503, "[{backend}]");
    assert!(before - 2_503 > 0, "[{backend}] the recent rows are kept");
}
