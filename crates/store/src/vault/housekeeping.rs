//! [`ConnectStates`], [`RevocationOutbox`] and [`Maintenance`] for [`Store`]: the pending connect
//! flows, the queue of provider revocations the sweeper drains, and pruning of old webhook
//! deliveries and audit rows.

use crate::error::{db_error, TxError};
use crate::models::{token_kind_str, ConnectStateRow, NewConnectStateRow, OutboxRow};
use crate::schema::{connect_states, revocation_outbox, webhook_events};
use crate::store::Store;
use async_trait::async_trait;
use custody_identity::audit::AuditEntry;
use custody_identity::ports::StoreError;
use custody_identity::UnixTime;
use custody_vault::ports::{ConnectState, ConnectStates, Maintenance, OutboxItem, RevocationOutbox};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

/// How long after its expiry an unconsumed connect state is kept (so a late callback still
/// reports "expired" to the return URL) before `create_connect_state` deletes it.
const CONNECT_STATE_RETENTION_SECS: i64 = 86_400;

#[async_trait]
impl ConnectStates for Store {
    async fn create_connect_state(&self, state: &ConnectState) -> Result<(), StoreError> {
        with_conn!(self, |conn| {
            diesel::insert_into(connect_states::table)
                .values(NewConnectStateRow::from(state))
                .execute(conn)
                .await
                .map_err(db_error)?;
            // Flows abandoned long ago: nothing else ever deletes them.
            let stale = state.created_at.0.saturating_sub(CONNECT_STATE_RETENTION_SECS);
            diesel::delete(connect_states::table.filter(connect_states::expires_at.lt(stale)))
                .execute(conn)
                .await
                .map_err(db_error)?;
        });
        Ok(())
    }

    async fn peek_connect_state(&self, state_hash: &str) -> Result<Option<ConnectState>, StoreError> {
        let row: Option<ConnectStateRow> = with_conn!(self, |conn| {
            connect_states::table
                .find(state_hash)
                .select(ConnectStateRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        row.map(ConnectStateRow::into_domain).transpose()
    }

    async fn bind_connect_state(&self, state_hash: &str, browser_hash: &str) -> Result<bool, StoreError> {
        // Compare-and-set from NULL: of two browsers opening the same connect URL, one binds it.
        let updated = with_conn!(self, |conn| {
            diesel::update(connect_states::table.find(state_hash).filter(connect_states::browser_hash.is_null()))
                .set(connect_states::browser_hash.eq(browser_hash))
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(updated == 1)
    }

    async fn consume_connect_state(&self, state_hash: &str) -> Result<Option<ConnectState>, StoreError> {
        // One statement: of two concurrent consumers, exactly one deletes the row and gets it.
        let row: Option<ConnectStateRow> = with_conn!(self, |conn| {
            diesel::delete(connect_states::table.find(state_hash))
                .returning(ConnectStateRow::as_returning())
                .get_result(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        row.map(ConnectStateRow::into_domain).transpose()
    }
}

#[async_trait]
impl RevocationOutbox for Store {
    async fn due_revocations(&self, now: UnixTime, limit: u32) -> Result<Vec<OutboxItem>, StoreError> {
        let rows: Vec<OutboxRow> = with_conn!(self, |conn| {
            revocation_outbox::table
                .filter(revocation_outbox::next_attempt_at.le(now.0))
                .select(OutboxRow::as_select())
                .order((
                    revocation_outbox::next_attempt_at.asc(),
                    revocation_outbox::created_at.asc(),
                    revocation_outbox::id.asc(),
                ))
                .limit(i64::from(limit))
                .load(conn)
                .await
                .map_err(db_error)?
        });
        rows.into_iter().map(OutboxRow::into_domain).collect()
    }

    async fn finish_revocation(&self, id: &str, audit: Option<&AuditEntry>) -> Result<(), StoreError> {
        let result = transaction!(self, |conn| -> Result<(), TxError<StoreError>> {
            let deleted = diesel::delete(revocation_outbox::table.find(id)).execute(conn).await?;
            // Another instance finished it first (and wrote the audit row), or its app is gone.
            if deleted == 0 {
                return Ok(());
            }
            if let Some(entry) = audit {
                insert_audit!(conn, entry)?;
            }
            Ok(())
        });
        result.map_err(TxError::into_domain)
    }

    async fn queue_revocations(&self, items: &[OutboxItem], now: UnixTime) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let result = transaction!(self, |conn| -> Result<(), TxError<StoreError>> {
            for item in items {
                diesel::insert_into(revocation_outbox::table)
                    .values((
                        revocation_outbox::id.eq(item.id.as_str()),
                        revocation_outbox::app_id.eq(item.app_id.as_str()),
                        revocation_outbox::grant_id.eq(item.grant_id.as_str()),
                        revocation_outbox::provider.eq(item.provider.as_str()),
                        revocation_outbox::token_kind.eq(token_kind_str(item.token_kind)),
                        revocation_outbox::token.eq(item.token.0.as_slice()),
                        revocation_outbox::revocation_url.eq(item.revocation_url.as_str()),
                        revocation_outbox::client_id.eq(item.client_id.as_str()),
                        revocation_outbox::client_secret.eq(item.client_secret.0.as_slice()),
                        revocation_outbox::attempts.eq(item.attempts),
                        revocation_outbox::next_attempt_at.eq(item.next_attempt_at.0),
                        revocation_outbox::created_at.eq(now.0),
                    ))
                    .on_conflict(revocation_outbox::id)
                    .do_nothing()
                    .execute(conn)
                    .await?;
            }
            Ok(())
        });
        result.map_err(TxError::into_domain)
    }

    async fn retry_revocation(&self, id: &str, attempts: i32, next_attempt_at: UnixTime) -> Result<(), StoreError> {
        with_conn!(self, |conn| {
            diesel::update(revocation_outbox::table.find(id))
                .set((
                    revocation_outbox::attempts.eq(attempts),
                    revocation_outbox::next_attempt_at.eq(next_attempt_at.0),
                ))
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(())
    }
}

#[async_trait]
impl Maintenance for Store {
    async fn prune_webhook_events(&self, before: UnixTime) -> Result<u64, StoreError> {
        let deleted = with_conn!(self, |conn| {
            diesel::delete(webhook_events::table.filter(webhook_events::received_at.lt(before.0)))
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
    }

    async fn prune_audit(&self, before: UnixTime, limit: u32) -> Result<u64, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        let deleted = with_conn!(self, |conn| prune_oldest_audit_rows!(conn, before.0, limit));
        let deleted = u64::try_from(deleted).unwrap_or(u64::MAX);
        if let crate::pool::DbPool::Sqlite(_) = self.pool() {
            // Then the hand-out rows in their own file (`handout_audit.rs`), within what is left
            // of the limit.
            let left = u32::try_from(u64::from(limit).saturating_sub(deleted)).unwrap_or(0);
            return Ok(deleted + crate::handout_audit::prune(self, before.0, left).await?);
        }
        Ok(deleted)
    }
}
