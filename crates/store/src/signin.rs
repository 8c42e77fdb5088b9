//! The sign-in storage ports ([`OidcClients`], [`SignInStates`], [`SdkSessions`],
//! [`WalletSessions`]) for [`Store`]: the app's OIDC client, pending sign-in states, SDK sessions and
//! Wallet sessions (tables from migration `000004_sign_in`), with their row types.
//!
//! Every mutating method is one transaction with the audit row it is given. The schema does the
//! rest: the OIDC client goes with its IdP configuration (foreign key, `ON DELETE CASCADE`),
//! sign-in states with the OIDC client, Wallet sessions with the IdP configuration and the user,
//! and everything with the app.

use crate::error::{corrupt, db_error, is_foreign_key_violation, TxError};
use crate::models::{app_id, user_id};
use crate::schema::{oidc_clients, sdk_sessions, sign_in_states, wallet_sessions};
use crate::store::Store;
use async_trait::async_trait;
use custody_identity::audit::AuditEntry;
use custody_identity::cipher::SealedBox;
use custody_identity::ports::StoreError;
use custody_identity::signin::ports::{
    OidcClients, PutOidcClientError, SdkOutcome, SdkSessions, SignInStates, WalletSessions,
};
use custody_identity::signin::{
    OidcClient, OidcClientId, SdkSession, SdkSessionId, SdkSessionStatus, SignInFailure, SignInPurpose, SignInState,
    TokenAuthMethod, WalletSession,
};
use custody_identity::{AppId, IdpId, UnixTime};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::RunQueryDsl;

/// How long after its expiry an unconsumed sign-in state or a finished SDK session is kept (so a
/// late callback still reports "expired", and an SDK polling late still learns the outcome)
/// before `create_sign_in` deletes it.
const SIGN_IN_RETENTION_SECS: i64 = 86_400;

fn idp_id(s: &str) -> Result<IdpId, StoreError> {
    IdpId::parse(s).map_err(|_| corrupt("identity provider id"))
}

