//! [`ProviderStore`] and [`PolicyStore`] for [`Store`]: an app's OAuth providers and the
//! policies that govern their grants.

use super::{convert_grants, VaultTx as _};
use crate::cursor::{fetch_limit, into_page_with, KeyCursor};
use crate::error::{db_error, TxError};
use crate::models::{GrantRow, NewPolicyRow, NewProviderRow, PolicyRow, ProviderRow};
use crate::pool::BackendQueries as _;
use crate::schema::{policies, providers};
use crate::store::Store;
use async_trait::async_trait;
use custody_identity::audit::AuditEntry;
use custody_identity::page::{Page, PageRequest};
use custody_identity::ports::StoreError;
use custody_identity::{AppId, UnixTime};
use custody_vault::grant::Grant;
use custody_vault::policy::{Policy, PolicyLookup};
use custody_vault::ports::{PolicyStore, ProviderStore, RevokeScope};
use custody_vault::provider::{ProviderConfig, ProviderName};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::RunQueryDsl;

#[async_trait]
impl ProviderStore for Store {
    async fn put_provider(&self, provider: &ProviderConfig, audit: &AuditEntry) -> Result<(), StoreError> {
        let result = transaction!(self, |conn| -> Result<(), TxError<StoreError>> {
            // An existing provider keeps its `created_at`.
            diesel::insert_into(providers::table)
                .values(NewProviderRow::from(provider))
                .on_conflict((providers::app_id, providers::name))
                .do_update()
                .set((
                    providers::authorization_url.eq(excluded(providers::authorization_url)),
                    providers::token_url.eq(excluded(providers::token_url)),
                    providers::revocation_url.eq(excluded(providers::revocation_url)),
                    providers::client_id.eq(excluded(providers::client_id)),
                    providers::client_secret.eq(excluded(providers::client_secret)),
                    providers::scopes_json.eq(excluded(providers::scopes_json)),
                    providers::api_base_url.eq(excluded(providers::api_base_url)),
                    providers::updated_at.eq(excluded(providers::updated_at)),
                ))
                .execute(conn)
                .await?;
            insert_audit!(conn, audit)?;
            Ok(())
        });
        result.map_err(TxError::into_domain)
    }

    async fn get_provider(&self, app: &AppId, name: &ProviderName) -> Result<Option<ProviderConfig>, StoreError> {
        let row: Option<ProviderRow> = with_conn!(self, |conn| {
            providers::table
                .find((app.as_str(), name.as_str()))
                .select(ProviderRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        row.map(ProviderRow::into_domain).transpose()
    }

    async fn list_providers(&self, app: &AppId, page: &PageRequest) -> Result<Page<ProviderConfig>, StoreError> {
        let after = KeyCursor::of(page, 1)?.map(KeyCursor::into_single);
        let rows: Vec<ProviderRow> = with_conn!(self, |conn| {
            let mut query = providers::table
                .filter(providers::app_id.eq(app.as_str()))
                .select(ProviderRow::as_select())
                .into_boxed();
            if let Some(after) = &after {
                query = query.filter(providers::name.gt(after.as_str()));
            }
            query.order(providers::name.asc()).limit(fetch_limit(page)).load(conn).await.map_err(db_error)?
        });
        into_page_with(rows, page, |r| KeyCursor::encode(&[&r.name]), ProviderRow::into_domain)
    }

    async fn delete_provider(
        &self,
        app: &AppId,
        name: &ProviderName,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<Option<Vec<Grant>>, StoreError> {
        let scope = RevokeScope::Provider(name.clone());
        let result = transaction!(self, |conn| -> Result<Option<Vec<GrantRow>>, TxError<StoreError>> {
            // Locked first: a concurrent `save_grant` for this provider (which share-locks it)
            // either commits before and its grant is revoked here, or finds the provider gone.
            if !conn.provider_exists_for_update(app.as_str(), name.as_str()).await? {
                return Ok(None);
            }
            // The outbox rows copy the provider's revocation settings: before it goes.
            let revoked = conn.revoke_in_scope(app.as_str(), &scope, now.0).await?;
            diesel::delete(providers::table.find((app.as_str(), name.as_str()))).execute(conn).await?;
            insert_audit!(conn, audit)?;
            Ok(Some(revoked))
        });
        result.map_err(TxError::into_domain)?.map(convert_grants).transpose()
    }
}

#[async_trait]
impl PolicyStore for Store {
    async fn put_policy(&self, policy: &Policy, audit: &AuditEntry) -> Result<(), StoreError> {
        let result = transaction!(self, |conn| -> Result<(), TxError<StoreError>> {
            diesel::insert_into(policies::table)
                .values(NewPolicyRow::from(policy))
                .on_conflict((policies::app_id, policies::provider))
                .do_update()
                .set((
                    policies::allow_groups_json.eq(excluded(policies::allow_groups_json)),
                    policies::allow_roles_json.eq(excluded(policies::allow_roles_json)),
                    policies::token_access.eq(excluded(policies::token_access)),
                    policies::updated_at.eq(excluded(policies::updated_at)),
                ))
                .execute(conn)
                .await?;
            insert_audit!(conn, audit)?;
            Ok(())
        });
        result.map_err(TxError::into_domain)
    }

    async fn get_policy(&self, app: &AppId, provider: &ProviderName) -> Result<PolicyLookup, StoreError> {
        let row: Option<PolicyRow> = read_conn!(self, |conn| {
            policies::table
                .find((app.as_str(), provider.as_str()))
                .select(PolicyRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        Ok(row.map_or(PolicyLookup::None, PolicyRow::into_lookup))
    }

    async fn list_policies(&self, app: &AppId, page: &PageRequest) -> Result<Page<Policy>, StoreError> {
        let after = KeyCursor::of(page, 1)?.map(KeyCursor::into_single);
        let rows: Vec<PolicyRow> = with_conn!(self, |conn| {
            let mut query =
                policies::table.filter(policies::app_id.eq(app.as_str())).select(PolicyRow::as_select()).into_boxed();
            if let Some(after) = &after {
                query = query.filter(policies::provider.gt(after.as_str()));
            }
            query.order(policies::provider.asc()).limit(fetch_limit(page)).load(conn).await.map_err(db_error)?
        });
        // Strict, like every read but `get_policy`: a listing cannot say "unreadable" for one
        // row, and skipping it would hide it from the operator who has to fix it.
        into_page_with(rows, page, |r| KeyCursor::encode(&[&r.provider]), PolicyRow::into_domain)
    }

    async fn delete_policy(
        &self,
        app: &AppId,
        provider: &ProviderName,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let result = transaction!(self, |conn| -> Result<bool, TxError<StoreError>> {
            let deleted = diesel::delete(policies::table.find((app.as_str(), provider.as_str()))).execute(conn).await?;
            if deleted == 0 {
                return Ok(false);
            }
            insert_audit!(conn, audit)?;
            Ok(true)
        });
        result.map_err(TxError::into_domain)
    }
}
