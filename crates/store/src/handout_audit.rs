//! SQLite only: the hand-out audit rows live in a database file of their own.
//!
//! Every hand-out writes an audit row. In the main file, each group commit of those rows
//! changed the main file's WAL, and a SQLite reader whose snapshot changed throws its page cache
//! away and unmaps the whole memory-mapped file before its next read (`pagerBeginReadTransaction`:
//! `pager_reset` and `sqlite3OsUnfetch`). Every hand-out's read then started cold: the page
//! tables torn down (with TLB shootdowns on every CPU), every page of the descent faulted in
//! again. Measured with `cargo xtask bench` on a quiet machine, against the reference pipeline
//! of the same run: hand-outs per second rose by a fifth (reused tokens) to a third (fresh
//! tokens) with 1,000 users, and more than doubled with 1,000,000, where the remapping had been
//! half of the CPU.
//!
//! The file is `<database file>-handouts` (next to SQLite's own `-wal` and `-shm`), in WAL mode
//! like the main one, with an `audit_log` table of the same columns. The hand-out log's writer thread opens it
//! as its main database and attaches the main file as `custody`, for the rare batch that also
//! moves a grant's `last_used_at` or a user's `last_seen_at` (see `handout_log/mod.rs`). A small pool of its own serves
//! listing, pruning and deleting an app's rows. The main pool's connections never attach it: a
//! `BEGIN IMMEDIATE` takes the write lock of every attached file, so each of their transactions
//! would have stalled the hand-out writer, and taken the two files' locks in the opposite order
//! from the writer's (a deadlock that only the busy timeout ends).
//!
//! Only hand-out rows come here. Every other audit row is written in the transaction of the
//! change it records, which must stay atomic, and a SQLite transaction is atomic only within
//! one WAL file. So the app's audit trail is the merge of two tables: [`list_page`] reads both
//! and merges them newest first.
//!
//! What this costs: the rows have no foreign key to their app (a row for an app deleted a
//! moment before is kept, unlisted, until retention prunes it), and backups copy two files.
//! PostgreSQL keeps one table: its readers have no page cache to lose.

use crate::cursor::{fetch_limit, Cursor};
use crate::error::{db_error, ConnectError};
use crate::models::AuditRow;
use crate::pool::{checkout_sqlite, DbPool, SqliteConn};
use crate::schema::audit_log;
use crate::store::Store;
use custody_identity::audit::{AuditEntry, AuditFilter};
use custody_identity::page::{Page, PageRequest};
use custody_identity::ports::StoreError;
use custody_identity::AppId;
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::RunQueryDsl;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Connections to the side file besides the writer thread's: listing, pruning and app
/// deletion, all rare.
pub(crate) const POOL_SIZE: usize = 2;

/// The side file's schema: `audit_log` as in the main file, without the foreign key to `apps`
/// (which is in the other file) and without the unique index on `id`.
///
/// Nothing looks a hand-out row up by `id`, and ids are unique by construction (version 7
/// UUIDs with a per-process counter and 62 random bits). The index cost every group commit a
/// third of the pages it wrote to the WAL (9.4 frames for a commit of 10 rows with it, 6.6
/// without), each written with two `pwrite` calls, plus a B-tree insert per row. A side file
/// created before keeps its index; it works the same.
const CREATE_TABLE: &str = "\
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    user_id TEXT,
    grant_id TEXT,
    provider TEXT,
    outcome TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS audit_log_app_seq_idx ON audit_log (app_id, seq DESC);";

/// The side file of the SQLite database at `main`: `<main>-handouts`.
pub(crate) fn side_path(main: &Path) -> PathBuf {
    let mut name = main.as_os_str().to_owned();
    name.push("-handouts");
    PathBuf::from(name)
}

