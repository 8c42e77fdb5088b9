//! The identity storage ports ([`StoreHealth`], [`AppStore`], [`ApiKeyStore`], [`IdpStore`],
//! [`UserStore`], [`AuditLog`]) for [`Store`]: apps, API keys, IdP configurations, users and the audit log.
//!
//! Every mutating method is one transaction that includes the audit row it is given, so a change
//! is never recorded without happening nor happens without being recorded.

use crate::cursor::{fetch_limit, into_page, Cursor};
use crate::error::{db_error, is_foreign_key_violation, is_unique_violation, TxError};
use crate::models::{
    names_to_json, ApiKeyRow, AppRow, AuditRow, IdpRow, NewApiKeyRow, NewAppRow, NewIdpRow, NewUserRow, UserRow,
};
use crate::pool::BackendQueries as _;
use crate::schema::{api_keys, apps, audit_log, idp_configs, membership_removals, users};
use crate::store::Store;
use async_trait::async_trait;
use custody_identity::app::{ApiKeyRecord, App};
use custody_identity::audit::{AuditEntry, AuditFilter};
use custody_identity::claims::{ClaimPath, ExtractedIdentity};
use custody_identity::idp::IdpConfig;
use custody_identity::ids::{ApiKeyId, AppId, UserId};
use custody_identity::page::{Page, PageRequest};
use custody_identity::ports::{
    ApiKeyStore, AppStore, AuditLog, CreateIdpError, IdpStore, LockGuard, ResolveUserError, StoreError, StoreHealth,
    UpdateIdpError, UserStore,
};
use custody_identity::time::UnixTime;
use custody_identity::user::{User, UserStatus};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable};
use diesel_async::RunQueryDsl;
use std::collections::{BTreeMap, BTreeSet};

diesel::define_sql_function! {
    /// SQL `COALESCE` for a nullable BIGINT with a non-null fallback.
    fn coalesce(x: Nullable<BigInt>, y: BigInt) -> BigInt;
}

/// Whether a configuration stored at `version`, locked at `locked_at`, still matches a token
/// verified under a locked configuration at `lock.idp_version`. Only audience edits can bump a
/// locked configuration's version, and they do not affect the claim mapping, so a newer version
/// is fine; an unlocked or older row means the configuration was replaced.
fn lock_still_holds(version: i64, locked_at: Option<i64>, lock: LockGuard) -> bool {
    locked_at.is_some() && version >= lock.idp_version
}

/// What the read-only hot path of [`UserStore::resolve_user`] found.
enum ReadOnlyResolution {
    /// Nothing to write: the user is deprovisioned, or known, unchanged and recently seen.
    Settled(User),
    /// Known and unchanged, but not seen within the minute: only `last_seen_at` moves, which
    /// the hand-out log's writer group-commits (a sighting) instead of a write transaction of
    /// its own. That is what every active user's first request of each minute needs, so on a
    /// busy SQLite store it was a stream of single-row commits on the one write lock, each
    /// emptying every reader's page cache.
    Sighting(User),
    /// New, changed, or the configuration is not what the token was mapped with: the write
    /// transaction decides.
    Write,
}

/// The new state of a user after a token, when it must be written.
#[derive(Debug, PartialEq, Eq)]
struct UserUpdate {
    email: Option<String>,
    name: Option<String>,
    groups: BTreeSet<String>,
    roles: BTreeSet<String>,
    /// Groups whose removal record this token supersedes (issued after the removal).
    restored: Vec<String>,
}

/// Applies a token to a stored (not deprovisioned) user. `removals` maps the token's groups that
/// a lifecycle event removed to when it did. A removed group comes back only with a token issued
/// strictly after the removal; a token without `iat` cannot prove that and never restores one.
/// `None` when there is nothing to write: no change, and `last_seen_at` is recent.
fn plan_update(
    user: &User,
    identity: &ExtractedIdentity,
    removals: &BTreeMap<String, i64>,
    issued_at: Option<UnixTime>,
    now: UnixTime,
) -> Option<UserUpdate> {
    let mut groups = BTreeSet::new();
    let mut restored = Vec::new();
    for group in &identity.groups {
        match removals.get(group) {
            None => {
                groups.insert(group.clone());
            }
            Some(removed_at) if issued_at.is_some_and(|iat| iat.0 > *removed_at) => {
                groups.insert(group.clone());
                restored.push(group.clone());
            }
            Some(_) => {}
        }
    }
    let update = UserUpdate {
        email: identity.email.clone().or_else(|| user.email.clone()),
        name: identity.name.clone().or_else(|| user.name.clone()),
        groups,
        roles: identity.roles.clone(),
        restored,
    };
    let unchanged = update.email == user.email
        && update.name == user.name
        && update.groups == user.groups
        && update.roles == user.roles
        && update.restored.is_empty();
    (!unchanged || !user.seen_recently(now)).then_some(update)
}

