//! The refresh lock within one process.

use async_trait::async_trait;
use custody_vault::grant::GrantId;
use custody_vault::ports::{RefreshGuard, RefreshLock, RefreshLockError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::OwnedMutexGuard;

/// One async mutex per grant: [`RefreshLock`] for a single process (the real store adds
/// advisory locks across processes on PostgreSQL). It never times out.
#[derive(Debug, Default)]
pub struct MemoryRefreshLock {
    locks: Mutex<HashMap<GrantId, Arc<tokio::sync::Mutex<()>>>>,
    taken: std::sync::atomic::AtomicUsize,
}

impl MemoryRefreshLock {
    /// How many times a lock was taken.
    pub fn times_taken(&self) -> usize {
        self.taken.load(std::sync::atomic::Ordering::SeqCst)
    }
}

struct Guard(#[allow(dead_code)] OwnedMutexGuard<()>);

#[async_trait]
impl RefreshGuard for Guard {
    async fn release(self: Box<Self>) {}
}

#[async_trait]
impl RefreshLock for MemoryRefreshLock {
    async fn lock(&self, grant: &GrantId) -> Result<Box<dyn RefreshGuard>, RefreshLockError> {
        let mutex = self.locks.lock().unwrap_or_else(PoisonError::into_inner).entry(grant.clone()).or_default().clone();
        let guard = mutex.lock_owned().await;
        self.taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Box::new(Guard(guard)))
    }
}