/// Creates the side file and its table when missing, and switches it to WAL. Blocking; run once
/// when the store opens, before any connection opens the file.
pub(crate) fn prepare(main: &Path, busy_timeout: Duration) -> Result<(), ConnectError> {
    let path = crate::pool::sqlite_path_str(&side_path(main))?;
    let mut conn = SqliteConnection::establish(&path).map_err(|e| ConnectError::Connect(e.to_string()))?;
    conn.batch_execute(&crate::pool::sqlite_pragmas(busy_timeout))
        .and_then(|()| conn.batch_execute(CREATE_TABLE))
        .map_err(|e| ConnectError::Connect(format!("the hand-out audit file: {e}")))
}

/// Where the next page starts: in each file, below the `seq` of the last row listed from it
/// (`i64::MAX` before any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    main_below: i64,
    side_below: i64,
}

impl Position {
    const START: Position = Position { main_below: i64::MAX, side_below: i64::MAX };

    fn encode(self) -> String {
        Cursor::encode(self.main_below, &format!("h{}", self.side_below))
    }

    fn decode(page: &PageRequest) -> Result<Position, StoreError> {
        let Some(cursor) = Cursor::of(page)? else { return Ok(Position::START) };
        let side_below =
            cursor.id.strip_prefix('h').and_then(|seq| seq.parse::<i64>().ok()).ok_or(StoreError::InvalidCursor)?;
        Ok(Position { main_below: cursor.ts, side_below })
    }
}

/// Up to `limit` rows of `audit_log` on `conn` (either file's) for the app, filtered, with a
/// `seq` below `below`, in reverse order of writing.
async fn audit_rows(
    conn: &mut SqliteConn,
    app: &AppId,
    filter: &AuditFilter,
    below: i64,
    limit: i64,
) -> Result<Vec<AuditRow>, StoreError> {
    let mut query = audit_log::table
        .filter(audit_log::app_id.eq(app.as_str()))
        .filter(audit_log::seq.lt(below))
        .select(AuditRow::as_select())
        .into_boxed();
    if let Some(action) = &filter.action {
        query = query.filter(audit_log::action.eq(action.as_str()));
    }
    if let Some(user) = &filter.user_id {
        query = query.filter(audit_log::user_id.eq(user.as_str()));
    }
    query.order(audit_log::seq.desc()).limit(limit).load(conn).await.map_err(db_error)
}

/// One page of the app's audit trail on SQLite: both files' rows, merged (see
/// [`merge_newest_first`]).
///
/// The cursor holds a position in each file. A page continues the merge exactly where the last
/// one stopped, since rows written meanwhile have higher `seq`s in their file and so come before
/// both positions.
pub(crate) async fn list_page(
    store: &Store,
    app: &AppId,
    filter: &AuditFilter,
    page: &PageRequest,
) -> Result<Page<AuditEntry>, StoreError> {
    let (DbPool::Sqlite(main_pool), Some(side_pool)) = (store.pool(), store.handout_audit_pool()) else {
        return Err(StoreError::Unavailable("the hand-out audit file is SQLite only".into()));
    };
    let mut position = Position::decode(page)?;
    let fetch = fetch_limit(page);
    let main: Vec<AuditRow> = {
        let mut conn = checkout_sqlite(main_pool, store.acquire_timeout()).await?;
        store.count_calls(&mut conn);
        audit_rows(&mut conn, app, filter, position.main_below, fetch).await?
    };
    let side: Vec<AuditRow> = {
        let mut conn = checkout_sqlite(side_pool, store.acquire_timeout()).await?;
        store.count_calls(&mut conn);
        audit_rows(&mut conn, app, filter, position.side_below, fetch).await?
    };
    let limit = usize::try_from(page.limit()).unwrap_or(usize::MAX);
    let mut rows = merge_newest_first(main, side, limit.saturating_add(1));
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    for (in_main, row) in &rows {
        if *in_main {
            position.main_below = row.seq;
        } else {
            position.side_below = row.seq;
        }
    }
    Ok(Page {
        items: rows.into_iter().map(|(_, row)| row.into_domain()).collect::<Result<_, _>>()?,
        next_cursor: has_more.then(|| position.encode()),
    })
}

