//! The vault's storage ports ([`ProviderStore`], [`PolicyStore`], [`GrantStore`],
//! [`CredentialStore`], [`LifecycleLedger`], [`Maintenance`], [`SealedValues`], [`ConnectStates`],
//! [`RevocationOutbox`]) for [`Store`]: providers, policies, grants and credentials, revocation and its
//! outbox, deprovisioning and identity-provider lifecycle events, connect states, re-sealing.
//!
//! Every mutating method is one transaction (`BEGIN IMMEDIATE` on SQLite) together with the
//! audit row it is given. Where a method changed nothing (no such row, a lost compare-and-set,
//! nothing left to revoke) it writes no audit row either, except where noted.
//!
//! Revocation (`revoke_grants`, `delete_provider`, `deprovision_user`, a `Deprovision` event)
//! runs the same statements, whatever the number of grants: mark the grants in scope revoked,
//! copy their tokens into the outbox straight from the credential rows (`INSERT … SELECT`, the
//! sealed boxes never leave the database), delete the credentials. On PostgreSQL the grant rows
//! are locked by the update and the credential rows before they are copied, so a concurrent
//! refresh either lands first (and its new tokens are the ones queued) or finds its credential
//! gone. Outbox ids are derived from the grant: `<grant id>:access` and `<grant id>:refresh`
//! (a grant is revoked at most once).
//!
//! The store keeps three invariants the service relies on without checking them:
//! - only active grants have a credential row;
//! - a user has at most one active grant per provider (a partial unique index);
//! - no active grant is saved for a deprovisioned user or for a provider that is gone
//!   (`save_grant` share-locks both rows, the deletions lock them for update).
//!
//! The ports are split by what they keep: `catalog.rs` the providers and policies, `sealed.rs`
//! every sealed value for re-sealing, `housekeeping.rs` connect states, the revocation outbox and
//! pruning; grants, credentials and the lifecycle are here.
//!
//! [`ProviderStore`]: custody_vault::ports::ProviderStore
//! [`PolicyStore`]: custody_vault::ports::PolicyStore
//! [`Maintenance`]: custody_vault::ports::Maintenance
//! [`SealedValues`]: custody_vault::ports::SealedValues
//! [`ConnectStates`]: custody_vault::ports::ConnectStates
//! [`RevocationOutbox`]: custody_vault::ports::RevocationOutbox

use crate::cursor::{fetch_limit, into_page, Cursor};
use crate::error::{db_error, is_unique_violation, TxError};
use crate::models::{names_to_json, token_kind_str, CredentialRow, GrantRow, NewCredentialRow, NewGrantRow, PolicyRow};
use crate::pool::{BackendQueries as _, PgConn, SqliteConn};
use crate::schema::{
    connect_states, credentials, grants, membership_removals, policies, providers, revocation_outbox, users,
    webhook_events,
};
use crate::store::Store;
use async_trait::async_trait;
use custody_identity::audit::AuditEntry;
use custody_identity::page::{Page, PageRequest};
use custody_identity::ports::StoreError;
use custody_identity::{AppId, UnixTime, User, UserId, UserStatus};
use custody_vault::grant::{Credential, Grant, GrantId, GrantStatus, TokenKind};
use custody_vault::policy::PolicyLookup;
use custody_vault::ports::{
    CredentialStore, GrantFilter, GrantSelector, GrantStore, HandoutView, LifecycleChange, LifecycleEvent,
    LifecycleLedger, LifecycleOutcome, LifecyclePlan, RevokeScope, SaveGrantError,
};
use custody_vault::provider::ProviderName;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Binary, Integer, Text};
use diesel::upsert::excluded;
use diesel_async::RunQueryDsl;
use std::collections::BTreeSet;
use std::future::Future;

mod catalog;
mod housekeeping;
mod sealed;

fn revoked() -> &'static str {
    GrantStatus::Revoked.as_str()
}

fn active() -> &'static str {
    GrantStatus::Active.as_str()
}

