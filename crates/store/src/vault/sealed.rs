//! [`SealedValues`] for [`Store`]: every sealed value (credentials, provider secrets, webhook
//! secrets, instance secrets), listed by kind in key order and replaced by compare-and-set, for
//! re-sealing under a new key.

use crate::cursor::KeyCursor;
use crate::error::db_error;
use crate::models::{grant_id, provider_name, token_kind};
use crate::schema::{connect_states, credentials, instance_secrets, providers, revocation_outbox};
use crate::store::Store;
use async_trait::async_trait;
use custody_identity::cipher::SealedBox;
use custody_identity::ports::StoreError;
use custody_vault::grant::{Credential, TokenKind};
use custody_vault::ports::{instance_secret_aad, ConnectState, SealedKind, SealedValue, SealedValues};
use custody_vault::provider::ProviderConfig;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

/// Most sealed values returned by one [`SealedValues::sealed_values`] call.
const MAX_SEALED_BATCH: u32 = 1000;

/// The key parts of a sealed value's cursor, by kind.
fn key_parts(kind: SealedKind) -> usize {
    match kind {
        SealedKind::ProviderSecret => 2,
        _ => 1,
    }
}

fn sealed_value(kind: SealedKind, key: &[&str], associated_data: Vec<u8>, sealed: Vec<u8>) -> SealedValue {
    SealedValue { kind, cursor: KeyCursor::encode(key), associated_data, sealed: SealedBox(sealed) }
}

impl Store {
    /// [`SealedValues::sealed_values`] for one kind, after the decoded cursor `after`.
    async fn load_sealed(
        &self,
        kind: SealedKind,
        after: Option<KeyCursor>,
        limit: i64,
    ) -> Result<Vec<SealedValue>, StoreError> {
        match kind {
            SealedKind::CredentialAccess | SealedKind::CredentialRefresh => {
                let after = after.map(KeyCursor::into_single);
                let rows: Vec<(String, Vec<u8>, Option<Vec<u8>>)> = with_conn!(self, |conn| {
                    let mut query = credentials::table
                        .select((credentials::grant_id, credentials::access_token, credentials::refresh_token))
                        .order(credentials::grant_id.asc())
                        .limit(limit)
                        .into_boxed();
                    if kind == SealedKind::CredentialRefresh {
                        query = query.filter(credentials::refresh_token.is_not_null());
                    }
                    if let Some(after) = &after {
                        query = query.filter(credentials::grant_id.gt(after.as_str()));
                    }
                    query.load(conn).await.map_err(db_error)?
                });
                rows.into_iter()
                    .filter_map(|(grant, access, refresh)| {
                        let (token_kind, sealed) = match kind {
                            SealedKind::CredentialAccess => (TokenKind::Access, access),
                            _ => (TokenKind::Refresh, refresh?),
                        };
                        Some(
                            grant_id(&grant)
                                .map(|id| sealed_value(kind, &[&grant], Credential::aad(&id, token_kind), sealed)),
                        )
                    })
                    .collect()
            }
            SealedKind::ProviderSecret => {
                let after = after.map(KeyCursor::into_pair);
                let rows: Vec<(String, String, Vec<u8>)> = with_conn!(self, |conn| {
                    let mut query = providers::table
                        .select((providers::app_id, providers::name, providers::client_secret))
                        .order((providers::app_id.asc(), providers::name.asc()))
                        .limit(limit)
                        .into_boxed();
                    if let Some((app, name)) = &after {
                        query = query.filter(
                            providers::app_id
                                .gt(app.as_str())
                                .or(providers::app_id.eq(app.as_str()).and(providers::name.gt(name.as_str()))),
                        );
                    }
                    query.load(conn).await.map_err(db_error)?
                });
                rows.into_iter()
                    .map(|(app, name, sealed)| {
                        let aad = ProviderConfig::secret_aad(&crate::models::app_id(&app)?, &provider_name(&name)?);
                        Ok(sealed_value(kind, &[&app, &name], aad, sealed))
                    })
                    .collect()
            }
            SealedKind::OutboxToken | SealedKind::OutboxClientSecret => {
                let after = after.map(KeyCursor::into_single);
                #[allow(clippy::type_complexity)]
                let rows: Vec<(String, String, String, String, String, Vec<u8>, Vec<u8>)> = with_conn!(self, |conn| {
                    let mut query = revocation_outbox::table
                        .select((
                            revocation_outbox::id,
                            revocation_outbox::app_id,
                            revocation_outbox::grant_id,
                            revocation_outbox::provider,
                            revocation_outbox::token_kind,
                            revocation_outbox::token,
                            revocation_outbox::client_secret,
                        ))
                        .order(revocation_outbox::id.asc())
                        .limit(limit)
                        .into_boxed();
                    if let Some(after) = &after {
                        query = query.filter(revocation_outbox::id.gt(after.as_str()));
                    }
                    query.load(conn).await.map_err(db_error)?
                });
                rows.into_iter()
                    .map(|(id, app, grant, provider, kind_text, token, secret)| {
                        Ok(if kind == SealedKind::OutboxToken {
                            let aad = Credential::aad(&grant_id(&grant)?, token_kind(&kind_text)?);
                            sealed_value(kind, &[&id], aad, token)
                        } else {
                            let aad =
                                ProviderConfig::secret_aad(&crate::models::app_id(&app)?, &provider_name(&provider)?);
                            sealed_value(kind, &[&id], aad, secret)
                        })
                    })
                    .collect()
            }
            SealedKind::ConnectVerifier => {
                let after = after.map(KeyCursor::into_single);
                let rows: Vec<(String, Vec<u8>)> = with_conn!(self, |conn| {
                    let mut query = connect_states::table
                        .select((connect_states::state_hash, connect_states::pkce_verifier))
                        .order(connect_states::state_hash.asc())
                        .limit(limit)
                        .into_boxed();
                    if let Some(after) = &after {
                        query = query.filter(connect_states::state_hash.gt(after.as_str()));
                    }
                    query.load(conn).await.map_err(db_error)?
                });
                Ok(rows
                    .into_iter()
                    .map(|(hash, sealed)| sealed_value(kind, &[&hash], ConnectState::verifier_aad(&hash), sealed))
                    .collect())
            }
            SealedKind::WebhookSecret => {
                crate::webhook::sealed_secrets(self, after.map(KeyCursor::into_single), limit).await
            }
            SealedKind::InstanceSecret => {
                let after = after.map(KeyCursor::into_single);
                let rows: Vec<(String, Vec<u8>)> = with_conn!(self, |conn| {
                    let mut query = instance_secrets::table
                        .select((instance_secrets::name, instance_secrets::value))
                        .order(instance_secrets::name.asc())
                        .limit(limit)
                        .into_boxed();
                    if let Some(after) = &after {
                        query = query.filter(instance_secrets::name.gt(after.as_str()));
                    }
                    query.load(conn).await.map_err(db_error)?
                });
                Ok(rows
                    .into_iter()
                    .map(|(name, sealed)| sealed_value(kind, &[&name], instance_secret_aad(&name), sealed))
                    .collect())
            }
        }
    }
}

