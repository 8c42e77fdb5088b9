//! The connection pool: one enum over the two backends, picked from the database URL, and the
//! per-connection setup each backend needs.
//!
//! Queries are written once with diesel's DSL and run on either variant through the `with_conn!`
//! and `transaction!` macros (see `macros.rs`): each macro arm binds a connection of the concrete
//! type, so the same query text is type-checked against both backends at compile time.

use crate::error::ConnectError;
use crate::models::UserRow;
use crate::schema::{credentials, grants, providers, users};
use custody_identity::ports::StoreError;
use custody_vault::grant::GrantStatus;
use custody_vault::ports::RevokeScope;
use diesel::prelude::*;
use diesel::result::ConnectionError;
use diesel::SqliteConnection;
use diesel_async::pooled_connection::deadpool::{Object, Pool, PoolError};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// An async SQLite connection: diesel's synchronous connection driven on tokio's blocking pool.
pub type SqliteConn = SyncConnectionWrapper<SqliteConnection>;
/// A read-only SQLite connection whose statements run inline, on the calling task's thread (see
/// [`Inline`]). Only the hot path's point reads use it, through the `read_conn!` macro.
pub type SqliteReadConn = SyncConnectionWrapper<SqliteConnection, Inline>;
/// An async PostgreSQL connection.
pub type PgConn = AsyncPgConnection;

/// Runs a SQLite statement on the thread that polls it instead of handing it to tokio's blocking
/// pool.
///
/// An indexed point read of a WAL database whose pages are cached takes a few microseconds,
/// far less than the two thread handoffs (and the futex traffic) of `spawn_blocking`, which
/// dominated the hand-out's profile. It is only used for reads, on connections opened with
/// `query_only`: in WAL mode readers never wait for the writer, so a read cannot stall a runtime
/// worker behind another connection's write transaction. Writes keep going through
/// [`SqliteConn`] and the blocking pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inline;

impl diesel_async::sync_connection_wrapper::SpawnBlocking for Inline {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = Result<R, Box<dyn std::error::Error + Send + Sync + 'static>>> + Send + 'a>,
    >
    where
        R: Send + 'static,
    {
        Box::pin(std::future::ready(Ok(task())))
    }

    fn get_runtime() -> Self {
        Inline
    }
}

/// Which database a [`crate::Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend's name as used in logs and test output.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The pool behind a [`crate::Store`], one variant per backend.
#[derive(Clone)]
pub enum DbPool {
    Sqlite(Pool<SqliteConn>),
    Postgres(Pool<PgConn>),
}

impl DbPool {
    /// The backend of this pool.
    pub fn backend(&self) -> Backend {
        match self {
            DbPool::Sqlite(_) => Backend::Sqlite,
            DbPool::Postgres(_) => Backend::Postgres,
        }
    }
}

impl fmt::Debug for DbPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self {
            DbPool::Sqlite(p) => p.status(),
            DbPool::Postgres(p) => p.status(),
        };
        f.debug_struct("DbPool")
            .field("backend", &self.backend())
            .field("size", &status.size)
            .field("available", &status.available)
            .finish()
    }
}

/// Where a database URL points. The PostgreSQL URL may hold a password: never log or print it.
#[derive(Clone)]
pub(crate) enum Target {
    Sqlite(PathBuf),
    Postgres(String),
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Target::Postgres(_) => f.write_str("Postgres([redacted])"),
        }
    }
}

/// The file of a SQLite database URL, `None` for PostgreSQL or a URL that does not parse.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    match parse_url(url) {
        Ok(Target::Sqlite(path)) => Some(path),
        _ => None,
    }
}

/// Parses a database URL: `sqlite://path` or `sqlite:path` (relative or absolute path to a
/// file), `postgres://…` or `postgresql://…`. Anything else is refused.
pub(crate) fn parse_url(url: &str) -> Result<Target, ConnectError> {
    let (scheme, rest) =
        url.split_once(':').ok_or(ConnectError::InvalidUrl("missing scheme (expected sqlite:// or postgres://)"))?;
    // Only echo something that looks like a scheme, never a fragment of credentials.
    let plausible_scheme = !scheme.is_empty()
        && scheme.len() <= 32
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !plausible_scheme {
        return Err(ConnectError::InvalidUrl("missing scheme (expected sqlite:// or postgres://)"));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "sqlite" => {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(ConnectError::InvalidUrl("the SQLite URL has no file path"));
            }
            // Each pooled connection to `:memory:` would open its own, empty database.
            if path.starts_with(":memory:") || path.contains("mode=memory") {
                return Err(ConnectError::InvalidUrl("in-memory SQLite is not supported; use a file path"));
            }
            if path.contains('?') {
                return Err(ConnectError::InvalidUrl("SQLite URLs take no query parameters"));
            }
            Ok(Target::Sqlite(PathBuf::from(path)))
        }
        "postgres" | "postgresql" => Ok(Target::Postgres(url.to_owned())),
        other => Err(ConnectError::UnsupportedScheme(other.to_owned())),
    }
}

