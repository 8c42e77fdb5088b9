//! Test support (feature `testing`): a fresh, throw-away database per test, on SQLite always and
//! on PostgreSQL when `CUSTODY_TEST_POSTGRES_URL` names a server the tests may create databases
//! on (e.g. `postgres://postgres@127.0.0.1:5432/postgres`), plus helpers that set up states the
//! ports cannot reach directly (a user's status set by hand, a group removed as a lifecycle event
//! does, raw SQL to corrupt a row, row counts).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use custody_store::testing::TestDatabase;
//! for db in TestDatabase::all().await? {
//!     let store = db.connect().await?;
//!     // ... exercise `store`; `db.backend()` names the backend in assertion messages.
//! }
//! # Ok(())
//! # }
//! ```

use crate::error::db_error;
use crate::pool::Backend;
use crate::schema::{membership_removals, users};
use crate::{ConnectError, Store, StoreOptions};
use custody_identity::ids::UserId;
use custody_identity::ports::StoreError;
use custody_identity::time::UnixTime;
use custody_identity::user::UserStatus;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use std::fmt;
use std::path::PathBuf;

/// The environment variable naming a PostgreSQL server for tests.
pub const POSTGRES_URL_ENV: &str = "CUSTODY_TEST_POSTGRES_URL";

/// The backends tests should cover here: SQLite, and PostgreSQL when [`POSTGRES_URL_ENV`] is set.
pub fn backends() -> Vec<Backend> {
    let mut backends = vec![Backend::Sqlite];
    if postgres_admin_url().is_some() {
        backends.push(Backend::Postgres);
    }
    backends
}

fn postgres_admin_url() -> Option<String> {
    std::env::var(POSTGRES_URL_ENV).ok().filter(|s| !s.trim().is_empty())
}

/// Why a test database could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TestDatabaseError {
    #[error("PostgreSQL tests need {POSTGRES_URL_ENV}")]
    PostgresNotConfigured,
    #[error("could not set up a test database: {0}")]
    Setup(String),
}

enum Cleanup {
    Directory(PathBuf),
    PostgresDatabase { admin_url: String, name: String },
}

/// A database of its own for one test, removed when dropped: a SQLite file in a new temporary
/// directory, or a new PostgreSQL database `custody_t_<random>` on the configured server.
pub struct TestDatabase {
    backend: Backend,
    url: String,
    cleanup: Cleanup,
}

impl fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password; name the database instead.
        let name = match &self.cleanup {
            Cleanup::Directory(dir) => dir.display().to_string(),
            Cleanup::PostgresDatabase { name, .. } => name.clone(),
        };
        f.debug_struct("TestDatabase").field("backend", &self.backend).field("database", &name).finish()
    }
}

impl TestDatabase {
    /// A new, empty database on `backend` (no migrations applied yet; [`Self::connect`] applies
    /// them).
    pub async fn new(backend: Backend) -> Result<TestDatabase, TestDatabaseError> {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("custody-store-test-{unique}"));
                std::fs::create_dir_all(&dir).map_err(|e| TestDatabaseError::Setup(e.to_string()))?;
                let url = format!("sqlite://{}", dir.join("custody.db").display());
                Ok(TestDatabase { backend, url, cleanup: Cleanup::Directory(dir) })
            }
            Backend::Postgres => {
                let admin_url = postgres_admin_url().ok_or(TestDatabaseError::PostgresNotConfigured)?;
                let name = format!("custody_t_{unique}");
                let mut url = url::Url::parse(&admin_url)
                    .map_err(|e| TestDatabaseError::Setup(format!("{POSTGRES_URL_ENV}: {e}")))?;
                url.set_path(&format!("/{name}"));
                let mut conn = AsyncPgConnection::establish(&admin_url)
                    .await
                    .map_err(|e| TestDatabaseError::Setup(e.to_string()))?;
                diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| TestDatabaseError::Setup(e.to_string()))?;
                Ok(TestDatabase {
                    backend,
                    url: url.to_string(),
                    cleanup: Cleanup::PostgresDatabase { admin_url, name },
                })
            }
        }
    }

    /// One new database per backend in [`backends`].
    pub async fn all() -> Result<Vec<TestDatabase>, TestDatabaseError> {
        let mut databases = Vec::new();
        for backend in backends() {
            databases.push(TestDatabase::new(backend).await?);
        }
        Ok(databases)
    }

    /// The database URL, for [`Store::connect`] or a server under test.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A store on this database, migrated, with default options.
    pub async fn connect(&self) -> Result<Store, ConnectError> {
        Store::connect(&self.url, StoreOptions::default()).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Directory(dir) => {
                // Best effort: a leftover temp file is harmless.
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::PostgresDatabase { admin_url, name } => {
                // Drop may run inside a tokio runtime, where blocking on a future panics: use a
                // thread with a small runtime of its own. FORCE ends the sessions a store under
                // test still holds.
                let admin_url = admin_url.clone();
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                let outcome = std::thread::spawn(move || -> Result<(), String> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    runtime.block_on(async {
                        let mut conn = AsyncPgConnection::establish(&admin_url).await.map_err(|e| e.to_string())?;
                        diesel::sql_query(sql).execute(&mut conn).await.map_err(|e| e.to_string())?;
                        Ok(())
                    })
                })
                .join();
                match outcome {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => eprintln!("custody-store: could not drop test database {name}: {e}"),
                    Err(_) => eprintln!("custody-store: dropping test database {name} panicked"),
                }
            }
        }
    }
}