/// The transactional steps shared by several port methods, written once for both connection
/// types (see `impl_vault_tx!`). They run inside a transaction the caller opened.
pub(crate) trait VaultTx {
    /// Revokes every non-revoked grant of `app` in `scope` at `now`: the grants become
    /// `revoked`, the tokens of those whose provider has a revocation URL are queued in the
    /// outbox, and their credentials are deleted. Returns the revoked grants, newest first.
    fn revoke_in_scope(
        &mut self,
        app: &str,
        scope: &RevokeScope,
        now: i64,
    ) -> impl Future<Output = QueryResult<Vec<GrantRow>>> + Send;

    /// Queues the revocation at the provider of a grant's token that a newer credential
    /// superseded (a rotated refresh token, or the tokens a reconnect replaced), as outbox item
    /// `id`, when the grant's provider has a revocation URL. The sealed box moves as it is.
    fn queue_superseded(
        &mut self,
        grant: &str,
        kind: TokenKind,
        token: &[u8],
        id: &str,
        now: i64,
    ) -> impl Future<Output = QueryResult<()>> + Send;

    /// Stores a user's `groups` after a lifecycle event removed `group` at `at`, and records the
    /// removal (keeping a later one already recorded). The caller holds the user's row lock.
    fn write_group_removal(
        &mut self,
        user: &str,
        groups: &BTreeSet<String>,
        group: &str,
        at: i64,
    ) -> impl Future<Output = QueryResult<()>> + Send;
}

