//! Group commit of hand-out records: the audit row every hand-out writes (and, at most once a
//! minute per grant, its `last_used_at`), and of sightings: a known, unchanged user's
//! `last_seen_at`, due at most once a minute per user (see `identity.rs`).
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
//!
//! On SQLite the writer is a thread of its own with a connection of its own, outside the pools:
//! the transaction is synchronous anyway, and handing every batch to tokio's blocking pool (two
//! thread handoffs, a pooled checkout and the futex wake-ups in between) cost more CPU than the
//! writing. The thread blocks on the queue, so it costs nothing while idle, and it ends (joined)
//! when the last `Store` is dropped. It never checkpoints: a thread of its own does that (see
//! `checkpoint.rs`), so no hand-out waits for a checkpoint's writes. Its rows go to the hand-out
//! audit file, not the main one, so that its commits leave the readers' page caches alone (see
//! `handout_audit.rs`). On PostgreSQL the writer is a task on the runtime, since its connection
//! is asynchronous.

use crate::error::db_error;
use crate::models::NewAuditRow;
use crate::pool::DbPool;
use crate::schema::{grants, users};
use crate::Store;
use custody_identity::audit::AuditEntry;
use custody_identity::ports::StoreError;
use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::prelude::*;
use std::path::Path;
use std::sync::{OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

mod checkpoint;
mod postgres;

use checkpoint::Checkpointer;
use postgres::{insert_postgres, Touches};

/// SQLite: runs the `UPDATE` each of `records` needs in the main file (a grant's `last_used_at`,
/// a user's `last_seen_at`), never moving either time backwards when hand-outs finish out of
/// order. In process, a statement per record costs no round trip (PostgreSQL writes a batch's
/// touches as one statement per table, see [`Touches`]).
fn touch_sqlite(conn: &mut SqliteConnection, records: &[Record]) -> Result<(), diesel::result::Error> {
    for record in records {
        match &record.work {
            Work::Handout { grant, touch: Some(at), .. } => {
                diesel::RunQueryDsl::execute(
                    diesel::update(
                        grants::table
                            .filter(grants::id.eq(grant.as_str()))
                            .filter(grants::last_used_at.is_null().or(grants::last_used_at.lt(*at))),
                    )
                    .set(grants::last_used_at.eq(Some(*at))),
                    conn,
                )?;
            }
            Work::Sighting { user, at } => {
                diesel::RunQueryDsl::execute(
                    diesel::update(
                        users::table
                            .filter(users::id.eq(user.as_str()))
                            .filter(users::last_seen_at.is_null().or(users::last_seen_at.lt(*at))),
                    )
                    .set(users::last_seen_at.eq(Some(*at))),
                    conn,
                )?;
            }
            Work::Handout { touch: None, .. } => {}
        }
    }
    Ok(())
}

/// The most records one transaction writes. A power of two: a full batch is one SQLite `INSERT`.
const MAX_BATCH: usize = 256;
const _: () = assert!(MAX_BATCH.is_power_of_two());

/// SQLite only: how long the writer lets a batch fill when other hand-outs were already waiting
/// behind the one that woke it (PostgreSQL's `commit_delay` with `commit_siblings`, in spirit).
///
/// Under load the writer otherwise commits every two or three records, as fast as it can, and
/// every commit costs a WAL write of the same few pages and makes every reader connection drop
/// its page cache (and remap the grown file) before its next read. A lone hand-out never waits:
/// the delay applies only when the queue already held more than one record.
const SQLITE_COMMIT_DELAY: Duration = Duration::from_micros(250);

/// What one record writes.
#[allow(
    clippy::large_enum_variant,
    reason = "almost every record is a hand-out: boxing its audit entry would add an allocation to each"
)]
enum Work {
    /// A hand-out's (or proxied request's) audit row, and its grant's `last_used_at` when due.
    Handout {
        grant: String,
        /// The new `last_used_at`, when it is due.
        touch: Option<i64>,
        audit: AuditEntry,
    },
    /// A user's new `last_seen_at`.
    Sighting { user: String, at: i64 },
}

/// One queued record and its waiter.
struct Record {
    work: Work,
    done: oneshot::Sender<Result<(), StoreError>>,
}

impl Record {
    fn audit(&self) -> Option<&AuditEntry> {
        match &self.work {
            Work::Handout { audit, .. } => Some(audit),
            Work::Sighting { .. } => None,
        }
    }

