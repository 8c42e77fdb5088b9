//! [`Store`]: the handle the server holds. It owns the pool, knows how to migrate its database,
//! and implements the ports (see `identity.rs`, `vault/` and `refresh_lock.rs`).

use crate::error::{db_error, ConnectError, MigrationError};
use crate::migrate::{self, Command, MigrationStatus, Outcome};
use crate::pool::{self, parse_url, sqlite_path_str, Backend, DbPool, Target};
use crate::refresh_lock::RefreshLocks;
use crate::schema::instance_secrets;
use custody_identity::ports::StoreError;
use diesel::prelude::*;
use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::AsyncConnection as _;
use diesel_async::RunQueryDsl;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod deadpool_reads {
    pub type Pool = diesel_async::pooled_connection::deadpool::Pool<crate::pool::SqliteReadConn>;
}

/// Tuning for [`Store::connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Most pooled connections; `None` takes [`default_max_connections`].
    pub max_connections: Option<usize>,
    /// How long an operation waits for a pooled connection (including opening a new one) before
    /// it fails as unavailable.
    pub acquire_timeout: Duration,
    /// SQLite only: how long a statement waits for a lock another connection holds.
    pub sqlite_busy_timeout: Duration,
    /// How long [`custody_vault::ports::RefreshLock::lock`] waits for a grant's refresh lock
    /// before it fails as unavailable. It should exceed the longest refresh (one call to the
    /// provider's token endpoint, with its timeout).
    pub refresh_lock_timeout: Duration,
}

/// The pool size a store takes when [`StoreOptions::max_connections`] is `None`.
///
/// SQLite: 8, whatever the machine, since its writes serialise on one lock and its reads take a
/// few microseconds each. PostgreSQL: 4 per CPU of this machine, at least 16 and at most 64. A
/// connection is held for a whole round trip, during which its task's CPU serves others, so a
/// pool much smaller than a few per CPU leaves requests queueing for a connection while the CPUs
/// idle; each connection is also a server process on the database, so the pool stays well under
/// PostgreSQL's default `max_connections` of 100, leaving room for a second instance.
pub fn default_max_connections(backend: Backend) -> usize {
    match backend {
        Backend::Sqlite => 8,
        Backend::Postgres => {
            let cpus = std::thread::available_parallelism().map_or(1, usize::from);
            (4 * cpus).clamp(16, 64)
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: None,
            acquire_timeout: Duration::from_secs(10),
            sqlite_busy_timeout: Duration::from_secs(5),
            refresh_lock_timeout: Duration::from_secs(30),
        }
    }
}

pub(crate) struct Inner {
    pool: DbPool,
    /// SQLite only: the inline read connections of `read_conn!`, and the connections to the
    /// hand-out audit file (`handout_audit.rs`).
    sqlite_extra:
        Option<(deadpool_reads::Pool, diesel_async::pooled_connection::deadpool::Pool<crate::pool::SqliteConn>)>,
    /// Kept to open dedicated migration connections; may hold a password, never printed.
    target: Target,
    options: StoreOptions,
    locks: RefreshLocks,
    /// Group commit of hand-out records (see `handout_log/mod.rs`).
    handout_log: crate::handout_log::HandoutLog,
    /// Statements sent to the database (see [`Store::database_calls`]), shared with the
    /// [`CallCounter`] of every pooled connection.
    database_calls: Arc<AtomicU64>,
}

/// Counts the statements a connection sends: diesel reports every statement to the connection's
/// instrumentation as it starts, including a transaction's `BEGIN`, `COMMIT` and `ROLLBACK` and
/// every statement of a batch, so the count is what reached the database rather than what the
/// code meant to send. Only `StartQuery` counts. On PostgreSQL a statement not yet prepared on
/// its connection costs one more round trip (the prepare, reported as `CacheQuery` for a
/// cacheable one); that is left out so a read counts the same on a fresh connection as on a
/// warm one, which is the state the hot path runs in.
pub(crate) struct CallCounter(pub(crate) Arc<AtomicU64>);

/// A pooled connection of one of the store's pools, which [`Store::count_calls`] can instrument.
pub(crate) trait Counted {
    /// Installs a [`CallCounter`] adding to `calls`, unless this connection was checked out
    /// before (and so already has one).
    fn count_into(&mut self, calls: &Arc<AtomicU64>);
}

macro_rules! counted {
    ($($conn:ty),+) => {$(
        impl Counted for Object<$conn> {
            fn count_into(&mut self, calls: &Arc<AtomicU64>) {
                if Object::metrics(self).recycle_count == 0 {
                    self.set_instrumentation(CallCounter(calls.clone()));
                }
            }
        }
    )+};
}

counted!(pool::SqliteConn, pool::SqliteReadConn, pool::PgConn);