/// A connection to the side file, counted.
async fn side_conn(store: &Store) -> Result<Object<SqliteConn>, StoreError> {
    let pool = store
        .handout_audit_pool()
        .ok_or_else(|| StoreError::Unavailable("the hand-out audit file is SQLite only".into()))?;
    let mut conn = checkout_sqlite(pool, store.acquire_timeout()).await?;
    store.count_calls(&mut conn);
    Ok(conn)
}

/// Up to `limit` rows of two lists, each in reverse order of writing in its file, merged: of the
/// two next rows, the one of the later second, the main file's on a tie (within a second, which
/// of two files was written first is not recorded). Each is tagged with whether it came from the
/// main file.
fn merge_newest_first(main: Vec<AuditRow>, side: Vec<AuditRow>, limit: usize) -> Vec<(bool, AuditRow)> {
    let mut merged = Vec::with_capacity(limit.min(main.len() + side.len()));
    let (mut main, mut side) = (main.into_iter().peekable(), side.into_iter().peekable());
    while merged.len() < limit {
        let take_main = match (main.peek(), side.peek()) {
            (Some(m), Some(s)) => m.at >= s.at,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_main { main.next().map(|r| (true, r)) } else { side.next().map(|r| (false, r)) };
        merged.extend(next);
    }
    merged
}

/// Deletes up to `limit` of the side file's oldest rows written before `before`, as
/// `prune_audit` does in the main file. Returns how many went.
pub(crate) async fn prune(store: &Store, before: i64, limit: u32) -> Result<u64, StoreError> {
    if limit == 0 {
        return Ok(0);
    }
    let conn: &mut SqliteConn = &mut *side_conn(store).await?;
    let deleted = prune_oldest_audit_rows!(conn, before, limit);
    Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
}

/// Deletes the side file's rows of a deleted app (the main file's go by `ON DELETE CASCADE`).
pub(crate) async fn delete_app(store: &Store, app: &AppId) -> Result<(), StoreError> {
    let conn: &mut SqliteConn = &mut *side_conn(store).await?;
    diesel::delete(audit_log::table.filter(audit_log::app_id.eq(app.as_str())))
        .execute(conn)
        .await
        .map_err(db_error)
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(at: i64, seq: i64) -> AuditRow {
        AuditRow {
            seq,
            id: format!("id-{seq}"),
            app_id: "app".into(),
            at,
            action: "token.handout".into(),
            actor: "app".into(),
            user_id: None,
            grant_id: None,
            provider: None,
            outcome: "success".into(),
            detail: None,
        }
    }

    #[test]
    fn the_side_file_sits_next_to_the_database() {
        assert_eq!(side_path(Path::new("data/custody.db")), PathBuf::from("data/custody.db-handouts"));
    }

    /// Of the two next rows, the later second's; the main file's on a tie; each file's own
    /// order kept (a later row of an earlier second stays after its file's earlier rows).
    #[test]
    fn rows_merge_by_second_keeping_each_files_order() {
        let main = vec![row(20, 8), row(10, 7), row(15, 6), row(10, 5)];
        let side = vec![row(30, 3), row(10, 2), row(5, 1)];
        let merged: Vec<(bool, i64)> =
            merge_newest_first(main, side, 10).into_iter().map(|(m, r)| (m, r.seq)).collect();
        assert_eq!(merged, vec![(false, 3), (true, 8), (true, 7), (true, 6), (true, 5), (false, 2), (false, 1)]);
        assert_eq!(merge_newest_first(vec![row(1, 1)], vec![row(1, 1)], 1).len(), 1);
    }

    /// A cursor holds a position in each file; anything else is refused.
    #[test]
    fn cursors_hold_a_position_in_each_file() {
        let page = |cursor: String| PageRequest::new(None, Some(cursor)).unwrap();
        let position = Position { main_below: 7, side_below: 2 };
        assert_eq!(Position::decode(&page(position.encode())).unwrap(), position);
        assert_eq!(Position::decode(&PageRequest::first()).unwrap(), Position::START);
        for foreign in [Cursor::encode(10, "seq"), Cursor::encode(10, "h"), Cursor::encode(10, "hx1")] {
            assert_eq!(Position::decode(&page(foreign)), Err(StoreError::InvalidCursor));
        }
    }
}
