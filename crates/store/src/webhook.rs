//! [`WebhookStore`] for [`Store`]: the lifecycle webhook settings of an app's identity provider,
//! in `idp_webhooks` (one row per identity provider, deleted with it through its foreign key).
//!
//! Enabling inserts the row if it is missing and then flips it with a conditional update
//! (`enabled = false` → `true`); rotating and disabling are conditional updates on
//! `enabled = true`. On PostgreSQL the update takes the row lock and re-checks its condition
//! after a concurrent writer commits, so two operators enabling at once get one success and one
//! "already enabled"; on SQLite `BEGIN IMMEDIATE` serialises them.

use crate::error::{corrupt, db_error, is_foreign_key_violation, TxError};
use crate::schema::{idp_configs, idp_webhooks};
use crate::store::Store;
use async_trait::async_trait;
use custody_identity::audit::AuditEntry;
use custody_identity::cipher::SealedBox;
use custody_identity::idp::IdpKind;
use custody_identity::ports::StoreError;
use custody_identity::{AppId, IdpId, UnixTime};
use custody_vault::webhook::{
    ChangeWebhooksError, EnableWebhooksError, SecretSource, StoredSecret, WebhookRecord, WebhookStore, WebhookTarget,
};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

/// A row of `idp_webhooks`, as read.
#[derive(Queryable, Selectable)]
#[diesel(table_name = idp_webhooks)]
struct WebhookRow {
    idp_id: String,
    enabled: bool,
    secret_source: String,
    secret_hash: Option<Vec<u8>>,
    sealed_secret: Option<Vec<u8>>,
    rotated_at: Option<i64>,
}

impl WebhookRow {
    fn into_domain(self) -> Result<WebhookRecord, StoreError> {
        let source = SecretSource::parse(&self.secret_source).ok_or_else(|| corrupt("webhook secret source"))?;
        let secret = match (source, self.secret_hash, self.sealed_secret) {
            (SecretSource::Generated, Some(hash), _) => Some(StoredSecret::Hash(hash)),
            (SecretSource::Provided, _, Some(sealed)) => Some(StoredSecret::Sealed(SealedBox(sealed))),
            _ => None,
        };
        if self.enabled && secret.is_none() {
            return Err(corrupt("webhook secret"));
        }
        Ok(WebhookRecord { enabled: self.enabled, secret, rotated_at: self.rotated_at.map(UnixTime) })
    }
}

/// The columns a secret is written to: (source, hash, sealed).
fn secret_columns(secret: &StoredSecret) -> (&'static str, Option<&[u8]>, Option<&[u8]>) {
    match secret {
        StoredSecret::Hash(hash) => (SecretSource::Generated.as_str(), Some(hash.as_slice()), None),
        StoredSecret::Sealed(sealed) => (SecretSource::Provided.as_str(), None, Some(sealed.0.as_slice())),
    }
}

fn idp_id(s: &str) -> Result<IdpId, StoreError> {
    IdpId::parse(s).map_err(|_| corrupt("identity provider id"))
}

/// The id of the app's identity provider, read inside a transaction.
macro_rules! current_idp {
    ($conn:expr, $app:expr) => {
        idp_configs::table
            .filter(idp_configs::app_id.eq($app))
            .select(idp_configs::id)
            .first::<String>($conn)
            .await
            .optional()
    };
}

#[async_trait]
impl WebhookStore for Store {
    async fn webhook_target(&self, app: &AppId) -> Result<Option<WebhookTarget>, StoreError> {
        let (idp, row): (Option<(String, String)>, Option<WebhookRow>) = with_conn!(self, |conn| {
            let idp = idp_configs::table
                .filter(idp_configs::app_id.eq(app.as_str()))
                .select((idp_configs::id, idp_configs::kind))
                .first::<(String, String)>(conn)
                .await
                .optional()
                .map_err(db_error)?;
            let row = match &idp {
                None => None,
                Some((id, _)) => idp_webhooks::table
                    .filter(idp_webhooks::app_id.eq(app.as_str()))
                    .filter(idp_webhooks::idp_id.eq(id.as_str()))
                    .select(WebhookRow::as_select())
                    .first(conn)
                    .await
                    .optional()
                    .map_err(db_error)?,
            };
            (idp, row)
        });
        let Some((id, kind)) = idp else { return Ok(None) };
        let kind = IdpKind::parse(&kind).ok_or_else(|| corrupt("identity provider kind"))?;
        let record = match row {
            Some(row) if row.idp_id == id => Some(row.into_domain()?),
            _ => None,
        };
        Ok(Some(WebhookTarget { idp_id: idp_id(&id)?, kind, record }))
    }