impl diesel::connection::Instrumentation for CallCounter {
    fn on_connection_event(&mut self, event: diesel::connection::InstrumentationEvent<'_>) {
        if let diesel::connection::InstrumentationEvent::StartQuery { .. } = event {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Custody's persistence adapter over SQLite or PostgreSQL. Cloning is cheap: clones share one
/// pool.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("pool", &self.inner.pool).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the database at `url` (`sqlite://path`, `sqlite:path`, `postgres://…` or
    /// `postgresql://…`) and applies pending migrations. A SQLite file and its parent directory
    /// are created when missing.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Store, ConnectError> {
        Self::open(url, options, true).await
    }

    /// As [`Store::connect`], without touching the schema (for `migrate status` and `down`).
    pub async fn connect_without_migrating(url: &str, options: StoreOptions) -> Result<Store, ConnectError> {
        Self::open(url, options, false).await
    }

    async fn open(url: &str, options: StoreOptions, apply_migrations: bool) -> Result<Store, ConnectError> {
        let target = parse_url(url)?;
        let (pool, sqlite_extra, locks) = match &target {
            Target::Sqlite(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| ConnectError::CreateDirectory(e.to_string()))?;
                }
                let path_str = sqlite_path_str(path)?;
                // Always run once on a dedicated connection, migrating or not: it switches the
                // file to WAL (a persistent setting) before pooled connections race to do it.
                let command = if apply_migrations { Command::Up } else { Command::Prepare };
                migrate::run(target.clone(), options.sqlite_busy_timeout, command).await?;
                // The hand-out audit rows' own file, before any connection opens it.
                let (main, busy) = (path.clone(), options.sqlite_busy_timeout);
                tokio::task::spawn_blocking(move || crate::handout_audit::prepare(&main, busy))
                    .await
                    .map_err(|e| ConnectError::Connect(e.to_string()))??;
                let pool = DbPool::Sqlite(pool::sqlite_pool(
                    &path_str,
                    options.max_connections.unwrap_or(default_max_connections(Backend::Sqlite)),
                    options.sqlite_busy_timeout,
                )?);
                let reads = pool::sqlite_read_pool(
                    &path_str,
                    options.max_connections.unwrap_or(default_max_connections(Backend::Sqlite)),
                    options.sqlite_busy_timeout,
                )?;
                // The hand-out audit file's own connections: never attached to the main pool's,
                // since a `BEGIN IMMEDIATE` takes the write lock of every attached file.
                let handout_audit = pool::sqlite_pool(
                    &sqlite_path_str(&crate::handout_audit::side_path(path))?,
                    crate::handout_audit::POOL_SIZE,
                    options.sqlite_busy_timeout,
                )?;
                (pool, Some((reads, handout_audit)), RefreshLocks::new(None, options.refresh_lock_timeout))
            }
            Target::Postgres(url) => {
                if apply_migrations {
                    migrate::run(target.clone(), options.sqlite_busy_timeout, Command::Up).await?;
                }
                // Every statement goes through diesel-async's per-connection statement cache, so
                // after its first use on a connection a statement is one round trip (bind and
                // execute) instead of two (prepare, then execute). The cache is keyed by the
                // query's static type id when it has one (every DSL query with fixed shape: the
                // point reads of the hand-out, `find`, `filter(...eq(...))`, single-row inserts
                // and updates) and by its SQL text otherwise (the listings' boxed queries, `SELECT 1`); `eq_any`
                // binds one array on PostgreSQL, so it caches too. What does not cache is a multi-row
                // `insert_into(...).values(vec)`, whose text varies with the row count: the
                // hand-out log's batch insert is prepared anew per batch (one extra round trip
                // per batch, shared by all its hand-outs).
                let max_connections = options.max_connections.unwrap_or(default_max_connections(Backend::Postgres));
                let pool = DbPool::Postgres(pool::postgres_pool(url, max_connections)?);
                // Sessions holding refresh locks, apart from the main pool (opened on demand):
                // one per grant being refreshed at the same moment by this process.
                let sessions =
                    pool::postgres_lock_pool(url, (max_connections / 2).max(2), options.refresh_lock_timeout)?;
                (pool, None, RefreshLocks::new(Some(sessions), options.refresh_lock_timeout))
            }
        };
        let store = Store {
            inner: Arc::new(Inner {
                pool,
                sqlite_extra,
                target,
                options,
                locks,
                handout_log: Default::default(),
                database_calls: Default::default(),
            }),
        };
        // Fail at start-up, not on the first request, when the database cannot be reached.
        custody_identity::ports::StoreHealth::ping(&store).await.map_err(|e| ConnectError::Connect(e.to_string()))?;
        tracing::info!(backend = %store.backend(), "store connected");
        Ok(store)
    }

    /// The database this store runs on.
    pub fn backend(&self) -> Backend {
        self.inner.pool.backend()
    }

    /// How many statements this store has sent to the database since it was opened: each
    /// statement of a transaction counts, `BEGIN` and `COMMIT` included (on PostgreSQL each is a
    /// network round trip; on SQLite a call into the library). Statements a new connection runs
    /// while it is set up, refresh-lock sessions and migrations are not counted.
    pub fn database_calls(&self) -> u64 {
        AtomicU64::load(&self.inner.database_calls, Ordering::Relaxed)
    }

    /// Makes `conn` count its statements into [`Store::database_calls`]. Every checkout calls it;
    /// it does the work once per connection, on the connection's first checkout (deadpool counts
    /// recycles, and a checkout of an idle connection is one), so the hot path pays a load and a
    /// compare, not an allocation.
    /// A counter adding to [`Store::database_calls`], for a connection outside the pools (the
    /// SQLite hand-out log's writer thread).
    pub(crate) fn call_counter(&self) -> CallCounter {
        CallCounter(self.inner.database_calls.clone())
    }

    pub(crate) fn count_calls(&self, conn: &mut impl Counted) {
        conn.count_into(&self.inner.database_calls);
    }

    pub(crate) fn pool(&self) -> &DbPool {
        &self.inner.pool
    }

    /// The inline read pool of a SQLite store (see `read_conn!`).
    pub(crate) fn sqlite_reads(&self) -> Result<&deadpool_reads::Pool, StoreError> {
        self.inner
            .sqlite_extra
            .as_ref()
            .map(|(reads, _)| reads)
            .ok_or_else(|| StoreError::Unavailable("no SQLite read pool on this store".into()))
    }

    /// SQLite only: the pool of connections to the hand-out audit file (`handout_audit.rs`).
    pub(crate) fn handout_audit_pool(
        &self,
    ) -> Option<&diesel_async::pooled_connection::deadpool::Pool<crate::pool::SqliteConn>> {
        self.inner.sqlite_extra.as_ref().map(|(_, handouts)| handouts)
    }

    /// SQLite only: the database file and the busy timeout, for a connection of its own outside
    /// the pools (the hand-out log's writer thread).
    pub(crate) fn sqlite_file(&self) -> Option<(&std::path::Path, Duration)> {
        match &self.inner.target {
            Target::Sqlite(path) => Some((path, self.inner.options.sqlite_busy_timeout)),
            Target::Postgres(_) => None,
        }
    }

    /// The group-commit queue of hand-out records.
    pub(crate) fn handout_log(&self) -> &crate::handout_log::HandoutLog {
        &self.inner.handout_log
    }

    /// A handle that does not keep the store open (for its own background tasks).
    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    /// The store behind a [`Store::downgrade`] handle, while any `Store` still holds it.
    pub(crate) fn upgrade(weak: &std::sync::Weak<Inner>) -> Option<Store> {
        weak.upgrade().map(|inner| Store { inner })
    }

    pub(crate) fn refresh_locks(&self) -> &RefreshLocks {
        &self.inner.locks
    }

    pub(crate) fn acquire_timeout(&self) -> Duration {
        self.inner.options.acquire_timeout
    }

    async fn migrations(&self, command: Command) -> Result<Outcome, MigrationError> {
        migrate::run(self.inner.target.clone(), self.inner.options.sqlite_busy_timeout, command).await
    }

    /// Applies every pending migration; returns the versions applied, oldest first.
    pub async fn migrate_up(&self) -> Result<Vec<String>, MigrationError> {
        match self.migrations(Command::Up).await? {
            Outcome::Applied(versions) => Ok(versions),
            other => Err(MigrationError::Failed(format!("unexpected migration outcome {other:?}"))),
        }
    }

    /// Reverts the most recently applied migration; returns its version, or `None` when no
    /// migration was applied.
    pub async fn migrate_down(&self) -> Result<Option<String>, MigrationError> {
        match self.migrations(Command::Down).await? {
            Outcome::Reverted(version) => Ok(version),
            other => Err(MigrationError::Failed(format!("unexpected migration outcome {other:?}"))),
        }
    }

    /// Every migration this build knows, oldest first, and whether the database has it.
    pub async fn migration_status(&self) -> Result<Vec<MigrationStatus>, MigrationError> {
        match self.migrations(Command::Status).await? {
            Outcome::Status(status) => Ok(status),
            other => Err(MigrationError::Failed(format!("unexpected migration outcome {other:?}"))),
        }
    }

    /// The instance secret `name`, if one was stored.
    pub async fn get_instance_secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        with_conn!(self, |conn| {
            instance_secrets::table
                .find(name)
                .select(instance_secrets::value)
                .first::<Vec<u8>>(conn)
                .await
                .optional()
                .map_err(db_error)
        })
    }

    /// Stores `value` as the instance secret `name` unless one exists, and returns the stored
    /// value: `value` or the one that was there first. Safe when several processes start at once
    /// and race to create it: all of them end up with the same value.
    pub async fn put_instance_secret_if_absent(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        with_conn!(self, |conn| {
            diesel::insert_into(instance_secrets::table)
                .values((instance_secrets::name.eq(name), instance_secrets::value.eq(value)))
                .on_conflict_do_nothing()
                .execute(conn)
                .await
                .map_err(db_error)?;
            instance_secrets::table
                .find(name)
                .select(instance_secrets::value)
                .first::<Vec<u8>>(conn)
                .await
                .map_err(db_error)
        })
    }
}
