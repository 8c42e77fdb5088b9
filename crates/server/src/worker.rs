//! Background work: draining the durable revocation outbox (tokens of revoked grants are revoked
//! at their provider per RFC 7009, retried with backoff, surviving restarts because the outbox
//! lives in the database), pruning old webhook event ids, and pruning audit rows older than
//! `CUSTODY_AUDIT_RETENTION_DAYS` (when set). The work itself is the vault's; this module only
//! schedules it.

use crate::state::AppState;
use custody_identity::ports::{Clock, StoreError};
use custody_vault::ports::Maintenance;
pub use custody_vault::service::{AUDIT_PRUNE_BATCH, WEBHOOK_EVENT_RETENTION_SECS};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the outbox is polled when nothing wakes the worker.
pub const OUTBOX_POLL: Duration = Duration::from_secs(5);

/// How often old webhook event ids and audit rows are pruned.
const PRUNE_EVERY_SECS: i64 = 3600;

/// Deletes the audit rows older than `retention_days` (as `clock` tells the time) from `store`,
/// as the worker does (see [`custody_vault::service::prune_audit_before`]). Returns how many were
/// deleted. For tools and tests that hold a store of their own.
pub async fn prune_audit(store: &dyn Maintenance, clock: &dyn Clock, retention_days: u32) -> Result<u64, StoreError> {
    let cutoff = custody_vault::service::audit_cutoff(clock.now(), retention_days);
    custody_vault::service::prune_audit_before(store, cutoff).await
}

/// Runs until `shutdown` turns true.
pub async fn run_outbox(state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    let mut last_prune = None;
    loop {
        loop {
            match state.vault().drain_outbox(100).await {
                // A full batch may mean more are due; an empty or partial one means wait.
                Ok(n) if n >= 100 => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "revocation outbox pass failed; will retry");
                    break;
                }
            }
        }
        let now = state.now();
        if last_prune.is_none_or(|t: custody_identity::UnixTime| now.seconds() - t.seconds() > PRUNE_EVERY_SECS) {
            last_prune = Some(now);
            if let Err(e) = state.vault().prune_webhook_events().await {
                tracing::warn!(error = %e, "pruning webhook event ids failed");
            }
            if let Some(days) = state.config().audit_retention_days {
                match state.vault().prune_audit(days).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, retention_days = days, "pruned old audit rows"),
                    Err(e) => tracing::warn!(error = %e, "pruning audit rows failed; will retry"),
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(OUTBOX_POLL) => {}
            _ = state.outbox_woken() => {}
            _ = shutdown.changed() => return,
        }
    }
}