macro_rules! impl_vault_tx {
    ($conn:ty) => {
        impl VaultTx for $conn {
            async fn revoke_in_scope(
                &mut self,
                app: &str,
                scope: &RevokeScope,
                now: i64,
            ) -> QueryResult<Vec<GrantRow>> {
                let mut revoked_rows: Vec<GrantRow> = with_scope!(scope, |in_scope| {
                    diesel::update(
                        grants::table
                            .filter(grants::app_id.eq(app))
                            .filter(in_scope)
                            .filter(grants::status.ne(revoked())),
                    )
                    .set((grants::status.eq(revoked()), grants::revoked_at.eq(Some(now)), grants::updated_at.eq(now)))
                    .returning(GrantRow::as_returning())
                    .get_results(&mut *self)
                    .await?
                });
                if revoked_rows.is_empty() {
                    // Grants that were already revoked or expired have no credential left.
                    return Ok(revoked_rows);
                }
                self.lock_revoked_credentials(app, scope).await?;

                // The credentials still present for revoked grants in scope are exactly those
                // of the grants revoked above (no other revoked grant keeps one).
                let outbox_columns = (
                    revocation_outbox::id,
                    revocation_outbox::app_id,
                    revocation_outbox::grant_id,
                    revocation_outbox::provider,
                    revocation_outbox::token_kind,
                    revocation_outbox::token,
                    revocation_outbox::revocation_url,
                    revocation_outbox::client_id,
                    revocation_outbox::client_secret,
                    revocation_outbox::attempts,
                    revocation_outbox::next_attempt_at,
                    revocation_outbox::created_at,
                );
                let access = token_kind_str(TokenKind::Access);
                let refresh = token_kind_str(TokenKind::Refresh);
                with_scope!(scope, |in_scope| {
                    let queued = credentials::table
                        .inner_join(grants::table)
                        .inner_join(
                            providers::table
                                .on(providers::app_id.eq(grants::app_id).and(providers::name.eq(grants::provider))),
                        )
                        .filter(grants::app_id.eq(app))
                        .filter(in_scope)
                        .filter(grants::status.eq(revoked()))
                        .filter(providers::revocation_url.is_not_null());
                    diesel::insert_into(revocation_outbox::table)
                        .values(queued.select((
                            grants::id.concat(":").concat(access),
                            grants::app_id,
                            grants::id,
                            grants::provider,
                            access.into_sql::<Text>(),
                            credentials::access_token,
                            providers::revocation_url.assume_not_null(),
                            providers::client_id,
                            providers::client_secret,
                            0.into_sql::<Integer>(),
                            now.into_sql::<BigInt>(),
                            now.into_sql::<BigInt>(),
                        )))
                        .into_columns(outbox_columns)
                        .execute(&mut *self)
                        .await?;
                    diesel::insert_into(revocation_outbox::table)
                        .values(queued.filter(credentials::refresh_token.is_not_null()).select((
                            grants::id.concat(":").concat(refresh),
                            grants::app_id,
                            grants::id,
                            grants::provider,
                            refresh.into_sql::<Text>(),
                            credentials::refresh_token.assume_not_null(),
                            providers::revocation_url.assume_not_null(),
                            providers::client_id,
                            providers::client_secret,
                            0.into_sql::<Integer>(),
                            now.into_sql::<BigInt>(),
                            now.into_sql::<BigInt>(),
                        )))
                        .into_columns(outbox_columns)
                        .execute(&mut *self)
                        .await?;
                    let revoked_ids = grants::table
                        .filter(grants::app_id.eq(app))
                        .filter(in_scope)
                        .filter(grants::status.eq(revoked()))
                        .select(grants::id);
                    diesel::delete(credentials::table.filter(credentials::grant_id.eq_any(revoked_ids)))
                        .execute(&mut *self)
                        .await?;
                });
                revoked_rows.sort_by(|a, b| (b.body.created_at, &b.body.id).cmp(&(a.body.created_at, &a.body.id)));
                Ok(revoked_rows)
            }

            async fn queue_superseded(
                &mut self,
                grant: &str,
                kind: TokenKind,
                token: &[u8],
                id: &str,
                now: i64,
            ) -> QueryResult<()> {
                let queued = grants::table
                    .inner_join(
                        providers::table
                            .on(providers::app_id.eq(grants::app_id).and(providers::name.eq(grants::provider))),
                    )
                    .filter(grants::id.eq(grant))
                    .filter(providers::revocation_url.is_not_null())
                    .select((
                        id.into_sql::<Text>(),
                        grants::app_id,
                        grants::id,
                        grants::provider,
                        token_kind_str(kind).into_sql::<Text>(),
                        token.into_sql::<Binary>(),
                        providers::revocation_url.assume_not_null(),
                        providers::client_id,
                        providers::client_secret,
                        0.into_sql::<Integer>(),
                        now.into_sql::<BigInt>(),
                        now.into_sql::<BigInt>(),
                    ));
                diesel::insert_into(revocation_outbox::table)
                    .values(queued)
                    .into_columns((
                        revocation_outbox::id,
                        revocation_outbox::app_id,
                        revocation_outbox::grant_id,
                        revocation_outbox::provider,
                        revocation_outbox::token_kind,
                        revocation_outbox::token,
                        revocation_outbox::revocation_url,
                        revocation_outbox::client_id,
                        revocation_outbox::client_secret,
                        revocation_outbox::attempts,
                        revocation_outbox::next_attempt_at,
                        revocation_outbox::created_at,
                    ))
                    .execute(&mut *self)
                    .await?;
                Ok(())
            }

            async fn write_group_removal(
                &mut self,
                user: &str,
                groups: &BTreeSet<String>,
                group: &str,
                at: i64,
            ) -> QueryResult<()> {
                diesel::update(users::table.find(user))
                    .set(users::groups_json.eq(names_to_json(groups)))
                    .execute(&mut *self)
                    .await?;
                let recorded: Option<i64> = membership_removals::table
                    .find((user, group))
                    .select(membership_removals::removed_at)
                    .first(&mut *self)
                    .await
                    .optional()?;
                match recorded {
                    None => {
                        diesel::insert_into(membership_removals::table)
                            .values((
                                membership_removals::user_id.eq(user),
                                membership_removals::group_name.eq(group),
                                membership_removals::removed_at.eq(at),
                            ))
                            .execute(&mut *self)
                            .await?;
                    }
                    Some(earlier) if earlier < at => {
                        diesel::update(membership_removals::table.find((user, group)))
                            .set(membership_removals::removed_at.eq(at))
                            .execute(&mut *self)
                            .await?;
                    }
                    Some(_) => {}
                }
                Ok(())
            }
        }
    };
}