fn session_id(s: &str) -> Result<SdkSessionId, StoreError> {
    SdkSessionId::parse(s).map_err(|_| corrupt("SDK session id"))
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = oidc_clients, check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct OidcClientRow {
    app_id: String,
    idp_id: String,
    client_id: String,
    client_secret: Vec<u8>,
    token_auth_method: String,
    created_at: i64,
    updated_at: i64,
}

impl OidcClientRow {
    fn into_domain(self) -> Result<OidcClient, StoreError> {
        Ok(OidcClient {
            app_id: app_id(&self.app_id)?,
            idp_id: idp_id(&self.idp_id)?,
            client_id: OidcClientId::parse(&self.client_id).map_err(|_| corrupt("OIDC client id"))?,
            client_secret: SealedBox(self.client_secret),
            auth_method: TokenAuthMethod::parse(&self.token_auth_method)
                .ok_or_else(|| corrupt("token endpoint authentication method"))?,
            created_at: UnixTime(self.created_at),
            updated_at: UnixTime(self.updated_at),
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = oidc_clients)]
struct NewOidcClientRow<'a> {
    app_id: &'a str,
    idp_id: &'a str,
    client_id: &'a str,
    client_secret: &'a [u8],
    token_auth_method: &'a str,
    created_at: i64,
    updated_at: i64,
}

impl<'a> From<&'a OidcClient> for NewOidcClientRow<'a> {
    fn from(c: &'a OidcClient) -> Self {
        Self {
            app_id: c.app_id.as_str(),
            idp_id: c.idp_id.as_str(),
            client_id: c.client_id.as_str(),
            client_secret: &c.client_secret.0,
            token_auth_method: c.auth_method.as_str(),
            created_at: c.created_at.0,
            updated_at: c.updated_at.0,
        }
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = sign_in_states, check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct SignInStateRow {
    state_hash: String,
    app_id: String,
    purpose: String,
    sdk_session_id: Option<String>,
    nonce_hash: String,
    pkce_verifier: Vec<u8>,
    created_at: i64,
    expires_at: i64,
}

impl SignInStateRow {
    fn from_domain(s: &SignInState) -> Self {
        Self {
            state_hash: s.state_hash.clone(),
            app_id: s.app_id.as_str().to_owned(),
            purpose: s.purpose.as_str().to_owned(),
            sdk_session_id: s.sdk_session.as_ref().map(|id| id.as_str().to_owned()),
            nonce_hash: s.nonce_hash.clone(),
            pkce_verifier: s.pkce_verifier.0.clone(),
            created_at: s.created_at.0,
            expires_at: s.expires_at.0,
        }
    }

    fn into_domain(self) -> Result<SignInState, StoreError> {
        Ok(SignInState {
            state_hash: self.state_hash,
            app_id: app_id(&self.app_id)?,
            purpose: SignInPurpose::parse(&self.purpose).ok_or_else(|| corrupt("sign-in purpose"))?,
            sdk_session: self.sdk_session_id.as_deref().map(session_id).transpose()?,
            nonce_hash: self.nonce_hash,
            pkce_verifier: SealedBox(self.pkce_verifier),
            created_at: UnixTime(self.created_at),
            expires_at: UnixTime(self.expires_at),
        })
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = sdk_sessions, check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct SdkSessionRow {
    id: String,
    app_id: String,
    status: String,
    error: Option<String>,
    user_id: Option<String>,
    user_token: Option<Vec<u8>>,
    created_at: i64,
    expires_at: i64,
    completed_at: Option<i64>,
    token_delivered_at: Option<i64>,
}

impl SdkSessionRow {
    fn from_domain(s: &SdkSession) -> Self {
        Self {
            id: s.id.as_str().to_owned(),
            app_id: s.app_id.as_str().to_owned(),
            status: s.status.as_str().to_owned(),
            error: s.error.map(|e| e.as_str().to_owned()),
            user_id: s.user_id.as_ref().map(|u| u.as_str().to_owned()),
            user_token: s.user_token.as_ref().map(|t| t.0.clone()),
            created_at: s.created_at.0,
            expires_at: s.expires_at.0,
            completed_at: s.completed_at.map(|t| t.0),
            token_delivered_at: s.token_delivered_at.map(|t| t.0),
        }
    }

    fn into_domain(self) -> Result<SdkSession, StoreError> {
        Ok(SdkSession {
            id: session_id(&self.id)?,
            app_id: app_id(&self.app_id)?,
            status: SdkSessionStatus::parse(&self.status).ok_or_else(|| corrupt("SDK session status"))?,
            error: self
                .error
                .as_deref()
                .map(|e| SignInFailure::parse(e).ok_or_else(|| corrupt("SDK session error")))
                .transpose()?,
            user_id: self.user_id.as_deref().map(user_id).transpose()?,
            user_token: self.user_token.map(SealedBox),
            created_at: UnixTime(self.created_at),
            expires_at: UnixTime(self.expires_at),
            completed_at: self.completed_at.map(UnixTime),
            token_delivered_at: self.token_delivered_at.map(UnixTime),
        })
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = wallet_sessions, check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct WalletSessionRow {
    id_hash: String,
    app_id: String,
    idp_id: String,
    user_id: String,
    id_token: Option<Vec<u8>>,
    created_at: i64,
    expires_at: i64,
}

impl WalletSessionRow {
    fn from_domain(s: &WalletSession) -> Self {
        Self {
            id_hash: s.id_hash.clone(),
            app_id: s.app_id.as_str().to_owned(),
            idp_id: s.idp_id.as_str().to_owned(),
            user_id: s.user_id.as_str().to_owned(),
            id_token: s.id_token.as_ref().map(|t| t.0.clone()),
            created_at: s.created_at.0,
            expires_at: s.expires_at.0,
        }
    }

    fn into_domain(self) -> Result<WalletSession, StoreError> {
        Ok(WalletSession {
            id_hash: self.id_hash,
            app_id: app_id(&self.app_id)?,
            idp_id: idp_id(&self.idp_id)?,
            user_id: user_id(&self.user_id)?,
            id_token: self.id_token.map(SealedBox),
            created_at: UnixTime(self.created_at),
            expires_at: UnixTime(self.expires_at),
        })
    }
}

/// A transaction outcome that rolls back on purpose: the row a foreign key names is gone.
#[derive(Debug)]
enum Refused {
    ReferenceGone,
    Store(StoreError),
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Self {
        Refused::Store(e)
    }
}

/// The client id of the app's OIDC client, for [`custody_identity::ports::IdpStore`].
pub(crate) async fn oidc_client_id(store: &Store, app: &AppId) -> Result<Option<String>, StoreError> {
    with_conn!(store, |conn| {
        oidc_clients::table
            .find(app.as_str())
            .select(oidc_clients::client_id)
            .first::<String>(conn)
            .await
            .optional()
            .map_err(db_error)
    })
}

#[async_trait]
impl OidcClients for Store {
    async fn put_oidc_client(&self, client: &OidcClient, audit: &AuditEntry) -> Result<(), PutOidcClientError> {
        let result = transaction!(self, |conn| -> Result<(), TxError<Refused>> {
            // A replaced IdP configuration keeps nothing of the old client but what is set
            // here; `created_at` is kept only for the same configuration (the service decides).
            let written = diesel::insert_into(oidc_clients::table)
                .values(NewOidcClientRow::from(client))
                .on_conflict(oidc_clients::app_id)
                .do_update()
                .set((
                    oidc_clients::idp_id.eq(excluded(oidc_clients::idp_id)),
                    oidc_clients::client_id.eq(excluded(oidc_clients::client_id)),
                    oidc_clients::client_secret.eq(excluded(oidc_clients::client_secret)),
                    oidc_clients::token_auth_method.eq(excluded(oidc_clients::token_auth_method)),
                    oidc_clients::created_at.eq(excluded(oidc_clients::created_at)),
                    oidc_clients::updated_at.eq(excluded(oidc_clients::updated_at)),
                ))
                .execute(conn)
                .await;
            match written {
                Ok(_) => {}
                // The IdP configuration (or the app) is gone: it was deleted or replaced.
                Err(e) if is_foreign_key_violation(&e) => return Err(TxError::Domain(Refused::ReferenceGone)),
                Err(e) => return Err(e.into()),
            }
            insert_audit!(conn, audit)?;
            Ok(())
        });
        match result.map_err(TxError::into_domain) {
            Ok(()) => Ok(()),
            Err(Refused::ReferenceGone) => Err(PutOidcClientError::IdpChanged),
            Err(Refused::Store(e)) => Err(e.into()),
        }
    }

    async fn get_oidc_client(&self, app: &AppId) -> Result<Option<OidcClient>, StoreError> {
        let row: Option<OidcClientRow> = with_conn!(self, |conn| {
            oidc_clients::table
                .find(app.as_str())
                .select(OidcClientRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        row.map(OidcClientRow::into_domain).transpose()
    }

    async fn delete_oidc_client(&self, app: &AppId, audit: &AuditEntry) -> Result<bool, StoreError> {
        let result = transaction!(self, |conn| -> Result<bool, TxError<StoreError>> {
            // Pending sign-ins go with it (foreign key cascade).
            let deleted = diesel::delete(oidc_clients::table.find(app.as_str())).execute(conn).await?;
            if deleted == 0 {
                return Ok(false);
            }
            insert_audit!(conn, audit)?;
            Ok(true)
        });
        result.map_err(TxError::into_domain)
    }

    async fn oidc_client_secrets(
        &self,
        after: Option<&AppId>,
        limit: u32,
    ) -> Result<Vec<(AppId, SealedBox)>, StoreError> {
        let limit = i64::from(limit.clamp(1, 1000));
        let rows: Vec<(String, Vec<u8>)> = with_conn!(self, |conn| {
            let mut query = oidc_clients::table
                .select((oidc_clients::app_id, oidc_clients::client_secret))
                .order(oidc_clients::app_id.asc())
                .limit(limit)
                .into_boxed();
            if let Some(after) = after {
                query = query.filter(oidc_clients::app_id.gt(after.as_str()));
            }
            query.load(conn).await.map_err(db_error)?
        });
        rows.into_iter().map(|(app, sealed)| Ok((app_id(&app)?, SealedBox(sealed)))).collect()
    }

    async fn replace_oidc_client_secret(
        &self,
        app: &AppId,
        old: &SealedBox,
        new: &SealedBox,
    ) -> Result<bool, StoreError> {
        let updated = with_conn!(self, |conn| {
            diesel::update(
                oidc_clients::table
                    .filter(oidc_clients::app_id.eq(app.as_str()))
                    .filter(oidc_clients::client_secret.eq(old.0.as_slice())),
            )
            .set(oidc_clients::client_secret.eq(new.0.as_slice()))
            .execute(conn)
            .await
            .map_err(db_error)?
        });
        Ok(updated == 1)
    }
}

#[async_trait]
impl SignInStates for Store {
    async fn create_sign_in(&self, state: &SignInState, session: Option<&SdkSession>) -> Result<bool, StoreError> {
        let stale = state.created_at.0.saturating_sub(SIGN_IN_RETENTION_SECS);
        let state_row = SignInStateRow::from_domain(state);
        let session_row = session.map(SdkSessionRow::from_domain);
        let result = transaction!(self, |conn| -> Result<(), TxError<Refused>> {
            // Sign-ins abandoned long ago: nothing else ever deletes them.
            diesel::delete(sign_in_states::table.filter(sign_in_states::expires_at.lt(stale))).execute(conn).await?;
            diesel::delete(sdk_sessions::table.filter(sdk_sessions::expires_at.lt(stale))).execute(conn).await?;
            if let Some(row) = &session_row {
                diesel::insert_into(sdk_sessions::table).values(row).execute(conn).await?;
            }
            match diesel::insert_into(sign_in_states::table).values(&state_row).execute(conn).await {
                Ok(_) => Ok(()),
                // The app's OIDC client was removed meanwhile.
                Err(e) if is_foreign_key_violation(&e) => Err(TxError::Domain(Refused::ReferenceGone)),
                Err(e) => Err(e.into()),
            }
        });
        match result.map_err(TxError::into_domain) {
            Ok(()) => Ok(true),
            Err(Refused::ReferenceGone) => Ok(false),
            Err(Refused::Store(e)) => Err(e),
        }
    }

    async fn consume_sign_in_state(
        &self,
        state_hash: &str,
        purpose: SignInPurpose,
    ) -> Result<Option<SignInState>, StoreError> {
        // One statement: of two concurrent consumers, exactly one deletes the row and gets it.
        let row: Option<SignInStateRow> = with_conn!(self, |conn| {
            diesel::delete(
                sign_in_states::table
                    .filter(sign_in_states::state_hash.eq(state_hash))
                    .filter(sign_in_states::purpose.eq(purpose.as_str())),
            )
            .returning(SignInStateRow::as_returning())
            .get_result(conn)
            .await
            .optional()
            .map_err(db_error)?
        });
        row.map(SignInStateRow::into_domain).transpose()
    }
}

#[async_trait]
impl SdkSessions for Store {
    async fn get_sdk_session(&self, app: &AppId, id: &SdkSessionId) -> Result<Option<SdkSession>, StoreError> {
        let row: Option<SdkSessionRow> = with_conn!(self, |conn| {
            sdk_sessions::table
                .filter(sdk_sessions::id.eq(id.as_str()))
                .filter(sdk_sessions::app_id.eq(app.as_str()))
                .select(SdkSessionRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        row.map(SdkSessionRow::into_domain).transpose()
    }

    async fn finish_sdk_session(
        &self,
        id: &SdkSessionId,
        outcome: SdkOutcome<'_>,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let (status, error, user, token) = match outcome {
            SdkOutcome::Complete { user, token } => {
                (SdkSessionStatus::Complete, None, Some(user.as_str()), Some(token.0.as_slice()))
            }
            SdkOutcome::Failed(failure) => (SdkSessionStatus::Failed, Some(failure.as_str()), None, None),
        };
        let result = transaction!(self, |conn| -> Result<bool, TxError<StoreError>> {
            let updated = diesel::update(
                sdk_sessions::table
                    .filter(sdk_sessions::id.eq(id.as_str()))
                    .filter(sdk_sessions::status.eq(SdkSessionStatus::Pending.as_str())),
            )
            .set((
                sdk_sessions::status.eq(status.as_str()),
                sdk_sessions::error.eq(error),
                sdk_sessions::user_id.eq(user),
                sdk_sessions::user_token.eq(token),
                sdk_sessions::completed_at.eq(Some(now.0)),
            ))
            .execute(conn)
            .await?;
            if updated == 0 {
                return Ok(false);
            }
            insert_audit!(conn, audit)?;
            Ok(true)
        });
        result.map_err(TxError::into_domain)
    }

    async fn take_sdk_token(
        &self,
        app: &AppId,
        id: &SdkSessionId,
        now: UnixTime,
    ) -> Result<Option<SealedBox>, StoreError> {
        with_conn!(self, |conn| {
            let token: Option<Option<Vec<u8>>> = sdk_sessions::table
                .filter(sdk_sessions::id.eq(id.as_str()))
                .filter(sdk_sessions::app_id.eq(app.as_str()))
                .select(sdk_sessions::user_token)
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?;
            let Some(Some(token)) = token else { return Ok(None) };
            // Compare-and-set: of two readers of the same token, only the one whose update
            // clears it gets it (the other's update finds it cleared and changes nothing).
            let cleared = diesel::update(
                sdk_sessions::table
                    .filter(sdk_sessions::id.eq(id.as_str()))
                    .filter(sdk_sessions::user_token.is_not_null()),
            )
            .set((sdk_sessions::user_token.eq(None::<Vec<u8>>), sdk_sessions::token_delivered_at.eq(Some(now.0))))
            .execute(conn)
            .await
            .map_err(db_error)?;
            Ok((cleared == 1).then_some(SealedBox(token)))
        })
    }
}

#[async_trait]
impl WalletSessions for Store {
    async fn create_wallet_session(&self, session: &WalletSession, audit: &AuditEntry) -> Result<(), StoreError> {
        let row = WalletSessionRow::from_domain(session);
        let result = transaction!(self, |conn| -> Result<(), TxError<StoreError>> {
            diesel::delete(wallet_sessions::table.filter(wallet_sessions::expires_at.lt(session.created_at.0)))
                .execute(conn)
                .await?;
            diesel::insert_into(wallet_sessions::table).values(&row).execute(conn).await?;
            insert_audit!(conn, audit)?;
            Ok(())
        });
        result.map_err(TxError::into_domain)
    }

    async fn get_wallet_session(&self, id_hash: &str) -> Result<Option<WalletSession>, StoreError> {
        let row: Option<WalletSessionRow> = with_conn!(self, |conn| {
            wallet_sessions::table
                .find(id_hash)
                .select(WalletSessionRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        row.map(WalletSessionRow::into_domain).transpose()
    }

    async fn delete_wallet_session(&self, id_hash: &str, audit: Option<&AuditEntry>) -> Result<bool, StoreError> {
        let result = transaction!(self, |conn| -> Result<bool, TxError<StoreError>> {
            let deleted = diesel::delete(wallet_sessions::table.find(id_hash)).execute(conn).await?;
            if deleted == 0 {
                return Ok(false);
            }
            if let Some(entry) = audit {
                insert_audit!(conn, entry)?;
            }
            Ok(true)
        });
        result.map_err(TxError::into_domain)
    }
}
