//! Errors of this crate and the mapping of diesel's errors onto the ports' errors.
//!
//! Diesel errors never leave the crate: they become [`StoreError::Unavailable`] with a short,
//! fixed description of their kind (no SQL, no bound values), or a specific domain error where
//! the port defines one (a unique violation on an IdP's app is "already configured", and so on).

use custody_identity::ports::StoreError;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// Why a store could not be opened. Messages never contain the database URL, which may carry a
/// password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("unsupported database URL scheme `{0}`: use sqlite://, postgres:// or postgresql://")]
    UnsupportedScheme(String),
    #[error("invalid database URL: {0}")]
    InvalidUrl(&'static str),
    #[error("could not create the database directory: {0}")]
    CreateDirectory(String),
    #[error("could not connect to the database: {0}")]
    Connect(String),
    #[error("could not build the connection pool: {0}")]
    Pool(String),
    #[error(transparent)]
    Migration(#[from] MigrationError),
}

/// Why applying, reverting or listing migrations failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrationError {
    #[error("could not connect to the database to migrate it: {0}")]
    Connect(String),
    #[error("migration failed: {0}")]
    Failed(String),
}

/// The error type of the bodies run by the `transaction!` macro: either a database error, which
/// rolls back and maps to [`StoreError`], or a domain outcome that rolls back on purpose.
#[derive(Debug)]
pub(crate) enum TxError<E> {
    Db(DieselError),
    Domain(E),
}

impl<E> From<DieselError> for TxError<E> {
    fn from(e: DieselError) -> Self {
        TxError::Db(e)
    }
}

impl<E: From<StoreError>> TxError<E> {
    /// The domain error this failure means to the caller.
    pub(crate) fn into_domain(self) -> E {
        match self {
            TxError::Db(e) => E::from(db_error(e)),
            TxError::Domain(e) => e,
        }
    }
}

/// Maps a diesel error to the port's error, logging the detail for operators. Diesel's messages
/// carry the database's message only (no bound values), so the log line holds nothing secret;
/// the returned message is coarser still.
pub(crate) fn db_error(e: DieselError) -> StoreError {
    let kind = match &e {
        DieselError::DatabaseError(kind, info) => match kind {
            DatabaseErrorKind::UniqueViolation => "unique violation",
            DatabaseErrorKind::ForeignKeyViolation => "foreign key violation",
            DatabaseErrorKind::NotNullViolation => "not-null violation",
            DatabaseErrorKind::CheckViolation => "check violation",
            DatabaseErrorKind::SerializationFailure => "serialization failure",
            DatabaseErrorKind::ReadOnlyTransaction => "read-only transaction",
            DatabaseErrorKind::ClosedConnection => "connection closed",
            DatabaseErrorKind::UnableToSendCommand => "unable to send command",
            // SQLite reports a lock it could not get within busy_timeout this way.
            _ if info.message().contains("database is locked") || info.message().contains("busy") => "database busy",
            _ => "database failure",
        },
        DieselError::NotFound => "row not found",
        DieselError::DeserializationError(_) => "unreadable value",
        DieselError::SerializationError(_) => "unwritable value",
        DieselError::QueryBuilderError(_) => "query construction",
        DieselError::AlreadyInTransaction
        | DieselError::NotInTransaction
        | DieselError::BrokenTransactionManager
        | DieselError::RollbackTransaction
        | DieselError::RollbackErrorOnCommit { .. } => "transaction state",
        _ => "unexpected failure",
    };
    tracing::warn!(error = %e, kind, "database error");
    StoreError::Unavailable(format!("database error: {kind}"))
}

/// Whether `e` is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &DieselError) -> bool {
    matches!(e, DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _))
}

/// Whether `e` is a foreign-key violation (the referenced row does not exist).
pub(crate) fn is_foreign_key_violation(e: &DieselError) -> bool {
    matches!(e, DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _))
}

/// A stored value that does not decode into its domain type: the database was written by
/// something other than this crate, or by a newer version of it.
pub(crate) fn corrupt(what: &'static str) -> StoreError {
    tracing::error!(what, "stored row does not decode");
    StoreError::Unavailable(format!("stored data is invalid: {what}"))
}