/// Sets a user's status directly, stamping `status_changed_at` with `at`, without any of the
/// effects of a real status change (no grant is revoked). `false` when there is no such user.
pub async fn set_user_status(
    store: &Store,
    user: &UserId,
    status: UserStatus,
    at: UnixTime,
) -> Result<bool, StoreError> {
    let updated = with_conn!(store, |conn| {
        diesel::update(users::table.find(user.as_str()))
            .set((users::status.eq(status.as_str()), users::status_changed_at.eq(Some(at.0))))
            .execute(conn)
            .await
            .map_err(db_error)?
    });
    Ok(updated > 0)
}

/// Removes `group` from a user as a lifecycle event does (the same code path): locks the user's
/// row, drops the group from its groups and records the removal at `removed_at` (keeping a later
/// one already recorded), in one transaction. `false` when there is no such user.
pub async fn remove_user_group(
    store: &Store,
    user: &UserId,
    group: &str,
    removed_at: UnixTime,
) -> Result<bool, StoreError> {
    crate::vault::remove_user_group(store, user, group, removed_at).await
}

/// The recorded removals of a user's groups, by group name.
pub async fn membership_removals(store: &Store, user: &UserId) -> Result<Vec<(String, UnixTime)>, StoreError> {
    let rows: Vec<(String, i64)> = with_conn!(store, |conn| {
        membership_removals::table
            .filter(membership_removals::user_id.eq(user.as_str()))
            .select((membership_removals::group_name, membership_removals::removed_at))
            .order(membership_removals::group_name.asc())
            .load(conn)
            .await
            .map_err(db_error)?
    });
    Ok(rows.into_iter().map(|(g, t)| (g, UnixTime(t))).collect())
}

/// How many rows `table` holds, for tests that check what a cascade or a rollback left behind.
/// `table` must be one of this crate's tables.
pub async fn count_rows(store: &Store, table: &str) -> Result<i64, StoreError> {
    const TABLES: &[&str] = &[
        "apps",
        "api_keys",
        "idp_configs",
        "users",
        "membership_removals",
        "audit_log",
        "instance_secrets",
        "providers",
        "policies",
        "grants",
        "credentials",
        "connect_states",
        "revocation_outbox",
        "webhook_events",
        "oidc_clients",
        "sign_in_states",
        "sdk_sessions",
        "wallet_sessions",
        "idp_webhooks",
    ];
    if !TABLES.contains(&table) {
        return Err(StoreError::Unavailable(format!("unknown table {table}")));
    }
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let count: Count = with_conn!(store, |conn| {
        diesel::sql_query(format!("SELECT COUNT(*) AS n FROM {table}")).get_result(conn).await.map_err(db_error)?
    });
    // On SQLite the hand-out audit rows are in their own file (`handout_audit.rs`): the audit
    // log is both tables.
    if let (Some(pool), "audit_log") = (store.handout_audit_pool(), table) {
        let mut conn = crate::pool::checkout_sqlite(pool, store.acquire_timeout()).await?;
        let side: Count =
            diesel::sql_query("SELECT COUNT(*) AS n FROM audit_log").get_result(&mut *conn).await.map_err(db_error)?;
        return Ok(count.n + side.n);
    }
    Ok(count.n)
}

/// Runs one raw SQL statement on the store's database and returns the number of rows it
/// affected: for tests that must put a row in a state the ports never write (a corrupt policy).
pub async fn execute_sql(store: &Store, sql: &str) -> Result<usize, StoreError> {
    let affected = with_conn!(store, |conn| diesel::sql_query(sql).execute(conn).await.map_err(db_error)?);
    Ok(affected)
}

/// As [`execute_sql`], on the database that holds the hand-out audit rows: on SQLite their own
/// file (`handout_audit.rs`), whose table is `audit_log` too; on PostgreSQL the one database.
pub async fn execute_handout_audit_sql(store: &Store, sql: &str) -> Result<usize, StoreError> {
    let Some(pool) = store.handout_audit_pool() else { return execute_sql(store, sql).await };
    let mut conn = crate::pool::checkout_sqlite(pool, store.acquire_timeout()).await?;
    diesel::sql_query(sql).execute(&mut *conn).await.map_err(db_error)
}

/// How many grants currently have an in-process refresh-lock entry (held or waited for): the
/// map must not keep entries nobody uses.
pub fn refresh_lock_entries(store: &Store) -> usize {
    store.refresh_locks().local_entries()
}
