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
//! leaves the database as it was. No `ANALYZE` or `PRAGMA optimize` is run, because the server
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

/// Rows per multi-row statement group; well under SQLite's bound-parameter limit.
const BATCH: usize = 500;

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
/// provider present) in one transaction, users before their grants before their credentials.
/// The connection gets the server's per-connection settings (WAL, `synchronous=NORMAL`, foreign
/// keys on), plus a large page cache for the load. Returns how many grants were loaded.
pub fn load_imported_grants_sqlite(
    path: &Path,
    rows: impl IntoIterator<Item = ImportedGrant>,
) -> Result<u64, StoreError> {
    let path = path.to_str().ok_or_else(|| StoreError::Unavailable("the SQLite path is not valid UTF-8".into()))?;
    let mut conn = SqliteConnection::establish(path)
        .map_err(|e| StoreError::Unavailable(format!("bulk load: cannot open the database: {e}")))?;
    conn.batch_execute(&sqlite_pragmas(Duration::from_secs(30))).map_err(load_error)?;
    // Random UUID keys land all over every index: keep the pages in memory for the load
    // (a per-connection setting, not stored in the file).
    conn.batch_execute("PRAGMA cache_size = -1048576;").map_err(load_error)?;
    let mut rows = rows.into_iter();
    conn.immediate_transaction(|conn| {
        let mut loaded = 0u64;
        let mut batch: Vec<ImportedGrant> = Vec::with_capacity(BATCH);
        loop {
            batch.clear();
            batch.extend(rows.by_ref().take(BATCH));
            if batch.is_empty() {
                return Ok(loaded);
            }
            let new_users: Vec<NewUserRow<'_>> = batch.iter().map(|r| NewUserRow::from(&r.user)).collect();
            diesel::insert_into(users::table).values(&new_users).execute(conn)?;
            let new_grants: Vec<NewGrantRow<'_>> = batch.iter().map(|r| NewGrantRow::from(&r.grant)).collect();
            diesel::insert_into(grants::table).values(&new_grants).execute(conn)?;
            let new_credentials: Vec<NewCredentialRow<'_>> =
                batch.iter().map(|r| NewCredentialRow::from(&r.credential)).collect();
            diesel::insert_into(credentials::table).values(&new_credentials).execute(conn)?;
            let new_audit: Vec<NewAuditRow<'_>> = batch.iter().map(|r| NewAuditRow::from(&r.audit)).collect();
            diesel::insert_into(audit_log::table).values(&new_audit).execute(conn)?;
            loaded += batch.len() as u64;
        }
    })
    .map_err(load_error)
}