/// The statements run on every new SQLite connection. `busy_timeout` comes first so the others
/// wait for locks too; WAL lets readers proceed while one writer writes; `synchronous=NORMAL` is
/// durable across application crashes in WAL mode (a power loss may drop the last commits);
/// foreign keys are off by default in SQLite and the cascades depend on them. `mmap_size` lets
/// reads use the file's pages in place: every commit invalidates the other connections' page
/// caches, and refilling them from the mapping costs no `pread` copies. `temp_store = MEMORY`
/// keeps statement journals and sorters off the disk: with the default, every insert in a
/// multi-statement transaction created and deleted a temporary file.
///
/// Measured and left as is (issue #16, `xtask bench --quick`, on a machine shared with other
/// builds): `mmap_size = 0` (every commit makes each reader unmap the whole mapping, IPIs
/// included, where without it the reader re-reads a few pages with `pread`); it did not move
/// hand-outs/s or CPU per hand-out beyond the run-to-run noise (±20%). These connections keep
/// SQLite's automatic checkpoint (it runs in the connection whose commit passes the threshold;
/// readers never commit). The hand-out log's writer has it off: a thread of its own checkpoints
/// the hand-out audit file and the main file (`handout_log/checkpoint.rs`), which lowered p99
/// rather than CPU per hand-out.
pub(crate) fn sqlite_pragmas(busy_timeout: Duration) -> String {
    format!(
        "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
         PRAGMA mmap_size = {SQLITE_MMAP_BYTES}; PRAGMA temp_store = MEMORY;",
        busy_timeout.as_millis().min(i32::MAX as u128)
    )
}

/// How much of a SQLite database file each connection maps into memory (address space, not
/// resident memory): SQLite's compile-time ceiling on Linux (`SQLITE_MAX_MMAP_SIZE`, just under
/// 2 GiB), which a larger value is lowered to. Pages past the mapping are read with `pread` into
/// each connection's small page cache instead: with 1 GiB, the 1,000,000-user store of the
/// benchmark (1.5 GB) spent about a tenth of its CPU there, and its CPU per hand-out was 1.6
/// times the 1,000-user store's; with this mapping 1.3 times (`xtask bench`, medians of 3).
const SQLITE_MMAP_BYTES: u64 = 0x7fff_0000;

/// The SQLite file path as the string diesel opens.
pub(crate) fn sqlite_path_str(path: &std::path::Path) -> Result<String, ConnectError> {
    path.to_str().map(str::to_owned).ok_or(ConnectError::InvalidUrl("the SQLite path is not valid UTF-8"))
}