    /// Whether it writes the main file (SQLite) or a table besides the audit log.
    fn touches(&self) -> bool {
        matches!(self.work, Work::Handout { touch: Some(_), .. } | Work::Sighting { .. })
    }
}

/// Whether a batch written as `touch_statements` `UPDATE`s and `insert_statements` `INSERT`s needs
/// `BEGIN`/`COMMIT` around them: only when there is more than one statement (each is atomic
/// alone).
fn needs_transaction(touch_statements: usize, insert_statements: usize) -> bool {
    touch_statements + insert_statements > 1
}

/// SQLite's audit `INSERT` of exactly `N` rows. Each `N` is a statement type of its own, which
/// diesel prepares once per connection and finds again by type, so no batch is parsed.
///
/// diesel's own multi-row insert of a `Vec` is a new statement, parsed and compiled by SQLite,
/// for every batch (2% of a reused-token hand-out's CPU in `cargo xtask bench`), and its
/// fixed-size arrays are cached only when their rows own their values, which would copy every
/// string of the batch. The column list is the one `NewAuditRow` inserts; the hand-out log's
/// tests read every column back.
struct InsertAuditRows<'a, const N: usize>(&'a [NewAuditRow<'a>; N]);

impl<const N: usize> diesel::query_builder::QueryId for InsertAuditRows<'_, N> {
    type QueryId = InsertAuditRows<'static, N>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<const N: usize> diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite> for InsertAuditRows<'_, N> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::sqlite::Sqlite>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{BigInt, Nullable, Text};
        out.push_sql(
            "INSERT INTO audit_log (id, app_id, at, action, actor, user_id, grant_id, provider, outcome, detail) VALUES ",
        );
        for (i, row) in self.0.iter().enumerate() {
            out.push_sql(if i == 0 { "(" } else { ", (" });
            out.push_bind_param::<Text, str>(row.id)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, str>(row.app_id)?;
            out.push_sql(", ");
            out.push_bind_param::<BigInt, i64>(&row.at)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, str>(row.action)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, str>(row.actor)?;
            out.push_sql(", ");
            out.push_bind_param::<Nullable<Text>, Option<&str>>(&row.user_id)?;
            out.push_sql(", ");
            out.push_bind_param::<Nullable<Text>, Option<&str>>(&row.grant_id)?;
            out.push_sql(", ");
            out.push_bind_param::<Nullable<Text>, Option<&str>>(&row.provider)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, str>(row.outcome)?;
            out.push_sql(", ");
            out.push_bind_param::<Nullable<Text>, Option<&str>>(&row.detail)?;
            out.push_sql(")");
        }
        Ok(())
    }
}

impl<const N: usize> diesel::RunQueryDsl<SqliteConnection> for InsertAuditRows<'_, N> {}