impl Store {
    /// The read-only hot path of [`UserStore::resolve_user`] for an already locked
    /// configuration: one SELECT of the IdP row joined with the user, and what it settles.
    async fn resolve_user_read_only(
        &self,
        app: &AppId,
        lock: LockGuard,
        identity: &ExtractedIdentity,
        now: UnixTime,
    ) -> Result<ReadOnlyResolution, ResolveUserError> {
        let row: Option<(i64, Option<i64>, Option<UserRow>)> = read_conn!(self, |conn| {
            idp_configs::table
                .left_join(
                    users::table
                        .on(users::app_id.eq(idp_configs::app_id).and(users::subject.eq(identity.subject.as_str()))),
                )
                .filter(idp_configs::app_id.eq(app.as_str()))
                .select((idp_configs::version, idp_configs::claims_locked_at, Option::<UserRow>::as_select()))
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        let Some((version, locked_at, user)) = row else { return Err(ResolveUserError::ConfigChanged) };
        if !lock_still_holds(version, locked_at, lock) {
            return Err(ResolveUserError::ConfigChanged);
        }
        let Some(user) = user else { return Ok(ReadOnlyResolution::Write) };
        let user = user.into_domain()?;
        Ok(if user.settled_by(identity, now) {
            ReadOnlyResolution::Settled(user)
        } else if user.status != UserStatus::Deprovisioned && user.agrees_with(identity) {
            ReadOnlyResolution::Sighting(user)
        } else {
            ReadOnlyResolution::Write
        })
    }

    /// The write path of [`UserStore::resolve_user`]: one transaction that checks or takes
    /// the claim lock, finds or creates the user, and applies the token.
    async fn resolve_user_in_transaction(
        &self,
        app: &AppId,
        lock: LockGuard,
        identity: &ExtractedIdentity,
        token_issued_at: Option<UnixTime>,
        new_user_id: &UserId,
        now: UnixTime,
    ) -> Result<User, ResolveUserError> {
        let new_user = User {
            id: new_user_id.clone(),
            app_id: app.clone(),
            subject: identity.subject.clone(),
            status: UserStatus::Active,
            email: identity.email.clone(),
            name: identity.name.clone(),
            groups: identity.groups.clone(),
            roles: identity.roles.clone(),
            created_at: now,
            last_seen_at: Some(now),
        };
        let result = transaction!(self, |conn| -> Result<User, TxError<ResolveUserError>> {
            if lock.already_locked {
                // No row lock: a locked mapping cannot change, so a concurrent audience edit
                // is harmless, and the hot path must not serialise on the IdP row.
                let idp: Option<(i64, Option<i64>)> = idp_configs::table
                    .filter(idp_configs::app_id.eq(app.as_str()))
                    .select((idp_configs::version, idp_configs::claims_locked_at))
                    .first(conn)
                    .await
                    .optional()?;
                if !idp.is_some_and(|(version, locked_at)| lock_still_holds(version, locked_at, lock)) {
                    return Err(TxError::Domain(ResolveUserError::ConfigChanged));
                }
            } else {
                // Lock the mappings only if they are still the ones the token was mapped with.
                // On PostgreSQL this also holds the IdP row until commit, so a concurrent
                // `update_idp` waits and then fails its own version check.
                let locked = diesel::update(
                    idp_configs::table
                        .filter(idp_configs::app_id.eq(app.as_str()))
                        .filter(idp_configs::version.eq(lock.idp_version)),
                )
                .set((
                    idp_configs::claims_locked_at.eq(coalesce(idp_configs::claims_locked_at, now.0).nullable()),
                    idp_configs::version.eq(idp_configs::version + 1),
                ))
                .execute(conn)
                .await?;
                if locked == 0 {
                    return Err(TxError::Domain(ResolveUserError::ConfigChanged));
                }
            }

            let row = match conn.user_for_update(app.as_str(), &identity.subject).await? {
                Some(row) => row,
                None => {
                    // Two first requests for a new subject may race here: the loser's insert
                    // does nothing (on PostgreSQL it waits for the winner's commit), and it
                    // then reads the winner's row.
                    let inserted = diesel::insert_into(users::table)
                        .values(NewUserRow::from(&new_user))
                        .on_conflict_do_nothing()
                        .execute(conn)
                        .await?;
                    if inserted == 1 {
                        return Ok(new_user.clone());
                    }
                    conn.user_for_update(app.as_str(), &identity.subject)
                        .await?
                        .ok_or(diesel::result::Error::NotFound)?
                }
            };
            let user = row.into_domain().map_err(|e| TxError::Domain(e.into()))?;
            if user.status == UserStatus::Deprovisioned {
                return Ok(user);
            }

            // Removal records matter only for groups the token adds back; by construction a
            // group with a removal record is not among the stored groups.
            let removals: BTreeMap<String, i64> = if identity.groups == user.groups {
                BTreeMap::new()
            } else {
                membership_removals::table
                    .filter(membership_removals::user_id.eq(user.id.as_str()))
                    .filter(membership_removals::group_name.eq_any(identity.groups.iter().map(String::as_str)))
                    .select((membership_removals::group_name, membership_removals::removed_at))
                    .load::<(String, i64)>(conn)
                    .await?
                    .into_iter()
                    .collect()
            };
            let Some(update) = plan_update(&user, identity, &removals, token_issued_at, now) else {
                return Ok(user);
            };
            diesel::update(users::table.find(user.id.as_str()))
                .set((
                    users::email.eq(update.email.as_deref()),
                    users::name.eq(update.name.as_deref()),
                    users::groups_json.eq(names_to_json(&update.groups)),
                    users::roles_json.eq(names_to_json(&update.roles)),
                    users::last_seen_at.eq(Some(now.0)),
                ))
                .execute(conn)
                .await?;
            if !update.restored.is_empty() {
                diesel::delete(
                    membership_removals::table
                        .filter(membership_removals::user_id.eq(user.id.as_str()))
                        .filter(membership_removals::group_name.eq_any(update.restored.iter().map(String::as_str))),
                )
                .execute(conn)
                .await?;
            }
            Ok(User {
                email: update.email,
                name: update.name,
                groups: update.groups,
                roles: update.roles,
                last_seen_at: Some(now),
                ..user
            })
        });
        result.map_err(TxError::into_domain)
    }
}

#[async_trait]
impl StoreHealth for Store {
    async fn ping(&self) -> Result<(), StoreError> {
        with_conn!(self, |conn| {
            diesel::sql_query("SELECT 1").execute(conn).await.map_err(db_error)?;
            Ok(())
        })
    }
}

#[async_trait]
impl AppStore for Store {
    async fn create_app(&self, app: &App, key: &ApiKeyRecord, audit: &AuditEntry) -> Result<(), StoreError> {
        let result = transaction!(self, |conn| -> Result<(), TxError<StoreError>> {
            diesel::insert_into(apps::table).values(NewAppRow::from(app)).execute(conn).await?;
            diesel::insert_into(api_keys::table).values(NewApiKeyRow::from(key)).execute(conn).await?;
            insert_audit!(conn, audit)?;
            Ok(())
        });
        result.map_err(TxError::into_domain)
    }

    async fn list_apps(&self, page: &PageRequest) -> Result<Page<App>, StoreError> {
        let cursor = Cursor::of(page)?;
        let rows: Vec<AppRow> = with_conn!(self, |conn| {
            let mut query = apps::table.select(AppRow::as_select()).into_boxed();
            if let Some(c) = &cursor {
                query = query
                    .filter(apps::created_at.gt(c.ts).or(apps::created_at.eq(c.ts).and(apps::id.gt(c.id.as_str()))));
            }
            query
                .order((apps::created_at.asc(), apps::id.asc()))
                .limit(fetch_limit(page))
                .load(conn)
                .await
                .map_err(db_error)?
        });
        into_page(rows, page, |r| (r.created_at, r.id.as_str()), AppRow::into_domain)
    }

    async fn get_app(&self, id: &AppId) -> Result<Option<App>, StoreError> {
        let row: Option<AppRow> = with_conn!(self, |conn| {
            apps::table.find(id.as_str()).select(AppRow::as_select()).first(conn).await.optional().map_err(db_error)?
        });
        row.map(AppRow::into_domain).transpose()
    }

    async fn delete_app(&self, id: &AppId) -> Result<bool, StoreError> {
        // Keys, IdP, users (and their removal records) go with the app through ON DELETE
        // CASCADE, in the same statement. Its audit rows go in the same transaction: on
        // PostgreSQL `audit_log` has no foreign key to `apps` (its check and row lock on every
        // audit row cost the hand-out; see the 2026-12-07 migration), on SQLite the cascade has
        // already taken them and the second statement finds none. (On SQLite the hand-out rows
        // go just after, from their own file.)
        let deleted = transaction!(self, |conn| -> Result<usize, TxError<StoreError>> {
            let deleted = diesel::delete(apps::table.find(id.as_str())).execute(conn).await?;
            diesel::delete(audit_log::table.filter(audit_log::app_id.eq(id.as_str()))).execute(conn).await?;
            Ok(deleted)
        })
        .map_err(TxError::into_domain)?;
        if let crate::pool::DbPool::Sqlite(_) = self.pool() {
            // And its hand-out rows, in their own file (`handout_audit.rs`): after the app, so
            // a failure here leaves unlisted rows for retention to prune, never an app without
            // its trail.
            crate::handout_audit::delete_app(self, id).await?;
        }
        Ok(deleted > 0)
    }
}

#[async_trait]
impl ApiKeyStore for Store {
    async fn create_api_key(&self, key: &ApiKeyRecord, audit: &AuditEntry) -> Result<bool, StoreError> {
        let result = transaction!(self, |conn| -> Result<(), TxError<StoreError>> {
            diesel::insert_into(api_keys::table).values(NewApiKeyRow::from(key)).execute(conn).await?;
            insert_audit!(conn, audit)?;
            Ok(())
        });
        match result {
            Ok(()) => Ok(true),
            // The app does not exist (or was deleted concurrently).
            Err(TxError::Db(e)) if is_foreign_key_violation(&e) => Ok(false),
            Err(e) => Err(e.into_domain()),
        }
    }

    async fn list_api_keys(&self, app: &AppId, page: &PageRequest) -> Result<Page<ApiKeyRecord>, StoreError> {
        let cursor = Cursor::of(page)?;
        let rows: Vec<ApiKeyRow> = with_conn!(self, |conn| {
            let mut query =
                api_keys::table.filter(api_keys::app_id.eq(app.as_str())).select(ApiKeyRow::as_select()).into_boxed();
            if let Some(c) = &cursor {
                query = query.filter(
                    api_keys::created_at.gt(c.ts).or(api_keys::created_at.eq(c.ts).and(api_keys::id.gt(c.id.as_str()))),
                );
            }
            query
                .order((api_keys::created_at.asc(), api_keys::id.asc()))
                .limit(fetch_limit(page))
                .load(conn)
                .await
                .map_err(db_error)?
        });
        into_page(rows, page, |r| (r.created_at, r.id.as_str()), ApiKeyRow::into_domain)
    }

    async fn delete_api_key(&self, app: &AppId, key: &ApiKeyId, audit: &AuditEntry) -> Result<bool, StoreError> {
        let result = transaction!(self, |conn| -> Result<bool, TxError<StoreError>> {
            let deleted = diesel::delete(
                api_keys::table.filter(api_keys::id.eq(key.as_str())).filter(api_keys::app_id.eq(app.as_str())),
            )
            .execute(conn)
            .await?;
            if deleted == 0 {
                return Ok(false);
            }
            insert_audit!(conn, audit)?;
            Ok(true)
        });
        result.map_err(TxError::into_domain)
    }

    async fn find_api_key(&self, prefix: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row: Option<ApiKeyRow> = read_conn!(self, |conn| {
            api_keys::table
                .filter(api_keys::prefix.eq(prefix))
                .select(ApiKeyRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        row.map(ApiKeyRow::into_domain).transpose()
    }

    async fn find_api_key_with_idp(
        &self,
        prefix: &str,
    ) -> Result<Option<(ApiKeyRecord, Option<IdpConfig>)>, StoreError> {
        let row: Option<(ApiKeyRow, Option<IdpRow>)> = read_conn!(self, |conn| {
            api_keys::table
                .left_join(idp_configs::table.on(idp_configs::app_id.eq(api_keys::app_id)))
                .filter(api_keys::prefix.eq(prefix))
                .select((ApiKeyRow::as_select(), Option::<IdpRow>::as_select()))
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        let Some((key, idp)) = row else { return Ok(None) };
        Ok(Some((key.into_domain()?, idp.map(IdpRow::into_domain).transpose()?)))
    }

    async fn touch_api_key(&self, key: &ApiKeyId, at: UnixTime) -> Result<(), StoreError> {
        // Never move it backwards when concurrent requests finish out of order.
        with_conn!(self, |conn| {
            diesel::update(
                api_keys::table
                    .filter(api_keys::id.eq(key.as_str()))
                    .filter(api_keys::last_used_at.is_null().or(api_keys::last_used_at.lt(at.0))),
            )
            .set(api_keys::last_used_at.eq(Some(at.0)))
            .execute(conn)
            .await
            .map_err(db_error)?
        });
        Ok(())
    }
}

#[async_trait]
impl IdpStore for Store {
    async fn get_idp(&self, app: &AppId) -> Result<Option<IdpConfig>, StoreError> {
        let row: Option<IdpRow> = read_conn!(self, |conn| {
            idp_configs::table
                .filter(idp_configs::app_id.eq(app.as_str()))
                .select(IdpRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        row.map(IdpRow::into_domain).transpose()
    }

    async fn create_idp(&self, config: &IdpConfig, audit: &AuditEntry) -> Result<(), CreateIdpError> {
        let result = transaction!(self, |conn| -> Result<(), TxError<CreateIdpError>> {
            match diesel::insert_into(idp_configs::table).values(NewIdpRow::from(config)).execute(conn).await {
                Ok(_) => {}
                // `idp_configs.app_id` is unique: the app has one already.
                Err(e) if is_unique_violation(&e) => return Err(TxError::Domain(CreateIdpError::AlreadyConfigured)),
                Err(e) if is_foreign_key_violation(&e) => return Err(TxError::Domain(CreateIdpError::AppNotFound)),
                Err(e) => return Err(e.into()),
            }
            insert_audit!(conn, audit)?;
            Ok(())
        });
        result.map_err(TxError::into_domain)
    }

    async fn update_idp(
        &self,
        config: &IdpConfig,
        expected_version: i64,
        audit: &AuditEntry,
    ) -> Result<(), UpdateIdpError> {
        let result = transaction!(self, |conn| -> Result<(), TxError<UpdateIdpError>> {
            // Matching the id too: a configuration deleted and re-created meanwhile may be back
            // at the same version number, and must not be overwritten with the old one's data.
            // `claims_locked_at`, `id` and `created_at` are never written here.
            let updated = diesel::update(
                idp_configs::table
                    .filter(idp_configs::app_id.eq(config.app_id.as_str()))
                    .filter(idp_configs::id.eq(config.id.as_str()))
                    .filter(idp_configs::version.eq(expected_version)),
            )
            .set((
                idp_configs::kind.eq(config.kind.as_str()),
                idp_configs::issuer.eq(config.issuer.as_str()),
                idp_configs::jwks_uri.eq(config.jwks_uri.as_str()),
                idp_configs::audience.eq(config.audience.as_deref()),
                idp_configs::claim_user_id.eq(config.claims.user_id.as_str()),
                idp_configs::claim_group.eq(config.claims.group.as_ref().map(ClaimPath::as_str)),
                idp_configs::claim_role.eq(config.claims.role.as_ref().map(ClaimPath::as_str)),
                idp_configs::version.eq(config.version),
                idp_configs::authorization_endpoint.eq(config.endpoints.authorization_endpoint.as_deref()),
                idp_configs::token_endpoint.eq(config.endpoints.token_endpoint.as_deref()),
                idp_configs::end_session_endpoint.eq(config.endpoints.end_session_endpoint.as_deref()),
            ))
            .execute(conn)
            .await?;
            if updated == 0 {
                let present: i64 = idp_configs::table
                    .filter(idp_configs::app_id.eq(config.app_id.as_str()))
                    .count()
                    .get_result(conn)
                    .await?;
                let error = if present == 0 { UpdateIdpError::NotConfigured } else { UpdateIdpError::VersionConflict };
                return Err(TxError::Domain(error));
            }
            insert_audit!(conn, audit)?;
            Ok(())
        });
        result.map_err(TxError::into_domain)
    }

    async fn delete_idp(&self, app: &AppId, audit: &AuditEntry) -> Result<bool, StoreError> {
        let result = transaction!(self, |conn| -> Result<bool, TxError<StoreError>> {
            let deleted =
                diesel::delete(idp_configs::table.filter(idp_configs::app_id.eq(app.as_str()))).execute(conn).await?;
            if deleted == 0 {
                return Ok(false);
            }
            insert_audit!(conn, audit)?;
            Ok(true)
        });
        result.map_err(TxError::into_domain)
    }

    async fn oidc_client_id(&self, app: &AppId) -> Result<Option<String>, StoreError> {
        crate::signin::oidc_client_id(self, app).await
    }
}

#[async_trait]
impl UserStore for Store {
    async fn resolve_user(
        &self,
        app: &AppId,
        lock: LockGuard,
        identity: &ExtractedIdentity,
        token_issued_at: Option<UnixTime>,
        new_user_id: &UserId,
        now: UnixTime,
    ) -> Result<User, ResolveUserError> {
        // The common case (locked mappings, known user, nothing new, seen within the minute) is
        // answered by one read-only statement, which takes no write lock on SQLite and no row
        // lock on PostgreSQL. Everything else runs as one write transaction that re-checks all
        // it relies on, so the read above is only ever an optimisation.
        if lock.already_locked {
            match self.resolve_user_read_only(app, lock, identity, now).await? {
                ReadOnlyResolution::Settled(user) => return Ok(user),
                // The same change the transaction would make for an unchanged user (see
                // `plan_update`), durable before the answer like it.
                ReadOnlyResolution::Sighting(user) => {
                    self.handout_log().record_sighting(self, user.id.as_str(), now.0).await?;
                    return Ok(User { last_seen_at: Some(now), ..user });
                }
                ReadOnlyResolution::Write => {}
            }
        }
        self.resolve_user_in_transaction(app, lock, identity, token_issued_at, new_user_id, now).await
    }

    async fn ensure_user(
        &self,
        app: &AppId,
        subject: &str,
        new_user_id: &UserId,
        now: UnixTime,
    ) -> Result<User, StoreError> {
        // Not a sign-in: no claim lock, no `last_seen_at`, no token-sourced groups or roles.
        let new_user = User {
            id: new_user_id.clone(),
            app_id: app.clone(),
            subject: subject.to_owned(),
            status: UserStatus::Active,
            email: None,
            name: None,
            groups: BTreeSet::new(),
            roles: BTreeSet::new(),
            created_at: now,
            last_seen_at: None,
        };
        let row: UserRow = with_conn!(self, |conn| {
            let by_subject = users::table
                .filter(users::app_id.eq(app.as_str()))
                .filter(users::subject.eq(subject))
                .select(UserRow::as_select());
            match by_subject.first(conn).await.optional().map_err(db_error)? {
                Some(row) => row,
                None => {
                    // A concurrent creator (a sign-in, another import) may win the race: the
                    // insert then does nothing and the read returns the winner's row.
                    diesel::insert_into(users::table)
                        .values(NewUserRow::from(&new_user))
                        .on_conflict_do_nothing()
                        .execute(conn)
                        .await
                        .map_err(db_error)?;
                    by_subject.first(conn).await.map_err(db_error)?
                }
            }
        });
        row.into_domain()
    }

    async fn get_user(&self, app: &AppId, user: &UserId) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> = with_conn!(self, |conn| {
            users::table
                .filter(users::id.eq(user.as_str()))
                .filter(users::app_id.eq(app.as_str()))
                .select(UserRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        row.map(UserRow::into_domain).transpose()
    }

    async fn list_users(
        &self,
        app: &AppId,
        status: Option<UserStatus>,
        page: &PageRequest,
    ) -> Result<Page<User>, StoreError> {
        let cursor = Cursor::of(page)?;
        let rows: Vec<UserRow> = with_conn!(self, |conn| {
            let mut query =
                users::table.filter(users::app_id.eq(app.as_str())).select(UserRow::as_select()).into_boxed();
            if let Some(status) = status {
                query = query.filter(users::status.eq(status.as_str()));
            }
            if let Some(c) = &cursor {
                query = query
                    .filter(users::created_at.gt(c.ts).or(users::created_at.eq(c.ts).and(users::id.gt(c.id.as_str()))));
            }
            query
                .order((users::created_at.asc(), users::id.asc()))
                .limit(fetch_limit(page))
                .load(conn)
                .await
                .map_err(db_error)?
        });
        into_page(rows, page, |r| (r.body.created_at, r.body.id.as_str()), UserRow::into_domain)
    }
}

#[async_trait]
impl AuditLog for Store {
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        with_conn!(self, |conn| insert_audit!(conn, entry).map_err(db_error)?);
        Ok(())
    }

    async fn list_audit(
        &self,
        app: &AppId,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>, StoreError> {
        if let crate::pool::DbPool::Sqlite(_) = self.pool() {
            // Hand-out rows are in a file of their own: merge the two (`handout_audit.rs`).
            return crate::handout_audit::list_page(self, app, filter, page).await;
        }
        let cursor = Cursor::of(page)?;
        let rows: Vec<AuditRow> = with_conn!(self, |conn| {
            let mut query =
                audit_log::table.filter(audit_log::app_id.eq(app.as_str())).select(AuditRow::as_select()).into_boxed();
            if let Some(action) = &filter.action {
                query = query.filter(audit_log::action.eq(action.as_str()));
            }
            if let Some(user) = &filter.user_id {
                query = query.filter(audit_log::user_id.eq(user.as_str()));
            }
            if let Some(c) = &cursor {
                // Audit cursors carry the insertion sequence in their numeric part.
                query = query.filter(audit_log::seq.lt(c.ts));
            }
            query.order(audit_log::seq.desc()).limit(fetch_limit(page)).load(conn).await.map_err(db_error)?
        });
        into_page(rows, page, |r| (r.seq, "seq"), AuditRow::into_domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(groups: &[&str], last_seen: Option<i64>) -> User {
        User {
            id: UserId::parse("00000000-0000-4000-8000-000000000001").unwrap(),
            app_id: AppId::parse("00000000-0000-4000-8000-000000000002").unwrap(),
            subject: "s".into(),
            status: UserStatus::Active,
            email: Some("a@example.com".into()),
            name: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            roles: BTreeSet::new(),
            created_at: UnixTime(0),
            last_seen_at: last_seen.map(UnixTime),
        }
    }

    fn token(groups: &[&str], email: Option<&str>) -> ExtractedIdentity {
        ExtractedIdentity {
            subject: "s".into(),
            email: email.map(str::to_owned),
            name: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            roles: BTreeSet::new(),
        }
    }

    #[test]
    fn nothing_to_write_when_unchanged_and_recent() {
        let u = user(&["a"], Some(100));
        assert_eq!(plan_update(&u, &token(&["a"], None), &BTreeMap::new(), None, UnixTime(159)), None);
        assert!(plan_update(&u, &token(&["a"], None), &BTreeMap::new(), None, UnixTime(160)).is_some());
        assert!(plan_update(&user(&["a"], None), &token(&["a"], None), &BTreeMap::new(), None, UnixTime(1)).is_some());
    }

    #[test]
    fn email_kept_when_token_has_none() {
        let plan = plan_update(&user(&[], None), &token(&[], None), &BTreeMap::new(), None, UnixTime(1)).unwrap();
        assert_eq!(plan.email.as_deref(), Some("a@example.com"));
        let plan =
            plan_update(&user(&[], None), &token(&[], Some("b@example.com")), &BTreeMap::new(), None, UnixTime(1))
                .unwrap();
        assert_eq!(plan.email.as_deref(), Some("b@example.com"));
    }

    #[test]
    fn removed_group_needs_a_newer_token() {
        let u = user(&[], Some(100));
        let removals = BTreeMap::from([("g".to_string(), 50)]);
        for iat in [None, Some(UnixTime(49)), Some(UnixTime(50))] {
            assert_eq!(plan_update(&u, &token(&["g"], None), &removals, iat, UnixTime(101)), None, "{iat:?}");
        }
        let plan = plan_update(&u, &token(&["g"], None), &removals, Some(UnixTime(51)), UnixTime(101)).unwrap();
        assert!(plan.groups.contains("g"));
        assert_eq!(plan.restored, vec!["g".to_string()]);
    }

    #[test]
    fn lock_rule() {
        let lock = LockGuard { idp_version: 3, already_locked: true };
        assert!(lock_still_holds(3, Some(1), lock));
        assert!(lock_still_holds(4, Some(1), lock));
        assert!(!lock_still_holds(2, Some(1), lock));
        assert!(!lock_still_holds(3, None, lock));
    }
}
