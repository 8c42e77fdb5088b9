//! Background work: draining the durable revocation outbox (tokens of revoked grants are revoked
//! at their provider per RFC 7009, retried with backoff, surviving restarts because the outbox
//! lives in the database), pruning old webhook event ids, and pruning audit rows older than
//! `CUSTODY_AUDIT_RETENTION_DAYS` (when set).

use crate::state::AppState;
use custody_identity::ports::{Clock, StoreError};
use custody_vault::ports::Maintenance;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the outbox is polled when nothing wakes the worker.
pub const OUTBOX_POLL: Duration = Duration::from_secs(5);
/// How long webhook event ids are kept to recognise redeliveries.
pub const WEBHOOK_EVENT_RETENTION_SECS: i64 = 8 * 24 * 3600;

/// Audit rows deleted per statement when pruning: small enough that each delete is a short
/// transaction that never holds up hand-outs for long.
pub const AUDIT_PRUNE_BATCH: u32 = 1000;

/// Deletes the audit rows older than `retention_days` (as `clock` tells the time), in batches of
/// [`AUDIT_PRUNE_BATCH`], yielding between batches. Returns how many were deleted.
pub async fn prune_audit(store: &dyn Maintenance, clock: &dyn Clock, retention_days: u32) -> Result<u64, StoreError> {
    let cutoff = clock.now().plus_seconds(-i64::from(retention_days) * 86_400);
    let mut total = 0;
    loop {
        let deleted = store.prune_audit(cutoff, AUDIT_PRUNE_BATCH).await?;
        total += deleted;
        if deleted == 0 {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

/// Runs until `shutdown` turns true.
pub async fn run_outbox(state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    let mut last_prune = None;
    loop {
        loop {
            match state.vault.drain_outbox(100).await {
                // A full batch may mean more are due; an empty or partial one means wait.
                Ok(n) if n >= 100 => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "revocation outbox pass failed; will retry");
                    break;
                }
            }
        }
        let now = state.clock.now();
        if last_prune.is_none_or(|t: custody_identity::UnixTime| now.seconds() - t.seconds() > 3600) {
            last_prune = Some(now);
            if let Err(e) = state.store.prune_webhook_events(now.plus_seconds(-WEBHOOK_EVENT_RETENTION_SECS)).await {
                tracing::warn!(error = %e, "pruning webhook event ids failed");
            }
            if let Some(days) = state.config.audit_retention_days {
                match prune_audit(&state.store, state.clock.as_ref(), days).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, retention_days = days, "pruned old audit rows"),
                    Err(e) => tracing::warn!(error = %e, "pruning audit rows failed; will retry"),
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(OUTBOX_POLL) => {}
            _ = state.outbox_wake.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}
