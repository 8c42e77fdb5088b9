//! Custody's persistence adapter: diesel + diesel-async on SQLite (the embedded default for one
//! machine) and PostgreSQL (the shared production store behind many stateless instances).
//!
//! [`Store`] implements every storage port of the identity domain
//! ([`custody_identity::ports`]), of the vault ([`custody_vault::ports`], including
//! [`custody_vault::ports::RefreshLock`]) and of sign-in ([`custody_identity::signin::ports`]): one
//! database behind role-sized traits. [`prelude`] brings them all into scope for callers that
//! hold a `Store` itself (the server's routes, tests).
//! It picks the backend from the database URL, applies the embedded migrations
//! (`migrations/sqlite` and `migrations/postgres`, same version names) at connect, and keeps
//! diesel inside this crate: every error crosses as the port's error type.
//!
//! How it is put together:
//! - `schema.rs`: one hand-written diesel schema with portable types, for both backends.
//! - `pool.rs`: [`DbPool`] (one deadpool per backend) and per-connection setup (SQLite: WAL,
//!   `foreign_keys`, `busy_timeout`, `synchronous=NORMAL`).
//! - `macros.rs`: `with_conn!` and `transaction!`, which run one diesel query text on either
//!   backend; write transactions are `BEGIN IMMEDIATE` on SQLite.
//! - `identity.rs`: the identity storage ports (apps, API keys, IdP configurations, users, audit).
//! - `vault/`: the vault storage ports: grants and credentials, revocation and lifecycle
//!   events (`mod.rs`); providers and policies (`catalog.rs`); connect states, the revocation
//!   outbox and pruning (`housekeeping.rs`); re-sealing (`sealed.rs`).
//! - `webhook.rs`: [`custody_vault::webhook::WebhookStore`], the lifecycle webhook settings of
//!   an app's identity provider.
//! - `signin.rs`: the sign-in storage ports: the app's OIDC client, pending
//!   sign-in states, SDK sessions and Wallet sessions.
//! - `portal.rs`: Developer Portal sessions (inherent methods on [`Store`]: the portal is the
//!   server's adapter, no domain port).
//! - `refresh_lock.rs`: [`custody_vault::ports::RefreshLock`], single flight of a grant's refresh
//!   in the process and, on PostgreSQL, across processes (session advisory locks).
//! - `testing` (feature `testing`): a fresh database per test on every configured backend.
//!
//! New tables and port implementations follow the same pattern: a migration in both folders, a
//! `table!` in `schema.rs`, row types in `models.rs`, and methods whose queries run inside
//! `with_conn!`/`transaction!`.

#[macro_use]
mod macros;

#[cfg(feature = "testing")]
pub mod bulk;
mod cursor;
mod error;
mod handout;
mod handout_audit;
mod handout_log;
mod identity;
mod migrate;
mod models;
mod pool;
mod portal;
mod refresh_lock;
mod rendered;
mod schema;
mod signin;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod vault;
mod webhook;

pub use error::{ConnectError, MigrationError};
pub use migrate::MigrationStatus;
pub use pool::{sqlite_path, Backend, DbPool, PgConn, SqliteConn};
pub use portal::PortalSession;
pub use store::{default_max_connections, Store, StoreOptions};

/// Every storage port [`Store`] implements, imported anonymously: `use custody_store::prelude::*;`
/// lets code that holds a `Store` call any of its port methods.
pub mod prelude {
    pub use custody_identity::ports::{
        ApiKeyStore as _, AppStore as _, AuditLog as _, IdpStore as _, StoreHealth as _, UserStore as _,
    };
    pub use custody_identity::signin::ports::{
        OidcClients as _, SdkSessions as _, SignInStates as _, WalletSessions as _,
    };
    pub use custody_vault::ports::{
        ConnectStates as _, CredentialStore as _, GrantStore as _, HandoutContexts as _, LifecycleLedger as _,
        Maintenance as _, PolicyStore as _, ProviderStore as _, RefreshLock as _, RevocationOutbox as _,
        SealedValues as _,
    };
    pub use custody_vault::webhook::WebhookStore as _;
}
