//! Developer Portal sessions (table `portal_sessions`, migration `000006_portal`): the operator's
//! signed-in browsers. The portal keeps only the keyed hash of each session token; this module
//! stores, reads and deletes rows by that hash. Expired rows are deleted whenever a session is
//! created, so the table holds about one row per live session.

use crate::error::db_error;
use crate::schema::portal_sessions;
use crate::store::Store;
use custody_identity::ports::StoreError;
use custody_identity::UnixTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

/// A stored portal session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalSession {
    /// The keyed hash of the session token (never the token).
    pub id_hash: String,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = portal_sessions, check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct PortalSessionRow {
    id_hash: String,
    created_at: i64,
    expires_at: i64,
}

impl Store {
    /// Stores a new session and deletes the sessions that expired before it was created.
    pub async fn create_portal_session(&self, session: &PortalSession) -> Result<(), StoreError> {
        let row = PortalSessionRow {
            id_hash: session.id_hash.clone(),
            created_at: session.created_at.0,
            expires_at: session.expires_at.0,
        };
        with_conn!(self, |conn| {
            diesel::delete(portal_sessions::table.filter(portal_sessions::expires_at.le(session.created_at.0)))
                .execute(conn)
                .await
                .map_err(db_error)?;
            diesel::insert_into(portal_sessions::table).values(&row).execute(conn).await.map_err(db_error)?;
        });
        Ok(())
    }

    /// The session with this hash, if it exists (expired or not: the caller compares with its
    /// clock).
    pub async fn get_portal_session(&self, id_hash: &str) -> Result<Option<PortalSession>, StoreError> {
        let row: Option<PortalSessionRow> = with_conn!(self, |conn| {
            portal_sessions::table
                .find(id_hash)
                .select(PortalSessionRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        Ok(row.map(|r| PortalSession {
            id_hash: r.id_hash,
            created_at: UnixTime(r.created_at),
            expires_at: UnixTime(r.expires_at),
        }))
    }

    /// Deletes a session (sign-out, expiry). `false` when there was none.
    pub async fn delete_portal_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let deleted: usize = with_conn!(self, |conn| {
            diesel::delete(portal_sessions::table.find(id_hash)).execute(conn).await.map_err(db_error)?
        });
        Ok(deleted == 1)
    }
}
