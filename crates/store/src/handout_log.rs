//! Group commit of hand-out records: the audit row every hand-out writes (and, at most once a
//! minute per grant, its `last_used_at`).
//!
//! A hand-out must not answer before its audit row is durable, but committing one row per
//! request makes the database's commit the hand-out's bottleneck (on SQLite every commit also
//! takes the single write lock; on PostgreSQL every commit flushes the WAL). Instead, callers
//! queue their record and wait; one writer task takes everything queued, writes it in one
//! transaction, and answers each waiter only after that transaction committed. While one batch
//! commits, the next one fills, so batches grow with load and a lone request still commits at
//! once (no timer, no added latency).
//!
//! A failed batch is retried record by record, so one bad record (say, its app was deleted a
//! moment ago) fails only its own request.

use crate::error::db_error;
use crate::models::NewAuditRow;
use crate::pool::DbPool;
use crate::schema::{audit_log, grants};
use crate::Store;
use custody_identity::audit::AuditEntry;
use custody_identity::ports::StoreError;
use diesel::prelude::*;
use std::sync::{OnceLock, Weak};
use tokio::sync::{mpsc, oneshot};

/// The statement that sets a grant's `last_used_at` to `at`, never moving it backwards when
/// hand-outs finish out of order. A macro so the one text serves both backends' connections.
macro_rules! touch_grant {
    ($grant:expr, $at:expr) => {
        diesel::update(
            grants::table
                .filter(grants::id.eq($grant))
                .filter(grants::last_used_at.is_null().or(grants::last_used_at.lt($at))),
        )
        .set(grants::last_used_at.eq(Some($at)))
    };
}

/// The most records one transaction writes.
const MAX_BATCH: usize = 256;

/// One hand-out's record.
struct Record {
    grant: String,
    /// The new `last_used_at`, when it is due.
    touch: Option<i64>,
    audit: AuditEntry,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The queue in front of the writer task, started on first use in the runtime of that use.
#[derive(Default)]
pub(crate) struct HandoutLog {
    queue: OnceLock<mpsc::UnboundedSender<Record>>,
}

impl HandoutLog {
    /// Writes the record and returns once it is committed (or failed).
    pub(crate) async fn record(
        &self,
        store: &Store,
        grant: &str,
        touch: Option<i64>,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            // The task holds the store weakly: dropping the last `Store` drops the sender, which
            // ends the task.
            tokio::spawn(run(store.downgrade(), rx));
            tx
        });
        let (done, answer) = oneshot::channel();
        let record = Record { grant: grant.to_owned(), touch, audit: audit.clone(), done };
        queue.send(record).map_err(|_| StoreError::Unavailable("the audit writer has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the audit writer has stopped".into()))?
    }
}

async fn run(store: Weak<crate::store::Inner>, mut queue: mpsc::UnboundedReceiver<Record>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let Some(store) = Store::upgrade(&store) else { return };
        match write(&store, &batch).await {
            Ok(()) => {
                for record in batch.drain(..) {
                    let _ = record.done.send(Ok(()));
                }
            }
            Err(e) if batch.len() == 1 => {
                for record in batch.drain(..) {
                    let _ = record.done.send(Err(e.clone()));
                }
            }
            Err(_) => {
                for record in batch.drain(..) {
                    let result = write(&store, std::slice::from_ref(&record)).await;
                    let _ = record.done.send(result);
                }
            }
        }
    }
}

/// Writes `records` in one transaction.
async fn write(store: &Store, records: &[Record]) -> Result<(), StoreError> {
    match store.pool() {
        DbPool::Sqlite(pool) => {
            let audits: Vec<AuditEntry> = records.iter().map(|r| r.audit.clone()).collect();
            let touches: Vec<(String, i64)> =
                records.iter().filter_map(|r| r.touch.map(|at| (r.grant.clone(), at))).collect();
            let mut conn = crate::pool::checkout_sqlite(pool, store.acquire_timeout()).await?;
            store.count_calls(&mut conn);
            // One trip to the blocking pool for the whole batch, not one per statement.
            conn.spawn_blocking(move |conn| {
                conn.immediate_transaction(|conn| {
                    for (grant, at) in &touches {
                        diesel::RunQueryDsl::execute(touch_grant!(grant.as_str(), *at), conn)?;
                    }
                    let rows: Vec<NewAuditRow<'_>> = audits.iter().map(NewAuditRow::from).collect();
                    diesel::RunQueryDsl::execute(diesel::insert_into(audit_log::table).values(rows), conn)?;
                    Ok(())
                })
            })
            .await
            .map_err(db_error)
        }
        DbPool::Postgres(pool) => {
            let mut conn = crate::pool::checkout_postgres(pool, store.acquire_timeout()).await?;
            store.count_calls(&mut conn);
            let conn: &mut crate::pool::PgConn = &mut conn;
            diesel_async::AsyncConnection::transaction(conn, async |conn: &mut crate::pool::PgConn| {
                for record in records {
                    if let Some(at) = record.touch {
                        diesel_async::RunQueryDsl::execute(touch_grant!(record.grant.as_str(), at), conn).await?;
                    }
                }
                // One multi-row INSERT.
                let rows: Vec<NewAuditRow<'_>> = records.iter().map(|r| NewAuditRow::from(&r.audit)).collect();
                diesel_async::RunQueryDsl::execute(diesel::insert_into(audit_log::table).values(rows), conn).await?;
                Ok::<(), diesel::result::Error>(())
            })
            .await
            .map_err(db_error)
        }
    }
}
