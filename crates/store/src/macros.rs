//! The two macros that run one diesel query text on either backend.
//!
//! Each expands to a `match` over [`crate::pool::DbPool`] whose arms bind `$conn` to a pooled
//! connection of the concrete type ([`crate::pool::SqliteConn`] or [`crate::pool::PgConn`]) and
//! then evaluate the same body. Writing queries once and instantiating them per backend keeps
//! diesel's compile-time checks (every query must type-check on both) without the trait-bound
//! soup of functions generic over the connection.
//!
//! Both macros check a connection out with `?`, so the enclosing function's error type must
//! implement `From<StoreError>` (every port error does).

/// Runs `$body` with `$conn` bound to a pooled connection, outside any explicit transaction
/// (a single statement is its own transaction). `$body`'s value is the macro's value.
macro_rules! with_conn {
    ($store:expr, |$conn:ident| $body:expr) => {{
        let store: &$crate::Store = $store;
        match store.pool() {
            $crate::pool::DbPool::Sqlite(pool) => {
                let mut pooled = $crate::pool::checkout_sqlite(pool, store.acquire_timeout()).await?;
                store.count_calls(&mut pooled);
                let $conn: &mut $crate::pool::SqliteConn = &mut pooled;
                $body
            }
            $crate::pool::DbPool::Postgres(pool) => {
                let mut pooled = $crate::pool::checkout_postgres(pool, store.acquire_timeout()).await?;
                store.count_calls(&mut pooled);
                let $conn: &mut $crate::pool::PgConn = &mut pooled;
                $body
            }
        }
    }};
}

/// As `with_conn!` for a single read statement on the hot path. On SQLite, `$conn` is an inline
/// read connection ([`crate::pool::SqliteReadConn`]): the statement runs on the calling thread
/// (no blocking-pool handoff) and cannot write. On PostgreSQL it is the same as `with_conn!`.
/// Keep `$body` to point reads: a long scan here would hold up a runtime thread.
macro_rules! read_conn {
    ($store:expr, |$conn:ident| $body:expr) => {{
        let store: &$crate::Store = $store;
        match store.pool() {
            $crate::pool::DbPool::Sqlite(_) => {
                let mut pooled =
                    $crate::pool::checkout_sqlite_read(store.sqlite_reads()?, store.acquire_timeout()).await?;
                store.count_calls(&mut pooled);
                let $conn: &mut $crate::pool::SqliteReadConn = &mut pooled;
                $body
            }
            $crate::pool::DbPool::Postgres(pool) => {
                let mut pooled = $crate::pool::checkout_postgres(pool, store.acquire_timeout()).await?;
                store.count_calls(&mut pooled);
                let $conn: &mut $crate::pool::PgConn = &mut pooled;
                $body
            }
        }
    }};
}

/// Runs `$body` in one read-write transaction and evaluates to its `Result` (type `$ret`, whose
/// error must implement `From<diesel::result::Error>`, e.g. [`crate::error::TxError`]). An `Err`
/// rolls everything back.
///
/// SQLite starts it with `BEGIN IMMEDIATE`, taking the write lock up front: a deferred
/// transaction that reads and then writes fails with `SQLITE_BUSY` (no waiting) when another
/// connection wrote in between, whereas an immediate one waits for `busy_timeout` and then sees
/// the latest data. PostgreSQL uses a plain `BEGIN` (READ COMMITTED); bodies that need row
/// locks take them explicitly.
macro_rules! transaction {
    ($store:expr, |$conn:ident| -> $ret:ty $body:block) => {{
        let store: &$crate::Store = $store;
        match store.pool() {
            $crate::pool::DbPool::Sqlite(pool) => {
                let mut pooled = $crate::pool::checkout_sqlite(pool, store.acquire_timeout()).await?;
                store.count_calls(&mut pooled);
                let conn: &mut $crate::pool::SqliteConn = &mut pooled;
                conn.immediate_transaction(async |$conn: &mut $crate::pool::SqliteConn| -> $ret { $body }).await
            }
            $crate::pool::DbPool::Postgres(pool) => {
                let mut pooled = $crate::pool::checkout_postgres(pool, store.acquire_timeout()).await?;
                store.count_calls(&mut pooled);
                let conn: &mut $crate::pool::PgConn = &mut pooled;
                ::diesel_async::AsyncConnection::transaction(conn, async |$conn: &mut $crate::pool::PgConn| -> $ret {
                    $body
                })
                .await
            }
        }
    }};
}

/// Inserts an audit row (a `&AuditEntry`) on `$conn`: the statement every mutating method ends
/// with. Evaluates to the statement's `QueryResult<usize>`.
macro_rules! insert_audit {
    ($conn:expr, $entry:expr) => {
        ::diesel_async::RunQueryDsl::execute(
            ::diesel::insert_into($crate::schema::audit_log::table).values($crate::models::NewAuditRow::from($entry)),
            $conn,
        )
        .await
    };
}

/// Evaluates `$body` with `$filter` bound to the `grants` filter of a
/// [`custody_vault::ports::RevokeScope`] (`&RevokeScope`): one arm per scope, so each arm's query
/// is fully typed. The caller adds the app filter.
macro_rules! with_scope {
    ($scope:expr, |$filter:ident| $body:expr) => {
        match $scope {
            ::custody_vault::ports::RevokeScope::Grant(id) => {
                let $filter = $crate::schema::grants::id.eq(id.as_str());
                $body
            }
            ::custody_vault::ports::RevokeScope::Provider(name) => {
                let $filter = $crate::schema::grants::provider.eq(name.as_str());
                $body
            }
            ::custody_vault::ports::RevokeScope::User(user) => {
                let $filter = $crate::schema::grants::user_id.eq(user.as_str());
                $body
            }
        }
    };
}

/// Deletes, on `$conn` (either backend, or the SQLite hand-out audit file), the rows among the
/// oldest `$limit` (a positive `u32`) of `audit_log` that were written before `$before` (unix
/// seconds), with `?` on failure; evaluates to how many went (`usize`). The window ends at the
/// last of the oldest `$limit` rows by the primary key, so rows added meanwhile come after it.
macro_rules! prune_oldest_audit_rows {
    ($conn:expr, $before:expr, $limit:expr) => {{
        use $crate::schema::audit_log;
        let last_of_window: Option<i64> = ::diesel_async::RunQueryDsl::first(
            audit_log::table.select(audit_log::seq).order(audit_log::seq.asc()).offset(i64::from($limit) - 1).limit(1),
            $conn,
        )
        .await
        .optional()
        .map_err($crate::error::db_error)?;
        ::diesel_async::RunQueryDsl::execute(
            ::diesel::delete(
                audit_log::table
                    .filter(audit_log::seq.le(last_of_window.unwrap_or(i64::MAX)))
                    .filter(audit_log::at.lt($before)),
            ),
            $conn,
        )
        .await
        .map_err($crate::error::db_error)?
    }};
}