/// The sizes of the statements [`insert_sqlite`] writes a batch with, largest first: `n` rows
/// are `n`'s binary decomposition.
macro_rules! insert_in_chunks {
    ($conn:ident, $rows:expr, [$($size:literal),+]) => {{
        let mut rows: &[NewAuditRow<'_>] = $rows;
        $(
            while let Some((chunk, rest)) = rows.split_first_chunk::<$size>() {
                diesel::RunQueryDsl::execute(InsertAuditRows(chunk), $conn)?;
                rows = rest;
            }
        )+
    }};
}

/// How many `INSERT`s [`insert_sqlite`] writes `rows` rows with (`rows` is at most
/// [`MAX_BATCH`], a power of two): one when `rows` is a power of two, at most eight.
fn sqlite_insert_statements(rows: usize) -> usize {
    rows / MAX_BATCH + (rows % MAX_BATCH).count_ones() as usize
}

/// The audit rows of a batch, in the statements [`sqlite_insert_statements`] counts.
fn insert_sqlite(conn: &mut SqliteConnection, rows: &[NewAuditRow<'_>]) -> Result<(), diesel::result::Error> {
    insert_in_chunks!(conn, rows, [256, 128, 64, 32, 16, 8, 4, 2, 1]);
    Ok(())
}

/// The queue in front of the writer, started on first use (on PostgreSQL, in the runtime of that
/// use).
#[derive(Default)]
pub(crate) struct HandoutLog {
    queue: OnceLock<mpsc::UnboundedSender<Record>>,
    /// SQLite only: the writer thread, joined when the log is dropped.
    thread: OnceLock<JoinHandle<()>>,
}

impl HandoutLog {
    /// Writes a hand-out's record and returns once it is committed (or failed).
    pub(crate) async fn record(
        &self,
        store: &Store,
        grant: &str,
        touch: Option<i64>,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        self.submit(store, Work::Handout { grant: grant.to_owned(), touch, audit: audit.clone() }).await
    }

    /// Moves `user`'s `last_seen_at` to `at` (unless it is already later) and returns once that
    /// is committed (or failed).
    pub(crate) async fn record_sighting(&self, store: &Store, user: &str, at: i64) -> Result<(), StoreError> {
        self.submit(store, Work::Sighting { user: user.to_owned(), at }).await
    }

    async fn submit(&self, store: &Store, work: Work) -> Result<(), StoreError> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            match store.sqlite_file() {
                Some((path, busy_timeout)) => {
                    let path = path.to_owned();
                    let counter = store.call_counter();
                    // The thread holds no `Store`: dropping the last one drops the sender, which
                    // ends the thread.
                    let spawned = std::thread::Builder::new()
                        .name("custody-handout-log".into())
                        .spawn(move || run_sqlite(&path, busy_timeout, counter, rx));
                    match spawned {
                        Ok(thread) => {
                            let _ = self.thread.set(thread);
                        }
                        // `rx` went with the closure: every record fails as unavailable.
                        Err(e) => tracing::error!(error = %e, "could not start the audit writer thread"),
                    }
                }
                // The task holds the store weakly: dropping the last `Store` drops the sender,
                // which ends the task.
                None => drop(tokio::spawn(run_async(store.downgrade(), rx))),
            }
            tx
        });
        let (done, answer) = oneshot::channel();
        let record = Record { work, done };
        queue.send(record).map_err(|_| StoreError::Unavailable("the audit writer has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the audit writer has stopped".into()))?
    }
}

impl Drop for HandoutLog {
    fn drop(&mut self) {
        // Closing the queue ends the writer thread after its current batch (whose waiters are
        // gone: each held a `Store`). Joining it closes its connection before the store is
        // reported gone, so nothing keeps the database file open behind the caller's back.
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers every waiter of `batch` with `result` and empties it, unless a batch of several
/// records failed: then it answers none and returns `false`, and the caller retries the records
/// one by one.
fn settle(batch: &mut Vec<Record>, result: Result<(), StoreError>) -> bool {
    match result {
        Err(_) if batch.len() > 1 => false,
        result => {
            for record in batch.drain(..) {
                let _ = record.done.send(result.clone());
            }
            true
        }
    }
}

/// The SQLite writer thread: takes everything queued (up to [`MAX_BATCH`]), commits what
/// [`one_statement_batch`] says on its own connection, answers, and goes on with the rest, or
/// blocks for more. Returns when the queue is closed and nothing is left.
fn run_sqlite(
    path: &Path,
    busy_timeout: Duration,
    counter: crate::store::CallCounter,
    mut queue: mpsc::UnboundedReceiver<Record>,
) {
    let mut conn: Option<SqliteConnection> = None;
    // Dropped when this returns: ends (and joins) the checkpoint thread.
    let mut checkpointer = Checkpointer::start(path, busy_timeout, &counter);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Records taken from the queue but left for the next batch (see `one_statement_batch`).
    let mut carried = Vec::new();
    loop {
        batch.append(&mut carried);
        if batch.is_empty() {
            match queue.blocking_recv() {
                Some(first) => batch.push(first),
                None => return,
            }
        }
        drain_into(&mut queue, &mut batch);
        if batch.len() > 1 && batch.len() < MAX_BATCH {
            std::thread::sleep(SQLITE_COMMIT_DELAY);
            drain_into(&mut queue, &mut batch);
        }
        carried = batch.split_off(one_statement_batch(&batch));
        let db = match conn.as_mut() {
            Some(db) => db,
            None => match open_sqlite(path, busy_timeout, &counter) {
                Ok(db) => conn.insert(db),
                Err(e) => {
                    for record in batch.drain(..) {
                        let _ = record.done.send(Err(e.clone()));
                    }
                    continue;
                }
            },
        };
        let result = write_sqlite(db, &batch);
        if !settle(&mut batch, result) {
            for record in batch.drain(..) {
                let result = write_sqlite(db, std::slice::from_ref(&record));
                let _ = record.done.send(result);
            }
        }
        checkpointer.committed(db);
        // A connection whose rollback failed cannot start another transaction: open a new one
        // for the next batch.
        if AnsiTransactionManager::is_broken_transaction_manager(db) {
            conn = None;
        }
    }
}

/// How many of the records taken (oldest first) the SQLite writer commits now: as many as one
/// `INSERT` can hold, the largest power of two (see [`insert_sqlite`]), so that the commit is
/// that statement alone, without `BEGIN` and `COMMIT` around several; the rest start the next
/// batch at once. All of them when one touches a row, since that batch is a transaction anyway.
fn one_statement_batch(taken: &[Record]) -> usize {
    if taken.iter().any(Record::touches) {
        return taken.len();
    }
    taken.len().checked_ilog2().map_or(0, |power| 1 << power)
}

/// Moves what is queued into `batch`, up to [`MAX_BATCH`], without waiting.
fn drain_into(queue: &mut mpsc::UnboundedReceiver<Record>, batch: &mut Vec<Record>) {
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(record) => batch.push(record),
            Err(_) => break,
        }
    }
}

