//! Background work: draining the durable revocation outbox (tokens of revoked grants are revoked
//! at their provider per RFC 7009, retried with backoff, surviving restarts because the outbox
//! lives in the database) and pruning old webhook event ids.

use crate::state::AppState;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the outbox is polled when nothing wakes the worker.
pub const OUTBOX_POLL: Duration = Duration::from_secs(5);
/// How long webhook event ids are kept to recognise redeliveries.
pub const WEBHOOK_EVENT_RETENTION_SECS: i64 = 8 * 24 * 3600;

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
            if let Err(e) =
                state.vault.store().prune_webhook_events(now.plus_seconds(-WEBHOOK_EVENT_RETENTION_SECS)).await
            {
                tracing::warn!(error = %e, "pruning webhook event ids failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(OUTBOX_POLL) => {}
            _ = state.outbox_wake.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}
