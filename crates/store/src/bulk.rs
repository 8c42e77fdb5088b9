//! Bulk loading for benchmarks (feature `testing`): imported grants written straight into a
//! SQLite database, far faster than `POST /v1/apps/{app}/grants` one at a time, with rows the
//! import would have written.
//!
//! Each [`ImportedGrant`] goes through the same row conversions as the store's own writes
//! (`ensure_user`'s user, `save_grant`'s grant and credential, the `grant.import` audit row), so
//! the caller builds domain values exactly as the import does and nothing here guesses at column
//! formats. The caller seals the credential (the key ring lives in `custody-providers`).
//!
//! Everything is one transaction: the server must not be running on the file, and a failure
//! (short of a crash) leaves the database as it was. No `ANALYZE` or `PRAGMA optimize` is run, because the server
//! runs neither; a bulk-loaded database is what an import of the same rows leaves behind.

use crate::models::{NewAuditRow, NewCredentialRow, NewGrantRow, NewUserRow};
use crate::pool::sqlite_pragmas;
use crate::schema::{audit_log, credentials, grants, users};
use custody_identity::audit::AuditEntry;
use custody_identity::ports::StoreError;
use custody_identity::user::User;
use custody_vault::grant::{Credential, Grant};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::SqliteConnection;
use std::path::Path;
use std::time::Duration;

/// What importing one grant for a new subject stores: the user created for it, the active grant,
/// its sealed credential and the `grant.import` audit row.
#[derive(Debug, Clone)]
pub struct ImportedGrant {
    pub user: User,
    pub grant: Grant,
    pub credential: Credential,
    pub audit: AuditEntry,
}

fn load_error(e: diesel::result::Error) -> StoreError {
    // A development tool: the full diesel message (it never holds bound values) helps most.
    StoreError::Unavailable(format!("bulk load: {e}"))
}

/// Inserts `rows` into the SQLite database at `path` (already migrated, with the rows' app and
/// provider present) in one transaction, each user before its grant, credential and audit row.
/// Returns how many grants were loaded.
///
/// The connection gets the server's per-connection settings (WAL, `synchronous=NORMAL`), then,
/// for the load only: foreign keys unchecked (the rows reference each other by construction, and
/// the checks are a third of the B-tree work), a page cache that holds the whole database,
/// temporary storage in memory, and the rollback journal in memory instead of the WAL (pages are
/// written once, at commit, rather than to the WAL and again at its checkpoint). None of these
/// changes what is stored; the file is back in WAL mode when this returns. Rows go in one
/// statement each: diesel runs a multi-row insert of rows with optional columns as single inserts
/// inside a savepoint, and a savepoint makes SQLite copy every page it touches.
pub fn load_imported_grants_sqlite(
    path: &Path,
    rows: impl IntoIterator<Item = ImportedGrant>,
) -> Result<u64, StoreError> {
    let path = path.to_str().ok_or_else(|| StoreError::Unavailable("the SQLite path is not valid UTF-8".into()))?;
    let mut conn = SqliteConnection::establish(path)
        .map_err(|e| StoreError::Unavailable(format!("bulk load: cannot open the database: {e}")))?;
    conn.batch_execute(&sqlite_pragmas(Duration::from_secs(30))).map_err(load_error)?;
    conn.batch_execute(
        "PRAGMA foreign_keys = OFF; PRAGMA cache_size = -4194304; PRAGMA temp_store = MEMORY; \
         PRAGMA journal_mode = MEMORY;",
    )
    .map_err(load_error)?;
    let loaded = conn
        .immediate_transaction(|conn| {
            let mut loaded = 0u64;
            for r in rows {
                diesel::insert_into(users::table).values(NewUserRow::from(&r.user)).execute(conn)?;
                diesel::insert_into(grants::table).values(NewGrantRow::from(&r.grant)).execute(conn)?;
                diesel::insert_into(credentials::table).values(NewCredentialRow::from(&r.credential)).execute(conn)?;
                diesel::insert_into(audit_log::table).values(NewAuditRow::from(&r.audit)).execute(conn)?;
                loaded += 1;
            }
            Ok(loaded)
        })
        .map_err(load_error)?;
    conn.batch_execute("PRAGMA journal_mode = WAL;").map_err(load_error)?;
    Ok(loaded)
}