/// The writer thread's connection: on the hand-out audit file (see `handout_audit.rs`), with the
/// main file attached, set up as the pooled ones are, except that its commits never checkpoint
/// either file: the checkpoint thread does (see `checkpoint.rs`), on a connection opened here too.
fn open_sqlite(
    path: &Path,
    busy_timeout: Duration,
    counter: &crate::store::CallCounter,
) -> Result<SqliteConnection, StoreError> {
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "the audit writer could not open the database");
        StoreError::Unavailable("the audit writer could not open the database".into())
    };
    let side = crate::pool::sqlite_path_str(&crate::handout_audit::side_path(path)).map_err(|e| unavailable(&e))?;
    let main = crate::pool::sqlite_path_str(path).map_err(|e| unavailable(&e))?;
    let mut conn = SqliteConnection::establish(&side).map_err(|e| unavailable(&e))?;
    conn.batch_execute(&crate::pool::sqlite_pragmas(busy_timeout)).map_err(|e| unavailable(&e))?;
    // The main file, for the touches (`last_used_at`, `last_seen_at`): `grants` and `users` are
    // found there by name, since the side file has no such tables.
    diesel::RunQueryDsl::execute(
        diesel::sql_query("ATTACH DATABASE ? AS custody").bind::<diesel::sql_types::Text, _>(&main),
        &mut conn,
    )
    .map_err(|e| unavailable(&e))?;
    conn.batch_execute("PRAGMA custody.synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;")
        .map_err(|e| unavailable(&e))?;
    // Counted from here on, as the pools' connections are after their setup.
    diesel::Connection::set_instrumentation(&mut conn, crate::store::CallCounter(counter.0.clone()));
    Ok(conn)
}

/// Writes `records` in one SQLite transaction. Without a touch (most batches: `last_used_at`
/// and `last_seen_at` move at most once a minute per grant and user) that writes only the
/// hand-out audit file: a batch whose row count is a power of two is one `INSERT`, atomic by
/// itself, with no `BEGIN` and `COMMIT` around it; the main file is not written at all. A batch
/// with touches also writes the main file: each file's part is atomic (SQLite with WAL does not
/// make a transaction across files atomic as a whole), and a touch without its audit row, or
/// the reverse, after a crash between the two is harmless, since both times are hints that the
/// next request moves again.
fn write_sqlite(conn: &mut SqliteConnection, records: &[Record]) -> Result<(), StoreError> {
    let write = |conn: &mut SqliteConnection| -> Result<(), diesel::result::Error> {
        touch_sqlite(conn, records)?;
        let rows: Vec<NewAuditRow<'_>> = records.iter().filter_map(Record::audit).map(NewAuditRow::from).collect();
        insert_sqlite(conn, &rows)
    };
    let touches = records.iter().filter(|r| r.touches()).count();
    let rows = records.iter().filter(|r| r.audit().is_some()).count();
    if needs_transaction(touches, sqlite_insert_statements(rows)) {
        conn.immediate_transaction(write).map_err(db_error)
    } else {
        write(conn).map_err(db_error)
    }
}