    async fn enable_webhooks(
        &self,
        app: &AppId,
        idp: &IdpId,
        secret: &StoredSecret,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<(), EnableWebhooksError> {
        let (source, hash, sealed) = secret_columns(secret);
        let result = transaction!(self, |conn| -> Result<(), TxError<EnableWebhooksError>> {
            if current_idp!(conn, app.as_str())?.as_deref() != Some(idp.as_str()) {
                return Err(TxError::Domain(EnableWebhooksError::NotConfigured));
            }
            diesel::insert_into(idp_webhooks::table)
                .values((
                    idp_webhooks::app_id.eq(app.as_str()),
                    idp_webhooks::idp_id.eq(idp.as_str()),
                    idp_webhooks::enabled.eq(false),
                    idp_webhooks::secret_source.eq(source),
                    idp_webhooks::updated_at.eq(now.0),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            let enabled = diesel::update(
                idp_webhooks::table
                    .filter(idp_webhooks::app_id.eq(app.as_str()))
                    .filter(idp_webhooks::idp_id.eq(idp.as_str()))
                    .filter(idp_webhooks::enabled.eq(false)),
            )
            .set((
                idp_webhooks::enabled.eq(true),
                idp_webhooks::secret_source.eq(source),
                idp_webhooks::secret_hash.eq(hash),
                idp_webhooks::sealed_secret.eq(sealed),
                idp_webhooks::rotated_at.eq(None::<i64>),
                idp_webhooks::updated_at.eq(now.0),
            ))
            .execute(conn)
            .await?;
            if enabled == 0 {
                return Err(TxError::Domain(EnableWebhooksError::AlreadyEnabled));
            }
            insert_audit!(conn, audit)?;
            Ok(())
        });
        match result {
            Ok(()) => Ok(()),
            // The identity provider was deleted concurrently.
            Err(TxError::Db(e)) if is_foreign_key_violation(&e) => Err(EnableWebhooksError::NotConfigured),
            Err(e) => Err(e.into_domain()),
        }
    }

    async fn rotate_webhook_secret(
        &self,
        app: &AppId,
        idp: &IdpId,
        secret: &StoredSecret,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<(), ChangeWebhooksError> {
        let (source, hash, sealed) = secret_columns(secret);
        let result = transaction!(self, |conn| -> Result<(), TxError<ChangeWebhooksError>> {
            let rotated = diesel::update(
                idp_webhooks::table
                    .filter(idp_webhooks::app_id.eq(app.as_str()))
                    .filter(idp_webhooks::idp_id.eq(idp.as_str()))
                    .filter(idp_webhooks::enabled.eq(true)),
            )
            .set((
                idp_webhooks::secret_source.eq(source),
                idp_webhooks::secret_hash.eq(hash),
                idp_webhooks::sealed_secret.eq(sealed),
                idp_webhooks::rotated_at.eq(Some(now.0)),
                idp_webhooks::updated_at.eq(now.0),
            ))
            .execute(conn)
            .await?;
            if rotated == 0 {
                return Err(TxError::Domain(not_enabled_or_gone(current_idp!(conn, app.as_str())?, idp)));
            }
            insert_audit!(conn, audit)?;
            Ok(())
        });
        result.map_err(TxError::into_domain)
    }

    async fn disable_webhooks(
        &self,
        app: &AppId,
        idp: &IdpId,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<(), ChangeWebhooksError> {
        let result = transaction!(self, |conn| -> Result<(), TxError<ChangeWebhooksError>> {
            let disabled = diesel::update(
                idp_webhooks::table
                    .filter(idp_webhooks::app_id.eq(app.as_str()))
                    .filter(idp_webhooks::idp_id.eq(idp.as_str()))
                    .filter(idp_webhooks::enabled.eq(true)),
            )
            .set((
                idp_webhooks::enabled.eq(false),
                idp_webhooks::secret_hash.eq(None::<Vec<u8>>),
                idp_webhooks::sealed_secret.eq(None::<Vec<u8>>),
                idp_webhooks::rotated_at.eq(None::<i64>),
                idp_webhooks::updated_at.eq(now.0),
            ))
            .execute(conn)
            .await?;
            if disabled == 0 {
                return Err(TxError::Domain(not_enabled_or_gone(current_idp!(conn, app.as_str())?, idp)));
            }
            insert_audit!(conn, audit)?;
            Ok(())
        });
        result.map_err(TxError::into_domain)
    }
}

/// Why a conditional update on enabled webhooks matched nothing.
fn not_enabled_or_gone(current: Option<String>, idp: &IdpId) -> ChangeWebhooksError {
    if current.as_deref() == Some(idp.as_str()) {
        ChangeWebhooksError::NotEnabled
    } else {
        ChangeWebhooksError::NotConfigured
    }
}

/// [`custody_vault::ports::SealedValues::sealed_values`] for
/// [`custody_vault::ports::SealedKind::WebhookSecret`]: provided signing secrets by app id,
/// after `after`.
pub(crate) async fn sealed_secrets(
    store: &Store,
    after: Option<String>,
    limit: i64,
) -> Result<Vec<custody_vault::ports::SealedValue>, StoreError> {
    let rows: Vec<(String, Option<Vec<u8>>)> = with_conn!(store, |conn| {
        let mut query = idp_webhooks::table
            .filter(idp_webhooks::sealed_secret.is_not_null())
            .select((idp_webhooks::app_id, idp_webhooks::sealed_secret))
            .order(idp_webhooks::app_id.asc())
            .limit(limit)
            .into_boxed();
        if let Some(after) = &after {
            query = query.filter(idp_webhooks::app_id.gt(after.as_str()));
        }
        query.load(conn).await.map_err(db_error)?
    });
    rows.into_iter()
        .filter_map(|(app, sealed)| sealed.map(|s| (app, s)))
        .map(|(app, sealed)| {
            Ok(custody_vault::ports::SealedValue {
                kind: custody_vault::ports::SealedKind::WebhookSecret,
                cursor: crate::cursor::KeyCursor::encode(&[&app]),
                associated_data: custody_vault::webhook::webhook_secret_aad(&crate::models::app_id(&app)?),
                sealed: SealedBox(sealed),
            })
        })
        .collect()
}

/// [`custody_vault::ports::SealedValues::replace_sealed`] for a provided signing secret:
/// compare-and-set on the old bytes. Returns the number of rows changed.
pub(crate) async fn replace_sealed_secret(
    store: &Store,
    app: &str,
    old: &[u8],
    new: &[u8],
) -> Result<usize, StoreError> {
    Ok(with_conn!(store, |conn| {
        diesel::update(
            idp_webhooks::table.filter(idp_webhooks::app_id.eq(app)).filter(idp_webhooks::sealed_secret.eq(old)),
        )
        .set(idp_webhooks::sealed_secret.eq(new))
        .execute(conn)
        .await
        .map_err(db_error)?
    }))
}