#[async_trait]
impl SealedValues for Store {
    async fn sealed_values(
        &self,
        kind: SealedKind,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SealedValue>, StoreError> {
        let after = after.map(|c| KeyCursor::decode(c, key_parts(kind))).transpose()?;
        let limit = limit.min(MAX_SEALED_BATCH);
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.load_sealed(kind, after, i64::from(limit)).await
    }

    async fn replace_sealed(&self, value: &SealedValue, new: &SealedBox) -> Result<bool, StoreError> {
        let key = KeyCursor::decode(&value.cursor, key_parts(value.kind))?;
        let (old, new) = (value.sealed.0.as_slice(), new.0.as_slice());
        // Compare-and-set on the old bytes: a value rewritten meanwhile (a refresh, a new
        // secret) is left alone.
        // One column of one row, by compare-and-set on its old bytes.
        macro_rules! swap {
            ($table:path, $row:expr, $column:path, $value:expr) => {
                with_conn!(self, |conn| {
                    diesel::update($table.filter($row).filter($column.eq(old)))
                        .set($column.eq($value))
                        .execute(conn)
                        .await
                        .map_err(db_error)?
                })
            };
        }
        let updated = match value.kind {
            SealedKind::CredentialAccess => {
                let grant = key.into_single();
                swap!(credentials::table, credentials::grant_id.eq(grant.as_str()), credentials::access_token, new)
            }
            SealedKind::CredentialRefresh => {
                let grant = key.into_single();
                swap!(
                    credentials::table,
                    credentials::grant_id.eq(grant.as_str()),
                    credentials::refresh_token,
                    Some(new)
                )
            }
            SealedKind::ProviderSecret => {
                let (app, name) = key.into_pair();
                let row = providers::app_id.eq(app.as_str()).and(providers::name.eq(name.as_str()));
                swap!(providers::table, row, providers::client_secret, new)
            }
            SealedKind::OutboxToken => {
                let id = key.into_single();
                swap!(revocation_outbox::table, revocation_outbox::id.eq(id.as_str()), revocation_outbox::token, new)
            }
            SealedKind::OutboxClientSecret => {
                let id = key.into_single();
                let row = revocation_outbox::id.eq(id.as_str());
                swap!(revocation_outbox::table, row, revocation_outbox::client_secret, new)
            }
            SealedKind::ConnectVerifier => {
                let hash = key.into_single();
                let row = connect_states::state_hash.eq(hash.as_str());
                swap!(connect_states::table, row, connect_states::pkce_verifier, new)
            }
            SealedKind::WebhookSecret => {
                crate::webhook::replace_sealed_secret(self, &key.into_single(), old, new).await?
            }
            SealedKind::InstanceSecret => {
                let name = key.into_single();
                swap!(instance_secrets::table, instance_secrets::name.eq(name.as_str()), instance_secrets::value, new)
            }
        };
        Ok(updated == 1)
    }
}