/// The PostgreSQL writer task.
async fn run_async(store: Weak<crate::store::Inner>, mut queue: mpsc::UnboundedReceiver<Record>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let Some(store) = Store::upgrade(&store) else { return };
        let result = write_postgres(&store, &batch).await;
        if !settle(&mut batch, result) {
            for record in batch.drain(..) {
                let result = write_postgres(&store, std::slice::from_ref(&record)).await;
                let _ = record.done.send(result);
            }
        }
    }
}

/// Writes `records` in one PostgreSQL transaction, or, with nothing to touch (most batches), as
/// the one `INSERT` alone: one round trip instead of three.
async fn write_postgres(store: &Store, records: &[Record]) -> Result<(), StoreError> {
    let DbPool::Postgres(pool) = store.pool() else {
        return Err(StoreError::Unavailable("the audit writer task serves PostgreSQL only".into()));
    };
    let mut conn = crate::pool::checkout_postgres(pool, store.acquire_timeout()).await?;
    store.count_calls(&mut conn);
    let conn: &mut crate::pool::PgConn = &mut conn;
    let touches = Touches::of(records);
    let write = async |conn: &mut crate::pool::PgConn| -> Result<(), diesel::result::Error> {
        touches.write(conn).await?;
        insert_postgres(conn, records).await
    };
    let rows = records.iter().filter(|r| r.audit().is_some()).count();
    if needs_transaction(touches.statements(), usize::from(rows > 0)) {
        diesel_async::AsyncConnection::transaction(conn, write).await.map_err(db_error)
    } else {
        write(conn).await.map_err(db_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use custody_identity::audit::AuditOutcome;
    use custody_identity::AppId;
    use custody_identity::UnixTime;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    pub(super) fn handout_audit() -> AuditEntry {
        AuditEntry {
            id: uuid::Uuid::new_v4().to_string(),
            app_id: AppId::parse("00000000-0000-4000-8000-000000000002").unwrap(),
            at: UnixTime(0),
            action: "token.handout".into(),
            actor: "app".into(),
            user_id: None,
            grant_id: None,
            provider: None,
            outcome: AuditOutcome::Success,
            detail: None,
        }
    }

    /// A fresh SQLite store in a directory of its own, which the caller removes.
    pub(super) async fn sqlite_store(options: crate::StoreOptions) -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("custody-handout-log-{}", uuid::Uuid::new_v4().simple()));
        let store = Store::connect(&format!("sqlite://{}", dir.join("c.db").display()), options).await.unwrap();
        (store, dir)
    }

    /// Hand-out records go to their own file, so a write transaction on the main file (any
    /// mutation, holding its write lock) does not hold them up. It would, if the main pool's
    /// connections attached that file: their `BEGIN IMMEDIATE` would lock it too.
    #[tokio::test]
    async fn handout_records_commit_while_the_main_file_is_written() {
        // A short busy timeout: a regression fails here instead of waiting.
        let options = crate::StoreOptions { sqlite_busy_timeout: Duration::from_millis(200), ..Default::default() };
        let (store, dir) = sqlite_store(options).await;
        let DbPool::Sqlite(pool) = store.pool() else { unreachable!("a SQLite store") };
        let pooled = crate::pool::checkout_sqlite(pool, store.acquire_timeout()).await.unwrap();
        // Out of the pool, so that closing it ends the transaction.
        let mut writing = diesel_async::pooled_connection::deadpool::Object::take(pooled);
        diesel_async::SimpleAsyncConnection::batch_execute(&mut writing, "BEGIN IMMEDIATE").await.unwrap();
        for _ in 0..3 {
            store.handout_log().record(&store, "g", None, &handout_audit()).await.unwrap();
        }
        drop(writing);
        assert_eq!(crate::testing::count_rows(&store, "audit_log").await.unwrap(), 3);
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Sightings in one batch (requests finishing out of order) leave the latest time, and a
    /// batch of touches alone writes no audit row.
    #[tokio::test]
    async fn a_batch_of_sightings_keeps_the_latest_time() {
        let (store, dir) = sqlite_store(Default::default()).await;
        for sql in [
            "INSERT INTO apps (id, name, created_at) VALUES ('a', 'a', 0)",
            "INSERT INTO users (id, app_id, subject, status, groups_json, roles_json, created_at, last_seen_at) \
             VALUES ('u', 'a', 's', 'active', '[]', '[]', 0, 50)",
        ] {
            assert_eq!(crate::testing::execute_sql(&store, sql).await.unwrap(), 1);
        }
        let (path, busy_timeout) = store.sqlite_file().unwrap();
        let mut conn = open_sqlite(path, busy_timeout, &store.call_counter()).unwrap();
        let sighting = |at| Record { work: Work::Sighting { user: "u".into(), at }, done: oneshot::channel().0 };
        write_sqlite(&mut conn, &[sighting(200), sighting(100)]).unwrap();
        write_sqlite(&mut conn, &[sighting(150)]).unwrap();
        let seen: SeenRow = diesel::RunQueryDsl::get_result(
            diesel::sql_query("SELECT last_seen_at FROM custody.users WHERE id = 'u'"),
            &mut conn,
        )
        .unwrap();
        assert_eq!(seen.last_seen_at, Some(200));
        assert_eq!(crate::testing::count_rows(&store, "audit_log").await.unwrap(), 0);
        drop((conn, store));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// On PostgreSQL a batch's touches are one `UPDATE` per table, whatever their number: each id
    /// moves once, to its latest time, and never backwards; with the audit `INSERT`, `BEGIN` and
    /// `COMMIT`, the batch is five statements.
    #[tokio::test]
    async fn postgres_writes_a_batch_of_touches_as_one_statement_per_table() {
        let Some(db) = crate::testing::TestDatabase::all()
            .await
            .unwrap()
            .into_iter()
            .find(|db| db.backend() == crate::pool::Backend::Postgres)
        else {
            eprintln!("NOTICE: CUSTODY_TEST_POSTGRES_URL is not set; the PostgreSQL touch batch is not tested here");
            return;
        };
        let store = db.connect().await.unwrap();
        let app = "00000000-0000-4000-8000-000000000002";
        let mut seed = vec![format!("INSERT INTO apps (id, name, created_at) VALUES ('{app}', 'a', 0)")];
        for (user, seen) in [("u1", "NULL"), ("u2", "80"), ("u3", "10")] {
            seed.push(format!(
                "INSERT INTO users (id, app_id, subject, status, groups_json, roles_json, created_at, last_seen_at) \
                 VALUES ('{user}', '{app}', '{user}', 'active', '[]', '[]', 0, {seen})"
            ));
        }
        seed.push(format!("INSERT INTO providers (app_id, name, authorization_url, token_url, client_id, client_secret, scopes_json, created_at, updated_at) VALUES ('{app}', 'p', 'https://a', 'https://t', 'c', '\\x00', '[]', 0, 0)"));
        for (grant, used) in [("g1", "NULL"), ("g2", "500"), ("g3", "10")] {
            seed.push(format!(
                "INSERT INTO grants (id, app_id, user_id, provider, status, scopes_json, created_at, updated_at, last_used_at) \
                 VALUES ('{grant}', '{app}', 'u1', 'p', 'revoked', '[]', 0, 0, {used})"
            ));
        }
        for sql in &seed {
            assert_eq!(crate::testing::execute_sql(&store, sql).await.unwrap(), 1, "{sql}");
        }
        let record = |work| Record { work, done: oneshot::channel().0 };
        let handout = |grant: &str, touch| Work::Handout { grant: grant.into(), touch, audit: handout_audit() };
        let sighting = |user: &str, at| Work::Sighting { user: user.into(), at };
        let records = [
            record(handout("g1", Some(300))),
            record(handout("g1", Some(100))),
            record(handout("g2", Some(200))),
            record(handout("g3", None)),
            record(sighting("u1", 100)),
            record(sighting("u2", 50)),
            record(sighting("u1", 90)),
        ];
        let before = store.database_calls();
        write_postgres(&store, &records).await.unwrap();
        assert_eq!(store.database_calls() - before, 5, "BEGIN, two UPDATEs, the INSERT, COMMIT");
        // A no-op `UPDATE` that matches the row only with the expected time: one row affected.
        for check in [
            "UPDATE grants SET status = status WHERE id = 'g1' AND last_used_at = 300",
            "UPDATE grants SET status = status WHERE id = 'g2' AND last_used_at = 500",
            "UPDATE grants SET status = status WHERE id = 'g3' AND last_used_at = 10",
            "UPDATE users SET status = status WHERE id = 'u1' AND last_seen_at = 100",
            "UPDATE users SET status = status WHERE id = 'u2' AND last_seen_at = 80",
            "UPDATE users SET status = status WHERE id = 'u3' AND last_seen_at = 10",
        ] {
            assert_eq!(crate::testing::execute_sql(&store, check).await.unwrap(), 1, "{check}");
        }
        assert_eq!(crate::testing::count_rows(&store, "audit_log").await.unwrap(), 4);
    }

    /// Every batch size is written whole, as its binary decomposition of cached `INSERT`s (in a
    /// transaction when there is more than one), with every column as given; and a batch whose
    /// last statement fails leaves none of its rows.
    #[tokio::test]
    async fn audit_batches_of_any_size_are_written_whole_in_fixed_size_statements() {
        let (store, dir) = sqlite_store(Default::default()).await;
        let (path, busy_timeout) = store.sqlite_file().unwrap();
        let mut conn = open_sqlite(path, busy_timeout, &store.call_counter()).unwrap();
        let record = handout_record;
        let mut written = 0;
        for size in [1, 2, 3, 7, 128, 200, MAX_BATCH - 1, MAX_BATCH] {
            let batch: Vec<Record> = (0..size).map(|_| record(handout_audit())).collect();
            let before = store.database_calls();
            write_sqlite(&mut conn, &batch).unwrap();
            let inserts = sqlite_insert_statements(size);
            let expected = if inserts > 1 { inserts + 2 } else { inserts };
            assert_eq!(store.database_calls() - before, expected as u64, "statements for {size} rows");
            written += size;
            assert_eq!(crate::testing::count_rows(&store, "audit_log").await.unwrap(), written as i64);
        }
        assert_eq!((sqlite_insert_statements(7), sqlite_insert_statements(256)), (3, 1));

        // Every column of the statement lands in its own column.
        let full = AuditEntry {
            user_id: Some(custody_identity::UserId::parse("00000000-0000-4000-8000-000000000003").unwrap()),
            grant_id: Some("grant".into()),
            provider: Some("github".into()),
            outcome: AuditOutcome::Denied,
            detail: Some("detail".into()),
            at: UnixTime(42),
            ..handout_audit()
        };
        write_sqlite(&mut conn, &[record(handout_audit()), record(full.clone())]).unwrap();
        let row: crate::models::AuditRow = audit_log_row(&mut conn, &full.id);
        assert_eq!(row.into_domain().unwrap(), full);

        // Three rows are an `INSERT` of two and one of one: the second fails (the side file
        // refuses its row), and the first is rolled back with it, so retrying the records one by
        // one cannot write a row twice.
        refuse_in_side_file(&store, "refused");
        let refused = AuditEntry { action: "refused".into(), ..handout_audit() };
        let batch = [record(handout_audit()), record(handout_audit()), record(refused)];
        assert!(write_sqlite(&mut conn, &batch).is_err());
        assert_eq!(crate::testing::count_rows(&store, "audit_log").await.unwrap(), written as i64 + 2);
        drop((conn, store));
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn audit_log_row(conn: &mut SqliteConnection, id: &str) -> crate::models::AuditRow {
        use crate::schema::audit_log;
        audit_log::table.filter(audit_log::id.eq(id)).select(crate::models::AuditRow::as_select()).first(conn).unwrap()
    }

    /// The SQLite writer commits the largest power of two of plain hand-outs (one `INSERT`), and
    /// everything when a touch makes the batch a transaction anyway.
    #[test]
    fn a_batch_of_plain_handouts_is_one_statement() {
        let plain = |n: usize| (0..n).map(|_| handout_record(handout_audit())).collect::<Vec<_>>();
        let taken: Vec<usize> = [1, 2, 3, 7, 8, 9, 255, 256].map(|n| one_statement_batch(&plain(n))).to_vec();
        assert_eq!(taken, [1, 2, 2, 4, 8, 8, 128, 256]);
        assert!(taken.iter().all(|&n| sqlite_insert_statements(n) == 1));
        let mut touching = plain(6);
        touching.push(Record { work: Work::Sighting { user: "u".into(), at: 1 }, done: oneshot::channel().0 });
        assert_eq!(one_statement_batch(&touching), 7);
        assert_eq!(one_statement_batch(&[]), 0);
    }

    /// Each SQLite statement size is prepared once per connection: batches after the first of
    /// their sizes prepare nothing. (A multi-row insert of a `Vec`, or `sql_query`, is never
    /// cached: prepared again on every batch, it would count no cache event here at all.)
    #[tokio::test]
    async fn each_audit_statement_size_is_prepared_once_per_connection() {
        let (store, dir) = sqlite_store(Default::default()).await;
        let (path, busy_timeout) = store.sqlite_file().unwrap();
        let mut conn = open_sqlite(path, busy_timeout, &store.call_counter()).unwrap();
        let cached = Arc::new(AtomicU64::new(0));
        diesel::Connection::set_instrumentation(&mut conn, CachedStatements(cached.clone()));
        let batch = |rows: usize| (0..rows).map(|_| handout_record(handout_audit())).collect::<Vec<_>>();
        write_sqlite(&mut conn, &batch(3)).unwrap();
        assert_eq!(cached.load(Ordering::Relaxed), 2, "two rows and one row");
        write_sqlite(&mut conn, &batch(3)).unwrap();
        write_sqlite(&mut conn, &batch(2)).unwrap();
        write_sqlite(&mut conn, &batch(1)).unwrap();
        assert_eq!(cached.load(Ordering::Relaxed), 2, "the same sizes again");
        write_sqlite(&mut conn, &batch(4)).unwrap();
        assert_eq!(cached.load(Ordering::Relaxed), 3, "a new size");
        assert_eq!(crate::testing::count_rows(&store, "audit_log").await.unwrap(), 13);
        // PostgreSQL's one statement is cached by type as well.
        const { assert!(<postgres::InsertAuditArrays as diesel::query_builder::QueryId>::HAS_STATIC_QUERY_ID) };
        drop((conn, store));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Counts the statements a connection prepares into its statement cache.
    struct CachedStatements(Arc<AtomicU64>);

    impl diesel::connection::Instrumentation for CachedStatements {
        fn on_connection_event(&mut self, event: diesel::connection::InstrumentationEvent<'_>) {
            if let diesel::connection::InstrumentationEvent::CacheQuery { .. } = event {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Makes the side file of `store` refuse every audit row whose action is `action`, as a
    /// full disk or a broken file would: the one way left to fail a single row, since the side
    /// file has no unique index on ids.
    fn refuse_in_side_file(store: &Store, action: &str) {
        let (path, _) = store.sqlite_file().unwrap();
        let side = crate::handout_audit::side_path(path);
        let mut conn = SqliteConnection::establish(side.to_str().unwrap()).unwrap();
        conn.batch_execute(&format!(
            "CREATE TRIGGER IF NOT EXISTS refuse_{action} BEFORE INSERT ON audit_log \
             WHEN NEW.action = '{action}' BEGIN SELECT RAISE(ABORT, 'refused'); END;"
        ))
        .unwrap();
    }

    pub(super) fn handout_record(audit: AuditEntry) -> Record {
        Record { work: Work::Handout { grant: "g".into(), touch: None, audit }, done: oneshot::channel().0 }
    }

    #[derive(diesel::QueryableByName)]
    struct SeenRow {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
        last_seen_at: Option<i64>,
    }

    #[tokio::test]
    async fn the_sqlite_writer_thread_ends_with_the_last_store() {
        let (store, dir) = sqlite_store(Default::default()).await;
        // The writer thread holds the store's call counter (it counts its statements), as do the
        // pooled connections: once the last `Store` is gone, only this copy may remain. (Counting
        // threads by name raced with the other tests' stores.)
        let calls = store.call_counter();
        refuse_in_side_file(&store, "refused");
        store.handout_log().record(&store, "g", None, &handout_audit()).await.unwrap();
        // A row the side file refuses fails alone, and the writer lives on.
        let refused = AuditEntry { action: "refused".into(), ..handout_audit() };
        let result = store.handout_log().record(&store, "g", None, &refused).await;
        assert!(result.is_err(), "{result:?}");
        store.handout_log().record(&store, "g", None, &handout_audit()).await.unwrap();
        assert!(store.handout_log().thread.get().is_some(), "the writer thread started");
        let clone = store.clone();
        drop(store);
        assert!(Arc::strong_count(&calls.0) > 1, "a clone still holds the store");
        drop(clone);
        assert_eq!(Arc::strong_count(&calls.0), 1, "dropping the last store joins its writer thread");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