/// Builds the SQLite pool; every new connection gets [`sqlite_pragmas`].
pub(crate) fn sqlite_pool(
    path: &str,
    max_size: usize,
    busy_timeout: Duration,
) -> Result<Pool<SqliteConn>, ConnectError> {
    let pragmas = sqlite_pragmas(busy_timeout);
    let mut config = ManagerConfig::<SqliteConn>::default();
    // A file connection cannot go away underneath us; skip the extra `SELECT 1` per checkout.
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| {
        let url = url.to_owned();
        let pragmas = pragmas.clone();
        Box::pin(async move {
            let mut conn = SqliteConn::establish(&url).await?;
            conn.batch_execute(&pragmas).await.map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::new_with_config(path, config);
    Pool::builder(manager).max_size(max_size).build().map_err(|e| ConnectError::Pool(e.to_string()))
}

/// Builds the pool of inline read connections ([`SqliteReadConn`]): `query_only`, so a bug that
/// sent a write through one fails instead of blocking a runtime thread on the write lock.
pub(crate) fn sqlite_read_pool(
    path: &str,
    max_size: usize,
    busy_timeout: Duration,
) -> Result<Pool<SqliteReadConn>, ConnectError> {
    let pragmas = format!("{} PRAGMA query_only = ON;", sqlite_pragmas(busy_timeout));
    let mut config = ManagerConfig::<SqliteReadConn>::default();
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| {
        let url = url.to_owned();
        let pragmas = pragmas.clone();
        Box::pin(async move {
            let mut conn = SqliteReadConn::establish(&url).await?;
            conn.batch_execute(&pragmas).await.map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::new_with_config(path, config);
    Pool::builder(manager).max_size(max_size).build().map_err(|e| ConnectError::Pool(e.to_string()))
}

/// Builds the PostgreSQL pool.
pub(crate) fn postgres_pool(url: &str, max_size: usize) -> Result<Pool<PgConn>, ConnectError> {
    let mut config = ManagerConfig::<PgConn>::default();
    // `Fast` still discards connections whose socket closed or that hold a dangling transaction
    // (diesel-async's `is_broken`), without a round trip per checkout on the hot path.
    config.recycling_method = RecyclingMethod::Fast;
    let manager = AsyncDieselConnectionManager::new_with_config(url, config);
    Pool::builder(manager).max_size(max_size).build().map_err(|e| ConnectError::Pool(e.to_string()))
}

/// Builds the pool of sessions that hold refresh locks (see `refresh_lock.rs`): every session
/// waits at most `lock_timeout` for a lock, server-side.
pub(crate) fn postgres_lock_pool(
    url: &str,
    max_size: usize,
    lock_timeout: Duration,
) -> Result<Pool<PgConn>, ConnectError> {
    let setting = format!("SET lock_timeout = {}", lock_timeout.as_millis().clamp(1, i32::MAX as u128));
    let mut config = ManagerConfig::<PgConn>::default();
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| {
        let url = url.to_owned();
        let setting = setting.clone();
        Box::pin(async move {
            let mut conn = PgConn::establish(&url).await?;
            conn.batch_execute(&setting).await.map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::new_with_config(url, config);
    Pool::builder(manager).max_size(max_size).build().map_err(|e| ConnectError::Pool(e.to_string()))
}

fn pool_error(e: PoolError) -> StoreError {
    // Connection errors may name the host; that is fine for logs, not for callers.
    tracing::warn!(error = %e, "database pool error");
    match e {
        PoolError::Timeout(_) => StoreError::Unavailable("timed out waiting for a database connection".into()),
        PoolError::Closed => StoreError::Unavailable("the database pool is closed".into()),
        _ => StoreError::Unavailable("could not connect to the database".into()),
    }
}

async fn checkout<T, F>(get: F, timeout: Duration) -> Result<T, StoreError>
where
    F: Future<Output = Result<T, PoolError>>,
{
    // deadpool waits forever without a runtime-backed timeout; bound the wait here instead, so an
    // exhausted pool turns into a retryable error rather than a hung request.
    match tokio::time::timeout(timeout, get).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(pool_error(e)),
        Err(_) => Err(StoreError::Unavailable("timed out waiting for a database connection".into())),
    }
}

/// A pooled SQLite connection, waiting at most `timeout`.
pub(crate) async fn checkout_sqlite(
    pool: &Pool<SqliteConn>,
    timeout: Duration,
) -> Result<Object<SqliteConn>, StoreError> {
    checkout(pool.get(), timeout).await
}

/// A pooled inline SQLite read connection, waiting at most `timeout`.
pub(crate) async fn checkout_sqlite_read(
    pool: &Pool<SqliteReadConn>,
    timeout: Duration,
) -> Result<Object<SqliteReadConn>, StoreError> {
    checkout(pool.get(), timeout).await
}

/// A pooled PostgreSQL connection, waiting at most `timeout`.
pub(crate) async fn checkout_postgres(pool: &Pool<PgConn>, timeout: Duration) -> Result<Object<PgConn>, StoreError> {
    checkout(pool.get(), timeout).await
}

/// The few queries whose text must differ per backend, implemented on each connection type so
/// macro bodies call them by the same name. They are the row locks: PostgreSQL runs
/// transactions at READ COMMITTED and takes the locks a read-modify-write needs explicitly;
/// SQLite needs none, since its write transactions start with `BEGIN IMMEDIATE`, which already
/// excludes every other writer.
pub(crate) trait BackendQueries {
    /// The user (app, subject), locked until the end of the transaction.
    fn user_for_update(
        &mut self,
        app: &str,
        subject: &str,
    ) -> impl Future<Output = QueryResult<Option<UserRow>>> + Send;

    /// The user (app, subject) with its `status_changed_at`, locked until the end of the
    /// transaction.
    fn user_by_subject_for_update(
        &mut self,
        app: &str,
        subject: &str,
    ) -> impl Future<Output = QueryResult<Option<(UserRow, Option<i64>)>>> + Send;

    /// The user `id` with its `status_changed_at`, locked until the end of the transaction.
    /// Callers check that it belongs to the app they mean.
    fn user_by_id_for_update(
        &mut self,
        id: &str,
    ) -> impl Future<Output = QueryResult<Option<(UserRow, Option<i64>)>>> + Send;

    /// The status of the user `id` of `app`, share-locked until the end of the transaction, so
    /// that a concurrent status change (which locks the row for update) waits or is waited for.
    fn user_status_for_share(
        &mut self,
        app: &str,
        id: &str,
    ) -> impl Future<Output = QueryResult<Option<String>>> + Send;

    /// Whether the provider exists, share-locking its row until the end of the transaction so
    /// that a concurrent deletion waits or is waited for.
    fn provider_exists_for_share(&mut self, app: &str, name: &str) -> impl Future<Output = QueryResult<bool>> + Send;

    /// Whether the provider exists, locking its row for update until the end of the transaction.
    fn provider_exists_for_update(&mut self, app: &str, name: &str) -> impl Future<Output = QueryResult<bool>> + Send;

    /// Locks the credentials of the revoked grants of `app` in `scope`, so that a concurrent
    /// compare-and-set on one of them either lands before the revocation copies them to the
    /// outbox or finds them deleted.
    fn lock_revoked_credentials(
        &mut self,
        app: &str,
        scope: &RevokeScope,
    ) -> impl Future<Output = QueryResult<()>> + Send;
}

impl BackendQueries for SqliteConn {
    async fn user_for_update(&mut self, app: &str, subject: &str) -> QueryResult<Option<UserRow>> {
        users::table
            .filter(users::app_id.eq(app))
            .filter(users::subject.eq(subject))
            .select(UserRow::as_select())
            .first(self)
            .await
            .optional()
    }

    async fn user_by_subject_for_update(
        &mut self,
        app: &str,
        subject: &str,
    ) -> QueryResult<Option<(UserRow, Option<i64>)>> {
        users::table
            .filter(users::app_id.eq(app))
            .filter(users::subject.eq(subject))
            .select((UserRow::as_select(), users::status_changed_at))
            .first(self)
            .await
            .optional()
    }

    async fn user_by_id_for_update(&mut self, id: &str) -> QueryResult<Option<(UserRow, Option<i64>)>> {
        users::table.find(id).select((UserRow::as_select(), users::status_changed_at)).first(self).await.optional()
    }

    async fn user_status_for_share(&mut self, app: &str, id: &str) -> QueryResult<Option<String>> {
        users::table
            .filter(users::id.eq(id))
            .filter(users::app_id.eq(app))
            .select(users::status)
            .first(self)
            .await
            .optional()
    }

    async fn provider_exists_for_share(&mut self, app: &str, name: &str) -> QueryResult<bool> {
        let found: Option<String> =
            providers::table.find((app, name)).select(providers::name).first(self).await.optional()?;
        Ok(found.is_some())
    }

    async fn provider_exists_for_update(&mut self, app: &str, name: &str) -> QueryResult<bool> {
        self.provider_exists_for_share(app, name).await
    }

    async fn lock_revoked_credentials(&mut self, _app: &str, _scope: &RevokeScope) -> QueryResult<()> {
        Ok(())
    }
}

impl BackendQueries for PgConn {
    async fn user_for_update(&mut self, app: &str, subject: &str) -> QueryResult<Option<UserRow>> {
        users::table
            .filter(users::app_id.eq(app))
            .filter(users::subject.eq(subject))
            .select(UserRow::as_select())
            .for_update()
            .first(self)
            .await
            .optional()
    }

    async fn user_by_subject_for_update(
        &mut self,
        app: &str,
        subject: &str,
    ) -> QueryResult<Option<(UserRow, Option<i64>)>> {
        users::table
            .filter(users::app_id.eq(app))
            .filter(users::subject.eq(subject))
            .select((UserRow::as_select(), users::status_changed_at))
            .for_update()
            .first(self)
            .await
            .optional()
    }

    async fn user_by_id_for_update(&mut self, id: &str) -> QueryResult<Option<(UserRow, Option<i64>)>> {
        users::table
            .find(id)
            .select((UserRow::as_select(), users::status_changed_at))
            .for_update()
            .first(self)
            .await
            .optional()
    }

    async fn user_status_for_share(&mut self, app: &str, id: &str) -> QueryResult<Option<String>> {
        users::table
            .filter(users::id.eq(id))
            .filter(users::app_id.eq(app))
            .select(users::status)
            .for_share()
            .first(self)
            .await
            .optional()
    }

    async fn provider_exists_for_share(&mut self, app: &str, name: &str) -> QueryResult<bool> {
        let found: Option<String> =
            providers::table.find((app, name)).select(providers::name).for_share().first(self).await.optional()?;
        Ok(found.is_some())
    }

    async fn provider_exists_for_update(&mut self, app: &str, name: &str) -> QueryResult<bool> {
        let found: Option<String> =
            providers::table.find((app, name)).select(providers::name).for_update().first(self).await.optional()?;
        Ok(found.is_some())
    }

    async fn lock_revoked_credentials(&mut self, app: &str, scope: &RevokeScope) -> QueryResult<()> {
        let revoked =
            grants::table.filter(grants::app_id.eq(app)).filter(grants::status.eq(GrantStatus::Revoked.as_str()));
        // Run for its locks only; the rows are not needed.
        with_scope!(scope, |in_scope| {
            credentials::table
                .filter(credentials::grant_id.eq_any(revoked.filter(in_scope).select(grants::id)))
                .select(credentials::grant_id)
                .for_update()
                .execute(self)
                .await?
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert!(
            matches!(parse_url("sqlite://data/custody.db"), Ok(Target::Sqlite(p)) if p == std::path::Path::new("data/custody.db"))
        );
        assert!(
            matches!(parse_url("sqlite:///var/lib/c.db"), Ok(Target::Sqlite(p)) if p == std::path::Path::new("/var/lib/c.db"))
        );
        assert!(matches!(parse_url("sqlite:c.db"), Ok(Target::Sqlite(p)) if p == std::path::Path::new("c.db")));
        assert!(matches!(parse_url("postgres://u:p@h/db"), Ok(Target::Postgres(_))));
        assert!(matches!(parse_url("postgresql://h/db"), Ok(Target::Postgres(_))));
        assert_eq!(parse_url("mysql://h/db").err(), Some(ConnectError::UnsupportedScheme("mysql".into())));
        assert!(matches!(parse_url("sqlite::memory:"), Err(ConnectError::InvalidUrl(_))));
        assert!(matches!(parse_url("sqlite://"), Err(ConnectError::InvalidUrl(_))));
        assert!(matches!(parse_url("no-scheme"), Err(ConnectError::InvalidUrl(_))));
        assert!(matches!(parse_url("user@host:secret"), Err(ConnectError::InvalidUrl(_))));
    }

    /// The bundled SQLite is built with `.cargo/config.toml`'s `LIBSQLITE3_FLAGS`: an edit there
    /// that dropped one (or a build that ignored the variable) would pass every other test and
    /// only show in `cargo xtask bench`.
    #[test]
    fn bundled_sqlite_has_the_workspace_compile_options() {
        use diesel::sql_types::Text;
        use diesel::Connection as _;

        #[derive(diesel::QueryableByName)]
        struct CompileOption {
            #[diesel(sql_type = Text)]
            compile_options: String,
        }
        let mut conn = diesel::SqliteConnection::establish(":memory:").unwrap();
        let options: Vec<String> =
            diesel::RunQueryDsl::load::<CompileOption>(diesel::sql_query("PRAGMA compile_options"), &mut conn)
                .unwrap()
                .into_iter()
                .map(|o| o.compile_options)
                .collect();
        for wanted in ["THREADSAFE=2", "DEFAULT_MEMSTATUS=0", "OMIT_SHARED_CACHE", "TEMP_STORE=2", "ENABLE_QPSG"] {
            assert!(options.iter().any(|o| o == wanted), "SQLite lacks {wanted}: {options:?}");
        }
        for unwanted in ["ENABLE_STAT4", "ENABLE_MEMORY_MANAGEMENT"] {
            assert!(!options.iter().any(|o| o == unwanted), "SQLite has {unwanted}: {options:?}");
        }
    }

    #[test]
    fn target_debug_hides_postgres_url() {
        let t = parse_url("postgres://u:hunter2@h/db").unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
    }
}