impl_vault_tx!(SqliteConn);
impl_vault_tx!(PgConn);

/// The outcome of the lifecycle transaction, before its rows are converted.
enum LifecycleTx {
    Applied(User, Vec<GrantRow>),
    Ignored(String),
    Duplicate,
}

fn convert_grants(rows: Vec<GrantRow>) -> Result<Vec<Grant>, StoreError> {
    rows.into_iter().map(GrantRow::into_domain).collect()
}

/// A store failure inside a transaction that must roll it back.
fn tx_domain<E: From<StoreError>>(e: StoreError) -> TxError<E> {
    TxError::Domain(E::from(e))
}

/// `save_grant` refusing a grant whose user or provider went away. The port has no variant for
/// it; the service's retry then fails the same way.
fn gone(what: &str) -> TxError<SaveGrantError> {
    TxError::Domain(SaveGrantError::Store(StoreError::Unavailable(what.to_owned())))
}

#[async_trait]
impl GrantStore for Store {
    async fn get_grant(&self, app: &AppId, grant: &GrantId) -> Result<Option<Grant>, StoreError> {
        let row: Option<GrantRow> = read_conn!(self, |conn| {
            grants::table
                .filter(grants::id.eq(grant.as_str()))
                .filter(grants::app_id.eq(app.as_str()))
                .select(GrantRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        row.map(GrantRow::into_domain).transpose()
    }

    async fn current_grant(
        &self,
        app: &AppId,
        user: &UserId,
        provider: &ProviderName,
    ) -> Result<Option<Grant>, StoreError> {
        // One statement on the hand-out path: the active grant sorts first, then the most
        // recently updated (ties broken by id, so the answer is stable).
        let row: Option<GrantRow> = read_conn!(self, |conn| {
            grants::table
                .filter(grants::user_id.eq(user.as_str()))
                .filter(grants::provider.eq(provider.as_str()))
                .filter(grants::app_id.eq(app.as_str()))
                .select(GrantRow::as_select())
                .order((grants::status.eq(active()).desc(), grants::updated_at.desc(), grants::id.desc()))
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        row.map(GrantRow::into_domain).transpose()
    }

    async fn list_grants(
        &self,
        app: &AppId,
        filter: &GrantFilter,
        page: &PageRequest,
    ) -> Result<Page<Grant>, StoreError> {
        let cursor = Cursor::of(page)?;
        let rows: Vec<GrantRow> = with_conn!(self, |conn| {
            let mut query =
                grants::table.filter(grants::app_id.eq(app.as_str())).select(GrantRow::as_select()).into_boxed();
            if let Some(user) = &filter.user_id {
                query = query.filter(grants::user_id.eq(user.as_str()));
            }
            if let Some(provider) = &filter.provider {
                query = query.filter(grants::provider.eq(provider.as_str()));
            }
            if let Some(status) = filter.status {
                query = query.filter(grants::status.eq(status.as_str()));
            }
            if let Some(c) = &cursor {
                query = query.filter(
                    grants::created_at.lt(c.ts).or(grants::created_at.eq(c.ts).and(grants::id.lt(c.id.as_str()))),
                );
            }
            query
                .order((grants::created_at.desc(), grants::id.desc()))
                .limit(fetch_limit(page))
                .load(conn)
                .await
                .map_err(db_error)?
        });
        into_page(rows, page, |r| (r.body.created_at, r.body.id.as_str()), GrantRow::into_domain)
    }

    async fn save_grant(
        &self,
        grant: &Grant,
        credential: &Credential,
        is_new: bool,
        audit: &AuditEntry,
    ) -> Result<(), SaveGrantError> {
        let (app, user, provider) = (grant.app_id.as_str(), grant.user_id.as_str(), grant.provider.as_str());
        let result = transaction!(self, |conn| -> Result<(), TxError<SaveGrantError>> {
            // Share locks: a concurrent deprovisioning or provider deletion waits for this save
            // (and then revokes what it stored), or this save waits for it and stops here.
            match conn.user_status_for_share(app, user).await?.as_deref().and_then(UserStatus::parse) {
                Some(UserStatus::Active | UserStatus::Suspended) => {}
                Some(UserStatus::Deprovisioned) => return Err(gone("the user has been deprovisioned")),
                None => return Err(gone("the user does not exist")),
            }
            if !conn.provider_exists_for_share(app, provider).await? {
                return Err(gone("the provider no longer exists"));
            }
            if is_new {
                match diesel::insert_into(grants::table).values(NewGrantRow::from(grant)).execute(conn).await {
                    Ok(_) => {}
                    // The partial unique index: the user already has an active grant here.
                    Err(e) if is_unique_violation(&e) => return Err(TxError::Domain(SaveGrantError::Conflict)),
                    Err(e) => return Err(e.into()),
                }
                diesel::insert_into(credentials::table)
                    .values(NewCredentialRow::from(credential))
                    .execute(conn)
                    .await?;
            } else {
                // `created_at` and `last_used_at` (which hand-outs move) stay as stored.
                let updated = diesel::update(
                    grants::table
                        .filter(grants::id.eq(grant.id.as_str()))
                        .filter(grants::app_id.eq(app))
                        .filter(grants::user_id.eq(user))
                        .filter(grants::provider.eq(provider))
                        .filter(grants::status.eq(active())),
                )
                .set((
                    grants::scopes_json.eq(crate::models::strings_to_json(&grant.scopes)),
                    grants::account.eq(grant.account.as_deref()),
                    grants::updated_at.eq(grant.updated_at.0),
                ))
                .execute(conn)
                .await?;
                if updated == 0 {
                    return Err(TxError::Domain(SaveGrantError::Conflict));
                }
                // The reconnect supersedes the stored tokens: queue their revocation at the
                // provider. The grant row is locked by the update above, so no other save or
                // refresh changes the credential between this read and the replacement below.
                let replaced: Option<(Vec<u8>, Option<Vec<u8>>, i64)> = credentials::table
                    .find(grant.id.as_str())
                    .select((credentials::access_token, credentials::refresh_token, credentials::version))
                    .first(conn)
                    .await
                    .optional()?;
                if let Some((access, refresh, version)) = replaced {
                    let now = grant.updated_at.0;
                    let id = |label: &str| format!("{}:superseded-{label}:v{version}", grant.id);
                    conn.queue_superseded(grant.id.as_str(), TokenKind::Access, &access, &id("access"), now).await?;
                    if let Some(refresh) = refresh {
                        conn.queue_superseded(grant.id.as_str(), TokenKind::Refresh, &refresh, &id("refresh"), now)
                            .await?;
                    }
                }
                // The stored version moves past the replaced one whatever the caller's is, so a
                // refresh that read the old credential loses its compare-and-set.
                diesel::insert_into(credentials::table)
                    .values(NewCredentialRow::from(credential))
                    .on_conflict(credentials::grant_id)
                    .do_update()
                    .set((
                        credentials::access_token.eq(excluded(credentials::access_token)),
                        credentials::refresh_token.eq(excluded(credentials::refresh_token)),
                        credentials::token_type.eq(excluded(credentials::token_type)),
                        credentials::expires_at.eq(excluded(credentials::expires_at)),
                        credentials::version.eq(credentials::version + 1),
                    ))
                    .execute(conn)
                    .await?;
            }
            insert_audit!(conn, audit)?;
            Ok(())
        });
        result.map_err(TxError::into_domain)
    }

    async fn revoke_grants(
        &self,
        app: &AppId,
        scope: &RevokeScope,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<Vec<Grant>, StoreError> {
        // One audit row per call, the one given, and only when something was revoked.
        let result = transaction!(self, |conn| -> Result<Vec<GrantRow>, TxError<StoreError>> {
            let revoked = conn.revoke_in_scope(app.as_str(), scope, now.0).await?;
            if !revoked.is_empty() {
                insert_audit!(conn, audit)?;
            }
            Ok(revoked)
        });
        convert_grants(result.map_err(TxError::into_domain)?)
    }
}

#[async_trait]
impl CredentialStore for Store {
    async fn load_credential(&self, grant: &GrantId) -> Result<Option<Credential>, StoreError> {
        let row: Option<CredentialRow> = read_conn!(self, |conn| {
            credentials::table
                .find(grant.as_str())
                .select(CredentialRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        row.map(CredentialRow::into_domain).transpose()
    }

    async fn handout_view(
        &self,
        app: &AppId,
        user: &UserId,
        selector: &GrantSelector,
    ) -> Result<Option<HandoutView>, StoreError> {
        type ViewRow = (GrantRow, Option<PolicyRow>, Option<CredentialRow>);
        // The grant, left-joined with its provider's policy and its credential: one indexed
        // statement instead of three on the hottest path.
        let row: Option<ViewRow> = read_conn!(self, |conn| {
            let view = grants::table
                .left_join(
                    policies::table
                        .on(policies::app_id.eq(grants::app_id).and(policies::provider.eq(grants::provider))),
                )
                .left_join(credentials::table.on(credentials::grant_id.eq(grants::id)))
                .filter(grants::app_id.eq(app.as_str()))
                .filter(grants::user_id.eq(user.as_str()))
                .select((
                    GrantRow::as_select(),
                    Option::<PolicyRow>::as_select(),
                    Option::<CredentialRow>::as_select(),
                ));
            match selector {
                // As `current_grant`: the active grant first, then the most recently updated.
                GrantSelector::Provider(provider) => view
                    .filter(grants::provider.eq(provider.as_str()))
                    .order((grants::status.eq(active()).desc(), grants::updated_at.desc(), grants::id.desc()))
                    .first(conn)
                    .await
                    .optional()
                    .map_err(db_error)?,
                GrantSelector::Id(id) => {
                    view.filter(grants::id.eq(id.as_str())).first(conn).await.optional().map_err(db_error)?
                }
            }
        });
        let Some((grant, policy, credential)) = row else { return Ok(None) };
        Ok(Some(HandoutView {
            grant: grant.into_domain()?,
            policy: policy.map_or(PolicyLookup::None, PolicyRow::into_lookup),
            credential: credential.map(CredentialRow::into_domain).transpose()?,
        }))
    }

    async fn replace_credential(
        &self,
        credential: &Credential,
        expected_version: i64,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let grant = credential.grant_id.as_str();
        let new_refresh = credential.refresh_token.as_ref().map(|b| b.0.as_slice());
        let result = transaction!(self, |conn| -> Result<bool, TxError<StoreError>> {
            // The refresh token being replaced; versions only grow, so the row read at
            // `expected_version` is the row the compare-and-set below replaces, if it does.
            let replaced: Option<Option<Vec<u8>>> = credentials::table
                .filter(credentials::grant_id.eq(grant))
                .filter(credentials::version.eq(expected_version))
                .select(credentials::refresh_token)
                .first(conn)
                .await
                .optional()?;
            let Some(old_refresh) = replaced else { return Ok(false) };
            let updated = diesel::update(
                credentials::table
                    .filter(credentials::grant_id.eq(grant))
                    .filter(credentials::version.eq(expected_version)),
            )
            .set((
                credentials::access_token.eq(credential.access_token.0.as_slice()),
                credentials::refresh_token.eq(new_refresh),
                credentials::token_type.eq(credential.token_type.as_str()),
                credentials::expires_at.eq(credential.expires_at.map(|t| t.0)),
                credentials::version.eq(credential.version),
            ))
            .execute(conn)
            .await?;
            if updated == 0 {
                return Ok(false);
            }
            // A refresh token the provider rotated away is revoked at the provider, so a copy
            // of it (a backup, another process's memory) can no longer mint tokens.
            if let Some(old) = old_refresh.filter(|old| new_refresh != Some(old.as_slice())) {
                let id = format!("{grant}:superseded-refresh:v{expected_version}");
                conn.queue_superseded(grant, TokenKind::Refresh, &old, &id, audit.at.0).await?;
            }
            insert_audit!(conn, audit)?;
            Ok(true)
        });
        result.map_err(TxError::into_domain)
    }

    async fn expire_grant(
        &self,
        grant: &GrantId,
        credential_version: i64,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let result = transaction!(self, |conn| -> Result<bool, TxError<StoreError>> {
            // Only the credential whose refresh token was rejected: one that moved on meanwhile
            // (another process refreshed, the user reconnected) keeps the grant alive.
            let deleted = diesel::delete(
                credentials::table
                    .filter(credentials::grant_id.eq(grant.as_str()))
                    .filter(credentials::version.eq(credential_version)),
            )
            .execute(conn)
            .await?;
            if deleted == 0 {
                return Ok(false);
            }
            // Only active grants have a credential, so this finds the grant active.
            diesel::update(grants::table.find(grant.as_str()).filter(grants::status.eq(active())))
                .set((grants::status.eq(GrantStatus::Expired.as_str()), grants::updated_at.eq(now.0)))
                .execute(conn)
                .await?;
            insert_audit!(conn, audit)?;
            Ok(true)
        });
        result.map_err(TxError::into_domain)
    }

    async fn record_handout(
        &self,
        grant: &GrantId,
        touch: Option<UnixTime>,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        // Group commit: answers once the transaction holding this record committed.
        self.handout_log().record(self, grant.as_str(), touch.map(|t| t.0), audit).await
    }
}

#[async_trait]
impl LifecycleLedger for Store {
    async fn deprovision_user(
        &self,
        app: &AppId,
        user: &UserId,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<Option<(User, Vec<Grant>)>, StoreError> {
        let scope = RevokeScope::User(user.clone());
        let result = transaction!(self, |conn| -> Result<Option<(User, Vec<GrantRow>)>, TxError<StoreError>> {
            // The user's row first: status changes, group removals and sign-ins serialise on it.
            let Some((row, _)) = conn.user_by_id_for_update(user.as_str()).await? else { return Ok(None) };
            if row.app_id != app.as_str() {
                return Ok(None);
            }
            let current = row.into_domain().map_err(tx_domain)?;
            if current.status == UserStatus::Deprovisioned {
                return Ok(Some((current, Vec::new())));
            }
            diesel::update(users::table.find(user.as_str()))
                .set((users::status.eq(UserStatus::Deprovisioned.as_str()), users::status_changed_at.eq(Some(now.0))))
                .execute(conn)
                .await?;
            // A pending connect flow must not store new tokens for this user.
            diesel::delete(connect_states::table.filter(connect_states::user_id.eq(user.as_str())))
                .execute(conn)
                .await?;
            let revoked = conn.revoke_in_scope(app.as_str(), &scope, now.0).await?;
            insert_audit!(conn, audit)?;
            Ok(Some((User { status: UserStatus::Deprovisioned, ..current }, revoked)))
        });
        match result.map_err(TxError::into_domain)? {
            None => Ok(None),
            Some((user, rows)) => Ok(Some((user, convert_grants(rows)?))),
        }
    }

    async fn apply_lifecycle_event(
        &self,
        app: &AppId,
        event: &LifecycleEvent,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<LifecycleOutcome, StoreError> {
        let result = transaction!(self, |conn| -> Result<LifecycleTx, TxError<StoreError>> {
            let recorded = diesel::insert_into(webhook_events::table)
                .values((
                    webhook_events::app_id.eq(app.as_str()),
                    webhook_events::event_id.eq(event.event_id.as_str()),
                    webhook_events::received_at.eq(now.0),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if recorded == 0 {
                return Ok(LifecycleTx::Duplicate);
            }
            // The user's row is locked before anything is written, so this cannot interleave
            // with a sign-in's write (`resolve_user` locks it first too).
            let Some((row, status_changed_at)) = conn.user_by_subject_for_update(app.as_str(), &event.subject).await?
            else {
                return Ok(LifecycleTx::Ignored("the subject is not a known user".into()));
            };
            let user = row.into_domain().map_err(tx_domain)?;
            let occurred_at = event.occurred_at.0;
            let mut revoked = Vec::new();
            let user = match event.change.plan(user.status, status_changed_at, occurred_at) {
                LifecyclePlan::Ignore(reason) => return Ok(LifecycleTx::Ignored(reason.to_owned())),
                LifecyclePlan::Status(next) => {
                    diesel::update(users::table.find(user.id.as_str()))
                        .set((users::status.eq(next.as_str()), users::status_changed_at.eq(Some(occurred_at))))
                        .execute(conn)
                        .await?;
                    if next == UserStatus::Deprovisioned {
                        diesel::delete(connect_states::table.filter(connect_states::user_id.eq(user.id.as_str())))
                            .execute(conn)
                            .await?;
                        revoked =
                            conn.revoke_in_scope(app.as_str(), &RevokeScope::User(user.id.clone()), now.0).await?;
                    }
                    User { status: next, ..user }
                }
                LifecyclePlan::RemoveGroup => {
                    let LifecycleChange::RemoveGroup(group) = &event.change else {
                        return Err(tx_domain(StoreError::Unavailable("unexpected lifecycle change".into())));
                    };
                    let mut groups = user.groups.clone();
                    groups.remove(group);
                    conn.write_group_removal(user.id.as_str(), &groups, group, occurred_at).await?;
                    User { groups, ..user }
                }
                LifecyclePlan::Profile => {
                    let LifecycleChange::Profile { email, name } = &event.change else {
                        return Err(tx_domain(StoreError::Unavailable("unexpected lifecycle change".into())));
                    };
                    let email = email.clone().or_else(|| user.email.clone());
                    let name = name.clone().or_else(|| user.name.clone());
                    diesel::update(users::table.find(user.id.as_str()))
                        .set((users::email.eq(email.as_deref()), users::name.eq(name.as_deref())))
                        .execute(conn)
                        .await?;
                    User { email, name, ..user }
                }
            };
            let entry = AuditEntry { user_id: Some(user.id.clone()), ..audit.clone() };
            insert_audit!(conn, &entry)?;
            Ok(LifecycleTx::Applied(user, revoked))
        });
        Ok(match result.map_err(TxError::into_domain)? {
            LifecycleTx::Applied(user, rows) => LifecycleOutcome::Applied { user, revoked: convert_grants(rows)? },
            LifecycleTx::Ignored(reason) => LifecycleOutcome::Ignored(reason),
            LifecycleTx::Duplicate => LifecycleOutcome::Duplicate,
        })
    }
}

/// Removes `group` from the user `user` as a lifecycle event does, at `at`, locking the user's
/// row first. `false` when there is no such user. For `testing::remove_user_group`.
#[cfg(feature = "testing")]
pub(crate) async fn remove_user_group(
    store: &Store,
    user: &UserId,
    group: &str,
    at: UnixTime,
) -> Result<bool, StoreError> {
    let result = transaction!(store, |conn| -> Result<bool, TxError<StoreError>> {
        let Some((row, _)) = conn.user_by_id_for_update(user.as_str()).await? else { return Ok(false) };
        let mut groups = row.into_domain().map_err(tx_domain)?.groups;
        groups.remove(group);
        conn.write_group_removal(user.as_str(), &groups, group, at.0).await?;
        Ok(true)
    });
    result.map_err(TxError::into_domain)
}
