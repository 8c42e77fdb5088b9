//! Embedded migrations, one set per backend with the same version names, and the blocking
//! routines that apply, revert and list them.
//!
//! Migrations run on a dedicated connection inside `tokio::task::spawn_blocking`, never on a
//! runtime worker: diesel's migration harness is synchronous, and diesel-async's
//! `AsyncMigrationHarness` relies on `block_in_place`, which panics on a current-thread runtime.
//! Concurrent migrators (several instances starting at once) are serialised: SQLite by one
//! `BEGIN IMMEDIATE` transaction around the whole run, PostgreSQL by a session advisory lock.

use crate::error::MigrationError;
use crate::pool::{sqlite_pragmas, PgConn, Target};
use diesel::backend::Backend as DieselBackend;
use diesel::connection::SimpleConnection;
use diesel::migration::MigrationSource;
use diesel::{Connection, SqliteConnection};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::collections::BTreeSet;
use std::time::Duration;

/// The SQLite migrations, from `migrations/sqlite`.
pub(crate) const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
/// The PostgreSQL migrations, from `migrations/postgres`.
pub(crate) const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// Key of the PostgreSQL advisory lock held while migrating ("custody" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x0063_7573_746f_6479;

/// One known migration and whether the database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// The migration's folder name, e.g. `2026-11-22-000001_identity`.
    pub name: String,
    /// Its version as diesel records it (the name's date part without dashes).
    pub version: String,
    pub applied: bool,
}

/// What to do with the migrations.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Command {
    /// Only open the database and apply the per-connection settings (SQLite: switch to WAL).
    Prepare,
    Up,
    Down,
    Status,
}

/// The outcome of a [`Command`].
#[derive(Debug)]
pub(crate) enum Outcome {
    Prepared,
    /// Versions applied by `Up`, oldest first.
    Applied(Vec<String>),
    /// The version reverted by `Down`, `None` when nothing was applied.
    Reverted(Option<String>),
    Status(Vec<MigrationStatus>),
}

/// A failure inside the SQLite migration transaction: of the transaction itself, or of a migration.
enum RunError {
    Db(diesel::result::Error),
    Migration(MigrationError),
}

impl From<diesel::result::Error> for RunError {
    fn from(e: diesel::result::Error) -> Self {
        RunError::Db(e)
    }
}

fn failed(e: impl std::fmt::Display) -> MigrationError {
    MigrationError::Failed(e.to_string())
}

fn execute<DB: DieselBackend>(
    harness: &mut impl MigrationHarness<DB>,
    source: EmbeddedMigrations,
    command: Command,
) -> Result<Outcome, MigrationError> {
    match command {
        Command::Prepare => Ok(Outcome::Prepared),
        Command::Up => {
            let applied = harness.run_pending_migrations(source).map_err(failed)?;
            Ok(Outcome::Applied(applied.iter().map(ToString::to_string).collect()))
        }
        Command::Down => {
            if harness.applied_migrations().map_err(failed)?.is_empty() {
                return Ok(Outcome::Reverted(None));
            }
            let reverted = harness.revert_last_migration(source).map_err(failed)?;
            Ok(Outcome::Reverted(Some(reverted.to_string())))
        }
        Command::Status => {
            let applied: BTreeSet<String> =
                harness.applied_migrations().map_err(failed)?.iter().map(ToString::to_string).collect();
            let mut known: Vec<MigrationStatus> = MigrationSource::<DB>::migrations(&source)
                .map_err(failed)?
                .iter()
                .map(|m| {
                    let version = m.name().version().to_string();
                    MigrationStatus { name: m.name().to_string(), applied: applied.contains(&version), version }
                })
                .collect();
            known.sort_by(|a, b| a.version.cmp(&b.version));
            Ok(Outcome::Status(known))
        }
    }
}

/// Runs `command` against `target` on a blocking thread with its own connection.
pub(crate) async fn run(
    target: Target,
    sqlite_busy_timeout: Duration,
    command: Command,
) -> Result<Outcome, MigrationError> {
    tokio::task::spawn_blocking(move || match target {
        Target::Sqlite(path) => {
            let path =
                path.to_str().ok_or_else(|| MigrationError::Connect("the SQLite path is not valid UTF-8".into()))?;
            let mut conn = SqliteConnection::establish(path).map_err(|e| MigrationError::Connect(e.to_string()))?;
            conn.batch_execute(&sqlite_pragmas(sqlite_busy_timeout))
                .map_err(|e| MigrationError::Connect(e.to_string()))?;
            if let Command::Prepare = command {
                return Ok(Outcome::Prepared);
            }
            // One immediate transaction around the whole run: a second process waits for the
            // first to finish and then finds nothing pending. Each migration's own transaction
            // becomes a savepoint inside it; any failure rolls the whole run back.
            conn.immediate_transaction(|conn| execute(conn, SQLITE_MIGRATIONS, command).map_err(RunError::Migration))
                .map_err(|e| match e {
                    RunError::Db(e) => failed(e),
                    RunError::Migration(e) => e,
                })
        }
        Target::Postgres(url) => {
            let mut conn = AsyncConnectionWrapper::<PgConn>::establish(&url)
                .map_err(|e| MigrationError::Connect(e.to_string()))?;
            if let Command::Prepare = command {
                return Ok(Outcome::Prepared);
            }
            // Held until this connection closes at the end of the block.
            conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")).map_err(failed)?;
            execute(&mut conn, POSTGRES_MIGRATIONS, command)
        }
    })
    .await
    .map_err(|e| MigrationError::Failed(format!("the migration task failed: {e}")))?
}
